//! The QUIC peer transport on loopback: messages arrive between peers of one cluster, and a peer
//! holding another cluster secret is refused by mutual TLS.
//!
//! Mutual TLS means two independent checks: the client checks the server's certificate, and
//! the server checks the client's. A test with two ordinary peers of different clusters cannot
//! tell them apart (the client's check fails first, so the server's never runs). So each side's
//! refusal is also tested alone, against a one-sided endpoint built here that skips its own
//! check: a client that accepts any server certificate, and a server that asks for no client
//! certificate. Each such test has a control with the right secret, so a refusal is known to
//! come from the certificate and not from the test endpoint.

// The one-sided test server reads its streams in spawned tasks.
#![allow(clippy::disallowed_methods)]

use ringcache::core::message::{self, Envelope, PeerMessage, MAX_FRAME_BYTES};
use ringcache::core::types::NodeId;
use ringcache::shell::auth::{ClusterSecret, PeerIdentity, ALPN, PEER_SERVER_NAME};
use ringcache::shell::transport::{Inbound, PeerTransport};
use rustls::client::danger::{HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier};
use rustls::pki_types::{CertificateDer, ServerName, UnixTime};
use rustls::{DigitallySignedStruct, SignatureScheme};
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;
use tokio::sync::mpsc;

const CLUSTER: &str = "one cluster secret, long enough";
const OTHER: &str = "a different secret, also long";

fn identity(name: &str, secret: &str) -> PeerIdentity {
    PeerIdentity::new(&ClusterSecret::new(secret).unwrap(), name).unwrap()
}

fn start(name: &str, secret: &str) -> (PeerTransport, mpsc::Receiver<Inbound>) {
    let identity = identity(name, secret);
    let socket = std::net::UdpSocket::bind("127.0.0.1:0").unwrap();
    let (tx, rx) = mpsc::channel(16);
    let transport = PeerTransport::start(socket, &identity, NodeId::from(name), tx).unwrap();
    (transport, rx)
}

/// Waits briefly for a message; `None` if none came.
async fn next<T>(rx: &mut mpsc::Receiver<T>, wait: Duration) -> Option<T> {
    tokio::time::timeout(wait, rx.recv()).await.ok().flatten()
}

#[tokio::test]
async fn an_inline_handler_sees_each_message_first_and_hands_back_what_it_does_not_take() {
    let (a, _a_rx) = start("A", CLUSTER);
    let (b, mut b_rx) = start("B", CLUSTER);
    // B's handler takes even request numbers and hands odd ones back to the queue.
    let (taken_tx, mut taken_rx) = mpsc::channel(16);
    b.handle_inline(Box::new(move |inbound: Inbound| {
        if inbound.message.req() % 2 == 0 {
            let _ = taken_tx.try_send(inbound);
            None
        } else {
            Some(inbound)
        }
    }));
    let b_addr = b.local_addr().unwrap();
    for req in [2, 3] {
        a.send(
            &NodeId::from("B"),
            b_addr,
            None,
            &PeerMessage::StoreAck { req },
        )
        .await
        .unwrap();
    }
    let taken = next(&mut taken_rx, Duration::from_secs(5)).await;
    assert_eq!(
        taken.map(|i| i.message),
        Some(PeerMessage::StoreAck { req: 2 })
    );
    let queued = next(&mut b_rx, Duration::from_secs(5)).await;
    assert_eq!(
        queued.map(|i| i.message),
        Some(PeerMessage::StoreAck { req: 3 })
    );
    // Nothing went both ways.
    assert!(next(&mut b_rx, Duration::from_millis(200)).await.is_none());
    assert!(taken_rx.try_recv().is_err());
}

#[tokio::test]
async fn peers_of_one_cluster_exchange_messages_both_ways() {
    let (a, mut a_rx) = start("A", CLUSTER);
    let (b, mut b_rx) = start("B", CLUSTER);
    let b_addr = b.local_addr().unwrap();
    let a_addr = a.local_addr().unwrap();
    a.send(
        &NodeId::from("B"),
        b_addr,
        None,
        &PeerMessage::StoreAck { req: 7 },
    )
    .await
    .unwrap();
    let inbound = tokio::time::timeout(Duration::from_secs(5), b_rx.recv())
        .await
        .unwrap()
        .unwrap();
    assert_eq!(inbound.from, NodeId::from("A"));
    assert_eq!(inbound.message, PeerMessage::StoreAck { req: 7 });
    b.send(
        &NodeId::from("A"),
        a_addr,
        None,
        &PeerMessage::StoreAck { req: 8 },
    )
    .await
    .unwrap();
    let inbound = tokio::time::timeout(Duration::from_secs(5), a_rx.recv())
        .await
        .unwrap()
        .unwrap();
    assert_eq!(
        (inbound.from, inbound.message),
        (NodeId::from("B"), PeerMessage::StoreAck { req: 8 })
    );
    a.close();
    b.close();
}

