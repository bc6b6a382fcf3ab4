//! Multipart uploads that nothing of berth's names any more, found through S3's
//! `ListMultipartUploads` (object_store has no call for it; signed by hand, see
//! [`S3Requests`]).
//!
//! A multipart upload is named only by the record of the upload it belongs to, and that record
//! is written after S3 created the multipart upload: a process dying in between leaves one that
//! no record names, whose parts stay stored (and billed) until aborted. A garbage collection's
//! multipart copy whose abort failed is named by nothing at all. Upload purging asks the store
//! for them here (see `upload::purge`).

use std::sync::atomic::{AtomicBool, Ordering};

use chrono::{DateTime, Utc};
use object_store::path::Path;
use serde::Deserialize;

use super::s3_requests::{encode, failed_answer, root_element, S3Requests};
use super::{Backend, Result, Storage, StorageError};

/// A multipart upload in progress, as the store lists it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MultipartUploadInfo {
    /// Its object's key, as the store names it (without `rootdirectory`).
    pub key: Path,
    pub upload_id: String,
    pub initiated: DateTime<Utc>,
}

/// Whether a store without the listing was already reported: once is enough, purging asks
/// again at every pass.
static NO_LISTING_REPORTED: AtomicBool = AtomicBool::new(false);

impl Storage {
    /// The multipart uploads in progress under `prefix`, or `None` where the store has no such
    /// listing (local disk and memory, whose multipart uploads live no longer than the process,
    /// and S3 servers that do not implement it).
    pub async fn list_multipart_uploads(
        &self,
        prefix: &Path,
    ) -> Result<Option<Vec<MultipartUploadInfo>>> {
        let Backend::Objects {
            requests: Some(requests),
            ..
        } = &self.backend
        else {
            return Ok(None);
        };
        let listed = list_all(requests, prefix).await;
        if listed.as_ref().is_ok_and(Option::is_none)
            && !NO_LISTING_REPORTED.swap(true, Ordering::Relaxed)
        {
            log::info!(
                "the S3 server does not implement ListMultipartUploads: multipart uploads that no \
                 upload record names (a crash right after creating one) are not looked for"
            );
        }
        listed
    }

    /// Aborts the multipart upload `upload_id` of `key`, dropping its parts; one the store no
    /// longer knows counts as aborted.
    pub async fn abort_multipart_upload(&self, key: &Path, upload_id: &str) -> Result<()> {
        let Backend::Objects { multipart, .. } = &self.backend else {
            return Ok(());
        };
        match multipart.abort_multipart(key, &upload_id.to_string()).await {
            Ok(()) | Err(object_store::Error::NotFound { .. }) => Ok(()),
            Err(e) => Err(e.into()),
        }
    }
}

/// Every page of the listing under `prefix`; `None` if the server does not implement it.
async fn list_all(
    requests: &S3Requests,
    prefix: &Path,
) -> Result<Option<Vec<MultipartUploadInfo>>> {
    let full_prefix = requests.full_prefix(prefix);
    let mut markers: Option<(String, String)> = None;
    let mut listed = Vec::new();
    loop {
        let mut query = format!("prefix={}&uploads=", encode(&full_prefix, false));
        if let Some((key, upload_id)) = &markers {
            query.push_str(&format!(
                "&key-marker={}&upload-id-marker={}",
                encode(key, false),
                encode(upload_id, false)
            ));
        }
        let (status, answer) = requests
            .send_to_bucket(http::Method::GET, &query)
            .await
            .map_err(|f| super::s3_requests::backend_error(format!("ListMultipartUploads: {f}")))?;
        let text = String::from_utf8_lossy(&answer);
        if !(200..300).contains(&status) {
            if status == 501 || text.contains("<Code>NotImplemented</Code>") {
                return Ok(None);
            }
            return Err(failed_answer("ListMultipartUploads", status, &text));
        }
        let page = parse_page(&text).map_err(|reason| StorageError::Corrupt {
            path: format!("ListMultipartUploads of {full_prefix}"),
            reason,
        })?;
        for upload in page.uploads {
            // Everything under the prefix is under the root, so this only skips keys object_store
            // could not address (and so could not abort) anyway.
            match requests.store_key(&upload.key) {
                Some(key) => listed.push(MultipartUploadInfo {
                    key,
                    upload_id: upload.upload_id,
                    initiated: upload.initiated,
                }),
                None => log::warn!(
                    "multipart upload {} of {:?} skipped: not a key of this store",
                    upload.upload_id,
                    upload.key
                ),
            }
        }
        match page.next {
            Some(next) if markers.as_ref() != Some(&next) => markers = Some(next),
            // The same markers again would list the same page forever.
            Some(_) => {
                return Err(super::s3_requests::backend_error(
                    "ListMultipartUploads: a truncated answer whose markers do not advance".into(),
                ))
            }
            None => return Ok(Some(listed)),
        }
    }
}

