//! The upload-session actor: this process's owner of one upload in memory.
//!
//! The durable truth about an upload is its record on storage (see `storage::uploads`); the actor
//! caches what is expensive to rebuild from it (the open writer, the verifier holding the running
//! hash) and serialises this process's requests on the upload. A request that writes takes a
//! [`Lease`] from the actor (a second one gets [`UploadError::Busy`]) and gives it back with
//! [`Release`], stating which record generation the cache now matches. A session cancelled while
//! leased hands the cache back to the releasing request for clean-up. A session idle for a while
//! leaves memory (not storage): the next request rebuilds it from the record.

use std::time::{Duration, Instant};

use actix::prelude::*;

use super::verifier::{DigestVerifier, LatestHash};
use super::{Sessions, UploadError};
use crate::oci::{Algorithm, RepoName};
use crate::storage::BlobWriter;

/// How often a session checks whether it has been idle too long.
const EXPIRY_CHECK: Duration = Duration::from_secs(60);

/// The expensive part of an upload's in-memory state.
pub struct Cached {
    pub writer: BlobWriter,
    pub verifier: Addr<DigestVerifier>,
    pub latest: LatestHash,
    /// Bytes the verifier's hash covers that no one read back from storage: hashed by another
    /// process (or before a restart), whose record handed the hash state over. On local disk
    /// that record can outlive the data pages it describes (a power loss), so the bytes are
    /// re-read before the blob is published; 0 when this process hashed every byte itself.
    pub restored: u64,
}

pub struct UploadSession {
    id: String,
    repo: RepoName,
    algorithm: Algorithm,
    /// `None` when not built yet (or dropped after a failure): rebuilt from the record.
    cached: Option<Cached>,
    /// The record generation `cached` matches.
    generation: u64,
    /// The offset when last released (for the `Range` of a busy answer).
    offset: u64,
    leased: bool,
    last_active: Instant,
    /// Cancelled while a request held the lease: clean up when it comes back.
    cancelled: bool,
    sessions: Sessions,
    evict_after: Duration,
}

impl UploadSession {
    pub fn new(
        id: String,
        repo: RepoName,
        algorithm: Algorithm,
        sessions: Sessions,
        evict_after: Duration,
    ) -> Self {
        UploadSession {
            id,
            repo,
            algorithm,
            cached: None,
            generation: 0,
            offset: 0,
            leased: false,
            last_active: Instant::now(),
            cancelled: false,
            sessions,
            evict_after,
        }
    }

    /// A session whose cache is already built (a new upload).
    pub fn with_cache(mut self, cached: Cached, generation: u64) -> Self {
        self.offset = cached.writer.written();
        self.cached = Some(cached);
        self.generation = generation;
        self
    }

    fn evict_if_idle(&mut self, ctx: &mut Context<Self>) {
        if self.leased || self.last_active.elapsed() < self.evict_after {
            return;
        }
        let mut sessions = self.sessions.lock().unwrap();
        if sessions.get(&self.id).is_some_and(|a| a == &ctx.address()) {
            sessions.remove(&self.id);
        }
        ctx.stop();
    }

    /// Every request names the repository in its URL; a session answers only its own, so an
    /// upload id is useless in another repository. Checked in each message, saving a round trip.
    fn check_repo(&self, repo: &RepoName) -> Result<(), UploadError> {
        if repo == &self.repo {
            Ok(())
        } else {
            Err(UploadError::Unknown(self.id.clone()))
        }
    }
}

impl Actor for UploadSession {
    type Context = Context<Self>;

    fn started(&mut self, ctx: &mut Self::Context) {
        let every = EXPIRY_CHECK.min(self.evict_after / 2);
        ctx.run_interval(every, Self::evict_if_idle);
    }
}

/// Exclusive right, within this process, to write the upload.
pub struct Lease {
    pub cached: Option<Cached>,
    pub generation: u64,
    pub algorithm: Algorithm,
}

/// Whether the session answers `repo` and is not cancelled.
#[derive(Message)]
#[rtype(result = "Result<(), UploadError>")]
pub struct Check {
    pub repo: RepoName,
}

impl Handler<Check> for UploadSession {
    type Result = Result<(), UploadError>;
    fn handle(&mut self, msg: Check, _: &mut Self::Context) -> Self::Result {
        self.check_repo(&msg.repo)?;
        if self.cancelled {
            return Err(UploadError::Unknown(self.id.clone()));
        }
        Ok(())
    }
}

/// Take the lease.
#[derive(Message)]
#[rtype(result = "Result<Lease, UploadError>")]
pub struct Acquire {
    pub repo: RepoName,
}

impl Handler<Acquire> for UploadSession {
    type Result = Result<Lease, UploadError>;
    fn handle(&mut self, msg: Acquire, _: &mut Self::Context) -> Self::Result {
        self.check_repo(&msg.repo)?;
        if self.cancelled {
            return Err(UploadError::Unknown(self.id.clone()));
        }
        if self.leased {
            return Err(UploadError::Busy {
                offset: self.offset,
            });
        }
        self.leased = true;
        self.last_active = Instant::now();
        Ok(Lease {
            cached: self.cached.take(),
            generation: self.generation,
            algorithm: self.algorithm,
        })
    }
}

/// Give the lease back, with the cache and the record generation it matches (`None`: the cache
/// is not to be trusted). Answers the cache itself when the session was cancelled meanwhile
/// (the caller removes the upload).
#[derive(Message)]
#[rtype(result = "Result<(), Option<Cached>>")]
pub struct Release {
    pub cached: Option<Cached>,
    pub generation: Option<u64>,
}

impl Handler<Release> for UploadSession {
    type Result = Result<(), Option<Cached>>;
    fn handle(&mut self, msg: Release, ctx: &mut Self::Context) -> Self::Result {
        let mut cached = msg.cached;
        if let Some(c) = &mut cached {
            c.writer.park();
        }
        self.leased = false;
        self.last_active = Instant::now();
        if self.cancelled {
            ctx.stop();
            return Err(cached);
        }
        match (cached, msg.generation) {
            (Some(c), Some(generation)) => {
                self.offset = c.writer.written();
                self.cached = Some(c);
                self.generation = generation;
            }
            _ => {
                self.cached = None;
                self.generation = 0;
            }
        }
        Ok(())
    }
}

/// How a session ended.
pub enum Closed {
    /// It was idle: here is its cache, if it had one.
    Idle(Option<Box<Cached>>),
    /// A request holds the lease and will clean up when it releases it.
    Busy,
}

/// Cancel the session.
#[derive(Message)]
#[rtype(result = "Result<Closed, UploadError>")]
pub struct Cancel {
    pub repo: RepoName,
}

impl Handler<Cancel> for UploadSession {
    type Result = Result<Closed, UploadError>;
    fn handle(&mut self, msg: Cancel, ctx: &mut Self::Context) -> Self::Result {
        self.check_repo(&msg.repo)?;
        if self.leased {
            self.cancelled = true;
            Ok(Closed::Busy)
        } else {
            ctx.stop();
            Ok(Closed::Idle(self.cached.take().map(Box::new)))
        }
    }
}

/// End the session after its lease holder received every byte (a completion). Refused if the
/// session was cancelled meanwhile.
#[derive(Message)]
#[rtype(result = "Result<(), UploadError>")]
pub struct Finish;

impl Handler<Finish> for UploadSession {
    type Result = Result<(), UploadError>;
    fn handle(&mut self, _: Finish, ctx: &mut Self::Context) -> Self::Result {
        ctx.stop();
        if self.cancelled {
            Err(UploadError::Unknown(self.id.clone()))
        } else {
            Ok(())
        }
    }
}
