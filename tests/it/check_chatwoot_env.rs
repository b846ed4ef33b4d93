//! `check --chatwoot-env FILE`, run as an administrator runs it beside a
//! Chatwoot: each of Chatwoot's settings that breaks the relay, as the line
//! that names it and the exit code, and never a password in the output.
//! What Chatwoot does with each value is its own code's (config/initializers/
//! mailer.rb, Action Mailbox's BaseController, Account#inbound_email_domain):
//! unset RAILS_INBOUND_EMAIL_SERVICE is relay, an empty one is not; no
//! password is a 500, another one a 401; no inbound domain is `@false`.

use crate::common;

use std::fs;
use std::path::PathBuf;

use common::*;

/// Chatwoot's own password when it is not ours: never to be printed either.
const THEIRS: &str = "chatwoot-side-Pa55";

/// A .env as Chatwoot's docker-compose.production.yaml setups have it, right.
const GOOD: &str = "\
# Chatwoot's .env
FRONTEND_URL=https://chat.example.com
MAILER_INBOUND_EMAIL_DOMAIN=reply.example.com
RAILS_INBOUND_EMAIL_SERVICE=relay
export RAILS_INBOUND_EMAIL_PASSWORD='s3cret+p@ss/word'
REDIS_URL=redis://redis:6379
";

struct Env {
    _dir: tempfile::TempDir,
    path: PathBuf,
}

/// GOOD with `name` given `line` instead (or removed when `line` is empty).
fn env_with(name: &str, line: &str) -> Env {
    let text: String = GOOD
        .lines()
        .map(|l| match l.trim_start_matches("export ").starts_with(&format!("{name}=")) {
            true => line.to_string(),
            false => l.to_string(),
        })
        .filter(|l| !l.is_empty())
        .map(|l| l + "\n")
        .collect();
    env_file(text.as_bytes())
}

fn env_file(bytes: &[u8]) -> Env {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join(".env");
    fs::write(&path, bytes).unwrap();
    Env { _dir: dir, path }
}

/// `check --chatwoot-env` against a server that answers the probe as the
/// relay ingress does, with our password PASSWORD.
fn check(server: &Server, env: &Env, args: &[&str]) -> Run {
    let run = to(server, &["check", "--chatwoot-env", env.path.to_str().unwrap()])
        .args(args)
        .env("KUBERNETES_SERVICE_HOST", "10.0.0.1") // in a container, as beside Chatwoot
        .run();
    assert!(!run.stdout.contains(THEIRS) && !run.stderr.contains(THEIRS), "{run:#?}");
    run.no_secrets();
    run
}

#[test]
fn chatwoots_right_settings_are_ticks_and_the_check_passes() {
    let server = Server::start(vec![status(415)]);
    let env = env_file(GOOD.as_bytes());
    let run = check(&server, &env, &[]);
    assert_eq!(run.code, 0, "{run:#?}");
    assert!(line(&run, "✓", "chatwoot-env").contains("read 5 variables from"), "{run:#?}");
    assert!(line(&run, "✓", "inbound-service").contains("RAILS_INBOUND_EMAIL_SERVICE=relay"));
    assert!(line(&run, "✓", "inbound-domain").contains("MAILER_INBOUND_EMAIL_DOMAIN=reply.example.com"));
    assert!(line(&run, "✓", "inbound-password")
        .contains("is our password (from environment CHATWOOT_INGRESS_PASSWORD)"));
    let frontend = line(&run, "✓", "frontend-url");
    assert!(
        frontend.contains(&format!("ours ({}) is inside Chatwoot's network", server.url())),
        "{frontend}"
    );
    assert!(frontend.contains("FRONTEND_URL (https://chat.example.com) is the public URL"), "{frontend}");
    assert!(run.stdout.ends_with("all checks passed\n"), "{run:#?}");
}

#[test]
fn each_mistake_on_chatwoots_side_is_named_with_its_fix() {
    // (variable, its line, mark, step, what the line says, what the fix says)
    let table = [
        ("RAILS_INBOUND_EMAIL_SERVICE", "", "✓", "inbound-service", "is unset", "Chatwoot's default, relay"),
        (
            "RAILS_INBOUND_EMAIL_SERVICE",
            "RAILS_INBOUND_EMAIL_SERVICE=",
            "✗",
            "inbound-service",
            "is empty in",
            "answers 404 — fix: set RAILS_INBOUND_EMAIL_SERVICE=relay",
        ),
        (
            "RAILS_INBOUND_EMAIL_SERVICE",
            "RAILS_INBOUND_EMAIL_SERVICE=mailgun",
            "✗",
            "inbound-service",
            "is \"mailgun\" in",
            "answers 404 — fix: set RAILS_INBOUND_EMAIL_SERVICE=relay",
        ),
        (
            "MAILER_INBOUND_EMAIL_DOMAIN",
            "",
            "✗",
            "inbound-domain",
            "is unset",
            "end in @false — fix: set MAILER_INBOUND_EMAIL_DOMAIN",
        ),
        (
            "MAILER_INBOUND_EMAIL_DOMAIN",
            "MAILER_INBOUND_EMAIL_DOMAIN=\"\"",
            "✗",
            "inbound-domain",
            "is empty",
            "no domain — fix: set MAILER_INBOUND_EMAIL_DOMAIN",
        ),
        (
            "RAILS_INBOUND_EMAIL_PASSWORD",
            "RAILS_INBOUND_EMAIL_PASSWORD=chatwoot-side-Pa55",
            "✗",
            "inbound-password",
            "is not our password (from environment CHATWOOT_INGRESS_PASSWORD)",
            "401 — fix: keep one password",
        ),
        (
            "RAILS_INBOUND_EMAIL_PASSWORD",
            "",
            "✗",
            "inbound-password",
            "is unset or empty",
            "500 (Missing required ingress credentials) — fix: set RAILS_INBOUND_EMAIL_PASSWORD",
        ),
        (
            "FRONTEND_URL",
            "",
            "!",
            "frontend-url",
            "FRONTEND_URL is unset",
            "fix: set FRONTEND_URL to Chatwoot's public URL",
        ),
    ];
    let server = Server::start(vec![status(415)]);
    for (name, replacement, mark, step, says, fix) in table {
        let env = env_with(name, replacement);
        let run = check(&server, &env, &[]);
        let found = line(&run, mark, step);
        assert!(found.contains(says) && found.contains(fix), "{name} as {replacement:?}: {found}");
        assert_eq!(run.code, if mark == "✗" { 1 } else { 0 }, "{name} as {replacement:?}: {run:#?}");
    }
}

