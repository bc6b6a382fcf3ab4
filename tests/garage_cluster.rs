//! berth on a real replicated store: Garage 2.5, three nodes in containers with replication
//! factor 3 (tests/common/garage.rs). Each test starts a cluster of its own (a few seconds; its
//! own network, so the tests run in parallel), checks the cluster as its operator would, then
//! runs the real `berth` binary on its bucket and drives it with skopeo and plain HTTP: a push
//! through one node pulls back byte for byte through another, and a push still succeeds with a
//! node killed or cut off from the network, everything verifying through that node once it is
//! back.
//!
//! Needs the Docker engine, skopeo and the Garage binary (`make deps`); the image is built by
//! scripts/garage-image.sh, which the harness runs. A missing one fails the test.

mod common;

use std::path::Path;
use std::time::Instant;

use object_store::path::Path as Key;
use object_store::{ObjectStore, ObjectStoreExt, PutMode, PutOptions, UpdateVersion};

use common::garage::{block_on, GarageCluster, NODES};
use common::tools::{pull_fixture_and_check, push_fixture, wait_ready, write_config, Tools};
use common::{image_manifest, push_blob_as, seeded_bytes, sha256, BerthProcess};

const OCI_MANIFEST: &str = "application/vnd.oci.image.manifest.v1+json";
/// Over berth's 10 MiB part size: a multipart upload of two parts through Garage.
const LARGE_LAYER: usize = 12 * 1024 * 1024 + 321;

/// A timing line for the report (`cargo test -- --nocapture` shows it).
fn timing(what: &str, since: Instant) {
    eprintln!("timing: {what}: {:.1?}", since.elapsed());
}

fn start_cluster() -> GarageCluster {
    let cluster = GarageCluster::start();
    eprintln!("timing: cluster start-up: {:.1?}", cluster.startup);
    cluster
}

/// How a berth process is told about its bucket.
#[derive(Clone, Copy)]
enum Settings {
    /// `REGISTRY_STORAGE_S3_…` variables over a filesystem configuration file.
    Variables,
    /// The `storage.s3` section of its configuration file.
    File,
}

/// The real berth binary on the Garage bucket through `node`.
fn berth_on(cluster: &GarageCluster, node: usize, dir: &Path, settings: Settings) -> BerthProcess {
    let storage = cluster.berth_storage_config(node);
    let name = format!("berth-on-garage{node}-{}.yml", common::tools::unique("c"));
    let berth = match settings {
        Settings::Variables => {
            let config = write_config(dir, &name, &dir.join("unused"));
            let env = storage.env();
            let env: Vec<(&str, &str)> =
                env.iter().map(|(k, v)| (k.as_str(), v.as_str())).collect();
            BerthProcess::start(&config, &env)
        }
        Settings::File => {
            let config = dir.join(name);
            std::fs::write(
                &config,
                format!(
                    "version: 0.1\nlog:\n  level: info\n{}http:\n  addr: 127.0.0.1:0\n",
                    storage.yaml()
                ),
            )
            .unwrap();
            BerthProcess::start(&config, &[])
        }
    };
    wait_ready(&berth.host);
    berth
}

/// An image pushed over HTTP: a config and one layer, under `repo:tag`.
struct Pushed {
    repo: String,
    tag: String,
    manifest_digest: String,
    blobs: Vec<Vec<u8>>,
}

