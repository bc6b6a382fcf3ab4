//! The HTTP edge of every error: each layer's error is mapped here, once, to the spec's status,
//! error code and extra headers, and answered as `{"errors":[{"code","message","detail"}]}`.

use actix_web::http::header::{
    HeaderName, HeaderValue, CONTENT_RANGE, CONTENT_TYPE, RETRY_AFTER, WWW_AUTHENTICATE,
};
use actix_web::http::StatusCode;
use actix_web::{HttpResponse, ResponseError};
use serde_json::{json, Value};

use crate::auth::AuthError;
use crate::oci::OciError;
use crate::registry::RegistryError;
use crate::storage::StorageError;
use crate::upload::UploadError;

#[derive(Debug)]
pub struct ApiError {
    pub status: StatusCode,
    pub code: &'static str,
    pub message: String,
    pub detail: Value,
    pub headers: Vec<(HeaderName, String)>,
    /// The kind of storage failure behind this error, if one is (counted in the metrics).
    pub storage: Option<&'static str>,
}

impl ApiError {
    pub fn new(status: StatusCode, code: &'static str, message: impl Into<String>) -> Self {
        ApiError {
            status,
            code,
            message: message.into(),
            detail: Value::Null,
            headers: Vec::new(),
            storage: None,
        }
    }

    pub fn with_detail(mut self, detail: Value) -> Self {
        self.detail = detail;
        self
    }

    pub fn with_header(mut self, name: HeaderName, value: String) -> Self {
        self.headers.push((name, value));
        self
    }

    pub fn not_found() -> Self {
        ApiError::new(StatusCode::NOT_FOUND, "NOT_FOUND", "no such endpoint")
    }

    pub fn method_not_allowed() -> Self {
        ApiError::new(
            StatusCode::METHOD_NOT_ALLOWED,
            "UNSUPPORTED",
            "the operation is unsupported on this endpoint",
        )
    }
}

impl std::fmt::Display for ApiError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "{} {}: {}",
            self.status.as_u16(),
            self.code,
            self.message
        )
    }
}

impl ResponseError for ApiError {
    fn status_code(&self) -> StatusCode {
        self.status
    }

    fn error_response(&self) -> HttpResponse {
        let mut response = HttpResponse::build(self.status);
        response.insert_header((CONTENT_TYPE, "application/json"));
        for (name, value) in &self.headers {
            if let Ok(v) = HeaderValue::from_str(value) {
                response.insert_header((name.clone(), v));
            }
        }
        let mut entry = json!({"code": self.code, "message": self.message});
        if !self.detail.is_null() {
            entry["detail"] = self.detail.clone();
        }
        response.body(json!({ "errors": [entry] }).to_string())
    }
}

/// `Range` value of an upload that holds `offset` bytes (distribution's form: `0-0` when empty).
pub fn upload_range(offset: u64) -> String {
    format!("0-{}", offset.saturating_sub(1))
}

impl From<OciError> for ApiError {
    fn from(e: OciError) -> Self {
        let message = e.to_string();
        let (status, code) = match e {
            OciError::InvalidName(_) => (StatusCode::BAD_REQUEST, "NAME_INVALID"),
            OciError::InvalidDigest(_) | OciError::UnsupportedAlgorithm(_) => {
                (StatusCode::BAD_REQUEST, "DIGEST_INVALID")
            }
            OciError::InvalidTag(_) => (StatusCode::BAD_REQUEST, "TAG_INVALID"),
            OciError::InvalidRange(_) => (StatusCode::BAD_REQUEST, "BLOB_UPLOAD_INVALID"),
            OciError::InvalidManifest(_) | OciError::UnsupportedManifest(_) => {
                (StatusCode::BAD_REQUEST, "MANIFEST_INVALID")
            }
        };
        ApiError::new(status, code, message)
    }
}

impl From<StorageError> for ApiError {
    fn from(e: StorageError) -> Self {
        log::error!("storage: {e}");
        let kind = e.kind();
        let mut error = match e {
            // The backend did not answer in time (an object store down or unreachable, after
            // object_store's retries): worth retrying later, and the client is told so.
            StorageError::Backend(object_store::Error::Generic { .. }) => ApiError::new(
                StatusCode::SERVICE_UNAVAILABLE,
                "UNAVAILABLE",
                "the storage backend is unavailable; retry later",
            )
            .with_header(actix_web::http::header::RETRY_AFTER, "10".into()),
            // Redis, which locks uploads across instances on this store, does not answer:
            // writing without the lock could let two instances write one upload.
            StorageError::Coordination(_) => ApiError::new(
                StatusCode::SERVICE_UNAVAILABLE,
                "UNAVAILABLE",
                "uploads are locked through Redis, which does not answer; retry later",
            )
            .with_header(actix_web::http::header::RETRY_AFTER, "5".into()),
            // The backend answered and refused (a 4xx of its own): the same request would be
            // refused again, so no Retry-After. The registry failed, not the client, which is
            // why this is not one of the spec's 4xx codes (they would blame the request), but
            // distribution's code for the registry's own failures, `UNKNOWN` with 500.
            StorageError::Refused { .. } => ApiError::new(
                StatusCode::INTERNAL_SERVER_ERROR,
                "UNKNOWN",
                "the storage backend refused the operation; see the registry's log",
            ),
            // Only uploads sync their bytes; the upload was removed, so the client must start
            // it again (retrying the same upload would be answered 404 BLOB_UPLOAD_UNKNOWN).
            StorageError::WriteBack(_) => ApiError::new(
                StatusCode::INTERNAL_SERVER_ERROR,
                "UNKNOWN",
                "the upload's bytes could not be written to disk; the upload was removed: \
                 start it again",
            ),
            _ => ApiError::new(
                StatusCode::INTERNAL_SERVER_ERROR,
                "UNKNOWN",
                "the storage backend failed; see the registry's log",
            ),
        };
        error.storage = Some(kind);
        error
    }
}

