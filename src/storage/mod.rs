//! Storage: everything berth keeps, reached through `object_store`.
//!
//! Committed content uses CNCF distribution's layout (see [`layout`]) so that a directory or bucket
//! written by `registry:2` is served as it is, and the reverse. [`Storage`] offers typed operations
//! over that layout: blobs, link files, listings. In-progress uploads live under berth's own
//! prefix; the upload module writes them through [`Storage::new_upload_writer`].

mod copy;
pub mod faults;
pub mod filesync;
mod gc_lock;
pub mod layout;
mod lock;
mod orphans;
mod s3_requests;

pub use lock::try_lock_file;
mod parts_state;
mod upload_record;
mod upload_record_io;
mod uploads;
mod writer;

use std::path::PathBuf;
use std::sync::Arc;

use bytes::Bytes;
use futures_util::stream::{BoxStream, StreamExt, TryStreamExt};
use object_store::local::LocalFileSystem;
use object_store::memory::InMemory;
use object_store::multipart::MultipartStore;
use object_store::path::Path;
use object_store::signer::Signer;
use object_store::{
    GetOptions, GetRange, GetResultPayload, ObjectMeta, ObjectStore, ObjectStoreExt, PutPayload,
};
use thiserror::Error;

use crate::config::S3Config;
use crate::oci::Digest;
pub use gc_lock::{hostname, GcLock, GcLockAttempt, GcLockHolder, GC_LEASE_RENEW, GC_LEASE_TTL};
pub use lock::{
    Coordination, Fence, RedisLocks, StoreClock, UploadGuard, LOCK_WAIT, MAX_PART_NUMBER,
};
pub use orphans::MultipartUploadInfo;
pub use parts_state::{PartsState, Staged};
pub use upload_record::{HashRecord, UploadRecord};
pub use uploads::StoredUpload;
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
    /// The backend answered, and refused the request with a client error (`400 Bad Request`
    /// for AWS's "copy source too large", a quota, a bucket policy): asking again unchanged
    /// gets the same answer, so it is not reported as the backend being unavailable.
    #[error("storage backend refused the request ({status}): {source}")]
    Refused {
        status: u16,
        source: object_store::Error,
    },
    #[error("storage I/O error: {0}")]
    Io(#[from] std::io::Error),
    #[error("corrupt content at {path}: {reason}")]
    Corrupt { path: String, reason: String },
    #[error("storage configuration: {0}")]
    Config(String),
    #[error("another request holds upload {0}")]
    Locked(String),
    /// This request's hold on an upload was lost (taken over after it stalled, or not
    /// renewable): nothing more is written under it.
    #[error("{0}")]
    Fenced(String),
    /// The service that locks uploads across instances (Redis) does not answer: writing
    /// without it could let two instances write one upload.
    #[error("upload locks unavailable: {0}")]
    Coordination(String),
    /// Syncing an upload's bytes to disk failed: some of them may never reach it, and no later
    /// sync can tell (the kernel reports such an error once). The upload cannot be continued.
    #[error("storage write-back error: {0}")]
    WriteBack(std::io::Error),
}

impl From<object_store::Error> for StorageError {
    fn from(e: object_store::Error) -> Self {
        match e {
            object_store::Error::NotFound { path, .. } => StorageError::NotFound(path),
            other => match refusal_status(&other) {
                Some(status) => StorageError::Refused {
                    status,
                    source: other,
                },
                None => StorageError::Backend(other),
            },
        }
    }
}

/// object_store's text for an HTTP error answer (its `RequestError::Status`, whose type is not
/// public: only its message can be recognised in the error's source chain).
pub(crate) const STATUS_ERROR_PREFIX: &str = "Server returned non-2xx status code: ";

