//! htpasswd users (bcrypt). (Being written.)

use std::path::PathBuf;
use std::process::ExitCode;

/// `berth htpasswd FILE USER`: the password is read from standard input (one line).
#[derive(Debug, clap::Args)]
pub struct HtpasswdArgs {
    /// The htpasswd file (created if missing).
    pub file: PathBuf,
    /// The user to add, change or (with --delete) remove.
    pub user: String,
    /// Remove the user instead.
    #[arg(long)]
    pub delete: bool,
}

pub fn run(_args: HtpasswdArgs) -> ExitCode {
    ExitCode::FAILURE
}
