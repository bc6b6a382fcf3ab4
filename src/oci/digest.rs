//! Content digests (`<algorithm>:<hex>`) and the streaming hashers that produce them.

use std::fmt;
use std::str::FromStr;

use serde::{Deserialize, Deserializer, Serialize, Serializer};
use sha2::Digest as _;

use super::OciError;

/// A digest algorithm berth can verify.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Algorithm {
    Sha256,
    Sha512,
}

impl Algorithm {
    pub fn as_str(self) -> &'static str {
        match self {
            Algorithm::Sha256 => "sha256",
            Algorithm::Sha512 => "sha512",
        }
    }

    /// Length of the lowercase hex encoding.
    pub fn hex_len(self) -> usize {
        match self {
            Algorithm::Sha256 => 64,
            Algorithm::Sha512 => 128,
        }
    }

    pub fn hasher(self) -> Hasher {
        match self {
            Algorithm::Sha256 => Hasher::Sha256(sha2::Sha256::new()),
            Algorithm::Sha512 => Hasher::Sha512(sha2::Sha512::new()),
        }
    }
}

impl FromStr for Algorithm {
    type Err = OciError;
    fn from_str(s: &str) -> Result<Self, OciError> {
        match s {
            "sha256" => Ok(Algorithm::Sha256),
            "sha512" => Ok(Algorithm::Sha512),
            other => Err(OciError::UnsupportedAlgorithm(other.to_string())),
        }
    }
}

/// A validated digest: a supported algorithm and its lowercase hex encoding.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Digest {
    algorithm: Algorithm,
    hex: String,
}

impl Digest {
    pub fn algorithm(&self) -> Algorithm {
        self.algorithm
    }

    pub fn hex(&self) -> &str {
        &self.hex
    }

    /// The digest of `bytes` under `algorithm`.
    pub fn of(algorithm: Algorithm, bytes: &[u8]) -> Digest {
        let mut hasher = algorithm.hasher();
        hasher.update(bytes);
        hasher.finish()
    }

    pub fn sha256(bytes: &[u8]) -> Digest {
        Digest::of(Algorithm::Sha256, bytes)
    }
}

impl FromStr for Digest {
    type Err = OciError;

    /// Parses per the spec's grammar: `algorithm ":" encoded`, where the algorithm is
    /// `[a-z0-9]+([+._-][a-z0-9]+)*`. A well-formed digest of an algorithm berth does not
    /// know is `UnsupportedAlgorithm`; anything else malformed is `InvalidDigest`.
    fn from_str(s: &str) -> Result<Self, OciError> {
        let invalid = || OciError::InvalidDigest(s.to_string());
        let (alg, encoded) = s.split_once(':').ok_or_else(invalid)?;
        let alg_ok = !alg.is_empty()
            && alg.split(['+', '.', '_', '-']).all(|part| {
                !part.is_empty()
                    && part
                        .bytes()
                        .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit())
            });
        let encoded_ok = !encoded.is_empty()
            && encoded
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || b == b'=' || b == b'_' || b == b'-');
        if !alg_ok || !encoded_ok {
            return Err(invalid());
        }
        let algorithm: Algorithm = alg.parse()?;
        let hex_ok = encoded.len() == algorithm.hex_len()
            && encoded
                .bytes()
                .all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b));
        if !hex_ok {
            return Err(invalid());
        }
        Ok(Digest {
            algorithm,
            hex: encoded.to_string(),
        })
    }
}

impl fmt::Display for Digest {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}:{}", self.algorithm.as_str(), self.hex)
    }
}

impl Serialize for Digest {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.collect_str(self)
    }
}

impl<'de> Deserialize<'de> for Digest {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        let s = String::deserialize(deserializer)?;
        s.parse().map_err(serde::de::Error::custom)
    }
}

/// A running hash of one algorithm.
#[derive(Clone)]
pub enum Hasher {
    Sha256(sha2::Sha256),
    Sha512(sha2::Sha512),
}

impl Hasher {
    pub fn algorithm(&self) -> Algorithm {
        match self {
            Hasher::Sha256(_) => Algorithm::Sha256,
            Hasher::Sha512(_) => Algorithm::Sha512,
        }
    }

