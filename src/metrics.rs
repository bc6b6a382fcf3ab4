//! Prometheus metrics, served in the text format on the debug listener (`http.debug`).
//!
//! Every metric is registered once, when [`Metrics`] is made; a request only bumps pre-registered
//! series through `with_label_values` on static strings. Labels are bounded: the route is the
//! kind of [`Endpoint`](crate::api::Endpoint) (`base`, `catalog`, `tags`, `manifest`, `blob`,
//! `upload`, `referrers`, `token`, `other`), never the path.
//!
//! Other parts of berth report through the small API below: [`Metrics::cache_hit`] /
//! [`Metrics::cache_miss`] for the blob-descriptor cache, and
//! [`Metrics::set_notification_source`] for the notification queues.

use std::sync::{Arc, Mutex};
use std::time::Duration;

use prometheus::{
    Encoder, HistogramOpts, HistogramVec, IntCounterVec, IntGauge, IntGaugeVec, Opts, Registry,
    TextEncoder,
};

/// What the notification queues report: `(endpoint name, pending, sent, failures, dropped)`.
pub type NotificationStats = Vec<(String, u64, u64, u64, u64)>;

/// A function the metrics call when scraped, for numbers kept elsewhere.
pub type Source<T> = Box<dyn Fn() -> T + Send + Sync>;

/// Latency buckets in seconds: small API calls up to multi-minute blob transfers.
const LATENCY_BUCKETS: &[f64] = &[
    0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0, 300.0,
];

/// The registry's metrics. Cheap to clone; clones share the series.
#[derive(Clone)]
pub struct Metrics(Arc<Inner>);

struct Inner {
    registry: Registry,
    requests: IntCounterVec,
    latency: HistogramVec,
    bytes_pushed: IntCounterVec,
    bytes_pulled: IntCounterVec,
    storage_errors: IntCounterVec,
    uploads_active: IntGauge,
    cache: IntCounterVec,
    notify_pending: IntGaugeVec,
    notify_sent: IntGaugeVec,
    notify_failures: IntGaugeVec,
    notify_dropped: IntGaugeVec,
    upload_source: Mutex<Option<Source<usize>>>,
    notification_source: Mutex<Option<Source<NotificationStats>>>,
}

impl std::fmt::Debug for Metrics {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Metrics")
    }
}

impl Default for Metrics {
    fn default() -> Self {
        Metrics::new()
    }
}

fn counter(registry: &Registry, name: &str, help: &str, labels: &[&str]) -> IntCounterVec {
    let c = IntCounterVec::new(Opts::new(name, help), labels).expect("valid metric");
    registry.register(Box::new(c.clone())).expect("unique name");
    c
}

fn gauge(registry: &Registry, name: &str, help: &str, labels: &[&str]) -> IntGaugeVec {
    let g = IntGaugeVec::new(Opts::new(name, help), labels).expect("valid metric");
    registry.register(Box::new(g.clone())).expect("unique name");
    g
}

impl Metrics {
    pub fn new() -> Metrics {
        let registry = Registry::new();
        let requests = counter(
            &registry,
            "berth_http_requests_total",
            "HTTP requests answered, by route kind, method and status.",
            &["route", "method", "status"],
        );
        let latency = HistogramVec::new(
            HistogramOpts::new(
                "berth_http_request_duration_seconds",
                "Time from a request's arrival to the end of its response body.",
            )
            .buckets(LATENCY_BUCKETS.to_vec()),
            &["route", "method"],
        )
        .expect("valid metric");
        registry
            .register(Box::new(latency.clone()))
            .expect("unique name");
        let bytes_pushed = counter(
            &registry,
            "berth_bytes_pushed_total",
            "Request body bytes received on the upload and manifest routes.",
            &["route"],
        );
        let bytes_pulled = counter(
            &registry,
            "berth_bytes_pulled_total",
            "Response body bytes sent by successful GETs of the blob and manifest routes.",
            &["route"],
        );
        let storage_errors = counter(
            &registry,
            "berth_storage_errors_total",
            "Storage failures that reached a client (as 500 or 503), by kind.",
            &["kind"],
        );
        let uploads_active = IntGauge::new(
            "berth_upload_sessions_active",
            "Upload sessions this process holds in memory.",
        )
        .expect("valid metric");
        registry
            .register(Box::new(uploads_active.clone()))
            .expect("unique name");
        let cache = counter(
            &registry,
            "berth_cache_requests_total",
            "Blob-descriptor cache look-ups, by kind and result (hit, miss).",
            &["kind", "result"],
        );
        let notify_pending = gauge(
            &registry,
            "berth_notifications_pending",
            "Events queued for a notification endpoint.",
            &["endpoint"],
        );
        let notify_sent = gauge(
            &registry,
            "berth_notifications_sent",
            "Events delivered to a notification endpoint since start.",
            &["endpoint"],
        );
        let notify_failures = gauge(
            &registry,
            "berth_notifications_failures",
            "Failed deliveries to a notification endpoint since start.",
            &["endpoint"],
        );
        let notify_dropped = gauge(
            &registry,
            "berth_notifications_dropped",
            "Events dropped for a notification endpoint (queue full) since start.",
            &["endpoint"],
        );
        Metrics(Arc::new(Inner {
            registry,
            requests,
            latency,
            bytes_pushed,
            bytes_pulled,
            storage_errors,
            uploads_active,
            cache,
            notify_pending,
            notify_sent,
            notify_failures,
            notify_dropped,
            upload_source: Mutex::new(None),
            notification_source: Mutex::new(None),
        }))
    }

