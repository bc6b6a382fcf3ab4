//! `uploads` (berth's own): caps on open upload sessions.

use schemars::JsonSchema;
use serde::Deserialize;

use super::values::duration;

/// `uploads`: how many upload sessions may be open at once (see `upload::quota`).
#[derive(Debug, Clone, Deserialize, JsonSchema)]
pub struct UploadsConfig {
    #[serde(default = "default_uploads_per_repository")]
    pub maxperrepository: usize,
    #[serde(default = "default_uploads_per_user")]
    pub maxperuser: usize,
    /// A session not written to for this long stops counting.
    #[schemars(with = "String")]
    #[serde(default = "default_upload_idle", with = "duration")]
    pub idletimeout: std::time::Duration,
}

fn default_uploads_per_repository() -> usize {
    1000
}

fn default_uploads_per_user() -> usize {
    500
}

fn default_upload_idle() -> std::time::Duration {
    std::time::Duration::from_secs(3600)
}
