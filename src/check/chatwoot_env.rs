//! `check --chatwoot-env FILE`: Chatwoot's side of the relay, read from its
//! environment — its `.env` (Compose's `env_file`, or a source install's),
//! `KEY=value` lines exported from the Helm chart's Secret, or a process's
//! NUL-separated `/proc/PID/environ`. Each setting that makes the relay
//! ingress answer 404 or 500, the password that makes it answer 401, and
//! what makes its addresses wrong, as Chatwoot reads them
//! (config/initializers/mailer.rb, Action Mailbox's BaseController,
//! Account#inbound_email_domain). Values are compared, never printed:
//! the file holds secrets.

use std::collections::HashMap;
use std::fs;
use std::net::IpAddr;
use std::path::Path;

use reqwest::Url;
use subtle::ConstantTimeEq;

use super::report::{from, Report, Steps};
use crate::config::{Auth, Config, Provider};
use crate::sys::{io_reason, whoami};

const SERVICE: &str = "RAILS_INBOUND_EMAIL_SERVICE";
const DOMAIN: &str = "MAILER_INBOUND_EMAIL_DOMAIN";
const PASSWORD: &str = "RAILS_INBOUND_EMAIL_PASSWORD";
const FRONTEND_URL: &str = "FRONTEND_URL";

/// Where a changed variable takes effect, for every fix.
const RESTART: &str = "where Chatwoot reads its environment (.env, or the Helm chart's `env` values), then recreate its containers (docker compose up -d) or roll its pods";

pub fn check(path: &Path, config: &Config, r: &mut Report) {
    let Some(env) = read(path, r) else { return };
    let file = path.display().to_string();
    let get = |name: &str| env.get(name).map(String::as_str);
    service(get(SERVICE), &file, r);
    domain(get(DOMAIN), &file, r);
    password(get(PASSWORD), config, &file, r);
    frontend_url(get(FRONTEND_URL), config, &file, r);
    google(config, r);
}

/// The variables, or None once the failure is reported.
fn read(path: &Path, r: &mut Report) -> Option<HashMap<String, String>> {
    let bytes = match fs::read(path) {
        Ok(bytes) => bytes,
        Err(e) => {
            r.fail(
                "chatwoot-env",
                format!("cannot read {}: {} (running as {})", path.display(), io_reason(&e), whoami()),
                "give the path of Chatwoot's .env, or of KEY=value lines from its Secret",
            );
            return None;
        }
    };
    // /proc/PID/environ: NUL-separated, taken as it is (no quotes, no comments).
    let parsed = match bytes.contains(&0) {
        true => Ok(environ(&bytes)),
        false => dotenv(&bytes),
    };
    match parsed {
        Ok(env) => {
            r.ok("chatwoot-env", format!("read {} variables from {}", env.len(), path.display()));
            Some(env)
        }
        Err(place) => {
            r.fail(
                "chatwoot-env",
                format!("{}: {place} is not KEY=value (not shown: it may hold a secret)", path.display()),
                "correct its quoting; comments start with #",
            );
            None
        }
    }
}

fn environ(bytes: &[u8]) -> HashMap<String, String> {
    bytes
        .split(|&b| b == 0)
        .filter_map(|entry| {
            let entry = String::from_utf8_lossy(entry);
            let (name, value) = entry.split_once('=')?;
            Some((name.to_string(), value.to_string()))
        })
        .collect()
}

/// dotenv syntax (comments, quotes, `export `, `${VAR}`), as Chatwoot's
/// dotenv and Compose read it; a later definition wins. Err names the line.
fn dotenv(bytes: &[u8]) -> Result<HashMap<String, String>, String> {
    let mut env = HashMap::new();
    for item in dotenvy::from_read_iter(bytes) {
        match item {
            Ok((name, value)) => {
                env.insert(name, value);
            }
            Err(dotenvy::Error::LineParse(line, _)) => {
                // An unclosed quote runs on: its first line is the one to fix.
                let first = line.lines().next().unwrap_or_default().trim();
                let text = String::from_utf8_lossy(bytes);
                let number = text.lines().position(|l| l.trim() == first);
                return Err(number.map_or("a line".to_string(), |n| format!("line {}", n + 1)));
            }
            Err(_) => return Err("a line (not UTF-8)".to_string()),
        }
    }
    Ok(env)
}

/// Chatwoot: `ENV.fetch('RAILS_INBOUND_EMAIL_SERVICE', 'relay').to_sym`, so
/// unset is relay but empty is an ingress named "", and Action Mailbox's
/// relay controller answers 404 unless the ingress is exactly :relay.
fn service(value: Option<&str>, file: &str, r: &mut Report) {
    let fix = format!("set {SERVICE}=relay {RESTART}");
    match value {
        None => r.ok("inbound-service", format!("{SERVICE} is unset in {file}: Chatwoot's default, relay")),
        Some("relay") => r.ok("inbound-service", format!("{SERVICE}=relay")),
        Some("") => r.fail(
            "inbound-service",
            format!("{SERVICE} is empty in {file}: Chatwoot takes that as an ingress named \"\", not relay, and its relay ingress answers 404"),
            fix,
        ),
        Some(other) => r.fail(
            "inbound-service",
            format!("{SERVICE} is {other:?} in {file}, not relay: Chatwoot's relay ingress answers 404"),
            fix,
        ),
    }
}

