//! What a member's gossip entry must be for this peer to believe it: a membership tag that
//! verifies, and a size within the bounds.
//!
//! Why apart from [`crate::shell::gossip`]: these are pure checks of one entry, with no
//! chitchat instance, clock or socket behind them, so they can be read and tested alone.
//!
//! Promises: [`member_tag`] binds a member's name, generation, gossip address and published
//! addresses to the cluster's gossip key, and tags are compared in constant time;
//! [`check_entry_size`] stops reading an entry as soon as it passes a bound, so an entry of a
//! million key-values costs no more to refuse than one just over the bound.

use chitchat::{ChitchatId, NodeState};
use thiserror::Error;

use crate::shell::gossip::{KEY_HTTP_ADDR, KEY_PEER_ADDR, KEY_TAG};

/// The MAC a member publishes to prove it holds the cluster secret.
pub fn member_tag(
    gossip_key: &[u8; 32],
    id: &ChitchatId,
    peer_addr: &str,
    http_addr: &str,
) -> String {
    let text = format!(
        "{}\n{}\n{}\n{peer_addr}\n{http_addr}",
        id.node_id, id.generation_id, id.gossip_advertise_addr
    );
    blake3::keyed_hash(gossip_key, text.as_bytes())
        .to_hex()
        .to_string()
}

pub(crate) fn tag_is_valid(gossip_key: &[u8; 32], id: &ChitchatId, state: &NodeState) -> bool {
    let (Some(peer), Some(http), Some(tag)) = (
        state.get(KEY_PEER_ADDR),
        state.get(KEY_HTTP_ADDR),
        state.get(KEY_TAG),
    ) else {
        return false;
    };
    let expected = member_tag(gossip_key, id, peer, http);
    // Compare as blake3 hashes: their equality is constant-time.
    match (
        blake3::Hash::from_hex(tag),
        blake3::Hash::from_hex(&expected),
    ) {
        (Ok(a), Ok(b)) => a == b,
        _ => false,
    }
}

/// How much a member's gossip entry holds, when it holds more than a member may publish.
#[derive(Clone, Copy, Debug, Error, PartialEq, Eq)]
#[error("gossip entry of {keys} key-values and {bytes} bytes (at most {max_keys} and {max_bytes})")]
pub struct EntryTooLarge {
    pub keys: usize,
    pub bytes: usize,
    pub max_keys: usize,
    pub max_bytes: usize,
}

/// Checks a member's live key-values against the bounds, stopping as soon as one is passed
/// (so an entry of a million keys costs no more than the bound to refuse).
pub fn check_entry_size<'a>(
    key_values: impl Iterator<Item = (&'a str, &'a str)>,
    max_keys: usize,
    max_bytes: usize,
) -> Result<(), EntryTooLarge> {
    let (mut keys, mut bytes) = (0usize, 0usize);
    for (key, value) in key_values {
        keys += 1;
        bytes = bytes.saturating_add(key.len() + value.len());
        if keys > max_keys || bytes > max_bytes {
            return Err(EntryTooLarge {
                keys,
                bytes,
                max_keys,
                max_bytes,
            });
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tags_bind_the_member_to_the_secret_and_its_addresses() {
        let id = ChitchatId::new("A", 7, ([127, 0, 0, 1], 7000).into());
        let key = [1u8; 32];
        let tag = member_tag(&key, &id, "127.0.0.1:7100", "127.0.0.1:7070");
        assert_eq!(
            tag,
            member_tag(&key, &id, "127.0.0.1:7100", "127.0.0.1:7070")
        );
        assert_ne!(
            tag,
            member_tag(&[2u8; 32], &id, "127.0.0.1:7100", "127.0.0.1:7070")
        );
        assert_ne!(
            tag,
            member_tag(&key, &id, "127.0.0.1:9999", "127.0.0.1:7070")
        );
        let other = ChitchatId::new("B", 7, ([127, 0, 0, 1], 7000).into());
        assert_ne!(
            tag,
            member_tag(&key, &other, "127.0.0.1:7100", "127.0.0.1:7070")
        );
    }

    #[test]
    fn entries_over_the_key_or_byte_bound_are_refused() {
        let own = [
            ("member_tag", "0123456789abcdef"),
            ("peer_addr", "127.0.0.1:7100"),
            ("http_addr", "127.0.0.1:7070"),
        ];
        assert_eq!(check_entry_size(own.iter().copied(), 3, 100), Ok(()));
        let too_many = check_entry_size(own.iter().copied(), 2, 100).unwrap_err();
        assert_eq!((too_many.keys, too_many.max_keys), (3, 2));
        let too_big = check_entry_size(own.iter().copied(), 3, 40).unwrap_err();
        assert!(too_big.bytes > 40, "{too_big}");
        // A huge entry is refused as soon as it passes the bound, not after reading it all.
        let mut read = 0;
        let endless = std::iter::repeat(("k", "v")).inspect(|_| read += 1);
        assert!(check_entry_size(endless.take(1_000_000), 16, 4096).is_err());
        assert_eq!(read, 17);
    }
}
