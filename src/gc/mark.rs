//! The mark phase: which manifests each repository keeps, and which blobs anything kept needs.

use std::collections::{BTreeMap, BTreeSet, HashMap};

use chrono::{DateTime, Utc};
use serde_json::Value;

use super::inventory::Inventory;
use crate::oci::Digest;
use crate::storage::{layout, Result, Storage};

/// How a collection decides.
#[derive(Debug, Clone)]
pub struct Options {
    /// Manifests no tag reaches are removed (else every manifest revision is a root).
    pub delete_untagged: bool,
    /// Anything written after this (the run's start minus the grace period) is kept: manifests
    /// and tags are roots, blobs and blobs with such a link are not collected.
    pub cutoff: DateTime<Utc>,
}

/// What a manifest references, read from its JSON without validating it (so that anything a
/// registry ever stored is understood: OCI and Docker images and indexes, artifacts, schema1).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct References {
    /// config, layers, `blobs` (old artifact manifests), schema1 `fsLayers`
    pub blobs: Vec<Digest>,
    /// an index's manifests
    pub children: Vec<Digest>,
    pub subject: Option<Digest>,
}

impl References {
    /// `None` when the bytes are not a JSON object.
    pub fn parse(bytes: &[u8]) -> Option<References> {
        let v: Value = serde_json::from_slice(bytes).ok()?;
        v.as_object()?;
        let digest = |d: &Value, field: &str| d.get(field)?.as_str()?.parse::<Digest>().ok();
        let list = |field: &str, key: &str| -> Vec<Digest> {
            v.get(field)
                .and_then(Value::as_array)
                .map(|a| a.iter().filter_map(|d| digest(d, key)).collect())
                .unwrap_or_default()
        };
        let mut blobs: Vec<Digest> = v
            .get("config")
            .and_then(|c| digest(c, "digest"))
            .into_iter()
            .collect();
        blobs.extend(list("layers", "digest"));
        blobs.extend(list("blobs", "digest"));
        blobs.extend(list("fsLayers", "blobSum"));
        Some(References {
            blobs,
            children: list("manifests", "digest"),
            subject: v.get("subject").and_then(|s| digest(s, "digest")),
        })
    }
}

/// Reads manifests for marking, remembering what each references (manifests are content
/// addressed: what a digest references never changes).
#[derive(Debug)]
pub struct ManifestReader {
    storage: Storage,
    cache: HashMap<Digest, Option<References>>,
    /// Runs that have moved blobs aside (this one's, and any other's still there): a manifest
    /// pushed again meanwhile may have its bytes under any of them. (Only one run sweeps at a
    /// time, but a store that ignores conditional writes weakens that lock: see
    /// `storage::gc_lock`. Reading every run's costs nothing when there is just one.)
    quarantines: Vec<String>,
    /// Manifests that are referenced but whose bytes are nowhere.
    pub missing: BTreeSet<Digest>,
}

impl ManifestReader {
    pub fn new(storage: Storage) -> ManifestReader {
        ManifestReader {
            storage,
            cache: HashMap::new(),
            quarantines: Vec::new(),
            missing: BTreeSet::new(),
        }
    }

    /// Reads set-aside bytes too, from the quarantine of every run found under `_berth/gc/`.
    pub async fn with_quarantines(mut self) -> Result<ManifestReader> {
        self.quarantines = self.storage.list_dirs(&layout::gc_quarantine()).await?;
        Ok(self)
    }

    /// What manifest `d` references; `None` when its bytes are missing or not a manifest. A
    /// storage failure is an error: marking cannot go on without knowing.
    pub async fn references(&mut self, d: &Digest) -> Result<Option<References>> {
        if let Some(r) = self.cache.get(d) {
            return Ok(r.clone());
        }
        let mut bytes = self.storage.read_small(&layout::blob_data(d)).await?;
        for run in &self.quarantines {
            if bytes.is_some() {
                break;
            }
            bytes = self
                .storage
                .read_small(&layout::gc_quarantined(run, d))
                .await?;
        }
        let refs = match bytes {
            Some(b) => References::parse(&b),
            None => {
                self.missing.insert(d.clone());
                return Ok(None);
            }
        };
        self.cache.insert(d.clone(), refs.clone());
        Ok(refs)
    }
}