#[tokio::test]
async fn a_peer_with_another_secret_is_refused() {
    let (a, mut a_rx) = start("A", CLUSTER);
    let (stranger, mut stranger_rx) = start("X", OTHER);
    let (_b, mut b_rx) = start("B", CLUSTER);
    let result = stranger
        .send(
            &NodeId::from("A"),
            a.local_addr().unwrap(),
            None,
            &PeerMessage::StoreAck { req: 1 },
        )
        .await;
    assert!(result.is_err(), "the stranger's handshake must fail");
    // And the other direction: a cluster peer will not talk to the stranger either.
    let result = a
        .send(
            &NodeId::from("X"),
            stranger.local_addr().unwrap(),
            None,
            &PeerMessage::StoreAck { req: 2 },
        )
        .await;
    assert!(
        result.is_err(),
        "a cluster peer must refuse the stranger's certificate"
    );
    // Nothing reached anyone: not A, not the stranger, not the bystander B.
    let wait = Duration::from_millis(300);
    assert_eq!(next(&mut a_rx, wait).await, None);
    assert_eq!(next(&mut stranger_rx, wait).await, None);
    assert_eq!(next(&mut b_rx, wait).await, None);
}

/// Accepts any server certificate (the signature over the handshake is still checked, so
/// the server must hold the key of the certificate it shows).
#[derive(Debug)]
struct AnyServer(Arc<rustls::crypto::CryptoProvider>);

