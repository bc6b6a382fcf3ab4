//! Several berth instances behind a load balancer on a replicated store, deployed as a user
//! would (tests/common/cluster.rs): a 3-node Garage cluster, Redis, three containers of
//! `make image`'s berth:latest (each on another Garage node, all on Redis) and nginx
//! round-robin in front, without sticky sessions. Clients (skopeo, podman, docker, plain HTTP)
//! reach nginx on 127.0.0.1; consecutive requests of one upload land on different instances,
//! which agree through Redis locks with fencing tokens (Garage ignores conditional writes).
//!
//! Each test has a deployment of its own (about 20 s to start): several break it on purpose.
//! Needs the Docker engine, the image (`make image`), skopeo and podman, and the stand-in and
//! Garage images the harness builds; a missing one fails the test.

mod common;

use std::collections::{BTreeMap, BTreeSet};
use std::io::Read;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Barrier};
use std::time::{Duration, Instant};

use common::cluster::{Deployment, REDIS_LOCKS_LINE};
use common::images::{assert_pulls, delete, make_image, push, Image};
use common::tools::{
    docker_load_fixture, docker_push, fixture_layout, json, layout_blob, layout_ref,
    pull_fixture_and_check, push_fixture, skopeo_copy_to_registry, unique, DockerImages, Tools,
};
use common::{
    assert_error, client, complete_upload, patch_chunk, run, seeded_bytes, sha256, start_upload_at,
};

const MIB: usize = 1024 * 1024;
/// How long a client retries an upload that another instance holds: the lock of an instance
/// that died expires after 15 s, and each refused attempt waits 3 s for it first.
const LOCK_RECOVERY: Duration = Duration::from_secs(40);

/// A timing line for the report (`cargo test -- --nocapture` shows it).
fn timing(what: &str, since: Instant) {
    eprintln!("timing: {what}: {:.1?}", since.elapsed());
}

/// A deployment, held by one test at a time: each is 8 containers, and several at once on 2
/// cores turn timeouts into failures.
struct Turn {
    deployment: Deployment,
    _turn: std::sync::MutexGuard<'static, ()>,
}

impl std::ops::Deref for Turn {
    type Target = Deployment;
    fn deref(&self) -> &Deployment {
        &self.deployment
    }
}

impl std::ops::DerefMut for Turn {
    fn deref_mut(&mut self) -> &mut Deployment {
        &mut self.deployment
    }
}

/// A deployment whose every instance said at start-up that it locks uploads in Redis.
fn deploy() -> Turn {
    static ONE_AT_A_TIME: std::sync::Mutex<()> = std::sync::Mutex::new(());
    let turn = ONE_AT_A_TIME.lock().unwrap_or_else(|e| e.into_inner());
    let deployment = Deployment::start();
    eprintln!("timing: deployment start-up: {:.1?}", deployment.startup);
    for instance in 1..=3 {
        let log = deployment.instance_log(instance);
        assert!(
            log.lines()
                .any(|l| l.contains("upload locks: ") && l.contains(REDIS_LOCKS_LINE)),
            "berth{instance} does not say it locks uploads in Redis:\n{log}"
        );
    }
    Turn {
        deployment,
        _turn: turn,
    }
}

/// `POST` of an upload through nginx; its `Location` must name nginx's address (berth believes
/// the proxy's forwarding headers).
fn start_upload(d: &Deployment, repo: &str) -> String {
    let location = start_upload_at(&d.url(""), repo);
    assert!(
        location.starts_with(&d.url(&format!("/v2/{repo}/blobs/uploads/"))),
        "Location {location}"
    );
    location
}

/// The upload's id: the last segment of its path.
fn upload_id(location: &str) -> &str {
    let path = location.split('?').next().unwrap();
    path.rsplit('/').next().unwrap()
}

/// The offset the upload's status reports (`GET` of its location: `Range: 0-LAST`).
fn upload_offset(location: &str) -> u64 {
    let r = client().get(location).send().unwrap();
    assert_eq!(r.status(), 204, "upload status of {location}");
    range_end(&r).map_or(0, |last| last + 1)
}

/// The last byte of a `Range: 0-LAST` answer, if there is one.
fn range_end(r: &reqwest::blocking::Response) -> Option<u64> {
    let range = r.headers().get("range")?.to_str().unwrap();
    let last = range
        .strip_prefix("0-")
        .unwrap_or_else(|| panic!("Range {range}"));
    Some(last.parse().unwrap())
}

