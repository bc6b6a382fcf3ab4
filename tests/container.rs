//! The container image (`make image`: berth:latest) driven through the machine's Docker engine,
//! as registry:2's guides run it: the plain run on a host directory that outlives containers and
//! `--restart=always`; HTTPS with a self-signed certificate and htpasswd logins; a volume
//! written by CNCF distribution (Debian's `docker-registry`); `docker stop` during an upload and
//! its resumption after `docker start`; `--user` with writable and non-writable volumes; the
//! HEALTHCHECK. The README's own commands are run as written there (only the host port, the
//! container name and the host directory are swapped for the test's), so the test fails when the
//! README drifts. A missing engine, image or tool fails the test.

mod common;

use std::io::Read;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use common::docker::{docker, docker_ok, require_image, scratch_image, Container, IMAGE};
use common::tools::{
    fixture_layout, is_root, layout_ref, require, run_failing, unique, Distribution, DockerImages,
    Tools,
};
use common::{client, free_port, run, sha256};

/// The README's "Run it in a container" section.
fn readme_section() -> String {
    let readme = std::fs::read_to_string(Path::new(env!("CARGO_MANIFEST_DIR")).join("README.md"))
        .expect("README.md");
    let start = readme
        .find("## Run it in a container")
        .expect("README.md has a section \"Run it in a container\"");
    let rest = &readme[start..];
    let end = rest[3..].find("\n## ").map_or(rest.len(), |i| i + 3);
    rest[..end].to_string()
}

/// The command of the README's container section that starts with `start`, its continuation
/// lines (`\` at the end) joined.
fn readme_command(start: &str) -> String {
    let section = readme_section();
    let mut lines = section.lines().skip_while(|l| !l.starts_with(start));
    let mut command = lines
        .next()
        .unwrap_or_else(|| panic!("README's container section has no line starting {start:?}"))
        .to_string();
    while command.ends_with('\\') {
        command.pop();
        command.push_str(lines.next().expect("a continuation line").trim_start());
    }
    command
}

/// `command` with `from` replaced by `to`; `from` must be there (else the README changed).
fn swap(command: &str, from: &str, to: &str) -> String {
    assert!(
        command.contains(from),
        "README's command no longer contains {from:?}: {command}"
    );
    command.replacen(from, to, 1)
}

/// Runs a shell command line (a README's) in `dir`; answers its stdout.
fn shell(dir: &Path, line: &str) -> String {
    require("sh");
    run(Command::new("timeout")
        .args(["-k", "5", "120", "sh", "-c", line])
        .current_dir(dir))
}

/// A client that accepts the self-signed certificates of these tests (the check of the served
/// certificate is done by curl with the certificate as its CA).
fn insecure_client() -> reqwest::blocking::Client {
    reqwest::blocking::Client::builder()
        .danger_accept_invalid_certs(true)
        .redirect(reqwest::redirect::Policy::none())
        .timeout(Duration::from_secs(60))
        .build()
        .unwrap()
}

/// A docker client configuration of the test's own: logins stay out of the machine's.
fn docker_config(dir: &Path) -> PathBuf {
    let config = dir.join("docker-config");
    std::fs::create_dir_all(&config).unwrap();
    config
}

/// `docker --config CONFIG ARGS…`.
fn docker_with(config: &Path, args: &[&str]) -> Command {
    let mut cmd = docker();
    cmd.arg("--config").arg(config).args(args);
    cmd
}

/// Builds a one-file image tagged `remote`; answers its image ID and the guard removing it.
fn small_image(dir: &Path, remote: &str) -> (String, DockerImages) {
    let content = format!("{} {}\n", unique("content"), remote);
    let images = scratch_image(dir, remote, &[("hello.txt", content.as_bytes())]);
    (image_id(remote), images)
}

fn image_id(reference: &str) -> String {
    docker_ok(&["image", "inspect", "-f", "{{.Id}}", reference])
}

/// `docker rmi` of `reference`, then `docker pull` of it: the pulled image must be `id`.
fn pull_again(config: &Path, reference: &str, id: &str) {
    docker_ok(&["rmi", reference]);
    run(&mut docker_with(config, &["pull", reference]));
    assert_eq!(image_id(reference), id, "{reference} pulled back unchanged");
}

const MANIFEST_TYPES: &str = "application/vnd.oci.image.manifest.v1+json, \
    application/vnd.docker.distribution.manifest.v2+json, application/vnd.oci.image.index.v1+json";

