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

/// The status of a `POST` opening an upload session in `repo`.
fn open_session(base: &str, repo: &str) -> u16 {
    let r = client()
        .post(format!("{base}/v2/{repo}/blobs/uploads/"))
        .send()
        .unwrap();
    r.status().as_u16()
}

fn assert_serves(base: &str) {
    let r = client().get(format!("{base}/v2/")).send().unwrap();
    assert_eq!(r.status(), 200);
}

/// `VmHWM` (peak) and `VmRSS` of a process, in KiB.
fn memory_kib(pid: u32) -> (u64, u64) {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap();
    let field = |name: &str| -> u64 {
        status
            .lines()
            .find_map(|l| l.strip_prefix(name))
            .and_then(|v| v.split_whitespace().next())
            .and_then(|v| v.parse().ok())
            .unwrap()
    };
    (field("VmHWM:"), field("VmRSS:"))
}

#[test]
fn a_flood_of_unfinished_heads_from_one_address_holds_little_memory() {
    let dir = tempfile::tempdir().unwrap();
    let config = dir.path().join("config.yml");
    // Loopback is trusted by default (a proxy on the same host); here it is the attacker.
    std::fs::write(
        &config,
        format!(
            "version: 0.1\nstorage:\n  filesystem:\n    rootdirectory: {}\nhttp:\n  trustedproxies: []\n\
             \x20 maxconnectionsperaddress: 50\n",
            dir.path().join("data").display()
        ),
    )
    .unwrap();
    let berth = common::BerthProcess::start(&config, &[]);
    let addr: std::net::SocketAddr = berth.host.parse().unwrap();
    assert_serves(&berth.url);
    let (_, before) = memory_kib(berth.pid());

    // 1,600 connections from 127.0.0.1, each sending 120,000 bytes of a head that never ends,
    // all within the 5 s the server gives a head.
    let head = format!(
        "GET /v2/ HTTP/1.1\r\nHost: x\r\nX-Pad: {}",
        "a".repeat(120_000)
    );
    let started = Instant::now();
    let floods: Vec<_> = (0..4)
        .map(|_| {
            let head = head.clone();
            std::thread::spawn(move || {
                let mut held = Vec::new();
                for _ in 0..400 {
                    let Ok(mut stream) = TcpStream::connect(addr) else {
                        continue;
                    };
                    stream
                        .set_write_timeout(Some(Duration::from_millis(500)))
                        .unwrap();
                    let _ = stream.write_all(head.as_bytes());
                    held.push(stream);
                }
                held
            })
        })
        .collect();
    let held: Vec<TcpStream> = floods.into_iter().flat_map(|t| t.join().unwrap()).collect();
    let flooded_in = started.elapsed();
    // Somebody else is served meanwhile.
    let other = common::client_from("127.0.0.3");
    assert_eq!(
        other
            .get(format!("{}/v2/", berth.url))
            .send()
            .unwrap()
            .status(),
        200
    );
    let (peak, _) = memory_kib(berth.pid());
    let flood = held.len();
    drop(held);
    // Freed memory is given back within seconds (heads time out after 5 s, trims every 5 s).
    std::thread::sleep(Duration::from_secs(11));
    let (_, after) = memory_kib(berth.pid());
    let grown = peak.saturating_sub(before);
    eprintln!(
        "flood of {flood} connections in {flooded_in:?}: RSS {before} KiB before, peak {peak}, \
         {after} after"
    );
    // Unlimited, 1,600 buffered heads took ~210 MiB here; 50 of them take about 6, and each
    // refused connection holds the HTTP layer's 32 KiB read buffer until it is closed.
    assert!(
        grown < 110 * 1024,
        "RSS grew by {grown} KiB during the flood"
    );
    assert!(
        after < before + 24 * 1024,
        "RSS {after} KiB after the flood, {before} before"
    );
    assert_serves(&berth.url);
}

