//! One configuration from flags, environment, TOML file and defaults.
//!
//! Postfix runs its pipe commands with an empty environment, so the file is
//! how most mail systems configure us. Every value remembers where it came
//! from, for `check`, `-v` and error messages. No value read from the file
//! is ever quoted back in a message: on a password line it is the password.
//! The file is read by serde into the types of `file.rs`; its keys, with
//! their kinds, defaults and meanings, are the table in `keys.rs`.

use std::fmt;
use std::fs;
use std::io;
use std::path::{Path, PathBuf};
use std::time::Duration;

use reqwest::Url;
use toml::Spanned;

use crate::outcome::{Cause, Outcome};
use crate::sys::{io_reason, whoami};

mod cluster;
mod file;
pub mod keys;
mod mailbox;
pub use cluster::{Cluster, ENV_REDIS_URL};
use file::{read_password_file, File, FileConfig, RouteFile, Size};
use keys::Table;
pub use mailbox::{
    After, Auth, Client, Grant, Graph, Imap, MailSource, Mailbox, OAuth2, Provider, Sasl, Server, Tls,
    DEFAULT_FOLDER, DEFAULT_GRAPH_FOLDER, DEFAULT_GRAPH_POLL_INTERVAL, DEFAULT_MAX_CONNECTIONS,
    DEFAULT_POLL_INTERVAL, DEFAULT_REFUSED_FOLDER,
};

pub const SYSTEM_CONFIG: &str = "/etc/chatwoot-ingress/config.toml";
pub const RELAY_PATH: &str = "/rails/action_mailbox/relay/inbound_emails";
pub const DEFAULT_TIMEOUT: Duration = Duration::from_secs(30);
pub const DEFAULT_MAX_SIZE: u64 = 64 * 1024 * 1024;

/// Environment variables. Ours (`CHATWOOT_INGRESS_*`) override the
/// configuration file; the rake task's generic `URL` and `INGRESS_PASSWORD`
/// (which getmail, fetchmail or a shell may carry for another purpose) are
/// only fallbacks below it.
pub const ENV_CONFIG: &str = "CHATWOOT_INGRESS_CONFIG";
pub const ENV_URL: &str = "CHATWOOT_INGRESS_URL";
pub const ENV_PASSWORD: &str = "CHATWOOT_INGRESS_PASSWORD";
pub const RAKE_URL: &str = "URL";
pub const RAKE_PASSWORD: &str = "INGRESS_PASSWORD";
/// Chatwoot's own variable for the ingress password, which its `.env` and
/// its Helm chart's Secret hold: a container beside Chatwoot that reads
/// them needs no second copy. Below the file, like the rake task's.
pub const CHATWOOT_PASSWORD: &str = "RAILS_INBOUND_EMAIL_PASSWORD";

/// What the command line says about the configuration (its flags).
#[derive(Clone, Debug, Default)]
pub struct Overrides {
    pub config: Option<PathBuf>,
    pub url: Option<String>,
    pub password_file: Option<PathBuf>,
    pub timeout: Option<u64>,
    pub max_size: Option<String>,
    pub ca_file: Option<PathBuf>,
    pub reject_dir: Option<PathBuf>,
    pub recipient_header: Option<String>,
}

/// A configuration problem. The message names the file, line and key when there is one.
#[derive(Debug, thiserror::Error)]
#[error("{0}")]
pub struct ConfigError(String);

/// The one mapping of a configuration fault to an outcome: temporary
/// (4.3.5), so that mail waits while the configuration is fixed.
impl From<ConfigError> for Outcome {
    fn from(e: ConfigError) -> Outcome {
        Outcome::new(Cause::Config, e.0)
    }
}

fn error(message: impl Into<String>) -> ConfigError {
    ConfigError(message.into())
}

/// Where a value came from.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Source {
    Flag(&'static str),
    Env(&'static str),
    File(PathBuf),
    Default,
}

impl fmt::Display for Source {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Source::Flag(flag) => write!(f, "flag {flag}"),
            Source::Env(name) => write!(f, "environment {name}"),
            Source::File(path) => write!(f, "file {}", path.display()),
            Source::Default => f.write_str("default"),
        }
    }
}

#[derive(Clone, Debug)]
pub struct Sourced<T> {
    pub value: T,
    pub source: Source,
}

pub use crate::secret::Password;

