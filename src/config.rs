//! One configuration from flags > environment > TOML file > defaults.
//!
//! Postfix runs its pipe commands with an empty environment, so the file is
//! how most mail systems configure us. Every value remembers where it came
//! from, for `check` and for error messages.

use std::fmt;
use std::fs;
use std::io;
use std::path::{Path, PathBuf};
use std::time::Duration;

use reqwest::Url;
use serde::Deserialize;

use crate::cli::ConfigArgs;

pub const SYSTEM_CONFIG: &str = "/etc/chatwoot-ingress/config.toml";
pub const RELAY_PATH: &str = "/rails/action_mailbox/relay/inbound_emails";
pub const DEFAULT_TIMEOUT: Duration = Duration::from_secs(30);
pub const DEFAULT_MAX_SIZE: u64 = 64 * 1024 * 1024;

/// Environment variables, in precedence order within each setting. `URL` and
/// `INGRESS_PASSWORD` are what `rails action_mailbox:ingress:*` reads.
pub const ENV_CONFIG: &str = "CHATWOOT_INGRESS_CONFIG";
pub const ENV_URL: [&str; 2] = ["CHATWOOT_INGRESS_URL", "URL"];
pub const ENV_PASSWORD: [&str; 2] = ["CHATWOOT_INGRESS_PASSWORD", "INGRESS_PASSWORD"];

/// A configuration problem. The message names the file and key when there is one.
#[derive(Debug, thiserror::Error)]
#[error("{0}")]
pub struct ConfigError(String);

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

/// The ingress password. It has no `Display`, and `Debug` hides it.
#[derive(Clone, PartialEq, Eq)]
pub struct Password(String);

impl Password {
    pub fn expose(&self) -> &str {
        &self.0
    }
}

impl fmt::Debug for Password {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("Password(****)")
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
    /// Not fatal, but an administrator should hear of them.
    pub warnings: Vec<String>,
}

/// Where and how to POST: what delivery needs beyond a valid message.
#[derive(Clone, Debug)]
pub struct Target {
    pub url: Url,
    pub password: Password,
    pub timeout: Duration,
    pub ca_file: Option<PathBuf>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct FileConfig {
    url: Option<String>,
    password: Option<String>,
    password_file: Option<PathBuf>,
    timeout: Option<u64>,
    max_size: Option<toml::Value>,
    ca_file: Option<PathBuf>,
    reject_dir: Option<PathBuf>,
}

impl Config {
    /// Load from the process environment.
    pub fn load(args: &ConfigArgs) -> Result<Config, ConfigError> {
        Config::load_with(args, |name| std::env::var(name).ok().filter(|v| !v.is_empty()))
    }

