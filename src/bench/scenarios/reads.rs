//! The read scenarios: GET of the large blob (hashed or not), manifests fetched by tag at a given
//! concurrency, and the verify pass that reads back everything the run pushed.

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Instant;

use crate::bench::client::OpError;
use crate::bench::data;
use crate::bench::stats::Latencies;

use super::manifests::{for_duration, SmallImage, OCI_MANIFEST};
use super::{failed, tick, Context, Outcome, Pushed, PushedManifest, Scenario, Unit};

impl Context<'_> {
    /// GET of the large blob (pushed earlier in this run, or now, untimed).
    pub(super) async fn pull_large(&mut self, hash: bool) -> Outcome {
        let scenario = if hash {
            Scenario::PullLarge
        } else {
            Scenario::PullLargeNoHash
        };
        let size = self.args.blob_size;
        let target = self
            .pushed
            .iter()
            .find(|p| p.size == size)
            .or_else(|| self.pushed.iter().max_by_key(|p| p.size))
            .filter(|p| p.size >= size.min(64 << 20))
            .cloned();
        let target = match target {
            Some(t) => t,
            None => match self.push_new(Scenario::PullLarge).await {
                Ok((t, _)) => t,
                Err(e) => return failed("push", e),
            },
        };
        self.timed_get(scenario, &target, hash).await
    }

    /// The timed GET of a blob pushed before, hashed or not.
    pub(super) async fn timed_get(
        &self,
        scenario: Scenario,
        target: &Pushed,
        hash: bool,
    ) -> Outcome {
        let pb = self.bar(scenario, Some(target.size), Unit::Bytes);
        let meter = self.meter();
        let result = self
            .client
            .get_blob(
                &target.repo,
                &target.digest,
                target.size,
                hash,
                Some(tick(&pb)),
            )
            .await;
        let measured = meter.finish();
        pb.finish_and_clear();
        super::single(target.size, measured, result.err())
    }

    /// A small image (config, one layer, manifest) is pushed, then its manifest is fetched by tag
    /// at `--manifest-concurrency` for `--duration` seconds.
    pub(super) async fn manifest_get(&mut self) -> Outcome {
        let scenario = Scenario::ManifestGet;
        let repo = self.repo(scenario);
        let image = SmallImage::new(self, scenario);
        let manifest = image.manifest("berth bench");
        let digest = data::sha256(&manifest);
        let tag = "bench".to_string();
        let setup = async {
            image.push(self, &repo).await?;
            self.client
                .put_manifest(&repo, &tag, OCI_MANIFEST, manifest.clone())
                .await
        };
        if let Err(e) = setup.await {
            return Outcome {
                errors: vec![OpError(format!("pushing the image: {e}"))],
                ..Default::default()
            };
        }
        self.manifests.push(PushedManifest {
            repo: repo.clone(),
            tag: tag.clone(),
            digest: digest.clone(),
            media_type: OCI_MANIFEST.to_string(),
        });

        let pb = self.bar(scenario, None, Unit::Requests);
        let get = {
            let client = self.client.clone();
            move |_: usize, _: u64| {
                let (client, repo, tag, digest) =
                    (client.clone(), repo.clone(), tag.clone(), digest.clone());
                async move {
                    client
                        .get_manifest(&repo, &tag, OCI_MANIFEST, &digest)
                        .await
                }
            }
        };
        let meter = self.meter();
        let (mut outcome, _) =
            for_duration(self.args.manifest_concurrency, self.args.duration, &pb, get).await;
        outcome.measured = meter.finish();
        pb.finish_and_clear();
        outcome.bytes = outcome.ops * manifest.len() as u64;
        outcome
    }

    /// Everything pushed in this run is HEADed and read back with its digest checked, and every
    /// manifest fetched by tag and by digest.
    pub(super) async fn verify(&mut self) -> Outcome {
        let blobs = Arc::new(self.pushed.clone());
        let manifests = self.manifests.clone();
        let total: u64 = blobs.iter().map(|b| b.size).sum();
        let pb = self.bar(Scenario::Verify, Some(total), Unit::Bytes);
        let next = Arc::new(AtomicUsize::new(0));
        let errors = Arc::new(Mutex::new(Vec::new()));
        let meter = self.meter();
        let mut workers = Vec::new();
        for _ in 0..8 {
            let (client, blobs, next, errors, pb) = (
                self.client.clone(),
                blobs.clone(),
                next.clone(),
                errors.clone(),
                pb.clone(),
            );
            workers.push(tokio::spawn(async move {
                let mut lat = Latencies::default();
                loop {
                    let i = next.fetch_add(1, Ordering::Relaxed);
                    let Some(b) = blobs.get(i) else { break };
                    let t = Instant::now();
                    let r = match client.head_blob(&b.repo, &b.digest, b.size).await {
                        Ok(()) => {
                            client
                                .get_blob(&b.repo, &b.digest, b.size, true, Some(tick(&pb)))
                                .await
                        }
                        Err(e) => Err(e),
                    };
                    lat.push_ms(t.elapsed());
                    if let Err(e) = r {
                        errors.lock().expect("errors").push(e);
                    }
                }
                lat
            }));
        }
        let mut outcome = Outcome::default();
        for w in workers {
            match w.await {
                Ok(lat) => outcome.latencies.extend(lat),
                Err(e) => outcome.errors.push(OpError(format!("worker: {e}"))),
            }
        }
        for m in &manifests {
            for reference in [&m.tag, &m.digest] {
                if let Err(e) = self
                    .client
                    .get_manifest(&m.repo, reference, &m.media_type, &m.digest)
                    .await
                {
                    outcome.errors.push(e);
                }
            }
        }
        outcome.measured = meter.finish();
        pb.finish_and_clear();
        outcome
            .errors
            .extend(errors.lock().expect("errors").drain(..));
        outcome.ops = (blobs.len() + 2 * manifests.len()) as u64;
        outcome.bytes = total;
        if outcome.ops == 0 {
            outcome.note = Some("nothing was pushed in this run".to_string());
        }
        outcome
    }
}
