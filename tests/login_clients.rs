//! Real clients logging in: `docker login` / push / pull with the machine's Docker engine
//! (htpasswd, and berth's own token server), `podman login` and `skopeo login` over HTTPS with
//! a CA made by `berth certs`, and the refusals a user sees (wrong password, no login, a push
//! the access rules do not allow).

mod common;

use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

use common::tools::{
    docker_load_fixture, docker_push, fixture_layout, require, run_failing, unique, DockerImages,
    Tools,
};
use common::{run, BerthProcess};

const RULES: &str = "  access:
    - account: alice
      repositories: ['team-a/*']
      actions: [push]
    - account: ci
      repositories: ['*']
      actions: [pull]
";

/// An htpasswd file for alice and ci (made with `berth htpasswd`, as a user would).
fn users(dir: &Path) -> PathBuf {
    let file = dir.join("htpasswd");
    for (user, password) in [("alice", "alice-pw"), ("ci", "ci-pw")] {
        let mut child = Command::new(env!("CARGO_BIN_EXE_berth"))
            .args(["htpasswd", "--cost", "5"])
            .arg(&file)
            .arg(user)
            .stdin(Stdio::piped())
            .stderr(Stdio::null())
            .spawn()
            .unwrap();
        writeln!(child.stdin.take().unwrap(), "{password}").unwrap();
        assert!(child.wait().unwrap().success());
    }
    file
}

/// Starts the real berth on local disk with `auth` (YAML under `auth:`) and optional `tls`
/// (YAML under `http:`), on `addr`.
fn start_berth(dir: &Path, auth: &str, tls: &str, addr: &str) -> BerthProcess {
    let config = dir.join("berth.yml");
    std::fs::write(
        &config,
        format!(
            "version: 0.1\nlog:\n  level: info\nstorage:\n  filesystem:\n    rootdirectory: {}\n\
             http:\n  addr: {addr}\n{tls}auth:\n{auth}",
            dir.join("storage").display()
        ),
    )
    .unwrap();
    BerthProcess::start(&config, &[("REGISTRY_HTTP_ADDR", addr)])
}

/// Runs `cmd` with `input` on standard input; answers (success, stdout + stderr).
fn run_with_input(cmd: &mut Command, input: &str) -> (bool, String) {
    let mut child = cmd
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap_or_else(|e| panic!("cannot run {cmd:?}: {e}"));
    writeln!(child.stdin.take().unwrap(), "{input}").unwrap();
    let out = child.wait_with_output().unwrap();
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    (out.status.success(), text)
}

/// `docker --config DIR …`: credentials kept in this test's own client configuration.
fn docker(tools: &Tools, config: &Path) -> Command {
    let mut cmd = tools.docker();
    cmd.arg("--config").arg(config);
    cmd
}

/// Pushes `local` as `remote` and pulls it back after removing it; answers the pushed digest.
fn docker_round_trip(tools: &Tools, config: &Path, local: &str, remote: &str) -> String {
    run(tools.docker().args(["tag", local, remote]));
    let digest = docker_push(tools, Some(config), remote);
    run(tools.docker().args(["rmi", remote]));
    run(docker(tools, config).args(["pull", "-q", remote]));
    let digests = run(tools.docker().args([
        "image",
        "inspect",
        "--format",
        "{{range .RepoDigests}}{{println .}}{{end}}",
        remote,
    ]));
    let repo = remote.rsplit_once(':').unwrap().0;
    assert!(
        digests
            .lines()
            .any(|l| l.trim() == format!("{repo}@{digest}")),
        "pulled {remote}: RepoDigests {digests:?} lack {digest}"
    );
    digest
}

