//! The registry API as the load generator speaks it: uploads (monolithic, single POST, chunked),
//! blob and manifest reads, each checking the status the spec requires.

use std::time::Duration;

use bytes::Bytes;
use futures_util::StreamExt;
use reqwest::header::{HeaderMap, ACCEPT, CONTENT_LENGTH, CONTENT_TYPE, LOCATION, RANGE};
use reqwest::{Method, RequestBuilder, Response, StatusCode, Url};
use sha2::{Digest as _, Sha256};

use super::data::BlobSpec;

/// A failed operation: what was done, and what came back.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct OpError(pub String);

impl std::fmt::Display for OpError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.0)
    }
}

impl From<reqwest::Error> for OpError {
    fn from(e: reqwest::Error) -> Self {
        // reqwest's Display hides the cause ("error sending request"); the chain says why.
        let mut msg = e.to_string();
        let mut source = std::error::Error::source(&e);
        while let Some(s) = source {
            msg.push_str(": ");
            msg.push_str(&s.to_string());
            source = s.source();
        }
        OpError(msg)
    }
}

pub type OpResult<T> = Result<T, OpError>;

/// Called with the number of bytes sent or received, as they go.
pub type Tick = std::sync::Arc<dyn Fn(u64) + Send + Sync>;

/// A registry (or plain HTTP server, for the ceilings) at one base URL.
#[derive(Clone)]
pub struct Client {
    http: reqwest::Client,
    base: Url,
    auth: Option<(String, String)>,
}

/// Options for [`Client::new`].
pub struct ClientOptions {
    pub user: Option<String>,
    pub password: Option<String>,
    pub insecure: bool,
    pub timeout: Duration,
}

impl Client {
    pub fn new(base: &str, options: ClientOptions) -> Result<Self, String> {
        let mut base = Url::parse(base).map_err(|e| format!("bad --url {base:?}: {e}"))?;
        if !base.path().ends_with('/') {
            let path = format!("{}/", base.path());
            base.set_path(&path);
        }
        let http = reqwest::Client::builder()
            .pool_max_idle_per_host(512)
            .tcp_nodelay(true)
            .connect_timeout(Duration::from_secs(10))
            .timeout(options.timeout)
            .danger_accept_invalid_certs(options.insecure)
            .build()
            .map_err(|e| format!("HTTP client: {}", OpError::from(e)))?;
        let auth = options
            .user
            .map(|u| (u, options.password.unwrap_or_default()));
        Ok(Client { http, base, auth })
    }

    /// `path` (without a leading slash) under the base URL.
    pub fn url(&self, path: &str) -> Url {
        self.base
            .join(path.trim_start_matches('/'))
            .expect("a relative path joins")
    }

    /// A URL a registry gave earlier (perhaps to another process on another port), moved onto
    /// this client's base: its path and query are kept.
    pub fn rebase(&self, saved: &str) -> OpResult<Url> {
        let old =
            Url::parse(saved).map_err(|e| OpError(format!("bad saved URL {saved:?}: {e}")))?;
        let mut url = self.base.clone();
        url.set_path(old.path());
        url.set_query(old.query());
        Ok(url)
    }

    fn request(&self, method: Method, url: Url) -> RequestBuilder {
        let builder = self.http.request(method, url);
        match &self.auth {
            Some((u, p)) => builder.basic_auth(u, Some(p)),
            None => builder,
        }
    }

    /// Checks that `/v2/` answers 200 (or 401 with credentials missing: reported as such).
    pub async fn ping(&self) -> OpResult<()> {
        let resp = self.request(Method::GET, self.url("v2/")).send().await?;
        expect(resp, StatusCode::OK, "GET /v2/").await.map(|_| ())
    }

    fn location(&self, resp: &Response, what: &str) -> OpResult<Url> {
        let loc = resp
            .headers()
            .get(LOCATION)
            .and_then(|v| v.to_str().ok())
            .ok_or_else(|| OpError(format!("{what}: no Location header")))?;
        // Relative locations resolve against the URL that was requested.
        resp.url()
            .join(loc)
            .map_err(|e| OpError(format!("{what}: bad Location {loc:?}: {e}")))
    }

