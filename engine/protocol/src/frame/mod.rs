//! RFC 6455 framing for both roles: a zero-copy, in-place frame decoder with
//! fragment reassembly, UTF-8 validation and size limits, plus the encoders.
//!
//! The engine reads into one scratch buffer per shard and keeps one
//! [`Decoder`] per connection, so the decoder is built around two costs:
//! - the common case (an unfragmented frame) borrows the caller's buffer,
//!   unmasks it in place and allocates nothing;
//! - an idle decoder is one pointer wide. Fragmented messages are rare, so
//!   their state lives behind `Option<Box<..>>`; role and limits are passed per
//!   call rather than stored.
//!
//! Every violation is reported as a [`ProtocolError`] carrying the close code
//! to send (1002, 1007 or 1009), detected as early as the bytes allow: header
//! rules and size limits are checked as soon as the header is complete,
//! before any payload is buffered.

use bytes::{BufMut, Bytes, BytesMut};

use crate::close::CloseCode;

/// Which end of the connection this decoder (or encoder caller) is.
///
/// RFC 6455 §5.1: clients mask every frame, servers mask none, and a
/// receiver must fail the connection on the wrong kind.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Role {
    /// Receives masked frames from clients.
    Server,
    /// Receives unmasked frames from a server.
    Client,
}

/// A frame opcode (RFC 6455 §5.2). Reserved opcodes are not representable:
/// they are rejected while parsing.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[repr(u8)]
pub enum OpCode {
    /// 0x0: continues a fragmented Text or Binary message.
    Continuation = 0x0,
    /// 0x1: a UTF-8 text message (or its first fragment).
    Text = 0x1,
    /// 0x2: a binary message (or its first fragment).
    Binary = 0x2,
    /// 0x8: close handshake.
    Close = 0x8,
    /// 0x9: ping; must be answered with a pong carrying the same payload.
    Ping = 0x9,
    /// 0xA: pong.
    Pong = 0xA,
}

impl OpCode {
    /// The opcode for a 4-bit wire value, or `None` for the reserved ones
    /// (0x3-0x7, 0xB-0xF).
    pub const fn from_u4(bits: u8) -> Option<Self> {
        match bits {
            0x0 => Some(Self::Continuation),
            0x1 => Some(Self::Text),
            0x2 => Some(Self::Binary),
            0x8 => Some(Self::Close),
            0x9 => Some(Self::Ping),
            0xA => Some(Self::Pong),
            _ => None,
        }
    }

    /// Control frames (Close, Ping, Pong) have opcodes with the high bit set.
    pub const fn is_control(self) -> bool {
        (self as u8) & 0x8 != 0
    }
}

/// Size limits applied while decoding. Both are checked from the frame
/// header, so an oversized frame is refused before its payload arrives.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Limits {
    /// Largest payload of a single frame. Larger → 1009.
    pub frame_bytes_max: usize,
    /// Largest payload of a whole (reassembled) message. Larger → 1009.
    pub message_bytes_max: usize,
}

/// A decoding failure: the connection must be closed with `close_code`.
///
/// `reason` is short, static ASCII, suitable as the Close frame reason.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[error("{reason}")]
pub struct ProtocolError {
    /// The close code to send: 1002, 1007 or 1009.
    pub close_code: CloseCode,
    /// Human-readable cause (also fit to send as the close reason).
    pub reason: &'static str,
}

impl ProtocolError {
    const fn protocol(reason: &'static str) -> Self {
        Self {
            close_code: CloseCode::PROTOCOL_ERROR,
            reason,
        }
    }

    const fn invalid_utf8(reason: &'static str) -> Self {
        Self {
            close_code: CloseCode::INVALID_PAYLOAD,
            reason,
        }
    }

    const fn too_big(reason: &'static str) -> Self {
        Self {
            close_code: CloseCode::MESSAGE_TOO_BIG,
            reason,
        }
    }
}

