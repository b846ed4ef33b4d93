//! `[[mailbox]]` tables: the IMAP mailboxes `watch` fetches from.

use std::fs;
use std::path::{Path, PathBuf};
use std::time::Duration;

use reqwest::Url;
use serde::Deserialize;
use toml::{Spanned, Value};

use super::{error, header_name, unreadable, warn_if_world_readable, ConfigError, File, Password, Secret};
use crate::sys::{io_reason, is_loopback};

/// How the connection to the IMAP server is protected.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Tls {
    /// TLS from the first byte (port 993).
    Implicit,
    /// STARTTLS after the greeting (port 143); never falls back to cleartext.
    StartTls,
    /// Cleartext: only to a server on this machine.
    None,
}

/// What happens to a message once the ingress answered 2xx.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum After {
    Seen,
    Move,
    Delete,
}

/// One mailbox to watch, resolved and checked.
#[derive(Clone, Debug)]
pub struct Mailbox {
    pub name: String,
    pub host: String,
    pub port: u16,
    pub tls: Tls,
    pub user: String,
    pub auth: Auth,
    pub folders: Vec<String>,
    pub after: After,
    /// Where delivered messages go with `after = "move"`.
    pub move_to: Option<String>,
    /// Where permanently refused messages go; never fetched again.
    pub refused_folder: String,
    pub recipient_header: Option<String>,
    pub ca_file: Option<PathBuf>,
    /// How often to look for new mail on a server without IDLE.
    pub poll_interval: Duration,
    /// "mailbox support (FILE line N)", for messages.
    pub place: String,
}

/// How a mailbox logs in.
#[derive(Clone, Debug)]
pub enum Auth {
    /// LOGIN (or AUTHENTICATE PLAIN), the password read again at each login.
    Password(Secret),
    /// AUTHENTICATE with an OAuth2 access token.
    OAuth2(Sasl, Box<OAuth2>),
}

/// The SASL mechanism that carries an access token.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Sasl {
    XOAuth2,
    /// RFC 7628.
    OAuthBearer,
}

/// Whose defaults fill in the endpoints and the scope.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Provider {
    Microsoft,
    Google,
}

/// `[mailbox.oauth2]`, resolved: where access tokens come from.
#[derive(Clone, Debug)]
pub struct OAuth2 {
    pub provider: Option<Provider>,
    pub grant: Grant,
}

/// How an access token is obtained.
#[derive(Clone, Debug)]
pub enum Grant {
    /// A program of the administrator's prints it (argv, no shell).
    Command(Vec<String>),
    /// Client credentials: the application's own access (Microsoft 365
    /// app-only, which shared mailboxes allow), no user to sign in.
    ClientCredentials(Client),
    /// A user's refresh token, kept in a file that `oauth2 authorize`
    /// writes and that rotated refresh tokens replace.
    RefreshToken {
        client: Client,
        file: PathBuf,
        /// For `oauth2 authorize`: the device-code flow when there is one,
        /// else the browser's, redirected to this machine.
        device_authorization_url: Option<Url>,
        authorization_url: Option<Url>,
    },
}

/// The application registered with the provider, and its token endpoint.
#[derive(Clone, Debug)]
pub struct Client {
    pub client_id: String,
    /// Read again at each token request: fixing the file needs no restart.
    pub client_secret_file: Option<PathBuf>,
    pub token_url: Url,
    pub scope: Option<String>,
}

/// Microsoft's scope for app-only IMAP (client credentials), and for a
/// user's mailbox (a refresh token; offline_access is what yields one).
pub const MICROSOFT_APP_SCOPE: &str = "https://outlook.office365.com/.default";
pub const MICROSOFT_USER_SCOPE: &str = "https://outlook.office.com/IMAP.AccessAsUser.All offline_access";
/// Gmail's only scope for IMAP.
pub const GOOGLE_SCOPE: &str = "https://mail.google.com/";
const MICROSOFT_LOGIN: &str = "https://login.microsoftonline.com";
const GOOGLE_TOKEN_URL: &str = "https://oauth2.googleapis.com/token";
const GOOGLE_AUTHORIZATION_URL: &str = "https://accounts.google.com/o/oauth2/v2/auth";