    /// `POST /v2/<repo>/blobs/uploads/` → the upload's URL.
    pub async fn start_upload(&self, repo: &str) -> OpResult<Url> {
        let url = self.url(&format!("v2/{repo}/blobs/uploads/"));
        let resp = self
            .request(Method::POST, url)
            .header(CONTENT_LENGTH, 0)
            .send()
            .await?;
        let resp = expect(resp, StatusCode::ACCEPTED, "POST upload").await?;
        self.location(&resp, "POST upload")
    }

    /// POST, then PUT `?digest=` with the whole blob streamed as the body.
    pub async fn push_monolithic(
        &self,
        repo: &str,
        spec: BlobSpec,
        digest: &str,
        tick: Tick,
    ) -> OpResult<()> {
        let upload = self.start_upload(repo).await?;
        self.put_body(upload, digest, spec, tick).await
    }

    async fn put_body(
        &self,
        mut upload: Url,
        digest: &str,
        spec: BlobSpec,
        tick: Tick,
    ) -> OpResult<()> {
        upload.query_pairs_mut().append_pair("digest", digest);
        let body = reqwest::Body::wrap_stream(spec.stream(0, spec.size, move |n| tick(n)));
        let resp = self
            .request(Method::PUT, upload)
            .header(CONTENT_TYPE, "application/octet-stream")
            .header(CONTENT_LENGTH, spec.size)
            .body(body)
            .send()
            .await?;
        check_digest(
            expect(resp, StatusCode::CREATED, "PUT upload").await?,
            digest,
        )
    }

    /// POST then PUT with an in-memory body (small blobs).
    pub async fn push_bytes(&self, repo: &str, data: Bytes, digest: &str) -> OpResult<()> {
        let mut upload = self.start_upload(repo).await?;
        upload.query_pairs_mut().append_pair("digest", digest);
        let resp = self
            .request(Method::PUT, upload)
            .header(CONTENT_TYPE, "application/octet-stream")
            .body(data)
            .send()
            .await?;
        check_digest(
            expect(resp, StatusCode::CREATED, "PUT upload").await?,
            digest,
        )
    }

    /// `POST /v2/<repo>/blobs/uploads/?digest=` with the blob as the body. A registry that does not
    /// implement it answers 202 with an upload URL (the spec allows that): the blob is then PUT
    /// there, as a client must, and `Ok(true)` says the fallback was taken.
    pub async fn push_single_post(
        &self,
        repo: &str,
        spec: BlobSpec,
        digest: &str,
        tick: Tick,
    ) -> OpResult<bool> {
        let mut url = self.url(&format!("v2/{repo}/blobs/uploads/"));
        url.query_pairs_mut().append_pair("digest", digest);
        let t = tick.clone();
        let body = reqwest::Body::wrap_stream(spec.stream(0, spec.size, move |n| t(n)));
        let resp = self
            .request(Method::POST, url)
            .header(CONTENT_TYPE, "application/octet-stream")
            .header(CONTENT_LENGTH, spec.size)
            .body(body)
            .send()
            .await?;
        if resp.status() == StatusCode::ACCEPTED {
            let upload = self.location(&resp, "POST ?digest=")?;
            drain(resp).await;
            self.put_body(upload, digest, spec, tick).await?;
            return Ok(true);
        }
        check_digest(
            expect(resp, StatusCode::CREATED, "POST ?digest=").await?,
            digest,
        )?;
        Ok(false)
    }

    /// POST, PATCHes of `chunk` bytes with `Content-Range`, then PUT `?digest=` without a body.
    pub async fn push_chunked(
        &self,
        repo: &str,
        spec: BlobSpec,
        digest: &str,
        chunk: u64,
        tick: Tick,
    ) -> OpResult<()> {
        let upload = self.start_upload(repo).await?;
        let upload = self
            .patch_chunks(upload, spec, 0, spec.size, chunk, tick)
            .await?;
        self.complete_upload(upload, digest).await
    }

