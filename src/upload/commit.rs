//! The end of an upload: its digest verified (by the streamed hash, or by reading the stored
//! bytes back where that hash cannot be trusted alone), then its bytes committed under the
//! digest; a commit that fails after the bytes were assembled is recorded, so a retry commits.

use std::collections::VecDeque;

use bytes::Bytes;
use futures_util::{Stream, StreamExt};

use super::ingest::{BODY_IDLE_TIMEOUT, MAX_HASH_IN_FLIGHT};
use super::session::Cached;
use super::verifier::{Current, Progress, Update};
use super::{Committed, Result, UploadError, UploadManager};
use crate::oci::{Algorithm, Digest};
use crate::storage::{HashRecord, StorageError, UploadGuard, UploadRecord};

impl UploadManager {
    /// Verifies and commits a fully received upload. A wrong digest ends the upload; any other
    /// failure (the backend down for a moment, or refusing) leaves it on storage, so the
    /// client's retry of the PUT tries again: once the bytes are complete at the upload's data
    /// path (on object stores, the multipart upload completed), the record says so, and the
    /// retry commits them instead of finishing a second time.
    ///
    /// The digest is the streamed hash's when this process hashed every byte itself (the fast
    /// path: nothing is read back). The stored bytes are hashed again before they are
    /// published when the client names another algorithm, and on local disk when part of the
    /// hash came from a record ([`Cached::restored`]): that record is not synced, so after a
    /// power loss it can describe data pages the disk never got. On object stores the part
    /// list and hash state are recorded only once the store acknowledged the parts, and
    /// completion assembles exactly the recorded parts, so there the completed object's size
    /// is checked (one HEAD) rather than its bytes re-read (a GET of the whole blob for every
    /// push that ends on another instance than the one that streamed it).
    pub(super) async fn finish(
        &self,
        id: &str,
        record: &UploadRecord,
        cached: Cached,
        algorithm: Algorithm,
        expected: &Digest,
        guard: &UploadGuard,
    ) -> Result<Committed> {
        let Cached {
            writer,
            verifier,
            latest,
            restored,
        } = cached;
        let size = writer.written();
        let location = crate::storage::layout::upload_data(id);
        let exact = self.storage.upload_hash_must_be_exact();
        let mismatch = |actual: Digest| UploadError::DigestMismatch {
            expected: expected.clone(),
            actual,
        };
        let mut reread = algorithm != expected.algorithm() || (restored > 0 && !exact);
        let mut check_size = exact && (restored > 0 || record.completed);
        let mut completed = record.completed;
        let outcome = async {
            if algorithm == expected.algorithm() {
                let (digest, _) = verifier
                    .send(Current)
                    .await
                    .map_err(|e| UploadError::BodyInterrupted(e.to_string()))?;
                if &digest != expected {
                    // Its multipart upload is aborted by the discard below, before the record
                    // naming it goes (aborting here too would make that second abort fail).
                    return Err(mismatch(digest));
                }
            }
            if !completed {
                // A holder that lost the upload must not assemble it (its part list is not the
                // newest); the fence also refuses its later writes.
                guard.check().await?;
                match writer.finish().await {
                    Ok(_) => completed = true,
                    // The multipart upload may be gone: a completion whose answer was lost, or
                    // a crash before the record said so (S3 then says NoSuchUpload, some
                    // servers AccessDenied). If an object of the accepted size is there (only a
                    // completion writes it), it is checked by re-reading it, like any bytes
                    // this process did not hash. (Only then is it recorded as completed: the
                    // crashed request's bytes may not be this one's.)
                    Err(e) if exact => match self.storage.finished_upload_size(&location).await {
                        Ok(Some(n)) if n == size => {
                            log::info!("upload {id}: found completed ({e}); verifying it");
                            reread = true;
                            check_size = false;
                        }
                        _ => return Err(e.into()),
                    },
                    Err(e) => return Err(e.into()),
                }
            }
            if check_size {
                let stored = self.storage.finished_upload_size(&location).await?;
                if stored != Some(size) {
                    return Err(UploadError::Storage(StorageError::Corrupt {
                        path: location.to_string(),
                        reason: format!("completed upload has {stored:?} bytes, {size} accepted"),
                    }));
                }
            }
            if reread {
                let (digest, hashed) = self.hash_stored(&location, expected.algorithm()).await?;
                if hashed != size {
                    return Err(UploadError::Storage(StorageError::Corrupt {
                        path: location.to_string(),
                        reason: format!("finished upload has {hashed} bytes, {size} accepted"),
                    }));
                }
                if &digest != expected {
                    log::warn!(
                        "upload {id}: stored bytes hash to {digest}, not {expected}: refused"
                    );
                    return Err(mismatch(digest));
                }
                completed = true;
            }
            let repo: crate::oci::RepoName =
                record.repo.parse().map_err(|e| StorageError::Corrupt {
                    path: crate::storage::layout::upload_record(id).to_string(),
                    reason: format!("{e}"),
                })?;
            let link = crate::storage::layout::layer_link(&repo, expected);
            self.storage
                .commit_upload(&location, expected, size, &link)
                .await?;
            Ok(Committed {
                digest: expected.clone(),
                size,
            })
        }
        .await;
        match &outcome {
            // A wrong digest or a failed sync ends the upload; any other failure (the backend
            // down for a moment) leaves it on storage for the client's retry of the PUT.
            Err(e) if e.ends_upload() => {
                let _ = self.storage.discard_upload(id).await;
            }
            // Finished now but not committed: say so, so the retry does not finish again.
            Err(_) if completed && !record.completed => {
                let _ = verifier.send(Progress).await;
                let hash = latest
                    .get()
                    .map(|(offset, state)| HashRecord {
                        offset,
                        state: hex::encode(state),
                    })
                    .or_else(|| record.hash.clone());
                let next = UploadRecord {
                    offset: size,
                    generation: record.generation + 1,
                    hash,
                    completed: true,
                    ..record.clone()
                };
                if let Err(e) = self.storage.save_upload_held(guard, id, &next).await {
                    log::warn!("upload {id}: cannot record its completion: {e}");
                }
            }
            _ => {}
        }
        outcome
    }

