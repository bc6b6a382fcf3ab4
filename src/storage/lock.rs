//! Who may write an upload now, across every process sharing the storage.
//!
//! Within one process the upload's session actor already serialises requests; this lock is what
//! keeps two *instances* (behind a load balancer, or a restarted process) from writing one upload
//! at once.
//!
//! - **Local disk**: an open-file-description lock (`F_OFD_SETLK`) on the upload's data file.
//!   The kernel drops it when the holder closes the file or dies, so a `kill -9` never leaves an
//!   upload locked; it works across processes on one host (and over NFSv4 byte-range locks).
//! - **Object stores**: a `lease` object created only if absent (`PutMode::Create`, S3's
//!   `If-None-Match: *`), holding its owner and expiry. The holder renews it while a request
//!   runs; a lease whose holder died expires after [`LEASE_TTL`] and is then broken. A store that
//!   ignores conditional writes (Garage) cannot give this guarantee: there, route each upload to
//!   one instance. Even then, a blob never becomes visible unless its digest matches.

use std::sync::Arc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use object_store::path::Path;
use object_store::{ObjectStore, ObjectStoreExt, PutMode, PutOptions, PutPayload};
use serde::{Deserialize, Serialize};

use super::{layout, Backend, Result, Storage, StorageError, UploadRecord};

/// How long a request waits for another one holding the upload before giving up.
pub const LOCK_WAIT: Duration = Duration::from_secs(3);
/// How long an object-store lease lives without renewal.
pub const LEASE_TTL: Duration = Duration::from_secs(15);
/// How often a held lease is renewed.
const LEASE_RENEW: Duration = Duration::from_secs(5);

/// This process's name in leases.
fn owner() -> &'static str {
    static OWNER: std::sync::OnceLock<String> = std::sync::OnceLock::new();
    OWNER.get_or_init(|| uuid::Uuid::new_v4().to_string())
}

#[derive(Serialize, Deserialize)]
struct Lease {
    owner: String,
    /// Milliseconds since the Unix epoch.
    expires: u64,
}

fn now_ms() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap_or_default()
        .as_millis() as u64
}

/// The right to write one upload; give it back with [`UploadGuard::release`].
pub struct UploadGuard {
    held: Held,
}

/// A guard dropped without [`UploadGuard::release`] (a panic, an early return) still stops
/// renewing its lease, which then expires, and unlocks its file.
impl Drop for UploadGuard {
    fn drop(&mut self) {
        match &self.held {
            Held::File(file) => unlock_file(file),
            Held::Lease { renewal, .. } => renewal.abort(),
            Held::Nothing => {}
        }
    }
}

