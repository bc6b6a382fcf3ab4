//! Uploads in progress: session actors, digest verification, and the streaming of request bodies
//! into storage.
//!
//! Each upload is an [`UploadSession`] actor (this process's cache of the upload: its writer and
//! its [`DigestVerifier`], which keeps the running hash on a hashing thread) over a durable record
//! on storage. A request that writes takes the session's lease (one writer per process), then the
//! upload's storage lock (one writer across processes), reads the record under it and rebuilds the
//! cache if another process wrote since; then its body streams through [`ingest`]: each batch is
//! written to storage first and then handed to the verifier, so the hash never covers bytes that
//! are not stored. Before the lock is let go the record is rewritten (offset, hash state, parts),
//! so a restarted process or another instance continues exactly there. A blob becomes visible
//! under its digest only once the verifier agrees.

mod commit;
mod error;
mod ingest;
mod purge;
pub mod quota;
pub mod session;
pub mod verifier;

use std::collections::{HashMap, VecDeque};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use actix::prelude::*;
use bytes::Bytes;
use futures_util::{Stream, StreamExt};

use crate::oci::{Algorithm, Digest, Hasher, RepoName};
use crate::storage::{HashRecord, Storage, StorageError, UploadGuard, UploadRecord};
use commit::body_is_empty;
pub use error::{Result, UploadError};
use ingest::{ingest, MAX_HASH_IN_FLIGHT};
pub use session::UploadSession;
use session::{Acquire, Cached, Cancel, Check, Closed, Finish, Lease, Release};
pub use verifier::{DigestVerifier, HashingPool};
use verifier::{Progress, Update};

/// What a finished upload committed.
#[derive(Debug, Clone)]
pub struct Committed {
    pub digest: Digest,
    pub size: u64,
}

/// The sessions this process holds in memory, by id.
pub type Sessions = Arc<Mutex<HashMap<String, Addr<UploadSession>>>>;

/// A session nobody used for this long leaves memory (its upload stays on storage).
pub const DEFAULT_EVICT_AFTER: Duration = Duration::from_secs(10 * 60);
/// All upload sessions of this process.
#[derive(Clone)]
pub struct UploadManager {
    storage: Storage,
    hashing: HashingPool,
    /// Request bodies being ingested now (sets the batch size).
    streaming: Arc<std::sync::atomic::AtomicUsize>,
    sessions: Sessions,
    evict_after: Duration,
    /// Set at shutdown: bodies still streaming stop being read (see [`Self::stop_reading_bodies`]).
    stopping: Arc<tokio::sync::watch::Sender<bool>>,
}

/// A request's hold on an upload: both locks, the record read under them, the cache.
struct Writing {
    addr: Addr<UploadSession>,
    guard: UploadGuard,
    record: UploadRecord,
    cached: Cached,
    algorithm: Algorithm,
}

impl UploadManager {
    pub fn new(storage: Storage, hashing: HashingPool) -> Self {
        UploadManager {
            storage,
            hashing,
            streaming: Default::default(),
            sessions: Default::default(),
            evict_after: DEFAULT_EVICT_AFTER,
            stopping: Arc::new(tokio::sync::watch::channel(false).0),
        }
    }

    /// Ends every request body still being read, as a broken connection would: what each
    /// received is written and recorded, so the upload can be resumed. Called when the drain at
    /// shutdown is nearly over, before the HTTP workers are stopped (which would drop the
    /// reading tasks with their last bytes unrecorded).
    pub fn stop_reading_bodies(&self) {
        self.stopping.send_replace(true);
    }

    /// Sets how long an untouched session stays in memory.
    pub fn with_evict_after(mut self, after: Duration) -> Self {
        self.evict_after = after;
        self
    }

    /// How many sessions this process holds in memory.
    pub fn sessions_in_memory(&self) -> usize {
        self.sessions.lock().unwrap().len()
    }

