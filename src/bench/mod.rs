//! `berth bench`: a load generator speaking the registry API over HTTP(S), pointed at any
//! registry, and the report that compares two of them (`--report`).
//!
//! - [`data`]: deterministic blob content, streamed, never held whole in memory;
//! - [`client`]: the registry API calls, each checking the status the spec requires;
//! - [`scenarios`]: what is measured (names are stable: they key the JSON lines);
//! - [`stats`]: the JSON line of a result, percentiles and medians;
//! - [`procstat`]: a server's CPU seconds and peak RSS from `/proc` (`--server-pid`);
//! - [`profile`]: perf switched on around the timed part (`--perf-ctl`), top functions of a
//!   profile (`--profile` in report mode);
//! - [`report`]: medians over repeats, berth/distribution ratios, the markdown table and SVG chart.

pub mod client;
pub mod data;
pub mod procstat;
pub mod profile;
pub mod report;
pub mod scenarios;
pub mod stats;

use std::io::Write as _;
use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Duration;

use clap::{Args, ValueEnum};

pub use scenarios::Scenario;

/// Command-line arguments of `berth bench`.
#[derive(Args, Debug, Clone)]
pub struct BenchArgs {
    /// Base URL of the registry (or, for http-put/http-get, of a plain HTTP server).
    #[arg(long, default_value = "http://127.0.0.1:5000")]
    pub url: String,
    /// Basic-auth user.
    #[arg(long)]
    pub user: Option<String>,
    /// Basic-auth password (else $BERTH_BENCH_PASSWORD, which keeps it out of `ps`).
    #[arg(long)]
    pub password: Option<String>,
    /// Accept any TLS certificate.
    #[arg(long)]
    pub insecure: bool,
    /// Scenario to run (repeatable); default: every registry scenario, then verify. One of:
    /// push-monolithic, push-single-post, push-chunked-1m, push-chunked-8m, push-chunked-64m,
    /// push-small, push-medium, pull-large, pull-large-nohash, manifest-get, verify,
    /// push-monolithic-4g, push-chunked-concurrent, resume-100m, resume-2g, pull-after-push,
    /// pull-again, manifest-put-1, manifest-put-32, catalog-first, catalog-middle, tags-first,
    /// tags-middle (over a prepared storage: --catalog-last, --tags-repo); ceilings: http-put,
    /// http-get (plain HTTP server), ceiling-sha256 (CPU), ceiling-first-touch (memory).
    #[arg(long = "scenario", value_name = "NAME")]
    pub scenarios: Vec<String>,
    /// Skip the verify pass that otherwise follows any push.
    #[arg(long)]
    pub no_verify: bool,
    /// Label of the server in results (`registry` field of the JSON lines).
    #[arg(long, default_value = "registry")]
    pub label: String,
    /// Append one JSON object per scenario result to this file.
    #[arg(long, value_name = "FILE")]
    pub json: Option<PathBuf>,
    /// Run the scenarios N times (seeds seed..seed+N); the table then also shows medians.
    #[arg(long, default_value_t = 1)]
    pub repeat: u64,
    /// Seed of the generated content (blobs differ between seeds and between scenarios).
    #[arg(long, default_value_t = 1)]
    pub seed: u64,
    /// Repository names are <prefix>/<scenario>; default berth-bench/s<seed>.
    #[arg(long)]
    pub repo_prefix: Option<String>,
    /// Size of the large blob (push-monolithic, single-post, chunked, pull-large), e.g. 1GiB.
    #[arg(long, default_value = "1GiB", value_parser = parse_size)]
    pub blob_size: u64,
    /// Size of the blob of push-monolithic-4g.
    #[arg(long, default_value = "4GiB", value_parser = parse_size)]
    pub huge_blob_size: u64,
    #[arg(long, default_value_t = 2000)]
    pub small_count: usize,
    #[arg(long, default_value = "4KiB", value_parser = parse_size)]
    pub small_size: u64,
    #[arg(long, default_value_t = 32)]
    pub small_concurrency: usize,
    #[arg(long, default_value_t = 200)]
    pub medium_count: usize,
    #[arg(long, default_value = "1MiB", value_parser = parse_size)]
    pub medium_size: u64,
    #[arg(long, default_value_t = 16)]
    pub medium_concurrency: usize,
    #[arg(long, default_value_t = 64)]
    pub manifest_concurrency: usize,
    /// How long manifest-get and manifest-put-* run, in seconds.
    #[arg(long, default_value_t = 10.0)]
    pub duration: f64,
    /// Listings: entries per page (`n=`).
    #[arg(long, default_value_t = 100)]
    pub page_size: usize,
    /// Listings: requests per scenario, one after the other.
    #[arg(long, default_value_t = 20)]
    pub page_requests: usize,
    /// catalog-middle: the repository its page starts after (`last=`).
    #[arg(long, value_name = "REPO")]
    pub catalog_last: Option<String>,
    /// tags-first, tags-middle: the repository whose tags are listed.
    #[arg(long, value_name = "REPO")]
    pub tags_repo: Option<String>,
    /// tags-middle: the tag its page starts after (`last=`).
    #[arg(long, value_name = "TAG")]
    pub tags_last: Option<String>,
    /// push-chunked-concurrent: how many uploads run at once (one blob each).
    #[arg(long, default_value_t = 50)]
    pub concurrent_count: usize,
    /// push-chunked-concurrent: size of each blob.
    #[arg(long, default_value = "32MiB", value_parser = parse_size)]
    pub concurrent_size: u64,
    /// push-chunked-concurrent: bytes per PATCH.
    #[arg(long, default_value = "8MiB", value_parser = parse_size)]
    pub concurrent_chunk: u64,
    /// resume-*: bytes per PATCH before the restart.
    #[arg(long, default_value = "8MiB", value_parser = parse_size)]
    pub resume_chunk: u64,
    /// resume-*: run only the half before the restart (push N bytes, save the upload in
    /// --resume-file) or the half after it (status, rest, complete). Without it, both halves run
    /// back to back, without a restart.
    #[arg(long, value_enum)]
    pub resume_phase: Option<ResumePhase>,
    /// resume-*: where the first half saves the upload for the second.
    #[arg(long, value_name = "FILE")]
    pub resume_file: Option<PathBuf>,
    /// Touch and free this much fresh memory right before each timed part (see
    /// `ceiling-first-touch`): page-cache writes then do not depend on what the hypervisor took
    /// back.
    #[arg(long, value_parser = parse_size)]
    pub warm_memory: Option<u64>,
    /// perf's control FIFO (`perf record -D -1 --control fifo:CTL,ACK`): perf is enabled for the
    /// timed part of each scenario only. Needs --perf-ack.
    #[arg(long, value_name = "FIFO", requires = "perf_ack")]
    pub perf_ctl: Option<PathBuf>,
    /// perf's acknowledgement FIFO.
    #[arg(long, value_name = "FIFO", requires = "perf_ctl")]
    pub perf_ack: Option<PathBuf>,
    /// Path under --url that http-put PUTs to and http-get GETs.
    #[arg(long, default_value = "bench/blob")]
    pub http_path: String,
    /// PID of the server, to record its CPU seconds and peak RSS per scenario (Linux /proc).
    #[arg(long)]
    pub server_pid: Option<u32>,
    /// Worker threads of the load generator (default: one per core).
    #[arg(long)]
    pub threads: Option<usize>,
    /// Per-request timeout, in seconds.
    #[arg(long, default_value_t = 600)]
    pub timeout: u64,
    /// No progress bar (it is hidden anyway when stderr is not a terminal).
    #[arg(long)]
    pub no_progress: bool,
    /// Report mode: read these JSON-lines files (repeatable) instead of running anything, and
    /// print the comparison as markdown.
    #[arg(long, value_name = "FILE")]
    pub report: Vec<PathBuf>,
    /// Report mode: also write the markdown to this file.
    #[arg(long, value_name = "FILE")]
    pub markdown: Option<PathBuf>,
    /// Report mode: write the throughput chart (SVG) to this file.
    #[arg(long, value_name = "FILE")]
    pub svg: Option<PathBuf>,
    /// Report mode: the label compared (numerator of the ratios).
    #[arg(long, default_value = "berth")]
    pub candidate: String,
    /// Report mode: the label compared against.
    #[arg(long, default_value = "distribution")]
    pub baseline: String,
    /// Report mode: another registry measured like the baseline (repeatable): a column of its
    /// own, and the candidate's ratio to the best of baseline and peers.
    #[arg(long, value_name = "LABEL")]
    pub peer: Vec<String>,
    /// Report mode: a server profile, `SCENARIO=FOLDED[=LINK]` (repeatable): folded stacks as
    /// inferno-collapse-perf writes them, and where the flamegraph is, for a link.
    #[arg(long, value_name = "SCENARIO=FOLDED[=LINK]")]
    pub profile: Vec<String>,
}

