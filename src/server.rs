//! Builds the storage, the registry and the HTTP server from a [`Config`].

use std::net::SocketAddr;
use std::time::{Duration, Instant};

use actix_tls::accept::openssl::TlsStream;
use actix_web::dev::ServerHandle;
use actix_web::http::header::{HeaderName, HeaderValue};
use actix_web::middleware::{from_fn, DefaultHeaders};
use actix_web::{web, App, HttpResponse, HttpServer};
use futures_util::future::LocalBoxFuture;
use thiserror::Error;

use crate::api::client::TrustedProxies;
use crate::api::observe::{observe, Observer};
use crate::api::{self, AppState, Urls, API_VERSION_HEADER};
use crate::auth::Auth;
use crate::cache::DescriptorCache;
use crate::config::{Config, DebugConfig, Driver};
use crate::connections::ConnectionLimiter;
use crate::health::Health;
use crate::metrics::Metrics;
use crate::notify::Notifier;
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
    #[error("cannot listen on {addr} (http.debug.addr): {source}")]
    DebugBind {
        addr: String,
        source: std::io::Error,
    },
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

/// Where undelivered notifications wait: `notifications.spooldir`, else beside the data on local
/// disk, else a local directory (S3), else nowhere (in-memory storage keeps nothing either).
pub fn notification_spool(config: &Config) -> Option<std::path::PathBuf> {
    if let Some(dir) = &config.notifications.spooldir {
        return Some(dir.clone());
    }
    match config.driver {
        Driver::Filesystem => config
            .storage
            .filesystem
            .as_ref()
            .map(|fs| fs.rootdirectory.join("_berth").join("notifications")),
        Driver::S3 => Some(std::path::PathBuf::from("berth-notifications")),
        Driver::InMemory => None,
    }
}

/// The notifier for `notifications.endpoints` (doing nothing without any).
fn start_notifier(config: &Config, port: u16) -> Notifier {
    if config.notifications.endpoints.is_empty() {
        return Notifier::disabled();
    }
    let spool = notification_spool(config);
    match &spool {
        Some(dir) => log::info!(
            "notifications: undelivered events wait in {}",
            dir.display()
        ),
        None => log::info!("notifications: undelivered events are kept in memory only"),
    }
    Notifier::start(&config.notifications, spool.as_deref(), port)
}

/// Something to do once the server has drained, before the process exits: it is given the
/// deadline by which it should be done (see [`run`]).
pub type ShutdownHook = Box<dyn FnOnce(Instant) -> LocalBoxFuture<'static, ()>>;

/// How long shutdown hooks get at least, however long the drain took.
pub const FLUSH_AT_LEAST: Duration = Duration::from_secs(5);

/// A bound, not yet running server. Must be created inside a running actix system.
pub struct Bound {
    pub server: actix_web::dev::Server,
    pub addrs: Vec<SocketAddr>,
    /// For [`Notifier::flush`] at shutdown and [`Notifier::stats`] for metrics.
    pub notifier: Notifier,
    /// The debug listener's addresses (`http.debug.addr`), already serving.
    pub debug_addrs: Vec<SocketAddr>,
    debug: Option<ServerHandle>,
    pub metrics: Metrics,
    pub health: Health,
    /// `http.draintimeout`
    pub drain: Duration,
    /// Run by [`run`] after the drain, in order, e.g. the notifier's
    /// `Box::new(move |deadline| Box::pin(async move { notifier.flush(deadline).await }))`.
    pub shutdown_hooks: Vec<ShutdownHook>,
    /// Told to stop reading request bodies just before the drain ends.
    uploads: crate::upload::UploadManager,
}

/// When, after the shutdown signal, bodies still streaming are cut (and recorded) by berth
/// itself: shortly before the drain ends and the workers, with their tasks, are stopped.
fn body_cutoff(drain: Duration) -> Duration {
    drain.saturating_sub(Duration::from_secs(1)).max(drain / 2)
}

