//! The message as the ingress will receive it.
//!
//! The ingress stores anything it is sent, so this is the only place where
//! input that cannot be an email is stopped. Everything that a mail server
//! would accept passes, however ugly; what is relayed is the input byte for
//! byte, minus one leading mbox `From ` line, and, when the envelope
//! recipient is known, with exactly one X-Original-To naming it (see
//! [`OriginalTo`]).

use std::io::{self, Read};

use bytes::Bytes;

use crate::headers;
pub use crate::headers::from_line_len;

/// Input bytes with spare room in front, so that the X-Original-To line can
/// be written just before the message instead of copying the message after it.
#[derive(Debug)]
pub struct Raw {
    buf: Vec<u8>,
    headroom: usize,
}

impl Raw {
    /// An empty buffer with room for the header that `recipient` needs.
    pub fn with_room_for(recipient: Option<&str>) -> Raw {
        let headroom = recipient.map_or(0, |addr| ORIGINAL_TO.len() + ": ".len() + addr.len() + "\r\n".len());
        Raw { buf: vec![0; headroom], headroom }
    }

    pub fn from_slice(input: &[u8], recipient: Option<&str>) -> Raw {
        let mut raw = Raw::with_room_for(recipient);
        raw.buf.extend_from_slice(input);
        raw
    }

    /// The bytes as they were read.
    pub fn input(&self) -> &[u8] {
        &self.buf[self.headroom..]
    }

    /// Append input, for readers that cut messages out of a stream.
    pub fn extend_from_slice(&mut self, bytes: &[u8]) {
        self.buf.extend_from_slice(bytes);
    }

    /// Keep only the first `len` bytes of input.
    pub fn truncate(&mut self, len: usize) {
        self.buf.truncate(self.headroom + len);
    }
}

/// Standard input, read up to a limit.
pub enum Input {
    Complete(Raw),
    /// The first `limit + 1` bytes; the rest is still unread.
    TooLarge(Raw),
}

/// Read everything, or stop one byte past `limit` so an oversized message
/// never has to fit in memory.
pub fn read_limited(reader: &mut impl Read, limit: u64, recipient: Option<&str>) -> io::Result<Input> {
    let mut raw = Raw::with_room_for(recipient);
    reader.take(limit.saturating_add(1)).read_to_end(&mut raw.buf)?;
    Ok(if raw.input().len() as u64 > limit { Input::TooLarge(raw) } else { Input::Complete(raw) })
}

const ORIGINAL_TO: &str = "X-Original-To";

/// What an X-Original-To that was in the message is renamed to: Chatwoot
/// reads a single X-Original-To (with two it reads none), so only ours may
/// keep the name, and nothing is lost.
const PREVIOUS_ORIGINAL_TO: &[u8] = b"X-Previous-Original-To";

/// Why the input cannot be an email. The text completes "not an email: …".
#[derive(Debug, PartialEq, Eq, thiserror::Error)]
#[error("not an email: {0}")]
pub struct Invalid(String);

/// What was done so that the message has exactly one X-Original-To, the
/// envelope recipient.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum OriginalTo {
    /// No recipient was given: nothing was done.
    NoRecipient,
    /// The message's only X-Original-To names the recipient: nothing was
    /// done (so preparing our own output again changes nothing).
    AlreadyThere,
    /// The message had none: one was added at the top (below any folded
    /// lines before the first field, which it would otherwise take in).
    Added,
    /// `previous` fields were renamed X-Previous-Original-To, in place, and
    /// one was added at the top.
    Replaced { previous: usize },
}

/// A validated message, ready to relay.
#[derive(Clone, Debug)]
pub struct Message {
    /// Exactly what the ingress receives; cheap to clone for retries.
    pub bytes: Bytes,
    pub from_line_stripped: bool,
    pub original_to: OriginalTo,
}

