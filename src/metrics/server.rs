//! A small HTTP/1.1 server for `/metrics`, `/healthz/live` and
//! `/healthz/ready`: one thread of its own, non-blocking sockets and
//! poll(2), with no runtime (the rest of the program is OS threads and
//! blocking calls).
//!
//! A slow or hostile client must stall neither delivery (which never waits
//! for this server: see [`super::Metrics`]) nor the server. One thread serves
//! every connection and never waits on any one of them; one request per
//! connection. A head is read as soon as it arrives, checked for a deadline
//! and a size, and answered at once (the answer is made in microseconds);
//! an answer the client is slow to take waits for it until a deadline. At
//! most [`Limits::connections`] are open: when all are taken, the one that
//! has waited longest for its request head is closed to make room, so an
//! idle or one-byte-a-second client holds a place only until someone needs
//! it, while a real scrape, which sends its request at once, is served on
//! arrival. Only when every place is writing an answer is a newcomer told
//! 503 at once.

use std::io::{self, Read, Write};
use std::net::{IpAddr, Shutdown, SocketAddr, TcpListener, TcpStream};
use std::os::fd::AsRawFd;
use std::os::unix::net::UnixStream;
use std::sync::Arc;
use std::thread::{self, JoinHandle};
use std::time::{Duration, Instant};

use super::{Health, Metrics};
use crate::sys;

/// The bounds every connection lives within.
#[derive(Clone, Copy, Debug)]
pub struct Limits {
    /// Connections open at once.
    pub connections: usize,
    /// Time from accept to a complete request head.
    pub head_deadline: Duration,
    /// Size of a request head (request line and headers).
    pub head_size: usize,
    /// Time for the client to take the whole answer.
    pub write_deadline: Duration,
}

pub const LIMITS: Limits = Limits {
    connections: 64,
    head_deadline: Duration::from_secs(5),
    head_size: 8 * 1024,
    write_deadline: Duration::from_secs(5),
};

/// Connections taken from the backlog per turn of the loop: a flood of
/// them does not keep the loop from the ones already open, and, being at
/// most a quarter of the places, cannot make room by closing one accepted
/// in the same turn before the next turn reads its head.
const ACCEPTS_PER_TURN: usize = LIMITS.connections / 4;

/// A non-loopback address serves the metrics and health to the network:
/// refused unless the configuration says so.
pub fn check_listen(addr: SocketAddr, allow_remote: bool) -> Result<(), String> {
    if allow_remote || addr.ip().to_canonical().is_loopback() {
        return Ok(());
    }
    let loopback: IpAddr =
        if addr.is_ipv4() { [127, 0, 0, 1].into() } else { [0, 0, 0, 0, 0, 0, 0, 1].into() };
    Err(format!(
        "metrics listen address {addr} is not a loopback address: it would serve /metrics and /healthz to the network; \
         listen on {} instead, or set allow_remote = true in [metrics] (a container's probes need it)",
        SocketAddr::new(loopback, addr.port())
    ))
}

/// A running server; dropping it (or [`ServerHandle::stop`]) stops it.
pub struct ServerHandle {
    addr: SocketAddr,
    /// One byte written here wakes the loop to end.
    wake: UnixStream,
    serving: Option<JoinHandle<()>>,
}

/// What answers need.
struct Shared {
    metrics: Arc<Metrics>,
    health: Arc<Health>,
}

/// Serve on `listener` (already bound: [`check_listen`] first) until the
/// handle is stopped or dropped.
pub fn serve(listener: TcpListener, metrics: Arc<Metrics>, health: Arc<Health>) -> io::Result<ServerHandle> {
    let addr = listener.local_addr()?;
    listener.set_nonblocking(true)?;
    let (woken, wake) = UnixStream::pair()?;
    let shared = Shared { metrics, health };
    let serving =
        thread::Builder::new().name("metrics".into()).spawn(move || run(&listener, &woken, &shared))?;
    Ok(ServerHandle { addr, wake, serving: Some(serving) })
}

impl ServerHandle {
    pub fn local_addr(&self) -> SocketAddr {
        self.addr
    }

    /// Stop: the loop ends at once, closing the listening socket and every
    /// connection.
    pub fn stop(mut self) {
        self.halt();
    }

    fn halt(&mut self) {
        let Some(serving) = self.serving.take() else { return };
        let _ = (&self.wake).write_all(b"!");
        let _ = serving.join();
    }
}

impl Drop for ServerHandle {
    fn drop(&mut self) {
        self.halt();
    }
}

struct Conn {
    stream: TcpStream,
    accepted: Instant,
    deadline: Instant,
    state: State,
}

enum State {
    /// The head so far.
    Reading(Vec<u8>),
    /// The answer, and how much of it is written.
    Writing(Vec<u8>, usize),
}