    /// PATCHes the blob's bytes `[from, to)` in pieces of `chunk` bytes; returns where to continue.
    pub async fn patch_chunks(
        &self,
        mut upload: Url,
        spec: BlobSpec,
        from: u64,
        to: u64,
        chunk: u64,
        tick: Tick,
    ) -> OpResult<Url> {
        let mut offset = from;
        while offset < to {
            let len = (to - offset).min(chunk.max(1));
            upload = self
                .patch_chunk(upload, spec, offset, len, tick.clone())
                .await?;
            offset += len;
        }
        Ok(upload)
    }

    /// One `PATCH` of the blob's bytes `[offset, offset + len)` with `Content-Range`; 202 and
    /// the `Location` to continue at.
    pub async fn patch_chunk(
        &self,
        upload: Url,
        spec: BlobSpec,
        offset: u64,
        len: u64,
        tick: Tick,
    ) -> OpResult<Url> {
        let body = reqwest::Body::wrap_stream(spec.stream(offset, len, move |n| tick(n)));
        let resp = self
            .request(Method::PATCH, upload)
            .header(CONTENT_TYPE, "application/octet-stream")
            .header(CONTENT_LENGTH, len)
            .header("Content-Range", format!("{}-{}", offset, offset + len - 1))
            .body(body)
            .send()
            .await?;
        let what = format!("PATCH {}-{}", offset, offset + len - 1);
        let resp = expect(resp, StatusCode::ACCEPTED, &what).await?;
        let next = self.location(&resp, &what)?;
        drain(resp).await;
        Ok(next)
    }

    /// `PUT ?digest=` without a body: 201 with the digest.
    pub async fn complete_upload(&self, mut upload: Url, digest: &str) -> OpResult<()> {
        upload.query_pairs_mut().append_pair("digest", digest);
        let resp = self
            .request(Method::PUT, upload)
            .header(CONTENT_LENGTH, 0)
            .send()
            .await?;
        check_digest(
            expect(resp, StatusCode::CREATED, "PUT ?digest=").await?,
            digest,
        )
    }

    /// `GET` of an upload: 204 with `Range: 0-<last>`; returns the bytes stored and where to
    /// continue (the `Location` answered, else the URL asked).
    pub async fn upload_status(&self, upload: Url) -> OpResult<(u64, Url)> {
        let resp = self.request(Method::GET, upload.clone()).send().await?;
        let resp = expect(resp, StatusCode::NO_CONTENT, "GET upload status").await?;
        let range = resp
            .headers()
            .get(RANGE)
            .and_then(|v| v.to_str().ok())
            .ok_or_else(|| OpError("GET upload status: no Range header".into()))?;
        let offset = upload_offset(range)
            .ok_or_else(|| OpError(format!("GET upload status: bad Range {range:?}")))?;
        let next = match resp.headers().get(LOCATION) {
            Some(_) => self.location(&resp, "GET upload status")?,
            None => upload,
        };
        Ok((offset, next))
    }

    /// `GET /v2/<repo>/blobs/<digest>`: the body is counted and, with `hash`, checked against the
    /// digest while it is read.
    pub async fn get_blob(
        &self,
        repo: &str,
        digest: &str,
        size: u64,
        hash: bool,
        tick: Option<Tick>,
    ) -> OpResult<()> {
        let url = self.url(&format!("v2/{repo}/blobs/{digest}"));
        let resp = self.request(Method::GET, url).send().await?;
        let resp = expect(resp, StatusCode::OK, "GET blob").await?;
        let got = read_body(resp, hash, tick).await?;
        if got.0 != size {
            return Err(OpError(format!(
                "GET blob {digest}: {} bytes, expected {size}",
                got.0
            )));
        }
        if let Some(d) = got.1 {
            if d != digest {
                return Err(OpError(format!("GET blob {digest}: content hashes to {d}")));
            }
        }
        Ok(())
    }

