//! How many upload sessions may be open at once, per repository and per user
//! (`uploads.maxperrepository`, `uploads.maxperuser`).
//!
//! Every session costs a record on storage and, while it is written, an actor and a file: a
//! client opening thousands of sessions it never finishes would fill both. A session counts from
//! its `POST` until it completes, is cancelled, or has been idle for `uploads.idletimeout` (an
//! abandoned session stops counting then; purging removes its bytes later, and it can still be
//! resumed). Counts are this instance's: several instances behind a load balancer each allow as
//! many.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use thiserror::Error;

/// The prefix of reservations' keys (upload ids are UUIDs).
const RESERVED: &str = "reserved-";

/// A new session was refused: one of the caps is reached.
#[derive(Debug, Error, PartialEq, Eq)]
#[error(
    "too many upload sessions open for {scope} (at most {limit}, uploads.{key}); finish or \
     cancel some, or wait for idle ones to expire"
)]
pub struct QuotaExceeded {
    /// `repository "team/app"` or `user "ci"`.
    pub scope: String,
    pub limit: usize,
    pub key: &'static str,
}

#[derive(Debug)]
struct Session {
    repo: String,
    owner: String,
    last_active: Instant,
}

#[derive(Debug, Default)]
struct Open {
    /// By upload id; reservations not yet bound to an id have keys of their own.
    sessions: HashMap<String, Session>,
    next_reservation: u64,
    /// When the sessions of a scope (`QuotaExceeded::scope`) were last looked up on storage.
    rechecked: HashMap<String, Instant>,
}

/// How often the sessions of one scope are looked up on storage at most.
pub const RECHECK_EVERY: Duration = Duration::from_secs(2);
/// How many sessions one refusal looks up at most.
const RECHECK_AT_MOST: usize = 200;

/// The open sessions of this instance.
#[derive(Debug, Clone)]
pub struct UploadQuota {
    per_repository: usize,
    per_owner: usize,
    idle: Duration,
    open: Arc<Mutex<Open>>,
}

/// A place taken for a session being opened: [`Reservation::bind`] it to the upload's id once
/// the session exists; dropping it unbound gives the place back.
#[derive(Debug)]
pub struct Reservation {
    key: Option<String>,
    open: Arc<Mutex<Open>>,
}

impl UploadQuota {
    /// A cap of 0 means no cap.
    pub fn new(per_repository: usize, per_owner: usize, idle: Duration) -> UploadQuota {
        let cap = |n: usize| if n == 0 { usize::MAX } else { n };
        UploadQuota {
            per_repository: cap(per_repository),
            per_owner: cap(per_owner),
            idle,
            open: Arc::default(),
        }
    }

    /// Takes a place for a new session of `owner` (a user name, or `anonymous@ADDRESS`) in
    /// `repo`, or says which cap is reached.
    pub fn reserve(&self, repo: &str, owner: &str) -> Result<Reservation, QuotaExceeded> {
        self.reserve_at(repo, owner, Instant::now())
    }

    fn reserve_at(
        &self,
        repo: &str,
        owner: &str,
        now: Instant,
    ) -> Result<Reservation, QuotaExceeded> {
        let mut open = self.open.lock().expect("upload quota");
        let idle = self.idle;
        open.sessions
            .retain(|_, s| now.saturating_duration_since(s.last_active) < idle);
        let (in_repo, of_owner) = open.sessions.values().fold((0, 0), |(r, o), s| {
            (
                r + usize::from(s.repo == repo),
                o + usize::from(s.owner == owner),
            )
        });
        if in_repo >= self.per_repository {
            return Err(QuotaExceeded {
                scope: format!("repository {repo:?}"),
                limit: self.per_repository,
                key: "maxperrepository",
            });
        }
        if of_owner >= self.per_owner {
            return Err(QuotaExceeded {
                scope: format!("user {owner:?}"),
                limit: self.per_owner,
                key: "maxperuser",
            });
        }
        open.next_reservation += 1;
        let key = format!("{RESERVED}{}", open.next_reservation);
        open.sessions.insert(
            key.clone(),
            Session {
                repo: repo.to_string(),
                owner: owner.to_string(),
                last_active: now,
            },
        );
        Ok(Reservation {
            key: Some(key),
            open: self.open.clone(),
        })
    }

    /// The session `id` was written to: it counts for another idle period.
    pub fn touch(&self, id: &str) {
        self.touch_at(id, Instant::now());
    }

    fn touch_at(&self, id: &str, now: Instant) {
        if let Some(s) = self.open.lock().expect("upload quota").sessions.get_mut(id) {
            s.last_active = now;
        }
    }

    /// The session `id` completed or was cancelled.
    pub fn release(&self, id: &str) {
        self.open.lock().expect("upload quota").sessions.remove(id);
    }