pub const DEFAULT_FOLDER: &str = "INBOX";
pub const DEFAULT_REFUSED_FOLDER: &str = "Refused";
pub const DEFAULT_POLL_INTERVAL: Duration = Duration::from_secs(60);

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct MailboxFile {
    name: Option<Spanned<Value>>,
    host: Option<Spanned<Value>>,
    port: Option<Spanned<Value>>,
    tls: Option<Spanned<Value>>,
    user: Option<Spanned<Value>>,
    password: Option<Spanned<Value>>,
    password_file: Option<Spanned<Value>>,
    folders: Option<Spanned<Value>>,
    after: Option<Spanned<Value>>,
    move_to: Option<Spanned<Value>>,
    refused_folder: Option<Spanned<Value>>,
    recipient_header: Option<Spanned<Value>>,
    ca_file: Option<Spanned<Value>>,
    poll_interval: Option<Spanned<Value>>,
    auth: Option<Spanned<Value>>,
    oauth2: Option<Spanned<OAuth2File>>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct OAuth2File {
    provider: Option<Spanned<Value>>,
    tenant: Option<Spanned<Value>>,
    client_id: Option<Spanned<Value>>,
    client_secret_file: Option<Spanned<Value>>,
    refresh_token_file: Option<Spanned<Value>>,
    token_command: Option<Spanned<Value>>,
    token_url: Option<Spanned<Value>>,
    scope: Option<Spanned<Value>>,
    device_authorization_url: Option<Spanned<Value>>,
    authorization_url: Option<Spanned<Value>>,
}

/// The `[[mailbox]]` tables, each complete and consistent, names unique.
pub(super) fn mailboxes(
    file: &File,
    tables: &[Spanned<MailboxFile>],
    warnings: &mut Vec<String>,
) -> Result<Vec<Mailbox>, ConfigError> {
    let mut mailboxes: Vec<Mailbox> = Vec::new();
    for (index, table) in tables.iter().enumerate() {
        let line = file.line(table.span());
        let table = table.get_ref();
        let unnamed = format!("mailbox {} ({} line {line})", index + 1, file.path.display());
        let name = match &table.name {
            Some(value) => {
                let name = file.string("name", value)?;
                let valid = !name.is_empty()
                    && name.len() <= 64
                    && name.bytes().all(|b| b.is_ascii_alphanumeric() || b"._-".contains(&b))
                    && !name.starts_with('.');
                if !valid {
                    return Err(error(format!(
                        "{}: a mailbox name is letters, digits, '.', '_' and '-' (it names the state file)",
                        file.at("name", value)
                    )));
                }
                name
            }
            None => return Err(error(format!("{unnamed} has no `name`"))),
        };
        let place = format!("mailbox {name} ({} line {line})", file.path.display());
        if let Some(other) = mailboxes.iter().find(|m| m.name == name) {
            return Err(error(format!("{place}: the name is already that of {}", other.place)));
        }
        let missing = |key: &str| error(format!("{place} has no `{key}`"));
        let text =
            |key: &'static str, value: &Option<Spanned<Value>>| -> Result<Option<String>, ConfigError> {
                value.as_ref().map(|v| file.string(key, v)).transpose()
            };

        let host = text("host", &table.host)?.ok_or_else(|| missing("host"))?;
        if host.is_empty() || host.contains(|c: char| c.is_whitespace() || c == '/') {
            return Err(error(format!("{}: not a host name", file.at("host", table.host.as_ref().unwrap()))));
        }
        let tls = match &table.tls {
            None => Tls::Implicit,
            Some(value) => match file.string("tls", value)?.as_str() {
                "implicit" => Tls::Implicit,
                "starttls" => Tls::StartTls,
                "none" => Tls::None,
                _ => {
                    let place = file.at("tls", value);
                    return Err(error(format!("{place} must be \"implicit\", \"starttls\" or \"none\"")));
                }
            },
        };
        if tls == Tls::None && !is_loopback(&host) {
            return Err(error(format!(
                "{place}: tls = \"none\" would send the password or token in clear to {host}; it is only allowed for a server on this machine (use implicit or starttls)"
            )));
        }
        let port = match &table.port {
            Some(value) => match value.get_ref() {
                Value::Integer(n) if (1..=65535).contains(n) => *n as u16,
                _ => {
                    return Err(error(format!(
                        "{} must be a port number (1 to 65535)",
                        file.at("port", value)
                    )))
                }
            },
            None if tls == Tls::Implicit => 993,
            None => 143,
        };
        let user = text("user", &table.user)?.ok_or_else(|| missing("user"))?;
        let sasl = match &table.auth {
            None => None,
            Some(value) => match file.string("auth", value)?.as_str() {
                "password" => None,
                "xoauth2" => Some(Sasl::XOAuth2),
                "oauthbearer" => Some(Sasl::OAuthBearer),
                _ => {
                    let place = file.at("auth", value);
                    return Err(error(format!(
                        "{place} must be \"password\", \"xoauth2\" or \"oauthbearer\""
                    )));
                }
            },
        };
        let auth = match (sasl, &table.oauth2) {
            (None, Some(oauth2)) => {
                return Err(error(format!(
                "{place}: [mailbox.oauth2] (line {}) is used only with auth = \"xoauth2\" or \"oauthbearer\"",
                file.line(oauth2.span())
            )))
            }
            (None, None) => {
                // Read now, so that a mistake shows at once, and again at each login.
                let (read, password_file) = file
                    .password(&table.password, &table.password_file, warnings)?
                    .ok_or_else(|| missing("password_file"))?;
                if read.expose().is_empty() {
                    return Err(error(format!("{place}: the password is empty")));
                }
                Auth::Password(match (password_file, &table.password_file) {
                    (Some(path), Some(value)) => {
                        Secret::File { path, place: file.at("password_file", value) }
                    }
                    _ => Secret::Inline(read),
                })
            }
            (Some(_), None) => {
                return Err(error(format!(
                    "{place}: auth = \"xoauth2\" or \"oauthbearer\" needs a [mailbox.oauth2] table"
                )))
            }
            (Some(sasl), Some(oauth2)) => {
                if let Some(value) = table.password.as_ref().or(table.password_file.as_ref()) {
                    return Err(error(format!(
                        "{}: a mailbox with auth = \"xoauth2\" or \"oauthbearer\" logs in with a token, not a password: remove it",
                        file.at(if table.password.is_some() { "password" } else { "password_file" }, value)
                    )));
                }
                Auth::OAuth2(sasl, Box::new(oauth2_table(file, &place, oauth2, warnings)?))
            }
        };
        let folders = match &table.folders {
            Some(value) => {
                let folders = file.strings("folders", value)?;
                if folders.is_empty() || folders.iter().any(|f| f.trim().is_empty()) {
                    return Err(error(format!(
                        "{}: name at least one folder, none empty",
                        file.at("folders", value)
                    )));
                }
                folders
            }
            None => vec![DEFAULT_FOLDER.to_string()],
        };
        let after = match &table.after {
            None => After::Seen,
            Some(value) => match file.string("after", value)?.as_str() {
                "seen" => After::Seen,
                "move" => After::Move,
                "delete" => After::Delete,
                _ => {
                    let place = file.at("after", value);
                    return Err(error(format!("{place} must be \"seen\", \"move\" or \"delete\"")));
                }
            },
        };
        let move_to = text("move_to", &table.move_to)?;
        match (after, &move_to) {
            (After::Move, None) => return Err(error(format!("{place}: after = \"move\" needs `move_to`"))),
            (After::Move, Some(target)) if folders.contains(target) => {
                return Err(error(format!("{place}: move_to {target:?} is one of the folders watched")))
            }
            _ => {}
        }
        let refused_folder = text("refused_folder", &table.refused_folder)?
            .unwrap_or_else(|| DEFAULT_REFUSED_FOLDER.to_string());
        if folders.contains(&refused_folder) {
            return Err(error(format!(
                "{place}: refused_folder {refused_folder:?} is one of the folders watched: refused mail would be fetched again"
            )));
        }
        let recipient_header = match &table.recipient_header {
            Some(value) => Some(header_name(
                &file.string("recipient_header", value)?,
                &file.at("recipient_header", value),
            )?),
            None => None,
        };
        let ca_file = table.ca_file.as_ref().map(|v| file.path("ca_file", v)).transpose()?;
        let poll_interval = match &table.poll_interval {
            Some(value) => match value.get_ref() {
                Value::Integer(n) if (5..=3600).contains(n) => Duration::from_secs(*n as u64),
                _ => {
                    return Err(error(format!(
                        "{} must be 5 to 3600 seconds",
                        file.at("poll_interval", value)
                    )))
                }
            },
            None => DEFAULT_POLL_INTERVAL,
        };
        mailboxes.push(Mailbox {
            name,
            host,
            port,
            tls,
            user,
            auth,
            folders,
            after,
            move_to,
            refused_folder,
            recipient_header,
            ca_file,
            poll_interval,
            place,
        });
    }
    Ok(mailboxes)
}

