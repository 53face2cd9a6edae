//! The io_uring readiness backend: one ring per worker, one multishot
//! `IORING_OP_POLL_ADD` per socket. The only other unsafe module besides
//! `sys.rs`: pushing a submission queue entry is unsafe in the `io-uring`
//! crate because an entry may point at memory the kernel will use later.
//!
//! Why readiness through io_uring and not completion-based reads: the
//! client's work per event is a `recv` into a stack buffer and a parse.
//! What io_uring removes is epoll's `epoll_ctl` per socket and `epoll_wait`
//! per turn: registrations, removals and waits all go in one
//! `io_uring_enter`. Completion-based reads would need a buffer per
//! connection in flight (or a provided-buffer ring), which is memory per
//! idle connection the report is meant to keep small.

#![allow(unsafe_code)]

use std::collections::HashMap;
use std::io;
use std::os::fd::RawFd;
use std::time::Duration;

use io_uring::{cqueue, opcode, types, IoUring};

/// Ring size. Submissions beyond it are flushed early (`push`), so it bounds
/// batching, not the number of sockets.
const RING_ENTRIES: u32 = 4096;
/// Completion queue: room for one event from every socket a worker may hold
/// (and then some), so a broadcast that wakes them all does not overflow it
/// (an overflow ends multishot polls, which then cost a re-arm each).
const CQ_ENTRIES: u32 = 2 * crate::cli::SOCKETS_PER_WORKER_MAX;
/// user_data of the `POLL_REMOVE` entries themselves (their completions
/// carry nothing we need).
const REMOVE_USER_DATA: u64 = u64::MAX;
const EVENTS: u32 =
    (libc::POLLIN | libc::POLLOUT | libc::POLLRDHUP | libc::POLLERR | libc::POLLHUP) as u32;

pub struct Ring {
    ring: IoUring,
    /// Registered tokens: their poll's generation and fd. A completion for
    /// an older generation (a socket since closed, its slot reused) is
    /// stale and ignored.
    registered: HashMap<u32, (u32, RawFd)>,
    generation: u32,
}

impl Ring {
    pub fn new() -> io::Result<Ring> {
        Ok(Ring {
            ring: IoUring::builder()
                .setup_cqsize(CQ_ENTRIES)
                .build(RING_ENTRIES)?,
            registered: HashMap::new(),
            generation: 0,
        })
    }

    pub fn register(&mut self, fd: RawFd, token: usize) -> io::Result<()> {
        let token = token_u32(token);
        self.generation = self.generation.wrapping_add(1);
        let generation = self.generation;
        self.registered.insert(token, (generation, fd));
        self.arm(fd, user_data(token, generation))
    }

    /// Stop watching `token`. Call before closing its fd: the kernel's poll
    /// holds a reference to the socket, so without the removal a closed
    /// socket would stay open until the ring is dropped.
    pub fn deregister(&mut self, token: usize) -> io::Result<()> {
        let Some((generation, _)) = self.registered.remove(&token_u32(token)) else {
            return Ok(());
        };
        let entry = opcode::PollRemove::new(user_data(token_u32(token), generation))
            .build()
            .user_data(REMOVE_USER_DATA);
        self.push(&entry)
    }

    /// Submit what is queued, wait up to `timeout` for at least one event,
    /// and append the tokens that became ready (a token may appear twice).
    pub fn poll(&mut self, timeout: Duration, ready: &mut Vec<usize>) -> io::Result<()> {
        let timespec = types::Timespec::new()
            .sec(timeout.as_secs())
            .nsec(timeout.subsec_nanos());
        let args = types::SubmitArgs::new().timespec(&timespec);
        match self.ring.submitter().submit_with_args(1, &args) {
            Ok(_) => {}
            Err(error)
                if matches!(
                    error.raw_os_error(),
                    Some(libc::ETIME | libc::EINTR | libc::EBUSY)
                ) => {}
            Err(error) => return Err(error),
        }
        let mut rearm = Vec::new();
        for entry in self.ring.completion() {
            if entry.user_data() == REMOVE_USER_DATA {
                continue;
            }
            let (token, generation) = split_user_data(entry.user_data());
            let Some(&(current, fd)) = self.registered.get(&token) else {
                continue;
            };
            if current != generation {
                continue;
            }
            // Any completion means "look at the socket": readable,
            // writable, an error or hang-up, or the poll ended (it is
            // re-armed below). The connection's own read and write find out
            // which, as they do with epoll.
            ready.push(token_usize(token));
            // An ended poll is re-armed, unless it failed: a failing
            // POLL_ADD would fail again every turn. The connection then
            // finds the socket's error itself, or times out.
            if !cqueue::more(entry.flags()) && entry.result() >= 0 {
                rearm.push((fd, entry.user_data()));
            }
        }
        for (fd, user_data) in rearm {
            self.arm(fd, user_data)?;
        }
        Ok(())
    }

