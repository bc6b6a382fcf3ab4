//! Upload purging (distribution's `storage.maintenance.uploadpurging`): uploads untouched for
//! longer than an age are removed with their bytes.
//!
//! The listing that finds them is only a hint: by the time an upload's lock is taken, a client
//! may have resumed it. So each one is checked again under its lock (which no writer holds
//! then), and removed only if still untouched since the cutoff.
//!
//! Where the store lists multipart uploads (S3's `ListMultipartUploads`), those under berth's
//! prefixes that were started before the cutoff and that no upload record names are aborted
//! too: a process that died between creating an upload's multipart upload and writing its first
//! record, or a garbage collection's multipart copy whose abort failed, would otherwise leave
//! parts stored, and billed, that no listing of objects shows.

use std::time::Duration;

use chrono::{DateTime, Utc};
use object_store::path::Path;

use super::session::Finish;
use super::{Result, UploadManager};
use crate::storage::{layout, MultipartUploadInfo, StoredUpload, UploadRecord};

impl UploadManager {
    /// Removes uploads untouched for longer than `age`, and aborts multipart uploads older than
    /// that which no upload record names. Answers how many of both were (or, on a dry run,
    /// would be) removed.
    pub async fn purge(&self, age: Duration, dry_run: bool) -> Result<usize> {
        let cutoff = Utc::now() - chrono::Duration::from_std(age).unwrap_or(chrono::Duration::MAX);
        let listed = self.abandoned(cutoff).await?;
        let mut purged = 0;
        if dry_run {
            for upload in &listed {
                log::info!(
                    "upload purging (dry run): would remove upload {}",
                    upload.id
                );
            }
            purged = listed.len();
        } else {
            for upload in &listed {
                if self.purge_one(upload, cutoff).await {
                    purged += 1;
                }
            }
        }
        // After the uploads: the multipart uploads of those just removed are gone already.
        Ok(purged + self.abort_unnamed_multiparts(cutoff, dry_run).await)
    }

    /// Aborts the multipart uploads under berth's prefixes started before `cutoff` that no
    /// upload record names; how many were (or would be). Failures are logged, and the next
    /// purge tries again.
    async fn abort_unnamed_multiparts(&self, cutoff: DateTime<Utc>, dry_run: bool) -> usize {
        let uploads = layout::uploads_root();
        // Garbage collection copies blobs aside in parts (`storage::copy`); nothing records
        // those multipart uploads, each lives only as long as one copy, so one older than the
        // cutoff is a copy whose abort failed. No lock is needed: a copy older than the age
        // purging is configured with (hours) is not running.
        let set_aside = layout::gc_quarantine();
        let mut aborted = 0;
        for prefix in [&uploads, &set_aside] {
            let listed = match self.storage.list_multipart_uploads(prefix).await {
                Ok(Some(listed)) => listed,
                // Nothing to list on this store, under either prefix.
                Ok(None) => return aborted,
                Err(e) => {
                    log::warn!(
                        "upload purging: cannot list the multipart uploads under {prefix}: {e}"
                    );
                    continue;
                }
            };
            for multipart in listed.iter().filter(|m| m.initiated < cutoff) {
                let done = match upload_of(&uploads, &multipart.key) {
                    Some(id) => self.abort_if_unnamed(&id, multipart, dry_run).await,
                    None => {
                        abort_logged(self, multipart, "no upload record names it", dry_run).await
                    }
                };
                if done {
                    aborted += 1;
                }
            }
        }
        aborted
    }

