//! Blob reads, deletes, mounts and the upload operations that end in a committed blob.

use bytes::Bytes;
use futures_util::stream::BoxStream;
use futures_util::Stream;

use super::{Registry, RegistryError, Result};
use crate::oci::range::Resolved;
use crate::oci::{Algorithm, ByteRange, ContentRange, Digest, RepoName};
use crate::storage::{layout, StorageError};
use crate::upload::{Committed, UploadError};

/// A blob (or part of one) ready to stream.
pub struct BlobRead {
    /// The whole blob's size.
    pub size: u64,
    /// `Some((start, end))` (end exclusive) when a range is served.
    pub range: Option<(u64, u64)>,
    pub stream: BoxStream<'static, Result<Bytes, StorageError>>,
}

impl Registry {
    /// The size of a blob linked into `repo` (from the blob-descriptor cache when it knows).
    pub async fn stat_blob(&self, repo: &RepoName, digest: &Digest) -> Result<u64> {
        if let Some(cache) = &self.cache {
            if let Some(size) = cache.blob_size(repo, digest).await {
                return Ok(size);
            }
        }
        let size = self.stat_blob_in_storage(repo, digest).await?;
        if let Some(cache) = &self.cache {
            cache.remember_blob(repo, digest, size).await;
        }
        Ok(size)
    }

    /// [`Registry::stat_blob`] asking storage itself: for writes that will depend on the blob.
    pub(super) async fn stat_blob_in_storage(
        &self,
        repo: &RepoName,
        digest: &Digest,
    ) -> Result<u64> {
        let linked = self
            .storage
            .read_link(&layout::layer_link(repo, digest))
            .await?;
        if linked.as_ref() != Some(digest) {
            return Err(RegistryError::BlobUnknown(digest.clone()));
        }
        self.storage
            .blob_size(digest)
            .await?
            .ok_or_else(|| RegistryError::BlobUnknown(digest.clone()))
    }

    /// Where the client may fetch the blob itself (a presigned backend URL), when redirects are
    /// on and the blob is large enough to be worth the extra round trip; with the blob's size.
    pub async fn blob_redirect(
        &self,
        repo: &RepoName,
        digest: &Digest,
    ) -> Result<Option<(String, u64)>> {
        /// Smaller blobs (configs, small layers) are served directly.
        const REDIRECT_MIN: u64 = 256 * 1024;
        /// distribution's validity for redirect URLs.
        const VALID_FOR: std::time::Duration = std::time::Duration::from_secs(20 * 60);
        if !self.options.redirect {
            return Ok(None);
        }
        let size = self.stat_blob(repo, digest).await?;
        if size < REDIRECT_MIN {
            return Ok(None);
        }
        let url = self.storage.presigned_blob_url(digest, VALID_FOR).await?;
        Ok(url.map(|url| (url, size)))
    }

    /// Opens a blob for reading, whole or the part named by a `Range` header.
    pub async fn open_blob(
        &self,
        repo: &RepoName,
        digest: &Digest,
        range: Option<ByteRange>,
    ) -> Result<BlobRead> {
        let size = self.stat_blob(repo, digest).await?;
        let span = match range.map(|r| r.resolve(size)) {
            None => None,
            Some(Resolved::Partial { start, end }) => Some((start, end)),
            Some(Resolved::Unsatisfiable) => {
                return Err(RegistryError::RangeNotSatisfiable { size })
            }
        };
        let blob = self
            .storage
            .stream_blob(digest, span.map(|(s, e)| s..e))
            .await
            .map_err(|e| match e {
                StorageError::NotFound(_) => RegistryError::BlobUnknown(digest.clone()),
                other => other.into(),
            });
        let blob = match blob {
            Err(RegistryError::BlobUnknown(d)) => {
                // Removed behind the cache's back (garbage collection): forget it.
                if let Some(cache) = &self.cache {
                    cache.forget_blob(repo, &d).await;
                }
                return Err(RegistryError::BlobUnknown(d));
            }
            other => other?,
        };
        Ok(BlobRead {
            size,
            range: span,
            stream: blob.stream,
        })
    }

