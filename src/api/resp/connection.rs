//! One client connection: the only RESP code that touches a socket.
//!
//! # Promises
//! - *Pipelining*: every complete request in the read buffer is answered, in order, before
//!   the answers are flushed together (one write for a pipeline of small replies; output is
//!   flushed early once [`FLUSH_AT`] bytes are waiting). Key commands on distinct keys run
//!   side by side, anything else one after another (`Session::execute_pipeline`): a
//!   pipelined `SET k v` then `GET k` reads the write.
//! - *Bounded input*: a request is bounded by the parser's [`Limits`]; the unparsed bytes of
//!   a connection never exceed [`query_buffer_limit`] (Redis's `client-query-buffer-limit`
//!   idea): past it the client is told `-ERR Protocol error: …` and the connection is closed.
//! - *Deadlines*: with nothing pending, a connection idle for the idle timeout is closed; once
//!   a request's first byte has arrived, the whole request must arrive within the request
//!   timeout, however slowly it trickles in (no slowloris).
//! - *Malformed input*: answered `-ERR Protocol error: …`, then the connection is closed.
//! - *Subscribers*: while subscribed, published messages are written as they arrive, between
//!   requests; a subscriber has no idle timeout (as in Redis) and is disconnected once it
//!   falls behind by more than its output limit.

use crate::api::resp::frame::Frame;
use crate::api::resp::pubsub_commands;
use crate::api::resp::request::{Limits, RequestParser};
use crate::api::resp::session::{After, Session};
use bytes::BytesMut;
use std::io;
use std::time::Duration;
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tokio::time::Instant;

/// Replies waiting past this many bytes are written before the next request runs.
pub const FLUSH_AT: usize = 64 * 1024;
/// Requests taken off the buffer at once, to run as one pipeline (see
/// `Session::execute_pipeline`).
const MAX_PIPELINE_BATCH: usize = 256;
/// Where the connection's timer starts, and sits while no deadline is earlier.
const UNARMED: Duration = Duration::from_secs(24 * 60 * 60);
/// Bytes asked of the socket per read.
const READ_CHUNK: usize = 16 * 1024;

/// The most unparsed bytes a connection may hold: room for a request of several of the
/// largest bulk strings, and never less than 64 MiB.
pub fn query_buffer_limit(limits: &Limits) -> usize {
    limits.max_bulk_bytes.saturating_mul(4).max(64 << 20)
}

/// How long a connection may wait.
#[derive(Clone, Copy, Debug)]
pub struct Timeouts {
    /// With no request pending; `None`: for ever.
    pub idle: Option<Duration>,
    /// From a request's first byte to its last.
    pub request: Duration,
}

