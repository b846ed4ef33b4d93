//! A streaming mbox splitter: it reads one line at a time and holds one
//! message, so memory does not grow with the size of the mbox.

use std::fs::File;
use std::io::{self, BufRead, BufReader, Read, Seek, SeekFrom};
use std::path::Path;

use super::from_line::is_from_line;
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
    /// Where it is in the mbox, to read it again when it was too large to keep.
    pub at: Span,
}

/// A message's bytes in an mbox.
#[derive(Clone, Copy, Debug)]
pub struct Span {
    /// Where its first line starts.
    pub offset: u64,
    /// How many bytes of the mbox it took, separator included.
    pub len: u64,
    /// Its length once unquoted, without the separator.
    pub message_len: u64,
}

struct Current {
    raw: Raw,
    line: u64,
    at: Span,
}

/// Split `reader` at every real From_ line ([`is_from_line`]: a body line
/// such as `From the desk of the CEO` is not one, in mboxo and mboxrd alike),
/// unquote `>From ` lines, drop the blank line before a separator, and give
/// each message to `emit` until it returns false. A message over `limit`
/// bytes is kept only up to `limit + 1` bytes.
pub fn split(
    mut reader: impl BufRead,
    flavour: Flavour,
    limit: u64,
    recipient: Option<&str>,
    mut emit: impl FnMut(Piece) -> bool,
) -> io::Result<()> {
    let mut line = Vec::new();
    let (mut number, mut line_no, mut offset) = (0, 0, 0);
    let mut current: Option<Current> = None;
    // The length of the previous line if it was blank: the separator's, if a
    // From_ line follows.
    let mut blank: Option<usize> = None;
    loop {
        line.clear();
        if reader.read_until(b'\n', &mut line)? == 0 {
            break;
        }
        line_no += 1;
        let starts_message = is_from_line(&line);
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
            at: Span { offset, len: 0, message_len: 0 },
        });
        offset += line.len() as u64;
        message.at.len += line.len() as u64;
        let content = unquote(&line, flavour);
        let room = (limit + 1).saturating_sub(message.at.message_len) as usize;
        message.raw.extend_from_slice(&content[..content.len().min(room)]);
        message.at.message_len += content.len() as u64;
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
        message.at.message_len -= blank as u64;
        let kept = message.raw.input().len().min(message.at.message_len as usize);
        message.raw.truncate(kept);
    }
    let input = if message.at.message_len > limit {
        Input::TooLarge(message.raw)
    } else {
        Input::Complete(message.raw)
    };
    Piece { number, line: message.line, input, at: message.at }
}

/// The message at `at` in the mbox file at `path`, unquoted as `split` gives
/// it: for copying one that was too large to hold in memory.
pub fn reread(path: &Path, at: Span, flavour: Flavour) -> io::Result<impl Read> {
    let mut file = File::open(path)?;
    file.seek(SeekFrom::Start(at.offset))?;
    let lines = BufReader::with_capacity(1 << 16, file.take(at.len));
    Ok(Unquoted { lines, flavour, line: Vec::new(), used: 0 }.take(at.message_len))
}

struct Unquoted<R> {
    lines: R,
    flavour: Flavour,
    line: Vec<u8>,
    /// How much of `line` has been given out (its quoting counts as given).
    used: usize,
}

