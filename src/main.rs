//! The `berth` command line.

use std::collections::HashMap;
use std::ffi::OsString;
use std::path::{Path, PathBuf};
use std::process::ExitCode;

use clap::{CommandFactory, Parser, Subcommand};

use berth::config::{Config, Driver};

#[derive(Parser)]
#[command(
    name = "berth",
    version,
    about = "A fast, resumable OCI container registry",
    after_help = "As registry:2's entrypoint: `berth CONFIG.yml` (a configuration file as the only \
                  argument) means `berth serve CONFIG.yml`."
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Serve the registry. Without CONFIG, the file $REGISTRY_CONFIGURATION_PATH names (set in
    /// the container image), else ./config.yml if present, else the built-in default
    /// (filesystem storage under ./data, listening on 127.0.0.1:5000).
    Serve {
        /// Configuration file in CNCF distribution's layout.
        config: Option<PathBuf>,
    },
    /// Exit 0 if the registry this configuration describes answers GET /v2/ with 200 or 401, 1
    /// otherwise (the container image's HEALTHCHECK). CONFIG as for `serve`.
    Healthcheck { config: Option<PathBuf> },
    /// Load-generate against a registry over HTTP(S) and report throughput and latency; with
    /// --report, compare two registries from saved JSON lines.
    Bench(Box<berth::bench::BenchArgs>),
    /// Make a private CA and a server certificate with subjectAltName for `http.tls`, and print
    /// where docker, podman/skopeo and the system look for the CA.
    Certs(berth::certs::CertsArgs),
    /// Add, change or remove a user of an htpasswd file (bcrypt), as `htpasswd -B` does.
    Htpasswd(berth::auth::htpasswd::HtpasswdArgs),
    /// Remove blobs and manifests that nothing references (safe while the registry serves).
    GarbageCollect(berth::gc::GcArgs),
}

fn main() -> ExitCode {
    // It names the file and sets no key: taken out of the environment before anything runs, so
    // that the configuration loaders, which read every REGISTRY_* variable, never see it.
    let named = std::env::var_os(CONFIG_PATH_VAR)
        .filter(|p| !p.is_empty())
        .map(PathBuf::from);
    std::env::remove_var(CONFIG_PATH_VAR);
    let cli = Cli::parse_from(registry_style(std::env::args_os().collect()));
    match cli.command {
        Command::Serve { config } => serve(config_or_default(config, named)),
        Command::Healthcheck { config } => {
            let env = std::env::vars().collect();
            berth::healthcheck::run(config_or_default(config, named).as_deref(), &env)
        }
        Command::Bench(args) => berth::bench::run(*args),
        Command::Certs(args) => berth::certs::run(args),
        Command::Htpasswd(args) => berth::auth::htpasswd::run(args),
        Command::GarbageCollect(mut args) => {
            args.config = args.config.or(named);
            berth::gc::run(args)
        }
    }
}

/// registry:2's entrypoint turns `registry CONFIG.yml` into `registry serve CONFIG.yml`; so does
/// berth, for a single argument that is no subcommand or flag and names a file (or a `.yml`
/// or `.yaml` path, so that a missing one is reported by `serve` as such).
fn registry_style(mut args: Vec<OsString>) -> Vec<OsString> {
    if let [_, only] = args.as_slice() {
        let text = only.to_string_lossy();
        let is_subcommand = Cli::command().find_subcommand(only).is_some();
        let looks_like_config =
            text.ends_with(".yml") || text.ends_with(".yaml") || Path::new(only).is_file();
        if !is_subcommand && !text.starts_with('-') && looks_like_config {
            args.insert(1, "serve".into());
        }
    }
    args
}

/// distribution's variable naming the configuration file when no argument does. The image sets
/// it, so that `serve`, `healthcheck` and `garbage-collect` without arguments read the image's
/// file.
const CONFIG_PATH_VAR: &str = "REGISTRY_CONFIGURATION_PATH";

