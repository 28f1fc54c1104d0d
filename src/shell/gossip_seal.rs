//! The seal on every gossip datagram: a keyed BLAKE3 MAC, a timestamp window and a per-sender
//! sequence, so that only holders of the cluster secret reach chitchat, and only once.
//!
//! Why: chitchat's UDP gossip is plaintext and checks nothing but a cluster-id string that
//! anyone can sniff. Tried on loopback, a stranger could forge a SynAck or Ack that rewrote or
//! removed members, crash chitchat's gossip task with a 118-byte SynAck (an assertion in its
//! `state.rs`), grow every peer's state with thousands of fake nodes, or burn CPU with a
//! compressed bomb. Every one of those needs chitchat to decode the stranger's bytes, so the
//! seal is checked first and chitchat only ever decodes sealed bytes
//! (`shell::gossip_transport`).
//!
//! # Wire format
//! `MAC (32) ‖ version (1) ‖ sender (8) ‖ sequence (8) ‖ timestamp ms (8) ‖ chitchat bytes`,
//! integers little-endian. The MAC is `blake3::keyed_hash(seal key, everything after it)`, with
//! the key derived from the cluster secret (`ClusterSecret::gossip_seal_key`). `sender` is a
//! random number each socket picks when it opens, so a restarted peer starts a new sequence
//! instead of looking like a replay of its previous life.
//!
//! # Promises
//! - [`DatagramSeal::open`] hands back a payload only if its MAC verifies under the key; the MAC
//!   is checked (constant-time comparison) before anything else about the datagram is believed,
//!   and before any state is kept for its sender, so strangers cannot grow the sender table.
//! - A datagram is accepted at most once: its timestamp must be within `window` of the
//!   receiver's clock (either way, for clock skew), and its sequence must be above, or within
//!   64 below and not yet seen, the highest one accepted from its sender (a sliding window, as
//!   in IPsec, so gossip's occasional reordering costs nothing). A sender is forgotten only once
//!   everything it sent is older than the window, so forgetting never re-admits a replay.
//! - The socket's own datagrams, reflected back to it, are refused.
//! - Pure: the clock and the sender number are parameters.
//!
//! Not promised: binding a datagram to its receiver. A datagram a member sent to B can be
//! delivered once to C by someone who captured it within the window; its content is that
//! member's own past gossip (which chitchat ignores when stale), and a replayed Syn draws one
//! reply to the replayer. Gossip is not encrypted either: membership is not secret.

use std::collections::HashMap;
use thiserror::Error;

/// The format version this module writes and reads.
pub const SEAL_VERSION: u8 = 1;
const MAC_LEN: usize = 32;
/// Bytes a seal adds to a chitchat datagram.
pub const SEAL_OVERHEAD: usize = MAC_LEN + 1 + 8 + 8 + 8;
/// How far behind the highest accepted sequence a late datagram may still be accepted.
const REORDER_WINDOW: u64 = 64;

/// Why a datagram was refused.
#[derive(Clone, Copy, Debug, Error, PartialEq, Eq, Hash)]
pub enum SealError {
    #[error("datagram too short to carry a seal")]
    Short,
    #[error("datagram MAC does not verify (a stranger, another cluster, or corruption)")]
    BadMac,
    #[error("sealed with format version {0}, this peer reads {SEAL_VERSION}")]
    Version(u8),
    #[error("datagram timestamp outside the replay window (clock skew or a late replay)")]
    Stale,
    #[error("datagram already accepted, or too far behind its sender's sequence")]
    Replay,
    #[error("this socket's own datagram, sent back to it")]
    Own,
    #[error("too many senders within the replay window")]
    TooManySenders,
}

/// The state of one sealing and opening socket.
pub struct DatagramSeal {
    key: [u8; 32],
    /// This socket's sender number (see the module doc).
    sender: u64,
    /// The sequence of the next datagram sealed; starts at 1.
    next_sequence: u64,
    window_ms: u64,
    /// Replay state of every sender heard from within the window. Only MAC-verified senders
    /// enter; at most `max_senders`.
    senders: HashMap<u64, ReplayWindow>,
    max_senders: usize,
}

/// What has been accepted from one sender.
#[derive(Clone, Copy, Debug)]
struct ReplayWindow {
    /// The highest sequence accepted.
    highest: u64,
    /// Bit `i` set: sequence `highest - 1 - i` was accepted.
    below: u64,
    /// The highest timestamp accepted; past it plus the window, the sender can be forgotten.
    newest_ms: u64,
}

impl DatagramSeal {
    /// A seal under `key` for a socket whose datagrams carry `sender`; accepts timestamps
    /// within `window_ms` of the receiver's clock and keeps at most `max_senders` senders.
    pub fn new(key: [u8; 32], sender: u64, window_ms: u64, max_senders: usize) -> Self {
        Self {
            key,
            sender,
            next_sequence: 1,
            window_ms,
            senders: HashMap::new(),
            max_senders: max_senders.max(1),
        }
    }

