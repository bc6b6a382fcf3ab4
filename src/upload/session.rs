//! The upload-session actor: the single owner of one upload's state.
//!
//! A request that writes to the session first takes a [`Lease`] (the writer), so two requests can
//! never write one session at once; the loser gets [`UploadError::Busy`]. The lease goes back to
//! the actor when the request is done ([`Release`]), with the new offset. A session cancelled
//! while leased hands the writer back to the releasing request for clean-up; a session idle for
//! longer than its time-to-live removes itself and its bytes.

use std::time::{Duration, Instant};

use actix::prelude::*;

use super::verifier::DigestVerifier;
use super::{Sessions, UploadError};
use crate::oci::{Algorithm, RepoName};
use crate::storage::{BlobWriter, Storage};

/// How often a session checks whether it has been idle too long.
const EXPIRY_CHECK: Duration = Duration::from_secs(60);

/// What a session needs to remove itself when abandoned.
pub struct Expiry {
    pub id: String,
    pub storage: Storage,
    pub sessions: Sessions,
    pub idle_ttl: Duration,
}

pub struct UploadSession {
    repo: RepoName,
    algorithm: Algorithm,
    offset: u64,
    /// `None` while a request holds the lease.
    writer: Option<BlobWriter>,
    verifier: Addr<DigestVerifier>,
    last_active: Instant,
    /// Cancelled while a request held the lease: clean up when it comes back.
    cancelled: bool,
    expiry: Expiry,
}

impl UploadSession {
    pub fn new(
        repo: RepoName,
        algorithm: Algorithm,
        mut writer: BlobWriter,
        verifier: Addr<DigestVerifier>,
        expiry: Expiry,
    ) -> Self {
        writer.park();
        UploadSession {
            repo,
            algorithm,
            offset: writer.written(),
            writer: Some(writer),
            verifier,
            last_active: Instant::now(),
            cancelled: false,
            expiry,
        }
    }

    fn expire_if_idle(&mut self, ctx: &mut Context<Self>) {
        if self.writer.is_none() || self.last_active.elapsed() < self.expiry.idle_ttl {
            return;
        }
        log::info!(
            "upload {} in {} abandoned after {:?} idle; removing it",
            self.expiry.id,
            self.repo,
            self.expiry.idle_ttl
        );
        self.expiry.sessions.lock().unwrap().remove(&self.expiry.id);
        let writer = self.writer.take().expect("checked above");
        let storage = self.expiry.storage.clone();
        let id = self.expiry.id.clone();
        actix_rt::spawn(async move {
            let _ = writer.abort().await;
            let _ = storage.discard_upload(&id).await;
        });
        ctx.stop();
    }
}

impl Actor for UploadSession {
    type Context = Context<Self>;

    fn started(&mut self, ctx: &mut Self::Context) {
        let every = EXPIRY_CHECK.min(self.expiry.idle_ttl / 2);
        ctx.run_interval(every, Self::expire_if_idle);
    }
}

/// Exclusive right to write to the session.
pub struct Lease {
    pub writer: BlobWriter,
    pub verifier: Addr<DigestVerifier>,
    pub algorithm: Algorithm,
}

impl UploadSession {
    /// Every request names the repository in its URL; a session answers only its own, so an
    /// upload id is useless in another repository. Checked in each message, saving a round trip.
    fn check_repo(&self, repo: &RepoName) -> Result<(), UploadError> {
        if repo == &self.repo {
            Ok(())
        } else {
            Err(UploadError::Unknown(self.expiry.id.clone()))
        }
    }
}

/// The bytes stored so far.
#[derive(Message)]
#[rtype(result = "Result<u64, UploadError>")]
pub struct GetStatus {
    pub repo: RepoName,
}

impl Handler<GetStatus> for UploadSession {
    type Result = Result<u64, UploadError>;
    fn handle(&mut self, msg: GetStatus, _: &mut Self::Context) -> Self::Result {
        self.check_repo(&msg.repo)?;
        Ok(self.offset)
    }
}

/// Take the lease. `expected_offset` is where the request's bytes start (from `Content-Range`);
/// a mismatch is refused with the session's real offset.
#[derive(Message)]
#[rtype(result = "Result<Lease, UploadError>")]
pub struct Acquire {
    pub repo: RepoName,
    pub expected_offset: Option<u64>,
}

impl Handler<Acquire> for UploadSession {
    type Result = Result<Lease, UploadError>;
    fn handle(&mut self, msg: Acquire, _: &mut Self::Context) -> Self::Result {
        self.check_repo(&msg.repo)?;
        if self.writer.is_none() {
            return Err(UploadError::Busy {
                offset: self.offset,
            });
        }
        if let Some(start) = msg.expected_offset {
            if start != self.offset {
                return Err(UploadError::OutOfOrder {
                    offset: self.offset,
                });
            }
        }
        self.last_active = Instant::now();
        Ok(Lease {
            writer: self.writer.take().expect("checked above"),
            verifier: self.verifier.clone(),
            algorithm: self.algorithm,
        })
    }
}

/// Give the lease back after writing. Answers the new offset, or the writer itself when the
/// session was cancelled meanwhile (the caller removes its bytes).
#[derive(Message)]
#[rtype(result = "Result<u64, BlobWriter>")]
pub struct Release(pub BlobWriter);

impl Handler<Release> for UploadSession {
    type Result = Result<u64, BlobWriter>;
    fn handle(&mut self, msg: Release, ctx: &mut Self::Context) -> Self::Result {
        let mut writer = msg.0;
        writer.park();
        if self.cancelled {
            ctx.stop();
            return Err(writer);
        }
        self.offset = writer.written();
        self.writer = Some(writer);
        self.last_active = Instant::now();
        Ok(self.offset)
    }
}

/// How a session ended.
pub enum Closed {
    /// It was idle: here is its writer, to be aborted.
    Idle(BlobWriter),
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
        match self.writer.take() {
            Some(writer) => {
                ctx.stop();
                Ok(Closed::Idle(writer))
            }
            None => {
                self.cancelled = true;
                Ok(Closed::Busy)
            }
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
            Err(UploadError::Unknown(self.expiry.id.clone()))
        } else {
            Ok(())
        }
    }
}
