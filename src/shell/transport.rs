//! Peer-to-peer message transport over QUIC (quinn), mutually authenticated by TLS.
//!
//! One QUIC connection per peer pair. A stream carries a sequence of frames, each a 4-byte
//! little-endian length and the bincode-encoded [`Envelope`]. Messages a core sends go through
//! [`PeerTransport::enqueue`]: small ones join the peer's *outbox*, whose one writer task keeps a
//! long-lived stream open and writes whatever has queued since its last write in one go (under
//! load, many messages per write and no task, stream or wake-up per message); a large one (a
//! handoff step, an anti-entropy batch) gets a stream of its own, so it never holds up the small
//! ones behind it. A peer dials another on first use and caches the connection; an accepted
//! connection is cached under the sender's name too, so the pair shares it both ways. Every
//! remote call (connect, open, write) has a timeout, and a message that could not be written is
//! reported to its sender so the core can count the replica as failed at once.
//!
//! # Promises towards a peer holding the cluster secret
//! - An envelope is delivered only if its `from` is the peer name in the sender's certificate
//!   (`auth::peer_name_of`); any other is dropped with a warning and counted
//!   ([`PeerTransport::rejected_envelopes`]). A dialed peer must present the certificate of the
//!   name it was dialed for. So a peer cannot speak as another over its own connection, nor
//!   register its connection under another's name. (A holder of the secret can mint a
//!   certificate for any name: see `auth`.)
//! - A connection buffers a bounded amount: at most [`MAX_STREAMS_PER_CONNECTION`] streams at
//!   once, quinn's receive windows ([`STREAM_RECEIVE_WINDOW`], [`CONNECTION_RECEIVE_WINDOW`];
//!   see `auth::transport_config`), and frames being read hold at most
//!   [`READ_BUDGET_PER_CONNECTION`] bytes between them (a stream waits for room, so the sender
//!   is slowed by flow control). A frame announced over `MAX_FRAME_BYTES` ends its stream
//!   before a byte of it is read, and a frame that does not arrive whole within the send
//!   timeout of its first byte ends its stream. At most [`MAX_INBOUND_CONNECTIONS`]
//!   accepted connections are open at once; more are refused.
//! - A message may be taken by a handler on the stream task that read it
//!   ([`PeerTransport::handle_inline`]: the driver runs it there, or queues it in a bounded
//!   queue of its shard's); that stream reads its next frame once the handler returned, and
//!   nothing is buffered without bound. What the handler hands back goes to the bounded queue,
//!   where the router sheds it when its shard's inbox is full.

use crate::core::message::{self, Envelope, PeerMessage, MAX_FRAME_BYTES};
use crate::core::types::{NodeId, TraceId};
use crate::shell::auth::{peer_name_of, PeerIdentity, PEER_SERVER_NAME};
use anyhow::Context;
use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;
use thiserror::Error;
use tokio::sync::{mpsc, Mutex, OwnedSemaphorePermit, Semaphore};

const CONNECT_TIMEOUT: Duration = Duration::from_secs(1);
const SEND_TIMEOUT: Duration = Duration::from_secs(2);
/// Unidirectional streams (messages) a peer may have open towards this one per connection.
pub const MAX_STREAMS_PER_CONNECTION: u32 = 256;
/// Bytes quinn buffers per stream before the sender must wait for the reader.
pub const STREAM_RECEIVE_WINDOW: u32 = 4 * 1024 * 1024;
/// Bytes quinn buffers per connection, all streams together (quinn's default is unlimited).
pub const CONNECTION_RECEIVE_WINDOW: u32 = 32 * 1024 * 1024;
/// Bytes of partly read frames one connection may hold; one largest frame fits.
pub const READ_BUDGET_PER_CONNECTION: usize = MAX_FRAME_BYTES;
/// Accepted connections open at once (a few per member is plenty).
pub const MAX_INBOUND_CONNECTIONS: usize = 1024;
/// Encoded messages up to this size share the peer's outbox stream; larger ones get their own.
pub const OUTBOX_FRAME_BYTES: usize = 64 * 1024;
/// Most bytes an outbox writes at once (it takes what has queued, up to this).
const OUTBOX_BATCH_BYTES: usize = 256 * 1024;
// One largest frame must fit the budget, or it could never be read.
const _: () = assert!(READ_BUDGET_PER_CONNECTION >= MAX_FRAME_BYTES);
const _: () = assert!(READ_BUDGET_PER_CONNECTION <= Semaphore::MAX_PERMITS);

