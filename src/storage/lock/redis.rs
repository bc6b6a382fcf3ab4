//! The upload lock on an object store that ignores conditional writes (Garage, Ceph, older
//! MinIO), kept in Redis: a key with an expiry holding the holder's fencing token, drawn from a
//! counter per upload that only grows and never falls behind Redis's clock (see `TAKE`).
//!
//! Such a store cannot refuse a stale writer, so stale writes are made harmless instead: the
//! holder writes its record as `state.<token>` and its staged pieces under names carrying the
//! token, and readers take the record of the highest token; part numbers come from a counter in
//! Redis that only the current holder may advance. A holder that stalled past its lock (or
//! lost it) thus writes only where nobody reads. Every change is a Lua script checking the
//! holder first, so it is atomic in Redis. Redis unreachable: the request fails with
//! [`StorageError::Coordination`] (503 + `Retry-After`), never falls back to writing unlocked.

use std::sync::Arc;
use std::time::Duration;

use redis::aio::ConnectionManager;

use super::{owner, Fence, Result, StorageError};

/// How long a lock lives without renewal.
const LOCK_TTL: Duration = Duration::from_secs(15);
/// How often a held lock is renewed.
const LOCK_RENEW: Duration = Duration::from_secs(5);
/// How long an upload's counters are kept after their last use (beyond any upload's life:
/// purging removes uploads untouched for a week by default).
const COUNTERS_KEPT: Duration = Duration::from_secs(30 * 24 * 3600);

/// Takes the lock if free. KEYS: lock, fence. ARGV: owner, lock ttl ms, floor, kept ms.
/// Answers the new token, 0 when held, -1 when the counter is past what Lua counts exactly.
///
/// The token is above the counter and the floor, and at least Redis's clock in microseconds: a
/// Redis that lost the counter (restarted empty, flushed, failed over to a replica that had not
/// caught up) still hands out a token above those of holders that may be in flight, which
/// neither it nor the records know of (a holder's token is recorded only when it writes).
/// Numbers are Lua doubles, exact up to 2^53, and written with `%d` (Lua's own conversion keeps
/// 14 digits, which the clock already has).
const TAKE: &str = r#"
if redis.call('EXISTS', KEYS[1]) == 1 then return 0 end
local now = redis.call('TIME')
local fence = math.max(
  tonumber(redis.call('GET', KEYS[2]) or '0') + 1,
  tonumber(ARGV[3]) + 1,
  tonumber(now[1]) * 1000000 + tonumber(now[2]))
if fence > 9007199254740992 then return -1 end
local token = string.format('%d', fence)
redis.call('SET', KEYS[2], token, 'PX', ARGV[4])
redis.call('SET', KEYS[1], ARGV[1] .. ':' .. token, 'PX', ARGV[2])
return fence
"#;

/// The highest token a record may carry: tokens are counted exactly up to 2^53 (see `TAKE`);
/// this leaves room above it, and Redis's clock reaches it in the year 2112. A record above it
/// was not written by berth.
pub const MAX_TOKEN: u64 = 1 << 52;

/// Renews the lock if still ours. KEYS: lock. ARGV: holder, ttl ms. Answers 1 or 0.
const RENEW: &str = r#"
if redis.call('GET', KEYS[1]) ~= ARGV[1] then return 0 end
redis.call('PEXPIRE', KEYS[1], ARGV[2])
return 1
"#;

/// Releases the lock if still ours, letting the next holder reuse part numbers above the
/// recorded ones. KEYS: lock, parts. ARGV: holder, recorded parts, kept ms.
const RELEASE: &str = r#"
if redis.call('GET', KEYS[1]) ~= ARGV[1] then return 0 end
redis.call('DEL', KEYS[1])
redis.call('SET', KEYS[2], ARGV[2], 'PX', ARGV[3])
return 1
"#;

/// Hands out the next part number if the lock is still ours. KEYS: lock, parts. ARGV: holder,
/// floor, kept ms. Answers the number, or -1 when the lock is not ours.
const NEXT_PART: &str = r#"
if redis.call('GET', KEYS[1]) ~= ARGV[1] then return -1 end
local given = tonumber(redis.call('GET', KEYS[2]) or '0')
local floor = tonumber(ARGV[2])
if given < floor then given = floor end
given = given + 1
redis.call('SET', KEYS[2], given, 'PX', ARGV[3])
return given
"#;

