//! The ordered walk against the old algorithm (every name collected, sorted, then cut), on
//! hand-made and generated trees, in memory, on local disk and on the in-memory store.

use std::cmp::Ordering;
use std::collections::{BTreeMap, BTreeSet};

use super::*;
use crate::oci::{Digest, Tag};

/// A tree of directories in memory: every directory by its path relative to `repositories/`.
#[derive(Default)]
struct Tree {
    dirs: BTreeSet<String>,
}

impl Tree {
    /// `paths`: directories, each with its parents.
    fn of(paths: &[&str]) -> Tree {
        let mut tree = Tree::default();
        for path in paths {
            tree.add(path);
        }
        tree
    }

    fn add(&mut self, path: &str) {
        let mut at = String::new();
        for part in path.split('/') {
            if !at.is_empty() {
                at.push('/');
            }
            at.push_str(part);
            self.dirs.insert(at.clone());
        }
    }

    /// The repositories `names`, each holding `_manifests/tags` and `_layers`.
    fn repositories(names: &[&str]) -> Tree {
        let mut tree = Tree::default();
        for name in names {
            tree.add(&format!("{name}/_manifests/tags"));
            tree.add(&format!("{name}/_layers"));
        }
        tree
    }

    /// The old algorithm: every repository found by walking all of it, sorted.
    fn all_sorted(&self) -> Vec<String> {
        let mut names: Vec<String> = self
            .dirs
            .iter()
            .filter_map(|d| d.strip_suffix("/_manifests"))
            .filter(|name| {
                // Reached only through valid names (each prefix of components).
                let parts: Vec<&str> = name.split('/').collect();
                (1..=parts.len()).all(|k| parts[..k].join("/").parse::<RepoName>().is_ok())
            })
            .map(str::to_string)
            .collect();
        names.sort();
        names
    }

    /// The old page: the sorted list cut after `after`, `limit` long.
    fn old_page(&self, after: Option<&str>, limit: usize) -> Vec<String> {
        self.all_sorted()
            .into_iter()
            .filter(|n| after.is_none_or(|a| n.as_str() > a))
            .take(limit)
            .collect()
    }
}

impl Tree {
    /// The subdirectories of `dir`, by `name/`.
    fn children(&self, dir: &str) -> Vec<String> {
        let prefix = if dir.is_empty() {
            String::new()
        } else {
            format!("{dir}/")
        };
        let mut children: Vec<String> = self
            .dirs
            .iter()
            .filter_map(|d| d.strip_prefix(&prefix))
            .filter(|rest| !rest.is_empty() && !rest.contains('/'))
            .map(str::to_string)
            .collect();
        children.sort_by(|a, b| slash_order(a, b));
        children
    }
}

/// The tree listed as S3 lists it: pages of `PAGE` common prefixes, by `name/`, the token being
/// the last name given; reads counted.
struct Paged<'a> {
    tree: &'a Tree,
    reads: std::cell::Cell<usize>,
}

const PAGE: usize = 2;

impl Dirs for Paged<'_> {
    async fn page(&self, dir: &str, start: &Start) -> Result<DirPage> {
        self.reads.set(self.reads.get() + 1);
        let rest: Vec<String> = self
            .tree
            .children(dir)
            .into_iter()
            .filter(|e| match start {
                Start::After(None) => true,
                Start::After(Some(a)) => slashed(e).cmp(a.bytes()) == Ordering::Greater,
                Start::Token(t) => slash_order(e, t) == Ordering::Greater,
            })
            .collect();
        let more = rest.len() > PAGE;
        let entries: Vec<String> = rest.into_iter().take(PAGE).collect();
        let next = more.then(|| Start::Token(entries.last().unwrap().clone()));
        Ok(DirPage { entries, next })
    }
}

/// The tree read whole, a directory at a time, in any order (backwards).
impl Dirs for Tree {
    async fn page(&self, dir: &str, start: &Start) -> Result<DirPage> {
        let mut all = self.children(dir);
        all.reverse();
        Ok(whole_page(all, start))
    }
}

/// The walk over the tree read whole, checked against the same walk over S3-like pages.
fn walk(tree: &Tree, after: Option<&str>, limit: usize) -> Vec<String> {
    let whole = repositories_after(tree, after, limit)
        .now_or_never()
        .unwrap()
        .unwrap();
    let paged = Paged {
        tree,
        reads: Default::default(),
    };
    let by_pages = repositories_after(&paged, after, limit)
        .now_or_never()
        .unwrap()
        .unwrap();
    assert_eq!(
        whole, by_pages,
        "read in pages, after {after:?}, limit {limit}"
    );
    whole
}