    /// `HEAD /v2/<repo>/blobs/<digest>`: 200 with the right `Content-Length`.
    pub async fn head_blob(&self, repo: &str, digest: &str, size: u64) -> OpResult<()> {
        let url = self.url(&format!("v2/{repo}/blobs/{digest}"));
        let resp = self.request(Method::HEAD, url).send().await?;
        let resp = expect(resp, StatusCode::OK, "HEAD blob").await?;
        let len = header_u64(resp.headers(), CONTENT_LENGTH.as_str());
        if len != Some(size) {
            return Err(OpError(format!(
                "HEAD blob {digest}: Content-Length {len:?}, expected {size}"
            )));
        }
        Ok(())
    }

    /// `PUT /v2/<repo>/manifests/<reference>`.
    pub async fn put_manifest(
        &self,
        repo: &str,
        reference: &str,
        media_type: &str,
        body: Bytes,
    ) -> OpResult<()> {
        let digest = super::data::sha256(&body);
        let url = self.url(&format!("v2/{repo}/manifests/{reference}"));
        let resp = self
            .request(Method::PUT, url)
            .header(CONTENT_TYPE, media_type)
            .body(body)
            .send()
            .await?;
        check_digest(
            expect(resp, StatusCode::CREATED, "PUT manifest").await?,
            &digest,
        )
    }

    /// `GET /v2/<repo>/manifests/<reference>`: 200 and a body hashing to `digest`.
    pub async fn get_manifest(
        &self,
        repo: &str,
        reference: &str,
        accept: &str,
        digest: &str,
    ) -> OpResult<()> {
        let url = self.url(&format!("v2/{repo}/manifests/{reference}"));
        let resp = self
            .request(Method::GET, url)
            .header(ACCEPT, accept)
            .send()
            .await?;
        let resp = expect(resp, StatusCode::OK, "GET manifest").await?;
        let body = resp.bytes().await?;
        let got = super::data::sha256(&body);
        if got != digest {
            return Err(OpError(format!(
                "GET manifest {reference}: body hashes to {got}, expected {digest}"
            )));
        }
        Ok(())
    }

    /// `GET` of a listing (`v2/_catalog`, `v2/<repo>/tags/list`) with `query`: 200 and a JSON
    /// object whose `key` is an array; returns the array's length and the body's size.
    pub async fn list_page(
        &self,
        path: &str,
        query: &[(&str, &str)],
        key: &str,
    ) -> OpResult<(usize, u64)> {
        let mut url = self.url(path);
        url.query_pairs_mut().extend_pairs(query);
        let resp = self.request(Method::GET, url).send().await?;
        let resp = expect(resp, StatusCode::OK, &format!("GET {path}")).await?;
        let body = resp.bytes().await?;
        let value: serde_json::Value = serde_json::from_slice(&body)
            .map_err(|e| OpError(format!("GET {path}: not JSON: {e}")))?;
        let entries = value
            .get(key)
            .and_then(|v| v.as_array())
            .ok_or_else(|| OpError(format!("GET {path}: no {key:?} array")))?;
        Ok((entries.len(), body.len() as u64))
    }

    /// A plain `PUT` of the blob to `path` (any 2xx): the HTTP ceiling, against nginx.
    pub async fn raw_put(&self, path: &str, spec: BlobSpec, tick: Tick) -> OpResult<()> {
        let body = reqwest::Body::wrap_stream(spec.stream(0, spec.size, move |n| tick(n)));
        let resp = self
            .request(Method::PUT, self.url(path))
            .header(CONTENT_TYPE, "application/octet-stream")
            .header(CONTENT_LENGTH, spec.size)
            .body(body)
            .send()
            .await?;
        if !resp.status().is_success() {
            return Err(OpError(format!("PUT {path}: {}", resp.status())));
        }
        drain(resp).await;
        Ok(())
    }

