//! Checks that everything derived from the key table agrees with it: the
//! flags, the env vars, `--help`, the key names, and docs/config.md.

use std::collections::BTreeMap;

use super::keys::KeyInfo;
use super::table::{all_keys, OVERRIDE_TABLES};
use super::RawArgs;
use super::RawFlags;

fn override_keys() -> Vec<KeyInfo> {
    all_keys()
        .into_iter()
        .filter(|key| key.flag.is_some())
        .collect()
}

#[test]
fn flag_table_matches_key_names() {
    let env = BTreeMap::new();
    let keys = override_keys();
    assert_eq!(
        keys.len(),
        112,
        "a key was added or lost; update this count"
    );
    for key in &keys {
        assert!(OVERRIDE_TABLES.contains(&key.table), "{}", key.key());
        assert!(!key.name.is_empty());
        let flag = key.flag_name();
        assert_eq!(
            flag,
            format!("--{}-{}", key.table, key.name.replace('_', "-"))
        );
        let raw =
            RawArgs::try_parse_from_with_env(["ringcast".to_owned(), format!("{flag}=v")], &env)
                .unwrap_or_else(|error| panic!("{flag} not accepted: {error}"));
        assert_eq!(
            raw.flags.get(&key.key()),
            Some("v"),
            "{flag} does not set {}",
            key.key()
        );
        assert_eq!(
            key.env_name(),
            format!("RINGCAST_{}_{}", key.table, key.name).to_ascii_uppercase()
        );
    }
    let command = RawFlags::command();
    command.clone().debug_assert();
    let mut longs = 0;
    for arg in command.get_arguments() {
        let help = arg
            .get_help()
            .map(|help| help.to_string())
            .unwrap_or_default();
        let Some(long) = arg.get_long() else { continue };
        if long == "config" || long == "help" || long == "version" {
            continue;
        }
        longs += 1;
        let key = keys
            .iter()
            .find(|key| key.flag_name() == format!("--{long}"))
            .expect("flag has a key");
        assert!(
            help.contains(&key.env_name()) && help.contains(&key.key()),
            "help for --{long} must name {} and {}: {help}",
            key.key(),
            key.env_name()
        );
    }
    assert_eq!(longs, keys.len());
}

#[test]
fn only_override_tables_have_flags() {
    for key in all_keys() {
        assert_eq!(
            key.flag.is_some(),
            OVERRIDE_TABLES.contains(&key.table),
            "{}",
            key.key()
        );
    }
}

#[test]
fn duration_keys_carry_their_unit() {
    // Units go last in the key (style guide, "Naming"), so that a file
    // reader knows `ping_interval_ms = 500` without the docs.
    for key in all_keys() {
        if key.doc_type.ends_with(" ms") {
            assert!(key.name.ends_with("_ms"), "{}", key.key());
        }
        if key.doc_type.ends_with(" s") {
            assert!(key.name.ends_with("_s"), "{}", key.key());
        }
    }
}

/// The cells of a markdown table row; `\|` inside a cell is not a border.
fn cells(row: &str) -> Vec<String> {
    let mut cells = Vec::new();
    let mut cell = String::new();
    let mut escaped = false;
    for c in row.chars() {
        if c == '|' && !escaped {
            cells.push(cell.trim().to_owned());
            cell.clear();
        } else {
            cell.push(c);
        }
        escaped = c == '\\';
    }
    // Drop what is before the first border and after the last.
    cells.into_iter().skip(1).collect()
}

/// The text under `## heading`, up to the next `## `.
fn docs_section<'a>(docs: &'a str, heading: &str) -> &'a str {
    let start = docs
        .find(&format!("\n## {heading}\n"))
        .unwrap_or_else(|| panic!("docs/config.md has no section {heading}"));
    let rest = docs.get(start + 1..).unwrap_or("");
    let end = rest.get(3..).and_then(|after| after.find("\n## "));
    end.map_or(rest, |end| rest.get(..end + 3).unwrap_or(rest))
}

#[test]
fn docs_match_the_key_table() {
    let docs_path = concat!(env!("CARGO_MANIFEST_DIR"), "/../docs/config.md");
    let docs = std::fs::read_to_string(docs_path).expect("docs/config.md");
    let keys = all_keys();
    for key in &keys {
        let heading = match key.flag {
            Some(_) => format!("`[{}]`", key.table),
            None => format!("`[[{}]]`", key.table),
        };
        let section = docs_section(&docs, &heading);
        let row = section
            .lines()
            .find(|line| line.starts_with(&format!("| `{}` |", key.name)))
            .unwrap_or_else(|| panic!("docs/config.md {heading} lacks a row for {}", key.key()));
        let cells = cells(row);
        let expected = format!(
            "| `{}` | {} | {} |{}",
            key.name,
            key.doc_type,
            key.doc_default,
            key.flag.map_or(String::new(), |_| format!(
                " `{}` | `{}` |",
                key.flag_name(),
                key.env_name()
            ))
        );
        let shown = format!("\n  docs:  {row}\n  table: {expected} ...");
        assert_eq!(
            cells.get(1).map(String::as_str),
            Some(key.doc_type.as_str()),
            "Type of {}{shown}",
            key.key()
        );
        assert_eq!(
            cells.get(2).map(String::as_str),
            Some(key.doc_default.as_str()),
            "Default of {}{shown}",
            key.key()
        );
        if key.flag.is_some() {
            let flag_cell = cells.get(3).map_or("", String::as_str);
            let env_cell = cells.get(4).map_or("", String::as_str);
            assert!(
                flag_cell.starts_with(&format!("`{}`", key.flag_name())),
                "Flag of {}{shown}",
                key.key()
            );
            assert!(
                env_cell.starts_with(&format!("`{}`", key.env_name())),
                "Env var of {}{shown}",
                key.key()
            );
        }
    }
    // And the other way: every row of a key table names a key.
    for table in keys.iter().map(|key| (key.table, key.flag.is_some())) {
        let heading = match table {
            (name, true) => format!("`[{name}]`"),
            (name, false) => format!("`[[{name}]]`"),
        };
        for row in docs_section(&docs, &heading)
            .lines()
            .filter(|line| line.starts_with("| `"))
        {
            let name = cells(row).first().cloned().unwrap_or_default();
            assert!(
                keys.iter()
                    .any(|key| key.table == table.0 && format!("`{}`", key.name) == name),
                "docs/config.md {heading} documents {name}, which is not a key"
            );
        }
    }
}
