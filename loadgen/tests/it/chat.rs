use crate::util::{run_loadgen, TestEngine};

/// 24 users over 2 workers; per worker 12 users: 6 in 3 pairs, 6 in one
/// group. Each user sends 4 messages. A pair message reaches the peer only
/// (1 delivery); a group message reaches every member, the sender included
/// (6 deliveries).
fn chat_24_users(profile: &str, namespace: &str) {
    let engine = TestEngine::start();
    let out_dir = tempfile::tempdir().unwrap();
    let (output, summary) = run_loadgen(
        out_dir.path(),
        &engine.args(
            "chat",
            &[
                &format!("--profile={profile}"),
                "--connections=24",
                "--workers=2",
                "--pair-share=0.5",
                "--group-size=4",
                &format!("--group-namespace={namespace}"),
                "--rate=4",
                "--seconds=1",
            ],
        ),
    );
    let per_worker = 6 * 4 + 6 * 4 * 6;
    assert_eq!(summary["subscribed"], 24, "{summary:#}");
    assert_eq!(summary["sent"], 24 * 4, "{summary:#}");
    assert_eq!(summary["published"], 24 * 4, "{summary:#}");
    assert_eq!(summary["expected"], 2 * per_worker, "{summary:#}");
    assert_eq!(summary["received"], 2 * per_worker, "{summary:#}");
    assert_eq!(summary["lost"], 0, "{summary:#}");
    assert_eq!(summary["duplicated"], 0, "{summary:#}");
    assert_eq!(summary["out_of_order"], 0, "{summary:#}");
    assert_eq!(summary["errors_total"], 0, "{summary:#}");
    assert_eq!(summary["ack_latency"]["count"], 24 * 4, "{summary:#}");
    assert_eq!(
        summary["push_latency"]["count"],
        2 * per_worker,
        "{summary:#}"
    );
    assert!(output.status.success(), "{summary:#}");
}

#[test]
fn chat_pairs_and_groups_json() {
    chat_24_users("ringcast", "room");
}

#[test]
fn chat_pairs_and_durable_groups_binary() {
    chat_24_users("ringcast-binary", "chat");
}

/// IM: 8 users over 2 workers with 2 devices each (16 connections), in 2
/// pairs per worker; each user sends 6 DMs with `msg_send`. A DM reaches
/// every device of both users, the sending one included: 4 deliveries. The
/// first device of each user sends `read` after every 2nd message of its
/// peer (3 reads per user), each owing a receipt to both of the peer's
/// devices.
fn im_8_users(profile: &str) {
    let engine = TestEngine::start_im();
    let out_dir = tempfile::tempdir().unwrap();
    let (output, summary) = run_loadgen(
        out_dir.path(),
        &engine.args(
            "chat",
            &[
                &format!("--profile={profile}"),
                "--im",
                "--connections=16",
                "--workers=2",
                "--pair-share=1.0",
                "--devices-per-user=2",
                "--read-every=2",
                "--rate=6",
                "--seconds=1",
            ],
        ),
    );
    let (users, messages, deliveries) = (8, 6, 4);
    assert_eq!(summary["subscribed"], 16, "{summary:#}");
    assert_eq!(summary["sent"], users * messages, "{summary:#}");
    assert_eq!(summary["published"], users * messages, "{summary:#}");
    assert_eq!(
        summary["expected"],
        users * messages * deliveries,
        "{summary:#}"
    );
    assert_eq!(
        summary["received"],
        users * messages * deliveries,
        "{summary:#}"
    );
    assert_eq!(summary["lost"], 0, "{summary:#}");
    assert_eq!(summary["duplicated"], 0, "{summary:#}");
    assert_eq!(summary["out_of_order"], 0, "{summary:#}");
    assert_eq!(summary["gaps"], 0, "{summary:#}");
    assert_eq!(summary["reads_sent"], users * 3, "{summary:#}");
    assert_eq!(summary["reads_acked"], users * 3, "{summary:#}");
    assert_eq!(summary["receipts_expected"], users * 3 * 2, "{summary:#}");
    assert_eq!(summary["receipts"], users * 3 * 2, "{summary:#}");
    assert_eq!(summary["errors_total"], 0, "{summary:#}");
    assert_eq!(
        summary["ack_latency"]["count"],
        users * messages,
        "{summary:#}"
    );
    assert!(output.status.success(), "{summary:#}");
}

#[test]
fn chat_im_dms_to_every_device_json() {
    im_8_users("ringcast");
}

#[test]
fn chat_im_dms_to_every_device_binary() {
    im_8_users("ringcast-binary");
}

/// IM groups: 8 users over 2 workers with 2 devices each (16
/// connections), in pairs; `--groups=2` makes one group per worker through
/// the API with 20 members, 20% online: the worker's 4 users, all of
/// whose devices connect; the 16 others never connect. Each user sends 4
/// messages, every second one (`--group-share=0.5`: seq 1 and 3) to its
/// group, the others to its peer. A group message reaches every device of
/// the group's online members, the sender's included: 8 deliveries; a DM
/// the 4 devices of its pair.
fn im_groups_8_users(profile: &str) {
    let engine = TestEngine::start_im();
    let out_dir = tempfile::tempdir().unwrap();
    let api_key = format!("--api-key={}", engine.api_key);
    let (output, summary) = run_loadgen(
        out_dir.path(),
        &engine.args(
            "chat",
            &[
                &format!("--profile={profile}"),
                "--im",
                &api_key,
                "--connections=16",
                "--workers=2",
                "--pair-share=1.0",
                "--devices-per-user=2",
                "--groups=2",
                "--group-size=20",
                "--online-share=0.2",
                "--group-share=0.5",
                "--rate=4",
                "--seconds=1",
            ],
        ),
    );
    let users = 8;
    let (group_msgs, group_deliveries) = (users * 2, users * 2 * 8);
    let (dms, dm_deliveries) = (users * 2, users * 2 * 4);
    let group = &summary["im_group"];
    let dm = &summary["im_dm"];
    assert_eq!(summary["subscribed"], 16, "{summary:#}");
    assert_eq!(group["sent"], group_msgs, "{summary:#}");
    assert_eq!(group["acked"], group_msgs, "{summary:#}");
    assert_eq!(group["expected"], group_deliveries, "{summary:#}");
    assert_eq!(group["received"], group_deliveries, "{summary:#}");
    assert_eq!(dm["sent"], dms, "{summary:#}");
    assert_eq!(dm["acked"], dms, "{summary:#}");
    assert_eq!(dm["expected"], dm_deliveries, "{summary:#}");
    assert_eq!(dm["received"], dm_deliveries, "{summary:#}");
    for kind in [group, dm] {
        for zero in ["lost", "duplicated", "out_of_order", "gaps", "ack_errors"] {
            assert_eq!(kind[zero], 0, "{zero}: {summary:#}");
        }
    }
    assert_eq!(group["ack_latency"]["count"], group_msgs, "{summary:#}");
    assert_eq!(
        group["push_latency"]["count"], group_deliveries,
        "{summary:#}"
    );
    assert_eq!(
        summary["received"],
        group_deliveries + dm_deliveries,
        "{summary:#}"
    );
    assert_eq!(summary["lost"], 0, "{summary:#}");
    assert_eq!(summary["errors_total"], 0, "{summary:#}");
    assert!(output.status.success(), "{summary:#}");
}

#[test]
fn chat_im_groups_and_dms_json() {
    im_groups_8_users("ringcast");
}

#[test]
fn chat_im_groups_and_dms_binary() {
    im_groups_8_users("ringcast-binary");
}
