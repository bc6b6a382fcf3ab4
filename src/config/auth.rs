//! `auth`: htpasswd, tokens (and berth's own issuer), access rules, login limits.

use std::path::PathBuf;

use schemars::JsonSchema;
use serde::Deserialize;

use super::values::duration;

/// `auth`: at most one of distribution's methods (`htpasswd`, `token`), or berth's own issuer:
/// `htpasswd` and `token` together with `token.signingkey`, where berth checks the passwords at
/// its `/token` endpoint and hands out the tokens its API then accepts.
#[derive(Debug, Clone, Deserialize, JsonSchema)]
pub struct AuthConfig {
    #[serde(default)]
    pub htpasswd: Option<HtpasswdConfig>,
    #[serde(default)]
    pub token: Option<TokenConfig>,
    /// berth's access rules; without them every authenticated user may do everything (as in
    /// distribution) and anonymous users nothing.
    #[serde(default)]
    pub access: Option<Vec<AccessRule>>,
    /// berth's brute-force guard: failed logins allowed per client address per minute before it
    /// is answered `429 TOOMANYREQUESTS`.
    #[serde(default = "default_failed_logins")]
    pub failedloginsperminute: u32,
    /// berth's token server: token requests answered per client address per minute (each costs
    /// a signature) before it is answered `429 TOOMANYREQUESTS`; 0 turns the limit off.
    #[serde(default = "default_token_requests")]
    pub tokenrequestsperminute: u32,
}

fn default_failed_logins() -> u32 {
    10
}

fn default_token_requests() -> u32 {
    600
}

#[derive(Debug, Clone, Deserialize, JsonSchema)]
pub struct HtpasswdConfig {
    #[serde(default = "default_realm")]
    pub realm: String,
    pub path: PathBuf,
}

fn default_realm() -> String {
    "berth".to_string()
}

/// `auth.token`: Bearer tokens (JWT) from a token server, per the Docker token specification.
#[derive(Debug, Clone, Deserialize, JsonSchema)]
pub struct TokenConfig {
    /// The token server's URL, sent to clients in the challenge.
    pub realm: String,
    /// The `aud` tokens must carry: this registry's service name.
    pub service: String,
    /// The `iss` tokens must carry.
    pub issuer: String,
    /// PEM certificates whose keys (by `kid`, or as roots of the token's `x5c` chain) sign tokens.
    #[serde(default)]
    pub rootcertbundle: Option<PathBuf>,
    /// Every `rootcertbundle` certificate is a trust anchor for `x5c` chains, even one that is
    /// not self-signed (an intermediate CA, or the signing certificate itself), as in
    /// distribution. Off: only the self-signed ones are (`REGISTRY_AUTH_TOKEN_PARTIALCHAIN`).
    #[serde(default)]
    pub partialchain: bool,
    /// A JSON Web Key Set whose keys (by `kid`) sign tokens.
    #[serde(default)]
    pub jwks: Option<PathBuf>,
    /// berth as its own token server: the PEM private key (EC P-256 or RSA) it signs with. Its
    /// public key is trusted as well.
    #[serde(default)]
    pub signingkey: Option<PathBuf>,
    /// Lifetime of the tokens berth issues.
    #[schemars(with = "String")]
    #[serde(default = "default_token_expiration", with = "duration")]
    pub expiration: std::time::Duration,
}

fn default_token_expiration() -> std::time::Duration {
    std::time::Duration::from_secs(300)
}

/// One access rule: `account` (a user name, `*` for any authenticated user, or `anonymous`) may
/// perform `actions` (`pull`, `push`, `delete`, `catalog`) on repositories matching one of
/// `repositories` (globs: `*` matches any run of characters, `/` included).
#[derive(Debug, Clone, Deserialize, JsonSchema, PartialEq, Eq)]
pub struct AccessRule {
    pub account: String,
    #[serde(default)]
    pub repositories: Vec<String>,
    pub actions: Vec<String>,
}

impl AuthConfig {
    /// Whether requests must identify themselves.
    pub fn enabled(&self) -> bool {
        self.htpasswd.is_some() || self.token.is_some()
    }
}
