//! One POST to the relay ingress, classified into an [`Outcome`].
//!
//! Shared by every command. Retrying is safe because every attempt carries the
//! same bytes and the ingress dedupes on (Message-ID, checksum of the bytes).

use std::error::Error as _;
use std::fs;
use std::io;
use std::time::{Duration, Instant};

use bytes::Bytes;
use reqwest::blocking::{Body, Client, Response};
use reqwest::header::{HeaderValue, CONTENT_TYPE, LOCATION};
use reqwest::tls::TlsInfo;
use reqwest::{redirect, StatusCode, Url};

use crate::config::Target;
use crate::message::Message;
use crate::outcome::{Cause, Outcome};

pub const USER: &str = "actionmailbox";
pub const USER_AGENT: &str = concat!("chatwoot-ingress/", env!("CARGO_PKG_VERSION"));
const CONNECT_TIMEOUT: Duration = Duration::from_secs(10);
const FIRST_BACKOFF: Duration = Duration::from_millis(250);
const MAX_BACKOFF: Duration = Duration::from_secs(2);
/// Enough to ride out a restart's refused connections or a proxy's 503s
/// (about 4 s of backoff), short enough that a mail server hears "defer"
/// quickly while Chatwoot is down: it retries later anyway.
const MAX_ATTEMPTS: u32 = 5;

pub struct Relay {
    client: Client,
    target: Target,
}

/// What one attempt produced, before it becomes an outcome.
pub enum Answer {
    Status(StatusCode, Option<String>),
    Failed(Outcome, Retry),
}

#[derive(Clone, Copy, PartialEq, Eq)]
pub enum Retry {
    Yes,
    No,
}

impl Relay {
    pub fn new(target: Target) -> Result<Relay, Outcome> {
        let mut builder = Client::builder()
            .user_agent(USER_AGENT)
            // A redirect would carry the password to another URL (and the
            // usual one, http -> https, means the URL should be fixed).
            .redirect(redirect::Policy::none())
            .connect_timeout(CONNECT_TIMEOUT.min(target.timeout))
            .timeout(target.timeout)
            .pool_max_idle_per_host(8)
            // Keeps the server's certificate on the response, for `check`.
            .tls_info(true);
        if let Some(path) = &target.ca_file {
            let pem = fs::read(path).map_err(|e| {
                Outcome::new(
                    Cause::Config,
                    format!("cannot read ca_file {}: {}", path.display(), crate::config::io_reason(&e)),
                )
            })?;
            let certs = reqwest::Certificate::from_pem_bundle(&pem).map_err(|e| {
                Outcome::new(Cause::Config, format!("ca_file {} is not PEM: {e}", path.display()))
            })?;
            for cert in certs {
                builder = builder.add_root_certificate(cert);
            }
        }
        let client = builder
            .build()
            .map_err(|e| Outcome::new(Cause::Config, format!("cannot set up HTTPS: {}", chain(&e))))?;
        Ok(Relay { client, target })
    }

    pub fn url(&self) -> &Url {
        &self.target.url
    }

    /// Deliver `message`, retrying connection failures and 502/503/504 with
    /// backoff until the deadline.
    pub fn deliver(&self, message: &Message) -> Outcome {
        let start = Instant::now();
        let deadline = start + self.target.timeout;
        let mut backoff = FIRST_BACKOFF;
        let mut attempts = 0;
        loop {
            attempts += 1;
            let remaining = deadline.saturating_duration_since(Instant::now());
            // One buffer, not a reader: reqwest streams a reader from a second
            // thread, whose failure can mask the real connection error.
            let answer = self.post(message.bytes.clone(), "message/rfc822", remaining);
            let (outcome, retry) = match answer {
                Answer::Status(status, location) => {
                    let retry = matches!(status.as_u16(), 502..=504);
                    (self.classify(status, location.as_deref()), if retry { Retry::Yes } else { Retry::No })
                }
                Answer::Failed(outcome, retry) => (outcome, retry),
            };
            let next = Instant::now() + backoff;
            if retry == Retry::No || attempts >= MAX_ATTEMPTS || next >= deadline {
                return with_attempts(outcome, attempts);
            }
            std::thread::sleep(backoff);
            backoff = (backoff * 2).min(MAX_BACKOFF);
        }
    }

    /// One POST, with at most `timeout` for all of it.
    pub fn post(&self, body: impl Into<Body>, content_type: &'static str, timeout: Duration) -> Answer {
        self.send(body, content_type, timeout).map_or_else(|failed| failed, answer)
    }

    /// The credentials with an empty text/plain body. The relay controller
    /// checks the ingress mode (404), then the password (401), then the
    /// content type (415): so 415 means all three are right, and nothing is
    /// stored. Also returns the server's certificate (DER) if TLS was used.
    pub fn probe(&self) -> (Answer, Option<Vec<u8>>) {
        match self.send(Bytes::new(), "text/plain", self.target.timeout) {
            Ok(response) => {
                let certificate = response
                    .extensions()
                    .get::<TlsInfo>()
                    .and_then(TlsInfo::peer_certificate)
                    .map(<[u8]>::to_vec);
                (answer(response), certificate)
            }
            Err(failed) => (failed, None),
        }
    }

