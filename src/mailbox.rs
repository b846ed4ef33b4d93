//! What a `[[mailbox]]` needs beyond its configuration, shared by `watch`
//! and `check`: the server it names, its token source (built from the
//! configuration), the login that carries a token, and the one place where
//! the protocol clients' errors (which know nothing of outcomes) become an
//! [`Outcome`]: a cause, the client's words, and the fix for that kind of
//! failure, in the configuration's words (IMAP, Graph, tokens).

use std::fs;
use std::time::Duration;

use crate::config::{self, Auth, Grant, Imap, MailSource, Mailbox, OAuth2, Provider, Sasl, Tls};
use crate::graph;
use crate::http::{Kind, SetupError};
use crate::imap::{Endpoint, ImapError, Login, Security, Session};
use crate::oauth2::{self, Error, ReadSecret, Refusal, Request, Token, TokenSource};
use crate::outcome::{Cause, Outcome};

/// Tell a token_command which mailbox it is asked for, so one helper can serve several.
pub const ENV_MAILBOX: &str = "CHATWOOT_INGRESS_MAILBOX";
pub const ENV_USER: &str = "CHATWOOT_INGRESS_USER";

/// The access tokens of an OAuth2 mailbox, shared by the threads of its
/// folders; failures as outcomes.
pub struct Tokens {
    source: TokenSource,
    mailbox: Mailbox,
    /// None for Graph, which takes the token as a bearer.
    sasl: Option<Sasl>,
    oauth2: OAuth2,
}

/// The tokens of `mailbox`; None for one that logs in with a password.
pub fn tokens(mailbox: &Mailbox) -> Result<Option<Tokens>, Outcome> {
    let Auth::OAuth2(sasl, oauth2) = &mailbox.auth else {
        return Ok(None);
    };
    let source = TokenSource::new(grant(mailbox, oauth2)).map_err(|e| token_failure(mailbox, &e))?;
    Ok(Some(Tokens { source, mailbox: mailbox.clone(), sasl: *sasl, oauth2: (**oauth2).clone() }))
}

impl Tokens {
    /// A token for a login now: the cached one while it has a while to
    /// live, else a new one.
    pub fn token(&self) -> Result<Token, Outcome> {
        self.source.token().map_err(|e| token_failure(&self.mailbox, &e))
    }

    /// A new token, whatever the cache holds (for `check`).
    pub fn fetch_now(&self) -> Result<Token, Outcome> {
        self.source.fetch_now().map_err(|e| token_failure(&self.mailbox, &e))
    }

    /// The IMAP server refused `token`: it is not handed out again.
    pub fn forget(&self, token: &Token) {
        self.source.forget(token)
    }

