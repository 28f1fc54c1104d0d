//! chitchat's gossip over sealed UDP: a chitchat [`Transport`] whose socket seals every datagram
//! it sends and hands chitchat only the datagrams whose seal opens (`shell::gossip_seal`).
//!
//! Why this shape: chitchat 0.13 keeps its envelope codec crate-private, so the bytes of a
//! [`ChitchatEnvelope`] can only be had from its own [`UdpSocket`]. Each [`SealedSocket`] therefore
//! holds two loopback sockets beside the real one: chitchat's `UdpSocket` (the *codec*) and a
//! plain *relay*. To send, the codec encodes the envelope to the relay, and the relay's bytes are
//! sealed and sent on the real socket. To receive, a datagram from the real socket is opened
//! and only then relayed to the codec, which decodes it; the decoded envelope goes to chitchat
//! with the real sender's address. The cost is two loopback hops per gossip datagram (a few a
//! second per peer).
//!
//! # Promises
//! - No byte from the network reaches chitchat's decoder unless its seal opened: strangers'
//!   SynAcks, Acks, fake nodes and compressed bombs are dropped (and counted) before decoding.
//! - Datagrams that arrive on the codec socket from anywhere but the relay (a process on the
//!   same host writing to its loopback port) are decoded by chitchat's socket but discarded,
//!   never handed to chitchat's state. The relay likewise keeps only what the codec sent.
//! - `recv` is cancel-safe, as chitchat requires (it races `recv` against its gossip timer): a
//!   datagram relayed to the codec but not yet decoded is remembered with its sender and a
//!   deadline, and a verified datagram chitchat cannot decode is given up at that deadline.
//!
//! Limit: the seal adds [`SEAL_OVERHEAD`] bytes to chitchat's datagrams, which chitchat fills
//! up to 65,507 bytes only when a delta is that large (hundreds of members); such a datagram
//! cannot be sent and is dropped like a lost one.

use crate::shell::gossip_seal::{DatagramSeal, SealError, SEAL_OVERHEAD};
use anyhow::Context;
use async_trait::async_trait;
use chitchat::transport::{RecvOutcome, SendOutcome, Socket, Transport, UdpSocket};
use chitchat::ChitchatEnvelope;
use std::io;
use std::net::{Ipv4Addr, SocketAddr};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;
use tokio::time::Instant;

/// Largest UDP payload on IPv4.
const MAX_DATAGRAM: usize = 65_507;
/// How long a verified datagram may take to come back decoded from the codec socket. Loopback
/// delivery is immediate; the slack is for a loaded machine.
const DECODE_WAIT: Duration = Duration::from_millis(500);
/// How long the relay waits for the codec's encoding of an outgoing envelope.
const ENCODE_WAIT: Duration = Duration::from_millis(500);

/// Datagram counters of one gossip socket, shared with whoever reports them.
#[derive(Debug, Default)]
pub struct GossipWireStats {
    /// Datagrams whose seal opened and that chitchat decoded.
    pub accepted: AtomicU64,
    /// Refused before decoding: too short, bad MAC (strangers, other clusters), unknown format.
    pub unauthenticated: AtomicU64,
    /// Refused before decoding: timestamp outside the window, or already accepted.
    pub stale_or_replayed: AtomicU64,
    /// Refused before decoding: too many senders within the window.
    pub too_many_senders: AtomicU64,
    /// Sealed by a member, but chitchat could not decode them.
    pub undecodable: AtomicU64,
    /// Arrived on the loopback codec or relay socket from elsewhere: discarded.
    pub foreign_loopback: AtomicU64,
}

impl GossipWireStats {
    fn refused(&self, error: SealError) {
        let counter = match error {
            SealError::Short | SealError::BadMac | SealError::Version(_) | SealError::Own => {
                &self.unauthenticated
            }
            SealError::Stale | SealError::Replay => &self.stale_or_replayed,
            SealError::TooManySenders => &self.too_many_senders,
        };
        counter.fetch_add(1, Ordering::Relaxed);
    }

