//! The collector's lock on local disk: a kernel lock on `_berth/locks/gc`, which also holds the
//! holder's record for the refusal's message. The file is never deleted (unlinking a locked
//! file would let a third process lock a new one beside the old).

use std::sync::Arc;

use super::{GcLock, GcLockAttempt, GcLockHolder, Kind, Lost, GC_LEASE_RENEW};
use crate::storage::Result;

/// Local disk: locks the file (created if missing) and writes our record into it.
pub(super) fn lock_gc_file(file: &std::path::Path) -> Result<GcLockAttempt> {
    use std::io::Read;
    if let Some(dir) = file.parent() {
        std::fs::create_dir_all(dir)?;
    }
    let mut f = std::fs::OpenOptions::new()
        .read(true)
        .write(true)
        .create(true)
        .truncate(false)
        .open(file)?;
    if !crate::storage::lock::try_lock_file(&f)? {
        let mut bytes = Vec::new();
        f.read_to_end(&mut bytes)?;
        return Ok(GcLockAttempt::Busy(GcLockHolder::parse(&bytes)));
    }
    let me = GcLockHolder::new();
    write_record(&f, &me)?;
    let file = Arc::new(f);
    let renewal = tokio::spawn(renew_file(file.clone(), me.clone()));
    Ok(GcLockAttempt::Held(GcLock {
        holder: me,
        kind: Kind::File(file),
        renewal,
        lost: Arc::new(Lost::kernel()),
        beside: None,
    }))
}

fn write_record(f: &std::fs::File, holder: &GcLockHolder) -> std::io::Result<()> {
    use std::os::unix::fs::FileExt;
    let bytes = serde_json::to_vec(holder).expect("a lock record serializes");
    // Overwritten in place, then cut to length: a renewal changes a few digits, so a refused
    // collection reading meanwhile still finds a whole record (never an empty file).
    f.write_all_at(&bytes, 0)?;
    f.set_len(bytes.len() as u64)
}

/// Drops the open-file-description lock now (closing the file would too, but the renewal task
/// holds a copy until the runtime gets round to dropping it).
pub(super) fn unlock_file(file: &std::fs::File) {
    use std::os::fd::AsRawFd;
    // SAFETY: `flock` is a plain C struct, zeroed then filled; the descriptor belongs to `file`.
    let mut lock: libc::flock = unsafe { std::mem::zeroed() };
    lock.l_type = libc::F_UNLCK as libc::c_short;
    lock.l_whence = libc::SEEK_SET as libc::c_short;
    unsafe { libc::fcntl(file.as_raw_fd(), libc::F_OFD_SETLK, &lock) };
}

/// The kernel's lock needs no renewal; the record's expiry is renewed so that what a refused
/// collection reports stays true.
async fn renew_file(file: Arc<std::fs::File>, me: GcLockHolder) {
    loop {
        tokio::time::sleep(GC_LEASE_RENEW).await;
        if let Err(e) = write_record(&file, &me.renewed()) {
            log::warn!("cannot renew the garbage-collection lock record: {e}");
        }
    }
}
