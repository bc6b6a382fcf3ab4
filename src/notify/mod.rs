//! Notifications: distribution's event envelopes POSTed to webhook endpoints.
//!
//! [`Notifier::emit`] filters an event for each endpoint and appends it to that endpoint's
//! [`Queue`] (a spool file, see [`queue`]): it never waits for an endpoint. One [`Sender`] actor
//! per endpoint delivers the queue serially, oldest first, one event per request, retrying the
//! same event with back-off until the endpoint accepts it: events arrive in the order they were
//! emitted (so in order per repository), and once, except that an event in flight when the process
//! stops is sent again after the restart.

pub mod event;
pub mod queue;

use std::path::Path;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use actix::{
    Actor, ActorFutureExt, AsyncContext, Context, Handler, Message, SpawnHandle, WrapFuture,
};

pub use event::{
    Action, ActorRecord, Event, RequestRecord, SourceRecord, Target, EVENTS_MEDIA_TYPE,
};
pub use queue::{Backoff, Pushed, Queue, Spool};

use crate::config::{EndpointConfig, NotificationsConfig};
use event::Filter;

/// One endpoint's counters, for metrics.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct EndpointStats {
    pub name: String,
    /// Events emitted and not yet delivered (spooled or in memory).
    pub pending: u64,
    /// Events delivered since start.
    pub sent: u64,
    /// Failed attempts since start (each retry counts).
    pub failures: u64,
    /// Events lost since start: the queue was full and could not be written.
    pub dropped: u64,
}

/// What emitting and the sender of one endpoint share.
struct Shared {
    name: String,
    filter: Filter,
    queue: Mutex<Queue>,
    /// A wake-up is on its way to the sender: emits do not send another (its mailbox stays at
    /// one message however fast events come).
    woken: AtomicBool,
}

struct Endpoint {
    shared: Arc<Shared>,
    sender: actix::Addr<Sender>,
}

/// Sends events to the configured endpoints. Cheap to clone; with no endpoints, emitting does
/// nothing.
#[derive(Clone, Default)]
pub struct Notifier {
    endpoints: Arc<Vec<Endpoint>>,
    source: Arc<SourceRecord>,
}

impl Notifier {
    /// A notifier without endpoints.
    pub fn disabled() -> Notifier {
        Notifier::default()
    }

    /// Starts one sender per enabled endpoint, on the current actix arbiter. `spool_dir`: where
    /// undelivered events are kept across restarts (`None`: in memory only). `port`: the
    /// registry's, for the events' `source.addr`. Events left in a spool by an earlier run are
    /// sent first.
    pub fn start(config: &NotificationsConfig, spool_dir: Option<&Path>, port: u16) -> Notifier {
        let source = SourceRecord {
            addr: format!(
                "{}:{port}",
                crate::storage::hostname().unwrap_or_else(|| "localhost".into())
            ),
            instance_id: uuid::Uuid::new_v4().to_string(),
        };
        let mut endpoints = Vec::new();
        for cfg in &config.endpoints {
            if cfg.disabled {
                log::info!("notifications: endpoint {:?} is disabled", cfg.name);
                continue;
            }
            let spool = spool_dir.and_then(|dir| match Spool::open(dir, &cfg.name) {
                Ok(spool) => Some(spool),
                Err(e) => {
                    log::error!(
                        "notifications: cannot open a spool for {:?} under {}: {e}; its events \
                         are kept in memory only",
                        cfg.name,
                        dir.display()
                    );
                    None
                }
            });
            if let Some(spool) = &spool {
                if spool.pending() > 0 {
                    log::info!(
                        "notifications: {} event(s) for {:?} left from an earlier run are sent \
                         first",
                        spool.pending(),
                        cfg.name
                    );
                }
            }
            let shared = Arc::new(Shared {
                name: cfg.name.clone(),
                filter: Filter::new(
                    cfg.ignoredmediatypes.iter().chain(&cfg.ignore.mediatypes),
                    &cfg.ignore.actions,
                ),
                queue: Mutex::new(Queue::new(spool)),
                woken: AtomicBool::new(true),
            });
            let sender = match Sender::new(cfg, shared.clone()) {
                Ok(sender) => sender.start(),
                Err(e) => {
                    log::error!("notifications: endpoint {:?} is skipped: {e}", cfg.name);
                    continue;
                }
            };
            log::info!(
                "notifications: sending events to {:?} ({})",
                cfg.name,
                cfg.display_url()
            );
            endpoints.push(Endpoint { shared, sender });
        }
        Notifier {
            endpoints: Arc::new(endpoints),
            source: Arc::new(source),
        }
    }