/// `[mailbox.oauth2]`: one way to get tokens, each key it needs and none
/// that another way would use.
fn oauth2_table(
    file: &File,
    mailbox: &str,
    table: &Spanned<OAuth2File>,
    warnings: &mut Vec<String>,
) -> Result<OAuth2, ConfigError> {
    let place = format!("{mailbox}: [mailbox.oauth2] (line {})", file.line(table.span()));
    let table = table.get_ref();
    let text = |key: &'static str, value: &Option<Spanned<Value>>| -> Result<Option<String>, ConfigError> {
        value.as_ref().map(|v| file.string(key, v)).transpose()
    };
    let provider = match &table.provider {
        None => None,
        Some(value) => match file.string("provider", value)?.as_str() {
            "microsoft" => Some(Provider::Microsoft),
            "google" => Some(Provider::Google),
            _ => {
                let at = file.at("provider", value);
                return Err(error(format!("{at} must be \"microsoft\" or \"google\"")));
            }
        },
    };
    // Every key but token_command: the command replaces them all.
    let keys: [(&str, &Option<Spanned<Value>>); 9] = [
        ("provider", &table.provider),
        ("tenant", &table.tenant),
        ("client_id", &table.client_id),
        ("client_secret_file", &table.client_secret_file),
        ("refresh_token_file", &table.refresh_token_file),
        ("token_url", &table.token_url),
        ("scope", &table.scope),
        ("device_authorization_url", &table.device_authorization_url),
        ("authorization_url", &table.authorization_url),
    ];
    let unused = |keys: &[(&str, &Option<Spanned<Value>>)], why: &str| -> Result<(), ConfigError> {
        match keys.iter().find_map(|(key, value)| value.as_ref().map(|v| (key, v))) {
            Some((key, value)) => Err(error(format!("{}: {why}: remove it", file.at(key, value)))),
            None => Ok(()),
        }
    };
    if let Some(value) = &table.token_command {
        let argv = file.strings("token_command", value)?;
        if argv.first().is_none_or(|program| program.trim().is_empty()) {
            return Err(error(format!(
                "{}: name the program first: token_command = [\"/usr/local/bin/get-token\", \"--for\", \"support\"]",
                file.at("token_command", value)
            )));
        }
        unused(&keys, "token_command prints the token, so no other way of getting one is used")?;
        let mut argv = argv;
        // A relative program path, like every path here, is relative to the file.
        if argv[0].contains('/') && Path::new(&argv[0]).is_relative() {
            if let Some(dir) = file.path.parent() {
                argv[0] = dir.join(&argv[0]).to_string_lossy().into_owned();
            }
        }
        return Ok(OAuth2 { provider: None, grant: Grant::Command(argv) });
    }
    let client_id = match &table.client_id {
        Some(value) => {
            let id = file.string("client_id", value)?;
            if id.trim().is_empty() || id.chars().any(char::is_control) {
                return Err(error(format!("{}: not a client ID", file.at("client_id", value))));
            }
            id.trim().to_string()
        }
        None => {
            return Err(error(format!(
                "{place} has no `client_id` (the application (client) ID from the provider), nor a `token_command`"
            )))
        }
    };
    let tenant = match &table.tenant {
        Some(value) => {
            let tenant = file.string("tenant", value)?;
            let valid =
                !tenant.is_empty() && tenant.bytes().all(|b| b.is_ascii_alphanumeric() || b".-".contains(&b));
            if !valid {
                return Err(error(format!(
                    "{}: a tenant is a directory (tenant) ID or a domain such as contoso.onmicrosoft.com",
                    file.at("tenant", value)
                )));
            }
            if provider != Some(Provider::Microsoft) {
                return Err(error(format!(
                    "{}: tenant is for provider = \"microsoft\"",
                    file.at("tenant", value)
                )));
            }
            Some(tenant)
        }
        None => None,
    };
    let client_secret_file = match &table.client_secret_file {
        Some(value) => {
            // Read now, so that a mistake shows at once, and again at each request.
            let path = file.path("client_secret_file", value)?;
            read_secret_file(&path, "client_secret_file")
                .map_err(|e| error(format!("{}: {e}", file.at("client_secret_file", value))))?;
            warn_if_world_readable(&path, warnings);
            Some(path)
        }
        None => None,
    };
    let url = |key: &'static str, value: &Option<Spanned<Value>>| -> Result<Option<Url>, ConfigError> {
        value.as_ref().map(|value| endpoint(file, key, value)).transpose()
    };
    let scope = match text("scope", &table.scope)? {
        Some(scope) if scope.trim().is_empty() || scope.chars().any(char::is_control) => {
            return Err(error(format!(
                "{}: name at least one scope",
                file.at("scope", table.scope.as_ref().unwrap())
            )))
        }
        scope => scope.map(|s| s.trim().to_string()),
    };
    let token_url = url("token_url", &table.token_url)?;
    // Microsoft's endpoints are the tenant's; "common" serves any user's
    // sign-in, but an application's own access needs its tenant.
    let microsoft =
        |tenant: &str, path: &str| Url::parse(&format!("{MICROSOFT_LOGIN}/{tenant}/oauth2/v2.0/{path}")).ok();
    let needs_url =
        || error(format!("{place} has no `token_url`: set it, or provider = \"microsoft\" or \"google\""));
    match &table.refresh_token_file {
        Some(value) => {
            let refresh_file = file.path("refresh_token_file", value)?;
            if refresh_file.file_name().is_none() {
                return Err(error(format!("{}: name a file", file.at("refresh_token_file", value))));
            }
            let tenant = tenant.as_deref().unwrap_or("common");
            let (default_token, default_device, default_authorization, default_scope) = match provider {
                Some(Provider::Microsoft) => (
                    microsoft(tenant, "token"),
                    microsoft(tenant, "devicecode"),
                    microsoft(tenant, "authorize"),
                    Some(MICROSOFT_USER_SCOPE),
                ),
                // Google's device flow does not allow the mail scope: the
                // browser's flow, redirected to this machine, is the way.
                Some(Provider::Google) => (
                    Url::parse(GOOGLE_TOKEN_URL).ok(),
                    None,
                    Url::parse(GOOGLE_AUTHORIZATION_URL).ok(),
                    Some(GOOGLE_SCOPE),
                ),
                None => (None, None, None, None),
            };
            let client = Client {
                client_id,
                client_secret_file,
                token_url: token_url.or(default_token).ok_or_else(needs_url)?,
                scope: scope.or(default_scope.map(str::to_string)),
            };
            Ok(OAuth2 {
                provider,
                grant: Grant::RefreshToken {
                    client,
                    file: refresh_file,
                    device_authorization_url: url(
                        "device_authorization_url",
                        &table.device_authorization_url,
                    )?
                    .or(default_device),
                    authorization_url: url("authorization_url", &table.authorization_url)?
                        .or(default_authorization),
                },
            })
        }
        None => {
            let why = "it is for oauth2 authorize, which needs refresh_token_file";
            unused(
                &[
                    ("device_authorization_url", &table.device_authorization_url),
                    ("authorization_url", &table.authorization_url),
                ],
                why,
            )?;
            if provider == Some(Provider::Google) {
                return Err(error(format!(
                    "{place}: Gmail gives no token for client credentials: set refresh_token_file (and run chatwoot-ingress oauth2 authorize), or use a token_command"
                )));
            }
            if client_secret_file.is_none() {
                return Err(error(format!(
                    "{place} has no `client_secret_file`: the application's own access (client credentials) needs its secret; for a user's sign-in, set refresh_token_file instead"
                )));
            }
            let default_token = match (provider, &tenant) {
                (Some(Provider::Microsoft), Some(tenant)) => microsoft(tenant, "token"),
                (Some(Provider::Microsoft), None) if token_url.is_none() => {
                    return Err(error(format!(
                        "{place} has no `tenant`: the application's own access needs the Directory (tenant) ID of its registration"
                    )))
                }
                _ => None,
            };
            let default_scope =
                (provider == Some(Provider::Microsoft)).then(|| MICROSOFT_APP_SCOPE.to_string());
            Ok(OAuth2 {
                provider,
                grant: Grant::ClientCredentials(Client {
                    client_id,
                    client_secret_file,
                    token_url: token_url.or(default_token).ok_or_else(needs_url)?,
                    scope: scope.or(default_scope),
                }),
            })
        }
    }
}

