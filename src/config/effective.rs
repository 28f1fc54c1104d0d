//! The settings a peer runs with, from its four layers: flags > environment variables >
//! config file > defaults.
//!
//! clap already folds the first two together and fills in defaults, but it cannot see the
//! file, and it does not say which values the user gave. [`EffectiveConfig::resolve`] asks
//! clap where each value came from (`ArgMatches::value_source`): a value from the command line
//! or the environment is kept; otherwise the file's value, if it has one; otherwise the
//! default. So a file can never override a flag or a variable, and an unset key never
//! overrides the file.
//!
//! # Promises
//! - [`EffectiveConfig::to_toml`] prints every key with where its value came from; its output
//!   is itself a valid config file, and with the same flags and environment it resolves to the
//!   same settings.
//! - Secrets (the cluster secret, the client token: see [`ServeArgs::is_secret`]) are never
//!   printed: their lines are comments saying only whether they are set and from where.

use super::file::ConfigFile;
use super::serve_args::ServeArgs;
use super::ConfigError;
use clap::parser::ValueSource;
use serde::Deserialize;
use std::collections::BTreeMap;
use std::fmt;
use std::path::PathBuf;

/// Where a setting's value came from.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Source {
    /// A `--flag` on the command line.
    Flag,
    /// This environment variable.
    Env(String),
    /// The config file.
    File,
    /// Nothing set it: the flag's default, or no value at all for an optional one.
    Default,
}

impl fmt::Display for Source {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Source::Flag => f.write_str("flag"),
            Source::Env(var) => write!(f, "environment {var}"),
            Source::File => f.write_str("file"),
            Source::Default => f.write_str("default"),
        }
    }
}

/// `serve`'s settings after layering, and where each came from.
#[derive(Clone, Debug)]
pub struct EffectiveConfig {
    /// The settings to run with (`config` names the file they were read from, if any).
    pub args: ServeArgs,
    /// The layer each key's value came from, by key.
    pub sources: BTreeMap<String, Source>,
}

impl EffectiveConfig {
    /// Layers `given` (what clap parsed, `matches` its `ArgMatches`) over the file it names
    /// with `--config` (or `RINGCACHE_CONFIG`), if any.
    pub fn resolve(
        given: ServeArgs,
        matches: &clap::ArgMatches,
    ) -> Result<EffectiveConfig, ConfigError> {
        let file = given.config.as_deref().map(ConfigFile::read).transpose()?;
        Self::layer(given, |id| matches.value_source(id), file.as_ref())
    }

    /// The layering itself: `source_of` tells, for each clap id, where clap took its value.
    fn layer(
        given: ServeArgs,
        source_of: impl Fn(&str) -> Option<ValueSource>,
        file: Option<&ConfigFile>,
    ) -> Result<EffectiveConfig, ConfigError> {
        let given_table = to_table(&given);
        let mut merged = file.map(|f| f.table().clone()).unwrap_or_default();
        let mut sources = BTreeMap::new();
        for key in ServeArgs::keys() {
            let explicit = match source_of(&key.replace('-', "_")) {
                Some(ValueSource::CommandLine) => Some(Source::Flag),
                Some(ValueSource::EnvVariable) => {
                    Some(Source::Env(ServeArgs::env_var(&key).unwrap_or_default()))
                }
                _ => None,
            };
            let source = match explicit {
                Some(source) => {
                    match given_table.get(&key) {
                        Some(value) => merged.insert(key.clone(), value.clone()),
                        None => merged.remove(&key),
                    };
                    source
                }
                None if merged.contains_key(&key) => Source::File,
                None => Source::Default,
            };
            sources.insert(key, source);
        }
        let mut args = ServeArgs::deserialize(toml::Value::Table(merged)).map_err(|e| {
            ConfigError::Invalid {
                key: "config",
                message: e.message().to_string(),
            }
        })?;
        args.config = given.config;
        Ok(EffectiveConfig { args, sources })
    }

    /// The settings as a config file: one line per key, with the layer it came from; unset
    /// keys and secrets as comments.
    pub fn to_toml(&self) -> String {
        let table = to_table(&self.args);
        let mut out = String::from(
            "# ringcache serve: the effective configuration (flags > environment > file > \
             defaults).\n# Secrets are masked: give them with their flag or environment \
             variable.\n",
        );
        if let Some(path) = &self.args.config {
            out.push_str(&format!("# read from {}\n", path.display()));
        }
        for key in ServeArgs::keys() {
            let source = self.sources.get(&key).cloned().unwrap_or(Source::Default);
            let line = match table.get(&key) {
                None => format!("# {key}: not set"),
                Some(_) if ServeArgs::is_secret(&key) => {
                    format!("# {key}: set, masked ({source})")
                }
                Some(value) => {
                    let one = toml::Table::from_iter([(key.clone(), value.clone())]);
                    let line = toml::to_string(&one).unwrap_or_default();
                    format!("{:<44} # {source}", line.trim_end())
                }
            };
            out.push_str(&line);
            out.push('\n');
        }
        out
    }

    /// The path of the file the settings came from, if any.
    pub fn file(&self) -> Option<&PathBuf> {
        self.args.config.as_ref()
    }
}

/// The settings as a TOML table (unset options absent).
fn to_table(args: &ServeArgs) -> toml::Table {
    toml::Table::try_from(args).expect("every setting has a TOML form")
}