impl Message {
    /// Validate `raw` and prepare it for `recipient` (the envelope recipient).
    /// On refusal the input comes back, to be kept in the reject directory.
    ///
    /// With a recipient, unless the message's only X-Original-To already
    /// names it, every X-Original-To field is renamed X-Previous-Original-To
    /// (value and folding untouched) and `X-Original-To: <recipient>` is put
    /// before the first field, with the line ending of the message's first
    /// line. Deterministic, so a retry sends the same bytes.
    pub fn prepare(raw: Raw, recipient: Option<&str>) -> Result<Message, (Invalid, Raw)> {
        let start = raw.headroom + from_line_len(raw.input());
        let section = match validate(&raw.buf[start..]) {
            Ok(section) => section,
            Err(invalid) => return Err((invalid, raw)),
        };
        let stripped = start > raw.headroom;
        let Some(addr) = recipient.map(str::trim).filter(|addr| !addr.is_empty()) else {
            return Ok(Message::new(raw.buf, start, stripped, OriginalTo::NoRecipient));
        };
        let (renamed, already_there) = match section.original_to {
            0 => (Vec::new(), false),
            _ => {
                let fields: Vec<_> =
                    headers::fields(&raw.buf[start..]).filter(|f| f.is(ORIGINAL_TO)).collect();
                let same = matches!(&fields[..], [only] if same_address(&only.value(), addr));
                (fields.iter().map(|field| field.at).collect(), same)
            }
        };
        if already_there {
            return Ok(Message::new(raw.buf, start, stripped, OriginalTo::AlreadyThere));
        }
        let original_to = if renamed.is_empty() {
            OriginalTo::Added
        } else {
            OriginalTo::Replaced { previous: renamed.len() }
        };
        let line = format!("{ORIGINAL_TO}: {addr}{}", if section.crlf { "\r\n" } else { "\n" });
        let mut buf = raw.buf;
        if renamed.is_empty() && section.first_field == 0 && line.len() <= start {
            let begin = start - line.len();
            buf[begin..start].copy_from_slice(line.as_bytes());
            return Ok(Message::new(buf, begin, stripped, original_to));
        }
        // No room in front, folded lines to keep above the new field (they
        // would continue it), or fields to rename: copy once.
        let message = &buf[start..];
        let mut copy =
            Vec::with_capacity(message.len() + line.len() + renamed.len() * PREVIOUS_ORIGINAL_TO.len());
        copy.extend_from_slice(&message[..section.first_field]);
        copy.extend_from_slice(line.as_bytes());
        let mut copied = section.first_field;
        for at in renamed {
            copy.extend_from_slice(&message[copied..at]);
            copy.extend_from_slice(PREVIOUS_ORIGINAL_TO);
            copied = at + ORIGINAL_TO.len();
        }
        copy.extend_from_slice(&message[copied..]);
        Ok(Message::new(copy, 0, stripped, original_to))
    }

    fn new(buf: Vec<u8>, begin: usize, from_line_stripped: bool, original_to: OriginalTo) -> Message {
        Message { bytes: Bytes::from(buf).slice(begin..), from_line_stripped, original_to }
    }

    /// Its size in bytes, as sent.
    pub fn size(&self) -> u64 {
        self.bytes.len() as u64
    }
}

/// An envelope recipient must be one address: a CR or LF in it would let the
/// caller write arbitrary headers, and white space would make it several
/// words, except inside a quoted local part (`"john doe"@example.com`).
pub fn check_recipient(addr: &str) -> Result<(), String> {
    let not_one = |why: &str| Err(format!("--recipient {addr:?} is not one address: {why}"));
    if addr.chars().any(char::is_control) {
        return not_one("it has a control character");
    }
    let unquoted = &addr[quoted_local_part_len(addr).unwrap_or(0)..];
    if unquoted.chars().any(char::is_whitespace) {
        return not_one("it has white space outside a quoted local part");
    }
    Ok(())
}

/// The length of a local part that is one quoted string, `\` escaping the
/// next character, when an `@` follows it.
fn quoted_local_part_len(addr: &str) -> Option<usize> {
    let rest = addr.strip_prefix('"')?;
    let mut escaped = false;
    for (i, c) in rest.char_indices() {
        match c {
            _ if escaped => escaped = false,
            '\\' => escaped = true,
            '"' => return rest[i + 1..].starts_with('@').then_some(i + 2),
            _ => {}
        }
    }
    None
}

