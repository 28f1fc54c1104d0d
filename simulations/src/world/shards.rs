//! A simulated peer's engine shards, routed as the real peer routes them.
//!
//! A real peer runs one `Node` per shard (`--shards`) and deals work to them: client requests
//! and messages about a key go to the key's shard (`ring::shard_of_key`), replies to the shard
//! that numbered the request (`PeerMessage::shard`, a request number's residue), membership
//! views to every shard. [`Shards`] does the same with the same functions, so seeds that run
//! several shards exercise that routing; with one shard it is a plain `Node`.

use ringcache::core::config::CoreConfig;
use ringcache::core::membership::MembershipView;
use ringcache::core::node::{Input, Node, NodeStats, Outputs, WriteRan};
use ringcache::core::planted::PlantedBug;
use ringcache::core::ring::{shard_of_key, Ring};
use ringcache::core::siblings::Siblings;
use ringcache::core::types::{Millis, NodeId};

pub struct Shards {
    nodes: Vec<Node>,
    partitions: u32,
}

impl Shards {
    /// A peer of `count` shards, splitting the memory limit between them as `serve` does.
    pub fn boot(
        id: &NodeId,
        incarnation: u64,
        config: &CoreConfig,
        count: u32,
        plant: Option<PlantedBug>,
    ) -> Shards {
        let mut shard_config = config.clone();
        shard_config.max_memory_bytes = config.max_memory_bytes.map(|m| m / count as u64);
        // Index keys from the simulated peer's incarnation: a real peer's are random, and
        // a seed must replay the same layout.
        shard_config.index_hash_keys = (incarnation, incarnation.rotate_left(32) ^ 0x1DE8);
        let nodes = (0..count)
            .map(|shard| {
                let mut node =
                    Node::new_shard(id.clone(), incarnation, shard_config.clone(), shard, count);
                node.log_evictions();
                node.log_writes();
                node.log_abandoned();
                node.log_hints_given_up();
                if let Some(bug) = plant {
                    node.plant(bug);
                }
                node
            })
            .collect();
        Shards {
            nodes,
            partitions: config.partitions,
        }
    }

    fn count(&self) -> u32 {
        self.nodes.len() as u32
    }

    /// The shard that holds `key`.
    pub fn for_key(&self, key: &[u8]) -> &Node {
        &self.nodes[shard_of_key(key, self.partitions, self.count()) as usize]
    }

    pub fn nodes(&self) -> &[Node] {
        &self.nodes
    }

    pub fn peek(&self, key: &[u8]) -> Option<Siblings> {
        self.for_key(key).store().peek(key)
    }

    /// Every key held, with its state, over all shards.
    pub fn iter_store(&self) -> impl Iterator<Item = (&[u8], Siblings)> + '_ {
        self.nodes.iter().flat_map(|n| n.store().iter())
    }

    /// Every hint held, over all shards: (intended owner, key, state).
    pub fn hints_held(&self) -> impl Iterator<Item = (&NodeId, &[u8], &Siblings)> {
        self.nodes.iter().flat_map(|n| n.hints_held())
    }

    pub fn take_hints_given_up(&mut self) -> Vec<(NodeId, Vec<u8>, Siblings)> {
        self.nodes
            .iter_mut()
            .flat_map(|n| n.take_hints_given_up())
            .collect()
    }

    pub fn states_in_flight(&self) -> impl Iterator<Item = (&[u8], &Siblings)> {
        self.nodes.iter().flat_map(|n| n.states_in_flight())
    }

    /// Every shard sees the same view; the first one's ring stands for the peer's.
    pub fn ring(&self) -> &Ring {
        self.nodes[0].ring()
    }

    pub fn view(&self) -> &MembershipView {
        self.nodes[0].view()
    }

    pub fn id(&self) -> &NodeId {
        self.nodes[0].id()
    }

    pub fn read_repairs(&self) -> u64 {
        self.nodes.iter().map(|n| n.read_repairs()).sum()
    }

    pub fn stats(&self) -> NodeStats {
        let mut total = NodeStats::default();
        for n in &self.nodes {
            total.add(&n.stats());
        }
        total
    }

    /// Deals `input` to the shard (or shards) the real peer would.
    pub fn handle(&mut self, now: Millis, input: Input, out: &mut Outputs) {
        let count = self.count();
        let shard = match &input {
            Input::Client { request, .. } => shard_of_key(request.key(), self.partitions, count),
            Input::Peer { message, .. } => message.shard(self.partitions, count),
            // A shard's sends fail back to it; its request numbers keep its residue.
            Input::Undeliverable { req, .. } => (*req % count as u64) as u32,
            Input::Membership(_) => {
                for n in &mut self.nodes {
                    n.handle(now, input.clone(), out);
                }
                return;
            }
        };
        self.nodes[shard as usize].handle(now, input, out);
    }

    pub fn tick(&mut self, now: Millis, out: &mut Outputs) {
        for n in &mut self.nodes {
            n.tick(now, out);
        }
    }

    pub fn take_evicted(&mut self) -> Vec<(Vec<u8>, Siblings)> {
        self.nodes
            .iter_mut()
            .flat_map(|n| n.take_evicted())
            .collect()
    }

    /// Copies handoffs dropped unsent at their deadline, since the last call.
    pub fn take_abandoned(&mut self) -> Vec<(Vec<u8>, Siblings)> {
        self.nodes
            .iter_mut()
            .flat_map(|n| n.take_abandoned())
            .collect()
    }

    /// Copies dropped as handed off, since the last call.
    pub fn take_handed_off(&mut self) -> Vec<ringcache::core::node::HandedOff> {
        self.nodes
            .iter_mut()
            .flat_map(|n| n.take_handed_off())
            .collect()
    }

    /// Starts a graceful leave in every shard.
    pub fn leave(&mut self, now: Millis) {
        for n in &mut self.nodes {
            n.leave(now);
        }
    }

    /// Whether every shard has handed off all it must.
    pub fn handoff_done(&self) -> bool {
        self.nodes.iter().all(|n| n.handoff_done())
    }

    pub fn take_writes_run(&mut self) -> Vec<WriteRan> {
        self.nodes
            .iter_mut()
            .flat_map(|n| n.take_writes_run())
            .collect()
    }
}
