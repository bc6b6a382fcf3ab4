//! Several instances of the real binary over one S3 bucket (s3s-fs): one writer per upload,
//! through fenced leases (a store honouring conditional writes) or Redis locks with fencing
//! tokens (`storage.s3.uploadlocking: redis`, what a store ignoring them gets). The review's
//! scenario: an instance SIGSTOPped mid-PATCH past its lease, resumed after another instance
//! took the upload over, must not write into it; the blob stays correct.

mod common;

use std::time::{Duration, Instant};

use common::redis::Redis;
use common::s3::S3Server;
use common::uploads::{
    assert_blob, content, patch, signal, start_instance, start_upload, status, RawPatch, MIB,
};
use common::{sha256, BerthProcess};

/// An instance on `bucket` with `extra` variables; its configuration file in `dir`.
fn instance(
    dir: &std::path::Path,
    server: &S3Server,
    bucket: &str,
    extra: &[(&str, &str)],
) -> BerthProcess {
    start_instance(dir, "berth.yml", server.env(bucket), extra)
}

/// The review's scenario: instance A stalls (SIGSTOP) in the middle of a PATCH for longer than
/// its hold on the upload lives; instance B takes the upload over and accepts the client's
/// retry of that chunk; A resumes (SIGCONT) with the rest of its body. A's late write must be
/// refused, and the upload completes to exactly the bytes B accepted.
fn stalled_holder_is_fenced_out(extra: &[(&str, &str)]) {
    let server = S3Server::shared();
    let bucket = server.bucket();
    let dirs = (tempfile::tempdir().unwrap(), tempfile::tempdir().unwrap());
    let a = instance(dirs.0.path(), server, &bucket, extra);
    let b = instance(dirs.1.path(), server, &bucket, extra);
    let repo = "fenced/upload";
    let path = start_upload(&a.url, repo);
    let first = content(6 * MIB, 1);
    let r = patch(&a.url, &path, 0, &first);
    assert_eq!(r.status(), 202, "{}", r.text().unwrap());

    // A's second chunk: half of it sent, then A stalls holding the upload.
    let stalled_chunk = content(6 * MIB, 2);
    let mut stalled = RawPatch::start(&a.host, &path, first.len() as u64, stalled_chunk.len());
    stalled.send(&stalled_chunk[..3 * MIB]);
    std::thread::sleep(Duration::from_millis(500));
    signal(&a, "STOP");

    // The client gives up on A and sends the chunk again, other bytes, through B.
    let retried = content(6 * MIB, 3);
    let started = Instant::now();
    let mut refused = 0;
    loop {
        let r = patch(&b.url, &path, first.len() as u64, &retried);
        match r.status().as_u16() {
            202 => break,
            416 => {
                refused += 1;
                assert!(
                    started.elapsed() < Duration::from_secs(40),
                    "B never took the upload over"
                );
                std::thread::sleep(Duration::from_millis(500));
            }
            other => {
                signal(&a, "CONT");
                panic!("B's PATCH: {other} {}", r.text().unwrap());
            }
        }
    }
    assert!(
        refused > 0,
        "B waited for A's hold to expire rather than writing beside it"
    );

    // A wakes up and receives the rest of its body: its write is refused.
    signal(&a, "CONT");
    stalled.send(&stalled_chunk[3 * MIB..]);
    let late = stalled.status();
    assert_ne!(late, 202, "the stalled instance's late write was accepted");
    let expected: Vec<u8> = [first.as_slice(), retried.as_slice()].concat();
    assert_eq!(status(&a.url, &path), expected.len() as u64);
    assert_eq!(status(&b.url, &path), expected.len() as u64);

    // Completed through the instance that stalled: the blob is what B accepted.
    let r = common::complete_upload(&format!("{}{path}", a.url), &sha256(&expected));
    assert_eq!(r.status(), 201, "{}", r.text().unwrap());
    assert_blob(&b.url, repo, &expected);
    assert!(
        a.log_lines()
            .iter()
            .any(|l| l.contains("this request's bytes are not recorded")),
        "A says why its request failed: {:#?}",
        a.log_lines()
    );
}

#[test]
fn a_stalled_lease_holder_cannot_write_into_an_upload_another_took_over() {
    stalled_holder_is_fenced_out(&[]);
}

#[test]
fn a_stalled_redis_lock_holder_cannot_write_into_an_upload_another_took_over() {
    let dir = tempfile::tempdir().unwrap();
    let redis = Redis::start(common::free_port(), dir.path());
    let addr = format!("127.0.0.1:{}", redis.port);
    stalled_holder_is_fenced_out(&[
        ("REGISTRY_STORAGE_S3_UPLOADLOCKING", "redis"),
        ("REGISTRY_REDIS_ADDR", &addr),
    ]);
}

#[test]
fn without_redis_uploads_are_refused_with_503_and_recover_when_it_returns() {
    let server = S3Server::shared();
    let bucket = server.bucket();
    let dir = tempfile::tempdir().unwrap();
    let port = common::free_port();
    let mut redis = Redis::start(port, dir.path());
    let addr = format!("127.0.0.1:{port}");
    let berth = instance(
        dir.path(),
        server,
        &bucket,
        &[
            ("REGISTRY_STORAGE_S3_UPLOADLOCKING", "redis"),
            ("REGISTRY_REDIS_ADDR", &addr),
        ],
    );
    assert!(
        berth
            .log_lines()
            .iter()
            .any(|l| l.contains("upload locks:") && l.contains("Redis")),
        "the start-up log names the choice: {:?}",
        berth.log_lines()
    );
    let path = start_upload(&berth.url, "needs/redis");
    let data = content(7 * MIB, 4);
    let r = patch(&berth.url, &path, 0, &data[..6 * MIB]);
    assert_eq!(r.status(), 202, "{}", r.text().unwrap());

    redis.stop();
    let r = patch(&berth.url, &path, 6 * MIB as u64, &data[6 * MIB..]);
    assert_eq!(r.status(), 503);
    assert!(r.headers().contains_key("retry-after"), "{:?}", r.headers());
    let body = r.text().unwrap();
    assert_eq!(common::error_code(&body), "UNAVAILABLE", "{body}");

    // Back, empty (no persistence): its counters start over, and berth keeps tokens above the
    // ones its records carry.
    let _redis = Redis::start(port, dir.path());
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        let r = patch(&berth.url, &path, 6 * MIB as u64, &data[6 * MIB..]);
        match r.status().as_u16() {
            202 => break,
            503 if Instant::now() < deadline => std::thread::sleep(Duration::from_millis(300)),
            other => panic!("after Redis returned: {other} {}", r.text().unwrap()),
        }
    }
    let r = common::complete_upload(&format!("{}{path}", berth.url), &sha256(&data));
    assert_eq!(r.status(), 201, "{}", r.text().unwrap());
    assert_blob(&berth.url, "needs/redis", &data);
}

#[test]
fn the_start_up_log_says_how_uploads_are_locked() {
    let server = S3Server::shared();
    let bucket = server.bucket();
    let dir = tempfile::tempdir().unwrap();
    let leases = instance(dir.path(), server, &bucket, &[]);
    assert!(
        leases
            .log_lines()
            .iter()
            .any(|l| l.contains("honours conditional writes")),
        "{:?}",
        leases.log_lines()
    );
    let alone = instance(
        dir.path(),
        server,
        &bucket,
        &[("REGISTRY_STORAGE_S3_UPLOADLOCKING", "none")],
    );
    assert!(
        alone
            .log_lines()
            .iter()
            .any(|l| l.contains("only one instance may serve")),
        "{:?}",
        alone.log_lines()
    );
}
