//! The one encoding of a publication: [`Envelope`], its id scheme
//! ([`MessageId`]) and its canonical bytes ([`EncodedPush`]).
//!
//! A publication is encoded exactly once, by the shard that accepts it, as an
//! rkyv archive of [`crate::client::ServerMessage::Push`]. Those bytes are shared
//! (reference-counted) across shards, written unchanged as the payload of a
//! binary WebSocket frame to every binary subscriber, and later stored on
//! disk. JSON subscribers get [`encode_push_json`], rendered from the same
//! archive, so both wire forms always describe the same publication.
//!
//! This module also holds the project's single unchecked rkyv access,
//! [`access_trusted`]. It is only sound on bytes the engine encoded itself;
//! everything that comes from the network goes through rkyv's checked
//! `access` (see [`EncodedPush::from_untrusted`] and
//! [`crate::client::decode_binary`]).

use base64::Engine as _;
use rkyv::rancor;
use rkyv::util::AlignedVec;

use crate::client::{
    push_json_str, push_u64, ArchivedServerMessage, DecodeError, ServerMessageRef,
};

/// Unix time in milliseconds of 2025-01-01T00:00:00Z, the zero of [`MessageId`]'s clock.
pub const MESSAGE_ID_EPOCH_UNIX_MS: u64 = 1_735_689_600_000;

const MESSAGE_ID_COUNTER_BITS: u32 = 10;
const MESSAGE_ID_SHARD_BITS: u32 = 6;
const MESSAGE_ID_NODE_BITS: u32 = 6;
const MESSAGE_ID_MS_BITS: u32 = 42;

const MESSAGE_ID_SHARD_SHIFT: u32 = MESSAGE_ID_COUNTER_BITS;
const MESSAGE_ID_NODE_SHIFT: u32 = MESSAGE_ID_SHARD_SHIFT + MESSAGE_ID_SHARD_BITS;
const MESSAGE_ID_MS_SHIFT: u32 = MESSAGE_ID_NODE_SHIFT + MESSAGE_ID_NODE_BITS;

/// Largest counter value within one millisecond (1023).
pub const MESSAGE_ID_COUNTER_MAX: u16 = (1 << MESSAGE_ID_COUNTER_BITS) - 1;
/// Number of distinct node ids (64).
pub const MESSAGE_ID_NODE_COUNT: u8 = 1 << MESSAGE_ID_NODE_BITS;
/// Number of distinct shard ids per node (64).
pub const MESSAGE_ID_SHARD_COUNT: u8 = 1 << MESSAGE_ID_SHARD_BITS;
/// Largest representable milliseconds-since-epoch (about year 2164).
pub const MESSAGE_ID_MS_MAX: u64 = (1 << MESSAGE_ID_MS_BITS) - 1;

const _: () = assert!(
    MESSAGE_ID_MS_BITS + MESSAGE_ID_NODE_BITS + MESSAGE_ID_SHARD_BITS + MESSAGE_ID_COUNTER_BITS
        == u64::BITS
);

/// A publication as the engine sees it. Archived (never re-encoded) once
/// accepted; see the module docs.
///
/// Invariant: when `data_is_json` is true, `data` is valid UTF-8 JSON text.
/// [`crate::client::decode_json`] and [`crate::client::decode_binary`]
/// enforce it for client input; the server API must do the same.
#[derive(rkyv::Archive, rkyv::Serialize, rkyv::Deserialize, Debug, Clone, PartialEq, Eq)]
#[rkyv(derive(Debug))]
pub struct Envelope {
    /// [`MessageId`] as a raw u64; globally unique.
    pub id: u64,
    /// Per-stream offset; 0 = not stored.
    pub offset: u64,
    /// Stream epoch; 0 = not stored.
    pub epoch: u64,
    /// Channel name, e.g. `news:sport`, or `user:alice` for user-addressed messages.
    pub channel: String,
    /// User id of the publishing client, or `""` for the server API.
    pub sender: String,
    /// Unix milliseconds at publish.
    pub time_ms: u64,
    /// `data` holds UTF-8 JSON text (from a JSON client or the API) rather than opaque bytes.
    pub data_is_json: bool,
    /// The payload.
    pub data: Vec<u8>,
}

