//! The `berth` command line.

use std::collections::HashMap;
use std::path::PathBuf;
use std::process::ExitCode;

use clap::{Parser, Subcommand};

use berth::config::Config;

#[derive(Parser)]
#[command(
    name = "berth",
    version,
    about = "A fast, resumable OCI container registry"
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Serve the registry. Without CONFIG, ./config.yml is used if present, else the built-in
    /// default (filesystem storage under ./data, listening on 127.0.0.1:5000).
    Serve {
        /// Configuration file in CNCF distribution's layout.
        config: Option<PathBuf>,
    },
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
    let cli = Cli::parse();
    match cli.command {
        Command::Serve { config } => serve(config),
        Command::Bench(args) => berth::bench::run(*args),
        Command::Certs(args) => berth::certs::run(args),
        Command::Htpasswd(args) => berth::auth::htpasswd::run(args),
        Command::GarbageCollect(args) => berth::gc::run(args),
    }
}

fn serve(config_path: Option<PathBuf>) -> ExitCode {
    let path = config_path.or_else(|| {
        let default = PathBuf::from("config.yml");
        default.exists().then_some(default)
    });
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
    let source = path.map_or_else(
        || "built-in default".to_string(),
        |p| p.display().to_string(),
    );
    let result = actix_web::rt::System::new().block_on(async move {
        let storage = berth::server::open_storage(&config)?;
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
