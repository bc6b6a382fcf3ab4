//! The scenarios. Each does its setup (content generation, digests, pushing what a read needs)
//! untimed, then times only the operations it measures.

use std::collections::BTreeMap;
use std::path::Path;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use bytes::Bytes;
use indicatif::{ProgressBar, ProgressDrawTarget, ProgressStyle};

use super::client::{Client, OpError, Tick};
use super::data::{self, BlobSpec};
use super::procstat::{self, Spent, Watch};
use super::profile::PerfCtl;
use super::stats::{Latencies, ScenarioResult, MB};
use super::{BenchArgs, ResumePhase};

/// The scenarios, by their stable names.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Scenario {
    PushMonolithic,
    PushSinglePost,
    PushChunked1m,
    PushChunked8m,
    PushChunked64m,
    PushSmall,
    PushMedium,
    PullLarge,
    PullLargeNoHash,
    ManifestGet,
    Verify,
    PushMonolithic4g,
    PushChunkedConcurrent,
    Resume100m,
    Resume2g,
    HttpPut,
    HttpGet,
    CeilingSha256,
    CeilingFirstTouch,
}

impl Scenario {
    pub const ALL: [Scenario; 19] = [
        Scenario::PushMonolithic,
        Scenario::PushSinglePost,
        Scenario::PushChunked1m,
        Scenario::PushChunked8m,
        Scenario::PushChunked64m,
        Scenario::PushSmall,
        Scenario::PushMedium,
        Scenario::PullLarge,
        Scenario::PullLargeNoHash,
        Scenario::ManifestGet,
        Scenario::Verify,
        Scenario::PushMonolithic4g,
        Scenario::PushChunkedConcurrent,
        Scenario::Resume100m,
        Scenario::Resume2g,
        Scenario::HttpPut,
        Scenario::HttpGet,
        Scenario::CeilingSha256,
        Scenario::CeilingFirstTouch,
    ];

    /// What runs without `--scenario`: every registry scenario, verify last (the head of
    /// [`Self::ALL`], which lists them first), except the 4 GiB push, the 50 concurrent uploads
    /// and the resumes (which want a restart in the middle).
    pub const DEFAULT: &'static [Scenario] = Scenario::ALL.split_at(11).0;

    pub fn name(self) -> &'static str {
        match self {
            Scenario::PushMonolithic => "push-monolithic",
            Scenario::PushSinglePost => "push-single-post",
            Scenario::PushChunked1m => "push-chunked-1m",
            Scenario::PushChunked8m => "push-chunked-8m",
            Scenario::PushChunked64m => "push-chunked-64m",
            Scenario::PushSmall => "push-small",
            Scenario::PushMedium => "push-medium",
            Scenario::PullLarge => "pull-large",
            Scenario::PullLargeNoHash => "pull-large-nohash",
            Scenario::ManifestGet => "manifest-get",
            Scenario::Verify => "verify",
            Scenario::PushMonolithic4g => "push-monolithic-4g",
            Scenario::PushChunkedConcurrent => "push-chunked-concurrent",
            Scenario::Resume100m => "resume-100m",
            Scenario::Resume2g => "resume-2g",
            Scenario::HttpPut => "http-put",
            Scenario::HttpGet => "http-get",
            Scenario::CeilingSha256 => "ceiling-sha256",
            Scenario::CeilingFirstTouch => "ceiling-first-touch",
        }
    }

    pub fn parse(name: &str) -> Option<Scenario> {
        Scenario::ALL.into_iter().find(|s| s.name() == name)
    }

    /// Whether it talks to a registry (rather than a plain HTTP server or nothing).
    pub fn needs_registry(self) -> bool {
        !matches!(
            self,
            Scenario::HttpPut
                | Scenario::HttpGet
                | Scenario::CeilingSha256
                | Scenario::CeilingFirstTouch
        )
    }

    /// The bytes pushed before the restart by a resume scenario.
    pub fn resume_size(self) -> Option<u64> {
        match self {
            Scenario::Resume100m => Some(100 << 20),
            Scenario::Resume2g => Some(2 << 30),
            _ => None,
        }
    }

    /// Whether it stores something the verify pass should read back.
    fn writes(self) -> bool {
        self.needs_registry() && self != Scenario::Verify
    }
}

/// The scenarios to run from `--scenario` names: the defaults when none is given; `verify` is
/// appended when something is written and it is not listed (unless `no_verify`).
pub fn selection(names: &[String], no_verify: bool) -> Result<Vec<Scenario>, String> {
    let mut list: Vec<Scenario> = if names.is_empty() {
        Scenario::DEFAULT.to_vec()
    } else {
        names
            .iter()
            .flat_map(|n| n.split(','))
            .map(|n| {
                Scenario::parse(n.trim()).ok_or_else(|| {
                    let known: Vec<&str> = Scenario::ALL.iter().map(|s| s.name()).collect();
                    format!("unknown scenario {n:?}; known: {}", known.join(", "))
                })
            })
            .collect::<Result<_, _>>()?
    };
    if no_verify {
        list.retain(|s| *s != Scenario::Verify);
    } else if list.iter().any(|s| s.writes()) && !list.contains(&Scenario::Verify) {
        list.push(Scenario::Verify);
    }
    Ok(list)
}