/// The halves of a resume scenario, on both sides of a registry restart.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum ResumePhase {
    Prepare,
    Finish,
}

/// `1GiB`, `64m`, `4096`, `1.5G`: suffixes K, M, G, T (with or without `i`/`B`) are powers of 1024.
pub fn parse_size(s: &str) -> Result<u64, String> {
    let t = s.trim();
    let split = t
        .find(|c: char| !(c.is_ascii_digit() || c == '.'))
        .unwrap_or(t.len());
    let (num, unit) = t.split_at(split);
    let n: f64 = num.parse().map_err(|_| format!("bad size {s:?}"))?;
    let mult: u64 = match unit.trim().to_ascii_lowercase().as_str() {
        "" | "b" => 1,
        "k" | "kb" | "kib" => 1 << 10,
        "m" | "mb" | "mib" => 1 << 20,
        "g" | "gb" | "gib" => 1 << 30,
        "t" | "tb" | "tib" => 1 << 40,
        _ => return Err(format!("bad size unit in {s:?}")),
    };
    let v = n * mult as f64;
    if !(v.is_finite() && v >= 1.0) {
        return Err(format!("size {s:?} must be at least one byte"));
    }
    Ok(v as u64)
}

/// Runs `berth bench`; the exit code is non-zero when any operation failed.
pub fn run(args: BenchArgs) -> ExitCode {
    if !args.report.is_empty() {
        return report::run(&args);
    }
    // The first half of a resume completes nothing: there is nothing to verify yet.
    let no_verify = args.no_verify || args.resume_phase == Some(ResumePhase::Prepare);
    let scenarios = match scenarios::selection(&args.scenarios, no_verify) {
        Ok(s) => s,
        Err(e) => {
            eprintln!("berth bench: {e}");
            return ExitCode::from(2);
        }
    };
    let mut builder = tokio::runtime::Builder::new_multi_thread();
    if let Some(t) = args.threads {
        builder.worker_threads(t.max(1));
    }
    let runtime = match builder.enable_all().build() {
        Ok(r) => r,
        Err(e) => {
            eprintln!("berth bench: runtime: {e}");
            return ExitCode::FAILURE;
        }
    };
    match runtime.block_on(run_scenarios(&args, &scenarios)) {
        Ok(true) => ExitCode::SUCCESS,
        Ok(false) => ExitCode::FAILURE,
        Err(e) => {
            eprintln!("berth bench: {e}");
            ExitCode::FAILURE
        }
    }
}

