//! The machine ceilings: what the machine allows without a registry in the way. Plain HTTP
//! PUT and GET against a web server (nginx), SHA-256 on one core, and the first touch of fresh
//! memory.

use crate::bench::client::OpError;
use crate::bench::data::BlobSpec;
use crate::bench::stats::MB;

use super::meter::{warm_memory, Measured, Meter};
use super::{single, tick, Context, Outcome, Scenario, Unit};

impl Context<'_> {
    /// Plain `PUT` of the large blob: what the HTTP path alone allows (against nginx).
    pub(super) async fn http_put(&mut self, size: u64) -> Outcome {
        let spec = self.spec(Scenario::HttpPut, 0, size);
        let pb = self.bar(Scenario::HttpPut, Some(size), Unit::Bytes);
        let meter = self.meter();
        let r = self
            .client
            .raw_put(&self.args.http_path, spec, tick(&pb))
            .await;
        let measured = meter.finish();
        pb.finish_and_clear();
        single(size, measured, r.err())
    }

    /// Plain `GET`: what the HTTP path alone allows for reads; `hashed`, with the body hashed
    /// as it arrives (SHA-256, as a client checking a blob's digest does), the ceiling of a pull
    /// that is checked like that.
    pub(super) async fn http_get(&mut self, hashed: bool) -> Outcome {
        let scenario = if hashed {
            Scenario::HttpGetHashed
        } else {
            Scenario::HttpGet
        };
        let pb = self.bar(scenario, None, Unit::Bytes);
        let meter = self.meter();
        let r = self
            .client
            .raw_get(&self.args.http_path, hashed, tick(&pb))
            .await;
        let measured = meter.finish();
        pb.finish_and_clear();
        match r {
            Ok(n) => single(n, measured, None),
            Err(e) => single(0, measured, Some(e)),
        }
    }
}

/// First touch of `size` bytes of fresh memory (see [`warm_memory`]): low when the hypervisor
/// took freed memory back.
pub(super) async fn ceiling_first_touch(size: u64) -> Outcome {
    let mb_s = tokio::task::spawn_blocking(move || warm_memory(size))
        .await
        .unwrap_or(0.0);
    let seconds = if mb_s > 0.0 {
        size as f64 / MB / mb_s
    } else {
        0.0
    };
    single(
        size,
        Measured {
            seconds,
            ..Default::default()
        },
        (mb_s <= 0.0).then(|| OpError("mmap failed".into())),
    )
}

/// Single-core SHA-256 over `size` bytes (a 64 MiB buffer, hashed repeatedly): the ceiling of any
/// registry that checks digests with the same library as berth (`sha2`).
pub(super) async fn ceiling_sha256(size: u64) -> Outcome {
    let measured_and_bytes = tokio::task::spawn_blocking(move || {
        use sha2::{Digest as _, Sha256};
        let buf = BlobSpec {
            seed: 0x5A25_6000,
            size: 64 << 20,
        }
        .to_bytes();
        let meter = Meter::start(None, 0, None);
        let mut hasher = Sha256::new();
        let mut done = 0u64;
        while done < size {
            for piece in buf.chunks(1 << 20) {
                let n = (size - done).min(piece.len() as u64) as usize;
                hasher.update(&piece[..n]);
                done += n as u64;
                if done >= size {
                    break;
                }
            }
        }
        std::hint::black_box(hasher.finalize());
        (meter.finish(), done)
    })
    .await;
    match measured_and_bytes {
        Ok((measured, bytes)) => single(bytes, measured, None),
        Err(e) => single(0, Measured::default(), Some(OpError(format!("{e}")))),
    }
}