    /// Every datagram refused before chitchat could decode it.
    pub fn refused_total(&self) -> u64 {
        self.unauthenticated.load(Ordering::Relaxed)
            + self.stale_or_replayed.load(Ordering::Relaxed)
            + self.too_many_senders.load(Ordering::Relaxed)
    }
}

/// Opens [`SealedSocket`]s: chitchat's transport for a cluster whose gossip is sealed with
/// `key`.
pub struct SealedTransport {
    key: [u8; 32],
    window: Duration,
    max_senders: usize,
    stats: Arc<GossipWireStats>,
}

impl SealedTransport {
    /// Datagrams are sealed with `key`; timestamps are accepted within `window` of this peer's
    /// clock; at most `max_senders` senders are tracked within a window.
    pub fn new(
        key: [u8; 32],
        window: Duration,
        max_senders: usize,
        stats: Arc<GossipWireStats>,
    ) -> Self {
        Self {
            key,
            window,
            max_senders,
            stats,
        }
    }
}

#[async_trait]
impl Transport for SealedTransport {
    async fn open(&self, listen_addr: SocketAddr) -> anyhow::Result<Box<dyn Socket>> {
        let socket = SealedSocket::open(
            listen_addr,
            DatagramSeal::new(
                self.key,
                rand::random(),
                self.window.as_millis() as u64,
                self.max_senders,
            ),
            self.stats.clone(),
        )
        .await?;
        Ok(Box::new(socket))
    }
}

/// A datagram relayed to the codec and not yet decoded.
#[derive(Clone, Copy, Debug)]
struct Pending {
    from: SocketAddr,
    payload_len: usize,
    sealed_len: usize,
    deadline: Instant,
}

/// One gossip socket: the real UDP socket, and the loopback codec and relay (see the module
/// doc).
pub struct SealedSocket {
    wire: tokio::net::UdpSocket,
    codec: UdpSocket,
    codec_addr: SocketAddr,
    relay: tokio::net::UdpSocket,
    relay_addr: SocketAddr,
    seal: DatagramSeal,
    buf: Vec<u8>,
    sealed: Vec<u8>,
    pending: Option<Pending>,
    stats: Arc<GossipWireStats>,
}

impl SealedSocket {
    /// Binds the real socket on `listen_addr` and the codec and relay on loopback.
    pub async fn open(
        listen_addr: SocketAddr,
        seal: DatagramSeal,
        stats: Arc<GossipWireStats>,
    ) -> anyhow::Result<SealedSocket> {
        let wire = tokio::net::UdpSocket::bind(listen_addr)
            .await
            .with_context(|| format!("failed to bind to {listen_addr}/UDP for gossip"))?;
        let loopback: SocketAddr = (Ipv4Addr::LOCALHOST, 0).into();
        let codec = UdpSocket::open(loopback).await?;
        let codec_addr = codec.local_addr()?;
        let relay = tokio::net::UdpSocket::bind(loopback)
            .await
            .context("binding the gossip relay socket")?;
        let relay_addr = relay.local_addr()?;
        Ok(SealedSocket {
            wire,
            codec,
            codec_addr,
            relay,
            relay_addr,
            seal,
            buf: vec![0u8; MAX_DATAGRAM + 1],
            sealed: Vec::with_capacity(MAX_DATAGRAM + SEAL_OVERHEAD),
            pending: None,
            stats,
        })
    }

