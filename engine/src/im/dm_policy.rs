//! The `backend` DM policy (`docs/im.md`, "Blocks and DM policy"): a
//! message that would start a new DM to a user whose policy is `backend`
//! is first put to the app's backend (`im.dm_policy_proxy`), whose answer
//! for the (sender, recipient) pair is kept node-wide for
//! `im.dm_policy_cache_ms`. The store's writer refuses such a conversation
//! unless the request says the backend allowed it, so a policy set between
//! this check and the write is still applied.
//!
//! Shared by the shards' `msg_send` and the API's.

use ringcast_store::{DmPolicy, StoreError};

use crate::engine::Shared;
use crate::proxy::{Decision, ProxyError};

/// Answers kept at once; past it expired ones go, then all of them (a
/// denial forgotten is only asked again).
const ANSWERS_MAX: usize = 65_536;

/// Why a message that would start a DM may not.
#[derive(Debug, Clone)]
pub enum DmRefusal {
    /// The backend said no, with its message (may be empty).
    Denied(String),
    /// The backend gave no usable answer: fail closed.
    Backend(ProxyError),
    /// The recipient's policy could not be read.
    Store(StoreError),
}

/// The backend's answers by (sender, recipient).
#[derive(Debug, Default)]
pub struct DmDecisions {
    answers: papaya::HashMap<(Box<str>, Box<str>), Answer>,
}

#[derive(Debug, Clone)]
struct Answer {
    /// `None`: allowed; else the denial's message.
    denied: Option<Box<str>>,
    until_ms: u64,
}

impl DmDecisions {
    fn get(&self, sender: &str, recipient: &str, now_ms: u64) -> Option<Result<(), DmRefusal>> {
        let answers = self.answers.pin();
        let answer = answers.get(&(Box::from(sender), Box::from(recipient)))?;
        if answer.until_ms <= now_ms {
            return None;
        }
        Some(match &answer.denied {
            None => Ok(()),
            Some(message) => Err(DmRefusal::Denied(message.to_string())),
        })
    }

    fn put(
        &self,
        sender: &str,
        recipient: &str,
        denied: Option<String>,
        now_ms: u64,
        until_ms: u64,
    ) {
        let answers = self.answers.pin();
        if answers.len() >= ANSWERS_MAX {
            answers.retain(|_, answer| answer.until_ms > now_ms);
            if answers.len() >= ANSWERS_MAX {
                answers.clear();
            }
        }
        answers.insert(
            (sender.into(), recipient.into()),
            Answer {
                denied: denied.map(String::into_boxed_str),
                until_ms,
            },
        );
    }
}

/// Whether a message from `sender` that may start DM `conv` with
/// `recipient` goes on, and whether the backend allowed it (the store's
/// `ImAppend::backend_allowed`). Without `im.dm_policy_proxy` nothing is
/// asked: the writer refuses such a conversation on its own. A
/// conversation that exists already (one this process had not seen) is
/// not asked about. `ask` calls the backend with a body and answers with
/// its decision; `client_id` is the asking connection's (0: the API).
pub async fn check_new_dm<F>(
    shared: &Shared,
    client_id: u64,
    sender: &str,
    recipient: &str,
    conv: &str,
    ask: impl FnOnce(usize, Vec<u8>) -> F,
) -> Result<bool, DmRefusal>
where
    F: std::future::Future<Output = Result<Decision, ProxyError>>,
{
    let config = &shared.config;
    let Some(proxy) = config.proxy_index(&config.im.dm_policy_proxy) else {
        return Ok(false);
    };
    let policy = match shared.im_store().dm_policy(recipient) {
        Ok(read) => read.await.unwrap_or(Err(StoreError::Closed)),
        Err(error) => Err(error),
    }
    .map_err(DmRefusal::Store)?;
    if policy != DmPolicy::Backend {
        return Ok(false);
    }
    let view = match shared.im_store().conv_get(sender, conv) {
        Ok(read) => read.await.unwrap_or(Err(StoreError::Closed)),
        Err(error) => Err(error),
    }
    .map_err(DmRefusal::Store)?;
    if view.is_some() {
        return Ok(false);
    }
    let now_ms = crate::shard::unix_ms();
    if let Some(answer) = shared.dm_decisions.get(sender, recipient, now_ms) {
        return answer.map(|()| true);
    }
    let body = serde_json::json!({
        "client": client_id.to_string(),
        "user": sender,
        "to": recipient,
    });
    let body = serde_json::to_vec(&body).unwrap_or_default();
    let denied = match ask(proxy, body).await.map_err(DmRefusal::Backend)? {
        Decision::Allow { .. } => None,
        // The call is about a message, not the connection: a disconnect
        // answer refuses the message.
        Decision::Deny { message, .. }
        | Decision::Disconnect {
            reason: message, ..
        } => Some(message),
    };
    let keep_ms = config.im.dm_policy_cache.as_millis() as u64;
    if keep_ms > 0 {
        let now_ms = crate::shard::unix_ms();
        let until_ms = now_ms.saturating_add(keep_ms);
        shared
            .dm_decisions
            .put(sender, recipient, denied.clone(), now_ms, until_ms);
    }
    match denied {
        None => Ok(true),
        Some(message) => Err(DmRefusal::Denied(message)),
    }
}

/// Calls backend `proxy` with `body` on the proxy thread: the `ask` of
/// [`check_new_dm`].
pub fn ask_backend(
    proxies: Option<&crate::proxy::Proxies>,
    proxy: usize,
    body: Vec<u8>,
) -> impl std::future::Future<Output = Result<Decision, ProxyError>> + 'static {
    let call = proxies.map(|proxies| proxies.call(proxy, body));
    async move {
        match call {
            Some(answer) => answer.await.unwrap_or(Err(ProxyError::Stopped)),
            None => Err(ProxyError::Stopped),
        }
    }
}

/// The writer's refusal of a new conversation the backend was not asked
/// about (no `im.dm_policy_proxy`, or a policy set meanwhile).
pub fn undecided_message(recipient: &str, sender: &str) -> String {
    format!(
        "{recipient} takes new direct messages the app's backend allows, and it was not asked \
         about {sender} (im.dm_policy_proxy; retry); nothing was stored"
    )
}

/// The refusal's message for a denial: the backend's own, or one saying
/// who decided.
pub fn denied_message(recipient: &str, sender: &str, message: &str) -> String {
    if message.is_empty() {
        format!(
            "{recipient} takes new direct messages the app allows, and it did not allow \
             {sender}; nothing was stored"
        )
    } else {
        message.to_owned()
    }
}
