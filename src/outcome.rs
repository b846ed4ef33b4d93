//! The one answer every message ends in, and how each caller hears it.
//!
//! Every cause maps to one RFC 3463 status code, what it means, what to do
//! about it, and whether it concerns one message or everything a run would
//! send. The code's class (2, 4 or 5) decides the exit code for each caller,
//! and [`exit_table`] renders the whole mapping for the README, the man page
//! and the tests, and [`advice_table`] the advice for the README, so none of
//! them restates it by hand.

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
    pub fn cannot_bounce(self) -> bool {
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

/// What a failure concerns: one message, or every message a run would send
/// (the ingress, its credentials, our own files), so a batch stops on it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Scope {
    Message,
    Run,
}

/// Why a message's journey ended. Each cause has exactly one RFC 3463 code.
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
    ProxyLimit,
    Busy,
    ServerError,
    UnexpectedStatus,
    Config,
    Usage,
    Unreadable,
    RejectFailed,
    StateFailed,
    Interrupted,
    Bug,
    MailboxLogin,
    MailboxFailed,
    TokenRefused,
    MailboxLimit,
    NoRoute,
    Invalid,
    TooLarge,
    Unroutable,
}

impl Cause {
    /// Every cause, in the order the exit table lists them.
    pub const ALL: [Cause; 30] = [
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
        Cause::ProxyLimit,
        Cause::Busy,
        Cause::ServerError,
        Cause::UnexpectedStatus,
        Cause::Config,
        Cause::Usage,
        Cause::Unreadable,
        Cause::RejectFailed,
        Cause::StateFailed,
        Cause::Interrupted,
        Cause::Bug,
        Cause::MailboxLogin,
        Cause::MailboxFailed,
        Cause::TokenRefused,
        Cause::MailboxLimit,
        Cause::NoRoute,
        Cause::Invalid,
        Cause::TooLarge,
        Cause::Unroutable,
    ];

    /// The one table of HTTP answers: what the ingress's status code means.
    /// Every command reads an answer through it, `check`'s probe included.
    pub fn of_http(status: u16) -> Cause {
        match status {
            200..=299 => Cause::Delivered,
            300..=399 => Cause::Redirected,
            401 | 403 => Cause::PasswordRejected,
            404 => Cause::NoIngress,
            413 => Cause::ProxyLimit,
            415 => Cause::MediaTypeRefused,
            408 | 429 | 502..=504 => Cause::Busy,
            500..=599 => Cause::ServerError,
            _ => Cause::UnexpectedStatus,
        }
    }

