//! Serving an HTTP service (an axum [`Router`], or the webhook's own front): the accept
//! loop with a connection cap, TLS handshakes with a deadline (or plain HTTP), HTTP/1.1
//! and HTTP/2 on one port, I/O deadlines (`deadlines`), and a graceful, bounded drain.
//!
//! The webhook port (TLS) and the admin port (plain) run the same loop, limits and
//! drain.

mod deadlines;
mod head_bound;

use std::convert::Infallible;
use std::future::Future;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use axum::Router;
use axum::body::Body;
use axum::http::{Request, Response};
use hyper_util::rt::{TokioExecutor, TokioIo, TokioTimer};
use hyper_util::server::conn::auto;
use hyper_util::server::graceful::GracefulShutdown;
use hyper_util::service::TowerToHyperService;
use rustls::ServerConfig;
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::Semaphore;
use tokio_rustls::TlsAcceptor;

use deadlines::Deadlines;
use head_bound::HeadBound;

use crate::metrics::{HandshakeFailure, Metrics};

/// Why serving could not start.
#[derive(Debug, thiserror::Error)]
pub enum ServeError {
    /// The address could not be bound.
    #[error("cannot listen on {addr}")]
    Bind {
        /// The address.
        addr: SocketAddr,
        /// The I/O error.
        #[source]
        source: std::io::Error,
    },
}

/// Binds `addr` (port 0 picks a free port; ask the listener which).
pub async fn bind(addr: SocketAddr) -> Result<TcpListener, ServeError> {
    TcpListener::bind(addr)
        .await
        .map_err(|source| ServeError::Bind { addr, source })
}

