//! permessage-deflate (RFC 7692): negotiating the extension in the upgrade,
//! compressing a message once for every recipient, and inflating a
//! client's message under a size limit.
//!
//! The server always answers with `server_no_context_takeover` and
//! `client_no_context_takeover` (§7.1.1.1 and §7.1.1.2 let a server add
//! both whether or not the client offered them). No context crosses
//! messages in either direction, so:
//! - a publication compressed once is a valid message for every recipient
//!   that agreed to the same window size, and its frame is shared like an
//!   uncompressed one;
//! - the receiving side needs no per-connection state: one [`Inflater`]
//!   per thread, reset before each message, inflates everyone's messages.
//!
//! Sans-IO like the rest of the crate: values in, bytes out.

use bytes::{BufMut, Bytes, BytesMut};
use flate2::{Compress, Compression, Decompress, FlushCompress, FlushDecompress, Status};

use crate::close::CloseCode;
use crate::frame::{encode_header, Message, OpCode, ProtocolError};

/// The extension token in `Sec-WebSocket-Extensions`.
pub const EXTENSION_NAME: &str = "permessage-deflate";
/// Smallest LZ77 window (as log2 bytes) we compress with. RFC 7692 allows 8,
/// but zlib cannot produce raw deflate with a 256-byte window, so an offer
/// that caps ours at 8 is declined.
pub const WINDOW_BITS_MIN: u8 = 9;
/// The largest window, deflate's own limit and the default.
pub const WINDOW_BITS_MAX: u8 = 15;
/// How many window sizes we may compress with; publications cache at most
/// one compressed frame per size.
pub const WINDOW_SIZES: usize = (WINDOW_BITS_MAX - WINDOW_BITS_MIN + 1) as usize;

/// What the server agreed to for one connection. Both directions are
/// always without context takeover, so the window size the client allows
/// us is the only thing left to remember (a byte per connection).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Agreed {
    /// The window we compress with: the client's `server_max_window_bits`,
    /// or 15 when it set none.
    pub server_window_bits: u8,
    /// The client sent `server_max_window_bits`, so the response must
    /// carry the value we use (§7.1.2.1).
    pub server_window_bits_offered: bool,
}

impl Agreed {
    /// The `Sec-WebSocket-Extensions` value of the 101 response.
    pub fn response_value(&self) -> String {
        let mut value =
            format!("{EXTENSION_NAME}; server_no_context_takeover; client_no_context_takeover");
        if self.server_window_bits_offered {
            value.push_str(&format!(
                "; server_max_window_bits={}",
                self.server_window_bits
            ));
        }
        value
    }
}

/// Picks the first permessage-deflate offer we can accept from the values
/// of the request's `Sec-WebSocket-Extensions` headers (in order).
///
/// An offer with an unknown, repeated or malformed parameter is declined
/// (RFC 7692 §5: the server MUST decline it), as is one we cannot honor
/// (`server_max_window_bits=8`); the next offer is tried. A header we cannot
/// parse at all declines everything it holds. Declining is never an error:
/// the connection proceeds without compression.
pub fn negotiate<S: AsRef<str>>(header_values: &[S]) -> Option<Agreed> {
    header_values
        .iter()
        .flat_map(|value| split_outside_quotes(value.as_ref(), ','))
        .find_map(|offer| accept_offer(offer.trim()))
}

/// The client's side: checks the server's `Sec-WebSocket-Extensions` answer
/// to an offer of plain `permessage-deflate` and returns what was agreed.
/// `Ok(None)` when the server declined (no extension); an error when the
/// server answered with something we did not offer or cannot speak.
pub fn client_accepts(response_value: Option<&str>) -> Result<Option<ClientAgreed>, String> {
    let Some(value) = response_value else {
        return Ok(None);
    };
    let mut extensions = split_outside_quotes(value, ',');
    let (Some(extension), None) = (extensions.next(), extensions.next()) else {
        return Err(format!("server answered several extensions: {value:?}"));
    };
    let mut parts = split_outside_quotes(extension, ';').map(str::trim);
    if parts.next() != Some(EXTENSION_NAME) {
        return Err(format!(
            "server answered an extension we did not offer: {value:?}"
        ));
    }
    let mut agreed = ClientAgreed {
        server_no_context_takeover: false,
        client_no_context_takeover: false,
    };
    for part in parts {
        let param = parse_param(part).ok_or_else(|| format!("malformed parameter {part:?}"))?;
        match param {
            ("server_no_context_takeover", None) => agreed.server_no_context_takeover = true,
            ("client_no_context_takeover", None) => agreed.client_no_context_takeover = true,
            ("server_max_window_bits", Some(bits)) if window_bits(&bits).is_some() => {}
            _ => return Err(format!("unexpected parameter {part:?}")),
        }
    }
    Ok(Some(agreed))
}

