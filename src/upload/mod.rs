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
use std::time::Duration;

use actix::prelude::*;
use bytes::{Bytes, BytesMut};
use futures_util::{Stream, StreamExt};
use thiserror::Error;

use crate::oci::{Algorithm, Digest, RepoName};
use crate::storage::{BlobWriter, Storage, StorageError};
pub use session::UploadSession;
use session::{Acquire, Cancel, Closed, Expiry, Finish, GetStatus, Lease, Release};
use verifier::{Current, Progress, Update};
pub use verifier::{DigestVerifier, HashingPool};

/// Body bytes are gathered into batches of about this size before a write and a hash.
const BATCH_SIZE: usize = 1024 * 1024;
/// Batches handed to the verifier and not yet hashed, per request (bounded memory).
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
    #[error("the body has {received} bytes or more where {expected} were announced")]
    BodyLength { received: u64, expected: u64 },
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

/// The live sessions by id.
pub type Sessions = Arc<Mutex<HashMap<String, Addr<UploadSession>>>>;

/// An upload idle this long (no request for it) is abandoned and removed.
pub const DEFAULT_IDLE_TTL: Duration = Duration::from_secs(24 * 60 * 60);
/// A request body that sends nothing for this long is treated as broken, so a stalled client
/// cannot hold an upload's lease for ever.
const BODY_IDLE_TIMEOUT: Duration = Duration::from_secs(60);
/// Body pieces smaller than this are copied together, so a client sending tiny chunks costs
/// neither a write nor a buffer handle per chunk.
const SMALL_PIECE: usize = 64 * 1024;

/// All upload sessions of this process.
#[derive(Clone)]
pub struct UploadManager {
    storage: Storage,
    hashing: HashingPool,
    sessions: Sessions,
    idle_ttl: Duration,
}

impl UploadManager {
    pub fn new(storage: Storage, hashing: HashingPool) -> Self {
        UploadManager {
            storage,
            hashing,
            sessions: Default::default(),
            idle_ttl: DEFAULT_IDLE_TTL,
        }
    }

    /// Opens a session in `repo`, hashing with `algorithm` as the bytes arrive.
    pub async fn start(&self, repo: RepoName, algorithm: Algorithm) -> Result<String> {
        let id = uuid::Uuid::new_v4().to_string();
        let writer = self.storage.new_upload_writer(&id).await?;
        let verifier = self.hashing.spawn(algorithm);
        let expiry = Expiry {
            id: id.clone(),
            storage: self.storage.clone(),
            sessions: self.sessions.clone(),
            idle_ttl: self.idle_ttl,
        };
        let session = UploadSession::new(repo, algorithm, writer, verifier, expiry).start();
        self.sessions.lock().unwrap().insert(id.clone(), session);
        Ok(id)
    }

    /// Sets how long an untouched session lives.
    pub fn with_idle_ttl(mut self, ttl: Duration) -> Self {
        self.idle_ttl = ttl;
        self
    }

    /// How many sessions are open.
    pub fn open_sessions(&self) -> usize {
        self.sessions.lock().unwrap().len()
    }

    /// The session's actor; whether it belongs to the request's repository is checked by the
    /// message the caller sends it.
    fn session(&self, id: &str) -> Result<Addr<UploadSession>> {
        self.sessions
            .lock()
            .unwrap()
            .get(id)
            .cloned()
            .ok_or_else(|| UploadError::Unknown(id.to_string()))
    }

    /// Bytes stored so far.
    pub async fn status(&self, repo: &RepoName, id: &str) -> Result<u64> {
        self.session(id)?
            .send(GetStatus { repo: repo.clone() })
            .await
            .map_err(|_| UploadError::Unknown(id.to_string()))?
    }

    /// Appends a request body (a PATCH) of `length` bytes if the request said so. Answers the
    /// new offset. Bytes received before a broken connection are kept, so the client can resume
    /// from the offset a status request reports.
    pub async fn append<S, E>(
        &self,
        repo: &RepoName,
        id: &str,
        expected_offset: Option<u64>,
        length: Option<u64>,
        body: S,
    ) -> Result<u64>
    where
        S: Stream<Item = Result<Bytes, E>> + Unpin + 'static,
        E: std::fmt::Display + 'static,
    {
        let addr = self.session(id)?;
        let storage = self.storage.clone();
        let repo = repo.clone();
        let id = id.to_string();
        // The lease is taken and the body read in a task of its own: even if this request's
        // future is dropped (the client went away), the task finishes what it wrote and gives
        // the lease back.
        let task = actix_rt::spawn(async move {
            let Lease {
                mut writer,
                verifier,
                ..
            } = acquire(&addr, &id, repo, expected_offset).await?;
            let outcome = ingest(&mut writer, &verifier, body, length).await;
            let offset = give_back(&addr, &storage, &id, writer).await;
            outcome.and(offset)
        });
        task.await
            .map_err(|e| UploadError::BodyInterrupted(e.to_string()))?
    }

