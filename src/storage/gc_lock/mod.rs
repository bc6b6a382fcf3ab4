//! One garbage collection at a time per storage: the collector's lock.
//!
//! Two collectors sweeping at once can each move half of an image aside and then, each not
//! finding the other's half, delete content a tag needs (issue 11). So a collection holds this
//! lock from its recovery to its end; a second one is refused, told who holds it and when it
//! expires.
//!
//! - **Local disk** (`file.rs`): an open-file-description lock (`F_OFD_SETLK`) on
//!   `_berth/locks/gc`. The kernel drops it the moment the holder exits, `kill -9` included.
//! - **Object stores** (`lease.rs`): a lease object at the same path holding the holder's
//!   record, with an expiry [`GC_LEASE_TTL`] after its last renewal (every [`GC_LEASE_RENEW`]),
//!   created with `If-None-Match: *`. A store that ignores conditional writes (Garage) lets two
//!   collectors starting within the same instant both "create" it, so a collector waits
//!   [`GC_LEASE_SETTLE`] and reads the lease back: only the one whose record is there goes on.
//!   That holds as long as a write is visible to reads within the settle time and the hosts'
//!   clocks agree to well within the TTL.
//! - **Object stores with Redis locks** (`redis.rs`, where uploads are locked in Redis): a key
//!   `<namespace>:gc` holding the holder's record, set only if absent and renewed only while it
//!   is still ours, each in one script: exact whatever the store does with conditional writes.
//!   The lease object is taken as well, so that a collection run without this Redis (another
//!   configuration, an older berth) meets this one there and is refused.
//!
//! A holder checks the lock before every item it removes ([`GcLock::check`]): the lock counts
//! as lost when a renewal found another holder's record, and also once no request has
//! confirmed it for [`GC_LEASE_TTL`] less [`GC_LOCK_MARGIN`] (store or Redis unreachable, the
//! process stalled): by then it may have expired and another collection may hold it.

mod file;
mod lease;
mod redis;

use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use object_store::path::Path;
use object_store::{ObjectStore, ObjectStoreExt, PutPayload};
use serde::{Deserialize, Serialize};

use super::lock::{Coordination, RedisLocks};
use super::{layout, Backend, Result, Storage, StorageError};

/// How long a lease lives after its last renewal.
pub const GC_LEASE_TTL: Duration = Duration::from_secs(60);
/// How often a held lock's record is renewed.
pub const GC_LEASE_RENEW: Duration = Duration::from_secs(20);
/// On S3: how long a new lease is left to settle before it is read back (see above).
pub const GC_LEASE_SETTLE: Duration = Duration::from_secs(1);
/// How long before its expiry an unconfirmed lock stops counting as held: room for the item
/// being removed when the check passed.
pub const GC_LOCK_MARGIN: Duration = Duration::from_secs(15);

/// Who holds (or held) the collector's lock.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct GcLockHolder {
    /// Unique per collection (a UUID).
    pub owner: String,
    pub host: String,
    pub pid: u32,
    /// Milliseconds since the Unix epoch.
    pub started: u64,
    /// Milliseconds since the Unix epoch; renewed while the holder runs.
    pub expires: u64,
}

pub(super) fn now_ms() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap_or_default()
        .as_millis() as u64
}

fn rfc3339(ms: u64) -> String {
    chrono::DateTime::<chrono::Utc>::from_timestamp_millis(ms as i64)
        .map(|t| t.to_rfc3339_opts(chrono::SecondsFormat::Secs, true))
        .unwrap_or_else(|| format!("{ms} ms after the epoch"))
}

/// This machine's host name (`gethostname`), or `None` when the call fails. Also the host part
/// of the notifications' `source.addr`.
pub fn hostname() -> Option<String> {
    let mut buf = [0u8; 256];
    // SAFETY: the buffer is ours and its length is passed; the result is NUL-terminated or
    // truncated, and only the bytes before the first NUL are read.
    let rc = unsafe { libc::gethostname(buf.as_mut_ptr().cast(), buf.len()) };
    if rc != 0 {
        return None;
    }
    let end = buf.iter().position(|&b| b == 0).unwrap_or(buf.len());
    Some(String::from_utf8_lossy(&buf[..end]).into_owned())
}

impl GcLockHolder {
    fn new() -> GcLockHolder {
        let now = now_ms();
        GcLockHolder {
            owner: uuid::Uuid::new_v4().simple().to_string(),
            host: hostname().unwrap_or_else(|| "unknown host".into()),
            pid: std::process::id(),
            started: now,
            expires: now + GC_LEASE_TTL.as_millis() as u64,
        }
    }

    fn renewed(&self) -> GcLockHolder {
        GcLockHolder {
            expires: now_ms() + GC_LEASE_TTL.as_millis() as u64,
            ..self.clone()
        }
    }

    fn expired(&self) -> bool {
        self.expires < now_ms()
    }