    /// A plain `GET` of `path` (200), its body hashed as it arrives if `hash`; returns the byte
    /// count.
    pub async fn raw_get(&self, path: &str, hash: bool, tick: Tick) -> OpResult<u64> {
        let resp = self.request(Method::GET, self.url(path)).send().await?;
        let resp = expect(resp, StatusCode::OK, &format!("GET {path}")).await?;
        Ok(read_body(resp, hash, Some(tick)).await?.0)
    }
}

/// The response if it has `status`, else an error naming what was done, the status, and the
/// start of the body (the registry's error code).
async fn expect(resp: Response, status: StatusCode, what: &str) -> OpResult<Response> {
    if resp.status() == status {
        return Ok(resp);
    }
    let got = resp.status();
    let body = resp.text().await.unwrap_or_default();
    let body: String = body.chars().take(200).collect();
    Err(OpError(format!(
        "{what}: {got} (expected {status}) {}",
        body.trim()
    )))
}

/// Checks `Docker-Content-Digest` when the registry sends one.
fn check_digest(resp: Response, digest: &str) -> OpResult<()> {
    if let Some(d) = resp
        .headers()
        .get("Docker-Content-Digest")
        .and_then(|v| v.to_str().ok())
    {
        if d != digest {
            return Err(OpError(format!(
                "{} {}: Docker-Content-Digest {d}, expected {digest}",
                resp.status(),
                resp.url().path()
            )));
        }
    }
    Ok(())
}

/// The bytes an upload holds from its `Range: 0-<last>` header (`0-0` is ambiguous in the spec:
/// read as nothing stored, as registries answer for an empty upload).
pub fn upload_offset(range: &str) -> Option<u64> {
    let (first, last) = range.trim().split_once('-')?;
    if first.trim() != "0" {
        return None;
    }
    let last: u64 = last.trim().parse().ok()?;
    Some(if last == 0 { 0 } else { last + 1 })
}

fn header_u64(headers: &HeaderMap, name: &str) -> Option<u64> {
    headers.get(name)?.to_str().ok()?.parse().ok()
}

/// Reads and discards what is left of a body, so the connection goes back to the pool.
async fn drain(resp: Response) {
    let _ = resp.bytes().await;
}

/// Reads a body in the pieces the connection delivers: the byte count and, with `hash`, the
/// `sha256:` digest.
async fn read_body(
    resp: Response,
    hash: bool,
    tick: Option<Tick>,
) -> OpResult<(u64, Option<String>)> {
    let mut hasher = hash.then(Sha256::new);
    let mut n = 0u64;
    let mut stream = resp.bytes_stream();
    while let Some(piece) = stream.next().await {
        let piece = piece?;
        n += piece.len() as u64;
        if let Some(h) = hasher.as_mut() {
            h.update(&piece);
        }
        if let Some(t) = &tick {
            t(piece.len() as u64);
        }
    }
    Ok((
        n,
        hasher.map(|h| format!("sha256:{}", hex::encode(h.finalize()))),
    ))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn saved_upload_urls_move_to_the_new_base() {
        let c = Client::new(
            "http://127.0.0.1:6000",
            ClientOptions {
                user: None,
                password: None,
                insecure: false,
                timeout: Duration::from_secs(1),
            },
        )
        .unwrap();
        let u = c
            .rebase("http://127.0.0.1:5000/v2/a/b/blobs/uploads/x?_state=s%3D&n=1")
            .unwrap();
        assert_eq!(
            u.as_str(),
            "http://127.0.0.1:6000/v2/a/b/blobs/uploads/x?_state=s%3D&n=1"
        );
        assert!(c.rebase("/relative").is_err());
    }

    #[test]
    fn upload_ranges() {
        assert_eq!(upload_offset("0-104857599"), Some(100 << 20));
        assert_eq!(upload_offset(" 0-9 "), Some(10));
        assert_eq!(upload_offset("0-0"), Some(0));
        assert_eq!(upload_offset("5-9"), None);
        assert_eq!(upload_offset("bytes=0-9"), None);
        assert_eq!(upload_offset("0-x"), None);
        assert_eq!(upload_offset("0"), None);
    }
}
