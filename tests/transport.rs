//! The QUIC peer transport on loopback: messages arrive between peers of one cluster, and a peer
//! holding another cluster secret is refused by mutual TLS.

use ringcache::core::message::PeerMessage;
use ringcache::core::types::NodeId;
use ringcache::shell::auth::{ClusterSecret, PeerIdentity};
use ringcache::shell::transport::PeerTransport;
use std::time::Duration;
use tokio::sync::mpsc;

fn start(name: &str, secret: &str) -> (PeerTransport, mpsc::Receiver<(NodeId, PeerMessage)>) {
    let secret = ClusterSecret::new(secret).unwrap();
    let identity = PeerIdentity::new(&secret, name).unwrap();
    let socket = std::net::UdpSocket::bind("127.0.0.1:0").unwrap();
    let (tx, rx) = mpsc::channel(16);
    let transport = PeerTransport::start(socket, &identity, NodeId::from(name), tx).unwrap();
    (transport, rx)
}

#[tokio::test]
async fn peers_of_one_cluster_exchange_messages_both_ways() {
    let (a, mut a_rx) = start("A", "one cluster secret, long enough");
    let (b, mut b_rx) = start("B", "one cluster secret, long enough");
    let b_addr = b.local_addr().unwrap();
    let a_addr = a.local_addr().unwrap();
    a.send(
        &NodeId::from("B"),
        b_addr,
        &PeerMessage::StoreAck { req: 7 },
    )
    .await
    .unwrap();
    let (from, msg) = tokio::time::timeout(Duration::from_secs(5), b_rx.recv())
        .await
        .unwrap()
        .unwrap();
    assert_eq!(from, NodeId::from("A"));
    assert_eq!(msg, PeerMessage::StoreAck { req: 7 });
    b.send(
        &NodeId::from("A"),
        a_addr,
        &PeerMessage::StoreAck { req: 8 },
    )
    .await
    .unwrap();
    let (from, msg) = tokio::time::timeout(Duration::from_secs(5), a_rx.recv())
        .await
        .unwrap()
        .unwrap();
    assert_eq!(
        (from, msg),
        (NodeId::from("B"), PeerMessage::StoreAck { req: 8 })
    );
    a.close();
    b.close();
}

#[tokio::test]
async fn a_peer_with_another_secret_is_refused() {
    let (a, _a_rx) = start("A", "one cluster secret, long enough");
    let (stranger, _s_rx) = start("X", "a different secret, also long");
    let (_b, mut b_rx) = start("B", "one cluster secret, long enough");
    let result = stranger
        .send(
            &NodeId::from("A"),
            a.local_addr().unwrap(),
            &PeerMessage::StoreAck { req: 1 },
        )
        .await;
    assert!(result.is_err(), "the stranger's handshake must fail");
    // And the other direction: a cluster peer will not talk to the stranger either.
    let result = a
        .send(
            &NodeId::from("X"),
            stranger.local_addr().unwrap(),
            &PeerMessage::StoreAck { req: 2 },
        )
        .await;
    assert!(
        result.is_err(),
        "a cluster peer must refuse the stranger's certificate"
    );
    assert!(b_rx.try_recv().is_err());
}
