//! End-to-end tests with real registry clients (skopeo, podman, docker, oras-py) against the
//! real `berth` binary, plus storage interoperability with CNCF distribution (`docker-registry`).
//!
//! Every test starts its own registries on free ports with filesystem storage in a temporary
//! directory. The tools are installed by `.ci/run` (apt: skopeo podman docker-registry; pip:
//! oras); a missing tool fails the test with a message saying so.
//!
//! The client commands run through `common::tools::Tools` (time limit, private blob-info cache).

mod common;

use std::collections::BTreeMap;
use std::path::Path;

use serde_json::Value;

use common::tools::{
    assert_has_all_fixture_blobs, docker_load_fixture, docker_push, fixture_layout, json,
    layout_blob, layout_ref, require, skopeo_copy_to_registry, skopeo_pull_to_layout, unique,
    wait_ready, write_config, Distribution, DockerImages, Tools,
};
use common::{client, run, sha256, BerthProcess};

const OCI_MANIFEST: &str = "application/vnd.oci.image.manifest.v1+json";
const OCI_INDEX: &str = "application/vnd.oci.image.index.v1+json";
const DOCKER_MANIFEST: &str = "application/vnd.docker.distribution.manifest.v2+json";

// ---------------------------------------------------------------------------------------------
// Registries

/// The real berth binary with filesystem storage under `root`.
fn start_berth(dir: &Path, root: &Path) -> BerthProcess {
    let config = write_config(dir, "berth.yml", root);
    let berth = BerthProcess::start(&config, &[]);
    wait_ready(&berth.host);
    berth
}

/// The real berth binary on the suite's storage: a fresh bucket of the shared S3 server when the
/// suite runs with `BERTH_TEST_STORAGE=s3`, else local disk under `dir`.
fn start_berth_on_suite_storage(dir: &Path) -> BerthProcess {
    if !common::s3::selected() {
        return start_berth(dir, &dir.join("storage"));
    }
    let server = common::s3::S3Server::shared();
    let env = server.env(&server.bucket());
    let env: Vec<(&str, &str)> = env.iter().map(|(k, v)| (k.as_str(), v.as_str())).collect();
    let config = write_config(dir, "berth.yml", &dir.join("unused"));
    let berth = BerthProcess::start(&config, &env);
    wait_ready(&berth.host);
    berth
}

// ---------------------------------------------------------------------------------------------
// HTTP helpers

const ACCEPT_ALL_MANIFESTS: &str = "application/vnd.oci.image.manifest.v1+json, \
    application/vnd.oci.image.index.v1+json, \
    application/vnd.docker.distribution.manifest.v2+json, \
    application/vnd.docker.distribution.manifest.list.v2+json";

/// `HEAD /v2/<repo>/manifests/<reference>`: the `Docker-Content-Digest`.
fn head_manifest_digest(host: &str, repo: &str, reference: &str) -> String {
    let r = client()
        .head(format!("http://{host}/v2/{repo}/manifests/{reference}"))
        .header("Accept", ACCEPT_ALL_MANIFESTS)
        .send()
        .unwrap();
    assert_eq!(r.status(), 200, "HEAD {repo}/manifests/{reference}");
    r.headers()
        .get("docker-content-digest")
        .unwrap_or_else(|| panic!("HEAD {repo}/manifests/{reference}: no Docker-Content-Digest"))
        .to_str()
        .unwrap()
        .to_string()
}

/// `GET /v2/<repo>/manifests/<reference>`: (Content-Type, Docker-Content-Digest, body).
fn get_manifest(host: &str, repo: &str, reference: &str) -> (String, String, Vec<u8>) {
    let r = client()
        .get(format!("http://{host}/v2/{repo}/manifests/{reference}"))
        .header("Accept", ACCEPT_ALL_MANIFESTS)
        .send()
        .unwrap();
    assert_eq!(r.status(), 200, "GET {repo}/manifests/{reference}");
    let header = |name: &str| {
        r.headers()
            .get(name)
            .unwrap_or_else(|| panic!("GET {repo}/manifests/{reference}: no {name}"))
            .to_str()
            .unwrap()
            .to_string()
    };
    let content_type = header("content-type");
    let digest = header("docker-content-digest");
    let body = r.bytes().unwrap().to_vec();
    (content_type, digest, body)
}

