//! The upload lock on an object store that honours conditional writes (AWS S3, s3s-fs, the
//! in-memory store): a `lease` object beside the upload, every change of it conditional.
//!
//! - **Taking** it: created with `If-None-Match: *`; a lease that is released or expired is taken
//!   over with `If-Match` on the ETag just read, so of two instances breaking one lease at once
//!   exactly one wins (a read-then-delete would let both).
//! - **Expiry** is judged on the store's clock: the lease's `Last-Modified` against the store's
//!   time as this process estimates it ([`StoreClock`], measured against an object it wrote),
//!   never against another machine's wall clock written into the lease.
//! - **Renewal** and **release** are `If-Match` on the ETag of the holder's last write: a holder
//!   that stalled past its lease cannot revive it, nor delete the lease of the instance that took
//!   over. A failed renewal marks the hold lost, and every fenced write after it fails.
//! - **Fencing**: each taking bumps the lease's `fence`, the token that names the holder's staged
//!   pieces; part numbers are handed out through the lease (`parts`: the highest number handed
//!   out), so a stalled holder's late part lands under a number nobody else uses or records. The
//!   record itself is written with `If-Match` on the ETag read under the lease (see
//!   `Storage::save_upload_held`).

use std::sync::atomic::{AtomicI64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use object_store::path::Path;
use object_store::{ObjectStore, ObjectStoreExt, PutMode, PutOptions, PutPayload, UpdateVersion};
use serde::{Deserialize, Serialize};

use super::{owner, Fence, Result, StorageError};

/// How long a lease lives without renewal.
pub const LEASE_TTL: Duration = Duration::from_secs(15);
/// How often a held lease is renewed.
const LEASE_RENEW: Duration = Duration::from_secs(5);
/// Part numbers reserved per write of the lease: fewer writes, at the cost of a gap of at most
/// this many numbers after a holder died.
const PART_RESERVE: u32 = 8;

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
pub(super) struct LeaseBody {
    /// Which process holds it (for people reading the bucket; decisions use the ETag).
    owner: String,
    /// Bumped at every taking: the holder's fencing token.
    fence: u64,
    /// The highest part number handed out to a holder so far; the next holder continues above
    /// it (unless the lease was released, then above what was recorded).
    #[serde(default)]
    parts: u32,
    /// Given back: anyone may take it at once.
    #[serde(default)]
    released: bool,
}

impl LeaseBody {
    fn payload(&self) -> PutPayload {
        PutPayload::from(serde_json::to_vec(self).expect("a lease serializes"))
    }
}

/// The store's time as seen from this process: the offset of the store's clock from ours,
/// measured by writing an object and reading its `Last-Modified`.
#[derive(Debug, Default)]
pub struct StoreClock {
    /// Store time minus local time, in milliseconds.
    offset_ms: AtomicI64,
}

impl StoreClock {
    /// The store's time now, estimated.
    pub fn now(&self) -> chrono::DateTime<chrono::Utc> {
        chrono::Utc::now() + chrono::Duration::milliseconds(self.offset_ms.load(Ordering::Relaxed))
    }

    /// Measures the offset with `probe` (an object this process may write and remove).
    pub async fn measure(&self, store: &dyn ObjectStore, probe: &Path) -> Result<()> {
        let before = chrono::Utc::now();
        store.put(probe, PutPayload::from_static(b"clock")).await?;
        let after = chrono::Utc::now();
        let stamped = store.head(probe).await?.last_modified;
        let _ = store.delete(probe).await;
        // Last-Modified is whole seconds on S3: the write happened in [stamped, stamped + 1 s).
        let local_mid = before + (after - before) / 2;
        let store_mid = stamped + chrono::Duration::milliseconds(500);
        let offset = (store_mid - local_mid).num_milliseconds();
        self.offset_ms.store(offset, Ordering::Relaxed);
        if offset.abs() > 2_000 {
            log::warn!(
                "the storage's clock is {:.1} s {} this machine's; upload leases use the \
                 storage's",
                offset.abs() as f64 / 1000.0,
                if offset > 0 { "ahead of" } else { "behind" }
            );
        }
        Ok(())
    }

    /// Moves this estimate of the store's clock `ahead` (tests: another instance whose view
    /// makes current leases look expired).
    #[cfg(test)]
    pub fn shift_for_tests(&self, ahead: Duration) {
        self.offset_ms
            .fetch_add(ahead.as_millis() as i64, Ordering::Relaxed);
    }

    /// Whether a lease last written at `stamped` has expired.
    fn expired(&self, stamped: chrono::DateTime<chrono::Utc>) -> bool {
        // A second for Last-Modified's resolution.
        let ttl =
            chrono::Duration::from_std(LEASE_TTL).expect("small") + chrono::Duration::seconds(1);
        stamped + ttl < self.now()
    }
}

/// A taken lease, shared by the guard, its renewal task and the upload's writer.
pub(super) struct LeaseHold {
    store: Arc<dyn ObjectStore>,
    path: Path,
    fence: u64,
    state: tokio::sync::Mutex<HoldState>,
}

struct HoldState {
    etag: String,
    body: LeaseBody,
    /// Why the lease is no longer ours, once it is not.
    lost: Option<String>,
    /// When a renewal last succeeded.
    renewed: tokio::time::Instant,
    /// The highest part number this holder handed out (or may not reuse).
    given: u32,
}

/// What one attempt to take the lease found.
pub(super) enum Attempt {
    Taken(Arc<LeaseHold>),
    /// Held by someone else (not expired).
    Held,
}

/// Tries once to take the lease at `path`: creates it, or takes over a released or expired
/// one.
pub(super) async fn try_take(
    store: &Arc<dyn ObjectStore>,
    clock: &StoreClock,
    path: &Path,
) -> Result<Attempt> {
    let fresh = LeaseBody {
        owner: owner().to_string(),
        fence: 1,
        parts: 0,
        released: false,
    };
    let created = store
        .put_opts(
            path,
            fresh.payload(),
            PutOptions {
                mode: PutMode::Create,
                ..Default::default()
            },
        )
        .await;
    match created {
        Ok(put) => return Ok(Attempt::Taken(hold(store, path, put.e_tag, fresh))),
        Err(object_store::Error::AlreadyExists { .. }) => {}
        Err(e) => return Err(e.into()),
    }
    let current = match store.get(path).await {
        Ok(r) => r,
        // Removed meanwhile (the upload finished, or was cancelled): the caller looks again.
        Err(object_store::Error::NotFound { .. }) => return Ok(Attempt::Held),
        Err(e) => return Err(e.into()),
    };
    let (etag, stamped) = (current.meta.e_tag.clone(), current.meta.last_modified);
    let bytes = current.bytes().await?;
    let old: Option<LeaseBody> = serde_json::from_slice(&bytes).ok();
    let free = old.as_ref().is_none_or(|l| l.released);
    if !free && !clock.expired(stamped) {
        return Ok(Attempt::Held);
    }
    let Some(etag) = etag else {
        return Err(StorageError::Config(
            "the store answers no ETag: upload leases cannot be taken over".into(),
        ));
    };
    if !free {
        log::info!("taking over the expired lease {path}");
    }
    let old = old.unwrap_or(LeaseBody {
        owner: String::new(),
        fence: 0,
        parts: 0,
        released: true,
    });
    take_over(store, path, &etag, &old).await
}

/// Takes over the lease whose content `old` was read with `etag`: written only if it is still
/// that one, so of several instances doing this at once exactly one wins.
pub(super) async fn take_over(
    store: &Arc<dyn ObjectStore>,
    path: &Path,
    etag: &str,
    old: &LeaseBody,
) -> Result<Attempt> {
    let next = LeaseBody {
        owner: owner().to_string(),
        fence: old.fence + 1,
        parts: old.parts,
        released: false,
    };
    match conditional_put(store, path, etag, &next).await {
        Ok(etag) => Ok(Attempt::Taken(hold(store, path, Some(etag), next))),
        // Another instance took it first.
        Err(object_store::Error::Precondition { .. }) => Ok(Attempt::Held),
        Err(e) => Err(e.into()),
    }
}

fn hold(
    store: &Arc<dyn ObjectStore>,
    path: &Path,
    etag: Option<String>,
    body: LeaseBody,
) -> Arc<LeaseHold> {
    Arc::new(LeaseHold {
        store: store.clone(),
        path: path.clone(),
        fence: body.fence,
        state: tokio::sync::Mutex::new(HoldState {
            // A store answering no ETag fails the first renewal, which then needs one.
            etag: etag.unwrap_or_default(),
            given: body.parts,
            body,
            lost: None,
            renewed: tokio::time::Instant::now(),
        }),
    })
}

async fn conditional_put(
    store: &Arc<dyn ObjectStore>,
    path: &Path,
    etag: &str,
    body: &LeaseBody,
) -> object_store::Result<String> {
    let put = store
        .put_opts(
            path,
            body.payload(),
            PutOptions {
                mode: PutMode::Update(UpdateVersion {
                    e_tag: Some(etag.to_string()),
                    version: None,
                }),
                ..Default::default()
            },
        )
        .await?;
    Ok(put.e_tag.unwrap_or_default())
}

impl LeaseHold {
    /// Rewrites the lease (`If-Match` on our last write) after `change`; the hold is lost when
    /// the store refuses.
    async fn update(&self, change: impl FnOnce(&mut LeaseBody)) -> Result<()> {
        let mut state = self.state.lock().await;
        if let Some(why) = &state.lost {
            return Err(StorageError::Fenced(why.clone()));
        }
        let mut body = state.body.clone();
        change(&mut body);
        match conditional_put(&self.store, &self.path, &state.etag, &body).await {
            Ok(etag) => {
                state.etag = etag;
                state.body = body;
                state.renewed = tokio::time::Instant::now();
                Ok(())
            }
            Err(
                object_store::Error::Precondition { .. } | object_store::Error::NotFound { .. },
            ) => {
                let why = format!("the lease {} was taken over", self.path);
                state.lost = Some(why.clone());
                Err(StorageError::Fenced(why))
            }
            Err(e) => {
                // The store failing for a while: past the lease's life, someone may have taken
                // it over, so nothing more is written under it.
                if state.renewed.elapsed() >= LEASE_TTL - LEASE_RENEW {
                    state.lost = Some(format!("the lease {} could not be renewed: {e}", self.path));
                }
                Err(e.into())
            }
        }
    }

    /// Keeps the lease alive while the request runs; a renewal refused ends the hold.
    pub(super) async fn renew_while_held(self: Arc<Self>) {
        loop {
            tokio::time::sleep(LEASE_RENEW).await;
            if let Err(e) = self.update(|_| {}).await {
                log::warn!("cannot renew the upload lease {}: {e}", self.path);
                if matches!(e, StorageError::Fenced(_)) {
                    return;
                }
            }
        }
    }

    /// Removes the lease (taken for an upload that does not exist).
    pub(super) async fn remove(&self) {
        match self.store.delete(&self.path).await {
            Ok(()) | Err(object_store::Error::NotFound { .. }) => {}
            Err(e) => log::warn!("cannot remove the upload lease {}: {e}", self.path),
        }
    }

    /// Gives the lease back (`If-Match`): the next holder may reuse part numbers above
    /// `recorded_parts`, since nothing of this holder is in flight any more.
    pub(super) async fn release(&self, recorded_parts: u32) {
        let released = self
            .update(|body| {
                body.released = true;
                body.parts = recorded_parts;
            })
            .await;
        match released {
            Ok(()) => {}
            // Taken over, or removed with the upload (a commit or cancel removes its directory).
            Err(StorageError::Fenced(_)) => {}
            Err(e) => log::warn!("cannot release the upload lease {}: {e}", self.path),
        }
    }
}

#[async_trait::async_trait]
impl Fence for LeaseHold {
    fn token(&self) -> u64 {
        self.fence
    }

    async fn next_part(&self, after: u32) -> Result<u32> {
        let mut state = self.state.lock().await;
        if let Some(why) = &state.lost {
            return Err(StorageError::Fenced(why.clone()));
        }
        let number = after.max(state.given) + 1;
        if number > state.body.parts {
            drop(state);
            self.update(|body| body.parts = number + PART_RESERVE - 1)
                .await?;
            state = self.state.lock().await;
        }
        state.given = state.given.max(number);
        Ok(number)
    }

    async fn check(&self) -> Result<()> {
        self.update(|_| {}).await
    }
}
