//! Uploads that outlive their connection, their process and their instance: several registries
//! over one storage (a directory, or a bucket when the suite runs with `BERTH_TEST_STORAGE=s3`),
//! `kill -9` at random points, racing writers.

mod common;

use std::io::Write as _;
use std::path::Path;
use std::sync::mpsc;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use common::{client, sha256, BerthProcess, Store, TestRegistry};

/// The storage several registries share: local disk under `dir`, or a fresh bucket.
fn shared_store(dir: &Path) -> Store {
    match common::default_store() {
        Store::Memory => Store::Filesystem(dir.to_path_buf()),
        other => other,
    }
}

fn content(len: usize, seed: u32) -> Vec<u8> {
    let mut x = seed.wrapping_mul(2_654_435_761).max(1);
    (0..len)
        .map(|_| {
            x ^= x << 13;
            x ^= x >> 17;
            x ^= x << 5;
            x as u8
        })
        .collect()
}

/// A pseudo-random number below `n`, different on every call.
fn random_below(n: u64) -> u64 {
    let nanos = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .subsec_nanos() as u64;
    (nanos.wrapping_mul(6_364_136_223_846_793_005) >> 33) % n.max(1)
}

fn start_upload(base: &str, repo: &str) -> String {
    let location = common::start_upload_at(base, repo);
    // The path: after a restart the registry listens elsewhere.
    let path = location.splitn(4, '/').nth(3).unwrap();
    format!("/{path}")
}

/// Bytes the upload holds, as the registry at `base` reports them (`None`: unknown upload).
fn status(base: &str, path: &str) -> Option<u64> {
    let r = client().get(format!("{base}{path}")).send().unwrap();
    if r.status() == 404 {
        return None;
    }
    assert_eq!(r.status(), 204, "status of {path}");
    let range = r.headers()["range"].to_str().unwrap().to_string();
    let end: u64 = range.strip_prefix("0-").unwrap().parse().unwrap();
    // distribution's convention: `0-0` for an empty upload (chunks here are never 1 byte).
    Some(if end == 0 { 0 } else { end + 1 })
}

fn patch(base: &str, path: &str, offset: u64, bytes: &[u8]) -> reqwest::blocking::Response {
    common::patch_chunk(&format!("{base}{path}"), offset, bytes)
}

fn complete(base: &str, path: &str, digest: &str) -> reqwest::blocking::Response {
    common::complete_upload(&format!("{base}{path}"), digest)
}

fn assert_blob(base: &str, repo: &str, expected: &[u8]) {
    let digest = sha256(expected);
    let mut r = client()
        .get(format!("{base}/v2/{repo}/blobs/{digest}"))
        .send()
        .unwrap();
    if r.status() == 307 {
        // On S3 a large blob is fetched from the bucket itself, through a presigned URL.
        let location = r.headers()["location"].to_str().unwrap().to_string();
        assert!(
            common::s3::selected(),
            "only object stores redirect: {location}"
        );
        assert!(location.contains("X-Amz-Signature="), "{location}");
        r = client().get(location).send().unwrap();
    }
    assert_eq!(r.status(), 200);
    let got = r.bytes().unwrap();
    assert_eq!(got.len(), expected.len());
    assert_eq!(sha256(&got), digest, "the blob's bytes match its digest");
}

