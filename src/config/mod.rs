//! Configuration: CNCF distribution's file layout, loaded with the `config` crate, with every key
//! overridable by `REGISTRY_<SECTION>_<KEY>` environment variables.
//!
//! Sections berth does not implement are refused when they would change security (an unknown
//! `auth` method: serving without it would silently open the registry) and reported otherwise.

use std::collections::HashMap;
use std::path::{Path, PathBuf};

use config::{Environment, File, FileFormat};
use schemars::JsonSchema;
use serde::Deserialize;
use thiserror::Error;

mod auth;
mod health;
mod http;
pub mod keys;
mod logs;
mod notifications;
mod redis;
mod storage;
mod uploads;
mod values;

pub use auth::*;
pub use health::*;
pub use http::*;
pub use logs::*;
pub use notifications::*;
pub use redis::*;
pub use storage::*;
pub use uploads::*;
pub use values::nets::parse as parse_net;

/// The configuration compiled into the binary: the repository's `config.yml`.
pub const DEFAULT_CONFIG: &str = include_str!("../../config.yml");

#[derive(Debug, Error)]
pub enum ConfigError {
    #[error("configuration: {0}")]
    Load(#[from] config::ConfigError),
    #[error("configuration key {key}: {reason}")]
    Invalid { key: &'static str, reason: String },
    /// Keys that look misspelt, or that berth cannot safely ignore: serving anyway could mean
    /// plain HTTP where TLS was meant, or an open registry where a mirror was.
    #[error("configuration refused (fix or remove these keys):{}", .0.iter().map(|f| format!("\n  {f}")).collect::<String>())]
    Refused(Vec<keys::Finding>),
    #[error("cannot read configuration file {path}: {source}")]
    Read {
        path: PathBuf,
        source: std::io::Error,
    },
}

#[derive(Debug, Clone, Deserialize, JsonSchema)]
pub struct Config {
    #[serde(default)]
    pub version: Option<String>,
    #[serde(default, deserialize_with = "values::section")]
    pub log: LogConfig,
    #[serde(default, deserialize_with = "values::section")]
    pub storage: StorageConfig,
    #[serde(default, deserialize_with = "values::section")]
    pub http: HttpConfig,
    #[serde(default, deserialize_with = "values::section")]
    pub auth: AuthConfig,
    #[serde(default, deserialize_with = "values::section")]
    pub notifications: NotificationsConfig,
    #[serde(default)]
    pub redis: Option<RedisConfig>,
    #[serde(default, deserialize_with = "values::section")]
    pub health: HealthConfig,
    /// berth's own section: caps on open upload sessions.
    #[serde(default, deserialize_with = "values::section")]
    pub uploads: UploadsConfig,
    /// Resolved after loading: which storage driver is configured.
    #[serde(skip)]
    pub driver: Driver,
    /// Keys of the file or the `REGISTRY_*` variables that berth does not read (a typo, or
    /// distribution's key berth does not implement); each is logged as a warning by
    /// [`Config::load`].
    #[serde(skip)]
    pub ignored: Vec<keys::Finding>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Driver {
    #[default]
    Filesystem,
    InMemory,
    S3,
}

/// Environment variables that select rather than set: distribution's `REGISTRY_STORAGE=<driver>`.
const SELECTORS: [&str; 2] = ["REGISTRY_STORAGE", "REGISTRY_AUTH"];

impl Config {
    /// Loads `path`, or the built-in default when `path` is `None`, then applies the
    /// `REGISTRY_…` variables of `env`.
    pub fn load(path: Option<&Path>, env: &HashMap<String, String>) -> Result<Config, ConfigError> {
        let file = match path {
            Some(p) => {
                let text = std::fs::read_to_string(p).map_err(|source| ConfigError::Read {
                    path: p.to_path_buf(),
                    source,
                })?;
                File::from_str(&text, FileFormat::Yaml)
            }
            None => File::from_str(DEFAULT_CONFIG, FileFormat::Yaml),
        };
        let overrides: HashMap<String, String> = env
            .iter()
            .filter(|(k, _)| k.starts_with("REGISTRY_") && !SELECTORS.contains(&k.as_str()))
            .map(|(k, v)| (k.clone(), v.clone()))
            .collect();
        let raw = config::Config::builder()
            .add_source(file)
            .add_source(
                Environment::with_prefix("REGISTRY")
                    .separator("_")
                    .try_parsing(false)
                    .source(Some(overrides)),
            )
            .build()?;
        let mut cfg: Config = raw.clone().try_deserialize()?;
        let (fatal, ignored): (Vec<_>, Vec<_>) = keys::check(&raw.cache)
            .into_iter()
            .partition(keys::Finding::is_fatal);
        if !fatal.is_empty() {
            return Err(ConfigError::Refused(fatal));
        }
        cfg.ignored = ignored;
        for finding in &cfg.ignored {
            log::warn!("configuration: {finding}");
        }
        if cfg.storage.cache.blobdescriptor.is_none() {
            cfg.storage.cache.blobdescriptor = cfg.storage.cache.layerinfo;
        }
        cfg.http.prefix = normalise_prefix(&cfg.http.prefix)?;
        cfg.http.extra_headers()?;

        let present = |key: &str| raw.get::<config::Value>(key).is_ok();
        cfg.driver = match env.get("REGISTRY_STORAGE").map(String::as_str) {
            Some("filesystem") => Driver::Filesystem,
            Some("inmemory") => Driver::InMemory,
            Some("s3") => Driver::S3,
            Some(other) => {
                return Err(ConfigError::Invalid {
                    key: "storage",
                    reason: format!("driver {other:?} is not supported (filesystem, inmemory, s3)"),
                })
            }
            None => {
                let drivers: Vec<&str> = [
                    "filesystem",
                    "inmemory",
                    "s3",
                    "azure",
                    "gcs",
                    "swift",
                    "oss",
                ]
                .into_iter()
                .filter(|d| present(&format!("storage.{d}")))
                .collect();
                match drivers.as_slice() {
                    [] | ["filesystem"] => Driver::Filesystem,
                    ["inmemory"] => Driver::InMemory,
                    ["s3"] => Driver::S3,
                    [one] => {
                        return Err(ConfigError::Invalid {
                            key: "storage",
                            reason: format!(
                                "driver {one:?} is not supported yet (filesystem, inmemory, s3)"
                            ),
                        })
                    }
                    many => {
                        return Err(ConfigError::Invalid {
                            key: "storage",
                            reason: format!(
                                "exactly one storage driver may be configured, found {}",
                                many.join(", ")
                            ),
                        })
                    }
                }
            }
        };
        if cfg.driver == Driver::Filesystem && cfg.storage.filesystem.is_none() {
            cfg.storage.filesystem = Some(FilesystemConfig {
                rootdirectory: default_root(),
                fsync: true,
                dropcache: false,
            });
        }
        if cfg.driver == Driver::S3 {
            let s3 = cfg.storage.s3.as_ref().ok_or(ConfigError::Invalid {
                key: "storage.s3",
                reason: "the s3 driver needs at least storage.s3.bucket".into(),
            })?;
            if s3.bucket.is_empty() {
                return Err(ConfigError::Invalid {
                    key: "storage.s3.bucket",
                    reason: "must name a bucket".into(),
                });
            }
            if s3.chunksize < S3_MIN_PART {
                return Err(ConfigError::Invalid {
                    key: "storage.s3.chunksize",
                    reason: format!(
                        "{} is below S3's minimum part size ({S3_MIN_PART})",
                        s3.chunksize
                    ),
                });
            }
            s3.check_multipart_copy()?;
        }
        cfg.select_auth(env.get("REGISTRY_AUTH").map(String::as_str), &raw)?;
        if let Some(tls) = &cfg.http.tls {
            if let Some(min) = &tls.minimumtls {
                if !["tls1.2", "tls1.3"].contains(&min.as_str()) {
                    return Err(ConfigError::Invalid {
                        key: "http.tls.minimumtls",
                        reason: format!("{min:?}: berth accepts tls1.2 (the floor) or tls1.3"),
                    });
                }
            }
        }
        if cfg.storage.cache.blobdescriptor == Some(BlobDescriptorCache::Redis)
            && cfg.redis.is_none()
        {
            return Err(ConfigError::Invalid {
                key: "storage.cache.blobdescriptor",
                reason: "redis needs the redis section (redis.addr)".into(),
            });
        }
        let mut names = std::collections::HashSet::new();
        for endpoint in &cfg.notifications.endpoints {
            let invalid = |reason: String| ConfigError::Invalid {
                key: "notifications.endpoints",
                reason,
            };
            if endpoint.name.trim().is_empty() || !names.insert(endpoint.name.as_str()) {
                return Err(invalid(format!(
                    "every endpoint needs a name of its own ({:?})",
                    endpoint.name
                )));
            }
            let url = reqwest::Url::parse(&endpoint.url)
                .map_err(|e| invalid(format!("{}: url: {e}", endpoint.name)))?;
            if !matches!(url.scheme(), "http" | "https") {
                return Err(invalid(format!(
                    "{}: url {:?} must be http or https",
                    endpoint.name,
                    endpoint.display_url()
                )));
            }
        }
        if cfg.http.maxconnections == 0 {
            return Err(ConfigError::Invalid {
                key: "http.maxconnections",
                reason: "must be at least 1".into(),
            });
        }
        if cfg.uploads.idletimeout.is_zero() {
            return Err(ConfigError::Invalid {
                key: "uploads.idletimeout",
                reason: "must be longer than 0s (it would stop counting every session at once)"
                    .into(),
            });
        }
        cfg.http.socket_addr()?;
        Ok(cfg)
    }
}

impl Config {
    /// Keeps the authentication methods `selector` (`REGISTRY_AUTH`) names, and refuses what
    /// berth cannot honour: an unknown method, or two methods that do not form berth's issuer.
    fn select_auth(
        &mut self,
        selector: Option<&str>,
        raw: &config::Config,
    ) -> Result<(), ConfigError> {
        let invalid = |reason: String| ConfigError::Invalid {
            key: "auth",
            reason,
        };
        match selector {
            None | Some("") => {}
            Some("htpasswd") => {
                if self.auth.htpasswd.is_none() {
                    return Err(invalid(
                        "REGISTRY_AUTH=htpasswd but no auth.htpasswd (REGISTRY_AUTH_HTPASSWD_PATH) \
                         is configured: refusing to serve an open registry"
                            .into(),
                    ));
                }
                self.auth.token = None;
            }
            Some("token") => {
                if self.auth.token.is_none() {
                    return Err(invalid(
                        "REGISTRY_AUTH=token but no auth.token is configured: refusing to serve \
                         an open registry"
                            .into(),
                    ));
                }
            }
            Some("none") => {
                self.auth.htpasswd = None;
                self.auth.token = None;
            }
            Some(other) => {
                return Err(invalid(format!(
                    "REGISTRY_AUTH={other:?} is not supported (htpasswd, token, none)"
                )))
            }
        }
        if let Ok(config::ValueKind::Table(methods)) =
            raw.get::<config::Value>("auth").map(|v| v.kind)
        {
            for (name, value) in methods {
                let known = [
                    "htpasswd",
                    "token",
                    "access",
                    "failedloginsperminute",
                    "tokenrequestsperminute",
                ];
                if !known.contains(&name.as_str()) && !is_nil(value) {
                    return Err(invalid(format!(
                        "method {name:?} is not supported (htpasswd, token); refusing to serve an \
                         open registry where a protected one was configured"
                    )));
                }
            }
        }
        if let Some(token) = &self.auth.token {
            let realm_path = token
                .realm
                .strip_prefix("https://")
                .or_else(|| token.realm.strip_prefix("http://"))
                .map(|rest| rest.find('/').map_or("/", |i| &rest[i..]));
            match realm_path {
                None => {
                    return Err(ConfigError::Invalid {
                        key: "auth.token.realm",
                        reason: format!(
                            "{:?} must be an absolute http(s) URL: clients are sent there",
                            token.realm
                        ),
                    })
                }
                Some(path) if path == "/v2" || path.starts_with("/v2/") => {
                    return Err(ConfigError::Invalid {
                        key: "auth.token.realm",
                        reason: format!("{:?}: the path must not be under /v2/", token.realm),
                    })
                }
                Some(_) => {}
            }
            if self.auth.htpasswd.is_some() && token.signingkey.is_none() {
                return Err(invalid(
                    "htpasswd and token together need auth.token.signingkey (berth as its own \
                     token server); otherwise configure exactly one"
                        .into(),
                ));
            }
            if token.signingkey.is_some() && self.auth.htpasswd.is_none() {
                return Err(invalid(
                    "auth.token.signingkey makes berth a token server for its htpasswd users: \
                     configure auth.htpasswd too"
                        .into(),
                ));
            }
            if token.rootcertbundle.is_none() && token.jwks.is_none() && token.signingkey.is_none()
            {
                return Err(ConfigError::Invalid {
                    key: "auth.token",
                    reason:
                        "needs rootcertbundle, jwks or signingkey: the keys tokens are signed with"
                            .into(),
                });
            }
        }
        let external_tokens = self
            .auth
            .token
            .as_ref()
            .is_some_and(|t| t.signingkey.is_none());
        if self.auth.access.is_some() && external_tokens {
            return Err(ConfigError::Invalid {
                key: "auth.access",
                reason: "with an external token server, the tokens' scopes decide what a caller \
                         may do; access rules apply to htpasswd logins and berth's own tokens"
                    .into(),
            });
        }
        if self.auth.access.is_some() && !self.auth.enabled() {
            return Err(ConfigError::Invalid {
                key: "auth.access",
                reason: "access rules need a login method (auth.htpasswd or auth.token)".into(),
            });
        }
        Ok(())
    }
}

/// distribution's `http.prefix` (`/my/registry/`) as berth keeps it: `/my/registry`, or empty for
/// the root. The slashes distribution requires are optional.
fn normalise_prefix(prefix: &str) -> Result<String, ConfigError> {
    let trimmed = prefix.trim().trim_matches('/');
    if trimmed.is_empty() {
        return Ok(String::new());
    }
    let invalid = |reason: String| ConfigError::Invalid {
        key: "http.prefix",
        reason,
    };
    // Requests' paths arrive percent-encoded: only characters that stay as they are can match.
    if trimmed
        .chars()
        .any(|c| !(c.is_ascii_alphanumeric() || "/-._~!$&'()*+,;=:@".contains(c)))
        || trimmed
            .split('/')
            .any(|part| part.is_empty() || part == "." || part == "..")
    {
        return Err(invalid(format!(
            "{prefix:?} must be a plain path such as /my/registry/"
        )));
    }
    if trimmed.split('/').any(|part| part == "v2") {
        return Err(invalid(format!(
            "{prefix:?}: the prefix is the path before /v2/, without it"
        )));
    }
    Ok(format!("/{trimmed}"))
}

fn is_nil(v: config::Value) -> bool {
    matches!(v.kind, config::ValueKind::Nil)
}

#[cfg(test)]
mod tests;

values::default_is_empty_section!(
    Config,
    HealthConfig,
    StorageHealthConfig,
    AuthConfig,
    StorageConfig,
    CacheConfig,
    RedirectConfig,
    MaintenanceConfig,
    ReadOnlyConfig,
    UploadPurgingConfig,
    DeleteConfig,
    NotificationsConfig,
    IgnoreConfig,
    UploadsConfig,
    RedisPoolConfig,
    PrometheusConfig,
    HttpConfig,
    LogConfig,
    AccessLogConfig,
);
