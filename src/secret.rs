//! Secrets (the ingress password, IMAP passwords, client secrets, tokens),
//! the one reader of the files that hold them, and the one scrubber that
//! keeps them out of every line we print.
//!
//! Plumbing like `sys` and `tls`: it imports nothing of ours but `sys`, so
//! the protocol clients may use it.

use std::fmt;
use std::fs;
use std::io;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};

use base64::Engine as _;

use crate::sys::{io_reason, whoami};

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

/// Why a file gave no secret. A file that does not exist is not named: a
/// value that names no file may be the secret itself, written where its
/// file's name belongs.
#[derive(Debug, thiserror::Error)]
pub enum FileError {
    #[error("the {what} file given by {given} does not exist ({})", io_reason(.error))]
    Missing { what: &'static str, given: String, error: io::Error },
    #[error("cannot read the {what} file {}: {} (running as {})", .path.display(), io_reason(.error), whoami())]
    Unreadable { what: &'static str, path: PathBuf, error: io::Error },
    #[error("the {what} file {} is empty", .path.display())]
    Empty { what: &'static str, path: PathBuf },
}

/// The secret in the first line of the file at `path` (a password, a
/// client secret, a refresh token): a byte order mark before it and the
/// line end after it are not part of it, white space is. `what` names the
/// secret and `given` where the file's name came from, in errors; a file
/// that every user may read adds a warning.
pub fn read_file(
    path: &Path,
    what: &'static str,
    given: &str,
    warnings: &mut Vec<String>,
) -> Result<Password, FileError> {
    let bytes = match fs::read(path) {
        Ok(bytes) => bytes,
        Err(error) if fs::symlink_metadata(path).is_err() => {
            return Err(FileError::Missing { what, given: given.to_string(), error })
        }
        Err(error) => return Err(FileError::Unreadable { what, path: path.to_path_buf(), error }),
    };
    warnings.extend(world_readable(path, what));
    let text = String::from_utf8_lossy(&bytes);
    // Windows editors put a byte order mark first.
    let text = text.strip_prefix('\u{feff}').unwrap_or(&text);
    let first_line = text.lines().next().unwrap_or("").trim_end_matches('\r');
    if first_line.is_empty() {
        return Err(FileError::Empty { what, path: path.to_path_buf() });
    }
    Ok(Password::new(first_line))
}

/// A warning when every user may read `path`, which holds a `what`.
pub fn world_readable(path: &Path, what: &str) -> Option<String> {
    let mode = fs::metadata(path).ok()?.permissions().mode();
    (mode & 0o004 != 0)
        .then(|| format!("{} holds a {what} and is readable by every user: chmod o-r it", path.display()))
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
    fn a_secret_file_is_its_first_line_without_bom_or_line_end() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("secret");
        let read = |content: &str, mode: u32| {
            fs::write(&path, content).unwrap();
            fs::set_permissions(&path, fs::Permissions::from_mode(mode)).unwrap();
            let mut warnings = Vec::new();
            let read = read_file(&path, "client secret", "client_secret_file", &mut warnings);
            (read.map(|p| p.expose().to_string()).map_err(|e| e.to_string()), warnings)
        };
        for (content, expected) in [
            ("\u{feff}s3cr3t+/=\r\nignored\n", "s3cr3t+/="),
            ("s3cr3t", "s3cr3t"),
            (" spaced \n", " spaced "),
            ("cr-only\r", "cr-only"),
        ] {
            assert_eq!(read(content, 0o600), (Ok(expected.to_string()), vec![]), "{content:?}");
        }
        let (empty, _) = read("\u{feff}\r\nsecond line\n", 0o600);
        assert_eq!(empty.unwrap_err(), format!("the client secret file {} is empty", path.display()));
        let (_, warnings) = read("s3cr3t\n", 0o644);
        assert!(warnings[0].contains("holds a client secret and is readable by every user"), "{warnings:?}");

        let mut warnings = Vec::new();
        let missing = dir.path().join("s3cr3t42");
        let e = read_file(&missing, "password", "--password-file", &mut warnings).unwrap_err();
        assert!(matches!(e, FileError::Missing { .. }));
        assert_eq!(
            e.to_string(),
            "the password file given by --password-file does not exist (no such file or directory)"
        );
        let e = read_file(dir.path(), "password", "--password-file", &mut warnings).unwrap_err();
        assert!(matches!(e, FileError::Unreadable { .. }) && e.to_string().contains("is a directory"), "{e}");
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
