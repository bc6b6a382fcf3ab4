//! Configuration: CNCF distribution's file layout, loaded with the `config` crate, with every key
//! overridable by `REGISTRY_<SECTION>_<KEY>` environment variables.
//!
//! Sections berth does not implement are refused when they would change security (an unknown
//! `auth` method: serving without it would silently open the registry) and reported otherwise.

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
    #[serde(default)]
    pub auth: AuthConfig,
    #[serde(default)]
    pub notifications: NotificationsConfig,
    #[serde(default)]
    pub redis: Option<RedisConfig>,
    #[serde(default)]
    pub health: HealthConfig,
    /// berth's own section: caps on open upload sessions.
    #[serde(default)]
    pub uploads: UploadsConfig,
    /// Resolved after loading: which storage driver is configured.
    #[serde(skip)]
    pub driver: Driver,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Driver {
    #[default]
    Filesystem,
    InMemory,
    S3,
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
    /// `text` (the default) or `json`: one JSON object per line.
    #[serde(default)]
    pub formatter: LogFormatter,
    /// Fields added to every log line (`environment: staging`).
    #[serde(default)]
    pub fields: std::collections::BTreeMap<String, String>,
}

#[derive(Debug, Clone, Copy, Deserialize, PartialEq, Eq, Default)]
#[serde(rename_all = "lowercase")]
pub enum LogFormatter {
    #[default]
    Text,
    Json,
    /// distribution's logstash formatter: written as JSON.
    Logstash,
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
    pub s3: Option<S3Config>,
    #[serde(default)]
    pub delete: DeleteConfig,
    #[serde(default)]
    pub redirect: RedirectConfig,
    #[serde(default)]
    pub maintenance: MaintenanceConfig,
    #[serde(default)]
    pub cache: CacheConfig,
}

/// `storage.cache`: where blob descriptors (digest → size, media type; which repositories link
/// a blob) are cached.
#[derive(Debug, Clone, Deserialize, Default)]
pub struct CacheConfig {
    /// `inmemory` or `redis` (which needs the `redis` section); none when absent.
    #[serde(default)]
    pub blobdescriptor: Option<BlobDescriptorCache>,
    /// Entries kept by the in-memory cache.
    #[serde(default = "default_blobdescriptorsize")]
    pub blobdescriptorsize: usize,
}

fn default_blobdescriptorsize() -> usize {
    10_000
}

#[derive(Debug, Clone, Copy, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "lowercase")]
pub enum BlobDescriptorCache {
    Inmemory,
    Redis,
}

