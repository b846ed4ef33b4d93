//! The configuration file's keys: their names, and the one table (name,
//! kind, default, meaning) that error messages, the man page, the README
//! and the example configuration are made from. The serde types in
//! `file.rs` are the parser; a test holds them to this table.

use std::sync::LazyLock;

use serde::de::{self, Deserialize, Deserializer, Visitor};

use super::cluster::{
    CHATWOOT_REDIS_PASSWORD, CHATWOOT_REDIS_SENTINELS, CHATWOOT_REDIS_URL, CHATWOOT_SENTINEL_MASTER,
    DEFAULT_KEY_PREFIX, DEFAULT_LEASE, DEFAULT_REDIS_URL, DEFAULT_SENTINEL_MASTER, ENV_REDIS_URL,
};
use super::file::Login;
use super::mailbox::{
    After, MailSource, Provider, Tls, DEFAULT_FOLDER, DEFAULT_GRAPH_FOLDER, DEFAULT_GRAPH_POLL_INTERVAL,
    DEFAULT_MAX_CONNECTIONS, DEFAULT_POLL_INTERVAL, DEFAULT_REFUSED_FOLDER, GRAPH_APP_SCOPE,
    GRAPH_USER_SCOPE,
};
use super::{DEFAULT_MAX_SIZE, DEFAULT_TIMEOUT, RELAY_PATH};

// Every key, named once. serde's field names cannot be constants: a test
// checks that the parser's fields are these.
pub const URL: &str = "url";
pub const PASSWORD: &str = "password";
pub const PASSWORD_FILE: &str = "password_file";
pub const TIMEOUT: &str = "timeout";
pub const MAX_SIZE: &str = "max_size";
pub const CA_FILE: &str = "ca_file";
pub const REJECT_DIR: &str = "reject_dir";
pub const RECIPIENT_HEADER: &str = "recipient_header";
pub const STATE_DIR: &str = "state_dir";
pub const ROUTE: &str = "route";
pub const DOMAINS: &str = "domains";
pub const MAILBOX: &str = "mailbox";
pub const NAME: &str = "name";
pub const SOURCE: &str = "source";
pub const HOST: &str = "host";
pub const PORT: &str = "port";
pub const TLS: &str = "tls";
pub const USER: &str = "user";
pub const FOLDERS: &str = "folders";
pub const AFTER: &str = "after";
pub const MOVE_TO: &str = "move_to";
pub const REFUSED_FOLDER: &str = "refused_folder";
pub const POLL_INTERVAL: &str = "poll_interval";
pub const MAX_CONNECTIONS: &str = "max_connections";
pub const GRAPH_URL: &str = "graph_url";
pub const AUTH: &str = "auth";
pub const OAUTH2: &str = "oauth2";
pub const PROVIDER: &str = "provider";
pub const TENANT: &str = "tenant";
pub const CLIENT_ID: &str = "client_id";
pub const CLIENT_SECRET_FILE: &str = "client_secret_file";
pub const REFRESH_TOKEN_FILE: &str = "refresh_token_file";
pub const TOKEN_COMMAND: &str = "token_command";
pub const TOKEN_URL: &str = "token_url";
pub const SCOPE: &str = "scope";
pub const DEVICE_AUTHORIZATION_URL: &str = "device_authorization_url";
pub const AUTHORIZATION_URL: &str = "authorization_url";
pub const CLUSTER: &str = "cluster";
pub const REDIS_URL: &str = "redis_url";
pub const SENTINELS: &str = "sentinels";
pub const SENTINEL_MASTER: &str = "sentinel_master";
pub const LEASE: &str = "lease";
pub const NODE: &str = "node";
pub const KEY_PREFIX: &str = "key_prefix";
pub const LOG_FORMAT: &str = "log_format";
pub const METRICS: &str = "metrics";
pub const LISTEN: &str = "listen";
pub const ALLOW_REMOTE: &str = "allow_remote";

/// The tables a key can stand in.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Table {
    Top,
    Route,
    Mailbox,
    OAuth2,
    Metrics,
    Cluster,
}

