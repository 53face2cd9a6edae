//! The webhook sender's scheduler, sans-IO: which outbox event to send
//! next, when to retry it, when to give up on it. No sockets, no clock:
//! the caller passes `now_ms` (unix milliseconds, the clock `due_ms` is on)
//! and does the I/O; tests drive it on a virtual clock.
//!
//! Rules:
//! - **Ordered per key.** Events of one key (the user) that are ordered
//!   (`message.stored`, `user.online`, `user.offline`) form a FIFO; only its
//!   head is ever in flight, and the next one starts only after the head
//!   was delivered or dead-lettered. So a backend sees a user's events in
//!   outbox order, retries included.
//! - **`message.undelivered` is on its own timeline.** It waits for its
//!   `due_ms` (tens of seconds after the message) and must neither hold up
//!   the user's other events while it waits nor wait behind them: it is
//!   kept out of the user's FIFO, retried on its own, and so not ordered
//!   with the user's other events. While it waits only its metadata is
//!   held ("parked"); the caller reads the record again when it is due.
//! - **Bounded concurrency.** At most `concurrency_max` events in flight
//!   over all keys, started in the order they became ready.
//! - **Retries.** A failed attempt is retried after exponential backoff
//!   with full jitter: a delay drawn uniformly from
//!   `backoff_min_ms ..= min(backoff_max_ms, backoff_min_ms × 2^(attempt-1))`.
//!   After `attempts_max` failed attempts the event is dead-lettered and its
//!   key's next event goes on.
//! - **Bounded memory, shared fairly.** At most `window_max` records are
//!   held (loaded, not finished, not parked) and at most `parked_max`
//!   events parked (metadata only; the caller reads the record again when
//!   it starts): undelivered events before their due time, every event
//!   waiting for a retry, and a key's ordered events past its first
//!   `key_held_max` held ones. So one key whose events keep failing holds
//!   at most `key_held_max` records of the window, and the other keys' events
//!   are still read and sent. [`Scheduler::room`] says how many more the
//!   caller may load, from [`Scheduler::read_after`] on, in seq order.

use std::collections::{BTreeSet, HashMap, VecDeque};

/// How an event is scheduled.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Lane {
    /// In its key's FIFO: delivered in outbox order with the key's others.
    Ordered,
    /// On its own timeline from its due time (`message.undelivered`).
    Alone,
}

/// The scheduler's limits and retry policy.
#[derive(Debug, Clone, Copy)]
pub struct Policy {
    pub concurrency_max: usize,
    pub attempts_max: u32,
    pub backoff_min_ms: u64,
    pub backoff_max_ms: u64,
    /// Records held at most (loaded, not parked, not finished).
    pub window_max: usize,
    /// Events parked (metadata only) at most.
    pub parked_max: usize,
    /// Ordered records held per key at most; its later ones are parked.
    pub key_held_max: usize,
}

/// One event the caller loaded from the outbox.
#[derive(Debug, Clone)]
pub struct Item {
    pub seq: u64,
    pub key: String,
    pub lane: Lane,
    /// Not before this unix ms (0: now).
    pub due_ms: u64,
}

/// An attempt the caller should make now.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Job {
    pub seq: u64,
    /// 1 for the first attempt.
    pub attempt: u32,
    /// The event was parked: its record is not held and must be read again.
    pub reload: bool,
}

/// An event to move to the dead letters.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Dead {
    pub seq: u64,
    pub attempts: u32,
    pub last_error: String,
}

struct Entry {
    key: String,
    lane: Lane,
    due_ms: u64,
    /// Failed attempts so far.
    failures: u32,
    parked: bool,
    in_flight: bool,
}

#[derive(Default)]
struct Fifo {
    seqs: VecDeque<u64>,
    /// Of them, those whose record is held (not parked).
    held: usize,
}

pub struct Scheduler {
    policy: Policy,
    entries: HashMap<u64, Entry>,
    /// Per key, its ordered events; the front is the head.
    fifos: HashMap<String, Fifo>,
    /// Events waiting for a time (due or retry): (not before ms, seq).
    timers: BTreeSet<(u64, u64)>,
    /// Events that may start now, in the order they became ready.
    ready: VecDeque<u64>,
    in_flight: usize,
    held: usize,
    parked: usize,
    /// Highest seq loaded.
    read_after: u64,
    /// xorshift64* state for the jitter.
    rng: u64,
}

