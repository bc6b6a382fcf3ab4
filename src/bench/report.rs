//! Results for people: the plain table `berth bench` prints, and the comparison `--report` makes
//! from JSON lines (medians over runs, candidate/baseline ratios, machine ceilings, the issue's
//! targets) as markdown plus an SVG bar chart.
//!
//! Here: the table, the grouping and medians, `--report`'s entry point and the [`Comparison`]
//! with what it computes (ratios, ceilings, CPU per GiB). The issues' targets are in
//! `report/targets.rs`, the renderings in `report/markdown.rs` and `report/svg.rs`.

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::process::ExitCode;

use super::scenarios::Scenario;
use super::stats::{median, ScenarioResult, GIB};
use super::BenchArgs;

mod markdown;
mod svg;
mod targets;
#[cfg(test)]
mod tests;

/// The table printed after a run: one row per result, then medians per scenario and label when
/// there were several runs.
pub fn table(results: &[ScenarioResult], medians: bool) -> String {
    let mut out = String::new();
    let header = format!(
        "{:<24} {:<14} {:>5} {:>10} {:>10} {:>10} {:>10} {:>8} {:>6} {:>8} {:>9}\n",
        "scenario",
        "registry",
        "seed",
        "MB/s",
        "ops/s",
        "p50 ms",
        "p99 ms",
        "seconds",
        "errors",
        "srv cpu",
        "srv MiB"
    );
    out.push_str(&header);
    for r in results {
        let _ = writeln!(
            out,
            "{:<24} {:<14} {:>5} {:>10.1} {:>10.1} {:>10.2} {:>10.2} {:>8.2} {:>6} {:>8} {:>9}{}",
            r.scenario,
            r.registry,
            r.seed,
            r.mb_s,
            r.ops_s,
            r.p50_ms,
            r.p99_ms,
            r.seconds,
            r.errors,
            opt(r.server_cpu_s, 2),
            opt(r.server_peak_rss_mib, 0),
            r.note
                .as_deref()
                .map(|n| format!("  ({n})"))
                .unwrap_or_default()
        );
    }
    if medians {
        out.push_str("\nmedians\n");
        out.push_str(&header);
        for ((scenario, registry), runs) in grouped(results) {
            let m = |f: fn(&ScenarioResult) -> f64| med(&runs, f);
            let _ = writeln!(
                out,
                "{:<24} {:<14} {:>5} {:>10.1} {:>10.1} {:>10.2} {:>10.2} {:>8.2} {:>6} {:>8} {:>9}",
                scenario,
                registry,
                runs.len(),
                m(|r| r.mb_s),
                m(|r| r.ops_s),
                m(|r| r.p50_ms),
                m(|r| r.p99_ms),
                m(|r| r.seconds),
                runs.iter().map(|r| r.errors).sum::<u64>(),
                opt(median_of(&runs, |r| r.server_cpu_s), 2),
                opt(median_of(&runs, |r| r.server_peak_rss_mib), 0),
            );
        }
    }
    out
}

fn opt(v: Option<f64>, decimals: usize) -> String {
    v.map_or_else(|| "-".to_string(), |v| format!("{v:.decimals$}"))
}

type Groups<'a> = BTreeMap<(String, String), Vec<&'a ScenarioResult>>;

/// Results by (scenario, label), in scenario order then label.
fn grouped(results: &[ScenarioResult]) -> Vec<((String, String), Vec<&ScenarioResult>)> {
    let mut groups: Groups = BTreeMap::new();
    for r in results {
        groups
            .entry((r.scenario.clone(), r.registry.clone()))
            .or_default()
            .push(r);
    }
    let mut v: Vec<_> = groups.into_iter().collect();
    v.sort_by_key(|((s, l), _)| (order(s), s.clone(), l.clone()));
    v
}

fn order(scenario: &str) -> usize {
    Scenario::parse(scenario)
        .and_then(|s| Scenario::ALL.iter().position(|x| *x == s))
        .unwrap_or(usize::MAX)
}

