//! Manifests, tags, the catalog and referrers against the real server.

mod common;

use common::{
    assert_error, client, error_code, image_manifest, push_blob, push_image, sha256, TestRegistry,
};
use serde_json::{json, Value};

const OCI_MANIFEST: &str = "application/vnd.oci.image.manifest.v1+json";
const OCI_INDEX: &str = "application/vnd.oci.image.index.v1+json";
const DOCKER_MANIFEST: &str = "application/vnd.docker.distribution.manifest.v2+json";
const DOCKER_LIST: &str = "application/vnd.docker.distribution.manifest.list.v2+json";

fn put_manifest(
    reg: &TestRegistry,
    repo: &str,
    reference: &str,
    content_type: &str,
    body: &str,
) -> reqwest::blocking::Response {
    client()
        .put(reg.url(&format!("/v2/{repo}/manifests/{reference}")))
        .header("Content-Type", content_type)
        .body(body.to_string())
        .send()
        .unwrap()
}

/// Pushes config + layer blobs and returns an image manifest over them.
fn image(reg: &TestRegistry, repo: &str, layer: &[u8], media_type: &str) -> String {
    let config = br#"{"os":"linux"}"#;
    let cd = push_blob(reg, repo, config);
    let ld = push_blob(reg, repo, layer);
    let m: Value =
        serde_json::from_str(&image_manifest((&cd, config.len()), &[(&ld, layer.len())])).unwrap();
    let mut m = m;
    m["mediaType"] = json!(media_type);
    m.to_string()
}

fn index(media_type: &str, children: &[(&str, &str, usize)]) -> String {
    let manifests: Vec<Value> = children
        .iter()
        .map(|(mt, d, s)| json!({"mediaType": mt, "digest": d, "size": s, "platform": {"architecture": "amd64", "os": "linux"}}))
        .collect();
    json!({"schemaVersion": 2, "mediaType": media_type, "manifests": manifests}).to_string()
}

#[test]
fn push_and_pull_by_tag_and_digest_byte_exact() {
    let reg = TestRegistry::start();
    let c = client();
    // Unusual but valid formatting must survive byte for byte.
    let body = image(&reg, "a/b", b"layer", OCI_MANIFEST).replace(",", " ,\n ");
    let digest = sha256(body.as_bytes());
    let r = put_manifest(&reg, "a/b", "v1", OCI_MANIFEST, &body);
    assert_eq!(r.status(), 201);
    assert_eq!(r.headers()["docker-content-digest"], digest.as_str());
    assert!(r.headers()["location"]
        .to_str()
        .unwrap()
        .ends_with(&format!("/v2/a/b/manifests/{digest}")));

    for reference in ["v1", digest.as_str()] {
        let url = reg.url(&format!("/v2/a/b/manifests/{reference}"));
        let r = c.get(&url).header("Accept", OCI_MANIFEST).send().unwrap();
        assert_eq!(r.status(), 200);
        assert_eq!(r.headers()["content-type"], OCI_MANIFEST);
        assert_eq!(r.headers()["docker-content-digest"], digest.as_str());
        assert_eq!(r.text().unwrap(), body);
        let r = c.head(&url).send().unwrap();
        assert_eq!(r.status(), 200);
        assert_eq!(
            r.headers()["content-length"],
            body.len().to_string().as_str()
        );
        assert_eq!(r.headers()["docker-content-digest"], digest.as_str());
    }

    // PUT by digest.
    let body2 = image(&reg, "a/b", b"layer two", OCI_MANIFEST);
    let d2 = sha256(body2.as_bytes());
    assert_eq!(
        put_manifest(&reg, "a/b", &d2, OCI_MANIFEST, &body2).status(),
        201
    );
    assert_eq!(
        c.get(reg.url(&format!("/v2/a/b/manifests/{d2}")))
            .send()
            .unwrap()
            .text()
            .unwrap(),
        body2
    );
}

