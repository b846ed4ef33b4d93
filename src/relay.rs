//! One POST to the relay ingress, classified into an [`Outcome`].
//!
//! Shared by every command. Retrying is safe because every attempt carries the
//! same bytes and the ingress dedupes on (Message-ID, checksum of the bytes).
//!
//! The HTTP client is reqwest's async one on a small runtime of our own,
//! which callers never see: they block on [`Relay::deliver`] from plain
//! threads. Async is what lets us watch the request body leave (an answer
//! that comes before the whole message was handed over is not a delivery)
//! and resolve names ourselves (a DNS failure is known by its type).

use std::convert::Infallible;
use std::error::Error as StdError;
use std::io;
use std::net::ToSocketAddrs;
use std::path::Path;
use std::pin::Pin;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering::SeqCst};
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::{Duration, Instant};

use bytes::Bytes;
use http_body::{Frame, SizeHint};
use reqwest::header::{HeaderValue, CONTENT_LENGTH, CONTENT_TYPE, LOCATION};
use reqwest::tls::TlsInfo;
use reqwest::{redirect, Body, Client, Proxy, Url};

use crate::backoff::Backoff;
use crate::config::Target;
use crate::outcome::{Cause, Outcome};
use crate::sys::{io_reason, is_loopback};
use crate::tls;

pub const USER: &str = "actionmailbox";
pub const USER_AGENT: &str = concat!("chatwoot-ingress/", env!("CARGO_PKG_VERSION"));
const CONNECT_TIMEOUT: Duration = Duration::from_secs(10);
const FIRST_BACKOFF: Duration = Duration::from_millis(250);
const MAX_BACKOFF: Duration = Duration::from_secs(2);
/// Enough to ride out a restart's refused connections or a proxy's 503s
/// (about 4 s of backoff), short enough that a mail server hears "defer"
/// quickly while Chatwoot is down: it retries later anyway.
const MAX_ATTEMPTS: u32 = 5;
/// The body is handed to the connection in pieces of this size, so that
/// how much of it left before an answer came is known to within a piece.
const PIECE: usize = 64 * 1024;
/// An answer's body is read (for the connection's reuse) up to this size.
const MAX_ANSWER: usize = 64 * 1024;

/// A host name that does not resolve: told apart from every other failure
/// by its type, whatever words the resolver uses.
#[derive(Debug, thiserror::Error)]
#[error("cannot resolve {host}: {reason}")]
pub struct DnsError {
    host: String,
    reason: String,
}

/// What one POST produced.
#[derive(Debug)]
pub enum Answer {
    /// The ingress answered; its status and Location, if any.
    Status(u16, Option<String>),
    /// No usable answer: the outcome, and whether resending could help.
    Failed(Outcome, bool),
}

/// The answer to `check`'s probe, and the server's certificate (DER) if TLS was used.
pub struct Probe {
    pub answer: Answer,
    pub certificate: Option<Vec<u8>>,
    pub took: Duration,
}

pub struct Relay {
    runtime: tokio::runtime::Runtime,
    client: Client,
    timeout: Duration,
    proxies: Arc<Proxies>,
}