fn get_blob(host: &str, repo: &str, digest: &str) -> Vec<u8> {
    let r = client()
        .get(format!("http://{host}/v2/{repo}/blobs/{digest}"))
        .send()
        .unwrap();
    assert_eq!(r.status(), 200, "GET {repo}/blobs/{digest}");
    r.bytes().unwrap().to_vec()
}

fn tags(host: &str, repo: &str) -> Vec<String> {
    let r = client()
        .get(format!("http://{host}/v2/{repo}/tags/list"))
        .send()
        .unwrap();
    assert_eq!(r.status(), 200, "GET {repo}/tags/list");
    let v = json(&r.bytes().unwrap());
    assert_eq!(v["name"], repo, "tags list names the repository: {v}");
    v["tags"]
        .as_array()
        .unwrap_or_else(|| panic!("no tags array: {v}"))
        .iter()
        .map(|t| t.as_str().unwrap().to_string())
        .collect()
}

// ---------------------------------------------------------------------------------------------
// skopeo helpers

fn skopeo_inspect_raw(tools: &Tools, reference: &str) -> Vec<u8> {
    let out = tools
        .skopeo()
        .args([
            "inspect",
            "--raw",
            "--tls-verify=false",
            &format!("docker://{reference}"),
        ])
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "skopeo inspect --raw {reference} failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    out.stdout
}

fn skopeo_inspect_digest(tools: &Tools, reference: &str) -> String {
    run(tools.skopeo().args([
        "inspect",
        "--tls-verify=false",
        "--format",
        "{{.Digest}}",
        &format!("docker://{reference}"),
    ]))
    .trim()
    .to_string()
}

/// Pushes the whole multi-arch fixture to `dest` (`HOST/REPO:TAG`) and checks what the
/// registry then serves: the index bytes and each platform manifest by digest.
fn push_multiarch_and_check(tools: &Tools, host: &str, repo: &str, tag: &str) {
    let fixture = fixture_layout();
    let index_digest = layout_ref(&fixture, "multiarch");
    skopeo_copy_to_registry(
        tools,
        true,
        &format!("oci:{}:multiarch", fixture.display()),
        &format!("docker://{host}/{repo}:{tag}"),
        &[],
    );
    let raw = skopeo_inspect_raw(tools, &format!("{host}/{repo}:{tag}"));
    assert_eq!(
        sha256(&raw),
        index_digest,
        "index digest through the registry"
    );
}

// ---------------------------------------------------------------------------------------------
// Tests

#[test]
fn skopeo_copies_a_multiarch_index_both_ways() {
    let dir = tempfile::tempdir().unwrap();
    let tools = Tools::new(dir.path());
    let berth = start_berth_on_suite_storage(dir.path());
    let h = &berth.host;
    let repo = "e2e/skopeo-multi";
    let fixture = fixture_layout();
    let index_digest = layout_ref(&fixture, "multiarch");

    push_multiarch_and_check(&tools, h, repo, "v1");

    // The index as berth serves it: bytes, media type and digest header.
    let (content_type, digest, body) = get_manifest(h, repo, "v1");
    assert_eq!(content_type, OCI_INDEX);
    assert_eq!(digest, index_digest);
    assert_eq!(body, layout_blob(&fixture, &index_digest));
    assert_eq!(head_manifest_digest(h, repo, "v1"), index_digest);

    // Each platform manifest by digest, through skopeo and plain HTTP.
    let index = json(&body);
    let children = index["manifests"].as_array().unwrap();
    assert_eq!(
        children.len(),
        2,
        "fixture index has two platforms: {index}"
    );
    for child in children {
        let d = child["digest"].as_str().unwrap();
        let want = layout_blob(&fixture, d);
        let raw = skopeo_inspect_raw(&tools, &format!("{h}/{repo}@{d}"));
        assert_eq!(raw, want, "platform manifest {d} via skopeo");
        let (ct, dcd, body) = get_manifest(h, repo, d);
        assert_eq!(ct, child["mediaType"].as_str().unwrap(), "{d} Content-Type");
        assert_eq!(dcd, d);
        assert_eq!(body, want);
        let m = json(&body);
        let config = m["config"]["digest"].as_str().unwrap();
        assert_eq!(get_blob(h, repo, config), layout_blob(&fixture, config));
    }
    assert_eq!(tags(h, repo), vec!["v1".to_string()]);

    // And back out into a fresh OCI layout, digests preserved.
    let out = dir.path().join("out");
    skopeo_pull_to_layout(&tools, &format!("{h}/{repo}:v1"), &out);
    assert_eq!(layout_ref(&out, "v1"), index_digest);
    assert_has_all_fixture_blobs(&out);
}