    /// Whether any endpoint would receive events.
    pub fn is_enabled(&self) -> bool {
        !self.endpoints.is_empty()
    }

    /// Queues an event for every endpoint that wants it. Never waits for an endpoint: at worst
    /// it appends a line to a local file.
    pub fn emit(&self, action: Action, target: Target, request: RequestRecord, actor: ActorRecord) {
        if self.endpoints.is_empty() {
            return;
        }
        let mut line: Option<Vec<u8>> = None;
        for endpoint in self.endpoints.iter() {
            let shared = &endpoint.shared;
            if !shared.filter.allows(action, &target) {
                continue;
            }
            let line = line.get_or_insert_with(|| {
                Event::new(
                    action,
                    target.clone(),
                    request.clone(),
                    actor.clone(),
                    (*self.source).clone(),
                )
                .to_line()
            });
            let pushed = shared.queue.lock().expect("queue lock").push(line);
            if pushed == Pushed::Dropped {
                log::warn!(
                    "notifications: the queue of {:?} is full: a {} event of {} is lost",
                    shared.name,
                    action.as_str(),
                    target.repository
                );
            }
            if !shared.woken.swap(true, Ordering::AcqRel) {
                endpoint.sender.do_send(Wake);
            }
        }
    }

    /// Per-endpoint counters.
    pub fn stats(&self) -> Vec<EndpointStats> {
        self.endpoints
            .iter()
            .map(|e| {
                let q = e.shared.queue.lock().expect("queue lock");
                EndpointStats {
                    name: e.shared.name.clone(),
                    pending: q.pending(),
                    sent: q.sent,
                    failures: q.failures,
                    dropped: q.dropped,
                }
            })
            .collect()
    }

    /// Before shutdown: tries every endpoint now (cutting back-off waits short) and waits until
    /// everything is delivered or `deadline` passes. Returns the events still pending; those
    /// stay in the spool and are sent after the next start. Needs the actix system running.
    pub async fn flush(&self, deadline: Instant) -> u64 {
        for e in self.endpoints.iter() {
            e.sender.do_send(Hurry(deadline));
        }
        loop {
            let pending: u64 = self.stats().iter().map(|s| s.pending).sum();
            if pending == 0 || Instant::now() >= deadline {
                if pending > 0 {
                    log::warn!(
                        "notifications: {pending} event(s) not delivered before shutdown; they \
                         are sent after the next start"
                    );
                }
                return pending;
            }
            let left = deadline.saturating_duration_since(Instant::now());
            actix_rt::time::sleep(left.min(Duration::from_millis(20))).await;
        }
    }

    /// The `source` of this process's events.
    pub fn source(&self) -> &SourceRecord {
        &self.source
    }
}

/// New events are queued.
#[derive(Message)]
#[rtype(result = "()")]
struct Wake;

/// Shutdown is near: until this instant, back-off waits are cut to at most [`HURRIED_RETRY`].
#[derive(Message)]
#[rtype(result = "()")]
struct Hurry(Instant);

/// The longest wait between attempts while flushing.
const HURRIED_RETRY: Duration = Duration::from_millis(100);

/// An error and its causes on one line (reqwest's own message stops at "error sending request").
fn error_chain(e: &dyn std::error::Error) -> String {
    let mut text = e.to_string();
    let mut cause = e.source();
    while let Some(c) = cause {
        text.push_str(": ");
        text.push_str(&c.to_string());
        cause = c.source();
    }
    text
}

/// Delivers one endpoint's queue: the oldest event, then the next; a failure retries the same
/// event after [`Backoff`]'s delay. All decisions are in [`Queue`] and [`Backoff`].
struct Sender {
    shared: Arc<Shared>,
    client: reqwest::Client,
    url: String,
    headers: reqwest::header::HeaderMap,
    timeout: Duration,
    backoff: Backoff,
    /// A request is in flight.
    busy: bool,
    /// Waiting out a back-off.
    sleeping: Option<SpawnHandle>,
    /// Flushing until then: no long back-off.
    hurry_until: Option<Instant>,
}

