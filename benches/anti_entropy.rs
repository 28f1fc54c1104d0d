//! What Merkle anti-entropy costs, against moving everything: two replicas of `KEYS` keys
//! (100-byte values) that differ in 1% and 0.1% of them, driven through the real core with
//! every message encoded as on the wire. Prints bytes exchanged, messages, CPU time to
//! converge, and the bytes of a full transfer (every state, encoded); then the steady state:
//! bytes per round between converged replicas.
//!
//! `cargo bench --bench anti_entropy` (`RINGCACHE_AE_KEYS` sets the key count; default
//! 1,000,000).

#![allow(clippy::disallowed_methods)] // a benchmark reads the wall clock

use ringcache::core::config::CoreConfig;
use ringcache::core::membership::{Liveness, MembershipView};
use ringcache::core::message::{encoded_len, KeyState, PeerMessage};
use ringcache::core::node::{Input, Node, Outputs};
use ringcache::core::siblings::{Payload, Siblings};
use ringcache::core::types::NodeId;
use ringcache::core::version_vector::{Actor, VersionVector};
use std::collections::VecDeque;
use std::time::Instant;

fn state(actor: &str, value: &[u8]) -> Siblings {
    let mut s = Siblings::new();
    s.update(
        &Actor(actor.into()),
        &VersionVector::new(),
        Payload::Value {
            data: value.to_vec(),
            expires_at_ms: None,
        },
        64,
    );
    s
}

/// Two peers with `keys` keys each, of which every `1 / differ_every` is held by A only.
fn replicas(keys: usize, differ_every: usize) -> (Node, Node) {
    let config = CoreConfig {
        replicas: 2,
        anti_entropy_interval_ms: 1_000,
        // Unpaced: the figure is bytes and CPU, not the pacing.
        anti_entropy_keys_per_sec: u64::MAX / 4_000,
        anti_entropy_bytes_per_sec: u64::MAX / 4_000,
        ..CoreConfig::default()
    };
    let view = MembershipView::new()
        .with("A", Liveness::Up)
        .with("B", Liveness::Up);
    let mut a = Node::new(NodeId::from("A"), 1, config.clone());
    let mut b = Node::new(NodeId::from("B"), 2, config);
    for n in [&mut a, &mut b] {
        n.handle(0, Input::Membership(view.clone()), &mut Outputs::default());
    }
    let value = [b'v'; 100];
    for i in 0..keys {
        let key = format!("key:{i:012}").into_bytes();
        let s = state("W.1", &value);
        let store = |req| PeerMessage::Store {
            req,
            key: key.clone(),
            state: s.clone(),
        };
        a.handle(0, peer("B", store(1)), &mut Outputs::default());
        if i % differ_every != 0 {
            b.handle(0, peer("A", store(1)), &mut Outputs::default());
        }
    }
    (a, b)
}

fn peer(from: &str, message: PeerMessage) -> Input {
    Input::Peer {
        from: NodeId::from(from),
        message,
        trace: None,
    }
}

struct Traffic {
    bytes: u64,
    messages: u64,
}

/// Ticks both nodes at `now` and delivers every message until none is left.
fn round(a: &mut Node, b: &mut Node, now: u64, traffic: &mut Traffic) {
    let mut queue: VecDeque<(NodeId, PeerMessage)> = VecDeque::new();
    for n in [&mut *a, &mut *b] {
        let mut out = Outputs::default();
        n.tick(now, &mut out);
        let from = n.id().clone();
        queue.extend(out.messages.into_iter().map(|m| (from.clone(), m.message)));
    }
    while let Some((from, message)) = queue.pop_front() {
        traffic.bytes += encoded_len(&message);
        traffic.messages += 1;
        let to = if from == NodeId::from("A") {
            &mut *b
        } else {
            &mut *a
        };
        let mut out = Outputs::default();
        to.handle(
            now,
            Input::Peer {
                from,
                message,
                trace: None,
            },
            &mut out,
        );
        let sender = to.id().clone();
        queue.extend(
            out.messages
                .into_iter()
                .map(|m| (sender.clone(), m.message)),
        );
    }
}

fn full_transfer_bytes(node: &Node) -> u64 {
    let states: Vec<KeyState> = node.store().iter().map(|(k, s)| (k.to_vec(), s)).collect();
    states
        .chunks(1_000)
        .map(|chunk| {
            encoded_len(&PeerMessage::AntiEntropy {
                req: 0,
                message: ringcache::core::message::AntiEntropyMessage::Push {
                    partition: 0,
                    states: chunk.to_vec(),
                },
                busy: false,
            })
        })
        .sum()
}

fn main() {
    let keys: usize = std::env::var("RINGCACHE_AE_KEYS")
        .ok()
        .and_then(|k| k.parse().ok())
        .unwrap_or(1_000_000);
    println!("anti-entropy between two replicas of {keys} keys (100-byte values)");
    for (label, differ_every) in [("1%", 100), ("0.1%", 1_000)] {
        let (mut a, mut b) = replicas(keys, differ_every);
        let full = full_transfer_bytes(&a);
        let missing = a.store().len() - b.store().len();
        let mut traffic = Traffic {
            bytes: 0,
            messages: 0,
        };
        let started = Instant::now();
        let mut now = 1_000;
        let mut rounds = 0;
        while b.store().len() < a.store().len() && rounds < 100 {
            round(&mut a, &mut b, now, &mut traffic);
            now += 1_000;
            rounds += 1;
        }
        let took = started.elapsed();
        assert_eq!(a.store().len(), b.store().len(), "converged");
        println!(
            "  {label} differ ({missing} keys): {} bytes in {} messages, {rounds} rounds, {:.2} s CPU; \
             full transfer {} bytes; ratio {:.2}%",
            traffic.bytes,
            traffic.messages,
            took.as_secs_f64(),
            full,
            100.0 * traffic.bytes as f64 / full as f64
        );
        // Steady state: converged replicas, one more round each way.
        let mut idle = Traffic {
            bytes: 0,
            messages: 0,
        };
        for _ in 0..10 {
            now += 1_000;
            round(&mut a, &mut b, now, &mut idle);
        }
        println!(
            "  converged: {} bytes in {} messages over 10 rounds ({} bytes a round)",
            idle.bytes,
            idle.messages,
            idle.bytes / 10
        );
    }
}