#[derive(Debug, Error)]
pub enum TransportError {
    #[error("connecting to {addr}: {reason}")]
    Connect { addr: SocketAddr, reason: String },
    #[error("timed out after {0:?}")]
    Timeout(Duration),
    #[error("stream: {0}")]
    Stream(String),
    #[error(transparent)]
    Codec(#[from] message::CodecError),
}

/// A message that arrived from a peer, with the trace of the client request it was sent for.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Inbound {
    pub from: NodeId,
    pub trace: Option<TraceId>,
    pub message: PeerMessage,
}

/// Handles a message on the task that read it, if it can: `None` once it took the message
/// (handled it, or dropped it as the network might have), or the message back when it must
/// wait its turn on the queue passed to [`PeerTransport::start`] instead.
pub type InlineHandler = Box<dyn Fn(Inbound) -> Option<Inbound> + Send + Sync>;

/// Where to report a message that could not be written: its peer and request number.
pub type Undeliverable = mpsc::UnboundedSender<(NodeId, u64)>;

/// A message waiting in a peer's outbox, already framed.
struct Queued {
    addr: SocketAddr,
    frame: Vec<u8>,
    req: u64,
    undeliverable: Option<Undeliverable>,
}

#[derive(Clone)]
pub struct PeerTransport {
    endpoint: quinn::Endpoint,
    self_name: NodeId,
    connections: Arc<Mutex<HashMap<NodeId, quinn::Connection>>>,
    /// Per peer, the queue its outbox writer drains (see [`PeerTransport::enqueue`]).
    outboxes: Arc<std::sync::Mutex<HashMap<NodeId, mpsc::UnboundedSender<Queued>>>>,
    inbound: mpsc::Sender<Inbound>,
    /// Tried first with every message read (see [`PeerTransport::handle_inline`]).
    inline: Arc<std::sync::OnceLock<InlineHandler>>,
    /// Envelopes dropped because their `from` was not the sender's certificate name.
    rejected: Arc<AtomicU64>,
    /// Accepted connections still open.
    inbound_connections: Arc<AtomicUsize>,
}

impl PeerTransport {
    /// Binds the QUIC endpoint on an already bound UDP socket and starts accepting peers;
    /// decoded messages go to `inbound`, unless an inline handler takes them first.
    pub fn start(
        socket: std::net::UdpSocket,
        identity: &PeerIdentity,
        self_name: NodeId,
        inbound: mpsc::Sender<Inbound>,
    ) -> anyhow::Result<PeerTransport> {
        let runtime = quinn::default_runtime().context("no async runtime for QUIC")?;
        let mut endpoint = quinn::Endpoint::new(
            quinn::EndpointConfig::default(),
            Some(identity.quic_server_config()?),
            socket,
            runtime,
        )
        .context("starting the QUIC endpoint")?;
        endpoint.set_default_client_config(identity.quic_client_config()?);
        let transport = PeerTransport {
            endpoint,
            self_name,
            connections: Arc::new(Mutex::new(HashMap::new())),
            outboxes: Arc::new(std::sync::Mutex::new(HashMap::new())),
            inbound,
            inline: Arc::new(std::sync::OnceLock::new()),
            rejected: Arc::new(AtomicU64::new(0)),
            inbound_connections: Arc::new(AtomicUsize::new(0)),
        };
        let acceptor = transport.clone();
        tokio::spawn(async move { acceptor.accept_loop().await });
        Ok(transport)
    }

    /// From now on, offers each message read to `handler` first, on the task that read it:
    /// one hand-off fewer per message than the queue. Set once; a second call changes nothing.
    pub fn handle_inline(&self, handler: InlineHandler) {
        let _ = self.inline.set(handler);
    }

    pub fn local_addr(&self) -> std::io::Result<SocketAddr> {
        self.endpoint.local_addr()
    }

    /// Envelopes dropped so far because their `from` was not their sender's certificate name.
    pub fn rejected_envelopes(&self) -> u64 {
        self.rejected.load(Ordering::Relaxed)
    }

    async fn accept_loop(self) {
        while let Some(incoming) = self.endpoint.accept().await {
            if self.inbound_connections.load(Ordering::Relaxed) >= MAX_INBOUND_CONNECTIONS {
                tracing::warn!(remote = %incoming.remote_address(), "too many peer connections: refused");
                incoming.refuse();
                continue;
            }
            let this = self.clone();
            tokio::spawn(async move {
                match incoming.await {
                    Ok(connection) => {
                        this.inbound_connections.fetch_add(1, Ordering::Relaxed);
                        this.read_streams(connection).await;
                        this.inbound_connections.fetch_sub(1, Ordering::Relaxed);
                    }
                    Err(e) => tracing::debug!(error = %e, "peer handshake refused"),
                }
            });
        }
    }