#[test]
fn docker_logs_in_pushes_and_pulls_with_htpasswd_and_access_rules() {
    require("docker");
    let dir = tempfile::tempdir().unwrap();
    let tools = Tools::new(dir.path());
    let htpasswd = users(dir.path());
    let auth = format!(
        "  htpasswd:\n    realm: berth\n    path: {}\n{RULES}",
        htpasswd.display()
    );
    let berth = start_berth(dir.path(), &auth, "", "127.0.0.1:0");
    let h = &berth.host;
    let local = format!("berth-e2e-login:{}", unique("t"));
    let remote = format!("{h}/team-a/login:v1");
    let outside = format!("{h}/team-b/login:v1");
    let _images = DockerImages {
        refs: vec![local.clone(), remote.clone(), outside.clone()],
    };
    docker_load_fixture(&tools, dir.path(), &local);
    let alice = dir.path().join("docker-alice");
    let ci = dir.path().join("docker-ci");

    // Without a login, a push is refused.
    run(tools.docker().args(["tag", &local, &remote]));
    let err = run_failing(docker(&tools, &alice).args(["push", &remote]));
    assert!(
        err.contains("no basic auth credentials") || err.contains("unauthorized"),
        "{err}"
    );
    // A wrong password does not log in.
    let (ok, out) = run_with_input(
        docker(&tools, &alice).args(["login", h, "-u", "alice", "--password-stdin"]),
        "not-her-password",
    );
    assert!(!ok && out.to_lowercase().contains("unauthorized"), "{out}");
    let (ok, out) = run_with_input(
        docker(&tools, &alice).args(["login", h, "-u", "alice", "--password-stdin"]),
        "alice-pw",
    );
    assert!(ok && out.contains("Login Succeeded"), "{out}");

    // alice pushes under team-a/ and pulls back what she pushed.
    docker_round_trip(&tools, &alice, &local, &remote);
    // Outside her prefix: denied.
    run(tools.docker().args(["tag", &local, &outside]));
    let err = run_failing(docker(&tools, &alice).args(["push", &outside]));
    assert!(err.contains("denied"), "{err}");

    // The CI puller logs in, pulls, and cannot push.
    let (ok, out) = run_with_input(
        docker(&tools, &ci).args(["login", h, "-u", "ci", "--password-stdin"]),
        "ci-pw",
    );
    assert!(ok, "{out}");
    run(tools.docker().args(["rmi", &remote]));
    run(docker(&tools, &ci).args(["pull", "-q", &remote]));
    let err = run_failing(docker(&tools, &ci).args(["push", &remote]));
    assert!(err.contains("denied"), "{err}");
    // After logout, pulls need a login again.
    run(docker(&tools, &ci).args(["logout", h]));
    run(tools.docker().args(["rmi", &remote]));
    let err = run_failing(docker(&tools, &ci).args(["pull", &remote]));
    assert!(
        err.contains("no basic auth credentials") || err.contains("unauthorized"),
        "{err}"
    );
}

#[test]
fn docker_logs_in_through_berths_token_server() {
    require("docker");
    let dir = tempfile::tempdir().unwrap();
    let tools = Tools::new(dir.path());
    let htpasswd = users(dir.path());
    let key = openssl::ec::EcKey::generate(
        &openssl::ec::EcGroup::from_curve_name(openssl::nid::Nid::X9_62_PRIME256V1).unwrap(),
    )
    .unwrap();
    std::fs::write(
        dir.path().join("token.key"),
        key.private_key_to_pem().unwrap(),
    )
    .unwrap();
    let port = common::free_port();
    let h = format!("127.0.0.1:{port}");
    let auth = format!(
        "  htpasswd:\n    path: {}\n  token:\n    realm: http://{h}/token\n    service: berth-e2e\n    issuer: berth-e2e\n    signingkey: {}\n{RULES}",
        htpasswd.display(),
        dir.path().join("token.key").display()
    );
    let _berth = start_berth(dir.path(), &auth, "", &h);
    let local = format!("berth-e2e-token:{}", unique("t"));
    let remote = format!("{h}/team-a/token:v1");
    let _images = DockerImages {
        refs: vec![local.clone(), remote.clone()],
    };
    docker_load_fixture(&tools, dir.path(), &local);
    let alice = dir.path().join("docker-alice");
    let (ok, out) = run_with_input(
        docker(&tools, &alice).args(["login", &h, "-u", "alice", "--password-stdin"]),
        "wrong",
    );
    assert!(!ok, "{out}");
    let (ok, out) = run_with_input(
        docker(&tools, &alice).args(["login", &h, "-u", "alice", "--password-stdin"]),
        "alice-pw",
    );
    assert!(ok && out.contains("Login Succeeded"), "{out}");
    docker_round_trip(&tools, &alice, &local, &remote);
}

