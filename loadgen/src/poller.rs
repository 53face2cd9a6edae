//! The worker's event source, one of two kernel interfaces (`--driver`):
//! io_uring (`uring.rs`, the default) or epoll (mio). Both give readiness
//! by token; the worker loop and the connection code are the same for
//! both, so a difference between the two runs is the interface's.

use std::io;
use std::os::fd::RawFd;
use std::time::Duration;

use mio::unix::SourceFd;
use mio::{Events, Interest, Poll, Token};

use crate::cli::Driver;
use crate::uring::Ring;

const EVENTS_CAPACITY: usize = 1024;

pub enum Poller {
    /// Boxed: the ring's state is several times the epoll variant's, and a
    /// worker has exactly one poller, so the indirection costs nothing.
    Uring(Box<Ring>),
    Epoll {
        poll: Poll,
        events: Events,
    },
}

impl Poller {
    pub fn new(driver: Driver) -> io::Result<Poller> {
        Ok(match driver {
            Driver::Uring => Poller::Uring(Box::new(Ring::new().map_err(|error| {
                io::Error::new(
                    error.kind(),
                    format!("cannot set up io_uring ({error}); pass --driver=epoll"),
                )
            })?)),
            Driver::Epoll => Poller::Epoll {
                poll: Poll::new()?,
                events: Events::with_capacity(EVENTS_CAPACITY),
            },
        })
    }

    /// Watch `fd` for reading and writing (edge-triggered: read and write
    /// until `WouldBlock` after each readiness).
    pub fn register(&mut self, fd: RawFd, token: usize) -> io::Result<()> {
        match self {
            Poller::Uring(ring) => ring.register(fd, token),
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

    /// Wait up to `timeout`; append the tokens that became ready.
    pub fn poll(&mut self, timeout: Duration, ready: &mut Vec<usize>) -> io::Result<()> {
        match self {
            Poller::Uring(ring) => ring.poll(timeout, ready),
            Poller::Epoll { poll, events } => {
                match poll.poll(events, Some(timeout)) {
                    Ok(()) => {}
                    Err(error) if error.kind() == io::ErrorKind::Interrupted => return Ok(()),
                    Err(error) => return Err(error),
                }
                ready.extend(events.iter().map(|event| event.token().0));
                Ok(())
            }
        }
    }
}