/// A globally unique, roughly time-ordered message id.
///
/// Layout, most significant bits first: 42 bits of milliseconds since
/// 2025-01-01T00:00:00Z ([`MESSAGE_ID_EPOCH_UNIX_MS`]), 6 bits node, 6 bits
/// shard, 10 bits counter. Ids from one [`MessageIdGen`] are strictly
/// increasing; ids from different (node, shard) pairs never collide.
#[derive(
    rkyv::Archive,
    rkyv::Serialize,
    rkyv::Deserialize,
    Debug,
    Clone,
    Copy,
    PartialEq,
    Eq,
    PartialOrd,
    Ord,
    Hash,
)]
pub struct MessageId(pub u64);

/// Issues [`MessageId`]s for one (node, shard). Owned by its shard; not shared.
#[derive(Debug, Clone)]
pub struct MessageIdGen {
    node: u8,
    shard: u8,
    /// Milliseconds-since-epoch part of the last issued id. May run ahead of
    /// the wall clock after a counter overflow or a backwards clock step.
    last_ms: u64,
    /// Counter to use for the next id if the clock has not moved past `last_ms`.
    /// Reaching `MESSAGE_ID_COUNTER_MAX + 1` means `last_ms` is used up.
    counter_next: u16,
}

/// The canonical bytes of one publication: an rkyv archive of
/// [`crate::client::ServerMessage::Push`], aligned for direct access.
///
/// Can only be built by [`EncodedPush::encode`] (bytes we produced) or
/// [`EncodedPush::from_untrusted`] (bytes we validated), which is what makes
/// [`EncodedPush::envelope`]'s unchecked access sound.
#[derive(Clone)]
pub struct EncodedPush {
    bytes: AlignedVec,
}

/// Accesses an archived [`crate::client::ServerMessage`] without validation.
///
/// This is the only unchecked rkyv access in Ringcast. It exists so the hot
/// path does not re-validate publications the engine encoded itself.
///
/// # Safety
///
/// `bytes` must be exactly the output of serializing a [`crate::client::ServerMessage`] (or
/// its borrowed mirror) with this build of the crate, or bytes that already
/// passed `rkyv::access::<ArchivedServerMessage, _>`, unmodified since, and
/// their start must be aligned to 16 bytes (as an [`AlignedVec`] is). Never
/// pass bytes read from the network or from disk without validating them
/// first.
#[allow(unsafe_code)]
pub unsafe fn access_trusted(bytes: &[u8]) -> &ArchivedServerMessage {
    // SAFETY: the caller guarantees `bytes` hold a valid, aligned
    // `ArchivedServerMessage` at the default root position, which is exactly
    // `rkyv::access_unchecked`'s contract.
    unsafe { rkyv::access_unchecked::<ArchivedServerMessage>(bytes) }
}

/// Renders a push for JSON (text frame) subscribers:
///
/// `{"push":{"channel":"news","id":"123","offset":5,"epoch":"2","sender":"bob","time":1700000000000,"data":{...}}}`
///
/// `id` is a decimal string because JavaScript numbers lose precision past
/// 2^53. `offset` and `epoch` are omitted when 0 (not stored). `data` holds
/// the publication's JSON verbatim when `data_is_json`; otherwise the bytes
/// are sent as standard padded base64 in `b64data` and `data` is omitted.
/// `sender` is `""` for publications made through the server API without a `sender`.
pub fn encode_push_json(env: &ArchivedEnvelope) -> Vec<u8> {
    let mut out = Vec::with_capacity(envelope_json_len_hint(env) + 10);
    out.extend_from_slice(b"{\"push\":");
    push_envelope_json(&mut out, env);
    out.push(b'}');
    out
}

/// A capacity hint for [`push_envelope_json`]'s output.
pub(crate) fn envelope_json_len_hint(env: &ArchivedEnvelope) -> usize {
    let data_len = env.data.len();
    let data_len_max = if env.data_is_json {
        data_len
    } else {
        data_len.div_ceil(3) * 4
    };
    128 + env.channel.len() + env.sender.len() + data_len_max
}

/// Appends the publication object of a push (what `encode_push_json` wraps
/// in `{"push":...}`); history replies list the same objects.
pub(crate) fn push_envelope_json(out: &mut Vec<u8>, env: &ArchivedEnvelope) {
    let data = env.data.as_slice();
    out.extend_from_slice(b"{\"channel\":");
    push_json_str(out, env.channel.as_str());
    out.extend_from_slice(b",\"id\":\"");
    push_u64(out, env.id.to_native());
    out.push(b'"');
    let offset = env.offset.to_native();
    if offset != 0 {
        out.extend_from_slice(b",\"offset\":");
        push_u64(out, offset);
    }
    let epoch = env.epoch.to_native();
    if epoch != 0 {
        // A string, like ids: epochs use all 64 bits.
        out.extend_from_slice(b",\"epoch\":\"");
        push_u64(out, epoch);
        out.push(b'"');
    }
    out.extend_from_slice(b",\"sender\":");
    push_json_str(out, env.sender.as_str());
    out.extend_from_slice(b",\"time\":");
    push_u64(out, env.time_ms.to_native());
    out.push(b',');
    push_data_field(out, data, env.data_is_json);
    out.push(b'}');
}

