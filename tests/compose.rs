//! The docker-compose deployments of `examples/`, run on the machine's Docker engine as a user
//! runs them: the example's files copied unchanged into a folder, the certificate and the
//! htpasswd file made with the berth image itself as the README says, `docker-compose up -d`,
//! then `docker login`, push and pull of a small image, the challenge a client without
//! credentials gets, and `docker-compose down -v`.
//!
//! berth's service is the real image (`make image` builds `berth:latest`). The official nginx and
//! redis images cannot be pulled here, so `scripts/standin-images.sh` builds stand-ins from this
//! machine's Debian binaries and an override file (`-f docker-compose.yml -f override.yml`) swaps
//! the `image:` names and nothing else. The registry is published on 127.0.0.1 only; docker
//! treats 127.0.0.0/8 registries as insecure, so the engine does not verify the certificate there
//! (this test's own HTTP client does, with the CA `berth certs` made).

mod common;

use std::io::Write as _;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use common::docker::{docker, docker_ok, require_image, scratch_image, standin_images, IMAGE};
use common::tools::{run_failing, unique, DockerImages};
use common::{free_port, run};

const USER: &str = "testuser";
const PASSWORD: &str = "testpassword";

/// Fails the test unless the engine answers, berth's image exists (nothing can be pulled here)
/// and docker-compose is installed.
fn require_engine_image_and_compose() {
    require_image(IMAGE);
    assert!(
        Command::new("docker-compose")
            .arg("version")
            .output()
            .is_ok_and(|o| o.status.success()),
        "docker-compose is missing (apt-get install docker-compose, as `make deps` does)"
    );
}

/// A copy of `examples/NAME/` (every file, unchanged) in a fresh folder, with the certificate
/// and the htpasswd file made by the berth image as the README says.
fn example_folder(name: &str) -> tempfile::TempDir {
    let dir = tempfile::tempdir().unwrap();
    let source = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("examples")
        .join(name);
    for entry in std::fs::read_dir(&source).unwrap() {
        let path = entry.unwrap().path();
        if path.is_file() {
            std::fs::copy(&path, dir.path().join(path.file_name().unwrap())).unwrap();
        }
    }
    let certs = format!("{}:/certs", dir.path().join("certs").display());
    docker_ok(&[
        "run",
        "--rm",
        "-v",
        &certs,
        "--entrypoint",
        "berth",
        IMAGE,
        "certs",
        "--domain",
        "registry.example.com",
        "--out",
        "/certs",
    ]);
    std::fs::create_dir(dir.path().join("auth")).unwrap();
    add_user(dir.path(), USER, PASSWORD);
    dir
}

/// `docker run --rm --entrypoint berth berth:latest htpasswd -Bbn USER PASSWORD >>
/// auth/htpasswd`, as the README says (appending keeps the file's group and mode).
fn add_user(dir: &Path, user: &str, password: &str) {
    let entry = docker_ok(&[
        "run",
        "--rm",
        "--entrypoint",
        "berth",
        IMAGE,
        "htpasswd",
        "-Bbn",
        user,
        password,
    ]);
    let mut file = std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(dir.join("auth/htpasswd"))
        .unwrap();
    writeln!(file, "{entry}").unwrap();
}

/// One compose project: `docker-compose -p NAME -f FILE…` in the example's folder, published on
/// 127.0.0.1:PORT. Dropping it (also when the test fails) prints the services' logs if the
/// test is failing, then runs `down -v`: containers, network and volumes go.
struct Project {
    name: String,
    dir: PathBuf,
    files: Vec<String>,
    publish: String,
}

impl Project {
    fn new(dir: &Path, files: &[&str]) -> Project {
        Project {
            name: unique("berthcompose").replace('-', ""),
            dir: dir.to_path_buf(),
            files: files.iter().map(|f| f.to_string()).collect(),
            publish: format!("127.0.0.1:{}", free_port()),
        }
    }

    /// `docker-compose …` under a time limit, like every client command of the tests.
    fn compose(&self) -> Command {
        let mut cmd = Command::new("timeout");
        cmd.args(["-k", "5", "300", "docker-compose"])
            .current_dir(&self.dir)
            .env("BERTH_PUBLISH", &self.publish)
            .args(["--no-ansi", "-p", &self.name]);
        for f in &self.files {
            cmd.args(["-f", f]);
        }
        cmd
    }

    fn up(&self) {
        run(self.compose().args(["up", "-d"]));
    }

    /// `docker-compose exec -T SERVICE ARGS…`
    fn exec(&self, service: &str, args: &[&str]) -> String {
        run(self.compose().args(["exec", "-T", service]).args(args))
    }
}

