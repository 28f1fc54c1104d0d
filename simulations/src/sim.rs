//! One simulated run: peers, network, clock and workload, driven from a single seed.

use ringcache::core::config::CoreConfig;
use ringcache::core::membership::{Liveness, MembershipView};
use ringcache::core::message::PeerMessage;
use ringcache::core::node::{Input, Node, Outputs};
use ringcache::core::request::{ClientReply, ClientRequest, WriteKind, WriteRequest};
use ringcache::core::types::{ClientRequestId, Millis, NodeId, Quorum};
use ringcache::core::version_vector::VersionVector;
use std::collections::BTreeMap;

/// SplitMix64: tiny, fast, and the same sequence on every platform for a given seed.
pub struct Rng(u64);

impl Rng {
    pub fn new(seed: u64) -> Self {
        Rng(seed)
    }

    pub fn next_u64(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }

    pub fn below(&mut self, n: u64) -> u64 {
        self.next_u64() % n.max(1)
    }
}

enum Event {
    Deliver {
        to: NodeId,
        from: NodeId,
        message: PeerMessage,
    },
    Request {
        at: NodeId,
        id: ClientRequestId,
        request: ClientRequest,
    },
}

pub struct Report {
    pub completed: usize,
    pub violations: Vec<String>,
}

/// What a client last wrote to its key and the context that write returned.
struct ClientState {
    key: Vec<u8>,
    last_value: Option<Vec<u8>>,
    context: Option<VersionVector>,
    busy: bool,
}

pub fn run(seed: u64, ops: usize) -> Report {
    let mut rng = Rng::new(seed);
    let names: Vec<NodeId> = ["A", "B", "C", "D"]
        .iter()
        .map(|n| NodeId::from(*n))
        .collect();
    let mut view = MembershipView::new();
    for n in &names {
        view.set(n.clone(), Liveness::Up);
    }
    let config = CoreConfig::for_test();
    let tick_every: Millis = 10;
    let mut nodes: BTreeMap<NodeId, Node> = BTreeMap::new();
    for (i, n) in names.iter().enumerate() {
        let mut node = Node::new(n.clone(), i as u64 + 1, config.clone());
        node.handle(0, Input::Membership(view.clone()), &mut Outputs::default());
        nodes.insert(n.clone(), node);
    }
    let mut clients: Vec<ClientState> = (0..8)
        .map(|i| ClientState {
            key: format!("key-{i}").into_bytes(),
            last_value: None,
            context: None,
            busy: false,
        })
        .collect();
    // (time, sequence) orders events; the sequence breaks ties deterministically.
    let mut queue: BTreeMap<(Millis, u64), Event> = BTreeMap::new();
    let mut seq = 0u64;
    let mut now: Millis = 0;
    let mut issued = 0usize;
    let mut completed = 0usize;
    let mut violations = Vec::new();
    // Which client (and whether it was a write) each request id belongs to.
    let mut in_flight: BTreeMap<ClientRequestId, (usize, Option<Vec<u8>>)> = BTreeMap::new();
    let mut next_tick: Millis = tick_every;

    while completed < ops && now < 10_000_000 {
        // Issue new requests from idle clients.
        for (c, client) in clients.iter_mut().enumerate() {
            if client.busy || issued >= ops || rng.below(3) != 0 {
                continue;
            }
            issued += 1;
            client.busy = true;
            let id = ClientRequestId(issued as u64);
            let at = names[rng.below(names.len() as u64) as usize].clone();
            let (request, written) = if client.last_value.is_none() || rng.below(2) == 0 {
                let value = format!("{seed}-{c}-{issued}").into_bytes();
                let request = ClientRequest::Write(WriteRequest {
                    key: client.key.clone(),
                    write: WriteKind::Put {
                        value: value.clone(),
                        ttl_ms: None,
                    },
                    context: client.context.clone(),
                    w: Quorum::Quorum,
                });
                (request, Some(value))
            } else {
                (
                    ClientRequest::Get {
                        key: client.key.clone(),
                        r: Quorum::Quorum,
                    },
                    None,
                )
            };
            in_flight.insert(id, (c, written));
            seq += 1;
            queue.insert(
                (now + rng.below(3), seq),
                Event::Request { at, id, request },
            );
        }
        // Advance to the next event or tick.
        let next_event = queue.keys().next().map(|(t, _)| *t).unwrap_or(Millis::MAX);
        now = next_event.min(next_tick);
        let mut produced: Vec<(NodeId, Outputs)> = Vec::new();
        if now == next_tick {
            for (name, node) in nodes.iter_mut() {
                let mut out = Outputs::default();
                node.tick(now, &mut out);
                produced.push((name.clone(), out));
            }
            next_tick += tick_every;
        } else {
            let (_, event) = queue.pop_first().expect("an event is due");
            let mut out = Outputs::default();
            let target = match event {
                Event::Deliver { to, from, message } => {
                    nodes.get_mut(&to).expect("known").handle(
                        now,
                        Input::Peer { from, message },
                        &mut out,
                    );
                    to
                }
                Event::Request { at, id, request } => {
                    nodes.get_mut(&at).expect("known").handle(
                        now,
                        Input::Client { id, request },
                        &mut out,
                    );
                    at
                }
            };
            produced.push((target, out));
        }
        for (from, out) in produced {
            for msg in out.messages {
                seq += 1;
                let delay = 1 + rng.below(20);
                queue.insert(
                    (now + delay, seq),
                    Event::Deliver {
                        to: msg.to,
                        from: from.clone(),
                        message: msg.message,
                    },
                );
            }
            for (id, reply) in out.replies {
                let Some((c, written)) = in_flight.remove(&id) else {
                    continue;
                };
                completed += 1;
                let client = &mut clients[c];
                client.busy = false;
                match (written, reply) {
                    (Some(value), ClientReply::Written { context }) => {
                        client.last_value = Some(value);
                        client.context = Some(context);
                    }
                    (None, ClientReply::Found { values, context }) => {
                        let expected = client.last_value.clone().expect("reads follow a write");
                        if values.len() != 1 || values[0].data != expected {
                            violations.push(format!(
                                "t={now} client {c} read {:?}, expected only its last write {:?}",
                                values
                                    .iter()
                                    .map(|v| String::from_utf8_lossy(&v.data).into_owned())
                                    .collect::<Vec<_>>(),
                                String::from_utf8_lossy(&expected)
                            ));
                        }
                        client.context = Some(context);
                    }
                    (_, other) => {
                        violations.push(format!("t={now} client {c}: unexpected reply {other:?}"))
                    }
                }
            }
        }
    }
    if completed < ops {
        violations.push(format!("only {completed} of {ops} operations completed"));
    }
    Report {
        completed,
        violations,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn fault_free_runs_keep_read_your_writes() {
        for seed in 1..=20 {
            let report = run(seed, 300);
            assert!(
                report.violations.is_empty(),
                "seed {seed}: {:?}",
                report.violations
            );
            assert_eq!(report.completed, 300);
        }
    }

    #[test]
    fn the_same_seed_gives_the_same_sequence() {
        let a: Vec<u64> = {
            let mut r = Rng::new(7);
            (0..5).map(|_| r.next_u64()).collect()
        };
        let b: Vec<u64> = {
            let mut r = Rng::new(7);
            (0..5).map(|_| r.next_u64()).collect()
        };
        assert_eq!(a, b);
    }
}