/// `"data":<the JSON as it is>` or `"b64data":"<standard base64>"`.
pub(crate) fn push_data_field(out: &mut Vec<u8>, data: &[u8], data_is_json: bool) {
    if data_is_json {
        // O(n) re-validation: debug builds only. Decoders guarantee it.
        debug_assert!(
            serde_json::from_slice::<serde::de::IgnoredAny>(data).is_ok(),
            "data marked data_is_json holds invalid JSON"
        );
        out.extend_from_slice(b"\"data\":");
        out.extend_from_slice(data);
    } else {
        out.extend_from_slice(b"\"b64data\":\"");
        out.extend_from_slice(
            base64::engine::general_purpose::STANDARD
                .encode(data)
                .as_bytes(),
        );
        out.push(b'"');
    }
}

impl MessageId {
    /// Builds an id from its parts. `ms_since_epoch` counts from
    /// [`MESSAGE_ID_EPOCH_UNIX_MS`].
    ///
    /// # Panics
    ///
    /// If any part does not fit its field.
    pub fn from_parts(ms_since_epoch: u64, node: u8, shard: u8, counter: u16) -> MessageId {
        assert!(
            ms_since_epoch <= MESSAGE_ID_MS_MAX,
            "message id clock overflow"
        );
        assert!(node < MESSAGE_ID_NODE_COUNT, "node {node} out of range");
        assert!(shard < MESSAGE_ID_SHARD_COUNT, "shard {shard} out of range");
        assert!(
            counter <= MESSAGE_ID_COUNTER_MAX,
            "counter {counter} out of range"
        );
        MessageId(
            (ms_since_epoch << MESSAGE_ID_MS_SHIFT)
                | (u64::from(node) << MESSAGE_ID_NODE_SHIFT)
                | (u64::from(shard) << MESSAGE_ID_SHARD_SHIFT)
                | u64::from(counter),
        )
    }

    /// The raw id, as carried in [`Envelope::id`].
    pub fn as_u64(self) -> u64 {
        self.0
    }

    /// Milliseconds since [`MESSAGE_ID_EPOCH_UNIX_MS`].
    pub fn ms_since_epoch(self) -> u64 {
        self.0 >> MESSAGE_ID_MS_SHIFT
    }

    /// Unix milliseconds of the id's clock part. May be slightly ahead of the
    /// real publish time (see [`MessageIdGen::next`]).
    pub fn unix_ms(self) -> u64 {
        self.ms_since_epoch() + MESSAGE_ID_EPOCH_UNIX_MS
    }

    /// The node that issued the id.
    pub fn node(self) -> u8 {
        ((self.0 >> MESSAGE_ID_NODE_SHIFT) & u64::from(MESSAGE_ID_NODE_COUNT - 1)) as u8
    }

    /// The shard (on [`MessageId::node`]) that issued the id.
    pub fn shard(self) -> u8 {
        ((self.0 >> MESSAGE_ID_SHARD_SHIFT) & u64::from(MESSAGE_ID_SHARD_COUNT - 1)) as u8
    }

    /// The per-millisecond counter.
    pub fn counter(self) -> u16 {
        (self.0 & u64::from(MESSAGE_ID_COUNTER_MAX)) as u16
    }
}

impl std::fmt::Display for MessageId {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}", self.0)
    }
}

impl MessageIdGen {
    /// # Panics
    ///
    /// If `node >= 64` or `shard >= 64`: ids would collide across shards.
    pub fn new(node: u8, shard: u8) -> MessageIdGen {
        assert!(
            node < MESSAGE_ID_NODE_COUNT,
            "message id node {node} must be < 64"
        );
        assert!(
            shard < MESSAGE_ID_SHARD_COUNT,
            "message id shard {shard} must be < 64"
        );
        MessageIdGen {
            node,
            shard,
            last_ms: 0,
            counter_next: 0,
        }
    }

