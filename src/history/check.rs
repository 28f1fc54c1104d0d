//! The history checker: decides whether a recorded run kept ringcache's promises.
//!
//! Checked properties (numbered as in `docs/guarantees.md`):
//! 1. **No lost write** — every acknowledged put (or expire) is among the final values, unless
//!    a write that ran superseded it, it may have expired, or every copy of it was lost with a
//!    peer's memory (a crash, a departure, an eviction, or data stranded by a ring change).
//! 2. **No phantom, no resurrection** — every value read was written (and invoked before the
//!    read completed); no final value was superseded by an acknowledged write whose own copies
//!    survived.
//! 3. **Siblings are concurrent** — no read returns a value together with a write that
//!    descends from it.
//! 4. **Convergence** — judged by the recorder (it alone can see replicas), and passed in.
//! 5. **Read your writes** — a client's read after its acknowledged write returns a context
//!    that covers the write and the value itself (or what superseded it). Enforced when
//!    R + W > N, the write's acks all came from replicas (no hint holder of a sloppy quorum),
//!    and nothing disrupted the replicas in between; otherwise only counted.
//!
//! Also: **no expired read** — a value is never read after its TTL plus the clock uncertainty.
//!
//! # Excuses are exactly as wide as the truth
//! A checker that excuses too much proves nothing, so every excuse names the write it excuses
//! and the fact that excuses it; nothing is excused per key or per time window.
//! - *Superseded.* Where the recorder can see inside the cluster (the simulator), it tells the
//!   checker what each write really did ([`WriteRun`]): the dot it minted and the history it
//!   was entitled to replace — the client's context, or, for a blind delete, what its
//!   coordinator held for the key at the instant it ran. A value is superseded only by a write
//!   that ran and whose entitlement covers the value's dot. A write that never ran supersedes
//!   nothing; a delete never supersedes a write its coordinator had not seen. Without that
//!   view (the real-process chaos test) the checker judges from the history alone: a write with
//!   context supersedes what that context was known to contain, and a blind delete may
//!   supersede puts invoked before it could last have run (its completion, or for one that
//!   never completed its client's give-up, plus [`Circumstances::late_write_ms`]).
//! - *Lost.* The recorder reports every moment a key's copies shrank ([`Loss`]): the clock the
//!   lost copy held and the clock of everything that survived — other replicas' stores,
//!   coordinators' in-flight reads, and messages still in flight. A write is excused as lost
//!   only if its own dot was in the first and not the second. A value another replica (or a
//!   message) still held is never excused, whatever else the crash took.
//! - *Expired.* A value whose TTL (plus clock uncertainty) may have passed.
//!
//! A write counts as checked only when no excuse applied; each excuse is counted by kind.

use crate::core::siblings::{Payload, Siblings};
use crate::core::types::Millis;
use crate::core::version_vector::{Dot, VersionVector};
use crate::history::{History, OpId, OpKind, Operation, Outcome};
use std::collections::{BTreeMap, BTreeSet};
use std::fmt;

#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum ViolationKind {
    LostWrite,
    Phantom,
    Resurrection,
    FalseSiblings,
    NotConverged,
    ReadYourWrites,
    ExpiredRead,
    /// A peer's accounted memory passed its limit (judged by the recorder, after every step).
    OverMemoryLimit,
    /// A peer dropped a copy it handed off before any new replica held it (judged by the
    /// recorder, at the drop).
    HandoffUnconfirmed,
    /// A hint holder let go of a hint its owner's store never took, while keeping its memory
    /// (judged by the recorder, after every step).
    HintLost,
    /// A session read (one carrying the context of the client's previous read) lost a value
    /// that read saw, though nothing replaced, deleted, expired or lost it.
    MonotonicReads,
    /// A counter's final value is not the sum of its acknowledged increments plus some of
    /// those that may have applied: an increment was lost or counted twice.
    CounterSum,
    /// No order of a key's conditional writes explains what they answered (see
    /// `history::linearizable`): two compare-and-sets won on one state, or one won on a
    /// stale state.
    NotLinearizable,
}

impl ViolationKind {
    pub fn name(self) -> &'static str {
        match self {
            ViolationKind::LostWrite => "lost-write",
            ViolationKind::Phantom => "phantom",
            ViolationKind::Resurrection => "resurrection",
            ViolationKind::FalseSiblings => "false-siblings",
            ViolationKind::NotConverged => "not-converged",
            ViolationKind::ReadYourWrites => "read-your-writes",
            ViolationKind::ExpiredRead => "expired-read",
            ViolationKind::OverMemoryLimit => "over-memory-limit",
            ViolationKind::HandoffUnconfirmed => "handoff-unconfirmed",
            ViolationKind::HintLost => "hint-lost",
            ViolationKind::MonotonicReads => "monotonic-reads",
            ViolationKind::CounterSum => "counter-sum",
            ViolationKind::NotLinearizable => "not-linearizable",
        }
    }
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Violation {
    pub kind: ViolationKind,
    pub key: Vec<u8>,
    pub detail: String,
    /// The operations involved, for printing a small history.
    pub ops: Vec<OpId>,
}