    fn arm(&mut self, fd: RawFd, user_data: u64) -> io::Result<()> {
        let entry = opcode::PollAdd::new(types::Fd(fd), EVENTS)
            .multi(true)
            .build()
            .user_data(user_data);
        self.push(&entry)
    }

    fn push(&mut self, entry: &io_uring::squeue::Entry) -> io::Result<()> {
        loop {
            // SAFETY: POLL_ADD and POLL_REMOVE entries carry an fd, event
            // bits and a user_data value, no pointer into our memory, so
            // nothing the kernel reads later can dangle. The fd may be
            // closed by then; the kernel then completes the entry with an
            // error, which `poll` ignores or reports as ready.
            let pushed = unsafe { self.ring.submission().push(entry) };
            if pushed.is_ok() {
                return Ok(());
            }
            // Submission queue full: hand it to the kernel and retry.
            self.ring.submit()?;
        }
    }
}

fn token_u32(token: usize) -> u32 {
    // usize::MAX (stdin) maps to u32::MAX; slots are far below 2^32.
    u32::try_from(token).unwrap_or(u32::MAX)
}

fn token_usize(token: u32) -> usize {
    if token == u32::MAX {
        usize::MAX
    } else {
        token as usize
    }
}

fn user_data(token: u32, generation: u32) -> u64 {
    (u64::from(generation) << 32) | u64::from(token)
}

fn split_user_data(user_data: u64) -> (u32, u32) {
    (user_data as u32, (user_data >> 32) as u32)
}

#[cfg(test)]
mod tests {
    use std::io::Write as _;
    use std::os::fd::AsRawFd;

    use super::*;

    #[test]
    fn readiness_arrives_and_closed_sockets_are_released() {
        let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let client = std::net::TcpStream::connect(listener.local_addr().unwrap()).unwrap();
        client.set_nonblocking(true).unwrap();
        let (mut server, _) = listener.accept().unwrap();
        let mut ring = Ring::new().unwrap();
        ring.register(client.as_raw_fd(), 7).unwrap();
        let mut ready = Vec::new();
        // Writable at once.
        ring.poll(Duration::from_secs(2), &mut ready).unwrap();
        assert_eq!(ready, vec![7]);
        ready.clear();
        server.write_all(b"x").unwrap();
        ring.poll(Duration::from_secs(2), &mut ready).unwrap();
        assert!(ready.contains(&7), "{ready:?}");
        let mut byte = [0u8; 1];
        assert_eq!(std::io::Read::read(&mut &client, &mut byte).unwrap(), 1);

        // After deregister and close, the peer sees EOF: the poll no longer
        // pins the socket.
        ring.deregister(7).unwrap();
        drop(client);
        ready.clear();
        ring.poll(Duration::from_millis(50), &mut ready).unwrap();
        assert!(ready.is_empty(), "{ready:?}");
        server
            .set_read_timeout(Some(Duration::from_secs(2)))
            .unwrap();
        let mut buf = [0u8; 8];
        assert_eq!(std::io::Read::read(&mut server, &mut buf).unwrap(), 0);
    }

    #[test]
    fn stale_generations_are_ignored() {
        assert_eq!(split_user_data(user_data(5, 9)), (5, 9));
        assert_eq!(token_usize(token_u32(usize::MAX)), usize::MAX);
        assert_eq!(token_usize(token_u32(17_999)), 17_999);
    }
}