#[test]
fn two_instances_alternate_the_chunks_of_one_upload() {
    let dir = tempfile::tempdir().unwrap();
    let store = shared_store(dir.path());
    let a = TestRegistry::builder().store(store.clone()).start();
    let b = TestRegistry::builder().store(store).start();
    let data = content(23 * 1024 * 1024 + 12_345, 1);
    let path = start_upload(&a.url, "multi/instance");
    let chunk = 3 * 1024 * 1024 + 7;
    let mut offset = 0u64;
    for (i, piece) in data.chunks(chunk).enumerate() {
        let (writer, other) = if i % 2 == 0 { (&b, &a) } else { (&a, &b) };
        let r = patch(&writer.url, &path, offset, piece);
        assert_eq!(r.status(), 202, "chunk {i}: {}", r.text().unwrap());
        offset += piece.len() as u64;
        assert_eq!(
            status(&other.url, &path),
            Some(offset),
            "the other instance sees it"
        );
    }
    let r = complete(&a.url, &path, &sha256(&data));
    assert_eq!(r.status(), 201, "{}", r.text().unwrap());
    assert_blob(&b.url, "multi/instance", &data);
    assert_eq!(
        status(&b.url, &path),
        None,
        "the finished upload is gone everywhere"
    );
}

#[test]
fn racing_patches_from_two_instances_never_interleave() {
    let dir = tempfile::tempdir().unwrap();
    let store = shared_store(dir.path());
    let a = TestRegistry::builder().store(store.clone()).start();
    let b = TestRegistry::builder().store(store).start();
    let path = start_upload(&a.url, "race");
    let first = content(2 * 1024 * 1024, 2);
    let second = content(2 * 1024 * 1024, 3);
    // A's body trickles in, so its request holds the upload while B's arrives.
    let (gate, rx) = mpsc::channel::<Vec<u8>>();
    let slow_url = format!("{}{path}", a.url);
    let slow_first = first.clone();
    let slow = std::thread::spawn(move || {
        client()
            .patch(slow_url)
            .header("Content-Type", "application/octet-stream")
            .header("Content-Range", format!("0-{}", slow_first.len() - 1))
            .body(reqwest::blocking::Body::sized(
                GatedReader {
                    rx,
                    current: vec![],
                },
                slow_first.len() as u64,
            ))
            .send()
            .map(|r| r.status().as_u16())
    });
    gate.send(first[..1024 * 1024].to_vec()).unwrap();
    std::thread::sleep(Duration::from_millis(300));
    let feeder = {
        let rest = first[1024 * 1024..].to_vec();
        std::thread::spawn(move || {
            // Held for longer than a competing request waits for the lock.
            std::thread::sleep(Duration::from_secs(4));
            gate.send(rest).unwrap();
        })
    };
    let r = patch(&b.url, &path, 0, &second);
    assert_eq!(r.status(), 416, "the second writer is refused");
    feeder.join().unwrap();
    assert_eq!(slow.join().unwrap().unwrap(), 202);
    assert_eq!(status(&b.url, &path), Some(first.len() as u64));
    let r = complete(&b.url, &path, &sha256(&first));
    assert_eq!(r.status(), 201, "{}", r.text().unwrap());
    assert_blob(&a.url, "race", &first);
}

struct GatedReader {
    rx: mpsc::Receiver<Vec<u8>>,
    current: Vec<u8>,
}

impl std::io::Read for GatedReader {
    fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
        if self.current.is_empty() {
            match self.rx.recv() {
                Ok(next) => self.current = next,
                Err(_) => return Ok(0),
            }
        }
        let n = buf.len().min(self.current.len());
        buf[..n].copy_from_slice(&self.current[..n]);
        self.current.drain(..n);
        Ok(n)
    }
}

/// The real binary on `store` (its configuration in `dir`).
fn start_process(dir: &Path, store: &Store) -> BerthProcess {
    let config = dir.join("berth.yml");
    let root = match store {
        Store::Filesystem(root) => root.clone(),
        _ => dir.join("unused"),
    };
    std::fs::write(
        &config,
        format!(
            "version: 0.1\nlog:\n  level: info\nstorage:\n  filesystem:\n    rootdirectory: {}\n  delete:\n    enabled: true\nhttp:\n  addr: 127.0.0.1:0\n",
            root.display()
        ),
    )
    .unwrap();
    let env: Vec<(String, String)> = match store {
        Store::S3(vars) => vars.clone(),
        _ => Vec::new(),
    };
    let env: Vec<(&str, &str)> = env.iter().map(|(k, v)| (k.as_str(), v.as_str())).collect();
    BerthProcess::start(&config, &env)
}

