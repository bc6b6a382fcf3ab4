//! The connection to the configured Redis (the `redis` section), shared by the blob-descriptor
//! cache and the upload locks.

use std::time::Duration;

use redis::aio::ConnectionManager;

use crate::config::RedisConfig;

/// A lazily connecting, self-reconnecting Redis connection for `config`.
pub fn connect(config: &RedisConfig) -> Result<ConnectionManager, String> {
    let (host, port) = config
        .addr
        .rsplit_once(':')
        .and_then(|(h, p)| Some((h.trim_matches(['[', ']']), p.parse::<u16>().ok()?)))
        .filter(|(host, _)| !host.contains('@'))
        .ok_or_else(|| {
            // Not echoed: a URL-style address may carry the password.
            "redis.addr is not host:port (a password goes in redis.password)".to_string()
        })?;
    let mut settings = redis::RedisConnectionInfo::default().set_db(config.db);
    if let Some(password) = config.password.as_deref().filter(|p| !p.is_empty()) {
        settings = settings.set_password(password);
    }
    let info = redis::IntoConnectionInfo::into_connection_info(redis::ConnectionAddr::Tcp(
        host.to_string(),
        port,
    ))
    .map_err(|e| e.to_string())?
    .set_redis_settings(settings);
    let client = redis::Client::open(info).map_err(|e| e.to_string())?;
    let manager = redis::aio::ConnectionManagerConfig::new()
        .set_connection_timeout(Some(config.dialtimeout))
        .set_response_timeout(Some(config.readtimeout.max(config.writetimeout)))
        // Reconnect attempts are cheap to give up on: the caller falls back to storage.
        .set_number_of_retries(1)
        .set_max_delay(Duration::from_secs(2));
    ConnectionManager::new_lazy_with_config(client, manager).map_err(|e| e.to_string())
}