/// A PATCH that must be accepted, the upload then `offset + bytes` long.
fn patch_accepted(location: &str, offset: usize, bytes: &[u8]) {
    let r = patch_chunk(location, offset as u64, bytes);
    assert_eq!(r.status(), 202, "PATCH at {offset}: {:?}", r.text());
    assert_eq!(range_end(&r), Some((offset + bytes.len()) as u64 - 1));
}

/// PATCHes `rest` at `offset`, retrying while another instance holds the upload (416), for up
/// to [`LOCK_RECOVERY`]; answers how many attempts were refused.
fn patch_retrying_busy(location: &str, offset: usize, rest: &[u8]) -> u32 {
    let deadline = Instant::now() + LOCK_RECOVERY;
    let mut refused = 0;
    loop {
        let r = patch_chunk(location, offset as u64, rest);
        match r.status().as_u16() {
            202 => {
                assert_eq!(range_end(&r), Some((offset + rest.len()) as u64 - 1));
                return refused;
            }
            416 if Instant::now() < deadline => refused += 1,
            status => panic!(
                "PATCH at {offset} answered {status} after {refused} refusals: {:?}",
                r.text()
            ),
        }
    }
}

/// `PUT ?digest=` must answer 201, then `GET` of the blob at `base` must answer its bytes
/// (200: no redirect, which the deployment turns off).
fn complete_and_verify(d: &Deployment, repo: &str, location: &str, blob: &[u8]) {
    let digest = sha256(blob);
    let r = complete_upload(location, &digest);
    assert_eq!(r.status(), 201, "PUT ?digest=: {:?}", r.text());
    assert_blob(&d.url(""), repo, blob);
}

fn assert_blob(base: &str, repo: &str, blob: &[u8]) {
    let digest = sha256(blob);
    let r = client()
        .get(format!("{base}/v2/{repo}/blobs/{digest}"))
        .send()
        .unwrap();
    assert_eq!(r.status(), 200, "GET of {digest} from {base}");
    let got = r.bytes().unwrap();
    assert!(
        got.as_ref() == blob,
        "{digest} from {base}: {} bytes, digest {}; {} bytes expected",
        got.len(),
        sha256(&got),
        blob.len()
    );
}

/// The instances whose access log has `METHOD path` answered `status`.
fn served_by(d: &Deployment, method: &str, path: &str, status: u16) -> Vec<usize> {
    let line = format!("\"{method} {path}\" {status} ");
    (1..=3)
        .filter(|&i| d.instance_log(i).lines().any(|l| l.contains(&line)))
        .collect()
}

#[test]
fn skopeo_podman_and_docker_push_and_pull_through_nginx_byte_exact() {
    let d = deploy();
    let dir = tempfile::tempdir().unwrap();
    let tools = Tools::new(dir.path());
    let host = &d.host;

    let began = Instant::now();
    push_fixture(&tools, host, "lb/skopeo");
    pull_fixture_and_check(&tools, host, "lb/skopeo", dir.path());
    timing("skopeo push and pull of the multi-arch fixture", began);

    // podman pulls an image pushed by skopeo, pushes it elsewhere, and pulls that back.
    let began = Instant::now();
    let fixture = fixture_layout();
    let amd64 = layout_ref(&fixture, "amd64");
    skopeo_copy_to_registry(
        &tools,
        false,
        &format!("oci:{}:amd64", fixture.display()),
        &format!("docker://{host}/lb/podman-src:v1"),
        &[],
    );
    let pm = dir.path().join("podman");
    let podman = || tools.podman(&pm);
    let (src, dst) = (
        format!("{host}/lb/podman-src:v1"),
        format!("{host}/lb/podman-dst:v1"),
    );
    // An image's ID is its config's digest.
    let config_digest = json(&layout_blob(&fixture, &amd64))["config"]["digest"]
        .as_str()
        .unwrap()
        .to_string();
    let pulled_id = |reference: &str| {
        let id = run(podman().args(["pull", "-q", "--tls-verify=false", reference]));
        format!("sha256:{}", id.trim())
    };
    assert_eq!(pulled_id(&src), config_digest, "podman pulled the fixture");
    let digestfile = pm.join("pushed-digest");
    run(podman()
        .args(["push", "-q", "--tls-verify=false", "--digestfile"])
        .arg(&digestfile)
        .args([&src, &dst]));
    let pushed = std::fs::read_to_string(&digestfile).unwrap();
    run(podman().args(["rmi", "-f", &src]));
    assert_eq!(pulled_id(&dst), config_digest, "podman's push came back");
    let digest = run(podman().args(["image", "inspect", "--format", "{{.Digest}}", &dst]));
    assert_eq!(digest.trim(), pushed.trim(), "the digest podman pushed");
    timing("podman pull, push and pull", began);

    // The Docker engine (127.0.0.0/8 registries are insecure by default: plain HTTP).
    let began = Instant::now();
    let local = format!("{}:v1", unique("berth-lb-local"));
    let remote = format!("{host}/lb/docker:v1");
    let _images = DockerImages {
        refs: vec![local.clone(), remote.clone()],
    };
    docker_load_fixture(&tools, dir.path(), &local);
    let image_id = || {
        let out = run(tools
            .docker()
            .args(["image", "inspect", "-f", "{{.Id}}", &remote]));
        out.trim().to_string()
    };
    run(tools.docker().args(["tag", &local, &remote]));
    let loaded = image_id();
    let docker_digest = docker_push(&tools, None, &remote);
    run(tools.docker().args(["rmi", &local, &remote]));
    run(tools.docker().args(["pull", "-q", &remote]));
    assert_eq!(image_id(), loaded, "docker's image came back");
    let r = client()
        .head(d.url("/v2/lb/docker/manifests/v1"))
        .header(
            "Accept",
            "application/vnd.docker.distribution.manifest.v2+json",
        )
        .send()
        .unwrap();
    assert_eq!(r.headers()["docker-content-digest"], docker_digest.as_str());
    timing("docker push and pull", began);
}