/// A blob the registry acknowledged, for the reads and the verify pass.
#[derive(Debug, Clone)]
struct Pushed {
    repo: String,
    digest: String,
    size: u64,
}

#[derive(Debug, Clone)]
struct PushedManifest {
    repo: String,
    tag: String,
    digest: String,
    media_type: String,
}

/// What a scenario measured, before it becomes a [`ScenarioResult`].
#[derive(Default)]
struct Outcome {
    bytes: u64,
    ops: u64,
    latencies: Latencies,
    errors: Vec<OpError>,
    note: Option<String>,
    measured: Measured,
    phase: Option<&'static str>,
    phases_ms: Option<BTreeMap<String, f64>>,
}

/// The timed part of a scenario: wall time, server and client cost.
#[derive(Default, Clone, Copy)]
struct Measured {
    seconds: f64,
    server: Spent,
    client_cpu: Option<f64>,
}

struct Meter {
    start: Instant,
    watch: Option<Watch>,
    client_cpu: Option<f64>,
    perf: Option<SharedPerf>,
}

/// perf's control FIFOs, shared by the scenarios of a run.
pub type SharedPerf = Arc<Mutex<PerfCtl>>;

impl Meter {
    /// Starts the clock; first, with `warm` > 0, that many bytes of fresh memory are touched and
    /// freed (see [`warm_memory`]), and with `perf`, perf is switched on.
    fn start(server_pid: Option<u32>, warm: u64, perf: Option<SharedPerf>) -> Meter {
        if warm > 0 {
            warm_memory(warm);
        }
        if let Some(p) = &perf {
            if let Err(e) = p.lock().expect("perf").send("enable") {
                eprintln!("berth bench: {e}");
            }
        }
        let watch = server_pid.map(|p| Watch::start(&p.to_string()));
        Meter {
            client_cpu: procstat::cpu_seconds("self"),
            watch,
            perf,
            start: Instant::now(),
        }
    }

    fn finish(self) -> Measured {
        let seconds = self.start.elapsed().as_secs_f64();
        let measured = Measured {
            seconds,
            server: self.watch.map(|w| w.finish()).unwrap_or_default(),
            client_cpu: match (self.client_cpu, procstat::cpu_seconds("self")) {
                (Some(a), Some(b)) => Some(b - a),
                _ => None,
            },
        };
        if let Some(p) = &self.perf {
            if let Err(e) = p.lock().expect("perf").send("disable") {
                eprintln!("berth bench: {e}");
            }
        }
        measured
    }
}

/// Touches `bytes` of fresh anonymous memory page by page, then frees it; returns the rate of
/// the first touch in MB/s.
///
/// On a virtual machine whose balloon reports free pages to the hypervisor (virtio-balloon free
/// page reporting, as here), memory freed a few seconds ago is given back to the host, and the
/// next first touch of each page costs a host fault: writing a file into the page cache then runs
/// at a fraction of its speed, and how much depends on what the machine freed and when. Touching
/// and freeing memory right before the clock starts hands the next allocations pages the host
/// still backs, which makes page-cache writes repeatable.
pub fn warm_memory(bytes: u64) -> f64 {
    let len = bytes as usize;
    // SAFETY: a private anonymous mapping of `len` bytes, written within its bounds and unmapped
    // before returning; nothing else refers to it.
    unsafe {
        let p = libc::mmap(
            std::ptr::null_mut(),
            len,
            libc::PROT_READ | libc::PROT_WRITE,
            libc::MAP_PRIVATE | libc::MAP_ANONYMOUS,
            -1,
            0,
        );
        if p == libc::MAP_FAILED {
            return 0.0;
        }
        libc::madvise(p, len, libc::MADV_NOHUGEPAGE);
        let base = p as *mut u8;
        let t = Instant::now();
        for off in (0..len).step_by(4096) {
            std::ptr::write_volatile(base.add(off), 1);
        }
        let secs = t.elapsed().as_secs_f64();
        libc::munmap(p, len);
        if secs > 0.0 {
            bytes as f64 / secs / MB
        } else {
            0.0
        }
    }
}

/// State shared by the scenarios of one run (one seed): what was pushed.
pub struct Context<'a> {
    client: Client,
    args: &'a BenchArgs,
    seed: u64,
    prefix: String,
    pushed: Vec<Pushed>,
    manifests: Vec<PushedManifest>,
    perf: Option<SharedPerf>,
}

/// An upload left half done by a resume scenario's first half (`--resume-phase prepare`), saved
/// in `--resume-file` under the scenario's name for the second half, after the restart.
#[derive(Debug, Clone, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct ResumeState {
    /// The upload's URL as the registry last gave it (only path and query are used again).
    pub location: String,
    /// Bytes acknowledged before the restart.
    pub offset: u64,
    pub repo: String,
    /// The whole blob: its content seed, size and digest.
    pub blob_seed: u64,
    pub size: u64,
    pub digest: String,
}

/// Reads the resume file (a JSON object: scenario name → [`ResumeState`]); missing is empty.
pub fn load_resume_file(path: &Path) -> Result<BTreeMap<String, ResumeState>, String> {
    match std::fs::read_to_string(path) {
        Ok(text) => serde_json::from_str(&text).map_err(|e| format!("{}: {e}", path.display())),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(BTreeMap::new()),
        Err(e) => Err(format!("{}: {e}", path.display())),
    }
}

