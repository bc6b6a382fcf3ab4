//! One listing of everything garbage collection looks at: every blob, and every link file of
//! every repository, each with its modification time.

use std::collections::BTreeMap;

use chrono::{DateTime, Utc};
use futures_util::StreamExt;
use object_store::path::Path;

use crate::oci::Digest;
use crate::storage::{layout, Result, Storage};

/// A link file and when it was last written.
#[derive(Debug, Clone)]
pub struct Entry {
    pub path: Path,
    pub modified: DateTime<Utc>,
}

/// The link files of one repository.
#[derive(Debug, Default)]
pub struct RepoInventory {
    /// `_layers/<alg>/<hex>/link`
    pub layers: BTreeMap<Digest, Entry>,
    /// `_manifests/revisions/<alg>/<hex>/link`
    pub revisions: BTreeMap<Digest, Entry>,
    /// `_manifests/tags/<tag>/current/link` (what it holds is read when marking)
    pub tags: BTreeMap<String, Entry>,
    /// `_manifests/tags/<tag>/index/<alg>/<hex>/link`: (tag, digest, entry)
    pub tag_index: Vec<(String, Digest, Entry)>,
    /// berth's `_referrers/<subject>/<referrer>/link`: (subject, referrer, entry)
    pub referrers: Vec<(Digest, Digest, Entry)>,
}

/// A blob's data object.
#[derive(Debug, Clone)]
pub struct BlobEntry {
    pub size: u64,
    pub modified: DateTime<Utc>,
}

/// Blobs and repositories as one listing found them.
#[derive(Debug, Default)]
pub struct Inventory {
    pub repos: BTreeMap<String, RepoInventory>,
    pub blobs: BTreeMap<Digest, BlobEntry>,
}

/// The segments of `path` after its first `skip` (those of the listed root).
pub(super) fn parts_below(path: &Path, skip: usize) -> Vec<String> {
    path.parts()
        .skip(skip)
        .map(|p| p.as_ref().to_string())
        .collect()
}

pub(super) fn digest(alg: &str, hex: &str) -> Option<Digest> {
    format!("{alg}:{hex}").parse().ok()
}

impl Inventory {
    /// Lists `blobs/` and `repositories/` (objects berth does not recognise are ignored:
    /// distribution's `_uploads`, stray files).
    pub async fn scan(storage: &Storage) -> Result<Inventory> {
        let mut inv = Inventory::default();
        let skip = layout::repositories().parts().count();
        let mut objects = storage.list_with_meta(&layout::repositories());
        while let Some(meta) = objects.next().await {
            let meta = meta?;
            let parts = parts_below(&meta.location, skip);
            let entry = Entry {
                path: meta.location.clone(),
                modified: meta.last_modified,
            };
            inv.add_repository_object(&parts, entry);
        }
        let skip = layout::blobs().parts().count();
        let mut objects = storage.list_with_meta(&layout::blobs());
        while let Some(meta) = objects.next().await {
            let meta = meta?;
            let parts = parts_below(&meta.location, skip);
            if let [alg, _, hex, data] = parts.as_slice() {
                if let (Some(d), "data") = (digest(alg, hex), data.as_str()) {
                    inv.blobs.insert(
                        d,
                        BlobEntry {
                            size: meta.size,
                            modified: meta.last_modified,
                        },
                    );
                }
            }
        }
        Ok(inv)
    }

    /// Files one object below `repositories/` (`parts` relative to it).
    fn add_repository_object(&mut self, parts: &[String], entry: Entry) {
        // Repository name components never start with `_`; the first one that does is the
        // kind of entry.
        let Some(split) = parts.iter().position(|p| p.starts_with('_')) else {
            return;
        };
        if split == 0 {
            return;
        }
        let repo = parts[..split].join("/");
        let rest: Vec<&str> = parts[split..].iter().map(String::as_str).collect();
        let inv = || -> RepoInventory { RepoInventory::default() };
        match rest.as_slice() {
            ["_layers", alg, hex, "link"] => {
                if let Some(d) = digest(alg, hex) {
                    let r = self.repos.entry(repo).or_insert_with(inv);
                    r.layers.insert(d, entry);
                }
            }
            ["_manifests", "revisions", alg, hex, "link"] => {
                if let Some(d) = digest(alg, hex) {
                    let r = self.repos.entry(repo).or_insert_with(inv);
                    r.revisions.insert(d, entry);
                }
            }
            ["_manifests", "tags", tag, "current", "link"] => {
                let r = self.repos.entry(repo).or_insert_with(inv);
                r.tags.insert(tag.to_string(), entry);
            }
            ["_manifests", "tags", tag, "index", alg, hex, "link"] => {
                if let Some(d) = digest(alg, hex) {
                    let r = self.repos.entry(repo).or_insert_with(inv);
                    r.tag_index.push((tag.to_string(), d, entry));
                }
            }
            ["_referrers", salg, shex, alg, hex, "link"] => {
                if let (Some(s), Some(d)) = (digest(salg, shex), digest(alg, hex)) {
                    let r = self.repos.entry(repo).or_insert_with(inv);
                    r.referrers.push((s, d, entry));
                }
            }
            _ => {}
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn files_distribution_paths() {
        let mut inv = Inventory::default();
        let d = Digest::sha256(b"x");
        let hex = d.hex().to_string();
        let entry = Entry {
            path: Path::from("p"),
            modified: Utc::now(),
        };
        let add = |inv: &mut Inventory, p: &str| {
            let parts: Vec<String> = p.split('/').map(str::to_string).collect();
            inv.add_repository_object(&parts, entry.clone());
        };
        add(&mut inv, &format!("team/app/_layers/sha256/{hex}/link"));
        add(
            &mut inv,
            &format!("team/app/_manifests/revisions/sha256/{hex}/link"),
        );
        add(&mut inv, "team/app/_manifests/tags/v1/current/link");
        add(
            &mut inv,
            &format!("team/app/_manifests/tags/v1/index/sha256/{hex}/link"),
        );
        add(
            &mut inv,
            &format!("team/app/_referrers/sha256/{hex}/sha256/{hex}/link"),
        );
        add(&mut inv, "team/app/_uploads/abc/data");
        add(&mut inv, "_weird/link");
        let r = &inv.repos["team/app"];
        assert_eq!(inv.repos.len(), 1);
        assert!(r.layers.contains_key(&d) && r.revisions.contains_key(&d));
        assert!(r.tags.contains_key("v1"));
        assert_eq!((r.tag_index.len(), r.referrers.len()), (1, 1));
    }
}