#[test]
fn our_url_being_chatwoots_public_one_is_a_detour_from_a_container() {
    let server = Server::start(vec![status(415)]);
    let env = env_with("FRONTEND_URL", &format!("FRONTEND_URL={}/", server.url()));
    let run = check(&server, &env, &[]);
    let found = line(&run, "!", "frontend-url");
    assert!(found.contains("ours is Chatwoot's public URL"), "{found}");
    assert!(found.contains("fix: use the address inside Chatwoot's network: http://rails:3000"), "{found}");
    assert_eq!(run.code, 0, "a warning does not fail the check: {run:#?}");
}

#[test]
fn a_google_mailbox_is_warned_of_the_7_day_refresh_tokens_of_a_consent_screen_in_testing() {
    let server = Server::start(vec![status(415)]);
    let env = env_file(GOOD.as_bytes());
    let config = env._dir.path().join("config.toml");
    fs::write(
        &config,
        "[[mailbox]]\nname = \"gmail\"\nhost = \"127.0.0.1\"\nport = 9\ntls = \"none\"\nuser = \"support@example.com\"\nauth = \"xoauth2\"\n[mailbox.oauth2]\nprovider = \"google\"\nclient_id = \"1234.apps.googleusercontent.com\"\nrefresh_token_file = \"/nonexistent/gmail.refresh-token\"\n",
    )
    .unwrap();
    let run = to(&server, &["check", "--chatwoot-env", env.path.to_str().unwrap()])
        .env("CHATWOOT_INGRESS_CONFIG", &config)
        .run();
    run.no_secrets();
    let found = line(&run, "!", "google-consent");
    assert!(found.contains("mailbox gmail: Google ends refresh tokens after 7 days"), "{found}");
    assert!(found.contains("fix: publish the consent screen (In production)"), "{found}");
}

#[test]
fn no_password_is_printed_nor_in_json_nor_from_a_line_that_does_not_parse() {
    let server = Server::start(vec![status(415)]);
    // Theirs differs from ours: both are compared, neither is shown.
    let env = env_with("RAILS_INBOUND_EMAIL_PASSWORD", &format!("RAILS_INBOUND_EMAIL_PASSWORD=\"{THEIRS}\""));
    let run = check(&server, &env, &["--json"]);
    assert_eq!(run.code, 1, "{run:#?}");
    let json: serde_json::Value = serde_json::from_str(&run.stdout).unwrap();
    let step = json["steps"].as_array().unwrap().iter().find(|s| s["step"] == "inbound-password").unwrap();
    assert_eq!(step["status"], "fail", "{json:#}");
    // A line that does not parse is named by its number, not shown.
    let env = env_file(format!("A=1\nRAILS_INBOUND_EMAIL_PASSWORD='{THEIRS}\nB=2\n").as_bytes());
    let run = check(&server, &env, &[]);
    assert!(line(&run, "✗", "chatwoot-env").contains(": line 2 is not KEY=value (not shown"), "{run:#?}");
    assert_eq!(run.code, 1);
}

#[test]
fn a_processs_environ_is_read_as_it_is_and_an_unreadable_file_is_named() {
    let server = Server::start(vec![status(415)]);
    // /proc/PID/environ: NUL-separated; quotes would be part of the value.
    let environ = GOOD
        .lines()
        .filter(|l| !l.starts_with('#'))
        .map(|l| l.trim_start_matches("export ").replace('\'', ""));
    let env = env_file(environ.collect::<Vec<_>>().join("\0").as_bytes());
    let run = check(&server, &env, &[]);
    assert_eq!(run.code, 0, "{run:#?}");
    line(&run, "✓", "inbound-password");
    let missing = Env { path: env._dir.path().join("missing.env"), _dir: tempfile::tempdir().unwrap() };
    let run = check(&server, &missing, &[]);
    let found = line(&run, "✗", "chatwoot-env");
    assert!(found.contains("missing.env: no such file or directory"), "{found}");
    assert_eq!(run.code, 1);
}
