//! `GET /v2/<name>/referrers/<digest>`: an image index of the manifests whose subject it is.

use actix_web::HttpResponse;
use serde_json::json;

use super::{ApiError, Query};
use crate::oci::manifest::OCI_INDEX;
use crate::oci::{Digest, RepoName};
use crate::registry::Registry;

pub async fn get(
    reg: &Registry,
    repo: &RepoName,
    subject: &Digest,
    query: &Query,
) -> Result<HttpResponse, ApiError> {
    let filter = query.get("artifactType").filter(|s| !s.is_empty());
    let manifests = reg.referrers(repo, subject, filter).await?;
    let mut response = HttpResponse::Ok();
    response.content_type(OCI_INDEX);
    if filter.is_some() {
        response.insert_header(("OCI-Filters-Applied", "artifactType"));
    }
    Ok(response.body(
        json!({
            "schemaVersion": 2,
            "mediaType": OCI_INDEX,
            "manifests": manifests,
        })
        .to_string(),
    ))
}
