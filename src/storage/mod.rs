//! Storage: everything berth keeps, reached through `object_store`.
//!
//! Committed content uses CNCF distribution's layout (see [`layout`]) so that a directory or bucket
//! written by `registry:2` is served as it is, and the reverse. [`Storage`] offers typed operations
//! over that layout: blobs, link files, listings. In-progress uploads live under berth's own
//! prefix; the upload module writes them through [`Storage::new_upload_writer`].

mod backends;
mod copy;
mod dir_cache;
mod error;
pub mod faults;
mod file_reads;
pub mod filesync;
mod gc_lock;
pub mod journal;
pub mod layout;
mod listing;
mod lock;
mod open;
mod orphans;
mod s3_requests;

pub use lock::try_lock_file;
mod parts_state;
mod upload_record;
mod upload_record_io;
mod uploads;
mod writer;

use std::sync::Arc;

use bytes::Bytes;
use futures_util::stream::{BoxStream, StreamExt, TryStreamExt};
use object_store::local::LocalFileSystem;
use object_store::path::Path;
use object_store::{
    GetOptions, GetRange, GetResultPayload, ObjectMeta, ObjectStore, ObjectStoreExt, PutPayload,
};

use crate::oci::{Digest, RepoName, Tag};
use backends::Backend;
pub(crate) use error::STATUS_ERROR_PREFIX;
pub use error::{Result, StorageError};
use file_reads::file_stream;
pub use gc_lock::{
    hostname, GcLock, GcLockAttempt, GcLockHolder, LockLoss, GC_LEASE_RENEW, GC_LEASE_TTL,
};
pub use lock::{
    Coordination, Fence, RedisLocks, StoreClock, UploadGuard, LOCK_WAIT, MAX_PART_NUMBER,
};
pub use orphans::MultipartUploadInfo;
pub use parts_state::{PartsState, Staged};
pub use upload_record::{HashRecord, UploadRecord};
pub use uploads::StoredUpload;
pub use writer::BlobWriter;

/// The registry's storage. Cheap to clone.
#[derive(Debug, Clone)]
pub struct Storage {
    store: Arc<dyn ObjectStore>,
    backend: Backend,
    /// Small files are read straight from local disk in one blocking call (object_store's
    /// `get` + `bytes` takes two hops to the blocking pool). `None` when faults are injected, so
    /// that every read goes through the wrapped store.
    direct_reads: Option<Arc<LocalFileSystem>>,
    /// On object stores: the last upload record this process wrote or read, with its ETag, so a
    /// request reads it again only if it changed (a conditional GET answered `304`).
    records: upload_record_io::RecordCache,
    /// How uploads are locked across instances (see [`lock`]).
    coordination: Arc<Coordination>,
    /// How upload files are made durable on local disk (the kernel's calls, or injected faults).
    file_sync: Arc<dyn filesync::FileSync>,
    /// On local disk with fsync: the journal that makes changes to the layout durable (see
    /// [`journal`]). `None` elsewhere, and when faults are injected.
    journal: Option<journal::Journal>,
}

/// A blob's bytes as a stream, with the total size of the blob and the range being served.
pub struct BlobStream {
    pub size: u64,
    pub stream: BoxStream<'static, Result<Bytes>>,
}

impl Storage {
    /// The local file system and its fsync setting, when files may be handled directly (not
    /// when faults are injected: then every operation goes through the wrapped store).
    fn local_files(&self) -> Option<(&LocalFileSystem, bool)> {
        match (&self.backend, &self.direct_reads) {
            (Backend::Filesystem { local, fsync }, Some(_)) => Some((local, *fsync)),
            _ => None,
        }
    }

    /// The syscalls that make upload files durable, when `fsync` is on.
    fn file_sync(&self, fsync: bool) -> Option<Arc<dyn filesync::FileSync>> {
        fsync.then(|| self.file_sync.clone())
    }

    /// The journal, when changes to `path` go through it: distribution's layout (blobs and
    /// repositories) on local disk with fsync on.
    fn journal_for(&self, path: &Path) -> Option<&journal::Journal> {
        self.journal().filter(|_| layout::is_content(path))
    }

    /// The journal, on local disk with fsync (not when faults are injected).
    fn journal(&self) -> Option<&journal::Journal> {
        self.direct_reads.as_ref()?;
        self.journal.as_ref()
    }