    /// Issues the next id. `now_unix_ms` is wall-clock unix milliseconds.
    ///
    /// Strictly increasing regardless of the clock: if the clock goes
    /// backwards the last millisecond keeps being used, and if 1024 ids are
    /// issued within one millisecond the generator borrows the next
    /// millisecond instead of repeating an id.
    ///
    /// # Panics
    ///
    /// If the clock part would pass [`MESSAGE_ID_MS_MAX`] (year 2164).
    pub fn next(&mut self, now_unix_ms: u64) -> MessageId {
        let now_ms = now_unix_ms.saturating_sub(MESSAGE_ID_EPOCH_UNIX_MS);
        if now_ms > self.last_ms {
            self.last_ms = now_ms;
            self.counter_next = 0;
        }
        if self.counter_next > MESSAGE_ID_COUNTER_MAX {
            self.last_ms += 1;
            self.counter_next = 0;
        }
        let id = MessageId::from_parts(self.last_ms, self.node, self.shard, self.counter_next);
        self.counter_next += 1;
        assert!(self.counter_next <= MESSAGE_ID_COUNTER_MAX + 1);
        id
    }

    /// The node this generator issues ids for.
    pub fn node(&self) -> u8 {
        self.node
    }

    /// The shard this generator issues ids for.
    pub fn shard(&self) -> u8 {
        self.shard
    }
}

impl EncodedPush {
    /// Encodes `env` as an archive of `ServerMessage::Push(env)`, serializing
    /// straight from the reference (no clone of the payload).
    ///
    /// # Panics
    ///
    /// If the envelope is too large for rkyv's 32-bit relative pointers
    /// (about 2 GiB). The engine's frame size limit keeps publications far
    /// below that, so reaching it is a programmer error.
    pub fn encode(env: &Envelope) -> EncodedPush {
        let bytes = match rkyv::to_bytes::<rancor::Error>(&ServerMessageRef::Push(env)) {
            Ok(bytes) => bytes,
            Err(error) => panic!(
                "encoding a push of {} bytes failed: {error}",
                env.data.len()
            ),
        };
        // O(n) check that the borrowed mirror archives exactly like
        // `ServerMessage`; the tests check this too, release builds trust it.
        debug_assert!(rkyv::access::<ArchivedServerMessage, rancor::Error>(&bytes).is_ok());
        EncodedPush { bytes }
    }

    /// Validates bytes from outside the process (a peer, the disk) with
    /// rkyv's checked access and keeps an aligned copy.
    pub fn from_untrusted(bytes: &[u8]) -> Result<EncodedPush, DecodeError> {
        let mut aligned = AlignedVec::with_capacity(bytes.len());
        aligned.extend_from_slice(bytes);
        let message = rkyv::access::<ArchivedServerMessage, rancor::BoxedError>(&aligned)
            .map_err(DecodeError::InvalidArchive)?;
        match message {
            ArchivedServerMessage::Push(_) => Ok(EncodedPush { bytes: aligned }),
            other => Err(DecodeError::NotPush {
                variant: archived_variant_name(other),
            }),
        }
    }

    /// Fills in what only the store knows (id, stream offset and epoch, and
    /// the time when the publisher left it 0) by overwriting those fixed-size
    /// fields of the archive in place, so a publication encoded by the
    /// shard that accepted it is stored without being encoded again.
    ///
    /// Only plain integers are overwritten, and any bit pattern is a valid
    /// archived integer, so the archive stays exactly as valid as it was.
    pub fn stamp(&mut self, id: u64, offset: u64, epoch: u64, time_ms: u64) {
        let envelope = self.envelope();
        let fields = [
            (field_at(&self.bytes, &envelope.id), id),
            (field_at(&self.bytes, &envelope.offset), offset),
            (field_at(&self.bytes, &envelope.epoch), epoch),
            (
                field_at(&self.bytes, &envelope.time_ms),
                match envelope.time_ms.to_native() {
                    0 => time_ms,
                    set => set,
                },
            ),
        ];
        for (at, value) in fields {
            // rkyv archives integers little-endian (its default format;
            // `stamp_overwrites_the_archived_fields` checks it).
            self.bytes[at..at + 8].copy_from_slice(&value.to_le_bytes());
        }
        debug_assert_eq!(self.envelope().offset, offset);
    }

    /// Overwrites the time in place, whatever it was: the store's IM
    /// conversations stamp `max(previous entry's time, now)` so that time
    /// never decreases along a conversation. Call before [`Self::stamp`],
    /// which keeps a time that is set.
    pub fn stamp_time(&mut self, time_ms: u64) {
        let at = field_at(&self.bytes, &self.envelope().time_ms);
        // Little-endian, as in `stamp`.
        self.bytes[at..at + 8].copy_from_slice(&time_ms.to_le_bytes());
    }

