//! OAuth2 for `watch`: access tokens for SASL XOAUTH2 and OAUTHBEARER, from
//! the provider's token endpoint (client credentials, or a user's refresh
//! token kept in a file) or from the administrator's own command; and
//! `oauth2 authorize`, which gets the first refresh token.
//!
//! One [`TokenSource`] per mailbox, shared by the threads of its folders:
//! one token request at a time (a rotated refresh token used twice would
//! be refused the second time), a token handed out until a while before it
//! expires, rotated refresh tokens written back atomically. Secrets (the
//! client secret, the tokens) go to the provider and the IMAP server and
//! nowhere else: not into errors, logs, or Debug output.

mod authorize;
mod command;
mod http;
mod store;

use std::fmt;
use std::fs;
use std::io;
use std::path::Path;
use std::sync::{Mutex, MutexGuard};
use std::time::{Duration, Instant};

use reqwest::Url;
use serde_json::{Map, Value};

use crate::config::{Auth, Client, Grant, Mailbox, OAuth2, Password, Provider, Sasl};
use crate::imap::Login;
use crate::outcome::{Cause, Outcome};
use crate::secret;
use crate::sys::{io_reason, whoami};
pub use authorize::main;
use http::{Failure, Http};

/// A token is renewed this long before it expires at the most (a quarter
/// of its lifetime when that is shorter), so that no login uses one about
/// to expire.
const RENEW_BEFORE: Duration = Duration::from_secs(5 * 60);
/// A failure is given again, without asking the provider, to the other
/// folders' threads that ask within this time: one request per attempt.
const FAILURE_MEMORY: Duration = Duration::from_secs(5);

/// No access token, and why: one line, with the provider's own words, and
/// what to do about it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct TokenError {
    pub cause: Cause,
    pub reason: String,
    pub fix: String,
    /// The provider's error code (invalid_grant, invalid_client…), when it gave one.
    pub error: Option<String>,
}

impl TokenError {
    fn new(cause: Cause, reason: impl Into<String>, fix: impl Into<String>) -> TokenError {
        TokenError { cause, reason: reason.into(), fix: fix.into(), error: None }
    }
}

impl fmt::Display for TokenError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.reason)
    }
}

impl From<TokenError> for Outcome {
    fn from(e: TokenError) -> Outcome {
        let outcome = Outcome::new(e.cause, e.reason);
        if e.fix.is_empty() {
            outcome
        } else {
            outcome.with_fix(e.fix)
        }
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

/// What a token request is for, which decides the advice on a refusal.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Kind {
    ClientCredentials,
    RefreshToken,
    /// A user's sign-in for `oauth2 authorize` (device code, authorization code).
    SignIn,
}

/// The access tokens of one mailbox.
pub struct TokenSource {
    mailbox: String,
    user: String,
    sasl: Sasl,
    oauth2: OAuth2,
    /// None for a token_command.
    http: Option<Http>,
    state: Mutex<State>,
}

#[derive(Default)]
struct State {
    token: Option<Token>,
    /// A rotated refresh token that could not be written, and the one the
    /// file still holds: used instead of it until the file changes.
    unsaved: Option<(Password, Password)>,
    failed: Option<(Instant, TokenError)>,
}

impl TokenSource {
    /// The token source of an OAuth2 mailbox; None for one with a password.
    pub fn for_mailbox(mailbox: &Mailbox) -> Result<Option<TokenSource>, TokenError> {
        let Auth::OAuth2(sasl, oauth2) = &mailbox.auth else {
            return Ok(None);
        };
        let http = match oauth2.grant {
            Grant::Command(_) => None,
            _ => Some(Http::new()?),
        };
        Ok(Some(TokenSource {
            mailbox: mailbox.name.clone(),
            user: mailbox.user.clone(),
            sasl: *sasl,
            oauth2: (**oauth2).clone(),
            http,
            state: Mutex::new(State::default()),
        }))
    }