/// An OAuth2 endpoint: https, or http to this machine only (a token or a
/// secret must not cross a network in clear); no credentials in it.
fn endpoint(file: &File, key: &str, value: &Spanned<Value>) -> Result<Url, ConfigError> {
    let at = file.at(key, value);
    // Url's errors do not quote the text.
    let url =
        Url::parse(file.string(key, value)?.trim()).map_err(|e| error(format!("{at}: not a URL ({e})")))?;
    let host = url.host_str().unwrap_or_default();
    match url.scheme() {
        "https" if !host.is_empty() => {}
        "http" if is_loopback(host) => {}
        _ => return Err(error(format!("{at} must be an https:// URL (http:// only to this machine)"))),
    }
    if !url.username().is_empty() || url.password().is_some() {
        return Err(error(format!("{at} must not contain a user or password")));
    }
    Ok(url)
}

/// The first line of a file that holds a secret (a client secret, a
/// refresh token), without a byte order mark or line end. Errors name the
/// file, never its content.
pub fn read_secret_file(path: &Path, key: &str) -> Result<Password, String> {
    let bytes = match fs::read(path) {
        Ok(bytes) => bytes,
        // Not named: a value that names no file may be the secret itself.
        Err(e) if fs::symlink_metadata(path).is_err() => {
            return Err(format!("the file given by {key} does not exist ({})", io_reason(&e)))
        }
        Err(e) => return Err(format!("{key}: {}", unreadable(path, &e))),
    };
    let text = String::from_utf8_lossy(&bytes);
    let text = text.strip_prefix('\u{feff}').unwrap_or(&text);
    let first_line = text.lines().next().unwrap_or("").trim();
    if first_line.is_empty() {
        return Err(format!("{key} {} is empty", path.display()));
    }
    Ok(Password::new(first_line))
}

