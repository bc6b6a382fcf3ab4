//! The push scenarios: one large blob (monolithic, single POST, chunked), many small or medium
//! blobs at a given concurrency, and many chunked uploads in flight at once.

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::Bytes;

use crate::bench::client::OpError;
use crate::bench::data::{self, BlobSpec};
use crate::bench::stats::Latencies;

use super::{digest_of, tick, Context, Outcome, Pushed, Scenario, Unit};

impl Context<'_> {
    /// One large blob: monolithic POST+PUT, single POST, or chunked PATCHes.
    pub(super) async fn push_large(&mut self, scenario: Scenario, size: u64) -> Outcome {
        let repo = self.repo(scenario);
        let spec = self.spec(scenario, 0, size);
        let digest = digest_of(spec).await;
        let pb = self.bar(scenario, Some(size), Unit::Bytes);
        let tick = tick(&pb);
        let c = &self.client;
        let meter = self.meter();
        let result = match scenario {
            Scenario::PushSinglePost => {
                c.push_single_post(&repo, spec, &digest, tick)
                    .await
                    .map(|fallback| {
                        fallback.then(|| {
                            "POST ?digest= answered 202: the body was sent again with PUT"
                                .to_string()
                        })
                    })
            }
            Scenario::PushChunked1m => c
                .push_chunked(&repo, spec, &digest, 1 << 20, tick)
                .await
                .map(|_| None),
            Scenario::PushChunked8m => c
                .push_chunked(&repo, spec, &digest, 8 << 20, tick)
                .await
                .map(|_| None),
            Scenario::PushChunked64m => c
                .push_chunked(&repo, spec, &digest, 64 << 20, tick)
                .await
                .map(|_| None),
            _ => c
                .push_monolithic(&repo, spec, &digest, tick)
                .await
                .map(|_| None),
        };
        let measured = meter.finish();
        pb.finish_and_clear();
        let mut outcome = Outcome {
            bytes: size,
            ops: 1,
            measured,
            ..Default::default()
        };
        outcome
            .latencies
            .push_ms(Duration::from_secs_f64(measured.seconds));
        match result {
            Ok(note) => {
                outcome.note = note;
                self.pushed.push(Pushed { repo, digest, size });
            }
            Err(e) => outcome.errors.push(e),
        }
        outcome
    }

    /// `count` blobs of `size` bytes, POST+PUT each, `concurrency` at a time.
    pub(super) async fn push_many(
        &mut self,
        scenario: Scenario,
        count: usize,
        size: u64,
        concurrency: usize,
    ) -> Outcome {
        let repo = Arc::new(self.repo(scenario));
        let specs: Vec<BlobSpec> = (0..count as u64)
            .map(|i| self.spec(scenario, i, size))
            .collect();
        // Content and digests are made before the clock starts.
        let blobs: Arc<Vec<(Bytes, String)>> = Arc::new(
            tokio::task::spawn_blocking(move || {
                specs
                    .into_iter()
                    .map(|s| {
                        let b = s.to_bytes();
                        let d = data::sha256(&b);
                        (b, d)
                    })
                    .collect()
            })
            .await
            .expect("generating blobs"),
        );
        let pb = self.bar(scenario, Some(count as u64), Unit::Ops);
        let next = Arc::new(AtomicUsize::new(0));
        let meter = self.meter();
        let mut workers = Vec::new();
        for _ in 0..concurrency.clamp(1, count.max(1)) {
            let (client, repo, blobs, next, pb) = (
                self.client.clone(),
                repo.clone(),
                blobs.clone(),
                next.clone(),
                pb.clone(),
            );
            workers.push(tokio::spawn(async move {
                let mut lat = Latencies::default();
                let mut ok = Vec::new();
                let mut errors = Vec::new();
                loop {
                    let i = next.fetch_add(1, Ordering::Relaxed);
                    if i >= blobs.len() {
                        break;
                    }
                    let (body, digest) = &blobs[i];
                    let t = Instant::now();
                    match client.push_bytes(&repo, body.clone(), digest).await {
                        Ok(()) => ok.push(i),
                        Err(e) => errors.push(e),
                    }
                    lat.push_ms(t.elapsed());
                    pb.inc(1);
                }
                (lat, ok, errors)
            }));
        }
        let mut outcome = Outcome::default();
        let mut ok_all = Vec::new();
        for w in workers {
            match w.await {
                Ok((lat, ok, errors)) => {
                    outcome.latencies.extend(lat);
                    ok_all.extend(ok);
                    outcome.errors.extend(errors);
                }
                Err(e) => outcome.errors.push(OpError(format!("worker: {e}"))),
            }
        }
        outcome.measured = meter.finish();
        pb.finish_and_clear();
        outcome.ops = count as u64;
        outcome.bytes = count as u64 * size;
        for i in ok_all {
            self.pushed.push(Pushed {
                repo: repo.to_string(),
                digest: blobs[i].1.clone(),
                size,
            });
        }
        outcome
    }

    /// `--concurrent-count` blobs of `--concurrent-size`, each pushed in `--concurrent-chunk`
    /// PATCHes, all uploads in flight at once.
    pub(super) async fn push_concurrent(&mut self) -> Outcome {
        let scenario = Scenario::PushChunkedConcurrent;
        let (count, size, chunk) = (
            self.args.concurrent_count.max(1),
            self.args.concurrent_size,
            self.args.concurrent_chunk,
        );
        let repo = Arc::new(self.repo(scenario));
        let specs: Vec<BlobSpec> = (0..count as u64)
            .map(|i| self.spec(scenario, i, size))
            .collect();
        let digests: Vec<String> = tokio::task::spawn_blocking({
            let specs = specs.clone();
            move || specs.iter().map(BlobSpec::digest).collect()
        })
        .await
        .expect("hashing");
        let pb = self.bar(scenario, Some(count as u64 * size), Unit::Bytes);
        let meter = self.meter();
        let mut tasks = Vec::new();
        for (spec, digest) in specs.into_iter().zip(digests) {
            let (client, repo, tick) = (self.client.clone(), repo.clone(), tick(&pb));
            tasks.push(tokio::spawn(async move {
                let t = Instant::now();
                let r = client.push_chunked(&repo, spec, &digest, chunk, tick).await;
                (r, t.elapsed(), digest)
            }));
        }
        let mut outcome = Outcome::default();
        for task in tasks {
            match task.await {
                Ok((r, elapsed, digest)) => {
                    outcome.latencies.push_ms(elapsed);
                    match r {
                        Ok(()) => self.pushed.push(Pushed {
                            repo: repo.to_string(),
                            digest,
                            size,
                        }),
                        Err(e) => outcome.errors.push(e),
                    }
                }
                Err(e) => outcome.errors.push(OpError(format!("upload task: {e}"))),
            }
        }
        outcome.measured = meter.finish();
        pb.finish_and_clear();
        outcome.ops = count as u64;
        outcome.bytes = count as u64 * size;
        outcome.note = Some(format!(
            "{count} uploads of {} MiB in {} MiB PATCHes, all in flight",
            size >> 20,
            chunk >> 20
        ));
        outcome
    }
}
