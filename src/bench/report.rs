//! Results for people: the plain table `berth bench` prints, and the comparison `--report` makes
//! from JSON lines (medians over runs, candidate/baseline ratios, machine ceilings, the issue's
//! targets) as markdown plus an SVG bar chart.

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::process::ExitCode;

use super::profile::{symbol_cell, top_self};
use super::scenarios::Scenario;
use super::stats::{median, ScenarioResult, GIB};
use super::BenchArgs;

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

/// The headline metric of a scenario: ops/s for the many-operation ones, MB/s otherwise.
fn metric(scenario: &str) -> (&'static str, fn(&ScenarioResult) -> f64) {
    match scenario {
        "push-small" | "push-medium" | "manifest-get" => ("ops/s", |r| r.ops_s),
        _ => ("MB/s", |r| r.mb_s),
    }
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
    let mut cmp = Comparison::new(&results, &args.candidate, &args.baseline);
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

/// One scenario, candidate against baseline (medians).
#[derive(Debug, Clone)]
struct Row {
    scenario: String,
    unit: &'static str,
    cand: Option<Summary>,
    base: Option<Summary>,
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
}

fn ratio(a: f64, b: f64) -> Option<f64> {
    (b > 0.0).then(|| a / b)
}

/// Everything the report says, computed once.
pub struct Comparison {
    candidate: String,
    baseline: String,
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
            if label != candidate && label != baseline {
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
                    });
                    rows.len() - 1
                }
            };
            if label == candidate {
                rows[idx].cand = Some(summary);
            } else {
                rows[idx].base = Some(summary);
            }
        }
        Comparison {
            candidate: candidate.to_string(),
            baseline: baseline.to_string(),
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

    pub fn markdown(&self) -> String {
        let (c, b) = (&self.candidate, &self.baseline);
        let mut md = String::new();
        let _ = writeln!(
            md,
            "### Throughput and latency (medians of {} runs)\n",
            self.runs
        );
        let _ = writeln!(
            md,
            "| scenario | unit | {c} | {b} | {c} ÷ {b} | {c} p50 / p99 ms | {b} p50 / p99 ms | runs | errors |"
        );
        md.push_str("|---|---|---:|---:|---:|---:|---:|---:|---:|\n");
        for row in &self.rows {
            let v = |s: Option<Summary>| s.map_or("–".into(), |s| fmt_num(s.value));
            let lat = |s: Option<Summary>| {
                s.map_or("–".into(), |s| {
                    format!("{} / {}", fmt_ms(s.p50), fmt_ms(s.p99))
                })
            };
            let errors = row.cand.map_or(0, |s| s.errors) + row.base.map_or(0, |s| s.errors);
            let runs = format!(
                "{}/{}",
                row.cand.map_or(0, |s| s.runs),
                row.base.map_or(0, |s| s.runs)
            );
            let _ = writeln!(
                md,
                "| {} | {} | {} | {} | {} | {} | {} | {runs} | {} |",
                row.scenario,
                row.unit,
                v(row.cand),
                v(row.base),
                row.ratio().map_or("–".into(), |r| format!("**{r:.2}×**")),
                lat(row.cand),
                lat(row.base),
                errors
            );
        }

        md.push_str("\n### Server cost\n\n");
        let _ = writeln!(md, "| | {c} | {b} | {c} ÷ {b} |");
        md.push_str("|---|---:|---:|---:|\n");
        let pair = |x: Option<f64>, y: Option<f64>, d: usize| {
            format!(
                "{} | {} | {}",
                opt(x, d),
                opt(y, d),
                match (x, y) {
                    (Some(x), Some(y)) => ratio(x, y).map_or("–".into(), |r| format!("{r:.2}×")),
                    _ => "–".into(),
                }
            )
        };
        let _ = writeln!(
            md,
            "| server CPU seconds per GiB pushed (large pushes) | {} |",
            pair(self.cpu_per_gib(true), self.cpu_per_gib(false), 2)
        );
        for name in LARGE_PUSHES {
            if let Some(row) = self.row(name) {
                let per = |s: Option<Summary>| {
                    s.and_then(|s| s.cpu_s.map(|c| if s.gib > 0.0 { c / s.gib } else { 0.0 }))
                };
                let _ = writeln!(
                    md,
                    "| … CPU s/GiB, {name} | {} |",
                    pair(per(row.cand), per(row.base), 2)
                );
            }
        }
        for name in
            LARGE_PUSHES
                .iter()
                .chain(&["push-chunked-concurrent", "push-small", "manifest-get"])
        {
            if let Some(row) = self.row(name) {
                let _ = writeln!(
                    md,
                    "| peak RSS MiB during {name} | {} |",
                    pair(
                        row.cand.and_then(|s| s.rss_mib),
                        row.base.and_then(|s| s.rss_mib),
                        0
                    )
                );
            }
        }

        if !self.ceilings.is_empty() {
            md.push_str("\n### Machine ceilings (same run)\n\n");
            md.push_str("Medians over the runs, with the lowest and highest run and the spread ((max − min) ÷ median), so it shows how far each ceiling moved within this run.\n\n");
            md.push_str("| ceiling | MB/s (median) | min – max | spread | runs | measured by |\n|---|---:|---:|---:|---:|---|\n");
            for (name, (values, label)) in &self.ceilings {
                let (m, lo, hi) = spread(values);
                let _ = writeln!(
                    md,
                    "| {} | {} | {} – {} | {} | {} | {label} |",
                    ceiling_title(name),
                    fmt_num(m),
                    fmt_num(lo),
                    fmt_num(hi),
                    if m > 0.0 {
                        format!("{:.0} %", 100.0 * (hi - lo) / m)
                    } else {
                        "–".into()
                    },
                    values.len()
                );
            }
            if let Some((limit, name)) = self.push_ceiling() {
                let _ = writeln!(
                    md,
                    "\nTightest push ceiling: **{}** ({} MB/s).\n",
                    ceiling_title(name),
                    fmt_num(limit)
                );
                md.push_str("| scenario | ");
                let _ = writeln!(md, "{c} MB/s | % of ceiling | {b} MB/s | % of ceiling |");
                md.push_str("|---|---:|---:|---:|---:|\n");
                for name in LARGE_PUSHES {
                    if let Some(row) = self.row(name) {
                        let pc = |s: Option<Summary>| {
                            s.map_or("–".into(), |s| {
                                format!("{:.0} %", 100.0 * s.value / limit)
                            })
                        };
                        let v = |s: Option<Summary>| s.map_or("–".into(), |s| fmt_num(s.value));
                        let _ = writeln!(
                            md,
                            "| {name} | {} | {} | {} | {} |",
                            v(row.cand),
                            pc(row.cand),
                            v(row.base),
                            pc(row.base)
                        );
                    }
                }
            }
        }

        let targets = self.targets();
        if !targets.is_empty() {
            md.push_str("\n### Targets of issue 3\n\n| target | measured | met | profile |\n|---|---|:-:|---|\n");
            for (what, measured, met) in targets {
                let mark = match met {
                    Some(true) => "yes",
                    Some(false) => "**no**",
                    None => "–",
                };
                let scenario = what.split_whitespace().next().unwrap_or_default();
                let profile = match (met, self.profiles.get(scenario)) {
                    (Some(false), Some(_)) => format!("[{scenario}](#profile-{scenario})"),
                    _ => String::new(),
                };
                let _ = writeln!(md, "| {what} | {measured} | {mark} | {profile} |");
            }
        }
        self.markdown_resume(&mut md);
        self.markdown_others(&mut md);
        self.markdown_profiles(&mut md);
        md
    }

    /// Resuming an upload after the registry was killed: per N and label, the medians of the
    /// status request, the first PATCH and their sum (the resume latency), and the completion.
    fn markdown_resume(&self, md: &mut String) {
        if self.resumes.is_empty() {
            return;
        }
        md.push_str("\n### Resuming an upload after `kill -9` (issue 4)\n\n");
        md.push_str("N bytes were PATCHed, the registry was killed with SIGKILL and started again on the same storage; then `GET` of the upload (must report N), one PATCH of the last MiB, `PUT ?digest=` (must be 201), and the blob read back by digest. Resume latency = status + first PATCH accepted; it should not grow with N. Medians (ms).\n\n");
        md.push_str("| N | registry | resume (status + first PATCH) | status | first PATCH | complete (PUT) | runs ok | failure |\n|---|---|---:|---:|---:|---:|---:|---|\n");
        let mut list: Vec<&(String, String, Vec<ScenarioResult>)> = self.resumes.iter().collect();
        let rank = |l: &str| {
            if l == self.candidate {
                0
            } else if l == self.baseline {
                1
            } else {
                2
            }
        };
        list.sort_by_key(|(s, l, _)| (order(s), rank(l), l.clone()));
        for (scenario, label, runs) in list {
            let ok: Vec<&ScenarioResult> = runs.iter().filter(|r| r.errors == 0).collect();
            let phase = |key: &str| {
                let v: Vec<f64> = ok
                    .iter()
                    .filter_map(|r| r.phases_ms.as_ref()?.get(key).copied())
                    .collect();
                median(&v).map_or("–".to_string(), fmt_ms)
            };
            let failure = runs
                .iter()
                .find_map(|r| r.error.as_deref())
                .map(|e| {
                    format!(
                        "`{}`",
                        e.chars()
                            .take(120)
                            .collect::<String>()
                            .replace('|', "\\|")
                            .replace('`', "'")
                    )
                })
                .unwrap_or_default();
            let n = scenario.trim_start_matches("resume-").to_uppercase();
            let no_restart = runs
                .iter()
                .any(|r| r.phase.as_deref() == Some("no-restart"));
            let _ = writeln!(
                md,
                "| {n}{} | {label} | {} | {} | {} | {} | {}/{} | {failure} |",
                if no_restart { " (no restart)" } else { "" },
                if ok.is_empty() {
                    "**failed**".to_string()
                } else {
                    phase("resume")
                },
                phase("status"),
                phase("first_patch"),
                phase("complete"),
                ok.len(),
                runs.len()
            );
        }
    }

    /// Other configurations (labels besides candidate and baseline): informational, against the
    /// candidate's and baseline's own medians of the same scenario.
    fn markdown_others(&self, md: &mut String) {
        if self.others.is_empty() {
            return;
        }
        let (c, b) = (&self.candidate, &self.baseline);
        md.push_str("\n### Other configurations (informational)\n\n");
        let _ = writeln!(
            md,
            "Same scenarios against other set-ups; the ratios compare different storage and are no like-for-like comparison.\n\n| scenario | configuration | unit | value | runs | errors | {c} | {b} | ÷ {c} | ÷ {b} | peak RSS MiB |\n|---|---|---|---:|---:|---:|---:|---:|---:|---:|---:|"
        );
        for (scenario, label, s) in &self.others {
            let row = self.row(scenario);
            let cv = row.and_then(|r| r.cand).map(|s| s.value);
            let bv = row.and_then(|r| r.base).map(|s| s.value);
            let r = |x: Option<f64>| {
                x.and_then(|x| ratio(s.value, x))
                    .map_or("–".into(), |r| format!("{r:.2}×"))
            };
            let _ = writeln!(
                md,
                "| {scenario} | {label} | {} | {} | {} | {} | {} | {} | {} | {} | {} |",
                metric(scenario).0,
                fmt_num(s.value),
                s.runs,
                s.errors,
                cv.map_or("–".into(), fmt_num),
                bv.map_or("–".into(), fmt_num),
                r(cv),
                r(bv),
                opt(s.rss_mib, 0)
            );
        }
    }

    /// Server profiles: a link to each flamegraph and the top 10 functions by self time.
    fn markdown_profiles(&self, md: &mut String) {
        if self.profiles.is_empty() {
            return;
        }
        md.push_str("\n### Server profiles\n\n");
        md.push_str("`perf record` of the server (cpu-clock, DWARF call graphs) during the timed part of each scenario only; self time is the server CPU time in which the function itself was running (folded weights are cpu-clock nanoseconds), inlined functions counted on their own.\n");
        for (scenario, (folded, link)) in &self.profiles {
            let (top, total) = top_self(folded, 10);
            let _ = writeln!(
                md,
                "\n#### <a id=\"profile-{scenario}\"></a>{scenario} ({} CPU ms)\n",
                fmt_ms(total as f64 / 1e6)
            );
            if let Some(link) = link {
                let _ = writeln!(md, "Flamegraph: [{link}]({link})\n");
            }
            md.push_str("| # | function (self time) | CPU ms | share |\n|---:|---|---:|---:|\n");
            for (i, t) in top.iter().enumerate() {
                let _ = writeln!(
                    md,
                    "| {} | {} | {} | {:.1} % |",
                    i + 1,
                    symbol_cell(&t.symbol, 110),
                    fmt_ms(t.samples as f64 / 1e6),
                    100.0 * t.share
                );
            }
        }
    }

    /// (target, measured, met) for each of issue 3's targets that the data covers.
    fn targets(&self) -> Vec<(String, String, Option<bool>)> {
        let mut out = Vec::new();
        let ceiling = self.push_ceiling();
        let mut ratio_target = |scenario: &str, min: f64, ceiling_share: bool| {
            let Some(row) = self.row(scenario) else {
                return;
            };
            let Some(r) = row.ratio() else { return };
            out.push((
                format!("{scenario} ≥ {min}× {}", self.baseline),
                format!("{r:.2}×"),
                Some(r >= min),
            ));
            if ceiling_share {
                if let (Some((limit, name)), Some(c)) = (ceiling, row.cand) {
                    let share = c.value / limit;
                    out.push((
                        format!("{scenario} ≥ 60 % of the tightest ceiling ({name})"),
                        format!("{:.0} %", share * 100.0),
                        Some(share >= 0.6),
                    ));
                }
            }
        };
        ratio_target("push-monolithic", 3.0, true);
        ratio_target("push-chunked-8m", 4.0, true);
        ratio_target("push-chunked-1m", 6.0, true);
        ratio_target("push-small", 5.0, false);
        ratio_target("push-medium", 3.0, false);
        ratio_target("manifest-get", 10.0, false);
        if let Some(row) = self.row("manifest-get") {
            if let (Some(c), Some(b)) = (row.cand, row.base) {
                out.push((
                    format!("manifest-get p99 ≤ ⅒ of {}'s", self.baseline),
                    format!("{} vs {} ms", fmt_ms(c.p99), fmt_ms(b.p99)),
                    Some(c.p99 * 10.0 <= b.p99),
                ));
            }
        }
        if let (Some(c), Some(b)) = (self.cpu_per_gib(true), self.cpu_per_gib(false)) {
            out.push((
                format!("CPU s per GiB pushed ≤ ⅓ of {}'s", self.baseline),
                format!("{c:.2} vs {b:.2}"),
                Some(c * 3.0 <= b),
            ));
        }
        if let (Some(row), Some(nginx)) = (self.row("pull-large-nohash"), self.ceiling("http-get"))
        {
            if let Some(c) = row.cand {
                let share = c.value / nginx;
                out.push((
                    "pull-large-nohash ≥ 90 % of nginx's GET".to_string(),
                    format!("{:.0} %", share * 100.0),
                    Some(share >= 0.9),
                ));
            }
        }
        for name in ["push-monolithic", "push-monolithic-4g"] {
            if let Some(row) = self.row(name) {
                if let (Some(c), Some(b)) = (
                    row.cand.and_then(|s| s.rss_mib),
                    row.base.and_then(|s| s.rss_mib),
                ) {
                    out.push((
                        format!("peak RSS during {name} ≤ {}'s", self.baseline),
                        format!("{c:.0} vs {b:.0} MiB"),
                        Some(c <= b),
                    ));
                }
            }
        }
        out
    }

    /// A grouped horizontal bar chart of the headline metric per scenario; each scenario's bars
    /// are scaled to the larger of the two, since units differ between rows.
    pub fn svg(&self) -> String {
        let rows: Vec<&Row> = self
            .rows
            .iter()
            .filter(|r| r.scenario != "verify" && (r.cand.is_some() || r.base.is_some()))
            .collect();
        let (width, left, bar_w, row_h, top) = (880.0, 170.0, 520.0, 46.0, 70.0);
        let height = top + row_h * rows.len() as f64 + 30.0;
        let (cc, bc) = ("#2b6cb0", "#dd6b20");
        let mut s = String::new();
        let _ = writeln!(
            s,
            r#"<svg xmlns="http://www.w3.org/2000/svg" width="{width}" height="{height}" viewBox="0 0 {width} {height}" font-family="sans-serif" font-size="12">"#
        );
        let _ = writeln!(
            s,
            r#"<rect width="{width}" height="{height}" fill="white"/><text x="{}" y="24" font-size="16" font-weight="bold">{} vs {}: throughput per scenario (medians of {} runs; bars scaled per row)</text>"#,
            10,
            esc(&self.candidate),
            esc(&self.baseline),
            self.runs
        );
        let _ = writeln!(
            s,
            r#"<rect x="10" y="38" width="14" height="12" fill="{cc}"/><text x="30" y="48">{}</text><rect x="140" y="38" width="14" height="12" fill="{bc}"/><text x="160" y="48">{}</text>"#,
            esc(&self.candidate),
            esc(&self.baseline)
        );
        for (i, row) in rows.iter().enumerate() {
            let y = top + row_h * i as f64;
            let cv = row.cand.map_or(0.0, |s| s.value);
            let bv = row.base.map_or(0.0, |s| s.value);
            let max = cv.max(bv).max(f64::MIN_POSITIVE);
            let _ = writeln!(
                s,
                r#"<text x="{}" y="{}" text-anchor="end">{}</text>"#,
                left - 8.0,
                y + 22.0,
                esc(&row.scenario)
            );
            for (j, (v, color)) in [(cv, cc), (bv, bc)].into_iter().enumerate() {
                let by = y + 4.0 + 18.0 * j as f64;
                let w = (bar_w * v / max).max(1.0);
                let _ = writeln!(
                    s,
                    r#"<rect x="{left}" y="{by}" width="{w:.1}" height="16" fill="{color}"/><text x="{:.1}" y="{:.1}">{} {}</text>"#,
                    left + w + 6.0,
                    by + 12.5,
                    fmt_num(v),
                    row.unit
                );
            }
            if let Some(r) = row.ratio() {
                let _ = writeln!(
                    s,
                    r#"<text x="{}" y="{}" text-anchor="end" font-weight="bold">{r:.2}×</text>"#,
                    width - 10.0,
                    y + 22.0
                );
            }
        }
        s.push_str("</svg>\n");
        s
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

fn ceiling_title(name: &str) -> String {
    match name {
        "ceiling-sha256" => "SHA-256, one core (Rust sha2, as berth uses)".into(),
        "ceiling-sha256-openssl" => "SHA-256, one core (openssl speed)".into(),
        "ceiling-fsync-write" => "sequential write + fsync (dd conv=fsync)".into(),
        "ceiling-direct-write" => "sequential O_DIRECT write + fsync (dd)".into(),
        "http-put" => "loopback HTTP PUT of the large blob (nginx)".into(),
        "http-put-cold" => "… the same PUT after 8 s idle, memory not warmed".into(),
        "http-get" => "loopback HTTP GET from page cache (nginx)".into(),
        "ceiling-first-touch" => "first touch of fresh memory after 8 s idle".into(),
        other => other.to_string(),
    }
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

fn esc(s: &str) -> String {
    s.replace('&', "&amp;")
        .replace('<', "&lt;")
        .replace('>', "&gt;")
}

#[cfg(test)]
mod tests {
    use super::*;

    fn r(scenario: &str, registry: &str, mb_s: f64, ops_s: f64) -> ScenarioResult {
        ScenarioResult {
            scenario: scenario.into(),
            registry: registry.into(),
            mb_s,
            ops_s,
            bytes: 1 << 30,
            p99_ms: 1000.0 / ops_s.max(1.0),
            server_cpu_s: Some(mb_s / 1000.0),
            server_peak_rss_mib: Some(mb_s / 10.0),
            ..Default::default()
        }
    }

    #[test]
    fn ratios_medians_ceilings_and_targets() {
        let results = vec![
            r("push-monolithic", "berth", 900.0, 1.0),
            r("push-monolithic", "berth", 1000.0, 1.0),
            r("push-monolithic", "berth", 2000.0, 1.0),
            r("push-monolithic", "distribution", 300.0, 1.0),
            r("manifest-get", "berth", 0.0, 50_000.0),
            r("manifest-get", "distribution", 0.0, 4_000.0),
            r("ceiling-sha256", "machine", 1900.0, 0.0),
            r("http-put", "nginx", 1500.0, 0.0),
        ];
        let cmp = Comparison::new(&results, "berth", "distribution");
        assert_eq!(
            cmp.row("push-monolithic").unwrap().ratio(),
            Some(1000.0 / 300.0)
        );
        assert_eq!(cmp.push_ceiling(), Some((1500.0, "http-put")));
        let md = cmp.markdown();
        assert!(
            md.contains("| push-monolithic | MB/s | 1000 | 300 | **3.33×** | 0.00 / 1000 | 0.00 / 1000 | 3/1 | 0 |"),
            "{md}"
        );
        assert!(
            md.contains("| manifest-get | ops/s | 50000 | 4000 | **12.50×**"),
            "{md}"
        );
        assert!(
            md.contains("push-monolithic ≥ 60 % of the tightest ceiling (http-put) | 67 % | yes"),
            "{md}"
        );
        let svg = cmp.svg();
        assert!(svg.starts_with("<svg") && svg.trim_end().ends_with("</svg>"));
        assert_eq!(svg.matches("<rect").count(), 3 + 2 * 2);
        let t = table(&results, true);
        assert!(t.contains("medians"));
    }

    #[test]
    fn ceilings_show_their_spread() {
        let results = vec![
            r("http-put", "nginx", 800.0, 0.0),
            r("http-put", "nginx", 2000.0, 0.0),
            r("http-put", "nginx", 1000.0, 0.0),
            r("push-monolithic", "berth", 700.0, 1.0),
        ];
        let cmp = Comparison::new(&results, "berth", "distribution");
        assert_eq!(cmp.push_ceiling(), Some((1000.0, "http-put")));
        let md = cmp.markdown();
        assert!(
            md.contains("| loopback HTTP PUT of the large blob (nginx) | 1000 | 800 – 2000 | 120 % | 3 | nginx |"),
            "{md}"
        );
        assert!(md.contains("| push-monolithic | 700 | 70 % |"), "{md}");
    }

    fn resume(
        label: &str,
        phase: &str,
        resume_ms: Option<f64>,
        error: Option<&str>,
    ) -> ScenarioResult {
        ScenarioResult {
            scenario: "resume-2g".into(),
            registry: label.into(),
            phase: Some(phase.into()),
            errors: error.is_some() as u64,
            error: error.map(str::to_string),
            phases_ms: resume_ms.map(|ms| {
                [
                    ("resume", ms),
                    ("status", 1.0),
                    ("first_patch", ms - 1.0),
                    ("complete", 9.0),
                ]
                .into_iter()
                .map(|(k, v)| (k.to_string(), v))
                .collect()
            }),
            ..Default::default()
        }
    }

    #[test]
    fn resumes_have_their_own_table_and_failures_are_rows() {
        let results = vec![
            resume("berth", "prepare", None, None),
            resume(
                "berth",
                "finish",
                None,
                Some("GET upload status: 404 Not Found | x"),
            ),
            resume("distribution", "prepare", None, None),
            resume("distribution", "finish", Some(30.0), None),
            resume("distribution", "finish", Some(50.0), None),
        ];
        let cmp = Comparison::new(&results, "berth", "distribution");
        assert!(cmp.rows.is_empty());
        let md = cmp.markdown();
        assert!(
            md.contains("| 2G | berth | **failed** | – | – | – | 0/1 | `GET upload status: 404 Not Found \\| x` |"),
            "{md}"
        );
        assert!(
            md.contains("| 2G | distribution | 40.0 | 1.0 | 39.0 | 9.0 | 2/2 |  |"),
            "{md}"
        );
    }

    #[test]
    fn other_labels_are_informational_rows() {
        let results = vec![
            r("push-chunked-8m", "berth", 800.0, 1.0),
            r("push-chunked-8m", "distribution", 200.0, 1.0),
            r("push-chunked-8m", "berth-s3", 400.0, 1.0),
        ];
        let cmp = Comparison::new(&results, "berth", "distribution");
        assert_eq!(cmp.rows.len(), 1);
        let md = cmp.markdown();
        assert!(
            md.contains("| push-chunked-8m | berth-s3 | MB/s | 400 | 1 | 0 | 800 | 200 | 0.50× | 2.00× | 40 |"),
            "{md}"
        );
    }

    #[test]
    fn profiles_list_top_functions_and_unmet_targets_link_them() {
        let results = vec![
            r("push-small", "berth", 0.0, 100.0),
            r("push-small", "distribution", 0.0, 50.0),
        ];
        let mut cmp = Comparison::new(&results, "berth", "distribution");
        cmp.add_profile(
            "push-small",
            "main;sha256 3000000\nmain;memcpy 1000000\n".into(),
            Some("benches/results/flame-push-small.svg".into()),
        );
        let md = cmp.markdown();
        assert!(
            md.contains("| push-small ≥ 5× distribution | 2.00× | **no** | [push-small](#profile-push-small) |"),
            "{md}"
        );
        assert!(
            md.contains("<a id=\"profile-push-small\"></a>push-small (4.0 CPU ms)"),
            "{md}"
        );
        assert!(md.contains("| 1 | `sha256` | 3.0 | 75.0 % |"), "{md}");
        assert!(md.contains(
            "[benches/results/flame-push-small.svg](benches/results/flame-push-small.svg)"
        ));
        assert_eq!(
            parse_profile_arg("push-small=/tmp/f=x.svg"),
            Some(("push-small", "/tmp/f", Some("x.svg")))
        );
        assert_eq!(
            parse_profile_arg("push-small=/tmp/f"),
            Some(("push-small", "/tmp/f", None))
        );
        assert_eq!(parse_profile_arg("push-small"), None);
    }
}
