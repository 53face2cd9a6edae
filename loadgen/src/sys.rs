//! The load generator's unsafe calls: `IP_BIND_ADDRESS_NO_PORT`, which
//! socket2 0.5 does not wrap; `getrusage`, for the client's own CPU and
//! memory (reported so a saturated client is visible next to the server's
//! figures); `fcntl`, to make stdin (the parent's signal pipe)
//! non-blocking.
//!
//! With it, `bind(src_ip, 0)` defers the port choice to `connect`, so the
//! kernel picks a port unique per (src, dst) 4-tuple instead of per source
//! address. Without it every source IP would be limited to ~28k ports over
//! all destinations, which is the whole reason to have several source IPs.

#![allow(unsafe_code)]

use std::io;
use std::os::fd::AsRawFd;

pub fn set_bind_address_no_port(socket: &socket2::Socket) -> io::Result<()> {
    let enable: libc::c_int = 1;
    // SAFETY: `socket` owns a valid open fd for the duration of the call;
    // the option value points to a live c_int and its exact size is passed.
    let rc = unsafe {
        libc::setsockopt(
            socket.as_raw_fd(),
            libc::IPPROTO_IP,
            libc::IP_BIND_ADDRESS_NO_PORT,
            std::ptr::from_ref(&enable).cast(),
            std::mem::size_of::<libc::c_int>() as libc::socklen_t,
        )
    };
    if rc == 0 {
        Ok(())
    } else {
        Err(io::Error::last_os_error())
    }
}

/// This process's CPU time and peak resident memory so far.
pub fn rusage_self() -> io::Result<crate::stats::Rusage> {
    let mut usage = std::mem::MaybeUninit::<libc::rusage>::zeroed();
    // SAFETY: `usage` points to writable memory the size of a `rusage`;
    // RUSAGE_SELF is a valid `who`. On success the kernel filled it in.
    let rc = unsafe { libc::getrusage(libc::RUSAGE_SELF, usage.as_mut_ptr()) };
    if rc != 0 {
        return Err(io::Error::last_os_error());
    }
    // SAFETY: getrusage returned 0, so every field was written (and the
    // zeroed start makes any padding defined anyway).
    let usage = unsafe { usage.assume_init() };
    let millis = |tv: libc::timeval| tv.tv_sec as u64 * 1000 + tv.tv_usec as u64 / 1000;
    Ok(crate::stats::Rusage {
        cpu_user_ms: millis(usage.ru_utime),
        cpu_sys_ms: millis(usage.ru_stime),
        // Linux reports ru_maxrss in kilobytes.
        max_rss_kb: usage.ru_maxrss as u64,
    })
}

/// The kernel's clock ticks per second (`/proc/<pid>/stat` CPU times are
/// in these units); 100 where sysconf cannot say.
pub fn clock_ticks_per_second() -> u64 {
    // SAFETY: sysconf takes a constant name and touches no memory of ours.
    let ticks = unsafe { libc::sysconf(libc::_SC_CLK_TCK) };
    if ticks > 0 {
        ticks as u64
    } else {
        100
    }
}

/// Set `O_NONBLOCK` on `fd`.
pub fn set_nonblocking(fd: std::os::fd::RawFd) -> io::Result<()> {
    // SAFETY: F_GETFL on a caller-owned fd reads its flags; no memory is
    // passed.
    let flags = unsafe { libc::fcntl(fd, libc::F_GETFL) };
    if flags < 0 {
        return Err(io::Error::last_os_error());
    }
    // SAFETY: as above; F_SETFL takes the flags as an int argument.
    let rc = unsafe { libc::fcntl(fd, libc::F_SETFL, flags | libc::O_NONBLOCK) };
    if rc < 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    #[test]
    fn rusage_reports_this_process() {
        let usage = super::rusage_self().unwrap();
        // A running test binary has touched at least a megabyte.
        assert!(usage.max_rss_kb > 1024, "{usage:?}");
        let spin = std::time::Instant::now();
        while spin.elapsed() < std::time::Duration::from_millis(30) {
            std::hint::black_box(0u64);
        }
        let later = super::rusage_self().unwrap();
        assert!(later.cpu_user_ms + later.cpu_sys_ms >= usage.cpu_user_ms + usage.cpu_sys_ms + 10);
    }
}
