//! The sweep: what a mark leaves unreferenced ([`SweepPlan`]), and removing it without racing
//! the registry ([`Sweeper`]; the protocol is described in the module above).

use std::collections::{BTreeMap, BTreeSet};

use object_store::path::Path;

use super::error::{Failures, GcError};
use super::inventory::Inventory;
use super::journal::{self, put_back, restore_links, Journal, Removed};
use super::mark::{ManifestReader, MarkSet, Options};
use crate::oci::{Digest, RepoName};
use crate::storage::{layout, GcLock, Result, Storage, StorageError};

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

fn repo_name(repo: &str) -> Option<RepoName> {
    repo.parse().ok()
}

/// A manifest whose links phase one removed: its place in the plan (its journal key) and the
/// links.
type RemovedManifest = (usize, ManifestItem, Vec<Removed>);
/// A blob phase one moved aside: its place in the plan, and the links it removed.
type MovedBlob = (usize, BlobItem, Vec<Removed>);

/// Carries out a [`SweepPlan`]; `progress` is told each time an item is done.
pub struct Sweeper<'a> {
    pub storage: &'a Storage,
    pub opts: &'a Options,
    /// This run's name under `_berth/gc/`.
    pub run: String,
    pub progress: &'a (dyn Fn(&str) + Sync),
    /// The collector's lock, checked before each destructive phase (`None`: a test driving a
    /// sweep by hand).
    pub lock: Option<&'a GcLock>,
    /// Test-only: awaited just before a blob's data is moved aside (its links already
    /// removed), for a unit test to play another collector at that moment.
    #[cfg(test)]
    pub before_move: Option<&'a (dyn Fn(Digest) -> BoxFuture<'static, ()> + Sync)>,
}

#[cfg(test)]
pub(crate) type BoxFuture<'a, T> =
    std::pin::Pin<Box<dyn std::future::Future<Output = T> + Send + 'a>>;

