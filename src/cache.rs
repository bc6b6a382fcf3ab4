//! The blob-descriptor cache (`storage.cache.blobdescriptor: inmemory | redis`): which blobs and
//! manifests a repository holds, and a blob's size, so that `HEAD`/`GET` of blobs and manifest
//! lookups by digest skip the storage round trips (two reads per blob on S3).
//!
//! What is cached is only ever "present", learnt from storage or from a write that just
//! succeeded, and forgotten when this registry deletes. Entries expire after [`TTL`], which
//! bounds how long a blob removed behind the registry's back (garbage collection, another
//! instance's delete) can still be reported present; writes that make something depend on a
//! blob (a manifest PUT) check storage itself, never the cache, so a stale entry can make a
//! push fail (`MANIFEST_BLOB_UNKNOWN`, retried later) but never accept a broken image.
//!
//! Redis being down never fails a request: an operation that fails or times out counts as a
//! miss, and Redis is then left alone for a few seconds before it is tried again, so requests
//! do not each wait for its timeout. The connection manager reconnects by itself.

use std::num::NonZeroUsize;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Mutex;
use std::time::{Duration, Instant};

use redis::aio::ConnectionManager;
use redis::AsyncCommands;

use crate::config::{BlobDescriptorCache, Config};
use crate::oci::{Digest, RepoName};

/// How long an entry is believed.
pub const TTL: Duration = Duration::from_secs(600);
/// How long Redis is left alone after it failed.
const REDIS_PAUSE: Duration = Duration::from_secs(5);

/// What an entry says about a repository.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
enum Key {
    /// The blob is linked into the repository; the value is its size.
    Blob(String, String),
    /// The manifest is a revision of the repository.
    Manifest(String, String),
}

impl Key {
    fn redis_key(&self) -> String {
        match self {
            Key::Blob(repo, digest) => format!("berth::repository::{repo}::blobs::{digest}"),
            Key::Manifest(repo, digest) => {
                format!("berth::repository::{repo}::manifests::{digest}")
            }
        }
    }
}

/// Hits, misses and errors, for metrics.
#[derive(Debug, Default)]
pub struct CacheStats {
    pub hits: AtomicU64,
    pub misses: AtomicU64,
    pub errors: AtomicU64,
}

pub struct DescriptorCache {
    backend: Backend,
    pub stats: CacheStats,
    metrics: Option<crate::metrics::Metrics>,
}

enum Backend {
    Memory(Mutex<lru::LruCache<Key, (u64, Instant)>>),
    Redis {
        connection: ConnectionManager,
        paused_until: Mutex<Option<Instant>>,
        timeout: Duration,
    },
}

impl DescriptorCache {
    /// The cache `config` asks for, if any. Must be called inside a Tokio runtime (Redis'
    /// connection is made lazily, on first use: a Redis that is down does not stop start-up).
    pub fn from_config(config: &Config) -> Result<Option<DescriptorCache>, String> {
        let backend = match config.storage.cache.blobdescriptor {
            None => return Ok(None),
            Some(BlobDescriptorCache::Inmemory) => {
                let size = NonZeroUsize::new(config.storage.cache.blobdescriptorsize)
                    .unwrap_or(NonZeroUsize::MIN);
                Backend::Memory(Mutex::new(lru::LruCache::new(size)))
            }
            Some(BlobDescriptorCache::Redis) => {
                let redis = config.redis.as_ref().ok_or(
                    "storage.cache.blobdescriptor is redis, but there is no redis section",
                )?;
                Backend::Redis {
                    connection: crate::redis_client::connect(redis)?,
                    paused_until: Mutex::new(None),
                    timeout: redis.readtimeout.max(redis.writetimeout),
                }
            }
        };
        Ok(Some(DescriptorCache {
            backend,
            stats: CacheStats::default(),
            metrics: None,
        }))
    }

    /// An in-memory cache of `entries` (tests).
    pub fn in_memory(entries: usize) -> DescriptorCache {
        let size = NonZeroUsize::new(entries).unwrap_or(NonZeroUsize::MIN);
        DescriptorCache {
            backend: Backend::Memory(Mutex::new(lru::LruCache::new(size))),
            stats: CacheStats::default(),
            metrics: None,
        }
    }