    /// Appends an optional last body, checks the digest and commits the blob (a PUT, or a
    /// single-request POST). On a digest mismatch the upload is discarded; if the body breaks
    /// off, the session stays, holding what arrived.
    pub async fn complete<S, E>(
        &self,
        repo: &RepoName,
        id: &str,
        expected_offset: Option<u64>,
        length: Option<u64>,
        body: S,
        digest: &Digest,
    ) -> Result<Committed>
    where
        S: Stream<Item = Result<Bytes, E>> + Unpin + 'static,
        E: std::fmt::Display + 'static,
    {
        let addr = self.session(id)?;
        let storage = self.storage.clone();
        let repo = repo.clone();
        let sessions = self.sessions.clone();
        let digest = digest.clone();
        let id = id.to_string();
        let task = actix_rt::spawn(async move {
            let Lease {
                mut writer,
                verifier,
                algorithm,
            } = acquire(&addr, &id, repo, expected_offset).await?;
            if let Err(e) = ingest(&mut writer, &verifier, body, length).await {
                let _ = give_back(&addr, &storage, &id, writer).await;
                return Err(e);
            }
            let finished = addr.send(Finish).await;
            sessions.lock().unwrap().remove(&id);
            if !matches!(finished, Ok(Ok(()))) {
                discard(&storage, &id, writer).await;
                return Err(UploadError::Unknown(id));
            }
            finish(&storage, &id, writer, &verifier, algorithm, &digest).await
        });
        task.await
            .map_err(|e| UploadError::BodyInterrupted(e.to_string()))?
    }

    /// Cancels a session and removes its bytes (at once, or when a request writing it is done).
    pub async fn cancel(&self, repo: &RepoName, id: &str) -> Result<()> {
        let addr = self.session(id)?;
        let closed = addr
            .send(Cancel { repo: repo.clone() })
            .await
            .map_err(|_| UploadError::Unknown(id.to_string()))??;
        self.sessions.lock().unwrap().remove(id);
        if let Closed::Idle(writer) = closed {
            writer.abort().await?;
            self.storage.discard_upload(id).await?;
        }
        Ok(())
    }
}

/// Takes a session's lease.
async fn acquire(
    addr: &Addr<UploadSession>,
    id: &str,
    repo: RepoName,
    expected_offset: Option<u64>,
) -> Result<Lease> {
    addr.send(Acquire {
        repo,
        expected_offset,
    })
    .await
    .map_err(|_| UploadError::Unknown(id.to_string()))?
}

/// Gives the writer back to its session and answers the new offset; if the session was
/// cancelled meanwhile, removes its bytes instead.
async fn give_back(
    addr: &Addr<UploadSession>,
    storage: &Storage,
    id: &str,
    writer: BlobWriter,
) -> Result<u64> {
    match addr.send(Release(writer)).await {
        Ok(Ok(offset)) => Ok(offset),
        Ok(Err(cancelled)) => {
            discard(storage, id, cancelled).await;
            Err(UploadError::Unknown(id.to_string()))
        }
        Err(_) => Err(UploadError::Unknown(id.to_string())),
    }
}

/// Removes an upload that no session owns any more.
async fn discard(storage: &Storage, id: &str, writer: BlobWriter) {
    let _ = writer.abort().await;
    let _ = storage.discard_upload(id).await;
}

