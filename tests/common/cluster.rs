//! berth deployed as several instances behind a load balancer, all in containers on one Docker
//! network: a 3-node Garage cluster ([`GarageCluster`]), Redis (the stand-in image of
//! scripts/standin-images.sh), one berth container (`make image`'s `berth:latest`) per Garage
//! node, each on its own node and on Redis, and nginx (stand-in image, run as in production:
//! master as root, workers as `www-data`) round-robin in front, without sticky sessions.
//!
//! nginx's configuration is examples/nginx/nginx.conf with only what this deployment changes:
//! three upstream servers, plain HTTP on port 80, no TLS and no logins (each swap asserts the
//! example still has the line, so the test follows the example). nginx and every berth publish
//! a port on 127.0.0.1: clients go through nginx, a test may also reach one instance directly.
//!
//! Everything is removed when the deployment is dropped; a failing test prints every
//! container's log first.

use std::path::Path;
use std::time::{Duration, Instant};

use super::docker::{docker_ok, require_image, standin_images, Container, IMAGE};
use super::garage::{GarageCluster, NODES};

/// Where berth listens in its image (`http.addr: :5000`).
const BERTH_PORT: u16 = 5000;
/// What berth logs at start-up when it coordinates uploads through Redis.
pub const REDIS_LOCKS_LINE: &str = "Redis locks with fencing tokens";

pub struct Deployment {
    // Dropped in this order: the clients' side first, the store (and its network) last.
    nginx: Container,
    berths: Vec<Container>,
    redis: Container,
    pub garage: GarageCluster,
    /// `127.0.0.1:PORT`: nginx, where clients reach the registry.
    pub host: String,
    /// How long [`Deployment::start`] took, the Garage cluster included.
    pub startup: Duration,
    _config: tempfile::TempDir,
}

/// examples/nginx/nginx.conf for this deployment: `upstream` lists every instance (nginx's
/// default balancing is round robin), plain HTTP, no TLS, no logins.
pub fn nginx_conf(instances: &[String]) -> String {
    let example = std::fs::read_to_string(
        Path::new(env!("CARGO_MANIFEST_DIR")).join("examples/nginx/nginx.conf"),
    )
    .expect("examples/nginx/nginx.conf");
    let swap = |conf: String, from: &str, to: &str| {
        assert!(
            conf.contains(from),
            "examples/nginx/nginx.conf no longer has {from:?}"
        );
        conf.replacen(from, to, 1)
    };
    let servers: Vec<String> = instances
        .iter()
        .map(|i| format!("server {i}:{BERTH_PORT};"))
        .collect();
    let conf = swap(example, "server berth:5000;", &servers.join("\n        "));
    let conf = swap(conf, "listen 443 ssl http2;", "listen 80;");
    // An instance that died with its host (a killed container's address answers nothing, not
    // even a reset) would hold every request sent its way for nginx's default 60 s, the
    // client's body unread; after the example's short connect timeout nginx marks it failed
    // and passes the request to the next instance (allowed for a PATCH too: nothing was sent).
    assert!(
        conf.lines()
            .any(|l| l.trim() == "proxy_connect_timeout   3s;"),
        "examples/nginx/nginx.conf no longer sets a short proxy_connect_timeout"
    );
    // Workers unprivileged, as in production (the stand-in image has www-data).
    assert!(
        conf.lines().any(|l| l == "user www-data;"),
        "examples/nginx/nginx.conf no longer runs its workers as www-data"
    );
    // TLS and logins are the example's, not the subject here.
    let dropped = ["ssl_", "auth_basic", "error_page 401"];
    let kept: Vec<&str> = conf
        .lines()
        .filter(|l| !dropped.iter().any(|d| l.trim_start().starts_with(d)))
        .collect();
    assert_eq!(
        conf.lines().count() - kept.len(),
        7,
        "examples/nginx/nginx.conf: the TLS and login lines changed"
    );
    kept.join("\n") + "\n"
}

impl Deployment {
    /// Garage, Redis, three berth instances and nginx, each waited for; fails the test (with
    /// what to do) when the berth image is missing.
    pub fn start() -> Deployment {
        let began = Instant::now();
        require_image(IMAGE);
        let (nginx_image, redis_image) = standin_images();
        let garage = GarageCluster::start();
        let network = garage.network_name().to_string();

        let redis = Container::run(
            "berth-lb-redis",
            &[
                "--network",
                &network,
                "--network-alias",
                "redis",
                "--label",
                "berth-test=1",
                redis_image,
            ],
        );
        wait_until("redis-cli ping answers PONG", || {
            let out = redis.exec(&["redis-cli", "ping"]);
            String::from_utf8_lossy(&out.stdout).trim() == "PONG"
        });

        let aliases: Vec<String> = (1..=NODES).map(|n| format!("berth{n}")).collect();
        let berths: Vec<Container> = (1..=NODES)
            .map(|n| run_berth(&garage, n, &aliases[n - 1]))
            .collect();
        let client = super::client();
        for berth in &berths {
            let port = berth.host_port(BERTH_PORT);
            berth.wait_http(&client, &format!("http://127.0.0.1:{port}/v2/"), &[200]);
        }

        let config = tempfile::tempdir().unwrap();
        let conf_path = config.path().join("nginx.conf");
        std::fs::write(&conf_path, nginx_conf(&aliases)).unwrap();
        let mount = format!("{}:/etc/nginx/nginx.conf:ro", conf_path.display());
        let nginx = Container::run(
            "berth-lb-nginx",
            &[
                "--network",
                &network,
                "-p",
                "127.0.0.1::80",
                "-v",
                &mount,
                "--label",
                "berth-test=1",
                nginx_image,
            ],
        );
        let host = format!("127.0.0.1:{}", nginx.host_port(80));
        nginx.wait_http(&client, &format!("http://{host}/v2/"), &[200]);
        Deployment {
            nginx,
            berths,
            redis,
            garage,
            host,
            startup: began.elapsed(),
            _config: config,
        }
    }