/// Python (oras-py) side of the referrers test. argv: host repo subject-digest workdir outdir.
/// Writes `result.json` into workdir.
const ORAS_SCRIPT: &str = r#"
import hashlib, json, os, sys
try:
    import oras.client, oras.defaults, oras.oci, oras.provider
except ImportError as e:
    sys.exit(f"python3 cannot import oras ({e}); install it with: python3 -m pip install oras")

# oras-py retries every failed request for ~2 minutes; fail fast instead.
oras.provider.Registry.do_request = oras.provider.Registry.do_request.__wrapped__

host, repo, subject_digest, work, outdir = sys.argv[1:6]
os.chdir(work)
client = oras.client.OrasClient(hostname=host, insecure=True)
base = f"http://{host}/v2/{repo}"

def check(r, *codes):
    if r.status_code not in codes:
        sys.exit(f"{r.request.method} {r.url} -> {r.status_code} {r.text}")
    return r

# The subject descriptor, from the bytes berth stores.
r = check(client.do_request(f"{base}/manifests/{subject_digest}", "GET",
                            headers={"Accept": oras.defaults.default_manifest_media_type}), 200)
subject = oras.oci.Subject(mediaType=r.headers["Content-Type"].split(";")[0].strip(),
                           digest=subject_digest, size=len(r.content))

# 1) High-level push with a subject; the artifact type is the config media type.
resp = client.push(target=f"{host}/{repo}:sig", files=["note.txt:text/plain"], subject=subject,
                   manifest_config="/dev/null:application/vnd.berth.e2e.sig.config.v1+json",
                   manifest_annotations={"x.berth.kind": "sig"})
check(resp, 201)
sig = resp.headers["Docker-Content-Digest"]

# 2) Low-level push with a top-level artifactType, PUT by digest (untagged).
container = client.get_container(f"{host}/{repo}")
with open("empty.json", "w") as f:
    f.write("{}")
cfg = {"mediaType": "application/vnd.oci.empty.v1+json",
       "digest": oras.defaults.blank_config_hash, "size": 2}
check(client.upload_blob("empty.json", container, cfg), 200, 201, 202)
layer = oras.oci.NewLayer("sbom.json", media_type="application/spdx+json")
layer["annotations"] = {"org.opencontainers.image.title": "sbom.json"}
check(client.upload_blob("sbom.json", container, layer), 200, 201, 202)
manifest = {"schemaVersion": 2, "mediaType": "application/vnd.oci.image.manifest.v1+json",
            "artifactType": "application/vnd.berth.e2e.sbom.v1", "config": cfg, "layers": [layer],
            "subject": {"mediaType": subject.mediaType, "digest": subject.digest,
                        "size": subject.size},
            "annotations": {"org.opencontainers.image.created": "2026-01-01T00:00:00Z"}}
body = json.dumps(manifest, separators=(",", ":")).encode()
sbom = "sha256:" + hashlib.sha256(body).hexdigest()
r = check(client.do_request(f"{base}/manifests/{sbom}", "PUT", data=body,
                            headers={"Content-Type": manifest["mediaType"]}), 201)
