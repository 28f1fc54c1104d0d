//! Injecting and ending the scenario's faults (what a peer that loses its memory takes with it
//! is accounted in `truth`).

use super::*;

impl World<'_> {
    pub(super) fn start_fault(&mut self, i: usize) {
        if self.healed_at.is_some() {
            return;
        }
        let fault = self.s.faults[i].fault.clone();
        *self.faults_injected.entry(fault.kind()).or_insert(0) += 1;
        match fault {
            Fault::Partition {
                duration, flap_ms, ..
            } => {
                self.active.insert(i, true);
                if let Some(p) = flap_ms {
                    self.schedule(self.now + p, Event::Flap(i));
                }
                self.schedule(self.now + duration, Event::FaultEnd(i));
            }
            Fault::Crash { node, down_for } => {
                let name = NodeId::from(node);
                if self.peers.get(&name).is_some_and(|p| p.node.is_some()) {
                    self.lose_memory(&name, LossCause::Crash);
                    let peer = self.peers.get_mut(&name).expect("checked");
                    peer.node = None;
                    peer.paused = false;
                    peer.held.clear();
                    self.note_ring_agreement();
                    self.active.insert(i, true);
                    self.schedule(self.now + down_for, Event::FaultEnd(i));
                }
            }
            Fault::Pause { node, duration } => {
                let name = NodeId::from(node);
                if let Some(p) = self.peers.get_mut(&name) {
                    if p.node.is_some() && !p.paused {
                        p.paused = true;
                        self.active.insert(i, true);
                        self.schedule(self.now + duration, Event::FaultEnd(i));
                    }
                }
            }
            Fault::FalseSuspicion {
                observer,
                suspect,
                duration,
            } => {
                let until = self.now + duration;
                if let Some(p) = self.peers.get_mut(&NodeId::from(observer)) {
                    p.detector
                        .suspected_until
                        .insert(NodeId::from(suspect), until);
                }
            }
            Fault::Join { node } => {
                let name = NodeId::from(node);
                if self.peers.contains_key(&name) {
                    return;
                }
                let index = NAMES.iter().position(|n| *n == name.as_str()).unwrap_or(0);
                let mut detector = Detector::default();
                for (other, p) in &self.peers {
                    if !p.left {
                        // Seeds: known, not yet heard from.
                        detector.last_heard.insert(other.clone(), None);
                    }
                }
                self.peers.insert(
                    name.clone(),
                    Peer {
                        node: None,
                        incarnation: 0,
                        paused: false,
                        held: Vec::new(),
                        clock: self.s.clocks[index],
                        detector,
                        left: false,
                        leaving_since: None,
                        first_incarnation: 0,
                        view: None,
                    },
                );
                self.boot(&name);
                self.send_heartbeats(&name);
            }
            Fault::Leave { node } => {
                let name = NodeId::from(node);
                let leaving = self
                    .peers
                    .get(&name)
                    .is_some_and(|p| p.node.is_some() && !p.left && !p.paused);
                if !leaving {
                    return;
                }
                // A graceful leave: the peer announces it, hands its data off while it keeps
                // running, and departs once done (see `depart_when_handed_off`).
                let now = self.local_time(&name);
                let peer = self.peers.get_mut(&name).expect("checked");
                peer.detector.left.insert(name.clone());
                peer.leaving_since = Some(self.now);
                if let Some(node) = peer.node.as_mut() {
                    node.leave(now);
                }
                self.send_heartbeats(&name);
                self.note_ring_agreement();
            }
        }
    }

    /// Ends a graceful leave once the peer handed everything off, or after the handoff
    /// deadline and a request timeout more (what it still holds then departs with it).
    pub(super) fn depart_when_handed_off(&mut self, name: &NodeId) {
        let peer = &self.peers[name];
        let (Some(since), Some(node)) = (peer.leaving_since, peer.node.as_ref()) else {
            return;
        };
        let limit = since + self.config.tombstone_grace_ms / 4 + self.config.request_timeout_ms;
        if peer.paused || (!node.handoff_done() && self.now < limit) {
            return;
        }
        self.send_heartbeats(name);
        self.lose_memory(name, LossCause::Departure);
        let peer = self.peers.get_mut(name).expect("known");
        peer.left = true;
        peer.leaving_since = None;
        peer.node = None;
        self.note_ring_agreement();
    }

    pub(super) fn end_fault(&mut self, i: usize) {
        if self.active.remove(&i).is_none() {
            return;
        }
        match &self.s.faults[i].fault {
            Fault::Crash { node, .. } => {
                let name = NodeId::from(node.as_str());
                if self.peers[&name].node.is_none() && !self.peers[&name].left {
                    let d = &mut self.peers.get_mut(&name).expect("known").detector;
                    for heard in d.last_heard.values_mut() {
                        *heard = None;
                    }
                    self.boot(&name);
                }
            }
            Fault::Pause { node, .. } => self.resume(&NodeId::from(node.as_str())),
            _ => {}
        }
    }

    pub(super) fn resume(&mut self, name: &NodeId) {
        let Some(peer) = self.peers.get_mut(name) else {
            return;
        };
        if !peer.paused {
            return;
        }
        peer.paused = false;
        let held = std::mem::take(&mut peer.held);
        for event in held {
            self.dispatch(event);
        }
    }
}