/// Sends a PATCH of `bytes` at `offset` in pieces, slowly, over a raw connection; stops quietly
/// when the server goes away.
fn trickle_patch(host: String, path: String, offset: u64, bytes: Vec<u8>) {
    let Ok(mut s) = std::net::TcpStream::connect(&host) else {
        return;
    };
    let head = format!(
        "PATCH {path} HTTP/1.1\r\nHost: {host}\r\nContent-Type: application/octet-stream\r\nContent-Length: {}\r\nContent-Range: {offset}-{}\r\n\r\n",
        bytes.len(),
        offset + bytes.len() as u64 - 1
    );
    if s.write_all(head.as_bytes()).is_err() {
        return;
    }
    for piece in bytes.chunks(256 * 1024) {
        if s.write_all(piece).is_err() {
            return;
        }
        std::thread::sleep(Duration::from_millis(15));
    }
}

/// Sends the chunk at the upload's current offset, retrying while a dead process's lease on
/// the upload has not expired yet (object stores). Answers the new offset.
fn patch_when_free(base: &str, path: &str, data: &[u8], chunk: usize) -> u64 {
    let deadline = Instant::now() + Duration::from_secs(40);
    loop {
        let offset = status(base, path).expect("the upload survives") as usize;
        let end = (offset + chunk).min(data.len());
        let r = patch(base, path, offset as u64, &data[offset..end]);
        match r.status().as_u16() {
            202 => return end as u64,
            416 if Instant::now() < deadline => std::thread::sleep(Duration::from_millis(500)),
            other => panic!("PATCH at {offset}: {other} {}", r.text().unwrap()),
        }
    }
}

#[test]
fn kill_9_between_and_during_chunks_then_resume() {
    let dir = tempfile::tempdir().unwrap();
    let store = shared_store(&dir.path().join("storage"));
    let data = content(40 * 1024 * 1024, 4);
    let chunk = 4 * 1024 * 1024;
    let mut registry = start_process(dir.path(), &store);
    let path = start_upload(&registry.url, "crash/test");
    let mut cuts = 0;
    loop {
        let offset = status(&registry.url, &path).expect("the upload survives restarts") as usize;
        if offset >= data.len() {
            break;
        }
        if cuts < 4 {
            // Between chunks: one accepted chunk, then the process dies.
            let done = patch_when_free(&registry.url, &path, &data, chunk);
            let _ = done;
            // During a chunk: the body is cut off at a random point by the kill.
            let offset = status(&registry.url, &path).unwrap() as usize;
            let end = (offset + chunk).min(data.len());
            let sender = {
                let (host, path, piece) = (
                    registry.host.clone(),
                    path.clone(),
                    data[offset..end].to_vec(),
                );
                std::thread::spawn(move || trickle_patch(host, path, offset as u64, piece))
            };
            std::thread::sleep(Duration::from_millis(20 + random_below(200)));
            drop(registry); // SIGKILL
            sender.join().unwrap();
            cuts += 1;
            registry = start_process(dir.path(), &store);
        } else {
            patch_when_free(&registry.url, &path, &data, chunk);
        }
    }
    let r = complete(&registry.url, &path, &sha256(&data));
    assert_eq!(r.status(), 201, "{}", r.text().unwrap());
    assert_blob(&registry.url, "crash/test", &data);
}

#[test]
fn a_blob_is_never_visible_before_its_digest_is_verified() {
    let dir = tempfile::tempdir().unwrap();
    let store = shared_store(dir.path());
    let a = TestRegistry::builder().store(store.clone()).start();
    let data = content(6 * 1024 * 1024, 5);
    let path = start_upload(&a.url, "visible");
    assert_eq!(patch(&a.url, &path, 0, &data[..5_000_000]).status(), 202);
    let digest = sha256(&data);
    let r = client()
        .head(format!("{}/v2/visible/blobs/{digest}", a.url))
        .send()
        .unwrap();
    assert_eq!(r.status(), 404);
    // A wrong digest discards the upload and publishes nothing.
    let r = complete(&a.url, &path, &sha256(b"something else"));
    assert_eq!(r.status(), 400);
    let r = client()
        .head(format!("{}/v2/visible/blobs/{digest}", a.url))
        .send()
        .unwrap();
    assert_eq!(r.status(), 404);
}

