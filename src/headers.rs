//! The header section read from raw bytes: no decoding, no UTF-8
//! assumption and no parsing of values, so an 8-bit Subject or a Date with
//! an obsolete zone is just text. The validator, the X-Original-To rewrite
//! and `--dry-run` all read the header section through [`fields`], so they
//! agree on where it ends.

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

/// `Name:` with an RFC 5322 field name made of token characters (which
/// rules out JSON's `{"key":`), optionally followed by white space before the
/// colon (obsolete syntax that real mail still has). Gives the name and the
/// colon's position.
pub(crate) fn field_name(line: &[u8]) -> Option<(&[u8], usize)> {
    let colon = line.iter().position(|&b| b == b':')?;
    let name = line[..colon].trim_ascii_end();
    let token = |b: &u8| b.is_ascii_alphanumeric() || b"!#$%&'*+-.^_`|~".contains(b);
    (!name.is_empty() && name.iter().all(token)).then_some((name, colon))
}

pub(crate) fn is_continuation(line: &[u8]) -> bool {
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
}
