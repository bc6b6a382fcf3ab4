//! Bearer tokens (JWT) of the Docker token specification: verifying the tokens a token server
//! hands out, and issuing them when berth is its own token server.
//!
//! (Being written: see the interface below.)

use std::time::SystemTime;

use thiserror::Error;

use crate::config::TokenConfig;

#[derive(Debug, Error)]
pub enum TokenError {
    #[error("token configuration: {0}")]
    Config(String),
    #[error("invalid token: {0}")]
    Invalid(String),
}

/// One entry of a token's `access` claim, or one requested `scope`
/// (`repository:team-a/app:pull,push`, `registry:catalog:*`).
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct Access {
    #[serde(rename = "type")]
    pub kind: String,
    pub name: String,
    pub actions: Vec<String>,
}

impl Access {
    /// Parses a `scope` parameter entry: `type:name:actions`, where the name may itself contain
    /// `:` (a registry host with a port).
    pub fn parse_scope(_scope: &str) -> Option<Access> {
        todo!()
    }
}

/// What a valid token says.
#[derive(Debug, Clone)]
pub struct Grant {
    pub subject: String,
    pub access: Vec<Access>,
}

/// Checks tokens: signature by a trusted key, `iss`, `aud`, `exp`/`nbf`.
pub struct TokenVerifier {}

impl TokenVerifier {
    pub fn from_config(_config: &TokenConfig) -> Result<TokenVerifier, TokenError> {
        todo!()
    }

    pub fn verify(&self, _token: &str, _now: SystemTime) -> Result<Grant, TokenError> {
        todo!()
    }
}

/// Signs tokens with `auth.token.signingkey` (berth as its own token server).
pub struct TokenIssuer {}

impl TokenIssuer {
    pub fn from_config(_config: &TokenConfig) -> Result<Option<TokenIssuer>, TokenError> {
        todo!()
    }

    pub fn issue(
        &self,
        _subject: &str,
        _access: &[Access],
        _now: SystemTime,
    ) -> Result<String, TokenError> {
        todo!()
    }

    pub fn expiration(&self) -> std::time::Duration {
        todo!()
    }
}