impl Sweeper<'_> {
    fn journal(&self) -> Journal<'_> {
        Journal {
            storage: self.storage,
            run: &self.run,
        }
    }

    fn check_lock(&self) -> Result<(), GcError> {
        match self.lock.map(GcLock::check) {
            Some(Err(loss)) => Err(GcError::LockLost(loss)),
            _ => Ok(()),
        }
    }

    /// Removes what `plan` lists, then marks again and puts back whatever became referenced
    /// meanwhile, and only then deletes the set-aside blob data. Every link is journalled
    /// before it is removed (see [`super::journal`]). Putting back never stops at the first
    /// failure: everything is tried, and the failures are reported together.
    pub async fn sweep(&self, plan: &SweepPlan) -> Result<Outcome, GcError> {
        let storage = self.storage;
        let journal = self.journal();
        let mut outcome = Outcome::default();
        let mut failures = Failures::default();
        let mut manifests: Vec<RemovedManifest> = Vec::new();
        let mut moved: Vec<MovedBlob> = Vec::new();
        let marks = self
            .set_aside(
                plan,
                &mut manifests,
                &mut moved,
                &mut outcome,
                &mut failures,
            )
            .await;
        let marks = match marks {
            Ok(m) => m,
            Err(e) => {
                // Undo all of it.
                for (i, _, removed) in &manifests {
                    if restore_links(storage, removed, &mut failures).await {
                        let key = journal::manifest_key(*i);
                        failures.note(
                            || format!("removing journal {key}"),
                            journal.forget(&key).await,
                        );
                    }
                }
                for (i, blob, links) in &moved {
                    let aside = layout::gc_quarantined(&self.run, &blob.digest);
                    let back = put_back(storage, &aside, &layout::blob_data(&blob.digest)).await;
                    let back = failures.note(|| format!("putting back blob {}", blob.digest), back);
                    if restore_links(storage, links, &mut failures).await && back {
                        let key = journal::blob_key(*i);
                        failures.note(
                            || format!("removing journal {key}"),
                            journal.forget(&key).await,
                        );
                    }
                }
                return Err(failures.into_error(e));
            }
        };

        for (i, item, removed) in manifests {
            let key = journal::manifest_key(i);
            if marks.keeps_manifest(&item.repo, &item.digest) {
                if restore_links(storage, &removed, &mut failures).await {
                    outcome.restored += 1;
                } else {
                    continue; // journalled: the next run writes them back
                }
            } else {
                log::debug!("removed manifest {}@{}", item.repo, item.digest);
                outcome.manifests.push(item);
            }
            failures.note(
                || format!("removing journal {key}"),
                journal.forget(&key).await,
            );
        }
        for (i, blob, links) in moved {
            let aside = layout::gc_quarantined(&self.run, &blob.digest);
            let data = layout::blob_data(&blob.digest);
            let key = journal::blob_key(i);
            if marks.keeps_blob(&blob.digest) {
                let back = put_back(storage, &aside, &data).await;
                let back = failures.note(|| format!("putting back blob {}", blob.digest), back);
                if restore_links(storage, &links, &mut failures).await && back {
                    outcome.restored += 1;
                    failures.note(
                        || format!("removing journal {key}"),
                        journal.forget(&key).await,
                    );
                }
                continue;
            }
            // Deleting is final: not once another collection may hold the lock (what is left
            // stays set aside and journalled, and the next run puts it back).
            if let Err(e) = self.check_lock() {
                return Err(failures.into_error(e));
            }
            let deleted = storage.delete(&aside).await;
            if !failures.note(|| format!("deleting blob {}", blob.digest), deleted) {
                continue; // still set aside: the next run puts it back
            }
            // The data is gone: the links' removal is final (a journal entry left by a crash
            // right here is dropped by the next run, as the data it needs is missing).
            if !links.is_empty() {
                failures.note(
                    || format!("removing journal {key}"),
                    journal.forget(&key).await,
                );
            }
            // Only the blob's own directory: a push of another blob may be creating the
            // shared `<xx>/` one right now.
            if let Some(shared) = data.parts().count().checked_sub(2) {
                let xx = Path::from_iter(data.parts().take(shared));
                let tidied = storage.remove_empty_parents(&data, &xx).await;
                failures.note(
                    || format!("removing the directory of {}", blob.digest),
                    tidied,
                );
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
        failures.into_result(None)?;
        Ok(outcome)
    }

    /// Phase one: removes the planned manifests' links and each planned blob's links and data
    /// (moved aside), checking first that none was written since the cutoff; then marks again.
    /// What it removed is in `manifests` and `moved` (also when it fails), for the caller to
    /// put back or delete.
    async fn set_aside(
        &self,
        plan: &SweepPlan,
        manifests: &mut Vec<RemovedManifest>,
        moved: &mut Vec<MovedBlob>,
        outcome: &mut Outcome,
        failures: &mut Failures,
    ) -> Result<MarkSet, GcError> {
        self.check_lock()?;
        let storage = self.storage;
        let journal = self.journal();
        for (i, item) in plan.manifests.iter().enumerate() {
            self.check_lock()?;
            (self.progress)("manifest");
            let Some(repo) = repo_name(&item.repo) else {
                continue;
            };
            let link = layout::revision_link(&repo, &item.digest);
            match storage.head(&link).await? {
                Some(meta) if meta.last_modified <= self.opts.cutoff => {}
                _ => {
                    outcome.skipped += 1;
                    continue;
                }
            }
            let mut removed = vec![Removed {
                path: link.clone(),
                digest: item.digest.clone(),
            }];
            for extra in plan.manifest_links.get(item).into_iter().flatten() {
                if let Some(d) = storage.read_link(extra).await? {
                    removed.push(Removed {
                        path: extra.clone(),
                        digest: d,
                    });
                }
            }
            journal
                .record(&journal::manifest_key(i), &item.digest, &removed)
                .await?;
            // Listed before they go, so that a failure half-way writes all of them back.
            manifests.push((i, item.clone(), removed.clone()));
            for l in &removed {
                storage.delete(&l.path).await?;
            }
        }

        'blobs: for (i, blob) in plan.blobs.iter().enumerate() {
            self.check_lock()?;
            (self.progress)("blob");
            let data = layout::blob_data(&blob.digest);
            match storage.head(&data).await? {
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
                match storage.head(&link).await? {
                    None => {}
                    Some(meta) if meta.last_modified <= self.opts.cutoff => links.push(Removed {
                        path: link,
                        digest: blob.digest.clone(),
                    }),
                    Some(_) => {
                        // Linked again while this run went on: the blob stays, with its links.
                        outcome.skipped += 1;
                        continue 'blobs;
                    }
                }
            }
            let key = journal::blob_key(i);
            if !links.is_empty() {
                journal.record(&key, &blob.digest, &links).await?;
            }
            let mut unlinked = Ok(());
            for l in &links {
                unlinked = storage.delete(&l.path).await;
                if unlinked.is_err() {
                    break;
                }
            }
            #[cfg(test)]
            if let (Ok(()), Some(hook)) = (&unlinked, self.before_move) {
                hook(blob.digest.clone()).await;
            }
            let set_aside = match unlinked {
                Ok(()) => {
                    let aside = layout::gc_quarantined(&self.run, &blob.digest);
                    storage.move_object(&data, &aside, blob.size).await
                }
                Err(e) => Err(e),
            };
            match set_aside {
                Ok(()) => {
                    moved.push((i, blob.clone(), links));
                    continue;
                }
                Err(StorageError::NotFound(_)) => {
                    // Gone under our feet (moved or deleted by another collector, which the
                    // lock should have prevented): the links go back, as that collector's
                    // put-back expects them.
                    outcome.skipped += 1;
                    if restore_links(storage, &links, failures).await && !links.is_empty() {
                        failures.note(
                            || format!("removing journal {key}"),
                            journal.forget(&key).await,
                        );
                    }
                }
                Err(e) => {
                    if restore_links(storage, &links, failures).await && !links.is_empty() {
                        failures.note(
                            || format!("removing journal {key}"),
                            journal.forget(&key).await,
                        );
                    }
                    return Err(e.into());
                }
            }
        }
        super::pause_after("set-aside").await;
        self.check_lock()?;
        // Mark again: anything pushed, tagged or linked since the first mark (younger than the
        // cutoff) is a root now, and a manifest pushed meanwhile has written its revision link
        // before it checks its blobs once more (`Registry::put_manifest`), so either it sees a
        // blob gone and fails, or this mark sees the manifest.
        let marks = self.mark_again().await?;
        self.check_lock()?;
        Ok(marks)
    }

    /// Lists and marks again (blobs set aside are read from where they are).
    async fn mark_again(&self) -> Result<MarkSet> {
        let inv = Inventory::scan(self.storage).await?;
        let mut reader = ManifestReader::new(self.storage.clone())
            .with_quarantines()
            .await?;
        MarkSet::mark(self.storage, &inv, self.opts, &mut reader).await
    }
}
