//! Who may write an upload now, across every process sharing the storage.
//!
//! Within one process the upload's session actor already serialises requests; this lock is what
//! keeps two *instances* (behind a load balancer, or a restarted process) from writing one upload
//! at once, and what makes a writer that lost it (stalled past its lease, cut off) harmless. How
//! depends on the store, chosen once when storage is opened ([`Coordination`]):
//!
//! - **Local disk**: an open-file-description lock on the upload's data file ([`file`]).
//! - **An object store honouring conditional writes** (AWS S3, s3s-fs, in memory): a fenced
//!   lease object, every change of it conditional ([`lease`]).
//! - **An object store ignoring them** (Garage, Ceph, older MinIO) with Redis configured: a
//!   Redis lock with a fencing token, and the upload's writes under names carrying the token
//!   ([`redis`]).
//! - **Neither**: nothing across instances; the start-up log says that only one instance may
//!   serve the bucket. Even then a blob never becomes visible unless its digest matches.
//!
//! A holder hands its writer a [`Fence`]: part numbers come from it (never one another holder
//! used), staged pieces are named with its token, and it fails once the hold is lost.

mod file;
pub mod lease;
mod probe;
pub mod redis;

use std::sync::atomic::{AtomicU32, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

pub use file::try_lock_file;
use file::unlock_file;
pub use lease::StoreClock;
#[cfg(test)]
use lease::LEASE_TTL;
use redis::MAX_TOKEN;
pub use redis::{RedisLocks, MAX_PART_NUMBER};

use super::{layout, Backend, Result, Storage, StorageError, UploadRecord};

/// How long a request waits for another one holding the upload before giving up.
pub const LOCK_WAIT: Duration = Duration::from_secs(3);

/// This process's name in leases and locks.
fn owner() -> &'static str {
    static OWNER: std::sync::OnceLock<String> = std::sync::OnceLock::new();
    OWNER.get_or_init(|| uuid::Uuid::new_v4().to_string())
}

/// How uploads are locked across instances on this storage (see the module's documentation).
#[derive(Debug, Clone)]
pub enum Coordination {
    /// Local disk: file locks.
    Files,
    /// Conditional writes: fenced lease objects, expiry on the store's clock.
    Leases(Arc<StoreClock>),
    /// Redis locks with fencing tokens.
    Redis(RedisLocks),
    /// No lock across instances: one instance only.
    Alone,
}

impl Coordination {
    /// How it is described in the start-up log.
    pub fn describe(&self) -> &'static str {
        match self {
            Coordination::Files => "file locks",
            Coordination::Leases(_) => "conditional writes (fenced lease objects)",
            Coordination::Redis(_) => "Redis locks with fencing tokens",
            Coordination::Alone => "none (one instance only)",
        }
    }
}

/// What a lock holder gives the upload's writer: what keeps its writes apart from those of any
/// other holder, past or future.
#[async_trait::async_trait]
pub trait Fence: Send + Sync {
    /// The holder's token: staged pieces carry it in their names.
    fn token(&self) -> u64;
    /// A part number above `after` that no other holder of the upload was or will be given.
    async fn next_part(&self, after: u32) -> Result<u32>;
    /// Fails if the hold is lost (checked before the upload is completed).
    async fn check(&self) -> Result<()>;
}

/// The right to write one upload; give it back with [`UploadGuard::release`].
pub struct UploadGuard {
    held: Held,
    /// The record as read or last written under this hold: its ETag (the condition of the next
    /// write on a store with conditional writes) and the highest part number it names.
    record_etag: Mutex<Option<String>>,
    recorded_parts: AtomicU32,
    /// The fencing token of that record (Redis-locked stores), replaced when this holder writes.
    record_token: AtomicU64,
}

/// A guard dropped without [`UploadGuard::release`] (a panic, an early return) still stops
/// renewing its lease, which then expires, and unlocks its file.
impl Drop for UploadGuard {
    fn drop(&mut self) {
        match &self.held {
            Held::File(file) => unlock_file(file),
            Held::Lease { renewal, .. } | Held::Redis { renewal, .. } => renewal.abort(),
            Held::Nothing => {}
        }
    }
}

enum Held {
    /// Shared with the upload's writer; unlocked explicitly on release.
    File(Arc<std::fs::File>),
    Lease {
        hold: Arc<lease::LeaseHold>,
        renewal: tokio::task::JoinHandle<()>,
    },
    Redis {
        hold: Arc<redis::RedisHold>,
        renewal: tokio::task::JoinHandle<()>,
    },
    /// Nothing to hold: one instance only, or faults injected (tests), where the store is not
    /// the local file system the file lock needs.
    Nothing,
}

