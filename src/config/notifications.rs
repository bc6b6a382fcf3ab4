//! `notifications`: webhook endpoints that receive distribution's event envelopes.

use std::path::PathBuf;

use schemars::JsonSchema;
use serde::Deserialize;

use super::values::duration;

/// `notifications`: webhook endpoints that receive distribution's event envelopes.
#[derive(Debug, Clone, Deserialize, JsonSchema)]
pub struct NotificationsConfig {
    #[serde(default, deserialize_with = "super::values::section")]
    pub endpoints: Vec<EndpointConfig>,
    /// berth's own key: a local directory where events wait until their endpoint accepts them,
    /// across restarts. Default: `<rootdirectory>/_berth/notifications` on local disk,
    /// `./berth-notifications` with S3, none (memory only) with in-memory storage.
    #[serde(default)]
    pub spooldir: Option<PathBuf>,
}

#[derive(Debug, Clone, Deserialize, JsonSchema)]
pub struct EndpointConfig {
    pub name: String,
    pub url: String,
    /// Extra request headers; values are lists, as in distribution.
    #[serde(default, deserialize_with = "super::values::section")]
    pub headers: std::collections::BTreeMap<String, Vec<String>>,
    #[schemars(with = "String")]
    #[serde(default = "default_notify_timeout", with = "duration")]
    pub timeout: std::time::Duration,
    /// Consecutive failures before backing off.
    #[serde(default = "default_notify_threshold")]
    pub threshold: u32,
    #[schemars(with = "String")]
    #[serde(default = "default_notify_backoff", with = "duration")]
    pub backoff: std::time::Duration,
    #[serde(default)]
    pub disabled: bool,
    /// distribution's older key for `ignore.mediatypes`.
    #[serde(default, deserialize_with = "super::values::section")]
    pub ignoredmediatypes: Vec<String>,
    #[serde(default, deserialize_with = "super::values::section")]
    pub ignore: IgnoreConfig,
}

impl EndpointConfig {
    /// The endpoint's URL as it may be logged: without user info, query or fragment, which is
    /// where webhook URLs carry their secrets (`https://user:secret@host/events?token=…`).
    pub fn display_url(&self) -> String {
        display_url(&self.url)
    }
}

/// `url` without user info, query or fragment; an unparsable one is not shown at all (it may
/// hold a secret just the same).
pub fn display_url(url: &str) -> String {
    match reqwest::Url::parse(url) {
        Ok(mut url) => {
            let _ = url.set_username("");
            let _ = url.set_password(None);
            url.set_query(None);
            url.set_fragment(None);
            url.to_string()
        }
        Err(_) => "(an unparsable URL)".to_string(),
    }
}

#[derive(Debug, Clone, Deserialize, JsonSchema)]
pub struct IgnoreConfig {
    #[serde(default, deserialize_with = "super::values::section")]
    pub mediatypes: Vec<String>,
    #[serde(default, deserialize_with = "super::values::section")]
    pub actions: Vec<String>,
}

fn default_notify_timeout() -> std::time::Duration {
    std::time::Duration::from_secs(1)
}

fn default_notify_threshold() -> u32 {
    10
}

fn default_notify_backoff() -> std::time::Duration {
    std::time::Duration::from_secs(1)
}