    /// The IMAP login that carries `token`.
    pub fn login(&self, token: &Token) -> Login {
        let (user, token) = (self.mailbox.user.clone(), token.access.clone());
        match self.sasl {
            Some(Sasl::OAuthBearer) => Login::OAuthBearer { user, token },
            Some(Sasl::XOAuth2) | None => Login::XOAuth2 { user, token },
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
}

/// What to do when the server refuses a mailbox's password.
const PASSWORD_REFUSED: &str = "check user and the password (password_file) of the [[mailbox]]; some servers want the whole address as user, or an app password";

/// Why a login did not happen.
#[derive(Debug)]
pub enum LoginError {
    /// Nothing to present: the password file could not be read, or no token came.
    Credentials(Outcome),
    /// The server refused what was presented ([LIMIT] aside); the fix is
    /// for this kind of login.
    Refused(Outcome),
    /// The session failed otherwise; `usable` when the server answered NO
    /// or BAD and the session goes on.
    Failed { outcome: Outcome, usable: bool },
}

/// Log `session` in as `mailbox`: with its password, read now (a fixed
/// file takes effect without a restart), or with a token from `tokens`, got
/// by `token` (from the cache, or a new one). A token from the cache that
/// the server refuses (revoked, or expired before its time) is forgotten and
/// a new one tried, once.
pub fn log_in(
    session: &mut Session,
    mailbox: &Mailbox,
    tokens: Option<&Tokens>,
    mut token: impl FnMut(&Tokens) -> Result<Token, Outcome>,
) -> Result<(), LoginError> {
    let refused = |fix: &str, e: ImapError| match e {
        ImapError::LoginRefused { .. } if e.code() != Some("LIMIT") => {
            LoginError::Refused(imap_failure(&e).with_fix(fix))
        }
        ImapError::No { .. } | ImapError::Bad { .. } => {
            LoginError::Failed { outcome: imap_failure(&e), usable: true }
        }
        e => LoginError::Failed { outcome: imap_failure(&e), usable: false },
    };
    let tokens = match (&mailbox.auth, tokens) {
        (Auth::Password(secret), _) => {
            let password = secret.read().map_err(|e| LoginError::Credentials(e.into()))?;
            let login = Login::Password { user: mailbox.user.clone(), password };
            return session.login(&login).map_err(|e| refused(PASSWORD_REFUSED, e));
        }
        (Auth::OAuth2(..), Some(tokens)) => tokens,
        (Auth::OAuth2(..), None) => {
            return Err(LoginError::Credentials(Outcome::new(
                Cause::Bug,
                "an OAuth2 mailbox without its tokens",
            )))
        }
    };
    let first = token(tokens).map_err(LoginError::Credentials)?;
    let result = match session.login(&tokens.login(&first)) {
        Err(ImapError::LoginRefused { .. }) if !first.fresh => {
            tokens.forget(&first);
            let again = token(tokens).map_err(LoginError::Credentials)?;
            session.login(&tokens.login(&again))
        }
        result => result,
    };
    result.map_err(|e| refused(tokens.refused_fix(), e))
}

/// The token library's settings for a mailbox's `[mailbox.oauth2]` table.
fn grant(mailbox: &Mailbox, oauth2: &OAuth2) -> oauth2::Grant {
    match &oauth2.grant {
        Grant::Command(argv) => oauth2::Grant::Command(oauth2::Command {
            argv: argv.clone(),
            env: vec![(ENV_MAILBOX.into(), mailbox.name.clone()), (ENV_USER.into(), mailbox.user.clone())],
        }),
        Grant::ClientCredentials(client) => oauth2::Grant::ClientCredentials(oauth2_client(client)),
        Grant::RefreshToken { client, file, .. } => {
            let path = file.clone();
            oauth2::Grant::RefreshToken {
                client: oauth2_client(client),
                file: file.clone(),
                read: ReadSecret::new(move || read_secret(&path, "refresh token", "refresh_token_file")),
            }
        }
    }
}

/// The application of a `[mailbox.oauth2]` table, its secret read again at each use.
pub fn oauth2_client(client: &config::Client) -> oauth2::Client {
    oauth2::Client {
        client_id: client.client_id.clone(),
        client_secret: client
            .client_secret_file
            .clone()
            .map(|path| ReadSecret::new(move || read_secret(&path, "client secret", "client_secret_file"))),
        token_url: client.token_url.clone(),
        scope: client.scope.clone(),
    }
}

/// A secret file of a `[mailbox.oauth2]` table, read again at each use.
fn read_secret(
    path: &std::path::Path,
    what: &'static str,
    key: &str,
) -> Result<crate::secret::Password, String> {
    crate::secret::read_file(path, what, key, &mut Vec::new()).map_err(|e| e.to_string())
}

/// No token for `mailbox`, as an outcome: what happened, and what to do
/// about it in the configuration's terms.
pub fn token_failure(mailbox: &Mailbox, e: &Error) -> Outcome {
    use oauth2::{BadAnswer, CommandFailure, NotSignedIn, Secret};
    let reach =
        "it is tried again; if it lasts, check that this machine reaches it (DNS, firewall, HTTPS_PROXY)";
    let see_why = "run it by hand, as the user watch runs as, to see why";
    let endpoint = "check the URL in the [mailbox.oauth2] table: it must be the provider's endpoint itself";
    let (cause, fix): (Cause, Option<String>) = match e {
        Error::Refused(refusal) => (Cause::TokenRefused, Some(advice(refusal, mailbox))),
        Error::Unreachable { failure, .. } => {
            let cause = transport_cause(failure.kind);
            let fix = match cause {
                Cause::Tls => "its certificate must be valid and issued by a CA in this machine's store (a TLS-inspecting proxy's CA too)",
                _ => reach,
            };
            (cause, Some(fix.into()))
        }
        Error::BadAnswer { answer, .. } => {
            let fix = match answer {
                BadAnswer::NotJson { .. } | BadAnswer::NotOAuth2 { .. } => endpoint,
                BadAnswer::Redirected { .. } => {
                    "set the URL in the [mailbox.oauth2] table to the endpoint itself"
                }
                BadAnswer::Failing { .. } => {
                    "the provider is failing: it is tried again (see its status page if it lasts)"
                }
                BadAnswer::NoAccessToken => "check token_url: it must be the provider's token endpoint",
                BadAnswer::NoDeviceCode => {
                    "check device_authorization_url: it must be the provider's device authorization endpoint"
                }
            };
            (Cause::TokenRefused, Some(fix.into()))
        }
        Error::Secret { secret: Secret::ClientSecret, .. } => {
            (Cause::Config, Some("make it readable by the user watch runs as, and only by it".into()))
        }
        Error::Secret { secret: Secret::RefreshToken, .. } => {
            let missing = match refresh_token_file(mailbox) {
                Some(file) => fs::symlink_metadata(file).is_err(),
                None => false,
            };
            let fix = if missing {
                format!(
                    "run chatwoot-ingress oauth2 authorize --mailbox {} to sign in and write it",
                    mailbox.name
                )
            } else {
                "make it readable (and writable) by the user watch runs as, and only by it".into()
            };
            (Cause::Config, Some(fix))
        }
        Error::Command { failure, .. } => match failure {
            CommandFailure::CannotRun(_) => (
                Cause::Config,
                Some(
                    "token_command's first item must be a program that the user watch runs as may run".into(),
                ),
            ),
            CommandFailure::TimedOut(_) => (Cause::Timeout, Some(see_why.into())),
            CommandFailure::Failed(_) | CommandFailure::Unreadable(_) => {
                (Cause::TokenRefused, Some(see_why.into()))
            }
            CommandFailure::LeftRunning => {
                (Cause::TokenRefused, Some("the command must not leave a process behind".into()))
            }
            CommandFailure::Printed(_) => (
                Cause::TokenRefused,
                Some(
                    "it must print the access token on its first line, or a JSON object with access_token"
                        .into(),
                ),
            ),
        },
        Error::NotSignedIn(NotSignedIn::CodeExpired) => (
            Cause::TokenRefused,
            Some("run chatwoot-ingress oauth2 authorize again, and sign in sooner".into()),
        ),
        Error::NotSignedIn(NotSignedIn::NoSignIn(_)) => {
            (Cause::Timeout, Some("run chatwoot-ingress oauth2 authorize again".into()))
        }
        Error::Browser(_) => (Cause::Bug, None),
        Error::Setup(SetupError::CaFile(_)) => (Cause::Config, None),
        Error::Setup(_) => (Cause::Bug, None),
    };
    let outcome = Outcome::new(cause, e.to_string());
    match fix {
        Some(fix) => outcome.with_fix(fix),
        None => outcome,
    }
}

fn provider(mailbox: &Mailbox) -> Option<Provider> {
    match &mailbox.auth {
        Auth::OAuth2(_, oauth2) => oauth2.provider,
        Auth::Password(_) => None,
    }
}

fn refresh_token_file(mailbox: &Mailbox) -> Option<&std::path::Path> {
    match &mailbox.auth {
        Auth::OAuth2(_, oauth2) => match &oauth2.grant {
            Grant::RefreshToken { file, .. } => Some(file),
            _ => None,
        },
        Auth::Password(_) => None,
    }
}

/// What to do about a refusal: by Microsoft's AADSTS number when there is
/// one, else by the OAuth2 error code; in the words of the mailbox's server.
fn advice(refusal: &Refusal, mailbox: &Mailbox) -> String {
    let (error, description, kind) = (refusal.code.as_str(), refusal.description.as_str(), refusal.request);
    let (provider, graph) = (provider(mailbox), mailbox.source() == MailSource::Graph);
    let sign_in_again = format!(
        "run chatwoot-ingress oauth2 authorize --mailbox {} (as the user watch runs as) to sign in again and write a new refresh token",
        mailbox.name
    );
    let scope = match graph {
        true => "check scope: for Microsoft Graph https://graph.microsoft.com/.default for the application's own access (a national cloud's Graph host there), https://graph.microsoft.com/Mail.ReadWrite offline_access for a user's; an IMAP scope is not for Graph",
        false => "check scope: Microsoft 365 app-only https://outlook.office365.com/.default, a Microsoft 365 user https://outlook.office.com/IMAP.AccessAsUser.All offline_access, Gmail https://mail.google.com/",
    };
    let app_permission = match graph {
        true => "the application may not use client credentials: give it the application permission Mail.ReadWrite (Microsoft Graph) and grant admin consent (App registrations > API permissions > Grant admin consent)",
        false => "the application may not use client credentials: give it the application permission IMAP.AccessAsApp (Office 365 Exchange Online) with admin consent",
    };
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
        Some(70011 | 500011 | 1002012) => scope,
        Some(70008 | 50173 | 700082 | 9002313 | 50076 | 50079 | 50158 | 700005) if kind == Request::RefreshToken => {
            return format!("the refresh token is expired or revoked (a password or MFA change revokes it): {sign_in_again}")
        }
        _ => match (error, kind) {
            ("invalid_client", _) => "check client_id and client_secret_file (fixing the file needs no restart)",
            ("invalid_grant", Request::RefreshToken) => {
                let testing = match provider {
                    Some(Provider::Google) => " (a Google OAuth app whose publishing status is Testing loses its refresh tokens after 7 days: publish it)",
                    _ => "",
                };
                return format!("the refresh token is expired or revoked: {sign_in_again}{testing}");
            }
            ("unauthorized_client", Request::ClientCredentials) => app_permission,
            ("unauthorized_client", _) => {
                "the application may not use this grant: for the device code, allow public client flows in its registration (Authentication)"
            }
            ("invalid_scope" | "invalid_resource", _) => scope,
            ("unsupported_grant_type", _) => "check token_url: it must be the provider's token endpoint",
            ("access_denied" | "authorization_declined", _) => "the sign-in was declined: run it again and accept",
            ("expired_token", _) => "the code expired before the sign-in: run it again and sign in sooner",
            ("temporarily_unavailable" | "server_error", _) => "the provider is failing: it is tried again",
            _ => "see the provider's reason, and check the [mailbox.oauth2] table",
        },
    };
    fix.to_string()
}

/// The IMAP server of a `[[mailbox]]`, as `watch` and `check` reach it.
pub fn endpoint(mailbox: &Mailbox, imap: &Imap, timeout: Duration) -> Endpoint {
    let security = match imap.tls {
        Tls::Implicit => Security::Implicit,
        Tls::StartTls => Security::StartTls,
        Tls::None => Security::None,
    };
    Endpoint { host: imap.host.clone(), port: imap.port, security, ca_file: mailbox.ca_file.clone(), timeout }
}

/// An IMAP failure as the outcome it is for a mailbox.
pub fn imap_failure(e: &ImapError) -> Outcome {
    Outcome::new(imap_cause(e), e.to_string()).with_fix(imap_fix(e))
}

fn imap_cause(e: &ImapError) -> Cause {
    match e {
        _ if e.code() == Some("LIMIT") => Cause::MailboxLimit,
        ImapError::Dns(_) => Cause::Dns,
        ImapError::Refused(_) => Cause::Refused,
        ImapError::Tls(_) | ImapError::Cleartext(_) => Cause::Tls,
        ImapError::Timeout(_) => Cause::Timeout,
        ImapError::Lost(_) => Cause::ConnectionLost,
        ImapError::LoginRefused { .. } => Cause::MailboxLogin,
        ImapError::No { .. } | ImapError::Bad { .. } | ImapError::Protocol(_) => Cause::MailboxFailed,
    }
}

/// What to do about it: the transport causes' own advice speaks of the
/// ingress, this of the IMAP server; a NO's response code (RFC 5530) says
/// more than its command.
pub fn imap_fix(e: &ImapError) -> &'static str {
    match e.code() {
        Some("LIMIT") => return Cause::MailboxLimit.advice().unwrap_or_default(),
        Some("OVERQUOTA") => {
            return "the mailbox (or the folder messages are moved to) is over its quota: make room or raise it; messages already delivered are moved or flagged once it works, never sent again"
        }
        Some("EXPUNGEISSUED") => {
            return "another client removed messages meanwhile; it is tried again"
        }
        Some("NONEXISTENT" | "TRYCREATE") => {
            return "a folder named in the [[mailbox]] (folders, move_to, refused_folder) does not exist: chatwoot-ingress check lists the folders"
        }
        Some("NOPERM") => {
            return "the account may not do this in that folder: check its rights (ACL) on the server"
        }
        Some("INUSE" | "UNAVAILABLE" | "SERVERBUG") => {
            return "the IMAP server is busy or failing; it is tried again (see its log if it goes on)"
        }
        // The login's codes (AUTHENTICATIONFAILED…) say what its kind says.
        _ => {}
    }
    match e {
        ImapError::Dns(_) => "check host in the [[mailbox]], and this machine's DNS",
        ImapError::Refused(_) => {
            "check host, port and tls of the [[mailbox]] (993 is implicit TLS, 143 plain or STARTTLS), and that no firewall is in between"
        }
        ImapError::Tls(_) => {
            "the IMAP server's certificate must be valid for host and issued by a CA this machine trusts (set ca_file in the [[mailbox]] for a private CA); check tls and port"
        }
        ImapError::Cleartext(_) => {
            "the password would cross the network in clear: use tls = \"implicit\" (port 993) or a server that offers STARTTLS; cleartext is only for a server on this machine"
        }
        ImapError::Timeout(_) => "the IMAP server stopped answering; it is tried again",
        ImapError::Lost(_) => {
            "the IMAP server closed the connection (a restart, an idle limit, a kick); it is tried again"
        }
        ImapError::LoginRefused { .. } => Cause::MailboxLogin.advice().unwrap_or_default(),
        ImapError::No { .. } | ImapError::Bad { .. } | ImapError::Protocol(_) => {
            Cause::MailboxFailed.advice().unwrap_or_default()
        }
    }
}

