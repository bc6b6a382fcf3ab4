//! The read scenarios: GET of the large blob (hashed or not), manifests fetched by tag at a given
//! concurrency, and the verify pass that reads back everything the run pushed.

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use bytes::Bytes;

use crate::bench::client::OpError;
use crate::bench::data;
use crate::bench::stats::Latencies;

use super::{digest_of, tick, Context, Outcome, Pushed, PushedManifest, Scenario, Unit};

const OCI_MANIFEST: &str = "application/vnd.oci.image.manifest.v1+json";
const OCI_CONFIG: &str = "application/vnd.oci.image.config.v1+json";
const OCI_LAYER: &str = "application/vnd.oci.image.layer.v1.tar+gzip";

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
            None => {
                let repo = self.repo(Scenario::PullLarge);
                let spec = self.spec(Scenario::PullLarge, 0, size);
                let digest = digest_of(spec).await;
                if let Err(e) = self
                    .client
                    .push_monolithic(&repo, spec, &digest, Arc::new(|_| {}))
                    .await
                {
                    return Outcome {
                        errors: vec![OpError(format!("pushing the blob to pull: {e}"))],
                        ..Default::default()
                    };
                }
                let p = Pushed { repo, digest, size };
                self.pushed.push(p.clone());
                p
            }
        };
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
        let mut outcome = Outcome {
            bytes: target.size,
            ops: 1,
            measured,
            ..Default::default()
        };
        outcome
            .latencies
            .push_ms(Duration::from_secs_f64(measured.seconds));
        if let Err(e) = result {
            outcome.errors.push(e);
        }
        outcome
    }

    /// A small image (config, one layer, manifest) is pushed, then its manifest is fetched by tag
    /// at `--manifest-concurrency` for `--duration` seconds.
    pub(super) async fn manifest_get(&mut self) -> Outcome {
        let scenario = Scenario::ManifestGet;
        let repo = self.repo(scenario);
        let config = Bytes::from(format!(
            r#"{{"architecture":"amd64","os":"linux","config":{{"Labels":{{"berth.bench.seed":"{}"}}}},"rootfs":{{"type":"layers","diff_ids":[]}}}}"#,
            self.seed
        ));
        let layer = self.spec(scenario, 1, 32 * 1024).to_bytes();
        let (config_digest, layer_digest) = (data::sha256(&config), data::sha256(&layer));
        let manifest = Bytes::from(format!(
            r#"{{"schemaVersion":2,"mediaType":"{OCI_MANIFEST}","config":{{"mediaType":"{OCI_CONFIG}","digest":"{config_digest}","size":{}}},"layers":[{{"mediaType":"{OCI_LAYER}","digest":"{layer_digest}","size":{}}}],"annotations":{{"org.opencontainers.image.title":"berth bench"}}}}"#,
            config.len(),
            layer.len()
        ));
        let digest = data::sha256(&manifest);
        let tag = "bench".to_string();
        let setup = async {
            self.client
                .push_bytes(&repo, config.clone(), &config_digest)
                .await?;
            self.client
                .push_bytes(&repo, layer.clone(), &layer_digest)
                .await?;
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
        for (d, s) in [(config_digest, config.len()), (layer_digest, layer.len())] {
            self.pushed.push(Pushed {
                repo: repo.clone(),
                digest: d,
                size: s as u64,
            });
        }
        self.manifests.push(PushedManifest {
            repo: repo.clone(),
            tag: tag.clone(),
            digest: digest.clone(),
            media_type: OCI_MANIFEST.to_string(),
        });

        let pb = self.bar(scenario, None, Unit::Requests);
        let deadline = Instant::now() + Duration::from_secs_f64(self.args.duration.max(0.1));
        let bytes_each = manifest.len() as u64;
        let meter = self.meter();
        let mut workers = Vec::new();
        for _ in 0..self.args.manifest_concurrency.max(1) {
            let (client, repo, tag, digest, pb) = (
                self.client.clone(),
                repo.clone(),
                tag.clone(),
                digest.clone(),
                pb.clone(),
            );
            workers.push(tokio::spawn(async move {
                let mut lat = Latencies::default();
                let mut errors = Vec::new();
                let mut n = 0u64;
                while Instant::now() < deadline {
                    let t = Instant::now();
                    if let Err(e) = client
                        .get_manifest(&repo, &tag, OCI_MANIFEST, &digest)
                        .await
                    {
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
        for w in workers {
            match w.await {
                Ok((lat, errors, n)) => {
                    outcome.latencies.extend(lat);
                    outcome.errors.extend(errors);
                    outcome.ops += n;
                }
                Err(e) => outcome.errors.push(OpError(format!("worker: {e}"))),
            }
        }
        outcome.measured = meter.finish();
        pb.finish_and_clear();
        outcome.bytes = outcome.ops * bytes_each;
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
