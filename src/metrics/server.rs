//! A small HTTP/1.1 server for `/metrics`, `/healthz/live` and
//! `/healthz/ready`, on OS threads with blocking I/O and deadlines, like the
//! rest of the program.
//!
//! A slow or hostile client must stall neither delivery (which never waits
//! for this server: see [`super::Metrics`]) nor the server. One request per
//! connection; a thread per connection, at most [`Limits::connections`] of
//! them. When all are taken, the connection that has waited longest for its
//! request head is closed to make room: an idle or one-byte-a-second client
//! holds a place only until someone needs it, so a real scrape, which sends
//! its request at once, is served. Only when every place is writing an
//! answer is a newcomer told 503 at once. The head must arrive whole within
//! a deadline and a size; the answer must be taken within a deadline.

use std::io::{self, Read, Write};
use std::net::{IpAddr, Shutdown, SocketAddr, TcpListener, TcpStream};
use std::os::fd::AsRawFd;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering::SeqCst};
use std::sync::{Arc, Mutex, MutexGuard};
use std::thread::{self, JoinHandle};
use std::time::{Duration, Instant};

use super::{Health, Metrics};

/// The bounds every connection lives within.
#[derive(Clone, Copy, Debug)]
pub struct Limits {
    /// Connections served at once.
    pub connections: usize,
    /// Threads at once, counting those of closed connections still ending.
    pub threads: usize,
    /// Time from accept to a complete request head.
    pub head_deadline: Duration,
    /// Size of a request head (request line and headers).
    pub head_size: usize,
    /// Time to write the whole answer.
    pub write_deadline: Duration,
}

pub const LIMITS: Limits = Limits {
    connections: 16,
    threads: 64,
    head_deadline: Duration::from_secs(5),
    head_size: 8 * 1024,
    write_deadline: Duration::from_secs(5),
};

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
    listener: Arc<TcpListener>,
    shared: Arc<Shared>,
    accepting: Option<JoinHandle<()>>,
}

struct Shared {
    metrics: Arc<Metrics>,
    health: Arc<Health>,
    stopping: AtomicBool,
    threads: AtomicUsize,
    slots: Mutex<Slots>,
}

#[derive(Default)]
struct Slots {
    next: u64,
    open: Vec<Slot>,
}

struct Slot {
    id: u64,
    /// A second handle on the connection, to close it from outside.
    stream: TcpStream,
    accepted: Instant,
    /// Still waiting for its request head: the one to close to make room.
    reading: bool,
}

/// Serve on `listener` (already bound: [`check_listen`] first) until the
/// handle is stopped or dropped.
pub fn serve(listener: TcpListener, metrics: Arc<Metrics>, health: Arc<Health>) -> io::Result<ServerHandle> {
    let addr = listener.local_addr()?;
    let listener = Arc::new(listener);
    let shared = Arc::new(Shared {
        metrics,
        health,
        stopping: AtomicBool::new(false),
        threads: AtomicUsize::new(0),
        slots: Mutex::new(Slots::default()),
    });
    let accepting = {
        let (listener, shared) = (listener.clone(), shared.clone());
        thread::Builder::new().name("metrics".into()).spawn(move || accept(&listener, &shared))?
    };
    Ok(ServerHandle { addr, listener, shared, accepting: Some(accepting) })
}

impl ServerHandle {
    pub fn local_addr(&self) -> SocketAddr {
        self.addr
    }

    /// Stop accepting, close every open connection, and wait for the
    /// accepting thread to end.
    pub fn stop(mut self) {
        self.halt();
    }

    fn halt(&mut self) {
        let Some(accepting) = self.accepting.take() else { return };
        self.shared.stopping.store(true, SeqCst);
        // shutdown() on a listening socket wakes a blocked accept() at once
        // (Linux: EINVAL), and new connections are refused from then on.
        // SAFETY: the descriptor belongs to `self.listener`, alive here.
        unsafe {
            libc::shutdown(self.listener.as_raw_fd(), libc::SHUT_RDWR);
        }
        let _ = accepting.join();
        // Nothing is admitted any more: end what is open.
        for slot in &self.shared.slots().open {
            let _ = slot.stream.shutdown(Shutdown::Both);
        }
    }
}

impl Drop for ServerHandle {
    fn drop(&mut self) {
        self.halt();
    }
}

impl Shared {
    fn slots(&self) -> MutexGuard<'_, Slots> {
        self.slots.lock().unwrap_or_else(|e| e.into_inner())
    }
}

