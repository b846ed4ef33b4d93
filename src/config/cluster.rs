//! `[cluster]`: several `watch` replicas share the mailboxes through Redis
//! (Chatwoot's own). Each value may come from the file, from our own
//! variable (`CHATWOOT_INGRESS_REDIS_URL`, above the file) or from
//! Chatwoot's variables (`REDIS_URL`, `REDIS_PASSWORD`, `REDIS_SENTINELS`,
//! `REDIS_SENTINEL_MASTER_NAME`, below it), as `url` and `password` are.
//! A password is never kept inside the URL: it is taken out at once, so
//! that no message that shows the URL can show it.

use std::path::PathBuf;
use std::time::Duration;

use reqwest::Url;
use toml::Spanned;

use super::file::{ClusterFile, File};
use super::keys::{self, Table};
use super::{error, ConfigError, Password, Secret, Source, Sourced};

pub const ENV_REDIS_URL: &str = "CHATWOOT_INGRESS_REDIS_URL";
pub const CHATWOOT_REDIS_URL: &str = "REDIS_URL";
pub const CHATWOOT_REDIS_PASSWORD: &str = "REDIS_PASSWORD";
pub const CHATWOOT_REDIS_SENTINELS: &str = "REDIS_SENTINELS";
pub const CHATWOOT_SENTINEL_MASTER: &str = "REDIS_SENTINEL_MASTER_NAME";
/// Chatwoot's defaults (lib/redis/config.rb).
pub const DEFAULT_REDIS_URL: &str = "redis://127.0.0.1:6379";
pub const DEFAULT_SENTINEL_MASTER: &str = "mymaster";
pub const DEFAULT_SENTINEL_PORT: u16 = 26379;
pub const DEFAULT_LEASE: Duration = Duration::from_secs(30);
pub const DEFAULT_KEY_PREFIX: &str = "chatwoot-ingress";

/// Cluster mode, resolved.
#[derive(Clone, Debug)]
pub struct Cluster {
    /// redis:// or rediss://, never with a password in it.
    pub redis_url: Sourced<Url>,
    /// The password to log in to Redis (and to the sentinels) with.
    pub password: Option<Sourced<Secret>>,
    /// Sentinels to ask where the master is; empty: `redis_url` is the master.
    pub sentinels: Vec<(String, u16)>,
    pub sentinel_master: String,
    pub lease: Duration,
    /// This replica's name in leases and logs.
    pub node: String,
    pub key_prefix: String,
}

impl Cluster {
    /// Where Redis is, for messages: the URL and the sentinels, no password.
    pub fn describe(&self) -> String {
        if self.sentinels.is_empty() {
            return self.redis_url.value.to_string();
        }
        let sentinels: Vec<String> = self.sentinels.iter().map(|(h, p)| join_host(h, *p)).collect();
        format!(
            "master {:?} of the sentinels {} ({}, db {})",
            self.sentinel_master,
            sentinels.join(", "),
            self.redis_url.value.scheme(),
            db(&self.redis_url.value)
        )
    }
}

fn join_host(host: &str, port: u16) -> String {
    if host.contains(':') {
        format!("[{host}]:{port}")
    } else {
        format!("{host}:{port}")
    }
}

/// The database number a redis URL names (its path), 0 when none.
pub fn db(url: &Url) -> i64 {
    url.path().trim_start_matches('/').parse().unwrap_or(0)
}

