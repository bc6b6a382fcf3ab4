//! Large listings against the real server on local disk: 20,000 repositories and 100,000 tags
//! written straight into distribution's layout (directories and hard links, no pushes), paged
//! through with the `Link` header; with `BERTH_TEST_STORAGE=s3`, the same (smaller) on s3s-fs,
//! counting the S3 requests of each page. Timings are not asserted here (see the benchmarks).

mod common;

use std::path::{Path, PathBuf};

use common::copy_limit::CopyLimitFront;
use common::s3::S3Server;
use common::{client, Store, TestRegistry};
use serde_json::Value;

const LINK: &str = "sha256:0000000000000000000000000000000000000000000000000000000000000000";

/// Link files, hard-linked to a few files holding a digest (a file has at most 65,000 links
/// on ext4).
struct Links {
    root: PathBuf,
    made: usize,
}

impl Links {
    fn new(root: &Path) -> Links {
        Links {
            root: root.to_path_buf(),
            made: 0,
        }
    }

    /// A tag `tag` of `name` in the layout below the root.
    fn tag(&mut self, name: &str, tag: &str) {
        let dir = repositories(&self.root)
            .join(name)
            .join("_manifests/tags")
            .join(tag)
            .join("current");
        std::fs::create_dir_all(&dir).unwrap();
        let source = self
            .root
            .join(format!("link-source-{}", self.made / 50_000));
        if self.made % 50_000 == 0 {
            std::fs::write(&source, LINK).unwrap();
        }
        std::fs::hard_link(&source, dir.join("link")).unwrap();
        self.made += 1;
    }
}

/// The names of the catalog tests: `flat` at the top; nested ones in groups whose names are
/// prefixes of others followed by `-` or `.` (which sort before `/`), some groups repositories
/// themselves; sorted.
fn catalog_names(flat: usize, nested: usize) -> Vec<String> {
    let mut names: Vec<String> = (0..flat).map(|i| format!("r{i}")).collect();
    for i in 0..nested {
        let group = i % 50;
        names.push(match i % 4 {
            0 => format!("g{group}/r{i}"),
            1 => format!("g{group}-x/r{i}"),
            2 => format!("g{group}.y/deep/r{i}"),
            _ => format!("g{group}/sub-{}/r{i}", i % 7),
        });
    }
    for group in (0..50).step_by(3) {
        names.push(format!("g{group}"));
    }
    names.sort();
    names
}

/// Tag names of every kind, sorted.
fn tag_names(count: usize) -> Vec<String> {
    let mut tags: Vec<String> = (0..count)
        .map(|i| match i % 5 {
            0 => format!("v{i}"),
            1 => format!("V{i}"),
            2 => format!("1.{i}-rc"),
            3 => format!("sha256-{i:064}"),
            _ => format!("_{i}"),
        })
        .collect();
    tags.sort();
    tags
}

fn repositories(root: &Path) -> PathBuf {
    root.join("docker/registry/v2/repositories")
}

/// Follows `path` and every page's `Link`, gathering `key` of each page.
fn page_through(reg: &TestRegistry, path: &str, key: &str, max_pages: usize) -> Vec<String> {
    let c = client();
    let mut names = Vec::new();
    let mut next = Some(path.to_string());
    let mut pages = 0;
    while let Some(path) = next.take() {
        pages += 1;
        assert!(pages <= max_pages, "more pages than {max_pages}");
        let r = c.get(reg.url(&path)).send().unwrap();
        assert_eq!(r.status(), 200, "{path}");
        next = r.headers().get("link").map(|link| {
            let link = link.to_str().unwrap();
            assert!(link.ends_with(">; rel=\"next\""), "{link}");
            link[1..link.find('>').unwrap()].to_string()
        });
        let body: Value = r.json().unwrap();
        let page: Vec<String> = body[key]
            .as_array()
            .unwrap()
            .iter()
            .map(|v| v.as_str().unwrap().to_string())
            .collect();
        assert!(
            !page.is_empty() || next.is_none(),
            "an empty page with a Link"
        );
        names.extend(page);
    }
    names
}

