//! `GET /v2/_catalog`: the repositories the caller may pull (see [`crate::auth::Auth::lists`]).

use actix_web::{HttpMessage, HttpRequest, HttpResponse};
use serde_json::json;

use super::listing_link;
use super::{ApiError, AppState, Query};
use crate::auth::Principal;
use crate::registry::parse_n;

pub async fn get(
    state: &AppState,
    req: &HttpRequest,
    query: &Query,
) -> Result<HttpResponse, ApiError> {
    let n = parse_n(query.get("n"))?;
    let principal = req
        .extensions()
        .get::<Principal>()
        .cloned()
        .unwrap_or_else(Principal::open);
    let visible = |name: &str| {
        state
            .auth
            .as_ref()
            .is_none_or(|auth| auth.lists(&principal, name))
    };
    let page = state
        .registry
        .catalog(n, query.get("last"), visible)
        .await?;
    let mut response = HttpResponse::Ok();
    if let Some(link) = listing_link(
        &state.urls.prefixed("/v2/_catalog"),
        n,
        page.next_after.as_deref(),
    ) {
        response.insert_header(("Link", link));
    }
    Ok(response.json(json!({ "repositories": page.items })))
}
