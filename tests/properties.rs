//! Properties of the byte handling, on generated input: what is relayed is
//! the input minus one From_ line plus at most one X-Original-To, the
//! validator never panics and never accepts input without a header section,
//! and an mboxrd file splits back into the messages written to it.

use chatwoot_ingress::import::mbox::{split, Flavour};
use chatwoot_ingress::message::{from_line_len, validate, Input, Message, Raw};
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

fn field_name() -> impl Strategy<Value = String> {
    prop_oneof![
        Just("From".to_string()),
        Just("Subject".to_string()),
        Just("X-Original-To".to_string()),
        Just("x-original-to".to_string()),
        Just("Received".to_string()),
        "[A-Za-z][A-Za-z0-9-]{0,15}",
    ]
}

/// Something that usually is a message, often with a From_ line, CRLF or LF,
/// 8-bit header values, folded lines and any body at all.
fn mail_like() -> impl Strategy<Value = Vec<u8>> {
    (
        prop::option::of(line_bytes()),
        vec((field_name(), line_bytes(), any::<bool>()), 0..8),
        any::<bool>(),
        prop::option::of(vec(any::<u8>(), 0..200)),
    )
        .prop_map(|(from_line, fields, crlf, body)| {
            let eol: &[u8] = if crlf { b"\r\n" } else { b"\n" };
            let mut out = Vec::new();
            if let Some(rest) = from_line {
                out.extend_from_slice(b"From ");
                out.extend_from_slice(&rest);
                out.push(b'\n');
            }
            for (name, value, folded) in fields {
                out.extend_from_slice(name.as_bytes());
                out.extend_from_slice(b": ");
                out.extend_from_slice(&value);
                out.extend_from_slice(eol);
                if folded {
                    out.extend_from_slice(b"\tcontinued");
                    out.extend_from_slice(eol);
                }
            }
            if let Some(body) = body {
                out.extend_from_slice(eol);
                out.extend_from_slice(&body);
            }
            out
        })
}

fn input() -> impl Strategy<Value = Vec<u8>> {
    prop_oneof![mail_like(), vec(any::<u8>(), 0..300)]
}

fn recipient() -> impl Strategy<Value = Option<String>> {
    prop::option::of("[a-z0-9.+_-]{1,20}@[a-z0-9.-]{1,20}")
}

proptest! {
    #![proptest_config(config())]

    #[test]
    fn preparing_changes_no_byte_but_the_from_line_and_one_header(
        input in input(),
        recipient in recipient(),
        room in any::<bool>(),
    ) {
        let rcpt = recipient.as_deref();
        let raw = Raw::from_slice(&input, if room { rcpt } else { None });
        let rest = &input[from_line_len(&input)..];
        match Message::prepare(raw, rcpt) {
            Ok(message) => {
                prop_assert_eq!(message.from_line_stripped, rest.len() < input.len());
                let crlf = rest.split(|&b| b == b'\n').next().is_some_and(|l| l.ends_with(b"\r"));
                let mut expected = Vec::new();
                if message.added_original_to {
                    let addr = rcpt.expect("added without a recipient");
                    expected.extend_from_slice(format!("X-Original-To: {addr}").as_bytes());
                    expected.extend_from_slice(if crlf { b"\r\n" } else { b"\n" });
                }
                expected.extend_from_slice(rest);
                prop_assert_eq!(&message.bytes[..], &expected[..]);
                // Added exactly when there is a recipient and the message has none.
                prop_assert_eq!(message.added_original_to, rcpt.is_some() && !message.had_original_to);
                if message.had_original_to {
                    let lower = rest.to_ascii_lowercase();
                    prop_assert!(lower.windows(14).any(|w| w == b"x-original-to:" ) || lower.windows(14).any(|w| w == b"x-original-to "));
                }
            }
            Err((_, raw)) => {
                // A refusal hands back the input untouched, for --reject-dir.
                prop_assert_eq!(raw.input(), &input[..]);
            }
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
        rest in input(),
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
