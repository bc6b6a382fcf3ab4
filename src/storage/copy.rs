//! Moves of objects inside an S3 bucket, of any size.
//!
//! S3 has no rename: a commit (upload → blob) and garbage collection's set-aside (blob → aside
//! and back) copy the object, then delete the source. AWS refuses a `CopyObject` of a source
//! larger than 5 GiB, so, as CNCF distribution does, an object above
//! `storage.s3.multipartcopythresholdsize` is copied as a multipart upload whose parts are
//! `UploadPartCopy` requests for ranges of the source (`multipartcopychunksize` bytes each, at
//! most `multipartcopymaxconcurrency` in flight). [`BucketCopier`] owns that copy: the part
//! ranges, the signed part-copy requests (object_store has no such call; they are signed with
//! object_store's own SigV4 signer and the store's credentials), their retries, and aborting
//! the multipart upload on any failure so that no parts are left behind. Creating, completing
//! and aborting the multipart upload go through the store like every other multipart call.

use std::ops::Range;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use futures_util::stream::{self, StreamExt};
use std::sync::Arc;

use object_store::multipart::{MultipartStore, PartId};
use object_store::path::Path;
use serde::Deserialize;

use super::s3_requests::{encode, root_element, ErrorBody, S3Requests, SendFailure};
use super::{Backend, Result, Storage, StorageError};
use crate::config::S3Config;

/// S3's largest number of parts in one multipart upload.
const MAX_PARTS: u64 = 10_000;

/// Attempts after the first for a part copy that failed in a way worth retrying (as the store's
/// own requests are retried).
const PART_COPY_RETRIES: u32 = 3;

/// The wait before the first retry of a part copy; doubled for each further one.
const FIRST_BACKOFF: Duration = Duration::from_millis(200);

impl Storage {
    /// Moves the object `from` (`size` bytes) to `to`, replacing any object there. On S3 an
    /// object above the multipart-copy threshold is copied in parts (a single copy is limited to
    /// 5 GiB), then the source is deleted; everything else is [`Storage::rename`].
    pub async fn move_object(&self, from: &Path, to: &Path, size: u64) -> Result<()> {
        if let Backend::Objects {
            copier: Some(copier),
            multipart,
            ..
        } = &self.backend
        {
            if size > copier.threshold {
                copier
                    .copy_in_parts(multipart.as_ref(), from, to, size)
                    .await?;
                return self.delete(from).await;
            }
        }
        self.rename(from, to).await
    }
}

/// Copies objects inside one S3 bucket by multipart copy (see the module's documentation).
pub(crate) struct BucketCopier {
    /// Objects of more bytes than this are copied in parts; smaller ones with one `CopyObject`.
    threshold: u64,
    /// The size of every part but the last.
    part_size: u64,
    /// Part copies in flight at once.
    max_in_flight: usize,
    /// The part copies, signed by hand.
    requests: Arc<S3Requests>,
}

impl std::fmt::Debug for BucketCopier {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("BucketCopier")
            .field("threshold", &self.threshold)
            .field("part_size", &self.part_size)
            .field("max_in_flight", &self.max_in_flight)
            .field("requests", &self.requests)
            .finish()
    }
}

impl BucketCopier {
    pub(super) fn new(config: &S3Config, requests: Arc<S3Requests>) -> BucketCopier {
        BucketCopier {
            threshold: config.multipartcopythresholdsize,
            part_size: config.multipartcopychunksize,
            max_in_flight: config.multipartcopymaxconcurrency,
            requests,
        }
    }

