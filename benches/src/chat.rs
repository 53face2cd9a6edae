//! Realistic chat payloads for the measurement tools and micro-benchmarks:
//! what compression sees in a chat app, rather than padding that deflate
//! squeezes to nothing.

/// Words chat messages are made of: varied enough that deflate finds what
/// it finds in real chat (repeated keys and common words), not a run of
/// one byte.
const WORDS: &[&str] = &[
    "hey", "so", "the", "meeting", "moved", "to", "tomorrow", "at", "three", "can", "you", "make",
    "it", "I", "think", "we", "should", "ship", "this", "before", "friday", "lol", "sounds",
    "good", "thanks", "for", "the", "update", "who", "is", "on", "call", "tonight", "please",
    "review", "my", "pull", "request", "deploy", "failed", "again", "looks", "like", "a", "flaky",
    "test", "coffee", "anyone", "lunch", "new", "design", "is", "great", "what", "about", "mobile",
];

/// A chat message JSON body (the fields after `"t"`) of about `bytes`,
/// different for each `seq`.
pub fn chat_message(seq: u64, bytes: usize) -> String {
    let mut state = seq
        .wrapping_mul(6_364_136_223_846_793_005)
        .wrapping_add(1_442_695_040_888_963_407);
    let mut text = String::new();
    let fixed = 120;
    while text.len() + fixed < bytes {
        state = state
            .wrapping_mul(6_364_136_223_846_793_005)
            .wrapping_add(1_442_695_040_888_963_407);
        if !text.is_empty() {
            text.push(' ');
        }
        text.push_str(WORDS[(state >> 33) as usize % WORDS.len()]);
    }
    format!(
        r#""user":"user-{}","room":"general","msg_id":"m-{seq}","reply_to":null,"text":"{text}""#,
        seq % 997
    )
}