impl fmt::Display for Violation {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "{} on key {}: {}",
            self.kind.name(),
            String::from_utf8_lossy(&self.key),
            self.detail
        )
    }
}

/// The values of one key's merged state, each with its dot.
pub type Versions = Vec<(Dot, Vec<u8>)>;

/// What the cluster holds for each key after the run, healed and quiet: the values (expired
/// ones may be included) of the merged state of the key's replicas.
#[derive(Clone, Debug, Default)]
pub struct FinalState {
    pub keys: BTreeMap<Vec<u8>, Vec<Vec<u8>>>,
    /// The same values with their dots, where the recorder can see them (the simulator). When
    /// present, presence and resurrection are judged per dot: an expire rewrites a value under
    /// a new dot, so the same bytes can stand for two different writes.
    pub versions: Option<BTreeMap<Vec<u8>, Versions>>,
    /// When the final state was read, on the history's clock.
    pub at: Millis,
    /// Each incremented key's counter value on its replicas (merged); absent: no counter.
    pub counters: BTreeMap<Vec<u8>, i64>,
}

/// What one write did when its coordinator ran it, as the simulator saw it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct WriteRun {
    /// When the coordinator applied it, on the history's clock.
    pub at: Millis,
    /// Its place in the order writes ran: writes run in the same millisecond (a paused peer
    /// catching up runs several at once) are still ordered.
    pub order: u64,
    /// The dot it minted.
    pub dot: Dot,
    /// The history it was entitled to replace: the client's context; for a blind delete, the
    /// coordinator's clock for the key just before it ran; for a blind put, nothing. Taken from
    /// the client's request and the store as it was, never from what the write then did, so a
    /// coordinator that replaced more than this is caught.
    pub replaced: VersionVector,
    /// The value it stored: a put's value, or the value an expire rewrote (`None`: a delete).
    pub value: Option<Vec<u8>>,
}

/// Why copies of a key were lost.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum LossCause {
    /// A peer crashed (its memory is wiped on restart).
    Crash,
    /// A peer left the cluster.
    Departure,
    /// A peer at its memory limit evicted the key.
    Eviction,
    /// A peer regained a partition and dropped its possibly stale copies there.
    StaleDrop,
    /// The last copy was in a message that was lost, or refused by a full replica.
    Message,
    /// Only peers that no longer replicate the key held it when the run ended (no handoff).
    Stranded,
    /// A peer handing off a partition dropped its copy unsent at the handoff's deadline.
    Abandoned,
}

impl LossCause {
    pub fn name(self) -> &'static str {
        match self {
            LossCause::Crash => "crash",
            LossCause::Departure => "departure",
            LossCause::Eviction => "eviction",
            LossCause::StaleDrop => "stale drop",
            LossCause::Message => "message lost",
            LossCause::Stranded => "stranded",
            LossCause::Abandoned => "handoff abandoned",
        }
    }
}

/// One moment a key's copies shrank: every dot `held` covers and `survived` does not was gone
/// for good (no replica, in-flight read or message still carried it).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Loss {
    pub at: Millis,
    pub cause: LossCause,
    pub held: VersionVector,
    pub survived: VersionVector,
}

impl Loss {
    pub fn lost(&self, dot: &Dot) -> bool {
        self.held.covers(dot) && !self.survived.covers(dot)
    }
}

/// Facts about the run the checker cannot see in the history.
#[derive(Clone, Debug, Default)]
pub struct Circumstances {
    /// Replication factor N.
    pub replicas: usize,
    /// Largest difference between two peers' clocks (TTL expiry is judged with this slack).
    pub clock_uncertainty_ms: Millis,
    /// What each write that reached a coordinator did, by operation, where the recorder can see
    /// it. `None` means the recorder cannot (real processes): supersession is then judged from
    /// the history alone (see the module doc).
    pub writes_run: Option<BTreeMap<OpId, WriteRun>>,
    /// Every moment a key's copies shrank through a loss of memory, by key.
    pub losses: BTreeMap<Vec<u8>, Vec<Loss>>,
    /// Without `writes_run`: how long after its client last heard of it a write may still run
    /// (a forward or a paused coordinator delivering it late).
    pub late_write_ms: Millis,
    /// Intervals (inclusive) during which replicas lost memory or peers disagreed on the
    /// ring: read-your-writes is only enforced between a write and a read that overlap none.
    pub disruptions: Vec<(Millis, Millis)>,
    /// Instants at which one key lost a replica's copy (an eviction): read-your-writes on that
    /// key is not enforced across them.
    pub key_disruptions: BTreeMap<Vec<u8>, Vec<Millis>>,
    /// The recorder's convergence verdict (property 4), if it can observe replicas.
    pub convergence: Option<Convergence>,
    /// The clock size at which coordinators prune a key's version vector, if known. Pruning
    /// may let an overwritten value reappear beside its successor (a spurious sibling, the
    /// documented cost of bounded clocks): on a key whose contexts reached this size, such
    /// siblings are counted, not failed.
    pub clock_prune_limit: Option<usize>,
    /// Writes whose W acks may have come from hint holders standing in for replicas believed
    /// down (a sloppy quorum, where the recorder can see it): reads ask only the key's
    /// replicas, so R + W > N does not make them overlap, and read-your-writes after such a
    /// write is only counted.
    pub sloppy_writes: BTreeSet<OpId>,
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Convergence {
    /// Time from the end of faults until every replica of every key held the same state;
    /// `None` if that never happened.
    pub took_ms: Option<Millis>,
    pub bound_ms: Millis,
    /// Keys whose replicas still differed at the end.
    pub diverged_keys: Vec<Vec<u8>>,
}

/// Why an acknowledged write missing from the end was not a violation.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Excuse {
    /// A write that ran replaced it.
    Superseded,
    /// Its TTL may have passed.
    Expired,
    /// Every copy of it was lost.
    Lost(LossCause),
}