fn run(listener: &TcpListener, woken: &UnixStream, shared: &Shared) {
    let mut conns: Vec<Conn> = Vec::new();
    // Out of descriptors, accept() fails at once and the listener stays
    // readable: leave it alone a moment rather than spin.
    let mut accept_after: Option<Instant> = None;
    loop {
        let now = Instant::now();
        conns.retain(|conn| {
            if now < conn.deadline {
                return true;
            }
            if let State::Reading(_) = conn.state {
                answer_now(&conn.stream, &text(408, "Request Timeout", "request head too slow\n"));
            }
            false
        });
        accept_after = accept_after.filter(|at| now < *at);
        let pollfd = |fd, events| libc::pollfd { fd, events, revents: 0 };
        let mut fds = vec![
            pollfd(woken.as_raw_fd(), libc::POLLIN),
            // A negative descriptor is ignored by poll.
            pollfd(if accept_after.is_some() { -1 } else { listener.as_raw_fd() }, libc::POLLIN),
        ];
        fds.extend(conns.iter().map(|conn| {
            let events = if let State::Writing(..) = conn.state { libc::POLLOUT } else { libc::POLLIN };
            pollfd(conn.stream.as_raw_fd(), events)
        }));
        let next = conns.iter().map(|conn| conn.deadline).chain(accept_after).min();
        let timeout = next.map_or(-1, |at| {
            let ms = at.saturating_duration_since(now).as_millis() + 1;
            i32::try_from(ms).unwrap_or(i32::MAX)
        });
        if let Err(e) = sys::poll(&mut fds, timeout) {
            // EINTR; or ENOMEM, which the next turn may not meet.
            if e.kind() != io::ErrorKind::Interrupted {
                thread::sleep(Duration::from_millis(100));
            }
            continue;
        }
        if fds[0].revents != 0 {
            return;
        }
        let mut open = Vec::with_capacity(conns.len() + 1);
        for (conn, fd) in conns.into_iter().zip(&fds[2..]) {
            if fd.revents == 0 {
                open.push(conn);
            } else if let Some(conn) = advance(conn, shared) {
                open.push(conn);
            }
        }
        conns = open;
        if fds[1].revents != 0 {
            for _ in 0..ACCEPTS_PER_TURN {
                match listener.accept() {
                    Ok((stream, _)) => admit(stream, &mut conns, shared),
                    Err(e) if e.kind() == io::ErrorKind::WouldBlock => break,
                    Err(e)
                        if matches!(
                            e.raw_os_error(),
                            Some(libc::EMFILE | libc::ENFILE | libc::ENOBUFS | libc::ENOMEM)
                        ) =>
                    {
                        accept_after = Some(Instant::now() + Duration::from_millis(100));
                        break;
                    }
                    // The client gave up before we took it (ECONNABORTED) and the like.
                    Err(_) => {}
                }
            }
        }
    }
}

/// Take a new connection: serve it at once if its head is already here,
/// else give it a place, closing the longest-waiting reader if need be, or
/// answer 503 when every place is writing.
fn admit(stream: TcpStream, conns: &mut Vec<Conn>, shared: &Shared) {
    if stream.set_nonblocking(true).is_err() {
        return;
    }
    let now = Instant::now();
    let conn = Conn {
        stream,
        accepted: now,
        deadline: now + LIMITS.head_deadline,
        state: State::Reading(Vec::new()),
    };
    let Some(conn) = advance(conn, shared) else { return };
    if conns.len() >= LIMITS.connections {
        let oldest = conns
            .iter()
            .enumerate()
            .filter(|(_, c)| matches!(c.state, State::Reading(_)))
            .min_by_key(|(_, c)| c.accepted)
            .map(|(i, _)| i);
        match oldest {
            Some(i) => drop(conns.swap_remove(i)),
            None if matches!(conn.state, State::Reading(_)) => return answer_now(&conn.stream, &busy()),
            // Half its answer is out already: closing it is all there is.
            None => return,
        }
    }
    conns.push(conn);
}

/// Do what the connection is ready for; None once it is done with.
fn advance(mut conn: Conn, shared: &Shared) -> Option<Conn> {
    if let State::Reading(head) = &mut conn.state {
        match read_head(&mut conn.stream, head) {
            Ok(None) => return Some(conn),
            Ok(Some((method, path))) => {
                conn.state = State::Writing(respond(&method, &path, shared), 0);
                conn.deadline = Instant::now() + LIMITS.write_deadline;
            }
            Err(HeadError::Closed) => return None,
            Err(HeadError::TooLarge) => {
                answer_now(
                    &conn.stream,
                    &text(431, "Request Header Fields Too Large", "request head too large\n"),
                );
                return None;
            }
            Err(HeadError::Malformed) => {
                answer_now(&conn.stream, &text(400, "Bad Request", "bad request\n"));
                return None;
            }
        }
    }
    if let State::Writing(answer, written) = &mut conn.state {
        while *written < answer.len() {
            match (&conn.stream).write(&answer[*written..]) {
                Ok(0) => return None,
                Ok(n) => *written += n,
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => return Some(conn),
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(_) => return None,
            }
        }
        let _ = conn.stream.shutdown(Shutdown::Write);
    }
    None
}

