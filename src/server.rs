//! Builds the storage, the registry and the HTTP server from a [`Config`].

use std::net::SocketAddr;

use actix_web::middleware::{DefaultHeaders, Logger};
use actix_web::{web, App, HttpServer};
use thiserror::Error;

use crate::api::{self, AppState, Urls, API_VERSION_HEADER};
use crate::auth::Auth;
use crate::cache::DescriptorCache;
use crate::config::{Config, Driver};
use crate::registry::{Options, Registry};
use crate::storage::{Storage, StorageError};

#[derive(Debug, Error)]
pub enum ServerError {
    #[error(transparent)]
    Config(#[from] crate::config::ConfigError),
    #[error(transparent)]
    Auth(#[from] crate::auth::AuthError),
    #[error("blob-descriptor cache: {0}")]
    Cache(String),
    #[error("cannot open storage: {0}")]
    Storage(#[from] StorageError),
    #[error("cannot set up TLS: {0}")]
    Tls(#[from] crate::tls::TlsError),
    #[error("cannot listen on {addr}: {source}")]
    Bind {
        addr: SocketAddr,
        source: std::io::Error,
    },
}

/// Opens the configured storage backend.
pub fn open_storage(config: &Config) -> Result<Storage, StorageError> {
    match config.driver {
        Driver::InMemory => Ok(Storage::in_memory()),
        Driver::S3 => Storage::s3(
            config
                .storage
                .s3
                .as_ref()
                .expect("config loading checks the s3 section"),
        ),
        Driver::Filesystem => {
            let fs = config
                .storage
                .filesystem
                .clone()
                .expect("config loading fills in the filesystem section");
            Storage::filesystem(fs.rootdirectory, fs.fsync)
        }
    }
}

/// Removes abandoned uploads now and then (`storage.maintenance.uploadpurging`), as distribution
/// does: a first pass shortly after start, then one every `interval`.
fn start_upload_purging(config: &Config, registry: &Registry) {
    let purging = config.storage.maintenance.uploadpurging.clone();
    if !purging.enabled {
        return;
    }
    let uploads = registry.uploads().clone();
    actix_web::rt::spawn(async move {
        // Not at once: a fleet restarting together should not list the bucket together.
        let first = std::time::Duration::from_secs(30 + rand_below(60));
        actix_web::rt::time::sleep(first.min(purging.interval)).await;
        loop {
            match uploads.purge(purging.age, purging.dryrun).await {
                Ok(0) => {}
                Ok(n) => log::info!("upload purging: {n} abandoned upload(s)"),
                Err(e) => log::warn!("upload purging failed: {e}"),
            }
            actix_web::rt::time::sleep(purging.interval).await;
        }
    });
}

/// A number below `n` that differs between processes (no need for a real random source).
fn rand_below(n: u64) -> u64 {
    u64::from(std::process::id()) % n.max(1)
}

/// A bound, not yet running server. Must be created inside a running actix system.
pub struct Bound {
    pub server: actix_web::dev::Server,
    pub addrs: Vec<SocketAddr>,
}

/// Builds and binds the server for `config`.
pub fn bind(config: &Config, storage: Storage) -> Result<Bound, ServerError> {
    let addr = config.http.socket_addr()?;
    let hashing_threads = std::thread::available_parallelism().map_or(2, |n| n.get());
    let mut registry = Registry::new(
        storage,
        Options {
            delete_enabled: config.storage.delete.enabled,
            redirect: !config.storage.redirect.disable,
        },
        hashing_threads,
    );
    if let Some(cache) = DescriptorCache::from_config(config).map_err(ServerError::Cache)? {
        log::info!("blob-descriptor cache: {}", cache.describe());
        registry = registry.with_cache(cache);
    }
    let read_only = config.storage.maintenance.readonly.enabled;
    if read_only {
        log::info!("read-only mode: pushes and deletes are refused, upload purging is off");
    } else {
        start_upload_purging(config, &registry);
    }
    let auth = Auth::from_config(&config.auth)?;
    match &auth {
        Some(auth) => log::info!("authentication: {}", auth.describe()),
        None => log::warn!("no authentication configured: anybody who can reach berth may push"),
    }
    let state = web::Data::new(AppState {
        registry,
        urls: Urls {
            host: config.http.host.clone(),
            relative: config.http.relativeurls,
        },
        auth,
        read_only,
        body_idle: config.http.bodyidletimeout,
    });
    let access_log = !config.log.accesslog.disabled;
    let server = HttpServer::new(move || {
        App::new()
            .app_data(state.clone())
            .wrap(DefaultHeaders::new().add(API_VERSION_HEADER))
            // The access log names method, path, status, size and time; never headers, so
            // credentials cannot reach it.
            .wrap(
                Logger::new(r#"%a "%r" %s %b %Dms"#)
                    .log_target("berth::access")
                    .exclude_regex(if access_log { "^$" } else { ".*" }),
            )
            .configure(api::configure)
    })
    // Responses are written as headers then body; with Nagle's algorithm on, the body of a small
    // response on a kept-alive connection waits for the client's delayed ACK (~40 ms).
    .on_connect(|conn, _| {
        if let Some(tcp) = conn.downcast_ref::<actix_web::rt::net::TcpStream>() {
            let _ = tcp.set_nodelay(true);
        }
    });
    let server = match &config.http.tls {
        Some(tls) => {
            let tls = crate::tls::Tls::load(tls)?;
            let acceptor = tls.acceptor()?;
            tls.reload_on_sighup()?;
            server.bind_openssl(addr, acceptor)
        }
        None => server.bind(addr),
    }
    .map_err(|source| ServerError::Bind { addr, source })?;
    let addrs = server.addrs();
    Ok(Bound {
        server: server.run(),
        addrs,
    })
}
