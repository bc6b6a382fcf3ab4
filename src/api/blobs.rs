//! `GET`/`HEAD`/`DELETE /v2/<name>/blobs/<digest>`.

use actix_web::body::SizedStream;
use actix_web::http::header::{
    ACCEPT_RANGES, CACHE_CONTROL, CONTENT_RANGE, CONTENT_TYPE, ETAG, RANGE,
};
use actix_web::{HttpRequest, HttpResponse, HttpResponseBuilder};
use bytes::Bytes;

use super::{header_str, ApiError, AppState, DIGEST_HEADER};
use crate::notify::{Action, Target};
use crate::oci::{ByteRange, Digest, RepoName};
use crate::registry::Registry;

fn blob_headers(mut builder: HttpResponseBuilder, digest: &Digest) -> HttpResponseBuilder {
    builder
        .insert_header((DIGEST_HEADER, digest.to_string()))
        .insert_header((ETAG, format!("\"{digest}\"")))
        .insert_header((ACCEPT_RANGES, "bytes"))
        .insert_header((CACHE_CONTROL, "max-age=31536000"))
        .insert_header((CONTENT_TYPE, "application/octet-stream"));
    builder
}

/// A body of `len` bytes that is never sent: a HEAD answer with the right `Content-Length`.
pub fn head_body(
    len: u64,
) -> SizedStream<futures_util::stream::Empty<Result<Bytes, std::io::Error>>> {
    SizedStream::new(len, futures_util::stream::empty())
}

pub async fn head(
    reg: &Registry,
    repo: &RepoName,
    digest: &Digest,
) -> Result<HttpResponse, ApiError> {
    let size = reg.stat_blob(repo, digest).await?;
    Ok(blob_headers(HttpResponse::Ok(), digest).body(head_body(size)))
}

/// The pull event of a blob GET (answered, or redirected to the backend).
fn pulled(state: &AppState, req: &HttpRequest, repo: &RepoName, digest: &Digest, size: u64) {
    state.notify(req, Action::Pull, || {
        let url = state
            .urls
            .location(req, &format!("/v2/{repo}/blobs/{digest}"));
        Target::blob(repo.as_str(), &digest.to_string(), size, url)
    });
}

pub async fn get(
    state: &AppState,
    req: &HttpRequest,
    repo: &RepoName,
    digest: &Digest,
) -> Result<HttpResponse, ApiError> {
    let reg = &state.registry;
    // Other units and multi-range requests are answered whole, as RFC 9110 allows; an invalid
    // byte range (`bytes=500-0`) is unsatisfiable.
    let range = match header_str(req.headers(), RANGE.as_str()).map(ByteRange::parse_header) {
        None => None,
        Some(Ok(r)) => r,
        Some(Err(_)) => Some(ByteRange::Invalid),
    };
    if let Some((url, size)) = reg.blob_redirect(repo, digest).await? {
        pulled(state, req, repo, digest, size);
        return Ok(HttpResponse::TemporaryRedirect()
            .insert_header((DIGEST_HEADER, digest.to_string()))
            .insert_header((actix_web::http::header::LOCATION, url))
            .finish());
    }
    let read = reg.open_blob(repo, digest, range).await?;
    pulled(state, req, repo, digest, read.size);
    let (builder, len) = match read.range {
        Some((start, end)) => {
            let mut b = HttpResponse::PartialContent();
            b.insert_header((
                CONTENT_RANGE,
                format!("bytes {start}-{}/{}", end - 1, read.size),
            ));
            (b, end - start)
        }
        None => (HttpResponse::Ok(), read.size),
    };
    Ok(blob_headers(builder, digest).body(SizedStream::new(len, read.stream)))
}

pub async fn delete(
    state: &AppState,
    req: &HttpRequest,
    repo: &RepoName,
    digest: &Digest,
) -> Result<HttpResponse, ApiError> {
    state.registry.delete_blob(repo, digest).await?;
    state.notify(req, Action::Delete, || {
        Target::deleted(repo.as_str(), &digest.to_string(), None)
    });
    Ok(HttpResponse::Accepted()
        .insert_header((DIGEST_HEADER, digest.to_string()))
        .finish())
}
