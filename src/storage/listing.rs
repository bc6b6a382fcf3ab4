//! Listings that cost a page, not the registry: the ordered, lazy walk of distribution's
//! repository tree behind the catalog, and pages of one directory's entries (tags).
//!
//! A repository is a directory under `repositories/` holding `_manifests`; names nest (`a` and
//! `a/b` can both be repositories), and entries that are no valid name component (those starting
//! with `_` among them) are neither names nor walked into. The catalog is the full names in
//! lexical (byte) order. At one level the walk merges two keys per entry `e`: `e` (the
//! repository itself) and `e/` (the names below it), so that `a` < `a-c` < `a-c/x` < `a/b` come
//! out in order; it reads `e`'s directory only when one of its keys is reached, skips subtrees
//! lying wholly before `last`, and stops after the page.
//!
//! Directories are read in pages through [`Dirs`], in the order S3 lists common prefixes: by the
//! bytes of `e/`. That is not the order of the names: `a-c/` < `a/` but `a` < `a-c`. A [`Level`]
//! turns it into name order: when `e` comes, the only entries still to come that sort before
//! `e/` are proper prefixes of `e` followed by a byte below `/` (`a` for `a-c`), so those are
//! looked up (in the page at hand, or with one listing of their own), and every key up to `e/`
//! is then final. On local disk [`LocalDirs`] reads a directory whole with `read_dir` (the
//! entries' file types, no stat per entry; the whole walk in one trip to the blocking pool), or
//! pages through its sorted listing kept in memory while it is unchanged ([`dir_cache`]); on
//! S3 `S3Dirs` lists one directory page by page (`ListObjectsV2`, signed in `s3_requests`);
//! other stores go through object_store's delimiter listing, a directory at a time.

use std::cmp::Ordering;
use std::collections::{BTreeSet, HashMap, HashSet, VecDeque};
use std::path::PathBuf;

use futures_util::FutureExt;
use object_store::path::Path;
use object_store::ObjectStore;

use super::dir_cache::{self, DirCache, Order};
use super::s3_requests::S3Requests;
use super::{layout, Backend, Result, Storage, StorageError};
use crate::oci::RepoName;

/// Where a page of a directory's entries starts.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Start {
    /// At the first entry `e` whose `e/` sorts after this (at the first entry, without it).
    After(Option<String>),
    /// Where the previous page ended, as the store told.
    Token(String),
}

/// One page of a directory's subdirectories.
#[derive(Debug, Clone, Default)]
pub(crate) struct DirPage {
    /// Their names, ordered by the bytes of `name/`.
    pub entries: Vec<String>,
    /// Where the next page starts, if there is one.
    pub next: Option<Start>,
}

/// Reads the subdirectories of the directories below a base.
pub(crate) trait Dirs {
    /// A page of the subdirectories of `dir` (relative to the base, empty for the base itself)
    /// from `start`; none for a missing directory.
    async fn page(&self, dir: &str, start: &Start) -> Result<DirPage>;
}

/// `a/` against `b/`, by bytes: the order of S3's common prefixes (a comparison of the common
/// length, then of `/` against the longer one's next byte).
pub(crate) fn slash_order(a: &str, b: &str) -> Ordering {
    let (a, b) = (a.as_bytes(), b.as_bytes());
    let common = a.len().min(b.len());
    match a[..common].cmp(&b[..common]) {
        Ordering::Equal => match a.len().cmp(&b.len()) {
            Ordering::Equal => Ordering::Equal,
            Ordering::Less => slashed_tail(&b[common..]).reverse(),
            Ordering::Greater => slashed_tail(&a[common..]),
        },
        other => other,
    }
}

/// `tail/` against `/` (the longer name's rest against the shorter one's slash): past an equal
/// first byte, `tail/` is the longer.
fn slashed_tail(tail: &[u8]) -> Ordering {
    tail[0].cmp(&b'/').then(Ordering::Greater)
}

fn slashed(name: &str) -> impl Iterator<Item = u8> + '_ {
    name.bytes().chain(std::iter::once(b'/'))
}

/// A whole directory's `names` as one page from `start`.
fn whole_page(mut names: Vec<String>, start: &Start) -> DirPage {
    if let Start::After(Some(after)) = start {
        names.retain(|n| slashed(n).cmp(after.bytes()) == Ordering::Greater);
    }
    names.sort_unstable_by(|a, b| slash_order(a, b));
    DirPage {
        entries: names,
        next: None,
    }
}

