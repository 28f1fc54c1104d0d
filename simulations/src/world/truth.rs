//! What the checker cannot see in the history and the simulator can: what each write really
//! did, and every moment a key's copies shrank.
//!
//! # Promises
//! - **Writes.** For every write a coordinator ran (its node logs them), the dot it minted, its
//!   place in the order writes ran (two runs in one millisecond are still ordered), and the
//!   history it was *entitled* to replace ([`WriteRun`]): the client's context, or for a
//!   blind delete the coordinator's clock for the key just before the delete ran. Entitlements
//!   come from the request and the store as it was, never from what the write then did, so a
//!   coordinator that replaces more than it saw is caught, not excused.
//! - **Losses.** A [`Loss`] is recorded exactly when the last thing covering a dot goes away
//!   through a legitimate loss of memory — a crash, a departure, an eviction at the memory
//!   limit, a regained partition's stale copies dropped, a message carrying a state lost or
//!   refused, a hint its owner's full store refused. What covers a dot: every running peer's
//!   store, in-flight reads and hints, every message in flight (counting those sent in the
//!   same step) or held by a paused peer, and the clocks of collected tombstones (a collected
//!   delete is retired, not lost: its absence must never excuse a resurrection).
//! - **Hints.** A hint is a copy from the moment its holder keeps it until its owner's store
//!   took the delivered state (then the owner's copy stands for it, and that copy's own loss
//!   is judged when it happens), or until the holder loses its memory. A delivery in flight
//!   is not a copy of its own: the holder must keep the hint until the owner acknowledges it,
//!   so a hint that vanishes any other way (dropped when sent, or acknowledged by an owner
//!   that did not store it) loses its writes unexcused.
//! - **Pending losses.** An in-flight read's merged state is only a passing copy. The dots a
//!   legitimate loss leaves covered by reads alone are pending ([`PendingLoss`]); they are
//!   judged again after every step of a peer whose read holds them (only such a step can end
//!   the read or pass the dots on). Dots a store or message has taken leave the pending loss:
//!   that copy's own loss, if any, is judged when it happens. Dots nothing covers any more are
//!   recorded with the pending loss's cause — its repair declined by a full store, or never
//!   sent — or, if a crash or departure took the read, as part of that loss. A read ending
//!   never excuses anything by itself, and an illegitimate drop of a dot a store had taken
//!   cannot be excused through a pending loss.
//! - Only legitimate losses are recorded: an eviction by a peer that has no memory limit, or a
//!   drop of a partition the peer did not just regain, is a bug, and what it loses is not
//!   excused. A state a peer took from a message and dropped in the same step is judged as
//!   that drop, not as a lost message.

use super::*;
use ringcache::core::message::AntiEntropyMessage;
use ringcache::core::node::HandedOff;
use ringcache::core::version_vector::Dot;
use ringcache::history::check::{Loss, LossCause, Violation, ViolationKind, WriteRun};

/// A legitimate loss some of whose dots only in-flight reads still held: the dots of `held`
/// that `elsewhere` (every store, message and collected clock that has covered them since the
/// loss) does not cover. Recorded as lost with `cause` once no read holds them either.
pub(super) struct PendingLoss {
    held: VersionVector,
    elsewhere: VersionVector,
    cause: LossCause,
}

/// The history both vectors cover (pointwise minimum).
fn meet(a: &VersionVector, b: &VersionVector) -> VersionVector {
    let mut out = VersionVector::new();
    for (actor, counter) in a.iter() {
        out.add(&Dot {
            actor: actor.clone(),
            counter: counter.min(b.get(actor)),
        });
    }
    out
}

/// Whether a context-less write replaces what its coordinator has seen.
fn overwrites(write: &WriteRequest) -> bool {
    matches!(write.write, WriteKind::Delete) || write.overwrite
}