/// A secret written in the configuration file itself, or in a file of its
/// own that is read again each time it is needed, so that fixing the file
/// takes effect without a restart (a watcher that keeps failing to log in
/// logs in once the password file is right).
#[derive(Clone, Debug)]
pub enum Secret {
    Inline(Password),
    File { path: PathBuf, place: String },
}

impl Secret {
    pub fn read(&self) -> Result<Password, ConfigError> {
        match self {
            Secret::Inline(password) => Ok(password.clone()),
            Secret::File { path, place } => read_password_file(path, place, &mut Vec::new()),
        }
    }

    /// The file, when there is one (for `check`'s access step).
    pub fn path(&self) -> Option<&Path> {
        match self {
            Secret::Inline(_) => None,
            Secret::File { path, .. } => Some(path),
        }
    }
}

/// Everything a command needs to know, resolved and validated.
#[derive(Debug)]
pub struct Config {
    /// The file that was read, if any.
    pub file: Option<PathBuf>,
    pub url: Option<Sourced<Url>>,
    pub password: Option<Sourced<Password>>,
    /// The file the password was read from, if it came from one.
    pub password_file: Option<PathBuf>,
    pub timeout: Sourced<Duration>,
    pub max_size: Sourced<u64>,
    pub ca_file: Option<Sourced<PathBuf>>,
    pub reject_dir: Option<Sourced<PathBuf>>,
    /// The header that names the envelope recipient when the caller cannot
    /// (a catch-all mailbox fetched by getmail, fetchmail or `watch`).
    pub recipient_header: Option<Sourced<String>>,
    /// `[[route]]` tables: other Chatwoot instances for some recipient domains.
    pub routes: Vec<Route>,
    /// `[[mailbox]]` tables: the mailboxes `watch` fetches from (IMAP, Graph).
    pub mailboxes: Vec<Mailbox>,
    /// Where `watch` keeps its place in each folder.
    pub state_dir: Option<Sourced<PathBuf>>,
    /// `[cluster]`: replicas of `watch` sharing the mailboxes through Redis.
    pub cluster: Option<Cluster>,
    /// How watch writes its log (the file's; --log-format wins).
    pub log_format: Option<Sourced<crate::log::Format>>,
    /// Where watch serves its metrics and health (the file's; --metrics-listen wins).
    pub metrics: Metrics,
    /// Not fatal, but an administrator should hear of them.
    pub warnings: Vec<String>,
}

/// The `[metrics]` table.
#[derive(Clone, Debug, Default)]
pub struct Metrics {
    pub listen: Option<Sourced<std::net::SocketAddr>>,
    /// A listen address that is not loopback is allowed.
    pub allow_remote: bool,
}

/// A `[[route]]`: mail for these domains goes to another ingress.
#[derive(Clone, Debug)]
pub struct Route {
    pub domains: Vec<Domain>,
    pub target: Target,
    /// The password file, if the password came from one (for `check`).
    pub password_file: Option<PathBuf>,
    /// Where it is written, for messages: "route 2 (file line 14)".
    pub name: String,
}

/// A domain a route is for: an exact name, or `*.` and every name below it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Domain {
    Exact(String),
    Below(String),
}

impl Domain {
    fn parse(text: &str) -> Option<Domain> {
        let text = text.trim().trim_end_matches('.').to_ascii_lowercase();
        let valid = |name: &str| {
            !name.is_empty()
                && name.split('.').all(|label| {
                    !label.is_empty()
                        && label.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'-' || b >= 0x80)
                })
        };
        match text.strip_prefix("*.") {
            Some(rest) if valid(rest) => Some(Domain::Below(rest.to_string())),
            None if valid(&text) => Some(Domain::Exact(text)),
            _ => None,
        }
    }

    /// How well this pattern matches `domain` (lower case): exact names
    /// beat wildcards, and longer wildcards beat shorter ones.
    pub fn matches(&self, domain: &str) -> Option<usize> {
        match self {
            Domain::Exact(name) => (name == domain).then_some(usize::MAX),
            Domain::Below(name) => domain.strip_suffix(name.as_str())?.ends_with('.').then_some(name.len()),
        }
    }
}

impl fmt::Display for Domain {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Domain::Exact(name) => f.write_str(name),
            Domain::Below(name) => write!(f, "*.{name}"),
        }
    }
}

