//! The configuration file as serde reads it, and the one way a value it
//! cannot take is told: the key, the file, the line and what to write,
//! never the value (on a password line it is the password).

use std::num::{NonZeroU16, NonZeroUsize};
use std::ops::Range;
use std::path::{Path, PathBuf};

use serde::Deserialize;
use serde_path_to_error::Segment;
use toml::{Spanned, Value};

use super::keys::{self, Kind, Table};
use super::mailbox::{After, MailSource, Provider, Tls};
use super::{error, ConfigError, Password, Source};
use crate::secret::{self, FileError};

/// A secret as written: any value at all, so that no message of serde's
/// can quote it; whether it is a string is checked by [`File::secret`].
pub(super) type Raw = Spanned<Value>;

/// The top level.
#[derive(Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct FileConfig {
    pub url: Option<Spanned<String>>,
    pub password: Option<Raw>,
    pub password_file: Option<Spanned<PathBuf>>,
    pub timeout: Option<Spanned<u64>>,
    pub max_size: Option<Spanned<Size>>,
    pub ca_file: Option<Spanned<PathBuf>>,
    pub reject_dir: Option<Spanned<PathBuf>>,
    pub recipient_header: Option<Spanned<String>>,
    pub state_dir: Option<Spanned<PathBuf>>,
    #[serde(default)]
    pub route: Vec<Spanned<RouteFile>>,
    #[serde(default)]
    pub mailbox: Vec<Spanned<MailboxFile>>,
    pub log_format: Option<Spanned<crate::log::Format>>,
    pub metrics: Option<Spanned<MetricsFile>>,
    pub cluster: Option<Spanned<ClusterFile>>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct ClusterFile {
    pub redis_url: Option<Spanned<String>>,
    pub password_file: Option<Spanned<PathBuf>>,
    pub sentinels: Option<Spanned<Vec<String>>>,
    pub sentinel_master: Option<Spanned<String>>,
    pub lease: Option<Spanned<u64>>,
    pub node: Option<Spanned<String>>,
    pub key_prefix: Option<Spanned<String>>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct MetricsFile {
    pub listen: Option<Spanned<std::net::SocketAddr>>,
    pub allow_remote: Option<Spanned<bool>>,
}

/// `max_size`: bytes, or a string with a unit.
#[derive(Deserialize)]
#[serde(untagged)]
pub(super) enum Size {
    Bytes(u64),
    Text(String),
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct RouteFile {
    pub domains: Option<Spanned<Vec<String>>>,
    pub url: Option<Spanned<String>>,
    pub password: Option<Raw>,
    pub password_file: Option<Spanned<PathBuf>>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct MailboxFile {
    pub name: Option<Spanned<String>>,
    pub source: Option<Spanned<MailSource>>,
    pub host: Option<Spanned<String>>,
    pub port: Option<Spanned<NonZeroU16>>,
    pub tls: Option<Spanned<Tls>>,
    pub user: Option<Spanned<String>>,
    pub password: Option<Raw>,
    pub password_file: Option<Spanned<PathBuf>>,
    pub folders: Option<Spanned<Vec<String>>>,
    pub after: Option<Spanned<After>>,
    pub move_to: Option<Spanned<String>>,
    pub refused_folder: Option<Spanned<String>>,
    pub recipient_header: Option<Spanned<String>>,
    pub ca_file: Option<Spanned<PathBuf>>,
    pub poll_interval: Option<Spanned<u64>>,
    pub max_connections: Option<Spanned<NonZeroUsize>>,
    pub graph_url: Option<Spanned<String>>,
    pub auth: Option<Spanned<Login>>,
    pub oauth2: Option<Spanned<OAuth2File>>,
}

/// A mailbox's `auth`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub(super) enum Login {
    Password,
    XOAuth2,
    OAuthBearer,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct OAuth2File {
    pub provider: Option<Spanned<Provider>>,
    pub tenant: Option<Spanned<String>>,
    pub client_id: Option<Spanned<String>>,
    pub client_secret_file: Option<Spanned<PathBuf>>,
    pub refresh_token_file: Option<Spanned<PathBuf>>,
    pub token_command: Option<Spanned<Vec<String>>>,
    pub token_url: Option<Spanned<String>>,
    pub scope: Option<Spanned<String>>,
    pub device_authorization_url: Option<Spanned<String>>,
    pub authorization_url: Option<Spanned<String>>,
}

/// The field toml's `Spanned` reads its value from: a step of serde's path
/// that is no key of ours.
const SPANNED_VALUE: &str = "$__serde_spanned_private_value";

/// The configuration file being read: for places in messages and relative paths.
pub(super) struct File<'a> {
    pub path: &'a Path,
    pub text: &'a str,
}

impl File<'_> {
    /// Its keys, typed. A file that is not TOML gets toml's own message
    /// (its syntax messages name what was expected, never the text); a
    /// value of the wrong kind gets [`File::invalid`].
    pub fn parse(&self) -> Result<FileConfig, ConfigError> {
        if let Err(e) = self.text.parse::<toml::Table>() {
            let message = e.message().trim().split('\n').collect::<Vec<_>>().join(": ");
            return Err(error(format!("bad configuration in {}: {message}", self.place(e.span()))));
        }
        serde_path_to_error::deserialize(toml::Deserializer::new(self.text)).map_err(|e| {
            let mut names = e.path().iter().filter_map(|segment| match segment {
                Segment::Map { key } if key != SPANNED_VALUE => Some(key.as_str()),
                _ => None,
            });
            // The tables that lead to the key, then the key.
            let mut table = Table::Top;
            let mut name = names.next();
            while let Some(key) = name.and_then(|key| keys::find(table, key)) {
                match (key.kind, names.next()) {
                    (Kind::Tables(inner) | Kind::Table(inner), Some(next)) => {
                        (table, name) = (inner, Some(next))
                    }
                    _ => break,
                }
            }
            match name {
                Some(name) => self.invalid(table, name, e.inner().span()),
                None => error(format!("bad configuration in {}", self.place(e.inner().span()))),
            }
        })
    }

    /// The one message for a key whose value cannot be taken (or that is
    /// no key): the key, the file, the line, and what to write instead.
    pub fn invalid(&self, table: Table, name: &str, span: Option<Range<usize>>) -> ConfigError {
        let at = format!("`{name}` in {}", self.place(span));
        match keys::find(table, name) {
            Some(key) => match key.kind {
                Kind::Tables(_) | Kind::Table(_) => error(format!("{at} must be {}", key.kind.describe())),
                kind => error(format!("{at} must be {}: {}", kind.describe(), key.example())),
            },
            None => {
                let known: Vec<&str> =
                    keys::keys().iter().filter(|key| key.table == table).map(|key| key.name).collect();
                let fix = match known.iter().find(|key| strsim::damerau_levenshtein(key, name) <= 2) {
                    Some(key) => format!("did you mean `{key}`?"),
                    None => format!("its keys are {}", known.join(", ")),
                };
                error(format!("{at} is not a key of {}: {fix}", table.header()))
            }
        }
    }

    /// "/etc/chatwoot-ingress/config.toml line 3".
    pub fn place(&self, span: Option<Range<usize>>) -> String {
        match span {
            Some(span) => format!("{} line {}", self.path.display(), self.line(span)),
            None => self.path.display().to_string(),
        }
    }

    pub fn line(&self, span: Range<usize>) -> usize {
        self.text[..span.start.min(self.text.len())].matches('\n').count() + 1
    }

    /// "`key` in FILE line N", for messages about a value that was taken.
    pub fn at<T>(&self, key: &str, value: &Spanned<T>) -> String {
        format!("`{key}` in {}", self.place(Some(value.span())))
    }

    /// A path as written, relative to the file's directory.
    pub fn path(&self, value: &Spanned<PathBuf>) -> PathBuf {
        match self.path.parent() {
            Some(dir) if value.get_ref().is_relative() => dir.join(value.get_ref()),
            _ => value.get_ref().clone(),
        }
    }

    pub fn source(&self) -> Source {
        Source::File(self.path.to_path_buf())
    }

    /// A secret written in the file itself.
    pub fn secret(&self, table: Table, name: &str, value: &Raw) -> Result<Password, ConfigError> {
        match value.get_ref() {
            Value::String(text) => Ok(Password::new(text.as_str())),
            _ => Err(self.invalid(table, name, Some(value.span()))),
        }
    }

    /// `password` or `password_file` of one table, and the file it came
    /// from; a file in which a password is written should not be readable
    /// by every user.
    pub fn password(
        &self,
        table: Table,
        password: &Option<Raw>,
        password_file: &Option<Spanned<PathBuf>>,
        warnings: &mut Vec<String>,
    ) -> Result<Option<(Password, Option<PathBuf>)>, ConfigError> {
        match (password, password_file) {
            (Some(_), Some(value)) => Err(error(format!(
                "{}: set either `{}` or `{}`, not both",
                self.at(keys::PASSWORD_FILE, value),
                keys::PASSWORD,
                keys::PASSWORD_FILE
            ))),
            (None, Some(value)) => {
                let path = self.path(value);
                let read = read_password_file(&path, &self.at(keys::PASSWORD_FILE, value), warnings)?;
                Ok(Some((read, Some(path))))
            }
            (Some(value), None) => {
                let password = self.secret(table, keys::PASSWORD, value)?;
                warnings.extend(secret::world_readable(self.path, "password"));
                Ok(Some((password, None)))
            }
            (None, None) => Ok(None),
        }
    }
}

/// A password file (`password_file`, `--password-file`). A path that names
/// no file may be the password itself, written where the path belongs.
pub(super) fn read_password_file(
    path: &Path,
    given: &str,
    warnings: &mut Vec<String>,
) -> Result<Password, ConfigError> {
    secret::read_file(path, "password", given, warnings).map_err(|e| match e {
        FileError::Missing { .. } => error(format!(
            "{e}; if that value is the password itself, write {} = \"...\" instead",
            keys::PASSWORD
        )),
        e => error(e.to_string()),
    })
}