    /// The RFC 3463 status code.
    pub fn code(self) -> &'static str {
        match self {
            Cause::Delivered | Cause::DryRun => "2.0.0",
            Cause::Refused => "4.4.1",
            Cause::ConnectionLost => "4.4.2",
            Cause::Dns => "4.4.3",
            Cause::Timeout => "4.4.7",
            Cause::Tls => "4.7.5",
            Cause::PasswordRejected | Cause::MailboxLogin | Cause::TokenRefused => "4.7.0",
            Cause::NoIngress | Cause::Redirected | Cause::MediaTypeRefused => "4.3.5",
            Cause::Config | Cause::Usage | Cause::NoRoute => "4.3.5",
            Cause::MailboxLimit => "4.4.5",
            Cause::ProxyLimit => "4.3.4",
            Cause::Busy => "4.3.2",
            Cause::ServerError
            | Cause::Unreadable
            | Cause::RejectFailed
            | Cause::StateFailed
            | Cause::Interrupted
            | Cause::Bug => "4.3.0",
            Cause::UnexpectedStatus | Cause::MailboxFailed => "4.5.0",
            Cause::Invalid => "5.6.0",
            Cause::TooLarge => "5.3.4",
            Cause::Unroutable => "5.1.1",
        }
    }

    pub fn class(self) -> Class {
        match self.code().as_bytes()[0] {
            b'2' => Class::Success,
            b'4' => Class::Temporary,
            _ => Class::Permanent,
        }
    }

    /// Whether every other message would fail the same way now: a batch
    /// (import, watch) stops or backs off instead of trying them all. A
    /// failure that may belong to one message (its size, its content making
    /// Chatwoot fail, a timeout) leaves the others to be tried.
    pub fn scope(self) -> Scope {
        match self {
            Cause::Refused
            | Cause::Dns
            | Cause::Tls
            | Cause::PasswordRejected
            | Cause::NoIngress
            | Cause::Redirected
            | Cause::MediaTypeRefused
            | Cause::Busy
            | Cause::Config
            | Cause::Usage
            | Cause::RejectFailed
            | Cause::StateFailed
            | Cause::Interrupted
            | Cause::Bug
            | Cause::MailboxLogin
            | Cause::MailboxFailed
            | Cause::MailboxLimit
            | Cause::TokenRefused => Scope::Run,
            Cause::Delivered
            | Cause::DryRun
            | Cause::ConnectionLost
            | Cause::Timeout
            | Cause::ProxyLimit
            | Cause::ServerError
            | Cause::UnexpectedStatus
            | Cause::Unreadable
            | Cause::NoRoute
            | Cause::Invalid
            | Cause::TooLarge
            | Cause::Unroutable => Scope::Message,
        }
    }

    /// What the cause means, for the exit table.
    pub fn meaning(self) -> &'static str {
        match self {
            Cause::Delivered => "the ingress answered 2xx, after the whole message was sent",
            Cause::DryRun => "--dry-run: the message is valid; nothing was sent",
            Cause::Refused => "connection refused or host unreachable (after retries)",
            Cause::ConnectionLost => {
                "connection reset or closed mid-request, or an answer before the whole message was sent (after retries)"
            }
            Cause::Dns => "the ingress host name does not resolve",
            Cause::Timeout => "no answer within the timeout",
            Cause::Tls => "TLS failed (certificate invalid, expired or for another host)",
            Cause::PasswordRejected => "HTTP 401 or 403: the ingress rejected the password",
            Cause::NoIngress => "HTTP 404: wrong path, or Chatwoot's ingress is not `relay`",
            Cause::Redirected => "HTTP 3xx: redirects are never followed; use the Location",
            Cause::MediaTypeRefused => "HTTP 415: something rewrote the Content-Type",
            Cause::ProxyLimit => "HTTP 413 for a message within max_size: a proxy's size limit is lower",
            Cause::Busy => "HTTP 408 or 429, or 502, 503 or 504 after retries",
            Cause::ServerError => {
                "HTTP 500 and other 5xx: no ingress password on the server, or it is failing"
            }
            Cause::UnexpectedStatus => "any other HTTP status",
            Cause::Config => "configuration missing or invalid (file, key, value, password file, route)",
            Cause::Usage => "unknown flag or bad argument",
            Cause::Unreadable => "the message (standard input, a file) could not be read",
            Cause::RejectFailed => "a refused message could not be saved in reject_dir",
            Cause::StateFailed => "the journal or the state file could not be written",
            Cause::Interrupted => "stopped by a signal (SIGTERM, SIGINT, SIGHUP, SIGUSR1…)",
            Cause::Bug => "an internal error (a bug: please report it)",
            Cause::MailboxLogin => "watch: the IMAP server refused the login (password, or OAuth2 token)",
            Cause::MailboxFailed => "watch: the IMAP server refused a command (a folder missing…) or broke the protocol",
            Cause::TokenRefused => {
                "watch: no OAuth2 access token: the provider refused (client secret, refresh token, consent) or failed, or token_command did"
            }
            Cause::MailboxLimit => {
                "watch: the IMAP server refused another connection for the account ([LIMIT])"
            }
            Cause::NoRoute => "no [[route]] is for the recipient's domain, and there is no top-level url",
            Cause::Invalid => "not an email: empty, no header section, binary, JSON…",
            Cause::TooLarge => "larger than max_size",
            Cause::Unroutable => "watch: still no [[route]] for the recipient after a day: kept in refused_folder",
        }
    }

    /// What an administrator should do about it: the one place for it,
    /// which the status line, `check` and the documentation all show.
    pub fn advice(self) -> Option<&'static str> {
        Some(match self {
            Cause::Delivered
            | Cause::DryRun
            | Cause::Config
            | Cause::Interrupted
            | Cause::Invalid
            | Cause::Unroutable => return None,
            Cause::Refused => {
                "make sure Chatwoot or its proxy listens at that address and port, with no firewall in between"
            }
            Cause::ConnectionLost => "a proxy or firewall in front of Chatwoot may be cutting requests: see its log",
            Cause::Dns => "check the host name in url, and this machine's DNS (/etc/resolv.conf, /etc/hosts)",
            Cause::Timeout => "Chatwoot or its proxy answered too slowly: see their logs, or raise timeout",
            Cause::Tls => {
                "the certificate must be valid for the host and issued by a CA this machine trusts (set ca_file for a private CA or a self-signed certificate); an https URL to a plain-http port fails like this too"
            }
            Cause::PasswordRejected => {
                "it must be exactly RAILS_INBOUND_EMAIL_PASSWORD on the Chatwoot server (every character counts, + / = included)"
            }
            Cause::NoIngress => {
                "give Chatwoot's base URL as url (the relay path is appended), and run Chatwoot with RAILS_INBOUND_EMAIL_SERVICE=relay"
            }
            Cause::Redirected => "set url to the address the redirect names; redirects are never followed",
            Cause::MediaTypeRefused => "a proxy in front of Chatwoot may be rewriting requests",
            Cause::ProxyLimit => {
                "raise the request size limit of the proxy in front of Chatwoot to max_size (nginx: client_max_body_size), or lower max_size"
            }
            Cause::Busy => "Chatwoot or its proxy is down or overloaded: see their logs",
            Cause::ServerError => {
                "set RAILS_INBOUND_EMAIL_PASSWORD on the Chatwoot server and restart it, or see Chatwoot's log"
            }
            Cause::UnexpectedStatus => {
                "Chatwoot's relay ingress never gives this answer: make sure url reaches Chatwoot, not a proxy or firewall that answers for it"
            }
            Cause::Usage => "see chatwoot-ingress --help",
            Cause::Unreadable => "check that the user chatwoot-ingress runs as can read it",
            Cause::RejectFailed => "make reject_dir writable by the user chatwoot-ingress runs as, and check free space",
            Cause::StateFailed => "make it writable by the user chatwoot-ingress runs as, and check free space",
            Cause::Bug => "please report it",
            Cause::MailboxLogin => {
                "check user and password_file (or the [mailbox.oauth2] table) of the [[mailbox]]; chatwoot-ingress check shows each step"
            }
            Cause::MailboxFailed => "see the server's answer; check the folder names of the [[mailbox]]",
            Cause::TokenRefused => {
                "check the [mailbox.oauth2] table as the reason says (a new refresh token: chatwoot-ingress oauth2 authorize --mailbox NAME); chatwoot-ingress check shows each step"
            }
            Cause::MailboxLimit => {
                "the server allows the account only so many connections at once: lower max_connections of the [[mailbox]] (Gmail allows 15 in all), or close other clients' sessions"
            }
            Cause::NoRoute => "add the domain to a route's domains, or set a top-level url",
            Cause::TooLarge => "raise max_size if Chatwoot and its proxy accept larger messages",
        })
    }
}