/// The bytes of `GET /v2/REPO/manifests/REF`, which must answer 200.
fn manifest(base: &str, repo: &str, reference: &str) -> Vec<u8> {
    let r = client()
        .get(format!("{base}/v2/{repo}/manifests/{reference}"))
        .header("Accept", MANIFEST_TYPES)
        .send()
        .unwrap();
    assert_eq!(r.status(), 200, "manifest {repo}:{reference} at {base}");
    r.bytes().unwrap().to_vec()
}

#[test]
fn the_guides_plain_run_keeps_images_across_restarts_and_containers() {
    require_image(IMAGE);
    assert!(
        is_root(),
        "this test kills a container's process from the host: run it as root"
    );
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    std::fs::create_dir(&data).unwrap();
    let config = docker_config(dir.path());

    let first = Container {
        name: unique("berth-plain"),
    };
    let port = free_port();
    let line = readme_command("docker run -d -p 5000:5000 --restart=always");
    let line = swap(&line, "-p 5000:5000", &format!("-p 127.0.0.1:{port}:5000"));
    let line = swap(&line, "--name registry", &format!("--name {}", first.name));
    let line = swap(&line, "/opt/registry/data", data.to_str().unwrap());
    shell(dir.path(), &line);
    let base = format!("http://127.0.0.1:{port}");
    first.wait_http(&client(), &format!("{base}/v2/"), &[200]);

    let remote = format!("127.0.0.1:{port}/guide/plain:1");
    let (id, mut images) = small_image(dir.path(), &remote);
    run(&mut docker_with(&config, &["push", &remote]));
    pull_again(&config, &remote, &id);
    let pushed = manifest(&base, "guide/plain", "1");

    // --restart=always: the process dies (not a docker stop), docker starts it again.
    let pid = first.inspect("{{.State.Pid}}");
    run(Command::new("kill").args(["-KILL", &pid]));
    let deadline = std::time::Instant::now() + Duration::from_secs(30);
    while first.inspect("{{.RestartCount}}") == "0" {
        assert!(
            std::time::Instant::now() < deadline,
            "not restarted: {}",
            first.inspect("{{json .State}}")
        );
        std::thread::sleep(Duration::from_millis(100));
    }
    first.wait_http(&client(), &format!("{base}/v2/"), &[200]);
    assert_eq!(manifest(&base, "guide/plain", "1"), pushed);

    // docker rm -f, then a new container on the same host directory.
    drop(first);
    let port2 = free_port();
    let second = Container::run(
        "berth-plain",
        &[
            "-p",
            &format!("127.0.0.1:{port2}:5000"),
            "-v",
            &format!("{}:/var/lib/registry", data.display()),
            IMAGE,
        ],
    );
    let base2 = format!("http://127.0.0.1:{port2}");
    second.wait_http(&client(), &format!("{base2}/v2/"), &[200]);
    assert_eq!(manifest(&base2, "guide/plain", "1"), pushed);
    let remote2 = format!("127.0.0.1:{port2}/guide/plain:1");
    images.refs.push(remote2.clone());
    docker_ok(&["rmi", &remote]);
    run(&mut docker_with(&config, &["pull", &remote2]));
    assert_eq!(image_id(&remote2), id, "the new container serves the image");

    // The image's own HEALTHCHECK (every 10 s) on the image's defaults.
    second.wait_healthy();
}

