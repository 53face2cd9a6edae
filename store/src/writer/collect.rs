//! How the writer takes requests off its queue: a group commit's batch
//! (sleeping, never blocked in the queue, for fsync pacing), and what is
//! left at shutdown.

use std::time::Instant;

use super::{Writer, WriterMsg};

impl Writer {
    /// Takes `first` and what is queued behind it into `msgs`; returns
    /// whether `Shutdown` was among them.
    ///
    /// Waits only by sleeping, never blocked in the queue: a blocked
    /// receiver is woken by every send, which under load is a context
    /// switch on both sides per request. It sleeps until
    /// `group_commit_delay_max` after `first` and, for a batch that must be
    /// fsynced, until `sync_interval_min` after the last fsync started
    /// (fsync pacing: under load one fsync covers more requests, after a
    /// quiet spell nothing waits), then takes what arrived meanwhile.
    pub(super) fn collect_batch(&mut self, first: WriterMsg, msgs: &mut Vec<WriterMsg>) -> bool {
        let entries_max = self.config.group_commit_entries_max;
        let received_at = Instant::now();
        let mut shutdown = false;
        let mut next = Some(first);
        let mut slept = false;
        loop {
            while let Some(msg) = next.take() {
                match msg {
                    WriterMsg::Shutdown => shutdown = true,
                    msg => msgs.push(msg),
                }
                if msgs.len() < entries_max {
                    next = self.requests.try_recv().ok();
                }
            }
            // After Shutdown, what is queued is taken without waiting.
            if slept || shutdown || msgs.len() >= entries_max {
                return shutdown;
            }
            let mut wake_at = received_at + self.config.group_commit_delay_max;
            if msgs.iter().any(WriterMsg::needs_sync) {
                wake_at = wake_at.max(self.sync_started + self.config.sync_interval_min);
            }
            let now = Instant::now();
            if wake_at <= now {
                return shutdown;
            }
            std::thread::sleep(wake_at - now);
            slept = true;
            next = self.requests.try_recv().ok();
        }
    }

    pub(super) fn requests_drain_then_stop(&mut self) {
        loop {
            let mut msgs = Vec::new();
            while msgs.len() < self.config.group_commit_entries_max {
                match self.requests.try_recv() {
                    Ok(WriterMsg::Shutdown) => {}
                    Ok(msg) => msgs.push(msg),
                    Err(_) => break,
                }
            }
            if msgs.is_empty() {
                return;
            }
            // After a transient failure this refuses the rest (Unavailable).
            self.commit_batch(msgs);
        }
    }
}