    /// The archive, as sent in a binary WebSocket frame.
    pub fn as_bytes(&self) -> &[u8] {
        self.bytes.as_slice()
    }

    /// Length of the archive in bytes.
    pub fn len(&self) -> usize {
        self.bytes.len()
    }

    /// Always false: an archive is never empty. Present for clippy's `len_without_is_empty`.
    pub fn is_empty(&self) -> bool {
        self.bytes.is_empty()
    }

    /// The archived envelope, read in place without validation.
    pub fn envelope(&self) -> &ArchivedEnvelope {
        // SAFETY: `EncodedPush` is only built by `encode` (our own
        // serialization of a `ServerMessage::Push`) or `from_untrusted`
        // (checked access succeeded); the only mutation afterwards is
        // `stamp`, which overwrites four archived integers in place (any
        // bit pattern is a valid integer; no pointer or length changes);
        // and `AlignedVec` keeps the bytes 16-byte aligned.
        #[allow(unsafe_code)]
        let message = unsafe { access_trusted(self.bytes.as_slice()) };
        match message {
            ArchivedServerMessage::Push(env) => env,
            // Both constructors only admit the Push variant.
            other => unreachable!(
                "EncodedPush holds a {} message",
                archived_variant_name(other)
            ),
        }
    }
}

/// Where the archived integer `field` starts in `bytes` (it lies inside
/// them: it was reached through an access to `bytes`).
fn field_at(bytes: &AlignedVec, field: &rkyv::Archived<u64>) -> usize {
    let at = (field as *const rkyv::Archived<u64>).addr() - bytes.as_ptr().addr();
    assert!(at + 8 <= bytes.len(), "archived field outside its archive");
    at
}

impl PartialEq for EncodedPush {
    fn eq(&self, other: &EncodedPush) -> bool {
        self.as_bytes() == other.as_bytes()
    }
}

impl Eq for EncodedPush {}

impl std::fmt::Debug for EncodedPush {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("EncodedPush")
            .field("len", &self.bytes.len())
            .field("envelope", self.envelope())
            .finish()
    }
}

impl ArchivedEnvelope {
    /// Copies the archived envelope back into an owned [`Envelope`].
    pub fn to_envelope(&self) -> Envelope {
        Envelope {
            id: self.id.to_native(),
            offset: self.offset.to_native(),
            epoch: self.epoch.to_native(),
            channel: self.channel.as_str().to_owned(),
            sender: self.sender.as_str().to_owned(),
            time_ms: self.time_ms.to_native(),
            data_is_json: self.data_is_json,
            data: self.data.as_slice().to_vec(),
        }
    }
}