#[cfg(test)]
mod tests {
    use super::super::{Config, Overrides};
    use super::*;
    use std::io::Write;

    const MAILBOX: &str =
        "[[mailbox]]\nname = \"support\"\nhost = \"imap.example.com\"\nuser = \"support@example.com\"\n";

    /// The mailbox of `text` (a [[mailbox]] with `extra`), or the error; a
    /// client secret file beside it.
    fn load(extra: &str) -> Result<Mailbox, String> {
        let dir = tempfile::tempdir().unwrap();
        fs::write(dir.path().join("secret"), "s3cr3t-value\n").unwrap();
        let path = dir.path().join("config.toml");
        let mut file = fs::File::create(&path).unwrap();
        write!(file, "{MAILBOX}{extra}").unwrap();
        let flags = Overrides { config: Some(path), ..Default::default() };
        Config::load_with(&flags, |_| None).map(|c| c.mailboxes[0].clone()).map_err(|e| e.to_string())
    }

    fn oauth2(extra: &str) -> OAuth2 {
        match load(extra).unwrap().auth {
            Auth::OAuth2(_, oauth2) => *oauth2,
            Auth::Password(_) => panic!("not OAuth2"),
        }
    }

    #[test]
    fn providers_fill_in_endpoints_and_scopes() {
        let app = oauth2(
            "auth = \"xoauth2\"\n[mailbox.oauth2]\nprovider = \"microsoft\"\ntenant = \"contoso.onmicrosoft.com\"\nclient_id = \"app\"\nclient_secret_file = \"secret\"\n",
        );
        let Grant::ClientCredentials(client) = app.grant else { panic!("client credentials") };
        assert_eq!(
            client.token_url.as_str(),
            "https://login.microsoftonline.com/contoso.onmicrosoft.com/oauth2/v2.0/token"
        );
        assert_eq!(client.scope.as_deref(), Some(MICROSOFT_APP_SCOPE));
        assert!(client.client_secret_file.unwrap().is_absolute(), "relative to the file");
        let gmail = oauth2(
            "auth = \"oauthbearer\"\n[mailbox.oauth2]\nprovider = \"google\"\nclient_id = \"desktop\"\nrefresh_token_file = \"/var/lib/x/rt\"\n",
        );
        let Grant::RefreshToken { client, device_authorization_url, authorization_url, .. } = gmail.grant
        else {
            panic!("refresh token")
        };
        assert_eq!(client.token_url.as_str(), GOOGLE_TOKEN_URL);
        assert_eq!(client.scope.as_deref(), Some(GOOGLE_SCOPE));
        assert!(device_authorization_url.is_none(), "Google's device flow does not allow the mail scope");
        assert_eq!(authorization_url.unwrap().as_str(), GOOGLE_AUTHORIZATION_URL);
        let user = oauth2(
            "auth = \"xoauth2\"\n[mailbox.oauth2]\nprovider = \"microsoft\"\nclient_id = \"app\"\nrefresh_token_file = \"rt\"\nscope = \"a b\"\n",
        );
        let Grant::RefreshToken { client, device_authorization_url, .. } = user.grant else { panic!() };
        assert_eq!(client.scope.as_deref(), Some("a b"));
        assert!(device_authorization_url.unwrap().as_str().ends_with("/common/oauth2/v2.0/devicecode"));
        let command = oauth2(
            "auth = \"xoauth2\"\n[mailbox.oauth2]\ntoken_command = [\"./helper\", \"--for\", \"x\"]\n",
        );
        let Grant::Command(argv) = command.grant else { panic!() };
        assert!(argv[0].ends_with("/helper") && argv[0].starts_with('/') && argv[1] == "--for");
    }

