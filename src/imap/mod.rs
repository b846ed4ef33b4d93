//! The IMAP client `watch` uses: one blocking session per thread, a deadline
//! on every connect and command, TLS unless the server is on loopback, and
//! only what a fetcher needs (IMAP4rev1, RFC 3501; IDLE, RFC 2177; MOVE,
//! RFC 6851; UIDPLUS, RFC 4315; LITERAL+, RFC 7888; SASL-IR, RFC 4959;
//! XOAUTH2; OAUTHBEARER, RFC 7628).
//!
//! `conn` carries bytes under deadlines, `parse` reads responses from
//! them, `utf7` spells folder names the way servers do, and [`Session`]
//! speaks the protocol. Secrets (passwords, tokens) go to the server and
//! nowhere else: not into errors, not into Debug output.

mod conn;
mod parse;
mod utf7;

#[cfg(test)]
mod tests;

use std::collections::BTreeMap;
use std::fmt;
use std::net::{SocketAddr, ToSocketAddrs};
use std::os::fd::BorrowedFd;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::{Duration, Instant};

use base64::engine::general_purpose::STANDARD as BASE64;
use base64::Engine as _;
use rustls::pki_types::ServerName;

use crate::secret::Password;
use crate::sys::{self, io_reason};
use crate::tls;
use conn::{Conn, Failure};
use parse::{Body, Condition, Fetch, ParseError, Response, State, Text, Untagged};

/// How often an IDLE looks at its stop flag when nothing wakes it.
const IDLE_TICK: Duration = Duration::from_millis(250);
/// How often it does with a wake descriptor: only to show it is alive.
const IDLE_BEAT: Duration = Duration::from_secs(60);
/// A server in IDLE says something (Dovecot: "* OK Still here" every 2
/// minutes) long before this; a connection this quiet is dead.
const DEFAULT_SILENCE: Duration = Duration::from_secs(31 * 60);
/// UID sets are cut at this length: servers limit a command line's length
/// (RFC 7162 advises clients to stay under 8192 bytes).
const MAX_SET: usize = 4000;
/// ALERTs kept for [`Session::take_alerts`].
const MAX_ALERTS: usize = 8;
/// A command must be answered whole within this many timeouts, however
/// steadily the server keeps sending (endless untagged lines); fetching a
/// message gets more time for its size (see [`Session::fetch_one`]).
const COMMAND_LIMIT_FACTOR: u32 = 5;
/// The slowest rate a message's bytes may come at before its fetch counts
/// as hung.
const SLOWEST_BYTES_PER_SECOND: u64 = 16 * 1024;
/// UIDs one SEARCH may return: far more than a folder holds, far less than
/// a lying server could make us keep.
const MAX_SEARCH: usize = 10_000_000;
/// What a message's literal may exceed its announced RFC822.SIZE by (a
/// server may count line endings differently).
const SIZE_SLACK: u64 = 64 * 1024;

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Security {
    /// TLS from the first byte (imaps, port 993).
    Implicit,
    /// STARTTLS after the greeting; never falls back to cleartext.
    StartTls,
    /// Cleartext: only to a loopback address.
    None,
}

#[derive(Clone, Debug)]
pub struct Endpoint {
    pub host: String,
    pub port: u16,
    pub security: Security,
    pub ca_file: Option<PathBuf>,
    /// For connecting, and for each command's answer (the wait for a
    /// server that has stopped sending).
    pub timeout: Duration,
}

impl Endpoint {
    /// host:port, for messages.
    pub fn place(&self) -> String {
        sys::host_port(&self.host, self.port)
    }
}

#[derive(Clone, Debug)]
pub enum Login {
    Password { user: String, password: Password },
    XOAuth2 { user: String, token: Password },
    OAuthBearer { user: String, token: Password },
}

#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Capabilities {
    pub idle: bool,
    pub move_: bool,
    pub uidplus: bool,
    /// The AUTH= mechanisms, upper case.
    pub auth: Vec<String>,
    pub login_disabled: bool,
    pub starttls: bool,
    pub sasl_ir: bool,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Selected {
    pub uidvalidity: u32,
    pub uidnext: Option<u32>,
    pub exists: u32,
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Fetched {
    pub uid: u32,
    /// RFC822.SIZE.
    pub size: u64,
    pub flags: Vec<String>,
    pub body: Option<Vec<u8>>,
}

/// What ended an IDLE.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Woken {
    NewMail,
    Timeout,
    Stopped,
}

/// What went wrong, by kind: the engine and `check` decide what each
/// kind means for a message and what to do about it.
#[derive(Debug, thiserror::Error)]
pub enum ImapError {
    #[error("{0}")]
    Dns(String),
    #[error("{0}")]
    Refused(String),
    /// The TLS handshake or the certificate failed.
    #[error("{0}")]
    Tls(String),
    /// TLS was asked for but cannot be had (no STARTTLS offered, a
    /// pre-authenticated greeting), or cleartext to a remote host: refused
    /// rather than sending anything in clear.
    #[error("{0}")]
    Cleartext(String),
    #[error("{0}")]
    Timeout(String),
    /// The connection closed or reset, or the server said BYE.
    #[error("{0}")]
    Lost(String),
    /// NO (or BAD) to LOGIN or AUTHENTICATE, with the server's code and
    /// text, every spelling of the secret scrubbed from it.
    #[error("the IMAP server refused the login: {}{text}", bracketed(.code))]
    LoginRefused { code: Option<String>, text: String },
    #[error("the IMAP server refused {command}: {}{text}", bracketed(.code))]
    No { command: String, code: Option<String>, text: String },
    #[error("the IMAP server called {command} invalid: {text}")]
    Bad { command: String, text: String },
    #[error("IMAP protocol error: {0}")]
    Protocol(String),
}

fn bracketed(code: &Option<String>) -> String {
    code.as_ref().map(|code| format!("[{code}] ")).unwrap_or_default()
}