impl<R: BufRead> Read for Unquoted<R> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        while self.used == self.line.len() {
            self.line.clear();
            if self.lines.read_until(b'\n', &mut self.line)? == 0 {
                return Ok(0);
            }
            // As in `split`: a From_ line has no quoting to remove.
            self.used = self.line.len() - unquote(&self.line, self.flavour).len();
        }
        let n = buf.len().min(self.line.len() - self.used);
        buf[..n].copy_from_slice(&self.line[self.used..self.used + n]);
        self.used += n;
        Ok(n)
    }
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

    // Real From_ lines, short enough to read.
    const A: &str = "From a@b Mon Jan 1 00:00 2024";
    const B: &str = "From c@d Tue Jan 2 00:00 2024";

    fn mbox(text: &str) -> Vec<u8> {
        text.replace("{A}", A).replace("{B}", B).into_bytes()
    }

    #[test]
    fn splits_at_from_lines_and_drops_the_separator() {
        let mbox = mbox("{A}\nSubject: 1\n\nbody\nFrom here on, a body line\n\n{B}\nSubject: 2\n\nlast");
        assert_eq!(
            texts(&mbox, Flavour::Mboxrd),
            [
                format!("{A}\nSubject: 1\n\nbody\nFrom here on, a body line\n"),
                format!("{B}\nSubject: 2\n\nlast")
            ]
        );
        assert_eq!(messages(&mbox, Flavour::Mboxrd, 1 << 20)[1].0, 7);
    }

    #[test]
    fn only_a_real_from_line_separates_with_or_without_a_blank_line() {
        let mbox = mbox("{A}\nS: 1\n\nFrom the desk of the CEO\n\nFrom: not a separator\n{B}\nS: 2\n");
        for flavour in [Flavour::Mboxrd, Flavour::Mboxo] {
            assert_eq!(
                texts(&mbox, flavour),
                [
                    format!("{A}\nS: 1\n\nFrom the desk of the CEO\n\nFrom: not a separator\n"),
                    format!("{B}\nS: 2\n")
                ]
            );
        }
    }

    #[test]
    fn unquotes_mboxrd_reversibly_and_mboxo_once() {
        let mbox = mbox("{A}\nS: x\n\n>From me\n>>From you\n> From no\n>Fromage\n\n");
        assert_eq!(
            texts(&mbox, Flavour::Mboxrd),
            [format!("{A}\nS: x\n\nFrom me\n>From you\n> From no\n>Fromage\n")]
        );
        assert_eq!(
            texts(&mbox, Flavour::Mboxo),
            [format!("{A}\nS: x\n\nFrom me\n>>From you\n> From no\n>Fromage\n")]
        );
    }

    #[test]
    fn crlf_and_empty_input() {
        let mbox = mbox("{A}\r\nS: 1\r\n\r\nx\r\n\r\n{B}\r\nS: 2\r\n\r\n>From y\r\n\r\n");
        assert_eq!(
            texts(&mbox, Flavour::Mboxrd),
            [format!("{A}\r\nS: 1\r\n\r\nx\r\n"), format!("{B}\r\nS: 2\r\n\r\nFrom y\r\n")]
        );
        assert!(texts(b"", Flavour::Mboxrd).is_empty());
    }

    #[test]
    fn large_messages_keep_a_head_and_the_next_one_is_intact() {
        let mbox = mbox("{A}\nS: 1\n\n0123456789\n\n{B}\nS: 2\n");
        let out = messages(&mbox, Flavour::Mboxrd, 40);
        assert_eq!((out[0].1.len(), out[0].2), (41, true));
        assert_eq!((&out[1].1[..], out[1].2), (format!("{B}\nS: 2\n").as_bytes(), false));
    }

    #[test]
    fn rereading_gives_what_split_gave() {
        // The first line is no From_ line, and is unquoted all the same.
        let mbox = &mbox(
            ">From x\n{A}\r\nS: 1\r\n\r\n>From x\r\n\r\n{B}\nS: 2\n\n>>From y\nFrom z\n\n\n{A}\nS: 3\n\nlast",
        )[..];
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("mbox");
        std::fs::write(&path, mbox).unwrap();
        for flavour in [Flavour::Mboxrd, Flavour::Mboxo] {
            let mut pieces = Vec::new();
            split(mbox, flavour, 1 << 20, None, |piece| {
                let Input::Complete(raw) = piece.input else { unreachable!() };
                pieces.push((raw.input().to_vec(), piece.at));
                true
            })
            .unwrap();
            assert_eq!(pieces.len(), 4);
            for (bytes, at) in pieces {
                let mut again = Vec::new();
                reread(&path, at, flavour).unwrap().read_to_end(&mut again).unwrap();
                assert_eq!(String::from_utf8(again).unwrap(), String::from_utf8(bytes).unwrap());
            }
        }
    }
}
