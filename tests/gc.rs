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

use common::images::{assert_pulls, delete, get, make_image, push, try_push, Image, OCI_MANIFEST};
use common::tools::{
    fixture_layout, layout_blob, require, wait_ready, write_config, Distribution, Tools,
};
use common::{client, run, BerthProcess, TestRegistry};

// ---------------------------------------------------------------------------------------------
// Helpers

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

// ---------------------------------------------------------------------------------------------
// 5. One collection at a time (issue 11, item 1): a second one is refused while the first,
//    paused after setting data aside, holds the lock; images pushed meanwhile all pull.

/// A `berth garbage-collect` child stopped at its test-only pause points
/// (`BERTH_GC_PAUSE_AFTER`, see `berth::gc`): its standard error is watched line by line, a line
/// on its standard input resumes it.
struct PausedGc {
    child: std::process::Child,
    lines: std::sync::mpsc::Receiver<String>,
    seen: Vec<String>,
}

impl PausedGc {
    fn start(config: &Path, args: &[&str], env: &[(String, String)], pause: &str) -> PausedGc {
        use std::io::BufRead;
        use std::process::Stdio;
        let mut cmd = Command::new(env!("CARGO_BIN_EXE_berth"));
        cmd.arg("garbage-collect")
            .args(args)
            .arg(config)
            .env("BERTH_GC_PAUSE_AFTER", pause)
            .stdin(Stdio::piped())
            .stdout(Stdio::null())
            .stderr(Stdio::piped());
        for (k, v) in env {
            cmd.env(k, v);
        }
        let mut child = cmd.spawn().unwrap();
        let stderr = child.stderr.take().unwrap();
        let (tx, lines) = std::sync::mpsc::channel();
        std::thread::spawn(move || {
            for line in std::io::BufReader::new(stderr).lines() {
                let Ok(line) = line else { break };
                if tx.send(line).is_err() {
                    break;
                }
            }
        });
        PausedGc {
            child,
            lines,
            seen: Vec::new(),
        }
    }

    fn wait_for(&mut self, needle: &str) {
        let deadline = Instant::now() + Duration::from_secs(60);
        while Instant::now() < deadline {
            match self.lines.recv_timeout(Duration::from_millis(200)) {
                Ok(line) => {
                    let found = line.contains(needle);
                    self.seen.push(line);
                    if found {
                        return;
                    }
                }
                Err(std::sync::mpsc::RecvTimeoutError::Timeout) => {}
                Err(std::sync::mpsc::RecvTimeoutError::Disconnected) => break,
            }
        }
        panic!("the collection never printed {needle:?}: {:#?}", self.seen);
    }

    fn resume(&mut self) {
        use std::io::Write;
        let stdin = self.child.stdin.as_mut().unwrap();
        stdin.write_all(b"\n").unwrap();
        stdin.flush().unwrap();
    }

    /// Waits for it to end; its exit status and what it printed on standard error.
    fn finish(mut self) -> (std::process::ExitStatus, String) {
        let status = self.child.wait().unwrap();
        self.seen.extend(self.lines.iter());
        (status, self.seen.join("\n"))
    }
}