impl Relay {
    /// A client for the ingress. TLS (and the system's trust store) is set
    /// up only when `https` says some target needs it.
    pub fn new(timeout: Duration, ca_file: Option<&Path>, https: bool) -> Result<Relay, Outcome> {
        let proxies = Arc::new(Proxies::from_env());
        let policy = proxies.clone();
        let mut builder = Client::builder()
            .user_agent(USER_AGENT)
            // A redirect would carry the password to another URL (and the
            // usual one, http -> https, means the URL should be fixed).
            .redirect(redirect::Policy::none())
            .connect_timeout(CONNECT_TIMEOUT.min(timeout))
            .pool_max_idle_per_host(8)
            .http1_only()
            .dns_resolver(Arc::new(SystemResolver))
            .no_proxy()
            .proxy(Proxy::custom(move |url| policy.for_url(url).cloned()))
            // Keeps the server's certificate on the response, for `check`.
            .tls_info(true);
        if https {
            let config =
                tls::client_config(ca_file).map_err(|e| Outcome::new(Cause::Config, e.to_string()))?;
            builder = builder.use_preconfigured_tls(config);
        }
        let client = builder
            .build()
            .map_err(|e| Outcome::new(Cause::Bug, format!("cannot set up the HTTP client: {}", chain(&e))))?;
        let runtime = tokio::runtime::Builder::new_current_thread().enable_all().build().map_err(|e| {
            Outcome::new(Cause::Bug, format!("cannot start the HTTP client: {}", io_reason(&e)))
        })?;
        Ok(Relay { runtime, client, timeout, proxies })
    }

    pub fn timeout(&self) -> Duration {
        self.timeout
    }

    /// Deliver `message` to `target`, retrying connection failures and
    /// 408/429/502/503/504 with backoff until the deadline.
    pub fn deliver(&self, target: &Target, message: &Bytes) -> Outcome {
        let deadline = Instant::now() + self.timeout;
        let mut backoff = Backoff::new(FIRST_BACKOFF, MAX_BACKOFF);
        let mut attempts = 0;
        loop {
            attempts += 1;
            let (answer, _) = self.post(target, message.clone(), "message/rfc822", deadline);
            let (outcome, retry) = match answer {
                Answer::Status(status, location) => {
                    let outcome = explain(target, status, location.as_deref());
                    let retry = outcome.cause == Cause::Busy;
                    (outcome, retry)
                }
                Answer::Failed(outcome, retry) => (outcome, retry),
            };
            let pause = backoff.next_pause();
            if !retry || attempts >= MAX_ATTEMPTS || Instant::now() + pause >= deadline {
                return with_attempts(outcome, attempts);
            }
            std::thread::sleep(pause);
        }
    }

    /// One POST of `body` with the credentials, for `check`: not retried.
    pub fn probe(&self, target: &Target, body: Bytes) -> Probe {
        let started = Instant::now();
        let (answer, certificate) = self.post(target, body, "text/plain", started + self.timeout);
        Probe { answer, certificate, took: started.elapsed() }
    }

    /// One POST, all of it (connecting, sending, the answer) before `deadline`.
    fn post(
        &self,
        target: &Target,
        body: Bytes,
        content_type: &'static str,
        deadline: Instant,
    ) -> (Answer, Option<Vec<u8>>) {
        let remaining = deadline.saturating_duration_since(Instant::now());
        if remaining.is_zero() {
            return (Answer::Failed(self.timed_out(target), false), None);
        }
        let len = body.len();
        let sent = Arc::new(Sent::default());
        let request = self
            .client
            .post(target.url.clone())
            .basic_auth(USER, Some(target.password.expose()))
            .header(CONTENT_TYPE, HeaderValue::from_static(content_type))
            .header(CONTENT_LENGTH, len)
            .body(Body::wrap(Pieces { bytes: body, at: 0, sent: sent.clone() }));
        let exchange = async {
            let mut response = request.send().await?;
            let status = response.status().as_u16();
            let location =
                response.headers().get(LOCATION).map(|v| String::from_utf8_lossy(v.as_bytes()).into_owned());
            let certificate = response
                .extensions()
                .get::<TlsInfo>()
                .and_then(TlsInfo::peer_certificate)
                .map(<[u8]>::to_vec);
            // Read the (small) answer so the connection can be reused.
            let mut read = 0;
            while let Some(chunk) = response.chunk().await? {
                read += chunk.len();
                if read > MAX_ANSWER {
                    break;
                }
            }
            Ok::<_, reqwest::Error>((status, location, certificate))
        };
        let finished = self.runtime.block_on(async {
            let exchanged = tokio::time::timeout(remaining, exchange).await;
            // A 2xx counts only once the whole message was handed over:
            // a proxy may answer early and then close, unread bytes lost.
            if let Ok(Ok((200..=299, ..))) = exchanged {
                let whole = tokio::time::timeout(remaining, sent.whole(len)).await;
                return (exchanged, whole.unwrap_or(false));
            }
            (exchanged, true)
        });
        match finished {
            (Err(_elapsed), _) => (Answer::Failed(self.timed_out(target), false), None),
            (Ok(Err(e)), _) => (self.failed(target, &e), None),
            (Ok(Ok((status, ..))), false) => {
                let handed = sent.handed.load(SeqCst);
                let reason = format!(
                    "{} answered HTTP {status} after {handed} of the message's {len} bytes, then closed: the message was not delivered",
                    self.host(target)
                );
                (Answer::Failed(Outcome::new(Cause::ConnectionLost, reason), true), None)
            }
            (Ok(Ok((status, location, certificate))), true) => {
                (Answer::Status(status, location), certificate)
            }
        }
    }