impl Table {
    pub const ALL: [Table; 6] =
        [Table::Top, Table::Route, Table::Mailbox, Table::OAuth2, Table::Metrics, Table::Cluster];

    /// The keys that lead to it: `mailbox`, `oauth2` for `[mailbox.oauth2]`.
    pub fn names(self) -> &'static [&'static str] {
        match self {
            Table::Top => &[],
            Table::Route => &[ROUTE],
            Table::Mailbox => &[MAILBOX],
            Table::OAuth2 => &[MAILBOX, OAUTH2],
            Table::Cluster => &[CLUSTER],
            Table::Metrics => &[METRICS],
        }
    }

    /// As a file writes its header: `[[mailbox]]`, `[mailbox.oauth2]`.
    pub fn header(self) -> String {
        match self {
            Table::Top => "the top level".into(),
            Table::Route | Table::Mailbox => format!("[[{}]]", self.names().join(".")),
            Table::OAuth2 | Table::Metrics | Table::Cluster => format!("[{}]", self.names().join(".")),
        }
    }
}

/// What a key's value is.
#[derive(Clone, Copy, Debug)]
pub enum Kind {
    Text,
    /// A quoted string that is a secret: kept as written, never shown.
    Secret,
    Path,
    Url,
    /// A whole number from `min` to `max` (if any), in `unit` (if any).
    Integer {
        min: u64,
        max: Option<u64>,
        unit: &'static str,
    },
    /// A number of bytes, or a quoted number with K, M or G.
    Size,
    /// One of the names of a serde enum.
    Choice(fn() -> &'static [&'static str]),
    /// A list of quoted strings.
    List,
    /// true or false.
    Bool,
    /// An address and a port: `"127.0.0.1:9898"`, `"[::1]:9898"`.
    Address,
    /// `[[name]]`, once for each.
    Tables(Table),
    /// `[table.name]` under the table it is in.
    Table(Table),
}

impl Kind {
    /// What a value of this kind is, after "must be" and in the docs.
    pub fn describe(self) -> String {
        match self {
            Kind::Text | Kind::Secret => "a quoted string".into(),
            Kind::Path => "a file name in quotes".into(),
            Kind::Url => "a URL in quotes".into(),
            Kind::Integer { min, max, unit } => {
                let unit = if unit.is_empty() { String::new() } else { format!(" ({unit})") };
                match max {
                    Some(max) => format!("a whole number from {min} to {max}{unit}"),
                    None => format!("a whole number, {min} or more{unit}"),
                }
            }
            Kind::Size => "a number of bytes, or a quoted number with K, M or G (binary)".into(),
            Kind::Choice(names) => choices(names()),
            Kind::List => "a list of quoted strings".into(),
            Kind::Bool => "true or false".into(),
            Kind::Address => "an IP address and a port in quotes".into(),
            Kind::Tables(table) => format!("a {} table, one for each", table.header()),
            Kind::Table(table) => format!("a {} table", table.header()),
        }
    }
}

/// `"a", "b" or "c"`.
fn choices(names: &[&str]) -> String {
    let quoted: Vec<String> = names.iter().map(|name| format!("{name:?}")).collect();
    match quoted.split_last() {
        Some((last, rest)) if !rest.is_empty() => format!("{} or {last}", rest.join(", ")),
        _ => quoted.concat(),
    }
}

/// One key of the configuration file.
#[derive(Debug)]
pub struct Key {
    pub table: Table,
    pub name: &'static str,
    pub kind: Kind,
    /// What holds when the key is not set, if anything.
    pub default: Option<String>,
    /// A value as it would be written: `30`, `"64M"`, `[[route]]`.
    pub sample: &'static str,
    pub meaning: String,
}

impl Key {
    /// `mailbox.oauth2.scope`.
    pub fn path(&self) -> String {
        let mut names = self.table.names().to_vec();
        names.push(self.name);
        names.join(".")
    }

    /// How the sample is written in a file: `port = 993`, or `[[mailbox]]`.
    pub fn example(&self) -> String {
        match self.kind {
            Kind::Tables(_) | Kind::Table(_) => self.sample.to_string(),
            _ => format!("{} = {}", self.name, self.sample),
        }
    }
}

