//! Per-worker measurements and the JSON lines workers send to the parent.
//!
//! Latencies go into an HdrHistogram (microseconds, 3 significant digits).
//! Workers ship the histogram serialized with the V2 format and base64, so
//! the parent's merge is exact: it adds bucket counts, it never averages
//! percentiles.

use std::collections::BTreeMap;

use base64::engine::general_purpose::STANDARD as BASE64;
use base64::Engine as _;
use hdrhistogram::serialization::{Deserializer, Serializer, V2Serializer};
use hdrhistogram::Histogram;
use serde::{Deserialize, Serialize};

/// Highest latency the histogram records: one hour in microseconds.
/// Larger values are clamped (and still counted).
pub const LATENCY_US_MAX: u64 = 3_600_000_000;
const SIGNIFICANT_DIGITS: u8 = 3;

pub fn new_histogram() -> Histogram<u64> {
    Histogram::new_with_bounds(1, LATENCY_US_MAX, SIGNIFICANT_DIGITS)
        .expect("static histogram bounds are valid")
}

/// Record one latency, clamped into the histogram's range.
pub fn record(histogram: &mut Histogram<u64>, latency_us: u64) {
    let value = latency_us.clamp(1, LATENCY_US_MAX);
    histogram
        .record(value)
        .expect("value clamped into the histogram's range");
}

pub fn encode_histogram(histogram: &Histogram<u64>) -> String {
    let mut bytes = Vec::new();
    V2Serializer::new()
        .serialize(histogram, &mut bytes)
        .expect("serializing into a Vec cannot fail");
    BASE64.encode(bytes)
}

pub fn decode_histogram(text: &str) -> Result<Histogram<u64>, String> {
    let bytes = BASE64
        .decode(text)
        .map_err(|e| format!("histogram is not base64: {e}"))?;
    Deserializer::new()
        .deserialize(&mut bytes.as_slice())
        .map_err(|e| format!("histogram does not deserialize: {e:?}"))
}

/// Add `other` into `into` exactly (bucket counts).
pub fn merge(into: &mut Histogram<u64>, other: &Histogram<u64>) {
    into.add(other)
        .expect("histograms with the same bounds always merge");
}

/// Error kinds, counted per kind.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum ErrorKind {
    /// TCP connect failed (refused, unreachable, no ports left).
    ConnectRefused,
    /// The upgrade was answered with a status other than 101, or garbage.
    HandshakeStatus,
    /// The server closed the WebSocket (close code in the key) or the
    /// stream broke mid-session, or it violated the protocol.
    ProtocolClose,
    /// A step did not finish in time.
    Timeout,
    /// A command (subscribe) was answered with an error.
    CommandError,
}

/// Counts by error key (`connect_refused`, `handshake_status_401`,
/// `close_4001`, `timeout_connect`, ...). A BTreeMap so output is stable.
pub type ErrorCounts = BTreeMap<String, u64>;

pub fn count_error(errors: &mut ErrorCounts, kind: ErrorKind, detail: &str) {
    let base = match kind {
        ErrorKind::ConnectRefused => "connect_refused",
        ErrorKind::HandshakeStatus => "handshake_status",
        ErrorKind::ProtocolClose => "protocol_close",
        ErrorKind::Timeout => "timeout",
        ErrorKind::CommandError => "command_error",
    };
    let key = if detail.is_empty() {
        base.to_owned()
    } else {
        format!("{base}_{detail}")
    };
    *errors.entry(key).or_insert(0) += 1;
}

/// A worker's once-a-second progress line.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct Progress {
    pub worker_idx: u32,
    pub elapsed_ms: u64,
    /// Connections that got their `connect` message and are still open.
    pub open: u64,
    /// Connections that got their `connect` message since the start.
    #[serde(default)]
    pub connected: u64,
    /// fanout: connections whose subscribe was acknowledged.
    pub subscribed: u64,
    /// Pushes received since the start.
    pub received: u64,
    /// p99 so far of this worker's main latency, microseconds.
    pub p99_us: u64,
    pub errors: u64,
    /// chat: messages sent, replies received (ok or error), and the
    /// deliveries the ok replies make expected.
    #[serde(default)]
    pub sent: u64,
    #[serde(default)]
    pub replied: u64,
    #[serde(default)]
    pub expected: u64,
}

/// A worker's final result.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct WorkerResult {
    pub worker_idx: u32,
    pub attempted: u64,
    pub connected: u64,
    pub subscribed: u64,
    /// fanout: subscribed connections per channel index.
    #[serde(default)]
    pub subscribed_by_channel: Vec<u64>,
    pub received: u64,
    pub duplicated: u64,
    pub out_of_order: u64,
    pub errors: ErrorCounts,
    /// Connect latency histogram (V2 + base64).
    pub connect_hist: String,
    /// Publish-to-receive latency histogram (V2 + base64); fanout only.
    pub push_hist: String,
    pub elapsed_ms: u64,
    /// reconnect: the worker's recovery counts and histogram.
    #[serde(default)]
    pub recovery: RecoveryCounts,
    /// chat: the worker's message counts and ack histogram.
    #[serde(default)]
    pub chat: ChatCounts,
    /// The worker's own CPU and peak memory at the end of its run.
    #[serde(default)]
    pub rusage: Rusage,
    /// Peak RSS before the first connection was opened, kilobytes: the
    /// growth from here to `rusage.max_rss_kb` is what the connections cost.
    #[serde(default)]
    pub rss_start_kb: u64,
    /// The most connections the worker held open at once (for memory per
    /// connection).
    #[serde(default)]
    pub open_max: u64,
}

