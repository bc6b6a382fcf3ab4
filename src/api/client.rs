//! Who the client is: its address, and the scheme and host it used to reach the registry.
//!
//! Behind a reverse proxy the TCP peer is the proxy, and the client's address, scheme and host
//! come from the headers the proxy writes: `X-Forwarded-For`, `X-Forwarded-Proto` and
//! `X-Forwarded-Host` by default, or RFC 7239's `Forwarded` with
//! `http.forwardedheader: forwarded`. Only one family is read: a proxy that writes one passes the
//! other through from the client unchanged (nginx passes `Forwarded` on), so reading both would
//! let a client choose. Anybody can send these headers, so they are believed only from the peers
//! of `http.trustedproxies` (loopback by default: a proxy on the same host); from anyone else they
//! are ignored, and the peer address, the connection's scheme and the `Host` header are the truth.
//! The failed-login guard, the access log, upload quotas, notification events and `Location`
//! headers all ask here.

use std::net::IpAddr;

use actix_web::http::header::{HeaderMap, HOST};
use actix_web::HttpRequest;
use ipnet::IpNet;

pub use crate::config::ForwardedHeader;

/// `http.trustedproxies` and `http.forwardedheader`: whose forwarding headers are believed, and
/// which ones.
#[derive(Debug, Clone, Default)]
pub struct TrustedProxies {
    nets: Vec<IpNet>,
    header: ForwardedHeader,
}

impl TrustedProxies {
    pub fn new(nets: Vec<IpNet>, header: ForwardedHeader) -> TrustedProxies {
        TrustedProxies { nets, header }
    }

    pub fn trusts(&self, addr: IpAddr) -> bool {
        let addr = canonical(addr);
        self.nets.iter().any(|net| net.contains(&addr))
    }

    /// The client of `req`, as far as its peer can be trusted.
    pub fn client(&self, req: &HttpRequest) -> Client {
        let peer = req.peer_addr().map(|a| canonical(a.ip()));
        let direct = Client {
            addr: peer,
            scheme: if req.app_config().secure() {
                "https"
            } else {
                "http"
            }
            .to_string(),
            host: req
                .headers()
                .get(HOST)
                .and_then(|h| h.to_str().ok())
                .map(str::to_string)
                .or_else(|| req.uri().authority().map(|a| a.to_string()))
                .unwrap_or_else(|| req.app_config().host().to_string()),
        };
        if !peer.is_some_and(|p| self.trusts(p)) {
            return direct;
        }
        let forwarded = match self.header {
            ForwardedHeader::XForwarded => Forwarded::x_forwarded(req.headers()),
            ForwardedHeader::Forwarded => Forwarded::rfc7239(req.headers()),
        };
        Client {
            addr: self.client_hop(&forwarded.hops, peer),
            scheme: forwarded
                .proto
                .filter(|p| p == "http" || p == "https")
                .unwrap_or(direct.scheme),
            host: forwarded
                .host
                .filter(|h| !h.is_empty())
                .unwrap_or(direct.host),
        }
    }

    /// The client among a trusted peer's hops: they are walked from the nearest, skipping
    /// trusted proxies; the first one that is not trusted is the client (hops further left were
    /// written by the client itself and prove nothing). A hop that is not an address (`unknown`,
    /// an obfuscated `_name`, a zone) ends the walk at the last proxy that could be trusted:
    /// what lies beyond it cannot be told from what the client wrote.
    fn client_hop(&self, hops: &[Option<IpAddr>], peer: Option<IpAddr>) -> Option<IpAddr> {
        let mut client = peer;
        for hop in hops.iter().rev() {
            let Some(hop) = *hop else { break };
            client = Some(hop);
            if !self.trusts(hop) {
                break;
            }
        }
        client
    }
}

/// What a trusted proxy's headers say.
#[derive(Debug, Default)]
struct Forwarded {
    /// Every hop, the client's first, the nearest last; `None` for one that is not an address.
    hops: Vec<Option<IpAddr>>,
    /// The nearest proxy's (the last value).
    proto: Option<String>,
    host: Option<String>,
}

impl Forwarded {
    fn x_forwarded(headers: &HeaderMap) -> Forwarded {
        let values = |name: &str| -> Vec<String> {
            headers
                .get_all(name)
                .filter_map(|v| v.to_str().ok())
                .flat_map(|v| v.split(','))
                .map(|v| v.trim().to_string())
                .collect()
        };
        Forwarded {
            hops: values("x-forwarded-for")
                .iter()
                .map(|h| parse_hop(h))
                .collect(),
            proto: values("x-forwarded-proto")
                .pop()
                .map(|p| p.to_ascii_lowercase()),
            host: values("x-forwarded-host").pop(),
        }
    }