    /// Reads every stream of one connection, dialed or accepted, until it closes. Each stream
    /// is read by its own task, so one slow or large message never holds up the others.
    async fn read_streams(&self, connection: quinn::Connection) {
        let Some(sender) = certificate_name(&connection) else {
            tracing::warn!(remote = %connection.remote_address(), "peer certificate names no peer: connection closed");
            connection.close(0u32.into(), b"certificate names no peer");
            return;
        };
        let sender: Arc<str> = sender.into();
        let budget = Arc::new(Semaphore::new(READ_BUDGET_PER_CONNECTION));
        let registered = Arc::new(std::sync::atomic::AtomicBool::new(false));
        while let Ok(mut stream) = connection.accept_uni().await {
            let this = self.clone();
            let connection = connection.clone();
            let registered = registered.clone();
            let budget = budget.clone();
            let sender = sender.clone();
            tokio::spawn(async move {
                while let Some((envelope, _held)) =
                    read_frame(&mut stream, &connection, &budget).await
                {
                    if !sender_matches(&sender, &envelope) {
                        let total = this.rejected.fetch_add(1, Ordering::Relaxed) + 1;
                        tracing::warn!(
                            from = %envelope.from,
                            certificate = %sender,
                            remote = %connection.remote_address(),
                            rejected_total = total,
                            "peer envelope whose sender is not its certificate's peer: dropped"
                        );
                        continue;
                    }
                    if !registered.swap(true, Ordering::Relaxed) {
                        this.connections
                            .lock()
                            .await
                            .entry(envelope.from.clone())
                            .or_insert(connection.clone());
                    }
                    let mut inbound = Inbound {
                        from: envelope.from,
                        trace: envelope.trace,
                        message: envelope.message,
                    };
                    if let Some(handle) = this.inline.get() {
                        match handle(inbound) {
                            None => continue,
                            Some(back) => inbound = back,
                        }
                    }
                    if this.inbound.send(inbound).await.is_err() {
                        return;
                    }
                }
            });
        }
    }

    async fn connection_to(
        &self,
        node: &NodeId,
        addr: SocketAddr,
    ) -> Result<quinn::Connection, TransportError> {
        if let Some(c) = self.connections.lock().await.get(node) {
            if c.close_reason().is_none() && c.remote_address() == addr {
                return Ok(c.clone());
            }
        }
        let connecting =
            self.endpoint
                .connect(addr, PEER_SERVER_NAME)
                .map_err(|e| TransportError::Connect {
                    addr,
                    reason: e.to_string(),
                })?;
        let connection = tokio::time::timeout(CONNECT_TIMEOUT, connecting)
            .await
            .map_err(|_| TransportError::Timeout(CONNECT_TIMEOUT))?
            .map_err(|e| TransportError::Connect {
                addr,
                reason: e.to_string(),
            })?;
        let named = certificate_name(&connection);
        if named.as_deref() != Some(node.as_str()) {
            connection.close(0u32.into(), b"not the peer dialed");
            return Err(TransportError::Connect {
                addr,
                reason: format!(
                    "the peer's certificate names {named:?}, not {node}: not the peer dialed"
                ),
            });
        }
        self.connections
            .lock()
            .await
            .insert(node.clone(), connection.clone());
        // The peer may answer on this same connection.
        let reader = self.clone();
        let dialed = connection.clone();
        tokio::spawn(async move { reader.read_streams(dialed).await });
        Ok(connection)
    }

    /// Sends one message to `node` at `addr` on a stream of its own, labelled with the trace
    /// of the client request it is sent for, if any, and waits until it is written. On failure
    /// the cached connection is dropped.
    pub async fn send(
        &self,
        node: &NodeId,
        addr: SocketAddr,
        trace: Option<&TraceId>,
        message: &PeerMessage,
    ) -> Result<(), TransportError> {
        let frame = encode_frame(&self.self_name, trace, message)?;
        self.send_frames(node, addr, &frame).await
    }

