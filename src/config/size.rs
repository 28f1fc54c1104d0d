//! Byte sizes as people write them (`512MiB`, `2GiB`, `100MB`, `1000`), for flags and for the
//! config file alike.
//!
//! # Promises
//! - [`ByteSize`] and [`MemoryLimit`] parse from the same text on the command line and in a
//!   TOML file (where a bare integer is a number of bytes too), and print back as text that
//!   parses to the same value: `config print` output is a valid config file.
//! - A size is never zero: `0` is refused, except as a [`MemoryLimit`], where it means no limit.

use serde::{Deserialize, Deserializer, Serialize, Serializer};
use std::fmt;
use std::str::FromStr;

/// Why a text is not a size.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum SizeError {
    #[error("{0:?} is not a size (e.g. 512MiB)")]
    NotASize(String),
    #[error("unknown size unit {unit:?} in {input:?} (use B, KB, KiB, MB, MiB, GB or GiB)")]
    UnknownUnit { unit: String, input: String },
    #[error("{0:?} is not a usable size (zero, or too large)")]
    Unusable(String),
}

/// A number of bytes, at least one.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub struct ByteSize(pub u64);

impl ByteSize {
    pub fn bytes(self) -> u64 {
        self.0
    }
}

const UNITS: [(&str, u64); 3] = [("GiB", 1 << 30), ("MiB", 1 << 20), ("KiB", 1 << 10)];

impl FromStr for ByteSize {
    type Err = SizeError;

    /// Parses `512MiB`, `2GiB`, `100MB`, `64KiB`, `1000` (bytes).
    fn from_str(s: &str) -> Result<Self, SizeError> {
        let t = s.trim();
        let split = t.find(|c: char| !c.is_ascii_digit()).unwrap_or(t.len());
        let (digits, unit) = t.split_at(split);
        let n: u64 = digits
            .parse()
            .map_err(|_| SizeError::NotASize(s.to_string()))?;
        let factor: u64 = match unit.trim().to_ascii_lowercase().as_str() {
            "" | "b" => 1,
            "kb" => 1_000,
            "kib" | "k" => 1 << 10,
            "mb" => 1_000_000,
            "mib" | "m" => 1 << 20,
            "gb" => 1_000_000_000,
            "gib" | "g" => 1 << 30,
            other => {
                return Err(SizeError::UnknownUnit {
                    unit: other.to_string(),
                    input: s.to_string(),
                })
            }
        };
        n.checked_mul(factor)
            .filter(|b| *b > 0)
            .map(ByteSize)
            .ok_or_else(|| SizeError::Unusable(s.to_string()))
    }
}

impl fmt::Display for ByteSize {
    /// The largest binary unit that divides the size exactly, so it parses back unchanged.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for (unit, factor) in UNITS {
            if self.0 % factor == 0 {
                return write!(f, "{}{unit}", self.0 / factor);
            }
        }
        write!(f, "{}", self.0)
    }
}

impl Serialize for ByteSize {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.collect_str(self)
    }
}

impl<'de> Deserialize<'de> for ByteSize {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        match TextOrBytes::deserialize(d)? {
            TextOrBytes::Text(t) => t.parse().map_err(serde::de::Error::custom),
            TextOrBytes::Bytes(0) => Err(serde::de::Error::custom("a size must not be zero")),
            TextOrBytes::Bytes(n) => Ok(ByteSize(n)),
        }
    }
}

/// In a file, a size is text with a unit or a bare number of bytes.
#[derive(Deserialize)]
#[serde(
    untagged,
    expecting = "a size: a number of bytes or text such as \"512MiB\""
)]
enum TextOrBytes {
    Text(String),
    Bytes(u64),
}

/// A store's memory limit (`--max-memory`): a size, or none at all.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum MemoryLimit {
    Unlimited,
    Bytes(ByteSize),
}

impl FromStr for MemoryLimit {
    type Err = SizeError;

    /// `none`, `unlimited` or `0` for no limit, else a size.
    fn from_str(s: &str) -> Result<Self, SizeError> {
        match s.trim().to_ascii_lowercase().as_str() {
            "none" | "unlimited" | "0" => Ok(MemoryLimit::Unlimited),
            _ => s.parse().map(MemoryLimit::Bytes),
        }
    }
}

impl fmt::Display for MemoryLimit {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            MemoryLimit::Unlimited => f.write_str("none"),
            MemoryLimit::Bytes(b) => b.fmt(f),
        }
    }
}

impl Serialize for MemoryLimit {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.collect_str(self)
    }
}

impl<'de> Deserialize<'de> for MemoryLimit {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        match TextOrBytes::deserialize(d)? {
            TextOrBytes::Text(t) => t.parse().map_err(serde::de::Error::custom),
            TextOrBytes::Bytes(0) => Ok(MemoryLimit::Unlimited),
            TextOrBytes::Bytes(n) => Ok(MemoryLimit::Bytes(ByteSize(n))),
        }
    }
}

