//! Properties of the byte handling, on generated input: what is relayed is
//! the input minus one From_ line, with every X-Original-To renamed and one
//! added at the top when a recipient is given (unless the only one already
//! names it); preparing is idempotent; the validator never panics, accepts
//! every generated message with a mail header field and never accepts input
//! without a header section; and an mboxrd file splits back into the
//! messages written to it.

use chatwoot_ingress::import::mbox::{split, Flavour};
use chatwoot_ingress::message::{validate, Input, Message, OriginalTo, Raw};
use proptest::collection::vec;
use proptest::prelude::*;

/// Modest: the whole file runs in a few seconds on a busy machine.
fn config() -> ProptestConfig {
    ProptestConfig { cases: 256, failure_persistence: None, ..ProptestConfig::default() }
}

/// Bytes without a line feed (a line's content), any other byte allowed.
fn line_bytes() -> impl Strategy<Value = Vec<u8>> {
    vec(any::<u8>().prop_filter("no LF", |b| *b != b'\n'), 0..40)
}

/// Names of fields that every real message has one of.
const MAIL_NAMES: [&str; 5] = ["From", "Subject", "X-Original-To", "x-original-to", "Received"];

fn field_name() -> impl Strategy<Value = String> {
    prop_oneof![prop::sample::select(&MAIL_NAMES[..]).prop_map(String::from), "[A-Za-z][A-Za-z0-9-]{0,15}"]
}

fn field_value() -> impl Strategy<Value = Vec<u8>> {
    prop_oneof![
        line_bytes(),
        Just(b"inbox@example.com".to_vec()),
        Just(b" <INBOX@example.com> ".to_vec()),
        Just(b"other@example.com".to_vec()),
    ]
}

fn recipient() -> impl Strategy<Value = Option<String>> {
    prop::option::of(prop_oneof![Just("inbox@example.com".into()), "[a-z0-9.+_-]{1,20}@[a-z0-9.-]{1,20}"])
}

/// A generated message, kept as the parts it is made of so that a test can
/// state what preparing it must give without reading it back.
#[derive(Clone, Debug)]
struct Mail {
    /// What follows `From ` on an mbox From_ line.
    from_line: Option<Vec<u8>>,
    /// A folded line before the first field.
    folded_top: bool,
    /// Name, value, whether a continuation line follows.
    fields: Vec<(String, Vec<u8>, bool)>,
    crlf: bool,
    /// After an empty line.
    body: Option<Vec<u8>>,
}

/// Something that usually is a message: often a From_ line, CRLF or LF,
/// 8-bit header values, folded lines, any body at all.
fn mail() -> impl Strategy<Value = Mail> {
    // "From :" would be a header field, not a From_ line.
    let from_line =
        line_bytes().prop_filter("not a header", |rest| rest.trim_ascii_start().first() != Some(&b':'));
    (
        prop::option::of(from_line),
        prop::bool::weighted(0.1),
        vec((field_name(), field_value(), any::<bool>()), 0..8),
        any::<bool>(),
        prop::option::of(vec(any::<u8>(), 0..200)),
    )
        .prop_map(|(from_line, folded_top, fields, crlf, body)| Mail {
            from_line,
            folded_top,
            fields,
            crlf,
            body,
        })
}

impl Mail {
    /// The message as written: with its From_ line or without it, and, with
    /// `added`, that line above the first field and every X-Original-To
    /// renamed X-Previous-Original-To.
    fn render(&self, with_from_line: bool, added: Option<&[u8]>) -> Vec<u8> {
        let eol: &[u8] = if self.crlf { b"\r\n" } else { b"\n" };
        let mut out = Vec::new();
        if let (true, Some(rest)) = (with_from_line, &self.from_line) {
            out.extend_from_slice(b"From ");
            out.extend_from_slice(rest);
            out.push(b'\n');
        }
        if self.folded_top {
            out.extend_from_slice(b"\tfolded top");
            out.extend_from_slice(eol);
        }
        out.extend_from_slice(added.unwrap_or_default());
        for (name, value, folded) in &self.fields {
            let renamed = added.is_some() && name.eq_ignore_ascii_case("x-original-to");
            out.extend_from_slice(if renamed { b"X-Previous-Original-To" } else { name.as_bytes() });
            out.extend_from_slice(b": ");
            out.extend_from_slice(value);
            out.extend_from_slice(eol);
            if *folded {
                out.extend_from_slice(b"\tcontinued");
                out.extend_from_slice(eol);
            }
        }
        if let Some(body) = &self.body {
            out.extend_from_slice(eol);
            out.extend_from_slice(body);
        }
        out
    }