    /// A token for a login now: the cached one while it has a while to
    /// live, else a new one.
    pub fn token(&self) -> Result<Token, TokenError> {
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
    pub fn fetch_now(&self) -> Result<Token, TokenError> {
        let mut state = self.lock();
        self.fetch(&mut state)
    }

    /// The IMAP server refused `token`: it is not handed out again.
    pub fn forget(&self, token: &Token) {
        let mut state = self.lock();
        if state.token.as_ref().is_some_and(|cached| cached.access == token.access) {
            state.token = None;
        }
    }

    /// The login that carries `token`.
    pub fn login(&self, token: &Token) -> Login {
        let (user, token) = (self.user.clone(), token.access.clone());
        match self.sasl {
            Sasl::XOAuth2 => Login::XOAuth2 { user, token },
            Sasl::OAuthBearer => Login::OAuthBearer { user, token },
        }
    }

    /// What to do when the IMAP server refuses a token the provider just issued.
    pub fn refused_fix(&self) -> &'static str {
        match (&self.oauth2.grant, self.oauth2.provider) {
            (Grant::ClientCredentials(_), _) => {
                "the IMAP server refused the application's token: it needs the IMAP.AccessAsApp permission (Office 365 Exchange Online) with admin consent, its service principal registered in Exchange (New-ServicePrincipal) with FullAccess to this mailbox (Add-MailboxPermission), and user must be the mailbox's address; changes take a while to reach Exchange"
            }
            (Grant::RefreshToken { .. }, Some(Provider::Google)) => {
                "the IMAP server refused the token: user must be the address of the Google account that signed in, scope https://mail.google.com/, and IMAP allowed for the account"
            }
            (Grant::RefreshToken { .. }, Some(Provider::Microsoft)) => {
                "the IMAP server refused the token: user must be the address of the account that signed in (or of a mailbox it has FullAccess to), and IMAP enabled for the mailbox (Set-CASMailbox -ImapEnabled $true)"
            }
            _ => "the IMAP server refused the token: user must be the mailbox the token is for, and the token must be for IMAP (its scope)",
        }
    }