impl Excuse {
    pub fn name(self) -> &'static str {
        match self {
            Excuse::Superseded => "superseded",
            Excuse::Expired => "expired",
            Excuse::Lost(cause) => match cause {
                LossCause::Crash => "lost: crash",
                LossCause::Departure => "lost: departure",
                LossCause::Eviction => "lost: eviction",
                LossCause::StaleDrop => "lost: stale drop",
                LossCause::Message => "lost: message",
                LossCause::Stranded => "lost: stranded",
                LossCause::Abandoned => "lost: handoff abandoned",
            },
        }
    }
}

#[derive(Clone, Debug, Default)]
pub struct CheckReport {
    pub violations: Vec<Violation>,
    /// Acknowledged writes whose survival was checked: present at the end, or flagged. A
    /// write some excuse applied to is not counted here.
    pub writes_checked: usize,
    /// Acknowledged writes missing at the end, by the excuse that applied.
    pub writes_excused: BTreeMap<Excuse, usize>,
    /// Final values superseded by an acknowledged write whose every copy was lost.
    pub resurrections_excused: usize,
    /// Read-your-writes pairs checked strictly (R + W > N or a session read, undisturbed).
    pub ryw_strict_checked: usize,
    /// Session reads that carried their client's previous read's context (monotonic reads).
    pub monotonic_checked: usize,
    /// Read-your-writes misses where the guarantee does not apply (R + W <= N, or a crash or
    /// ring change in between): counted, not failed.
    pub ryw_weak_misses: usize,
    pub ryw_weak_checked: usize,
    /// Spurious siblings on keys whose clocks reached the pruning limit: counted, not failed.
    pub false_siblings_after_pruning: usize,
    /// Counters whose final sums were checked, and the increments they counted.
    pub counters_checked: usize,
    pub increments_checked: usize,
    /// Keys whose conditional writes were judged for linearizability (by the recorder, with
    /// `history::linearizable`), their operations, and keys passed over (a copy lost, a majority of replicas crashed, or a ring change).
    pub conditional_keys_checked: usize,
    pub conditional_ops_checked: usize,
    pub conditional_keys_skipped: usize,
}

impl CheckReport {
    pub fn by_kind(&self) -> BTreeMap<ViolationKind, usize> {
        let mut out = BTreeMap::new();
        for v in &self.violations {
            *out.entry(v.kind).or_insert(0) += 1;
        }
        out
    }

    /// Acknowledged writes excused, all kinds together.
    pub fn excused_total(&self) -> usize {
        self.writes_excused.values().sum()
    }
}

/// A counter's increments, for its sum check.
#[derive(Default)]
struct CounterIncrements {
    /// The sum of those that must count: acknowledged, and not lost.
    sure: i64,
    /// Those that may count or not.
    maybe: Vec<i64>,
    ops: Vec<OpId>,
}

/// Per-key indexes built once.
struct KeyIndex<'h> {
    /// Writes on the key, in invocation order.
    writes: Vec<(OpId, &'h Operation)>,
}

struct Checker<'h> {
    history: &'h History,
    c: &'h Circumstances,
    put_of_value: BTreeMap<&'h [u8], OpId>,
    /// Minimal contexts known to contain each value's dot.
    known: BTreeMap<&'h [u8], Vec<&'h VersionVector>>,
    keys: BTreeMap<&'h [u8], KeyIndex<'h>>,
    /// Keys whose contexts reached the clock pruning limit.
    pruned: BTreeSet<&'h [u8]>,
    report: CheckReport,
}

pub fn check(history: &History, final_state: &FinalState, c: &Circumstances) -> CheckReport {
    let mut checker = Checker::new(history, c);
    checker.phantoms_siblings_and_expiry();
    checker.lost_writes(final_state);
    checker.resurrections(final_state);
    checker.read_your_writes();
    checker.monotonic_reads();
    checker.counter_sums(final_state);
    if let Some(conv) = &c.convergence {
        checker.convergence(conv);
    }
    checker.report
}

fn value_name(v: &[u8]) -> String {
    String::from_utf8_lossy(v).into_owned()
}

