//! A real replicated store for the tests: Garage 2.5, three nodes with replication factor 3,
//! each in its own container (`berth-test/garage:2.5.0`, built by scripts/garage-image.sh) on a
//! private network of the cluster's, with one bucket and one key made with Garage's own CLI.
//!
//! Every node's S3 API is published on 127.0.0.1 (a fixed port per node, kept across
//! `docker stop`/`start`) for berth on the host; containers on the cluster's network reach the
//! nodes as `garageN:3900`. Nodes keep fixed addresses too, so that a node that comes back after
//! a kill or a network disconnection is found where its peers remember it. Everything
//! (containers, their volumes, the network) is removed when the cluster is dropped, also when
//! the test panics; a test process killed outright leaves them labelled `berth-test=1`.
//!
//! Garage does not honour conditional writes (`If-None-Match`, `If-Match`): see
//! tests/garage_cluster.rs.

use std::future::Future;
use std::path::Path;
use std::sync::OnceLock;
use std::time::{Duration, Instant};

use object_store::aws::{AmazonS3, AmazonS3Builder};
use object_store::{ClientOptions, ObjectStoreExt, RetryConfig};
use serde_json::Value;

use super::docker::{docker_ok, Container, Network};
use super::free_port;

pub const IMAGE: &str = "berth-test/garage:2.5.0";
pub const REGION: &str = "garage";
pub const BUCKET: &str = "berth";
pub const NODES: usize = 3;
const S3_PORT: u16 = 3900;
const RPC_PORT: u16 = 3901;
/// Where the image's `GARAGE_CONFIG_FILE` points.
const CONFIG_PATH: &str = "/etc/garage/garage.toml";
/// Start-up and recovery take a few seconds; this bounds a cluster that will not form.
const LIMIT: Duration = Duration::from_secs(90);

struct Node {
    container: Container,
    /// Its name on the cluster's network, `garageN`.
    hostname: String,
    /// Its fixed address on the network.
    address: String,
    /// Its S3 API on 127.0.0.1.
    s3_port: u16,
    /// The full node id (public key), as peers and the layout know it.
    id: String,
}

/// Three Garage nodes forming one cluster, until dropped. Nodes are numbered 1 to 3.
pub struct GarageCluster {
    // Declared before the network: fields drop in order, and a network with containers
    // attached cannot be removed.
    nodes: Vec<Node>,
    network: Network,
    /// The nodes' configuration files (mounted into the containers), mode 600 as Garage wants
    /// for a file holding the RPC secret.
    _configs: tempfile::TempDir,
    access_key: String,
    secret_key: String,
    /// What `garage layout apply` printed (the layout computation: replication factor,
    /// partitions per node, capacity).
    pub layout_applied: String,
    /// How long [`GarageCluster::start`] took, image check included.
    pub startup: Duration,
}

