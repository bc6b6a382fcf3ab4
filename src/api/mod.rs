//! The HTTP API. A request becomes an [`Endpoint`], which knows its [`Action`]; it is checked
//! once here (authorisation will sit at that one point) and dispatched to the handler of its
//! resource, one file per resource. Handlers are thin: they parse headers, call one
//! [`Registry`] method and shape the response.

mod base;
mod blobs;
mod body;
mod catalog;
pub mod client;
pub mod endpoint;
pub mod error;
mod manifests;
pub mod observe;
mod referrers;
mod tags;
mod token;
mod uploads;

use actix_web::http::header::HeaderMap;
use actix_web::http::Method;
use actix_web::{web, HttpMessage, HttpRequest, HttpResponse};

pub use endpoint::{Action, Endpoint};
pub use error::ApiError;

use crate::auth::{Auth, Identity, Needs, Permission, Principal};
use crate::notify::{self, ActorRecord, Notifier, RequestRecord, Target};
use crate::registry::Registry;

pub const API_VERSION_HEADER: (&str, &str) = ("Docker-Distribution-API-Version", "registry/2.0");
pub const DIGEST_HEADER: &str = "Docker-Content-Digest";
pub const UPLOAD_UUID_HEADER: &str = "Docker-Upload-UUID";

/// What every request handler shares.
pub struct AppState {
    pub registry: Registry,
    pub urls: Urls,
    /// `None`: an open registry.
    pub auth: Option<Auth>,
    /// `storage.maintenance.readonly`: pushes and deletes are refused.
    pub read_only: bool,
    /// `http.bodyidletimeout`: how long a request body may send nothing.
    pub body_idle: std::time::Duration,
    /// Health checks: `GET /v2/` answers `503 UNAVAILABLE` while one is unhealthy.
    pub health: crate::health::Health,
    /// Webhook notifications (`notifications.endpoints`); a no-op without endpoints.
    pub notifier: Notifier,
    /// Caps on open upload sessions (`uploads`).
    pub upload_quota: crate::upload::quota::UploadQuota,
}

impl AppState {
    /// Emits a notification of `action` by `req`'s caller on the target `target` builds, after
    /// the operation succeeded. Nothing is built when no endpoint listens; never waits for one.
    pub fn notify(
        &self,
        req: &HttpRequest,
        action: notify::Action,
        target: impl FnOnce() -> Target,
    ) {
        if !self.notifier.is_enabled() {
            return;
        }
        let client = client::client(req);
        let request = RequestRecord {
            id: uuid::Uuid::new_v4().to_string(),
            addr: client.addr.map(|a| a.to_string()).unwrap_or_default(),
            host: client.host,
            method: req.method().to_string(),
            useragent: header_str(req.headers(), "user-agent")
                .unwrap_or_default()
                .to_string(),
        };
        let actor = ActorRecord {
            name: match req.extensions().get::<Principal>().map(|p| &p.identity) {
                Some(Identity::User(name)) => name.clone(),
                _ => String::new(),
            },
        };
        self.notifier.emit(action, target(), request, actor);
    }
}

/// How `Location` headers are written.
#[derive(Debug, Clone, Default)]
pub struct Urls {
    /// A configured external base URL (`http.host`).
    pub host: Option<String>,
    /// `http.relativeurls`: answer paths only.
    pub relative: bool,
    /// `http.prefix` (`/my/registry`, or empty): the path the API is served under.
    pub prefix: String,
}

impl Urls {
    /// The URL a client should use for `path`, as seen from the client: behind a trusted proxy,
    /// the `Forwarded`/`X-Forwarded-Proto`/`X-Forwarded-Host` headers name the public address.
    pub fn location(&self, req: &HttpRequest, path: &str) -> String {
        let path = &self.prefixed(path);
        if self.relative {
            return path.to_string();
        }
        if let Some(host) = &self.host {
            return format!("{}{path}", host.trim_end_matches('/'));
        }
        let client = client::client(req);
        format!("{}://{}{path}", client.scheme, client.host)
    }

    /// `path` (`/v2/…`) under the configured prefix.
    pub fn prefixed(&self, path: &str) -> String {
        format!("{}{path}", self.prefix)
    }

    /// The API path of `path` as requested (`/my/registry/v2/…` → `/v2/…`); `None` when the
    /// request is outside the prefix.
    pub fn api_path<'a>(&self, path: &'a str) -> Option<&'a str> {
        if self.prefix.is_empty() {
            return Some(path);
        }
        path.strip_prefix(self.prefix.as_str())
            .filter(|rest| rest.starts_with('/'))
    }
}

/// A request's query parameters, repeated keys kept (`?tag=a&tag=b`).
pub struct Query(Vec<(String, String)>);

impl Query {
    pub fn parse(query: &str) -> Query {
        Query(
            form_urlencoded::parse(query.as_bytes())
                .into_owned()
                .collect(),
        )
    }

    pub fn get(&self, key: &str) -> Option<&str> {
        self.0
            .iter()
            .find(|(k, _)| k == key)
            .map(|(_, v)| v.as_str())
    }

    pub fn all(&self, key: &str) -> Vec<&str> {
        self.0
            .iter()
            .filter(|(k, _)| k == key)
            .map(|(_, v)| v.as_str())
            .collect()
    }
}

