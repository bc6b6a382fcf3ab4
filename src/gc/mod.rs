//! `berth garbage-collect`: mark every blob reachable from a tag or manifest, sweep the rest —
//! safely while registries keep serving pushes on the same storage.
//!
//! **Mark** ([`mark::MarkSet`]). One listing ([`inventory::Inventory`]) of every blob and every
//! link file with its modification time. Roots, per repository: what each tag's `current` link
//! holds; every manifest revision (all of them without `--delete-untagged`); and every revision,
//! tag or referrer link written after the *cutoff* (the run's start minus `--grace`, default
//! 1 h). From a root: the manifest's own blob, its config and layers (also schema1 `fsLayers`,
//! artifact `blobs`), an index's child manifests (recursively, kept in that repository), and
//! every manifest of the repository whose `subject` is a kept manifest (signatures, SBOMs and
//! other artifacts attached to a kept image survive). A blob with a `_layers` link written after
//! the cutoff is kept too (its push is under way), and so is any blob whose data is younger.
//!
//! **Plan** ([`sweep::SweepPlan`]): blobs neither marked nor young, the `_layers` links to them,
//! and with `--delete-untagged` the untagged, old manifest revisions of each repository (with
//! their tag index entries and referrer links). `--dry-run` prints it and stops.
//!
//! **One at a time.** A run (not a dry run) holds the collector's lock on the storage
//! (`storage::gc_lock`: an OFD lock on local disk, a renewed lease on object stores, and a Redis
//! key beside it where uploads are locked in Redis) from its recovery to its end, and checks it
//! before every item it removes; a second run is refused ([`GcError::Busy`], exit code [`EXIT_BUSY`]),
//! told which process holds it and when its lock expires. Two sweeps at once could otherwise
//! each set half of an image aside and, not finding the other half, delete it.
//!
//! **Sweep** ([`sweep::Sweeper`]), built so that no race with a registry serving pushes ends in a
//! stored manifest that references missing content:
//! 1. Each link is removed only after checking (HEAD) it is still older than the cutoff; a
//!    candidate blob with a link written meanwhile is kept, with its links. The links of each
//!    item are journalled under `_berth/gc/<run>/journal/` before they are removed
//!    ([`journal`]).
//! 2. Blob data is not deleted but moved aside to `_berth/gc/<run>/…` (the set-aside blob is
//!    invisible: a pull of it, or a manifest push that needs it, fails meanwhile).
//! 3. Then everything is listed and marked again with the same cutoff, so every manifest, tag
//!    and link written since the run started is a root. What this second mark keeps is put back
//!    (data moved back, removed links written again); only the rest is deleted, data last.
//! 4. On the registry's side (`Registry::put_manifest`), a manifest push writes its revision
//!    link and tags first and *then* checks again that its blobs, child manifests and own bytes
//!    are still there. Either that check runs after a blob was moved aside (the push fails with
//!    `MANIFEST_BLOB_UNKNOWN` and the client retries; the second mark sees the revision link and
//!    puts the blob back anyway), or it ran before, and then the revision link was written
//!    before the move, so the second mark sees it. Likewise a tag written for a revision link
//!    the sweep removed: the push re-writes a missing revision link after writing its tags, or
//!    the second mark sees the tag.
//! 5. Uploads in progress live under `_berth/uploads/` (never looked at); an upload committed
//!    during the run writes fresh blob data or a fresh `_layers` link, both younger than the
//!    cutoff. An upload of a blob already stored, and a mount, only write the link: they too
//!    check the data after writing it (`Registry::complete_upload`, `mount_blob`), so either
//!    they report failure (`BLOB_UNKNOWN`; a mount falls back to an upload) or the second mark
//!    sees their link.
//! 6. A run that stopped half-way (killed, or its store failing) leaves data and journal
//!    entries under `_berth/gc/`; the next run first moves all the data back and replays the
//!    journals, writing back every removed link whose data is there ([`journal::recover`]).
//!    Putting back never stops at a failure: every item is tried, failures are reported
//!    together ([`GcError::Incomplete`]), and what failed stays journalled for the next run.
//!
//! What is guaranteed: content reachable from a root at any moment of the run (a tag, a manifest
//! revision unless `--delete-untagged`, anything younger than the grace period) is never deleted;
//! a blob upload, mount or manifest push the registry answered with success during the run keeps
//! everything it stored or linked (for as long as the grace period, if nothing references it).
//! What is not: a pull of a blob that was unreferenced when the run started and is being
//! referenced again just now may fail for the few seconds it is set aside, as may the push doing
//! so (it can be retried). The grace period protects pushes that are slower than the run (a blob
//! uploaded but not yet referenced by a manifest); it must exceed the longest push, and on
//! object stores cover the clock difference to the server.
//!
//! Unlike distribution 2.8.2, `--delete-untagged` keeps the child manifests of a tagged index, and
//! the registry need not be read-only.

