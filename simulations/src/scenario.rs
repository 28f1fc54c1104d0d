//! What one simulated run does, decided entirely by its seed: the cluster, the network's
//! behaviour, the clocks, the workload's shape and the schedule of faults.
//!
//! A [`Scenario`] is plain data so that shrinking can cut it down (fewer operations, fewer
//! faults) and replay what is left.

use crate::rng::Rng;
use ringcache::core::eviction::EvictionPolicy;
use ringcache::core::types::{Millis, Quorum};
use std::fmt;

/// Stream numbers for [`Rng::stream`].
pub const SCENARIO_STREAM: u64 = 1;
pub const WORKLOAD_STREAM: u64 = 2;
pub const NETWORK_STREAM: u64 = 3;
/// Sloppy-quorum choices (the seed's share, then each write's), apart from the other streams
/// so that adding them left every seed's cluster, faults and workload as they were.
pub const SLOPPY_STREAM: u64 = 4;
/// The stream that picks which writes carry a foreign or corrupted causal context (its own,
/// so adding it changed no other draw).
pub const FORGED_CONTEXT_STREAM: u64 = 6;
/// Overwrite choices (the seed's share, then each blind put's): Redis-style puts that replace
/// what their coordinator has seen. Its own stream, so adding it changed no other draw.
pub const OVERWRITE_STREAM: u64 = 7;
/// Counter increments (the seed's share, then each operation's, on stream + 1): its own
/// stream, so adding them changed no other draw.
pub const COUNTER_STREAM: u64 = 9;
/// Keys the workload increments (and never reads or writes otherwise).
pub const COUNTER_KEYS: u64 = 3;
/// Conditional writes (the seed's share, then each operation's, on stream + 1): its own
/// stream, so adding them changed no other draw.
pub const CONDITIONAL_STREAM: u64 = 11;
/// Which reads accept stale values (`stale_ok`), and how stale; on stream + 1, whether the
/// seed's peers keep expired values for stale reads. Its own stream, so adding them changed
/// no other draw.
pub const STALE_READ_STREAM: u64 = 13;
/// How long the seed's reads wait before asking their spare replicas (0: every replica at
/// once). Its own stream, so adding it changed no other draw.
pub const READ_SPARES_STREAM: u64 = 15;
/// The seed's anti-entropy budget (2,000 or 300 keys a second), then the share of it its busy
/// peers spend (100, 50 or 10 percent). Its own stream, so adding it changed no other draw.
pub const BACKGROUND_SHARE_STREAM: u64 = 16;
/// Keys the workload writes only with conditional writes (compare-and-set).
pub const CONDITIONAL_KEYS: u64 = 2;

/// Peer names: the first `nodes` start the run, later ones can join.
pub const NAMES: [&str; 8] = ["A", "B", "C", "D", "E", "F", "G", "H"];

#[derive(Clone, Debug)]
pub struct Scenario {
    pub seed: u64,
    /// Peers at the start.
    pub nodes: usize,
    pub replicas: usize,
    pub clients: usize,
    /// Most operations the clients issue.
    pub ops: usize,
    /// How long the workload (and fault) phase lasts.
    pub workload_ms: Millis,
    pub keys: KeySpace,
    pub consistency: Consistency,
    /// Share of clients (per 10,000) that always send the context they last got.
    pub session_clients_per_10k: u64,
    pub mix: OpMix,
    pub net: NetParams,
    /// Per peer name: clock offset (ms) and drift (parts per million).
    pub clocks: Vec<(i64, i64)>,
    /// The failure detector: heartbeat period and how long silence means "down".
    pub heartbeat_ms: Millis,
    pub suspect_after_ms: Millis,
    /// Engine shards per peer (`--shards`): requests, replies and views are dealt to them as a
    /// real peer deals them.
    pub shards: u32,
    /// A per-peer memory limit and eviction policy, for the seeds that set one.
    pub memory: Option<(u64, EvictionPolicy)>,
    pub faults: Vec<TimedFault>,
    /// After healing, sweep every key with reads so that read repair converges replicas (the
    /// older way, opt-in: `run --read-sweep`). By default nothing reads after healing and
    /// replicas must converge by anti-entropy alone.
    pub read_sweep: bool,
    /// How long reads wait before asking their spare replicas (`read_spare_after_ms`); `None`
    /// draws it per seed (`READ_SPARES_STREAM`).
    pub read_spare_after_ms: Option<Millis>,
}