/// `redis`: distribution's keys.
#[derive(Clone, Deserialize)]
pub struct RedisConfig {
    /// `host:port`
    pub addr: String,
    #[serde(default)]
    pub password: Option<String>,
    #[serde(default)]
    pub db: i64,
    #[serde(default = "default_redis_timeout", with = "duration")]
    pub dialtimeout: std::time::Duration,
    #[serde(default = "default_redis_timeout", with = "duration")]
    pub readtimeout: std::time::Duration,
    #[serde(default = "default_redis_timeout", with = "duration")]
    pub writetimeout: std::time::Duration,
    #[serde(default)]
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

#[derive(Debug, Clone, Deserialize)]
pub struct RedisPoolConfig {
    #[serde(default = "default_pool_maxidle")]
    pub maxidle: usize,
    #[serde(default = "default_pool_maxactive")]
    pub maxactive: usize,
    #[serde(default = "default_pool_idletimeout", with = "duration")]
    pub idletimeout: std::time::Duration,
}

impl Default for RedisPoolConfig {
    fn default() -> Self {
        RedisPoolConfig {
            maxidle: default_pool_maxidle(),
            maxactive: default_pool_maxactive(),
            idletimeout: default_pool_idletimeout(),
        }
    }
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

/// `notifications`: webhook endpoints that receive distribution's event envelopes.
#[derive(Debug, Clone, Deserialize, Default)]
pub struct NotificationsConfig {
    #[serde(default)]
    pub endpoints: Vec<EndpointConfig>,
    /// berth's own key: a local directory where events wait until their endpoint accepts them,
    /// across restarts. Default: `<rootdirectory>/_berth/notifications` on local disk,
    /// `./berth-notifications` with S3, none (memory only) with in-memory storage.
    #[serde(default)]
    pub spooldir: Option<PathBuf>,
}

#[derive(Debug, Clone, Deserialize)]
pub struct EndpointConfig {
    pub name: String,
    pub url: String,
    /// Extra request headers; values are lists, as in distribution.
    #[serde(default)]
    pub headers: std::collections::BTreeMap<String, Vec<String>>,
    #[serde(default = "default_notify_timeout", with = "duration")]
    pub timeout: std::time::Duration,
    /// Consecutive failures before backing off.
    #[serde(default = "default_notify_threshold")]
    pub threshold: u32,
    #[serde(default = "default_notify_backoff", with = "duration")]
    pub backoff: std::time::Duration,
    #[serde(default)]
    pub disabled: bool,
    /// distribution's older key for `ignore.mediatypes`.
    #[serde(default)]
    pub ignoredmediatypes: Vec<String>,
    #[serde(default)]
    pub ignore: IgnoreConfig,
}

impl EndpointConfig {
    /// The endpoint's URL as it may be logged: without user info, query or fragment, which is
    /// where webhook URLs carry their secrets (`https://user:secret@host/events?token=…`).
    pub fn display_url(&self) -> String {
        display_url(&self.url)
    }
}

/// `url` without user info, query or fragment; an unparsable one is not shown at all (it may
/// hold a secret just the same).
pub fn display_url(url: &str) -> String {
    match reqwest::Url::parse(url) {
        Ok(mut url) => {
            let _ = url.set_username("");
            let _ = url.set_password(None);
            url.set_query(None);
            url.set_fragment(None);
            url.to_string()
        }
        Err(_) => "(an unparsable URL)".to_string(),
    }
}

#[derive(Debug, Clone, Deserialize, Default)]
pub struct IgnoreConfig {
    #[serde(default)]
    pub mediatypes: Vec<String>,
    #[serde(default)]
    pub actions: Vec<String>,
}

fn default_notify_timeout() -> std::time::Duration {
    std::time::Duration::from_secs(1)
}

fn default_notify_threshold() -> u32 {
    10
}

fn default_notify_backoff() -> std::time::Duration {
    std::time::Duration::from_secs(1)
}

/// `health`: background checks reported on the debug listener and by `/v2/`.
#[derive(Debug, Clone, Deserialize, Default)]
pub struct HealthConfig {
    #[serde(default)]
    pub storagedriver: StorageHealthConfig,
}

#[derive(Debug, Clone, Deserialize)]
pub struct StorageHealthConfig {
    #[serde(default)]
    pub enabled: bool,
    #[serde(default = "default_health_interval", with = "duration")]
    pub interval: std::time::Duration,
    /// Consecutive failures before the backend is reported unhealthy.
    #[serde(default = "default_health_threshold")]
    pub threshold: u32,
}

impl Default for StorageHealthConfig {
    fn default() -> Self {
        StorageHealthConfig {
            enabled: false,
            interval: default_health_interval(),
            threshold: default_health_threshold(),
        }
    }
}

fn default_health_interval() -> std::time::Duration {
    std::time::Duration::from_secs(10)
}

fn default_health_threshold() -> u32 {
    3
}

/// distribution's `storage.s3` keys. Credentials left out here come from the usual AWS
/// environment variables (`AWS_ACCESS_KEY_ID`, `AWS_SECRET_ACCESS_KEY`, `AWS_SESSION_TOKEN`, …).
#[derive(Clone, Deserialize, Default)]
pub struct S3Config {
    #[serde(default)]
    pub accesskey: Option<String>,
    #[serde(default)]
    pub secretkey: Option<String>,
    #[serde(default)]
    pub sessiontoken: Option<String>,
    #[serde(default)]
    pub region: Option<String>,
    /// An S3-compatible endpoint (`http://127.0.0.1:9000`); AWS's own when absent.
    #[serde(default)]
    pub regionendpoint: Option<String>,
    pub bucket: String,
    /// A prefix inside the bucket under which everything is kept.
    #[serde(default)]
    pub rootdirectory: Option<String>,
    /// Address the bucket in the path (`endpoint/bucket/key`) rather than as a subdomain.
    #[serde(default)]
    pub forcepathstyle: bool,
    /// Use HTTPS for an endpoint given without a scheme.
    #[serde(default = "yes")]
    pub secure: bool,
    /// Accept any TLS certificate from the endpoint.
    #[serde(default)]
    pub skipverify: bool,
    /// Multipart part size in bytes (at least 5 MiB, S3's minimum for all parts but the last).
    #[serde(default = "default_chunksize")]
    pub chunksize: u64,
}

/// Secrets are never printed, not even in debug output.
impl std::fmt::Debug for S3Config {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("S3Config")
            .field("region", &self.region)
            .field("regionendpoint", &self.regionendpoint)
            .field("bucket", &self.bucket)
            .field("rootdirectory", &self.rootdirectory)
            .field("forcepathstyle", &self.forcepathstyle)
            .field("secure", &self.secure)
            .field("chunksize", &self.chunksize)
            .finish_non_exhaustive()
    }
}

/// S3's minimum size of a multipart part other than the last.
pub const S3_MIN_PART: u64 = 5 * 1024 * 1024;

fn default_chunksize() -> u64 {
    10 * 1024 * 1024
}

/// `storage.redirect`: whether blob downloads may be redirected to the backend (presigned URLs).
#[derive(Debug, Clone, Deserialize, Default)]
pub struct RedirectConfig {
    #[serde(default)]
    pub disable: bool,
}

#[derive(Debug, Clone, Deserialize, Default)]
pub struct MaintenanceConfig {
    #[serde(default)]
    pub uploadpurging: UploadPurgingConfig,
    #[serde(default)]
    pub readonly: ReadOnlyConfig,
}

/// `storage.maintenance.readonly`: refuse every write (pushes, deletes) with a clear error.
#[derive(Debug, Clone, Deserialize, Default)]
pub struct ReadOnlyConfig {
    #[serde(default)]
    pub enabled: bool,
}

/// `storage.maintenance.uploadpurging`: removal of uploads abandoned for longer than `age`.
#[derive(Debug, Clone, Deserialize)]
pub struct UploadPurgingConfig {
    #[serde(default = "yes")]
    pub enabled: bool,
    #[serde(default = "default_purge_age", with = "duration")]
    pub age: std::time::Duration,
    #[serde(default = "default_purge_interval", with = "duration")]
    pub interval: std::time::Duration,
    #[serde(default)]
    pub dryrun: bool,
}

impl Default for UploadPurgingConfig {
    fn default() -> Self {
        UploadPurgingConfig {
            enabled: true,
            age: default_purge_age(),
            interval: default_purge_interval(),
            dryrun: false,
        }
    }
}

fn default_purge_age() -> std::time::Duration {
    std::time::Duration::from_secs(168 * 3600)
}

fn default_purge_interval() -> std::time::Duration {
    std::time::Duration::from_secs(24 * 3600)
}

/// Durations written as Go does (`168h`, `90m`, `1h30m`, `500ms`, `10s`).
mod duration {
    use serde::{Deserialize, Deserializer};
    use std::time::Duration;

    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<Duration, D::Error> {
        let text = String::deserialize(d)?;
        parse(&text).ok_or_else(|| {
            serde::de::Error::custom(format!(
                "{text:?} is not a duration such as 168h, 30m, 10s or 500ms"
            ))
        })
    }