#[test]
fn docker_schema2_and_manifest_lists() {
    let reg = TestRegistry::start();
    let c = client();
    let m = image(&reg, "d", b"docker layer", DOCKER_MANIFEST);
    let md = sha256(m.as_bytes());
    assert_eq!(
        put_manifest(&reg, "d", &md, DOCKER_MANIFEST, &m).status(),
        201
    );
    let list = index(DOCKER_LIST, &[(DOCKER_MANIFEST, &md, m.len())]);
    assert_eq!(
        put_manifest(&reg, "d", "multi", DOCKER_LIST, &list).status(),
        201
    );
    let r = c.get(reg.url("/v2/d/manifests/multi")).send().unwrap();
    assert_eq!(r.headers()["content-type"], DOCKER_LIST);
    assert_eq!(r.text().unwrap(), list);

    // Accept negotiation: a client that does not take lists is not handed one.
    let r = c
        .get(reg.url("/v2/d/manifests/multi"))
        .header("Accept", DOCKER_MANIFEST)
        .send()
        .unwrap();
    assert_error(r, 404, "MANIFEST_UNKNOWN");
    let r = c
        .get(reg.url("/v2/d/manifests/multi"))
        .header("Accept", format!("{DOCKER_MANIFEST}, {DOCKER_LIST}"))
        .send()
        .unwrap();
    assert_eq!(r.status(), 200);
}

#[test]
fn indexes_need_their_children() {
    let reg = TestRegistry::start();
    let m = image(&reg, "i", b"l", OCI_MANIFEST);
    let md = sha256(m.as_bytes());
    let idx = index(OCI_INDEX, &[(OCI_MANIFEST, &md, m.len())]);
    let r = put_manifest(&reg, "i", "all", OCI_INDEX, &idx);
    assert_error(r, 400, "MANIFEST_BLOB_UNKNOWN");
    assert_eq!(put_manifest(&reg, "i", &md, OCI_MANIFEST, &m).status(), 201);
    assert_eq!(
        put_manifest(&reg, "i", "all", OCI_INDEX, &idx).status(),
        201
    );
    // An index of indexes.
    let outer = index(
        OCI_INDEX,
        &[(OCI_INDEX, &sha256(idx.as_bytes()), idx.len())],
    );
    assert_eq!(
        put_manifest(&reg, "i", "nested", OCI_INDEX, &outer).status(),
        201
    );
}

#[test]
fn manifest_errors() {
    let reg = TestRegistry::start();
    let c = client();
    let config = push_blob(&reg, "e", b"{}");
    let missing = sha256(b"never pushed");

    let r = put_manifest(
        &reg,
        "e",
        "t",
        OCI_MANIFEST,
        &image_manifest((&config, 2), &[(&missing, 12)]),
    );
    assert_eq!(r.status(), 400);
    let body: Value = r.json().unwrap();
    assert_eq!(body["errors"][0]["code"], "MANIFEST_BLOB_UNKNOWN");
    assert_eq!(body["errors"][0]["detail"]["digest"], missing.as_str());

    let r = put_manifest(&reg, "e", "t", OCI_MANIFEST, "{not json");
    assert_error(r, 400, "MANIFEST_INVALID");

    let schema1 = r#"{"schemaVersion":1,"name":"e","tag":"t","architecture":"amd64","fsLayers":[],"history":[]}"#;
    let r = put_manifest(
        &reg,
        "e",
        "t",
        "application/vnd.docker.distribution.manifest.v1+prettyjws",
        schema1,
    );
    assert_eq!(r.status(), 400);
    let text = r.text().unwrap();
    assert_eq!(error_code(&text), "MANIFEST_INVALID");
    assert!(text.contains("schema1"), "{text}");

    // mediaType and Content-Type disagree.
    let good = image_manifest((&config, 2), &[]);
    let r = put_manifest(&reg, "e", "t", DOCKER_MANIFEST, &good);
    assert_error(r, 400, "MANIFEST_INVALID");

    // The digest in the URL must be the content's.
    let r = put_manifest(&reg, "e", &sha256(b"other"), OCI_MANIFEST, &good);
    assert_error(r, 400, "DIGEST_INVALID");

    // Over 4 MiB.
    let mut big: Value = serde_json::from_str(&good).unwrap();
    big["annotations"] = json!({"pad": "x".repeat(4 * 1024 * 1024)});
    let r = put_manifest(&reg, "e", "big", OCI_MANIFEST, &big.to_string());
    assert_error(r, 413, "SIZE_INVALID");

    // An invalid tag: unknown when read, invalid when pushed.
    let r = c.get(reg.url("/v2/e/manifests/.bad")).send().unwrap();
    assert_error(r, 404, "MANIFEST_UNKNOWN");
    let r = put_manifest(&reg, "e", "-bad", OCI_MANIFEST, &good);
    assert_error(r, 400, "TAG_INVALID");

    // Unknown manifest in a known repository; unknown repository.
    assert_eq!(
        put_manifest(&reg, "e", "ok", OCI_MANIFEST, &good).status(),
        201
    );
    let r = c.get(reg.url("/v2/e/manifests/nope")).send().unwrap();
    assert_error(r, 404, "MANIFEST_UNKNOWN");
    let r = c
        .get(reg.url("/v2/nobody/here/manifests/latest"))
        .send()
        .unwrap();
    assert_error(r, 404, "NAME_UNKNOWN");
    assert_eq!(
        c.head(reg.url("/v2/e/manifests/nope"))
            .send()
            .unwrap()
            .status(),
        404
    );
}