    /// Waits for the codec to decode the pending datagram; `None` if it was given up.
    async fn decoded(&mut self, pending: Pending) -> anyhow::Result<Option<RecvOutcome>> {
        loop {
            match tokio::time::timeout_at(pending.deadline, self.codec.recv()).await {
                Ok(Ok(outcome)) => {
                    if outcome.from_addr != self.relay_addr
                        || outcome.num_bytes_received != pending.payload_len
                    {
                        // Written to the codec's loopback port by someone else, or the late
                        // decoding of a datagram already given up.
                        self.stats.foreign_loopback.fetch_add(1, Ordering::Relaxed);
                        continue;
                    }
                    self.pending = None;
                    self.stats.accepted.fetch_add(1, Ordering::Relaxed);
                    return Ok(Some(RecvOutcome {
                        from_addr: pending.from,
                        envelope: outcome.envelope,
                        num_bytes_received: pending.sealed_len,
                    }));
                }
                Ok(Err(e)) => return Err(e.context("gossip codec socket failed")),
                Err(_) => {
                    self.pending = None;
                    self.stats.undecodable.fetch_add(1, Ordering::Relaxed);
                    tracing::warn!(from = %pending.from, "sealed gossip datagram chitchat could not decode");
                    return Ok(None);
                }
            }
        }
    }
}

fn is_transient(err: &io::Error) -> bool {
    matches!(
        err.kind(),
        io::ErrorKind::OutOfMemory
            | io::ErrorKind::ConnectionReset
            | io::ErrorKind::ConnectionRefused
            | io::ErrorKind::Interrupted
    )
}

/// Milliseconds since the Unix epoch (0 if the clock is before it).
pub(crate) fn wall_clock_ms() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_millis() as u64)
        .unwrap_or(0)
}

#[async_trait]
impl Socket for SealedSocket {
    fn local_addr(&self) -> anyhow::Result<SocketAddr> {
        self.wire
            .local_addr()
            .context("failed to get the gossip socket address")
    }

    async fn send(
        &mut self,
        to: SocketAddr,
        envelope: ChitchatEnvelope,
    ) -> anyhow::Result<SendOutcome> {
        let encoded = self.codec.send(self.relay_addr, envelope).await?;
        let len = tokio::time::timeout(ENCODE_WAIT, async {
            loop {
                let (len, from) = self.relay.recv_from(&mut self.buf).await?;
                if from == self.codec_addr && len == encoded.num_bytes_sent {
                    return Ok::<usize, io::Error>(len);
                }
                self.stats.foreign_loopback.fetch_add(1, Ordering::Relaxed);
            }
        })
        .await
        .context("the gossip codec did not encode in time")?
        .context("gossip relay socket failed")?;
        self.sealed.clear();
        self.seal
            .seal(wall_clock_ms(), &self.buf[..len], &mut self.sealed);
        let num_bytes_sent = self
            .wire
            .send_to(&self.sealed, to)
            .await
            .with_context(|| format!("failed to send a gossip datagram to {to}"))?;
        Ok(SendOutcome { num_bytes_sent })
    }

