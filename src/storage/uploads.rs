//! Uploads in progress on storage: their bytes, their durable record, and their commit.
//!
//! An upload lives under `_berth/uploads/<id>/`: `data` (the bytes: an append file on local disk,
//! the target of a multipart upload on object stores), `state` (an [`UploadRecord`]: offset, the
//! hash's running state, the multipart parts), on object stores `staged/<offset>` (bytes received
//! but too few for a part yet) and `lease` (who writes it now, see [`super::lock`]). The record is
//! rewritten after every accepted request, so any process sharing the storage can pick the
//! upload up where the last one left it, without re-reading what was already hashed. The
//! record's format is in [`super::upload_record`], its reads and rewrites in
//! [`super::upload_record_io`].

use std::collections::HashMap;

use futures_util::StreamExt;
use object_store::path::Path;
use object_store::ObjectStore;

use super::upload_record::{record_slot, UploadRecord};
use super::{journal, layout, Backend, BlobWriter, Result, Storage, StorageError};
use crate::oci::Digest;

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
        if let Some((local, fsync)) = self.local_files() {
            let location = layout::upload_data(upload_id);
            let path = local.path_to_filesystem(&location)?;
            let (offset, slot) = record_slot(&record)?;
            let mut content = vec![0u8; offset as usize];
            content.extend_from_slice(&slot);
            let sync = self.file_sync(fsync);
            let writer =
                BlobWriter::create_file(location, path, sync, Some(("state", content))).await?;
            return Ok(self.inlining(writer));
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
                let writer =
                    BlobWriter::create_file(location, path, self.file_sync(*fsync), None).await?;
                Ok(self.inlining(writer))
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
                Ok(self.inlining(BlobWriter::resume_file(
                    location,
                    path,
                    self.file_sync(*fsync),
                    record.offset,
                )))
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

    /// A file writer that leaves small uploads unsynced where [`Self::commit_upload`] journals
    /// their bytes.
    fn inlining(&self, writer: BlobWriter) -> BlobWriter {
        match self.journal() {
            Some(_) => writer.inlining_up_to(journal::INLINE_BLOB_MAX),
            None => writer,
        }
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
    ///
    /// `link` (the repository's layer link) is written with it: on local disk with fsync, in
    /// the same journal entry, so a pushed blob costs one sync of the journal.
    pub async fn commit_upload(
        &self,
        location: &Path,
        digest: &Digest,
        size: u64,
        link: &Path,
    ) -> Result<()> {
        let target = layout::blob_data(digest);
        if let Some(id) = location.parts().nth(layout::uploads_root().parts().count()) {
            self.forget_record(id.as_ref());
        }
        if let Some((local, fsync)) = self.local_files() {
            // One trip to the blocking pool, and only the syncs that make the blob durable
            // (object_store's rename would also sync the upload directory, about to go): the
            // upload's bytes are synced already; the move is journaled if there is a journal,
            // or its directories synced.
            let from = local.path_to_filesystem(location)?;
            let to = local.path_to_filesystem(&target)?;
            let dir = local.path_to_filesystem(&layout::upload_dir_of(location))?;
            // Only a small blob goes through the journal (its bytes in the entry); a larger one
            // is moved with its directories synced (a replayed move could not tell where a blob
            // set aside meanwhile ended up), and its link journaled after.
            let journal = self
                .journal_for(&target)
                .filter(|_| size <= journal::INLINE_BLOB_MAX)
                .cloned();
            let journaled = journal.is_some();
            let (blob_path, link_path) = (target.clone(), link.clone());
            let link_bytes = digest.to_string().into_bytes();
            tokio::task::spawn_blocking(move || -> std::io::Result<()> {
                if let Some(journal) = journal {
                    // A small blob's bytes go in the journal (its upload was not synced, see
                    // `BlobWriter::inlining_up_to`); a larger one is moved. Either is atomic,
                    // also over an existing blob: a reader sees the old file or the new.
                    let blob = journal::Op::Write {
                        path: blob_path.to_string(),
                        bytes: std::fs::read(&from)?,
                    };
                    let link = journal::Op::Write {
                        path: link_path.to_string(),
                        bytes: link_bytes,
                    };
                    journal.apply(vec![blob, link])?;
                } else {
                    let parent = to.parent().expect("a blob path has a parent");
                    create_dirs(parent, fsync)?;
                    std::fs::rename(&from, &to)?;
                    if fsync {
                        std::fs::File::open(parent)?.sync_all()?;
                    }
                }
                // The blob is in place: a failure to remove the upload's directory must not
                // fail the commit (a retry would find no data to commit); purging removes it.
                if let Err(e) = remove_local_upload_dir(&dir) {
                    log::warn!("cannot remove {}: {e}", dir.display())
                }
                Ok(())
            })
            .await
            .map_err(|e| StorageError::Io(std::io::Error::other(e)))?
            .map_err(StorageError::Io)?;
            if !journaled {
                self.write_link(link, digest).await?;
            }
            return Ok(());
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
        self.write_link(link, digest).await
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
            return tokio::task::spawn_blocking(move || remove_local_upload_dir(&path))
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

/// Removes an upload's directory on local disk (missing is fine): the files an upload usually
/// leaves, by name, then the directory, which is three calls where `remove_dir_all` takes a
/// dozen (a small push pays them on every commit); anything else left, the long way.
fn remove_local_upload_dir(dir: &std::path::Path) -> std::io::Result<()> {
    use std::io::ErrorKind::NotFound;
    for name in ["data", "state"] {
        match std::fs::remove_file(dir.join(name)) {
            Err(e) if e.kind() != NotFound => return Err(e),
            _ => {}
        }
    }
    match std::fs::remove_dir(dir) {
        Err(e) if e.kind() != NotFound => match std::fs::remove_dir_all(dir) {
            Err(e) if e.kind() != NotFound => Err(e),
            _ => Ok(()),
        },
        _ => Ok(()),
    }
}