/// Directories on local disk, read with `read_dir` (synchronously: their futures are ready at
/// once, see [`Storage::repositories_after`]): a directory read afresh comes whole, one kept
/// sorted in memory ([`dir_cache`]) by pages of [`LOCAL_PAGE`].
pub(crate) struct LocalDirs<'a> {
    pub base: PathBuf,
    pub cache: &'a DirCache,
}

/// Entries per page of a directory whose sorted listing was kept.
const LOCAL_PAGE: usize = 1000;

impl Dirs for LocalDirs<'_> {
    async fn page(&self, dir: &str, start: &Start) -> Result<DirPage> {
        let path = if dir.is_empty() {
            self.base.clone()
        } else {
            self.base.join(dir)
        };
        let listing = self.cache.subdirs(&path, Order::Slash)?;
        let names = &listing.names;
        let from = match start {
            Start::After(None) => 0,
            Start::After(Some(after)) | Start::Token(after) => {
                names.partition_point(|n| slashed(n).cmp(after.bytes()) != Ordering::Greater)
            }
        };
        let to = if listing.kept {
            (from + LOCAL_PAGE).min(names.len())
        } else {
            names.len()
        };
        let next =
            (to < names.len()).then(|| Start::After(Some(format!("{}/", names.get(to - 1)))));
        Ok(DirPage {
            entries: names.slice(from, to),
            next,
        })
    }
}

/// The names of the directories in `dir` on disk (directories by their entry's type, symbolic
/// links followed as object_store follows them), unsorted; none if `dir` is missing.
pub(crate) fn read_subdirs(dir: &std::path::Path) -> Result<Vec<String>> {
    let entries = match std::fs::read_dir(dir) {
        Ok(entries) => entries,
        Err(e)
            if matches!(
                e.kind(),
                std::io::ErrorKind::NotFound | std::io::ErrorKind::NotADirectory
            ) =>
        {
            return Ok(Vec::new())
        }
        Err(e) => return Err(StorageError::Io(e)),
    };
    let mut names = Vec::new();
    for entry in entries {
        let entry = entry.map_err(StorageError::Io)?;
        let kind = entry.file_type().map_err(StorageError::Io)?;
        let is_dir = kind.is_dir()
            || (kind.is_symlink() && std::fs::metadata(entry.path()).is_ok_and(|m| m.is_dir()));
        // Names that are not UTF-8 are none the registry could have written.
        if let (true, Ok(name)) = (is_dir, entry.file_name().into_string()) {
            names.push(name);
        }
    }
    Ok(names)
}

/// An object store's directories, each listed whole with object_store's delimiter listing.
pub(crate) struct StoreDirs<'a> {
    pub store: &'a dyn ObjectStore,
    pub base: Path,
}

impl Dirs for StoreDirs<'_> {
    async fn page(&self, dir: &str, start: &Start) -> Result<DirPage> {
        let prefix: Path = self.base.parts().chain(Path::from(dir).parts()).collect();
        Ok(whole_page(store_subdirs(self.store, &prefix).await?, start))
    }
}

/// The "directories" directly below `prefix` in an object store, unsorted.
pub(crate) async fn store_subdirs(store: &dyn ObjectStore, prefix: &Path) -> Result<Vec<String>> {
    let listing = match store.list_with_delimiter(Some(prefix)).await {
        Ok(l) => l,
        Err(object_store::Error::NotFound { .. }) => return Ok(Vec::new()),
        Err(e) => return Err(e.into()),
    };
    Ok(listing
        .common_prefixes
        .iter()
        .filter_map(|p| p.filename().map(str::to_string))
        .collect())
}

/// S3's directories, a page (of up to 1,000) per `ListObjectsV2`.
pub(crate) struct S3Dirs<'a> {
    pub requests: &'a S3Requests,
    pub base: Path,
}

impl Dirs for S3Dirs<'_> {
    async fn page(&self, dir: &str, start: &Start) -> Result<DirPage> {
        let prefix: Path = self.base.parts().chain(Path::from(dir).parts()).collect();
        let (entries, token) = self.requests.list_directory(&prefix, start).await?;
        Ok(DirPage {
            entries,
            next: token.map(Start::Token),
        })
    }
}

