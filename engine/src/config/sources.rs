//! Stage one, and the layering of stage two: flags and environment as typed
//! by the operator ([`RawArgs`]), and [`Layers`], which picks each key's value
//! from flag, env, file or default, in that order.
//!
//! Flags are built from the key table at run time (clap's builder API with
//! its `string` feature), so a key added to the table gets its
//! `--<table>-<key>` flag and `RINGCAST_<TABLE>_<KEY>` variable without
//! being written again.
//!
//! Environment variables are looked up here, not by clap's `env` feature, so
//! that the environment is an injectable map: tests pass their own map via
//! [`RawArgs::try_parse_from_with_env`] and never touch the process
//! environment (which is shared by all test threads). As with clap, an empty
//! environment variable counts as unset. A `RINGCAST_<SECTION>_*` variable
//! for a known section that matches no key is rejected, the environment
//! counterpart of `deny_unknown_fields`; other `RINGCAST_*` names are left
//! alone so tools such as loadgen may use the prefix too.

use std::collections::BTreeMap;
use std::ffi::OsString;
use std::path::{Path, PathBuf};

use super::error::{invalid, ConfigError, Origin};
use super::keys::KeyInfo;
use super::kinds::{Kind, Rejection};
use super::table::{all_keys, OVERRIDE_TABLES};

/// Env var naming the config file.
pub const ENV_CONFIG: &str = "RINGCAST_CONFIG";

const ENV_PREFIX: &str = "RINGCAST_";

/// Stage one: flags and environment, unvalidated. Does not parse flags
/// without the environment, so that no caller can forget it.
#[derive(Debug, Clone, Default)]
pub struct RawArgs {
    pub flags: RawFlags,
    /// `RINGCAST_*` variables only, values as given.
    pub env: BTreeMap<String, String>,
    /// `RINGCAST_*` variables whose value is not UTF-8 (rejected at load).
    pub env_not_utf8: Vec<String>,
}

/// Long flags. Every key flag is `--<table>-<key>=VALUE` and can also be set
/// with `RINGCAST_<TABLE>_<KEY>`.
#[derive(Debug, Clone, Default)]
pub struct RawFlags {
    /// `--config=PATH`: the TOML config file.
    pub config: Option<PathBuf>,
    /// The key flags that were given, by dotted key (`server.shards`).
    pub values: BTreeMap<String, String>,
}

/// `websocket.frame_bytes_max` -> `--websocket-frame-bytes-max`.
pub(super) fn flag_name(key: &str) -> String {
    format!("--{}", key.replace(['.', '_'], "-"))
}

/// `websocket.frame_bytes_max` -> `RINGCAST_WEBSOCKET_FRAME_BYTES_MAX`.
pub(super) fn env_name(key: &str) -> String {
    format!("{ENV_PREFIX}{}", key.replace('.', "_").to_ascii_uppercase())
}

impl RawArgs {
    /// Parses the process's argv and `RINGCAST_*` environment. Prints help or
    /// the error and exits on bad flags, like `clap::Parser::parse`.
    pub fn parse() -> RawArgs {
        let matches = RawFlags::command().get_matches();
        let mut raw = RawArgs {
            flags: RawFlags::from_matches(&matches),
            ..RawArgs::default()
        };
        for (name, value) in std::env::vars_os() {
            let Some(name) = name.to_str() else { continue };
            if !name.starts_with(ENV_PREFIX) {
                continue;
            }
            match value.into_string() {
                Ok(value) => {
                    raw.env.insert(name.to_owned(), value);
                }
                Err(_) => raw.env_not_utf8.push(name.to_owned()),
            }
        }
        raw
    }

    /// Parses `args` (including the binary name) with `env` standing in for
    /// the process environment. Only `RINGCAST_*` entries are kept.
    pub fn try_parse_from_with_env<I, T>(
        args: I,
        env: &BTreeMap<String, String>,
    ) -> Result<RawArgs, clap::Error>
    where
        I: IntoIterator<Item = T>,
        T: Into<OsString> + Clone,
    {
        let matches = RawFlags::command().try_get_matches_from(args)?;
        let env = env
            .iter()
            .filter(|(name, _)| name.starts_with(ENV_PREFIX))
            .map(|(name, value)| (name.clone(), value.clone()))
            .collect();
        Ok(RawArgs {
            flags: RawFlags::from_matches(&matches),
            env,
            env_not_utf8: Vec::new(),
        })
    }

    /// A set env var; empty counts as unset, as with clap's `env`.
    pub(super) fn env_value(&self, name: &str) -> Option<&str> {
        self.env
            .get(name)
            .map(String::as_str)
            .filter(|value| !value.is_empty())
    }

    pub(super) fn check_env(&self) -> Result<(), ConfigError> {
        if let Some(name) = self.env_not_utf8.first() {
            return Err(ConfigError::EnvNotUtf8 { name: name.clone() });
        }
        let known: Vec<String> = all_keys()
            .iter()
            .filter(|key| key.flag.is_some())
            .map(KeyInfo::env_name)
            .collect();
        for name in self.env.keys() {
            let in_section = OVERRIDE_TABLES
                .iter()
                .any(|table| name.starts_with(&env_name(&format!("{table}."))));
            if in_section && !known.contains(name) {
                return Err(ConfigError::UnknownEnv { name: name.clone() });
            }
        }
        Ok(())
    }
}

