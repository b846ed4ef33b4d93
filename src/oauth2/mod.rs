//! OAuth2 access tokens, for SASL XOAUTH2 and OAUTHBEARER (or any bearer):
//! from a provider's token endpoint (client credentials, or a user's
//! refresh token kept in a file), or from an administrator's own command;
//! and the sign-in flows that get the first refresh token ([`SignIn`]).
//!
//! A protocol client, a leaf: it knows nothing of the configuration file,
//! of IMAP or of outcomes; it imports nothing of ours but `sys`, `secret`
//! and `http`. Its settings are its own ([`Grant`]); its errors are
//! [`Error`]s, which say what happened and leave what to do about it to
//! the caller.
//!
//! One [`TokenSource`] per mailbox, shared by the threads of its folders:
//! one token request at a time (a rotated refresh token used twice would
//! be refused the second time), a token handed out until a while before it
//! expires, rotated refresh tokens written back atomically. Secrets (the
//! client secret, the tokens) go to the provider and nowhere else: not into
//! errors, logs, or Debug output.

mod command;
mod endpoint;
mod error;
mod sign_in;
mod store;

use std::fmt;
use std::io;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, Instant};

use reqwest::Url;
use serde_json::{Map, Value};

use crate::secret::Password;
use crate::sys::{io_reason, whoami};
pub use command::Command;
#[cfg(test)]
pub(crate) use endpoint::read_request_body;
use endpoint::Endpoint;
pub use error::{BadAnswer, CommandFailure, Error, NotSignedIn, Printed, Refusal, Request, Secret};
pub use sign_in::SignIn;
pub use store::write_secret;

/// A token is renewed this long before it expires at the most (a quarter
/// of its lifetime when that is shorter), so that no login uses one about
/// to expire.
const RENEW_BEFORE: Duration = Duration::from_secs(5 * 60);
/// A failure is given again, without asking the provider, to the other
/// folders' threads that ask within this time: one request per attempt.
const FAILURE_MEMORY: Duration = Duration::from_secs(5);

/// Where a mailbox's access tokens come from.
#[derive(Clone, Debug)]
pub enum Grant {
    /// A program of the administrator's prints them.
    Command(Command),
    /// Client credentials: the application's own access, no user to sign in.
    ClientCredentials(Client),
    /// A user's refresh token, kept in `file`, which [`SignIn`] fills and
    /// rotated refresh tokens replace; `read` reads it.
    RefreshToken { client: Client, file: PathBuf, read: ReadSecret },
}

/// The application registered with the provider, and its token endpoint.
#[derive(Clone, Debug)]
pub struct Client {
    pub client_id: String,
    /// None for a public client.
    pub client_secret: Option<ReadSecret>,
    pub token_url: Url,
    pub scope: Option<String>,
}

/// A secret read again each time it is needed, so that fixing its file
/// takes effect without a restart; its error says where the secret is,
/// never what it holds.
#[derive(Clone)]
pub struct ReadSecret(Arc<dyn Fn() -> Result<Password, String> + Send + Sync>);

impl ReadSecret {
    pub fn new(read: impl Fn() -> Result<Password, String> + Send + Sync + 'static) -> ReadSecret {
        ReadSecret(Arc::new(read))
    }

    fn read(&self, secret: Secret) -> Result<Password, Error> {
        (self.0)().map_err(|reason| Error::Secret { secret, reason })
    }
}

impl fmt::Debug for ReadSecret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("ReadSecret")
    }
}

impl Client {
    /// The client secret, read now (a fixed file takes effect at once).
    fn secret(&self) -> Result<Option<Password>, Error> {
        self.client_secret.as_ref().map(|read| read.read(Secret::ClientSecret)).transpose()
    }
}

/// An access token.
#[derive(Clone, Debug)]
pub struct Token {
    pub access: Password,
    /// When it expires, when the provider (or the command) said.
    pub expires: Option<Instant>,
    /// When to stop handing it out; never cached without one.
    renew_at: Option<Instant>,
    /// Just obtained, rather than taken from the cache.
    pub fresh: bool,
    /// Something an administrator should hear about (a rotated refresh
    /// token that could not be saved); said once, by the fetch.
    pub warning: Option<String>,
}

/// The access tokens of one mailbox.
pub struct TokenSource {
    grant: Grant,
    /// None for a token command.
    endpoint: Option<Endpoint>,
    state: Mutex<State>,
}

