//! `GET`/`HEAD`/`PUT`/`DELETE /v2/<name>/manifests/<reference>`.

use actix_web::http::header::{ACCEPT, CONTENT_TYPE, ETAG, LOCATION};
use actix_web::{HttpRequest, HttpResponse};
use bytes::BytesMut;
use futures_util::StreamExt;

use super::blobs::head_body;
use super::body::Body;
use super::{header_str, ApiError, AppState, Query, DIGEST_HEADER};
use crate::oci::manifest::MAX_MANIFEST_SIZE;
use crate::oci::{Reference, RepoName, Tag};
use crate::registry::{Registry, RegistryError};

pub async fn get(
    reg: &Registry,
    req: &HttpRequest,
    repo: &RepoName,
    reference: &Reference,
    head_only: bool,
) -> Result<HttpResponse, ApiError> {
    let accept: Vec<&str> = req
        .headers()
        .get_all(ACCEPT)
        .filter_map(|v| v.to_str().ok())
        .collect();
    let manifest = reg.get_manifest(repo, reference, &accept).await?;
    let mut response = HttpResponse::Ok();
    response
        .insert_header((CONTENT_TYPE, manifest.media_type.as_str()))
        .insert_header((DIGEST_HEADER, manifest.digest.to_string()))
        .insert_header((ETAG, format!("\"{}\"", manifest.digest)));
    if head_only {
        Ok(response.body(head_body(manifest.bytes.len() as u64)))
    } else {
        Ok(response.body(manifest.bytes))
    }
}

pub async fn put(
    state: &AppState,
    req: &HttpRequest,
    mut body: Body,
    repo: &RepoName,
    reference: &Reference,
    query: &Query,
) -> Result<HttpResponse, ApiError> {
    let too_large = || ApiError::from(RegistryError::ManifestTooLarge(MAX_MANIFEST_SIZE));
    if super::content_length(req.headers()).is_some_and(|l| l > MAX_MANIFEST_SIZE as u64) {
        return Err(too_large());
    }
    let mut bytes = BytesMut::new();
    while let Some(chunk) = body.next().await {
        let chunk = chunk.map_err(|e| {
            ApiError::new(
                actix_web::http::StatusCode::BAD_REQUEST,
                "MANIFEST_INVALID",
                format!("reading the manifest failed: {e}"),
            )
        })?;
        if bytes.len() + chunk.len() > MAX_MANIFEST_SIZE {
            return Err(too_large());
        }
        bytes.extend_from_slice(&chunk);
    }
    let extra_tags = query
        .all("tag")
        .into_iter()
        .map(str::parse::<Tag>)
        .collect::<Result<Vec<_>, _>>()?;
    let pushed = state
        .registry
        .put_manifest(
            repo,
            reference,
            bytes.freeze(),
            header_str(req.headers(), CONTENT_TYPE.as_str()),
            &extra_tags,
        )
        .await?;
    let location = state
        .urls
        .location(req, &format!("/v2/{repo}/manifests/{}", pushed.digest));
    let mut response = HttpResponse::Created();
    response
        .insert_header((LOCATION, location))
        .insert_header((DIGEST_HEADER, pushed.digest.to_string()));
    if let Some(subject) = &pushed.subject {
        response.insert_header(("OCI-Subject", subject.to_string()));
    }
    if !extra_tags.is_empty() {
        for tag in &pushed.tags {
            response.append_header(("OCI-Tag", tag.to_string()));
        }
    }
    Ok(response.finish())
}

pub async fn delete(
    reg: &Registry,
    repo: &RepoName,
    reference: &Reference,
) -> Result<HttpResponse, ApiError> {
    let digest = reg.delete_manifest(repo, reference).await?;
    Ok(HttpResponse::Accepted()
        .insert_header((DIGEST_HEADER, digest.to_string()))
        .finish())
}
