//! Uploads in progress on storage: their bytes, their durable record, and their commit.
//!
//! An upload lives under `_berth/uploads/<id>/`: `data` (the bytes: an append file on local disk,
//! the target of a multipart upload on object stores), `state` (an [`UploadRecord`]: offset, the
//! hash's running state, the multipart parts), on object stores `staged/<offset>` (bytes received
//! but too few for a part yet) and `lease` (who writes it now, see [`super::lock`]). The record is
//! rewritten after every accepted request, so any process sharing the storage can pick the
//! upload up where the last one left it, without re-reading what was already hashed.

use std::collections::HashMap;

use futures_util::StreamExt;
use object_store::path::Path;
use object_store::{ObjectStoreExt, PutPayload};
use serde::{Deserialize, Serialize};

use super::writer::PartsState;
use super::{layout, Backend, BlobWriter, Result, Storage, StorageError};
use crate::oci::Digest;

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
}

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
pub struct HashRecord {
    pub offset: u64,
    /// Hex of the hasher's serialized state.
    pub state: String,
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
        if let (Backend::Filesystem { local, fsync }, Some(_)) = (&self.backend, &self.direct_reads)
        {
            let location = layout::upload_data(upload_id);
            let path = local.path_to_filesystem(&location)?;
            let json = serde_json::to_vec(&record).expect("a record serializes");
            return BlobWriter::create_file(location, path, *fsync, Some(("state", json))).await;
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
                BlobWriter::create_file(location, path, *fsync, None).await
            }
            Backend::Objects {
                multipart,
                part_size,
                ..
            } => {
                BlobWriter::create_multipart(
                    multipart.clone(),
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
                    *fsync,
                    record.offset,
                ))
            }
            Backend::Objects {
                multipart,
                part_size,
                ..
            } => {
                let parts = record.parts.clone().ok_or_else(|| StorageError::Corrupt {
                    path: layout::upload_record(upload_id).to_string(),
                    reason: "no multipart state in the record of an object-store upload".into(),
                })?;
                Ok(BlobWriter::resume_multipart(
                    multipart.clone(),
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
        let path = layout::upload_record(upload_id);
        let Some(bytes) = self.read_small(&path).await? else {
            return Ok(None);
        };
        serde_json::from_slice(&bytes)
            .map(Some)
            .map_err(|e| StorageError::Corrupt {
                path: path.to_string(),
                reason: e.to_string(),
            })
    }

    /// Rewrites the upload's record. On local disk it replaces the file atomically (a crash
    /// leaves the old record or the new one); it is not fsynced: the bytes it counts are synced
    /// when the upload completes, and a lost record only makes the client resend a chunk.
    pub async fn save_upload(&self, upload_id: &str, record: &UploadRecord) -> Result<()> {
        let path = layout::upload_record(upload_id);
        let json = serde_json::to_vec(record).expect("a record serializes");
        match &self.backend {
            Backend::Filesystem { local, .. } if self.direct_reads.is_some() => {
                let target = local.path_to_filesystem(&path)?;
                let temp = target.with_file_name(format!("state.{}", uuid::Uuid::new_v4()));
                tokio::task::spawn_blocking(move || {
                    std::fs::write(&temp, json)?;
                    std::fs::rename(&temp, &target).inspect_err(|_| {
                        let _ = std::fs::remove_file(&temp);
                    })
                })
                .await
                .map_err(|e| StorageError::Io(std::io::Error::other(e)))??;
            }
            _ => {
                self.store.put(&path, PutPayload::from(json)).await?;
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

    /// Makes the finished upload at `location` visible as the blob `digest`. The blob appears
    /// whole or not at all: a rename on the filesystem, a copy on object stores.
    pub async fn commit_upload(&self, location: &Path, digest: &Digest) -> Result<()> {
        let target = layout::blob_data(digest);
        if let (Backend::Filesystem { local, fsync }, Some(_)) = (&self.backend, &self.direct_reads)
        {
            // One trip to the blocking pool, and only the fsyncs that make the blob durable
            // (object_store's rename would also sync the upload directory, about to go).
            let from = local.path_to_filesystem(location)?;
            let to = local.path_to_filesystem(&target)?;
            let dir = local.path_to_filesystem(&layout::upload_dir_of(location))?;
            let fsync = *fsync;
            return tokio::task::spawn_blocking(move || -> std::io::Result<()> {
                if !to.exists() {
                    let parent = to.parent().expect("a blob path has a parent");
                    create_dirs(parent, fsync)?;
                    std::fs::rename(&from, &to)?;
                    if fsync {
                        std::fs::File::open(parent)?.sync_all()?;
                    }
                }
                match std::fs::remove_dir_all(&dir) {
                    Err(e) if e.kind() != std::io::ErrorKind::NotFound => Err(e),
                    _ => Ok(()),
                }
            })
            .await
            .map_err(|e| StorageError::Io(std::io::Error::other(e)))?
            .map_err(StorageError::Io);
        }
        if self.exists(&target).await? {
            self.delete(location).await?;
        } else {
            self.store.rename(location, &target).await?;
        }
        self.remove_upload_dir(&layout::upload_dir_of(location))
            .await
    }

    /// Removes an upload's bytes and state (aborting its multipart upload, if any).
    pub async fn discard_upload(&self, upload_id: &str) -> Result<()> {
        if let Backend::Objects { multipart, .. } = &self.backend {
            if let Ok(Some(UploadRecord {
                parts: Some(parts), ..
            })) = self.load_upload(upload_id).await
            {
                let _ = multipart
                    .abort_multipart(&layout::upload_data(upload_id), &parts.multipart_id)
                    .await;
            }
        }
        self.remove_upload_dir(&layout::upload_dir(upload_id)).await
    }

    pub(super) async fn remove_upload_dir(&self, dir: &Path) -> Result<()> {
        if let (Backend::Filesystem { local, .. }, Some(_)) = (&self.backend, &self.direct_reads) {
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

    /// Every upload on storage with the time it was last touched.
    pub async fn list_uploads(&self) -> Result<Vec<StoredUpload>> {
        let root = layout::uploads_root();
        let depth = root.parts().count();
        let mut newest: HashMap<String, chrono::DateTime<chrono::Utc>> = HashMap::new();
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
            let entry = newest
                .entry(id.as_ref().to_string())
                .or_insert(meta.last_modified);
            *entry = (*entry).max(meta.last_modified);
        }
        let mut uploads: Vec<StoredUpload> = newest
            .into_iter()
            .map(|(id, last_modified)| StoredUpload { id, last_modified })
            .collect();
        uploads.sort_by(|a, b| a.id.cmp(&b.id));
        Ok(uploads)
    }
}
