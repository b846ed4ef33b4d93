//! IMAP4rev1 server responses (RFC 3501 sections 7 and 9, the part a mail
//! fetcher meets), on bytes. [`frame`] finds where one response ends in what
//! has been read so far (lines, and `{n}` literals of arbitrary bytes);
//! [`parse`] reads one whole response. The server is not trusted: garbage
//! is an error, never a panic, and sizes are capped before anything is
//! allocated.

use std::borrow::Cow;
use std::ops::Range;

/// The longest line (between literals) we accept.
pub(super) const MAX_LINE: usize = 1 << 20;
/// The most literal bytes one response may carry, unless the session sets
/// a lower cap (a message's announced size and max_size).
pub(super) const MAX_LITERAL: u64 = 1 << 30;
/// Nesting of parenthesized lists (a body structure has a few levels).
const MAX_DEPTH: usize = 32;
/// Server texts are cut to this many characters.
const MAX_TEXT: usize = 300;

#[derive(Debug, PartialEq, Eq)]
pub(super) struct ParseError(pub String);

#[derive(Debug, PartialEq, Eq)]
pub(super) enum Response {
    /// `+ ...`: the rest of the line, raw (base64 during AUTHENTICATE).
    Continue(Vec<u8>),
    Tagged {
        tag: String,
        state: State,
        text: Text,
    },
    Untagged(Untagged),
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(super) enum State {
    Ok,
    No,
    Bad,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(super) enum Condition {
    Ok,
    No,
    Bad,
    PreAuth,
    Bye,
}

/// A response's human-readable part and its bracketed code, if any.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub(super) struct Text {
    pub code: Option<Code>,
    /// Printable (control characters replaced), at most [`MAX_TEXT`] characters.
    pub text: String,
}

/// `[NAME args]`: the name upper case, the arguments as sent.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(super) struct Code {
    pub name: String,
    pub args: String,
}

#[derive(Debug, PartialEq, Eq)]
pub(super) enum Untagged {
    Condition(Condition, Text),
    Capability(Vec<String>),
    /// LIST or LSUB: the name attributes and the (wire) name.
    List {
        flags: Vec<String>,
        name: Vec<u8>,
    },
    Status {
        mailbox: Vec<u8>,
        items: Vec<(String, u64)>,
    },
    Search(Vec<u32>),
    Flags,
    Exists(u32),
    Recent(u32),
    Expunge(u32),
    Fetch(Fetch),
    /// A response we have no use for (an extension's).
    Other,
}

#[derive(Debug, Default, PartialEq, Eq)]
pub(super) struct Fetch {
    pub seq: u32,
    pub uid: Option<u32>,
    pub flags: Option<Vec<String>>,
    pub size: Option<u64>,
    /// `BODY[]` (or `BODY[]<origin>`); absent when NIL.
    pub body: Option<Body>,
}

#[derive(Debug, PartialEq, Eq)]
pub(super) enum Body {
    /// A literal: where its bytes are in the response, so the caller can
    /// keep them without copying.
    Literal(Range<usize>),
    Quoted(Vec<u8>),
}

/// How far the response at the front of a buffer has been checked: kept
/// between reads, so each byte is looked at once however the response
/// arrives.
#[derive(Debug, Default)]
pub(super) struct Frame {
    /// Bytes that are whole lines and literals.
    checked: usize,
    /// Where the search for the end of the current line resumes.
    searched: usize,
    /// Literal bytes still to come.
    literal: u64,
    /// Literal bytes announced so far in this response.
    literals: u64,
}

