//! A configuration that never surprises, checked as a user meets it: the `berth` binary started
//! on a hand-written file refuses misspelt keys, naming each with a suggestion, and otherwise
//! keeps the documented defaults and reports what it ignores; `http.headers` reach every response; `http.prefix` serves the API under a path,
//! behind real nginx mapping `/v2/` there, for docker and skopeo.

mod common;

use std::io::{BufRead, BufReader};
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use common::tools::{
    docker_load_fixture, docker_push, fixture_layout, nginx_binary, require, unique, DockerImages,
    Tools,
};
use common::{free_port, run, TestRegistry};

/// A child process stopped when dropped, by SIGTERM: a killed nginx master would leave its
/// workers running (and holding the test runner's output open).
struct Killed(Child);

impl Drop for Killed {
    fn drop(&mut self) {
        unsafe {
            libc::kill(self.0.id() as libc::pid_t, libc::SIGTERM);
        }
        let _ = self.0.wait();
    }
}

/// Starts `berth serve CONFIG` in `dir` and reads its log until it listens (or exits: the
/// default port may be taken on a busy machine); answers the log.
fn serve_until_listening(dir: &Path, config: &Path) -> (Killed, Vec<String>) {
    let mut child = Command::new(env!("CARGO_BIN_EXE_berth"))
        .arg("serve")
        .arg(config)
        .current_dir(dir)
        .env_remove("RUST_LOG")
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .expect("berth starts");
    let stderr = child.stderr.take().unwrap();
    let child = Killed(child);
    let mut lines = Vec::new();
    for line in BufReader::new(stderr).lines() {
        let line = line.unwrap();
        let done = line.contains("listening on http");
        lines.push(line);
        if done {
            break;
        }
    }
    (child, lines)
}

#[test]
fn a_hand_written_file_with_typos_is_refused_naming_each_with_its_suggestion() {
    let dir = tempfile::tempdir().unwrap();
    let config = dir.path().join("config.yml");
    // The keys a new user gets wrong: berth must neither fall back to other values than the
    // README's nor serve plain HTTP where `tls` was misspelt.
    std::fs::write(
        &config,
        "version: 0.1\nhttp:\n  adress: 0.0.0.0:5000\n  tsl:\n    certificate: /c.crt\n    \
         key: /c.key\nstorage:\n  filesystem:\n    rootdir: /srv/registry\n  delete:\n    \
         enabeld: true\n",
    )
    .unwrap();
    let out = Command::new(env!("CARGO_BIN_EXE_berth"))
        .arg("serve")
        .arg(&config)
        .current_dir(dir.path())
        .output()
        .unwrap();
    let text = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(2), "{text}");
    for expected in [
        "configuration refused (fix or remove these keys):",
        "`adress`: unknown key under `http`; did you mean `addr`?",
        "`tsl`: unknown key under `http`; did you mean `tls`?",
        "`rootdir`: unknown key under `storage.filesystem`; did you mean `rootdirectory`?",
        "`enabeld`: unknown key under `storage.delete`; did you mean `enabled`?",
    ] {
        assert!(text.contains(expected), "{expected:?} not in:\n{text}");
    }
}

#[test]
fn a_hand_written_file_gets_the_documented_defaults_and_hears_of_what_is_ignored() {
    let dir = tempfile::tempdir().unwrap();
    let config = dir.path().join("config.yml");
    std::fs::write(
        &config,
        "version: 0.1\nhttp:\n  secret: not-needed\n  # addr: 0.0.0.0:5000\nstorage:\n  \
         delete:\nmycompany:\n  owner: ops\n",
    )
    .unwrap();
    let (_berth, log) = serve_until_listening(dir.path(), &config);
    let text = log.join("\n");
    for expected in [
        "`http.secret` is not implemented by berth and is ignored",
        "`mycompany`: unknown key at the top level, ignored",
    ] {
        assert!(text.contains(expected), "{expected:?} not in:\n{text}");
    }
    // The documented address (or the port is taken on a busy machine: the same proof).
    assert!(
        text.contains("listening on http://127.0.0.1:5000")
            || text.contains("cannot listen on 127.0.0.1:5000"),
        "{text}"
    );
    assert!(
        text.contains(&format!(
            "LocalFileSystem(file://{}/data)",
            dir.path().canonicalize().unwrap().display()
        )),
        "storage under ./data: {text}"
    );
}

#[test]
fn configured_headers_are_on_every_response() {
    let dir = tempfile::tempdir().unwrap();
    let config = dir.path().join("config.yml");
    std::fs::write(
        &config,
        "version: 0.1\nstorage:\n  inmemory:\nhttp:\n  headers:\n    \
         X-Content-Type-Options: [nosniff]\n    Content-Security-Policy: [\"default-src 'none'\"]\n",
    )
    .unwrap();
    let registry = TestRegistry::builder()
        .config_file(&config)
        .env("REGISTRY_STORAGE", "inmemory")
        .start();
    let c = reqwest::blocking::Client::new();
    for (path, status) in [
        ("/v2/", 200),
        ("/v2/nothing/here/manifests/latest", 404),
        ("/elsewhere", 404),
    ] {
        let r = c.get(format!("{}{path}", registry.url)).send().unwrap();
        assert_eq!(r.status(), status, "{path}");
        assert_eq!(r.headers()["x-content-type-options"], "nosniff", "{path}");
        assert_eq!(
            r.headers()["content-security-policy"],
            "default-src 'none'",
            "{path}"
        );
        assert_eq!(
            r.headers()["docker-distribution-api-version"],
            "registry/2.0",
            "{path}"
        );
    }
}