/// The status of a *permanent* client error the backend answered (4xx other than 408 Request
/// Timeout and 429 Too Many Requests, which object_store itself treats as worth retrying), if
/// `e` is one. object_store turns 404, 409, 412, 401 and 403 into variants of their own; every
/// other status arrives as `Generic`, with the answer's status in its message.
fn refusal_status(e: &object_store::Error) -> Option<u16> {
    let object_store::Error::Generic { .. } = e else {
        return None;
    };
    let mut current: Option<&(dyn std::error::Error + 'static)> = Some(e);
    while let Some(error) = current {
        let text = error.to_string();
        if let Some(at) = text.find(STATUS_ERROR_PREFIX) {
            let status: u16 = text[at + STATUS_ERROR_PREFIX.len()..]
                .chars()
                .take_while(char::is_ascii_digit)
                .collect::<String>()
                .parse()
                .ok()?;
            return ((400..500).contains(&status) && status != 408 && status != 429)
                .then_some(status);
        }
        current = error.source();
    }
    None
}

impl StorageError {
    /// The variant's name, as a metrics label.
    pub fn kind(&self) -> &'static str {
        match self {
            StorageError::NotFound(_) => "not_found",
            StorageError::Backend(_) => "backend",
            StorageError::Refused { .. } => "refused",
            StorageError::Io(_) => "io",
            StorageError::Corrupt { .. } => "corrupt",
            StorageError::Config(_) => "config",
            StorageError::Locked(_) => "locked",
            StorageError::Fenced(_) => "fenced",
            StorageError::Coordination(_) => "coordination",
            StorageError::WriteBack(_) => "write_back",
        }
    }
}

pub type Result<T, E = StorageError> = std::result::Result<T, E>;

/// Which kind of backend sits under the store: some operations have a faster or only path on one.
#[derive(Clone)]
enum Backend {
    Filesystem {
        local: Arc<LocalFileSystem>,
        fsync: bool,
    },
    /// S3 or the in-memory store: uploads become multipart uploads.
    Objects {
        multipart: Arc<dyn MultipartStore>,
        /// Presigns blob downloads (S3); `None` where the store cannot.
        signer: Option<Arc<dyn Signer>>,
        /// Size of a multipart part (all but the last).
        part_size: usize,
        /// Copies large objects in parts (S3); `None` where a plain copy has no size limit.
        copier: Option<Arc<copy::BucketCopier>>,
        /// S3 requests object_store has no call for (`None` in memory).
        requests: Option<Arc<s3_requests::S3Requests>>,
        name: String,
    },
}

impl std::fmt::Debug for Backend {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Backend::Filesystem { local, fsync } => {
                write!(f, "Filesystem({local}, fsync: {fsync})")
            }
            Backend::Objects { name, .. } => write!(f, "Objects({name})"),
        }
    }
}

