//! `redis`: the server of the Redis blob-descriptor cache, distribution's keys.

use schemars::JsonSchema;
use serde::Deserialize;

use super::values::duration;

/// `redis`: distribution's keys.
#[derive(Clone, Deserialize, JsonSchema)]
pub struct RedisConfig {
    /// `host:port`
    pub addr: String,
    #[serde(default)]
    pub password: Option<String>,
    #[serde(default)]
    pub db: i64,
    #[schemars(with = "String")]
    #[serde(default = "default_redis_timeout", with = "duration")]
    pub dialtimeout: std::time::Duration,
    #[schemars(with = "String")]
    #[serde(default = "default_redis_timeout", with = "duration")]
    pub readtimeout: std::time::Duration,
    #[schemars(with = "String")]
    #[serde(default = "default_redis_timeout", with = "duration")]
    pub writetimeout: std::time::Duration,
    #[serde(default, deserialize_with = "super::values::section")]
    pub pool: RedisPoolConfig,
}

/// The password is never printed.
impl std::fmt::Debug for RedisConfig {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RedisConfig")
            .field("addr", &self.addr)
            .field("db", &self.db)
            .field("pool", &self.pool)
            .finish_non_exhaustive()
    }
}

fn default_redis_timeout() -> std::time::Duration {
    std::time::Duration::from_millis(500)
}

#[derive(Debug, Clone, Deserialize, JsonSchema)]
pub struct RedisPoolConfig {
    #[serde(default = "default_pool_maxidle")]
    pub maxidle: usize,
    #[serde(default = "default_pool_maxactive")]
    pub maxactive: usize,
    #[schemars(with = "String")]
    #[serde(default = "default_pool_idletimeout", with = "duration")]
    pub idletimeout: std::time::Duration,
}

fn default_pool_maxidle() -> usize {
    16
}

fn default_pool_maxactive() -> usize {
    64
}

fn default_pool_idletimeout() -> std::time::Duration {
    std::time::Duration::from_secs(300)
}