#[test]
fn the_guides_secure_run_needs_a_login_over_tls() {
    require_image(IMAGE);
    require("openssl");
    require("htpasswd");
    require("curl");
    let dir = tempfile::tempdir().unwrap();
    let work = dir.path();
    shell(work, &readme_command("mkdir -p certs auth"));
    shell(work, &readme_command("openssl req -newkey rsa:4096"));
    // Apache's htpasswd, as the guides make the file (tests below check the image's own).
    let entry = run(Command::new("htpasswd").args(["-Bbn", "testuser", "testpassword"]));
    std::fs::write(work.join("auth/htpasswd"), entry).unwrap();

    let container = Container {
        name: unique("berth-secure"),
    };
    let port = free_port();
    let line = readme_command("docker run -d -p 443:5000");
    // Probed every second instead of 10: the check itself is the image's.
    let line = swap(
        &line,
        "docker run -d -p 443:5000",
        &format!("docker run -d --health-interval=1s -p 127.0.0.1:{port}:5000"),
    );
    let line = swap(
        &line,
        "--name registry",
        &format!("--name {}", container.name),
    );
    shell(work, &line);
    let url = format!("https://127.0.0.1:{port}/v2/");
    container.wait_http(&insecure_client(), &url, &[401]);

    // The certificate served is the one mounted at /certs: curl verifies it with that file
    // as its only CA, under the name it was made for.
    let status = run(Command::new("curl")
        .args(["-sS", "-o", "/dev/null", "-w", "%{http_code}", "--cacert"])
        .arg(work.join("certs/domain.crt"))
        .args([
            "--resolve",
            &format!("registry.example.com:{port}:127.0.0.1"),
            &format!("https://registry.example.com:{port}/v2/"),
        ]));
    assert_eq!(status, "401");
    // Healthy although /v2/ wants a login, over TLS.
    container.wait_healthy();

    // Docker does not verify certificates of registries on 127.0.0.0/8 (it treats them as
    // insecure), so the self-signed one needs no /etc/docker/certs.d here.
    let config = docker_config(work);
    let remote = format!("127.0.0.1:{port}/secure/app:1");
    let (id, _images) = small_image(work, &remote);
    let refused = run_failing(&mut docker_with(&config, &["push", &remote]));
    assert!(
        refused.contains("no basic auth credentials"),
        "push without login: {refused}"
    );

    let mut login = docker_with(
        &config,
        &[
            "login",
            &format!("127.0.0.1:{port}"),
            "-u",
            "testuser",
            "--password-stdin",
        ],
    );
    login.stdin(std::process::Stdio::piped());
    login.stdout(std::process::Stdio::piped());
    let mut child = login.spawn().unwrap();
    std::io::Write::write_all(&mut child.stdin.take().unwrap(), b"testpassword").unwrap();
    let out = child.wait_with_output().unwrap();
    assert!(
        String::from_utf8_lossy(&out.stdout).contains("Login Succeeded"),
        "docker login: {out:?}"
    );
    run(&mut docker_with(&config, &["push", &remote]));
    pull_again(&config, &remote, &id);

    run(&mut docker_with(
        &config,
        &["logout", &format!("127.0.0.1:{port}")],
    ));
    docker_ok(&["rmi", &remote]);
    // Docker reports the last endpoint it tried: for a 127.0.0.0/8 registry that is the plain
    // HTTP fallback after the refused HTTPS pull, so the message varies; the image must not be
    // there, and berth itself must be what refused.
    let refused = run_failing(&mut docker_with(&config, &["pull", &remote]));
    let absent = docker()
        .args(["image", "inspect", &remote])
        .output()
        .unwrap();
    assert!(!absent.status.success(), "pulled after logout: {refused}");
    let anonymous = insecure_client()
        .get(format!(
            "https://127.0.0.1:{port}/v2/secure/app/manifests/1"
        ))
        .header("Accept", MANIFEST_TYPES)
        .send()
        .unwrap();
    assert_eq!(anonymous.status(), 401, "a manifest without credentials");
}

#[test]
fn the_readme_htpasswd_line_makes_an_entry_berth_accepts() {
    require_image(IMAGE);
    let dir = tempfile::tempdir().unwrap();
    shell(dir.path(), &readme_command("mkdir -p certs auth"));
    let line = readme_command("docker run --rm --entrypoint berth berth:latest htpasswd");
    shell(dir.path(), &line);
    let path = dir.path().join("auth/htpasswd");
    let text = std::fs::read_to_string(&path).unwrap();
    assert!(
        text.starts_with("testuser:$2"),
        "one bcrypt entry: {text:?}"
    );
    assert_eq!(text.lines().count(), 1, "{text:?}");
    let users = berth::auth::htpasswd::Htpasswd::open(&path).expect("berth loads the file");
    assert!(users.verify("testuser", "testpassword"));
    assert!(!users.verify("testuser", "wrong"));
}

