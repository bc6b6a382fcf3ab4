//! The markdown of `--report`: throughput and latency, server cost, the machine ceilings and each
//! push's share of the tightest, the issues' targets, resumes, other configurations and the
//! server profiles.

use std::fmt::Write as _;

use crate::bench::profile::{symbol_cell, top_self};
use crate::bench::stats::{median, ScenarioResult};

use super::targets::Target;
use super::{
    fmt_ms, fmt_num, metric, opt, order, ratio, spread, Comparison, Summary, LARGE_PUSHES,
};

impl Comparison {
    pub fn markdown(&self) -> String {
        let (c, b) = (&self.candidate, &self.baseline);
        let mut md = String::new();
        let _ = writeln!(
            md,
            "### Throughput and latency (medians of {} runs)\n",
            self.runs
        );
        // Candidate, baseline, then the peers, each with a value and a latency column; with peers,
        // the candidate's ratio to the best of the others too.
        let labels: Vec<&String> = [c, b].into_iter().chain(&self.peers).collect();
        let join = |cells: Vec<String>| cells.join(" | ");
        let best_col = !self.peers.is_empty();
        let _ = writeln!(
            md,
            "| scenario | unit | {} | {c} ÷ {b} |{} {} | runs | errors |",
            join(labels.iter().map(|l| l.to_string()).collect()),
            if best_col {
                format!(" {c} ÷ best other |")
            } else {
                String::new()
            },
            join(labels.iter().map(|l| format!("{l} p50 / p99 ms")).collect()),
        );
        let _ = writeln!(
            md,
            "|---|---|{}---:|{}{}---:|---:|",
            "---:|".repeat(labels.len()),
            if best_col { "---:|" } else { "" },
            "---:|".repeat(labels.len())
        );
        for row in &self.rows {
            let all: Vec<Option<Summary>> = [row.cand, row.base]
                .into_iter()
                .chain(row.peers.iter().copied())
                .collect();
            let v = |s: &Option<Summary>| s.map_or("–".into(), |s| fmt_num(s.value));
            let lat = |s: &Option<Summary>| {
                s.map_or("–".into(), |s| {
                    format!("{} / {}", fmt_ms(s.p50), fmt_ms(s.p99))
                })
            };
            let errors: u64 = all.iter().flatten().map(|s| s.errors).sum();
            let runs: Vec<String> = all
                .iter()
                .map(|s| s.map_or(0, |s| s.runs).to_string())
                .collect();
            let best = match row.best_other() {
                _ if !best_col => String::new(),
                Some((i, r)) => format!(" **{r:.2}×** ({}) |", labels[i + 1]),
                None => " – |".into(),
            };
            let _ = writeln!(
                md,
                "| {} | {} | {} | {} |{best} {} | {} | {errors} |",
                row.scenario,
                row.unit,
                join(all.iter().map(v).collect()),
                row.ratio().map_or("–".into(), |r| format!("**{r:.2}×**")),
                join(all.iter().map(lat).collect()),
                runs.join("/"),
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

        let (issue, targets) = self.targets();
        self.markdown_targets(&mut md, issue, targets);
        self.markdown_targets(&mut md, 14, self.issue14_targets());
        self.markdown_resume(&mut md);
        self.markdown_others(&mut md);
        self.markdown_profiles(&mut md);
        md
    }

    /// A section "Targets of issue N", when there are any; an unmet target links the profile of
    /// its scenario (the target's first word) when there is one.
    fn markdown_targets(&self, md: &mut String, issue: u32, targets: Vec<Target>) {
        if targets.is_empty() {
            return;
        }
        let _ = write!(
            md,
            "\n### Targets of issue {issue}\n\n| target | measured | met | profile |\n|---|---|:-:|---|\n"
        );
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
        "http-get-hashed" => "… the same GET, hashed by the client as a pull is".into(),
        "ceiling-first-touch" => "first touch of fresh memory after 8 s idle".into(),
        "ceiling-store-put" => {
            "S3 PUT of the large blob straight to the store (curl, SigV4)".into()
        }
        "ceiling-store-get" => {
            "S3 GET of the large blob straight from the store (curl, SigV4)".into()
        }
        other => other.to_string(),
    }
}
