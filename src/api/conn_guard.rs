//! The deadlines of one HTTP connection: how long a client may take to send a request's
//! headers, its body, and how long a connection may sit with nothing moving.
//!
//! # Why not hyper's own timeout
//! hyper 1 has one, `header_read_timeout`, and it starts the moment a connection is ready for
//! a request, so it doubles as the keep-alive idle timeout, and nothing bounds a body that
//! trickles in. A client claiming a 1 GB body and sending a byte a second held its connection
//! for ever. [`GuardedIo`] wraps the socket and fails its reads and writes once the current
//! deadline has passed, which makes hyper drop the connection; the HTTP service tells the
//! guard where a request stands ([`ConnGuard::headers_read`], [`ConnGuard::answered`]).
//!
//! # Promises
//! - *Idle*: a new connection, or one that answered its last request, is closed when no
//!   byte has moved either way for `idle` (so a client that stops reading a response is cut off
//!   too).
//! - *Headers*: the first byte of a request starts a clock; its headers must be complete within
//!   `header`, however slowly the bytes come.
//! - *Body*: from the end of the headers, the whole request must be read within `body`.
//!   Once it is (`ConnGuard::body_read`), nothing is timed until the answer is ready: how long
//!   a request may take is the core's request timeout.
//!
//! The deadline is checked whenever the connection reads or writes, and a timer wakes the
//! connection at the deadline, so a client that sends nothing at all is also cut off.

// Deadlines are measured on the clock (see clippy.toml: only the core must not read it).
#![allow(clippy::disallowed_methods)]
use std::future::Future;
use std::io;
use std::pin::Pin;
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll};
use std::time::Duration;
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::time::{Instant, Sleep};

/// The three timeouts of a connection.
#[derive(Clone, Copy, Debug)]
pub struct Deadlines {
    pub header: Duration,
    pub body: Duration,
    pub idle: Duration,
}

/// Where a connection's current request stands, shared by its socket and its HTTP service.
#[derive(Clone, Debug)]
pub struct ConnGuard {
    inner: Arc<Mutex<Phase>>,
    deadlines: Deadlines,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Phase {
    /// Between requests; closed when nothing moves until the instant held.
    Idle { last_activity: Instant },
    /// A request has begun: its headers are due by the instant held.
    Headers { due: Instant },
    /// The headers are in: the body is due by the instant held.
    Body { due: Instant },
    /// The whole request is in and is being answered: no deadline (the core bounds a
    /// request's time; a slow quorum must not cut the connection before its answer).
    Handling,
}

impl ConnGuard {
    pub fn new(deadlines: Deadlines) -> ConnGuard {
        ConnGuard {
            inner: Arc::new(Mutex::new(Phase::Idle {
                last_activity: Instant::now(),
            })),
            deadlines,
        }
    }

    /// The request's headers are complete (the service was called): its body is due next.
    pub fn headers_read(&self) {
        *self.lock() = Phase::Body {
            due: Instant::now() + self.deadlines.body,
        };
    }

    /// The request's body has been read to its end: it is being answered.
    pub fn body_read(&self) {
        let mut phase = self.lock();
        if let Phase::Body { .. } = *phase {
            *phase = Phase::Handling;
        }
    }

    /// The request was answered: the connection is idle until the next one begins.
    pub fn answered(&self) {
        *self.lock() = Phase::Idle {
            last_activity: Instant::now(),
        };
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Phase> {
        // A poisoned lock still holds a valid phase: every write is one assignment.
        self.inner.lock().unwrap_or_else(|e| e.into_inner())
    }

    fn deadline(&self) -> Option<Instant> {
        match *self.lock() {
            Phase::Idle { last_activity } => Some(last_activity + self.deadlines.idle),
            Phase::Headers { due } | Phase::Body { due } => Some(due),
            Phase::Handling => None,
        }
    }

    /// `n` bytes were read: the first bytes after an idle spell begin a request.
    fn on_read(&self, n: usize) {
        if n == 0 {
            return;
        }
        let mut phase = self.lock();
        if let Phase::Idle { .. } = *phase {
            *phase = Phase::Headers {
                due: Instant::now() + self.deadlines.header,
            };
        }
    }

    /// Bytes were written: an idle connection that is still answering is not idle.
    fn on_write(&self) {
        let mut phase = self.lock();
        if let Phase::Idle { last_activity } = &mut *phase {
            *last_activity = Instant::now();
        }
    }
}

/// A socket whose reads and writes fail with `TimedOut` once its [`ConnGuard`]'s deadline has
/// passed.
pub struct GuardedIo<S> {
    io: S,
    guard: ConnGuard,
    timer: Pin<Box<Sleep>>,
}

impl<S> GuardedIo<S> {
    pub fn new(io: S, guard: ConnGuard) -> GuardedIo<S> {
        let deadline = guard
            .deadline()
            .unwrap_or_else(|| Instant::now() + guard.deadlines.idle);
        GuardedIo {
            io,
            guard,
            timer: Box::pin(tokio::time::sleep_until(deadline)),
        }
    }