/// The configuration file: the argument, else the one $REGISTRY_CONFIGURATION_PATH `named`, else
/// ./config.yml if present, else none (the built-in default).
fn config_or_default(path: Option<PathBuf>, named: Option<PathBuf>) -> Option<PathBuf> {
    path.or(named).or_else(|| {
        let default = PathBuf::from("config.yml");
        default.exists().then_some(default)
    })
}

/// Fails with the directory's name when local storage cannot be written: otherwise berth would
/// start, answer pulls, and fail every push (a container volume owned by another user).
fn check_writable(config: &Config) -> Result<(), String> {
    let readonly = config.storage.maintenance.readonly.enabled;
    let Some(fs) = config.storage.filesystem.as_ref() else {
        return Ok(());
    };
    if config.driver != Driver::Filesystem || readonly {
        return Ok(());
    }
    let root = &fs.rootdirectory;
    let probe = root.join(format!(".berth-write-check-{}", std::process::id()));
    let result = std::fs::create_dir_all(root).and_then(|()| std::fs::write(&probe, b""));
    let _ = std::fs::remove_file(&probe);
    result.map_err(|e| {
        // SAFETY: geteuid and getegid cannot fail and touch no memory.
        let (uid, gid) = unsafe { (libc::geteuid(), libc::getegid()) };
        format!(
            "the storage directory {} (storage.filesystem.rootdirectory) is not writable by \
             uid {uid} gid {gid}: {e}; make it writable by that user (e.g. chown {uid}:{gid} on \
             the host directory mounted there) or run berth as a user who can write to it",
            root.display()
        )
    })
}

fn serve(path: Option<PathBuf>) -> ExitCode {
    // Warnings from loading the configuration are written once the log's format is known.
    berth::logging::early();
    let env: HashMap<String, String> = std::env::vars().collect();
    let config = match Config::load(path.as_deref(), &env) {
        Ok(c) => c,
        Err(e) => {
            eprintln!("berth: {e}");
            return ExitCode::from(2);
        }
    };
    berth::logging::init(&config.log);
    if let Err(e) = check_writable(&config) {
        log::error!("{e}");
        return ExitCode::FAILURE;
    }
    let source = path.map_or_else(
        || "built-in default".to_string(),
        |p| p.display().to_string(),
    );
    let result = actix_web::rt::System::new().block_on(async move {
        let storage = berth::storage::Storage::open_coordinated(&config).await?;
        log::info!("configuration: {source}; storage: {}", storage.describe());
        let bound = berth::server::bind(&config, storage)?;
        let scheme = if config.http.tls.is_some() {
            "https"
        } else {
            "http"
        };
        for addr in &bound.addrs {
            log::info!("listening on {scheme}://{addr}");
        }
        for addr in &bound.debug_addrs {
            log::info!("debug listener (metrics, health) on http://{addr}");
        }
        let addr = bound.addrs[0];
        // Until SIGTERM/SIGINT, then drains and runs the shutdown hooks.
        berth::server::run(bound)
            .await
            .map_err(|e| berth::server::ServerError::Bind { addr, source: e })
    });
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("berth: {e}");
            ExitCode::FAILURE
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn args(list: &[&str]) -> Vec<String> {
        registry_style(list.iter().map(OsString::from).collect())
            .into_iter()
            .map(|a| a.into_string().unwrap())
            .collect()
    }

    #[test]
    fn a_config_file_alone_is_served_as_registry_2_does() {
        assert_eq!(
            args(&["berth", "/etc/x.yml"]),
            ["berth", "serve", "/etc/x.yml"]
        );
        assert_eq!(args(&["berth", "c.yaml"]), ["berth", "serve", "c.yaml"]);
        let file = std::env::current_exe().unwrap();
        let file = file.to_str().unwrap();
        assert_eq!(args(&["berth", file]), ["berth", "serve", file]);
        // Subcommands, flags and other words are left to clap.
        assert_eq!(args(&["berth", "serve"]), ["berth", "serve"]);
        assert_eq!(args(&["berth", "--version"]), ["berth", "--version"]);
        assert_eq!(args(&["berth", "nonsense"]), ["berth", "nonsense"]);
        assert_eq!(
            args(&["berth", "serve", "a.yml"]),
            ["berth", "serve", "a.yml"]
        );
    }
}