#[test]
fn a_chunked_upload_served_by_several_instances_completes_byte_exact() {
    let d = deploy();
    let repo = "lb/chunked";
    // Chunks under S3's 5 MiB part minimum (staged pieces) adding up to more than one part.
    let chunk = 3 * MIB + 17;
    let blob = seeded_bytes("chunked", 5 * chunk + 1000);
    let began = Instant::now();
    let location = start_upload(&d, repo);
    for (i, piece) in blob.chunks(chunk).enumerate() {
        patch_accepted(&location, i * chunk, piece);
    }
    complete_and_verify(&d, repo, &location, &blob);
    timing("6 PATCHes of 15 MiB through nginx, PUT, GET", began);

    let path = format!("/v2/{repo}/blobs/uploads/{}", upload_id(&location));
    let instances = served_by(&d, "PATCH", &path, 202);
    assert!(
        instances.len() >= 2,
        "the PATCHes of {path} were served by instances {instances:?} only"
    );
    eprintln!("PATCHes of the upload served by instances {instances:?}");
    // Every instance serves it from its own Garage node.
    for instance in 1..=3 {
        assert_blob(&d.instance_url(instance), repo, &blob);
    }
}

#[test]
fn racing_patches_at_one_offset_one_is_accepted_and_the_blob_is_its_bytes() {
    let d = deploy();
    let repo = "lb/race";
    let location = start_upload(&d, repo);
    let contenders: Vec<Vec<u8>> = (0..2)
        .map(|i| seeded_bytes(&format!("contender {i}"), 4 * MIB))
        .collect();
    let start = Arc::new(Barrier::new(contenders.len()));
    let began = Instant::now();
    let answers: Vec<(u16, Option<u64>)> = std::thread::scope(|s| {
        let racing: Vec<_> = contenders
            .iter()
            .map(|bytes| {
                let (start, location) = (start.clone(), &location);
                s.spawn(move || {
                    start.wait();
                    let r = patch_chunk(location, 0, bytes);
                    (r.status().as_u16(), range_end(&r))
                })
            })
            .collect();
        racing.into_iter().map(|t| t.join().unwrap()).collect()
    });
    timing("two racing PATCHes of 4 MiB", began);
    let mut statuses: Vec<u16> = answers.iter().map(|a| a.0).collect();
    statuses.sort();
    assert_eq!(statuses, [202, 416], "answers {answers:?}");
    let winner = answers.iter().position(|a| a.0 == 202).unwrap();
    let refused = &answers[1 - winner];
    assert!(refused.1.is_some(), "the 416 carries a Range: {answers:?}");
    let accepted = &contenders[winner];
    assert_eq!(upload_offset(&location), accepted.len() as u64);
    complete_and_verify(&d, repo, &location, accepted);
    let path = format!("/v2/{repo}/blobs/uploads/{}", upload_id(&location));
    eprintln!(
        "the race: accepted by {:?}, refused by {:?}",
        served_by(&d, "PATCH", &path, 202),
        served_by(&d, "PATCH", &path, 416)
    );
}

