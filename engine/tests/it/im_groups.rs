//! Groups over real sockets (`docs/im.md`, step 2), on three shards: a
//! group entry reaches every device of every member wherever it is, with
//! no subscribe; a removed member gets the removal entry and nothing after
//! it on every device; the roles, mutes, the member limit and dissolve are
//! refused with their codes; history keeps to a member's window; the
//! conversation list and the sync at connect show the group with each
//! member's unread.

use serde_json::{json, Value};

use crate::util::*;

const SHARDS: u16 = 3;
/// The member limit of the test's groups.
const MEMBERS_MAX: u32 = 72;

pub(crate) fn im_config(
    driver: ringcast_engine::config::Driver,
) -> ringcast_engine::config::Config {
    let mut config = config(driver, SHARDS);
    config.im.enabled = true;
    config.im.group_members_max = MEMBERS_MAX;
    config
}

/// A connection of `user` on shard `shard`, its IM sync beside it
/// (`im_dm::im_connect` without extra query parameters).
pub(crate) fn im_connect(engine: &ringcast_engine::Engine, user: &str, shard: u64) -> (Ws, Value) {
    crate::im_dm::im_connect(engine, user, "", Some(shard))
}

/// Sends a command; returns its reply and the pushes that came before it.
pub(crate) fn call(ws: &mut Ws, id: u64, method: &str, params: Value) -> (Value, Vec<Value>) {
    send_json(ws, json!({"id": id, "method": method, "params": params}));
    let mut pushes = Vec::new();
    loop {
        let message = read_json(ws);
        match message.get("push") {
            Some(push) => pushes.push(push.clone()),
            None => {
                assert_eq!(message["id"], id, "reply id: {message}");
                return (message, pushes);
            }
        }
    }
}

pub(crate) fn next_push(ws: &mut Ws) -> Value {
    let message = read_json(ws);
    message
        .get("push")
        .unwrap_or_else(|| panic!("expected a push, got {message}"))
        .clone()
}

/// Nothing but the reply to a ping is waiting: no push, no event.
pub(crate) fn nothing_waiting(ws: &mut Ws, id: u64) {
    send_json(ws, json!({"id": id, "method": "ping"}));
    assert_eq!(
        read_json(ws),
        json!({"id": id, "result": {}}),
        "nothing before the pong"
    );
}

pub(crate) fn code(reply: &Value) -> &Value {
    &reply["error"]["code"]
}

fn text(push: &Value) -> &Value {
    &push["data"]["data"]["text"]
}

pub(crate) fn say(ws: &mut Ws, id: u64, conv: &str, words: &str) -> (Value, Vec<Value>) {
    call(
        ws,
        id,
        "msg_send",
        json!({"conv": conv, "kind": "text", "data": {"text": words}}),
    )
}

