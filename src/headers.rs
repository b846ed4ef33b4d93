//! The header section read from raw bytes: no UTF-8 assumption and no
//! parsing of values beyond what is shown, so an 8-bit Subject or a Date
//! with an obsolete zone is just text. The validator, the X-Original-To
//! rewrite and `--dry-run` all read the header section through [`fields`],
//! so they agree on where it ends.

use mail_parser::parsers::MessageStream;
use mail_parser::HeaderValue;

/// The fields of the header section at the start of `message` (a message
/// without its From_ line), in order, each with its continuation lines.
///
/// The section ends at the first empty line, or at the first line that is
/// neither a field nor a continuation: mail servers (Postfix among them) take
/// that line as the body's first, whatever its bytes. Continuation lines
/// before the first field belong to no field and are skipped.
pub fn fields(message: &[u8]) -> Fields<'_> {
    Fields { message, at: 0 }
}

pub struct Fields<'a> {
    message: &'a [u8],
    at: usize,
}

impl Fields<'_> {
    /// Once the iterator is done: where the header section stopped (its
    /// closing empty line, the body's first line or the end of the message).
    pub fn end(&self) -> usize {
        self.at
    }
}

impl<'a> Iterator for Fields<'a> {
    type Item = Field<'a>;

    fn next(&mut self) -> Option<Field<'a>> {
        loop {
            let line = line_at(self.message, self.at);
            let text = without_eol(line);
            if text.is_empty() {
                return None;
            }
            // Only possible before the first field: a field takes its own.
            if is_continuation(text) {
                self.at += line.len();
                continue;
            }
            let (name, colon) = field_name(text)?;
            let at = self.at;
            self.at += line.len();
            while self.message.get(self.at).is_some_and(|&b| b == b' ' || b == b'\t') {
                self.at += line_at(self.message, self.at).len();
            }
            return Some(Field { at, name, raw_value: &self.message[at + colon + 1..self.at] });
        }
    }
}

/// One header field.
#[derive(Clone, Copy, Debug)]
pub struct Field<'a> {
    /// Where its first line starts in the bytes given to [`fields`].
    pub at: usize,
    /// The name as written, without any white space before the colon.
    pub name: &'a [u8],
    /// Everything after the colon, line breaks included.
    raw_value: &'a [u8],
}

impl Field<'_> {
    /// Whether this is the field `name` (field names ignore case).
    pub fn is(&self, name: &str) -> bool {
        self.name.eq_ignore_ascii_case(name.as_bytes())
    }

    /// The value unfolded (line breaks removed) and trimmed.
    pub fn value(&self) -> Vec<u8> {
        let mut value = Vec::with_capacity(self.raw_value.len());
        for line in self.raw_value.split(|&b| b == b'\n') {
            value.extend_from_slice(line.strip_suffix(b"\r").unwrap_or(line));
        }
        value.trim_ascii().to_vec()
    }
}

/// What Chatwoot will route on, for `--dry-run`: the header section read the
/// way the ingress's mail parser (Ruby's mail gem) reads it, bytes shown as
/// lossy UTF-8 rather than hidden, the Subject decoded as Chatwoot shows it.
/// One difference: the section ends where [`fields`] says, while the mail
/// gem reads on to the first empty line.
///
/// The addresses are read here, not by mail-parser: its address parser
/// (0.11) splits a quoted local part into a display name and `@domain`
/// (`"john doe"@x` gives the address `@x`), and keeps a source route
/// (`<@relay:j@s>`) and white space (`h @ i`) in the address, none of which
/// is the addr-spec Chatwoot looks up.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct RoutingView {
    /// The addresses (addr-specs) of every field of that name.
    pub from: Vec<String>,
    pub to: Vec<String>,
    pub cc: Vec<String>,
    pub bcc: Vec<String>,
    /// Every value: with more than one, Chatwoot reads none of them.
    pub x_original_to: Vec<String>,
    /// The first non-empty value of each; the Subject with its RFC 2047
    /// encoded words decoded.
    pub subject: Option<String>,
    pub message_id: Option<String>,
    pub date: Option<String>,
    /// The conversation a `reply+<uuid>@…` To address continues.
    pub reply_to_conversation: Option<String>,
}