impl Sender {
    fn new(cfg: &EndpointConfig, shared: Arc<Shared>) -> Result<Sender, String> {
        use reqwest::header::{HeaderName, HeaderValue, CONTENT_TYPE};
        let mut headers = reqwest::header::HeaderMap::new();
        for (name, values) in &cfg.headers {
            let name = HeaderName::from_bytes(name.as_bytes())
                .map_err(|e| format!("header {name:?}: {e}"))?;
            for value in values {
                let value = HeaderValue::from_str(value)
                    .map_err(|e| format!("header {name}'s value: {e}"))?;
                headers.append(name.clone(), value);
            }
        }
        headers.insert(CONTENT_TYPE, HeaderValue::from_static(EVENTS_MEDIA_TYPE));
        reqwest::Url::parse(&cfg.url).map_err(|e| format!("url: {e}"))?;
        let client = reqwest::Client::builder()
            .user_agent(concat!("berth/", env!("CARGO_PKG_VERSION")))
            // A 3xx counts as delivered (as in distribution); following it would send the
            // events, and log the URL, wherever the receiver points.
            .redirect(reqwest::redirect::Policy::none())
            .build()
            .map_err(|e| e.to_string())?;
        Ok(Sender {
            shared,
            client,
            url: cfg.url.clone(),
            headers,
            timeout: cfg.timeout,
            backoff: Backoff::new(cfg.threshold, cfg.backoff),
            busy: false,
            sleeping: None,
            hurry_until: None,
        })
    }

    /// Sends the next event unless one is in flight or a back-off runs.
    fn pump(&mut self, ctx: &mut Context<Self>) {
        if self.busy || self.sleeping.is_some() {
            return;
        }
        let body = {
            let mut queue = self.shared.queue.lock().expect("queue lock");
            match queue.oldest() {
                Ok(Some(line)) => event::envelope([line]),
                Ok(None) => return,
                Err(e) => {
                    log::error!(
                        "notifications: cannot read the spool of {:?}: {e}",
                        self.shared.name
                    );
                    drop(queue);
                    let delay = self.backoff.failed().max(Duration::from_secs(1));
                    self.retry_later(ctx, delay);
                    return;
                }
            }
        };
        self.busy = true;
        let request = self
            .client
            .post(&self.url)
            .headers(self.headers.clone())
            .timeout(self.timeout)
            .body(body);
        let send = async move {
            match request.send().await {
                Ok(r) if r.status().is_success() || r.status().is_redirection() => Ok(()),
                Ok(r) => Err(format!("status {}", r.status())),
                // Its message would name the URL, credentials and query included.
                Err(e) => Err(error_chain(&e.without_url())),
            }
        };
        ctx.spawn(send.into_actor(self).map(|result, act, ctx| {
            act.busy = false;
            match result {
                Ok(()) => {
                    act.backoff.succeeded();
                    let acked = act.shared.queue.lock().expect("queue lock").delivered();
                    if let Err(e) = acked {
                        // Delivered but not recorded: it may be sent again after a restart.
                        log::warn!(
                            "notifications: cannot record a delivery to {:?}: {e}",
                            act.shared.name
                        );
                    }
                    act.pump(ctx);
                }
                Err(e) => {
                    act.shared.queue.lock().expect("queue lock").failures += 1;
                    let delay = act.backoff.failed();
                    log::warn!(
                        "notifications: {:?} failed ({e}); attempt {} of this event, next in {:?}",
                        act.shared.name,
                        act.backoff.failures(),
                        delay
                    );
                    act.retry_later(ctx, delay);
                }
            }
        }));
    }

    fn retry_later(&mut self, ctx: &mut Context<Self>, mut delay: Duration) {
        if self.hurry_until.is_some_and(|until| Instant::now() < until) {
            delay = delay.min(HURRIED_RETRY);
        }
        if delay.is_zero() {
            self.pump(ctx);
            return;
        }
        self.sleeping = Some(ctx.run_later(delay, |act, ctx| {
            act.sleeping = None;
            act.pump(ctx);
        }));
    }
}

impl Actor for Sender {
    type Context = Context<Self>;

    fn started(&mut self, ctx: &mut Context<Self>) {
        // Events left by an earlier run go first.
        self.shared.woken.store(false, Ordering::Release);
        self.pump(ctx);
    }
}

impl Handler<Wake> for Sender {
    type Result = ();