impl Drop for Project {
    fn drop(&mut self) {
        if std::thread::panicking() {
            if let Ok(out) = self.compose().args(["logs", "--no-color"]).output() {
                eprintln!(
                    "docker-compose logs of {}:\n{}{}",
                    self.name,
                    String::from_utf8_lossy(&out.stdout),
                    String::from_utf8_lossy(&out.stderr)
                );
            }
        }
        let _ = self
            .compose()
            .args(["down", "-v", "--remove-orphans"])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .status();
    }
}

/// An HTTPS client trusting the CA `berth certs` made in `dir/certs`.
fn https_client(dir: &Path) -> reqwest::blocking::Client {
    let ca = std::fs::read(dir.join("certs/ca.crt")).unwrap();
    reqwest::blocking::Client::builder()
        .add_root_certificate(reqwest::Certificate::from_pem(&ca).unwrap())
        .timeout(Duration::from_secs(30))
        .build()
        .unwrap()
}

/// Waits until `GET /v2/` answers (401: the services are up), at most a minute.
fn wait_for_registry(client: &reqwest::blocking::Client, base: &str) {
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        match client.get(format!("{base}/v2/")).send() {
            Ok(r) if r.status() == 401 => return,
            other => {
                let seen = other.map(|r| r.status().to_string());
                assert!(
                    Instant::now() < deadline,
                    "{base}/v2/ did not answer 401 within a minute: {seen:?}"
                );
            }
        }
        std::thread::sleep(Duration::from_millis(200));
    }
}

/// Without credentials (and with wrong ones): 401, the spec's error, and exactly one
/// `WWW-Authenticate` naming `realm`.
fn assert_one_challenge(client: &reqwest::blocking::Client, base: &str, realm: &str) {
    for password in [None, Some("wrong")] {
        let mut request = client.get(format!("{base}/v2/"));
        if let Some(password) = password {
            request = request.basic_auth(USER, Some(password));
        }
        let r = request.send().unwrap();
        assert_eq!(r.status(), 401);
        let challenges: Vec<_> = r.headers().get_all("www-authenticate").iter().collect();
        assert_eq!(
            challenges,
            [format!("Basic realm=\"{realm}\"").as_str()],
            "exactly one challenge (password {password:?})"
        );
        assert_eq!(
            r.headers()["docker-distribution-api-version"],
            "registry/2.0"
        );
        assert_eq!(common::error_code(&r.text().unwrap()), "UNAUTHORIZED");
    }
}

/// The docker client of one test: its own configuration folder (logins), the engine's images.
struct Docker {
    config: PathBuf,
}

impl Docker {
    fn new(dir: &Path) -> Docker {
        let config = dir.join("docker-config");
        std::fs::create_dir_all(&config).unwrap();
        Docker { config }
    }

    fn cmd(&self) -> Command {
        let mut cmd = docker();
        cmd.env("DOCKER_CONFIG", &self.config);
        cmd
    }

    /// `docker login REGISTRY -u USER --password-stdin`; whether it succeeded.
    fn login(&self, registry: &str, user: &str, password: &str) -> bool {
        let mut child = self
            .cmd()
            .args(["login", registry, "-u", user, "--password-stdin"])
            .stdin(Stdio::piped())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap();
        writeln!(child.stdin.take().unwrap(), "{password}").unwrap();
        child.wait().unwrap().success()
    }

    /// `docker push`; answers the manifest digest it reports.
    fn push(&self, reference: &str) -> String {
        let out = run(self.cmd().args(["push", reference]));
        out.split("digest: ")
            .nth(1)
            .and_then(|s| s.split_whitespace().next())
            .unwrap_or_else(|| panic!("no digest in docker push output: {out}"))
            .to_string()
    }

    /// Removes the local image, pulls it back, answers the pulled image's ID.
    fn pull_again(&self, reference: &str) -> String {
        run(self.cmd().args(["rmi", reference]));
        run(self.cmd().args(["pull", "-q", reference]));
        docker_ok(&["image", "inspect", "-f", "{{.Id}}", reference])
    }
}

/// A small image built here `FROM scratch` (one file, unique content), tagged `reference`:
/// its image ID, and the guard that removes the tag.
fn small_image(dir: &Path, reference: &str) -> (String, DockerImages) {
    let content = format!("hello from {}\n", unique("compose"));
    let images = scratch_image(dir, reference, &[("hello.txt", content.as_bytes())]);
    let id = docker_ok(&["image", "inspect", "-f", "{{.Id}}", reference]);
    (id, images)
}

