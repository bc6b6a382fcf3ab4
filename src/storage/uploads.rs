//! Uploads in progress on storage: their bytes, their durable record, and their commit.
//!
//! An upload lives under `_berth/uploads/<id>/`: `data` (the bytes: an append file on local disk,
//! the target of a multipart upload on object stores), `state` (an [`UploadRecord`]: offset, the
//! hash's running state, the multipart parts), on object stores `staged/<offset>` (bytes received
//! but too few for a part yet) and `lease` (who writes it now, see [`super::lock`]). The record is
//! rewritten after every accepted request, so any process sharing the storage can pick the
//! upload up where the last one left it, without re-reading what was already hashed.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};

use futures_util::StreamExt;
use object_store::path::Path;
use object_store::{
    GetOptions, ObjectStore, ObjectStoreExt, PutMode, PutOptions, PutPayload, UpdateVersion,
};
use serde::{Deserialize, Serialize};

use super::lock::{Coordination, UploadGuard};
use super::parts_state::PartsState;
use super::{layout, Backend, BlobWriter, Result, Storage, StorageError};
use crate::oci::Digest;

/// Upload id → (ETag, record) of the last version seen.
pub(super) type RecordCache = Arc<Mutex<HashMap<String, (String, UploadRecord)>>>;

/// What storage keeps about an upload in progress.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
pub struct UploadRecord {
    /// The repository the upload belongs to (an upload id is useless in another one).
    pub repo: String,
    /// The digest algorithm hashed while streaming (`sha256`, `sha512`).
    pub algorithm: String,
    /// RFC 3339 time the upload was started.
    pub started_at: String,
    /// Bytes accepted: the next chunk starts here.
    pub offset: u64,
    /// Bumped at every rewrite, so a process holding the upload in memory can tell whether
    /// another one wrote it since.
    pub generation: u64,
    /// The hash's running state after `hash.offset` bytes (at most `offset`; on local disk the
    /// bytes between are re-hashed from the file on resume).
    #[serde(default)]
    pub hash: Option<HashRecord>,
    /// On object stores: the multipart upload and the staged bytes.
    #[serde(default)]
    pub parts: Option<PartsState>,
    /// The bytes are complete at the upload's data path (on object stores the multipart upload
    /// was completed, and `parts` describes one that no longer exists) but were not committed:
    /// a retried `PUT` commits them without finishing again, and nothing can be appended.
    /// `hash` then covers all `offset` bytes.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub completed: bool,
}

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
pub struct HashRecord {
    pub offset: u64,
    /// Hex of the hasher's serialized state.
    pub state: String,
}

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

/// Size of each of the two slots of a local record file.
const RECORD_SLOT: usize = 4096;

/// A record as written on local disk: slot `generation % 2` of the record file, holding the
/// JSON's length, the first 8 bytes of its SHA-256 (a torn write is detected, and the other slot
/// used) and the JSON. Answers the slot's offset and bytes.
pub(super) fn record_slot(record: &UploadRecord) -> Result<(u64, Vec<u8>)> {
    use sha2::Digest as _;
    let json = serde_json::to_vec(record).expect("a record serializes");
    if json.len() + 12 > RECORD_SLOT {
        return Err(StorageError::Corrupt {
            path: "upload record".into(),
            reason: format!("{} bytes do not fit a record slot", json.len()),
        });
    }
    let mut slot = Vec::with_capacity(RECORD_SLOT);
    slot.extend_from_slice(&(json.len() as u32).to_le_bytes());
    slot.extend_from_slice(&sha2::Sha256::digest(&json)[..8]);
    slot.extend_from_slice(&json);
    slot.resize(RECORD_SLOT, 0);
    Ok(((record.generation % 2) * RECORD_SLOT as u64, slot))
}

/// Reads a record kept on an object store: plain JSON.
fn decode_record(bytes: &[u8]) -> std::result::Result<UploadRecord, String> {
    serde_json::from_slice(bytes).map_err(|e| e.to_string())
}

