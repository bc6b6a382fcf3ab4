//! Operating berth: Prometheus metrics on the debug listener (parsed as the text format), the
//! storage health check (`/debug/health`, `/v2/` answering 503), graceful shutdown of the real
//! binary on SIGTERM, and JSON logs with `log.fields` and an access log free of credentials.

mod common;

use std::collections::{BTreeMap, HashMap};
use std::io::Read;
use std::time::{Duration, Instant};

use base64::Engine as _;
use berth::storage::faults::{Faults, Op};
use common::{assert_error, client, push_blob, BerthProcess, TestRegistry};

/// One sample of the text format: name, labels, value.
#[derive(Debug)]
struct Sample {
    name: String,
    labels: BTreeMap<String, String>,
    value: f64,
}

/// Parses Prometheus' text exposition format strictly enough to catch a malformed scrape:
/// every sample belongs to a family declared by `# TYPE` before it (histograms through their
/// `_bucket`, `_sum` and `_count` series), labels are `name="value"` with escapes, values parse.
fn parse_prometheus(text: &str) -> (HashMap<String, String>, Vec<Sample>) {
    let mut types = HashMap::new();
    let mut samples = Vec::new();
    for line in text.lines() {
        if line.is_empty() {
            continue;
        }
        if let Some(rest) = line.strip_prefix("# TYPE ") {
            let (name, kind) = rest.split_once(' ').expect("# TYPE name kind");
            assert!(
                ["counter", "gauge", "histogram", "summary", "untyped"].contains(&kind),
                "{line}"
            );
            assert!(types.insert(name.to_string(), kind.to_string()).is_none());
            continue;
        }
        if line.starts_with("# HELP ") {
            continue;
        }
        assert!(!line.starts_with('#'), "unexpected comment {line:?}");
        let (series, value) = line.rsplit_once(' ').expect("sample and value");
        let value: f64 = match value {
            "+Inf" => f64::INFINITY,
            "-Inf" => f64::NEG_INFINITY,
            v => v.parse().unwrap_or_else(|_| panic!("value of {line:?}")),
        };
        let (name, labels) = match series.split_once('{') {
            None => (series.to_string(), BTreeMap::new()),
            Some((name, rest)) => {
                let body = rest.strip_suffix('}').expect("labels end with }");
                (name.to_string(), parse_labels(body))
            }
        };
        assert!(
            name.chars()
                .all(|c| c.is_ascii_alphanumeric() || c == '_' || c == ':'),
            "metric name {name:?}"
        );
        let family = ["_bucket", "_sum", "_count"]
            .iter()
            .find_map(|s| {
                name.strip_suffix(s)
                    .filter(|f| types.get(*f).is_some_and(|t| t == "histogram"))
            })
            .unwrap_or(&name);
        assert!(types.contains_key(family), "{name} has no # TYPE before it");
        samples.push(Sample {
            name,
            labels,
            value,
        });
    }
    (types, samples)
}

fn parse_labels(body: &str) -> BTreeMap<String, String> {
    let mut labels = BTreeMap::new();
    let mut chars = body.chars().peekable();
    while chars.peek().is_some() {
        let key: String = chars.by_ref().take_while(|c| *c != '=').collect();
        assert_eq!(chars.next(), Some('"'), "label {key} is quoted");
        let mut value = String::new();
        loop {
            match chars.next().expect("closing quote") {
                '\\' => match chars.next().expect("escaped character") {
                    'n' => value.push('\n'),
                    c => value.push(c),
                },
                '"' => break,
                c => value.push(c),
            }
        }
        labels.insert(key, value);
        match chars.next() {
            None | Some(',') => {}
            Some(c) => panic!("unexpected {c:?} after a label"),
        }
    }
    labels
}