    fn send(
        &self,
        body: impl Into<Body>,
        content_type: &'static str,
        timeout: Duration,
    ) -> Result<Response, Answer> {
        if timeout.is_zero() {
            return Err(Answer::Failed(self.timed_out(), Retry::No));
        }
        self.client
            .post(self.target.url.clone())
            .basic_auth(USER, Some(self.target.password.expose()))
            .header(CONTENT_TYPE, HeaderValue::from_static(content_type))
            .timeout(timeout)
            .body(body)
            .send()
            .map_err(|e| self.failed(&e))
    }

    /// Turn an HTTP status into the outcome a mail administrator can act on.
    pub fn classify(&self, status: StatusCode, location: Option<&str>) -> Outcome {
        let code = status.as_u16();
        let http = format!("HTTP {code}");
        let url = &self.target.url;
        match code {
            200..=299 => Outcome::new(Cause::Delivered, format!("delivered to {url} ({http})")),
            300..=399 => Outcome::new(
                Cause::Redirected,
                format!(
                    "the ingress redirected ({http}) to {}: set url to that address (redirects are not followed)",
                    location.unwrap_or("nowhere (no Location header)")
                ),
            ),
            401 | 403 => Outcome::new(
                Cause::PasswordRejected,
                format!(
                    "the ingress rejected the password ({http}) at {url}: it must equal RAILS_INBOUND_EMAIL_PASSWORD on the Chatwoot server"
                ),
            ),
            404 => Outcome::new(
                Cause::NoIngress,
                format!("no relay ingress at this URL ({http}): check the path and that Chatwoot runs with RAILS_INBOUND_EMAIL_SERVICE=relay ({url})"),
            ),
            413 => Outcome::new(Cause::TooLarge, format!("the ingress refused the message as too large ({http})")),
            415 => Outcome::new(
                Cause::MediaTypeRefused,
                format!("the ingress refused the content type ({http}): a proxy in front of Chatwoot may be rewriting requests"),
            ),
            408 | 429 | 502..=504 => Outcome::new(Cause::Busy, format!("the ingress is unavailable or busy ({http})")),
            500..=599 => Outcome::new(
                Cause::ServerError,
                format!("the ingress failed ({http}): it may have no RAILS_INBOUND_EMAIL_PASSWORD set, or its database or storage is failing; see Chatwoot's log"),
            ),
            _ => Outcome::new(Cause::UnexpectedStatus, format!("unexpected answer from the ingress ({http}) at {url}")),
        }
    }

    fn timed_out(&self) -> Outcome {
        Outcome::new(
            Cause::Timeout,
            format!("no answer from {} within {}s", self.host(), self.target.timeout.as_secs()),
        )
    }

    fn host(&self) -> String {
        let url = &self.target.url;
        format!("{}:{}", url.host_str().unwrap_or(""), url.port_or_known_default().unwrap_or(0))
    }

    /// Classify a transport failure by walking its cause chain. Only what a
    /// retry cannot fix within the deadline (DNS, TLS, the deadline itself)
    /// is not retried: resending the same bytes is always safe.
    fn failed(&self, e: &reqwest::Error) -> Answer {
        use io::ErrorKind::{ConnectionRefused, InvalidData, TimedOut};
        let (text, io_kind, host) = (chain(e), io_kind(e), self.host());
        let (cause, reason, retry) = if e.is_timeout() || io_kind == Some(TimedOut) {
            return Answer::Failed(self.timed_out(), Retry::No);
        } else if text.contains("dns error") || text.contains("failed to lookup address") {
            (Cause::Dns, format!("cannot resolve {host}: {text}"), Retry::No)
        } else if io_kind == Some(ConnectionRefused) {
            (Cause::Refused, format!("cannot connect to {host}: connection refused"), Retry::Yes)
        } else if e.is_connect()
            && (io_kind == Some(InvalidData)
                || ["tls", "certificate", "handshake"].iter().any(|w| text.contains(w)))
        {
            (Cause::Tls, format!("TLS with {host} failed: {text}"), Retry::No)
        } else if e.is_connect() {
            (Cause::Refused, format!("cannot connect to {host}: {text}"), Retry::Yes)
        } else {
            (Cause::ConnectionLost, format!("connection to {host} lost: {text}"), Retry::Yes)
        };
        Answer::Failed(Outcome::new(cause, reason), retry)
    }
}

fn answer(response: Response) -> Answer {
    let location =
        response.headers().get(LOCATION).map(|v| String::from_utf8_lossy(v.as_bytes()).into_owned());
    Answer::Status(response.status(), location)
}

fn with_attempts(outcome: Outcome, attempts: u32) -> Outcome {
    if attempts < 2 || outcome.cause == Cause::Delivered {
        return outcome;
    }
    Outcome::new(outcome.cause, format!("{} after {attempts} attempts", outcome.reason()))
}

/// The innermost io::Error kind in an error's cause chain.
fn io_kind(e: &reqwest::Error) -> Option<io::ErrorKind> {
    let mut source = e.source();
    let mut kind = None;
    while let Some(err) = source {
        if let Some(io) = err.downcast_ref::<io::Error>() {
            kind = Some(io.kind());
        }
        source = err.source();
    }
    kind
}

/// An error and its causes on one line, without reqwest's repetition of the URL.
pub fn chain(e: &(dyn std::error::Error + 'static)) -> String {
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