/// One complete message (or control frame).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Message<'a> {
    /// A text message; the bytes are already validated UTF-8.
    Text(&'a [u8]),
    /// A binary message.
    Binary(&'a [u8]),
    /// A ping; answer with a pong carrying the same payload.
    Ping(&'a [u8]),
    /// A pong.
    Pong(&'a [u8]),
    /// A close frame: `None` when it carried no payload (no status code).
    /// The code is valid per RFC 6455 §7.4 and the reason valid UTF-8.
    Close(Option<(CloseCode, &'a str)>),
}

/// The result of one successful [`Decoder::decode`] step.
///
/// The caller advances its buffer by `consumed` and, when `message` is
/// `Some`, handles it. `message` is `None` when a non-final fragment was
/// absorbed into the decoder's reassembly buffer: there is nothing to handle
/// yet, just keep decoding. `consumed` is always > 0.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Decoded<'a> {
    /// Bytes taken from the front of the buffer (exactly one frame).
    pub consumed: usize,
    /// The completed message, if this frame completed one.
    pub message: Option<Message<'a>>,
    /// The message is compressed (permessage-deflate: RSV1 was set on its
    /// first frame). Its bytes are deflate data, not yet checked as UTF-8
    /// for text: inflate them (`deflate::Inflater`) before use. Always
    /// false from [`Decoder::decode`].
    pub compressed: bool,
}

/// Per-connection decoding state.
///
/// Idle, it is a single null pointer; the reassembly state is allocated only
/// while a fragmented message is in progress (and freed on the first
/// `decode` call after that message was returned).
#[derive(Debug, Default)]
pub struct Decoder {
    reassembly: Option<Box<Reassembly>>,
}

// The engine keeps one decoder per connection; at a million connections
// every byte here is a megabyte.
const _: () = assert!(std::mem::size_of::<Decoder>() <= 16);

impl Decoder {
    /// A decoder with no message in progress.
    pub const fn new() -> Self {
        Self { reassembly: None }
    }

    /// Decode at most one frame from the front of `buf`, unmasking it in
    /// place.
    ///
    /// - `Ok(None)`: `buf` holds only part of a frame. Nothing was consumed
    ///   or modified; call again once more bytes follow these.
    /// - `Ok(Some(decoded))`: one frame was consumed (`decoded.consumed`
    ///   bytes). `decoded.message` borrows `buf` for unfragmented messages and
    ///   control frames (zero-copy) or the decoder's reassembly buffer for a
    ///   completed fragmented message.
    /// - `Err(e)`: the peer violated the protocol or a limit; close with
    ///   `e.close_code`. The decoder must not be used afterwards.
    ///
    /// The frame's header is validated (and limits applied) as soon as the
    /// header is complete, even if its payload has not arrived yet.
    pub fn decode<'a>(
        &'a mut self,
        buf: &'a mut [u8],
        role: Role,
        limits: &Limits,
    ) -> Result<Option<Decoded<'a>>, ProtocolError> {
        self.decode_with(buf, role, limits, false)
    }

    /// Like [`Decoder::decode`] on a connection that negotiated
    /// permessage-deflate when `deflate` is true: RSV1 on the first frame of
    /// a data message marks it compressed (`Decoded::compressed`); RSV1 on a
    /// continuation or a control frame stays a violation (RFC 7692 §6.1),
    /// as do RSV2 and RSV3. Limits apply to the bytes on the wire; the
    /// inflated size is the inflater's to bound.
    pub fn decode_with<'a>(
        &'a mut self,
        buf: &'a mut [u8],
        role: Role,
        limits: &Limits,
        deflate: bool,
    ) -> Result<Option<Decoded<'a>>, ProtocolError> {
        // The previous call may have returned a reassembled message that
        // borrowed the reassembly buffer; that borrow has ended, so free it
        // now rather than keep a large allocation on an idle connection.
        if self.reassembly.as_ref().is_some_and(|r| r.complete) {
            self.reassembly = None;
        }
        let in_progress_len = self.reassembly.as_ref().map(|r| r.payload.len());
        let Some(header) = parse_header(buf, role, in_progress_len, limits, deflate)? else {
            return Ok(None);
        };

        // Saturating: payload_len is bounded only by the caller's limits,
        // which may be usize::MAX; such a frame can never fit in `buf` anyway.
        let frame_len = header.header_len.saturating_add(header.payload_len);
        let Some(frame) = buf.get_mut(..frame_len) else {
            return Ok(None);
        };
        let payload = frame.get_mut(header.header_len..).unwrap_or_default();
        if let Some(key) = header.mask {
            apply_mask(payload, key);
        }
        let payload: &'a [u8] = payload;
        let consumed = frame_len;
        let mut compressed = header.compressed;

        let message = match header.opcode {
            OpCode::Ping => Some(Message::Ping(payload)),
            OpCode::Pong => Some(Message::Pong(payload)),
            OpCode::Close => Some(Message::Close(parse_close_payload(payload)?)),
            OpCode::Text | OpCode::Binary if header.fin && header.compressed => {
                Some(match header.opcode {
                    OpCode::Text => Message::Text(payload),
                    _ => Message::Binary(payload),
                })
            }
            OpCode::Text if header.fin => {
                if simdutf8::basic::from_utf8(payload).is_err() {
                    return Err(ProtocolError::invalid_utf8(
                        "text message is not valid UTF-8",
                    ));
                }
                Some(Message::Text(payload))
            }
            OpCode::Binary if header.fin => Some(Message::Binary(payload)),
            OpCode::Text | OpCode::Binary => {
                let mut reassembly = Box::new(Reassembly {
                    opcode: header.opcode,
                    payload: Vec::with_capacity(payload.len()),
                    utf8_checked_len: 0,
                    complete: false,
                    compressed: header.compressed,
                });
                reassembly.append(payload, false)?;
                self.reassembly = Some(reassembly);
                None
            }
            OpCode::Continuation => {
                let Some(reassembly) = self.reassembly.as_deref_mut() else {
                    // check_sequence rejected a continuation without a
                    // message in progress; reaching here is a decoder bug.
                    return Err(ProtocolError::protocol(
                        "continuation frame without a message",
                    ));
                };
                reassembly.append(payload, header.fin)?;
                compressed = reassembly.compressed;
                if header.fin {
                    reassembly.complete = true;
                    Some(match reassembly.opcode {
                        OpCode::Text => Message::Text(&reassembly.payload),
                        _ => Message::Binary(&reassembly.payload),
                    })
                } else {
                    None
                }
            }
        };
        Ok(Some(Decoded {
            consumed,
            message,
            compressed,
        }))
    }

    /// Whether a fragmented message is in progress (its first fragment was
    /// consumed and its final one was not).
    pub fn is_mid_message(&self) -> bool {
        self.reassembly.as_ref().is_some_and(|r| !r.complete)
    }
}

