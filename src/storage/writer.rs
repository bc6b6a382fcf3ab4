//! Where an upload's bytes go while it is in progress.
//!
//! On the filesystem the bytes are appended to one file with positioned writes (object_store's
//! `LocalFileSystem` has no resumable multipart upload); on object stores they become multipart
//! parts of the configured size. Bytes that do not fill a part by the end of a request are
//! *staged* as an object of their own (`staged/<offset>`) and read back into the next part, so no
//! request size is too small for S3's 5 MiB part minimum and an idle upload holds no memory.
//! Either way a write takes a batch of `Bytes` as received from the network: no copy.

use std::path::PathBuf;
use std::sync::Arc;

use bytes::Bytes;
use object_store::multipart::{MultipartStore, PartId};
use object_store::path::Path;
use object_store::{ObjectStore, ObjectStoreExt, PutPayload};

use super::filesync::{settle, write_all_vectored_at, FileSync};
use super::lock::Fence;
use super::parts_state::{PartsState, Staged};
use super::s3_requests::S3Requests;
use super::{layout, Result, StorageError};

/// With fsync on, write-back of the upload file is started every this many bytes, so the disk
/// works while the network does and the final fsync only waits for the tail.
const WRITEBACK_STEP: u64 = 16 * 1024 * 1024;

/// S3's minimum size of a part other than the last: at the end of a request, staged and pending
/// bytes reaching it become a part (parts are otherwise `part_size`).
const MIN_PART: u64 = 5 * 1024 * 1024;

pub struct BlobWriter {
    location: Path,
    written: u64,
    sink: Sink,
    /// On local disk with a journal: an upload of at most this many bytes is not synced when
    /// it finishes, because its commit puts the bytes in the journal (see
    /// [`super::journal::INLINE_BLOB_MAX`]). 0 otherwise.
    inline_up_to: u64,
}

