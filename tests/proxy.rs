//! berth behind real nginx (from apt), configured from the repository's example
//! `examples/nginx/nginx.conf`: nginx terminates TLS (a certificate from `berth certs`) and checks
//! passwords (`auth_basic`, a file made by `berth htpasswd`), berth serves on loopback. Checks
//! what a user would: the challenge and JSON error for a missing login, `Location` headers
//! pointing at nginx's `https://` address, a large chunked push streamed through, skopeo and
//! docker pushing and pulling through it.
//!
//! nginx runs from the file as it runs in production: the master started as root (the tests run
//! as root, as `.ci/run` does), the workers switching to the file's `user` (www-data), the
//! htpasswd file made readable by that group exactly as the file's comment says (`chgrp
//! www-data`, `chmod 640`). Only the daemon/pid/error-log plumbing is set on the command line.

mod common;

use std::io::Write;
use std::os::unix::fs::PermissionsExt as _;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use common::tools::{
    docker_load_fixture, docker_push, fixture_layout, nginx_binary, require, unique, DockerImages,
    Tools,
};
use common::{run, sha256, BerthProcess};

struct Nginx {
    child: Child,
    /// `localhost:PORT`
    host: String,
}

impl Drop for Nginx {
    /// SIGTERM, not SIGKILL: a killed master leaves its workers running (and holding the test
    /// runner's output open).
    fn drop(&mut self) {
        unsafe {
            libc::kill(self.child.id() as libc::pid_t, libc::SIGTERM);
        }
        let _ = self.child.wait();
    }
}

/// The example configuration with this test's paths, ports and berth's address put in.
fn nginx_config(dir: &Path, port: u16, berth: &str, certs: &Path, htpasswd: &Path) -> PathBuf {
    let example = Path::new(env!("CARGO_MANIFEST_DIR")).join("examples/nginx/nginx.conf");
    let text = std::fs::read_to_string(&example).unwrap();
    let replacements = [
        ("server berth:5000;", format!("server {berth};")),
        ("listen 443 ssl", format!("listen 127.0.0.1:{port} ssl")),
        (
            "/etc/nginx/berth/server.crt",
            certs.join("server.crt").display().to_string(),
        ),
        (
            "/etc/nginx/berth/server.key",
            certs.join("server.key").display().to_string(),
        ),
        ("/etc/nginx/auth/htpasswd", htpasswd.display().to_string()),
    ];
    let mut text = text;
    for (from, to) in replacements {
        assert!(text.contains(from), "the example has {from:?}");
        text = text.replace(from, &to);
    }
    let path = dir.join("nginx.conf");
    std::fs::write(&path, text).unwrap();
    path
}

fn start_nginx(dir: &Path, config: &Path, port: u16) -> Nginx {
    let prefix = dir.join("nginx");
    std::fs::create_dir_all(prefix.join("logs")).unwrap();
    let child = Command::new(nginx_binary())
        .arg("-p")
        .arg(&prefix)
        .arg("-c")
        .arg(config)
        .arg("-g")
        .arg(format!(
            "daemon off; pid {}; error_log stderr warn;",
            prefix.join("nginx.pid").display()
        ))
        .stdout(Stdio::null())
        .stderr(std::fs::File::create(dir.join("nginx.log")).unwrap())
        .spawn()
        .expect("nginx starts");
    let deadline = Instant::now() + Duration::from_secs(20);
    while std::net::TcpStream::connect(("127.0.0.1", port)).is_err() {
        assert!(Instant::now() < deadline, "nginx did not listen on {port}");
        std::thread::sleep(Duration::from_millis(50));
    }
    Nginx {
        child,
        host: format!("localhost:{port}"),
    }
}

/// The users nginx's worker processes (the master's children) run as, by `ps`.
fn worker_users(master: u32) -> Vec<String> {
    run(Command::new("ps").args(["-o", "user=", "--ppid", &master.to_string()]))
        .lines()
        .map(|l| l.trim().to_string())
        .collect()
}

fn https_client(certs: &Path) -> reqwest::blocking::Client {
    let ca = std::fs::read(certs.join("ca.crt")).unwrap();
    reqwest::blocking::Client::builder()
        .redirect(reqwest::redirect::Policy::none())
        .timeout(Duration::from_secs(120))
        .add_root_certificate(reqwest::Certificate::from_pem(&ca).unwrap())
        .build()
        .unwrap()
}

