//! The one answer every run ends in, and how each caller hears it.
//!
//! Every cause maps to one RFC 3463 status code. The code's class (2, 4 or 5)
//! decides the exit code for each caller, and [`exit_table`] renders the
//! whole mapping for the README, the man page and the tests, so none of them
//! restates it by hand.

use std::fmt;
use std::io::{self, Write};
use std::path::PathBuf;
use std::process::ExitCode;

/// The program that runs us, which decides how an outcome becomes an exit code.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, clap::ValueEnum)]
pub enum Mta {
    /// sysexits(3): 0, 75 (temporary), 65 (permanent).
    #[default]
    Sysexits,
    Postfix,
    Exim,
    Qmail,
    Opensmtpd,
    Getmail,
    Fetchmail,
}

impl Mta {
    /// Callers that cannot bounce: they retry a failed message forever.
    fn cannot_bounce(self) -> bool {
        matches!(self, Mta::Getmail | Mta::Fetchmail)
    }

    fn exit_code(self, class: Class) -> u8 {
        match (class, self) {
            (Class::Success, _) => 0,
            (Class::Temporary, Mta::Qmail) => 111,
            (Class::Permanent, Mta::Qmail) => 100,
            // EX_TEMPFAIL: Postfix, Exim and OpenSMTPD defer on it.
            (Class::Temporary, _) => 75,
            // EX_DATAERR: Postfix, Exim and OpenSMTPD bounce on it.
            (Class::Permanent, _) => 65,
        }
    }
}

/// Whether the caller should consider the message done, keep it, or give up.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Class {
    Success,
    Temporary,
    Permanent,
}

/// Why a run ended. Each cause has exactly one RFC 3463 status code.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Cause {
    Delivered,
    DryRun,
    Refused,
    Dns,
    ConnectionLost,
    Tls,
    Timeout,
    PasswordRejected,
    NoIngress,
    Redirected,
    MediaTypeRefused,
    Busy,
    ServerError,
    UnexpectedStatus,
    Config,
    Usage,
    InputError,
    Interrupted,
    Bug,
    Invalid,
    TooLarge,
}

impl Cause {
    /// Every cause, in the order the exit table lists them.
    pub const ALL: [Cause; 21] = [
        Cause::Delivered,
        Cause::DryRun,
        Cause::Refused,
        Cause::Dns,
        Cause::ConnectionLost,
        Cause::Tls,
        Cause::Timeout,
        Cause::PasswordRejected,
        Cause::NoIngress,
        Cause::Redirected,
        Cause::MediaTypeRefused,
        Cause::Busy,
        Cause::ServerError,
        Cause::UnexpectedStatus,
        Cause::Config,
        Cause::Usage,
        Cause::InputError,
        Cause::Interrupted,
        Cause::Bug,
        Cause::Invalid,
        Cause::TooLarge,
    ];

    /// The RFC 3463 status code.
    pub fn code(self) -> &'static str {
        match self {
            Cause::Delivered | Cause::DryRun => "2.0.0",
            Cause::Refused => "4.4.1",
            Cause::ConnectionLost => "4.4.2",
            Cause::Dns => "4.4.3",
            Cause::Timeout => "4.4.7",
            Cause::Tls => "4.7.5",
            Cause::PasswordRejected => "4.7.0",
            Cause::NoIngress | Cause::Redirected | Cause::MediaTypeRefused => "4.3.5",
            Cause::Config | Cause::Usage => "4.3.5",
            Cause::Busy => "4.3.2",
            Cause::ServerError | Cause::InputError | Cause::Interrupted | Cause::Bug => "4.3.0",
            Cause::UnexpectedStatus => "4.5.0",
            Cause::Invalid => "5.6.0",
            Cause::TooLarge => "5.3.4",
        }
    }

    pub fn class(self) -> Class {
        match self.code().as_bytes()[0] {
            b'2' => Class::Success,
            b'4' => Class::Temporary,
            _ => Class::Permanent,
        }
    }

    /// What the cause means, for the exit table.
    pub fn meaning(self) -> &'static str {
        match self {
            Cause::Delivered => "the ingress answered 2xx",
            Cause::DryRun => "--dry-run: the message is valid; nothing was sent",
            Cause::Refused => "connection refused (after retries)",
            Cause::ConnectionLost => "connection reset or closed mid-request (after retries)",
            Cause::Dns => "the ingress host name does not resolve",
            Cause::Timeout => "no answer within --timeout",
            Cause::Tls => "TLS failed (certificate invalid, expired or for another host)",
            Cause::PasswordRejected => "HTTP 401 or 403: the ingress rejected the password",
            Cause::NoIngress => "HTTP 404: wrong path, or Chatwoot's ingress is not `relay`",
            Cause::Redirected => "HTTP 3xx: redirects are never followed; use the Location",
            Cause::MediaTypeRefused => "HTTP 415: something rewrote the Content-Type",
            Cause::Busy => "HTTP 408 or 429, or 502, 503 or 504 after retries",
            Cause::ServerError => {
                "HTTP 500 and other 5xx: no ingress password on the server, or it is failing"
            }
            Cause::UnexpectedStatus => "any other HTTP status",
            Cause::Config => "configuration missing or invalid (file, key, value, password file)",
            Cause::Usage => "unknown flag or bad argument",
            Cause::InputError => {
                "standard input could not be read, or a refusal could not be saved in --reject-dir"
            }
            Cause::Interrupted => "stopped by SIGTERM, SIGINT or SIGHUP",
            Cause::Bug => "an internal error (a bug: please report it)",
            Cause::Invalid => "not an email: empty, no or broken header section, binary, JSON…",
            Cause::TooLarge => "larger than max_size, or HTTP 413 from the ingress",
        }
    }
}

