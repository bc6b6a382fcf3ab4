//! Uploads in progress: session actors, digest verification, and the streaming of request bodies
//! into storage.
//!
//! Each upload is an [`UploadSession`] actor (its offset and writer) paired with a
//! [`DigestVerifier`] actor (its running hash, on a hashing thread). A request body streams
//! through [`ingest`]: each batch is written to storage first and then handed to the verifier,
//! so the hash never covers bytes that are not stored, and writing the next batch overlaps with
//! hashing the last one. A blob becomes visible under its digest only once the verifier agrees.

pub mod session;
pub mod verifier;

use std::collections::{HashMap, VecDeque};
use std::sync::{Arc, Mutex};

use actix::prelude::*;
use bytes::Bytes;
use futures_util::{Stream, StreamExt};
use thiserror::Error;

use crate::oci::{Algorithm, Digest, RepoName};
use crate::storage::{BlobWriter, Storage, StorageError};
pub use session::UploadSession;
use session::{Acquire, Close, GetStatus, Lease, Release};
use verifier::{Current, Update};
pub use verifier::{DigestVerifier, HashingPool};

/// Body bytes are gathered into batches of about this size before a write and a hash.
const BATCH_SIZE: usize = 1024 * 1024;
/// Batches handed to the verifier and not yet hashed (bounded memory; below the mailbox size so
/// the messages are queued in order without waiting).
const MAX_HASH_IN_FLIGHT: usize = 4;

#[derive(Debug, Error)]
pub enum UploadError {
    #[error("upload {0} is unknown")]
    Unknown(String),
    #[error("another request is writing this upload; {offset} bytes are stored")]
    Busy { offset: u64 },
    #[error("chunk does not start at the upload's offset {offset}")]
    OutOfOrder { offset: u64 },
    #[error("Content-Length {content_length} does not match Content-Range length {range_length}")]
    LengthMismatch {
        content_length: u64,
        range_length: u64,
    },
    #[error("digest {expected} does not match the uploaded content ({actual})")]
    DigestMismatch { expected: Digest, actual: Digest },
    #[error("request body ended early: {0}")]
    BodyInterrupted(String),
    #[error(transparent)]
    Storage(#[from] StorageError),
}

pub type Result<T, E = UploadError> = std::result::Result<T, E>;

/// What a finished upload committed.
#[derive(Debug, Clone)]
pub struct Committed {
    pub digest: Digest,
    pub size: u64,
}

/// All upload sessions of this process.
#[derive(Clone)]
pub struct UploadManager {
    storage: Storage,
    hashing: HashingPool,
    sessions: Arc<Mutex<HashMap<String, Addr<UploadSession>>>>,
}

impl UploadManager {
    pub fn new(storage: Storage, hashing: HashingPool) -> Self {
        UploadManager {
            storage,
            hashing,
            sessions: Default::default(),
        }
    }

    /// Opens a session in `repo`, hashing with `algorithm` as the bytes arrive.
    pub async fn start(&self, repo: RepoName, algorithm: Algorithm) -> Result<String> {
        let id = uuid::Uuid::new_v4().to_string();
        let writer = self.storage.new_upload_writer(&id).await?;
        let verifier = self.hashing.spawn(algorithm);
        let session = UploadSession::new(repo, algorithm, writer, verifier).start();
        self.sessions.lock().unwrap().insert(id.clone(), session);
        Ok(id)
    }

    async fn session(&self, repo: &RepoName, id: &str) -> Result<Addr<UploadSession>> {
        let addr = self
            .sessions
            .lock()
            .unwrap()
            .get(id)
            .cloned()
            .ok_or_else(|| UploadError::Unknown(id.to_string()))?;
        let status = addr
            .send(GetStatus)
            .await
            .map_err(|_| UploadError::Unknown(id.to_string()))??;
        if &status.repo != repo {
            return Err(UploadError::Unknown(id.to_string()));
        }
        Ok(addr)
    }

    /// Bytes stored so far.
    pub async fn status(&self, repo: &RepoName, id: &str) -> Result<u64> {
        let addr = self.session(repo, id).await?;
        let status = addr
            .send(GetStatus)
            .await
            .map_err(|_| UploadError::Unknown(id.to_string()))??;
        Ok(status.offset)
    }

    async fn acquire(
        &self,
        repo: &RepoName,
        id: &str,
        expected_offset: Option<u64>,
    ) -> Result<(Addr<UploadSession>, Lease)> {
        let addr = self.session(repo, id).await?;
        let lease = addr
            .send(Acquire { expected_offset })
            .await
            .map_err(|_| UploadError::Unknown(id.to_string()))??;
        Ok((addr, lease))
    }

    /// Appends a request body (a PATCH). Answers the new offset. Bytes received before a broken
    /// connection are kept, so the client can resume from the offset a status request reports.
    pub async fn append<S, E>(
        &self,
        repo: &RepoName,
        id: &str,
        expected_offset: Option<u64>,
        body: S,
    ) -> Result<u64>
    where
        S: Stream<Item = Result<Bytes, E>> + Unpin + 'static,
        E: std::fmt::Display + 'static,
    {
        let (addr, lease) = self.acquire(repo, id, expected_offset).await?;
        // The body is read in a task of its own: even if this request's future is dropped (the
        // client went away), the task finishes what it wrote and returns the lease.
        let task = actix_rt::spawn(async move {
            let Lease {
                mut writer,
                verifier,
                ..
            } = lease;
            let outcome = ingest(&mut writer, &verifier, body).await;
            let offset = addr.send(Release(writer)).await.unwrap_or_default();
            outcome.map(|()| offset)
        });
        task.await
            .map_err(|e| UploadError::BodyInterrupted(e.to_string()))?
    }

