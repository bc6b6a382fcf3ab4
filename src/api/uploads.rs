//! Blob uploads: `POST /v2/<name>/blobs/uploads/` (new session, single-request push, or mount)
//! and `GET`/`PATCH`/`PUT`/`DELETE /v2/<name>/blobs/uploads/<id>`.

use actix_web::http::header::{LOCATION, RANGE};
use actix_web::{HttpMessage, HttpRequest, HttpResponse};

use super::body::Body;
use super::error::upload_range;
use super::{
    content_length, header_str, ApiError, AppState, Query, DIGEST_HEADER, UPLOAD_UUID_HEADER,
};
use crate::auth::{Identity, Permission, Principal};
use crate::notify::{Action, Target};
use crate::oci::{ContentRange, Digest, RepoName};
use crate::registry::RegistryError;
use crate::upload::quota::Reservation;
use crate::upload::UploadError;

/// 202 with where to continue an upload and how much of it is stored.
fn in_progress(
    state: &AppState,
    req: &HttpRequest,
    repo: &RepoName,
    id: &str,
    offset: u64,
) -> HttpResponse {
    let mut response = if req.method() == actix_web::http::Method::GET {
        HttpResponse::NoContent()
    } else {
        HttpResponse::Accepted()
    };
    response
        .insert_header((
            LOCATION,
            state
                .urls
                .location(req, &format!("/v2/{repo}/blobs/uploads/{id}")),
        ))
        .insert_header((RANGE, upload_range(offset)))
        .insert_header((UPLOAD_UUID_HEADER, id))
        .finish()
}

/// The push (or, with `from`, mount) event of a blob now in `repo`.
fn notify_blob(
    state: &AppState,
    req: &HttpRequest,
    repo: &RepoName,
    digest: &Digest,
    size: u64,
    action: Action,
    from: Option<&RepoName>,
) {
    state.notify(req, action, || {
        let url = state
            .urls
            .location(req, &format!("/v2/{repo}/blobs/{digest}"));
        let target = Target::blob(repo.as_str(), &digest.to_string(), size, url);
        match from {
            Some(from) => target.from_repository(from.as_str()),
            None => target,
        }
    });
}

/// 201 for a blob now in the repository.
fn created(state: &AppState, req: &HttpRequest, repo: &RepoName, digest: &Digest) -> HttpResponse {
    HttpResponse::Created()
        .insert_header((
            LOCATION,
            state
                .urls
                .location(req, &format!("/v2/{repo}/blobs/{digest}")),
        ))
        .insert_header((DIGEST_HEADER, digest.to_string()))
        .finish()
}

fn content_range(req: &HttpRequest) -> Result<Option<ContentRange>, ApiError> {
    Ok(header_str(req.headers(), "Content-Range")
        .map(ContentRange::parse)
        .transpose()?)
}

fn digest_param(query: &Query) -> Result<Digest, ApiError> {
    let value = query.get("digest").ok_or_else(|| {
        ApiError::new(
            actix_web::http::StatusCode::BAD_REQUEST,
            "DIGEST_INVALID",
            "the digest query parameter is required to complete an upload",
        )
    })?;
    Ok(value.parse()?)
}

/// Whom the request's upload sessions count against: the logged-in user, else the client's
/// address.
fn session_owner(req: &HttpRequest) -> String {
    match req.extensions().get::<Principal>().map(|p| &p.identity) {
        Some(Identity::User(name)) => name.clone(),
        // An IPv6 host has a /64 to pick addresses from.
        _ => match super::client::client(req).addr {
            Some(addr) => format!("anonymous@{}", crate::connections::address_key(addr)),
            None => "anonymous".to_string(),
        },
    }
}

/// The session of a single-request push (`POST ?digest=`): cancelled when the request ends
/// without completing it, its quota place given back once that is done.
struct SingleRequestSession {
    cleanup: Option<(
        actix_web::web::Data<AppState>,
        RepoName,
        String,
        Reservation,
    )>,
}

impl Drop for SingleRequestSession {
    fn drop(&mut self) {
        if let Some((state, repo, id, reservation)) = self.cleanup.take() {
            actix_web::rt::spawn(async move {
                let _ = state.registry.cancel_upload(&repo, &id).await;
                drop(reservation);
            });
        }
    }
}

/// A place for a new session of the caller in `repo`. At a cap, the sessions counted against it
/// are looked up first: one finished or cancelled through another instance no longer counts.
async fn reserve_session(
    state: &AppState,
    req: &HttpRequest,
    repo: &RepoName,
) -> Result<Reservation, ApiError> {
    let quota = &state.upload_quota;
    let owner = session_owner(req);
    let refused = match quota.reserve(repo.as_str(), &owner) {
        Ok(reservation) => return Ok(reservation),
        Err(refused) => refused,
    };
    for (id, session_repo) in quota.to_recheck(&refused, repo.as_str(), &owner) {
        let Ok(session_repo) = session_repo.parse::<RepoName>() else {
            continue;
        };
        if let Err(RegistryError::Upload(UploadError::Unknown(_))) =
            state.registry.upload_status(&session_repo, &id).await
        {
            quota.release(&id);
        }
    }
    Ok(quota.reserve(repo.as_str(), &owner)?)
}