/// One directory being walked: its entries' keys, merged into name order.
struct Level {
    /// The directory, relative to the base of the [`Dirs`].
    dir: String,
    /// What goes before an entry to make its name: the directory's name and `/`, or nothing.
    names: String,
    /// Whether entries are repositories with names below them (`e` and `e/`), or plain names.
    nested: bool,
    /// Entries listed and not taken yet, by `e/`.
    buffer: VecDeque<String>,
    next: Option<Start>,
    /// Keys `(key, is_subtree)` waiting for every smaller key to be known.
    pending: BTreeSet<(String, bool)>,
    /// Entries whose own key was decided (pushed, or found not to exist).
    known: HashSet<String>,
    /// `e/` of the last entry taken: no key to come sorts before it.
    watermark: Option<String>,
    /// First pages of entries' directories read already.
    read: HashMap<String, DirPage>,
}

impl Level {
    /// The directory `dir` (names in it start with `names`) listed from where `after` needs.
    fn start(dir: String, names: String, nested: bool, after: Option<&str>) -> Level {
        // Entries `e` with `e/` not after the component of `after` hold nothing after `after`.
        let bound = after
            .and_then(|a| a.strip_prefix(names.as_str()))
            .map(|rest| {
                if nested {
                    rest.split('/').next().unwrap_or("")
                } else {
                    rest
                }
            })
            .filter(|b| !b.is_empty())
            .map(str::to_string);
        Level::from_page(
            dir,
            names,
            nested,
            DirPage {
                entries: Vec::new(),
                next: Some(Start::After(bound)),
            },
        )
    }

    /// The directory whose first page was read already.
    fn from_page(dir: String, names: String, nested: bool, page: DirPage) -> Level {
        Level {
            dir,
            names,
            nested,
            buffer: page.entries.into(),
            next: page.next,
            pending: BTreeSet::new(),
            known: HashSet::new(),
            watermark: None,
            read: HashMap::new(),
        }
    }

    /// Whether the entry whose full name is `name` can have a key of its own on the page.
    fn wanted(&self, name: &str, after: Option<&str>) -> bool {
        after.is_none_or(|a| name > a) && (!self.nested || name.parse::<RepoName>().is_ok())
    }

    /// The next key in name order, `None` at the end of the directory.
    async fn next_key<D: Dirs>(
        &mut self,
        dirs: &D,
        after: Option<&str>,
    ) -> Result<Option<(String, bool)>> {
        loop {
            if let Some((first, _)) = self.pending.first() {
                let exhausted = self.buffer.is_empty() && self.next.is_none();
                if exhausted
                    || self
                        .watermark
                        .as_deref()
                        .is_some_and(|w| first.as_str() <= w)
                {
                    return Ok(self.pending.pop_first());
                }
            }
            let Some(entry) = self.buffer.pop_front() else {
                let Some(start) = self.next.take() else {
                    return Ok(None);
                };
                let page = dirs.page(&self.dir, &start).await?;
                if page.entries.is_empty() && page.next.as_ref() == Some(&start) {
                    return Err(StorageError::Corrupt {
                        path: self.dir.clone(),
                        reason: "a listing whose pages do not advance".into(),
                    });
                }
                self.buffer.extend(page.entries);
                self.next = page.next;
                continue;
            };
            self.take(entry, dirs, after).await?;
        }
    }

    /// Takes the next entry listed: its keys, and the entries to come that sort before it.
    async fn take<D: Dirs>(&mut self, entry: String, dirs: &D, after: Option<&str>) -> Result<()> {
        // Entries `x` with `x/` after `entry/` but `x` before it: `x` then a byte below `/`.
        for (i, _) in entry
            .bytes()
            .enumerate()
            .filter(|&(i, b)| i > 0 && b < b'/')
        {
            let x = &entry[..i];
            if !self.known.insert(x.to_string()) {
                continue;
            }
            let name = format!("{}{x}", self.names);
            if !self.wanted(&name, after) {
                continue;
            }
            let exists = match self.buffer.back() {
                // The page at hand reaches past `x/`: it holds `x` if anything does.
                Some(last) if slash_order(last, x) != Ordering::Less => {
                    self.buffer.binary_search_by(|e| slash_order(e, x)).is_ok()
                }
                _ if self.next.is_none() => false,
                _ => {
                    let dir = join(&self.dir, x);
                    let page = dirs.page(&dir, &Start::After(None)).await?;
                    let found = !page.entries.is_empty();
                    if found {
                        self.read.insert(x.to_string(), page);
                    }
                    found
                }
            };
            if exists {
                self.pending.insert((x.to_string(), false));
            }
        }
        let name = format!("{}{entry}", self.names);
        if self.nested && name.parse::<RepoName>().is_ok() {
            self.pending.insert((format!("{entry}/"), true));
        }
        if self.known.insert(entry.clone()) && self.wanted(&name, after) {
            self.pending.insert((entry.clone(), false));
        }
        self.watermark = Some(format!("{entry}/"));
        Ok(())
    }
}

