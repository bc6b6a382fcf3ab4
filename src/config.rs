//! Configuration: CNCF distribution's file layout, loaded with the `config` crate, with every key
//! overridable by `REGISTRY_<SECTION>_<KEY>` environment variables.
//!
//! Sections berth does not implement yet are refused when they would change security (`auth`,
//! `http.tls`: serving without them would silently open the registry) and reported otherwise.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};

use config::{Environment, File, FileFormat};
use serde::Deserialize;
use thiserror::Error;

/// The configuration compiled into the binary: the repository's `config.yml`.
pub const DEFAULT_CONFIG: &str = include_str!("../config.yml");

#[derive(Debug, Error)]
pub enum ConfigError {
    #[error("configuration: {0}")]
    Load(#[from] config::ConfigError),
    #[error("configuration key {key}: {reason}")]
    Invalid { key: &'static str, reason: String },
    #[error("cannot read configuration file {path}: {source}")]
    Read {
        path: PathBuf,
        source: std::io::Error,
    },
}

#[derive(Debug, Clone, Deserialize, Default)]
pub struct Config {
    #[serde(default)]
    pub version: Option<String>,
    #[serde(default)]
    pub log: LogConfig,
    #[serde(default)]
    pub storage: StorageConfig,
    #[serde(default)]
    pub http: HttpConfig,
    /// Resolved after loading: which storage driver is configured.
    #[serde(skip)]
    pub driver: Driver,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Driver {
    #[default]
    Filesystem,
    InMemory,
}

#[derive(Debug, Clone, Copy, Deserialize, PartialEq, Eq, Default)]
#[serde(rename_all = "lowercase")]
pub enum LogLevel {
    Error,
    Warn,
    #[default]
    Info,
    Debug,
    Trace,
    // distribution's extra levels, mapped onto the nearest.
    Panic,
    Fatal,
}

impl LogLevel {
    pub fn filter(self) -> log::LevelFilter {
        match self {
            LogLevel::Error | LogLevel::Panic | LogLevel::Fatal => log::LevelFilter::Error,
            LogLevel::Warn => log::LevelFilter::Warn,
            LogLevel::Info => log::LevelFilter::Info,
            LogLevel::Debug => log::LevelFilter::Debug,
            LogLevel::Trace => log::LevelFilter::Trace,
        }
    }
}

#[derive(Debug, Clone, Deserialize, Default)]
pub struct LogConfig {
    #[serde(default)]
    pub level: LogLevel,
    #[serde(default)]
    pub accesslog: AccessLogConfig,
}

#[derive(Debug, Clone, Deserialize, Default)]
pub struct AccessLogConfig {
    #[serde(default)]
    pub disabled: bool,
}

#[derive(Debug, Clone, Deserialize, Default)]
pub struct StorageConfig {
    #[serde(default)]
    pub filesystem: Option<FilesystemConfig>,
    #[serde(default)]
    pub delete: DeleteConfig,
}

#[derive(Debug, Clone, Deserialize)]
pub struct FilesystemConfig {
    #[serde(default = "default_root")]
    pub rootdirectory: PathBuf,
    /// berth's own key: sync data and directory entries before a write is acknowledged.
    #[serde(default = "yes")]
    pub fsync: bool,
}

fn default_root() -> PathBuf {
    PathBuf::from("/var/lib/registry")
}

fn yes() -> bool {
    true
}

#[derive(Debug, Clone, Deserialize, Default)]
pub struct DeleteConfig {
    #[serde(default)]
    pub enabled: bool,
}

#[derive(Debug, Clone, Deserialize)]
pub struct HttpConfig {
    #[serde(default = "default_addr")]
    pub addr: String,
    /// The externally visible base URL (`https://registry.example.com`) used in `Location`.
    #[serde(default)]
    pub host: Option<String>,
    /// Answer `Location` headers as paths rather than absolute URLs.
    #[serde(default)]
    pub relativeurls: bool,
}

impl Default for HttpConfig {
    fn default() -> Self {
        HttpConfig {
            addr: default_addr(),
            host: None,
            relativeurls: false,
        }
    }
}

fn default_addr() -> String {
    ":5000".to_string()
}

impl HttpConfig {
    /// The socket address to bind: distribution's `:5000` form means every interface.
    pub fn socket_addr(&self) -> Result<SocketAddr, ConfigError> {
        let addr = if self.addr.starts_with(':') {
            format!("0.0.0.0{}", self.addr)
        } else {
            self.addr.clone()
        };
        addr.parse().map_err(|e| ConfigError::Invalid {
            key: "http.addr",
            reason: format!("{:?} is not host:port ({e})", self.addr),
        })
    }
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
                    .try_parsing(true)
                    .source(Some(overrides)),
            )
            .build()?;
        let mut cfg: Config = raw.clone().try_deserialize()?;

        let present = |key: &str| raw.get::<config::Value>(key).is_ok();
        cfg.driver = match env.get("REGISTRY_STORAGE").map(String::as_str) {
            Some("filesystem") => Driver::Filesystem,
            Some("inmemory") => Driver::InMemory,
            Some(other) => {
                return Err(ConfigError::Invalid {
                    key: "storage",
                    reason: format!("driver {other:?} is not supported (filesystem, inmemory)"),
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
                    [one] => {
                        return Err(ConfigError::Invalid {
                            key: "storage",
                            reason: format!(
                                "driver {one:?} is not supported yet (filesystem, inmemory)"
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
            });
        }
        let auth_selected = env.contains_key("REGISTRY_AUTH");
        if auth_selected
            || present("auth") && !raw.get::<config::Value>("auth").map(is_nil).unwrap_or(true)
        {
            return Err(ConfigError::Invalid {
                key: "auth",
                reason: "authentication is not implemented in this version of berth; refusing to \
                         serve an open registry where a protected one was configured"
                    .into(),
            });
        }
        if present("http.tls")
            && !raw
                .get::<config::Value>("http.tls")
                .map(is_nil)
                .unwrap_or(true)
        {
            return Err(ConfigError::Invalid {
                key: "http.tls",
                reason: "TLS is not implemented in this version of berth; terminate TLS in a \
                         reverse proxy or remove the section"
                    .into(),
            });
        }
        for section in ["notifications", "redis", "health", "proxy", "validation"] {
            if present(section) {
                log::warn!(
                    "configuration section {section:?} is not implemented yet and is ignored"
                );
            }
        }
        cfg.http.socket_addr()?;
        Ok(cfg)
    }
}

fn is_nil(v: config::Value) -> bool {
    matches!(v.kind, config::ValueKind::Nil)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn env(pairs: &[(&str, &str)]) -> HashMap<String, String> {
        pairs
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect()
    }

    fn from_yaml(yaml: &str, vars: &[(&str, &str)]) -> Result<Config, ConfigError> {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("config.yml");
        std::fs::write(&path, yaml).unwrap();
        Config::load(Some(&path), &env(vars))
    }

    #[test]
    fn the_default_config_loads() {
        let cfg = Config::load(None, &env(&[])).unwrap();
        assert_eq!(cfg.driver, Driver::Filesystem);
        assert_eq!(
            cfg.storage.filesystem.unwrap().rootdirectory,
            PathBuf::from("./data")
        );
        assert_eq!(
            cfg.http.socket_addr().unwrap().to_string(),
            "127.0.0.1:5000"
        );
    }

    #[test]
    fn environment_overrides_keys() {
        let cfg = Config::load(
            None,
            &env(&[
                ("REGISTRY_HTTP_ADDR", ":5001"),
                ("REGISTRY_STORAGE_FILESYSTEM_ROOTDIRECTORY", "/srv/reg"),
                ("REGISTRY_STORAGE_DELETE_ENABLED", "true"),
                ("REGISTRY_LOG_LEVEL", "debug"),
            ]),
        )
        .unwrap();
        assert_eq!(cfg.http.socket_addr().unwrap().to_string(), "0.0.0.0:5001");
        assert_eq!(
            cfg.storage.filesystem.unwrap().rootdirectory,
            PathBuf::from("/srv/reg")
        );
        assert!(cfg.storage.delete.enabled);
        assert_eq!(cfg.log.level, LogLevel::Debug);
    }

    #[test]
    fn distribution_style_file_with_inmemory() {
        let cfg = from_yaml(
            "version: 0.1\nlog:\n  level: warn\nstorage:\n  inmemory:\n  delete:\n    enabled: true\nhttp:\n  addr: 127.0.0.1:0\n",
            &[],
        )
        .unwrap();
        assert_eq!(cfg.driver, Driver::InMemory);
        assert!(cfg.storage.delete.enabled);
    }

    #[test]
    fn driver_selector_variable() {
        let cfg = Config::load(None, &env(&[("REGISTRY_STORAGE", "inmemory")])).unwrap();
        assert_eq!(cfg.driver, Driver::InMemory);
    }

    #[test]
    fn bad_values_name_their_key() {
        let err = from_yaml("storage:\n  delete:\n    enabled: maybe\n", &[]).unwrap_err();
        assert!(err.to_string().contains("storage.delete.enabled"), "{err}");
        let err = Config::load(None, &env(&[("REGISTRY_HTTP_ADDR", "nonsense")])).unwrap_err();
        assert!(err.to_string().contains("http.addr"), "{err}");
        let err = from_yaml("log:\n  level: loud\n", &[]).unwrap_err();
        assert!(err.to_string().contains("log.level"), "{err}");
    }

    #[test]
    fn refuses_to_ignore_security_sections() {
        let err = from_yaml("auth:\n  htpasswd:\n    realm: r\n    path: /x\n", &[]).unwrap_err();
        assert!(err.to_string().contains("auth"), "{err}");
        let err = from_yaml(
            "storage:\n  filesystem:\n    rootdirectory: /x\n  inmemory:\n",
            &[],
        )
        .unwrap_err();
        assert!(err.to_string().contains("exactly one"), "{err}");
    }
}
