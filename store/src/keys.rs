//! The on-disk format: keyspace names, key layouts and fixed-width value
//! encodings. Everything that decides what bytes hit the disk is here, so a
//! format change is one reviewable diff.
//!
//! Keyspaces:
//!
//! | keyspace | key | value |
//! |---|---|---|
//! | `meta` | `n` + stream name | stream id (u64 BE) |
//! | `meta` | `s` + stream id (BE) | [`StreamMeta`] |
//! | `meta` | `d` + stream id (BE) | empty: id of a reset stream whose garbage is still being deleted |
//! | `meta` | `i` | next stream id (u64 BE) |
//! | `entries` | stream id (BE) + offset (BE) | `EncodedPush` bytes |
//! | `dedup` | stream id (BE) + client msg id | [`DedupRecord`] |
//! | `dedup_by_time` | time ms (BE) + stream id (BE) + client msg id | empty |
//! | `cursors` | u16 BE len + user + u16 BE len + device + stream | [`CursorRecord`] |
//!
//! Integers are big-endian so keys sort numerically: entries of one stream
//! are contiguous and ordered by offset, and dedup records expire in time
//! order. Stream names map to compact u64 ids so the hot `entries` keys are
//! 16 bytes whatever the name.

pub(crate) const KEYSPACE_META: &str = "meta";
pub(crate) const KEYSPACE_ENTRIES: &str = "entries";
pub(crate) const KEYSPACE_DEDUP: &str = "dedup";
pub(crate) const KEYSPACE_DEDUP_BY_TIME: &str = "dedup_by_time";
pub(crate) const KEYSPACE_CURSORS: &str = "cursors";

pub(crate) const META_PREFIX_NAME: u8 = b'n';
pub(crate) const META_PREFIX_STREAM: u8 = b's';
pub(crate) const META_PREFIX_DROPPED: u8 = b'd';
pub(crate) const META_KEY_NEXT_STREAM_ID: &[u8] = b"i";

const STREAM_META_VERSION: u8 = 1;
const STREAM_META_BYTES: usize = 1 + 5 * 8;
const DEDUP_RECORD_BYTES: usize = 4 * 8;
const CURSOR_RECORD_BYTES: usize = 2 * 8;

/// Reads a big-endian u64 at `at`, or `None` if `bytes` is too short.
pub(crate) fn read_u64(bytes: &[u8], at: usize) -> Option<u64> {
    let end = at.checked_add(8)?;
    let chunk: [u8; 8] = bytes.get(at..end)?.try_into().ok()?;
    Some(u64::from_be_bytes(chunk))
}

pub(crate) fn meta_name_key(name: &str) -> Vec<u8> {
    let mut key = Vec::with_capacity(1 + name.len());
    key.push(META_PREFIX_NAME);
    key.extend_from_slice(name.as_bytes());
    key
}

pub(crate) fn meta_id_key(prefix: u8, stream_id: u64) -> [u8; 9] {
    let mut key = [prefix; 9];
    let [_, rest @ ..] = &mut key;
    *rest = stream_id.to_be_bytes();
    key
}

pub(crate) fn entry_key(stream_id: u64, offset: u64) -> [u8; 16] {
    let mut key = [0; 16];
    let (id_part, offset_part) = key.split_at_mut(8);
    id_part.copy_from_slice(&stream_id.to_be_bytes());
    offset_part.copy_from_slice(&offset.to_be_bytes());
    key
}

/// `(stream id, offset)` of an entries key.
pub(crate) fn entry_key_decode(key: &[u8]) -> Option<(u64, u64)> {
    if key.len() != 16 {
        return None;
    }
    Some((read_u64(key, 0)?, read_u64(key, 8)?))
}

pub(crate) fn dedup_key(stream_id: u64, client_msg_id: &str) -> Vec<u8> {
    let mut key = Vec::with_capacity(8 + client_msg_id.len());
    key.extend_from_slice(&stream_id.to_be_bytes());
    key.extend_from_slice(client_msg_id.as_bytes());
    key
}