impl ImapError {
    /// The response code (RFC 5530: OVERQUOTA, LIMIT, EXPUNGEISSUED…) of a
    /// NO, upper case.
    pub fn code(&self) -> Option<&str> {
        match self {
            ImapError::No { code, .. } | ImapError::LoginRefused { code, .. } => code.as_deref(),
            _ => None,
        }
    }

    /// The same error with every secret in its text replaced by `****`.
    fn scrubbed(self, secrets: &[&str]) -> ImapError {
        let clean = |text: String| crate::secret::scrub(&text, secrets);
        match self {
            ImapError::Dns(text) => ImapError::Dns(clean(text)),
            ImapError::Refused(text) => ImapError::Refused(clean(text)),
            ImapError::Tls(text) => ImapError::Tls(clean(text)),
            ImapError::Cleartext(text) => ImapError::Cleartext(clean(text)),
            ImapError::Timeout(text) => ImapError::Timeout(clean(text)),
            ImapError::Lost(text) => ImapError::Lost(clean(text)),
            ImapError::LoginRefused { code, text } => ImapError::LoginRefused { code, text: clean(text) },
            ImapError::No { command, code, text } => ImapError::No { command, code, text: clean(text) },
            ImapError::Bad { command, text } => ImapError::Bad { command, text: clean(text) },
            ImapError::Protocol(text) => ImapError::Protocol(clean(text)),
        }
    }
}

/// The longest a command may take in all with a session of `timeout`,
/// when `bytes` of message come with its answer.
pub fn command_limit(timeout: Duration, bytes: u64) -> Duration {
    timeout * COMMAND_LIMIT_FACTOR
        + Duration::from_secs(bytes.saturating_add(SIZE_SLACK) / SLOWEST_BYTES_PER_SECOND)
}

/// A command argument.
enum Arg<'a> {
    /// Sent as it is: a sequence set, a parenthesized list, criteria.
    Raw(&'a str),
    /// A string: quoted, or a literal when it cannot be quoted.
    Str(&'a [u8]),
}

type Handler<'h> = &'h mut dyn FnMut(Untagged, Vec<u8>) -> Result<(), ImapError>;

fn ignore(_: Untagged, _: Vec<u8>) -> Result<(), ImapError> {
    Ok(())
}

/// A logged-in (or not yet) connection to one IMAP server.
pub struct Session {
    conn: Conn,
    endpoint: Endpoint,
    capabilities: Capabilities,
    literal_plus: bool,
    tag: u32,
    authenticated: bool,
    /// Messages in the selected folder, as the server last said.
    exists: u32,
    /// EXISTS grew since the caller last looked (search, NOOP, IDLE).
    new_mail: bool,
    silence: Duration,
    alerts: Vec<String>,
    /// The most one command may take in all (see [`COMMAND_LIMIT_FACTOR`]).
    limit: Duration,
    /// A command failed mid-exchange: the connection is out of step.
    broken: bool,
}

impl fmt::Debug for Session {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Session")
            .field("server", &self.place())
            .field("security", &self.endpoint.security)
            .field("authenticated", &self.authenticated)
            .field("capabilities", &self.capabilities)
            .finish_non_exhaustive()
    }
}

impl Session {
    /// Resolve, connect (each address in turn), TLS as `endpoint` says,
    /// the greeting, and the capabilities.
    pub fn connect(endpoint: &Endpoint) -> Result<Session, ImapError> {
        let host = endpoint.host.as_str();
        let place = endpoint.place();
        let addrs: Vec<SocketAddr> = (host, endpoint.port)
            .to_socket_addrs()
            .map_err(|e| ImapError::Dns(format!("cannot resolve {host}: {}", io_reason(&e))))?
            .collect();
        if addrs.is_empty() {
            return Err(ImapError::Dns(format!("cannot resolve {host}: no address")));
        }
        if endpoint.security == Security::None && !addrs.iter().all(|addr| addr.ip().is_loopback()) {
            return Err(ImapError::Cleartext(format!(
                "refusing IMAP without TLS to {host}: only a loopback address may be used in cleartext"
            )));
        }
        let tls = match endpoint.security {
            Security::None => None,
            Security::Implicit | Security::StartTls => {
                let config = tls::client_config(endpoint.ca_file.as_deref())
                    .map_err(|e| ImapError::Tls(e.to_string()))?;
                let name = ServerName::try_from(host.to_string())
                    .map_err(|_| ImapError::Tls(format!("{host} is not a host name TLS can verify")))?;
                Some((Arc::new(config), name))
            }
        };

        let mut failure = None;
        let mut socket = None;
        for addr in &addrs {
            match conn::tcp(addr, endpoint.timeout) {
                Ok(connected) => {
                    socket = Some(connected);
                    break;
                }
                Err(e)
                    if matches!(e.kind(), std::io::ErrorKind::TimedOut | std::io::ErrorKind::WouldBlock) =>
                {
                    failure = Some(ImapError::Timeout(format!(
                        "cannot connect to {place} ({addr}) within {:?}",
                        endpoint.timeout
                    )));
                }
                Err(e) => {
                    failure = Some(ImapError::Refused(format!(
                        "cannot connect to {place} ({addr}): {}",
                        io_reason(&e)
                    )))
                }
            }
        }
        let Some(socket) = socket else {
            return Err(failure.unwrap_or_else(|| ImapError::Refused(format!("cannot connect to {place}"))));
        };

        let since = Instant::now();
        let conn = match (&tls, endpoint.security) {
            (Some((config, name)), Security::Implicit) => {
                Conn::tls(socket, config.clone(), name.clone(), since + endpoint.timeout)
                    .map_err(|f| failed(f, &place, "the TLS handshake", endpoint.timeout))?
            }
            _ => Conn::plain(socket).map_err(|e| ImapError::Lost(format!("{place}: {}", io_reason(&e))))?,
        };
        let mut session = Session {
            conn,
            endpoint: endpoint.clone(),
            capabilities: Capabilities::default(),
            literal_plus: false,
            tag: 0,
            authenticated: false,
            exists: 0,
            new_mail: false,
            silence: DEFAULT_SILENCE,
            alerts: Vec::new(),
            broken: false,
            limit: endpoint.timeout * COMMAND_LIMIT_FACTOR,
        };
        let known = session.greeting(since)?;
        if !known {
            session.run("CAPABILITY", &[], &mut ignore)?;
        }
        match tls {
            Some((config, name)) if endpoint.security == Security::StartTls => {
                session.start_tls(config, name)
            }
            _ => Ok(session),
        }
    }

