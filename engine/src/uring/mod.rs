//! The shard's own io_uring ring, beside monoio's: one multishot
//! `POLL_ADD` per socket for readiness, and one `SENDMSG` per connection
//! with frames queued, all submitted in one `io_uring_enter` per loop turn.
//!
//! Why a second ring: monoio (the shard runtime) exposes readiness only as a
//! one-shot poll per await and sends only with an owned buffer per call; a
//! multishot poll per socket and batched vectored sends of shared frames
//! are not in its API. The shard loop runs as a monoio task and waits for
//! this ring's fd to become readable through monoio (`shard/poller.rs`), so
//! monoio still owns the thread's timers and wake-ups.
//!
//! This is the engine's only module with `unsafe` code: pushing a
//! submission entry, because an entry may point at memory the kernel uses
//! later (a send's `msghdr`, its iovecs and the frames they point at).

#![allow(unsafe_code)]

use std::io::{self, IoSlice};
use std::os::fd::RawFd;

use io_uring::{cqueue, opcode, squeue, types, IoUring};

use crate::limits::{IOV_MAX, URING_ENTRIES};

const KIND_SHIFT: u32 = 56;
const KIND_POLL: u64 = 1;
const KIND_SEND: u64 = 2;
/// Completions of `POLL_REMOVE` and `ASYNC_CANCEL` themselves: nothing to do.
const KIND_IGNORE: u64 = 3;
/// Finished send ops kept for reuse.
const SPARE_SENDS_MAX: usize = 1024;
const POLL_EVENTS: u32 = (libc::POLLIN | libc::POLLRDHUP | libc::POLLERR | libc::POLLHUP) as u32;
const HANGUP_EVENTS: u32 = (libc::POLLRDHUP | libc::POLLERR | libc::POLLHUP) as u32;

/// What the ring reported.
#[derive(Debug)]
pub enum Completion {
    /// The socket registered under `token` needs a look (readable, hang-up,
    /// error). `hangup`: the peer shut down or the socket failed, so a
    /// reader must read on to the end rather than stop at a short read.
    Ready(usize, bool),
    /// A send for `token` finished: bytes written, or the error (cancelled
    /// sends report `ECANCELED`).
    Sent(usize, io::Result<usize>),
}

/// A send the kernel owns until its completion: the `msghdr` and the iovecs
/// it points at. Boxed (and the iovecs in their own allocation, sized to
/// the send: most carry one or two frames) so neither moves while in
/// flight; kept for reuse afterwards.
struct SendOp {
    msg: libc::msghdr,
    iov: Vec<libc::iovec>,
    token: usize,
}

pub struct Ring {
    ring: IoUring,
    /// Per token: its poll's generation and fd. A poll completion for an
    /// older generation is stale (the slot was reused) and ignored.
    generations: Vec<u32>,
    fds: Vec<RawFd>,
    /// Sends in flight, by the index in their `user_data`.
    sends: slab::Slab<Box<SendOp>>,
    /// Freed send ops, reused so steady state does not allocate.
    #[expect(
        clippy::vec_box,
        reason = "ops move between this list and `sends` by pointer: the kernel holds their address"
    )]
    spare: Vec<Box<SendOp>>,
    to_submit: bool,
}

impl Ring {
    pub fn new() -> io::Result<Ring> {
        Ok(Ring {
            ring: IoUring::builder()
                // Room for a turn's readiness events and send completions
                // on most shards; a broadcast to more sockets than this
                // overflows into the kernel's list, which `submit` drains
                // (an overflow ends multishot polls, costing a re-arm each).
                .setup_cqsize(URING_ENTRIES * 16)
                .build(URING_ENTRIES)?,
            generations: Vec::new(),
            fds: Vec::new(),
            sends: slab::Slab::new(),
            spare: Vec::new(),
            to_submit: false,
        })
    }

