//! Reading and rewriting upload records on storage: in place on local disk, `If-Match` under
//! leases, one object per fencing token on Redis-locked stores, with a cache of the records seen
//! so an unchanged one is not fetched again. Apart from the upload's other operations because
//! this is where the lock's guarantees meet the record.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};

use object_store::path::Path;
use object_store::{
    GetOptions, ObjectStore, ObjectStoreExt, PutMode, PutOptions, PutPayload, UpdateVersion,
};

use super::lock::{Coordination, UploadGuard};
use super::upload_record::{decode_record, decode_record_slots, record_slot, UploadRecord};
use super::{layout, Result, Storage, StorageError};

/// Upload id → (ETag, record) of the last version seen.
pub(super) type RecordCache = Arc<Mutex<HashMap<String, (String, UploadRecord)>>>;

/// A record as loaded: with the ETag a conditional rewrite needs, and on Redis-locked stores the
/// fencing token it was written under.
pub(super) struct LoadedRecord {
    pub record: UploadRecord,
    pub etag: Option<String>,
    pub token: u64,
}

/// Records cached at most (other instances finish uploads this one saw; the cache starts over
/// when full rather than grow).
const RECORD_CACHE_MAX: usize = 4096;

fn remember(cache: &RecordCache, upload_id: &str, etag: String, record: &UploadRecord) {
    let mut records = cache.lock().unwrap();
    if records.len() >= RECORD_CACHE_MAX && !records.contains_key(upload_id) {
        records.clear();
    }
    records.insert(upload_id.to_string(), (etag, record.clone()));
}

impl Storage {
    /// The upload's record, or `None` if there is no such upload.
    pub async fn load_upload(&self, upload_id: &str) -> Result<Option<UploadRecord>> {
        Ok(self
            .load_upload_entry(upload_id)
            .await?
            .map(|entry| entry.record))
    }

    /// The upload's record with what a lock holder needs to write the next one.
    pub(super) async fn load_upload_entry(&self, upload_id: &str) -> Result<Option<LoadedRecord>> {
        let path = layout::upload_record(upload_id);
        if self.local_files().is_none() {
            if let Coordination::Redis(_) = &*self.coordination {
                return self.load_fenced_record(upload_id).await;
            }
            return self.load_object_record(upload_id, &path).await;
        }
        let Some(bytes) = self.read_small(&path).await? else {
            return Ok(None);
        };
        let record = decode_record_slots(&bytes).map_err(|reason| StorageError::Corrupt {
            path: path.to_string(),
            reason,
        })?;
        Ok(Some(LoadedRecord {
            record,
            etag: None,
            token: 0,
        }))
    }

    /// Object stores: the record is fetched only if its ETag changed since this process last saw
    /// it (a HEAD answers in a fraction of the time a GET takes to its first byte; some S3
    /// servers ignore `If-None-Match` on GET).
    async fn load_object_record(
        &self,
        upload_id: &str,
        path: &Path,
    ) -> Result<Option<LoadedRecord>> {
        let known = self.records.lock().unwrap().get(upload_id).cloned();
        if let Some((etag, record)) = known {
            match self.store.head(path).await {
                Ok(meta) if meta.e_tag.as_deref() == Some(etag.as_str()) => {
                    return Ok(Some(LoadedRecord {
                        record,
                        etag: Some(etag),
                        token: 0,
                    }))
                }
                Ok(_) => {}
                Err(object_store::Error::NotFound { .. }) => {
                    self.forget_record(upload_id);
                    return Ok(None);
                }
                Err(e) => return Err(e.into()),
            }
        }
        self.fetch_record(upload_id, path, 0).await
    }

    /// Reads the record at `path` (written under fencing token `token`) and remembers it.
    async fn fetch_record(
        &self,
        upload_id: &str,
        path: &Path,
        token: u64,
    ) -> Result<Option<LoadedRecord>> {
        let result = match self.store.get_opts(path, GetOptions::default()).await {
            Ok(r) => r,
            Err(object_store::Error::NotFound { .. }) => {
                self.forget_record(upload_id);
                return Ok(None);
            }
            Err(e) => return Err(e.into()),
        };
        let etag = result.meta.e_tag.clone();
        let bytes = result.bytes().await?;
        let record = decode_record(&bytes).map_err(|reason| StorageError::Corrupt {
            path: path.to_string(),
            reason,
        })?;
        if let Some(etag) = &etag {
            remember(&self.records, upload_id, etag.clone(), &record);
        }
        Ok(Some(LoadedRecord {
            record,
            etag,
            token,
        }))
    }