#[derive(Clone, Copy, Debug)]
pub struct KeySpace {
    pub hot: usize,
    pub cold: usize,
    /// Share of operations (per 10,000) on a hot key.
    pub hot_per_10k: u64,
}

/// How clients choose R and W.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Consistency {
    /// R = W = quorum.
    Quorum,
    /// W = all, R = one.
    WriteAll,
    /// R = W = one: no overlap guarantee.
    One,
    /// A random choice per operation.
    Mixed,
}

#[derive(Clone, Copy, Debug)]
pub struct OpMix {
    pub read_per_10k: u64,
    pub delete_per_10k: u64,
    /// Share of puts with a TTL.
    pub ttl_per_10k: u64,
    /// Share of operations that change a key's TTL (`expire`, or `persist` one time in three).
    pub expire_per_10k: u64,
    /// Share of puts and deletes sent with a sloppy quorum (`?sloppy=true`).
    pub sloppy_per_10k: u64,
    /// Blind puts sent as overwrites (`WriteRequest::overwrite`), per 10,000.
    pub overwrite_per_10k: u64,
    /// Operations turned into a counter increment (on a `ctr-` key), per 10,000.
    pub increment_per_10k: u64,
    /// Operations turned into a conditional write (on a `cas-` key), per 10,000.
    pub conditional_per_10k: u64,
}

#[derive(Clone, Copy, Debug)]
pub struct NetParams {
    pub loss_per_10k: u64,
    pub dup_per_10k: u64,
    pub base_delay_ms: Millis,
    /// Mean of the exponential part of a delay.
    pub tail_mean_ms: Millis,
    /// Rare long delays (reordering far beyond the tail).
    pub spike_per_10k: u64,
    pub spike_ms: Millis,
}

#[derive(Clone, Debug)]
pub struct TimedFault {
    pub at: Millis,
    pub fault: Fault,
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Fault {
    /// Messages from `from` to `to` are dropped (both lists of peer names), for `duration`.
    /// Symmetric partitions list both directions; `flap_ms` toggles the cut on and off.
    Partition {
        shape: PartitionShape,
        cut: Vec<(String, String)>,
        duration: Millis,
        flap_ms: Option<Millis>,
    },
    /// The peer dies and loses its memory; it restarts after `down_for` (new incarnation).
    Crash { node: String, down_for: Millis },
    /// The process stops (SIGSTOP): no ticks, no messages handled, for `duration`.
    Pause { node: String, duration: Millis },
    /// `observer`'s failure detector wrongly believes `suspect` is down.
    FalseSuspicion {
        observer: String,
        suspect: String,
        duration: Millis,
    },
    /// A new peer joins the cluster.
    Join { node: String },
    /// A peer leaves gracefully (announces it, then stops).
    Leave { node: String },
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum PartitionShape {
    Symmetric,
    OneWay,
    Isolate,
    MajorityMinority,
}

impl Fault {
    pub fn kind(&self) -> &'static str {
        match self {
            Fault::Partition { shape, flap_ms, .. } => match (shape, flap_ms.is_some()) {
                (_, true) => "partition-flapping",
                (PartitionShape::Symmetric, _) => "partition",
                (PartitionShape::OneWay, _) => "partition-one-way",
                (PartitionShape::Isolate, _) => "partition-isolate",
                (PartitionShape::MajorityMinority, _) => "partition-majority",
            },
            Fault::Crash { .. } => "crash-restart",
            Fault::Pause { .. } => "pause",
            Fault::FalseSuspicion { .. } => "false-suspicion",
            Fault::Join { .. } => "join",
            Fault::Leave { .. } => "leave",
        }
    }
}

impl fmt::Display for TimedFault {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "t={} {}", self.at, self.fault.kind())?;
        match &self.fault {
            Fault::Partition {
                cut,
                duration,
                flap_ms,
                ..
            } => {
                let links: Vec<String> = cut.iter().map(|(a, b)| format!("{a}->{b}")).collect();
                write!(f, " [{}] for {duration}ms", links.join(" "))?;
                if let Some(p) = flap_ms {
                    write!(f, " flapping every {p}ms")?;
                }
                Ok(())
            }
            Fault::Crash { node, down_for } => write!(f, " {node} down for {down_for}ms"),
            Fault::Pause { node, duration } => write!(f, " {node} for {duration}ms"),
            Fault::FalseSuspicion {
                observer,
                suspect,
                duration,
            } => write!(f, " {observer} suspects {suspect} for {duration}ms"),
            Fault::Join { node } | Fault::Leave { node } => write!(f, " {node}"),
        }
    }
}