/// Streams `body` into `writer`, hashing behind it. `length`, when the request gave one, is how
/// many bytes the body must have. On a body error, what was written before it stays written
/// (and hashed), and the error is returned.
async fn ingest<S, E>(
    writer: &mut BlobWriter,
    verifier: &Addr<DigestVerifier>,
    mut body: S,
    length: Option<u64>,
) -> Result<()>
where
    S: Stream<Item = Result<Bytes, E>> + Unpin,
    E: std::fmt::Display,
{
    let mut batch: Vec<Bytes> = Vec::new();
    let mut small = BytesMut::new();
    let mut batch_len = 0usize;
    let mut received = 0u64;
    // One `Progress` query per batch sent: awaiting the oldest is waiting until the hasher is at
    // most MAX_HASH_IN_FLIGHT batches behind.
    let mut hashing: VecDeque<actix::dev::Request<DigestVerifier, Progress>> = VecDeque::new();
    let mut outcome = Ok(());
    loop {
        let next: Option<Result<Bytes, String>> =
            match tokio::time::timeout(BODY_IDLE_TIMEOUT, body.next()).await {
                Ok(next) => next.map(|r| r.map_err(|e| e.to_string())),
                Err(_) => Some(Err(format!(
                    "no data for {} seconds",
                    BODY_IDLE_TIMEOUT.as_secs()
                ))),
            };
        let done = match next {
            Some(Ok(bytes)) => {
                received += bytes.len() as u64;
                if length.is_some_and(|l| received > l) {
                    outcome = Err(UploadError::BodyLength {
                        received,
                        expected: length.unwrap_or_default(),
                    });
                    true
                } else {
                    batch_len += bytes.len();
                    if bytes.len() < SMALL_PIECE {
                        small.extend_from_slice(&bytes);
                        if small.len() >= SMALL_PIECE {
                            batch.push(small.split().freeze());
                        }
                    } else {
                        if !small.is_empty() {
                            batch.push(small.split().freeze());
                        }
                        batch.push(bytes);
                    }
                    false
                }
            }
            Some(Err(e)) => {
                outcome = Err(UploadError::BodyInterrupted(e));
                true
            }
            None => {
                if let Some(expected) = length.filter(|&l| l != received) {
                    outcome = Err(UploadError::BodyLength { received, expected });
                }
                true
            }
        };
        if batch_len >= BATCH_SIZE || (done && batch_len > 0) {
            if !small.is_empty() {
                batch.push(small.split().freeze());
            }
            let full = std::mem::take(&mut batch);
            batch_len = 0;
            if let Err(e) = writer.write(full.clone()).await {
                outcome = Err(e.into());
                break;
            }
            verifier.do_send(Update(full));
            hashing.push_back(verifier.send(Progress));
            if hashing.len() > MAX_HASH_IN_FLIGHT {
                let _ = hashing.pop_front().expect("non-empty").await;
            }
        }
        if done {
            break;
        }
    }
    // The last batches are not waited for: the request can be answered while they are hashed.
    // The verifier handles messages in order, so the digest asked for at completion covers
    // them, and a later request's first batches queue behind them, which bounds the backlog.
    // (Dropping an unanswered `Progress` only cancels that query; `Update`s have no answer to
    // cancel and are always handled.)
    drop(hashing);
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

#[cfg(test)]
mod tests {
    use super::*;

    fn body(parts: &[&'static [u8]]) -> impl Stream<Item = Result<Bytes, std::io::Error>> + Unpin {
        futures_util::stream::iter(
            parts
                .iter()
                .map(|p| Ok(Bytes::from_static(p)))
                .collect::<Vec<_>>(),
        )
    }

    fn manager(storage: &Storage) -> UploadManager {
        UploadManager::new(storage.clone(), HashingPool::start(1))
    }

    #[actix_rt::test]
    async fn abandoned_sessions_expire_with_their_bytes() {
        let dir = tempfile::tempdir().unwrap();
        let storage = Storage::filesystem(dir.path(), false).unwrap();
        let uploads = manager(&storage).with_idle_ttl(Duration::from_millis(200));
        let repo: RepoName = "a".parse().unwrap();
        let id = uploads
            .start(repo.clone(), Algorithm::Sha256)
            .await
            .unwrap();
        uploads
            .append(&repo, &id, None, None, body(&[b"abc"]))
            .await
            .unwrap();
        let data = dir
            .path()
            .join("docker/registry/v2/_berth/uploads")
            .join(&id);
        assert!(data.exists());
        tokio::time::sleep(Duration::from_millis(700)).await;
        assert!(matches!(
            uploads.status(&repo, &id).await,
            Err(UploadError::Unknown(_))
        ));
        assert_eq!(uploads.open_sessions(), 0);
        assert!(!data.exists(), "the abandoned upload's bytes are removed");
    }

    #[actix_rt::test]
    async fn tiny_pieces_are_coalesced_and_lengths_enforced() {
        let storage = Storage::in_memory();
        let uploads = manager(&storage);
        let repo: RepoName = "a".parse().unwrap();
        let id = uploads
            .start(repo.clone(), Algorithm::Sha256)
            .await
            .unwrap();
        let pieces: Vec<&'static [u8]> = vec![b"x"; 5000];
        let offset = uploads
            .append(&repo, &id, None, Some(5000), body(&pieces))
            .await
            .unwrap();
        assert_eq!(offset, 5000);
        // Fewer bytes than announced: refused, what arrived is kept.
        let err = uploads
            .append(&repo, &id, Some(5000), Some(10), body(&[b"abc"]))
            .await
            .unwrap_err();
        assert!(matches!(
            err,
            UploadError::BodyLength {
                received: 3,
                expected: 10
            }
        ));
        assert_eq!(uploads.status(&repo, &id).await.unwrap(), 5003);
        // More bytes than announced: refused before the excess is written.
        let err = uploads
            .append(&repo, &id, Some(5003), Some(2), body(&[b"ab", b"cd"]))
            .await
            .unwrap_err();
        assert!(matches!(err, UploadError::BodyLength { .. }));
        assert_eq!(uploads.status(&repo, &id).await.unwrap(), 5005);
        let expected = Digest::sha256(&[vec![b'x'; 5000], b"abcab".to_vec()].concat());
        let committed = uploads
            .complete(&repo, &id, None, None, body(&[]), &expected)
            .await
            .unwrap();
        assert_eq!(committed.size, 5005);
    }
}