/// The debug listener's address: distribution's `:5001` form means every interface.
fn debug_addr(config: &DebugConfig) -> String {
    if config.addr.starts_with(':') {
        format!("0.0.0.0{}", config.addr)
    } else {
        config.addr.clone()
    }
}

/// Starts the debug listener: Prometheus metrics and `/debug/health`.
fn start_debug(
    config: &DebugConfig,
    metrics: &Metrics,
    health: &Health,
) -> Result<(ServerHandle, Vec<SocketAddr>), ServerError> {
    let metrics = metrics.clone();
    let health = health.clone();
    let prometheus = config.prometheus.clone();
    let server = HttpServer::new(move || {
        let mut app = App::new();
        if prometheus.enabled {
            let metrics = metrics.clone();
            app = app.route(
                &prometheus.path,
                web::get().to(move || {
                    let text = metrics.render();
                    async move {
                        HttpResponse::Ok()
                            .content_type(prometheus::TEXT_FORMAT)
                            .body(text)
                    }
                }),
            );
        }
        let health = health.clone();
        app.route(
            "/debug/health",
            web::get().to(move || {
                let report = health.report();
                async move {
                    let mut response = if report["healthy"] == true {
                        HttpResponse::Ok()
                    } else {
                        HttpResponse::ServiceUnavailable()
                    };
                    response
                        .content_type("application/json")
                        .body(report.to_string())
                }
            }),
        )
    })
    .workers(1)
    .disable_signals();
    let addr = debug_addr(config);
    let server = server
        .bind(&addr)
        .map_err(|source| ServerError::DebugBind { addr, source })?;
    let addrs = server.addrs();
    let server = server.run();
    let handle = server.handle();
    actix_web::rt::spawn(server);
    Ok((handle, addrs))
}

/// Runs a bound server until SIGTERM or SIGINT, then shuts down gracefully: listeners close at
/// once (new connections are refused), requests in flight get `http.draintimeout` to finish, the
/// shutdown hooks run (with a deadline of the drain's end, at least [`FLUSH_AT_LEAST`] away), and
/// it returns. A second signal stops at once.
pub async fn run(bound: Bound) -> std::io::Result<()> {
    let Bound {
        server,
        debug,
        drain,
        shutdown_hooks,
        uploads,
        ..
    } = bound;
    let handle = server.handle();
    let signalled = std::rc::Rc::new(std::cell::Cell::new(None));
    let signal_time = signalled.clone();
    actix_web::rt::spawn(async move {
        use actix_web::rt::signal::unix::{signal, SignalKind};
        let (mut term, mut int) = match (
            signal(SignalKind::terminate()),
            signal(SignalKind::interrupt()),
        ) {
            (Ok(t), Ok(i)) => (t, i),
            (Err(e), _) | (_, Err(e)) => {
                log::error!("cannot listen for SIGTERM/SIGINT: {e}");
                return;
            }
        };
        let mut name = tokio::select! {
            _ = term.recv() => "SIGTERM",
            _ = int.recv() => "SIGINT",
        };
        signal_time.set(Some(Instant::now()));
        log::info!(
            "{name}: shutting down; no new connections, requests in flight have {drain:?} \
             (http.draintimeout)"
        );
        let graceful = handle.clone();
        actix_web::rt::spawn(async move { graceful.stop(true).await });
        actix_web::rt::spawn(async move {
            actix_web::rt::time::sleep(body_cutoff(drain)).await;
            uploads.stop_reading_bodies();
        });
        name = tokio::select! {
            _ = term.recv() => "SIGTERM",
            _ = int.recv() => "SIGINT",
        };
        log::warn!("{name} again: stopping now, requests in flight are cut");
        handle.stop(false).await;
    });
    server.await?;
    let started = signalled.get().unwrap_or_else(Instant::now);
    let deadline = (started + drain).max(Instant::now() + FLUSH_AT_LEAST);
    // The shutdown hooks: the notifier's flush goes here (registered in `bind`).
    for hook in shutdown_hooks {
        hook(deadline).await;
    }
    if let Some(debug) = debug {
        debug.stop(true).await;
    }
    log::info!("stopped");
    Ok(())
}