    /// Copies `from` (`size` bytes, at least one) to `to` as one multipart upload of part
    /// copies. On any failure the multipart upload is aborted once the part copies in flight
    /// have ended (a part finishing after the abort would be left behind), and `to` is untouched.
    async fn copy_in_parts(
        &self,
        multipart: &dyn MultipartStore,
        from: &Path,
        to: &Path,
        size: u64,
    ) -> Result<()> {
        let ranges = part_ranges(size, self.part_size);
        let upload_id = multipart.create_multipart(to).await?;
        let copied = match self.copy_parts(from, to, &upload_id, &ranges).await {
            Ok(parts) => multipart
                .complete_multipart(to, &upload_id, parts)
                .await
                .map(|_| ())
                .map_err(StorageError::from),
            Err(e) => Err(e),
        };
        if let Err(e) = &copied {
            // After a failed completion the upload may be completed after all (its answer lost):
            // then the abort finds no upload, and `to` holds the whole copy, harmlessly.
            if let Err(abort) = multipart.abort_multipart(to, &upload_id).await {
                log::warn!(
                    "copying {from} to {to} failed ({e}); aborting its multipart upload \
                     {upload_id} failed too, its parts stay until aborted: {abort}"
                );
            }
        }
        copied
    }

    /// Copies every range as a part, at most `max_in_flight` at once; the parts' ids in order.
    /// After a failure no further part is started, and the copies in flight are waited for.
    async fn copy_parts(
        &self,
        from: &Path,
        to: &Path,
        upload_id: &str,
        ranges: &[Range<u64>],
    ) -> Result<Vec<PartId>> {
        let failed = &AtomicBool::new(false);
        let mut results: Vec<(usize, Result<String>)> = stream::iter(ranges.iter().enumerate())
            .take_while(|_| std::future::ready(!failed.load(Ordering::Relaxed)))
            .map(|(i, range)| async move {
                let copied = self.copy_part(from, to, upload_id, i + 1, range).await;
                if copied.is_err() {
                    failed.store(true, Ordering::Relaxed);
                }
                (i, copied)
            })
            .buffer_unordered(self.max_in_flight)
            .collect()
            .await;
        results.sort_by_key(|(i, _)| *i);
        let mut parts = Vec::with_capacity(ranges.len());
        for (_, copied) in results {
            parts.push(PartId {
                content_id: copied?,
            });
        }
        Ok(parts)
    }

    /// Copies `range` of `from` as part `part_number` of the multipart upload of `to`, retrying
    /// what is worth retrying; the part's ETag.
    async fn copy_part(
        &self,
        from: &Path,
        to: &Path,
        upload_id: &str,
        part_number: usize,
        range: &Range<u64>,
    ) -> Result<String> {
        let mut backoff = FIRST_BACKOFF;
        let mut retries = 0;
        loop {
            match self
                .try_copy_part(from, to, upload_id, part_number, range)
                .await
            {
                Ok(etag) => return Ok(etag),
                Err(failure) if failure.transient && retries < PART_COPY_RETRIES => {
                    log::debug!("part {part_number} of the copy of {from} to {to}: {failure}");
                    retries += 1;
                    tokio::time::sleep(backoff).await;
                    backoff *= 2;
                }
                Err(failure) => return Err(failure.into_storage_error(from)),
            }
        }
    }

    async fn try_copy_part(
        &self,
        from: &Path,
        to: &Path,
        upload_id: &str,
        part_number: usize,
        range: &Range<u64>,
    ) -> std::result::Result<String, PartCopyFailure> {
        let requests = &self.requests;
        let query = format!(
            "partNumber={part_number}&uploadId={}",
            encode(upload_id, false)
        );
        let headers = [
            ("x-amz-copy-source", requests.copy_source(from)),
            (
                "x-amz-copy-source-range",
                format!("bytes={}-{}", range.start, range.end - 1),
            ),
        ];
        let (status, body) = requests
            .send(http::Method::PUT, to, &query, &headers, bytes::Bytes::new())
            .await
            .map_err(|failure| match failure {
                SendFailure::Local(message) => PartCopyFailure::local(message),
                SendFailure::Transport(message) => PartCopyFailure::transport(message),
            })?;
        part_copy_answer(status, &String::from_utf8_lossy(&body))
    }
}

/// The byte ranges (end exclusive) of the parts of a copy of `size` bytes: `part_size` each,
/// the last one shorter, together exactly `0..size`. Parts are made larger where `part_size`
/// would need more than S3's 10 000 parts.
fn part_ranges(size: u64, part_size: u64) -> Vec<Range<u64>> {
    let part_size = part_size.max(size.div_ceil(MAX_PARTS)).max(1);
    (0..size.div_ceil(part_size))
        .map(|i| i * part_size..((i + 1) * part_size).min(size))
        .collect()
}

