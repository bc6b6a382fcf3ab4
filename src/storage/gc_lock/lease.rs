//! The collector's lock on an object store: a lease object at `_berth/locks/gc` holding the
//! holder's record and its expiry, renewed while the collection runs (see the parent module
//! for what it guarantees on a store that ignores conditional writes).

use std::sync::Arc;
use std::time::{Duration, Instant};

use object_store::path::Path;
use object_store::{ObjectStore, ObjectStoreExt, PutMode, PutOptions};

use super::{GcLock, GcLockAttempt, GcLockHolder, Kind, Lost, GC_LEASE_RENEW};
use crate::storage::{layout, Result, Storage};

impl Storage {
    async fn read_gc_lease(&self, path: &Path) -> Result<Option<Option<GcLockHolder>>> {
        Ok(self
            .read_small(path)
            .await?
            .map(|b| GcLockHolder::parse(&b)))
    }

    /// Takes the lease for `me`, or answers who holds it.
    pub(super) async fn lock_gc_lease(
        &self,
        settle: Duration,
        me: GcLockHolder,
    ) -> Result<GcLockAttempt> {
        let path = layout::gc_lock();
        // Twice: once more after breaking an expired lease.
        for _ in 0..2 {
            match self.read_gc_lease(&path).await? {
                Some(Some(h)) if !h.expired() => return Ok(GcLockAttempt::Busy(Some(h))),
                Some(h) => {
                    log::info!(
                        "breaking the expired garbage-collection lease of {}",
                        h.map_or_else(|| "an unreadable record".into(), |h| h.to_string())
                    );
                    self.delete(&path).await?;
                }
                None => {}
            }
            let sent = Instant::now();
            let created = self
                .store
                .put_opts(
                    &path,
                    me.payload(),
                    PutOptions {
                        mode: PutMode::Create,
                        ..Default::default()
                    },
                )
                .await;
            match created {
                Ok(_) => {}
                Err(object_store::Error::AlreadyExists { .. }) => continue,
                Err(e) => return Err(e.into()),
            }
            if !settle.is_zero() {
                tokio::time::sleep(settle).await;
            }
            match self.read_gc_lease(&path).await? {
                Some(Some(h)) if h.owner == me.owner => {}
                // Another collector's write replaced ours (or it vanished): theirs it is.
                other => return Ok(GcLockAttempt::Busy(other.flatten())),
            }
            let lost = Arc::new(Lost::expiring(sent));
            let renewal = tokio::spawn(renew(
                self.store.clone(),
                path.clone(),
                me.clone(),
                lost.clone(),
            ));
            return Ok(GcLockAttempt::Held(GcLock {
                holder: me,
                kind: Kind::Lease {
                    store: self.store.clone(),
                    path,
                },
                renewal,
                lost,
                beside: None,
            }));
        }
        Ok(GcLockAttempt::Busy(
            self.read_gc_lease(&path).await?.flatten(),
        ))
    }
}

/// Every [`GC_LEASE_RENEW`]: reads the lease (still ours?) and writes it with a new expiry. A
/// request gets one renewal period to answer: one that hangs must not keep the lock counted as
/// held (see `Lost::check`).
async fn renew(store: Arc<dyn ObjectStore>, path: Path, me: GcLockHolder, lost: Arc<Lost>) {
    loop {
        tokio::time::sleep(GC_LEASE_RENEW).await;
        let sent = Instant::now();
        let read = tokio::time::timeout(GC_LEASE_RENEW, async {
            match store.get(&path).await {
                Ok(r) => Ok(r.bytes().await.ok().and_then(|b| GcLockHolder::parse(&b))),
                Err(object_store::Error::NotFound { .. }) => Ok(None),
                Err(e) => Err(e.to_string()),
            }
        })
        .await
        .unwrap_or_else(|_| Err(format!("no answer within {} s", GC_LEASE_RENEW.as_secs())));
        match read {
            Ok(Some(h)) if h.owner == me.owner => {}
            Ok(other) => {
                log::error!("the garbage-collection lease {path} was taken over");
                lost.taken_over(other);
                return;
            }
            Err(e) => {
                log::warn!("cannot read the garbage-collection lease {path}: {e}");
                continue;
            }
        }
        match tokio::time::timeout(GC_LEASE_RENEW, store.put(&path, me.renewed().payload())).await {
            Ok(Ok(_)) => lost.confirmed(sent),
            Ok(Err(e)) => log::warn!("cannot renew the garbage-collection lease {path}: {e}"),
            Err(_) => log::warn!(
                "cannot renew the garbage-collection lease {path}: no answer within {} s",
                GC_LEASE_RENEW.as_secs()
            ),
        }
    }
}

/// Deletes the lease if it is still `holder`'s: one that replaced ours stays.
pub(super) async fn release(store: &Arc<dyn ObjectStore>, path: &Path, holder: &GcLockHolder) {
    let ours = match store.get(path).await {
        Ok(r) => r
            .bytes()
            .await
            .ok()
            .and_then(|b| GcLockHolder::parse(&b))
            .is_some_and(|h| h.owner == holder.owner),
        Err(_) => false,
    };
    if ours {
        if let Err(e) = store.delete(path).await {
            log::warn!("cannot remove the garbage-collection lease {path}: {e}");
        }
    }
}