crate::e2e!(
    a_group_reaches_every_device_of_its_members_and_a_removed_one_gets_nothing_after,
    |driver| {
        let engine = start(im_config(driver));
        let members: Vec<String> = (0..49).map(|n| format!("m{n:02}")).collect();
        // Devices: the owner, m00 twice, m01 (to be removed) twice, m02 twice,
        // m03 once; some on each shard.
        let layout: [(&str, u64); 8] = [
            ("owner", 0),
            ("m00", 0),
            ("m00", 1),
            ("m01", 1),
            ("m01", 2),
            ("m02", 2),
            ("m02", 0),
            ("m03", 1),
        ];
        let mut devices: Vec<(String, Ws)> = layout
            .iter()
            .map(|(user, shard)| ((*user).to_owned(), im_connect(&engine, user, *shard).0))
            .collect();
        let (mut outsider, _) = im_connect(&engine, "zed", 2);

        // Create: 50 members; everyone online gets the create entry unsubscribed.
        let (reply, own) = call(
            &mut devices[0].1,
            1,
            "group_create",
            json!({"name": "team", "members": members, "client_msg_id": "c1"}),
        );
        let conv = reply["result"]["conv"]
            .as_str()
            .unwrap_or_else(|| panic!("{reply}"))
            .to_owned();
        // Named from the creator and its client_msg_id (a retry's name).
        assert!(conv.starts_with("grp:") && conv.len() == 4 + 26, "{reply}");
        assert_eq!(reply["result"]["offset"], 1);
        assert_eq!(own.len(), 1, "the owner's own push, then the reply");
        let create = &own[0];
        assert_eq!(create["data"]["kind"], "member");
        assert_eq!(create["data"]["data"]["op"], "create");
        assert_eq!(create["data"]["data"]["actor"], "owner");
        assert_eq!(
            create["data"]["data"]["targets"].as_array().unwrap().len(),
            49
        );
        for (user, ws) in devices.iter_mut().skip(1) {
            assert_eq!(&next_push(ws), create, "{user} gets the create entry");
        }
        nothing_waiting(&mut outsider, 1);

        // A message from a member's device: all devices, its own included.
        let (reply, own) = say(&mut devices[1].1, 2, &conv, "hello");
        assert_eq!(reply["result"]["offset"], 2, "{reply}");
        assert_eq!(own.len(), 1);
        for (user, ws) in devices
            .iter_mut()
            .enumerate()
            .filter(|(i, _)| *i != 1)
            .map(|(_, d)| d)
        {
            let push = next_push(ws);
            assert_eq!(text(&push), "hello", "{user}");
            assert_eq!(push["sender"], "m00");
        }

        // Roles: a plain member may not remove (103); the owner may.
        let (reply, _) = call(
            &mut devices[5].1,
            3,
            "group_remove",
            json!({"conv": conv, "users": ["m03"]}),
        );
        assert_eq!(code(&reply), 103, "{reply}");
        let (reply, own) = call(
            &mut devices[0].1,
            4,
            "group_remove",
            json!({"conv": conv, "users": ["m01"]}),
        );
        assert_eq!(reply["result"]["offset"], 3, "{reply}");
        let removal = own[0].clone();
        assert_eq!(removal["data"]["data"]["op"], "remove");
        for (user, ws) in devices.iter_mut().skip(1) {
            assert_eq!(next_push(ws), removal, "{user} gets the removal entry");
        }

        // After it: the others receive, m01 on neither device.
        let (reply, _) = say(&mut devices[0].1, 5, &conv, "after");
        assert_eq!(reply["result"]["offset"], 4);
        for (index, (user, ws)) in devices.iter_mut().enumerate().skip(1) {
            if user == "m01" {
                nothing_waiting(ws, 100 + index as u64);
            } else {
                assert_eq!(text(&next_push(ws)), "after", "{user}");
            }
        }
        // echo: false: the reply and no push on the sending connection,
        // its user's other device and every other member get it.
        let (reply, own) = call(
            &mut devices[1].1,
            30,
            "msg_send",
            json!({"conv": conv, "kind": "text", "data": {"text": "quiet"}, "echo": false}),
        );
        assert!(own.is_empty(), "no push of its own: {own:?}");
        let quiet = reply["result"]["offset"].clone();
        for (index, (user, ws)) in devices.iter_mut().enumerate() {
            if index == 1 {
                nothing_waiting(ws, 300);
            } else if user == "m01" {
                nothing_waiting(ws, 300 + index as u64);
            } else {
                let push = next_push(ws);
                assert_eq!(
                    (text(&push), &push["offset"]),
                    (&json!("quiet"), &quiet),
                    "{user}"
                );
            }
        }
        let (reply, _) = say(&mut devices[3].1, 6, &conv, "let me in");
        assert_eq!(code(&reply), 123, "a removed member cannot send: {reply}");

        // Mute: the muted member gets 122, the others may still send.
        let until = 4_000_000_000_000_u64;
        let (reply, own) = call(
            &mut devices[0].1,
            7,
            "group_mute",
            json!({"conv": conv, "user": "m02", "until_ms": until}),
        );
        assert_eq!(reply["result"]["offset"], 6, "{reply}");
        assert_eq!(own[0]["data"]["data"]["op"], "mute");
        for (user, ws) in devices.iter_mut().skip(1).filter(|(user, _)| user != "m01") {
            assert_eq!(next_push(ws), own[0], "{user} gets the mute entry");
        }
        let (reply, _) = say(&mut devices[5].1, 8, &conv, "muted?");
        assert_eq!(code(&reply), 122, "{reply}");

        // History: members read it; the removed one nothing (123, without
        // `im.history_after_leave`: im_group_ops holds both values); one
        // who never was a member 123 too.
        let history = |ws: &mut Ws, id: u64| call(ws, id, "history", json!({"stream": conv})).0;
        let offsets = |page: &Value| -> Vec<u64> {
            page["result"]["publications"]
                .as_array()
                .unwrap_or_else(|| panic!("{page}"))
                .iter()
                .map(|p| p["offset"].as_u64().unwrap())
                .collect()
        };
        assert_eq!(code(&history(&mut outsider, 2)), 123);
        assert_eq!(offsets(&history(&mut devices[7].1, 9)), [1, 2, 3, 4, 5, 6]);
        assert_eq!(code(&history(&mut devices[3].1, 10)), 123);

        // The list: the group, its name, the member's role and unread
        // (messages only, member entries do not count).
        let (list, _) = call(&mut devices[7].1, 11, "conv_list", json!({}));
        let entry = &list["result"]["convs"][0];
        assert_eq!(entry["conv"], conv.as_str(), "{list}");
        assert_eq!(entry["unread"], 3, "{list}");
        assert_eq!(entry["group"]["name"], "team");
        assert_eq!(entry["group"]["role"], "member");
        assert_eq!(entry["group"]["member_count"], 49);
        let (list, _) = call(&mut devices[3].1, 12, "conv_list", json!({}));
        let entry = &list["result"]["convs"][0];
        assert_eq!(entry["group"]["left"], true, "{list}");
        assert_eq!(entry["group"].get("role"), None);
        assert_eq!(
            entry["unread"], 1,
            "the removed member's unread stops at its window"
        );
        // A new device's sync carries the same.
        let (_, sync) = im_connect(&engine, "m03", 2);
        let entry = &sync["convs"][0];
        assert_eq!(entry["conv"], conv.as_str(), "{sync}");
        assert_eq!(entry["unread"], 3);
        assert_eq!(entry["group"]["name"], "team");
        // `read` clears it and the member's other device is told.
        let (reply, _) = call(
            &mut devices[7].1,
            13,
            "read",
            json!({"conv": conv, "offset": 6}),
        );
        assert_eq!(reply["result"]["unread"], 0, "{reply}");
        // The other members' connections get its receipt (50 members: under
        // `im.group_receipts_members_max`); the removed member's do not.
        let receipt = json!({"receipt": {"conv": conv, "user": "m03", "read": 6}});
        for (user, ws) in devices.iter_mut().filter(|(u, _)| u != "m01" && u != "m03") {
            assert_eq!(read_json(ws), receipt, "{user}");
        }
        assert_eq!(
            code(&call(&mut outsider, 3, "read", json!({"conv": conv, "offset": 1})).0),
            123
        );

        // Past 64 recipients the sink hands the entry to every shard, each
        // picks its own users: 21 more members, then a message.
        let more: Vec<String> = (49..70).map(|n| format!("m{n:02}")).collect();
        let (reply, own) = call(
            &mut devices[0].1,
            14,
            "group_add",
            json!({"conv": conv, "users": more}),
        );
        assert_eq!(reply["result"]["offset"], 7, "{reply}");
        let added = own[0].clone();
        let (reply, _) = say(&mut devices[0].1, 15, &conv, "seventy");
        assert_eq!(reply["result"]["offset"], 8);
        for (index, (user, ws)) in devices.iter_mut().enumerate().skip(1) {
            if user == "m01" {
                nothing_waiting(ws, 200 + index as u64);
                continue;
            }
            assert_eq!(next_push(ws), added, "{user}");
            assert_eq!(text(&next_push(ws)), "seventy", "{user}");
        }
        nothing_waiting(&mut outsider, 4);

        // The member limit (72 with the owner): 3 more is one too many.
        let (reply, _) = call(
            &mut devices[0].1,
            16,
            "group_add",
            json!({"conv": conv, "users": ["x1", "x2", "x3"]}),
        );
        assert_eq!(code(&reply), 124, "{reply}");

        // Members and info, for members only.
        let (page, _) = call(
            &mut devices[7].1,
            17,
            "group_members",
            json!({"conv": conv, "limit": 60}),
        );
        let listed = page["result"]["members"]
            .as_array()
            .unwrap_or_else(|| panic!("{page}"));
        assert_eq!(listed.len(), 60);
        let after = page["result"]["next"]
            .as_str()
            .expect("a next page")
            .to_owned();
        let (page, _) = call(
            &mut devices[7].1,
            18,
            "group_members",
            json!({"conv": conv, "after": after, "limit": 60}),
        );
        let rest = page["result"]["members"].as_array().unwrap();
        assert_eq!(
            rest.len(),
            10,
            "70 members after the removal and the add: {page}"
        );
        assert_eq!(page["result"].get("next"), None);
        let owner = listed
            .iter()
            .chain(rest)
            .find(|m| m["user"] == "owner")
            .unwrap();
        assert_eq!(owner["role"], "owner");
        let (info, _) = call(&mut devices[7].1, 19, "group_info", json!({"conv": conv}));
        assert_eq!(info["result"]["owner"], "owner", "{info}");
        assert_eq!(info["result"]["member_count"], 70);
        assert_eq!(info["result"]["members_max"], MEMBERS_MAX);
        assert_eq!(
            code(&call(&mut outsider, 5, "group_info", json!({"conv": conv})).0),
            123
        );
        assert_eq!(
            code(
                &call(
                    &mut devices[3].1,
                    20,
                    "group_members",
                    json!({"conv": conv})
                )
                .0
            ),
            123
        );

        // Presence by conversation: every member's state, for members.
        let (reply, _) = call(
            &mut devices[7].1,
            40,
            "presence_query",
            json!({"conv": conv}),
        );
        let states = reply["result"]["users"]
            .as_array()
            .unwrap_or_else(|| panic!("{reply}"));
        assert_eq!(states.len(), 70, "{reply}");
        let mut online: Vec<&str> = states
            .iter()
            .filter(|state| state["online"] == true)
            .map(|state| state["user"].as_str().unwrap())
            .collect();
        online.sort_unstable();
        assert_eq!(
            online,
            ["m00", "m02", "m03", "owner"],
            "m01 is no member now"
        );
        let (reply, _) = call(&mut outsider, 6, "presence_query", json!({"conv": conv}));
        assert_eq!(code(&reply), 123);

        // Dissolve: a member may not (103); the owner may, everyone gets
        // it, and later writes get 121.
        let (reply, _) = call(
            &mut devices[7].1,
            21,
            "group_dissolve",
            json!({"conv": conv}),
        );
        assert_eq!(code(&reply), 103, "{reply}");
        let (reply, own) = call(
            &mut devices[0].1,
            22,
            "group_dissolve",
            json!({"conv": conv}),
        );
        assert_eq!(reply["result"]["offset"], 9, "{reply}");
        for (user, ws) in devices.iter_mut().skip(1) {
            if user != "m01" {
                assert_eq!(next_push(ws), own[0], "{user}");
            }
        }
        let (reply, _) = say(&mut devices[1].1, 23, &conv, "anyone?");
        assert_eq!(code(&reply), 121, "{reply}");
        engine.shutdown();
    }
);