    #[test]
    fn wrong_combinations_are_named_with_their_line() {
        let cases = [
            ("[mailbox.oauth2]\nclient_id = \"a\"\n", "used only with auth"),
            ("auth = \"xoauth2\"\n", "needs a [mailbox.oauth2] table"),
            ("auth = \"plain\"\n", "must be \"password\", \"xoauth2\" or \"oauthbearer\""),
            ("auth = \"xoauth2\"\npassword = \"pw\"\n[mailbox.oauth2]\ntoken_command = [\"x\"]\n", "not a password"),
            ("auth = \"xoauth2\"\n[mailbox.oauth2]\ntoken_command = [\"x\"]\nclient_id = \"a\"\n", "`client_id` in"),
            ("auth = \"xoauth2\"\n[mailbox.oauth2]\ntoken_command = []\n", "name the program first"),
            ("auth = \"xoauth2\"\n[mailbox.oauth2]\nprovider = \"google\"\nclient_id = \"a\"\nclient_secret_file = \"secret\"\n", "Gmail gives no token"),
            ("auth = \"xoauth2\"\n[mailbox.oauth2]\nprovider = \"microsoft\"\nclient_id = \"a\"\nclient_secret_file = \"secret\"\n", "has no `tenant`"),
            ("auth = \"xoauth2\"\n[mailbox.oauth2]\nprovider = \"microsoft\"\ntenant = \"t\"\nclient_id = \"a\"\n", "has no `client_secret_file`"),
            ("auth = \"xoauth2\"\n[mailbox.oauth2]\nclient_id = \"a\"\nclient_secret_file = \"secret\"\n", "has no `token_url`"),
            ("auth = \"xoauth2\"\n[mailbox.oauth2]\nclient_id = \"a\"\nclient_secret_file = \"missing\"\ntoken_url = \"https://t/x\"\n", "client_secret_file"),
            ("auth = \"xoauth2\"\n[mailbox.oauth2]\nclient_id = \"a\"\nrefresh_token_file = \"rt\"\ntoken_url = \"http://login.example/token\"\n", "https://"),
            ("auth = \"xoauth2\"\n[mailbox.oauth2]\nclient_id = \"a\"\nclient_secret_file = \"secret\"\ntoken_url = \"https://t/x\"\nauthorization_url = \"https://t/a\"\n", "needs refresh_token_file"),
            ("auth = \"xoauth2\"\n[mailbox.oauth2]\ntenant = \"t\"\nclient_id = \"a\"\nrefresh_token_file = \"rt\"\ntoken_url = \"https://t/x\"\n", "tenant is for provider"),
            ("auth = \"xoauth2\"\n[mailbox.oauth2]\nclient_id = \"a\"\nclient_secrets_file = \"x\"\n", "client_secrets_file"),
        ];
        for (extra, expected) in cases {
            let e = load(extra).map(|_| ()).unwrap_err();
            assert!(e.contains(expected) && e.contains("line "), "{extra}: {e}");
        }
    }

    #[test]
    fn no_oauth2_value_is_quoted_back() {
        let secret = "s3cr3t42";
        for line in [
            format!("token_url = \"https://user:{secret}@login.example/token\""),
            format!("token_url = \"{secret}\""),
            format!("client_id = {secret}"),
            format!("client_secret_file = \"{secret}\"\nclient_id = \"a\"\ntoken_url = \"https://t/x\""),
            format!("refresh_token_file = \"{secret}\"\nclient_id = \"a\"\ntoken_url = \"https://t/x\"\ntenant = \"x\""),
            format!("tenant = \"{secret}/x\""),
            format!("scope = [\"{secret}\"]"),
            format!("token_command = \"{secret}\""),
            format!("provider = \"{secret}\""),
        ] {
            let e = load(&format!("auth = \"xoauth2\"\n[mailbox.oauth2]\n{line}\n")).map(|_| ()).unwrap_err();
            assert!(!e.contains(secret), "{line}: {e}");
        }
        let e = read_secret_file(Path::new("/nonexistent/s3cr3t42-file"), "client_secret_file").unwrap_err();
        assert!(e.contains("client_secret_file") && !e.contains(secret), "{e}");
    }
}