/// The recipient that the topmost (most recently added) `name` field of the
/// header section names, e.g. `Delivered-To`: unfolded, trimmed, without
/// one pair of angle brackets. None unless it is one address.
pub fn recipient_from_header(message: &[u8], name: &str) -> Option<String> {
    let section = &message[from_line_len(message)..];
    let value = headers::fields(section).find(|field| field.is(name))?.value();
    // Bytes that are not UTF-8 are in a charset we would have to guess; a
    // wrong guess would route the message to an address that is not its own.
    let addr = std::str::from_utf8(without_angle_brackets(&value)).ok()?;
    (!addr.is_empty() && check_recipient(addr).is_ok()).then(|| addr.to_string())
}

/// Whether an X-Original-To value names `addr` (ignoring case and brackets).
fn same_address(value: &[u8], addr: &str) -> bool {
    without_angle_brackets(value).eq_ignore_ascii_case(without_angle_brackets(addr.as_bytes()))
}

fn without_angle_brackets(value: &[u8]) -> &[u8] {
    value.strip_prefix(b"<").and_then(|v| v.strip_suffix(b">")).map_or(value, <[u8]>::trim_ascii)
}

/// What validation learned about the header section.
#[derive(Debug, PartialEq, Eq)]
pub struct HeaderSection {
    pub fields: usize,
    pub original_to: usize,
    /// Whether the first line ends in CRLF.
    pub crlf: bool,
    /// Where the first field starts: 0 unless folded lines come before it.
    pub first_field: usize,
}

/// Fields of which a real message has at least one. A header-shaped text
/// file (`name: value` lines) has none of them.
const MAIL_FIELDS: &[&str] = &[
    "from",
    "to",
    "cc",
    "bcc",
    "date",
    "message-id",
    "subject",
    "received",
    "return-path",
    "sender",
    "reply-to",
    "delivered-to",
    "x-original-to",
    "mime-version",
    "content-type",
    "in-reply-to",
    "references",
];

/// Accept what a mail server accepts: a header section of field lines (8-bit
/// values, CRLF or LF, no body at all, even folded lines before the first
/// field), ended by an empty line or by the body's first line (see
/// [`headers::fields`]). Refuse only what cannot be an email: empty input,
/// input that does not begin with a header field, NUL bytes in the header
/// section, and header-shaped text without any mail field.
pub fn validate(message: &[u8]) -> Result<HeaderSection, Invalid> {
    if message.iter().all(u8::is_ascii_whitespace) {
        return Err(Invalid("the message is empty".into()));
    }
    let first_line = message.split(|&b| b == b'\n').next().unwrap_or_default();
    let crlf = first_line.ends_with(b"\r");
    let mut section = HeaderSection { fields: 0, original_to: 0, crlf, first_field: 0 };
    let mut mail_fields = 0;
    let mut fields = headers::fields(message);
    for field in fields.by_ref() {
        if section.fields == 0 {
            section.first_field = field.at;
        }
        section.fields += 1;
        mail_fields += usize::from(MAIL_FIELDS.iter().any(|&name| field.is(name)));
        section.original_to += usize::from(field.is("x-original-to"));
    }
    let end = fields.end();
    let line_number = |at: usize| message[..at].iter().filter(|&&b| b == b'\n').count() + 1;
    if section.fields == 0 {
        let line = headers::without_eol(headers::line_at(message, end));
        return Err(Invalid(match (end, line.is_empty()) {
            (0, _) => format!("no header section (the first line is {})", describe_line(line)),
            (_, false) => format!("no header section (line {} is {})", line_number(end), describe_line(line)),
            (_, true) => "no header section (only indented lines, no header field)".into(),
        }));
    }
    if let Some(nul) = message[..end].iter().position(|&b| b == 0) {
        return Err(Invalid(format!("NUL byte in the header section (line {})", line_number(nul))));
    }
    if mail_fields == 0 {
        return Err(Invalid("no email header field (From, To, Date, Subject, Message-ID, Received…)".into()));
    }
    Ok(section)
}

fn describe_line(line: &[u8]) -> String {
    let text = match std::str::from_utf8(line) {
        Ok(text) if !text.chars().any(|c| c.is_control() && c != '\t') => text,
        _ => return "binary data".into(),
    };
    if text.is_empty() {
        return "empty".into();
    }
    let shown: String = text.chars().take(40).collect();
    let ellipsis = if text.chars().count() > 40 { "…" } else { "" };
    format!("{shown:?}{ellipsis}")
}

