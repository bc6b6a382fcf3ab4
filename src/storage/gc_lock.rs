//! One garbage collection at a time per storage: the collector's lock.
//!
//! Two collectors sweeping at once can each move half of an image aside and then, each not
//! finding the other's half, delete content a tag needs (issue 11). So a collection holds this
//! lock from its recovery to its end; a second one is refused, told who holds it and when it
//! expires.
//!
//! - **Local disk**: an open-file-description lock (`F_OFD_SETLK`) on `_berth/locks/gc`. The
//!   kernel drops it the moment the holder exits, `kill -9` included. The file is never deleted
//!   (unlinking a locked file would let a third process lock a new one beside the old). It also
//!   holds the holder's record, for the refusal's message.
//! - **Object stores**: a lease object at the same path holding the holder's record, with an
//!   expiry [`GC_LEASE_TTL`] after its last renewal (renewed every [`GC_LEASE_RENEW`]). It is
//!   created with `PutMode::Create` (S3's `If-None-Match: *`), after reading that no live lease
//!   is there. A store that ignores conditional writes (Garage) lets two collectors starting
//!   within the same instant both "create" it; the later write wins, so after writing, a
//!   collector waits [`GC_LEASE_SETTLE`] and reads the lease back: only the one whose record is
//!   there goes on. What that guarantees: mutual exclusion as long as a write is visible to
//!   reads within the settle time and the collectors' clocks agree to well within the TTL (the
//!   expiry is compared with the reader's clock). A renewal that finds another holder's record
//!   marks the lock lost; the collection checks before every destructive phase and stops.
//! - **Object stores with Redis locks** (the upload locks' Redis, `Coordination::Redis`): a key
//!   `<namespace>:gc` holding the holder's record, set only if absent and renewed only while it
//!   is still ours, each in one script, so exact whatever the store does with conditional
//!   writes. Redis keeps the expiry ([`GC_LEASE_TTL`]), on its own clock.
//!
//! Everywhere but local disk, a holder that could not renew for longer than the lock lives
//! (store or Redis unreachable) counts its lock as lost: another collection may have it by then.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use object_store::path::Path;
use object_store::{ObjectStore, ObjectStoreExt, PutMode, PutOptions, PutPayload};
use serde::{Deserialize, Serialize};

use super::lock::{Coordination, RedisLocks};
use super::{layout, Backend, Result, Storage, StorageError};

/// How long a lease lives after its last renewal.
pub const GC_LEASE_TTL: Duration = Duration::from_secs(60);
/// How often a held lock's record is renewed.
pub const GC_LEASE_RENEW: Duration = Duration::from_secs(20);
/// On S3: how long a new lease is left to settle before it is read back (see above).
pub const GC_LEASE_SETTLE: Duration = Duration::from_secs(1);

/// Who holds (or held) the collector's lock.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct GcLockHolder {
    /// Unique per collection (a UUID).
    pub owner: String,
    pub host: String,
    pub pid: u32,
    /// Milliseconds since the Unix epoch.
    pub started: u64,
    /// Milliseconds since the Unix epoch; renewed while the holder runs.
    pub expires: u64,
}

fn now_ms() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap_or_default()
        .as_millis() as u64
}

fn rfc3339(ms: u64) -> String {
    chrono::DateTime::<chrono::Utc>::from_timestamp_millis(ms as i64)
        .map(|t| t.to_rfc3339_opts(chrono::SecondsFormat::Secs, true))
        .unwrap_or_else(|| format!("{ms} ms after the epoch"))
}

/// This machine's host name (`gethostname`), or `None` when the call fails. Also the host part
/// of the notifications' `source.addr`.
pub fn hostname() -> Option<String> {
    let mut buf = [0u8; 256];
    // SAFETY: the buffer is ours and its length is passed; the result is NUL-terminated or
    // truncated, and only the bytes before the first NUL are read.
    let rc = unsafe { libc::gethostname(buf.as_mut_ptr().cast(), buf.len()) };
    if rc != 0 {
        return None;
    }
    let end = buf.iter().position(|&b| b == 0).unwrap_or(buf.len());
    Some(String::from_utf8_lossy(&buf[..end]).into_owned())
}

impl GcLockHolder {
    fn new() -> GcLockHolder {
        let now = now_ms();
        GcLockHolder {
            owner: uuid::Uuid::new_v4().simple().to_string(),
            host: hostname().unwrap_or_else(|| "unknown host".into()),
            pid: std::process::id(),
            started: now,
            expires: now + GC_LEASE_TTL.as_millis() as u64,
        }
    }

