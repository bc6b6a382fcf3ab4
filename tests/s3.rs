//! What only the S3 backend has: a backend that can go away, parts with a minimum size, and
//! downloads redirected to the bucket. Each test starts its own `s3s-fs`.

mod common;

use std::process::Command;
use std::time::{Duration, Instant};

use berth::storage::faults::{Faults, Op};
use berth::storage::StorageError;
use common::patch_chunk as patch;
use common::s3::S3Server;
use common::{client, complete_upload, error_code, run, sha256, Store, TestRegistry};

fn registry_on(server: &S3Server) -> TestRegistry {
    TestRegistry::builder()
        .store(Store::S3(server.env(&server.bucket())))
        .start()
}

fn start_upload(reg: &TestRegistry, repo: &str) -> String {
    common::start_upload_at(&reg.url, repo)
}

fn data(len: usize) -> Vec<u8> {
    (0..len as u32)
        .map(|i| (i.wrapping_mul(2_654_435_761) >> 13) as u8)
        .collect()
}

#[test]
fn chunks_of_64_kib_become_parts_of_at_least_5_mib() {
    let server = S3Server::start();
    let reg = registry_on(&server);
    let blob = data(12 * 1024 * 1024 + 100);
    let r = client()
        .post(reg.url("/v2/tiny/chunks/blobs/uploads/"))
        .send()
        .unwrap();
    assert_eq!(
        r.headers()["oci-chunk-min-length"],
        (10 * 1024 * 1024).to_string().as_str(),
        "whole parts are advertised as the efficient chunk size"
    );
    let unused = r.headers()["location"].to_str().unwrap().to_string();
    assert_eq!(client().delete(unused).send().unwrap().status(), 204);
    let location = start_upload(&reg, "tiny/chunks");
    let mut offset = 0u64;
    for piece in blob.chunks(64 * 1024) {
        let r = patch(&location, offset, piece);
        assert_eq!(r.status(), 202, "at {offset}: {}", r.text().unwrap());
        offset += piece.len() as u64;
    }
    let digest = sha256(&blob);
    let r = complete_upload(&location, &digest);
    assert_eq!(r.status(), 201, "{}", r.text().unwrap());
    // Read back through the registry (a redirect to the bucket) and byte for byte.
    let got = reqwest::blocking::get(reg.url(&format!("/v2/tiny/chunks/blobs/{digest}")))
        .unwrap()
        .bytes()
        .unwrap();
    assert_eq!(sha256(&got), digest);
    assert_eq!(got.len(), blob.len());
    // No staged pieces or leases are left behind.
    let bucket_files: Vec<_> = walk(&server.dir)
        .into_iter()
        .filter(|p| p.contains("_berth"))
        .collect();
    assert!(bucket_files.is_empty(), "left over: {bucket_files:?}");
}

fn walk(dir: &std::path::Path) -> Vec<String> {
    let mut out = Vec::new();
    for entry in std::fs::read_dir(dir).unwrap().flatten() {
        let path = entry.path();
        if path.is_dir() {
            out.extend(walk(&path));
        } else {
            out.push(path.display().to_string());
        }
    }
    out
}

#[test]
fn an_s3_outage_is_a_spec_error_and_pushes_resume_when_it_is_back() {
    let mut server = S3Server::start();
    let reg = registry_on(&server);
    let blob = data(9 * 1024 * 1024);
    let location = start_upload(&reg, "outage");
    assert_eq!(patch(&location, 0, &blob[..3_000_000]).status(), 202);

    server.stop();
    let started = Instant::now();
    let r = patch(&location, 3_000_000, &blob[3_000_000..6_000_000]);
    assert!(
        started.elapsed() < Duration::from_secs(30),
        "no hang: answered in {:?}",
        started.elapsed()
    );
    assert_eq!(r.status(), 503);
    assert!(r.headers().contains_key("retry-after"));
    assert_eq!(error_code(&r.text().unwrap()), "UNAVAILABLE");
    let r = client()
        .post(reg.url("/v2/outage/blobs/uploads/"))
        .send()
        .unwrap();
    assert_eq!(r.status(), 503, "new pushes fail cleanly too");

    server.resume();
    // The upload continues from what was stored before the outage.
    let r = client().get(&location).send().unwrap();
    assert_eq!(r.status(), 204);
    assert_eq!(r.headers()["range"], "0-2999999");
    assert_eq!(
        patch(&location, 3_000_000, &blob[3_000_000..]).status(),
        202
    );
    let digest = sha256(&blob);
    let r = complete_upload(&location, &digest);
    assert_eq!(r.status(), 201, "{}", r.text().unwrap());
    let r = client()
        .head(reg.url(&format!("/v2/outage/blobs/{digest}")))
        .send()
        .unwrap();
    assert_eq!(r.status(), 200);
    assert_eq!(
        r.headers()["content-length"],
        blob.len().to_string().as_str()
    );
}

