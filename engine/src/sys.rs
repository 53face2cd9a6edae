//! Raw, non-blocking socket calls made after monoio reports readiness.
//!
//! Why not monoio's own `read`/`write`: those take an owned buffer per
//! in-flight operation, so every idle connection would pin a read buffer.
//! Instead a connection waits for readiness (`readable`/`writable`, a
//! PollAdd on io_uring, epoll on the fallback driver) and then reads into the
//! shard's one scratch buffer, or writes its queue of shared frames in one
//! vectored call. `MSG_DONTWAIT` makes each call non-blocking whatever the
//! socket's own flags are, which differ between monoio's two drivers.
//!
//! This is the only module in the engine with `unsafe` code.
#![allow(unsafe_code)]

use std::io;
use std::io::IoSlice;
use std::os::fd::RawFd;

/// Most slices handed to one `sendmsg`; Linux's `UIO_MAXIOV` is 1024.
pub const IOV_MAX: usize = 64;

/// Outcome of a non-blocking call.
#[derive(Debug, PartialEq, Eq)]
pub enum Io {
    /// Bytes moved (for reads, 0 means the peer closed its side).
    Done(usize),
    /// The socket is not ready; wait for readiness and retry.
    WouldBlock,
}

/// Reads what is available into `buf` without blocking.
pub fn recv(fd: RawFd, buf: &mut [u8]) -> io::Result<Io> {
    loop {
        // SAFETY: `buf` is a valid, writable region of `buf.len()` bytes for
        // the duration of the call; the kernel writes at most that many.
        let n = unsafe {
            libc::recv(
                fd,
                buf.as_mut_ptr().cast::<libc::c_void>(),
                buf.len(),
                libc::MSG_DONTWAIT,
            )
        };
        if n >= 0 {
            return Ok(Io::Done(n as usize));
        }
        let err = io::Error::last_os_error();
        match err.kind() {
            io::ErrorKind::Interrupted => continue,
            io::ErrorKind::WouldBlock => return Ok(Io::WouldBlock),
            _ => return Err(err),
        }
    }
}

/// Writes as much of `slices` as the socket takes, in one syscall, without
/// blocking and without raising SIGPIPE on a closed peer.
pub fn send_vectored(fd: RawFd, slices: &[IoSlice<'_>]) -> io::Result<Io> {
    assert!(
        slices.len() <= IOV_MAX,
        "iovec count {} over IOV_MAX",
        slices.len()
    );
    if slices.is_empty() {
        return Ok(Io::Done(0));
    }
    // SAFETY: msghdr is a plain C struct for which all-zero is a valid value.
    let mut msg: libc::msghdr = unsafe { std::mem::zeroed() };
    // `IoSlice` is guaranteed ABI-compatible with `struct iovec` on Unix.
    msg.msg_iov = slices.as_ptr().cast_mut().cast::<libc::iovec>();
    msg.msg_iovlen = slices.len();
    loop {
        // SAFETY: `msg` points at `slices`, which outlive the call; the kernel
        // only reads from the iovecs.
        let n = unsafe { libc::sendmsg(fd, &msg, libc::MSG_DONTWAIT | libc::MSG_NOSIGNAL) };
        if n >= 0 {
            return Ok(Io::Done(n as usize));
        }
        let err = io::Error::last_os_error();
        match err.kind() {
            io::ErrorKind::Interrupted => continue,
            io::ErrorKind::WouldBlock => return Ok(Io::WouldBlock),
            _ => return Err(err),
        }
    }
}

/// Half-closes the write side so the peer sees FIN after our close frame.
pub fn shutdown_write(fd: RawFd) {
    // SAFETY: shutdown on a (possibly already closed) fd has no memory
    // effects; an error here only means the peer is gone already.
    let _ = unsafe { libc::shutdown(fd, libc::SHUT_WR) };
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::Write;
    use std::os::fd::AsRawFd;

    #[test]
    fn recv_and_send_vectored_round_trip_without_blocking() {
        let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let mut client = std::net::TcpStream::connect(listener.local_addr().unwrap()).unwrap();
        let (server, _) = listener.accept().unwrap();
        let mut buf = [0u8; 64];
        // Nothing sent yet: a blocking socket must still not block.
        assert_eq!(recv(server.as_raw_fd(), &mut buf).unwrap(), Io::WouldBlock);
        client.write_all(b"hello").unwrap();
        client.flush().unwrap();
        std::thread::sleep(std::time::Duration::from_millis(20));
        assert_eq!(recv(server.as_raw_fd(), &mut buf).unwrap(), Io::Done(5));
        assert_eq!(&buf[..5], b"hello");
        let parts = [IoSlice::new(b"ab"), IoSlice::new(b"cd"), IoSlice::new(b"e")];
        assert_eq!(
            send_vectored(server.as_raw_fd(), &parts).unwrap(),
            Io::Done(5)
        );
        let mut got = [0u8; 5];
        std::io::Read::read_exact(&mut client, &mut got).unwrap();
        assert_eq!(&got, b"abcde");
        drop(client);
        std::thread::sleep(std::time::Duration::from_millis(20));
        assert_eq!(recv(server.as_raw_fd(), &mut buf).unwrap(), Io::Done(0));
    }
}
