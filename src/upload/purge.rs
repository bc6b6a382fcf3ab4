//! Upload purging (distribution's `storage.maintenance.uploadpurging`): uploads untouched for
//! longer than an age are removed with their bytes.
//!
//! The listing that finds them is only a hint: by the time an upload's lock is taken, a client
//! may have resumed it. So each one is checked again under its lock (which no writer holds
//! then), and removed only if still untouched since the cutoff.

use std::time::Duration;

use chrono::{DateTime, Utc};

use super::session::Finish;
use super::{Result, UploadManager};
use crate::storage::StoredUpload;

impl UploadManager {
    /// Removes uploads untouched for longer than `age`. Answers how many were (or, on a dry
    /// run, would be) removed.
    pub async fn purge(&self, age: Duration, dry_run: bool) -> Result<usize> {
        let cutoff = Utc::now() - chrono::Duration::from_std(age).unwrap_or(chrono::Duration::MAX);
        let listed = self.abandoned(cutoff).await?;
        if dry_run {
            for upload in &listed {
                log::info!(
                    "upload purging (dry run): would remove upload {}",
                    upload.id
                );
            }
            return Ok(listed.len());
        }
        let mut purged = 0;
        for upload in &listed {
            if self.purge_one(upload, cutoff).await {
                purged += 1;
            }
        }
        Ok(purged)
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
