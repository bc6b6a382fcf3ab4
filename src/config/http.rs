//! `http`: the listener, TLS, the debug listener, trusted proxies and connection limits.

use std::net::SocketAddr;
use std::path::PathBuf;

use schemars::JsonSchema;
use serde::Deserialize;

use super::values::nets;
use super::values::{duration, yes};
use super::ConfigError;

#[derive(Debug, Clone, Deserialize, JsonSchema)]
pub struct HttpConfig {
    #[serde(default = "default_addr")]
    pub addr: String,
    /// The externally visible base URL (`https://registry.example.com`) used in `Location`.
    #[serde(default)]
    pub host: Option<String>,
    /// distribution's `prefix`: the path the API is served under (`/my/registry/` serves
    /// `/my/registry/v2/`), for a proxy that forwards a path of its own to berth. Normalised
    /// by [`Config::load`](super::Config::load) to `/my/registry` (no trailing slash), or
    /// empty for the root.
    #[serde(default)]
    pub prefix: String,
    /// distribution's `headers`: added to every response of the API (`X-Content-Type-Options:
    /// [nosniff]`); a header the response already has is left as it is.
    #[serde(default, deserialize_with = "super::values::section")]
    pub headers: std::collections::BTreeMap<String, Vec<String>>,
    /// Answer `Location` headers as paths rather than absolute URLs.
    #[serde(default)]
    pub relativeurls: bool,
    /// Serve HTTPS (HTTP/2 and HTTP/1.1) instead of plain HTTP.
    #[serde(default)]
    pub tls: Option<TlsConfig>,
    /// berth's own key: a request body that sends nothing for this long is cut off (its bytes
    /// so far are kept; the client can resume).
    #[schemars(with = "String")]
    #[serde(default = "default_body_idle", with = "duration")]
    pub bodyidletimeout: std::time::Duration,
    /// On SIGTERM/SIGINT: how long in-flight requests may take to finish.
    #[schemars(with = "String")]
    #[serde(default = "default_drain", with = "duration")]
    pub draintimeout: std::time::Duration,
    /// The debug listener (metrics, health).
    #[serde(default)]
    pub debug: Option<DebugConfig>,
    /// berth's own key: the peers whose `X-Forwarded-*`/`Forwarded` headers are believed (a
    /// list, or one comma-separated string in `REGISTRY_HTTP_TRUSTEDPROXIES`); loopback by
    /// default, `[]` for none.
    #[schemars(with = "Vec<String>")]
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
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize, JsonSchema)]
#[serde(try_from = "String")]
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

fn default_drain() -> std::time::Duration {
    std::time::Duration::from_secs(30)
}

/// `http.debug`: a second listener for operators.
#[derive(Debug, Clone, Deserialize, JsonSchema)]
pub struct DebugConfig {
    /// `host:port` (`:5001` means every interface).
    pub addr: String,
    #[serde(default, deserialize_with = "super::values::section")]
    pub prometheus: PrometheusConfig,
}

#[derive(Debug, Clone, Deserialize, JsonSchema)]
pub struct PrometheusConfig {
    #[serde(default = "yes")]
    pub enabled: bool,
    #[serde(default = "default_metrics_path")]
    pub path: String,
}

fn default_metrics_path() -> String {
    "/metrics".to_string()
}

fn default_body_idle() -> std::time::Duration {
    std::time::Duration::from_secs(60)
}

/// `http.tls`: distribution's keys.
#[derive(Debug, Clone, Deserialize, JsonSchema)]
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

/// Loopback: an unauthenticated registry should not face the network by accident (the image's
/// configuration says `:5000`).
fn default_addr() -> String {
    "127.0.0.1:5000".to_string()
}

impl HttpConfig {
    /// Whether berth listens on loopback only.
    pub fn loopback_only(&self) -> bool {
        self.socket_addr().is_ok_and(|a| a.ip().is_loopback())
    }

    /// `http.headers` as header pairs, checked.
    pub fn extra_headers(
        &self,
    ) -> Result<
        Vec<(
            actix_web::http::header::HeaderName,
            actix_web::http::header::HeaderValue,
        )>,
        ConfigError,
    > {
        let mut pairs = Vec::new();
        for (name, values) in &self.headers {
            let invalid = |reason: String| ConfigError::Invalid {
                key: "http.headers",
                reason,
            };
            let header = actix_web::http::header::HeaderName::from_bytes(name.as_bytes())
                .map_err(|_| invalid(format!("{name:?} is not a valid header name")))?;
            for value in values {
                let value =
                    actix_web::http::header::HeaderValue::from_str(value).map_err(|_| {
                        invalid(format!("{name}: {value:?} is not a valid header value"))
                    })?;
                pairs.push((header.clone(), value));
            }
        }
        Ok(pairs)
    }

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

super::values::keywords!(ForwardedHeader { "x-forwarded" => XForwarded, "forwarded" => Forwarded });
