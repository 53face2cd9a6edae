//! The binary (rkyv) subprotocol: same commands, archived frames.

use crate::e2e;
use crate::util::*;
use ringcast_protocol::client::{
    encode_binary_command, BinaryCommand, BinaryCommandBody, ServerMessage, SUBPROTOCOL_BINARY,
};
use tungstenite::Message;

pub fn read_server(ws: &mut Ws) -> ServerMessage {
    loop {
        match ws.read().unwrap() {
            Message::Binary(bytes) => {
                return ringcast_protocol::client::decode_server_binary(&bytes).unwrap()
            }
            Message::Ping(_) => continue,
            other => panic!("expected binary, got {other:?}"),
        }
    }
}

e2e!(
    binary_clients_subscribe_publish_and_receive_archived_pushes,
    |driver| {
        let engine = start(config(driver, 2));
        let (mut bin, hello) = connect_with(&engine, &token("bina"), Some(SUBPROTOCOL_BINARY));
        assert_eq!(hello["connect"]["user"], "bina");
        let (mut json_client, _) = connect(&engine, "jason");
        subscribe(&mut json_client, 1, "room:mixed");

        let cmd = BinaryCommand {
            id: 7,
            body: BinaryCommandBody::Subscribe {
                channel: "room:mixed".into(),
                since: None,
            },
        };
        bin.send(Message::Binary(encode_binary_command(&cmd)))
            .unwrap();
        assert!(matches!(
            read_server(&mut bin),
            ServerMessage::Reply { id: 7, .. }
        ));

        let cmd = BinaryCommand {
            id: 8,
            body: BinaryCommandBody::Publish {
                channel: "room:mixed".into(),
                data: vec![0, 159, 255],
                data_is_json: false,
                client_msg_id: None,
            },
        };
        bin.send(Message::Binary(encode_binary_command(&cmd)))
            .unwrap();
        let mut got_reply = false;
        let mut got_push = false;
        for _ in 0..2 {
            match read_server(&mut bin) {
                ServerMessage::Reply { id: 8, .. } => got_reply = true,
                ServerMessage::Push(env) => {
                    assert_eq!(env.data, vec![0, 159, 255]);
                    assert_eq!(env.sender, "bina");
                    got_push = true;
                }
                other => panic!("unexpected {other:?}"),
            }
        }
        assert!(got_reply && got_push);
        // The JSON client sees the same publication, base64 encoded.
        let push = read_json(&mut json_client);
        assert_eq!(push["push"]["b64data"], "AJ//");

        // Garbage that is not an archive closes with 4006 (no id to answer).
        bin.send(Message::Binary(vec![1, 2, 3])).unwrap();
        assert_eq!(read_close_code(&mut bin), Some(4006));
        engine.shutdown();
    }
);
