//! The stand-in for gossip: heartbeats over the faulty network, each peer's failure detector,
//! and the membership views handed to the cores.

use super::*;

impl World<'_> {
    pub(super) fn send_heartbeats(&mut self, from: &NodeId) {
        let d = &self.peers[from].detector;
        let members: Vec<NodeId> = d.last_heard.keys().cloned().collect();
        let left: Vec<NodeId> = d.left.iter().cloned().collect();
        for to in members.iter().filter(|m| *m != from) {
            let alive = self.peers.get(to).is_some_and(|p| p.node.is_some());
            if !alive || self.blocked(from, to) || self.net.chance(self.s.net.loss_per_10k) {
                continue;
            }
            let d = self.delay();
            self.schedule(
                self.now + d,
                Event::Heartbeat {
                    to: to.clone(),
                    from: from.clone(),
                    members: members.clone(),
                    left: left.clone(),
                },
            );
        }
    }

    pub(super) fn on_heartbeat(
        &mut self,
        at: &NodeId,
        from: NodeId,
        members: Vec<NodeId>,
        left: Vec<NodeId>,
    ) {
        let now = self.now;
        let d = &mut self.peers.get_mut(at).expect("known").detector;
        for l in left {
            d.last_heard.remove(&l);
            d.left.insert(l);
        }
        if !d.left.contains(&from) {
            d.last_heard.insert(from, Some(now));
        }
        for m in members {
            if !d.left.contains(&m) {
                d.last_heard.entry(m).or_insert(None);
            }
        }
    }

    /// Recomputes a peer's membership view and hands it to the core if it changed.
    pub(super) fn update_view(&mut self, name: &NodeId) {
        let now = self.now;
        let suspect_after = self.s.suspect_after_ms;
        let peer = self.peers.get_mut(name).expect("known");
        let mut view = MembershipView::new();
        for (m, heard) in &peer.detector.last_heard {
            let suspected = peer
                .detector
                .suspected_until
                .get(m)
                .is_some_and(|t| *t > now);
            let up = m == name
                || (!suspected && heard.is_some_and(|h| now.saturating_sub(h) < suspect_after));
            view.set(m.clone(), if up { Liveness::Up } else { Liveness::Down });
        }
        if peer.view.as_ref() == Some(&view) {
            return;
        }
        let ring_changed =
            peer.view.as_ref().map(|v| v.ring_members()) != Some(view.ring_members());
        peer.view = Some(view.clone());
        self.feed(name, Input::Membership(view));
        if ring_changed {
            self.note_ring_agreement();
        }
    }

    /// Tracks intervals in which running peers place keys on different rings: quorums taken on
    /// different rings need not overlap, so read-your-writes is not promised across them.
    pub(super) fn note_ring_agreement(&mut self) {
        // The rings the cores place keys on (a leaving peer has taken itself off its own).
        let mut rings = self
            .peers
            .values()
            .filter(|p| !p.left)
            .filter_map(|p| p.node.as_ref())
            .map(|n| Some(n.ring().members().clone()));
        let first = rings.next().flatten();
        let agree = rings.all(|r| r == first);
        match (agree, self.rings_differ_since) {
            (false, None) => self.rings_differ_since = Some(self.now),
            (true, Some(since)) => {
                self.disruptions.push((since, self.now));
                self.rings_differ_since = None;
            }
            _ => {}
        }
    }
}
