//! Hostile networks (issue 11): what a stranger on the network can do to gossip, and what one
//! peer holding the secret can do to another over QUIC — each finding of the attack
//! run, as a test that it no longer works.
//!
//! Peers run in-process on 127.0.0.1 (so the test can read their counters and end their gossip
//! task), one cluster at a time, each test bounded in time and every peer shut down.

// Tests spawn and measure wall-clock time.
#![allow(clippy::disallowed_methods)]

mod common;

use chitchat::transport::{Socket, UdpSocket as ChitchatSocket};
use chitchat::{ChitchatEnvelope, ChitchatMessage, ProtocolVersion};
use ringcache::client::Client;
use ringcache::config::PeerConfig;
use ringcache::core::message::PeerMessage;
use ringcache::core::types::NodeId;
use ringcache::server::RunningPeer;
use ringcache::shell::auth::{ClusterSecret, PeerIdentity};
use ringcache::shell::gossip_seal::DatagramSeal;
use ringcache::shell::transport::PeerTransport;
use std::net::SocketAddr;
use std::sync::atomic::Ordering;
use std::time::Duration;
use tokio::net::UdpSocket;
use tokio::sync::mpsc;

const SECRET: &str = "the hostile tests' cluster secret";
const LIMIT: Duration = Duration::from_secs(90);

/// Two in-process peers that see each other.
async fn two_peers() -> (RunningPeer, RunningPeer) {
    let a = RunningPeer::start(PeerConfig::for_test("A", SECRET, vec![]))
        .await
        .unwrap();
    let b = RunningPeer::start(PeerConfig::for_test("B", SECRET, vec![a.addresses.gossip]))
        .await
        .unwrap();
    for peer in [&a, &b] {
        common::wait_for_live(&format!("http://{}", peer.addresses.http), 2).await;
    }
    (a, b)
}

/// What `/v1/cluster` says of the members: names, generations and addresses (liveness is
/// checked apart, as the failure detector may waver on a loaded machine).
async fn members(peer: &RunningPeer) -> serde_json::Value {
    let status = Client::new(&format!("http://{}", peer.addresses.http))
        .cluster()
        .await
        .unwrap();
    let mut members = status["members"]["members"].clone();
    for member in members.as_object_mut().unwrap().values_mut() {
        member.as_object_mut().unwrap().remove("up");
    }
    members
}

async fn health(peer: &RunningPeer) -> (u16, serde_json::Value) {
    let response = reqwest::Client::new()
        .get(format!("http://{}/health", peer.addresses.http))
        .timeout(Duration::from_secs(5))
        .send()
        .await
        .unwrap();
    let status = response.status().as_u16();
    (status, response.json().await.unwrap_or_default())
}

fn wall_clock_ms() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_millis() as u64
}

/// The bytes chitchat's own codec puts on the wire for `envelope`.
async fn chitchat_bytes(envelope: ChitchatEnvelope) -> Vec<u8> {
    let loopback: SocketAddr = ([127, 0, 0, 1], 0).into();
    let mut codec = ChitchatSocket::open(loopback).await.unwrap();
    let tap = UdpSocket::bind(loopback).await.unwrap();
    codec
        .send(tap.local_addr().unwrap(), envelope)
        .await
        .unwrap();
    let mut buf = vec![0u8; 65_536];
    let (n, _) = tap.recv_from(&mut buf).await.unwrap();
    buf.truncate(n);
    buf
}

fn envelope(message: ChitchatMessage) -> ChitchatEnvelope {
    ChitchatEnvelope {
        version: ProtocolVersion::V0,
        message,
    }
}