/// The key `name` of `table`.
pub fn find(table: Table, name: &str) -> Option<&'static Key> {
    keys().iter().find(|key| key.table == table && key.name == name)
}

/// `n`, if the whole-number key `name` of `table` takes it; else what it must be.
pub fn integer(table: Table, name: &str, n: u64) -> Result<u64, String> {
    match find(table, name).map(|key| key.kind) {
        Some(Kind::Integer { min, max, .. }) if n >= min && max.is_none_or(|max| n <= max) => Ok(n),
        Some(kind) => Err(kind.describe()),
        None => Err(format!("no key {name} of {}", table.header())),
    }
}

/// Every key, each table's after the key that opens it, in the order the
/// docs show them.
pub fn keys() -> &'static [Key] {
    static KEYS: LazyLock<Vec<Key>> = LazyLock::new(table);
    &KEYS
}

fn key(
    table: Table,
    name: &'static str,
    kind: Kind,
    sample: &'static str,
    meaning: impl Into<String>,
) -> Key {
    Key { table, name, kind, default: None, sample, meaning: meaning.into() }
}

impl Key {
    fn or(mut self, default: impl Into<String>) -> Key {
        self.default = Some(default.into());
        self
    }
}

fn table() -> Vec<Key> {
    use Kind::{Address, Bool, Choice, Integer, List, Path, Secret, Size, Tables, Text, Url};
    use Table::{Cluster, Mailbox, Metrics, OAuth2, Route, Top};
    let seconds = |min, max| Integer { min, max: Some(max), unit: "seconds" };
    vec![
        key(
            Top,
            URL,
            Url,
            "\"https://chatwoot.example.com\"",
            format!(
                "Chatwoot's base URL (then {RELAY_PATH} is appended), or the full relay ingress URL. \
                 http:// or https://, without a user or password."
            ),
        ),
        key(
            Top,
            PASSWORD,
            Secret,
            "\"...\"",
            "The ingress password (Chatwoot's RAILS_INBOUND_EMAIL_PASSWORD). Prefer password_file; \
             a file that holds the password must not be readable by every user (a warning says so).",
        ),
        key(
            Top,
            PASSWORD_FILE,
            Path,
            "\"/etc/chatwoot-ingress/password\"",
            "File whose first line is the ingress password. Not together with password.",
        ),
        key(
            Top,
            TIMEOUT,
            seconds(1, 3600),
            "30",
            "Give up after this many seconds in all, retries included.",
        )
        .or(DEFAULT_TIMEOUT.as_secs().to_string()),
        key(Top, MAX_SIZE, Size, "\"64M\"", "Refuse larger messages permanently.")
            .or(format!("\"{}M\"", DEFAULT_MAX_SIZE >> 20)),
        key(
            Top,
            CA_FILE,
            Path,
            "\"/etc/chatwoot-ingress/ca.pem\"",
            "A PEM certificate authority to trust in addition to the system's.",
        ),
        key(
            Top,
            REJECT_DIR,
            Path,
            "\"/var/lib/chatwoot-ingress/rejected\"",
            "Keep a copy of every permanently refused message here, with its reason beside it. \
             It must be writable by the user the mail system runs chatwoot-ingress as.",
        ),
        key(
            Top,
            RECIPIENT_HEADER,
            Text,
            "\"Delivered-To\"",
            "Take the envelope recipient from the topmost (newest) instance of this header when \
             the caller gives none (--recipient wins): for a catch-all mailbox fetched by getmail, \
             fetchmail or import, where only the header tells which address a message was for.",
        ),
        key(
            Top,
            STATE_DIR,
            Path,
            "\"/var/lib/chatwoot-ingress\"",
            "Where watch keeps its place in each folder (in watch/ below it).",
        )
        .or("systemd's $STATE_DIRECTORY, else the user's state directory, else /var/lib/chatwoot-ingress"),
        key(
            Top,
            LOG_FORMAT,
            Choice(names::<crate::log::Format>),
            "\"json\"",
            "How watch writes each line of its log: text, or one JSON object per line (time, level, \
             event, mailbox, folder, uid, message_id, bytes, status, ms, error, fix, message) for \
             container log pipelines. --log-format wins.",
        )
        .or("\"text\""),
        key(
            Top,
            METRICS,
            Kind::Table(Metrics),
            "[metrics]",
            "Where watch serves its Prometheus metrics (GET /metrics) and health (GET /healthz/live, \
             /healthz/ready) over plain HTTP. They hold no message content and no secret.",
        ),
        key(
            Metrics,
            LISTEN,
            Address,
            "\"127.0.0.1:9898\"",
            "The address and port to serve them on. --metrics-listen wins. An address that is not \
             loopback is refused unless allow_remote = true.",
        ),
        key(
            Metrics,
            ALLOW_REMOTE,
            Bool,
            "true",
            "Allow a listen address that is not loopback, for a container's probes (in a container, \
             loopback is the container's own). Anyone who reaches the port sees the metrics.",
        )
        .or("false"),
        key(
            Top,
            ROUTE,
            Tables(Route),
            "[[route]]",
            "Another Chatwoot instance for some recipient domains (a host serving production and \
             staging, or several customers). The recipient's domain selects the route whose \
             domains match it best (an exact name beats a wildcard); the top-level url and \
             password take everything else. A recipient that no route covers when there is no \
             top-level url defers the message (4.3.5) with a reason that names the domain. \
             Repeat the table for each instance.",
        ),
        key(
            Route,
            DOMAINS,
            List,
            "[\"support.example.org\", \"*.example.net\"]",
            "Exact domain names, or *. and a domain for every name below it (not the domain itself).",
        ),
        key(Route, URL, Url, "\"https://chatwoot.example.org\"", "That instance's URL, as url."),
        key(Route, PASSWORD, Secret, "\"...\"", "That instance's ingress password, as password."),
        key(
            Route,
            PASSWORD_FILE,
            Path,
            "\"/etc/chatwoot-ingress/password-example-org\"",
            "Or a file whose first line is it, as password_file.",
        ),
        key(
            Top,
            MAILBOX,
            Tables(Mailbox),
            "[[mailbox]]",
            "A mailbox that watch fetches from, over IMAP or through Microsoft Graph (repeat the \
             table for each). Each message is delivered through the same steps as any other; it is \
             flagged, moved or deleted on the server only after the ingress answered 2xx for it. \
             Mailboxes of one account (the same host, port and user; for Graph, the same mailbox) \
             may not watch the same folder, nor move or refuse mail into a folder another of them \
             watches.",
        ),
        key(
            Mailbox,
            NAME,
            Text,
            "\"support\"",
            "Its name, in logs, the state directory and --mailbox: letters, digits, '.', '_' and '-'.",
        ),
        key(
            Mailbox,
            SOURCE,
            Choice(names::<MailSource>),
            "\"graph\"",
            "imap, or graph: a Microsoft 365 mailbox through Microsoft Graph (a tenant with IMAP \
             switched off, a shared mailbox, no password), followed with a delta query per folder \
             every poll_interval. A graph mailbox has user, graph_url and a [mailbox.oauth2] table; \
             host, port, tls, password, password_file, auth and max_connections are IMAP's and are \
             refused there, as graph_url is for IMAP.",
        )
        .or("\"imap\""),
        key(Mailbox, HOST, Text, "\"imap.example.com\"", "The IMAP server."),
        key(Mailbox, PORT, Integer { min: 1, max: Some(65535), unit: "" }, "993", "Its IMAP port.")
            .or("993 with tls = \"implicit\", else 143"),
        key(
            Mailbox,
            TLS,
            Choice(names::<Tls>),
            "\"implicit\"",
            "implicit (TLS from the start), starttls (never falls back to cleartext), or none (only \
             for a server on this machine). Certificates are verified.",
        )
        .or("\"implicit\""),
        key(
            Mailbox,
            USER,
            Text,
            "\"catchall@example.com\"",
            "The IMAP login name; with source = \"graph\", the mailbox: its user principal name \
             (support@contoso.com) or object id.",
        ),
        key(Mailbox, PASSWORD, Secret, "\"...\"", "The IMAP login password; prefer password_file."),
        key(
            Mailbox,
            PASSWORD_FILE,
            Path,
            "\"/etc/chatwoot-ingress/imap-support\"",
            "A file whose first line is the password, read again at each login: fixing it needs no restart.",
        ),
        key(
            Mailbox,
            FOLDERS,
            List,
            "[\"INBOX\"]",
            "The folders to fetch from, each once. IMAP: INBOX in any case is INBOX, other names are \
             case-sensitive. Graph: well-known names (Inbox, Archive, …) or display names, \
             \"Parent/Child\" for a folder in another, in any case.",
        )
        .or(format!("[\"{DEFAULT_FOLDER}\"]; with source = \"graph\", [\"{DEFAULT_GRAPH_FOLDER}\"]")),
        key(
            Mailbox,
            AFTER,
            Choice(names::<After>),
            "\"seen\"",
            "What to do with a message once the ingress answered 2xx: seen (flag it \\Seen; Graph: \
             isRead), move (to move_to) or delete (IMAP: UID EXPUNGE of that message only; Graph: a \
             move to Deleted Items, which can be undone).",
        )
        .or("\"seen\""),
        key(
            Mailbox,
            MOVE_TO,
            Text,
            "\"Delivered\"",
            "Where after = \"move\" puts messages; created if missing. Not a folder that is watched: \
             what is moved there would be fetched and delivered again.",
        ),
        key(
            Mailbox,
            REFUSED_FOLDER,
            Text,
            "\"Refused\"",
            "Where messages refused for good (not an email, larger than max_size) go, never to be \
             fetched again; created if missing. Not a folder that is watched; it may be move_to.",
        )
        .or(format!("\"{DEFAULT_REFUSED_FOLDER}\"")),
        key(
            Mailbox,
            RECIPIENT_HEADER,
            Text,
            "\"Delivered-To\"",
            "As recipient_header, for this mailbox (a catch-all's envelope recipient).",
        ),
        key(
            Mailbox,
            CA_FILE,
            Path,
            "\"/etc/chatwoot-ingress/imap-ca.pem\"",
            "As ca_file, for this IMAP server, or for Graph (a TLS-inspecting proxy's CA).",
        ),
        key(
            Mailbox,
            POLL_INTERVAL,
            seconds(5, 3600),
            "60",
            "Seconds between looks for new mail: on an IMAP server without IDLE, or Graph's delta \
             query of each folder (one request while nothing arrives).",
        )
        .or(format!(
            "{}; with source = \"graph\", {}",
            DEFAULT_POLL_INTERVAL.as_secs(),
            DEFAULT_GRAPH_POLL_INTERVAL.as_secs()
        )),
        key(
            Mailbox,
            MAX_CONNECTIONS,
            Integer { min: 1, max: None, unit: "" },
            "10",
            "How many IMAP connections watch opens to this mailbox at most; folders beyond that \
             share connections and are visited in turn. Keep it below the server's limit per \
             account (Gmail's is 15), counting other clients of the account.",
        )
        .or(DEFAULT_MAX_CONNECTIONS.to_string()),
        key(
            Mailbox,
            GRAPH_URL,
            Url,
            "\"https://graph.microsoft.com\"",
            "Microsoft Graph, for source = \"graph\": a national cloud's (https://graph.microsoft.us, \
             https://microsoftgraph.chinacloudapi.cn; set token_url and scope for that cloud too). \
             https://, or http:// to a service on this machine.",
        )
        .or(crate::graph::GLOBAL),
        key(
            Mailbox,
            AUTH,
            Choice(names::<Login>),
            "\"password\"",
            "How to log in: password (with password or password_file), or xoauth2 or oauthbearer \
             (SASL with an OAuth2 access token from the [mailbox.oauth2] table, for Microsoft 365 and \
             Gmail, which take either).",
        )
        .or("\"password\""),
        key(
            Mailbox,
            OAUTH2,
            Kind::Table(OAuth2),
            "[mailbox.oauth2]",
            "Where the access tokens of a mailbox with auth = xoauth2 or oauthbearer, or with \
             source = \"graph\", come from: \
             token_command; else a user's refresh token in refresh_token_file (written by \
             chatwoot-ingress oauth2 authorize); else the application's own access (client \
             credentials, with client_secret_file: Microsoft 365 app-only, which shared mailboxes \
             allow). A token is shared by the mailbox's folders and renewed before it expires; one \
             the server no longer takes is replaced at the next login. A provider's refusal is logged \
             with what to do, and asked again with backoff.",
        ),
        key(
            OAuth2,
            PROVIDER,
            Choice(names::<Provider>),
            "\"microsoft\"",
            "Fills in token_url, scope, device_authorization_url and authorization_url (Google has no \
             client credentials for Gmail).",
        ),
        key(
            OAuth2,
            TENANT,
            Text,
            "\"contoso.onmicrosoft.com\"",
            "Microsoft: the Directory (tenant) ID, or a domain, of the app registration; needed for \
             client credentials.",
        )
        .or("common, for a user's sign-in"),
        key(
            OAuth2,
            CLIENT_ID,
            Text,
            "\"00000000-0000-0000-0000-000000000000\"",
            "The application (client) ID the provider gave the app registration or OAuth client.",
        ),
        key(
            OAuth2,
            CLIENT_SECRET_FILE,
            Path,
            "\"/etc/chatwoot-ingress/oauth2-support.secret\"",
            "A file whose first line is the client secret (its value), read again at each token request: \
             fixing it needs no restart. Needed for client credentials; with a refresh token, when the \
             client has a secret (Google's do).",
        ),
        key(
            OAuth2,
            REFRESH_TOKEN_FILE,
            Path,
            "\"/var/lib/chatwoot-ingress/support.refresh-token\"",
            "A file whose first line is the user's refresh token. chatwoot-ingress oauth2 authorize \
             writes it; watch replaces it when the provider sends a new one (atomically, mode 0600), so \
             its directory must be writable by the user watch runs as (the state directory is).",
        ),
        key(
            OAuth2,
            TOKEN_COMMAND,
            List,
            "[\"/usr/local/bin/imap-token\", \"support\"]",
            "A program and its arguments (no shell) that prints an access token on its first line, or a \
             JSON object with access_token (and expires_in, which lets the token be reused). Run for a \
             login, without input, within 30 seconds, with PATH, HOME, USER, LOGNAME, LANG, LC_ALL and \
             TZ from the environment and CHATWOOT_INGRESS_MAILBOX and CHATWOOT_INGRESS_USER set; what \
             it writes on standard error is not shown. Not together with the other keys.",
        ),
        key(
            OAuth2,
            TOKEN_URL,
            Url,
            "\"https://login.microsoftonline.com/contoso.onmicrosoft.com/oauth2/v2.0/token\"",
            "The token endpoint: https://, or http:// to this machine only.",
        )
        .or("the provider's"),
        key(
            OAuth2,
            SCOPE,
            Text,
            "\"https://outlook.office365.com/.default\"",
            "The scopes to ask for, separated by spaces.",
        )
        .or(format!(
            "with provider = \"microsoft\", https://outlook.office365.com/.default for client \
             credentials, else https://outlook.office.com/IMAP.AccessAsUser.All offline_access \
             (source = \"graph\": {GRAPH_APP_SCOPE}, else {GRAPH_USER_SCOPE}); with \"google\", \
             https://mail.google.com/"
        )),
        key(
            OAuth2,
            DEVICE_AUTHORIZATION_URL,
            Url,
            "\"https://login.microsoftonline.com/contoso.onmicrosoft.com/oauth2/v2.0/devicecode\"",
            "For oauth2 authorize: the device authorization endpoint, whose code is entered in a browser \
             on any device.",
        )
        .or("Microsoft's"),
        key(
            OAuth2,
            AUTHORIZATION_URL,
            Url,
            "\"https://accounts.google.com/o/oauth2/v2/auth\"",
            "For oauth2 authorize, when there is no device authorization endpoint: the authorization \
             endpoint of a browser's sign-in, sent back to this machine.",
        )
        .or("Google's"),
        key(
            Top,
            CLUSTER,
            Kind::Table(Cluster),
            "[cluster]",
            "Cluster mode: several watch replicas (on other hosts, pods or containers, with the same \
             configuration) share the mailboxes through Redis — Chatwoot's own. Each mailbox is \
             watched by one replica at a time, under a lease that replica renews; the replicas \
             divide the mailboxes evenly, and take over those of a replica that stops or dies within \
             the lease and a few seconds. The place in each folder is kept in Redis (written only by \
             the holder), so a takeover goes on where the other replica stopped. Without the table, \
             watch runs alone and keeps its place in state_dir. Needs Redis 5 or later, which must \
             not evict keys (maxmemory-policy noeviction, as Sidekiq wants too).",
        ),
        key(
            Cluster,
            REDIS_URL,
            Url,
            "\"redis://redis:6379/0\"",
            format!(
                "Where Redis is: redis://, or rediss:// for TLS (certificates verified; ca_file is \
                 trusted too); /N picks the database. {ENV_REDIS_URL} overrides it; without either, \
                 Chatwoot's {CHATWOOT_REDIS_URL} is used. A password written in it is used, never shown."
            ),
        )
        .or(format!("Chatwoot's {CHATWOOT_REDIS_URL}, else {DEFAULT_REDIS_URL}")),
        key(
            Cluster,
            PASSWORD_FILE,
            Path,
            "\"/etc/chatwoot-ingress/redis-password\"",
            "A file whose first line is the Redis password (also sent to the sentinels), read again at \
             each connection.",
        )
        .or(format!("Chatwoot's {CHATWOOT_REDIS_PASSWORD}, else the password in the URL")),
        key(
            Cluster,
            SENTINELS,
            List,
            "[\"sentinel-1:26379\", \"sentinel-2:26379\"]",
            "Redis Sentinels (host:port) that name the master: the master is asked of them at each \
             connection, so a failover is followed. The URL's host is then not used; its scheme and \
             database are.",
        )
        .or(format!("Chatwoot's {CHATWOOT_REDIS_SENTINELS} (\"host:port,host:port\"), else none")),
        key(Cluster, SENTINEL_MASTER, Text, "\"mymaster\"", "The master's name at the sentinels.")
            .or(format!("Chatwoot's {CHATWOOT_SENTINEL_MASTER}, else {DEFAULT_SENTINEL_MASTER}")),
        key(
            Cluster,
            LEASE,
            seconds(3, 600),
            "30",
            "How long a replica's hold on a mailbox lasts without renewal (it renews every 2 seconds \
             or more often). A replica that cannot renew stops fetching and settling before its lease \
             can have ended, by its own clock; a dead replica's mailboxes are taken over after at most \
             this and a few seconds.",
        )
        .or(DEFAULT_LEASE.as_secs().to_string()),
        key(
            Cluster,
            NODE,
            Text,
            "\"host-a\"",
            "This replica's name in leases, logs and watch --status: letters, digits, '.', '_', '-', \
             ':' and '@'. Two running replicas should not share one.",
        )
        .or("the host name and the process id (host:pid)"),
        key(
            Cluster,
            KEY_PREFIX,
            Text,
            "\"chatwoot-ingress\"",
            "What the names of our keys in Redis begin with (then ':'): a Redis shared by several \
             installations needs one for each.",
        )
        .or(format!("\"{DEFAULT_KEY_PREFIX}\"")),
    ]
}