pub(crate) fn dedup_time_key(time_ms: u64, stream_id: u64, client_msg_id: &str) -> Vec<u8> {
    let mut key = Vec::with_capacity(16 + client_msg_id.len());
    key.extend_from_slice(&time_ms.to_be_bytes());
    key.extend_from_slice(&stream_id.to_be_bytes());
    key.extend_from_slice(client_msg_id.as_bytes());
    key
}

/// `(time ms, the matching dedup key)` of a `dedup_by_time` key.
pub(crate) fn dedup_time_key_decode(key: &[u8]) -> Option<(u64, &[u8])> {
    let time_ms = read_u64(key, 0)?;
    let dedup_key = key.get(8..)?;
    if dedup_key.len() < 8 {
        return None;
    }
    Some((time_ms, dedup_key))
}

pub(crate) fn cursor_key(user: &str, device: &str, stream: &str) -> Vec<u8> {
    let mut key = Vec::with_capacity(4 + user.len() + device.len() + stream.len());
    for part in [user, device] {
        // Callers check lengths against CURSOR_ID_BYTES_MAX (< u16::MAX).
        let len = u16::try_from(part.len()).unwrap_or(u16::MAX);
        key.extend_from_slice(&len.to_be_bytes());
        key.extend_from_slice(part.as_bytes());
    }
    key.extend_from_slice(stream.as_bytes());
    key
}

/// Per-stream state, stored under `s` + id and cached by the writer.
///
/// Invariant: `1 <= first_offset <= next_offset`; the stored entries are
/// exactly the offsets `first_offset..next_offset`; `epoch != 0`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct StreamMeta {
    pub(crate) epoch: u64,
    pub(crate) first_offset: u64,
    pub(crate) next_offset: u64,
    pub(crate) count_max: u64,
    /// `u64::MAX` = no age limit.
    pub(crate) age_max_ms: u64,
}

impl StreamMeta {
    pub(crate) fn new(epoch: u64) -> StreamMeta {
        assert_ne!(epoch, 0);
        StreamMeta {
            epoch,
            first_offset: 1,
            next_offset: 1,
            count_max: u64::MAX,
            age_max_ms: u64::MAX,
        }
    }

    pub(crate) fn encode(&self) -> [u8; STREAM_META_BYTES] {
        assert!(self.epoch != 0 && self.first_offset >= 1);
        assert!(self.first_offset <= self.next_offset);
        let mut out = [0; STREAM_META_BYTES];
        let (version, rest) = out.split_at_mut(1);
        version.copy_from_slice(&[STREAM_META_VERSION]);
        let fields = [
            self.epoch,
            self.first_offset,
            self.next_offset,
            self.count_max,
            self.age_max_ms,
        ];
        for (chunk, field) in rest.chunks_exact_mut(8).zip(fields) {
            chunk.copy_from_slice(&field.to_be_bytes());
        }
        out
    }

    pub(crate) fn decode(bytes: &[u8]) -> Result<StreamMeta, String> {
        if bytes.len() != STREAM_META_BYTES {
            return Err(format!(
                "stream meta is {} bytes, expected {STREAM_META_BYTES}",
                bytes.len()
            ));
        }
        if bytes.first() != Some(&STREAM_META_VERSION) {
            return Err(format!("unknown stream meta version {:?}", bytes.first()));
        }
        let field = |idx: usize| read_u64(bytes, 1 + idx * 8).ok_or("stream meta too short");
        let meta = StreamMeta {
            epoch: field(0)?,
            first_offset: field(1)?,
            next_offset: field(2)?,
            count_max: field(3)?,
            age_max_ms: field(4)?,
        };
        if meta.epoch == 0 || meta.first_offset == 0 || meta.first_offset > meta.next_offset {
            return Err(format!("stream meta breaks its invariant: {meta:?}"));
        }
        Ok(meta)
    }
}