/// The next connection on `listener`. Accept errors (out of file descriptors,
/// typically) are logged and retried after a pause instead of spinning.
pub async fn accept(listener: &TcpListener) -> (tokio::net::TcpStream, SocketAddr) {
    loop {
        match listener.accept().await {
            Ok(accepted) => return accepted,
            Err(error) => {
                tracing::warn!(%error, "accept failed");
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
        }
    }
}

/// Limits that keep slow or hostile clients from holding the port.
#[derive(Debug, Clone, Copy)]
pub struct ConnectionLimits {
    /// Longest a TLS handshake may take.
    pub handshake_timeout: Duration,
    /// Longest a client may take, after the handshake, to send the first bytes of its
    /// first request, and an HTTP/1.1 client to send each request's headers.
    pub header_read_timeout: Duration,
    /// HTTP/2 streams one connection may have open at once.
    pub max_concurrent_streams: u32,
    /// Connections served at once; more wait in the kernel's accept queue.
    pub max_connections: usize,
    /// Longest a connection may stay silent (no bytes from the client), or leave an
    /// answer unread, before it is closed.
    pub idle_timeout: Duration,
}

impl Default for ConnectionLimits {
    fn default() -> Self {
        Self {
            handshake_timeout: Duration::from_secs(5),
            header_read_timeout: Duration::from_secs(5),
            max_concurrent_streams: 128,
            max_connections: 1024,
            idle_timeout: Duration::from_secs(90),
        }
    }
}

/// Largest HTTP/1.1 request head (`head_bound`), answered 431 past it.
const MAX_HTTP1_HEAD_BYTES: usize = 64 * 1024;
/// Largest HTTP/1.1 read buffer: hyper's default, stated so it cannot drift. Large enough
/// to read a 50-container review in one piece; hyper refuses a head that does not fit
/// in it before `head_bound` sees it. A connection may hold a whole body (up to
/// `max_body_bytes`) anyway, so this is not what bounds its memory.
const MAX_HTTP1_BUFFER: usize = 8192 + 4096 * 100;
/// Largest HTTP/2 header block (hyper's default is 16 MiB), the same bound as HTTP/1.1.
const MAX_HEADER_LIST_BYTES: u32 = 64 * 1024;
/// HTTP/2 streams a client may reset before we got to them (the "rapid reset" attack,
/// CVE-2023-44487) and streams we may reset for its errors, before the connection is
/// closed with ENHANCE_YOUR_CALM. h2's defaults, stated so they cannot drift.
const MAX_PENDING_RESET_STREAMS: usize = 20;
const MAX_ERROR_RESET_STREAMS: usize = 1024;

/// What [`serve`] answers requests with: a hyper service, cloned for each connection.
pub trait HttpService:
    hyper::service::Service<
        Request<hyper::body::Incoming>,
        Response = Response<Body>,
        Error = Infallible,
        Future: Send + 'static,
    > + Clone
    + Send
    + 'static
{
}

impl<S> HttpService for S where
    S: hyper::service::Service<
            Request<hyper::body::Incoming>,
            Response = Response<Body>,
            Error = Infallible,
            Future: Send + 'static,
        > + Clone
        + Send
        + 'static
{
}

/// An axum [`Router`] as a hyper service.
pub fn router_service(router: Router) -> impl HttpService {
    TowerToHyperService::new(router)
}

/// What a connection speaks before HTTP.
#[derive(Debug, Clone)]
pub enum Transport {
    /// TLS with this configuration (the webhook port); failed handshakes are counted.
    Tls(Arc<ServerConfig>, Metrics),
    /// Plain TCP (the admin port).
    Plain,
}

/// Serves `service` on `listener` until `stop` completes; then stops accepting (new
/// connections are refused), lets open connections finish their requests (HTTP/2 gets a
/// GOAWAY) for at most `drain`, and returns.
pub async fn serve(
    listener: TcpListener,
    transport: Transport,
    service: impl HttpService,
    limits: ConnectionLimits,
    stop: impl Future<Output = ()>,
    drain: Duration,
) {
    let graceful = GracefulShutdown::new();
    let mut builder = auto::Builder::new(TokioExecutor::new());
    builder
        .http1()
        .timer(TokioTimer::new())
        .header_read_timeout(limits.header_read_timeout)
        .max_buf_size(MAX_HTTP1_BUFFER);
    builder
        .http2()
        .timer(TokioTimer::new())
        .max_concurrent_streams(limits.max_concurrent_streams)
        .max_header_list_size(MAX_HEADER_LIST_BYTES)
        .max_pending_accept_reset_streams(MAX_PENDING_RESET_STREAMS)
        .max_local_error_reset_streams(MAX_ERROR_RESET_STREAMS);
    // No HTTP/2 keep-alive pings: the client's answers would count as activity and
    // keep an idle connection open forever; the idle deadline closes vanished peers.
    let builder = Arc::new(builder);
    let slots = Arc::new(Semaphore::new(limits.max_connections));
    let acceptor = match &transport {
        Transport::Tls(config, metrics) => {
            Some((TlsAcceptor::from(Arc::clone(config)), metrics.clone()))
        }
        Transport::Plain => None,
    };

    tokio::pin!(stop);
    loop {
        // A slot before accepting: past the limit, connections wait in the backlog
        // instead of costing memory and file descriptors here.
        let slot = tokio::select! {
            slot = Arc::clone(&slots).acquire_owned() => match slot {
                Ok(slot) => slot,
                Err(_) => break,
            },
            () = &mut stop => break,
        };
        let (stream, peer) = tokio::select! {
            accepted = accept(&listener) => accepted,
            () = &mut stop => break,
        };
        // Requests are small and latency-bound: no Nagle delay.
        if let Err(error) = stream.set_nodelay(true) {
            tracing::debug!(%error, %peer, "cannot set TCP_NODELAY");
        }
        let acceptor = acceptor.clone();
        let builder = Arc::clone(&builder);
        let service = HeadBound::new(service.clone(), MAX_HTTP1_HEAD_BYTES, peer);
        // Taken before the handshake, so a drain also waits for connections that are
        // still shaking hands (bounded by the handshake timeout).
        let watcher = graceful.watcher();
        tokio::spawn(async move {
            // Held for the connection's whole life.
            let _slot = slot;
            let result = match acceptor {
                Some((acceptor, metrics)) => {
                    let Some(tls) = handshake(&acceptor, stream, peer, &limits, &metrics).await
                    else {
                        return;
                    };
                    let io = Deadlines::new(tls, limits.header_read_timeout, limits.idle_timeout);
                    watcher
                        .watch(builder.serve_connection(TokioIo::new(io), service))
                        .await
                }
                None => {
                    let io =
                        Deadlines::new(stream, limits.header_read_timeout, limits.idle_timeout);
                    watcher
                        .watch(builder.serve_connection(TokioIo::new(io), service))
                        .await
                }
            };
            if let Err(error) = result {
                tracing::debug!(%error, %peer, "connection ended with an error");
            }
        });
    }
    drop(listener);
    tracing::info!(
        connections = graceful.count(),
        "stopped accepting; draining"
    );
    if tokio::time::timeout(drain, graceful.shutdown())
        .await
        .is_err()
    {
        tracing::warn!(
            ?drain,
            "drain time is up; closing the remaining connections"
        );
    } else {
        tracing::info!("drained");
    }
}

/// The TLS handshake within the handshake timeout; a failure is counted and `None`.
async fn handshake(
    acceptor: &TlsAcceptor,
    stream: TcpStream,
    peer: SocketAddr,
    limits: &ConnectionLimits,
    metrics: &Metrics,
) -> Option<tokio_rustls::server::TlsStream<TcpStream>> {
    match tokio::time::timeout(limits.handshake_timeout, acceptor.accept(stream)).await {
        Ok(Ok(tls)) => Some(tls),
        Ok(Err(error)) => {
            metrics.observe_handshake_failure(HandshakeFailure::Error);
            tracing::debug!(%error, %peer, "TLS handshake failed");
            None
        }
        Err(_) => {
            metrics.observe_handshake_failure(HandshakeFailure::Timeout);
            tracing::debug!(%peer, "TLS handshake timed out");
            None
        }
    }
}
