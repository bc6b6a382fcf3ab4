//! Moves of objects larger than S3's copy limit: a commit and garbage collection's set-aside
//! copy the object, and AWS refuses a `CopyObject` of more than 5 GiB. These tests put berth on
//! a real S3 server (s3s-fs) behind a front that enforces such a limit, lowered to 8 MiB
//! (`common::copy_limit`), so that 20 MiB blobs need the multipart copy (5 MiB parts); the last
//! test does the same on a 3-node Garage cluster (tests/common/garage.rs).

mod common;

use std::process::Command;

use berth::storage::{layout, StorageError};
use common::copy_limit::{multipart_leftovers, CopyLimitFront};
use common::s3::S3Server;
use common::{client, complete_upload, error_code, patch_chunk, sha256, Store, TestRegistry};
use object_store::path::Path;

const MIB: usize = 1024 * 1024;
/// The front's copy limit.
const COPY_LIMIT: u64 = 8 * MIB as u64;
/// The blobs' size: above the limit, four parts of 5 MiB.
const BLOB: usize = 20 * MIB;

fn data(len: usize, seed: u32) -> Vec<u8> {
    (0..len as u32)
        .map(|i| ((i ^ seed).wrapping_mul(2_654_435_761) >> 13) as u8)
        .collect()
}

/// One S3 server, the front before it, and the variables of a bucket reached through the
/// front, under a `rootdirectory` (which the part copies must apply as the store does).
struct Setup {
    server: S3Server,
    front: CopyLimitFront,
    env: Vec<(String, String)>,
}

/// `threshold`: `storage.s3.multipartcopythresholdsize`.
fn setup(threshold: u64) -> Setup {
    let server = S3Server::start();
    let front = CopyLimitFront::start(&server, COPY_LIMIT);
    let mut env = front.env(&server, &server.bucket());
    for (key, value) in [
        (
            "REGISTRY_STORAGE_S3_ROOTDIRECTORY",
            "/registry/root".to_string(),
        ),
        (
            "REGISTRY_STORAGE_S3_MULTIPARTCOPYTHRESHOLDSIZE",
            threshold.to_string(),
        ),
        (
            "REGISTRY_STORAGE_S3_MULTIPARTCOPYCHUNKSIZE",
            (5 * MIB).to_string(),
        ),
        (
            "REGISTRY_STORAGE_S3_MULTIPARTCOPYMAXCONCURRENCY",
            "2".to_string(),
        ),
    ] {
        env.push((key.to_string(), value));
    }
    Setup { server, front, env }
}

impl Setup {
    fn registry(&self) -> TestRegistry {
        TestRegistry::builder()
            .store(Store::S3(self.env.clone()))
            .start()
    }

    /// The registry's storage, opened here as `berth garbage-collect` opens it.
    fn storage(&self) -> berth::storage::Storage {
        reg_storage(&self.env)
    }
}

/// Opens an upload and sends `blob` in chunks of 6 MiB (not a multiple of the parts); answers
/// the upload's location.
fn upload_in_chunks(reg: &TestRegistry, repo: &str, blob: &[u8]) -> String {
    let location = common::start_upload_at(&reg.url, repo);
    let mut offset = 0;
    for chunk in blob.chunks(6 * MIB) {
        let r = patch_chunk(&location, offset, chunk);
        assert_eq!(r.status(), 202, "at {offset}: {}", r.text().unwrap());
        offset += chunk.len() as u64;
    }
    location
}

/// The blob's bytes as a client pulls them (following the redirect to the bucket).
fn pull(reg: &TestRegistry, repo: &str, digest: &str) -> Vec<u8> {
    let r = reqwest::blocking::get(reg.url(&format!("/v2/{repo}/blobs/{digest}"))).unwrap();
    assert_eq!(r.status(), 200);
    r.bytes().unwrap().to_vec()
}

fn blob_status(reg: &TestRegistry, repo: &str, digest: &str) -> u16 {
    client()
        .head(reg.url(&format!("/v2/{repo}/blobs/{digest}")))
        .send()
        .unwrap()
        .status()
        .as_u16()
}

/// The blob's data object in s3s-fs's directory, where no half-copied one may appear.
fn blob_file(setup: &Setup, digest: &str) -> std::path::PathBuf {
    let bucket = &setup
        .env
        .iter()
        .find(|(k, _)| k == "REGISTRY_STORAGE_S3_BUCKET")
        .unwrap()
        .1;
    let hex = digest.strip_prefix("sha256:").unwrap();
    setup.server.dir.join(format!(
        "{bucket}/registry/root/docker/registry/v2/blobs/sha256/{}/{hex}/data",
        &hex[..2]
    ))
}

