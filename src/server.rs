//! HTTPS serving: the accept loop, TLS handshakes with a deadline, HTTP/1.1 and HTTP/2 on
//! one port (ALPN), and a graceful, bounded drain.
//!
//! Generic over an axum [`Router`], so the webhook and the load benchmark's do-nothing
//! responder run on exactly the same stack.

use std::future::Future;
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;

use axum::Router;
use hyper_util::rt::{TokioExecutor, TokioIo, TokioTimer};
use hyper_util::server::conn::auto;
use hyper_util::server::graceful::GracefulShutdown;
use hyper_util::service::TowerToHyperService;
use rustls::ServerConfig;
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::TcpListener;
use tokio::sync::Semaphore;
use tokio::time::{Instant, Sleep};
use tokio_rustls::TlsAcceptor;

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

/// Largest HTTP/1.1 read buffer, which bounds a request's headers (hyper's default is
/// about 400 KiB). Bodies stream through it in pieces, whatever their size.
const MAX_HTTP1_BUFFER: usize = 64 * 1024;
/// Largest HTTP/2 header block (hyper's default is 16 MiB), the same bound as HTTP/1.1.
const MAX_HEADER_LIST_BYTES: u32 = 64 * 1024;
/// HTTP/2 streams a client may reset before we got to them (the "rapid reset" attack,
/// CVE-2023-44487) and streams we may reset for its errors, before the connection is
/// closed with ENHANCE_YOUR_CALM. h2's defaults, stated so they cannot drift.
const MAX_PENDING_RESET_STREAMS: usize = 20;
const MAX_ERROR_RESET_STREAMS: usize = 1024;