/// The parameters a client learns from the server's answer.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ClientAgreed {
    /// Each server message stands alone (ours always do).
    pub server_no_context_takeover: bool,
    /// The client must compress each message on its own.
    pub client_no_context_takeover: bool,
}

/// Compresses `payload` as one permessage-deflate message (RFC 7692 §7.2.1:
/// raw deflate, sync-flushed, its `00 00 ff ff` tail removed) with a
/// window of `window_bits`, and frames it as a final frame of `opcode` with
/// RSV1 set. `None` when compressing would not make the message smaller:
/// send it uncompressed then (RSV1 is per message).
///
/// The compressor is reused per thread and per window size: building one
/// costs more than compressing a chat message. Level 6 (zlib's default):
/// a push is compressed once for all its recipients, so the ratio matters
/// more than the few microseconds; zlib-rs's level 1 left 1000-byte chat
/// JSON at 61% of its size instead of 45% (`benches/benches/deflate.rs`).
pub fn compress_frame(opcode: OpCode, payload: &[u8], window_bits: u8) -> Option<Bytes> {
    assert!(
        (WINDOW_BITS_MIN..=WINDOW_BITS_MAX).contains(&window_bits),
        "window bits {window_bits} out of range"
    );
    assert!(!opcode.is_control(), "control frames are never compressed");
    thread_local! {
        static COMPRESSORS: std::cell::RefCell<Vec<(u8, Compress)>> =
            const { std::cell::RefCell::new(Vec::new()) };
    }
    COMPRESSORS.with(|cell| {
        let mut compressors = cell.borrow_mut();
        let index = match compressors
            .iter()
            .position(|(bits, _)| *bits == window_bits)
        {
            Some(index) => index,
            None => {
                compressors.push((
                    window_bits,
                    Compress::new_with_window_bits(Compression::default(), false, window_bits),
                ));
                compressors.len() - 1
            }
        };
        let (_, compress) = compressors.get_mut(index)?;
        compress.reset();
        let compressed = deflate_sync(compress, payload)?;
        let body = compressed.strip_suffix(&SYNC_TAIL).unwrap_or(&compressed);
        if body.len() >= payload.len() {
            return None;
        }
        let mut header = [0u8; 14];
        let header_len = encode_header(&mut header, true, opcode, body.len(), None);
        let mut frame = BytesMut::with_capacity(header_len + body.len());
        frame.put_slice(header.get(..header_len).unwrap_or_default());
        frame.put_slice(body);
        let first = frame.first_mut()?;
        *first |= RSV1;
        Some(frame.freeze())
    })
}

/// Compresses one message on its own (no context takeover) as the client
/// side sends it: raw deflate without the sync tail. For clients and tests;
/// the server compresses through [`compress_frame`].
pub fn compress_message(payload: &[u8]) -> Vec<u8> {
    let mut compress = Compress::new_with_window_bits(Compression::default(), false, 15);
    let mut compressed = deflate_sync(&mut compress, payload).unwrap_or_default();
    if compressed.ends_with(&SYNC_TAIL) {
        compressed.truncate(compressed.len() - SYNC_TAIL.len());
    }
    compressed
}

/// The RSV1 bit of a frame's first byte: "this message is compressed".
pub const RSV1: u8 = 0x40;

/// Inflates permessage-deflate messages, one at a time, each on its own
/// (the peer agreed to `client_no_context_takeover`). One per thread serves
/// every connection: it holds a 32 KiB window and zlib's state (about
/// 40 KiB) plus the largest message inflated lately.
pub struct Inflater {
    decompress: Decompress,
    out: Vec<u8>,
}

impl std::fmt::Debug for Inflater {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Inflater")
            .field("out_capacity", &self.out.capacity())
            .finish_non_exhaustive()
    }
}

impl Default for Inflater {
    fn default() -> Self {
        Self::new()
    }
}

impl Inflater {
    /// Inflates with the largest window, which reads data compressed with
    /// any smaller one too; so the client's window is never limited.
    pub fn new() -> Inflater {
        Inflater {
            decompress: Decompress::new_with_window_bits(false, WINDOW_BITS_MAX),
            out: Vec::new(),
        }
    }

