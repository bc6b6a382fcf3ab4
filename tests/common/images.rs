//! Small images pushed and pulled over plain HTTP as clients do (blobs the repository has are
//! not sent again), and pulls compared byte for byte: what the garbage-collection tests push,
//! untag and re-push while collections run (tests/gc.rs, tests/cluster.rs).

use super::{client, push_blob_as, sha256};

pub const OCI_MANIFEST: &str = "application/vnd.oci.image.manifest.v1+json";
pub const ACCEPT: &str = "application/vnd.oci.image.manifest.v1+json, \
    application/vnd.oci.image.index.v1+json, \
    application/vnd.docker.distribution.manifest.v2+json, \
    application/vnd.docker.distribution.manifest.list.v2+json";

/// An image as pushed: its manifest and every blob, to compare pulls with.
#[derive(Clone, Debug)]
pub struct Image {
    pub manifest: Vec<u8>,
    pub digest: String,
    pub blobs: Vec<(String, Vec<u8>)>,
}

pub fn make_image(name: &str, shared: &[u8]) -> Image {
    let config = format!(r#"{{"architecture":"amd64","os":"linux","name":"{name}"}}"#).into_bytes();
    let own = format!("layer of {name} ").repeat(200).into_bytes();
    let blobs = vec![
        (sha256(&config), config.clone()),
        (sha256(shared), shared.to_vec()),
        (sha256(&own), own.clone()),
    ];
    let manifest = super::image_manifest(
        (&blobs[0].0, config.len()),
        &[(&blobs[1].0, shared.len()), (&blobs[2].0, own.len())],
    )
    .into_bytes();
    Image {
        digest: sha256(&manifest),
        manifest,
        blobs,
    }
}

/// Pushes `image` as `repo:reference` at `base` as clients do: blobs the repository already
/// has (`HEAD` answers 200) are not sent again. `false` if the registry refused a part.
pub fn try_push(base: &str, repo: &str, reference: &str, image: &Image) -> bool {
    for (digest, bytes) in &image.blobs {
        let head = client()
            .head(format!("{base}/v2/{repo}/blobs/{digest}"))
            .send()
            .unwrap();
        if head.status() == 200 {
            continue;
        }
        if push_blob_as(base, repo, bytes, None).status() != 201 {
            return false;
        }
    }
    let r = client()
        .put(format!("{base}/v2/{repo}/manifests/{reference}"))
        .header("Content-Type", OCI_MANIFEST)
        .body(image.manifest.clone())
        .send()
        .unwrap();
    r.status() == 201
}

/// Pushes, once more if a concurrent collection made the first attempt fail (see `berth::gc`).
pub fn push(base: &str, repo: &str, reference: &str, image: &Image) -> u32 {
    for attempt in 0..3 {
        if try_push(base, repo, reference, image) {
            return attempt;
        }
    }
    panic!("pushing {repo}:{reference} failed three times");
}

pub fn get(url: &str) -> (u16, Vec<u8>) {
    let r = client().get(url).header("Accept", ACCEPT).send().unwrap();
    (r.status().as_u16(), r.bytes().unwrap().to_vec())
}

/// Pulls `repo:reference` and every blob, asserting they are byte-identical to `image`.
pub fn assert_pulls(base: &str, repo: &str, reference: &str, image: &Image) {
    for r in [reference, &image.digest] {
        let (status, body) = get(&format!("{base}/v2/{repo}/manifests/{r}"));
        assert_eq!(status, 200, "GET {repo}:{r}");
        assert!(body == image.manifest, "manifest {repo}:{r} differs");
    }
    for (d, bytes) in &image.blobs {
        let (status, body) = get(&format!("{base}/v2/{repo}/blobs/{d}"));
        assert_eq!(status, 200, "GET blob {d} of {repo}:{reference}");
        assert!(&body == bytes, "blob {d} of {repo}:{reference} differs");
    }
}

pub fn delete(base: &str, repo: &str, reference: &str) {
    let r = client()
        .delete(format!("{base}/v2/{repo}/manifests/{reference}"))
        .send()
        .unwrap();
    assert_eq!(r.status(), 202, "DELETE {repo}:{reference}");
}