/// How a message's journey ended: a cause, a one-line reason, and where a
/// refused message was saved.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Outcome {
    pub cause: Cause,
    reason: String,
    /// What to do, when more is known than the cause's own advice.
    fix: Option<String>,
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
        Outcome { cause, reason, fix: None, saved_to: None }
    }

    /// The same outcome, noting where the refused message was saved.
    pub fn saved_as(self, path: PathBuf) -> Outcome {
        Outcome { saved_to: Some(path), ..self }
    }

    /// The same outcome with a fix more precise than its cause's advice.
    pub fn with_fix(self, fix: impl Into<String>) -> Outcome {
        Outcome { fix: Some(fix.into()), ..self }
    }

    /// What an administrator should do about it.
    pub fn fix(&self) -> Option<&str> {
        self.fix.as_deref().or(self.cause.advice())
    }

    /// The same cause with more said about it.
    pub fn context(self, more: impl fmt::Display) -> Outcome {
        Outcome { reason: format!("{} {more}", self.reason), ..self }
    }

    pub fn class(&self) -> Class {
        self.cause.class()
    }

    /// What happened, without the status code and the advice.
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

/// The status line: code, reason, advice, and where a refusal was saved.
impl fmt::Display for Outcome {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{} {}", self.cause.code(), self.reason)?;
        if let Some(advice) = self.fix().filter(|_| self.class() == Class::Temporary) {
            write!(f, ": {advice}")?;
        }
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

/// What to do about each temporary cause, as Markdown for the README: the
/// same text the status line and `check` show.
pub fn advice_table() -> String {
    let mut table = String::from("| status | when | what to do |\n|---|---|---|\n");
    for cause in Cause::ALL {
        if let Some(advice) = cause.advice().filter(|_| cause.class() == Class::Temporary) {
            table.push_str(&format!("| {} | {} | {advice} |\n", cause.code(), cause.meaning()));
        }
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
    fn temporary_codes_are_never_bounced_by_qmail() {
        // qmail treats 64, 65, 70, 76, 77, 78, 100 and 112 as hard.
        let hard = [64, 65, 70, 76, 77, 78, 100, 112];
        assert!(!hard.contains(&Mta::Qmail.exit_code(Class::Temporary)));
        assert!(!hard.contains(&Mta::Sysexits.exit_code(Class::Temporary)));
    }

    #[test]
    fn reasons_are_one_line() {
        let outcome = Outcome::new(Cause::Bug, "first\nsecond\r\nthird");
        assert_eq!(outcome.to_string(), "4.3.0 first second third: please report it");
    }

    #[test]
    fn every_http_status_has_one_cause_and_only_2xx_delivers() {
        for status in 100..=599 {
            let cause = Cause::of_http(status);
            assert_eq!(cause == Cause::Delivered, (200..300).contains(&status), "{status}");
            assert_ne!(cause.class(), Class::Permanent, "an HTTP answer never bounces mail: {status}");
        }
    }
}
