//! berth's own token server (`auth.token.signingkey`): `GET <realm path>?service=…&scope=…`
//! with the user's `Basic` credentials, or none for an anonymous token, answers a signed
//! Bearer token granting what the access rules allow of the requested scopes.

use actix_web::http::Method;
use actix_web::{HttpRequest, HttpResponse};
use serde_json::json;

use super::{header_str, ApiError, Query};
use crate::auth::Auth;

pub async fn get(auth: &Auth, req: &HttpRequest, query: &Query) -> Result<HttpResponse, ApiError> {
    // containerd tries an OAuth2 POST first and falls back to GET on 405.
    if req.method() != Method::GET {
        return Err(ApiError::method_not_allowed());
    }
    let issued = auth
        .issue_token(
            super::client::client(req).addr,
            header_str(req.headers(), "authorization"),
            &query.all("scope"),
        )
        .await?;
    let issued_at = chrono::DateTime::<chrono::Utc>::from(issued.issued_at)
        .to_rfc3339_opts(chrono::SecondsFormat::Secs, true);
    Ok(HttpResponse::Ok()
        .insert_header(("Cache-Control", "no-store"))
        .json(json!({
            "token": issued.token,
            "access_token": issued.token,
            "expires_in": issued.expires_in.as_secs(),
            "issued_at": issued_at,
        })))
}
