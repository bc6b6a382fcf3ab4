//! S3 requests that object_store has no call for, signed by hand with object_store's own SigV4
//! signer ([`AwsAuthorizer`]) and the store's credentials, sent with an HTTP client built from the
//! store's own client options, to the bucket URL object_store addresses: `UploadPartCopy`
//! (multipart copies, see `storage::copy`) and `CompleteMultipartUpload` with explicit part
//! numbers (object_store numbers parts 1, 2, 3, …; an upload whose holder lost its lock has
//! gaps, see `storage::lock`), `ListMultipartUploads` (see `storage::orphans`), and
//! `ListObjectsV2` of one "directory" a page at a time from a given key (see `storage::listing`;
//! object_store's listing reads a directory whole).

use bytes::Bytes;
use object_store::aws::{
    AmazonS3, AmazonS3Builder, AmazonS3ConfigKey, AwsAuthorizer, AwsCredentialProvider,
};
use object_store::client::{
    HttpClient, HttpConnector, HttpRequest, HttpRequestBody, ReqwestConnector,
};
use object_store::path::Path;
use object_store::ClientOptions;
use serde::Deserialize;

use super::listing::Start;
use super::{Result, StorageError};
use crate::config::S3Config;

/// The bucket and how to reach it, for requests signed here.
pub(crate) struct S3Requests {
    http: HttpClient,
    credentials: AwsCredentialProvider,
    region: String,
    bucket: String,
    /// The bucket's URL as the store addresses it (`https://bucket.s3.region.amazonaws.com`,
    /// or `endpoint/bucket` path-style), without a trailing `/`: keys are appended to it.
    bucket_url: String,
    /// `rootdirectory`, which the store (a `PrefixStore`) puts before every key.
    root: Path,
}

impl std::fmt::Debug for S3Requests {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("S3Requests")
            .field("bucket_url", &self.bucket_url)
            .finish_non_exhaustive()
    }
}

/// Why a request got no answer.
#[derive(Debug)]
pub(super) enum SendFailure {
    /// Before anything was sent (a URL, a header, the credentials): asking again changes nothing.
    Local(String),
    /// The connection failed: the request may not have reached S3.
    Transport(String),
}

impl std::fmt::Display for SendFailure {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            SendFailure::Local(m) | SendFailure::Transport(m) => f.write_str(m),
        }
    }
}

impl S3Requests {
    /// For the bucket `s3` was built on by `builder` (whose endpoint, region and addressing style
    /// it uses), with the store's HTTP `client` options and the keys under `root`.
    pub(super) fn new(
        config: &S3Config,
        builder: &AmazonS3Builder,
        s3: &AmazonS3,
        client: &ClientOptions,
        root: &str,
    ) -> Result<S3Requests> {
        let setting = |key| builder.get_config_value(&key);
        let region = setting(AmazonS3ConfigKey::Region).unwrap_or_else(|| "us-east-1".into());
        let bucket = config.bucket.clone();
        let virtual_hosted =
            setting(AmazonS3ConfigKey::VirtualHostedStyleRequest).is_some_and(|v| v == "true");
        let endpoint =
            setting(AmazonS3ConfigKey::S3Endpoint).or(setting(AmazonS3ConfigKey::Endpoint));
        let bucket_url = bucket_url(endpoint.as_deref(), &bucket, &region, virtual_hosted);
        let http = ReqwestConnector::default()
            .connect(client)
            .map_err(|e| StorageError::Config(format!("S3 client for signed requests: {e}")))?;
        Ok(S3Requests {
            http,
            credentials: s3.credentials().clone(),
            region,
            bucket,
            bucket_url,
            root: Path::from(root),
        })
    }

    /// The key of `path` in the bucket, under `rootdirectory` as the store puts it.
    fn full_key(&self, path: &Path) -> Path {
        self.root.parts().chain(path.parts()).collect()
    }

    /// The `x-amz-copy-source` naming `path`.
    pub(super) fn copy_source(&self, path: &Path) -> String {
        format!(
            "/{}/{}",
            self.bucket,
            encode(self.full_key(path).as_ref(), true)
        )
    }

    /// The bucket-wide key prefix naming everything under `prefix` (with `rootdirectory`, and a
    /// trailing `/` so that `a/b` does not match `a/bc/…`).
    pub(super) fn full_prefix(&self, prefix: &Path) -> String {
        let full = self.full_key(prefix);
        match full.as_ref() {
            "" => String::new(),
            key => format!("{key}/"),
        }
    }