/// Pushes a fresh image whose layer (`layer_len` bytes) no other image shares.
fn push_generated_image(base: &str, repo: &str, tag: &str, layer_len: usize) -> Pushed {
    let config =
        format!(r#"{{"architecture":"amd64","os":"linux","comment":"{repo}:{tag}"}}"#).into_bytes();
    let layer = seeded_bytes(&format!("{repo}:{tag}"), layer_len);
    for blob in [&config, &layer] {
        let r = push_blob_as(base, repo, blob, None);
        assert_eq!(
            r.status(),
            201,
            "blob push to {repo}: {}",
            r.text().unwrap_or_default()
        );
    }
    let manifest = image_manifest(
        (&sha256(&config), config.len()),
        &[(&sha256(&layer), layer.len())],
    );
    let r = common::client()
        .put(format!("{base}/v2/{repo}/manifests/{tag}"))
        .header("Content-Type", OCI_MANIFEST)
        .body(manifest.clone())
        .send()
        .unwrap();
    assert_eq!(
        r.status(),
        201,
        "manifest push: {}",
        r.text().unwrap_or_default()
    );
    Pushed {
        repo: repo.to_string(),
        tag: tag.to_string(),
        manifest_digest: sha256(manifest.as_bytes()),
        blobs: vec![config, layer],
    }
}

/// The registry at `base` serves `image`: its manifest by tag and every blob, byte for byte
/// (blob downloads follow berth's redirect to the bucket).
fn assert_serves(base: &str, image: &Pushed) {
    let following = reqwest::blocking::Client::builder()
        .timeout(std::time::Duration::from_secs(120))
        .build()
        .unwrap();
    let (repo, tag) = (&image.repo, &image.tag);
    let r = following
        .get(format!("{base}/v2/{repo}/manifests/{tag}"))
        .header("Accept", OCI_MANIFEST)
        .send()
        .unwrap();
    assert_eq!(r.status(), 200, "manifest {repo}:{tag} from {base}");
    assert_eq!(
        sha256(&r.bytes().unwrap()),
        image.manifest_digest,
        "{repo}:{tag}"
    );
    for blob in &image.blobs {
        let digest = sha256(blob);
        let r = following
            .get(format!("{base}/v2/{repo}/blobs/{digest}"))
            .send()
            .unwrap();
        assert_eq!(r.status(), 200, "blob {digest} of {repo} from {base}");
        let got = r.bytes().unwrap();
        assert!(
            got.as_ref() == blob.as_slice(),
            "blob {digest} of {repo} from {base}: {} bytes, {} expected, digest {}",
            got.len(),
            blob.len(),
            sha256(&got)
        );
    }
}

#[test]
fn three_nodes_form_a_cluster_and_replicate_what_one_node_is_given() {
    let cluster = start_cluster();
    // As `garage status` would show it, from every node: three storage nodes up, every
    // partition with all its copies, layout version 1 with one zone per node.
    for node in 1..=NODES {
        let health = cluster.admin_api(node, "GetClusterHealth").unwrap();
        assert_eq!(health["status"], "healthy", "garage{node}: {health}");
        // (It counts itself.)
        assert_eq!(health["connectedNodes"], NODES, "garage{node}: {health}");
        assert_eq!(health["storageNodesUp"], NODES, "garage{node}: {health}");
        assert_eq!(health["partitionsAllOk"], health["partitions"]);
    }
    let layout = cluster.admin_api(1, "GetClusterLayout").unwrap();
    assert_eq!(layout["version"], 1, "{layout}");
    let roles = layout["roles"].as_array().unwrap();
    let mut zones: Vec<&str> = roles.iter().map(|r| r["zone"].as_str().unwrap()).collect();
    zones.sort();
    assert_eq!(zones, ["zone1", "zone2", "zone3"], "{layout}");
    // Replication 3 on 3 nodes: every node stores every one of the 256 partitions.
    assert!(
        cluster.layout_applied.contains("replication factor 3"),
        "garage layout apply: {}",
        cluster.layout_applied
    );
    for role in roles {
        assert_eq!(role["storedPartitions"], 256, "{role}");
    }

    // Written through node 1 (several of Garage's 1 MiB blocks), read back through 3 and 2.
    let key = Key::from("replicated/object");
    let body = seeded_bytes("replicated", 3 * 1024 * 1024 + 5);
    let written = Instant::now();
    block_on(cluster.store(1).put(&key, body.clone().into())).unwrap();
    timing("3 MiB put through node 1", written);
    for node in [3, 2] {
        let read = Instant::now();
        let got = block_on(async {
            let store = cluster.store(node);
            store.get(&key).await.unwrap().bytes().await.unwrap()
        });
        timing(&format!("3 MiB get through node {node}"), read);
        assert!(got.as_ref() == body.as_slice(), "through garage{node}");
    }
}

/// What berth's upload leases and GC lock rely on elsewhere (src/storage/lock.rs,
/// src/storage/gc_lock.rs): Garage 2.5 answers conditional writes as plain writes. If this
/// starts failing, Garage has learnt them: update those notes and this test.
#[test]
fn garage_ignores_conditional_writes() {
    let cluster = start_cluster();
    let store = cluster.store(1);
    let key = Key::from("conditional/lease");
    let put = |body: &'static str, mode: PutMode| {
        block_on(store.put_opts(&key, body.into(), PutOptions::from(mode)))
    };
    put("first", PutMode::Create).expect("a create on a free key");
    let second = put("second", PutMode::Create);
    let wrong = UpdateVersion {
        e_tag: Some("\"00000000000000000000000000000000\"".into()),
        version: None,
    };
    let third = put("third", PutMode::Update(wrong));
    let now = block_on(async { store.get(&key).await.unwrap().bytes().await.unwrap() });
    eprintln!(
        "Garage: second If-None-Match create: {second:?}; If-Match with a wrong ETag: {third:?}; \
         object now {now:?}"
    );
    assert!(second.is_ok(), "If-None-Match: * honoured: {second:?}");
    assert!(third.is_ok(), "If-Match honoured: {third:?}");
    assert_eq!(now.as_ref(), b"third", "each write overwrote the last");
}