    fn lock(&self) -> MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Ask for a token, and remember the answer. Under the lock: the
    /// other folders wait for it rather than ask too.
    fn fetch(&self, state: &mut State) -> Result<Token, TokenError> {
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

    fn request(&self, state: &mut State) -> Result<Token, TokenError> {
        let asked = Instant::now();
        let mut warning = None;
        let (access, lifetime) = match &self.oauth2.grant {
            Grant::Command(argv) => command::run(argv, &self.mailbox, &self.user)?,
            Grant::ClientCredentials(client) => {
                let secret = client_secret(client)?;
                let secret = secret.as_ref().map_or("", Password::expose);
                let mut form =
                    vec![("grant_type", "client_credentials"), ("client_id", client.client_id.as_str())];
                form.push(("client_secret", secret));
                form.extend(client.scope.as_deref().map(|scope| ("scope", scope)));
                let issued = self.ask(&client.token_url, &form, &[secret], Kind::ClientCredentials)?;
                (issued.access, issued.lifetime)
            }
            Grant::RefreshToken { client, file, .. } => {
                let stored = self.refresh_token(file)?;
                let current = match &state.unsaved {
                    Some((old, new)) if *old == stored => new.clone(),
                    _ => stored.clone(),
                };
                let secret = client_secret(client)?;
                let mut form = vec![
                    ("grant_type", "refresh_token"),
                    ("refresh_token", current.expose()),
                    ("client_id", client.client_id.as_str()),
                ];
                form.extend(secret.as_ref().map(|s| ("client_secret", s.expose())));
                form.extend(client.scope.as_deref().map(|scope| ("scope", scope)));
                let secrets = [current.expose(), secret.as_ref().map_or("", Password::expose)];
                let issued = self.ask(&client.token_url, &form, &secrets, Kind::RefreshToken)?;
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
        Ok(Token {
            access,
            expires: lifetime.map(|l| asked + l),
            renew_at: lifetime.map(|l| asked + l - (l / 4).min(RENEW_BEFORE)),
            fresh: true,
            warning,
        })
    }

    /// One request to the token endpoint, its answer read or its refusal explained.
    fn ask(
        &self,
        url: &Url,
        form: &[(&str, &str)],
        secrets: &[&str],
        kind: Kind,
    ) -> Result<Issued, TokenError> {
        let http = self.http.as_ref().expect("a token source for a token endpoint has an HTTP client");
        let answer = http
            .post(url, form, secrets)
            .map_err(|f| explain(f, url, kind, self.oauth2.provider, &self.mailbox))?;
        issued(&answer, url)
    }

    fn refresh_token(&self, file: &Path) -> Result<Password, TokenError> {
        secret::read_file(file, "refresh token", "refresh_token_file", &mut Vec::new()).map_err(|e| {
            let fix = match fs::symlink_metadata(file) {
                Err(_) => format!(
                    "run chatwoot-ingress oauth2 authorize --mailbox {} to sign in and write it",
                    self.mailbox
                ),
                Ok(_) => "make it readable (and writable) by the user watch runs as, and only by it".into(),
            };
            TokenError::new(Cause::Config, e.to_string(), fix)
        })
    }
}

/// The client secret, read now (a fixed file takes effect at once).
fn client_secret(client: &Client) -> Result<Option<Password>, TokenError> {
    client
        .client_secret_file
        .as_deref()
        .map(|path| secret::read_file(path, "client secret", "client_secret_file", &mut Vec::new()))
        .transpose()
        .map_err(|e| {
            TokenError::new(
                Cause::Config,
                e.to_string(),
                "make it readable by the user watch runs as, and only by it",
            )
        })
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
struct Issued {
    access: Password,
    lifetime: Option<Duration>,
    refresh: Option<Password>,
}

/// Characters a bearer token may have (RFC 6750 2.1 b64token, and more
/// printable ASCII that some providers use): none that would break the
/// SASL message or a line.
fn is_token(text: &str) -> bool {
    !text.is_empty() && text.bytes().all(|b| b.is_ascii_graphic())
}

fn issued(answer: &Map<String, Value>, url: &Url) -> Result<Issued, TokenError> {
    let access =
        answer.get("access_token").and_then(Value::as_str).filter(|t| is_token(t)).ok_or_else(|| {
            TokenError::new(
                Cause::TokenRefused,
                format!("the token service at {} answered without a usable access_token", http::host(url)),
                "check token_url: it must be the provider's token endpoint",
            )
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

/// The provider's refusal, on one line with what to do about it.
fn explain(failure: Failure, url: &Url, kind: Kind, provider: Option<Provider>, mailbox: &str) -> TokenError {
    match failure {
        Failure::Other(e) => e,
        Failure::Refused { status, error, description } => {
            let said = if description.is_empty() { error.clone() } else { format!("{error}: {description}") };
            TokenError {
                cause: Cause::TokenRefused,
                reason: format!("the token service at {} refused (HTTP {status}): {said}", http::host(url)),
                fix: advice(&error, &description, kind, provider, mailbox),
                error: Some(error),
            }
        }
    }
}

/// What to do about a refusal: by Microsoft's AADSTS number when there is
/// one, else by the OAuth2 error code.
fn advice(error: &str, description: &str, kind: Kind, provider: Option<Provider>, mailbox: &str) -> String {
    let sign_in_again = format!(
        "run chatwoot-ingress oauth2 authorize --mailbox {mailbox} (as the user watch runs as) to sign in again and write a new refresh token"
    );
    let scope = "check scope: Microsoft 365 app-only https://outlook.office365.com/.default, a Microsoft 365 user https://outlook.office.com/IMAP.AccessAsUser.All offline_access, Gmail https://mail.google.com/";
    let aadsts: Option<u32> = description
        .strip_prefix("AADSTS")
        .map(|rest| rest.chars().take_while(char::is_ascii_digit).collect::<String>())
        .and_then(|digits| digits.parse().ok());
    let fix = match aadsts {
        Some(7000215) => "client_secret_file must hold the client secret's Value (not its Secret ID), from Certificates & secrets of the app registration; fixing the file needs no restart",
        Some(7000222) => "the client secret has expired: add a new one under Certificates & secrets of the app registration and write its Value to client_secret_file",
        Some(7000218) => "the application is confidential: set client_secret_file, or allow public client flows in its registration (Authentication)",
        Some(700025) => "the application is a public client: remove client_secret_file",
        Some(700016) => "check client_id (the Application (client) ID of the app registration) and tenant (its Directory (tenant) ID)",
        Some(90002) | Some(900023) => "check tenant: the Directory (tenant) ID of the app registration",
        Some(65001) => "consent is missing: an administrator must grant admin consent to the application's API permissions (App registrations > API permissions > Grant admin consent)",
        Some(7000112) => "the application is disabled in the tenant: enable it (Enterprise applications > Properties)",
        Some(53003) => "a Conditional Access policy blocks this sign-in: the tenant's administrator must exempt the application or this machine",
        Some(70011) => scope,
        Some(70008 | 50173 | 700082 | 9002313 | 50076 | 50079 | 50158 | 700005) if kind == Kind::RefreshToken => {
            return format!("the refresh token is expired or revoked (a password or MFA change revokes it): {sign_in_again}")
        }
        _ => match (error, kind) {
            ("invalid_client", _) => "check client_id and client_secret_file (fixing the file needs no restart)",
            ("invalid_grant", Kind::RefreshToken) => {
                let testing = match provider {
                    Some(Provider::Google) => " (a Google OAuth app whose publishing status is Testing loses its refresh tokens after 7 days: publish it)",
                    _ => "",
                };
                return format!("the refresh token is expired or revoked: {sign_in_again}{testing}");
            }
            ("unauthorized_client", Kind::ClientCredentials) => {
                "the application may not use client credentials: give it the application permission IMAP.AccessAsApp (Office 365 Exchange Online) with admin consent"
            }
            ("unauthorized_client", _) => {
                "the application may not use this grant: for the device code, allow public client flows in its registration (Authentication)"
            }
            ("invalid_scope", _) => scope,
            ("unsupported_grant_type", _) => "check token_url: it must be the provider's token endpoint",
            ("access_denied" | "authorization_declined", _) => "the sign-in was declined: run it again and accept",
            ("expired_token", _) => "the code expired before the sign-in: run it again and sign in sooner",
            ("temporarily_unavailable" | "server_error", _) => "the provider is failing: it is tried again",
            _ => "see the provider's reason, and check the [mailbox.oauth2] table",
        },
    };
    fix.to_string()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn refusals_get_the_fix_their_code_calls_for() {
        let fix = |error, description, kind| advice(error, description, kind, None, "support");
        assert!(fix(
            "invalid_client",
            "AADSTS7000215: Invalid client secret provided.",
            Kind::ClientCredentials
        )
        .contains("Value (not its Secret ID)"));
        assert!(fix("invalid_grant", "AADSTS70008: The refresh token has expired", Kind::RefreshToken)
            .contains("oauth2 authorize --mailbox support"));
        assert!(fix("invalid_grant", "Token has been expired or revoked.", Kind::RefreshToken)
            .contains("oauth2 authorize --mailbox support"));
        assert!(fix(
            "invalid_client",
            "AADSTS65001: The user or administrator has not consented",
            Kind::SignIn
        )
        .contains("admin consent"));
        assert!(fix("unauthorized_client", "", Kind::ClientCredentials).contains("IMAP.AccessAsApp"));
        assert!(advice("invalid_grant", "Bad Request", Kind::RefreshToken, Some(Provider::Google), "g")
            .contains("Testing"));
    }

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
            assert_eq!(e.cause, Cause::TokenRefused, "{bad}");
            assert!(!e.reason.contains("a b"));
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
}