if r.headers.get("Docker-Content-Digest") != sbom:
    sys.exit(f"PUT by digest answered Docker-Content-Digest {r.headers.get('Docker-Content-Digest')}, want {sbom}")

# 3) Pull both back.
pulled_sbom = client.pull(target=f"{host}/{repo}@{sbom}", outdir=os.path.join(outdir, "sbom"))
pulled_sig = client.pull(target=f"{host}/{repo}:sig", outdir=os.path.join(outdir, "sig"))

with open(os.path.join(work, "result.json"), "w") as f:
    json.dump({"sig": sig, "sbom": sbom, "pulled_sbom": pulled_sbom, "pulled_sig": pulled_sig}, f)
"#;

#[test]
fn oras_pushes_an_artifact_with_a_subject_and_finds_it_through_referrers() {
    let dir = tempfile::tempdir().unwrap();
    let tools = Tools::new(dir.path());
    // The referrers index keys are too long for s3s-fs (see api_manifests'
    // referrers_list_and_filter): this test always runs on local disk.
    let berth = start_berth(dir.path(), &dir.path().join("storage"));
    let h = &berth.host;
    let repo = "e2e/oras-referrers";
    let fixture = fixture_layout();
    let amd64 = layout_ref(&fixture, "amd64");

    skopeo_copy_to_registry(
        &tools,
        false,
        &format!("oci:{}:amd64", fixture.display()),
        &format!("docker://{h}/{repo}:amd64"),
        &[],
    );
    assert_eq!(head_manifest_digest(h, repo, "amd64"), amd64);

    // Nothing refers to the image yet.
    let r = client()
        .get(format!("http://{h}/v2/{repo}/referrers/{amd64}"))
        .send()
        .unwrap();
    assert_eq!(r.status(), 200);
    assert_eq!(
        json(&r.bytes().unwrap())["manifests"],
        serde_json::json!([])
    );

    let work = dir.path().join("oras-work");
    let outdir = dir.path().join("oras-out");
    std::fs::create_dir_all(&work).unwrap();
    std::fs::create_dir_all(&outdir).unwrap();
    let note = b"signed by berth e2e\n".to_vec();
    let sbom = br#"{"spdxVersion":"SPDX-2.3","name":"berth-e2e","packages":[]}"#.to_vec();
    std::fs::write(work.join("note.txt"), &note).unwrap();
    std::fs::write(work.join("sbom.json"), &sbom).unwrap();
    let script = dir.path().join("oras_e2e.py");
    std::fs::write(&script, ORAS_SCRIPT).unwrap();
    run(tools
        .cmd("python3")
        .arg(&script)
        .args([h, repo, &amd64])
        .arg(&work)
        .arg(&outdir));
    let result = json(&std::fs::read(work.join("result.json")).unwrap());
    let sig_digest = result["sig"].as_str().unwrap().to_string();
    let sbom_digest = result["sbom"].as_str().unwrap().to_string();

    // What berth stores for the two artifacts.
    let (sig_type, dcd, sig_body) = get_manifest(h, repo, &sig_digest);
    assert_eq!(sig_type, OCI_MANIFEST);
    assert_eq!(dcd, sig_digest);
    assert_eq!(sha256(&sig_body), sig_digest);
    let sig_manifest = json(&sig_body);
    assert_eq!(sig_manifest["subject"]["digest"], amd64.as_str());
    let (_, _, sbom_body) = get_manifest(h, repo, &sbom_digest);
    assert_eq!(sha256(&sbom_body), sbom_digest);

    // The referrers list names both, with their artifact types and annotations.
    const SBOM_TYPE: &str = "application/vnd.berth.e2e.sbom.v1";
    const SIG_TYPE: &str = "application/vnd.berth.e2e.sig.config.v1+json";
    let referrers = |filter: Option<&str>| {
        let mut req = client().get(format!("http://{h}/v2/{repo}/referrers/{amd64}"));
        if let Some(f) = filter {
            req = req.query(&[("artifactType", f)]);
        }
        let r = req.send().unwrap();
        assert_eq!(r.status(), 200, "referrers (filter {filter:?})");
        let ct = r.headers()["content-type"].to_str().unwrap().to_string();
        assert!(ct.starts_with(OCI_INDEX), "referrers Content-Type {ct}");
        let applied = r
            .headers()
            .get("oci-filters-applied")
            .map(|v| v.to_str().unwrap().to_string());
        let v = json(&r.bytes().unwrap());
        assert_eq!(v["schemaVersion"], 2, "{v}");
        assert_eq!(v["mediaType"], OCI_INDEX, "{v}");
        let by_digest: BTreeMap<String, Value> = v["manifests"]
            .as_array()
            .unwrap_or_else(|| panic!("no manifests array: {v}"))
            .iter()
            .map(|d| (d["digest"].as_str().unwrap().to_string(), d.clone()))
            .collect();
        (applied, by_digest)
    };

    let (applied, all) = referrers(None);
    assert_eq!(applied, None, "no filter, no OCI-Filters-Applied");
    assert_eq!(all.len(), 2, "both artifacts refer to the image: {all:?}");
    let d = &all[&sbom_digest];
    assert_eq!(d["mediaType"], OCI_MANIFEST);
    assert_eq!(d["size"], sbom_body.len());
    assert_eq!(d["artifactType"], SBOM_TYPE);
    assert_eq!(
        d["annotations"]["org.opencontainers.image.created"],
        "2026-01-01T00:00:00Z"
    );
    let d = &all[&sig_digest];
    assert_eq!(d["mediaType"], OCI_MANIFEST);
    assert_eq!(d["size"], sig_body.len());
    assert_eq!(
        d["artifactType"], SIG_TYPE,
        "without artifactType, the config media type is reported"
    );
    assert_eq!(d["annotations"]["x.berth.kind"], "sig");

    let (applied, only) = referrers(Some(SBOM_TYPE));
    assert_eq!(applied.as_deref(), Some("artifactType"));
    assert_eq!(only.keys().collect::<Vec<_>>(), vec![&sbom_digest]);
    let (applied, only) = referrers(Some(SIG_TYPE));
    assert_eq!(applied.as_deref(), Some("artifactType"));
    assert_eq!(only.keys().collect::<Vec<_>>(), vec![&sig_digest]);
    let (applied, none) = referrers(Some("application/x.nothing"));
    assert_eq!(applied.as_deref(), Some("artifactType"));
    assert!(none.is_empty(), "{none:?}");

    // oras pulled the files back unchanged.
    assert_eq!(std::fs::read(outdir.join("sbom/sbom.json")).unwrap(), sbom);
    assert_eq!(std::fs::read(outdir.join("sig/note.txt")).unwrap(), note);

    // The artifacts are in the tag list only where tagged.
    let mut t = tags(h, repo);
    t.sort();
    assert_eq!(t, vec!["amd64".to_string(), "sig".to_string()]);
}