/// Where and with which password to POST.
#[derive(Clone, Debug)]
pub struct Target {
    pub url: Url,
    pub password: Password,
}

impl Config {
    /// Load from the process environment.
    pub fn load(flags: &Overrides) -> Result<Config, ConfigError> {
        Config::load_with(flags, |name| std::env::var(name).ok().filter(|v| !v.is_empty()))
    }

    pub fn load_with(flags: &Overrides, env: impl Fn(&str) -> Option<String>) -> Result<Config, ConfigError> {
        let (path, text) = match config_file(flags, &env)? {
            Some((path, text)) => (Some(path), text),
            None => (None, String::new()),
        };
        let file = path.as_deref().map(|path| File { path, text: &text });
        let content = match &file {
            Some(file) => file.parse()?,
            None => FileConfig::default(),
        };
        // The file's url, with where it came from.
        let url_in_file = || -> Option<(String, Source, String)> {
            let (file, value) = (file.as_ref()?, content.url.as_ref()?);
            Some((value.get_ref().clone(), file.source(), file.at(keys::URL, value)))
        };
        let mut warnings = Vec::new();
        let from_env = |name: &'static str| env(name).map(|v| (v, Source::Env(name)));

        let url_text = match (flags.url.clone(), from_env(ENV_URL)) {
            (Some(url), _) => Some((url, Source::Flag("--url"), "--url".to_string())),
            (None, Some((url, source))) => Some((url, source, ENV_URL.to_string())),
            (None, None) => url_in_file()
                .or_else(|| from_env(RAKE_URL).map(|(url, source)| (url, source, RAKE_URL.to_string()))),
        };
        let url = url_text
            .map(|(text, source, place)| {
                parse_url(&text)
                    .map(|value| Sourced { value, source })
                    .map_err(|e| error(format!("bad url in {place}: {e}")))
            })
            .transpose()?;

        let mut password_file = None;
        let password = if let Some(path) = &flags.password_file {
            password_file = Some(path.clone());
            let value = read_password_file(path, "--password-file", &mut warnings)?;
            Some(Sourced { value, source: Source::Flag("--password-file") })
        } else if let Some((value, source)) = from_env(ENV_PASSWORD) {
            Some(Sourced { value: Password::new(value), source })
        } else if let Some((value, path)) = match &file {
            Some(file) => {
                file.password(Table::Top, &content.password, &content.password_file, &mut warnings)?
            }
            None => None,
        } {
            password_file = path;
            Some(Sourced { value, source: file.as_ref().map_or(Source::Default, File::source) })
        } else {
            [RAKE_PASSWORD, CHATWOOT_PASSWORD]
                .into_iter()
                .find_map(from_env)
                .map(|(value, source)| Sourced { value: Password::new(value), source })
        };
        if let Some(p) = &password {
            if p.value.expose().is_empty() {
                return Err(error(format!("the password from {} is empty", p.source)));
            }
        }

        let timeout = match (flags.timeout, (&file, &content.timeout)) {
            (Some(s), _) => Sourced {
                value: keys::integer(Table::Top, keys::TIMEOUT, s)
                    .map_err(|must| error(format!("bad --timeout: it must be {must}")))?,
                source: Source::Flag("--timeout"),
            },
            (None, (Some(file), Some(value))) => Sourced {
                value: keys::integer(Table::Top, keys::TIMEOUT, *value.get_ref())
                    .map_err(|_| file.invalid(Table::Top, keys::TIMEOUT, Some(value.span())))?,
                source: file.source(),
            },
            _ => Sourced { value: DEFAULT_TIMEOUT.as_secs(), source: Source::Default },
        };
        let timeout = Sourced { value: Duration::from_secs(timeout.value), source: timeout.source };

        let max_size = match (&flags.max_size, (&file, &content.max_size)) {
            (Some(text), _) => Sourced {
                value: parse_size(text).map_err(|e| error(format!("bad --max-size: {e}")))?,
                source: Source::Flag("--max-size"),
            },
            (None, (Some(file), Some(value))) => {
                let size = match value.get_ref() {
                    Size::Bytes(n) => Some(*n).filter(|n| *n > 0),
                    Size::Text(text) => parse_size(text).ok(),
                };
                let invalid = || file.invalid(Table::Top, keys::MAX_SIZE, Some(value.span()));
                Sourced { value: size.ok_or_else(invalid)?, source: file.source() }
            }
            _ => Sourced { value: DEFAULT_MAX_SIZE, source: Source::Default },
        };

        let path_setting =
            |flag: &Option<PathBuf>, name: &'static str, value: &Option<Spanned<PathBuf>>| match (
                flag, &file, value,
            ) {
                (Some(path), _, _) => Some(Sourced { value: path.clone(), source: Source::Flag(name) }),
                (None, Some(file), Some(value)) => {
                    Some(Sourced { value: file.path(value), source: file.source() })
                }
                _ => None,
            };
        let ca_file = path_setting(&flags.ca_file, "--ca-file", &content.ca_file);
        let reject_dir = path_setting(&flags.reject_dir, "--reject-dir", &content.reject_dir);

