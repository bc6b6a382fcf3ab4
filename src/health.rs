//! Health checks (`health.storagedriver`): a background task checks the storage backend every
//! `interval`; after `threshold` consecutive failures the check is unhealthy, `/debug/health`
//! answers 503 and the API's `GET /v2/` answers `503 UNAVAILABLE` until a check passes again.

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use chrono::{DateTime, SecondsFormat, Utc};
use serde_json::{json, Value};

use crate::config::StorageHealthConfig;
use crate::storage::Storage;

/// The state of one check: a plain value, updated by [`CheckState::record`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CheckState {
    /// Consecutive failures that make the check unhealthy (at least 1).
    pub threshold: u32,
    pub consecutive_failures: u32,
    pub last_error: Option<String>,
    pub last_checked: Option<DateTime<Utc>>,
}

impl CheckState {
    pub fn new(threshold: u32) -> CheckState {
        CheckState {
            threshold: threshold.max(1),
            consecutive_failures: 0,
            last_error: None,
            last_checked: None,
        }
    }

    /// Records the outcome of one check made at `at`. A success clears the failures (the last
    /// error is kept, for the record).
    pub fn record(&mut self, outcome: Result<(), String>, at: DateTime<Utc>) {
        self.last_checked = Some(at);
        match outcome {
            Ok(()) => self.consecutive_failures = 0,
            Err(e) => {
                self.consecutive_failures = self.consecutive_failures.saturating_add(1);
                self.last_error = Some(e);
            }
        }
    }

    pub fn healthy(&self) -> bool {
        self.consecutive_failures < self.threshold
    }

    /// `ok`, `failing` (failed, under the threshold) or `unhealthy`.
    pub fn status(&self) -> &'static str {
        match self.consecutive_failures {
            0 => "ok",
            _ if self.healthy() => "failing",
            _ => "unhealthy",
        }
    }

    pub fn to_json(&self) -> Value {
        json!({
            "status": self.status(),
            "consecutive_failures": self.consecutive_failures,
            "threshold": self.threshold,
            "last_error": self.last_error,
            "last_checked": self
                .last_checked
                .map(|t| t.to_rfc3339_opts(SecondsFormat::Millis, true)),
        })
    }
}

/// The checks of this process, by name. Cheap to clone; clones share the state.
#[derive(Debug, Clone, Default)]
pub struct Health(Arc<Shared>);

#[derive(Debug, Default)]
struct Shared {
    checks: Mutex<BTreeMap<&'static str, CheckState>>,
    /// Whether any check is unhealthy: read by every `GET /v2/` without a lock.
    unhealthy: AtomicBool,
}

impl Health {
    /// Adds a check (healthy until it fails `threshold` times in a row).
    pub fn register(&self, name: &'static str, threshold: u32) {
        self.0
            .checks
            .lock()
            .unwrap()
            .insert(name, CheckState::new(threshold));
    }

    /// Records the outcome of check `name`.
    pub fn record(&self, name: &'static str, outcome: Result<(), String>) {
        let mut checks = self.0.checks.lock().unwrap();
        let check = checks.entry(name).or_insert_with(|| CheckState::new(1));
        let was_healthy = check.healthy();
        check.record(outcome, Utc::now());
        match (was_healthy, check.healthy()) {
            (true, false) => log::error!(
                "health check {name} is unhealthy after {} failures: {}",
                check.consecutive_failures,
                check.last_error.as_deref().unwrap_or("")
            ),
            (false, true) => log::info!("health check {name} passes again"),
            _ => {}
        }
        let unhealthy = checks.values().any(|c| !c.healthy());
        self.0.unhealthy.store(unhealthy, Ordering::Relaxed);
    }

    /// Whether every check is healthy (true when there are none).
    pub fn healthy(&self) -> bool {
        !self.0.unhealthy.load(Ordering::Relaxed)
    }

    /// `{"healthy": bool, "checks": {name: {status, consecutive_failures, threshold, last_error,
    /// last_checked}}}`
    pub fn report(&self) -> Value {
        let checks = self.0.checks.lock().unwrap();
        let map: serde_json::Map<String, Value> = checks
            .iter()
            .map(|(name, c)| (name.to_string(), c.to_json()))
            .collect();
        json!({ "healthy": checks.values().all(CheckState::healthy), "checks": map })
    }
}

/// The name of the storage check in reports.
pub const STORAGE_CHECK: &str = "storagedriver";

/// Starts checking `storage` every `config.interval` (must run inside an actix system). A check
/// that takes longer than the interval (at least 5 s) counts as failed.
pub fn start_storage_check(health: &Health, storage: Storage, config: &StorageHealthConfig) {
    health.register(STORAGE_CHECK, config.threshold);
    let health = health.clone();
    let interval = config.interval.max(Duration::from_millis(10));
    let limit = interval.max(Duration::from_secs(5));
    actix_web::rt::spawn(async move {
        loop {
            let outcome = match actix_web::rt::time::timeout(limit, storage.check()).await {
                Ok(Ok(())) => Ok(()),
                Ok(Err(e)) => Err(e.to_string()),
                Err(_) => Err(format!("no answer within {limit:?}")),
            };
            if let Err(e) = &outcome {
                log::warn!("storage health check failed: {e}");
            }
            health.record(STORAGE_CHECK, outcome);
            actix_web::rt::time::sleep(interval).await;
        }
    });
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn unhealthy_after_threshold_consecutive_failures_and_back() {
        let mut c = CheckState::new(3);
        let t = Utc::now();
        assert!(c.healthy());
        assert_eq!(c.status(), "ok");
        c.record(Err("a".into()), t);
        c.record(Err("b".into()), t);
        assert!(c.healthy());
        assert_eq!(c.status(), "failing");
        c.record(Ok(()), t);
        c.record(Err("c".into()), t);
        c.record(Err("d".into()), t);
        assert!(c.healthy(), "failures must be consecutive");
        c.record(Err("e".into()), t);
        assert!(!c.healthy());
        assert_eq!(c.status(), "unhealthy");
        assert_eq!(c.last_error.as_deref(), Some("e"));
        assert_eq!(c.last_checked, Some(t));
        c.record(Ok(()), t);
        assert!(c.healthy());
        assert_eq!(c.consecutive_failures, 0);
    }

    #[test]
    fn a_threshold_of_zero_means_one() {
        let mut c = CheckState::new(0);
        assert!(c.healthy());
        c.record(Err("x".into()), Utc::now());
        assert!(!c.healthy());
    }

    #[test]
    fn health_reports_and_flags() {
        let h = Health::default();
        assert!(h.healthy());
        assert_eq!(h.report()["healthy"], true);
        h.register(STORAGE_CHECK, 2);
        h.record(STORAGE_CHECK, Err("down".into()));
        assert!(h.healthy());
        h.record(STORAGE_CHECK, Err("down".into()));
        assert!(!h.healthy());
        let r = h.report();
        assert_eq!(r["healthy"], false);
        assert_eq!(r["checks"][STORAGE_CHECK]["status"], "unhealthy");
        assert_eq!(r["checks"][STORAGE_CHECK]["last_error"], "down");
        assert!(r["checks"][STORAGE_CHECK]["last_checked"].is_string());
        h.record(STORAGE_CHECK, Ok(()));
        assert!(h.healthy());
    }
}
