//! Reads right after a write: `pull-after-push` pushes a fresh blob of `--blob-size` (monolithic,
//! untimed, its milliseconds kept as the `push` phase) and at once GETs it hashed, the timed part;
//! `pull-again` GETs the same blob a second time.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Instant;

use crate::bench::client::OpError;

use super::{digest_of, failed, Context, Outcome, Pushed, Scenario};

impl Context<'_> {
    pub(super) async fn pull_after_push(&mut self) -> Outcome {
        let scenario = Scenario::PullAfterPush;
        let (target, push_ms) = match self.push_new(scenario).await {
            Ok(p) => p,
            Err(e) => return failed("push", e),
        };
        self.fresh = Some(target.clone());
        let mut outcome = self.timed_get(scenario, &target, true).await;
        outcome.phases_ms = Some(BTreeMap::from([("push".to_string(), push_ms)]));
        outcome
    }

    /// The blob of `pull-after-push` again (pushed now, untimed, if it did not run).
    pub(super) async fn pull_again(&mut self) -> Outcome {
        let target = match self.fresh.clone() {
            Some(t) => t,
            None => match self.push_new(Scenario::PullAgain).await {
                Ok((t, _)) => t,
                Err(e) => return failed("push", e),
            },
        };
        self.timed_get(Scenario::PullAgain, &target, true).await
    }

    /// Pushes a new blob of `--blob-size` in one PUT (for verify too); it and the push's
    /// milliseconds.
    pub(super) async fn push_new(&mut self, scenario: Scenario) -> Result<(Pushed, f64), OpError> {
        let size = self.args.blob_size;
        let repo = self.repo(scenario);
        let spec = self.spec(scenario, 0, size);
        let digest = digest_of(spec).await;
        let t = Instant::now();
        self.client
            .push_monolithic(&repo, spec, &digest, Arc::new(|_| {}))
            .await
            .map_err(|e| OpError(format!("pushing the blob: {e}")))?;
        let push_ms = t.elapsed().as_secs_f64() * 1000.0;
        let p = Pushed { repo, digest, size };
        self.pushed.push(p.clone());
        Ok((p, push_ms))
    }
}
