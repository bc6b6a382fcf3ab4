//! Who a request comes from and what it may do: one [`Auth`] checks every request once, before
//! dispatch, from its `Authorization` header and what it [`Needs`].
//!
//! Logins are htpasswd users (`Basic`), Bearer tokens of the Docker token specification from an
//! external token server, or both, with berth as its own token server for its htpasswd users
//! (`/token`, [`Auth::issue_token`]). What a user may do comes from the access rules
//! ([`access`]); what a token holder may do comes from the token's `access` claim, which berth's
//! own issuer fills from the same rules. Failed logins are counted per client address
//! ([`throttle`]). Credentials are never logged; messages never repeat them.

pub mod access;
pub mod htpasswd;
mod issue;
pub mod throttle;
pub mod token;

use std::net::IpAddr;
use std::sync::Arc;
use std::time::{Duration, SystemTime};

use base64::Engine as _;
use thiserror::Error;

pub use access::{AccessRules, Identity, Permission};
use htpasswd::Htpasswd;
pub use issue::IssuedToken;
use throttle::{Refusal, Throttle};
use token::{Access, Grant, TokenIssuer, TokenVerifier};

use crate::config::AuthConfig;

#[derive(Debug, Error)]
pub enum AuthError {
    /// No, or wrong, credentials: answered 401 with a challenge telling the client how to log in.
    #[error("{message}")]
    Unauthorized { challenge: String, message: String },
    /// Logged in, but the rules do not allow it: 403.
    #[error("{0}")]
    Denied(String),
    /// Too many failed logins from this address: 429 with `Retry-After`.
    #[error("too many failed logins from this address; retry in {} s", whole_seconds(*.0))]
    TooManyAttempts(Duration),
    /// No capacity for costly work now (password checks overall, token requests from this
    /// address): 429 with `Retry-After`; nothing was hashed or signed.
    #[error("{reason}; retry in {} s", whole_seconds(*wait))]
    Overloaded {
        wait: Duration,
        reason: &'static str,
    },
    #[error("authentication set-up: {0}")]
    Setup(String),
}

/// Seconds to wait, rounded up: a client waiting this long is not refused again.
pub fn whole_seconds(wait: Duration) -> u64 {
    wait.as_secs() + u64::from(wait.subsec_nanos() > 0)
}

/// What a request needs: a login only (`/v2/`), or a permission on a repository.
#[derive(Debug, Clone, Copy)]
pub struct Needs<'a> {
    pub permission: Option<Permission>,
    pub repo: Option<&'a str>,
}

/// Who a request was found to be, and what its token grants: kept with the request, so that a
/// handler can ask about a second repository (the source of a mount).
#[derive(Debug, Clone)]
pub struct Principal {
    pub identity: Identity,
    grant: Option<Grant>,
}

impl Principal {
    /// The caller of an open registry.
    pub fn open() -> Principal {
        Principal {
            identity: Identity::Anonymous,
            grant: None,
        }
    }
}

/// How clients log in.
enum Login {
    Htpasswd {
        realm: String,
        users: Arc<Htpasswd>,
    },
    Token {
        realm: String,
        service: String,
        verifier: Box<TokenVerifier>,
        /// berth as its own token server: its users and its signing key.
        issuer: Option<(Arc<Htpasswd>, Arc<TokenIssuer>)>,
    },
}

/// Who a request's credentials say it is.
enum Caller {
    Anonymous,
    User(String),
    Token(Grant),
}

pub struct Auth {
    login: Login,
    rules: AccessRules,
    throttle: Throttle,
    /// Token requests per address (each costs a signature).
    token_requests: Throttle,
    /// berth's own token endpoint: the realm's path, when berth issues tokens.
    issuer_path: Option<String>,
}