    fn timed_out(&self, target: &Target) -> Outcome {
        Outcome::new(
            Cause::Timeout,
            format!("no answer from {} within {}s", self.host(target), self.timeout.as_secs()),
        )
    }

    /// host:port, and the proxy the request went through, if any.
    fn host(&self, target: &Target) -> String {
        let url = &target.url;
        let host = format!("{}:{}", url.host_str().unwrap_or(""), url.port_or_known_default().unwrap_or(0));
        match self.proxies.for_url(url) {
            Some(proxy) => format!("{host} (through proxy {})", without_credentials(proxy)),
            None => host,
        }
    }

    /// Classify a transport failure by the types in its cause chain. Only
    /// what a retry cannot fix within the deadline (DNS, TLS, the deadline
    /// itself) is not retried: resending the same bytes is always safe.
    fn failed(&self, target: &Target, e: &reqwest::Error) -> Answer {
        use io::ErrorKind::*;
        let (text, host) = (chain(e), self.host(target));
        let mut io_kind = None;
        let mut tls_failed = false;
        let mut dns = None;
        let mut source: Option<&(dyn StdError + 'static)> = Some(e);
        while let Some(err) = source {
            if let Some(failure) = err.downcast_ref::<DnsError>() {
                dns = Some(failure.to_string());
            } else if err.is::<rustls::Error>() {
                tls_failed = true;
            } else if let Some(io) = err.downcast_ref::<io::Error>() {
                tls_failed |= io.get_ref().is_some_and(|inner| inner.is::<rustls::Error>());
                io_kind = Some(innermost_kind(io));
            }
            source = err.source();
        }
        let (cause, reason, retry) = if e.is_timeout() || io_kind == Some(TimedOut) {
            return Answer::Failed(self.timed_out(target), false);
        } else if let Some(dns) = dns {
            (Cause::Dns, dns, false)
        } else if tls_failed {
            (Cause::Tls, format!("TLS with {host} failed: {text}"), false)
        } else if e.is_connect()
            && target.url.scheme() == "https"
            && self.proxies.for_url(&target.url).is_none()
            && matches!(io_kind, Some(UnexpectedEof | ConnectionReset | ConnectionAborted | InvalidData))
        {
            // The connection was made, then dropped during the handshake:
            // what a server that does not speak TLS on this port does.
            // Through a proxy, it is the proxy that dropped it.
            let reason = format!("TLS with {host} failed: the server ended the handshake ({text})");
            (Cause::Tls, reason, false)
        } else if matches!(
            io_kind,
            Some(ConnectionRefused | HostUnreachable | NetworkUnreachable | AddrNotAvailable)
        ) || e.is_connect()
        {
            (Cause::Refused, format!("cannot connect to {host}: {text}"), true)
        } else {
            (Cause::ConnectionLost, format!("connection to {host} lost: {text}"), true)
        };
        Answer::Failed(Outcome::new(cause, reason), retry)
    }
}

/// The kind of an io::Error, looking through io::Errors wrapped in it
/// (hyper-rustls wraps the socket's error in one of kind Other).
fn innermost_kind(e: &io::Error) -> io::ErrorKind {
    match e.get_ref().and_then(|inner| inner.downcast_ref::<io::Error>()) {
        Some(inner) => innermost_kind(inner),
        None => e.kind(),
    }
}

/// What an HTTP answer from the ingress means, through [`Cause::of_http`].
pub fn explain(target: &Target, status: u16, location: Option<&str>) -> Outcome {
    let url = &target.url;
    let cause = Cause::of_http(status);
    let reason = match cause {
        Cause::Delivered => format!("delivered to {url} (HTTP {status})"),
        Cause::Redirected => format!(
            "the ingress redirected (HTTP {status}) to {}",
            location.unwrap_or("nowhere (no Location header)")
        ),
        Cause::PasswordRejected => format!("the ingress rejected the password (HTTP {status}) at {url}"),
        Cause::NoIngress => format!("no relay ingress at {url} (HTTP {status})"),
        Cause::ProxyLimit => format!("the message was refused as too large (HTTP {status}) by {url}"),
        Cause::MediaTypeRefused => format!("the ingress refused the content type (HTTP {status}) at {url}"),
        Cause::Busy => format!("the ingress is unavailable or busy (HTTP {status}) at {url}"),
        Cause::ServerError => format!("the ingress failed (HTTP {status}) at {url}"),
        _ => format!("unexpected answer from the ingress (HTTP {status}) at {url}"),
    };
    match (cause, location) {
        (Cause::Redirected, Some(location)) => {
            Outcome::new(cause, reason).with_fix(format!("set url to {location}"))
        }
        _ => Outcome::new(cause, reason),
    }
}

fn with_attempts(outcome: Outcome, attempts: u32) -> Outcome {
    if attempts < 2 || outcome.cause == Cause::Delivered {
        return outcome;
    }
    outcome.context(format!("after {attempts} attempts"))
}

/// How much of a request body the connection has taken.
#[derive(Default)]
struct Sent {
    handed: AtomicU64,
    dropped: AtomicBool,
}

impl Sent {
    /// Wait until all `len` bytes were handed over (true) or the
    /// connection let go of the body before that (false).
    async fn whole(&self, len: usize) -> bool {
        loop {
            if self.handed.load(SeqCst) == len as u64 {
                return true;
            }
            if self.dropped.load(SeqCst) {
                return false;
            }
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
    }
}

/// A request body that records how much of it was handed to the connection.
struct Pieces {
    bytes: Bytes,
    at: usize,
    sent: Arc<Sent>,
}

impl http_body::Body for Pieces {
    type Data = Bytes;
    type Error = Infallible;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        _: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, Infallible>>> {
        let at = self.at;
        if at == self.bytes.len() {
            return Poll::Ready(None);
        }
        let end = (at + PIECE).min(self.bytes.len());
        let piece = self.bytes.slice(at..end);
        self.at = end;
        self.sent.handed.store(end as u64, SeqCst);
        Poll::Ready(Some(Ok(Frame::data(piece))))
    }