/// XOR `buf` with the 4-byte masking `key` (RFC 6455 §5.3), starting at key
/// phase 0. Masking and unmasking are the same operation.
pub fn apply_mask(buf: &mut [u8], key: [u8; 4]) {
    // Eight bytes per step: the key repeats every four bytes, so a u64 made
    // of the key twice lines up with every 8-byte chunk. Native endianness on
    // both sides keeps byte i of the word paired with key byte i % 4.
    let [k0, k1, k2, k3] = key;
    let key_word = u64::from_ne_bytes([k0, k1, k2, k3, k0, k1, k2, k3]);
    let mut chunks = buf.chunks_exact_mut(8);
    for chunk in &mut chunks {
        let mut word = [0u8; 8];
        word.copy_from_slice(chunk);
        chunk.copy_from_slice(&(u64::from_ne_bytes(word) ^ key_word).to_ne_bytes());
    }
    // The tail starts at a multiple of 8, hence at key phase 0.
    for (byte, k) in chunks.into_remainder().iter_mut().zip(key.iter().cycle()) {
        *byte ^= k;
    }
}

/// Like [`apply_mask`], for a slice that starts `offset` bytes into the
/// masked payload (e.g. when unmasking a payload that arrives in pieces).
pub fn apply_mask_at(buf: &mut [u8], key: [u8; 4], offset: usize) {
    let mut rotated = key;
    rotated.rotate_left(offset % 4);
    apply_mask(buf, rotated);
}