/// One page of the listing.
#[derive(Debug, PartialEq)]
struct Page {
    uploads: Vec<ListedUpload>,
    /// Where the next page starts (key marker, upload-id marker), if the answer was truncated.
    next: Option<(String, String)>,
}

#[derive(Debug, PartialEq)]
struct ListedUpload {
    /// The bucket's key, `rootdirectory` included.
    key: String,
    upload_id: String,
    initiated: DateTime<Utc>,
}

/// `ListMultipartUploadsResult`, only what is used of it.
#[derive(Deserialize)]
#[serde(rename_all = "PascalCase")]
struct ListResult {
    #[serde(default)]
    is_truncated: bool,
    #[serde(default)]
    next_key_marker: Option<String>,
    #[serde(default)]
    next_upload_id_marker: Option<String>,
    #[serde(default, rename = "Upload")]
    uploads: Vec<UploadElement>,
}

#[derive(Deserialize)]
#[serde(rename_all = "PascalCase")]
struct UploadElement {
    key: String,
    upload_id: String,
    initiated: String,
}

fn parse_page(xml: &str) -> std::result::Result<Page, String> {
    match root_element(xml).as_deref() {
        Some("ListMultipartUploadsResult") => {}
        other => return Err(format!("root element {other:?}: {xml:.200}")),
    }
    let result: ListResult = quick_xml::de::from_str(xml).map_err(|e| e.to_string())?;
    let uploads = result
        .uploads
        .into_iter()
        .map(|u| {
            let initiated = DateTime::parse_from_rfc3339(&u.initiated)
                .map_err(|e| format!("Initiated {:?} of {:?}: {e}", u.initiated, u.key))?
                .with_timezone(&Utc);
            Ok(ListedUpload {
                key: u.key,
                upload_id: u.upload_id,
                initiated,
            })
        })
        .collect::<std::result::Result<_, String>>()?;
    let next = if result.is_truncated {
        let key = result
            .next_key_marker
            .filter(|k| !k.is_empty())
            .ok_or("truncated, without a NextKeyMarker")?;
        Some((key, result.next_upload_id_marker.unwrap_or_default()))
    } else {
        None
    };
    Ok(Page { uploads, next })
}

#[cfg(test)]
mod tests {
    use super::*;

    /// As AWS answers (its documentation's example, with berth's keys), first of two pages.
    const TRUNCATED: &str = r#"<?xml version="1.0" encoding="UTF-8"?>
<ListMultipartUploadsResult xmlns="http://s3.amazonaws.com/doc/2006-03-01/">
  <Bucket>berth-bucket</Bucket>
  <KeyMarker></KeyMarker>
  <UploadIdMarker></UploadIdMarker>
  <NextKeyMarker>root/docker/registry/v2/_berth/uploads/b2/data</NextKeyMarker>
  <NextUploadIdMarker>YW55IGlkZWEgd2h5IGVsdmluZydzIHVwbG9hZCBmYWlsZWQ</NextUploadIdMarker>
  <Prefix>root/docker/registry/v2/_berth/uploads/</Prefix>
  <MaxUploads>2</MaxUploads>
  <IsTruncated>true</IsTruncated>
  <Upload>
    <Key>root/docker/registry/v2/_berth/uploads/a1/data</Key>
    <UploadId>XMgbGlrZSBlbHZpbmcncyBub3QgaGF2aW5nIG11Y2ggbHVjaw</UploadId>
    <Initiator>
      <ID>arn:aws:iam::111122223333:user/user1-11111a31-17b5-4fb7-9df5-b111111f13de</ID>
      <DisplayName>user1-11111a31-17b5-4fb7-9df5-b111111f13de</DisplayName>
    </Initiator>
    <Owner>
      <ID>75aa57f09aa0c8caeab4f8c24e99d10f8e7faeebf76c078efc7c6caea54ba06a</ID>
      <DisplayName>OwnerDisplayName</DisplayName>
    </Owner>
    <StorageClass>STANDARD</StorageClass>
    <Initiated>2010-11-10T20:48:33.000Z</Initiated>
  </Upload>
  <Upload>
    <Key>root/docker/registry/v2/_berth/uploads/b2/data</Key>
    <UploadId>YW55IGlkZWEgd2h5IGVsdmluZydzIHVwbG9hZCBmYWlsZWQ</UploadId>
    <Initiator>
      <ID>arn:aws:iam::444455556666:user/user1-22222a31-17b5-4fb7-9df5-b222222f13de</ID>
      <DisplayName>user1-22222a31-17b5-4fb7-9df5-b222222f13de</DisplayName>
    </Initiator>
    <Owner>
      <ID>b1d16700c70b0b05597d7acd6a3f92be</ID>
      <DisplayName>OwnerDisplayName</DisplayName>
    </Owner>
    <StorageClass>STANDARD</StorageClass>
    <Initiated>2010-11-10T20:49:33.000Z</Initiated>
  </Upload>
</ListMultipartUploadsResult>"#;

