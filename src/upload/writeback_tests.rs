//! A failed sync of an upload file ends the upload: its bytes are never recorded, continued or
//! published as if they were on disk. The syncs fail through `storage::faults` (EIO once, then
//! the kernel's own calls, which succeed: as on a disk whose error was reported once).

use std::time::Duration;

use bytes::Bytes;
use futures_util::Stream;

use super::tests::start;
use super::{HashingPool, UploadError, UploadManager};
use crate::oci::{Digest, RepoName};
use crate::storage::faults::{Faults, Op};
use crate::storage::{Storage, StorageError};

/// `mib` MiB of `byte`, as a request body in 1 MiB pieces.
fn body(mib: usize, byte: u8) -> impl Stream<Item = Result<Bytes, std::io::Error>> + Unpin {
    let piece = Bytes::from(vec![byte; 1024 * 1024]);
    futures_util::stream::iter((0..mib).map(move |_| Ok(piece.clone())))
}

fn is_write_back(e: &UploadError) -> bool {
    matches!(e, UploadError::Storage(StorageError::WriteBack(_)))
}

/// A registry on local disk with fsync on, its syncs failing where `faults` says.
fn setup() -> (tempfile::TempDir, Storage, Faults, UploadManager, RepoName) {
    let dir = tempfile::tempdir().unwrap();
    let faults = Faults::default();
    let storage = Storage::filesystem(dir.path(), true)
        .unwrap()
        .with_faults(faults.clone());
    let uploads = UploadManager::new(storage.clone(), HashingPool::start(1));
    (dir, storage, faults, uploads, "r".parse().unwrap())
}

/// Starts an upload whose first PATCH, of `mib` MiB of `byte`, fails on a write-back error and
/// ends it: it can no longer be resumed. Answers its id.
async fn failed_first_append(
    uploads: &UploadManager,
    repo: &RepoName,
    mib: usize,
    byte: u8,
) -> String {
    let id = start(uploads, repo).await;
    let err = uploads
        .append(repo, &id, Some(0), None, body(mib, byte))
        .await
        .unwrap_err();
    assert!(is_write_back(&err), "{err}");
    assert!(matches!(
        uploads.status(repo, &id).await,
        Err(UploadError::Unknown(_))
    ));
    id
}

/// Completing the ended upload `id` as `digest` is refused as unknown: nothing is published and
/// none of its bytes are left on disk.
async fn completing_is_refused(
    dir: &tempfile::TempDir,
    storage: &Storage,
    uploads: &UploadManager,
    repo: &RepoName,
    id: &str,
    digest: &Digest,
) {
    let err = uploads
        .complete(repo, id, None, None, body(0, 0), digest)
        .await
        .unwrap_err();
    assert!(matches!(err, UploadError::Unknown(_)), "{err}");
    assert_eq!(storage.blob_size(digest).await.unwrap(), None);
    assert_eq!(upload_dirs(dir), 0, "its bytes are removed");
}

fn upload_dirs(dir: &tempfile::TempDir) -> usize {
    std::fs::read_dir(dir.path().join("docker/registry/v2/_berth/uploads"))
        .map(|d| d.count())
        .unwrap_or(0)
}

#[actix_rt::test]
async fn a_failed_wait_for_write_back_ends_the_upload() {
    let (dir, storage, faults, uploads, repo) = setup();
    // The first wait (for the first 16 MiB, once 32 MiB are written) reports EIO.
    faults.fail(Op::WaitWriteBack, "", 1);
    let id = failed_first_append(&uploads, &repo, 40, 1).await;
    // The upload is gone: it can neither be resumed (above) nor completed from its old record.
    let digest = Digest::sha256(&vec![1u8; 40 * 1024 * 1024]);
    completing_is_refused(&dir, &storage, &uploads, &repo, &id, &digest).await;
    // A fresh upload of the same bytes works (the disk "recovered").
    let id = start(&uploads, &repo).await;
    let committed = uploads
        .complete(&repo, &id, None, None, body(40, 1), &digest)
        .await
        .unwrap();
    assert_eq!(committed.size, 40 * 1024 * 1024);
}

#[actix_rt::test]
async fn a_failed_start_of_write_back_ends_the_upload() {
    let (_dir, _storage, faults, uploads, repo) = setup();
    faults.fail(Op::StartWriteBack, "", 1);
    failed_first_append(&uploads, &repo, 20, 2).await;
}

#[actix_rt::test]
async fn a_failed_fsync_is_not_retried_into_a_published_blob() {
    let (dir, storage, faults, uploads, repo) = setup();
    let id = start(&uploads, &repo).await;
    uploads
        .append(&repo, &id, Some(0), None, body(3, 3))
        .await
        .unwrap();
    let digest = Digest::sha256(&vec![3u8; 3 * 1024 * 1024]);
    faults.fail(Op::Fsync, "", 1);
    let err = uploads
        .complete(&repo, &id, None, None, body(0, 0), &digest)
        .await
        .unwrap_err();
    assert!(is_write_back(&err), "{err}");
    // The client's retry of the PUT: the next fsync would succeed without the data, so the
    // upload must be gone rather than published.
    completing_is_refused(&dir, &storage, &uploads, &repo, &id, &digest).await;
    tokio::time::sleep(Duration::from_millis(10)).await;
    assert_eq!(uploads.sessions_in_memory(), 0);
}
