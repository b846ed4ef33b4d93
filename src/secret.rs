//! Secrets (the ingress password, IMAP passwords, client secrets, tokens)
//! and the one scrubber that keeps them out of every line we print.
//!
//! Plumbing like `sys` and `tls`: it imports nothing of ours, so the
//! protocol clients may use it.

use std::fmt;

use base64::Engine as _;

/// A secret. It has no `Display`, and `Debug` hides it.
#[derive(Clone, PartialEq, Eq)]
pub struct Password(String);

impl Password {
    pub fn new(text: impl Into<String>) -> Password {
        Password(text.into())
    }

    pub fn expose(&self) -> &str {
        &self.0
    }
}

impl fmt::Debug for Password {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("Password(****)")
    }
}

/// `text` with every spelling of every secret replaced by `****`: as it is,
/// as an IMAP or JSON quoted string has it (`\"`, `\\`), form- and
/// percent-encoded (a token endpoint echoing its form), and base64 (a SASL
/// exchange quoted back). Empty secrets are ignored.
pub fn scrub(text: &str, secrets: &[&str]) -> String {
    let mut text = text.to_string();
    for secret in secrets.iter().filter(|s| !s.is_empty()) {
        for spelling in spellings(secret) {
            if !spelling.is_empty() {
                text = text.replace(&spelling, "****");
            }
        }
    }
    text
}

/// The ways a secret can be written in a server's or provider's answer,
/// longest first, so a shorter one never leaves the tail of a longer one.
fn spellings(secret: &str) -> Vec<String> {
    let quoted = secret.replace('\\', "\\\\").replace('"', "\\\"");
    let json = serde_json::to_string(secret).unwrap_or_default();
    let json = json.trim_start_matches('"').trim_end_matches('"').to_string();
    let form: String = form_urlencoded::byte_serialize(secret.as_bytes()).collect();
    let percent = form.replace('+', "%20");
    let lower = |s: &str| {
        // %2F and %2f are the same byte.
        let mut out = String::with_capacity(s.len());
        let mut hex = 0;
        for c in s.chars() {
            if c == '%' {
                hex = 2;
                out.push(c);
            } else if hex > 0 {
                hex -= 1;
                out.push(c.to_ascii_lowercase());
            } else {
                out.push(c);
            }
        }
        out
    };
    let base64 = base64::engine::general_purpose::STANDARD.encode(secret);
    let mut all = vec![
        secret.to_string(),
        quoted,
        json,
        lower(&form),
        form,
        lower(&percent),
        percent,
        base64.trim_end_matches('=').to_string(),
    ];
    all.sort_by_key(|s| std::cmp::Reverse(s.len()));
    all.dedup();
    all
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn debug_hides_it() {
        assert!(!format!("{:?}", Password::new("s3cr3t")).contains("s3cr3t"));
    }

    #[test]
    fn every_spelling_is_scrubbed() {
        let secret = r#"Imap"Pass\word-77 &x=/+"#;
        let b64 = base64::engine::general_purpose::STANDARD.encode(secret);
        let lines = [
            format!("a NO [AUTHENTICATIONFAILED] LOGIN \"user\" \"{}\"", r#"Imap\"Pass\\word-77 &x=/+"#),
            format!("{{\"error\":\"bad\",\"echo\":{}}}", serde_json::to_string(secret).unwrap()),
            "client_secret=Imap%22Pass%5Cword-77+%26x%3D%2F%2B&grant_type=x".to_string(),
            "client_secret=Imap%22Pass%5cword-77%20%26x%3d%2f%2b".to_string(),
            format!("AUTHENTICATE echo {b64}"),
            format!("plain {secret} here"),
        ];
        for line in &lines {
            let clean = scrub(line, &[secret, ""]);
            assert!(clean.contains("****"), "{line} -> {clean}");
            for part in ["Pass", "word-77"] {
                assert!(!clean.contains(part), "{line} -> {clean}");
            }
        }
        assert_eq!(scrub("nothing here", &["tok"]), "nothing here");
    }
}
