//! `[[mailbox]]` tables: the mailboxes `watch` fetches from, over IMAP or through Microsoft Graph.

use std::num::NonZeroUsize;
use std::ops::Range;
use std::path::{Path, PathBuf};
use std::time::Duration;

use reqwest::Url;
use serde::Deserialize;
use toml::Spanned;

use super::file::{File, Login, MailboxFile, OAuth2File};
use super::keys::{self, Table};
use super::{error, file_header_name, ConfigError, Secret};
use crate::secret;
use crate::sys::is_loopback;

/// How the connection to the IMAP server is protected.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Tls {
    /// TLS from the first byte (port 993).
    Implicit,
    /// STARTTLS after the greeting (port 143); never falls back to cleartext.
    StartTls,
    /// Cleartext: only to a server on this machine.
    None,
}

/// What happens to a message once the ingress answered 2xx.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum After {
    Seen,
    Move,
    Delete,
}

/// Where a mailbox's mail is fetched from (`source`).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum MailSource {
    Imap,
    /// Microsoft Graph: Microsoft 365 mailboxes with IMAP switched off,
    /// shared mailboxes, no passwords.
    Graph,
}

/// One mailbox to watch, resolved and checked.
#[derive(Clone, Debug)]
pub struct Mailbox {
    pub name: String,
    /// The server and what only it needs.
    pub server: Server,
    /// The IMAP login name; for Graph, the mailbox (its user principal
    /// name or object id).
    pub user: String,
    pub auth: Auth,
    /// Each once; none of them is `move_to` or `refused_folder`, here or in
    /// another mailbox of the same account.
    pub folders: Vec<String>,
    pub after: After,
    /// Where delivered messages go with `after = "move"`.
    pub move_to: Option<String>,
    /// Where permanently refused messages go; never fetched again.
    pub refused_folder: String,
    pub recipient_header: Option<String>,
    pub ca_file: Option<PathBuf>,
    /// How often to look for new mail: on an IMAP server without IDLE, or
    /// with a Graph delta query.
    pub poll_interval: Duration,
    /// "mailbox support (FILE line N)", for messages.
    pub place: String,
}

/// Where a mailbox is, as its `source` says.
#[derive(Clone, Debug)]
pub enum Server {
    Imap(Imap),
    Graph(Graph),
}

/// An IMAP server.
#[derive(Clone, Debug)]
pub struct Imap {
    pub host: String,
    pub port: u16,
    pub tls: Tls,
    /// How many IMAP sessions `watch` may open to this mailbox at once.
    pub max_connections: NonZeroUsize,
}

/// Microsoft Graph.
#[derive(Clone, Debug)]
pub struct Graph {
    /// The service (`graph_url`), checked: https, or http on loopback.
    pub endpoint: crate::graph::Endpoint,
}

impl Mailbox {
    pub fn source(&self) -> MailSource {
        match self.server {
            Server::Imap(_) => MailSource::Imap,
            Server::Graph(_) => MailSource::Graph,
        }
    }

    /// Whether two folder names of this mailbox name one folder: for IMAP,
    /// INBOX in any case is INBOX and other names are case-sensitive (RFC
    /// 3501 section 5.1); Exchange's folder names are case-insensitive, and
    /// a well-known name is its folder in any spelling ("Deleted Items",
    /// "deleteditems").
    pub fn same_folder(&self, a: &str, b: &str) -> bool {
        match self.server {
            Server::Imap(_) => same_folder(a, b),
            Server::Graph(_) => same_graph_folder(a, b),
        }
    }
}

/// How a mailbox logs in.
#[derive(Clone, Debug)]
pub enum Auth {
    /// LOGIN (or AUTHENTICATE PLAIN), the password read again at each login.
    Password(Secret),
    /// An OAuth2 access token: with IMAP, in an AUTHENTICATE of this SASL
    /// mechanism; with Graph (None), as the bearer of each request.
    OAuth2(Option<Sasl>, Box<OAuth2>),
}

/// The SASL mechanism that carries an access token.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Sasl {
    XOAuth2,
    /// RFC 7628.
    OAuthBearer,
}

/// Whose defaults fill in the endpoints and the scope.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
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
/// The same for Microsoft Graph: the application permissions it was
/// granted, or a user's delegated Mail.ReadWrite (an IMAP token's audience
/// is not Graph).
pub const GRAPH_APP_SCOPE: &str = "https://graph.microsoft.com/.default";
pub const GRAPH_USER_SCOPE: &str = "https://graph.microsoft.com/Mail.ReadWrite offline_access";
/// Gmail's only scope for IMAP.
pub const GOOGLE_SCOPE: &str = "https://mail.google.com/";
const MICROSOFT_LOGIN: &str = "https://login.microsoftonline.com";
const GOOGLE_TOKEN_URL: &str = "https://oauth2.googleapis.com/token";
const GOOGLE_AUTHORIZATION_URL: &str = "https://accounts.google.com/o/oauth2/v2/auth";

pub const DEFAULT_FOLDER: &str = "INBOX";
/// Graph's well-known name, in the case Outlook shows it.
pub const DEFAULT_GRAPH_FOLDER: &str = "Inbox";
pub const DEFAULT_REFUSED_FOLDER: &str = "Refused";
/// Where Graph's `after = "delete"` puts messages (a move one can undo).
const DELETED_ITEMS: &str = "deleteditems";
pub const DEFAULT_POLL_INTERVAL: Duration = Duration::from_secs(60);
/// One delta query per folder every 10 s: 60 requests in 10 minutes, under
/// 1 % of Outlook's 10,000 per app and mailbox.
pub const DEFAULT_GRAPH_POLL_INTERVAL: Duration = Duration::from_secs(10);
/// Below Gmail's 15 IMAP connections per account, with room for a mail client.
pub const DEFAULT_MAX_CONNECTIONS: NonZeroUsize = NonZeroUsize::new(10).unwrap();