/// What a dedup entry remembers about the original append.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct DedupRecord {
    pub(crate) message_id: u64,
    pub(crate) offset: u64,
    pub(crate) epoch: u64,
    /// When the original was stored (writer clock, unix ms).
    pub(crate) time_ms: u64,
}

impl DedupRecord {
    pub(crate) fn encode(&self) -> [u8; DEDUP_RECORD_BYTES] {
        let mut out = [0; DEDUP_RECORD_BYTES];
        let fields = [self.message_id, self.offset, self.epoch, self.time_ms];
        for (chunk, field) in out.chunks_exact_mut(8).zip(fields) {
            chunk.copy_from_slice(&field.to_be_bytes());
        }
        out
    }

    pub(crate) fn decode(bytes: &[u8]) -> Option<DedupRecord> {
        if bytes.len() != DEDUP_RECORD_BYTES {
            return None;
        }
        Some(DedupRecord {
            message_id: read_u64(bytes, 0)?,
            offset: read_u64(bytes, 8)?,
            epoch: read_u64(bytes, 16)?,
            time_ms: read_u64(bytes, 24)?,
        })
    }
}

/// An acknowledged offset, tagged with the epoch it belongs to: after a
/// reset the old offset means nothing, so a cursor from another epoch reads
/// as absent.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct CursorRecord {
    pub(crate) offset: u64,
    pub(crate) epoch: u64,
}

impl CursorRecord {
    pub(crate) fn encode(&self) -> [u8; CURSOR_RECORD_BYTES] {
        let mut out = [0; CURSOR_RECORD_BYTES];
        let (offset, epoch) = out.split_at_mut(8);
        offset.copy_from_slice(&self.offset.to_be_bytes());
        epoch.copy_from_slice(&self.epoch.to_be_bytes());
        out
    }

    pub(crate) fn decode(bytes: &[u8]) -> Option<CursorRecord> {
        if bytes.len() != CURSOR_RECORD_BYTES {
            return None;
        }
        Some(CursorRecord {
            offset: read_u64(bytes, 0)?,
            epoch: read_u64(bytes, 8)?,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn entry_keys_sort_by_stream_then_offset() {
        let mut keys = vec![
            entry_key(2, 1),
            entry_key(1, 256),
            entry_key(1, 2),
            entry_key(1, u64::MAX),
        ];
        keys.sort();
        assert_eq!(
            keys,
            vec![
                entry_key(1, 2),
                entry_key(1, 256),
                entry_key(1, u64::MAX),
                entry_key(2, 1)
            ]
        );
        assert_eq!(entry_key_decode(&entry_key(7, 9)), Some((7, 9)));
        assert_eq!(entry_key_decode(b"short"), None);
    }

    #[test]
    fn stream_meta_round_trips_and_rejects_garbage() {
        let meta = StreamMeta {
            epoch: 42,
            first_offset: 3,
            next_offset: 10,
            count_max: 5,
            age_max_ms: u64::MAX,
        };
        assert_eq!(StreamMeta::decode(&meta.encode()), Ok(meta));
        assert!(StreamMeta::decode(b"").is_err());
        let mut bad = meta.encode();
        bad[0] = 99;
        assert!(StreamMeta::decode(&bad).is_err());
    }

    #[test]
    fn records_round_trip() {
        let dedup = DedupRecord {
            message_id: 1,
            offset: 2,
            epoch: 3,
            time_ms: 4,
        };
        assert_eq!(DedupRecord::decode(&dedup.encode()), Some(dedup));
        let cursor = CursorRecord {
            offset: 5,
            epoch: 6,
        };
        assert_eq!(CursorRecord::decode(&cursor.encode()), Some(cursor));
        let key = dedup_time_key(9, 1, "abc");
        assert_eq!(
            dedup_time_key_decode(&key),
            Some((9, dedup_key(1, "abc").as_slice()))
        );
    }
}