/// Every page of `size`, following each page's last name, concatenated.
fn paged(tree: &Tree, size: usize) -> Vec<String> {
    let mut all = Vec::new();
    let mut after: Option<String> = None;
    loop {
        let page = walk(tree, after.as_deref(), size);
        all.extend(page.iter().cloned());
        if page.len() < size {
            return all;
        }
        after = page.last().cloned();
    }
}

#[test]
fn slash_order_is_the_order_of_names_with_a_slash() {
    let names = [
        "", "a", "a-", "a-b", "a.", "a/", "a/b", "a//", "a0", "ab", "b", "/", "//",
    ];
    for a in names {
        for b in names {
            assert_eq!(
                slash_order(a, b),
                slashed(a).cmp(slashed(b)),
                "{a:?} against {b:?}"
            );
        }
    }
}

#[test]
fn nested_names_come_in_lexical_order() {
    let tree = Tree::repositories(&["a", "a-c", "a/b", "a.b", "a_b", "a/b/c", "ab", "a-c/d", "b"]);
    let expected = ["a", "a-c", "a-c/d", "a.b", "a/b", "a/b/c", "a_b", "ab", "b"];
    assert_eq!(walk(&tree, None, 100), expected);
    assert_eq!(tree.all_sorted(), expected);
    for size in 1..=10 {
        assert_eq!(paged(&tree, size), expected, "pages of {size}");
    }
}

#[test]
fn dashes_and_dots_sort_before_the_slash() {
    let tree = Tree::repositories(&["x", "x--y", "x-y", "x.y", "x/y", "x/y-z", "x/y/z", "x0"]);
    assert_eq!(
        walk(&tree, None, 100),
        ["x", "x--y", "x-y", "x.y", "x/y", "x/y-z", "x/y/z", "x0"]
    );
}

#[test]
fn last_in_the_middle_of_a_subtree() {
    let tree = Tree::repositories(&["a", "a/b", "a/b/c", "a/b/d", "a/c", "a-b", "b", "b/a"]);
    assert_eq!(walk(&tree, Some("a/b/c"), 3), ["a/b/d", "a/c", "b"]);
    assert_eq!(walk(&tree, Some("a/b"), 2), ["a/b/c", "a/b/d"]);
    assert_eq!(walk(&tree, Some("a"), 1), ["a-b"]);
    assert_eq!(walk(&tree, Some("b"), 5), ["b/a"]);
    assert_eq!(walk(&tree, Some("b/a"), 5), Vec::<String>::new());
}

#[test]
fn last_naming_nothing_that_exists() {
    let tree = Tree::repositories(&["a", "a/b", "c/d", "e"]);
    assert_eq!(walk(&tree, Some("a/a"), 2), ["a/b", "c/d"]);
    assert_eq!(walk(&tree, Some("b"), 2), ["c/d", "e"]);
    assert_eq!(walk(&tree, Some("c"), 1), ["c/d"]);
    assert_eq!(walk(&tree, Some("zzz"), 5), Vec::<String>::new());
    // Not even a valid name.
    assert_eq!(walk(&tree, Some("B_"), 1), ["a"]);
    assert_eq!(walk(&tree, Some("a/b/"), 1), ["c/d"]);
}

#[test]
fn hidden_and_invalid_entries_are_no_names() {
    let mut tree = Tree::repositories(&["a", "b/c"]);
    // Directories without manifests, berth's and distribution's own, invalid names.
    for dir in [
        "_berth/_manifests",
        "_uploads/x/_manifests",
        "a/_layers/x",
        "Upper/_manifests",
        "bad_/_manifests",
        "d/Upper/_manifests",
        "empty/dir",
        "b/_manifests_not",
    ] {
        tree.add(dir);
    }
    assert_eq!(walk(&tree, None, 100), ["a", "b/c"]);
    assert_eq!(tree.all_sorted(), ["a", "b/c"]);
}

#[test]
fn an_empty_registry_lists_nothing() {
    assert!(walk(&Tree::default(), None, 10).is_empty());
    assert!(walk(&Tree::of(&["x/y"]), None, 10).is_empty());
    assert!(walk(&Tree::repositories(&["a"]), None, 0).is_empty());
}