/// `[cluster]` if the file has it (absent: a single process, as before).
pub(super) fn cluster(
    file: Option<&File>,
    table: Option<&Spanned<ClusterFile>>,
    env: &impl Fn(&str) -> Option<String>,
    warnings: &mut Vec<String>,
) -> Result<Option<Cluster>, ConfigError> {
    let (Some(file), Some(table)) = (file, table) else { return Ok(None) };
    let table = table.get_ref();
    let at = |key: &str, span| format!("`{key}` in {}", file.place(Some(span)));

    // The URL: ours, the file's, Chatwoot's, Chatwoot's default. A password
    // in it is taken out; one in our own places ranks above REDIS_PASSWORD,
    // one in REDIS_URL below it, as Chatwoot's own Redis client has it.
    let (text, source, given, ours) = if let Some(text) = env(ENV_REDIS_URL) {
        (text, Source::Env(ENV_REDIS_URL), ENV_REDIS_URL.to_string(), true)
    } else if let Some(value) = &table.redis_url {
        (value.get_ref().clone(), file.source(), at(keys::REDIS_URL, value.span()), true)
    } else if let Some(text) = env(CHATWOOT_REDIS_URL) {
        (text, Source::Env(CHATWOOT_REDIS_URL), CHATWOOT_REDIS_URL.to_string(), false)
    } else {
        (DEFAULT_REDIS_URL.to_string(), Source::Default, "the default".to_string(), false)
    };
    let (url, in_url) =
        parse_redis_url(&text).map_err(|e| error(format!("bad redis_url in {given}: {e}")))?;
    let in_url = in_url.map(|password| Sourced { value: Secret::Inline(password), source: source.clone() });
    let redis_url = Sourced { value: url, source };

    let password = match &table.password_file {
        Some(value) => {
            let path: PathBuf = file.path(value);
            let given = at(keys::PASSWORD_FILE, value.span());
            // Read now, so that a missing file is a configuration error;
            // read again at each connection, so that fixing it needs no restart.
            super::file::read_password_file(&path, &given, warnings)?;
            Some(Sourced { value: Secret::File { path, place: given }, source: file.source() })
        }
        None => {
            let chatwoot = env(CHATWOOT_REDIS_PASSWORD).map(|password| Sourced {
                value: Secret::Inline(Password::new(password)),
                source: Source::Env(CHATWOOT_REDIS_PASSWORD),
            });
            if ours {
                in_url.or(chatwoot)
            } else {
                chatwoot.or(in_url)
            }
        }
    };

    let sentinels = match (&table.sentinels, env(CHATWOOT_REDIS_SENTINELS)) {
        (Some(value), _) => {
            let given = at(keys::SENTINELS, value.span());
            let mut sentinels = Vec::new();
            for (n, text) in value.get_ref().iter().enumerate() {
                sentinels.push(
                    parse_sentinel(text)
                        .ok_or_else(|| error(format!("{given}: sentinel {} {SENTINEL_FORM}", n + 1)))?,
                );
            }
            if sentinels.is_empty() {
                return Err(error(format!("{given}: name at least one sentinel, or leave the key out")));
            }
            sentinels
        }
        (None, Some(text)) => text
            .split(',')
            .filter(|s| !s.trim().is_empty())
            .enumerate()
            .map(|(n, s)| {
                parse_sentinel(s).ok_or_else(|| {
                    error(format!(
                        "bad {CHATWOOT_REDIS_SENTINELS} in the environment: sentinel {} {SENTINEL_FORM}",
                        n + 1
                    ))
                })
            })
            .collect::<Result<_, _>>()?,
        (None, None) => Vec::new(),
    };
    let sentinel_master = match (&table.sentinel_master, env(CHATWOOT_SENTINEL_MASTER)) {
        (Some(value), _) => {
            let name = value.get_ref().trim();
            if name.is_empty() || name.contains(char::is_whitespace) {
                return Err(error(format!(
                    "{}: expected a name such as mymaster",
                    at(keys::SENTINEL_MASTER, value.span())
                )));
            }
            name.to_string()
        }
        (None, Some(name)) => name.trim().to_string(),
        (None, None) => DEFAULT_SENTINEL_MASTER.to_string(),
    };

    let lease = match &table.lease {
        Some(value) => keys::integer(Table::Cluster, keys::LEASE, *value.get_ref())
            .map_err(|_| file.invalid(Table::Cluster, keys::LEASE, Some(value.span())))?,
        None => DEFAULT_LEASE.as_secs(),
    };
    let node = match &table.node {
        Some(value) => {
            let name = value.get_ref();
            if !valid_node(name) {
                return Err(error(format!(
                    "{}: a node name is 1 to 100 letters, digits, '.', '_', '-', ':' or '@'",
                    at(keys::NODE, value.span())
                )));
            }
            name.clone()
        }
        None => default_node(),
    };
    let key_prefix = match &table.key_prefix {
        Some(value) => {
            let prefix = value.get_ref();
            if prefix.is_empty() || prefix.len() > 100 || !prefix.bytes().all(|b| b.is_ascii_graphic()) {
                return Err(error(format!(
                    "{}: expected a prefix of printable characters without spaces, such as chatwoot-ingress",
                    at(keys::KEY_PREFIX, value.span())
                )));
            }
            prefix.clone()
        }
        None => DEFAULT_KEY_PREFIX.to_string(),
    };
    Ok(Some(Cluster {
        redis_url,
        password,
        sentinels,
        sentinel_master,
        lease: Duration::from_secs(lease),
        node,
        key_prefix,
    }))
}

const SENTINEL_FORM: &str = "is not host:port (such as sentinel-1:26379)";

