//! The JSON body of a webhook request, built from an outbox record.
//!
//! ```json
//! {"id":"<event id>","type":"message.stored","time_ms":1700000000000,"user":"alice",
//!  "channel":"user:bob","offset":7,"epoch":"123","message_id":"456","sender":"alice",
//!  "data":{...}, ...the engine's fields}
//! ```
//!
//! Ids and epochs are decimal strings (u64s, past JavaScript's exact
//! integers), as in pushes and history. `data` is the message's JSON as
//! stored; binary data goes base64-encoded in `b64data` instead. The message
//! fields are present for events that rode a stored message
//! (`message.stored`, `message.undelivered`); the fields the engine wrote
//! with the event (its body, a JSON object) follow, except any that would
//! repeat a field above.

use std::collections::BTreeMap;

use ringcast_store::{OutboxKind, OutboxRecord};
use serde_json::value::RawValue;

/// The `type` of each kind of event.
pub fn type_name(kind: OutboxKind) -> &'static str {
    match kind {
        OutboxKind::Message => "message.stored",
        OutboxKind::Online => "user.online",
        OutboxKind::Offline => "user.offline",
        OutboxKind::Undelivered => "message.undelivered",
    }
}

/// The event id as the body and `webhook-id` carry it.
pub fn event_id(record: &OutboxRecord) -> String {
    record.event_id.to_string()
}

fn push_str(out: &mut Vec<u8>, value: &str) {
    // Writing a str into a Vec cannot fail.
    let _ = serde_json::to_writer(&mut *out, value);
}

fn push_field(out: &mut Vec<u8>, name: &str) {
    if out.len() > 1 {
        out.push(b',');
    }
    push_str(out, name);
    out.push(b':');
}

/// The request body of `record`.
pub fn build(record: &OutboxRecord) -> Vec<u8> {
    let mut out = Vec::with_capacity(256 + record.body.len());
    out.push(b'{');
    let mut written: Vec<&str> = vec!["id", "type", "time_ms", "user"];
    push_field(&mut out, "id");
    push_str(&mut out, &event_id(record));
    push_field(&mut out, "type");
    push_str(&mut out, type_name(record.kind));
    push_field(&mut out, "time_ms");
    out.extend_from_slice(record.time_ms.to_string().as_bytes());
    push_field(&mut out, "user");
    push_str(&mut out, &record.key);
    if let Some(entry) = &record.entry {
        let env = entry.envelope();
        push_field(&mut out, "channel");
        push_str(&mut out, env.channel.as_str());
        push_field(&mut out, "offset");
        out.extend_from_slice(env.offset.to_native().to_string().as_bytes());
        push_field(&mut out, "epoch");
        push_str(&mut out, &env.epoch.to_native().to_string());
        push_field(&mut out, "message_id");
        push_str(&mut out, &env.id.to_native().to_string());
        push_field(&mut out, "sender");
        push_str(&mut out, env.sender.as_str());
        let data = env.data.as_slice();
        // Stored JSON data was validated when it came in; check anyway, so
        // a body is always valid JSON.
        let raw = if env.data_is_json {
            serde_json::from_slice::<&RawValue>(data).ok()
        } else {
            None
        };
        match raw {
            Some(raw) => {
                push_field(&mut out, "data");
                out.extend_from_slice(raw.get().as_bytes());
            }
            None => {
                use base64::Engine as _;
                push_field(&mut out, "b64data");
                push_str(
                    &mut out,
                    &base64::engine::general_purpose::STANDARD.encode(data),
                );
            }
        }
        written.extend([
            "channel",
            "offset",
            "epoch",
            "message_id",
            "sender",
            "data",
            "b64data",
        ]);
    }
    // The engine's own fields; a body that is not an object adds nothing.
    if let Ok(extra) = serde_json::from_slice::<BTreeMap<&str, &RawValue>>(&record.body) {
        for (name, value) in extra {
            if !written.contains(&name) {
                push_field(&mut out, name);
                out.extend_from_slice(value.get().as_bytes());
            }
        }
    }
    out.push(b'}');
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use ringcast_protocol::envelope::{EncodedPush, Envelope};

    fn record(kind: OutboxKind, entry: Option<EncodedPush>, body: &[u8]) -> OutboxRecord {
        OutboxRecord {
            seq: 3,
            event_id: u64::MAX - 1,
            kind,
            key: "al\"ice".into(),
            due_ms: 0,
            time_ms: 1_700_000_000_123,
            body: body.to_vec(),
            entry,
        }
    }

    fn entry(data: &[u8], data_is_json: bool) -> EncodedPush {
        EncodedPush::encode(&Envelope {
            id: 456,
            offset: 7,
            epoch: u64::MAX,
            channel: "user:bob".into(),
            sender: "alice".into(),
            time_ms: 1,
            data_is_json,
            data: data.to_vec(),
        })
    }

    #[test]
    fn a_message_event_carries_the_stored_message() {
        let body = build(&record(
            OutboxKind::Message,
            Some(entry(br#"{"text": "hi"}"#, true)),
            br#"{"client":"42","user":"ignored","to":"bob"}"#,
        ));
        let value: serde_json::Value = serde_json::from_slice(&body).expect("valid JSON");
        assert_eq!(
            value,
            serde_json::json!({
                "id": (u64::MAX - 1).to_string(),
                "type": "message.stored",
                "time_ms": 1_700_000_000_123u64,
                "user": "al\"ice",
                "channel": "user:bob",
                "offset": 7,
                "epoch": u64::MAX.to_string(),
                "message_id": "456",
                "sender": "alice",
                "data": {"text": "hi"},
                "client": "42",
                "to": "bob",
            })
        );
        // The data is copied as stored, byte for byte.
        assert!(std::str::from_utf8(&body)
            .expect("utf-8")
            .contains(r#""data":{"text": "hi"}"#));
    }

    #[test]
    fn binary_data_goes_in_b64data_and_presence_events_are_small() {
        let body = build(&record(
            OutboxKind::Undelivered,
            Some(entry(&[0, 1, 2], false)),
            b"",
        ));
        let value: serde_json::Value = serde_json::from_slice(&body).expect("valid JSON");
        assert_eq!(value["type"], "message.undelivered");
        assert_eq!(value["b64data"], "AAEC");
        assert!(value.get("data").is_none());
        let body = build(&record(OutboxKind::Online, None, br#"{"client":"9"}"#));
        let value: serde_json::Value = serde_json::from_slice(&body).expect("valid JSON");
        assert_eq!(
            value,
            serde_json::json!({"id": (u64::MAX - 1).to_string(), "type": "user.online",
                "time_ms": 1_700_000_000_123u64, "user": "al\"ice", "client": "9"})
        );
        assert_eq!(type_name(OutboxKind::Offline), "user.offline");
    }
}