impl Auth {
    /// `None` when no login method is configured: an open registry.
    pub fn from_config(config: &AuthConfig) -> Result<Option<Auth>, AuthError> {
        let setup = |e: &dyn std::fmt::Display| AuthError::Setup(e.to_string());
        let users = match &config.htpasswd {
            Some(h) => Some((
                h.realm.clone(),
                Arc::new(Htpasswd::open(&h.path).map_err(|e| setup(&e))?),
            )),
            None => None,
        };
        let login = match (&config.token, users) {
            (None, None) => return Ok(None),
            (None, Some((realm, users))) => Login::Htpasswd { realm, users },
            (Some(token), users) => {
                let verifier = Box::new(TokenVerifier::from_config(token).map_err(|e| setup(&e))?);
                let issuer = TokenIssuer::from_config(token).map_err(|e| setup(&e))?;
                Login::Token {
                    realm: token.realm.clone(),
                    service: token.service.clone(),
                    verifier,
                    issuer: users
                        .zip(issuer)
                        .map(|((_, users), issuer)| (users, Arc::new(issuer))),
                }
            }
        };
        let rules = AccessRules::from_config(config.access.as_deref()).map_err(|e| setup(&e))?;
        let issuer_path = match &login {
            Login::Token {
                realm,
                issuer: Some(_),
                ..
            } => Some(url_path(realm)),
            _ => None,
        };
        Ok(Some(Auth {
            login,
            rules,
            throttle: Throttle::new(config.failedloginsperminute, password_checks_at_once()),
            token_requests: Throttle::new(config.tokenrequestsperminute, usize::MAX),
            issuer_path,
        }))
    }

    /// A line for the start-up log.
    pub fn describe(&self) -> String {
        let rules = if self.rules.configured() {
            "access rules"
        } else {
            "every user may do everything"
        };
        match &self.login {
            Login::Htpasswd { users, .. } => {
                format!("htpasswd, {} user(s), {rules}", users.user_count())
            }
            Login::Token {
                issuer: Some((users, _)),
                ..
            } => {
                format!(
                    "tokens issued by berth for {} htpasswd user(s), {rules}",
                    users.user_count()
                )
            }
            Login::Token { .. } => "tokens from an external token server".to_string(),
        }
    }

    /// Whether a mount that names no source repository may link any blob the registry holds:
    /// only when every caller allowed to push may also read every repository (no rules, no
    /// scoped tokens). Otherwise such a mount would reveal — and hand out — blobs of
    /// repositories the caller cannot read.
    pub fn may_mount_unnamed(&self) -> bool {
        matches!(self.login, Login::Htpasswd { .. }) && !self.rules.configured()
    }

    /// Checks one request: who it is, and whether it may do what it needs.
    pub async fn authorize(
        &self,
        peer: Option<IpAddr>,
        authorization: Option<&str>,
        needs: &Needs<'_>,
    ) -> Result<Principal, AuthError> {
        let caller = self.identify(peer, authorization, needs).await?;
        let mut grant = None;
        let (identity, allowed) = match caller {
            Caller::Token(g) => {
                let allowed = self.token_allows(&g, needs);
                let identity = Identity::User(g.subject.clone());
                grant = Some(g);
                (identity, allowed)
            }
            Caller::User(user) => {
                let identity = Identity::User(user);
                let allowed = self.rules_allow(&identity, needs);
                (identity, allowed)
            }
            Caller::Anonymous => {
                // `/v2/` always asks anonymous clients to log in: clients only send their
                // credentials after a challenge, and `docker login` checks them there.
                let allowed = needs.permission.is_some()
                    && matches!(self.login, Login::Htpasswd { .. })
                    && self.rules_allow(&Identity::Anonymous, needs);
                (Identity::Anonymous, allowed)
            }
        };
        if allowed {
            return Ok(Principal { identity, grant });
        }
        let token_mode = matches!(self.login, Login::Token { .. });
        match identity {
            Identity::User(user) if !token_mode || authorization.is_some_and(is_basic) => {
                Err(AuthError::Denied(format!(
                    "{user} may not {} {}",
                    needs.permission.map_or("use", Permission::name),
                    needs.repo.unwrap_or("the catalog"),
                )))
            }
            Identity::User(_) => Err(AuthError::Unauthorized {
                challenge: self.challenge(needs, Some("insufficient_scope")),
                message: "the token does not grant this access".into(),
            }),
            Identity::Anonymous => Err(AuthError::Unauthorized {
                challenge: self.challenge(needs, None),
                message: "authentication required".into(),
            }),
        }
    }