/// Serves `stream` until the client leaves, breaks the protocol, times out or QUITs.
// Deadlines are measured on the shell's clock (see clippy.toml: only the core must not).
#[allow(clippy::disallowed_methods)]
pub async fn serve<S>(
    mut stream: S,
    mut session: Session,
    limits: Limits,
    timeouts: Timeouts,
) -> io::Result<()>
where
    S: AsyncRead + AsyncWrite + Unpin,
{
    let mut parser = RequestParser::new(limits, !session.authenticated);
    let mut input = BytesMut::with_capacity(READ_CHUNK);
    let mut output: Vec<u8> = Vec::with_capacity(READ_CHUNK);
    let buffer_limit = query_buffer_limit(&limits);
    // When the oldest unanswered byte arrived: the pending request's deadline runs from it.
    let mut pending_since: Option<Instant> = None;
    // When the connection last did something (a read, a delivery, answers written): the idle
    // deadline runs from it. A turn of the loop that the timer began is not activity.
    let mut active_at = Instant::now();
    let mut timer_fired = false;
    // One timer for the connection's life, armed no later than the current deadline: a later
    // deadline (the idle one moves with every request) is not re-registered with the runtime
    // each time, but checked when the timer fires, which then re-arms for it.
    let timer = tokio::time::sleep(UNARMED);
    tokio::pin!(timer);
    loop {
        loop {
            // Every complete request in the buffer (one at a time before authentication,
            // whose limits AUTH lifts for the requests after it).
            let mut requests = Vec::new();
            let mut malformed = None;
            while requests.len() < MAX_PIPELINE_BATCH {
                match parser.parse(&mut input) {
                    Ok(Some(args)) if args.is_empty() => continue,
                    Ok(Some(args)) => {
                        requests.push(args);
                        if !session.authenticated {
                            break;
                        }
                    }
                    Ok(None) => break,
                    Err(e) => {
                        malformed = Some(e);
                        break;
                    }
                }
            }
            if requests.is_empty() && malformed.is_none() {
                break;
            }
            for (replies, after) in session.execute_pipeline(requests).await {
                for reply in replies {
                    reply.encode(session.protocol, &mut output);
                }
                if after == After::Close {
                    stream.write_all(&output).await?;
                    return stream.flush().await;
                }
            }
            parser.set_unauthenticated(!session.authenticated);
            if let Some(e) = malformed {
                return refuse(&mut stream, &mut output, &session, &format!("{e}")).await;
            }
            if output.len() >= FLUSH_AT {
                stream.write_all(&output).await?;
                output.clear();
            }
        }
        if !output.is_empty() {
            stream.write_all(&output).await?;
            output.clear();
        }
        if input.len() > buffer_limit {
            let why = format!("request larger than the query buffer limit of {buffer_limit} bytes");
            return refuse(&mut stream, &mut output, &session, &why).await;
        }
        pending_since = if input.is_empty() {
            None
        } else {
            Some(pending_since.unwrap_or_else(Instant::now))
        };
        if !std::mem::take(&mut timer_fired) {
            active_at = Instant::now();
        }
        let deadline = match pending_since {
            Some(since) => Some(since + timeouts.request),
            // A subscriber waits for messages, not requests: no idle timeout (as in Redis).
            None if session.subscriber.is_some() => None,
            None => timeouts.idle.map(|idle| active_at + idle),
        };
        if let Some(at) = deadline {
            if at < timer.deadline() {
                timer.as_mut().reset(at);
            }
        }
        input.reserve(READ_CHUNK);
        let message = async {
            match session.subscriber.as_mut() {
                Some(subscriber) => subscriber.recv().await,
                None => std::future::pending().await,
            }
        };
        tokio::select! {
            read = stream.read_buf(&mut input) => {
                if read? == 0 {
                    return Ok(());
                }
            }
            delivery = message => {
                // Fell behind by more than its output limit: disconnected, as Redis does.
                let Ok(first) = delivery else { return Ok(()) };
                pubsub_commands::message_frame(first).encode(session.protocol, &mut output);
                // More that are already queued go out in the same write, up to FLUSH_AT.
                while output.len() < FLUSH_AT {
                    let Some(subscriber) = session.subscriber.as_mut() else { break };
                    match subscriber.try_recv() {
                        Ok(Some(next)) => {
                            pubsub_commands::message_frame(next)
                                .encode(session.protocol, &mut output);
                        }
                        Ok(None) => break,
                        Err(_) => return Ok(()),
                    }
                }
            }
            () = &mut timer, if deadline.is_some() => {
                let at = deadline.expect("the timer is polled only with a deadline");
                if Instant::now() >= at {
                    return Ok(());
                }
                timer.as_mut().reset(at);
                timer_fired = true;
            }
        }
    }
}

/// Answers a protocol error and ends the connection.
async fn refuse<S>(
    stream: &mut S,
    output: &mut Vec<u8>,
    session: &Session,
    why: &str,
) -> io::Result<()>
where
    S: AsyncWrite + Unpin,
{
    Frame::error(format!("ERR Protocol error: {why}")).encode(session.protocol, output);
    stream.write_all(output).await?;
    stream.flush().await
}
