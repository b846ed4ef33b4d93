//! The configuration as the caller will see it: each value and where it
//! came from, what the caller's environment and limits do to it, and
//! whether the caller's user can read the files it names.

use std::fs;
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};
use std::time::Duration;

use super::network;
use super::report::{from, Report, Status, Steps};
use crate::config::{Config, Overrides, Source, SYSTEM_CONFIG};
use crate::http::{without_credentials, Proxies};
use crate::outcome::{Mta, Outcome};
use crate::sys::{io_reason, Account};

/// Postfix's default command_time_limit: pipe(8) kills a command still
/// running after it and bounces the message.
const POSTFIX_TIME_LIMIT: Duration = Duration::from_secs(1000);

/// Each value and where it came from, and what is wrong with them.
pub fn configuration(overrides: &Overrides, r: &mut Report) -> Option<Config> {
    let config = match Config::load(overrides).map_err(Outcome::from) {
        Ok(config) => config,
        Err(outcome) => {
            r.fail(
                "configuration",
                outcome.reason(),
                "correct what is named; --help lists every setting's sources",
            );
            return None;
        }
    };
    match &config.file {
        Some(path) => r.ok("configuration", format!("read {}", path.display())),
        None => r.ok(
            "configuration",
            format!("no file ($CHATWOOT_INGRESS_CONFIG, the user config dir or {SYSTEM_CONFIG}); flags and environment only"),
        ),
    }
    match &config.url {
        Some(url) => {
            r.ok("url", format!("{} ({})", url.value, from(&url.source)));
            let host = url.value.host_str().unwrap_or_default();
            if url.value.scheme() == "http" && !crate::sys::is_loopback(host) {
                r.warn(
                    "url",
                    format!("plain http to {host}: the password and every email travel in clear"),
                    "use https:// unless this network is private",
                );
            }
            network::route(&url.value, &Proxies::from_env(), r);
        }
        None if !config.routes.is_empty() => r.warn(
            "url",
            "no top-level url: only mail for the domains of a [[route]] can be delivered; the rest waits (4.3.5)",
            "set `url` for every other domain, unless no other mail reaches this host",
        ),
        None => {
            r.fail("url", "not set", "set `url` in the configuration file, CHATWOOT_INGRESS_URL, or --url")
        }
    }
    for route in &config.routes {
        let domains: Vec<String> = route.domains.iter().map(ToString::to_string).collect();
        r.ok("route", format!("{}: {} for {}", route.name, route.target.url, domains.join(", ")));
    }
    match &config.password {
        Some(password) => {
            let text = password.value.expose();
            let file =
                config.password_file.as_ref().map(|f| format!(", file {}", f.display())).unwrap_or_default();
            r.ok(
                "password",
                format!("**** ({} characters, {}{file})", text.chars().count(), from(&password.source)),
            );
            if text.trim() != text {
                r.warn(
                    "password",
                    "begins or ends with white space, which is sent as part of it",
                    "remove it, unless RAILS_INBOUND_EMAIL_PASSWORD has it too",
                );
            }
        }
        None if config.url.is_none() && !config.routes.is_empty() => {}
        None => r.fail(
            "password",
            "not set",
            "set `password_file` in the configuration file, CHATWOOT_INGRESS_PASSWORD, or --password-file",
        ),
    }
    for warning in &config.warnings {
        r.add("password", Status::Warning, warning.as_str(), None);
    }
    r.ok("timeout", format!("{}s ({})", config.timeout.value.as_secs(), from(&config.timeout.source)));
    r.ok("max_size", format!("{} bytes ({})", config.max_size.value, from(&config.max_size.source)));
    if let Some(ca_file) = &config.ca_file {
        // Read now whatever the URL's scheme: a bad one breaks https later.
        match crate::tls::read_ca_file(&ca_file.value) {
            Ok(certificates) => r.ok(
                "ca_file",
                format!(
                    "{} ({}): {} PEM certificate(s)",
                    ca_file.value.display(),
                    from(&ca_file.source),
                    certificates.len()
                ),
            ),
            Err(e) => r.fail(
                "ca_file",
                format!("{e} ({})", from(&ca_file.source)),
                "point ca_file at a readable file of PEM certificates (-----BEGIN CERTIFICATE-----), or remove it",
            ),
        }
    }
    if let Some(reject_dir) = &config.reject_dir {
        r.ok("reject_dir", format!("{} ({})", reject_dir.value.display(), from(&reject_dir.source)));
    }
    Some(config)
}

/// The user each caller runs us as in our packaging.
pub fn default_user(mta: Mta) -> Option<&'static str> {
    match mta {
        Mta::Sysexits => None,
        _ => Some("chatwoot-ingress"),
    }
}

/// Values from the environment do not reach us when these callers run us:
/// they give their commands a near-empty environment.
pub fn environment(config: &Config, mta: Mta, r: &mut Report) {
    if !matches!(mta, Mta::Postfix | Mta::Exim | Mta::Opensmtpd) {
        return;
    }
    let sources = [
        ("url", config.url.as_ref().map(|u| &u.source)),
        ("password", config.password.as_ref().map(|p| &p.source)),
    ];
    for (name, source) in sources {
        if let Some(Source::Env(var)) = source {
            r.warn(
                "environment",
                format!("{name} comes from {var}, which {mta:?} does not pass to the commands it runs"),
                format!("set {name} in the configuration file given with --config"),
            );
        }
    }
    let proxies = Proxies::from_env();
    if let Some(proxy) = config.url.as_ref().and_then(|url| proxies.for_url(&url.value)) {
        let pass = match mta {
            Mta::Postfix => "list it in import_environment and export_environment in main.cf",
            Mta::Exim => "keep it with keep_environment, or set it in the transport's environment option",
            _ => "have the mail system pass it",
        };
        r.warn(
            "environment",
            format!(
                "the proxy {} comes from HTTPS_PROXY or ALL_PROXY, which {mta:?} does not pass to the commands it runs: its deliveries connect directly",
                without_credentials(proxy)
            ),
            format!("make sure this host reaches url without the proxy, or {pass}"),
        );
    }
}

