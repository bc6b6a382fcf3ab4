//! Driving real client tools (skopeo, podman, docker, python) from tests: a time limit on every
//! command, and a private containers blob-info cache for skopeo and podman.
//!
//! skopeo and podman running as root share one blob-info cache
//! (`/var/lib/containers/cache/blob-info-cache-v1.boltdb`, keyed by registry host:port), which
//! makes their requests depend on earlier runs (e.g. cross-repository mount attempts). Each test
//! therefore runs them in a private mount namespace with its own cache directory bind-mounted
//! there (see [`Tools`]). Also the fixture OCI layout's accessors and small helpers the
//! end-to-end test files share.

use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::OnceLock;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use serde_json::Value;

use super::{client, fixtures};

/// Upper bound for any one client command.
pub const COMMAND_TIMEOUT_SECS: u32 = 120;

/// Fails the test unless `name` is an executable on PATH.
pub fn require(name: &str) {
    use std::os::unix::fs::PermissionsExt as _;
    let path = std::env::var_os("PATH").unwrap_or_default();
    let found = std::env::split_paths(&path).any(|dir| {
        std::fs::metadata(dir.join(name))
            .map(|m| m.is_file() && m.permissions().mode() & 0o111 != 0)
            .unwrap_or(false)
    });
    assert!(
        found,
        "required tool `{name}` is not on PATH; install it as .ci/run does \
         (apt-get install -y skopeo podman docker-registry; python3 -m pip install oras)"
    );
}

/// Debian's nginx (in /usr/sbin, which a non-login PATH may lack).
pub fn nginx_binary() -> PathBuf {
    for candidate in ["/usr/sbin/nginx", "/usr/bin/nginx"] {
        if Path::new(candidate).exists() {
            return PathBuf::from(candidate);
        }
    }
    require("nginx");
    PathBuf::from("nginx")
}

/// Whether this process runs as root.
pub fn is_root() -> bool {
    use std::os::unix::fs::MetadataExt as _;
    std::fs::metadata("/proc/self")
        .map(|m| m.uid() == 0)
        .unwrap_or(false)
}

pub const SYSTEM_BLOB_INFO_CACHE: &str = "/var/lib/containers/cache";

/// Runs `"$@"` with `$BERTH_E2E_CACHE` bind-mounted over the system blob-info cache directory.
pub const PRIVATE_CACHE_SCRIPT: &str = r#"mkdir -p /var/lib/containers/cache
mount --bind "$BERTH_E2E_CACHE" /var/lib/containers/cache
exec "$@""#;

/// Whether `unshare --mount` with a bind mount works here (root with CAP_SYS_ADMIN).
pub fn private_mounts_work() -> bool {
    static OK: OnceLock<bool> = OnceLock::new();
    *OK.get_or_init(|| {
        if !is_root() {
            return false;
        }
        let dir = tempfile::tempdir().unwrap();
        let ok = Command::new("unshare")
            .args([
                "--mount",
                "--",
                "sh",
                "-ec",
                PRIVATE_CACHE_SCRIPT,
                "sh",
                "true",
            ])
            .env("BERTH_E2E_CACHE", dir.path())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .status()
            .map(|s| s.success())
            .unwrap_or(false);
        if !ok {
            eprintln!(
                "note: cannot bind-mount a private blob-info cache (unshare --mount failed); \
                 skopeo/podman share {SYSTEM_BLOB_INFO_CACHE}"
            );
        }
        ok
    })
}

/// Builds client commands for one test: a time limit on every command, and a private
/// containers blob-info cache for skopeo and podman.
pub struct Tools {
    pub cache: PathBuf,
}

impl Tools {
    pub fn new(dir: &Path) -> Tools {
        let cache = dir.join("blob-info-cache");
        std::fs::create_dir_all(&cache).unwrap();
        Tools { cache }
    }

    /// `program args…` under a time limit.
    pub fn cmd(&self, program: &str) -> Command {
        require(program);
        let mut cmd = Command::new("timeout");
        cmd.args(["-k", "5", &COMMAND_TIMEOUT_SECS.to_string(), program]);
        cmd
    }

    /// A skopeo/podman command using this test's blob-info cache.
    pub fn containers_cmd(&self, program: &str) -> Command {
        require(program);
        let mut cmd = Command::new("timeout");
        cmd.args(["-k", "5", &COMMAND_TIMEOUT_SECS.to_string()]);
        if private_mounts_work() {
            cmd.args([
                "unshare",
                "--mount",
                "--",
                "sh",
                "-ec",
                PRIVATE_CACHE_SCRIPT,
                "sh",
            ])
            .env("BERTH_E2E_CACHE", &self.cache);
        } else if !is_root() {
            // Non-root containers/image keeps its cache under $XDG_DATA_HOME.
            cmd.env("XDG_DATA_HOME", &self.cache);
        }
        cmd.arg(program);
        cmd
    }