#[test]
fn a_blob_above_the_copy_limit_is_committed_by_a_multipart_copy() {
    let setup = setup(6 * MIB as u64);
    let reg = setup.registry();
    let blob = data(BLOB, 1);
    let digest = sha256(&blob);
    let location = upload_in_chunks(&reg, "big/layer", &blob);
    let r = complete_upload(&location, &digest);
    assert_eq!(r.status(), 201, "{}", r.text().unwrap());

    assert_eq!(setup.front.refused_copies(), 0);
    assert_eq!(setup.front.part_copies(), 4, "20 MiB in parts of 5 MiB");
    let got = pull(&reg, "big/layer", &digest);
    assert_eq!(got.len(), blob.len());
    assert!(got == blob, "byte-exact");
    assert_eq!(sha256(&got), digest);
    assert!(blob_file(&setup, &digest).is_file(), "under rootdirectory");
    assert_eq!(multipart_leftovers(&setup.server), Vec::<String>::new());
}

#[test]
fn without_the_multipart_copy_the_front_refuses_the_commit() {
    // A threshold above the blob: one CopyObject, which the front refuses as AWS would.
    let setup = setup(64 * MIB as u64);
    let reg = setup.registry();
    let blob = data(BLOB, 2);
    let digest = sha256(&blob);
    let location = upload_in_chunks(&reg, "big/refused", &blob);
    let r = complete_upload(&location, &digest);
    assert_eq!(r.status(), 500, "a refusal, not an outage");
    assert!(!r.headers().contains_key("retry-after"));
    assert_eq!(error_code(&r.text().unwrap()), "UNKNOWN");

    assert_eq!(setup.front.refused_copies(), 1);
    assert_eq!(setup.front.part_copies(), 0);
    assert_eq!(blob_status(&reg, "big/refused", &digest), 404);
    assert!(!blob_file(&setup, &digest).exists(), "nothing half-visible");
    // The upload stays, complete, for a retry once the cause is fixed.
    let r = client().get(&location).send().unwrap();
    assert_eq!(r.status(), 204);
    assert_eq!(r.headers()["range"], format!("0-{}", BLOB - 1).as_str());
}

#[test]
fn a_failing_part_copy_aborts_the_multipart_upload_and_the_commit_can_be_retried() {
    let setup = setup(6 * MIB as u64);
    let reg = setup.registry();
    let blob = data(BLOB, 3);
    let digest = sha256(&blob);
    let location = upload_in_chunks(&reg, "big/retried", &blob);
    // The third part copy and every one after it (retries included) fail as a copy broken
    // off midway: 200 OK with an error in the body.
    setup.front.fail_part_copies_from(3);
    let r = complete_upload(&location, &digest);
    assert_eq!(r.status(), 503, "{}", r.text().unwrap());
    assert!(
        setup.front.part_copies() > 3,
        "the broken part copy was retried: {}",
        setup.front.part_copies()
    );
    assert_eq!(blob_status(&reg, "big/retried", &digest), 404);
    assert!(!blob_file(&setup, &digest).exists(), "nothing half-visible");
    assert_eq!(
        multipart_leftovers(&setup.server),
        Vec::<String>::new(),
        "the copy's multipart upload is aborted, its parts removed"
    );

    setup.front.fail_part_copies_from(0);
    let before = setup.front.part_copies();
    let r = complete_upload(&location, &digest);
    assert_eq!(r.status(), 201, "{}", r.text().unwrap());
    assert_eq!(setup.front.part_copies() - before, 4);
    assert!(pull(&reg, "big/retried", &digest) == blob, "byte-exact");
    assert_eq!(multipart_leftovers(&setup.server), Vec::<String>::new());
}