    fn is_end_stream(&self) -> bool {
        self.at == self.bytes.len()
    }

    fn size_hint(&self) -> SizeHint {
        SizeHint::with_exact((self.bytes.len() - self.at) as u64)
    }
}

impl Drop for Pieces {
    fn drop(&mut self) {
        self.sent.dropped.store(true, SeqCst);
    }
}

/// getaddrinfo, off the runtime's thread, failing with a [`DnsError`].
struct SystemResolver;

impl reqwest::dns::Resolve for SystemResolver {
    fn resolve(&self, name: reqwest::dns::Name) -> reqwest::dns::Resolving {
        let host = name.as_str().to_string();
        Box::pin(async move {
            let lookup = host.clone();
            let found = tokio::task::spawn_blocking(move || (lookup.as_str(), 0).to_socket_addrs())
                .await
                .map_err(|e| Box::new(e) as Box<dyn StdError + Send + Sync>)?;
            let addresses: Vec<_> = match found {
                Ok(addresses) => addresses.collect(),
                Err(e) => return Err(Box::new(DnsError { host, reason: io_reason(&e) }) as _),
            };
            if addresses.is_empty() {
                return Err(Box::new(DnsError { host, reason: "no address".into() }) as _);
            }
            Ok(Box::new(addresses.into_iter()) as reqwest::dns::Addrs)
        })
    }
}

/// Which proxy from the environment a URL goes through. Only https:// is
/// ever proxied: through a proxy, a cleartext http:// request would hand
/// the password to a third party. Loopback is never proxied.
pub struct Proxies {
    https: Option<Url>,
    no_proxy: Vec<String>,
}

impl Proxies {
    pub fn from_env() -> Proxies {
        let var = |names: &[&str]| {
            names.iter().find_map(|n| std::env::var(n).ok().filter(|v| !v.trim().is_empty()))
        };
        let https = var(&["HTTPS_PROXY", "https_proxy", "ALL_PROXY", "all_proxy"]).and_then(|text| {
            let text = if text.contains("://") { text } else { format!("http://{text}") };
            Url::parse(text.trim()).ok()
        });
        let no_proxy = var(&["NO_PROXY", "no_proxy"])
            .unwrap_or_default()
            .split(',')
            .map(|entry| entry.trim().trim_start_matches('.').to_ascii_lowercase())
            .filter(|entry| !entry.is_empty())
            .collect();
        Proxies { https, no_proxy }
    }

