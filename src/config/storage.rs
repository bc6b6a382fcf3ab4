//! `storage`: the driver's section (`filesystem`, `s3`, `inmemory`), `delete`, `redirect`,
//! `cache` and `maintenance` (upload purging, read-only mode).

use std::path::PathBuf;

use schemars::JsonSchema;
use serde::Deserialize;

use super::values::{duration, yes};

#[derive(Debug, Clone, Deserialize, JsonSchema)]
pub struct StorageConfig {
    #[serde(default)]
    pub filesystem: Option<FilesystemConfig>,
    #[serde(default)]
    pub s3: Option<S3Config>,
    #[serde(default, deserialize_with = "super::values::section")]
    pub delete: DeleteConfig,
    #[serde(default, deserialize_with = "super::values::section")]
    pub redirect: RedirectConfig,
    #[serde(default, deserialize_with = "super::values::section")]
    pub maintenance: MaintenanceConfig,
    #[serde(default, deserialize_with = "super::values::section")]
    pub cache: CacheConfig,
}

/// `storage.cache`: where blob descriptors (digest → size, media type; which repositories link
/// a blob) are cached.
#[derive(Debug, Clone, Deserialize, JsonSchema)]
pub struct CacheConfig {
    /// `inmemory` or `redis` (which needs the `redis` section); none when absent.
    #[serde(default)]
    pub blobdescriptor: Option<BlobDescriptorCache>,
    /// distribution's deprecated name of `blobdescriptor`, read when that is absent.
    #[serde(default)]
    pub layerinfo: Option<BlobDescriptorCache>,
    /// Entries kept by the in-memory cache.
    #[serde(default = "default_blobdescriptorsize")]
    pub blobdescriptorsize: usize,
}

fn default_blobdescriptorsize() -> usize {
    10_000
}

#[derive(Debug, Clone, Copy, Deserialize, JsonSchema, PartialEq, Eq)]
#[serde(try_from = "String")]
pub enum BlobDescriptorCache {
    Inmemory,
    Redis,
}

/// distribution's `storage.s3` keys. Credentials left out here come from the usual AWS
/// environment variables (`AWS_ACCESS_KEY_ID`, `AWS_SECRET_ACCESS_KEY`, `AWS_SESSION_TOKEN`, …).
#[derive(Clone, Deserialize, JsonSchema, Default)]
pub struct S3Config {
    #[serde(default)]
    pub accesskey: Option<String>,
    #[serde(default)]
    pub secretkey: Option<String>,
    #[serde(default)]
    pub sessiontoken: Option<String>,
    #[serde(default)]
    pub region: Option<String>,
    /// An S3-compatible endpoint (`http://127.0.0.1:9000`); AWS's own when absent.
    #[serde(default)]
    pub regionendpoint: Option<String>,
    pub bucket: String,
    /// A prefix inside the bucket under which everything is kept.
    #[serde(default)]
    pub rootdirectory: Option<String>,
    /// Address the bucket in the path (`endpoint/bucket/key`) rather than as a subdomain.
    #[serde(default)]
    pub forcepathstyle: bool,
    /// Use HTTPS for an endpoint given without a scheme.
    #[serde(default = "yes")]
    pub secure: bool,
    /// Accept any TLS certificate from the endpoint.
    #[serde(default)]
    pub skipverify: bool,
    /// Multipart part size in bytes (at least 5 MiB, S3's minimum for all parts but the last).
    #[serde(default = "default_chunksize")]
    pub chunksize: u64,
    /// Objects larger than this (bytes) are copied in parts rather than with one `CopyObject`,
    /// which AWS limits to 5 GiB (commits and garbage collection move objects by copying).
    #[serde(default = "default_multipartcopy")]
    pub multipartcopythresholdsize: u64,
    /// The size of a part of such a copy, all but the last (5 MiB to 5 GiB).
    #[serde(default = "default_multipartcopy")]
    pub multipartcopychunksize: u64,
    /// Parts of one copy copied at once.
    #[serde(default = "default_multipartcopymaxconcurrency")]
    pub multipartcopymaxconcurrency: usize,
    /// berth's own: how uploads are locked across instances sharing the bucket (`auto`: fenced
    /// leases where the store honours conditional writes, else Redis locks if there is a redis
    /// section, else none, with a warning). See docs/scaling.md.
    #[serde(default)]
    pub uploadlocking: UploadLocking,
}

/// `storage.s3.uploadlocking`.
#[derive(Debug, Clone, Copy, Default, Deserialize, JsonSchema, PartialEq, Eq)]
#[serde(try_from = "String")]
pub enum UploadLocking {
    /// Probe the store: conditional writes, else Redis, else none.
    #[default]
    Auto,
    /// Fenced lease objects; refused at start-up if the store ignores conditional writes.
    Conditional,
    /// Redis locks with fencing tokens (needs the redis section).
    Redis,
    /// No lock across instances: a single instance.
    None,
}

super::values::keywords!(UploadLocking { "auto" => Auto, "conditional" => Conditional, "redis" => Redis, "none" => None });