/// Why a part copy failed.
#[derive(Debug)]
struct PartCopyFailure {
    /// The HTTP status of S3's answer (`None`: no answer, or an error in a `200` answer).
    status: Option<u16>,
    /// S3's error code (`NoSuchKey`, `InternalError`, …), if it gave one.
    code: Option<String>,
    message: String,
    /// Whether asking again may succeed.
    transient: bool,
}

impl std::fmt::Display for PartCopyFailure {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("UploadPartCopy failed")?;
        if let Some(status) = self.status {
            write!(f, " ({status})")?;
        }
        if let Some(code) = &self.code {
            write!(f, ": {code}")?;
        }
        write!(f, ": {}", self.message)
    }
}

impl std::error::Error for PartCopyFailure {}

impl PartCopyFailure {
    /// A failure before anything was sent: asking again changes nothing.
    fn local(message: String) -> Self {
        PartCopyFailure {
            status: None,
            code: None,
            message,
            transient: false,
        }
    }

    /// The connection failed: the request may not have reached S3.
    fn transport(message: String) -> Self {
        PartCopyFailure {
            status: None,
            code: None,
            message,
            transient: true,
        }
    }

    /// As the storage layer reports failures: a missing source as not found, a permanent
    /// refusal (4xx) as refused, everything else as the backend failing.
    fn into_storage_error(self, from: &Path) -> StorageError {
        if self.status == Some(404) && self.code.as_deref() != Some("NoSuchUpload") {
            return StorageError::NotFound(from.to_string());
        }
        let status = self.status;
        let source = object_store::Error::Generic {
            store: "S3",
            source: Box::new(self),
        };
        // As `refusal_status`: 408 and 429 are the backend busy, not refusing.
        match status {
            Some(status) if (400..500).contains(&status) && status != 408 && status != 429 => {
                StorageError::Refused { status, source }
            }
            _ => StorageError::Backend(source),
        }
    }
}

#[derive(Deserialize)]
#[serde(rename_all = "PascalCase")]
struct CopyPartResult {
    #[serde(rename = "ETag")]
    e_tag: String,
}