/// The length of the first whole response in `buf`, or None while more
/// bytes are needed. `frame` must be the one used for the same response on
/// the same buffer so far; it starts afresh once a response is found. A
/// response whose literals announce more than `cap` bytes is refused before
/// they are read (a lying server cannot make us hold them).
pub(super) fn frame(buf: &[u8], frame: &mut Frame, cap: u64) -> Result<Option<usize>, ParseError> {
    loop {
        if frame.literal > 0 {
            let have = buf.len().saturating_sub(frame.checked) as u64;
            if have < frame.literal {
                frame.literal -= have;
                frame.checked = buf.len();
                frame.searched = buf.len();
                return Ok(None);
            }
            // Not more than `have`, so within buf.
            frame.checked += frame.literal as usize;
            frame.literal = 0;
            frame.searched = frame.checked;
        }
        let from = frame.searched.min(buf.len());
        let Some(at) = buf[from..].windows(2).position(|w| w == b"\r\n") else {
            if buf.len() - frame.checked.min(buf.len()) > MAX_LINE {
                return Err(ParseError(format!("a line longer than {MAX_LINE} bytes")));
            }
            // A CR at the very end may be the start of the CRLF.
            frame.searched = buf.len().saturating_sub(1).max(frame.checked);
            return Ok(None);
        };
        let end_of_line = from + at;
        let line = &buf[frame.checked.min(end_of_line)..end_of_line];
        if line.len() > MAX_LINE {
            return Err(ParseError(format!("a line longer than {MAX_LINE} bytes")));
        }
        frame.checked = end_of_line + 2;
        frame.searched = frame.checked;
        match announced(line)? {
            Some(n) => {
                frame.literals = frame.literals.saturating_add(n);
                if frame.literals > cap.min(MAX_LITERAL) {
                    return Err(ParseError(format!("literals of more than {} bytes", cap.min(MAX_LITERAL))));
                }
                frame.literal = n;
            }
            None => {
                let end = frame.checked;
                *frame = Frame::default();
                return Ok(Some(end));
            }
        }
    }
}

/// The size of the literal a line announces at its end (`{n}` or `{n+}`).
fn announced(line: &[u8]) -> Result<Option<u64>, ParseError> {
    let Some(inner) = line.strip_suffix(b"}") else { return Ok(None) };
    let inner = inner.strip_suffix(b"+").unwrap_or(inner);
    let digits = inner.iter().rev().take_while(|b| b.is_ascii_digit()).count();
    let (head, digits) = inner.split_at(inner.len() - digits);
    if digits.is_empty() || !head.ends_with(b"{") {
        return Ok(None);
    }
    match decimal(digits) {
        Some(n) if n <= MAX_LITERAL => Ok(Some(n)),
        _ => Err(ParseError(format!("a literal of more than {MAX_LITERAL} bytes"))),
    }
}

fn decimal(digits: &[u8]) -> Option<u64> {
    digits.iter().try_fold(0u64, |n, &d| n.checked_mul(10)?.checked_add(u64::from(d.checked_sub(b'0')?)))
}

/// One whole response, CRLF included, as [`frame`] delimits it.
pub(super) fn parse(input: &[u8]) -> Result<Response, ParseError> {
    if !input.ends_with(b"\r\n") {
        return Err(ParseError("a response that does not end in CRLF".into()));
    }
    let mut c = Cursor { input, pos: 0, end: input.len() - 2 };
    let response = match c.peek() {
        Some(b'+') => {
            c.pos += 1;
            if c.at_end() {
                Response::Continue(Vec::new())
            } else {
                c.sp()?;
                Response::Continue(c.rest()?.to_vec())
            }
        }
        Some(b'*') => {
            c.pos += 1;
            c.sp()?;
            Response::Untagged(untagged(&mut c)?)
        }
        _ => {
            let tag = c.take_while(|b| astring_char(b) && b != b'+');
            if tag.is_empty() {
                return Err(c.error("expected a tag, * or +"));
            }
            let tag = String::from_utf8_lossy(tag).into_owned();
            c.sp()?;
            let state = match c.keyword()?.as_str() {
                "OK" => State::Ok,
                "NO" => State::No,
                "BAD" => State::Bad,
                _ => return Err(c.error("expected OK, NO or BAD after the tag")),
            };
            Response::Tagged { tag, state, text: c.resp_text()? }
        }
    };
    if !c.at_end() {
        return Err(c.error("unexpected bytes"));
    }
    Ok(response)
}

