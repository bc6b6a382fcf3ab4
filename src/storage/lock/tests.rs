use object_store::ObjectStoreExt;

use super::lease::{try_take, Attempt};
use super::*;
use crate::storage::UploadRecord;

#[test]
fn file_locks_exclude_other_descriptions_until_closed() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("data");
    std::fs::write(&path, b"x").unwrap();
    let a = std::fs::OpenOptions::new().write(true).open(&path).unwrap();
    let b = std::fs::OpenOptions::new().write(true).open(&path).unwrap();
    assert!(try_lock_file(&a).unwrap());
    assert!(!try_lock_file(&b).unwrap(), "a second holder is refused");
    drop(a);
    assert!(
        try_lock_file(&b).unwrap(),
        "closing the file releases the lock"
    );
}

/// An upload `id` on `storage` with its first record.
async fn new_upload(storage: &Storage, id: &str) -> UploadRecord {
    let mut writer = storage.new_upload_writer(id).await.unwrap();
    let record = UploadRecord {
        repo: "r".into(),
        algorithm: "sha256".into(),
        started_at: String::new(),
        offset: 0,
        generation: 1,
        hash: None,
        parts: writer.parts_state(),
        completed: false,
    };
    writer.park();
    storage.save_upload(id, &record).await.unwrap();
    record
}

/// A second instance on the same store whose estimate of the store's clock is `ahead` later:
/// to it, every lease written now looks expired.
fn instance_later(storage: &Storage, ahead: std::time::Duration) -> Storage {
    let clock = StoreClock::default();
    clock.shift_for_tests(ahead);
    let mut later = storage.clone();
    later.coordination = Arc::new(Coordination::Leases(Arc::new(clock)));
    later
}

/// The upload's lease object as another instance reads it: its path, ETag and body.
async fn lease_as_stored(
    storage: &Storage,
    id: &str,
) -> (object_store::path::Path, String, lease::LeaseBody) {
    let path = layout::upload_lease(id);
    let read = storage.store.get(&path).await.unwrap();
    let etag = read.meta.e_tag.clone().unwrap();
    let body = serde_json::from_slice(&read.bytes().await.unwrap()).unwrap();
    (path, etag, body)
}

async fn attempt(storage: &Storage, clock_of: &Storage, id: &str) -> Option<Arc<lease::LeaseHold>> {
    let Coordination::Leases(clock) = &*clock_of.coordination else {
        panic!("leases expected")
    };
    match try_take(&storage.store, clock, &layout::upload_lease(id))
        .await
        .unwrap()
    {
        Attempt::Taken(hold) => Some(hold),
        Attempt::Held => None,
    }
}

#[tokio::test]
async fn leases_exclude_until_released() {
    let storage = Storage::in_memory();
    let record = new_upload(&storage, "u1").await;
    let (held, loaded) = storage.lock_upload("u1").await.unwrap().expect("exists");
    assert_eq!(loaded, record);
    assert_eq!(held.token(), 1);
    assert!(attempt(&storage, &storage, "u1").await.is_none(), "held");
    held.release().await;
    let next = attempt(&storage, &storage, "u1").await.expect("released");
    assert_eq!(next.token(), 2, "each taking bumps the fencing token");
    assert!(storage.lock_upload("nope").await.unwrap().is_none());
    assert!(
        !storage.exists(&layout::upload_lease("nope")).await.unwrap(),
        "no lease is left behind for an unknown upload"
    );
}

#[tokio::test]
async fn of_two_instances_breaking_an_expired_lease_one_wins() {
    let storage = Storage::in_memory();
    new_upload(&storage, "u1").await;
    let (_stalled, _) = storage.lock_upload("u1").await.unwrap().unwrap();
    // Both read the expired lease, then both try to take it over.
    let (path, etag, old) = lease_as_stored(&storage, "u1").await;
    let (a, b) = tokio::join!(
        lease::take_over(&storage.store, &path, &etag, &old),
        lease::take_over(&storage.store, &path, &etag, &old)
    );
    let won = [a.unwrap(), b.unwrap()]
        .iter()
        .filter(|t| matches!(t, Attempt::Taken(_)))
        .count();
    assert_eq!(won, 1, "exactly one breaker takes the lease");
    assert!(
        attempt(&storage, &storage, "u1").await.is_none(),
        "a fresh lease is not expired to an instance with the right clock"
    );
    // To an instance whose view of the store's clock is past the lease's life, it is.
    let later = instance_later(&storage, LEASE_TTL * 2);
    assert!(attempt(&later, &later, "u1").await.is_some());
}

