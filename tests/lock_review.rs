//! An adversary's review of the upload locks, against the real binary: two berth processes on
//! one s3s-fs bucket, with fenced leases or with a real redis-server. Each test is a case that
//! broke a guarantee of docs/scaling.md ("locking per store") before its fix: one writer per
//! upload, a stale writer's bytes never recorded, nothing acknowledged lost, a blob visible only
//! with the bytes its digest names.

mod common;

use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use common::redis::Redis;
use common::s3::S3Server;
use common::uploads::{
    assert_blob, content, patch, signal, start_instance, start_upload, status, RawPatch, MIB,
};
use common::{sha256, BerthProcess};

/// An instance on `bucket` with `extra` variables; its configuration file in `dir`.
fn instance(dir: &Path, server: &S3Server, bucket: &str, extra: &[(&str, &str)]) -> BerthProcess {
    start_instance(dir, "berth.yml", server.env(bucket), extra)
}

/// The upload id of an upload's path (`/v2/<repo>/blobs/uploads/<id>`).
fn upload_id(path: &str) -> String {
    let id = path.rsplit('/').next().unwrap();
    id.split('?').next().unwrap().to_string()
}

/// Where s3s-fs keeps the upload's objects (one file per object).
fn upload_dir(server: &S3Server, bucket: &str, id: &str) -> PathBuf {
    server
        .dir
        .join(bucket)
        .join("docker/registry/v2/_berth/uploads")
        .join(id)
}

