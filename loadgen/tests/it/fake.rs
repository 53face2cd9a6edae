//! Protocol conformance fakes for the non-Ringcast profiles: a WebSocket
//! server (tungstenite) plus an HTTP publish endpoint, in threads. They
//! check what the load generator sends (paths, subscribe messages, pongs,
//! publish bodies, Pusher signatures) and broadcast what it publishes, so
//! the counts can be checked end to end. They measure nothing.

use std::collections::BTreeMap;
use std::io::{BufRead, BufReader, Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::mpsc::{self, Receiver, Sender};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;
use std::time::Duration;

use hmac::{Hmac, Mac};
use md5::{Digest, Md5};
use sha2::Sha256;
use tungstenite::handshake::server::{Request, Response};
use tungstenite::{Message, WebSocket};

/// What the fake speaks.
#[derive(Clone)]
pub enum Kind {
    /// nchan: subscribe by URL `/sub/<channel>`, publish by POSTing the
    /// raw body to `/pub/<channel>`.
    Nchan,
    /// pushpin: subscribers as nchan; publish by POSTing a GRIP body to
    /// `/publish/`.
    Pushpin,
    /// Pusher Channels v7 with an app `(id, key, secret)`.
    Pusher {
        app_id: String,
        key: String,
        secret: String,
    },
}

/// Everything the fake saw.
#[derive(Default, Debug)]
pub struct Log {
    /// Request paths of the WebSocket upgrades.
    pub ws_paths: Vec<String>,
    /// Text messages clients sent.
    pub ws_texts: Vec<String>,
    /// Pusher: `pusher:pong` messages received.
    pub pongs: u64,
    /// HTTP publishes accepted (valid body, and signature for Pusher).
    pub publishes_ok: u64,
    /// HTTP requests refused, with the reason.
    pub refused: Vec<String>,
}

pub struct FakeServer {
    pub ws_addr: SocketAddr,
    pub http_addr: SocketAddr,
    pub log: Arc<Mutex<Log>>,
    stop: Arc<AtomicBool>,
    threads: Vec<JoinHandle<()>>,
}

impl Drop for FakeServer {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::SeqCst);
        for thread in self.threads.drain(..) {
            let _ = thread.join();
        }
    }
}

impl FakeServer {
    pub fn start(kind: Kind) -> FakeServer {
        let ws = TcpListener::bind("127.0.0.1:0").unwrap();
        let http = TcpListener::bind("127.0.0.1:0").unwrap();
        ws.set_nonblocking(true).unwrap();
        http.set_nonblocking(true).unwrap();
        let ws_addr = ws.local_addr().unwrap();
        let http_addr = http.local_addr().unwrap();
        let log = Arc::new(Mutex::new(Log::default()));
        let stop = Arc::new(AtomicBool::new(false));
        let (broadcast_tx, broadcast_rx) = mpsc::channel();
        let threads = vec![
            {
                let (kind, log, stop) = (kind.clone(), log.clone(), stop.clone());
                std::thread::spawn(move || ws_loop(&kind, &ws, &broadcast_rx, &log, &stop))
            },
            {
                let (log, stop) = (log.clone(), stop.clone());
                std::thread::spawn(move || http_loop(&kind, &http, &broadcast_tx, &log, &stop))
            },
        ];
        FakeServer {
            ws_addr,
            http_addr,
            log,
            stop,
            threads,
        }
    }
}

struct Client {
    ws: WebSocket<TcpStream>,
    channel: Option<String>,
}