/// Whether the request's caller may pull from `repo`.
fn may_read(state: &AppState, req: &HttpRequest, repo: &RepoName) -> bool {
    let Some(auth) = &state.auth else {
        return true;
    };
    req.extensions()
        .get::<Principal>()
        .is_some_and(|p| auth.allows(p, Permission::Pull, repo.as_str()))
}

pub async fn start(
    state: &AppState,
    req: &HttpRequest,
    body: Body,
    repo: &RepoName,
    query: &Query,
) -> Result<HttpResponse, ApiError> {
    let reg = &state.registry;
    if let Some(mount) = query.get("mount") {
        let digest: Digest = mount.parse()?;
        let from = query.get("from").map(str::parse::<RepoName>);
        let mounted = match &from {
            // A source the caller may not read is treated as unknown: a fresh session, as for
            // any blob that cannot be mounted (clients fall back to uploading it).
            Some(Ok(from)) if may_read(state, req, from) => {
                reg.mount_blob(repo, from, &digest).await?
            }
            Some(_) => None,
            // No source named: the registry may find the blob itself, unless that would hand a
            // caller a blob of a repository it may not read.
            None if state.auth.as_ref().is_none_or(|a| a.may_mount_unnamed()) => {
                reg.mount_known_blob(repo, &digest).await?
            }
            None => None,
        };
        if let Some(size) = mounted {
            let from = from.and_then(Result::ok);
            notify_blob(
                state,
                req,
                repo,
                &digest,
                size,
                Action::Mount,
                from.as_ref(),
            );
            return Ok(created(state, req, repo, &digest));
        }
        // Unknown source: fall back to a fresh session, as the spec asks.
    }
    // Every way on opens a session (a single-request push only for its request).
    let reservation = reserve_session(state, req, repo).await?;
    if query.get("mount").is_none() && query.get("digest").is_some() {
        let digest = digest_param(query)?;
        let id = reg.start_upload(repo, Some(&digest)).await?;
        // The client never learns this upload's id: nothing could resume it, so it goes with
        // the request however that ends (a client gone mid-body drops this handler).
        let mut single = SingleRequestSession {
            cleanup: req
                .app_data::<actix_web::web::Data<AppState>>()
                .cloned()
                .map(|state| (state, repo.clone(), id.clone(), reservation)),
        };
        let completed = reg
            .complete_upload(
                repo,
                &id,
                None,
                content_length(req.headers()),
                body,
                &digest,
            )
            .await;
        let committed = match completed {
            Ok(committed) => {
                single.cleanup = None;
                committed
            }
            Err(e) => {
                if let Some((state, repo, id, _reservation)) = single.cleanup.take() {
                    let _ = state.registry.cancel_upload(&repo, &id).await;
                }
                return Err(e.into());
            }
        };
        notify_blob(
            state,
            req,
            repo,
            &digest,
            committed.size,
            Action::Push,
            None,
        );
        return Ok(created(state, req, repo, &digest));
    }
    let id = reg.start_upload(repo, None).await?;
    reservation.bind(&id);
    let mut response = in_progress(state, req, repo, &id, 0);
    if let Some(size) = reg.storage().preferred_chunk_size() {
        // Any chunk size works (small ones are staged), but chunks of a whole part cost the
        // fewest backend requests.
        response.headers_mut().insert(
            actix_web::http::header::HeaderName::from_static("oci-chunk-min-length"),
            size.into(),
        );
    }
    Ok(response)
}

pub async fn status(
    state: &AppState,
    req: &HttpRequest,
    repo: &RepoName,
    id: &str,
) -> Result<HttpResponse, ApiError> {
    let offset = state.registry.upload_status(repo, id).await?;
    Ok(in_progress(state, req, repo, id, offset))
}

pub async fn patch(
    state: &AppState,
    req: &HttpRequest,
    body: Body,
    repo: &RepoName,
    id: &str,
) -> Result<HttpResponse, ApiError> {
    let range = content_range(req)?;
    let offset = state
        .registry
        .append_upload(repo, id, range, content_length(req.headers()), body)
        .await?;
    state.upload_quota.touch(id);
    Ok(in_progress(state, req, repo, id, offset))
}

pub async fn put(
    state: &AppState,
    req: &HttpRequest,
    body: Body,
    repo: &RepoName,
    id: &str,
    query: &Query,
) -> Result<HttpResponse, ApiError> {
    let digest = digest_param(query)?;
    let range = content_range(req)?;
    let committed = state
        .registry
        .complete_upload(
            repo,
            id,
            range,
            content_length(req.headers()),
            body,
            &digest,
        )
        .await?;
    state.upload_quota.release(id);
    notify_blob(
        state,
        req,
        repo,
        &digest,
        committed.size,
        Action::Push,
        None,
    );
    Ok(created(state, req, repo, &digest))
}

pub async fn cancel(state: &AppState, repo: &RepoName, id: &str) -> Result<HttpResponse, ApiError> {
    state.registry.cancel_upload(repo, id).await?;
    state.upload_quota.release(id);
    Ok(HttpResponse::NoContent().finish())
}
