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
            Sink::File { path, file, .. } => {
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
                blocking(move || {
                    use std::os::unix::fs::FileExt;
                    let mut pos = offset;
                    let result = batch.iter().try_for_each(|b| {
                        file.write_all_at(b, pos)?;
                        pos += b.len() as u64;
                        Ok(())
                    });
                    if result.is_err() {
                        // Drop a partly written batch so the file ends where the upload does.
                        let _ = file.set_len(offset);
                    }
                    result
                })
                .await?;
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
