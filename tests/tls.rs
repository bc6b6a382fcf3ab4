//! HTTPS end to end: certificates made by the real `berth certs`, the real `berth serve` with
//! `http.tls`, and real clients (skopeo, podman, docker, curl, openssl s_client) that verify the
//! certificate against berth's CA. Also mutual TLS (`clientcas`), HTTP/2 over ALPN, old protocol
//! versions refused, and the certificate reloaded on SIGHUP.
//!
//! berth listens on TLS only, so any request that got an answer went over TLS (no client can
//! have fallen back to plain HTTP). A missing tool fails the test (see `common::tools::require`).

mod common;

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

use common::tools::{
    docker_load_fixture, docker_push, fixture_layout, layout_blob, layout_ref, require,
    run_failing, unique, DockerImages, Tools,
};
use common::{run, BerthProcess};

/// `berth certs --out OUT ARGS…`: answers its output.
fn berth_certs(out: &Path, args: &[&str]) -> String {
    run(Command::new(env!("CARGO_BIN_EXE_berth"))
        .arg("certs")
        .arg("--out")
        .arg(out)
        .args(args))
}

/// A directory holding only the CA as `ca.crt` (what `--cert-dir` and certs.d expect), plus the
/// client certificate `name` as `client.cert`/`client.key` when given.
fn trust_dir(dir: &Path, certs: &Path, client: Option<&str>) -> PathBuf {
    let trust = dir.join(format!("trust-{}", client.unwrap_or("none")));
    std::fs::create_dir_all(&trust).unwrap();
    std::fs::copy(certs.join("ca.crt"), trust.join("ca.crt")).unwrap();
    if let Some(name) = client {
        std::fs::copy(certs.join(format!("{name}.crt")), trust.join("client.cert")).unwrap();
        std::fs::copy(certs.join(format!("{name}.key")), trust.join("client.key")).unwrap();
    }
    trust
}

/// A blocking HTTPS client trusting berth's CA, with the client certificate `name` if given.
fn https_client(certs: &Path, client: Option<&str>) -> reqwest::blocking::Client {
    let ca = std::fs::read(certs.join("ca.crt")).unwrap();
    let mut b = reqwest::blocking::Client::builder()
        .redirect(reqwest::redirect::Policy::none())
        .timeout(Duration::from_secs(60))
        .add_root_certificate(reqwest::Certificate::from_pem(&ca).unwrap());
    if let Some(name) = client {
        let mut pem = std::fs::read(certs.join(format!("{name}.crt"))).unwrap();
        pem.extend(std::fs::read(certs.join(format!("{name}.key"))).unwrap());
        b = b.identity(reqwest::Identity::from_pem(&pem).unwrap());
    }
    b.build().unwrap()
}

/// Starts the real berth on local disk under `dir` with `http.tls` from `certs` (and
/// `clientcas: [ca.crt]` when `client` names the certificate to check readiness with), on
/// `addr` (`IP:0`); waits until `GET /v2/` answers 200 over HTTPS.
fn start_tls_berth(dir: &Path, certs: &Path, client: Option<&str>, addr: &str) -> BerthProcess {
    let mut tls = format!(
        "  tls:\n    certificate: {}\n    key: {}\n",
        certs.join("server.crt").display(),
        certs.join("server.key").display()
    );
    if client.is_some() {
        tls.push_str(&format!(
            "    clientcas:\n      - {}\n",
            certs.join("ca.crt").display()
        ));
    }
    let config = dir.join("berth-tls.yml");
    std::fs::write(
        &config,
        format!(
            "version: 0.1\nlog:\n  level: info\n\
             storage:\n  filesystem:\n    rootdirectory: {}\n  delete:\n    enabled: true\n\
             http:\n  addr: {addr}\n{tls}",
            dir.join("storage").display()
        ),
    )
    .unwrap();
    let berth = BerthProcess::start(&config, &[("REGISTRY_HTTP_ADDR", addr)]);
    assert!(
        berth.url.starts_with("https://"),
        "berth logs an https URL: {}",
        berth.url
    );
    let c = https_client(certs, client);
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        match c.get(format!("{}/v2/", berth.url)).send() {
            Ok(r) if r.status() == 200 => return berth,
            other => {
                assert!(Instant::now() < deadline, "berth not ready: {other:?}");
                std::thread::sleep(Duration::from_millis(50));
            }
        }
    }
}