/// Reads a local record file: the newest intact slot. (Never guessed from the content: a slot
/// starts with its length, whose low byte may well be `{`.)
pub(super) fn decode_record_slots(bytes: &[u8]) -> std::result::Result<UploadRecord, String> {
    use sha2::Digest as _;
    let newest = bytes
        .chunks(RECORD_SLOT)
        .filter_map(|slot| {
            let len = u32::from_le_bytes(slot.get(..4)?.try_into().ok()?) as usize;
            let json = slot.get(12..12 + len)?;
            if len == 0 || sha2::Sha256::digest(json)[..8] != slot[4..12] {
                return None;
            }
            serde_json::from_slice::<UploadRecord>(json).ok()
        })
        .max_by_key(|r| r.generation);
    newest.ok_or_else(|| "no intact record slot".to_string())
}

/// Creates `dir` and its missing ancestors; with `fsync`, syncs the directory holding each new
/// one, so the new entries survive a crash.
fn create_dirs(dir: &std::path::Path, fsync: bool) -> std::io::Result<()> {
    if dir.is_dir() {
        return Ok(());
    }
    let mut missing = vec![dir];
    let mut existing = dir.parent();
    while let Some(d) = existing {
        if d.is_dir() {
            break;
        }
        missing.push(d);
        existing = d.parent();
    }
    std::fs::create_dir_all(dir)?;
    if fsync {
        for new in missing.iter().rev() {
            if let Some(parent) = new.parent() {
                std::fs::File::open(parent)?.sync_all()?;
            }
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn record(generation: u64) -> UploadRecord {
        UploadRecord {
            repo: "r".into(),
            algorithm: "sha256".into(),
            started_at: String::new(),
            offset: generation * 100,
            generation,
            hash: None,
            parts: None,
            completed: false,
        }
    }

    #[test]
    fn the_newest_intact_slot_wins() {
        let mut file = vec![0u8; 2 * RECORD_SLOT];
        for generation in [1, 2, 3] {
            let (offset, slot) = record_slot(&record(generation)).unwrap();
            file[offset as usize..offset as usize + RECORD_SLOT].copy_from_slice(&slot);
        }
        assert_eq!(decode_record_slots(&file).unwrap().generation, 3);
        // Generation 4 torn half-way (a power loss): generation 3 stays readable.
        let (offset, slot) = record_slot(&record(4)).unwrap();
        file[offset as usize..offset as usize + 20].copy_from_slice(&slot[..20]);
        assert_eq!(decode_record_slots(&file).unwrap().generation, 3);
        assert!(decode_record_slots(&[0u8; 10]).is_err());
        let json = serde_json::to_vec(&record(7)).unwrap();
        assert_eq!(decode_record(&json).unwrap().generation, 7);
    }

    #[test]
    fn a_slot_whose_length_looks_like_json_is_still_a_slot() {
        // Found by the end-to-end tests: a record of 123 + 256k bytes starts with `{`.
        let mut long = record(1);
        for pad in 0..400 {
            long.started_at = "x".repeat(pad);
            let (offset, slot) = record_slot(&long).unwrap();
            if slot[0] == b'{' {
                let mut file = vec![0u8; 2 * RECORD_SLOT];
                file[offset as usize..offset as usize + RECORD_SLOT].copy_from_slice(&slot);
                let mut even = long.clone();
                even.generation = 2;
                let (offset, slot) = record_slot(&even).unwrap();
                file[offset as usize..offset as usize + RECORD_SLOT].copy_from_slice(&slot);
                assert_eq!(decode_record_slots(&file).unwrap(), even);
                return;
            }
        }
        panic!("no padding gave a slot starting with '{{'");
    }
}

/// One upload found on storage, for purging.
#[derive(Debug, Clone)]
pub struct StoredUpload {
    pub id: String,
    /// The newest modification of any of its objects.
    pub last_modified: chrono::DateTime<chrono::Utc>,
}

impl Storage {
    /// Starts a new upload: its bytes' writer and its first record (`record.parts` is filled in
    /// here).
    pub async fn new_upload(
        &self,
        upload_id: &str,
        mut record: UploadRecord,
    ) -> Result<BlobWriter> {
        if let Some((local, fsync)) = self.local_files() {
            let location = layout::upload_data(upload_id);
            let path = local.path_to_filesystem(&location)?;
            let (offset, slot) = record_slot(&record)?;
            let mut content = vec![0u8; offset as usize];
            content.extend_from_slice(&slot);
            let sync = self.file_sync(fsync);
            return BlobWriter::create_file(location, path, sync, Some(("state", content))).await;
        }
        let writer = self.new_upload_writer(upload_id).await?;
        record.parts = writer.parts_state();
        self.save_upload(upload_id, &record).await?;
        Ok(writer)
    }

    /// Starts the bytes of a new upload.
    pub async fn new_upload_writer(&self, upload_id: &str) -> Result<BlobWriter> {
        let location = layout::upload_data(upload_id);
        match &self.backend {
            Backend::Filesystem { local, fsync } => {
                let path = local.path_to_filesystem(&location)?;
                BlobWriter::create_file(location, path, self.file_sync(*fsync), None).await
            }
            Backend::Objects {
                multipart,
                part_size,
                requests,
                ..
            } => {
                BlobWriter::create_multipart(
                    multipart.clone(),
                    requests.clone(),
                    self.store.clone(),
                    upload_id,
                    location,
                    *part_size,
                )
                .await
            }
        }
    }

    /// A writer continuing the upload `record` describes.
    pub fn resume_upload_writer(
        &self,
        upload_id: &str,
        record: &UploadRecord,
    ) -> Result<BlobWriter> {
        let location = layout::upload_data(upload_id);
        match &self.backend {
            Backend::Filesystem { local, fsync } => {
                let path = local.path_to_filesystem(&location)?;
                Ok(BlobWriter::resume_file(
                    location,
                    path,
                    self.file_sync(*fsync),
                    record.offset,
                ))
            }
            Backend::Objects {
                multipart,
                part_size,
                requests,
                ..
            } => {
                let corrupt = |reason: String| StorageError::Corrupt {
                    path: layout::upload_record(upload_id).to_string(),
                    reason,
                };
                let parts = record.parts.clone().ok_or_else(|| {
                    corrupt("no multipart state in the record of an object-store upload".into())
                })?;
                parts.check(record.offset).map_err(corrupt)?;
                Ok(BlobWriter::resume_multipart(
                    multipart.clone(),
                    requests.clone(),
                    self.store.clone(),
                    upload_id,
                    location,
                    *part_size,
                    record.offset,
                    parts,
                ))
            }
        }
    }

    /// The chunk size a client is best advised to send (`OCI-Chunk-Min-Length`): a multipart
    /// part on object stores; none on local disk, where every size is as cheap.
    pub fn preferred_chunk_size(&self) -> Option<u64> {
        match &self.backend {
            Backend::Objects { part_size, .. } => Some(*part_size as u64),
            Backend::Filesystem { .. } => None,
        }
    }

    /// Whether hash states must cover every accepted byte before a record is written: on object
    /// stores the bytes already sent as parts cannot be read back to catch up.
    pub fn upload_hash_must_be_exact(&self) -> bool {
        matches!(self.backend, Backend::Objects { .. })
    }

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
    fn forget_record(&self, upload_id: &str) {
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

    /// Streams bytes `from..to` of an upload's data (local disk: catching a hash up on resume).
    pub async fn stream_upload_range(
        &self,
        upload_id: &str,
        range: std::ops::Range<u64>,
    ) -> Result<super::BlobStream> {
        self.stream_object(&layout::upload_data(upload_id), Some(range))
            .await
    }

    /// Streams the data of a finished upload (at `location`) to re-hash it under another algorithm.
    pub async fn stream_upload(&self, location: &Path) -> Result<super::BlobStream> {
        self.stream_object(location, None).await
    }

    /// Makes the finished upload at `location` (`size` bytes, verified to hash to `digest`)
    /// visible as the blob `digest`. The blob appears whole or not at all: a rename on the
    /// filesystem, a copy on object stores.
    ///
    /// A blob already there is replaced on local disk: it may hold other bytes than its digest
    /// says (written by a registry that published unverified bytes, or torn by a power loss
    /// with fsync off), and replacing it by a rename costs what skipping it does, whereas
    /// checking it would mean re-reading all of it. On object stores a copy costs a read and a
    /// write of the whole blob inside the store, and an acknowledged object is not lost or
    /// torn, so one already there is replaced only when its size shows it is not this blob.
    pub async fn commit_upload(&self, location: &Path, digest: &Digest, size: u64) -> Result<()> {
        let target = layout::blob_data(digest);
        if let Some(id) = location.parts().nth(layout::uploads_root().parts().count()) {
            self.forget_record(id.as_ref());
        }
        if let Some((local, fsync)) = self.local_files() {
            // One trip to the blocking pool, and only the fsyncs that make the blob durable
            // (object_store's rename would also sync the upload directory, about to go).
            let from = local.path_to_filesystem(location)?;
            let to = local.path_to_filesystem(&target)?;
            let dir = local.path_to_filesystem(&layout::upload_dir_of(location))?;
            return tokio::task::spawn_blocking(move || -> std::io::Result<()> {
                let parent = to.parent().expect("a blob path has a parent");
                create_dirs(parent, fsync)?;
                // Atomic, also over an existing blob: a reader sees the old file or the new.
                std::fs::rename(&from, &to)?;
                if fsync {
                    std::fs::File::open(parent)?.sync_all()?;
                }
                // The blob is in place: a failure to remove the upload's directory must not
                // fail the commit (a retry would find no data to commit); purging removes it.
                match std::fs::remove_dir_all(&dir) {
                    Err(e) if e.kind() != std::io::ErrorKind::NotFound => {
                        log::warn!("cannot remove {}: {e}", dir.display())
                    }
                    _ => {}
                }
                Ok(())
            })
            .await
            .map_err(|e| StorageError::Io(std::io::Error::other(e)))?
            .map_err(StorageError::Io);
        }
        match self.head(&target).await? {
            Some(existing) if existing.size == size => self.delete(location).await?,
            existing => {
                if let Some(existing) = existing {
                    log::warn!(
                        "blob {digest} on storage has {} bytes, not {size}: replaced",
                        existing.size
                    );
                }
                self.move_object(location, &target, size).await?;
            }
        }
        // As on local disk: once the blob is in place, leftovers are for purging.
        let dir = layout::upload_dir_of(location);
        if let Err(e) = self.remove_upload_dir(&dir).await {
            log::warn!("cannot remove {dir}: {e}");
        }
        Ok(())
    }

    /// The size of a finished upload's data at `location`, or `None` if there is none.
    pub async fn finished_upload_size(&self, location: &Path) -> Result<Option<u64>> {
        Ok(self.head(location).await?.map(|meta| meta.size))
    }

    /// Removes an upload's bytes and state (aborting its multipart upload, if any). The
    /// multipart upload is aborted first: if that fails, the record that names it is kept (an
    /// error is returned), so a later purge can try again rather than leave its parts stored,
    /// and billed, with nothing pointing at them.
    pub async fn discard_upload(&self, upload_id: &str) -> Result<()> {
        if let Backend::Objects { multipart, .. } = &self.backend {
            match self.load_upload(upload_id).await {
                Ok(Some(UploadRecord {
                    parts: Some(parts), ..
                })) => {
                    let aborted = multipart
                        .abort_multipart(&layout::upload_data(upload_id), &parts.multipart_id)
                        .await;
                    match aborted {
                        // Unknown to the store: aborted (or completed) already.
                        Ok(()) | Err(object_store::Error::NotFound { .. }) => {}
                        Err(e) => return Err(e.into()),
                    }
                }
                Ok(_) => {}
                // Unreadable, the record names nothing that could be aborted: remove it.
                Err(StorageError::Corrupt { path, reason }) => {
                    log::warn!("removing upload {upload_id} with a corrupt record {path}: {reason}")
                }
                Err(e) => return Err(e),
            }
        }
        self.forget_record(upload_id);
        self.remove_upload_dir(&layout::upload_dir(upload_id)).await
    }

    pub(super) async fn remove_upload_dir(&self, dir: &Path) -> Result<()> {
        if let Some((local, _)) = self.local_files() {
            let path = local.path_to_filesystem(dir)?;
            return tokio::task::spawn_blocking(move || match std::fs::remove_dir_all(path) {
                Err(e) if e.kind() != std::io::ErrorKind::NotFound => Err(e),
                _ => Ok(()),
            })
            .await
            .map_err(|e| StorageError::Io(std::io::Error::other(e)))?
            .map_err(StorageError::Io);
        }
        self.delete_prefix(dir).await?;
        if let Backend::Filesystem { local, .. } = &self.backend {
            // A directory whose data was renamed away has no file left for object_store's
            // cleanup to start from.
            let path = local.path_to_filesystem(dir)?;
            for sub in [path.join("staged"), path] {
                match tokio::fs::remove_dir(&sub).await {
                    Ok(()) => {}
                    Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
                    Err(e) => return Err(e.into()),
                }
            }
        }
        Ok(())
    }

    /// When the upload was last written (its newest object other than its lease, which the
    /// lock itself writes; the lease's time if nothing else is left, a leftover of a release
    /// racing a removal), or `None` if nothing of it is left.
    pub async fn upload_last_modified(
        &self,
        upload_id: &str,
    ) -> Result<Option<chrono::DateTime<chrono::Utc>>> {
        let lease = layout::upload_lease(upload_id);
        let mut newest = None;
        let mut lease_time = None;
        let mut objects = self.store.list(Some(&layout::upload_dir(upload_id)));
        while let Some(meta) = objects.next().await {
            let meta = match meta {
                Ok(m) => m,
                Err(object_store::Error::NotFound { .. }) => continue,
                Err(e) => return Err(e.into()),
            };
            if meta.location != lease {
                newest = newest.max(Some(meta.last_modified));
            } else {
                lease_time = Some(meta.last_modified);
            }
        }
        Ok(newest.or(lease_time))
    }

    /// Every upload on storage with the time it was last touched.
    pub async fn list_uploads(&self) -> Result<Vec<StoredUpload>> {
        let root = layout::uploads_root();
        let depth = root.parts().count();
        // Per upload: its newest object other than the lease, and the lease's time (writing
        // the lease is the lock's activity, not the upload's; see `upload_last_modified`).
        type Times = (
            Option<chrono::DateTime<chrono::Utc>>,
            Option<chrono::DateTime<chrono::Utc>>,
        );
        let mut newest: HashMap<String, Times> = HashMap::new();
        let mut objects = self.store.list(Some(&root));
        while let Some(meta) = objects.next().await {
            let meta = match meta {
                Ok(m) => m,
                Err(object_store::Error::NotFound { .. }) => continue,
                Err(e) => return Err(e.into()),
            };
            let Some(id) = meta.location.parts().nth(depth) else {
                continue;
            };
            let is_lease = meta.location == layout::upload_lease(id.as_ref());
            let (content, lease) = newest.entry(id.as_ref().to_string()).or_default();
            let slot = if is_lease { lease } else { content };
            *slot = (*slot).max(Some(meta.last_modified));
        }
        let mut uploads: Vec<StoredUpload> = newest
            .into_iter()
            .filter_map(|(id, (content, lease))| {
                Some(StoredUpload {
                    id,
                    last_modified: content.or(lease)?,
                })
            })
            .collect();
        uploads.sort_by(|a, b| a.id.cmp(&b.id));
        Ok(uploads)
    }
}