/// `host`, `host:port` or `[v6]:port`; the port defaults to 26379.
fn parse_sentinel(text: &str) -> Option<(String, u16)> {
    let text = text.trim();
    let (host, port) = if let Some(rest) = text.strip_prefix('[') {
        let (host, after) = rest.split_once(']')?;
        match after {
            "" => (host, None),
            _ => (host, Some(after.strip_prefix(':')?)),
        }
    } else {
        match text.rsplit_once(':') {
            Some((host, port)) if !host.contains(':') => (host, Some(port)),
            Some(_) => return None,
            None => (text, None),
        }
    };
    let valid = !host.is_empty() && host.bytes().all(|b| b.is_ascii_alphanumeric() || b"-._:".contains(&b));
    let port = match port {
        Some(port) => port.parse::<u16>().ok().filter(|p| *p > 0)?,
        None => DEFAULT_SENTINEL_PORT,
    };
    valid.then(|| (host.to_string(), port))
}

/// redis:// or rediss://, a host, a port, a database number: the URL
/// without its password, and the password. Errors never quote it.
pub fn parse_redis_url(text: &str) -> Result<(Url, Option<Password>), String> {
    let mut url = Url::parse(text.trim()).map_err(|e| format!("not a URL ({e})"))?;
    if !matches!(url.scheme(), "redis" | "rediss") {
        return Err("it must begin with redis:// (or rediss:// for TLS)".into());
    }
    if url.host_str().is_none_or(str::is_empty) {
        return Err("it names no host".into());
    }
    let path = url.path().trim_start_matches('/');
    if !path.is_empty() && path.parse::<u16>().is_err() {
        return Err("its path must be a database number, such as /0".into());
    }
    if url.query().is_some() || url.fragment().is_some() {
        return Err("it may not have a query or a fragment".into());
    }
    let password = match url.password() {
        Some(encoded) => {
            let decoded = percent_encoding::percent_decode_str(encoded).decode_utf8_lossy().into_owned();
            let _ = url.set_password(None);
            Some(Password::new(decoded)).filter(|p| !p.expose().is_empty())
        }
        None => None,
    };
    Ok((url, password))
}

/// Letters, digits and `._-:@`, so that a name reads the same in a key, a
/// log line and `watch --status`.
fn valid_node(name: &str) -> bool {
    (1..=100).contains(&name.len())
        && name.bytes().all(|b| b.is_ascii_alphanumeric() || b"._-:@".contains(&b))
}

/// hostname:pid: unique on the host and across a Kubernetes deployment,
/// where the host name is the pod's.
fn default_node() -> String {
    let host = std::fs::read_to_string("/proc/sys/kernel/hostname")
        .ok()
        .map(|h| h.trim().chars().filter(|c| c.is_ascii_alphanumeric() || "._-".contains(*c)).collect())
        .filter(|h: &String| !h.is_empty())
        .unwrap_or_else(|| "host".to_string());
    format!("{host}:{}", std::process::id())
}

#[cfg(test)]
mod tests {
    use super::super::{Config, Overrides};
    use super::*;

    fn load(text: &str, env: &[(&str, &str)]) -> Result<Config, ConfigError> {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("c.toml");
        std::fs::write(&path, text).unwrap();
        let flags = Overrides { config: Some(path), ..Default::default() };
        Config::load_with(&flags, |name| env.iter().find(|(k, _)| *k == name).map(|(_, v)| v.to_string()))
    }

    fn password(c: &Config) -> Option<String> {
        c.cluster.as_ref().unwrap().password.as_ref().map(|p| p.value.read().unwrap().expose().to_string())
    }