/// The value of the sample `name` whose labels include `want`, or 0 when there is none.
fn value(samples: &[Sample], name: &str, want: &[(&str, &str)]) -> f64 {
    samples
        .iter()
        .filter(|s| s.name == name)
        .find(|s| {
            want.iter()
                .all(|(k, v)| s.labels.get(*k).map(String::as_str) == Some(*v))
        })
        .map_or(0.0, |s| s.value)
}

fn scrape(reg: &TestRegistry) -> Vec<Sample> {
    let r = client()
        .get(format!("{}/metrics", reg.debug_url.as_ref().unwrap()))
        .send()
        .unwrap();
    assert_eq!(r.status(), 200);
    assert!(r.headers()["content-type"]
        .to_str()
        .unwrap()
        .starts_with("text/plain"));
    parse_prometheus(&r.text().unwrap()).1
}

/// Scrapes until `done` holds for the samples (a request is recorded when its response body
/// ends, a moment after the client has read it), at most 5 s.
fn scrape_until(reg: &TestRegistry, done: impl Fn(&[Sample]) -> bool) -> Vec<Sample> {
    let until = Instant::now() + Duration::from_secs(5);
    loop {
        let samples = scrape(reg);
        if done(&samples) || Instant::now() > until {
            return samples;
        }
        std::thread::sleep(Duration::from_millis(20));
    }
}

#[test]
fn metrics_count_exactly_what_was_pushed_and_pulled() {
    let reg = TestRegistry::builder()
        .env("REGISTRY_HTTP_DEBUG_ADDR", "127.0.0.1:0")
        .start();
    let c = client();
    let content: Vec<u8> = (0..150_000u32).map(|i| (i % 251) as u8).collect();
    let digest = push_blob(&reg, "metrics/app", &content);
    let blob = reg.url(&format!("/v2/metrics/app/blobs/{digest}"));
    for _ in 0..2 {
        let r = c.get(&blob).send().unwrap();
        assert_eq!(r.status(), 200);
        assert_eq!(r.bytes().unwrap().len(), content.len());
    }
    let r = c.get(&blob).header("Range", "bytes=10-19").send().unwrap();
    assert_eq!(r.status(), 206);
    assert_eq!(r.bytes().unwrap().len(), 10);
    assert_eq!(c.head(&blob).send().unwrap().status(), 200);
    let missing = format!("sha256:{}", "0".repeat(64));
    let r = c
        .get(reg.url(&format!("/v2/metrics/app/blobs/{missing}")))
        .send()
        .unwrap();
    assert_eq!(r.status(), 404);

    let pulled = 2.0 * content.len() as f64 + 10.0;
    let samples = scrape_until(&reg, |s| {
        value(s, "berth_bytes_pulled_total", &[("route", "blob")]) >= pulled
            && value(
                s,
                "berth_http_requests_total",
                &[("route", "blob"), ("method", "GET"), ("status", "404")],
            ) >= 1.0
    });
    let requests = |method, status| {
        value(
            &samples,
            "berth_http_requests_total",
            &[("route", "blob"), ("method", method), ("status", status)],
        )
    };
    assert_eq!(requests("GET", "200"), 2.0);
    assert_eq!(requests("GET", "206"), 1.0);
    assert_eq!(requests("GET", "404"), 1.0);
    assert_eq!(requests("HEAD", "200"), 1.0);
    assert_eq!(
        value(&samples, "berth_bytes_pulled_total", &[("route", "blob")]),
        pulled,
        "a HEAD and a 404 pull nothing"
    );
    assert_eq!(
        value(&samples, "berth_bytes_pushed_total", &[("route", "upload")]),
        content.len() as f64
    );
    assert_eq!(
        value(
            &samples,
            "berth_http_requests_total",
            &[("route", "upload"), ("method", "POST"), ("status", "202")]
        ),
        1.0
    );
    assert_eq!(
        value(
            &samples,
            "berth_http_requests_total",
            &[("route", "upload"), ("method", "PUT"), ("status", "201")]
        ),
        1.0
    );
    // Routes are kinds, never paths: no label value names the repository or the digest.
    for s in &samples {
        for v in s.labels.values() {
            assert!(!v.contains("metrics/app") && !v.contains("sha256"), "{s:?}");
        }
    }

    // Histograms: per series, buckets rise with `le`, never fall, and `+Inf` equals `_count`.
    let mut buckets: BTreeMap<String, Vec<(f64, f64)>> = BTreeMap::new();
    for s in samples
        .iter()
        .filter(|s| s.name == "berth_http_request_duration_seconds_bucket")
    {
        let mut key = s.labels.clone();
        let le = key.remove("le").expect("a bucket has le");
        let le = if le == "+Inf" {
            f64::INFINITY
        } else {
            le.parse().unwrap()
        };
        buckets
            .entry(format!("{key:?}"))
            .or_default()
            .push((le, s.value));
    }
    assert!(buckets.contains_key(&format!(
        "{:?}",
        BTreeMap::from([
            ("method".to_string(), "GET".to_string()),
            ("route".to_string(), "blob".to_string())
        ])
    )));
    for (series, values) in &buckets {
        assert!(
            values.windows(2).all(|w| w[0].0 < w[1].0),
            "{series}: le order"
        );
        assert!(
            values.windows(2).all(|w| w[0].1 <= w[1].1),
            "{series}: buckets are cumulative: {values:?}"
        );
        let (le, last) = values.last().unwrap();
        assert!(le.is_infinite());
        let count = samples
            .iter()
            .find(|s| {
                s.name == "berth_http_request_duration_seconds_count"
                    && format!("{:?}", s.labels) == *series
            })
            .expect("a _count per series");
        assert_eq!(*last, count.value, "{series}");
    }
    let blob_gets = samples
        .iter()
        .find(|s| {
            s.name == "berth_http_request_duration_seconds_count"
                && s.labels.get("route").map(String::as_str) == Some("blob")
                && s.labels.get("method").map(String::as_str) == Some("GET")
        })
        .unwrap();
    assert_eq!(blob_gets.value, 4.0, "200, 200, 206, 404");
}