#[test]
fn podman_pushes_and_pulls() {
    let dir = tempfile::tempdir().unwrap();
    let tools = Tools::new(dir.path());
    let berth = start_berth_on_suite_storage(dir.path());
    let h = &berth.host;
    let fixture = fixture_layout();
    let amd64 = layout_ref(&fixture, "amd64");
    let fixture_manifest = json(&layout_blob(&fixture, &amd64));
    let config_digest = fixture_manifest["config"]["digest"]
        .as_str()
        .unwrap()
        .to_string();

    skopeo_copy_to_registry(
        &tools,
        false,
        &format!("oci:{}:amd64", fixture.display()),
        &format!("docker://{h}/e2e/podman-src:v1"),
        &[],
    );

    let pm = dir.path().join("podman");
    let podman = || tools.podman(&pm);
    let src = format!("{h}/e2e/podman-src:v1");
    let dst = format!("{h}/e2e/podman-dst:v1");

    // Pull from berth: the image ID is the config digest, the digest the fixture manifest's.
    let id = run(podman().args(["pull", "-q", "--tls-verify=false", &src]));
    assert_eq!(format!("sha256:{}", id.trim()), config_digest, "image ID");
    let pulled = run(podman().args(["image", "inspect", "--format", "{{.Digest}}", &src]));
    assert_eq!(pulled.trim(), amd64, "digest podman pulled");

    // Push to another repository on berth.
    let digestfile = pm.join("pushed-digest");
    run(podman()
        .args(["push", "-q", "--tls-verify=false", "--digestfile"])
        .arg(&digestfile)
        .args([&src, &dst]));
    let pushed = std::fs::read_to_string(&digestfile)
        .unwrap()
        .trim()
        .to_string();
    assert!(pushed.starts_with("sha256:"), "digest file: {pushed:?}");
    assert_eq!(head_manifest_digest(h, "e2e/podman-dst", "v1"), pushed);
    assert_eq!(skopeo_inspect_digest(&tools, &dst), pushed);

    // The pushed image: same config, and blobs berth serves intact.
    let (ct, dcd, body) = get_manifest(h, "e2e/podman-dst", "v1");
    assert_eq!(dcd, pushed);
    assert_eq!(sha256(&body), pushed);
    let m = json(&body);
    assert_eq!(ct, m["mediaType"].as_str().unwrap_or(OCI_MANIFEST));
    assert_eq!(m["config"]["digest"], config_digest.as_str());
    assert_eq!(
        get_blob(h, "e2e/podman-dst", &config_digest),
        layout_blob(&fixture, &config_digest)
    );
    let layers = m["layers"].as_array().unwrap();
    assert_eq!(layers.len(), 1, "{m}");
    let layer = layers[0]["digest"].as_str().unwrap();
    let bytes = get_blob(h, "e2e/podman-dst", layer);
    assert_eq!(sha256(&bytes), layer);
    assert_eq!(layers[0]["size"], bytes.len());

    // Remove it locally and pull the pushed copy back.
    run(podman().args(["rmi", "-f", &src]));
    let id = run(podman().args(["pull", "-q", "--tls-verify=false", &dst]));
    assert_eq!(format!("sha256:{}", id.trim()), config_digest);
    let digest = run(podman().args(["image", "inspect", "--format", "{{.Digest}}", &dst]));
    assert_eq!(digest.trim(), pushed);
}