fn join(dir: &str, entry: &str) -> String {
    if dir.is_empty() {
        entry.to_string()
    } else {
        format!("{dir}/{entry}")
    }
}

/// Whether the directory of `name`, whose first page is `page`, holds `_manifests`.
async fn holds_manifests<D: Dirs>(dirs: &D, name: &str, page: &DirPage) -> Result<bool> {
    if page.entries.iter().any(|e| e == "_manifests") {
        return Ok(true);
    }
    match (&page.next, page.entries.last()) {
        // More pages, all of this one before `_manifests/`: look there.
        (Some(_), Some(last)) if slash_order(last, "_manifests") == Ordering::Less => {
            let from = Start::After(Some("_manifests".into()));
            let rest = dirs.page(name, &from).await?;
            Ok(rest.entries.iter().any(|e| e == "_manifests"))
        }
        _ => Ok(false),
    }
}

/// Up to `limit` repository names after `after` (all, without it), in lexical order: `dirs`
/// based at `repositories/`.
pub(crate) async fn repositories_after<D: Dirs>(
    dirs: &D,
    after: Option<&str>,
    limit: usize,
) -> Result<Vec<String>> {
    let mut names = Vec::new();
    if limit == 0 {
        return Ok(names);
    }
    let mut levels = vec![Level::start(String::new(), String::new(), true, after)];
    while let Some(top) = levels.last_mut() {
        let Some((key, subtree)) = top.next_key(dirs, after).await? else {
            levels.pop();
            continue;
        };
        if subtree {
            let prefix = format!("{}{key}", top.names);
            let entry = &key[..key.len() - 1];
            let first = top.read.remove(entry);
            // Every name below `prefix` sorts before `after` unless `after` is below it too.
            if after.is_some_and(|a| !a.starts_with(&prefix) && a > prefix.as_str()) {
                continue;
            }
            let dir = prefix[..prefix.len() - 1].to_string();
            levels.push(match first {
                Some(page) => Level::from_page(dir, prefix, true, page),
                None => Level::start(dir, prefix, true, after),
            });
        } else {
            let name = format!("{}{key}", top.names);
            let page = match top.read.remove(&key) {
                Some(page) => page,
                None => dirs.page(&name, &Start::After(None)).await?,
            };
            let is_repository = holds_manifests(dirs, &name, &page).await?;
            top.read.insert(key, page);
            if is_repository {
                names.push(name);
                if names.len() == limit {
                    break;
                }
            }
        }
    }
    Ok(names)
}

/// Up to `limit` names of the base's subdirectories after `after`, in lexical order, read
/// page by page.
pub(crate) async fn entries_after<D: Dirs>(
    dirs: &D,
    after: Option<&str>,
    limit: usize,
) -> Result<Vec<String>> {
    let mut level = Level::start(String::new(), String::new(), false, after);
    let mut names = Vec::new();
    while names.len() < limit {
        match level.next_key(dirs, after).await? {
            Some((name, _)) => names.push(name),
            None => break,
        }
    }
    Ok(names)
}

/// The first `limit` of `names` after `after` (all of them, without a limit), sorted: a
/// selection, then a sort of the page only.
pub(crate) fn smallest_after(
    mut names: Vec<String>,
    after: Option<&str>,
    limit: Option<usize>,
) -> Vec<String> {
    if let Some(after) = after {
        names.retain(|n| n.as_str() > after);
    }
    if let Some(limit) = limit {
        if limit == 0 {
            return Vec::new();
        }
        if limit < names.len() {
            names.select_nth_unstable(limit - 1);
            names.truncate(limit);
        }
    }
    names.sort_unstable();
    names
}

impl Storage {
    /// Up to `limit` repository names after `after`, in lexical order, whoever may see them.
    /// On local disk the walk runs in one trip to the blocking pool.
    pub async fn repositories_after(
        &self,
        after: Option<&str>,
        limit: usize,
    ) -> Result<Vec<String>> {
        let base = layout::repositories();
        if let Some((local, _)) = self.local_files() {
            let dirs = LocalDirs {
                base: local.path_to_filesystem(&base)?,
                cache: dir_cache::shared(),
            };
            let after = after.map(str::to_string);
            return tokio::task::spawn_blocking(move || {
                repositories_after(&dirs, after.as_deref(), limit)
                    .now_or_never()
                    .expect("reads of local directories never wait")
            })
            .await
            .map_err(|e| StorageError::Io(std::io::Error::other(e)))?;
        }
        if let Backend::Objects {
            requests: Some(requests),
            ..
        } = &self.backend
        {
            let dirs = S3Dirs { requests, base };
            return repositories_after(&dirs, after, limit).await;
        }
        let dirs = StoreDirs {
            store: self.store.as_ref(),
            base,
        };
        repositories_after(&dirs, after, limit).await
    }