/// `HEAD /v2/<repo>/manifests/<tag>` over HTTPS: the `Docker-Content-Digest`.
fn head_digest(c: &reqwest::blocking::Client, base: &str, repo: &str, tag: &str) -> String {
    let r = c
        .head(format!("{base}/v2/{repo}/manifests/{tag}"))
        .header(
            "Accept",
            "application/vnd.oci.image.manifest.v1+json, application/vnd.oci.image.index.v1+json, \
             application/vnd.docker.distribution.manifest.v2+json",
        )
        .send()
        .unwrap();
    assert_eq!(r.status(), 200, "HEAD {repo}:{tag}");
    r.headers()["docker-content-digest"]
        .to_str()
        .unwrap()
        .to_string()
}

/// The serial number (hex) of the certificate berth presents to `openssl s_client`, without SNI
/// (as a client connecting by IP address), verified against the CA.
fn served_serial(host: &str, ca: &Path) -> String {
    require("openssl");
    let out = run(Command::new("timeout")
        .args([
            "20",
            "openssl",
            "s_client",
            "-connect",
            host,
            "-noservername",
        ])
        .args(["-verify_return_error", "-CAfile"])
        .arg(ca)
        .stdin(std::process::Stdio::null()));
    let cert = openssl::x509::X509::from_pem(out.as_bytes())
        .unwrap_or_else(|e| panic!("no certificate in s_client output ({e}): {out}"));
    cert.serial_number()
        .to_bn()
        .unwrap()
        .to_hex_str()
        .unwrap()
        .to_string()
}

fn file_serial(path: &Path) -> String {
    let cert = openssl::x509::X509::from_pem(&std::fs::read(path).unwrap()).unwrap();
    cert.serial_number()
        .to_bn()
        .unwrap()
        .to_hex_str()
        .unwrap()
        .to_string()
}

/// `curl -sS --cacert CA ARGS… URL`: (succeeded, http version, stderr).
fn curl(ca: &Path, args: &[&str], url: &str) -> (bool, String, String) {
    require("curl");
    let out = Command::new("timeout")
        .args([
            "30",
            "curl",
            "-sS",
            "-o",
            "/dev/null",
            "-w",
            "%{http_version}",
        ])
        .arg("--cacert")
        .arg(ca)
        .args(args)
        .arg(url)
        .output()
        .unwrap();
    (
        out.status.success(),
        String::from_utf8_lossy(&out.stdout).trim().to_string(),
        String::from_utf8_lossy(&out.stderr).to_string(),
    )
}