    /// Aborts `multipart`, found under upload `id`'s directory, unless `id`'s record names it
    /// (then it is the upload's own, left to the upload's purging). Decided under the upload's
    /// lock, so that no request is writing a record meanwhile; a held lock means the upload is
    /// in use, and the decision waits for the next purge.
    async fn abort_if_unnamed(
        &self,
        id: &str,
        multipart: &MultipartUploadInfo,
        dry_run: bool,
    ) -> bool {
        if dry_run {
            return match self.storage.load_upload(id).await {
                Ok(record) if names(record.as_ref(), id, multipart) => false,
                Ok(record) => {
                    abort_logged(self, multipart, unnamed_reason(record.as_ref()), true).await
                }
                Err(e) => {
                    log::warn!("upload purging (dry run): cannot read upload {id}: {e}");
                    false
                }
            };
        }
        let (guard, record) = match self.storage.lock_upload(id).await {
            Ok(Some((guard, record))) => (Some(guard), Some(record)),
            // No record: created just before a crash, or its upload was removed since.
            Ok(None) => (None, None),
            Err(e) => {
                log::debug!(
                    "upload purging: upload {id} not checked for unnamed multipart uploads: {e}"
                );
                return false;
            }
        };
        let aborted = if names(record.as_ref(), id, multipart) {
            false
        } else {
            abort_logged(self, multipart, unnamed_reason(record.as_ref()), false).await
        };
        if let Some(guard) = guard {
            guard.release().await;
        }
        aborted
    }

    /// The uploads that, as listed, nobody touched since `cutoff`.
    async fn abandoned(&self, cutoff: DateTime<Utc>) -> Result<Vec<StoredUpload>> {
        let mut uploads = self.storage.list_uploads().await?;
        uploads.retain(|u| u.last_modified < cutoff);
        Ok(uploads)
    }

    /// Removes a listed upload if, under its lock, it is still untouched since `cutoff`.
    /// Whether it was removed; if removing fails (an object store refusing to abort the
    /// multipart upload), its record stays, so the next purge tries again.
    async fn purge_one(&self, upload: &StoredUpload, cutoff: DateTime<Utc>) -> bool {
        let id = upload.id.as_str();
        let guard = match self.storage.lock_upload(id).await {
            Ok(Some((guard, _))) => Some(guard),
            // No record: a directory left by a crash before its first record.
            Ok(None) => None,
            // Held: someone is writing it right now, so it is not abandoned.
            Err(_) => return false,
        };
        // Nobody writes it while the lock is held: its newest object tells whether a request
        // wrote it since the listing.
        let touched = self.storage.upload_last_modified(id).await;
        let remove = match &touched {
            Ok(Some(t)) => *t < cutoff,
            Ok(None) => false, // gone meanwhile
            Err(e) => {
                log::warn!("upload purging: cannot check upload {id}: {e}");
                false
            }
        };
        let removed = if remove {
            if let Some(addr) = self.sessions.lock().unwrap().remove(id) {
                addr.do_send(Finish);
            }
            self.storage.discard_upload(id).await
        } else {
            Ok(())
        };
        if let Some(guard) = guard {
            guard.release().await;
        }
        match removed {
            Ok(()) if remove => {
                log::info!(
                    "upload purging: removed upload {id} (untouched since {})",
                    upload.last_modified
                );
                true
            }
            Ok(()) => false,
            Err(e) => {
                log::warn!("upload purging: upload {id} is kept, to be removed next time: {e}");
                false
            }
        }
    }
}

/// The upload whose directory under `uploads` holds `key`.
fn upload_of(uploads: &Path, key: &Path) -> Option<String> {
    let rest = key.prefix_match(uploads)?;
    rest.into_iter().next().map(|id| id.as_ref().to_string())
}

/// Whether upload `id`'s `record` names `multipart` as the upload's own.
fn names(record: Option<&UploadRecord>, id: &str, multipart: &MultipartUploadInfo) -> bool {
    let Some(parts) = record.and_then(|r| r.parts.as_ref()) else {
        return false;
    };
    parts.multipart_id == multipart.upload_id && multipart.key == layout::upload_data(id)
}

fn unnamed_reason(record: Option<&UploadRecord>) -> &'static str {
    match record {
        None => "its upload has no record",
        Some(_) => "its upload's record names another",
    }
}

