//! chat: who talks to whom, and when.
//!
//! Each worker's users are split locally into pairs and groups, so a worker
//! knows every sender and receiver of its own messages and computes the
//! expected deliveries without talking to other workers. User `i` of
//! worker `w` is `ch-<w>-<i>`:
//!
//! - users `0..pair_users` are pairs (`2k`, `2k+1`); a pair message is a
//!   Ringcast `send` to the peer, delivered on the peer's inbox
//!   `user:<peer>` (joined at connect). The sender gets no copy: its own
//!   inbox is not the peer's.
//! - the rest are groups of at least `group_size` members (the remainder is
//!   spread over the groups), each subscribed to `<namespace>:g-<w>-<k>`; a
//!   group message is a `publish` there, delivered to every subscribed
//!   member, the sender included (Ringcast pushes a publication to the
//!   publisher too when it is subscribed).
//!
//! With `--im`, every user is in a pair and its messages are `msg_send`s
//! (durable DMs). IM groups (`--groups`) are made through the HTTP API
//! before the run (`ImGroups`): group `k` of worker `w` is
//! `grp:<tag>-w<w>-g<k>`, its online members a contiguous run of the
//! worker's users (`online` of them, all connected with all their
//! devices), the rest offline users that never connect
//! (`<tag>-off-<w>-<k>-<i>`). An online member sends a share of its
//! messages (`share`) to its group, the rest to its peer.
//!
//! Schedule: every user sends `messages_per_user` messages at `rate` per
//! second. Over a worker's `n` users, send `j` is message `j / n` of user
//! `j % n`, due at `t0 + j / (n x rate)`: each user's messages are exactly
//! `1 / rate` apart and the users are evenly staggered. The payload carries
//! the intended time, so a late worker shows up as latency (no coordinated
//! omission).

use std::ops::Range;
use std::time::Duration;

use crate::cli::split_count;

/// Command ids below this are the subscribe's (1) and the recovery's (0);
/// chat message `k` of a connection uses id `CHAT_ID_FIRST + k`.
pub const CHAT_ID_FIRST: u64 = 2;

/// One worker's chat layout and schedule.
#[derive(Debug, Clone)]
pub struct ChatPlan {
    pub worker_idx: u32,
    pub users: u32,
    /// Users `0..pair_users` are in pairs; always even.
    pub pair_users: u32,
    /// Group sizes, in order (users `pair_users..` in contiguous runs).
    group_sizes: Vec<u32>,
    pub namespace: String,
    pub messages_per_user: u64,
    /// Messages per second per user.
    pub rate: f64,
    /// IM: the worker's groups, if any.
    pub im_groups: Option<ImGroups>,
}

/// IM: one worker's groups, made through the API before the run.
#[derive(Debug, Clone, PartialEq)]
pub struct ImGroups {
    /// Names the run's groups and offline users apart from earlier runs'
    /// on the same engine.
    pub tag: String,
    /// Groups of this worker.
    pub groups: u32,
    /// Members per group, online and offline.
    pub size: u32,
    /// Online members per group (users `k x online ..` of the worker).
    pub online: u32,
    /// Share of an online member's messages that go to its group.
    pub share: f64,
}

/// IM: the kinds of message counted apart (`ChatCounts::im_kinds`, in
/// this order).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ImKind {
    Dm,
    Group,
}

impl ImKind {
    pub const ALL: [ImKind; 2] = [ImKind::Dm, ImKind::Group];

    pub fn idx(self) -> usize {
        match self {
            ImKind::Dm => 0,
            ImKind::Group => 1,
        }
    }
}

/// One user's place in the layout.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Role {
    Pair { peer: u32 },
    Group { group: u32, first: u32, len: u32 },
}

/// One due message of the schedule.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Due {
    pub user: u32,
    /// The message's number within its user's messages (its `seq`).
    pub seq: u64,
    /// Since the schedule's start.
    pub offset: Duration,
}

impl ChatPlan {
    pub fn new(
        worker_idx: u32,
        users: u32,
        pair_share: f64,
        group_size: u32,
        namespace: String,
        messages_per_user: u64,
        rate: f64,
    ) -> ChatPlan {
        assert!((0.0..=1.0).contains(&pair_share) && group_size >= 1 && rate > 0.0);
        let pair_users = ((f64::from(users) * pair_share / 2.0).floor() as u32 * 2).min(users);
        let group_users = users - pair_users;
        let groups = (group_users / group_size).max(u32::from(group_users > 0));
        let group_sizes = if groups == 0 {
            Vec::new()
        } else {
            split_count(group_users, groups)
        };
        assert_eq!(group_sizes.iter().sum::<u32>() + pair_users, users);
        ChatPlan {
            worker_idx,
            users,
            pair_users,
            group_sizes,
            namespace,
            messages_per_user,
            rate,
            im_groups: None,
        }
    }

