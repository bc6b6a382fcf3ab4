//! Storage failures: every one answers the spec's JSON error, and none leaves a blob, a manifest or
//! a tag half-visible; once storage works again, the same pushes succeed.

mod common;

use std::path::Path;

use berth::storage::faults::{Faults, Op};
use common::{assert_error, client, push_blob, sha256, TestRegistry};

/// A registry on the filesystem at `root`, its storage failing where the answered `Faults` say.
fn on_faulty_disk(root: &Path) -> (Faults, TestRegistry) {
    let faults = Faults::default();
    let reg = TestRegistry::builder()
        .filesystem(root)
        .faults(&faults)
        .start();
    (faults, reg)
}

/// How many uploads are left under a filesystem registry's `root`.
fn uploads_left(root: &Path) -> usize {
    std::fs::read_dir(root.join("docker/registry/v2/_berth/uploads"))
        .map(|d| d.count())
        .unwrap_or(0)
}

/// The bytes `GET` answers for blob `digest` of `repo`.
fn get_blob(reg: &TestRegistry, repo: &str, digest: &str) -> bytes::Bytes {
    client()
        .get(reg.url(&format!("/v2/{repo}/blobs/{digest}")))
        .send()
        .unwrap()
        .bytes()
        .unwrap()
}

#[test]
fn a_failed_commit_shows_nothing_and_a_retry_succeeds() {
    let dir = tempfile::tempdir().unwrap();
    let (faults, reg) = on_faulty_disk(dir.path());
    let c = client();
    let content = vec![42u8; 300_000];
    let digest = sha256(&content);

    // The rename that publishes the upload under its digest fails.
    faults.fail(Op::Rename, "_berth/uploads", 1);
    let r = c
        .post(reg.url(&format!("/v2/f/blobs/uploads/?digest={digest}")))
        .body(content.clone())
        .send()
        .unwrap();
    assert_error(r, 503, "UNAVAILABLE");
    assert_eq!(
        c.head(reg.url(&format!("/v2/f/blobs/{digest}")))
            .send()
            .unwrap()
            .status(),
        404
    );
    assert_eq!(uploads_left(dir.path()), 0, "no upload left behind");

    // A chunked upload whose completing PUT fails the same way stays, and the PUT's retry
    // publishes it.
    let r = c.post(reg.url("/v2/f/blobs/uploads/")).send().unwrap();
    let location = r.headers()["location"].to_str().unwrap().to_string();
    assert_eq!(common::patch_chunk(&location, 0, &content).status(), 202);
    faults.fail(Op::Rename, "_berth/uploads", 1);
    assert_error(
        common::complete_upload(&location, &digest),
        503,
        "UNAVAILABLE",
    );
    let r = common::complete_upload(&location, &digest);
    assert_eq!(r.status(), 201, "the retried PUT completes the upload");
    c.delete(reg.url(&format!("/v2/f/blobs/{digest}")))
        .send()
        .unwrap();

    // Storage is back: the same push works and the content is whole.
    assert_eq!(push_blob(&reg, "f", &content), digest);
    let got = get_blob(&reg, "f", &digest);
    assert_eq!(got.as_ref(), &content[..]);
}

#[test]
fn a_failed_manifest_write_leaves_no_tag() {
    let faults = Faults::default();
    let reg = TestRegistry::builder().faults(&faults).start();
    let c = client();
    let config = push_blob(&reg, "m", b"{}");
    let manifest = common::image_manifest((&config, 2), &[]);

    faults.fail(Op::Put, "_manifests/revisions", 1);
    let put = |tag: &str| {
        c.put(reg.url(&format!("/v2/m/manifests/{tag}")))
            .header("Content-Type", "application/vnd.oci.image.manifest.v1+json")
            .body(manifest.clone())
            .send()
            .unwrap()
    };
    let r = put("v1");
    assert_error(r, 503, "UNAVAILABLE");
    let r = c.get(reg.url("/v2/m/manifests/v1")).send().unwrap();
    assert_eq!(
        r.status(),
        404,
        "the tag must not point at a manifest that was not recorded"
    );

    assert_eq!(put("v1").status(), 201);
    let r = c.get(reg.url("/v2/m/manifests/v1")).send().unwrap();
    assert_eq!(r.text().unwrap(), manifest);
}