fn ws_loop(
    kind: &Kind,
    listener: &TcpListener,
    broadcasts: &Receiver<(String, String)>,
    log: &Mutex<Log>,
    stop: &AtomicBool,
) {
    let mut clients: Vec<Client> = Vec::new();
    while !stop.load(Ordering::SeqCst) {
        while let Ok((stream, _)) = listener.accept() {
            stream.set_nonblocking(false).unwrap();
            let mut path = String::new();
            #[expect(
                clippy::result_large_err,
                reason = "tungstenite's callback signature returns its own error response"
            )]
            let callback = |request: &Request, response: Response| {
                path = request.uri().to_string();
                Ok(response)
            };
            let accepted = tungstenite::accept_hdr(stream, callback);
            let Ok(mut ws) = accepted else {
                continue;
            };
            log.lock().unwrap().ws_paths.push(path.clone());
            let channel = match kind {
                Kind::Nchan | Kind::Pushpin => path.strip_prefix("/sub/").map(str::to_owned),
                Kind::Pusher { .. } => {
                    ws.send(Message::text(
                        r#"{"event":"pusher:connection_established","data":"{\"socket_id\":\"1.1\",\"activity_timeout\":120}"}"#,
                    ))
                    .unwrap();
                    // Every client must answer this with pusher:pong.
                    ws.send(Message::text(r#"{"event":"pusher:ping","data":{}}"#))
                        .unwrap();
                    None
                }
            };
            ws.get_mut().set_nonblocking(true).unwrap();
            clients.push(Client { ws, channel });
        }
        while let Ok((channel, text)) = broadcasts.try_recv() {
            for client in &mut clients {
                if client.channel.as_deref() == Some(channel.as_str()) {
                    let _ = client.ws.send(Message::text(text.clone()));
                }
            }
        }
        clients.retain_mut(|client| loop {
            match client.ws.read() {
                Ok(Message::Text(text)) => on_text(kind, client, &text, log),
                Ok(_) => {}
                Err(tungstenite::Error::Io(error))
                    if error.kind() == std::io::ErrorKind::WouldBlock =>
                {
                    let _ = client.ws.flush();
                    return true;
                }
                Err(_) => return false,
            }
        });
        std::thread::sleep(Duration::from_millis(2));
    }
}

fn on_text(kind: &Kind, client: &mut Client, text: &str, log: &Mutex<Log>) {
    log.lock().unwrap().ws_texts.push(text.to_owned());
    if !matches!(kind, Kind::Pusher { .. }) {
        return;
    }
    let message: serde_json::Value = serde_json::from_str(text).unwrap();
    match message["event"].as_str() {
        Some("pusher:subscribe") => {
            let channel = message["data"]["channel"].as_str().unwrap().to_owned();
            let reply = serde_json::json!({
                "event": "pusher_internal:subscription_succeeded",
                "channel": channel,
                "data": "{}",
            });
            let _ = client.ws.send(Message::text(reply.to_string()));
            client.channel = Some(channel);
        }
        Some("pusher:pong") => log.lock().unwrap().pongs += 1,
        other => panic!("unexpected Pusher event {other:?}: {text}"),
    }
}

fn http_loop(
    kind: &Kind,
    listener: &TcpListener,
    broadcasts: &Sender<(String, String)>,
    log: &Mutex<Log>,
    stop: &AtomicBool,
) {
    while !stop.load(Ordering::SeqCst) {
        let Ok((stream, _)) = listener.accept() else {
            std::thread::sleep(Duration::from_millis(2));
            continue;
        };
        stream.set_nonblocking(false).unwrap();
        stream
            .set_read_timeout(Some(Duration::from_millis(50)))
            .unwrap();
        let mut reader = BufReader::new(stream.try_clone().unwrap());
        let mut writer = stream;
        // One keep-alive connection at a time (the publisher has one).
        while !stop.load(Ordering::SeqCst) {
            let mut line = String::new();
            match reader.read_line(&mut line) {
                Ok(0) => break,
                Ok(_) => {}
                Err(_) => continue,
            }
            let target = line.split_whitespace().nth(1).unwrap_or("").to_owned();
            let mut headers = BTreeMap::new();
            loop {
                let mut header = String::new();
                reader.read_line(&mut header).unwrap();
                let header = header.trim_end();
                if header.is_empty() {
                    break;
                }
                let (name, value) = header.split_once(':').unwrap();
                headers.insert(name.to_ascii_lowercase(), value.trim().to_owned());
            }
            let length: usize = headers["content-length"].parse().unwrap();
            let mut body = vec![0u8; length];
            reader.read_exact(&mut body).unwrap();
            let body = String::from_utf8(body).unwrap();
            let (status, response) = match publish(kind, &target, &body) {
                Ok((channel, text)) => {
                    log.lock().unwrap().publishes_ok += 1;
                    broadcasts.send((channel, text)).unwrap();
                    (202, "Published\n")
                }
                Err(reason) => {
                    log.lock().unwrap().refused.push(reason);
                    (401, "refused\n")
                }
            };
            write!(
                writer,
                "HTTP/1.1 {status} X\r\nContent-Length: {}\r\n\r\n{response}",
                response.len()
            )
            .unwrap();
        }
    }
}

