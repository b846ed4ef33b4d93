//! The asking side of the health endpoints: one plain HTTP/1.1 GET with a
//! deadline, for a container's HEALTHCHECK that has no shell and no curl.

use std::io::{self, Read, Write};
use std::net::{IpAddr, SocketAddr, TcpStream};
use std::time::{Duration, Instant};

use url::Url;

/// Where `watch` serves the metrics unless told otherwise.
pub const DEFAULT_LISTEN: SocketAddr = SocketAddr::new(IpAddr::V4(std::net::Ipv4Addr::LOCALHOST), 9898);

/// The most of an answer that is read: the health endpoints say a line.
const MAX_ANSWER: usize = 64 * 1024;

/// The URL of `/healthz/live` on a server listening on `listen`: a server
/// listening on every address (0.0.0.0, [::]) is asked on loopback.
pub fn live_url(listen: SocketAddr) -> Url {
    let ip = match listen.ip() {
        IpAddr::V4(ip) if ip.is_unspecified() => IpAddr::V4(std::net::Ipv4Addr::LOCALHOST),
        IpAddr::V6(ip) if ip.is_unspecified() => IpAddr::V6(std::net::Ipv6Addr::LOCALHOST),
        ip => ip,
    };
    let url = format!("http://{}/healthz/live", SocketAddr::new(ip, listen.port()));
    Url::parse(&url).expect("a socket address makes a valid URL")
}

/// GET `url` within `within`: Ok with a line to print when it answered 200,
/// Err with the line that says why not otherwise.
pub fn check(url: &Url, within: Duration) -> Result<String, String> {
    let (status, body) =
        get(url, Instant::now() + within).map_err(|why| format!("unhealthy: {url}: {why}"))?;
    let said = first_line(&body);
    if status == 200 {
        Ok(format!("healthy: {url} answered 200 {said}"))
    } else {
        Err(format!("unhealthy: {url} answered {status}: {said}"))
    }
}

fn get(url: &Url, deadline: Instant) -> Result<(u16, Vec<u8>), String> {
    if url.scheme() != "http" {
        return Err("only http:// is supported: the health endpoints are plain HTTP".into());
    }
    let host = url.host_str().ok_or("the URL has no host")?;
    let addrs =
        url.socket_addrs(|| Some(80)).map_err(|e| format!("cannot resolve {host}: {}", reason(&e)))?;
    let mut stream = connect(&addrs, deadline)?;
    let path = match url.query() {
        Some(query) => format!("{}?{query}", url.path()),
        None => url.path().to_string(),
    };
    let authority = match url.port() {
        Some(port) => format!("{host}:{port}"),
        None => host.to_string(),
    };
    let request = format!(
        "GET {path} HTTP/1.1\r\nHost: {authority}\r\nUser-Agent: chatwoot-ingress/{} health\r\nConnection: close\r\n\r\n",
        env!("CARGO_PKG_VERSION")
    );
    stream.set_write_timeout(Some(left(deadline)?)).map_err(|e| reason(&e))?;
    stream.write_all(request.as_bytes()).map_err(|e| format!("cannot send the request: {}", reason(&e)))?;
    read_answer(&mut stream, deadline)
}

fn connect(addrs: &[SocketAddr], deadline: Instant) -> Result<TcpStream, String> {
    let mut failure = "no address".to_string();
    for addr in addrs {
        match TcpStream::connect_timeout(addr, left(deadline)?) {
            Ok(stream) => return Ok(stream),
            Err(e) => failure = format!("cannot connect to {addr}: {}", reason(&e)),
        }
    }
    Err(failure)
}

/// The status and body of an answer, read until the server closes, the
/// body reaches its Content-Length, or MAX_ANSWER bytes came.
fn read_answer(stream: &mut TcpStream, deadline: Instant) -> Result<(u16, Vec<u8>), String> {
    let mut buf = Vec::new();
    let mut chunk = [0; 4096];
    loop {
        stream.set_read_timeout(Some(left(deadline)?)).map_err(|e| reason(&e))?;
        let n = match stream.read(&mut chunk) {
            Ok(n) => n,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
            Err(e) if matches!(e.kind(), io::ErrorKind::WouldBlock | io::ErrorKind::TimedOut) => {
                return Err("no answer in time".into())
            }
            Err(e) => return Err(format!("the connection failed: {}", reason(&e))),
        };
        buf.extend_from_slice(&chunk[..n]);
        let full = n == 0 || buf.len() >= MAX_ANSWER;
        let mut headers = [httparse::EMPTY_HEADER; 32];
        let mut response = httparse::Response::new(&mut headers);
        match response.parse(&buf) {
            Ok(httparse::Status::Complete(head)) => {
                let status = response.code.unwrap_or_default();
                let length = response
                    .headers
                    .iter()
                    .find(|h| h.name.eq_ignore_ascii_case("content-length"))
                    .and_then(|h| std::str::from_utf8(h.value).ok()?.trim().parse::<usize>().ok());
                let body = &buf[head..];
                match length {
                    Some(length) if body.len() >= length => return Ok((status, body[..length].to_vec())),
                    _ if full => return Ok((status, body.to_vec())),
                    _ => {}
                }
            }
            Ok(httparse::Status::Partial) if n == 0 => {
                return Err("the server closed before answering".into())
            }
            Ok(httparse::Status::Partial) if full => return Err("not an HTTP answer".into()),
            Ok(httparse::Status::Partial) => {}
            Err(_) => return Err("not an HTTP answer".into()),
        }
    }
}

fn left(deadline: Instant) -> Result<Duration, String> {
    let left = deadline.saturating_duration_since(Instant::now());
    if left.is_zero() {
        return Err("no answer in time".into());
    }
    Ok(left)
}

fn reason(e: &io::Error) -> String {
    crate::sys::io_reason(e)
}

/// The body's first line, as printable text of a sane length: whatever
/// answers on that port, our output stays one line.
fn first_line(body: &[u8]) -> String {
    let text = String::from_utf8_lossy(body);
    let line = text.lines().next().unwrap_or_default();
    let line: String = line.chars().filter(|c| !c.is_control()).take(300).collect();
    line.trim().to_string()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_server_on_every_address_is_asked_on_loopback() {
        assert_eq!(live_url(DEFAULT_LISTEN).as_str(), "http://127.0.0.1:9898/healthz/live");
        assert_eq!(live_url("0.0.0.0:9000".parse().unwrap()).as_str(), "http://127.0.0.1:9000/healthz/live");
        assert_eq!(live_url("[::]:9000".parse().unwrap()).as_str(), "http://[::1]:9000/healthz/live");
        assert_eq!(live_url("10.1.2.3:9000".parse().unwrap()).as_str(), "http://10.1.2.3:9000/healthz/live");
    }

    #[test]
    fn what_a_stranger_answers_stays_one_printable_line() {
        assert_eq!(first_line(b"stuck: a/INBOX\x1b[2J\r\nsecond line"), "stuck: a/INBOX[2J");
        assert_eq!(first_line(b""), "");
        assert_eq!(first_line(&[b'x'; 1000]).len(), 300);
        assert_eq!(first_line(b"\xff\xfeok"), "\u{fffd}\u{fffd}ok");
    }

    #[test]
    fn only_plain_http_is_asked() {
        let url = Url::parse("https://127.0.0.1:9898/healthz/live").unwrap();
        let error = check(&url, Duration::from_secs(1)).unwrap_err();
        assert!(error.ends_with("only http:// is supported: the health endpoints are plain HTTP"), "{error}");
    }
}
