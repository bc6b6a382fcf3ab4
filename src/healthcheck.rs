//! `berth healthcheck [CONFIG]`: the container image's `HEALTHCHECK`. The image has no shell and
//! no curl, so the binary probes itself: it reads the same configuration as `berth serve` (the
//! file and the `REGISTRY_*` variables), connects to the address berth listens on (an
//! every-interface address such as `:5000` becomes loopback), over HTTPS when `http.tls` is set,
//! and asks `GET /v2/`. 200, or 401 when logins are required, is healthy; anything else,
//! including 503 when the storage health check fails, is not. With a debug listener
//! (`http.debug.addr`) it asks that listener's `/debug/health` instead: plain HTTP without a
//! login, so the probe also works where the main listener demands client certificates.

use std::collections::HashMap;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};
use std::path::Path;
use std::process::ExitCode;
use std::time::Duration;

use thiserror::Error;

use crate::config::{Config, ConfigError};

/// Docker's own `--timeout` for the check is 5 s in the image; answer before it.
const PROBE_TIMEOUT: Duration = Duration::from_secs(3);

#[derive(Debug, Error)]
pub enum HealthcheckError {
    #[error(transparent)]
    Config(#[from] ConfigError),
    #[error("cannot set up the probe: {0}")]
    Setup(String),
    #[error("GET {url}: {source}")]
    Request { url: String, source: reqwest::Error },
    #[error("GET {url} answered {status}")]
    Unhealthy { url: String, status: u16 },
}

/// The URL to probe on the server `config` describes, as seen from the same host: the debug
/// listener's `/debug/health` if there is one, else `/v2/`.
pub fn probe_url(config: &Config) -> Result<String, ConfigError> {
    if let Some(debug) = &config.http.debug {
        // distribution's `:5001` form means every interface, as for http.addr.
        let text = match debug.addr.starts_with(':') {
            true => format!("0.0.0.0{}", debug.addr),
            false => debug.addr.clone(),
        };
        // A name (`localhost:5001`) as well as an address: the listener resolves it too.
        let addr: SocketAddr = std::net::ToSocketAddrs::to_socket_addrs(&text)
            .ok()
            .and_then(|mut addrs| addrs.next())
            .ok_or_else(|| ConfigError::Invalid {
                key: "http.debug.addr",
                reason: format!("{:?} is not host:port", debug.addr),
            })?;
        return Ok(format!("http://{}/debug/health", loopback(addr)));
    }
    let addr = loopback(config.http.socket_addr()?);
    let scheme = if config.http.tls.is_some() {
        "https"
    } else {
        "http"
    };
    Ok(format!("{scheme}://{addr}{}/v2/", config.http.prefix))
}

/// `addr`, with an every-interface address replaced by loopback of the same family.
fn loopback(addr: SocketAddr) -> SocketAddr {
    let ip = match addr.ip() {
        IpAddr::V4(ip) if ip.is_unspecified() => IpAddr::V4(Ipv4Addr::LOCALHOST),
        IpAddr::V6(ip) if ip.is_unspecified() => IpAddr::V6(Ipv6Addr::LOCALHOST),
        ip => ip,
    };
    SocketAddr::new(ip, addr.port())
}

/// Probes the registry once; answers the status it gave when healthy.
pub fn check(config: &Config) -> Result<u16, HealthcheckError> {
    let url = probe_url(config)?;
    let client = reqwest::Client::builder()
        // It probes itself: the certificate is made for the names clients use, not loopback.
        .danger_accept_invalid_certs(true)
        // HTTP_PROXY and the like are for the registry's outgoing requests, not for this one.
        .no_proxy()
        .timeout(PROBE_TIMEOUT)
        .build()
        .map_err(|e| HealthcheckError::Setup(e.to_string()))?;
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .map_err(|e| HealthcheckError::Setup(e.to_string()))?;
    let status = runtime
        .block_on(async { client.get(&url).send().await })
        .map_err(|source| HealthcheckError::Request {
            url: url.clone(),
            source,
        })?
        .status()
        .as_u16();
    match status {
        200 | 401 => Ok(status),
        status => Err(HealthcheckError::Unhealthy { url, status }),
    }
}

/// `berth healthcheck`: exit code 0 when healthy, 1 when not (docker's convention), with one
/// line saying why (docker keeps it in `docker inspect`'s `.State.Health.Log`).
pub fn run(config_path: Option<&Path>, env: &HashMap<String, String>) -> ExitCode {
    let result = Config::load(config_path, env)
        .map_err(HealthcheckError::from)
        .and_then(|config| check(&config));
    match result {
        Ok(status) => {
            println!("healthy: the registry answered {status}");
            ExitCode::SUCCESS
        }
        Err(e) => {
            eprintln!("berth healthcheck: {e}");
            ExitCode::FAILURE
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn config(vars: &[(&str, &str)]) -> Config {
        let env = vars
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect();
        Config::load(None, &env).unwrap()
    }

    #[test]
    fn every_interface_is_probed_on_loopback() {
        let c = config(&[("REGISTRY_HTTP_ADDR", ":5000")]);
        assert_eq!(probe_url(&c).unwrap(), "http://127.0.0.1:5000/v2/");
        let c = config(&[("REGISTRY_HTTP_ADDR", "[::]:5001")]);
        assert_eq!(probe_url(&c).unwrap(), "http://[::1]:5001/v2/");
        let c = config(&[("REGISTRY_HTTP_ADDR", "127.0.0.7:5002")]);
        assert_eq!(probe_url(&c).unwrap(), "http://127.0.0.7:5002/v2/");
        let c = config(&[
            ("REGISTRY_HTTP_ADDR", ":5000"),
            ("REGISTRY_HTTP_PREFIX", "/my/registry/"),
        ]);
        assert_eq!(
            probe_url(&c).unwrap(),
            "http://127.0.0.1:5000/my/registry/v2/"
        );
    }

    #[test]
    fn a_debug_listener_is_probed_instead() {
        let c = config(&[
            ("REGISTRY_HTTP_ADDR", ":5000"),
            ("REGISTRY_HTTP_DEBUG_ADDR", ":5001"),
        ]);
        assert_eq!(probe_url(&c).unwrap(), "http://127.0.0.1:5001/debug/health");
        // A name, as the listener accepts it.
        let c = config(&[("REGISTRY_HTTP_DEBUG_ADDR", "localhost:5001")]);
        let url = probe_url(&c).unwrap();
        assert!(url.ends_with(":5001/debug/health"), "{url}");
    }

    #[test]
    fn nothing_listening_is_unhealthy() {
        let port = std::net::TcpListener::bind("127.0.0.1:0")
            .unwrap()
            .local_addr()
            .unwrap()
            .port();
        let c = config(&[("REGISTRY_HTTP_ADDR", &format!("127.0.0.1:{port}"))]);
        let e = check(&c).unwrap_err();
        assert!(matches!(e, HealthcheckError::Request { .. }), "{e}");
    }
}