    pub fn load_with(args: &ConfigArgs, env: impl Fn(&str) -> Option<String>) -> Result<Config, ConfigError> {
        let (file, content) = match config_file(args, &env)? {
            Some((path, text)) => {
                let content: FileConfig = toml::from_str(&text).map_err(|e| toml_error(&path, &text, &e))?;
                (Some(path), content)
            }
            None => (None, FileConfig::default()),
        };
        let in_file = |key: &str| match &file {
            Some(path) => format!("{} (key `{key}`)", path.display()),
            None => key.to_string(),
        };
        let file_source = || Source::File(file.clone().unwrap_or_default());
        let mut warnings = Vec::new();

        let url = first_of(
            args.url.clone().map(|v| (v, Source::Flag("--url"))),
            env_value(&env, &ENV_URL),
            content.url.clone().map(|v| (v, file_source())),
        )
        .map(|(text, source)| {
            let where_ = match &source {
                Source::File(_) => in_file("url"),
                other => other.to_string(),
            };
            parse_url(&text)
                .map(|value| Sourced { value, source })
                .map_err(|e| error(format!("bad url in {where_}: {e}")))
        })
        .transpose()?;

        if content.password.is_some() && content.password_file.is_some() {
            return Err(error(format!(
                "{}: set either `password` or `password_file`, not both",
                in_file("password")
            )));
        }
        let mut password_file = None;
        let password = if let Some(path) = &args.password_file {
            password_file = Some(path.clone());
            Some(read_password_file(path, Source::Flag("--password-file"), &mut warnings)?)
        } else if let Some((value, source)) = env_value(&env, &ENV_PASSWORD) {
            Some(Sourced { value: Password(value), source })
        } else if let Some(path) = &content.password_file {
            let path = resolve_relative(file.as_deref(), path);
            password_file = Some(path.clone());
            Some(read_password_file(&path, file_source(), &mut warnings)?)
        } else if let Some(value) = content.password.clone() {
            if let Some(path) = &file {
                warn_if_world_readable(path, &mut warnings);
            }
            Some(Sourced { value: Password(value), source: file_source() })
        } else {
            None
        };
        if let Some(p) = &password {
            if p.value.0.is_empty() {
                return Err(error(format!("the password from {} is empty", p.source)));
            }
        }

        let timeout = match (args.timeout, content.timeout) {
            (Some(s), _) => Sourced { value: seconds(s, "--timeout")?, source: Source::Flag("--timeout") },
            (None, Some(s)) => Sourced { value: seconds(s, &in_file("timeout"))?, source: file_source() },
            (None, None) => Sourced { value: DEFAULT_TIMEOUT, source: Source::Default },
        };

        let max_size = match (&args.max_size, &content.max_size) {
            (Some(text), _) => Sourced {
                value: parse_size(text).map_err(|e| error(format!("bad --max-size: {e}")))?,
                source: Source::Flag("--max-size"),
            },
            (None, Some(value)) => {
                let parsed = match value {
                    toml::Value::Integer(n) if *n > 0 => Ok(*n as u64),
                    toml::Value::String(text) => parse_size(text),
                    _ => Err("expected a size such as 67108864 or \"64M\"".to_string()),
                };
                Sourced {
                    value: parsed
                        .map_err(|e| error(format!("bad max_size in {}: {e}", in_file("max_size"))))?,
                    source: file_source(),
                }
            }
            (None, None) => Sourced { value: DEFAULT_MAX_SIZE, source: Source::Default },
        };

        let path_setting = |flag: &Option<PathBuf>, name: &'static str, key: &Option<PathBuf>| {
            first_of(
                flag.clone().map(|v| (v, Source::Flag(name))),
                None,
                key.as_ref().map(|v| (resolve_relative(file.as_deref(), v), file_source())),
            )
            .map(|(value, source)| Sourced { value, source })
        };
        let ca_file = path_setting(&args.ca_file, "--ca-file", &content.ca_file);
        let reject_dir = path_setting(&args.reject_dir, "--reject-dir", &content.reject_dir);

        Ok(Config { file, url, password, password_file, timeout, max_size, ca_file, reject_dir, warnings })
    }

