//! `--watch-pid=PID[,PID]`: the CPU and memory of the server processes
//! over the run, sampled from `/proc` every 0.5 s on a thread of the
//! parent, so the report shows resource timelines, not single numbers.
//!
//! CPU % is the process's user + system time over the wall time between
//! two samples (100% = one core busy); RSS is `VmRSS` from
//! `/proc/<pid>/status`. A process that exits during the run keeps the
//! samples it had.

use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use serde::{Deserialize, Serialize};

pub const SAMPLE_INTERVAL: Duration = Duration::from_millis(500);

#[derive(Debug, thiserror::Error)]
pub enum WatchError {
    #[error("--watch-pid: {0:?} is not a process id")]
    BadPid(String),
    #[error("--watch-pid: no process {pid} (reading {path}: {source})")]
    NoProcess {
        pid: u32,
        path: String,
        source: std::io::Error,
    },
    #[error("--watch-pid: cannot start the sampling thread: {0}")]
    Thread(std::io::Error),
}

/// One sample of one process.
#[derive(Debug, Clone, Copy, Default, PartialEq, Serialize, Deserialize)]
pub struct ResourcePoint {
    /// Seconds since the run started.
    pub t_s: f64,
    /// CPU over the interval before this sample, % of one core.
    pub cpu_pct: f64,
    pub rss_kb: u64,
}

/// A watched process: what it is, and its samples.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct WatchedProcess {
    pub pid: u32,
    /// `/proc/<pid>/comm`.
    pub name: String,
    /// `/proc/<pid>/exe`, when readable.
    pub exe: String,
    /// The first line of `<exe> --version`, asked of Ringcast's own
    /// engine only (another program's `--version` may do anything).
    pub version: String,
    pub samples: Vec<ResourcePoint>,
    /// Seconds into the run when the process was gone, if it exited.
    pub exited_at_s: Option<f64>,
}

impl WatchedProcess {
    pub fn cpu_avg_pct(&self) -> f64 {
        // The first sample has no interval before it.
        let busy: Vec<f64> = self.samples.iter().skip(1).map(|s| s.cpu_pct).collect();
        if busy.is_empty() {
            0.0
        } else {
            busy.iter().sum::<f64>() / busy.len() as f64
        }
    }

    pub fn cpu_peak_pct(&self) -> f64 {
        self.samples.iter().map(|s| s.cpu_pct).fold(0.0, f64::max)
    }

    pub fn rss_peak_kb(&self) -> u64 {
        self.samples.iter().map(|s| s.rss_kb).max().unwrap_or(0)
    }

    pub fn rss_start_kb(&self) -> u64 {
        self.samples.first().map_or(0, |s| s.rss_kb)
    }
}

/// `1234,5678` -> pids, each checked to exist now.
pub fn parse_pids(text: &str) -> Result<Vec<u32>, WatchError> {
    text.split(',')
        .map(|pid| {
            let pid: u32 = pid
                .trim()
                .parse()
                .map_err(|_| WatchError::BadPid(pid.to_owned()))?;
            let path = format!("/proc/{pid}/stat");
            std::fs::metadata(&path).map_err(|source| WatchError::NoProcess {
                pid,
                path,
                source,
            })?;
            Ok(pid)
        })
        .collect()
}

/// The sampling thread; `finish` stops it and returns what it saw.
pub struct Watcher {
    stop: Arc<AtomicBool>,
    thread: JoinHandle<Vec<WatchedProcess>>,
}

impl Watcher {
    pub fn start(pids: &[u32], started: Instant) -> Result<Watcher, WatchError> {
        let mut processes: Vec<WatchedProcess> = pids.iter().map(|&pid| describe(pid)).collect();
        let stop = Arc::new(AtomicBool::new(false));
        let stop_thread = Arc::clone(&stop);
        let ticks = crate::sys::clock_ticks_per_second() as f64;
        let thread = std::thread::Builder::new()
            .name("watch-pid".to_owned())
            .spawn(move || {
                // (cpu ticks, when) at the previous sample, per process.
                let mut last: Vec<Option<(u64, Instant)>> = vec![None; processes.len()];
                loop {
                    let now = Instant::now();
                    let t_s = now.saturating_duration_since(started).as_secs_f64();
                    for (process, last) in processes.iter_mut().zip(&mut last) {
                        if process.exited_at_s.is_some() {
                            continue;
                        }
                        let Some((cpu_ticks, rss_kb)) = read_sample(process.pid) else {
                            process.exited_at_s = Some(t_s);
                            continue;
                        };
                        let cpu_pct = match *last {
                            Some((ticks_then, then)) => {
                                let wall = now.saturating_duration_since(then).as_secs_f64();
                                let busy = cpu_ticks.saturating_sub(ticks_then) as f64 / ticks;
                                if wall > 0.0 {
                                    100.0 * busy / wall
                                } else {
                                    0.0
                                }
                            }
                            None => 0.0,
                        };
                        *last = Some((cpu_ticks, now));
                        process.samples.push(ResourcePoint {
                            t_s,
                            cpu_pct,
                            rss_kb,
                        });
                    }
                    // Sleep in short steps so `finish` does not wait long.
                    let wake = now + SAMPLE_INTERVAL;
                    while Instant::now() < wake {
                        if stop_thread.load(Ordering::Relaxed) {
                            return processes;
                        }
                        std::thread::sleep(Duration::from_millis(20));
                    }
                }
            })
            .map_err(WatchError::Thread)?;
        Ok(Watcher { stop, thread })
    }

