//! `GET`/`HEAD`/`PUT`/`DELETE /v2/<name>/manifests/<reference>`.

use actix_web::http::header::{ACCEPT, CONTENT_TYPE, ETAG, LOCATION};
use actix_web::{HttpRequest, HttpResponse};
use bytes::BytesMut;
use futures_util::StreamExt;

use super::blobs::head_body;
use super::body::Body;
use super::{header_str, ApiError, AppState, Query, DIGEST_HEADER};
use crate::notify::{Action, Target};
use crate::oci::manifest::MAX_MANIFEST_SIZE;
use crate::oci::{Reference, RepoName, Tag};
use crate::registry::RegistryError;

/// The tag a request named, for events.
fn tag_of(reference: &Reference) -> Option<&str> {
    match reference {
        Reference::Tag(tag) => Some(tag.as_str()),
        Reference::Digest(_) => None,
    }
}

pub async fn get(
    state: &AppState,
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
    let manifest = state
        .registry
        .get_manifest(repo, reference, &accept)
        .await?;
    if !head_only {
        state.notify(req, Action::Pull, || {
            let url =
                (state.urls).location(req, &format!("/v2/{repo}/manifests/{}", manifest.digest));
            Target::manifest(
                repo.as_str(),
                &manifest.digest.to_string(),
                &manifest.media_type,
                manifest.bytes.len() as u64,
                url,
                tag_of(reference),
            )
        });
    }
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
    state.notify(req, Action::Push, || {
        Target::manifest(
            repo.as_str(),
            &pushed.digest.to_string(),
            &pushed.media_type,
            pushed.size,
            location.clone(),
            pushed.tags.first().map(Tag::as_str),
        )
    });
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
    state: &AppState,
    req: &HttpRequest,
    repo: &RepoName,
    reference: &Reference,
) -> Result<HttpResponse, ApiError> {
    let digest = state.registry.delete_manifest(repo, reference).await?;
    state.notify(req, Action::Delete, || {
        Target::deleted(repo.as_str(), &digest.to_string(), tag_of(reference))
    });
    Ok(HttpResponse::Accepted()
        .insert_header((DIGEST_HEADER, digest.to_string()))
        .finish())
}