    /// Hashes the stored bytes at `location` with `algorithm` on a hashing thread. Answers the
    /// digest and how many bytes were read.
    async fn hash_stored(
        &self,
        location: &object_store::path::Path,
        algorithm: Algorithm,
    ) -> Result<(Digest, u64)> {
        let (verifier, _) = self.hashing.spawn(algorithm);
        let mut data = self.storage.stream_upload(location).await?.stream;
        let mut in_flight = VecDeque::new();
        while let Some(chunk) = data.next().await {
            verifier.do_send(Update(vec![chunk?]));
            in_flight.push_back(verifier.send(Progress));
            if in_flight.len() > MAX_HASH_IN_FLIGHT {
                let _ = in_flight.pop_front().expect("non-empty").await;
            }
        }
        verifier
            .send(Current)
            .await
            .map_err(|e| UploadError::BodyInterrupted(e.to_string()))
    }
}

/// Whether a request body has no bytes (read to its end, or to its first byte).
pub(super) async fn body_is_empty<S, E>(body: &mut S) -> bool
where
    S: Stream<Item = Result<Bytes, E>> + Unpin,
{
    loop {
        match tokio::time::timeout(BODY_IDLE_TIMEOUT, body.next()).await {
            Ok(Some(Ok(bytes))) if bytes.is_empty() => continue,
            Ok(None) => return true,
            _ => return false,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::super::tests::{body, manager, start};
    use super::*;
    use crate::oci::RepoName;
    use crate::storage::faults::{Faults, Op};
    use crate::storage::Storage;

    /// Starts an upload of `data` to `repo` whose every later read of its bytes fails.
    async fn started_unreadable(
        uploads: &UploadManager,
        faults: &Faults,
        repo: &RepoName,
        data: &'static [u8],
    ) -> String {
        let id = start(uploads, repo).await;
        faults.fail(Op::Get, &format!("{id}/data"), 1000);
        uploads
            .append(repo, &id, None, None, body(&[data]))
            .await
            .unwrap();
        id
    }

    #[actix_rt::test]
    async fn only_a_resumed_upload_is_read_back_before_it_is_published() {
        let dir = tempfile::tempdir().unwrap();
        let faults = Faults::default();
        let storage = Storage::filesystem(dir.path(), true)
            .unwrap()
            .with_faults(faults.clone());
        let repo: RepoName = "r".parse().unwrap();
        let data: &'static [u8] = Box::leak(vec![3u8; 3_000_000].into_boxed_slice());
        let digest = Digest::sha256(data);
        // Every read of upload data fails: the fast path (this process hashed every byte as
        // it arrived) must not need one.
        let uploads = manager(&storage);
        let id = started_unreadable(&uploads, &faults, &repo, data).await;
        let committed = uploads
            .complete(&repo, &id, None, None, body(&[]), &digest)
            .await
            .unwrap();
        assert_eq!(committed.size, data.len() as u64);
        // Resumed elsewhere, the same upload is read back: here the read fails, so it is not
        // published (and stays, for a retry).
        let id = started_unreadable(&uploads, &faults, &repo, data).await;
        let resumed = manager(&storage);
        let other = Digest::sha256(b"other");
        let err = resumed
            .complete(&repo, &id, None, None, body(&[]), &digest)
            .await
            .unwrap_err();
        assert!(matches!(err, UploadError::Storage(_)), "{err}");
        assert_eq!(resumed.status(&repo, &id).await.unwrap(), data.len() as u64);
        faults.heal();
        assert!(matches!(
            resumed
                .complete(&repo, &id, None, None, body(&[]), &other)
                .await,
            Err(UploadError::DigestMismatch { .. })
        ));
    }
}