    fn rfc7239(headers: &HeaderMap) -> Forwarded {
        let mut forwarded = Forwarded::default();
        let elements = headers
            .get_all("forwarded")
            .filter_map(|v| v.to_str().ok())
            .flat_map(|v| v.split(','));
        for element in elements {
            // Each element is one hop; its `proto` and `host` are what that proxy received.
            let (mut proto, mut host) = (None, None);
            for pair in element.split(';') {
                let Some((key, value)) = pair.trim().split_once('=') else {
                    continue;
                };
                let value = value.trim().trim_matches('"');
                match key.trim().to_ascii_lowercase().as_str() {
                    "for" => forwarded.hops.push(parse_hop(value)),
                    "proto" => proto = Some(value.to_ascii_lowercase()),
                    "host" => host = Some(value.to_string()),
                    _ => {}
                }
            }
            forwarded.proto = proto;
            forwarded.host = host;
        }
        forwarded
    }
}

/// What the registry knows of a request's client.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Client {
    /// The client's address (`None` only for requests without a peer, as in unit tests).
    pub addr: Option<IpAddr>,
    /// `http` or `https`, as the client connected.
    pub scheme: String,
    /// The host (and port) the client addressed.
    pub host: String,
}

/// The client of `req` under the server's `http.trustedproxies` (none trusted when the app was
/// built without them).
pub fn client(req: &HttpRequest) -> Client {
    match req.app_data::<actix_web::web::Data<TrustedProxies>>() {
        Some(proxies) => proxies.client(req),
        None => TrustedProxies::default().client(req),
    }
}

/// One hop of a forwarding header: `203.0.113.7`, `203.0.113.7:4711`, `"[2001:db8::1]:4711"`,
/// `2001:db8::1`; `unknown`, obfuscated names and scoped addresses are not addresses.
fn parse_hop(hop: &str) -> Option<IpAddr> {
    let hop = hop.trim().trim_matches('"');
    if let Ok(addr) = hop.parse::<IpAddr>() {
        return Some(canonical(addr));
    }
    if let Ok(sock) = hop.parse::<std::net::SocketAddr>() {
        return Some(canonical(sock.ip()));
    }
    hop.strip_prefix('[')
        .and_then(|h| h.split_once(']'))
        .and_then(|(ip, _)| ip.parse().ok())
        .map(canonical)
}