    async fn recv(&mut self) -> anyhow::Result<RecvOutcome> {
        loop {
            if let Some(pending) = self.pending {
                match self.decoded(pending).await? {
                    Some(outcome) => return Ok(outcome),
                    None => continue,
                }
            }
            let (len, from) = match self.wire.recv_from(&mut self.buf).await {
                Ok(received) => received,
                Err(e) if is_transient(&e) => {
                    tracing::debug!(error = %e, "transient gossip recv error");
                    continue;
                }
                Err(e) => return Err(e).context("fatal gossip recv error"),
            };
            let payload = match self.seal.open(wall_clock_ms(), &self.buf[..len]) {
                Ok(payload) => payload,
                Err(error) => {
                    self.stats.refused(error);
                    tracing::debug!(%from, len, %error, "gossip datagram refused");
                    continue;
                }
            };
            let payload_len = payload.len();
            // Remember it before relaying, so a cancellation after the relay loses nothing.
            self.pending = Some(Pending {
                from,
                payload_len,
                sealed_len: len,
                deadline: Instant::now() + DECODE_WAIT,
            });
            if let Err(e) = self.relay.send_to(payload, self.codec_addr).await {
                self.pending = None;
                tracing::warn!(error = %e, "relaying a gossip datagram to the codec failed");
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Two sealed sockets on loopback: what one sends, the other receives, once.
    #[tokio::test]
    async fn sealed_sockets_carry_chitchat_envelopes_and_refuse_replays() {
        let key = [3u8; 32];
        let loopback: SocketAddr = ([127, 0, 0, 1], 0).into();
        let stats_a = Arc::new(GossipWireStats::default());
        let stats_b = Arc::new(GossipWireStats::default());
        let transport_a = SealedTransport::new(key, Duration::from_secs(30), 16, stats_a);
        let transport_b = SealedTransport::new(key, Duration::from_secs(30), 16, stats_b.clone());
        let mut a = transport_a.open(loopback).await.unwrap();
        let mut b = transport_b.open(loopback).await.unwrap();
        let (addr_a, addr_b) = (a.local_addr().unwrap(), b.local_addr().unwrap());
        // Capture what `a` puts on the wire by sending to a plain socket first.
        let tap = tokio::net::UdpSocket::bind(loopback).await.unwrap();
        let bad_cluster = || ChitchatEnvelope {
            version: chitchat::ProtocolVersion::V0,
            message: chitchat::ChitchatMessage::BadCluster,
        };
        a.send(tap.local_addr().unwrap(), bad_cluster())
            .await
            .unwrap();
        let mut captured = vec![0u8; 2048];
        let (n, _) = tap.recv_from(&mut captured).await.unwrap();
        captured.truncate(n);

        // The captured datagram is accepted once by b...
        tap.send_to(&captured, addr_b).await.unwrap();
        let got = tokio::time::timeout(Duration::from_secs(5), b.recv())
            .await
            .unwrap()
            .unwrap();
        assert_eq!(got.envelope, bad_cluster());
        assert_eq!(got.from_addr, tap.local_addr().unwrap());
        // ...and its replay, garbage and an unsealed chitchat datagram are not; a fresh one from
        // `a` is.
        tap.send_to(&captured, addr_b).await.unwrap();
        tap.send_to(b"junk", addr_b).await.unwrap();
        tap.send_to(&captured[SEAL_OVERHEAD..], addr_b)
            .await
            .unwrap();
        let mut flipped = captured.clone();
        *flipped.last_mut().unwrap() ^= 1;
        tap.send_to(&flipped, addr_b).await.unwrap();
        a.send(addr_b, bad_cluster()).await.unwrap();
        let got = tokio::time::timeout(Duration::from_secs(5), b.recv())
            .await
            .unwrap()
            .unwrap();
        assert_eq!(got.from_addr, addr_a);
        assert_eq!(stats_b.stale_or_replayed.load(Ordering::Relaxed), 1);
        assert_eq!(stats_b.unauthenticated.load(Ordering::Relaxed), 3);
        assert_eq!(stats_b.accepted.load(Ordering::Relaxed), 2);
    }

    /// chitchat races `recv` against its timer: cancelling it anywhere loses no datagram.
    #[tokio::test]
    async fn recv_survives_cancellation() {
        let key = [4u8; 32];
        let loopback: SocketAddr = ([127, 0, 0, 1], 0).into();
        let stats = Arc::new(GossipWireStats::default());
        let mut a = SealedTransport::new(key, Duration::from_secs(30), 16, stats.clone())
            .open(loopback)
            .await
            .unwrap();
        let mut b = SealedTransport::new(key, Duration::from_secs(30), 16, stats)
            .open(loopback)
            .await
            .unwrap();
        let addr_b = b.local_addr().unwrap();
        for _ in 0..20 {
            let envelope = ChitchatEnvelope {
                version: chitchat::ProtocolVersion::V0,
                message: chitchat::ChitchatMessage::BadCluster,
            };
            a.send(addr_b, envelope).await.unwrap();
        }
        let mut received = 0;
        let deadline = Instant::now() + Duration::from_secs(10);
        while received < 20 && Instant::now() < deadline {
            // Poll once and drop: a cancellation at whatever point recv had reached.
            if let Ok(Ok(_)) = tokio::time::timeout(Duration::from_micros(50), b.recv()).await {
                received += 1;
            }
        }
        assert_eq!(received, 20);
    }
}