/// Part size for stores without S3's limits (in-memory): small, so tests cross part boundaries.
const IN_MEMORY_PART: usize = 5 * 1024 * 1024;

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
            records: Default::default(),
            coordination: Arc::new(Coordination::Files),
            file_sync: Arc::new(filesync::SystemSync),
        })
    }

    /// Volatile storage for tests and throwaway registries.
    pub fn in_memory() -> Storage {
        let mem = Arc::new(InMemory::new());
        Storage {
            store: mem.clone(),
            backend: Backend::Objects {
                multipart: mem,
                signer: None,
                part_size: IN_MEMORY_PART,
                copier: None,
                requests: None,
                name: "in-memory".into(),
            },
            direct_reads: None,
            records: Default::default(),
            coordination: Arc::new(Coordination::Leases(Default::default())),
            file_sync: Arc::new(filesync::SystemSync),
        }
    }

    /// An S3 bucket (AWS or any S3-compatible server), configured with distribution's keys.
    /// Credentials missing from `config` come from the AWS environment variables.
    pub fn s3(config: &S3Config) -> Result<Storage> {
        use object_store::aws::AmazonS3Builder;
        use object_store::prefix::PrefixStore;
        use object_store::ClientOptions;

        let mut builder = AmazonS3Builder::from_env().with_bucket_name(&config.bucket);
        let mut plain_http = false;
        if let Some(key) = &config.accesskey {
            builder = builder.with_access_key_id(key);
        }
        if let Some(secret) = &config.secretkey {
            builder = builder.with_secret_access_key(secret);
        }
        if let Some(token) = &config.sessiontoken {
            builder = builder.with_token(token);
        }
        builder = builder.with_region(config.region.as_deref().unwrap_or("us-east-1"));
        if let Some(endpoint) = &config.regionendpoint {
            let endpoint = if endpoint.contains("://") {
                endpoint.clone()
            } else {
                let scheme = if config.secure { "https" } else { "http" };
                format!("{scheme}://{endpoint}")
            };
            plain_http = endpoint.starts_with("http://");
            builder = builder.with_endpoint(endpoint);
        }
        builder = builder.with_virtual_hosted_style_request(!config.forcepathstyle);
        // (These client options replace the builder's, `allow_http` included.)
        let mut client = ClientOptions::new()
            .with_allow_http(plain_http)
            .with_allow_invalid_certificates(config.skipverify)
            // Bodies of large parts take a while on slow links; the default 30 s is too short.
            .with_timeout(std::time::Duration::from_secs(300))
            .with_connect_timeout(std::time::Duration::from_secs(10));
        if let Some(bundle) = std::env::var_os("AWS_CA_BUNDLE").filter(|b| !b.is_empty()) {
            // object_store does not read AWS_CA_BUNDLE itself; an S3 server with a private CA
            // (MinIO, Ceph) is how people use it.
            match std::fs::read(&bundle) {
                Ok(pem) => {
                    for cert in object_store::Certificate::from_pem_bundle(&pem)
                        .map_err(|e| StorageError::Config(format!("AWS_CA_BUNDLE: {e}")))?
                    {
                        client = client.with_root_certificate(cert);
                    }
                }
                Err(e) => log::warn!("AWS_CA_BUNDLE {bundle:?} cannot be read ({e}); ignored"),
            }
        }
        // object_store retries for up to 3 minutes by default: a push would hang that long on a
        // backend that is down. Fail within seconds with a spec error the client can retry on.
        let retry = object_store::RetryConfig {
            max_retries: 3,
            retry_timeout: std::time::Duration::from_secs(15),
            ..Default::default()
        };
        let builder = builder
            .with_retry(retry)
            .with_client_options(client.clone());
        let s3 = builder
            .clone()
            .build()
            .map_err(|e| StorageError::Config(e.to_string()))?;
        let root = config
            .rootdirectory
            .as_deref()
            .unwrap_or("")
            .trim_matches('/')
            .to_string();
        let name = format!(
            "s3 (bucket {}{}{})",
            config.bucket,
            if root.is_empty() { "" } else { ", root /" },
            root
        );
        let requests = Arc::new(s3_requests::S3Requests::new(
            config, &builder, &s3, &client, &root,
        )?);
        let copier = copy::BucketCopier::new(config, requests.clone());
        let store = Arc::new(PrefixStore::new(s3, root.as_str()));
        Ok(Storage {
            store: store.clone(),
            backend: Backend::Objects {
                multipart: store.clone(),
                signer: Some(store),
                part_size: config.chunksize as usize,
                copier: Some(Arc::new(copier)),
                requests: Some(requests),
                name,
            },
            direct_reads: None,
            records: Default::default(),
            // Until `coordinate` has probed the store.
            coordination: Arc::new(Coordination::Alone),
            file_sync: Arc::new(filesync::SystemSync),
        })
    }

    /// The local file system and its fsync setting, when files may be handled directly (not
    /// when faults are injected: then every operation goes through the wrapped store).
    fn local_files(&self) -> Option<(&LocalFileSystem, bool)> {
        match (&self.backend, &self.direct_reads) {
            (Backend::Filesystem { local, fsync }, Some(_)) => Some((local, *fsync)),
            _ => None,
        }
    }

    /// The same storage with faults injected where `faults` says (failure tests): in store
    /// operations, multipart calls, and the syncs of upload files.
    pub fn with_faults(mut self, faults: faults::Faults) -> Storage {
        if let Backend::Objects { multipart, .. } = &mut self.backend {
            *multipart = Arc::new(faults::FaultyStore {
                inner: self.store.clone(),
                multipart: Some(multipart.clone()),
                faults: faults.clone(),
            });
        }
        self.store = Arc::new(faults::FaultyStore {
            inner: self.store,
            multipart: None,
            faults: faults.clone(),
        });
        self.file_sync = Arc::new(faults);
        self.direct_reads = None;
        self
    }

    /// The syscalls that make upload files durable, when `fsync` is on.
    fn file_sync(&self, fsync: bool) -> Option<Arc<dyn filesync::FileSync>> {
        fsync.then(|| self.file_sync.clone())
    }

    pub fn describe(&self) -> String {
        match &self.backend {
            Backend::Filesystem { local, .. } => format!("filesystem ({local})"),
            Backend::Objects { name, .. } => name.clone(),
        }
    }

    /// The health check's probe: a HEAD of `_berth/health` (absent is fine), a real round trip
    /// to the backend that costs next to nothing.
    pub async fn check(&self) -> Result<()> {
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
            self.store.put(&path, PutPayload::from(bytes)).await?;
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
