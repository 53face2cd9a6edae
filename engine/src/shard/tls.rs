//! One `wss://` connection's TLS layer: the rustls server connection, and
//! the ciphertext taken from it that waits for the socket.
//!
//! Reads: ciphertext goes from the socket straight into rustls (`read_tls`,
//! one `recv` into rustls' own record buffer), and the plaintext is copied
//! out into the caller's buffer (the shard's scratch, where frames are
//! decoded in place as for plain connections).
//!
//! Writes: the session's queued frames are encrypted into rustls only while
//! rustls holds less than `TLS_BUFFER_BYTES_MAX` of records, so a blocked
//! peer's backlog stays in the session's queue, where its bound and the
//! slow-consumer timeout apply. The records are then moved into `out` and
//! written with the poller's send like any connection's frames (on
//! io_uring a ring `SENDMSG` that owns a pointer into `out` until its
//! completion, so `out` is not touched while `in_flight`; on epoll a direct
//! send, retried when epoll says writable). Encryption is per recipient:
//! a shared publication frame is copied once into each subscriber's
//! records, the end of the zero-copy path for TLS connections.

use std::io::{self, Read, Write};
use std::os::fd::BorrowedFd;
use std::sync::Arc;

use rustls::{ServerConfig, ServerConnection};

use super::conn::Recv;
use crate::limits::{IOV_MAX, TLS_BUFFER_BYTES_MAX};
use crate::session::Session;
use crate::sys::{self, Io};

pub struct TlsConn {
    conn: ServerConnection,
    /// Records taken from rustls; `out[sent..]` has not reached the socket.
    out: Vec<u8>,
    sent: usize,
    /// A ring send of `out[sent..]` is in flight: `out` must not change.
    pub in_flight: bool,
    /// `close_notify` was queued; the write side is half-closed once it is
    /// written (`shutdown_pending`).
    close_notify_sent: bool,
    shutdown_pending: bool,
}

impl TlsConn {
    pub fn new(config: Arc<ServerConfig>) -> Result<TlsConn, rustls::Error> {
        let mut conn = ServerConnection::new(config)?;
        conn.set_buffer_limit(Some(TLS_BUFFER_BYTES_MAX));
        Ok(TlsConn {
            conn,
            out: Vec::new(),
            sent: 0,
            in_flight: false,
            close_notify_sent: false,
            shutdown_pending: false,
        })
    }

    /// Reads plaintext into `buf` (never empty): what rustls already holds,
    /// else as many records from the socket as it takes to get some.
    /// `Done(0)` is the end of the stream (with or without `close_notify`).
    pub fn recv(&mut self, fd: BorrowedFd<'_>, buf: &mut [u8]) -> Recv {
        assert!(!buf.is_empty());
        let mut socket = SocketReader {
            fd,
            short: false,
            total: 0,
        };
        let mut socket_read = false;
        loop {
            let plain = self.conn.reader().read(buf);
            let wire_bytes = socket.total;
            let done = |result, drained| Recv {
                result,
                drained,
                wire_bytes,
            };
            match plain {
                Ok(0) => return done(Ok(Io::Done(0)), true),
                Ok(n) => return done(Ok(Io::Done(n)), socket.short && n < buf.len()),
                Err(err) if err.kind() == io::ErrorKind::WouldBlock => {}
                // The peer closed without `close_notify`: an end all the same
                // (a truncation cannot hurt a frame-delimited stream: a cut
                // frame is never handed on).
                Err(err) if err.kind() == io::ErrorKind::UnexpectedEof => {
                    return done(Ok(Io::Done(0)), true)
                }
                Err(err) => return done(Err(err), true),
            }
            if socket_read && socket.short {
                return done(Ok(Io::WouldBlock), true);
            }
            match self.conn.read_tls(&mut socket) {
                Ok(_) => socket_read = true,
                Err(err) if err.kind() == io::ErrorKind::WouldBlock => {
                    return done(Ok(Io::WouldBlock), true)
                }
                Err(err) => return done(Err(err), true),
            }
            if let Err(err) = self.conn.process_new_packets() {
                // rustls queued an alert saying why; the connection is about
                // to be dropped, so it gets one best-effort try now.
                self.send_alert(fd);
                return Recv {
                    result: Err(io::Error::new(io::ErrorKind::InvalidData, err)),
                    drained: true,
                    wire_bytes: socket.total,
                };
            }
        }
    }

