//! The machine's Docker engine from tests: containers and networks that are always removed (a
//! guard, also when the test panics), waiting until what runs in them answers, their logs, state
//! and health, and small images built locally `FROM scratch` (nothing can be pulled here).
//!
//! A missing engine or image fails the test with what to do: nothing is skipped.

use std::path::Path;
use std::process::{Command, Output, Stdio};
use std::sync::OnceLock;
use std::time::{Duration, Instant};

use super::run;
use super::tools::{require, unique, DockerImages};

/// The image `make image` builds.
pub const IMAGE: &str = "berth:latest";

/// `docker ARGS…` (under a time limit, as every client command of the tests).
pub fn docker() -> Command {
    require("docker");
    require("timeout");
    let mut cmd = Command::new("timeout");
    cmd.args(["-k", "5", "120", "docker"]);
    cmd
}

fn output(cmd: &mut Command) -> Output {
    cmd.output()
        .unwrap_or_else(|e| panic!("cannot run {cmd:?}: {e}"))
}

/// Runs a docker command that must succeed; answers its stdout, trimmed.
pub fn docker_ok(args: &[&str]) -> String {
    let out = output(docker().args(args));
    assert!(
        out.status.success(),
        "docker {args:?} failed ({}): {}{}",
        out.status,
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).trim().to_string()
}

/// Fails the test unless the engine answers and has `image` (saying how to build it).
pub fn require_image(image: &str) {
    let out = output(docker().args(["version", "--format", "{{.Server.Version}}"]));
    assert!(
        out.status.success(),
        "the Docker engine does not answer (`docker version`): {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let out = output(docker().args(["image", "inspect", "--format", "{{.Id}}", image]));
    assert!(
        out.status.success(),
        "the Docker engine has no image {image}: run `make image` first ({})",
        String::from_utf8_lossy(&out.stderr).trim()
    );
}

/// The stand-in nginx and redis images of `scripts/standin-images.sh` (nothing can be pulled
/// here), built once per test process: their tags.
pub fn standin_images() -> &'static (String, String) {
    static TAGS: OnceLock<(String, String)> = OnceLock::new();
    TAGS.get_or_init(|| {
        let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("scripts/standin-images.sh");
        let out = run(Command::new("bash").arg(&script));
        let mut tags = out.split_whitespace().map(str::to_string);
        (tags.next().unwrap(), tags.next().unwrap())
    })
}

/// A container of the test's, removed (with its anonymous volumes) when dropped.
pub struct Container {
    pub name: String,
}

impl Container {
    /// `docker run -d --name PREFIX-XXXX ARGS…` (options, then the image and its arguments).
    pub fn run(prefix: &str, args: &[&str]) -> Container {
        Self::try_run(prefix, args).unwrap_or_else(|e| panic!("{e}"))
    }

    /// As [`Container::run`], answering docker's complaint instead of failing the test.
    pub fn try_run(prefix: &str, args: &[&str]) -> Result<Container, String> {
        let container = Container {
            name: unique(prefix),
        };
        let out = output(
            docker()
                .args(["run", "-d", "--name", &container.name])
                .args(args),
        );
        if out.status.success() {
            Ok(container)
        } else {
            Err(format!(
                "docker run {args:?} failed: {}",
                String::from_utf8_lossy(&out.stderr)
            ))
        }
    }

    /// `docker inspect -f FORMAT` of this container.
    pub fn inspect(&self, format: &str) -> String {
        docker_ok(&["inspect", "-f", format, &self.name])
    }

    /// `docker exec NAME ARGS…`: its output, whether it succeeded or not.
    pub fn exec(&self, args: &[&str]) -> Output {
        output(docker().args(["exec", &self.name]).args(args))
    }