fn save_resume_state(path: &Path, name: &str, state: &ResumeState) -> Result<(), String> {
    let mut all = load_resume_file(path)?;
    all.insert(name.to_string(), state.clone());
    let text = serde_json::to_string_pretty(&all).expect("resume states serialise");
    std::fs::write(path, text).map_err(|e| format!("{}: {e}", path.display()))
}

const OCI_MANIFEST: &str = "application/vnd.oci.image.manifest.v1+json";
const OCI_CONFIG: &str = "application/vnd.oci.image.config.v1+json";
const OCI_LAYER: &str = "application/vnd.oci.image.layer.v1.tar+gzip";

/// The bytes sent after the restart: one PATCH, so the resume latency does not depend on `N`.
pub const RESUME_TAIL: u64 = 1 << 20;

impl<'a> Context<'a> {
    pub fn new(client: Client, args: &'a BenchArgs, seed: u64, perf: Option<SharedPerf>) -> Self {
        let prefix = args
            .repo_prefix
            .clone()
            .unwrap_or_else(|| format!("berth-bench/s{seed}"));
        Context {
            client,
            args,
            seed,
            prefix,
            pushed: Vec::new(),
            manifests: Vec::new(),
            perf,
        }
    }

    fn meter(&self) -> Meter {
        Meter::start(
            self.args.server_pid,
            self.args.warm_memory.unwrap_or(0),
            self.perf.clone(),
        )
    }

    fn repo(&self, scenario: Scenario) -> String {
        format!("{}/{}", self.prefix, scenario.name())
    }

    fn spec(&self, scenario: Scenario, index: u64, size: u64) -> BlobSpec {
        BlobSpec {
            seed: data::derive_seed(self.seed, scenario.name(), index),
            size,
        }
    }

    fn bar(&self, scenario: Scenario, len: Option<u64>, unit: Unit) -> ProgressBar {
        if self.args.no_progress {
            return ProgressBar::hidden();
        }
        let template = match unit {
            Unit::Bytes => {
                "{prefix:>18} [{bar:30}] {bytes}/{total_bytes} {binary_bytes_per_sec} {elapsed}"
            }
            Unit::Ops => "{prefix:>18} [{bar:30}] {pos}/{len} {per_sec} {elapsed}",
            Unit::Requests => "{prefix:>18} {spinner} {pos} requests {per_sec} {elapsed}",
        };
        let pb = ProgressBar::with_draw_target(len, ProgressDrawTarget::stderr());
        pb.set_style(
            ProgressStyle::with_template(template)
                .expect("a valid template")
                .progress_chars("=> "),
        );
        pb.set_prefix(scenario.name());
        pb.enable_steady_tick(Duration::from_millis(200));
        pb
    }

    /// Runs one scenario; failures are counted in the result, never raised.
    pub async fn run(&mut self, scenario: Scenario) -> ScenarioResult {
        let size = self.args.blob_size;
        let mut outcome = match scenario {
            Scenario::PushMonolithic
            | Scenario::PushSinglePost
            | Scenario::PushChunked1m
            | Scenario::PushChunked8m
            | Scenario::PushChunked64m => self.push_large(scenario, size).await,
            Scenario::PushMonolithic4g => self.push_large(scenario, self.args.huge_blob_size).await,
            Scenario::PushSmall => {
                let a = self.args;
                self.push_many(scenario, a.small_count, a.small_size, a.small_concurrency)
                    .await
            }
            Scenario::PushMedium => {
                let a = self.args;
                self.push_many(
                    scenario,
                    a.medium_count,
                    a.medium_size,
                    a.medium_concurrency,
                )
                .await
            }
            Scenario::PullLarge => self.pull_large(true).await,
            Scenario::PullLargeNoHash => self.pull_large(false).await,
            Scenario::ManifestGet => self.manifest_get().await,
            Scenario::Verify => self.verify().await,
            Scenario::PushChunkedConcurrent => self.push_concurrent().await,
            Scenario::Resume100m | Scenario::Resume2g => self.resume(scenario).await,
            Scenario::HttpPut => self.http_put(size).await,
            Scenario::HttpGet => self.http_get().await,
            Scenario::CeilingSha256 => ceiling_sha256(size).await,
            Scenario::CeilingFirstTouch => ceiling_first_touch(size).await,
        };
        let m = outcome.measured;
        for e in outcome.errors.iter().take(5) {
            eprintln!("berth bench: {}: {e}", scenario.name());
        }
        if outcome.errors.len() > 5 {
            eprintln!(
                "berth bench: {}: … and {} more errors",
                scenario.name(),
                outcome.errors.len() - 5
            );
        }
        let per_sec = |v: f64| if m.seconds > 0.0 { v / m.seconds } else { 0.0 };
        ScenarioResult {
            scenario: scenario.name().to_string(),
            registry: self.args.label.clone(),
            seed: self.seed,
            bytes: outcome.bytes,
            seconds: m.seconds,
            mb_s: per_sec(outcome.bytes as f64) / MB,
            ops: outcome.ops,
            ops_s: per_sec(outcome.ops as f64),
            p50_ms: outcome.latencies.percentile(0.50),
            p99_ms: outcome.latencies.percentile(0.99),
            errors: outcome.errors.len() as u64,
            server_cpu_s: m.server.cpu_seconds,
            server_peak_rss_mib: m.server.peak_rss_kib.map(|k| k as f64 / 1024.0),
            client_cpu_s: m.client_cpu,
            note: outcome.note,
            error: outcome
                .errors
                .first()
                .map(|e| e.0.chars().take(300).collect()),
            phase: outcome.phase.map(str::to_string),
            phases_ms: outcome.phases_ms,
        }
    }