#[test]
fn skopeo_pulls_large_layers_through_the_presigned_redirect() {
    let server = S3Server::start();
    let reg = registry_on(&server);
    let layer = data(3 * 1024 * 1024);
    let image = common::push_image(&reg, "redirect/app", "v1", &layer);
    let layer_digest = sha256(&layer);

    let r = client()
        .get(reg.url(&format!("/v2/redirect/app/blobs/{layer_digest}")))
        .send()
        .unwrap();
    assert_eq!(r.status(), 307, "large blobs are redirected to the bucket");
    let target = r.headers()["location"].to_str().unwrap().to_string();
    assert!(target.starts_with(&server.endpoint()), "{target}");
    assert!(target.contains("X-Amz-Signature="), "{target}");
    let r = client()
        .head(reg.url(&format!("/v2/redirect/app/blobs/{layer_digest}")))
        .send()
        .unwrap();
    assert_eq!(r.status(), 200, "HEAD is answered directly");

    // `dir:` keeps every blob as fetched (an OCI layout destination may recompress layers).
    let out = tempfile::tempdir().unwrap();
    let copy = out.path().join("copy");
    run(Command::new("skopeo")
        .args(["copy", "--src-tls-verify=false"])
        .arg(format!("docker://{}/redirect/app:v1", reg.host))
        .arg(format!("dir:{}", copy.display())));
    let manifest = std::fs::read(copy.join("manifest.json")).unwrap();
    assert_eq!(
        sha256(&manifest),
        image,
        "the manifest comes through byte-exact"
    );
    let hex = layer_digest.strip_prefix("sha256:").unwrap();
    let pulled = std::fs::read(copy.join(hex))
        .unwrap_or_else(|e| panic!("{e}: the copy holds {:?}", walk(&copy)));
    assert_eq!(
        pulled, layer,
        "skopeo got the layer's bytes from the bucket"
    );
}

/// What a status request says the upload holds (`None`: no such upload).
fn upload_status(location: &str) -> Option<String> {
    let r = client().get(location).send().unwrap();
    if r.status() == 404 {
        return None;
    }
    assert_eq!(r.status(), 204, "status of the upload");
    Some(r.headers()["range"].to_str().unwrap().to_string())
}

/// How the commit after a completed multipart upload fails, in the test below.
#[derive(Debug, Clone, Copy, PartialEq)]
enum CommitFailure {
    /// The store is away for a moment (a 503, or no answer).
    Unavailable,
    /// The store refuses the copy, as AWS refuses to copy more than 5 GiB.
    Refused,
    /// As `Unavailable`, and the record of the completion is not written either (the same
    /// outage, or a crash right after the completion): the retry finds the multipart upload
    /// gone.
    Unrecorded,
}

