//! Listings: tags, the catalog, and referrers.

use futures_util::StreamExt;
use serde_json::{json, Value};

use super::{Registry, RegistryError, Result};
use crate::oci::manifest::Manifest;
use crate::oci::{Digest, Reference, RepoName, Tag};
use crate::storage::layout;

/// The catalog answers at most this many names when the client gives no `n`.
pub const DEFAULT_CATALOG_PAGE: usize = 1000;

/// One page of a sorted listing.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Page {
    pub items: Vec<String>,
    /// The last item, when more follow it (for the `Link` header).
    pub next_after: Option<String>,
}

/// Cuts one page out of a sorted list: items after `last`, at most `n` of them.
pub fn paginate(sorted: Vec<String>, n: Option<usize>, last: Option<&str>) -> Page {
    let start = match last {
        Some(l) => sorted.partition_point(|x| x.as_str() <= l),
        None => 0,
    };
    let rest = &sorted[start..];
    let take = n.unwrap_or(rest.len()).min(rest.len());
    let items = rest[..take].to_vec();
    let next_after = if take < rest.len() && take > 0 {
        items.last().cloned()
    } else {
        None
    };
    Page { items, next_after }
}

/// Parses the `n` query parameter.
pub fn parse_n(n: Option<&str>) -> Result<Option<usize>> {
    n.map(|s| {
        s.parse::<usize>()
            .map_err(|_| RegistryError::InvalidPagination(format!("n={s:?} is not a count")))
    })
    .transpose()
}

/// The page of a listing read as `n + 1` names after its start (all, without `n`).
fn page_of(mut names: Vec<String>, n: Option<usize>) -> Page {
    let more = n.is_some_and(|n| n > 0 && names.len() > n);
    if let Some(n) = n {
        names.truncate(n);
    }
    let next_after = if more { names.last().cloned() } else { None };
    Page {
        items: names,
        next_after,
    }
}

/// The most names one trip of the catalog walk reads when hidden names left a page short.
const CATALOG_BATCH_MAX: usize = 10_000;

impl Registry {
    /// A page of the repository's tags, in lexical order: one read of the tags directory,
    /// sorting only the page; a tag whose link a crash left unwritten is not listed.
    pub async fn tags(
        &self,
        repo: &RepoName,
        n: Option<usize>,
        last: Option<&str>,
    ) -> Result<Page> {
        if !self.repository_exists(repo).await? {
            return Err(RegistryError::NameUnknown(repo.clone()));
        }
        let tags = self
            .storage
            .tags_after(repo, last, n.map(|n| n.saturating_add(1)))
            .await?;
        Ok(page_of(tags, n))
    }

    /// A page of the repository names that hold manifests and that `visible` lets the caller
    /// see, in lexical order. Names are filtered before the page is cut, so a page holds up to
    /// `n` visible names and its `next_after` is one of them. The repository tree is walked in
    /// order from `last` and only as far as the page (see `storage::listing`): one walk when
    /// every name is visible, more (of growing batches) while hidden ones leave the page short.
    pub async fn catalog(
        &self,
        n: Option<usize>,
        last: Option<&str>,
        visible: impl Fn(&str) -> bool,
    ) -> Result<Page> {
        let n = n.unwrap_or(DEFAULT_CATALOG_PAGE);
        if n == 0 {
            return Ok(page_of(Vec::new(), Some(0)));
        }
        let want = n + 1;
        let mut names = Vec::with_capacity(want);
        let mut cursor = last.map(str::to_string);
        let mut batch = want;
        loop {
            let read = self
                .storage
                .repositories_after(cursor.as_deref(), batch)
                .await?;
            let exhausted = read.len() < batch;
            if let Some(end) = read.last() {
                cursor = Some(end.clone());
            }
            names.extend(read.into_iter().filter(|name| visible(name)));
            if names.len() >= want || exhausted {
                break;
            }
            batch = (batch * 2).min(CATALOG_BATCH_MAX);
        }
        names.truncate(want);
        Ok(page_of(names, Some(n)))
    }

    /// Descriptors of the manifests in `repo` whose `subject` is `subject`, optionally only
    /// those of one artifact type. Candidates come from berth's own index (written at push) and,
    /// for storage taken over from a registry without the referrers API, from the index clients
    /// kept under the referrers tag schema (`sha256-<hex>`); each is checked to still be in the
    /// repository and to name this subject.
    pub async fn referrers(
        &self,
        repo: &RepoName,
        subject: &Digest,
        artifact_type: Option<&str>,
    ) -> Result<Vec<Value>> {
        let mut candidates = std::collections::BTreeSet::new();
        let mut links = self
            .storage
            .list_objects(&layout::referrers_dir(repo, subject));
        while let Some(link) = links.next().await {
            if let Some(digest) = self.storage.read_link(&link?).await? {
                candidates.insert(digest);
            }
        }
        let schema_tag = format!("{}-{}", subject.algorithm().as_str(), &subject.hex()[..64]);
        if let Ok(tag) = schema_tag.parse::<Tag>() {
            if let Some(index) = self.resolve(repo, &Reference::Tag(tag)).await? {
                if let Ok(bytes) = self.storage.read_blob(&index).await {
                    if let Ok(parsed) = Manifest::parse(&bytes, None) {
                        candidates.extend(parsed.children.into_iter().map(|d| d.digest));
                    }
                }
            }
        }
        let mut out = Vec::new();
        for digest in candidates {
            let reference = Reference::Digest(digest.clone());
            if self.resolve(repo, &reference).await?.is_none() {
                continue;
            }
            let Ok(bytes) = self.storage.read_blob(&digest).await else {
                continue;
            };
            let Ok(parsed) = Manifest::parse(&bytes, None) else {
                continue;
            };
            if parsed.subject.as_ref().map(|s| &s.digest) != Some(subject) {
                continue;
            }
            let kind = parsed.referrer_artifact_type();
            if artifact_type.is_some() && kind.as_deref() != artifact_type {
                continue;
            }
            let mut d = json!({
                "mediaType": parsed.media_type,
                "digest": digest.to_string(),
                "size": bytes.len(),
            });
            if let Some(kind) = kind {
                d["artifactType"] = json!(kind);
            }
            if let Some(annotations) = &parsed.annotations {
                d["annotations"] = json!(annotations);
            }
            out.push(d);
        }
        Ok(out)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn list(items: &[&str]) -> Vec<String> {
        items.iter().map(|s| s.to_string()).collect()
    }

    #[test]
    fn pages() {
        let all = list(&["a", "b", "c", "d"]);
        assert_eq!(
            paginate(all.clone(), Some(2), None),
            Page {
                items: list(&["a", "b"]),
                next_after: Some("b".into())
            }
        );
        assert_eq!(
            paginate(all.clone(), Some(2), Some("b")),
            Page {
                items: list(&["c", "d"]),
                next_after: None
            }
        );
        assert_eq!(
            paginate(all.clone(), Some(0), None).items,
            Vec::<String>::new()
        );
        assert_eq!(paginate(all.clone(), Some(0), None).next_after, None);
        assert_eq!(
            paginate(all.clone(), None, Some("bb")).items,
            list(&["c", "d"])
        );
        assert_eq!(
            paginate(all, Some(10), Some("d")).items,
            Vec::<String>::new()
        );
    }

    #[test]
    fn n_must_be_a_count() {
        assert_eq!(parse_n(Some("5")).unwrap(), Some(5));
        assert!(parse_n(Some("-1")).is_err());
        assert!(parse_n(Some("x")).is_err());
    }
}