/// `http.headers`, one value per name: several values of a name are joined by commas, which
/// means the same in HTTP (a name is set once by the middleware).
fn joined_headers(
    http: &crate::config::HttpConfig,
) -> Result<Vec<(HeaderName, HeaderValue)>, ServerError> {
    let mut joined: Vec<(HeaderName, Vec<HeaderValue>)> = Vec::new();
    for (name, value) in http.extra_headers()? {
        match joined.iter_mut().find(|(n, _)| *n == name) {
            Some((_, values)) => values.push(value),
            None => joined.push((name, vec![value])),
        }
    }
    Ok(joined
        .into_iter()
        .map(|(name, values)| {
            let value = values
                .iter()
                .map(|v| v.as_bytes())
                .collect::<Vec<_>>()
                .join(&b", "[..]);
            let value = HeaderValue::from_bytes(&value).expect("valid values joined by commas");
            (name, value)
        })
        .collect())
}

/// Builds and binds the server for `config`.
pub fn bind(config: &Config, storage: Storage) -> Result<Bound, ServerError> {
    let addr = config.http.socket_addr()?;
    let metrics = Metrics::new();
    let health = Health::default();
    // Run by `run` after the drain, in order: the notifier's flush is pushed here.
    let mut shutdown_hooks: Vec<ShutdownHook> = Vec::new();
    if config.health.storagedriver.enabled {
        crate::health::start_storage_check(&health, storage.clone(), &config.health.storagedriver);
    }
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
        registry = registry.with_cache(cache.with_metrics(metrics.clone()));
    }
    let uploads = registry.uploads().clone();
    let registry_uploads = uploads.clone();
    metrics.set_upload_source(Box::new(move || uploads.sessions_in_memory()));
    let read_only = config.storage.maintenance.readonly.enabled;
    if read_only {
        log::info!("read-only mode: pushes and deletes are refused, upload purging is off");
    } else {
        start_upload_purging(config, &registry);
    }
    let auth = Auth::from_config(&config.auth)?;
    match &auth {
        Some(auth) => log::info!("authentication: {}", auth.describe()),
        None if addr.ip().is_loopback() => {
            log::info!("no authentication configured; only loopback can reach {addr}")
        }
        None => log::warn!(
            "no authentication configured and {addr} is not loopback: anybody who can reach \
             it may push (configure auth, or a proxy that authenticates)"
        ),
    }
    let notifier = start_notifier(config, addr.port());
    let notifier_handle = notifier.clone();
    if notifier.is_enabled() {
        let flushing = notifier.clone();
        shutdown_hooks.push(Box::new(move |deadline: Instant| {
            Box::pin(async move {
                // Undelivered events are safe in the spool: an endpoint that is down is not
                // worth keeping the process (and its supervisor) waiting for long.
                let deadline = deadline.min(Instant::now() + FLUSH_AT_LEAST);
                let left = flushing.flush(deadline).await;
                if left > 0 {
                    log::warn!(
                        "notifications: {left} event(s) wait in the spool for the next start"
                    );
                }
            })
        }));
        let stats = notifier.clone();
        metrics.set_notification_source(Box::new(move || {
            stats
                .stats()
                .into_iter()
                .map(|e| (e.name, e.pending, e.sent, e.failures, e.dropped))
                .collect()
        }));
    }
    let state = web::Data::new(AppState {
        registry,
        urls: Urls {
            host: config.http.host.clone(),
            relative: config.http.relativeurls,
            prefix: config.http.prefix.clone(),
        },
        auth,
        read_only,
        body_idle: config.http.bodyidletimeout,
        notifier,
        health: health.clone(),
        upload_quota: crate::upload::quota::UploadQuota::new(
            config.uploads.maxperrepository,
            config.uploads.maxperuser,
            config.uploads.idletimeout,
        ),
    });
    let observer = web::Data::new(Observer {
        metrics: metrics.clone(),
        access_log: !config.log.accesslog.disabled,
    });
    let proxies = web::Data::new(TrustedProxies::new(
        config.http.trustedproxies.clone(),
        config.http.forwardedheader,
    ));
    let connect_proxies = proxies.clone();
    let limiter = ConnectionLimiter::new(config.http.maxconnectionsperaddress);
    limiter.start_trimming();
    let workers = std::thread::available_parallelism().map_or(2, |n| n.get());
    let extra_headers = joined_headers(&config.http)?;
    let app = move || {
        App::new()
            .app_data(state.clone())
            .app_data(observer.clone())
            .app_data(proxies.clone())
            // `http.headers` too: on every response, errors included.
            .wrap(extra_headers.iter().cloned().fold(
                DefaultHeaders::new().add(API_VERSION_HEADER),
                DefaultHeaders::add,
            ))
            // Metrics and the access log (method, path without query, status, bytes, time,
            // user; never headers, so credentials cannot reach it).
            .wrap(from_fn(observe))
            .configure(api::configure)
    };
    // Responses are written as headers then body; with Nagle's algorithm on, the body of a small
    // response on a kept-alive connection waits for the client's delayed ACK (~40 ms).
    let on_connect: crate::listener::OnConnect = std::sync::Arc::new(move |conn, data| {
        let tcp = conn
            .downcast_ref::<actix_web::rt::net::TcpStream>()
            .or_else(|| {
                conn.downcast_ref::<TlsStream<actix_web::rt::net::TcpStream>>()
                    .map(|tls| tls.get_ref())
            });
        let Some(tcp) = tcp else { return };
        let _ = tcp.set_nodelay(true);
        let Ok(peer) = tcp.peer_addr() else { return };
        if connect_proxies.trusts(peer.ip()) {
            data.insert(limiter.admit_unlimited());
            return;
        }
        match limiter.admit(peer.ip()) {
            // Released with the connection's data when the connection closes.
            Some(admitted) => {
                data.insert(admitted);
            }
            None => limiter.refuse(tcp),
        }
    });
    let settings = crate::listener::Settings {
        workers,
        // Per worker; beyond it connections wait in the listen backlog.
        max_connections: config.http.maxconnections.div_ceil(workers).max(1),
        shutdown_timeout_secs: config.http.draintimeout.as_secs_f64().ceil() as u64,
    };
    let bind_error = |source| ServerError::Bind { addr, source };
    let (server, addrs) = match &config.http.tls {
        Some(tls) => {
            let tls = crate::tls::Tls::load(tls)?;
            let acceptor = tls.acceptor()?.build();
            tls.reload_on_sighup()?;
            // Its own pipeline: plain HTTP sent to this port is answered, not reset.
            crate::listener::https(app, on_connect, addr, acceptor, &settings)
                .map_err(bind_error)?
        }
        None => {
            let server = HttpServer::new(app)
                // Signals are handled by `run`: SIGINT drains as SIGTERM does.
                .disable_signals()
                .workers(settings.workers)
                .max_connections(settings.max_connections)
                .shutdown_timeout(settings.shutdown_timeout_secs)
                .on_connect(move |conn, data| on_connect(conn, data))
                .bind(addr)
                .map_err(bind_error)?;
            let addrs = server.addrs();
            (server.run(), addrs)
        }
    };
    let (debug, debug_addrs) = match &config.http.debug {
        Some(debug) => {
            let (handle, addrs) = start_debug(debug, &metrics, &health)?;
            (Some(handle), addrs)
        }
        None => (None, Vec::new()),
    };
    Ok(Bound {
        server,
        addrs,
        notifier: notifier_handle,
        debug_addrs,
        debug,
        metrics,
        health,
        drain: config.http.draintimeout,
        shutdown_hooks,
        uploads: registry_uploads,
    })
}
