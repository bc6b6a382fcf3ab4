//! The resume scenarios (resume-100m, resume-2g): an upload left half done before a restart of
//! the registry, the resume file that carries it across (`--resume-file`), and its completion
//! after the restart (`--resume-phase`).

use std::collections::BTreeMap;
use std::path::Path;
use std::time::{Duration, Instant};

use crate::bench::client::OpError;
use crate::bench::data::BlobSpec;
use crate::bench::ResumePhase;

use super::{digest_of, failed, single, tick, Context, Outcome, Pushed, Scenario, Unit};

/// An upload left half done by a resume scenario's first half (`--resume-phase prepare`), saved
/// in `--resume-file` under the scenario's name for the second half, after the restart.
#[derive(Debug, Clone, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct ResumeState {
    /// The upload's URL as the registry last gave it (only path and query are used again).
    pub location: String,
    /// Bytes acknowledged before the restart.
    pub offset: u64,
    pub repo: String,
    /// The whole blob: its content seed, size and digest.
    pub blob_seed: u64,
    pub size: u64,
    pub digest: String,
}

/// Reads the resume file (a JSON object: scenario name → [`ResumeState`]); missing is empty.
pub fn load_resume_file(path: &Path) -> Result<BTreeMap<String, ResumeState>, String> {
    match std::fs::read_to_string(path) {
        Ok(text) => serde_json::from_str(&text).map_err(|e| format!("{}: {e}", path.display())),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(BTreeMap::new()),
        Err(e) => Err(format!("{}: {e}", path.display())),
    }
}

fn save_resume_state(path: &Path, name: &str, state: &ResumeState) -> Result<(), String> {
    let mut all = load_resume_file(path)?;
    all.insert(name.to_string(), state.clone());
    let text = serde_json::to_string_pretty(&all).expect("resume states serialise");
    std::fs::write(path, text).map_err(|e| format!("{}: {e}", path.display()))
}

/// The bytes sent after the restart: one PATCH, so the resume latency does not depend on `N`.
pub const RESUME_TAIL: u64 = 1 << 20;

impl Context<'_> {
    /// Resuming an upload: `N` bytes (100 MiB or 2 GiB) are PATCHed in `--resume-chunk` pieces
    /// and left unfinished; then (after the registry was restarted, with `--resume-phase`) the
    /// upload's status is asked (it must report `N`), the last MiB PATCHed and the upload
    /// completed (201, then read back by the verify pass). The headline is the resume latency:
    /// status plus the first PATCH accepted, which should not grow with `N`.
    pub(super) async fn resume(&mut self, scenario: Scenario) -> Outcome {
        let n = scenario.resume_size().expect("a resume scenario");
        let phase = self.args.resume_phase;
        let file = self.args.resume_file.clone();
        let name = scenario.name();
        let state = match phase {
            Some(ResumePhase::Finish) => {
                let loaded = file
                    .as_deref()
                    .ok_or_else(|| "--resume-phase finish needs --resume-file".to_string())
                    .and_then(load_resume_file)
                    .and_then(|mut all| {
                        all.remove(name)
                            .ok_or_else(|| format!("no saved upload for {name} in --resume-file"))
                    });
                match loaded {
                    Ok(s) => s,
                    Err(e) => return failed("finish", OpError(e)),
                }
            }
            _ => {
                let (outcome, state) = self.resume_prepare(scenario, n).await;
                let Some(state) = state else { return outcome };
                if phase == Some(ResumePhase::Prepare) {
                    let saved = file
                        .as_deref()
                        .ok_or_else(|| "--resume-phase prepare needs --resume-file".to_string())
                        .and_then(|f| save_resume_state(f, name, &state));
                    return match saved {
                        Ok(()) => outcome,
                        Err(e) => failed("prepare", OpError(e)),
                    };
                }
                state
            }
        };
        let mut outcome = self.resume_finish(scenario, &state).await;
        if phase.is_none() {
            outcome.phase = Some("no-restart");
        }
        outcome
    }

    async fn resume_prepare(
        &mut self,
        scenario: Scenario,
        n: u64,
    ) -> (Outcome, Option<ResumeState>) {
        let repo = self.repo(scenario);
        let spec = self.spec(scenario, 0, n + RESUME_TAIL);
        let digest = digest_of(spec).await;
        let pb = self.bar(scenario, Some(n), Unit::Bytes);
        let meter = self.meter();
        let c = &self.client;
        let result = async {
            let upload = c.start_upload(&repo).await?;
            c.patch_chunks(upload, spec, 0, n, self.args.resume_chunk, tick(&pb))
                .await
        }
        .await;
        let measured = meter.finish();
        pb.finish_and_clear();
        let mut outcome = single(n, measured, None);
        outcome.phase = Some("prepare");
        match result {
            Ok(location) => {
                let state = ResumeState {
                    location: location.to_string(),
                    offset: n,
                    repo,
                    blob_seed: spec.seed,
                    size: spec.size,
                    digest,
                };
                (outcome, Some(state))
            }
            Err(e) => {
                outcome.errors.push(e);
                (outcome, None)
            }
        }
    }

    async fn resume_finish(&mut self, scenario: Scenario, state: &ResumeState) -> Outcome {
        let spec = BlobSpec {
            seed: state.blob_seed,
            size: state.size,
        };
        let mut phases = BTreeMap::new();
        let mut outcome = Outcome {
            phase: Some("finish"),
            ops: 1,
            bytes: state.size - state.offset,
            ..Default::default()
        };
        let upload = match self.client.rebase(&state.location) {
            Ok(u) => u,
            Err(e) => return failed("finish", e),
        };
        let pb = self.bar(scenario, Some(state.size - state.offset), Unit::Bytes);
        let meter = self.meter();
        let c = &self.client;
        let ms = |t: Instant| t.elapsed().as_secs_f64() * 1000.0;
        let result: Result<(), OpError> = async {
            let t = Instant::now();
            let (offset, upload) = c.upload_status(upload).await?;
            phases.insert("status".to_string(), ms(t));
            if offset != state.offset {
                return Err(OpError(format!(
                    "GET upload status after the restart: {offset} bytes, expected {}",
                    state.offset
                )));
            }
            let t = Instant::now();
            let first = (state.size - offset).min(RESUME_TAIL);
            let upload = c
                .patch_chunk(upload, spec, offset, first, tick(&pb))
                .await?;
            phases.insert("first_patch".to_string(), ms(t));
            let upload = c
                .patch_chunks(
                    upload,
                    spec,
                    offset + first,
                    state.size,
                    RESUME_TAIL,
                    tick(&pb),
                )
                .await?;
            let t = Instant::now();
            c.complete_upload(upload, &state.digest).await?;
            phases.insert("complete".to_string(), ms(t));
            Ok(())
        }
        .await;
        outcome.measured = meter.finish();
        pb.finish_and_clear();
        if let (Some(&s), Some(&p)) = (phases.get("status"), phases.get("first_patch")) {
            phases.insert("resume".to_string(), s + p);
            outcome
                .latencies
                .push_ms(Duration::from_secs_f64((s + p) / 1000.0));
        }
        outcome.phases_ms = Some(phases);
        match result {
            Ok(()) => self.pushed.push(Pushed {
                repo: state.repo.clone(),
                digest: state.digest.clone(),
                size: state.size,
            }),
            Err(e) => {
                outcome.bytes = 0;
                outcome.errors.push(e);
            }
        }
        outcome
    }
}
