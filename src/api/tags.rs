//! `GET /v2/<name>/tags/list`.

use actix_web::HttpResponse;
use serde_json::json;

use super::listing_link;
use super::{ApiError, Query, Urls};
use crate::oci::RepoName;
use crate::registry::{parse_n, Registry};

pub async fn get(
    reg: &Registry,
    urls: &Urls,
    repo: &RepoName,
    query: &Query,
) -> Result<HttpResponse, ApiError> {
    let n = parse_n(query.get("n"))?;
    let page = reg.tags(repo, n, query.get("last")).await?;
    let mut response = HttpResponse::Ok();
    let path = urls.prefixed(&format!("/v2/{repo}/tags/list"));
    if let Some(link) = listing_link(&path, n, page.next_after.as_deref()) {
        response.insert_header(("Link", link));
    }
    Ok(response.json(json!({ "name": repo.to_string(), "tags": page.items })))
}