#[cfg(test)]
mod tests {
    use super::*;

    const TO: Option<&str> = Some("inbox@example.com");

    fn ok(input: &[u8]) -> Message {
        Message::prepare(Raw::from_slice(input, TO), TO).unwrap_or_else(|(e, _)| panic!("{e}: {input:?}"))
    }

    fn refused(input: &[u8]) -> String {
        let (invalid, raw) = Message::prepare(Raw::from_slice(input, None), None).unwrap_err();
        assert_eq!(raw.input(), input, "the input comes back unchanged");
        invalid.to_string()
    }

    #[test]
    fn accepts_ugly_real_mail() {
        ok(b"From: a@b\n\nbody");
        ok(b"From: a@b\r\nSubject: \xe9t\xe9\r\n\r\n\xff\xfe body");
        ok(b"Received: from x\n  by y\nSubject : obsolete space\n"); // headers only
        ok(b"Subject: no blank line\nthis text starts the body\n");
        ok(b"X-Mailer: 1\nDate: Mon, 1 Jan 2024 00:00:00 +0000\n\n");
    }

    #[test]
    fn a_body_without_a_blank_line_may_start_with_any_bytes() {
        ok(b"Subject: x\n\xe9t\xe9 body\n");
        ok(b"Subject: x\r\n\x01\xff body\r\n");
        ok(b"Subject: x\n\0 still the body\n");
    }

    #[test]
    fn folded_lines_before_the_first_field_are_accepted() {
        ok(b" folded first line\nMessage-ID: <a@b>\nTo: c@d\n\nbody\n");
        ok(b"\t\r\n continued: x\r\nFrom: a\r\n");
    }

    #[test]
    fn the_corpus_is_accepted_and_the_invalid_corpus_refused() {
        let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/corpus");
        for entry in std::fs::read_dir(&dir).unwrap() {
            let path = entry.unwrap().path();
            if path.is_file() {
                ok(&std::fs::read(&path).unwrap());
            }
        }
        for entry in std::fs::read_dir(dir.join("invalid")).unwrap() {
            let path = entry.unwrap().path();
            let reason = refused(&std::fs::read(&path).unwrap());
            assert!(reason.starts_with("not an email: "), "{path:?}: {reason}");
        }
    }

    #[test]
    fn refuses_what_cannot_be_mail() {
        assert_eq!(refused(b""), "not an email: the message is empty");
        assert_eq!(refused(b" \r\n\n"), "not an email: the message is empty");
        assert!(refused(b"not an email at all")
            .contains("no header section (the first line is \"not an email at all\")"));
        assert!(refused(b"{\"from\": \"a@b\"}\n").contains("no header section"));
        assert!(refused(b"\x89PNG\r\n\x1a\n\0\0").contains("binary data"));
        assert!(refused(b"\nFrom: a\n").contains("no header section (the first line is empty)"));
        assert!(refused(b"From: a\nX: \0\n\n").contains("NUL byte in the header section (line 2)"));
        assert!(refused(b"From: a\n b\0\n\n").contains("NUL byte in the header section (line 2)"));
        assert!(refused(b"name: chatwoot\nversion: 1\n").contains("no email header field"));
        assert!(refused(b" indented\ntext\n").contains("no header section (line 2 is \"text\")"));
        assert!(refused(b" indented\n\tonly\n").contains("no header section (only indented lines"));
    }

    /// The bytes prepared for `recipient` and what was done to X-Original-To.
    fn prepared(input: &[u8], recipient: Option<&str>) -> (String, OriginalTo) {
        let m = Message::prepare(Raw::from_slice(input, recipient), recipient).unwrap();
        (String::from_utf8(m.bytes.to_vec()).unwrap(), m.original_to)
    }