    pub fn update(&mut self, bytes: &[u8]) {
        match self {
            Hasher::Sha256(h) => h.update(bytes),
            Hasher::Sha512(h) => h.update(bytes),
        }
    }

    /// The running state, to be saved and resumed elsewhere ([`Self::restore`]) without
    /// re-reading the bytes already hashed.
    pub fn snapshot(&self) -> Vec<u8> {
        use sha2::digest::common::hazmat::SerializableState;
        match self {
            Hasher::Sha256(h) => h.serialize().to_vec(),
            Hasher::Sha512(h) => h.serialize().to_vec(),
        }
    }

    /// A hasher continuing from a [`Self::snapshot`]; `None` if the bytes are not one.
    pub fn restore(algorithm: Algorithm, state: &[u8]) -> Option<Hasher> {
        use sha2::digest::common::hazmat::SerializableState;
        Some(match algorithm {
            Algorithm::Sha256 => {
                Hasher::Sha256(sha2::Sha256::deserialize(state.try_into().ok()?).ok()?)
            }
            Algorithm::Sha512 => {
                Hasher::Sha512(sha2::Sha512::deserialize(state.try_into().ok()?).ok()?)
            }
        })
    }

    pub fn finish(self) -> Digest {
        let (algorithm, hex) = match self {
            Hasher::Sha256(h) => (Algorithm::Sha256, hex::encode(h.finalize())),
            Hasher::Sha512(h) => (Algorithm::Sha512, hex::encode(h.finalize())),
        };
        Digest { algorithm, hex }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const EMPTY_SHA256: &str =
        "sha256:e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855";

    #[test]
    fn a_snapshot_resumes_the_hash() {
        for algorithm in [Algorithm::Sha256, Algorithm::Sha512] {
            let data: Vec<u8> = (0..100_000u32).map(|i| (i * 7 % 251) as u8).collect();
            let mut first = algorithm.hasher();
            first.update(&data[..12_345]);
            let saved = first.snapshot();
            let mut resumed = Hasher::restore(algorithm, &saved).expect("a valid snapshot");
            resumed.update(&data[12_345..]);
            assert_eq!(resumed.finish(), Digest::of(algorithm, &data));
            assert!(Hasher::restore(algorithm, &saved[1..]).is_none());
        }
    }

    #[test]
    fn hashes_known_values() {
        assert_eq!(Digest::sha256(b"").to_string(), EMPTY_SHA256);
        assert_eq!(
            Digest::of(Algorithm::Sha512, b"").to_string(),
            "sha512:cf83e1357eefb8bdf1542850d66d8007d620e4050b5715dc83f4a921d36ce9ce47d0d13c5d85f2b0ff8318d2877eec2f63b931bd47417a81a538327af927da3e"
        );
    }

    #[test]
    fn parses_and_displays_round_trip() {
        let d: Digest = EMPTY_SHA256.parse().unwrap();
        assert_eq!(d.algorithm(), Algorithm::Sha256);
        assert_eq!(d.to_string(), EMPTY_SHA256);
    }

    #[test]
    fn rejects_malformed_digests() {
        for bad in [
            "",
            "sha256",
            "sha256:",
            ":abc",
            "sha256:xyz",
            "SHA256:e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855",
            "sha256:E3B0C44298FC1C149AFBF4C8996FB92427AE41E4649B934CA495991B7852B855",
            "sha256:e3b0c442",
            "sha256:../../etc/passwd",
        ] {
            assert!(
                matches!(bad.parse::<Digest>(), Err(OciError::InvalidDigest(_))),
                "{bad:?} should be invalid"
            );
        }
    }

    #[test]
    fn well_formed_unknown_algorithm_is_unsupported() {
        assert!(matches!(
            "md5:d41d8cd98f00b204e9800998ecf8427e".parse::<Digest>(),
            Err(OciError::UnsupportedAlgorithm(_))
        ));
    }

    #[test]
    fn streaming_hash_equals_one_shot() {
        let mut h = Algorithm::Sha256.hasher();
        h.update(b"hello ");
        h.update(b"world");
        assert_eq!(h.finish(), Digest::sha256(b"hello world"));
    }
}
