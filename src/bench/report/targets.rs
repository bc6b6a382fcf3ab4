//! The issues' targets, as (target, measured, met) lines: issue 3's (both registries on local
//! disk) or issue 13's (on a store measured by its own GET), and issue 14's (reads after a write,
//! manifest PUTs with fsync on and off, listing pages, every row ahead of the baseline).

use super::{fmt_ms, is_listing, Comparison, Row};

/// A target, what was measured, whether it was met.
pub(super) type Target = (String, String, Option<bool>);

impl Comparison {
    /// Which issue's targets apply, and (target, measured, met) for each the data covers: on a
    /// store measured by its own GET (the Garage cluster), issue 13's; else issue 3's.
    pub(super) fn targets(&self) -> (u32, Vec<Target>) {
        match self.ceiling("ceiling-store-get") {
            Some(store_get) => (13, self.store_targets(store_get)),
            None => (3, self.local_targets()),
        }
    }

    /// Issue 13's, both registries on one replicated store: pushes at least twice
    /// distribution's, redirected pulls at the store's own GET speed (90 % of it, for the
    /// redirect's round trip).
    fn store_targets(&self, store_get: f64) -> Vec<Target> {
        let mut out = Vec::new();
        for scenario in ["push-chunked-8m", "push-chunked-64m", "push-small"] {
            if let Some(r) = self.row(scenario).and_then(Row::ratio) {
                out.push((
                    format!("{scenario} ≥ 2× {}", self.baseline),
                    format!("{r:.2}×"),
                    Some(r >= 2.0),
                ));
            }
        }
        for scenario in ["pull-large", "pull-large-proxied"] {
            if let Some(c) = self.row(scenario).and_then(|row| row.cand) {
                let share = c.value / store_get;
                out.push((
                    format!("{scenario} ≥ 90 % of the store's GET"),
                    format!("{:.0} %", share * 100.0),
                    Some(share >= 0.9),
                ));
            }
        }
        out
    }

    /// Issue 3's, both registries on local disk.
    fn local_targets(&self) -> Vec<Target> {
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

    /// Issue 14's, when its rows exist (pull-after-push, manifest-put-*, listing pages): reads
    /// right after a push at least the baseline's (and 90 % of nginx's GET); a manifest PUT with
    /// fsync at most twice as slow (p50) as without (label `<candidate>-nofsync`); push-small
    /// three times the baseline's; listing pages within 50 ms (p50) and faster than the
    /// baseline's; every row ahead of the baseline.
    pub(super) fn issue14_targets(&self) -> Vec<Target> {
        let b = &self.baseline;
        let ours = |r: &Row| {
            r.scenario.starts_with("pull-after-push")
                || r.scenario.starts_with("manifest-put-")
                || is_listing(&r.scenario)
        };
        if !self.rows.iter().any(ours) {
            return Vec::new();
        }
        let mut out = Vec::new();
        let mut at_least = |scenario: &str, min: f64| {
            if let Some(r) = self.row(scenario).and_then(Row::ratio) {
                out.push((
                    format!("{scenario} ≥ {min:.1}× {b}"),
                    format!("{r:.2}×"),
                    Some(r >= min),
                ));
            }
        };
        at_least("pull-after-push", 1.0);
        at_least("push-small", 3.0);
        // pull-after-push hashes what it reads (as a client checking the digest does), so it is
        // held against nginx's GET hashed the same way: the client's SHA-256 on one core bounds
        // both.
        if let (Some(c), Some(nginx)) = (
            self.row("pull-after-push").and_then(|r| r.cand),
            self.ceiling("http-get-hashed"),
        ) {
            let share = c.value / nginx;
            out.push((
                "pull-after-push ≥ 90 % of nginx's GET (hashed alike)".to_string(),
                format!("{:.0} %", share * 100.0),
                Some(share >= 0.9),
            ));
        }
        let nofsync = format!("{}-nofsync", self.candidate);
        let off = self
            .others
            .iter()
            .find(|(s, l, _)| s == "manifest-put-1" && *l == nofsync);
        if let (Some(on), Some((_, _, off))) =
            (self.row("manifest-put-1").and_then(|r| r.cand), off)
        {
            out.push((
                format!("manifest-put-1 p50 with fsync ≤ 2× {nofsync}'s"),
                format!("{} vs {} ms", fmt_ms(on.p50), fmt_ms(off.p50)),
                Some(on.p50 <= 2.0 * off.p50),
            ));
        }
        for row in self.rows.iter().filter(|r| is_listing(&r.scenario)) {
            if let (Some(c), Some(base)) = (row.cand, row.base) {
                out.push((
                    format!("{} p50 ≤ 50 ms and below {b}'s", row.scenario),
                    format!("{} vs {} ms", fmt_ms(c.p50), fmt_ms(base.p50)),
                    Some(c.p50 <= 50.0 && c.p50 < base.p50),
                ));
            }
        }
        let compared: Vec<(&str, f64)> = self
            .rows
            .iter()
            .filter(|r| r.scenario != "verify")
            .filter_map(|r| Some((r.scenario.as_str(), r.ratio()?)))
            .collect();
        if !compared.is_empty() {
            let behind: Vec<String> = compared
                .iter()
                .filter(|(_, r)| *r < 1.0)
                .map(|(s, r)| format!("{s} {r:.2}×"))
                .collect();
            out.push((
                format!("every row ≥ 1.0× {b}"),
                if behind.is_empty() {
                    format!("all {}", compared.len())
                } else {
                    format!(
                        "{} of {}; behind: {}",
                        compared.len() - behind.len(),
                        compared.len(),
                        behind.join(", ")
                    )
                },
                Some(behind.is_empty()),
            ));
        }
        out
    }
}