impl RoutingView {
    /// The view of `message`, with or without its From_ line.
    pub fn of(message: &[u8]) -> RoutingView {
        let mut view = RoutingView::default();
        for field in fields(&message[from_line_len(message)..]) {
            let value = field.value();
            let first = |slot: &mut Option<String>| {
                if slot.is_none() && !value.is_empty() {
                    *slot = Some(String::from_utf8_lossy(&value).into_owned());
                }
            };
            match &field.name.to_ascii_lowercase()[..] {
                b"from" => view.from.extend(addresses(&value)),
                b"to" => view.to.extend(addresses(&value)),
                b"cc" => view.cc.extend(addresses(&value)),
                b"bcc" => view.bcc.extend(addresses(&value)),
                b"x-original-to" => view.x_original_to.push(String::from_utf8_lossy(&value).into_owned()),
                b"subject" if view.subject.is_none() => view.subject = unstructured(&value),
                b"message-id" => first(&mut view.message_id),
                b"date" => first(&mut view.date),
                _ => {}
            }
        }
        view.reply_to_conversation = view.to.iter().find_map(|addr| reply_uuid(addr)).map(String::from);
        view
    }
}

/// An unstructured value (a Subject) as a mail reader shows it: RFC 2047
/// encoded words decoded by mail-parser, other bytes as lossy UTF-8; None
/// when nothing is left.
fn unstructured(value: &[u8]) -> Option<String> {
    // mail-parser reads a value to the end of its line.
    let line = [value, b"\n"].concat();
    match MessageStream::new(&line).parse_unstructured() {
        HeaderValue::Text(text) if !text.trim().is_empty() => Some(text.into_owned()),
        _ => None,
    }
}

/// The conversation uuid of a reply address, as Chatwoot finds it
/// (chatwoot/chatwoot, app/mailboxes/application_mailbox.rb, `reply_uuid_mail?`;
/// app/mailboxes/reply_mailbox.rb takes the same capture): only To addresses
/// count, and the part before the first `@` must match REPLY_EMAIL_UUID_PATTERN,
/// `/^reply\+([0-9a-f]{8}\b-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-\b[0-9a-f]{12})$/i`,
/// whose `\b`s always hold there.
fn reply_uuid(addr: &str) -> Option<&str> {
    let local = addr.split('@').next()?;
    let uuid = local.get(..6).filter(|prefix| prefix.eq_ignore_ascii_case("reply+")).map(|_| &local[6..])?;
    let groups: Vec<&str> = uuid.split('-').collect();
    let hex = |group: &str, len| group.len() == len && group.bytes().all(|b| b.is_ascii_hexdigit());
    (groups.len() == 5 && groups.iter().zip([8, 4, 4, 4, 12]).all(|(group, len)| hex(group, len)))
        .then_some(uuid)
}

/// The addresses (addr-specs) of an address list: `<…>` when there is one,
/// else the text without white space outside quotes; display names,
/// comments and group names dropped; quoted local parts kept as written.
fn addresses(list: &[u8]) -> Vec<String> {
    let mut found = Vec::new();
    let mut bare = Vec::new();
    let mut angle: Option<&[u8]> = None;
    let mut i = 0;
    while i < list.len() {
        match list[i] {
            b'"' => {
                let end = quoted_end(list, i);
                bare.extend_from_slice(&list[i..end]);
                i = end;
                continue;
            }
            b'(' => {
                i = comment_end(list, i);
                continue;
            }
            b'<' => {
                let end = angle_end(list, i);
                angle = Some(&list[i + 1..end]);
                i = end + 1;
                continue;
            }
            // A group's name.
            b':' => bare.clear(),
            b',' | b';' => found.extend(address(&mut bare, angle.take())),
            b if b.is_ascii_whitespace() => {}
            b => bare.push(b),
        }
        i += 1;
    }
    found.extend(address(&mut bare, angle));
    found
}

/// One mailbox's address, from its `<…>` (without a source route such as
/// `@relay:`) or else its bare text, which is taken.
fn address(bare: &mut Vec<u8>, angle: Option<&[u8]>) -> Option<String> {
    let bare = std::mem::take(bare);
    let addr = match angle {
        Some(angle) => {
            let angle = angle.trim_ascii();
            match angle.iter().position(|&b| b == b':') {
                Some(colon) if angle.starts_with(b"@") => angle[colon + 1..].trim_ascii(),
                _ => angle,
            }
        }
        None => &bare[..],
    };
    (!addr.is_empty()).then(|| String::from_utf8_lossy(addr).into_owned())
}

/// Just past the quoted string that opens at `start` (or the end).
fn quoted_end(list: &[u8], start: usize) -> usize {
    let mut i = start + 1;
    while i < list.len() {
        match list[i] {
            b'\\' => i += 1,
            b'"' => return i + 1,
            _ => {}
        }
        i += 1;
    }
    list.len()
}

/// Just past the comment, nested ones included, that opens at `start`.
fn comment_end(list: &[u8], start: usize) -> usize {
    let mut depth = 0;
    let mut i = start;
    while i < list.len() {
        match list[i] {
            b'\\' => i += 1,
            b'(' => depth += 1,
            b')' => {
                depth -= 1;
                if depth == 0 {
                    return i + 1;
                }
            }
            _ => {}
        }
        i += 1;
    }
    list.len()
}