    /// Opens a session in `repo`, hashing with `algorithm` as the bytes arrive.
    pub async fn start(&self, repo: RepoName, algorithm: Algorithm) -> Result<String> {
        let id = uuid::Uuid::new_v4().to_string();
        let record = UploadRecord {
            repo: repo.to_string(),
            algorithm: algorithm.as_str().to_string(),
            started_at: chrono::Utc::now().to_rfc3339(),
            offset: 0,
            generation: 1,
            hash: None,
            parts: None,
            completed: false,
        };
        let mut writer = self.storage.new_upload(&id, record.clone()).await?;
        // An upload nobody writes to holds no file descriptor.
        writer.park();
        let (verifier, latest) = self.hashing.spawn(algorithm);
        let cached = Cached {
            writer,
            verifier,
            latest,
            restored: 0,
        };
        let session = UploadSession::new(
            id.clone(),
            repo,
            algorithm,
            self.sessions.clone(),
            self.evict_after,
        )
        .with_cache(cached, record.generation)
        .start();
        self.sessions.lock().unwrap().insert(id.clone(), session);
        Ok(id)
    }

    /// The session's actor, brought back from storage if this process does not hold it.
    async fn session(&self, repo: &RepoName, id: &str) -> Result<Addr<UploadSession>> {
        if let Some(addr) = self.sessions.lock().unwrap().get(id) {
            return Ok(addr.clone());
        }
        let record = self.record(repo, id).await?;
        let algorithm: Algorithm = record
            .algorithm
            .parse()
            .map_err(|_| UploadError::Unknown(id.to_string()))?;
        let mut sessions = self.sessions.lock().unwrap();
        let addr = sessions.entry(id.to_string()).or_insert_with(|| {
            UploadSession::new(
                id.to_string(),
                repo.clone(),
                algorithm,
                self.sessions.clone(),
                self.evict_after,
            )
            .start()
        });
        Ok(addr.clone())
    }

    /// The upload's record, if it belongs to `repo`.
    async fn record(&self, repo: &RepoName, id: &str) -> Result<UploadRecord> {
        if uuid::Uuid::parse_str(id).is_err() {
            return Err(UploadError::Unknown(id.to_string()));
        }
        match self.storage.load_upload(id).await? {
            Some(record) if record.repo == repo.as_str() => Ok(record),
            _ => Err(UploadError::Unknown(id.to_string())),
        }
    }

    /// Bytes stored so far, as recorded on storage (whichever process wrote them).
    pub async fn status(&self, repo: &RepoName, id: &str) -> Result<u64> {
        let in_memory = self.sessions.lock().unwrap().get(id).cloned();
        if let Some(addr) = in_memory {
            // Cancelled while a request writes it: gone, though its bytes are not removed yet.
            if let Ok(Err(e)) = addr.send(Check { repo: repo.clone() }).await {
                return Err(e);
            }
        }
        Ok(self.record(repo, id).await?.offset)
    }