    /// IM: the worker's groups; `None` for a user in none.
    pub fn with_im_groups(mut self, groups: ImGroups) -> ChatPlan {
        assert!(
            groups.online >= 1
                && groups.online <= groups.size
                && groups.groups * groups.online <= self.users
                && (0.0..=1.0).contains(&groups.share)
        );
        self.im_groups = Some(groups);
        self
    }

    /// IM: the group user `idx` is an online member of.
    pub fn im_group(&self, idx: u32) -> Option<u32> {
        let groups = self.im_groups.as_ref()?;
        let group = idx / groups.online;
        (group < groups.groups).then_some(group)
    }

    /// IM: the online members of `group` (worker user indices).
    pub fn im_group_online(&self, group: u32) -> Range<u32> {
        let online = self.im_groups.as_ref().map_or(0, |groups| groups.online);
        im_group_online(online, group)
    }

    /// IM: the conversation of `group`.
    pub fn im_group_conv(&self, group: u32) -> String {
        let tag = self.im_groups.as_ref().map_or("", |groups| &groups.tag);
        im_group_conv(tag, self.worker_idx, group)
    }

    /// IM: whether message `seq` of `user` goes to its group (else to its
    /// peer). Spread evenly: of any `n` consecutive messages,
    /// `n x share` rounded go to the group.
    pub fn to_im_group(&self, user: u32, seq: u64) -> Option<u32> {
        let share = self.im_groups.as_ref()?.share;
        let group = self.im_group(user)?;
        let due = |n: u64| (n as f64 * share).floor() as u64;
        (due(seq + 1) > due(seq)).then_some(group)
    }

    pub fn user(&self, idx: u32) -> String {
        user_name(self.worker_idx, idx)
    }

    pub fn group_channel(&self, group: u32) -> String {
        format!("{}:g-{}-{group}", self.namespace, self.worker_idx)
    }

    pub fn role(&self, idx: u32) -> Role {
        assert!(idx < self.users);
        if idx < self.pair_users {
            return Role::Pair { peer: idx ^ 1 };
        }
        let mut first = self.pair_users;
        for (group, &len) in (0u32..).zip(&self.group_sizes) {
            if idx < first + len {
                return Role::Group { group, first, len };
            }
            first += len;
        }
        unreachable!("every user index below `users` is in a pair or a group")
    }

    /// Send `j` of the worker's schedule, `None` past the last one.
    pub fn due(&self, j: u64) -> Option<Due> {
        let users = u64::from(self.users);
        if users == 0 || j >= users * self.messages_per_user {
            return None;
        }
        Some(Due {
            user: (j % users) as u32,
            seq: j / users,
            offset: Duration::from_secs_f64(j as f64 / (users as f64 * self.rate)),
        })
    }
}

/// User `idx` of worker `worker_idx`.
pub fn user_name(worker_idx: u32, idx: u32) -> String {
    format!("ch-{worker_idx}-{idx}")
}

/// IM: the online members of `group` (worker user indices) when each
/// group has `online` of them.
pub fn im_group_online(online: u32, group: u32) -> Range<u32> {
    group * online..(group + 1) * online
}

/// IM: the conversation of group `group` of worker `worker_idx`.
pub fn im_group_conv(tag: &str, worker_idx: u32, group: u32) -> String {
    format!("grp:{tag}-w{worker_idx}-g{group}")
}

/// IM: offline member `idx` of group `group` of worker `worker_idx`.
pub fn im_offline_user(tag: &str, worker_idx: u32, group: u32, idx: u32) -> String {
    format!("{tag}-off-{worker_idx}-{group}-{idx}")
}

/// Which sequence numbers of one sender a receiver has seen: duplicates
/// and reordering per (sender, receiver).
#[derive(Debug, Clone)]
pub struct SeqTrack {
    seen: Vec<u64>,
    max: Option<u64>,
    count: u64,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SeqVerdict {
    New {
        out_of_order: bool,
    },
    Duplicate,
    /// At or past the number of messages the sender will send.
    OutOfRange,
}

impl SeqTrack {
    pub fn new(count: u64) -> SeqTrack {
        SeqTrack {
            seen: vec![0; count.div_ceil(64) as usize],
            max: None,
            count,
        }
    }