/// A request body handed out slowly (64 KiB every 50 ms), counting what it handed out.
struct Trickle {
    bytes: Vec<u8>,
    at: usize,
    handed_out: Arc<AtomicU64>,
}

impl Read for Trickle {
    fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
        std::thread::sleep(Duration::from_millis(50));
        let n = buf.len().min(64 * 1024).min(self.bytes.len() - self.at);
        buf[..n].copy_from_slice(&self.bytes[self.at..self.at + n]);
        self.at += n;
        self.handed_out.fetch_add(n as u64, Ordering::SeqCst);
        Ok(n)
    }
}

#[test]
fn an_instance_killed_mid_chunk_the_client_resumes_through_nginx() {
    let d = deploy();
    let repo = "lb/killed";
    let blob = seeded_bytes("killed mid-chunk", 14 * MIB + 5);
    let first = 2 * MIB;
    let location = start_upload(&d, repo);
    patch_accepted(&location, 0, &blob[..first]);

    // The second chunk straight to instance 2 (so that it is the one serving it), slowly, and
    // the instance killed once 2 MiB of it are on their way.
    let victim = 2;
    let path_and_query = &location[d.url("").len()..];
    let direct = format!("{}{path_and_query}", d.instance_url(victim));
    let handed_out = Arc::new(AtomicU64::new(0));
    let body = Trickle {
        bytes: blob[first..].to_vec(),
        at: 0,
        handed_out: handed_out.clone(),
    };
    let len = (blob.len() - first) as u64;
    let slow = std::thread::spawn(move || {
        client()
            .patch(direct)
            .header("Content-Type", "application/octet-stream")
            .header(
                "Content-Range",
                format!("{first}-{}", first as u64 + len - 1),
            )
            .body(reqwest::blocking::Body::sized(body, len))
            .send()
            .map(|r| r.status().as_u16())
    });
    let deadline = Instant::now() + Duration::from_secs(30);
    while handed_out.load(Ordering::SeqCst) < 2 * MIB as u64 {
        assert!(
            Instant::now() < deadline,
            "the slow PATCH did not get going"
        );
        std::thread::sleep(Duration::from_millis(20));
    }
    d.kill_instance(victim);
    let killed = Instant::now();
    let answer = slow.join().unwrap();
    assert!(answer.is_err(), "the killed instance answered {answer:?}");
    let sent = handed_out.load(Ordering::SeqCst) as usize;

    // The client resumes through nginx: status, the rest, the digest.
    let offset = upload_offset(&location) as usize;
    assert!(
        (first..=first + sent).contains(&offset),
        "offset {offset} after {first} accepted and {sent} sent to the killed instance"
    );
    let refused = patch_retrying_busy(&location, offset, &blob[offset..]);
    timing(
        &format!("resumed after the kill ({refused} PATCHes refused while locked)"),
        killed,
    );
    complete_and_verify(&d, repo, &location, &blob);
    timing("kill to verified blob", killed);
    eprintln!("offset after the kill: {offset} ({first} accepted, {sent} handed out)");
}

#[test]
fn redis_stopped_patches_answer_503_and_the_upload_completes_once_it_is_back() {
    let d = deploy();
    let repo = "lb/redis-down";
    let chunk = MIB;
    let blob = seeded_bytes("redis down", 3 * chunk);
    let location = start_upload(&d, repo);
    patch_accepted(&location, 0, &blob[..chunk]);

    d.stop_redis();
    let stopped = Instant::now();
    let r = patch_chunk(&location, chunk as u64, &blob[chunk..2 * chunk]);
    let retry_after = r
        .headers()
        .get("retry-after")
        .map(|v| v.to_str().unwrap().to_string());
    let status = r.status();
    assert_error(r, 503, "UNAVAILABLE");
    let retry_after: u64 = retry_after
        .unwrap_or_else(|| panic!("{status} without Retry-After"))
        .parse()
        .unwrap();
    assert!((1..=60).contains(&retry_after), "Retry-After {retry_after}");
    timing("Redis stopped to a 503", stopped);

    d.start_redis();
    let restarted = Instant::now();
    let deadline = Instant::now() + LOCK_RECOVERY;
    loop {
        let r = patch_chunk(&location, chunk as u64, &blob[chunk..2 * chunk]);
        match r.status().as_u16() {
            202 => break,
            503 | 416 if Instant::now() < deadline => std::thread::sleep(Duration::from_secs(1)),
            status => panic!("PATCH after Redis restarted: {status} {:?}", r.text()),
        }
    }
    timing("Redis restarted to an accepted PATCH", restarted);
    patch_accepted(&location, 2 * chunk, &blob[2 * chunk..]);
    complete_and_verify(&d, repo, &location, &blob);
}