    /// Appends an optional last body, checks the digest and commits the blob (a PUT, or a
    /// single-request POST). On a digest mismatch the upload is discarded.
    pub async fn complete<S, E>(
        &self,
        repo: &RepoName,
        id: &str,
        expected_offset: Option<u64>,
        body: S,
        digest: &Digest,
    ) -> Result<Committed>
    where
        S: Stream<Item = Result<Bytes, E>> + Unpin + 'static,
        E: std::fmt::Display + 'static,
    {
        let (addr, lease) = self.acquire(repo, id, expected_offset).await?;
        let storage = self.storage.clone();
        let digest = digest.clone();
        let id_owned = id.to_string();
        let task = actix_rt::spawn(async move {
            let Lease {
                mut writer,
                verifier,
                algorithm,
            } = lease;
            if let Err(e) = ingest(&mut writer, &verifier, body).await {
                addr.send(Release(writer)).await.ok();
                return Err(e);
            }
            let _ = addr
                .send(Close {
                    require_idle: false,
                })
                .await;
            finish(&storage, &id_owned, writer, &verifier, algorithm, &digest).await
        });
        let result = task
            .await
            .map_err(|e| UploadError::BodyInterrupted(e.to_string()))?;
        self.sessions.lock().unwrap().remove(id);
        result
    }

    /// Cancels a session and removes its bytes.
    pub async fn cancel(&self, repo: &RepoName, id: &str) -> Result<()> {
        let addr = self.session(repo, id).await?;
        let writer = addr
            .send(Close { require_idle: true })
            .await
            .map_err(|_| UploadError::Unknown(id.to_string()))??;
        self.sessions.lock().unwrap().remove(id);
        if let Some(w) = writer {
            w.abort().await?;
        }
        self.storage.discard_upload(id).await?;
        Ok(())
    }
}

/// Streams `body` into `writer`, hashing behind it. On a body error, what was written before
/// it stays written (and hashed), and the error is returned.
async fn ingest<S, E>(
    writer: &mut BlobWriter,
    verifier: &Addr<DigestVerifier>,
    mut body: S,
) -> Result<()>
where
    S: Stream<Item = Result<Bytes, E>> + Unpin,
    E: std::fmt::Display,
{
    let mut batch: Vec<Bytes> = Vec::new();
    let mut batch_len = 0usize;
    let mut hashing: VecDeque<actix::dev::Request<DigestVerifier, Update>> = VecDeque::new();
    let mut outcome = Ok(());
    loop {
        let next = body.next().await;
        let done = match next {
            Some(Ok(bytes)) => {
                batch_len += bytes.len();
                batch.push(bytes);
                false
            }
            Some(Err(e)) => {
                outcome = Err(UploadError::BodyInterrupted(e.to_string()));
                true
            }
            None => true,
        };
        if batch_len >= BATCH_SIZE || (done && !batch.is_empty()) {
            let full = std::mem::take(&mut batch);
            batch_len = 0;
            if let Err(e) = writer.write(full.clone()).await {
                outcome = Err(e.into());
                break;
            }
            hashing.push_back(verifier.send(Update(full)));
            if hashing.len() > MAX_HASH_IN_FLIGHT {
                let _ = hashing.pop_front().expect("non-empty").await;
            }
        }
        if done {
            break;
        }
    }
    for pending in hashing {
        let _ = pending.await;
    }
    outcome
}

/// Verifies and commits a fully received upload; on any failure its bytes are removed.
async fn finish(
    storage: &Storage,
    id: &str,
    writer: BlobWriter,
    verifier: &Addr<DigestVerifier>,
    algorithm: Algorithm,
    expected: &Digest,
) -> Result<Committed> {
    let size = writer.written();
    let outcome = async {
        let streamed = if algorithm == expected.algorithm() {
            let (digest, _) = verifier
                .send(Current)
                .await
                .map_err(|e| UploadError::BodyInterrupted(e.to_string()))?;
            if &digest != expected {
                writer.abort().await?;
                return Err(UploadError::DigestMismatch {
                    expected: expected.clone(),
                    actual: digest,
                });
            }
            Some(digest)
        } else {
            None
        };
        let location = writer.finish().await?;
        if streamed.is_none() {
            // The client named another algorithm than the one hashed while streaming: hash the
            // stored bytes once more under the one it asked for.
            let mut hasher = expected.algorithm().hasher();
            let mut data = storage.stream_upload(&location).await?.stream;
            while let Some(chunk) = data.next().await {
                hasher.update(&chunk?);
            }
            let digest = hasher.finish();
            if &digest != expected {
                return Err(UploadError::DigestMismatch {
                    expected: expected.clone(),
                    actual: digest,
                });
            }
        }
        storage.commit_upload(&location, expected).await?;
        Ok(Committed {
            digest: expected.clone(),
            size,
        })
    }
    .await;
    if outcome.is_err() {
        let _ = storage.discard_upload(id).await;
    }
    outcome
}