/// The names serde gives the fields of struct `T`, or the variants of
/// enum `T`: what its derived `Deserialize` hands a deserializer, caught
/// by one that reads nothing.
pub fn names<T: for<'de> Deserialize<'de>>() -> &'static [&'static str] {
    let mut names: &'static [&'static str] = &[];
    let _ = T::deserialize(Names(&mut names));
    names
}

struct Names<'a>(&'a mut &'static [&'static str]);

#[derive(Debug)]
struct Caught;

impl std::fmt::Display for Caught {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("names caught")
    }
}

impl std::error::Error for Caught {}

impl de::Error for Caught {
    fn custom<T: std::fmt::Display>(_: T) -> Caught {
        Caught
    }
}

impl<'de> Deserializer<'de> for Names<'_> {
    type Error = Caught;

    fn deserialize_any<V: Visitor<'de>>(self, _: V) -> Result<V::Value, Caught> {
        Err(Caught)
    }

    fn deserialize_struct<V: Visitor<'de>>(
        self,
        _: &'static str,
        fields: &'static [&'static str],
        _: V,
    ) -> Result<V::Value, Caught> {
        *self.0 = fields;
        Err(Caught)
    }

    fn deserialize_enum<V: Visitor<'de>>(
        self,
        _: &'static str,
        variants: &'static [&'static str],
        _: V,
    ) -> Result<V::Value, Caught> {
        *self.0 = variants;
        Err(Caught)
    }

    serde::forward_to_deserialize_any! {
        bool i8 i16 i32 i64 i128 u8 u16 u32 u64 u128 f32 f64 char str string bytes byte_buf option
        unit unit_struct newtype_struct seq tuple tuple_struct map identifier ignored_any
    }
}