#[test]
fn non_distributable_layers_need_not_be_pushed() {
    let reg = TestRegistry::start();
    let config = push_blob(&reg, "nd", b"{}");
    let foreign = sha256(b"windows base layer");
    let m = json!({
        "schemaVersion": 2,
        "mediaType": OCI_MANIFEST,
        "config": {"mediaType": "application/vnd.oci.image.config.v1+json", "digest": config, "size": 2},
        "layers": [
            {"mediaType": "application/vnd.oci.image.layer.nondistributable.v1.tar+gzip", "digest": foreign, "size": 18, "urls": ["https://example.com/layer"]}
        ]
    })
    .to_string();
    assert_eq!(
        put_manifest(&reg, "nd", "v1", OCI_MANIFEST, &m).status(),
        201
    );
}

#[test]
fn artifacts_with_empty_config_and_tag_parameters() {
    let reg = TestRegistry::start();
    let empty = push_blob(&reg, "art", b"{}");
    let m = json!({
        "schemaVersion": 2,
        "mediaType": OCI_MANIFEST,
        "artifactType": "application/vnd.example.sbom",
        "config": {"mediaType": "application/vnd.oci.empty.v1+json", "digest": empty, "size": 2},
        "layers": [{"mediaType": "application/vnd.oci.empty.v1+json", "digest": empty, "size": 2}]
    })
    .to_string();
    let d = sha256(m.as_bytes());
    let r = client()
        .put(reg.url(&format!(
            "/v2/art/manifests/{d}?tag=1.2.3&tag=1.2&tag=latest"
        )))
        .header("Content-Type", OCI_MANIFEST)
        .body(m)
        .send()
        .unwrap();
    assert_eq!(r.status(), 201);
    let tags: Vec<&str> = r
        .headers()
        .get_all("oci-tag")
        .iter()
        .map(|v| v.to_str().unwrap())
        .collect();
    assert_eq!(tags, ["1.2.3", "1.2", "latest"]);
    let list: Value = client()
        .get(reg.url("/v2/art/tags/list"))
        .send()
        .unwrap()
        .json()
        .unwrap();
    assert_eq!(list["tags"], json!(["1.2", "1.2.3", "latest"]));
}

#[test]
fn deletes_by_tag_and_by_digest() {
    let reg = TestRegistry::start();
    let c = client();
    let d = push_image(&reg, "del", "v1", b"l1");
    let body = c
        .get(reg.url("/v2/del/manifests/v1"))
        .send()
        .unwrap()
        .text()
        .unwrap();
    assert_eq!(
        put_manifest(&reg, "del", "v2", OCI_MANIFEST, &body).status(),
        201
    );

    let r = c.delete(reg.url("/v2/del/manifests/v1")).send().unwrap();
    assert_eq!(r.status(), 202);
    assert_eq!(r.headers()["docker-content-digest"], d.as_str());
    assert_eq!(
        c.get(reg.url("/v2/del/manifests/v1"))
            .send()
            .unwrap()
            .status(),
        404
    );
    // The manifest itself stays while another tag or its digest names it.
    assert_eq!(
        c.get(reg.url(&format!("/v2/del/manifests/{d}")))
            .send()
            .unwrap()
            .status(),
        200
    );

    let r = c
        .delete(reg.url(&format!("/v2/del/manifests/{d}")))
        .send()
        .unwrap();
    assert_eq!(r.status(), 202);
    assert_eq!(
        c.get(reg.url(&format!("/v2/del/manifests/{d}")))
            .send()
            .unwrap()
            .status(),
        404
    );
    let list: Value = c
        .get(reg.url("/v2/del/tags/list"))
        .send()
        .unwrap()
        .json()
        .unwrap();
    assert_eq!(
        list["tags"],
        json!([]),
        "deleting a manifest removes the tags on it"
    );
    let r = c
        .delete(reg.url(&format!("/v2/del/manifests/{d}")))
        .send()
        .unwrap();
    assert_error(r, 404, "MANIFEST_UNKNOWN");

    let reg = TestRegistry::builder().delete_enabled(false).start();
    push_image(&reg, "keep", "v1", b"l");
    let r = c.delete(reg.url("/v2/keep/manifests/v1")).send().unwrap();
    assert_error(r, 405, "UNSUPPORTED");
}

