//! The HTTPS listener. actix-web's `HttpServer::bind_openssl` hands every connection straight to
//! the TLS handshake, so a client speaking plain HTTP to the TLS port (a forgotten `https://`, a
//! docker daemon without the registry in `insecure-registries` the other way round) sees the
//! connection reset and no reason. This listener is the same actix-server and actix-http
//! pipeline with one step in front: it peeks at the connection's first byte, and a request
//! that starts like HTTP rather than a TLS record is answered `400 Bad Request` saying the port
//! speaks HTTPS, as distribution (Go's net/http) does.

use std::any::Any;
use std::net::SocketAddr;
use std::time::Duration;

use actix_http::body::MessageBody;
use actix_http::error::DispatchError;
use actix_http::{Extensions, HttpService, Request, Response};
use actix_service::{
    fn_service, map_config, IntoServiceFactory, ServiceFactory, ServiceFactoryExt,
};
use actix_tls::accept::openssl::reexports::{Error as SslError, SslAcceptor};
use actix_tls::accept::openssl::TlsStream;
use actix_tls::accept::TlsError;
use actix_web::dev::{AppConfig, Server};
use actix_web::rt::net::TcpStream;
use tokio::io::{AsyncReadExt, AsyncWriteExt};

/// The first byte of every TLS connection: a handshake record.
const TLS_HANDSHAKE: u8 = 0x16;

/// How long a connection may send nothing at all: TLS's own handshake deadline (3 s), which
/// starts only after this; a connection silent that long is closed, so that silent sockets hold
/// a connection slot no longer than `HttpServer`'s handshake timeout would.
const FIRST_BYTE_WAIT: Duration = Duration::from_secs(3);

/// The body of the answer to a plain-HTTP request on the TLS port (the spec's error format).
const PLAIN_HTTP_BODY: &str =
    "{\"errors\":[{\"code\":\"UNSUPPORTED\",\"message\":\"Client sent an HTTP \
    request to an HTTPS server: this port speaks HTTPS, use https://\"}]}\n";

fn plain_http_answer() -> String {
    format!(
        "HTTP/1.1 400 Bad Request\r\nContent-Type: application/json\r\nConnection: close\r\n\
         Docker-Distribution-API-Version: registry/2.0\r\n\
         Content-Length: {}\r\n\r\n{PLAIN_HTTP_BODY}",
        PLAIN_HTTP_BODY.len()
    )
}

/// Server-wide settings: what `HttpServer` would be told.
pub struct Settings {
    pub workers: usize,
    /// Per worker.
    pub max_connections: usize,
    pub shutdown_timeout_secs: u64,
}

/// A connection hook, as `HttpServer::on_connect` takes it.
pub type OnConnect = std::sync::Arc<dyn Fn(&dyn Any, &mut Extensions) + Send + Sync>;

/// Binds `addr` and serves `app` over TLS (HTTP/2 and HTTP/1.1 by ALPN), with `HttpServer`'s
/// defaults (keep-alive 5 s, request head within 5 s, TLS handshake within 3 s).
pub fn https<F, I, S, B>(
    app: F,
    on_connect: OnConnect,
    addr: SocketAddr,
    acceptor: SslAcceptor,
    settings: &Settings,
) -> std::io::Result<(Server, Vec<SocketAddr>)>
where
    F: Fn() -> I + Send + Clone + 'static,
    I: IntoServiceFactory<S, Request>,
    S: ServiceFactory<Request, Config = AppConfig> + 'static,
    S::Error: Into<actix_web::Error>,
    S::InitError: std::fmt::Debug,
    S::Response: Into<Response<B>>,
    B: MessageBody + 'static,
{
    let listener = bind(addr)?;
    let local = listener.local_addr()?;
    let host = local.to_string();
    let builder = Server::build();
    let shutdown = builder.graceful_shutdown_signal();
    let server = builder
        .workers(settings.workers)
        .max_concurrent_connections(settings.max_connections)
        .shutdown_timeout(settings.shutdown_timeout_secs)
        .disable_signals()
        .listen(format!("berth-https-{local}"), listener, move || {
            let on_connect = on_connect.clone();
            let host = host.clone();
            let shutdown = shutdown.clone();
            let http = HttpService::build()
                .graceful_shutdown_signal(move || {
                    let signal = shutdown.clone();
                    async move { signal.notified().await }
                })
                .client_request_timeout(Duration::from_secs(5))
                .client_disconnect_timeout(Duration::from_secs(1))
                .h1_allow_half_closed(true)
                .local_addr(local)
                .on_connect_ext(move |io: &TlsStream<TcpStream>, ext: &mut Extensions| {
                    on_connect(io as &dyn Any, ext)
                })
                .finish(map_config(
                    app()
                        .into_factory()
                        .map_err(|err| err.into().error_response()),
                    // `AppConfig::new` is crate-private; this is what actix-test uses, and
                    // what `HttpServer` builds: secure, the local address as host fallback.
                    move |_| AppConfig::__priv_test_new(true, host.clone(), local),
                ))
                .openssl(acceptor.clone());
            fn_service(answer_plain_http).and_then(http)
        })?
        .run();
    Ok((server, vec![local]))
}

/// Passes a TLS connection on; answers one that starts like plain HTTP and closes it.
async fn answer_plain_http(
    mut io: TcpStream,
) -> Result<TcpStream, TlsError<SslError, DispatchError>> {
    let mut first = [0u8; 1];
    match tokio::time::timeout(FIRST_BYTE_WAIT, io.peek(&mut first)).await {
        Ok(Ok(1)) if first[0] != TLS_HANDSHAKE && first[0].is_ascii_uppercase() => {}
        Ok(Ok(1)) => return Ok(io),
        // Silent, closed or broken: nothing to hand to TLS.
        _ => return Err(TlsError::Timeout),
    }
    // Read the request head first: closing with unread bytes would reset the connection, and
    // the client would never see the answer.
    let mut head = [0u8; 8192];
    let _ = tokio::time::timeout(Duration::from_secs(1), io.read(&mut head)).await;
    let _ = io.write_all(plain_http_answer().as_bytes()).await;
    let _ = io.shutdown().await;
    let _ = tokio::time::timeout(Duration::from_secs(1), async {
        while matches!(io.read(&mut head).await, Ok(n) if n > 0) {}
    })
    .await;
    Err(TlsError::Service(DispatchError::Io(std::io::Error::other(
        "plain HTTP on the TLS port",
    ))))
}

/// A listening socket as `HttpServer::bind` makes it: address reuse, a backlog of 1024.
fn bind(addr: SocketAddr) -> std::io::Result<std::net::TcpListener> {
    use socket2::{Domain, Protocol, Socket, Type};
    let socket = Socket::new(Domain::for_address(addr), Type::STREAM, Some(Protocol::TCP))?;
    socket.set_reuse_address(true)?;
    socket.bind(&addr.into())?;
    socket.listen(1024)?;
    Ok(socket.into())
}

#[cfg(test)]
mod tests {
    #[test]
    fn the_answer_says_https_with_a_correct_length() {
        let answer = super::plain_http_answer();
        let (head, body) = answer.split_once("\r\n\r\n").unwrap();
        assert!(head.starts_with("HTTP/1.1 400 Bad Request"));
        assert!(head.contains(&format!("Content-Length: {}", body.len())));
        let json: serde_json::Value = serde_json::from_str(body).unwrap();
        assert!(json["errors"][0]["message"]
            .as_str()
            .unwrap()
            .contains("this port speaks HTTPS"));
    }
}