/// The newest record in an upload's `state` file on local disk (two 4 KiB slots, each its
/// JSON's length, 8 bytes of checksum and the JSON), as JSON.
fn newest_record(state: &Path) -> serde_json::Value {
    let bytes = std::fs::read(state).unwrap();
    bytes
        .chunks(4096)
        .filter_map(|slot| {
            let len = u32::from_le_bytes(slot.get(..4)?.try_into().ok()?) as usize;
            serde_json::from_slice::<serde_json::Value>(slot.get(12..12 + len)?).ok()
        })
        .max_by_key(|record| record["generation"].as_u64())
        .expect("an upload record")
}

/// Overwrites `range` of `file` with zeros, as a power loss does to data pages never written
/// back (the file keeps its size).
fn zero(file: &Path, range: std::ops::Range<u64>) {
    use std::os::unix::fs::FileExt;
    let f = std::fs::OpenOptions::new().write(true).open(file).unwrap();
    f.write_all_at(&vec![0u8; (range.end - range.start) as usize], range.start)
        .unwrap();
}

#[test]
fn a_power_loss_inside_the_hashed_range_never_publishes_wrong_bytes() {
    let dir = tempfile::tempdir().unwrap();
    let root = dir.path();
    let data = content(8 * 1024 * 1024, 6);
    let digest = sha256(&data);
    let path = {
        let a = TestRegistry::builder().filesystem(root).start();
        let path = start_upload(&a.url, "power/loss");
        assert_eq!(patch(&a.url, &path, 0, &data).status(), 202);
        path
    };
    let id = path.rsplit('/').next().unwrap();
    let upload = root.join("docker/registry/v2/_berth/uploads").join(id);
    let hashed = newest_record(&upload.join("state"))["hash"]["offset"]
        .as_u64()
        .expect("the record holds a hash state");
    let lost = 1024 * 1024..1024 * 1024 + 64 * 1024;
    assert!(
        hashed >= lost.end,
        "the record's hash state covers the lost pages ({hashed} bytes hashed)"
    );
    // The machine lost power: the record survived, 64 KiB of the data it hashed did not.
    zero(&upload.join("data"), lost.clone());

    // A fresh registry continues from the record and is asked to complete with the right
    // digest: the stored bytes do not have it, so nothing is published.
    let b = TestRegistry::builder().filesystem(root).start();
    assert_eq!(status(&b.url, &path), Some(data.len() as u64));
    let r = complete(&b.url, &path, &digest);
    assert_eq!(r.status(), 400);
    assert_eq!(common::error_code(&r.text().unwrap()), "DIGEST_INVALID");
    let blob_url = format!("{}/v2/power/loss/blobs/{digest}", b.url);
    assert_eq!(client().head(&blob_url).send().unwrap().status(), 404);
    assert_eq!(status(&b.url, &path), None, "the broken upload is removed");

    // A blob stored with bytes that are not its digest's (published by a registry without
    // that check, or torn with fsync off): a correct push of the same digest replaces it.
    assert_eq!(common::push_blob(&b, "power/loss", &data), digest);
    let hex = digest.strip_prefix("sha256:").unwrap();
    let blob = root
        .join("docker/registry/v2/blobs/sha256")
        .join(&hex[..2])
        .join(hex)
        .join("data");
    zero(&blob, lost);
    assert_eq!(common::push_blob(&b, "power/loss", &data), digest);
    assert_blob(&b.url, "power/loss", &data);
}
