//! Facts about the load host and the run's parameters, recorded in the
//! summary so a report read later says what produced its numbers.

use serde::{Deserialize, Serialize};

#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct HostFacts {
    pub hostname: String,
    /// `PRETTY_NAME` from `/etc/os-release`.
    pub os: String,
    /// `/proc/sys/kernel/osrelease`.
    pub kernel: String,
    pub cpu_model: String,
    /// Cores this process may run on.
    pub cores: u32,
    pub memory_total_kb: u64,
    /// This process's open-files limit (soft), which bounds each worker.
    pub open_files_limit: String,
    /// The workers' kernel event interface (`uring`, `epoll`).
    pub driver: String,
    pub loadgen_version: String,
}

/// One command-line parameter as the run used it.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Parameter {
    pub name: String,
    pub value: String,
    /// Left at its default (not given on the command line).
    pub default: bool,
}

impl HostFacts {
    pub fn collect(driver: &str) -> HostFacts {
        let read = |path: &str| {
            std::fs::read_to_string(path)
                .map(|text| text.trim().to_owned())
                .unwrap_or_default()
        };
        let os_release = read("/etc/os-release");
        let cpuinfo = read("/proc/cpuinfo");
        let meminfo = read("/proc/meminfo");
        let limits = read("/proc/self/limits");
        HostFacts {
            hostname: read("/proc/sys/kernel/hostname"),
            os: field(&os_release, "PRETTY_NAME=")
                .trim_matches('"')
                .to_owned(),
            kernel: read("/proc/sys/kernel/osrelease"),
            cpu_model: field(&cpuinfo, "model name")
                .trim_start_matches([' ', '\t', ':'])
                .to_owned(),
            cores: std::thread::available_parallelism()
                .map(|n| n.get() as u32)
                .unwrap_or(0),
            memory_total_kb: field(&meminfo, "MemTotal:")
                .split_whitespace()
                .next()
                .and_then(|kb| kb.parse().ok())
                .unwrap_or(0),
            open_files_limit: field(&limits, "Max open files")
                .split_whitespace()
                .next()
                .unwrap_or("")
                .to_owned(),
            driver: driver.to_owned(),
            loadgen_version: env!("CARGO_PKG_VERSION").to_owned(),
        }
    }
}

/// The rest of the first line starting with `prefix`, or "".
fn field<'a>(text: &'a str, prefix: &str) -> &'a str {
    text.lines()
        .find_map(|line| line.strip_prefix(prefix))
        .unwrap_or("")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn collects_this_host() {
        let facts = HostFacts::collect("epoll");
        assert!(facts.cores >= 1);
        assert!(!facts.kernel.is_empty());
        assert!(facts.memory_total_kb > 0);
        // `/proc/self/limits` always has the row; its value is a number or
        // "unlimited".
        assert!(!facts.open_files_limit.is_empty(), "{facts:?}");
        assert_eq!(facts.driver, "epoll");
        assert_eq!(facts.loadgen_version, env!("CARGO_PKG_VERSION"));
    }
}
