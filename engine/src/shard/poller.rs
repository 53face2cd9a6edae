//! The shard's event source, one of two kernel interfaces chosen by
//! `server.driver`: io_uring (`crate::uring`: multishot polls, sends as
//! submission entries, one `io_uring_enter` per turn) or epoll (mio,
//! edge-triggered; sends are direct `sendmsg` calls). The shard loop and the
//! connection code are the same for both: readiness by token, and sends
//! that either finish at once or complete later.
//!
//! The loop waits for the poller's own fd (a ring or an epoll instance,
//! both pollable) through monoio, so it parks in monoio like any task.

use std::io::{self, IoSlice};
use std::os::fd::{AsFd, AsRawFd, BorrowedFd, RawFd};

use mio::unix::SourceFd;
use mio::{Events, Interest, Token};

use crate::engine::DriverKind;
use crate::sys::{self, Io};
use crate::uring::{Completion, Ring};

const EPOLL_EVENTS_CAPACITY: usize = 1024;

pub use crate::uring::Completion as Event;

/// How a send was started.
#[derive(Debug)]
pub enum Send {
    /// Finished now (epoll): bytes written (0 when the socket was full), or
    /// the socket failed.
    Done(io::Result<usize>),
    /// Handed to the kernel (io_uring): a `Completion::Sent` follows.
    InFlight,
}

pub enum Poller {
    /// Boxed: the ring's state is several times the epoll variant's.
    Uring(Box<Ring>),
    Epoll {
        poll: mio::Poll,
        events: Events,
    },
}

impl Poller {
    pub fn new(driver: DriverKind) -> io::Result<Poller> {
        Ok(match driver {
            DriverKind::IoUring => Poller::Uring(Box::new(Ring::new()?)),
            DriverKind::Epoll => Poller::Epoll {
                poll: mio::Poll::new()?,
                events: Events::with_capacity(EPOLL_EVENTS_CAPACITY),
            },
        })
    }

    /// A monoio handle on a duplicate of the poller's fd, readable when
    /// events are waiting. monoio only polls it; it never reads or writes.
    pub fn waiter(&self) -> io::Result<monoio::net::UnixStream> {
        let fd: BorrowedFd<'_> = match self {
            Poller::Uring(ring) => ring.as_fd(),
            Poller::Epoll { poll, .. } => poll.registry().as_fd(),
        };
        let dup = rustix::io::fcntl_dupfd_cloexec(fd, 0)?;
        monoio::net::UnixStream::from_std(std::os::unix::net::UnixStream::from(dup))
    }

    /// Watch `fd` under `token` (edge-triggered: read until `WouldBlock`, a
    /// short read, or, after a hang-up, the end).
    pub fn register(&mut self, fd: RawFd, token: usize) -> io::Result<()> {
        match self {
            Poller::Uring(ring) => ring.register(fd, token),
            // Writable too: with direct sends, a full socket is retried
            // when epoll says it drained.
            Poller::Epoll { poll, .. } => poll.registry().register(
                &mut SourceFd(&fd),
                Token(token),
                Interest::READABLE | Interest::WRITABLE,
            ),
        }
    }

    /// Stop watching; call before closing `fd`.
    pub fn deregister(&mut self, fd: RawFd, token: usize) -> io::Result<()> {
        match self {
            Poller::Uring(ring) => ring.deregister(token),
            Poller::Epoll { poll, .. } => poll.registry().deregister(&mut SourceFd(&fd)),
        }
    }

    /// Starts a vectored send. io_uring: queued for this turn's submit, the
    /// slices' memory must stay put until the completion. epoll: done now.
    pub fn send(&mut self, fd: BorrowedFd<'_>, token: usize, slices: &[IoSlice<'_>]) -> Send {
        match self {
            Poller::Uring(ring) => match ring.send(fd.as_raw_fd(), token, slices) {
                Ok(()) => Send::InFlight,
                Err(err) => Send::Done(Err(err)),
            },
            Poller::Epoll { .. } => Send::Done(match sys::send_vectored(fd, slices) {
                Ok(Io::Done(n)) => Ok(n),
                Ok(Io::WouldBlock) => Ok(0),
                Err(err) => Err(err),
            }),
        }
    }

    /// Cancels `token`'s send in flight (io_uring); its completion follows.
    pub fn cancel_send(&mut self, token: usize) -> io::Result<()> {
        match self {
            Poller::Uring(ring) => ring.cancel_send(token),
            Poller::Epoll { .. } => Ok(()),
        }
    }

    /// Submits this turn's work (one `io_uring_enter`; nothing for epoll).
    pub fn submit(&mut self) -> io::Result<()> {
        match self {
            Poller::Uring(ring) => ring.submit(),
            Poller::Epoll { .. } => Ok(()),
        }
    }

    /// Appends what is ready or finished, without waiting.
    pub fn poll(&mut self, out: &mut Vec<Event>) -> io::Result<()> {
        match self {
            Poller::Uring(ring) => ring.complete(out),
            Poller::Epoll { poll, events } => {
                match poll.poll(events, Some(std::time::Duration::ZERO)) {
                    Ok(()) => {}
                    Err(err) if err.kind() == io::ErrorKind::Interrupted => return Ok(()),
                    Err(err) => return Err(err),
                }
                out.extend(events.iter().map(|event| {
                    let hangup = event.is_read_closed() || event.is_error();
                    Completion::Ready(event.token().0, hangup)
                }));
                Ok(())
            }
        }
    }
}