#[test]
fn a_commit_failing_after_the_multipart_completion_commits_on_retry() {
    let server = S3Server::start();
    let faults = Faults::default();
    let reg = TestRegistry::builder()
        .store(Store::S3(server.env(&server.bucket())))
        .faults(&faults)
        .start();
    use CommitFailure::*;
    for (round, failure) in [Unavailable, Refused, Unrecorded].into_iter().enumerate() {
        let blob = data(12 * 1024 * 1024 + 1000 * round);
        let digest = sha256(&blob);
        let location = start_upload(&reg, "commit/retry");
        let half = 6 * 1024 * 1024;
        assert_eq!(patch(&location, 0, &blob[..half]).status(), 202);
        assert_eq!(patch(&location, half as u64, &blob[half..]).status(), 202);

        // The multipart upload completes; the copy that publishes it under its digest fails.
        match failure {
            Refused => faults.refuse(Op::Rename, "_berth/uploads", 1),
            Unavailable => faults.fail(Op::Rename, "_berth/uploads", 1),
            Unrecorded => {
                faults.fail(Op::Rename, "_berth/uploads", 1);
                faults.fail(Op::Put, "/state", 1);
            }
        }
        let r = complete_upload(&location, &digest);
        if failure == Refused {
            assert_eq!(r.status(), 500, "a refusal is not the store being away");
            assert!(
                !r.headers().contains_key("retry-after"),
                "the same request would be refused again: no Retry-After"
            );
            assert_eq!(error_code(&r.text().unwrap()), "UNKNOWN");
        } else {
            assert_eq!(r.status(), 503);
            assert!(r.headers().contains_key("retry-after"));
            assert_eq!(error_code(&r.text().unwrap()), "UNAVAILABLE");
        }
        let blob_url = reg.url(&format!("/v2/commit/retry/blobs/{digest}"));
        assert_eq!(client().head(&blob_url).send().unwrap().status(), 404);
        // The status tells the truth: the upload is alive and holds every byte.
        let range = format!("0-{}", blob.len() - 1);
        assert_eq!(upload_status(&location).as_deref(), Some(range.as_str()));
        if failure != Unrecorded {
            // Its bytes are final: nothing more can be appended.
            let r = patch(&location, blob.len() as u64, b"more");
            assert_eq!(r.status(), 416);
            assert_eq!(r.headers()["range"], range.as_str());
            assert_eq!(error_code(&r.text().unwrap()), "BLOB_UPLOAD_INVALID");
        }

        // The retry commits what was completed.
        let r = complete_upload(&location, &digest);
        assert_eq!(r.status(), 201, "{failure:?}: {}", r.text().unwrap());
        assert_eq!(upload_status(&location), None, "the upload is done");
        let got = reqwest::blocking::get(&blob_url).unwrap().bytes().unwrap();
        assert_eq!(got.len(), blob.len());
        assert!(got.as_ref() == blob.as_slice(), "the blob pulls byte-exact");
    }
    let left: Vec<_> = walk(&server.dir)
        .into_iter()
        .filter(|p| p.contains("_berth"))
        .collect();
    assert!(left.is_empty(), "left over: {left:?}");
}

#[test]
fn a_real_s3_refusal_is_permanent_and_an_unreachable_store_is_not() {
    use object_store::aws::AmazonS3Builder;
    use object_store::multipart::MultipartStore;
    use object_store::path::Path;
    use object_store::ObjectStoreExt;

    let mut server = S3Server::start();
    let bucket = server.bucket();
    let s3 = AmazonS3Builder::new()
        .with_endpoint(server.endpoint())
        .with_allow_http(true)
        .with_bucket_name(&bucket)
        .with_access_key_id(common::s3::ACCESS_KEY)
        .with_secret_access_key(common::s3::SECRET_KEY)
        .with_region("us-east-1")
        .with_retry(object_store::RetryConfig {
            max_retries: 1,
            retry_timeout: Duration::from_secs(2),
            ..Default::default()
        })
        .build()
        .unwrap();
    let rt = tokio::runtime::Runtime::new().unwrap();
    rt.block_on(async {
        // Parts below S3's 5 MiB minimum: completing them is refused with 400 EntityTooSmall,
        // the same kind of answer as "copy source too large".
        let path = Path::from("small-parts");
        let id = s3.create_multipart(&path).await.unwrap();
        let mut parts = Vec::new();
        for i in 0..2 {
            parts.push(
                s3.put_part(&path, &id, i, vec![b'x'; 10].into())
                    .await
                    .unwrap(),
            );
        }
        let refused = s3.complete_multipart(&path, &id, parts).await.unwrap_err();
        let e = StorageError::from(refused);
        assert!(
            matches!(e, StorageError::Refused { status: 400, .. }),
            "{e}"
        );
    });
    server.stop();
    rt.block_on(async {
        let e = StorageError::from(s3.head(&Path::from("x")).await.unwrap_err());
        assert!(matches!(e, StorageError::Backend(_)), "{e}");
    });
}