    /// One large blob: monolithic POST+PUT, single POST, or chunked PATCHes.
    async fn push_large(&mut self, scenario: Scenario, size: u64) -> Outcome {
        let repo = self.repo(scenario);
        let spec = self.spec(scenario, 0, size);
        let digest = digest_of(spec).await;
        let pb = self.bar(scenario, Some(size), Unit::Bytes);
        let tick = tick(&pb);
        let c = &self.client;
        let meter = self.meter();
        let result = match scenario {
            Scenario::PushSinglePost => {
                c.push_single_post(&repo, spec, &digest, tick)
                    .await
                    .map(|fallback| {
                        fallback.then(|| {
                            "POST ?digest= answered 202: the body was sent again with PUT"
                                .to_string()
                        })
                    })
            }
            Scenario::PushChunked1m => c
                .push_chunked(&repo, spec, &digest, 1 << 20, tick)
                .await
                .map(|_| None),
            Scenario::PushChunked8m => c
                .push_chunked(&repo, spec, &digest, 8 << 20, tick)
                .await
                .map(|_| None),
            Scenario::PushChunked64m => c
                .push_chunked(&repo, spec, &digest, 64 << 20, tick)
                .await
                .map(|_| None),
            _ => c
                .push_monolithic(&repo, spec, &digest, tick)
                .await
                .map(|_| None),
        };
        let measured = meter.finish();
        pb.finish_and_clear();
        let mut outcome = Outcome {
            bytes: size,
            ops: 1,
            measured,
            ..Default::default()
        };
        outcome
            .latencies
            .push_ms(Duration::from_secs_f64(measured.seconds));
        match result {
            Ok(note) => {
                outcome.note = note;
                self.pushed.push(Pushed { repo, digest, size });
            }
            Err(e) => outcome.errors.push(e),
        }
        outcome
    }

    /// `count` blobs of `size` bytes, POST+PUT each, `concurrency` at a time.
    async fn push_many(
        &mut self,
        scenario: Scenario,
        count: usize,
        size: u64,
        concurrency: usize,
    ) -> Outcome {
        let repo = Arc::new(self.repo(scenario));
        let specs: Vec<BlobSpec> = (0..count as u64)
            .map(|i| self.spec(scenario, i, size))
            .collect();
        // Content and digests are made before the clock starts.
        let blobs: Arc<Vec<(Bytes, String)>> = Arc::new(
            tokio::task::spawn_blocking(move || {
                specs
                    .into_iter()
                    .map(|s| {
                        let b = s.to_bytes();
                        let d = data::sha256(&b);
                        (b, d)
                    })
                    .collect()
            })
            .await
            .expect("generating blobs"),
        );
        let pb = self.bar(scenario, Some(count as u64), Unit::Ops);
        let next = Arc::new(AtomicUsize::new(0));
        let meter = self.meter();
        let mut workers = Vec::new();
        for _ in 0..concurrency.clamp(1, count.max(1)) {
            let (client, repo, blobs, next, pb) = (
                self.client.clone(),
                repo.clone(),
                blobs.clone(),
                next.clone(),
                pb.clone(),
            );
            workers.push(tokio::spawn(async move {
                let mut lat = Latencies::default();
                let mut ok = Vec::new();
                let mut errors = Vec::new();
                loop {
                    let i = next.fetch_add(1, Ordering::Relaxed);
                    if i >= blobs.len() {
                        break;
                    }
                    let (body, digest) = &blobs[i];
                    let t = Instant::now();
                    match client.push_bytes(&repo, body.clone(), digest).await {
                        Ok(()) => ok.push(i),
                        Err(e) => errors.push(e),
                    }
                    lat.push_ms(t.elapsed());
                    pb.inc(1);
                }
                (lat, ok, errors)
            }));
        }
        let mut outcome = Outcome::default();
        let mut ok_all = Vec::new();
        for w in workers {
            match w.await {
                Ok((lat, ok, errors)) => {
                    outcome.latencies.extend(lat);
                    ok_all.extend(ok);
                    outcome.errors.extend(errors);
                }
                Err(e) => outcome.errors.push(OpError(format!("worker: {e}"))),
            }
        }
        outcome.measured = meter.finish();
        pb.finish_and_clear();
        outcome.ops = count as u64;
        outcome.bytes = count as u64 * size;
        for i in ok_all {
            self.pushed.push(Pushed {
                repo: repo.to_string(),
                digest: blobs[i].1.clone(),
                size,
            });
        }
        outcome
    }