/// Before the seal, an unsolicited Syn with the (sniffable) cluster id was answered with a
/// SynAck naming every member, and crafted SynAcks and Acks rewrote or removed members or
/// crashed the gossip task. Now nothing unsealed reaches chitchat: no answer, no change in
/// either peer's view, `/health` stays 200, and every datagram is counted as refused. A
/// sealed datagram is accepted once: its replay, and one sealed too long ago, are refused.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_stranger_s_gossip_datagrams_change_nothing() {
    let _one = common::ONE_CLUSTER_AT_A_TIME.lock().await;
    tokio::time::timeout(LIMIT, async {
        let (a, b) = two_peers().await;
        let before = (members(&a).await, members(&b).await);
        let target = a.addresses.gossip;
        let secret = ClusterSecret::new(SECRET).unwrap();

        // An unsealed Syn with the right cluster id, from chitchat's own socket: no answer.
        let loopback: SocketAddr = ([127, 0, 0, 1], 0).into();
        let mut stranger = ChitchatSocket::open(loopback).await.unwrap();
        let syn = || {
            envelope(ChitchatMessage::Syn {
                cluster_id: secret.cluster_id(),
                digest: Default::default(),
            })
        };
        stranger.send(target, syn()).await.unwrap();
        let answer = tokio::time::timeout(Duration::from_secs(1), stranger.recv()).await;
        assert!(answer.is_err(), "an unsealed Syn was answered: {answer:?}");

        // Unsealed SynAck, Ack and BadCluster, garbage, and a Syn sealed under another key.
        let raw = UdpSocket::bind(loopback).await.unwrap();
        let syn_bytes = chitchat_bytes(syn()).await;
        let mut foreign = DatagramSeal::new([9; 32], 1, 30_000, 16);
        let mut wrong_key = Vec::new();
        foreign.seal(wall_clock_ms(), &syn_bytes, &mut wrong_key);
        let unsealed = [
            chitchat_bytes(envelope(ChitchatMessage::SynAck {
                digest: Default::default(),
                delta: Default::default(),
            }))
            .await,
            chitchat_bytes(envelope(ChitchatMessage::Ack {
                delta: Default::default(),
            }))
            .await,
            chitchat_bytes(envelope(ChitchatMessage::BadCluster)).await,
            b"junk".to_vec(),
            vec![0u8; 200],
            (0..60_000u32).map(|i| (i * 7919 % 251) as u8).collect(),
            wrong_key,
        ];
        for datagram in &unsealed {
            raw.send_to(datagram, target).await.unwrap();
        }

        // A Syn sealed with the cluster's key is answered once; its replay is refused, and so
        // is one sealed a minute ago.
        let mut member = DatagramSeal::new(secret.gossip_seal_key(), 77, 30_000, 16);
        let mut sealed = Vec::new();
        member.seal(wall_clock_ms(), &syn_bytes, &mut sealed);
        let mut old = Vec::new();
        member.seal(wall_clock_ms() - 60_000, &syn_bytes, &mut old);
        let mut reply = vec![0u8; 65_536];
        raw.send_to(&sealed, target).await.unwrap();
        let (n, from) = tokio::time::timeout(Duration::from_secs(5), raw.recv_from(&mut reply))
            .await
            .expect("a sealed Syn is answered")
            .unwrap();
        assert_eq!(from, target);
        assert!(n > ringcache::shell::gossip_seal::SEAL_OVERHEAD);
        raw.send_to(&sealed, target).await.unwrap();
        raw.send_to(&old, target).await.unwrap();
        let no_reply =
            tokio::time::timeout(Duration::from_secs(1), raw.recv_from(&mut reply)).await;
        assert!(no_reply.is_err(), "a replayed or stale Syn was answered");

        // Every refused datagram was counted, none reached chitchat, and nothing changed.
        let stats = a.gossip().wire_stats();
        let deadline = tokio::time::Instant::now() + Duration::from_secs(5);
        while stats.unauthenticated.load(Ordering::Relaxed) < unsealed.len() as u64 + 1
            && tokio::time::Instant::now() < deadline
        {
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        assert_eq!(
            stats.unauthenticated.load(Ordering::Relaxed),
            unsealed.len() as u64 + 1
        );
        assert_eq!(stats.stale_or_replayed.load(Ordering::Relaxed), 2);
        assert_eq!(stats.undecodable.load(Ordering::Relaxed), 0);
        // A few gossip rounds later, both views are as they were and both peers healthy.
        tokio::time::sleep(Duration::from_millis(500)).await;
        assert_eq!((members(&a).await, members(&b).await), before);
        for peer in [&a, &b] {
            assert_eq!(health(peer).await.0, 200);
            common::wait_for_live(&format!("http://{}", peer.addresses.http), 2).await;
        }
        // The two peers' own gossip was sealed and accepted all along.
        assert!(b.gossip().wire_stats().accepted.load(Ordering::Relaxed) > 0);
        assert_eq!(b.gossip().wire_stats().refused_total(), 0);
        b.shutdown().await;
        a.shutdown().await;
    })
    .await
    .expect("the test finished within its time limit");
}