#[test]
fn twenty_thousand_repositories_page_in_order() {
    let dir = tempfile::tempdir().unwrap();
    let mut links = Links::new(dir.path());
    let names = catalog_names(10_000, 10_000);
    // Not repositories: no manifests, berth's own directories, a name that is invalid.
    std::fs::create_dir_all(repositories(dir.path()).join("empty/_layers")).unwrap();
    std::fs::create_dir_all(repositories(dir.path()).join("_berth/x/_manifests")).unwrap();
    std::fs::create_dir_all(repositories(dir.path()).join("Upper/_manifests")).unwrap();
    for name in &names {
        links.tag(name, "latest");
    }
    assert_eq!(names.len(), 20_017);
    let reg = TestRegistry::builder().filesystem(dir.path()).start();

    let listed = page_through(&reg, "/v2/_catalog?n=100", "repositories", 202);
    assert_eq!(listed.len(), names.len());
    assert!(listed == names, "every name exactly once, in lexical order");

    // Starting from names inside subtrees, and from names that do not exist.
    for start in [
        "g1",
        "g1-x/r1",
        "g1.y",
        "g10/sub-3",
        "g2/",
        "r5",
        "q",
        "zzz",
    ] {
        let expected: Vec<&String> = names.iter().filter(|n| n.as_str() > start).collect();
        let body: Value = client()
            .get(reg.url(&format!("/v2/_catalog?n=250&last={start}")))
            .send()
            .unwrap()
            .json()
            .unwrap();
        let page: Vec<&str> = body["repositories"]
            .as_array()
            .unwrap()
            .iter()
            .map(|v| v.as_str().unwrap())
            .collect();
        let want: Vec<&str> = expected.iter().take(250).map(|s| s.as_str()).collect();
        assert_eq!(page, want, "after {start}");
    }
}

#[test]
fn a_hundred_thousand_tags_page_in_order() {
    let dir = tempfile::tempdir().unwrap();
    let mut links = Links::new(dir.path());
    let tags = tag_names(100_000);
    for tag in &tags {
        links.tag("big/repo", tag);
    }
    let reg = TestRegistry::builder().filesystem(dir.path()).start();
    let c = client();

    // The first pages.
    let mut after: Option<String> = None;
    for page_number in 0..3 {
        let path = match &after {
            None => "/v2/big/repo/tags/list?n=1000".to_string(),
            Some(a) => format!("/v2/big/repo/tags/list?n=1000&last={a}"),
        };
        let r = c.get(reg.url(&path)).send().unwrap();
        let link = r.headers()["link"].to_str().unwrap().to_string();
        let body: Value = r.json().unwrap();
        let page: Vec<&str> = body["tags"]
            .as_array()
            .unwrap()
            .iter()
            .map(|v| v.as_str().unwrap())
            .collect();
        let start = page_number * 1000;
        assert_eq!(page, tags[start..start + 1000], "page {page_number}");
        assert_eq!(
            link,
            format!(
                "</v2/big/repo/tags/list?n=1000&last={}>; rel=\"next\"",
                tags[start + 999]
            )
        );
        after = Some(tags[start + 999].clone());
    }

    // The last pages, followed through their links to the end.
    let start = tags.len() - 2500;
    let listed = page_through(
        &reg,
        &format!("/v2/big/repo/tags/list?n=1000&last={}", tags[start - 1]),
        "tags",
        3,
    );
    assert!(listed == tags[start..], "the last 2,500 tags, in order");

    // All of them at once, and none.
    let body: Value = c
        .get(reg.url("/v2/big/repo/tags/list"))
        .send()
        .unwrap()
        .json()
        .unwrap();
    assert_eq!(body["tags"].as_array().unwrap().len(), tags.len());
    let r = c.get(reg.url("/v2/big/repo/tags/list?n=0")).send().unwrap();
    assert!(r.headers().get("link").is_none());
    assert_eq!(r.json::<Value>().unwrap()["tags"], serde_json::json!([]));
}

