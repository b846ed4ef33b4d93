//! What went wrong with a Graph call, told by the HTTP status and Graph's
//! `error.code` (concepts/errors.md: "your code should not branch based on
//! message values"), never by the words of a message.

use std::fmt;
use std::time::{Duration, SystemTime};

use serde::Deserialize;

use crate::http::Kind;
use crate::secret;

/// Longest wait a `Retry-After` is taken at: a server asking for more is
/// asked again after this.
pub const RETRY_AFTER_MAX: Duration = Duration::from_secs(3600);
/// The most of a server's error message kept.
const MESSAGE_MAX: usize = 300;

/// Why a Graph call did not do what it was asked.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum Error {
    /// 429 (or Outlook's `ApplicationThrottled` under another status): no
    /// request to this mailbox before `retry_after` (when the server said).
    #[error("Graph is throttling requests to this mailbox{}{}", wait(.retry_after), Detail::tail(.detail))]
    Throttled { retry_after: Option<Duration>, detail: Detail },
    /// 401: the token was refused (expired or revoked): get a new one.
    #[error("Graph refused the access token{}", Detail::tail(.detail))]
    Unauthorized { detail: Detail },
    /// 403: the app lacks the permission, or the mailbox is outside its
    /// scope (`ErrorAccessDenied`).
    #[error("Graph denied access{}", Detail::tail(.detail))]
    Forbidden { detail: Detail },
    /// 404: no such user, folder or message (`ErrorInvalidUser`,
    /// `ErrorItemNotFound`, …).
    #[error("Graph found no such item{}", Detail::tail(.detail))]
    NotFound { detail: Detail },
    /// 409: e.g. `ErrorFolderExists`.
    #[error("Graph refused it as a conflict{}", Detail::tail(.detail))]
    Conflict { detail: Detail },
    /// The delta state is gone (410, or `SyncStateNotFound`,
    /// `SyncStateInvalid`, `ResyncRequired`): a full round must begin
    /// (concepts/delta-query-overview.md, "Synchronization reset").
    #[error("Graph no longer knows the delta state{}", Detail::tail(.detail))]
    SyncStateInvalid { detail: Detail },
    /// Any other 4xx: a request Graph will not take as it is.
    #[error("Graph refused the request{}", Detail::tail(.detail))]
    Refused { detail: Detail },
    /// 5xx: Graph's or Exchange's trouble; `retry_after` when it said.
    #[error("Graph failed{}{}", wait(.retry_after), Detail::tail(.detail))]
    Server { retry_after: Option<Duration>, detail: Detail },
    /// No answer, or not a whole one (a reset in a body is `Lost`): the
    /// HTTP client's classification.
    #[error("no answer from Graph: {detail}")]
    Transport { kind: Kind, detail: String },
    /// An answer we cannot use: not the JSON we asked for, a link to
    /// another server, an endless round.
    #[error("Graph's answer cannot be used: {0}")]
    BadAnswer(String),
    /// A message's MIME content is larger than the caller's limit; it was
    /// not read whole.
    #[error("the message is larger than {limit} bytes")]
    TooLarge { limit: u64 },
}

impl Error {
    /// How long the server asked us to wait before the next request.
    pub fn retry_after(&self) -> Option<Duration> {
        match self {
            Error::Throttled { retry_after, .. } | Error::Server { retry_after, .. } => *retry_after,
            _ => None,
        }
    }

    /// The status and Graph's error code, when Graph answered.
    pub fn detail(&self) -> Option<&Detail> {
        match self {
            Error::Throttled { detail, .. }
            | Error::Unauthorized { detail }
            | Error::Forbidden { detail }
            | Error::NotFound { detail }
            | Error::Conflict { detail }
            | Error::SyncStateInvalid { detail }
            | Error::Refused { detail }
            | Error::Server { detail, .. } => Some(detail),
            _ => None,
        }
    }

    /// Whether Graph's error code is `code` (codes are compared in any
    /// case: Outlook sends `SyncStateNotFound`, the doc lists `syncStateNotFound`).
    pub fn has_code(&self, code: &str) -> bool {
        self.detail().and_then(|d| d.code.as_deref()).is_some_and(|c| c.eq_ignore_ascii_case(code))
    }
}

