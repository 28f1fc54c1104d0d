//! [`SeedAddr`]: a gossip address a peer joins the cluster through, as `IP:port` or as
//! `host:port`.
//!
//! Why names: across hosts, peers' addresses are often known only by name — a Kubernetes
//! StatefulSet's pods get a new IP at every restart, but a headless Service's DNS name lists
//! every pod, and `peer-0.peers:7000` always names the first. chitchat takes seeds as strings
//! and resolves the ones that are not socket addresses when it starts and again every minute
//! (each name may stand for several peers), so a seed written as a name keeps working while
//! the addresses behind it change.
//!
//! # Promises
//! - A seed is either a socket address (`10.0.0.5:7000`, `[fd00::5]:7000`), kept in its
//!   canonical form, or a host name and a port (`ringcache-peers.cache.svc:7000`). Anything
//!   else — no port, a port of 0 or past 65,535, an empty host, a bare IPv6 address without
//!   brackets, spaces — is refused when the flag or the file is read, not at the first gossip
//!   round.
//! - Its text, printed, parses back to the same seed (`config print` output is a config file).

use serde::{Deserialize, Deserializer, Serialize, Serializer};
use std::fmt;
use std::net::SocketAddr;
use std::str::FromStr;

/// Why a text is not a seed address.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{0:?} is not a seed address: write IP:PORT or HOST:PORT (e.g. 10.0.0.5:7000)")]
pub struct SeedAddrError(String);

/// A gossip address to join through: a socket address, or a host name and port that gossip
/// resolves (again every minute).
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct SeedAddr(String);

impl SeedAddr {
    /// The seed as chitchat takes it.
    pub fn as_str(&self) -> &str {
        &self.0
    }

    /// The socket address, when the seed is one rather than a name.
    pub fn socket_addr(&self) -> Option<SocketAddr> {
        self.0.parse().ok()
    }
}

impl From<SocketAddr> for SeedAddr {
    fn from(addr: SocketAddr) -> Self {
        SeedAddr(addr.to_string())
    }
}

impl FromStr for SeedAddr {
    type Err = SeedAddrError;

    fn from_str(s: &str) -> Result<Self, SeedAddrError> {
        if let Ok(addr) = s.parse::<SocketAddr>() {
            return Ok(addr.into());
        }
        let refuse = || SeedAddrError(s.to_string());
        let (host, port) = s.rsplit_once(':').ok_or_else(refuse)?;
        let port: u16 = port.parse().map_err(|_| refuse())?;
        // A colon left in the host is an IPv6 address without its brackets (or a typo); a
        // host name is letters, digits, dots, dashes and underscores (DNS-SD names use them).
        let is_name = !host.is_empty()
            && host
                .chars()
                .all(|c| c.is_ascii_alphanumeric() || matches!(c, '.' | '-' | '_'));
        if port == 0 || !is_name {
            return Err(refuse());
        }
        Ok(SeedAddr(s.to_string()))
    }
}

impl fmt::Display for SeedAddr {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl Serialize for SeedAddr {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(&self.0)
    }
}

impl<'de> Deserialize<'de> for SeedAddr {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        String::deserialize(d)?
            .parse()
            .map_err(serde::de::Error::custom)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn socket_addresses_and_host_names_with_a_port_are_seeds() {
        for (text, shown) in [
            ("10.0.0.5:7000", "10.0.0.5:7000"),
            ("[fd00::5]:7000", "[fd00::5]:7000"),
            ("[fd00:0::5]:7000", "[fd00::5]:7000"),
            ("ringcache-peers:7000", "ringcache-peers:7000"),
            (
                "ringcache-0.ringcache-peers.cache.svc.cluster.local:7000",
                "ringcache-0.ringcache-peers.cache.svc.cluster.local:7000",
            ),
            ("localhost:1", "localhost:1"),
        ] {
            let seed: SeedAddr = text.parse().unwrap_or_else(|e| panic!("{text}: {e}"));
            assert_eq!(seed.to_string(), shown);
            // Printed, it parses back to the same seed.
            assert_eq!(shown.parse::<SeedAddr>().unwrap(), seed);
        }
        assert_eq!(
            "10.0.0.5:7000".parse::<SeedAddr>().unwrap().socket_addr(),
            Some("10.0.0.5:7000".parse().unwrap())
        );
        assert_eq!(
            "peers:7000".parse::<SeedAddr>().unwrap().socket_addr(),
            None
        );
    }

    #[test]
    fn anything_else_is_refused_naming_it() {
        for text in [
            "",
            "10.0.0.5",
            "peers",
            "peers:",
            ":7000",
            "peers:0",
            "peers:65536",
            "peers:http",
            "fd00::5:7000",
            "fd00::5",
            "two words:7000",
            "http://peers:7000",
        ] {
            let e = text.parse::<SeedAddr>().unwrap_err();
            assert!(e.to_string().contains(&format!("{text:?}")), "{e}");
        }
    }

    #[test]
    fn a_file_spells_a_seed_as_a_string() {
        #[derive(Deserialize, Serialize)]
        struct File {
            seed: Vec<SeedAddr>,
        }
        let file: File = toml::from_str("seed = [\"peers:7000\", \"10.0.0.5:7000\"]").unwrap();
        assert_eq!(file.seed[0].as_str(), "peers:7000");
        let text = toml::to_string(&file).unwrap();
        assert!(text.contains("\"peers:7000\""), "{text}");
        assert!(toml::from_str::<File>("seed = [\"peers\"]").is_err());
    }
}
