//! Where everything lives: CNCF distribution's layout for committed content, berth's own prefix
//! for uploads in progress.
//!
//! ```text
//! docker/registry/v2/blobs/<alg>/<hex[0..2]>/<hex>/data
//! docker/registry/v2/repositories/<name>/_layers/<alg>/<hex>/link
//! docker/registry/v2/repositories/<name>/_manifests/revisions/<alg>/<hex>/link
//! docker/registry/v2/repositories/<name>/_manifests/tags/<tag>/current/link
//! docker/registry/v2/repositories/<name>/_manifests/tags/<tag>/index/<alg>/<hex>/link
//! docker/registry/v2/repositories/<name>/_referrers/<alg>/<subject hex>/<alg>/<hex>/link   (berth)
//! docker/registry/v2/_berth/uploads/<id>/data                                              (berth)
//! docker/registry/v2/_berth/gc/<run>/<alg>/<hex>             (berth: garbage being collected)
//! docker/registry/v2/_berth/gc/<run>/journal/<entry>          (berth: links that run removed)
//! docker/registry/v2/_berth/locks/gc                          (berth: the collector's lock)
//! ```
//! Directories starting with `_` are skipped by distribution's catalog walk, so berth's extra
//! entries do not disturb `registry:2` serving the same storage.

use object_store::path::Path;

use crate::oci::{Digest, RepoName, Tag};

const ROOT: &str = "docker/registry/v2";

fn path(s: String) -> Path {
    Path::from(s)
}

fn digest_dir(d: &Digest) -> String {
    format!("{}/{}", d.algorithm().as_str(), d.hex())
}

pub fn blob_data(d: &Digest) -> Path {
    path(format!(
        "{ROOT}/blobs/{}/{}/{}/data",
        d.algorithm().as_str(),
        &d.hex()[..2],
        d.hex()
    ))
}

/// Whether `path` is part of distribution's layout (blobs and repositories), rather than
/// berth's own state under `_berth/`.
pub fn is_content(path: &Path) -> bool {
    let p = path.as_ref();
    p.strip_prefix(ROOT)
        .is_some_and(|rest| rest.starts_with("/blobs/") || rest.starts_with("/repositories/"))
}

/// Where all blob data lives.
pub fn blobs() -> Path {
    path(format!("{ROOT}/blobs"))
}

/// Where a garbage collection run keeps the blobs it is about to delete until it has checked
/// that nothing started using them meanwhile (berth).
pub fn gc_quarantine() -> Path {
    path(format!("{ROOT}/_berth/gc"))
}

pub fn gc_quarantined(run: &str, d: &Digest) -> Path {
    path(format!("{ROOT}/_berth/gc/{run}/{}", digest_dir(d)))
}

/// Everything one collection run keeps aside: its blobs and its journal.
pub fn gc_run(run: &str) -> Path {
    path(format!("{ROOT}/_berth/gc/{run}"))
}

/// A journal entry of a run: link files it removed, written before it removes them, so that a
/// run killed half-way can be undone (see `gc::journal`).
pub fn gc_journal_entry(run: &str, key: &str) -> Path {
    path(format!("{ROOT}/_berth/gc/{run}/journal/{key}"))
}

/// The lock that lets one garbage collection run at a time (see `storage::gc_lock`).
pub fn gc_lock() -> Path {
    path(format!("{ROOT}/_berth/locks/gc"))
}

pub fn repositories() -> Path {
    path(format!("{ROOT}/repositories"))
}

pub fn repository(repo: &RepoName) -> Path {
    path(format!("{ROOT}/repositories/{repo}"))
}

pub fn layer_link(repo: &RepoName, d: &Digest) -> Path {
    path(format!(
        "{ROOT}/repositories/{repo}/_layers/{}/link",
        digest_dir(d)
    ))
}

pub fn manifests_dir(repo: &RepoName) -> Path {
    path(format!("{ROOT}/repositories/{repo}/_manifests"))
}

pub fn revision_link(repo: &RepoName, d: &Digest) -> Path {
    path(format!(
        "{ROOT}/repositories/{repo}/_manifests/revisions/{}/link",
        digest_dir(d)
    ))
}

