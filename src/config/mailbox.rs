//! `[[mailbox]]` tables: the IMAP mailboxes `watch` fetches from.

use std::path::PathBuf;
use std::time::Duration;

use serde::Deserialize;
use toml::{Spanned, Value};

use super::{error, header_name, ConfigError, File, Secret};
use crate::sys::is_loopback;

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
    /// Read again at each login.
    pub password: Secret,
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
                "{place}: tls = \"none\" would send the password in clear to {host}; it is only allowed for a server on this machine (use implicit or starttls)"
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
        // Read now, so that a mistake shows at once, and again at each login.
        let (read, password_file) = file
            .password(&table.password, &table.password_file, warnings)?
            .ok_or_else(|| missing("password_file"))?;
        if read.expose().is_empty() {
            return Err(error(format!("{place}: the password is empty")));
        }
        let password = match (password_file, &table.password_file) {
            (Some(path), Some(value)) => Secret::File { path, place: file.at("password_file", value) },
            _ => Secret::Inline(read),
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
            password,
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