/// Reads S3's answer to an `UploadPartCopy`: the part's ETag, or why it failed. S3 may answer
/// `200 OK` and report an error in the body (the copy failed after the answer had begun).
fn part_copy_answer(status: u16, body: &str) -> std::result::Result<String, PartCopyFailure> {
    let root = root_element(body);
    if (200..300).contains(&status) && root.as_deref() == Some("CopyPartResult") {
        return quick_xml::de::from_str::<CopyPartResult>(body)
            .map(|result| result.e_tag)
            .map_err(|e| PartCopyFailure {
                status: Some(status),
                code: None,
                message: format!("unreadable CopyPartResult ({e}): {body:.200}"),
                transient: false,
            });
    }
    let error = (root.as_deref() == Some("Error"))
        .then(|| quick_xml::de::from_str::<ErrorBody>(body).ok())
        .flatten();
    let (code, message) = match error {
        Some(e) => (Some(e.code), e.message),
        None => (None, format!("unexpected answer: {body:.200}")),
    };
    // AWS's advice for these: retry. A 2xx without a result is a copy that broke off midway.
    let transient = match status {
        200..=299 => true,
        408 | 429 | 500..=599 => true,
        _ => matches!(
            code.as_deref(),
            Some("InternalError" | "SlowDown" | "ServiceUnavailable" | "RequestTimeout")
        ),
    };
    Err(PartCopyFailure {
        status: (!(200..300).contains(&status)).then_some(status),
        code,
        message,
        transient,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn covers_exactly(size: u64, part_size: u64) -> Vec<Range<u64>> {
        let ranges = part_ranges(size, part_size);
        let mut next = 0;
        for r in &ranges {
            assert_eq!(r.start, next, "contiguous: {ranges:?}");
            assert!(r.end > r.start, "no empty part: {ranges:?}");
            next = r.end;
        }
        assert_eq!(next, size, "ends at the size: {ranges:?}");
        ranges
    }

    #[test]
    fn parts_cover_the_object_with_a_shorter_last_one() {
        let ranges = covers_exactly(20 * 1024 * 1024 + 3, 5 * 1024 * 1024);
        assert_eq!(ranges.len(), 5);
        assert!(ranges[..4].iter().all(|r| r.end - r.start == 5 << 20));
        assert_eq!(ranges[4], 20 << 20..(20 << 20) + 3);
        assert_eq!(covers_exactly(11, 4), vec![0..4, 4..8, 8..11]);
    }

    #[test]
    fn an_exact_multiple_has_no_short_part() {
        assert_eq!(covers_exactly(12, 4), vec![0..4, 4..8, 8..12]);
        let ranges = covers_exactly(20 << 20, 5 << 20);
        assert_eq!(ranges.len(), 4);
        assert_eq!(ranges[3], 15 << 20..20 << 20);
    }

    #[test]
    fn tiny_objects() {
        assert!(part_ranges(0, 5 << 20).is_empty());
        assert_eq!(covers_exactly(1, 5 << 20), vec![0..1]);
        assert_eq!(covers_exactly(5 << 20, 5 << 20), vec![0..5 << 20]);
        assert_eq!(covers_exactly((5 << 20) + 1, 5 << 20).len(), 2);
    }

    #[test]
    fn parts_grow_to_stay_within_ten_thousand() {
        // 5 TiB, S3's largest object, in 32 MiB parts would be 163 840 of them.
        let size = 5u64 << 40;
        let ranges = covers_exactly(size, 32 << 20);
        assert!(ranges.len() as u64 <= MAX_PARTS, "{}", ranges.len());
        assert!(ranges[0].end <= 5 << 30, "a part stays within S3's 5 GiB");
        assert_eq!(covers_exactly(10_001, 1).len(), 5001);
    }

    #[test]
    fn answers_are_read_as_s3_writes_them() {
        let ok = "<?xml version=\"1.0\" encoding=\"UTF-8\"?>\n<CopyPartResult \
                  xmlns=\"http://s3.amazonaws.com/doc/2006-03-01/\"><LastModified>2026-12-02T\
                  00:00:00.000Z</LastModified><ETag>&quot;9b2cf535f27731c974343645a3985328&quot;\
                  </ETag></CopyPartResult>";
        assert_eq!(
            part_copy_answer(200, ok).unwrap(),
            "\"9b2cf535f27731c974343645a3985328\""
        );
        // An error in a 200 answer: not a part, and worth retrying.
        let broken = "<?xml version=\"1.0\" encoding=\"UTF-8\"?>\n<Error><Code>InternalError\
                      </Code><Message>We encountered an internal error.</Message></Error>";
        let failure = part_copy_answer(200, broken).unwrap_err();
        assert_eq!(failure.code.as_deref(), Some("InternalError"));
        assert!(failure.transient && failure.status.is_none());
        let missing = "<Error><Code>NoSuchKey</Code><Message>gone</Message></Error>";
        let failure = part_copy_answer(404, missing).unwrap_err();
        assert!(!failure.transient);
        assert!(matches!(
            failure.into_storage_error(&Path::from("a/b")),
            StorageError::NotFound(p) if p == "a/b"
        ));
        let refused = "<Error><Code>InvalidRequest</Code><Message>too large</Message></Error>";
        let failure = part_copy_answer(400, refused).unwrap_err();
        assert!(!failure.transient);
        let error = failure.into_storage_error(&Path::from("a"));
        assert!(matches!(error, StorageError::Refused { status: 400, .. }));
        assert!(error.to_string().contains("InvalidRequest"), "{error}");
        let slow = part_copy_answer(503, "<Error><Code>SlowDown</Code></Error>").unwrap_err();
        assert!(slow.transient);
        let garbage = part_copy_answer(502, "<html>bad gateway</html>").unwrap_err();
        assert!(garbage.transient && garbage.code.is_none());
        assert!(matches!(
            garbage.into_storage_error(&Path::from("a")),
            StorageError::Backend(_)
        ));
    }
}
