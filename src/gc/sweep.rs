//! The sweep: what a mark leaves unreferenced ([`SweepPlan`]), and removing it without racing
//! the registry ([`Sweeper`]; the protocol is described in the module above).

use std::collections::{BTreeMap, BTreeSet};

use object_store::path::Path;

use super::inventory::{digest, parts_below, Inventory};
use super::mark::{ManifestReader, MarkSet, Options};
use crate::oci::{Digest, RepoName};
use crate::storage::{layout, Result, Storage};

/// A manifest revision to remove from a repository.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord)]
pub struct ManifestItem {
    pub repo: String,
    pub digest: Digest,
}

/// A blob whose data is to be removed.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord)]
pub struct BlobItem {
    pub digest: Digest,
    pub size: u64,
}

/// Everything a mark found unreferenced and older than the cutoff.
#[derive(Debug, Default)]
pub struct SweepPlan {
    /// Untagged manifests (with `delete_untagged` only), sorted.
    pub manifests: Vec<ManifestItem>,
    /// Link files that go with those manifests: tag index entries and referrer links.
    pub manifest_links: BTreeMap<ManifestItem, Vec<Path>>,
    /// Unreferenced blobs, sorted by digest.
    pub blobs: Vec<BlobItem>,
    /// For each of those blobs, the repositories with a `_layers` link to it.
    pub layer_links: BTreeMap<Digest, Vec<String>>,
}

impl SweepPlan {
    pub fn new(inv: &Inventory, marks: &MarkSet, opts: &Options) -> SweepPlan {
        let mut plan = SweepPlan::default();
        if opts.delete_untagged {
            for (repo, r) in &inv.repos {
                for (d, e) in &r.revisions {
                    if marks.keeps_manifest(repo, d) || e.modified > opts.cutoff {
                        continue;
                    }
                    let item = ManifestItem {
                        repo: repo.clone(),
                        digest: d.clone(),
                    };
                    let links = r
                        .tag_index
                        .iter()
                        .map(|(_, x, e)| (x, e))
                        .chain(r.referrers.iter().map(|(_, x, e)| (x, e)))
                        .filter(|(x, _)| *x == d)
                        .map(|(_, e)| e.path.clone())
                        .collect();
                    plan.manifest_links.insert(item.clone(), links);
                    plan.manifests.push(item);
                }
            }
        }
        for (d, b) in &inv.blobs {
            if marks.keeps_blob(d) || b.modified > opts.cutoff {
                continue;
            }
            plan.blobs.push(BlobItem {
                digest: d.clone(),
                size: b.size,
            });
        }
        let doomed: BTreeSet<&Digest> = plan.blobs.iter().map(|b| &b.digest).collect();
        for (repo, r) in &inv.repos {
            for d in r.layers.keys().filter(|d| doomed.contains(d)) {
                plan.layer_links
                    .entry(d.clone())
                    .or_default()
                    .push(repo.clone());
            }
        }
        plan
    }

    pub fn blob_bytes(&self) -> u64 {
        self.blobs.iter().map(|b| b.size).sum()
    }

    pub fn layer_link_count(&self) -> usize {
        self.layer_links.values().map(Vec::len).sum()
    }

    pub fn is_empty(&self) -> bool {
        self.manifests.is_empty() && self.blobs.is_empty()
    }
}

/// What a sweep removed in the end.
#[derive(Debug, Default)]
pub struct Outcome {
    pub manifests: Vec<ManifestItem>,
    pub blobs: Vec<BlobItem>,
    pub layer_links: usize,
    /// Planned, but found written or used again before their removal (kept).
    pub skipped: usize,
    /// Removed, then put back: the check after the move found them referenced.
    pub restored: usize,
}

impl Outcome {
    pub fn blob_bytes(&self) -> u64 {
        self.blobs.iter().map(|b| b.size).sum()
    }
}

/// A link file removed by this run, with what it held (to write it back).
#[derive(Debug, Clone)]
struct Removed {
    path: Path,
    digest: Digest,
}