/// xorshift64*: reproducible pseudo-random trees without a dependency.
struct Rng(u64);

impl Rng {
    fn below(&mut self, n: usize) -> usize {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        (self.0.wrapping_mul(0x2545_F491_4F6C_DD1D) >> 33) as usize % n
    }
}

/// A random tree of names built from few letters and separators, so that prefixes, `-`, `.`,
/// `_` and nesting collide often; some directories hold no manifests, some names are invalid.
fn random_tree(rng: &mut Rng) -> Tree {
    const PARTS: [&str; 12] = [
        "a", "b", "a-b", "a.b", "a_b", "a--b", "ab", "a-", "A", "a-a", "b.a", "a0",
    ];
    let mut tree = Tree::default();
    for _ in 0..rng.below(40) {
        let depth = 1 + rng.below(4);
        let name: Vec<&str> = (0..depth).map(|_| PARTS[rng.below(PARTS.len())]).collect();
        let name = name.join("/");
        if rng.below(4) == 0 {
            tree.add(&name);
        } else {
            tree.add(&format!("{name}/_manifests"));
        }
    }
    tree
}

#[test]
fn pages_of_random_trees_equal_the_sorted_list_cut() {
    let mut rng = Rng(0x9E37_79B9_7F4A_7C15);
    for round in 0..300 {
        let tree = random_tree(&mut rng);
        let all = tree.all_sorted();
        assert_eq!(walk(&tree, None, usize::MAX), all, "round {round}");
        for size in [1, 2, 3, 7] {
            assert_eq!(paged(&tree, size), all, "round {round}, pages of {size}");
        }
        // Every start: each name, and strings between and around them.
        let mut starts: Vec<String> = all.clone();
        starts.extend(all.iter().map(|n| format!("{n}-")));
        starts.extend(all.iter().map(|n| format!("{n}/")));
        starts.extend(all.iter().map(|n| n[..n.len() - 1].to_string()));
        starts.extend(["", "a/", "a-", "a/b/", "b", "zz"].map(String::from));
        for start in &starts {
            for limit in [1, 3] {
                assert_eq!(
                    walk(&tree, Some(start), limit),
                    tree.old_page(Some(start), limit),
                    "round {round}, after {start:?}, limit {limit}"
                );
            }
        }
    }
}

#[test]
fn walks_over_listings_kept_on_disk_equal_the_sorted_list_cut() {
    let mut rng = Rng(0xD1B5_4A32_D192_ED03);
    let mut tree = random_tree(&mut rng);
    // Two levels large enough to be kept and read in pages of LOCAL_PAGE: the top one, where
    // `a-…` sorts between `a` and `a/`, and the one below `a`.
    for i in 0..1100 {
        tree.add(&format!("a-{i:04}/_manifests"));
        tree.add(&format!("a/n{i:04}/_manifests"));
    }
    let tmp = tempfile::tempdir().unwrap();
    for d in &tree.dirs {
        std::fs::create_dir_all(tmp.path().join(d)).unwrap();
    }
    // Settled, as a registry's directories are between pushes: their listings are kept.
    let past = std::time::SystemTime::now() - std::time::Duration::from_secs(60);
    for d in tree.dirs.iter().map(|d| tmp.path().join(d)) {
        std::fs::File::open(&d).unwrap().set_modified(past).unwrap();
    }
    let top = tmp.path().to_path_buf();
    std::fs::File::open(&top)
        .unwrap()
        .set_modified(past)
        .unwrap();
    let cache = DirCache::default();
    let dirs = LocalDirs {
        base: top.clone(),
        cache: &cache,
    };
    let run = |after: Option<&str>, limit: usize| {
        repositories_after(&dirs, after, limit)
            .now_or_never()
            .unwrap()
            .unwrap()
    };
    let all = tree.all_sorted();
    assert_eq!(run(None, usize::MAX), all, "read afresh");
    assert!(cache.subdirs(&top, Order::Slash).unwrap().kept);
    assert!(cache.subdirs(&top.join("a"), Order::Slash).unwrap().kept);
    assert_eq!(run(None, usize::MAX), all, "from kept listings");
    let mut starts: Vec<String> = all.iter().step_by(37).cloned().collect();
    starts.extend(all.iter().step_by(91).map(|n| format!("{n}-")));
    starts.extend(all.iter().step_by(89).map(|n| format!("{n}/")));
    starts.extend(["", "a", "a-", "a/", "a-0999", "a/n0999", "b", "zz"].map(String::from));
    for start in &starts {
        for limit in [1, 100, 1500] {
            let old_page: Vec<String> = all
                .iter()
                .filter(|n| n.as_str() > start.as_str())
                .take(limit)
                .cloned()
                .collect();
            assert_eq!(
                run(Some(start), limit),
                old_page,
                "after {start:?}, limit {limit}"
            );
        }
    }
}