    /// What delivery needs; an error names every place the missing value could be set.
    pub fn target(&self) -> Result<Target, ConfigError> {
        let url = self.url.as_ref().ok_or_else(|| {
            error(format!(
                "no ingress URL: set `url` in {}, CHATWOOT_INGRESS_URL, or --url",
                self.file_hint()
            ))
        })?;
        let password = self.password.as_ref().ok_or_else(|| {
            error(format!(
                "no ingress password: set `password_file` in {}, CHATWOOT_INGRESS_PASSWORD, or --password-file",
                self.file_hint()
            ))
        })?;
        Ok(Target {
            url: url.value.clone(),
            password: password.value.clone(),
            timeout: self.timeout.value,
            ca_file: self.ca_file.as_ref().map(|c| c.value.clone()),
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
    args: &ConfigArgs,
    env: &impl Fn(&str) -> Option<String>,
) -> Result<Option<(PathBuf, String)>, ConfigError> {
    if let Some(path) = args.config.clone().or_else(|| env(ENV_CONFIG).map(PathBuf::from)) {
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

/// An io::Error without Rust's "(os error N)" suffix, lower-cased like the rest of our lines.
pub fn io_reason(e: &io::Error) -> String {
    let text = e.to_string();
    let text = text.split(" (os error").next().unwrap_or(&text);
    let mut chars = text.chars();
    match chars.next() {
        Some(first) => first.to_lowercase().chain(chars).collect(),
        None => text.to_string(),
    }
}

/// The user we run as, because "permission denied" is only useful with it.
pub fn whoami() -> String {
    #[cfg(unix)]
    {
        use std::os::unix::fs::MetadataExt;
        // /proc/self is owned by our effective uid; no libc call needed.
        if let Ok(meta) = fs::metadata("/proc/self") {
            let uid = meta.uid();
            let name = fs::read_to_string("/etc/passwd").ok().and_then(|passwd| {
                passwd.lines().find_map(|line| {
                    let mut fields = line.split(':');
                    let name = fields.next()?;
                    (fields.nth(1)? == uid.to_string()).then(|| name.to_string())
                })
            });
            return match name {
                Some(name) => format!("user {name}, uid {uid}"),
                None => format!("uid {uid}"),
            };
        }
    }
    "an unknown user".to_string()
}

fn read_password_file(
    path: &Path,
    source: Source,
    warnings: &mut Vec<String>,
) -> Result<Sourced<Password>, ConfigError> {
    let text = read_text(path).map_err(|e| error(format!("password file: {e}")))?;
    warn_if_world_readable(path, warnings);
    let first_line = text.lines().next().unwrap_or("").trim_end_matches('\r');
    if first_line.is_empty() {
        return Err(error(format!("password file {} is empty", path.display())));
    }
    Ok(Sourced { value: Password(first_line.to_string()), source })
}

fn warn_if_world_readable(path: &Path, warnings: &mut Vec<String>) {
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        if let Ok(meta) = fs::metadata(path) {
            if meta.permissions().mode() & 0o004 != 0 {
                warnings.push(format!(
                    "{} holds the ingress password and is readable by every user: chmod o-r it",
                    path.display()
                ));
            }
        }
    }
}

/// Relative paths in a config file are relative to that file.
fn resolve_relative(file: Option<&Path>, path: &Path) -> PathBuf {
    match file.and_then(Path::parent) {
        Some(dir) if path.is_relative() => dir.join(path),
        _ => path.to_path_buf(),
    }
}

fn first_of<T>(
    flag: Option<(T, Source)>,
    env: Option<(T, Source)>,
    file: Option<(T, Source)>,
) -> Option<(T, Source)> {
    flag.or(env).or(file)
}

fn env_value(env: &impl Fn(&str) -> Option<String>, names: &[&'static str]) -> Option<(String, Source)> {
    names.iter().find_map(|name| env(name).map(|v| (v, Source::Env(name))))
}

fn seconds(s: u64, what: &str) -> Result<Duration, ConfigError> {
    if s == 0 || s > 3600 {
        return Err(error(format!("bad timeout in {what}: {s} (expected 1 to 3600 seconds)")));
    }
    Ok(Duration::from_secs(s))
}

/// Accept a base URL (the relay path is appended) or the full relay URL, as the
/// rake task's `URL` is. Credentials in the URL would end up in logs: refused.
pub fn parse_url(text: &str) -> Result<Url, String> {
    // Not echoed: a URL with credentials in it would put them in mail logs.
    let mut url = Url::parse(text.trim()).map_err(|e| e.to_string())?;
    if !matches!(url.scheme(), "http" | "https") {
        return Err(format!("expected an http:// or https:// URL, not {}://", url.scheme()));
    }
    if !url.username().is_empty() || url.password().is_some() {
        return Err("the URL must not contain a user or password: use password_file".into());
    }
    if url.host_str().is_none_or(str::is_empty) {
        return Err("the URL has no host".into());
    }
    if url.path() == "/" || url.path().is_empty() {
        url.set_path(RELAY_PATH);
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
        _ => return Err(format!("{text:?}: unknown unit (use K, M or G)")),
    };
    let n: u64 = digits.trim().parse().map_err(|_| format!("{text:?} is not a size"))?;
    match n.checked_mul(factor) {
        Some(0) | None => Err(format!("{text:?} is out of range")),
        Some(size) => Ok(size),
    }
}

/// toml's errors are multi-line with a source excerpt; callers want one line
/// that names the file, the line and what is wrong.
/// toml's errors quote the offending value, which on a `password` line is
/// the password: that one is described, never shown.
fn toml_error(path: &Path, text: &str, e: &toml::de::Error) -> ConfigError {
    let line = e.span().map(|span| text[..span.start.min(text.len())].matches('\n').count() + 1);
    let at = line.map(|l| format!(" line {l}")).unwrap_or_default();
    let on_password_line = line
        .and_then(|l| text.lines().nth(l - 1))
        .is_some_and(|l| l.trim_start().trim_start_matches('"').starts_with("password"));
    let message = if on_password_line {
        "the password value is not valid TOML: write it as a quoted string, password = \"...\"".to_string()
    } else {
        e.message().trim().to_string()
    };
    error(format!("bad configuration in {}{at}: {message}", path.display()))
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::HashMap;
    use std::io::Write;

    fn load(args: &ConfigArgs, env: &[(&str, &str)]) -> Result<Config, ConfigError> {
        let env: HashMap<String, String> = env.iter().map(|(k, v)| (k.to_string(), v.to_string())).collect();
        Config::load_with(args, |name| env.get(name).cloned())
    }

    fn file(text: &str) -> tempfile::NamedTempFile {
        let mut f = tempfile::NamedTempFile::new().unwrap();
        f.write_all(text.as_bytes()).unwrap();
        f
    }

    #[test]
    fn flags_beat_environment_beat_file_beat_defaults() {
        let f = file("url = \"https://file.example\"\npassword = \"p-file\"\ntimeout = 7\n");
        let mut args = ConfigArgs { config: Some(f.path().into()), ..Default::default() };
        let c = load(&args, &[]).unwrap();
        assert_eq!(
            c.url.as_ref().unwrap().value.as_str(),
            "https://file.example/rails/action_mailbox/relay/inbound_emails"
        );
        assert_eq!(c.timeout.value, Duration::from_secs(7));
        assert_eq!(c.max_size.source, Source::Default);

        let env = [("URL", "https://rake.example/x"), ("CHATWOOT_INGRESS_PASSWORD", "p-env")];
        let c = load(&args, &env).unwrap();
        assert_eq!(c.url.as_ref().unwrap().value.as_str(), "https://rake.example/x");
        assert_eq!(c.url.unwrap().source, Source::Env("URL"));
        assert_eq!(c.password.unwrap().value.expose(), "p-env");

        args.url = Some("http://127.0.0.1:3000".into());
        let c = load(&args, &env).unwrap();
        assert_eq!(c.url.unwrap().source, Source::Flag("--url"));
    }

    #[test]
    fn unknown_keys_and_bad_values_name_the_key_and_the_file() {
        let f = file("url = \"https://x\"\npasword = \"typo\"\n");
        let args = ConfigArgs { config: Some(f.path().into()), ..Default::default() };
        let e = load(&args, &[]).unwrap_err().to_string();
        assert!(
            e.contains(&f.path().display().to_string()) && e.contains("line 2") && e.contains("pasword"),
            "{e}"
        );

        let f = file("max_size = \"lots\"\n");
        let args = ConfigArgs { config: Some(f.path().into()), ..Default::default() };
        let e = load(&args, &[]).unwrap_err().to_string();
        assert!(e.contains("max_size") && e.contains(&f.path().display().to_string()), "{e}");
    }

    #[test]
    fn a_malformed_password_is_never_quoted_back() {
        for line in ["password = 12345678", "password = s3cr3t-unquoted", "password = [\"s3cr3t\"]"] {
            let f = file(&format!("url = \"https://x\"\n{line}\n"));
            let args = ConfigArgs { config: Some(f.path().into()), ..Default::default() };
            let e = load(&args, &[]).unwrap_err().to_string();
            assert!(e.contains("line 2: the password value is not valid TOML"), "{e}");
            assert!(!e.contains("12345678") && !e.contains("s3cr3t"), "{e}");
        }
    }

    #[test]
    fn a_named_config_file_must_exist() {
        let args = ConfigArgs { config: Some("/nonexistent/c.toml".into()), ..Default::default() };
        assert!(load(&args, &[])
            .unwrap_err()
            .to_string()
            .starts_with("cannot read /nonexistent/c.toml: no such file"));
    }

    #[test]
    fn password_file_first_line_and_world_readable_warning() {
        let pw = file("s3cr3t+/=\r\nignored\n");
        #[cfg(unix)]
        {
            use std::os::unix::fs::PermissionsExt;
            fs::set_permissions(pw.path(), fs::Permissions::from_mode(0o644)).unwrap();
        }
        let args = ConfigArgs { password_file: Some(pw.path().into()), ..Default::default() };
        let c = load(&args, &[("CHATWOOT_INGRESS_PASSWORD", "env-loses")]).unwrap();
        assert_eq!(c.password.unwrap().value.expose(), "s3cr3t+/=");
        assert!(c.warnings[0].contains("readable by every user"));
        assert!(!format!("{:?}", Password("s3cr3t".into())).contains("s3cr3t"));
    }

    #[test]
    fn urls_and_sizes() {
        assert!(parse_url("https://u:p@host").is_err());
        assert!(parse_url("ftp://host").is_err());
        assert_eq!(parse_url("https://h/sub/rails/x").unwrap().path(), "/sub/rails/x");
        assert_eq!(parse_size("64M"), Ok(64 << 20));
        assert_eq!(parse_size("1GiB"), Ok(1 << 30));
        assert_eq!(parse_size("1000"), Ok(1000));
        assert!(parse_size("0").is_err() && parse_size("5X").is_err());
    }
}