    pub fn for_url(&self, url: &Url) -> Option<&Url> {
        let proxy = self.https.as_ref().filter(|_| url.scheme() == "https")?;
        let host = url.host_str()?.trim_start_matches('[').trim_end_matches(']').to_ascii_lowercase();
        let excluded = is_loopback(&host)
            || self
                .no_proxy
                .iter()
                .any(|entry| entry == "*" || host == *entry || host.ends_with(&format!(".{entry}")));
        (!excluded).then_some(proxy)
    }
}

/// A proxy URL fit to print: credentials in it are never shown.
pub fn without_credentials(url: &Url) -> String {
    let mut url = url.clone();
    let _ = url.set_username("");
    let _ = url.set_password(None);
    url.to_string()
}

/// An error and its causes on one line, without reqwest's repetition of the URL.
pub fn chain(e: &(dyn StdError + 'static)) -> String {
    let mut parts: Vec<String> = Vec::new();
    let mut current = Some(e);
    while let Some(err) = current {
        let text = err.to_string();
        let text = text.split(" for url (").next().unwrap_or(&text).to_string();
        if !parts.iter().any(|p| p.contains(&text)) {
            parts.push(text);
        }
        current = err.source();
    }
    parts.join(": ")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn proxies_only_for_https_beyond_loopback_and_no_proxy() {
        let proxies = Proxies {
            https: Some(Url::parse("http://user:pw@proxy.example:3128").unwrap()),
            no_proxy: vec!["internal.example".into()],
        };
        let url = |s: &str| Url::parse(s).unwrap();
        assert!(proxies.for_url(&url("https://chatwoot.example.com/")).is_some());
        assert!(proxies.for_url(&url("http://chatwoot.example.com/")).is_none(), "cleartext never proxied");
        assert!(proxies.for_url(&url("https://127.0.0.1:3000/")).is_none());
        assert!(proxies.for_url(&url("https://[::1]/")).is_none());
        assert!(proxies.for_url(&url("https://localhost/")).is_none());
        assert!(proxies.for_url(&url("https://chat.internal.example/")).is_none());
        assert_eq!(without_credentials(proxies.https.as_ref().unwrap()), "http://proxy.example:3128/");
    }
}