/// What the mark phase found to be in use.
#[derive(Debug, Default)]
pub struct MarkSet {
    /// Blobs (manifests included) something kept references.
    pub blobs: BTreeSet<Digest>,
    /// Blobs with a link younger than the cutoff in some repository: being pushed.
    pub recently_linked: BTreeSet<Digest>,
    /// Per repository, the manifests it keeps.
    pub manifests: BTreeMap<String, BTreeSet<Digest>>,
}

impl MarkSet {
    pub fn keeps_blob(&self, d: &Digest) -> bool {
        self.blobs.contains(d) || self.recently_linked.contains(d)
    }

    pub fn keeps_manifest(&self, repo: &str, d: &Digest) -> bool {
        self.manifests.get(repo).is_some_and(|m| m.contains(d))
    }

    /// Marks from every root of `inv`: tags (what their `current` link holds now), every
    /// revision unless `delete_untagged`, and anything written after the cutoff; through
    /// manifests to their blobs, indexes to their children, and kept manifests to the
    /// manifests of the same repository whose `subject` they are.
    pub async fn mark(
        storage: &Storage,
        inv: &Inventory,
        opts: &Options,
        reader: &mut ManifestReader,
    ) -> Result<MarkSet> {
        let mut marks = MarkSet::default();
        for (repo, r) in &inv.repos {
            for (d, e) in &r.layers {
                if e.modified > opts.cutoff {
                    marks.recently_linked.insert(d.clone());
                }
            }
            let mut roots: Vec<Digest> = Vec::new();
            for e in r.tags.values() {
                // A tag link that cannot be read stops the run (error): its manifest would
                // otherwise not be a root.
                if let Some(d) = storage.read_link(&e.path).await? {
                    roots.push(d);
                }
            }
            for (d, e) in &r.revisions {
                if !opts.delete_untagged || e.modified > opts.cutoff {
                    roots.push(d.clone());
                }
            }
            let indexed = r.tag_index.iter().map(|(_, d, e)| (d, e));
            for (d, e) in indexed.chain(r.referrers.iter().map(|(_, d, e)| (d, e))) {
                if e.modified > opts.cutoff {
                    roots.push(d.clone());
                }
            }
            // Which revisions name which subject (only needed when revisions are not all roots).
            let mut referrers: HashMap<Digest, Vec<Digest>> = HashMap::new();
            if opts.delete_untagged {
                for d in r.revisions.keys() {
                    if let Some(subject) = reader.references(d).await?.and_then(|x| x.subject) {
                        referrers.entry(subject).or_default().push(d.clone());
                    }
                }
            }
            let kept = marks.manifests.entry(repo.clone()).or_default();
            while let Some(d) = roots.pop() {
                if !kept.insert(d.clone()) {
                    continue;
                }
                marks.blobs.insert(d.clone());
                if let Some(refs) = reader.references(&d).await? {
                    marks.blobs.extend(refs.blobs);
                    roots.extend(refs.children);
                }
                if let Some(r) = referrers.get(&d) {
                    roots.extend(r.iter().cloned());
                }
            }
        }
        Ok(marks)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn references_of_every_kind() {
        let a = Digest::sha256(b"a");
        let b = Digest::sha256(b"b");
        let image = format!(
            r#"{{"schemaVersion":2,"config":{{"digest":"{a}"}},"layers":[{{"digest":"{b}"}}],"subject":{{"digest":"{a}"}}}}"#
        );
        let r = References::parse(image.as_bytes()).unwrap();
        assert_eq!(r.blobs, vec![a.clone(), b.clone()]);
        assert_eq!(r.subject, Some(a.clone()));
        let index = format!(r#"{{"schemaVersion":2,"manifests":[{{"digest":"{b}"}}]}}"#);
        assert_eq!(
            References::parse(index.as_bytes()).unwrap().children,
            vec![b.clone()]
        );
        let schema1 = format!(r#"{{"schemaVersion":1,"fsLayers":[{{"blobSum":"{a}"}}]}}"#);
        assert_eq!(
            References::parse(schema1.as_bytes()).unwrap().blobs,
            vec![a]
        );
        assert!(References::parse(b"not json").is_none());
    }
}