#[cfg(test)]
mod tests {
    use std::path::Path;

    use super::super::file::{
        ClusterFile, File, FileConfig, MailboxFile, MetricsFile, OAuth2File, RouteFile,
    };
    use super::*;

    #[test]
    fn the_table_has_the_keys_the_parser_takes_and_no_other() {
        for table in Table::ALL {
            let parsed = match table {
                Table::Top => names::<FileConfig>(),
                Table::Route => names::<RouteFile>(),
                Table::Mailbox => names::<MailboxFile>(),
                Table::OAuth2 => names::<OAuth2File>(),
                Table::Cluster => names::<ClusterFile>(),
                Table::Metrics => names::<MetricsFile>(),
            };
            let mut parsed = parsed.to_vec();
            let mut documented: Vec<&str> =
                keys().iter().filter(|k| k.table == table).map(|k| k.name).collect();
            parsed.sort_unstable();
            documented.sort_unstable();
            assert_eq!(parsed, documented, "the keys of {}", table.header());
        }
        // Each table is documented after the key that opens it, its keys after it.
        for (n, key) in keys().iter().enumerate() {
            if let Kind::Tables(inner) | Kind::Table(inner) = key.kind {
                assert_eq!(inner.names().last(), Some(&key.name));
                assert_eq!(&inner.names()[..inner.names().len() - 1], key.table.names());
                assert_eq!(key.sample, inner.header(), "{}", key.path());
                let first = keys().iter().position(|k| k.table == inner).unwrap();
                assert!(first > n, "{}", key.path());
            }
        }
        assert_eq!(names::<Tls>(), ["implicit", "starttls", "none"]);
        assert_eq!(choices(names::<After>()), "\"seen\", \"move\" or \"delete\"");
    }

