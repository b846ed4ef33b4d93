//! A streaming mbox splitter: it reads one line at a time and holds one
//! message, so memory does not grow with the size of the mbox.

use std::io::{self, BufRead};

use crate::message::{Input, Raw};

/// How `From ` lines inside messages were quoted when the mbox was written.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Flavour {
    /// `>*From ` gained one `>`: reversible, so it is the default.
    Mboxrd,
    /// Only `From ` became `>From `; a real `>From ` cannot be told apart.
    Mboxo,
}

/// One message cut out of an mbox, as it was before it was stored there.
pub struct Piece {
    /// 1 for the first message.
    pub number: u64,
    /// The line of the mbox where the message starts.
    pub line: u64,
    /// The message, or its head when it is larger than the limit.
    pub input: Input,
    /// How many bytes of the mbox it took, separator included.
    pub span: u64,
}

struct Current {
    raw: Raw,
    line: u64,
    /// The message's length, which may exceed what `raw` keeps.
    len: u64,
    span: u64,
}

/// Split `reader` at every line that begins with `From ` at the start or
/// after a blank line, unquote `>From ` lines, drop the blank line that
/// separates messages, and give each message to `emit` until it returns false.
/// A message over `limit` bytes is kept only up to `limit + 1` bytes.
pub fn split(
    mut reader: impl BufRead,
    flavour: Flavour,
    limit: u64,
    recipient: Option<&str>,
    mut emit: impl FnMut(Piece) -> bool,
) -> io::Result<()> {
    let mut line = Vec::new();
    let (mut number, mut line_no) = (0, 0);
    let mut current: Option<Current> = None;
    // The length of the previous line if it was blank: a separator candidate.
    let mut blank: Option<usize> = None;
    loop {
        line.clear();
        if reader.read_until(b'\n', &mut line)? == 0 {
            break;
        }
        line_no += 1;
        let starts_message = line.starts_with(b"From ") && (line_no == 1 || blank.is_some());
        if starts_message {
            if let Some(done) = current.take() {
                number += 1;
                if !emit(finish(done, blank, number, limit)) {
                    return Ok(());
                }
            }
        }
        let message = current.get_or_insert_with(|| Current {
            raw: Raw::with_room_for(recipient),
            line: line_no,
            len: 0,
            span: 0,
        });
        message.span += line.len() as u64;
        let content = if starts_message { &line[..] } else { unquote(&line, flavour) };
        let room = (limit + 1).saturating_sub(message.len) as usize;
        message.raw.extend_from_slice(&content[..content.len().min(room)]);
        message.len += content.len() as u64;
        blank = matches!(&line[..], b"\n" | b"\r\n").then_some(line.len());
    }
    if let Some(done) = current {
        // Writers end every message with a blank line, the last one too.
        emit(finish(done, blank, number + 1, limit));
    }
    Ok(())
}

/// The message without the separating blank line it ends with, if any.
fn finish(mut message: Current, blank: Option<usize>, number: u64, limit: u64) -> Piece {
    if let Some(blank) = blank {
        message.len -= blank as u64;
        let kept = message.raw.input().len().min(message.len as usize);
        message.raw.truncate(kept);
    }
    let input = if message.len > limit { Input::TooLarge(message.raw) } else { Input::Complete(message.raw) };
    Piece { number, line: message.line, input, span: message.span }
}

/// A `From ` line quoted by the writer, without its quoting `>`.
fn unquote(line: &[u8], flavour: Flavour) -> &[u8] {
    let quoted = match flavour {
        Flavour::Mboxrd => {
            let depth = line.iter().take_while(|&&b| b == b'>').count();
            depth > 0 && line[depth..].starts_with(b"From ")
        }
        Flavour::Mboxo => line.starts_with(b">From "),
    };
    if quoted {
        &line[1..]
    } else {
        line
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn messages(mbox: &[u8], flavour: Flavour, limit: u64) -> Vec<(u64, Vec<u8>, bool)> {
        let mut out = Vec::new();
        split(mbox, flavour, limit, None, |piece| {
            let (bytes, large) = match piece.input {
                Input::Complete(raw) => (raw.input().to_vec(), false),
                Input::TooLarge(raw) => (raw.input().to_vec(), true),
            };
            out.push((piece.line, bytes, large));
            true
        })
        .unwrap();
        out
    }

    fn texts(mbox: &[u8], flavour: Flavour) -> Vec<String> {
        messages(mbox, flavour, 1 << 20).into_iter().map(|(_, b, _)| String::from_utf8(b).unwrap()).collect()
    }

    #[test]
    fn splits_only_after_blank_lines_and_drops_the_separator() {
        let mbox = b"From a@b Mon\nSubject: 1\n\nbody\nFrom here on, a body line\n\nFrom c@d Tue\nSubject: 2\n\nlast";
        assert_eq!(
            texts(mbox, Flavour::Mboxrd),
            [
                "From a@b Mon\nSubject: 1\n\nbody\nFrom here on, a body line\n",
                "From c@d Tue\nSubject: 2\n\nlast"
            ]
        );
        assert_eq!(messages(mbox, Flavour::Mboxrd, 1 << 20)[1].0, 7);
    }

    #[test]
    fn unquotes_mboxrd_reversibly_and_mboxo_once() {
        let mbox = b"From a\nS: x\n\n>From me\n>>From you\n> From no\n>Fromage\n\n";
        assert_eq!(
            texts(mbox, Flavour::Mboxrd),
            ["From a\nS: x\n\nFrom me\n>From you\n> From no\n>Fromage\n"]
        );
        assert_eq!(
            texts(mbox, Flavour::Mboxo),
            ["From a\nS: x\n\nFrom me\n>>From you\n> From no\n>Fromage\n"]
        );
    }

    #[test]
    fn crlf_and_empty_input() {
        let mbox = b"From a\r\nS: 1\r\n\r\nx\r\n\r\nFrom b\r\nS: 2\r\n\r\n>From y\r\n\r\n";
        assert_eq!(
            texts(mbox, Flavour::Mboxrd),
            ["From a\r\nS: 1\r\n\r\nx\r\n", "From b\r\nS: 2\r\n\r\nFrom y\r\n"]
        );
        assert!(texts(b"", Flavour::Mboxrd).is_empty());
    }

    #[test]
    fn large_messages_keep_a_head_and_the_next_one_is_intact() {
        let mbox = b"From a\nS: 1\n\n0123456789\n\nFrom b\nS: 2\n";
        let out = messages(mbox, Flavour::Mboxrd, 16);
        assert_eq!((out[0].1.len(), out[0].2), (17, true));
        assert_eq!((&out[1].1[..], out[1].2), (&b"From b\nS: 2\n"[..], false));
    }
}
