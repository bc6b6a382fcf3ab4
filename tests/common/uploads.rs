//! Uploads driven by hand against a running registry, for the tests of several instances:
//! chunks, status, a PATCH written byte by byte over TCP, signals to a registry process.

use std::io::{Read, Write};
use std::path::Path;
use std::time::Duration;

use super::{client, sha256, BerthProcess};

pub const MIB: usize = 1024 * 1024;

pub fn content(len: usize, seed: u8) -> Vec<u8> {
    (0..len)
        .map(|i| {
            (i as u32)
                .wrapping_mul(2_654_435_761)
                .rotate_left(seed as u32) as u8
                ^ seed
        })
        .collect()
}

pub fn start_upload(base: &str, repo: &str) -> String {
    let location = super::start_upload_at(base, repo);
    let path = location.splitn(4, '/').nth(3).unwrap();
    format!("/{path}")
}

pub fn status(base: &str, path: &str) -> u64 {
    let r = client().get(format!("{base}{path}")).send().unwrap();
    assert_eq!(r.status(), 204, "status of {path}");
    let range = r.headers()["range"].to_str().unwrap().to_string();
    let end: u64 = range.strip_prefix("0-").unwrap().parse().unwrap();
    if end == 0 {
        0
    } else {
        end + 1
    }
}

pub fn patch(base: &str, path: &str, offset: u64, bytes: &[u8]) -> reqwest::blocking::Response {
    super::patch_chunk(&format!("{base}{path}"), offset, bytes)
}

pub fn assert_blob(base: &str, repo: &str, expected: &[u8]) {
    let digest = sha256(expected);
    let mut r = client()
        .get(format!("{base}/v2/{repo}/blobs/{digest}"))
        .send()
        .unwrap();
    if r.status() == 307 {
        let location = r.headers()["location"].to_str().unwrap().to_string();
        r = client().get(location).send().unwrap();
    }
    assert_eq!(r.status(), 200);
    let got = r.bytes().unwrap();
    assert_eq!(got.len(), expected.len());
    assert_eq!(sha256(&got), digest, "the blob's bytes match its digest");
}

pub fn signal(process: &BerthProcess, name: &str) {
    let status = std::process::Command::new("kill")
        .args([&format!("-{name}"), &process.pid().to_string()])
        .status()
        .unwrap();
    assert!(status.success(), "kill -{name}");
}

/// A berth process on the storage of `storage_env` (`REGISTRY_STORAGE_*` variables) with 5 MiB
/// parts (S3's minimum, so a test's chunks are parts) and `extra` variables; its configuration
/// file `name` in `dir`.
pub fn start_instance(
    dir: &Path,
    name: &str,
    storage_env: Vec<(String, String)>,
    extra: &[(&str, &str)],
) -> BerthProcess {
    let config = dir.join(name);
    std::fs::write(&config, "version: 0.1\nlog:\n  level: info\n").unwrap();
    let mut env = storage_env;
    env.push((
        "REGISTRY_STORAGE_S3_CHUNKSIZE".into(),
        (5 * MIB).to_string(),
    ));
    let mut env: Vec<(&str, &str)> = env.iter().map(|(k, v)| (k.as_str(), v.as_str())).collect();
    env.extend_from_slice(extra);
    BerthProcess::start(&config, &env)
}

/// A PATCH written by hand over TCP: the test decides when each byte goes, and can look whether
/// the server answered already (it answers 416 before reading a body it cannot take).
pub struct RawPatch {
    stream: std::net::TcpStream,
    answer: Vec<u8>,
}

impl RawPatch {
    pub fn start(host: &str, path: &str, offset: u64, len: usize) -> RawPatch {
        let mut stream = std::net::TcpStream::connect(host).unwrap();
        let head = format!(
            "PATCH {path} HTTP/1.1\r\nHost: {host}\r\nContent-Type: application/octet-stream\r\n\
             Content-Length: {len}\r\nContent-Range: {offset}-{}\r\nConnection: close\r\n\r\n",
            offset + len as u64 - 1
        );
        stream.write_all(head.as_bytes()).unwrap();
        RawPatch {
            stream,
            answer: Vec::new(),
        }
    }

    pub fn send(&mut self, bytes: &[u8]) {
        // The server may answer early and close: later bytes are then refused, not an error here.
        let _ = self.stream.write_all(bytes);
    }

    /// The status code if the server answered within `wait` (0: the connection ended without a
    /// status line, as when a server refusing a body it did not read resets it).
    pub fn answered(&mut self, wait: Duration) -> Option<u16> {
        self.stream.set_read_timeout(Some(wait)).unwrap();
        let mut buf = [0u8; 4096];
        loop {
            match self.stream.read(&mut buf) {
                Ok(0) => break,
                Ok(n) => {
                    self.answer.extend_from_slice(&buf[..n]);
                    if self.answer.windows(4).any(|w| w == b"\r\n\r\n") {
                        break;
                    }
                }
                Err(e)
                    if matches!(
                        e.kind(),
                        std::io::ErrorKind::WouldBlock | std::io::ErrorKind::TimedOut
                    ) =>
                {
                    return None
                }
                Err(_) => break,
            }
        }
        let text = String::from_utf8_lossy(&self.answer);
        Some(
            text.split_whitespace()
                .nth(1)
                .and_then(|s| s.parse().ok())
                .unwrap_or(0),
        )
    }

    /// The response's status code (waiting up to 60 s; 0: the connection ended without one).
    pub fn status(mut self) -> u16 {
        self.answered(Duration::from_secs(60)).unwrap_or_else(|| {
            panic!(
                "no HTTP answer: {:?}",
                String::from_utf8_lossy(&self.answer)
            )
        })
    }
}