    /// GET of the large blob (pushed earlier in this run, or now, untimed).
    async fn pull_large(&mut self, hash: bool) -> Outcome {
        let scenario = if hash {
            Scenario::PullLarge
        } else {
            Scenario::PullLargeNoHash
        };
        let size = self.args.blob_size;
        let target = self
            .pushed
            .iter()
            .find(|p| p.size == size)
            .or_else(|| self.pushed.iter().max_by_key(|p| p.size))
            .filter(|p| p.size >= size.min(64 << 20))
            .cloned();
        let target = match target {
            Some(t) => t,
            None => {
                let repo = self.repo(Scenario::PullLarge);
                let spec = self.spec(Scenario::PullLarge, 0, size);
                let digest = digest_of(spec).await;
                if let Err(e) = self
                    .client
                    .push_monolithic(&repo, spec, &digest, Arc::new(|_| {}))
                    .await
                {
                    return Outcome {
                        errors: vec![OpError(format!("pushing the blob to pull: {e}"))],
                        ..Default::default()
                    };
                }
                let p = Pushed { repo, digest, size };
                self.pushed.push(p.clone());
                p
            }
        };
        let pb = self.bar(scenario, Some(target.size), Unit::Bytes);
        let meter = self.meter();
        let result = self
            .client
            .get_blob(
                &target.repo,
                &target.digest,
                target.size,
                hash,
                Some(tick(&pb)),
            )
            .await;
        let measured = meter.finish();
        pb.finish_and_clear();
        let mut outcome = Outcome {
            bytes: target.size,
            ops: 1,
            measured,
            ..Default::default()
        };
        outcome
            .latencies
            .push_ms(Duration::from_secs_f64(measured.seconds));
        if let Err(e) = result {
            outcome.errors.push(e);
        }
        outcome
    }

    /// A small image (config, one layer, manifest) is pushed, then its manifest is fetched by tag
    /// at `--manifest-concurrency` for `--duration` seconds.
    async fn manifest_get(&mut self) -> Outcome {
        let scenario = Scenario::ManifestGet;
        let repo = self.repo(scenario);
        let config = Bytes::from(format!(
            r#"{{"architecture":"amd64","os":"linux","config":{{"Labels":{{"berth.bench.seed":"{}"}}}},"rootfs":{{"type":"layers","diff_ids":[]}}}}"#,
            self.seed
        ));
        let layer = self.spec(scenario, 1, 32 * 1024).to_bytes();
        let (config_digest, layer_digest) = (data::sha256(&config), data::sha256(&layer));
        let manifest = Bytes::from(format!(
            r#"{{"schemaVersion":2,"mediaType":"{OCI_MANIFEST}","config":{{"mediaType":"{OCI_CONFIG}","digest":"{config_digest}","size":{}}},"layers":[{{"mediaType":"{OCI_LAYER}","digest":"{layer_digest}","size":{}}}],"annotations":{{"org.opencontainers.image.title":"berth bench"}}}}"#,
            config.len(),
            layer.len()
        ));
        let digest = data::sha256(&manifest);
        let tag = "bench".to_string();
        let setup = async {
            self.client
                .push_bytes(&repo, config.clone(), &config_digest)
                .await?;
            self.client
                .push_bytes(&repo, layer.clone(), &layer_digest)
                .await?;
            self.client
                .put_manifest(&repo, &tag, OCI_MANIFEST, manifest.clone())
                .await
        };
        if let Err(e) = setup.await {
            return Outcome {
                errors: vec![OpError(format!("pushing the image: {e}"))],
                ..Default::default()
            };
        }
        for (d, s) in [(config_digest, config.len()), (layer_digest, layer.len())] {
            self.pushed.push(Pushed {
                repo: repo.clone(),
                digest: d,
                size: s as u64,
            });
        }
        self.manifests.push(PushedManifest {
            repo: repo.clone(),
            tag: tag.clone(),
            digest: digest.clone(),
            media_type: OCI_MANIFEST.to_string(),
        });

        let pb = self.bar(scenario, None, Unit::Requests);
        let deadline = Instant::now() + Duration::from_secs_f64(self.args.duration.max(0.1));
        let bytes_each = manifest.len() as u64;
        let meter = self.meter();
        let mut workers = Vec::new();
        for _ in 0..self.args.manifest_concurrency.max(1) {
            let (client, repo, tag, digest, pb) = (
                self.client.clone(),
                repo.clone(),
                tag.clone(),
                digest.clone(),
                pb.clone(),
            );
            workers.push(tokio::spawn(async move {
                let mut lat = Latencies::default();
                let mut errors = Vec::new();
                let mut n = 0u64;
                while Instant::now() < deadline {
                    let t = Instant::now();
                    if let Err(e) = client
                        .get_manifest(&repo, &tag, OCI_MANIFEST, &digest)
                        .await
                    {
                        errors.push(e);
                    }
                    lat.push_ms(t.elapsed());
                    n += 1;
                    pb.inc(1);
                }
                (lat, errors, n)
            }));
        }
        let mut outcome = Outcome::default();
        for w in workers {
            match w.await {
                Ok((lat, errors, n)) => {
                    outcome.latencies.extend(lat);
                    outcome.errors.extend(errors);
                    outcome.ops += n;
                }
                Err(e) => outcome.errors.push(OpError(format!("worker: {e}"))),
            }
        }
        outcome.measured = meter.finish();
        pb.finish_and_clear();
        outcome.bytes = outcome.ops * bytes_each;
        outcome
    }