    /// `http://127.0.0.1:PORT{path}` through nginx.
    pub fn url(&self, path: &str) -> String {
        format!("http://{}{path}", self.host)
    }

    fn berth(&self, instance: usize) -> &Container {
        assert!(
            (1..=self.berths.len()).contains(&instance),
            "instances are numbered 1 to {}, not {instance}",
            self.berths.len()
        );
        &self.berths[instance - 1]
    }

    /// `http://127.0.0.1:PORT`: one instance directly, past nginx.
    pub fn instance_url(&self, instance: usize) -> String {
        format!(
            "http://127.0.0.1:{}",
            self.berth(instance).host_port(BERTH_PORT)
        )
    }

    /// Everything instance `instance` logged (its access log included).
    pub fn instance_log(&self, instance: usize) -> String {
        self.berth(instance).logs()
    }

    /// `docker kill` (SIGKILL) of one instance: a crash, nothing flushed.
    pub fn kill_instance(&self, instance: usize) {
        docker_ok(&["kill", &self.berth(instance).name]);
    }

    /// `berth ARGS…` in instance `instance`'s container (`docker exec`, as an operator runs
    /// `garbage-collect` there: the container's own configuration and environment).
    pub fn berth_command(&self, instance: usize, args: &[&str]) -> std::process::Output {
        self.berth(instance).exec(&[&["berth"][..], args].concat())
    }

    /// `docker stop` of Redis (SIGTERM: it saves its data set, as a restart in production).
    pub fn stop_redis(&self) {
        docker_ok(&["stop", "-t", "10", &self.redis.name]);
    }

    /// `docker start` of Redis again, waiting until it answers.
    pub fn start_redis(&self) {
        docker_ok(&["start", &self.redis.name]);
        wait_until("redis-cli ping answers PONG after a restart", || {
            let out = self.redis.exec(&["redis-cli", "ping"]);
            String::from_utf8_lossy(&out.stdout).trim() == "PONG"
        });
    }

    /// The last lines of every container's log, with its state.
    pub fn logs(&self) -> String {
        let mut out = String::new();
        let containers = std::iter::once(&self.nginx)
            .chain(&self.berths)
            .chain(std::iter::once(&self.redis));
        for c in containers {
            let log = c.logs();
            let lines: Vec<&str> = log.lines().collect();
            let tail = lines[lines.len().saturating_sub(60)..].join("\n");
            let state = docker_ok(&[
                "inspect",
                "-f",
                "{{.State.Status}} exit {{.State.ExitCode}}",
                &c.name,
            ]);
            out.push_str(&format!("---- {} ({state}) ----\n{tail}\n", c.name));
        }
        out + &self.garage.logs()
    }
}

impl Drop for Deployment {
    fn drop(&mut self) {
        if std::thread::panicking() {
            eprintln!("logs of the deployment:\n{}", self.logs());
        }
    }
}

/// One berth container on Garage node `node` and on Redis, redirects off (its S3 endpoint is a
/// container address no client outside the network reaches), believing the proxy's forwarding
/// headers from the network (its `Location` headers then name nginx's address).
fn run_berth(garage: &GarageCluster, node: usize, alias: &str) -> Container {
    let mut env = garage.berth_storage_config_in_network(node).env();
    env.extend(
        [
            ("REGISTRY_REDIS_ADDR", "redis:6379"),
            ("REGISTRY_STORAGE_REDIRECT_DISABLE", "true"),
            ("REGISTRY_HTTP_TRUSTEDPROXIES", garage.network_subnet()),
        ]
        .map(|(k, v)| (k.to_string(), v.to_string())),
    );
    let mut args: Vec<String> = [
        "--network",
        garage.network_name(),
        "--network-alias",
        alias,
        "-p",
        &format!("127.0.0.1::{BERTH_PORT}"),
        "--label",
        "berth-test=1",
    ]
    .map(str::to_string)
    .to_vec();
    for (key, value) in env {
        args.extend(["-e".to_string(), format!("{key}={value}")]);
    }
    args.push(IMAGE.to_string());
    let args: Vec<&str> = args.iter().map(String::as_str).collect();
    Container::run(&format!("berth-lb-{alias}"), &args)
}

/// Polls `ready` for up to 30 s.
fn wait_until(what: &str, mut ready: impl FnMut() -> bool) {
    let deadline = Instant::now() + Duration::from_secs(30);
    while !ready() {
        assert!(Instant::now() < deadline, "{what}: not within 30 s");
        std::thread::sleep(Duration::from_millis(200));
    }
}