    /// Unlinks a blob from `repo` (its bytes stay until garbage collection).
    pub async fn delete_blob(&self, repo: &RepoName, digest: &Digest) -> Result<()> {
        self.check_delete_enabled()?;
        self.stat_blob(repo, digest).await?;
        self.storage
            .delete(&layout::layer_link(repo, digest))
            .await?;
        if let Some(cache) = &self.cache {
            cache.forget_blob(repo, digest).await;
        }
        Ok(())
    }

    /// Links a blob of `from` into `repo`: its size, or `None` when `from` does not have it.
    pub async fn mount_blob(
        &self,
        repo: &RepoName,
        from: &RepoName,
        digest: &Digest,
    ) -> Result<Option<u64>> {
        match self.stat_blob(from, digest).await {
            Ok(size) => {
                self.storage
                    .write_link(&layout::layer_link(repo, digest), digest)
                    .await?;
                if !self.still_stored(digest).await? {
                    return Ok(None);
                }
                if let Some(cache) = &self.cache {
                    cache.remember_blob(repo, digest, size).await;
                }
                Ok(Some(size))
            }
            Err(RegistryError::BlobUnknown(_)) => Ok(None),
            Err(e) => Err(e),
        }
    }

    /// Links a blob the registry already holds into `repo`, whichever repository it came from
    /// (a mount without `from`): its size, or `None` when the registry has no such blob.
    pub async fn mount_known_blob(&self, repo: &RepoName, digest: &Digest) -> Result<Option<u64>> {
        let Some(size) = self.storage.blob_size(digest).await? else {
            return Ok(None);
        };
        self.storage
            .write_link(&layout::layer_link(repo, digest), digest)
            .await?;
        Ok(self.still_stored(digest).await?.then_some(size))
    }

    /// Whether a blob just linked still has its data. A garbage collection (`crate::gc`) may
    /// have set it aside after it was found; having written the link first, either this sees
    /// the data gone (and the caller must not report the blob as there: a mount falls back to
    /// an upload) or the collection's second mark sees the link and keeps the blob.
    async fn still_stored(&self, digest: &Digest) -> Result<bool> {
        Ok(self.storage.blob_size(digest).await?.is_some())
    }

    /// Opens an upload session; `digest_hint` (a single-request push) picks the hash to stream.
    pub async fn start_upload(
        &self,
        repo: &RepoName,
        digest_hint: Option<&Digest>,
    ) -> Result<String> {
        let algorithm = digest_hint.map_or(Algorithm::Sha256, Digest::algorithm);
        Ok(self.uploads.start(repo.clone(), algorithm).await?)
    }

    pub async fn upload_status(&self, repo: &RepoName, id: &str) -> Result<u64> {
        Ok(self.uploads.status(repo, id).await?)
    }

    /// Appends a chunk. `range` is the request's `Content-Range`, `content_length` its length.
    pub async fn append_upload<S, E>(
        &self,
        repo: &RepoName,
        id: &str,
        range: Option<ContentRange>,
        content_length: Option<u64>,
        body: S,
    ) -> Result<u64>
    where
        S: Stream<Item = Result<Bytes, E>> + Unpin + 'static,
        E: std::fmt::Display + 'static,
    {
        let length = self.check_lengths(repo, id, range, content_length).await?;
        Ok(self
            .uploads
            .append(repo, id, range.map(|r| r.start), length, body)
            .await?)
    }

    /// Finishes an upload with an optional last chunk and links the verified blob into `repo`.
    pub async fn complete_upload<S, E>(
        &self,
        repo: &RepoName,
        id: &str,
        range: Option<ContentRange>,
        content_length: Option<u64>,
        body: S,
        digest: &Digest,
    ) -> Result<Committed>
    where
        S: Stream<Item = Result<Bytes, E>> + Unpin + 'static,
        E: std::fmt::Display + 'static,
    {
        let length = self.check_lengths(repo, id, range, content_length).await?;
        let committed = self
            .uploads
            .complete(repo, id, range.map(|r| r.start), length, body, digest)
            .await?;
        // The commit linked the blob into the repository. An upload of a blob the registry already held only links it (see `still_stored`).
        if !self.still_stored(digest).await? {
            return Err(RegistryError::BlobUnknown(digest.clone()));
        }
        if let Some(cache) = &self.cache {
            cache.remember_blob(repo, digest, committed.size).await;
        }
        Ok(committed)
    }

    pub async fn cancel_upload(&self, repo: &RepoName, id: &str) -> Result<()> {
        Ok(self.uploads.cancel(repo, id).await?)
    }

