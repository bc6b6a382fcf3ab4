//! Garbage collection on in-memory storage, content written straight in distribution's layout.

use std::time::Duration;

use bytes::Bytes;

use super::journal::{Journal, Removed};
use super::*;
use crate::oci::manifest::{OCI_INDEX, OCI_MANIFEST};
use crate::oci::RepoName;
use crate::storage::layout;

fn repo(name: &str) -> RepoName {
    name.parse().unwrap()
}

async fn blob(s: &Storage, r: &RepoName, content: &[u8]) -> Digest {
    let d = Digest::sha256(content);
    s.write_blob(&d, Bytes::copy_from_slice(content))
        .await
        .unwrap();
    s.write_link(&layout::layer_link(r, &d), &d).await.unwrap();
    d
}

async fn manifest(s: &Storage, r: &RepoName, json: String, tag: Option<&str>) -> Digest {
    let d = Digest::sha256(json.as_bytes());
    s.write_blob(&d, Bytes::from(json)).await.unwrap();
    s.write_link(&layout::revision_link(r, &d), &d)
        .await
        .unwrap();
    if let Some(t) = tag {
        let t = t.parse().unwrap();
        s.write_link(&layout::tag_index_link(r, &t, &d), &d)
            .await
            .unwrap();
        s.write_link(&layout::tag_current_link(r, &t), &d)
            .await
            .unwrap();
    }
    d
}