impl<'h> Checker<'h> {
    fn new(history: &'h History, c: &'h Circumstances) -> Self {
        let mut put_of_value = BTreeMap::new();
        let mut keys: BTreeMap<&[u8], KeyIndex> = BTreeMap::new();
        let mut known: BTreeMap<&[u8], Vec<&VersionVector>> = BTreeMap::new();
        for (i, op) in history.ops().iter().enumerate() {
            let id = OpId(i);
            if let OpKind::Put { value, .. } = &op.kind {
                put_of_value.insert(value.as_slice(), id);
                if let Outcome::Written { context } = &op.outcome {
                    known.entry(value.as_slice()).or_default().push(context);
                }
            }
            if op.kind.is_write() {
                keys.entry(op.key.as_slice())
                    .or_insert(KeyIndex { writes: Vec::new() })
                    .writes
                    .push((id, op));
            }
        }
        for op in history.ops() {
            if let Outcome::Read { values, context } = &op.outcome {
                for v in values {
                    let list = known.entry(v.data.as_slice()).or_default();
                    // Keep only minimal contexts: a larger one adds nothing to "descends from".
                    if !list.iter().any(|k| context.descends_from(k)) {
                        list.retain(|k| !k.descends_from(context));
                        list.push(context);
                    }
                }
            }
        }
        let pruned = history
            .ops()
            .iter()
            .filter(|op| {
                c.clock_prune_limit.is_some_and(|limit| {
                    op.context_in
                        .iter()
                        .chain(op.context_out())
                        .any(|ctx| ctx.len() >= limit)
                })
            })
            .map(|op| op.key.as_slice())
            .collect();
        Checker {
            history,
            c,
            put_of_value,
            known,
            keys,
            pruned,
            report: CheckReport::default(),
        }
    }

    fn violation(&mut self, kind: ViolationKind, key: &[u8], detail: String, ops: Vec<OpId>) {
        self.report.violations.push(Violation {
            kind,
            key: key.to_vec(),
            detail,
            ops,
        });
    }

