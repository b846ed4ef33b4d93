//! The mbox separator: which `From ` lines start a message in an mbox file.
//! Only import reads mbox files; a single message's leading From_ line
//! (an MTA's envelope line) is [`crate::message::from_line_len`]'s.

use crate::headers::without_eol;

/// Whether `line` is a real mbox From_ separator, as mutt's `is_from()`
/// reads one: `From `, a return path (`<>`, `MAILER-DAEMON`, a quoted local
/// part with spaces, or none), then an asctime date, `Mon Jan  1 00:00:00
/// 2024`, with optional seconds and up to two zone tokens (`+0000`, `UTC`,
/// `MET DST`) before the year, or the year before the time. A body line such
/// as `From the desk of the CEO` is not one.
pub fn is_from_line(line: &[u8]) -> bool {
    let Some(rest) = without_eol(line).strip_prefix(b"From ") else {
        return false;
    };
    let mut s = rest.trim_ascii_start();
    if !is_day_name(s) {
        // The return path: up to white space outside quotes.
        let Some(end) = return_path_len(s) else {
            return false;
        };
        s = s[end..].trim_ascii_start();
        // Pipermail archives obscure it as `me at example.org`.
        if let Some(domain) = s.strip_prefix(b"at ") {
            s = next_word(domain.trim_ascii_start());
        }
        if !is_day_name(s) {
            return false;
        }
    }
    s = next_word(s);
    // A login name that is a day name: `From Mon Mon Jan ...`.
    if is_day_name(s) {
        s = next_word(s);
    }
    let mut words = s.split(|b| b.is_ascii_whitespace()).filter(|w| !w.is_empty());
    let (Some(month), Some(day)) = (words.next(), words.next()) else {
        return false;
    };
    if !MONTHS.iter().any(|m| month.eq_ignore_ascii_case(m)) || !number_in(day, 1, 2, 1..=31) {
        return false;
    }
    match words.next() {
        Some(word) if is_time(word) => {
            let mut word = words.next();
            for _ in 0..2 {
                if word.is_some_and(|w| w[0].is_ascii_alphabetic() || w[0] == b'+' || w[0] == b'-') {
                    word = words.next();
                }
            }
            word.is_some_and(is_year)
        }
        Some(word) if is_year(word) => words.next().is_some_and(is_time),
        _ => false,
    }
}

const MONTHS: [&[u8]; 12] =
    [b"jan", b"feb", b"mar", b"apr", b"may", b"jun", b"jul", b"aug", b"sep", b"oct", b"nov", b"dec"];

/// A three-letter day name followed by white space.
fn is_day_name(s: &[u8]) -> bool {
    const DAYS: [&[u8]; 7] = [b"mon", b"tue", b"wed", b"thu", b"fri", b"sat", b"sun"];
    s.len() > 3 && s[3].is_ascii_whitespace() && DAYS.iter().any(|d| s[..3].eq_ignore_ascii_case(d))
}

/// The length of the return path at the start of `s`, which must be followed
/// by white space; `\` escapes a character and quotes may hold white space.
fn return_path_len(s: &[u8]) -> Option<usize> {
    let mut quoted = false;
    let mut i = 0;
    while i < s.len() {
        match s[i] {
            b'\\' => i += 1,
            b'"' => quoted = !quoted,
            b if b.is_ascii_whitespace() && !quoted => return Some(i),
            _ => {}
        }
        i += 1;
    }
    None
}

/// `s` after its first word and the white space that follows it.
fn next_word(s: &[u8]) -> &[u8] {
    let end = s.iter().position(u8::is_ascii_whitespace).unwrap_or(s.len());
    s[end..].trim_ascii_start()
}

/// `HH:MM` or `HH:MM:SS` (one-digit hours too).
fn is_time(word: &[u8]) -> bool {
    let mut parts = word.split(|&b| b == b':');
    let (Some(h), Some(m), s, None) = (parts.next(), parts.next(), parts.next(), parts.next()) else {
        return false;
    };
    number_in(h, 1, 2, 0..=23) && number_in(m, 2, 2, 0..=59) && s.is_none_or(|s| number_in(s, 2, 2, 0..=60))
}

fn is_year(word: &[u8]) -> bool {
    matches!(word.len(), 2 | 4) && word.iter().all(u8::is_ascii_digit)
}

/// `min..=max` digits whose value is in `range`.
fn number_in(word: &[u8], min: usize, max: usize, range: std::ops::RangeInclusive<u32>) -> bool {
    (min..=max).contains(&word.len())
        && word.iter().all(u8::is_ascii_digit)
        && range.contains(&word.iter().fold(0, |n, d| n * 10 + u32::from(d - b'0')))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn is_from_line_is_true_of_real_separators_only() {
        for line in [
            "From MAILER-DAEMON Mon Jan  1 00:00:00 2024",
            "From alice@example.com Mon Jan  1 00:00:00 2024\n",
            "From alice@example.com Mon Jan  1 00:00:00 2024\r\n",
            "From - Mon Jan  1 00:00:00 2024",
            "From <> Mon Jan  1 00:00:00 2024",
            "From  Mon Jan  1 00:00:00 2024",
            "From \"john doe\"@example.com Mon Jan  1 00:00:00 2024",
            "From \"a\\\" b\"@example.com Mon Jan  1 00:00:00 2024",
            "From 1234@xxx Mon Jan 01 00:00:00 +0000 2024",
            "From a@b Wed Aug  2 00:39:12 MET DST 1995",
            "From a@b Mon Jan  1 00:00:00 UTC 2024",
            "From a@b Mon Jan 1 00:00 2024",
            "From a@b Mon Jan 1 2024 00:00:00",
            "From a@b Mon Jan 1 2024 00:00:00 +0100",
            "From a@b mon JAN  1 00:00:00 2024 remote from x",
            "From me at example.org  Mon Jan  1 00:00:00 2024",
            "From Mon Mon Jan  1 00:00:00 2024",
        ] {
            assert!(is_from_line(line.as_bytes()), "{line:?}");
        }
        for line in [
            "From the desk of the CEO",
            "From here on, a body line",
            "From: a@b Mon Jan  1 00:00:00 2024",
            ">From a@b Mon Jan  1 00:00:00 2024",
            "from a@b Mon Jan  1 00:00:00 2024",
            "From a@b",
            "From a@b Mon Jan  1 00:00:00",
            "From a@b Mon Jan  1 00:00:00 twenty",
            "From a@b Monday Jan  1 00:00:00 2024",
            "From a@b Mon Foo  1 00:00:00 2024",
            "From a@b Mon Jan 32 00:00:00 2024",
            "From a@b Mon Jan  1 24:00:00 2024",
            "From a@b Mon Jan  1 0000 2024",
            "From \"unterminated Mon Jan  1 00:00:00 2024",
        ] {
            assert!(!is_from_line(line.as_bytes()), "{line:?}");
        }
        assert!(!is_from_line(b"From a@b Mon Jan  1 00:00:00 \xff2024"));
        assert!(is_from_line(b"From \xff@b Mon Jan  1 00:00:00 2024"));
    }
}