/// The caller's own limits on a command it runs. Exim's pipe transport
/// as we ship it stops us after 10 minutes with `timeout_defer`, which
/// defers the message: nothing is lost, so it needs no warning.
pub fn limits(config: &Config, mta: Mta, r: &mut Report) {
    let timeout = config.timeout.value;
    if mta == Mta::Postfix && timeout >= POSTFIX_TIME_LIMIT {
        r.warn(
            "timeout",
            format!(
                "{}s reaches Postfix's command_time_limit ({}s by default): Postfix kills a delivery still running then, and bounces the message",
                timeout.as_secs(),
                POSTFIX_TIME_LIMIT.as_secs()
            ),
            format!(
                "lower timeout below {}s, or raise chatwoot_time_limit (the transport's own) or command_time_limit in Postfix's main.cf above it",
                POSTFIX_TIME_LIMIT.as_secs()
            ),
        );
    }
}

/// File access as the kernel decides it for an account.
trait Access {
    fn denied(&self, path: &Path, want: u32) -> Option<String>;
    fn may(&self, path: &Path, want: u32) -> bool;
}

impl Access for Account {
    /// Why this user cannot open `path` for `want` (4 read, 1 execute), if
    /// it cannot: every directory above it must be searchable too. Mode bits
    /// only; ACLs are not considered.
    fn denied(&self, path: &Path, want: u32) -> Option<String> {
        let path = fs::canonicalize(path).unwrap_or_else(|_| path.to_path_buf());
        for dir in path.ancestors().skip(1) {
            if !self.may(dir, 1) {
                return Some(format!("cannot enter directory {}", describe(dir)));
            }
        }
        (!self.may(&path, want)).then(|| describe(&path))
    }

    fn may(&self, path: &Path, want: u32) -> bool {
        let Ok(meta) = fs::metadata(path) else { return false };
        let mode = meta.mode();
        if self.uid == 0 {
            // root may do anything but execute a file that no one may execute.
            return want != 1 || meta.is_dir() || mode & 0o111 != 0;
        }
        let shift = if meta.uid() == self.uid {
            6
        } else if self.gids.contains(&meta.gid()) {
            3
        } else {
            0
        };
        (mode >> shift) & want == want
    }
}

fn describe(path: &Path) -> String {
    match fs::metadata(path) {
        Ok(meta) => {
            format!(
                "{} (mode {:o}, owner uid {}, group gid {})",
                path.display(),
                meta.mode() & 0o7777,
                meta.uid(),
                meta.gid()
            )
        }
        Err(e) => format!("{}: {}", path.display(), io_reason(&e)),
    }
}

/// The files the caller's user must be able to use, as that user.
pub fn access(config: &Config, user: &str, r: &mut Report) {
    let Some(account) = Account::by_name(user) else {
        return r.fail(
            "access",
            format!("no user {user} on this system"),
            "create it (see the packaging README for your mail system), or name the right one with --user",
        );
    };
    let exe = std::env::current_exe().ok();
    let routes = config
        .routes
        .iter()
        .map(|route| (format!("read the password file of {}", route.name), route.password_file.as_ref(), 4));
    let files: Vec<(String, Option<&PathBuf>, u32)> = [
        ("read the configuration file".to_string(), config.file.as_ref(), 4),
        ("read the password file".to_string(), config.password_file.as_ref(), 4),
    ]
    .into_iter()
    .chain(routes)
    .chain([
        ("read ca_file".to_string(), config.ca_file.as_ref().map(|c| &c.value), 4),
        ("run this program".to_string(), exe.as_ref(), 1),
    ])
    .collect();
    for (what, path, want) in files {
        let Some(path) = path else { continue };
        match account.denied(path, want) {
            None => r.ok("access", format!("{} can {what} {}", account.name, path.display())),
            Some(why) => r.fail(
                "access",
                format!("{} cannot {what}: {why}", account.name),
                format!(
                    "give {} access, e.g. through a group it is in (chgrp, then chmod g+r or g+x)",
                    account.name
                ),
            ),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn file_access_follows_owner_group_other_bits_and_directories() {
        let account = |uid, gids| Account { name: "t".into(), uid, gids };
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("f");
        fs::write(&file, "x").unwrap();
        let set = |path: &Path, mode| {
            use std::os::unix::fs::PermissionsExt;
            fs::set_permissions(path, fs::Permissions::from_mode(mode)).unwrap();
        };
        let (uid, gid) = (fs::metadata(&file).unwrap().uid(), fs::metadata(&file).unwrap().gid());
        set(&file, 0o640);
        assert!(account(uid, vec![]).denied(&file, 4).is_none());
        assert!(account(uid + 1, vec![gid]).denied(&file, 4).is_none());
        assert!(account(uid + 1, vec![gid + 1]).denied(&file, 4).unwrap().contains("mode 640"));
        set(&file, 0o644);
        set(dir.path(), 0o700);
        let why = account(uid + 1, vec![]).denied(&file, 4).unwrap();
        assert!(why.starts_with("cannot enter directory"), "{why}");
        assert!(account(0, vec![]).denied(&file, 4).is_none());
        assert!(account(0, vec![]).denied(&file, 1).is_some(), "no x bit: not even root runs it");
    }
}