    fn rules_allow(&self, identity: &Identity, needs: &Needs<'_>) -> bool {
        let Some(permission) = needs.permission else {
            return matches!(identity, Identity::User(_));
        };
        self.rules.allows(identity, permission, needs.repo)
    }

    /// Whether an authorised caller may also do `permission` on `repo` (a mount's source).
    pub fn allows(&self, principal: &Principal, permission: Permission, repo: &str) -> bool {
        let needs = Needs {
            permission: Some(permission),
            repo: Some(repo),
        };
        match &principal.grant {
            Some(grant) => self.token_allows(grant, &needs),
            None => self.rules_allow(&principal.identity, &needs),
        }
    }

    /// Whether `principal`, allowed to list the catalog, sees `repo` in it: exactly the
    /// repositories it may pull. A token berth issued is read through the access rules for its
    /// subject (its `registry:catalog:*` only says the rules let the subject list); one from an
    /// external token server lists every repository, as that server decided.
    pub fn lists(&self, principal: &Principal, repo: &str) -> bool {
        match &principal.grant {
            Some(grant) if grant.issued_here => {
                // berth's issuer names anonymous callers `-` (Identity::name).
                let subject = match grant.subject.as_str() {
                    "-" => Identity::Anonymous,
                    user => Identity::User(user.to_string()),
                };
                self.rules.allows(&subject, Permission::Pull, Some(repo))
            }
            Some(_) => true,
            None => self
                .rules
                .allows(&principal.identity, Permission::Pull, Some(repo)),
        }
    }

    fn token_allows(&self, grant: &Grant, needs: &Needs<'_>) -> bool {
        scopes(needs).iter().all(|wanted| {
            wanted
                .actions
                .iter()
                .all(|action| grants(grant, &wanted.kind, &wanted.name, action))
        })
    }

    /// The `WWW-Authenticate` value for a request that needs `needs`.
    fn challenge(&self, needs: &Needs<'_>, error: Option<&str>) -> String {
        match &self.login {
            Login::Htpasswd { realm, .. } => format!("Basic realm={}", quoted(realm)),
            Login::Token { realm, service, .. } => {
                let mut value =
                    format!("Bearer realm={},service={}", quoted(realm), quoted(service));
                let scope: Vec<String> = scopes(needs).iter().map(scope_text).collect();
                if !scope.is_empty() {
                    value.push_str(&format!(",scope={}", quoted(&scope.join(" "))));
                }
                if let Some(error) = error {
                    value.push_str(&format!(",error={}", quoted(error)));
                }
                value
            }
        }
    }

    /// Reads the credentials. Password checks are guarded by the failed-login throttle (see
    /// [`throttle`]); tokens cost nothing to check and are not.
    async fn identify(
        &self,
        peer: Option<IpAddr>,
        authorization: Option<&str>,
        needs: &Needs<'_>,
    ) -> Result<Caller, AuthError> {
        let Some(authorization) = authorization else {
            return Ok(Caller::Anonymous);
        };
        let caller = match (split_scheme(authorization), &self.login) {
            (Some(("basic", credentials)), Login::Htpasswd { users, .. })
            | (
                Some(("basic", credentials)),
                Login::Token {
                    issuer: Some((users, _)),
                    ..
                },
            ) => check_password(users, credentials, &self.throttle, peer)
                .await?
                .map(Caller::User),
            (Some(("bearer", token)), Login::Token { verifier, .. }) => verifier
                .verify(token, SystemTime::now())
                .map(Caller::Token)
                .map_err(|e| {
                    log::info!("refused a token from {}: {e}", peer_name(peer));
                    "invalid or expired token".to_string()
                }),
            _ => Err("unsupported authorization scheme".to_string()),
        };
        caller.map_err(|message| AuthError::Unauthorized {
            challenge: self.challenge(
                needs,
                matches!(self.login, Login::Token { .. }).then_some("invalid_token"),
            ),
            message,
        })
    }
}