    /// `Err(TimedOut)` once the deadline has passed; otherwise arms the timer to wake this
    /// task no later than the deadline.
    ///
    /// The timer is moved only to an earlier deadline. Most moves are to a later one (each
    /// request's deadlines fall after the last request's), and re-registering the timer for
    /// every one cost a few percent of a request; instead, a timer that fires before the
    /// current deadline is re-armed for it then.
    fn check(&mut self, cx: &mut Context<'_>) -> io::Result<()> {
        let Some(deadline) = self.guard.deadline() else {
            return Ok(());
        };
        if deadline < self.timer.deadline() {
            self.timer.as_mut().reset(deadline);
        }
        while self.timer.as_mut().poll(cx).is_ready() {
            if Instant::now() >= deadline {
                return Err(io::Error::new(
                    io::ErrorKind::TimedOut,
                    "HTTP connection deadline passed",
                ));
            }
            // Fired for an earlier deadline since moved on: wait for the current one.
            self.timer.as_mut().reset(deadline);
        }
        Ok(())
    }
}

impl<S: AsyncRead + Unpin> AsyncRead for GuardedIo<S> {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        let this = &mut *self;
        // Checked before reading too, so a client that keeps bytes coming cannot outrun it.
        this.check(cx)?;
        let before = buf.filled().len();
        let result = Pin::new(&mut this.io).poll_read(cx, buf);
        if let Poll::Ready(Ok(())) = result {
            this.guard.on_read(buf.filled().len() - before);
        }
        result
    }
}

impl<S: AsyncWrite + Unpin> AsyncWrite for GuardedIo<S> {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        data: &[u8],
    ) -> Poll<io::Result<usize>> {
        let this = &mut *self;
        this.check(cx)?;
        let result = Pin::new(&mut this.io).poll_write(cx, data);
        if let Poll::Ready(Ok(_)) = result {
            this.guard.on_write();
        }
        result
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.io).poll_flush(cx)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.io).poll_shutdown(cx)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use tokio::io::{AsyncReadExt, AsyncWriteExt};

    fn deadlines() -> Deadlines {
        Deadlines {
            header: Duration::from_millis(100),
            body: Duration::from_millis(200),
            idle: Duration::from_millis(300),
        }
    }

    #[tokio::test(start_paused = true)]
    async fn an_idle_connection_times_out_after_idle() {
        let (client, server) = tokio::io::duplex(64);
        let mut io = GuardedIo::new(server, ConnGuard::new(deadlines()));
        let start = Instant::now();
        let mut buf = [0u8; 8];
        let err = io.read(&mut buf).await.unwrap_err();
        assert_eq!(err.kind(), io::ErrorKind::TimedOut);
        assert_eq!(start.elapsed(), Duration::from_millis(300));
        drop(client);
    }

    #[tokio::test(start_paused = true)]
    async fn trickled_headers_time_out_after_header_from_the_first_byte() {
        let (mut client, server) = tokio::io::duplex(64);
        let mut io = GuardedIo::new(server, ConnGuard::new(deadlines()));
        let start = Instant::now();
        let mut buf = [0u8; 8];
        let mut result = Ok(0);
        for _ in 0..10 {
            client.write_all(b"G").await.unwrap();
            result = io.read(&mut buf).await;
            if result.is_err() {
                break;
            }
            tokio::time::sleep(Duration::from_millis(40)).await;
        }
        assert_eq!(result.unwrap_err().kind(), io::ErrorKind::TimedOut);
        assert!(start.elapsed() <= Duration::from_millis(140));
    }

    #[tokio::test(start_paused = true)]
    async fn a_body_is_due_body_after_the_headers_then_idle_again() {
        let (mut client, server) = tokio::io::duplex(64);
        let guard = ConnGuard::new(deadlines());
        let mut io = GuardedIo::new(server, guard.clone());
        let mut buf = [0u8; 8];
        client.write_all(b"PUT").await.unwrap();
        assert_eq!(io.read(&mut buf).await.unwrap(), 3);
        guard.headers_read();
        let start = Instant::now();
        assert_eq!(
            io.read(&mut buf).await.unwrap_err().kind(),
            io::ErrorKind::TimedOut
        );
        assert_eq!(start.elapsed(), Duration::from_millis(200));
        guard.answered();
        let start = Instant::now();
        assert!(io.read(&mut buf).await.is_err());
        assert_eq!(start.elapsed(), Duration::from_millis(300));
    }

    #[tokio::test(start_paused = true)]
    async fn deadlines_that_move_later_are_kept_and_the_last_one_still_cuts_off() {
        // Requests every 200 ms on a connection whose idle timeout is 300 ms: each one moves
        // the deadline past where the timer was armed, and none may be cut off by it.
        let (mut client, server) = tokio::io::duplex(64);
        let guard = ConnGuard::new(deadlines());
        let mut io = GuardedIo::new(server, guard.clone());
        let mut buf = [0u8; 8];
        for _ in 0..5 {
            let idle = tokio::time::timeout(Duration::from_millis(200), io.read(&mut buf)).await;
            assert!(
                idle.is_err(),
                "an idle connection was cut off before its idle timeout"
            );
            client.write_all(b"GET").await.unwrap();
            assert_eq!(io.read(&mut buf).await.unwrap(), 3);
            guard.headers_read();
            guard.body_read();
            guard.answered();
        }
        let start = Instant::now();
        assert_eq!(
            io.read(&mut buf).await.unwrap_err().kind(),
            io::ErrorKind::TimedOut
        );
        assert_eq!(start.elapsed(), Duration::from_millis(300));
    }

    #[tokio::test(start_paused = true)]
    async fn a_request_being_answered_has_no_deadline() {
        let (mut client, server) = tokio::io::duplex(64);
        let guard = ConnGuard::new(deadlines());
        let mut io = GuardedIo::new(server, guard.clone());
        let mut buf = [0u8; 8];
        client.write_all(b"GET").await.unwrap();
        assert_eq!(io.read(&mut buf).await.unwrap(), 3);
        guard.headers_read();
        guard.body_read();
        // A slow answer: the socket is polled meanwhile, and must not time out.
        let read = tokio::time::timeout(Duration::from_secs(5), io.read(&mut buf)).await;
        assert!(read.is_err(), "a request being answered was cut off");
        guard.answered();
        assert!(io.read(&mut buf).await.is_err());
    }
}
