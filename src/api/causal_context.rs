//! The causal context as clients carry it: an opaque, URL-safe token in `X-Causal-Context`,
//! authenticated by the cluster.
//!
//! Token = base64url (no padding) of `version byte || bincode(version vector) || MAC`, where the
//! MAC is a keyed BLAKE3 hash (32 bytes) over the version byte and the encoded vector, under the
//! cluster's context key (`ClusterSecret::context_key`, derived from the cluster secret). Every
//! peer holds the same key, so a token any peer issued is accepted by every peer; a token the
//! cluster did not issue (forged, altered, truncated, from a cluster with another secret, or in
//! the old unauthenticated format) is refused with 400 before it reaches the core.
//!
//! Why: the coordinator merges a write's context into the key's clock and mints the next dot
//! above it. A forged context with huge counters would push the clock to the top of the counter
//! range and make later writes unreadable; a forged context naming dots the cluster never
//! minted would discard siblings nobody read. A client can now only send back a context the
//! cluster handed out. The token is signed, not encrypted: its contents (actor names and
//! counters) are readable by the client, as before.
//!
//! Defense in depth: even an authenticated context is refused if a counter exceeds
//! [`MAX_CONTEXT_COUNTER`] (2^62, more writes to one key than any cluster will see), so no
//! context can bring a clock near `u64::MAX` (the core also never wraps: `Siblings::update`).
//!
//! Clients must treat the token as opaque: read it from a response, send it back on the next
//! write of the same key, to any peer of the same cluster.

use crate::core::version_vector::VersionVector;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::Engine;
use thiserror::Error;

pub const HEADER: &str = "x-causal-context";
const MAX_TOKEN_BYTES: usize = 64 * 1024;
/// The token format this build issues and accepts.
const VERSION: u8 = 1;
const MAC_BYTES: usize = blake3::OUT_LEN;
/// The largest counter an accepted context may carry (2^62): far beyond any real history of a
/// key, and far below `u64::MAX`, so no context can push a clock to where counters run out.
pub const MAX_CONTEXT_COUNTER: u64 = 1 << 62;

/// The cluster's MAC key for context tokens (from `ClusterSecret::context_key`).
#[derive(Clone)]
pub struct ContextKey([u8; 32]);

impl ContextKey {
    pub fn new(key: [u8; 32]) -> Self {
        Self(key)
    }

    fn mac(&self, signed: &[u8]) -> blake3::Hash {
        blake3::keyed_hash(&self.0, signed)
    }
}

impl std::fmt::Debug for ContextKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("ContextKey(<redacted>)")
    }
}

#[derive(Clone, Debug, Error, PartialEq, Eq)]
pub enum BadContext {
    /// Not a token this cluster issued: refused whatever it says.
    #[error(
        "causal context not issued by this cluster ({0}); send back a context a peer of this \
         cluster returned, or none"
    )]
    NotIssued(&'static str),
    #[error("malformed causal context: {0}")]
    Malformed(String),
    #[error("causal context counter {0} is above the limit of {MAX_CONTEXT_COUNTER}")]
    CounterTooLarge(u64),
}

pub fn encode(context: &VersionVector, key: &ContextKey) -> String {
    let mut bytes = vec![VERSION];
    bincode::serde::encode_into_std_write(context, &mut bytes, bincode::config::standard())
        .expect("version vectors always encode");
    let mac = key.mac(&bytes);
    bytes.extend_from_slice(mac.as_bytes());
    URL_SAFE_NO_PAD.encode(bytes)
}