fn repo_name(repo: &str) -> Option<RepoName> {
    repo.parse().ok()
}

/// Carries out a [`SweepPlan`]; `progress` is told each time an item is done.
pub struct Sweeper<'a> {
    pub storage: &'a Storage,
    pub opts: &'a Options,
    /// This run's name under `_berth/gc/`.
    pub run: String,
    pub progress: &'a (dyn Fn(&str) + Sync),
}

impl Sweeper<'_> {
    /// Removes what `plan` lists, then marks again and puts back whatever became referenced
    /// meanwhile, and only then deletes the set-aside blob data.
    pub async fn sweep(&self, plan: &SweepPlan) -> Result<Outcome> {
        let storage = self.storage;
        let cutoff = self.opts.cutoff;
        let mut outcome = Outcome::default();
        let mut removed_manifests: Vec<(ManifestItem, Vec<Removed>)> = Vec::new();
        for item in &plan.manifests {
            (self.progress)("manifest");
            let Some(repo) = repo_name(&item.repo) else {
                continue;
            };
            let link = layout::revision_link(&repo, &item.digest);
            match storage.head(&link).await? {
                Some(meta) if meta.last_modified <= cutoff => {}
                _ => {
                    outcome.skipped += 1;
                    continue;
                }
            }
            let mut removed = vec![Removed {
                path: link.clone(),
                digest: item.digest.clone(),
            }];
            storage.delete(&link).await?;
            for extra in plan.manifest_links.get(item).into_iter().flatten() {
                if let Some(d) = storage.read_link(extra).await.ok().flatten() {
                    storage.delete(extra).await?;
                    removed.push(Removed {
                        path: extra.clone(),
                        digest: d,
                    });
                }
            }
            removed_manifests.push((item.clone(), removed));
        }

        // Blobs: unlink from every repository, then move the data aside. Should anything fail
        // from here to the second mark, what was set aside is put back (best effort; the next
        // run puts back what is left).
        let mut moved: Vec<(BlobItem, Vec<Removed>)> = Vec::new();
        let set_aside = self.set_aside(plan, &mut moved, &mut outcome).await;
        // Mark again: anything pushed, tagged or linked since the first mark (younger than the
        // cutoff) is a root now, and a manifest pushed meanwhile has written its revision link
        // before it checks its blobs once more (`Registry::put_manifest`), so either it sees a
        // blob gone and fails, or this mark sees the manifest.
        let marks = match set_aside {
            Ok(()) => self.mark_again().await,
            Err(e) => Err(e),
        };
        let marks = match marks {
            Ok(m) => m,
            Err(e) => {
                for (_, removed) in &removed_manifests {
                    let _ = restore_links(storage, removed).await;
                }
                for (blob, links) in &moved {
                    let aside = layout::gc_quarantined(&self.run, &blob.digest);
                    let _ = put_back(storage, &aside, &layout::blob_data(&blob.digest)).await;
                    let _ = restore_links(storage, links).await;
                }
                return Err(e);
            }
        };

        for (item, removed) in removed_manifests {
            if marks.keeps_manifest(&item.repo, &item.digest) {
                restore_links(storage, &removed).await?;
                outcome.restored += 1;
            } else {
                log::debug!("removed manifest {}@{}", item.repo, item.digest);
                outcome.manifests.push(item);
            }
        }
        for (blob, links) in moved {
            let aside = layout::gc_quarantined(&self.run, &blob.digest);
            let data = layout::blob_data(&blob.digest);
            if marks.keeps_blob(&blob.digest) {
                put_back(storage, &aside, &data).await?;
                restore_links(storage, &links).await?;
                outcome.restored += 1;
                continue;
            }
            storage.delete(&aside).await?;
            // Only the blob's own directory: a push of another blob may be creating the
            // shared `<xx>/` one right now.
            if let Some(shared) = data.parts().count().checked_sub(2) {
                let xx = Path::from_iter(data.parts().take(shared));
                storage.remove_empty_parents(&data, &xx).await?;
            }
            log::debug!(
                "removed blob {} ({} bytes, {} layer links)",
                blob.digest,
                blob.size,
                links.len()
            );
            outcome.layer_links += links.len();
            outcome.blobs.push(blob);
        }
        Ok(outcome)
    }

    /// Unlinks each planned blob from every repository and moves its data aside, checking
    /// first that neither was written since the cutoff.
    async fn set_aside(
        &self,
        plan: &SweepPlan,
        moved: &mut Vec<(BlobItem, Vec<Removed>)>,
        outcome: &mut Outcome,
    ) -> Result<()> {
        'blobs: for blob in &plan.blobs {
            (self.progress)("blob");
            let data = layout::blob_data(&blob.digest);
            match self.storage.head(&data).await? {
                Some(meta) if meta.last_modified <= self.opts.cutoff => {}
                _ => {
                    outcome.skipped += 1;
                    continue;
                }
            }
            let mut links = Vec::new();
            for repo in plan.layer_links.get(&blob.digest).into_iter().flatten() {
                let Some(name) = repo_name(repo) else {
                    continue;
                };
                let link = layout::layer_link(&name, &blob.digest);
                match self.storage.head(&link).await? {
                    None => continue,
                    Some(meta) if meta.last_modified <= self.opts.cutoff => {
                        self.storage.delete(&link).await?;
                        links.push(Removed {
                            path: link,
                            digest: blob.digest.clone(),
                        });
                    }
                    Some(_) => {
                        // Linked again while this run went on: the blob stays, with its links.
                        restore_links(self.storage, &links).await?;
                        outcome.skipped += 1;
                        continue 'blobs;
                    }
                }
            }
            let aside = layout::gc_quarantined(&self.run, &blob.digest);
            match self.storage.rename(&data, &aside).await {
                Ok(()) => moved.push((blob.clone(), links)),
                Err(crate::storage::StorageError::NotFound(_)) => {
                    // Someone else removed it (another collector): nothing to do.
                    outcome.skipped += 1;
                }
                Err(e) => {
                    restore_links(self.storage, &links).await?;
                    return Err(e);
                }
            }
        }
        Ok(())
    }

    /// Lists and marks again (blobs set aside are read from where they are).
    async fn mark_again(&self) -> Result<MarkSet> {
        let inv = Inventory::scan(self.storage).await?;
        let mut reader = ManifestReader::new(self.storage.clone()).with_quarantine(&self.run);
        MarkSet::mark(self.storage, &inv, self.opts, &mut reader).await
    }
}