fn archived_variant_name(message: &ArchivedServerMessage) -> &'static str {
    match message {
        ArchivedServerMessage::Connect(_) => "connect",
        ArchivedServerMessage::Reply { .. } => "reply",
        ArchivedServerMessage::Error { .. } => "error",
        ArchivedServerMessage::Push(_) => "push",
        ArchivedServerMessage::History { .. } => "history",
        ArchivedServerMessage::Subscribed { .. } => "subscribed",
        ArchivedServerMessage::Unsubscribed { .. } => "unsubscribed",
        ArchivedServerMessage::Im(_) => "im",
        ArchivedServerMessage::Presence(_) => "presence",
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Random buffers per fuzz test; fewer under miri, which is ~1000x slower.
    const FUZZ_ROUNDS: usize = if cfg!(miri) { 200 } else { 10_000 };
    /// Ids per generator test.
    const ID_ROUNDS: u64 = if cfg!(miri) { 3_000 } else { 100_000 };
    use crate::client::{encode_reply_binary, Reply, ReplyResult, ServerMessage};

    const T0: u64 = MESSAGE_ID_EPOCH_UNIX_MS + 1_000_000;

    #[test]
    fn stamp_overwrites_the_archived_fields() {
        let mut unstored = sample(true, br#"{"a":[1,2]}"#);
        unstored.offset = 0;
        unstored.epoch = 0;
        for time_ms in [0, 1_700_000_000_000] {
            unstored.time_ms = time_ms;
            let mut push = EncodedPush::encode(&unstored);
            push.stamp(u64::MAX - 1, 42, 0x0102_0304_0506_0708, 1_800_000_000_000);
            let mut expected = unstored.clone();
            expected.id = u64::MAX - 1;
            expected.offset = 42;
            expected.epoch = 0x0102_0304_0506_0708;
            expected.time_ms = if time_ms == 0 {
                1_800_000_000_000
            } else {
                time_ms
            };
            // Byte for byte what encoding the stamped envelope gives, and
            // still a valid archive for the checked access.
            assert_eq!(push, EncodedPush::encode(&expected));
            let checked = EncodedPush::from_untrusted(push.as_bytes()).expect("valid archive");
            assert_eq!(checked.envelope().channel.as_str(), "news:sport");
            // `stamp_time` overwrites a set time too, and only the time.
            push.stamp_time(1_900_000_000_000);
            expected.time_ms = 1_900_000_000_000;
            assert_eq!(push, EncodedPush::encode(&expected));
        }
    }

    fn sample(data_is_json: bool, data: &[u8]) -> Envelope {
        Envelope {
            id: MessageId::from_parts(12_345, 3, 7, 9).as_u64(),
            offset: 42,
            epoch: 7,
            channel: "news:sport".to_owned(),
            sender: "bob".to_owned(),
            time_ms: 1_700_000_000_000,
            data_is_json,
            data: data.to_vec(),
        }
    }

    fn parse(bytes: &[u8]) -> serde_json::Value {
        serde_json::from_slice(bytes).expect("valid JSON")
    }

    #[test]
    fn message_id_parts_round_trip() {
        let id = MessageId::from_parts(MESSAGE_ID_MS_MAX, 63, 62, MESSAGE_ID_COUNTER_MAX);
        assert_eq!(id.ms_since_epoch(), MESSAGE_ID_MS_MAX);
        assert_eq!(id.node(), 63);
        assert_eq!(id.shard(), 62);
        assert_eq!(id.counter(), MESSAGE_ID_COUNTER_MAX);
        let id = MessageId::from_parts(5, 1, 2, 3);
        assert_eq!(id.as_u64(), (5 << 22) | (1 << 16) | (2 << 10) | 3);
        assert_eq!(id.unix_ms(), MESSAGE_ID_EPOCH_UNIX_MS + 5);
        assert_eq!(id.to_string(), id.as_u64().to_string());
    }

    #[test]
    fn message_id_gen_frozen_clock_is_unique_and_monotonic() {
        let mut id_gen = MessageIdGen::new(5, 9);
        let mut prev = id_gen.next(T0);
        let mut seen = std::collections::HashSet::new();
        seen.insert(prev);
        for _ in 0..ID_ROUNDS {
            let id = id_gen.next(T0);
            assert!(id > prev, "{id:?} <= {prev:?}");
            assert!(seen.insert(id));
            assert_eq!((id.node(), id.shard()), (5, 9));
            prev = id;
        }
        // ID_ROUNDS + 1 ids at 1024 per ms borrow ID_ROUNDS / 1024 ms from the future.
        assert_eq!(prev.unix_ms(), T0 + ID_ROUNDS / 1024);
        // When the real clock catches up, the generator keeps going from its
        // borrowed position, and then follows the clock again.
        let id = id_gen.next(T0 + 50);
        assert!(id > prev);
        let id = id_gen.next(T0 + 1_000);
        assert_eq!((id.unix_ms(), id.counter()), (T0 + 1_000, 0));
    }

    #[test]
    fn message_id_gen_backwards_clock_is_unique_and_monotonic() {
        let mut id_gen = MessageIdGen::new(0, 63);
        let mut prev = id_gen.next(T0);
        let mut seen = std::collections::HashSet::new();
        let mut rng = 0x9e37_79b9_7f4a_7c15_u64;
        for i in 0..ID_ROUNDS {
            // Mostly backwards, with occasional jumps forward.
            let now = if i % 1_000 == 0 {
                T0 + i / 10
            } else {
                T0 - xorshift(&mut rng) % 5_000
            };
            let id = id_gen.next(now);
            assert!(id > prev, "{id:?} <= {prev:?} at {now}");
            assert!(seen.insert(id));
            prev = id;
        }
    }

    #[test]
    fn message_id_gen_clock_before_epoch() {
        let mut id_gen = MessageIdGen::new(1, 1);
        let a = id_gen.next(0);
        let b = id_gen.next(0);
        assert_eq!((a.ms_since_epoch(), a.counter()), (0, 0));
        assert_eq!((b.ms_since_epoch(), b.counter()), (0, 1));
    }

    #[test]
    fn encoded_push_round_trips_through_untrusted() {
        for env in [
            sample(true, br#"{"a": [1, 2.50]}"#),
            sample(false, &[0, 159, 146, 150]),
        ] {
            let encoded = EncodedPush::encode(&env);
            assert_eq!(encoded.envelope().to_envelope(), env);
            let decoded = EncodedPush::from_untrusted(encoded.as_bytes()).expect("valid push");
            assert_eq!(decoded.envelope().to_envelope(), env);
            assert_eq!(decoded, encoded);
            assert_eq!(decoded.len(), encoded.as_bytes().len());
        }
    }

    #[test]
    fn encoded_push_matches_owned_server_message_encoding() {
        // The borrowed mirror must archive byte-for-byte like the owned enum.
        let env = sample(false, b"payload");
        let owned =
            rkyv::to_bytes::<rancor::Error>(&ServerMessage::Push(env.clone())).expect("serializes");
        assert_eq!(EncodedPush::encode(&env).as_bytes(), owned.as_slice());
    }

    #[test]
    fn encoded_push_untrusted_accepts_unaligned_input() {
        let env = sample(true, b"[1,2,3]");
        let encoded = EncodedPush::encode(&env);
        let mut shifted = vec![0_u8];
        shifted.extend_from_slice(encoded.as_bytes());
        let decoded = EncodedPush::from_untrusted(&shifted[1..]).expect("valid push");
        assert_eq!(decoded.envelope().to_envelope(), env);
    }

    #[test]
    fn encoded_push_untrusted_rejects_reply_archive() {
        let reply = encode_reply_binary(&Reply::Ok {
            id: 7,
            result: ReplyResult::Empty,
        });
        let error = EncodedPush::from_untrusted(&reply).expect_err("not a push");
        assert!(
            matches!(error, DecodeError::NotPush { variant: "reply" }),
            "{error}"
        );
    }

    #[test]
    fn encoded_push_untrusted_rejects_garbage() {
        let mut rng = 0x1234_5678_9abc_def1_u64;
        let valid = EncodedPush::encode(&sample(true, br#"{"k":"v"}"#));
        for round in 0..FUZZ_ROUNDS {
            let bytes: Vec<u8> = if round % 2 == 0 {
                let len = (xorshift(&mut rng) % 200) as usize;
                (0..len).map(|_| xorshift(&mut rng) as u8).collect()
            } else {
                // Mutate a valid archive: far more likely to get deep into validation.
                let mut bytes = valid.as_bytes().to_vec();
                for _ in 0..1 + xorshift(&mut rng) % 4 {
                    let at = (xorshift(&mut rng) % bytes.len() as u64) as usize;
                    bytes[at] = xorshift(&mut rng) as u8;
                }
                bytes
            };
            if let Ok(push) = EncodedPush::from_untrusted(&bytes) {
                // Whatever validated must be readable and renderable.
                let env = push.envelope();
                let _ = env.to_envelope();
                if !env.data_is_json {
                    parse(&encode_push_json(env));
                }
            }
        }
        assert!(EncodedPush::from_untrusted(&[]).is_err());
    }

    #[test]
    fn push_json_has_documented_shape() {
        let env = sample(true, br#"{"a": [1, 2.50]}"#);
        let encoded = EncodedPush::encode(&env);
        let json = encode_push_json(encoded.envelope());
        let text = std::str::from_utf8(&json).expect("utf-8");
        assert!(text.contains(r#""data":{"a": [1, 2.50]}"#), "{text}");
        let value = parse(&json);
        let push = &value["push"];
        assert_eq!(push["channel"], "news:sport");
        assert_eq!(push["id"], env.id.to_string());
        assert_eq!(push["offset"], 42);
        assert_eq!(push["epoch"], "7");
        assert_eq!(push["sender"], "bob");
        assert_eq!(push["time"], 1_700_000_000_000_u64);
        assert_eq!(push["data"]["a"][1], 2.5);
        assert!(push.get("b64data").is_none());
    }

    #[test]
    fn push_json_binary_data_and_zero_offsets() {
        let mut env = sample(false, &[0xff, 0x00, 0x10]);
        env.offset = 0;
        env.epoch = 0;
        env.sender = String::new();
        env.id = u64::MAX;
        let value = parse(&encode_push_json(EncodedPush::encode(&env).envelope()));
        let push = value["push"].as_object().expect("object");
        assert!(!push.contains_key("offset"));
        assert!(!push.contains_key("epoch"));
        assert!(!push.contains_key("data"));
        assert_eq!(push["b64data"], "/wAQ");
        assert_eq!(push["sender"], "");
        assert_eq!(push["id"], "18446744073709551615");
    }

    #[test]
    fn push_json_escapes_channel_and_sender() {
        let mut env = sample(true, b"null");
        env.channel = "a\"b\\c\n\u{1}\u{1f}\t\u{7f}é💡".to_owned();
        env.sender = "</script>\"\r\u{8}\u{c}".to_owned();
        let json = encode_push_json(EncodedPush::encode(&env).envelope());
        let value = parse(&json);
        assert_eq!(value["push"]["channel"], env.channel.as_str());
        assert_eq!(value["push"]["sender"], env.sender.as_str());
        assert!(value["push"]["data"].is_null());
        assert!(
            !json.iter().any(|&b| b < 0x20),
            "raw control byte in output"
        );
    }

    pub(crate) fn xorshift(state: &mut u64) -> u64 {
        *state ^= *state << 13;
        *state ^= *state >> 7;
        *state ^= *state << 17;
        *state
    }
}

/// rkyv `with` wrappers that archive a push as its bytes, for structs that
/// hold one and cross between processes (the store's IM requests and
/// answers, forwarded between the nodes of a cluster): the bytes are
/// checked again on the way in ([`EncodedPush::from_untrusted`]).
pub mod push_with {
    use std::sync::Arc;

    use rkyv::rancor::{Fallible, Source};
    use rkyv::ser::{Allocator, Writer};
    use rkyv::vec::{ArchivedVec, VecResolver};
    use rkyv::with::{ArchiveWith, DeserializeWith, SerializeWith};
    use rkyv::Place;

    use super::EncodedPush;

    /// An [`EncodedPush`] as its archive's bytes.
    pub struct AsBytes;
    /// An `Arc<EncodedPush>` as its archive's bytes (a new `Arc` on the
    /// way in: nothing is shared across a process boundary anyway).
    pub struct SharedAsBytes;

    fn resolve(bytes: &[u8], resolver: VecResolver, out: Place<ArchivedVec<u8>>) {
        ArchivedVec::resolve_from_len(bytes.len(), resolver, out);
    }

    fn check<E: Source>(bytes: &ArchivedVec<u8>) -> Result<EncodedPush, E> {
        EncodedPush::from_untrusted(bytes.as_slice()).map_err(E::new)
    }

    impl ArchiveWith<EncodedPush> for AsBytes {
        type Archived = ArchivedVec<u8>;
        type Resolver = VecResolver;
        fn resolve_with(field: &EncodedPush, resolver: VecResolver, out: Place<Self::Archived>) {
            resolve(field.as_bytes(), resolver, out);
        }
    }

    impl<S: Fallible + Allocator + Writer + ?Sized> SerializeWith<EncodedPush, S> for AsBytes {
        fn serialize_with(
            field: &EncodedPush,
            serializer: &mut S,
        ) -> Result<VecResolver, S::Error> {
            ArchivedVec::serialize_from_slice(field.as_bytes(), serializer)
        }
    }

    impl<D: Fallible + ?Sized> DeserializeWith<ArchivedVec<u8>, EncodedPush, D> for AsBytes
    where
        D::Error: Source,
    {
        fn deserialize_with(field: &ArchivedVec<u8>, _: &mut D) -> Result<EncodedPush, D::Error> {
            check(field)
        }
    }

    impl ArchiveWith<Arc<EncodedPush>> for SharedAsBytes {
        type Archived = ArchivedVec<u8>;
        type Resolver = VecResolver;
        fn resolve_with(
            field: &Arc<EncodedPush>,
            resolver: VecResolver,
            out: Place<Self::Archived>,
        ) {
            resolve(field.as_bytes(), resolver, out);
        }
    }

    impl<S: Fallible + Allocator + Writer + ?Sized> SerializeWith<Arc<EncodedPush>, S>
        for SharedAsBytes
    {
        fn serialize_with(
            field: &Arc<EncodedPush>,
            serializer: &mut S,
        ) -> Result<VecResolver, S::Error> {
            ArchivedVec::serialize_from_slice(field.as_bytes(), serializer)
        }
    }

    impl<D: Fallible + ?Sized> DeserializeWith<ArchivedVec<u8>, Arc<EncodedPush>, D> for SharedAsBytes
    where
        D::Error: Source,
    {
        fn deserialize_with(
            field: &ArchivedVec<u8>,
            _: &mut D,
        ) -> Result<Arc<EncodedPush>, D::Error> {
            check(field).map(Arc::new)
        }
    }
}