/// The names of `path`'s page and the path of the next page.
fn one_page(reg: &TestRegistry, path: &str, key: &str) -> (Vec<String>, Option<String>) {
    let r = client().get(reg.url(path)).send().unwrap();
    assert_eq!(r.status(), 200, "{path}");
    let next = r.headers().get("link").map(|link| {
        let link = link.to_str().unwrap();
        link[1..link.find('>').unwrap()].to_string()
    });
    let body: Value = r.json().unwrap();
    let names = body[key]
        .as_array()
        .unwrap()
        .iter()
        .map(|v| v.as_str().unwrap().to_string())
        .collect();
    (names, next)
}

/// Pages through `path` counting the S3 requests of each page: the names and the counts.
fn count_pages(
    reg: &TestRegistry,
    front: &CopyLimitFront,
    path: &str,
    key: &str,
) -> (Vec<String>, Vec<usize>) {
    let mut names = Vec::new();
    let mut counts = Vec::new();
    let mut next = Some(path.to_string());
    while let Some(path) = next.take() {
        front.take_operations();
        let (page, following) = one_page(reg, &path, key);
        // Upload purging lists multipart uploads in the background meanwhile: not the page's.
        let operations: Vec<&str> = front
            .take_operations()
            .into_iter()
            .filter(|o| *o != "ListMultipartUploads")
            .collect();
        assert!(
            operations.iter().all(|o| *o == "ListObjectsV2"),
            "{operations:?}"
        );
        counts.push(operations.len());
        names.extend(page);
        next = following;
    }
    (names, counts)
}

#[test]
fn listings_on_s3_page_in_order_and_cost_a_page() {
    if !common::s3::selected() {
        eprintln!("skipped: runs with BERTH_TEST_STORAGE=s3");
        return;
    }
    // s3s-fs serves `<dir>/<bucket>/<key>` as the object `key`: the layout is written there.
    let server = S3Server::shared();
    let bucket = server.bucket();
    let front = CopyLimitFront::start(server, u64::MAX);
    let root = server.dir.join(&bucket);
    let mut links = Links::new(&root);
    // More than a listing page (1,000) at the top and in the tags directory.
    let names = catalog_names(1_500, 1_000);
    for name in &names {
        links.tag(name, "latest");
    }
    let tags = tag_names(2_500);
    for tag in &tags {
        links.tag("big/repo", tag);
    }
    let mut all_names = names.clone();
    all_names.push("big/repo".into());
    all_names.sort();
    let reg = TestRegistry::builder()
        .store(Store::S3(front.env(server, &bucket)))
        .start();

    let (listed, counts) = count_pages(&reg, &front, "/v2/_catalog?n=100", "repositories");
    assert!(
        listed == all_names,
        "every name exactly once, in lexical order"
    );
    let max = counts.iter().max().unwrap();
    let mean = counts.iter().sum::<usize>() as f64 / counts.len() as f64;
    eprintln!(
        "catalog, n=100: {} pages, S3 requests per page: mean {mean:.1}, max {max}",
        counts.len()
    );
    // A read of each name's directory, a page of each level on the way, the lookups of names
    // that are prefixes of others: about a page, not the bucket.
    assert!(*max <= 160, "{counts:?}");

    let (listed, counts) = count_pages(&reg, &front, "/v2/big/repo/tags/list?n=500", "tags");
    assert!(listed == tags, "every tag exactly once, in order");
    eprintln!("tags, n=500: S3 requests per page {counts:?}");
    let (page, _) = one_page(&reg, "/v2/big/repo/tags/list?n=0", "tags");
    assert!(page.is_empty());
    let (page, next) = one_page(
        &reg,
        &format!("/v2/big/repo/tags/list?n=10&last={}", tags[2490]),
        "tags",
    );
    assert_eq!(page, tags[2491..]);
    assert_eq!(next, None);
}
