//! The history checker: decides whether a recorded run kept ringcache's promises.
//!
//! Checked properties (numbered as in `docs/guarantees.md`):
//! 1. **No lost write** — every acknowledged put is among the final values, unless a write that
//!    may have taken effect superseded it (its context covered the put), it may have expired,
//!    or the circumstances excuse it (every copy was on peers that lost their memory).
//! 2. **No phantom, no resurrection** — every value read was written (and invoked before the
//!    read completed); no final value was superseded by an acknowledged write.
//! 3. **Siblings are concurrent** — no read returns a value together with a write that
//!    descends from it.
//! 4. **Convergence** — judged by the recorder (it alone can see replicas), and passed in.
//! 5. **Read your writes** — a client's read after its acknowledged write returns a context
//!    that covers the write and the value itself (or what superseded it). Enforced when
//!    R + W > N and nothing disrupted the replicas in between; otherwise only counted.
//!
//! Also: **no expired read** — a value is never read after its TTL plus the clock uncertainty.
//!
//! "Superseded" is judged causally: write `q` supersedes value `v` when `q`'s context
//! descends from a context known to contain `v` (the context its put returned, or that of a
//! read that returned `v`). A delete sent without context removes what its coordinator had
//! seen, which the client cannot know, so it may supersede anything written before it ended —
//! or, if it was never acknowledged, anything at all: an operation whose outcome is unknown may
//! take effect at any later moment (a delayed forward, a replica that was paused).

use crate::core::siblings::{Payload, Siblings};
use crate::core::types::Millis;
use crate::core::version_vector::VersionVector;
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

/// What the cluster holds for each key after the run, healed and quiet: the values (expired
/// ones may be included) of the merged state of the key's replicas.
#[derive(Clone, Debug, Default)]
pub struct FinalState {
    pub keys: BTreeMap<Vec<u8>, Vec<Vec<u8>>>,
    /// When the final state was read, on the history's clock.
    pub at: Millis,
}

/// Facts about the run the checker cannot see in the history.
#[derive(Clone, Debug, Default)]
pub struct Circumstances {
    /// Replication factor N.
    pub replicas: usize,
    /// Largest difference between two peers' clocks (TTL expiry is judged with this slack).
    pub clock_uncertainty_ms: Millis,
    /// Values whose every copy was lost with a peer's memory (crash, departure): not a bug.
    pub values_lost_to_crashes: BTreeSet<Vec<u8>>,
    /// Keys whose replicated knowledge shrank, and when: writes invoked before that instant
    /// are excused from "lost write" and "resurrection" (a lost delete can let a value back).
    pub damaged_keys: BTreeMap<Vec<u8>, Millis>,
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

#[derive(Clone, Debug, Default)]
pub struct CheckReport {
    pub violations: Vec<Violation>,
    /// Acknowledged writes whose survival was checked.
    pub writes_checked: usize,
    /// Acknowledged writes excused because the data was lost with a peer's memory.
    pub writes_excused: usize,
    /// Read-your-writes pairs checked strictly (R + W > N, undisturbed).
    pub ryw_strict_checked: usize,
    /// Read-your-writes misses where the guarantee does not apply (R + W <= N, or a crash or
    /// ring change in between): counted, not failed.
    pub ryw_weak_misses: usize,
    pub ryw_weak_checked: usize,
    /// Spurious siblings on keys whose clocks reached the pruning limit: counted, not failed.
    pub false_siblings_after_pruning: usize,
}

impl CheckReport {
    pub fn by_kind(&self) -> BTreeMap<ViolationKind, usize> {
        let mut out = BTreeMap::new();
        for v in &self.violations {
            *out.entry(v.kind).or_insert(0) += 1;
        }
        out
    }
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
    checker.final_state(final_state);
    checker.read_your_writes();
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

    /// Whether write `q` (given by its context) supersedes value `v`.
    fn context_covers_value(&self, ctx: &VersionVector, v: &[u8]) -> bool {
        self.known
            .get(v)
            .is_some_and(|ks| ks.iter().any(|k| ctx.descends_from(k)))
    }

    /// A write on `key` that may have taken effect and supersedes `v`, other than `v`'s own
    /// put, invoked before `before`.
    fn superseder(&self, key: &[u8], v: &[u8], before: Millis) -> Option<OpId> {
        let own = self.put_of_value.get(v).copied();
        let index = self.keys.get(key)?;
        let v_invoked = own.map(|id| self.history.get(id).invoked_at).unwrap_or(0);
        index
            .writes
            .iter()
            .filter(|(id, q)| Some(*id) != own && q.may_have_applied() && q.invoked_at <= before)
            .find(|(_, q)| match &q.context_in {
                Some(ctx) => self.context_covers_value(ctx, v),
                // A blind delete removes what its coordinator saw when it ran: before its
                // acknowledgement if it has one; if not, it may have run at any later time.
                None => {
                    matches!(q.kind, OpKind::Delete { .. })
                        && (!q.is_acknowledged_write()
                            || q.completed_at.unwrap_or(Millis::MAX) >= v_invoked)
                }
            })
            .map(|(id, _)| *id)
    }

