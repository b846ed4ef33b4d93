//! One POST to the relay ingress, classified into an [`Outcome`].
//!
//! Shared by every command. Retrying is safe because every attempt carries the
//! same bytes and the ingress dedupes on (Message-ID, checksum of the bytes).
//!
//! Requests go through the one HTTP client ([`crate::http`]), which callers
//! never see: they block on [`Relay::deliver`] from plain threads. Async is
//! what lets us watch the request body leave (an answer that comes before
//! the whole message was handed over is not a delivery).

use std::convert::Infallible;
use std::path::Path;
use std::pin::Pin;
use std::sync::atomic::{AtomicU64, Ordering::SeqCst};
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::{Duration, Instant};

use bytes::Bytes;
use http_body::{Frame, SizeHint};
use reqwest::header::{HeaderValue, CONTENT_LENGTH, CONTENT_TYPE, LOCATION};
use reqwest::tls::TlsInfo;
use reqwest::Body;
use tokio::sync::oneshot;

use crate::backoff::Backoff;
use crate::config::Target;
use crate::http::{self, without_credentials, Kind, SetupError};
use crate::outcome::{Cause, Outcome};

pub const USER: &str = "actionmailbox";
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

/// What one POST produced.
#[derive(Debug)]
pub enum Answer {
    /// The ingress answered; its status and Location, if any.
    Status(u16, Option<String>),
    /// No usable answer.
    Failed { outcome: Outcome, retry: Retry },
}

/// Whether sending the same bytes again, within the deadline, could get
/// another answer.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Retry {
    /// A refused or lost connection, an answer before the whole message:
    /// resending is safe and may work.
    Worthwhile,
    /// DNS, TLS, the deadline itself: nothing a retry fixes in time.
    Futile,
}

/// The answer to `check`'s probe, and the server's certificate (DER) if TLS was used.
pub struct Probe {
    pub answer: Answer,
    pub certificate: Option<Vec<u8>>,
    pub took: Duration,
}

pub struct Relay {
    client: http::Client,
    timeout: Duration,
}

impl Relay {
    /// A client for the ingress. TLS (and the system's trust store) is set
    /// up only when `https` says some target needs it.
    pub fn new(timeout: Duration, ca_file: Option<&Path>, https: bool) -> Result<Relay, Outcome> {
        let options = http::Options {
            connect_timeout: CONNECT_TIMEOUT.min(timeout),
            idle_per_host: 8,
            tls: if https { http::Tls::Verified { ca_file } } else { http::Tls::Unused },
            // For `check`.
            keep_certificate: true,
        };
        let client = http::Client::new(&options).map_err(|e| match e {
            SetupError::CaFile(_) => Outcome::new(Cause::Config, e.to_string()),
            SetupError::Client(_) | SetupError::Runtime(_) => Outcome::new(Cause::Bug, e.to_string()),
        })?;
        Ok(Relay { client, timeout })
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
                    let retry = if outcome.cause == Cause::Busy { Retry::Worthwhile } else { Retry::Futile };
                    (outcome, retry)
                }
                Answer::Failed { outcome, retry } => (outcome, retry),
            };
            let pause = backoff.next_pause();
            if retry == Retry::Futile || attempts >= MAX_ATTEMPTS || Instant::now() + pause >= deadline {
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
        let timed_out = || Answer::Failed { outcome: self.timed_out(target), retry: Retry::Futile };
        if remaining.is_zero() {
            return (timed_out(), None);
        }
        let len = body.len();
        let (pieces, whole) = Pieces::new(body);
        let handed = pieces.handed.clone();
        let request = self
            .client
            .post(target.url.clone())
            .basic_auth(USER, Some(target.password.expose()))
            .header(CONTENT_TYPE, HeaderValue::from_static(content_type))
            .header(CONTENT_LENGTH, len)
            .body(Body::wrap(pieces));
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
        let (status, location, certificate) = match self.client.run(remaining, exchange) {
            None => return (timed_out(), None),
            Some(Err(e)) => return (self.failed(target, &e), None),
            Some(Ok(answer)) => answer,
        };
        // A 2xx counts only once the whole message was handed over: a
        // proxy may answer early and then close, unread bytes lost.
        if (200..=299).contains(&status) && self.client.run(remaining, whole) != Some(Ok(true)) {
            let handed = handed.load(SeqCst);
            let reason = format!(
                "{} answered HTTP {status} after {handed} of the message's {len} bytes, then closed: the message was not delivered",
                self.host(target)
            );
            let outcome = Outcome::new(Cause::ConnectionLost, reason);
            return (Answer::Failed { outcome, retry: Retry::Worthwhile }, None);
        }
        (Answer::Status(status, location), certificate)
    }

    fn timed_out(&self, target: &Target) -> Outcome {
        Outcome::new(
            Cause::Timeout,
            format!("no answer from {} within {}s", self.host(target), self.timeout.as_secs()),
        )
    }

    /// host:port, and the proxy the request went through, if any.
    fn host(&self, target: &Target) -> String {
        let host = http::host(&target.url);
        match self.client.proxy_for(&target.url) {
            Some(proxy) => format!("{host} (through proxy {})", without_credentials(proxy)),
            None => host,
        }
    }

    /// A request that got no answer. Only what a retry cannot fix within
    /// the deadline (DNS, TLS, the deadline itself) is not retried:
    /// resending the same bytes is always safe.
    fn failed(&self, target: &Target, e: &reqwest::Error) -> Answer {
        let failure = self.client.failure(&target.url, e);
        let (text, host) = (failure.detail, self.host(target));
        let (cause, reason, retry) = match failure.kind {
            Kind::Timeout => return Answer::Failed { outcome: self.timed_out(target), retry: Retry::Futile },
            Kind::Dns => (Cause::Dns, text, Retry::Futile),
            Kind::Tls => (Cause::Tls, format!("TLS with {host} failed: {text}"), Retry::Futile),
            Kind::HandshakeEnded => (
                Cause::Tls,
                format!("TLS with {host} failed: the server ended the handshake ({text})"),
                Retry::Futile,
            ),
            Kind::Refused => (Cause::Refused, format!("cannot connect to {host}: {text}"), Retry::Worthwhile),
            Kind::Lost => {
                (Cause::ConnectionLost, format!("connection to {host} lost: {text}"), Retry::Worthwhile)
            }
        };
        Answer::Failed { outcome: Outcome::new(cause, reason), retry }
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

/// A request body that records how much of it was handed to the connection.
struct Pieces {
    bytes: Bytes,
    at: usize,
    handed: Arc<AtomicU64>,
    /// Told true when the last piece is handed over, false if the
    /// connection lets go of the body before that.
    whole: Option<oneshot::Sender<bool>>,
}

impl Pieces {
    /// The body, and what will say whether all of it was handed over.
    fn new(bytes: Bytes) -> (Pieces, oneshot::Receiver<bool>) {
        let (tx, rx) = oneshot::channel();
        let mut pieces = Pieces { bytes, at: 0, handed: Arc::default(), whole: Some(tx) };
        if pieces.bytes.is_empty() {
            pieces.handed_all(true);
        }
        (pieces, rx)
    }

    fn handed_all(&mut self, all: bool) {
        if let Some(whole) = self.whole.take() {
            let _ = whole.send(all);
        }
    }
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
        self.handed.store(end as u64, SeqCst);
        if end == self.bytes.len() {
            self.handed_all(true);
        }
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
        self.handed_all(false);
    }
}