#[test]
fn berth_pushes_through_node_1_and_another_berth_pulls_through_node_2() {
    let cluster = start_cluster();
    let dir = tempfile::tempdir().unwrap();
    let tools = Tools::new(dir.path());
    let pusher = berth_on(&cluster, 1, dir.path(), Settings::Variables);
    let puller = berth_on(&cluster, 2, dir.path(), Settings::File);

    let pushed = Instant::now();
    push_fixture(&tools, &pusher.host, "garage/multi");
    timing("skopeo push of the fixture through node 1", pushed);
    let pulled = Instant::now();
    pull_fixture_and_check(&tools, &puller.host, "garage/multi", dir.path());
    timing("skopeo pull of the fixture through node 2", pulled);

    let large = Instant::now();
    let image = push_generated_image(&pusher.url, "garage/large", "v1", LARGE_LAYER);
    timing("12 MiB image push through node 1", large);
    assert_serves(&puller.url, &image);
}

/// How a node is taken away from the cluster, and brought back.
#[derive(Clone, Copy, Debug)]
enum Outage {
    Kill,
    Disconnect,
}

/// Pushes before and while node 3 is away, through node 1; checks through node 2 during the
/// outage, then through node 3 once it is back. After a kill, also through node 3 with node 1
/// killed in turn (what was written while node 3 was away has a quorum without node 1); not
/// after a disconnection, where that takes over a minute: the peers of a node that vanished
/// without closing its connections notice only after failed pings, and reads sent to it wait
/// for the RPC timeout meanwhile.
fn pushes_survive_losing_a_node(outage: Outage) {
    let cluster = start_cluster();
    let dir = tempfile::tempdir().unwrap();
    let tools = Tools::new(dir.path());
    let berth1 = berth_on(&cluster, 1, dir.path(), Settings::Variables);
    push_fixture(&tools, &berth1.host, "before/multi");
    let before = push_generated_image(&berth1.url, "before/large", "v1", LARGE_LAYER);

    match outage {
        Outage::Kill => cluster.kill(3),
        Outage::Disconnect => cluster.disconnect(3),
    }
    let during = Instant::now();
    let pushed_during = push_generated_image(&berth1.url, "during/large", "v1", LARGE_LAYER);
    push_fixture(&tools, &berth1.host, "during/multi");
    timing(&format!("pushes with node 3 away ({outage:?})"), during);
    let berth2 = berth_on(&cluster, 2, dir.path(), Settings::File);
    for image in [&before, &pushed_during] {
        assert_serves(&berth2.url, image);
    }
    pull_fixture_and_check(&tools, &berth2.host, "during/multi", dir.path());
    timing(
        &format!("pushes and checks with node 3 away ({outage:?})"),
        during,
    );

    let back = Instant::now();
    match outage {
        Outage::Kill => cluster.start_node(3),
        Outage::Disconnect => cluster.connect(3),
    }
    cluster.wait_healthy();
    timing(&format!("node 3 back and healthy ({outage:?})"), back);
    let berth3 = berth_on(&cluster, 3, dir.path(), Settings::Variables);
    for image in [&before, &pushed_during] {
        assert_serves(&berth3.url, image);
    }
    for repo in ["before/multi", "during/multi"] {
        pull_fixture_and_check(&tools, &berth3.host, repo, dir.path());
    }

    if let Outage::Kill = outage {
        let without_1 = Instant::now();
        cluster.kill(1);
        for image in [&before, &pushed_during] {
            assert_serves(&berth3.url, image);
        }
        timing("checks through node 3 with node 1 killed", without_1);
    }
}