/// Write a frame header into `out` with the minimal length encoding and
/// return its length (2 to 14 bytes). RSV bits are always zero (a compressed
/// frame sets RSV1 afterwards: `deflate::compress_frame`).
pub fn encode_header(
    out: &mut [u8; 14],
    fin: bool,
    opcode: OpCode,
    payload_len: usize,
    mask: Option<[u8; 4]>,
) -> usize {
    assert!(
        !opcode.is_control() || (fin && payload_len <= CONTROL_PAYLOAD_MAX),
        "invalid control frame"
    );
    let [b0, b1, rest @ ..] = out;
    *b0 = (u8::from(fin) << 7) | opcode as u8;
    let mask_bit = if mask.is_some() { 0x80 } else { 0 };
    let length_bytes = if payload_len <= 125 {
        *b1 = mask_bit | payload_len as u8;
        0
    } else if let Ok(len16) = u16::try_from(payload_len) {
        *b1 = mask_bit | 126;
        rest[..2].copy_from_slice(&len16.to_be_bytes());
        2
    } else {
        *b1 = mask_bit | 127;
        rest[..8].copy_from_slice(&(payload_len as u64).to_be_bytes());
        8
    };
    let mut header_len = 2 + length_bytes;
    if let Some(key) = mask {
        rest[length_bytes..length_bytes + 4].copy_from_slice(&key);
        header_len += 4;
    }
    header_len
}

/// A complete (FIN) frame: header and payload in one allocation. With a
/// mask the payload is copied masked; `payload` is left untouched.
pub fn encode_frame(opcode: OpCode, payload: &[u8], mask: Option<[u8; 4]>) -> Bytes {
    let mut header = [0u8; 14];
    let header_len = encode_header(&mut header, true, opcode, payload.len(), mask);
    let mut out = BytesMut::with_capacity(header_len + payload.len());
    out.put_slice(header.get(..header_len).unwrap_or_default());
    out.put_slice(payload);
    if let Some(key) = mask {
        apply_mask(out.get_mut(header_len..).unwrap_or_default(), key);
    }
    out.freeze()
}

/// A Close frame with `code` and `reason`. The reason is truncated at a
/// character boundary so the payload fits the 125-byte control frame limit.
pub fn encode_close(code: CloseCode, reason: &str, mask: Option<[u8; 4]>) -> Bytes {
    // Sending 1005/1006/1015 or an unregistered code is a programmer error:
    // peers would fail the connection with 1002.
    assert!(
        code.is_valid_received(),
        "close code {code} must not be sent"
    );
    let reason = truncate_at_char_boundary(reason, CONTROL_PAYLOAD_MAX - 2);
    let mut payload = [0u8; CONTROL_PAYLOAD_MAX];
    let [c0, c1, rest @ ..] = &mut payload;
    [*c0, *c1] = code.0.to_be_bytes();
    rest[..reason.len()].copy_from_slice(reason.as_bytes());
    encode_frame(
        OpCode::Close,
        payload.get(..2 + reason.len()).unwrap_or_default(),
        mask,
    )
}

/// RFC 6455 §5.5: control frame payloads are at most 125 bytes.
const CONTROL_PAYLOAD_MAX: usize = 125;

/// A parsed, rule-checked frame header.
#[derive(Debug, Clone, Copy)]
struct FrameHeader {
    fin: bool,
    opcode: OpCode,
    mask: Option<[u8; 4]>,
    header_len: usize,
    payload_len: usize,
    /// RSV1 on the first frame of a data message, with deflate negotiated.
    compressed: bool,
}

