//! Manifest push, pull and delete; tags and referrer links are maintained here.

use bytes::Bytes;

use super::{Registry, RegistryError, Result};
use crate::oci::manifest::{self, Kind, Manifest};
use crate::oci::{Algorithm, Digest, Reference, RepoName, Tag};
use crate::storage::layout;

/// A stored manifest as a GET answers it.
#[derive(Debug, Clone)]
pub struct ManifestContent {
    pub bytes: Bytes,
    pub digest: Digest,
    pub media_type: String,
}

/// What a manifest PUT did.
#[derive(Debug, Clone)]
pub struct PushedManifest {
    pub digest: Digest,
    /// The media type it is served with.
    pub media_type: String,
    pub size: u64,
    pub subject: Option<Digest>,
    pub tags: Vec<Tag>,
}

impl Registry {
    /// Stores a manifest under `reference` (and `extra_tags`, from `?tag=`), after checking it
    /// and that everything it references is in the repository.
    pub async fn put_manifest(
        &self,
        repo: &RepoName,
        reference: &Reference,
        bytes: Bytes,
        content_type: Option<&str>,
        extra_tags: &[Tag],
    ) -> Result<PushedManifest> {
        if bytes.len() > manifest::MAX_MANIFEST_SIZE {
            return Err(RegistryError::ManifestTooLarge(manifest::MAX_MANIFEST_SIZE));
        }
        let parsed = Manifest::parse(&bytes, content_type)?;
        let digest = match reference {
            Reference::Digest(expected) => {
                let actual = Digest::of(expected.algorithm(), &bytes);
                if &actual != expected {
                    return Err(RegistryError::ManifestDigestMismatch {
                        expected: expected.clone(),
                        actual,
                    });
                }
                actual
            }
            Reference::Tag(_) => Digest::of(Algorithm::Sha256, &bytes),
        };
        self.check_references(repo, &parsed).await?;

        let media_type = Manifest::detect_media_type(&bytes);
        let size = bytes.len() as u64;
        let mut tags: Vec<Tag> = extra_tags.to_vec();
        if let Reference::Tag(t) = reference {
            tags.insert(0, t.clone());
        }
        tags.dedup();
        // Everything the manifest puts on storage, in one write (one sync on local disk): its
        // bytes, its revision link, its subject's referrer link, its tags.
        let link = Bytes::from(digest.to_string());
        let mut files = Vec::new();
        if self.storage.blob_size(&digest).await?.is_none() {
            files.push((layout::blob_data(&digest), bytes));
        }
        files.push((layout::revision_link(repo, &digest), link.clone()));
        if let Some(subject) = &parsed.subject {
            files.push((
                layout::referrer_link(repo, &subject.digest, &digest),
                link.clone(),
            ));
        }
        // A tag's current link first: where these are written one by one (object stores), a
        // write that fails after it leaves a tag that resolves, never a tag prefix that is
        // listed but has no current link (see `Storage::tags_after`).
        for tag in &tags {
            files.push((layout::tag_current_link(repo, tag), link.clone()));
            files.push((layout::tag_index_link(repo, tag, &digest), link.clone()));
        }
        self.storage.write_files(files).await?;
        if let Some(cache) = &self.cache {
            cache.remember_manifest(repo, &digest).await;
        }
        // A garbage collection may be sweeping meanwhile (`crate::gc`): now that the revision
        // link and tags are written (which its second mark will see), check once more that what
        // they point at is still there, and put back a revision link it removed.
        let revision = layout::revision_link(repo, &digest);
        if self.storage.read_link(&revision).await?.is_none() {
            self.storage.write_link(&revision, &digest).await?;
        }
        self.check_references(repo, &parsed).await?;
        if self.storage.blob_size(&digest).await?.is_none() {
            return Err(RegistryError::ManifestBlobUnknown(digest));
        }
        Ok(PushedManifest {
            media_type,
            size,
            digest,
            subject: parsed.subject.map(|s| s.digest),
            tags,
        })
    }