    pub fn parse(text: &str) -> Option<Duration> {
        let mut total = Duration::ZERO;
        let mut rest = text.trim();
        if rest.is_empty() {
            return None;
        }
        while !rest.is_empty() {
            let digits = rest
                .find(|c: char| !c.is_ascii_digit() && c != '.')
                .unwrap_or(rest.len());
            let value: f64 = rest[..digits].parse().ok()?;
            rest = &rest[digits..];
            let unit_len = rest
                .find(|c: char| c.is_ascii_digit())
                .unwrap_or(rest.len());
            let seconds = match &rest[..unit_len] {
                "h" => 3600.0,
                "m" => 60.0,
                "s" => 1.0,
                "ms" => 0.001,
                "us" | "µs" => 0.000_001,
                "ns" => 0.000_000_001,
                _ => return None,
            };
            rest = &rest[unit_len..];
            total += Duration::from_secs_f64(value * seconds);
        }
        Some(total)
    }
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

/// `uploads`: how many upload sessions may be open at once (see `upload::quota`).
#[derive(Debug, Clone, Deserialize)]
pub struct UploadsConfig {
    #[serde(default = "default_uploads_per_repository")]
    pub maxperrepository: usize,
    #[serde(default = "default_uploads_per_user")]
    pub maxperuser: usize,
    /// A session not written to for this long stops counting.
    #[serde(default = "default_upload_idle", with = "duration")]
    pub idletimeout: std::time::Duration,
}

impl Default for UploadsConfig {
    fn default() -> Self {
        UploadsConfig {
            maxperrepository: default_uploads_per_repository(),
            maxperuser: default_uploads_per_user(),
            idletimeout: default_upload_idle(),
        }
    }
}

fn default_uploads_per_repository() -> usize {
    1000
}

fn default_uploads_per_user() -> usize {
    500
}

fn default_upload_idle() -> std::time::Duration {
    std::time::Duration::from_secs(3600)
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
    /// Serve HTTPS (HTTP/2 and HTTP/1.1) instead of plain HTTP.
    #[serde(default)]
    pub tls: Option<TlsConfig>,
    /// berth's own key: a request body that sends nothing for this long is cut off (its bytes
    /// so far are kept; the client can resume).
    #[serde(default = "default_body_idle", with = "duration")]
    pub bodyidletimeout: std::time::Duration,
    /// On SIGTERM/SIGINT: how long in-flight requests may take to finish.
    #[serde(default = "default_drain", with = "duration")]
    pub draintimeout: std::time::Duration,
    /// The debug listener (metrics, health).
    #[serde(default)]
    pub debug: Option<DebugConfig>,
    /// berth's own key: the peers whose `X-Forwarded-*`/`Forwarded` headers are believed (a
    /// list, or one comma-separated string in `REGISTRY_HTTP_TRUSTEDPROXIES`); loopback by
    /// default, `[]` for none.
    #[serde(
        default = "default_trusted_proxies",
        deserialize_with = "nets::deserialize"
    )]
    pub trustedproxies: Vec<ipnet::IpNet>,
    /// berth's own key: which forwarding headers trusted proxies write: `x-forwarded`
    /// (`X-Forwarded-For`/`-Proto`/`-Host`, nginx, HAProxy, Traefik, Envoy) or `forwarded`
    /// (RFC 7239). Only that family is read.
    #[serde(default)]
    pub forwardedheader: ForwardedHeader,
    /// berth's own key: connections served at once, in all (beyond it new ones are closed).
    #[serde(default = "default_max_connections")]
    pub maxconnections: usize,
    /// berth's own key: connections at once from one address (IPv6: one /64); trusted proxies
    /// are exempt.
    #[serde(default = "default_max_connections_per_address")]
    pub maxconnectionsperaddress: usize,
}