fn get_json(url: &str) -> (u16, serde_json::Value) {
    let r = client().get(url).send().unwrap();
    let status = r.status().as_u16();
    (status, serde_json::from_str(&r.text().unwrap()).unwrap())
}

/// Polls `url` until it answers `status`, at most 10 s; answers the last body.
fn wait_for_status(url: &str, status: u16) -> serde_json::Value {
    let until = Instant::now() + Duration::from_secs(10);
    loop {
        let (got, body) = get_json(url);
        if got == status {
            return body;
        }
        assert!(Instant::now() < until, "{url} still answers {got}: {body}");
        std::thread::sleep(Duration::from_millis(50));
    }
}

#[test]
fn broken_storage_turns_health_and_the_base_endpoint_unavailable_until_it_heals() {
    let faults = Faults::default();
    let reg = TestRegistry::builder()
        .faults(&faults)
        .env("REGISTRY_HTTP_DEBUG_ADDR", "127.0.0.1:0")
        .env("REGISTRY_HEALTH_STORAGEDRIVER_ENABLED", "true")
        .env("REGISTRY_HEALTH_STORAGEDRIVER_INTERVAL", "50ms")
        .env("REGISTRY_HEALTH_STORAGEDRIVER_THRESHOLD", "3")
        .start();
    let health = format!("{}/debug/health", reg.debug_url.as_ref().unwrap());
    let c = client();
    let report = wait_for_status(&health, 200);
    assert_eq!(report["healthy"], true);
    assert_eq!(c.get(reg.url("/v2/")).send().unwrap().status(), 200);

    faults.fail(Op::Get, "_berth/health", usize::MAX);
    let report = wait_for_status(&health, 503);
    let check = &report["checks"]["storagedriver"];
    assert_eq!(report["healthy"], false);
    assert_eq!(check["status"], "unhealthy");
    assert!(check["consecutive_failures"].as_u64().unwrap() >= 3);
    assert!(
        check["last_error"].as_str().unwrap().contains("injected"),
        "{check}"
    );
    assert!(check["last_checked"].is_string());
    assert_error(c.get(reg.url("/v2/")).send().unwrap(), 503, "UNAVAILABLE");

    // A storage failure a client sees is counted, by kind.
    let digest = push_blob(&reg, "health/app", b"some layer");
    faults.fail(Op::Get, "blobs/sha256", 1);
    let r = c
        .get(reg.url(&format!("/v2/health/app/blobs/{digest}")))
        .send()
        .unwrap();
    assert_eq!(r.status(), 503);
    let samples = scrape(&reg);
    assert!(
        value(
            &samples,
            "berth_storage_errors_total",
            &[("kind", "backend")]
        ) >= 1.0
    );

    faults.heal();
    let report = wait_for_status(&health, 200);
    assert_eq!(report["checks"]["storagedriver"]["status"], "ok");
    assert_eq!(c.get(reg.url("/v2/")).send().unwrap().status(), 200);
}