/// The collector's lock (see `storage::gc_lock`), taken if free. KEYS: lock. ARGV: record, ttl
/// ms. Answers "" when taken, else the key's remaining life in ms, a space and the holder's
/// record.
const TAKE_GC: &str = r#"
local held = redis.call('GET', KEYS[1])
if held then return redis.call('PTTL', KEYS[1]) .. ' ' .. held end
redis.call('SET', KEYS[1], ARGV[1], 'PX', ARGV[2])
return ''
"#;

/// Extends the collector's lock if it still holds our record. KEYS: lock. ARGV: record, ttl ms.
/// Answers "" when extended, else "lost:" and the record there (none: "lost:").
const RENEW_GC: &str = r#"
local held = redis.call('GET', KEYS[1])
if held ~= ARGV[1] then return 'lost:' .. (held or '') end
redis.call('PEXPIRE', KEYS[1], ARGV[2])
return ''
"#;

/// Deletes the collector's lock if it still holds our record. KEYS: lock. ARGV: record.
const RELEASE_GC: &str = r#"
if redis.call('GET', KEYS[1]) ~= ARGV[1] then return 0 end
redis.call('DEL', KEYS[1])
return 1
"#;

/// The Redis side of upload locks: a connection and the namespace of this storage's keys.
#[derive(Clone)]
pub struct RedisLocks {
    connection: ConnectionManager,
    /// Keys are `<namespace>:upload:<id>:…`; the namespace names the bucket and root, so
    /// registries on different buckets can share a Redis.
    namespace: String,
    timeout: Duration,
}

impl std::fmt::Debug for RedisLocks {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "RedisLocks({})", self.namespace)
    }
}

impl RedisLocks {
    pub fn new(connection: ConnectionManager, namespace: String, timeout: Duration) -> Self {
        RedisLocks {
            connection,
            namespace,
            timeout,
        }
    }

    fn key(&self, upload_id: &str, what: &str) -> String {
        format!("{}:upload:{upload_id}:{what}", self.namespace)
    }

    async fn run<T: redis::FromRedisValue>(
        &self,
        script: &str,
        keys: &[String],
        args: &[String],
    ) -> Result<T> {
        let script = redis::Script::new(script);
        let mut invocation = script.prepare_invoke();
        for key in keys {
            invocation.key(key);
        }
        for arg in args {
            invocation.arg(arg);
        }
        let mut connection = self.connection.clone();
        match tokio::time::timeout(self.timeout, invocation.invoke_async::<T>(&mut connection))
            .await
        {
            Ok(Ok(answer)) => Ok(answer),
            Ok(Err(e)) => Err(StorageError::Coordination(format!("Redis: {e}"))),
            Err(_) => Err(StorageError::Coordination(format!(
                "Redis: no answer within {} ms",
                self.timeout.as_millis()
            ))),
        }
    }

    /// The key of the collector's lock: `<namespace>:gc`.
    pub(crate) fn gc_key(&self) -> String {
        format!("{}:gc", self.namespace)
    }

    /// Takes the collector's lock with `record` for `ttl`: `None` when taken, else the
    /// holding collection's remaining life (ms) and record.
    pub(crate) async fn take_gc(
        &self,
        record: &str,
        ttl: Duration,
    ) -> Result<Option<(i64, String)>> {
        let held: String = self
            .run(
                TAKE_GC,
                &[self.gc_key()],
                &[record.to_string(), ttl.as_millis().to_string()],
            )
            .await?;
        Ok(held
            .split_once(' ')
            .map(|(ttl, record)| (ttl.parse().unwrap_or(0), record.to_string())))
    }

    /// Extends the collector's lock held with `record` to `ttl`: `Ok(None)` when extended,
    /// `Ok(Some(record))` when another collection's record (or none, "") is there instead.
    pub(crate) async fn renew_gc(&self, record: &str, ttl: Duration) -> Result<Option<String>> {
        let answer: String = self
            .run(
                RENEW_GC,
                &[self.gc_key()],
                &[record.to_string(), ttl.as_millis().to_string()],
            )
            .await?;
        Ok(answer.strip_prefix("lost:").map(str::to_string))
    }

    /// Releases the collector's lock if it still holds `record` (`false`: it did not).
    pub(crate) async fn release_gc(&self, record: &str) -> Result<bool> {
        let released: i64 = self
            .run(RELEASE_GC, &[self.gc_key()], &[record.to_string()])
            .await?;
        Ok(released == 1)
    }

    /// Checks that Redis answers (start-up).
    pub async fn ping(&self) -> Result<()> {
        self.run::<i64>("return 1", &[], &[]).await.map(|_| ())
    }