/// Moves set-aside data back, unless the blob was pushed again meanwhile (same bytes).
async fn put_back(storage: &Storage, aside: &Path, data: &Path) -> Result<()> {
    if storage.head(data).await?.is_some() {
        storage.delete(aside).await
    } else {
        storage.rename(aside, data).await
    }
}

async fn restore_links(storage: &Storage, links: &[Removed]) -> Result<()> {
    for l in links {
        storage.write_link(&l.path, &l.digest).await?;
    }
    Ok(())
}

/// Puts back blob data a run set aside and never finished with (it stopped between moving and
/// deleting): such a blob may have become referenced again. Answers how many.
pub async fn recover_quarantine(storage: &Storage) -> Result<usize> {
    use futures_util::StreamExt;
    let root = layout::gc_quarantine();
    let skip = root.parts().count();
    let mut found = Vec::new();
    let mut objects = storage.list_with_meta(&root);
    while let Some(meta) = objects.next().await {
        let meta = meta?;
        let parts = parts_below(&meta.location, skip);
        if let [_, alg, hex] = parts.as_slice() {
            if let Some(d) = digest(alg, hex) {
                found.push((meta.location, d));
            }
        }
    }
    for (aside, d) in &found {
        put_back(storage, aside, &layout::blob_data(d)).await?;
    }
    Ok(found.len())
}