enum Held {
    /// Shared with the upload's writer; unlocked explicitly on release.
    File(Arc<std::fs::File>),
    Lease {
        store: Arc<dyn ObjectStore>,
        path: Path,
        renewal: tokio::task::JoinHandle<()>,
    },
    /// Faults are injected (tests): the store is not the local file system the lock needs.
    Nothing,
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
        match self.load_upload(upload_id).await {
            Ok(Some(record)) => Ok(Some((guard, record))),
            Ok(None) => {
                guard.release().await;
                Ok(None)
            }
            Err(e) => {
                guard.release().await;
                Err(e)
            }
        }
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
        let guard = UploadGuard {
            held: Held::File(file),
        };
        let read = std::fs::read(local.path_to_filesystem(&record_path)?);
        let outcome = match read {
            Ok(bytes) => super::uploads::decode_record_slots(&bytes)
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
        let deadline = tokio::time::Instant::now() + LOCK_WAIT;
        match &self.backend {
            // Faults injected (the store is not the local file system the lock needs).
            Backend::Filesystem { .. } => Ok(Some(UploadGuard {
                held: Held::Nothing,
            })),
            Backend::Objects { .. } => {
                let path = layout::upload_lease(upload_id);
                loop {
                    if self.try_lease(&path).await? {
                        let renewal = tokio::spawn(renew(self.store.clone(), path.clone()));
                        return Ok(Some(UploadGuard {
                            held: Held::Lease {
                                store: self.store.clone(),
                                path,
                                renewal,
                            },
                        }));
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
    }

    /// Creates the lease if there is none, or breaks an expired one. Whether it is ours now.
    async fn try_lease(&self, path: &Path) -> Result<bool> {
        let created = self
            .store
            .put_opts(
                path,
                lease_payload(),
                PutOptions {
                    mode: PutMode::Create,
                    ..Default::default()
                },
            )
            .await;
        match created {
            Ok(_) => return Ok(true),
            Err(object_store::Error::AlreadyExists { .. }) => {}
            Err(e) => return Err(e.into()),
        }
        let Some(current) = self.read_small(path).await? else {
            return Ok(false); // released meanwhile: the next round creates it
        };
        let expired = serde_json::from_slice::<Lease>(&current)
            .map(|l| l.expires < now_ms())
            .unwrap_or(true);
        if expired {
            log::info!("breaking the expired lease {path}");
            self.delete(path).await?;
        }
        Ok(false)
    }
}

fn lease_payload() -> PutPayload {
    let lease = Lease {
        owner: owner().to_string(),
        expires: now_ms() + LEASE_TTL.as_millis() as u64,
    };
    PutPayload::from(serde_json::to_vec(&lease).expect("a lease serializes"))
}

async fn renew(store: Arc<dyn ObjectStore>, path: Path) {
    loop {
        tokio::time::sleep(LEASE_RENEW).await;
        if let Err(e) = store.put(&path, lease_payload()).await {
            log::warn!("cannot renew the upload lease {path}: {e}");
        }
    }
}

impl UploadGuard {
    /// The locked data file (local disk), for the writer to use rather than open it again.
    pub fn file(&self) -> Option<Arc<std::fs::File>> {
        match &self.held {
            Held::File(f) => Some(f.clone()),
            _ => None,
        }
    }

    /// Lets other requests and instances write the upload.
    pub async fn release(mut self) {
        match std::mem::replace(&mut self.held, Held::Nothing) {
            Held::File(file) => unlock_file(&file),
            Held::Lease {
                store,
                path,
                renewal,
            } => {
                renewal.abort();
                let _ = renewal.await;
                match store.delete(&path).await {
                    Ok(()) | Err(object_store::Error::NotFound { .. }) => {}
                    Err(e) => log::warn!("cannot remove the upload lease {path}: {e}"),
                }
            }
            Held::Nothing => {}
        }
    }
}

/// Tries to take an exclusive open-file-description lock on the whole file: `false` when another
/// open file description holds it. (Also guards the notification spool files.)
pub fn try_lock_file(file: &std::fs::File) -> std::io::Result<bool> {
    use std::os::fd::AsRawFd;
    // SAFETY: `flock` is a plain C struct, zeroed then filled; the descriptor belongs to `file`.
    let mut lock: libc::flock = unsafe { std::mem::zeroed() };
    lock.l_type = libc::F_WRLCK as libc::c_short;
    lock.l_whence = libc::SEEK_SET as libc::c_short;
    let rc = unsafe { libc::fcntl(file.as_raw_fd(), libc::F_OFD_SETLK, &lock) };
    if rc == 0 {
        return Ok(true);
    }
    let err = std::io::Error::last_os_error();
    match err.raw_os_error() {
        Some(libc::EAGAIN) | Some(libc::EACCES) => Ok(false),
        _ => Err(err),
    }
}

/// Drops the open-file-description lock (closing the last descriptor would too, but the writer
/// may keep the file open a little longer).
fn unlock_file(file: &std::fs::File) {
    use std::os::fd::AsRawFd;
    // SAFETY: as in `try_lock_file`.
    let mut lock: libc::flock = unsafe { std::mem::zeroed() };
    lock.l_type = libc::F_UNLCK as libc::c_short;
    lock.l_whence = libc::SEEK_SET as libc::c_short;
    unsafe { libc::fcntl(file.as_raw_fd(), libc::F_OFD_SETLK, &lock) };
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn file_locks_exclude_other_descriptions_until_closed() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("data");
        std::fs::write(&path, b"x").unwrap();
        let a = std::fs::OpenOptions::new().write(true).open(&path).unwrap();
        let b = std::fs::OpenOptions::new().write(true).open(&path).unwrap();
        assert!(try_lock_file(&a).unwrap());
        assert!(!try_lock_file(&b).unwrap(), "a second holder is refused");
        drop(a);
        assert!(
            try_lock_file(&b).unwrap(),
            "closing the file releases the lock"
        );
    }

    #[tokio::test]
    async fn leases_exclude_until_released() {
        let storage = Storage::in_memory();
        let mut writer = storage.new_upload_writer("u1").await.unwrap();
        let record = crate::storage::UploadRecord {
            repo: "r".into(),
            algorithm: "sha256".into(),
            started_at: String::new(),
            offset: 0,
            generation: 1,
            hash: None,
            parts: writer.parts_state(),
            completed: false,
        };
        writer.park();
        storage.save_upload("u1", &record).await.unwrap();
        let (held, loaded) = storage.lock_upload("u1").await.unwrap().expect("exists");
        assert_eq!(loaded, record);
        let path = layout::upload_lease("u1");
        assert!(!storage.try_lease(&path).await.unwrap());
        held.release().await;
        assert!(storage.try_lease(&path).await.unwrap());
        assert!(storage.lock_upload("nope").await.unwrap().is_none());
        assert!(
            !storage.exists(&layout::upload_lease("nope")).await.unwrap(),
            "no lease is left behind for an unknown upload"
        );
    }
}