#[test]
fn a_push_replaces_a_stored_blob_of_the_wrong_size() {
    let server = S3Server::start();
    let bucket = server.bucket();
    let reg = TestRegistry::builder()
        .store(Store::S3(server.env(&bucket)))
        .start();
    let blob = data(3 * 1024 * 1024);
    let digest = common::push_blob(&reg, "replace", &blob);
    // The stored object lost its tail (written by another tool, or by a registry that
    // published unverified bytes).
    let hex = digest.strip_prefix("sha256:").unwrap();
    let object = server
        .dir
        .join(&bucket)
        .join("docker/registry/v2/blobs/sha256")
        .join(&hex[..2])
        .join(hex)
        .join("data");
    std::fs::write(&object, &blob[..1024 * 1024]).unwrap();
    assert_eq!(common::push_blob(&reg, "replace", &blob), digest);
    let got = reqwest::blocking::get(reg.url(&format!("/v2/replace/blobs/{digest}")))
        .unwrap()
        .bytes()
        .unwrap();
    assert_eq!(got.len(), blob.len());
    assert!(got.as_ref() == blob.as_slice(), "the blob pulls byte-exact");
}

/// Upload purging on a real S3 server: an abandoned upload's multipart upload is aborted and every
/// object of it removed (the lease that purging's own lock writes does not make it look fresh),
/// while an upload a client keeps writing survives every pass and completes.
#[test]
fn purging_removes_abandoned_uploads_and_spares_live_ones() {
    let server = S3Server::start();
    let reg = TestRegistry::builder()
        .store(Store::S3(server.env(&server.bucket())))
        .env("REGISTRY_STORAGE_MAINTENANCE_UPLOADPURGING_AGE", "3s")
        .env("REGISTRY_STORAGE_MAINTENANCE_UPLOADPURGING_INTERVAL", "1s")
        .start();
    // A part (10 MiB) and a staged piece.
    let abandoned = start_upload(&reg, "purge");
    let id = abandoned.rsplit('/').next().unwrap().to_string();
    assert_eq!(patch(&abandoned, 0, &data(11 * 1024 * 1024)).status(), 202);
    let before: Vec<_> = walk(&server.dir);
    assert!(before.iter().any(|p| p.contains(&id)), "{before:?}");
    // s3s-fs keeps the parts of a multipart upload as `.upload_id-<multipart id>.part-<n>`.
    let multipart = |files: &[String]| -> Vec<String> {
        files
            .iter()
            .filter(|p| p.contains("/.upload"))
            .cloned()
            .collect()
    };
    assert!(!multipart(&before).is_empty(), "{before:?}");

    let live = start_upload(&reg, "purge");
    let chunk = data(1000);
    let mut offset = 0u64;
    let mut gone_at = None;
    let deadline = Instant::now() + Duration::from_secs(30);
    // Several purge passes after the abandoned upload went: the live one stays throughout.
    while gone_at.is_none_or(|t: Instant| t.elapsed() < Duration::from_secs(4)) {
        assert!(Instant::now() < deadline, "the abandoned upload is purged");
        let r = patch(&live, offset, &chunk);
        assert_eq!(r.status(), 202, "the live upload is never purged");
        offset += chunk.len() as u64;
        if gone_at.is_none() && client().get(&abandoned).send().unwrap().status() == 404 {
            gone_at = Some(Instant::now());
        }
        std::thread::sleep(Duration::from_millis(500));
    }
    let whole: Vec<u8> = (0..offset / 1000).flat_map(|_| chunk.clone()).collect();
    assert_eq!(complete_upload(&live, &sha256(&whole)).status(), 201);
    let after = walk(&server.dir);
    let left: Vec<_> = after.iter().filter(|p| p.contains(&id)).collect();
    assert!(left.is_empty(), "left over: {left:?}");
    assert_eq!(
        multipart(&after),
        Vec::<String>::new(),
        "multipart uploads aborted"
    );
}

/// s3s-fs does not implement ListMultipartUploads (it answers `NotImplemented`): the listing
/// says there is none, rather than failing, so upload purging goes on without it.
#[test]
fn a_server_without_multipart_listings_lists_none() {
    let server = S3Server::start();
    let config: berth::config::S3Config = serde_json::from_value(serde_json::json!({
        "regionendpoint": server.endpoint(),
        "bucket": server.bucket(),
        "region": "us-east-1",
        "forcepathstyle": true,
        "secure": false,
        "accesskey": common::s3::ACCESS_KEY,
        "secretkey": common::s3::SECRET_KEY,
        "rootdirectory": "/root",
    }))
    .unwrap();
    let storage = berth::storage::Storage::s3(&config).unwrap();
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    let listed =
        runtime.block_on(storage.list_multipart_uploads(&berth::storage::layout::uploads_root()));
    assert!(matches!(listed, Ok(None)), "{listed:?}");
}
