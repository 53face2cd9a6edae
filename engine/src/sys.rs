//! Non-blocking socket calls made after readiness, through rustix (safe
//! wrappers over the raw syscalls; the one `unsafe` block is the `ioctl`
//! rustix has no wrapper for, `unsent_bytes`).
//!
//! Why not monoio's own `read`/`write`: those take an owned buffer per
//! in-flight operation, so every idle connection would pin a read buffer.
//! Instead the shard waits for readiness (`shard/poller.rs`) and then reads
//! into its one scratch buffer, or writes a connection's queue of shared
//! frames in one vectored call. `MSG_DONTWAIT` makes each call
//! non-blocking whatever the socket's own flags are.

use std::io::{self, IoSlice};
use std::os::fd::{AsFd, OwnedFd};

use rustix::net::{RecvFlags, SendAncillaryBuffer, SendFlags, Shutdown, SocketFlags};

pub use crate::limits::IOV_MAX;

/// Outcome of a non-blocking call.
#[derive(Debug, PartialEq, Eq)]
pub enum Io {
    /// Bytes moved (for reads, 0 means the peer closed its side).
    Done(usize),
    /// The socket is not ready; wait for readiness and retry.
    WouldBlock,
}

fn outcome(result: rustix::io::Result<usize>) -> io::Result<Io> {
    match result {
        Ok(n) => Ok(Io::Done(n)),
        Err(rustix::io::Errno::AGAIN) => Ok(Io::WouldBlock),
        Err(errno) => Err(errno.into()),
    }
}

/// Reads what is available into `buf` without blocking.
pub fn recv(fd: impl AsFd, buf: &mut [u8]) -> io::Result<Io> {
    loop {
        match rustix::net::recv(&fd, &mut *buf, RecvFlags::DONTWAIT) {
            Err(rustix::io::Errno::INTR) => continue,
            result => return outcome(result.map(|(n, _)| n)),
        }
    }
}