    pub fn finish(self) -> Vec<WatchedProcess> {
        self.stop.store(true, Ordering::Relaxed);
        // A panic in the sampler loses the timelines, not the run.
        self.thread.join().unwrap_or_default()
    }
}

fn describe(pid: u32) -> WatchedProcess {
    let name = std::fs::read_to_string(format!("/proc/{pid}/comm"))
        .map(|name| name.trim().to_owned())
        .unwrap_or_default();
    let exe = std::fs::read_link(format!("/proc/{pid}/exe")).ok();
    let version = exe
        .as_ref()
        .filter(|exe| exe.file_name().and_then(|n| n.to_str()) == Some("ringcast"))
        .and_then(engine_version)
        .unwrap_or_default();
    WatchedProcess {
        pid,
        name,
        exe: exe.map(|exe| exe.display().to_string()).unwrap_or_default(),
        version,
        ..WatchedProcess::default()
    }
}

fn engine_version(exe: &PathBuf) -> Option<String> {
    let output = std::process::Command::new(exe)
        .arg("--version")
        .stdin(std::process::Stdio::null())
        .output()
        .ok()?;
    let text = String::from_utf8_lossy(&output.stdout);
    let line = text.lines().next()?.trim();
    (output.status.success() && !line.is_empty()).then(|| line.to_owned())
}

/// (utime + stime in clock ticks, VmRSS in kB); None once the process is
/// gone (or a zombie, whose status has no VmRSS).
fn read_sample(pid: u32) -> Option<(u64, u64)> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    Some((parse_cpu_ticks(&stat)?, parse_rss_kb(&status)?))
}

/// Fields 14 and 15 (utime, stime) of `/proc/<pid>/stat`. The command name
/// (field 2) is in parentheses and may hold spaces, so count from the last
/// `)`.
fn parse_cpu_ticks(stat: &str) -> Option<u64> {
    let after = &stat[stat.rfind(')')? + 1..];
    let fields: Vec<&str> = after.split_whitespace().collect();
    // After the name: field 3 (state) is index 0, so field n is n - 3.
    let utime: u64 = fields.get(14 - 3)?.parse().ok()?;
    let stime: u64 = fields.get(15 - 3)?.parse().ok()?;
    Some(utime + stime)
}

fn parse_rss_kb(status: &str) -> Option<u64> {
    status
        .lines()
        .find_map(|line| line.strip_prefix("VmRSS:"))?
        .split_whitespace()
        .next()?
        .parse()
        .ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_stat_with_spaces_in_the_name() {
        let stat = "4242 (my (odd) server) S 1 4242 4242 0 -1 4194560 \
                    5000 0 12 0 731 269 0 0 20 0 8 0 12345 1000000 2500";
        assert_eq!(parse_cpu_ticks(stat), Some(1000));
        assert_eq!(
            parse_rss_kb("Name:\tx\nVmRSS:\t  123456 kB\n"),
            Some(123_456)
        );
        assert_eq!(parse_rss_kb("Name:\tzombie\n"), None);
    }

    #[test]
    fn refuses_missing_and_malformed_pids() {
        assert!(matches!(parse_pids("abc"), Err(WatchError::BadPid(_))));
        // Above the kernel's pid_max (at most 2^22): never a live process.
        assert!(matches!(
            parse_pids("4194305"),
            Err(WatchError::NoProcess { pid: 4_194_305, .. })
        ));
        let me = std::process::id();
        assert_eq!(parse_pids(&format!("{me}, {me}")).unwrap(), vec![me, me]);
    }

    #[test]
    fn samples_this_process_cpu_and_memory() {
        let started = Instant::now();
        let watcher = Watcher::start(&[std::process::id()], started).unwrap();
        // Keep a core busy for a little over two intervals.
        while started.elapsed() < SAMPLE_INTERVAL * 2 + Duration::from_millis(200) {
            std::hint::black_box(0u64);
        }
        let watched = watcher.finish();
        assert_eq!(watched.len(), 1);
        let process = &watched[0];
        assert!(process.samples.len() >= 3, "{process:?}");
        assert!(process.rss_peak_kb() > 1024, "{process:?}");
        // The spinning thread alone is ~100%; a loaded host may steal some.
        assert!(process.cpu_peak_pct() > 30.0, "{process:?}");
        assert!(process.exited_at_s.is_none());
        assert!(!process.name.is_empty());
    }
}