    fn renewed(&self) -> GcLockHolder {
        GcLockHolder {
            expires: now_ms() + GC_LEASE_TTL.as_millis() as u64,
            ..self.clone()
        }
    }

    fn expired(&self) -> bool {
        self.expires < now_ms()
    }

    fn payload(&self) -> PutPayload {
        PutPayload::from(serde_json::to_vec(self).expect("a lock record serializes"))
    }

    fn parse(bytes: &[u8]) -> Option<GcLockHolder> {
        serde_json::from_slice(bytes).ok()
    }
}

/// "pid 12 on host h (collection 3f…), started …; its lock expires at … unless renewed"
impl std::fmt::Display for GcLockHolder {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "pid {} on host {} (collection {}), started {}; its lock expires at {} unless \
             renewed (every {} s while it runs)",
            self.pid,
            self.host,
            self.owner,
            rfc3339(self.started),
            rfc3339(self.expires),
            GC_LEASE_RENEW.as_secs()
        )
    }
}

/// What trying to take the lock found.
#[derive(Debug)]
pub enum GcLockAttempt {
    Held(GcLock),
    /// Another collection holds it (its record, if it has written one yet).
    Busy(Option<GcLockHolder>),
}

/// The collector's lock, held until [`GcLock::release`] or drop (which stops renewing; on
/// local disk it also unlocks).
#[derive(Debug)]
pub struct GcLock {
    pub holder: GcLockHolder,
    kind: Kind,
    renewal: tokio::task::JoinHandle<()>,
    /// Set by the renewal when it finds another holder's record (object stores only).
    lost: Arc<Lost>,
}

#[derive(Debug, Default)]
struct Lost {
    flag: AtomicBool,
    to: Mutex<Option<GcLockHolder>>,
}

impl Lost {
    /// The lock is another's now (`to`, when its record could be read).
    fn mark(&self, to: Option<GcLockHolder>) {
        *self.to.lock().unwrap() = to;
        self.flag.store(true, Ordering::SeqCst);
    }

    /// After a failed renewal: past the lock's life since the last renewal that reached the
    /// store, another collection may have taken it, so it counts as lost (and `true`).
    fn unrenewed_too_long(&self, renewed_at: std::time::Instant) -> bool {
        if renewed_at.elapsed() + GC_LEASE_RENEW < GC_LEASE_TTL {
            return false;
        }
        log::error!(
            "the garbage-collection lock could not be renewed for {} s: taken for lost",
            renewed_at.elapsed().as_secs()
        );
        self.mark(None);
        true
    }
}

#[derive(Debug)]
enum Kind {
    File(Arc<std::fs::File>),
    Lease {
        store: Arc<dyn ObjectStore>,
        path: Path,
    },
    Redis {
        locks: RedisLocks,
        /// The record the key holds while ours (each renewal replaces it).
        record: Arc<Mutex<String>>,
    },
}

impl Drop for GcLock {
    fn drop(&mut self) {
        self.renewal.abort();
        if let Kind::File(file) = &self.kind {
            unlock_file(file);
        }
    }
}

impl GcLock {
    /// `Err(holder)` when a renewal found that another collection took the lock over (its
    /// lease had been taken for expired, or a store ignored a conditional write).
    pub fn check(&self) -> std::result::Result<(), Option<GcLockHolder>> {
        if self.lost.flag.load(Ordering::SeqCst) {
            return Err(self.lost.to.lock().unwrap().clone());
        }
        Ok(())
    }

    /// Lets the next collection run.
    pub async fn release(self) {
        self.renewal.abort();
        if let Kind::Redis { locks, record } = &self.kind {
            let record = record.lock().unwrap().clone();
            if let Err(e) = locks.release_gc(&record).await {
                log::warn!("cannot release the garbage-collection lock in Redis: {e}");
            }
        }
        if let Kind::Lease { store, path } = &self.kind {
            // Only our own lease: one that replaced ours stays.
            let ours = match store.get(path).await {
                Ok(r) => r
                    .bytes()
                    .await
                    .ok()
                    .and_then(|b| GcLockHolder::parse(&b))
                    .is_some_and(|h| h.owner == self.holder.owner),
                Err(_) => false,
            };
            if ours {
                if let Err(e) = store.delete(path).await {
                    log::warn!("cannot remove the garbage-collection lease {path}: {e}");
                }
            }
        }
        // Drop unlocks the file.
    }
}

