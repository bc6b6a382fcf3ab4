//! `berth garbage-collect`: mark every blob reachable from a tag or manifest, sweep the rest.
//! (Being written.)

use std::path::PathBuf;
use std::process::ExitCode;

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
}

pub fn run(_args: GcArgs) -> ExitCode {
    eprintln!("berth garbage-collect: not written yet");
    ExitCode::FAILURE
}