crate::e2e!(
    the_group_api_twins_act_for_a_user_or_for_the_system,
    |driver| {
        let engine = start(im_config(driver));
        let (mut alice, _) = im_connect(&engine, "alice", 0);
        let (mut bob, _) = im_connect(&engine, "bob", 1);
        let (mut carol, _) = im_connect(&engine, "carol", 2);
        let post =
            |path: &str, body: Value| api(&engine, "POST", &format!("/api/im/{path}"), Some(body));

        // The system creates a group for its owner, with a gid of its own.
        let (status, created) = post(
            "group_create",
            json!({"owner": "alice", "conv": "grp:backend-1", "name": "ops", "members": ["bob", "carol"]}),
        );
        assert_eq!(status, 200, "{created}");
        assert_eq!(created["conv"], "grp:backend-1");
        for ws in [&mut alice, &mut bob, &mut carol] {
            let push = next_push(ws);
            assert_eq!(push["data"]["data"]["op"], "create");
            assert_eq!(push["data"]["data"]["actor"], "", "the system acted");
            assert_eq!(push["data"]["data"]["owner"], "alice");
        }
        let conv = "grp:backend-1";
        // A user may not name an owner, a gid or a member limit.
        let (status, error) = post(
            "group_create",
            json!({"as_user": "bob", "owner": "alice", "name": "x"}),
        );
        assert_eq!(status, 400, "{error}");
        let (status, _) = post(
            "group_members_max",
            json!({"as_user": "alice", "conv": conv, "members_max": 5}),
        );
        assert_eq!(status, 400);

        // As a user, the roles apply: bob (a member) may not remove carol.
        let (status, error) = post(
            "group_remove",
            json!({"as_user": "bob", "conv": conv, "users": ["carol"]}),
        );
        assert_eq!(status, 403, "{error}");
        // The owner may make bob an admin, through the API as through a command.
        let (status, role) = post(
            "group_role",
            json!({"as_user": "alice", "conv": conv, "user": "bob", "role": "admin"}),
        );
        assert_eq!(status, 200, "{role}");
        for ws in [&mut alice, &mut bob, &mut carol] {
            assert_eq!(next_push(ws)["data"]["data"]["op"], "role");
        }

        // The system's member limit: 3, so a fourth member is refused (409).
        let (status, limit) = post("group_members_max", json!({"conv": conv, "members_max": 3}));
        assert_eq!(status, 200, "{limit}");
        for ws in [&mut alice, &mut bob, &mut carol] {
            assert_eq!(next_push(ws)["data"]["data"]["op"], "members_max");
        }
        let (status, error) = post("group_add", json!({"conv": conv, "users": ["dave"]}));
        assert_eq!(
            (status, &error["error"]["code"]),
            (409, &json!("member_limit")),
            "{error}"
        );

        // A message as a user, then the system removes carol (roles bypassed).
        let (status, sent) = post(
            "msg_send",
            json!({"as_user": "bob", "conv": conv, "kind": "text", "data": {"text": "from the backend"}}),
        );
        assert_eq!(status, 200, "{sent}");
        for ws in [&mut alice, &mut bob, &mut carol] {
            assert_eq!(text(&next_push(ws)), "from the backend");
        }
        let (status, removed) = post("group_remove", json!({"conv": conv, "users": ["carol"]}));
        assert_eq!(status, 200, "{removed}");
        for ws in [&mut alice, &mut bob, &mut carol] {
            assert_eq!(next_push(ws)["data"]["data"]["op"], "remove");
        }
        let (status, error) = post(
            "msg_send",
            json!({"as_user": "carol", "conv": conv, "kind": "text", "data": {"text": "still here?"}}),
        );
        assert_eq!(
            (status, &error["error"]["code"]),
            (403, &json!("not_member")),
            "{error}"
        );
        nothing_waiting(&mut carol, 1);

        // Members and info: the system reads any group, a user only its own.
        let (status, page) = post("group_members", json!({"conv": conv}));
        assert_eq!(status, 200, "{page}");
        let members = page["members"].as_array().unwrap();
        let role_of = |user: &str| {
            members
                .iter()
                .find(|m| m["user"] == user)
                .map(|m| m["role"].clone())
        };
        assert_eq!(members.len(), 2, "{page}");
        assert_eq!(role_of("alice"), Some(json!("owner")));
        assert_eq!(role_of("bob"), Some(json!("admin")));
        let (status, _) = post("group_members", json!({"as_user": "carol", "conv": conv}));
        assert_eq!(status, 403);
        let (status, info) = post("group_info", json!({"as_user": "bob", "conv": conv}));
        assert_eq!(status, 200, "{info}");
        assert_eq!(
            (&info["members_max"], &info["member_count"]),
            (&json!(3), &json!(2))
        );

        // `read` through the API: the user's connections are told.
        let (status, read) = post("read", json!({"as_user": "bob", "conv": conv, "offset": 4}));
        assert_eq!((status, &read["unread"]), (200, &json!(0)), "{read}");
        assert_eq!(read_json(&mut bob)["read"]["conv"], conv);

        // The system dissolves it; a later write is refused with 409.
        let (status, _) = post("group_dissolve", json!({"conv": conv}));
        assert_eq!(status, 200);
        let (status, error) = post("group_add", json!({"conv": conv, "users": ["erin"]}));
        assert_eq!(
            (status, &error["error"]["code"]),
            (409, &json!("dissolved")),
            "{error}"
        );
        engine.shutdown();
    }
);