    /// The ring's fd: readable when completions are waiting.
    pub fn as_fd(&self) -> std::os::fd::BorrowedFd<'_> {
        std::os::fd::AsFd::as_fd(&self.ring)
    }

    pub fn register(&mut self, fd: RawFd, token: usize) -> io::Result<()> {
        if self.generations.len() <= token {
            self.generations.resize(token + 1, 0);
            self.fds.resize(token + 1, -1);
        }
        self.fds[token] = fd;
        self.generations[token] = self.generations[token].wrapping_add(1) & 0x00ff_ffff;
        self.arm(fd, poll_user_data(token, self.generations[token]))
    }

    /// Stops watching `token`. Call before closing its fd: the kernel's poll
    /// holds a reference to the socket, so without the removal a closed
    /// socket would stay open until the ring is dropped.
    pub fn deregister(&mut self, token: usize) -> io::Result<()> {
        let Some(generation) = self.generations.get_mut(token) else {
            return Ok(());
        };
        let target = poll_user_data(token, *generation);
        // Anything still in flight for the old generation is now stale.
        *generation = generation.wrapping_add(1) & 0x00ff_ffff;
        let entry = opcode::PollRemove::new(target)
            .build()
            .user_data(KIND_IGNORE << KIND_SHIFT);
        self.push(&entry)
    }

    /// Queues one vectored send of `slices` to `fd` for `token`. The memory
    /// the slices point at must stay valid and unmoved until this token's
    /// `Completion::Sent` (the session keeps those frames in flight).
    pub fn send(&mut self, fd: RawFd, token: usize, slices: &[IoSlice<'_>]) -> io::Result<()> {
        assert!(!slices.is_empty() && slices.len() <= IOV_MAX);
        let mut op = self.spare.pop().unwrap_or_else(|| {
            Box::new(SendOp {
                // SAFETY: msghdr is a plain C struct for which all-zero is a
                // valid value.
                msg: unsafe { std::mem::zeroed() },
                iov: Vec::new(),
                token: 0,
            })
        });
        op.iov.clear();
        op.iov.extend(slices.iter().map(|slice| libc::iovec {
            iov_base: slice.as_ptr().cast_mut().cast(),
            iov_len: slice.len(),
        }));
        op.token = token;
        op.msg.msg_iov = op.iov.as_mut_ptr();
        op.msg.msg_iovlen = slices.len();
        let msg_ptr: *const libc::msghdr = &op.msg;
        let idx = self.sends.insert(op);
        let entry = opcode::SendMsg::new(types::Fd(fd), msg_ptr)
            .flags(libc::MSG_NOSIGNAL as u32)
            .build()
            .user_data((KIND_SEND << KIND_SHIFT) | idx as u64);
        if let Err(err) = self.push(&entry) {
            // Not queued: no completion will come for it.
            let op = self.sends.remove(idx);
            self.keep_spare(op);
            return Err(err);
        }
        Ok(())
    }

    /// Keeps a finished op for reuse, up to `SPARE_SENDS_MAX`: after a
    /// broadcast to many connections the rest are freed, not kept.
    fn keep_spare(&mut self, op: Box<SendOp>) {
        if self.spare.len() < SPARE_SENDS_MAX {
            self.spare.push(op);
        }
    }

    /// Cancels the send in flight for `token`, if any; its completion still
    /// arrives (with `ECANCELED` if it had not run).
    pub fn cancel_send(&mut self, token: usize) -> io::Result<()> {
        let Some(idx) = self
            .sends
            .iter()
            .find_map(|(idx, op)| (op.token == token).then_some(idx))
        else {
            return Ok(());
        };
        let entry = opcode::AsyncCancel::new((KIND_SEND << KIND_SHIFT) | idx as u64)
            .build()
            .user_data(KIND_IGNORE << KIND_SHIFT);
        self.push(&entry)
    }

    /// Submits what is queued (one `io_uring_enter`) without waiting.
    pub fn submit(&mut self) -> io::Result<()> {
        // Completions that did not fit the completion queue wait in the
        // kernel until an enter asks for events: without one after an
        // overflow (a broadcast to more sockets than the queue holds), they
        // would stay there and their connections would stall.
        if self.ring.submission().cq_overflow() {
            self.to_submit = true;
        }
        if std::mem::take(&mut self.to_submit) {
            match self.ring.submit() {
                Ok(_) => {}
                Err(error) if matches!(error.raw_os_error(), Some(libc::EINTR | libc::EBUSY)) => {
                    self.to_submit = true;
                }
                Err(error) => return Err(error),
            }
        }
        Ok(())
    }

    /// Appends what completed (without waiting) to `out`. Ended multishot
    /// polls are re-armed.
    pub fn complete(&mut self, out: &mut Vec<Completion>) -> io::Result<()> {
        let mut rearm = Vec::new();
        for entry in self.ring.completion() {
            let user_data = entry.user_data();
            match user_data >> KIND_SHIFT {
                KIND_POLL => {
                    let (token, generation) = split_poll_user_data(user_data);
                    if self.generations.get(token) != Some(&generation) {
                        continue;
                    }
                    // A multishot poll's result is the ready mask; a
                    // failed poll (negative) counts as a hang-up, so the
                    // reader reads on to the error.
                    let hangup = u32::try_from(entry.result())
                        .map_or(true, |mask| mask & HANGUP_EVENTS != 0);
                    out.push(Completion::Ready(token, hangup));
                    // A failing POLL_ADD would fail again every turn; the
                    // connection finds the socket's error when it reads.
                    if !cqueue::more(entry.flags()) && entry.result() >= 0 {
                        rearm.push((self.fds[token], user_data));
                    }
                }
                KIND_SEND => {
                    let idx = (user_data & ((1 << KIND_SHIFT) - 1)) as usize;
                    let Some(op) = self.sends.try_remove(idx) else {
                        unreachable!("send completion {idx} without its op");
                    };
                    let result = entry.result();
                    out.push(Completion::Sent(
                        op.token,
                        if result >= 0 {
                            Ok(result as usize)
                        } else {
                            Err(io::Error::from_raw_os_error(-result))
                        },
                    ));
                    if self.spare.len() < SPARE_SENDS_MAX {
                        self.spare.push(op);
                    }
                }
                _ => {}
            }
        }
        // Re-arm every ended poll even if one fails, then report the first
        // failure: a socket left without its poll would go deaf.
        let mut failed = Ok(());
        for (fd, user_data) in rearm {
            if let Err(err) = self.arm(fd, user_data) {
                if failed.is_ok() {
                    failed = Err(err);
                }
            }
        }
        failed
    }

    fn arm(&mut self, fd: RawFd, user_data: u64) -> io::Result<()> {
        let entry = opcode::PollAdd::new(types::Fd(fd), POLL_EVENTS)
            .multi(true)
            .build()
            .user_data(user_data);
        self.push(&entry)
    }

    fn push(&mut self, entry: &squeue::Entry) -> io::Result<()> {
        self.to_submit = true;
        loop {
            // SAFETY: POLL_ADD, POLL_REMOVE and ASYNC_CANCEL entries carry an
            // fd, flags and user_data values, no pointer into our memory. A
            // SENDMSG entry points at a boxed `SendOp` held in `self.sends`
            // until its completion is reaped in `complete`, and at frames
            // the caller keeps in flight until then (`Ring::send`'s
            // contract). The ring is dropped only after the shard released
            // every connection, which waits for in-flight sends.
            let pushed = unsafe { self.ring.submission().push(entry) };
            if pushed.is_ok() {
                return Ok(());
            }
            // Submission queue full: hand it to the kernel and retry.
            self.ring.submit()?;
        }
    }
}

fn poll_user_data(token: usize, generation: u32) -> u64 {
    debug_assert!(token < (1 << 32));
    (KIND_POLL << KIND_SHIFT) | (u64::from(generation) << 32) | token as u64
}

fn split_poll_user_data(user_data: u64) -> (usize, u32) {
    (
        (user_data & 0xffff_ffff) as usize,
        ((user_data >> 32) & 0x00ff_ffff) as u32,
    )
}