/// Aborts `multipart` (on a dry run, only says so), logging why; whether it was (or would be).
async fn abort_logged(
    manager: &UploadManager,
    multipart: &MultipartUploadInfo,
    why: &str,
    dry_run: bool,
) -> bool {
    let MultipartUploadInfo {
        key,
        upload_id,
        initiated,
    } = multipart;
    if dry_run {
        log::info!(
            "upload purging (dry run): would abort multipart upload {upload_id} of {key} \
             (started {initiated}; {why})"
        );
        return true;
    }
    match manager.storage.abort_multipart_upload(key, upload_id).await {
        Ok(()) => {
            log::info!(
                "upload purging: aborted multipart upload {upload_id} of {key} \
                 (started {initiated}; {why})"
            );
            true
        }
        Err(e) => {
            log::warn!(
                "upload purging: aborting multipart upload {upload_id} of {key} failed, to be \
                 tried next time: {e}"
            );
            false
        }
    }
}

#[cfg(test)]
mod tests {
    use super::super::tests::{body, manager, start};
    use super::*;
    use crate::oci::{Digest, RepoName};
    use crate::storage::faults::{Faults, Op};
    use crate::storage::Storage;
    use crate::upload::UploadError;

    /// An upload to repository `a` whose first PATCH, at offset 0, wrote `abc`.
    async fn started_with_abc(uploads: &UploadManager) -> (RepoName, String) {
        let repo: RepoName = "a".parse().unwrap();
        let id = start(uploads, &repo).await;
        uploads
            .append(&repo, &id, Some(0), None, body(&[b"abc"]))
            .await
            .unwrap();
        (repo, id)
    }

    #[actix_rt::test]
    async fn abandoned_uploads_are_purged_with_their_bytes() {
        let dir = tempfile::tempdir().unwrap();
        let storage = Storage::filesystem(dir.path(), false).unwrap();
        let uploads = manager(&storage);
        let repo: RepoName = "a".parse().unwrap();
        let id = start(&uploads, &repo).await;
        uploads
            .append(&repo, &id, None, None, body(&[b"abc"]))
            .await
            .unwrap();
        let data = dir
            .path()
            .join("docker/registry/v2/_berth/uploads")
            .join(&id);
        assert!(data.exists());
        assert_eq!(
            uploads
                .purge(Duration::from_secs(3600), false)
                .await
                .unwrap(),
            0
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
        assert_eq!(
            uploads
                .purge(Duration::from_millis(10), true)
                .await
                .unwrap(),
            1
        );
        assert!(data.exists(), "a dry run removes nothing");
        assert_eq!(
            uploads
                .purge(Duration::from_millis(10), false)
                .await
                .unwrap(),
            1
        );
        assert!(matches!(
            uploads.status(&repo, &id).await,
            Err(UploadError::Unknown(_))
        ));
        assert_eq!(uploads.sessions_in_memory(), 0);
        assert!(!data.exists(), "the abandoned upload's bytes are removed");
    }

    /// Purging between its listing and its lock: an upload resumed in that window (its PATCH
    /// answered 202) is not removed, and completes.
    async fn resumed_after_the_listing_is_kept(storage: Storage) {
        let uploads = manager(&storage);
        let (repo, id) = started_with_abc(&uploads).await;
        tokio::time::sleep(Duration::from_millis(50)).await;
        let cutoff = Utc::now() - chrono::Duration::milliseconds(10);
        let listed = uploads.abandoned(cutoff).await.unwrap();
        assert_eq!(listed.len(), 1, "listed as abandoned");
        // The client comes back in the window.
        assert_eq!(
            uploads
                .append(&repo, &id, Some(3), None, body(&[b"def"]))
                .await
                .unwrap(),
            6
        );
        let purged = uploads.purge_one(&listed[0], cutoff).await;
        let digest = Digest::sha256(b"abcdef");
        let completed = uploads
            .complete(&repo, &id, Some(6), None, body(&[]), &digest)
            .await;
        assert_eq!(completed.expect("the resumed upload completes").size, 6);
        assert!(!purged);
        assert_eq!(storage.blob_size(&digest).await.unwrap(), Some(6));
    }

    #[actix_rt::test]
    async fn an_upload_resumed_after_the_listing_is_kept_on_disk() {
        let dir = tempfile::tempdir().unwrap();
        resumed_after_the_listing_is_kept(Storage::filesystem(dir.path(), true).unwrap()).await;
    }

    #[actix_rt::test]
    async fn an_upload_resumed_after_the_listing_is_kept_on_object_stores() {
        resumed_after_the_listing_is_kept(Storage::in_memory()).await;
    }

    #[actix_rt::test]
    async fn a_failed_abort_keeps_the_record_and_the_next_purge_retries() {
        let faults = Faults::default();
        let storage = Storage::in_memory().with_faults(faults.clone());
        let uploads = manager(&storage);
        let (repo, id) = started_with_abc(&uploads).await;
        tokio::time::sleep(Duration::from_millis(50)).await;
        faults.fail(Op::AbortMultipart, "_berth/uploads", 1);
        let age = Duration::from_millis(10);
        assert_eq!(uploads.purge(age, false).await.unwrap(), 0);
        let record = storage.load_upload(&id).await.unwrap();
        assert!(
            record.and_then(|r| r.parts).is_some(),
            "the record naming the multipart upload survives a failed abort"
        );
        // The in-memory store refuses to abort an upload it does not know: this purge
        // succeeding means the multipart upload was still there and is aborted now.
        assert_eq!(uploads.purge(age, false).await.unwrap(), 1);
        assert_eq!(storage.load_upload(&id).await.unwrap(), None);
        assert!(matches!(
            uploads.status(&repo, &id).await,
            Err(UploadError::Unknown(_))
        ));
    }
}

#[cfg(test)]
mod unnamed_multipart_tests {
    use super::*;
    use crate::storage::PartsState;