        let recipient_header = match (&flags.recipient_header, (&file, &content.recipient_header)) {
            (Some(name), _) => Some(Sourced {
                value: header_name(name).ok_or_else(|| {
                    error("bad recipient_header in --recipient-header: expected a header name such as Delivered-To")
                })?,
                source: Source::Flag("--recipient-header"),
            }),
            (None, (Some(file), Some(value))) => Some(Sourced {
                value: file_header_name(file, value)?,
                source: file.source(),
            }),
            _ => None,
        };

        let (routes, mailboxes) = match &file {
            Some(file) => (
                routes(file, &content.route, &mut warnings)?,
                mailbox::mailboxes(file, &content.mailbox, &mut warnings)?,
            ),
            None => (Vec::new(), Vec::new()),
        };
        let state_dir = match (&file, &content.state_dir) {
            (Some(file), Some(value)) => Some(Sourced { value: file.path(value), source: file.source() }),
            _ => env("STATE_DIRECTORY").map(|dirs| Sourced {
                // systemd's StateDirectory= may list several, separated by ':'.
                value: PathBuf::from(dirs.split(':').next().unwrap_or_default()),
                source: Source::Env("STATE_DIRECTORY"),
            }),
        };

        let log_format = match (&file, &content.log_format) {
            (Some(file), Some(value)) => Some(Sourced { value: *value.get_ref(), source: file.source() }),
            _ => None,
        };
        let metrics = match (&file, &content.metrics) {
            (Some(file), Some(table)) => {
                let table = table.get_ref();
                let allow_remote = table.allow_remote.as_ref().is_some_and(|a| *a.get_ref());
                let listen = match &table.listen {
                    Some(value) => {
                        let addr = *value.get_ref();
                        crate::metrics::check_listen(addr, allow_remote).map_err(|why| {
                            error(format!("`{}` in {}: {why}", keys::LISTEN, file.place(Some(value.span()))))
                        })?;
                        Some(Sourced { value: addr, source: file.source() })
                    }
                    None => None,
                };
                Metrics { listen, allow_remote }
            }
            _ => Metrics::default(),
        };

        let cluster = cluster::cluster(file.as_ref(), content.cluster.as_ref(), &env, &mut warnings)?;

        Ok(Config {
            file: path,
            log_format,
            metrics,
            url,
            password,
            password_file,
            timeout,
            max_size,
            ca_file,
            reject_dir,
            recipient_header,
            routes,
            mailboxes,
            state_dir,
            cluster,
            warnings,
        })
    }

    /// Where delivery goes; an error names every place the missing value could be set.
    pub fn target(&self) -> Result<Target, ConfigError> {
        let url = self.url.as_ref().ok_or_else(|| {
            error(format!("no ingress URL: set `url` in {}, {ENV_URL}, or --url", self.file_hint()))
        })?;
        let password = self.password.as_ref().ok_or_else(|| {
            error(format!(
                "no ingress password: set `password_file` in {}, {ENV_PASSWORD}, or --password-file",
                self.file_hint()
            ))
        })?;
        Ok(Target { url: url.value.clone(), password: password.value.clone() })
    }

    /// The `[[mailbox]]` named `name`, or a usage error that lists them.
    pub fn mailbox(&self, name: &str) -> Result<&Mailbox, Outcome> {
        self.mailboxes.iter().find(|m| m.name == name).ok_or_else(|| {
            let known: Vec<&str> = self.mailboxes.iter().map(|m| m.name.as_str()).collect();
            let known = match known.is_empty() {
                true => format!("there is no [[mailbox]] in {}", self.file_hint()),
                false => format!("there are: {}", known.join(", ")),
            };
            Outcome::new(Cause::Usage, format!("no mailbox named {name:?} ({known})"))
        })
    }

    fn file_hint(&self) -> String {
        match &self.file {
            Some(path) => path.display().to_string(),
            None => format!("{SYSTEM_CONFIG} (no configuration file was found)"),
        }
    }
}