fn wait(retry_after: &Option<Duration>) -> String {
    retry_after.map(|d| format!(" (retry after {} s)", d.as_secs())).unwrap_or_default()
}

/// What Graph said about an error: its status, `error.code` and
/// `error.message`; never its request ids, dates or inner errors, and
/// nothing shaped like a secret.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Detail {
    pub status: u16,
    pub code: Option<String>,
    pub message: Option<String>,
}

impl Detail {
    /// ": 403 ErrorAccessDenied: Access is denied." for a log line.
    fn tail(&self) -> String {
        let mut out = format!(": {}", self.status);
        if let Some(code) = &self.code {
            out.push(' ');
            out.push_str(code);
        }
        if let Some(message) = &self.message {
            out.push_str(": ");
            out.push_str(message);
        }
        out
    }
}

impl fmt::Display for Detail {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.tail().trim_start_matches(": "))
    }
}

#[derive(Deserialize)]
struct Body {
    error: Option<Inner>,
}

#[derive(Deserialize)]
struct Inner {
    code: Option<String>,
    message: Option<String>,
}

/// The error of a non-2xx answer. `token`: the bearer token the request
/// carried, kept out of the detail in every spelling.
pub(crate) fn classify(status: u16, retry_after: Option<&str>, body: &[u8], token: &str) -> Error {
    let inner = serde_json::from_slice::<Body>(body).ok().and_then(|b| b.error);
    let (code, message) = inner.map(|i| (i.code, i.message)).unwrap_or_default();
    let detail = Detail {
        status,
        code: code.filter(|c| is_code(c)),
        message: message.map(|m| sanitize(&m, token)).filter(|m| !m.is_empty()),
    };
    let retry_after = retry_after.and_then(|v| parse_retry_after(v, SystemTime::now()));
    let code = detail.code.clone().unwrap_or_default();
    let is = |name: &str| code.eq_ignore_ascii_case(name);
    if status == 410 || is("SyncStateNotFound") || is("SyncStateInvalid") || is("ResyncRequired") {
        return Error::SyncStateInvalid { detail };
    }
    // Outlook's concurrency limit has been seen answered as 503 too.
    if status == 429 || is("ApplicationThrottled") || is("activityLimitReached") || is("TooManyRequests") {
        return Error::Throttled { retry_after, detail };
    }
    match status {
        401 => Error::Unauthorized { detail },
        403 => Error::Forbidden { detail },
        404 => Error::NotFound { detail },
        409 => Error::Conflict { detail },
        500..=599 => Error::Server { retry_after, detail },
        _ => Error::Refused { detail },
    }
}

/// An error code is a short word: anything else is not kept.
fn is_code(code: &str) -> bool {
    !code.is_empty()
        && code.len() <= 80
        && code.chars().all(|c| c.is_ascii_alphanumeric() || "_.-".contains(c))
}

/// A server's message fit for a log line: one line, printable, short;
/// the token (any spelling), GUIDs (request and correlation ids) and long
/// runs of token characters (a JWT, an echoed secret) replaced.
fn sanitize(message: &str, token: &str) -> String {
    let message = secret::scrub(message, &[token]);
    let mut out = String::new();
    let mut word = String::new();
    let flush = |word: &mut String, out: &mut String| {
        if is_guid(word) || (word.len() >= 32 && word.chars().all(is_token_char)) {
            out.push_str("[…]");
        } else {
            out.push_str(word);
        }
        word.clear();
    };
    for c in message.chars() {
        if is_token_char(c) {
            word.push(c);
        } else {
            flush(&mut word, &mut out);
            out.push(if c.is_control() { ' ' } else { c });
        }
    }
    flush(&mut word, &mut out);
    let out = out.split_whitespace().collect::<Vec<_>>().join(" ");
    match out.char_indices().nth(MESSAGE_MAX) {
        Some((at, _)) => format!("{}…", &out[..at]),
        None => out,
    }
}

