//! Where an upload's bytes go while it is in progress.
//!
//! On the filesystem the bytes are appended to one file (object_store's `LocalFileSystem` has no
//! resumable multipart upload); on object stores they become multipart parts. Either way a write
//! takes a batch of `Bytes` as received from the network: no copy, large writes.

use std::path::PathBuf;
use std::sync::Arc;

use bytes::Bytes;
use object_store::multipart::{MultipartStore, PartId};
use object_store::path::Path;
use object_store::{MultipartId, PutPayload};

use super::{Result, StorageError};

/// With fsync on, write-back of the upload file is started every this many bytes, so the disk
/// works while the network does and the final fsync only waits for the tail.
const WRITEBACK_STEP: u64 = 16 * 1024 * 1024;

/// Object-store parts are flushed once this much is pending (S3 wants ≥ 5 MiB but the last).
const PART_SIZE: usize = 8 * 1024 * 1024;

pub struct BlobWriter {
    location: Path,
    written: u64,
    sink: Sink,
}

enum Sink {
    File {
        path: PathBuf,
        /// Open only while a request writes: an idle or abandoned session holds no descriptor.
        file: Option<Arc<std::fs::File>>,
        fsync: bool,
        /// Where early write-back was last started (see [`WRITEBACK_STEP`]).
        writeback_from: u64,
        /// Bytes before this are on disk and dropped from the page cache.
        settled_to: u64,
    },
    Multipart {
        store: Arc<dyn MultipartStore>,
        id: MultipartId,
        parts: Vec<PartId>,
        pending: Vec<Bytes>,
        pending_len: usize,
    },
}

async fn blocking<T: Send + 'static>(
    f: impl FnOnce() -> std::io::Result<T> + Send + 'static,
) -> Result<T> {
    tokio::task::spawn_blocking(f)
        .await
        .map_err(|e| StorageError::Io(std::io::Error::other(e)))?
        .map_err(StorageError::Io)
}

impl BlobWriter {
    pub(super) async fn create_file(location: Path, path: PathBuf, fsync: bool) -> Result<Self> {
        let create = path.clone();
        let file = blocking(move || {
            if let Some(parent) = create.parent() {
                std::fs::create_dir_all(parent)?;
            }
            std::fs::OpenOptions::new()
                .create(true)
                .truncate(true)
                .write(true)
                .open(&create)
        })
        .await?;
        Ok(BlobWriter {
            location,
            written: 0,
            sink: Sink::File {
                path,
                file: Some(Arc::new(file)),
                fsync,
                writeback_from: 0,
                settled_to: 0,
            },
        })
    }

    pub(super) async fn create_multipart(
        store: Arc<dyn MultipartStore>,
        location: Path,
    ) -> Result<Self> {
        let id = store.create_multipart(&location).await?;
        Ok(BlobWriter {
            location,
            written: 0,
            sink: Sink::Multipart {
                store,
                id,
                parts: Vec::new(),
                pending: Vec::new(),
                pending_len: 0,
            },
        })
    }

    /// Lets go of what an idle upload need not hold (the open file).
    pub fn park(&mut self) {
        if let Sink::File { file, .. } = &mut self.sink {
            *file = None;
        }
    }

    /// Bytes accepted so far.
    pub fn written(&self) -> u64 {
        self.written
    }

    /// Appends a batch. On error nothing of the batch counts as written and the sink is left as
    /// it was before the call, so the upload can continue from [`Self::written`].
    pub async fn write(&mut self, batch: Vec<Bytes>) -> Result<()> {
        let len: usize = batch.iter().map(Bytes::len).sum();
        match &mut self.sink {
            Sink::File {
                path,
                file,
                fsync,
                writeback_from,
                settled_to,
            } => {
                let file = match file {
                    Some(f) => f.clone(),
                    None => {
                        let reopen = path.clone();
                        let f = Arc::new(
                            blocking(move || std::fs::OpenOptions::new().write(true).open(reopen))
                                .await?,
                        );
                        *file = Some(f.clone());
                        f
                    }
                };
                let offset = self.written;
                let end = offset + len as u64;
                let kick = (*fsync && end - *writeback_from >= WRITEBACK_STEP)
                    .then_some((*settled_to, *writeback_from));
                blocking(move || {
                    let result = write_all_vectored_at(&file, &batch, offset);
                    if result.is_err() {
                        // Drop a partly written batch so the file ends where the upload does.
                        let _ = file.set_len(offset);
                    }
                    result?;
                    if let Some((settled, from)) = kick {
                        settle(&file, settled, from);
                        start_writeback(&file, from, end - from);
                    }
                    Ok(())
                })
                .await?;
                if let Some((_, from)) = kick {
                    *settled_to = from;
                    *writeback_from = end;
                }
            }
            Sink::Multipart {
                pending,
                pending_len,
                ..
            } => {
                pending.extend(batch);
                *pending_len += len;
                if *pending_len >= PART_SIZE {
                    if let Err(e) = self.flush_part().await {
                        self.unstage(len);
                        return Err(e);
                    }
                }
            }
        }
        self.written += len as u64;
        Ok(())
    }