enum Sink {
    File {
        path: PathBuf,
        /// Open only while a request writes: an idle or abandoned session holds no descriptor.
        file: Option<Arc<std::fs::File>>,
        /// The syscalls that make the file durable; `None` with fsync off.
        sync: Option<Arc<dyn FileSync>>,
        /// A sync failed: bytes this writer counted may not be on disk. It writes, checkpoints
        /// and finishes nothing more (the upload is removed, see [`StorageError::WriteBack`]).
        failed: bool,
        /// Where early write-back was last started (see [`WRITEBACK_STEP`]).
        writeback_from: u64,
        /// Bytes before this are on disk and dropped from the page cache.
        settled_to: u64,
    },
    Multipart {
        multipart: Arc<dyn MultipartStore>,
        /// Completes uploads whose part numbers have gaps (S3; `None` in memory).
        requests: Option<Arc<S3Requests>>,
        store: Arc<dyn ObjectStore>,
        upload_id: String,
        part_size: usize,
        state: PartsState,
        /// Received in this request, not yet in a part or staged.
        pending: Vec<Bytes>,
        pending_len: usize,
        /// Staged objects already copied into a part: removed once the record no longer
        /// names them.
        garbage: Vec<Path>,
        /// The lock holder's fence while a request writes (see `storage::lock`): part numbers
        /// and staged names come from it.
        fence: Option<Arc<dyn Fence>>,
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
    /// Creates the upload file; `beside` (a file name and its content) is written next to it
    /// in the same trip to the blocking pool, atomically (the upload's first record). `sync` is
    /// how the file is made durable (`None`: fsync off).
    pub(super) async fn create_file(
        location: Path,
        path: PathBuf,
        sync: Option<Arc<dyn FileSync>>,
        beside: Option<(&'static str, Vec<u8>)>,
    ) -> Result<Self> {
        let create = path.clone();
        let file = blocking(move || {
            let parent = create.parent().expect("an upload file has a directory");
            std::fs::create_dir_all(parent)?;
            let file = std::fs::OpenOptions::new()
                .create(true)
                .truncate(true)
                .write(true)
                .open(&create)?;
            if let Some((name, content)) = beside {
                let temp = parent.join(format!("{name}.new"));
                std::fs::write(&temp, content)?;
                std::fs::rename(&temp, parent.join(name))?;
            }
            Ok(file)
        })
        .await?;
        Ok(BlobWriter {
            location,
            inline_up_to: 0,
            written: 0,
            sink: Sink::File {
                path,
                file: Some(Arc::new(file)),
                sync,
                failed: false,
                writeback_from: 0,
                settled_to: 0,
            },
        })
    }

    /// Continues an upload file of which `offset` bytes count (anything after them is a torn
    /// write of a request that never finished, and is overwritten).
    pub(super) fn resume_file(
        location: Path,
        path: PathBuf,
        sync: Option<Arc<dyn FileSync>>,
        offset: u64,
    ) -> Self {
        BlobWriter {
            location,
            inline_up_to: 0,
            written: offset,
            sink: Sink::File {
                path,
                file: None,
                sync,
                failed: false,
                writeback_from: offset,
                settled_to: offset,
            },
        }
    }

    pub(super) async fn create_multipart(
        multipart: Arc<dyn MultipartStore>,
        requests: Option<Arc<S3Requests>>,
        store: Arc<dyn ObjectStore>,
        upload_id: &str,
        location: Path,
        part_size: usize,
    ) -> Result<Self> {
        let id = multipart.create_multipart(&location).await?;
        let state = PartsState {
            multipart_id: id,
            ..Default::default()
        };
        Ok(Self::resume_multipart(
            multipart, requests, store, upload_id, location, part_size, 0, state,
        ))
    }

    #[allow(clippy::too_many_arguments)]
    pub(super) fn resume_multipart(
        multipart: Arc<dyn MultipartStore>,
        requests: Option<Arc<S3Requests>>,
        store: Arc<dyn ObjectStore>,
        upload_id: &str,
        location: Path,
        part_size: usize,
        offset: u64,
        state: PartsState,
    ) -> Self {
        BlobWriter {
            location,
            inline_up_to: 0,
            written: offset,
            sink: Sink::Multipart {
                multipart,
                requests,
                store,
                upload_id: upload_id.to_string(),
                part_size,
                state,
                pending: Vec::new(),
                pending_len: 0,
                garbage: Vec::new(),
                fence: None,
            },
        }
    }

    /// The multipart state to record (object stores), after [`Self::checkpoint`].
    pub fn parts_state(&self) -> Option<PartsState> {
        match &self.sink {
            Sink::Multipart { state, .. } => Some(state.clone()),
            Sink::File { .. } => None,
        }
    }

    /// Puts bytes held in memory somewhere durable (object stores: a staged object), so the
    /// writer can be recorded and left idle. A no-op on files, whose writes are already there.
    pub async fn checkpoint(&mut self) -> Result<()> {
        self.refuse_if_failed()?;
        if let Sink::Multipart {
            state, pending_len, ..
        } = &self.sink
        {
            // Enough for a part (S3's minimum): send it rather than stage it, which would cost
            // a PUT now and a GET later.
            if *pending_len > 0 && state.staged_len() + *pending_len as u64 >= MIN_PART {
                return self.flush_part().await;
            }
        }
        if let Sink::Multipart {
            store,
            upload_id,
            state,
            pending,
            pending_len,
            fence,
            ..
        } = &mut self.sink
        {
            if *pending_len == 0 {
                return Ok(());
            }
            let offset = self.written - *pending_len as u64;
            let token = fence.as_ref().map_or(0, |f| f.token());
            let payload: PutPayload = pending.iter().cloned().collect();
            store
                .put(&layout::upload_staged(upload_id, offset, token), payload)
                .await?;
            state.staged.push(Staged {
                offset,
                len: *pending_len as u64,
                token,
            });
            pending.clear();
            *pending_len = 0;
        }
        Ok(())
    }

    /// Removes staged objects that the last saved record no longer names.
    pub async fn collect_garbage(&mut self) {
        if let Sink::Multipart { store, garbage, .. } = &mut self.sink {
            for path in garbage.drain(..) {
                let _ = store.delete(&path).await;
            }
        }
    }

    /// Writes through `file` (the upload's data file, already open) instead of opening it.
    pub fn adopt_file(&mut self, open: Option<Arc<std::fs::File>>) {
        if let (Sink::File { file, .. }, Some(open)) = (&mut self.sink, open) {
            if file.is_none() {
                *file = Some(open);
            }
        }
    }

    /// Writes under `fence` (the request's lock holder) until the writer is parked.
    pub fn adopt_fence(&mut self, held: Option<Arc<dyn Fence>>) {
        if let Sink::Multipart { fence, .. } = &mut self.sink {
            *fence = held;
        }
    }

    /// Lets go of what an idle upload need not hold (the open file, the request's fence).
    pub fn park(&mut self) {
        match &mut self.sink {
            Sink::File { file, .. } => *file = None,
            Sink::Multipart { fence, .. } => *fence = None,
        }
    }

    /// Bytes accepted so far.
    pub fn written(&self) -> u64 {
        self.written
    }

    /// After a failed sync nothing this writer counted can be trusted to be on disk: it must not
    /// be recorded, continued or published (a retried fsync may "succeed" without the data).
    fn refuse_if_failed(&self) -> Result<()> {
        match &self.sink {
            Sink::File { failed: true, .. } => Err(StorageError::WriteBack(std::io::Error::other(
                "an earlier write-back of this upload failed",
            ))),
            _ => Ok(()),
        }
    }

    /// Appends a batch. On error nothing of the batch counts as written and the sink is left as
    /// it was before the call, so the upload can continue from [`Self::written`].
    pub async fn write(&mut self, batch: Vec<Bytes>) -> Result<()> {
        self.refuse_if_failed()?;
        let len: usize = batch.iter().map(Bytes::len).sum();
        match &mut self.sink {
            Sink::File {
                path,
                file,
                sync,
                failed,
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
                let kick = sync
                    .clone()
                    .filter(|_| end - *writeback_from >= WRITEBACK_STEP)
                    .map(|sync| (sync, *settled_to, *writeback_from));
                let step = kick.as_ref().map(|(_, _, from)| *from);
                let outcome = tokio::task::spawn_blocking(move || -> Result<()> {
                    let result = write_all_vectored_at(&file, &batch, offset);
                    if result.is_err() {
                        // Drop a partly written batch so the file ends where the upload does.
                        let _ = file.set_len(offset);
                    }
                    result?;
                    if let Some((sync, settled, from)) = kick {
                        settle(&*sync, &file, settled, from).map_err(StorageError::WriteBack)?;
                        sync.start_writeback(&file, from, end - from)
                            .map_err(StorageError::WriteBack)?;
                    }
                    Ok(())
                })
                .await
                .map_err(|e| StorageError::Io(std::io::Error::other(e)))?;
                if let Err(e) = outcome {
                    *failed = matches!(e, StorageError::WriteBack(_));
                    return Err(e);
                }
                if let Some(from) = step {
                    *settled_to = from;
                    *writeback_from = end;
                }
            }
            Sink::Multipart {
                pending,
                pending_len,
                part_size,
                state,
                ..
            } => {
                pending.extend(batch);
                *pending_len += len;
                if state.staged_len() + *pending_len as u64 >= *part_size as u64 {
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

    /// The staged pieces followed by the pending bytes: the content of the next part.
    async fn next_part_payload(&self) -> Result<PutPayload> {
        let Sink::Multipart {
            store,
            upload_id,
            state,
            pending,
            ..
        } = &self.sink
        else {
            unreachable!("only multipart sinks have parts");
        };
        // Fetched together: each GET waits tens of milliseconds for its first byte.
        let fetches = state.staged.iter().map(|&Staged { offset, len, token }| {
            let path = layout::upload_staged(upload_id, offset, token);
            async move {
                let bytes = store.get(&path).await?.bytes().await?;
                if bytes.len() as u64 != len {
                    return Err(StorageError::Corrupt {
                        path: path.to_string(),
                        reason: format!("staged piece has {} bytes, {len} recorded", bytes.len()),
                    });
                }
                Ok(bytes)
            }
        });
        let mut pieces: Vec<Bytes> = futures_util::future::try_join_all(fetches).await?;
        pieces.extend(pending.iter().cloned());
        Ok(pieces.into_iter().collect())
    }

    /// Sends the staged and pending bytes as the next part.
    async fn flush_part(&mut self) -> Result<()> {
        let Sink::Multipart {
            state,
            pending_len,
            fence,
            ..
        } = &self.sink
        else {
            unreachable!("only multipart sinks have parts");
        };
        if *pending_len == 0 && state.staged.is_empty() {
            return Ok(());
        }
        // The number first: a holder that lost the upload stops here, before it reads staged
        // pieces the new holder may already have folded into a part and removed.
        let after = state.last_part_number();
        let number = match fence {
            Some(fence) => fence.next_part(after).await?,
            None => after + 1,
        };
        let payload = self.next_part_payload().await?;
        if let Sink::Multipart {
            multipart,
            upload_id,
            state,
            pending,
            pending_len,
            garbage,
            ..
        } = &mut self.sink
        {
            let len = payload.content_length() as u64;
            let id = state.multipart_id.clone();
            let part = multipart
                .put_part(&self.location, &id, number as usize - 1, payload)
                .await?;
            state.push_part(number, part.content_id);
            state.parts_len += len;
            garbage.extend(
                state
                    .staged
                    .drain(..)
                    .map(|piece| layout::upload_staged(upload_id, piece.offset, piece.token)),
            );
            pending.clear();
            *pending_len = 0;
        }
        Ok(())
    }

    /// With a journal: a finished upload of at most `limit` bytes is left unsynced, for its
    /// commit journals its bytes.
    pub(super) fn inlining_up_to(mut self, limit: u64) -> Self {
        self.inline_up_to = limit;
        self
    }

    /// Makes the written bytes durable and complete at [`Self::location`] (a small upload on a
    /// journal only complete: see [`Self::inlining_up_to`]).
    pub async fn finish(mut self) -> Result<Path> {
        match &self.sink {
            Sink::File { path, sync, .. } => {
                self.refuse_if_failed()?;
                let (path, len) = (path.clone(), self.written);
                let sync = sync.clone().filter(|_| len > self.inline_up_to);
                tokio::task::spawn_blocking(move || -> Result<()> {
                    let file = std::fs::OpenOptions::new().write(true).open(&path)?;
                    // Bytes past the recorded end are a torn write of an interrupted request.
                    // Fewer bytes than recorded: the record outlived the data (a power loss with
                    // the data not yet synced); never pad that with zeros and publish it.
                    let on_disk = file.metadata()?.len();
                    if on_disk < len {
                        return Err(std::io::Error::new(
                            std::io::ErrorKind::UnexpectedEof,
                            format!("upload file has {on_disk} bytes, {len} were accepted"),
                        )
                        .into());
                    }
                    if on_disk != len {
                        file.set_len(len)?;
                    }
                    if let Some(sync) = sync {
                        sync.sync_all(&file).map_err(StorageError::WriteBack)?;
                    }
                    Ok(())
                })
                .await
                .map_err(|e| StorageError::Io(std::io::Error::other(e)))??;
            }
            Sink::Multipart {
                multipart,
                requests,
                store,
                state,
                ..
            } => {
                let (multipart, store) = (multipart.clone(), store.clone());
                let requests = requests.clone();
                let id = state.multipart_id.clone();
                if state.parts.is_empty() {
                    // Smaller than one part: a plain object (S3 wants at least one part).
                    let payload = self.next_part_payload().await?;
                    store.put(&self.location, payload).await?;
                    let _ = multipart.abort_multipart(&self.location, &id).await;
                } else {
                    self.flush_part().await?;
                    let Sink::Multipart { state, .. } = &self.sink else {
                        unreachable!()
                    };
                    if !state.is_positional() {
                        // Numbers with gaps (a holder lost the upload midway): named one by one.
                        let Some(requests) = requests else {
                            return Err(StorageError::Config(format!(
                                "upload {}: parts numbered with gaps cannot be completed on \
                                 this store",
                                self.location
                            )));
                        };
                        requests
                            .complete_numbered(&self.location, &id, &state.numbered())
                            .await?;
                        return Ok(self.location);
                    }
                    let parts = state
                        .parts
                        .iter()
                        .map(|c| PartId {
                            content_id: c.clone(),
                        })
                        .collect();
                    multipart
                        .complete_multipart(&self.location, &id, parts)
                        .await?;
                }
            }
        }
        Ok(self.location)
    }

    /// Releases what the upload holds on the backend (the caller removes the files).
    pub async fn abort(self) -> Result<()> {
        if let Sink::Multipart {
            multipart, state, ..
        } = self.sink
        {
            multipart
                .abort_multipart(&self.location, &state.multipart_id)
                .await?;
        }
        Ok(())
    }
}