    /// Redis-locked uploads: the record of the highest fencing token (see `storage::lock::redis`):
    /// one listing of the upload's directory, and a GET only if that record changed since this
    /// process last saw it.
    async fn load_fenced_record(&self, upload_id: &str) -> Result<Option<LoadedRecord>> {
        let listing = self
            .store
            .list_with_delimiter(Some(&layout::upload_dir(upload_id)))
            .await?;
        let newest = listing
            .objects
            .iter()
            .filter_map(|meta| {
                let token = layout::fenced_record_token(meta.location.filename()?)?;
                Some((token, meta))
            })
            .max_by_key(|(token, _)| *token);
        let Some((token, meta)) = newest else {
            self.forget_record(upload_id);
            return Ok(None);
        };
        let known = self.records.lock().unwrap().get(upload_id).cloned();
        if let (Some((etag, record)), Some(listed)) = (known, &meta.e_tag) {
            if &etag == listed {
                return Ok(Some(LoadedRecord {
                    record,
                    etag: Some(etag),
                    token,
                }));
            }
        }
        let path = meta.location.clone();
        self.fetch_record(upload_id, &path, token).await
    }

    /// Forgets the cached record of an upload that is gone.
    pub(super) fn forget_record(&self, upload_id: &str) {
        self.records.lock().unwrap().remove(upload_id);
    }

    /// Writes the upload's record outside any lock: the first record of a new upload.
    pub async fn save_upload(&self, upload_id: &str, record: &UploadRecord) -> Result<()> {
        self.write_record(upload_id, record, None).await
    }

    /// Rewrites the upload's record under its lock. On object stores honouring conditional
    /// writes it is written only if it is still the one read under the lock (`If-Match`): a
    /// holder that stalled past its lease finds another holder's record there and fails. On
    /// Redis-locked stores it goes under the holder's token (`state.<token>`), where a stale
    /// holder's record loses to the newer holder's, and the record it replaces is removed.
    pub async fn save_upload_held(
        &self,
        guard: &UploadGuard,
        upload_id: &str,
        record: &UploadRecord,
    ) -> Result<()> {
        self.write_record(upload_id, record, Some(guard)).await
    }

    /// On local disk the record goes to the other of two slots of the record file (see
    /// [`record_slot`]), in place: a crash leaves the old record or the new one, and no rename
    /// (which ext4 turns into a flush when it replaces a file) is paid per chunk. It is not
    /// fsynced: the bytes it counts are synced when the upload completes, and a lost record
    /// only makes the client resend a chunk. On local disk the write is done on the calling
    /// thread, like the lock (see `lock_local_upload`).
    async fn write_record(
        &self,
        upload_id: &str,
        record: &UploadRecord,
        guard: Option<&UploadGuard>,
    ) -> Result<()> {
        let path = layout::upload_record(upload_id);
        if let Some((local, _)) = self.local_files() {
            use std::os::unix::fs::FileExt;
            let (offset, slot) = record_slot(record)?;
            std::fs::OpenOptions::new()
                .write(true)
                .create(true)
                .truncate(false)
                .open(local.path_to_filesystem(&path)?)?
                .write_all_at(&slot, offset)?;
            return Ok(());
        }
        if let Some(guard) = guard {
            // Still the holder? On a Redis-locked store nothing else refuses a stale holder's
            // record (it would only lose to the newer token's). With leases the record is
            // written `If-Match` on the one read, which refuses a stale holder only once the new
            // holder rewrote it: one that took over and is still streaming has not, and a stale
            // write would land and make the new holder's fail (tests/lock_review.rs).
            guard.check().await?;
        }
        let json = PutPayload::from(serde_json::to_vec(record).expect("a record serializes"));
        let (path, mode, replaces) = match (&*self.coordination, guard) {
            (Coordination::Redis(_), _) => {
                let token = guard.map_or(0, |g| g.token());
                let replaces = guard
                    .map(|g| g.record_token())
                    .filter(|&old| old != token)
                    .map(|old| layout::upload_record_fenced(upload_id, old));
                let path = layout::upload_record_fenced(upload_id, token);
                (path, PutMode::Overwrite, replaces)
            }
            (Coordination::Leases(_), Some(guard)) => match guard.record_etag() {
                Some(etag) => (
                    path,
                    PutMode::Update(UpdateVersion {
                        e_tag: Some(etag),
                        version: None,
                    }),
                    None,
                ),
                None => (path, PutMode::Overwrite, None),
            },
            _ => (path, PutMode::Overwrite, None),
        };
        let put = self
            .store
            .put_opts(
                &path,
                json,
                PutOptions {
                    mode,
                    ..Default::default()
                },
            )
            .await;
        let put = match put {
            Ok(put) => put,
            Err(object_store::Error::Precondition { .. }) => {
                self.forget_record(upload_id);
                return Err(StorageError::Fenced(format!(
                    "the record of upload {upload_id} was rewritten by another holder"
                )));
            }
            Err(e) => return Err(e.into()),
        };
        match &put.e_tag {
            Some(etag) => remember(&self.records, upload_id, etag.clone(), record),
            None => self.forget_record(upload_id),
        };
        if let Some(guard) = guard {
            let token = guard.token();
            guard.note_record(put.e_tag, record, token);
        }
        if let Some(old) = replaces {
            match self.store.delete(&old).await {
                Ok(()) | Err(object_store::Error::NotFound { .. }) => {}
                // Left for purging: the newer record is what readers take.
                Err(e) => log::warn!("cannot remove the replaced record {old}: {e}"),
            }
        }
        Ok(())
    }
}
