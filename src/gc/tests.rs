//! Garbage collection on in-memory storage, content written straight in distribution's layout.

use std::time::Duration;

use bytes::Bytes;

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