fn med(runs: &[&ScenarioResult], f: fn(&ScenarioResult) -> f64) -> f64 {
    median(&runs.iter().map(|r| f(r)).collect::<Vec<_>>()).unwrap_or(0.0)
}

fn median_of(runs: &[&ScenarioResult], f: fn(&ScenarioResult) -> Option<f64>) -> Option<f64> {
    median(&runs.iter().filter_map(|r| f(r)).collect::<Vec<_>>())
}

/// The headline metric of a scenario: ops/s for the many-operation ones (manifests, small
/// blobs, listing pages), MB/s otherwise.
fn metric(scenario: &str) -> (&'static str, fn(&ScenarioResult) -> f64) {
    if matches!(scenario, "push-small" | "push-medium" | "manifest-get")
        || scenario.starts_with("manifest-put-")
        || is_listing(scenario)
    {
        ("ops/s", |r| r.ops_s)
    } else {
        ("MB/s", |r| r.mb_s)
    }
}

/// A listing page's row: `catalog-*` or `tags-*` (the catalog group renames
/// `catalog-first` to `catalog-20k-first`, …).
fn is_listing(scenario: &str) -> bool {
    scenario.starts_with("catalog-") || scenario.starts_with("tags-")
}

/// `--report`: reads the JSON lines, prints (and writes) the markdown, writes the SVG.
pub fn run(args: &BenchArgs) -> ExitCode {
    let mut results = Vec::new();
    for path in &args.report {
        let text = match std::fs::read_to_string(path) {
            Ok(t) => t,
            Err(e) => {
                eprintln!("berth bench: {}: {e}", path.display());
                return ExitCode::from(2);
            }
        };
        for (i, line) in text.lines().enumerate() {
            if line.trim().is_empty() {
                continue;
            }
            match serde_json::from_str::<ScenarioResult>(line) {
                Ok(r) => results.push(r),
                Err(e) => {
                    eprintln!("berth bench: {}:{}: {e}", path.display(), i + 1);
                    return ExitCode::from(2);
                }
            }
        }
    }
    let mut cmp = Comparison::with_peers(&results, &args.candidate, &args.baseline, &args.peer);
    for spec in &args.profile {
        let Some((scenario, path, link)) = parse_profile_arg(spec) else {
            eprintln!("berth bench: --profile {spec:?}: expected SCENARIO=FOLDED[=LINK]");
            return ExitCode::from(2);
        };
        match std::fs::read_to_string(path) {
            Ok(folded) => cmp.add_profile(scenario, folded, link.map(str::to_string)),
            Err(e) => {
                eprintln!("berth bench: --profile {path}: {e}");
                return ExitCode::from(2);
            }
        }
    }
    let md = cmp.markdown();
    print!("{md}");
    if let Some(path) = &args.markdown {
        if let Err(e) = std::fs::write(path, &md) {
            eprintln!("berth bench: {}: {e}", path.display());
            return ExitCode::FAILURE;
        }
    }
    if let Some(path) = &args.svg {
        if let Err(e) = std::fs::write(path, cmp.svg()) {
            eprintln!("berth bench: {}: {e}", path.display());
            return ExitCode::FAILURE;
        }
    }
    ExitCode::SUCCESS
}

/// `SCENARIO=FOLDED[=LINK]` of `--profile`.
fn parse_profile_arg(spec: &str) -> Option<(&str, &str, Option<&str>)> {
    let mut parts = spec.splitn(3, '=');
    let scenario = parts.next().filter(|s| !s.is_empty())?;
    let path = parts.next().filter(|s| !s.is_empty())?;
    Some((scenario, path, parts.next().filter(|s| !s.is_empty())))
}

/// One scenario, candidate against baseline and the peers (medians).
#[derive(Debug, Clone)]
struct Row {
    scenario: String,
    unit: &'static str,
    cand: Option<Summary>,
    base: Option<Summary>,
    /// One per [`Comparison::peers`], in their order.
    peers: Vec<Option<Summary>>,
}