    /// Counts hits and misses in `metrics` too (`berth_cache_requests_total`).
    pub fn with_metrics(mut self, metrics: crate::metrics::Metrics) -> Self {
        self.metrics = Some(metrics);
        self
    }

    pub fn describe(&self) -> &'static str {
        match self.backend {
            Backend::Memory(_) => "in memory",
            Backend::Redis { .. } => "redis",
        }
    }

    /// The size of `digest` if it is known to be linked into `repo`.
    pub async fn blob_size(&self, repo: &RepoName, digest: &Digest) -> Option<u64> {
        self.get(Key::Blob(repo.to_string(), digest.to_string()))
            .await
    }

    pub async fn remember_blob(&self, repo: &RepoName, digest: &Digest, size: u64) {
        self.set(Key::Blob(repo.to_string(), digest.to_string()), size)
            .await
    }

    pub async fn forget_blob(&self, repo: &RepoName, digest: &Digest) {
        self.remove(Key::Blob(repo.to_string(), digest.to_string()))
            .await
    }

    /// Whether `digest` is known to be a manifest revision of `repo`.
    pub async fn has_manifest(&self, repo: &RepoName, digest: &Digest) -> bool {
        self.get(Key::Manifest(repo.to_string(), digest.to_string()))
            .await
            .is_some()
    }

    pub async fn remember_manifest(&self, repo: &RepoName, digest: &Digest) {
        self.set(Key::Manifest(repo.to_string(), digest.to_string()), 0)
            .await
    }

    pub async fn forget_manifest(&self, repo: &RepoName, digest: &Digest) {
        self.remove(Key::Manifest(repo.to_string(), digest.to_string()))
            .await
    }

    async fn get(&self, key: Key) -> Option<u64> {
        let kind = match key {
            Key::Blob(..) => "blob",
            Key::Manifest(..) => "manifest",
        };
        let found = match &self.backend {
            Backend::Memory(map) => {
                let mut map = map.lock().expect("not poisoned");
                match map.get(&key) {
                    Some((value, at)) if at.elapsed() < TTL => Some(*value),
                    Some(_) => {
                        map.pop(&key);
                        None
                    }
                    None => None,
                }
            }
            Backend::Redis { connection, .. } => {
                let mut c = connection.clone();
                let key = key.redis_key();
                self.redis(async move { c.get::<_, Option<u64>>(key).await })
                    .await
                    .flatten()
            }
        };
        let counter = if found.is_some() {
            &self.stats.hits
        } else {
            &self.stats.misses
        };
        counter.fetch_add(1, Ordering::Relaxed);
        if let Some(metrics) = &self.metrics {
            if found.is_some() {
                metrics.cache_hit(kind);
            } else {
                metrics.cache_miss(kind);
            }
        }
        found
    }

    async fn set(&self, key: Key, value: u64) {
        match &self.backend {
            Backend::Memory(map) => {
                map.lock()
                    .expect("not poisoned")
                    .put(key, (value, Instant::now()));
            }
            Backend::Redis { connection, .. } => {
                let mut c = connection.clone();
                let key = key.redis_key();
                self.redis(async move { c.set_ex::<_, _, ()>(key, value, TTL.as_secs()).await })
                    .await;
            }
        }
    }

    async fn remove(&self, key: Key) {
        match &self.backend {
            Backend::Memory(map) => {
                map.lock().expect("not poisoned").pop(&key);
            }
            Backend::Redis { connection, .. } => {
                let mut c = connection.clone();
                let key = key.redis_key();
                // A delete that cannot reach Redis leaves an entry that says "present" until
                // it expires: the one way this cache can answer wrongly, so it is logged.
                if self
                    .redis(async move { c.del::<_, ()>(key).await })
                    .await
                    .is_none()
                {
                    log::warn!(
                        "blob-descriptor cache: could not forget a deleted entry in Redis; it \
                         may be reported present for up to {} s",
                        TTL.as_secs()
                    );
                }
            }
        }
    }

    /// Runs one Redis operation under the timeout, unless Redis is paused after a failure.
    /// `None` when it was skipped or failed.
    async fn redis<T>(
        &self,
        operation: impl std::future::Future<Output = redis::RedisResult<T>>,
    ) -> Option<T> {
        let Backend::Redis {
            paused_until,
            timeout,
            ..
        } = &self.backend
        else {
            return None;
        };
        if paused_until
            .lock()
            .expect("not poisoned")
            .is_some_and(|until| Instant::now() < until)
        {
            return None;
        }
        let error = match actix_web::rt::time::timeout(*timeout, operation).await {
            Ok(Ok(value)) => return Some(value),
            Ok(Err(e)) => e.to_string(),
            Err(_) => format!("no answer within {} ms", timeout.as_millis()),
        };
        self.stats.errors.fetch_add(1, Ordering::Relaxed);
        let mut paused = paused_until.lock().expect("not poisoned");
        if paused.is_none_or(|until| Instant::now() >= until) {
            log::warn!(
                "blob-descriptor cache: Redis failed ({error}); serving from storage, trying \
                 Redis again in {} s",
                REDIS_PAUSE.as_secs()
            );
        }
        *paused = Some(Instant::now() + REDIS_PAUSE);
        None
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn repo(s: &str) -> RepoName {
        s.parse().unwrap()
    }

    fn digest(s: &[u8]) -> Digest {
        Digest::of(crate::oci::Algorithm::Sha256, s)
    }

    #[actix_web::test]
    async fn remembers_per_repository_and_forgets() {
        let cache = DescriptorCache::in_memory(100);
        let (a, b, d) = (repo("a"), repo("b"), digest(b"x"));
        assert_eq!(cache.blob_size(&a, &d).await, None);
        cache.remember_blob(&a, &d, 42).await;
        assert_eq!(cache.blob_size(&a, &d).await, Some(42));
        assert_eq!(cache.blob_size(&b, &d).await, None, "per repository");
        assert!(!cache.has_manifest(&a, &d).await, "blobs are not manifests");
        cache.forget_blob(&a, &d).await;
        assert_eq!(cache.blob_size(&a, &d).await, None);
        cache.remember_manifest(&b, &d).await;
        assert!(cache.has_manifest(&b, &d).await);
        cache.forget_manifest(&b, &d).await;
        assert!(!cache.has_manifest(&b, &d).await);
        assert_eq!(cache.stats.hits.load(Ordering::Relaxed), 2);
        assert_eq!(cache.stats.misses.load(Ordering::Relaxed), 5);
    }

    #[actix_web::test]
    async fn holds_at_most_its_size() {
        let cache = DescriptorCache::in_memory(2);
        let a = repo("a");
        for i in 0..3u8 {
            cache.remember_blob(&a, &digest(&[i]), u64::from(i)).await;
        }
        assert_eq!(cache.blob_size(&a, &digest(&[0])).await, None, "evicted");
        assert_eq!(cache.blob_size(&a, &digest(&[2])).await, Some(2));
    }

    #[actix_web::test]
    async fn a_redis_that_is_down_is_a_miss_and_is_then_left_alone() {
        let port = std::net::TcpListener::bind("127.0.0.1:0")
            .unwrap()
            .local_addr()
            .unwrap()
            .port();
        let config = crate::config::RedisConfig {
            addr: format!("127.0.0.1:{port}"),
            password: None,
            db: 0,
            dialtimeout: Duration::from_millis(200),
            readtimeout: Duration::from_millis(200),
            writetimeout: Duration::from_millis(200),
            pool: Default::default(),
        };
        let cache = DescriptorCache {
            backend: Backend::Redis {
                connection: crate::redis_client::connect(&config).unwrap(),
                paused_until: Mutex::new(None),
                timeout: Duration::from_millis(200),
            },
            stats: CacheStats::default(),
            metrics: None,
        };
        let (a, d) = (repo("a"), digest(b"x"));
        cache.remember_blob(&a, &d, 1).await;
        for _ in 0..20 {
            assert_eq!(cache.blob_size(&a, &d).await, None);
        }
        // Only the first operation went to Redis; the rest were skipped during the pause.
        assert_eq!(cache.stats.errors.load(Ordering::Relaxed), 1);
        assert_eq!(cache.stats.misses.load(Ordering::Relaxed), 20);
    }
}
