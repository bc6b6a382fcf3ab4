//! Results for people: the plain table `berth bench` prints, and the comparison `--report` makes
//! from JSON lines (medians over runs, candidate/baseline ratios, machine ceilings, the issue's
//! targets) as markdown plus an SVG bar chart.

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::process::ExitCode;

use super::scenarios::Scenario;
use super::stats::{median, ScenarioResult, GIB};
use super::BenchArgs;

/// The table printed after a run: one row per result, then medians per scenario and label when
/// there were several runs.
pub fn table(results: &[ScenarioResult], medians: bool) -> String {
    let mut out = String::new();
    let header = format!(
        "{:<20} {:<14} {:>5} {:>10} {:>10} {:>10} {:>10} {:>8} {:>6} {:>8} {:>9}\n",
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
            "{:<20} {:<14} {:>5} {:>10.1} {:>10.1} {:>10.2} {:>10.2} {:>8.2} {:>6} {:>8} {:>9}{}",
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
                "{:<20} {:<14} {:>5} {:>10.1} {:>10.1} {:>10.2} {:>10.2} {:>8.2} {:>6} {:>8} {:>9}",
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
    let cmp = Comparison::new(&results, &args.candidate, &args.baseline);
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
    /// name → (MB/s median, label it came from)
    ceilings: BTreeMap<String, (f64, String)>,
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
        let mut runs = 0;
        for ((scenario, label), group) in &groups {
            if is_ceiling(scenario) {
                ceilings.insert(scenario.clone(), (med(group, |r| r.mb_s), label.clone()));
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
            } else if label == baseline {
                rows[idx].base = Some(summary);
            }
        }
        Comparison {
            candidate: candidate.to_string(),
            baseline: baseline.to_string(),
            rows,
            ceilings,
            runs,
        }
    }

    fn row(&self, scenario: &str) -> Option<&Row> {
        self.rows.iter().find(|r| r.scenario == scenario)
    }

    /// The lowest of the ceilings a push goes through: SHA-256 on one core, fsync'd sequential
    /// write, loopback HTTP PUT.
    fn push_ceiling(&self) -> Option<(f64, &str)> {
        ["ceiling-sha256", "ceiling-fsync-write", "http-put"]
            .iter()
            .filter_map(|n| self.ceilings.get(*n).map(|(v, _)| (*v, *n)))
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
        for name in LARGE_PUSHES.iter().chain(&["push-small", "manifest-get"]) {
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
            md.push_str("\n### Machine ceilings (same run)\n\n| ceiling | MB/s | measured by |\n|---|---:|---|\n");
            for (name, (v, label)) in &self.ceilings {
                let _ = writeln!(
                    md,
                    "| {} | {} | {label} |",
                    ceiling_title(name),
                    fmt_num(*v)
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
            md.push_str("\n### Targets of issue 3\n\n| target | measured | met |\n|---|---|:-:|\n");
            for (what, measured, met) in targets {
                let mark = match met {
                    Some(true) => "yes",
                    Some(false) => "**no**",
                    None => "–",
                };
                let _ = writeln!(md, "| {what} | {measured} | {mark} |");
            }
        }
        md
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
        if let (Some(row), Some((nginx, _))) =
            (self.row("pull-large-nohash"), self.ceilings.get("http-get"))
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
        "http-get" => "loopback HTTP GET from page cache (nginx)".into(),
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
}