#[test]
fn the_page_of_one_directory_is_a_sorted_cut() {
    let names = |v: &[&str]| v.iter().map(|s| s.to_string()).collect::<Vec<_>>();
    let tags = names(&["b", "C", "a", "a-1", "a.1", "A", "_x", "z"]);
    assert_eq!(
        smallest_after(tags.clone(), None, None),
        names(&["A", "C", "_x", "a", "a-1", "a.1", "b", "z"])
    );
    assert_eq!(
        smallest_after(tags.clone(), None, Some(3)),
        names(&["A", "C", "_x"])
    );
    assert_eq!(
        smallest_after(tags.clone(), Some("a"), Some(2)),
        names(&["a-1", "a.1"])
    );
    assert_eq!(
        smallest_after(tags.clone(), Some("b"), Some(9)),
        names(&["z"])
    );
    assert!(smallest_after(tags.clone(), None, Some(0)).is_empty());
    assert!(smallest_after(tags, Some("zz"), Some(5)).is_empty());
}

#[test]
fn a_page_reads_about_a_page() {
    // Flat, and with a thousand names between `a` and `a/` in S3's order.
    let mut names: Vec<String> = (0..1000).map(|i| format!("r{i:04}")).collect();
    names.extend((0..1000).map(|i| format!("a-{i:04}")));
    names.push("a".into());
    names.push("a/b".into());
    let refs: Vec<&str> = names.iter().map(String::as_str).collect();
    let tree = Tree::repositories(&refs);
    let reads = |after: Option<&str>, limit: usize| {
        let paged = Paged {
            tree: &tree,
            reads: Default::default(),
        };
        let page = repositories_after(&paged, after, limit)
            .now_or_never()
            .unwrap()
            .unwrap();
        assert_eq!(page, tree.old_page(after, limit));
        paged.reads.get()
    };
    // A root page per two names and a read of each, the probe of `a`.
    assert!(reads(None, 5) <= 12, "{}", reads(None, 5));
    assert!(reads(Some("r0500"), 5) <= 12, "{}", reads(Some("r0500"), 5));
    assert!(
        reads(Some("a-0500"), 5) <= 12,
        "{}",
        reads(Some("a-0500"), 5)
    );
    assert!(
        reads(Some("a-0999"), 3) <= 12,
        "{}",
        reads(Some("a-0999"), 3)
    );
}

#[test]
fn entries_of_one_directory_page_in_name_order() {
    let mut rng = Rng(7);
    const PARTS: [&str; 8] = ["v1", "-", ".", "0", "_", "V", "rc", "1"];
    for round in 0..200 {
        let mut tree = Tree::default();
        let mut tags = BTreeSet::new();
        for _ in 0..rng.below(30) {
            let len = 1 + rng.below(4);
            let tag: String = (0..len).map(|_| PARTS[rng.below(PARTS.len())]).collect();
            tree.add(&format!("{tag}/current"));
            tags.insert(tag);
        }
        let tags: Vec<String> = tags.into_iter().collect();
        let mut starts = tags.clone();
        starts.extend(["", "v", "v1-", "v1.", "zz"].map(String::from));
        for start in starts.iter().map(|s| Some(s.as_str())).chain([None]) {
            for limit in [1, 2, 5, 100] {
                let paged = Paged {
                    tree: &tree,
                    reads: Default::default(),
                };
                let page = entries_after(&paged, start, limit)
                    .now_or_never()
                    .unwrap()
                    .unwrap();
                assert_eq!(
                    page,
                    smallest_after(tags.clone(), start, Some(limit)),
                    "round {round}, after {start:?}, limit {limit}"
                );
            }
        }
    }
}