/// `http.forwardedheader`.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum ForwardedHeader {
    #[default]
    XForwarded,
    Forwarded,
}

fn default_trusted_proxies() -> Vec<ipnet::IpNet> {
    vec![
        "127.0.0.0/8".parse().expect("a CIDR"),
        "::1/128".parse().expect("a CIDR"),
    ]
}

fn default_max_connections() -> usize {
    4096
}

fn default_max_connections_per_address() -> usize {
    512
}

pub use nets::parse as parse_net;

/// Lists of addresses or CIDR ranges, from YAML lists or one comma-separated string.
mod nets {
    use serde::{Deserialize, Deserializer};

    #[derive(Deserialize)]
    #[serde(untagged)]
    enum OneOrMany {
        Many(Vec<String>),
        One(String),
    }

    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<Vec<ipnet::IpNet>, D::Error> {
        let entries = match OneOrMany::deserialize(d)? {
            OneOrMany::Many(list) => list,
            OneOrMany::One(text) => text
                .split(',')
                .map(str::trim)
                .filter(|s| !s.is_empty())
                .map(str::to_string)
                .collect(),
        };
        entries
            .iter()
            .map(|entry| parse(entry).map_err(serde::de::Error::custom))
            .collect()
    }

    /// `10.0.0.0/8`, or a single address (`10.0.0.5`, `::1`).
    pub fn parse(entry: &str) -> Result<ipnet::IpNet, String> {
        let entry = entry.trim();
        entry
            .parse::<ipnet::IpNet>()
            .or_else(|_| entry.parse::<std::net::IpAddr>().map(ipnet::IpNet::from))
            .map_err(|_| format!("{entry:?} is neither an address nor a CIDR range"))
    }
}

fn default_drain() -> std::time::Duration {
    std::time::Duration::from_secs(30)
}

/// `http.debug`: a second listener for operators.
#[derive(Debug, Clone, Deserialize)]
pub struct DebugConfig {
    /// `host:port` (`:5001` means every interface).
    pub addr: String,
    #[serde(default)]
    pub prometheus: PrometheusConfig,
}

#[derive(Debug, Clone, Deserialize)]
pub struct PrometheusConfig {
    #[serde(default = "yes")]
    pub enabled: bool,
    #[serde(default = "default_metrics_path")]
    pub path: String,
}

impl Default for PrometheusConfig {
    fn default() -> Self {
        PrometheusConfig {
            enabled: true,
            path: default_metrics_path(),
        }
    }
}

fn default_metrics_path() -> String {
    "/metrics".to_string()
}

fn default_body_idle() -> std::time::Duration {
    std::time::Duration::from_secs(60)
}

impl Default for HttpConfig {
    fn default() -> Self {
        HttpConfig {
            addr: default_addr(),
            host: None,
            relativeurls: false,
            tls: None,
            bodyidletimeout: default_body_idle(),
            draintimeout: default_drain(),
            debug: None,
            trustedproxies: default_trusted_proxies(),
            forwardedheader: ForwardedHeader::default(),
            maxconnections: default_max_connections(),
            maxconnectionsperaddress: default_max_connections_per_address(),
        }
    }
}