    /// Applies `ops` and journals them (see [`journal::Journal::apply`]).
    async fn journaled(journal: &journal::Journal, ops: Vec<journal::Op>) -> Result<()> {
        let journal = journal.clone();
        tokio::task::spawn_blocking(move || journal.apply(ops))
            .await
            .map_err(|e| StorageError::Io(std::io::Error::other(e)))?
            .map_err(StorageError::Io)
    }

    /// Writes several small files (a manifest, its links, its tags): on local disk with fsync,
    /// all in one journal entry, so they share one sync.
    pub async fn write_files(&self, files: Vec<(Path, Bytes)>) -> Result<()> {
        if let Some(journal) = files.first().and_then(|(p, _)| self.journal_for(p)) {
            if files.iter().all(|(p, _)| layout::is_content(p)) {
                let ops = files
                    .into_iter()
                    .map(|(path, bytes)| journal::Op::Write {
                        path: path.to_string(),
                        bytes: bytes.to_vec(),
                    })
                    .collect();
                return Self::journaled(journal, ops).await;
            }
        }
        for (path, bytes) in files {
            self.store.put(&path, PutPayload::from(bytes)).await?;
        }
        Ok(())
    }

    pub fn describe(&self) -> String {
        match &self.backend {
            Backend::Filesystem { local, .. } => format!("filesystem ({local})"),
            Backend::Objects { name, .. } => name.clone(),
        }
    }

    /// The health check's probe: the metadata journal still takes changes (after a failed write
    /// or sync it refuses them all until it heals or berth restarts; see `journal`), and a HEAD
    /// of `_berth/health` (absent is fine), a real round trip to the backend that costs next to
    /// nothing.
    pub async fn check(&self) -> Result<()> {
        if let Some(journal) = &self.journal {
            journal.check()?;
        }
        self.exists(&Path::from("_berth/health")).await.map(|_| ())
    }

    // ---- links -------------------------------------------------------------------------

    /// Reads a link file: the digest it holds, or `None` when there is no link.
    pub async fn read_link(&self, path: &Path) -> Result<Option<Digest>> {
        let Some(bytes) = self.read_small(path).await? else {
            return Ok(None);
        };
        let text = String::from_utf8_lossy(&bytes);
        let digest = text.trim().parse().map_err(|e| StorageError::Corrupt {
            path: path.to_string(),
            reason: format!("{e}"),
        })?;
        Ok(Some(digest))
    }

    /// Reads a small object whole; `None` if there is none.
    pub(crate) async fn read_small(&self, path: &Path) -> Result<Option<Bytes>> {
        if let Some(local) = &self.direct_reads {
            let file = local.path_to_filesystem(path)?;
            let read = tokio::task::spawn_blocking(move || std::fs::read(file))
                .await
                .map_err(|e| StorageError::Io(std::io::Error::other(e)))?;
            return match read {
                Ok(bytes) => Ok(Some(Bytes::from(bytes))),
                Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
                Err(e) => Err(e.into()),
            };
        }
        match self.store.get(path).await {
            Ok(r) => Ok(Some(r.bytes().await?)),
            Err(object_store::Error::NotFound { .. }) => Ok(None),
            Err(e) => Err(e.into()),
        }
    }

    /// Writes a link file as distribution does: the digest as plain text, no newline.
    pub async fn write_link(&self, path: &Path, digest: &Digest) -> Result<()> {
        if let Some(journal) = self.journal_for(path) {
            let op = journal::Op::Write {
                path: path.to_string(),
                bytes: digest.to_string().into_bytes(),
            };
            return Self::journaled(journal, vec![op]).await;
        }
        self.store
            .put(path, PutPayload::from(digest.to_string()))
            .await?;
        Ok(())
    }

    /// Whether an object exists.
    pub async fn exists(&self, path: &Path) -> Result<bool> {
        match self.store.head(path).await {
            Ok(_) => Ok(true),
            Err(object_store::Error::NotFound { .. }) => Ok(false),
            Err(e) => Err(e.into()),
        }
    }

    /// Deletes one object; a missing one is not an error (backends differ on this).
    pub async fn delete(&self, path: &Path) -> Result<()> {
        if let Some(journal) = self.journal_for(path) {
            let op = journal::Op::Delete {
                path: path.to_string(),
            };
            return Self::journaled(journal, vec![op]).await;
        }
        match self.store.delete(path).await {
            Ok(()) | Err(object_store::Error::NotFound { .. }) => Ok(()),
            Err(e) => Err(e.into()),
        }
    }

