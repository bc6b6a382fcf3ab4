//! What a run removed, durably, so that a run that stops at any moment (`kill -9`, a crash, a
//! failing store) is undone by the next one.
//!
//! Before a sweep removes the link files of an item (a blob's `_layers` links in every
//! repository, or a manifest's revision, tag-history and referrer links) it writes one journal
//! entry, `_berth/gc/<run>/journal/<key>`, naming the links and the blob whose data they need.
//! The entry is removed once the item's fate is final: its links written back (kept), or its
//! data deleted (collected). Recovery ([`recover`]), at the start of every run, first moves all
//! set-aside data back, then replays every entry left: the links are written again if the data
//! they need is there, and dropped if it is not (the run had already deleted it: the removal was
//! meant and finished). An entry whose data could not be put back is kept for the next try.

use std::collections::BTreeSet;

use futures_util::StreamExt;
use object_store::path::Path;
use serde::{Deserialize, Serialize};

use super::error::{Failures, GcError};
use super::inventory::{digest, parts_below};
use crate::oci::Digest;
use crate::storage::{layout, Result, Storage, StorageError};

/// A link file removed by a run, with what it held (to write it back).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Removed {
    pub path: Path,
    pub digest: Digest,
}

#[derive(Serialize, Deserialize)]
struct EntryLink {
    path: String,
    digest: String,
}

/// The stored form of an entry.
#[derive(Serialize, Deserialize)]
struct Entry {
    /// The blob whose data the links need (the blob itself, or the manifest's bytes).
    needs: String,
    links: Vec<EntryLink>,
}

/// The key of the entry for the `_layers` links of the plan's `i`-th blob. (Keys are short:
/// some S3 servers keep an object's metadata in a file named after the whole key, and
/// repository names, which have slashes, could not be part of one anyway.)
pub fn blob_key(i: usize) -> String {
    format!("b{i:08}")
}

/// The key of the entry for the links of the plan's `i`-th manifest.
pub fn manifest_key(i: usize) -> String {
    format!("m{i:08}")
}

/// One run's journal.
pub struct Journal<'a> {
    pub storage: &'a Storage,
    pub run: &'a str,
}

impl Journal<'_> {
    /// Records, before they are removed, that `links` (needing `needs`'s data) are removed.
    pub async fn record(&self, key: &str, needs: &Digest, links: &[Removed]) -> Result<()> {
        let entry = Entry {
            needs: needs.to_string(),
            links: links
                .iter()
                .map(|l| EntryLink {
                    path: l.path.to_string(),
                    digest: l.digest.to_string(),
                })
                .collect(),
        };
        let bytes = serde_json::to_vec(&entry).expect("a journal entry serializes");
        self.storage
            .write_small(&layout::gc_journal_entry(self.run, key), bytes)
            .await
    }

    /// The item's fate is final: its entry goes.
    pub async fn forget(&self, key: &str) -> Result<()> {
        self.storage
            .delete(&layout::gc_journal_entry(self.run, key))
            .await
    }
}

/// Moves set-aside data back, unless the blob was pushed again meanwhile (same bytes).
pub async fn put_back(storage: &Storage, aside: &Path, data: &Path) -> Result<()> {
    if storage.head(data).await?.is_some() {
        storage.delete(aside).await?;
    } else {
        // Its size decides how it is copied back on S3 (in parts above 5 GiB, say).
        let size = storage
            .head(aside)
            .await?
            .ok_or_else(|| StorageError::NotFound(aside.to_string()))?
            .size;
        storage.move_object(aside, data, size).await?;
    }
    // On local disk a rename leaves the run's directories behind.
    storage
        .remove_empty_parents(aside, &layout::gc_quarantine())
        .await
}

/// Writes every link back, each one tried even if another fails; whether all were.
pub async fn restore_links(storage: &Storage, links: &[Removed], failures: &mut Failures) -> bool {
    let mut all = true;
    for l in links {
        all &= failures.note(
            || format!("writing back the link {}", l.path),
            storage.write_link(&l.path, &l.digest).await,
        );
    }
    all
}

/// What recovery put back.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct Recovered {
    /// Blobs whose data was set aside.
    pub blobs: usize,
    /// Link files written back from journals.
    pub links: usize,
}

/// Undoes whatever runs that never finished left under `_berth/gc/`: data moved back first,
/// then the journals replayed. Every item is tried; failures are reported together.
pub async fn recover(storage: &Storage) -> Result<Recovered, GcError> {
    let root = layout::gc_quarantine();
    let skip = root.parts().count();
    let mut data = Vec::new();
    let mut entries = Vec::new();
    let mut objects = storage.list_with_meta(&root);
    while let Some(meta) = objects.next().await {
        let meta = meta?;
        let parts = parts_below(&meta.location, skip);
        match parts.as_slice() {
            [_, journal, _] if journal == "journal" => entries.push(meta.location),
            [_, alg, hex] => {
                if let Some(d) = digest(alg, hex) {
                    data.push((meta.location, d));
                }
            }
            _ => {}
        }
    }
    let mut failures = Failures::default();
    let mut not_back = BTreeSet::new();
    let mut recovered = Recovered::default();
    for (aside, d) in &data {
        let moved = put_back(storage, aside, &layout::blob_data(d)).await;
        if failures.note(|| format!("putting back the set-aside blob {d}"), moved) {
            recovered.blobs += 1;
        } else {
            not_back.insert(d.clone());
        }
    }
    for path in &entries {
        let read = storage.read_small(path).await;
        let Some(Some(bytes)) = failures.note_value(|| format!("reading the journal {path}"), read)
        else {
            continue;
        };
        let Some((needs, links)) = parse_entry(&bytes) else {
            failures.note(
                || format!("reading the journal {path}"),
                Err::<(), _>(crate::storage::StorageError::Corrupt {
                    path: path.to_string(),
                    reason: "not a journal entry".into(),
                }),
            );
            continue;
        };
        if not_back.contains(&needs) {
            continue; // kept for the next try
        }
        let present = storage.head(&layout::blob_data(&needs)).await;
        let Some(present) =
            failures.note_value(|| format!("looking for the blob {needs}"), present)
        else {
            continue;
        };
        if present.is_some() {
            if !restore_links(storage, &links, &mut failures).await {
                continue; // kept for the next try
            }
            recovered.links += links.len();
        }
        // Restored, or the run had deleted the data (those links were meant to go).
        failures.note(
            || format!("removing the journal {path}"),
            storage.delete(path).await,
        );
    }
    if failures.is_empty() && not_back.is_empty() {
        // Half-written journal entries of a run killed mid-write (their links were not
        // removed yet: an entry is written before its links go).
        failures.note(
            || "removing interrupted writes under _berth/gc".to_string(),
            storage.remove_interrupted_writes(&root).await,
        );
    }
    failures.into_result(None)?;
    Ok(recovered)
}

fn parse_entry(bytes: &[u8]) -> Option<(Digest, Vec<Removed>)> {
    let e: Entry = serde_json::from_slice(bytes).ok()?;
    let needs = e.needs.parse().ok()?;
    let links = e
        .links
        .into_iter()
        .map(|l| {
            Some(Removed {
                path: Path::parse(&l.path).ok()?,
                digest: l.digest.parse().ok()?,
            })
        })
        .collect::<Option<Vec<_>>>()?;
    Some((needs, links))
}
