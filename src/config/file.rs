//! A `serve` config file (`--config FILE`): TOML, one key per `serve` flag.
//!
//! # Promises
//! - A key is its flag's long name without the leading dashes, spelled with dashes
//!   (`peer-addr`, `request-timeout-ms`); values are written as the flag's would be, in TOML
//!   types (`replicas = 3`, `http = "127.0.0.1:7070"`, `max-memory = "512MiB"`, `seed = [...]`,
//!   `sloppy-quorum = true`).
//! - A file is checked whole before anything starts: a key that is not a flag is an error
//!   naming the key and the file (with the flag it most looks like), and so is a value of the
//!   wrong type or form. Nothing in a file is silently ignored.
//! - A file holds settings only; which layer wins is [`super::effective`]'s business.

use super::serve_args::ServeArgs;
use super::ConfigError;
use serde::Deserialize;
use std::path::{Path, PathBuf};

/// A parsed and checked config file.
#[derive(Clone, Debug)]
pub struct ConfigFile {
    path: PathBuf,
    table: toml::Table,
}

impl ConfigFile {
    /// Reads and checks the file at `path`.
    pub fn read(path: &Path) -> Result<ConfigFile, ConfigError> {
        let text = std::fs::read_to_string(path).map_err(|source| ConfigError::Read {
            path: path.to_path_buf(),
            source,
        })?;
        Self::parse(path, &text)
    }

    /// Checks `text` as the contents of the file at `path` (named in errors).
    pub fn parse(path: &Path, text: &str) -> Result<ConfigFile, ConfigError> {
        let table: toml::Table =
            text.parse()
                .map_err(|e: toml::de::Error| ConfigError::Syntax {
                    path: path.to_path_buf(),
                    message: e.to_string().trim_end().to_string(),
                })?;
        let keys = ServeArgs::keys();
        for (key, value) in &table {
            if !keys.contains(key) {
                return Err(ConfigError::UnknownKey {
                    path: path.to_path_buf(),
                    key: key.clone(),
                    hint: hint(key, &keys),
                });
            }
            // Each key alone over the defaults, so an error belongs to exactly this key.
            let one = toml::Table::from_iter([(key.clone(), value.clone())]);
            if let Err(e) = ServeArgs::deserialize(toml::Value::Table(one)) {
                return Err(ConfigError::BadValue {
                    path: path.to_path_buf(),
                    key: key.clone(),
                    message: e.message().trim_end().to_string(),
                });
            }
        }
        Ok(ConfigFile {
            path: path.to_path_buf(),
            table,
        })
    }

    pub fn path(&self) -> &Path {
        &self.path
    }

    /// The keys the file sets, with their values.
    pub fn table(&self) -> &toml::Table {
        &self.table
    }

    /// The file's settings over the defaults, as if no flag or variable were given.
    pub fn args(&self) -> Result<ServeArgs, ConfigError> {
        ServeArgs::deserialize(toml::Value::Table(self.table.clone())).map_err(|e| {
            ConfigError::BadValue {
                path: self.path.clone(),
                key: self.table.keys().next().cloned().unwrap_or_default(),
                message: e.message().to_string(),
            }
        })
    }
}

/// ` (did you mean `peer-addr`?)` for a key close to a known one, else nothing.
fn hint(key: &str, keys: &[String]) -> String {
    let dashed = key.replace('_', "-");
    if keys.contains(&dashed) {
        return format!(" (keys are spelled with dashes: `{dashed}`)");
    }
    keys.iter()
        .map(|k| (edit_distance(key, k), k))
        .filter(|(d, _)| *d <= 3)
        .min()
        .map(|(_, k)| format!(" (did you mean `{k}`?)"))
        .unwrap_or_default()
}

