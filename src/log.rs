//! What `watch` tells its administrator: one line per event on stdout (the
//! journal, under systemd). Text by default; with `--log-format json`, one
//! JSON object per line for container log pipelines, with the same facts
//! as fields. Whatever a server or a message supplied (a Message-ID, a
//! server's text) has its control characters escaped, so no line can be
//! forged or a terminal driven by it. Write errors are ignored: a closed
//! stdout must not stop the watcher.

use std::fmt::Write as _;
use std::io::{self, Write};
use std::sync::OnceLock;
use std::time::{SystemTime, UNIX_EPOCH};

use serde::Serialize;

#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, clap::ValueEnum, serde::Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Format {
    #[default]
    Text,
    Json,
}

static FORMAT: OnceLock<Format> = OnceLock::new();

/// Choose the format, once, before the first line.
pub fn set_format(format: Format) {
    let _ = FORMAT.set(format);
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Level {
    Info,
    Warning,
    Error,
}

/// One event. `text` is the whole line in text format; the fields are what
/// JSON carries besides it.
#[derive(Debug, Serialize)]
pub struct Event {
    pub time: String,
    pub level: Level,
    pub event: &'static str,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub mailbox: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub folder: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub uid: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub message_id: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub bytes: Option<u64>,
    /// The RFC 3463 status code of an outcome.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub status: Option<&'static str>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub ms: Option<u128>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub fix: Option<String>,
    #[serde(rename = "message")]
    pub text: String,
}

/// Start an event; `emit` writes it.
pub fn event(level: Level, event: &'static str, text: impl Into<String>) -> Event {
    Event {
        time: String::new(),
        level,
        event,
        mailbox: None,
        folder: None,
        uid: None,
        message_id: None,
        bytes: None,
        status: None,
        ms: None,
        error: None,
        fix: None,
        text: text.into(),
    }
}

pub fn info(name: &'static str, text: impl Into<String>) -> Event {
    event(Level::Info, name, text)
}

pub fn warning(name: &'static str, text: impl Into<String>) -> Event {
    event(Level::Warning, name, text)
}

pub fn error(name: &'static str, text: impl Into<String>) -> Event {
    event(Level::Error, name, text)
}

impl Event {
    pub fn place(mut self, mailbox: &str, folder: Option<&str>) -> Event {
        self.mailbox = Some(mailbox.to_string());
        self.folder = folder.map(str::to_string);
        self
    }

    pub fn message(mut self, uid: impl ToString, message_id: Option<String>, bytes: u64) -> Event {
        self.uid = Some(uid.to_string());
        self.message_id = message_id;
        self.bytes = Some(bytes);
        self
    }

    pub fn status(mut self, code: &'static str) -> Event {
        self.status = Some(code);
        self
    }

    pub fn ms(mut self, ms: u128) -> Event {
        self.ms = Some(ms);
        self
    }

    pub fn error(mut self, error: impl Into<String>, fix: Option<&str>) -> Event {
        self.error = Some(error.into());
        self.fix = fix.map(str::to_string);
        self
    }

    pub fn emit(mut self) {
        let line = match FORMAT.get().copied().unwrap_or_default() {
            Format::Text => escape(&self.text),
            Format::Json => {
                self.time = rfc3339(SystemTime::now());
                serde_json::to_string(&self).unwrap_or_else(|_| escape(&self.text))
            }
        };
        let _ = writeln!(io::stdout().lock(), "{line}");
    }
}

/// `text` with every control character written as an escape (`\u{1b}`).
pub fn escape(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    for c in text.chars() {
        if c.is_control() {
            let _ = write!(out, "{}", c.escape_default());
        } else {
            out.push(c);
        }
    }
    out
}

/// UTC, to the millisecond: `2026-12-07T06:52:59.123Z`.
fn rfc3339(time: SystemTime) -> String {
    let since = time.duration_since(UNIX_EPOCH).unwrap_or_default();
    let secs = since.as_secs();
    let (days, rest) = (secs / 86_400, secs % 86_400);
    // Howard Hinnant's days-to-civil algorithm.
    let z = days as i64 + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z - era * 146_097;
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let day = doy - (153 * mp + 2) / 5 + 1;
    let month = if mp < 10 { mp + 3 } else { mp - 9 };
    let year = yoe + era * 400 + i64::from(month <= 2);
    format!(
        "{year:04}-{month:02}-{day:02}T{:02}:{:02}:{:02}.{:03}Z",
        rest / 3600,
        rest % 3600 / 60,
        rest % 60,
        since.subsec_millis()
    )
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    #[test]
    fn control_characters_are_escaped() {
        assert_eq!(escape("<a\x1b[31m\r\nb@x>"), "<a\\u{1b}[31m\\r\\nb@x>");
        assert_eq!(escape("été ok"), "été ok");
    }

    #[test]
    fn times_are_rfc3339_utc() {
        assert_eq!(rfc3339(UNIX_EPOCH), "1970-01-01T00:00:00.000Z");
        let t = UNIX_EPOCH + Duration::from_millis(1_796_626_379_123);
        assert_eq!(rfc3339(t), "2026-12-07T06:52:59.123Z");
        let leap = UNIX_EPOCH + Duration::from_secs(951_782_400);
        assert_eq!(rfc3339(leap), "2000-02-29T00:00:00.000Z");
    }

    #[test]
    fn json_carries_the_fields_and_the_line() {
        let mut e = info("delivered", "support/INBOX uid 3: 2.0.0 delivered")
            .place("support", Some("INBOX"))
            .message(3, Some("<a\"b@x>".into()), 120)
            .status("2.0.0")
            .ms(12);
        e.time = rfc3339(UNIX_EPOCH);
        let value: serde_json::Value = serde_json::from_str(&serde_json::to_string(&e).unwrap()).unwrap();
        assert_eq!(value["event"], "delivered");
        assert_eq!(value["uid"], "3");
        assert_eq!(value["message_id"], "<a\"b@x>");
        assert_eq!(value["bytes"], 120);
        assert_eq!(value["level"], "info");
        assert!(value.get("error").is_none());
    }
}