    fn original_to(&self) -> Vec<&(String, Vec<u8>, bool)> {
        self.fields.iter().filter(|(name, ..)| name.eq_ignore_ascii_case("x-original-to")).collect()
    }

    /// A mail server takes it: a mail header field, no NUL in the header.
    fn is_acceptable(&self) -> bool {
        self.fields.iter().any(|(name, ..)| MAIL_NAMES.contains(&name.as_str()))
            && self.fields.iter().all(|(_, value, _)| !value.contains(&0))
    }
}

/// Trimmed, without one pair of angle brackets, lower case.
fn address(value: &[u8]) -> Vec<u8> {
    let value = value.trim_ascii();
    let value = value.strip_prefix(b"<").and_then(|v| v.strip_suffix(b">")).map_or(value, <[u8]>::trim_ascii);
    value.to_ascii_lowercase()
}

/// How many X-Original-To lines come before the first empty line.
fn original_to_lines(message: &[u8]) -> usize {
    message
        .split(|&b| b == b'\n')
        .map(|line| line.strip_suffix(b"\r").unwrap_or(line))
        .take_while(|line| !line.is_empty())
        .filter(|line| {
            let name = line.split(|&b| b == b':').next().unwrap_or_default();
            line.contains(&b':') && name.trim_ascii_end().eq_ignore_ascii_case(b"x-original-to")
        })
        .count()
}

fn prepare(input: &[u8], recipient: Option<&str>, room: bool) -> Result<Message, Vec<u8>> {
    Message::prepare(Raw::from_slice(input, if room { recipient } else { None }), recipient)
        .map_err(|(_, raw)| raw.input().to_vec())
}

proptest! {
    #![proptest_config(config())]

    #[test]
    fn what_is_relayed_is_the_input_minus_the_from_line_with_one_x_original_to(
        mail in mail(),
        recipient in recipient(),
        room in any::<bool>(),
    ) {
        let input = mail.render(true, None);
        let rest = mail.render(false, None);
        let message = match prepare(&input, recipient.as_deref(), room) {
            Ok(message) => message,
            Err(returned) => {
                prop_assert!(!mail.is_acceptable(), "refused {:?}", String::from_utf8_lossy(&input));
                // A refusal hands back the input untouched, for --reject-dir.
                prop_assert_eq!(returned, input);
                return Ok(());
            }
        };
        prop_assert_eq!(message.from_line_stripped, mail.from_line.is_some());
        let previous = mail.original_to();
        let (expected, how) = match recipient.as_deref() {
            None => (rest, OriginalTo::NoRecipient),
            Some(addr) if matches!(&previous[..], [(_, value, false)] if address(value) == address(addr.as_bytes())) => {
                (rest, OriginalTo::AlreadyThere)
            }
            Some(addr) => {
                let crlf = rest.split(|&b| b == b'\n').next().is_some_and(|line| line.ends_with(b"\r"));
                let line = format!("X-Original-To: {addr}{}", if crlf { "\r\n" } else { "\n" });
                let how = match previous.len() {
                    0 => OriginalTo::Added,
                    n => OriginalTo::Replaced { previous: n },
                };
                (mail.render(false, Some(line.as_bytes())), how)
            }
        };
        prop_assert_eq!(&message.bytes[..], &expected[..]);
        prop_assert_eq!(message.original_to, how);
        if recipient.is_some() {
            prop_assert_eq!(original_to_lines(&message.bytes), 1);
        }
    }

    #[test]
    fn preparing_is_idempotent(
        input in prop_oneof![mail().prop_map(|mail| mail.render(true, None)), vec(any::<u8>(), 0..300)],
        recipient in recipient(),
    ) {
        let recipient = recipient.as_deref();
        if let Ok(once) = prepare(&input, recipient, true) {
            let twice = prepare(&once.bytes, recipient, false).expect("our own output is valid");
            prop_assert_eq!(&twice.bytes, &once.bytes);
            let expected = if recipient.is_some() { OriginalTo::AlreadyThere } else { OriginalTo::NoRecipient };
            prop_assert_eq!(twice.original_to, expected);
        }
    }

    #[test]
    fn the_validator_never_panics(input in vec(any::<u8>(), 0..2000)) {
        let _ = validate(&input);
    }

    #[test]
    fn no_header_section_is_never_accepted(
        first in vec(any::<u8>().prop_filter("no colon, no LF", |b| *b != b':' && *b != b'\n'), 0..60)
            .prop_filter("not indented", |line| !matches!(line.first(), Some(b' ' | b'\t'))),
        rest in prop_oneof![mail().prop_map(|mail| mail.render(true, None)), vec(any::<u8>(), 0..300)],
    ) {
        // The first line has no colon, so it cannot be a header field: an
        // empty first line, text, binary, JSON without quotes. (An indented
        // first line is a folded one, accepted when fields follow.)
        let mut input = first;
        input.push(b'\n');
        input.extend_from_slice(&rest);
        prop_assert!(validate(&input).is_err(), "accepted {:?}", String::from_utf8_lossy(&input));
        // Without the line feed as well.
        prop_assert!(validate(&input[..input.len() - rest.len() - 1]).is_err());
    }

    #[test]
    fn whitespace_only_or_empty_is_never_accepted(input in vec(prop_oneof![Just(b' '), Just(b'\t'), Just(b'\r'), Just(b'\n')], 0..20)) {
        prop_assert!(validate(&input).is_err());
    }

    #[test]
    fn mboxrd_round_trips(messages in vec(mbox_message(), 0..6)) {
        let mut mbox = Vec::new();
        for message in &messages {
            write_mboxrd(&mut mbox, message);
        }
        let mut read = Vec::new();
        split(&mbox[..], Flavour::Mboxrd, 1 << 20, None, |piece| {
            match piece.input {
                Input::Complete(raw) => read.push(raw.input().to_vec()),
                Input::TooLarge(_) => panic!("not over the limit"),
            }
            true
        })
        .unwrap();
        prop_assert_eq!(read, messages);
    }
}