fn accept(listener: &TcpListener, shared: &Arc<Shared>) {
    loop {
        let accepted = listener.accept();
        if shared.stopping.load(SeqCst) {
            return;
        }
        match accepted {
            Ok((stream, _)) => admit(stream, shared),
            // Out of descriptors or memory: accept() would fail again at
            // once; give the connections in hand time to end.
            Err(e)
                if matches!(
                    e.raw_os_error(),
                    Some(libc::EMFILE | libc::ENFILE | libc::ENOBUFS | libc::ENOMEM)
                ) =>
            {
                thread::sleep(Duration::from_millis(100))
            }
            // The client gave up before we took it (ECONNABORTED) and the like.
            Err(_) => {}
        }
    }
}

/// Give `stream` a place and a thread, closing the longest-waiting reader
/// if need be, or answer 503 at once.
fn admit(stream: TcpStream, shared: &Arc<Shared>) {
    if shared.threads.load(SeqCst) >= LIMITS.threads {
        return answer_now(stream, &busy());
    }
    let Ok(handle) = stream.try_clone() else { return answer_now(stream, &busy()) };
    let id = {
        let mut slots = shared.slots();
        if slots.open.len() >= LIMITS.connections {
            let oldest =
                slots.open.iter().enumerate().filter(|(_, s)| s.reading).min_by_key(|(_, s)| s.accepted);
            match oldest.map(|(i, _)| i) {
                Some(i) => {
                    let evicted = slots.open.swap_remove(i);
                    let _ = evicted.stream.shutdown(Shutdown::Both);
                }
                None => {
                    drop(slots);
                    return answer_now(stream, &busy());
                }
            }
        }
        let id = slots.next;
        slots.next += 1;
        slots.open.push(Slot { id, stream: handle, accepted: Instant::now(), reading: true });
        id
    };
    shared.threads.fetch_add(1, SeqCst);
    let worker = shared.clone();
    let spawned =
        thread::Builder::new().name("metrics-conn".into()).stack_size(128 * 1024).spawn(move || {
            connection(stream, id, &worker);
            worker.slots().open.retain(|slot| slot.id != id);
            worker.threads.fetch_sub(1, SeqCst);
        });
    if spawned.is_err() {
        // The stream went with the closure: it is closed.
        shared.slots().open.retain(|slot| slot.id != id);
        shared.threads.fetch_sub(1, SeqCst);
    }
}

fn connection(mut stream: TcpStream, id: u64, shared: &Shared) {
    let request = read_head(&mut stream, Instant::now() + LIMITS.head_deadline, LIMITS.head_size);
    let response = match request {
        Ok((method, path)) => {
            let mut slots = shared.slots();
            match slots.open.iter_mut().find(|slot| slot.id == id) {
                Some(slot) => slot.reading = false,
                None => return, // closed to make room
            }
            drop(slots);
            respond(&method, &path, shared)
        }
        Err(HeadError::Closed) => return,
        Err(HeadError::TimedOut) => {
            return answer_now(stream, &text(408, "Request Timeout", "request head too slow\n"))
        }
        Err(HeadError::TooLarge) => {
            return answer_now(
                stream,
                &text(431, "Request Header Fields Too Large", "request head too large\n"),
            )
        }
        Err(HeadError::Malformed) => return answer_now(stream, &text(400, "Bad Request", "bad request\n")),
    };
    let _ = write_by(&mut stream, &response, Instant::now() + LIMITS.write_deadline);
    let _ = stream.shutdown(Shutdown::Write);
}

enum HeadError {
    Closed,
    TimedOut,
    TooLarge,
    Malformed,
}