fn is_token_char(c: char) -> bool {
    c.is_ascii_alphanumeric() || "-_.~+/=".contains(c)
}

fn is_guid(word: &str) -> bool {
    let groups: Vec<&str> = word.trim_matches('.').split('-').collect();
    groups.iter().map(|g| g.len()).eq([8, 4, 4, 4, 12])
        && groups.iter().all(|g| g.chars().all(|c| c.is_ascii_hexdigit()))
}

/// `Retry-After` (RFC 9110 10.2.3): delay-seconds or an HTTP-date, as a
/// wait from `now`; at most [`RETRY_AFTER_MAX`]; None when unreadable.
pub fn parse_retry_after(value: &str, now: SystemTime) -> Option<Duration> {
    let value = value.trim();
    let wait = if !value.is_empty() && value.bytes().all(|b| b.is_ascii_digit()) {
        Duration::from_secs(value.parse::<u64>().unwrap_or(u64::MAX))
    } else {
        let at = mail_parser::DateTime::parse_rfc822(value)?.to_timestamp();
        let now = now.duration_since(SystemTime::UNIX_EPOCH).ok()?.as_secs() as i64;
        Duration::from_secs(u64::try_from(at.saturating_sub(now)).unwrap_or(0))
    };
    Some(wait.min(RETRY_AFTER_MAX))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn body(code: &str, message: &str) -> Vec<u8> {
        serde_json::json!({"error": {"code": code, "message": message,
            "innerError": {"date": "2026-12-07T10:00:00", "request-id": "1137f277-eab4-4b9b-bb13-2ceb880bffcb",
                           "client-request-id": "1137f277-eab4-4b9b-bb13-2ceb880bffcb"}}})
        .to_string()
        .into_bytes()
    }

    #[test]
    fn classified_by_status_and_code() {
        let c = |status, code: &str| classify(status, None, &body(code, "m"), "tok");
        assert!(matches!(c(401, "InvalidAuthenticationToken"), Error::Unauthorized { .. }));
        assert!(matches!(c(403, "ErrorAccessDenied"), Error::Forbidden { .. }));
        assert!(matches!(c(404, "ErrorInvalidUser"), Error::NotFound { .. }));
        assert!(matches!(c(404, "ErrorItemNotFound"), Error::NotFound { .. }));
        assert!(matches!(c(409, "ErrorFolderExists"), Error::Conflict { .. }));
        assert!(matches!(c(410, "SyncStateNotFound"), Error::SyncStateInvalid { .. }));
        assert!(matches!(c(410, "anything"), Error::SyncStateInvalid { .. }));
        assert!(matches!(c(400, "syncStateNotFound"), Error::SyncStateInvalid { .. }));
        assert!(matches!(c(404, "SyncStateInvalid"), Error::SyncStateInvalid { .. }));
        assert!(matches!(c(400, "resyncRequired"), Error::SyncStateInvalid { .. }));
        assert!(matches!(c(429, "ApplicationThrottled"), Error::Throttled { .. }));
        assert!(matches!(c(503, "ApplicationThrottled"), Error::Throttled { .. }));
        assert!(matches!(c(503, "serviceNotAvailable"), Error::Server { .. }));
        assert!(matches!(c(500, "generalException"), Error::Server { .. }));
        assert!(matches!(c(400, "ErrorInvalidIdMalformed"), Error::Refused { .. }));
        assert!(matches!(c(415, "BadRequest"), Error::Refused { .. }));
        // without a JSON body (a proxy's HTML page), the status alone
        assert!(matches!(classify(502, None, b"<html>Bad Gateway</html>", "t"), Error::Server { .. }));
        assert!(matches!(classify(429, None, b"", "t"), Error::Throttled { .. }));
        assert!(matches!(classify(401, None, b"", "t"), Error::Unauthorized { .. }));
        // the same words under another code change nothing
        assert!(matches!(c(400, "BadRequest").clone(), Error::Refused { .. }));
        let e = classify(400, None, &body("BadRequest", "SyncStateNotFound: throttled, expired token"), "t");
        assert!(matches!(e, Error::Refused { .. }));
        assert!(c(410, "SyncStateNotFound").has_code("syncstatenotfound"));
    }

    #[test]
    fn retry_after_is_kept_for_throttling_and_server_errors() {
        let e = classify(429, Some("3"), &body("ApplicationThrottled", "over"), "t");
        assert_eq!(e.retry_after(), Some(Duration::from_secs(3)));
        let e = classify(503, Some("7"), b"", "t");
        assert_eq!(e.retry_after(), Some(Duration::from_secs(7)));
        assert_eq!(classify(503, None, b"", "t").retry_after(), None);
        assert_eq!(classify(404, Some("5"), b"", "t").retry_after(), None);
    }

    #[test]
    fn retry_after_seconds_or_date() {
        let now = SystemTime::UNIX_EPOCH + Duration::from_secs(1_792_567_200); // 2026-10-21T07:20:00Z
        assert_eq!(parse_retry_after("3", now), Some(Duration::from_secs(3)));
        assert_eq!(parse_retry_after(" 0 ", now), Some(Duration::ZERO));
        assert_eq!(parse_retry_after("Wed, 21 Oct 2026 07:28:00 GMT", now), Some(Duration::from_secs(480)));
        assert_eq!(parse_retry_after("Wed, 21 Oct 2026 07:00:00 GMT", now), Some(Duration::ZERO), "past");
        assert_eq!(parse_retry_after("99999999999999999999999", now), Some(RETRY_AFTER_MAX));
        assert_eq!(parse_retry_after("86400", now), Some(RETRY_AFTER_MAX));
        assert_eq!(parse_retry_after("-1", now), None);
        assert_eq!(parse_retry_after("soon", now), None);
        assert_eq!(parse_retry_after("", now), None);
        assert_eq!(parse_retry_after("1.5", now), None);
    }

    #[test]
    fn the_detail_keeps_code_and_message_only() {
        let token = "eyJ0eXAiOiJKV1QiLCJhbGciOiJIUzI1NiJ9.eyJyb2xlcyI6WyJNYWlsLlJlYWRXcml0ZSJdfQ.c2ln";
        let message = format!(
            "Access token {token} has expired. request-id 1137f277-eab4-4b9b-bb13-2ceb880bffcb\r\nand a \u{1b}[31mcolour, \
             a JWT eyJhbGciOiJIUzI1NiJ9.eyJzdWIiOiIxMjM0NTY3ODkwIn0.dozjgNryP4J3jVmNHl0w5N_XgL0n3I9PlFUP0THsR8U and a user a@b.c"
        );
        let e = classify(401, None, &body("InvalidAuthenticationToken", &message), token);
        let Error::Unauthorized { detail } = &e else { panic!("{e:?}") };
        assert_eq!(detail.status, 401);
        assert_eq!(detail.code.as_deref(), Some("InvalidAuthenticationToken"));
        let kept = detail.message.as_deref().unwrap();
        assert!(!kept.contains(token) && !kept.contains("eyJ") && !kept.contains("1137f277"), "{kept}");
        assert!(!kept.chars().any(char::is_control), "{kept}");
        assert!(kept.starts_with("Access token **** has expired. request-id […] and a"), "{kept}");
        assert!(kept.ends_with("and a user a@b.c"), "{kept}");
        let line = e.to_string();
        assert!(line.starts_with(
            "Graph refused the access token: 401 InvalidAuthenticationToken: Access token ****"
        ));
        assert!(!line.contains("innerError") && !line.contains("2026-12-07"));
    }

    #[test]
    fn odd_codes_and_long_messages_are_not_kept_whole() {
        let e = classify(400, None, &body("Bad Code\n<script>", &"x ".repeat(1000)), "t");
        let detail = e.detail().unwrap();
        assert_eq!(detail.code, None);
        assert!(detail.message.as_ref().unwrap().chars().count() <= MESSAGE_MAX + 1);
        let e = classify(500, None, br#"{"error": {"code": 42, "message": ["x"]}}"#, "t");
        assert_eq!(e.detail().unwrap(), &Detail { status: 500, code: None, message: None });
        assert_eq!(e.to_string(), "Graph failed: 500");
    }
}
