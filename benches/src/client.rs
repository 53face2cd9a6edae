//! A minimal, bounded WebSocket client for the measurement tools: blocking
//! upgrade and subscribe, then non-blocking reads that only parse frame
//! headers; and the tools' API client, which is ureq's. Until the load generator lands this is the stand-in the issue
//! allows; it is deliberately cheap per frame so the engine, not the client,
//! is what gets measured.

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::time::Duration;

use anyhow::{bail, Context};
use ringcast_protocol::frame::{encode_frame, OpCode};

pub fn token(secret: &str, user: &str) -> anyhow::Result<String> {
    let exp = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)?
        .as_secs()
        + 24 * 3600;
    Ok(jsonwebtoken::encode(
        &jsonwebtoken::Header::new(jsonwebtoken::Algorithm::HS256),
        &serde_json::json!({"sub": user, "exp": exp}),
        &jsonwebtoken::EncodingKey::from_secret(secret.as_bytes()),
    )?)
}

/// Reads one unmasked server frame from a blocking stream: (opcode, payload).
pub fn read_frame<S: Read>(stream: &mut S) -> anyhow::Result<(u8, Vec<u8>)> {
    let mut head = [0u8; 2];
    stream.read_exact(&mut head)?;
    let len = match head[1] & 0x7f {
        126 => {
            let mut b = [0u8; 2];
            stream.read_exact(&mut b)?;
            u16::from_be_bytes(b) as usize
        }
        127 => {
            let mut b = [0u8; 8];
            stream.read_exact(&mut b)?;
            u64::from_be_bytes(b) as usize
        }
        n => n as usize,
    };
    let mut payload = vec![0; len];
    stream.read_exact(&mut payload)?;
    Ok((head[0] & 0x0f, payload))
}

/// Connects, upgrades and reads the `connect` message.
pub fn connect(ws: SocketAddr, token: &str) -> anyhow::Result<TcpStream> {
    connect_offering(ws, token, false)
}

/// [`connect`], offering permessage-deflate when `deflate` (as browsers
/// do: `permessage-deflate; client_max_window_bits`); then the server must
/// accept it.
pub fn connect_offering(ws: SocketAddr, token: &str, deflate: bool) -> anyhow::Result<TcpStream> {
    let mut stream = TcpStream::connect(ws).with_context(|| format!("connect {ws}"))?;
    stream.set_read_timeout(Some(Duration::from_secs(10)))?;
    stream.set_nodelay(true)?;
    upgrade_offering(&mut stream, token, deflate)?;
    Ok(stream)
}

/// Sends the upgrade request on a connected stream (plain or TLS), checks
/// the 101 and reads the `connect` message.
pub fn upgrade<S: Read + Write>(stream: &mut S, token: &str) -> anyhow::Result<()> {
    upgrade_offering(stream, token, false)
}

/// [`upgrade`], offering permessage-deflate when `deflate`; then the server
/// must accept it.
pub fn upgrade_offering<S: Read + Write>(
    stream: &mut S,
    token: &str,
    deflate: bool,
) -> anyhow::Result<()> {
    let offer = if deflate {
        "Sec-WebSocket-Extensions: permessage-deflate; client_max_window_bits\r\n"
    } else {
        ""
    };
    write!(
        stream,
        "GET /connection/websocket?token={token} HTTP/1.1\r\nHost: bench\r\nUpgrade: websocket\r\nConnection: Upgrade\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n{offer}\r\n"
    )?;
    stream.flush()?;
    let mut head = Vec::with_capacity(256);
    let mut byte = [0u8; 1];
    while !head.ends_with(b"\r\n\r\n") {
        stream.read_exact(&mut byte)?;
        head.push(byte[0]);
    }
    if !head.starts_with(b"HTTP/1.1 101") {
        bail!("upgrade refused: {}", String::from_utf8_lossy(&head));
    }
    if deflate && !head.windows(18).any(|w| w == b"permessage-deflate") {
        bail!("permessage-deflate was not negotiated: is websocket.compression on?");
    }
    let (opcode, payload) = read_frame(stream)?;
    if opcode != 1 || !payload.starts_with(b"{\"connect\"") {
        bail!("expected connect message, got opcode {opcode}");
    }
    Ok(())
}

/// Sends a JSON command as a masked text frame and waits for its reply.
pub fn command<S: Read + Write>(stream: &mut S, json: &str) -> anyhow::Result<Vec<u8>> {
    stream.write_all(&encode_frame(
        OpCode::Text,
        json.as_bytes(),
        Some([1, 2, 3, 4]),
    ))?;
    loop {
        let (opcode, payload) = read_frame(stream)?;
        if opcode == 1 && payload.starts_with(b"{\"id\"") {
            return Ok(payload);
        }
    }
}