    /// Everything pushed in this run is HEADed and read back with its digest checked, and every
    /// manifest fetched by tag and by digest.
    async fn verify(&mut self) -> Outcome {
        let blobs = Arc::new(self.pushed.clone());
        let manifests = self.manifests.clone();
        let total: u64 = blobs.iter().map(|b| b.size).sum();
        let pb = self.bar(Scenario::Verify, Some(total), Unit::Bytes);
        let next = Arc::new(AtomicUsize::new(0));
        let errors = Arc::new(Mutex::new(Vec::new()));
        let meter = self.meter();
        let mut workers = Vec::new();
        for _ in 0..8 {
            let (client, blobs, next, errors, pb) = (
                self.client.clone(),
                blobs.clone(),
                next.clone(),
                errors.clone(),
                pb.clone(),
            );
            workers.push(tokio::spawn(async move {
                let mut lat = Latencies::default();
                loop {
                    let i = next.fetch_add(1, Ordering::Relaxed);
                    let Some(b) = blobs.get(i) else { break };
                    let t = Instant::now();
                    let r = match client.head_blob(&b.repo, &b.digest, b.size).await {
                        Ok(()) => {
                            client
                                .get_blob(&b.repo, &b.digest, b.size, true, Some(tick(&pb)))
                                .await
                        }
                        Err(e) => Err(e),
                    };
                    lat.push_ms(t.elapsed());
                    if let Err(e) = r {
                        errors.lock().expect("errors").push(e);
                    }
                }
                lat
            }));
        }
        let mut outcome = Outcome::default();
        for w in workers {
            match w.await {
                Ok(lat) => outcome.latencies.extend(lat),
                Err(e) => outcome.errors.push(OpError(format!("worker: {e}"))),
            }
        }
        for m in &manifests {
            for reference in [&m.tag, &m.digest] {
                if let Err(e) = self
                    .client
                    .get_manifest(&m.repo, reference, &m.media_type, &m.digest)
                    .await
                {
                    outcome.errors.push(e);
                }
            }
        }
        outcome.measured = meter.finish();
        pb.finish_and_clear();
        outcome
            .errors
            .extend(errors.lock().expect("errors").drain(..));
        outcome.ops = (blobs.len() + 2 * manifests.len()) as u64;
        outcome.bytes = total;
        if outcome.ops == 0 {
            outcome.note = Some("nothing was pushed in this run".to_string());
        }
        outcome
    }

    /// `--concurrent-count` blobs of `--concurrent-size`, each pushed in `--concurrent-chunk`
    /// PATCHes, all uploads in flight at once.
    async fn push_concurrent(&mut self) -> Outcome {
        let scenario = Scenario::PushChunkedConcurrent;
        let (count, size, chunk) = (
            self.args.concurrent_count.max(1),
            self.args.concurrent_size,
            self.args.concurrent_chunk,
        );
        let repo = Arc::new(self.repo(scenario));
        let specs: Vec<BlobSpec> = (0..count as u64)
            .map(|i| self.spec(scenario, i, size))
            .collect();
        let digests: Vec<String> = tokio::task::spawn_blocking({
            let specs = specs.clone();
            move || specs.iter().map(BlobSpec::digest).collect()
        })
        .await
        .expect("hashing");
        let pb = self.bar(scenario, Some(count as u64 * size), Unit::Bytes);
        let meter = self.meter();
        let mut tasks = Vec::new();
        for (spec, digest) in specs.into_iter().zip(digests) {
            let (client, repo, tick) = (self.client.clone(), repo.clone(), tick(&pb));
            tasks.push(tokio::spawn(async move {
                let t = Instant::now();
                let r = client.push_chunked(&repo, spec, &digest, chunk, tick).await;
                (r, t.elapsed(), digest)
            }));
        }
        let mut outcome = Outcome::default();
        for task in tasks {
            match task.await {
                Ok((r, elapsed, digest)) => {
                    outcome.latencies.push_ms(elapsed);
                    match r {
                        Ok(()) => self.pushed.push(Pushed {
                            repo: repo.to_string(),
                            digest,
                            size,
                        }),
                        Err(e) => outcome.errors.push(e),
                    }
                }
                Err(e) => outcome.errors.push(OpError(format!("upload task: {e}"))),
            }
        }
        outcome.measured = meter.finish();
        pb.finish_and_clear();
        outcome.ops = count as u64;
        outcome.bytes = count as u64 * size;
        outcome.note = Some(format!(
            "{count} uploads of {} MiB in {} MiB PATCHes, all in flight",
            size >> 20,
            chunk >> 20
        ));
        outcome
    }