/// How a Garage node is lost in the middle of a push.
#[derive(Clone, Copy, Debug)]
enum Outage {
    /// `docker kill`: the node crashes.
    Killed,
    /// `docker network disconnect`: the node runs on, cut off from its peers and berth.
    CutOff,
}

/// Each instance has one Garage node as its S3 endpoint: with that node gone, the instance can
/// only answer 503 (nginx has no way of telling, and hands the 503 to whichever client lands
/// there), while the instances on the other nodes go on. Surviving a node behind one address
/// takes an S3 endpoint that is itself highly available (a load balancer over the nodes).
#[test]
fn a_garage_node_killed_mid_push_its_instance_answers_503_the_others_go_on() {
    pushes_go_on_without_a_garage_node(Outage::Killed);
}

/// The same with the node cut off from the network instead (a partition: it still runs, and
/// comes back with what it missed to catch up on).
#[test]
fn a_garage_node_cut_off_mid_push_its_instance_answers_503_the_others_go_on() {
    pushes_go_on_without_a_garage_node(Outage::CutOff);
}

fn pushes_go_on_without_a_garage_node(outage: Outage) {
    let d = deploy();
    let dir = tempfile::tempdir().unwrap();
    let tools = Tools::new(dir.path());
    let direct = |instance: usize| d.instance_url(instance).replace("http://", "");
    push_fixture(&tools, &d.host, "lb/before");

    let began = Instant::now();
    let (first, second) = (direct(1), direct(2));
    std::thread::scope(|s| {
        s.spawn(|| push_fixture(&tools, &first, "lb/during"));
        // skopeo takes about this long to start talking to the registry.
        std::thread::sleep(Duration::from_millis(300));
        match outage {
            Outage::Killed => d.garage.kill(3),
            Outage::CutOff => d.garage.disconnect(3),
        }
    });
    timing(
        &format!("push to instance 1 with Garage node 3 {outage:?}"),
        began,
    );
    pull_fixture_and_check(&tools, &second, "lb/during", dir.path());
    pull_fixture_and_check(&tools, &first, "lb/before", dir.path());

    let began = Instant::now();
    let r = client()
        .get(format!("{}/v2/lb/before/manifests/v1", d.instance_url(3)))
        .header("Accept", "application/vnd.oci.image.index.v1+json")
        .send()
        .unwrap();
    assert!(r.headers().contains_key("retry-after"), "{:?}", r.headers());
    assert_error(r, 503, "UNAVAILABLE");
    timing("instance 3 without its node: 503", began);

    let began = Instant::now();
    match outage {
        Outage::Killed => d.garage.start_node(3),
        Outage::CutOff => d.garage.connect(3),
    }
    d.garage.wait_healthy();
    timing("node 3 back", began);
    // An outage longer than 3 storage checks (`health.storagedriver` of the image's
    // configuration: every 10 s, threshold 3) left instance 3 unhealthy (`GET /v2/` 503); its
    // next check, at most an interval after the node returned, makes it healthy again.
    let began = Instant::now();
    loop {
        let r = client().get(format!("{}/v2/", d.instance_url(3))).send();
        if r.is_ok_and(|r| r.status() == 200) {
            break;
        }
        assert!(
            began.elapsed() < Duration::from_secs(25),
            "instance 3 is still unhealthy 25 s after its node returned"
        );
        std::thread::sleep(Duration::from_millis(200));
    }
    timing("instance 3 healthy again", began);
    // Every image verifies, through nginx and through instance 3 on node 3.
    for host in [d.host.clone(), direct(3)] {
        for repo in ["lb/before", "lb/during"] {
            pull_fixture_and_check(&tools, &host, repo, dir.path());
        }
    }
}