/// The measurement tools' HTTP client for the API (ureq): keep-alive
/// connections pooled per thread's agent, every status an answer.
pub fn api_agent() -> ureq::Agent {
    ureq::Agent::config_builder()
        .http_status_as_error(false)
        .timeout_global(Some(Duration::from_secs(10)))
        .build()
        .into()
}

/// POSTs a JSON `body` to `path` on the API at `api`; the status and the
/// answer's body (read whole, so the connection is reused).
pub fn api_post(
    agent: &ureq::Agent,
    api: SocketAddr,
    api_key: &str,
    path: &str,
    body: &str,
) -> anyhow::Result<(u16, String)> {
    let mut response = agent
        .post(format!("http://{api}{path}"))
        .header("Authorization", format!("apikey {api_key}"))
        .header("Content-Type", "application/json")
        .send(body)
        .with_context(|| format!("POST {path}"))?;
    let status = response.status().as_u16();
    Ok((status, response.body_mut().read_to_string()?))
}

/// The header and payload length of the server frame at the start of
/// `buf`, or `None` until its header is complete.
pub fn frame_extent(buf: &[u8]) -> Option<(usize, usize)> {
    let second = *buf.get(1)?;
    match second & 0x7f {
        126 => Some((
            4,
            usize::from(u16::from_be_bytes([*buf.get(2)?, *buf.get(3)?])),
        )),
        127 => {
            let bytes: [u8; 8] = buf.get(2..10)?.try_into().ok()?;
            Some((10, usize::try_from(u64::from_be_bytes(bytes)).ok()?))
        }
        n => Some((2, usize::from(n))),
    }
}

/// One publication through `agent` (a kept-alive API connection); fails
/// unless 200.
pub fn publish_on(
    agent: &ureq::Agent,
    api: SocketAddr,
    api_key: &str,
    channel: &str,
    data: &str,
) -> anyhow::Result<()> {
    let body = format!(r#"{{"channel":"{channel}","data":{data}}}"#);
    let (status, answer) = api_post(agent, api, api_key, "/api/publish", &body)?;
    anyhow::ensure!(status == 200, "publish failed: {status} {answer}");
    Ok(())
}

/// Subscribes to `channel` (command id 1); fails unless the reply is a
/// result.
pub fn subscribe<S: Read + Write>(stream: &mut S, channel: &str) -> anyhow::Result<()> {
    let reply = command(
        stream,
        &format!(r#"{{"id":1,"method":"subscribe","params":{{"channel":"{channel}"}}}}"#),
    )?;
    anyhow::ensure!(
        reply.windows(8).any(|w| w == b"\"result\""),
        "subscribe refused: {}",
        String::from_utf8_lossy(&reply)
    );
    Ok(())
}

/// Resident set size of `pid` in bytes, from /proc.
pub fn rss_bytes(pid: u32) -> anyhow::Result<u64> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status"))?;
    let line = status
        .lines()
        .find(|l| l.starts_with("VmRSS:"))
        .context("no VmRSS")?;
    let kb: u64 = line
        .split_whitespace()
        .nth(1)
        .context("VmRSS value")?
        .parse()?;
    Ok(kb * 1024)
}

/// CPU seconds (user + system) used by `pid` so far, from /proc.
pub fn cpu_seconds(pid: u32) -> anyhow::Result<f64> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat"))?;
    let after_comm = stat.rsplit_once(')').context("stat format")?.1;
    let fields: Vec<&str> = after_comm.split_whitespace().collect();
    let utime: f64 = fields.get(11).context("utime")?.parse()?;
    let stime: f64 = fields.get(12).context("stime")?.parse()?;
    Ok((utime + stime) / 100.0)
}

/// Parses `--key=value` arguments into a lookup.
pub struct Args(Vec<(String, String)>);

impl Args {
    pub fn parse() -> anyhow::Result<Args> {
        let mut pairs = Vec::new();
        for arg in std::env::args().skip(1) {
            let Some((k, v)) = arg.strip_prefix("--").and_then(|a| a.split_once('=')) else {
                bail!("arguments are --key=value, got {arg:?}");
            };
            pairs.push((k.to_string(), v.to_string()));
        }
        Ok(Args(pairs))
    }

    pub fn get<T: std::str::FromStr>(&self, key: &str, default: T) -> anyhow::Result<T>
    where
        T::Err: std::fmt::Display,
    {
        match self.0.iter().find(|(k, _)| k == key) {
            Some((_, v)) => v.parse().map_err(|e| anyhow::anyhow!("--{key}: {e}")),
            None => Ok(default),
        }
    }
}