    /// Takes the session's lease and the upload's storage lock, and makes the cache match the
    /// record. `expected_offset` is where the request's bytes start (from `Content-Range`).
    async fn begin(
        &self,
        repo: &RepoName,
        id: &str,
        expected_offset: Option<u64>,
    ) -> Result<Writing> {
        let mut addr = self.session(repo, id).await?;
        // A request of this process still holding the lease is finishing (a client that lost
        // its connection reads the status and resumes at once, while the body task of the
        // broken request still releases): wait for it as for another instance's lock.
        let deadline = tokio::time::Instant::now() + crate::storage::LOCK_WAIT;
        let lease = loop {
            let lease = match addr.send(Acquire { repo: repo.clone() }).await {
                Ok(lease) => lease,
                Err(_) => {
                    // The actor left memory between lookup and message: rebuild it once.
                    self.forget(id, &addr);
                    addr = self.session(repo, id).await?;
                    addr.send(Acquire { repo: repo.clone() })
                        .await
                        .map_err(|_| UploadError::Unknown(id.to_string()))?
                }
            };
            match lease {
                Err(UploadError::Busy { .. }) if tokio::time::Instant::now() < deadline => {
                    tokio::time::sleep(std::time::Duration::from_millis(10)).await;
                }
                lease => break lease,
            }
        };
        let Lease {
            cached,
            generation,
            algorithm,
        } = lease?;
        let locked = self.storage.lock_upload(id).await;
        let (guard, record) = match locked {
            Ok(Some(held)) => held,
            Ok(None) => {
                self.hand_back(id, &addr, cached, None).await;
                self.forget(id, &addr);
                return Err(UploadError::Unknown(id.to_string()));
            }
            Err(e) => {
                self.hand_back(id, &addr, cached, Some(generation)).await;
                return Err(match e {
                    StorageError::Locked(_) => UploadError::Busy {
                        offset: self.status(repo, id).await.unwrap_or(0),
                    },
                    e => e.into(),
                });
            }
        };
        let mut cached = match cached {
            Some(c) if generation == record.generation => c,
            _ => match self.rebuild(id, algorithm, &record).await {
                Ok(c) => c,
                Err(e) => {
                    guard.release().await;
                    self.hand_back(id, &addr, None, None).await;
                    return Err(e);
                }
            },
        };
        cached.writer.adopt_file(guard.file());
        cached.writer.adopt_fence(guard.fence());
        if let Some(start) = expected_offset.filter(|&s| s != record.offset) {
            log::debug!("upload {id}: chunk at {start}, offset is {}", record.offset);
            guard.release().await;
            self.hand_back(id, &addr, Some(cached), Some(record.generation))
                .await;
            return Err(UploadError::OutOfOrder {
                offset: record.offset,
            });
        }
        Ok(Writing {
            addr,
            guard,
            record,
            cached,
            algorithm,
        })
    }

    /// Rebuilds the cache from the record: the writer at the recorded offset, the verifier from
    /// the recorded hash state (on local disk, bytes it had not reached are re-read).
    async fn rebuild(
        &self,
        id: &str,
        algorithm: Algorithm,
        record: &UploadRecord,
    ) -> Result<Cached> {
        let writer = self.storage.resume_upload_writer(id, record)?;
        let corrupt = |reason: String| {
            UploadError::Storage(StorageError::Corrupt {
                path: format!("upload {id}"),
                reason,
            })
        };
        let (hasher, hashed) = match &record.hash {
            Some(HashRecord { offset, state }) if *offset <= record.offset => {
                let bytes = hex::decode(state).map_err(|e| corrupt(e.to_string()))?;
                let hasher = Hasher::restore(algorithm, &bytes)
                    .ok_or_else(|| corrupt("unreadable hash state".into()))?;
                (hasher, *offset)
            }
            _ => (algorithm.hasher(), 0),
        };
        if hashed < record.offset && self.storage.upload_hash_must_be_exact() {
            return Err(corrupt(format!(
                "hash state covers {hashed} of {} bytes",
                record.offset
            )));
        }
        let (verifier, latest) = self.hashing.spawn_resumed(hasher, hashed);
        if hashed < record.offset {
            log::debug!("upload {id}: re-hashing bytes {hashed}..{}", record.offset);
            let mut data = self
                .storage
                .stream_upload_range(id, hashed..record.offset)
                .await?
                .stream;
            let mut in_flight = VecDeque::new();
            let mut reread = 0u64;
            while let Some(chunk) = data.next().await {
                let chunk = chunk?;
                reread += chunk.len() as u64;
                verifier.do_send(Update(vec![chunk]));
                in_flight.push_back(verifier.send(Progress));
                if in_flight.len() > MAX_HASH_IN_FLIGHT {
                    let _ = in_flight.pop_front().expect("non-empty").await;
                }
            }
            // A data file shorter than its record (the record survived a power loss that the
            // data did not) cannot be continued: refuse rather than hash a hole.
            if reread != record.offset - hashed {
                return Err(corrupt(format!(
                    "data holds {} of the {} recorded bytes",
                    hashed + reread,
                    record.offset
                )));
            }
        }
        Ok(Cached {
            writer,
            verifier,
            latest,
            restored: hashed,
        })
    }