/// Runs the scenarios `--repeat` times; true when nothing failed.
async fn run_scenarios(args: &BenchArgs, selected: &[Scenario]) -> Result<bool, String> {
    let client = client::Client::new(
        &args.url,
        client::ClientOptions {
            user: args.user.clone(),
            password: args
                .password
                .clone()
                .or_else(|| std::env::var("BERTH_BENCH_PASSWORD").ok()),
            insecure: args.insecure,
            timeout: Duration::from_secs(args.timeout),
        },
    )?;
    if selected.iter().any(|s| s.needs_registry()) {
        client
            .ping()
            .await
            .map_err(|e| format!("{}: {e}", args.url))?;
    }
    let mut json = match &args.json {
        Some(path) => Some(
            std::fs::OpenOptions::new()
                .create(true)
                .append(true)
                .open(path)
                .map_err(|e| format!("{}: {e}", path.display()))?,
        ),
        None => None,
    };
    let perf = match (&args.perf_ctl, &args.perf_ack) {
        (Some(ctl), Some(ack)) => Some(std::sync::Arc::new(std::sync::Mutex::new(
            profile::PerfCtl::open(ctl, ack)?,
        ))),
        _ => None,
    };
    let mut results = Vec::new();
    for i in 0..args.repeat.max(1) {
        let seed = args.seed + i;
        let mut ctx = scenarios::Context::new(client.clone(), args, seed, perf.clone());
        for scenario in selected {
            let result = ctx.run(*scenario).await;
            if let Some(file) = json.as_mut() {
                let line = serde_json::to_string(&result).expect("a result serialises");
                writeln!(file, "{line}").map_err(|e| format!("--json: {e}"))?;
            }
            results.push(result);
        }
    }
    print!("{}", report::table(&results, args.repeat > 1));
    let failed: u64 = results.iter().map(|r| r.errors).sum();
    if failed > 0 {
        eprintln!("berth bench: {failed} operation(s) failed");
    }
    Ok(failed == 0)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sizes() {
        assert_eq!(parse_size("4096"), Ok(4096));
        assert_eq!(parse_size("4KiB"), Ok(4096));
        assert_eq!(parse_size("64m"), Ok(64 << 20));
        assert_eq!(parse_size("1GiB"), Ok(1 << 30));
        assert_eq!(parse_size("1.5G"), Ok(3 << 29));
        assert!(parse_size("1x").is_err());
        assert!(parse_size("0").is_err());
    }
}
