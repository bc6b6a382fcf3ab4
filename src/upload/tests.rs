//! The upload manager against in-memory and local-disk storage, without a server.

use super::ingest::{batch_size, BATCH_SIZE, MIN_BATCH_SIZE};
use super::*;

pub(super) fn body(
    parts: &[&'static [u8]],
) -> impl Stream<Item = Result<Bytes, std::io::Error>> + Unpin {
    futures_util::stream::iter(
        parts
            .iter()
            .map(|p| Ok(Bytes::from_static(p)))
            .collect::<Vec<_>>(),
    )
}

pub(super) fn manager(storage: &Storage) -> UploadManager {
    UploadManager::new(storage.clone(), HashingPool::start(1))
}

/// Starts a SHA-256 upload to `repo`; answers its id.
pub(super) async fn start(uploads: &UploadManager, repo: &RepoName) -> String {
    uploads
        .start(repo.clone(), Algorithm::Sha256)
        .await
        .unwrap()
}

/// A second manager over the same storage stands for a restarted process or another
/// instance: it continues the upload from its record, hash state included.
async fn continues_elsewhere(storage: Storage) {
    let repo: RepoName = "r".parse().unwrap();
    let first = manager(&storage);
    let id = first.start(repo.clone(), Algorithm::Sha256).await.unwrap();
    let chunk = |i: u8| -> &'static [u8] { Box::leak(vec![i; 700_000].into_boxed_slice()) };
    let mut all = Vec::new();
    let mut offset = 0;
    for i in 0..12u8 {
        let uploads = if i % 3 == 0 {
            first.clone()
        } else {
            manager(&storage)
        };
        offset = uploads
            .append(&repo, &id, Some(offset), None, body(&[chunk(i)]))
            .await
            .unwrap();
        all.extend_from_slice(chunk(i));
        assert_eq!(manager(&storage).status(&repo, &id).await.unwrap(), offset);
    }
    // The first manager's cache is stale: it must notice and rebuild.
    let err = first
        .append(&repo, &id, Some(0), None, body(&[b"x"]))
        .await
        .unwrap_err();
    assert!(matches!(err, UploadError::OutOfOrder { offset: o } if o == offset));
    let digest = Digest::sha256(&all);
    let committed = first
        .complete(&repo, &id, Some(offset), None, body(&[]), &digest)
        .await
        .unwrap();
    assert_eq!(committed.size, all.len() as u64);
    assert_eq!(
        storage.blob_size(&digest).await.unwrap(),
        Some(all.len() as u64)
    );
    assert!(matches!(
        first.status(&repo, &id).await,
        Err(UploadError::Unknown(_))
    ));
}

#[actix_rt::test]
async fn uploads_continue_in_another_process_on_disk() {
    let dir = tempfile::tempdir().unwrap();
    continues_elsewhere(Storage::filesystem(dir.path(), true).unwrap()).await;
}

#[actix_rt::test]
async fn uploads_continue_in_another_process_on_object_stores() {
    continues_elsewhere(Storage::in_memory()).await;
}

#[actix_rt::test]
async fn a_record_that_outlived_its_data_is_refused_not_published() {
    // A power loss can keep the record and lose the unsynced tail of the data.
    let dir = tempfile::tempdir().unwrap();
    let storage = Storage::filesystem(dir.path(), true).unwrap();
    let repo: RepoName = "r".parse().unwrap();
    let first = manager(&storage);
    let id = first.start(repo.clone(), Algorithm::Sha256).await.unwrap();
    let data = vec![7u8; 300_000];
    let bytes: &'static [u8] = Box::leak(data.clone().into_boxed_slice());
    first
        .append(&repo, &id, None, None, body(&[bytes]))
        .await
        .unwrap();
    let file = dir
        .path()
        .join("docker/registry/v2/_berth/uploads")
        .join(&id)
        .join("data");
    std::fs::OpenOptions::new()
        .write(true)
        .open(&file)
        .unwrap()
        .set_len(200_000)
        .unwrap();
    let digest = Digest::sha256(&data);
    // Whether the restarted process re-reads the tail or trusts the hash state, it refuses.
    let restarted = manager(&storage);
    assert!(restarted
        .complete(&repo, &id, None, None, body(&[]), &digest)
        .await
        .is_err());
    assert_eq!(storage.blob_size(&digest).await.unwrap(), None);
    assert!(first
        .complete(&repo, &id, None, None, body(&[]), &digest)
        .await
        .is_err());
    assert_eq!(storage.blob_size(&digest).await.unwrap(), None);
}

#[actix_rt::test]
async fn a_record_whose_numbers_wrap_is_refused() {
    // Staged pieces of 2^64 + 1 bytes: summed unchecked, they wrap to the recorded offset.
    let storage = Storage::in_memory();
    let repo: RepoName = "a".parse().unwrap();
    let first = manager(&storage);
    let id = first.start(repo.clone(), Algorithm::Sha256).await.unwrap();
    first
        .append(&repo, &id, Some(0), None, body(&[b"a"]))
        .await
        .unwrap();
    let mut record = storage.load_upload(&id).await.unwrap().unwrap();
    assert_eq!(
        (record.offset, record.hash.as_ref().unwrap().offset),
        (1, 1)
    );
    let parts = record.parts.as_mut().unwrap();
    let staged: Vec<(u64, u64)> = parts.staged.iter().map(|p| (p.offset, p.len)).collect();
    assert_eq!(staged, vec![(0, 1)]);
    let piece = |offset, len| crate::storage::Staged {
        offset,
        len,
        token: 0,
    };
    parts.staged = vec![piece(0, u64::MAX), piece(u64::MAX, 2)];
    record.generation += 1;
    storage.save_upload(&id, &record).await.unwrap();
    // Another process rebuilds the upload from this record.
    let err = manager(&storage)
        .append(&repo, &id, Some(1), None, body(&[b"x"]))
        .await
        .unwrap_err();
    assert!(
        matches!(err, UploadError::Storage(StorageError::Corrupt { .. })),
        "{err}"
    );
}

#[test]
fn batches_shrink_when_many_bodies_stream() {
    assert_eq!(batch_size(0), BATCH_SIZE);
    assert_eq!(batch_size(16), BATCH_SIZE);
    assert_eq!(batch_size(32), 512 * 1024);
    assert_eq!(batch_size(1000), MIN_BATCH_SIZE);
}

#[actix_rt::test]
async fn tiny_pieces_are_coalesced_and_lengths_enforced() {
    let storage = Storage::in_memory();
    let uploads = manager(&storage);
    let repo: RepoName = "a".parse().unwrap();
    let id = start(&uploads, &repo).await;
    let pieces: Vec<&'static [u8]> = vec![b"x"; 5000];
    let offset = uploads
        .append(&repo, &id, None, Some(5000), body(&pieces))
        .await
        .unwrap();
    assert_eq!(offset, 5000);
    // Fewer bytes than announced: refused, what arrived is kept.
    let err = uploads
        .append(&repo, &id, Some(5000), Some(10), body(&[b"abc"]))
        .await
        .unwrap_err();
    assert!(matches!(
        err,
        UploadError::BodyLength {
            received: 3,
            expected: 10
        }
    ));
    assert_eq!(uploads.status(&repo, &id).await.unwrap(), 5003);
    // More bytes than announced: refused before the excess is written.
    let err = uploads
        .append(&repo, &id, Some(5003), Some(2), body(&[b"ab", b"cd"]))
        .await
        .unwrap_err();
    assert!(matches!(err, UploadError::BodyLength { .. }));
    assert_eq!(uploads.status(&repo, &id).await.unwrap(), 5005);
    let expected = Digest::sha256(&[vec![b'x'; 5000], b"abcab".to_vec()].concat());
    let committed = uploads
        .complete(&repo, &id, None, None, body(&[]), &expected)
        .await
        .unwrap();
    assert_eq!(committed.size, 5005);
}