    fn multipart(key: Path, upload_id: &str) -> MultipartUploadInfo {
        MultipartUploadInfo {
            key,
            upload_id: upload_id.into(),
            initiated: Utc::now(),
        }
    }

    fn record_naming(multipart_id: Option<&str>) -> UploadRecord {
        UploadRecord {
            repo: "a".into(),
            algorithm: "sha256".into(),
            started_at: String::new(),
            offset: 0,
            generation: 1,
            hash: None,
            parts: multipart_id.map(|id| PartsState {
                multipart_id: id.into(),
                ..Default::default()
            }),
            completed: false,
        }
    }

    #[test]
    fn keys_under_an_upload_directory_belong_to_that_upload() {
        let root = layout::uploads_root();
        assert_eq!(
            upload_of(&root, &layout::upload_data("u1")).as_deref(),
            Some("u1")
        );
        assert_eq!(
            upload_of(&root, &layout::upload_staged("u1", 0, 0)).as_deref(),
            Some("u1")
        );
        assert_eq!(upload_of(&root, &layout::gc_run("r").join("x")), None);
    }

    #[test]
    fn only_the_record_naming_the_id_at_the_data_key_keeps_a_multipart_upload() {
        let own = multipart(layout::upload_data("u1"), "m1");
        assert!(names(Some(&record_naming(Some("m1"))), "u1", &own));
        assert!(!names(None, "u1", &own), "no record");
        assert!(
            !names(Some(&record_naming(Some("m2"))), "u1", &own),
            "the record names another"
        );
        assert!(
            !names(Some(&record_naming(None)), "u1", &own),
            "the record names none"
        );
        let elsewhere = multipart(layout::upload_dir("u1").join("other"), "m1");
        assert!(
            !names(Some(&record_naming(Some("m1"))), "u1", &elsewhere),
            "the id at another key of the upload is not its own"
        );
    }
}