    /// Sessions (id, repository) counted against the cap `refused` hit, to look up on storage:
    /// some may have been finished through another instance, which this one cannot know. The
    /// least recently written first, at most [`RECHECK_AT_MOST`], and for one scope at most
    /// every [`RECHECK_EVERY`], so clients hammering a cap cannot make every refusal read
    /// hundreds of records.
    pub fn to_recheck(
        &self,
        refused: &QuotaExceeded,
        repo: &str,
        owner: &str,
    ) -> Vec<(String, String)> {
        self.to_recheck_at(refused, repo, owner, Instant::now())
    }

    fn to_recheck_at(
        &self,
        refused: &QuotaExceeded,
        repo: &str,
        owner: &str,
        now: Instant,
    ) -> Vec<(String, String)> {
        let mut open = self.open.lock().expect("upload quota");
        let scope = refused.scope.clone();
        if open
            .rechecked
            .get(&scope)
            .is_some_and(|at| now.saturating_duration_since(*at) < RECHECK_EVERY)
        {
            return Vec::new();
        }
        open.rechecked
            .retain(|_, at| now.saturating_duration_since(*at) < RECHECK_EVERY);
        open.rechecked.insert(scope, now);
        let mut counted: Vec<(&String, &Session)> = open
            .sessions
            .iter()
            .filter(|(id, _)| !id.starts_with(RESERVED))
            .filter(|(_, s)| match refused.key {
                "maxperrepository" => s.repo == repo,
                _ => s.owner == owner,
            })
            .collect();
        counted.sort_by_key(|(_, s)| s.last_active);
        counted
            .into_iter()
            .take(RECHECK_AT_MOST)
            .map(|(id, s)| (id.clone(), s.repo.clone()))
            .collect()
    }

    /// Sessions counted now.
    pub fn open(&self) -> usize {
        self.open.lock().expect("upload quota").sessions.len()
    }
}

impl Reservation {
    /// The session now exists as upload `id`.
    pub fn bind(mut self, id: &str) {
        let Some(key) = self.key.take() else { return };
        let mut open = self.open.lock().expect("upload quota");
        if let Some(session) = open.sessions.remove(&key) {
            open.sessions.insert(id.to_string(), session);
        }
    }
}

impl Drop for Reservation {
    fn drop(&mut self) {
        if let Some(key) = self.key.take() {
            self.open
                .lock()
                .expect("upload quota")
                .sessions
                .remove(&key);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn caps_per_repository_and_per_user() {
        let quota = UploadQuota::new(3, 2, Duration::from_secs(3600));
        quota.reserve("a", "ci").unwrap().bind("1");
        quota.reserve("a", "ci").unwrap().bind("2");
        let err = quota.reserve("b", "ci").unwrap_err();
        assert_eq!(err.key, "maxperuser");
        assert!(err.to_string().contains("user \"ci\""), "{err}");
        quota.reserve("a", "bob").unwrap().bind("3");
        let err = quota.reserve("a", "eve").unwrap_err();
        assert_eq!(err.key, "maxperrepository");
        let now = Instant::now();
        let counted = quota.to_recheck_at(&err, "a", "eve", now);
        assert_eq!(counted.len(), 3);
        assert!(counted.contains(&("3".to_string(), "a".to_string())));
        // Not again right away.
        assert!(quota.to_recheck_at(&err, "a", "eve", now).is_empty());
        let later = now + RECHECK_EVERY;
        assert_eq!(quota.to_recheck_at(&err, "a", "eve", later).len(), 3);
        // A finished session gives its place back.
        quota.release("1");
        quota.reserve("b", "ci").unwrap().bind("4");
        assert_eq!(quota.open(), 3);
    }

    #[test]
    fn an_unbound_reservation_gives_its_place_back() {
        let quota = UploadQuota::new(1, 1, Duration::from_secs(3600));
        let reservation = quota.reserve("a", "ci").unwrap();
        assert!(quota.reserve("a", "ci").is_err());
        drop(reservation);
        assert!(quota.reserve("a", "ci").is_ok());
    }

    #[test]
    fn idle_sessions_stop_counting_and_writes_keep_them() {
        let quota = UploadQuota::new(1, 10, Duration::from_secs(60));
        let t0 = Instant::now();
        let at = |secs| t0 + Duration::from_secs(secs);
        quota.reserve_at("a", "ci", t0).unwrap().bind("1");
        quota.touch_at("1", at(40));
        // Written to 50 s ago: still open.
        assert!(quota.reserve_at("a", "ci", at(90)).is_err());
        assert!(quota.reserve_at("a", "ci", at(101)).is_ok());
    }
}