#[test]
fn a_volume_written_by_distribution_is_served_as_it_is() {
    require_image(IMAGE);
    let dir = tempfile::tempdir().unwrap();
    let tools = Tools::new(dir.path());
    let root = dir.path().join("data");
    let fixture = fixture_layout();
    let digest = layout_ref(&fixture, "amd64");
    {
        let config = common::tools::write_config(dir.path(), "distribution.yml", &root);
        let dist = Distribution::start(&config);
        run(tools.skopeo().args([
            "copy",
            "-q",
            "--dest-tls-verify=false",
            &format!("oci:{}:amd64", fixture.display()),
            &format!("docker://{}/moved/app:1", dist.host),
        ]));
    } // docker-registry stops here

    let port = free_port();
    let container = Container::run(
        "berth-moved",
        &[
            "-p",
            &format!("127.0.0.1:{port}:5000"),
            "-v",
            &format!("{}:/var/lib/registry", root.display()),
            IMAGE,
        ],
    );
    let base = format!("http://127.0.0.1:{port}");
    container.wait_http(&client(), &format!("{base}/v2/"), &[200]);
    assert_eq!(sha256(&manifest(&base, "moved/app", "1")), digest);
    let remote = format!("127.0.0.1:{port}/moved/app:1");
    let _images = DockerImages {
        refs: vec![remote.clone()],
    };
    let config = docker_config(dir.path());
    run(&mut docker_with(&config, &["pull", &remote]));

    // registry:2's maintenance command line, on the same volume while it serves.
    let out = run(docker().args([
        "run",
        "--rm",
        "-v",
        &format!("{}:/var/lib/registry", root.display()),
        IMAGE,
        "garbage-collect",
        "/etc/docker/registry/config.yml",
        "--dry-run",
    ]));
    assert!(!out.contains("error"), "garbage-collect --dry-run: {out}");
    assert_eq!(sha256(&manifest(&base, "moved/app", "1")), digest);
}

/// Byte `i` of the upload of the stop test.
fn pattern(i: u64) -> u8 {
    (i % 251) as u8
}

fn pattern_bytes(from: u64, to: u64) -> Vec<u8> {
    (from..to).map(pattern).collect()
}

/// A request body that never ends: 4 MiB at once, then 64 KiB every 50 ms.
struct Trickle {
    offset: u64,
    sent: Arc<AtomicU64>,
}

impl Read for Trickle {
    fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
        if self.offset >= 4 << 20 {
            std::thread::sleep(Duration::from_millis(50));
        }
        let n = buf.len().min(64 << 10);
        for (i, b) in buf[..n].iter_mut().enumerate() {
            *b = pattern(self.offset + i as u64);
        }
        self.offset += n as u64;
        self.sent.store(self.offset, Ordering::SeqCst);
        Ok(n)
    }
}

#[test]
fn docker_stop_drains_an_upload_that_resumes_after_docker_start() {
    require_image(IMAGE);
    let dir = tempfile::tempdir().unwrap();
    let port = free_port();
    let container = Container::run(
        "berth-stop",
        &[
            "-p",
            &format!("127.0.0.1:{port}:5000"),
            "-v",
            &format!("{}:/var/lib/registry", dir.path().display()),
            IMAGE,
        ],
    );
    let base = format!("http://127.0.0.1:{port}");
    container.wait_http(&client(), &format!("{base}/v2/"), &[200]);
    let location = common::start_upload_at(&base, "stop/blob");
    let location = if location.starts_with('/') {
        format!("{base}{location}")
    } else {
        location
    };

    let sent = Arc::new(AtomicU64::new(0));
    let body = Trickle {
        offset: 0,
        sent: sent.clone(),
    };
    let url = location.clone();
    // Streamed (chunked, no Content-Range): the PATCH is still sending when docker stops it.
    let patch = std::thread::spawn(move || {
        client()
            .patch(url)
            .header("Content-Type", "application/octet-stream")
            .body(reqwest::blocking::Body::new(body))
            .send()
    });
    while sent.load(Ordering::SeqCst) < 5 << 20 {
        std::thread::sleep(Duration::from_millis(20));
    }
    // docker's default: SIGTERM, SIGKILL after 10 s (exit code 137 then).
    docker_ok(&["stop", &container.name]);
    let _ = patch.join();
    assert_eq!(
        container.inspect("{{.State.ExitCode}}"),
        "0",
        "berth exited on SIGTERM by itself; log:\n{}",
        container.logs()
    );
    assert!(container.logs().contains("SIGTERM"), "{}", container.logs());

    docker_ok(&["start", &container.name]);
    container.wait_http(&client(), &format!("{base}/v2/"), &[200]);
    let r = client().get(&location).send().unwrap();
    assert_eq!(
        r.status(),
        204,
        "the upload is still there after the restart"
    );
    let range = r.headers()["range"].to_str().unwrap().to_string();
    let kept: u64 = range
        .strip_prefix("0-")
        .and_then(|end| end.parse::<u64>().ok())
        .map(|end| end + 1)
        .unwrap_or_else(|| panic!("Range {range:?}"));
    assert!(
        kept >= 4 << 20,
        "the bytes received before the stop are kept: {kept}"
    );

    let total = kept + (1 << 20);
    let r = common::patch_chunk(&location, kept, &pattern_bytes(kept, total));
    assert_eq!(r.status(), 202, "PATCH of the rest from {kept}");
    let location = r.headers()["location"].to_str().unwrap().to_string();
    let location = if location.starts_with('/') {
        format!("{base}{location}")
    } else {
        location
    };
    let blob = pattern_bytes(0, total);
    let digest = sha256(&blob);
    let r = common::complete_upload(&location, &digest);
    assert_eq!(r.status(), 201, "{}", r.text().unwrap_or_default());
    let got = client()
        .get(format!("{base}/v2/stop/blob/blobs/{digest}"))
        .send()
        .unwrap();
    assert_eq!(got.status(), 200);
    assert!(got.bytes().unwrap() == blob, "the blob is what was sent");
}