    /// The names of the directories directly below `prefix` after `after`, sorted, at most
    /// `limit` of them (all without a limit). On local disk one `read_dir` and a sort of the
    /// page only; on S3 with a limit, pages of the directory as far as needed.
    pub async fn dirs_after(
        &self,
        prefix: &Path,
        after: Option<&str>,
        limit: Option<usize>,
    ) -> Result<Vec<String>> {
        if let Some((local, _)) = self.local_files() {
            let dir = local.path_to_filesystem(prefix)?;
            return local_subdirs_after(dir, after, limit, |_| Ok(true)).await;
        }
        if let (
            Backend::Objects {
                requests: Some(requests),
                ..
            },
            Some(limit),
        ) = (&self.backend, limit)
        {
            let dirs = S3Dirs {
                requests,
                base: prefix.clone(),
            };
            return entries_after(&dirs, after, limit).await;
        }
        let names = store_subdirs(self.store.as_ref(), prefix).await?;
        Ok(smallest_after(names, after, limit))
    }

    /// Up to `limit` of `repo`'s tags after `after`, in byte order (all of them without a
    /// limit): the tag directories that hold a current link, so that every tag listed can be
    /// fetched. A tag's directories are made before its link is renamed into place, so a
    /// process killed in between (before its journal entry, so nothing replays it) or a write
    /// that failed leaves `tags/<t>/current/` without a link: on local disk each name of the page
    /// is checked for its link (a `stat`) and skipped without one. An object store has no empty
    /// directories, and berth writes a tag's current link first and deletes it last
    /// ([`Storage::delete_tag`]), so its tag prefixes are listed as they come, without a HEAD
    /// per name. Not covered there: a delete racing a push of the same tag (the push's index
    /// entry can outlive the delete), and prefixes written by other tools (distribution writes
    /// the index entry first; consoles make empty "folder" objects).
    pub async fn tags_after(
        &self,
        repo: &RepoName,
        after: Option<&str>,
        limit: Option<usize>,
    ) -> Result<Vec<String>> {
        let Some((local, _)) = self.local_files() else {
            return self.dirs_after(&layout::tags_dir(repo), after, limit).await;
        };
        let dir = local.path_to_filesystem(&layout::tags_dir(repo))?;
        local_subdirs_after(dir, after, limit, has_current_link).await
    }
}

/// Up to `limit` names of the subdirectories of `dir` on disk after `after`, in byte order,
/// that `keep` keeps (all of them without a limit): on the blocking pool, through the sorted
/// listing kept in memory ([`dir_cache`]), `keep` asked only as far as the page goes.
async fn local_subdirs_after(
    dir: PathBuf,
    after: Option<&str>,
    limit: Option<usize>,
    keep: fn(&std::path::Path) -> Result<bool>,
) -> Result<Vec<String>> {
    let after = after.map(str::to_string);
    tokio::task::spawn_blocking(move || {
        let names = dir_cache::shared().subdirs(&dir, Order::Bytes)?.names;
        let from = after
            .as_deref()
            .map_or(0, |a| names.partition_point(|n| n <= a));
        let mut kept = Vec::new();
        for i in from..names.len() {
            if limit.is_some_and(|l| kept.len() >= l) {
                break;
            }
            let name = names.get(i);
            if keep(&dir.join(name))? {
                kept.push(name.to_string());
            }
        }
        Ok(kept)
    })
    .await
    .map_err(|e| StorageError::Io(std::io::Error::other(e)))?
}

/// Whether the tag directory `tag_dir` on disk holds its `current/link` file.
fn has_current_link(tag_dir: &std::path::Path) -> Result<bool> {
    match std::fs::metadata(tag_dir.join("current").join("link")) {
        Ok(meta) => Ok(meta.is_file()),
        Err(e)
            if matches!(
                e.kind(),
                std::io::ErrorKind::NotFound | std::io::ErrorKind::NotADirectory
            ) =>
        {
            Ok(false)
        }
        Err(e) => Err(StorageError::Io(e)),
    }
}

#[cfg(test)]
#[path = "listing_tests.rs"]
mod tests;