    /// Resuming an upload: `N` bytes (100 MiB or 2 GiB) are PATCHed in `--resume-chunk` pieces
    /// and left unfinished; then (after the registry was restarted, with `--resume-phase`) the
    /// upload's status is asked (it must report `N`), the last MiB PATCHed and the upload
    /// completed (201, then read back by the verify pass). The headline is the resume latency:
    /// status plus the first PATCH accepted, which should not grow with `N`.
    async fn resume(&mut self, scenario: Scenario) -> Outcome {
        let n = scenario.resume_size().expect("a resume scenario");
        let phase = self.args.resume_phase;
        let file = self.args.resume_file.clone();
        let name = scenario.name();
        let state = match phase {
            Some(ResumePhase::Finish) => {
                let loaded = file
                    .as_deref()
                    .ok_or_else(|| "--resume-phase finish needs --resume-file".to_string())
                    .and_then(load_resume_file)
                    .and_then(|mut all| {
                        all.remove(name)
                            .ok_or_else(|| format!("no saved upload for {name} in --resume-file"))
                    });
                match loaded {
                    Ok(s) => s,
                    Err(e) => return failed("finish", OpError(e)),
                }
            }
            _ => {
                let (outcome, state) = self.resume_prepare(scenario, n).await;
                let Some(state) = state else { return outcome };
                if phase == Some(ResumePhase::Prepare) {
                    let saved = file
                        .as_deref()
                        .ok_or_else(|| "--resume-phase prepare needs --resume-file".to_string())
                        .and_then(|f| save_resume_state(f, name, &state));
                    return match saved {
                        Ok(()) => outcome,
                        Err(e) => failed("prepare", OpError(e)),
                    };
                }
                state
            }
        };
        let mut outcome = self.resume_finish(scenario, &state).await;
        if phase.is_none() {
            outcome.phase = Some("no-restart");
        }
        outcome
    }

    async fn resume_prepare(
        &mut self,
        scenario: Scenario,
        n: u64,
    ) -> (Outcome, Option<ResumeState>) {
        let repo = self.repo(scenario);
        let spec = self.spec(scenario, 0, n + RESUME_TAIL);
        let digest = digest_of(spec).await;
        let pb = self.bar(scenario, Some(n), Unit::Bytes);
        let meter = self.meter();
        let c = &self.client;
        let result = async {
            let upload = c.start_upload(&repo).await?;
            c.patch_chunks(upload, spec, 0, n, self.args.resume_chunk, tick(&pb))
                .await
        }
        .await;
        let measured = meter.finish();
        pb.finish_and_clear();
        let mut outcome = single(n, measured, None);
        outcome.phase = Some("prepare");
        match result {
            Ok(location) => {
                let state = ResumeState {
                    location: location.to_string(),
                    offset: n,
                    repo,
                    blob_seed: spec.seed,
                    size: spec.size,
                    digest,
                };
                (outcome, Some(state))
            }
            Err(e) => {
                outcome.errors.push(e);
                (outcome, None)
            }
        }
    }

    async fn resume_finish(&mut self, scenario: Scenario, state: &ResumeState) -> Outcome {
        let spec = BlobSpec {
            seed: state.blob_seed,
            size: state.size,
        };
        let mut phases = BTreeMap::new();
        let mut outcome = Outcome {
            phase: Some("finish"),
            ops: 1,
            bytes: state.size - state.offset,
            ..Default::default()
        };
        let upload = match self.client.rebase(&state.location) {
            Ok(u) => u,
            Err(e) => return failed("finish", e),
        };
        let pb = self.bar(scenario, Some(state.size - state.offset), Unit::Bytes);
        let meter = self.meter();
        let c = &self.client;
        let ms = |t: Instant| t.elapsed().as_secs_f64() * 1000.0;
        let result: Result<(), OpError> = async {
            let t = Instant::now();
            let (offset, upload) = c.upload_status(upload).await?;
            phases.insert("status".to_string(), ms(t));
            if offset != state.offset {
                return Err(OpError(format!(
                    "GET upload status after the restart: {offset} bytes, expected {}",
                    state.offset
                )));
            }
            let t = Instant::now();
            let first = (state.size - offset).min(RESUME_TAIL);
            let upload = c
                .patch_chunk(upload, spec, offset, first, tick(&pb))
                .await?;
            phases.insert("first_patch".to_string(), ms(t));
            let upload = c
                .patch_chunks(
                    upload,
                    spec,
                    offset + first,
                    state.size,
                    RESUME_TAIL,
                    tick(&pb),
                )
                .await?;
            let t = Instant::now();
            c.complete_upload(upload, &state.digest).await?;
            phases.insert("complete".to_string(), ms(t));
            Ok(())
        }
        .await;
        outcome.measured = meter.finish();
        pb.finish_and_clear();
        if let (Some(&s), Some(&p)) = (phases.get("status"), phases.get("first_patch")) {
            phases.insert("resume".to_string(), s + p);
            outcome
                .latencies
                .push_ms(Duration::from_secs_f64((s + p) / 1000.0));
        }
        outcome.phases_ms = Some(phases);
        match result {
            Ok(()) => self.pushed.push(Pushed {
                repo: state.repo.clone(),
                digest: state.digest.clone(),
                size: state.size,
            }),
            Err(e) => {
                outcome.bytes = 0;
                outcome.errors.push(e);
            }
        }
        outcome
    }

    /// Plain `PUT` of the large blob: what the HTTP path alone allows (against nginx).
    async fn http_put(&mut self, size: u64) -> Outcome {
        let spec = self.spec(Scenario::HttpPut, 0, size);
        let pb = self.bar(Scenario::HttpPut, Some(size), Unit::Bytes);
        let meter = self.meter();
        let r = self
            .client
            .raw_put(&self.args.http_path, spec, tick(&pb))
            .await;
        let measured = meter.finish();
        pb.finish_and_clear();
        single(size, measured, r.err())
    }