/// IPv4 addresses seen through an IPv6 socket (`::ffff:a.b.c.d`) as the IPv4 address they are.
fn canonical(addr: IpAddr) -> IpAddr {
    match addr {
        IpAddr::V6(v6) => v6.to_ipv4_mapped().map_or(IpAddr::V6(v6), IpAddr::V4),
        v4 => v4,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use actix_web::test::TestRequest;

    fn proxies(nets: &[&str]) -> TrustedProxies {
        proxies_reading(nets, ForwardedHeader::XForwarded)
    }

    fn proxies_reading(nets: &[&str], header: ForwardedHeader) -> TrustedProxies {
        let nets = nets
            .iter()
            .map(|n| crate::config::parse_net(n).unwrap())
            .collect();
        TrustedProxies::new(nets, header)
    }

    fn ip(s: &str) -> IpAddr {
        s.parse().unwrap()
    }

    /// A request from `peer` with `headers`.
    fn request(peer: &str, headers: &[(&str, &str)]) -> HttpRequest {
        let mut req = TestRequest::default()
            .peer_addr(peer.parse().unwrap())
            .insert_header(("Host", "berth:5000"));
        for header in headers {
            req = req.append_header(*header);
        }
        req.to_http_request()
    }

    const FORGED: [(&str, &str); 4] = [
        ("X-Forwarded-For", "203.0.113.66"),
        ("X-Forwarded-Host", "evil.example"),
        ("X-Forwarded-Proto", "https"),
        (
            "Forwarded",
            "for=203.0.113.67;host=evil2.example;proto=https",
        ),
    ];

    #[test]
    fn headers_from_an_untrusted_peer_are_ignored() {
        let req = request("198.51.100.9:5555", &FORGED);
        for header in [ForwardedHeader::XForwarded, ForwardedHeader::Forwarded] {
            let client = proxies_reading(&["127.0.0.0/8"], header).client(&req);
            assert_eq!(
                client,
                Client {
                    addr: Some(ip("198.51.100.9")),
                    scheme: "http".into(),
                    host: "berth:5000".into(),
                }
            );
        }
    }

    #[test]
    fn a_trusted_proxy_names_the_client_and_the_public_address() {
        // The client wrote the first hop itself; the proxies appended the real ones.
        let req = request(
            "10.1.2.3:5555",
            &[
                ("X-Forwarded-For", "192.0.2.1, 203.0.113.7, 10.9.9.9"),
                ("X-Forwarded-Host", "registry.example"),
                ("X-Forwarded-Proto", "https"),
            ],
        );
        let client = proxies(&["10.0.0.0/8"]).client(&req);
        assert_eq!(client.addr, Some(ip("203.0.113.7")));
        assert_eq!(client.scheme, "https");
        assert_eq!(client.host, "registry.example");
    }

    #[test]
    fn only_the_configured_family_of_headers_is_read() {
        // nginx writes X-Forwarded-For and passes the client's own `Forwarded` on.
        let req = request(
            "127.0.0.1:5555",
            &[
                (
                    "Forwarded",
                    "for=198.51.100.77;host=evil.example;proto=https",
                ),
                ("X-Forwarded-For", "198.51.100.1"),
                ("X-Forwarded-Proto", "http"),
            ],
        );
        let client = proxies(&["127.0.0.1"]).client(&req);
        assert_eq!(client.addr, Some(ip("198.51.100.1")));
        assert_eq!(
            (client.scheme.as_str(), client.host.as_str()),
            ("http", "berth:5000")
        );
        // A proxy writing `Forwarded` passes X-Forwarded-* on instead.
        let req = request(
            "127.0.0.1:5555",
            &[
                ("X-Forwarded-For", "198.51.100.66"),
                ("X-Forwarded-Host", "evil.example"),
                (
                    "Forwarded",
                    "for=198.51.100.2;host=registry.example;proto=https",
                ),
            ],
        );
        let client = proxies_reading(&["127.0.0.1"], ForwardedHeader::Forwarded).client(&req);
        assert_eq!(client.addr, Some(ip("198.51.100.2")));
        assert_eq!(client.host, "registry.example");
        assert_eq!(client.scheme, "https");
    }

    #[test]
    fn the_nearest_proxy_says_the_scheme_and_host() {
        let req = request(
            "127.0.0.1:5555",
            &[
                ("X-Forwarded-Proto", "http, https"),
                ("X-Forwarded-Host", "evil.example"),
                ("X-Forwarded-Host", "registry.example"),
                ("X-Forwarded-For", "198.51.100.1"),
            ],
        );
        let client = proxies(&["127.0.0.1"]).client(&req);
        assert_eq!(client.scheme, "https");
        assert_eq!(client.host, "registry.example");
        let req = request(
            "127.0.0.1:5555",
            &[(
                "Forwarded",
                "for=1.2.3.4;proto=https;host=evil.example, for=198.51.100.3",
            )],
        );
        let client = proxies_reading(&["127.0.0.1"], ForwardedHeader::Forwarded).client(&req);
        assert_eq!(client.addr, Some(ip("198.51.100.3")));
        assert_eq!(
            (client.scheme.as_str(), client.host.as_str()),
            ("http", "berth:5000")
        );
    }

    #[test]
    fn forwarded_header_hops_and_ports() {
        let req = request(
            "[::1]:5555",
            &[(
                "Forwarded",
                "for=\"[2001:db8::1]:4711\";proto=https, for=127.0.0.1",
            )],
        );
        let client =
            proxies_reading(&["127.0.0.1", "::1"], ForwardedHeader::Forwarded).client(&req);
        assert_eq!(client.addr, Some(ip("2001:db8::1")));
        // Only trusted hops: the leftmost one is as far as the chain can be followed.
        let req = request(
            "127.0.0.1:5555",
            &[("X-Forwarded-For", "127.0.0.5:99, 127.0.0.6")],
        );
        let client = proxies(&["127.0.0.0/8"]).client(&req);
        assert_eq!(client.addr, Some(ip("127.0.0.5")));
    }

    #[test]
    fn a_hop_that_is_no_address_ends_the_walk() {
        for chain in [
            "198.51.100.1, unknown",
            "198.51.100.1, _hidden",
            "198.51.100.1, fe80::1%eth0",
            "198.51.100.1, unix:",
        ] {
            let req = request("127.0.0.1:5555", &[("X-Forwarded-For", chain)]);
            let client = proxies(&["127.0.0.1"]).client(&req);
            assert_eq!(client.addr, Some(ip("127.0.0.1")), "{chain}");
        }
        let req = request(
            "127.0.0.1:5555",
            &[("Forwarded", "for=198.51.100.1, for=unknown")],
        );
        let client = proxies_reading(&["127.0.0.1"], ForwardedHeader::Forwarded).client(&req);
        assert_eq!(client.addr, Some(ip("127.0.0.1")));
    }

    #[test]
    fn mapped_ipv4_peers_match_ipv4_ranges() {
        assert!(proxies(&["127.0.0.0/8"]).trusts(ip("::ffff:127.0.0.1")));
        assert!(!proxies(&[]).trusts(ip("127.0.0.1")));
    }
}