    fn payload(&self) -> PutPayload {
        PutPayload::from(serde_json::to_vec(self).expect("a lock record serializes"))
    }

    fn parse(bytes: &[u8]) -> Option<GcLockHolder> {
        serde_json::from_slice(bytes).ok()
    }
}

/// "pid 12 on host h (collection 3f…), started …; its lock expires at … unless renewed"
impl std::fmt::Display for GcLockHolder {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "pid {} on host {} (collection {}), started {}; its lock expires at {} unless \
             renewed (every {} s while it runs)",
            self.pid,
            self.host,
            self.owner,
            rfc3339(self.started),
            rfc3339(self.expires),
            GC_LEASE_RENEW.as_secs()
        )
    }
}

/// Why a held lock stopped counting as held.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum LockLoss {
    /// A renewal found another collection's record (`None`: none it could read).
    TakenOver(Option<GcLockHolder>),
    /// No request has confirmed the lock for this long: it may have expired.
    Unconfirmed(Duration),
}

impl std::fmt::Display for LockLoss {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            LockLoss::TakenOver(Some(h)) => write!(f, "another collection took it over: {h}"),
            LockLoss::TakenOver(None) => {
                write!(
                    f,
                    "another collection took it over (its record is unreadable)"
                )
            }
            LockLoss::Unconfirmed(d) => write!(
                f,
                "no renewal reached the store or Redis for {} s, so it may have expired",
                d.as_secs()
            ),
        }
    }
}

/// What trying to take the lock found.
#[derive(Debug)]
pub enum GcLockAttempt {
    Held(GcLock),
    /// Another collection holds it (its record, if it has written one yet).
    Busy(Option<GcLockHolder>),
}

/// The collector's lock, held until [`GcLock::release`] or drop (which stops renewing; on
/// local disk it also unlocks).
#[derive(Debug)]
pub struct GcLock {
    pub holder: GcLockHolder,
    kind: Kind,
    renewal: tokio::task::JoinHandle<()>,
    lost: Arc<Lost>,
    /// With Redis locks: the lease object, held beside the key.
    beside: Option<Box<GcLock>>,
}

/// What the renewal learnt about the lock, for [`GcLock::check`].
#[derive(Debug)]
struct Lost {
    /// Set when a renewal found another holder's record (`None` inside: none readable).
    taken: Mutex<Option<Option<GcLockHolder>>>,
    /// Until when the lock is surely ours: the lock's life from the moment the last request
    /// that confirmed it was sent. `None` on local disk (the kernel's lock needs no renewal).
    confirmed_until: Option<Mutex<Instant>>,
}

impl Lost {
    fn kernel() -> Lost {
        Lost {
            taken: Mutex::new(None),
            confirmed_until: None,
        }
    }

    /// A lock taken by a request sent at `sent`.
    fn expiring(sent: Instant) -> Lost {
        Lost {
            taken: Mutex::new(None),
            confirmed_until: Some(Mutex::new(sent + GC_LEASE_TTL)),
        }
    }

    /// A renewal sent at `sent` succeeded.
    fn confirmed(&self, sent: Instant) {
        if let Some(until) = &self.confirmed_until {
            let mut until = until.lock().unwrap();
            *until = (*until).max(sent + GC_LEASE_TTL);
        }
    }

    fn taken_over(&self, to: Option<GcLockHolder>) {
        *self.taken.lock().unwrap() = Some(to);
    }

    fn check(&self) -> std::result::Result<(), LockLoss> {
        if let Some(to) = &*self.taken.lock().unwrap() {
            return Err(LockLoss::TakenOver(to.clone()));
        }
        if let Some(until) = &self.confirmed_until {
            let until = *until.lock().unwrap();
            let now = Instant::now();
            if now + GC_LOCK_MARGIN > until {
                let confirmed = until - GC_LEASE_TTL;
                return Err(LockLoss::Unconfirmed(
                    now.saturating_duration_since(confirmed),
                ));
            }
        }
        Ok(())
    }
}

#[derive(Debug)]
enum Kind {
    File(Arc<std::fs::File>),
    Lease {
        store: Arc<dyn ObjectStore>,
        path: Path,
    },
    Redis {
        locks: RedisLocks,
        /// The key's value while ours (written once; renewals only extend its expiry).
        record: String,
    },
}

impl Drop for GcLock {
    fn drop(&mut self) {
        self.renewal.abort();
        if let Kind::File(file) = &self.kind {
            file::unlock_file(file);
        }
    }
}

impl GcLock {
    /// Whether the lock still counts as held: `Err` once a renewal found another collection's
    /// record, or no request has confirmed it for nearly its life. Cheap: the collection
    /// calls it before every item it removes.
    pub fn check(&self) -> std::result::Result<(), LockLoss> {
        self.lost.check()?;
        match &self.beside {
            Some(beside) => beside.check(),
            None => Ok(()),
        }
    }