/// `http.tls`: distribution's keys.
#[derive(Debug, Clone, Deserialize)]
pub struct TlsConfig {
    /// PEM certificate chain: the server certificate first, then intermediates.
    pub certificate: PathBuf,
    /// PEM private key of the certificate.
    pub key: PathBuf,
    /// CA certificates (PEM files) that client certificates must chain to: mutual TLS. A client
    /// without a certificate signed by one of them is refused during the handshake.
    #[serde(default)]
    pub clientcas: Vec<PathBuf>,
    /// `tls1.2` (the default and the floor) or `tls1.3`.
    #[serde(default)]
    pub minimumtls: Option<String>,
    /// TLS 1.2 cipher suites, by OpenSSL's or distribution's (IANA) names (TLS 1.3 suites are
    /// always OpenSSL's defaults); ECDHE with AEAD ciphers only when empty.
    #[serde(default)]
    pub ciphersuites: Vec<String>,
}

/// `auth`: at most one of distribution's methods (`htpasswd`, `token`), or berth's own issuer:
/// `htpasswd` and `token` together with `token.signingkey`, where berth checks the passwords at
/// its `/token` endpoint and hands out the tokens its API then accepts.
#[derive(Debug, Clone, Deserialize, Default)]
pub struct AuthConfig {
    #[serde(default)]
    pub htpasswd: Option<HtpasswdConfig>,
    #[serde(default)]
    pub token: Option<TokenConfig>,
    /// berth's access rules; without them every authenticated user may do everything (as in
    /// distribution) and anonymous users nothing.
    #[serde(default)]
    pub access: Option<Vec<AccessRule>>,
    /// berth's brute-force guard: failed logins allowed per client address per minute before it
    /// is answered `429 TOOMANYREQUESTS`.
    #[serde(default = "default_failed_logins")]
    pub failedloginsperminute: u32,
    /// berth's token server: token requests answered per client address per minute (each costs
    /// a signature) before it is answered `429 TOOMANYREQUESTS`; 0 turns the limit off.
    #[serde(default = "default_token_requests")]
    pub tokenrequestsperminute: u32,
}

fn default_failed_logins() -> u32 {
    10
}

fn default_token_requests() -> u32 {
    600
}

#[derive(Debug, Clone, Deserialize)]
pub struct HtpasswdConfig {
    #[serde(default = "default_realm")]
    pub realm: String,
    pub path: PathBuf,
}

fn default_realm() -> String {
    "berth".to_string()
}

/// `auth.token`: Bearer tokens (JWT) from a token server, per the Docker token specification.
#[derive(Debug, Clone, Deserialize)]
pub struct TokenConfig {
    /// The token server's URL, sent to clients in the challenge.
    pub realm: String,
    /// The `aud` tokens must carry: this registry's service name.
    pub service: String,
    /// The `iss` tokens must carry.
    pub issuer: String,
    /// PEM certificates whose keys (by `kid`, or as roots of the token's `x5c` chain) sign tokens.
    #[serde(default)]
    pub rootcertbundle: Option<PathBuf>,
    /// Every `rootcertbundle` certificate is a trust anchor for `x5c` chains, even one that is
    /// not self-signed (an intermediate CA, or the signing certificate itself), as in
    /// distribution. Off: only the self-signed ones are (`REGISTRY_AUTH_TOKEN_PARTIALCHAIN`).
    #[serde(default)]
    pub partialchain: bool,
    /// A JSON Web Key Set whose keys (by `kid`) sign tokens.
    #[serde(default)]
    pub jwks: Option<PathBuf>,
    /// berth as its own token server: the PEM private key (EC P-256 or RSA) it signs with. Its
    /// public key is trusted as well.
    #[serde(default)]
    pub signingkey: Option<PathBuf>,
    /// Lifetime of the tokens berth issues.
    #[serde(default = "default_token_expiration", with = "duration")]
    pub expiration: std::time::Duration,
}

fn default_token_expiration() -> std::time::Duration {
    std::time::Duration::from_secs(300)
}