#[test]
fn a_push_succeeds_with_a_node_killed_and_verifies_through_it_once_restarted() {
    pushes_survive_losing_a_node(Outage::Kill);
}

#[test]
fn a_push_succeeds_with_a_node_disconnected_and_verifies_through_it_once_reconnected() {
    pushes_survive_losing_a_node(Outage::Disconnect);
}

/// berth's own view of the bucket through `node`, under `root`, to list multipart uploads as
/// upload purging does.
fn storage_on(cluster: &GarageCluster, node: usize, root: &str) -> berth::storage::Storage {
    let config: berth::config::S3Config = serde_json::from_value(serde_json::json!({
        "regionendpoint": cluster.s3_endpoint(node),
        "bucket": cluster.bucket(),
        "region": cluster.region(),
        "forcepathstyle": true,
        "secure": false,
        "accesskey": cluster.access_key(),
        "secretkey": cluster.secret_key(),
        "rootdirectory": format!("/{root}"),
    }))
    .unwrap();
    berth::storage::Storage::s3(&config).unwrap()
}

/// The multipart uploads under `prefix` (a store key, without the root) as berth lists them.
fn multipart_uploads(storage: &berth::storage::Storage, prefix: &str) -> Vec<(String, String)> {
    let mut listed: Vec<_> = block_on(storage.list_multipart_uploads(&Key::from(prefix)))
        .unwrap()
        .expect("Garage lists multipart uploads")
        .into_iter()
        .map(|m| (m.key.to_string(), m.upload_id))
        .collect();
    listed.sort();
    listed
}