/// What to do about Graph's 403 ErrorAccessDenied on `mailbox`: the app is
/// outside the mailbox's RBAC scope, or has no Mail.ReadWrite at all
/// (`granted`: whether its token carries it, when that is known).
pub fn access_denied_fix(mailbox: &Mailbox, granted: Option<bool>) -> String {
    let scope = format!(
        "this app is not in the mailbox's RBAC scope: in Exchange Online PowerShell, New-ManagementRoleAssignment -App <its service principal> -Role \"Application Mail.ReadWrite\" -CustomResourceScope <a management scope that holds {}>; Test-ServicePrincipalAuthorization shows it (changes take a while to apply)",
        mailbox.user
    );
    match granted {
        Some(true) => format!(
            "the token carries Mail.ReadWrite, so {scope}; or a retired application access policy still leaves it out (Get-ApplicationAccessPolicy)"
        ),
        Some(false) => "the token has no Mail.ReadWrite: see the permissions step".into(),
        None => format!(
            "{scope}; or the application has no Mail.ReadWrite at all (an Exchange role assignment, or the application permission with admin consent)"
        ),
    }
}

/// A Graph failure as the outcome it is for a mailbox: the client's words
/// (Graph's status, error code and message, never its request ids) and the
/// fix for that kind of failure.
pub fn graph_failure(mailbox: &Mailbox, e: &graph::Error) -> Outcome {
    use graph::Error as E;
    let code = |name: &str| e.has_code(name);
    let (cause, fix): (Cause, String) = match e {
        E::Throttled { .. } => (
            Cause::MailboxLimit,
            "Graph throttles this application on this mailbox (Outlook allows 10,000 requests in 10 minutes and 4 at once per application and mailbox): watch waits as long as Graph asks; if it lasts, look for other programs using the same application on this mailbox, or raise poll_interval".into(),
        ),
        E::Unauthorized { .. } => (
            Cause::MailboxLogin,
            "Graph refused a new access token too: it must be for Microsoft Graph (scope https://graph.microsoft.com/.default, not an IMAP scope), from the mailbox's tenant, and not revoked; chatwoot-ingress check shows the token's permissions".into(),
        ),
        E::Forbidden { .. } if code("ErrorAccessDenied") => (Cause::MailboxLogin, access_denied_fix(mailbox, None)),
        E::Forbidden { .. } => (
            Cause::MailboxLogin,
            "the application may not do this in this mailbox: it needs the application permission Mail.ReadWrite (Microsoft Graph) with admin consent, and the mailbox in its RBAC scope".into(),
        ),
        E::NotFound { .. } if code("ErrorInvalidUser") || code("MailboxNotEnabledForRESTAPI") => (
            Cause::MailboxFailed,
            "check user in the [[mailbox]]: the mailbox's user principal name or object id, in the application's tenant, with an Exchange Online mailbox".into(),
        ),
        E::NotFound { .. } => (
            Cause::MailboxFailed,
            "a folder named in the [[mailbox]] (folders, move_to, refused_folder) or a message is not there any more; chatwoot-ingress check lists the folders".into(),
        ),
        E::Conflict { .. } => (Cause::MailboxFailed, "a folder of that name appeared meanwhile; it is tried again".into()),
        E::SyncStateInvalid { .. } => (
            Cause::MailboxFailed,
            "Graph lost the delta state twice in one round; a full round is tried again".into(),
        ),
        E::Refused { .. } => (
            Cause::MailboxFailed,
            "Graph will not take the request as it is: check user and the folder names of the [[mailbox]], and that graph_url is Microsoft Graph".into(),
        ),
        E::Server { .. } => (
            Cause::MailboxFailed,
            "Graph or Exchange Online is failing; it is tried again with backoff (Microsoft 365 service health shows incidents)".into(),
        ),
        E::Transport { kind, .. } => {
            let cause = transport_cause(*kind);
            let fix = match cause {
                Cause::Dns => "check graph_url and this machine's DNS",
                Cause::Refused => "check that this machine reaches graph_url (a firewall, HTTPS_PROXY)",
                Cause::Tls => "Graph's certificate must be issued by a CA this machine trusts (set ca_file in the [[mailbox]] for a TLS-inspecting proxy's CA)",
                _ => "Graph stopped answering or closed the connection; it is tried again",
            };
            (cause, fix.into())
        }
        E::BadAnswer(_) => (
            Cause::MailboxFailed,
            "graph_url must be Microsoft Graph itself (or a national cloud's), not a proxy or portal that answers for it".into(),
        ),
        E::TooLarge { .. } => (Cause::TooLarge, "raise max_size if Chatwoot and its proxy accept larger messages".into()),
    };
    Outcome::new(cause, e.to_string()).with_fix(fix)
}