#[test]
fn tag_listing_is_sorted_and_paginated() {
    let reg = TestRegistry::start();
    let c = client();
    let d = push_image(&reg, "t", "b", b"l");
    let body = c
        .get(reg.url(&format!("/v2/t/manifests/{d}")))
        .send()
        .unwrap()
        .text()
        .unwrap();
    for tag in ["a", "C", "d", "B", "e"] {
        assert_eq!(
            put_manifest(&reg, "t", tag, OCI_MANIFEST, &body).status(),
            201
        );
    }
    let r = c.get(reg.url("/v2/t/tags/list")).send().unwrap();
    assert!(r.headers().get("link").is_none());
    let all: Value = r.json().unwrap();
    assert_eq!(
        all,
        json!({"name": "t", "tags": ["B", "C", "a", "b", "d", "e"]})
    );

    let r = c.get(reg.url("/v2/t/tags/list?n=2")).send().unwrap();
    assert_eq!(
        r.headers()["link"],
        "</v2/t/tags/list?n=2&last=C>; rel=\"next\""
    );
    assert_eq!(r.json::<Value>().unwrap()["tags"], json!(["B", "C"]));
    let r = c.get(reg.url("/v2/t/tags/list?n=2&last=C")).send().unwrap();
    assert_eq!(r.json::<Value>().unwrap()["tags"], json!(["a", "b"]));
    let r = c
        .get(reg.url("/v2/t/tags/list?n=10&last=b"))
        .send()
        .unwrap();
    assert!(r.headers().get("link").is_none());
    assert_eq!(r.json::<Value>().unwrap()["tags"], json!(["d", "e"]));
    let r = c.get(reg.url("/v2/t/tags/list?n=0")).send().unwrap();
    assert!(r.headers().get("link").is_none());
    assert_eq!(r.json::<Value>().unwrap()["tags"], json!([]));

    let r = c.get(reg.url("/v2/t/tags/list?n=-1")).send().unwrap();
    assert_eq!(r.status(), 400);
    let r = c.get(reg.url("/v2/unknown/tags/list")).send().unwrap();
    assert_error(r, 404, "NAME_UNKNOWN");
}

#[test]
fn catalog_is_sorted_and_paginated() {
    let reg = TestRegistry::start();
    let c = client();
    for repo in ["zeta", "alpha/one", "alpha/two", "mid/deep/er"] {
        push_image(&reg, repo, "v", repo.as_bytes());
    }
    // A repository with blobs but no manifest is not listed.
    push_blob(&reg, "blobs-only", b"x");
    let all: Value = c
        .get(reg.url("/v2/_catalog"))
        .send()
        .unwrap()
        .json()
        .unwrap();
    assert_eq!(
        all["repositories"],
        json!(["alpha/one", "alpha/two", "mid/deep/er", "zeta"])
    );
    let r = c.get(reg.url("/v2/_catalog?n=3")).send().unwrap();
    assert_eq!(
        r.headers()["link"],
        "</v2/_catalog?n=3&last=mid%2Fdeep%2Fer>; rel=\"next\""
    );
    let r = c
        .get(reg.url("/v2/_catalog?n=3&last=mid%2Fdeep%2Fer"))
        .send()
        .unwrap();
    assert_eq!(r.json::<Value>().unwrap()["repositories"], json!(["zeta"]));
}

