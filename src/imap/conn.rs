//! The connection under a session: a TCP socket with keepalive, TLS on it
//! or not, and one buffer that responses are framed from. Every read and
//! write is bounded by a deadline; a read that times out loses nothing
//! (the bytes of a partial line stay in our buffer, those of a partial TLS
//! record in rustls's), so a short read timeout can be used for polling.

use std::io::{self, ErrorKind, Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::os::fd::{AsFd, BorrowedFd};
use std::sync::Arc;
use std::time::{Duration, Instant};

use rustls::pki_types::ServerName;
use rustls::{ClientConfig, ClientConnection, StreamOwned};

use super::parse::{self, Frame};
use crate::sys::io_reason;

/// Bytes asked of the socket at a time.
const CHUNK: usize = 64 * 1024;

/// What went wrong below the protocol; the session adds whom and what for.
#[derive(Debug)]
pub(super) enum Failure {
    /// No byte came within the wait.
    Timeout,
    /// Bytes kept coming, but the whole answer did not within its limit.
    Overdue,
    /// Closed, reset, or broken mid-stream.
    Lost(String),
    /// The TLS handshake failed.
    Tls(String),
    /// The bytes cannot be responses (an overlong line or literal).
    Garbage(String),
}

/// A byte stream: the socket itself, or TLS over it.
trait Stream: Read + Write + Send {
    /// Tell the peer we are done (TLS close_notify), best effort.
    fn close(&mut self) {}

    /// Whether a read may return bytes without the socket being readable
    /// (TLS plaintext already decrypted, a close_notify received).
    fn buffered(&self) -> bool {
        false
    }
}

impl Stream for TcpStream {}

impl Stream for StreamOwned<ClientConnection, TcpStream> {
    fn close(&mut self) {
        self.conn.send_close_notify();
        let _ = self.flush();
    }

    fn buffered(&self) -> bool {
        !self.conn.wants_read()
    }
}

pub(super) struct Conn {
    stream: Box<dyn Stream>,
    /// The same socket, for its timeouts (they belong to the socket, not
    /// to one handle of it).
    socket: TcpStream,
    /// Read, not yet handed out: `buf[start..]`.
    buf: Vec<u8>,
    start: usize,
    frame: Frame,
    /// The most literal bytes one response may announce.
    pub(super) literal_cap: u64,
    /// When a byte last arrived.
    pub(super) last_heard: Instant,
}

/// A TCP connection to `addr` within `timeout`, with keepalive probes that
/// notice a dead peer within about two minutes of silence.
pub(super) fn tcp(addr: &SocketAddr, timeout: Duration) -> io::Result<TcpStream> {
    let socket = TcpStream::connect_timeout(addr, timeout)?;
    keepalive(&socket)?;
    socket.set_nodelay(true)?;
    Ok(socket)
}

fn keepalive(socket: &TcpStream) -> io::Result<()> {
    let probes = socket2::TcpKeepalive::new()
        .with_time(Duration::from_secs(60))
        .with_interval(Duration::from_secs(10))
        .with_retries(6);
    socket2::SockRef::from(socket).set_tcp_keepalive(&probes)
}

fn left(deadline: Instant) -> Result<Duration, Failure> {
    match deadline.checked_duration_since(Instant::now()) {
        Some(left) if !left.is_zero() => Ok(left),
        _ => Err(Failure::Timeout),
    }
}

/// A read or write error: Ok when it only means "not yet" (a timeout of
/// the socket, a signal), so the caller tries again until its deadline.
fn not_yet(e: io::Error) -> Result<(), Failure> {
    match e.kind() {
        ErrorKind::WouldBlock | ErrorKind::TimedOut | ErrorKind::Interrupted => Ok(()),
        ErrorKind::UnexpectedEof => Err(Failure::Lost("the server closed the connection".into())),
        _ => match e.get_ref().and_then(|inner| inner.downcast_ref::<rustls::Error>()) {
            Some(tls) => Err(Failure::Lost(format!("TLS: {tls}"))),
            None => Err(Failure::Lost(io_reason(&e))),
        },
    }
}

impl Conn {
    pub(super) fn plain(socket: TcpStream) -> io::Result<Conn> {
        Ok(Conn {
            stream: Box::new(socket.try_clone()?),
            socket,
            buf: Vec::new(),
            start: 0,
            frame: Frame::default(),
            literal_cap: parse::MAX_LITERAL,
            last_heard: Instant::now(),
        })
    }

    /// TLS over `socket`, the handshake done by `deadline`.
    pub(super) fn tls(
        socket: TcpStream,
        config: Arc<ClientConfig>,
        name: ServerName<'static>,
        deadline: Instant,
    ) -> Result<Conn, Failure> {
        let connection = ClientConnection::new(config, name).map_err(|e| Failure::Tls(e.to_string()))?;
        let handle = socket.try_clone().map_err(|e| Failure::Lost(io_reason(&e)))?;
        let mut tls = StreamOwned::new(connection, handle);
        while tls.conn.is_handshaking() {
            set_timeouts(&socket, left(deadline)?)?;
            match tls.conn.complete_io(&mut tls.sock) {
                Ok((0, 0)) => return Err(Failure::Tls("the TLS handshake stalled".into())),
                Ok(_) => {}
                Err(e) if matches!(e.kind(), ErrorKind::WouldBlock | ErrorKind::Interrupted) => {}
                Err(e) => {
                    return Err(Failure::Tls(
                        match e.get_ref().and_then(|inner| inner.downcast_ref::<rustls::Error>()) {
                            Some(tls) => tls.to_string(),
                            None if e.kind() == ErrorKind::UnexpectedEof => {
                                "the server closed the connection during the handshake".into()
                            }
                            None => io_reason(&e),
                        },
                    ))
                }
            }
        }
        Ok(Conn {
            stream: Box::new(tls),
            socket,
            buf: Vec::new(),
            start: 0,
            frame: Frame::default(),
            literal_cap: parse::MAX_LITERAL,
            last_heard: Instant::now(),
        })
    }

    /// This connection's socket, to start TLS on (STARTTLS).
    pub(super) fn into_socket(self) -> TcpStream {
        self.socket
    }

    /// Whether bytes were received that no response has taken yet.
    pub(super) fn pending(&self) -> bool {
        self.start < self.buf.len()
    }

    pub(super) fn send(&mut self, bytes: &[u8], deadline: Instant) -> Result<(), Failure> {
        let mut sent = 0;
        loop {
            // Both: a TLS write may read (a key update) while it waits.
            set_timeouts(&self.socket, left(deadline)?)?;
            if sent < bytes.len() {
                match self.stream.write(&bytes[sent..]) {
                    Ok(0) => return Err(Failure::Lost("the connection is closed".into())),
                    Ok(n) => sent += n,
                    Err(e) => not_yet(e)?,
                }
            } else {
                match self.stream.flush() {
                    Ok(()) => return Ok(()),
                    Err(e) => not_yet(e)?,
                }
            }
        }
    }

    /// The next whole response, as long as no wait for bytes, counted
    /// from `since` or the last byte, is longer than `timeout`, and it is
    /// whole by `overall` (a server that keeps talking without ever
    /// answering is as dead as a silent one).
    pub(super) fn response(
        &mut self,
        since: Instant,
        timeout: Duration,
        overall: Instant,
    ) -> Result<Vec<u8>, Failure> {
        loop {
            if let Some(response) = self.take()? {
                return Ok(response);
            }
            let quiet = since.max(self.last_heard) + timeout;
            let wait = match left(quiet.min(overall)) {
                Err(_) if quiet >= overall => return Err(Failure::Overdue),
                wait => wait?,
            };
            self.fill(wait)?;
        }
    }

    /// Whether bytes may be read now: at once if some are buffered, else
    /// after waiting at most `wait` for the socket, or less if `wake`
    /// becomes readable first (then false, as when the time is up).
    pub(super) fn readable(&self, wake: Option<BorrowedFd<'_>>, wait: Duration) -> bool {
        if self.pending() || self.stream.buffered() {
            return true;
        }
        // An error (EINTR) leaves it to the read, which has its own timeout.
        crate::sys::readable(self.socket.as_fd(), wake, wait).unwrap_or(true)
    }

    /// The next whole response if one is complete after waiting at most
    /// `wait` for bytes.
    pub(super) fn poll(&mut self, wait: Duration) -> Result<Option<Vec<u8>>, Failure> {
        if let Some(response) = self.take()? {
            return Ok(Some(response));
        }
        self.fill(wait)?;
        self.take()
    }

    fn take(&mut self) -> Result<Option<Vec<u8>>, Failure> {
        let framed = parse::frame(&self.buf[self.start..], &mut self.frame, self.literal_cap)
            .map_err(|e| Failure::Garbage(e.0))?;
        let Some(len) = framed else { return Ok(None) };
        let end = self.start + len;
        let response = if self.start == 0 && 2 * end >= self.buf.len() {
            // Mostly this one response (a message): keep its allocation.
            let rest = self.buf.split_off(end);
            std::mem::replace(&mut self.buf, rest)
        } else {
            self.start = end;
            self.buf[end - len..end].to_vec()
        };
        if self.start == self.buf.len() {
            self.buf.clear();
            self.start = 0;
        }
        Ok(Some(response))
    }

    /// Read what arrives within `wait`; nothing arriving is no error.
    fn fill(&mut self, wait: Duration) -> Result<(), Failure> {
        if self.start > 0 {
            self.buf.drain(..self.start);
            self.start = 0;
        }
        self.socket
            .set_read_timeout(Some(wait.max(Duration::from_millis(1))))
            .map_err(|e| Failure::Lost(io_reason(&e)))?;
        let len = self.buf.len();
        self.buf.resize(len + CHUNK, 0);
        let read = self.stream.read(&mut self.buf[len..]);
        self.buf.truncate(len + *read.as_ref().unwrap_or(&0));
        match read {
            Ok(0) => Err(Failure::Lost("the server closed the connection".into())),
            Ok(_) => {
                self.last_heard = Instant::now();
                Ok(())
            }
            Err(e) => not_yet(e),
        }
    }

    /// Close the connection, with TLS's close_notify first, within `deadline`.
    pub(super) fn close(mut self, deadline: Instant) {
        if let Ok(left) = left(deadline) {
            if set_timeouts(&self.socket, left).is_ok() {
                self.stream.close();
            }
        }
        let _ = self.socket.shutdown(std::net::Shutdown::Both);
    }
}

fn set_timeouts(socket: &TcpStream, timeout: Duration) -> Result<(), Failure> {
    let timeout = Some(timeout.max(Duration::from_millis(1)));
    socket
        .set_read_timeout(timeout)
        .and_then(|()| socket.set_write_timeout(timeout))
        .map_err(|e| Failure::Lost(io_reason(&e)))
}
