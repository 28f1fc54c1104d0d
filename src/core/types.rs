//! Small value types shared by the core: peer names, request ids, quorum levels.
//!
//! They carry no behaviour beyond parsing and display, so every other core module can depend on
//! this one without creating cycles.

use serde::{Deserialize, Serialize};
use std::fmt;
use std::str::FromStr;
use thiserror::Error;

/// A peer's name, unique in the cluster and stable across its restarts (e.g. `"A"`).
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub struct NodeId(String);

impl NodeId {
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl From<&str> for NodeId {
    fn from(s: &str) -> Self {
        NodeId(s.to_string())
    }
}

impl From<String> for NodeId {
    fn from(s: String) -> Self {
        NodeId(s)
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
}