    async fn check_references(&self, repo: &RepoName, parsed: &Manifest) -> Result<()> {
        // Storage, not the cache: the manifest will depend on these.
        for blob in parsed.required_blobs() {
            match self.stat_blob_in_storage(repo, &blob.digest).await {
                Ok(_) => {}
                Err(RegistryError::BlobUnknown(d)) => {
                    // A cached "present" must not send the client's retry the same way.
                    if let Some(cache) = &self.cache {
                        cache.forget_blob(repo, &d).await;
                    }
                    return Err(RegistryError::ManifestBlobUnknown(d));
                }
                Err(e) => return Err(e),
            }
        }
        if parsed.kind == Kind::Index {
            for child in &parsed.children {
                let link = layout::revision_link(repo, &child.digest);
                if self.storage.read_link(&link).await?.as_ref() != Some(&child.digest) {
                    return Err(RegistryError::ManifestBlobUnknown(child.digest.clone()));
                }
            }
        }
        Ok(())
    }

    /// The digest `reference` names in `repo`, if the repository has that manifest.
    pub async fn resolve(&self, repo: &RepoName, reference: &Reference) -> Result<Option<Digest>> {
        let candidate = match reference {
            Reference::Tag(tag) => {
                match self
                    .storage
                    .read_link(&layout::tag_current_link(repo, tag))
                    .await?
                {
                    Some(d) => d,
                    None => return Ok(None),
                }
            }
            Reference::Digest(d) => d.clone(),
        };
        if let Some(cache) = &self.cache {
            if cache.has_manifest(repo, &candidate).await {
                return Ok(Some(candidate));
            }
        }
        let revision = self
            .storage
            .read_link(&layout::revision_link(repo, &candidate))
            .await?
            .filter(|d| d == &candidate);
        if let (Some(cache), Some(d)) = (&self.cache, &revision) {
            cache.remember_manifest(repo, d).await;
        }
        Ok(revision)
    }

    async fn unknown_manifest(&self, repo: &RepoName, reference: &Reference) -> RegistryError {
        match self.repository_exists(repo).await {
            Ok(false) => RegistryError::NameUnknown(repo.clone()),
            Ok(true) => RegistryError::ManifestUnknown(reference.to_string()),
            Err(e) => e,
        }
    }

    /// Reads a manifest. `accept` holds the request's `Accept` header values.
    pub async fn get_manifest(
        &self,
        repo: &RepoName,
        reference: &Reference,
        accept: &[&str],
    ) -> Result<ManifestContent> {
        let Some(digest) = self.resolve(repo, reference).await? else {
            return Err(self.unknown_manifest(repo, reference).await);
        };
        let bytes = match self.storage.read_blob(&digest).await {
            Ok(b) => b,
            Err(crate::storage::StorageError::NotFound(_)) => {
                return Err(RegistryError::ManifestUnknown(reference.to_string()))
            }
            Err(e) => return Err(e.into()),
        };
        let media_type = Manifest::detect_media_type(&bytes);
        if !manifest::accepts(accept, &media_type) {
            return Err(RegistryError::NotAcceptable {
                reference: reference.to_string(),
                media_type,
            });
        }
        Ok(ManifestContent {
            bytes,
            digest,
            media_type,
        })
    }

    /// Deletes a tag (by tag) or a manifest with every tag pointing at it (by digest). Answers
    /// the digest the reference named.
    pub async fn delete_manifest(&self, repo: &RepoName, reference: &Reference) -> Result<Digest> {
        self.check_delete_enabled()?;
        let Some(digest) = self.resolve(repo, reference).await? else {
            return Err(self.unknown_manifest(repo, reference).await);
        };
        match reference {
            Reference::Tag(tag) => {
                self.storage.delete_tag(repo, tag).await?;
            }
            Reference::Digest(_) => {
                if let Ok(bytes) = self.storage.read_blob(&digest).await {
                    if let Ok(parsed) = Manifest::parse(&bytes, None) {
                        if let Some(subject) = parsed.subject {
                            self.storage
                                .delete(&layout::referrer_link(repo, &subject.digest, &digest))
                                .await?;
                        }
                    }
                }
                for tag in self.storage.list_dirs(&layout::tags_dir(repo)).await? {
                    let Ok(tag) = tag.parse::<Tag>() else {
                        continue;
                    };
                    let current = self
                        .storage
                        .read_link(&layout::tag_current_link(repo, &tag))
                        .await?;
                    if current.as_ref() == Some(&digest) {
                        self.storage.delete_tag(repo, &tag).await?;
                    }
                }
                self.storage
                    .delete(&layout::revision_link(repo, &digest))
                    .await?;
                if let Some(cache) = &self.cache {
                    cache.forget_manifest(repo, &digest).await;
                }
            }
        }
        Ok(digest)
    }
}