impl Storage {
    /// Writes a small object whole, replacing any (the collector's journal entries; on local
    /// disk written to a temporary file and renamed, so never seen half-written).
    pub async fn write_small(&self, path: &Path, bytes: Vec<u8>) -> Result<()> {
        self.store.put(path, PutPayload::from(bytes)).await?;
        Ok(())
    }

    /// Takes the collector's lock, or answers who holds it.
    pub async fn lock_gc(&self) -> Result<GcLockAttempt> {
        if let Some((local, _)) = self.local_files() {
            let file = local.path_to_filesystem(&layout::gc_lock())?;
            return tokio::task::spawn_blocking(move || lock_gc_file(&file))
                .await
                .map_err(|e| StorageError::Io(std::io::Error::other(e)))?;
        }
        if let Coordination::Redis(locks) = &*self.coordination {
            return lock_gc_redis(locks).await;
        }
        let settle = match &self.backend {
            // S3 (the only store with a signer) may be a server ignoring `If-None-Match`.
            Backend::Objects {
                signer: Some(_), ..
            } => GC_LEASE_SETTLE,
            _ => Duration::ZERO,
        };
        self.lock_gc_lease(settle).await
    }

    async fn read_gc_lease(&self, path: &Path) -> Result<Option<Option<GcLockHolder>>> {
        Ok(self
            .read_small(path)
            .await?
            .map(|b| GcLockHolder::parse(&b)))
    }

    async fn lock_gc_lease(&self, settle: Duration) -> Result<GcLockAttempt> {
        let path = layout::gc_lock();
        let me = GcLockHolder::new();
        // Twice: once more after breaking an expired lease.
        for _ in 0..2 {
            match self.read_gc_lease(&path).await? {
                Some(Some(h)) if !h.expired() => return Ok(GcLockAttempt::Busy(Some(h))),
                Some(h) => {
                    log::info!(
                        "breaking the expired garbage-collection lease of {}",
                        h.map_or_else(|| "an unreadable record".into(), |h| h.to_string())
                    );
                    self.delete(&path).await?;
                }
                None => {}
            }
            let created = self
                .store
                .put_opts(
                    &path,
                    me.payload(),
                    PutOptions {
                        mode: PutMode::Create,
                        ..Default::default()
                    },
                )
                .await;
            match created {
                Ok(_) => {}
                Err(object_store::Error::AlreadyExists { .. }) => continue,
                Err(e) => return Err(e.into()),
            }
            if !settle.is_zero() {
                tokio::time::sleep(settle).await;
            }
            match self.read_gc_lease(&path).await? {
                Some(Some(h)) if h.owner == me.owner => {}
                // Another collector's write replaced ours (or it vanished): theirs it is.
                other => return Ok(GcLockAttempt::Busy(other.flatten())),
            }
            let lost = Arc::new(Lost::default());
            let renewal = tokio::spawn(renew_lease(
                self.store.clone(),
                path.clone(),
                me.clone(),
                lost.clone(),
            ));
            return Ok(GcLockAttempt::Held(GcLock {
                holder: me,
                kind: Kind::Lease {
                    store: self.store.clone(),
                    path,
                },
                renewal,
                lost,
            }));
        }
        Ok(GcLockAttempt::Busy(
            self.read_gc_lease(&path).await?.flatten(),
        ))
    }
}

/// Object stores with Redis locks: the key is set with our record unless a collection holds it.
async fn lock_gc_redis(locks: &RedisLocks) -> Result<GcLockAttempt> {
    let me = GcLockHolder::new();
    let record = serde_json::to_string(&me).expect("a lock record serializes");
    if let Some(held) = locks.take_gc(&record, GC_LEASE_TTL).await? {
        return Ok(GcLockAttempt::Busy(GcLockHolder::parse(held.as_bytes())));
    }
    let record = Arc::new(Mutex::new(record));
    let lost = Arc::new(Lost::default());
    let renewal = tokio::spawn(renew_redis(
        locks.clone(),
        record.clone(),
        me.clone(),
        lost.clone(),
    ));
    Ok(GcLockAttempt::Held(GcLock {
        holder: me,
        kind: Kind::Redis {
            locks: locks.clone(),
            record,
        },
        renewal,
        lost,
    }))
}