    /// The store's key for the bucket's `key`: `rootdirectory` taken off again. `None` for a
    /// key outside the root, or one the store could not address.
    pub(super) fn store_key(&self, key: &str) -> Option<Path> {
        let root = self.root.as_ref();
        let relative = match root {
            "" => key,
            root => key.strip_prefix(root)?.strip_prefix('/')?,
        };
        Path::parse(relative).ok()
    }

    /// Sends a signed request for the object `key` with `query` (already encoded), `headers` and
    /// `body`; the answer's status and body.
    pub(super) async fn send(
        &self,
        method: http::Method,
        key: &Path,
        query: &str,
        headers: &[(&'static str, String)],
        body: Bytes,
    ) -> std::result::Result<(u16, Bytes), SendFailure> {
        let url = format!(
            "{}/{}?{query}",
            self.bucket_url,
            encode(self.full_key(key).as_ref(), true),
        );
        self.send_to(method, url, headers, body).await
    }

    /// Sends a signed request for the bucket itself (`GET /?uploads…`) with `query` (already
    /// encoded); the answer's status and body.
    pub(super) async fn send_to_bucket(
        &self,
        method: http::Method,
        query: &str,
    ) -> std::result::Result<(u16, Bytes), SendFailure> {
        // Without a `/` after a path-style bucket, as object_store addresses its listings.
        let url = format!("{}?{query}", self.bucket_url);
        self.send_to(method, url, &[], Bytes::new()).await
    }

    async fn send_to(
        &self,
        method: http::Method,
        url: String,
        headers: &[(&'static str, String)],
        body: Bytes,
    ) -> std::result::Result<(u16, Bytes), SendFailure> {
        let mut request = HttpRequest::new(HttpRequestBody::from(body));
        *request.method_mut() = method;
        *request.uri_mut() = url
            .parse()
            .map_err(|e| SendFailure::Local(format!("the URL {url}: {e}")))?;
        for (name, value) in headers {
            let value = http::HeaderValue::from_str(value)
                .map_err(|e| SendFailure::Local(format!("header {name}: {e}")))?;
            request.headers_mut().insert(*name, value);
        }
        let credential = self
            .credentials
            .get_credential()
            .await
            .map_err(|e| SendFailure::Local(format!("credentials: {e}")))?;
        AwsAuthorizer::new(&credential, "s3", &self.region)
            .try_authorize(&mut request, None)
            .map_err(|e| SendFailure::Local(format!("signing: {e}")))?;
        let response = self
            .http
            .execute(request)
            .await
            .map_err(|e| SendFailure::Transport(e.to_string()))?;
        let status = response.status().as_u16();
        let body = response
            .into_body()
            .bytes()
            .await
            .map_err(|e| SendFailure::Transport(e.to_string()))?;
        Ok((status, body))
    }

    /// Completes the multipart upload `upload_id` of `key` from `parts` (number, content id as
    /// object_store answered it), whatever their numbers.
    pub(super) async fn complete_numbered(
        &self,
        key: &Path,
        upload_id: &str,
        parts: &[(u32, String)],
    ) -> Result<()> {
        let body = complete_body(parts);
        let query = format!("uploadId={}", encode(upload_id, false));
        let (status, answer) = self
            .send(http::Method::POST, key, &query, &[], Bytes::from(body))
            .await
            .map_err(|f| backend_error(format!("CompleteMultipartUpload: {f}")))?;
        let text = String::from_utf8_lossy(&answer);
        let root = root_element(&text);
        if (200..300).contains(&status) && root.as_deref() == Some("CompleteMultipartUploadResult")
        {
            return Ok(());
        }
        Err(failed_answer(
            &format!("CompleteMultipartUpload of {key}"),
            status,
            &text,
        ))
    }
}

/// Common prefixes one `ListObjectsV2` answers at most (S3's own ceiling).
const LIST_PAGE: usize = 1000;

impl S3Requests {
    /// One page of the "directories" directly below `dir`: `ListObjectsV2` with `delimiter=/`
    /// and `max-keys`, from `start` (`start-after` or a continuation token). Their names in
    /// S3's order (by the bytes of `name/`), and the token of the next page if there is one.
    pub(super) async fn list_directory(
        &self,
        dir: &Path,
        start: &Start,
    ) -> Result<(Vec<String>, Option<String>)> {
        let prefix = self.full_prefix(dir);
        let mut query = format!(
            "delimiter=%2F&list-type=2&max-keys={LIST_PAGE}&prefix={}",
            encode(&prefix, false)
        );
        match start {
            Start::After(None) => {}
            Start::After(Some(after)) => query.push_str(&format!(
                "&start-after={}",
                encode(&format!("{prefix}{after}"), false)
            )),
            Start::Token(token) => {
                query.push_str(&format!("&continuation-token={}", encode(token, false)))
            }
        }
        let request = format!("ListObjectsV2 of {prefix}");
        let (status, answer) = self
            .send_to_bucket(http::Method::GET, &query)
            .await
            .map_err(|f| backend_error(format!("{request}: {f}")))?;
        let text = String::from_utf8_lossy(&answer);
        if !(200..300).contains(&status) {
            return Err(failed_answer(&request, status, &text));
        }
        parse_directory(&text, &prefix).map_err(|reason| StorageError::Corrupt {
            path: request,
            reason,
        })
    }
}

/// `ListBucketResult`, only what is used of it.
#[derive(Deserialize)]
#[serde(rename_all = "PascalCase")]
struct ListBucketResult {
    #[serde(default)]
    is_truncated: bool,
    #[serde(default)]
    next_continuation_token: Option<String>,
    #[serde(default, rename = "CommonPrefixes")]
    common_prefixes: Vec<CommonPrefix>,
}

#[derive(Deserialize)]
#[serde(rename_all = "PascalCase")]
struct CommonPrefix {
    prefix: String,
}

/// The directory names of a `ListObjectsV2` answer under `prefix`, and the next page's token.
fn parse_directory(
    xml: &str,
    prefix: &str,
) -> std::result::Result<(Vec<String>, Option<String>), String> {
    match root_element(xml).as_deref() {
        Some("ListBucketResult") => {}
        other => return Err(format!("root element {other:?}: {xml:.200}")),
    }
    let result: ListBucketResult = quick_xml::de::from_str(xml).map_err(|e| e.to_string())?;
    let names = result
        .common_prefixes
        .into_iter()
        .filter_map(|p| {
            let name = p.prefix.strip_prefix(prefix)?.strip_suffix('/')?;
            (!name.is_empty() && !name.contains('/')).then(|| name.to_string())
        })
        .collect();
    let token = match (result.is_truncated, result.next_continuation_token) {
        (false, _) => None,
        (true, Some(token)) if !token.is_empty() => Some(token),
        (true, _) => return Err("truncated, without a NextContinuationToken".into()),
    };
    Ok((names, token))
}

/// The error for an answer `text` (status `status`) to `request` that was not the one hoped
/// for: refused if asking again unchanged would get the same answer.
pub(super) fn failed_answer(request: &str, status: u16, text: &str) -> StorageError {
    let reason = match quick_xml::de::from_str::<ErrorBody>(text) {
        Ok(e) => format!("{}: {}", e.code, e.message),
        Err(_) => format!("unexpected answer: {text:.200}"),
    };
    let message = format!("{request} ({status}): {reason}");
    if (400..500).contains(&status) && status != 408 && status != 429 {
        return StorageError::Refused {
            status,
            source: object_store::Error::Generic {
                store: "S3",
                source: message.into(),
            },
        };
    }
    backend_error(message)
}

pub(super) fn backend_error(message: String) -> StorageError {
    StorageError::Backend(object_store::Error::Generic {
        store: "S3",
        source: message.into(),
    })
}

/// The body of a `CompleteMultipartUpload`. A content id is the part's ETag, or (when the store
/// computed checksums) object_store's XML holding it.
fn complete_body(parts: &[(u32, String)]) -> String {
    let mut xml = String::from("<CompleteMultipartUpload>");
    for (number, content_id) in parts {
        let etag = quick_xml::de::from_str::<ContentId>(content_id)
            .map(|c| c.e_tag)
            .unwrap_or_else(|_| content_id.clone());
        xml.push_str(&format!(
            "<Part><PartNumber>{number}</PartNumber><ETag>{}</ETag></Part>",
            quick_xml::escape::escape(etag.as_str())
        ));
    }
    xml.push_str("</CompleteMultipartUpload>");
    xml
}

/// object_store's content id when it carries checksums beside the ETag.
#[derive(Deserialize)]
struct ContentId {
    e_tag: String,
}

#[derive(Deserialize)]
#[serde(rename_all = "PascalCase")]
pub(super) struct ErrorBody {
    pub code: String,
    #[serde(default)]
    pub message: String,
}

/// The bucket's URL, derived from the store's settings as object_store derives it.
pub(super) fn bucket_url(
    endpoint: Option<&str>,
    bucket: &str,
    region: &str,
    virtual_hosted: bool,
) -> String {
    match (endpoint, virtual_hosted) {
        (Some(endpoint), true) => endpoint.trim_end_matches('/').to_string(),
        (Some(endpoint), false) => format!("{}/{bucket}", endpoint.trim_end_matches('/')),
        (None, true) => format!("https://{bucket}.s3.{region}.amazonaws.com"),
        (None, false) => format!("https://s3.{region}.amazonaws.com/{bucket}"),
    }
}

/// Percent-encodes all but RFC 3986's unreserved characters (and `/` in a key), as object_store
/// encodes keys: the signature covers the path as sent.
pub(super) fn encode(text: &str, keep_slashes: bool) -> String {
    let mut out = String::with_capacity(text.len());
    for byte in text.bytes() {
        if byte.is_ascii_alphanumeric()
            || matches!(byte, b'-' | b'.' | b'_' | b'~')
            || (keep_slashes && byte == b'/')
        {
            out.push(byte as char);
        } else {
            out.push_str(&format!("%{byte:02X}"));
        }
    }
    out
}

/// The name of the XML document's root element.
pub(super) fn root_element(xml: &str) -> Option<String> {
    let mut reader = quick_xml::Reader::from_str(xml);
    loop {
        match reader.read_event().ok()? {
            quick_xml::events::Event::Start(e) | quick_xml::events::Event::Empty(e) => {
                return Some(String::from_utf8_lossy(e.name().as_ref()).into_owned());
            }
            quick_xml::events::Event::Eof => return None,
            _ => {}
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keys_are_encoded_as_object_store_encodes_them() {
        assert_eq!(
            encode("root/docker/registry/v2/blobs/sha256/ab/x_y-z.~/data", true),
            "root/docker/registry/v2/blobs/sha256/ab/x_y-z.~/data"
        );
        assert_eq!(encode("a b+c/d", true), "a%20b%2Bc/d");
        assert_eq!(encode("id/with+slash=", false), "id%2Fwith%2Bslash%3D");
    }

    #[test]
    fn bucket_urls_follow_the_addressing_style() {
        assert_eq!(
            bucket_url(Some("http://127.0.0.1:9000/"), "b", "r", false),
            "http://127.0.0.1:9000/b"
        );
        assert_eq!(
            bucket_url(Some("https://b.minio.example"), "b", "r", true),
            "https://b.minio.example"
        );
        assert_eq!(
            bucket_url(None, "b", "eu-west-1", true),
            "https://b.s3.eu-west-1.amazonaws.com"
        );
        assert_eq!(
            bucket_url(None, "b", "eu-west-1", false),
            "https://s3.eu-west-1.amazonaws.com/b"
        );
    }

    #[test]
    fn completion_names_every_part_with_its_number() {
        let body = complete_body(&[(1, "\"a\"".into()), (9, "\"b\"".into())]);
        assert_eq!(
            body,
            "<CompleteMultipartUpload><Part><PartNumber>1</PartNumber><ETag>&quot;a&quot;</ETag>\
             </Part><Part><PartNumber>9</PartNumber><ETag>&quot;b&quot;</ETag></Part>\
             </CompleteMultipartUpload>"
        );
    }

    #[test]
    fn directory_listings_give_names_and_the_next_token() {
        let xml = r#"<?xml version="1.0" encoding="UTF-8"?>
<ListBucketResult xmlns="http://s3.amazonaws.com/doc/2006-03-01/"><Name>b</Name>
<Prefix>r/repositories/</Prefix><KeyCount>3</KeyCount><MaxKeys>3</MaxKeys>
<Delimiter>/</Delimiter><IsTruncated>true</IsTruncated>
<Contents><Key>r/repositories/file</Key><Size>1</Size></Contents>
<CommonPrefixes><Prefix>r/repositories/a-c/</Prefix></CommonPrefixes>
<CommonPrefixes><Prefix>r/repositories/a/</Prefix></CommonPrefixes>
<NextContinuationToken>tok+/=</NextContinuationToken></ListBucketResult>"#;
        assert_eq!(
            parse_directory(xml, "r/repositories/").unwrap(),
            (
                vec!["a-c".to_string(), "a".to_string()],
                Some("tok+/=".into())
            )
        );
        let last = "<ListBucketResult><IsTruncated>false</IsTruncated></ListBucketResult>";
        assert_eq!(parse_directory(last, "p/").unwrap(), (vec![], None));
        let broken = "<ListBucketResult><IsTruncated>true</IsTruncated></ListBucketResult>";
        assert!(parse_directory(broken, "p/").is_err());
        assert!(parse_directory("<Error><Code>x</Code></Error>", "p/").is_err());
    }
}