/// Chatwoot: `ENV.fetch('MAILER_INBOUND_EMAIL_DOMAIN', false)` after the
/// account's own domain; forwarding addresses need the variable itself.
fn domain(value: Option<&str>, file: &str, r: &mut Report) {
    let fix = format!(
        "set {DOMAIN} to the domain whose mail reaches this ingress (the part after @ of reply+…@ and the forwarding addresses) {RESTART}"
    );
    match value.map(str::trim) {
        None => r.fail(
            "inbound-domain",
            format!("{DOMAIN} is unset in {file}: Chatwoot's reply and forwarding addresses end in @false"),
            fix,
        ),
        Some("") => r.fail(
            "inbound-domain",
            format!("{DOMAIN} is empty in {file}: Chatwoot shows no forwarding address and its reply addresses have no domain"),
            fix,
        ),
        Some(domain) => r.ok("inbound-domain", format!("{DOMAIN}={domain}")),
    }
}

/// Action Mailbox: no password (or an empty one) is a 500 to every
/// message; another password is a 401.
fn password(theirs: Option<&str>, config: &Config, file: &str, r: &mut Report) {
    let Some(theirs) = theirs.filter(|p| !p.is_empty()) else {
        return r.fail(
            "inbound-password",
            format!("{PASSWORD} is unset or empty in {file}: Chatwoot answers every message with 500 (Missing required ingress credentials)"),
            format!("set {PASSWORD} to a long random password {RESTART}, and give us the same"),
        );
    };
    let Some(ours) = &config.password else {
        return r.warn(
            "inbound-password",
            format!("{PASSWORD} is set in {file}; not compared: no password is configured here"),
            format!("let us read {PASSWORD} from the same environment, or set the same password here"),
        );
    };
    if bool::from(ours.value.expose().as_bytes().ct_eq(theirs.as_bytes())) {
        r.ok("inbound-password", format!("{PASSWORD} in {file} is our password ({})", from(&ours.source)));
    } else {
        r.fail(
            "inbound-password",
            format!(
                "{PASSWORD} in {file} is not our password ({}): Chatwoot answers every message with 401",
                from(&ours.source)
            ),
            format!("keep one password: give us Chatwoot's environment (env_file, envFrom) and no password of our own, or set ours to {PASSWORD}'s value"),
        );
    }
}

/// Which way mail goes: Chatwoot's public URL (through its proxy, from
/// anywhere) or an address inside its network (Compose's service name, the
/// chart's Service), which a container beside Chatwoot should use.
fn frontend_url(value: Option<&str>, config: &Config, file: &str, r: &mut Report) {
    let Some(ours) = &config.url else { return }; // the url step said why
    let ours = &ours.value;
    let public = match value.map(str::trim).filter(|v| !v.is_empty()) {
        None => {
            return r.warn(
                "frontend-url",
                format!(
                    "{FRONTEND_URL} is unset in {file}: cannot tell whether ours is Chatwoot's public URL"
                ),
                format!("set {FRONTEND_URL} to Chatwoot's public URL, which its own links need too"),
            )
        }
        Some(text) => match Url::parse(text) {
            Ok(url) if url.has_host() => url,
            _ => {
                return r.warn(
                    "frontend-url",
                    format!("{FRONTEND_URL} in {file} is not a URL"),
                    format!("set {FRONTEND_URL} to Chatwoot's public URL, e.g. https://chat.example.com"),
                )
            }
        },
    };
    compare(ours, &public, in_container(), r);
}

/// Ours and Chatwoot's public URL: the same is right from another host and
/// a detour from a container beside Chatwoot; an address inside a private
/// network is the way from there; anything else may be another Chatwoot.
fn compare(ours: &Url, public: &Url, in_container: bool, r: &mut impl Steps) {
    let (ours_at, public_at) = (origin(ours), origin(public));
    let in_network_fix = "use the address inside Chatwoot's network: http://rails:3000 with Docker Compose, http://<release>:3000 (the chart's Service) on Kubernetes";
    if ours_at == public_at {
        match in_container {
            true => r.warn(
                "frontend-url",
                format!("ours is Chatwoot's public URL ({FRONTEND_URL}, {public_at}) though we run in a container beside it: each message goes out through its proxy and back, under the proxy's size limit and timeouts"),
                in_network_fix,
            ),
            false => r.ok(
                "frontend-url",
                format!("ours is Chatwoot's public URL ({FRONTEND_URL}, {public_at}), the way from a host outside its network"),
            ),
        }
    } else if in_network(ours) {
        r.ok(
            "frontend-url",
            format!("ours ({ours_at}) is inside Chatwoot's network; {FRONTEND_URL} ({public_at}) is the public URL, for browsers"),
        );
    } else {
        r.warn(
            "frontend-url",
            format!("ours ({ours_at}) is neither Chatwoot's public URL ({FRONTEND_URL}, {public_at}) nor an address inside a private network"),
            "make sure our url reaches the Chatwoot this environment belongs to",
        );
    }
}