impl From<UploadError> for ApiError {
    fn from(e: UploadError) -> Self {
        let message = e.to_string();
        match e {
            UploadError::Unknown(_) => {
                ApiError::new(StatusCode::NOT_FOUND, "BLOB_UPLOAD_UNKNOWN", message)
            }
            UploadError::Busy { offset }
            | UploadError::OutOfOrder { offset }
            | UploadError::Completed { offset }
            | UploadError::RangeTooLong { offset } => ApiError::new(
                StatusCode::RANGE_NOT_SATISFIABLE,
                "BLOB_UPLOAD_INVALID",
                message,
            )
            .with_header(HeaderName::from_static("range"), upload_range(offset)),
            UploadError::LengthMismatch { .. } | UploadError::BodyLength { .. } => {
                ApiError::new(StatusCode::BAD_REQUEST, "SIZE_INVALID", message)
            }
            UploadError::DigestMismatch { .. } => {
                ApiError::new(StatusCode::BAD_REQUEST, "DIGEST_INVALID", message)
            }
            UploadError::BodyInterrupted(_) => {
                ApiError::new(StatusCode::BAD_REQUEST, "BLOB_UPLOAD_INVALID", message)
            }
            UploadError::Storage(s) => s.into(),
        }
    }
}

impl From<RegistryError> for ApiError {
    fn from(e: RegistryError) -> Self {
        let message = e.to_string();
        match e {
            RegistryError::Invalid(o) => o.into(),
            RegistryError::Upload(u) => u.into(),
            RegistryError::Storage(s) => s.into(),
            RegistryError::BlobUnknown(d) => {
                ApiError::new(StatusCode::NOT_FOUND, "BLOB_UNKNOWN", message)
                    .with_detail(json!({ "digest": d.to_string() }))
            }
            RegistryError::ManifestUnknown(r) => {
                ApiError::new(StatusCode::NOT_FOUND, "MANIFEST_UNKNOWN", message)
                    .with_detail(json!({ "reference": r }))
            }
            RegistryError::NotAcceptable { media_type, .. } => {
                ApiError::new(StatusCode::NOT_FOUND, "MANIFEST_UNKNOWN", message)
                    .with_detail(json!({ "mediaType": media_type }))
            }
            RegistryError::NameUnknown(n) => {
                ApiError::new(StatusCode::NOT_FOUND, "NAME_UNKNOWN", message)
                    .with_detail(json!({ "name": n.to_string() }))
            }
            RegistryError::ManifestBlobUnknown(d) => {
                ApiError::new(StatusCode::BAD_REQUEST, "MANIFEST_BLOB_UNKNOWN", message)
                    .with_detail(json!({ "digest": d.to_string() }))
            }
            RegistryError::ManifestTooLarge(_) => {
                ApiError::new(StatusCode::PAYLOAD_TOO_LARGE, "SIZE_INVALID", message)
            }
            RegistryError::ManifestDigestMismatch { .. } => {
                ApiError::new(StatusCode::BAD_REQUEST, "DIGEST_INVALID", message)
            }
            RegistryError::DeleteDisabled => {
                ApiError::new(StatusCode::METHOD_NOT_ALLOWED, "UNSUPPORTED", message)
            }
            RegistryError::RangeNotSatisfiable { size } => {
                ApiError::new(StatusCode::RANGE_NOT_SATISFIABLE, "SIZE_INVALID", message)
                    .with_header(CONTENT_RANGE, format!("bytes */{size}"))
            }
            RegistryError::InvalidPagination(_) => ApiError::new(
                StatusCode::BAD_REQUEST,
                "PAGINATION_NUMBER_INVALID",
                message,
            ),
        }
    }
}

impl From<crate::upload::quota::QuotaExceeded> for ApiError {
    fn from(e: crate::upload::quota::QuotaExceeded) -> Self {
        // Idle sessions stop counting after a while; finished ones at once.
        ApiError::new(
            StatusCode::TOO_MANY_REQUESTS,
            "TOOMANYREQUESTS",
            e.to_string(),
        )
        .with_header(RETRY_AFTER, "60".into())
    }
}

impl From<AuthError> for ApiError {
    fn from(e: AuthError) -> Self {
        let message = e.to_string();
        match e {
            AuthError::Unauthorized { challenge, .. } => {
                ApiError::new(StatusCode::UNAUTHORIZED, "UNAUTHORIZED", message)
                    .with_header(WWW_AUTHENTICATE, challenge)
            }
            AuthError::Denied(_) => ApiError::new(StatusCode::FORBIDDEN, "DENIED", message),
            AuthError::TooManyAttempts(wait) | AuthError::Overloaded { wait, .. } => {
                ApiError::new(StatusCode::TOO_MANY_REQUESTS, "TOOMANYREQUESTS", message)
                    .with_header(RETRY_AFTER, crate::auth::whole_seconds(wait).to_string())
            }
            AuthError::Setup(_) => {
                log::error!("{message}");
                ApiError::new(
                    StatusCode::INTERNAL_SERVER_ERROR,
                    "UNKNOWN",
                    "authentication is misconfigured; see the registry's log",
                )
            }
        }
    }
}
