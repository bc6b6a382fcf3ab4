//! Upload locks on a store that ignores conditional writes: the 3-node Garage cluster
//! (`tests/common/garage.rs`). berth finds out at start-up (a probe object is overwritten), says
//! that without Redis only one instance may serve the bucket, and with Redis locks each upload
//! there with a fencing token. An instance killed mid-PATCH after it had sent a part leaves a
//! gap in the part numbers (its numbers are never reused: it might only be stalled), and the
//! upload still completes through another instance, with the parts named one by one.

mod common;

use std::time::{Duration, Instant};

use common::garage::GarageCluster;
use common::redis::Redis;
use common::uploads::{
    assert_blob, content, patch, signal, start_instance, start_upload, status, RawPatch, MIB,
};
use common::{sha256, BerthProcess};

/// berth on the cluster through `node`, with `extra` variables.
fn berth_on(
    cluster: &GarageCluster,
    node: usize,
    dir: &std::path::Path,
    extra: &[(&str, &str)],
) -> BerthProcess {
    let storage = cluster.berth_storage_config(node).env();
    start_instance(dir, &format!("berth-{node}.yml"), storage, extra)
}

fn logged(process: &BerthProcess, text: &str) -> bool {
    process.log_lines().iter().any(|l| l.contains(text))
}

#[test]
fn on_garage_uploads_are_locked_in_redis_and_survive_a_killed_holder() {
    let cluster = GarageCluster::start();
    let dir = tempfile::tempdir().unwrap();

    // Without Redis: the probe finds conditional writes ignored, and berth says what that means.
    let alone = berth_on(&cluster, 1, dir.path(), &[]);
    assert!(
        logged(&alone, "ignores conditional writes")
            && logged(&alone, "ONLY ONE INSTANCE MAY SERVE THIS BUCKET"),
        "{:#?}",
        alone.log_lines()
    );
    drop(alone);

    let redis = Redis::start(common::free_port(), dir.path());
    let addr = format!("127.0.0.1:{}", redis.port);
    let with_redis = [("REGISTRY_REDIS_ADDR", addr.as_str())];
    let a = berth_on(&cluster, 1, dir.path(), &with_redis);
    let b = berth_on(&cluster, 2, dir.path(), &with_redis);
    for instance in [&a, &b] {
        assert!(
            logged(instance, "Redis locks with fencing tokens"),
            "{:#?}",
            instance.log_lines()
        );
    }

    let repo = "garage/killed-holder";
    let path = start_upload(&a.url, repo);
    let first = content(6 * MIB, 11);
    let r = patch(&a.url, &path, 0, &first);
    assert_eq!(r.status(), 202, "{}", r.text().unwrap());
    // A gets most of a 12 MiB chunk (a part of it sent to Garage), then dies.
    let doomed = content(12 * MIB, 12);
    let mut dying = RawPatch::start(&a.host, &path, first.len() as u64, doomed.len());
    dying.send(&doomed[..11 * MIB]);
    std::thread::sleep(Duration::from_secs(2));
    let mut a = a;
    signal(&a, "KILL");
    a.wait_exit(Duration::from_secs(10)).expect("A is dead");
    drop(dying);

    // B resumes from what was recorded, once A's lock has expired.
    let rest = content(7 * MIB, 13);
    let deadline = Instant::now() + Duration::from_secs(45);
    let offset = loop {
        let offset = status(&b.url, &path);
        let r = patch(&b.url, &path, offset, &rest);
        match r.status().as_u16() {
            202 => break offset,
            416 if Instant::now() < deadline => std::thread::sleep(Duration::from_millis(500)),
            other => panic!("B's PATCH: {other} {}", r.text().unwrap()),
        }
    };
    assert_eq!(
        offset,
        first.len() as u64,
        "A's unrecorded bytes do not count"
    );
    let numbers = recorded_part_numbers(&cluster, &path);
    assert!(
        numbers.windows(2).any(|w| w[1] > w[0] + 1),
        "the dead holder's part number is skipped, not reused: {numbers:?}"
    );
    let expected: Vec<u8> = [first.as_slice(), rest.as_slice()].concat();
    let r = common::complete_upload(&format!("{}{path}", b.url), &sha256(&expected));
    assert_eq!(
        r.status(),
        201,
        "{} {:#?}",
        r.text().unwrap(),
        b.log_lines()
    );
    assert_blob(&b.url, repo, &expected);
}

/// The part numbers the newest record of the upload at `path` names, read from the bucket.
fn recorded_part_numbers(cluster: &GarageCluster, path: &str) -> Vec<u64> {
    use futures_util::StreamExt;
    use object_store::{ObjectStore, ObjectStoreExt};
    let id = path.rsplit('/').next().unwrap().to_string();
    let store = cluster.store(1);
    common::garage::block_on(async move {
        let dir = object_store::path::Path::from(format!("docker/registry/v2/_berth/uploads/{id}"));
        let mut records: Vec<object_store::path::Path> = store
            .list(Some(&dir))
            .filter_map(|m| async move { m.ok() })
            .map(|m| m.location)
            .filter(|p| {
                let name = p.filename().unwrap_or("").to_string();
                async move { name.starts_with("state") }
            })
            .collect()
            .await;
        records.sort();
        let newest = records.last().expect("the upload has a record");
        let bytes = store.get(newest).await.unwrap().bytes().await.unwrap();
        let record: serde_json::Value = serde_json::from_slice(&bytes).unwrap();
        let parts = &record["parts"];
        match parts["numbers"].as_array() {
            Some(numbers) => numbers.iter().map(|n| n.as_u64().unwrap()).collect(),
            None => (1..=parts["parts"].as_array().unwrap().len() as u64).collect(),
        }
    })
}