/// `berth garbage-collect ARGS… CONFIG` with `env`: exit status, standard output and error.
fn gc_output(config: &Path, args: &[&str], env: &[(String, String)]) -> (i32, String, String) {
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_berth"));
    cmd.arg("garbage-collect").args(args).arg(config);
    for (k, v) in env {
        cmd.env(k, v);
    }
    let out = cmd.output().unwrap();
    (
        out.status.code().unwrap_or(-1),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

/// Storage for the two lock tests: the registry, the collectors' configuration file and the
/// variables they need.
/// `while_held` runs while the first collection holds the lock, given its pid.
fn concurrent_collections(
    reg: &TestRegistry,
    config: &Path,
    env: &[(String, String)],
    while_held: &dyn Fn(u32),
) {
    let base = reg.url.clone();
    let shared = b"shared by the images of the lock test ".repeat(40);
    let kept = make_image("kept", &shared);
    let garbage = make_image("garbage", &shared);
    let fresh = make_image("fresh", &shared);
    push(&base, "app", "v1", &kept);
    push(&base, "app", "old", &garbage);
    delete(&base, "app", &garbage.digest);
    // Older than the grace period given below.
    std::thread::sleep(Duration::from_millis(2100));

    let mut first = PausedGc::start(config, &["--grace", "1s"], env, "set-aside");
    first.wait_for("paused after set-aside");
    let (code, out, err) = gc_output(config, &["--grace", "1s"], env);
    assert_eq!(
        code, 75,
        "the second collection was not refused:\n{out}\n{err}"
    );
    assert!(
        err.contains("another garbage collection is running")
            && err.contains(&format!("pid {}", first.child.id()))
            && err.contains("expires at"),
        "the refusal does not name the holder and its expiry: {err}"
    );
    assert!(!out.contains("removed"), "the refused run swept: {out}");
    while_held(first.child.id());
    // Pushed while the first one has the garbage image's blobs set aside.
    push(&base, "app", "fresh", &fresh);
    push(&base, "app", "again", &garbage);
    first.resume();
    let (status, err) = first.finish();
    assert!(status.success(), "the first collection failed: {err}");

    for (tag, image) in [("v1", &kept), ("fresh", &fresh), ("again", &garbage)] {
        assert_pulls(&base, "app", tag, image);
    }
    // The lock was released: the next collection runs.
    let (code, out, err) = gc_output(config, &["--grace", "0s"], env);
    assert_eq!(code, 0, "{out}\n{err}");
    for (tag, image) in [("v1", &kept), ("fresh", &fresh), ("again", &garbage)] {
        assert_pulls(&base, "app", tag, image);
    }
}

#[test]
fn a_second_collection_is_refused_while_one_runs() {
    let dir = tempfile::tempdir().unwrap();
    let root = dir.path().join("storage");
    let config = write_config(dir.path(), "berth.yml", &root);
    let reg = TestRegistry::builder().filesystem(&root).start();
    concurrent_collections(&reg, &config, &[], &|_| {});
}

#[test]
fn a_second_collection_is_refused_while_one_runs_on_s3() {
    let server = common::s3::S3Server::shared();
    let env = server.env(&server.bucket());
    let reg = TestRegistry::builder()
        .store(common::Store::S3(env.clone()))
        .start();
    let dir = tempfile::tempdir().unwrap();
    let config = dir.path().join("config.yml");
    std::fs::write(&config, "version: 0.1\n").unwrap();
    concurrent_collections(&reg, &config, &env, &|_| {});
}

/// With Redis locks (what a store ignoring conditional writes gets, forced here on s3s-fs) the
/// collector's lock is a key in Redis, exact whatever the store does with conditional writes,
/// and the lease object beside it: a collection run without that Redis (another
/// configuration) is refused too.
#[test]
fn a_second_collection_is_refused_while_one_runs_on_s3_with_redis_locks() {
    let server = common::s3::S3Server::shared();
    let bucket = server.bucket();
    let dir = tempfile::tempdir().unwrap();
    let redis = common::redis::Redis::start(common::free_port(), dir.path());
    let mut env = server.env(&bucket);
    env.push(("REGISTRY_STORAGE_S3_UPLOADLOCKING".into(), "redis".into()));
    env.push((
        "REGISTRY_REDIS_ADDR".into(),
        format!("127.0.0.1:{}", redis.port),
    ));
    let reg = TestRegistry::builder()
        .store(common::Store::S3(env.clone()))
        .start();
    let config = dir.path().join("config.yml");
    std::fs::write(&config, "version: 0.1\n").unwrap();
    let in_bucket = server
        .dir
        .join(&bucket)
        .join("docker/registry/v2/_berth/locks/gc");
    concurrent_collections(&reg, &config, &env, &|pid| {
        let record = redis
            .get(&format!("berth:{bucket}::gc"))
            .expect("no collector's lock in Redis");
        assert!(
            record.contains(&format!("\"pid\":{pid}")),
            "the lock in Redis is not the first collection's: {record}"
        );
        assert!(in_bucket.exists(), "no lease object beside the Redis key");
        let without_redis = server.env(&bucket);
        let (code, out, err) = gc_output(&config, &["--grace", "1s"], &without_redis);
        assert_eq!(
            code, 75,
            "a collection without Redis was not refused:\n{out}\n{err}"
        );
        assert!(err.contains(&format!("pid {pid}")), "{err}");
    });
    assert!(!in_bucket.exists(), "the lease object was left behind");
    assert_eq!(
        redis.get(&format!("berth:{bucket}::gc")),
        None,
        "the last collection left its lock in Redis"
    );
}

// ---------------------------------------------------------------------------------------------
// 6. A collection killed after it set data aside and removed links (issue 11, item 2) is
//    undone by the next run, links included.

#[test]
fn a_killed_collection_is_undone_by_the_next() {
    let dir = tempfile::tempdir().unwrap();
    let root = dir.path().join("storage");
    let config = write_config(dir.path(), "berth.yml", &root);
    let reg = TestRegistry::builder().filesystem(&root).start();
    let base = reg.url.clone();
    // x: pushed, then deleted by digest (all its blobs are garbage) and re-pushed during the
    // run; y: pushed by digest only (untagged), then made a platform of a tagged index during
    // the run.
    let x = make_image("x", b"a layer of x only");
    let y = make_image("y", b"a layer of y only");
    push(&base, "r1", "v1", &x);
    delete(&base, "r1", &x.digest);
    push(&base, "r2", &y.digest, &y);
    std::thread::sleep(Duration::from_millis(2100));

    let args = ["--delete-untagged", "--grace", "1s"];
    let mut gc = PausedGc::start(&config, &args, &[], "plan,set-aside");
    gc.wait_for("paused after plan");
    // Between the first mark and the set-aside: x tagged again (its blobs are still linked,
    // so the client sends only the manifest) and y referenced by a new index.
    assert!(try_push(&base, "r1", "v1", &x), "re-pushing x");
    let index = format!(
        r#"{{"schemaVersion":2,"mediaType":"application/vnd.oci.image.index.v1+json","manifests":[{{"mediaType":"{OCI_MANIFEST}","digest":"{}","size":{},"platform":{{"architecture":"amd64","os":"linux"}}}}]}}"#,
        y.digest,
        y.manifest.len()
    );
    let r = client()
        .put(format!("{base}/v2/r2/manifests/multi"))
        .header("Content-Type", "application/vnd.oci.image.index.v1+json")
        .body(index.clone())
        .send()
        .unwrap();
    assert_eq!(r.status(), 201, "pushing the index");
    gc.resume();
    gc.wait_for("paused after set-aside");
    // The run has set their data aside and removed their links: kill it there.
    assert_eq!(get(&format!("{base}/v2/r1/blobs/{}", x.blobs[2].0)).0, 404);
    assert_eq!(get(&format!("{base}/v2/r2/manifests/{}", y.digest)).0, 404);
    gc.child.kill().unwrap();
    let (status, _) = gc.finish();
    assert!(!status.success());
    let aside = root.join("docker/registry/v2/_berth/gc");
    assert!(aside.exists(), "the killed run left nothing to recover");

    let out = berth_gc(&config, &args);
    assert!(out.contains("recovered: "), "{out}");
    assert_pulls(&base, "r1", "v1", &x);
    let (status, body) = get(&format!("{base}/v2/r2/manifests/multi"));
    assert_eq!((status, body), (200, index.into_bytes()), "the index");
    let (status, body) = get(&format!("{base}/v2/r2/manifests/{}", y.digest));
    assert_eq!((status, &body), (200, &y.manifest), "the index's platform");
    for (d, bytes) in &y.blobs {
        let (status, body) = get(&format!("{base}/v2/r2/blobs/{d}"));
        assert_eq!(status, 200, "GET blob {d} of the platform manifest");
        assert!(&body == bytes, "blob {d} differs");
    }
    assert!(
        !aside.exists() || std::fs::read_dir(&aside).unwrap().next().is_none(),
        "set-aside data or journal left behind"
    );
}
