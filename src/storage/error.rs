//! [`StorageError`], the storage layer's one error enum, and how object_store's errors map onto
//! it: a backend's permanent refusal is told apart from the backend being unavailable. Apart
//! from the operations so that every variant, each of which the HTTP edge maps to a status,
//! reads in one place.

use thiserror::Error;

#[derive(Debug, Error)]
pub enum StorageError {
    #[error("not found: {0}")]
    NotFound(String),
    #[error("storage backend error: {0}")]
    Backend(object_store::Error),
    /// The backend answered, and refused the request with a client error (`400 Bad Request`
    /// for AWS's "copy source too large", a quota, a bucket policy): asking again unchanged
    /// gets the same answer, so it is not reported as the backend being unavailable.
    #[error("storage backend refused the request ({status}): {source}")]
    Refused {
        status: u16,
        source: object_store::Error,
    },
    #[error("storage I/O error: {0}")]
    Io(#[from] std::io::Error),
    #[error("corrupt content at {path}: {reason}")]
    Corrupt { path: String, reason: String },
    #[error("storage configuration: {0}")]
    Config(String),
    #[error("another request holds upload {0}")]
    Locked(String),
    /// This request's hold on an upload was lost (taken over after it stalled, or not
    /// renewable): nothing more is written under it.
    #[error("{0}")]
    Fenced(String),
    /// The service that locks uploads across instances (Redis) does not answer: writing
    /// without it could let two instances write one upload.
    #[error("upload locks unavailable: {0}")]
    Coordination(String),
    /// Syncing an upload's bytes to disk failed: some of them may never reach it, and no later
    /// sync can tell (the kernel reports such an error once). The upload cannot be continued.
    #[error("storage write-back error: {0}")]
    WriteBack(std::io::Error),
}

impl From<object_store::Error> for StorageError {
    fn from(e: object_store::Error) -> Self {
        match e {
            object_store::Error::NotFound { path, .. } => StorageError::NotFound(path),
            other => match refusal_status(&other) {
                Some(status) => StorageError::Refused {
                    status,
                    source: other,
                },
                None => StorageError::Backend(other),
            },
        }
    }
}

/// object_store's text for an HTTP error answer (its `RequestError::Status`, whose type is not
/// public: only its message can be recognised in the error's source chain).
pub(crate) const STATUS_ERROR_PREFIX: &str = "Server returned non-2xx status code: ";

/// The status of a *permanent* client error the backend answered (4xx other than 408 Request
/// Timeout and 429 Too Many Requests, which object_store itself treats as worth retrying), if
/// `e` is one. object_store turns 404, 409, 412, 401 and 403 into variants of their own; every
/// other status arrives as `Generic`, with the answer's status in its message.
fn refusal_status(e: &object_store::Error) -> Option<u16> {
    let object_store::Error::Generic { .. } = e else {
        return None;
    };
    let mut current: Option<&(dyn std::error::Error + 'static)> = Some(e);
    while let Some(error) = current {
        let text = error.to_string();
        if let Some(at) = text.find(STATUS_ERROR_PREFIX) {
            let status: u16 = text[at + STATUS_ERROR_PREFIX.len()..]
                .chars()
                .take_while(char::is_ascii_digit)
                .collect::<String>()
                .parse()
                .ok()?;
            return ((400..500).contains(&status) && status != 408 && status != 429)
                .then_some(status);
        }
        current = error.source();
    }
    None
}

impl StorageError {
    /// The variant's name, as a metrics label.
    pub fn kind(&self) -> &'static str {
        match self {
            StorageError::NotFound(_) => "not_found",
            StorageError::Backend(_) => "backend",
            StorageError::Refused { .. } => "refused",
            StorageError::Io(_) => "io",
            StorageError::Corrupt { .. } => "corrupt",
            StorageError::Config(_) => "config",
            StorageError::Locked(_) => "locked",
            StorageError::Fenced(_) => "fenced",
            StorageError::Coordination(_) => "coordination",
            StorageError::WriteBack(_) => "write_back",
        }
    }
}

pub type Result<T, E = StorageError> = std::result::Result<T, E>;