#[test]
fn open_upload_sessions_are_capped_per_user_and_per_repository() {
    let reg = TestRegistry::builder()
        .env("REGISTRY_UPLOADS_MAXPERUSER", "5")
        .env("REGISTRY_UPLOADS_MAXPERREPOSITORY", "8")
        .start();
    let open = |client: &reqwest::blocking::Client, repo: &str| {
        client
            .post(reg.url(&format!("/v2/{repo}/blobs/uploads/")))
            .send()
            .unwrap()
    };
    let pusher = common::client_from("127.0.0.1");
    let mut sessions: Vec<String> = (0..5)
        .map(|_| {
            let r = open(&pusher, "team/app");
            assert_eq!(r.status(), 202);
            r.headers()["location"].to_str().unwrap().to_string()
        })
        .collect();
    // The sixth of one (anonymous) client: refused, in the spec's format, with a hint.
    let r = open(&pusher, "team/other");
    assert_eq!(r.status(), 429);
    assert!(r.headers().contains_key("retry-after"));
    let body = r.text().unwrap();
    assert_eq!(common::error_code(&body), "TOOMANYREQUESTS", "{body}");
    assert!(body.contains("anonymous@127.0.0.1"), "{body}");

    // Another client may open sessions until the repository holds its eight.
    let other = common::client_from("127.0.0.3");
    for _ in 0..3 {
        assert_eq!(open(&other, "team/app").status(), 202);
    }
    let r = open(&other, "team/app");
    assert_eq!(r.status(), 429);
    let body = r.text().unwrap();
    assert!(body.contains("repository \\\"team/app\\\""), "{body}");
    assert_eq!(open(&other, "team/other").status(), 202);

    // A completed and a cancelled session give their places back.
    let content = b"a finished layer".to_vec();
    let location = sessions.remove(0);
    let sep = if location.contains('?') { '&' } else { '?' };
    let r = pusher
        .put(format!("{location}{sep}digest={}", sha256(&content)))
        .body(content)
        .send()
        .unwrap();
    assert_eq!(r.status(), 201);
    let r = pusher.delete(sessions.remove(0)).send().unwrap();
    assert_eq!(r.status(), 204);
    assert_eq!(open(&pusher, "team/app").status(), 202);
    assert_eq!(open(&pusher, "team/more").status(), 202);
    assert_eq!(open(&pusher, "team/more").status(), 429);
}

#[test]
fn sessions_finished_through_another_instance_stop_counting() {
    let dir = tempfile::tempdir().unwrap();
    let instance = || {
        TestRegistry::builder()
            .filesystem(dir.path())
            .env("REGISTRY_UPLOADS_MAXPERUSER", "3")
            .start()
    };
    let (a, b) = (instance(), instance());
    let mut sessions: Vec<String> = (0..3)
        .map(|_| common::start_upload_at(&a.url, "shared/app"))
        .collect();
    assert_eq!(open_session(&a.url, "shared/app"), 429);
    // Instance b finishes one and cancels another (a load balancer sent those requests there).
    let content = b"finished elsewhere".to_vec();
    let on_b = |location: &str| location.replace(&a.url, &b.url);
    let r = common::patch_chunk(&on_b(&sessions[0]), 0, &content);
    assert_eq!(r.status(), 202);
    let r = common::complete_upload(&on_b(&sessions.remove(0)), &sha256(&content));
    assert_eq!(r.status(), 201);
    let r = client().delete(on_b(&sessions.remove(0))).send().unwrap();
    assert_eq!(r.status(), 204);
    // a learns it when its cap is reached (looking sessions up at most every 2 s): two places
    // again, not three.
    std::thread::sleep(berth::upload::quota::RECHECK_EVERY);
    for _ in 0..2 {
        common::start_upload_at(&a.url, "shared/app");
    }
    assert_eq!(open_session(&a.url, "shared/app"), 429);
}

#[test]
fn a_single_request_push_cut_off_mid_body_leaves_nothing_behind() {
    let dir = tempfile::tempdir().unwrap();
    let reg = TestRegistry::builder()
        .filesystem(dir.path())
        .env("REGISTRY_UPLOADS_MAXPERUSER", "2")
        .start();
    let uploads = dir.path().join("docker/registry/v2/_berth/uploads");
    let digest = sha256(b"never sent whole");
    for _ in 0..4 {
        let mut stream = TcpStream::connect(&reg.host).unwrap();
        write!(
            stream,
            "POST /v2/single/blobs/uploads/?digest={digest} HTTP/1.1\r\nHost: {}\r\n\
             Content-Type: application/octet-stream\r\nContent-Length: 100000000\r\n\r\n",
            reg.host
        )
        .unwrap();
        stream.write_all(&vec![1u8; 3 << 20]).unwrap();
        std::thread::sleep(Duration::from_millis(200));
        // Reset, not closed: the server sees the connection fail mid-body.
        let linger = libc::linger {
            l_onoff: 1,
            l_linger: 0,
        };
        unsafe {
            use std::os::fd::AsRawFd;
            libc::setsockopt(
                stream.as_raw_fd(),
                libc::SOL_SOCKET,
                libc::SO_LINGER,
                (&linger as *const libc::linger).cast(),
                std::mem::size_of::<libc::linger>() as libc::socklen_t,
            );
        }
        drop(stream);
    }
    // Each session is cancelled and its place given back: nothing stays on disk, and the
    // client (capped at 2 sessions) may still open sessions.
    let left = || std::fs::read_dir(&uploads).map(|d| d.count()).unwrap_or(0);
    let start = Instant::now();
    while left() > 0 && start.elapsed() < Duration::from_secs(10) {
        std::thread::sleep(Duration::from_millis(50));
    }
    assert_eq!(left(), 0, "uploads left under {}", uploads.display());
    for _ in 0..2 {
        common::start_upload_at(&reg.url, "single");
    }
}