/// scheme://host[:port], the port only when not the scheme's default:
/// never a user name or password.
fn origin(url: &Url) -> String {
    url.origin().ascii_serialization()
}

/// A Compose service name, a Kubernetes Service, or a private address.
fn in_network(url: &Url) -> bool {
    let host = url.host_str().unwrap_or_default().trim_start_matches('[').trim_end_matches(']');
    match host.parse::<IpAddr>() {
        Ok(IpAddr::V4(ip)) => ip.is_private() || ip.is_loopback() || ip.is_link_local(),
        Ok(IpAddr::V6(ip)) => ip.is_loopback() || ip.is_unique_local() || ip.is_unicast_link_local(),
        Err(_) => {
            let host = host.to_ascii_lowercase();
            !host.contains('.')
                || [".svc", ".svc.cluster.local", ".cluster.local", ".internal", ".local", ".localhost"]
                    .iter()
                    .any(|suffix| host.ends_with(suffix))
        }
    }
}

/// Docker leaves /.dockerenv, Podman /run/.containerenv, and Kubernetes
/// gives every pod KUBERNETES_SERVICE_HOST.
fn in_container() -> bool {
    std::env::var_os("KUBERNETES_SERVICE_HOST").is_some()
        || Path::new("/.dockerenv").exists()
        || Path::new("/run/.containerenv").exists()
}

/// Google ends the refresh tokens of an app whose OAuth consent screen is
/// in Testing (external users) after 7 days; nothing in a token says so.
fn google(config: &Config, r: &mut Report) {
    for mailbox in &config.mailboxes {
        if let Auth::OAuth2(_, oauth2) = &mailbox.auth {
            if oauth2.provider == Some(Provider::Google) {
                r.warn(
                    "google-consent",
                    format!("mailbox {}: Google ends refresh tokens after 7 days while the app's OAuth consent screen is in Testing", mailbox.name),
                    "publish the consent screen (In production), or make it Internal on Google Workspace, then run oauth2 authorize again",
                );
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::super::report::Status;
    use super::*;

    #[test]
    fn dotenv_syntax_as_chatwoot_writes_it() {
        let text = "# comment\nexport A=1\nB='two words' # note\nC=\"q\\\"uote\"\nD=\nE=${A}x\nA=3\n";
        let env = dotenv(text.as_bytes()).unwrap();
        assert_eq!(env["A"], "3", "a later definition wins");
        assert_eq!(env["B"], "two words");
        assert_eq!(env["C"], "q\"uote");
        assert_eq!(env["D"], "");
        assert_eq!(env["E"], "1x");
        assert_eq!(dotenv(b"A=1\nB='unclosed\nC=3\n").unwrap_err(), "line 2");
    }

    #[test]
    fn environ_is_nul_separated_and_taken_as_it_is() {
        let env = environ(b"A=1\0B='x' # y\0C=a=b\0");
        assert_eq!((env["A"].as_str(), env["B"].as_str(), env["C"].as_str()), ("1", "'x' # y", "a=b"));
    }

    #[test]
    fn the_public_url_is_right_from_outside_and_a_detour_from_a_container() {
        let url = |text: &str| Url::parse(text).unwrap();
        let verdict = |ours: &str, public: &str, in_container: bool| {
            let mut r = Report::default();
            compare(&url(ours), &url(public), in_container, &mut r);
            (r.steps[0].status, r.steps[0].detail.clone())
        };
        let public = "https://Chat.example.com/app";
        let (status, detail) = verdict("https://chat.example.com:443", public, false);
        assert_eq!(status, Status::Ok, "{detail}");
        assert!(detail.contains("from a host outside"), "{detail}");
        let (status, detail) = verdict("https://chat.example.com", public, true);
        assert_eq!(status, Status::Warning, "{detail}");
        assert!(detail.contains("through its proxy"), "{detail}");
        let (status, detail) = verdict("http://rails:3000", public, true);
        assert_eq!(status, Status::Ok, "{detail}");
        assert!(detail.contains("ours (http://rails:3000) is inside"), "{detail}");
        assert_eq!(verdict("https://other.example.org", public, false).0, Status::Warning);
    }

    #[test]
    fn in_network_names_and_addresses() {
        for url in [
            "http://rails:3000",
            "http://chatwoot.chat.svc.cluster.local:3000",
            "http://10.1.2.3",
            "http://[fd00::1]/",
        ] {
            assert!(in_network(&Url::parse(url).unwrap()), "{url}");
        }
        for url in ["https://chat.example.com", "http://203.0.113.5:3000"] {
            assert!(!in_network(&Url::parse(url).unwrap()), "{url}");
        }
    }
}