/// The configuration file to read, and its text. A file named explicitly must
/// exist; a default location is used only if present, but one that is present
/// and unreadable is an error, not a silent fallback.
fn config_file(
    flags: &Overrides,
    env: &impl Fn(&str) -> Option<String>,
) -> Result<Option<(PathBuf, String)>, ConfigError> {
    if let Some(path) = flags.config.clone().or_else(|| env(ENV_CONFIG).map(PathBuf::from)) {
        return read_text(&path).map(|text| Some((path, text)));
    }
    let user = directories::ProjectDirs::from("", "", "chatwoot-ingress")
        .map(|dirs| dirs.config_dir().join("config.toml"));
    for path in user.into_iter().chain([PathBuf::from(SYSTEM_CONFIG)]) {
        match fs::read_to_string(&path) {
            Ok(text) => return Ok(Some((path, text))),
            Err(e) if e.kind() == io::ErrorKind::NotFound => continue,
            Err(e) => return Err(unreadable(&path, &e)),
        }
    }
    Ok(None)
}

fn read_text(path: &Path) -> Result<String, ConfigError> {
    fs::read_to_string(path).map_err(|e| unreadable(path, &e))
}

fn unreadable(path: &Path, e: &io::Error) -> ConfigError {
    error(format!("cannot read {}: {} (running as {})", path.display(), io_reason(e), whoami()))
}

/// The `[[route]]` tables, each complete (domains, url, password), no
/// domain claimed twice.
fn routes(
    file: &File,
    tables: &[Spanned<RouteFile>],
    warnings: &mut Vec<String>,
) -> Result<Vec<Route>, ConfigError> {
    let mut routes: Vec<Route> = Vec::new();
    for (index, table) in tables.iter().enumerate() {
        let name = format!("route {} ({})", index + 1, file.place(Some(table.span())));
        let table = table.get_ref();
        let missing = |key: &str| error(format!("{name} has no `{key}`"));
        let domains_value = table.domains.as_ref().ok_or_else(|| missing(keys::DOMAINS))?;
        let at = file.at(keys::DOMAINS, domains_value);
        let mut domains = Vec::new();
        for (n, text) in domains_value.get_ref().iter().enumerate() {
            // Not quoted back: no value of the file is.
            let domain = Domain::parse(text).ok_or_else(|| {
                error(format!(
                    "{at}: domain {} is not a domain name (write support.example.com, or *.example.org for every name below it)",
                    n + 1
                ))
            })?;
            if let Some(other) = routes.iter().find(|r| r.domains.contains(&domain)) {
                return Err(error(format!("{name}: {domain} is already the domain of {}", other.name)));
            }
            domains.push(domain);
        }
        if domains.is_empty() {
            return Err(error(format!("{at}: name at least one domain")));
        }
        let url_value = table.url.as_ref().ok_or_else(|| missing(keys::URL))?;
        let url = parse_url(url_value.get_ref())
            .map_err(|e| error(format!("bad {}: {e}", file.at(keys::URL, url_value))))?;
        let (password, password_file) = file
            .password(Table::Route, &table.password, &table.password_file, warnings)?
            .ok_or_else(|| missing(keys::PASSWORD_FILE))?;
        if password.expose().is_empty() {
            return Err(error(format!("{name}: the password is empty")));
        }
        routes.push(Route { domains, target: Target { url, password }, password_file, name });
    }
    Ok(routes)
}

/// A header field name, as RFC 5322 allows it.
fn header_name(name: &str) -> Option<String> {
    let name = name.trim();
    let valid = !name.is_empty() && name.bytes().all(|b| b.is_ascii_graphic() && b != b':');
    valid.then(|| name.to_string())
}

/// `recipient_header` of a table of the file.
fn file_header_name(file: &File, value: &Spanned<String>) -> Result<String, ConfigError> {
    header_name(value.get_ref()).ok_or_else(|| {
        error(format!(
            "{}: expected a header name such as Delivered-To",
            file.at(keys::RECIPIENT_HEADER, value)
        ))
    })
}

