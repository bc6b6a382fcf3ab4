//! Manifest scenarios' shared parts: the small image (config and one layer) they reference, its
//! manifests, the loop of workers that runs for `--duration`; and the manifest PUT scenarios
//! (`manifest-put-1`, `manifest-put-32`: a new manifest under a new tag per request).

use std::future::Future;
use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::Bytes;
use indicatif::ProgressBar;

use crate::bench::client::{Client, OpError, OpResult};
use crate::bench::data;
use crate::bench::stats::Latencies;

use super::{Context, Outcome, Pushed, PushedManifest, Scenario, Unit};

pub(super) const OCI_MANIFEST: &str = "application/vnd.oci.image.manifest.v1+json";
const OCI_CONFIG: &str = "application/vnd.oci.image.config.v1+json";
const OCI_LAYER: &str = "application/vnd.oci.image.layer.v1.tar+gzip";

/// A config and one 32 KiB layer, with their digests: what the scenarios' manifests reference.
pub(super) struct SmallImage {
    config: Bytes,
    layer: Bytes,
    config_digest: String,
    layer_digest: String,
}

impl SmallImage {
    pub(super) fn new(ctx: &Context<'_>, scenario: Scenario) -> SmallImage {
        let config = Bytes::from(format!(
            r#"{{"architecture":"amd64","os":"linux","config":{{"Labels":{{"berth.bench.seed":"{}"}}}},"rootfs":{{"type":"layers","diff_ids":[]}}}}"#,
            ctx.seed
        ));
        let layer = ctx.spec(scenario, 1, 32 * 1024).to_bytes();
        SmallImage {
            config_digest: data::sha256(&config),
            layer_digest: data::sha256(&layer),
            config,
            layer,
        }
    }

    /// An image manifest referencing the config and the layer, with `title` as its title
    /// annotation (distinct titles, distinct manifests).
    pub(super) fn manifest(&self, title: &str) -> Bytes {
        Bytes::from(format!(
            r#"{{"schemaVersion":2,"mediaType":"{OCI_MANIFEST}","config":{{"mediaType":"{OCI_CONFIG}","digest":"{}","size":{}}},"layers":[{{"mediaType":"{OCI_LAYER}","digest":"{}","size":{}}}],"annotations":{{"org.opencontainers.image.title":"{title}"}}}}"#,
            self.config_digest,
            self.config.len(),
            self.layer_digest,
            self.layer.len()
        ))
    }

    /// Pushes the config and the layer to `repo` (untimed setup) and records them for verify.
    pub(super) async fn push(&self, ctx: &mut Context<'_>, repo: &str) -> OpResult<()> {
        ctx.client
            .push_bytes(repo, self.config.clone(), &self.config_digest)
            .await?;
        ctx.client
            .push_bytes(repo, self.layer.clone(), &self.layer_digest)
            .await?;
        for (d, s) in [
            (&self.config_digest, self.config.len()),
            (&self.layer_digest, self.layer.len()),
        ] {
            ctx.pushed.push(Pushed {
                repo: repo.to_string(),
                digest: d.clone(),
                size: s as u64,
            });
        }
        Ok(())
    }
}

/// The tag and the title annotation of worker `worker`'s `n`-th manifest: distinct per operation.
pub(super) fn op_names(seed: u64, worker: usize, n: u64) -> (String, String) {
    (
        format!("w{worker}-{n}"),
        format!("berth bench s{seed} w{worker} #{n}"),
    )
}

