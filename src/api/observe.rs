//! The middleware that watches every request: it counts the bytes of the request body and of the
//! response body as they pass, and when the response body ends (or is dropped: a client gone
//! away) it records the request in the [`Metrics`] and writes the access-log line.
//!
//! The access log names the address, method, path (never the query string, which may carry a
//! token), status, bytes, duration and user; never a header, so credentials cannot reach it.

use std::cell::Cell;
use std::net::IpAddr;
use std::pin::Pin;
use std::rc::Rc;
use std::task::{Context, Poll};
use std::time::Instant;

use actix_web::body::{BodySize, BoxBody, MessageBody};
use actix_web::dev::{Payload, ServiceRequest, ServiceResponse};
use actix_web::http::{Method, StatusCode};
use actix_web::middleware::Next;
use actix_web::{web, HttpMessage};
use bytes::Bytes;
use futures_util::StreamExt;
use serde_json::json;

use super::ApiError;
use crate::auth::Principal;
use crate::metrics::{method_label, Metrics};

/// The kind of endpoint a request was routed to (`Endpoint::kind`), left in the request's
/// extensions by the dispatcher for the metrics.
#[derive(Debug, Clone, Copy)]
pub struct Route(pub &'static str);

/// What the middleware needs, as app data.
#[derive(Clone)]
pub struct Observer {
    pub metrics: Metrics,
    /// `log.accesslog.disabled` inverted.
    pub access_log: bool,
}

/// The middleware function (`actix_web::middleware::from_fn(observe)`).
pub async fn observe(
    mut req: ServiceRequest,
    next: Next<impl MessageBody + 'static>,
) -> Result<ServiceResponse<Observed>, actix_web::Error> {
    let start = Instant::now();
    let observer = req
        .app_data::<web::Data<Observer>>()
        .map(|o| o.get_ref().clone());
    let received = Rc::new(Cell::new(0u64));
    let payload = req.take_payload();
    if matches!(payload, Payload::None) {
        req.set_payload(payload);
    } else {
        let counter = received.clone();
        let counted = payload.inspect(move |chunk| {
            if let Ok(bytes) = chunk {
                counter.set(counter.get() + bytes.len() as u64);
            }
        });
        req.set_payload(Payload::Stream {
            payload: Box::pin(counted),
        });
    }
    let method = req.method().clone();
    // Only the access log names the client.
    let peer = observer
        .as_ref()
        .filter(|o| o.access_log)
        .and_then(|_| super::client::client(req.request()).addr);
    let res = next.call(req).await?.map_into_boxed_body();
    let Some(observer) = observer else {
        return Ok(res.map_body(|_, body| Observed {
            body,
            sent: 0,
            finish: None,
        }));
    };
    let status = res.status();
    let route = res
        .request()
        .extensions()
        .get::<Route>()
        .map_or("other", |r| r.0);
    if let Some(kind) = res
        .response()
        .error()
        .and_then(|e| e.as_error::<ApiError>())
        .and_then(|e| e.storage)
    {
        observer.metrics.storage_error(kind);
    }
    let access = observer.access_log.then(|| AccessLine {
        peer,
        path: res.request().path().to_string(),
        user: res
            .request()
            .extensions()
            .get::<Principal>()
            .map_or_else(|| "-".to_string(), |p| p.identity.name().to_string()),
        method: method.clone(),
    });
    let finish = Finish {
        observer,
        start,
        route,
        method: method_label(&method),
        pulls: method == Method::GET && status.is_success() && matches!(route, "blob" | "manifest"),
        head: method == Method::HEAD,
        status,
        received,
        access,
    };
    Ok(res.map_body(|_, body| Observed {
        body,
        sent: 0,
        finish: Some(finish),
    }))
}

struct AccessLine {
    peer: Option<IpAddr>,
    method: Method,
    path: String,
    user: String,
}

/// What is recorded once the response body is done.
struct Finish {
    observer: Observer,
    start: Instant,
    route: &'static str,
    method: &'static str,
    /// Whether the response body counts as pulled bytes (content: not error bodies).
    pulls: bool,
    /// A HEAD's body is announced, never sent.
    head: bool,
    status: StatusCode,
    received: Rc<Cell<u64>>,
    access: Option<AccessLine>,
}

impl Finish {
    fn done(self, sent: u64, complete: bool) {
        let elapsed = self.start.elapsed();
        let metrics = &self.observer.metrics;
        metrics.request(self.route, self.method, self.status.as_str(), elapsed);
        let received = self.received.get();
        if received > 0 && matches!(self.route, "upload" | "manifest") {
            metrics.bytes_pushed(self.route, received);
        }
        if sent > 0 && self.pulls {
            metrics.bytes_pulled(self.route, sent);
        }
        if let Some(line) = self.access {
            let millis = elapsed.as_secs_f64() * 1000.0;
            let peer = line.peer.map_or_else(|| "-".to_string(), |p| p.to_string());
            let fields = vec![
                ("remote", json!(peer)),
                ("method", json!(line.method.as_str())),
                ("path", json!(line.path)),
                ("route", json!(self.route)),
                ("status", json!(self.status.as_u16())),
                ("bytes", json!(sent)),
                ("bytes_received", json!(received)),
                ("duration_ms", json!((millis * 1000.0).round() / 1000.0)),
                ("user", json!(line.user)),
                ("complete", json!(complete)),
            ];
            crate::logging::with_fields(fields, || {
                log::info!(
                    target: "berth::access",
                    "{peer} \"{} {}\" {} {sent} {millis:.3}ms {}{}",
                    line.method,
                    line.path,
                    self.status.as_u16(),
                    line.user,
                    if complete { "" } else { " (response cut short)" }
                )
            });
        }
    }
}

/// A response body that counts what it yields and records the request when it ends.
pub struct Observed {
    body: BoxBody,
    sent: u64,
    finish: Option<Finish>,
}

impl MessageBody for Observed {
    type Error = <BoxBody as MessageBody>::Error;

    fn size(&self) -> BodySize {
        self.body.size()
    }

    fn poll_next(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Bytes, Self::Error>>> {
        let this = self.get_mut();
        let polled = Pin::new(&mut this.body).poll_next(cx);
        match &polled {
            Poll::Ready(Some(Ok(bytes))) => this.sent += bytes.len() as u64,
            Poll::Ready(None) => {
                if let Some(finish) = this.finish.take() {
                    finish.done(this.sent, true);
                }
            }
            _ => {}
        }
        polled
    }
}

impl Drop for Observed {
    fn drop(&mut self) {
        if let Some(finish) = self.finish.take() {
            // Bodies never polled (empty, HEAD) end here as well as those cut short; only the
            // latter fall short of their announced size.
            let complete = finish.head
                || match self.body.size() {
                    BodySize::Sized(n) => self.sent >= n,
                    BodySize::None => true,
                    BodySize::Stream => false,
                };
            finish.done(self.sent, complete);
        }
    }
}
