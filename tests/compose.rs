//! The docker-compose deployments of `examples/`, run on the machine's Docker engine as a user
//! runs them: the example's files copied unchanged into a folder, the certificate and the
//! htpasswd file made with the berth image itself as the folder's README says, `docker-compose
//! up -d`, then `docker login`, push and pull of a small image, the challenge a client without
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
use std::process::{Command, Output, Stdio};
use std::sync::OnceLock;
use std::time::{Duration, Instant};

use common::tools::{run_failing, unique, DockerImages};
use common::{free_port, run};

/// The berth image under test; `BERTH_TEST_IMAGE` may name another tag of it.
fn berth_image() -> String {
    std::env::var("BERTH_TEST_IMAGE").unwrap_or_else(|_| "berth:latest".to_string())
}

const USER: &str = "testuser";
const PASSWORD: &str = "testpassword";

/// Fails the test unless the engine answers, docker-compose is installed and berth's image
/// exists (nothing can be pulled here).
fn require_engine_and_image() {
    let out = Command::new("docker")
        .args(["version", "--format", "{{.Server.Version}}"])
        .output();
    assert!(
        out.as_ref().is_ok_and(|o| o.status.success()),
        "the Docker engine does not answer `docker version`: these tests need the machine's \
         engine ({out:?})"
    );
    assert!(
        Command::new("docker-compose")
            .arg("version")
            .output()
            .is_ok_and(|o| o.status.success()),
        "docker-compose is missing (apt-get install docker-compose)"
    );
    let image = berth_image();
    assert!(
        Command::new("docker")
            .args(["image", "inspect", &image])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .status()
            .is_ok_and(|s| s.success()),
        "the image {image} is missing: run `make image`"
    );
}

/// The stand-in nginx and redis images (built once per test run).
fn standins() -> &'static (String, String) {
    static TAGS: OnceLock<(String, String)> = OnceLock::new();
    TAGS.get_or_init(|| {
        let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("scripts/standin-images.sh");
        let out = run(Command::new("bash").arg(&script));
        let mut tags = out.split_whitespace().map(str::to_string);
        (tags.next().unwrap(), tags.next().unwrap())
    })
}

/// Runs `cmd` with `input` on its standard input; fails the test if it fails.
fn run_with_input(cmd: &mut Command, input: &str) -> String {
    let mut child = cmd
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap_or_else(|e| panic!("cannot run {cmd:?}: {e}"));
    child
        .stdin
        .take()
        .unwrap()
        .write_all(input.as_bytes())
        .unwrap();
    let out = child.wait_with_output().unwrap();
    assert!(out.status.success(), "{cmd:?} failed: {}", text(&out));
    String::from_utf8_lossy(&out.stdout).into_owned()
}

fn text(out: &Output) -> String {
    format!(
        "{}\n{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    )
}

/// A copy of `examples/NAME/` (every file, unchanged) in a fresh folder, with the certificate
/// and the htpasswd file made as its README says.
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
    let mount = format!("{}:/certs", dir.path().join("certs").display());
    run(Command::new("docker").args([
        "run",
        "--rm",
        "-v",
        &mount,
        "--entrypoint",
        "berth",
        &berth_image(),
        "certs",
        "--domain",
        "registry.example.com",
        "--out",
        "/certs",
    ]));
    add_user(dir.path(), USER, PASSWORD);
    dir
}

