//! An upload file on local disk: its positioned writes, and making it durable (early
//! write-back, waiting for it, fsync).
//!
//! Every result is checked. A write-back error is reported by the kernel once per open file
//! description that has not seen it yet: a `sync_file_range(…WAIT…)` whose error is ignored
//! consumes it, and a later fsync (on this or a newer descriptor) succeeds although the bytes never
//! reached the disk (and, once dropped from the page cache, read back as whatever the disk holds).
//! So a failed sync is never retried as if it could still succeed: the caller ends the upload
//! (see [`super::StorageError::WriteBack`]).
//!
//! The syscalls sit behind [`FileSync`] so that tests can make them fail as a faulty or full
//! disk would (`storage::faults::Faults` implements it); production uses [`SystemSync`], one
//! virtual call per 16 MiB step.

use std::fs::File;
use std::io;
use std::os::fd::AsRawFd;

use bytes::Bytes;

/// The syscalls that put an upload file's bytes on disk. Each one's default is the kernel's own
/// call: a test overrides only those it makes fail or counts.
pub trait FileSync: Send + Sync + std::fmt::Debug {
    /// Starts write-back of `len` bytes from `from`, without waiting for it.
    fn start_writeback(&self, file: &File, from: u64, len: u64) -> io::Result<()> {
        sync_file_range(file, from, len, libc::SYNC_FILE_RANGE_WRITE)
    }
    /// Waits until `len` bytes from `from` are written back (starting what is not started yet).
    fn wait_writeback(&self, file: &File, from: u64, len: u64) -> io::Result<()> {
        sync_file_range(
            file,
            from,
            len,
            libc::SYNC_FILE_RANGE_WAIT_BEFORE
                | libc::SYNC_FILE_RANGE_WRITE
                | libc::SYNC_FILE_RANGE_WAIT_AFTER,
        )
    }
    /// Syncs the file's data and metadata (`fsync`).
    fn sync_all(&self, file: &File) -> io::Result<()> {
        file.sync_all()
    }
    /// Appends `bytes` to a journal file (`storage::journal`): a write, not a sync, but behind
    /// this trait too so that tests can fill the disk (`ENOSPC`).
    fn append(&self, file: &File, bytes: &[u8]) -> io::Result<()> {
        use std::io::Write;
        let mut file = file;
        file.write_all(bytes)
    }
    /// Syncs the file's data and what is needed to read it back (`fdatasync`): the journal's
    /// commits (`storage::journal`).
    fn sync_data(&self, file: &File) -> io::Result<()> {
        file.sync_data()
    }
    /// Syncs the whole filesystem holding `file` (`syncfs`): the journal's checkpoints.
    fn sync_filesystem(&self, file: &File) -> io::Result<()> {
        // SAFETY: a plain syscall on a descriptor owned by `file`.
        if unsafe { libc::syncfs(file.as_raw_fd()) } == 0 {
            Ok(())
        } else {
            Err(io::Error::last_os_error())
        }
    }
    /// Whether pages already written back leave the page cache (see [`settle`]).
    fn drops_written_pages(&self) -> bool {
        false
    }
}

/// The kernel's own calls.
#[derive(Debug, Clone, Copy, Default)]
pub struct SystemSync {
    /// `storage.filesystem.dropcache`: drop an upload's pages from the page cache once they are
    /// on disk. Off by default: a pull right after the push (a deploy after CI) then reads from
    /// memory instead of the disk; the pages are clean and the kernel reclaims them as needed.
    pub drop_written: bool,
}

fn sync_file_range(file: &File, from: u64, len: u64, flags: libc::c_uint) -> io::Result<()> {
    loop {
        // SAFETY: a plain syscall on a descriptor owned by `file`.
        let rc = unsafe {
            libc::sync_file_range(
                file.as_raw_fd(),
                from as libc::off64_t,
                len as libc::off64_t,
                flags,
            )
        };
        if rc == 0 {
            return Ok(());
        }
        let err = io::Error::last_os_error();
        if err.kind() != io::ErrorKind::Interrupted {
            return Err(err);
        }
    }
}

impl FileSync for SystemSync {
    fn drops_written_pages(&self) -> bool {
        self.drop_written
    }
}

/// Waits for the write-back of `from..to` started one step earlier, so that dirty pages of an
/// upload stay within two steps. If `sync` says so, those pages are then dropped from the page
/// cache: a large upload streams through a small, reused window of memory instead of filling the
/// cache with pages that may not be read soon (but the first pull then reads from disk). An error
/// means those bytes may not be on disk: the pages are left alone and the error returned.
pub(super) fn settle(sync: &dyn FileSync, file: &File, from: u64, to: u64) -> io::Result<()> {
    if to <= from {
        return Ok(());
    }
    sync.wait_writeback(file, from, to - from)?;
    if !sync.drops_written_pages() {
        return Ok(());
    }
    // SAFETY: a plain syscall on a descriptor owned by `file`. Its result is only whether the
    // hint was taken (the pages are clean and on disk by now): nothing to act on.
    unsafe {
        libc::posix_fadvise(
            file.as_raw_fd(),
            from as libc::off_t,
            (to - from) as libc::off_t,
            libc::POSIX_FADV_DONTNEED,
        );
    }
    Ok(())
}