    /// `* OK`, `* PREAUTH` or `* BYE`; whether it listed the capabilities.
    fn greeting(&mut self, since: Instant) -> Result<bool, ImapError> {
        let (response, _) = self.read(since, "the greeting")?;
        let text = match response {
            Response::Untagged(Untagged::Condition(Condition::Ok, text)) => text,
            Response::Untagged(Untagged::Condition(Condition::PreAuth, text)) => {
                self.authenticated = true;
                text
            }
            Response::Untagged(Untagged::Condition(Condition::Bye, text)) => {
                return Err(ImapError::Refused(format!(
                    "{} refused the connection: {}",
                    self.place(),
                    text.text
                )))
            }
            _ => return Err(ImapError::Protocol(format!("{} did not greet with * OK", self.place()))),
        };
        Ok(self.capabilities_from(&text))
    }

    /// STARTTLS, the handshake, and the capabilities again (those sent in
    /// cleartext may have been tampered with).
    fn start_tls(
        mut self,
        config: Arc<rustls::ClientConfig>,
        name: ServerName<'static>,
    ) -> Result<Session, ImapError> {
        let place = self.place();
        if self.authenticated {
            return Err(ImapError::Cleartext(format!(
                "{place} pre-authenticated the connection, so STARTTLS is impossible: refusing cleartext"
            )));
        }
        if !self.capabilities.starttls {
            return Err(ImapError::Cleartext(format!("{place} does not offer STARTTLS: refusing cleartext")));
        }
        self.run("STARTTLS", &[], &mut ignore).map_err(|e| match e {
            ImapError::No { text, .. } | ImapError::Bad { text, .. } => {
                ImapError::Cleartext(format!("{place} refused STARTTLS: {text}"))
            }
            other => other,
        })?;
        // Bytes after the OK came in cleartext, before TLS: an injection.
        if self.conn.pending() {
            return Err(ImapError::Protocol(format!("{place} sent data after STARTTLS's OK, in cleartext")));
        }
        let timeout = self.endpoint.timeout;
        let conn = Conn::tls(self.conn.into_socket(), config, name, Instant::now() + timeout)
            .map_err(|f| failed(f, &place, "the TLS handshake", timeout))?;
        let mut session = Session { conn, capabilities: Capabilities::default(), ..self };
        session.run("CAPABILITY", &[], &mut ignore)?;
        Ok(session)
    }

    pub fn capabilities(&self) -> &Capabilities {
        &self.capabilities
    }

    /// How long the server may say nothing during IDLE before the
    /// connection counts as lost (31 minutes unless a test sets it).
    #[cfg(test)]
    pub fn set_idle_silence(&mut self, silence: Duration) {
        self.silence = silence;
    }

    /// The `[ALERT]`s the server sent outside answers to commands, which
    /// RFC 3501 says must reach a person (the last few; taking empties).
    pub fn take_alerts(&mut self) -> Vec<String> {
        std::mem::take(&mut self.alerts)
    }

    pub fn login(&mut self, login: &Login) -> Result<(), ImapError> {
        if self.authenticated {
            return Ok(());
        }
        let place = self.place();
        let offers = |mechanism: &str| self.capabilities.auth.iter().any(|offered| offered == mechanism);
        let (secret, attempt) = match login {
            Login::Password { user, password } => {
                let secret = password.expose();
                if !self.capabilities.login_disabled {
                    (secret, Attempt::Login(user))
                } else if offers("PLAIN") {
                    (secret, Attempt::Sasl("PLAIN", format!("\0{user}\0{secret}")))
                } else {
                    return Err(ImapError::LoginRefused {
                        code: None,
                        text: format!(
                            "{place} takes no password on this connection (LOGINDISABLED, and no AUTH=PLAIN)"
                        ),
                    });
                }
            }
            Login::XOAuth2 { user, token } => {
                let token = token.expose();
                (token, Attempt::Sasl("XOAUTH2", format!("user={user}\x01auth=Bearer {token}\x01\x01")))
            }
            Login::OAuthBearer { user, token } => {
                let token = token.expose();
                // RFC 5801's saslname: ',' and '=' escaped.
                let user = user.replace('=', "=3D").replace(',', "=2C");
                let (host, port) = (&self.endpoint.host, self.endpoint.port);
                let message =
                    format!("n,a={user},\x01host={host}\x01port={port}\x01auth=Bearer {token}\x01\x01");
                (token, Attempt::Sasl("OAUTHBEARER", message))
            }
        };
        let result = match &attempt {
            Attempt::Login(user) => {
                self.run("LOGIN", &[Arg::Str(user.as_bytes()), Arg::Str(secret.as_bytes())], &mut ignore)
            }
            Attempt::Sasl(mechanism, _) if !offers(mechanism) => Err(ImapError::LoginRefused {
                code: None,
                text: format!("{place} does not offer AUTH={mechanism}"),
            }),
            Attempt::Sasl(mechanism, message) => self.authenticate(mechanism, message.as_bytes()),
        };
        let initial = match &attempt {
            Attempt::Sasl(_, message) => BASE64.encode(message.as_bytes()),
            Attempt::Login(_) => String::new(),
        };
        let secrets = [secret, initial.as_str()];
        // An [ALERT] is shown to a person: one that quotes the login back
        // must not show the secret either.
        for alert in &mut self.alerts {
            *alert = crate::secret::scrub(alert, &secrets);
        }
        let text = result.map_err(|e| {
            match e {
                ImapError::No { code, text, .. } => ImapError::LoginRefused { code, text },
                ImapError::Bad { text, .. } => ImapError::LoginRefused { code: None, text },
                other => other,
            }
            .scrubbed(&secrets)
        })?;
        self.authenticated = true;
        if !self.capabilities_from(&text) {
            self.run("CAPABILITY", &[], &mut ignore)?;
        }
        Ok(())
    }