fn untagged(c: &mut Cursor) -> Result<Untagged, ParseError> {
    if c.peek().is_some_and(|b| b.is_ascii_digit()) {
        let n = c.number32()?;
        c.sp()?;
        return Ok(match c.keyword()?.as_str() {
            "EXISTS" => Untagged::Exists(n),
            "RECENT" => Untagged::Recent(n),
            "EXPUNGE" => Untagged::Expunge(n),
            "FETCH" => {
                c.sp()?;
                Untagged::Fetch(fetch(c, n)?)
            }
            _ => {
                c.pos = c.end;
                Untagged::Other
            }
        });
    }
    let keyword = c.keyword()?;
    let condition = match keyword.as_str() {
        "OK" => Some(Condition::Ok),
        "NO" => Some(Condition::No),
        "BAD" => Some(Condition::Bad),
        "PREAUTH" => Some(Condition::PreAuth),
        "BYE" => Some(Condition::Bye),
        _ => None,
    };
    if let Some(condition) = condition {
        return Ok(Untagged::Condition(condition, c.resp_text()?));
    }
    match keyword.as_str() {
        "CAPABILITY" => {
            let mut capabilities = Vec::new();
            while c.eat(b' ') && !c.at_end() {
                capabilities.push(String::from_utf8_lossy(c.atom()?).into_owned());
            }
            Ok(Untagged::Capability(capabilities))
        }
        "LIST" | "LSUB" => {
            c.sp()?;
            let flags = c.flags()?;
            c.sp()?;
            if !c.nil() {
                c.string()?;
            }
            c.sp()?;
            let name = c.astring()?.into_owned();
            // LIST-EXTENDED data, if any, is of no use here.
            c.pos = c.end;
            Ok(Untagged::List { flags, name })
        }
        "STATUS" => {
            c.sp()?;
            let mailbox = c.astring()?.into_owned();
            c.sp()?;
            c.expect(b'(')?;
            let mut items = Vec::new();
            while !c.eat(b')') {
                if !items.is_empty() {
                    c.sp()?;
                }
                let name = c.keyword()?;
                c.sp()?;
                items.push((name, c.number()?));
            }
            Ok(Untagged::Status { mailbox, items })
        }
        "SEARCH" => {
            let mut uids = Vec::new();
            while c.eat(b' ') && !c.at_end() {
                if c.peek() == Some(b'(') {
                    // CONDSTORE's (MODSEQ n)
                    c.value(0)?;
                } else {
                    uids.push(c.nz_number32()?);
                }
            }
            Ok(Untagged::Search(uids))
        }
        "FLAGS" => {
            c.sp()?;
            c.flags()?;
            Ok(Untagged::Flags)
        }
        _ => {
            c.pos = c.end;
            Ok(Untagged::Other)
        }
    }
}

fn fetch(c: &mut Cursor, seq: u32) -> Result<Fetch, ParseError> {
    let mut fetch = Fetch { seq, ..Fetch::default() };
    c.expect(b'(')?;
    let mut first = true;
    while !c.eat(b')') {
        if !first {
            c.sp()?;
        }
        first = false;
        let name = c.take_while(|b| b.is_ascii_alphanumeric() || b == b'.' || b == b'-');
        if name.is_empty() {
            return Err(c.error("expected a FETCH item"));
        }
        let name = name.to_ascii_uppercase();
        let section = if c.eat(b'[') {
            let section = c.take_while(|b| b != b']' && b != b'\r' && b != b'\n');
            c.expect(b']')?;
            if c.eat(b'<') {
                c.number()?;
                c.expect(b'>')?;
            }
            Some(section)
        } else {
            None
        };
        c.sp()?;
        match (&name[..], section) {
            (b"UID", None) => fetch.uid = Some(c.nz_number32()?),
            (b"FLAGS", None) => fetch.flags = Some(c.flags()?),
            (b"RFC822.SIZE", None) => fetch.size = Some(c.number()?),
            (b"BODY", Some(b"")) => {
                fetch.body = match c.peek() {
                    Some(b'{') => Some(Body::Literal(c.literal()?)),
                    _ if c.nil() => None,
                    _ => Some(Body::Quoted(c.quoted()?)),
                }
            }
            _ => c.value(0)?,
        }
    }
    Ok(fetch)
}