#[derive(Debug, Clone, Copy)]
struct Summary {
    value: f64,
    runs: usize,
    p50: f64,
    p99: f64,
    errors: u64,
    cpu_s: Option<f64>,
    gib: f64,
    rss_mib: Option<f64>,
}

impl Row {
    fn ratio(&self) -> Option<f64> {
        ratio(self.cand?.value, self.base?.value)
    }

    /// The best of the baseline and the peers (index 0 the baseline, i the peer i − 1) with the
    /// candidate's ratio to it.
    /// The candidate's ratio to the best of the others, among those whose runs all answered
    /// right (a peer that failed, e.g. one that cannot read distribution's layout, is no
    /// competitor for the row, however fast its errors came back).
    fn best_other(&self) -> Option<(usize, f64)> {
        let (i, best) = std::iter::once(self.base)
            .chain(self.peers.iter().copied())
            .enumerate()
            .filter_map(|(i, s)| s.filter(|s| s.errors == 0).map(|s| (i, s.value)))
            .max_by(|a, b| a.1.total_cmp(&b.1))?;
        Some((i, ratio(self.cand?.value, best)?))
    }
}

fn ratio(a: f64, b: f64) -> Option<f64> {
    (b > 0.0).then(|| a / b)
}

/// Everything the report says, computed once.
pub struct Comparison {
    candidate: String,
    baseline: String,
    /// Other registries measured like the baseline (`--peer`): a column each.
    peers: Vec<String>,
    rows: Vec<Row>,
    /// name → every run's MB/s and the label it came from
    ceilings: BTreeMap<String, (Vec<f64>, String)>,
    /// Other labels than candidate and baseline (e.g. berth on S3): (scenario, label) → summary.
    others: Vec<(String, String, Summary)>,
    /// Resume scenarios after the restart, by (scenario, label).
    resumes: Vec<(String, String, Vec<ScenarioResult>)>,
    /// scenario → (folded stacks' text, link to the flamegraph)
    profiles: BTreeMap<String, (String, Option<String>)>,
    runs: usize,
}

const LARGE_PUSHES: [&str; 6] = [
    "push-monolithic",
    "push-single-post",
    "push-chunked-1m",
    "push-chunked-8m",
    "push-chunked-64m",
    "push-monolithic-4g",
];

impl Comparison {
    pub fn new(results: &[ScenarioResult], candidate: &str, baseline: &str) -> Self {
        Comparison::with_peers(results, candidate, baseline, &[])
    }

    /// With `peers`: labels compared like the baseline, each in a column of its own.
    pub fn with_peers(
        results: &[ScenarioResult],
        candidate: &str,
        baseline: &str,
        peers: &[String],
    ) -> Self {
        let groups = grouped(results);
        let mut rows: Vec<Row> = Vec::new();
        let mut ceilings = BTreeMap::new();
        let mut others = Vec::new();
        let mut resumes = Vec::new();
        let mut runs = 0;
        for ((scenario, label), group) in &groups {
            if is_ceiling(scenario) {
                ceilings.insert(
                    scenario.clone(),
                    (group.iter().map(|r| r.mb_s).collect(), label.clone()),
                );
                continue;
            }
            if scenario.starts_with("resume-") {
                // The half before the restart only sets the scene.
                let after: Vec<ScenarioResult> = group
                    .iter()
                    .filter(|r| r.phase.as_deref() != Some("prepare"))
                    .map(|r| (*r).clone())
                    .collect();
                if !after.is_empty() {
                    resumes.push((scenario.clone(), label.clone(), after));
                }
                continue;
            }
            let (unit, f) = metric(scenario);
            let summary = Summary {
                value: med(group, f),
                runs: group.len(),
                p50: med(group, |r| r.p50_ms),
                p99: med(group, |r| r.p99_ms),
                errors: group.iter().map(|r| r.errors).sum(),
                cpu_s: median_of(group, |r| r.server_cpu_s),
                gib: med(group, |r| r.bytes as f64 / GIB),
                rss_mib: group
                    .iter()
                    .filter_map(|r| r.server_peak_rss_mib)
                    .reduce(f64::max),
            };
            let peer = peers.iter().position(|p| p == label);
            if label != candidate && label != baseline && peer.is_none() {
                others.push((scenario.clone(), label.clone(), summary));
                continue;
            }
            if !matches!(scenario.as_str(), "verify" | "push-monolithic-4g") {
                runs = runs.max(group.len());
            }
            let idx = match rows.iter().position(|r| &r.scenario == scenario) {
                Some(i) => i,
                None => {
                    rows.push(Row {
                        scenario: scenario.clone(),
                        unit,
                        cand: None,
                        base: None,
                        peers: vec![None; peers.len()],
                    });
                    rows.len() - 1
                }
            };
            if let Some(p) = peer {
                rows[idx].peers[p] = Some(summary);
            } else if label == candidate {
                rows[idx].cand = Some(summary);
            } else {
                rows[idx].base = Some(summary);
            }
        }
        Comparison {
            candidate: candidate.to_string(),
            baseline: baseline.to_string(),
            peers: peers.to_vec(),
            rows,
            ceilings,
            others,
            resumes,
            profiles: BTreeMap::new(),
            runs,
        }
    }