enum HeadError {
    Closed,
    TooLarge,
    Malformed,
}

/// Read what has come of the head: the method and path (query dropped)
/// once it is whole, None while it is not.
fn read_head(stream: &mut TcpStream, head: &mut Vec<u8>) -> Result<Option<(String, String)>, HeadError> {
    let mut chunk = [0; 2048];
    loop {
        let room = LIMITS.head_size - head.len();
        match stream.read(&mut chunk[..room.min(2048)]) {
            Ok(0) => return Err(HeadError::Closed),
            Ok(n) => head.extend_from_slice(&chunk[..n]),
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => return Ok(None),
            Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
            Err(_) => return Err(HeadError::Closed),
        }
        let mut headers = [httparse::EMPTY_HEADER; 32];
        let mut request = httparse::Request::new(&mut headers);
        match request.parse(head) {
            Ok(httparse::Status::Complete(_)) => {
                let method = request.method.unwrap_or_default().to_string();
                let target = request.path.unwrap_or_default();
                let path = target.split('?').next().unwrap_or_default().to_string();
                return Ok(Some((method, path)));
            }
            Ok(httparse::Status::Partial) if head.len() == LIMITS.head_size => {
                return Err(HeadError::TooLarge)
            }
            Ok(httparse::Status::Partial) => {}
            Err(httparse::Error::TooManyHeaders) => return Err(HeadError::TooLarge),
            Err(_) => return Err(HeadError::Malformed),
        }
    }
}

fn respond(method: &str, path: &str, shared: &Shared) -> Vec<u8> {
    let head_only = match method {
        "GET" => false,
        "HEAD" => true,
        _ => {
            // Allow is required with a 405.
            let headers = [("Content-Type", PLAIN), ("Allow", "GET, HEAD")];
            return answer(405, "Method Not Allowed", &headers, b"only GET and HEAD\n");
        }
    };
    let response = match path {
        "/metrics" => {
            let body = shared.metrics.render();
            answer(
                200,
                "OK",
                &[("Content-Type", "text/plain; version=0.0.4; charset=utf-8")],
                body.as_bytes(),
            )
        }
        "/healthz/live" => health(shared.health.live()),
        "/healthz/ready" => health(shared.health.ready()),
        _ => text(404, "Not Found", "not found: try /metrics, /healthz/live or /healthz/ready\n"),
    };
    if !head_only {
        return response;
    }
    let end = response.windows(4).position(|w| w == b"\r\n\r\n").map_or(response.len(), |i| i + 4);
    response[..end].to_vec()
}

fn health(state: Result<(), String>) -> Vec<u8> {
    match state {
        Ok(()) => text(200, "OK", "ok\n"),
        Err(reason) => text(503, "Service Unavailable", &format!("{reason}\n")),
    }
}

fn busy() -> Vec<u8> {
    text(503, "Service Unavailable", "busy: too many connections\n")
}

const PLAIN: &str = "text/plain; charset=utf-8";

fn text(status: u16, reason: &str, body: &str) -> Vec<u8> {
    answer(status, reason, &[("Content-Type", PLAIN)], body.as_bytes())
}

fn answer(status: u16, reason: &str, headers: &[(&str, &str)], body: &[u8]) -> Vec<u8> {
    let mut head = format!("HTTP/1.1 {status} {reason}\r\n");
    for (name, value) in headers {
        head.push_str(&format!("{name}: {value}\r\n"));
    }
    head.push_str(&format!(
        "Content-Length: {}\r\nCache-Control: no-store\r\nConnection: close\r\n\r\n",
        body.len()
    ));
    let mut response = head.into_bytes();
    response.extend_from_slice(body);
    response
}