    /// Everything it wrote, stdout and stderr.
    pub fn logs(&self) -> String {
        let out = output(docker().args(["logs", &self.name]));
        format!(
            "{}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        )
    }

    /// The host port published for `port/tcp` of the container.
    pub fn host_port(&self, port: u16) -> u16 {
        let mapping = docker_ok(&["port", &self.name, &format!("{port}/tcp")]);
        mapping
            .lines()
            .next()
            .and_then(|l| l.rsplit(':').next())
            .and_then(|p| p.parse().ok())
            .unwrap_or_else(|| panic!("no published port in {mapping:?}"))
    }

    /// Waits until it has stopped; answers its exit code.
    pub fn wait_exit(&self) -> i64 {
        let code = docker_ok(&["wait", &self.name]);
        code.parse()
            .unwrap_or_else(|_| panic!("docker wait answered {code:?}"))
    }

    /// Waits until `GET url` answers one of `statuses` (the server inside has started), failing
    /// with the container's log after `limit`.
    pub fn wait_http(&self, client: &reqwest::blocking::Client, url: &str, statuses: &[u16]) {
        let limit = Duration::from_secs(30);
        let deadline = Instant::now() + limit;
        loop {
            let last = match client.get(url).timeout(Duration::from_secs(2)).send() {
                Ok(r) if statuses.contains(&r.status().as_u16()) => return,
                Ok(r) => format!("status {}", r.status()),
                Err(e) => e.to_string(),
            };
            if Instant::now() > deadline {
                panic!(
                    "{url} did not answer {statuses:?} within {limit:?} (last: {last}); state {}, log:\n{}",
                    self.inspect("{{.State.Status}} {{.State.ExitCode}}"),
                    self.logs()
                );
            }
            std::thread::sleep(Duration::from_millis(100));
        }
    }

    /// Waits until docker's health check reports `healthy`; fails on `unhealthy` or after a
    /// minute (the image's probe runs every 10 s unless `--health-interval` says otherwise).
    pub fn wait_healthy(&self) {
        let deadline = Instant::now() + Duration::from_secs(60);
        loop {
            let status = self.inspect("{{if .State.Health}}{{.State.Health.Status}}{{end}}");
            match status.as_str() {
                "healthy" => return,
                "unhealthy" => panic!(
                    "{} turned unhealthy: {}",
                    self.name,
                    self.inspect("{{json .State.Health}}")
                ),
                "" => panic!("{} has no health check", self.name),
                _ if Instant::now() > deadline => panic!(
                    "{} still {status} after a minute: {}",
                    self.name,
                    self.inspect("{{json .State.Health}}")
                ),
                _ => std::thread::sleep(Duration::from_millis(250)),
            }
        }
    }
}

impl Drop for Container {
    fn drop(&mut self) {
        let _ = Command::new("docker")
            .args(["rm", "-f", "-v", &self.name])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .status();
    }
}

/// A user-defined bridge network of the test's, removed when dropped (after disconnecting
/// whatever is still attached, so a container that outlives it cannot keep it).
///
/// It has a subnet of its own so that containers can be given fixed addresses (`--ip`): a
/// container then keeps its address across `docker stop`/`start` and network
/// disconnect/connect, as a server's peers expect.
pub struct Network {
    pub name: String,
    /// `10.A.B.0/24`
    pub subnet: String,
}

impl Network {
    /// A fresh network named `PREFIX-XXXX`, on a /24 of 10.0.0.0/8 no other network uses
    /// (another is tried when the engine finds the first overlapping).
    pub fn create(prefix: &str) -> Network {
        let name = unique(prefix);
        let mut last = String::new();
        for attempt in 0..20u32 {
            let seed = u32::from_str_radix(name.rsplit('-').next().unwrap(), 16).unwrap_or(0);
            let mixed = seed
                .wrapping_mul(2_654_435_761)
                .wrapping_add(attempt * 7919);
            // 10.100.0.0 to 10.227.255.0: clear of the engine's default pools (172.17+, 192.168).
            let subnet = format!(
                "10.{}.{}.0/24",
                100 + (mixed >> 24) % 128,
                (mixed >> 8) % 256
            );
            let out = output(docker().args([
                "network",
                "create",
                "--driver",
                "bridge",
                "--subnet",
                &subnet,
                "--label",
                "berth-test=1",
                &name,
            ]));
            if out.status.success() {
                return Network { name, subnet };
            }
            last = String::from_utf8_lossy(&out.stderr).trim().to_string();
            if !last.contains("overlap") {
                break;
            }
        }
        panic!("docker network create {name} failed: {last}")
    }

    /// The address `10.A.B.HOST` of the subnet.
    pub fn address(&self, host: u8) -> String {
        let base = self.subnet.trim_end_matches(".0/24");
        format!("{base}.{host}")
    }
}

impl Drop for Network {
    fn drop(&mut self) {
        let attached = Command::new("docker")
            .args([
                "network",
                "inspect",
                "-f",
                "{{range .Containers}}{{.Name}} {{end}}",
                &self.name,
            ])
            .output()
            .map(|o| String::from_utf8_lossy(&o.stdout).to_string())
            .unwrap_or_default();
        for container in attached.split_whitespace() {
            let _ = Command::new("docker")
                .args(["network", "disconnect", "-f", &self.name, container])
                .stdout(Stdio::null())
                .stderr(Stdio::null())
                .status();
        }
        let _ = Command::new("docker")
            .args(["network", "rm", &self.name])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .status();
    }
}

/// Builds an image `FROM scratch` holding `files` (name, content) under `dir`, tagged `tag`;
/// it is removed when the answer is dropped.
pub fn scratch_image(dir: &Path, tag: &str, files: &[(&str, &[u8])]) -> DockerImages {
    let context = dir.join(format!("context-{}", unique("img")));
    std::fs::create_dir_all(&context).unwrap();
    let mut dockerfile = String::from("FROM scratch\n");
    for (name, content) in files {
        std::fs::write(context.join(name), content).unwrap();
        dockerfile.push_str(&format!("COPY {name} /{name}\n"));
    }
    std::fs::write(context.join("Dockerfile"), dockerfile).unwrap();
    let images = DockerImages {
        refs: vec![tag.to_string()],
    };
    docker_ok(&["build", "-q", "-t", tag, context.to_str().unwrap()]);
    images
}