    #[test]
    fn from_line_is_stripped_and_nothing_else_changes() {
        let m = ok(b"From MAILER-DAEMON Mon Jan  1 00:00:00 2024\nFrom: a@b\n\nbody\n");
        assert!(m.from_line_stripped);
        assert_eq!(&m.bytes[..], b"X-Original-To: inbox@example.com\nFrom: a@b\n\nbody\n");
        // A "From:" header is not an envelope line.
        assert!(!ok(b"From: a@b\n\n").from_line_stripped);
        // Without a recipient nothing else changes, not even two X-Original-To.
        let input = b"From x\nX-Original-To: a\nX-Original-To: b\n\n";
        assert_eq!(
            prepared(input, None),
            ("X-Original-To: a\nX-Original-To: b\n\n".into(), OriginalTo::NoRecipient)
        );
        assert_eq!(prepared(input, Some("")).1, OriginalTo::NoRecipient);
        assert_eq!(prepared(input, Some(" ")).1, OriginalTo::NoRecipient);
    }

    #[test]
    fn x_original_to_is_added_above_the_first_field_with_its_line_ending() {
        let added = |input: &[u8], expected: &str| {
            assert_eq!(prepared(input, TO), (expected.into(), OriginalTo::Added))
        };
        added(b"From: a@b\r\n\r\nx", "X-Original-To: inbox@example.com\r\nFrom: a@b\r\n\r\nx");
        added(b"From: a@b\n\nx", "X-Original-To: inbox@example.com\nFrom: a@b\n\nx");
        // The header section ends the message, with or without a newline.
        added(b"From: a@b\nTo: c", "X-Original-To: inbox@example.com\nFrom: a@b\nTo: c");
        added(b"From: a@b\r\n", "X-Original-To: inbox@example.com\r\nFrom: a@b\r\n");
        // Below folded lines at the top, which would otherwise continue it.
        added(
            b" folded\r\nFrom: a\r\n\r\n",
            " folded\r\nX-Original-To: inbox@example.com\r\nFrom: a\r\n\r\n",
        );
        // Read without room for the header: still correct.
        let m = Message::prepare(Raw::from_slice(b"From: a\n\n", None), TO).unwrap();
        assert_eq!(&m.bytes[..], b"X-Original-To: inbox@example.com\nFrom: a\n\n");
    }

    #[test]
    fn the_only_x_original_to_naming_the_recipient_is_left_alone() {
        for input in [
            &b"From: a\nx-original-to: inbox@example.com\n\nbody"[..],
            b"X-Original-To:  <INBOX@example.com> \r\nFrom: a\r\n",
            b"From: a\nX-Original-To:\n inbox@example.com",
        ] {
            let unchanged = String::from_utf8(input.to_vec()).unwrap();
            assert_eq!(prepared(input, TO), (unchanged, OriginalTo::AlreadyThere));
        }
    }

    #[test]
    fn every_other_x_original_to_is_renamed_in_place_and_ours_added() {
        let replaced = |input: &[u8], expected: &str, previous| {
            assert_eq!(prepared(input, TO), (expected.into(), OriginalTo::Replaced { previous }));
        };
        // Another address, folded, CRLF; the body is not the header section.
        replaced(
            b"From: a@b\r\nx-original-to: other@example.com\r\n\t(folded)\r\nSubject: s\r\n\r\nX-Original-To: body\r\n",
            "X-Original-To: inbox@example.com\r\nFrom: a@b\r\nX-Previous-Original-To: other@example.com\r\n\t(folded)\r\nSubject: s\r\n\r\nX-Original-To: body\r\n",
            1,
        );
        // Two, one of them the recipient; obsolete space before the colon;
        // the header section ends the message without a newline.
        replaced(
            b"X-Original-To: inbox@example.com\nFrom: a\nX-Original-To : b@example.com",
            "X-Original-To: inbox@example.com\nX-Previous-Original-To: inbox@example.com\nFrom: a\nX-Previous-Original-To : b@example.com",
            2,
        );
        replaced(
            b"From a@b Mon Jan  1 00:00:00 2024\nX-Original-To: old@example.com\nFrom: a\n",
            "X-Original-To: inbox@example.com\nX-Previous-Original-To: old@example.com\nFrom: a\n",
            1,
        );
        replaced(
            b"\tfolded\nX-Original-To: old\nFrom: a\n\n",
            "\tfolded\nX-Original-To: inbox@example.com\nX-Previous-Original-To: old\nFrom: a\n\n",
            1,
        );
    }