    /// Tries once to take the lock of `upload_id` with a token above `floor`.
    pub(super) async fn try_take(
        &self,
        upload_id: &str,
        floor: u64,
    ) -> Result<Option<Arc<RedisHold>>> {
        let token = self
            .run::<i64>(
                TAKE,
                &[self.key(upload_id, "lock"), self.key(upload_id, "fence")],
                &[
                    owner().to_string(),
                    LOCK_TTL.as_millis().to_string(),
                    floor.to_string(),
                    COUNTERS_KEPT.as_millis().to_string(),
                ],
            )
            .await?;
        if token < 0 {
            return Err(StorageError::Coordination(format!(
                "Redis's fencing counter {} is beyond 2^53; delete it",
                self.key(upload_id, "fence")
            )));
        }
        if token == 0 {
            return Ok(None);
        }
        Ok(Some(Arc::new(RedisHold {
            locks: self.clone(),
            upload_id: upload_id.to_string(),
            token: token as u64,
            holder: format!("{}:{token}", owner()),
            lost: std::sync::Mutex::new(None),
        })))
    }
}

/// A taken Redis lock, shared by the guard, its renewal task and the upload's writer.
pub(super) struct RedisHold {
    locks: RedisLocks,
    upload_id: String,
    token: u64,
    /// The lock's value while ours.
    holder: String,
    lost: std::sync::Mutex<Option<String>>,
}

impl RedisHold {
    fn refuse_if_lost(&self) -> Result<()> {
        match &*self.lost.lock().unwrap() {
            Some(why) => Err(StorageError::Fenced(why.clone())),
            None => Ok(()),
        }
    }

    fn lose(&self, why: String) -> StorageError {
        *self.lost.lock().unwrap() = Some(why.clone());
        StorageError::Fenced(why)
    }

    async fn renew(&self) -> Result<()> {
        self.refuse_if_lost()?;
        let renewed = self
            .locks
            .run::<i64>(
                RENEW,
                &[self.locks.key(&self.upload_id, "lock")],
                &[self.holder.clone(), LOCK_TTL.as_millis().to_string()],
            )
            .await;
        match renewed {
            Ok(1) => Ok(()),
            Ok(_) => Err(self.lose(format!(
                "the lock of upload {} was taken over",
                self.upload_id
            ))),
            // Unreachable for a while: the lock may have expired meanwhile, so nothing more is
            // written under it.
            Err(e) => Err(self.lose(format!(
                "the lock of upload {} could not be renewed: {e}",
                self.upload_id
            ))),
        }
    }

    pub(super) async fn renew_while_held(self: Arc<Self>) {
        loop {
            tokio::time::sleep(LOCK_RENEW).await;
            if let Err(e) = self.renew().await {
                log::warn!("{e}");
                return;
            }
        }
    }

    pub(super) async fn release(&self, recorded_parts: u32) {
        if self.refuse_if_lost().is_err() {
            return;
        }
        let released = self
            .locks
            .run::<i64>(
                RELEASE,
                &[
                    self.locks.key(&self.upload_id, "lock"),
                    self.locks.key(&self.upload_id, "parts"),
                ],
                &[
                    self.holder.clone(),
                    recorded_parts.to_string(),
                    COUNTERS_KEPT.as_millis().to_string(),
                ],
            )
            .await;
        if let Err(e) = released {
            // It expires on its own.
            log::warn!("cannot release the lock of upload {}: {e}", self.upload_id);
        }
    }
}

#[async_trait::async_trait]
impl Fence for RedisHold {
    fn token(&self) -> u64 {
        self.token
    }

    async fn next_part(&self, after: u32) -> Result<u32> {
        self.refuse_if_lost()?;
        let number = self
            .locks
            .run::<i64>(
                NEXT_PART,
                &[
                    self.locks.key(&self.upload_id, "lock"),
                    self.locks.key(&self.upload_id, "parts"),
                ],
                &[
                    self.holder.clone(),
                    after.to_string(),
                    COUNTERS_KEPT.as_millis().to_string(),
                ],
            )
            .await?;
        if number < 0 {
            return Err(self.lose(format!(
                "the lock of upload {} was taken over",
                self.upload_id
            )));
        }
        u32::try_from(number)
            .ok()
            .filter(|n| *n <= MAX_PART_NUMBER)
            .ok_or_else(|| StorageError::Corrupt {
                path: format!("upload {}", self.upload_id),
                reason: format!("part number {number} is past S3's {MAX_PART_NUMBER}"),
            })
    }

    async fn check(&self) -> Result<()> {
        self.renew().await
    }
}

/// S3's highest part number.
pub const MAX_PART_NUMBER: u32 = 10_000;