    const LAST: &str = r#"<?xml version="1.0" encoding="UTF-8"?>
<ListMultipartUploadsResult xmlns="http://s3.amazonaws.com/doc/2006-03-01/">
  <Bucket>berth-bucket</Bucket>
  <KeyMarker>root/docker/registry/v2/_berth/uploads/b2/data</KeyMarker>
  <UploadIdMarker>YW55IGlkZWEgd2h5IGVsdmluZydzIHVwbG9hZCBmYWlsZWQ</UploadIdMarker>
  <NextKeyMarker>root/docker/registry/v2/_berth/uploads/c3%26/data</NextKeyMarker>
  <NextUploadIdMarker>b4</NextUploadIdMarker>
  <Prefix>root/docker/registry/v2/_berth/uploads/</Prefix>
  <MaxUploads>2</MaxUploads>
  <IsTruncated>false</IsTruncated>
  <Upload>
    <Key>root/docker/registry/v2/_berth/uploads/c3&amp;/data</Key>
    <UploadId>b4</UploadId>
    <StorageClass>STANDARD</StorageClass>
    <Initiated>2024-02-29T23:59:59Z</Initiated>
  </Upload>
</ListMultipartUploadsResult>"#;

    const EMPTY: &str = r#"<?xml version="1.0" encoding="UTF-8"?>
<ListMultipartUploadsResult xmlns="http://s3.amazonaws.com/doc/2006-03-01/"><Bucket>b</Bucket><KeyMarker/><UploadIdMarker/><Prefix>x/</Prefix><MaxUploads>1000</MaxUploads><IsTruncated>false</IsTruncated></ListMultipartUploadsResult>"#;

    fn time(text: &str) -> DateTime<Utc> {
        DateTime::parse_from_rfc3339(text).unwrap().into()
    }

    #[test]
    fn a_truncated_page_names_where_the_next_starts() {
        let page = parse_page(TRUNCATED).unwrap();
        assert_eq!(
            page.uploads,
            vec![
                ListedUpload {
                    key: "root/docker/registry/v2/_berth/uploads/a1/data".into(),
                    upload_id: "XMgbGlrZSBlbHZpbmcncyBub3QgaGF2aW5nIG11Y2ggbHVjaw".into(),
                    initiated: time("2010-11-10T20:48:33Z"),
                },
                ListedUpload {
                    key: "root/docker/registry/v2/_berth/uploads/b2/data".into(),
                    upload_id: "YW55IGlkZWEgd2h5IGVsdmluZydzIHVwbG9hZCBmYWlsZWQ".into(),
                    initiated: time("2010-11-10T20:49:33Z"),
                },
            ]
        );
        assert_eq!(
            page.next,
            Some((
                "root/docker/registry/v2/_berth/uploads/b2/data".into(),
                "YW55IGlkZWEgd2h5IGVsdmluZydzIHVwbG9hZCBmYWlsZWQ".into()
            ))
        );
    }

    #[test]
    fn the_last_page_has_no_next_whatever_markers_it_repeats() {
        let page = parse_page(LAST).unwrap();
        assert_eq!(page.next, None);
        assert_eq!(page.uploads.len(), 1);
        assert_eq!(
            page.uploads[0].key, "root/docker/registry/v2/_berth/uploads/c3&/data",
            "XML escapes are undone"
        );
        assert_eq!(page.uploads[0].initiated, time("2024-02-29T23:59:59Z"));
    }

    #[test]
    fn no_uploads_is_an_empty_page() {
        assert_eq!(
            parse_page(EMPTY).unwrap(),
            Page {
                uploads: vec![],
                next: None
            }
        );
    }

    #[test]
    fn other_answers_are_refused() {
        let error = r#"<?xml version="1.0" encoding="UTF-8"?><Error><Code>NotImplemented</Code><Message>no</Message></Error>"#;
        assert!(parse_page(error).unwrap_err().contains("Error"));
        let truncated_without_marker = TRUNCATED
            .replace("<NextKeyMarker>", "<Other>")
            .replace("</NextKeyMarker>", "</Other>");
        assert!(parse_page(&truncated_without_marker)
            .unwrap_err()
            .contains("NextKeyMarker"));
        let bad_time = LAST.replace("2024-02-29T23:59:59Z", "yesterday");
        assert!(parse_page(&bad_time).unwrap_err().contains("yesterday"));
    }
}