/// What a transport failure of a protocol client's HTTP request is.
fn transport_cause(kind: Kind) -> Cause {
    match kind {
        Kind::Dns => Cause::Dns,
        Kind::Refused => Cause::Refused,
        Kind::Tls | Kind::HandshakeEnded => Cause::Tls,
        Kind::Timeout => Cause::Timeout,
        Kind::Lost => Cause::ConnectionLost,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn refusal(code: &str, description: &str, request: Request) -> Refusal {
        Refusal { request, code: code.into(), description: description.into(), by: None }
    }

    #[test]
    fn refusals_get_the_fix_their_code_calls_for() {
        let (imap, _dir) = mailbox("token_command = [\"x\"]");
        let fix = |error, description, kind| advice(&refusal(error, description, kind), &imap);
        assert!(fix(
            "invalid_client",
            "AADSTS7000215: Invalid client secret provided.",
            Request::ClientCredentials
        )
        .contains("Value (not its Secret ID)"));
        assert!(fix("invalid_grant", "AADSTS70008: The refresh token has expired", Request::RefreshToken)
            .contains("oauth2 authorize --mailbox support"));
        assert!(fix("invalid_grant", "Token has been expired or revoked.", Request::RefreshToken)
            .contains("oauth2 authorize --mailbox support"));
        assert!(fix(
            "invalid_client",
            "AADSTS65001: The user or administrator has not consented",
            Request::SignIn
        )
        .contains("admin consent"));
        assert!(fix("unauthorized_client", "", Request::ClientCredentials).contains("IMAP.AccessAsApp"));
        let google = refusal("invalid_grant", "Bad Request", Request::RefreshToken);
        let (gmail, _dir) =
            mailbox("provider = \"google\"\nclient_id = \"desktop\"\nrefresh_token_file = \"/var/lib/x/rt\"");
        assert!(advice(&google, &gmail).contains("Testing"));
    }

    /// The mailbox of a configuration with one [[mailbox]] whose
    /// [mailbox.oauth2] table is `oauth2`; its directory beside it.
    fn mailbox(oauth2: &str) -> (Mailbox, tempfile::TempDir) {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("config.toml");
        let text = format!(
            "[[mailbox]]\nname = \"support\"\nhost = \"imap.example.com\"\nuser = \"support@example.com\"\nauth = \"xoauth2\"\n[mailbox.oauth2]\n{oauth2}\n"
        );
        fs::write(&path, text).unwrap();
        let flags = config::Overrides { config: Some(path), ..Default::default() };
        let config = config::Config::load_with(&flags, |_| None).unwrap();
        (config.mailboxes[0].clone(), dir)
    }

    #[test]
    fn each_token_failure_has_its_cause_and_a_fix_in_the_configurations_words() {
        let (command, _dir) = mailbox("token_command = [\"/nonexistent/helper\"]");
        let e = tokens(&command).unwrap().unwrap().token().unwrap_err();
        assert_eq!(e.cause, Cause::Config, "{e}");
        assert!(e.reason().starts_with("cannot run token_command /nonexistent/helper"), "{e}");
        assert!(e.fix().unwrap().contains("token_command's first item"), "{e}");

        let (user, dir) = mailbox(
            "client_id = \"app\"\nrefresh_token_file = \"rt\"\ntoken_url = \"https://login.example/token\"",
        );
        let e = tokens(&user).unwrap().unwrap().token().unwrap_err();
        assert_eq!(e.cause, Cause::Config, "{e}");
        assert!(e.fix().unwrap().contains("oauth2 authorize --mailbox support"), "{e}");
        fs::write(dir.path().join("rt"), "").unwrap();
        let e = tokens(&user).unwrap().unwrap().token().unwrap_err();
        assert!(e.fix().unwrap().starts_with("make it readable (and writable)"), "{e}");

        let bad =
            Error::BadAnswer { host: "login.example:443".into(), answer: oauth2::BadAnswer::NoAccessToken };
        let e = token_failure(&user, &bad);
        assert_eq!(e.cause, Cause::TokenRefused);
        assert_eq!(
            e.reason(),
            "the token service at login.example:443 answered without a usable access_token"
        );
        let refused = crate::http::Failure { kind: Kind::Refused, detail: "connection refused".into() };
        let e = token_failure(
            &user,
            &Error::Unreachable {
                host: "login.example:443".into(),
                failure: refused,
                waited: std::time::Duration::from_secs(30),
            },
        );
        assert_eq!(e.cause, Cause::Refused);
        assert_eq!(
            e.reason(),
            "cannot connect to the token service at login.example:443: connection refused"
        );
        let e = token_failure(&user, &Error::Refused(refusal("invalid_grant", "", Request::RefreshToken)));
        assert_eq!((e.cause, e.reason()), (Cause::TokenRefused, "the sign-in failed: invalid_grant"));
        assert!(e.fix().unwrap().contains("oauth2 authorize --mailbox support"));
    }

    fn no(code: &str) -> ImapError {
        ImapError::No { command: "UID MOVE".into(), code: Some(code.into()), text: "x".into() }
    }

    #[test]
    fn each_kind_gets_its_own_fix_not_another_kinds() {
        assert!(imap_fix(&no("OVERQUOTA")).contains("quota"));
        assert!(!imap_fix(&no("OVERQUOTA")).contains("folder names"));
        assert!(imap_fix(&no("EXPUNGEISSUED")).contains("another client"));
        let limit = ImapError::LoginRefused { code: Some("LIMIT".into()), text: "too many".into() };
        assert_eq!(imap_failure(&limit).cause, Cause::MailboxLimit);
        assert!(imap_fix(&limit).contains("max_connections"), "{}", imap_fix(&limit));
        assert!(!imap_fix(&limit).contains("password"));
        let cleartext = ImapError::Cleartext("no STARTTLS".into());
        assert!(!imap_fix(&cleartext).contains("certificate"), "{}", imap_fix(&cleartext));
        let login = ImapError::LoginRefused { code: Some("AUTHENTICATIONFAILED".into()), text: "no".into() };
        assert_eq!(imap_failure(&login).cause, Cause::MailboxLogin);
        for (e, cause) in [
            (ImapError::Tls("certificate".into()), Cause::Tls),
            (ImapError::Dns("x".into()), Cause::Dns),
            (ImapError::Refused("x".into()), Cause::Refused),
            (ImapError::Lost("x".into()), Cause::ConnectionLost),
            (ImapError::Timeout("x".into()), Cause::Timeout),
        ] {
            assert_eq!(imap_failure(&e).cause, cause, "{e:?}");
        }
    }

    #[test]
    fn graph_failures_get_the_cause_and_fix_of_their_kind() {
        use crate::graph::{Detail, Error as G};
        let (m, _dir) = mailbox("token_command = [\"x\"]");
        let detail = |status, code: &str| Detail { status, code: Some(code.into()), message: None };
        let cases = [
            (
                G::Throttled { retry_after: None, detail: detail(429, "ApplicationThrottled") },
                Cause::MailboxLimit,
                "10,000 requests",
            ),
            (
                G::Unauthorized { detail: detail(401, "InvalidAuthenticationToken") },
                Cause::MailboxLogin,
                "https://graph.microsoft.com/.default",
            ),
            (G::Forbidden { detail: detail(403, "ErrorAccessDenied") }, Cause::MailboxLogin, "RBAC scope"),
            (G::NotFound { detail: detail(404, "ErrorInvalidUser") }, Cause::MailboxFailed, "check user"),
            (
                G::NotFound { detail: detail(404, "ErrorItemNotFound") },
                Cause::MailboxFailed,
                "folders, move_to, refused_folder",
            ),
            (
                G::Server { retry_after: None, detail: detail(503, "serviceNotAvailable") },
                Cause::MailboxFailed,
                "backoff",
            ),
            (G::Transport { kind: Kind::Tls, detail: "x".into() }, Cause::Tls, "ca_file"),
            (G::Transport { kind: Kind::Dns, detail: "x".into() }, Cause::Dns, "graph_url"),
            (G::BadAnswer("x".into()), Cause::MailboxFailed, "graph_url must be Microsoft Graph"),
        ];
        for (e, cause, fix) in cases {
            let outcome = graph_failure(&m, &e);
            assert_eq!(outcome.cause, cause, "{e:?}");
            assert!(outcome.fix().unwrap().contains(fix), "{e:?}: {outcome}");
            assert_eq!(outcome.reason(), e.to_string());
        }
        assert!(access_denied_fix(&m, Some(true))
            .starts_with("the token carries Mail.ReadWrite, so this app is not in the mailbox's RBAC scope"));
        assert!(access_denied_fix(&m, None).contains("New-ManagementRoleAssignment"));
    }
}