impl UploadGuard {
    fn new(held: Held) -> Self {
        UploadGuard {
            held,
            record_etag: Mutex::new(None),
            recorded_parts: AtomicU32::new(0),
            record_token: AtomicU64::new(0),
        }
    }

    /// The locked data file (local disk), for the writer to use rather than open it again.
    pub fn file(&self) -> Option<Arc<std::fs::File>> {
        match &self.held {
            Held::File(f) => Some(f.clone()),
            _ => None,
        }
    }

    /// What the upload's writer writes under while this guard is held (`None`: nothing to fence).
    pub fn fence(&self) -> Option<Arc<dyn Fence>> {
        match &self.held {
            Held::Lease { hold, .. } => Some(hold.clone()),
            Held::Redis { hold, .. } => Some(hold.clone()),
            Held::File(_) | Held::Nothing => None,
        }
    }

    /// The token of this hold (0 when there is none).
    pub(super) fn token(&self) -> u64 {
        self.fence().map_or(0, |f| f.token())
    }

    /// Remembers the record read or written under this hold.
    pub(super) fn note_record(&self, etag: Option<String>, record: &UploadRecord, token: u64) {
        *self.record_etag.lock().unwrap() = etag;
        let parts = record.parts.as_ref().map_or(0, |p| p.last_part_number());
        self.recorded_parts.store(parts, Ordering::Relaxed);
        self.record_token.store(token, Ordering::Relaxed);
    }

    pub(super) fn record_token(&self) -> u64 {
        self.record_token.load(Ordering::Relaxed)
    }

    pub(super) fn record_etag(&self) -> Option<String> {
        self.record_etag.lock().unwrap().clone()
    }

    /// Fails if the hold is lost.
    pub async fn check(&self) -> Result<()> {
        match self.fence() {
            Some(fence) => fence.check().await,
            None => Ok(()),
        }
    }

    /// Lets go of a lease created for an upload that turned out not to exist, removing it.
    async fn remove_lease(mut self) {
        match std::mem::replace(&mut self.held, Held::Nothing) {
            Held::Lease { hold, renewal } => {
                renewal.abort();
                let _ = renewal.await;
                hold.remove().await;
            }
            other => {
                self.held = other;
                self.release().await;
            }
        }
    }

    /// Lets other requests and instances write the upload.
    pub async fn release(mut self) {
        let recorded = self.recorded_parts.load(Ordering::Relaxed);
        match std::mem::replace(&mut self.held, Held::Nothing) {
            Held::File(file) => unlock_file(&file),
            Held::Lease { hold, renewal } => {
                renewal.abort();
                let _ = renewal.await;
                hold.release(recorded).await;
            }
            Held::Redis { hold, renewal } => {
                renewal.abort();
                let _ = renewal.await;
                hold.release(recorded).await;
            }
            Held::Nothing => {}
        }
    }
}

impl Storage {
    /// Takes the upload's lock, waiting a little for a holder to finish, and reads its record
    /// under it. `Ok(None)` if the upload does not exist (any more); [`StorageError::Locked`] if
    /// it stays held.
    pub async fn lock_upload(
        &self,
        upload_id: &str,
    ) -> Result<Option<(UploadGuard, UploadRecord)>> {
        if let Some((local, _)) = self.local_files() {
            return self.lock_local_upload(local, upload_id).await;
        }
        let Some(guard) = self.take_upload_lock(upload_id).await? else {
            return Ok(None);
        };
        let loaded = match self.load_upload_entry(upload_id).await {
            Ok(Some(entry)) => entry,
            Ok(None) => {
                // No such upload: the lease just created must not stay behind.
                guard.remove_lease().await;
                return Ok(None);
            }
            Err(e) => {
                guard.release().await;
                return Err(e);
            }
        };
        if let Held::Redis { .. } = &guard.held {
            if loaded.token > MAX_TOKEN {
                // Not berth's (a stray or forged object): holders above it could not be told
                // apart, and taking it as the floor would break Redis's count.
                guard.release().await;
                return Err(StorageError::Corrupt {
                    path: layout::upload_record_fenced(upload_id, loaded.token).to_string(),
                    reason: format!(
                        "its fencing token is above {MAX_TOKEN}, which berth never hands out; \
                         remove it (the upload's record is the next highest state.<token>)"
                    ),
                });
            }
            if loaded.token >= guard.token() {
                // Redis lost its counters (restarted empty): tokens must stay above every one
                // written, or readers would prefer a stale record. Take it again above it.
                log::warn!(
                    "upload {upload_id}: Redis handed out token {} though records carry {}; \
                     taking a higher one",
                    guard.token(),
                    loaded.token
                );
                guard.release().await;
                let Some(guard) = self.take_upload_lock_above(upload_id, loaded.token).await?
                else {
                    return Ok(None);
                };
                guard.note_record(loaded.etag, &loaded.record, loaded.token);
                return Ok(Some((guard, loaded.record)));
            }
        }
        guard.note_record(loaded.etag, &loaded.record, loaded.token);
        Ok(Some((guard, loaded.record)))
    }