impl World<'_> {
    /// Before `input` reaches `node`: if it is a write, fix what it is entitled to replace
    /// (read off this peer's store now, in case this peer runs it in this step).
    pub(super) fn before_feed(
        &mut self,
        node: &NodeId,
        input: &Input,
    ) -> Option<(OpId, VersionVector)> {
        let (op, write) = match input {
            Input::Client {
                id,
                request: ClientRequest::Write(write),
                ..
            } => (self.op_of_client_request(*id)?, write),
            Input::Peer {
                from,
                message: PeerMessage::Coordinate { req, write },
                ..
            } => (*self.forwards.get(&(from.clone(), *req))?, write),
            _ => return None,
        };
        let replaced = match (&write.write, &write.context) {
            // An expire replaces the one value its read finds; the checker matches it by bytes.
            (WriteKind::Expire { .. }, _) => VersionVector::new(),
            (WriteKind::Increment { .. }, _) => self.peers[node]
                .node
                .as_ref()
                .and_then(|n| n.peek(&write.key))
                .map(|s| s.context().clone())
                .unwrap_or_default(),
            (_, Some(ctx)) => ctx.clone(),
            // A delete without context, or an overwrite, removes what its coordinator has seen
            // when it runs.
            (WriteKind::Delete, None) | (WriteKind::Put { .. }, None) if overwrites(write) => self
                .peers[node]
                .node
                .as_ref()
                .and_then(|n| n.peek(&write.key))
                .map(|s| s.context().clone())
                .unwrap_or_default(),
            (WriteKind::Delete | WriteKind::Put { .. }, None) => VersionVector::new(),
        };
        Some((op, replaced))
    }

    /// After an input reached `node`: record the writes it ran, and what its messages say.
    pub(super) fn after_feed(
        &mut self,
        node: &NodeId,
        arrived: Option<(OpId, VersionVector)>,
        out: &Outputs,
    ) {
        if let Some((op, replaced)) = arrived {
            self.entitlements.insert(op, replaced);
        }
        let Some(n) = self.peers.get_mut(node).and_then(|p| p.node.as_mut()) else {
            return;
        };
        for ran in n.take_writes_run() {
            let op = match (&ran.client, &ran.forwarded_by) {
                (Some(id), _) => self.request_ops.get(id).copied(),
                (None, Some(by)) => self.forwards.get(by).copied(),
                (None, None) => None,
            };
            let Some(op) = op else { continue };
            let value = n.peek(&ran.key).and_then(|s| {
                s.versions().find_map(|(dot, p)| match p {
                    Payload::Value { data, .. } if *dot == ran.dot => Some(data.clone()),
                    _ => None,
                })
            });
            let replaced = self.entitlements.remove(&op).unwrap_or_default();
            if ran.hinted {
                self.sloppy_writes.insert(op);
            }
            self.writes_ran += 1;
            self.writes_run.insert(
                op,
                WriteRun {
                    at: self.now,
                    order: self.writes_ran,
                    dot: ran.dot,
                    replaced,
                    value,
                },
            );
        }
        for msg in &out.messages {
            match &msg.message {
                PeerMessage::Fetch { req, key } => {
                    self.fetch_keys.insert(*req, key.clone());
                }
                PeerMessage::Forget { key, clock, .. } => {
                    self.collected.entry(key.clone()).or_default().merge(clock);
                }
                _ => {}
            }
        }
    }

    /// The history operation a client request id belongs to (even after its client gave up:
    /// a paused peer may take the request in much later).
    pub(super) fn op_of_client_request(&self, id: ClientRequestId) -> Option<OpId> {
        self.request_ops.get(&id).copied()
    }

    /// The key states a message carries: one for a replication, a repair or a fetch reply,
    /// any number for an anti-entropy step.
    pub(super) fn message_states<'m>(
        &'m self,
        message: &'m PeerMessage,
    ) -> Vec<(&'m [u8], &'m Siblings)> {
        match message {
            PeerMessage::Store { key, state, .. }
            | PeerMessage::Repair { key, state, .. }
            | PeerMessage::HintStore { key, state, .. } => vec![(key.as_slice(), state)],
            PeerMessage::FetchReply {
                req,
                state: Some(state),
                ..
            } => self
                .fetch_keys
                .get(req)
                .map(|k| (k.as_slice(), state))
                .into_iter()
                .collect(),
            PeerMessage::Handoff { states, .. } => {
                states.iter().map(|(k, s)| (k.as_slice(), s)).collect()
            }
            PeerMessage::AntiEntropy {
                message:
                    AntiEntropyMessage::KeysReply { states, .. }
                    | AntiEntropyMessage::Push { states, .. },
                ..
            } => states.iter().map(|(k, s)| (k.as_slice(), s)).collect(),
            _ => Vec::new(),
        }
    }

    /// The clock of everything that still holds `key` anywhere, leaving out `excluded` (a peer
    /// losing its memory, with the messages on their way to it).
    pub(super) fn surviving(&self, key: &[u8], excluded: Option<&NodeId>) -> VersionVector {
        self.surviving_in(key, excluded, true)
    }

    /// [`World::surviving`], counting in-flight reads only if `with_reads`.
    fn surviving_in(
        &self,
        key: &[u8],
        excluded: Option<&NodeId>,
        with_reads: bool,
    ) -> VersionVector {
        let mut clock = self.collected.get(key).cloned().unwrap_or_default();
        let add_event = |clock: &mut VersionVector, event: &Event| {
            if let Event::Deliver { to, message, .. } = event {
                if Some(to) == excluded {
                    return;
                }
                for (k, state) in self.message_states(message) {
                    if k == key {
                        clock.merge(state.context());
                    }
                }
            }
        };
        for (name, p) in &self.peers {
            if Some(name) == excluded || p.left {
                continue;
            }
            let Some(n) = &p.node else { continue };
            if let Some(s) = n.peek(key) {
                clock.merge(s.context());
            }
            for (k, s) in n.states_in_flight().filter(|_| with_reads) {
                if k == key {
                    clock.merge(s.context());
                }
            }
            for (owner, k, s) in n.hints_held() {
                if k == key && self.hint_is_copy(owner, k, s) {
                    clock.merge(s.context());
                }
            }
            for event in &p.held {
                add_event(&mut clock, event);
            }
        }
        for event in self.queue.values() {
            add_event(&mut clock, event);
        }
        clock
    }

    /// A copy of `key` holding `held` is gone through a legitimate loss (`cause`): record
    /// what survived nowhere else, and leave pending what only in-flight reads still hold.
    pub(super) fn lose_copy(
        &mut self,
        victim: Option<&NodeId>,
        key: &[u8],
        held: &VersionVector,
        cause: LossCause,
    ) {
        let survived = self.surviving(key, victim);
        let elsewhere = self.surviving_in(key, victim, false);
        // Pending dots that went with this copy are recorded below, as this loss.
        self.settle_pending(key, victim, held);
        if !survived.descends_from(held) {
            self.losses.entry(key.to_vec()).or_default().push(Loss {
                at: self.now,
                cause,
                held: held.clone(),
                survived: survived.clone(),
            });
        }
        let pending = meet(held, &survived);
        if !elsewhere.descends_from(&pending) {
            self.pending_losses
                .entry(key.to_vec())
                .or_default()
                .push(PendingLoss {
                    held: pending,
                    elsewhere,
                    cause,
                });
        }
    }

    /// The keys of `node`'s in-flight reads that hold pending losses, before it steps (see
    /// [`World::after_reads_stepped`]).
    pub(super) fn reads_pending(&self, node: &NodeId) -> Vec<Vec<u8>> {
        let Some(n) = self.peers[node].node.as_ref() else {
            return Vec::new();
        };
        let mut keys: Vec<Vec<u8>> = n
            .states_in_flight()
            .map(|(k, _)| k.to_vec())
            .filter(|k| self.pending_losses.contains_key(k))
            .collect();
        keys.sort();
        keys.dedup();
        keys
    }

    /// After `node` stepped (its messages sent, its drops noted): only a step of the peer whose
    /// read holds a pending dot can end that read or pass the dot on (a repair, its own
    /// store), so the keys from [`World::reads_pending`] are all that need judging again.
    pub(super) fn after_reads_stepped(&mut self, keys: Vec<Vec<u8>>) {
        for key in keys {
            self.settle_pending(&key, None, &VersionVector::new());
        }
    }

    /// Judges `key`'s pending losses again against what covers it now (leaving out `victim`):
    /// dots a store or message took leave them (a later loss of that copy is its own); dots
    /// nothing covers any more are recorded as lost with the pending loss's cause, but for
    /// those in `accounted` (a copy whose loss the caller records).
    fn settle_pending(&mut self, key: &[u8], victim: Option<&NodeId>, accounted: &VersionVector) {
        let Some(pending) = self.pending_losses.remove(key) else {
            return;
        };
        let survived = self.surviving(key, victim);
        let elsewhere = self.surviving_in(key, victim, false);
        let mut still = Vec::new();
        for mut p in pending {
            p.elsewhere.merge(&elsewhere);
            let covered = survived.merged(&p.elsewhere);
            let excused = covered.merged(accounted);
            if !excused.descends_from(&p.held) {
                *self.pending_losses_recorded.entry(p.cause).or_default() += 1;
                self.losses.entry(key.to_vec()).or_default().push(Loss {
                    at: self.now,
                    cause: p.cause,
                    held: p.held.clone(),
                    survived: excused,
                });
            }
            p.held = meet(&p.held, &covered);
            if !p.elsewhere.descends_from(&p.held) {
                still.push(p);
            }
        }
        if !still.is_empty() {
            self.pending_losses.insert(key.to_vec(), still);
        }
    }

    /// Whether a hint held for `owner` is still a copy of its own: not once the owner's store
    /// took every dot of it (see the module doc).
    fn hint_is_copy(&self, owner: &NodeId, key: &[u8], state: &Siblings) -> bool {
        !self
            .handed_over
            .get(&(owner.clone(), key.to_vec()))
            .is_some_and(|taken| taken.descends_from(state.context()))
    }

    /// After `owner` handled a `HintDeliver` of `key` carrying `clock` (and dropped `dropped`
    /// in that step): if its store took the state, the owner's copy stands for the hint from
    /// now on. Called before the step's drops are judged, so a state the owner took and
    /// evicted at once is judged as that eviction.
    pub(super) fn note_hint_taken(
        &mut self,
        owner: &NodeId,
        delivered: Option<(Vec<u8>, VersionVector)>,
        dropped: &[(Vec<u8>, Siblings)],
    ) {
        let Some((key, clock)) = delivered else {
            return;
        };
        let in_store = self.peers[owner]
            .node
            .as_ref()
            .and_then(|n| n.peek(&key))
            .is_some_and(|s| s.context().descends_from(&clock));
        let evicted = dropped
            .iter()
            .any(|(k, s)| *k == key && s.context().descends_from(&clock));
        if in_store || evicted {
            self.handed_over
                .entry((owner.clone(), key))
                .or_default()
                .merge(&clock);
        }
    }

    /// Hints `holder` gave up in its last step because their owner's full store refused them:
    /// like a `Store` a full replica refused, that copy is gone. Returns them, by key.
    pub(super) fn note_hints_given_up(&mut self, holder: &NodeId) -> Vec<(Vec<u8>, VersionVector)> {
        let Some(n) = self.peers.get_mut(holder).and_then(|p| p.node.as_mut()) else {
            return Vec::new();
        };
        let given_up = n.take_hints_given_up();
        let mut clocks = Vec::new();
        for (owner, key, state) in given_up {
            if self.hint_is_copy(&owner, &key, &state) {
                self.lose_copy(None, &key, state.context(), LossCause::Message);
            }
            clocks.push((key, state.context().clone()));
        }
        clocks
    }

    /// The hints `holder` holds now: (owner, key) → clock.
    pub(super) fn hints_of(&self, holder: &NodeId) -> BTreeMap<(NodeId, Vec<u8>), VersionVector> {
        let Some(n) = self.peers.get(holder).and_then(|p| p.node.as_ref()) else {
            return BTreeMap::new();
        };
        n.hints_held()
            .map(|(o, k, s)| ((o.clone(), k.to_vec()), s.context().clone()))
            .collect()
    }

    /// After a step of `holder`, which held `before`: a hinted write is never lost while its
    /// holder keeps its memory. Every hint it held is still held (or grew), or went where the
    /// protocol lets it go: into its owner's store (which took it), to another owner's hint
    /// or this peer's store (an owner that left), or given up (`given_up`: a full owner
    /// refused it). Anything else is a `HintLost` violation.
    pub(super) fn check_hints_kept(
        &mut self,
        holder: &NodeId,
        before: BTreeMap<(NodeId, Vec<u8>), VersionVector>,
        given_up: &[(Vec<u8>, VersionVector)],
    ) {
        if before.is_empty() {
            return;
        }
        let after = self.hints_of(holder);
        for ((owner, key), clock) in before {
            let mut covered = self
                .handed_over
                .get(&(owner.clone(), key.clone()))
                .cloned()
                .unwrap_or_default();
            for ((_, k), c) in after.iter().filter(|((_, k), _)| *k == key) {
                debug_assert_eq!(k, &key);
                covered.merge(c);
            }
            for (_, c) in given_up.iter().filter(|(k, _)| *k == key) {
                covered.merge(c);
            }
            if let Some(s) = self.peers[holder].node.as_ref().and_then(|n| n.peek(&key)) {
                covered.merge(s.context());
            }
            if !covered.descends_from(&clock) {
                self.hints_lost.push(Violation {
                    kind: ViolationKind::HintLost,
                    key: key.clone(),
                    detail: format!(
                        "{holder} at {} no longer holds its hint for {owner} ({clock}), which {owner}'s store never took",
                        self.now
                    ),
                    ops: Vec::new(),
                });
            }
        }
    }

    /// A message that will never be applied: if it carried a state, it was a copy.
    pub(super) fn lose_message(&mut self, message: &PeerMessage) {
        let carried: Vec<(Vec<u8>, VersionVector)> = self
            .message_states(message)
            .into_iter()
            .map(|(k, s)| (k.to_vec(), s.context().clone()))
            .collect();
        for (key, held) in carried {
            self.lose_copy(None, &key, &held, LossCause::Message);
        }
    }

    /// A peer is about to lose its memory: note what the cluster loses with it.
    pub(super) fn lose_memory(&mut self, victim: &NodeId, cause: LossCause) {
        self.disruptions.push((self.now, self.now));
        if cause == LossCause::Crash {
            self.memory_losses.push((self.now, victim.clone()));
        }
        let Some(node) = self.peers[victim].node.as_ref() else {
            return;
        };
        self.read_repairs_of_gone_nodes += node.read_repairs();
        let mut held: Vec<(Vec<u8>, VersionVector)> = node
            .iter_store()
            .map(|(k, s)| (k.to_vec(), s.context().clone()))
            .collect();
        if cause == LossCause::Departure {
            for (key, _) in &held {
                let at = (self.now, victim.clone());
                self.handoffs_failed
                    .entry(key.clone())
                    .or_default()
                    .push(at);
            }
        }
        held.extend(
            node.states_in_flight()
                .map(|(k, s)| (k.to_vec(), s.context().clone())),
        );
        held.extend(
            node.hints_held()
                .filter(|(owner, k, s)| self.hint_is_copy(owner, k, s))
                .map(|(_, k, s)| (k.to_vec(), s.context().clone())),
        );
        let waiting: Vec<PeerMessage> = self.peers[victim]
            .held
            .iter()
            .filter_map(|e| match e {
                Event::Deliver { message, .. } => Some(message.clone()),
                _ => None,
            })
            .collect();
        for message in &waiting {
            for (key, state) in self.message_states(message) {
                held.push((key.to_vec(), state.context().clone()));
            }
        }
        for (key, clock) in held {
            self.lose_copy(Some(victim), &key, &clock, cause);
        }
    }

    /// Keys `node` dropped while handling `input`: evictions at its memory limit, or its stale
    /// copies of partitions it just regained (judged against `ring_before`). Any other drop is
    /// a bug and is not recorded, so what it loses stays unexcused.
    /// Copies a handoff dropped unsent at its deadline: a legitimate loss if nothing else held
    /// them.
    pub(super) fn note_abandoned(&mut self, node: &NodeId, abandoned: Vec<(Vec<u8>, Siblings)>) {
        for (key, state) in abandoned {
            let at = (self.now, node.clone());
            self.handoffs_failed
                .entry(key.clone())
                .or_default()
                .push(at);
            self.key_disruptions
                .entry(key.clone())
                .or_default()
                .push(self.now);
            self.lose_copy(None, &key, state.context(), LossCause::Abandoned);
        }
    }

    /// Copies `node` dropped as handed off. Some other running peer must hold each already (a
    /// state descending from the one dropped); if none does, a new replica must have confirmed
    /// it and lost it since, legitimately (it is down or restarted empty, or it evicted it at
    /// its memory limit): that is the loss, by its cause. Otherwise the handoff dropped a copy
    /// nobody held.
    pub(super) fn check_handed_off(&mut self, node: &NodeId, handed_off: Vec<HandedOff>) {
        for h in handed_off {
            let held_elsewhere = self.peers.iter().any(|(name, p)| {
                name != node
                    && !p.left
                    && p.node
                        .as_ref()
                        .and_then(|n| n.peek(&h.key))
                        .is_some_and(|s| s.context().descends_from(h.state.context()))
            });
            // Tombstones the new replicas collected since they confirmed them are retired,
            // not lost.
            let retired = h.state.is_tombstones_only()
                && self
                    .collected
                    .get(&h.key)
                    .is_some_and(|c| c.descends_from(h.state.context()));
            if held_elsewhere || retired {
                continue;
            }
            let excuse = h.confirmed_by.iter().find_map(|c| {
                let p = self.peers.get(c)?;
                match &p.node {
                    None => Some(LossCause::Crash),
                    Some(_) if p.incarnation != p.first_incarnation => Some(LossCause::Crash),
                    Some(_) if self.s.memory.is_some() => Some(LossCause::Eviction),
                    Some(_) => None,
                }
            });
            match excuse {
                Some(cause) => self.lose_copy(None, &h.key, h.state.context(), cause),
                None => self.handoff_unconfirmed.push(format!(
                    "{node} dropped its copy of {:?} ({}) as handed off while no other peer held it (confirmed by {:?})",
                    String::from_utf8_lossy(&h.key),
                    h.state.context(),
                    h.confirmed_by
                )),
            }
        }
    }

    pub(super) fn note_dropped(
        &mut self,
        node: &NodeId,
        dropped: Vec<(Vec<u8>, Siblings)>,
        ring_before: Option<&Ring>,
    ) {
        for (key, state) in dropped {
            self.key_disruptions
                .entry(key.clone())
                .or_default()
                .push(self.now);
            let cause = match ring_before {
                Some(before) => {
                    let regained = !before.replicas_of(&key).contains(node)
                        && self.peers[node]
                            .node
                            .as_ref()
                            .is_some_and(|n| n.ring().replicas_of(&key).contains(node));
                    regained.then_some(LossCause::StaleDrop)
                }
                None => self.s.memory.is_some().then_some(LossCause::Eviction),
            };
            if cause == Some(LossCause::Eviction) {
                let at = (self.now, node.clone());
                self.evictions.entry(key.clone()).or_default().push(at);
            }
            if let Some(cause) = cause {
                self.lose_copy(None, &key, state.context(), cause);
            }
        }
    }
}