/// How a run ended: a cause, a one-line reason, and where a refused message was saved.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Outcome {
    pub cause: Cause,
    reason: String,
    /// Set when a permanent refusal was written to the reject directory.
    pub saved_to: Option<PathBuf>,
}

impl Outcome {
    pub fn new(cause: Cause, reason: impl Into<String>) -> Outcome {
        // Callers log one line: fold anything that would start a second one.
        let reason = reason
            .into()
            .split(|c: char| c.is_control())
            .filter(|s| !s.is_empty())
            .collect::<Vec<_>>()
            .join(" ");
        Outcome { cause, reason, saved_to: None }
    }

    /// The same outcome, noting where the refused message was saved.
    pub fn saved_as(self, path: PathBuf) -> Outcome {
        Outcome { saved_to: Some(path), ..self }
    }

    pub fn class(&self) -> Class {
        self.cause.class()
    }

    pub fn reason(&self) -> &str {
        &self.reason
    }

    /// The exit code for `mta`. Besides a 2xx, only a refusal that is safe in
    /// the reject directory exits 0, and only for callers that cannot bounce.
    pub fn exit_code(&self, mta: Mta) -> u8 {
        if self.class() == Class::Permanent && self.saved_to.is_some() && mta.cannot_bounce() {
            return 0;
        }
        mta.exit_code(self.class())
    }

    /// Tell the caller: a failure is one line on stderr that begins with the
    /// status code; success is silent on stderr (getmail counts any stderr
    /// output as a failed delivery), so its news goes to stdout.
    pub fn report(&self, mta: Mta, verbose: bool, warnings: &[String]) -> ExitCode {
        let code = self.exit_code(mta);
        // Write errors are ignored: a closed stream must not turn into a panic.
        if code != 0 {
            let _ = writeln!(io::stderr(), "{self}");
        } else {
            let mut out = io::stdout().lock();
            if verbose || self.class() == Class::Permanent {
                let _ = writeln!(out, "{self}");
            }
            for warning in warnings {
                let _ = writeln!(out, "warning: {warning}");
            }
        }
        ExitCode::from(code)
    }
}

impl fmt::Display for Outcome {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{} {}", self.cause.code(), self.reason)?;
        if let Some(path) = &self.saved_to {
            write!(f, " (saved as {})", path.display())?;
        }
        Ok(())
    }
}

/// The callers that share a column of exit codes in the exit table.
pub const EXIT_COLUMNS: [(&str, Mta); 3] = [
    ("sysexits, postfix, exim, opensmtpd", Mta::Sysexits),
    ("qmail", Mta::Qmail),
    ("getmail, fetchmail", Mta::Getmail),
];

/// One row of the exit table: a status code, what it means, and the exit
/// status for each of [`EXIT_COLUMNS`], in order.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ExitRow {
    pub code: &'static str,
    pub meaning: &'static str,
    pub exits: Vec<String>,
}

/// The exit table, one row per cause in [`Cause::ALL`] order: the single
/// source that [`exit_table`] and the man page render.
pub fn exit_rows() -> Vec<ExitRow> {
    Cause::ALL
        .into_iter()
        .map(|cause| ExitRow {
            code: cause.code(),
            meaning: cause.meaning(),
            exits: EXIT_COLUMNS
                .iter()
                .map(|&(_, mta)| {
                    let exit = mta.exit_code(cause.class());
                    if cause.class() == Class::Permanent && mta.cannot_bounce() {
                        format!("{exit} (0 once saved by --reject-dir)")
                    } else {
                        exit.to_string()
                    }
                })
                .collect(),
        })
        .collect()
}

/// The exit-code table as Markdown, the single source for README and man page.
pub fn exit_table() -> String {
    let mut table = String::from("| status | meaning |");
    for (name, _) in EXIT_COLUMNS {
        table.push_str(&format!(" {name} |"));
    }
    table.push_str("\n|---|---|");
    table.push_str(&"---|".repeat(EXIT_COLUMNS.len()));
    table.push('\n');
    for row in exit_rows() {
        table.push_str(&format!("| {} | {} |", row.code, row.meaning));
        for exit in &row.exits {
            table.push_str(&format!(" {exit} |"));
        }
        table.push('\n');
    }
    table
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_success_exits_zero_unless_a_refusal_was_saved_for_a_non_bouncing_caller() {
        let mtas = [
            Mta::Sysexits,
            Mta::Postfix,
            Mta::Exim,
            Mta::Qmail,
            Mta::Opensmtpd,
            Mta::Getmail,
            Mta::Fetchmail,
        ];
        for cause in Cause::ALL {
            for mta in mtas {
                let mut outcome = Outcome::new(cause, "x");
                assert_eq!(outcome.exit_code(mta) == 0, cause.class() == Class::Success);
                outcome.saved_to = Some("/r/1.eml".into());
                let zero = cause.class() == Class::Success
                    || (cause.class() == Class::Permanent && mta.cannot_bounce());
                assert_eq!(outcome.exit_code(mta) == 0, zero, "{cause:?} {mta:?}");
            }
        }
    }

    #[test]
    fn reasons_are_one_line() {
        let outcome = Outcome::new(Cause::Bug, "first\nsecond\r\nthird");
        assert_eq!(outcome.to_string(), "4.3.0 first second third");
    }

    #[test]
    fn temporary_codes_are_never_bounced_by_qmail() {
        // qmail treats 64, 65, 70, 76, 77, 78, 100 and 112 as hard.
        let hard = [64, 65, 70, 76, 77, 78, 100, 112];
        assert!(!hard.contains(&Mta::Qmail.exit_code(Class::Temporary)));
        assert!(!hard.contains(&Mta::Sysexits.exit_code(Class::Temporary)));
    }
}