/// State of a fragmented message between its first and final fragments.
#[derive(Debug)]
struct Reassembly {
    /// Text or Binary, from the first fragment.
    opcode: OpCode,
    payload: Vec<u8>,
    /// For text: `payload[..utf8_checked_len]` is valid UTF-8 and the rest
    /// (at most 3 bytes) is a prefix of a code point still being completed.
    utf8_checked_len: usize,
    /// The final fragment was appended and the message handed out.
    complete: bool,
    /// The message is compressed: its bytes are not UTF-8-checked here.
    compressed: bool,
}

impl Reassembly {
    fn append(&mut self, fragment: &[u8], fin: bool) -> Result<(), ProtocolError> {
        self.payload.extend_from_slice(fragment);
        if self.opcode != OpCode::Text || self.compressed {
            return Ok(());
        }
        // Validate only what is new (plus a carried partial code point).
        // `compat` tells an impossible sequence (error_len Some: fail now)
        // from one merely cut off by the fragment end (error_len None).
        let unchecked = self
            .payload
            .get(self.utf8_checked_len..)
            .unwrap_or_default();
        match simdutf8::compat::from_utf8(unchecked) {
            Ok(_) => self.utf8_checked_len = self.payload.len(),
            Err(err) if err.error_len().is_none() && !fin => {
                self.utf8_checked_len += err.valid_up_to();
            }
            Err(err) if err.error_len().is_none() => {
                return Err(ProtocolError::invalid_utf8(
                    "text message ends inside a UTF-8 sequence",
                ));
            }
            Err(_) => {
                return Err(ProtocolError::invalid_utf8(
                    "text message is not valid UTF-8",
                ))
            }
        }
        Ok(())
    }
}

/// Parse and rule-check the header at the front of `buf`; `Ok(None)` until
/// the whole header is present. Each rule is checked as soon as the bytes it
/// needs are there: fragmentation rules from the first two bytes, limits
/// from the length, before waiting for the masking key.
fn parse_header(
    buf: &[u8],
    role: Role,
    in_progress_len: Option<usize>,
    limits: &Limits,
    deflate: bool,
) -> Result<Option<FrameHeader>, ProtocolError> {
    let (b0, b1) = match buf {
        [b0, b1, ..] => (*b0, *b1),
        _ => return Ok(None),
    };
    let fin = b0 & 0x80 != 0;
    // RSV2 and RSV3 belong to no extension we speak (§5.2).
    if b0 & 0x30 != 0 {
        return Err(ProtocolError::protocol(
            "reserved bits set without a negotiated extension",
        ));
    }
    let Some(opcode) = OpCode::from_u4(b0 & 0x0F) else {
        return Err(ProtocolError::protocol("reserved opcode"));
    };
    // RSV1 is permessage-deflate's "compressed" bit: only with the
    // extension, and only on the first frame of a data message (RFC 7692
    // §6: never on continuations, never on control frames).
    let compressed = b0 & 0x40 != 0;
    if compressed && !(deflate && matches!(opcode, OpCode::Text | OpCode::Binary)) {
        return Err(ProtocolError::protocol(if deflate {
            "RSV1 set on a continuation or control frame"
        } else {
            "reserved bits set without a negotiated extension"
        }));
    }
    let masked = b1 & 0x80 != 0;
    match (role, masked) {
        (Role::Server, false) => return Err(ProtocolError::protocol("client frame is not masked")),
        (Role::Client, true) => return Err(ProtocolError::protocol("server frame is masked")),
        _ => {}
    }
    let len7 = b1 & 0x7F;
    if opcode.is_control() {
        if !fin {
            return Err(ProtocolError::protocol("fragmented control frame"));
        }
        if usize::from(len7) > CONTROL_PAYLOAD_MAX {
            return Err(ProtocolError::protocol(
                "control frame payload over 125 bytes",
            ));
        }
    }
    check_sequence(opcode, in_progress_len)?;
    let rest = buf.get(2..).unwrap_or_default();
    // Non-minimal length encodings are legal (§5.2 says "minimal number of
    // bytes MUST be used" for senders, but receivers are not required to
    // enforce it and common clients do not), so they are accepted.
    let (payload_len, length_bytes) = match len7 {
        126 => match rest {
            [a, b, ..] => (u64::from(u16::from_be_bytes([*a, *b])), 2),
            _ => return Ok(None),
        },
        127 => match rest.get(..8) {
            Some(bytes) => {
                let mut be = [0u8; 8];
                be.copy_from_slice(bytes);
                let len = u64::from_be_bytes(be);
                if len >> 63 != 0 {
                    return Err(ProtocolError::protocol(
                        "64-bit payload length has its high bit set",
                    ));
                }
                (len, 8)
            }
            None => return Ok(None),
        },
        short => (u64::from(short), 0),
    };
    // A length that does not fit usize cannot fit any limit either.
    let Ok(payload_len) = usize::try_from(payload_len) else {
        return Err(ProtocolError::too_big(
            "frame larger than the frame size limit",
        ));
    };
    check_limits(opcode, payload_len, in_progress_len, limits)?;
    let mask = if masked {
        match rest.get(length_bytes..length_bytes + 4) {
            Some(&[k0, k1, k2, k3]) => Some([k0, k1, k2, k3]),
            _ => return Ok(None),
        }
    } else {
        None
    };
    let header_len = 2 + length_bytes + if masked { 4 } else { 0 };
    Ok(Some(FrameHeader {
        fin,
        opcode,
        mask,
        header_len,
        payload_len,
        compressed,
    }))
}