/// The `>` that closes the angle address opening at `start` (or the end).
fn angle_end(list: &[u8], start: usize) -> usize {
    let mut i = start + 1;
    while i < list.len() {
        match list[i] {
            b'"' => {
                i = quoted_end(list, i);
                continue;
            }
            b'>' => return i,
            _ => {}
        }
        i += 1;
    }
    list.len()
}

/// `Name:` with an RFC 5322 field name made of token characters (which
/// rules out JSON's `{"key":`), optionally followed by white space before the
/// colon (obsolete syntax that real mail still has). Gives the name and the
/// colon's position.
fn field_name(line: &[u8]) -> Option<(&[u8], usize)> {
    let colon = line.iter().position(|&b| b == b':')?;
    let name = line[..colon].trim_ascii_end();
    let token = |b: &u8| b.is_ascii_alphanumeric() || b"!#$%&'*+-.^_`|~".contains(b);
    (!name.is_empty() && name.iter().all(token)).then_some((name, colon))
}

fn is_continuation(line: &[u8]) -> bool {
    matches!(line.first(), Some(b' ' | b'\t'))
}

/// The line that starts at `at`, with its line feed if it has one.
pub(crate) fn line_at(message: &[u8], at: usize) -> &[u8] {
    let rest = &message[at..];
    rest.iter().position(|&b| b == b'\n').map_or(rest, |end| &rest[..=end])
}

/// A line without its LF or CRLF.
pub(crate) fn without_eol(line: &[u8]) -> &[u8] {
    let line = line.strip_suffix(b"\n").unwrap_or(line);
    line.strip_suffix(b"\r").unwrap_or(line)
}

