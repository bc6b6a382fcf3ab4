//! Shared test set-up: a registry started on a free port, in this process ([`TestRegistry`]) or
//! as the real `berth` binary ([`BerthProcess`]), plus small helpers for talking to it.
#![allow(dead_code)]

use std::collections::HashMap;
use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::{mpsc, Arc, Mutex};
use std::time::{Duration, Instant};

use sha2::Digest as _;

pub mod cluster;
pub mod copy_limit;
pub mod docker;
pub mod garage;
pub mod images;
pub mod redis;
pub mod s3;
pub mod tools;
pub mod uploads;

/// The repository's `storage-fixtures/`.
pub fn fixtures() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("storage-fixtures")
}

pub fn sha256(bytes: &[u8]) -> String {
    format!("sha256:{}", hex::encode(sha2::Sha256::digest(bytes)))
}

pub fn sha512(bytes: &[u8]) -> String {
    format!("sha512:{}", hex::encode(sha2::Sha512::digest(bytes)))
}

/// `len` bytes that differ for every `seed` (and are the same on every run).
pub fn seeded_bytes(seed: &str, len: usize) -> Vec<u8> {
    let mut state = seed.bytes().fold(0xcbf2_9ce4_8422_2325u64, |h, b| {
        (h ^ u64::from(b)).wrapping_mul(0x100_0000_01b3)
    });
    (0..len)
        .map(|_| {
            // xorshift64
            state ^= state << 13;
            state ^= state >> 7;
            state ^= state << 17;
            (state >> 24) as u8
        })
        .collect()
}

/// Which storage a test registry uses.
#[derive(Clone)]
pub enum Store {
    Memory,
    Filesystem(PathBuf),
    /// A bucket on an S3 server: `(endpoint variables)`.
    S3(Vec<(String, String)>),
}

/// The storage of tests that do not ask for a particular one: in memory, or a fresh bucket on
/// the shared S3 server when the suite runs with `BERTH_TEST_STORAGE=s3`.
pub fn default_store() -> Store {
    if s3::selected() {
        let server = s3::S3Server::shared();
        Store::S3(server.env(&server.bucket()))
    } else {
        Store::Memory
    }
}

/// Builds a registry served from a thread of the test process.
pub struct Builder {
    store: Store,
    env: HashMap<String, String>,
    faults: Option<berth::storage::faults::Faults>,
    config_file: Option<PathBuf>,
}

impl Builder {
    /// Starts from this configuration file instead of the built-in default (the storage and
    /// address variables set by the builder still apply on top).
    pub fn config_file(mut self, path: &Path) -> Self {
        self.config_file = Some(path.to_path_buf());
        self
    }

    pub fn filesystem(mut self, root: &Path) -> Self {
        self.store = Store::Filesystem(root.to_path_buf());
        self
    }

    /// Any storage, e.g. a bucket shared with another registry.
    pub fn store(mut self, store: Store) -> Self {
        self.store = store;
        self
    }

    /// Sets a configuration key through its `REGISTRY_…` variable.
    pub fn env(mut self, key: &str, value: &str) -> Self {
        self.env.insert(key.to_string(), value.to_string());
        self
    }

    /// Injects storage faults controlled through `faults`.
    pub fn faults(mut self, faults: &berth::storage::faults::Faults) -> Self {
        self.faults = Some(faults.clone());
        self
    }

    pub fn delete_enabled(self, on: bool) -> Self {
        self.env(
            "REGISTRY_STORAGE_DELETE_ENABLED",
            if on { "true" } else { "false" },
        )
    }

    pub fn start(self) -> TestRegistry {
        let mut env = self.env;
        env.entry("REGISTRY_HTTP_ADDR".into())
            .or_insert_with(|| "127.0.0.1:0".into());
        env.entry("REGISTRY_STORAGE_DELETE_ENABLED".into())
            .or_insert_with(|| "true".into());
        match &self.store {
            Store::Memory => {
                env.insert("REGISTRY_STORAGE".into(), "inmemory".into());
            }
            Store::Filesystem(root) => {
                env.insert(
                    "REGISTRY_STORAGE_FILESYSTEM_ROOTDIRECTORY".into(),
                    root.display().to_string(),
                );
            }
            Store::S3(vars) => env.extend(vars.iter().cloned()),
        }
        let config = berth::config::Config::load(self.config_file.as_deref(), &env)
            .expect("test configuration loads");
        // `http.tls` (or `REGISTRY_HTTP_TLS_CERTIFICATE` and `…_KEY`) make it serve HTTPS.
        let scheme = if config.http.tls.is_some() {
            "https"
        } else {
            "http"
        };
        let (tx, rx) = mpsc::channel();
        let faults = self.faults;
        let thread = std::thread::spawn(move || {
            let system = actix_web::rt::System::new();
            system.block_on(async move {
                let mut storage = berth::storage::Storage::open_coordinated(&config)
                    .await
                    .expect("storage opens");
                if let Some(faults) = faults {
                    storage = storage.with_faults(faults);
                }
                let bound = berth::server::bind(&config, storage).expect("server binds");
                tx.send((
                    bound.addrs[0],
                    bound.debug_addrs.first().copied(),
                    actix_web::rt::System::current(),
                ))
                .unwrap();
                actix_web::rt::spawn(bound.server);
            });
            // Until `System::stop`, which also stops the server's and the hashing arbiters.
            let _ = system.run();
        });
        let (addr, debug, system) = rx.recv().expect("server started");
        TestRegistry {
            url: format!("{scheme}://{addr}"),
            host: addr.to_string(),
            debug_url: debug.map(|d| format!("http://{d}")),
            system,
            thread: Some(thread),
        }
    }
}