impl RawFlags {
    /// The clap command: `--config` plus one flag per key that has one, in
    /// table order.
    pub fn command() -> clap::Command {
        let config = clap::Arg::new("config")
            .long("config")
            .value_name("PATH")
            .require_equals(true)
            .action(clap::ArgAction::Set)
            .value_parser(clap::value_parser!(PathBuf))
            .help(format!(
                "Path of the TOML config file [env: {ENV_CONFIG}]. Without one, built-in \
                 defaults are used (and api.key and auth.jwt_secret must come from flags or env)"
            ));
        let keys = all_keys().into_iter().filter_map(|key| {
            let flag = key.flag?;
            let arg = clap::Arg::new(key.key())
                .long(key.flag_name().trim_start_matches('-').to_owned())
                .value_name(flag.value_name)
                .require_equals(true)
                // Set, unlike Append, rejects a repeated flag.
                .action(clap::ArgAction::Set)
                .value_parser(clap::value_parser!(String))
                .help(key.help_line(flag.help));
            Some(arg)
        });
        clap::Command::new("ringcast")
            .version(env!("CARGO_PKG_VERSION"))
            .about("Ringcast: thread-per-core io_uring WebSocket push engine")
            .after_help(
                "Precedence per key: flag > environment variable > config file > built-in \
                 default. Flags take the form --key=value and may be given once. See \
                 docs/config.md for every key.",
            )
            .arg(config)
            .args(keys)
    }

    fn from_matches(matches: &clap::ArgMatches) -> RawFlags {
        let values = all_keys()
            .iter()
            .filter(|key| key.flag.is_some())
            .filter_map(|key| {
                let key = key.key();
                let value = matches.get_one::<String>(&key)?.clone();
                Some((key, value))
            })
            .collect();
        RawFlags {
            config: matches.get_one::<PathBuf>("config").cloned(),
            values,
        }
    }

    /// The flag value for a dotted key, if the flag was given.
    pub(super) fn get(&self, key: &str) -> Option<&str> {
        self.values.get(key).map(String::as_str)
    }
}

/// Picks each key's value from flag, env, file or default, in that order,
/// and checks it with the key's kind.
pub(super) struct Layers<'a> {
    /// `None` for tables that only the file can set (`[[namespace]]`).
    overrides: Option<&'a RawArgs>,
    file_path: Option<&'a Path>,
    /// Where each key's value came from, for checks across keys.
    origins: BTreeMap<String, Origin>,
}

impl<'a> Layers<'a> {
    pub(super) fn new(raw: &'a RawArgs, file_path: Option<&'a Path>) -> Layers<'a> {
        Layers {
            overrides: Some(raw),
            file_path,
            origins: BTreeMap::new(),
        }
    }

    pub(super) fn file_only(file_path: Option<&'a Path>) -> Layers<'a> {
        Layers {
            overrides: None,
            file_path,
            origins: BTreeMap::new(),
        }
    }

    pub(super) fn file_origin(&self) -> Origin {
        match self.file_path {
            Some(path) => Origin::File(path.to_path_buf()),
            None => Origin::Default,
        }
    }

    /// Where `key`'s value came from; `Default` for a key not yet resolved.
    pub(super) fn origin(&self, key: &str) -> Origin {
        self.origins.get(key).cloned().unwrap_or(Origin::Default)
    }

    /// The value of `table.name`: `table` is `server` or `namespace[2]`.
    pub(super) fn value<K: Kind>(
        &mut self,
        table: &str,
        name: &str,
        kind: &K,
        file_value: Option<K::File>,
    ) -> Result<K::Value, ConfigError> {
        let key = format!("{table}.{name}");
        let (value, origin) = match self.override_text(&key) {
            Some((text, origin)) => match kind.parse_text(&text) {
                Ok(value) => (value, origin),
                Err(problem) => return Err(invalid(&key, origin, problem)),
            },
            None => match (file_value, kind.default_value()) {
                (Some(value), _) => (value, self.file_origin()),
                (None, Some(value)) => (value, Origin::Default),
                (None, None) => return Err(self.missing(&key, table, name)),
            },
        };
        let checked = match kind.check(value) {
            Ok(checked) => checked,
            Err(Rejection::Problem(problem)) => return Err(invalid(&key, origin, problem)),
            Err(Rejection::Cores(source)) => return Err(ConfigError::Cores { source }),
        };
        self.origins.insert(key, origin);
        Ok(checked)
    }

    fn override_text(&self, key: &str) -> Option<(String, Origin)> {
        let raw = self.overrides?;
        if let Some(value) = raw.flags.get(key) {
            return Some((value.to_owned(), Origin::Flag(flag_name(key))));
        }
        let env = env_name(key);
        let value = raw.env_value(&env)?.to_owned();
        Some((value, Origin::Env(env)))
    }

    fn missing(&self, key: &str, table: &str, name: &str) -> ConfigError {
        if self.overrides.is_none() {
            // `namespace[2]` -> `[[namespace]]`: entries of an array table.
            let array = table.split('[').next().unwrap_or(table);
            return invalid(
                key,
                self.file_origin(),
                format!("is required: every [[{array}]] needs a {name}"),
            );
        }
        let file_hint = match self.file_path {
            Some(path) => format!(" ({})", path.display()),
            None => " (none was given: pass --config=PATH)".to_owned(),
        };
        ConfigError::Missing {
            key: key.to_owned(),
            flag: flag_name(key),
            env: env_name(key),
            file_hint,
        }
    }
}