/// Garbage collection beside live pushes on the cluster: `berth garbage-collect
/// --delete-untagged` runs back to back in instance 2's container, as an operator runs it
/// there, while images are pushed, untagged and re-pushed through nginx (so through every
/// instance). Every tagged image pulls byte-exact after each change, whatever the collector
/// is doing; a last collection with nothing going on leaves in the bucket exactly the blobs
/// the tags reach.
#[test]
fn garbage_collection_runs_beside_live_pushes_through_nginx() {
    let d = deploy();
    let base = d.url("");
    let shared = b"a base layer shared by every image of the cluster ".repeat(300);
    let images: Vec<Image> = (0..6)
        .map(|i| make_image(&format!("gc{i}"), &shared))
        .collect();
    // What is tagged now: (repo, tag) -> image.
    let mut tagged: BTreeMap<(String, String), Image> = BTreeMap::new();
    let mut retries = 0;
    for (i, image) in images.iter().enumerate().take(4) {
        let repo = format!("gc/r{}", i % 2);
        retries += push(&base, &repo, &format!("v{i}"), image);
        tagged.insert((repo, format!("v{i}")), image.clone());
    }

    let stop = AtomicBool::new(false);
    let began = Instant::now();
    let (runs, removed) = std::thread::scope(|s| {
        let collector = s.spawn(|| {
            let (mut runs, mut removed) = (0u32, 0usize);
            while runs < 2 || !stop.load(Ordering::SeqCst) {
                let out = d.berth_command(
                    2,
                    &["garbage-collect", "--delete-untagged", "--grace", "2s"],
                );
                let stdout = String::from_utf8_lossy(&out.stdout);
                assert!(
                    out.status.success(),
                    "garbage-collect in instance 2 failed ({}): {stdout}{}",
                    out.status,
                    String::from_utf8_lossy(&out.stderr)
                );
                // "blobs: 3 removed, 2809 bytes"
                removed += stdout
                    .lines()
                    .filter_map(|l| {
                        l.strip_prefix("blobs: ")?
                            .split(' ')
                            .next()?
                            .parse::<usize>()
                            .ok()
                    })
                    .sum::<usize>();
                runs += 1;
            }
            (runs, removed)
        });
        let mut round = 0usize;
        while began.elapsed() < Duration::from_secs(20) {
            round += 1;
            let i = round % images.len();
            let repo = format!("gc/r{}", i % 2);
            let tag = format!("v{i}");
            if round % 3 == 0 {
                // Untagged: the image becomes an untagged revision, for --delete-untagged.
                if tagged.remove(&(repo.clone(), tag.clone())).is_some() {
                    delete(&base, &repo, &tag);
                }
            } else {
                // (Re-)pushed: its blobs may be unreferenced by now, and being collected.
                retries += push(&base, &repo, &tag, &images[i]);
                tagged.insert((repo, tag), images[i].clone());
            }
            for ((repo, tag), image) in &tagged {
                assert_pulls(&base, repo, tag, image);
            }
        }
        stop.store(true, Ordering::SeqCst);
        collector.join().unwrap()
    });
    timing(&format!("{runs} collections beside pushes"), began);
    eprintln!("{removed} blobs collected, {retries} pushes retried");
    assert!(runs >= 2, "only {runs} collections ran");
    assert!(
        removed > 0,
        "the collections beside the pushes removed nothing"
    );

    let out = d.berth_command(
        2,
        &["garbage-collect", "--delete-untagged", "--grace", "0s"],
    );
    assert!(out.status.success(), "{out:?}");
    for ((repo, tag), image) in &tagged {
        assert_pulls(&base, repo, tag, image);
    }
    let mut want = BTreeSet::new();
    for image in tagged.values() {
        want.insert(image.digest.clone());
        want.extend(image.blobs.iter().map(|(d, _)| d.clone()));
    }
    assert_eq!(blobs_in_bucket(&d), want, "blobs left in the bucket");
}

/// The digests of every blob whose `data` object is in the bucket (distribution's layout).
fn blobs_in_bucket(d: &Deployment) -> BTreeSet<String> {
    use futures_util::StreamExt as _;
    let store = d.garage.store(1);
    let prefix = object_store::path::Path::from("docker/registry/v2/blobs/sha256");
    common::garage::block_on(async {
        let mut listing = object_store::ObjectStore::list(&store, Some(&prefix));
        let mut out = BTreeSet::new();
        while let Some(meta) = listing.next().await {
            let location = meta.unwrap().location.to_string();
            let parts: Vec<&str> = location.split('/').collect();
            if parts.last() == Some(&"data") && parts.len() >= 3 {
                out.insert(format!("sha256:{}", parts[parts.len() - 2]));
            }
        }
        out
    })
}
