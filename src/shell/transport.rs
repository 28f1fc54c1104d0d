//! Peer-to-peer message transport over QUIC (quinn), mutually authenticated by TLS.
//!
//! One QUIC connection per peer pair, one unidirectional stream per message: a frame is the
//! bincode-encoded [`Envelope`] (sender, trace, message), written whole and finished. A peer dials another on first use
//! and caches the connection; an accepted connection is cached under the sender's name too, so
//! the pair shares it both ways. Every remote call (connect, open, write) has a timeout, and a
//! failed send is reported to the caller so the core can count the replica as failed at once.
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
//!   is slowed by flow control). A frame over `MAX_FRAME_BYTES` is dropped, and a stream that
//!   does not finish within the send timeout is dropped. At most [`MAX_INBOUND_CONNECTIONS`]
//!   accepted connections are open at once; more are refused.

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
/// Bytes read from a stream at a time.
const READ_CHUNK: usize = 64 * 1024;
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

#[derive(Clone)]
pub struct PeerTransport {
    endpoint: quinn::Endpoint,
    self_name: NodeId,
    connections: Arc<Mutex<HashMap<NodeId, quinn::Connection>>>,
    inbound: mpsc::Sender<Inbound>,
    /// Envelopes dropped because their `from` was not the sender's certificate name.
    rejected: Arc<AtomicU64>,
    /// Accepted connections still open.
    inbound_connections: Arc<AtomicUsize>,
}

impl PeerTransport {
    /// Binds the QUIC endpoint on an already bound UDP socket and starts accepting peers;
    /// decoded messages go to `inbound`.
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
            inbound,
            rejected: Arc::new(AtomicU64::new(0)),
            inbound_connections: Arc::new(AtomicUsize::new(0)),
        };
        let acceptor = transport.clone();
        tokio::spawn(async move { acceptor.accept_loop().await });
        Ok(transport)
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
        while let Ok(stream) = connection.accept_uni().await {
            let this = self.clone();
            let connection = connection.clone();
            let registered = registered.clone();
            let budget = budget.clone();
            let sender = sender.clone();
            tokio::spawn(async move {
                let Some((envelope, _held)) = read_frame(stream, &connection, budget).await else {
                    return;
                };
                if !sender_matches(&sender, &envelope) {
                    let total = this.rejected.fetch_add(1, Ordering::Relaxed) + 1;
                    tracing::warn!(
                        from = %envelope.from,
                        certificate = %sender,
                        remote = %connection.remote_address(),
                        rejected_total = total,
                        "peer envelope whose sender is not its certificate's peer: dropped"
                    );
                    return;
                }
                if !registered.swap(true, Ordering::Relaxed) {
                    this.connections
                        .lock()
                        .await
                        .entry(envelope.from.clone())
                        .or_insert(connection);
                }
                let inbound = Inbound {
                    from: envelope.from,
                    trace: envelope.trace,
                    message: envelope.message,
                };
                let _ = this.inbound.send(inbound).await;
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

    /// Sends one message to `node` at `addr`, labelled with the trace of the client request
    /// it is sent for, if any. On failure the cached connection is dropped.
    pub async fn send(
        &self,
        node: &NodeId,
        addr: SocketAddr,
        trace: Option<&TraceId>,
        message: &PeerMessage,
    ) -> Result<(), TransportError> {
        let frame = message::encode(&self.self_name, trace, message)?;
        let result = tokio::time::timeout(SEND_TIMEOUT, async {
            let connection = self.connection_to(node, addr).await?;
            let mut stream = connection
                .open_uni()
                .await
                .map_err(|e| TransportError::Stream(e.to_string()))?;
            stream
                .write_all(&frame)
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

/// Reads and decodes one message stream; a bad, slow or oversized stream is logged and
/// dropped. The frame's bytes are taken from the connection's read `budget` as they arrive, and
/// the returned permit holds them until the envelope is handed on.
async fn read_frame(
    mut stream: quinn::RecvStream,
    connection: &quinn::Connection,
    budget: Arc<Semaphore>,
) -> Option<(Envelope, OwnedSemaphorePermit)> {
    let read = async {
        let mut frame = Vec::new();
        let mut held = budget.clone().acquire_many_owned(0).await.ok()?;
        while let Some(chunk) = stream
            .read_chunk(READ_CHUNK, true)
            .await
            .map_err(|e| tracing::debug!(error = %e, "peer stream read failed"))
            .ok()?
        {
            if frame.len() + chunk.bytes.len() > MAX_FRAME_BYTES {
                tracing::warn!(remote = %connection.remote_address(), "peer frame over {MAX_FRAME_BYTES} bytes dropped");
                let _ = stream.stop(0u32.into());
                return None;
            }
            let permit = budget
                .clone()
                .acquire_many_owned(chunk.bytes.len() as u32)
                .await
                .ok()?;
            held.merge(permit);
            frame.extend_from_slice(&chunk.bytes);
        }
        Some((frame, held))
    };
    let (frame, held) = match tokio::time::timeout(SEND_TIMEOUT, read).await {
        Ok(Some(read)) => read,
        Ok(None) => return None,
        Err(_) => {
            tracing::debug!("peer stream read timed out");
            return None;
        }
    };
    match message::decode(&frame) {
        Ok(envelope) => Some((envelope, held)),
        Err(e) => {
            tracing::warn!(error = %e, remote = %connection.remote_address(), "bad peer frame dropped");
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
}