    fn handle(&mut self, _: Wake, ctx: &mut Context<Self>) {
        self.shared.woken.store(false, Ordering::Release);
        self.pump(ctx);
    }
}

impl Handler<Hurry> for Sender {
    type Result = ();

    fn handle(&mut self, Hurry(until): Hurry, ctx: &mut Context<Self>) {
        self.hurry_until = Some(until);
        if let Some(handle) = self.sleeping.take() {
            ctx.cancel_future(handle);
        }
        self.pump(ctx);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::{BufRead, BufReader, Read, Write};

    fn endpoint(name: &str, url: &str) -> EndpointConfig {
        EndpointConfig {
            name: name.into(),
            url: url.into(),
            headers: Default::default(),
            timeout: Duration::from_millis(200),
            threshold: 1,
            backoff: Duration::from_secs(30),
            disabled: false,
            ignoredmediatypes: vec![],
            ignore: Default::default(),
        }
    }

    /// Answers every request 200 and counts them.
    fn accepting() -> (String, Arc<std::sync::atomic::AtomicUsize>) {
        let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let url = format!("http://{}/", listener.local_addr().unwrap());
        let count = Arc::new(std::sync::atomic::AtomicUsize::new(0));
        let c = count.clone();
        std::thread::spawn(move || {
            for mut stream in listener.incoming().map_while(Result::ok) {
                let mut reader = BufReader::new(stream.try_clone().unwrap());
                let mut len = 0;
                loop {
                    let mut line = String::new();
                    reader.read_line(&mut line).unwrap();
                    let lower = line.to_ascii_lowercase();
                    if let Some(v) = lower.strip_prefix("content-length:") {
                        len = v.trim().parse().unwrap();
                    }
                    if line.trim().is_empty() {
                        break;
                    }
                }
                let mut body = vec![0; len];
                reader.read_exact(&mut body).unwrap();
                c.fetch_add(1, Ordering::SeqCst);
                let _ = stream.write_all(
                    b"HTTP/1.1 200 OK\r\nContent-Length: 0\r\nConnection: close\r\n\r\n",
                );
            }
        });
        (url, count)
    }

    fn push(n: &Notifier, repo: &str) {
        n.emit(
            Action::Push,
            Target::blob(repo, "sha256:00", 1, String::new()),
            RequestRecord::default(),
            ActorRecord::default(),
        );
    }

    #[actix_rt::test]
    async fn stats_and_flush() {
        let dir = tempfile::tempdir().unwrap();
        let (url, delivered) = accepting();
        let dead = format!("http://127.0.0.1:{}/", {
            let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
            l.local_addr().unwrap().port()
        });
        let mut off = endpoint("off", &url);
        off.disabled = true;
        let mut no_blobs = endpoint("no-blobs", &url);
        no_blobs.ignore.mediatypes = vec![event::BLOB_MEDIA_TYPE.into()];
        let config = NotificationsConfig {
            endpoints: vec![endpoint("up", &url), endpoint("down", &dead), off, no_blobs],
            spooldir: None,
        };
        let n = Notifier::start(&config, Some(dir.path()), 5000);
        assert!(n.is_enabled());
        for _ in 0..3 {
            push(&n, "r");
        }
        // `up` delivers everything; `down` fails once and backs off for 30 s, which flush cuts
        // short (and fails again) before giving up at its deadline.
        let left = n.flush(Instant::now() + Duration::from_millis(500)).await;
        assert_eq!(left, 3);
        let stats = n.stats();
        let names: Vec<&str> = stats.iter().map(|s| s.name.as_str()).collect();
        assert_eq!(names, ["up", "down", "no-blobs"]);
        assert_eq!(
            stats[0],
            EndpointStats {
                name: "up".into(),
                pending: 0,
                sent: 3,
                failures: 0,
                dropped: 0
            }
        );
        assert_eq!((stats[1].pending, stats[1].sent), (3, 0));
        assert!(stats[1].failures >= 2, "{:?}", stats[1]);
        assert_eq!((stats[2].pending, stats[2].sent), (0, 0));
        assert_eq!(delivered.load(Ordering::SeqCst), 3);
        // Without endpoints nothing happens at all.
        let none = Notifier::disabled();
        push(&none, "r");
        assert!(!none.is_enabled() && none.stats().is_empty());
        assert_eq!(none.flush(Instant::now()).await, 0);
    }
}