    /// AUTHENTICATE `mechanism` with `message` as the initial response
    /// (in the command with SASL-IR). A further challenge is the server's
    /// error report (RFC 7628 3.2.2): answered empty, and its status added
    /// to the NO that follows.
    fn authenticate(&mut self, mechanism: &str, message: &[u8]) -> Result<Text, ImapError> {
        let command = "AUTHENTICATE";
        let tag = self.next_tag();
        let mut encoded = BASE64.encode(message);
        if encoded.is_empty() {
            encoded.push('=');
        }
        let mut sent = self.capabilities.sasl_ir;
        let line = if sent {
            format!("{tag} {command} {mechanism} {encoded}\r\n")
        } else {
            format!("{tag} {command} {mechanism}\r\n")
        };
        self.send(line.as_bytes(), command)?;
        let mut status = None;
        let mut challenges = 0;
        let since = Instant::now();
        loop {
            let (response, raw) = self.read(since, command)?;
            match response {
                Response::Continue(_) if !sent => {
                    sent = true;
                    self.send(format!("{encoded}\r\n").as_bytes(), command)?;
                }
                Response::Continue(challenge) => {
                    challenges += 1;
                    if challenges > 2 {
                        return Err(ImapError::Protocol(format!(
                            "{} keeps challenging AUTHENTICATE",
                            self.place()
                        )));
                    }
                    status = status.or_else(|| challenge_status(&challenge));
                    // PLAIN has no error challenge: cancel.
                    let answer: &[u8] = if mechanism == "PLAIN" { b"*\r\n" } else { b"\r\n" };
                    self.send(answer, command)?;
                }
                Response::Tagged { tag: answered, state, mut text } if answered == tag => {
                    if let Some(status) = status {
                        text.text = format!("{} (status {status})", text.text);
                    }
                    return self.outcome(command, state, text);
                }
                Response::Tagged { .. } => return Err(self.unknown_tag(command)),
                Response::Untagged(untagged) => self.untagged(untagged, raw, &mut ignore)?,
            }
        }
    }

    pub fn select(&mut self, folder: &str) -> Result<Selected, ImapError> {
        let wire = utf7::encode(folder);
        let (mut uidvalidity, mut uidnext) = (None, None);
        self.exists = 0;
        let mut bad_code = None;
        self.run("SELECT", &[Arg::Str(wire.as_bytes())], &mut |untagged, _| {
            if let Untagged::Condition(Condition::Ok, Text { code: Some(code), .. }) = untagged {
                let target = match code.name.as_str() {
                    "UIDVALIDITY" => &mut uidvalidity,
                    "UIDNEXT" => &mut uidnext,
                    _ => return Ok(()),
                };
                match code.args.trim().parse::<u32>() {
                    Ok(n) => *target = Some(n),
                    Err(_) => bad_code = Some(code.name),
                }
            }
            Ok(())
        })?;
        // What SELECT reported is not news.
        self.new_mail = false;
        if let Some(code) = bad_code {
            return Err(ImapError::Protocol(format!("{} sent a bad {code} for {folder}", self.place())));
        }
        let Some(uidvalidity) = uidvalidity else {
            return Err(ImapError::Protocol(format!("{} sent no UIDVALIDITY for {folder}", self.place())));
        };
        Ok(Selected { uidvalidity, uidnext, exists: self.exists })
    }

    /// Create `folder`; false if it was there already.
    pub fn create(&mut self, folder: &str) -> Result<bool, ImapError> {
        let wire = utf7::encode(folder);
        match self.run("CREATE", &[Arg::Str(wire.as_bytes())], &mut ignore) {
            Ok(_) => Ok(true),
            Err(ImapError::No { code: Some(code), .. }) if code == "ALREADYEXISTS" => Ok(false),
            // Not every server says why.
            Err(refused @ ImapError::No { .. }) => match self.folder_exists(folder)? {
                true => Ok(false),
                false => Err(refused),
            },
            Err(other) => Err(other),
        }
    }

    /// Whether `folder` exists and can be selected.
    pub fn folder_exists(&mut self, folder: &str) -> Result<bool, ImapError> {
        let wire = utf7::encode(folder);
        let inbox = folder.eq_ignore_ascii_case("INBOX");
        let mut found = false;
        self.run("LIST", &[Arg::Str(b""), Arg::Str(wire.as_bytes())], &mut |untagged, _| {
            if let Untagged::List { flags, name } = untagged {
                // The name may hold LIST's wildcards: only an exact match counts.
                let same = if inbox {
                    name.eq_ignore_ascii_case(b"INBOX")
                } else {
                    utf7::decode(&name).is_some_and(|name| name == folder)
                };
                let usable = !flags.iter().any(|flag| {
                    flag.eq_ignore_ascii_case("\\NonExistent") || flag.eq_ignore_ascii_case("\\Noselect")
                });
                found |= same && usable;
            }
            Ok(())
        })?;
        Ok(found)
    }