/// A real From_ line: a return path, then an asctime date in one of the
/// shapes writers use.
fn from_line() -> impl Strategy<Value = Vec<u8>> {
    let return_path = prop_oneof!["[a-z0-9.@-]{0,12}", Just("MAILER-DAEMON".into()), Just("<>".into())];
    (return_path, 0..7usize, 0..12usize, 1..=31u32, 0..24u32, 0..60u32, 1970..2100u32, 0..3u8).prop_map(
        |(path, day, month, mday, hour, minute, year, shape)| {
            let day = ["Mon", "Tue", "Wed", "Thu", "Fri", "Sat", "Sun"][day];
            let month =
                ["Jan", "Feb", "Mar", "Apr", "May", "Jun", "Jul", "Aug", "Sep", "Oct", "Nov", "Dec"][month];
            let date = match shape {
                0 => format!("{day} {month} {mday:2} {hour:02}:{minute:02}:00 {year}"),
                1 => format!("{day} {month} {mday:02} {hour:02}:{minute:02}:00 +0000 {year}"),
                _ => format!("{day} {month} {mday} {year} {hour:02}:{minute:02}"),
            };
            format!("From {path} {date}").into_bytes()
        },
    )
}

/// A message as an mbox writer receives it: a From_ line, then lines that
/// may look like From_ lines at any quoting depth, CRLF or LF, blank lines.
fn mbox_message() -> impl Strategy<Value = Vec<u8>> {
    let line = prop_oneof![
        line_bytes(),
        Just(Vec::new()),
        Just(b"\r".to_vec()),
        from_line(),
        line_bytes().prop_map(|rest| [b"From ".as_slice(), &rest].concat()),
        (1..4usize, line_bytes())
            .prop_map(|(depth, rest)| [vec![b'>'; depth], b"From ".to_vec(), rest].concat()),
        Just(b">Fromage".to_vec()),
    ];
    (from_line(), vec(line, 0..12)).prop_map(|(mut message, lines)| {
        message.push(b'\n');
        for line in lines {
            message.extend_from_slice(&line);
            message.push(b'\n');
        }
        message
    })
}

/// mboxrd: every `>*From ` line of the message gains one `>`; a blank line
/// ends each message.
fn write_mboxrd(mbox: &mut Vec<u8>, message: &[u8]) {
    let mut lines = message.split_inclusive(|&b| b == b'\n');
    mbox.extend_from_slice(lines.next().unwrap()); // the From_ line itself
    for line in lines {
        let depth = line.iter().take_while(|&&b| b == b'>').count();
        if line[depth..].starts_with(b"From ") {
            mbox.push(b'>');
        }
        mbox.extend_from_slice(line);
    }
    mbox.push(b'\n');
}