/// The memory this process may use: the machine's (`MemTotal` of /proc/meminfo), or its
/// cgroup's limit when lower. `None` when neither can be read.
pub fn machine_memory_bytes() -> Option<u64> {
    let meminfo = std::fs::read_to_string("/proc/meminfo").ok()?;
    let total_kib: u64 = meminfo
        .lines()
        .find_map(|l| l.strip_prefix("MemTotal:"))?
        .trim()
        .trim_end_matches("kB")
        .trim()
        .parse()
        .ok()?;
    let total = total_kib.checked_mul(1024)?;
    // cgroup v2 says `max` for no limit; v1's "no limit" is a huge number, which min() drops.
    let cgroup = [
        "/sys/fs/cgroup/memory.max",
        "/sys/fs/cgroup/memory/memory.limit_in_bytes",
    ]
    .iter()
    .find_map(|p| std::fs::read_to_string(p).ok()?.trim().parse::<u64>().ok());
    Some(cgroup.map_or(total, |c| c.min(total)))
}

/// The share of the machine's memory a peer's store takes by default.
pub const DEFAULT_MEMORY_SHARE: u64 = 2;

/// The store's memory limit: the one given, or by default half of what the machine has, and a
/// log line saying which and how to change it.
pub fn memory_limit(given: Option<MemoryLimit>) -> Option<u64> {
    match given {
        Some(MemoryLimit::Bytes(b)) => {
            tracing::info!("store memory limit: {b} (max-memory)");
            Some(b.bytes())
        }
        Some(MemoryLimit::Unlimited) => {
            tracing::info!("store memory limit: none (max-memory = none)");
            None
        }
        None => match machine_memory_bytes() {
            Some(machine) => {
                let limit = machine / DEFAULT_MEMORY_SHARE;
                tracing::info!(
                    "store memory limit: {} MiB, half of this machine's {} MiB; change it with \
                     --max-memory SIZE (e.g. 2GiB) or --max-memory none",
                    limit >> 20,
                    machine >> 20
                );
                Some(limit)
            }
            None => {
                tracing::warn!(
                    "store memory limit: none (the machine's memory could not be read from \
                     /proc/meminfo); set one with --max-memory SIZE"
                );
                None
            }
        },
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn size(s: &str) -> Result<u64, SizeError> {
        s.parse::<ByteSize>().map(ByteSize::bytes)
    }

    #[test]
    fn sizes_parse_with_and_without_units() {
        assert_eq!(size("1000"), Ok(1000));
        assert_eq!(size("64KiB"), Ok(64 * 1024));
        assert_eq!(size("512MiB"), Ok(512 << 20));
        assert_eq!(size("2GiB"), Ok(2 << 30));
        assert_eq!(size("100MB"), Ok(100_000_000));
        assert!(size("12 parsecs").is_err());
        assert!(size("MiB").is_err());
        assert!(size("0").is_err());
    }

    #[test]
    fn a_memory_limit_is_a_size_or_none() {
        assert_eq!("none".parse(), Ok(MemoryLimit::Unlimited));
        assert_eq!("0".parse(), Ok(MemoryLimit::Unlimited));
        assert_eq!("1GiB".parse(), Ok(MemoryLimit::Bytes(ByteSize(1 << 30))));
        assert!("lots".parse::<MemoryLimit>().is_err());
        assert!(machine_memory_bytes().is_some_and(|m| m > 0));
    }

    #[test]
    fn sizes_print_as_text_that_parses_back_to_the_same_size() {
        for n in [
            1,
            1000,
            1024,
            1536,
            64 << 20,
            100_000_000,
            3 << 30,
            u64::MAX,
        ] {
            let printed = ByteSize(n).to_string();
            assert_eq!(size(&printed), Ok(n), "{printed}");
        }
        assert_eq!(ByteSize(64 << 20).to_string(), "64MiB");
        for limit in [
            MemoryLimit::Unlimited,
            MemoryLimit::Bytes(ByteSize(5 << 20)),
        ] {
            assert_eq!(limit.to_string().parse(), Ok(limit));
        }
    }

    #[test]
    fn in_a_file_a_size_is_text_or_a_number_of_bytes() {
        #[derive(Deserialize)]
        struct T {
            s: ByteSize,
            m: MemoryLimit,
        }
        let t: T = toml::from_str("s = \"2MiB\"\nm = 0").unwrap();
        assert_eq!((t.s, t.m), (ByteSize(2 << 20), MemoryLimit::Unlimited));
        let t: T = toml::from_str("s = 4096\nm = \"none\"").unwrap();
        assert_eq!(t.s, ByteSize(4096));
        assert!(toml::from_str::<T>("s = 0\nm = 1").is_err());
        assert!(toml::from_str::<T>("s = true\nm = 1").is_err());
    }
}