    /// (messages, unseen) in `folder`.
    pub fn status(&mut self, folder: &str) -> Result<(u32, u32), ImapError> {
        let wire = utf7::encode(folder);
        let (mut messages, mut unseen) = (None, None);
        self.run(
            "STATUS",
            &[Arg::Str(wire.as_bytes()), Arg::Raw("(MESSAGES UNSEEN)")],
            &mut |untagged, _| {
                if let Untagged::Status { items, .. } = untagged {
                    for (name, value) in items {
                        match name.as_str() {
                            "MESSAGES" => messages = u32::try_from(value).ok(),
                            "UNSEEN" => unseen = u32::try_from(value).ok(),
                            _ => {}
                        }
                    }
                }
                Ok(())
            },
        )?;
        match (messages, unseen) {
            (Some(messages), Some(unseen)) => Ok((messages, unseen)),
            _ => {
                Err(ImapError::Protocol(format!("{} gave no MESSAGES and UNSEEN for {folder}", self.place())))
            }
        }
    }

    /// The UIDs matching `criteria` (e.g. `UID 5:* NOT DELETED`), sorted.
    pub fn uid_search(&mut self, criteria: &str) -> Result<Vec<u32>, ImapError> {
        if criteria.is_empty() || !criteria.bytes().all(|b| (0x20..0x7f).contains(&b)) {
            return Err(ImapError::Protocol("search criteria must be one line of printable ASCII".into()));
        }
        // The search sees everything that arrived so far.
        self.new_mail = false;
        let mut uids = Vec::new();
        self.run("UID SEARCH", &[Arg::Raw(criteria)], &mut |untagged, _| {
            if let Untagged::Search(found) = untagged {
                uids.extend(found);
                if uids.len() > MAX_SEARCH {
                    return Err(ImapError::Protocol(format!(
                        "a SEARCH answer of more than {MAX_SEARCH} UIDs"
                    )));
                }
            }
            Ok(())
        })?;
        uids.sort_unstable();
        uids.dedup();
        Ok(uids)
    }

    /// UID, flags and size of each of `uids` still in the folder, by UID.
    pub fn fetch_meta(&mut self, uids: &[u32]) -> Result<Vec<Fetched>, ImapError> {
        let wanted = sorted(uids);
        let mut found: BTreeMap<u32, (Option<Vec<String>>, Option<u64>)> = BTreeMap::new();
        for set in uid_sets(&wanted) {
            self.run(
                "UID FETCH",
                &[Arg::Raw(&set), Arg::Raw("(UID FLAGS RFC822.SIZE)")],
                &mut |untagged, _| {
                    if let Untagged::Fetch(Fetch { uid: Some(uid), flags, size, .. }) = untagged {
                        if wanted.binary_search(&uid).is_ok() {
                            // Another client's flag change comes as a FETCH of its own.
                            let entry = found.entry(uid).or_default();
                            entry.0 = flags.or(entry.0.take());
                            entry.1 = size.or(entry.1);
                        }
                    }
                    Ok(())
                },
            )?;
        }
        found
            .into_iter()
            .map(|(uid, (flags, size))| match size {
                Some(size) => Ok(Fetched { uid, size, flags: flags.unwrap_or_default(), body: None }),
                None => {
                    Err(ImapError::Protocol(format!("{} sent no RFC822.SIZE for UID {uid}", self.place())))
                }
            })
            .collect()
    }

    /// Message `uid` whole, with its flags, if the folder still has it
    /// and the server sends its body; None if it does not (expunged
    /// meanwhile, or a server that answers OK without it). `announced` is
    /// its RFC822.SIZE: a literal much larger is refused before it is read,
    /// and the fetch may take longer the larger the message.
    pub fn fetch_one(&mut self, uid: u32, announced: u64) -> Result<Option<Fetched>, ImapError> {
        let saved = (self.limit, self.conn.literal_cap);
        self.limit = command_limit(self.endpoint.timeout, announced);
        self.conn.literal_cap = announced.saturating_add(SIZE_SLACK);
        let set = uid.to_string();
        let mut found = None;
        let items = "(UID FLAGS RFC822.SIZE BODY.PEEK[])";
        let result = self.run("UID FETCH", &[Arg::Raw(&set), Arg::Raw(items)], &mut |untagged, raw| {
            if let Untagged::Fetch(Fetch { uid: Some(fetched), flags, size, body: Some(body), .. }) = untagged
            {
                if fetched == uid && found.is_none() {
                    let body = bytes(body, raw);
                    let size = size.unwrap_or(body.len() as u64);
                    found = Some(Fetched { uid, size, flags: flags.unwrap_or_default(), body: Some(body) });
                }
            }
            Ok(())
        });
        (self.limit, self.conn.literal_cap) = saved;
        result?;
        Ok(found)
    }

    /// Up to `len` bytes of message `uid` from `offset` on (fewer at its
    /// end, none past it): a message too large to hold, in pieces.
    pub fn fetch_part(&mut self, uid: u32, offset: u64, len: u64) -> Result<Vec<u8>, ImapError> {
        if len == 0 {
            return Ok(Vec::new());
        }
        let set = uid.to_string();
        let items = format!("(UID BODY.PEEK[]<{offset}.{len}>)");
        let mut part = None;
        self.run("UID FETCH", &[Arg::Raw(&set), Arg::Raw(&items)], &mut |untagged, raw| {
            if let Untagged::Fetch(Fetch { uid: Some(fetched), body: Some(body), .. }) = untagged {
                if fetched == uid {
                    part = Some(bytes(body, raw));
                }
            }
            Ok(())
        })?;
        part.ok_or_else(|| ImapError::No {
            command: "UID FETCH".into(),
            code: None,
            text: format!("no message with UID {uid} in the folder"),
        })
    }