crate::e2e!(
    catchup_of_a_group_replays_only_from_the_members_join,
    |driver| {
        let engine = start(im_config(driver));
        let (mut owner, _) = im_connect(&engine, "owner", 0);
        let (reply, _) = call(
            &mut owner,
            1,
            "group_create",
            json!({"name": "early", "members": ["m1"]}),
        );
        let conv = reply["result"]["conv"]
            .as_str()
            .unwrap_or_else(|| panic!("{reply}"))
            .to_owned();
        say(&mut owner, 2, &conv, "before the join one");
        say(&mut owner, 3, &conv, "before the join two");
        let (reply, _) = call(
            &mut owner,
            4,
            "group_add",
            json!({"conv": conv, "users": ["late"]}),
        );
        let joined = reply["result"]["offset"]
            .as_u64()
            .unwrap_or_else(|| panic!("{reply}"));
        assert_eq!(joined, 4, "{reply}");
        say(&mut owner, 5, &conv, "after the join");

        // The late member asks for everything: only its window comes.
        let (mut late, _) = im_connect(&engine, "late", 1);
        let (reply, pushes) = call(
            &mut late,
            1,
            "catchup",
            json!({"convs": [{"conv": conv, "since": 0}]}),
        );
        let result = &reply["result"]["convs"][0];
        assert_eq!(result["recovered"], true, "{reply}");
        let offsets: Vec<u64> = pushes
            .iter()
            .map(|push| push["offset"].as_u64().unwrap())
            .collect();
        assert_eq!(offsets, vec![joined, joined + 1], "{pushes:?}");
        assert_eq!(result["replayed"], 2, "{reply}");
        nothing_waiting(&mut late, 2);
        engine.shutdown();
    }
);