    #[test]
    fn preparing_the_output_again_changes_nothing() {
        for input in [
            &b"From: a\n\n"[..],
            b"From x Mon Jan  1 00:00:00 2024\r\nFrom: a\r\n\r\n",
            b" folded\nFrom: a",
            b"X-Original-To: a\nX-Original-To: b\nFrom: a\n\n",
            b"From: a\nX-Original-To: inbox@example.com\n",
        ] {
            let (once, _) = prepared(input, TO);
            assert_eq!(prepared(once.as_bytes(), TO), (once.clone(), OriginalTo::AlreadyThere));
        }
    }

    #[test]
    fn from_space_colon_is_a_header_not_a_from_line() {
        assert_eq!(from_line_len(b"From : alice@example.com\n\n"), 0);
        assert_eq!(from_line_len(b"From  :x\n"), 0);
        assert_eq!(from_line_len(b"From\t: x\n"), 0);
        // Anything else that starts with "From " is an envelope line.
        assert_eq!(from_line_len(b"From x\nFrom: a\n"), 7);
        assert_eq!(from_line_len(b"From \xff"), 6);
        let m = ok(b"From : alice@example.com\nSubject: obsolete syntax\n\n");
        assert!(!m.from_line_stripped);
        assert!(m.bytes.ends_with(b"From : alice@example.com\nSubject: obsolete syntax\n\n"));
    }

    #[test]
    fn recipients_cannot_inject_headers() {
        assert!(check_recipient("reply+abc@inbox.example.com").is_ok());
        assert_eq!(
            check_recipient("a@b\r\nBcc: evil@x"),
            Err(r#"--recipient "a@b\r\nBcc: evil@x" is not one address: it has a control character"#.into())
        );
        for bad in ["a@b\n", "a@b\x7f", "a@b\u{85}", "\"a\tb\"@x", "\"a\r\nBcc: x\"@y"] {
            assert!(check_recipient(bad).unwrap_err().ends_with("a control character"), "{bad:?}");
        }
    }

    #[test]
    fn a_quoted_local_part_may_hold_white_space_and_nowhere_else() {
        for good in ["\"john doe\"@example.com", "\"a\\\"b\"@example.com", "\"a\\\" b\"@x", "\"\u{a0}\"@x"] {
            assert_eq!(check_recipient(good), Ok(()), "{good:?}");
        }
        for bad in
            ["a b@example.com", "\"john doe\" @x", "\"john doe\"", "\"open @x", "x\"a b\"@y", "a@b\u{a0}c"]
        {
            assert!(check_recipient(bad).unwrap_err().ends_with("outside a quoted local part"), "{bad:?}");
        }
    }

    #[test]
    fn the_recipient_comes_from_the_topmost_header_of_that_name() {
        let from = |m: &[u8]| recipient_from_header(m, "delivered-to");
        let message = b"From MAILER-DAEMON Mon Jan  1 00:00:00 2024\nReceived: x\nDelivered-To: <inbox@example.com>\nDELIVERED-TO: older@example.com\n\nDelivered-To: body@example.com\n";
        assert_eq!(from(message).as_deref(), Some("inbox@example.com"));
        assert_eq!(from(b"Delivered-To:\r\n  \"john doe\"@x \r\n\r\n").as_deref(), Some("\"john doe\"@x"));
        assert_eq!(from(b"Delivered-To: < a@b >").as_deref(), Some("a@b"));
        for none in [
            &b"From: a\n\nDelivered-To: body@example.com\n"[..],
            b"Delivered-To:  \nDelivered-To: second@example.com\n",
            b"Delivered-To: <>\n",
            b"Delivered-To: a@b, c@d\n",
            b"Delivered-To: \xe9@example.com\n",
        ] {
            assert_eq!(from(none), None, "{:?}", String::from_utf8_lossy(none));
        }
    }

    #[test]
    fn read_limited_stops_past_the_limit() {
        let mut input: &[u8] = b"0123456789";
        assert!(
            matches!(read_limited(&mut input, 10, TO).unwrap(), Input::Complete(r) if r.input() == b"0123456789")
        );
        let mut input: &[u8] = b"0123456789";
        match read_limited(&mut input, 4, None).unwrap() {
            Input::TooLarge(head) => assert_eq!(head.input(), b"01234"),
            Input::Complete(_) => panic!("over the limit"),
        }
        assert_eq!(input, b"56789");
    }
}