    /// Deletes every object below `prefix`.
    pub async fn delete_prefix(&self, prefix: &Path) -> Result<()> {
        let paths: Vec<Path> = self.list_objects(prefix).try_collect().await?;
        self.delete_all(prefix, paths).await
    }

    /// Deletes a tag: every object below its directory, its current link last. Until that
    /// last delete the tag is still listed and still resolves; a delete that fails or is cut
    /// short leaves a tag that works (and can be deleted again), never one listed that 404s.
    pub async fn delete_tag(&self, repo: &RepoName, tag: &Tag) -> Result<()> {
        let current = layout::tag_current_link(repo, tag);
        let mut paths: Vec<Path> = self
            .list_objects(&layout::tag_dir(repo, tag))
            .try_filter(|p| std::future::ready(*p != current))
            .try_collect()
            .await?;
        paths.push(current);
        self.delete_all(&layout::tag_dir(repo, tag), paths).await
    }

    /// Deletes `paths` (all below `prefix`) in order: one journal entry on local disk with
    /// fsync, else one at a time (a missing one is fine).
    async fn delete_all(&self, prefix: &Path, paths: Vec<Path>) -> Result<()> {
        if let Some(journal) = self.journal_for(prefix) {
            let ops = paths
                .into_iter()
                .map(|path| journal::Op::Delete {
                    path: path.to_string(),
                })
                .collect();
            return Self::journaled(journal, ops).await;
        }
        for path in paths {
            self.delete(&path).await?;
        }
        Ok(())
    }