/// Secrets are never printed, not even in debug output.
impl std::fmt::Debug for S3Config {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("S3Config")
            .field("region", &self.region)
            .field("regionendpoint", &self.regionendpoint)
            .field("bucket", &self.bucket)
            .field("rootdirectory", &self.rootdirectory)
            .field("forcepathstyle", &self.forcepathstyle)
            .field("secure", &self.secure)
            .field("chunksize", &self.chunksize)
            .field(
                "multipartcopythresholdsize",
                &self.multipartcopythresholdsize,
            )
            .field("multipartcopychunksize", &self.multipartcopychunksize)
            .field(
                "multipartcopymaxconcurrency",
                &self.multipartcopymaxconcurrency,
            )
            .field("uploadlocking", &self.uploadlocking)
            .finish_non_exhaustive()
    }
}

impl S3Config {
    /// The multipart-copy keys within S3's limits: parts of 5 MiB to 5 GiB, one at least in
    /// flight (the threshold may be anything: 0 copies every object in parts).
    pub(super) fn check_multipart_copy(&self) -> Result<(), super::ConfigError> {
        if !(S3_MIN_PART..=S3_MAX_PART).contains(&self.multipartcopychunksize) {
            return Err(super::ConfigError::Invalid {
                key: "storage.s3.multipartcopychunksize",
                reason: format!(
                    "{} is outside S3's part sizes ({S3_MIN_PART} to {S3_MAX_PART})",
                    self.multipartcopychunksize
                ),
            });
        }
        if self.multipartcopymaxconcurrency == 0 {
            return Err(super::ConfigError::Invalid {
                key: "storage.s3.multipartcopymaxconcurrency",
                reason: "must be at least 1".into(),
            });
        }
        Ok(())
    }
}

/// S3's minimum size of a multipart part other than the last.
pub const S3_MIN_PART: u64 = 5 * 1024 * 1024;

/// S3's maximum size of a part, and of the source of one `CopyObject`.
pub const S3_MAX_PART: u64 = 5 * 1024 * 1024 * 1024;

fn default_chunksize() -> u64 {
    10 * 1024 * 1024
}

/// distribution's default multipart-copy threshold and part size, 32 MiB.
fn default_multipartcopy() -> u64 {
    32 * 1024 * 1024
}

fn default_multipartcopymaxconcurrency() -> usize {
    100
}

/// `storage.redirect`: whether blob downloads may be redirected to the backend (presigned URLs).
#[derive(Debug, Clone, Deserialize, JsonSchema)]
pub struct RedirectConfig {
    #[serde(default)]
    pub disable: bool,
}

#[derive(Debug, Clone, Deserialize, JsonSchema)]
pub struct MaintenanceConfig {
    #[serde(default, deserialize_with = "super::values::section")]
    pub uploadpurging: UploadPurgingConfig,
    #[serde(default, deserialize_with = "super::values::section")]
    pub readonly: ReadOnlyConfig,
}

/// `storage.maintenance.readonly`: refuse every write (pushes, deletes) with a clear error.
#[derive(Debug, Clone, Deserialize, JsonSchema)]
pub struct ReadOnlyConfig {
    #[serde(default)]
    pub enabled: bool,
}

/// `storage.maintenance.uploadpurging`: removal of uploads abandoned for longer than `age`.
#[derive(Debug, Clone, Deserialize, JsonSchema)]
pub struct UploadPurgingConfig {
    #[serde(default = "yes")]
    pub enabled: bool,
    #[schemars(with = "String")]
    #[serde(default = "default_purge_age", with = "duration")]
    pub age: std::time::Duration,
    #[schemars(with = "String")]
    #[serde(default = "default_purge_interval", with = "duration")]
    pub interval: std::time::Duration,
    #[serde(default)]
    pub dryrun: bool,
}

fn default_purge_age() -> std::time::Duration {
    std::time::Duration::from_secs(168 * 3600)
}

fn default_purge_interval() -> std::time::Duration {
    std::time::Duration::from_secs(24 * 3600)
}

#[derive(Debug, Clone, Deserialize, JsonSchema)]
pub struct FilesystemConfig {
    #[serde(default = "default_root")]
    pub rootdirectory: PathBuf,
    /// berth's own key: sync data and directory entries before a write is acknowledged.
    #[serde(default = "yes")]
    pub fsync: bool,
    /// berth's own key: with `fsync`, drop an upload's pages from the page cache once they are
    /// on disk (the first pull of a blob then reads from disk).
    #[serde(default)]
    pub dropcache: bool,
}

/// Relative to the directory berth starts in (the image's configuration says
/// `/var/lib/registry`).
pub(super) fn default_root() -> PathBuf {
    PathBuf::from("./data")
}

#[derive(Debug, Clone, Deserialize, JsonSchema)]
pub struct DeleteConfig {
    #[serde(default)]
    pub enabled: bool,
}

super::values::keywords!(BlobDescriptorCache { "inmemory" => Inmemory, "redis" => Redis });