    /// Moves the session's queued frames into rustls while it has room. A
    /// full rustls is not a full socket: whether the peer keeps up is told
    /// by the socket's writes (`Session::on_wire`), not by this.
    pub fn encrypt(&mut self, session: &mut Session) {
        while session.wants_send() {
            let mut slices = [io::IoSlice::new(&[]); IOV_MAX];
            let n_slices = session.start_send(&mut slices);
            if n_slices == 0 {
                return;
            }
            let offered: usize = slices[..n_slices].iter().map(|s| s.len()).sum();
            // Only a connection that already failed errors here; it is
            // being dropped, and what it did not take stays unsent.
            let taken = self
                .conn
                .writer()
                .write_vectored(&slices[..n_slices])
                .unwrap_or(0);
            session.on_buffered(taken);
            if taken < offered {
                return;
            }
        }
    }

    /// Queues `close_notify` (once) and asks for the write side to be
    /// half-closed after it.
    pub fn close_notify(&mut self, then_shutdown: bool) {
        if !self.close_notify_sent {
            self.close_notify_sent = true;
            self.conn.send_close_notify();
            self.shutdown_pending = then_shutdown;
        }
    }

    /// The ciphertext to write next; takes rustls' records first when the
    /// previous batch is out. Empty: nothing to write.
    pub fn pending(&mut self) -> &[u8] {
        debug_assert!(!self.in_flight, "out changed under a send in flight");
        if self.sent == self.out.len() {
            self.out.clear();
            self.sent = 0;
            // Writing into a Vec cannot fail; rustls drains all it has.
            while self.conn.wants_write() {
                if self.conn.write_tls(&mut self.out).is_err() {
                    break;
                }
            }
        }
        &self.out[self.sent..]
    }

    /// `written` bytes of `pending()` reached the socket; returns whether
    /// the write came back short of what was pending (the socket is full).
    pub fn on_sent(&mut self, written: usize) -> bool {
        assert!(
            self.sent + written <= self.out.len(),
            "wrote {written} bytes past the {} pending",
            self.out.len() - self.sent
        );
        self.sent += written;
        if self.sent == self.out.len() {
            // An idle connection holds no ciphertext buffer.
            self.out = Vec::new();
            self.sent = 0;
            false
        } else {
            true
        }
    }

    /// Nothing left to write: our records are all on the wire.
    pub fn is_flushed(&self) -> bool {
        !self.in_flight && self.sent == self.out.len() && !self.conn.wants_write()
    }

    /// True once, when `close_notify` is written and the write side should
    /// be half-closed.
    pub fn take_shutdown(&mut self) -> bool {
        if self.shutdown_pending && self.is_flushed() {
            self.shutdown_pending = false;
            return true;
        }
        false
    }

    /// One direct write of what rustls has, when no ring send owns `out`.
    fn send_alert(&mut self, fd: BorrowedFd<'_>) {
        if self.in_flight || self.sent != self.out.len() {
            return;
        }
        let mut socket = SocketWriter { fd };
        let _ = self.conn.write_tls(&mut socket);
    }
}

/// The socket as rustls' byte source: one non-blocking `recv` per call.
struct SocketReader<'a> {
    fd: BorrowedFd<'a>,
    /// The last read returned less than asked: the socket is empty.
    short: bool,
    /// Bytes read so far.
    total: usize,
}

impl Read for SocketReader<'_> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        match sys::recv(self.fd, buf)? {
            Io::Done(n) => {
                self.short = n < buf.len();
                self.total += n;
                Ok(n)
            }
            Io::WouldBlock => Err(io::ErrorKind::WouldBlock.into()),
        }
    }
}

/// The socket as a sink for a last alert: one non-blocking send.
struct SocketWriter<'a> {
    fd: BorrowedFd<'a>,
}

impl Write for SocketWriter<'_> {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        self.write_vectored(&[io::IoSlice::new(buf)])
    }

    fn write_vectored(&mut self, bufs: &[io::IoSlice<'_>]) -> io::Result<usize> {
        let bufs = &bufs[..bufs.len().min(IOV_MAX)];
        match sys::send_vectored(self.fd, bufs)? {
            Io::Done(n) => Ok(n),
            Io::WouldBlock => Err(io::ErrorKind::WouldBlock.into()),
        }
    }

    fn flush(&mut self) -> io::Result<()> {
        Ok(())
    }
}