/// A registry running in this process until dropped.
pub struct TestRegistry {
    /// `http://127.0.0.1:PORT` (`https://` with TLS)
    pub url: String,
    /// `127.0.0.1:PORT`
    pub host: String,
    /// The debug listener, `http://127.0.0.1:PORT`, when `http.debug.addr` is configured.
    pub debug_url: Option<String>,
    system: actix_web::rt::System,
    thread: Option<std::thread::JoinHandle<()>>,
}

impl TestRegistry {
    pub fn builder() -> Builder {
        Builder {
            store: default_store(),
            env: HashMap::new(),
            faults: None,
            config_file: None,
        }
    }

    /// An in-memory registry with deletes enabled.
    pub fn start() -> TestRegistry {
        Self::builder().start()
    }

    pub fn url(&self, path: &str) -> String {
        format!("{}{}", self.url, path)
    }
}

impl Drop for TestRegistry {
    fn drop(&mut self) {
        self.system.stop();
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

/// The real `berth` binary, started with a configuration file, until dropped.
pub struct BerthProcess {
    /// `http://127.0.0.1:PORT`, or `https://…` when the configuration has `http.tls`.
    pub url: String,
    /// `127.0.0.1:PORT`
    pub host: String,
    child: Child,
    /// Every line the process wrote to stderr so far.
    log: Arc<Mutex<Vec<String>>>,
}

impl BerthProcess {
    /// Starts `berth serve CONFIG` with `env` added to the environment; the configuration's
    /// `http.addr` should use port 0 (the real port is read from the log).
    pub fn start(config: &Path, env: &[(&str, &str)]) -> BerthProcess {
        let mut cmd = Command::new(env!("CARGO_BIN_EXE_berth"));
        cmd.arg("serve")
            .arg(config)
            .env("REGISTRY_HTTP_ADDR", "127.0.0.1:0")
            .env("RUST_LOG", "info")
            .stdout(Stdio::null())
            .stderr(Stdio::piped());
        for (k, v) in env {
            cmd.env(k, v);
        }
        let mut child = cmd.spawn().expect("berth binary starts");
        // `listening on http://ADDR`, or `https://ADDR` with TLS.
        let log = Arc::new(Mutex::new(Vec::new()));
        let rx = watch_log(
            child.stderr.take().unwrap(),
            "listening on ",
            "berth",
            Some(log.clone()),
        );
        let url = match rx.recv_timeout(Duration::from_secs(30)) {
            Ok(url) => url,
            Err(e) => {
                let _ = child.kill();
                let status = child.wait();
                panic!("berth did not report its address ({e}); exit: {status:?}");
            }
        };
        let host = url
            .split_once("://")
            .map_or(url.as_str(), |(_, host)| host)
            .to_string();
        BerthProcess {
            url,
            host,
            child,
            log,
        }
    }

    /// The process id (to send it signals).
    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// The lines the process wrote to stderr so far.
    pub fn log_lines(&self) -> Vec<String> {
        self.log.lock().unwrap().clone()
    }

    /// Waits up to `timeout` for the process to exit.
    pub fn wait_exit(&mut self, timeout: Duration) -> Option<std::process::ExitStatus> {
        let until = Instant::now() + timeout;
        loop {
            if let Some(status) = self.child.try_wait().unwrap() {
                return Some(status);
            }
            if Instant::now() > until {
                return None;
            }
            std::thread::sleep(Duration::from_millis(20));
        }
    }
}

impl Drop for BerthProcess {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Reads a server's log (to its end, so the pipe never fills) and sends the address that follows
/// `marker` on the first line that has it. With `BERTH_TEST_LOG` set, echoes the log as `name:`.
pub fn watch_for_address(
    log: impl std::io::Read + Send + 'static,
    marker: &'static str,
    name: &'static str,
) -> mpsc::Receiver<String> {
    watch_log(log, marker, name, None)
}

/// [`watch_for_address`], also keeping every line in `lines`.
pub fn watch_log(
    log: impl std::io::Read + Send + 'static,
    marker: &'static str,
    name: &'static str,
    lines: Option<Arc<Mutex<Vec<String>>>>,
) -> mpsc::Receiver<String> {
    let (tx, rx) = mpsc::channel();
    std::thread::spawn(move || {
        let mut sent = false;
        for line in BufReader::new(log).lines().map_while(Result::ok) {
            if !sent {
                if let Some(rest) = line.split(marker).nth(1) {
                    let addr: String = rest
                        .chars()
                        .take_while(|c| !c.is_whitespace() && *c != '"')
                        .collect();
                    let _ = tx.send(addr);
                    sent = true;
                }
            }
            if std::env::var_os("BERTH_TEST_LOG").is_some() {
                eprintln!("{name}: {line}");
            }
            if let Some(lines) = &lines {
                lines.lock().unwrap().push(line);
            }
        }
    });
    rx
}

/// [`client`], connecting from the loopback address `source` (`127.0.0.3`): another client as
/// far as the server can tell.
pub fn client_from(source: &str) -> reqwest::blocking::Client {
    reqwest::blocking::Client::builder()
        .redirect(reqwest::redirect::Policy::none())
        .local_address(source.parse::<std::net::IpAddr>().expect("an address"))
        .timeout(Duration::from_secs(120))
        .build()
        .unwrap()
}

/// A blocking HTTP client that does not follow redirects.
pub fn client() -> reqwest::blocking::Client {
    reqwest::blocking::Client::builder()
        .redirect(reqwest::redirect::Policy::none())
        .timeout(Duration::from_secs(120))
        .build()
        .unwrap()
}

/// Pushes a blob in one POST+PUT and returns its digest.
pub fn push_blob(reg: &TestRegistry, repo: &str, content: &[u8]) -> String {
    let c = client();
    let digest = sha256(content);
    let r = c
        .post(reg.url(&format!("/v2/{repo}/blobs/uploads/")))
        .send()
        .unwrap();
    assert_eq!(r.status(), 202);
    let location = r.headers()["location"].to_str().unwrap().to_string();
    let sep = if location.contains('?') { '&' } else { '?' };
    let r = c
        .put(format!("{location}{sep}digest={digest}"))
        .body(content.to_vec())
        .send()
        .unwrap();
    assert_eq!(r.status(), 201, "{}", r.text().unwrap_or_default());
    digest
}

/// Opens an upload in `repo` on the registry at `base` (`http://HOST:PORT`); answers its
/// `Location`.
pub fn start_upload_at(base: &str, repo: &str) -> String {
    let r = client()
        .post(format!("{base}/v2/{repo}/blobs/uploads/"))
        .send()
        .unwrap();
    assert_eq!(r.status(), 202, "POST of an upload");
    r.headers()["location"].to_str().unwrap().to_string()
}

/// Sends one chunk of an upload: `PATCH` of `bytes` at `offset` with its `Content-Range`.
pub fn patch_chunk(location: &str, offset: u64, bytes: &[u8]) -> reqwest::blocking::Response {
    client()
        .patch(location)
        .header("Content-Type", "application/octet-stream")
        .header(
            "Content-Range",
            format!("{offset}-{}", offset + bytes.len() as u64 - 1),
        )
        .body(bytes.to_vec())
        .send()
        .unwrap()
}

/// Completes an upload with `PUT ?digest=` and no body.
pub fn complete_upload(location: &str, digest: &str) -> reqwest::blocking::Response {
    let sep = if location.contains('?') { '&' } else { '?' };
    client()
        .put(format!("{location}{sep}digest={digest}"))
        .send()
        .unwrap()
}

/// A minimal OCI image manifest over the given config and layers (digest, size).
pub fn image_manifest(config: (&str, usize), layers: &[(&str, usize)]) -> String {
    let layers: Vec<String> = layers
        .iter()
        .map(|(d, s)| {
            format!(r#"{{"mediaType":"application/vnd.oci.image.layer.v1.tar","digest":"{d}","size":{s}}}"#)
        })
        .collect();
    format!(
        r#"{{"schemaVersion":2,"mediaType":"application/vnd.oci.image.manifest.v1+json","config":{{"mediaType":"application/vnd.oci.image.config.v1+json","digest":"{}","size":{}}},"layers":[{}]}}"#,
        config.0,
        config.1,
        layers.join(",")
    )
}

/// Pushes a small image (config + one layer) under `reference`; returns the manifest's digest.
pub fn push_image(reg: &TestRegistry, repo: &str, reference: &str, layer: &[u8]) -> String {
    let config = br#"{"architecture":"amd64","os":"linux"}"#;
    let cd = push_blob(reg, repo, config);
    let ld = push_blob(reg, repo, layer);
    let manifest = image_manifest((&cd, config.len()), &[(&ld, layer.len())]);
    let r = client()
        .put(reg.url(&format!("/v2/{repo}/manifests/{reference}")))
        .header("Content-Type", "application/vnd.oci.image.manifest.v1+json")
        .body(manifest.clone())
        .send()
        .unwrap();
    assert_eq!(r.status(), 201, "{}", r.text().unwrap_or_default());
    sha256(manifest.as_bytes())
}

/// Asserts a response is the spec's JSON error with this status and (first) code.
pub fn assert_error(response: reqwest::blocking::Response, status: u16, code: &str) {
    assert_eq!(
        response.status().as_u16(),
        status,
        "status of {}",
        response.url()
    );
    assert_eq!(error_code(&response.text().unwrap()), code);
}

/// Asserts a response is `429 TOOMANYREQUESTS` with a `Retry-After` within the minute.
pub fn assert_too_many_requests(response: reqwest::blocking::Response) {
    let retry: u64 = response.headers()["retry-after"]
        .to_str()
        .unwrap()
        .parse()
        .unwrap();
    assert!((1..=60).contains(&retry), "Retry-After {retry}");
    assert_error(response, 429, "TOOMANYREQUESTS");
}

/// The first error code of a spec error body.
pub fn error_code(body: &str) -> String {
    let v: serde_json::Value = serde_json::from_str(body)
        .unwrap_or_else(|e| panic!("error body is not JSON ({e}): {body:?}"));
    v["errors"][0]["code"]
        .as_str()
        .unwrap_or_else(|| panic!("no errors[0].code in {body}"))
        .to_string()
}

/// Runs a command, failing the test (with its output) if it cannot start or fails.
pub fn run(cmd: &mut Command) -> String {
    let out = cmd.output().unwrap_or_else(|e| {
        panic!("cannot run {cmd:?}: {e} (is it installed? `make test` installs it)")
    });
    let stdout = String::from_utf8_lossy(&out.stdout).to_string();
    assert!(
        out.status.success(),
        "{cmd:?} failed: {}\nstdout: {stdout}\nstderr: {}",
        out.status,
        String::from_utf8_lossy(&out.stderr)
    );
    stdout
}

/// A TCP port that was free a moment ago, for servers whose own configuration must name their
/// address before they start (a token realm pointing back at the registry).
pub fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

/// A request with `Authorization: authorization` when given.
pub fn request_as(
    method: reqwest::Method,
    url: &str,
    authorization: Option<&str>,
) -> reqwest::blocking::RequestBuilder {
    let r = client().request(method, url);
    match authorization {
        Some(a) => r.header("Authorization", a),
        None => r,
    }
}

/// Pushes `content` as a blob of `repo` (POST, then PUT with the digest) on the registry at
/// `base`, as `authorization`: the POST's response if it is refused, else the PUT's.
pub fn push_blob_as(
    base: &str,
    repo: &str,
    content: &[u8],
    authorization: Option<&str>,
) -> reqwest::blocking::Response {
    use reqwest::Method;
    let r = request_as(
        Method::POST,
        &format!("{base}/v2/{repo}/blobs/uploads/"),
        authorization,
    )
    .send()
    .unwrap();
    if r.status() != 202 {
        return r;
    }
    let location = r.headers()["location"].to_str().unwrap().to_string();
    let sep = if location.contains('?') { '&' } else { '?' };
    let put = format!("{location}{sep}digest={}", sha256(content));
    request_as(Method::PUT, &put, authorization)
        .body(content.to_vec())
        .send()
        .unwrap()
}

/// Pushes a one-layer image `repo:tag` as `authorization`: the first refused response, or the
/// manifest PUT's.
pub fn push_image_as(
    base: &str,
    repo: &str,
    tag: &str,
    authorization: Option<&str>,
) -> reqwest::blocking::Response {
    let config = br#"{"architecture":"amd64","os":"linux"}"#.to_vec();
    let layer = format!("layer of {repo}:{tag}").into_bytes();
    for blob in [&config, &layer] {
        let r = push_blob_as(base, repo, blob, authorization);
        if r.status() != 201 {
            return r;
        }
    }
    let manifest = image_manifest(
        (&sha256(&config), config.len()),
        &[(&sha256(&layer), layer.len())],
    );
    request_as(
        reqwest::Method::PUT,
        &format!("{base}/v2/{repo}/manifests/{tag}"),
        authorization,
    )
    .header("Content-Type", "application/vnd.oci.image.manifest.v1+json")
    .body(manifest)
    .send()
    .unwrap()
}