impl Scheduler {
    /// `seed`: any value (0 is replaced); tests pass a fixed one.
    pub fn new(policy: Policy, seed: u64) -> Scheduler {
        assert!(policy.concurrency_max > 0, "webhook concurrency_max is 0");
        assert!(policy.attempts_max > 0, "webhook attempts_max is 0");
        assert!(policy.backoff_min_ms <= policy.backoff_max_ms);
        assert!(policy.window_max >= policy.concurrency_max);
        assert!(policy.key_held_max > 0, "webhook key_held_max is 0");
        Scheduler {
            policy,
            entries: HashMap::new(),
            fifos: HashMap::new(),
            timers: BTreeSet::new(),
            ready: VecDeque::new(),
            in_flight: 0,
            held: 0,
            parked: 0,
            read_after: 0,
            rng: seed | 1,
        }
    }

    /// The last seq loaded: the next read starts after it.
    pub fn read_after(&self) -> u64 {
        self.read_after
    }

    /// How many more records the caller may load now.
    pub fn room(&self) -> usize {
        if self.parked >= self.policy.parked_max {
            return 0;
        }
        self.policy.window_max.saturating_sub(self.held)
    }

    /// Events loaded and not finished (parked ones included).
    pub fn pending(&self) -> usize {
        self.entries.len()
    }

    pub fn in_flight(&self) -> usize {
        self.in_flight
    }

    /// Takes a loaded event. Items come in ascending seq order; returns
    /// whether the record should be kept by the caller (`false`: parked,
    /// the caller drops the record and reads it again when it is due).
    pub fn push(&mut self, now_ms: u64, item: Item) -> bool {
        assert!(item.seq > self.read_after, "outbox records out of order");
        self.read_after = item.seq;
        let parked = match item.lane {
            Lane::Alone => item.due_ms > now_ms,
            Lane::Ordered => self
                .fifos
                .get(&item.key)
                .is_some_and(|fifo| fifo.held >= self.policy.key_held_max),
        };
        self.entries.insert(
            item.seq,
            Entry {
                key: item.key.clone(),
                lane: item.lane,
                due_ms: item.due_ms,
                failures: 0,
                parked,
                in_flight: false,
            },
        );
        if parked {
            self.parked += 1;
        } else {
            self.held += 1;
        }
        match item.lane {
            Lane::Alone => self.wait_until(now_ms, item.due_ms, item.seq),
            Lane::Ordered => {
                let fifo = self.fifos.entry(item.key).or_default();
                fifo.seqs.push_back(item.seq);
                if !parked {
                    fifo.held += 1;
                }
                if fifo.seqs.len() == 1 {
                    self.wait_until(now_ms, item.due_ms, item.seq);
                }
            }
        }
        !parked
    }

    /// Passes over a loaded record the caller will not send (its kind is
    /// turned off): the next read starts after it.
    pub fn skip(&mut self, seq: u64) {
        assert!(seq > self.read_after, "outbox records out of order");
        self.read_after = seq;
    }

    /// The next attempt to make now, if a slot is free and one is ready.
    pub fn poll_job(&mut self, now_ms: u64) -> Option<Job> {
        self.fire_timers(now_ms);
        if self.in_flight >= self.policy.concurrency_max {
            return None;
        }
        let seq = self.ready.pop_front()?;
        let entry = self.entries.get_mut(&seq)?;
        debug_assert!(!entry.in_flight);
        entry.in_flight = true;
        let reload = entry.parked;
        if entry.parked {
            entry.parked = false;
            self.parked -= 1;
            self.held += 1;
            if entry.lane == Lane::Ordered {
                if let Some(fifo) = self.fifos.get_mut(&entry.key) {
                    fifo.held += 1;
                }
            }
        }
        self.in_flight += 1;
        Some(Job {
            seq,
            attempt: entry.failures + 1,
            reload,
        })
    }

    /// When the earliest waiting event becomes ready, if any waits.
    pub fn next_timer_ms(&self) -> Option<u64> {
        self.timers.first().map(|(at, _)| *at)
    }

    /// The attempt succeeded, or the event needs no delivery (an
    /// undelivered message acknowledged in time, a record gone): it is
    /// finished and its key's next event may go.
    pub fn done(&mut self, now_ms: u64, seq: u64) {
        assert!(
            self.entries.get(&seq).is_none_or(|entry| entry.in_flight),
            "done for an event not in flight"
        );
        self.finish(now_ms, seq);
    }

