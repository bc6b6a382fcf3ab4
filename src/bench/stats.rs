//! One scenario's result (one JSON line) and the arithmetic over them.

use serde::{Deserialize, Serialize};

/// MB as in MB/s: 10^6 bytes, like dd, openssl and the issue's figures.
pub const MB: f64 = 1_000_000.0;
pub const GIB: f64 = 1024.0 * 1024.0 * 1024.0;

/// One scenario run against one server: a JSON line of `--json`.
#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq)]
#[serde(default)]
pub struct ScenarioResult {
    /// Stable scenario name (`push-monolithic`, `manifest-get`, …).
    pub scenario: String,
    /// The server's label (`--label`): `berth`, `distribution`, `nginx`, `machine`.
    pub registry: String,
    /// The seed of the run (the script passes the repeat number).
    pub seed: u64,
    /// Payload bytes moved (pushed or read), headers not counted.
    pub bytes: u64,
    pub seconds: f64,
    /// `bytes / seconds` in 10^6 bytes per second.
    pub mb_s: f64,
    /// Operations: blob pushes, blob reads, manifest GETs.
    pub ops: u64,
    pub ops_s: f64,
    /// Latency of one operation (a whole push, a GET), milliseconds.
    pub p50_ms: f64,
    pub p99_ms: f64,
    pub errors: u64,
    /// Server CPU seconds (user + system) during the scenario, with `--server-pid`.
    pub server_cpu_s: Option<f64>,
    /// Server peak resident memory (VmHWM) during the scenario, MiB, with `--server-pid`.
    pub server_peak_rss_mib: Option<f64>,
    /// This load generator's CPU seconds during the scenario.
    pub client_cpu_s: Option<f64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub note: Option<String>,
    /// The first failure, shortened (the others are printed).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
    /// Which half of a two-part scenario: `prepare` / `finish` for the resume scenarios
    /// (`no-restart` when both ran in one process without a restart in between).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub phase: Option<String>,
    /// Milliseconds of a scenario's steps (resume: `status`, `first_patch`, `resume` = the two,
    /// `complete`).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub phases_ms: Option<std::collections::BTreeMap<String, f64>>,
}

/// Latencies of one scenario's operations.
#[derive(Debug, Default, Clone)]
pub struct Latencies(pub Vec<f64>);

impl Latencies {
    pub fn push_ms(&mut self, d: std::time::Duration) {
        self.0.push(d.as_secs_f64() * 1000.0);
    }

    pub fn extend(&mut self, other: Latencies) {
        self.0.extend(other.0);
    }

    /// Nearest-rank percentile (`q` in 0..=1); 0 when empty.
    pub fn percentile(&mut self, q: f64) -> f64 {
        if self.0.is_empty() {
            return 0.0;
        }
        self.0.sort_by(|a, b| a.total_cmp(b));
        let rank = (q * self.0.len() as f64).ceil().max(1.0) as usize;
        self.0[rank.min(self.0.len()) - 1]
    }
}

/// The median of some values (mean of the two middle ones for an even count); `None` when empty.
pub fn median(values: &[f64]) -> Option<f64> {
    if values.is_empty() {
        return None;
    }
    let mut v = values.to_vec();
    v.sort_by(|a, b| a.total_cmp(b));
    let n = v.len();
    Some(if n % 2 == 1 {
        v[n / 2]
    } else {
        (v[n / 2 - 1] + v[n / 2]) / 2.0
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn percentiles_and_medians() {
        let mut l = Latencies((1..=100).rev().map(f64::from).collect());
        assert_eq!(l.percentile(0.5), 50.0);
        assert_eq!(l.percentile(0.99), 99.0);
        assert_eq!(l.percentile(1.0), 100.0);
        assert_eq!(Latencies::default().percentile(0.5), 0.0);
        assert_eq!(median(&[3.0, 1.0, 2.0]), Some(2.0));
        assert_eq!(median(&[4.0, 1.0, 2.0, 3.0]), Some(2.5));
        assert_eq!(median(&[]), None);
    }

    #[test]
    fn json_lines_round_trip_and_tolerate_missing_fields() {
        let r = ScenarioResult {
            scenario: "push-small".into(),
            registry: "berth".into(),
            ops: 3,
            server_cpu_s: Some(1.5),
            ..Default::default()
        };
        let line = serde_json::to_string(&r).unwrap();
        assert_eq!(serde_json::from_str::<ScenarioResult>(&line).unwrap(), r);
        let sparse: ScenarioResult = serde_json::from_str(
            r#"{"scenario":"ceiling-fsync-write","registry":"machine","mb_s":900}"#,
        )
        .unwrap();
        assert_eq!(sparse.mb_s, 900.0);
    }
}