/// nginx on `port` forwarding clients' `/v2/` to berth's `/registry/v2/`, and `/registry/`
/// (where berth's `Location` headers point) as it is: a proxy serving berth under a path.
fn start_prefix_proxy(dir: &Path, port: u16, berth: &str) -> Killed {
    let prefix = dir.join("nginx");
    std::fs::create_dir_all(prefix.join("logs")).unwrap();
    let conf = prefix.join("nginx.conf");
    std::fs::write(
        &conf,
        format!(
            "worker_processes 1;\npid {pid};\nerror_log {prefix}/logs/error.log;\n\
             events {{}}\nhttp {{\n  access_log off;\n  client_max_body_size 0;\n  \
             proxy_request_buffering off;\n  proxy_buffering off;\n  \
             client_body_temp_path {prefix}/body;\n  proxy_temp_path {prefix}/proxy;\n  \
             server {{\n    listen 127.0.0.1:{port};\n    \
             proxy_set_header Host $http_host;\n    \
             proxy_set_header X-Forwarded-Proto $scheme;\n    \
             location /v2/ {{ proxy_pass http://{berth}/registry/v2/; }}\n    \
             location /registry/ {{ proxy_pass http://{berth}; }}\n  }}\n}}\n",
            pid = prefix.join("nginx.pid").display(),
            prefix = prefix.display(),
        ),
    )
    .unwrap();
    let child = Command::new(nginx_binary())
        .arg("-p")
        .arg(&prefix)
        .arg("-c")
        .arg(&conf)
        .args(["-g", "daemon off;"])
        .stderr(std::fs::File::create(dir.join("nginx.log")).unwrap())
        .spawn()
        .expect("nginx starts");
    let deadline = Instant::now() + Duration::from_secs(10);
    while std::net::TcpStream::connect(("127.0.0.1", port)).is_err() {
        assert!(Instant::now() < deadline, "nginx did not listen on {port}");
        std::thread::sleep(Duration::from_millis(50));
    }
    Killed(child)
}

#[test]
fn a_prefix_serves_the_api_under_its_path_for_docker_and_skopeo() {
    require("docker");
    let dir = tempfile::tempdir().unwrap();
    let berth = TestRegistry::builder()
        .env("REGISTRY_HTTP_PREFIX", "/registry/")
        .start();
    let c = reqwest::blocking::Client::new();
    let status = |url: String| c.get(url).send().unwrap().status().as_u16();
    assert_eq!(status(format!("{}/registry/v2/", berth.url)), 200);
    assert_eq!(
        status(format!("{}/v2/", berth.url)),
        404,
        "outside the prefix"
    );
    assert_eq!(status(format!("{}/registryv2/", berth.url)), 404);

    let port = free_port();
    let _nginx = start_prefix_proxy(dir.path(), port, &berth.host);
    let proxy = format!("127.0.0.1:{port}");
    let tools = Tools::new(dir.path());

    // skopeo: push and pull back through the proxy.
    run(tools.skopeo().args([
        "copy",
        "-q",
        "--dest-tls-verify=false",
        &format!("oci:{}:amd64", fixture_layout().display()),
        &format!("docker://{proxy}/prefixed/hello:v1"),
    ]));
    let out = dir.path().join("out");
    run(tools.skopeo().args([
        "copy",
        "-q",
        "--src-tls-verify=false",
        &format!("docker://{proxy}/prefixed/hello:v1"),
        &format!("oci:{}:v1", out.display()),
    ]));
    // berth's upload Locations carried the prefix (skopeo followed them through /registry/).
    let tags: serde_json::Value = c
        .get(format!(
            "{}/registry/v2/prefixed/hello/tags/list",
            berth.url
        ))
        .send()
        .unwrap()
        .json()
        .unwrap();
    assert_eq!(tags["tags"], serde_json::json!(["v1"]));

    // docker: push, remove, pull through the proxy.
    let local = format!("berth-e2e-prefix:{}", unique("t"));
    let remote = format!("{proxy}/prefixed/docker:v1");
    let _images = DockerImages {
        refs: vec![local.clone(), remote.clone()],
    };
    docker_load_fixture(&tools, dir.path(), &local);
    run(tools.docker().args(["tag", &local, &remote]));
    let pushed = docker_push(&tools, None, &remote);
    assert!(pushed.starts_with("sha256:"), "{pushed}");
    run(tools.docker().args(["rmi", &remote]));
    run(tools.docker().args(["pull", "-q", &remote]));
    let head = c
        .head(format!(
            "{}/registry/v2/prefixed/docker/manifests/v1",
            berth.url
        ))
        .header(
            "Accept",
            "application/vnd.docker.distribution.manifest.v2+json",
        )
        .send()
        .unwrap();
    assert_eq!(head.status(), 200);
    assert_eq!(head.headers()["docker-content-digest"], pushed.as_str());
}