#[test]
fn a_failed_read_is_a_json_error() {
    let faults = Faults::default();
    let reg = TestRegistry::builder().faults(&faults).start();
    let c = client();
    let d = push_blob(&reg, "r", b"content");
    faults.fail(Op::Get, "/blobs/", 1);
    let r = c.get(reg.url(&format!("/v2/r/blobs/{d}"))).send().unwrap();
    assert_error(r, 503, "UNAVAILABLE");
    let r = c.get(reg.url(&format!("/v2/r/blobs/{d}"))).send().unwrap();
    assert_eq!(r.bytes().unwrap().as_ref(), b"content");
}

#[test]
fn a_cleanup_failing_after_the_commit_does_not_fail_the_push() {
    let dir = tempfile::tempdir().unwrap();
    let (faults, reg) = on_faulty_disk(dir.path());
    let c = client();
    let content = vec![7u8; 300_000];
    let digest = sha256(&content);
    let r = c.post(reg.url("/v2/f/blobs/uploads/")).send().unwrap();
    let location = r.headers()["location"].to_str().unwrap().to_string();
    assert_eq!(common::patch_chunk(&location, 0, &content).status(), 202);
    // The blob is renamed into place; removing the upload's leftovers then fails.
    faults.fail(Op::Delete, "_berth/uploads", 1);
    let r = common::complete_upload(&location, &digest);
    assert_eq!(r.status(), 201, "{}", r.text().unwrap());
    let got = get_blob(&reg, "f", &digest);
    assert_eq!(got.as_ref(), &content[..]);
}

/// A disk whose write-back fails (EIO, reported once by the kernel): the upload fails with the
/// spec's JSON error and is gone, so no later request can publish bytes that never reached the
/// disk; the client starts again and that push works.
#[test]
fn a_failed_sync_ends_the_upload_and_a_new_one_succeeds() {
    let dir = tempfile::tempdir().unwrap();
    let (faults, reg) = on_faulty_disk(dir.path());
    let c = client();
    let content = vec![9u8; 40 * 1024 * 1024];
    let digest = sha256(&content);
    let blob = reg.url(&format!("/v2/w/blobs/{digest}"));

    // Waiting for the write-back of the first 16 MiB fails while the chunk streams.
    faults.fail(Op::WaitWriteBack, "", 1);
    let location = common::start_upload_at(&reg.url(""), "w");
    assert_error(common::patch_chunk(&location, 0, &content), 500, "UNKNOWN");
    assert_error(c.get(&location).send().unwrap(), 404, "BLOB_UPLOAD_UNKNOWN");
    assert_error(
        common::complete_upload(&location, &digest),
        404,
        "BLOB_UPLOAD_UNKNOWN",
    );
    assert_eq!(c.head(&blob).send().unwrap().status(), 404);

    // The final fsync fails: the PUT fails, and its retry finds no upload to publish (the next
    // fsync would "succeed" without the lost bytes).
    let location = common::start_upload_at(&reg.url(""), "w");
    assert_eq!(
        common::patch_chunk(&location, 0, &content[..3 * 1024 * 1024]).status(),
        202
    );
    faults.fail(Op::Fsync, "", 1);
    let small = sha256(&content[..3 * 1024 * 1024]);
    assert_error(common::complete_upload(&location, &small), 500, "UNKNOWN");
    assert_error(
        common::complete_upload(&location, &small),
        404,
        "BLOB_UPLOAD_UNKNOWN",
    );
    let small_blob = reg.url(&format!("/v2/w/blobs/{small}"));
    assert_eq!(c.head(&small_blob).send().unwrap().status(), 404);
    assert_eq!(uploads_left(dir.path()), 0, "no upload left behind");

    // The client starts again: the push works and the content is whole.
    let location = common::start_upload_at(&reg.url(""), "w");
    assert_eq!(common::patch_chunk(&location, 0, &content).status(), 202);
    assert_eq!(common::complete_upload(&location, &digest).status(), 201);
    let served = c.get(&blob).send().unwrap().bytes().unwrap();
    assert!(served.as_ref() == content.as_slice());
}