    #[test]
    fn ours_over_the_file_over_chatwoots_over_the_default() {
        assert!(load("", &[(ENV_REDIS_URL, "redis://x")]).unwrap().cluster.is_none(), "no table, no cluster");
        let c = load("[cluster]\n", &[]).unwrap();
        let cluster = c.cluster.as_ref().unwrap();
        assert_eq!(cluster.redis_url.value.as_str(), "redis://127.0.0.1:6379");
        assert_eq!((cluster.lease, cluster.key_prefix.as_str()), (DEFAULT_LEASE, "chatwoot-ingress"));
        assert!(cluster.node.ends_with(&format!(":{}", std::process::id())));
        assert!(
            cluster.sentinels.is_empty() && cluster.sentinel_master == "mymaster" && password(&c).is_none()
        );

        let chatwoot = [
            (CHATWOOT_REDIS_URL, "redis://:in-url@chatwoot-redis:6379"),
            (CHATWOOT_REDIS_PASSWORD, "chatwoot-pw"),
            (CHATWOOT_REDIS_SENTINELS, "s1:26379, s2"),
            (CHATWOOT_SENTINEL_MASTER, "main"),
        ];
        let c = load("[cluster]\n", &chatwoot).unwrap();
        let cluster = c.cluster.as_ref().unwrap();
        assert_eq!(cluster.redis_url.value.as_str(), "redis://chatwoot-redis:6379");
        assert_eq!(password(&c).unwrap(), "chatwoot-pw", "REDIS_PASSWORD over REDIS_URL's, as in Chatwoot");
        assert_eq!(cluster.sentinels, [("s1".to_string(), 26379), ("s2".to_string(), 26379)]);
        assert_eq!(cluster.sentinel_master, "main");
        assert!(!cluster.describe().contains("in-url"), "{}", cluster.describe());

        let file = "[cluster]\nredis_url = \"redis://:file-pw@file-redis/1\"\nsentinels = [\"f:1\"]\nsentinel_master = \"m\"\nlease = 5\nnode = \"a\"\nkey_prefix = \"p\"\n";
        let c = load(file, &chatwoot).unwrap();
        let cluster = c.cluster.as_ref().unwrap();
        assert_eq!(cluster.redis_url.value.as_str(), "redis://file-redis/1");
        assert_eq!(password(&c).unwrap(), "file-pw", "ours over Chatwoot's");
        assert_eq!((cluster.sentinels.len(), cluster.sentinel_master.as_str()), (1, "m"));
        assert_eq!(
            (cluster.lease.as_secs(), cluster.node.as_str(), cluster.key_prefix.as_str()),
            (5, "a", "p")
        );

        let ours =
            [(ENV_REDIS_URL, "rediss://env-redis:6380")].into_iter().chain(chatwoot).collect::<Vec<_>>();
        let c = load(file, &ours).unwrap();
        assert_eq!(c.cluster.as_ref().unwrap().redis_url.value.as_str(), "rediss://env-redis:6380");
        assert_eq!(password(&c).unwrap(), "chatwoot-pw", "no password in ours: REDIS_PASSWORD");

        let dir = tempfile::tempdir().unwrap();
        let pw = dir.path().join("redis-password");
        std::fs::write(&pw, "from-file\n").unwrap();
        let c = load(&format!("{file}password_file = \"{}\"\n", pw.display()), &ours).unwrap();
        assert_eq!(password(&c).unwrap(), "from-file", "password_file over everything");
    }

    #[test]
    fn bad_values_name_the_place_and_never_the_secret() {
        let cases = [
            ("[cluster]\nredis_url = \"http://:s3cr3t@h\"\n", "`redis_url` in"),
            ("[cluster]\nredis_url = \"redis://:s3cr3t@h/x\"\n", "database number"),
            ("[cluster]\nlease = 1\n", "`lease` in"),
            ("[cluster]\nnode = \"s3cr3t host\"\n", "`node` in"),
            ("[cluster]\nsentinels = [\"s3cr3t:x\"]\n", "sentinel 1"),
            ("[cluster]\npassword_file = \"/nonexistent/s3cr3t\"\n", "does not exist"),
            ("[cluster]\nredis_ulr = \"s3cr3t\"\n", "did you mean `redis_url`?"),
        ];
        for (text, said) in cases {
            let e = load(text, &[]).err().unwrap_or_else(|| panic!("{text}")).to_string();
            assert!(e.contains(said), "{text}: {e}");
            assert!(!e.contains("s3cr3t") || said == "does not exist", "{text}: {e}");
        }
        let e = load("[cluster]\n", &[(ENV_REDIS_URL, "redis://:s3cr3t@h?x")]).err().unwrap().to_string();
        assert!(e.contains(ENV_REDIS_URL) && !e.contains("s3cr3t"), "{e}");
    }

    #[test]
    fn a_password_in_the_url_is_taken_out() {
        let (url, password) = parse_redis_url("redis://:s%40cret@redis:6379/2").unwrap();
        assert_eq!(url.as_str(), "redis://redis:6379/2");
        assert_eq!(password.unwrap().expose(), "s@cret");
        assert_eq!(db(&url), 2);
        let (url, password) = parse_redis_url("rediss://user:pw@redis").unwrap();
        assert_eq!((url.as_str(), password.unwrap().expose()), ("rediss://user@redis", "pw"));
        for bad in
            ["http://redis", "redis://", "redis://:secret@h/x", "redis://h?secret=1", "unix:/tmp/r.sock"]
        {
            let e = parse_redis_url(bad).unwrap_err();
            assert!(!e.contains("secret"), "{bad}: {e}");
        }
    }

    #[test]
    fn sentinels_as_chatwoot_writes_them() {
        assert_eq!(parse_sentinel(" s1:26380"), Some(("s1".into(), 26380)));
        assert_eq!(parse_sentinel("s2"), Some(("s2".into(), 26379)));
        assert_eq!(parse_sentinel("[::1]:5"), Some(("::1".into(), 5)));
        assert_eq!(parse_sentinel("s:0"), None);
        assert_eq!(parse_sentinel("a b:1"), None);
        assert!(valid_node("host-a:1234") && !valid_node("a b") && !valid_node(""));
        assert!(valid_node(&default_node()));
    }
}
