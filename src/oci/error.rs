//! Validation errors of the OCI vocabulary.

use thiserror::Error;

/// A value that does not follow the distribution or image spec's grammar.
#[derive(Debug, Error, Clone, PartialEq, Eq)]
pub enum OciError {
    #[error("invalid repository name {0:?}: components are lowercase alphanumerics joined by '.', '_', '__' or '-', separated by '/', 255 characters at most")]
    InvalidName(String),
    #[error("invalid digest {0:?}: expected <algorithm>:<hex>, e.g. sha256:<64 hex characters>")]
    InvalidDigest(String),
    #[error("unsupported digest algorithm {0:?}: sha256 and sha512 are supported")]
    UnsupportedAlgorithm(String),
    #[error(
        "invalid tag {0:?}: up to 128 characters of [A-Za-z0-9_.-], not starting with '.' or '-'"
    )]
    InvalidTag(String),
    #[error("invalid range {0:?}")]
    InvalidRange(String),
    #[error("invalid manifest: {0}")]
    InvalidManifest(String),
    #[error("unsupported manifest: {0}")]
    UnsupportedManifest(String),
}