#[tokio::test]
async fn a_stalled_holder_cannot_renew_release_or_record_after_a_takeover() {
    let storage = Storage::in_memory();
    new_upload(&storage, "u1").await;
    let (stalled, record) = storage.lock_upload("u1").await.unwrap().unwrap();
    let stalled_fence = stalled.fence().unwrap();
    let before = stalled_fence.next_part(0).await.unwrap();
    assert_eq!(before, 1);

    // Another instance takes it over once the lease looks expired to it.
    let later = instance_later(&storage, LEASE_TTL * 2);
    let (taker, taken_record) = later.lock_upload("u1").await.unwrap().unwrap();
    assert_eq!(taken_record, record);
    assert_eq!(taker.token(), 2);
    let taker_fence = taker.fence().unwrap();
    let first = taker_fence.next_part(0).await.unwrap();
    assert!(
        first > before,
        "the new holder never gets a number the stalled one was given ({first} vs {before})"
    );
    let mut newer = record.clone();
    newer.generation += 1;
    newer.offset = 42;
    later.save_upload_held(&taker, "u1", &newer).await.unwrap();

    // The stalled holder wakes up: every write it tries is refused.
    assert!(matches!(
        stalled.check().await,
        Err(StorageError::Fenced(_))
    ));
    assert!(matches!(
        stalled_fence.next_part(before).await,
        Err(StorageError::Fenced(_))
    ));
    let mut stale = record.clone();
    stale.generation += 1;
    stale.offset = 7;
    assert!(matches!(
        storage.save_upload_held(&stalled, "u1", &stale).await,
        Err(StorageError::Fenced(_))
    ));
    stalled.release().await;
    assert_eq!(storage.load_upload("u1").await.unwrap(), Some(newer));
    assert!(
        attempt(&storage, &storage, "u1").await.is_none(),
        "the stalled holder's release left the new holder's lease alone"
    );
    taker.check().await.expect("the new holder still holds");
    taker.release().await;
}

#[tokio::test]
async fn a_stale_record_write_is_refused_even_before_the_lease_is_checked() {
    // Holder A read the record; B took over and rewrote it; A's write, conditional on the
    // record it read, fails although A has not noticed losing the lease.
    let storage = Storage::in_memory();
    let record = new_upload(&storage, "u1").await;
    let (a, _) = storage.lock_upload("u1").await.unwrap().unwrap();
    let later = instance_later(&storage, LEASE_TTL * 2);
    let (b, _) = later.lock_upload("u1").await.unwrap().unwrap();
    let mut by_b = record.clone();
    by_b.generation = 2;
    later.save_upload_held(&b, "u1", &by_b).await.unwrap();
    let mut by_a = record;
    by_a.generation = 2;
    by_a.offset = 99;
    assert!(matches!(
        storage.save_upload_held(&a, "u1", &by_a).await,
        Err(StorageError::Fenced(_))
    ));
    assert_eq!(storage.load_upload("u1").await.unwrap(), Some(by_b));
}

#[tokio::test]
async fn part_numbers_continue_after_a_clean_release() {
    let storage = Storage::in_memory();
    new_upload(&storage, "u1").await;
    let (a, _) = storage.lock_upload("u1").await.unwrap().unwrap();
    assert_eq!(a.fence().unwrap().next_part(0).await.unwrap(), 1);
    // Nothing recorded: the next holder may use 1 again, since nothing of A is in flight.
    a.release().await;
    let (b, _) = storage.lock_upload("u1").await.unwrap().unwrap();
    assert_eq!(b.fence().unwrap().next_part(0).await.unwrap(), 1);
    assert_eq!(b.fence().unwrap().next_part(1).await.unwrap(), 2);
    b.release().await;
}

#[tokio::test]
async fn a_holder_that_lost_its_lease_cannot_record_before_the_new_holder_has() {
    // A read the record; B took over and read the same record, and streams without having
    // written yet: A's write, conditional on that record, would still match it.
    let storage = Storage::in_memory();
    let record = new_upload(&storage, "u1").await;
    let (a, _) = storage.lock_upload("u1").await.unwrap().unwrap();
    let later = instance_later(&storage, LEASE_TTL * 2);
    let (b, _) = later.lock_upload("u1").await.unwrap().unwrap();
    let mut by_a = record.clone();
    by_a.generation = 2;
    by_a.offset = 7;
    assert!(matches!(
        storage.save_upload_held(&a, "u1", &by_a).await,
        Err(StorageError::Fenced(_))
    ));
    let mut by_b = record;
    by_b.generation = 2;
    by_b.offset = 9;
    later.save_upload_held(&b, "u1", &by_b).await.unwrap();
    assert_eq!(storage.load_upload("u1").await.unwrap(), Some(by_b));
}

#[tokio::test]
async fn a_takeover_whose_answer_was_lost_is_not_held_twice() {
    // A's takeover reached the store but its answer was lost (the store restarted, a timeout):
    // object_store sends it again, conditional on the ETag it had read, while B breaks the same
    // expired lease. Neither the retry nor B may believe it holds: nobody does until the lease
    // A wrote expires (a lost answer costs the upload one lease life, never a second holder).
    let storage = Storage::in_memory();
    new_upload(&storage, "u1").await;
    let (_stalled, _) = storage.lock_upload("u1").await.unwrap().unwrap();
    let (path, etag, old) = lease_as_stored(&storage, "u1").await;
    let Attempt::Taken(_lost_answer) = lease::take_over(&storage.store, &path, &etag, &old)
        .await
        .unwrap()
    else {
        panic!("the first takeover is written")
    };
    let (retry, b) = tokio::join!(
        lease::take_over(&storage.store, &path, &etag, &old),
        lease::take_over(&storage.store, &path, &etag, &old)
    );
    assert!(matches!(retry.unwrap(), Attempt::Held), "the retry");
    assert!(matches!(b.unwrap(), Attempt::Held), "B");
    // The lease A wrote holds until it expires (then the race above decides, one winner).
    assert!(
        attempt(&storage, &storage, "u1").await.is_none(),
        "nobody takes the lease A left unrenewed before it expires"
    );
}
