//! `X-Forwarded-*` and `Forwarded` are believed only from `http.trustedproxies`: a client that
//! sends them itself gets neither a `Location` on the host it names nor an event carrying the
//! address it claims, and cannot dodge the failed-login guard by inventing addresses; a trusted
//! proxy's forwarding headers are honoured for all three.
//!
//! The registry listens on 127.0.0.1; the "proxy" is a client whose source address is 127.0.0.2
//! (the only trusted peer here), everybody else connects from 127.0.0.1.

mod common;

use std::io::{BufRead, BufReader, Read, Write};
use std::net::TcpListener;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use common::{client_from, TestRegistry};

const PROXY: &str = "127.0.0.2";

/// A webhook receiver: every event of every POST it is sent, in order.
fn receiver() -> (String, Arc<Mutex<Vec<serde_json::Value>>>) {
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let url = format!("http://{}/events", listener.local_addr().unwrap());
    let events = Arc::new(Mutex::new(Vec::new()));
    let seen = events.clone();
    std::thread::spawn(move || {
        for stream in listener.incoming() {
            let Ok(mut stream) = stream else { continue };
            let mut reader = BufReader::new(stream.try_clone().unwrap());
            let mut length = 0usize;
            loop {
                let mut line = String::new();
                if reader.read_line(&mut line).unwrap_or(0) == 0 {
                    break;
                }
                if let Some(v) = line.to_ascii_lowercase().strip_prefix("content-length:") {
                    length = v.trim().parse().unwrap();
                }
                if line == "\r\n" {
                    let mut body = vec![0u8; length];
                    reader.read_exact(&mut body).unwrap();
                    let envelope: serde_json::Value = serde_json::from_slice(&body).unwrap();
                    seen.lock()
                        .unwrap()
                        .extend(envelope["events"].as_array().unwrap().iter().cloned());
                    stream
                        .write_all(b"HTTP/1.1 200 OK\r\nContent-Length: 0\r\n\r\n")
                        .unwrap();
                    length = 0;
                }
            }
        }
    });
    (url, events)
}

fn wait_for_events(events: &Mutex<Vec<serde_json::Value>>, n: usize) -> Vec<serde_json::Value> {
    let start = Instant::now();
    while events.lock().unwrap().len() < n && start.elapsed() < Duration::from_secs(15) {
        std::thread::sleep(Duration::from_millis(20));
    }
    events.lock().unwrap().clone()
}

fn start_upload(client: &reqwest::blocking::Client, reg: &TestRegistry) -> String {
    let r = client
        .post(reg.url("/v2/app/blobs/uploads/"))
        .header("X-Forwarded-Host", "evil.example")
        .header("X-Forwarded-Proto", "https")
        .header("X-Forwarded-For", "203.0.113.66")
        .header(
            "Forwarded",
            "for=203.0.113.67;host=evil2.example;proto=https",
        )
        .send()
        .unwrap();
    assert_eq!(r.status(), 202);
    r.headers()["location"].to_str().unwrap().to_string()
}

fn with_digest(location: &str, blob: &[u8]) -> String {
    let sep = if location.contains('?') { '&' } else { '?' };
    format!("{location}{sep}digest={}", common::sha256(blob))
}