pub fn decode(token: &str, key: &ContextKey) -> Result<VersionVector, BadContext> {
    if token.len() > MAX_TOKEN_BYTES {
        return Err(BadContext::Malformed("too long".into()));
    }
    let bytes = URL_SAFE_NO_PAD
        .decode(token.trim())
        .map_err(|e| BadContext::Malformed(e.to_string()))?;
    if bytes.len() < 1 + MAC_BYTES {
        return Err(BadContext::NotIssued("too short"));
    }
    let (signed, mac) = bytes.split_at(bytes.len() - MAC_BYTES);
    let mac: [u8; MAC_BYTES] = mac.try_into().expect("split at MAC_BYTES from the end");
    // `blake3::Hash` equality is constant-time: the comparison leaks no prefix of the MAC.
    if blake3::Hash::from_bytes(mac) != key.mac(signed) {
        return Err(BadContext::NotIssued("authentication failed"));
    }
    if signed[0] != VERSION {
        return Err(BadContext::NotIssued("unknown token version"));
    }
    let body = &signed[1..];
    let config = bincode::config::standard().with_limit::<MAX_TOKEN_BYTES>();
    let (context, used): (VersionVector, usize) =
        bincode::serde::decode_from_slice(body, config)
            .map_err(|e| BadContext::Malformed(e.to_string()))?;
    if used != body.len() {
        return Err(BadContext::Malformed("trailing bytes".into()));
    }
    if let Some(counter) = context
        .iter()
        .map(|(_, c)| c)
        .find(|c| *c > MAX_CONTEXT_COUNTER)
    {
        return Err(BadContext::CounterTooLarge(counter));
    }
    Ok(context)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::core::version_vector::Actor;

    fn key(seed: u8) -> ContextKey {
        ContextKey::new([seed; 32])
    }

    fn vv() -> VersionVector {
        [(Actor("A.1".into()), 3), (Actor("B.2".into()), 1)]
            .into_iter()
            .collect()
    }

    fn not_issued(result: Result<VersionVector, BadContext>) -> bool {
        matches!(result, Err(BadContext::NotIssued(_)))
    }

    #[test]
    fn round_trip_and_rejects_garbage() {
        let k = key(7);
        assert_eq!(decode(&encode(&vv(), &k), &k).unwrap(), vv());
        assert_eq!(
            decode(&encode(&VersionVector::new(), &k), &k).unwrap(),
            VersionVector::new()
        );
        assert!(decode("not base64 !!", &k).is_err());
        assert!(decode("AAAAAAAA", &k).is_err());
        assert!(decode(&"A".repeat(MAX_TOKEN_BYTES + 1), &k).is_err());
    }

    #[test]
    fn every_single_bit_flip_is_refused() {
        let k = key(7);
        let bytes = URL_SAFE_NO_PAD.decode(encode(&vv(), &k)).unwrap();
        for i in 0..bytes.len() * 8 {
            let mut flipped = bytes.clone();
            flipped[i / 8] ^= 1 << (i % 8);
            let token = URL_SAFE_NO_PAD.encode(&flipped);
            assert!(
                not_issued(decode(&token, &k)),
                "bit {i} flipped was accepted"
            );
        }
    }

    #[test]
    fn a_token_of_another_cluster_is_refused() {
        let token = encode(&vv(), &key(8));
        let refused = decode(&token, &key(7));
        assert!(not_issued(refused.clone()), "{refused:?}");
        assert!(refused
            .unwrap_err()
            .to_string()
            .contains("not issued by this cluster"));
    }

    #[test]
    fn every_truncation_is_refused() {
        let k = key(7);
        let bytes = URL_SAFE_NO_PAD.decode(encode(&vv(), &k)).unwrap();
        for len in 0..bytes.len() {
            let token = URL_SAFE_NO_PAD.encode(&bytes[..len]);
            assert!(
                decode(&token, &k).is_err(),
                "a {len}-byte prefix was accepted"
            );
        }
        // Also cut inside the base64 text (a token cut at any character).
        let token = encode(&vv(), &k);
        for len in 0..token.len() {
            assert!(decode(&token[..len], &k).is_err(), "{len} chars accepted");
        }
    }

    /// The format before tokens were authenticated: base64url of the bare bincode vector.
    #[test]
    fn an_old_unauthenticated_token_is_refused() {
        let k = key(7);
        let forged: VersionVector = [(Actor("A.1".into()), u64::MAX)].into_iter().collect();
        for context in [vv(), forged, VersionVector::new()] {
            let old = URL_SAFE_NO_PAD.encode(
                bincode::serde::encode_to_vec(&context, bincode::config::standard()).unwrap(),
            );
            assert!(
                decode(&old, &k).is_err(),
                "old token of {context:?} accepted"
            );
        }
    }

    #[test]
    fn another_version_byte_is_refused_even_with_a_valid_mac() {
        let k = key(7);
        let mut signed = vec![VERSION + 1];
        bincode::serde::encode_into_std_write(vv(), &mut signed, bincode::config::standard())
            .unwrap();
        let mac = k.mac(&signed);
        signed.extend_from_slice(mac.as_bytes());
        let token = URL_SAFE_NO_PAD.encode(signed);
        assert_eq!(
            decode(&token, &k),
            Err(BadContext::NotIssued("unknown token version"))
        );
    }

    #[test]
    fn counters_above_the_bound_are_refused_even_when_authenticated() {
        let k = key(7);
        let at: VersionVector = [(Actor("A.1".into()), MAX_CONTEXT_COUNTER)]
            .into_iter()
            .collect();
        assert_eq!(decode(&encode(&at, &k), &k).unwrap(), at);
        let above: VersionVector = [(Actor("A.1".into()), u64::MAX)].into_iter().collect();
        assert_eq!(
            decode(&encode(&above, &k), &k),
            Err(BadContext::CounterTooLarge(u64::MAX))
        );
    }
}
