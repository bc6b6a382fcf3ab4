//! Opening the storage a configuration names: the backend, then (on S3) how uploads and
//! collections are locked across instances. Shared by `berth serve`, `berth garbage-collect` and
//! the tests, so it lives here rather than in the HTTP server.

use super::{Result, Storage, StorageError};
use crate::config::{Config, Driver};

impl Storage {
    /// Opens the configured storage backend.
    pub fn open(config: &Config) -> Result<Storage> {
        match config.driver {
            Driver::InMemory => Ok(Storage::in_memory()),
            Driver::S3 => Storage::s3(
                config
                    .storage
                    .s3
                    .as_ref()
                    .expect("config loading checks the s3 section"),
            ),
            Driver::Filesystem => {
                let fs = config
                    .storage
                    .filesystem
                    .clone()
                    .expect("config loading fills in the filesystem section");
                Ok(Storage::filesystem(fs.rootdirectory, fs.fsync)?
                    .dropping_written_pages(fs.dropcache))
            }
        }
    }

    /// Opens the configured storage as the registry and its collector use it: [`Storage::open`],
    /// then how uploads (and collections) are locked across instances is chosen
    /// (`storage.s3.uploadlocking`; the store is probed) and logged.
    pub async fn open_coordinated(config: &Config) -> Result<Storage> {
        let storage = Storage::open(config)?;
        let Some(s3) = config
            .storage
            .s3
            .as_ref()
            .filter(|_| config.driver == Driver::S3)
        else {
            return Ok(storage);
        };
        let redis = match &config.redis {
            Some(redis) => Some(crate::storage::RedisLocks::new(
                crate::redis_client::connect(redis).map_err(StorageError::Config)?,
                format!(
                    "berth:{}:{}",
                    s3.bucket,
                    s3.rootdirectory.as_deref().unwrap_or("").trim_matches('/')
                ),
                redis.readtimeout.max(redis.writetimeout) + redis.dialtimeout,
            )),
            None => None,
        };
        storage.coordinate(s3.uploadlocking, redis).await
    }
}
