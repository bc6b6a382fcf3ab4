//! The blob-descriptor cache with a real Redis (Debian's `redis-server`, started by the test):
//! lookups are served from it (shown by making storage's link reads fail), deletes are seen at
//! once, and the registry keeps working while Redis is stopped and uses it again after Redis
//! comes back. The in-memory cache likewise.

mod common;

use std::time::{Duration, Instant};

use berth::storage::faults::{Faults, Op};
use common::redis::Redis;
use common::{client, push_blob, sha256, TestRegistry};

fn head_blob(reg: &TestRegistry, repo: &str, digest: &str) -> u16 {
    client()
        .head(reg.url(&format!("/v2/{repo}/blobs/{digest}")))
        .send()
        .unwrap()
        .status()
        .as_u16()
}

fn get_blob(reg: &TestRegistry, repo: &str, digest: &str) -> Vec<u8> {
    let r = client()
        .get(reg.url(&format!("/v2/{repo}/blobs/{digest}")))
        .send()
        .unwrap();
    assert_eq!(r.status(), 200);
    r.bytes().unwrap().to_vec()
}

fn blob_key(repo: &str, digest: &str) -> String {
    format!("berth::repository::{repo}::blobs::{digest}")
}

#[test]
fn redis_serves_lookups_survives_its_outage_and_comes_back() {
    let dir = tempfile::tempdir().unwrap();
    let port = common::free_port();
    let mut redis = Redis::start(port, dir.path());
    let faults = Faults::default();
    let reg = TestRegistry::builder()
        .filesystem(&dir.path().join("storage"))
        .faults(&faults)
        .env("REGISTRY_STORAGE_CACHE_BLOBDESCRIPTOR", "redis")
        .env("REGISTRY_REDIS_ADDR", &format!("127.0.0.1:{port}"))
        .env("REGISTRY_REDIS_READTIMEOUT", "200ms")
        .env("REGISTRY_REDIS_WRITETIMEOUT", "200ms")
        .env("REGISTRY_REDIS_DIALTIMEOUT", "200ms")
        .start();
    let layer = b"a layer cached in redis".to_vec();
    let digest = push_blob(&reg, "cached/app", &layer);
    assert_eq!(
        redis.get(&blob_key("cached/app", &digest)).as_deref(),
        Some(layer.len().to_string().as_str()),
        "the push told Redis"
    );

    // Storage cannot read the repository's links now: lookups come from Redis.
    faults.fail(Op::Get, "_layers", 1000);
    assert_eq!(head_blob(&reg, "cached/app", &digest), 200);
    assert_eq!(get_blob(&reg, "cached/app", &digest), layer);
    faults.heal();

    // A delete is seen at once.
    let r = client()
        .delete(reg.url(&format!("/v2/cached/app/blobs/{digest}")))
        .send()
        .unwrap();
    assert_eq!(r.status(), 202);
    assert_eq!(head_blob(&reg, "cached/app", &digest), 404);
    assert_eq!(redis.get(&blob_key("cached/app", &digest)), None);

    // Redis stops: pushes and pulls go on, from storage.
    redis.stop();
    let other = b"pushed while redis was down".to_vec();
    let other_digest = push_blob(&reg, "cached/app", &other);
    assert_eq!(head_blob(&reg, "cached/app", &other_digest), 200);
    assert_eq!(get_blob(&reg, "cached/app", &other_digest), other);
    assert_eq!(head_blob(&reg, "cached/app", &digest), 404);

    // Redis comes back (empty): the registry finds it again by itself.
    let redis = Redis::start(port, dir.path());
    let deadline = Instant::now() + Duration::from_secs(30);
    while redis.get(&blob_key("cached/app", &other_digest)).is_none() {
        assert!(Instant::now() < deadline, "berth did not use Redis again");
        assert_eq!(head_blob(&reg, "cached/app", &other_digest), 200);
        std::thread::sleep(Duration::from_millis(250));
    }
    faults.fail(Op::Get, "_layers", 1000);
    assert_eq!(head_blob(&reg, "cached/app", &other_digest), 200);
}

#[test]
fn the_in_memory_cache_serves_blob_and_manifest_lookups() {
    let dir = tempfile::tempdir().unwrap();
    let faults = Faults::default();
    let reg = TestRegistry::builder()
        .filesystem(&dir.path().join("storage"))
        .faults(&faults)
        .env("REGISTRY_STORAGE_CACHE_BLOBDESCRIPTOR", "inmemory")
        .env("REGISTRY_HTTP_DEBUG_ADDR", "127.0.0.1:0")
        .start();
    let manifest_digest = common::push_image(&reg, "mem/app", "v1", b"layer");
    let layer_digest = sha256(b"layer");
    let manifest_url = reg.url(&format!("/v2/mem/app/manifests/{manifest_digest}"));
    let accept = "application/vnd.oci.image.manifest.v1+json";
    let r = client()
        .get(&manifest_url)
        .header("Accept", accept)
        .send()
        .unwrap();
    assert_eq!(r.status(), 200);

    // Link reads fail in storage; the cache answers.
    faults.fail(Op::Get, "_layers", 1000);
    faults.fail(Op::Get, "_manifests/revisions", 1000);
    assert_eq!(head_blob(&reg, "mem/app", &layer_digest), 200);
    let r = client()
        .head(&manifest_url)
        .header("Accept", accept)
        .send()
        .unwrap();
    assert_eq!(r.status(), 200);
    // Not for another repository, which has nothing cached: its lookup reaches the failing
    // storage.
    assert_ne!(head_blob(&reg, "mem/other", &layer_digest), 200);
    faults.heal();

    // The hits are counted in the metrics.
    let metrics = client()
        .get(format!("{}/metrics", reg.debug_url.as_ref().unwrap()))
        .send()
        .unwrap()
        .text()
        .unwrap();
    for kind in ["blob", "manifest"] {
        let line = format!(r#"berth_cache_requests_total{{kind="{kind}",result="hit"}}"#);
        let hits: f64 = metrics
            .lines()
            .find_map(|l| l.strip_prefix(&line))
            .unwrap_or_else(|| panic!("no {line} in\n{metrics}"))
            .trim()
            .parse()
            .unwrap();
        assert!(hits >= 1.0, "{line} {hits}");
    }

    // Deleting the manifest is seen at once.
    let r = client().delete(&manifest_url).send().unwrap();
    assert_eq!(r.status(), 202);
    let r = client()
        .get(&manifest_url)
        .header("Accept", accept)
        .send()
        .unwrap();
    assert_eq!(r.status(), 404);
}