/// `concurrency` workers each call `op(worker, n)` for n = 0, 1, … until `duration` has passed;
/// their latencies, errors and operation count (and each worker's count), with the progress bar
/// ticked per operation.
pub(super) async fn for_duration<F, Fut>(
    concurrency: usize,
    duration: f64,
    pb: &ProgressBar,
    op: F,
) -> (Outcome, Vec<u64>)
where
    F: Fn(usize, u64) -> Fut + Clone + Send + 'static,
    Fut: Future<Output = OpResult<()>> + Send + 'static,
{
    let deadline = Instant::now() + Duration::from_secs_f64(duration.max(0.1));
    let mut workers = Vec::new();
    for worker in 0..concurrency.max(1) {
        let (op, pb) = (op.clone(), pb.clone());
        workers.push(tokio::spawn(async move {
            let mut lat = Latencies::default();
            let mut errors = Vec::new();
            let mut n = 0u64;
            while Instant::now() < deadline {
                let t = Instant::now();
                if let Err(e) = op(worker, n).await {
                    errors.push(e);
                }
                lat.push_ms(t.elapsed());
                n += 1;
                pb.inc(1);
            }
            (lat, errors, n)
        }));
    }
    let mut outcome = Outcome::default();
    let mut counts = Vec::new();
    for w in workers {
        match w.await {
            Ok((lat, errors, n)) => {
                outcome.latencies.extend(lat);
                outcome.errors.extend(errors);
                outcome.ops += n;
                counts.push(n);
            }
            Err(e) => {
                outcome.errors.push(OpError(format!("worker: {e}")));
                counts.push(0);
            }
        }
    }
    (outcome, counts)
}

impl Context<'_> {
    /// The small image is pushed once, untimed; then `concurrency` clients PUT a new manifest
    /// (own title, own tag) per request for `--duration` seconds.
    pub(super) async fn manifest_put(&mut self, scenario: Scenario, concurrency: usize) -> Outcome {
        let repo = self.repo(scenario);
        let image = Arc::new(SmallImage::new(self, scenario));
        if let Err(e) = image.push(self, &repo).await {
            return super::failed("setup", OpError(format!("pushing the image: {e}")));
        }
        let seed = self.seed;
        let pb = self.bar(scenario, None, Unit::Requests);
        let put = {
            let (client, repo, image) = (self.client.clone(), repo.clone(), image.clone());
            move |worker: usize, n: u64| {
                let (client, repo, image) = (client.clone(), repo.clone(), image.clone());
                async move { put_one(&client, &repo, &image, seed, worker, n).await }
            }
        };
        let meter = self.meter();
        let (mut outcome, counts) = for_duration(concurrency, self.args.duration, &pb, put).await;
        outcome.measured = meter.finish();
        pb.finish_and_clear();
        // Verify reads back each worker's first and last manifest.
        for (worker, made) in counts.into_iter().enumerate() {
            let mut ns = vec![0, made.saturating_sub(1)];
            ns.dedup();
            for n in ns.into_iter().filter(|n| *n < made) {
                let (tag, title) = op_names(seed, worker, n);
                self.manifests.push(PushedManifest {
                    repo: repo.clone(),
                    tag,
                    digest: data::sha256(&image.manifest(&title)),
                    media_type: OCI_MANIFEST.to_string(),
                });
            }
        }
        outcome.bytes = outcome.ops * image.manifest("").len() as u64;
        outcome
    }
}

async fn put_one(
    client: &Client,
    repo: &str,
    image: &SmallImage,
    seed: u64,
    worker: usize,
    n: u64,
) -> OpResult<()> {
    let (tag, title) = op_names(seed, worker, n);
    client
        .put_manifest(repo, &tag, OCI_MANIFEST, image.manifest(&title))
        .await
}

#[cfg(test)]
mod tests {
    use std::collections::HashSet;

    use super::*;
    use crate::oci::Tag;

    #[test]
    fn every_operation_puts_a_distinct_manifest_under_a_valid_tag() {
        let image = SmallImage {
            config: Bytes::from_static(b"{}"),
            layer: Bytes::from_static(b"layer"),
            config_digest: data::sha256(b"{}"),
            layer_digest: data::sha256(b"layer"),
        };
        let (mut tags, mut digests) = (HashSet::new(), HashSet::new());
        for worker in [0, 1, 31] {
            for n in [0, 1, 9, 10, 11, 100] {
                let (tag, title) = op_names(7, worker, n);
                assert!(tag.parse::<Tag>().is_ok(), "{tag}");
                let body = image.manifest(&title);
                let json: serde_json::Value = serde_json::from_slice(&body).unwrap();
                assert_eq!(json["layers"][0]["size"], 5);
                assert!(tags.insert(tag));
                assert!(digests.insert(data::sha256(&body)));
            }
        }
        assert_eq!(digests.len(), 18);
    }
}