/// The request's `Content-Length`, if it sent one.
pub fn content_length(headers: &HeaderMap) -> Option<u64> {
    headers
        .get(actix_web::http::header::CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.trim().parse().ok())
}

pub fn header_str<'a>(headers: &'a HeaderMap, name: &str) -> Option<&'a str> {
    headers.get(name).and_then(|v| v.to_str().ok())
}

/// Registers the API: one catch-all service that parses and dispatches.
pub fn configure(cfg: &mut web::ServiceConfig) {
    cfg.default_service(web::to(dispatch));
}

async fn dispatch(
    req: HttpRequest,
    body: web::Payload,
    state: web::Data<AppState>,
) -> Result<HttpResponse, ApiError> {
    let query = Query::parse(req.query_string());
    if let Some(auth) = &state.auth {
        if auth.issuer_path() == Some(req.path()) {
            req.extensions_mut().insert(observe::Route("token"));
            return token::get(auth, &req, &query).await;
        }
    }
    let path = state
        .urls
        .api_path(req.path())
        .ok_or_else(ApiError::not_found)?;
    let endpoint = Endpoint::parse(req.method(), path)?.ok_or_else(ApiError::not_found)?;
    req.extensions_mut().insert(observe::Route(endpoint.kind()));
    if endpoint == Endpoint::Base && !state.health.healthy() {
        return Err(ApiError::new(
            actix_web::http::StatusCode::SERVICE_UNAVAILABLE,
            "UNAVAILABLE",
            "the registry is unhealthy (a health check fails; see /debug/health on the debug \
             listener)",
        )
        .with_header(actix_web::http::header::RETRY_AFTER, "10".into()));
    }
    let action = endpoint
        .action(req.method())
        .ok_or_else(ApiError::method_not_allowed)?;
    let principal = authorize(&state, &req, &endpoint, action).await?;
    if state.read_only && matches!(action, Action::Push | Action::Delete) {
        return Err(ApiError::new(
            actix_web::http::StatusCode::METHOD_NOT_ALLOWED,
            "UNSUPPORTED",
            "the registry is in read-only mode (storage.maintenance.readonly): pushes and \
             deletes are refused",
        ));
    }
    req.extensions_mut().insert(principal);
    let body = body::idle_limited(body, state.body_idle);
    let reg = &state.registry;
    let method = req.method().clone();
    match endpoint {
        Endpoint::Base => Ok(base::get()),
        Endpoint::Catalog => catalog::get(&state, &req, &query).await,
        Endpoint::Tags { repo } => tags::get(reg, &state.urls, &repo, &query).await,
        Endpoint::Referrers { repo, digest } => referrers::get(reg, &repo, &digest, &query).await,
        Endpoint::Blob { repo, digest } => match method {
            Method::GET => blobs::get(&state, &req, &repo, &digest).await,
            Method::HEAD => blobs::head(reg, &repo, &digest).await,
            _ => blobs::delete(&state, &req, &repo, &digest).await,
        },
        Endpoint::Manifest { repo, reference } => match method {
            Method::GET => manifests::get(&state, &req, &repo, &reference, false).await,
            Method::HEAD => manifests::get(&state, &req, &repo, &reference, true).await,
            Method::PUT => manifests::put(&state, &req, body, &repo, &reference, &query).await,
            _ => manifests::delete(&state, &req, &repo, &reference).await,
        },
        Endpoint::UploadStart { repo } => uploads::start(&state, &req, body, &repo, &query).await,
        Endpoint::Upload { repo, id } => match method {
            Method::GET => uploads::status(&state, &req, &repo, &id).await,
            Method::PATCH => uploads::patch(&state, &req, body, &repo, &id).await,
            Method::PUT => uploads::put(&state, &req, body, &repo, &id, &query).await,
            _ => uploads::cancel(&state, &repo, &id).await,
        },
    }
}

/// Checks the request's credentials against what `action` on `endpoint` needs, once, before
/// dispatch. An open registry lets everybody in.
async fn authorize(
    state: &AppState,
    req: &HttpRequest,
    endpoint: &Endpoint,
    action: Action,
) -> Result<Principal, ApiError> {
    let Some(auth) = &state.auth else {
        return Ok(Principal::open());
    };
    let permission = match action {
        Action::Login => None,
        Action::Pull => Some(Permission::Pull),
        Action::Push => Some(Permission::Push),
        Action::Delete => Some(Permission::Delete),
        Action::Catalog => Some(Permission::Catalog),
    };
    let needs = Needs {
        permission,
        repo: endpoint.repo().map(|r| r.as_str()),
    };
    let authorization = header_str(req.headers(), "authorization");
    let peer = client::client(req).addr;
    Ok(auth.authorize(peer, authorization, &needs).await?)
}

/// The `Link` header of a paginated listing whose last item was `next_after`.
pub fn listing_link(path: &str, n: Option<usize>, next_after: Option<&str>) -> Option<String> {
    let last = next_after?;
    let n = n.unwrap_or(crate::registry::DEFAULT_CATALOG_PAGE);
    let last: String = form_urlencoded::byte_serialize(last.as_bytes()).collect();
    Some(format!("<{path}?n={n}&last={last}>; rel=\"next\""))
}
