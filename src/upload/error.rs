//! The upload layer's errors (mapped to OCI codes once, at the HTTP edge).

use thiserror::Error;

use crate::oci::Digest;
use crate::storage::StorageError;

#[derive(Debug, Error)]
pub enum UploadError {
    #[error("upload {0} is unknown")]
    Unknown(String),
    #[error("another request is writing this upload; {offset} bytes are stored")]
    Busy { offset: u64 },
    #[error("chunk does not start at the upload's offset {offset}")]
    OutOfOrder { offset: u64 },
    #[error("the upload's {offset} bytes are final; complete it with a PUT without a body")]
    Completed { offset: u64 },
    #[error(
        "the chunk's Content-Range is longer than any upload can be; {offset} bytes are stored"
    )]
    RangeTooLong { offset: u64 },
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

impl UploadError {
    /// Whether the upload cannot go on after this error and is removed: a wrong digest, or a
    /// failed sync (bytes it counted may never reach the disk, and a retried fsync could
    /// "succeed" without them).
    pub(super) fn ends_upload(&self) -> bool {
        matches!(
            self,
            UploadError::DigestMismatch { .. } | UploadError::Storage(StorageError::WriteBack(_))
        )
    }
}