#[cfg(test)]
mod tests {
    use super::super::test_support::{registry, repo};
    use super::*;
    use crate::oci::manifest::{OCI_INDEX, OCI_MANIFEST};
    use crate::storage::journal::tests::CountingSync;
    use crate::storage::Storage;
    use futures_util::stream;

    async fn push_blob(reg: &Registry, r: &RepoName, content: &'static [u8]) -> Digest {
        let digest = Digest::sha256(content);
        let id = reg.start_upload(r, Some(&digest)).await.unwrap();
        let body = stream::iter(vec![Ok::<_, std::io::Error>(Bytes::from_static(content))]);
        reg.complete_upload(r, &id, None, None, body, &digest)
            .await
            .unwrap();
        digest
    }

    fn image_manifest(config: &Digest, layer: &Digest, subject: Option<&Digest>) -> Bytes {
        let subject = subject
            .map(|s| {
                format!(r#","subject":{{"mediaType":"{OCI_MANIFEST}","digest":"{s}","size":10}}"#)
            })
            .unwrap_or_default();
        Bytes::from(format!(
            r#"{{"schemaVersion":2,"mediaType":"{OCI_MANIFEST}","config":{{"mediaType":"application/vnd.oci.image.config.v1+json","digest":"{config}","size":2}},"layers":[{{"mediaType":"application/vnd.oci.image.layer.v1.tar","digest":"{layer}","size":5}}]{subject}}}"#
        ))
    }

    #[actix_rt::test]
    async fn push_pull_tag_and_delete() {
        let reg = registry();
        let r = repo("team/app");
        let config = push_blob(&reg, &r, b"{}").await;
        let layer = push_blob(&reg, &r, b"layer").await;
        let bytes = image_manifest(&config, &layer, None);
        let tag: Reference = "v1".parse().unwrap();
        let pushed = reg
            .put_manifest(
                &r,
                &tag,
                bytes.clone(),
                Some(OCI_MANIFEST),
                &["latest".parse().unwrap()],
            )
            .await
            .unwrap();
        assert_eq!(pushed.digest, Digest::sha256(&bytes));
        assert_eq!(pushed.tags.len(), 2);

        let got = reg
            .get_manifest(&r, &"latest".parse().unwrap(), &[])
            .await
            .unwrap();
        assert_eq!(got.bytes, bytes);
        assert_eq!(got.media_type, OCI_MANIFEST);
        assert!(matches!(
            reg.get_manifest(&r, &tag, &[OCI_INDEX]).await,
            Err(RegistryError::NotAcceptable { .. })
        ));

        reg.delete_manifest(&r, &tag).await.unwrap();
        assert!(matches!(
            reg.get_manifest(&r, &tag, &[]).await,
            Err(RegistryError::ManifestUnknown(_))
        ));
        let by_digest = Reference::Digest(pushed.digest.clone());
        reg.delete_manifest(&r, &by_digest).await.unwrap();
        assert!(reg
            .resolve(&r, &"latest".parse().unwrap())
            .await
            .unwrap()
            .is_none());
    }

    /// Where a manifest's files are written one at a time (object stores), a tag write or
    /// delete that fails part-way lists no tag that cannot be fetched: a tag's current link is
    /// its first object written and its last deleted.
    #[actix_rt::test]
    async fn a_tag_write_or_delete_failing_part_way_lists_no_tag_that_cannot_be_fetched() {
        use crate::storage::faults::{Faults, Op};
        let faults = Faults::default();
        let options = crate::registry::Options {
            delete_enabled: true,
            redirect: false,
        };
        let reg = Registry::new(Storage::in_memory().with_faults(faults.clone()), options, 1);
        let r = repo("team/app");
        let config = push_blob(&reg, &r, b"{}").await;
        let layer = push_blob(&reg, &r, b"layer").await;
        let bytes = image_manifest(&config, &layer, None);
        let put = |tag: &'static str| {
            let (reg, r, bytes) = (&reg, &r, bytes.clone());
            async move {
                let tag: Reference = tag.parse().unwrap();
                reg.put_manifest(r, &tag, bytes, Some(OCI_MANIFEST), &[])
                    .await
            }
        };
        let delete = |tag: &'static str| {
            let (reg, r) = (&reg, &r);
            async move { reg.delete_manifest(r, &tag.parse().unwrap()).await }
        };
        let listed = || async {
            let page = reg.tags(&r, None, None).await.unwrap();
            for tag in &page.items {
                if let Err(e) = reg.get_manifest(&r, &tag.parse().unwrap(), &[]).await {
                    panic!("{tag} is listed but its manifest answers {e:?}");
                }
            }
            page.items
        };
        put("v1").await.unwrap();

