//! What can be wrong with a peer's settings, as one typed error for the config area.
//!
//! Every variant names what the operator has to fix: the file, and the key within it, or the
//! flag that is missing. `main` reports it as one line; tests match on the variant.

use std::path::PathBuf;

#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    #[error("reading the config file {}: {source}", .path.display())]
    Read {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("config file {}: not valid TOML: {message}", .path.display())]
    Syntax { path: PathBuf, message: String },
    #[error("config file {}: unknown key `{key}`{hint}", .path.display())]
    UnknownKey {
        path: PathBuf,
        key: String,
        /// ` (did you mean `…`?)`, or empty.
        hint: String,
    },
    #[error("config file {}: key `{key}`: {message}", .path.display())]
    BadValue {
        path: PathBuf,
        key: String,
        message: String,
    },
    #[error(
        "no {key}: pass --{key}{}, or set `{key}` in the config file (--config FILE)",
        .env.map(|e| format!(" (or {e})")).unwrap_or_default()
    )]
    Missing {
        key: &'static str,
        env: Option<&'static str>,
    },
    #[error("{key}: {message}")]
    Invalid { key: &'static str, message: String },
}
