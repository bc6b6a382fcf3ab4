//! `berth garbage-collect` on real storage: while a registry serves pushes, on a tagged
//! multi-arch index with `--delete-untagged`, against CNCF distribution 2.8.2's own collector
//! on a directory it wrote (Debian's `docker-registry`; skopeo pushes), and on S3 (s3s-fs).
//!
//! A missing tool fails the test (installed by `.ci/run`).

mod common;

use std::collections::{BTreeMap, BTreeSet};
use std::path::Path;
use std::process::Command;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use common::tools::{
    fixture_layout, layout_blob, require, wait_ready, write_config, Distribution, Tools,
};
use common::{client, push_blob_as, run, sha256, BerthProcess, TestRegistry};

const OCI_MANIFEST: &str = "application/vnd.oci.image.manifest.v1+json";
const ACCEPT: &str = "application/vnd.oci.image.manifest.v1+json, \
    application/vnd.oci.image.index.v1+json, \
    application/vnd.docker.distribution.manifest.v2+json, \
    application/vnd.docker.distribution.manifest.list.v2+json";

// ---------------------------------------------------------------------------------------------
// Helpers

/// An image as pushed: its manifest and every blob, to compare pulls with.
#[derive(Clone, Debug)]
struct Image {
    manifest: Vec<u8>,
    digest: String,
    blobs: Vec<(String, Vec<u8>)>,
}