    #[test]
    fn every_sample_is_a_value_of_its_key() {
        for key in keys() {
            let header = match key.table {
                Table::Top => String::new(),
                Table::Route | Table::Mailbox | Table::Metrics | Table::Cluster => {
                    format!("{}\n", key.table.header())
                }
                Table::OAuth2 => format!("{}\n{}\n", Table::Mailbox.header(), key.table.header()),
            };
            let text = format!("{header}{}\n", key.example());
            let file = File { path: Path::new("c.toml"), text: &text };
            if let Err(e) = file.parse() {
                panic!("{text}: {e}");
            }
            if let Kind::Choice(names) = key.kind {
                for name in names() {
                    let text = format!("{header}{} = {name:?}\n", key.name);
                    assert!(File { path: Path::new("c.toml"), text: &text }.parse().is_ok(), "{text}");
                }
            }
        }
    }

    #[test]
    fn integers_outside_their_range_are_not_taken() {
        let takes = |table, name, n| integer(table, name, n).is_ok();
        assert!(takes(Table::Top, TIMEOUT, 1) && takes(Table::Top, TIMEOUT, 3600));
        assert!(!takes(Table::Top, TIMEOUT, 0) && !takes(Table::Top, TIMEOUT, 3601));
        assert_eq!(integer(Table::Top, TIMEOUT, 0), Err("a whole number from 1 to 3600 (seconds)".into()));
        assert!(
            takes(Table::Mailbox, MAX_CONNECTIONS, u64::MAX) && !takes(Table::Mailbox, MAX_CONNECTIONS, 0)
        );
        assert!(!takes(Table::Top, URL, 1), "not a number");
    }
}