#[test]
fn docker_pushes_pulls_and_runs() {
    let dir = tempfile::tempdir().unwrap();
    let tools = Tools::new(dir.path());
    require("docker");
    let berth = start_berth_on_suite_storage(dir.path());
    let h = &berth.host;
    let fixture = fixture_layout();
    let repo = "e2e/docker-hello";
    let tag = unique("t");
    let local = format!("berth-e2e-hello:{tag}");
    let remote = format!("{h}/{repo}:{tag}");
    let _cleanup = DockerImages {
        refs: vec![local.clone(), remote.clone()],
    };

    docker_load_fixture(&tools, dir.path(), &local);
    run(tools.docker().args(["tag", &local, &remote]));
    let pushed = docker_push(&tools, None, &remote);
    assert_eq!(head_manifest_digest(h, repo, &tag), pushed);
    let (ct, dcd, body) = get_manifest(h, repo, &tag);
    assert_eq!(ct, DOCKER_MANIFEST, "docker pushes schema 2");
    assert_eq!(dcd, pushed);
    assert_eq!(sha256(&body), pushed);
    // Docker keeps the image config bytes, so the config blob is the fixture's.
    let config = json(&body)["config"]["digest"]
        .as_str()
        .unwrap()
        .to_string();
    assert_eq!(get_blob(h, repo, &config), layout_blob(&fixture, &config));

    // Forget the image locally, pull it back from berth.
    run(tools.docker().args(["rmi", &local, &remote]));
    run(tools.docker().args(["pull", "-q", &remote]));
    let digests = run(tools.docker().args([
        "image",
        "inspect",
        "--format",
        "{{range .RepoDigests}}{{println .}}{{end}}",
        &remote,
    ]));
    let want = format!("{h}/{repo}@{pushed}");
    assert!(
        digests.lines().any(|l| l.trim() == want),
        "RepoDigests {digests:?} lack {want}"
    );
    run(tools.docker().args(["pull", "-q", &want]));

    let out = run(tools.docker().args(["run", "--rm", &remote]));
    assert_eq!(out.trim(), "hello from berth");
}