        // The new tag's current link cannot be written: no trace of the tag.
        faults.fail(Op::Put, "tags/v2/current", 1);
        put("v2").await.unwrap_err();
        assert_eq!(listed().await, ["v1"]);
        // Its index entry cannot be written: the tag works (and the PUT can be retried).
        faults.fail(Op::Put, "tags/v2/index", 1);
        put("v2").await.unwrap_err();
        assert_eq!(listed().await, ["v1", "v2"]);
        // A delete whose index entry cannot be removed: the tag still works, and goes next time.
        faults.fail(Op::Delete, "tags/v1/index", 1);
        delete("v1").await.unwrap_err();
        assert_eq!(listed().await, ["v1", "v2"]);
        delete("v1").await.unwrap();
        assert_eq!(listed().await, ["v2"]);
    }

    /// Syncs counted by kind since `before`: (data syncs, file and directory syncs, filesystem syncs).
    fn syncs_since(sync: &CountingSync, before: (usize, usize, usize)) -> (usize, usize, usize) {
        use std::sync::atomic::Ordering::SeqCst;
        (
            sync.data.load(SeqCst) - before.0,
            sync.all.load(SeqCst) - before.1,
            sync.filesystem.load(SeqCst) - before.2,
        )
    }

    #[actix_rt::test]
    async fn an_acknowledged_manifest_and_its_tags_survive_a_power_loss_and_cost_one_sync() {
        let dir = tempfile::tempdir().unwrap();
        let open = |boot: &str| {
            let sync = std::sync::Arc::new(CountingSync::default());
            let storage =
                Storage::journaled_filesystem(dir.path(), sync.clone(), boot.into()).unwrap();
            let options = crate::registry::Options {
                delete_enabled: true,
                redirect: false,
            };
            (Registry::new(storage, options, 1), sync)
        };
        let (reg, sync) = open("boot-a");
        let r = repo("team/app");
        let before = syncs_since(&sync, (0, 0, 0));
        let config = push_blob(&reg, &r, b"{}").await;
        assert_eq!(
            syncs_since(&sync, before),
            (1, 0, 0),
            "a small blob: its bytes and its layer link in one journal entry"
        );
        let before = syncs_since(&sync, (0, 0, 0));
        let large: &'static [u8] = Box::leak(vec![7u8; 100 << 10].into_boxed_slice());
        let large = push_blob(&reg, &r, large).await;
        assert_eq!(
            syncs_since(&sync, before),
            (1, 1, 0),
            "a larger blob: its bytes synced (its directories by the move), its link journaled"
        );
        let layer = push_blob(&reg, &r, b"layer").await;
        let bytes = image_manifest(&config, &layer, None);
        let before = syncs_since(&sync, (0, 0, 0));
        reg.put_manifest(
            &r,
            &"v1".parse().unwrap(),
            bytes.clone(),
            Some(OCI_MANIFEST),
            &["latest".parse().unwrap()],
        )
        .await
        .unwrap();
        assert_eq!(
            syncs_since(&sync, before),
            (1, 0, 0),
            "a manifest PUT with two tags: one journal sync, nothing else"
        );
        drop(reg);

        // The power goes before a checkpoint: none of the layout's files written since reached
        // the disk; only what was synced did (the journal, the blobs' bytes).
        let v2 = dir.path().join("docker/registry/v2");
        std::fs::remove_dir_all(v2.join("repositories")).unwrap();
        let manifest_blob = v2.join(format!(
            "blobs/sha256/{}/{}",
            &Digest::sha256(&bytes).hex()[..2],
            Digest::sha256(&bytes).hex()
        ));
        std::fs::remove_dir_all(manifest_blob).unwrap();
        // A small blob's bytes were not synced either: the journal holds them.
        let config_blob = v2.join(format!(
            "blobs/sha256/{}/{}",
            &config.hex()[..2],
            config.hex()
        ));
        std::fs::remove_dir_all(config_blob).unwrap();

        let (reg, _) = open("boot-b");
        for tag in ["v1", "latest"] {
            let got = reg
                .get_manifest(&r, &tag.parse().unwrap(), &[])
                .await
                .unwrap();
            assert_eq!(got.bytes, bytes, "{tag}");
        }
        assert_eq!(reg.stat_blob(&r, &layer).await.unwrap(), 5);
        assert_eq!(reg.storage().read_blob(&config).await.unwrap(), &b"{}"[..]);
        assert_eq!(reg.stat_blob(&r, &large).await.unwrap(), 100 << 10);
    }

    #[actix_rt::test]
    async fn refuses_manifests_with_missing_blobs() {
        let reg = registry();
        let r = repo("a");
        let config = push_blob(&reg, &r, b"{}").await;
        let missing = Digest::sha256(b"not pushed");
        let err = reg
            .put_manifest(
                &r,
                &"t".parse().unwrap(),
                image_manifest(&config, &missing, None),
                None,
                &[],
            )
            .await
            .unwrap_err();
        assert!(matches!(err, RegistryError::ManifestBlobUnknown(d) if d == missing));
        assert!(matches!(
            reg.get_manifest(&repo("nobody"), &"t".parse().unwrap(), &[])
                .await,
            Err(RegistryError::NameUnknown(_))
        ));
    }

    #[actix_rt::test]
    async fn digest_reference_must_match() {
        let reg = registry();
        let r = repo("a");
        let config = push_blob(&reg, &r, b"{}").await;
        let layer = push_blob(&reg, &r, b"layer").await;
        let wrong = Reference::Digest(Digest::sha256(b"other"));
        let err = reg
            .put_manifest(&r, &wrong, image_manifest(&config, &layer, None), None, &[])
            .await
            .unwrap_err();
        assert!(matches!(err, RegistryError::ManifestDigestMismatch { .. }));
    }

    #[actix_rt::test]
    async fn subject_is_indexed_for_referrers() {
        let reg = registry();
        let r = repo("a");
        let config = push_blob(&reg, &r, b"{}").await;
        let layer = push_blob(&reg, &r, b"layer").await;
        let subject = Digest::sha256(b"some image that is not pushed yet");
        let referrer = image_manifest(&config, &layer, Some(&subject));
        let pushed = reg
            .put_manifest(
                &r,
                &Reference::Digest(Digest::sha256(&referrer)),
                referrer,
                None,
                &[],
            )
            .await
            .unwrap();
        assert_eq!(pushed.subject.as_ref(), Some(&subject));
        let list = reg.referrers(&r, &subject, None).await.unwrap();
        assert_eq!(list.len(), 1);
        assert_eq!(list[0]["digest"], pushed.digest.to_string());
        assert_eq!(
            list[0]["artifactType"],
            "application/vnd.oci.image.config.v1+json"
        );
        assert!(reg
            .referrers(&r, &subject, Some("application/x.other"))
            .await
            .unwrap()
            .is_empty());
        reg.delete_manifest(&r, &Reference::Digest(pushed.digest))
            .await
            .unwrap();
        assert!(reg.referrers(&r, &subject, None).await.unwrap().is_empty());
    }

    #[actix_rt::test]
    async fn referrers_pushed_to_a_registry_without_the_api_are_found_by_tag_schema() {
        let reg = registry();
        let r = repo("a");
        let config = push_blob(&reg, &r, b"{}").await;
        let layer = push_blob(&reg, &r, b"layer").await;
        let subject = Digest::sha256(b"the signed image");
        let referrer = image_manifest(&config, &layer, Some(&subject));
        let rd = Digest::sha256(&referrer);
        reg.put_manifest(
            &r,
            &Reference::Digest(rd.clone()),
            referrer.clone(),
            None,
            &[],
        )
        .await
        .unwrap();
        // As registry:2 would have it: no berth index, only the client-maintained tag.
        reg.storage()
            .delete_prefix(&layout::referrers_dir(&r, &subject))
            .await
            .unwrap();
        assert!(reg.referrers(&r, &subject, None).await.unwrap().is_empty());
        let index = Bytes::from(format!(
            r#"{{"schemaVersion":2,"mediaType":"{OCI_INDEX}","manifests":[{{"mediaType":"{OCI_MANIFEST}","digest":"{rd}","size":{}}}]}}"#,
            referrer.len()
        ));
        let tag: Reference = format!("sha256-{}", subject.hex()).parse().unwrap();
        reg.put_manifest(&r, &tag, index, Some(OCI_INDEX), &[])
            .await
            .unwrap();
        let list = reg.referrers(&r, &subject, None).await.unwrap();
        assert_eq!(list.len(), 1);
        assert_eq!(list[0]["digest"], rd.to_string());
    }
}