/// Waits until `check` holds, polling every 20 ms, or panics saying `what` after `limit`.
async fn eventually<F, Fut>(what: &str, limit: Duration, mut check: F)
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = bool>,
{
    let deadline = tokio::time::Instant::now() + limit;
    while !check().await {
        assert!(tokio::time::Instant::now() < deadline, "{what}");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// Whether `observer`'s gossip sees `name` up at `generation` (any generation if `None`).
async fn sees_up(observer: &RunningPeer, name: &str, generation: Option<u64>) -> bool {
    let view = observer.gossip().view().await;
    view.members
        .get(&NodeId::from(name))
        .is_some_and(|m| m.up && generation.is_none_or(|g| m.generation == g))
}

/// A peer whose gossip task ended (a crash in chitchat, as a crafted SynAck used to cause)
/// must not stay a zombie with a frozen view: `/health` answers 503 while gossip is down, a
/// new chitchat starts on the same address at a higher generation, the other peer sees it up
/// again and it sees the other, `/health` is 200 again, and the driver follows the restarted
/// gossip (a third peer that joins afterwards shows in its `/v1/cluster`).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_peer_whose_gossip_ended_restarts_it_and_rejoins() {
    let _one = common::ONE_CLUSTER_AT_A_TIME.lock().await;
    tokio::time::timeout(LIMIT, async {
        let (a, b) = two_peers().await;
        assert_eq!(health(&a).await.0, 200);
        let first_generation = a.gossip().generation();

        // Watch /health from before the crash, and remember every answer that was not 200.
        let url = format!("http://{}/health", a.addresses.http);
        let (stop_watch, mut stopped) = tokio::sync::watch::channel(false);
        let watcher = tokio::spawn(async move {
            let http = reqwest::Client::new();
            let mut unhealthy = Vec::new();
            while !*stopped.borrow_and_update() {
                if let Ok(response) = http.get(&url).timeout(Duration::from_secs(2)).send().await {
                    if response.status() != 200 {
                        let status = response.status().as_u16();
                        let body: serde_json::Value = response.json().await.unwrap_or_default();
                        unhealthy.push((status, body));
                    }
                }
                tokio::time::sleep(Duration::from_millis(5)).await;
            }
            unhealthy
        });
        tokio::time::sleep(Duration::from_millis(50)).await;
        a.gossip().abort();

        eventually(
            "gossip was not restarted",
            Duration::from_secs(10),
            || async { a.gossip().generation() > first_generation },
        )
        .await;
        let generation = a.gossip().generation();
        assert_eq!(a.gossip().view_stats().restarts.load(Ordering::Relaxed), 1);
        eventually(
            "B never saw A's new life up",
            Duration::from_secs(30),
            || sees_up(&b, "A", Some(generation)),
        )
        .await;
        eventually("A never saw B up again", Duration::from_secs(30), || {
            sees_up(&a, "B", None)
        })
        .await;
        eventually(
            "/health never answered 200 again",
            Duration::from_secs(10),
            || async { health(&a).await.0 == 200 },
        )
        .await;
        stop_watch.send_replace(true);
        let unhealthy = watcher.await.unwrap();
        assert!(
            !unhealthy.is_empty(),
            "/health never answered 503 while gossip was down"
        );
        for (status, body) in &unhealthy {
            assert_eq!(*status, 503, "{body}");
            assert_eq!(body["status"], "unhealthy", "{body}");
            assert!(
                body["reason"].as_str().unwrap().contains("gossip"),
                "{body}"
            );
        }

        // The driver reads the restarted gossip: a peer that joins now reaches A's cluster view.
        let c = RunningPeer::start(PeerConfig::for_test("C", SECRET, vec![b.addresses.gossip]))
            .await
            .unwrap();
        common::wait_for_live(&format!("http://{}", a.addresses.http), 3).await;
        assert_eq!(health(&a).await.0, 200);
        for peer in [c, b, a] {
            peer.shutdown().await;
        }
    })
    .await
    .expect("the test finished within its time limit");
}

/// Gossip that keeps dying is not restarted forever: past its budget (here two restarts in a
/// minute) the peer gives up — `/health` answers 503 for good and `gossip_gave_up` resolves,
/// on which `serve` exits with that error.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_peer_whose_gossip_keeps_dying_gives_up() {
    let _one = common::ONE_CLUSTER_AT_A_TIME.lock().await;
    tokio::time::timeout(LIMIT, async {
        let mut config = PeerConfig::for_test("A", SECRET, vec![]);
        config.gossip.max_restarts = 2;
        config.gossip.restart_window = Duration::from_secs(60);
        let peer = RunningPeer::start(config).await.unwrap();
        for restart in 1..=2u64 {
            let generation = peer.gossip().generation();
            peer.gossip().abort();
            eventually(
                "gossip was not restarted",
                Duration::from_secs(10),
                || async { peer.gossip().generation() > generation },
            )
            .await;
            assert_eq!(
                peer.gossip().view_stats().restarts.load(Ordering::Relaxed),
                restart
            );
            eventually(
                "/health never answered 200 again",
                Duration::from_secs(10),
                || async { health(&peer).await.0 == 200 },
            )
            .await;
        }
        // The third death within the minute is one too many.
        let generation = peer.gossip().generation();
        peer.gossip().abort();
        let error = tokio::time::timeout(Duration::from_secs(10), peer.gossip_gave_up())
            .await
            .expect("the peer gave gossip up");
        let message = error.to_string();
        assert!(message.contains("not restarting"), "{message}");
        assert_eq!(peer.gossip().generation(), generation, "no third restart");
        let (status, body) = health(&peer).await;
        assert_eq!(status, 503, "{body}");
        assert!(
            body["reason"].as_str().unwrap().contains("not restarting"),
            "{body}"
        );
        // And it stays so.
        tokio::time::sleep(Duration::from_millis(500)).await;
        assert_eq!(health(&peer).await.0, 503);
        peer.shutdown().await;
    })
    .await
    .expect("the test finished within its time limit");
}