#[test]
fn skopeo_copies_over_tls_and_verifies_the_certificate() {
    let dir = tempfile::tempdir().unwrap();
    let tools = Tools::new(dir.path());
    let certs = dir.path().join("certs");
    let printed = berth_certs(&certs, &["--domain", "registry.test"]);
    assert!(
        printed.contains("/etc/docker/certs.d/") && printed.contains("REGISTRY_HTTP_TLS_KEY"),
        "{printed}"
    );
    let berth = start_tls_berth(dir.path(), &certs, None, "127.0.0.1:0");
    let h = &berth.host;
    let fixture = fixture_layout();
    let index_digest = layout_ref(&fixture, "multiarch");

    // Without the CA, skopeo refuses the certificate (no fallback to plain HTTP).
    let err = run_failing(tools.skopeo().args([
        "copy",
        "-q",
        &format!("oci:{}:amd64", fixture.display()),
        &format!("docker://{h}/e2e/tls:nope"),
    ]));
    assert!(
        err.contains("certificate"),
        "the error names the certificate: {err}"
    );

    // With the CA in a --cert-dir: in and out, digests preserved.
    let trust = trust_dir(dir.path(), &certs, None);
    run(tools
        .skopeo()
        .args(["copy", "-q", "--all", "--dest-cert-dir"])
        .arg(&trust)
        .arg(format!("oci:{}:multiarch", fixture.display()))
        .arg(format!("docker://{h}/e2e/tls:v1")));
    let c = https_client(&certs, None);
    assert_eq!(head_digest(&c, &berth.url, "e2e/tls", "v1"), index_digest);
    let out = dir.path().join("out");
    run(tools
        .skopeo()
        .args([
            "copy",
            "-q",
            "--all",
            "--preserve-digests",
            "--src-cert-dir",
        ])
        .arg(&trust)
        .arg(format!("docker://{h}/e2e/tls:v1"))
        .arg(format!("oci:{}:v1", out.display())));
    assert_eq!(layout_ref(&out, "v1"), index_digest);
    assert_eq!(
        layout_blob(&out, &index_digest),
        layout_blob(&fixture, &index_digest)
    );

    // Upload locations are https URLs (actix reports the scheme of the TLS connection).
    let r = c
        .post(format!("{}/v2/e2e/tls/blobs/uploads/", berth.url))
        .send()
        .unwrap();
    assert_eq!(r.status(), 202);
    let location = r.headers()["location"].to_str().unwrap();
    assert!(
        location.starts_with(&format!("https://{h}/")),
        "Location {location}"
    );
}

#[test]
fn podman_pushes_and_pulls_over_tls() {
    let dir = tempfile::tempdir().unwrap();
    let tools = Tools::new(dir.path());
    let certs = dir.path().join("certs");
    berth_certs(&certs, &["--domain", "registry.test"]);
    let berth = start_tls_berth(dir.path(), &certs, None, "127.0.0.1:0");
    let h = &berth.host;
    let fixture = fixture_layout();
    let amd64 = layout_ref(&fixture, "amd64");
    let trust = trust_dir(dir.path(), &certs, None);
    run(tools
        .skopeo()
        .args(["copy", "-q", "--dest-cert-dir"])
        .arg(&trust)
        .arg(format!("oci:{}:amd64", fixture.display()))
        .arg(format!("docker://{h}/e2e/podman-tls-src:v1")));

    let pm = dir.path().join("podman");
    let podman = || tools.podman(&pm);
    let src = format!("{h}/e2e/podman-tls-src:v1");
    let dst = format!("{h}/e2e/podman-tls-dst:v1");

    // Without the CA podman refuses; with --cert-dir it pulls the fixture's manifest.
    let err = run_failing(podman().args(["pull", "-q", &src]));
    assert!(err.contains("certificate"), "{err}");
    run(podman()
        .args(["pull", "-q", "--cert-dir"])
        .arg(&trust)
        .arg(&src));
    let pulled = run(podman().args(["image", "inspect", "--format", "{{.Digest}}", &src]));
    assert_eq!(pulled.trim(), amd64);

    let digestfile = pm.join("pushed-digest");
    run(podman()
        .args(["push", "-q", "--cert-dir"])
        .arg(&trust)
        .arg("--digestfile")
        .arg(&digestfile)
        .args([&src, &dst]));
    let pushed = std::fs::read_to_string(&digestfile).unwrap();
    let c = https_client(&certs, None);
    assert_eq!(
        head_digest(&c, &berth.url, "e2e/podman-tls-dst", "v1"),
        pushed.trim()
    );

    run(podman().args(["rmi", "-f", &src]));
    run(podman()
        .args(["pull", "-q", "--cert-dir"])
        .arg(&trust)
        .arg(&dst));
    let digest = run(podman().args(["image", "inspect", "--format", "{{.Digest}}", &dst]));
    assert_eq!(digest.trim(), pushed.trim());
}