/// The length of a leading mbox `From ` envelope line (Exim's default
/// message_prefix, getmail's unixfrom, Postfix's flag F), including its end.
/// Lenient, as MTAs write it in several shapes and one left in would make
/// the message look invalid; but `From : x` (white space before the colon,
/// obsolete syntax) is a header field.
pub fn from_line_len(raw: &[u8]) -> usize {
    let Some(rest) = raw.strip_prefix(b"From ") else {
        return 0;
    };
    if rest.iter().find(|&&b| b != b' ' && b != b'\t') == Some(&b':') {
        return 0;
    }
    line_at(raw, 0).len()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn read(message: &[u8]) -> (Vec<(String, String)>, usize) {
        let mut fields = fields(message);
        let read = fields
            .by_ref()
            .map(|f| {
                (
                    String::from_utf8_lossy(f.name).into_owned(),
                    String::from_utf8_lossy(&f.value()).into_owned(),
                )
            })
            .collect();
        (read, fields.end())
    }

    fn pairs(pairs: &[(&str, &str)]) -> Vec<(String, String)> {
        pairs.iter().map(|(n, v)| (n.to_string(), v.to_string())).collect()
    }

    #[test]
    fn fields_are_unfolded_and_end_with_the_header_section() {
        let message = b"Subject : a\r\n b\r\n\tc\r\nTo:x\r\n\r\nFrom: body\r\n";
        assert_eq!(read(message), (pairs(&[("Subject", "a b\tc"), ("To", "x")]), 27));
        // Ended by a line that is no field, whatever its bytes; or by the end.
        assert_eq!(read(b"A: 1\n\xe9t\xe9\nB: 2\n"), (pairs(&[("A", "1")]), 5));
        assert_eq!(read(b"A: 1\n x"), (pairs(&[("A", "1 x")]), 7));
        // Folded lines before the first field belong to no field.
        assert_eq!(read(b" lead\n\tmore\nA: 1\n"), (pairs(&[("A", "1")]), 17));
        assert_eq!(read(b"{\"a\": 1}\n"), (vec![], 0));
    }

    fn strings(list: &[&str]) -> Vec<String> {
        list.iter().map(|s| s.to_string()).collect()
    }

    #[test]
    fn eight_bit_values_are_shown_not_hidden() {
        let view = RoutingView::of(b"From: J\xfcrgen <j@example.de>\nSubject: \xe9t\xe9\nTo: a@b\n\nbody");
        assert_eq!(view.from, strings(&["j@example.de"]));
        assert_eq!(view.subject.as_deref(), Some("\u{fffd}t\u{fffd}"));
        assert_eq!(view.to, strings(&["a@b"]));
    }

    #[test]
    fn the_subject_is_decoded_as_a_mail_reader_shows_it() {
        let subject = |value: &[u8]| RoutingView::of(&[b"Subject: ", value, b"\n\n"].concat()).subject;
        assert_eq!(subject(b"=?UTF-8?Q?caf=C3=A9?= ok").as_deref(), Some("caf\u{e9} ok"));
        // White space between encoded words is dropped (RFC 2047, 6.2); folding is unfolded.
        assert_eq!(subject(b"=?utf-8?b?SsO8?=\r\n =?utf-8?b?cmdlbg==?=").as_deref(), Some("J\u{fc}rgen"));
        assert_eq!(subject(b"=?iso-8859-1?q?=E9t=E9?=").as_deref(), Some("\u{e9}t\u{e9}"));
        // What is not an encoded word is left as it is.
        assert_eq!(subject(b"=?not encoded").as_deref(), Some("=?not encoded"));
        let view = RoutingView::of(b"Subject: =?utf-8?q??=\nSubject: second\n\n");
        assert_eq!(view.subject.as_deref(), Some("second"));
    }

    #[test]
    fn folded_values_are_unfolded() {
        let view = RoutingView::of(b"To: a@x,\r\n\tB <b@y>\r\nSubject: a long\r\n subject\r\n\r\n");
        assert_eq!(view.to, strings(&["a@x", "b@y"]));
        assert_eq!(view.subject.as_deref(), Some("a long subject"));
    }

    #[test]
    fn an_obsolete_zone_in_the_date_is_just_text() {
        for zone in ["UT", "GMT", "Z", "A"] {
            let message = format!("Date: Mon, 1 Jan 2024 00:00:00 {zone}\nFrom: a@b\n\nFrom: body@x\n");
            let view = RoutingView::of(message.as_bytes());
            assert_eq!(view.date, Some(format!("Mon, 1 Jan 2024 00:00:00 {zone}")));
            assert_eq!(view.from, strings(&["a@b"]));
        }
    }

    #[test]
    fn only_the_header_section_is_read() {
        // After the empty line, or after the body's first line.
        let view = RoutingView::of(b"From: a@b\n\nTo: body@x\nSubject: body\n");
        assert_eq!((view.to, view.subject), (vec![], None));
        let view = RoutingView::of(b"From: a@b\n\xe9t\xe9\nTo: body@x\n");
        assert_eq!(view.to, Vec::<String>::new());
        // A header section that ends the message, after a From_ line.
        let view = RoutingView::of(b"From x Mon Jan  1 00:00:00 2024\nFrom: a@b\nTo: c@d");
        assert_eq!((view.from, view.to), (strings(&["a@b"]), strings(&["c@d"])));
    }

    #[test]
    fn addresses_lose_display_names_comments_and_groups() {
        let view = RoutingView::of(
            b"To: team: \"john doe\"@x, (a comment) y@z (Y), \"Smith, J\" <@relay:j@s>;, undisclosed-recipients:;\n\
              Cc: <c@d>, \"e\\\"f\"@g\nBcc: h @ i\n",
        );
        assert_eq!(view.to, strings(&["\"john doe\"@x", "y@z", "j@s"]));
        assert_eq!(view.cc, strings(&["c@d", "\"e\\\"f\"@g"]));
        assert_eq!(view.bcc, strings(&["h@i"]));
    }

    #[test]
    fn every_x_original_to_and_the_first_of_the_others() {
        let view = RoutingView::of(
            b"X-Original-To: a@b\nSubject:\nSubject: second\nMessage-ID: <1@x>\nx-original-to:  c@d \n",
        );
        assert_eq!(view.x_original_to, strings(&["a@b", "c@d"]));
        assert_eq!(view.subject.as_deref(), Some("second"));
        assert_eq!(view.message_id.as_deref(), Some("<1@x>"));
    }

    #[test]
    fn a_reply_address_in_to_names_the_conversation() {
        let uuid = "7b1c6e2a-1f4d-4a8e-9c3b-2d5e6f7a8b9c";
        let view =
            |to: &str| RoutingView::of(format!("From: a@b\n{to}\n\n").as_bytes()).reply_to_conversation;
        assert_eq!(
            view(&format!("To: x@y, Support <reply+{uuid}@inbox.example.com>")).as_deref(),
            Some(uuid)
        );
        assert_eq!(
            view("To: REPLY+7B1C6E2A-1F4D-4A8E-9C3B-2D5E6F7A8B9C@x").as_deref(),
            Some("7B1C6E2A-1F4D-4A8E-9C3B-2D5E6F7A8B9C")
        );
        // Chatwoot looks at To only, and at the whole local part.
        assert_eq!(view(&format!("Cc: reply+{uuid}@x")), None);
        assert_eq!(view(&format!("To: reply+{uuid}x@x")), None);
        assert_eq!(view(&format!("To: noreply+{uuid}@x")), None);
        assert_eq!(view("To: reply+7b1c6e2a-1f4d-4a8e-9c3b-2d5e6f7a8b9@x"), None);
        assert_eq!(view("To: reply+7b1c6e2a-1f4d-4a8e-9c3b2d5e6f7a8b9c@x"), None);
    }
}
