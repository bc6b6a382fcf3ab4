//! `GET /v2/_catalog`.

use actix_web::HttpResponse;
use serde_json::json;

use super::listing_link;
use super::{ApiError, Query};
use crate::registry::{parse_n, Registry};

pub async fn get(reg: &Registry, query: &Query) -> Result<HttpResponse, ApiError> {
    let n = parse_n(query.get("n"))?;
    let page = reg.catalog(n, query.get("last")).await?;
    let mut response = HttpResponse::Ok();
    if let Some(link) = listing_link("/v2/_catalog", n, page.next_after.as_deref()) {
        response.insert_header(("Link", link));
    }
    Ok(response.json(json!({ "repositories": page.items })))
}