    /// Appends to `out` the sealed form of `payload`, stamped `now_ms`.
    pub fn seal(&mut self, now_ms: u64, payload: &[u8], out: &mut Vec<u8>) {
        let sequence = self.next_sequence;
        self.next_sequence += 1;
        let start = out.len();
        out.extend_from_slice(&[0u8; MAC_LEN]);
        out.push(SEAL_VERSION);
        out.extend_from_slice(&self.sender.to_le_bytes());
        out.extend_from_slice(&sequence.to_le_bytes());
        out.extend_from_slice(&now_ms.to_le_bytes());
        out.extend_from_slice(payload);
        let mac = blake3::keyed_hash(&self.key, &out[start + MAC_LEN..]);
        out[start..start + MAC_LEN].copy_from_slice(mac.as_bytes());
    }

    /// The payload of `datagram` if it is sealed under this key, fresh and not seen before;
    /// receiving `now_ms`. Accepting it records it, so the same datagram is refused next time.
    pub fn open<'a>(&mut self, now_ms: u64, datagram: &'a [u8]) -> Result<&'a [u8], SealError> {
        if datagram.len() < SEAL_OVERHEAD {
            return Err(SealError::Short);
        }
        let (mac, sealed) = datagram.split_at(MAC_LEN);
        let mac: [u8; MAC_LEN] = mac.try_into().map_err(|_| SealError::Short)?;
        // blake3::Hash equality is constant-time.
        if blake3::keyed_hash(&self.key, sealed) != blake3::Hash::from(mac) {
            return Err(SealError::BadMac);
        }
        if sealed[0] != SEAL_VERSION {
            return Err(SealError::Version(sealed[0]));
        }
        let field =
            |at: usize| u64::from_le_bytes(sealed[at..at + 8].try_into().expect("eight bytes"));
        let (sender, sequence, sent_ms) = (field(1), field(9), field(17));
        if sender == self.sender {
            return Err(SealError::Own);
        }
        if sent_ms.abs_diff(now_ms) > self.window_ms {
            return Err(SealError::Stale);
        }
        self.accept(now_ms, sender, sequence, sent_ms)?;
        Ok(&sealed[25..])
    }

    /// Records `sequence` from `sender` unless it was accepted before or is too far behind.
    fn accept(
        &mut self,
        now_ms: u64,
        sender: u64,
        sequence: u64,
        sent_ms: u64,
    ) -> Result<(), SealError> {
        if !self.senders.contains_key(&sender) && self.senders.len() >= self.max_senders {
            self.forget_quiet_senders(now_ms);
            if self.senders.len() >= self.max_senders {
                return Err(SealError::TooManySenders);
            }
        }
        let window = self.senders.entry(sender).or_insert(ReplayWindow {
            highest: 0,
            below: 0,
            newest_ms: sent_ms,
        });
        if sequence > window.highest {
            let shift = sequence - window.highest;
            window.below = if shift > REORDER_WINDOW {
                0
            } else {
                // The old highest becomes bit `shift - 1`.
                let moved = window.below.checked_shl(shift as u32).unwrap_or(0);
                moved | (1u64 << (shift - 1))
            };
            window.highest = sequence;
        } else {
            let behind = window.highest - sequence;
            if behind == 0 || behind > REORDER_WINDOW {
                return Err(SealError::Replay);
            }
            let bit = 1u64 << (behind - 1);
            if window.below & bit != 0 {
                return Err(SealError::Replay);
            }
            window.below |= bit;
        }
        window.newest_ms = window.newest_ms.max(sent_ms);
        Ok(())
    }

    /// Drops senders whose every datagram is now too old to be accepted anyway.
    fn forget_quiet_senders(&mut self, now_ms: u64) {
        let window_ms = self.window_ms;
        self.senders
            .retain(|_, w| now_ms.saturating_sub(w.newest_ms) <= window_ms);
    }

    /// Senders currently remembered.
    pub fn senders(&self) -> usize {
        self.senders.len()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const KEY: [u8; 32] = [7; 32];
    const WINDOW: u64 = 30_000;
    const NOW: u64 = 1_800_000_000_000;

    fn pair() -> (DatagramSeal, DatagramSeal) {
        (
            DatagramSeal::new(KEY, 1, WINDOW, 16),
            DatagramSeal::new(KEY, 2, WINDOW, 16),
        )
    }

    fn sealed(sender: &mut DatagramSeal, at: u64, payload: &[u8]) -> Vec<u8> {
        let mut out = Vec::new();
        sender.seal(at, payload, &mut out);
        out
    }

    #[test]
    fn a_sealed_datagram_opens_once() {
        let (mut a, mut b) = pair();
        let d = sealed(&mut a, NOW, b"chitchat bytes");
        assert_eq!(d.len(), SEAL_OVERHEAD + 14);
        assert_eq!(b.open(NOW + 5, &d), Ok(&b"chitchat bytes"[..]));
        assert_eq!(b.open(NOW + 6, &d), Err(SealError::Replay));
        // An empty payload is sealed too.
        let empty = sealed(&mut a, NOW, b"");
        assert_eq!(b.open(NOW, &empty), Ok(&b""[..]));
    }

    #[test]
    fn every_flipped_bit_is_refused() {
        let (mut a, _) = pair();
        let d = sealed(&mut a, NOW, b"payload");
        for byte in 0..d.len() {
            for bit in 0..8 {
                let mut b = DatagramSeal::new(KEY, 2, WINDOW, 16);
                let mut bad = d.clone();
                bad[byte] ^= 1 << bit;
                assert_eq!(b.open(NOW, &bad), Err(SealError::BadMac), "byte {byte}");
                assert_eq!(b.senders(), 0, "a refused datagram leaves no state");
            }
        }
    }

    #[test]
    fn another_key_garbage_and_short_datagrams_are_refused() {
        let (_, mut b) = pair();
        let mut stranger = DatagramSeal::new([8; 32], 3, WINDOW, 16);
        let d = sealed(&mut stranger, NOW, b"payload");
        assert_eq!(b.open(NOW, &d), Err(SealError::BadMac));
        assert_eq!(b.open(NOW, &[0u8; 200]), Err(SealError::BadMac));
        assert_eq!(
            b.open(NOW, &[0u8; SEAL_OVERHEAD - 1]),
            Err(SealError::Short)
        );
        assert_eq!(b.open(NOW, &[]), Err(SealError::Short));
        assert_eq!(b.senders(), 0);
    }

    #[test]
    fn too_old_and_too_new_are_refused() {
        let (mut a, mut b) = pair();
        let old = sealed(&mut a, NOW - WINDOW - 1, b"x");
        assert_eq!(b.open(NOW, &old), Err(SealError::Stale));
        let future = sealed(&mut a, NOW + WINDOW + 1, b"x");
        assert_eq!(b.open(NOW, &future), Err(SealError::Stale));
        let edge = sealed(&mut a, NOW - WINDOW, b"x");
        assert!(b.open(NOW, &edge).is_ok());
    }

    #[test]
    fn reordering_within_the_window_is_accepted_once() {
        let (mut a, mut b) = pair();
        let ds: Vec<Vec<u8>> = (0..70).map(|_| sealed(&mut a, NOW, b"x")).collect();
        // Sequences 1..=70; deliver 70 first, then the rest backwards.
        assert!(b.open(NOW, &ds[69]).is_ok());
        for (i, d) in ds.iter().enumerate().take(69).rev() {
            let sequence = i as u64 + 1;
            let result = b.open(NOW, d);
            if 70 - sequence <= REORDER_WINDOW {
                assert!(result.is_ok(), "sequence {sequence}");
                assert_eq!(b.open(NOW, d), Err(SealError::Replay));
            } else {
                assert_eq!(result, Err(SealError::Replay), "sequence {sequence}");
            }
        }
    }

    #[test]
    fn own_datagrams_are_refused() {
        let (mut a, _) = pair();
        let d = sealed(&mut a, NOW, b"x");
        assert_eq!(a.open(NOW, &d), Err(SealError::Own));
    }

    #[test]
    fn a_restarted_sender_is_not_a_replay_and_old_senders_are_forgotten_safely() {
        let mut b = DatagramSeal::new(KEY, 2, WINDOW, 2);
        let mut first = DatagramSeal::new(KEY, 10, WINDOW, 2);
        let captured = sealed(&mut first, NOW, b"x");
        assert!(b.open(NOW, &captured).is_ok());
        // The same peer restarted: a new sender number, sequences from 1 again.
        let mut second = DatagramSeal::new(KEY, 11, WINDOW, 2);
        assert!(b.open(NOW + 1, &sealed(&mut second, NOW + 1, b"x")).is_ok());
        // The table is full: a third sender is refused while both are within the window...
        let mut third = DatagramSeal::new(KEY, 12, WINDOW, 2);
        let late = NOW + WINDOW;
        assert_eq!(
            b.open(late, &sealed(&mut third, late, b"x")),
            Err(SealError::TooManySenders)
        );
        // ...and admitted once the first has gone quiet for a window, which cannot re-admit
        // the first's captured datagram: it is too old by then.
        let later = NOW + WINDOW + 1;
        assert!(b.open(later, &sealed(&mut third, later, b"x")).is_ok());
        assert_eq!(b.open(later, &captured), Err(SealError::Stale));
    }
}
