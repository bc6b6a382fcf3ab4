//! The collector's lock where uploads are locked in Redis: a key `<namespace>:gc` holding the
//! holder's record, set only if absent, its expiry extended only while it still holds our
//! record, deleted only if ours (each a script in `storage::lock::redis`). The lease object is
//! taken beside it, for collections that do not use this Redis.

use std::sync::Arc;
use std::time::{Duration, Instant};

use super::{
    now_ms, GcLock, GcLockAttempt, GcLockHolder, Kind, Lost, GC_LEASE_RENEW, GC_LEASE_TTL,
};
use crate::storage::lock::RedisLocks;
use crate::storage::{Result, Storage};

pub(super) async fn lock_gc_redis(
    storage: &Storage,
    locks: &RedisLocks,
    settle: Duration,
) -> Result<GcLockAttempt> {
    let me = GcLockHolder::new();
    let record = serde_json::to_string(&me).expect("a lock record serializes");
    let sent = Instant::now();
    if let Some((ttl_ms, held)) = locks.take_gc(&record, GC_LEASE_TTL).await? {
        // The record is written once: its expiry is the key's.
        let holder = GcLockHolder::parse(held.as_bytes()).map(|mut h| {
            h.expires = now_ms() + ttl_ms.max(0) as u64;
            h
        });
        return Ok(GcLockAttempt::Busy(holder));
    }
    let lost = Arc::new(Lost::expiring(sent));
    let renewal = tokio::spawn(renew(locks.clone(), record.clone(), lost.clone()));
    let mut lock = GcLock {
        holder: me.clone(),
        kind: Kind::Redis {
            locks: locks.clone(),
            record,
        },
        renewal,
        lost,
        beside: None,
    };
    // The lease object too: a collection configured without this Redis (or an older berth)
    // meets this one there.
    match storage.lock_gc_lease(settle, me).await {
        Ok(GcLockAttempt::Held(lease)) => {
            lock.beside = Some(Box::new(lease));
            Ok(GcLockAttempt::Held(lock))
        }
        Ok(busy) => {
            lock.release().await;
            Ok(busy)
        }
        Err(e) => {
            lock.release().await;
            Err(e)
        }
    }
}

async fn renew(locks: RedisLocks, record: String, lost: Arc<Lost>) {
    loop {
        tokio::time::sleep(GC_LEASE_RENEW).await;
        let sent = Instant::now();
        match locks.renew_gc(&record, GC_LEASE_TTL).await {
            Ok(None) => lost.confirmed(sent),
            Ok(Some(there)) => {
                log::error!("the garbage-collection lock in Redis was taken over");
                lost.taken_over(GcLockHolder::parse(there.as_bytes()));
                return;
            }
            Err(e) => log::warn!("cannot renew the garbage-collection lock in Redis: {e}"),
        }
    }
}