#[test]
fn podman_and_skopeo_log_in_over_https_with_a_ca_from_berth_certs() {
    require("podman");
    let dir = tempfile::tempdir().unwrap();
    let tools = Tools::new(dir.path());
    let certs = dir.path().join("certs");
    run(Command::new(env!("CARGO_BIN_EXE_berth"))
        .args(["certs", "--domain", "registry.test", "--out"])
        .arg(&certs));
    let trust = dir.path().join("trust");
    std::fs::create_dir_all(&trust).unwrap();
    std::fs::copy(certs.join("ca.crt"), trust.join("ca.crt")).unwrap();
    let htpasswd = users(dir.path());
    let auth = format!(
        "  htpasswd:\n    realm: berth\n    path: {}\n{RULES}",
        htpasswd.display()
    );
    let tls = format!(
        "  tls:\n    certificate: {}\n    key: {}\n",
        certs.join("server.crt").display(),
        certs.join("server.key").display()
    );
    let berth = start_berth(dir.path(), &auth, &tls, "127.0.0.1:0");
    assert!(berth.url.starts_with("https://"), "{}", berth.url);
    let h = &berth.host;
    let authfile = dir.path().join("auth.json");
    let cert_dir = trust.to_str().unwrap();

    // skopeo: a wrong password is refused; the right one logs in, and the copy uses it.
    let (ok, out) = run_with_input(
        tools
            .skopeo()
            .args(["login", "--cert-dir", cert_dir, "--authfile"])
            .arg(&authfile)
            .args(["-u", "alice", "--password-stdin", h]),
        "wrong",
    );
    assert!(!ok, "{out}");
    let (ok, out) = run_with_input(
        tools
            .skopeo()
            .args(["login", "--cert-dir", cert_dir, "--authfile"])
            .arg(&authfile)
            .args(["-u", "alice", "--password-stdin", h]),
        "alice-pw",
    );
    assert!(ok && out.contains("Login Succeeded"), "{out}");
    run(tools
        .skopeo()
        .args(["copy", "-q", "--dest-cert-dir", cert_dir, "--authfile"])
        .arg(&authfile)
        .arg(format!("oci:{}:amd64", fixture_layout().display()))
        .arg(format!("docker://{h}/team-a/podman:v1")));

    // podman logs in as ci (its own auth file) and pulls; pushing is denied to ci.
    let ci_auth = dir.path().join("ci-auth.json");
    let pm = dir.path().join("podman");
    let podman = || tools.podman(&pm);
    let (ok, out) = run_with_input(
        podman()
            .args(["login", "--cert-dir", cert_dir, "--authfile"])
            .arg(&ci_auth)
            .args(["-u", "ci", "--password-stdin", h]),
        "ci-pw",
    );
    assert!(ok && out.contains("Login Succeeded"), "{out}");
    let image = format!("{h}/team-a/podman:v1");
    run(podman()
        .args(["pull", "-q", "--cert-dir", cert_dir, "--authfile"])
        .arg(&ci_auth)
        .arg(&image));
    let err = run_failing(
        podman()
            .args(["push", "--cert-dir", cert_dir, "--authfile"])
            .arg(&ci_auth)
            .arg(&image)
            .arg(format!("docker://{h}/team-a/podman:v2")),
    );
    assert!(err.contains("denied") || err.contains("403"), "{err}");
    // Without any login podman cannot pull.
    std::fs::write(dir.path().join("none.json"), "{}").unwrap();
    let err = run_failing(
        podman()
            .args(["pull", "--cert-dir", cert_dir, "--authfile"])
            .arg(dir.path().join("none.json"))
            .arg(format!("{h}/team-a/podman:v1")),
    );
    assert!(
        err.contains("unauthorized") || err.contains("authentication required"),
        "{err}"
    );
}
