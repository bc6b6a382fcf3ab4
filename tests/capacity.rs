//! What each registry operation costs the store and Redis, counted: the real binary on S3
//! (s3s-fs behind a front that names every request's S3 operation), once with fenced leases
//! (the store honours conditional writes) and once with Redis locks (what Garage gets). The
//! counts are printed as the table of docs/scaling.md (`cargo test --test capacity --
//! --nocapture`) and bounded here, so a change that makes an operation dearer fails.

mod common;

use std::collections::BTreeMap;

use common::copy_limit::CopyLimitFront;
use common::redis::Redis;
use common::s3::S3Server;
use common::uploads::{content, MIB};
use common::{client, sha256, BerthProcess};

/// Total Redis commands served so far (`INFO commandstats`, the INFO calls themselves left out).
fn redis_commands(port: u16) -> u64 {
    let client = redis::Client::open(format!("redis://127.0.0.1:{port}/")).unwrap();
    let mut c = client.get_connection().unwrap();
    let info: String = redis::cmd("INFO")
        .arg("commandstats")
        .query(&mut c)
        .unwrap();
    info.lines()
        .filter(|l| l.starts_with("cmdstat_") && !l.starts_with("cmdstat_info:"))
        .filter_map(|l| {
            let calls = l.split("calls=").nth(1)?.split(',').next()?;
            calls.parse::<u64>().ok()
        })
        .sum()
}

struct Meter<'a> {
    front: &'a CopyLimitFront,
    redis: Option<u16>,
    rows: Vec<(String, BTreeMap<&'static str, u64>, u64)>,
}

impl Meter<'_> {
    /// Runs `operation` and records what it cost under `name`.
    fn measure(&mut self, name: &str, operation: impl FnOnce()) -> (u64, u64) {
        self.front.take_operations();
        let redis_before = self.redis.map_or(0, redis_commands);
        operation();
        // Work finishing after the answer (garbage collected staged pieces) counts too.
        std::thread::sleep(std::time::Duration::from_millis(300));
        let mut counts = BTreeMap::new();
        for op in self.front.take_operations() {
            *counts.entry(op).or_insert(0) += 1;
        }
        let redis = self
            .redis
            .map_or(0, |p| redis_commands(p).saturating_sub(redis_before));
        let total = counts.values().sum();
        self.rows.push((name.to_string(), counts, redis));
        (total, redis)
    }

    fn print(&self, title: &str) {
        println!("\n{title}\n\n| operation | S3 requests | of which | Redis commands |\n|---|---|---|---|");
        for (name, counts, redis) in &self.rows {
            let total: u64 = counts.values().sum();
            let detail: Vec<String> = counts.iter().map(|(op, n)| format!("{op} {n}")).collect();
            println!("| {name} | {total} | {} | {redis} |", detail.join(", "));
        }
    }
}

fn push_monolithic(base: &str, repo: &str, blob: &[u8]) {
    let r = client()
        .post(format!(
            "{base}/v2/{repo}/blobs/uploads/?digest={}",
            sha256(blob)
        ))
        .header("Content-Type", "application/octet-stream")
        .body(blob.to_vec())
        .send()
        .unwrap();
    assert_eq!(r.status(), 201, "{}", r.text().unwrap());
}

fn push_chunked(base: &str, repo: &str, blob: &[u8], chunk: usize) {
    let location = common::start_upload_at(base, repo);
    let mut offset = 0u64;
    for piece in blob.chunks(chunk) {
        let r = common::patch_chunk(&location, offset, piece);
        assert_eq!(r.status(), 202, "{}", r.text().unwrap());
        offset += piece.len() as u64;
    }
    let r = common::complete_upload(&location, &sha256(blob));
    assert_eq!(r.status(), 201, "{}", r.text().unwrap());
}