/// `auth/htpasswd` gets `user`, by the berth image as the README says.
fn add_user(dir: &Path, user: &str, password: &str) {
    let mount = format!("{}:/auth", dir.join("auth").display());
    run_with_input(
        Command::new("docker").args([
            "run",
            "--rm",
            "-i",
            "-v",
            &mount,
            "--entrypoint",
            "berth",
            &berth_image(),
            "htpasswd",
            "/auth/htpasswd",
            user,
        ]),
        &format!("{password}\n"),
    );
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

    fn compose(&self) -> Command {
        let mut cmd = Command::new("docker-compose");
        cmd.current_dir(&self.dir)
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
                eprintln!("docker-compose logs of {}:\n{}", self.name, text(&out));
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
        let mut cmd = Command::new("docker");
        cmd.env("DOCKER_CONFIG", &self.config);
        cmd
    }

    fn login(&self, registry: &str) {
        let out = run_with_input(
            self.cmd()
                .args(["login", registry, "-u", USER, "--password-stdin"]),
            &format!("{PASSWORD}\n"),
        );
        assert!(out.contains("Login Succeeded"), "{out}");
    }

    /// `docker login` as `user`; whether it succeeded.
    fn try_login(&self, registry: &str, user: &str, password: &str) -> bool {
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

    /// A small image built here `FROM scratch` (one file, unique content), tagged `reference`;
    /// answers its image ID.
    fn build_image(&self, dir: &Path, reference: &str) -> String {
        let context = dir.join("image");
        std::fs::create_dir_all(&context).unwrap();
        std::fs::write(
            context.join("hello.txt"),
            format!("hello from {}\n", unique("compose")),
        )
        .unwrap();
        std::fs::write(
            context.join("Dockerfile"),
            "FROM scratch\nCOPY hello.txt /\n",
        )
        .unwrap();
        run(self
            .cmd()
            .args(["build", "-q", "-t", reference])
            .arg(&context))
        .trim()
        .to_string()
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
        run(self
            .cmd()
            .args(["image", "inspect", "-f", "{{.Id}}", reference]))
        .trim()
        .to_string()
    }
}

/// examples/nginx: nginx (TLS, auth_basic) in front of berth, Redis as berth's blob-descriptor
/// cache.
#[test]
fn nginx_redis_compose_example_serves_docker_through_nginx_and_berth_uses_redis() {
    require_engine_and_image();
    let (nginx, redis) = standins();
    let dir = example_folder("nginx");
    // As the README says: nginx's workers (www-data, gid 33) read the users.
    let htpasswd = dir.path().join("auth/htpasswd");
    run(Command::new("chgrp").arg("33").arg(&htpasswd));
    run(Command::new("chmod").arg("640").arg(&htpasswd));
    std::fs::write(
        dir.path().join("override.yml"),
        format!(
            "# The official images cannot be pulled here: stand-ins from Debian's binaries.\n\
             services:\n  nginx:\n    image: {nginx}\n  redis:\n    image: {redis}\n{}",
            berth_override("berth")
        ),
    )
    .unwrap();
    let project = Project::new(dir.path(), &["docker-compose.yml", "override.yml"]);
    project.up();
    let registry = project.publish.clone();
    let base = format!("https://{registry}");
    let client = https_client(dir.path());
    wait_for_registry(&client, &base);
    assert_one_challenge(&client, &base, "berth");
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
    let _images = DockerImages {
        refs: vec![reference.clone()],
    };
    let id = docker.build_image(dir.path(), &reference);
    let refused = run_failing(docker.cmd().args(["push", &reference]));
    assert!(refused.contains("no basic auth credentials"), "{refused}");
    docker.login(&registry);
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
    require_engine_and_image();
    let dir = example_folder("https");
    let mut files = vec!["docker-compose.yml"];
    let over = berth_override("registry");
    if !over.is_empty() {
        std::fs::write(
            dir.path().join("override.yml"),
            format!("services:\n{over}"),
        )
        .unwrap();
        files.push("override.yml");
    }
    let project = Project::new(dir.path(), &files);
    project.up();
    let registry = project.publish.clone();
    let base = format!("https://{registry}");
    let client = https_client(dir.path());
    wait_for_registry(&client, &base);
    assert_one_challenge(&client, &base, "Registry Realm");

    let docker = Docker::new(dir.path());
    let reference = format!("{registry}/compose/hello:1");
    let _images = DockerImages {
        refs: vec![reference.clone()],
    };
    let id = docker.build_image(dir.path(), &reference);
    let refused = run_failing(docker.cmd().args(["push", &reference]));
    assert!(refused.contains("no basic auth credentials"), "{refused}");
    docker.login(&registry);
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
    // finds through the mounted folder; a mounted file would still be the old one).
    add_user(dir.path(), "later", "later-password");
    let deadline = Instant::now() + Duration::from_secs(20);
    while !docker.try_login(&registry, "later", "later-password") {
        assert!(
            Instant::now() < deadline,
            "a user added to auth/htpasswd could not log in"
        );
        std::thread::sleep(Duration::from_millis(500));
    }
}

/// The override lines that name another berth image than the compose file's `berth:latest`
/// (only when `BERTH_TEST_IMAGE` says so); empty otherwise.
fn berth_override(service: &str) -> String {
    let image = berth_image();
    if image == "berth:latest" {
        String::new()
    } else {
        format!("  {service}:\n    image: {image}\n")
    }
}