    /// Plain `GET`, not hashed: what the HTTP path alone allows for reads.
    async fn http_get(&mut self) -> Outcome {
        let pb = self.bar(Scenario::HttpGet, None, Unit::Bytes);
        let meter = self.meter();
        let r = self.client.raw_get(&self.args.http_path, tick(&pb)).await;
        let measured = meter.finish();
        pb.finish_and_clear();
        match r {
            Ok(n) => single(n, measured, None),
            Err(e) => single(0, measured, Some(e)),
        }
    }
}

#[derive(Clone, Copy)]
enum Unit {
    Bytes,
    Ops,
    Requests,
}

fn tick(pb: &ProgressBar) -> Tick {
    let pb = pb.clone();
    Arc::new(move |n| pb.inc(n))
}

fn single(bytes: u64, measured: Measured, error: Option<OpError>) -> Outcome {
    let mut o = Outcome {
        bytes,
        ops: 1,
        measured,
        errors: error.into_iter().collect(),
        ..Default::default()
    };
    o.latencies
        .push_ms(Duration::from_secs_f64(measured.seconds));
    o
}

/// A scenario that could not run at all.
fn failed(phase: &'static str, error: OpError) -> Outcome {
    Outcome {
        errors: vec![error],
        phase: Some(phase),
        ..Default::default()
    }
}

/// First touch of `size` bytes of fresh memory (see [`warm_memory`]): low when the hypervisor
/// took freed memory back.
async fn ceiling_first_touch(size: u64) -> Outcome {
    let mb_s = tokio::task::spawn_blocking(move || warm_memory(size))
        .await
        .unwrap_or(0.0);
    let seconds = if mb_s > 0.0 {
        size as f64 / MB / mb_s
    } else {
        0.0
    };
    single(
        size,
        Measured {
            seconds,
            ..Default::default()
        },
        (mb_s <= 0.0).then(|| OpError("mmap failed".into())),
    )
}

/// The blob's digest, computed on a blocking thread before the clock starts.
async fn digest_of(spec: BlobSpec) -> String {
    tokio::task::spawn_blocking(move || spec.digest())
        .await
        .expect("hashing")
}

/// Single-core SHA-256 over `size` bytes (a 64 MiB buffer, hashed repeatedly): the ceiling of any
/// registry that checks digests with the same library as berth (`sha2`).
async fn ceiling_sha256(size: u64) -> Outcome {
    let measured_and_bytes = tokio::task::spawn_blocking(move || {
        use sha2::{Digest as _, Sha256};
        let buf = BlobSpec {
            seed: 0x5A25_6000,
            size: 64 << 20,
        }
        .to_bytes();
        let meter = Meter::start(None, 0, None);
        let mut hasher = Sha256::new();
        let mut done = 0u64;
        while done < size {
            for piece in buf.chunks(1 << 20) {
                let n = (size - done).min(piece.len() as u64) as usize;
                hasher.update(&piece[..n]);
                done += n as u64;
                if done >= size {
                    break;
                }
            }
        }
        std::hint::black_box(hasher.finalize());
        (meter.finish(), done)
    })
    .await;
    match measured_and_bytes {
        Ok((measured, bytes)) => single(bytes, measured, None),
        Err(e) => single(0, Measured::default(), Some(OpError(format!("{e}")))),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_default_run_is_every_registry_scenario_verify_last() {
        let expected: Vec<Scenario> = Scenario::ALL
            .into_iter()
            .filter(|s| {
                s.needs_registry()
                    && !matches!(
                        s,
                        Scenario::PushMonolithic4g
                            | Scenario::PushChunkedConcurrent
                            | Scenario::Resume100m
                            | Scenario::Resume2g
                    )
            })
            .collect();
        assert_eq!(Scenario::DEFAULT, expected.as_slice());
        assert_eq!(Scenario::DEFAULT.last(), Some(&Scenario::Verify));
    }

    #[test]
    fn names_are_unique_and_parse_back() {
        for s in Scenario::ALL {
            assert_eq!(Scenario::parse(s.name()), Some(s));
        }
        let mut names: Vec<&str> = Scenario::ALL.iter().map(|s| s.name()).collect();
        names.dedup();
        assert_eq!(names.len(), Scenario::ALL.len());
    }

    #[test]
    fn verify_follows_writes() {
        let names = |v: &[&str]| v.iter().map(|s| s.to_string()).collect::<Vec<_>>();
        assert_eq!(
            selection(&names(&["push-small"]), false).unwrap(),
            vec![Scenario::PushSmall, Scenario::Verify]
        );
        assert_eq!(
            selection(&names(&["push-small"]), true).unwrap(),
            vec![Scenario::PushSmall]
        );
        assert_eq!(
            selection(&names(&["http-put,ceiling-sha256"]), false).unwrap(),
            vec![Scenario::HttpPut, Scenario::CeilingSha256]
        );
        assert_eq!(
            selection(&[], false).unwrap().last(),
            Some(&Scenario::Verify)
        );
        assert!(selection(&names(&["nope"]), false).is_err());
    }
}