    /// Every object below `prefix`.
    pub fn list_objects(&self, prefix: &Path) -> BoxStream<'static, Result<Path>> {
        self.store
            .list(Some(prefix))
            .map(|r| r.map(|m| m.location).map_err(StorageError::from))
            .boxed()
    }

    /// The names of the "directories" directly below `prefix`, sorted (on local disk one
    /// `read_dir`, see [`listing`]).
    pub async fn list_dirs(&self, prefix: &Path) -> Result<Vec<String>> {
        self.dirs_after(prefix, None, None).await
    }

    /// Every object below `prefix` with its size and modification time (garbage collection
    /// compares these with its grace period). A missing prefix lists nothing.
    pub fn list_with_meta(&self, prefix: &Path) -> BoxStream<'static, Result<ObjectMeta>> {
        self.store
            .list(Some(prefix))
            .filter_map(|r| async move {
                match r {
                    Err(object_store::Error::NotFound { .. }) => None,
                    other => Some(other.map_err(StorageError::from)),
                }
            })
            .boxed()
    }

    /// An object's size and modification time, or `None` if there is none.
    pub async fn head(&self, path: &Path) -> Result<Option<ObjectMeta>> {
        match self.store.head(path).await {
            Ok(meta) => Ok(Some(meta)),
            Err(object_store::Error::NotFound { .. }) => Ok(None),
            Err(e) => Err(e.into()),
        }
    }

    /// Moves an object (on object stores: copy, then delete).
    pub async fn rename(&self, from: &Path, to: &Path) -> Result<()> {
        // Not journaled: a replay cannot tell where a file moved twice (set aside and put back)
        // ended up, so moves stay synced as object_store makes them.
        self.store.rename(from, to).await?;
        Ok(())
    }

    /// On local disk, removes the directories holding `path` that are left empty (a blob moved
    /// away leaves `blobs/<alg>/<xx>/<hex>/`), up to `stop` (exclusive). Elsewhere nothing: object
    /// stores have no directories.
    pub async fn remove_empty_parents(&self, path: &Path, stop: &Path) -> Result<()> {
        let Some((local, _)) = self.local_files() else {
            return Ok(());
        };
        let file = local.path_to_filesystem(path)?;
        let stop = local.path_to_filesystem(stop)?;
        tokio::task::spawn_blocking(move || {
            let mut dir = file.parent();
            while let Some(d) = dir {
                // Fails (and ends the walk) on the first directory that is not empty.
                if !d.starts_with(&stop) || d == stop || std::fs::remove_dir(d).is_err() {
                    break;
                }
                dir = d.parent();
            }
        })
        .await
        .map_err(|e| StorageError::Io(std::io::Error::other(e)))
    }

    /// On local disk, removes what interrupted writes left under `dir`: object_store writes a
    /// file as `<name>#<n>` and renames it into place, so a process killed in between leaves a
    /// `#` file that listings skip and nothing else would ever remove; then the directories left
    /// empty, `dir` included. Only for a tree nobody else writes to meanwhile (the collector's
    /// folder, under its lock): a `#` file there is never a write in progress. Elsewhere nothing.
    pub async fn remove_interrupted_writes(&self, dir: &Path) -> Result<usize> {
        let Some((local, _)) = self.local_files() else {
            return Ok(0);
        };
        let dir = local.path_to_filesystem(dir)?;
        tokio::task::spawn_blocking(move || sweep_interrupted(&dir))
            .await
            .map_err(|e| StorageError::Io(std::io::Error::other(e)))?
    }

    // ---- blobs -------------------------------------------------------------------------

    /// The size of a committed blob, or `None` if there is none.
    pub async fn blob_size(&self, digest: &Digest) -> Result<Option<u64>> {
        match self.store.head(&layout::blob_data(digest)).await {
            Ok(meta) => Ok(Some(meta.size)),
            Err(object_store::Error::NotFound { .. }) => Ok(None),
            Err(e) => Err(e.into()),
        }
    }

    /// Reads a whole (small) blob: manifests.
    pub async fn read_blob(&self, digest: &Digest) -> Result<Bytes> {
        let path = layout::blob_data(digest);
        self.read_small(&path)
            .await?
            .ok_or_else(|| StorageError::NotFound(path.to_string()))
    }

    /// Stores small content (a manifest) under its digest. Content addressing makes a
    /// concurrent or repeated write of the same digest harmless.
    pub async fn write_blob(&self, digest: &Digest, bytes: Bytes) -> Result<()> {
        let path = layout::blob_data(digest);
        if !self.exists(&path).await? {
            self.write_files(vec![(path, bytes)]).await?;
        }
        Ok(())
    }

    /// A URL from which a client can download the blob straight from the backend for a while
    /// (S3's presigned GET), or `None` where the backend has no such thing.
    pub async fn presigned_blob_url(
        &self,
        digest: &Digest,
        valid_for: std::time::Duration,
    ) -> Result<Option<String>> {
        let Backend::Objects {
            signer: Some(signer),
            ..
        } = &self.backend
        else {
            return Ok(None);
        };
        let url = signer
            .signed_url(
                object_store::signer::Method::GET,
                &layout::blob_data(digest),
                valid_for,
            )
            .await?;
        Ok(Some(url.to_string()))
    }

    /// Streams `range` (end exclusive) of a blob, or the whole blob.
    pub async fn stream_blob(
        &self,
        digest: &Digest,
        range: Option<std::ops::Range<u64>>,
    ) -> Result<BlobStream> {
        self.stream_object(&layout::blob_data(digest), range).await
    }

    pub(crate) async fn stream_object(
        &self,
        path: &Path,
        range: Option<std::ops::Range<u64>>,
    ) -> Result<BlobStream> {
        let options = GetOptions::new().with_range(range.map(GetRange::Bounded));
        let result = self.store.get_opts(path, options).await?;
        let size = result.meta.size;
        let range = result.range.clone();
        let stream = match result.payload {
            GetResultPayload::File(file, _) => file_stream(file, range),
            GetResultPayload::Stream(s) => s.map_err(StorageError::from).boxed(),
        };
        Ok(BlobStream { size, stream })
    }
}

/// Removes `#` files below `dir` and the directories left empty; how many files it removed.
fn sweep_interrupted(dir: &std::path::Path) -> Result<usize> {
    let entries = match std::fs::read_dir(dir) {
        Ok(entries) => entries,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(0),
        Err(e) => return Err(StorageError::Io(e)),
    };
    let mut removed = 0;
    for entry in entries {
        let entry = entry.map_err(StorageError::Io)?;
        let path = entry.path();
        if entry.file_type().map_err(StorageError::Io)?.is_dir() {
            removed += sweep_interrupted(&path)?;
        } else if entry.file_name().to_string_lossy().contains('#') {
            std::fs::remove_file(&path).map_err(StorageError::Io)?;
            removed += 1;
        }
    }
    // Fails, harmlessly, when something real is still there.
    let _ = std::fs::remove_dir(dir);
    Ok(removed)
}