#[test]
fn a_non_root_user_needs_a_volume_it_can_write() {
    require_image(IMAGE);
    assert!(
        is_root(),
        "this test chowns host directories: run it as root"
    );
    let dir = tempfile::tempdir().unwrap();
    let writable = dir.path().join("writable");
    std::fs::create_dir(&writable).unwrap();
    std::os::unix::fs::chown(&writable, Some(1000), Some(1000)).unwrap();
    let port = free_port();
    // A configuration file as the only argument, as registry:2's entrypoint takes it.
    let container = Container::run(
        "berth-user",
        &[
            "--user",
            "1000:1000",
            "-p",
            &format!("127.0.0.1:{port}:5000"),
            "-v",
            &format!("{}:/var/lib/registry", writable.display()),
            IMAGE,
            "/etc/docker/registry/config.yml",
        ],
    );
    let base = format!("http://127.0.0.1:{port}");
    container.wait_http(&client(), &format!("{base}/v2/"), &[200]);
    let r = common::push_blob_as(&base, "user/blob", b"written as uid 1000", None);
    assert_eq!(r.status(), 201, "{}", r.text().unwrap_or_default());
    let blobs = writable.join("docker/registry/v2/blobs");
    let owner = std::os::unix::fs::MetadataExt::uid(&std::fs::metadata(&blobs).unwrap());
    assert_eq!(owner, 1000, "files belong to the container's user");

    let root_owned = dir.path().join("root-owned");
    std::fs::create_dir(&root_owned).unwrap();
    let refused = Container::run(
        "berth-user",
        &[
            "--user",
            "1000:1000",
            "-v",
            &format!("{}:/var/lib/registry", root_owned.display()),
            IMAGE,
        ],
    );
    let code = refused.wait_exit();
    let logs = refused.logs();
    assert_ne!(
        code, 0,
        "berth must not serve a volume it cannot write: {logs}"
    );
    assert!(
        logs.contains("/var/lib/registry") && logs.contains("not writable"),
        "the log names the directory: {logs}"
    );
}

#[test]
fn the_build_context_leaves_target_out() {
    require_image(IMAGE);
    let root = Path::new(env!("CARGO_MANIFEST_DIR"));
    assert!(
        root.join("target/image/rootfs/usr/local/bin/berth")
            .is_file(),
        "no target/image/rootfs: run `make image`"
    );
    // What `make image` runs, under another tag; without -q docker says what it sent.
    let tag = format!("berth:{}", unique("context"));
    let _images = DockerImages {
        refs: vec![tag.clone()],
    };
    let out = run(docker()
        .args(["build", "--target", "local", "-t", &tag, "."])
        .current_dir(root));
    let sent = out
        .lines()
        .find_map(|l| l.strip_prefix("Sending build context to Docker daemon"))
        .unwrap_or_else(|| panic!("no context size in: {out}"))
        .trim()
        .to_string();
    let megabytes: f64 = match sent.strip_suffix("MB") {
        Some(mb) => mb.parse().unwrap(),
        None if sent.ends_with("kB") || sent.ends_with('B') && !sent.ends_with("GB") => 0.0,
        None => panic!("build context of {sent}: .dockerignore lets target/ in"),
    };
    // The rootfs (binary and libraries) and the sources: tens of MB, never the gigabytes of
    // target/.
    assert!(megabytes < 100.0, "build context of {sent}");
}