    /// Add `flags` (`\Seen`, `$Forwarded`…) to `uids`.
    pub fn add_flags(&mut self, uids: &[u32], flags: &[&str]) -> Result<(), ImapError> {
        if let Some(bad) = flags.iter().find(|flag| {
            let atom = flag.strip_prefix('\\').unwrap_or(flag);
            atom.is_empty() || !atom.bytes().all(parse::atom_char)
        }) {
            return Err(ImapError::Protocol(format!("{bad:?} is not an IMAP flag")));
        }
        if flags.is_empty() {
            return Ok(());
        }
        let list = format!("({})", flags.join(" "));
        for set in uid_sets(&sorted(uids)) {
            self.run(
                "UID STORE",
                &[Arg::Raw(&set), Arg::Raw("+FLAGS.SILENT"), Arg::Raw(&list)],
                &mut ignore,
            )?;
        }
        Ok(())
    }

    /// Move `uids` to `folder`, which must exist (`NO [TRYCREATE]`
    /// otherwise), with MOVE (RFC 6851): the caller checks the capability.
    pub fn uid_move(&mut self, uids: &[u32], folder: &str) -> Result<(), ImapError> {
        let wire = utf7::encode(folder);
        for set in uid_sets(&sorted(uids)) {
            self.run("UID MOVE", &[Arg::Raw(&set), Arg::Str(wire.as_bytes())], &mut ignore)?;
        }
        Ok(())
    }

    /// Copy `uids` to `folder`, which must exist; without MOVE, a move is
    /// a copy and a [`Session::delete`].
    pub fn copy(&mut self, uids: &[u32], folder: &str) -> Result<(), ImapError> {
        let wire = utf7::encode(folder);
        for set in uid_sets(&sorted(uids)) {
            self.run("UID COPY", &[Arg::Raw(&set), Arg::Str(wire.as_bytes())], &mut ignore)?;
        }
        Ok(())
    }

    /// Delete `uids`: \Deleted, and expunged if the server has UIDPLUS;
    /// without it they stay flagged (a plain EXPUNGE would also remove what
    /// other clients flagged). Run again, it finishes what an interrupted
    /// one began.
    pub fn delete(&mut self, uids: &[u32]) -> Result<(), ImapError> {
        for set in uid_sets(&sorted(uids)) {
            self.run(
                "UID STORE",
                &[Arg::Raw(&set), Arg::Raw("+FLAGS.SILENT"), Arg::Raw("(\\Deleted)")],
                &mut ignore,
            )?;
            if self.capabilities.uidplus {
                self.run("UID EXPUNGE", &[Arg::Raw(&set)], &mut ignore)?;
            }
        }
        Ok(())
    }

    /// IDLE until new mail, `until`, or `stop()`: asked every 250 ms, or,
    /// given `wake` (readable once a stop is requested), when it is
    /// readable and once a minute, so that an idle watcher costs no CPU.
    /// Always ends with DONE and the server's OK, so the session stays
    /// usable. New mail that arrived before is reported at once.
    pub fn idle(
        &mut self,
        until: Instant,
        stop: &dyn Fn() -> bool,
        wake: Option<BorrowedFd<'_>>,
    ) -> Result<Woken, ImapError> {
        if std::mem::take(&mut self.new_mail) {
            return Ok(Woken::NewMail);
        }
        if stop() {
            return Ok(Woken::Stopped);
        }
        if Instant::now() >= until {
            return Ok(Woken::Timeout);
        }
        if !self.capabilities.idle {
            return Err(ImapError::Protocol(format!("{} does not offer IDLE", self.place())));
        }
        let command = "IDLE";
        let tag = self.next_tag();
        self.send(format!("{tag} {command}\r\n").as_bytes(), command)?;
        let since = Instant::now();
        loop {
            let (response, raw) = self.read(since, command)?;
            match response {
                Response::Continue(_) => break,
                Response::Untagged(untagged) => self.untagged(untagged, raw, &mut ignore)?,
                Response::Tagged { tag: answered, state, text } if answered == tag => {
                    self.outcome(command, state, text)?;
                    return Err(ImapError::Protocol(format!("{} ended IDLE before it began", self.place())));
                }
                Response::Tagged { .. } => return Err(self.unknown_tag(command)),
            }
        }

        let mut recent = false;
        let mut ended = false;
        let woken = loop {
            if self.new_mail || recent {
                break Woken::NewMail;
            }
            if stop() {
                break Woken::Stopped;
            }
            let now = Instant::now();
            if now >= until {
                break Woken::Timeout;
            }
            if now.duration_since(self.conn.last_heard) > self.silence {
                return Err(ImapError::Lost(format!(
                    "{} sent nothing for {:?} during IDLE",
                    self.place(),
                    self.silence
                )));
            }
            let tick = if wake.is_some() { IDLE_BEAT } else { IDLE_TICK };
            let quiet = self.silence.saturating_sub(now.duration_since(self.conn.last_heard));
            if !self.conn.readable(wake, tick.min(until - now).min(quiet)) {
                continue;
            }
            let Some(raw) =
                self.conn.poll(IDLE_TICK.min(until - now)).map_err(|f| self.failed(f, command))?
            else {
                continue;
            };
            match parse::parse(&raw).map_err(|e| self.garbage(&e, &raw, command))? {
                Response::Untagged(Untagged::Recent(n)) => recent |= n > 0,
                Response::Untagged(untagged) => self.untagged(untagged, raw, &mut ignore)?,
                // The server ended IDLE by itself (some do after 30 minutes).
                Response::Tagged { tag: answered, state, text } if answered == tag => {
                    self.outcome(command, state, text)?;
                    ended = true;
                    break if self.new_mail { Woken::NewMail } else { Woken::Timeout };
                }
                Response::Tagged { .. } => return Err(self.unknown_tag(command)),
                Response::Continue(_) => {
                    return Err(ImapError::Protocol(format!("{} sent a second + during IDLE", self.place())))
                }
            }
        };
        if !ended {
            self.send(b"DONE\r\n", "DONE")?;
            let since = Instant::now();
            loop {
                let (response, raw) = self.read(since, "DONE")?;
                match response {
                    Response::Tagged { tag: answered, state, text } if answered == tag => {
                        self.outcome(command, state, text)?;
                        break;
                    }
                    Response::Untagged(untagged) => self.untagged(untagged, raw, &mut ignore)?,
                    Response::Tagged { .. } => return Err(self.unknown_tag("DONE")),
                    Response::Continue(_) => {
                        return Err(ImapError::Protocol(format!("{} sent + after DONE", self.place())))
                    }
                }
            }
        }
        if woken == Woken::NewMail {
            self.new_mail = false;
        }
        Ok(woken)
    }

