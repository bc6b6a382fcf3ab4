//! Bearer tokens (JWT) of the Docker token specification: verifying the tokens a token server
//! hands out, and issuing them when berth is its own token server.
//!
//! (Being written: see the interface below.)

use std::time::SystemTime;

use serde::Deserialize;
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
    // Token servers may leave `actions` out (or null) for "nothing".
    #[serde(default, deserialize_with = "null_as_empty")]
    pub actions: Vec<String>,
}

fn null_as_empty<'de, D: serde::Deserializer<'de>>(d: D) -> Result<Vec<String>, D::Error> {
    Ok(Option::<Vec<String>>::deserialize(d)?.unwrap_or_default())
}

impl Access {
    /// Parses a `scope` parameter entry: `type:name:actions`, where the name may itself contain
    /// `:` (a registry host with a port). The type is what comes before the first `:`, the
    /// actions (comma-separated) what comes after the last one. `None` if any part is empty.
    pub fn parse_scope(scope: &str) -> Option<Access> {
        let (kind, rest) = scope.split_once(':')?;
        let (name, actions) = rest.rsplit_once(':')?;
        if kind.is_empty() || name.is_empty() || actions.is_empty() {
            return None;
        }
        let actions: Vec<String> = actions.split(',').map(str::to_string).collect();
        if actions.iter().any(String::is_empty) {
            return None;
        }
        Some(Access {
            kind: kind.to_string(),
            name: name.to_string(),
            actions,
        })
    }

    /// The `scope` string form (`repository:team-a/app:pull,push`), as challenges carry it.
    pub fn to_scope(&self) -> String {
        format!("{}:{}:{}", self.kind, self.name, self.actions.join(","))
    }
}

/// What a valid token says.
#[derive(Debug, Clone)]
pub struct Grant {
    pub subject: String,
    pub access: Vec<Access>,
}

impl Grant {
    /// Whether the token grants `action` on the resource `kind`/`name`; a granted `*` action
    /// allows every action.
    pub fn allows(&self, kind: &str, name: &str, action: &str) -> bool {
        self.access.iter().any(|a| {
            a.kind == kind && a.name == name && a.actions.iter().any(|x| x == action || x == "*")
        })
    }
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

#[cfg(test)]
mod tests;