    async fn send_frames(
        &self,
        node: &NodeId,
        addr: SocketAddr,
        frames: &[u8],
    ) -> Result<(), TransportError> {
        let result = tokio::time::timeout(SEND_TIMEOUT, async {
            let connection = self.connection_to(node, addr).await?;
            let mut stream = connection
                .open_uni()
                .await
                .map_err(|e| TransportError::Stream(e.to_string()))?;
            stream
                .write_all(frames)
                .await
                .map_err(|e| TransportError::Stream(e.to_string()))?;
            stream
                .finish()
                .map_err(|e| TransportError::Stream(e.to_string()))?;
            Ok::<(), TransportError>(())
        })
        .await
        .unwrap_or(Err(TransportError::Timeout(SEND_TIMEOUT)));
        if result.is_err() {
            self.connections.lock().await.remove(node);
        }
        result
    }

    /// Queues one message for `node` at `addr` and returns at once; if it cannot be written,
    /// `(node, req)` goes to `undeliverable`. Small messages share the peer's outbox stream
    /// (written in the order queued, batched under load); a large one is sent on a stream of its
    /// own.
    pub fn enqueue(
        &self,
        node: NodeId,
        addr: SocketAddr,
        trace: Option<&TraceId>,
        message: &PeerMessage,
        undeliverable: Option<Undeliverable>,
    ) {
        let req = message.req();
        let frame = match encode_frame(&self.self_name, trace, message) {
            Ok(frame) => frame,
            Err(e) => {
                tracing::warn!(peer = %node, error = %e, "message not encoded");
                if let Some(u) = undeliverable {
                    let _ = u.send((node, req));
                }
                return;
            }
        };
        if frame.len() > OUTBOX_FRAME_BYTES {
            let this = self.clone();
            tokio::spawn(async move {
                if let Err(e) = this.send_frames(&node, addr, &frame).await {
                    tracing::debug!(peer = %node, error = %e, "send failed");
                    if let Some(u) = undeliverable {
                        let _ = u.send((node, req));
                    }
                }
            });
            return;
        }
        let queued = Queued {
            addr,
            frame,
            req,
            undeliverable,
        };
        let mut outboxes = self.outboxes.lock().expect("outboxes lock");
        let queued = match outboxes.get(&node) {
            Some(tx) => match tx.send(queued) {
                Ok(()) => return,
                Err(mpsc::error::SendError(queued)) => queued,
            },
            None => queued,
        };
        let (tx, rx) = mpsc::unbounded_channel();
        let _ = tx.send(queued);
        outboxes.insert(node.clone(), tx);
        let this = self.clone();
        tokio::spawn(async move { this.write_outbox(node, rx).await });
    }

    /// The outbox writer of one peer: writes what has queued, as one batch, on a stream it
    /// keeps open; after a failure it reports the batch undeliverable and starts afresh.
    async fn write_outbox(self, node: NodeId, mut queue: mpsc::UnboundedReceiver<Queued>) {
        let mut stream: Option<(SocketAddr, quinn::SendStream)> = None;
        let mut batch: Vec<Queued> = Vec::new();
        let mut bytes: Vec<u8> = Vec::new();
        while let Some(first) = queue.recv().await {
            // Let the tasks that are ready run first: a burst of requests on many client
            // tasks then queues its messages before this one writes, and they go in one write
            // (woken by the first of them, this task would otherwise run next, and write alone).
            tokio::task::yield_now().await;
            let mut batch_bytes = first.frame.len();
            batch.push(first);
            while batch_bytes < OUTBOX_BATCH_BYTES {
                match queue.try_recv() {
                    Ok(next) => {
                        batch_bytes += next.frame.len();
                        batch.push(next);
                    }
                    Err(_) => break,
                }
            }
            let addr = batch.last().expect("not empty").addr;
            bytes.clear();
            for q in &batch {
                bytes.extend_from_slice(&q.frame);
            }
            if stream.as_ref().is_some_and(|(a, _)| *a != addr) {
                stream = None;
            }
            let written = tokio::time::timeout(SEND_TIMEOUT, async {
                if stream.is_none() {
                    let connection = self.connection_to(&node, addr).await?;
                    let opened = connection
                        .open_uni()
                        .await
                        .map_err(|e| TransportError::Stream(e.to_string()))?;
                    stream = Some((addr, opened));
                }
                let (_, open) = stream.as_mut().expect("just opened");
                open.write_all(&bytes)
                    .await
                    .map_err(|e| TransportError::Stream(e.to_string()))
            })
            .await
            .unwrap_or(Err(TransportError::Timeout(SEND_TIMEOUT)));
            if let Err(e) = written {
                tracing::debug!(peer = %node, error = %e, messages = batch.len(), "send failed");
                stream = None;
                self.connections.lock().await.remove(&node);
                for q in batch.drain(..) {
                    if let Some(u) = q.undeliverable {
                        let _ = u.send((node.clone(), q.req));
                    }
                }
            }
            batch.clear();
        }
    }