/// Fragmentation rules (§5.4): continuations need a message in progress,
/// and a new data message may not start inside another one. Control frames
/// may be interleaved freely.
fn check_sequence(opcode: OpCode, in_progress_len: Option<usize>) -> Result<(), ProtocolError> {
    match (opcode, in_progress_len) {
        (OpCode::Continuation, None) => Err(ProtocolError::protocol(
            "continuation frame without a message",
        )),
        (OpCode::Text | OpCode::Binary, Some(_)) => Err(ProtocolError::protocol(
            "new data frame inside a fragmented message",
        )),
        _ => Ok(()),
    }
}

/// Size limits, checked from the announced length so an oversized frame is
/// refused before any of its payload is buffered.
fn check_limits(
    opcode: OpCode,
    payload_len: usize,
    in_progress_len: Option<usize>,
    limits: &Limits,
) -> Result<(), ProtocolError> {
    if payload_len > limits.frame_bytes_max {
        return Err(ProtocolError::too_big(
            "frame larger than the frame size limit",
        ));
    }
    if !opcode.is_control() {
        let message_len = in_progress_len.unwrap_or(0).saturating_add(payload_len);
        if message_len > limits.message_bytes_max {
            return Err(ProtocolError::too_big(
                "message larger than the message size limit",
            ));
        }
    }
    Ok(())
}

/// §5.5.1 and §7.1.6: empty, or a valid 2-byte code followed by UTF-8.
fn parse_close_payload(payload: &[u8]) -> Result<Option<(CloseCode, &str)>, ProtocolError> {
    match payload {
        [] => Ok(None),
        [_] => Err(ProtocolError::protocol("close payload of 1 byte")),
        [c0, c1, reason @ ..] => {
            let code = CloseCode(u16::from_be_bytes([*c0, *c1]));
            if !code.is_valid_received() {
                return Err(ProtocolError::protocol("invalid close code"));
            }
            let Ok(reason) = simdutf8::basic::from_utf8(reason) else {
                return Err(ProtocolError::invalid_utf8(
                    "close reason is not valid UTF-8",
                ));
            };
            Ok(Some((code, reason)))
        }
    }
}

fn truncate_at_char_boundary(s: &str, bytes_max: usize) -> &str {
    if s.len() <= bytes_max {
        return s;
    }
    let mut end = bytes_max;
    while !s.is_char_boundary(end) {
        end -= 1;
    }
    s.get(..end).unwrap_or_default()
}

#[cfg(test)]
mod tests;
