//! Streaming one request body into storage, hashing behind it: batches sized to how many bodies
//! stream at once, small pieces coalesced, the verifier kept at most a few batches behind.

use std::collections::VecDeque;
use std::sync::atomic::Ordering;
use std::time::Duration;

use actix::prelude::*;
use bytes::{Bytes, BytesMut};
use futures_util::{Stream, StreamExt};

use super::verifier::{DigestVerifier, Progress, Update};
use super::{Result, UploadError};
use crate::storage::BlobWriter;

/// Body bytes are gathered into batches of about this size before a write and a hash...
pub(super) const BATCH_SIZE: usize = 1024 * 1024;
/// ...unless many bodies stream at once: then the batches of all of them together stay near
/// this much (a request holds its batch being gathered and a few being hashed).
pub(super) const BATCH_BUDGET: usize = 16 * 1024 * 1024;
/// The smallest batch, however many bodies stream.
pub(super) const MIN_BATCH_SIZE: usize = 128 * 1024;

/// The batch size when `streaming` request bodies are being ingested at once.
pub(super) fn batch_size(streaming: usize) -> usize {
    (BATCH_BUDGET / streaming.max(1)).clamp(MIN_BATCH_SIZE, BATCH_SIZE)
}
/// Batches handed to the verifier and not yet hashed, per request (bounded memory).
pub(super) const MAX_HASH_IN_FLIGHT: usize = 4;

/// A request body that sends nothing for this long is treated as broken, so a stalled client
/// cannot hold an upload's lease for ever.
pub(super) const BODY_IDLE_TIMEOUT: Duration = Duration::from_secs(60);
/// Body pieces smaller than this are copied together, so a client sending tiny chunks costs
/// neither a write nor a buffer handle per chunk.
pub(super) const SMALL_PIECE: usize = 64 * 1024;

/// Streams `body` into `writer`, hashing behind it. `length`, when the request gave one, is how
/// many bytes the body must have. On a body error, what was written before it stays written
/// (and hashed), and the error is returned.
pub(super) async fn ingest<S, E>(
    writer: &mut BlobWriter,
    verifier: &Addr<DigestVerifier>,
    streaming: &std::sync::atomic::AtomicUsize,
    mut stop: tokio::sync::watch::Receiver<bool>,
    mut body: S,
    length: Option<u64>,
) -> Result<()>
where
    S: Stream<Item = Result<Bytes, E>> + Unpin,
    E: std::fmt::Display,
{
    /// Counts this body among those streaming until it is done, however it ends.
    struct Streaming<'a>(&'a std::sync::atomic::AtomicUsize);
    impl Drop for Streaming<'_> {
        fn drop(&mut self) {
            self.0.fetch_sub(1, Ordering::Relaxed);
        }
    }
    streaming.fetch_add(1, Ordering::Relaxed);
    let _streaming = Streaming(streaming);
    let mut batch: Vec<Bytes> = Vec::new();
    let mut small = BytesMut::new();
    let mut batch_len = 0usize;
    let mut received = 0u64;
    // One `Progress` query per batch sent: awaiting the oldest is waiting until the hasher is at
    // most MAX_HASH_IN_FLIGHT batches behind.
    let mut hashing: VecDeque<actix::dev::Request<DigestVerifier, Progress>> = VecDeque::new();
    let mut outcome = Ok(());
    let stopping = stop.wait_for(|stopping| *stopping);
    tokio::pin!(stopping);
    loop {
        let next: Option<Result<Bytes, String>> = tokio::select! {
            // Checked first, so a body that is always ready cannot keep it from being seen.
            biased;
            Ok(_) = &mut stopping => Some(Err("the registry is shutting down".into())),
            next = tokio::time::timeout(BODY_IDLE_TIMEOUT, body.next()) => match next {
                Ok(next) => next.map(|r| r.map_err(|e| e.to_string())),
                Err(_) => Some(Err(format!(
                    "no data for {} seconds",
                    BODY_IDLE_TIMEOUT.as_secs()
                ))),
            },
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
        if batch_len >= batch_size(streaming.load(Ordering::Relaxed)) || (done && batch_len > 0) {
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