    /// Saves what the request wrote (the record, under the lock), lets go of the locks and
    /// answers the new offset. Called after every write, successful or not: bytes that arrived
    /// before a broken connection are kept.
    async fn end(&self, id: &str, writing: Writing) -> Result<u64> {
        let Writing {
            addr,
            guard,
            record,
            mut cached,
            ..
        } = writing;
        let saved = self.save(id, &record, &mut cached, &guard).await;
        if matches!(&saved, Err(e) if e.ends_upload()) {
            // A failed sync: the old record may count bytes that never reached the disk. The
            // upload is removed under the lock, before anyone can resume it from that record;
            // the client sees this request fail and the upload unknown from now on.
            log::warn!("upload {id} is removed after a failed sync");
            let _ = addr.send(Finish).await;
            self.forget(id, &addr);
            self.discard(id, Some(cached)).await;
            guard.release().await;
            return saved.map(|r| r.offset);
        }
        guard.release().await;
        match saved {
            Ok(record) => match give_back(&addr, Some(cached), Some(record.generation)).await {
                Ok(()) => Ok(record.offset),
                Err(cancelled) => {
                    self.discard(id, cancelled).await;
                    self.forget(id, &addr);
                    Err(UploadError::Unknown(id.to_string()))
                }
            },
            Err(e) => {
                // The cache may be ahead of the record: drop it, the next request rebuilds.
                self.hand_back(id, &addr, None, None).await;
                Err(e)
            }
        }
    }

    /// Writes the record for the cache's current state.
    async fn save(
        &self,
        id: &str,
        record: &UploadRecord,
        cached: &mut Cached,
        guard: &UploadGuard,
    ) -> Result<UploadRecord> {
        cached.writer.checkpoint().await?;
        if self.storage.upload_hash_must_be_exact() {
            let _ = cached.verifier.send(Progress).await;
        }
        let hash = cached.latest.get().map(|(offset, state)| HashRecord {
            offset,
            state: hex::encode(state),
        });
        let next = UploadRecord {
            offset: cached.writer.written(),
            generation: record.generation + 1,
            hash: hash.or_else(|| record.hash.clone()),
            parts: cached.writer.parts_state(),
            ..record.clone()
        };
        self.storage.save_upload_held(guard, id, &next).await?;
        cached.writer.collect_garbage().await;
        Ok(next)
    }

    /// Gives the cache back after a request that wrote nothing (or failed); if the session was
    /// cancelled meanwhile, removes the upload, as the cancelling request was promised.
    async fn hand_back(
        &self,
        id: &str,
        addr: &Addr<UploadSession>,
        cached: Option<Cached>,
        generation: Option<u64>,
    ) {
        if let Err(cancelled) = give_back(addr, cached, generation).await {
            self.discard(id, cancelled).await;
            self.forget(id, addr);
        }
    }

    /// Lets go of an upload whose bytes are final (see [`UploadRecord::completed`]) and answers
    /// the error for a request that wanted to add to them.
    async fn refuse_completed(&self, id: &str, writing: Writing) -> UploadError {
        let Writing {
            addr,
            guard,
            record,
            cached,
            ..
        } = writing;
        guard.release().await;
        self.hand_back(id, &addr, Some(cached), Some(record.generation))
            .await;
        UploadError::Completed {
            offset: record.offset,
        }
    }

    /// Forgets the in-memory session `addr` if it is still the one registered for `id`.
    fn forget(&self, id: &str, addr: &Addr<UploadSession>) {
        let mut sessions = self.sessions.lock().unwrap();
        if sessions.get(id).is_some_and(|a| a == addr) {
            sessions.remove(id);
        }
    }

    /// Removes an upload's bytes and record.
    async fn discard(&self, id: &str, cached: Option<Cached>) {
        // Closes the writer's file; aborting a multipart upload is part of `discard_upload`.
        drop(cached);
        if let Err(e) = self.storage.discard_upload(id).await {
            log::warn!("cannot remove upload {id}: {e}");
        }
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
        let this = self.clone();
        let repo = repo.clone();
        let id = id.to_string();
        // The body is read in a task of its own: even if this request's future is dropped (the
        // client went away), the task finishes what it wrote, records it and lets go.
        let task = actix_rt::spawn(async move {
            let mut writing = this.begin(&repo, &id, expected_offset).await?;
            if writing.record.completed {
                return Err(this.refuse_completed(&id, writing).await);
            }
            let Cached {
                writer, verifier, ..
            } = &mut writing.cached;
            let outcome = ingest(
                writer,
                verifier,
                &this.streaming,
                this.stopping.subscribe(),
                body,
                length,
            )
            .await;
            let offset = this.end(&id, writing).await;
            match outcome.and(offset) {
                Err(e) => Err(this.taken_over(&repo, &id, e).await),
                ok => ok,
            }
        });
        task.await
            .map_err(|e| UploadError::BodyInterrupted(e.to_string()))?
    }