/// examples/nginx: nginx (TLS, auth_basic) in front of berth, Redis as berth's blob-descriptor
/// cache.
/// Starts the project of `files` in `dir`, waits until it answers over HTTPS and checks its
/// 401 carries one challenge of `realm`; answers the project, its published address, the base
/// URL and a client trusting the example's certificate.
fn start_answering(
    dir: &Path,
    files: &[&str],
    realm: &str,
) -> (Project, String, String, reqwest::blocking::Client) {
    let project = Project::new(dir, files);
    project.up();
    let registry = project.publish.clone();
    let base = format!("https://{registry}");
    let client = https_client(dir);
    wait_for_registry(&client, &base);
    assert_one_challenge(&client, &base, realm);
    (project, registry, base, client)
}

#[test]
fn nginx_redis_compose_example_serves_docker_through_nginx_and_berth_uses_redis() {
    require_engine_image_and_compose();
    let (nginx, redis) = standin_images();
    let dir = example_folder("nginx");
    // As the README says: nginx's workers (www-data, gid 33) read the users.
    let htpasswd = dir.path().join("auth/htpasswd");
    run(Command::new("chgrp").arg("33").arg(&htpasswd));
    run(Command::new("chmod").arg("640").arg(&htpasswd));
    std::fs::write(
        dir.path().join("override.yml"),
        format!(
            "# The official images cannot be pulled here: stand-ins from Debian's binaries.\n\
             services:\n  nginx:\n    image: {nginx}\n  redis:\n    image: {redis}\n"
        ),
    )
    .unwrap();
    let (project, registry, base, client) =
        start_answering(dir.path(), &["docker-compose.yml", "override.yml"], "berth");
    // berth believes nginx's X-Forwarded-Proto (REGISTRY_HTTP_TRUSTEDPROXIES): its upload
    // locations name nginx's https:// address, which docker then follows.
    let r = client
        .post(format!("{base}/v2/compose/hello/blobs/uploads/"))
        .basic_auth(USER, Some(PASSWORD))
        .send()
        .unwrap();
    assert_eq!(r.status(), 202);
    let location = r.headers()["location"].to_str().unwrap();
    assert!(
        location.starts_with(&format!("{base}/v2/compose/hello/blobs/uploads/")),
        "{location}"
    );

    let docker = Docker::new(dir.path());
    let reference = format!("{registry}/compose/hello:1");
    let (id, _images) = small_image(dir.path(), &reference);
    let refused = run_failing(docker.cmd().args(["push", &reference]));
    assert!(refused.contains("no basic auth credentials"), "{refused}");
    assert!(docker.login(&registry, USER, PASSWORD), "docker login");
    let digest = docker.push(&reference);
    assert_eq!(
        docker.pull_again(&reference),
        id,
        "the same image came back"
    );

    // berth went to Redis: the pushed manifest (and its blobs) are cached under berth's keys.
    let keys = project.exec(
        "redis",
        &[
            "redis-cli",
            "--scan",
            "--pattern",
            "berth::repository::compose/hello::*",
        ],
    );
    assert!(
        keys.lines()
            .any(|k| k == format!("berth::repository::compose/hello::manifests::{digest}")),
        "the manifest's key in Redis: {keys}"
    );
    assert!(
        keys.lines()
            .any(|k| k.starts_with("berth::repository::compose/hello::blobs::sha256:")),
        "blob keys in Redis: {keys}"
    );
}

/// examples/https: berth serving HTTPS and htpasswd logins itself.
#[test]
fn https_compose_example_serves_docker_with_logins() {
    require_engine_image_and_compose();
    let dir = example_folder("https");
    // Only berth's own image: no override.
    let (_project, registry, _base, _client) =
        start_answering(dir.path(), &["docker-compose.yml"], "Registry Realm");

    let docker = Docker::new(dir.path());
    let reference = format!("{registry}/compose/hello:1");
    let (id, _images) = small_image(dir.path(), &reference);
    let refused = run_failing(docker.cmd().args(["push", &reference]));
    assert!(refused.contains("no basic auth credentials"), "{refused}");
    assert!(docker.login(&registry, USER, PASSWORD), "docker login");
    docker.push(&reference);
    assert_eq!(
        docker.pull_again(&reference),
        id,
        "the same image came back"
    );

    // Logged out, the registry refuses the pull.
    run(docker.cmd().args(["logout", &registry]));
    run(docker.cmd().args(["rmi", &reference]));
    run_failing(docker.cmd().args(["pull", &reference]));

    // A user added while it runs can log in without a restart (berth re-reads the file it
    // finds through the mounted folder).
    add_user(dir.path(), "later", "later-password");
    let deadline = Instant::now() + Duration::from_secs(20);
    while !docker.login(&registry, "later", "later-password") {
        assert!(
            Instant::now() < deadline,
            "a user added to auth/htpasswd could not log in"
        );
        std::thread::sleep(Duration::from_millis(500));
    }
}