#[derive(Default)]
struct State {
    token: Option<Token>,
    /// A rotated refresh token that could not be written, and the one the
    /// file still holds: used instead of it until the file changes.
    unsaved: Option<(Password, Password)>,
    failed: Option<(Instant, Error)>,
}

impl TokenSource {
    pub fn new(grant: Grant) -> Result<TokenSource, Error> {
        let endpoint = match grant {
            Grant::Command(_) => None,
            _ => Some(Endpoint::new()?),
        };
        Ok(TokenSource { grant, endpoint, state: Mutex::new(State::default()) })
    }

    /// A token for a login now: the cached one while it has a while to
    /// live, else a new one.
    pub fn token(&self) -> Result<Token, Error> {
        let mut state = self.lock();
        let now = Instant::now();
        if let Some(token) = state.token.as_ref().filter(|t| t.renew_at.is_some_and(|at| at > now)) {
            return Ok(Token { fresh: false, warning: None, ..token.clone() });
        }
        if let Some((at, e)) = &state.failed {
            if at.elapsed() < FAILURE_MEMORY {
                return Err(e.clone());
            }
        }
        self.fetch(&mut state)
    }

    /// A new token, whatever the cache holds (for `check`): the provider's
    /// own words when it refuses.
    pub fn fetch_now(&self) -> Result<Token, Error> {
        let mut state = self.lock();
        self.fetch(&mut state)
    }

    /// The server refused `token`: it is not handed out again.
    pub fn forget(&self, token: &Token) {
        let mut state = self.lock();
        if state.token.as_ref().is_some_and(|cached| cached.access == token.access) {
            state.token = None;
        }
    }

    fn lock(&self) -> MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Ask for a token, and remember the answer. Under the lock: the
    /// other folders wait for it rather than ask too.
    fn fetch(&self, state: &mut State) -> Result<Token, Error> {
        let result = self.request(state);
        match &result {
            Ok(token) => {
                state.token = Some(Token { warning: None, ..token.clone() });
                state.failed = None;
            }
            Err(e) => {
                state.token = None;
                state.failed = Some((Instant::now(), e.clone()));
            }
        }
        result
    }

    fn request(&self, state: &mut State) -> Result<Token, Error> {
        let asked = Instant::now();
        let mut warning = None;
        let (access, lifetime) = match &self.grant {
            Grant::Command(command) => command.run()?,
            Grant::ClientCredentials(client) => {
                let secret = client.secret()?;
                let secret = secret.as_ref().map_or("", Password::expose);
                let mut form =
                    vec![("grant_type", "client_credentials"), ("client_id", client.client_id.as_str())];
                form.push(("client_secret", secret));
                form.extend(client.scope.as_deref().map(|scope| ("scope", scope)));
                let issued = self.ask(&client.token_url, &form, &[secret], Request::ClientCredentials)?;
                (issued.access, issued.lifetime)
            }
            Grant::RefreshToken { client, file, read } => {
                let stored = read.read(Secret::RefreshToken)?;
                let current = match &state.unsaved {
                    Some((old, new)) if *old == stored => new.clone(),
                    _ => stored.clone(),
                };
                let secret = client.secret()?;
                let mut form = vec![
                    ("grant_type", "refresh_token"),
                    ("refresh_token", current.expose()),
                    ("client_id", client.client_id.as_str()),
                ];
                form.extend(secret.as_ref().map(|s| ("client_secret", s.expose())));
                form.extend(client.scope.as_deref().map(|scope| ("scope", scope)));
                let secrets = [current.expose(), secret.as_ref().map_or("", Password::expose)];
                let issued = self.ask(&client.token_url, &form, &secrets, Request::RefreshToken)?;
                if let Some(new) = issued.refresh.filter(|new| *new != current) {
                    match store::write_secret(file, new.expose()) {
                        Ok(()) => state.unsaved = None,
                        Err(e) => {
                            warning = Some(unsaved_warning(file, &e));
                            state.unsaved = Some((stored, new));
                        }
                    }
                }
                (issued.access, issued.lifetime)
            }
        };
        Ok(timed(access, asked, lifetime, warning))
    }