    /// Adds a server profile of `scenario` (folded stacks) with a link to its flamegraph.
    pub fn add_profile(&mut self, scenario: &str, folded: String, link: Option<String>) {
        self.profiles.insert(scenario.to_string(), (folded, link));
    }

    /// The median of a ceiling's runs.
    fn ceiling(&self, name: &str) -> Option<f64> {
        self.ceilings.get(name).and_then(|(v, _)| median(v))
    }

    fn row(&self, scenario: &str) -> Option<&Row> {
        self.rows.iter().find(|r| r.scenario == scenario)
    }

    /// The lowest of the ceilings a push goes through: SHA-256 on one core, fsync'd sequential
    /// write, loopback HTTP PUT.
    fn push_ceiling(&self) -> Option<(f64, &str)> {
        ["ceiling-sha256", "ceiling-fsync-write", "http-put"]
            .iter()
            .filter_map(|n| self.ceiling(n).map(|v| (v, *n)))
            .filter(|(v, _)| *v > 0.0)
            .min_by(|a, b| a.0.total_cmp(&b.0))
    }

    /// CPU seconds per GiB pushed over the large pushes (medians per scenario, summed).
    fn cpu_per_gib(&self, candidate: bool) -> Option<f64> {
        let (mut cpu, mut gib) = (0.0, 0.0);
        for name in LARGE_PUSHES {
            let Some(row) = self.row(name) else { continue };
            let s = if candidate { row.cand } else { row.base };
            if let Some(Summary {
                cpu_s: Some(c),
                gib: g,
                ..
            }) = s
            {
                cpu += c;
                gib += g;
            }
        }
        (gib > 0.0).then(|| cpu / gib)
    }
}

/// Median, lowest and highest of some runs (zeros when there are none).
fn spread(values: &[f64]) -> (f64, f64, f64) {
    let lo = values.iter().copied().reduce(f64::min).unwrap_or(0.0);
    let hi = values.iter().copied().reduce(f64::max).unwrap_or(0.0);
    (median(values).unwrap_or(0.0), lo, hi)
}

fn is_ceiling(scenario: &str) -> bool {
    scenario.starts_with("ceiling-") || scenario.starts_with("http-")
}

fn fmt_num(v: f64) -> String {
    if v >= 100.0 {
        format!("{v:.0}")
    } else if v >= 10.0 {
        format!("{v:.1}")
    } else {
        format!("{v:.2}")
    }
}

fn fmt_ms(v: f64) -> String {
    if v >= 100.0 {
        format!("{v:.0}")
    } else if v >= 1.0 {
        format!("{v:.1}")
    } else {
        format!("{v:.2}")
    }
}