pub(super) fn atom_char(b: u8) -> bool {
    (0x21..0x7f).contains(&b) && !b"(){%*\"\\]".contains(&b)
}

fn astring_char(b: u8) -> bool {
    atom_char(b) || b == b']'
}

struct Cursor<'a> {
    input: &'a [u8],
    pos: usize,
    /// Where the final CRLF starts.
    end: usize,
}

impl<'a> Cursor<'a> {
    fn error(&self, what: &str) -> ParseError {
        ParseError(format!("{what} at byte {}", self.pos))
    }

    fn peek(&self) -> Option<u8> {
        if self.pos < self.end {
            self.input.get(self.pos).copied()
        } else {
            None
        }
    }

    fn at_end(&self) -> bool {
        self.pos >= self.end
    }

    fn eat(&mut self, b: u8) -> bool {
        let found = self.peek() == Some(b);
        if found {
            self.pos += 1;
        }
        found
    }

    fn expect(&mut self, b: u8) -> Result<(), ParseError> {
        if self.eat(b) {
            Ok(())
        } else {
            Err(self.error(&format!("expected '{}'", char::from(b).escape_default())))
        }
    }

    fn sp(&mut self) -> Result<(), ParseError> {
        self.expect(b' ')
    }

    fn take_while(&mut self, accept: impl Fn(u8) -> bool) -> &'a [u8] {
        let start = self.pos;
        while self.peek().is_some_and(&accept) {
            self.pos += 1;
        }
        &self.input[start..self.pos]
    }

    /// The rest of the line: text, which holds no CR, LF or NUL.
    fn rest(&mut self) -> Result<&'a [u8], ParseError> {
        let rest = self.take_while(|b| !b"\r\n\0".contains(&b));
        if !self.at_end() {
            return Err(self.error("a control character in text"));
        }
        Ok(rest)
    }

    fn atom(&mut self) -> Result<&'a [u8], ParseError> {
        let atom = self.take_while(atom_char);
        if atom.is_empty() {
            return Err(self.error("expected an atom"));
        }
        Ok(atom)
    }

    /// An atom, upper case.
    fn keyword(&mut self) -> Result<String, ParseError> {
        Ok(String::from_utf8_lossy(self.atom()?).to_ascii_uppercase())
    }

    fn nil(&mut self) -> bool {
        let end = self.pos.saturating_add(3).min(self.end);
        let found = self.input[self.pos.min(end)..end].eq_ignore_ascii_case(b"NIL")
            && self.input.get(end).is_none_or(|&b| end == self.end || !atom_char(b));
        if found {
            self.pos = end;
        }
        found
    }

    fn number(&mut self) -> Result<u64, ParseError> {
        let digits = self.take_while(|b| b.is_ascii_digit());
        if digits.is_empty() {
            return Err(self.error("expected a number"));
        }
        decimal(digits).ok_or_else(|| self.error("a number too large"))
    }

    fn number32(&mut self) -> Result<u32, ParseError> {
        let n = self.number()?;
        u32::try_from(n).map_err(|_| self.error("a number too large"))
    }

    fn nz_number32(&mut self) -> Result<u32, ParseError> {
        match self.number32()? {
            0 => Err(self.error("0 where a non-zero number belongs")),
            n => Ok(n),
        }
    }

    fn quoted(&mut self) -> Result<Vec<u8>, ParseError> {
        self.expect(b'"')?;
        let mut out = Vec::new();
        loop {
            match self.peek() {
                None | Some(b'\r' | b'\n') => return Err(self.error("an unterminated quoted string")),
                Some(b'"') => break,
                Some(b'\\') => {
                    self.pos += 1;
                    match self.peek() {
                        Some(b @ (b'"' | b'\\')) => out.push(b),
                        _ => return Err(self.error("a bad escape in a quoted string")),
                    }
                }
                Some(b) => out.push(b),
            }
            self.pos += 1;
        }
        self.pos += 1;
        Ok(out)
    }

    /// `{n}` or `{n+}`, CRLF, n bytes: where the bytes are.
    fn literal(&mut self) -> Result<Range<usize>, ParseError> {
        self.expect(b'{')?;
        let n = self.number()?;
        self.eat(b'+');
        self.expect(b'}')?;
        if self.input.get(self.pos..self.pos + 2) != Some(b"\r\n") || self.pos + 2 > self.end {
            return Err(self.error("expected CRLF after a literal's size"));
        }
        let start = self.pos + 2;
        let end = usize::try_from(n)
            .ok()
            .and_then(|n| start.checked_add(n))
            .filter(|&end| end <= self.end)
            .ok_or_else(|| self.error("a literal longer than the response"))?;
        self.pos = end;
        Ok(start..end)
    }

    fn string(&mut self) -> Result<Cow<'a, [u8]>, ParseError> {
        match self.peek() {
            Some(b'{') => {
                let range = self.literal()?;
                Ok(Cow::Borrowed(&self.input[range]))
            }
            _ => Ok(Cow::Owned(self.quoted()?)),
        }
    }

    fn astring(&mut self) -> Result<Cow<'a, [u8]>, ParseError> {
        match self.peek() {
            Some(b'{' | b'"') => self.string(),
            _ => {
                let atom = self.take_while(astring_char);
                if atom.is_empty() {
                    return Err(self.error("expected a string"));
                }
                Ok(Cow::Borrowed(atom))
            }
        }
    }

    /// `(flag flag ...)`, where a flag is an atom, `\atom` or `\*`.
    fn flags(&mut self) -> Result<Vec<String>, ParseError> {
        self.expect(b'(')?;
        let mut flags = Vec::new();
        while !self.eat(b')') {
            if !flags.is_empty() {
                self.sp()?;
            }
            let start = self.pos;
            if self.eat(b'\\') && self.eat(b'*') {
                flags.push("\\*".to_string());
                continue;
            }
            self.atom()?;
            flags.push(String::from_utf8_lossy(&self.input[start..self.pos]).into_owned());
        }
        Ok(flags)
    }

    /// Any one value (a list, string, number, atom or NIL), checked and skipped.
    fn value(&mut self, depth: usize) -> Result<(), ParseError> {
        if depth > MAX_DEPTH {
            return Err(self.error("lists nested too deep"));
        }
        match self.peek() {
            Some(b'(') => {
                self.pos += 1;
                let mut first = true;
                while !self.eat(b')') {
                    if !first {
                        self.sp()?;
                    }
                    first = false;
                    self.value(depth + 1)?;
                }
            }
            Some(b'"') => {
                self.quoted()?;
            }
            Some(b'{') => {
                self.literal()?;
            }
            _ => {
                if self.take_while(|b| (0x21..0x7f).contains(&b) && !b"(){\"".contains(&b)).is_empty() {
                    return Err(self.error("expected a value"));
                }
            }
        }
        Ok(())
    }

    /// `[SP ["[" code "]" [SP]] text]`, leniently: servers leave parts out.
    fn resp_text(&mut self) -> Result<Text, ParseError> {
        if self.at_end() {
            return Ok(Text::default());
        }
        self.sp()?;
        let mut code = None;
        if self.eat(b'[') {
            let name = self.keyword()?;
            let args = if self.eat(b' ') { self.take_while(|b| !b"]\r\n\0".contains(&b)) } else { b"" };
            self.expect(b']')?;
            code = Some(Code { name, args: String::from_utf8_lossy(args).into_owned() });
            if !self.at_end() {
                self.sp()?;
            }
        }
        Ok(Text { code, text: printable(self.rest()?) })
    }
}

