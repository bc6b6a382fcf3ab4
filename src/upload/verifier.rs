//! The digest-verifier actor: hashes an upload's bytes as they arrive, on a hashing thread of its
//! own so that the I/O threads never spend their time in SHA-256.

use std::sync::{Arc, Mutex};

use actix::prelude::*;
use bytes::Bytes;

use crate::oci::{Algorithm, Digest, Hasher};

/// Owns the running hash of one upload.
pub struct DigestVerifier {
    hasher: Hasher,
    hashed: u64,
    latest: LatestHash,
}

/// The verifier's most recent saved state, readable without queueing behind its pending
/// batches: an upload's record is written with whatever the hash has reached, so a request need
/// not wait for its last batches to be hashed (on local disk the rest is re-read on resume).
#[derive(Clone, Default)]
pub struct LatestHash(Arc<Mutex<Option<HashState>>>);

/// `(bytes hashed, serialized hasher state)`.
pub type HashState = (u64, Vec<u8>);

impl LatestHash {
    /// The state after the last batch hashed, if any was.
    pub fn get(&self) -> Option<HashState> {
        self.0.lock().unwrap().clone()
    }
}

impl DigestVerifier {
    pub fn new(algorithm: Algorithm) -> Self {
        Self::resume(algorithm.hasher(), 0)
    }

    /// A verifier continuing `hasher`, which has hashed `hashed` bytes.
    pub fn resume(hasher: Hasher, hashed: u64) -> Self {
        DigestVerifier {
            hasher,
            hashed,
            latest: LatestHash::default(),
        }
    }

    pub fn latest(&self) -> LatestHash {
        self.latest.clone()
    }
}

impl Actor for DigestVerifier {
    type Context = Context<Self>;
}

/// Hash a batch of bytes (already written to storage). Sent with `do_send`: it has no answer,
/// so it is handled even when the request that sent it is gone.
#[derive(Message)]
#[rtype(result = "()")]
pub struct Update(pub Vec<Bytes>);

impl Handler<Update> for DigestVerifier {
    type Result = ();
    fn handle(&mut self, msg: Update, _: &mut Self::Context) {
        for b in &msg.0 {
            self.hasher.update(b);
            self.hashed += b.len() as u64;
        }
        // A few hundred bytes per batch of ~1 MiB.
        *self.latest.0.lock().unwrap() = Some((self.hashed, self.hasher.snapshot()));
    }
}

/// How many bytes are hashed so far: answered once every `Update` queued before it is done, so
/// awaiting it is how a writer waits for the hasher to catch up.
#[derive(Message)]
#[rtype(result = "u64")]
pub struct Progress;

impl Handler<Progress> for DigestVerifier {
    type Result = u64;
    fn handle(&mut self, _: Progress, _: &mut Self::Context) -> u64 {
        self.hashed
    }
}

/// The digest of everything hashed so far, and its length. The running state stays, so a
/// mismatch leaves the verifier usable.
#[derive(Message)]
#[rtype(result = "(Digest, u64)")]
pub struct Current;

impl Handler<Current> for DigestVerifier {
    type Result = MessageResult<Current>;
    fn handle(&mut self, _: Current, _: &mut Self::Context) -> Self::Result {
        MessageResult((self.hasher.clone().finish(), self.hashed))
    }
}

/// Hashing threads: verifiers are spread over them round-robin.
#[derive(Clone)]
pub struct HashingPool {
    arbiters: std::sync::Arc<Vec<ArbiterHandle>>,
    next: std::sync::Arc<std::sync::atomic::AtomicUsize>,
}

impl HashingPool {
    /// Starts `threads` hashing threads. Must be called inside a running actix system.
    pub fn start(threads: usize) -> Self {
        let arbiters = (0..threads.max(1))
            .map(|_| Arbiter::new().handle())
            .collect();
        HashingPool {
            arbiters: std::sync::Arc::new(arbiters),
            next: Default::default(),
        }
    }

    /// Starts a verifier for a new upload.
    pub fn spawn(&self, algorithm: Algorithm) -> (Addr<DigestVerifier>, LatestHash) {
        self.spawn_resumed(algorithm.hasher(), 0)
    }

    /// Starts a verifier continuing `hasher`, which has hashed `hashed` bytes.
    pub fn spawn_resumed(&self, hasher: Hasher, hashed: u64) -> (Addr<DigestVerifier>, LatestHash) {
        let verifier = DigestVerifier::resume(hasher, hashed);
        let latest = verifier.latest();
        let i = self.next.fetch_add(1, std::sync::atomic::Ordering::Relaxed) % self.arbiters.len();
        let addr = DigestVerifier::start_in_arbiter(&self.arbiters[i], move |_| verifier);
        (addr, latest)
    }
}
