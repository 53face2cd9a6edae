//! The one unsafe call in the load generator: `IP_BIND_ADDRESS_NO_PORT`,
//! which socket2 0.5 does not wrap.
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