    /// The attempt failed: a retry is scheduled, or (after `attempts_max`
    /// attempts) the event is finished and returned to be dead-lettered.
    /// Either way the caller drops the record: an event waiting for a
    /// retry is parked and read again when it starts.
    pub fn failed(&mut self, now_ms: u64, seq: u64, error: &str) -> Option<Dead> {
        let entry = self.entries.get_mut(&seq)?;
        assert!(entry.in_flight, "a failure for an event not in flight");
        entry.in_flight = false;
        self.in_flight -= 1;
        entry.failures += 1;
        let failures = entry.failures;
        if failures >= self.policy.attempts_max {
            self.finish(now_ms, seq);
            return Some(Dead {
                seq,
                attempts: failures,
                last_error: error.to_owned(),
            });
        }
        let delay = self.backoff_ms(failures);
        self.park(seq);
        self.wait_until(now_ms, now_ms.saturating_add(delay), seq);
        None
    }

    /// The attempt never reached the backend (the caller could not read
    /// the record): tried again after the shortest backoff, the attempt
    /// not counted.
    pub fn not_attempted(&mut self, now_ms: u64, seq: u64) {
        let Some(entry) = self.entries.get_mut(&seq) else {
            return;
        };
        assert!(entry.in_flight, "not_attempted for an event not in flight");
        entry.in_flight = false;
        self.in_flight -= 1;
        self.park(seq);
        let delay = self.policy.backoff_min_ms;
        self.wait_until(now_ms, now_ms.saturating_add(delay), seq);
    }

    /// Drops a started event's record while it waits.
    fn park(&mut self, seq: u64) {
        let Some(entry) = self.entries.get_mut(&seq) else {
            return;
        };
        debug_assert!(!entry.parked && !entry.in_flight);
        entry.parked = true;
        self.held -= 1;
        self.parked += 1;
        if entry.lane == Lane::Ordered {
            if let Some(fifo) = self.fifos.get_mut(&entry.key) {
                fifo.held -= 1;
            }
        }
    }

    /// The delay before retry number `failures` (1: after the first failure).
    pub fn backoff_ms(&mut self, failures: u32) -> u64 {
        let Policy {
            backoff_min_ms: min,
            backoff_max_ms: max,
            ..
        } = self.policy;
        let doublings = failures.saturating_sub(1).min(63);
        let cap = min.saturating_mul(1u64 << doublings).clamp(min, max);
        min + self.random() % (cap - min + 1)
    }

    fn random(&mut self) -> u64 {
        // xorshift64*: plenty for jitter, and deterministic under a seed.
        self.rng ^= self.rng >> 12;
        self.rng ^= self.rng << 25;
        self.rng ^= self.rng >> 27;
        self.rng.wrapping_mul(0x2545_f491_4f6c_dd1d)
    }

    fn wait_until(&mut self, now_ms: u64, at_ms: u64, seq: u64) {
        if at_ms <= now_ms {
            self.ready.push_back(seq);
        } else {
            self.timers.insert((at_ms, seq));
        }
    }

    fn fire_timers(&mut self, now_ms: u64) {
        while let Some(&(at, seq)) = self.timers.first() {
            if at > now_ms {
                break;
            }
            self.timers.pop_first();
            self.ready.push_back(seq);
        }
    }

    /// Removes a started event and lets its key's next event go.
    fn finish(&mut self, now_ms: u64, seq: u64) {
        let Some(entry) = self.entries.remove(&seq) else {
            return;
        };
        assert!(!entry.parked, "finishing an event never started");
        if entry.in_flight {
            self.in_flight -= 1;
        }
        self.held -= 1;
        if entry.lane == Lane::Alone {
            return;
        }
        let Some(fifo) = self.fifos.get_mut(&entry.key) else {
            return;
        };
        debug_assert_eq!(
            fifo.seqs.front(),
            Some(&seq),
            "only a key's head is in flight"
        );
        fifo.seqs.pop_front();
        fifo.held -= 1;
        match fifo.seqs.front().copied() {
            Some(next) => {
                let due_ms = self.entries.get(&next).map_or(0, |next| next.due_ms);
                self.wait_until(now_ms, due_ms, next);
            }
            None => {
                self.fifos.remove(&entry.key);
            }
        }
    }
}

#[cfg(test)]
mod tests;