/// Writes every buffer of `bufs` at `offset` with as few `pwritev` calls as the kernel allows.
pub(super) fn write_all_vectored_at(file: &File, bufs: &[Bytes], offset: u64) -> io::Result<()> {
    let mut bufs: Vec<&[u8]> = bufs
        .iter()
        .map(|b| &b[..])
        .filter(|b| !b.is_empty())
        .collect();
    let mut pos = offset;
    let mut first = 0;
    while first < bufs.len() {
        let iov: Vec<libc::iovec> = bufs[first..]
            .iter()
            .take(1024)
            .map(|b| libc::iovec {
                iov_base: b.as_ptr() as *mut libc::c_void,
                iov_len: b.len(),
            })
            .collect();
        // SAFETY: every iovec points into a live slice of `bufs` for the duration of the call,
        // and the descriptor belongs to `file`.
        let n = unsafe {
            libc::pwritev(
                file.as_raw_fd(),
                iov.as_ptr(),
                iov.len() as libc::c_int,
                pos as libc::off_t,
            )
        };
        if n < 0 {
            let err = io::Error::last_os_error();
            if err.kind() == io::ErrorKind::Interrupted {
                continue;
            }
            return Err(err);
        }
        if n == 0 {
            return Err(io::ErrorKind::WriteZero.into());
        }
        let mut n = n as usize;
        pos += n as u64;
        while n > 0 {
            let b = bufs[first];
            if n >= b.len() {
                n -= b.len();
                first += 1;
            } else {
                bufs[first] = &b[n..];
                n = 0;
            }
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn vectored_writes_land_in_order() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("f");
        let file = std::fs::File::create(&path).unwrap();
        let pieces: Vec<Bytes> = (0..3000u32)
            .map(|i| Bytes::from(vec![(i % 256) as u8; (i % 7) as usize]))
            .collect();
        write_all_vectored_at(&file, &pieces[..1500], 0).unwrap();
        let first: usize = pieces[..1500].iter().map(Bytes::len).sum();
        write_all_vectored_at(&file, &pieces[1500..], first as u64).unwrap();
        let expected: Vec<u8> = pieces.iter().flat_map(|b| b.iter().copied()).collect();
        assert_eq!(std::fs::read(&path).unwrap(), expected);
    }

    #[test]
    fn the_system_calls_succeed_on_a_plain_file() {
        let dir = tempfile::tempdir().unwrap();
        let file = File::create(dir.path().join("f")).unwrap();
        std::os::unix::fs::FileExt::write_all_at(&file, &[1u8; 8192], 0).unwrap();
        SystemSync::default()
            .start_writeback(&file, 0, 8192)
            .unwrap();
        settle(&SystemSync::default(), &file, 0, 8192).unwrap();
        SystemSync::default().sync_all(&file).unwrap();
    }

    /// Of the pages of the file's first `len` bytes, how many are in the page cache (`mincore`),
    /// and how many there are.
    fn resident_pages(file: &File, len: usize) -> (usize, usize) {
        // SAFETY: a read-only shared mapping of `len` bytes of a file at least that long, unmapped
        // before returning; `mincore` fills one byte per page of it.
        unsafe {
            let map = libc::mmap(
                std::ptr::null_mut(),
                len,
                libc::PROT_READ,
                libc::MAP_SHARED,
                file.as_raw_fd(),
                0,
            );
            assert_ne!(map, libc::MAP_FAILED);
            let page = libc::sysconf(libc::_SC_PAGESIZE) as usize;
            let mut vec = vec![0u8; len.div_ceil(page)];
            assert_eq!(libc::mincore(map, len, vec.as_mut_ptr()), 0);
            libc::munmap(map, len);
            (vec.iter().filter(|v| *v & 1 == 1).count(), vec.len())
        }
    }

    #[test]
    fn written_pages_stay_cached_unless_told_to_drop_them() {
        let len = 4 << 20;
        let dir = tempfile::tempdir().unwrap();
        for drop_written in [false, true] {
            // Readable too: the check maps it.
            let file = std::fs::OpenOptions::new()
                .create(true)
                .truncate(true)
                .read(true)
                .write(true)
                .open(dir.path().join(format!("f{drop_written}")))
                .unwrap();
            std::os::unix::fs::FileExt::write_all_at(&file, &vec![7u8; len], 0).unwrap();
            let sync = SystemSync { drop_written };
            sync.start_writeback(&file, 0, len as u64).unwrap();
            settle(&sync, &file, 0, len as u64).unwrap();
            let (resident, pages) = resident_pages(&file, len);
            if drop_written {
                assert!(
                    resident < pages / 2,
                    "{resident} of {pages} pages still cached"
                );
            } else {
                assert_eq!(resident, pages, "pages written back were dropped");
            }
        }
    }

    #[test]
    fn a_sync_error_is_reported_not_swallowed() {
        // A descriptor that is not a regular file: sync_file_range fails (ESPIPE).
        let (reader, _writer) = std::io::pipe().unwrap();
        let file = File::from(std::os::fd::OwnedFd::from(reader));
        assert!(settle(&SystemSync::default(), &file, 0, 4096).is_err());
        assert!(SystemSync::default()
            .start_writeback(&file, 0, 4096)
            .is_err());
    }
}