/// The method and path (query dropped) of a request head that arrives whole
/// by `deadline` in at most `limit` bytes.
fn read_head(stream: &mut TcpStream, deadline: Instant, limit: usize) -> Result<(String, String), HeadError> {
    let mut buf = vec![0; limit];
    let mut len = 0;
    loop {
        let left = deadline.saturating_duration_since(Instant::now());
        if left.is_zero() {
            return Err(HeadError::TimedOut);
        }
        stream.set_read_timeout(Some(left)).map_err(|_| HeadError::Closed)?;
        match stream.read(&mut buf[len..]) {
            Ok(0) => return Err(HeadError::Closed),
            Ok(n) => len += n,
            Err(e) if matches!(e.kind(), io::ErrorKind::WouldBlock | io::ErrorKind::TimedOut) => {
                return Err(HeadError::TimedOut)
            }
            Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
            Err(_) => return Err(HeadError::Closed),
        }
        let mut headers = [httparse::EMPTY_HEADER; 32];
        let mut request = httparse::Request::new(&mut headers);
        match request.parse(&buf[..len]) {
            Ok(httparse::Status::Complete(_)) => {
                let method = request.method.unwrap_or_default().to_string();
                let target = request.path.unwrap_or_default();
                let path = target.split('?').next().unwrap_or_default().to_string();
                return Ok((method, path));
            }
            Ok(httparse::Status::Partial) if len == limit => return Err(HeadError::TooLarge),
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

/// Write what the socket takes now, without waiting, and close: for answers
/// to clients that are not served (a small answer fits its empty buffer).
fn answer_now(stream: TcpStream, response: &[u8]) {
    if stream.set_nonblocking(true).is_ok() {
        let _ = (&stream).write(response);
        let _ = stream.shutdown(Shutdown::Write);
    }
}

fn write_by(stream: &mut TcpStream, mut bytes: &[u8], deadline: Instant) -> io::Result<()> {
    while !bytes.is_empty() {
        let left = deadline.saturating_duration_since(Instant::now());
        if left.is_zero() {
            return Err(io::ErrorKind::TimedOut.into());
        }
        stream.set_write_timeout(Some(left))?;
        match stream.write(bytes) {
            Ok(0) => return Err(io::ErrorKind::WriteZero.into()),
            Ok(n) => bytes = &bytes[n..],
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(e) => return Err(e),
        }
    }
    Ok(())
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

    fn shared() -> Arc<Shared> {
        Arc::new(Shared {
            metrics: Metrics::new("1.2.3"),
            health: Health::new(),
            stopping: AtomicBool::new(false),
            threads: AtomicUsize::new(0),
            slots: Mutex::new(Slots::default()),
        })
    }

    /// A connected pair: (our side, the client's side).
    fn pair(listener: &TcpListener) -> (TcpStream, TcpStream) {
        let client = TcpStream::connect(listener.local_addr().unwrap()).unwrap();
        client.set_read_timeout(Some(Duration::from_secs(20))).unwrap();
        (listener.accept().unwrap().0, client)
    }

    /// Fill every place with a connection, `reading` or answering.
    fn fill(shared: &Shared, listener: &TcpListener, reading: bool) -> Vec<TcpStream> {
        let mut slots = shared.slots();
        (0..LIMITS.connections)
            .map(|i| {
                let (ours, client) = pair(listener);
                let accepted = Instant::now() + Duration::from_secs(i as u64);
                slots.open.push(Slot { id: 1000 + i as u64, stream: ours, accepted, reading });
                client
            })
            .collect()
    }

    #[test]
    fn a_full_house_of_readers_makes_room_by_closing_the_oldest() {
        let (shared, listener) = (shared(), TcpListener::bind("127.0.0.1:0").unwrap());
        let mut clients = fill(&shared, &listener, true);
        let (ours, mut newcomer) = pair(&listener);
        admit(ours, &shared);
        // The oldest reader was closed; the others and the newcomer stay.
        assert_eq!(clients[0].read(&mut [0; 16]).unwrap(), 0);
        let ids: Vec<u64> = shared.slots().open.iter().map(|slot| slot.id).collect();
        assert_eq!(ids.len(), LIMITS.connections);
        assert!(!ids.contains(&1000) && ids.contains(&1001), "{ids:?}");
        newcomer.write_all(b"GET /healthz/live HTTP/1.1\r\n\r\n").unwrap();
        let mut answer = String::new();
        newcomer.read_to_string(&mut answer).unwrap();
        assert!(answer.starts_with("HTTP/1.1 200 OK\r\n") && answer.ends_with("\r\n\r\nok\n"), "{answer}");
        clients[1].set_nonblocking(true).unwrap();
        assert_eq!(clients[1].read(&mut [0; 16]).unwrap_err().kind(), io::ErrorKind::WouldBlock);
    }

    #[test]
    fn a_full_house_of_answers_turns_newcomers_away_at_once() {
        let (shared, listener) = (shared(), TcpListener::bind("127.0.0.1:0").unwrap());
        let _clients = fill(&shared, &listener, false);
        let (ours, mut newcomer) = pair(&listener);
        admit(ours, &shared);
        let mut answer = String::new();
        newcomer.read_to_string(&mut answer).unwrap();
        assert!(answer.starts_with("HTTP/1.1 503 Service Unavailable\r\n"), "{answer}");
        assert!(answer.ends_with("\r\n\r\nbusy: too many connections\n"), "{answer}");
        assert_eq!(shared.slots().open.len(), LIMITS.connections);
        assert_eq!(shared.threads.load(SeqCst), 0);
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