/// Builds the image once per test process (quick when it is up to date).
fn ensure_image() {
    static BUILT: OnceLock<()> = OnceLock::new();
    BUILT.get_or_init(|| {
        let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("scripts/garage-image.sh");
        let out = std::process::Command::new("bash")
            .arg(&script)
            .output()
            .unwrap_or_else(|e| panic!("cannot run {}: {e}", script.display()));
        assert!(
            out.status.success(),
            "{} failed: {}{}",
            script.display(),
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
    });
}

/// `bytes` random bytes as hex (the RPC secret is 32).
fn random_hex(bytes: usize) -> String {
    let mut out = String::new();
    while out.len() < bytes * 2 {
        out.push_str(&uuid::Uuid::new_v4().simple().to_string());
    }
    out.truncate(bytes * 2);
    out
}

fn node_config(hostname: &str, rpc_secret: &str) -> String {
    format!(
        r#"# Garage node {hostname} of a test cluster (tests/common/garage.rs).
metadata_dir = "/var/lib/garage/meta"
data_dir = "/var/lib/garage/data"
db_engine = "lmdb"
replication_factor = 3
# Quorums of 2 for reads and writes: any one node may be down.
consistency_mode = "consistent"
# A read goes to 2 nodes only; one that died without closing its connections (kill, network
# cut) is noticed after 5 failed pings 15 s apart, and until then a read sent to it waits for
# this timeout (300 s by default) before another node is asked.
rpc_timeout_msec = 5000
rpc_bind_addr = "0.0.0.0:{RPC_PORT}"
rpc_public_addr = "{hostname}:{RPC_PORT}"
rpc_secret = "{rpc_secret}"

[s3_api]
s3_region = "{REGION}"
api_bind_addr = "0.0.0.0:{S3_PORT}"
"#
    )
}

/// Calls `attempt` until it answers `Ok` or `limit` has passed; answers the last error then.
fn retry<T>(limit: Duration, mut attempt: impl FnMut() -> Result<T, String>) -> Result<T, String> {
    let deadline = Instant::now() + limit;
    loop {
        match attempt() {
            Ok(v) => return Ok(v),
            Err(e) if Instant::now() > deadline => return Err(e),
            Err(_) => std::thread::sleep(Duration::from_millis(200)),
        }
    }
}

/// Runs `future` to completion on a runtime of its own (the tests are synchronous).
pub fn block_on<F: Future>(future: F) -> F::Output {
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap()
        .block_on(future)
}

impl GarageCluster {
    /// A new cluster: containers started, nodes connected, layout applied, bucket and key
    /// made, and [`GarageCluster::wait_healthy`] passed. Panics with the nodes' logs when it
    /// does not form.
    pub fn start() -> GarageCluster {
        let began = Instant::now();
        ensure_image();
        let network = Network::create("berth-garage");
        let configs = tempfile::tempdir().unwrap();
        let rpc_secret = random_hex(32);
        let mut nodes = Vec::new();
        for n in 1..=NODES {
            let hostname = format!("garage{n}");
            let config = configs.path().join(format!("{hostname}.toml"));
            write_private(&config, &node_config(&hostname, &rpc_secret));
            let address = network.address(10 + n as u8);
            let (container, s3_port) = run_node(&network, &hostname, &address, &config);
            nodes.push(Node {
                container,
                hostname,
                address,
                s3_port,
                id: String::new(),
            });
        }
        let mut cluster = GarageCluster {
            nodes,
            network,
            _configs: configs,
            access_key: String::new(),
            secret_key: String::new(),
            layout_applied: String::new(),
            startup: Duration::ZERO,
        };
        for n in 1..=NODES {
            cluster.nodes[n - 1].id = cluster.read_node_id(n);
        }
        // Node 1 meets the others; they learn of each other from it and keep the peer list in
        // their metadata directory (what a restarted node reconnects with).
        for n in 2..=NODES {
            let peer = format!(
                "{}@{}:{RPC_PORT}",
                cluster.nodes[n - 1].id,
                cluster.nodes[n - 1].hostname
            );
            cluster.garage_retrying(1, &["node", "connect", &peer]);
        }
        // One zone per node, so that each partition has a copy on every node.
        for n in 1..=NODES {
            let id = cluster.nodes[n - 1].id.clone();
            let zone = format!("zone{n}");
            cluster.garage_retrying(1, &["layout", "assign", "-z", &zone, "-c", "1G", &id]);
        }
        cluster.layout_applied = cluster.garage_retrying(1, &["layout", "apply", "--version", "1"]);
        cluster.wait_connected();
        cluster.make_bucket_and_key();
        cluster.wait_healthy();
        cluster.startup = began.elapsed();
        cluster
    }

    fn node(&self, node: usize) -> &Node {
        assert!(
            (1..=NODES).contains(&node),
            "nodes are numbered 1 to {NODES}, not {node}"
        );
        &self.nodes[node - 1]
    }

    /// `http://127.0.0.1:PORT`: the node's S3 API as the host reaches it.
    pub fn s3_endpoint(&self, node: usize) -> String {
        format!("http://127.0.0.1:{}", self.node(node).s3_port)
    }

    /// `http://garageN:3900`: the node's S3 API as containers on [`Self::network_name`]
    /// reach it.
    pub fn network_endpoint(&self, node: usize) -> String {
        format!("http://{}:{S3_PORT}", self.node(node).hostname)
    }

    /// The cluster's private network (for `docker run --network`).
    pub fn network_name(&self) -> &str {
        &self.network.name
    }

    /// The network's subnet, `10.A.B.0/24` (what berth behind a proxy on it trusts).
    pub fn network_subnet(&self) -> &str {
        &self.network.subnet
    }

    /// The node's fixed address on the network.
    pub fn address(&self, node: usize) -> &str {
        &self.node(node).address
    }

    /// The node's container name (for docker commands of the test's own).
    pub fn container_name(&self, node: usize) -> &str {
        &self.node(node).container.name
    }

    pub fn access_key(&self) -> &str {
        &self.access_key
    }

    pub fn secret_key(&self) -> &str {
        &self.secret_key
    }

    pub fn bucket(&self) -> &str {
        BUCKET
    }

    pub fn region(&self) -> &str {
        REGION
    }

    /// `docker stop`: SIGTERM, Garage shuts down cleanly.
    pub fn stop(&self, node: usize) {
        docker_ok(&["stop", "-t", "10", self.container_name(node)]);
    }

    /// `docker start` of a stopped or killed node, on its old address and port, with its data
    /// (not `start`: that name makes the cluster). Call [`Self::wait_healthy`] to wait until it
    /// has rejoined.
    pub fn start_node(&self, node: usize) {
        docker_ok(&["start", self.container_name(node)]);
    }

    /// `docker kill`: SIGKILL, as a crash.
    pub fn kill(&self, node: usize) {
        docker_ok(&["kill", self.container_name(node)]);
    }

    /// `docker network disconnect`: the node runs on but reaches nobody (and its published
    /// port goes with its network).
    pub fn disconnect(&self, node: usize) {
        docker_ok(&[
            "network",
            "disconnect",
            &self.network.name,
            self.container_name(node),
        ]);
    }

    /// `docker network connect` back, with the node's old address and name.
    pub fn connect(&self, node: usize) {
        let n = self.node(node);
        docker_ok(&[
            "network",
            "connect",
            "--ip",
            &n.address,
            "--alias",
            &n.hostname,
            &self.network.name,
            &n.container.name,
        ]);
    }

    /// `garage ARGS…` on `node` (its CLI talks to its own daemon): stdout, or what it said.
    pub fn garage(&self, node: usize, args: &[&str]) -> Result<String, String> {
        let out = self
            .node(node)
            .container
            .exec(&[&["garage"][..], args].concat());
        let stdout = String::from_utf8_lossy(&out.stdout).to_string();
        if out.status.success() {
            Ok(stdout)
        } else {
            Err(format!(
                "garage {args:?} on garage{node} failed ({}): {stdout}{}",
                out.status,
                String::from_utf8_lossy(&out.stderr)
            ))
        }
    }

    /// [`Self::garage`], retried until it succeeds; fails the test with the logs otherwise.
    fn garage_retrying(&self, node: usize, args: &[&str]) -> String {
        retry(LIMIT, || {
            self.check_running();
            self.garage(node, args)
        })
        .unwrap_or_else(|e| self.fail(&e))
    }

    /// The admin API through the node's CLI (`garage json-api ENDPOINT`), as JSON.
    pub fn admin_api(&self, node: usize, endpoint: &str) -> Result<Value, String> {
        let out = self.garage(node, &["json-api", endpoint])?;
        serde_json::from_str(&out).map_err(|e| format!("{endpoint} answered no JSON ({e}): {out}"))
    }

    /// Fails the test (with the logs) if a node's container has exited.
    fn check_running(&self) {
        for n in &self.nodes {
            let state = n.container.inspect("{{.State.Status}}");
            if state == "exited" || state == "dead" {
                self.fail(&format!(
                    "{} ({}) has {state}",
                    n.hostname, n.container.name
                ));
            }
        }
    }

    /// The node's id once its daemon has made its key (`garage node id -q`: `ID@HOST:PORT`).
    fn read_node_id(&self, node: usize) -> String {
        let out = self.garage_retrying(node, &["node", "id", "-q"]);
        let id = out.trim().split('@').next().unwrap_or_default().to_string();
        if id.len() != 64 || !id.chars().all(|c| c.is_ascii_hexdigit()) {
            self.fail(&format!("garage node id answered {out:?}"));
        }
        id
    }

    /// Waits until every node sees the three storage nodes connected and every partition with
    /// all its copies reachable, on the applied layout, which every node has acknowledged.
    fn wait_connected(&self) {
        let report = retry(LIMIT, || {
            self.check_running();
            for node in 1..=NODES {
                let health = self.admin_api(node, "GetClusterHealth")?;
                let history = self.admin_api(node, "GetClusterLayoutHistory")?;
                let version = history["currentVersion"].as_u64().unwrap_or(0);
                let all_ok = health["status"] == "healthy"
                    && health["storageNodes"] == NODES
                    && health["storageNodesUp"] == NODES
                    && health["partitionsAllOk"] == health["partitions"]
                    && version >= 1
                    && history["minAck"] == version;
                if !all_ok {
                    return Err(format!("garage{node}: {health} {history}"));
                }
            }
            Ok(())
        });
        if let Err(e) = report {
            self.fail(&format!("the cluster did not become healthy: {e}"));
        }
    }

    /// `garage bucket create`, `garage key create` and `garage bucket allow`; the key's id and
    /// secret are read from what `key create` prints (`Key ID: GK…`, `Secret key: …`).
    fn make_bucket_and_key(&mut self) {
        self.garage_retrying(1, &["bucket", "create", BUCKET]);
        let out = self.garage_retrying(1, &["key", "create", "berth-test"]);
        let field = |name: &str| {
            out.lines()
                .find_map(|l| l.trim().strip_prefix(name))
                .map(|v| v.trim().to_string())
                .unwrap_or_else(|| self.fail(&format!("no `{name}` in garage key create: {out}")))
        };
        let (access, secret) = (field("Key ID:"), field("Secret key:"));
        assert!(access.starts_with("GK"), "key id {access:?}");
        self.garage_retrying(
            1,
            &[
                "bucket", "allow", "--read", "--write", "--owner", BUCKET, "--key", &access,
            ],
        );
        self.access_key = access;
        self.secret_key = secret;
    }

    /// Waits until all nodes are up and connected on the applied layout, and an object put
    /// through each node reads back through it. Fails the test with the logs after a while.
    pub fn wait_healthy(&self) {
        self.wait_connected();
        for node in 1..=NODES {
            let store = self.store(node);
            let key = object_store::path::Path::from(format!("_garage-probe/node{node}"));
            let probe = random_hex(16).into_bytes();
            let answer = retry(LIMIT, || {
                block_on(async {
                    store
                        .put(&key, probe.clone().into())
                        .await
                        .map_err(|e| format!("put: {e}"))?;
                    let got = store.get(&key).await.map_err(|e| format!("get: {e}"))?;
                    let got = got.bytes().await.map_err(|e| format!("read: {e}"))?;
                    if got.as_ref() == probe.as_slice() {
                        Ok(())
                    } else {
                        Err(format!("read back {got:?}, wrote {probe:?}"))
                    }
                })
            });
            if let Err(e) = answer {
                self.fail(&format!("probe through garage{node}: {e}"));
            }
        }
    }

    /// An S3 client (object_store's, as berth's own) on the bucket through `node`, failing
    /// within seconds rather than retrying for minutes.
    pub fn store(&self, node: usize) -> AmazonS3 {
        AmazonS3Builder::new()
            .with_endpoint(self.s3_endpoint(node))
            .with_bucket_name(BUCKET)
            .with_region(REGION)
            .with_access_key_id(&self.access_key)
            .with_secret_access_key(&self.secret_key)
            .with_virtual_hosted_style_request(false)
            .with_retry(RetryConfig {
                max_retries: 2,
                retry_timeout: Duration::from_secs(10),
                ..Default::default()
            })
            .with_client_options(
                ClientOptions::new()
                    .with_allow_http(true)
                    .with_timeout(Duration::from_secs(30)),
            )
            .build()
            .unwrap()
    }

    /// berth's `storage.s3` settings for the bucket through `node`, from the host.
    pub fn berth_storage_config(&self, node: usize) -> BerthStorage {
        self.berth_storage_at(&self.s3_endpoint(node))
    }

    /// The same for a berth container on [`Self::network_name`].
    pub fn berth_storage_config_in_network(&self, node: usize) -> BerthStorage {
        self.berth_storage_at(&self.network_endpoint(node))
    }

    fn berth_storage_at(&self, endpoint: &str) -> BerthStorage {
        BerthStorage {
            settings: vec![
                ("regionendpoint", endpoint.to_string()),
                ("bucket", BUCKET.to_string()),
                ("region", REGION.to_string()),
                ("forcepathstyle", "true".to_string()),
                ("secure", "false".to_string()),
                ("accesskey", self.access_key.clone()),
                ("secretkey", self.secret_key.clone()),
            ],
        }
    }

    /// The last lines each node logged, with its container state.
    pub fn logs(&self) -> String {
        let mut out = String::new();
        for n in &self.nodes {
            let log = n.container.logs();
            let lines: Vec<&str> = log.lines().collect();
            let tail = lines[lines.len().saturating_sub(40)..].join("\n");
            out.push_str(&format!(
                "---- {} ({}, {}) ----\n{tail}\n",
                n.hostname,
                n.container.name,
                n.container
                    .inspect("{{.State.Status}} exit {{.State.ExitCode}}")
            ));
        }
        out
    }

    fn fail(&self, what: &str) -> ! {
        panic!("Garage cluster: {what}\n{}", self.logs())
    }
}

/// The keys of berth's `storage.s3` section (src/config/storage.rs) for one node.
pub struct BerthStorage {
    settings: Vec<(&'static str, String)>,
}

impl BerthStorage {
    /// As `REGISTRY_STORAGE=s3` and `REGISTRY_STORAGE_S3_<KEY>` variables.
    pub fn env(&self) -> Vec<(String, String)> {
        let mut env = vec![("REGISTRY_STORAGE".to_string(), "s3".to_string())];
        env.extend(self.settings.iter().map(|(key, value)| {
            (
                format!("REGISTRY_STORAGE_S3_{}", key.to_uppercase()),
                value.clone(),
            )
        }));
        env
    }

    /// As a configuration file's `storage:` section (strings quoted: a hex secret of digits
    /// only would otherwise read as a number).
    pub fn yaml(&self) -> String {
        let mut yaml = String::from("storage:\n  s3:\n");
        for (key, value) in &self.settings {
            if value == "true" || value == "false" {
                yaml.push_str(&format!("    {key}: {value}\n"));
            } else {
                yaml.push_str(&format!("    {key}: \"{value}\"\n"));
            }
        }
        yaml
    }
}

/// Writes `content` to `path` readable by its owner only.
fn write_private(path: &Path, content: &str) {
    use std::io::Write as _;
    use std::os::unix::fs::OpenOptionsExt as _;
    let mut file = std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o600)
        .open(path)
        .unwrap();
    file.write_all(content.as_bytes()).unwrap();
}

/// `docker run` of one node, its S3 API on a free port of 127.0.0.1 (another port is tried
/// when one was taken in between).
fn run_node(network: &Network, hostname: &str, address: &str, config: &Path) -> (Container, u16) {
    let mut last = String::new();
    for _ in 0..5 {
        let port = free_port();
        let publish = format!("127.0.0.1:{port}:{S3_PORT}");
        let mount = format!("{}:{CONFIG_PATH}:ro", config.display());
        let args = [
            "--network",
            &network.name,
            "--ip",
            address,
            "--hostname",
            hostname,
            "--network-alias",
            hostname,
            "-p",
            &publish,
            "-v",
            &mount,
            "-e",
            "RUST_LOG=garage=info",
            "--label",
            "berth-test=1",
            IMAGE,
        ];
        match Container::try_run(&format!("berth-{hostname}"), &args) {
            Ok(container) => return (container, port),
            Err(e) if e.contains("already allocated") || e.contains("address already in use") => {
                last = e
            }
            Err(e) => panic!("{e}"),
        }
    }
    panic!("no free port for {hostname}: {last}")
}