/// berth on loopback without `auth` (nginx does the logins), with nginx in front.
struct Setup {
    _berth: BerthProcess,
    nginx: Nginx,
    certs: PathBuf,
    dir: tempfile::TempDir,
}

fn setup() -> Setup {
    assert!(
        common::tools::is_root(),
        "these tests start nginx as production does: a root master whose workers switch to \
         www-data; run them as root, as .ci/run does"
    );
    let dir = tempfile::tempdir().unwrap();
    // The workers (www-data) must get through the test's directory to the htpasswd file, as
    // through /etc/nginx; the directory listing stays private.
    std::fs::set_permissions(dir.path(), std::fs::Permissions::from_mode(0o711)).unwrap();
    let certs = dir.path().join("certs");
    run(Command::new(env!("CARGO_BIN_EXE_berth"))
        .args(["certs", "--domain", "registry.test", "--out"])
        .arg(&certs));
    std::fs::create_dir(dir.path().join("auth")).unwrap();
    let htpasswd = dir.path().join("auth/htpasswd");
    let mut child = Command::new(env!("CARGO_BIN_EXE_berth"))
        .args(["htpasswd", "--cost", "5"])
        .arg(&htpasswd)
        .arg("ci")
        .stdin(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    writeln!(child.stdin.take().unwrap(), "ci-secret").unwrap();
    assert!(child.wait().unwrap().success());
    // What the example's comment tells the reader to do.
    run(Command::new("chgrp").arg("www-data").arg(&htpasswd));
    run(Command::new("chmod").arg("640").arg(&htpasswd));

    let config = dir.path().join("berth.yml");
    std::fs::write(
        &config,
        format!(
            "version: 0.1\nlog:\n  level: info\nstorage:\n  filesystem:\n    rootdirectory: {}\nhttp:\n  addr: 127.0.0.1:0\n",
            dir.path().join("storage").display()
        ),
    )
    .unwrap();
    let berth = BerthProcess::start(&config, &[]);
    let port = common::free_port();
    let nginx_conf = nginx_config(dir.path(), port, &berth.host, &certs, &htpasswd);
    let nginx = start_nginx(dir.path(), &nginx_conf, port);
    Setup {
        _berth: berth,
        nginx,
        certs,
        dir,
    }
}

#[test]
fn nginx_in_front_challenges_and_berth_answers_with_its_public_address() {
    let s = setup();
    let c = https_client(&s.certs);
    let base = format!("https://{}", s.nginx.host);

    // No login: nginx's 401 carries the challenge (once), the API version and the spec's JSON
    // error.
    let r = c.get(format!("{base}/v2/")).send().unwrap();
    assert_eq!(r.status(), 401);
    let challenges: Vec<_> = r.headers().get_all("www-authenticate").iter().collect();
    assert_eq!(challenges, [r#"Basic realm="berth""#], "one challenge");
    assert_eq!(
        r.headers()["docker-distribution-api-version"],
        "registry/2.0"
    );
    assert_eq!(common::error_code(&r.text().unwrap()), "UNAUTHORIZED");
    // nginx's workers (one of them answered) run as the file's unprivileged user, not as root.
    let workers = worker_users(s.nginx.child.id());
    assert!(!workers.is_empty(), "nginx started no workers");
    assert!(workers.iter().all(|u| u == "www-data"), "{workers:?}");
    let r = c
        .get(format!("{base}/v2/"))
        .basic_auth("ci", Some("wrong"))
        .send()
        .unwrap();
    assert_eq!(r.status(), 401);
    assert_eq!(r.headers().get_all("www-authenticate").iter().count(), 1);

    // Logged in: berth answers, and its Location headers name nginx's https address.
    let r = c
        .get(format!("{base}/v2/"))
        .basic_auth("ci", Some("ci-secret"))
        .send()
        .unwrap();
    assert_eq!(r.status(), 200);
    assert_eq!(
        r.headers()["docker-distribution-api-version"],
        "registry/2.0"
    );
    // Forwarding headers a client writes itself change nothing: nginx writes its own.
    let r = c
        .post(format!("{base}/v2/proxied/big/blobs/uploads/"))
        .basic_auth("ci", Some("ci-secret"))
        .header("X-Forwarded-Host", "evil.example")
        .header("X-Forwarded-Proto", "http")
        .header(
            "Forwarded",
            "for=203.0.113.66;host=evil2.example;proto=http",
        )
        .send()
        .unwrap();
    assert_eq!(r.status(), 202);
    let location = r.headers()["location"].to_str().unwrap().to_string();
    assert!(
        location.starts_with(&format!("{base}/v2/proxied/big/blobs/uploads/")),
        "{location}"
    );

    // 24 MiB in three 8 MiB PATCHes through nginx (streamed, not spooled), then the digest.
    let blob: Vec<u8> = (0..24u32 << 20)
        .map(|i| (i.wrapping_mul(2654435761) >> 24) as u8)
        .collect();
    let mut location = location;
    for (i, chunk) in blob.chunks(8 << 20).enumerate() {
        let start = i * (8 << 20);
        let r = c
            .patch(&location)
            .basic_auth("ci", Some("ci-secret"))
            .header("Content-Type", "application/octet-stream")
            .header(
                "Content-Range",
                format!("{start}-{}", start + chunk.len() - 1),
            )
            .body(chunk.to_vec())
            .send()
            .unwrap();
        assert_eq!(r.status(), 202, "chunk {i}");
        location = r.headers()["location"].to_str().unwrap().to_string();
        assert!(location.starts_with(&base), "{location}");
    }
    let digest = sha256(&blob);
    let sep = if location.contains('?') { '&' } else { '?' };
    let r = c
        .put(format!("{location}{sep}digest={digest}"))
        .basic_auth("ci", Some("ci-secret"))
        .send()
        .unwrap();
    assert_eq!(r.status(), 201);
    assert_eq!(
        r.headers()["location"],
        format!("{base}/v2/proxied/big/blobs/{digest}").as_str()
    );
    let back = c
        .get(format!("{base}/v2/proxied/big/blobs/{digest}"))
        .basic_auth("ci", Some("ci-secret"))
        .send()
        .unwrap()
        .bytes()
        .unwrap();
    assert!(
        back.as_ref() == blob.as_slice(),
        "the blob comes back byte-identical"
    );
}

#[test]
fn skopeo_and_docker_push_and_pull_through_nginx() {
    require("docker");
    let s = setup();
    let tools = Tools::new(s.dir.path());
    let h = &s.nginx.host;
    let trust = s.dir.path().join("trust");
    std::fs::create_dir_all(&trust).unwrap();
    std::fs::copy(s.certs.join("ca.crt"), trust.join("ca.crt")).unwrap();
    let cert_dir = trust.to_str().unwrap();

    // skopeo with credentials and the CA: in, then out again, byte-identical.
    run(tools.skopeo().args([
        "copy",
        "-q",
        "--dest-creds",
        "ci:ci-secret",
        "--dest-cert-dir",
        cert_dir,
        &format!("oci:{}:amd64", fixture_layout().display()),
        &format!("docker://{h}/proxied/hello:v1"),
    ]));
    let out = s.dir.path().join("out");
    run(tools.skopeo().args([
        "copy",
        "-q",
        "--src-creds",
        "ci:ci-secret",
        "--src-cert-dir",
        cert_dir,
        &format!("docker://{h}/proxied/hello:v1"),
        &format!("oci:{}:v1", out.display()),
    ]));
    let inspect = |reference: &str, extra: &[&str]| {
        run(tools
            .skopeo()
            .args(["inspect", "--raw"])
            .args(extra)
            .arg(reference))
    };
    assert_eq!(
        sha256(inspect(&format!("oci:{}:v1", out.display()), &[]).as_bytes()),
        sha256(inspect(&format!("oci:{}:amd64", fixture_layout().display()), &[]).as_bytes()),
        "the manifest came back byte-identical"
    );

    // docker login, push, pull through nginx (the engine skips verification on loopback).
    let local = format!("berth-e2e-proxy:{}", unique("t"));
    let remote = format!("{h}/proxied/docker:v1");
    let _images = DockerImages {
        refs: vec![local.clone(), remote.clone()],
    };
    docker_load_fixture(&tools, s.dir.path(), &local);
    run(tools.docker().args(["tag", &local, &remote]));
    let config = s.dir.path().join("docker-config");
    let mut login = tools.docker();
    login
        .arg("--config")
        .arg(&config)
        .args(["login", h, "-u", "ci", "--password-stdin"])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    let mut child = login.spawn().unwrap();
    writeln!(child.stdin.take().unwrap(), "ci-secret").unwrap();
    let out = child.wait_with_output().unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let pushed = docker_push(&tools, Some(&config), &remote);
    assert!(pushed.starts_with("sha256:"), "{pushed}");
    run(tools.docker().args(["rmi", &remote]));
    run(tools
        .docker()
        .arg("--config")
        .arg(&config)
        .args(["pull", "-q", &remote]));
}
