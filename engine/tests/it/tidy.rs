//! Tidy checks over the source tree: the rules in docs/ARCHITECTURE.md that a
//! compiler does not enforce.

use std::path::{Path, PathBuf};

fn rust_files(dir: &Path, out: &mut Vec<PathBuf>) {
    for entry in std::fs::read_dir(dir).unwrap() {
        let path = entry.unwrap().path();
        if path.is_dir() {
            if path.file_name().is_some_and(|n| n == "target") {
                continue;
            }
            rust_files(&path, out);
        } else if path.extension().is_some_and(|e| e == "rs") {
            out.push(path);
        }
    }
}

fn workspace() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .unwrap()
        .to_path_buf()
}

fn sources() -> Vec<(PathBuf, String)> {
    let mut files = Vec::new();
    for dir in [
        "engine/src",
        "engine/protocol/src",
        "benches",
        "store/src",
        "loadgen/src",
    ] {
        rust_files(&workspace().join(dir), &mut files);
    }
    files
        .into_iter()
        .map(|p| {
            let text = std::fs::read_to_string(&p).unwrap();
            (p, text)
        })
        .collect()
}

#[test]
fn every_unsafe_block_has_a_safety_comment() {
    for (path, text) in sources() {
        let lines: Vec<&str> = text.lines().collect();
        for (idx, line) in lines.iter().enumerate() {
            let code = line.split("//").next().unwrap_or("");
            if !code.contains("unsafe {") {
                continue;
            }
            let window = &lines[idx.saturating_sub(8)..=idx];
            assert!(
                window.iter().any(|l| l.contains("SAFETY:")),
                "{}:{}: unsafe block without a `// SAFETY:` comment just above",
                path.display(),
                idx + 1
            );
        }
    }
}

#[test]
fn unsafe_lives_only_in_sys_and_the_trusted_accessor() {
    let allowed = [
        // The shard's io_uring ring: pushing submission entries.
        "engine/src/uring/mod.rs",
        // One ioctl rustix does not wrap (SIOCOUTQ, `sys::unsent_bytes`).
        "engine/src/sys.rs",
        "engine/protocol/src/envelope.rs",
        "loadgen/src/sys.rs",
        // The load generator's io_uring poller: pushing a submission entry.
        "loadgen/src/uring.rs",
    ];
    for (path, text) in sources() {
        let rel = path
            .strip_prefix(workspace())
            .unwrap()
            .to_string_lossy()
            .to_string();
        if allowed.contains(&rel.as_str()) || rel.starts_with("engine/tests") {
            continue;
        }
        for (idx, line) in text.lines().enumerate() {
            let code = line.split("//").next().unwrap_or("");
            assert!(
                !code.contains("unsafe {") && !code.contains("unsafe fn"),
                "{rel}:{}: unsafe outside its modules",
                idx + 1
            );
        }
    }
}

#[test]
fn shard_code_never_blocks() {
    let forbidden = [
        "Mutex",
        "RwLock",
        "thread::sleep",
        "fjall",
        ".recv()",
        "block_on",
        "thread::yield_now",
        // One loop owns the shard's state: no shared mutability, no task
        // per connection.
        "RefCell",
        "monoio::spawn",
    ];
    for (path, text) in sources() {
        let rel = path
            .strip_prefix(workspace())
            .unwrap()
            .to_string_lossy()
            .to_string();
        if !rel.starts_with("engine/src/shard/") {
            continue;
        }
        for (idx, line) in text.lines().enumerate() {
            let code = line.split("//").next().unwrap_or("");
            for word in forbidden {
                assert!(
                    !code.contains(word),
                    "{rel}:{}: `{word}` on a shard thread",
                    idx + 1
                );
            }
        }
    }
}

#[test]
fn no_debugging_leftovers() {
    for (path, text) in sources() {
        for (idx, line) in text.lines().enumerate() {
            for word in ["dbg!(", "todo!(", "unimplemented!(", "eprintln!(\"DEBUG"] {
                assert!(
                    !line.contains(word),
                    "{}:{}: `{word}` left in",
                    path.display(),
                    idx + 1
                );
            }
        }
    }
}