#[test]
fn moves_of_an_object_above_the_copy_limit_go_both_ways() {
    // What garbage collection's set-aside and put-back call (`Storage::move_object`), on a key
    // s3s-fs can hold a multipart upload for (see the next test).
    let setup = setup(6 * MIB as u64);
    let reg = setup.registry();
    let blob = data(BLOB, 5);
    let digest = sha256(&blob);
    let location = upload_in_chunks(&reg, "big/moved", &blob);
    assert_eq!(complete_upload(&location, &digest).status(), 201);
    let storage = setup.storage();
    let data_path = layout::blob_data(&digest.parse().unwrap());
    let aside = Path::from("aside/big");
    let size = BLOB as u64;
    let runtime = tokio::runtime::Runtime::new().unwrap();
    runtime.block_on(async {
        storage.move_object(&data_path, &aside, size).await.unwrap();
        assert!(storage.head(&data_path).await.unwrap().is_none());
        assert_eq!(storage.head(&aside).await.unwrap().unwrap().size, size);
        storage.move_object(&aside, &data_path, size).await.unwrap();
        assert!(storage.head(&aside).await.unwrap().is_none());
        // A source gone is reported as not found, as the set-aside expects of a blob that
        // another collector moved.
        let gone = storage
            .move_object(&Path::from("aside/none"), &Path::from("aside/to"), size)
            .await
            .unwrap_err();
        assert!(matches!(gone, StorageError::NotFound(_)), "{gone}");
        assert!(storage
            .head(&Path::from("aside/to"))
            .await
            .unwrap()
            .is_none());
    });
    assert_eq!(setup.front.refused_copies(), 0);
    // 4 parts for the commit, 4 each way, and the two first parts of the missing source (two
    // are started at once; none after they failed).
    assert_eq!(setup.front.part_copies(), 14);
    assert!(pull(&reg, "big/moved", &digest) == blob, "byte-exact");
    assert_eq!(multipart_leftovers(&setup.server), Vec::<String>::new());
}

#[test]
fn garbage_collection_sets_a_large_blob_aside_by_a_multipart_copy() {
    // s3s-fs cannot hold a multipart upload for a key as long as a set-aside blob's
    // (`…/_berth/gc/<run>/sha256/<hex>`): it names the file holding the upload's metadata after
    // the key in base64, which makes the name longer than the 255 bytes a file name may have,
    // and answers 500. So the collection fails at the set-aside here (AWS has no such limit):
    // what is checked is that the set-aside went the multipart way instead of a `CopyObject`
    // (which the front would refuse), and that the failed collection lost nothing.
    let setup = setup(6 * MIB as u64);
    let reg = setup.registry();
    let blob = data(BLOB, 4);
    let digest = sha256(&blob);
    let location = upload_in_chunks(&reg, "big/garbage", &blob);
    assert_eq!(complete_upload(&location, &digest).status(), 201);
    // Not referenced by a manifest: garbage.
    let dir = tempfile::tempdir().unwrap();
    let config = dir.path().join("config.yml");
    std::fs::write(&config, "version: 0.1\n").unwrap();
    let mut gc = Command::new(env!("CARGO_BIN_EXE_berth"));
    gc.args(["garbage-collect", "--grace", "0s"]).arg(&config);
    for (key, value) in &setup.env {
        gc.env(key, value);
    }
    let out = gc.output().unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(stderr.contains("removing 0 manifests, 1 blobs"), "{stderr}");
    assert!(!out.status.success(), "s3s-fs refuses the key: {stderr}");
    assert!(stderr.contains("_berth/gc/"), "{stderr}");

    let hex = digest.strip_prefix("sha256:").unwrap();
    // (Asked again by the store's retries of the 500.)
    let mut aside: Vec<String> = setup
        .front
        .multipart_starts()
        .into_iter()
        .filter(|path| path.contains("/_berth/gc/"))
        .collect();
    aside.dedup();
    assert_eq!(aside.len(), 1, "{aside:?}");
    assert!(aside[0].ends_with(&format!("/sha256/{hex}")), "{aside:?}");
    assert_eq!(setup.front.refused_copies(), 0, "no CopyObject of the blob");
    // Its links are written back and its data never left: it is served as before.
    assert_eq!(blob_status(&reg, "big/garbage", &digest), 200);
    assert!(pull(&reg, "big/garbage", &digest) == blob, "byte-exact");
    // No parts. (s3s-fs keeps the record of each upload whose creation it failed: no id was
    // answered, so nobody can abort those.)
    let parts: Vec<String> = multipart_leftovers(&setup.server)
        .into_iter()
        .filter(|name| name.contains(".part-"))
        .collect();
    assert_eq!(parts, Vec::<String>::new());
}