/// Levenshtein distance, over chars.
fn edit_distance(a: &str, b: &str) -> usize {
    let b: Vec<char> = b.chars().collect();
    let mut row: Vec<usize> = (0..=b.len()).collect();
    for (i, ca) in a.chars().enumerate() {
        let mut diagonal = row[0];
        row[0] = i + 1;
        for (j, cb) in b.iter().enumerate() {
            let next = (row[j + 1] + 1)
                .min(row[j] + 1)
                .min(diagonal + usize::from(ca != *cb));
            diagonal = row[j + 1];
            row[j + 1] = next;
        }
    }
    row[b.len()]
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::size::ByteSize;

    fn parse(text: &str) -> Result<ConfigFile, ConfigError> {
        ConfigFile::parse(Path::new("/etc/ringcache.toml"), text)
    }

    #[test]
    fn a_file_sets_values_and_leaves_the_rest_at_their_defaults() {
        let file = parse(
            "id = \"A\"\nreplicas = 2\nhttp = \"127.0.0.1:9999\"\nmax-state-bytes = \"1MiB\"\n\
             seed = [\"127.0.0.1:7000\"]\nsloppy-quorum = true\neviction = \"volatile-ttl\"\n",
        )
        .unwrap();
        let args = file.args().unwrap();
        assert_eq!(args.id.as_deref(), Some("A"));
        assert_eq!(args.replicas, 2);
        assert_eq!(args.http.port(), 9999);
        assert_eq!(args.max_state_bytes, ByteSize(1 << 20));
        assert_eq!(args.seed.len(), 1);
        assert!(args.sloppy_quorum);
        assert_eq!(args.eviction.to_string(), "volatile-ttl");
        assert_eq!(args.partitions, ServeArgs::defaults().partitions);
    }

    #[test]
    fn an_unknown_key_is_an_error_naming_it_and_the_file() {
        let e = parse("replicas = 3\nreplica = 2\n").unwrap_err();
        let text = e.to_string();
        assert!(matches!(&e, ConfigError::UnknownKey { key, .. } if key == "replica"));
        assert!(text.contains("/etc/ringcache.toml"), "{text}");
        assert!(text.contains("`replica`"), "{text}");
        assert!(text.contains("did you mean `replicas`"), "{text}");
        let e = parse("peer_addr = \"127.0.0.1:1\"")
            .unwrap_err()
            .to_string();
        assert!(e.contains("`peer-addr`"), "{e}");
        // Not a flag of serve, though a flag of the CLI.
        assert!(parse("config = \"other.toml\"").is_err());
        assert!(parse("[http]\nport = 1").is_err());
    }

    #[test]
    fn a_value_of_the_wrong_type_is_an_error_naming_the_key() {
        for (text, key) in [
            ("replicas = \"three\"", "replicas"),
            ("http = 7070", "http"),
            ("gossip = \"not an address\"", "gossip"),
            ("max-memory = \"lots\"", "max-memory"),
            ("eviction = \"oldest\"", "eviction"),
            ("sloppy-quorum = \"yes\"", "sloppy-quorum"),
            ("seed = \"127.0.0.1:7000\"", "seed"),
        ] {
            let e = parse(&format!("id = \"A\"\n{text}\n")).unwrap_err();
            assert!(
                matches!(&e, ConfigError::BadValue { key: k, .. } if k == key),
                "{text}: {e:?}"
            );
            let shown = e.to_string();
            assert!(shown.contains(&format!("`{key}`")), "{shown}");
            assert!(shown.contains("/etc/ringcache.toml"), "{shown}");
        }
    }

    #[test]
    fn broken_toml_is_an_error_naming_the_file() {
        let e = parse("replicas = \n").unwrap_err();
        assert!(matches!(e, ConfigError::Syntax { .. }));
        assert!(e.to_string().contains("/etc/ringcache.toml"));
    }

    #[test]
    fn edit_distance_counts_edits() {
        assert_eq!(edit_distance("replica", "replicas"), 1);
        assert_eq!(edit_distance("", "abc"), 3);
        assert_eq!(edit_distance("shards", "shards"), 0);
        assert_eq!(edit_distance("kitten", "sitting"), 3);
    }
}