/// Writes a tag link in each of `names` through `storage`.
async fn push_all(storage: &Storage, names: &[String]) {
    let digest: Digest = format!("sha256:{}", "0".repeat(64)).parse().unwrap();
    let tag: Tag = "latest".parse().unwrap();
    for name in names {
        let repo: RepoName = name.parse().unwrap();
        storage
            .write_link(&layout::tag_current_link(&repo, &tag), &digest)
            .await
            .unwrap();
    }
}

#[tokio::test]
async fn local_disk_and_object_stores_walk_alike() {
    let mut rng = Rng(42);
    let dir = tempfile::tempdir().unwrap();
    let local = Storage::filesystem(dir.path(), false).unwrap();
    let memory = Storage::in_memory();
    // Valid names only: the stores write nothing else.
    let mut expected = BTreeMap::new();
    for _ in 0..200 {
        let tree = random_tree(&mut rng);
        for name in tree.all_sorted() {
            expected.insert(name, ());
        }
    }
    let names: Vec<String> = expected.into_keys().collect();
    push_all(&local, &names).await;
    push_all(&memory, &names).await;
    // A hidden directory and a file where a repository could be.
    std::fs::create_dir_all(
        dir.path()
            .join("docker/registry/v2/repositories/_x/_manifests"),
    )
    .unwrap();
    std::fs::write(
        dir.path().join("docker/registry/v2/repositories/zfile"),
        b"",
    )
    .unwrap();
    for storage in [&local, &memory] {
        assert_eq!(
            storage.repositories_after(None, 100_000).await.unwrap(),
            names
        );
        let mut after: Option<String> = None;
        let mut all = Vec::new();
        loop {
            let page = storage
                .repositories_after(after.as_deref(), 7)
                .await
                .unwrap();
            all.extend(page.iter().cloned());
            if page.len() < 7 {
                break;
            }
            after = page.last().cloned();
        }
        assert_eq!(all, names, "{}", storage.describe());
        let repo: RepoName = names[0].parse().unwrap();
        let tags = storage
            .dirs_after(&layout::tags_dir(&repo), None, Some(5))
            .await
            .unwrap();
        assert_eq!(tags, ["latest"]);
    }
    let empty = Storage::in_memory();
    assert!(empty.repositories_after(None, 10).await.unwrap().is_empty());
    let empty_dir = tempfile::tempdir().unwrap();
    let empty = Storage::filesystem(empty_dir.path(), false).unwrap();
    assert!(empty.repositories_after(None, 10).await.unwrap().is_empty());
}

/// A tag directory that a crash left without its current link (the directories made, the link
/// never renamed into place) is not listed: every tag listed can be fetched.
#[tokio::test]
async fn a_tag_without_its_current_link_is_not_listed() {
    let dir = tempfile::tempdir().unwrap();
    let storage = Storage::filesystem(dir.path(), false).unwrap();
    let repo: RepoName = "team/app".parse().unwrap();
    let digest: Digest = format!("sha256:{}", "0".repeat(64)).parse().unwrap();
    for tag in ["a", "c", "e"] {
        let tag: Tag = tag.parse().unwrap();
        storage
            .write_link(&layout::tag_current_link(&repo, &tag), &digest)
            .await
            .unwrap();
    }
    let tags = dir
        .path()
        .join("docker/registry/v2/repositories/team/app/_manifests/tags");
    // Killed after making the directories: nothing in them, or only the temporary file.
    std::fs::create_dir_all(tags.join("b/current")).unwrap();
    std::fs::create_dir_all(tags.join("d/current")).unwrap();
    std::fs::write(tags.join("d/current/link#0123"), digest.to_string()).unwrap();
    // An index entry without a current link.
    std::fs::create_dir_all(tags.join("f/index/sha256/00")).unwrap();

    let page = |after: Option<&'static str>, limit| {
        let (storage, repo) = (&storage, &repo);
        async move { storage.tags_after(repo, after, limit).await.unwrap() }
    };
    assert_eq!(page(None, None).await, ["a", "c", "e"]);
    assert_eq!(page(Some("a"), Some(2)).await, ["c", "e"]);
    assert_eq!(page(Some("c"), Some(1)).await, ["e"]);
    assert!(page(Some("e"), Some(5)).await.is_empty());
    // The directories themselves are all there (distribution would list every one).
    let dirs = storage
        .dirs_after(&layout::tags_dir(&repo), None, None)
        .await
        .unwrap();
    assert_eq!(dirs, ["a", "b", "c", "d", "e", "f"]);
}
