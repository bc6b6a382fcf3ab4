//! Storage: everything berth keeps, reached through `object_store`.
//!
//! Committed content uses CNCF distribution's layout (see [`layout`]) so that a directory or bucket
//! written by `registry:2` is served as it is, and the reverse. [`Storage`] offers typed operations
//! over that layout: blobs, link files, listings. In-progress uploads live under berth's own
//! prefix; the upload module writes them through [`Storage::new_upload_writer`].

pub mod faults;
pub mod layout;
mod writer;

use std::path::PathBuf;
use std::sync::Arc;

use bytes::Bytes;
use futures_util::stream::{BoxStream, StreamExt, TryStreamExt};
use object_store::local::LocalFileSystem;
use object_store::memory::InMemory;
use object_store::path::Path;
use object_store::{
    GetOptions, GetRange, GetResultPayload, ObjectStore, ObjectStoreExt, PutPayload,
};
use thiserror::Error;

use crate::oci::Digest;
pub use writer::BlobWriter;

/// Reads of blob content from local files use buffers this large: few syscalls, and large
/// writes to the socket (object_store's own file stream reads 8 KiB at a time).
const FILE_READ_CHUNK: usize = 1024 * 1024;

#[derive(Debug, Error)]
pub enum StorageError {
    #[error("not found: {0}")]
    NotFound(String),
    #[error("storage backend error: {0}")]
    Backend(object_store::Error),
    #[error("storage I/O error: {0}")]
    Io(#[from] std::io::Error),
    #[error("corrupt content at {path}: {reason}")]
    Corrupt { path: String, reason: String },
}

impl From<object_store::Error> for StorageError {
    fn from(e: object_store::Error) -> Self {
        match e {
            object_store::Error::NotFound { path, .. } => StorageError::NotFound(path),
            other => StorageError::Backend(other),
        }
    }
}

pub type Result<T, E = StorageError> = std::result::Result<T, E>;

/// Which kind of backend sits under the store: some operations have a faster or only path on one.
#[derive(Debug, Clone)]
enum Backend {
    Filesystem {
        local: Arc<LocalFileSystem>,
        fsync: bool,
    },
    InMemory(Arc<InMemory>),
}

/// The registry's storage. Cheap to clone.
#[derive(Debug, Clone)]
pub struct Storage {
    store: Arc<dyn ObjectStore>,
    backend: Backend,
    /// Small files are read straight from local disk in one blocking call (object_store's
    /// `get` + `bytes` takes two hops to the blocking pool). `None` when faults are injected, so
    /// that every read goes through the wrapped store.
    direct_reads: Option<Arc<LocalFileSystem>>,
}

/// A blob's bytes as a stream, with the total size of the blob and the range being served.
pub struct BlobStream {
    pub size: u64,
    pub stream: BoxStream<'static, Result<Bytes>>,
}

impl Storage {
    /// Local-disk storage rooted at `root` (created if missing). `fsync` makes every commit
    /// durable before it is acknowledged.
    pub fn filesystem(root: impl Into<PathBuf>, fsync: bool) -> Result<Storage> {
        let root = root.into();
        std::fs::create_dir_all(&root)?;
        let local = Arc::new(
            LocalFileSystem::new_with_prefix(&root)?
                .with_fsync(fsync)
                // Empty directories would otherwise linger as deleted tags and repositories.
                .with_automatic_cleanup(true),
        );
        Ok(Storage {
            store: local.clone(),
            direct_reads: Some(local.clone()),
            backend: Backend::Filesystem { local, fsync },
        })
    }

    /// Volatile storage for tests and throwaway registries.
    pub fn in_memory() -> Storage {
        let mem = Arc::new(InMemory::new());
        Storage {
            store: mem.clone(),
            backend: Backend::InMemory(mem),
            direct_reads: None,
        }
    }

    /// The same storage with faults injected where `faults` says (failure tests).
    pub fn with_faults(mut self, faults: faults::Faults) -> Storage {
        self.store = Arc::new(faults::FaultyStore {
            inner: self.store,
            faults,
        });
        self.direct_reads = None;
        self
    }