    /// `skopeo --insecure-policy …` (robust against a missing /etc/containers/policy.json).
    pub fn skopeo(&self) -> Command {
        let mut cmd = self.containers_cmd("skopeo");
        cmd.arg("--insecure-policy");
        cmd
    }

    pub fn docker(&self) -> Command {
        self.cmd("docker")
    }

    /// `podman` with its image store, run state and temporary files under `dir` (vfs, no
    /// events): a test's images never meet another's or the machine's.
    pub fn podman(&self, dir: &Path) -> Command {
        let mut cmd = self.containers_cmd("podman");
        cmd.arg("--root")
            .arg(dir.join("root"))
            .arg("--runroot")
            .arg(dir.join("runroot"))
            .arg("--tmpdir")
            .arg(dir.join("tmp"))
            .args(["--storage-driver", "vfs", "--events-backend", "none"]);
        cmd
    }
}

/// Polls `GET /v2/` until it answers 200.
pub fn wait_ready(host: &str) {
    let c = client();
    let deadline = std::time::Instant::now() + Duration::from_secs(20);
    loop {
        match c.get(format!("http://{host}/v2/")).send() {
            Ok(r) if r.status() == 200 => return,
            other => {
                assert!(
                    std::time::Instant::now() < deadline,
                    "registry at {host} not ready: {other:?}"
                );
                std::thread::sleep(Duration::from_millis(50));
            }
        }
    }
}

pub fn fixture_layout() -> PathBuf {
    fixtures().join("oci-multiarch")
}

/// The digest the OCI layout at `layout` tags as `reference`.
pub fn layout_ref(layout: &Path, reference: &str) -> String {
    let index: Value =
        serde_json::from_slice(&std::fs::read(layout.join("index.json")).unwrap()).unwrap();
    index["manifests"]
        .as_array()
        .unwrap()
        .iter()
        .find(|d| d["annotations"]["org.opencontainers.image.ref.name"] == reference)
        .unwrap_or_else(|| panic!("{} has no ref {reference}: {index}", layout.display()))["digest"]
        .as_str()
        .unwrap()
        .to_string()
}

pub fn layout_blob_path(layout: &Path, digest: &str) -> PathBuf {
    let (alg, hex) = digest.split_once(':').unwrap();
    layout.join("blobs").join(alg).join(hex)
}

pub fn layout_blob(layout: &Path, digest: &str) -> Vec<u8> {
    let path = layout_blob_path(layout, digest);
    std::fs::read(&path).unwrap_or_else(|e| panic!("cannot read {}: {e}", path.display()))
}

/// All blob digests of the fixture layout.
pub fn fixture_blob_digests() -> Vec<String> {
    let mut out: Vec<String> = std::fs::read_dir(fixture_layout().join("blobs/sha256"))
        .unwrap()
        .map(|e| format!("sha256:{}", e.unwrap().file_name().to_string_lossy()))
        .collect();
    out.sort();
    assert!(out.len() >= 7, "fixture layout looks incomplete: {out:?}");
    out
}

/// Every fixture blob is present, byte for byte, in the OCI layout at `out`.
pub fn assert_has_all_fixture_blobs(out: &Path) {
    for digest in fixture_blob_digests() {
        let want = layout_blob(&fixture_layout(), &digest);
        assert_eq!(
            super::sha256(&want),
            digest,
            "fixture blob {digest} is corrupt"
        );
        let got = layout_blob(out, &digest);
        assert!(
            got == want,
            "blob {digest} in {} differs from the fixture ({} vs {} bytes)",
            out.display(),
            got.len(),
            want.len()
        );
    }
}

/// `skopeo copy` of `src` to `dest` (a registry over plain HTTP), `--all` platforms if `all`.
pub fn skopeo_copy_to_registry(tools: &Tools, all: bool, src: &str, dest: &str, extra: &[&str]) {
    let mut cmd = tools.skopeo();
    cmd.args(["copy", "-q", "--dest-tls-verify=false"]);
    if all {
        cmd.arg("--all");
    }
    cmd.args(extra).arg(src).arg(dest);
    super::run(&mut cmd);
}

/// Copies `docker://<src>` (all platforms, digests preserved) into a new OCI layout at `out:v1`.
pub fn skopeo_pull_to_layout(tools: &Tools, src: &str, out: &Path) {
    super::run(tools.skopeo().args([
        "copy",
        "-q",
        "--all",
        "--preserve-digests",
        "--src-tls-verify=false",
        &format!("docker://{src}"),
        &format!("oci:{}:v1", out.display()),
    ]));
}

/// skopeo pushes the multi-arch fixture as `host/repo:v1`.
pub fn push_fixture(tools: &Tools, host: &str, repo: &str) {
    skopeo_copy_to_registry(
        tools,
        true,
        &format!("oci:{}:multiarch", fixture_layout().display()),
        &format!("docker://{host}/{repo}:v1"),
        &[],
    );
}