pub fn tags_dir(repo: &RepoName) -> Path {
    path(format!("{ROOT}/repositories/{repo}/_manifests/tags"))
}

pub fn tag_dir(repo: &RepoName, tag: &Tag) -> Path {
    path(format!("{ROOT}/repositories/{repo}/_manifests/tags/{tag}"))
}

pub fn tag_current_link(repo: &RepoName, tag: &Tag) -> Path {
    path(format!(
        "{ROOT}/repositories/{repo}/_manifests/tags/{tag}/current/link"
    ))
}

pub fn tag_index_link(repo: &RepoName, tag: &Tag, d: &Digest) -> Path {
    path(format!(
        "{ROOT}/repositories/{repo}/_manifests/tags/{tag}/index/{}/link",
        digest_dir(d)
    ))
}

pub fn referrers_dir(repo: &RepoName, subject: &Digest) -> Path {
    path(format!(
        "{ROOT}/repositories/{repo}/_referrers/{}",
        digest_dir(subject)
    ))
}

pub fn referrer_link(repo: &RepoName, subject: &Digest, d: &Digest) -> Path {
    path(format!(
        "{ROOT}/repositories/{repo}/_referrers/{}/{}/link",
        digest_dir(subject),
        digest_dir(d)
    ))
}

pub fn upload_dir(id: &str) -> Path {
    path(format!("{ROOT}/_berth/uploads/{id}"))
}

pub fn upload_data(id: &str) -> Path {
    path(format!("{ROOT}/_berth/uploads/{id}/data"))
}

/// Where everything about uploads in progress lives.
pub fn uploads_root() -> Path {
    path(format!("{ROOT}/_berth/uploads"))
}

/// The upload's durable record (offset, hash state, parts): see `storage::uploads`.
pub fn upload_record(id: &str) -> Path {
    path(format!("{ROOT}/_berth/uploads/{id}/state"))
}

/// The record written by the holder of fencing token `token` (Redis-locked uploads on stores
/// without conditional writes: readers take the highest token; see `storage::lock::redis`).
pub fn upload_record_fenced(id: &str, token: u64) -> Path {
    path(format!("{ROOT}/_berth/uploads/{id}/state.{token:020}"))
}

/// The token of a fenced record's file name (`state.<token>`; the plain `state` counts as 0).
pub fn fenced_record_token(name: &str) -> Option<u64> {
    match name {
        "state" => Some(0),
        _ => name.strip_prefix("state.")?.parse().ok(),
    }
}

/// On object stores: who may write the upload now (see `storage::lock`).
pub fn upload_lease(id: &str) -> Path {
    path(format!("{ROOT}/_berth/uploads/{id}/lease"))
}

/// On object stores: bytes received but not yet a multipart part, starting at `offset`, staged
/// by the lock holder with fencing token `token` (0: none; a stale holder's piece for the same
/// offset lands under another name).
pub fn upload_staged(id: &str, offset: u64, token: u64) -> Path {
    match token {
        0 => path(format!("{ROOT}/_berth/uploads/{id}/staged/{offset:020}")),
        _ => path(format!(
            "{ROOT}/_berth/uploads/{id}/staged/{offset:020}.{token}"
        )),
    }
}

/// The upload directory holding an upload's `data` object.
pub fn upload_dir_of(data: &Path) -> Path {
    let parts: Vec<_> = data.parts().collect();
    Path::from_iter(parts[..parts.len().saturating_sub(1)].iter().cloned())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn matches_distribution_layout() {
        let d = Digest::sha256(b"");
        let repo: RepoName = "library/alpine".parse().unwrap();
        assert_eq!(
            blob_data(&d).as_ref(),
            "docker/registry/v2/blobs/sha256/e3/e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855/data"
        );
        assert_eq!(
            layer_link(&repo, &d).as_ref(),
            "docker/registry/v2/repositories/library/alpine/_layers/sha256/e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855/link"
        );
        assert_eq!(
            tag_current_link(&repo, &"latest".parse().unwrap()).as_ref(),
            "docker/registry/v2/repositories/library/alpine/_manifests/tags/latest/current/link"
        );
        assert_eq!(
            upload_dir_of(&upload_data("abc")).as_ref(),
            "docker/registry/v2/_berth/uploads/abc"
        );
    }
}
