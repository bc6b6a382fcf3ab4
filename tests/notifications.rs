//! Webhook notifications against real HTTP receivers: events for pushes, pulls, mounts and
//! deletes arrive exactly once and in order per repository, with distribution's envelope, the
//! configured headers and the caller's name, while a failing or hung endpoint never slows a push;
//! events spooled while the endpoint was down arrive after a restart of the real binary.

mod common;

use std::collections::HashMap;
use std::io::{BufRead, BufReader, Read, Write};
use std::net::{TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use base64::Engine as _;
use common::{sha256, BerthProcess, TestRegistry};
use reqwest::Method;
use serde_json::Value;

const EVENTS_MEDIA_TYPE: &str = "application/vnd.docker.distribution.events.v1+json";

/// One notification request the receiver accepted.
#[derive(Debug, Clone)]
struct Received {
    headers: HashMap<String, Vec<String>>,
    body: Value,
}

/// A small HTTP/1.1 server: while `hung`, requests get no answer until it is released; after
/// that its next `failures` requests get 500; then each request is answered 200 and recorded.
struct Receiver {
    port: u16,
    hung: Arc<AtomicBool>,
    received: Arc<Mutex<Vec<Received>>>,
    /// Requests seen at all, answered or not.
    attempts: Arc<AtomicUsize>,
}

impl Receiver {
    fn start(hung: bool, failures: usize) -> Receiver {
        Self::on(TcpListener::bind("127.0.0.1:0").unwrap(), hung, failures)
    }

    fn on(listener: TcpListener, hung: bool, failures: usize) -> Receiver {
        let port = listener.local_addr().unwrap().port();
        let hung = Arc::new(AtomicBool::new(hung));
        let received = Arc::new(Mutex::new(Vec::new()));
        let attempts = Arc::new(AtomicUsize::new(0));
        let failures_left = Arc::new(AtomicUsize::new(failures));
        let (h, r, a) = (hung.clone(), received.clone(), attempts.clone());
        std::thread::spawn(move || {
            for stream in listener.incoming().map_while(Result::ok) {
                let (h, r, a, f) = (h.clone(), r.clone(), a.clone(), failures_left.clone());
                std::thread::spawn(move || serve(stream, &h, &r, &a, &f));
            }
        });
        Receiver {
            port,
            hung,
            received,
            attempts,
        }
    }

    fn url(&self) -> String {
        format!("http://127.0.0.1:{}/events", self.port)
    }

    fn received(&self) -> Vec<Received> {
        self.received.lock().unwrap().clone()
    }

    /// Waits until `n` requests were accepted (a little longer, to catch duplicates).
    fn wait_for(&self, n: usize, within: Duration) -> Vec<Received> {
        let start = Instant::now();
        while self.received.lock().unwrap().len() < n && start.elapsed() < within {
            std::thread::sleep(Duration::from_millis(20));
        }
        std::thread::sleep(Duration::from_millis(400));
        self.received()
    }
}

fn serve(
    stream: TcpStream,
    hung: &AtomicBool,
    received: &Mutex<Vec<Received>>,
    attempts: &AtomicUsize,
    failures_left: &AtomicUsize,
) {
    let mut reader = BufReader::new(stream.try_clone().unwrap());
    let mut line = String::new();
    if reader.read_line(&mut line).unwrap_or(0) == 0 {
        return;
    }
    let mut headers: HashMap<String, Vec<String>> = HashMap::new();
    loop {
        let mut h = String::new();
        if reader.read_line(&mut h).unwrap_or(0) == 0 {
            return;
        }
        let h = h.trim_end();
        if h.is_empty() {
            break;
        }
        if let Some((k, v)) = h.split_once(':') {
            headers
                .entry(k.trim().to_ascii_lowercase())
                .or_default()
                .push(v.trim().to_string());
        }
    }
    let len: usize = headers
        .get("content-length")
        .and_then(|v| v[0].parse().ok())
        .unwrap_or(0);
    let mut body = vec![0u8; len];
    if reader.read_exact(&mut body).is_err() {
        return;
    }
    attempts.fetch_add(1, Ordering::SeqCst);
    let mut stream = stream;
    let mut answer = |status: &str| {
        let _ = write!(
            stream,
            "HTTP/1.1 {status}\r\nContent-Length: 0\r\nConnection: close\r\n\r\n"
        );
    };
    if hung.load(Ordering::SeqCst) {
        while hung.load(Ordering::SeqCst) {
            std::thread::sleep(Duration::from_millis(10));
        }
        // berth gave up on this one long ago.
        answer("500 Internal Server Error");
        return;
    }
    if failures_left
        .fetch_update(Ordering::SeqCst, Ordering::SeqCst, |n| n.checked_sub(1))
        .is_ok()
    {
        answer("500 Internal Server Error");
        return;
    }
    received.lock().unwrap().push(Received {
        headers,
        body: serde_json::from_slice(&body).expect("the body is JSON"),
    });
    answer("200 OK");
}

fn basic(user: &str, password: &str) -> String {
    let encoded = base64::engine::general_purpose::STANDARD.encode(format!("{user}:{password}"));
    format!("Basic {encoded}")
}

/// The single event of each request (distribution sends one per request), checking the envelope.
fn events_in(received: &[Received]) -> Vec<Value> {
    received
        .iter()
        .map(|r| {
            assert_eq!(r.headers["content-type"], [EVENTS_MEDIA_TYPE]);
            let events = r.body["events"].as_array().expect("an envelope");
            assert_eq!(events.len(), 1, "{}", r.body);
            events[0].clone()
        })
        .collect()
}

/// `(action, digest, tag, fromRepository)` of each event of `repo`, in arrival order.
fn summary(events: &[Value], repo: &str) -> Vec<(String, String, String, String)> {
    let s = |v: &Value| v.as_str().unwrap_or_default().to_string();
    events
        .iter()
        .filter(|e| e["target"]["repository"] == repo)
        .map(|e| {
            let t = &e["target"];
            (
                s(&e["action"]),
                s(&t["digest"]),
                s(&t["tag"]),
                s(&t["fromRepository"]),
            )
        })
        .collect()
}

fn ev(action: &str, digest: &str, tag: &str, from: &str) -> (String, String, String, String) {
    (action.into(), digest.into(), tag.into(), from.into())
}

/// What `common::push_image_as` pushes to `repo:tag`: (config, layer, manifest) bytes.
fn image(repo: &str, tag: &str) -> (Vec<u8>, Vec<u8>, String) {
    let config = br#"{"architecture":"amd64","os":"linux"}"#.to_vec();
    let layer = format!("layer of {repo}:{tag}").into_bytes();
    let manifest = common::image_manifest(
        (&sha256(&config), config.len()),
        &[(&sha256(&layer), layer.len())],
    );
    (config, layer, manifest)
}

fn write_htpasswd(dir: &Path, user: &str, password: &str) -> PathBuf {
    let path = dir.join("htpasswd");
    let line = format!("{user}:{}\n", bcrypt::hash(password, 4).unwrap());
    std::fs::write(&path, line).unwrap();
    path
}

#[test]
fn events_arrive_once_in_order_and_a_failing_endpoint_never_slows_pushes() {
    let dir = tempfile::tempdir().unwrap();
    // Hung until released, then two 500s, then accepting.
    let flaky = Receiver::start(true, 2);
    // Always accepting; ignores pulls and blobs. Also the target of a disabled endpoint.
    let picky = Receiver::start(false, 0);
    let htpasswd = write_htpasswd(dir.path(), "alice", "wonderland");
    let config = dir.path().join("config.yml");
    std::fs::write(
        &config,
        format!(
            "version: 0.1\nlog:\n  level: warn\nhttp:\n  addr: 127.0.0.1:0\n\
             auth:\n  htpasswd:\n    realm: r\n    path: {htpasswd}\n\
             notifications:\n  endpoints:\n\
             \x20   - name: flaky\n      url: {flaky}\n      timeout: 300ms\n      threshold: 2\n      backoff: 100ms\n\
             \x20     headers:\n        Authorization: [Bearer secret-token]\n        X-Multi: [one, two]\n\
             \x20   - name: picky\n      url: {picky}\n      ignoredmediatypes: [application/octet-stream]\n\
             \x20     ignore:\n        actions: [pull]\n      headers:\n        X-Which: [picky]\n\
             \x20   - name: off\n      url: {picky}\n      disabled: true\n      headers:\n        X-Which: [off]\n",
            htpasswd = htpasswd.display(),
            flaky = flaky.url(),
            picky = picky.url(),
        ),
    )
    .unwrap();
    let root = dir.path().join("data");
    let reg = TestRegistry::builder()
        .config_file(&config)
        .filesystem(&root)
        .start();
    let auth = basic("alice", "wonderland");
    let auth = Some(auth.as_str());

    // Everything while the endpoint hangs: nothing may wait for it.
    let started = Instant::now();
    for repo in ["alpha", "beta"] {
        let r = common::push_image_as(&reg.url, repo, "v1", auth);
        assert_eq!(r.status(), 201, "{}", r.text().unwrap());
    }
    let (_, alpha_layer, alpha_manifest) = image("alpha", "v1");
    let (config_blob, beta_layer, beta_manifest) = image("beta", "v1");
    let pull = |method: Method, path: &str| {
        let r = common::request_as(method, &reg.url(path), auth)
            .header("Accept", "application/vnd.oci.image.manifest.v1+json")
            .send()
            .unwrap();
        assert_eq!(r.status(), 200, "{path}");
    };
    // HEADs are not pulls; GETs are.
    pull(Method::HEAD, "/v2/alpha/manifests/v1");
    pull(Method::GET, "/v2/alpha/manifests/v1");
    let layer_path = format!("/v2/alpha/blobs/{}", sha256(&alpha_layer));
    pull(Method::HEAD, &layer_path);
    pull(Method::GET, &layer_path);
    let mount = common::request_as(
        Method::POST,
        &reg.url(&format!(
            "/v2/beta/blobs/uploads/?mount={}&from=alpha",
            sha256(&alpha_layer)
        )),
        auth,
    )
    .send()
    .unwrap();
    assert_eq!(mount.status(), 201);
    let deleted = common::request_as(
        Method::DELETE,
        &reg.url(&format!(
            "/v2/beta/manifests/{}",
            sha256(beta_manifest.as_bytes())
        )),
        auth,
    )
    .send()
    .unwrap();
    assert_eq!(deleted.status(), 202);
    let took = started.elapsed();
    assert!(
        took < Duration::from_secs(5),
        "pushes waited for the hung endpoint: {took:?}"
    );
    assert!(
        flaky.received().is_empty(),
        "nothing is accepted while hung"
    );
    std::thread::sleep(Duration::from_millis(700));
    assert!(
        flaky.attempts.load(Ordering::SeqCst) >= 2,
        "timed-out requests are retried"
    );

    flaky.hung.store(false, Ordering::SeqCst);
    let got = flaky.wait_for(10, Duration::from_secs(20));
    let events = events_in(&got);
    let ids: std::collections::HashSet<&str> =
        events.iter().map(|e| e["id"].as_str().unwrap()).collect();
    assert_eq!(ids.len(), events.len(), "an event arrived twice");
    assert_eq!(events.len(), 10, "{events:#?}");

    let config_digest = sha256(&config_blob);
    let alpha_layer_digest = sha256(&alpha_layer);
    let alpha_manifest_digest = sha256(alpha_manifest.as_bytes());
    let beta_manifest_digest = sha256(beta_manifest.as_bytes());
    assert_eq!(
        summary(&events, "alpha"),
        [
            ev("push", &config_digest, "", ""),
            ev("push", &alpha_layer_digest, "", ""),
            ev("push", &alpha_manifest_digest, "v1", ""),
            ev("pull", &alpha_manifest_digest, "v1", ""),
            ev("pull", &alpha_layer_digest, "", ""),
        ]
    );
    assert_eq!(
        summary(&events, "beta"),
        [
            ev("push", &config_digest, "", ""),
            ev("push", &sha256(&beta_layer), "", ""),
            ev("push", &beta_manifest_digest, "v1", ""),
            ev("mount", &alpha_layer_digest, "", "alpha"),
            ev("delete", &beta_manifest_digest, "", ""),
        ]
    );
    for e in &events {
        assert_eq!(e["actor"]["name"], "alice");
        let request = &e["request"];
        assert!(request["addr"].as_str().unwrap().starts_with("127.0.0.1"));
        assert_eq!(request["host"], reg.host.as_str());
        assert!(!request["id"].as_str().unwrap().is_empty());
        let method = match e["action"].as_str().unwrap() {
            "pull" => "GET",
            "mount" => "POST",
            "delete" => "DELETE",
            _ => "PUT",
        };
        assert_eq!(request["method"], method);
        assert!(e["source"]["instanceID"]
            .as_str()
            .is_some_and(|s| !s.is_empty()));
        let t = &e["target"];
        match (e["action"].as_str().unwrap(), t["mediaType"].as_str()) {
            ("delete", media) => assert_eq!(media, None),
            (_, Some("application/octet-stream")) => {
                let digest = t["digest"].as_str().unwrap();
                let size = [&config_blob, &alpha_layer, &beta_layer]
                    .iter()
                    .find(|b| sha256(b) == digest)
                    .map(|b| b.len())
                    .unwrap();
                assert_eq!(t["size"], size);
                assert_eq!(t["length"], size);
                assert!(t["url"]
                    .as_str()
                    .unwrap()
                    .ends_with(&format!("/blobs/{digest}")));
            }
            (_, Some("application/vnd.oci.image.manifest.v1+json")) => {
                let len = if e["target"]["repository"] == "alpha" {
                    alpha_manifest.len()
                } else {
                    beta_manifest.len()
                };
                assert_eq!(t["size"], len);
                assert!(t["url"].as_str().unwrap().contains("/manifests/sha256:"));
            }
            other => panic!("unexpected media type {other:?}"),
        }
    }
    let first = &got[0].headers;
    assert_eq!(first["authorization"], ["Bearer secret-token"]);
    assert_eq!(first["x-multi"], ["one", "two"]);

    // The picky endpoint: manifest pushes and the delete; the disabled one: nothing.
    let picky_got = picky.wait_for(3, Duration::from_secs(10));
    assert!(picky_got.iter().all(|r| r.headers["x-which"] == ["picky"]));
    let picky_events = events_in(&picky_got);
    assert_eq!(
        summary(&picky_events, "alpha"),
        [ev("push", &alpha_manifest_digest, "v1", "")]
    );
    assert_eq!(
        summary(&picky_events, "beta"),
        [
            ev("push", &beta_manifest_digest, "v1", ""),
            ev("delete", &beta_manifest_digest, "", ""),
        ]
    );
    // Delivered: the spool is empty again.
    let spool = root.join("_berth/notifications/flaky/0.log");
    assert_eq!(std::fs::metadata(spool).unwrap().len(), 0);
}

/// Waits for a process to exit (it stays a zombie until its parent reaps it).
fn wait_exit(pid: u32, within: Duration) -> bool {
    let start = Instant::now();
    while start.elapsed() < within {
        match std::fs::read_to_string(format!("/proc/{pid}/stat")) {
            Err(_) => return true,
            Ok(stat)
                if stat
                    .rsplit(')')
                    .next()
                    .is_some_and(|s| s.trim_start().starts_with('Z')) =>
            {
                return true
            }
            Ok(_) => std::thread::sleep(Duration::from_millis(20)),
        }
    }
    false
}

/// A configuration in `dir` with storage under `dir/data` and one endpoint, `hook`, at `url`,
/// retried quickly.
fn hook_config(dir: &Path, url: &str) -> PathBuf {
    let config = dir.join("config.yml");
    std::fs::write(
        &config,
        format!(
            "version: 0.1\nlog:\n  level: info\nstorage:\n  filesystem:\n    rootdirectory: {root}\n\
             notifications:\n  endpoints:\n    - name: hook\n      url: {url}\n\
             \x20     timeout: 200ms\n      threshold: 1\n      backoff: 50ms\n",
            root = dir.join("data").display()
        ),
    )
    .unwrap();
    config
}

#[test]
fn events_spooled_while_the_endpoint_is_down_arrive_after_a_restart() {
    let dir = tempfile::tempdir().unwrap();
    // A port nobody listens on yet.
    let port = common::free_port();
    let config = hook_config(dir.path(), &format!("http://127.0.0.1:{port}/events"));
    let berth = BerthProcess::start(&config, &[]);
    let r = common::push_image_as(&berth.url, "gamma", "v1", None);
    assert_eq!(r.status(), 201);
    let spool = dir.path().join("data/_berth/notifications/hook/0.log");
    let lines = std::fs::read_to_string(&spool).unwrap();
    assert_eq!(lines.lines().count(), 3, "{lines}");
    // A graceful stop.
    unsafe { libc::kill(berth.pid() as i32, libc::SIGTERM) };
    assert!(
        wait_exit(berth.pid(), Duration::from_secs(15)),
        "berth stops on SIGTERM"
    );
    drop(berth);

    let receiver = Receiver::on(TcpListener::bind(("127.0.0.1", port)).unwrap(), false, 0);
    let berth = BerthProcess::start(&config, &[]);
    let got = receiver.wait_for(3, Duration::from_secs(15));
    let events = events_in(&got);
    let (config_blob, layer, manifest) = image("gamma", "v1");
    assert_eq!(
        summary(&events, "gamma"),
        [
            ev("push", &sha256(&config_blob), "", ""),
            ev("push", &sha256(&layer), "", ""),
            ev("push", &sha256(manifest.as_bytes()), "v1", ""),
        ]
    );
    // Open registry: no actor name.
    assert_eq!(events[0]["actor"], serde_json::json!({}));
    // Events of the new run follow.
    let pulled = common::client()
        .get(format!("{}/v2/gamma/manifests/v1", berth.url))
        .header("Accept", "application/vnd.oci.image.manifest.v1+json")
        .send()
        .unwrap();
    assert_eq!(pulled.status(), 200);
    let got = receiver.wait_for(4, Duration::from_secs(10));
    assert_eq!(got.len(), 4);
    assert_eq!(events_of(&got[3])["action"], "pull");
}

fn events_of(r: &Received) -> Value {
    r.body["events"][0].clone()
}

#[test]
fn credentials_and_query_of_an_endpoint_url_never_reach_the_log() {
    let dir = tempfile::tempdir().unwrap();
    // Nobody listens: every delivery fails and is logged.
    let port = common::free_port();
    let config = hook_config(
        dir.path(),
        &format!("http://hookuser:hooksecret@127.0.0.1:{port}/events?token=querysecret#frag"),
    );
    let berth = BerthProcess::start(&config, &[("RUST_LOG", "trace")]);
    let r = common::push_image_as(&berth.url, "delta", "v1", None);
    assert_eq!(r.status(), 201);
    let start = Instant::now();
    let failed = |lines: &[String]| lines.iter().any(|l| l.contains("\"hook\" failed"));
    while !failed(&berth.log_lines()) && start.elapsed() < Duration::from_secs(15) {
        std::thread::sleep(Duration::from_millis(50));
    }
    let log = berth.log_lines().join("\n");
    assert!(
        failed(&berth.log_lines()),
        "a failed delivery is logged:\n{log}"
    );
    assert!(
        log.contains(&format!("(http://127.0.0.1:{port}/events)")),
        "the endpoint is named without its secrets:\n{log}"
    );
    for secret in ["hookuser", "hooksecret", "querysecret", "frag"] {
        assert!(!log.contains(secret), "{secret:?} in the log:\n{log}");
    }
}