impl Scenario {
    pub fn generate(seed: u64, ops: usize) -> Scenario {
        let mut rng = Rng::stream(seed, SCENARIO_STREAM);
        let nodes = rng.between(3, 5) as usize;
        let clients = rng.between(3, 10) as usize;
        let consistency = *rng.pick(&[
            Consistency::Quorum,
            Consistency::Quorum,
            Consistency::WriteAll,
            Consistency::One,
            Consistency::Mixed,
        ]);
        let keys = if rng.chance(5_000) {
            KeySpace {
                hot: rng.between(1, 4) as usize,
                cold: 0,
                hot_per_10k: 10_000,
            }
        } else {
            KeySpace {
                hot: rng.between(2, 5) as usize,
                cold: rng.between(50, 500) as usize,
                hot_per_10k: rng.between(3_000, 9_000),
            }
        };
        let net = NetParams {
            loss_per_10k: *rng.pick(&[0, 0, 10, 100, 300]),
            dup_per_10k: *rng.pick(&[0, 0, 10, 200]),
            base_delay_ms: rng.between(0, 3),
            tail_mean_ms: *rng.pick(&[1, 5, 20, 60]),
            spike_per_10k: *rng.pick(&[0, 10, 100]),
            spike_ms: rng.between(100, 800),
        };
        let max_skew = *rng.pick(&[0i64, 5, 50, 250]);
        let max_drift = *rng.pick(&[0i64, 100, 1_000]);
        let clocks = NAMES
            .iter()
            .map(|_| {
                let offset = rng.below(2 * max_skew as u64 + 1) as i64 - max_skew;
                let drift = rng.below(2 * max_drift as u64 + 1) as i64 - max_drift;
                (offset, drift)
            })
            .collect();
        // Operations take ~10-60 ms of simulated time each (seconds when they time out); size
        // the phase to the budget, long enough for faults to come and go.
        let workload_ms = (ops as u64 * 60 / clients as u64).max(5_000);
        let heartbeat_ms = 100;
        let suspect_after_ms = rng.between(300, 900);
        // Three seeds in ten run peers at a memory limit small enough to evict (a key's
        // state takes about 80 bytes, a few hundred with siblings and a long clock).
        // Half the seeds run peers of 2 or 3 engine shards; a peer's limit is split between its
        // shards, as `serve` splits it, so each shard gets the 1-4 KiB drawn.
        let shards = *rng.pick(&[1, 1, 2, 3]);
        let memory = if rng.chance(3_000) {
            let policy = *rng.pick(&EvictionPolicy::ALL);
            Some((rng.between(1, 4) * 1024 * shards as u64, policy))
        } else {
            None
        };
        let mut scenario = Scenario {
            seed,
            nodes,
            replicas: 3,
            clients,
            ops,
            workload_ms,
            keys,
            consistency,
            session_clients_per_10k: rng.between(0, 10_000),
            mix: OpMix {
                read_per_10k: rng.between(3_000, 6_000),
                delete_per_10k: rng.between(0, 2_000),
                ttl_per_10k: *rng.pick(&[0, 1_000, 5_000]),
                expire_per_10k: *rng.pick(&[0, 300, 1_000]),
                sloppy_per_10k: *Rng::stream(seed, SLOPPY_STREAM).pick(&[0, 2_000, 5_000, 10_000]),
                overwrite_per_10k: *Rng::stream(seed, OVERWRITE_STREAM)
                    .pick(&[0, 3_000, 7_000, 10_000]),
                increment_per_10k: *Rng::stream(seed, COUNTER_STREAM)
                    .pick(&[0, 1_000, 2_500, 5_000]),
                conditional_per_10k: *Rng::stream(seed, CONDITIONAL_STREAM)
                    .pick(&[0, 500, 1_000, 2_000]),
            },
            net,
            clocks,
            heartbeat_ms,
            suspect_after_ms,
            shards,
            memory,
            read_sweep: false,
            read_spare_after_ms: None,
            faults: Vec::new(),
        };
        // One seed in ten runs without faults, as a baseline.
        if !rng.chance(1_000) {
            let count = rng.between(1, 10);
            scenario.faults = generate_faults(&mut rng, &scenario, count as usize);
        }
        scenario
    }