pub mod error;
pub mod inventory;
pub mod journal;
pub mod mark;
pub mod sweep;

use std::io::IsTerminal;
use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Duration;

use crate::oci::Digest;
use crate::storage::{GcLock, GcLockAttempt, Storage};
pub use error::GcError;
use inventory::Inventory;
use journal::Recovered;
use mark::{ManifestReader, MarkSet, Options};
use sweep::{Outcome, SweepPlan, Sweeper};

/// The exit code of a collection refused because another one runs (`EX_TEMPFAIL`: try later).
pub const EXIT_BUSY: u8 = 75;

/// Remove blobs and manifests nothing references.
#[derive(Debug, clap::Args)]
pub struct GcArgs {
    /// Configuration file (distribution's layout); ./config.yml or the built-in default without.
    pub config: Option<PathBuf>,
    /// Report what would be removed, remove nothing.
    #[arg(long, short = 'd')]
    pub dry_run: bool,
    /// Also remove manifests no tag reaches (and what only they reference).
    #[arg(long, short = 'm')]
    pub delete_untagged: bool,
    /// Keep anything written more recently than this (pushes in progress): e.g. 1h, 30m, 90s, 0s.
    #[arg(long, default_value = "1h", value_parser = parse_duration)]
    pub grace: Duration,
}

/// Parses `1h`, `30m`, `90s`, `500ms`, `2d`, or plain seconds.
pub fn parse_duration(s: &str) -> std::result::Result<Duration, String> {
    let s = s.trim();
    let split = s.find(|c: char| !c.is_ascii_digit()).unwrap_or(s.len());
    let (number, unit) = s.split_at(split);
    let n: u64 = number
        .parse()
        .map_err(|_| format!("{s:?} is not a duration such as 1h, 30m or 90s"))?;
    let secs = match unit {
        "ms" => return Ok(Duration::from_millis(n)),
        "" | "s" => 1,
        "m" => 60,
        "h" => 3600,
        "d" => 86400,
        _ => return Err(format!("unknown unit {unit:?} in {s:?} (ms, s, m, h, d)")),
    };
    Ok(Duration::from_secs(n * secs))
}

/// One garbage collection over a storage.
#[derive(Debug, Clone)]
pub struct Collector {
    pub storage: Storage,
    pub delete_untagged: bool,
    pub grace: Duration,
    pub dry_run: bool,
}

/// What a collection found and did.
#[derive(Debug)]
pub struct Report {
    pub plan: SweepPlan,
    /// `None` on a dry run.
    pub outcome: Option<Outcome>,
    /// What previous, interrupted runs had set aside or unlinked, put back first.
    pub recovered: Recovered,
    /// Manifests something references whose bytes are nowhere (left alone; reported).
    pub missing_manifests: Vec<Digest>,
}

