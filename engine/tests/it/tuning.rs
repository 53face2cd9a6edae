//! The host tuning scripts in `tuning/`: `check` tells the truth about this
//! host, and `apply --dry-run` changes nothing. No test here changes a host
//! setting; only `check` and `--dry-run` are run.

use std::path::PathBuf;
use std::process::{Command, Output};

fn script(name: &str) -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("../tuning")
        .join(name)
}

fn run(name: &str, args: &[&str]) -> Output {
    Command::new(script(name))
        .args(args)
        .output()
        .unwrap_or_else(|e| panic!("running tuning/{name}: {e}"))
}

fn stdout(out: &Output) -> String {
    String::from_utf8(out.stdout.clone()).unwrap()
}

/// The hard open-files limit this test process runs under, as the shell sees it.
fn hard_nofile() -> Option<u64> {
    let out = Command::new("sh")
        .args(["-c", "ulimit -Hn"])
        .output()
        .unwrap();
    String::from_utf8(out.stdout).unwrap().trim().parse().ok()
}

fn sysctl(key: &str) -> String {
    let out = Command::new("sysctl").args(["-n", key]).output().unwrap();
    String::from_utf8(out.stdout).unwrap()
}

/// The settings `--json` reports as off.
fn json_off(args: &[&str]) -> Vec<String> {
    let mut args = args.to_vec();
    args.push("--json");
    let out = run("check", &args);
    let list: serde_json::Value = serde_json::from_slice(&out.stdout)
        .unwrap_or_else(|e| panic!("check --json is not JSON ({e}):\n{}", stdout(&out)));
    list.as_array()
        .expect("check --json prints a list")
        .iter()
        .filter(|c| c["status"] == "off")
        .map(|c| c["setting"].as_str().unwrap().to_string())
        .collect()
}

/// The settings the table reports as off: the first word of each row under
/// the SETTING header, up to the blank line.
fn table_off(text: &str) -> Vec<String> {
    text.lines()
        .skip_while(|l| !l.starts_with("SETTING"))
        .skip(1)
        .take_while(|l| !l.is_empty())
        .filter(|l| !l.starts_with(' '))
        .map(|l| l.split_whitespace().next().unwrap().to_string())
        .collect()
}

#[test]
fn check_million_reports_the_open_files_cap() {
    let out = run("check", &["--connections=1000000"]);
    let text = stdout(&out);
    assert_eq!(out.status.code(), Some(1), "{text}");
    let hard = hard_nofile().expect("this host has a finite hard open-files limit");
    assert!(
        hard < 1_100_000,
        "the host now allows 1M connections: {hard}"
    );
    assert!(text.contains("nofile.hard"), "{text}");
    assert!(text.contains(&hard.to_string()), "{text}");
    // Root cannot raise the cap here (a sandbox limit); the check must say so.
    let is_root = Command::new("id").arg("-u").output().unwrap().stdout == b"0\n";
    let raisable = Command::new("prlimit")
        .arg(format!("--nofile={0}:{0}", hard + 1))
        .arg("true")
        .output()
        .is_ok_and(|o| o.status.success());
    if is_root && !raisable {
        assert!(
            text.contains(&format!("hard cap {hard} per process cannot be raised")),
            "{text}"
        );
    }
}

#[test]
fn check_json_lists_the_same_failing_settings() {
    let table = stdout(&run("check", &["--connections=1000000"]));
    let from_json = json_off(&["--connections=1000000"]);
    assert!(
        from_json.contains(&"nofile.hard".to_string()),
        "{from_json:?}"
    );
    assert_eq!(table_off(&table), from_json, "{table}");
}

#[test]
fn check_thousand_does_not_complain_about_open_files() {
    let out = run("check", &["--connections=1000"]);
    let text = stdout(&out);
    let code = out.status.code();
    assert!(code == Some(0) || code == Some(1), "{text}");
    let off = table_off(&text);
    assert_eq!(off, json_off(&["--connections=1000"]));
    assert_eq!(code == Some(0), off.is_empty(), "{text}");
    if hard_nofile().is_some_and(|h| h >= 2024) {
        assert!(!text.contains("nofile"), "{text}");
    }
    // Settings that do not depend on N at all are the only ones left.
    for setting in &off {
        assert!(
            [
                "net.core.somaxconn",
                "net.ipv4.tcp_max_syn_backlog",
                "net.ipv4.tcp_tw_reuse",
                "net.ipv4.tcp_migrate_req",
                "net.ipv4.tcp_rmem",
                "net.ipv4.tcp_wmem",
                "memlock",
            ]
            .contains(&setting.as_str())
                || setting.starts_with("nic."),
            "{setting} should not be off for 1000 connections:\n{text}"
        );
    }
}

#[test]
fn apply_dry_run_prints_commands_and_changes_nothing() {
    let before = sysctl("net.core.somaxconn");
    let syn_before = sysctl("net.ipv4.tcp_max_syn_backlog");
    let out = run("apply", &["--dry-run", "--connections=1000000"]);
    let text = stdout(&out);
    assert_eq!(out.status.code(), Some(0), "{text}");
    assert!(text.contains("sysctl -w "), "{text}");
    assert_eq!(sysctl("net.core.somaxconn"), before);
    assert_eq!(sysctl("net.ipv4.tcp_max_syn_backlog"), syn_before);
}

#[test]
fn bad_flags_are_usage_errors() {
    for (name, args) in [
        ("check", &["--bogus"][..]),
        ("check", &["--connections=lots"][..]),
        ("apply", &["--dry-run", "--force"][..]),
        ("revert", &["extra"][..]),
    ] {
        let out = run(name, args);
        let err = String::from_utf8_lossy(&out.stderr);
        assert_eq!(out.status.code(), Some(2), "tuning/{name} {args:?}: {err}");
        assert!(err.contains("usage: tuning/"), "{err}");
    }
}

/// The binary's `THP_enabled` as the kernel reports it.
fn thp_enabled(pid: u32) -> String {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).expect("status");
    status
        .lines()
        .find_map(|line| line.strip_prefix("THP_enabled:"))
        .expect("THP_enabled in /proc/PID/status")
        .trim()
        .to_owned()
}

/// `server.transparent_huge_pages` off (the default) turns transparent
/// huge pages off for the engine's process; on leaves the kernel's
/// setting alone (docs/tuning.md, "Transparent huge pages").
#[test]
fn transparent_huge_pages_are_off_unless_asked_for() {
    let engine = crate::util::start_under_nofile(16_384, "", "");
    assert_eq!(thp_enabled(engine.pid()), "0", "off by default");
    drop(engine);
    let engine = crate::util::start_under_nofile(16_384, "transparent_huge_pages = true", "");
    assert_eq!(thp_enabled(engine.pid()), "1", "left on when asked for");
}