    /// NOOP: whether new mail arrived (EXISTS grew) since the caller last
    /// looked.
    pub fn noop(&mut self) -> Result<bool, ImapError> {
        self.run("NOOP", &[], &mut ignore)?;
        Ok(std::mem::take(&mut self.new_mail))
    }

    /// LOGOUT and close, best effort, within the timeout.
    pub fn logout(mut self) {
        let tag = self.next_tag();
        let deadline = Instant::now() + self.endpoint.timeout;
        // Mid-response (a deadline passed, garbage, a lost connection), the
        // answer to LOGOUT cannot be told apart: just close.
        if !self.broken && self.conn.send(format!("{tag} LOGOUT\r\n").as_bytes(), deadline).is_ok() {
            // BYE, then the OK.
            while let Ok(raw) = self.conn.response(
                Instant::now(),
                deadline.saturating_duration_since(Instant::now()),
                deadline,
            ) {
                match parse::parse(&raw) {
                    Ok(Response::Tagged { tag: answered, .. }) if answered == tag => break,
                    Ok(_) => {}
                    Err(_) => break,
                }
            }
        }
        self.conn.close(deadline);
    }

    fn place(&self) -> String {
        self.endpoint.place()
    }

    fn next_tag(&mut self) -> String {
        self.tag += 1;
        format!("A{:04}", self.tag)
    }

    fn failed(&self, failure: Failure, what: &str) -> ImapError {
        match failure {
            Failure::Overdue => ImapError::Timeout(format!(
                "{} did not finish answering {what} within {:?}",
                self.place(),
                self.limit
            )),
            failure => failed(failure, &self.place(), what, self.endpoint.timeout),
        }
    }

    fn garbage(&self, e: &ParseError, raw: &[u8], what: &str) -> ImapError {
        let line = raw.split(|&b| b == b'\n').next().unwrap_or_default();
        let excerpt = parse::printable(&line[..line.len().min(80)]);
        ImapError::Protocol(format!("{} answered {what} with garbage ({}): {excerpt}", self.place(), e.0))
    }

    fn unknown_tag(&self, what: &str) -> ImapError {
        ImapError::Protocol(format!("{} answered {what} with a tag we did not send", self.place()))
    }

    fn send(&mut self, bytes: &[u8], what: &str) -> Result<(), ImapError> {
        let deadline = Instant::now() + self.endpoint.timeout;
        let sent = self.conn.send(bytes, deadline).map_err(|f| self.failed(f, what));
        self.broken |= sent.is_err();
        sent
    }

    /// The next response, waiting up to the timeout for each of its bytes
    /// and no longer than the command's limit, counted from `since`, in all.
    fn read(&mut self, since: Instant, what: &str) -> Result<(Response, Vec<u8>), ImapError> {
        let overall = since + self.limit;
        let read =
            self.conn.response(since, self.endpoint.timeout, overall).map_err(|f| self.failed(f, what));
        let parsed = read.and_then(|raw| match parse::parse(&raw) {
            Ok(response) => Ok((response, raw)),
            Err(e) => Err(self.garbage(&e, &raw, what)),
        });
        self.broken |= parsed.is_err();
        parsed
    }

    /// Send `command` with `args` and read until its tagged answer, handing
    /// each untagged response to `on` (after noting EXISTS, BYE…).
    fn run(&mut self, command: &str, args: &[Arg], on: Handler) -> Result<Text, ImapError> {
        let tag = self.next_tag();
        let mut line = format!("{tag} {command}").into_bytes();
        for arg in args {
            line.push(b' ');
            match arg {
                Arg::Raw(raw) => line.extend_from_slice(raw.as_bytes()),
                Arg::Str(string) => match quoted(string) {
                    Some(quoted) => line.extend_from_slice(&quoted),
                    None => {
                        let plus = if self.literal_plus { "+" } else { "" };
                        line.extend_from_slice(format!("{{{}{plus}}}\r\n", string.len()).as_bytes());
                        if !self.literal_plus {
                            self.send(&line, command)?;
                            line.clear();
                            self.go_ahead(&tag, command, on)?;
                        }
                        line.extend_from_slice(string);
                    }
                },
            }
        }
        line.extend_from_slice(b"\r\n");
        self.send(&line, command)?;
        let since = Instant::now();
        loop {
            let (response, raw) = self.read(since, command)?;
            match response {
                Response::Tagged { tag: answered, state, text } if answered == tag => {
                    return self.outcome(command, state, text)
                }
                Response::Tagged { .. } => return Err(self.unknown_tag(command)),
                Response::Continue(_) => {
                    return Err(ImapError::Protocol(format!("{} sent + to {command}", self.place())))
                }
                Response::Untagged(untagged) => self.untagged(untagged, raw, on)?,
            }
        }
    }

    /// The `+` that lets a synchronizing literal follow.
    fn go_ahead(&mut self, tag: &str, command: &str, on: Handler) -> Result<(), ImapError> {
        let since = Instant::now();
        loop {
            let (response, raw) = self.read(since, command)?;
            match response {
                Response::Continue(_) => return Ok(()),
                Response::Untagged(untagged) => self.untagged(untagged, raw, on)?,
                Response::Tagged { tag: answered, state, text } if answered == tag => {
                    self.outcome(command, state, text)?;
                    return Err(ImapError::Protocol(format!(
                        "{} ended {command} in mid-command",
                        self.place()
                    )));
                }
                Response::Tagged { .. } => return Err(self.unknown_tag(command)),
            }
        }
    }