/// A peer could speak as another: the envelope's `from` was believed. Now it must be the name
/// in the sender's certificate. The impostor here holds B's certificate and writes "A" in its
/// envelopes; the honest B is the control.
#[tokio::test]
async fn an_envelope_not_from_its_certificate_s_peer_is_dropped() {
    tokio::time::timeout(LIMIT, async {
        let secret = ClusterSecret::new(SECRET).unwrap();
        let start = |cert: &str, speaks_as: &str| {
            let identity = PeerIdentity::new(&secret, cert).unwrap();
            let socket = std::net::UdpSocket::bind("127.0.0.1:0").unwrap();
            let (tx, rx) = mpsc::channel(16);
            let transport =
                PeerTransport::start(socket, &identity, NodeId::from(speaks_as), tx).unwrap();
            (transport, rx)
        };
        let (receiver, mut inbox) = start("R", "R");
        let (impostor, _) = start("B", "A");
        let (honest, _) = start("B", "B");
        let to = NodeId::from("R");
        let addr = receiver.local_addr().unwrap();
        impostor
            .send(&to, addr, None, &PeerMessage::StoreAck { req: 1 })
            .await
            .unwrap();
        honest
            .send(&to, addr, None, &PeerMessage::StoreAck { req: 2 })
            .await
            .unwrap();
        let inbound = tokio::time::timeout(Duration::from_secs(5), inbox.recv())
            .await
            .unwrap()
            .unwrap();
        assert_eq!(
            (inbound.from, inbound.message),
            (NodeId::from("B"), PeerMessage::StoreAck { req: 2 })
        );
        let deadline = tokio::time::Instant::now() + Duration::from_secs(5);
        while receiver.rejected_envelopes() == 0 && tokio::time::Instant::now() < deadline {
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        assert_eq!(receiver.rejected_envelopes(), 1);
        assert!(
            tokio::time::timeout(Duration::from_millis(300), inbox.recv())
                .await
                .is_err(),
            "the impostor's envelope was delivered"
        );
        // And a peer dialed as R that is not R is refused before anything is sent.
        let wrong = impostor
            .send(
                &NodeId::from("S"),
                addr,
                None,
                &PeerMessage::StoreAck { req: 3 },
            )
            .await;
        assert!(wrong.is_err());
        for t in [receiver, impostor, honest] {
            t.close();
        }
    })
    .await
    .expect("the test finished within its time limit");
}