/// Serves `router` over TLS on `listener` until `stop` completes; then stops accepting
/// (new connections are refused), lets open connections finish their requests (HTTP/2
/// gets a GOAWAY) for at most `drain`, and returns.
pub async fn serve_tls(
    listener: TcpListener,
    tls: Arc<ServerConfig>,
    router: Router,
    limits: ConnectionLimits,
    metrics: Metrics,
    stop: impl Future<Output = ()>,
    drain: Duration,
) {
    let acceptor = TlsAcceptor::from(tls);
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
        // The API server's requests are small and latency-bound: no Nagle delay.
        if let Err(error) = stream.set_nodelay(true) {
            tracing::debug!(%error, %peer, "cannot set TCP_NODELAY");
        }
        let acceptor = acceptor.clone();
        let builder = Arc::clone(&builder);
        let router = router.clone();
        let metrics = metrics.clone();
        // Taken before the handshake, so a drain also waits for connections that are
        // still shaking hands (bounded by the handshake timeout).
        let watcher = graceful.watcher();
        tokio::spawn(async move {
            // Held for the connection's whole life.
            let _slot = slot;
            let tls = match tokio::time::timeout(limits.handshake_timeout, acceptor.accept(stream))
                .await
            {
                Ok(Ok(tls)) => tls,
                Ok(Err(error)) => {
                    metrics.observe_handshake_failure(HandshakeFailure::Error);
                    tracing::debug!(%error, %peer, "TLS handshake failed");
                    return;
                }
                Err(_) => {
                    metrics.observe_handshake_failure(HandshakeFailure::Timeout);
                    tracing::debug!(%peer, "TLS handshake timed out");
                    return;
                }
            };
            let connection = builder.serve_connection(
                TokioIo::new(Deadlines::new(
                    tls,
                    limits.header_read_timeout,
                    limits.idle_timeout,
                )),
                TowerToHyperService::new(router),
            );
            if let Err(error) = watcher.watch(connection).await {
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

/// Deadlines on a connection's I/O, which hyper does not have: the client must send its
/// first bytes within `first_byte` of the handshake (hyper's own header timeout starts
/// only once it knows the protocol, and telling HTTP/1.1 from HTTP/2 waits for those
/// bytes), must then never fall silent for longer than `idle`, and must not leave a
/// write of ours blocked (by not reading its answers) for longer than `idle`. A
/// deadline that passes fails the read or write, and hyper closes the connection.
///
/// Reads are stamped with the time they arrive; the timer is re-armed only when it
/// fires early, so the common path is one clock read per read.
struct Deadlines<IO> {
    io: IO,
    first_byte: Duration,
    idle: Duration,
    /// When the last byte arrived (the handshake's end before any did).
    last_read: Instant,
    started: bool,
    read_timer: Pin<Box<Sleep>>,
    /// Since when a write has been waiting for the client to read.
    write_blocked: Option<Instant>,
    write_timer: Pin<Box<Sleep>>,
}

impl<IO> Deadlines<IO> {
    fn new(io: IO, first_byte: Duration, idle: Duration) -> Self {
        let now = Instant::now();
        Self {
            io,
            first_byte,
            idle,
            last_read: now,
            started: false,
            read_timer: Box::pin(tokio::time::sleep_until(now + first_byte)),
            write_blocked: None,
            write_timer: Box::pin(tokio::time::sleep_until(now + idle)),
        }
    }

    fn read_deadline(&self) -> Instant {
        self.last_read
            + if self.started {
                self.idle
            } else {
                self.first_byte
            }
    }
}

fn timed_out(what: &'static str) -> std::io::Error {
    std::io::Error::new(std::io::ErrorKind::TimedOut, what)
}

/// Whether `deadline` has passed; otherwise arms `timer` for it (registering `cx`).
fn passed(timer: &mut Pin<Box<Sleep>>, deadline: Instant, cx: &mut Context<'_>) -> bool {
    if Instant::now() >= deadline {
        return true;
    }
    if timer.deadline() != deadline {
        timer.as_mut().reset(deadline);
    }
    // Registers the waker; fires at the deadline, when this is polled again.
    let _ = timer.as_mut().poll(cx);
    false
}

impl<IO: AsyncRead + Unpin> AsyncRead for Deadlines<IO> {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<std::io::Result<()>> {
        let before = buf.filled().len();
        let this = &mut *self;
        match Pin::new(&mut this.io).poll_read(cx, buf) {
            Poll::Ready(Ok(())) if buf.filled().len() > before => {
                this.last_read = Instant::now();
                this.started = true;
                Poll::Ready(Ok(()))
            }
            Poll::Pending => {
                let deadline = this.read_deadline();
                if passed(&mut this.read_timer, deadline, cx) {
                    Poll::Ready(Err(timed_out(if this.started {
                        "client idle for longer than the idle timeout"
                    } else {
                        "no request within the header read timeout"
                    })))
                } else {
                    Poll::Pending
                }
            }
            other => other,
        }
    }
}

impl<IO: AsyncWrite + Unpin> Deadlines<IO> {
    fn track_write<T>(
        &mut self,
        cx: &mut Context<'_>,
        result: Poll<std::io::Result<T>>,
    ) -> Poll<std::io::Result<T>> {
        match result {
            Poll::Pending => {
                let since = *self.write_blocked.get_or_insert_with(Instant::now);
                if passed(&mut self.write_timer, since + self.idle, cx) {
                    Poll::Ready(Err(timed_out(
                        "client has not read our answer within the idle timeout",
                    )))
                } else {
                    Poll::Pending
                }
            }
            ready => {
                self.write_blocked = None;
                ready
            }
        }
    }
}

impl<IO: AsyncWrite + Unpin> AsyncWrite for Deadlines<IO> {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        data: &[u8],
    ) -> Poll<std::io::Result<usize>> {
        let this = &mut *self;
        let result = Pin::new(&mut this.io).poll_write(cx, data);
        this.track_write(cx, result)
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        let this = &mut *self;
        let result = Pin::new(&mut this.io).poll_flush(cx);
        this.track_write(cx, result)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        let this = &mut *self;
        let result = Pin::new(&mut this.io).poll_shutdown(cx);
        this.track_write(cx, result)
    }

    fn poll_write_vectored(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[std::io::IoSlice<'_>],
    ) -> Poll<std::io::Result<usize>> {
        let this = &mut *self;
        let result = Pin::new(&mut this.io).poll_write_vectored(cx, bufs);
        this.track_write(cx, result)
    }

    fn is_write_vectored(&self) -> bool {
        self.io.is_write_vectored()
    }
}