async fn renew_redis(
    locks: RedisLocks,
    record: Arc<Mutex<String>>,
    me: GcLockHolder,
    lost: Arc<Lost>,
) {
    let mut renewed_at = std::time::Instant::now();
    loop {
        tokio::time::sleep(GC_LEASE_RENEW).await;
        let current = record.lock().unwrap().clone();
        let next = serde_json::to_string(&me.renewed()).expect("a lock record serializes");
        match locks.renew_gc(&current, &next, GC_LEASE_TTL).await {
            Ok(None) => {
                *record.lock().unwrap() = next;
                renewed_at = std::time::Instant::now();
            }
            Ok(Some(there)) => {
                log::error!("the garbage-collection lock in Redis was taken over");
                lost.mark(GcLockHolder::parse(there.as_bytes()));
                return;
            }
            Err(e) => {
                log::warn!("cannot renew the garbage-collection lock in Redis: {e}");
                if lost.unrenewed_too_long(renewed_at) {
                    return;
                }
            }
        }
    }
}

async fn renew_lease(store: Arc<dyn ObjectStore>, path: Path, me: GcLockHolder, lost: Arc<Lost>) {
    let mut renewed_at = std::time::Instant::now();
    loop {
        tokio::time::sleep(GC_LEASE_RENEW).await;
        let current = match store.get(&path).await {
            Ok(r) => r.bytes().await.ok().and_then(|b| GcLockHolder::parse(&b)),
            Err(object_store::Error::NotFound { .. }) => None,
            Err(e) => {
                log::warn!("cannot read the garbage-collection lease {path}: {e}");
                if lost.unrenewed_too_long(renewed_at) {
                    return;
                }
                continue;
            }
        };
        match current {
            Some(h) if h.owner == me.owner => {}
            other => {
                log::error!("the garbage-collection lease {path} was taken over");
                lost.mark(other);
                return;
            }
        }
        match store.put(&path, me.renewed().payload()).await {
            Ok(_) => renewed_at = std::time::Instant::now(),
            Err(e) => {
                log::warn!("cannot renew the garbage-collection lease {path}: {e}");
                if lost.unrenewed_too_long(renewed_at) {
                    return;
                }
            }
        }
    }
}

/// Local disk: locks the file (created if missing) and writes our record into it.
fn lock_gc_file(file: &std::path::Path) -> Result<GcLockAttempt> {
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
    if !super::lock::try_lock_file(&f)? {
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
        lost: Arc::default(),
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
fn unlock_file(file: &std::fs::File) {
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

#[cfg(test)]
mod tests {
    use super::*;

    fn attempt_held(a: GcLockAttempt) -> GcLock {
        match a {
            GcLockAttempt::Held(l) => l,
            GcLockAttempt::Busy(h) => panic!("refused: {h:?}"),
        }
    }

    #[tokio::test]
    async fn a_second_collection_is_refused_until_the_first_releases() {
        let dir = tempfile::tempdir().unwrap();
        for storage in [
            Storage::in_memory(),
            Storage::filesystem(dir.path(), false).unwrap(),
        ] {
            let first = attempt_held(storage.lock_gc().await.unwrap());
            match storage.lock_gc().await.unwrap() {
                GcLockAttempt::Busy(Some(h)) => assert_eq!(h, first.holder),
                other => panic!("{}: not refused: {other:?}", storage.describe()),
            }
            first.release().await;
            attempt_held(storage.lock_gc().await.unwrap())
                .release()
                .await;
        }
    }

    #[tokio::test]
    async fn a_lease_whose_holder_died_expires() {
        let storage = Storage::in_memory();
        let path = layout::gc_lock();
        let mut dead = GcLockHolder::new();
        dead.pid = 1;
        storage.store.put(&path, dead.payload()).await.unwrap();
        assert!(matches!(
            storage.lock_gc().await.unwrap(),
            GcLockAttempt::Busy(Some(h)) if h.pid == 1
        ));
        // The same record, past its expiry: broken and taken.
        dead.expires = now_ms() - 1;
        storage.store.put(&path, dead.payload()).await.unwrap();
        let lock = attempt_held(storage.lock_gc().await.unwrap());
        assert_eq!(lock.holder.pid, std::process::id());
        assert!(lock.check().is_ok());
        lock.release().await;
        assert!(!storage.exists(&path).await.unwrap());
    }

    #[test]
    fn a_lock_unrenewed_for_its_life_counts_as_lost() {
        let lost = Lost::default();
        // Failed once, just after a renewal: still ours.
        assert!(!lost.unrenewed_too_long(std::time::Instant::now()));
        assert!(!lost.flag.load(Ordering::SeqCst));
        // By the next renewal it would have expired: another collection may hold it now.
        let renewed_at = std::time::Instant::now() - (GC_LEASE_TTL - GC_LEASE_RENEW);
        assert!(lost.unrenewed_too_long(renewed_at));
        assert!(lost.flag.load(Ordering::SeqCst));
        assert_eq!(*lost.to.lock().unwrap(), None);
    }
}
