//! [`Deadlines`]: time limits on a connection's reads and writes, which hyper lacks.

use std::pin::Pin;
use std::task::{Context, Poll};
use std::time::Duration;

use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::time::{Instant, Sleep};

/// Deadlines on a connection's I/O, which hyper does not have: the client must send its
/// first bytes within `first_byte` of the handshake (hyper's own header timeout starts
/// only once it knows the protocol, and telling HTTP/1.1 from HTTP/2 waits for those
/// bytes), must then never fall silent for longer than `idle`, and must not leave a
/// write of ours blocked (by not reading its answers) for longer than `idle`. A
/// deadline that passes fails the read or write, and hyper closes the connection.
///
/// Reads are stamped with the time they arrive; a timer is re-armed only after it fired
/// early or when it would fire too late, so the common path is one clock read per read.
pub(super) struct Deadlines<IO> {
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
    pub(super) fn new(io: IO, first_byte: Duration, idle: Duration) -> Self {
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
    // Re-arming takes the timer driver's lock, so a timer that will fire before the
    // deadline is left alone: it fires early (once per idle timeout at most), and the
    // poll that follows re-arms it for the deadline of that moment.
    if timer.is_elapsed() || timer.deadline() > deadline {
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