/// Writes as much of `slices` as the socket takes, in one syscall, without
/// blocking and without raising SIGPIPE on a closed peer.
pub fn send_vectored(fd: impl AsFd, slices: &[IoSlice<'_>]) -> io::Result<Io> {
    assert!(
        slices.len() <= IOV_MAX,
        "iovec count {} over IOV_MAX",
        slices.len()
    );
    if slices.is_empty() {
        return Ok(Io::Done(0));
    }
    loop {
        let flags = SendFlags::DONTWAIT | SendFlags::NOSIGNAL;
        match rustix::net::sendmsg(&fd, slices, &mut SendAncillaryBuffer::default(), flags) {
            Err(rustix::io::Errno::INTR) => continue,
            result => return outcome(result),
        }
    }
}

/// Accepts one pending connection from a non-blocking listener; `Ok(None)`
/// when none is pending. The socket itself is left in blocking mode: every
/// call here passes `MSG_DONTWAIT`, and io_uring then waits for room
/// inside the kernel when a send finds the socket full, instead of failing
/// it with `EAGAIN` as it does for an `O_NONBLOCK` socket.
pub fn accept(listener: impl AsFd) -> io::Result<Option<(OwnedFd, Option<std::net::IpAddr>)>> {
    loop {
        match rustix::net::acceptfrom_with(&listener, SocketFlags::CLOEXEC) {
            Ok((fd, peer)) => {
                let ip = peer
                    .and_then(|peer| std::net::SocketAddr::try_from(peer).ok())
                    .map(|peer| peer.ip());
                return Ok(Some((fd, ip)));
            }
            Err(rustix::io::Errno::INTR) => continue,
            Err(rustix::io::Errno::AGAIN) => return Ok(None),
            Err(errno) => return Err(errno.into()),
        }
    }
}

/// Disables Nagle: pushes are small and latency-bound.
pub fn set_nodelay(fd: impl AsFd) {
    // Best effort: a socket that refuses it still works.
    let _ = rustix::net::sockopt::set_tcp_nodelay(fd, true);
}

/// Bytes written to the socket that the peer has not acknowledged yet
/// (`SIOCOUTQ`): while it shrinks, the peer is reading. `None` if the
/// kernel will not say.
#[allow(unsafe_code)] // one ioctl rustix does not wrap; see SAFETY below
pub fn unsent_bytes(fd: impl AsFd) -> Option<u32> {
    use std::os::fd::AsRawFd;
    let mut unsent: libc::c_int = 0;
    // SAFETY: `fd` is a socket borrowed for the call, and TIOCOUTQ (the
    // same request as SIOCOUTQ) writes one `c_int` through the pointer,
    // which points at a live local of that type.
    let result = unsafe { libc::ioctl(fd.as_fd().as_raw_fd(), libc::TIOCOUTQ, &mut unsent) };
    (result == 0).then(|| u32::try_from(unsent).ok()).flatten()
}

/// Half-closes the write side so the peer sees FIN after our close frame.
pub fn shutdown_write(fd: impl AsFd) {
    // An error here only means the peer is gone already.
    let _ = rustix::net::shutdown(fd, Shutdown::Write);
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::Write;

    #[test]
    fn unsent_bytes_falls_as_the_peer_reads() {
        let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let mut client = std::net::TcpStream::connect(listener.local_addr().unwrap()).unwrap();
        let (server, _) = listener.accept().unwrap();
        assert_eq!(unsent_bytes(&server), Some(0));
        // Fill both buffers: the client does not read.
        let chunk = vec![7u8; 64 * 1024];
        while let Ok(Io::Done(_)) = send_vectored(&server, &[IoSlice::new(&chunk)]) {}
        std::thread::sleep(std::time::Duration::from_millis(20));
        let full = unsent_bytes(&server).expect("SIOCOUTQ");
        assert!(full > 0, "a full socket holds unsent bytes");
        // The client reads: the kernel moves what waited, the count falls.
        let mut sink = vec![0u8; 1 << 20];
        let mut fell = false;
        for _ in 0..100 {
            let _ = std::io::Read::read(&mut client, &mut sink).unwrap();
            std::thread::sleep(std::time::Duration::from_millis(5));
            if unsent_bytes(&server).expect("SIOCOUTQ") < full {
                fell = true;
                break;
            }
        }
        assert!(fell, "unsent bytes stayed at {full} while the peer read");
    }

    #[test]
    fn recv_and_send_vectored_round_trip_without_blocking() {
        let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let mut client = std::net::TcpStream::connect(listener.local_addr().unwrap()).unwrap();
        let (server, _) = listener.accept().unwrap();
        let mut buf = [0u8; 64];
        // Nothing sent yet: a blocking socket must still not block.
        assert_eq!(recv(&server, &mut buf).unwrap(), Io::WouldBlock);
        client.write_all(b"hello").unwrap();
        client.flush().unwrap();
        std::thread::sleep(std::time::Duration::from_millis(20));
        assert_eq!(recv(&server, &mut buf).unwrap(), Io::Done(5));
        assert_eq!(&buf[..5], b"hello");
        let parts = [IoSlice::new(b"ab"), IoSlice::new(b"cd"), IoSlice::new(b"e")];
        assert_eq!(send_vectored(&server, &parts).unwrap(), Io::Done(5));
        let mut got = [0u8; 5];
        std::io::Read::read_exact(&mut client, &mut got).unwrap();
        assert_eq!(&got, b"abcde");
        drop(client);
        std::thread::sleep(std::time::Duration::from_millis(20));
        assert_eq!(recv(&server, &mut buf).unwrap(), Io::Done(0));
    }

    #[test]
    fn accept_does_not_block_and_reads_do_not_block_on_accepted_sockets() {
        let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        listener.set_nonblocking(true).unwrap();
        assert!(accept(&listener).unwrap().is_none());
        let _client = std::net::TcpStream::connect(listener.local_addr().unwrap()).unwrap();
        std::thread::sleep(std::time::Duration::from_millis(20));
        let (fd, source) = accept(&listener).unwrap().expect("pending connection");
        assert_eq!(
            source,
            Some("127.0.0.1".parse().unwrap()),
            "the peer's address"
        );
        let mut buf = [0u8; 4];
        assert_eq!(recv(&fd, &mut buf).unwrap(), Io::WouldBlock);
    }
}