    /// One request to the token endpoint, its answer read.
    fn ask(
        &self,
        url: &Url,
        form: &[(&str, &str)],
        secrets: &[&str],
        request: Request,
    ) -> Result<Issued, Error> {
        let endpoint =
            self.endpoint.as_ref().expect("a token source for a token endpoint has an HTTP client");
        issued(&endpoint.post(url, form, secrets, request)?, url)
    }
}

/// A token obtained at `asked` that lives `lifetime`. A lifetime too
/// long to count (a provider's garbage) is no lifetime: the token is used
/// once and not cached.
fn timed(access: Password, asked: Instant, lifetime: Option<Duration>, warning: Option<String>) -> Token {
    let expires = lifetime.and_then(|l| asked.checked_add(l));
    let renew_at = lifetime.zip(expires).map(|(l, expires)| expires - (l / 4).min(RENEW_BEFORE));
    Token { access, expires, renew_at, fresh: true, warning }
}

fn unsaved_warning(file: &Path, e: &io::Error) -> String {
    let dir = file.parent().filter(|d| !d.as_os_str().is_empty()).unwrap_or(Path::new("."));
    format!(
        "the provider replaced the refresh token, but the new one could not be written to {}: {} ({}); it is kept in memory and lost at a restart: make {} writable by that user",
        file.display(),
        io_reason(e),
        whoami(),
        dir.display()
    )
}

/// What a token answer gives.
pub struct Issued {
    pub access: Password,
    pub lifetime: Option<Duration>,
    pub refresh: Option<Password>,
}

/// Characters a bearer token may have (RFC 6750 2.1 b64token, and more
/// printable ASCII that some providers use): none that would break the
/// SASL message or a line.
fn is_token(text: &str) -> bool {
    !text.is_empty() && text.bytes().all(|b| b.is_ascii_graphic())
}

fn issued(answer: &Map<String, Value>, url: &Url) -> Result<Issued, Error> {
    let access =
        answer.get("access_token").and_then(Value::as_str).filter(|t| is_token(t)).ok_or_else(|| {
            Error::BadAnswer { host: crate::http::host(url), answer: BadAnswer::NoAccessToken }
        })?;
    let refresh =
        answer.get("refresh_token").and_then(Value::as_str).filter(|t| is_token(t)).map(Password::new);
    Ok(Issued { access: Password::new(access), lifetime: lifetime(answer), refresh })
}

/// expires_in: seconds, as a number or (some providers) a string.
fn lifetime(answer: &Map<String, Value>) -> Option<Duration> {
    let seconds = match answer.get("expires_in")? {
        Value::Number(n) => n.as_u64(),
        Value::String(s) => s.trim().parse().ok(),
        _ => None,
    }?;
    Some(Duration::from_secs(seconds))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn token_answers_are_read_and_garbage_is_refused() {
        let url = Url::parse("https://login.example/token").unwrap();
        let answer = |json: &str| serde_json::from_str::<Map<String, Value>>(json).unwrap();
        let ok = issued(
            &answer(r#"{"access_token":"eyJ.a-b_c","expires_in":"3599","refresh_token":"rt.1"}"#),
            &url,
        )
        .unwrap();
        assert_eq!(
            (ok.access.expose(), ok.lifetime, ok.refresh.unwrap().expose()),
            ("eyJ.a-b_c", Some(Duration::from_secs(3599)), "rt.1")
        );
        for bad in [r#"{"token_type":"Bearer"}"#, r#"{"access_token":"a b"}"#, r#"{"access_token":""}"#] {
            let e = issued(&answer(bad), &url).err().unwrap();
            assert!(matches!(e, Error::BadAnswer { answer: BadAnswer::NoAccessToken, .. }), "{bad}");
            assert!(!e.to_string().contains("a b"));
        }
    }

    #[test]
    fn a_token_error_debug_and_token_debug_hide_the_token() {
        let token = Token {
            access: Password::new("secret-token"),
            expires: None,
            renew_at: None,
            fresh: true,
            warning: None,
        };
        assert!(!format!("{token:?}").contains("secret-token"));
    }

    #[test]
    fn an_absurd_lifetime_is_no_lifetime() {
        let now = Instant::now();
        let token = timed(Password::new("t"), now, Some(Duration::from_secs(u64::MAX)), None);
        assert_eq!((token.expires, token.renew_at), (None, None));
        let token = timed(Password::new("t"), now, Some(Duration::from_secs(3600)), None);
        assert_eq!(token.renew_at, Some(now + Duration::from_secs(3300)));
    }
}