/// A process's own CPU time and peak memory (`getrusage`).
#[derive(Debug, Clone, Copy, Default, Serialize, Deserialize)]
pub struct Rusage {
    pub cpu_user_ms: u64,
    pub cpu_sys_ms: u64,
    /// Peak resident set size, kilobytes.
    pub max_rss_kb: u64,
}

/// chat: what one worker's users sent and what the server acknowledged.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct ChatCounts {
    /// Messages written (send or publish commands).
    pub sent: u64,
    /// Messages answered with a result.
    pub acked: u64,
    /// Messages answered with an error.
    pub ack_errors: u64,
    /// Deliveries expected from the acked messages: 1 per pair message
    /// (the peer), the subscribed members per group message (the sender
    /// included), the connected devices of both users per IM message,
    /// counted when the message was sent.
    pub expected: u64,
    /// Intended send time -> reply (V2 + base64).
    pub ack_hist: String,
    /// IM: `read` commands written and answered with a result.
    #[serde(default)]
    pub reads_sent: u64,
    #[serde(default)]
    pub reads_acked: u64,
    /// IM: receipts owed by the answered reads (the peer's devices
    /// connected when each was sent) and receipts received.
    #[serde(default)]
    pub receipts_expected: u64,
    #[serde(default)]
    pub receipts: u64,
    /// IM: the same per kind of message (`ImKind`: DMs, then group
    /// messages); empty outside IM.
    #[serde(default)]
    pub im_kinds: Vec<KindResult>,
}

/// IM: what one kind of message (DMs or group messages) did, counted as
/// the totals are.
#[derive(Debug, Clone, Copy, Default, Serialize, Deserialize, PartialEq, Eq)]
pub struct KindCounts {
    pub sent: u64,
    pub acked: u64,
    pub ack_errors: u64,
    /// Devices connected when each acknowledged message was sent.
    pub expected: u64,
    pub received: u64,
    pub duplicated: u64,
    /// A sender's `seq` or the conversation's offset stepped back.
    pub out_of_order: u64,
    /// Offsets skipped within a device's view of the conversation.
    pub gaps: u64,
}

impl KindCounts {
    pub fn add(&mut self, other: &KindCounts) {
        self.sent += other.sent;
        self.acked += other.acked;
        self.ack_errors += other.ack_errors;
        self.expected += other.expected;
        self.received += other.received;
        self.duplicated += other.duplicated;
        self.out_of_order += other.out_of_order;
        self.gaps += other.gaps;
    }
}

/// IM: one worker's figures for one kind of message, histograms encoded.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct KindResult {
    #[serde(flatten)]
    pub counts: KindCounts,
    /// Intended send time -> reply (V2 + base64).
    pub ack_hist: String,
    /// Intended send time -> each device's push (V2 + base64).
    pub push_hist: String,
}

/// reconnect: what one worker saw of the drop and the recovery.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct RecoveryCounts {
    /// Connections dropped abruptly at the middle of the run.
    pub dropped: u64,
    /// Dropped connections that got the id-0 recovery reply.
    pub reconnected: u64,
    pub recovered_true: u64,
    pub recovered_false: u64,
    /// Sum of `replayed` over the recovery replies.
    pub replayed: u64,
    /// Offsets skipped within a connection's inbox (missing messages).
    pub gaps: u64,
    /// Reconnect start -> id-0 recovery reply (V2 + base64).
    pub recovery_hist: String,
}

/// One line a worker writes to stdout.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum WorkerLine {
    Progress(Progress),
    /// Boxed: far larger than a progress line, and sent once.
    Result(Box<WorkerResult>),
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn merged_worker_histograms_equal_one_histogram() {
        let mut all = new_histogram();
        let mut worker_a = new_histogram();
        let mut worker_b = new_histogram();
        // Deterministic spread over six decades, including the clamp edges.
        let mut state: u64 = 0x9e37_79b9_7f4a_7c15;
        for idx in 0..50_000u64 {
            state ^= state << 13;
            state ^= state >> 7;
            state ^= state << 17;
            let value = 1 + state % 10u64.pow(1 + (idx % 6) as u32);
            record(&mut all, value);
            if idx % 3 == 0 {
                record(&mut worker_a, value);
            } else {
                record(&mut worker_b, value);
            }
        }
        record(&mut all, LATENCY_US_MAX * 2);
        record(&mut worker_b, LATENCY_US_MAX * 2);

        let mut merged = new_histogram();
        for worker in [&worker_a, &worker_b] {
            let wire = encode_histogram(worker);
            merge(&mut merged, &decode_histogram(&wire).unwrap());
        }
        assert_eq!(merged.len(), all.len());
        assert_eq!(merged.max(), all.max());
        assert_eq!(merged.min(), all.min());
        for quantile in [0.5, 0.9, 0.99, 0.999, 1.0] {
            assert_eq!(
                merged.value_at_quantile(quantile),
                all.value_at_quantile(quantile),
                "quantile {quantile}"
            );
        }
        for (a, b) in merged.iter_recorded().zip(all.iter_recorded()) {
            assert_eq!(a.value_iterated_to(), b.value_iterated_to());
            assert_eq!(a.count_at_value(), b.count_at_value());
        }
        assert_eq!(merged.iter_recorded().count(), all.iter_recorded().count());
    }

    #[test]
    fn errors_count_by_kind() {
        let mut errors = ErrorCounts::new();
        count_error(&mut errors, ErrorKind::HandshakeStatus, "401");
        count_error(&mut errors, ErrorKind::HandshakeStatus, "401");
        count_error(&mut errors, ErrorKind::Timeout, "");
        assert_eq!(errors.get("handshake_status_401"), Some(&2));
        assert_eq!(errors.get("timeout"), Some(&1));
    }
}