    /// Inflates one compressed message (its frames' payloads, the tail
    /// removed by the sender) into at most `limit` bytes. Never produces
    /// more than `limit + 1` bytes, however well the input compresses: a
    /// zip bomb costs at most the limit. A text message must inflate to
    /// valid UTF-8.
    ///
    /// Errors carry the close code: 1009 over the limit, 1007 for data
    /// that is not deflate or text that is not UTF-8.
    pub fn inflate(
        &mut self,
        compressed: &[u8],
        text: bool,
        limit: usize,
    ) -> Result<&[u8], ProtocolError> {
        // A large message's buffer is not kept for the next small one.
        if self.out.capacity() > INFLATE_KEEP_BYTES_MAX {
            self.out = Vec::new();
        }
        self.out.clear();
        self.decompress.reset(false);
        let ended = self.feed(compressed, FlushDecompress::None, limit)?;
        if !ended {
            self.feed(&SYNC_TAIL, FlushDecompress::Sync, limit)?;
        }
        if text && simdutf8::basic::from_utf8(&self.out).is_err() {
            return Err(ProtocolError {
                close_code: CloseCode::INVALID_PAYLOAD,
                reason: "text message is not valid UTF-8",
            });
        }
        Ok(&self.out)
    }

    /// Inflates a message the decoder marked compressed
    /// (`Decoded::compressed`) under the message size `limit`.
    pub fn inflate_message<'a>(
        &'a mut self,
        message: Message<'_>,
        limit: usize,
    ) -> Result<Message<'a>, ProtocolError> {
        match message {
            Message::Text(bytes) => self.inflate(bytes, true, limit).map(Message::Text),
            Message::Binary(bytes) => self.inflate(bytes, false, limit).map(Message::Binary),
            // The decoder never marks a control frame compressed.
            Message::Ping(_) | Message::Pong(_) | Message::Close(_) => Err(ProtocolError {
                close_code: CloseCode::PROTOCOL_ERROR,
                reason: "control frame marked compressed",
            }),
        }
    }

    /// Feeds `input` to the inflater until it is all taken and no output is
    /// pending, or the stream ended. Returns whether it ended (a final
    /// block: whatever follows is ignored).
    fn feed(
        &mut self,
        mut input: &[u8],
        flush: FlushDecompress,
        limit: usize,
    ) -> Result<bool, ProtocolError> {
        loop {
            if self.out.len() == self.out.capacity() {
                let room =
                    (limit + 1 - self.out.len()).min(self.out.len().max(INFLATE_CHUNK_BYTES));
                self.out.reserve_exact(room);
            }
            let in_before = self.decompress.total_in();
            let out_before = self.out.len();
            let status = self
                .decompress
                .decompress_vec(input, &mut self.out, flush)
                .map_err(|_| corrupt())?;
            let taken = (self.decompress.total_in() - in_before) as usize;
            input = input.get(taken..).unwrap_or_default();
            if self.out.len() > limit {
                return Err(ProtocolError {
                    close_code: CloseCode::MESSAGE_TOO_BIG,
                    reason: "message inflates past the message size limit",
                });
            }
            let room_left = self.out.len() < self.out.capacity();
            match status {
                Status::StreamEnd => return Ok(true),
                _ if input.is_empty() && room_left => return Ok(false),
                // Room and input but no progress: the data is truncated
                // in a way no more input can fix.
                _ if taken == 0 && self.out.len() == out_before && room_left => {
                    return Err(corrupt());
                }
                _ => {}
            }
        }
    }
}

/// Output buffer of an [`Inflater`] kept between messages.
const INFLATE_KEEP_BYTES_MAX: usize = 64 * 1024;
/// First step of the output buffer's growth.
const INFLATE_CHUNK_BYTES: usize = 4096;
/// RFC 7692 §7.2.1: what a sync flush ends with and the sender removes.
const SYNC_TAIL: [u8; 4] = [0x00, 0x00, 0xff, 0xff];

fn corrupt() -> ProtocolError {
    ProtocolError {
        close_code: CloseCode::INVALID_PAYLOAD,
        reason: "compressed message is not valid deflate data",
    }
}

/// Raw deflate of `payload`, sync-flushed (ends with [`SYNC_TAIL`]).
fn deflate_sync(compress: &mut Compress, payload: &[u8]) -> Option<Vec<u8>> {
    let mut out = Vec::with_capacity(payload.len() / 2 + 64);
    let mut input = payload;
    loop {
        if out.len() == out.capacity() {
            out.reserve(out.capacity().max(64));
        }
        let in_before = compress.total_in();
        compress
            .compress_vec(input, &mut out, FlushCompress::Sync)
            .ok()?;
        let taken = (compress.total_in() - in_before) as usize;
        input = input.get(taken..)?;
        // With room left after a sync flush, everything is out.
        if input.is_empty() && out.len() < out.capacity() {
            return Some(out);
        }
    }
}

