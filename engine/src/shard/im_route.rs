//! Which local connections a DM or group entry goes to (`docs/im.md`,
//! "Routing"): the local subscribers of its recipients' inboxes.
//!
//! A group past the sink's per-user routing reaches every shard, and most
//! of its members have no connection on a given one: each shard walks the
//! smaller side, the recipients (a lookup each) or its own inboxes (a
//! binary search of the sorted members each), and builds no string per
//! member (review finding 6).

use std::collections::{HashMap, HashSet};
use std::rc::Rc;

use crate::channels::PERSONAL_NAMESPACE;
use crate::im::GroupRecipients;

/// A shard's local subscribers by channel.
pub(super) type Subscribers = HashMap<Rc<str>, Vec<usize>>;

/// Appends to `keys` the local connections of `users` (a DM's pair, a
/// group's recipients when they are the smaller side): one lookup of each
/// inbox, its name built in one reused buffer.
pub(super) fn keys_of_users<'a>(
    subscribers: &Subscribers,
    users: impl Iterator<Item = &'a str>,
    keys: &mut Vec<usize>,
) {
    let mut channel = String::with_capacity(PERSONAL_NAMESPACE.len() + 1 + 64);
    for user in users {
        channel.clear();
        channel.push_str(PERSONAL_NAMESPACE);
        channel.push(':');
        channel.push_str(user);
        if let Some(local) = subscribers.get(channel.as_str()) {
            keys.extend_from_slice(local);
        }
    }
}

/// Appends to `keys` the local connections of a group entry's recipients:
/// through the recipients when they are no more than this shard's inboxes
/// (`inboxes`, the personal channels with a local subscriber), else through
/// the inboxes, each user looked up in the sorted members (and the few
/// removed users).
pub(super) fn keys_of_group(
    subscribers: &Subscribers,
    inboxes: &HashSet<Rc<str>>,
    recipients: &GroupRecipients,
    keys: &mut Vec<usize>,
) {
    if recipients.count() <= inboxes.len() {
        return keys_of_users(subscribers, recipients.users(), keys);
    }
    debug_assert!(
        recipients.members.is_sorted(),
        "the writer's member ids are sorted"
    );
    for inbox in inboxes {
        let Some(user) = inbox
            .strip_prefix(PERSONAL_NAMESPACE)
            .and_then(|rest| rest.strip_prefix(':'))
        else {
            continue;
        };
        let member = recipients
            .members
            .binary_search_by(|member| member.as_str().cmp(user))
            .is_ok();
        if member || recipients.removed.iter().any(|removed| removed == user) {
            if let Some(local) = subscribers.get(inbox) {
                keys.extend_from_slice(local);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use super::*;

    /// A shard whose inboxes are `users`, connection `i` for the i-th.
    fn shard_of(users: &[&str]) -> (Subscribers, HashSet<Rc<str>>) {
        let mut subscribers = Subscribers::new();
        let mut inboxes = HashSet::new();
        for (key, user) in users.iter().enumerate() {
            let inbox: Rc<str> = crate::channels::personal_channel(user).into();
            subscribers.insert(inbox.clone(), vec![key]);
            inboxes.insert(inbox);
        }
        // A channel that is no inbox is never a recipient's.
        subscribers.insert("chat:m1".into(), vec![99]);
        (subscribers, inboxes)
    }

    fn recipients(members: &[&str], removed: &[&str]) -> GroupRecipients {
        let mut members: Vec<String> = members.iter().map(|m| (*m).to_owned()).collect();
        members.sort();
        GroupRecipients {
            members: Arc::from(members),
            removed: removed.iter().map(|r| (*r).to_owned()).collect(),
        }
    }

    fn selected(
        subscribers: &Subscribers,
        inboxes: &HashSet<Rc<str>>,
        group: &GroupRecipients,
    ) -> Vec<usize> {
        let mut keys = Vec::new();
        keys_of_group(subscribers, inboxes, group, &mut keys);
        keys.sort_unstable();
        keys
    }

    #[test]
    fn both_sides_select_the_same_connections() {
        let members: Vec<String> = (0..500).map(|i| format!("m{i}")).collect();
        let members: Vec<&str> = members.iter().map(String::as_str).collect();
        // Few inboxes, many members: the inboxes are walked.
        let (subscribers, inboxes) = shard_of(&["m7", "x", "m499", "gone", "m70"]);
        let group = recipients(&members, &["gone"]);
        assert!(group.count() > inboxes.len());
        assert_eq!(selected(&subscribers, &inboxes, &group), [0, 2, 3, 4]);
        // Many inboxes, few members: the members are looked up.
        let (subscribers, inboxes) = shard_of(&members);
        let group = recipients(&["m3", "m1", "nobody"], &["m2"]);
        assert!(group.count() <= inboxes.len());
        assert_eq!(selected(&subscribers, &inboxes, &group), [1, 2, 3]);
        // The same sets either way.
        let (subscribers, inboxes) = shard_of(&members[..40]);
        let small = recipients(&members[30..35], &[]);
        let large = recipients(&members[30..], &[]);
        assert!(small.count() <= inboxes.len() && large.count() > inboxes.len());
        assert_eq!(
            selected(&subscribers, &inboxes, &small),
            [30, 31, 32, 33, 34]
        );
        assert_eq!(
            selected(&subscribers, &inboxes, &large),
            (30..40).collect::<Vec<_>>()
        );
    }

    #[test]
    fn users_are_looked_up_by_their_inbox_alone() {
        let (subscribers, _) = shard_of(&["a", "b"]);
        let mut keys = Vec::new();
        keys_of_users(&subscribers, ["b", "m1", "a", "c"].into_iter(), &mut keys);
        assert_eq!(keys, [1, 0]);
    }
}