/// Whether two IMAP folder names name one folder: INBOX in any case is
/// INBOX, other names are case-sensitive (RFC 3501 section 5.1).
pub fn same_folder(a: &str, b: &str) -> bool {
    a == b || (a.eq_ignore_ascii_case(DEFAULT_FOLDER) && b.eq_ignore_ascii_case(DEFAULT_FOLDER))
}

/// Whether two Graph folder paths name one folder: in any case, and a
/// well-known name as its English display name ("deleteditems", "Deleted
/// Items").
fn same_graph_folder(a: &str, b: &str) -> bool {
    let canonical = |path: &str| {
        let mut names: Vec<String> = path.split('/').map(str::to_lowercase).collect();
        if let Some(known) = names.first().and_then(|first| crate::graph::well_known(first)) {
            names[0] = known.to_string();
        }
        names
    };
    canonical(a) == canonical(b)
}

/// The `[[mailbox]]` tables, each complete and consistent, names unique,
/// no folder fed by another.
pub(super) fn mailboxes(
    file: &File,
    tables: &[Spanned<MailboxFile>],
    warnings: &mut Vec<String>,
) -> Result<Vec<Mailbox>, ConfigError> {
    let mut mailboxes: Vec<Mailbox> = Vec::new();
    for (index, table) in tables.iter().enumerate() {
        let mailbox = mailbox(file, index, table, warnings)?;
        if let Some(other) = mailboxes.iter().find(|m| m.name == mailbox.name) {
            return Err(error(format!("{}: the name is already that of {}", mailbox.place, other.place)));
        }
        let this = Folders::of(file, &mailbox, table.get_ref());
        for (other, other_table) in mailboxes.iter().zip(tables) {
            this.apart_from(&Folders::of(file, other, other_table.get_ref()))?;
        }
        mailboxes.push(mailbox);
    }
    Ok(mailboxes)
}

/// A mailbox's folders, with where each is written, for messages.
struct Folders<'a> {
    mailbox: &'a Mailbox,
    /// Where `folders` is written (or the default that holds).
    watched_at: String,
    /// `move_to` and `refused_folder`, each with where it is written.
    puts_into: Vec<(&'a str, String)>,
}

