//! Choosing how uploads are locked on an object store, once at start-up: whether the store
//! honours conditional writes is found out by trying (S3-compatible servers differ, and some
//! accept the headers and ignore them), and the choice is logged.

use std::sync::Arc;

use object_store::path::Path;
use object_store::{ObjectStore, ObjectStoreExt, PutMode, PutOptions, PutPayload, UpdateVersion};

use super::{Coordination, RedisLocks, StoreClock};
use crate::config::UploadLocking;
use crate::storage::{layout, Backend, Result, Storage, StorageError};

/// What the store did with conditional writes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ConditionalWrites {
    /// `If-None-Match: *` and `If-Match` both refuse as they should.
    Honoured,
    /// At least one was ignored (the object was overwritten).
    Ignored,
}

/// Writes a probe object twice with `If-None-Match: *`, then once with `If-Match` on a wrong
/// ETag: a store honouring both refuses the last two. The probe is removed.
pub async fn probe_conditional_writes(store: &dyn ObjectStore) -> Result<ConditionalWrites> {
    let path = probe_path();
    let create = || PutOptions {
        mode: PutMode::Create,
        ..Default::default()
    };
    let outcome = async {
        store
            .put_opts(&path, PutPayload::from_static(b"first"), create())
            .await?;
        let again = store
            .put_opts(&path, PutPayload::from_static(b"second"), create())
            .await;
        let create_refused = match again {
            Err(object_store::Error::AlreadyExists { .. }) => true,
            Ok(_) => false,
            Err(e) => return Err(StorageError::from(e)),
        };
        let wrong_etag = PutOptions {
            mode: PutMode::Update(UpdateVersion {
                e_tag: Some("\"berth-probe-no-such-etag\"".into()),
                version: None,
            }),
            ..Default::default()
        };
        let update = store
            .put_opts(&path, PutPayload::from_static(b"third"), wrong_etag)
            .await;
        let update_refused = match update {
            Err(object_store::Error::Precondition { .. }) => true,
            Ok(_) => false,
            Err(e) => return Err(StorageError::from(e)),
        };
        Ok(if create_refused && update_refused {
            ConditionalWrites::Honoured
        } else {
            ConditionalWrites::Ignored
        })
    }
    .await;
    let _ = store.delete(&path).await;
    outcome
}

fn probe_path() -> Path {
    Path::from(format!(
        "{}/probe-{}",
        layout::uploads_root(),
        uuid::Uuid::new_v4()
    ))
}

impl Storage {
    /// Chooses how uploads are locked across instances (object stores; local disk keeps file
    /// locks), probing the store, and logs the choice. `redis` is the configured Redis, if any.
    pub async fn coordinate(
        mut self,
        wanted: UploadLocking,
        redis: Option<RedisLocks>,
    ) -> Result<Storage> {
        if !matches!(self.backend, Backend::Objects { .. }) {
            return Ok(self);
        }
        let name = self.describe();
        let conditional = match wanted {
            UploadLocking::Auto | UploadLocking::Conditional => {
                probe_conditional_writes(&*self.store).await? == ConditionalWrites::Honoured
            }
            UploadLocking::Redis | UploadLocking::None => false,
        };
        let coordination = match (wanted, redis) {
            (UploadLocking::None, _) => {
                log::info!(
                    "upload locks: none (storage.s3.uploadlocking: none): only one instance may \
                     serve {name}"
                );
                Coordination::Alone
            }
            (UploadLocking::Conditional, _) if !conditional => {
                return Err(StorageError::Config(format!(
                    "storage.s3.uploadlocking is `conditional`, but {name} ignores conditional \
                     writes (a probe object was overwritten); use `redis` with a redis section"
                )));
            }
            (UploadLocking::Redis, None) => {
                return Err(StorageError::Config(
                    "storage.s3.uploadlocking is `redis`, but there is no redis section".into(),
                ));
            }
            (UploadLocking::Auto | UploadLocking::Conditional, _) if conditional => {
                let clock = Arc::new(StoreClock::default());
                clock.measure(&*self.store, &probe_path()).await?;
                log::info!("upload locks: {name} honours conditional writes: fenced lease objects");
                Coordination::Leases(clock)
            }
            (_, Some(locks)) => {
                if let Err(e) = locks.ping().await {
                    // Not fatal: uploads are refused (503) until Redis answers.
                    log::warn!("upload locks: {e}; uploads are refused until it answers");
                }
                if wanted == UploadLocking::Redis {
                    log::info!("upload locks: Redis locks with fencing tokens (storage.s3.uploadlocking: redis)");
                } else {
                    log::info!(
                        "upload locks: {name} ignores conditional writes: Redis locks with \
                         fencing tokens"
                    );
                }
                Coordination::Redis(locks)
            }
            (_, None) => {
                log::warn!(
                    "upload locks: {name} ignores conditional writes and no redis section is \
                     configured, so nothing stops two instances from writing one upload: ONLY \
                     ONE INSTANCE MAY SERVE THIS BUCKET. Configure redis (redis.addr) to run \
                     several."
                );
                Coordination::Alone
            }
        };
        self.coordination = Arc::new(coordination);
        Ok(self)
    }

    /// How uploads are locked across instances.
    pub fn coordination(&self) -> &Coordination {
        &self.coordination
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn the_in_memory_store_honours_conditional_writes() {
        let store = object_store::memory::InMemory::new();
        assert_eq!(
            probe_conditional_writes(&store).await.unwrap(),
            ConditionalWrites::Honoured
        );
        let mut left = store.list(None);
        use futures_util::StreamExt;
        assert!(left.next().await.is_none(), "the probe is removed");
    }
}
