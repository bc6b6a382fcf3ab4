//! Deterministic blob content, generated on the fly.
//!
//! A blob is `(seed, size)`; its bytes are a counter-based PRNG (one 64-bit mix per 8 bytes), so
//! any range can be produced independently, at several GB/s, without ever holding the blob in
//! memory. The digest is computed in a separate pass before a timed push.

use bytes::Bytes;
use futures_util::Stream;
use sha2::{Digest as _, Sha256};

/// Size of the pieces a streamed body is made of.
pub const PIECE: usize = 1024 * 1024;

/// A blob described by its seed and size.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct BlobSpec {
    pub seed: u64,
    pub size: u64,
}

#[inline]
fn word(seed: u64, index: u64) -> u64 {
    // SplitMix64's finaliser over (seed, index): every word independent of the others.
    let mut z = seed
        .wrapping_add(index.wrapping_mul(0x9E37_79B9_7F4A_7C15))
        .wrapping_add(0x2545_F491_4F6C_DD1D);
    z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
    z ^ (z >> 31)
}

/// Mixes a seed with a label and an index into a new seed (blob seeds for one scenario).
pub fn derive_seed(seed: u64, label: &str, index: u64) -> u64 {
    let mut h = seed ^ 0xCBF2_9CE4_8422_2325;
    for b in label.bytes() {
        h = (h ^ u64::from(b)).wrapping_mul(0x100_0000_01B3);
    }
    word(h, index)
}

/// Fills `buf` with the blob's bytes starting at `offset`.
pub fn fill(seed: u64, offset: u64, buf: &mut [u8]) {
    let mut pos = 0usize;
    let mut at = offset;
    // Unaligned head, byte by byte.
    while pos < buf.len() && at % 8 != 0 {
        buf[pos] = word(seed, at / 8).to_le_bytes()[(at % 8) as usize];
        pos += 1;
        at += 1;
    }
    let mut index = at / 8;
    let mut chunks = buf[pos..].chunks_exact_mut(8);
    for chunk in &mut chunks {
        chunk.copy_from_slice(&word(seed, index).to_le_bytes());
        index += 1;
    }
    let tail = chunks.into_remainder();
    if !tail.is_empty() {
        let w = word(seed, index).to_le_bytes();
        tail.copy_from_slice(&w[..tail.len()]);
    }
}

impl BlobSpec {
    /// The bytes `[offset, offset + len)` as one buffer.
    pub fn bytes(&self, offset: u64, len: usize) -> Bytes {
        let mut v = vec![0u8; len];
        fill(self.seed, offset, &mut v);
        Bytes::from(v)
    }

    /// The whole blob in memory (small blobs only).
    pub fn to_bytes(self) -> Bytes {
        self.bytes(0, self.size as usize)
    }

    /// `sha256:<hex>` of the blob, generating it in pieces.
    pub fn digest(&self) -> String {
        let mut hasher = Sha256::new();
        let mut buf = vec![0u8; PIECE];
        let mut offset = 0u64;
        while offset < self.size {
            let n = (self.size - offset).min(PIECE as u64) as usize;
            fill(self.seed, offset, &mut buf[..n]);
            hasher.update(&buf[..n]);
            offset += n as u64;
        }
        format!("sha256:{}", hex::encode(hasher.finalize()))
    }

    /// The bytes `[start, start + len)` as a stream of pieces of at most [`PIECE`] bytes; `on_piece`
    /// is called with each piece's length as it is handed to the HTTP client (for progress).
    pub fn stream<F>(
        self,
        start: u64,
        len: u64,
        on_piece: F,
    ) -> impl Stream<Item = Result<Bytes, std::io::Error>> + Send + 'static
    where
        F: Fn(u64) + Send + Sync + 'static,
    {
        let end = start + len;
        futures_util::stream::unfold(start, move |offset| {
            let piece = if offset >= end {
                None
            } else {
                let n = (end - offset).min(PIECE as u64);
                let bytes = self.bytes(offset, n as usize);
                on_piece(n);
                Some((Ok(bytes), offset + n))
            };
            std::future::ready(piece)
        })
    }
}

/// `sha256:<hex>` of a buffer.
pub fn sha256(data: &[u8]) -> String {
    format!("sha256:{}", hex::encode(Sha256::digest(data)))
}

#[cfg(test)]
mod tests {
    use super::*;
    use futures_util::StreamExt;

    #[test]
    fn ranges_agree_with_the_whole() {
        let spec = BlobSpec {
            seed: 42,
            size: 10_001,
        };
        let whole = spec.to_bytes();
        for (start, len) in [(0usize, 10_001usize), (3, 17), (8, 8), (9_995, 6), (1, 0)] {
            assert_eq!(
                spec.bytes(start as u64, len),
                whole.slice(start..start + len)
            );
        }
        assert_eq!(spec.digest(), sha256(&whole));
    }

    #[tokio::test]
    async fn streams_cover_the_range_in_pieces() {
        let spec = BlobSpec {
            seed: 7,
            size: 3 * PIECE as u64 + 5,
        };
        let pieces: Vec<Bytes> = spec
            .stream(0, spec.size, |_| {})
            .map(|p| p.unwrap())
            .collect()
            .await;
        assert_eq!(pieces.len(), 4);
        let joined: Vec<u8> = pieces.concat();
        assert_eq!(sha256(&joined), spec.digest());
    }

    #[test]
    fn seeds_differ() {
        assert_ne!(derive_seed(1, "a", 0), derive_seed(1, "a", 1));
        assert_ne!(derive_seed(1, "a", 0), derive_seed(1, "b", 0));
        assert_ne!(derive_seed(1, "a", 0), derive_seed(2, "a", 0));
    }
}