/// One access rule: `account` (a user name, `*` for any authenticated user, or `anonymous`) may
/// perform `actions` (`pull`, `push`, `delete`, `catalog`) on repositories matching one of
/// `repositories` (globs: `*` matches any run of characters, `/` included).
#[derive(Debug, Clone, Deserialize, PartialEq, Eq)]
pub struct AccessRule {
    pub account: String,
    #[serde(default)]
    pub repositories: Vec<String>,
    pub actions: Vec<String>,
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
        for section in ["proxy", "validation"] {
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

impl AuthConfig {
    /// Whether requests must identify themselves.
    pub fn enabled(&self) -> bool {
        self.htpasswd.is_some() || self.token.is_some()
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
    fn trusted_proxies_and_connection_limits() {
        let cfg = Config::load(None, &env(&[])).unwrap();
        let defaults: Vec<String> = cfg
            .http
            .trustedproxies
            .iter()
            .map(|n| n.to_string())
            .collect();
        assert_eq!(defaults, ["127.0.0.0/8", "::1/128"]);
        assert_eq!(cfg.http.maxconnections, 4096);
        assert_eq!(cfg.http.maxconnectionsperaddress, 512);
        assert_eq!(cfg.uploads.maxperrepository, 1000);
        assert_eq!(cfg.uploads.maxperuser, 500);
        assert_eq!(
            cfg.uploads.idletimeout,
            std::time::Duration::from_secs(3600)
        );
        let cfg = Config::load(
            None,
            &env(&[
                ("REGISTRY_UPLOADS_MAXPERREPOSITORY", "7"),
                ("REGISTRY_UPLOADS_MAXPERUSER", "3"),
                ("REGISTRY_UPLOADS_IDLETIMEOUT", "10m"),
            ]),
        )
        .unwrap();
        assert_eq!(cfg.uploads.maxperrepository, 7);
        assert_eq!(cfg.uploads.maxperuser, 3);
        assert_eq!(cfg.uploads.idletimeout, std::time::Duration::from_secs(600));
        let cfg = Config::load(
            None,
            &env(&[
                ("REGISTRY_HTTP_TRUSTEDPROXIES", "10.0.0.0/8, 192.0.2.7"),
                ("REGISTRY_HTTP_MAXCONNECTIONS", "100"),
                ("REGISTRY_HTTP_MAXCONNECTIONSPERADDRESS", "10"),
            ]),
        )
        .unwrap();
        let set: Vec<String> = cfg
            .http
            .trustedproxies
            .iter()
            .map(|n| n.to_string())
            .collect();
        assert_eq!(set, ["10.0.0.0/8", "192.0.2.7/32"]);
        assert_eq!(cfg.http.maxconnections, 100);
        assert_eq!(cfg.http.maxconnectionsperaddress, 10);
        let cfg = from_yaml("http:\n  trustedproxies: []\n", &[]).unwrap();
        assert!(cfg.http.trustedproxies.is_empty());
        let cfg = from_yaml("http:\n  trustedproxies: ['::1', 172.16.0.0/12]\n", &[]).unwrap();
        assert_eq!(cfg.http.trustedproxies.len(), 2);
        let err = from_yaml("http:\n  trustedproxies: [nginx]\n", &[]).unwrap_err();
        assert!(err.to_string().contains("nginx"), "{err}");
        let cfg = from_yaml("http:\n  forwardedheader: forwarded\n", &[]).unwrap();
        assert_eq!(cfg.http.forwardedheader, ForwardedHeader::Forwarded);
        assert!(from_yaml("http:\n  forwardedheader: x-real-ip\n", &[]).is_err());
        for bad in [
            "http:\n  maxconnections: 0\n",
            "uploads:\n  idletimeout: 0s\n",
        ] {
            assert!(from_yaml(bad, &[]).is_err(), "{bad}");
        }
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
    fn s3_from_distribution_variables() {
        let cfg = Config::load(
            None,
            &env(&[
                ("REGISTRY_STORAGE", "s3"),
                ("REGISTRY_STORAGE_S3_ACCESSKEY", "AKIA1"),
                ("REGISTRY_STORAGE_S3_SECRETKEY", "very-secret"),
                ("REGISTRY_STORAGE_S3_REGION", "eu-west-1"),
                (
                    "REGISTRY_STORAGE_S3_REGIONENDPOINT",
                    "http://127.0.0.1:9000",
                ),
                ("REGISTRY_STORAGE_S3_BUCKET", "images"),
                ("REGISTRY_STORAGE_S3_ROOTDIRECTORY", "/registry"),
                ("REGISTRY_STORAGE_S3_FORCEPATHSTYLE", "true"),
                ("REGISTRY_STORAGE_S3_SECURE", "false"),
                ("REGISTRY_STORAGE_S3_CHUNKSIZE", "8388608"),
            ]),
        )
        .unwrap();
        assert_eq!(cfg.driver, Driver::S3);
        let s3 = cfg.storage.s3.clone().unwrap();
        assert_eq!(s3.bucket, "images");
        assert_eq!(s3.accesskey.as_deref(), Some("AKIA1"));
        assert_eq!(s3.regionendpoint.as_deref(), Some("http://127.0.0.1:9000"));
        assert!(s3.forcepathstyle && !s3.secure && !s3.skipverify);
        assert_eq!(s3.chunksize, 8 << 20);
        assert!(!format!("{cfg:?}").contains("very-secret"));
        let err = Config::load(
            None,
            &env(&[
                ("REGISTRY_STORAGE", "s3"),
                ("REGISTRY_STORAGE_S3_BUCKET", "b"),
                ("REGISTRY_STORAGE_S3_CHUNKSIZE", "1024"),
            ]),
        )
        .unwrap_err();
        assert!(err.to_string().contains("chunksize"), "{err}");
    }

    #[test]
    fn upload_purging_durations() {
        let cfg = from_yaml(
            "storage:\n  filesystem:\n    rootdirectory: /x\n  maintenance:\n    uploadpurging:\n      enabled: true\n      age: 1h30m\n      interval: 90s\n      dryrun: false\n",
            &[],
        )
        .unwrap();
        let purging = cfg.storage.maintenance.uploadpurging;
        assert_eq!(purging.age, std::time::Duration::from_secs(5400));
        assert_eq!(purging.interval, std::time::Duration::from_secs(90));
        let default = Config::load(None, &env(&[])).unwrap();
        assert_eq!(
            default.storage.maintenance.uploadpurging.age,
            std::time::Duration::from_secs(168 * 3600)
        );
        let err = from_yaml(
            "storage:\n  maintenance:\n    uploadpurging:\n      age: soon\n",
            &[],
        )
        .unwrap_err();
        assert!(err.to_string().contains("duration"), "{err}");
    }

    #[test]
    fn auth_and_tls_from_distribution_variables() {
        let cfg = Config::load(
            None,
            &env(&[
                ("REGISTRY_AUTH", "htpasswd"),
                ("REGISTRY_AUTH_HTPASSWD_REALM", "Registry Realm"),
                ("REGISTRY_AUTH_HTPASSWD_PATH", "/auth/htpasswd"),
                ("REGISTRY_HTTP_TLS_CERTIFICATE", "/certs/domain.crt"),
                ("REGISTRY_HTTP_TLS_KEY", "/certs/domain.key"),
            ]),
        )
        .unwrap();
        let htpasswd = cfg.auth.htpasswd.clone().unwrap();
        assert_eq!(htpasswd.realm, "Registry Realm");
        assert_eq!(htpasswd.path, PathBuf::from("/auth/htpasswd"));
        assert!(cfg.auth.enabled() && cfg.auth.token.is_none());
        let tls = cfg.http.tls.unwrap();
        assert_eq!(tls.certificate, PathBuf::from("/certs/domain.crt"));
        assert_eq!(tls.key, PathBuf::from("/certs/domain.key"));
        assert!(tls.clientcas.is_empty());
        let err = from_yaml(
            "http:\n  tls:\n    certificate: /c\n    key: /k\n    minimumtls: tls1.0\n",
            &[],
        )
        .unwrap_err();
        assert!(err.to_string().contains("minimumtls"), "{err}");
    }

    #[test]
    fn token_requests_per_minute_has_a_default_and_a_variable() {
        let yaml = "auth:\n  htpasswd:\n    path: /h\n";
        assert_eq!(
            from_yaml(yaml, &[]).unwrap().auth.tokenrequestsperminute,
            600
        );
        let cfg = from_yaml(yaml, &[("REGISTRY_AUTH_TOKENREQUESTSPERMINUTE", "30")]).unwrap();
        assert_eq!(cfg.auth.tokenrequestsperminute, 30);
    }

    #[test]
    fn token_partial_chains_are_off_unless_set() {
        let yaml = "auth:\n  token:\n    realm: https://auth.example/token\n    service: registry\n    issuer: auth.example\n    rootcertbundle: /certs/bundle.pem\n";
        assert!(
            !from_yaml(yaml, &[])
                .unwrap()
                .auth
                .token
                .unwrap()
                .partialchain
        );
        let cfg = from_yaml(yaml, &[("REGISTRY_AUTH_TOKEN_PARTIALCHAIN", "true")]).unwrap();
        assert!(cfg.auth.token.unwrap().partialchain);
    }

    #[test]
    fn token_auth_and_access_rules() {
        let cfg = from_yaml(
            "auth:\n  token:\n    realm: https://auth.example/token\n    service: registry\n    issuer: auth.example\n    rootcertbundle: /certs/bundle.pem\n",
            &[],
        )
        .unwrap();
        let token = cfg.auth.token.clone().unwrap();
        assert_eq!(token.service, "registry");
        assert_eq!(token.expiration, std::time::Duration::from_secs(300));
        // berth as the token server: htpasswd users, a signing key, access rules.
        let cfg = from_yaml(
            "auth:\n  htpasswd:\n    path: /h\n  token:\n    realm: https://r.example/token\n    service: s\n    issuer: i\n    signingkey: /k.pem\n    expiration: 10m\n  access:\n    - account: ci\n      repositories: ['*']\n      actions: [pull]\n",
            &[],
        )
        .unwrap();
        assert_eq!(cfg.auth.access.unwrap()[0].actions, vec!["pull"]);
        assert_eq!(
            cfg.auth.token.unwrap().expiration,
            std::time::Duration::from_secs(600)
        );
        // Rules beside an external token server would be ignored: refused.
        let err = from_yaml(
            "auth:\n  token:\n    realm: https://a.example/token\n    service: s\n    issuer: i\n    jwks: /j\n  access:\n    - account: a\n      repositories: ['*']\n      actions: [pull]\n",
            &[],
        )
        .unwrap_err();
        assert!(err.to_string().contains("external token server"), "{err}");
        // Realms clients cannot use, or that would shadow the API.
        for realm in ["/token", "https://r.example/v2/token"] {
            let err = from_yaml(
                &format!("auth:\n  token:\n    realm: {realm}\n    service: s\n    issuer: i\n    jwks: /j\n"),
                &[],
            )
            .unwrap_err();
            assert!(err.to_string().contains("auth.token.realm"), "{err}");
        }
        // Selecting a method that is not configured must not open the registry.
        for method in ["htpasswd", "token"] {
            let err = Config::load(None, &env(&[("REGISTRY_AUTH", method)])).unwrap_err();
            assert!(err.to_string().contains("open registry"), "{err}");
        }
        // A token method without keys could accept nothing; two methods must form the issuer.
        let err = from_yaml(
            "auth:\n  token:\n    realm: https://a.example/token\n    service: s\n    issuer: i\n",
            &[],
        )
        .unwrap_err();
        assert!(err.to_string().contains("rootcertbundle"), "{err}");
        let err = from_yaml(
            "auth:\n  htpasswd:\n    path: /h\n  token:\n    realm: https://a.example/token\n    service: s\n    issuer: i\n    jwks: /j\n",
            &[],
        )
        .unwrap_err();
        assert!(err.to_string().contains("signingkey"), "{err}");
        let err = from_yaml(
            "auth:\n  access:\n    - account: a\n      actions: [pull]\n",
            &[],
        )
        .unwrap_err();
        assert!(err.to_string().contains("auth.access"), "{err}");
    }

    #[test]
    fn notification_endpoints() {
        let cfg = from_yaml(
            "notifications:\n  spooldir: /spool\n  endpoints:\n    - name: a\n      url: https://hooks.example/a\n      timeout: 500ms\n      headers:\n        Authorization: [Bearer t]\n      ignore:\n        actions: [pull]\n",
            &[],
        )
        .unwrap();
        let n = &cfg.notifications;
        assert_eq!(n.spooldir.as_deref(), Some(Path::new("/spool")));
        assert_eq!(
            n.endpoints[0].timeout,
            std::time::Duration::from_millis(500)
        );
        assert_eq!(n.endpoints[0].threshold, 10);
        assert_eq!(n.endpoints[0].ignore.actions, ["pull"]);
        for bad in [
            "    - name: a\n      url: not a url\n",
            "    - name: a\n      url: ftp://x/\n",
            "    - name: a\n      url: http://x/\n    - name: a\n      url: http://y/\n",
        ] {
            let err = from_yaml(&format!("notifications:\n  endpoints:\n{bad}"), &[]).unwrap_err();
            assert!(err.to_string().contains("notifications.endpoints"), "{err}");
        }
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
        let err = from_yaml("auth:\n  silly:\n    realm: r\n    service: s\n", &[]).unwrap_err();
        assert!(err.to_string().contains("silly"), "{err}");
        let err = Config::load(None, &env(&[("REGISTRY_AUTH", "ldap")])).unwrap_err();
        assert!(err.to_string().contains("ldap"), "{err}");
        let err = from_yaml(
            "storage:\n  filesystem:\n    rootdirectory: /x\n  inmemory:\n",
            &[],
        )
        .unwrap_err();
        assert!(err.to_string().contains("exactly one"), "{err}");
    }
}
