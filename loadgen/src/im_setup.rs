//! chat, IM groups: make the run's groups through the HTTP API before any
//! worker connects (docs/api.md, "IM groups"), so the devices see the
//! groups' messages and none of their member entries.
//!
//! The system (no `as_user`) creates each group with its first online
//! member as owner and its own member limit (`members_max`, so groups
//! larger than `im.group_members_max` work too), then adds the other
//! members 100 at a time: the online ones (the worker's users
//! `ch-<w>-<i>`, `chat::ChatPlan::im_group_online`) and the offline ones
//! (`chat::im_offline_user`), which never connect.

use std::net::SocketAddr;
use std::time::{Duration, Instant};

use anyhow::{bail, Context as _};

use crate::chat::{im_group_conv, im_group_online, im_offline_user, user_name};

/// Users one `group_create` or `group_add` names at most (the command's
/// limit, docs/protocol.md "Groups").
const USERS_PER_CALL_MAX: usize = 100;
const IO_TIMEOUT: Duration = Duration::from_secs(30);

/// The run's groups: where, who, how many.
pub struct GroupSetup<'a> {
    pub api: SocketAddr,
    pub api_key: &'a str,
    pub tag: &'a str,
    /// Groups per worker (`split_count` of `--groups`).
    pub groups_per_worker: &'a [u32],
    /// Members per group, online and offline.
    pub size: u32,
    /// Online members per group.
    pub online: u32,
}

/// What making the groups took.
#[derive(Debug, Clone, Copy)]
pub struct SetupOutcome {
    pub groups: u32,
    pub calls: u32,
    pub took: Duration,
}

/// Every member of group `group` of worker `worker_idx`, the owner first.
pub fn group_members(setup: &GroupSetup<'_>, worker_idx: u32, group: u32) -> Vec<String> {
    assert!(setup.online >= 1 && setup.online <= setup.size);
    let online = im_group_online(setup.online, group).map(|idx| user_name(worker_idx, idx));
    let offline = (0..setup.size - setup.online)
        .map(|idx| im_offline_user(setup.tag, worker_idx, group, idx));
    online.chain(offline).collect()
}

/// Make every group; any refusal fails the run (with the server's answer).
pub fn create_groups(setup: &GroupSetup<'_>) -> anyhow::Result<SetupOutcome> {
    let agent: ureq::Agent = ureq::Agent::config_builder()
        .http_status_as_error(false)
        .timeout_global(Some(IO_TIMEOUT))
        .build()
        .into();
    let started = Instant::now();
    let mut outcome = SetupOutcome {
        groups: 0,
        calls: 0,
        took: Duration::ZERO,
    };
    for (worker_idx, &groups) in (0u32..).zip(setup.groups_per_worker) {
        for group in 0..groups {
            let conv = im_group_conv(setup.tag, worker_idx, group);
            let members = group_members(setup, worker_idx, group);
            let (owner, others) = members.split_first().context("a group has an owner")?;
            let mut chunks = others.chunks(USERS_PER_CALL_MAX);
            let first = chunks.next().unwrap_or_default();
            let create = serde_json::json!({
                "owner": owner, "conv": conv, "name": conv, "members": first,
                "members_max": setup.size,
            });
            post(&agent, setup, "group_create", &create)?;
            outcome.calls += 1;
            for chunk in chunks {
                let add = serde_json::json!({"conv": conv, "users": chunk});
                post(&agent, setup, "group_add", &add)?;
                outcome.calls += 1;
            }
            outcome.groups += 1;
        }
    }
    outcome.took = started.elapsed();
    Ok(outcome)
}

fn post(
    agent: &ureq::Agent,
    setup: &GroupSetup<'_>,
    method: &str,
    body: &serde_json::Value,
) -> anyhow::Result<()> {
    let url = format!("http://{}/api/im/{method}", setup.api);
    let mut response = agent
        .post(&url)
        .header("Authorization", &format!("apikey {}", setup.api_key))
        .header("Content-Type", "application/json")
        .send(body.to_string().as_str())
        .with_context(|| format!("POST {url}"))?;
    let status = response.status().as_u16();
    let answer = response.body_mut().read_to_string().unwrap_or_default();
    if status != 200 {
        bail!("POST {url}: {status} {answer}");
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_group_is_its_online_run_of_users_then_its_offline_users() {
        let setup = GroupSetup {
            api: "127.0.0.1:1".parse().unwrap(),
            api_key: "k",
            tag: "t",
            groups_per_worker: &[2],
            size: 5,
            online: 2,
        };
        assert_eq!(
            group_members(&setup, 1, 1),
            [
                "ch-1-2",
                "ch-1-3",
                "t-off-1-1-0",
                "t-off-1-1-1",
                "t-off-1-1-2"
            ]
        );
    }
}