    /// A request whose hold on the upload was lost (another instance took it over after this
    /// one stalled) is answered as one that found it busy: with the offset now recorded, from
    /// which the client resumes.
    async fn taken_over(&self, repo: &RepoName, id: &str, e: UploadError) -> UploadError {
        match e {
            UploadError::Storage(StorageError::Fenced(why)) => {
                log::warn!("upload {id}: {why}; this request's bytes are not recorded");
                UploadError::Busy {
                    offset: self.status(repo, id).await.unwrap_or(0),
                }
            }
            e => e,
        }
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
        let this = self.clone();
        let repo = repo.clone();
        let digest = digest.clone();
        let id = id.to_string();
        let task = actix_rt::spawn(async move {
            let mut writing = this.begin(&repo, &id, expected_offset).await?;
            if writing.record.completed {
                // A retry after a failed commit: the bytes are final, a body may only be empty.
                let mut body = body;
                if length.is_some_and(|l| l > 0) || !body_is_empty(&mut body).await {
                    return Err(this.refuse_completed(&id, writing).await);
                }
            } else {
                let Cached {
                    writer, verifier, ..
                } = &mut writing.cached;
                if let Err(e) = ingest(
                    writer,
                    verifier,
                    &this.streaming,
                    this.stopping.subscribe(),
                    body,
                    length,
                )
                .await
                {
                    let _ = this.end(&id, writing).await;
                    return Err(e);
                }
            }
            let Writing {
                addr,
                guard,
                cached,
                algorithm,
                record,
            } = writing;
            let finished = addr.send(Finish).await;
            this.forget(&id, &addr);
            let outcome = if matches!(finished, Ok(Ok(()))) {
                this.finish(&id, &record, cached, algorithm, &digest, &guard)
                    .await
            } else {
                this.discard(&id, Some(cached)).await;
                Err(UploadError::Unknown(id.clone()))
            };
            guard.release().await;
            match outcome {
                Err(e) => Err(this.taken_over(&repo, &id, e).await),
                ok => ok,
            }
        });
        task.await
            .map_err(|e| UploadError::BodyInterrupted(e.to_string()))?
    }

    /// Cancels a session and removes its bytes (at once, or when a request writing it in this
    /// process is done).
    pub async fn cancel(&self, repo: &RepoName, id: &str) -> Result<()> {
        let addr = self.session(repo, id).await?;
        let closed = addr
            .send(Cancel { repo: repo.clone() })
            .await
            .map_err(|_| UploadError::Unknown(id.to_string()))??;
        if let Closed::Idle(cached) = closed {
            self.forget(id, &addr);
            // Wait for a writer in another process; if it does not let go, remove anyway.
            let held = match self.storage.lock_upload(id).await {
                Ok(Some((guard, _))) => Some(guard),
                Ok(None) => return Err(UploadError::Unknown(id.to_string())),
                Err(_) => None,
            };
            self.discard(id, cached.map(|c| *c)).await;
            if let Some(guard) = held {
                guard.release().await;
            }
        }
        Ok(())
    }
}

/// Gives the cache back to its session; `Err` carries it back when the session was cancelled
/// meanwhile (the caller removes the upload).
async fn give_back(
    addr: &Addr<UploadSession>,
    cached: Option<Cached>,
    generation: Option<u64>,
) -> Result<(), Option<Cached>> {
    match addr.send(Release { cached, generation }).await {
        Ok(outcome) => outcome,
        Err(_) => Ok(()),
    }
}

#[cfg(test)]
mod writeback_tests;

#[cfg(test)]
mod tests;
