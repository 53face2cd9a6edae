//! The API's memory of idempotency keys: for each key seen within the
//! dedup window, a hash of the request it came with and the answer it got,
//! so a retry is answered the same without publishing again.
//!
//! Owned by the control thread (one `RefCell`, never borrowed across an
//! await). In memory only, bounded by `API_IDEMPOTENCY_KEYS_MAX`: a restart
//! or an eviction forgets a key. Durable targets do not depend on it: their
//! appends carry the key to the store, whose dedup index survives restarts;
//! this map adds the exact original answer, the 409 for a retry racing its
//! original and the 422 for a key reused with another body, and covers the
//! live-only channels the store never sees.

use std::collections::{HashMap, VecDeque};
use std::hash::{Hash, Hasher};

use crate::limits::API_IDEMPOTENCY_KEYS_MAX;

/// What a request with a key should do.
pub enum Begin {
    /// First time seen (or forgotten): run it, then `finish` or `abandon`.
    New,
    /// The same key and request were answered before: this answer, again.
    Done(serde_json::Value),
    /// The same key is being served now by an earlier request.
    InFlight,
    /// The key came with another request (path or body) before.
    Mismatch,
}

struct Entry {
    request_hash: u64,
    at_ms: u64,
    answer: Option<serde_json::Value>,
}

pub struct Idempotency {
    window_ms: u64,
    entries: HashMap<String, Entry>,
    /// Keys in the order they were begun, with the time they were: expiry
    /// and eviction pop from the front. A key begun again after `abandon`
    /// appears twice; only the record matching its entry's time counts.
    order: VecDeque<(u64, String)>,
}

/// A hash of what a request asks for: its path and body bytes. A retry is
/// expected to send the same bytes; a collision only misses a 422.
pub fn request_hash(path: &str, body: &[u8]) -> u64 {
    let mut hasher = std::hash::DefaultHasher::new();
    path.hash(&mut hasher);
    body.hash(&mut hasher);
    hasher.finish()
}

impl Idempotency {
    pub fn new(window_ms: u64) -> Idempotency {
        Idempotency {
            window_ms,
            entries: HashMap::new(),
            order: VecDeque::new(),
        }
    }

    pub fn begin(&mut self, key: &str, request_hash: u64, now_ms: u64) -> Begin {
        self.expire(now_ms);
        if let Some(entry) = self.entries.get(key) {
            return if entry.request_hash != request_hash {
                Begin::Mismatch
            } else {
                match &entry.answer {
                    Some(answer) => Begin::Done(answer.clone()),
                    None => Begin::InFlight,
                }
            };
        }
        while self.entries.len() >= API_IDEMPOTENCY_KEYS_MAX {
            let Some((at_ms, oldest)) = self.order.pop_front() else {
                break;
            };
            self.remove_if_begun_at(&oldest, at_ms);
        }
        self.entries.insert(
            key.to_owned(),
            Entry {
                request_hash,
                at_ms: now_ms,
                answer: None,
            },
        );
        self.order.push_back((now_ms, key.to_owned()));
        assert!(self.entries.len() <= API_IDEMPOTENCY_KEYS_MAX);
        Begin::New
    }

    /// The request begun with `key` succeeded with `answer`.
    pub fn finish(&mut self, key: &str, answer: serde_json::Value) {
        if let Some(entry) = self.entries.get_mut(key) {
            entry.answer = Some(answer);
        }
    }

    /// The request begun with `key` failed: a retry may run it again.
    pub fn abandon(&mut self, key: &str) {
        self.entries.remove(key);
    }

    fn expire(&mut self, now_ms: u64) {
        while let Some((at_ms, _)) = self.order.front() {
            if now_ms.saturating_sub(*at_ms) < self.window_ms {
                break;
            }
            if let Some((at_ms, key)) = self.order.pop_front() {
                self.remove_if_begun_at(&key, at_ms);
            }
        }
        // Stale records of abandoned keys would otherwise pile up when a
        // caller retries failures in a loop.
        if self.order.len() > 2 * API_IDEMPOTENCY_KEYS_MAX {
            let entries = &self.entries;
            self.order
                .retain(|(at_ms, key)| entries.get(key).is_some_and(|entry| entry.at_ms == *at_ms));
        }
    }

    fn remove_if_begun_at(&mut self, key: &str, at_ms: u64) {
        if self
            .entries
            .get(key)
            .is_some_and(|entry| entry.at_ms == at_ms)
        {
            self.entries.remove(key);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn answers_a_retry_refuses_another_body_and_forgets_after_the_window() {
        let mut cache = Idempotency::new(1000);
        let hash = request_hash("/api/publish", b"{}");
        assert!(matches!(cache.begin("k", hash, 0), Begin::New));
        assert!(matches!(cache.begin("k", hash, 1), Begin::InFlight));
        cache.finish("k", serde_json::json!({"id": "1"}));
        assert!(matches!(cache.begin("k", hash, 2), Begin::Done(v) if v["id"] == "1"));
        let other = request_hash("/api/publish", b"{ }");
        assert!(matches!(cache.begin("k", other, 3), Begin::Mismatch));
        assert!(matches!(cache.begin("k", hash, 1000), Begin::New));
        cache.abandon("k");
        assert!(matches!(cache.begin("k", hash, 1001), Begin::New));
    }
}
