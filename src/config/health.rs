//! `health`: background checks reported on the debug listener and by `/v2/`.

use schemars::JsonSchema;
use serde::Deserialize;

use super::values::duration;

/// `health`: background checks reported on the debug listener and by `/v2/`.
#[derive(Debug, Clone, Deserialize, JsonSchema)]
pub struct HealthConfig {
    #[serde(default, deserialize_with = "super::values::section")]
    pub storagedriver: StorageHealthConfig,
}

#[derive(Debug, Clone, Deserialize, JsonSchema)]
pub struct StorageHealthConfig {
    #[serde(default)]
    pub enabled: bool,
    #[schemars(with = "String")]
    #[serde(default = "default_health_interval", with = "duration")]
    pub interval: std::time::Duration,
    /// Consecutive failures before the backend is reported unhealthy.
    #[serde(default = "default_health_threshold")]
    pub threshold: u32,
}

fn default_health_interval() -> std::time::Duration {
    std::time::Duration::from_secs(10)
}

fn default_health_threshold() -> u32 {
    3
}