fn image_json(config: &Digest, layers: &[&Digest], subject: Option<&Digest>) -> String {
    let layers: Vec<String> = layers
        .iter()
        .map(|l| format!(r#"{{"mediaType":"application/vnd.oci.image.layer.v1.tar","digest":"{l}","size":1}}"#))
        .collect();
    let subject = subject
        .map(|s| format!(r#","subject":{{"mediaType":"{OCI_MANIFEST}","digest":"{s}","size":1}}"#))
        .unwrap_or_default();
    format!(
        r#"{{"schemaVersion":2,"mediaType":"{OCI_MANIFEST}","config":{{"mediaType":"application/vnd.oci.image.config.v1+json","digest":"{config}","size":1}},"layers":[{}]{subject}}}"#,
        layers.join(",")
    )
}

fn index_json(children: &[&Digest]) -> String {
    let children: Vec<String> = children
        .iter()
        .map(|c| format!(r#"{{"mediaType":"{OCI_MANIFEST}","digest":"{c}","size":1}}"#))
        .collect();
    format!(
        r#"{{"schemaVersion":2,"mediaType":"{OCI_INDEX}","manifests":[{}]}}"#,
        children.join(",")
    )
}

/// An image with its own layer and a layer shared by all images; answers (manifest, own layer).
async fn image(s: &Storage, r: &RepoName, name: &str, tag: Option<&str>) -> (Digest, Digest) {
    let config = blob(s, r, format!("config of {name}").as_bytes()).await;
    let own = blob(s, r, format!("layer of {name}").as_bytes()).await;
    let shared = blob(s, r, b"shared layer").await;
    let m = manifest(s, r, image_json(&config, &[&own, &shared], None), tag).await;
    (m, own)
}

fn collector(s: &Storage, delete_untagged: bool) -> Collector {
    Collector {
        storage: s.clone(),
        delete_untagged,
        grace: Duration::ZERO,
        dry_run: false,
    }
}

async fn collect(c: &Collector) -> Report {
    c.run(&|_| {}, &|_| {}).await.unwrap()
}

async fn has_blob(s: &Storage, d: &Digest) -> bool {
    s.blob_size(d).await.unwrap().is_some()
}

#[tokio::test]
async fn plain_collection_keeps_every_revision() {
    let s = Storage::in_memory();
    let r = repo("team/app");
    let (tagged, _) = image(&s, &r, "a", Some("v1")).await;
    let (untagged, untagged_layer) = image(&s, &r, "b", None).await;
    let (deleted, deleted_layer) = image(&s, &r, "c", None).await;
    s.delete(&layout::revision_link(&r, &deleted))
        .await
        .unwrap();
    let deleted_config = Digest::sha256(b"config of c");
    let orphan = blob(&s, &r, b"never referenced").await;

    let dry = collect(&Collector {
        dry_run: true,
        ..collector(&s, false)
    })
    .await;
    assert!(dry.outcome.is_none());
    let planned: Vec<&Digest> = dry.plan.blobs.iter().map(|b| &b.digest).collect();
    let mut want = vec![&deleted, &deleted_config, &deleted_layer, &orphan];
    want.sort();
    assert_eq!(planned, want);
    assert!(has_blob(&s, &orphan).await, "a dry run removes nothing");

    let report = collect(&collector(&s, false)).await;
    let o = report.outcome.unwrap();
    assert_eq!(o.blobs.len(), 4);
    assert_eq!(o.blob_bytes(), report.plan.blob_bytes());
    assert_eq!(
        o.layer_links, 3,
        "the orphan's, the deleted image's config and layer"
    );
    assert!(o.manifests.is_empty());
    for gone in [&deleted, &deleted_config, &deleted_layer, &orphan] {
        assert!(!has_blob(&s, gone).await);
    }
    assert!(!s.exists(&layout::layer_link(&r, &orphan)).await.unwrap());
    for kept in [&tagged, &untagged, &untagged_layer] {
        assert!(has_blob(&s, kept).await);
    }
    assert!(has_blob(&s, &Digest::sha256(b"shared layer")).await);
    // Nothing left to do.
    let again = collect(&collector(&s, false)).await;
    assert!(again.plan.is_empty());
}

#[tokio::test]
async fn untagged_collection_keeps_what_a_tag_reaches_and_its_referrers() {
    let s = Storage::in_memory();
    let r = repo("multi");
    let (amd64, amd64_layer) = image(&s, &r, "amd64", None).await;
    let (arm64, arm64_layer) = image(&s, &r, "arm64", None).await;
    let index = manifest(&s, &r, index_json(&[&amd64, &arm64]), Some("latest")).await;
    // A signature of the (untagged) amd64 image, itself untagged.
    let sig_config = blob(&s, &r, b"signature config").await;
    let sig_layer = blob(&s, &r, b"signature").await;
    let sig = manifest(
        &s,
        &r,
        image_json(&sig_config, &[&sig_layer], Some(&amd64)),
        None,
    )
    .await;
    let (old, old_layer) = image(&s, &r, "old", None).await;
    let other = repo("other");
    let (elsewhere, _) = image(&s, &other, "elsewhere", Some("v1")).await;

    let report = collect(&collector(&s, true)).await;
    let o = report.outcome.unwrap();
    assert_eq!(
        o.manifests
            .iter()
            .map(|m| (m.repo.as_str(), &m.digest))
            .collect::<Vec<_>>(),
        vec![("multi", &old)]
    );
    assert!(!s.exists(&layout::revision_link(&r, &old)).await.unwrap());
    assert!(!has_blob(&s, &old).await && !has_blob(&s, &old_layer).await);
    for kept in [
        &index,
        &amd64,
        &arm64,
        &amd64_layer,
        &arm64_layer,
        &sig,
        &sig_config,
        &sig_layer,
        &elsewhere,
    ] {
        assert!(has_blob(&s, kept).await, "{kept} was removed");
    }
    for m in [&index, &amd64, &arm64, &sig] {
        assert!(s.exists(&layout::revision_link(&r, m)).await.unwrap());
    }
    assert!(has_blob(&s, &Digest::sha256(b"shared layer")).await);
}

#[tokio::test]
async fn nothing_younger_than_the_grace_period_is_touched() {
    let s = Storage::in_memory();
    let r = repo("a");
    image(&s, &r, "x", None).await;
    let orphan = blob(&s, &r, b"orphan").await;
    let report = collect(&Collector {
        grace: Duration::from_secs(3600),
        ..collector(&s, true)
    })
    .await;
    assert!(report.plan.is_empty());
    assert!(has_blob(&s, &orphan).await);
}

#[tokio::test]
async fn content_referenced_during_the_sweep_is_put_back() {
    let s = Storage::in_memory();
    let r = repo("a");
    let config = blob(&s, &r, b"cfg").await;
    let orphan = blob(&s, &r, b"orphan, about to be used").await;
    let lost = blob(&s, &r, b"really unused").await;
    let opts = Options {
        delete_untagged: false,
        cutoff: chrono::Utc::now(),
    };
    let inv = Inventory::scan(&s).await.unwrap();
    let mut reader = ManifestReader::new(s.clone());
    let marks = MarkSet::mark(&s, &inv, &opts, &mut reader).await.unwrap();
    let plan = SweepPlan::new(&inv, &marks, &opts);
    assert_eq!(plan.blobs.len(), 3);
    // A push after the mark: a manifest using the orphan (its revision link is younger than
    // the cutoff).
    let m = manifest(&s, &r, image_json(&config, &[&orphan], None), Some("new")).await;
    let sweeper = Sweeper {
        storage: &s,
        opts: &opts,
        run: "test-run".into(),
        progress: &|_| {},
        lock: None,
        before_move: None,
    };
    let o = sweeper.sweep(&plan).await.unwrap();
    assert_eq!(o.blobs.len(), 1);
    assert_eq!(o.blobs[0].digest, lost);
    assert!(o.restored + o.skipped >= 1);
    for kept in [&m, &config, &orphan] {
        assert!(has_blob(&s, kept).await, "{kept}");
        assert!(s.exists(&layout::layer_link(&r, kept)).await.unwrap() || kept == &m);
    }
    assert!(!has_blob(&s, &lost).await);
    assert!(s
        .list_with_meta(&layout::gc_quarantine())
        .next()
        .await
        .is_none());
}

#[tokio::test]
async fn a_sweep_that_fails_puts_back_what_it_set_aside() {
    use crate::storage::faults::{Faults, Op};
    let faults = Faults::default();
    let s = Storage::in_memory().with_faults(faults.clone());
    let r = repo("a");
    let orphan = blob(&s, &r, b"orphan").await;
    let opts = Options {
        delete_untagged: false,
        cutoff: chrono::Utc::now(),
    };
    let inv = Inventory::scan(&s).await.unwrap();
    let mut reader = ManifestReader::new(s.clone());
    let marks = MarkSet::mark(&s, &inv, &opts, &mut reader).await.unwrap();
    let plan = SweepPlan::new(&inv, &marks, &opts);
    assert_eq!(plan.blobs.len(), 1);
    // The second mark's listing fails.
    faults.fail(Op::List, "repositories", 1);
    let sweeper = Sweeper {
        storage: &s,
        opts: &opts,
        run: "failing".into(),
        progress: &|_| {},
        lock: None,
        before_move: None,
    };
    assert!(sweeper.sweep(&plan).await.is_err());
    assert!(has_blob(&s, &orphan).await);
    assert!(s.exists(&layout::layer_link(&r, &orphan)).await.unwrap());
    assert!(s
        .list_with_meta(&layout::gc_quarantine())
        .next()
        .await
        .is_none());
}

/// A collection whose lock is lost while it sets blobs aside (another collection took it over)
/// stops at the next item: nothing more is moved or deleted, and what it had set aside is put
/// back with its links.
#[tokio::test]
async fn a_sweep_whose_lock_is_lost_stops_at_the_next_item_and_puts_back() {
    let s = Storage::in_memory();
    let r = repo("a");
    let first = blob(&s, &r, b"first orphan").await;
    let second = blob(&s, &r, b"second orphan").await;
    let (opts, plan) = plan_now(&s).await;
    assert_eq!(plan.blobs.len(), 2);
    let lock = match s.lock_gc().await.unwrap() {
        crate::storage::GcLockAttempt::Held(l) => l,
        other => panic!("{other:?}"),
    };
    let moves = std::sync::atomic::AtomicUsize::new(0);
    // Lost while the first blob is being set aside.
    let hook = |_: Digest| -> sweep::BoxFuture<'static, ()> {
        moves.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
        lock.lose();
        Box::pin(async {})
    };
    let sweeper = Sweeper {
        lock: Some(&lock),
        before_move: Some(&hook),
        ..sweeper(&s, &opts, "losing")
    };
    let err = sweeper.sweep(&plan).await.unwrap_err();
    assert!(matches!(err, GcError::LockLost(_)), "{err}");
    assert_eq!(
        moves.load(std::sync::atomic::Ordering::SeqCst),
        1,
        "went on after the loss"
    );
    for d in [&first, &second] {
        assert!(has_blob(&s, d).await, "{d}");
        assert!(linked(&s, &r, d).await, "{d}");
    }
    assert!(nothing_under_gc(&s).await);
}

#[tokio::test]
async fn an_interrupted_run_is_undone_by_the_next() {
    let s = Storage::in_memory();
    let r = repo("a");
    let (m, layer) = image(&s, &r, "x", Some("v1")).await;
    let aside = layout::gc_quarantined("crashed", &layer);
    s.rename(&layout::blob_data(&layer), &aside).await.unwrap();
    let report = collect(&collector(&s, false)).await;
    assert_eq!(report.recovered.blobs, 1);
    assert!(has_blob(&s, &layer).await && has_blob(&s, &m).await);
    assert!(!s.exists(&aside).await.unwrap());
}

/// The plan of a collection starting now (cutoff: now), as its first mark makes it.
async fn plan_now(s: &Storage) -> (Options, SweepPlan) {
    let opts = Options {
        delete_untagged: false,
        cutoff: chrono::Utc::now(),
    };
    let inv = Inventory::scan(s).await.unwrap();
    let mut reader = ManifestReader::new(s.clone());
    let marks = MarkSet::mark(s, &inv, &opts, &mut reader).await.unwrap();
    let plan = SweepPlan::new(&inv, &marks, &opts);
    (opts, plan)
}

fn sweeper<'a>(s: &'a Storage, opts: &'a Options, run: &str) -> Sweeper<'a> {
    Sweeper {
        storage: s,
        opts,
        run: run.into(),
        progress: &|_| {},
        lock: None,
        before_move: None,
    }
}

async fn linked(s: &Storage, r: &RepoName, d: &Digest) -> bool {
    s.exists(&layout::layer_link(r, d)).await.unwrap()
}

async fn nothing_under_gc(s: &Storage) -> bool {
    s.list_with_meta(&layout::gc_quarantine())
        .next()
        .await
        .is_none()
}

/// Issue 11, item 1, as two collectors sweeping at once played it out (the lock now refuses
/// the second, but a store ignoring conditional writes weakens the lock): collector A had moved
/// the manifest's bytes aside and a client tagged the manifest again; collector B must find the
/// manifest in A's quarantine (else it deletes the layers of a tagged image), and write back the
/// links it removed from a blob A moved away under its feet.
#[tokio::test]
async fn a_sweep_beside_another_run_keeps_what_that_run_set_aside() {
    let s = Storage::in_memory();
    let r = repo("team/app");
    let (m, own) = image(&s, &r, "x", None).await;
    let config = Digest::sha256(b"config of x");
    let shared = Digest::sha256(b"shared layer");
    // Deleted by digest: every blob of it is garbage.
    s.delete(&layout::revision_link(&r, &m)).await.unwrap();
    let (opts, plan) = plan_now(&s).await;
    assert_eq!(plan.blobs.len(), 4);
    // Collector A moves the manifest's bytes aside; meanwhile the client's push of the
    // manifest (which found its bytes still there) tags it again.
    s.rename(&layout::blob_data(&m), &layout::gc_quarantined("run-a", &m))
        .await
        .unwrap();
    let tag = "v1".parse().unwrap();
    for link in [
        layout::revision_link(&r, &m),
        layout::tag_index_link(&r, &tag, &m),
        layout::tag_current_link(&r, &tag),
    ] {
        s.write_link(&link, &m).await.unwrap();
    }
    // And A moves the own layer away just as B, having removed its link, is about to.
    let a_moves = |d: Digest| -> sweep::BoxFuture<'static, ()> {
        let s = s.clone();
        let own = own.clone();
        Box::pin(async move {
            if d == own {
                s.rename(&layout::blob_data(&d), &layout::gc_quarantined("run-a", &d))
                    .await
                    .unwrap();
            }
        })
    };
    let b = Sweeper {
        before_move: Some(&a_moves),
        ..sweeper(&s, &opts, "run-b")
    };
    let o = b.sweep(&plan).await.unwrap();
    assert!(o.blobs.is_empty(), "B deleted {:?}", o.blobs);
    // A's second mark keeps the tagged manifest and puts back what it holds.
    for d in [&m, &own] {
        s.rename(&layout::gc_quarantined("run-a", d), &layout::blob_data(d))
            .await
            .unwrap();
    }
    for d in [&m, &config, &own, &shared] {
        assert!(
            has_blob(&s, d).await,
            "blob {d} of the tagged image is gone"
        );
    }
    for d in [&config, &own, &shared] {
        assert!(linked(&s, &r, d).await, "the _layers link of {d} is gone");
    }
    assert!(nothing_under_gc(&s).await);
}

/// Issue 11, item 2: what a killed run leaves (journal entries, data set aside, links removed)
/// is undone by the next run: the data moved back and the journalled links written again,
/// except those of a blob whose data the killed run had already deleted.
#[tokio::test]
async fn a_killed_run_is_undone_links_included() {
    let s = Storage::in_memory();
    let r = repo("a");
    let (tagged, own) = image(&s, &r, "x", Some("v1")).await;
    let (untagged, _) = image(&s, &r, "y", None).await;
    let gone = blob(&s, &r, b"deleted by the killed run").await;
    let killed = Journal {
        storage: &s,
        run: "killed",
    };
    // As the killed run left them: the tagged image's layer unlinked and set aside (a push
    // had referenced it again), the untagged manifest's revision link removed and its bytes set
    // aside, and an orphan's link removed and its data already deleted.
    let layer_link = Removed {
        path: layout::layer_link(&r, &own),
        digest: own.clone(),
    };
    let revision = Removed {
        path: layout::revision_link(&r, &untagged),
        digest: untagged.clone(),
    };
    let orphan_link = Removed {
        path: layout::layer_link(&r, &gone),
        digest: gone.clone(),
    };
    killed
        .record(
            &journal::blob_key(0),
            &own,
            std::slice::from_ref(&layer_link),
        )
        .await
        .unwrap();
    killed
        .record(
            &journal::manifest_key(0),
            &untagged,
            std::slice::from_ref(&revision),
        )
        .await
        .unwrap();
    killed
        .record(
            &journal::blob_key(1),
            &gone,
            std::slice::from_ref(&orphan_link),
        )
        .await
        .unwrap();
    for l in [&layer_link, &revision, &orphan_link] {
        s.delete(&l.path).await.unwrap();
    }
    for d in [&own, &untagged] {
        s.rename(&layout::blob_data(d), &layout::gc_quarantined("killed", d))
            .await
            .unwrap();
    }
    s.delete(&layout::blob_data(&gone)).await.unwrap();

    let report = collect(&collector(&s, false)).await;
    assert_eq!(
        report.recovered,
        Recovered { blobs: 2, links: 2 },
        "two blobs moved back, two links written back"
    );
    assert!(has_blob(&s, &own).await && linked(&s, &r, &own).await);
    assert!(s.exists(&revision.path).await.unwrap(), "revision link");
    assert!(has_blob(&s, &untagged).await && has_blob(&s, &tagged).await);
    assert!(
        !linked(&s, &r, &gone).await,
        "a link to deleted data came back"
    );
    assert!(nothing_under_gc(&s).await, "journal or data left behind");
    assert!(report.plan.is_empty(), "{:?}", report.plan);
}

/// A sweep whose second mark fails puts back everything, trying each item even when putting
/// back another fails, and reports those failures; the next run finishes the job.
#[tokio::test]
async fn every_put_back_is_tried_and_failures_are_reported() {
    use crate::storage::faults::{Faults, Op};
    let faults = Faults::default();
    let s = Storage::in_memory().with_faults(faults.clone());
    let r = repo("a");
    let mut orphans = Vec::new();
    for i in 0..3 {
        orphans.push(blob(&s, &r, format!("orphan {i}").as_bytes()).await);
    }
    orphans.sort();
    let (opts, plan) = plan_now(&s).await;
    assert_eq!(plan.blobs.len(), 3);
    // The second mark's listing fails; then moving the first blob back fails, and so does
    // writing back the second one's link.
    faults.fail(Op::List, "repositories", 1);
    faults.fail(
        Op::Rename,
        &format!("_berth/gc/failing/sha256/{}", orphans[0].hex()),
        1,
    );
    faults.fail(Op::Put, &format!("_layers/sha256/{}", orphans[1].hex()), 1);
    let err = sweeper(&s, &opts, "failing")
        .sweep(&plan)
        .await
        .expect_err("the sweep fails");
    match &err {
        GcError::Incomplete { failures, cause } => {
            assert_eq!(failures.len(), 2, "{err}");
            assert!(cause.is_some(), "{err}");
        }
        other => panic!("not reported as incomplete: {other}"),
    }
    let text = err.to_string();
    assert!(text.contains(&orphans[0].to_string()), "{text}");
    assert!(text.contains("injected List fault"), "{text}");
    // Everything else was put back nonetheless.
    assert!(has_blob(&s, &orphans[1]).await && has_blob(&s, &orphans[2]).await);
    assert!(linked(&s, &r, &orphans[0]).await && linked(&s, &r, &orphans[2]).await);
    assert!(!has_blob(&s, &orphans[0]).await && !linked(&s, &r, &orphans[1]).await);
    // The next run's recovery (faults gone) puts back the rest from the journal.
    let recovered = journal::recover(&s).await.unwrap();
    assert_eq!(recovered, Recovered { blobs: 1, links: 2 });
    for d in &orphans {
        assert!(has_blob(&s, d).await && linked(&s, &r, d).await, "{d}");
    }
    assert!(nothing_under_gc(&s).await);
}

/// After the second mark, one kept blob that cannot be put back does not stop the others.
#[tokio::test]
async fn a_failing_put_back_does_not_abandon_the_others() {
    use crate::storage::faults::{Faults, Op};
    let faults = Faults::default();
    let s = Storage::in_memory().with_faults(faults.clone());
    let r = repo("a");
    let config = blob(&s, &r, b"cfg").await;
    let mut used = [
        blob(&s, &r, b"about to be used, 1").await,
        blob(&s, &r, b"about to be used, 2").await,
    ];
    used.sort();
    let (opts, plan) = plan_now(&s).await;
    // Pushed after the first mark: a manifest using both (and the config).
    manifest(
        &s,
        &r,
        image_json(&config, &[&used[0], &used[1]], None),
        Some("new"),
    )
    .await;
    faults.fail(
        Op::Rename,
        &format!("_berth/gc/stuck/sha256/{}", used[0].hex()),
        1,
    );
    let err = sweeper(&s, &opts, "stuck").sweep(&plan).await.unwrap_err();
    assert!(
        matches!(&err, GcError::Incomplete { failures, cause: None } if failures.len() == 1),
        "{err}"
    );
    assert!(has_blob(&s, &used[1]).await && linked(&s, &r, &used[1]).await);
    assert!(has_blob(&s, &config).await && linked(&s, &r, &config).await);
    assert_eq!(
        journal::recover(&s).await.unwrap(),
        Recovered { blobs: 1, links: 1 }
    );
    assert!(has_blob(&s, &used[0]).await && linked(&s, &r, &used[0]).await);
    assert!(nothing_under_gc(&s).await);
}

/// A second collection is refused while one holds the lock, naming the holder.
#[tokio::test]
async fn a_second_collection_is_refused() {
    let s = Storage::in_memory();
    let held = match s.lock_gc().await.unwrap() {
        crate::storage::GcLockAttempt::Held(l) => l,
        other => panic!("{other:?}"),
    };
    let err = collector(&s, false)
        .run(&|_| {}, &|_| {})
        .await
        .unwrap_err();
    let text = err.to_string();
    assert!(matches!(err, GcError::Busy(Some(_))), "{text}");
    assert!(
        text.contains(&format!("pid {}", std::process::id())) && text.contains("expires at"),
        "{text}"
    );
    held.release().await;
    collect(&collector(&s, false)).await;
}

#[test]
fn durations() {
    assert_eq!(parse_duration("1h"), Ok(Duration::from_secs(3600)));
    assert_eq!(parse_duration("90s"), Ok(Duration::from_secs(90)));
    assert_eq!(parse_duration("15"), Ok(Duration::from_secs(15)));
    assert_eq!(parse_duration("250ms"), Ok(Duration::from_millis(250)));
    assert!(parse_duration("soon").is_err());
    assert!(parse_duration("5y").is_err());
}

use futures_util::StreamExt;

#[actix_rt::test]
async fn recovery_removes_what_a_run_killed_mid_write_left() {
    // object_store writes `<name>#<n>` and renames it: a kill in between leaves the `#` file,
    // which listings skip (seen: a journal entry of a run killed while writing its journal).
    let dir = tempfile::tempdir().unwrap();
    let s = Storage::filesystem(dir.path(), true).unwrap();
    let run = dir
        .path()
        .join("docker/registry/v2/_berth/gc/20261201T000000-killed");
    std::fs::create_dir_all(run.join("journal")).unwrap();
    std::fs::write(run.join("journal/b00000378#1"), b"{\"needs\":").unwrap();
    journal::recover(&s).await.unwrap();
    assert!(
        !dir.path().join("docker/registry/v2/_berth/gc").exists(),
        "the killed run's folder is gone"
    );
}