#[test]
fn forwarding_headers_count_only_from_trusted_proxies() {
    let (hook, events) = receiver();
    let dir = tempfile::tempdir().unwrap();
    let config = dir.path().join("config.yml");
    std::fs::write(
        &config,
        format!(
            "version: 0.1\nhttp:\n  trustedproxies: [{PROXY}]\nnotifications:\n  endpoints:\n\
             \x20   - name: hook\n      url: {hook}\n      timeout: 2s\n      backoff: 50ms\n"
        ),
    )
    .unwrap();
    let reg = TestRegistry::builder().config_file(&config).start();

    // A client forging every forwarding header: the answers name the registry's own address.
    let direct = client_from("127.0.0.1");
    let location = start_upload(&direct, &reg);
    assert_eq!(
        location.split("/v2/").next().unwrap(),
        format!("http://{}", reg.host),
        "{location}"
    );
    let blob = b"forged".to_vec();
    let r = direct
        .put(with_digest(&location, &blob))
        .header("X-Forwarded-Host", "evil.example")
        .header("X-Forwarded-For", "203.0.113.66")
        .body(blob.clone())
        .send()
        .unwrap();
    assert_eq!(r.status(), 201);
    assert!(
        r.headers()["location"]
            .to_str()
            .unwrap()
            .starts_with(&format!("http://{}/v2/", reg.host)),
        "{:?}",
        r.headers()["location"]
    );
    let got = wait_for_events(&events, 1);
    assert_eq!(got[0]["request"]["addr"], "127.0.0.1", "{:#}", got[0]);
    assert_eq!(got[0]["request"]["host"], reg.host.as_str(), "{:#}", got[0]);

    // The trusted proxy's X-Forwarded-* headers are what the client used (`Forwarded` is not
    // read: a proxy writing X-Forwarded-* passes a client's `Forwarded` on).
    let proxy = client_from(PROXY);
    let location = start_upload(&proxy, &reg);
    assert!(
        location.starts_with("https://evil.example/v2/app/blobs/uploads/"),
        "{location}"
    );
    let blob = b"proxied".to_vec();
    let path = location.strip_prefix("https://evil.example").unwrap();
    let r = proxy
        .put(with_digest(&reg.url(path), &blob))
        .header("X-Forwarded-Host", "registry.example")
        .header("X-Forwarded-Proto", "https")
        // The first hop was written by the client; the proxy appended the one it saw.
        .header("X-Forwarded-For", "192.0.2.99, 198.51.100.7")
        .body(blob)
        .send()
        .unwrap();
    assert_eq!(r.status(), 201);
    let got = wait_for_events(&events, 2);
    assert_eq!(got[1]["request"]["addr"], "198.51.100.7", "{:#}", got[1]);
    assert_eq!(
        got[1]["request"]["host"], "registry.example",
        "{:#}",
        got[1]
    );
}

#[test]
fn the_failed_login_guard_counts_the_real_client() {
    let dir = tempfile::tempdir().unwrap();
    let htpasswd = dir.path().join("htpasswd");
    let hash = bcrypt::hash("right", 4).unwrap();
    std::fs::write(&htpasswd, format!("alice:{hash}\n")).unwrap();
    let config = dir.path().join("config.yml");
    std::fs::write(
        &config,
        format!(
            "version: 0.1\nhttp:\n  trustedproxies: [{PROXY}]\nauth:\n  failedloginsperminute: 3\n\
             \x20 htpasswd:\n    realm: test\n    path: {}\n",
            htpasswd.display()
        ),
    )
    .unwrap();
    let reg = TestRegistry::builder().config_file(&config).start();
    use base64::Engine;
    let wrong = format!(
        "Basic {}",
        base64::engine::general_purpose::STANDARD.encode("alice:wrong")
    );
    let login = |client: &reqwest::blocking::Client, forwarded_for: &str| {
        client
            .get(reg.url("/v2/"))
            .header("Authorization", &wrong)
            .header("X-Forwarded-For", forwarded_for)
            .send()
            .unwrap()
            .status()
    };
    // Invented addresses do not spread a direct client's failures.
    let direct = client_from("127.0.0.1");
    let statuses: Vec<u16> = (0..6)
        .map(|i| login(&direct, &format!("203.0.113.{i}")).as_u16())
        .collect();
    assert_eq!(&statuses[..3], [401, 401, 401], "{statuses:?}");
    assert_eq!(&statuses[3..], [429, 429, 429], "{statuses:?}");

    // Behind the trusted proxy, each client has its own count: one locked out, the other not.
    let proxy = client_from(PROXY);
    for _ in 0..3 {
        assert_eq!(login(&proxy, "198.51.100.1"), 401);
    }
    assert_eq!(login(&proxy, "198.51.100.1"), 429);
    assert_eq!(login(&proxy, "198.51.100.2"), 401);
}
