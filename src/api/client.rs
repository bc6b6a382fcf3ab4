//! Who the client is: its address, and the scheme and host it used to reach the registry.
//!
//! Behind a reverse proxy the TCP peer is the proxy, and the client's address, scheme and host
//! come from `X-Forwarded-For`, `X-Forwarded-Proto`, `X-Forwarded-Host` or `Forwarded`. Anybody
//! can send those headers, so they are believed only from the peers of `http.trustedproxies`
//! (loopback by default: a proxy on the same host); from anyone else they are ignored, and the
//! peer address, the connection's scheme and the `Host` header are the truth. The failed-login
//! guard, the access log, notification events and `Location` headers all ask here.

use std::net::IpAddr;

use actix_web::http::header::{HeaderMap, HOST};
use actix_web::HttpRequest;
use ipnet::IpNet;

/// `http.trustedproxies`: the peers whose forwarding headers are believed.
#[derive(Debug, Clone, Default)]
pub struct TrustedProxies(Vec<IpNet>);

impl TrustedProxies {
    pub fn new(nets: Vec<IpNet>) -> TrustedProxies {
        TrustedProxies(nets)
    }

    pub fn trusts(&self, addr: IpAddr) -> bool {
        let addr = canonical(addr);
        self.0.iter().any(|net| net.contains(&addr))
    }

    /// The client of `req`, as far as its peer can be trusted.
    pub fn client(&self, req: &HttpRequest) -> Client {
        let peer = req.peer_addr().map(|a| canonical(a.ip()));
        if peer.is_some_and(|p| self.trusts(p)) {
            let info = req.connection_info();
            Client {
                addr: self.forwarded_for(req.headers(), peer),
                scheme: info.scheme().to_string(),
                host: info.host().to_string(),
            }
        } else {
            Client {
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
            }
        }
    }

    /// The client's address from a trusted peer's headers: the hops of `Forwarded: for=` (or
    /// `X-Forwarded-For`) are walked from the nearest, skipping trusted proxies; the first one
    /// that is not trusted is the client (hops further left were written by the client itself and
    /// prove nothing). A header naming no address leaves the peer.
    fn forwarded_for(&self, headers: &HeaderMap, peer: Option<IpAddr>) -> Option<IpAddr> {
        // `Forwarded` (RFC 7239) first, as for the scheme and host.
        let mut hops: Vec<IpAddr> = Vec::new();
        for value in headers.get_all("forwarded") {
            let Ok(value) = value.to_str() else { continue };
            hops.extend(
                value
                    .split([',', ';'])
                    .filter_map(|pair| pair.trim().split_once('='))
                    .filter(|(k, _)| k.trim().eq_ignore_ascii_case("for"))
                    .filter_map(|(_, v)| parse_hop(v)),
            );
        }
        if hops.is_empty() {
            for value in headers.get_all("x-forwarded-for") {
                let Ok(value) = value.to_str() else { continue };
                hops.extend(value.split(',').filter_map(parse_hop));
            }
        }
        let mut client = peer;
        for hop in hops.into_iter().rev() {
            client = Some(hop);
            if !self.trusts(hop) {
                break;
            }
        }
        client
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
/// `2001:db8::1`; `unknown` and obfuscated names are not addresses.
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
        TrustedProxies::new(
            nets.iter()
                .map(|n| crate::config::parse_net(n).unwrap())
                .collect(),
        )
    }

    fn ip(s: &str) -> IpAddr {
        s.parse().unwrap()
    }

    #[test]
    fn headers_from_an_untrusted_peer_are_ignored() {
        let req = TestRequest::default()
            .peer_addr("198.51.100.9:5555".parse().unwrap())
            .insert_header(("Host", "registry.example:5000"))
            .insert_header(("X-Forwarded-For", "203.0.113.66"))
            .insert_header(("X-Forwarded-Host", "evil.example"))
            .insert_header(("X-Forwarded-Proto", "https"))
            .insert_header((
                "Forwarded",
                "for=203.0.113.67;host=evil2.example;proto=https",
            ))
            .to_http_request();
        let client = proxies(&["127.0.0.0/8"]).client(&req);
        assert_eq!(
            client,
            Client {
                addr: Some(ip("198.51.100.9")),
                scheme: "http".into(),
                host: "registry.example:5000".into(),
            }
        );
    }

    #[test]
    fn a_trusted_proxy_names_the_client_and_the_public_address() {
        let req = TestRequest::default()
            .peer_addr("10.1.2.3:5555".parse().unwrap())
            .insert_header(("Host", "berth:5000"))
            // The client wrote the first hop itself; the proxy appended the real one.
            .insert_header(("X-Forwarded-For", "192.0.2.1, 203.0.113.7, 10.9.9.9"))
            .insert_header(("X-Forwarded-Host", "registry.example"))
            .insert_header(("X-Forwarded-Proto", "https"))
            .to_http_request();
        let client = proxies(&["10.0.0.0/8"]).client(&req);
        assert_eq!(client.addr, Some(ip("203.0.113.7")));
        assert_eq!(client.scheme, "https");
        assert_eq!(client.host, "registry.example");
    }

    #[test]
    fn forwarded_header_hops_and_ports() {
        let req = TestRequest::default()
            .peer_addr("[::1]:5555".parse().unwrap())
            .insert_header((
                "Forwarded",
                "for=\"[2001:db8::1]:4711\";proto=https, for=127.0.0.1",
            ))
            .to_http_request();
        let client = proxies(&["127.0.0.1", "::1"]).client(&req);
        assert_eq!(client.addr, Some(ip("2001:db8::1")));
        // Only trusted hops: the leftmost one is as far as the chain can be followed.
        let req = TestRequest::default()
            .peer_addr("127.0.0.1:5555".parse().unwrap())
            .insert_header(("X-Forwarded-For", "127.0.0.5:99, unknown"))
            .to_http_request();
        let client = proxies(&["127.0.0.0/8"]).client(&req);
        assert_eq!(client.addr, Some(ip("127.0.0.5")));
    }

    #[test]
    fn mapped_ipv4_peers_match_ipv4_ranges() {
        assert!(proxies(&["127.0.0.0/8"]).trusts(ip("::ffff:127.0.0.1")));
        assert!(!proxies(&[]).trusts(ip("127.0.0.1")));
    }
}