    /// Takes the last `len` bytes back out of the pending part after a failed flush.
    fn unstage(&mut self, mut len: usize) {
        if let Sink::Multipart {
            pending,
            pending_len,
            ..
        } = &mut self.sink
        {
            *pending_len -= len;
            while len > 0 {
                let last = pending.pop().expect("pending holds the batch");
                if last.len() <= len {
                    len -= last.len();
                } else {
                    pending.push(last.slice(..last.len() - len));
                    len = 0;
                }
            }
        }
    }

    async fn flush_part(&mut self) -> Result<()> {
        if let Sink::Multipart {
            store,
            id,
            parts,
            pending,
            pending_len,
        } = &mut self.sink
        {
            if pending.is_empty() {
                return Ok(());
            }
            let payload: PutPayload = pending.iter().cloned().collect();
            let part = store
                .put_part(&self.location, id, parts.len(), payload)
                .await?;
            parts.push(part);
            pending.clear();
            *pending_len = 0;
        }
        Ok(())
    }

    /// Makes the written bytes durable and complete at [`Self::location`].
    pub async fn finish(mut self) -> Result<Path> {
        self.flush_part().await?;
        match self.sink {
            Sink::File { path, fsync, .. } => {
                if fsync {
                    blocking(move || std::fs::File::open(path)?.sync_all()).await?;
                }
            }
            Sink::Multipart {
                store, id, parts, ..
            } => {
                store.complete_multipart(&self.location, &id, parts).await?;
            }
        }
        Ok(self.location)
    }

    /// Releases what the upload holds on the backend (the caller removes the files).
    pub async fn abort(self) -> Result<()> {
        if let Sink::Multipart { store, id, .. } = self.sink {
            store.abort_multipart(&self.location, &id).await?;
        }
        Ok(())
    }
}

/// Writes every buffer of `bufs` at `offset` with as few `pwritev` calls as the kernel allows.
fn write_all_vectored_at(file: &std::fs::File, bufs: &[Bytes], offset: u64) -> std::io::Result<()> {
    use std::os::fd::AsRawFd;
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
            let err = std::io::Error::last_os_error();
            if err.kind() == std::io::ErrorKind::Interrupted {
                continue;
            }
            return Err(err);
        }
        if n == 0 {
            return Err(std::io::ErrorKind::WriteZero.into());
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

/// Waits for the write-back of `from..to` started one step earlier, then drops those pages from
/// the page cache: a large upload streams through a small, reused window of memory instead of
/// filling the cache (and the machine) with pages that will not be read soon.
fn settle(file: &std::fs::File, from: u64, to: u64) {
    use std::os::fd::AsRawFd;
    if to <= from {
        return;
    }
    let fd = file.as_raw_fd();
    // SAFETY: plain syscalls on a descriptor owned by `file`; failure only loses the hint.
    unsafe {
        libc::sync_file_range(
            fd,
            from as libc::off64_t,
            (to - from) as libc::off64_t,
            libc::SYNC_FILE_RANGE_WAIT_BEFORE
                | libc::SYNC_FILE_RANGE_WRITE
                | libc::SYNC_FILE_RANGE_WAIT_AFTER,
        );
        libc::posix_fadvise(
            fd,
            from as libc::off_t,
            (to - from) as libc::off_t,
            libc::POSIX_FADV_DONTNEED,
        );
    }
}

/// Asks the kernel to start writing `len` bytes from `from` to disk without waiting for it.
fn start_writeback(file: &std::fs::File, from: u64, len: u64) {
    use std::os::fd::AsRawFd;
    // SAFETY: a plain syscall on a descriptor owned by `file`; failure only loses the hint.
    unsafe {
        libc::sync_file_range(
            file.as_raw_fd(),
            from as libc::off64_t,
            len as libc::off64_t,
            libc::SYNC_FILE_RANGE_WRITE,
        );
    }
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
}