/// The token scopes a request needs (the challenge's `scope`, and what a token must grant).
fn scopes(needs: &Needs<'_>) -> Vec<Access> {
    let access = |kind: &str, name: &str, actions: &[&str]| Access {
        kind: kind.to_string(),
        name: name.to_string(),
        actions: actions.iter().map(|a| a.to_string()).collect(),
    };
    let mut scopes = Vec::new();
    match (needs.permission, needs.repo) {
        (Some(Permission::Catalog), _) => scopes.push(access("registry", "catalog", &["*"])),
        (Some(Permission::Pull), Some(repo)) => scopes.push(access("repository", repo, &["pull"])),
        (Some(Permission::Push), Some(repo)) => {
            scopes.push(access("repository", repo, &["pull", "push"]))
        }
        (Some(Permission::Delete), Some(repo)) => {
            scopes.push(access("repository", repo, &["delete"]))
        }
        _ => {}
    }
    scopes
}

/// Whether a token's `access` claim allows `action` on `kind:name` (`*` allows every action).
fn grants(grant: &Grant, kind: &str, name: &str, action: &str) -> bool {
    grant.access.iter().any(|a| {
        a.kind == kind && a.name == name && a.actions.iter().any(|x| x == action || x == "*")
    })
}

/// `repository:a/b:pull,push`
fn scope_text(access: &Access) -> String {
    format!(
        "{}:{}:{}",
        access.kind,
        access.name,
        access.actions.join(",")
    )
}

/// Checks `Basic` credentials (`base64(user:password)`): the user's name, or why not. A recent
/// success is remembered; otherwise the bcrypt check runs on the blocking pool, guarded by the
/// throttle (`Err(TooManyAttempts)` when the address is locked out, `Err(Overloaded)` when too
/// many checks run already).
async fn check_password(
    users: &Arc<Htpasswd>,
    credentials: &str,
    throttle: &Throttle,
    peer: Option<IpAddr>,
) -> Result<Result<String, String>, AuthError> {
    let malformed = || Ok(Err("malformed Basic credentials".to_string()));
    let Ok(decoded) = base64::engine::general_purpose::STANDARD.decode(credentials.trim()) else {
        return malformed();
    };
    let Ok(decoded) = String::from_utf8(decoded) else {
        return malformed();
    };
    let Some((user, password)) = decoded.split_once(':') else {
        return malformed();
    };
    // Refused before any work: bcrypt would ignore the bytes past the 72nd (see htpasswd).
    if password.len() > htpasswd::MAX_PASSWORD_BYTES {
        return Ok(Err(format!(
            "passwords longer than {} bytes are refused",
            htpasswd::MAX_PASSWORD_BYTES
        )));
    }
    if users.verify_remembered(user, password) == Some(true) {
        return Ok(Ok(user.to_string()));
    }
    // The same credentials checked by another request meanwhile get its answer: a burst of
    // fresh logins with one password costs one bcrypt check, not a refusal by the cap.
    let shared = users.shared_check(user, password);
    let ok = shared
        .result(async {
            let attempt = throttle.begin(peer).map_err(|refusal| match refusal {
                Refusal::Exhausted(wait) => AuthError::TooManyAttempts(wait),
                Refusal::Busy(wait, reason) => AuthError::Overloaded { wait, reason },
            })?;
            let (users, name, password) = (users.clone(), user.to_string(), password.to_string());
            let ok = actix_web::web::block(move || users.verify(&name, &password))
                .await
                .unwrap_or(false);
            if !ok {
                attempt.failed();
            }
            Ok(ok)
        })
        .await?;
    if ok {
        Ok(Ok(user.to_string()))
    } else {
        Ok(Err("wrong user name or password".to_string()))
    }
}

/// Password checks allowed at once overall: bcrypt is pure CPU, so about one per core; more
/// only slow everything else down, the requests of users already logged in included, and make
/// every check slower. (Half the cores was measured no kinder to a concurrent pull here.)
fn password_checks_at_once() -> usize {
    std::thread::available_parallelism().map_or(2, usize::from)
}