/// The Docker engine over HTTPS. Tests may only use loopback addresses, and the engine treats
/// 127.0.0.0/8 as an insecure registry: it speaks TLS there (berth offers nothing else) but skips
/// certificate verification and ignores `/etc/docker/certs.d`. So this shows docker pushing
/// and pulling through berth's TLS; checking the CA is what the skopeo, podman and curl tests do.
#[test]
fn docker_pushes_and_pulls_over_tls() {
    require("docker");
    let dir = tempfile::tempdir().unwrap();
    let tools = Tools::new(dir.path());
    let certs = dir.path().join("certs");
    berth_certs(&certs, &["--domain", "registry.test"]);
    let berth = start_tls_berth(dir.path(), &certs, None, "127.0.0.1:0");
    let h = &berth.host;
    let repo = "e2e/docker-tls";
    let tag = unique("t");
    let local = format!("berth-e2e-tls:{tag}");
    let remote = format!("{h}/{repo}:{tag}");
    let _images = DockerImages {
        refs: vec![local.clone(), remote.clone()],
    };
    docker_load_fixture(&tools, dir.path(), &local);
    run(tools.docker().args(["tag", &local, &remote]));
    let pushed = docker_push(&tools, None, &remote);
    let c = https_client(&certs, None);
    assert_eq!(head_digest(&c, &berth.url, repo, &tag), pushed);

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
}

#[test]
fn mutual_tls_refuses_clients_without_a_certificate() {
    let dir = tempfile::tempdir().unwrap();
    let tools = Tools::new(dir.path());
    let certs = dir.path().join("certs");
    let printed = berth_certs(&certs, &["--domain", "registry.test", "--client", "ci"]);
    assert!(printed.contains("client.cert"), "{printed}");
    let berth = start_tls_berth(dir.path(), &certs, Some("ci"), "127.0.0.1:0");
    let h = &berth.host;
    let ca = certs.join("ca.crt");
    let url = format!("{}/v2/", berth.url);

    // curl: refused in the handshake without a certificate, 200 with the CA-signed one.
    let (ok, _, err) = curl(&ca, &[], &url);
    assert!(!ok, "no client certificate, yet: {err}");
    let cert = certs.join("ci.crt");
    let key = certs.join("ci.key");
    let (ok, _, err) = curl(
        &ca,
        &[
            "--cert",
            cert.to_str().unwrap(),
            "--key",
            key.to_str().unwrap(),
            "--fail",
        ],
        &url,
    );
    assert!(ok, "with the client certificate: {err}");

    // A certificate from another CA is refused too.
    let other = dir.path().join("other");
    berth_certs(&other, &["--client", "ci"]);
    let (ok, _, err) = curl(
        &ca,
        &[
            "--cert",
            other.join("ci.crt").to_str().unwrap(),
            "--key",
            other.join("ci.key").to_str().unwrap(),
        ],
        &url,
    );
    assert!(!ok, "foreign client certificate accepted: {err}");

    // reqwest (rustls): the same.
    let r = https_client(&certs, None).get(&url).send();
    assert!(r.is_err(), "no client certificate: {r:?}");
    let r = https_client(&certs, Some("ci")).get(&url).send().unwrap();
    assert_eq!(r.status(), 200);

    // skopeo with the pair as client.cert/client.key in its cert dir (docker's certs.d naming).
    let fixture = fixture_layout();
    let src = format!("oci:{}:amd64", fixture.display());
    let dest = format!("docker://{h}/e2e/mtls:v1");
    let without = trust_dir(dir.path(), &certs, None);
    run_failing(
        tools
            .skopeo()
            .args(["copy", "-q", "--dest-cert-dir"])
            .arg(&without)
            .args([&src, &dest]),
    );
    let with = trust_dir(dir.path(), &certs, Some("ci"));
    run(tools
        .skopeo()
        .args(["copy", "-q", "--dest-cert-dir"])
        .arg(&with)
        .args([&src, &dest]));
    let c = https_client(&certs, Some("ci"));
    assert_eq!(
        head_digest(&c, &berth.url, "e2e/mtls", "v1"),
        layout_ref(&fixture, "amd64")
    );
}