/// A request body that trickles: `pieces` of `size` bytes, one every `pause`.
struct Trickle {
    pieces: usize,
    size: usize,
    pause: Duration,
    piece: Vec<u8>,
    at: usize,
}

impl Read for Trickle {
    fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
        if self.at == self.piece.len() {
            if self.pieces == 0 {
                return Ok(0);
            }
            std::thread::sleep(self.pause);
            self.pieces -= 1;
            self.piece = vec![b'x'; self.size];
            self.at = 0;
        }
        let n = buf.len().min(self.piece.len() - self.at);
        buf[..n].copy_from_slice(&self.piece[self.at..self.at + n]);
        self.at += n;
        Ok(n)
    }
}

#[test]
fn sigterm_drains_an_upload_in_flight_and_exits_zero() {
    let dir = tempfile::tempdir().unwrap();
    let config = dir.path().join("config.yml");
    std::fs::write(
        &config,
        format!(
            "version: 0.1\nlog:\n  level: info\nstorage:\n  filesystem:\n    rootdirectory: {}\nhttp:\n  addr: 127.0.0.1:0\n  draintimeout: 15s\n",
            dir.path().join("data").display()
        ),
    )
    .unwrap();
    let mut berth = BerthProcess::start(&config, &[]);
    let location = common::start_upload_at(&berth.url, "drain/app");
    let (pieces, size) = (40, 64 * 1024);
    let upload = std::thread::spawn(move || {
        let body = Trickle {
            pieces,
            size,
            pause: Duration::from_millis(100),
            piece: Vec::new(),
            at: 0,
        };
        // A client of its own, dropped at once: no kept-alive connection holds the drain up.
        let r = client()
            .patch(&location)
            .header("Content-Type", "application/octet-stream")
            .body(reqwest::blocking::Body::new(body))
            .send()
            .unwrap();
        (
            r.status().as_u16(),
            r.headers()
                .get("range")
                .map(|v| v.to_str().unwrap().to_string()),
        )
    });
    // The body is streaming (it takes 4 s): stop the server under it.
    std::thread::sleep(Duration::from_millis(700));
    let signalled = Instant::now();
    assert_eq!(unsafe { libc::kill(berth.pid() as i32, libc::SIGTERM) }, 0);
    // New connections are refused at once.
    let refused = loop {
        match std::net::TcpStream::connect(&berth.host) {
            Err(e) => break e,
            Ok(_) => {
                assert!(
                    signalled.elapsed() < Duration::from_secs(2),
                    "still accepting connections"
                );
                std::thread::sleep(Duration::from_millis(20));
            }
        }
    };
    assert_eq!(refused.kind(), std::io::ErrorKind::ConnectionRefused);
    assert!(
        berth.wait_exit(Duration::ZERO).is_none(),
        "the upload is still in flight"
    );
    let (status, range) = upload.join().unwrap();
    assert_eq!(status, 202, "the upload in flight completes");
    assert_eq!(
        range.as_deref(),
        Some(format!("0-{}", pieces * size - 1).as_str())
    );
    let exit = berth
        .wait_exit(Duration::from_secs(15))
        .expect("berth exits within the drain timeout");
    assert!(exit.success(), "{exit:?}");
    assert!(signalled.elapsed() < Duration::from_secs(15));
    let log = berth.log_lines().join("\n");
    assert!(log.contains("SIGTERM"), "{log}");
}

