//! Webhooks: events the engine wrote to the store's outbox (in the group
//! commit of what caused them) delivered to the app's backend, at least
//! once, by their own thread (`ringcast-webhook`, only with `webhook.url`).
//!
//! - `schedule`: what to send next, retries, dead letters (sans-IO);
//! - `sign`: the Standard Webhooks signature headers;
//! - `body`: the JSON body of each event;
//! - `sender`: the thread's loop over the store and the HTTP client.
//!
//! The thread is woken by the store's commit sink each time a group commit
//! wrote outbox records ([`Webhooks::waker`]), and polls slowly as a safety
//! net. It never blocks a shard or the writer: it reads the outbox through
//! the store's readers and deletes what it delivered in batches.

pub mod body;
pub mod schedule;
mod sender;
pub mod sign;

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use tokio::sync::Notify;

use crate::backend_http::RuntimeThread;
use crate::config::Config;
use crate::metrics::Counter;

pub use sender::WAIT_STOP_MAX;

/// Outbox records held by the sender at once, per unit of
/// `webhook.concurrency_max` (the window the scheduler reads ahead).
pub const WINDOW_PER_SLOT: usize = 16;
/// The window's floor, so a small `concurrency_max` still batches reads.
pub const WINDOW_MIN: usize = 256;
/// Events parked (their metadata only) at most: undelivered ones before
/// their due time, those waiting for a retry, a user's ordered ones past
/// [`KEY_HELD_MAX`].
pub const PARKED_MAX: usize = 100_000;
/// Records of one user's ordered events held at once: only its head is
/// ever in flight, so more would only take window room from other users.
pub const KEY_HELD_MAX: usize = 16;
/// Records read from the outbox per page.
pub const READ_PAGE_MAX: usize = 256;
/// Safety-net poll of the outbox, for a wake-up that went missing.
pub const POLL_INTERVAL: Duration = Duration::from_secs(1);
/// Largest backend response body read (and thrown away).
pub const RESPONSE_BYTES_MAX: usize = 64 * 1024;

#[derive(Debug, thiserror::Error)]
pub enum WebhookStartError {
    #[error("cannot start the webhook thread: {0}")]
    Thread(#[source] std::io::Error),
    #[error("webhook.url {0:?} is not a valid URI")]
    Url(String),
    #[error("webhook.secret: {0}")]
    Secret(#[from] sign::SecretError),
    #[error("webhook.secret is required when webhook.url is set")]
    NoSecret,
}

/// What the webhook thread counts; it is the only writer.
#[derive(Default)]
pub struct WebhookMetrics {
    /// Delivered (2xx), by `OutboxKind as usize - 1`.
    pub delivered: [Counter; 4],
    pub attempts_failed: Counter,
    pub dead_lettered: Counter,
    /// `message.undelivered` events dropped because a device acknowledged
    /// the message in time.
    pub undelivered_satisfied: Counter,
    /// `time_ms` of the oldest event loaded and not finished; 0 if none.
    pub oldest_pending_time_ms: AtomicU64,
}

/// The index of a kind in [`WebhookMetrics::delivered`].
pub fn kind_index(kind: ringcast_store::OutboxKind) -> usize {
    use ringcast_store::OutboxKind;
    match kind {
        OutboxKind::Message => 0,
        OutboxKind::Online => 1,
        OutboxKind::Offline => 2,
        OutboxKind::Undelivered => 3,
    }
}

/// The thread's wake-up, created before the store opens so the commit sink
/// can hold it.
#[derive(Default)]
pub struct Waker {
    notify: Notify,
}

impl Waker {
    /// A group commit wrote outbox records. Never blocks; a wake while the
    /// thread is busy is kept for its next wait.
    pub fn wake(&self) {
        self.notify.notify_one();
    }
}

/// The running webhook thread.
pub struct Webhooks {
    pub metrics: Arc<WebhookMetrics>,
    waker: Arc<Waker>,
    stop: Arc<Stop>,
    runtime: Mutex<Option<RuntimeThread>>,
    settings: sender::Settings,
}

#[derive(Default)]
struct Stop {
    requested: AtomicBool,
    notify: Notify,
    /// Told when the loop has finished its last flush.
    finished: Mutex<Option<std::sync::mpsc::Receiver<()>>>,
}

impl Webhooks {
    /// Checks the settings and starts the thread's runtime when
    /// `webhook.url` is set; the loop starts with [`Webhooks::launch`], once
    /// the store is open.
    pub fn start(
        config: &Config,
        waker: Arc<Waker>,
    ) -> Result<Option<Webhooks>, WebhookStartError> {
        let webhook = &config.webhook;
        if webhook.url.is_empty() {
            return Ok(None);
        }
        let uri: hyper::Uri = webhook
            .url
            .parse()
            .map_err(|_| WebhookStartError::Url(webhook.url.clone()))?;
        let secret = webhook.secret.as_ref().ok_or(WebhookStartError::NoSecret)?;
        let signer = sign::Signer::new(secret.expose())?;
        let concurrency_max = webhook.concurrency_max as usize;
        let policy = schedule::Policy {
            concurrency_max,
            attempts_max: webhook.attempts_max,
            backoff_min_ms: webhook.backoff_min.as_millis() as u64,
            backoff_max_ms: (webhook.backoff_max.as_millis() as u64)
                .max(webhook.backoff_min.as_millis() as u64),
            window_max: concurrency_max
                .saturating_mul(WINDOW_PER_SLOT)
                .max(WINDOW_MIN),
            parked_max: PARKED_MAX,
            key_held_max: KEY_HELD_MAX,
        };
        let runtime =
            RuntimeThread::spawn("ringcast-webhook").map_err(WebhookStartError::Thread)?;
        Ok(Some(Webhooks {
            metrics: Arc::default(),
            waker,
            stop: Arc::default(),
            runtime: Mutex::new(Some(runtime)),
            settings: sender::Settings {
                uri,
                signer: Arc::new(signer),
                timeout: webhook.timeout,
                policy,
                events: webhook.events,
            },
        }))
    }

    /// Starts the loop on the thread.
    pub fn launch(&self, shared: Arc<crate::engine::Shared>) {
        let (finished_tx, finished_rx) = std::sync::mpsc::channel();
        if let Ok(mut finished) = self.stop.finished.lock() {
            *finished = Some(finished_rx);
        }
        let Ok(runtime) = self.runtime.lock() else {
            return;
        };
        let Some(runtime) = runtime.as_ref() else {
            return;
        };
        let context = sender::Context {
            shared,
            settings: self.settings.clone(),
            metrics: self.metrics.clone(),
            waker: self.waker.clone(),
            stop: self.stop.clone(),
        };
        runtime.handle.spawn(async move {
            sender::run(context).await;
            let _ = finished_tx.send(());
        });
    }

    /// Stops the loop (it hands over what it finished first, waiting at
    /// most [`WAIT_STOP_MAX`]) and the thread. Deliveries in flight are
    /// dropped: their events stay in the outbox and go again at the next
    /// start (at least once).
    pub fn shutdown(&self) {
        self.stop.requested.store(true, Ordering::Release);
        self.stop.notify.notify_one();
        let finished = self.stop.finished.lock().ok().and_then(|mut f| f.take());
        if let Some(finished) = finished {
            let _ = finished.recv_timeout(WAIT_STOP_MAX + Duration::from_millis(500));
        }
        let runtime = self.runtime.lock().ok().and_then(|mut r| r.take());
        if let Some(runtime) = runtime {
            runtime.stop_and_join();
        }
    }
}
