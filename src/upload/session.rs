//! The upload-session actor: the single owner of one upload's state.
//!
//! A request that writes to the session first takes a [`Lease`] (the writer and the offset), so
//! two requests can never write one session at once; the loser gets [`UploadError::Busy`]. The
//! lease goes back to the actor when the request is done, with the new offset.

use std::time::Instant;

use actix::prelude::*;

use super::verifier::DigestVerifier;
use super::UploadError;
use crate::oci::{Algorithm, RepoName};
use crate::storage::BlobWriter;

pub struct UploadSession {
    repo: RepoName,
    algorithm: Algorithm,
    offset: u64,
    /// `None` while a request holds the lease.
    writer: Option<BlobWriter>,
    verifier: Addr<DigestVerifier>,
    last_active: Instant,
}

impl UploadSession {
    pub fn new(
        repo: RepoName,
        algorithm: Algorithm,
        writer: BlobWriter,
        verifier: Addr<DigestVerifier>,
    ) -> Self {
        UploadSession {
            repo,
            algorithm,
            offset: writer.written(),
            writer: Some(writer),
            verifier,
            last_active: Instant::now(),
        }
    }
}

impl Actor for UploadSession {
    type Context = Context<Self>;
}

/// Exclusive right to write to the session.
pub struct Lease {
    pub writer: BlobWriter,
    pub verifier: Addr<DigestVerifier>,
    pub algorithm: Algorithm,
}

/// What a status request learns.
#[derive(Debug, Clone)]
pub struct Status {
    pub repo: RepoName,
    pub offset: u64,
    pub idle_for: std::time::Duration,
}

#[derive(Message)]
#[rtype(result = "Result<Status, UploadError>")]
pub struct GetStatus;

impl Handler<GetStatus> for UploadSession {
    type Result = Result<Status, UploadError>;
    fn handle(&mut self, _: GetStatus, _: &mut Self::Context) -> Self::Result {
        Ok(Status {
            repo: self.repo.clone(),
            offset: self.offset,
            idle_for: self.last_active.elapsed(),
        })
    }
}

/// Take the lease. `expected_offset` is where the request's bytes start (from `Content-Range`);
/// a mismatch is refused with the session's real offset.
#[derive(Message)]
#[rtype(result = "Result<Lease, UploadError>")]
pub struct Acquire {
    pub expected_offset: Option<u64>,
}

impl Handler<Acquire> for UploadSession {
    type Result = Result<Lease, UploadError>;
    fn handle(&mut self, msg: Acquire, _: &mut Self::Context) -> Self::Result {
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

/// Give the lease back after writing.
#[derive(Message)]
#[rtype(result = "u64")]
pub struct Release(pub BlobWriter);

impl Handler<Release> for UploadSession {
    type Result = u64;
    fn handle(&mut self, msg: Release, _: &mut Self::Context) -> u64 {
        let mut writer = msg.0;
        writer.park();
        self.offset = writer.written();
        self.writer = Some(writer);
        self.last_active = Instant::now();
        self.offset
    }
}

/// End the session (completed with its lease consumed, or cancelled). Answers the writer if the
/// session still held it, so the caller can release its storage.
#[derive(Message)]
#[rtype(result = "Result<Option<BlobWriter>, UploadError>")]
pub struct Close {
    /// Refuse while a request is writing (a cancel); a completion already holds the lease.
    pub require_idle: bool,
}

impl Handler<Close> for UploadSession {
    type Result = Result<Option<BlobWriter>, UploadError>;
    fn handle(&mut self, msg: Close, ctx: &mut Self::Context) -> Self::Result {
        if msg.require_idle && self.writer.is_none() {
            return Err(UploadError::Busy {
                offset: self.offset,
            });
        }
        ctx.stop();
        Ok(self.writer.take())
    }
}