/// `("basic", rest)` from `Basic rest`; the scheme lower-cased.
fn split_scheme(authorization: &str) -> Option<(&'static str, &str)> {
    let (scheme, rest) = authorization.trim().split_once(' ')?;
    let scheme = if scheme.eq_ignore_ascii_case("basic") {
        "basic"
    } else if scheme.eq_ignore_ascii_case("bearer") {
        "bearer"
    } else {
        return None;
    };
    Some((scheme, rest.trim()))
}

fn is_basic(authorization: &str) -> bool {
    matches!(split_scheme(authorization), Some(("basic", _)))
}

fn quoted(s: &str) -> String {
    format!("\"{}\"", s.replace('\\', "\\\\").replace('"', "\\\""))
}

fn peer_name(peer: Option<IpAddr>) -> String {
    peer.map_or_else(|| "an unknown address".to_string(), |p| p.to_string())
}

/// The path of an absolute URL (`https://host/token` → `/token`), or the string if it is one.
fn url_path(url: &str) -> String {
    let after_scheme = url.split_once("://").map_or(url, |(_, rest)| rest);
    let path = if url.contains("://") {
        after_scheme.find('/').map_or("/", |i| &after_scheme[i..])
    } else {
        after_scheme
    };
    path.split(['?', '#']).next().unwrap_or("/").to_string()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn realm_paths() {
        assert_eq!(url_path("https://registry.example.com/token"), "/token");
        assert_eq!(
            url_path("http://127.0.0.1:5000/auth/token?x=1"),
            "/auth/token"
        );
        assert_eq!(url_path("https://host"), "/");
        assert_eq!(url_path("/token"), "/token");
    }

    #[test]
    fn schemes_and_quoting() {
        assert_eq!(split_scheme("Basic YWJj"), Some(("basic", "YWJj")));
        assert_eq!(split_scheme("bearer  x.y.z "), Some(("bearer", "x.y.z")));
        assert_eq!(split_scheme("Digest x"), None);
        assert_eq!(quoted(r#"a "b" \c"#), r#""a \"b\" \\c""#);
    }

    #[actix_web::test]
    async fn concurrent_checks_of_the_same_credentials_share_one_bcrypt() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("htpasswd");
        let hash = bcrypt::hash("pw", 4).unwrap();
        std::fs::write(&path, format!("alice:{hash}\nbob:{hash}\n")).unwrap();
        let users = Arc::new(Htpasswd::open(&path).unwrap());
        // Room for one check at a time: a second one of its own would be refused.
        let throttle = Throttle::new(10, 1);
        let basic =
            |u: &str, p: &str| base64::engine::general_purpose::STANDARD.encode(format!("{u}:{p}"));
        let (alice, bob) = (basic("alice", "pw"), basic("bob", "pw"));
        let peer = Some(IpAddr::from([10, 0, 0, 1]));
        let (a, b, c) = futures_util::join!(
            check_password(&users, &alice, &throttle, peer),
            check_password(&users, &alice, &throttle, peer),
            check_password(&users, &bob, &throttle, peer),
        );
        assert_eq!(a.unwrap(), Ok("alice".to_string()));
        assert_eq!(
            b.unwrap(),
            Ok("alice".to_string()),
            "waited for the first check"
        );
        assert!(
            matches!(c, Err(AuthError::Overloaded { .. })),
            "other credentials are not shared: {:?}",
            c.map_err(|e| e.to_string())
        );
        // Wrong passwords are shared alike, and count once.
        let wrong = basic("bob", "guess");
        let (d, e) = futures_util::join!(
            check_password(&users, &wrong, &throttle, peer),
            check_password(&users, &wrong, &throttle, peer),
        );
        assert!(d.unwrap().is_err() && e.unwrap().is_err());
        assert_eq!(users.checks_in_flight(), 0, "nothing left behind");
    }

    #[test]
    fn scopes_of_needs() {
        let push = Needs {
            permission: Some(Permission::Push),
            repo: Some("a/b"),
        };
        let got: Vec<String> = scopes(&push).iter().map(scope_text).collect();
        assert_eq!(got, ["repository:a/b:pull,push"]);
        let catalog = Needs {
            permission: Some(Permission::Catalog),
            repo: None,
        };
        assert_eq!(scopes(&catalog)[0].kind, "registry");
    }
}