/// Accept a base URL (the relay path is appended, also after a path of its
/// own, as when Chatwoot lives under /chatwoot) or the full relay URL, as the
/// rake task's `URL` is. Credentials in the URL would end up in logs: refused.
pub fn parse_url(text: &str) -> Result<Url, String> {
    // Not echoed: a URL with credentials in it would put them in mail logs.
    let mut url = Url::parse(text.trim()).map_err(|e| e.to_string())?;
    if !matches!(url.scheme(), "http" | "https") {
        return Err("expected an http:// or https:// URL".into());
    }
    if !url.username().is_empty() || url.password().is_some() {
        return Err("the URL must not contain a user or password: use password_file".into());
    }
    if url.host_str().is_none_or(str::is_empty) {
        return Err("the URL has no host".into());
    }
    let path = url.path().trim_end_matches('/').to_string();
    if !path.ends_with(RELAY_PATH) {
        url.set_path(&format!("{path}{RELAY_PATH}"));
    }
    Ok(url)
}

/// A byte count with an optional binary suffix: 1048576, 1024K, 64M, 1G, 64MiB.
pub fn parse_size(text: &str) -> Result<u64, String> {
    let text = text.trim();
    let digits = text.trim_end_matches(|c: char| c.is_ascii_alphabetic());
    let unit = text[digits.len()..].to_ascii_uppercase();
    let factor: u64 = match unit.trim_end_matches("IB").trim_end_matches('B') {
        "" => 1,
        "K" => 1 << 10,
        "M" => 1 << 20,
        "G" => 1 << 30,
        _ => return Err("unknown unit (use K, M or G)".into()),
    };
    let n: u64 = digits.trim().parse().map_err(|_| "not a size (use e.g. 64M)".to_string())?;
    match n.checked_mul(factor) {
        Some(0) | None => Err("out of range".into()),
        Some(size) => Ok(size),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::HashMap;
    use std::io::Write;

    fn load(flags: &Overrides, env: &[(&str, &str)]) -> Result<Config, ConfigError> {
        let env: HashMap<String, String> = env.iter().map(|(k, v)| (k.to_string(), v.to_string())).collect();
        Config::load_with(flags, |name| env.get(name).cloned())
    }

    fn file(text: &str) -> tempfile::NamedTempFile {
        let mut f = tempfile::NamedTempFile::new().unwrap();
        f.write_all(text.as_bytes()).unwrap();
        f
    }

    fn with_file(f: &tempfile::NamedTempFile) -> Overrides {
        Overrides { config: Some(f.path().into()), ..Default::default() }
    }

    #[test]
    fn flags_beat_our_environment_beats_the_file_beats_the_rake_environment() {
        let f = file("url = \"https://file.example\"\npassword = \"p-file\"\ntimeout = 7\n");
        let mut flags = with_file(&f);
        let c = load(&flags, &[]).unwrap();
        assert_eq!(
            c.url.as_ref().unwrap().value.as_str(),
            "https://file.example/rails/action_mailbox/relay/inbound_emails"
        );
        assert_eq!(c.timeout.value, Duration::from_secs(7));
        assert_eq!(c.max_size.source, Source::Default);

        // The rake task's names never override an explicit configuration.
        let rake = [("URL", "https://rake.example/x"), ("INGRESS_PASSWORD", "p-rake")];
        let c = load(&flags, &rake).unwrap();
        assert_eq!(c.url.as_ref().unwrap().source, Source::File(f.path().into()));
        assert_eq!(c.password.unwrap().value.expose(), "p-file");
        // ... but fill in what the file does not set.
        let empty = file("timeout = 7\n");
        let c = load(&with_file(&empty), &rake).unwrap();
        assert_eq!(c.url.unwrap().source, Source::Env("URL"));
        assert_eq!(c.password.unwrap().value.expose(), "p-rake");

        let ours = [("CHATWOOT_INGRESS_URL", "https://env.example"), ("CHATWOOT_INGRESS_PASSWORD", "p-env")];
        let c = load(&flags, &ours).unwrap();
        assert_eq!(c.url.unwrap().source, Source::Env("CHATWOOT_INGRESS_URL"));
        assert_eq!(c.password.unwrap().value.expose(), "p-env");

        flags.url = Some("http://127.0.0.1:3000".into());
        let c = load(&flags, &ours).unwrap();
        assert_eq!(c.url.unwrap().source, Source::Flag("--url"));
    }

    #[test]
    fn chatwoots_own_password_variable_ranks_below_the_file_and_the_rake_tasks() {
        let chatwoot = [("RAILS_INBOUND_EMAIL_PASSWORD", "p-chatwoot")];
        let empty = file("url = \"https://x\"\n");
        let c = load(&with_file(&empty), &chatwoot).unwrap();
        let password = c.password.unwrap();
        assert_eq!(
            (password.value.expose(), password.source),
            ("p-chatwoot", Source::Env(CHATWOOT_PASSWORD))
        );
        let both = [chatwoot[0], ("INGRESS_PASSWORD", "p-rake")];
        assert_eq!(load(&with_file(&empty), &both).unwrap().password.unwrap().value.expose(), "p-rake");
        let f = file("url = \"https://x\"\npassword = \"p-file\"\n");
        assert_eq!(load(&with_file(&f), &chatwoot).unwrap().password.unwrap().value.expose(), "p-file");
    }

    #[test]
    fn metrics_listen_only_on_loopback_unless_allowed_and_log_format() {
        let f = file("log_format = \"json\"\n[metrics]\nlisten = \"127.0.0.1:9898\"\n");
        let c = load(&with_file(&f), &[]).unwrap();
        assert_eq!(c.log_format.map(|f| f.value), Some(crate::log::Format::Json));
        assert_eq!(c.metrics.listen.unwrap().value.to_string(), "127.0.0.1:9898");
        assert!(!c.metrics.allow_remote);

        let f = file("[metrics]\nlisten = \"0.0.0.0:9898\"\n");
        let e = load(&with_file(&f), &[]).unwrap_err().to_string();
        assert!(e.contains("`listen` in") && e.contains("line 2") && e.contains("allow_remote"), "{e}");
        let f = file("[metrics]\nlisten = \"0.0.0.0:9898\"\nallow_remote = true\n");
        assert!(load(&with_file(&f), &[]).unwrap().metrics.allow_remote);

        let f = file("[metrics]\nlisten = \"nowhere\"\n");
        let e = load(&with_file(&f), &[]).unwrap_err().to_string();
        assert!(e.contains("must be an IP address and a port"), "{e}");
        let f = file("log_format = \"xml\"\n");
        let e = load(&with_file(&f), &[]).unwrap_err().to_string();
        assert!(e.contains("`log_format`") && e.contains("\"text\" or \"json\""), "{e}");
    }

    #[test]
    fn unknown_keys_and_bad_values_name_the_key_and_the_file() {
        let f = file("url = \"https://x\"\npasword = \"typo\"\n");
        let e = load(&with_file(&f), &[]).unwrap_err().to_string();
        assert!(
            e.contains(&f.path().display().to_string()) && e.contains("line 2") && e.contains("pasword"),
            "{e}"
        );
        assert!(!e.contains("typo"), "{e}");

        let f = file("max_size = \"lots\"\n");
        let e = load(&with_file(&f), &[]).unwrap_err().to_string();
        assert!(e.contains("max_size") && e.contains(&f.path().display().to_string()), "{e}");
    }

    #[test]
    fn no_value_is_ever_quoted_back_whatever_the_key_spelling() {
        let secret = "s3cr3t42";
        let lines = [
            format!("password = {secret}"),
            format!("password = 1{secret}"),
            format!("password = [\"{secret}\"]"),
            "password = 12345678".replace("12345678", "842424242"),
            format!("'password' = \"{secret}\"\npassword_file = \"x\""),
            format!("\"password\" = [{secret}]"),
            format!("timeout = \"{secret}\""),
            format!("max_size = \"{secret}\""),
            format!("url = \"{secret}\""),
            format!("url = \"https://user:{secret}@host\""),
            format!("ca_file = {secret}"),
            format!("password_file = \"{secret}\""),
            format!("password = \"\"\"{secret}"),
            format!("password = \"{secret}\" trailing"),
        ];
        for line in lines {
            let f = file(&format!("url = \"https://x\"\n{line}\n"));
            let e = match load(&with_file(&f), &[]) {
                Err(e) => e.to_string(),
                Ok(_) => continue,
            };
            assert!(!e.contains(secret) && !e.contains("842424242"), "{line}: {e}");
        }
    }

    /// Whatever a key of the table is given, in its table among the keys
    /// that table needs, no error quotes it.
    #[test]
    fn no_key_of_the_table_quotes_its_value_back() {
        let secret = "s3cr3t42";
        let values = [
            format!("\"{secret}\""),
            format!("\"https://u:{secret}@h/{secret}\""),
            format!("[\"{secret}\", 842424242]"),
            "842424242".to_string(),
            "-842424242".to_string(),
            format!("{{ x = \"{secret}\" }}"),
            format!("[[\"{secret}\"]]"),
        ];
        let needs = |table: Table| -> &[(&str, &str)] {
            match table {
                Table::Top => &[],
                Table::Route => {
                    &[("domains", "[\"a.test\"]"), ("url", "\"https://x\""), ("password", "\"p\"")]
                }
                Table::Mailbox => {
                    &[("name", "\"m\""), ("host", "\"h\""), ("user", "\"u\""), ("password", "\"p\"")]
                }
                Table::OAuth2 => &[("client_id", "\"c\""), ("token_url", "\"https://t/x\"")],
                Table::Cluster => &[],
                Table::Metrics => &[],
            }
        };
        for key in keys::keys() {
            for value in &values {
                let mut table: Vec<String> = needs(key.table)
                    .iter()
                    .filter(|(name, _)| *name != key.name)
                    .map(|(name, value)| format!("{name} = {value}"))
                    .collect();
                table.push(format!("{} = {value}", key.name));
                let text = match key.table {
                    Table::Top => table.join("\n"),
                    Table::Route | Table::Mailbox | Table::Metrics | Table::Cluster => {
                        format!("{}\n{}", key.table.header(), table.join("\n"))
                    }
                    Table::OAuth2 => format!(
                        "[[mailbox]]\nname = \"m\"\nhost = \"h\"\nuser = \"u\"\nauth = \"xoauth2\"\n[mailbox.oauth2]\n{}",
                        table.join("\n")
                    ),
                };
                let f = file(&format!("url = \"https://x\"\n{text}\n"));
                if let Err(e) = load(&with_file(&f), &[]) {
                    let e = e.to_string();
                    assert!(!e.contains(secret) && !e.contains("842424242"), "{text}: {e}");
                }
            }
        }
    }

    #[test]
    fn a_named_config_file_must_exist() {
        let flags = Overrides { config: Some("/nonexistent/c.toml".into()), ..Default::default() };
        assert!(load(&flags, &[])
            .unwrap_err()
            .to_string()
            .starts_with("cannot read /nonexistent/c.toml: no such file"));
    }

    #[test]
    fn password_file_first_line_byte_order_mark_and_world_readable_warning() {
        let pw = file("\u{feff}s3cr3t+/=\r\nignored\n");
        use std::os::unix::fs::PermissionsExt;
        fs::set_permissions(pw.path(), fs::Permissions::from_mode(0o644)).unwrap();
        let flags = Overrides { password_file: Some(pw.path().into()), ..Default::default() };
        let c = load(&flags, &[("CHATWOOT_INGRESS_PASSWORD", "env-loses")]).unwrap();
        assert_eq!(c.password.unwrap().value.expose(), "s3cr3t+/=");
        assert!(c.warnings[0].contains("readable by every user"));
        assert!(!format!("{:?}", Password::new("s3cr3t")).contains("s3cr3t"));
    }

    #[test]
    fn urls_and_sizes() {
        assert!(parse_url("https://u:p@host").is_err());
        assert!(parse_url("ftp://host").is_err());
        let relay = |url: &str| parse_url(url).unwrap().path().to_string();
        assert_eq!(relay("https://h"), RELAY_PATH);
        assert_eq!(relay("https://h/chatwoot"), format!("/chatwoot{RELAY_PATH}"));
        assert_eq!(relay("https://h/chatwoot/"), format!("/chatwoot{RELAY_PATH}"));
        assert_eq!(relay(&format!("https://h/chatwoot{RELAY_PATH}")), format!("/chatwoot{RELAY_PATH}"));
        assert_eq!(relay(&format!("https://h{RELAY_PATH}")), RELAY_PATH);
        assert_eq!(parse_size("64M"), Ok(64 << 20));
        assert_eq!(parse_size("1GiB"), Ok(1 << 30));
        assert_eq!(parse_size("1000"), Ok(1000));
        assert!(parse_size("0").is_err() && parse_size("5X").is_err());
    }
}