    /// One answered request: `route` is an endpoint kind, `method` and `status` static strings.
    pub fn request(
        &self,
        route: &'static str,
        method: &'static str,
        status: &str,
        duration: Duration,
    ) {
        self.0
            .requests
            .with_label_values(&[route, method, status])
            .inc();
        self.0
            .latency
            .with_label_values(&[route, method])
            .observe(duration.as_secs_f64());
    }

    /// Body bytes received on `route`.
    pub fn bytes_pushed(&self, route: &'static str, bytes: u64) {
        self.0
            .bytes_pushed
            .with_label_values(&[route])
            .inc_by(bytes);
    }

    /// Body bytes sent on `route`.
    pub fn bytes_pulled(&self, route: &'static str, bytes: u64) {
        self.0
            .bytes_pulled
            .with_label_values(&[route])
            .inc_by(bytes);
    }

    /// A storage failure answered to a client; `kind` names the `StorageError` variant.
    pub fn storage_error(&self, kind: &'static str) {
        self.0.storage_errors.with_label_values(&[kind]).inc();
    }

    /// A blob-descriptor cache hit; `kind` says which cache or look-up (`"descriptor"`, `"link"`).
    pub fn cache_hit(&self, kind: &'static str) {
        self.0.cache.with_label_values(&[kind, "hit"]).inc();
    }

    /// A blob-descriptor cache miss.
    pub fn cache_miss(&self, kind: &'static str) {
        self.0.cache.with_label_values(&[kind, "miss"]).inc();
    }

    /// Where the number of active upload sessions comes from, read at every scrape.
    pub fn set_upload_source(&self, source: Source<usize>) {
        *self.0.upload_source.lock().unwrap() = Some(source);
    }

    /// Where the notification queues' numbers come from, read at every scrape:
    /// `(endpoint name, pending, sent, failures, dropped)` per endpoint.
    pub fn set_notification_source(&self, source: Source<NotificationStats>) {
        *self.0.notification_source.lock().unwrap() = Some(source);
    }

    /// Reads the sources into their gauges.
    fn refresh(&self) {
        if let Some(source) = &*self.0.upload_source.lock().unwrap() {
            self.0.uploads_active.set(source() as i64);
        }
        if let Some(source) = &*self.0.notification_source.lock().unwrap() {
            let stats = source();
            for gauge in [
                &self.0.notify_pending,
                &self.0.notify_sent,
                &self.0.notify_failures,
                &self.0.notify_dropped,
            ] {
                gauge.reset();
            }
            for (name, pending, sent, failures, dropped) in stats {
                let set = |g: &IntGaugeVec, v: u64| {
                    g.with_label_values(&[name.as_str()])
                        .set(i64::try_from(v).unwrap_or(i64::MAX))
                };
                set(&self.0.notify_pending, pending);
                set(&self.0.notify_sent, sent);
                set(&self.0.notify_failures, failures);
                set(&self.0.notify_dropped, dropped);
            }
        }
    }

    /// Everything, in Prometheus' text exposition format.
    pub fn render(&self) -> String {
        self.refresh();
        let mut out = Vec::new();
        TextEncoder::new()
            .encode(&self.0.registry.gather(), &mut out)
            .expect("text encoding of gathered metrics");
        String::from_utf8(out).expect("the text format is UTF-8")
    }
}

/// A method as a bounded label value.
pub fn method_label(method: &actix_web::http::Method) -> &'static str {
    use actix_web::http::Method;
    match *method {
        Method::GET => "GET",
        Method::HEAD => "HEAD",
        Method::PUT => "PUT",
        Method::POST => "POST",
        Method::PATCH => "PATCH",
        Method::DELETE => "DELETE",
        Method::OPTIONS => "OPTIONS",
        _ => "other",
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn renders_counters_histograms_and_sources() {
        let m = Metrics::new();
        m.request("blob", "GET", "200", Duration::from_millis(3));
        m.request("blob", "GET", "200", Duration::from_millis(300));
        m.bytes_pulled("blob", 42);
        m.cache_hit("descriptor");
        m.cache_miss("descriptor");
        m.set_upload_source(Box::new(|| 3));
        m.set_notification_source(Box::new(|| vec![("hook".into(), 1, 2, 3, 4)]));
        let text = m.render();
        assert!(text
            .contains("berth_http_requests_total{method=\"GET\",route=\"blob\",status=\"200\"} 2"));
        assert!(text.contains("berth_bytes_pulled_total{route=\"blob\"} 42"));
        assert!(text.contains(
            "berth_http_request_duration_seconds_bucket{method=\"GET\",route=\"blob\",le=\"0.005\"} 1"
        ));
        assert!(text.contains(
            "berth_http_request_duration_seconds_bucket{method=\"GET\",route=\"blob\",le=\"+Inf\"} 2"
        ));
        assert!(text.contains("berth_upload_sessions_active 3"));
        assert!(text.contains("berth_cache_requests_total{kind=\"descriptor\",result=\"hit\"} 1"));
        assert!(text.contains("berth_notifications_dropped{endpoint=\"hook\"} 4"));
        assert!(text.contains("# TYPE berth_http_requests_total counter"));
    }
}