    /// Makes the lock count as taken over (a test's other collector).
    #[cfg(test)]
    pub(crate) fn lose(&self) {
        self.lost.taken_over(None);
    }

    /// Lets the next collection run.
    pub async fn release(mut self) {
        self.renewal.abort();
        match &self.kind {
            Kind::Redis { locks, record } => match locks.release_gc(record).await {
                Ok(true) => {}
                Ok(false) => log::warn!(
                    "the garbage-collection lock in Redis was no longer this collection's"
                ),
                Err(e) => log::warn!("cannot release the garbage-collection lock in Redis: {e}"),
            },
            Kind::Lease { store, path } => lease::release(store, path, &self.holder).await,
            // Drop unlocks the file.
            Kind::File(_) => {}
        }
        if let Some(beside) = self.beside.take() {
            Box::pin(beside.release()).await;
        }
    }
}

impl Storage {
    /// Writes a small object whole, replacing any (the collector's journal entries; on local
    /// disk written to a temporary file and renamed, so never seen half-written).
    pub async fn write_small(&self, path: &Path, bytes: Vec<u8>) -> Result<()> {
        self.store.put(path, PutPayload::from(bytes)).await?;
        Ok(())
    }

    /// Takes the collector's lock, or answers who holds it.
    pub async fn lock_gc(&self) -> Result<GcLockAttempt> {
        if let Some((local, _)) = self.local_files() {
            let path = local.path_to_filesystem(&layout::gc_lock())?;
            return tokio::task::spawn_blocking(move || file::lock_gc_file(&path))
                .await
                .map_err(|e| StorageError::Io(std::io::Error::other(e)))?;
        }
        let settle = match &self.backend {
            // S3 (the only store with a signer) may be a server ignoring `If-None-Match`.
            Backend::Objects {
                signer: Some(_), ..
            } => GC_LEASE_SETTLE,
            _ => Duration::ZERO,
        };
        match &*self.coordination {
            Coordination::Redis(locks) => redis::lock_gc_redis(self, locks, settle).await,
            _ => self.lock_gc_lease(settle, GcLockHolder::new()).await,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn attempt_held(a: GcLockAttempt) -> GcLock {
        match a {
            GcLockAttempt::Held(l) => l,
            GcLockAttempt::Busy(h) => panic!("refused: {h:?}"),
        }
    }

    #[tokio::test]
    async fn a_second_collection_is_refused_until_the_first_releases() {
        let dir = tempfile::tempdir().unwrap();
        for storage in [
            Storage::in_memory(),
            Storage::filesystem(dir.path(), false).unwrap(),
        ] {
            let first = attempt_held(storage.lock_gc().await.unwrap());
            match storage.lock_gc().await.unwrap() {
                GcLockAttempt::Busy(Some(h)) => assert_eq!(h, first.holder),
                other => panic!("{}: not refused: {other:?}", storage.describe()),
            }
            first.release().await;
            attempt_held(storage.lock_gc().await.unwrap())
                .release()
                .await;
        }
    }

    #[tokio::test]
    async fn a_lease_whose_holder_died_expires() {
        let storage = Storage::in_memory();
        let path = layout::gc_lock();
        let mut dead = GcLockHolder::new();
        dead.pid = 1;
        storage.store.put(&path, dead.payload()).await.unwrap();
        assert!(matches!(
            storage.lock_gc().await.unwrap(),
            GcLockAttempt::Busy(Some(h)) if h.pid == 1
        ));
        // The same record, past its expiry: broken and taken.
        dead.expires = now_ms() - 1;
        storage.store.put(&path, dead.payload()).await.unwrap();
        let lock = attempt_held(storage.lock_gc().await.unwrap());
        assert_eq!(lock.holder.pid, std::process::id());
        assert!(lock.check().is_ok());
        lock.release().await;
        assert!(!storage.exists(&path).await.unwrap());
    }

    #[test]
    fn a_lock_unconfirmed_for_nearly_its_life_counts_as_lost() {
        // Confirmed just now: held.
        let fresh = Lost::expiring(Instant::now());
        assert_eq!(fresh.check(), Ok(()));
        // Last confirmed a TTL less the margin ago (renewals failing or hanging, or the process
        // stalled): it may expire before the next item is done, so it is lost.
        let stale = Lost::expiring(Instant::now() - (GC_LEASE_TTL - GC_LOCK_MARGIN));
        assert!(
            matches!(stale.check(), Err(LockLoss::Unconfirmed(d)) if d >= GC_LEASE_TTL - GC_LOCK_MARGIN)
        );
        // A renewal sent now confirms it again.
        stale.confirmed(Instant::now());
        assert_eq!(stale.check(), Ok(()));
        // Taken over: lost whatever the time.
        stale.taken_over(None);
        assert_eq!(stale.check(), Err(LockLoss::TakenOver(None)));
        // The kernel's lock never expires.
        assert_eq!(Lost::kernel().check(), Ok(()));
    }
}