#[test]
fn distribution_writes_berth_reads() {
    let dir = tempfile::tempdir().unwrap();
    let tools = Tools::new(dir.path());
    let root = dir.path().join("storage");
    let repo = "e2e/from-distribution";
    let index_digest = layout_ref(&fixture_layout(), "multiarch");

    {
        let dist = Distribution::start(&write_config(dir.path(), "distribution.yml", &root));
        push_multiarch_and_check(&tools, &dist.host, repo, "v1");
    } // docker-registry stops here

    let berth = start_berth(dir.path(), &root);
    let h = &berth.host;
    assert!(
        tags(h, repo).contains(&"v1".to_string()),
        "berth lists the tag distribution wrote"
    );
    assert_eq!(head_manifest_digest(h, repo, "v1"), index_digest);
    let (ct, _, _) = get_manifest(h, repo, "v1");
    assert_eq!(ct, OCI_INDEX);

    let out = dir.path().join("out");
    skopeo_pull_to_layout(&tools, &format!("{h}/{repo}:v1"), &out);
    assert_eq!(layout_ref(&out, "v1"), index_digest);
    assert_has_all_fixture_blobs(&out);
}

#[test]
fn berth_writes_distribution_reads() {
    let dir = tempfile::tempdir().unwrap();
    let tools = Tools::new(dir.path());
    let root = dir.path().join("storage");
    let fixture = fixture_layout();
    let multi_repo = "e2e/from-berth";
    let v2s2_repo = "e2e/from-berth-v2s2";
    let index_digest = layout_ref(&fixture, "multiarch");

    let v2s2_digest = {
        let berth = start_berth(dir.path(), &root);
        let h = &berth.host;
        push_multiarch_and_check(&tools, h, multi_repo, "v1");
        // A Docker schema 2 image.
        skopeo_copy_to_registry(
            &tools,
            false,
            &format!("oci:{}:amd64", fixture.display()),
            &format!("docker://{h}/{v2s2_repo}:v1"),
            &["--format", "v2s2"],
        );
        let (ct, digest, body) = get_manifest(h, v2s2_repo, "v1");
        assert_eq!(ct, DOCKER_MANIFEST);
        assert_eq!(sha256(&body), digest);
        digest
    }; // berth stops here

    let dist = Distribution::start(&write_config(dir.path(), "distribution.yml", &root));
    let d = &dist.host;
    assert!(tags(d, multi_repo).contains(&"v1".to_string()));
    assert_eq!(head_manifest_digest(d, multi_repo, "v1"), index_digest);

    let out = dir.path().join("out");
    skopeo_pull_to_layout(&tools, &format!("{d}/{multi_repo}:v1"), &out);
    assert_eq!(layout_ref(&out, "v1"), index_digest);
    assert_has_all_fixture_blobs(&out);

    // The schema 2 image, through distribution.
    assert_eq!(head_manifest_digest(d, v2s2_repo, "v1"), v2s2_digest);
    let raw = skopeo_inspect_raw(&tools, &format!("{d}/{v2s2_repo}:v1"));
    assert_eq!(sha256(&raw), v2s2_digest);
    let m = json(&raw);
    assert_eq!(m["mediaType"], DOCKER_MANIFEST);
    let out2 = dir.path().join("out-v2s2");
    skopeo_pull_to_layout(&tools, &format!("{d}/{v2s2_repo}:v1"), &out2);
    assert_eq!(layout_ref(&out2, "v1"), v2s2_digest);
    let config = m["config"]["digest"].as_str().unwrap();
    let layer = m["layers"][0]["digest"].as_str().unwrap();
    for blob in [config, layer] {
        assert_eq!(
            layout_blob(&out2, blob),
            layout_blob(&fixture, blob),
            "schema 2 conversion keeps blob {blob}, and it survives berth -> distribution"
        );
    }
}