    /// What `op` did when it ran, if the recorder can tell and it ran.
    fn run_of(&self, op: OpId) -> Option<&'h WriteRun> {
        self.c.writes_run.as_ref().and_then(|runs| runs.get(&op))
    }

    /// Whether write `q` (given by its context) supersedes value `v`, judged from the history.
    fn context_covers_value(&self, ctx: &VersionVector, v: &[u8]) -> bool {
        self.known
            .get(v)
            .is_some_and(|ks| ks.iter().any(|k| ctx.descends_from(k)))
    }

    /// Whether a write sent with context `ctx` replaced every write of value `v` on `key`
    /// that could have been read by `before`. An expire rewrites a value under a new dot, which
    /// a context that saw only the put does not cover: the rewrite is a concurrent write.
    fn written_over(&self, ctx: &VersionVector, key: &[u8], v: &[u8], before: Millis) -> bool {
        let Some(index) = self.keys.get(key) else {
            return false;
        };
        if self.c.writes_run.is_some() {
            let Some(&put) = self.put_of_value.get(v) else {
                return false;
            };
            let mut runs = index
                .writes
                .iter()
                .filter_map(|(id, _)| Some((*id, self.run_of(*id)?)))
                .filter(|(id, r)| *id == put || (r.value.as_deref() == Some(v) && r.at <= before))
                .peekable();
            return runs.peek().is_some() && runs.all(|(_, r)| ctx.covers(&r.dot));
        }
        let rewritten = index.writes.iter().any(|(_, q)| {
            matches!(q.kind, OpKind::Expire { .. })
                && q.may_have_applied()
                && q.invoked_at <= before
        });
        !rewritten && self.context_covers_value(ctx, v)
    }

    /// The value a put or expire wrote (an expire's only as the recorder saw it).
    fn value_of(&self, id: OpId) -> Option<&'h [u8]> {
        match &self.history.get(id).kind {
            OpKind::Put { value, .. } => Some(value),
            _ => self.run_of(id).and_then(|r| r.value.as_deref()),
        }
    }

    /// A write on `key` that superseded `target` (a put or expire), other than `target`
    /// itself, and could have done so before `before`.
    fn superseder(&self, key: &[u8], target: OpId, before: Millis) -> Option<OpId> {
        let index = self.keys.get(key)?;
        let writes = index.writes.iter().filter(|(id, _)| *id != target);
        if self.c.writes_run.is_some() {
            let t = self.run_of(target)?;
            return writes
                .filter_map(|(id, _)| Some((*id, self.run_of(*id)?)))
                .filter(|(_, r)| r.at <= before)
                .find(|(id, r)| {
                    r.replaced.covers(&t.dot)
                        // An expire rewrites the value it found under a new dot, replacing
                        // the writes of those bytes that ran before it (judged by run order,
                        // not by millisecond: both may run in the same one).
                        || (matches!(self.history.get(*id).kind, OpKind::Expire { .. })
                            && r.value.is_some()
                            && r.value == t.value
                            && r.order > t.order)
                })
                .map(|(id, _)| id);
        }
        let v = self.value_of(target)?;
        let v_invoked = self.history.get(target).invoked_at;
        writes
            .filter(|(_, q)| q.may_have_applied() && q.invoked_at <= before)
            .find(|(_, q)| match &q.context_in {
                Some(ctx) => {
                    !matches!(q.kind, OpKind::Expire { .. }) && self.context_covers_value(ctx, v)
                }
                // A blind delete removes what its coordinator had seen when it ran, which
                // was no later than its client last heard of it, plus the slack for a late
                // forward.
                None => {
                    matches!(
                        q.kind,
                        OpKind::Delete { .. }
                            | OpKind::Put {
                                overwrite: true,
                                ..
                            }
                    ) && self.latest_run(q) >= v_invoked
                }
            })
            .map(|(id, _)| *id)
    }

    /// Without the recorder's view: the latest instant write `q` could have run.
    fn latest_run(&self, q: &Operation) -> Millis {
        q.completed_at
            .map_or(Millis::MAX, |t| t.saturating_add(self.c.late_write_ms))
    }

    /// Whether a delete superseded `target` before `before`.
    /// Whether the value `target` wrote may be gone by `before`, its context with it: deleted
    /// or expired, itself or through the chain of writes that replaced one another (a value an
    /// expire rewrote with a TTL expires too, and its tombstone may then be collected).
    fn gone_after(&self, key: &[u8], target: OpId, before: Millis) -> bool {
        let mut current = target;
        let mut seen = BTreeSet::new();
        loop {
            if self.may_have_expired(self.history.get(current), before) {
                return true;
            }
            let Some(q) = self.superseder(key, current, before) else {
                return false;
            };
            if matches!(self.history.get(q).kind, OpKind::Delete { .. }) {
                return true;
            }
            if !seen.insert(q) {
                return false;
            }
            current = q;
        }
    }

    /// The loss that took every copy of `op`'s write, if one did.
    fn lost(&self, key: &[u8], op: OpId) -> Option<LossCause> {
        let dot = &self.run_of(op)?.dot;
        self.c
            .losses
            .get(key)?
            .iter()
            .find(|l| l.lost(dot))
            .map(|l| l.cause)
    }

    /// Whether the value written by `write` (a put, or an expire) may have expired by `at`.
    fn may_have_expired(&self, write: &Operation, at: Millis) -> bool {
        match &write.kind {
            OpKind::Put {
                ttl_ms: Some(ttl), ..
            }
            | OpKind::Expire {
                ttl_ms: Some(ttl), ..
            } => at + self.c.clock_uncertainty_ms >= write.invoked_at.saturating_add(*ttl),
            _ => false,
        }
    }

    /// The latest instant value `v` of `put` can still be visible for a read invoked at `at`
    /// (`None`: no bound is known). An expire that may have rewritten it moves the bound.
    fn latest_expiry(&self, put: OpId, v: &[u8], at: Millis) -> Option<Millis> {
        let p = self.history.get(put);
        let mut latest = match (&p.kind, p.is_acknowledged_write()) {
            (
                OpKind::Put {
                    ttl_ms: Some(ttl), ..
                },
                true,
            ) => p.completed_at? + ttl,
            _ => return None,
        };
        for (id, q) in &self.keys.get(p.key.as_slice())?.writes {
            let OpKind::Expire { ttl_ms, .. } = &q.kind else {
                continue;
            };
            let ran_at = if self.c.writes_run.is_some() {
                match self.run_of(*id) {
                    Some(r) if r.value.as_deref() == Some(v) => r.at,
                    _ => continue,
                }
            } else if q.may_have_applied() && q.invoked_at <= at {
                self.latest_run(q)
            } else {
                continue;
            };
            latest = latest.max(ttl_ms.map_or(Millis::MAX, |t| ran_at.saturating_add(t)));
        }
        Some(latest.saturating_add(self.c.clock_uncertainty_ms))
    }

    fn phantoms_siblings_and_expiry(&mut self) {
        let history = self.history;
        for (i, op) in history.ops().iter().enumerate() {
            let read_id = OpId(i);
            let Outcome::Read { values, .. } = &op.outcome else {
                continue;
            };
            let done = op.completed_at.unwrap_or(Millis::MAX);
            for v in values {
                let Some(&put_id) = self.put_of_value.get(v.data.as_slice()) else {
                    self.violation(
                        ViolationKind::Phantom,
                        &op.key,
                        format!(
                            "read returned {:?}, which nobody wrote",
                            value_name(&v.data)
                        ),
                        vec![read_id],
                    );
                    continue;
                };
                let put = history.get(put_id);
                if put.key != op.key || put.invoked_at > done {
                    self.violation(
                        ViolationKind::Phantom,
                        &op.key,
                        format!(
                            "read returned {:?}, written to another key or after the read",
                            value_name(&v.data)
                        ),
                        vec![put_id, read_id],
                    );
                    continue;
                }
                // Only an acknowledged put bounds when its expiry was fixed: one whose client gave
                // up may be applied (and its TTL started) any time later.
                // A read that accepts stale values may see one up to its window past expiry.
                let stale_ok_ms = match op.kind {
                    OpKind::Get { stale_ok_ms, .. } => stale_ok_ms,
                    _ => 0,
                };
                if let Some(latest_expiry) = self.latest_expiry(put_id, &v.data, done) {
                    if op.invoked_at > latest_expiry.saturating_add(stale_ok_ms) {
                        self.violation(
                            ViolationKind::ExpiredRead,
                            &op.key,
                            format!(
                                "read at {} returned {:?}, expired by {latest_expiry}",
                                op.invoked_at,
                                value_name(&v.data)
                            ),
                            vec![put_id, read_id],
                        );
                    }
                }
            }
            // Property 3: no value beside a write that descends from it.
            for a in values {
                for b in values {
                    if a.data == b.data {
                        continue;
                    }
                    let Some(&b_put) = self.put_of_value.get(b.data.as_slice()) else {
                        continue;
                    };
                    let Some(b_ctx) = &history.get(b_put).context_in else {
                        continue;
                    };
                    if self.written_over(b_ctx, &op.key, &a.data, done) {
                        if self.pruned.contains(op.key.as_slice()) {
                            self.report.false_siblings_after_pruning += 1;
                            continue;
                        }
                        self.violation(
                            ViolationKind::FalseSiblings,
                            &op.key,
                            format!(
                                "read returned {:?} beside {:?}, which was written over it",
                                value_name(&a.data),
                                value_name(&b.data)
                            ),
                            vec![b_put, read_id],
                        );
                    }
                }
            }
        }
    }

    /// Whether the final state still holds what `op` (a put or expire) wrote: its dot where
    /// dots are known, else its bytes.
    fn present(&self, fin: &FinalState, op: OpId) -> bool {
        let key = &self.history.get(op).key;
        match (&fin.versions, self.run_of(op)) {
            (Some(versions), Some(run)) => versions
                .get(key)
                .is_some_and(|vs| vs.iter().any(|(dot, _)| *dot == run.dot)),
            _ => self.value_of(op).is_some_and(|v| {
                fin.keys
                    .get(key)
                    .is_some_and(|vs| vs.iter().any(|x| x == v))
            }),
        }
    }

    /// Property 1: acknowledged puts (and, where the recorder sees what they wrote, expires)
    /// survive unless superseded, expired or lost.
    fn lost_writes(&mut self, fin: &FinalState) {
        let history = self.history;
        for (i, p) in history.ops().iter().enumerate() {
            let id = OpId(i);
            let checked_kind = match p.kind {
                OpKind::Put { .. } => true,
                OpKind::Expire { .. } => self.c.writes_run.is_some(),
                _ => false,
            };
            if !checked_kind || !p.is_acknowledged_write() {
                continue;
            }
            if self.present(fin, id) {
                self.report.writes_checked += 1;
                continue;
            }
            let excuse = if self.superseder(&p.key, id, Millis::MAX).is_some() {
                Some(Excuse::Superseded)
            } else if self.may_have_expired(p, fin.at) {
                Some(Excuse::Expired)
            } else {
                self.lost(&p.key, id).map(Excuse::Lost)
            };
            if let Some(excuse) = excuse {
                *self.report.writes_excused.entry(excuse).or_insert(0) += 1;
                continue;
            }
            self.report.writes_checked += 1;
            let what = self.value_of(id).map(value_name).unwrap_or_default();
            self.violation(
                ViolationKind::LostWrite,
                &p.key,
                format!("acknowledged {what:?} is gone and nothing superseded it"),
                vec![id],
            );
        }
    }

    /// Counters: after convergence each counter equals the sum of its acknowledged
    /// increments plus some subset of those that may have applied (unacknowledged, or
    /// acknowledged but every copy lost, as for any write). A lost increment leaves the sum
    /// short; one applied twice (or a read-add-write race) leaves it wrong.
    fn counter_sums(&mut self, fin: &FinalState) {
        let history = self.history;
        let mut by_key: BTreeMap<&[u8], CounterIncrements> = BTreeMap::new();
        for (i, op) in history.ops().iter().enumerate() {
            let OpKind::Increment { by, .. } = op.kind else {
                continue;
            };
            let id = OpId(i);
            let entry = by_key.entry(op.key.as_slice()).or_default();
            if op.is_acknowledged_write() && self.lost(&op.key, id).is_none() {
                entry.sure += by;
                entry.ops.push(id);
            } else if op.may_have_applied() {
                entry.maybe.push(by);
                entry.ops.push(id);
            }
        }
        for (key, CounterIncrements { sure, maybe, ops }) in by_key {
            self.report.counters_checked += 1;
            self.report.increments_checked += ops.len();
            let value = fin.counters.get(key).copied().unwrap_or(0);
            // Every sum a subset of the uncertain increments can make (|by| is small and so
            // are their numbers: the set stays small).
            let mut reachable = BTreeSet::from([0i64]);
            for by in &maybe {
                let shifted: Vec<i64> = reachable.iter().map(|s| s + by).collect();
                reachable.extend(shifted);
            }
            if !reachable.contains(&(value - sure)) {
                self.violation(
                    ViolationKind::CounterSum,
                    key,
                    format!(
                        "counter ends at {value}: acknowledged increments sum to {sure}, and no \
                         subset of the {} that may have applied ({maybe:?}) makes up the rest",
                        maybe.len()
                    ),
                    ops,
                );
            }
        }
    }

    /// Property 2: final values were written, and no acknowledged write that outlived them
    /// superseded them.
    fn resurrections(&mut self, fin: &FinalState) {
        for (key, values) in &fin.keys {
            for data in values {
                if !self.put_of_value.contains_key(data.as_slice()) {
                    self.violation(
                        ViolationKind::Phantom,
                        key,
                        format!(
                            "final state holds {:?}, which nobody wrote",
                            value_name(data)
                        ),
                        vec![],
                    );
                }
            }
        }
        match &fin.versions {
            Some(versions) => {
                for (key, held) in versions {
                    for (dot, data) in held {
                        self.resurrection_by_dot(key, dot, data);
                    }
                }
            }
            None => {
                for (key, values) in &fin.keys {
                    for data in values {
                        self.resurrection_by_value(key, data);
                    }
                }
            }
        }
    }

    /// With the recorder's view: the final version `dot` is a resurrection if an acknowledged
    /// write replaced it, unless every copy of that write was lost.
    fn resurrection_by_dot(&mut self, key: &[u8], dot: &Dot, data: &[u8]) {
        let Some(index) = self.keys.get(key) else {
            return;
        };
        let replaced_by = index.writes.iter().find(|(id, q)| {
            q.is_acknowledged_write()
                && self
                    .run_of(*id)
                    .is_some_and(|r| r.dot != *dot && r.replaced.covers(dot))
        });
        let Some(&(q, _)) = replaced_by else {
            return;
        };
        if self.lost(key, q).is_some() {
            self.report.resurrections_excused += 1;
            return;
        }
        if self.pruned.contains(key) {
            self.report.false_siblings_after_pruning += 1;
            return;
        }
        let put = self.put_of_value.get(data).copied();
        self.violation(
            ViolationKind::Resurrection,
            key,
            format!(
                "final state holds {:?} ({dot:?}), replaced by an acknowledged write",
                value_name(data)
            ),
            put.into_iter().chain([q]).collect(),
        );
    }

    /// From the history alone: the final value `data` is a resurrection if an acknowledged
    /// write's context covered it.
    fn resurrection_by_value(&mut self, key: &[u8], data: &[u8]) {
        let Some(&put_id) = self.put_of_value.get(data) else {
            return;
        };
        let superseded_by = self.keys.get(key).and_then(|index| {
            index
                .writes
                .iter()
                .filter(|(id, q)| *id != put_id && q.is_acknowledged_write())
                .find(|(_, q)| {
                    !matches!(q.kind, OpKind::Expire { .. })
                        && q.context_in
                            .as_ref()
                            .is_some_and(|ctx| self.context_covers_value(ctx, data))
                })
                .map(|(id, _)| *id)
        });
        if let Some(q) = superseded_by {
            self.violation(
                ViolationKind::Resurrection,
                key,
                format!(
                    "final state holds {:?}, superseded by an acknowledged write",
                    value_name(data)
                ),
                vec![put_id, q],
            );
        }
    }

    fn read_your_writes(&mut self) {
        let history = self.history;
        for ops in ops_by_client_and_key(history).values() {
            let mut last_write: Option<OpId> = None;
            for &id in ops {
                let op = history.get(id);
                if op.kind.is_write() {
                    // Only an acknowledged put is something to read back.
                    last_write = match (&op.kind, &op.outcome) {
                        (OpKind::Put { .. }, Outcome::Written { .. }) => Some(id),
                        _ => None,
                    };
                    continue;
                }
                let (Some(w_id), Outcome::Read { values, context }) = (last_write, &op.outcome)
                else {
                    continue;
                };
                self.check_one_ryw(w_id, id, values.iter().map(|v| &v.data[..]), context);
            }
        }
    }

    fn check_one_ryw<'v>(
        &mut self,
        write_id: OpId,
        read_id: OpId,
        values: impl Iterator<Item = &'v [u8]>,
        read_ctx: &VersionVector,
    ) {
        let history = self.history;
        let write = history.get(write_id);
        let read = history.get(read_id);
        let OpKind::Put { value, .. } = &write.kind else {
            return;
        };
        let Outcome::Written { context: write_ctx } = &write.outcome else {
            return;
        };
        let read_done = read.completed_at.unwrap_or(Millis::MAX);
        let sees_context = read_ctx.descends_from(write_ctx);
        let values: Vec<&[u8]> = values.collect();
        let sees_value = values.contains(&value.as_slice())
            || self.may_have_expired(write, read_done)
            || self.superseder(&write.key, write_id, read_done).is_some();
        // A write that expired or was deleted may be gone altogether, context included: its
        // tombstones are collected once every replica holds them, and a later write starts a
        // fresh history. Reading the write's aftermath is then finding nothing, or only values
        // nothing superseded (written after the collection); an older value the write replaced
        // is still a miss.
        let gone = self.gone_after(&write.key, write_id, read_done);
        let aftermath = gone
            && values.iter().all(|x| {
                self.put_of_value
                    .get(x)
                    .is_none_or(|&p| self.superseder(&write.key, p, read_done).is_none())
            });
        let ok = (sees_context && sees_value) || aftermath;
        let n = self.c.replicas;
        let (OpKind::Get { r, .. }, Some(w)) = (&read.kind, write.kind.w()) else {
            return;
        };
        // A session read that carried a context covering the write is held to read-your-writes
        // at any R (the coordinator waits for a replica that covers it).
        let session = read
            .context_in
            .as_ref()
            .is_some_and(|c| c.descends_from(write_ctx));
        let overlapping = (r.resolve(n) + w.resolve(n) > n || session)
            && !self.c.sloppy_writes.contains(&write_id);
        let disturbed = self.disturbed(&read.key, write.invoked_at, read_done);
        if overlapping && !disturbed {
            self.report.ryw_strict_checked += 1;
            if !ok {
                self.violation(
                    ViolationKind::ReadYourWrites,
                    &read.key,
                    format!(
                        "client {} wrote {:?} (w={w}) then read (r={r}) {} its own write",
                        read.client,
                        value_name(value),
                        if sees_context {
                            "a context covering but values missing"
                        } else {
                            "a context that misses"
                        }
                    ),
                    vec![write_id, read_id],
                );
            }
        } else {
            self.report.ryw_weak_checked += 1;
            if !ok {
                self.report.ryw_weak_misses += 1;
            }
        }
    }

    /// Whether a crash or ring change (anywhere, or on `key`) fell between `from` and `to`.
    fn disturbed(&self, key: &[u8], from: Millis, to: Millis) -> bool {
        self.c
            .disruptions
            .iter()
            .any(|(a, b)| *b >= from && *a <= to)
            || self
                .c
                .key_disruptions
                .get(key)
                .is_some_and(|ts| ts.iter().any(|t| *t >= from && *t <= to))
    }

    /// Monotonic reads for sessions: a read that carries the context its client's previous
    /// read returned must not lose a value that read saw, unless a write replaced it, it
    /// expired or was deleted, or every copy of it was lost (or a crash or ring change fell
    /// between, which may take data without a trace in the history).
    fn monotonic_reads(&mut self) {
        let history = self.history;
        for ops in ops_by_client_and_key(history).values() {
            for pair in ops.windows(2) {
                let (first, second) = (history.get(pair[0]), history.get(pair[1]));
                let (
                    Outcome::Read {
                        values: seen,
                        context: seen_ctx,
                    },
                    Outcome::Read { values, context },
                    Some(passed),
                ) = (&first.outcome, &second.outcome, &second.context_in)
                else {
                    continue;
                };
                if passed != seen_ctx {
                    continue;
                }
                self.report.monotonic_checked += 1;
                if context.descends_from(passed) {
                    continue;
                }
                let done = second.completed_at.unwrap_or(Millis::MAX);
                if self.disturbed(&second.key, first.invoked_at, done) {
                    continue;
                }
                for v in seen {
                    if values.iter().any(|x| x.data == v.data) {
                        continue;
                    }
                    let Some(&put) = self.put_of_value.get(v.data.as_slice()) else {
                        continue;
                    };
                    let excused = self.superseder(&second.key, put, done).is_some()
                        || self.gone_after(&second.key, put, done)
                        || self.lost(&second.key, put).is_some()
                        || self.c.sloppy_writes.contains(&put);
                    if !excused {
                        self.violation(
                            ViolationKind::MonotonicReads,
                            &second.key,
                            format!(
                                "client {} read {:?}, then a session read with that context \
                                 missed it",
                                second.client,
                                value_name(&v.data)
                            ),
                            vec![pair[0], pair[1]],
                        );
                        break;
                    }
                }
            }
        }
    }

    fn convergence(&mut self, conv: &Convergence) {
        let late = conv.took_ms.is_none_or(|t| t > conv.bound_ms);
        if late || !conv.diverged_keys.is_empty() {
            let key = conv.diverged_keys.first().cloned().unwrap_or_default();
            self.violation(
                ViolationKind::NotConverged,
                &key,
                format!(
                    "replicas converged after {:?} ms (bound {} ms); {} keys still differ",
                    conv.took_ms,
                    conv.bound_ms,
                    conv.diverged_keys.len()
                ),
                vec![],
            );
        }
    }
}

/// Each client's operations per key, in the order it issued them (a client is sequential).
fn ops_by_client_and_key(history: &History) -> BTreeMap<(u32, &[u8]), Vec<OpId>> {
    let mut out: BTreeMap<(u32, &[u8]), Vec<OpId>> = BTreeMap::new();
    for (i, op) in history.ops().iter().enumerate() {
        out.entry((op.client, op.key.as_slice()))
            .or_default()
            .push(OpId(i));
    }
    out
}

/// The values (visible or expired, not tombstones) a merged state holds.
pub fn values_of(state: &Siblings) -> Vec<Vec<u8>> {
    versions_of(state).into_iter().map(|(_, v)| v).collect()
}

/// The values a merged state holds, with their dots.
pub fn versions_of(state: &Siblings) -> Versions {
    state
        .versions()
        .filter_map(|(dot, p)| match p {
            Payload::Value { data, .. } => Some((dot.clone(), data.clone())),
            // Counters are checked by their sums (`check_counters`), not as values.
            Payload::Tombstone | Payload::Counter { .. } => None,
        })
        .collect()
}

#[cfg(test)]
mod tests;
