//! Request bodies as the registry reads them: a body that stops sending for longer than the
//! idle limit ends in an error, so a stalled client does not hold an upload session (and its
//! lock) for ever. Bytes received before the stall are kept, as after any broken connection, and
//! the client can resume. (A client trickling a byte now and then is not stopped by this; an
//! upload's lock then stays with it, which only concerns that upload.)

use std::future::Future;
use std::pin::Pin;
use std::task::{Context, Poll};
use std::time::Duration;

use actix_web::rt::time::{Instant, Sleep};
use bytes::Bytes;
use futures_util::stream::LocalBoxStream;
use futures_util::{Stream, StreamExt};

/// A request body as handlers read it.
pub type Body = LocalBoxStream<'static, Result<Bytes, String>>;

/// `body`, failing with an error once no bytes arrived for `idle`.
pub fn idle_limited<S, E>(body: S, idle: Duration) -> Body
where
    S: Stream<Item = Result<Bytes, E>> + Unpin + 'static,
    E: std::fmt::Display + 'static,
{
    Box::pin(IdleLimited {
        body: Some(body),
        idle,
        last_bytes: Instant::now(),
        timer: Box::pin(actix_web::rt::time::sleep(idle)),
    })
}

/// One timer per body, re-armed only when it fires: a chunk costs a clock read, not a timer
/// registration (bodies arrive in many small chunks).
struct IdleLimited<S> {
    body: Option<S>,
    idle: Duration,
    last_bytes: Instant,
    timer: Pin<Box<Sleep>>,
}

impl<S, E> Stream for IdleLimited<S>
where
    S: Stream<Item = Result<Bytes, E>> + Unpin,
    E: std::fmt::Display,
{
    type Item = Result<Bytes, String>;

    fn poll_next(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Self::Item>> {
        let this = &mut *self;
        let Some(body) = this.body.as_mut() else {
            return Poll::Ready(None);
        };
        match body.poll_next_unpin(cx) {
            Poll::Ready(Some(Ok(bytes))) => {
                this.last_bytes = Instant::now();
                return Poll::Ready(Some(Ok(bytes)));
            }
            Poll::Ready(Some(Err(e))) => {
                this.body = None;
                return Poll::Ready(Some(Err(e.to_string())));
            }
            Poll::Ready(None) => {
                this.body = None;
                return Poll::Ready(None);
            }
            Poll::Pending => {}
        }
        loop {
            if this.timer.as_mut().poll(cx).is_pending() {
                return Poll::Pending;
            }
            let deadline = this.last_bytes + this.idle;
            if Instant::now() >= deadline {
                this.body = None;
                return Poll::Ready(Some(Err(format!(
                    "the client sent nothing for {} s",
                    this.idle.as_secs()
                ))));
            }
            // Bytes came since the timer was armed: wait for the rest of the new deadline.
            this.timer.as_mut().reset(deadline);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[actix_web::test]
    async fn a_stalled_body_ends_in_an_error_after_its_bytes() {
        let chunks = futures_util::stream::iter([Ok::<_, String>(Bytes::from_static(b"abc"))])
            .chain(futures_util::stream::pending());
        let mut body = idle_limited(Box::pin(chunks), Duration::from_millis(50));
        assert_eq!(
            body.next().await.unwrap().unwrap(),
            Bytes::from_static(b"abc")
        );
        let err = body.next().await.unwrap().unwrap_err();
        assert!(err.contains("sent nothing"), "{err}");
        assert!(body.next().await.is_none());
    }

    #[actix_web::test]
    async fn a_steady_body_passes_whole() {
        let chunks =
            futures_util::stream::iter((0..3).map(|i| Ok::<_, String>(Bytes::from(vec![i; 4]))));
        let all: Vec<_> = idle_limited(chunks, Duration::from_secs(1)).collect().await;
        assert_eq!(all.len(), 3);
        assert!(all.iter().all(Result::is_ok));
    }
}