    /// The body length a request announced, after checking that its headers agree.
    async fn check_lengths(
        &self,
        repo: &RepoName,
        id: &str,
        range: Option<ContentRange>,
        content_length: Option<u64>,
    ) -> Result<Option<u64>> {
        let Some(range) = range else {
            return Ok(content_length);
        };
        let Some(length) = range.length() else {
            // A range no upload can satisfy: 416 with what is stored, as for one out of order.
            let offset = self.uploads.status(repo, id).await?;
            return Err(UploadError::RangeTooLong { offset }.into());
        };
        match content_length {
            Some(len) if len != length => Err(UploadError::LengthMismatch {
                content_length: len,
                range_length: length,
            }
            .into()),
            _ => Ok(Some(length)),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::super::test_support::{registry, repo};
    use super::*;
    use futures_util::{stream, StreamExt};

    fn body(parts: &[&'static [u8]]) -> impl Stream<Item = Result<Bytes, std::io::Error>> + Unpin {
        stream::iter(
            parts
                .iter()
                .map(|p| Ok(Bytes::from_static(p)))
                .collect::<Vec<_>>(),
        )
    }

    #[actix_rt::test]
    async fn chunked_upload_commits_only_a_verified_blob() {
        let reg = registry();
        let r = repo("a/b");
        let id = reg.start_upload(&r, None).await.unwrap();
        let off = reg
            .append_upload(
                &r,
                &id,
                Some(ContentRange::parse("0-4").unwrap()),
                Some(5),
                body(&[b"hel", b"lo"]),
            )
            .await
            .unwrap();
        assert_eq!(off, 5);
        // A chunk that does not start at the offset is refused with the real offset.
        let err = reg
            .append_upload(
                &r,
                &id,
                Some(ContentRange::parse("0-4").unwrap()),
                None,
                body(&[b"hello"]),
            )
            .await
            .unwrap_err();
        assert!(matches!(
            err,
            RegistryError::Upload(UploadError::OutOfOrder { offset: 5 })
        ));

        let wrong = Digest::sha256(b"nope");
        let err = reg
            .complete_upload(&r, &id, None, None, body(&[b" world"]), &wrong)
            .await
            .unwrap_err();
        assert!(matches!(
            err,
            RegistryError::Upload(UploadError::DigestMismatch { .. })
        ));
        assert!(reg.storage().blob_size(&wrong).await.unwrap().is_none());
        // The failed session is gone.
        assert!(reg.upload_status(&r, &id).await.is_err());
    }

    #[actix_rt::test]
    async fn monolithic_upload_then_read_ranges() {
        let reg = registry();
        let r = repo("x");
        let digest = Digest::sha256(b"hello world");
        let id = reg.start_upload(&r, Some(&digest)).await.unwrap();
        let c = reg
            .complete_upload(&r, &id, None, None, body(&[b"hello ", b"world"]), &digest)
            .await
            .unwrap();
        assert_eq!(c.size, 11);
        assert_eq!(reg.stat_blob(&r, &digest).await.unwrap(), 11);
        let read = reg
            .open_blob(&r, &digest, ByteRange::parse_header("bytes=6-").unwrap())
            .await
            .unwrap();
        assert_eq!(read.range, Some((6, 11)));
        let bytes: Vec<Bytes> = read.stream.map(|b| b.unwrap()).collect().await;
        assert_eq!(bytes.concat(), b"world");
        // Not visible from another repository until mounted.
        let other = repo("y");
        assert!(reg.stat_blob(&other, &digest).await.is_err());
        assert!(reg.mount_blob(&other, &r, &digest).await.unwrap().is_some());
        assert_eq!(reg.stat_blob(&other, &digest).await.unwrap(), 11);
    }

    #[actix_rt::test]
    async fn sha512_digest_is_verified_by_rehashing() {
        let reg = registry();
        let r = repo("x");
        let id = reg.start_upload(&r, None).await.unwrap();
        let digest = Digest::of(Algorithm::Sha512, b"abc");
        reg.complete_upload(&r, &id, None, None, body(&[b"abc"]), &digest)
            .await
            .unwrap();
        assert_eq!(reg.stat_blob(&r, &digest).await.unwrap(), 3);
    }
}