    /// Largest difference between two peers' clocks up to simulated instant `until` (drift
    /// accumulates from simulated time zero).
    pub fn clock_uncertainty_ms(&self, until: Millis) -> Millis {
        let used = &self.clocks[..NAMES.len()];
        let at = |(offset, drift): (i64, i64)| {
            offset as i128 + drift as i128 * until as i128 / 1_000_000
        };
        let worst_ahead = used.iter().map(|c| at(*c)).max().unwrap_or(0);
        let worst_behind = used.iter().map(|c| at(*c)).min().unwrap_or(0);
        let offsets_now = (worst_ahead - worst_behind).max(0) as u64;
        let max_offset = used.iter().map(|c| c.0.unsigned_abs()).max().unwrap_or(0);
        offsets_now.max(2 * max_offset)
    }

    pub fn quorums(&self, rng: &mut Rng) -> (Quorum, Quorum) {
        match self.consistency {
            Consistency::Quorum => (Quorum::Quorum, Quorum::Quorum),
            Consistency::WriteAll => (Quorum::One, Quorum::All),
            Consistency::One => (Quorum::One, Quorum::One),
            Consistency::Mixed => {
                let choices = [Quorum::One, Quorum::Quorum, Quorum::All];
                (*rng.pick(&choices), *rng.pick(&choices))
            }
        }
    }
}

fn generate_faults(rng: &mut Rng, s: &Scenario, count: usize) -> Vec<TimedFault> {
    let mut faults = Vec::new();
    let mut members: Vec<String> = NAMES[..s.nodes].iter().map(|n| n.to_string()).collect();
    let mut next_new = s.nodes;
    let span = s.workload_ms;
    let mut times: Vec<Millis> = (0..count).map(|_| rng.below(span * 9 / 10)).collect();
    times.sort_unstable();
    for at in times {
        let long = s.suspect_after_ms * 2 + rng.below(3_000);
        let fault = match rng.below(12) {
            0..=3 => partition(rng, &members, long),
            4 | 5 => Fault::Crash {
                node: rng.pick(&members).clone(),
                down_for: rng.between(100, 3_000),
            },
            6 | 7 => Fault::Pause {
                node: rng.pick(&members).clone(),
                // Longer than the failure detector's timeout more often than not.
                duration: rng.between(s.suspect_after_ms / 2, s.suspect_after_ms * 4),
            },
            8 | 9 => {
                let observer = rng.pick(&members).clone();
                let suspect = rng.pick(&members).clone();
                Fault::FalseSuspicion {
                    observer,
                    suspect,
                    duration: rng.between(200, 2_000),
                }
            }
            10 if next_new < NAMES.len() => {
                let node = NAMES[next_new].to_string();
                next_new += 1;
                members.push(node.clone());
                Fault::Join { node }
            }
            _ if members.len() > s.replicas => {
                let node = rng.pick(&members).clone();
                members.retain(|m| *m != node);
                Fault::Leave { node }
            }
            _ => partition(rng, &members, long),
        };
        faults.push(TimedFault { at, fault });
    }
    faults
}

fn partition(rng: &mut Rng, members: &[String], duration: Millis) -> Fault {
    let mut shuffled: Vec<String> = members.to_vec();
    for i in (1..shuffled.len()).rev() {
        let j = rng.below(i as u64 + 1) as usize;
        shuffled.swap(i, j);
    }
    let shape = *rng.pick(&[
        PartitionShape::Symmetric,
        PartitionShape::OneWay,
        PartitionShape::Isolate,
        PartitionShape::MajorityMinority,
    ]);
    let split = match shape {
        PartitionShape::Isolate => 1,
        PartitionShape::MajorityMinority => shuffled.len() / 2,
        _ => rng.between(1, shuffled.len() as u64 - 1) as usize,
    };
    let (left, right) = shuffled.split_at(split);
    let mut cut = Vec::new();
    for a in left {
        for b in right {
            cut.push((a.clone(), b.clone()));
            if shape != PartitionShape::OneWay {
                cut.push((b.clone(), a.clone()));
            }
        }
    }
    let flap_ms = if rng.chance(2_000) {
        Some(rng.between(100, 600))
    } else {
        None
    };
    Fault::Partition {
        shape,
        cut,
        duration,
        flap_ms,
    }
}