/// Checks one publish request as the real server would; returns the channel
/// and the text frame its subscribers get.
fn publish(kind: &Kind, target: &str, body: &str) -> Result<(String, String), String> {
    match kind {
        Kind::Nchan => {
            let channel = target
                .strip_prefix("/pub/")
                .ok_or(format!("path {target}"))?;
            check_payload(body)?;
            Ok((channel.to_owned(), body.to_owned()))
        }
        Kind::Pushpin => {
            if target != "/publish/" {
                return Err(format!("path {target}"));
            }
            let grip: serde_json::Value = serde_json::from_str(body).map_err(|e| e.to_string())?;
            let item = &grip["items"][0];
            let channel = item["channel"].as_str().ok_or("no channel")?;
            let content = item["formats"]["ws-message"]["content"]
                .as_str()
                .ok_or("no ws-message content string")?;
            check_payload(content)?;
            Ok((channel.to_owned(), content.to_owned()))
        }
        Kind::Pusher {
            app_id,
            key,
            secret,
        } => {
            let (path, query) = target.split_once('?').ok_or("no query")?;
            if path != format!("/apps/{app_id}/events") {
                return Err(format!("path {path}"));
            }
            let params: BTreeMap<&str, &str> = query
                .split('&')
                .filter_map(|pair| pair.split_once('='))
                .collect();
            if params.get("auth_key") != Some(&key.as_str()) {
                return Err("auth_key".to_owned());
            }
            let body_md5: String = Md5::digest(body.as_bytes())
                .iter()
                .map(|b| format!("{b:02x}"))
                .collect();
            if params.get("body_md5") != Some(&body_md5.as_str()) {
                return Err("body_md5".to_owned());
            }
            let timestamp: u64 = params["auth_timestamp"].parse().map_err(|_| "timestamp")?;
            let now = std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .unwrap()
                .as_secs();
            if timestamp.abs_diff(now) > 600 {
                return Err("auth_timestamp too far".to_owned());
            }
            // Sorted by name (BTreeMap), without the signature.
            let signed: Vec<String> = params
                .iter()
                .filter(|(name, _)| **name != "auth_signature")
                .map(|(name, value)| format!("{name}={value}"))
                .collect();
            let to_sign = format!("POST\n{path}\n{}", signed.join("&"));
            let mut mac = Hmac::<Sha256>::new_from_slice(secret.as_bytes()).unwrap();
            mac.update(to_sign.as_bytes());
            let expected: String = mac
                .finalize()
                .into_bytes()
                .iter()
                .map(|b| format!("{b:02x}"))
                .collect();
            if params.get("auth_signature") != Some(&expected.as_str()) {
                return Err("auth_signature".to_owned());
            }
            let event: serde_json::Value = serde_json::from_str(body).map_err(|e| e.to_string())?;
            let channel = event["channels"][0].as_str().ok_or("no channel")?;
            let name = event["name"].as_str().ok_or("no name")?;
            let data = event["data"].as_str().ok_or("data is not a string")?;
            check_payload(data)?;
            let push = serde_json::json!({"event": name, "channel": channel, "data": data});
            Ok((channel.to_owned(), push.to_string()))
        }
    }
}

fn check_payload(text: &str) -> Result<(), String> {
    let payload: serde_json::Value = serde_json::from_str(text).map_err(|e| e.to_string())?;
    if payload["seq"].is_u64() && payload["t_us"].is_u64() {
        Ok(())
    } else {
        Err(format!("payload {text}"))
    }
}