/// Accepts one offer (`permessage-deflate; param; ...`) or declines it.
fn accept_offer(offer: &str) -> Option<Agreed> {
    let mut parts = split_outside_quotes(offer, ';').map(str::trim);
    if !parts.next()?.eq_ignore_ascii_case(EXTENSION_NAME) {
        return None;
    }
    let mut seen = [false; 4];
    let mut agreed = Agreed {
        server_window_bits: WINDOW_BITS_MAX,
        server_window_bits_offered: false,
    };
    for part in parts {
        let (name, value) = parse_param(part)?;
        let index = PARAMS.iter().position(|known| *known == name)?;
        let first_time = !std::mem::replace(seen.get_mut(index)?, true);
        if !first_time {
            return None;
        }
        match (name, value) {
            ("server_no_context_takeover" | "client_no_context_takeover", None) => {}
            ("server_max_window_bits", Some(value)) => {
                let bits = window_bits(&value)?;
                if bits < WINDOW_BITS_MIN {
                    return None;
                }
                agreed.server_window_bits = bits;
                agreed.server_window_bits_offered = true;
            }
            // We inflate with the largest window, so any client window
            // is fine and the response need not mention it.
            ("client_max_window_bits", None) => {}
            ("client_max_window_bits", Some(value)) => {
                window_bits(&value)?;
            }
            _ => return None,
        }
    }
    Some(agreed)
}

/// The parameters RFC 7692 §7.1 defines; anything else declines the offer.
const PARAMS: [&str; 4] = [
    "server_no_context_takeover",
    "client_no_context_takeover",
    "server_max_window_bits",
    "client_max_window_bits",
];

/// §7.1.2.1: `1*DIGIT` from 8 to 15, no leading zero.
fn window_bits(value: &str) -> Option<u8> {
    if value.starts_with('0') || value.is_empty() || !value.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    let bits: u8 = value.parse().ok()?;
    (8..=WINDOW_BITS_MAX).contains(&bits).then_some(bits)
}

/// `name` or `name=value` where the value is a token or a quoted string
/// (RFC 6455 §9.1; unquoted here). `None` when malformed.
fn parse_param(part: &str) -> Option<(&str, Option<String>)> {
    let (name, value) = match part.split_once('=') {
        None => (part.trim(), None),
        Some((name, value)) => (name.trim(), Some(value.trim())),
    };
    if !is_token(name) {
        return None;
    }
    let value = match value {
        None => None,
        Some(value) => match value.strip_prefix('"') {
            Some(quoted) => Some(unquote(quoted)?),
            None if is_token(value) => Some(value.to_owned()),
            None => return None,
        },
    };
    Some((name, value))
}

/// The rest of a quoted string after its opening quote, unescaped; `None`
/// unless it ends right at its closing quote.
fn unquote(quoted: &str) -> Option<String> {
    let mut out = String::new();
    let mut chars = quoted.chars();
    while let Some(c) = chars.next() {
        match c {
            '\\' => out.push(chars.next()?),
            '"' => return chars.as_str().is_empty().then_some(out),
            c => out.push(c),
        }
    }
    None
}

/// RFC 7230 `token`: visible ASCII except separators.
fn is_token(s: &str) -> bool {
    !s.is_empty()
        && s.bytes()
            .all(|b| b.is_ascii_graphic() && !b"()<>@,;:\\\"/[]?={}".contains(&b))
}

/// Splits on `separator` where it is not inside a quoted string.
fn split_outside_quotes(s: &str, separator: char) -> impl Iterator<Item = &str> {
    let mut start = 0;
    let mut quoted = false;
    let mut escaped = false;
    let mut pieces = Vec::new();
    for (i, c) in s.char_indices() {
        match c {
            _ if escaped => escaped = false,
            '\\' if quoted => escaped = true,
            '"' => quoted = !quoted,
            c if c == separator && !quoted => {
                pieces.push(s.get(start..i).unwrap_or_default());
                start = i + c.len_utf8();
            }
            _ => {}
        }
    }
    pieces.push(s.get(start..).unwrap_or_default());
    pieces.into_iter()
}

#[cfg(test)]
mod tests;
