//! The scenarios. Each does its setup (content generation, digests, pushing what a read needs)
//! untimed, then times only the operations it measures.
//!
//! Here: the names, the selection, the [`Context`] of a run and [`Context::run`], which turns
//! what a scenario measured into a [`ScenarioResult`]. The scenarios themselves are in
//! `scenarios/`: `pushes.rs`, `reads.rs`, `fresh.rs` (reads right after a push),
//! `manifests.rs` (the small image, manifest PUTs), `listing.rs` (catalog and tags pages),
//! `resume.rs` and `ceilings.rs`; `meter.rs` times them.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

use indicatif::{ProgressBar, ProgressDrawTarget, ProgressStyle};

use super::client::{Client, OpError, Tick};
use super::data::{self, BlobSpec};
use super::stats::{Latencies, ScenarioResult, MB};
use super::BenchArgs;

mod ceilings;
mod fresh;
mod listing;
mod manifests;
mod meter;
mod pushes;
mod reads;
mod resume;

use ceilings::{ceiling_first_touch, ceiling_sha256};
pub use meter::{warm_memory, SharedPerf};
use meter::{Measured, Meter};
pub use resume::{load_resume_file, ResumeState, RESUME_TAIL};

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
    PullAfterPush,
    PullAgain,
    ManifestPut1,
    ManifestPut32,
    CatalogFirst,
    CatalogMiddle,
    TagsFirst,
    TagsMiddle,
    HttpPut,
    HttpGet,
    HttpGetHashed,
    CeilingSha256,
    CeilingFirstTouch,
}

impl Scenario {
    pub const ALL: [Scenario; 28] = [
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
        Scenario::PullAfterPush,
        Scenario::PullAgain,
        Scenario::ManifestPut1,
        Scenario::ManifestPut32,
        Scenario::CatalogFirst,
        Scenario::CatalogMiddle,
        Scenario::TagsFirst,
        Scenario::TagsMiddle,
        Scenario::HttpPut,
        Scenario::HttpGet,
        Scenario::HttpGetHashed,
        Scenario::CeilingSha256,
        Scenario::CeilingFirstTouch,
    ];

    /// What runs without `--scenario`: every registry scenario, verify last (the head of
    /// [`Self::ALL`], which lists them first), except the 4 GiB push, the 50 concurrent uploads,
    /// the resumes (which want a restart in the middle), the reads after a write and manifest PUTs
    /// (`make bench`'s fresh group) and the listings (which want a prepared storage).
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
            Scenario::PullAfterPush => "pull-after-push",
            Scenario::PullAgain => "pull-again",
            Scenario::ManifestPut1 => "manifest-put-1",
            Scenario::ManifestPut32 => "manifest-put-32",
            Scenario::CatalogFirst => "catalog-first",
            Scenario::CatalogMiddle => "catalog-middle",
            Scenario::TagsFirst => "tags-first",
            Scenario::TagsMiddle => "tags-middle",
            Scenario::HttpPut => "http-put",
            Scenario::HttpGet => "http-get",
            Scenario::HttpGetHashed => "http-get-hashed",
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
                | Scenario::HttpGetHashed
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

    /// Whether it only reads listings of a storage prepared beforehand.
    fn lists(self) -> bool {
        matches!(
            self,
            Scenario::CatalogFirst
                | Scenario::CatalogMiddle
                | Scenario::TagsFirst
                | Scenario::TagsMiddle
        )
    }

    /// Whether it stores something the verify pass should read back.
    fn writes(self) -> bool {
        self.needs_registry() && self != Scenario::Verify && !self.lists()
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

/// State shared by the scenarios of one run (one seed): what was pushed.
pub struct Context<'a> {
    client: Client,
    args: &'a BenchArgs,
    seed: u64,
    prefix: String,
    pushed: Vec<Pushed>,
    manifests: Vec<PushedManifest>,
    /// The blob `pull-after-push` pushed, for `pull-again`.
    fresh: Option<Pushed>,
    perf: Option<SharedPerf>,
}

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
            fresh: None,
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
            Scenario::PullAfterPush => self.pull_after_push().await,
            Scenario::PullAgain => self.pull_again().await,
            Scenario::ManifestPut1 => self.manifest_put(scenario, 1).await,
            Scenario::ManifestPut32 => self.manifest_put(scenario, 32).await,
            Scenario::CatalogFirst
            | Scenario::CatalogMiddle
            | Scenario::TagsFirst
            | Scenario::TagsMiddle => self.list_pages(scenario).await,
            Scenario::HttpPut => self.http_put(size).await,
            Scenario::HttpGet => self.http_get(false).await,
            Scenario::HttpGetHashed => self.http_get(true).await,
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

/// The blob's digest, computed on a blocking thread before the clock starts.
async fn digest_of(spec: BlobSpec) -> String {
    tokio::task::spawn_blocking(move || spec.digest())
        .await
        .expect("hashing")
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
                            | Scenario::PullAfterPush
                            | Scenario::PullAgain
                            | Scenario::ManifestPut1
                            | Scenario::ManifestPut32
                    )
                    && !s.lists()
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
            selection(
                &names(&["pull-after-push,pull-again,manifest-put-32"]),
                false
            )
            .unwrap(),
            vec![
                Scenario::PullAfterPush,
                Scenario::PullAgain,
                Scenario::ManifestPut32,
                Scenario::Verify
            ]
        );
        assert_eq!(
            selection(&names(&["catalog-first", "tags-middle"]), false).unwrap(),
            vec![Scenario::CatalogFirst, Scenario::TagsMiddle]
        );
        assert_eq!(
            selection(&[], false).unwrap().last(),
            Some(&Scenario::Verify)
        );
        assert!(selection(&names(&["nope"]), false).is_err());
    }
}
