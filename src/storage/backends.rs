//! Which backends [`Storage`] runs on, and how it is built over each: local disk, in memory, S3
//! configured with distribution's keys (credentials, endpoint, CA bundle, retries), and the
//! fault-injecting wrapper of the failure tests. Apart from the operations because building a
//! store is set-up, done once at start; the operations only match on [`Backend`].

use std::path::PathBuf;
use std::sync::Arc;

use object_store::local::LocalFileSystem;
use object_store::memory::InMemory;
use object_store::multipart::MultipartStore;
use object_store::signer::Signer;

use super::{
    copy, faults, filesync, journal, s3_requests, Coordination, Result, Storage, StorageError,
};
use crate::config::S3Config;

/// Which kind of backend sits under the store: some operations have a faster or only path on one.
#[derive(Clone)]
pub(super) enum Backend {
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

impl Storage {
    /// Local-disk storage rooted at `root` (created if missing). `fsync` makes every commit
    /// durable before it is acknowledged.
    pub fn filesystem(root: impl Into<PathBuf>, fsync: bool) -> Result<Storage> {
        let root = root.into();
        let boot_id = journal::boot_id();
        if let (true, Some(boot_id)) = (fsync, &boot_id) {
            let sync = Arc::new(filesync::SystemSync::default());
            return Storage::journaled_filesystem(root, sync, boot_id.clone());
        }
        if fsync {
            log::warn!(
                "the machine's boot id is unreadable (/proc/sys/kernel/random/boot_id): no \
                 metadata journal, every change to the layout is synced file by file"
            );
        }
        let storage = Storage::plain_filesystem(root.clone(), fsync)?;
        // Written with the journal before, maybe left by a power loss: replayed all the same.
        let root = std::fs::canonicalize(root)?;
        match journal::Journal::recover(&root, &filesync::SystemSync::default(), boot_id.as_deref())
        {
            Err(e) if e.kind() != std::io::ErrorKind::ReadOnlyFilesystem => return Err(e.into()),
            _ => {}
        }
        Ok(storage)
    }

    /// Local-disk storage with fsync whose layout changes go through the journal (see
    /// [`journal`]), its syncs made by `sync`, on a machine booted as `boot_id`: what
    /// [`Storage::filesystem`] opens, with the syscalls and the boot injectable for tests.
    pub fn journaled_filesystem(
        root: impl Into<PathBuf>,
        sync: Arc<dyn filesync::FileSync>,
        boot_id: String,
    ) -> Result<Storage> {
        let root = root.into();
        let mut storage = Storage::plain_filesystem(root.clone(), true)?;
        storage.file_sync = sync.clone();
        // As object_store resolves it: journal paths are relative to the same directory.
        let root = std::fs::canonicalize(root)?;
        match journal::Journal::open(&root, sync, boot_id) {
            Ok(journal) => storage.journal = Some(journal),
            // Storage mounted read-only can still be served (storage.maintenance.readonly);
            // nothing will be written, so nothing needs journaling.
            Err(e) if e.kind() == std::io::ErrorKind::ReadOnlyFilesystem => {
                log::warn!("{}: read-only, no metadata journal: {e}", root.display())
            }
            Err(e) => return Err(e.into()),
        }
        Ok(storage)
    }

    fn plain_filesystem(root: PathBuf, fsync: bool) -> Result<Storage> {
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
            file_sync: Arc::new(filesync::SystemSync::default()),
            journal: None,
        })
    }

    /// With `drop`, pages of upload files leave the page cache once written back
    /// (`storage.filesystem.dropcache`; see [`filesync::settle`]).
    pub fn dropping_written_pages(mut self, drop: bool) -> Storage {
        self.file_sync = Arc::new(filesync::SystemSync { drop_written: drop });
        self
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
            file_sync: Arc::new(filesync::SystemSync::default()),
            journal: None,
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
            file_sync: Arc::new(filesync::SystemSync::default()),
            journal: None,
        })
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
        self.journal = None;
        self
    }
}
