//! The end of a run: heal every fault, wait until peers see each other, then until replicas
//! agree and no hint for a running peer is pending — by anti-entropy alone, no client reading
//! anything (or, opt-in, with a sweep of reads so read repair does it) — and hand the checker
//! the final state.

use super::*;
use ringcache::core::counter;
use ringcache::history::check::{Violation, ViolationKind};
use ringcache::history::linearizable;

impl World<'_> {
    pub(super) fn heal(&mut self) {
        self.healed_at = Some(self.now);
        let active: Vec<usize> = self.active.keys().copied().collect();
        for i in active {
            self.end_fault(i);
        }
        self.active.clear();
        for p in self.peers.values_mut() {
            p.detector.suspected_until.clear();
        }
    }

    /// After healing: start the repair sweep once every peer sees every peer, and watch for
    /// convergence.
    pub(super) fn after_heal_checks(&mut self) {
        if !self.s.read_sweep {
            return self.await_anti_entropy();
        }
        if !self.sweep_started && self.views_agree() {
            self.sweep_started = true;
            let mut keys: BTreeSet<Vec<u8>> = BTreeSet::new();
            for op in self.history.ops() {
                keys.insert(op.key.clone());
            }
            self.sweep_queue = keys.into_iter().map(|k| (k, 0)).collect();
            for _ in 0..SWEEP_PARALLEL {
                self.sweep_next();
            }
        }
        if self.converged_at.is_none() && self.sweep_started && self.replicas_agree().is_empty() {
            self.converged_at = Some(self.now);
        }
        let healed = self.healed_at.expect("after heal");
        if !self.sweep_started && self.now > healed + SETTLE_LIMIT_MS {
            // Views never agreed; stop and let the checker report non-convergence.
            self.quiet_until = Some(self.now);
        }
    }

    /// After healing, without reads: once views agree, watch replicas until they agree or the
    /// anti-entropy bound passes.
    fn await_anti_entropy(&mut self) {
        let healed = self.healed_at.expect("after heal");
        if self.views_agreed_at.is_none() {
            if self.views_agree() {
                self.views_agreed_at = Some(self.now);
            } else if self.now > healed + SETTLE_LIMIT_MS {
                self.quiet_until = Some(self.now);
                return;
            }
        }
        let Some(agreed) = self.views_agreed_at else {
            return;
        };
        // Agreement counts once no state is still on its way somewhere: a replication or an
        // exchange landing later could still change what replicas hold.
        if !self.states_in_transit() && self.replicas_agree().is_empty() {
            self.converged_at = Some(self.now);
            self.quiet_until = Some(self.now);
        } else if self.now > agreed + self.anti_entropy_bound_ms() {
            self.quiet_until = Some(self.now);
        }
    }

    /// Whether any key state is in a message in flight or held by a paused peer, or in a read
    /// still gathering answers.
    fn states_in_transit(&self) -> bool {
        let carries = |event: &Event| match event {
            Event::Deliver { message, .. } => !self.message_states(message).is_empty(),
            _ => false,
        };
        self.queue.values().any(carries)
            || self.peers.values().any(|p| {
                p.held.iter().any(carries)
                    || p.node
                        .as_ref()
                        .is_some_and(|n| n.states_in_flight().next().is_some())
            })
    }

    /// How long after views agree anti-entropy must have converged replicas: every peer is
    /// due at once when a view changes, compares with its peers one at a time, and retries an
    /// exchange cut short a quarter interval later; allow `AE_ROUNDS` full rounds, each an
    /// interval plus an exchange per peer (a step per shared partition and batch of keys, each
    /// at most a request timeout), plus moving every key at the budget, plus two seconds and
    /// a request timeout: a peer still busy from the clients' last requests (and the retries
    /// of those still in flight at the heal) moves data at the busy share of its budget until
    /// two one-second windows of client load have passed (`node/client_load`).
    pub(super) fn anti_entropy_bound_ms(&self) -> Millis {
        let c = &self.config;
        let peers = self.peers.len() as u64;
        let keys = self
            .history
            .ops()
            .iter()
            .map(|o| &o.key)
            .collect::<BTreeSet<_>>()
            .len() as u64;
        let steps = 1 + 2 * c.partitions as u64 / self.s.shards.max(1) as u64;
        let exchange_ms = steps * c.request_timeout_ms / 10;
        let transfer_ms = keys * peers * 1_000 / c.anti_entropy_keys_per_sec.max(1);
        AE_ROUNDS * (c.anti_entropy_interval_ms + peers * exchange_ms)
            + transfer_ms
            + 2_000
            + c.request_timeout_ms
    }

    /// Every running peer holds the same view, in which exactly the running peers are up.
    /// (A peer that left while its announcement was cut off stays a member marked down, as a
    /// crashed one does.)
    pub(super) fn views_agree(&self) -> bool {
        let running: BTreeSet<NodeId> = self.running().into_iter().collect();
        let views: Vec<Option<&MembershipView>> = self
            .peers
            .values()
            .filter(|p| p.node.is_some() && !p.left)
            .map(|p| p.view.as_ref())
            .collect();
        let Some(Some(first)) = views.first() else {
            return false;
        };
        views.iter().all(|v| *v == Some(*first))
            && first
                .iter()
                .all(|(m, l)| (l == Liveness::Up) == running.contains(m))
            && running.iter().all(|m| first.is_up(m))
    }

    pub(super) fn sweep_next(&mut self) {
        if !self.sweep_started {
            return;
        }
        while self.sweep_in_flight < SWEEP_PARALLEL {
            let Some((key, attempts)) = self.sweep_queue.pop_front() else {
                break;
            };
            let running = self.running();
            let at = self.work.pick(&running).clone();
            let id = self.next_request_id();
            self.pending
                .insert(id, Owner::Sweep(key.clone(), attempts + 1));
            self.sweep_in_flight += 1;
            // R = one answers at once but, like every read, waits for all live replicas
            // before it repairs them; replicas that are down are not asked.
            let request = ClientRequest::Get {
                key,
                r: Quorum::One,
                session: None,
                stale_ok_ms: 0,
            };
            self.schedule(
                self.now + 1,
                Event::Arrive {
                    node: at,
                    id,
                    request,
                },
            );
        }
        if self.sweep_queue.is_empty() && self.sweep_in_flight == 0 && self.quiet_until.is_none() {
            // Let repairs land, then look again: a repair message can be lost like any other.
            let settle = 2 * self.config.request_timeout_ms;
            self.schedule(self.now + settle, Event::SweepRound);
        }
    }

    /// The end of a sweep round: stop if replicas agree, else sweep the keys that differ.
    pub(super) fn sweep_round(&mut self) {
        if self.sweep_in_flight > 0 || !self.sweep_queue.is_empty() || self.quiet_until.is_some() {
            return;
        }
        self.sweep_rounds += 1;
        let diverged = self.replicas_agree();
        if diverged.is_empty() && self.converged_at.is_none() {
            self.converged_at = Some(self.now);
        }
        if diverged.is_empty() || self.sweep_rounds >= MAX_SWEEP_ROUNDS {
            self.quiet_until = Some(self.now);
            return;
        }
        self.sweep_queue = diverged.into_iter().map(|k| (k, 0)).collect();
        self.sweep_next();
    }

    /// Keys whose replicas (by the ring every peer now shares) hold different states.
    pub(super) fn replicas_agree(&self) -> Vec<Vec<u8>> {
        let Some(reference) = self
            .peers
            .values()
            .find(|p| p.node.is_some() && !p.left)
            .and_then(|p| p.node.as_ref())
        else {
            return Vec::new();
        };
        let mut keys: BTreeSet<&[u8]> = BTreeSet::new();
        for op in self.history.ops() {
            keys.insert(&op.key);
        }
        let mut diverged = Vec::new();
        // A hint whose owner runs is still to be delivered: its key has not converged.
        let running: BTreeSet<NodeId> = self.running().into_iter().collect();
        let mut hinted: BTreeSet<&[u8]> = BTreeSet::new();
        for p in self.peers.values().filter(|p| !p.left) {
            if let Some(n) = &p.node {
                hinted.extend(
                    n.hints_held()
                        .filter(|(owner, _, _)| running.contains(*owner))
                        .map(|(_, k, _)| k),
                );
            }
        }
        for key in keys {
            if hinted.contains(key) {
                diverged.push(key.to_vec());
                continue;
            }
            // What every replica holds together: what read repair tries to give each of them.
            let mut merged = Siblings::new();
            for owner in reference.ring().replicas_of(key) {
                if let Some(s) = self
                    .peers
                    .get(owner)
                    .filter(|p| !p.left)
                    .and_then(|p| p.node.as_ref())
                    .and_then(|n| n.peek(key))
                {
                    merged.merge(&s);
                }
            }
            let mut first: Option<Option<Siblings>> = None;
            for owner in reference.ring().replicas_of(key) {
                let Some(node) = self
                    .peers
                    .get(owner)
                    .filter(|p| !p.left)
                    .and_then(|p| p.node.as_ref())
                else {
                    continue; // a member that is gone holds nothing to compare
                };
                // Tombstones alone and nothing at all read the same; collection turns one into
                // the other, replica by replica.
                // A value past its expiry on this peer's clock reads as the tombstone active
                // expiry will make of it (its dot is the same, so anti-entropy sees no
                // difference).
                let local_now = self.local_time(owner);
                let state = node
                    .peek(key)
                    .map(|mut s| {
                        s.expire(local_now);
                        s
                    })
                    .filter(|s| !s.is_tombstones_only());
                // Under a memory limit an absent key is a cache miss (evicted, or declined
                // by a full peer's repair), not a divergence: only copies held must agree.
                if state.is_none() && self.s.memory.is_some() {
                    continue;
                }
                // A store refuses whatever it cannot make room for by evicting what its policy
                // allows (nothing under noeviction; only keys with a TTL under volatile-ttl),
                // repairs too: a replica that cannot hold the merged state stays behind until
                // memory frees up (docs/guarantees.md).
                if !can_hold(node.for_key(key).store(), key, &merged) {
                    continue;
                }
                match first {
                    None => first = Some(state),
                    Some(ref f) if *f != state => {
                        diverged.push(key.to_vec());
                        break;
                    }
                    _ => {}
                }
            }
        }
        diverged
    }

    pub(super) fn finish(mut self) -> RunResult {
        let healed_at = self.healed_at.unwrap_or(self.now);
        let diverged = self.replicas_agree();
        let keys_touched: BTreeSet<Vec<u8>> =
            self.history.ops().iter().map(|o| o.key.clone()).collect();
        // Views agree within the settle limit; each sweep round reads every key once (a read
        // takes at most one request timeout) and then waits two timeouts for repairs to land.
        let timeout = self.config.request_timeout_ms;
        let round_ms = (keys_touched.len().div_ceil(SWEEP_PARALLEL) as u64) * timeout + 2 * timeout;
        let bound_ms = if self.s.read_sweep {
            SETTLE_LIMIT_MS + MAX_SWEEP_ROUNDS as u64 * round_ms
        } else {
            SETTLE_LIMIT_MS + self.anti_entropy_bound_ms()
        };
        let convergence = Convergence {
            took_ms: self.converged_at.map(|t| t - healed_at),
            bound_ms,
            diverged_keys: diverged,
        };
        if let Some(since) = self.rings_differ_since.take() {
            self.disruptions.push((since, self.now));
        }
        let divergence = convergence
            .diverged_keys
            .first()
            .map(|k| self.describe_key(k));
        let final_state = self.final_state(&keys_touched);
        let cas_keys: BTreeSet<Vec<u8>> = self
            .cas_history
            .ops()
            .iter()
            .map(|o| o.key.clone())
            .collect();
        let cas_final = self.final_state(&cas_keys);
        // The promise (docs/guarantees.md, conditional writes) holds while a majority of the
        // key's replicas keep their memory: a key is not judged if a copy of it was lost for
        // good, if a majority of its replicas crashed or evicted it, or if one of them left the
        // cluster without handing it off (still holding it, or abandoning the handoff), before
        // its last conditional write was answered. (A leave whose copy never reaches the new
        // replica breaks the intersection of majorities: the commit may have reached only the
        // leaver and one other, and the new replica with the third then make a majority.)
        // (Its replicas: those of the ring the cluster started with and of the ring it ended
        // with; a crashed peer counts if it was a replica in either.) A minority that
        // crashed is judged — a restarted acceptor recovers (`Node::paxos_recovering`) before
        // its promises and accepts count on their own — and so are joins and leaves whose
        // handoffs complete: every acceptor of a round agrees with its proposer on the key's
        // replicas.
        let initial: BTreeSet<NodeId> = crate::scenario::NAMES[..self.s.nodes]
            .iter()
            .map(|n| NodeId::from(*n))
            .collect();
        let rings: Vec<Ring> = Ring::new(self.config.ring_params(), initial)
            .ok()
            .into_iter()
            .chain(
                self.peers
                    .values()
                    .filter(|p| !p.left)
                    .find_map(|p| p.node.as_ref())
                    .map(|n| n.ring().clone()),
            )
            .collect();
        let mut last_op: BTreeMap<Vec<u8>, Millis> = BTreeMap::new();
        for op in self.cas_history.ops() {
            let end = op.completed_at.unwrap_or(Millis::MAX);
            let last = last_op.entry(op.key.clone()).or_insert(0);
            *last = (*last).max(end);
        }
        let assumption_broken = |key: &[u8], until: Millis| {
            let replicas: BTreeSet<&NodeId> =
                rings.iter().flat_map(|r| r.replicas_of(key)).collect();
            let evicted = self.evictions.get(key).into_iter().flatten();
            let left_holding = self
                .handoffs_failed
                .get(key)
                .into_iter()
                .flatten()
                .any(|(at, who)| *at <= until && replicas.contains(who));
            let lost: BTreeSet<&NodeId> = self
                .memory_losses
                .iter()
                .chain(evicted)
                .filter(|(at, who)| *at <= until && replicas.contains(who))
                .map(|(_, who)| who)
                .collect();
            left_holding || lost.len() > self.s.replicas / 2
        };
        let cas_excused: BTreeSet<Vec<u8>> = cas_keys
            .iter()
            .filter(|k| {
                let lost = self
                    .losses
                    .get(*k)
                    .is_some_and(|ls| ls.iter().any(|l| !l.survived.descends_from(&l.held)));
                lost || assumption_broken(k, last_op[*k])
            })
            .cloned()
            .collect();
        let hinted_writes = self.sloppy_writes.len();
        let circumstances = Circumstances {
            replicas: self.s.replicas,
            clock_uncertainty_ms: self.s.clock_uncertainty_ms(self.now),
            writes_run: Some(std::mem::take(&mut self.writes_run)),
            losses: std::mem::take(&mut self.losses),
            late_write_ms: 0,
            disruptions: self.disruptions.clone(),
            key_disruptions: self.key_disruptions.clone(),
            convergence: Some(convergence.clone()),
            clock_prune_limit: Some(self.config.max_clock_entries),
            sloppy_writes: std::mem::take(&mut self.sloppy_writes),
        };
        let mut report = check(&self.history, &final_state, &circumstances);
        let linearizability = linearizable::check(&self.cas_history, &cas_final.keys, &|k| {
            cas_excused.contains(k)
        });
        report.violations.extend(linearizability.violations);
        report.conditional_keys_checked = linearizability.keys_checked;
        report.conditional_ops_checked = linearizability.ops_checked;
        report.conditional_keys_skipped = linearizability.keys_skipped;
        report
            .violations
            .extend(std::mem::take(&mut self.hints_lost));
        for detail in std::mem::take(&mut self.over_memory) {
            report.violations.push(Violation {
                kind: ViolationKind::OverMemoryLimit,
                key: Vec::new(),
                detail,
                ops: Vec::new(),
            });
        }
        for detail in std::mem::take(&mut self.handoff_unconfirmed) {
            report.violations.push(Violation {
                kind: ViolationKind::HandoffUnconfirmed,
                key: Vec::new(),
                detail,
                ops: Vec::new(),
            });
        }
        let latencies = self
            .history
            .ops()
            .iter()
            .filter(|o| matches!(o.outcome, Outcome::Read { .. } | Outcome::Written { .. }))
            .filter_map(|o| o.completed_at.map(|c| c - o.invoked_at))
            .collect();
        let stats: Vec<_> = self
            .peers
            .values()
            .filter_map(|p| p.node.as_ref())
            .map(|n| n.stats())
            .collect();
        let read_repairs = self.read_repairs_of_gone_nodes
            + self
                .peers
                .values()
                .filter_map(|p| p.node.as_ref())
                .map(|n| n.read_repairs())
                .sum::<u64>();
        self.trace = fnv(self.trace, format!("{:?}", self.history).as_bytes());
        RunResult {
            history: self.history,
            check: report,
            faults_injected: self.faults_injected,
            trace_hash: self.trace,
            latencies,
            convergence,
            read_repairs,
            sim_ms: self.now - START,
            messages: self.messages,
            divergence,
            evicted: stats.iter().map(|s| s.evicted).sum(),
            expired: stats.iter().map(|s| s.expired).sum(),
            tombstones_collected: stats.iter().map(|s| s.tombstones_collected).sum(),
            pending_losses_recorded: self.pending_losses_recorded,
            hinted_writes,
            hints_delivered: stats.iter().map(|s| s.hints_delivered).sum(),
            hints_dropped: stats.iter().map(|s| s.hints_dropped).sum(),
            hints_refused: stats.iter().map(|s| s.hints_refused).sum(),
            hints_expired: stats.iter().map(|s| s.hints_expired).sum(),
        }
    }

    pub(super) fn describe_key(&self, key: &[u8]) -> String {
        let mut out = format!(
            "key {} after {} sweep rounds (sweep started: {}, in flight: {}, queued: {}, views agree: {}, now {}):",
            String::from_utf8_lossy(key),
            self.sweep_rounds,
            self.sweep_started,
            self.sweep_in_flight,
            self.sweep_queue.len(),
            self.views_agree(),
            self.now,
        );
        for (name, p) in &self.peers {
            let Some(n) = &p.node else { continue };
            let owner = n.ring().replicas_of(key).contains(name);
            let state = n.peek(key);
            let view: Vec<String> = n.view().iter().map(|(m, l)| format!("{m}:{l:?}")).collect();
            let store = n.for_key(key).store();
            out += &format!(
                "\n  {name} owner={owner} view=[{}] shard memory {}/{:?} bytes, {} keys, {} repairs declined; anti-entropy {:?}; state={state:?}",
                view.join(" "),
                store.used_bytes(),
                store.limits().max_memory_bytes,
                store.len(),
                store.stats().repairs_declined,
                n.for_key(key).anti_entropy_stats(),
            );
        }
        out
    }

    /// The merged state of each key's replicas. Data only a non-replica holds (left behind
    /// by a ring change: the cluster has no handoff yet) is unreadable, so it counts as lost
    /// (a `Stranded` loss, per dot).
    pub(super) fn final_state(&mut self, keys: &BTreeSet<Vec<u8>>) -> FinalState {
        let mut fin = FinalState {
            keys: BTreeMap::new(),
            versions: Some(BTreeMap::new()),
            at: self.now,
            counters: BTreeMap::new(),
        };
        let nodes: Vec<&shards::Shards> = self
            .peers
            .values()
            .filter(|p| !p.left)
            .filter_map(|p| p.node.as_ref())
            .collect();
        let Some(reference) = nodes.first() else {
            return fin;
        };
        let running: BTreeSet<NodeId> = self.running().into_iter().collect();
        let mut stranded = Vec::new();
        for key in keys {
            let owners = reference.ring().replicas_of(key);
            let mut on_owners = Siblings::new();
            let mut anywhere = Siblings::new();
            for n in &nodes {
                if let Some(s) = n.peek(key) {
                    anywhere.merge(&s);
                    if owners.contains(n.id()) {
                        on_owners.merge(&s);
                    }
                }
                // A hint for an owner that is gone for good (a departure whose announcement
                // never arrived) is never delivered: stranded like data a ring change left.
                for (owner, k, s) in n.hints_held() {
                    if k == key.as_slice() && !running.contains(owner) {
                        anywhere.merge(s);
                    }
                }
            }
            if !on_owners.context().descends_from(anywhere.context()) {
                stranded.push((
                    key.clone(),
                    Loss {
                        at: self.now,
                        cause: LossCause::Stranded,
                        held: anywhere.context().clone(),
                        survived: on_owners.context().clone(),
                    },
                ));
            }
            if let Ok(Some((counter, _))) = counter::held(&on_owners, self.now) {
                // A counter past i64 cannot come from the workload's small increments: its
                // total, clamped, fails the sum check.
                let total = counter.total().unwrap_or(0);
                let value = total.clamp(i128::from(i64::MIN), i128::from(i64::MAX)) as i64;
                fin.counters.insert(key.clone(), value);
            }
            fin.keys.insert(key.clone(), values_of(&on_owners));
            if let Some(versions) = fin.versions.as_mut() {
                versions.insert(key.clone(), versions_of(&on_owners));
            }
        }
        for (key, loss) in stranded {
            self.losses.entry(key).or_default().push(loss);
        }
        fin
    }
}

/// Whether `store` could surely take `state` for `key` by evicting what its policy may evict:
/// the state's entry, the actor table, and the other entries the policy keeps must fit the
/// limit.
fn can_hold(store: &ringcache::core::store::Store, key: &[u8], state: &Siblings) -> bool {
    use ringcache::core::store::footprint;
    let Some(limit) = store.limits().max_memory_bytes else {
        return true;
    };
    let mut entries = 0;
    let mut kept = 0;
    for (k, s) in store.iter() {
        let bytes = footprint(k, &s);
        entries += bytes;
        if k != key && !store.limits().policy.evicts(s.earliest_expiry().is_some()) {
            kept += bytes;
        }
    }
    // The actor table may grow by every actor the state names (its vectors grow by doubling):
    // counted generously, so a replica that might be refused is not called diverged.
    let actors = store.used_bytes().saturating_sub(entries);
    let new_actors: u64 = state
        .context()
        .iter()
        .map(|(a, _)| 64 + 2 * a.0.len() as u64)
        .sum();
    footprint(key, state) + 2 * actors + new_actors + kept <= limit
}