/// The same moves on a real replicated store, Garage (3 nodes, which copies parts with
/// `UploadPartCopy` as AWS does), behind the front: a 20 MiB layer of an image commits by a
/// multipart copy, and a collection sets an unreferenced 20 MiB blob aside the multipart way
/// and deletes it — all the way through here (s3s-fs cannot hold the set-aside key). The image
/// pulls byte-exact afterwards, and no multipart upload is left behind.
#[test]
fn on_garage_a_commit_and_a_collection_above_the_copy_limit_go_the_multipart_way() {
    use common::garage::{block_on, GarageCluster};
    use object_store::ObjectStoreExt as _;

    let cluster = GarageCluster::start();
    let store = cluster.store(1);
    let bucket = format!("/{}/", cluster.bucket());
    let size_of: common::copy_limit::SizeOf = Box::new(move |path| {
        let key = Path::from(path.strip_prefix(bucket.as_str())?);
        block_on(store.head(&key)).ok().map(|meta| meta.size)
    });
    let node_port: u16 = cluster
        .s3_endpoint(1)
        .rsplit(':')
        .next()
        .unwrap()
        .parse()
        .unwrap();
    let front = CopyLimitFront::start_before(node_port, COPY_LIMIT, size_of);
    let mut env = cluster.berth_storage_config(1).env();
    for (key, value) in &mut env {
        if key == "REGISTRY_STORAGE_S3_REGIONENDPOINT" {
            *value = format!("http://127.0.0.1:{}", front.port);
        }
    }
    env.extend(
        [
            ("REGISTRY_STORAGE_S3_MULTIPARTCOPYTHRESHOLDSIZE", 6 * MIB),
            ("REGISTRY_STORAGE_S3_MULTIPARTCOPYCHUNKSIZE", 5 * MIB),
            ("REGISTRY_STORAGE_S3_MULTIPARTCOPYMAXCONCURRENCY", 2),
        ]
        .map(|(k, v)| (k.to_string(), v.to_string())),
    );
    let reg = TestRegistry::builder()
        .store(Store::S3(env.clone()))
        .start();

    // An image whose layer is above the limit.
    let layer = data(BLOB, 5);
    let layer_digest = sha256(&layer);
    let location = upload_in_chunks(&reg, "big/image", &layer);
    assert_eq!(complete_upload(&location, &layer_digest).status(), 201);
    assert_eq!(front.refused_copies(), 0);
    assert_eq!(front.part_copies(), 4, "20 MiB in parts of 5 MiB");
    let config = br#"{"architecture":"amd64","os":"linux"}"#;
    let config_digest = common::push_blob(&reg, "big/image", config);
    let manifest = common::image_manifest(
        (&config_digest, config.len()),
        &[(&layer_digest, layer.len())],
    );
    let r = client()
        .put(reg.url("/v2/big/image/manifests/v1"))
        .header("Content-Type", "application/vnd.oci.image.manifest.v1+json")
        .body(manifest)
        .send()
        .unwrap();
    assert_eq!(r.status(), 201);

    // Garbage above the limit.
    let garbage = data(BLOB, 6);
    let garbage_digest = sha256(&garbage);
    let location = upload_in_chunks(&reg, "big/garbage", &garbage);
    assert_eq!(complete_upload(&location, &garbage_digest).status(), 201);

    let dir = tempfile::tempdir().unwrap();
    let config_file = dir.path().join("config.yml");
    std::fs::write(&config_file, "version: 0.1\n").unwrap();
    let out = Command::new(env!("CARGO_BIN_EXE_berth"))
        .args(["garbage-collect", "--grace", "0s"])
        .arg(&config_file)
        .envs(env.iter().cloned())
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "the collection completes: {stderr}");
    assert!(stderr.contains("removing 0 manifests, 1 blobs"), "{stderr}");
    let hex = garbage_digest.strip_prefix("sha256:").unwrap();
    let aside: Vec<String> = front
        .multipart_starts()
        .into_iter()
        .filter(|path| path.contains("/_berth/gc/"))
        .collect();
    assert_eq!(aside.len(), 1, "{aside:?}");
    assert!(aside[0].ends_with(&format!("/sha256/{hex}")), "{aside:?}");
    assert_eq!(front.refused_copies(), 0, "no CopyObject above the limit");

    assert_eq!(blob_status(&reg, "big/garbage", &garbage_digest), 404);
    assert!(
        pull(&reg, "big/image", &layer_digest) == layer,
        "byte-exact"
    );
    let storage = reg_storage(&env);
    let left = block_on(storage.list_multipart_uploads(&Path::from("docker/registry/v2")))
        .unwrap()
        .expect("Garage lists multipart uploads");
    assert!(left.is_empty(), "multipart uploads left: {left:?}");
}

/// The storage of the registry configured by `env`, as `berth garbage-collect` opens it.
fn reg_storage(env: &[(String, String)]) -> berth::storage::Storage {
    let env = env.iter().cloned().collect();
    let config = berth::config::Config::load(None, &env).unwrap();
    berth::storage::Storage::open(&config).unwrap()
}
