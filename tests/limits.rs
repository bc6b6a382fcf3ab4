//! Bounds on slow or oversized requests, over raw TCP: a body that stalls is cut off (its bytes
//! kept, the upload resumable), a request head that trickles in is dropped, oversized headers
//! are refused.

mod common;

use std::io::{Read, Write};
use std::net::TcpStream;
use std::time::{Duration, Instant};

use common::{client, sha256, TestRegistry};

/// Reads what the server sends until it closes the connection or `limit` passes.
fn read_response(stream: &mut TcpStream, limit: Duration) -> String {
    stream.set_read_timeout(Some(limit)).unwrap();
    let mut out = Vec::new();
    let mut buf = [0u8; 4096];
    loop {
        match stream.read(&mut buf) {
            Ok(0) | Err(_) => break,
            Ok(n) => {
                out.extend_from_slice(&buf[..n]);
                if out.windows(4).any(|w| w == b"\r\n\r\n") && out.ends_with(b"}") {
                    break;
                }
            }
        }
    }
    String::from_utf8_lossy(&out).to_string()
}

#[test]
fn a_stalled_body_is_cut_off_and_its_upload_resumes() {
    let reg = TestRegistry::builder()
        .env("REGISTRY_HTTP_BODYIDLETIMEOUT", "1s")
        .start();
    let location = common::start_upload_at(&reg.url, "slow/app");
    let path = location
        .strip_prefix(&reg.url)
        .unwrap_or(&location)
        .to_string();
    let content: Vec<u8> = (0..4096u32).map(|i| (i % 251) as u8).collect();

    // Announce 4096 bytes, send 1000, then nothing.
    let mut stream = TcpStream::connect(&reg.host).unwrap();
    write!(
        stream,
        "PATCH {path} HTTP/1.1\r\nHost: {}\r\nContent-Type: application/octet-stream\r\nContent-Length: 4096\r\n\r\n",
        reg.host
    )
    .unwrap();
    stream.write_all(&content[..1000]).unwrap();
    let started = Instant::now();
    let response = read_response(&mut stream, Duration::from_secs(30));
    let waited = started.elapsed();
    assert!(response.starts_with("HTTP/1.1 400"), "{response}");
    assert!(response.contains("BLOB_UPLOAD_INVALID"), "{response}");
    assert!(response.contains("sent nothing"), "{response}");
    assert!(waited < Duration::from_secs(20), "cut off after {waited:?}");

    // The 1000 bytes are kept; the client resumes from there and completes.
    let r = client().get(&location).send().unwrap();
    assert_eq!(r.status(), 204);
    assert_eq!(r.headers()["range"], "0-999");
    let r = common::patch_chunk(&location, 1000, &content[1000..]);
    assert_eq!(r.status(), 202);
    let r = common::complete_upload(&location, &sha256(&content));
    assert_eq!(r.status(), 201);
    let blob = client()
        .get(reg.url(&format!("/v2/slow/app/blobs/{}", sha256(&content))))
        .send()
        .unwrap()
        .bytes()
        .unwrap();
    assert_eq!(blob.as_ref(), content.as_slice());
}

#[test]
fn a_trickling_request_head_is_dropped() {
    let reg = TestRegistry::start();
    let mut stream = TcpStream::connect(&reg.host).unwrap();
    // Half a request head, never finished (slowloris).
    write!(
        stream,
        "GET /v2/ HTTP/1.1\r\nHost: {}\r\nX-Slow: ",
        reg.host
    )
    .unwrap();
    let started = Instant::now();
    let response = read_response(&mut stream, Duration::from_secs(30));
    let waited = started.elapsed();
    assert!(
        waited < Duration::from_secs(15),
        "the connection was held for {waited:?}: {response:?}"
    );
    assert!(
        response.is_empty() || response.starts_with("HTTP/1.1 408"),
        "{response}"
    );
}

#[test]
fn oversized_headers_are_refused() {
    let reg = TestRegistry::start();
    let huge = "x".repeat(200 * 1024);
    let mut stream = TcpStream::connect(&reg.host).unwrap();
    let _ = write!(
        stream,
        "GET /v2/ HTTP/1.1\r\nHost: {}\r\nX-Huge: {huge}\r\n\r\n",
        reg.host
    );
    let response = read_response(&mut stream, Duration::from_secs(10));
    assert!(
        response.is_empty()
            || response.starts_with("HTTP/1.1 431")
            || response.starts_with("HTTP/1.1 400"),
        "{response}"
    );
    assert!(!response.starts_with("HTTP/1.1 200"));
    // The server is still fine for everybody else.
    assert_eq!(client().get(reg.url("/v2/")).send().unwrap().status(), 200);
}
