//! The registry's operations, composed from the OCI vocabulary, storage and uploads.
//!
//! Everything a request can ask for is a method here, independent of HTTP, so unit tests call
//! it without a server. The HTTP layer (`crate::api`) only parses requests, calls one method and
//! shapes the response.

mod blobs;
mod listing;
mod manifests;

use thiserror::Error;

use crate::cache::DescriptorCache;
use crate::oci::{Digest, OciError, RepoName};
use crate::storage::{layout, Storage, StorageError};
use crate::upload::{HashingPool, UploadError, UploadManager};

pub use blobs::BlobRead;
pub use listing::{paginate, parse_n, Page, DEFAULT_CATALOG_PAGE};
pub use manifests::{ManifestContent, PushedManifest};

#[derive(Debug, Error)]
pub enum RegistryError {
    #[error(transparent)]
    Invalid(#[from] OciError),
    #[error("blob {0} is unknown to this repository")]
    BlobUnknown(Digest),
    #[error("manifest {0} is unknown to this repository")]
    ManifestUnknown(String),
    #[error("repository {0} is not known to this registry")]
    NameUnknown(RepoName),
    #[error("the manifest references {0}, which is not in this repository")]
    ManifestBlobUnknown(Digest),
    #[error("the manifest is larger than the {0}-byte limit")]
    ManifestTooLarge(usize),
    #[error("the manifest's digest is {actual}, not {expected}")]
    ManifestDigestMismatch { expected: Digest, actual: Digest },
    #[error(
        "manifest {reference} is {media_type}, which the request's Accept header does not admit"
    )]
    NotAcceptable {
        reference: String,
        media_type: String,
    },
    #[error("deleting is disabled on this registry (storage.delete.enabled)")]
    DeleteDisabled,
    #[error("the requested range is not satisfiable: the blob has {size} bytes")]
    RangeNotSatisfiable { size: u64 },
    #[error("invalid pagination parameter: {0}")]
    InvalidPagination(String),
    #[error(transparent)]
    Upload(#[from] UploadError),
    #[error(transparent)]
    Storage(#[from] StorageError),
}

pub type Result<T, E = RegistryError> = std::result::Result<T, E>;

/// Behaviour switches from the configuration.
#[derive(Debug, Clone)]
pub struct Options {
    pub delete_enabled: bool,
    /// Answer blob downloads with a redirect to the backend where it can serve them itself
    /// (`storage.redirect.disable: false`).
    pub redirect: bool,
}

/// The registry: cheap to clone, shared by all requests.
#[derive(Clone)]
pub struct Registry {
    storage: Storage,
    uploads: UploadManager,
    options: Options,
    cache: Option<std::sync::Arc<DescriptorCache>>,
}

impl Registry {
    /// Must be called inside a running actix system (it starts the hashing threads).
    pub fn new(storage: Storage, options: Options, hashing_threads: usize) -> Self {
        let uploads = UploadManager::new(storage.clone(), HashingPool::start(hashing_threads));
        Registry {
            storage,
            uploads,
            options,
            cache: None,
        }
    }

    /// Serves blob and manifest lookups from `cache` (see [`crate::cache`]).
    pub fn with_cache(mut self, cache: DescriptorCache) -> Self {
        self.cache = Some(std::sync::Arc::new(cache));
        self
    }

    pub fn cache(&self) -> Option<&DescriptorCache> {
        self.cache.as_deref()
    }

    pub fn storage(&self) -> &Storage {
        &self.storage
    }

    pub fn uploads(&self) -> &UploadManager {
        &self.uploads
    }

    /// A repository exists once something was pushed to it.
    pub async fn repository_exists(&self, repo: &RepoName) -> Result<bool> {
        let entries = self.storage.list_dirs(&layout::repository(repo)).await?;
        Ok(entries.iter().any(|e| e == "_manifests" || e == "_layers"))
    }

    fn check_delete_enabled(&self) -> Result<()> {
        if self.options.delete_enabled {
            Ok(())
        } else {
            Err(RegistryError::DeleteDisabled)
        }
    }
}

#[cfg(test)]
pub(crate) mod test_support {
    use super::*;

    /// A registry on in-memory storage, inside the current actix system.
    pub fn registry() -> Registry {
        Registry::new(
            Storage::in_memory(),
            Options {
                delete_enabled: true,
                redirect: false,
            },
            1,
        )
    }

    pub fn repo(name: &str) -> RepoName {
        name.parse().unwrap()
    }
}