    pub fn record(&mut self, seq: u64) -> SeqVerdict {
        if seq >= self.count {
            return SeqVerdict::OutOfRange;
        }
        let (word, bit) = ((seq / 64) as usize, 1u64 << (seq % 64));
        if self.seen[word] & bit != 0 {
            return SeqVerdict::Duplicate;
        }
        self.seen[word] |= bit;
        let out_of_order = self.max.is_some_and(|max| seq < max);
        self.max = Some(self.max.map_or(seq, |max| max.max(seq)));
        SeqVerdict::New { out_of_order }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn plan(users: u32, pair_share: f64, group_size: u32) -> ChatPlan {
        ChatPlan::new(0, users, pair_share, group_size, "room".to_owned(), 3, 2.0)
    }

    #[test]
    fn users_split_into_pairs_and_groups() {
        let layout = plan(21, 0.5, 4);
        // 10 pair users, 11 group users in 2 groups of 6 and 5.
        assert_eq!(layout.pair_users, 10);
        assert_eq!(layout.group_sizes, vec![6, 5]);
        assert_eq!(layout.role(0), Role::Pair { peer: 1 });
        assert_eq!(layout.role(9), Role::Pair { peer: 8 });
        assert_eq!(
            layout.role(10),
            Role::Group {
                group: 0,
                first: 10,
                len: 6
            }
        );
        assert_eq!(
            layout.role(20),
            Role::Group {
                group: 1,
                first: 16,
                len: 5
            }
        );
        assert_eq!(layout.group_channel(1), "room:g-0-1");
        // An odd user left over from the pairs goes to a group.
        let odd = plan(5, 1.0, 8);
        assert_eq!(odd.pair_users, 4);
        assert_eq!(odd.group_sizes, vec![1]);
        assert_eq!(plan(4, 0.0, 8).group_sizes, vec![4]);
        assert!(plan(4, 1.0, 8).group_sizes.is_empty());
    }

    #[test]
    fn schedule_staggers_users_at_the_per_user_rate() {
        let layout = plan(4, 1.0, 2);
        let first = layout.due(0).unwrap();
        assert_eq!((first.user, first.seq), (0, 0));
        let again = layout.due(4).unwrap();
        assert_eq!((again.user, again.seq), (0, 1));
        // Rate 2/s per user: the same user's next message is 0.5 s later.
        assert_eq!(again.offset, Duration::from_millis(500));
        assert_eq!(layout.due(1).unwrap().offset, Duration::from_millis(125));
        assert!(layout.due(12).is_none());
    }

    #[test]
    fn im_groups_take_contiguous_online_members_and_their_share() {
        let layout = plan(10, 1.0, 2).with_im_groups(ImGroups {
            tag: "t".to_owned(),
            groups: 2,
            size: 500,
            online: 4,
            share: 0.25,
        });
        assert_eq!(layout.im_group(0), Some(0));
        assert_eq!(layout.im_group(7), Some(1));
        // Users past the groups' online members are in no group.
        assert_eq!(layout.im_group(8), None);
        assert_eq!(layout.im_group_online(1), 4..8);
        assert_eq!(layout.im_group_conv(1), "grp:t-w0-g1");
        assert_eq!(im_offline_user("t", 0, 1, 3), "t-off-0-1-3");
        // A quarter of every 4 consecutive messages: exactly one.
        let to_group: Vec<u64> = (0..8)
            .filter(|&seq| layout.to_im_group(5, seq).is_some())
            .collect();
        assert_eq!(to_group, vec![3, 7]);
        assert_eq!(layout.to_im_group(8, 3), None);
        let all = plan(4, 1.0, 2).with_im_groups(ImGroups {
            tag: "t".to_owned(),
            groups: 1,
            size: 10,
            online: 4,
            share: 1.0,
        });
        assert!((0..5).all(|seq| all.to_im_group(3, seq) == Some(0)));
        assert!(plan(4, 1.0, 2).to_im_group(0, 0).is_none());
    }

    #[test]
    fn seq_track_counts_duplicates_and_reordering() {
        let mut track = SeqTrack::new(70);
        assert_eq!(
            track.record(65),
            SeqVerdict::New {
                out_of_order: false
            }
        );
        assert_eq!(track.record(3), SeqVerdict::New { out_of_order: true });
        assert_eq!(track.record(65), SeqVerdict::Duplicate);
        assert_eq!(track.record(70), SeqVerdict::OutOfRange);
    }
}
