//! What can go wrong while loading a config, and where a value came from.
//!
//! Every error names the key and its origin (file path, `--flag`, env var or
//! built-in default) so that the operator can find the line to change.

use std::fmt;
use std::path::PathBuf;

/// Where a value came from; every validation error names one.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Origin {
    Flag(String),
    Env(String),
    File(PathBuf),
    Default,
}

#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum ConfigError {
    #[error("config error: cannot read config file {path} {given_by}: {source}")]
    Read {
        path: PathBuf,
        given_by: Origin,
        #[source]
        source: std::io::Error,
    },
    #[error("config error in {path}{location}: {message}")]
    Parse {
        path: PathBuf,
        /// " (line L, column C, in [section])", or empty when toml gave no span.
        location: String,
        message: String,
    },
    #[error("config error: {key} {problem} {origin}")]
    Invalid {
        key: String,
        origin: Origin,
        problem: String,
    },
    #[error(
        "config error: {key} is required and was not set; set it in the config file{file_hint}, \
         with {flag}=..., or with the environment variable {env}"
    )]
    Missing {
        key: String,
        flag: String,
        env: String,
        /// " (PATH)" or " (none was given: pass --config=PATH)".
        file_hint: String,
    },
    #[error(
        "config error: unknown environment variable {name}; RINGCAST_<SECTION>_<KEY> variables \
         must name a key listed in docs/config.md"
    )]
    UnknownEnv { name: String },
    #[error("config error: environment variable {name} is not valid UTF-8")]
    EnvNotUtf8 { name: String },
    #[error(
        "config error: server.shards = 0 asks for one shard per core, but the core count is \
         unknown ({source}); set server.shards explicitly"
    )]
    Cores {
        #[source]
        source: std::io::Error,
    },
}

impl fmt::Display for Origin {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Origin::Flag(flag) => write!(f, "(from {flag})"),
            Origin::Env(name) => write!(f, "(from environment variable {name})"),
            Origin::File(path) => write!(f, "in {}", path.display()),
            Origin::Default => write!(f, "(built-in default)"),
        }
    }
}

pub(super) fn invalid(key: &str, origin: Origin, problem: String) -> ConfigError {
    ConfigError::Invalid {
        key: key.to_owned(),
        origin,
        problem,
    }
}

/// " (line L, column C, in [table])" for a byte offset into `text`.
pub(super) fn describe_location(text: &str, offset: usize) -> String {
    let offset = offset.min(text.len());
    let before = text.get(..offset).unwrap_or(text);
    let line = before.matches('\n').count() + 1;
    let line_start = before.rfind('\n').map_or(0, |newline| newline + 1);
    let column = before
        .get(line_start..)
        .map_or(1, |prefix| prefix.chars().count() + 1);
    // The nearest table header at or above the error. Dotted keys and inline
    // tables are not tracked; the line number is exact either way.
    let table = text
        .get(..line_start)
        .unwrap_or("")
        .lines()
        .rev()
        .map(str::trim)
        .find(|line| line.starts_with('['))
        .map(|header| header.split('#').next().unwrap_or(header).trim().to_owned());
    match table {
        Some(table) => format!(" (line {line}, column {column}, in {table})"),
        None => format!(" (line {line}, column {column})"),
    }
}