/// skopeo pulls `host/repo:v1` into a fresh OCI layout: the fixture's index, every blob exact.
pub fn pull_fixture_and_check(tools: &Tools, host: &str, repo: &str, dir: &Path) {
    let out = dir.join(unique("pulled"));
    skopeo_pull_to_layout(tools, &format!("{host}/{repo}:v1"), &out);
    assert_eq!(
        layout_ref(&out, "v1"),
        layout_ref(&fixture_layout(), "multiarch"),
        "index of {repo} through {host}"
    );
    assert_has_all_fixture_blobs(&out);
}

pub fn json(bytes: &[u8]) -> Value {
    serde_json::from_slice(bytes)
        .unwrap_or_else(|e| panic!("not JSON ({e}): {}", String::from_utf8_lossy(bytes)))
}

/// A name no other test or run uses.
pub fn unique(prefix: &str) -> String {
    let nanos = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .as_nanos();
    // Short: s3s-fs cannot hold object keys much longer than 150 bytes, and a tag's index key
    // holds repository, tag and a digest.
    let mixed = (nanos as u64) ^ (u64::from(std::process::id()) << 40);
    format!("{prefix}-{:08x}", (mixed ^ (mixed >> 32)) as u32)
}

/// Removes docker image references when dropped (also when the test fails).
pub struct DockerImages {
    pub refs: Vec<String>,
}

impl Drop for DockerImages {
    fn drop(&mut self) {
        for r in &self.refs {
            let _ = Command::new("docker")
                .args(["rmi", "-f", r])
                .stdout(Stdio::null())
                .stderr(Stdio::null())
                .status();
        }
    }
}

/// Runs `cmd`, expecting it to fail; answers its stdout and stderr.
pub fn run_failing(cmd: &mut Command) -> String {
    let out = cmd
        .output()
        .unwrap_or_else(|e| panic!("cannot run {cmd:?}: {e}"));
    let text = format!(
        "{}\n{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(!out.status.success(), "{cmd:?} should have failed: {text}");
    text
}

/// Loads the fixture image (amd64) into the Docker engine as `local`, through a docker-archive
/// made by skopeo under `dir`.
pub fn docker_load_fixture(tools: &Tools, dir: &Path, local: &str) {
    let archive = dir.join(format!("{}.tar", local.replace([':', '/'], "-")));
    super::run(tools.skopeo().args([
        "copy",
        "-q",
        &format!("oci:{}:amd64", fixture_layout().display()),
        &format!("docker-archive:{}:{local}", archive.display()),
    ]));
    super::run(tools.docker().arg("load").arg("-i").arg(&archive));
}

/// `docker push` of `remote` (with the client configuration `config`, where logins are kept,
/// if given); answers the digest docker reports.
pub fn docker_push(tools: &Tools, config: Option<&Path>, remote: &str) -> String {
    let mut cmd = tools.docker();
    if let Some(config) = config {
        cmd.arg("--config").arg(config);
    }
    let out = super::run(cmd.args(["push", remote]));
    out.split("digest: ")
        .nth(1)
        .and_then(|s| s.split_whitespace().next())
        .unwrap_or_else(|| panic!("no digest in docker push output: {out}"))
        .to_string()
}

/// Writes a distribution-style configuration (understood by both berth and docker-registry)
/// for filesystem storage under `root`, deletes enabled, and returns its path.
pub fn write_config(dir: &Path, name: &str, root: &Path) -> PathBuf {
    let path = dir.join(name);
    std::fs::write(
        &path,
        format!(
            "version: 0.1\n\
             log:\n  level: info\n\
             storage:\n  filesystem:\n    rootdirectory: {}\n  delete:\n    enabled: true\n\
             http:\n  addr: 127.0.0.1:0\n",
            root.display()
        ),
    )
    .unwrap();
    path
}

/// CNCF distribution 2.8 (Debian's `docker-registry serve CONFIG`) until dropped.
pub struct Distribution {
    pub host: String,
    child: std::process::Child,
}

impl Distribution {
    /// Starts it with `config` on a free loopback port and waits until `/v2/` answers.
    pub fn start(config: &Path) -> Distribution {
        require("docker-registry");
        let mut child = Command::new("docker-registry")
            .arg("serve")
            .arg(config)
            .env("REGISTRY_HTTP_ADDR", "127.0.0.1:0")
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap_or_else(|e| panic!("cannot start docker-registry: {e}"));
        let rx = super::watch_for_address(
            child.stderr.take().unwrap(),
            "listening on ",
            "docker-registry",
        );
        let host = match rx.recv_timeout(Duration::from_secs(20)) {
            Ok(host) => host,
            Err(e) => {
                let _ = child.kill();
                let _ = child.wait();
                panic!("docker-registry did not report `listening on ADDR` ({e})");
            }
        };
        wait_ready(&host);
        Distribution { host, child }
    }
}

impl Drop for Distribution {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}