#[cfg(test)]
mod tests {
    use super::*;
    use clap::FromArgMatches;
    use std::path::Path;

    /// Parses a `serve` command line (the environment is not consulted: these tests pass
    /// what would come from it through `env`) and layers it over `file`.
    fn resolve(
        argv: &[&str],
        env: &[(&str, &str)],
        file: Option<&str>,
    ) -> Result<EffectiveConfig, ConfigError> {
        let command = ServeArgs::command().mut_args(|a| a.env(None::<&str>));
        let matches = command
            .try_get_matches_from(std::iter::once("serve").chain(argv.iter().copied()))
            .unwrap();
        let mut given = ServeArgs::from_arg_matches(&matches).unwrap();
        // What clap would have read from the environment, where no flag gave it.
        let mut from_env = Vec::new();
        for (key, value) in env {
            if matches.value_source(&key.replace('-', "_")) != Some(ValueSource::CommandLine) {
                let mut table = to_table(&given);
                table.insert(key.to_string(), toml::Value::String(value.to_string()));
                given = ServeArgs::deserialize(toml::Value::Table(table)).unwrap();
                from_env.push(key.replace('-', "_"));
            }
        }
        let file = file
            .map(|text| ConfigFile::parse(Path::new("test.toml"), text))
            .transpose()?;
        EffectiveConfig::layer(
            given,
            |id| {
                if from_env.iter().any(|e| e == id) {
                    Some(ValueSource::EnvVariable)
                } else {
                    matches.value_source(id)
                }
            },
            file.as_ref(),
        )
    }

    #[test]
    fn a_flag_beats_the_environment_which_beats_the_file_which_beats_the_default() {
        let file = "client-token = \"from-the-file-0123456789\"\nreplicas = 2\nshards = 3\n";
        let env = [("client-token", "from-the-environment-0123")];
        // The file over the defaults.
        let c = resolve(&[], &[], Some(file)).unwrap();
        assert_eq!(
            c.args.client_token.as_deref(),
            Some("from-the-file-0123456789")
        );
        assert_eq!(c.sources["client-token"], Source::File);
        assert_eq!((c.args.replicas, c.args.shards), (2, 3));
        assert_eq!(c.args.partitions, 1024);
        assert_eq!(c.sources["partitions"], Source::Default);
        // The environment over the file.
        let c = resolve(&[], &env, Some(file)).unwrap();
        assert_eq!(
            c.args.client_token.as_deref(),
            Some("from-the-environment-0123")
        );
        assert_eq!(
            c.sources["client-token"],
            Source::Env("RINGCACHE_CLIENT_TOKEN".into())
        );
        // A flag over both, and over the file for a key with no variable.
        let c = resolve(
            &[
                "--client-token",
                "from-the-flag-0123456789",
                "--replicas",
                "5",
            ],
            &env,
            Some(file),
        )
        .unwrap();
        assert_eq!(
            c.args.client_token.as_deref(),
            Some("from-the-flag-0123456789")
        );
        assert_eq!(c.sources["client-token"], Source::Flag);
        assert_eq!(c.args.replicas, 5);
        assert_eq!(c.args.shards, 3);
        // A flag equal to the default still beats the file.
        let c = resolve(&["--replicas", "3"], &[], Some(file)).unwrap();
        assert_eq!(c.args.replicas, 3);
    }

    #[test]
    fn a_switch_turned_on_by_the_file_is_turned_off_by_a_flag() {
        let file = Some("sloppy-quorum = true\n");
        assert!(resolve(&[], &[], file).unwrap().args.sloppy_quorum);
        let off = resolve(&["--sloppy-quorum=false"], &[], file).unwrap();
        assert!(!off.args.sloppy_quorum);
    }

    #[test]
    fn printing_masks_secrets_and_reads_back_as_the_same_settings() {
        let secret = "a-cluster-secret-nobody-may-see";
        let token = "a-client-token-nobody-may-see";
        let file = format!(
            "id = \"A\"\ncluster-secret = \"{secret}\"\nmax-memory = \"64MiB\"\n\
             seed = [\"127.0.0.1:7000\", \"127.0.0.1:7001\"]\n"
        );
        let c = resolve(
            &["--client-token", token, "--http", "127.0.0.1:8080"],
            &[],
            Some(&file),
        )
        .unwrap();
        let printed = c.to_toml();
        assert!(!printed.contains(secret), "{printed}");
        assert!(!printed.contains(token), "{printed}");
        assert!(
            printed.contains("# cluster-secret: set, masked (file)"),
            "{printed}"
        );
        assert!(
            printed.contains("# client-token: set, masked (flag)"),
            "{printed}"
        );
        assert!(printed.contains("# advertise: not set"), "{printed}");
        // Every key has a line.
        for key in ServeArgs::keys() {
            assert!(
                printed
                    .lines()
                    .any(|l| l.starts_with(&format!("{key} = "))
                        || l.starts_with(&format!("# {key}: "))),
                "{key} missing from\n{printed}"
            );
        }
        // Read back, with the secrets given again, it is the same configuration.
        let again = resolve(&["--client-token", token], &[], Some(&printed)).unwrap();
        let mut expected = c.args.clone();
        expected.cluster_secret = None;
        assert_eq!(again.args, expected);
    }
}