/// Upload purging finds, through ListMultipartUploads, the multipart uploads no upload record
/// names and aborts them once older than its age: one under an upload directory without a
/// record (a crash between creating it and writing the first record), one under a live
/// upload's directory that its record does not name, one under garbage collection's set-aside
/// prefix. The live upload's own multipart upload stays through every pass, and completes.
/// Under a `rootdirectory`, which the listing's prefix includes and its keys lose again.
#[test]
fn purging_aborts_multipart_uploads_that_no_record_names() {
    use object_store::multipart::MultipartStore;
    use object_store::PutPayload;

    let cluster = start_cluster();
    let root = "purge-root";
    let raw = cluster.store(1);
    let storage = storage_on(&cluster, 1, root);
    let uploads = "docker/registry/v2/_berth/uploads";
    // Created directly, with one part each, and no record.
    let orphan = |key: &str| -> (String, String) {
        let bucket_key = Key::from(format!("{root}/{key}"));
        let id = block_on(raw.create_multipart(&bucket_key)).unwrap();
        block_on(raw.put_part(&bucket_key, &id, 0, PutPayload::from(vec![7u8; 1024]))).unwrap();
        (key.to_string(), id)
    };
    let crashed = orphan(&format!("{uploads}/{}/data", uuid::Uuid::new_v4()));
    let set_aside = orphan(&format!(
        "docker/registry/v2/_berth/gc/{}/sha256/{}",
        uuid::Uuid::new_v4(),
        sha256(b"set aside").trim_start_matches("sha256:")
    ));
    assert_eq!(multipart_uploads(&storage, uploads), vec![crashed.clone()]);
    assert_eq!(
        multipart_uploads(&storage, "docker/registry/v2/_berth/gc"),
        vec![set_aside.clone()]
    );

    let dir = tempfile::tempdir().unwrap();
    let config = write_config(dir.path(), "purging.yml", &dir.path().join("unused"));
    let mut env = cluster.berth_storage_config(1).env();
    env.extend(
        [
            ("REGISTRY_STORAGE_S3_ROOTDIRECTORY", format!("/{root}")),
            (
                "REGISTRY_STORAGE_MAINTENANCE_UPLOADPURGING_AGE",
                "3s".into(),
            ),
            (
                "REGISTRY_STORAGE_MAINTENANCE_UPLOADPURGING_INTERVAL",
                "1s".into(),
            ),
        ]
        .map(|(k, v)| (k.to_string(), v)),
    );
    let env: Vec<(&str, &str)> = env.iter().map(|(k, v)| (k.as_str(), v.as_str())).collect();
    let berth = BerthProcess::start(&config, &env);
    wait_ready(&berth.host);

    // The live upload's own multipart upload exists from its POST; a second one at its key is
    // one its record does not name.
    let live = common::start_upload_at(&berth.url, "purge/live");
    let live_id = live.rsplit('/').next().unwrap().split('?').next().unwrap();
    let live_key = format!("{uploads}/{live_id}/data");
    let listed = multipart_uploads(&storage, uploads);
    assert_eq!(listed.len(), 2, "{listed:?}");
    let own = listed.iter().find(|(k, _)| *k == live_key).unwrap().clone();
    let unnamed = orphan(&live_key);

    let chunk = seeded_bytes("live", 1000);
    let mut offset = 0u64;
    let started = Instant::now();
    let mut gone_at = None;
    // Several purge passes after the orphans went: the live upload stays throughout.
    while gone_at.is_none_or(|t: Instant| t.elapsed() < std::time::Duration::from_secs(4)) {
        assert!(
            started.elapsed() < std::time::Duration::from_secs(40),
            "the orphans are aborted; still there: {:?}\n{}",
            multipart_uploads(&storage, uploads),
            berth.log_lines().join("\n")
        );
        let r = common::patch_chunk(&live, offset, &chunk);
        assert_eq!(r.status(), 202, "the live upload is never purged");
        offset += chunk.len() as u64;
        let left = multipart_uploads(&storage, uploads);
        assert!(left.contains(&own), "the live upload's own stays: {left:?}");
        if gone_at.is_none()
            && left == vec![own.clone()]
            && multipart_uploads(&storage, "docker/registry/v2/_berth/gc").is_empty()
        {
            timing("orphans aborted after", started);
            gone_at = Some(Instant::now());
        }
        std::thread::sleep(std::time::Duration::from_millis(500));
    }
    // Aborted for the store, not only unlisted: no part can be added any more.
    for (key, id) in [&crashed, &set_aside, &unnamed] {
        let bucket_key = Key::from(format!("{root}/{key}"));
        let added = block_on(raw.put_part(&bucket_key, id, 1, PutPayload::from(vec![1u8; 10])));
        assert!(added.is_err(), "{key} {id} was aborted");
    }
    let log = berth.log_lines().join("\n");
    for (key, id) in [&crashed, &set_aside, &unnamed] {
        assert!(
            log.contains(&format!("aborted multipart upload {id} of {key}")),
            "{id} logged:\n{log}"
        );
    }

    let whole: Vec<u8> = (0..offset / 1000).flat_map(|_| chunk.clone()).collect();
    let digest = sha256(&whole);
    let r = common::complete_upload(&live, &digest);
    assert_eq!(r.status(), 201, "{}", r.text().unwrap_or_default());
    // Through the redirect to the bucket.
    let got = reqwest::blocking::get(format!("{}/v2/purge/live/blobs/{digest}", berth.url))
        .unwrap()
        .bytes()
        .unwrap();
    assert!(
        got.as_ref() == whole.as_slice(),
        "the live upload pulls byte-exact"
    );
    assert_eq!(multipart_uploads(&storage, uploads), vec![], "completed");
}