    /// Whether a delete that may have taken effect superseded `v`, invoked before `before`.
    fn deleted_after(&self, key: &[u8], v: &[u8], before: Millis) -> bool {
        let own = self.put_of_value.get(v).copied();
        let v_invoked = own.map(|id| self.history.get(id).invoked_at).unwrap_or(0);
        self.keys.get(key).is_some_and(|index| {
            index.writes.iter().any(|(id, q)| {
                Some(*id) != own
                    && matches!(q.kind, OpKind::Delete { .. })
                    && q.may_have_applied()
                    && q.invoked_at <= before
                    && match &q.context_in {
                        Some(ctx) => self.context_covers_value(ctx, v),
                        None => {
                            !q.is_acknowledged_write()
                                || q.completed_at.unwrap_or(Millis::MAX) >= v_invoked
                        }
                    }
            })
        })
    }

    /// Whether the value written by `put` may have expired by `at`.
    fn may_have_expired(&self, put: &Operation, at: Millis) -> bool {
        match &put.kind {
            OpKind::Put {
                ttl_ms: Some(ttl), ..
            } => at + self.c.clock_uncertainty_ms >= put.invoked_at.saturating_add(*ttl),
            _ => false,
        }
    }

    fn damaged_before(&self, key: &[u8], at: Millis) -> bool {
        self.c.damaged_keys.get(key).is_some_and(|t| at <= *t)
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
                let acked_at = put
                    .is_acknowledged_write()
                    .then_some(put.completed_at)
                    .flatten();
                if let (
                    OpKind::Put {
                        ttl_ms: Some(ttl), ..
                    },
                    Some(put_done),
                ) = (&put.kind, acked_at)
                {
                    let latest_expiry = put_done + ttl + self.c.clock_uncertainty_ms;
                    if op.invoked_at > latest_expiry {
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
                    if self.context_covers_value(b_ctx, &a.data) {
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

    fn final_state(&mut self, fin: &FinalState) {
        let history = self.history;
        // Property 1: acknowledged puts survive unless superseded, expired or excused.
        for (i, p) in history.ops().iter().enumerate() {
            let OpKind::Put { value, .. } = &p.kind else {
                continue;
            };
            if !p.is_acknowledged_write() {
                continue;
            }
            if self.c.values_lost_to_crashes.contains(value)
                || self.damaged_before(&p.key, p.invoked_at)
            {
                self.report.writes_excused += 1;
                continue;
            }
            self.report.writes_checked += 1;
            let present = fin.keys.get(&p.key).is_some_and(|vs| vs.contains(value));
            if present
                || self.may_have_expired(p, fin.at)
                || self.superseder(&p.key, value, Millis::MAX).is_some()
            {
                continue;
            }
            self.violation(
                ViolationKind::LostWrite,
                &p.key,
                format!(
                    "acknowledged {:?} is gone and nothing superseded it",
                    value_name(value)
                ),
                vec![OpId(i)],
            );
        }
        // Property 2: final values were written, and nothing acknowledged superseded them.
        for (key, values) in &fin.keys {
            for data in values {
                let Some(&put_id) = self.put_of_value.get(data.as_slice()) else {
                    self.violation(
                        ViolationKind::Phantom,
                        key,
                        format!(
                            "final state holds {:?}, which nobody wrote",
                            value_name(data)
                        ),
                        vec![],
                    );
                    continue;
                };
                let superseded_by = self.keys.get(key.as_slice()).and_then(|index| {
                    index
                        .writes
                        .iter()
                        .filter(|(id, q)| {
                            *id != put_id
                                && q.is_acknowledged_write()
                                && !self.damaged_before(key, q.invoked_at)
                        })
                        .find(|(_, q)| {
                            q.context_in
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
        }
    }

    fn read_your_writes(&mut self) {
        let history = self.history;
        // Each client is sequential: walk its operations per key in order.
        let mut per_client_key: BTreeMap<(u32, &[u8]), Vec<OpId>> = BTreeMap::new();
        for (i, op) in history.ops().iter().enumerate() {
            per_client_key
                .entry((op.client, op.key.as_slice()))
                .or_default()
                .push(OpId(i));
        }
        for ops in per_client_key.values() {
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
            || self.superseder(&write.key, value, read_done).is_some();
        // A write that expired or was deleted may be gone altogether, context included: its
        // tombstones are collected once every replica holds them, and a later write starts a
        // fresh history. Reading the write's aftermath is then finding nothing, or only values
        // nothing superseded (written after the collection); an older value the write replaced
        // is still a miss.
        let gone = self.may_have_expired(write, read_done)
            || self.deleted_after(&write.key, value, read_done);
        let aftermath = gone
            && values
                .iter()
                .all(|x| self.superseder(&write.key, x, read_done).is_none());
        let ok = (sees_context && sees_value) || aftermath;
        let n = self.c.replicas;
        let (OpKind::Get { r }, Some(w)) = (&read.kind, write.kind.w()) else {
            return;
        };
        let overlapping = r.resolve(n) + w.resolve(n) > n;
        let disturbed = self
            .c
            .disruptions
            .iter()
            .any(|(from, to)| *to >= write.invoked_at && *from <= read_done)
            || self
                .c
                .key_disruptions
                .get(&read.key)
                .is_some_and(|ts| ts.iter().any(|t| *t >= write.invoked_at && *t <= read_done));
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

/// The values (visible or expired, not tombstones) a merged state holds.
pub fn values_of(state: &Siblings) -> Vec<Vec<u8>> {
    state
        .versions()
        .filter_map(|(_, p)| match p {
            Payload::Value { data, .. } => Some(data.clone()),
            Payload::Tombstone => None,
        })
        .collect()
}

#[cfg(test)]
mod tests;