impl ServerCertVerifier for AnyServer {
    fn verify_server_cert(
        &self,
        _end_entity: &CertificateDer<'_>,
        _intermediates: &[CertificateDer<'_>],
        _server_name: &ServerName<'_>,
        _ocsp_response: &[u8],
        _now: UnixTime,
    ) -> Result<ServerCertVerified, rustls::Error> {
        Ok(ServerCertVerified::assertion())
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        let algorithms = &self.0.signature_verification_algorithms;
        rustls::crypto::verify_tls12_signature(message, cert, dss, algorithms)
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        let algorithms = &self.0.signature_verification_algorithms;
        rustls::crypto::verify_tls13_signature(message, cert, dss, algorithms)
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.0.signature_verification_algorithms.supported_schemes()
    }
}

/// A client that presents `identity`'s certificate but does not check the server's, so only
/// the server's check can refuse it.
fn client_skipping_its_check(identity: &PeerIdentity) -> quinn::ClientConfig {
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let (chain, key) = identity.certificate_chain_and_key();
    let mut tls = rustls::ClientConfig::builder_with_provider(provider.clone())
        .with_protocol_versions(&[&rustls::version::TLS13])
        .unwrap()
        .dangerous()
        .with_custom_certificate_verifier(Arc::new(AnyServer(provider)))
        .with_client_auth_cert(chain, key)
        .unwrap();
    tls.alpn_protocols = vec![ALPN.to_vec()];
    let crypto = quinn::crypto::rustls::QuicClientConfig::try_from(tls).unwrap();
    quinn::ClientConfig::new(Arc::new(crypto))
}

/// Dials `addr` as `identity` without checking the server and sends one message. `Err` with
/// the reason if the handshake fails or the server closes the connection within two seconds.
async fn send_skipping_the_server_check(
    identity: &PeerIdentity,
    addr: SocketAddr,
    message: &PeerMessage,
) -> Result<(), String> {
    let endpoint = quinn::Endpoint::client("127.0.0.1:0".parse().unwrap()).unwrap();
    let config = client_skipping_its_check(identity);
    let frame =
        ringcache::shell::transport::encode_frame(&NodeId::from("X"), None, message).unwrap();
    let connecting = endpoint
        .connect_with(config, addr, PEER_SERVER_NAME)
        .unwrap();
    let connection = tokio::time::timeout(Duration::from_secs(2), connecting)
        .await
        .map_err(|_| "handshake timed out".to_string())?
        .map_err(|e| format!("handshake failed: {e}"))?;
    // In TLS 1.3 the client's handshake completes before the server has judged the client's
    // certificate: a refusal shows as the server closing the connection right after.
    let sent = async {
        let mut stream = connection.open_uni().await?;
        stream.write_all(&frame).await?;
        stream.finish()?;
        Ok::<_, Box<dyn std::error::Error>>(())
    }
    .await;
    let closed = tokio::time::timeout(Duration::from_secs(2), connection.closed()).await;
    endpoint.close(0u32.into(), b"done");
    match (closed, sent) {
        (Ok(reason), _) => Err(format!("closed by the server: {reason}")),
        (Err(_), Err(e)) => Err(format!("send failed: {e}")),
        (Err(_), Ok(())) => Ok(()),
    }
}

#[tokio::test]
async fn the_server_alone_refuses_a_client_certificate_from_another_secret() {
    let (a, mut a_rx) = start("A", CLUSTER);
    let a_addr = a.local_addr().unwrap();
    // Control: the one-sided client with the right secret is accepted and heard.
    let result = send_skipping_the_server_check(
        &identity("X", CLUSTER),
        a_addr,
        &PeerMessage::StoreAck { req: 1 },
    )
    .await;
    assert_eq!(result, Ok(()), "a client of the cluster is accepted");
    assert_eq!(
        next(&mut a_rx, Duration::from_secs(2)).await,
        Some(Inbound {
            from: NodeId::from("X"),
            trace: None,
            message: PeerMessage::StoreAck { req: 1 }
        }),
    );
    // The same client with another secret's certificate: only A's own check stands between
    // it and A, and it must refuse the connection and deliver nothing.
    let result = send_skipping_the_server_check(
        &identity("X", OTHER),
        a_addr,
        &PeerMessage::StoreAck { req: 2 },
    )
    .await;
    let reason = result.expect_err("the server must refuse a certificate from another CA");
    assert!(
        reason.to_lowercase().contains("certificate"),
        "refused for another reason: {reason}"
    );
    assert_eq!(next(&mut a_rx, Duration::from_millis(500)).await, None);
    a.close();
}

/// A server that shows `identity`'s certificate but asks for no client certificate, so only
/// the client's check can refuse it. Returns its address and the messages it receives.
fn server_skipping_its_check(
    identity: &PeerIdentity,
) -> (quinn::Endpoint, mpsc::Receiver<Envelope>) {
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let (chain, key) = identity.certificate_chain_and_key();
    let mut tls = rustls::ServerConfig::builder_with_provider(provider)
        .with_protocol_versions(&[&rustls::version::TLS13])
        .unwrap()
        .with_no_client_auth()
        .with_single_cert(chain, key)
        .unwrap();
    tls.alpn_protocols = vec![ALPN.to_vec()];
    let crypto = quinn::crypto::rustls::QuicServerConfig::try_from(tls).unwrap();
    let config = quinn::ServerConfig::with_crypto(Arc::new(crypto));
    let endpoint = quinn::Endpoint::server(config, "127.0.0.1:0".parse().unwrap()).unwrap();
    let (tx, rx) = mpsc::channel(16);
    let acceptor = endpoint.clone();
    tokio::spawn(async move {
        while let Some(incoming) = acceptor.accept().await {
            let tx = tx.clone();
            tokio::spawn(async move {
                let Ok(connection) = incoming.await else {
                    return;
                };
                while let Ok(mut stream) = connection.accept_uni().await {
                    // A stream of one message: its 4-byte length, then the envelope.
                    if let Ok(frame) = stream.read_to_end(MAX_FRAME_BYTES).await {
                        let _ = tx.send(message::decode(&frame[4..]).unwrap()).await;
                    }
                }
            });
        }
    });
    (endpoint, rx)
}

#[tokio::test]
async fn the_client_alone_refuses_a_server_certificate_from_another_secret() {
    let (a, _a_rx) = start("A", CLUSTER);
    // Control: a one-sided server with the right secret's certificate hears A.
    let (friend, mut friend_rx) = server_skipping_its_check(&identity("F", CLUSTER));
    a.send(
        &NodeId::from("F"),
        friend.local_addr().unwrap(),
        None,
        &PeerMessage::StoreAck { req: 1 },
    )
    .await
    .expect("a server of the cluster is accepted");
    let heard = next(&mut friend_rx, Duration::from_secs(2)).await.unwrap();
    assert_eq!(
        (heard.from, heard.message),
        (NodeId::from("A"), PeerMessage::StoreAck { req: 1 })
    );
    // The same server with another secret's certificate would take anything: only A's own
    // check of the server's certificate stops A from talking to it.
    let (stranger, mut stranger_rx) = server_skipping_its_check(&identity("X", OTHER));
    let result = a
        .send(
            &NodeId::from("X"),
            stranger.local_addr().unwrap(),
            None,
            &PeerMessage::StoreAck { req: 2 },
        )
        .await;
    let error = result.expect_err("the client must refuse a certificate from another CA");
    assert!(
        error.to_string().to_lowercase().contains("certificate"),
        "refused for another reason: {error}"
    );
    assert!(next(&mut stranger_rx, Duration::from_millis(500))
        .await
        .is_none());
    a.close();
}

/// A large message (a payload over the outbox limit) among small ones.
fn publish(seq: u64, bytes: usize) -> PeerMessage {
    PeerMessage::Publish {
        stream: 1,
        seq,
        channel: b"c".to_vec(),
        payload: vec![b'x'; bytes],
    }
}

#[tokio::test]
async fn queued_messages_arrive_in_order_and_a_large_one_does_not_wait_behind_them() {
    let (a, _a_rx) = start("A", CLUSTER);
    let (b, mut b_rx) = start("B", CLUSTER);
    let b_addr = b.local_addr().unwrap();
    let (undeliverable, mut undelivered) = mpsc::unbounded_channel();
    // A thousand small messages, queued at once: they share the outbox stream, in order.
    for req in 0..1_000 {
        a.enqueue(
            NodeId::from("B"),
            b_addr,
            None,
            &PeerMessage::StoreAck { req },
            Some(undeliverable.clone()),
        );
    }
    let big = ringcache::shell::transport::OUTBOX_FRAME_BYTES + 1;
    a.enqueue(NodeId::from("B"), b_addr, None, &publish(1, big), None);
    let mut acks = Vec::new();
    let mut got_big = false;
    while acks.len() < 1_000 || !got_big {
        let inbound = next(&mut b_rx, Duration::from_secs(5))
            .await
            .expect("every queued message arrives");
        match inbound.message {
            PeerMessage::StoreAck { req } => acks.push(req),
            PeerMessage::Publish { payload, .. } => {
                assert_eq!(payload.len(), big);
                got_big = true;
            }
            other => panic!("{other:?}"),
        }
    }
    assert_eq!(acks, (0..1_000).collect::<Vec<_>>(), "in the order queued");
    assert!(
        undelivered.try_recv().is_err(),
        "nothing reported undeliverable"
    );
    a.close();
    b.close();
}

#[tokio::test]
async fn a_message_to_a_peer_that_is_not_there_is_reported_undeliverable() {
    let (a, _a_rx) = start("A", CLUSTER);
    // A bound socket nobody answers on.
    let silent = std::net::UdpSocket::bind("127.0.0.1:0").unwrap();
    let (undeliverable, mut undelivered) = mpsc::unbounded_channel();
    for req in [41, 42] {
        a.enqueue(
            NodeId::from("B"),
            silent.local_addr().unwrap(),
            None,
            &PeerMessage::StoreAck { req },
            Some(undeliverable.clone()),
        );
    }
    let mut reported = Vec::new();
    while reported.len() < 2 {
        let (peer, req) = tokio::time::timeout(Duration::from_secs(5), undelivered.recv())
            .await
            .expect("reported within the connect timeout")
            .unwrap();
        assert_eq!(peer, NodeId::from("B"));
        reported.push(req);
    }
    reported.sort();
    assert_eq!(reported, vec![41, 42]);
    a.close();
}

#[tokio::test]
async fn a_frame_announced_over_the_limit_ends_its_stream_and_nothing_else() {
    let (b, mut b_rx) = start("B", CLUSTER);
    let x = identity("X", CLUSTER);
    let mut endpoint = quinn::Endpoint::client("127.0.0.1:0".parse().unwrap()).unwrap();
    endpoint.set_default_client_config(x.quic_client_config().unwrap());
    let connection = endpoint
        .connect(b.local_addr().unwrap(), PEER_SERVER_NAME)
        .unwrap()
        .await
        .unwrap();
    // A length over the limit, then a trickle of bytes that must never be buffered.
    let mut bad = connection.open_uni().await.unwrap();
    bad.write_all(&((MAX_FRAME_BYTES as u32) + 1).to_le_bytes())
        .await
        .unwrap();
    let _ = bad.write_all(&[0u8; 1024]).await;
    // The connection still serves a well-formed message.
    let frame = ringcache::shell::transport::encode_frame(
        &NodeId::from("X"),
        None,
        &PeerMessage::StoreAck { req: 5 },
    )
    .unwrap();
    let mut good = connection.open_uni().await.unwrap();
    good.write_all(&frame).await.unwrap();
    good.finish().unwrap();
    let inbound = next(&mut b_rx, Duration::from_secs(5)).await.unwrap();
    assert_eq!(inbound.message, PeerMessage::StoreAck { req: 5 });
    // The oversized stream was stopped by the reader.
    let stopped = tokio::time::timeout(Duration::from_secs(5), bad.stopped()).await;
    assert!(matches!(stopped, Ok(Ok(Some(_)))), "{stopped:?}");
    assert!(next(&mut b_rx, Duration::from_millis(200)).await.is_none());
    endpoint.close(0u32.into(), b"done");
    b.close();
}