#[test]
fn json_logs_carry_the_fields_and_an_access_log_without_credentials() {
    let dir = tempfile::tempdir().unwrap();
    let password = "pa55-W0rd-never-logged";
    let htpasswd = dir.path().join("htpasswd");
    std::fs::write(
        &htpasswd,
        format!("alice:{}\n", bcrypt::hash(password, 4).unwrap()),
    )
    .unwrap();
    let config = dir.path().join("config.yml");
    std::fs::write(
        &config,
        format!(
            "version: 0.1\nlog:\n  level: info\n  formatter: json\n  fields:\n    environment: staging\n    service: registry\nstorage:\n  inmemory:\nvalidation:\n  manifests:\n    urls:\n      allow: [x]\nhttp:\n  addr: 127.0.0.1:0\nauth:\n  htpasswd:\n    realm: berth\n    path: {}\n",
            htpasswd.display()
        ),
    )
    .unwrap();
    let berth = BerthProcess::start(&config, &[]);
    let credentials = base64::engine::general_purpose::STANDARD.encode(format!("alice:{password}"));
    let c = client();
    let r = c
        .get(format!("{}/v2/?access_token=query-secret-token", berth.url))
        .header("Authorization", format!("Basic {credentials}"))
        .send()
        .unwrap();
    assert_eq!(r.status(), 200);
    let r = c
        .get(format!("{}/v2/_catalog", berth.url))
        .basic_auth("alice", Some("wrong-password"))
        .send()
        .unwrap();
    assert_eq!(r.status(), 401);

    let until = Instant::now() + Duration::from_secs(5);
    let lines = loop {
        let lines = berth.log_lines();
        let access = lines.iter().filter(|l| l.contains("berth::access")).count();
        if access >= 2 || Instant::now() > until {
            break lines;
        }
        std::thread::sleep(Duration::from_millis(20));
    };
    let mut access = Vec::new();
    for line in &lines {
        let v: serde_json::Value = serde_json::from_str(line)
            .unwrap_or_else(|e| panic!("a log line is not JSON ({e}): {line}"));
        for key in ["time", "level", "target", "message"] {
            assert!(v[key].is_string(), "{key} in {line}");
        }
        assert_eq!(v["environment"], "staging", "{line}");
        assert_eq!(v["service"], "registry", "{line}");
        for secret in [
            password,
            credentials.as_str(),
            "Basic ",
            "query-secret-token",
        ] {
            assert!(!line.contains(secret), "{secret:?} in the log: {line}");
        }
        if v["target"] == "berth::access" {
            access.push(v);
        }
    }
    assert_eq!(access.len(), 2, "{lines:#?}");
    // Warnings from loading the configuration, made before the log's format was known, are
    // written in it too.
    assert!(
        lines
            .iter()
            .any(|l| l.contains(r#""level":"warn""#) && l.contains("validation")),
        "{lines:#?}"
    );
    let ok = &access[0];
    assert_eq!(ok["method"], "GET");
    assert_eq!(ok["path"], "/v2/");
    assert_eq!(ok["status"], 200);
    assert_eq!(ok["user"], "alice");
    assert_eq!(ok["route"], "base");
    assert!(ok["duration_ms"].is_number() && ok["bytes"].is_number());
    let refused = &access[1];
    assert_eq!(refused["status"], 401);
    assert_eq!(refused["user"], "-");
    assert_eq!(refused["path"], "/v2/_catalog");
}
