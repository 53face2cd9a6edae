//! The store's decoders of what it reads back from disk, for the fuzz
//! targets (`engine/fuzz`): not part of the store's API.

use crate::keys::{
    dedup_time_key_decode, dm_policy_byte, dm_policy_decode, entry_key, entry_key_decode,
    im_member_key, im_member_key_decode, im_uact_key, im_uact_key_decode, im_uconv_key,
    im_uconv_key_decode, read_u64, seq_key, seq_key_decode, ConvRecord, CursorRecord, DeadValue,
    DedupRecord, ImCounter, MemberRecord, OutboxValue, StreamMeta, UConvRecord,
};

/// Runs every key and record decoder on `bytes`. None may panic, and
/// whatever decodes must encode back to the same bytes (the formats have
/// no slack a corrupted record could hide in).
pub fn decode_records(bytes: &[u8]) {
    if let Some((stream_id, offset)) = entry_key_decode(bytes) {
        assert_eq!(entry_key(stream_id, offset).as_slice(), bytes);
    }
    if let Some((_time_ms, dedup_key)) = dedup_time_key_decode(bytes) {
        assert!(dedup_key.len() >= 8 && dedup_key.len() + 8 == bytes.len());
    }
    if let Ok(meta) = StreamMeta::decode(bytes) {
        assert_eq!(meta.encode().as_slice(), bytes);
    }
    if let Some(record) = DedupRecord::decode(bytes) {
        assert_eq!(record.encode().as_slice(), bytes);
    }
    if let Some(record) = CursorRecord::decode(bytes) {
        assert_eq!(record.encode().as_slice(), bytes);
    }
    if let Some(seq) = seq_key_decode(bytes) {
        assert_eq!(seq_key(seq).as_slice(), bytes);
    }
    if let Ok(value) = OutboxValue::decode(bytes) {
        assert_eq!(value.encode(), bytes);
        // The entry is validated as a push; garbage is an error, not a panic.
        let _ = value.to_record(1);
    }
    if let Ok((attempts, dead_at_ms, last_error, outbox_value)) = DeadValue::decode(bytes) {
        assert_eq!(
            DeadValue::encode(attempts, dead_at_ms, last_error, outbox_value),
            bytes
        );
        let _ = DeadValue::to_record(1, bytes);
    }
    if let Ok(record) = ConvRecord::decode(bytes) {
        assert_eq!(record.encode(), bytes);
    }
    if let Ok(record) = UConvRecord::decode(bytes) {
        // Two forms are not canonical: a record written before delivery
        // receipts has no `recv_offset` and re-encodes with it (0); a DM's
        // `visible_from` of 0 written out is left out again.
        let again = record.encode();
        if again != bytes {
            let zeros = [0u8; 8];
            let recv_added = again == [bytes, zeros.as_slice()].concat();
            let zero_visible_dropped = bytes == [again.as_slice(), zeros.as_slice()].concat();
            assert!(recv_added || zero_visible_dropped, "{bytes:?} -> {again:?}");
        }
        assert_eq!(UConvRecord::decode(&again), Ok(record));
    }
    if let Ok(counter) = ImCounter::decode(bytes) {
        assert_eq!(counter.encode().as_slice(), bytes);
    }
    if let Some((user, stream_id)) = im_uconv_key_decode(bytes) {
        assert_eq!(im_uconv_key(user, stream_id), bytes);
    }
    if let Some((user, time_ms, stream_id)) = im_uact_key_decode(bytes) {
        assert_eq!(im_uact_key(user, time_ms, stream_id), bytes);
    }
    if let Ok(record) = MemberRecord::decode(bytes) {
        assert_eq!(record.encode(), bytes);
    }
    if let Some(user) = read_u64(bytes, 0).and_then(|id| im_member_key_decode(bytes, id)) {
        let id = read_u64(bytes, 0).unwrap_or_default();
        assert_eq!(im_member_key(id, user), bytes);
    }
    if let Ok(policy) = dm_policy_decode(bytes) {
        assert_eq!([dm_policy_byte(policy)].as_slice(), bytes);
    }
    for at in [0, 8, bytes.len().saturating_sub(8), usize::MAX] {
        let _ = read_u64(bytes, at);
    }
}