#[test]
fn referrers_list_and_filter() {
    // The referrers index keys name two digests (~190 bytes); s3s-fs names a file after the
    // base64 of each key, which then exceeds 255 bytes (ENAMETOOLONG: its limit, not S3's, whose
    // keys may be 1024 bytes): on S3 runs this test uses local disk.
    let dir = tempfile::tempdir().unwrap();
    let reg = if common::s3::selected() {
        eprintln!("referrers_list_and_filter: on local disk (s3s-fs cannot hold these keys)");
        TestRegistry::builder().filesystem(dir.path()).start()
    } else {
        TestRegistry::start()
    };
    let c = client();
    let subject = push_image(&reg, "r", "v1", b"subject layer");
    let subject_size = c
        .get(reg.url("/v2/r/manifests/v1"))
        .send()
        .unwrap()
        .text()
        .unwrap()
        .len();
    let empty = push_blob(&reg, "r", b"{}");
    let mut pushed = Vec::new();
    for (kind, note) in [
        ("application/vnd.example.sig", "a"),
        ("application/vnd.example.sbom", "b"),
    ] {
        let m = json!({
            "schemaVersion": 2,
            "mediaType": OCI_MANIFEST,
            "artifactType": kind,
            "config": {"mediaType": "application/vnd.oci.empty.v1+json", "digest": empty, "size": 2},
            "layers": [{"mediaType": "application/vnd.oci.empty.v1+json", "digest": empty, "size": 2}],
            "subject": {"mediaType": OCI_MANIFEST, "digest": subject, "size": subject_size},
            "annotations": {"note": note}
        })
        .to_string();
        let d = sha256(m.as_bytes());
        let r = put_manifest(&reg, "r", &d, OCI_MANIFEST, &m);
        assert_eq!(r.status(), 201);
        assert_eq!(r.headers()["oci-subject"], subject.as_str());
        pushed.push((d, kind, m.len()));
    }
    let r = c
        .get(reg.url(&format!("/v2/r/referrers/{subject}")))
        .send()
        .unwrap();
    assert_eq!(r.status(), 200);
    assert_eq!(r.headers()["content-type"], OCI_INDEX);
    assert!(r.headers().get("oci-filters-applied").is_none());
    let list: Value = r.json().unwrap();
    assert_eq!(list["mediaType"], OCI_INDEX);
    let manifests = list["manifests"].as_array().unwrap();
    assert_eq!(manifests.len(), 2);
    for (d, kind, size) in &pushed {
        let entry = manifests
            .iter()
            .find(|m| m["digest"] == d.as_str())
            .expect("listed");
        assert_eq!(entry["artifactType"], *kind);
        assert_eq!(entry["size"], *size);
        assert_eq!(entry["mediaType"], OCI_MANIFEST);
        assert!(entry["annotations"]["note"].is_string());
    }

    let r = c
        .get(reg.url(&format!(
            "/v2/r/referrers/{subject}?artifactType=application/vnd.example.sbom"
        )))
        .send()
        .unwrap();
    assert_eq!(r.headers()["oci-filters-applied"], "artifactType");
    let list: Value = r.json().unwrap();
    assert_eq!(list["manifests"].as_array().unwrap().len(), 1);
    assert_eq!(list["manifests"][0]["digest"], pushed[1].0.as_str());

    // Nothing refers to it: an empty index, not a 404.
    let r = c
        .get(reg.url(&format!("/v2/r/referrers/{}", sha256(b"lonely"))))
        .send()
        .unwrap();
    assert_eq!(r.status(), 200);
    assert_eq!(r.json::<Value>().unwrap()["manifests"], json!([]));
    let r = c
        .get(reg.url("/v2/r/referrers/sha256:nope"))
        .send()
        .unwrap();
    assert_error(r, 400, "DIGEST_INVALID");

    // Deleting a referrer takes it off the list.
    c.delete(reg.url(&format!("/v2/r/manifests/{}", pushed[0].0)))
        .send()
        .unwrap();
    let list: Value = c
        .get(reg.url(&format!("/v2/r/referrers/{subject}")))
        .send()
        .unwrap()
        .json()
        .unwrap();
    assert_eq!(list["manifests"].as_array().unwrap().len(), 1);
}