fn make_image(name: &str, shared: &[u8]) -> Image {
    let config = format!(r#"{{"architecture":"amd64","os":"linux","name":"{name}"}}"#).into_bytes();
    let own = format!("layer of {name} ").repeat(200).into_bytes();
    let blobs = vec![
        (sha256(&config), config.clone()),
        (sha256(shared), shared.to_vec()),
        (sha256(&own), own.clone()),
    ];
    let manifest = common::image_manifest(
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
fn try_push(base: &str, repo: &str, reference: &str, image: &Image) -> bool {
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
fn push(base: &str, repo: &str, reference: &str, image: &Image) -> u32 {
    for attempt in 0..3 {
        if try_push(base, repo, reference, image) {
            return attempt;
        }
    }
    panic!("pushing {repo}:{reference} failed three times");
}

fn get(url: &str) -> (u16, Vec<u8>) {
    let r = client().get(url).header("Accept", ACCEPT).send().unwrap();
    (r.status().as_u16(), r.bytes().unwrap().to_vec())
}

/// Pulls `repo:reference` and every blob, asserting they are byte-identical to `image`.
fn assert_pulls(base: &str, repo: &str, reference: &str, image: &Image) {
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

fn delete(base: &str, repo: &str, reference: &str) {
    let r = client()
        .delete(format!("{base}/v2/{repo}/manifests/{reference}"))
        .send()
        .unwrap();
    assert_eq!(r.status(), 202, "DELETE {repo}:{reference}");
}

/// Digests of every blob whose data is on disk under `root` (distribution's layout).
fn blobs_on_disk(root: &Path) -> BTreeSet<String> {
    let dir = root.join("docker/registry/v2/blobs/sha256");
    let mut out = BTreeSet::new();
    for prefix in std::fs::read_dir(&dir).into_iter().flatten() {
        for blob in std::fs::read_dir(prefix.unwrap().path()).unwrap() {
            let blob = blob.unwrap().path();
            if blob.join("data").exists() {
                out.insert(format!(
                    "sha256:{}",
                    blob.file_name().unwrap().to_string_lossy()
                ));
            }
        }
    }
    out
}

/// `berth garbage-collect ARGS… CONFIG` (the real binary); answers its standard output.
fn berth_gc(config: &Path, args: &[&str]) -> String {
    run(Command::new(env!("CARGO_BIN_EXE_berth"))
        .arg("garbage-collect")
        .args(args)
        .arg(config))
}

/// The digests of the lines `<prefix>sha256:…` of a collector's output.
fn listed(output: &str, prefix: &str) -> BTreeSet<String> {
    output
        .lines()
        .filter_map(|l| l.split(prefix).nth(1))
        .map(|rest| rest.split_whitespace().next().unwrap().to_string())
        .collect()
}

fn storage(root: &Path) -> berth::storage::Storage {
    berth::storage::Storage::filesystem(root, false).unwrap()
}

// ---------------------------------------------------------------------------------------------
// 1. Collections running in a loop while images are pushed, untagged, deleted and re-pushed.

#[test]
fn collecting_while_the_registry_serves_pushes() {
    let dir = tempfile::tempdir().unwrap();
    let root = dir.path().join("storage");
    let reg = TestRegistry::builder().filesystem(&root).start();
    let base = reg.url.clone();
    let shared = b"a base layer shared by every image ".repeat(300);
    let images: Vec<Image> = (0..8)
        .map(|i| make_image(&format!("img{i}"), &shared))
        .collect();
    // What is tagged now: (repo, tag) → image.
    let mut tagged: BTreeMap<(String, String), Image> = BTreeMap::new();
    let mut retries = 0;
    for (i, image) in images.iter().enumerate().take(6) {
        let repo = format!("team/r{}", i % 3);
        retries += push(&base, &repo, "v1", image);
        tagged.insert((repo, "v1".into()), image.clone());
    }

    // Collections back to back in another thread, alternately with --delete-untagged.
    let stop = Arc::new(AtomicBool::new(false));
    let collector_root = root.clone();
    let stop_flag = stop.clone();
    let collections = std::thread::spawn(move || {
        let rt = tokio::runtime::Runtime::new().unwrap();
        let mut runs = 0u32;
        let mut removed = 0usize;
        while !stop_flag.load(Ordering::SeqCst) {
            let c = berth::gc::Collector {
                storage: storage(&collector_root),
                delete_untagged: runs % 2 == 1,
                grace: Duration::from_millis(300),
                dry_run: false,
            };
            let report = rt.block_on(c.run(&|_| {}, &|_| {})).expect("collection");
            removed += report.outcome.map_or(0, |o| o.blobs.len());
            runs += 1;
        }
        (runs, removed)
    });

    let started = Instant::now();
    let mut round = 0;
    while started.elapsed() < Duration::from_secs(8) {
        round += 1;
        let i = round % 6;
        let repo = format!("team/r{}", i % 3);
        match round % 4 {
            // Untag (the image stays as an untagged revision, until a --delete-untagged run).
            0 => {
                if tagged.remove(&(repo.clone(), "v1".into())).is_some() {
                    delete(&base, &repo, "v1");
                }
            }
            // Delete the manifest by digest.
            1 => {
                if let Some(img) = tagged.remove(&(repo.clone(), "v1".into())) {
                    delete(&base, &repo, &img.digest);
                }
            }
            // Re-push (blobs that may be old and unreferenced by now).
            _ => {
                let image = &images[i];
                retries += push(&base, &repo, "v1", image);
                tagged.insert((repo, "v1".into()), image.clone());
            }
        }
        // Something new now and then, on another tag.
        if round % 5 == 0 {
            let image = &images[6 + round % 2];
            retries += push(&base, "team/new", "latest", image);
            tagged.insert(("team/new".into(), "latest".into()), image.clone());
        }
        // Every tagged image pulls, whatever the collector is doing.
        for ((repo, tag), image) in &tagged {
            assert_pulls(&base, repo, tag, image);
        }
        std::thread::sleep(Duration::from_millis(40));
    }
    stop.store(true, Ordering::SeqCst);
    let (runs, removed) = collections.join().unwrap();
    eprintln!(
        "{round} rounds of changes, {runs} concurrent collections removed {removed} blobs, \
         {retries} pushes retried"
    );
    assert!(runs >= 3, "only {runs} collections ran");
    assert!(removed > 0, "the concurrent collections removed nothing");

    // A last collection with nothing going on: exactly what the tags reach stays on disk.
    let report = tokio::runtime::Runtime::new()
        .unwrap()
        .block_on(
            berth::gc::Collector {
                storage: storage(&root),
                delete_untagged: true,
                grace: Duration::ZERO,
                dry_run: false,
            }
            .run(&|_| {}, &|_| {}),
        )
        .unwrap();
    assert!(report.missing_manifests.is_empty());
    for ((repo, tag), image) in &tagged {
        assert_pulls(&base, repo, tag, image);
    }
    let mut want = BTreeSet::new();
    for image in tagged.values() {
        want.insert(image.digest.clone());
        want.extend(image.blobs.iter().map(|(d, _)| d.clone()));
    }
    assert_eq!(blobs_on_disk(&root), want, "blobs left on disk");
    assert!(
        !root.join("docker/registry/v2/_berth/gc").exists()
            || std::fs::read_dir(root.join("docker/registry/v2/_berth/gc"))
                .unwrap()
                .next()
                .is_none(),
        "set-aside blobs left behind"
    );
}

// ---------------------------------------------------------------------------------------------
// 2. --delete-untagged keeps a tagged multi-arch index whole.

#[test]
fn delete_untagged_keeps_the_platforms_of_a_tagged_index() {
    let dir = tempfile::tempdir().unwrap();
    let root = dir.path().join("storage");
    let config = write_config(dir.path(), "berth.yml", &root);
    let berth = BerthProcess::start(&config, &[]);
    wait_ready(&berth.host);
    let tools = Tools::new(dir.path());
    let layout = fixture_layout();
    run(tools.skopeo().args([
        "copy",
        "-q",
        "--all",
        "--dest-tls-verify=false",
        &format!("oci:{}:multiarch", layout.display()),
        &format!("docker://{}/multi:latest", berth.host),
    ]));
    let base = berth.url.clone();
    let unrelated = make_image("unrelated", b"a layer nothing else has");
    push(&base, "multi", &unrelated.digest, &unrelated);

    let out = berth_gc(&config, &["--delete-untagged", "--grace", "0s"]);
    assert!(out.contains("manifests: 1 removed"), "{out}");

    // The index, both platform manifests and all their blobs: everything of the fixture.
    let index = common::tools::layout_ref(&layout, "multiarch");
    let index_bytes = layout_blob(&layout, &index);
    assert_eq!(
        get(&format!("{base}/v2/multi/manifests/latest")).1,
        index_bytes
    );
    let parsed: serde_json::Value = serde_json::from_slice(&index_bytes).unwrap();
    let children: Vec<String> = parsed["manifests"]
        .as_array()
        .unwrap()
        .iter()
        .map(|m| m["digest"].as_str().unwrap().to_string())
        .collect();
    assert_eq!(children.len(), 2);
    for child in &children {
        let bytes = layout_blob(&layout, child);
        let (status, body) = get(&format!("{base}/v2/multi/manifests/{child}"));
        assert_eq!((status, &body), (200, &bytes), "platform manifest {child}");
        let m: serde_json::Value = serde_json::from_slice(&bytes).unwrap();
        let mut blobs = vec![m["config"]["digest"].as_str().unwrap().to_string()];
        for l in m["layers"].as_array().unwrap() {
            blobs.push(l["digest"].as_str().unwrap().to_string());
        }
        for d in blobs {
            let (status, body) = get(&format!("{base}/v2/multi/blobs/{d}"));
            assert_eq!(status, 200, "blob {d} of {child}");
            assert!(body == layout_blob(&layout, &d), "blob {d} differs");
        }
    }
    // The untagged, unrelated image is gone, bytes included.
    assert_eq!(
        get(&format!("{base}/v2/multi/manifests/{}", unrelated.digest)).0,
        404
    );
    let on_disk = blobs_on_disk(&root);
    assert!(!on_disk.contains(&unrelated.digest));
    for (d, _) in &unrelated.blobs {
        assert!(
            !on_disk.contains(d),
            "blob {d} of the untagged image remains"
        );
    }
    drop(berth);
}

// ---------------------------------------------------------------------------------------------
// 3. The same verdict as distribution's own collector, on a directory distribution wrote.

#[test]
fn plain_collection_removes_what_distribution_would() {
    require("docker-registry");
    let dir = tempfile::tempdir().unwrap();
    let root = dir.path().join("storage");
    let config = write_config(dir.path(), "distribution.yml", &root);
    let dist = Distribution::start(&config);
    let base = format!("http://{}", dist.host);
    let tools = Tools::new(dir.path());
    let layout = fixture_layout();
    for (all, reference, dest) in [
        (true, "multiarch", "multi:latest"),
        (false, "amd64", "single:v1"),
    ] {
        let mut cmd = tools.skopeo();
        cmd.args(["copy", "-q", "--dest-tls-verify=false"]);
        if all {
            cmd.arg("--all");
        }
        run(cmd.args([
            &format!("oci:{}:{reference}", layout.display()),
            &format!("docker://{}/{dest}", dist.host),
        ]));
    }
    let shared = b"shared between x and y ".repeat(50);
    let x = make_image("x", &shared);
    let y1 = make_image("y1", &shared);
    let y2 = make_image("y2", &shared);
    push(&base, "x", "1", &x);
    push(&base, "y", "1", &y1);
    push(&base, "y", "2", &y2);
    // Remove two manifests through the API (their tags go with them).
    delete(&base, "x", &x.digest);
    delete(&base, "y", &y2.digest);

    let theirs = run(Command::new("docker-registry")
        .args(["garbage-collect", "--dry-run"])
        .arg(&config));
    let theirs = listed(&theirs, "blob eligible for deletion: ");
    let ours = berth_gc(&config, &["--dry-run", "--grace", "0s"]);
    let ours = listed(&ours, "blob eligible for deletion: ");
    let mut expected: BTreeSet<String> = [&x.digest, &y2.digest].into_iter().cloned().collect();
    expected.insert(x.blobs[0].0.clone());
    expected.insert(x.blobs[2].0.clone());
    expected.insert(y2.blobs[0].0.clone());
    expected.insert(y2.blobs[2].0.clone());
    assert_eq!(theirs, expected, "distribution's verdict");
    assert_eq!(ours, theirs, "berth's verdict differs from distribution's");

    let out = berth_gc(&config, &["--grace", "0s"]);
    assert!(
        out.contains(&format!("blobs: {} removed", expected.len())),
        "{out}"
    );
    let on_disk = blobs_on_disk(&root);
    assert!(on_disk.is_disjoint(&expected), "removed blobs remain");
    // distribution has nothing more to collect, and still serves every tag.
    let again = run(Command::new("docker-registry")
        .args(["garbage-collect", "--dry-run"])
        .arg(&config));
    assert!(
        listed(&again, "blob eligible for deletion: ").is_empty(),
        "{again}"
    );
    assert_pulls(&base, "y", "1", &y1);
    for (repo, tag) in [("multi", "latest"), ("single", "v1")] {
        let (status, _) = get(&format!("{base}/v2/{repo}/manifests/{tag}"));
        assert_eq!(status, 200, "{repo}:{tag}");
        run(tools.skopeo().args([
            "copy",
            "-q",
            "--all",
            "--src-tls-verify=false",
            &format!("docker://{}/{repo}:{tag}", dist.host),
            &format!("oci:{}:{tag}", dir.path().join(repo).display()),
        ]));
    }
}

// ---------------------------------------------------------------------------------------------
// 4. The same on S3 (s3s-fs): listings through the prefix store, data set aside by copy.

#[test]
fn collection_on_s3() {
    let server = common::s3::S3Server::shared();
    let env = server.env(&server.bucket());
    let reg = TestRegistry::builder()
        .store(common::Store::S3(env.clone()))
        .start();
    let base = reg.url.clone();
    let shared = b"shared on s3".repeat(10);
    let kept = make_image("kept", &shared);
    let dropped = make_image("dropped", &shared);
    push(&base, "s3/app", "v1", &kept);
    push(&base, "s3/app", "v2", &dropped);
    delete(&base, "s3/app", &dropped.digest);

    let dir = tempfile::tempdir().unwrap();
    let config = dir.path().join("config.yml");
    std::fs::write(&config, "version: 0.1\n").unwrap();
    let gc = |args: &[&str]| {
        let mut cmd = Command::new(env!("CARGO_BIN_EXE_berth"));
        cmd.arg("garbage-collect").args(args).arg(&config);
        for (k, v) in &env {
            cmd.env(k, v);
        }
        run(&mut cmd)
    };
    let dry = gc(&["--dry-run", "--grace", "0s"]);
    let want: BTreeSet<String> = [
        dropped.digest.clone(),
        dropped.blobs[0].0.clone(),
        dropped.blobs[2].0.clone(),
    ]
    .into_iter()
    .collect();
    assert_eq!(listed(&dry, "blob eligible for deletion: "), want, "{dry}");
    let out = gc(&["--grace", "0s"]);
    assert!(out.contains("blobs: 3 removed"), "{out}");
    assert!(out.contains("layer links: 2 removed"), "{out}");
    assert_pulls(&base, "s3/app", "v1", &kept);
    for d in &want {
        assert_eq!(get(&format!("{base}/v2/s3/app/blobs/{d}")).0, 404);
    }
    let again = gc(&["--dry-run", "--grace", "0s"]);
    assert!(again.contains("blobs: 0 would be removed"), "{again}");
}