/// Write what the socket takes now, without waiting, and end the
/// connection: for clients that are not served (a small answer fits an
/// empty socket buffer).
fn answer_now(stream: &TcpStream, response: &[u8]) {
    let _ = stream.set_nonblocking(true);
    let _ = (&*stream).write(response);
    let _ = stream.shutdown(Shutdown::Write);
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_loopback_listens_without_allow_remote() {
        for ok in ["127.0.0.1:9898", "127.1.2.3:1", "[::1]:9898", "[::ffff:127.0.0.1]:9898"] {
            assert_eq!(check_listen(ok.parse().unwrap(), false), Ok(()), "{ok}");
        }
        for remote in ["0.0.0.0:9898", "[::]:9898", "10.0.0.5:9898", "[2001:db8::1]:9898"] {
            let addr: SocketAddr = remote.parse().unwrap();
            let error = check_listen(addr, false).unwrap_err();
            assert!(error.contains(&format!("{addr} is not a loopback address")), "{error}");
            assert!(error.contains("allow_remote = true in [metrics]"), "{error}");
            assert_eq!(check_listen(addr, true), Ok(()));
        }
        let error = check_listen("0.0.0.0:9000".parse().unwrap(), false).unwrap_err();
        assert!(error.contains("listen on 127.0.0.1:9000 instead"), "{error}");
        let error = check_listen("[::]:9000".parse().unwrap(), false).unwrap_err();
        assert!(error.contains("listen on [::1]:9000 instead"), "{error}");
    }

    fn shared() -> Shared {
        Shared { metrics: Metrics::new("1.2.3"), health: Health::new() }
    }

    /// A connected pair: (our side, the client's side).
    fn pair(listener: &TcpListener) -> (TcpStream, TcpStream) {
        let client = TcpStream::connect(listener.local_addr().unwrap()).unwrap();
        client.set_read_timeout(Some(Duration::from_secs(20))).unwrap();
        (listener.accept().unwrap().0, client)
    }

    /// Every place taken, oldest first: by readers, or by writers.
    fn fill(listener: &TcpListener, reading: bool) -> (Vec<Conn>, Vec<TcpStream>) {
        let start = Instant::now();
        (0..LIMITS.connections)
            .map(|i| {
                let (stream, client) = pair(listener);
                let state = if reading { State::Reading(Vec::new()) } else { State::Writing(vec![b'x'], 0) };
                let accepted = start + Duration::from_millis(i as u64);
                (Conn { stream, accepted, deadline: accepted + LIMITS.head_deadline, state }, client)
            })
            .unzip()
    }

    #[test]
    fn a_full_house_of_readers_makes_room_by_closing_the_oldest() {
        let (shared, listener) = (shared(), TcpListener::bind("127.0.0.1:0").unwrap());
        let (mut conns, mut clients) = fill(&listener, true);
        let (ours, _newcomer) = pair(&listener);
        admit(ours, &mut conns, &shared);
        assert_eq!(conns.len(), LIMITS.connections);
        // The oldest reader was closed; the next one stays.
        assert_eq!(clients[0].read(&mut [0; 16]).unwrap(), 0);
        clients[1].set_nonblocking(true).unwrap();
        assert_eq!(clients[1].read(&mut [0; 16]).unwrap_err().kind(), io::ErrorKind::WouldBlock);
    }

    #[test]
    fn a_head_already_there_is_answered_on_arrival() {
        let (shared, listener) = (shared(), TcpListener::bind("127.0.0.1:0").unwrap());
        let (mut conns, _clients) = fill(&listener, false);
        let (ours, mut newcomer) = pair(&listener);
        newcomer.write_all(b"GET /healthz/live HTTP/1.1\r\n\r\n").unwrap();
        thread::sleep(Duration::from_millis(50));
        admit(ours, &mut conns, &shared);
        let mut answer = String::new();
        newcomer.read_to_string(&mut answer).unwrap();
        assert!(answer.starts_with("HTTP/1.1 200 OK\r\n") && answer.ends_with("\r\n\r\nok\n"), "{answer}");
        assert_eq!(conns.len(), LIMITS.connections);
    }

    #[test]
    fn a_full_house_of_answers_turns_newcomers_away_at_once() {
        let (shared, listener) = (shared(), TcpListener::bind("127.0.0.1:0").unwrap());
        let (mut conns, _clients) = fill(&listener, false);
        let (ours, mut newcomer) = pair(&listener);
        admit(ours, &mut conns, &shared);
        let mut answer = String::new();
        newcomer.read_to_string(&mut answer).unwrap();
        assert!(answer.starts_with("HTTP/1.1 503 Service Unavailable\r\n"), "{answer}");
        assert!(answer.ends_with("\r\n\r\nbusy: too many connections\n"), "{answer}");
        assert_eq!(conns.len(), LIMITS.connections);
    }

    #[test]
    fn head_requests_get_the_headers_of_get_and_no_body() {
        let shared = shared();
        let get = respond("GET", "/metrics", &shared);
        let head = respond("HEAD", "/metrics", &shared);
        assert!(get.starts_with(&head) && get.len() > head.len());
        assert!(head.ends_with(b"\r\n\r\n"));
        let post = String::from_utf8(respond("POST", "/metrics", &shared)).unwrap();
        assert!(post.starts_with("HTTP/1.1 405 Method Not Allowed\r\n"), "{post}");
        assert!(post.contains("\r\nAllow: GET, HEAD\r\n"), "{post}");
    }
}
