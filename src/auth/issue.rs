//! berth as its own token server (`auth.token.signingkey`): [`Auth::issue_token`] checks the
//! `Basic` credentials, if any, and signs a token granting what the access rules allow of the
//! requested scopes. Each request is counted per address before any work (a signature costs
//! milliseconds of a core with RSA), and the signing runs on the blocking pool.

use std::net::IpAddr;
use std::time::{Duration, SystemTime};

use super::throttle::Refusal;
use super::token::Access;
use super::{is_basic, Auth, AuthError, Caller, Identity, Login, Needs, Permission};

/// The most scopes one token request is granted.
const MAX_SCOPES: usize = 64;

/// A token handed out by berth's own token server.
pub struct IssuedToken {
    pub token: String,
    pub expires_in: Duration,
    pub issued_at: SystemTime,
}

impl Auth {
    /// The path of berth's own token endpoint (the realm's path), when berth issues tokens.
    pub fn issuer_path(&self) -> Option<&str> {
        self.issuer_path.as_deref()
    }

    /// berth's token server: checks the `Basic` credentials if any (none: anonymous) and grants
    /// the requested scopes as far as the access rules allow.
    pub async fn issue_token(
        &self,
        peer: Option<IpAddr>,
        authorization: Option<&str>,
        scopes: &[&str],
    ) -> Result<IssuedToken, AuthError> {
        let Login::Token {
            issuer: Some((_, issuer)),
            ..
        } = &self.login
        else {
            return Err(AuthError::Setup("berth does not issue tokens here".into()));
        };
        // Before any work: every request costs a signature, and anonymous ones no password.
        self.token_requests
            .count(peer)
            .map_err(|refusal| match refusal {
                Refusal::Exhausted(wait) => AuthError::Overloaded {
                    wait,
                    reason: "too many token requests from this address",
                },
                Refusal::Busy(wait, reason) => AuthError::Overloaded { wait, reason },
            })?;
        if authorization.is_some_and(|a| !is_basic(a)) {
            return Err(AuthError::Unauthorized {
                challenge: "Basic realm=\"berth token server\"".into(),
                message: "the token server takes Basic credentials".into(),
            });
        }
        let no_needs = Needs {
            permission: None,
            repo: None,
        };
        let identity = match self.identify(peer, authorization, &no_needs).await {
            Ok(Caller::User(user)) => Identity::User(user),
            Ok(_) => Identity::Anonymous,
            Err(AuthError::Unauthorized { message, .. }) => {
                return Err(AuthError::Unauthorized {
                    challenge: "Basic realm=\"berth token server\"".into(),
                    message,
                })
            }
            Err(e) => return Err(e),
        };
        let granted: Vec<Access> = scopes
            .iter()
            .flat_map(|s| s.split(' '))
            // Clients ask for a handful; a token naming thousands would be refused anyway.
            .take(MAX_SCOPES)
            .filter_map(Access::parse_scope)
            .filter_map(|wanted| self.grant(&identity, wanted))
            .collect();
        let now = SystemTime::now();
        // An RSA signature takes milliseconds of a core: not on the request threads.
        let (signer, subject) = (issuer.clone(), identity.name().to_string());
        let token = actix_web::web::block(move || signer.issue(&subject, &granted, now))
            .await
            .map_err(|e| AuthError::Setup(format!("signing a token: {e}")))?
            .map_err(|e| AuthError::Setup(e.to_string()))?;
        Ok(IssuedToken {
            token,
            expires_in: issuer.expiration(),
            issued_at: now,
        })
    }

    /// The part of `wanted` the rules allow `identity`; `None` when nothing is.
    fn grant(&self, identity: &Identity, wanted: Access) -> Option<Access> {
        let actions: Vec<String> = match wanted.kind.as_str() {
            "repository" => {
                let all = ["pull", "push", "delete"];
                let asked: Vec<&str> = if wanted.actions.iter().any(|a| a == "*") {
                    all.to_vec()
                } else {
                    wanted.actions.iter().map(String::as_str).collect()
                };
                asked
                    .into_iter()
                    .filter(|a| {
                        let permission = match *a {
                            "pull" => Permission::Pull,
                            "push" => Permission::Push,
                            "delete" => Permission::Delete,
                            _ => return false,
                        };
                        self.rules.allows(identity, permission, Some(&wanted.name))
                    })
                    .map(str::to_string)
                    .collect()
            }
            "registry" if wanted.name == "catalog" => {
                if self.rules.allows(identity, Permission::Catalog, None) {
                    vec!["*".to_string()]
                } else {
                    Vec::new()
                }
            }
            _ => Vec::new(),
        };
        (!actions.is_empty()).then_some(Access { actions, ..wanted })
    }
}