impl Collector {
    /// Marks, plans, and (unless a dry run) sweeps. `progress` is called once per item swept,
    /// with `plan` first given through `on_plan`.
    pub async fn run(
        &self,
        on_plan: &(dyn Fn(&SweepPlan) + Sync),
        progress: &(dyn Fn(&str) + Sync),
    ) -> Result<Report, GcError> {
        // A dry run changes nothing, so it needs no lock (its listing may show what a running
        // collection has set aside as missing).
        let lock = if self.dry_run {
            None
        } else {
            match self.storage.lock_gc().await? {
                GcLockAttempt::Held(lock) => Some(lock),
                GcLockAttempt::Busy(holder) => return Err(GcError::Busy(holder)),
            }
        };
        let report = self.run_locked(lock.as_ref(), on_plan, progress).await;
        if let Some(lock) = lock {
            lock.release().await;
        }
        report
    }

    async fn run_locked(
        &self,
        lock: Option<&GcLock>,
        on_plan: &(dyn Fn(&SweepPlan) + Sync),
        progress: &(dyn Fn(&str) + Sync),
    ) -> Result<Report, GcError> {
        let start = chrono::Utc::now();
        let cutoff = chrono::Duration::from_std(self.grace)
            .ok()
            .and_then(|g| start.checked_sub_signed(g))
            .unwrap_or(chrono::DateTime::<chrono::Utc>::MIN_UTC);
        let opts = Options {
            delete_untagged: self.delete_untagged,
            cutoff,
        };
        let recovered = if self.dry_run {
            Recovered::default()
        } else {
            journal::recover(&self.storage).await?
        };
        let inv = Inventory::scan(&self.storage).await?;
        let mut reader = ManifestReader::new(self.storage.clone())
            .with_quarantines()
            .await?;
        let marks = MarkSet::mark(&self.storage, &inv, &opts, &mut reader).await?;
        let plan = SweepPlan::new(&inv, &marks, &opts);
        on_plan(&plan);
        let missing_manifests = reader.missing.iter().cloned().collect();
        if self.dry_run || plan.is_empty() {
            return Ok(Report {
                outcome: (!self.dry_run).then(Outcome::default),
                plan,
                recovered,
                missing_manifests,
            });
        }
        pause_after("plan").await;
        let run = format!(
            "{}-{}",
            start.format("%Y%m%dT%H%M%S"),
            uuid::Uuid::new_v4().simple()
        );
        let sweeper = Sweeper {
            storage: &self.storage,
            opts: &opts,
            run,
            progress,
            lock,
            #[cfg(test)]
            before_move: None,
        };
        let outcome = sweeper.sweep(&plan).await?;
        Ok(Report {
            plan,
            outcome: Some(outcome),
            recovered,
            missing_manifests,
        })
    }
}

/// **Test-only hook**, for tests that must stop or kill a collection at a known point (the
/// integration tests in `tests/gc.rs`): with `BERTH_GC_PAUSE_AFTER` listing `phase` (comma
/// separated: `plan`, `set-aside`), the collection prints `garbage-collect: paused after
/// <phase>` on standard error and waits for a line (or the end) of its standard input. Not a
/// configuration setting; nothing else reads it.
pub(crate) async fn pause_after(phase: &str) {
    let Ok(phases) = std::env::var("BERTH_GC_PAUSE_AFTER") else {
        return;
    };
    if !phases.split(',').any(|p| p.trim() == phase) {
        return;
    }
    eprintln!("garbage-collect: paused after {phase}");
    let _ = tokio::task::spawn_blocking(|| {
        let mut line = String::new();
        std::io::stdin().read_line(&mut line)
    })
    .await;
}

/// Prints the per-item list of a plan (`--dry-run`), in distribution's wording.
fn print_plan(plan: &SweepPlan) {
    for m in &plan.manifests {
        println!("manifest eligible for deletion: {}@{}", m.repo, m.digest);
    }
    for b in &plan.blobs {
        println!(
            "blob eligible for deletion: {} ({} bytes)",
            b.digest, b.size
        );
    }
    for (d, repos) in &plan.layer_links {
        for repo in repos {
            println!("layer link eligible for deletion: {repo} {d}");
        }
    }
}