/// Server text made safe to show on one line.
pub(super) fn printable(bytes: &[u8]) -> String {
    let text = String::from_utf8_lossy(bytes);
    let mut out: String = text.chars().take(MAX_TEXT).map(|c| if c.is_control() { '?' } else { c }).collect();
    if text.chars().nth(MAX_TEXT).is_some() {
        out.push('…');
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn one(input: &[u8]) -> Response {
        parse(input).unwrap_or_else(|e| panic!("{}: {e:?}", String::from_utf8_lossy(input)))
    }

    fn text(code: Option<(&str, &str)>, text: &str) -> Text {
        Text {
            code: code.map(|(name, args)| Code { name: name.into(), args: args.into() }),
            text: text.into(),
        }
    }

    #[test]
    fn dovecot_greeting_and_tagged_answers() {
        assert_eq!(
            one(b"* OK [CAPABILITY IMAP4rev1 SASL-IR LITERAL+ AUTH=PLAIN] Dovecot (Debian) ready.\r\n"),
            Response::Untagged(Untagged::Condition(
                Condition::Ok,
                text(
                    Some(("CAPABILITY", "IMAP4rev1 SASL-IR LITERAL+ AUTH=PLAIN")),
                    "Dovecot (Debian) ready."
                )
            ))
        );
        assert_eq!(
            one(b"A0001 no [AUTHENTICATIONFAILED] Authentication failed.\r\n"),
            Response::Tagged {
                tag: "A0001".into(),
                state: State::No,
                text: text(Some(("AUTHENTICATIONFAILED", "")), "Authentication failed.")
            }
        );
        assert_eq!(
            one(b"A2 OK\r\n"),
            Response::Tagged { tag: "A2".into(), state: State::Ok, text: Text::default() }
        );
        assert_eq!(
            one(b"A3 OK [READ-WRITE]\r\n"),
            Response::Tagged { tag: "A3".into(), state: State::Ok, text: text(Some(("READ-WRITE", "")), "") }
        );
        assert_eq!(
            one(b"* BYE Server shutting down.\r\n"),
            Response::Untagged(Untagged::Condition(Condition::Bye, text(None, "Server shutting down.")))
        );
        assert_eq!(one(b"+ idling\r\n"), Response::Continue(b"idling".to_vec()));
        assert_eq!(one(b"+ \r\n"), Response::Continue(Vec::new()));
        assert_eq!(one(b"+\r\n"), Response::Continue(Vec::new()));
    }

    #[test]
    fn mailbox_data() {
        assert_eq!(
            one(b"* OK [PERMANENTFLAGS (\\Answered \\Seen \\*)] Flags permitted.\r\n"),
            Response::Untagged(Untagged::Condition(
                Condition::Ok,
                text(Some(("PERMANENTFLAGS", "(\\Answered \\Seen \\*)")), "Flags permitted.")
            ))
        );
        assert_eq!(one(b"* 17 EXISTS\r\n"), Response::Untagged(Untagged::Exists(17)));
        assert_eq!(one(b"* 0 RECENT\r\n"), Response::Untagged(Untagged::Recent(0)));
        assert_eq!(one(b"* 3 EXPUNGE\r\n"), Response::Untagged(Untagged::Expunge(3)));
        assert_eq!(one(b"* SEARCH 2 84 882\r\n"), Response::Untagged(Untagged::Search(vec![2, 84, 882])));
        assert_eq!(one(b"* SEARCH\r\n"), Response::Untagged(Untagged::Search(vec![])));
        assert_eq!(
            one(b"* SEARCH 1 5 (MODSEQ 917162500)\r\n"),
            Response::Untagged(Untagged::Search(vec![1, 5]))
        );
        assert_eq!(
            one(b"* LIST (\\HasNoChildren) \"/\" \"&AMk-l&AOk-ments envoy&AOk-s\"\r\n"),
            Response::Untagged(Untagged::List {
                flags: vec!["\\HasNoChildren".into()],
                name: b"&AMk-l&AOk-ments envoy&AOk-s".to_vec()
            })
        );
        assert_eq!(
            one(b"* LIST () NIL INBOX\r\n"),
            Response::Untagged(Untagged::List { flags: vec![], name: b"INBOX".to_vec() })
        );
        assert_eq!(
            one(b"* LIST (\\Noselect) \"/\" {7}\r\na\"b\\c]d\r\n"),
            Response::Untagged(Untagged::List {
                flags: vec!["\\Noselect".into()],
                name: b"a\"b\\c]d".to_vec()
            })
        );
        assert_eq!(
            one(b"* STATUS \"a \\\"b\" (MESSAGES 231 UNSEEN 3)\r\n"),
            Response::Untagged(Untagged::Status {
                mailbox: b"a \"b".to_vec(),
                items: vec![("MESSAGES".into(), 231), ("UNSEEN".into(), 3)]
            })
        );
        assert_eq!(
            one(b"* CAPABILITY IMAP4rev1 IDLE MOVE\r\n"),
            Response::Untagged(Untagged::Capability(vec!["IMAP4rev1".into(), "IDLE".into(), "MOVE".into()]))
        );
        assert_eq!(one(b"* FLAGS (\\Seen $Forwarded)\r\n"), Response::Untagged(Untagged::Flags));
        assert_eq!(one(b"* ID (\"name\" \"Dovecot\")\r\n"), Response::Untagged(Untagged::Other));
        assert_eq!(one(b"* 5 VANISHED whatever\r\n"), Response::Untagged(Untagged::Other));
    }

    #[test]
    fn fetch_with_a_literal_body_of_any_bytes() {
        let mut input = b"* 12 FETCH (UID 7 RFC822.SIZE 10 FLAGS (\\Seen \\Recent) BODY[] {10}\r\n".to_vec();
        let start = input.len();
        input.extend_from_slice(b"a)\r\n{2}\x00\xff\"");
        input.extend_from_slice(b" INTERNALDATE \"17-Jul-1996 02:44:25 -0700\")\r\n");
        let Response::Untagged(Untagged::Fetch(fetch)) = one(&input) else { panic!() };
        assert_eq!(
            fetch,
            Fetch {
                seq: 12,
                uid: Some(7),
                flags: Some(vec!["\\Seen".into(), "\\Recent".into()]),
                size: Some(10),
                body: Some(Body::Literal(start..start + 10)),
            }
        );
        assert_eq!(&input[start..start + 10], b"a)\r\n{2}\x00\xff\"");
        assert_eq!(frame(&input, &mut Frame::default(), MAX_LITERAL), Ok(Some(input.len())));
    }

    #[test]
    fn fetch_items_we_do_not_ask_for_are_skipped() {
        let input = b"* 1 FETCH (BODY[]<100> \"a\\\"b\" BODYSTRUCTURE (\"TEXT\" \"PLAIN\" (\"CHARSET\" \"utf-8\") NIL NIL \"7BIT\" 4 1 NIL NIL NIL NIL) BODY[HEADER.FIELDS (SUBJECT)] {2}\r\nab UID 3 MODSEQ (12))\r\n";
        let Response::Untagged(Untagged::Fetch(fetch)) = one(input) else { panic!() };
        assert_eq!(fetch.uid, Some(3));
        assert_eq!(fetch.body, Some(Body::Quoted(b"a\"b".to_vec())));
        let Response::Untagged(Untagged::Fetch(fetch)) = one(b"* 1 FETCH (UID 3 BODY[] NIL)\r\n") else {
            panic!()
        };
        assert_eq!(fetch.body, None);
    }

    #[test]
    fn garbage_is_an_error() {
        for bad in [
            &b""[..],
            b"\r\n",
            b"* OK hello",
            b"*OK\r\n",
            b"* 1 EXISTS extra\r\n",
            b"* 4294967296 EXISTS\r\n",
            b"* SEARCH 0\r\n",
            b"* SEARCH x\r\n",
            b"A1 MAYBE\r\n",
            b"A1 OK [UIDNEXT 5 text\r\n",
            b"A1 OK a\x00b\r\n",
            b"* 1 FETCH (UID 1\r\n",
            b"* 1 FETCH (BODY[] {10}\r\nabc)\r\n",
            b"* 1 FETCH (BODY[] {99999999999999999999999}\r\n)\r\n",
            b"* 1 FETCH (UID \"1\")\r\n",
            b"* LIST (\\X) \"/\r\n",
            b"* STATUS INBOX (MESSAGES)\r\n",
            b"+ two\r\nlines\r\n",
            b"\xff\xfe\r\n",
        ] {
            assert!(parse(bad).is_err(), "{}", String::from_utf8_lossy(bad));
        }
        let deep = [&b"* 1 FETCH (X "[..], &[b'('; 100], &[b')'; 100], b")\r\n"].concat();
        assert!(parse(&deep).is_err_and(|e| e.0.starts_with("lists nested too deep")));
    }

    #[test]
    fn framing_follows_literals_across_reads() {
        let stream = b"* 1 FETCH (BODY[] {5}\r\nab\r\nc BODY[1] {0}\r\n)\r\nA1 OK done\r\n";
        let first = stream.len() - b"A1 OK done\r\n".len();
        for cut in 0..stream.len() {
            let mut f = Frame::default();
            let early = frame(&stream[..cut], &mut f, MAX_LITERAL).unwrap();
            if cut < first {
                assert_eq!(early, None, "cut {cut}");
                assert_eq!(frame(stream, &mut f, MAX_LITERAL), Ok(Some(first)), "cut {cut}");
            }
        }
        assert_eq!(
            frame(&stream[first..], &mut Frame::default(), MAX_LITERAL),
            Ok(Some(stream.len() - first))
        );
    }

    #[test]
    fn framing_caps_lines_and_literals() {
        let long = vec![b'a'; MAX_LINE + 2];
        assert!(frame(&long, &mut Frame::default(), MAX_LITERAL).is_err());
        assert!(frame(b"* 1 FETCH (BODY[] {1073741825}\r\n", &mut Frame::default(), MAX_LITERAL).is_err());
        assert_eq!(frame(b"* 1 FETCH (A {1073741824}\r\n", &mut Frame::default(), MAX_LITERAL), Ok(None));
        // A second literal in the same response goes past the cap.
        let mut f = Frame { literals: MAX_LITERAL, ..Frame::default() };
        assert!(frame(b"x {1}\r\n", &mut f, MAX_LITERAL).is_err());
        // A session's own cap: a message's announced size, not a GiB.
        assert!(frame(b"* 1 FETCH (BODY[] {1001}\r\n", &mut Frame::default(), 1000).is_err());
        assert_eq!(frame(b"* 1 FETCH (BODY[] {1000}\r\n", &mut Frame::default(), 1000), Ok(None));
    }

    fn imapish() -> impl Strategy<Value = Vec<u8>> {
        let token = prop_oneof![
            Just(b"* ".to_vec()),
            Just(b"A1 ".to_vec()),
            Just(b"+ ".to_vec()),
            Just(b"OK ".to_vec()),
            Just(b"FETCH ".to_vec()),
            Just(b"1 ".to_vec()),
            Just(b"(".to_vec()),
            Just(b")".to_vec()),
            Just(b"[".to_vec()),
            Just(b"]".to_vec()),
            Just(b"\"".to_vec()),
            Just(b"\\".to_vec()),
            Just(b"{3}\r\n".to_vec()),
            Just(b"{0+}\r\n".to_vec()),
            Just(b"NIL".to_vec()),
            Just(b"BODY[]".to_vec()),
            Just(b"UID".to_vec()),
            Just(b"LIST".to_vec()),
            Just(b"STATUS".to_vec()),
            Just(b"SEARCH".to_vec()),
            Just(b"\r\n".to_vec()),
            proptest::collection::vec(any::<u8>(), 0..4),
        ];
        proptest::collection::vec(token, 0..40).prop_map(|tokens| tokens.concat())
    }

    proptest! {
        #[test]
        fn arbitrary_bytes_never_panic(bytes in proptest::collection::vec(any::<u8>(), 0..512)) {
            let _ = parse(&bytes);
            let mut f = Frame::default();
            let _ = frame(&bytes, &mut f, MAX_LITERAL);
        }

        #[test]
        fn imap_like_bytes_never_panic(mut bytes in imapish()) {
            let _ = parse(&bytes);
            bytes.extend_from_slice(b"\r\n");
            let _ = parse(&bytes);
            // Framing then parsing, as the session does.
            let mut at = 0;
            let mut f = Frame::default();
            while let Ok(Some(n)) = frame(&bytes[at..], &mut f, MAX_LITERAL) {
                let _ = parse(&bytes[at..at + n]);
                at += n;
            }
        }
    }
}