    pub fn describe(&self) -> String {
        match &self.backend {
            Backend::Filesystem { local, .. } => format!("filesystem ({local})"),
            Backend::InMemory(_) => "in-memory".to_string(),
        }
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
    async fn read_small(&self, path: &Path) -> Result<Option<Bytes>> {
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
        match self.store.delete(path).await {
            Ok(()) | Err(object_store::Error::NotFound { .. }) => Ok(()),
            Err(e) => Err(e.into()),
        }
    }

    /// Deletes every object below `prefix`.
    pub async fn delete_prefix(&self, prefix: &Path) -> Result<()> {
        let mut objects = self.store.list(Some(prefix));
        while let Some(meta) = objects.next().await {
            self.delete(&meta?.location).await?;
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

    /// The names of the "directories" directly below `prefix`, sorted.
    pub async fn list_dirs(&self, prefix: &Path) -> Result<Vec<String>> {
        let listing = match self.store.list_with_delimiter(Some(prefix)).await {
            Ok(l) => l,
            Err(object_store::Error::NotFound { .. }) => return Ok(Vec::new()),
            Err(e) => return Err(e.into()),
        };
        let mut names: Vec<String> = listing
            .common_prefixes
            .iter()
            .filter_map(|p| p.filename().map(str::to_string))
            .collect();
        names.sort();
        Ok(names)
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
            self.store.put(&path, PutPayload::from(bytes)).await?;
        }
        Ok(())
    }

    /// Streams `range` (end exclusive) of a blob, or the whole blob.
    pub async fn stream_blob(
        &self,
        digest: &Digest,
        range: Option<std::ops::Range<u64>>,
    ) -> Result<BlobStream> {
        self.stream_object(&layout::blob_data(digest), range).await
    }

    async fn stream_object(
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

    // ---- uploads -----------------------------------------------------------------------

    /// Starts the bytes of a new upload.
    pub async fn new_upload_writer(&self, upload_id: &str) -> Result<BlobWriter> {
        let location = layout::upload_data(upload_id);
        match &self.backend {
            Backend::Filesystem { local, fsync } => {
                let path = local.path_to_filesystem(&location)?;
                BlobWriter::create_file(location, path, *fsync).await
            }
            Backend::InMemory(mem) => BlobWriter::create_multipart(mem.clone(), location).await,
        }
    }

    /// Streams the data of a finished upload (at `location`) to re-hash it under another algorithm.
    pub async fn stream_upload(&self, location: &Path) -> Result<BlobStream> {
        self.stream_object(location, None).await
    }

    /// Makes the finished upload at `location` visible as the blob `digest`. The blob appears
    /// whole or not at all: a rename on the filesystem, a copy on object stores.
    pub async fn commit_upload(&self, location: &Path, digest: &Digest) -> Result<()> {
        let target = layout::blob_data(digest);
        if self.exists(&target).await? {
            self.delete(location).await?;
        } else {
            self.store.rename(location, &target).await?;
        }
        self.remove_upload_dir(&layout::upload_dir_of(location))
            .await
    }

    /// Removes an upload's bytes and state.
    pub async fn discard_upload(&self, upload_id: &str) -> Result<()> {
        self.remove_upload_dir(&layout::upload_dir(upload_id)).await
    }

    async fn remove_upload_dir(&self, dir: &Path) -> Result<()> {
        self.delete_prefix(dir).await?;
        if let Backend::Filesystem { local, .. } = &self.backend {
            // A directory whose data was renamed away has no file left for object_store's
            // cleanup to start from.
            let path = local.path_to_filesystem(dir)?;
            match tokio::fs::remove_dir(&path).await {
                Ok(()) => {}
                Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
                Err(e) => return Err(e.into()),
            }
        }
        Ok(())
    }
}

/// How far ahead of a blob reader the kernel is asked to read.
const READ_AHEAD: u64 = 8 * 1024 * 1024;

/// Asks the kernel to start reading `len` bytes from `from` into the page cache.
fn read_ahead(file: &std::fs::File, from: u64, len: u64) {
    use std::os::fd::AsRawFd;
    // SAFETY: a plain syscall on a descriptor owned by `file`; failure only loses the hint.
    unsafe {
        libc::posix_fadvise(
            file.as_raw_fd(),
            from as libc::off_t,
            len as libc::off_t,
            libc::POSIX_FADV_WILLNEED,
        );
    }
}

/// A stream over `range` of a local file, read in large pieces on the blocking pool.
fn file_stream(
    file: std::fs::File,
    range: std::ops::Range<u64>,
) -> BoxStream<'static, Result<Bytes>> {
    use std::os::unix::fs::FileExt;
    let file = Arc::new(file);
    futures_util::stream::try_unfold(range.start, move |pos| {
        let file = file.clone();
        let end = range.end;
        async move {
            if pos >= end {
                return Ok(None);
            }
            let want = (end - pos).min(FILE_READ_CHUNK as u64) as usize;
            let buf = tokio::task::spawn_blocking(move || -> std::io::Result<Vec<u8>> {
                // Keep the disk busy ahead of the reader: uploads are dropped from the page cache
                // once written, so a first pull reads from disk.
                let ahead = pos + want as u64;
                if ahead < end {
                    read_ahead(&file, ahead, (end - ahead).min(READ_AHEAD));
                }
                let mut buf = vec![0u8; want];
                let mut filled = 0;
                while filled < want {
                    let n = file.read_at(&mut buf[filled..], pos + filled as u64)?;
                    if n == 0 {
                        return Err(std::io::Error::new(
                            std::io::ErrorKind::UnexpectedEof,
                            "blob shorter than its recorded size",
                        ));
                    }
                    filled += n;
                }
                Ok(buf)
            })
            .await
            .map_err(|e| StorageError::Io(std::io::Error::other(e)))??;
            Ok(Some((Bytes::from(buf), pos + want as u64)))
        }
    })
    .boxed()
}
