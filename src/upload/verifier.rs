//! The digest-verifier actor: hashes an upload's bytes as they arrive, on a hashing thread of its
//! own so that the I/O threads never spend their time in SHA-256.

use actix::prelude::*;
use bytes::Bytes;

use crate::oci::{Algorithm, Digest, Hasher};

/// Owns the running hash of one upload.
pub struct DigestVerifier {
    hasher: Hasher,
    hashed: u64,
}

impl DigestVerifier {
    pub fn new(algorithm: Algorithm) -> Self {
        DigestVerifier {
            hasher: algorithm.hasher(),
            hashed: 0,
        }
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

    pub fn spawn(&self, algorithm: Algorithm) -> Addr<DigestVerifier> {
        let i = self.next.fetch_add(1, std::sync::atomic::Ordering::Relaxed) % self.arbiters.len();
        DigestVerifier::start_in_arbiter(&self.arbiters[i], move |_| DigestVerifier::new(algorithm))
    }
}
