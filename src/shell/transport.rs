//! Peer-to-peer message transport over QUIC (quinn), mutually authenticated by TLS.
//!
//! One QUIC connection per peer pair, one unidirectional stream per message: a frame is the
//! bincode-encoded [`Envelope`], written whole and finished. A peer dials another on first use
//! and caches the connection; an accepted connection is cached under the sender's name too, so
//! the pair shares it both ways. Every remote call (connect, open, write) has a timeout, and a
//! failed send is reported to the caller so the core can count the replica as failed at once.

use crate::core::message::{self, Envelope, PeerMessage, MAX_FRAME_BYTES};
use crate::core::types::NodeId;
use crate::shell::auth::{PeerIdentity, PEER_SERVER_NAME};
use anyhow::Context;
use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;
use thiserror::Error;
use tokio::sync::{mpsc, Mutex};

const CONNECT_TIMEOUT: Duration = Duration::from_secs(1);
const SEND_TIMEOUT: Duration = Duration::from_secs(2);

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

/// A message that arrived from a peer.
pub type Inbound = (NodeId, PeerMessage);

#[derive(Clone)]
pub struct PeerTransport {
    endpoint: quinn::Endpoint,
    self_name: NodeId,
    connections: Arc<Mutex<HashMap<NodeId, quinn::Connection>>>,
    inbound: mpsc::Sender<Inbound>,
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
        };
        let acceptor = transport.clone();
        tokio::spawn(async move { acceptor.accept_loop().await });
        Ok(transport)
    }

    pub fn local_addr(&self) -> std::io::Result<SocketAddr> {
        self.endpoint.local_addr()
    }

    async fn accept_loop(self) {
        while let Some(incoming) = self.endpoint.accept().await {
            let this = self.clone();
            tokio::spawn(async move {
                match incoming.await {
                    Ok(connection) => this.read_streams(connection).await,
                    Err(e) => tracing::debug!(error = %e, "peer handshake refused"),
                }
            });
        }
    }

    /// Reads every stream of one connection, dialed or accepted, until it closes. Each stream
    /// is read by its own task, so one slow or large message never holds up the others.
    async fn read_streams(&self, connection: quinn::Connection) {
        let registered = Arc::new(std::sync::atomic::AtomicBool::new(false));
        while let Ok(stream) = connection.accept_uni().await {
            let this = self.clone();
            let connection = connection.clone();
            let registered = registered.clone();
            tokio::spawn(async move {
                let Some(envelope) = read_frame(stream, &connection).await else {
                    return;
                };
                if !registered.swap(true, std::sync::atomic::Ordering::Relaxed) {
                    this.connections
                        .lock()
                        .await
                        .entry(envelope.from.clone())
                        .or_insert(connection);
                }
                let _ = this.inbound.send((envelope.from, envelope.message)).await;
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

    /// Sends one message to `node` at `addr`. On failure the cached connection is dropped.
    pub async fn send(
        &self,
        node: &NodeId,
        addr: SocketAddr,
        message: &PeerMessage,
    ) -> Result<(), TransportError> {
        let frame = message::encode(&self.self_name, message)?;
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

/// Reads and decodes one message stream; a bad or slow stream is logged and dropped.
async fn read_frame(
    mut stream: quinn::RecvStream,
    connection: &quinn::Connection,
) -> Option<Envelope> {
    let frame = match tokio::time::timeout(SEND_TIMEOUT, stream.read_to_end(MAX_FRAME_BYTES)).await
    {
        Ok(Ok(frame)) => frame,
        Ok(Err(e)) => {
            tracing::debug!(error = %e, "peer stream read failed");
            return None;
        }
        Err(_) => {
            tracing::debug!("peer stream read timed out");
            return None;
        }
    };
    match message::decode(&frame) {
        Ok(envelope) => Some(envelope),
        Err(e) => {
            tracing::warn!(error = %e, remote = %connection.remote_address(), "bad peer frame dropped");
            None
        }
    }
}