    fn outcome(&self, command: &str, state: State, text: Text) -> Result<Text, ImapError> {
        match state {
            State::Ok => Ok(text),
            State::No => Err(ImapError::No {
                command: command.into(),
                code: text.code.map(|code| code.name),
                text: text.text,
            }),
            State::Bad => Err(ImapError::Bad { command: command.into(), text: text.text }),
        }
    }

    /// What every untagged response means for the session, whatever the
    /// command; then `on` sees it.
    fn untagged(&mut self, untagged: Untagged, raw: Vec<u8>, on: Handler) -> Result<(), ImapError> {
        match &untagged {
            Untagged::Exists(n) => {
                self.new_mail |= *n > self.exists;
                self.exists = *n;
            }
            Untagged::Expunge(_) => self.exists = self.exists.saturating_sub(1),
            Untagged::Condition(Condition::Bye, text) => {
                return Err(ImapError::Lost(format!("{} closed the session: {}", self.place(), text.text)))
            }
            Untagged::Condition(_, Text { code: Some(code), text }) if code.name == "ALERT" => {
                if self.alerts.len() == MAX_ALERTS {
                    self.alerts.remove(0);
                }
                self.alerts.push(text.clone());
            }
            Untagged::Capability(list) => self.set_capabilities(list.iter().map(String::as_str)),
            _ => {}
        }
        on(untagged, raw)
    }

    /// The capabilities in a response code, if it has them.
    fn capabilities_from(&mut self, text: &Text) -> bool {
        match &text.code {
            Some(code) if code.name == "CAPABILITY" => {
                self.set_capabilities(code.args.split_whitespace());
                true
            }
            _ => false,
        }
    }

    fn set_capabilities<'c>(&mut self, list: impl Iterator<Item = &'c str>) {
        let mut capabilities = Capabilities::default();
        self.literal_plus = false;
        for capability in list {
            let capability = capability.to_ascii_uppercase();
            match capability.as_str() {
                "IDLE" => capabilities.idle = true,
                "MOVE" => capabilities.move_ = true,
                "UIDPLUS" => capabilities.uidplus = true,
                "LOGINDISABLED" => capabilities.login_disabled = true,
                "STARTTLS" => capabilities.starttls = true,
                "SASL-IR" => capabilities.sasl_ir = true,
                "LITERAL+" => self.literal_plus = true,
                other => {
                    if let Some(mechanism) = other.strip_prefix("AUTH=") {
                        capabilities.auth.push(mechanism.to_string());
                    }
                }
            }
        }
        self.capabilities = capabilities;
    }
}

/// How login is attempted: LOGIN with the user (and the secret), or a SASL
/// mechanism and its message.
enum Attempt<'a> {
    Login(&'a str),
    Sasl(&'static str, String),
}

fn failed(failure: Failure, place: &str, what: &str, timeout: Duration) -> ImapError {
    match failure {
        Failure::Timeout => ImapError::Timeout(format!("{place} did not answer {what} within {timeout:?}")),
        Failure::Overdue => ImapError::Timeout(format!("{place} did not finish answering {what} in time")),
        Failure::Lost(reason) => {
            ImapError::Lost(format!("connection to {place} lost during {what}: {reason}"))
        }
        Failure::Tls(reason) => ImapError::Tls(format!("TLS with {place} failed: {reason}")),
        Failure::Garbage(reason) => ImapError::Protocol(format!("{place} answered {what} with {reason}")),
    }
}

/// The `status` of an OAuth error challenge (base64 JSON), never more of it.
fn challenge_status(challenge: &[u8]) -> Option<String> {
    let json = BASE64.decode(challenge).ok()?;
    let value: serde_json::Value = serde_json::from_slice(&json).ok()?;
    let status = value.get("status")?;
    let status = status.as_str().map(str::to_string).unwrap_or_else(|| status.to_string());
    Some(parse::printable(status.as_bytes()))
}

/// A message's bytes: a literal's are cut out of the response it came in.
fn bytes(body: Body, mut raw: Vec<u8>) -> Vec<u8> {
    match body {
        Body::Literal(range) => {
            raw.truncate(range.end);
            raw.drain(..range.start);
            raw
        }
        Body::Quoted(bytes) => bytes,
    }
}

/// `s` as a quoted string, if it can be one: 7-bit, no NUL, CR or LF.
fn quoted(s: &[u8]) -> Option<Vec<u8>> {
    if s.iter().any(|&b| b == 0 || b == b'\r' || b == b'\n' || b >= 0x80) {
        return None;
    }
    let mut out = Vec::with_capacity(s.len() + 2);
    out.push(b'"');
    for &b in s {
        if b == b'"' || b == b'\\' {
            out.push(b'\\');
        }
        out.push(b);
    }
    out.push(b'"');
    Some(out)
}

fn sorted(uids: &[u32]) -> Vec<u32> {
    let mut sorted = uids.to_vec();
    sorted.sort_unstable();
    sorted.dedup();
    sorted
}

/// Sorted, distinct `uids` as sequence sets (`1:3,7`), each at most
/// [`MAX_SET`] bytes long.
fn uid_sets(uids: &[u32]) -> Vec<String> {
    let mut sets = Vec::new();
    let mut set = String::new();
    let mut i = 0;
    while i < uids.len() {
        let first = uids[i];
        let mut last = first;
        while uids.get(i + 1).is_some_and(|&next| last.checked_add(1) == Some(next)) {
            i += 1;
            last = uids[i];
        }
        i += 1;
        let range = if first == last { first.to_string() } else { format!("{first}:{last}") };
        if !set.is_empty() && set.len() + 1 + range.len() > MAX_SET {
            sets.push(std::mem::take(&mut set));
        }
        if !set.is_empty() {
            set.push(',');
        }
        set.push_str(&range);
    }
    if !set.is_empty() {
        sets.push(set);
    }
    sets
}
