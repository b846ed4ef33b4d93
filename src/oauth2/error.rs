//! Why there is no token: what happened, in one line with the provider's
//! own words (secrets scrubbed). What to do about it is the caller's to
//! say: it knows where the settings came from.

use std::process::ExitStatus;
use std::time::Duration;

use std::os::unix::process::ExitStatusExt;

use crate::http::{self, Kind};

/// Why there is no token (or no sign-in).
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum Error {
    /// The provider said no, in OAuth2's words.
    #[error("{0}")]
    Refused(Refusal),
    /// The endpoint at `host` (host:port) gave no answer.
    #[error("{}", unreachable(host, failure, *waited))]
    Unreachable { host: String, failure: http::Failure, waited: Duration },
    /// The endpoint at `host` gave an answer that is not a usable one.
    #[error("{}", answer.describe(host))]
    BadAnswer { host: String, answer: BadAnswer },
    /// A secret of the settings could not be read: `reason` says where it
    /// is, never what it holds.
    #[error("{reason}")]
    Secret { secret: Secret, reason: String },
    /// A token command failed.
    #[error("{}", failure.describe(program))]
    Command { program: String, failure: CommandFailure },
    /// The user did not finish a sign-in.
    #[error("{0}")]
    NotSignedIn(NotSignedIn),
    /// The browser's sign-in could not be waited for (the loopback port,
    /// random numbers): our own trouble.
    #[error("cannot wait for the browser: {0}")]
    Browser(String),
    /// The HTTP client could not be set up.
    #[error("{0}")]
    Setup(http::SetupError),
}

/// An OAuth2 error answer (RFC 6749 5.2), or a sign-in's error redirect
/// (RFC 6749 4.1.2.1).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Refusal {
    /// What was asked for.
    pub request: Request,
    /// The OAuth2 error code: invalid_grant, invalid_client…
    pub code: String,
    /// The provider's description, on one line, secrets replaced by `****`.
    pub description: String,
    /// The token service's host:port and its HTTP status; None when the
    /// browser was sent back with the error.
    pub by: Option<(String, u16)>,
}

impl std::fmt::Display for Refusal {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let said = if self.description.is_empty() {
            self.code.clone()
        } else {
            format!("{}: {}", self.code, self.description)
        };
        match &self.by {
            Some((host, status)) => write!(f, "the token service at {host} refused (HTTP {status}): {said}"),
            None => write!(f, "the sign-in failed: {said}"),
        }
    }
}

/// What a request to the provider was for, which decides the advice on a
/// refusal.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Request {
    ClientCredentials,
    RefreshToken,
    /// A user's sign-in (device code, authorization code).
    SignIn,
}

/// Which secret could not be read.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Secret {
    ClientSecret,
    RefreshToken,
}

/// An answer that is not a usable OAuth2 one.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum BadAnswer {
    /// A 2xx whose body is not a JSON object.
    NotJson { status: u16 },
    /// A redirect, never followed; where to, without its query.
    Redirected { status: u16, to: String },
    /// A 5xx without an OAuth2 error.
    Failing { status: u16 },
    /// Any other status without an OAuth2 error.
    NotOAuth2 { status: u16 },
    /// A token answer without a usable access_token.
    NoAccessToken,
    /// A device authorization answer without a code to enter.
    NoDeviceCode,
}

impl BadAnswer {
    fn describe(&self, host: &str) -> String {
        let place = format!("the token service at {host}");
        match self {
            BadAnswer::NotJson { status } => format!("{place} answered HTTP {status} without a JSON object"),
            BadAnswer::Redirected { status, to } => {
                format!("{place} redirected (HTTP {status}) to {to}; redirects are never followed")
            }
            BadAnswer::Failing { status } => format!("{place} failed (HTTP {status})"),
            BadAnswer::NotOAuth2 { status } => {
                format!("{place} answered HTTP {status}, not an OAuth2 answer")
            }
            BadAnswer::NoAccessToken => format!("{place} answered without a usable access_token"),
            BadAnswer::NoDeviceCode => {
                format!("the device authorization endpoint at {host} answered without a code to enter")
            }
        }
    }
}

fn unreachable(host: &str, failure: &http::Failure, waited: Duration) -> String {
    let (place, detail) = (format!("the token service at {host}"), &failure.detail);
    match failure.kind {
        Kind::Timeout => format!("no answer from {place} within {}s", waited.as_secs()),
        Kind::Tls => format!("TLS with {place} failed: {detail}"),
        Kind::HandshakeEnded => format!("TLS with {place} failed: the server ended the handshake ({detail})"),
        Kind::Dns | Kind::Refused => format!("cannot connect to {place}: {detail}"),
        Kind::Lost => format!("the connection to {place} was lost: {detail}"),
    }
}

/// How a token command failed.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum CommandFailure {
    /// It could not be started.
    CannotRun(String),
    /// It printed no token in time, and was stopped.
    TimedOut(Duration),
    /// It exited with a failure. What it wrote on standard error is not
    /// kept: it could hold a secret.
    Failed(ExitStatus),
    /// Its output could not be read.
    Unreadable(String),
    /// It exited, but a process it started keeps its output open.
    LeftRunning,
    /// What it printed is not a token.
    Printed(Printed),
}

impl CommandFailure {
    fn describe(&self, program: &str) -> String {
        match self {
            CommandFailure::CannotRun(reason) => format!("cannot run token_command {program}: {reason}"),
            CommandFailure::TimedOut(limit) => {
                format!(
                    "token_command {program} printed no token within {}s, and was stopped",
                    limit.as_secs()
                )
            }
            CommandFailure::Failed(status) => {
                let how = match (status.code(), status.signal()) {
                    (Some(code), _) => format!("exited with status {code}"),
                    (None, Some(signal)) => format!("was killed by signal {signal}"),
                    _ => "failed".into(),
                };
                format!("token_command {program} {how} (what it wrote on standard error is not shown: it could hold a secret)")
            }
            CommandFailure::Unreadable(reason) => {
                format!("cannot read what token_command {program} printed: {reason}")
            }
            CommandFailure::LeftRunning => {
                format!("token_command {program} exited, but a process it started keeps its output open")
            }
            CommandFailure::Printed(printed) => format!("token_command {program} {printed}"),
        }
    }
}

/// What a token command printed instead of a token; never quotes it.
#[derive(Clone, Copy, Debug, PartialEq, Eq, thiserror::Error)]
pub enum Printed {
    #[error("printed no token")]
    Nothing,
    #[error("printed a first line that is not a token ({0} bytes, not shown)")]
    NotAToken(usize),
    #[error("printed something like JSON that is not ({0} bytes, not shown)")]
    NotJson(usize),
    #[error("printed JSON without a usable access_token")]
    NoAccessToken,
}

/// A sign-in the user did not finish.
#[derive(Clone, Copy, Debug, PartialEq, Eq, thiserror::Error)]
pub enum NotSignedIn {
    /// The device code expired first.
    #[error("the code expired before the sign-in")]
    CodeExpired,
    /// The browser was not sent back within this time.
    #[error("no sign-in within {} minutes", .0.as_secs() / 60)]
    NoSignIn(Duration),
}