impl<'a> Folders<'a> {
    fn of(file: &File, mailbox: &'a Mailbox, table: &MailboxFile) -> Folders<'a> {
        let at = |key: &str, span: Option<Range<usize>>, default: &str| match span {
            Some(span) => format!("`{key}` in {}", file.place(Some(span))),
            None => format!("{} (`{key}` not set: {default})", mailbox.place),
        };
        let span = |value: &Option<Spanned<String>>| value.as_ref().map(Spanned::span);
        let mut puts_into = Vec::new();
        if let Some(folder) = &mailbox.move_to {
            puts_into.push((folder.as_str(), at(keys::MOVE_TO, span(&table.move_to), "")));
        }
        let refused_at = at(keys::REFUSED_FOLDER, span(&table.refused_folder), DEFAULT_REFUSED_FOLDER);
        puts_into.push((mailbox.refused_folder.as_str(), refused_at));
        if let (Server::Graph(_), After::Delete) = (&mailbox.server, mailbox.after) {
            let after_at = at(keys::AFTER, table.after.as_ref().map(Spanned::span), "");
            puts_into.push((DELETED_ITEMS, after_at));
        }
        let default = match mailbox.server {
            Server::Imap(_) => DEFAULT_FOLDER,
            Server::Graph(_) => DEFAULT_GRAPH_FOLDER,
        };
        Folders {
            mailbox,
            watched_at: at(keys::FOLDERS, table.folders.as_ref().map(Spanned::span), default),
            puts_into,
        }
    }

    fn watches(&self, folder: &str) -> bool {
        self.mailbox.folders.iter().any(|f| self.mailbox.same_folder(f, folder))
    }

    /// Two mailboxes of one account (IMAP: host, port and user; Graph: the
    /// service and the mailbox) neither watch the same folder, which would
    /// deliver its mail twice, nor move or refuse mail into a folder the
    /// other watches, which would deliver it again. The error names this
    /// one's key; `other` came first.
    fn apart_from(&self, other: &Folders) -> Result<(), ConfigError> {
        let (this, that) = (self.mailbox, other.mailbox);
        let same_account = match (&this.server, &that.server) {
            (Server::Imap(a), Server::Imap(b)) => {
                a.host.eq_ignore_ascii_case(&b.host) && a.port == b.port && this.user == that.user
            }
            (Server::Graph(a), Server::Graph(b)) => {
                a.endpoint == b.endpoint && this.user.eq_ignore_ascii_case(&that.user)
            }
            _ => false,
        };
        if !same_account {
            return Ok(());
        }
        let server = match this.server {
            Server::Imap(_) => "on the same server and user",
            Server::Graph(_) => "of the same Microsoft 365 mailbox",
        };
        let fix = "name another folder, or watch it with one [[mailbox]] only";
        if this.folders.iter().any(|folder| other.watches(folder)) {
            return Err(error(format!(
                "{}: {} watches a folder of this one too, {server}: every message in it would be delivered twice; {fix}",
                self.watched_at, that.place
            )));
        }
        if let Some((_, at)) = self.puts_into.iter().find(|(folder, _)| other.watches(folder)) {
            return Err(error(format!(
                "{at}: {} watches that folder, {server}: what goes there would be delivered again; {fix}",
                that.place
            )));
        }
        if let Some((_, at)) = other.puts_into.iter().find(|(folder, _)| self.watches(folder)) {
            return Err(error(format!(
                "{}: {at} puts mail into a folder this one watches, {server}: it would be delivered again; {fix}",
                self.watched_at
            )));
        }
        Ok(())
    }
}

/// One `[[mailbox]]` table.
fn mailbox(
    file: &File,
    index: usize,
    table: &Spanned<MailboxFile>,
    warnings: &mut Vec<String>,
) -> Result<Mailbox, ConfigError> {
    let here = file.place(Some(table.span()));
    let table = table.get_ref();
    let name = match &table.name {
        Some(value) => {
            let name = value.get_ref();
            let valid = !name.is_empty()
                && name.len() <= 64
                && name.bytes().all(|b| b.is_ascii_alphanumeric() || b"._-".contains(&b))
                && !name.starts_with('.');
            if !valid {
                return Err(error(format!(
                    "{}: a mailbox name is letters, digits, '.', '_' and '-' (it names the state file)",
                    file.at(keys::NAME, value)
                )));
            }
            name.clone()
        }
        None => return Err(error(format!("mailbox {} ({here}) has no `{}`", index + 1, keys::NAME))),
    };
    let place = format!("mailbox {name} ({here})");
    let missing = |key: &str| error(format!("{place} has no `{key}`"));
    let source = table.source.as_ref().map_or(MailSource::Imap, |value| *value.get_ref());
    not_for(file, source, table)?;
    let user_value = table.user.as_ref().ok_or_else(|| missing(keys::USER))?;
    let user = user_value.get_ref().clone();
    let (server, auth) = match source {
        MailSource::Imap => imap(file, &place, table, warnings)?,
        MailSource::Graph => {
            if user.trim().is_empty() || user.contains(|c: char| c.is_whitespace() || c == '/') {
                return Err(error(format!(
                    "{}: the mailbox's user principal name (support@contoso.com) or object id",
                    file.at(keys::USER, user_value)
                )));
            }
            graph(file, &place, table, warnings)?
        }
    };
    // What a folder name is, and when two are one, depend on the server.
    let probe = Mailbox {
        name,
        server,
        user,
        auth,
        folders: Vec::new(),
        after: After::Seen,
        move_to: None,
        refused_folder: String::new(),
        recipient_header: None,
        ca_file: None,
        poll_interval: DEFAULT_POLL_INTERVAL,
        place,
    };
    let graph = probe.source() == MailSource::Graph;
    // Graph's folders are paths of display names.
    let path = |at: String, folder: &str| -> Result<(), ConfigError> {
        match graph && crate::graph::FolderPath::parse(folder).is_none() {
            true => Err(error(format!(
                "{at}: a folder is its name, or \"Parent/Child\" for a folder in another; no name empty"
            ))),
            false => Ok(()),
        }
    };
    let folders = match &table.folders {
        Some(value) => {
            let at = file.at(keys::FOLDERS, value);
            let folders = value.get_ref();
            if folders.is_empty() || folders.iter().any(|f| f.trim().is_empty()) {
                return Err(error(format!("{at}: name at least one folder, none empty")));
            }
            for folder in folders {
                path(at.clone(), folder)?;
            }
            let alike = match graph {
                true => "names are the same in any case",
                false => "INBOX in any case is INBOX",
            };
            for (n, folder) in folders.iter().enumerate() {
                if let Some(first) = folders[..n].iter().position(|f| probe.same_folder(f, folder)) {
                    return Err(error(format!(
                        "{at}: folders {} and {} are the same folder ({alike}): a folder watched twice delivers its mail twice; name it once",
                        first + 1,
                        n + 1
                    )));
                }
            }
            folders.clone()
        }
        None if graph => vec![DEFAULT_GRAPH_FOLDER.to_string()],
        None => vec![DEFAULT_FOLDER.to_string()],
    };
    let watched = |folder: &str| folders.iter().any(|f| probe.same_folder(f, folder));
    let after = table.after.as_ref().map_or(After::Seen, |value| *value.get_ref());
    if let (true, After::Delete, Some(value)) = (graph, after, &table.folders) {
        if watched(DELETED_ITEMS) {
            return Err(error(format!(
                "{}: after = \"delete\" moves delivered mail to Deleted Items, which this mailbox watches: it would be fetched and delivered again; name another folder",
                file.at(keys::FOLDERS, value)
            )));
        }
    }
    let move_to = table.move_to.as_ref().map(|value| value.get_ref().clone());
    match (after, &table.move_to) {
        (After::Move, None) => {
            return Err(error(format!("{}: after = \"move\" needs `{}`", probe.place, keys::MOVE_TO)))
        }
        (_, Some(value)) if watched(value.get_ref()) => {
            return Err(error(format!(
                "{}: this mailbox watches that folder (`{}`): every message moved there would be fetched and delivered again; name another folder",
                file.at(keys::MOVE_TO, value),
                keys::FOLDERS
            )))
        }
        (_, Some(value)) => path(file.at(keys::MOVE_TO, value), value.get_ref())?,
        _ => {}
    }
    let refused_folder = match &table.refused_folder {
        Some(value) if watched(value.get_ref()) => {
            return Err(error(format!(
                "{}: this mailbox watches that folder (`{}`): refused mail would be fetched and refused again; name another folder",
                file.at(keys::REFUSED_FOLDER, value),
                keys::FOLDERS
            )))
        }
        Some(value) => {
            path(file.at(keys::REFUSED_FOLDER, value), value.get_ref())?;
            value.get_ref().clone()
        }
        None if watched(DEFAULT_REFUSED_FOLDER) => {
            return Err(error(format!(
                "{}: it names {DEFAULT_REFUSED_FOLDER}, where refused mail goes when `{}` is not set: set that to another folder",
                table.folders.as_ref().map_or(probe.place.clone(), |value| file.at(keys::FOLDERS, value)),
                keys::REFUSED_FOLDER
            )))
        }
        None => DEFAULT_REFUSED_FOLDER.to_string(),
    };
    let recipient_header = table.recipient_header.as_ref().map(|v| file_header_name(file, v)).transpose()?;
    let ca_file = table.ca_file.as_ref().map(|value| file.path(value));
    let poll_interval = match &table.poll_interval {
        Some(value) => keys::integer(Table::Mailbox, keys::POLL_INTERVAL, *value.get_ref())
            .map(Duration::from_secs)
            .map_err(|_| file.invalid(Table::Mailbox, keys::POLL_INTERVAL, Some(value.span())))?,
        None if graph => DEFAULT_GRAPH_POLL_INTERVAL,
        None => DEFAULT_POLL_INTERVAL,
    };
    Ok(Mailbox { folders, after, move_to, refused_folder, recipient_header, ca_file, poll_interval, ..probe })
}

/// A key of the other source is a mistake to be told, not ignored: an
/// IMAP host on a Graph mailbox would never be used.
fn not_for(file: &File, source: MailSource, table: &MailboxFile) -> Result<(), ConfigError> {
    let span = |value: &Option<Spanned<String>>| value.as_ref().map(Spanned::span);
    let found = match source {
        MailSource::Graph => [
            (keys::HOST, span(&table.host)),
            (keys::PORT, table.port.as_ref().map(Spanned::span)),
            (keys::TLS, table.tls.as_ref().map(Spanned::span)),
            (keys::PASSWORD, table.password.as_ref().map(Spanned::span)),
            (keys::PASSWORD_FILE, table.password_file.as_ref().map(Spanned::span)),
            (keys::AUTH, table.auth.as_ref().map(Spanned::span)),
            (keys::MAX_CONNECTIONS, table.max_connections.as_ref().map(Spanned::span)),
        ]
        .into_iter()
        .find_map(|(key, span)| span.map(|span| (key, span))),
        MailSource::Imap => span(&table.graph_url).map(|span| (keys::GRAPH_URL, span)),
    };
    match (found, source) {
        (Some((key, span)), MailSource::Graph) => Err(error(format!(
            "`{key}` in {}: it is for IMAP; a mailbox with source = \"graph\" reaches Microsoft Graph (graph_url) with a token from [mailbox.oauth2]: remove it",
            file.place(Some(span))
        ))),
        (Some((key, span)), MailSource::Imap) => Err(error(format!(
            "`{key}` in {}: it is for source = \"graph\"; this mailbox is IMAP (source = \"imap\", the default): remove it, or set source = \"graph\"",
            file.place(Some(span))
        ))),
        (None, _) => Ok(()),
    }
}

/// The IMAP server of a table, and how to log in to it.
fn imap(
    file: &File,
    place: &str,
    table: &MailboxFile,
    warnings: &mut Vec<String>,
) -> Result<(Server, Auth), ConfigError> {
    let missing = |key: &str| error(format!("{place} has no `{key}`"));
    let host_value = table.host.as_ref().ok_or_else(|| missing(keys::HOST))?;
    let host = host_value.get_ref().clone();
    if host.is_empty() || host.contains(|c: char| c.is_whitespace() || c == '/') {
        return Err(error(format!("{}: not a host name", file.at(keys::HOST, host_value))));
    }
    let tls = table.tls.as_ref().map_or(Tls::Implicit, |value| *value.get_ref());
    if let Some(value) = table.tls.as_ref().filter(|_| tls == Tls::None && !is_loopback(&host)) {
        return Err(error(format!(
            "{}: \"none\" would send the password or token in clear across the network; it is only allowed for a server on this machine (use \"implicit\" or \"starttls\")",
            file.at(keys::TLS, value)
        )));
    }
    let port = match (&table.port, tls) {
        (Some(value), _) => value.get_ref().get(),
        (None, Tls::Implicit) => 993,
        (None, _) => 143,
    };
    let login = table.auth.as_ref().map_or(Login::Password, |value| *value.get_ref());
    let sasl = match login {
        Login::Password => None,
        Login::XOAuth2 => Some(Sasl::XOAuth2),
        Login::OAuthBearer => Some(Sasl::OAuthBearer),
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
                .password(Table::Mailbox, &table.password, &table.password_file, warnings)?
                .ok_or_else(|| missing(keys::PASSWORD_FILE))?;
            if read.expose().is_empty() {
                return Err(error(format!("{place}: the password is empty")));
            }
            Auth::Password(match (password_file, &table.password_file) {
                (Some(path), Some(value)) => {
                    Secret::File { path, place: file.at(keys::PASSWORD_FILE, value) }
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
            let password = table.password.as_ref().map(|v| (keys::PASSWORD, v.span()));
            if let Some((key, span)) =
                password.or(table.password_file.as_ref().map(|v| (keys::PASSWORD_FILE, v.span())))
            {
                return Err(error(format!(
                    "`{key}` in {}: a mailbox with auth = \"xoauth2\" or \"oauthbearer\" logs in with a token, not a password: remove it",
                    file.place(Some(span))
                )));
            }
            let oauth2 = oauth2_table(file, place, oauth2, MailSource::Imap, warnings)?;
            Auth::OAuth2(Some(sasl), Box::new(oauth2))
        }
    };
    let max_connections =
        table.max_connections.as_ref().map_or(DEFAULT_MAX_CONNECTIONS, |value| *value.get_ref());
    Ok((Server::Imap(Imap { host, port, tls, max_connections }), auth))
}

/// Microsoft Graph as a table names it, and where its tokens come from.
fn graph(
    file: &File,
    place: &str,
    table: &MailboxFile,
    warnings: &mut Vec<String>,
) -> Result<(Server, Auth), ConfigError> {
    use crate::graph::{Endpoint, EndpointError};
    let endpoint = match &table.graph_url {
        Some(value) => Endpoint::parse(value.get_ref()).map_err(|e| {
            // The value is not quoted back: the error's own words would.
            let why = match e {
                EndpointError::NotUrl(_) => "not an https:// URL",
                EndpointError::Cleartext(_) => {
                    "it must start with https:// (http:// only to this machine): the token would cross the network in clear"
                }
                EndpointError::Extra(_) => {
                    "a scheme, a host and at most a path: no user, password, query or fragment"
                }
            };
            error(format!("{}: {why}", file.at(keys::GRAPH_URL, value)))
        })?,
        None => Endpoint::default(),
    };
    let Some(oauth2) = &table.oauth2 else {
        return Err(error(format!(
            "{place}: source = \"graph\" needs a [mailbox.oauth2] table: Graph takes an OAuth2 access token"
        )));
    };
    let oauth2 = oauth2_table(file, place, oauth2, MailSource::Graph, warnings)?;
    Ok((Server::Graph(Graph { endpoint }), Auth::OAuth2(None, Box::new(oauth2))))
}

/// `[mailbox.oauth2]`: one way to get tokens, each key it needs and none
/// that another way would use.
/// The default scopes are those of `source`'s server.
fn oauth2_table(
    file: &File,
    mailbox: &str,
    table: &Spanned<OAuth2File>,
    source: MailSource,
    warnings: &mut Vec<String>,
) -> Result<OAuth2, ConfigError> {
    let place = format!("{mailbox}: [mailbox.oauth2] (line {})", file.line(table.span()));
    let table = table.get_ref();
    let provider = table.provider.as_ref().map(|value| *value.get_ref());
    if let (MailSource::Graph, Some(value)) = (source, &table.provider) {
        if provider == Some(Provider::Google) {
            return Err(error(format!(
                "{}: Microsoft Graph takes Microsoft's tokens: provider = \"microsoft\"",
                file.at(keys::PROVIDER, value)
            )));
        }
    }
    let (app_scope, user_scope) = match source {
        MailSource::Imap => (MICROSOFT_APP_SCOPE, MICROSOFT_USER_SCOPE),
        MailSource::Graph => (GRAPH_APP_SCOPE, GRAPH_USER_SCOPE),
    };
    // The first of `keys` that is set: a key that this way of getting tokens does not use.
    let unused = |keys: &[(&str, Option<Range<usize>>)], why: &str| -> Result<(), ConfigError> {
        match keys.iter().find_map(|(key, span)| span.clone().map(|span| (key, span))) {
            Some((key, span)) => {
                Err(error(format!("`{key}` in {}: {why}: remove it", file.place(Some(span)))))
            }
            None => Ok(()),
        }
    };
    let span = |value: &Option<Spanned<String>>| value.as_ref().map(Spanned::span);
    let path_span = |value: &Option<Spanned<PathBuf>>| value.as_ref().map(Spanned::span);
    if let Some(value) = &table.token_command {
        let mut argv = value.get_ref().clone();
        if argv.first().is_none_or(|program| program.trim().is_empty()) {
            return Err(error(format!(
                "{}: name the program first: {} = [\"/usr/local/bin/get-token\", \"--for\", \"support\"]",
                file.at(keys::TOKEN_COMMAND, value),
                keys::TOKEN_COMMAND
            )));
        }
        // Every key but token_command: the command replaces them all.
        unused(
            &[
                (keys::PROVIDER, table.provider.as_ref().map(Spanned::span)),
                (keys::TENANT, span(&table.tenant)),
                (keys::CLIENT_ID, span(&table.client_id)),
                (keys::CLIENT_SECRET_FILE, path_span(&table.client_secret_file)),
                (keys::REFRESH_TOKEN_FILE, path_span(&table.refresh_token_file)),
                (keys::TOKEN_URL, span(&table.token_url)),
                (keys::SCOPE, span(&table.scope)),
                (keys::DEVICE_AUTHORIZATION_URL, span(&table.device_authorization_url)),
                (keys::AUTHORIZATION_URL, span(&table.authorization_url)),
            ],
            "token_command prints the token, so no other way of getting one is used",
        )?;
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
            let id = value.get_ref();
            if id.trim().is_empty() || id.chars().any(char::is_control) {
                return Err(error(format!("{}: not a client ID", file.at(keys::CLIENT_ID, value))));
            }
            id.trim().to_string()
        }
        None => {
            return Err(error(format!(
                "{place} has no `{}` (the application (client) ID from the provider), nor a `{}`",
                keys::CLIENT_ID,
                keys::TOKEN_COMMAND
            )))
        }
    };
    let tenant = match &table.tenant {
        Some(value) => {
            let tenant = value.get_ref();
            let valid =
                !tenant.is_empty() && tenant.bytes().all(|b| b.is_ascii_alphanumeric() || b".-".contains(&b));
            if !valid {
                return Err(error(format!(
                    "{}: a tenant is a directory (tenant) ID or a domain such as contoso.onmicrosoft.com",
                    file.at(keys::TENANT, value)
                )));
            }
            if provider != Some(Provider::Microsoft) {
                return Err(error(format!(
                    "{}: tenant is for provider = \"microsoft\"",
                    file.at(keys::TENANT, value)
                )));
            }
            Some(tenant.clone())
        }
        None => None,
    };
    let client_secret_file = match &table.client_secret_file {
        Some(value) => {
            // Read now, so that a mistake shows at once, and again at each request.
            let path = file.path(value);
            let at = file.at(keys::CLIENT_SECRET_FILE, value);
            secret::read_file(&path, "client secret", keys::CLIENT_SECRET_FILE, warnings)
                .map_err(|e| error(format!("{at}: {e}")))?;
            Some(path)
        }
        None => None,
    };
    let url = |key: &'static str, value: &Option<Spanned<String>>| -> Result<Option<Url>, ConfigError> {
        value.as_ref().map(|value| endpoint(file, key, value)).transpose()
    };
    let scope = match &table.scope {
        Some(value) if value.get_ref().trim().is_empty() || value.get_ref().chars().any(char::is_control) => {
            return Err(error(format!("{}: name at least one scope", file.at(keys::SCOPE, value))))
        }
        scope => scope.as_ref().map(|s| s.get_ref().trim().to_string()),
    };
    let token_url = url(keys::TOKEN_URL, &table.token_url)?;
    // Microsoft's endpoints are the tenant's; "common" serves any user's
    // sign-in, but an application's own access needs its tenant.
    let microsoft =
        |tenant: &str, path: &str| Url::parse(&format!("{MICROSOFT_LOGIN}/{tenant}/oauth2/v2.0/{path}")).ok();
    let needs_url = || {
        error(format!(
            "{place} has no `{}`: set it, or {} = \"microsoft\" or \"google\"",
            keys::TOKEN_URL,
            keys::PROVIDER
        ))
    };
    match &table.refresh_token_file {
        Some(value) => {
            let refresh_file = file.path(value);
            if refresh_file.file_name().is_none() {
                return Err(error(format!("{}: name a file", file.at(keys::REFRESH_TOKEN_FILE, value))));
            }
            let tenant = tenant.as_deref().unwrap_or("common");
            let (default_token, default_device, default_authorization, default_scope) = match provider {
                Some(Provider::Microsoft) => (
                    microsoft(tenant, "token"),
                    microsoft(tenant, "devicecode"),
                    microsoft(tenant, "authorize"),
                    Some(user_scope),
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
                        keys::DEVICE_AUTHORIZATION_URL,
                        &table.device_authorization_url,
                    )?
                    .or(default_device),
                    authorization_url: url(keys::AUTHORIZATION_URL, &table.authorization_url)?
                        .or(default_authorization),
                },
            })
        }
        None => {
            unused(
                &[
                    (keys::DEVICE_AUTHORIZATION_URL, span(&table.device_authorization_url)),
                    (keys::AUTHORIZATION_URL, span(&table.authorization_url)),
                ],
                "it is for oauth2 authorize, which needs refresh_token_file",
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
            let default_scope = (provider == Some(Provider::Microsoft)).then(|| app_scope.to_string());
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
fn endpoint(file: &File, key: &str, value: &Spanned<String>) -> Result<Url, ConfigError> {
    let at = file.at(key, value);
    // Url's errors do not quote the text.
    let url = Url::parse(value.get_ref().trim()).map_err(|e| error(format!("{at}: not a URL ({e})")))?;
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

#[cfg(test)]
mod tests {
    use super::super::{Config, Overrides};
    use super::*;
    use std::fs;
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
        let missing = Path::new("/nonexistent/s3cr3t42-file");
        let e =
            secret::read_file(missing, "client secret", "client_secret_file", &mut Vec::new()).unwrap_err();
        let e = e.to_string();
        assert!(e.contains("client_secret_file") && !e.contains(secret), "{e}");
    }

    /// The mailbox with a password and `extra` from line 6 on.
    fn with_password(extra: &str) -> Result<Mailbox, String> {
        load(&format!("password = \"pw\"\n{extra}"))
    }

    /// Every mailbox of `text`, or the error.
    fn load_all(text: &str) -> Result<Vec<Mailbox>, String> {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("config.toml");
        fs::write(&path, text).unwrap();
        let flags = Overrides { config: Some(path), ..Default::default() };
        Config::load_with(&flags, |_| None).map(|c| c.mailboxes).map_err(|e| e.to_string())
    }

    #[test]
    fn a_folder_that_feeds_itself_is_refused_inbox_in_any_case() {
        let cases = [
            ("after = \"move\"\nmove_to = \"inbox\"\n", "`move_to` in", "line 7"),
            ("after = \"move\"\nmove_to = \"INBOX\"\n", "`move_to` in", "line 7"),
            ("refused_folder = \"Inbox\"\n", "`refused_folder` in", "line 6"),
            (
                "folders = [\"INBOX\", \"Support\"]\nrefused_folder = \"Support\"\n",
                "`refused_folder` in",
                "line 7",
            ),
            ("folders = [\"Support\"]\nafter = \"move\"\nmove_to = \"Support\"\n", "`move_to` in", "line 8"),
            ("folders = [\"Refused\"]\n", "`folders` in", "line 6"),
        ];
        for (extra, key, line) in cases {
            let e = with_password(extra).map(|_| ()).unwrap_err();
            assert!(e.contains(key) && e.contains(line) && e.contains("config.toml"), "{extra}: {e}");
            assert!(e.contains("watches") || e.contains("where refused mail goes"), "says why: {extra}: {e}");
        }
        // Other names are case-sensitive (RFC 3501 5.1): "support" is not "Support".
        let ok = with_password("folders = [\"Support\"]\nafter = \"move\"\nmove_to = \"support\"\n").unwrap();
        assert_eq!(ok.move_to.as_deref(), Some("support"));
        // Moving delivered and refused mail to the same folder is fine.
        let ok = with_password("after = \"move\"\nmove_to = \"Done\"\nrefused_folder = \"Done\"\n").unwrap();
        assert_eq!(ok.refused_folder, "Done");
    }

    #[test]
    fn a_folder_watched_twice_is_refused() {
        for folders in ["[\"INBOX\", \"inbox\"]", "[\"Support\", \"Support\"]", "[\"a\", \"INBOX\", \"a\"]"] {
            let e = with_password(&format!("folders = {folders}\n")).map(|_| ()).unwrap_err();
            assert!(
                e.contains("`folders` in") && e.contains("line 6") && e.contains("twice"),
                "{folders}: {e}"
            );
        }
        assert_eq!(with_password("folders = [\"Support\", \"support\"]\n").unwrap().folders.len(), 2);
    }

    #[test]
    fn mailboxes_on_one_account_do_not_feed_or_double_each_other() {
        let mailbox = |name: &str, port: u16, user: &str, extra: &str| {
            format!("[[mailbox]]\nname = \"{name}\"\nhost = \"imap.example.com\"\nport = {port}\nuser = \"{user}\"\npassword = \"pw\"\n{extra}")
        };
        let a = mailbox("a", 993, "u", "folders = [\"INBOX\", \"Sales\"]\n");
        let cases = [
            (
                mailbox("b", 993, "u", "folders = [\"Other\"]\nafter = \"move\"\nmove_to = \"Sales\"\n"),
                "`move_to`",
            ),
            (
                mailbox("b", 993, "u", "folders = [\"Other\"]\nrefused_folder = \"inbox\"\n"),
                "`refused_folder`",
            ),
            (mailbox("b", 993, "u", "folders = [\"Sales\"]\n"), "`folders`"),
            (mailbox("b", 993, "u", ""), "`folders`"),
        ];
        for (b, key) in cases {
            let e = load_all(&format!("{a}{b}")).map(|_| ()).unwrap_err();
            assert!(e.contains(key) && e.contains("line ") && e.contains("mailbox a"), "{b}: {e}");
        }
        // Another account, or another port, is another mailbox.
        for b in [mailbox("b", 993, "v", ""), mailbox("b", 143, "u", "tls = \"starttls\"\n")] {
            assert_eq!(load_all(&format!("{a}{b}")).unwrap().len(), 2, "{b}");
        }
        // Mail moved or refused to the same folder by both is fine.
        let shared = "folders = [\"Other\"]\nafter = \"move\"\nmove_to = \"Done\"\n";
        let a = mailbox("a", 993, "u", "after = \"move\"\nmove_to = \"Done\"\n");
        assert_eq!(load_all(&format!("{a}{}", mailbox("b", 993, "u", shared))).unwrap().len(), 2);
    }

    #[test]
    fn max_connections_is_at_least_one_and_ten_by_default() {
        let connections = |m: Mailbox| match m.server {
            Server::Imap(imap) => imap.max_connections.get(),
            Server::Graph(_) => panic!("IMAP"),
        };
        assert_eq!(connections(with_password("").unwrap()), 10);
        assert_eq!(connections(with_password("max_connections = 15\n").unwrap()), 15);
        for bad in ["0", "-1", "\"many42\"", "1.5"] {
            let e = with_password(&format!("max_connections = {bad}\n")).map(|_| ()).unwrap_err();
            assert!(e.contains("`max_connections` in") && e.contains("line 6"), "{bad}: {e}");
            assert!(!e.contains("many42"), "{bad}: {e}");
        }
    }

    /// A Graph mailbox with client credentials and `extra` from line 4 on.
    fn graph(extra: &str) -> Result<Mailbox, String> {
        let text = format!(
            "[[mailbox]]\nname = \"support\"\nsource = \"graph\"\n{extra}\nuser = \"support@contoso.com\"\n[mailbox.oauth2]\nprovider = \"microsoft\"\ntenant = \"contoso.onmicrosoft.com\"\nclient_id = \"app\"\nclient_secret_file = \"secret\"\n"
        );
        let dir = tempfile::tempdir().unwrap();
        fs::write(dir.path().join("secret"), "s3cr3t-value\n").unwrap();
        let path = dir.path().join("config.toml");
        fs::write(&path, text).unwrap();
        let flags = Overrides { config: Some(path), ..Default::default() };
        Config::load_with(&flags, |_| None).map(|c| c.mailboxes[0].clone()).map_err(|e| e.to_string())
    }

    #[test]
    fn a_graph_mailbox_has_its_own_defaults_and_graphs_scope() {
        let m = graph("").unwrap();
        let Server::Graph(server) = &m.server else { panic!("Graph") };
        assert_eq!(server.endpoint.as_str(), "https://graph.microsoft.com/");
        assert_eq!(m.folders, ["Inbox"]);
        assert_eq!(m.poll_interval, DEFAULT_GRAPH_POLL_INTERVAL);
        assert_eq!(m.source(), MailSource::Graph);
        let Auth::OAuth2(None, oauth2) = &m.auth else { panic!("a bearer token") };
        let Grant::ClientCredentials(client) = &oauth2.grant else { panic!("client credentials") };
        assert_eq!(client.scope.as_deref(), Some(GRAPH_APP_SCOPE));
        assert_eq!(
            client.token_url.as_str(),
            "https://login.microsoftonline.com/contoso.onmicrosoft.com/oauth2/v2.0/token"
        );
        let m = graph("graph_url = \"https://graph.microsoft.us\"\npoll_interval = 30").unwrap();
        let Server::Graph(server) = &m.server else { panic!("Graph") };
        assert_eq!(
            (server.endpoint.as_str(), m.poll_interval.as_secs()),
            ("https://graph.microsoft.us/", 30)
        );
        assert!(graph("graph_url = \"http://127.0.0.1:8080\"").is_ok(), "http on loopback");
        // A user's own mailbox: delegated Mail.ReadWrite.
        let text = "[[mailbox]]\nname = \"me\"\nsource = \"graph\"\nuser = \"me@contoso.com\"\n[mailbox.oauth2]\nprovider = \"microsoft\"\nclient_id = \"app\"\nrefresh_token_file = \"/var/lib/x/rt\"\n";
        let m = load_all(text).unwrap().remove(0);
        let Auth::OAuth2(None, oauth2) = &m.auth else { panic!() };
        let Grant::RefreshToken { client, .. } = &oauth2.grant else { panic!() };
        assert_eq!(client.scope.as_deref(), Some(GRAPH_USER_SCOPE));
    }

    #[test]
    fn keys_of_the_other_source_are_refused_with_their_line() {
        for (extra, key) in [
            ("host = \"outlook.office365.com\"", "host"),
            ("port = 993", "port"),
            ("tls = \"implicit\"", "tls"),
            ("password = \"s3cr3t42\"", "password"),
            ("password_file = \"secret\"", "password_file"),
            ("auth = \"xoauth2\"", "auth"),
            ("max_connections = 3", "max_connections"),
        ] {
            let e = graph(extra).map(|_| ()).unwrap_err();
            assert!(
                e.contains(&format!("`{key}` in")) && e.contains("line 4") && e.contains("for IMAP"),
                "{extra}: {e}"
            );
            assert!(!e.contains("s3cr3t42"), "{e}");
        }
        let e = with_password("graph_url = \"https://graph.microsoft.com\"\n").map(|_| ()).unwrap_err();
        assert!(
            e.contains("`graph_url` in") && e.contains("line 6") && e.contains("source = \"graph\""),
            "{e}"
        );
        let e = with_password("source = \"exchange\"\n").map(|_| ()).unwrap_err();
        assert!(e.contains("`source` in") && e.contains("\"imap\" or \"graph\""), "{e}");
    }

    #[test]
    fn a_graph_mailbox_needs_a_token_from_microsoft_and_graph_over_https() {
        let text = "[[mailbox]]\nname = \"s\"\nsource = \"graph\"\nuser = \"s@contoso.com\"\n";
        let e = load_all(text).map(|_| ()).unwrap_err();
        assert!(e.contains("needs a [mailbox.oauth2] table"), "{e}");
        let google = "[[mailbox]]\nname = \"s\"\nsource = \"graph\"\nuser = \"s@contoso.com\"\n[mailbox.oauth2]\nprovider = \"google\"\nclient_id = \"a\"\nrefresh_token_file = \"/x/rt\"\n";
        let e = load_all(google).map(|_| ()).unwrap_err();
        assert!(e.contains("`provider` in") && e.contains("Microsoft's tokens"), "{e}");
        for (url, why) in [
            ("http://graph.s3cr3t42.example", "https://"),
            ("ftp://graph.microsoft.com", "not an https:// URL"),
            ("https://u:s3cr3t42@graph.microsoft.com", "no user, password"),
        ] {
            let e = graph(&format!("graph_url = \"{url}\"")).map(|_| ()).unwrap_err();
            assert!(e.contains("`graph_url` in") && e.contains(why) && !e.contains("s3cr3t42"), "{url}: {e}");
        }
        let e = graph("").map(|_| ()).and_then(|()| {
            let bad = "[[mailbox]]\nname = \"s\"\nsource = \"graph\"\nuser = \"two words\"\n[mailbox.oauth2]\ntoken_command = [\"x\"]\n";
            load_all(bad).map(|_| ())
        });
        assert!(e.unwrap_err().contains("user principal name"));
    }

    #[test]
    fn graph_folders_are_the_same_in_any_case_and_do_not_feed_themselves() {
        let cases = [
            ("folders = [\"Inbox\", \"INBOX\"]", "`folders` in", "twice"),
            ("folders = [\"Support\", \"support\"]", "`folders` in", "twice"),
            ("folders = [\"Support\"]\nafter = \"move\"\nmove_to = \"SUPPORT\"", "`move_to` in", "watches"),
            ("folders = [\"Inbox\"]\nrefused_folder = \"inbox\"", "`refused_folder` in", "watches"),
            ("folders = [\"refused\"]", "`folders` in", "where refused mail goes"),
            ("folders = [\"Deleted Items\"]\nafter = \"delete\"", "`folders` in", "Deleted Items"),
            ("folders = [\"Support//Done\"]", "`folders` in", "Parent/Child"),
            ("after = \"move\"\nmove_to = \"/Done\"", "`move_to` in", "Parent/Child"),
        ];
        for (extra, key, why) in cases {
            let e = graph(extra).map(|_| ()).unwrap_err();
            assert!(e.contains(key) && e.contains("line ") && e.contains(why), "{extra}: {e}");
        }
        let m = graph(
            "folders = [\"Inbox/Support\", \"Archive\"]\nafter = \"move\"\nmove_to = \"Inbox/Support/Done\"",
        )
        .unwrap();
        assert_eq!(m.folders.len(), 2);
        assert!(m.same_folder("deleteditems", "Deleted Items") && m.same_folder("Été", "été"));
        assert!(!m.same_folder("Inbox/A", "Inbox/B"));
    }

    #[test]
    fn graph_mailboxes_of_one_mailbox_do_not_feed_or_double_each_other() {
        let mailbox = |name: &str, user: &str, url: &str, extra: &str| {
            format!("[[mailbox]]\nname = \"{name}\"\nsource = \"graph\"\nuser = \"{user}\"\ngraph_url = \"{url}\"\n{extra}\n[mailbox.oauth2]\ntoken_command = [\"/bin/true\"]\n")
        };
        let global = "https://graph.microsoft.com";
        let a = mailbox("a", "support@contoso.com", global, "folders = [\"Inbox\", \"Sales\"]");
        for (b, key) in [
            (mailbox("b", "Support@Contoso.com", global, "folders = [\"sales\"]"), "`folders`"),
            (
                mailbox(
                    "b",
                    "support@contoso.com",
                    global,
                    "folders = [\"Other\"]\nafter = \"move\"\nmove_to = \"SALES\"",
                ),
                "`move_to`",
            ),
            (mailbox("b", "support@contoso.com", global, "folders = [\"Deleted Items\"]"), "`after` in"),
        ] {
            let text = format!("{a}{b}").replace(
                "folders = [\"Inbox\", \"Sales\"]",
                "folders = [\"Inbox\", \"Sales\"]\nafter = \"delete\"",
            );
            let e = load_all(&text).map(|_| ()).unwrap_err();
            assert!(
                e.contains(key) && e.contains("line ") && e.contains("same Microsoft 365 mailbox"),
                "{b}: {e}"
            );
        }
        // Another mailbox, or another cloud, is another account; IMAP is another server.
        for b in [
            mailbox("b", "sales@contoso.com", global, ""),
            mailbox("b", "support@contoso.com", "https://graph.microsoft.us", ""),
        ] {
            assert_eq!(load_all(&format!("{a}{b}")).unwrap().len(), 2, "{b}");
        }
    }
}