#[test]
fn http2_and_http1_are_negotiated_over_alpn() {
    let dir = tempfile::tempdir().unwrap();
    let certs = dir.path().join("certs");
    berth_certs(&certs, &["--domain", "registry.test"]);
    let berth = start_tls_berth(dir.path(), &certs, None, "127.0.0.1:0");
    let ca = certs.join("ca.crt");
    let url = format!("{}/v2/", berth.url);
    let (ok, version, err) = curl(&ca, &["--http2", "--fail"], &url);
    assert!(ok, "{err}");
    assert_eq!(version, "2", "curl --http2 negotiates HTTP/2");
    let (ok, version, err) = curl(&ca, &["--http1.1", "--fail"], &url);
    assert!(ok, "{err}");
    assert_eq!(version, "1.1");
    // By name (SNI sent), the name being one of the certificate's.
    let port = berth.host.rsplit(':').next().unwrap();
    let (ok, version, err) = curl(
        &ca,
        &[
            "--http2",
            "--fail",
            "--resolve",
            &format!("registry.test:{port}:127.0.0.1"),
        ],
        &format!("https://registry.test:{port}/v2/"),
    );
    assert!(ok, "{err}");
    assert_eq!(version, "2");
}

#[test]
fn sighup_reloads_the_certificate_and_old_protocols_are_refused() {
    let dir = tempfile::tempdir().unwrap();
    let certs = dir.path().join("certs");
    berth_certs(&certs, &["--domain", "registry.test"]);
    let first = file_serial(&certs.join("server.crt"));
    let berth = start_tls_berth(dir.path(), &certs, None, "127.0.0.1:0");
    let h = &berth.host;
    let ca = certs.join("ca.crt");
    assert_eq!(served_serial(h, &ca), first);

    // TLS 1.0 and 1.1 are refused by the server (the client is allowed them: SECLEVEL=0).
    for old in ["-tls1", "-tls1_1"] {
        let out = run_failing(
            Command::new("timeout")
                .args(["20", "openssl", "s_client", "-connect", h, old])
                .args(["-cipher", "DEFAULT@SECLEVEL=0"])
                .stdin(std::process::Stdio::null()),
        );
        assert!(
            out.contains("alert protocol version") && !out.contains("BEGIN CERTIFICATE"),
            "{old}: berth should refuse the version: {out}"
        );
    }

    // A new certificate from the same CA, then SIGHUP: new connections get it.
    let printed = berth_certs(&certs, &["--domain", "registry.test"]);
    assert!(printed.contains("Reused the CA"), "{printed}");
    let second = file_serial(&certs.join("server.crt"));
    assert_ne!(first, second);
    let hup = || assert_eq!(unsafe { libc::kill(berth.pid() as i32, libc::SIGHUP) }, 0);
    hup();
    let deadline = Instant::now() + Duration::from_secs(10);
    while served_serial(h, &ca) != second {
        assert!(
            Instant::now() < deadline,
            "the certificate was not reloaded"
        );
        std::thread::sleep(Duration::from_millis(100));
    }
    // HTTP/2 still negotiated on the reloaded context.
    let (ok, version, err) = curl(&ca, &["--http2", "--fail"], &format!("{}/v2/", berth.url));
    assert!(ok && version == "2", "{version} {err}");

    // A broken key: the reload fails, the previous certificate stays, berth keeps serving.
    std::fs::write(certs.join("server.key"), b"not a key\n").unwrap();
    hup();
    std::thread::sleep(Duration::from_millis(500));
    assert_eq!(served_serial(h, &ca), second);
    let r = https_client(&certs, None)
        .get(format!("{}/v2/", berth.url))
        .send()
        .unwrap();
    assert_eq!(r.status(), 200);
}