/// Waits up to `limit` for `done`, failing with `what`.
fn wait_for(limit: Duration, what: &str, mut done: impl FnMut() -> bool) {
    let until = Instant::now() + limit;
    while !done() {
        assert!(Instant::now() < until, "timed out waiting for {what}");
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// How many of `process`'s log lines contain `text`.
fn logged(process: &BerthProcess, text: &str) -> usize {
    process
        .log_lines()
        .iter()
        .filter(|l| l.contains(text))
        .count()
}

/// Starts a PATCH of `chunk` at `offset` through `b` and sends all of it but its last byte, once
/// `b` has taken the upload over (retrying while it answers 416 because another holds it; `before`
/// runs before each try). The caller sends the last byte.
fn patch_once_taken_over(
    b: &BerthProcess,
    path: &str,
    offset: u64,
    chunk: &[u8],
    mut before: impl FnMut(),
) -> RawPatch {
    let marker = "taking over the expired lease";
    let seen = logged(b, marker);
    let started = Instant::now();
    loop {
        assert!(
            started.elapsed() < Duration::from_secs(45),
            "B never took the upload over"
        );
        before();
        let mut raw = RawPatch::start(&b.host, path, offset, chunk.len());
        raw.send(&chunk[..64 * 1024]);
        // B either takes the upload over (and logs it) or gives up after its lock wait (3 s).
        let until = Instant::now() + Duration::from_secs(10);
        loop {
            if logged(b, marker) > seen {
                raw.send(&chunk[64 * 1024..chunk.len() - 1]);
                return raw;
            }
            if let Some(code) = raw.answered(Duration::from_millis(50)) {
                assert!(
                    code == 416 || code == 0,
                    "B's PATCH while another holds the upload: {code}"
                );
                break;
            }
            assert!(Instant::now() < until, "B neither took over nor answered");
        }
        std::thread::sleep(Duration::from_millis(200));
    }
}

/// Case 1: instance A stalls (SIGSTOP) holding the lease of a small chunk (staged, so no part
/// number, whose reservation would have noticed the takeover), after it read the record. B takes
/// the upload over once A's lease expired, and has read the record but not written it yet when A
/// wakes up. A's record write, conditional only on the record it read (still the current one),
/// used to succeed: A's stale bytes were recorded and B, the rightful holder, was refused.
#[test]
fn a_lease_holder_stalled_before_writing_its_record_records_nothing() {
    let server = S3Server::shared();
    let bucket = server.bucket();
    let dirs = (tempfile::tempdir().unwrap(), tempfile::tempdir().unwrap());
    let a = instance(dirs.0.path(), server, &bucket, &[]);
    let b = instance(dirs.1.path(), server, &bucket, &[]);
    let repo = "review/stalled-record";
    let path = start_upload(&a.url, repo);
    let lease = upload_dir(server, &bucket, &upload_id(&path)).join("lease");
    let first = content(MIB, 1);
    let r = patch(&a.url, &path, 0, &first);
    assert_eq!(r.status(), 202, "{}", r.text().unwrap());

    // A's second chunk: half of it sent once A holds the lease again, then A stalls.
    let stale = content(MIB, 2);
    let mut stalled = RawPatch::start(&a.host, &path, MIB as u64, stale.len());
    stalled.send(&stale[..MIB / 2]);
    wait_for(Duration::from_secs(20), "A to take the lease", || {
        std::fs::read_to_string(&lease).is_ok_and(|l| l.contains("\"released\":false"))
    });
    signal(&a, "STOP");

    // The client retries the chunk through B, other bytes of the same length; B takes over.
    let retried = content(MIB, 3);
    let mut by_b = patch_once_taken_over(&b, &path, MIB as u64, &retried, || {});
    // Give B a moment to read the record after taking the lease (either way A must fail).
    std::thread::sleep(Duration::from_millis(500));

    // A wakes up with the rest of its body: its request must not be recorded.
    signal(&a, "CONT");
    stalled.send(&stale[MIB / 2..]);
    let late = stalled.status();
    by_b.send(&retried[retried.len() - 1..]);
    let rightful = by_b.status();
    assert_ne!(late, 202, "A's stale chunk was recorded");
    assert_eq!(rightful, 202, "B, holding the upload, was refused");

    let expected: Vec<u8> = [first.as_slice(), retried.as_slice()].concat();
    assert_eq!(status(&a.url, &path), expected.len() as u64);
    let r = common::complete_upload(&format!("{}{path}", a.url), &sha256(&expected));
    assert_eq!(r.status(), 201, "{}", r.text().unwrap());
    assert_blob(&b.url, repo, &expected);
}

/// Case 5: the store stamps the lease far in the past (its Last-Modified off by more than the
/// lease's life, as a store node with a wrong clock would; here the lease file's mtime, which is
/// s3s-fs's Last-Modified, set an hour back). Expiry is then judged early: B takes over the lease
/// of a live holder A, mid-request, without any stall. The two overlap; A's record write must
/// still lose to B's hold.
#[test]
fn a_lease_stamped_far_in_the_past_is_taken_over_yet_its_live_holder_records_nothing() {
    let server = S3Server::shared();
    let bucket = server.bucket();
    let dirs = (tempfile::tempdir().unwrap(), tempfile::tempdir().unwrap());
    let a = instance(dirs.0.path(), server, &bucket, &[]);
    let b = instance(dirs.1.path(), server, &bucket, &[]);
    let repo = "review/skewed-lease";
    let path = start_upload(&a.url, repo);
    let lease = upload_dir(server, &bucket, &upload_id(&path)).join("lease");
    let first = content(MIB, 4);
    let r = patch(&a.url, &path, 0, &first);
    assert_eq!(r.status(), 202, "{}", r.text().unwrap());

    let live = content(MIB, 5);
    let mut by_a = RawPatch::start(&a.host, &path, MIB as u64, live.len());
    by_a.send(&live[..MIB / 2]);
    wait_for(Duration::from_secs(20), "A to take the lease", || {
        std::fs::read_to_string(&lease).is_ok_and(|l| l.contains("\"released\":false"))
    });

    let retried = content(MIB, 6);
    let an_hour_ago = std::time::SystemTime::now() - Duration::from_secs(3600);
    let mut by_b = patch_once_taken_over(&b, &path, MIB as u64, &retried, || {
        // A renews every 5 s, restamping it: stamp it back again before each try.
        let file = std::fs::File::options().write(true).open(&lease).unwrap();
        file.set_modified(an_hour_ago).unwrap();
    });
    std::thread::sleep(Duration::from_millis(500));

    by_a.send(&live[MIB / 2..]);
    let overlapped = by_a.status();
    by_b.send(&retried[retried.len() - 1..]);
    let rightful = by_b.status();
    assert_ne!(
        overlapped, 202,
        "A's chunk was recorded after B took the upload over"
    );
    assert_eq!(rightful, 202, "B, holding the upload, was refused");

    let expected: Vec<u8> = [first.as_slice(), retried.as_slice()].concat();
    assert_eq!(status(&b.url, &path), expected.len() as u64);
    let r = common::complete_upload(&format!("{}{path}", b.url), &sha256(&expected));
    assert_eq!(r.status(), 201, "{}", r.text().unwrap());
    assert_blob(&a.url, repo, &expected);
}

/// Redis-locked instances A and B on a fresh bucket.
fn redis_pair(
    server: &S3Server,
    bucket: &str,
    redis: &Redis,
    dirs: &(tempfile::TempDir, tempfile::TempDir),
) -> (BerthProcess, BerthProcess) {
    let addr = format!("127.0.0.1:{}", redis.port);
    let extra = [
        ("REGISTRY_STORAGE_S3_UPLOADLOCKING", "redis"),
        ("REGISTRY_REDIS_ADDR", addr.as_str()),
    ];
    (
        instance(dirs.0.path(), server, bucket, &extra),
        instance(dirs.1.path(), server, bucket, &extra),
    )
}

/// Case 3: Redis loses everything (restarted empty, FLUSHALL) while A streams a chunk under
/// token T. B's next take found no counter and was kept above the records' highest token only,
/// T - 1: it got T again, A's token. A's late staged piece then landed under the very name B's
/// record names (`staged/<offset>.<T>`), and the blob was committed with A's bytes under the
/// digest of B's.
#[test]
fn after_redis_loses_its_keys_mid_patch_the_old_holder_cannot_write_under_the_new_token() {
    let server = S3Server::shared();
    let bucket = server.bucket();
    let dir = tempfile::tempdir().unwrap();
    let redis = Redis::start(common::free_port(), dir.path());
    let dirs = (tempfile::tempdir().unwrap(), tempfile::tempdir().unwrap());
    let (a, b) = redis_pair(server, &bucket, &redis, &dirs);
    let repo = "review/flushed";
    let path = start_upload(&a.url, repo);
    let lock = format!("berth:{bucket}::upload:{}:lock", upload_id(&path));
    let first = content(MIB, 7);
    let r = patch(&a.url, &path, 0, &first);
    assert_eq!(r.status(), 202, "{}", r.text().unwrap());

    let stale = content(MIB, 8);
    let mut by_a = RawPatch::start(&a.host, &path, MIB as u64, stale.len());
    by_a.send(&stale[..MIB / 2]);
    wait_for(Duration::from_secs(20), "A to take the lock", || {
        redis.get(&lock).is_some()
    });
    redis.flushall();

    // B takes the upload (nothing holds it in Redis any more) and writes the chunk again, other
    // bytes of the same length, all of it.
    let retried = content(MIB, 9);
    let r = patch(&b.url, &path, MIB as u64, &retried);
    assert_eq!(r.status(), 202, "{}", r.text().unwrap());

    // A's body ends: it stages its bytes under its token before it finds its lock gone.
    by_a.send(&stale[MIB / 2..]);
    assert_ne!(by_a.status(), 202, "A's request lost its lock");

    let expected: Vec<u8> = [first.as_slice(), retried.as_slice()].concat();
    assert_eq!(status(&b.url, &path), expected.len() as u64);
    let r = common::complete_upload(&format!("{}{path}", b.url), &sha256(&expected));
    assert_eq!(r.status(), 201, "{}", r.text().unwrap());
    assert_blob(&a.url, repo, &expected);
}

/// The highest `state.<token>` record of the upload in `dir` (names are zero-padded).
fn newest_record(dir: &Path) -> PathBuf {
    std::fs::read_dir(dir)
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| {
            p.file_name()
                .and_then(|n| n.to_str())
                .is_some_and(|n| n.starts_with("state."))
        })
        .max()
        .expect("a fenced record")
}

/// Case 4: a stray record with a huge token (`state.<token>`, written by hand or by another
/// program) is what readers take. Below 2^52 berth's tokens simply continue above it (on main
/// one above 10^14 was mangled by Lua's 14-digit number conversion). Tokens beyond 2^53 cannot
/// be counted by Redis's Lua (doubles): on main, above 2^63 the script's answer overflowed and
/// every PATCH waited 3 s and got 416 as if the upload were busy, forever, with nothing saying
/// why, and the counter stayed poisoned in Redis. Now the request fails (500) and the log names
/// the object; the upload works again once it is removed.
#[test]
fn a_stray_record_with_a_token_redis_cannot_count_is_refused_clearly() {
    let server = S3Server::shared();
    let bucket = server.bucket();
    let dir = tempfile::tempdir().unwrap();
    let redis = Redis::start(common::free_port(), dir.path());
    let dirs = (tempfile::tempdir().unwrap(), tempfile::tempdir().unwrap());
    let (a, _b) = redis_pair(server, &bucket, &redis, &dirs);
    let repo = "review/stray";
    let path = start_upload(&a.url, repo);
    let chunks = [content(MIB, 10), content(MIB, 11), content(MIB, 12)];
    let r = patch(&a.url, &path, 0, &chunks[0]);
    assert_eq!(r.status(), 202, "{}", r.text().unwrap());
    let dir = upload_dir(server, &bucket, &upload_id(&path));

    // A copy of the current record under a token above Redis's clock, yet countable.
    std::fs::copy(newest_record(&dir), dir.join("state.00004000000000000000")).unwrap();
    let r = patch(&a.url, &path, MIB as u64, &chunks[1]);
    assert_eq!(r.status(), 202, "{}", r.text().unwrap());

    // And one under a token no Redis counter reaches exactly.
    let stray_name = "state.10000000000000000000";
    let stray = dir.join(stray_name);
    std::fs::copy(newest_record(&dir), &stray).unwrap();
    let r = patch(&a.url, &path, 2 * MIB as u64, &chunks[2]);
    assert_eq!(r.status(), 500, "refused, not busy");
    assert!(
        a.log_lines()
            .iter()
            .any(|l| l.contains(stray_name) && l.contains("fencing token")),
        "the log names the stray record: {:#?}",
        a.log_lines()
    );
    std::fs::remove_file(&stray).unwrap();
    let r = patch(&a.url, &path, 2 * MIB as u64, &chunks[2]);
    assert_eq!(r.status(), 202, "{}", r.text().unwrap());
    let expected = chunks.concat();
    let r = common::complete_upload(&format!("{}{path}", a.url), &sha256(&expected));
    assert_eq!(r.status(), 201, "{}", r.text().unwrap());
    assert_blob(&a.url, repo, &expected);
}