    /// Local disk: opens and locks the data file and reads the record (a few KiB). These are
    /// done on the calling thread: measured on 1 MiB chunks, two trips to the blocking pool per
    /// request cost ~15 % of the throughput, the syscalls themselves a few microseconds (on a
    /// network filesystem they would cost more: see ARCHITECTURE.md). The open file is then
    /// the writer's too.
    async fn lock_local_upload(
        &self,
        local: &object_store::local::LocalFileSystem,
        upload_id: &str,
    ) -> Result<Option<(UploadGuard, UploadRecord)>> {
        let data = local.path_to_filesystem(&layout::upload_data(upload_id))?;
        let record_path = layout::upload_record(upload_id);
        let file = match std::fs::OpenOptions::new().write(true).open(&data) {
            Ok(f) => Arc::new(f),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
            Err(e) => return Err(e.into()),
        };
        let deadline = tokio::time::Instant::now() + LOCK_WAIT;
        while !try_lock_file(&file)? {
            if tokio::time::Instant::now() >= deadline {
                return Err(StorageError::Locked(upload_id.to_string()));
            }
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        let guard = UploadGuard::new(Held::File(file));
        let read = std::fs::read(local.path_to_filesystem(&record_path)?);
        let outcome = match read {
            Ok(bytes) => super::upload_record::decode_record_slots(&bytes)
                .map(Some)
                .map_err(|reason| StorageError::Corrupt {
                    path: record_path.to_string(),
                    reason,
                }),
            // Finished or cancelled while this request waited.
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
            Err(e) => Err(e.into()),
        };
        match outcome {
            Ok(Some(record)) => Ok(Some((guard, record))),
            other => {
                guard.release().await;
                other.map(|_| None)
            }
        }
    }

    async fn take_upload_lock(&self, upload_id: &str) -> Result<Option<UploadGuard>> {
        self.take_upload_lock_above(upload_id, 0).await
    }

    /// Takes the lock, waiting up to [`LOCK_WAIT`]; a Redis token is above `floor`. `None`
    /// when the upload is gone meanwhile.
    async fn take_upload_lock_above(
        &self,
        upload_id: &str,
        floor: u64,
    ) -> Result<Option<UploadGuard>> {
        let deadline = tokio::time::Instant::now() + LOCK_WAIT;
        loop {
            let taken = match (&self.backend, &*self.coordination) {
                // Faults injected (the store is not the local file system the lock needs).
                (Backend::Filesystem { .. }, _)
                | (_, Coordination::Alone | Coordination::Files) => Some(Held::Nothing),
                (_, Coordination::Leases(clock)) => {
                    let path = layout::upload_lease(upload_id);
                    match lease::try_take(&self.store, clock, &path).await? {
                        lease::Attempt::Taken(hold) => Some(Held::Lease {
                            renewal: tokio::spawn(hold.clone().renew_while_held()),
                            hold,
                        }),
                        lease::Attempt::Held => None,
                    }
                }
                (_, Coordination::Redis(locks)) => {
                    locks
                        .try_take(upload_id, floor)
                        .await?
                        .map(|hold| Held::Redis {
                            renewal: tokio::spawn(hold.clone().renew_while_held()),
                            hold,
                        })
                }
            };
            if let Some(held) = taken {
                return Ok(Some(UploadGuard::new(held)));
            }
            if self.load_upload(upload_id).await?.is_none() {
                return Ok(None);
            }
            if tokio::time::Instant::now() >= deadline {
                return Err(StorageError::Locked(upload_id.to_string()));
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }
}

#[cfg(test)]
mod tests;