/// Two findings of the review of the hand-built HTTPS listener, against the real binary: a
/// connection that sends nothing is closed by berth rather than held, and SIGTERM closes a
/// kept-alive connection still sending requests instead of serving it until the drain
/// (`http.draintimeout`, 30 s) ends.
#[test]
fn silent_sockets_are_closed_and_sigterm_ends_kept_alive_tls_connections() {
    use std::io::Read;
    let dir = tempfile::tempdir().unwrap();
    let certs = dir.path().join("certs");
    berth_certs(&certs, &["--domain", "registry.test"]);
    let mut berth = start_tls_berth(dir.path(), &certs, None, "127.0.0.1:0");

    let mut silent = std::net::TcpStream::connect(&berth.host).unwrap();
    silent
        .set_read_timeout(Some(Duration::from_secs(20)))
        .unwrap();
    let mut byte = [0u8; 1];
    match silent.read(&mut byte) {
        Ok(0) => {}
        Err(e) if e.kind() == std::io::ErrorKind::ConnectionReset => {}
        other => panic!("a silent connection should be closed by berth: {other:?}"),
    }

    // One HTTP/1.1 connection, kept alive, a request every 200 ms until it is refused.
    let client = https_client(&certs, None);
    let url = format!("{}/v2/", berth.url);
    assert_eq!(client.get(&url).send().unwrap().status(), 200);
    let requests = std::thread::spawn(move || {
        let until = Instant::now() + Duration::from_secs(40);
        while Instant::now() < until {
            if client.get(&url).send().is_err() {
                return;
            }
            std::thread::sleep(Duration::from_millis(200));
        }
    });
    std::thread::sleep(Duration::from_millis(500));
    unsafe {
        libc::kill(berth.pid() as libc::pid_t, libc::SIGTERM);
    }
    let status = berth
        .wait_exit(Duration::from_secs(20))
        .expect("berth exits before the 30 s drain ends: the kept-alive connection was closed");
    assert!(status.success(), "{status:?}");
    requests.join().unwrap();
}

#[test]
fn in_process_registry_serves_https_from_the_environment() {
    let dir = tempfile::tempdir().unwrap();
    let certs = dir.path().join("certs");
    berth_certs(&certs, &["--domain", "registry.test"]);
    let reg = common::TestRegistry::builder()
        .env(
            "REGISTRY_HTTP_TLS_CERTIFICATE",
            certs.join("server.crt").to_str().unwrap(),
        )
        .env(
            "REGISTRY_HTTP_TLS_KEY",
            certs.join("server.key").to_str().unwrap(),
        )
        .start();
    assert!(reg.url.starts_with("https://"), "{}", reg.url);
    let c = https_client(&certs, None);
    assert_eq!(c.get(reg.url("/v2/")).send().unwrap().status(), 200);
    let r = c.post(reg.url("/v2/a/blobs/uploads/")).send().unwrap();
    assert_eq!(r.status(), 202);
    let location = r.headers()["location"].to_str().unwrap();
    assert!(location.starts_with(&reg.url), "Location {location}");
    // Plain HTTP on the TLS port: a 400 in the spec's error format saying why, as distribution
    // answers (not a reset), for a plain GET and a push's POST alike; TLS still works after.
    let plain = reg.url.replacen("https://", "http://", 1);
    for (method, path) in [
        (reqwest::Method::GET, "/v2/"),
        (reqwest::Method::POST, "/v2/a/blobs/uploads/"),
    ] {
        let r = common::client()
            .request(method.clone(), format!("{plain}{path}"))
            .send()
            .unwrap_or_else(|e| panic!("{method} {path}: no answer: {e}"));
        assert_eq!(r.status(), 400, "{method} {path}");
        let body: serde_json::Value = r.json().unwrap();
        let message = body["errors"][0]["message"].as_str().unwrap();
        assert!(
            message.contains("Client sent an HTTP request to an HTTPS server"),
            "{message}"
        );
    }
    assert_eq!(c.get(reg.url("/v2/")).send().unwrap().status(), 200);
}