    pub fn close(&self) {
        self.endpoint.close(0u32.into(), b"shutdown");
    }
}

/// The peer name in the certificate `connection`'s other side presented (verified by the
/// handshake against the cluster CA).
fn certificate_name(connection: &quinn::Connection) -> Option<String> {
    let identity = connection.peer_identity()?;
    let chain = identity
        .downcast::<Vec<rustls::pki_types::CertificateDer<'static>>>()
        .ok()?;
    peer_name_of(chain.first()?)
}

/// Whether `envelope` says it comes from the peer its connection's certificate names.
fn sender_matches(certificate_name: &str, envelope: &Envelope) -> bool {
    envelope.from.as_str() == certificate_name
}

/// One message as it travels: its envelope's length (4 bytes, little-endian), then the
/// envelope.
pub fn encode_frame(
    from: &NodeId,
    trace: Option<&TraceId>,
    message: &PeerMessage,
) -> Result<Vec<u8>, message::CodecError> {
    let mut frame = Vec::with_capacity(128);
    frame.extend_from_slice(&[0; 4]);
    message::encode_into(from, trace, message, &mut frame)?;
    let length = (frame.len() - 4) as u32;
    frame[..4].copy_from_slice(&length.to_le_bytes());
    // A large frame (a handoff step) may wait to be sent: hold no more than it needs.
    if frame.capacity() > 2 * frame.len() && frame.len() > 4096 {
        frame.shrink_to_fit();
    }
    Ok(frame)
}

/// Reads and decodes the next frame of a stream: `None` at its clean end, or when the frame
/// is bad, oversized or slow (logged; the stream is stopped). The frame's bytes are taken from
/// the connection's read `budget` before they are read, and the returned permit holds them
/// until the envelope is handled inline or handed on.
async fn read_frame(
    stream: &mut quinn::RecvStream,
    connection: &quinn::Connection,
    budget: &Arc<Semaphore>,
) -> Option<(Envelope, OwnedSemaphorePermit)> {
    let mut length = [0u8; 4];
    match stream.read_exact(&mut length).await {
        Ok(()) => {}
        Err(quinn::ReadExactError::FinishedEarly(0)) => return None,
        Err(e) => {
            tracing::debug!(error = %e, "peer stream read failed");
            return None;
        }
    }
    let length = u32::from_le_bytes(length) as usize;
    if length > MAX_FRAME_BYTES {
        tracing::warn!(remote = %connection.remote_address(), "peer frame over {MAX_FRAME_BYTES} bytes dropped");
        let _ = stream.stop(0u32.into());
        return None;
    }
    let read = async {
        let held = budget
            .clone()
            .acquire_many_owned(length as u32)
            .await
            .ok()?;
        let mut frame = vec![0u8; length];
        stream
            .read_exact(&mut frame)
            .await
            .map_err(|e| tracing::debug!(error = %e, "peer stream read failed"))
            .ok()?;
        Some((frame, held))
    };
    let (frame, held) = match tokio::time::timeout(SEND_TIMEOUT, read).await {
        Ok(Some(read)) => read,
        Ok(None) => return None,
        Err(_) => {
            tracing::debug!("peer frame read timed out");
            let _ = stream.stop(0u32.into());
            return None;
        }
    };
    match message::decode(&frame) {
        Ok(envelope) => Some((envelope, held)),
        Err(e) => {
            tracing::warn!(error = %e, remote = %connection.remote_address(), "bad peer frame dropped");
            let _ = stream.stop(0u32.into());
            None
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_envelope_must_come_from_its_certificate_s_peer() {
        let frame =
            message::encode(&NodeId::from("A"), None, &PeerMessage::StoreAck { req: 1 }).unwrap();
        let envelope = message::decode(&frame).unwrap();
        assert!(sender_matches("A", &envelope));
        assert!(!sender_matches("B", &envelope));
        assert!(!sender_matches("", &envelope));
        assert!(!sender_matches("A ", &envelope));
    }

    #[test]
    fn a_frame_is_its_envelope_after_its_length() {
        let message = PeerMessage::StoreAck { req: 3 };
        let trace = TraceId::parse("t-1").unwrap();
        let envelope = message::encode(&NodeId::from("A"), Some(&trace), &message).unwrap();
        let frame = encode_frame(&NodeId::from("A"), Some(&trace), &message).unwrap();
        assert_eq!(frame[..4], (envelope.len() as u32).to_le_bytes());
        assert_eq!(frame[4..], envelope);
    }
}