fn print_summary(report: &Report) {
    let r = report.recovered;
    if r.blobs + r.links > 0 {
        println!(
            "recovered: {} blobs and {} links an interrupted run had set aside or removed",
            r.blobs, r.links
        );
    }
    for d in &report.missing_manifests {
        eprintln!("warning: manifest {d} is referenced but its bytes are missing");
    }
    match &report.outcome {
        None => {
            let p = &report.plan;
            println!("manifests: {} would be removed", p.manifests.len());
            println!(
                "blobs: {} would be removed, {} bytes",
                p.blobs.len(),
                p.blob_bytes()
            );
            println!("layer links: {} would be removed", p.layer_link_count());
        }
        Some(o) => {
            println!("manifests: {} removed", o.manifests.len());
            println!("blobs: {} removed, {} bytes", o.blobs.len(), o.blob_bytes());
            println!("layer links: {} removed", o.layer_links);
            if o.skipped + o.restored > 0 {
                println!(
                    "kept: {} items written or referenced again during the run ({} put back)",
                    o.skipped + o.restored,
                    o.restored
                );
            }
        }
    }
}

pub fn run(args: GcArgs) -> ExitCode {
    let path = args.config.clone().or_else(|| {
        let default = PathBuf::from("config.yml");
        default.exists().then_some(default)
    });
    let env: std::collections::HashMap<String, String> = std::env::vars().collect();
    // The configuration's warnings (unknown keys) are kept until the log is set up.
    crate::logging::early();
    let config = match crate::config::Config::load(path.as_deref(), &env) {
        Ok(c) => c,
        Err(e) => {
            eprintln!("berth: {e}");
            return ExitCode::from(2);
        }
    };
    crate::logging::init(&config.log);
    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
    {
        Ok(r) => r,
        Err(e) => {
            eprintln!("berth: cannot start the runtime: {e}");
            return ExitCode::FAILURE;
        }
    };
    let result = runtime.block_on(async {
        // A dry run takes no lock, so it leaves the store alone (no probe of how uploads are
        // locked) and needs no Redis.
        let storage = if args.dry_run {
            crate::storage::Storage::open(&config)
        } else {
            crate::storage::Storage::open_coordinated(&config).await
        }
        .map_err(GcError::from)?;
        eprintln!(
            "garbage-collect: {}{}{}, grace {:?}",
            storage.describe(),
            if args.delete_untagged {
                ", deleting untagged manifests"
            } else {
                ""
            },
            if args.dry_run { ", dry run" } else { "" },
            args.grace
        );
        let collector = Collector {
            storage,
            delete_untagged: args.delete_untagged,
            grace: args.grace,
            dry_run: args.dry_run,
        };
        let tty = std::io::stderr().is_terminal();
        let bar = indicatif::ProgressBar::hidden();
        let on_plan = |plan: &SweepPlan| {
            if args.dry_run {
                print_plan(plan);
                return;
            }
            let total = (plan.manifests.len() + plan.blobs.len()) as u64;
            if tty {
                bar.set_length(total);
                bar.set_style(
                    indicatif::ProgressStyle::with_template(
                        "{spinner} sweeping {pos}/{len} {wide_bar} {eta}",
                    )
                    .unwrap_or_else(|_| indicatif::ProgressStyle::default_bar()),
                );
                bar.set_draw_target(indicatif::ProgressDrawTarget::stderr());
            } else {
                eprintln!(
                    "garbage-collect: removing {} manifests, {} blobs ({} bytes)",
                    plan.manifests.len(),
                    plan.blobs.len(),
                    plan.blob_bytes()
                );
            }
        };
        let progress = |_: &str| bar.inc(1);
        let report = collector.run(&on_plan, &progress).await;
        bar.finish_and_clear();
        report
    });
    match result {
        Ok(report) => {
            print_summary(&report);
            ExitCode::SUCCESS
        }
        Err(e) => {
            eprintln!("berth garbage-collect: {e}");
            match e {
                GcError::Busy(_) => ExitCode::from(EXIT_BUSY),
                _ => ExitCode::FAILURE,
            }
        }
    }
}

#[cfg(test)]
mod tests;