/// Measures every operation on `berth`, and checks each stays within its bound (S3, Redis).
fn measure_all(berth: &BerthProcess, meter: &mut Meter, locked_in_redis: bool) {
    let base = berth.url.as_str();
    let repo = "capacity/app";
    let small = content(MIB, 21);
    let (s3, redis) = meter.measure("monolithic push (1 MiB blob)", || {
        push_monolithic(base, repo, &small)
    });
    assert!(s3 <= 20, "monolithic push: {s3} S3 requests");
    assert!(redis <= 30, "monolithic push: {redis} Redis commands");
    let large = content(30 * MIB, 22);
    let (s3, redis) = meter.measure("chunked push (3 chunks of 10 MiB)", || {
        push_chunked(base, repo, &large, 10 * MIB)
    });
    assert!(s3 <= 50, "chunked push: {s3} S3 requests");
    if locked_in_redis {
        assert!(redis >= 3, "every chunk takes the lock: {redis}");
    }
    let config = content(512, 23);
    push_monolithic(base, repo, &config);
    let manifest = common::image_manifest(
        (&sha256(&config), config.len()),
        &[(&sha256(&large), large.len())],
    );
    let (s3, _) = meter.measure("manifest PUT (by tag)", || {
        let r = client()
            .put(format!("{base}/v2/{repo}/manifests/v1"))
            .header("Content-Type", "application/vnd.oci.image.manifest.v1+json")
            .body(manifest.clone())
            .send()
            .unwrap();
        assert_eq!(r.status(), 201, "{}", r.text().unwrap());
    });
    assert!(s3 <= 20, "manifest PUT: {s3} S3 requests");
    let (s3, redis) = meter.measure("manifest GET (by tag)", || {
        let r = client()
            .get(format!("{base}/v2/{repo}/manifests/v1"))
            .header("Accept", "application/vnd.oci.image.manifest.v1+json")
            .send()
            .unwrap();
        assert_eq!(r.status(), 200);
    });
    assert!(s3 <= 3, "manifest GET: {s3} S3 requests");
    assert_eq!(redis, 0, "reads take no lock");
    let (s3, _) = meter.measure("blob HEAD", || {
        let r = client()
            .head(format!("{base}/v2/{repo}/blobs/{}", sha256(&large)))
            .send()
            .unwrap();
        assert_eq!(r.status(), 200);
    });
    assert!(s3 <= 2, "blob HEAD: {s3} S3 requests");
    let (s3, _) = meter.measure(
        "blob GET, 30 MiB (redirected; the client's GET included)",
        || {
            let r = client()
                .get(format!("{base}/v2/{repo}/blobs/{}", sha256(&large)))
                .send()
                .unwrap();
            assert_eq!(r.status(), 307);
            let location = r.headers()["location"].to_str().unwrap().to_string();
            let body = client().get(location).send().unwrap().bytes().unwrap();
            assert_eq!(body.len(), large.len());
        },
    );
    assert!(s3 <= 3, "redirected blob GET: {s3} S3 requests");
    let (s3, _) = meter.measure("tags list", || {
        let r = client()
            .get(format!("{base}/v2/{repo}/tags/list"))
            .send()
            .unwrap();
        assert_eq!(r.status(), 200);
    });
    assert!(s3 <= 2, "tags list: {s3} S3 requests");
}

fn instance(
    dir: &std::path::Path,
    env: &[(String, String)],
    extra: &[(&str, &str)],
) -> BerthProcess {
    let config = dir.join("berth.yml");
    std::fs::write(&config, "version: 0.1\nlog:\n  level: warn\n").unwrap();
    let mut env: Vec<(&str, &str)> = env.iter().map(|(k, v)| (k.as_str(), v.as_str())).collect();
    env.extend_from_slice(extra);
    BerthProcess::start(&config, &env)
}

#[test]
fn what_each_operation_costs_with_fenced_leases_and_with_redis_locks() {
    let server = S3Server::start();
    let front = CopyLimitFront::start(&server, 5 * 1024 * MIB as u64);
    let dir = tempfile::tempdir().unwrap();

    let bucket = server.bucket();
    let leases = instance(dir.path(), &front.env(&server, &bucket), &[]);
    let mut meter = Meter {
        front: &front,
        redis: None,
        rows: Vec::new(),
    };
    measure_all(&leases, &mut meter, false);
    meter.print("fenced leases (the store honours conditional writes)");
    drop(leases);

    let redis = Redis::start(common::free_port(), dir.path());
    let addr = format!("127.0.0.1:{}", redis.port);
    let bucket = server.bucket();
    let locked = instance(
        dir.path(),
        &front.env(&server, &bucket),
        &[
            ("REGISTRY_STORAGE_S3_UPLOADLOCKING", "redis"),
            ("REGISTRY_REDIS_ADDR", &addr),
        ],
    );
    let mut meter = Meter {
        front: &front,
        redis: Some(redis.port),
        rows: Vec::new(),
    };
    measure_all(&locked, &mut meter, true);
    meter.print("Redis locks (what a store ignoring conditional writes gets)");
}
