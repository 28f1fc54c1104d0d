//! Small value types shared by the core: peer names, request ids, trace ids, quorum levels.
//!
//! They carry no behaviour beyond parsing and display, so every other core module can depend on
//! this one without creating cycles.

use serde::{Deserialize, Serialize};
use std::fmt;
use std::str::FromStr;
use std::sync::Arc;
use thiserror::Error;

/// A peer's name, unique in the cluster and stable across its restarts (e.g. `"A"`).
///
/// Shared, not owned: the core copies peer names into every request in flight, answer map
/// and message, and a copy is a reference count rather than an allocation and a `memcpy`.
/// Encoded as a plain string (serde's `rc`), so the wire format is that of a `String`.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub struct NodeId(Arc<str>);

impl NodeId {
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl From<&str> for NodeId {
    fn from(s: &str) -> Self {
        NodeId(Arc::from(s))
    }
}

impl From<String> for NodeId {
    fn from(s: String) -> Self {
        NodeId(Arc::from(s))
    }
}

impl fmt::Display for NodeId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

/// Milliseconds on the clock the driver feeds the core (wall clock in the shell, simulated
/// time in the simulator). The core compares and adds these, never reads a clock itself.
pub type Millis = u64;

/// Identifies a client request between the driver and the core.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub struct ClientRequestId(pub u64);

/// Names one client request wherever it goes, so the log lines of the peer it arrived at and
/// of every replica it reached can be joined (`X-Request-Id` over HTTP).
///
/// The API layer makes one per request (or takes the client's); the core never makes one (it
/// draws no randomness) but passes it on: every peer message sent on the request's behalf
/// carries it, and the replicas' answers carry it back. It labels, and never changes, what a
/// node does.
///
/// Invariant: 1 to [`TraceId::MAX_LEN`] bytes of ASCII letters, digits and `-_.:`, so it is
/// safe to echo in a header and a log line. Deserializing checks it like [`TraceId::parse`].
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct TraceId(Arc<str>);

#[derive(Debug, Error, PartialEq, Eq)]
#[error("a trace id is 1 to {max} ASCII letters, digits and `-_.:`", max = TraceId::MAX_LEN)]
pub struct BadTraceId;

impl TraceId {
    /// The longest trace id accepted, in bytes.
    pub const MAX_LEN: usize = 64;

    /// `s` as a trace id, if it is one (see the type's invariant).
    pub fn parse(s: &str) -> Result<TraceId, BadTraceId> {
        let allowed = |b: u8| b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'.' | b':');
        if s.is_empty() || s.len() > Self::MAX_LEN || !s.bytes().all(allowed) {
            return Err(BadTraceId);
        }
        Ok(TraceId(s.into()))
    }

    /// `n` as sixteen lowercase hex digits, always a trace id (one allocation, no parse).
    pub fn hex(n: u64) -> TraceId {
        const DIGITS: &[u8; 16] = b"0123456789abcdef";
        let mut digits = [0u8; 16];
        for (i, digit) in digits.iter_mut().enumerate() {
            *digit = DIGITS[((n >> (60 - 4 * i)) & 0xf) as usize];
        }
        TraceId(std::str::from_utf8(&digits).expect("hex digits").into())
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl fmt::Display for TraceId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl Serialize for TraceId {
    fn serialize<S: serde::Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.serialize_str(&self.0)
    }
}

impl<'de> Deserialize<'de> for TraceId {
    fn deserialize<D: serde::Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        let s = String::deserialize(deserializer)?;
        TraceId::parse(&s).map_err(serde::de::Error::custom)
    }
}

/// How many replicas must answer: a number, or a name resolved against N.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum Quorum {
    One,
    Quorum,
    All,
    Exactly(usize),
}

#[derive(Debug, Error, PartialEq, Eq)]
#[error("quorum must be `one`, `quorum`, `all` or a positive number, got {0:?}")]
pub struct BadQuorum(pub String);

impl Quorum {
    /// The number of replicas this level needs when a key has `n` replicas.
    pub fn resolve(self, n: usize) -> usize {
        match self {
            Quorum::One => 1,
            Quorum::Quorum => n / 2 + 1,
            Quorum::All => n,
            Quorum::Exactly(k) => k,
        }
    }
}

impl FromStr for Quorum {
    type Err = BadQuorum;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s.to_ascii_lowercase().as_str() {
            "one" => Ok(Quorum::One),
            "quorum" => Ok(Quorum::Quorum),
            "all" => Ok(Quorum::All),
            other => match other.parse::<usize>() {
                Ok(k) if k > 0 => Ok(Quorum::Exactly(k)),
                _ => Err(BadQuorum(s.to_string())),
            },
        }
    }
}

impl fmt::Display for Quorum {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Quorum::One => f.write_str("one"),
            Quorum::Quorum => f.write_str("quorum"),
            Quorum::All => f.write_str("all"),
            Quorum::Exactly(k) => write!(f, "{k}"),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn quorum_names_resolve_against_n() {
        assert_eq!("one".parse::<Quorum>().unwrap().resolve(3), 1);
        assert_eq!("QUORUM".parse::<Quorum>().unwrap().resolve(3), 2);
        assert_eq!("quorum".parse::<Quorum>().unwrap().resolve(5), 3);
        assert_eq!("all".parse::<Quorum>().unwrap().resolve(3), 3);
        assert_eq!("2".parse::<Quorum>().unwrap().resolve(3), 2);
        assert!("0".parse::<Quorum>().is_err());
        assert!("most".parse::<Quorum>().is_err());
    }

    #[test]
    fn a_number_makes_the_trace_id_of_its_sixteen_hex_digits() {
        for n in [0, 0xabc, 0x0123_4567_89ab_cdef, u64::MAX] {
            let id = TraceId::hex(n);
            assert_eq!(id, TraceId::parse(&format!("{n:016x}")).unwrap());
        }
    }

    #[test]
    fn trace_ids_are_short_and_plain() {
        for good in ["a", "4bf92f3577b34da6", "req-42_x.y:z", &"x".repeat(64)] {
            assert_eq!(TraceId::parse(good).unwrap().as_str(), good);
        }
        for bad in ["", &"x".repeat(65), "a b", "a\nb", "é", "a\"b", "{}"] {
            assert_eq!(TraceId::parse(bad), Err(BadTraceId), "{bad:?}");
        }
    }

    #[test]
    fn a_decoded_trace_id_is_checked_like_a_parsed_one() {
        let config = bincode::config::standard();
        let good = TraceId::parse("abc").unwrap();
        let bytes = bincode::serde::encode_to_vec(&good, config).unwrap();
        let (back, _): (TraceId, usize) =
            bincode::serde::decode_from_slice(&bytes, config).unwrap();
        assert_eq!(back, good);
        let bytes = bincode::serde::encode_to_vec("a b", config).unwrap();
        assert!(bincode::serde::decode_from_slice::<TraceId, _>(&bytes, config).is_err());
    }
}
