//! `watch` with OAuth2, against a real Dovecot whose oauth2 passdb checks
//! every token at the local token service's introspection endpoint, and
//! the real Rails ingress: each way of getting a token, tokens that expire
//! under a running watcher, providers that refuse, `oauth2 authorize`, and
//! no secret anywhere in what anyone prints.

use crate::common;

use std::fs;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::time::Duration;

use serde_json::json;

use common::imap::{Dovecot, TokenService};
use common::process::{once, wait_for, Process};
use common::rails::Rails;
use common::PASSWORD;

/// The mailbox's address: the user the tokens are for, and the IMAP login.
const USER: &str = "catchall@example.org";
const CLIENT_SECRET: &str = "cc-secret-5Hq9+zT/x";
const FIRST_REFRESH_TOKEN: &str = "rt-first-8cJw2LkQp";
const APP_SCOPE: &str = "https://outlook.office365.com/.default";

/// The token service: cc-app (client credentials, with a secret) and
/// pub-app (a public client: refresh tokens, device codes), both for USER,
/// and a first refresh token for pub-app.
fn token_service(lifetime: u64) -> TokenService {
    TokenService::start(&json!({
        "access_token_lifetime": lifetime,
        "refresh_token_mode": "rotate",
        "clients": [
            {"client_id": "cc-app", "client_secret": CLIENT_SECRET, "username": USER,
             "grants": ["client_credentials"], "scopes": [APP_SCOPE]},
            {"client_id": "pub-app", "client_secret": null, "username": USER,
             "grants": ["refresh_token", "device_code"]}
        ],
        "refresh_tokens": [{"client_id": "pub-app", "username": USER, "refresh_token": FIRST_REFRESH_TOKEN}]
    }))
}

/// What each test needs: the token service (tokens living `lifetime`
/// seconds), a Dovecot that checks them there, Rails, and a directory.
struct World {
    service: TokenService,
    dovecot: Dovecot,
    rails: Rails,
    dir: tempfile::TempDir,
}

fn world(lifetime: u64) -> World {
    let service = token_service(lifetime);
    let dovecot = Dovecot::start(Some(&service.introspection_url()));
    let rails = Rails::start(Some(PASSWORD), "relay");
    World { service, dovecot, rails, dir: tempfile::tempdir().unwrap() }
}

/// A file holding `secret`, readable by its owner only.
fn secret_file(path: &Path, secret: &str) -> PathBuf {
    fs::write(path, format!("{secret}\n")).unwrap();
    fs::set_permissions(path, fs::Permissions::from_mode(0o600)).unwrap();
    path.to_path_buf()
}

/// A [[mailbox]] on Dovecot's plain port that logs in with `auth` and the `oauth2` table's keys.
fn mailbox(name: &str, dovecot: &Dovecot, auth: &str, folders: &[&str], oauth2: &str) -> String {
    let folders: Vec<String> = folders.iter().map(|f| format!("\"{f}\"")).collect();
    format!(
        "\n[[mailbox]]\nname = \"{name}\"\nhost = \"127.0.0.1\"\nport = {}\ntls = \"none\"\nuser = \"{USER}\"\nauth = \"{auth}\"\nfolders = [{}]\nrefused_folder = \"Refused-{name}\"\n[mailbox.oauth2]\n{oauth2}\n",
        dovecot.plain_port,
        folders.join(", ")
    )
}

/// The application's own access (client credentials) at the token service.
fn client_credentials(service: &TokenService, secret: &Path) -> String {
    format!(
        "provider = \"microsoft\"\ntenant = \"contoso.onmicrosoft.com\"\nclient_id = \"cc-app\"\nclient_secret_file = \"{}\"\ntoken_url = \"{}/contoso.onmicrosoft.com/oauth2/v2.0/token\"",
        secret.display(),
        service.url
    )
}

/// A user's refresh token in `file`, for the public client.
fn refresh_token(service: &TokenService, file: &Path) -> String {
    format!(
        "client_id = \"pub-app\"\nrefresh_token_file = \"{}\"\ntoken_url = \"{}/token\"",
        file.display(),
        service.url
    )
}

fn config(dir: &Path, url: &str, mailboxes: &str) -> PathBuf {
    let path = dir.join("config.toml");
    let text = format!(
        "url = \"{url}\"\npassword = \"{PASSWORD}\"\ntimeout = 10\nstate_dir = \"{}\"\n{mailboxes}",
        dir.join("state").display()
    );
    fs::write(&path, text).unwrap();
    path
}

fn message(id: &str) -> Vec<u8> {
    format!(
        "From: Customer <customer@sender.test>\r\nTo: support@inbox.test\r\nSubject: oauth2 {id}\r\nMessage-ID: <{id}@sender.test>\r\nDate: Mon, 23 Nov 2026 10:00:00 +0000\r\n\r\nbody of {id}\r\n"
    )
    .into_bytes()
}

/// Token requests of `grant` the service answered with `result`.
fn grants(service: &TokenService, grant: &str, result: &str) -> usize {
    service.log().iter().filter(|e| e["grant_type"] == grant && e["result"] == result).count()
}

/// Item 7: no secret (the client secret, any token the service ever
/// issued, whatever else is named) in any output: ours, the token
/// service's own, and Dovecot's log.
fn assert_no_secret(outputs: &[String], service: &TokenService, dovecot: &Dovecot, more: &[&str]) {
    let mut texts = outputs.to_vec();
    texts.push(service.output());
    texts.push(fs::read_to_string(dovecot.work.path().join("dovecot.log")).unwrap_or_default());
    let mut secrets = service.every_token();
    secrets.extend([CLIENT_SECRET, FIRST_REFRESH_TOKEN].iter().chain(more).map(|s| s.to_string()));
    assert!(secrets.len() > 2, "the service issued tokens");
    for secret in &secrets {
        for text in &texts {
            assert!(
                !text.contains(secret.as_str()),
                "a secret ({} bytes) was printed in:\n{text}",
                secret.len()
            );
        }
    }
}

/// Item 1.
#[test]
#[ignore = "needs Dovecot and Rails"]
fn client_credentials_and_xoauth2_deliver_a_backlog_then_new_mail_while_idling() {
    let World { service, dovecot, rails, dir } = world(3600);
    let secret = secret_file(&dir.path().join("client.secret"), CLIENT_SECRET);
    let boxes =
        mailbox("app", &dovecot, "xoauth2", &["INBOX", "Support"], &client_credentials(&service, &secret));
    let config = config(dir.path(), &rails.url(), &boxes);
    let backlog: Vec<Vec<u8>> = (0..4).map(|n| message(&format!("backlog-{n}"))).collect();
    for (n, m) in backlog.iter().enumerate() {
        dovecot.append(USER, if n == 3 { "Support" } else { "INBOX" }, m);
    }
    let mut watcher = Process::watch(&config, &[], &[]);
    wait_for(Duration::from_secs(60), "the backlog delivered", || {
        backlog.iter().all(|m| rails.count(m) == 1)
    });
    wait_for(Duration::from_secs(20), "both folders idle", || watcher.output().matches("IDLE").count() >= 2);
    std::thread::sleep(Duration::from_millis(300));
    let new = message("while-idling");
    dovecot.append(USER, "INBOX", &new);
    wait_for(Duration::from_secs(10), "new mail delivered", || rails.count(&new) == 1);
    // Both folders logged in with one token: the mailbox's cache is shared.
    assert_eq!(grants(&service, "client_credentials", "ok"), 1, "{:?}", service.log());
    let logins = dovecot.logins();
    assert!(logins.len() >= 2 && logins.iter().all(|l| l.contains("XOAUTH2")), "{logins:?}");
    assert_eq!(watcher.stop("TERM").0, 0, "{}", watcher.output());
    assert_no_secret(&[watcher.output()], &service, &dovecot, &[]);
}

/// Item 2.
#[test]
#[ignore = "needs Dovecot and Rails"]
fn refresh_token_and_oauthbearer_the_rotated_token_is_saved_and_used_after_a_restart() {
    let World { service, dovecot, rails, dir } = world(3600);
    fs::create_dir(dir.path().join("tokens")).unwrap();
    let file = secret_file(&dir.path().join("tokens/user.refresh-token"), FIRST_REFRESH_TOKEN);
    let boxes =
        mailbox("user", &dovecot, "oauthbearer", &["INBOX", "Support"], &refresh_token(&service, &file));
    let config = config(dir.path(), &rails.url(), &boxes);
    let (first, second) = (message("before-restart"), message("after-restart"));
    dovecot.append(USER, "INBOX", &first);
    dovecot.append(USER, "Support", &message("in-support"));
    let (code, log) = once(&config, &[]);
    assert_eq!((code, rails.count(&first)), (0, 1), "{log}");
    // One refresh for both folders: the second would have been refused
    // (the service rotates, and a used refresh token is dead).
    assert_eq!(grants(&service, "refresh_token", "ok"), 1, "{:?}", service.log());
    let rotated = fs::read_to_string(&file).unwrap();
    assert_eq!(Some(rotated.trim().to_string()), service.refresh_token(USER), "the new one is saved");
    assert_ne!(rotated.trim(), FIRST_REFRESH_TOKEN);
    assert_eq!(fs::metadata(&file).unwrap().permissions().mode() & 0o777, 0o600);
    assert_eq!(fs::read_dir(dir.path().join("tokens")).unwrap().count(), 1, "no temporary file left");
    // A restart: the saved token works (the first one would be refused now).
    dovecot.append(USER, "INBOX", &second);
    let (code, log2) = once(&config, &[]);
    assert_eq!((code, rails.count(&second)), (0, 1), "{log2}");
    assert_eq!(grants(&service, "refresh_token", "ok"), 2);
    assert_eq!(grants(&service, "refresh_token", "invalid_grant"), 0);
    assert_ne!(fs::read_to_string(&file).unwrap(), rotated, "rotated again");
    assert!(dovecot.logins().iter().all(|l| l.contains("OAUTHBEARER")), "{:?}", dovecot.logins());
    assert_no_secret(&[log, log2], &service, &dovecot, &[]);
}

/// Item 3.
#[test]
#[ignore = "needs Dovecot and Rails"]
fn token_command_prints_the_token_and_gets_none_of_our_secrets() {
    let World { service, dovecot, rails, dir } = world(3600);
    let issued = service.admin("issue", &[("username", USER), ("lifetime", "3600")]);
    let token = issued["access_token"].as_str().unwrap().to_string();
    // A helper that records its environment and each run, chatters on
    // standard error (with the token), and prints JSON with the token.
    let helper = dir.path().join("helper");
    fs::write(
        &helper,
        format!(
            "#!/bin/sh\nenv > \"$0.env\"\necho run >> \"$0.runs\"\necho \"helper: got {token}\" >&2\nprintf '{{\"access_token\": \"%s\", \"expires_in\": 3600}}\\n' {token}\n"
        ),
    )
    .unwrap();
    fs::set_permissions(&helper, fs::Permissions::from_mode(0o700)).unwrap();
    let boxes = mailbox(
        "helper",
        &dovecot,
        "xoauth2",
        &["INBOX", "Support"],
        &format!("token_command = [\"{}\", \"--mailbox\", \"helper\"]", helper.display()),
    );
    let config = config(dir.path(), &rails.url(), &boxes);
    let m = message("by-token-command");
    dovecot.append(USER, "Support", &m);
    // The ingress password in our environment too, as a caller may set it.
    let mut watcher = Process::start(
        &["watch", "--once", "--config", config.to_str().unwrap()],
        &[("CHATWOOT_INGRESS_PASSWORD", PASSWORD)],
    );
    let code = watcher.wait(Duration::from_secs(60));
    let log = watcher.output();
    assert_eq!((code, rails.count(&m)), (0, 1), "{log}");
    // Its JSON said how long the token lives: one run for both folders.
    assert_eq!(fs::read_to_string(helper.with_extension("runs")).unwrap().lines().count(), 1);
    let env = fs::read_to_string(helper.with_extension("env")).unwrap();
    assert!(
        env.contains("CHATWOOT_INGRESS_MAILBOX=helper")
            && env.contains(&format!("CHATWOOT_INGRESS_USER={USER}"))
    );
    assert!(!env.contains("CHATWOOT_INGRESS_PASSWORD") && !env.contains(PASSWORD), "{env}");
    // A failing helper: one line that names it, without what it said.
    let failing = mailbox(
        "failing",
        &dovecot,
        "xoauth2",
        &["Other"],
        "token_command = [\"/bin/sh\", \"-c\", \"echo helper-secret-Qz7 >&2; exit 3\"]",
    );
    let config = self::config(dir.path(), &rails.url(), &failing);
    let (code, failed) = once(&config, &[]);
    assert_eq!(code, 75, "{failed}");
    assert!(failed.contains("failing/Other: 4.7.0 token_command /bin/sh exited with status 3"), "{failed}");
    assert_no_secret(&[log, failed], &service, &dovecot, &[&token, "helper-secret-Qz7"]);
}

/// Item 4.
#[test]
#[ignore = "needs Dovecot and Rails"]
fn a_session_dropped_when_its_token_expired_reconnects_with_a_new_token_losing_and_repeating_nothing() {
    // Tokens live 3 seconds.
    let World { service, dovecot, rails, dir } = world(3);
    let secret = secret_file(&dir.path().join("client.secret"), CLIENT_SECRET);
    let boxes = mailbox("app", &dovecot, "xoauth2", &["INBOX"], &client_credentials(&service, &secret));
    let config = config(dir.path(), &rails.url(), &boxes);
    let mut watcher = Process::watch(&config, &[], &[]);
    let connected = |n: usize| watcher.output().matches("connected to").count() >= n;
    wait_for(Duration::from_secs(30), "IDLE", || connected(1));
    let before = message("before-expiry");
    dovecot.append(USER, "INBOX", &before);
    wait_for(Duration::from_secs(10), "delivered while idling", || rails.count(&before) == 1);
    // The token has expired under the IDLE; the server drops the session
    // (as Exchange does): mail appended just before and just after.
    std::thread::sleep(Duration::from_secs(4));
    let (around, after) = (message("around-the-kick"), message("after-the-kick"));
    dovecot.append(USER, "INBOX", &around);
    dovecot.kick(USER);
    dovecot.append(USER, "INBOX", &after);
    wait_for(Duration::from_secs(30), "reconnected", || connected(2));
    wait_for(Duration::from_secs(30), "all delivered", || {
        rails.count(&around) == 1 && rails.count(&after) == 1
    });
    // A new token was asked for; the expired one was never offered.
    assert!(grants(&service, "client_credentials", "ok") >= 2, "{:?}", service.log());
    let inactive = |s: &TokenService| s.log().iter().filter(|e| e["result"] == "inactive").count();
    assert_eq!(inactive(&service), 0, "an expired token was used: {:?}", service.log());

    // A token the server stops taking before its time (revoked, a clock
    // off): the cached one is refused once, then a new one logs in.
    service.admin("config", &[("access_token_lifetime", "3600")]);
    let asked = grants(&service, "client_credentials", "ok");
    std::thread::sleep(Duration::from_secs(3));
    dovecot.kick(USER);
    wait_for(Duration::from_secs(30), "reconnected with a long-lived token", || {
        connected(3) && grants(&service, "client_credentials", "ok") == asked + 1
    });
    service.admin("expire", &[("all", "1")]);
    dovecot.kick(USER);
    let last = message("after-early-expiry");
    dovecot.append(USER, "INBOX", &last);
    wait_for(Duration::from_secs(30), "delivered after the early expiry", || rails.count(&last) == 1);
    assert_eq!(inactive(&service), 1, "the cached token was offered once: {:?}", service.log());
    // Each exactly once, and no error reached the log.
    std::thread::sleep(Duration::from_secs(2));
    for m in [&before, &around, &after, &last] {
        assert_eq!(rails.count(m), 1);
    }
    let log = watcher.output();
    assert!(!log.contains("4.7.0"), "{log}");
    assert_eq!(watcher.stop("TERM").0, 0, "{log}");
    assert_no_secret(&[watcher.output()], &service, &dovecot, &[]);
}

/// Item 5.
#[test]
#[ignore = "needs Dovecot and Rails"]
fn a_wrong_client_secret_and_a_revoked_refresh_token_are_one_clear_line_then_quiet_backoff_then_recovery() {
    let World { service, dovecot, rails, dir } = world(3600);
    let secret = secret_file(&dir.path().join("client.secret"), "wrong-secret-Vb3");
    let refresh = secret_file(&dir.path().join("user.refresh-token"), FIRST_REFRESH_TOKEN);
    service.admin("revoke", &[("refresh_token", FIRST_REFRESH_TOKEN)]);
    let boxes = [
        mailbox("app", &dovecot, "xoauth2", &["App"], &client_credentials(&service, &secret)),
        mailbox("user", &dovecot, "oauthbearer", &["User"], &refresh_token(&service, &refresh)),
    ]
    .concat();
    let config = config(dir.path(), &rails.url(), &boxes);
    let (for_app, for_user) = (message("to-app"), message("to-user"));
    dovecot.append(USER, "App", &for_app);
    dovecot.append(USER, "User", &for_user);
    let mut watcher = Process::watch(&config, &[], &[]);
    wait_for(Duration::from_secs(20), "both refusals logged", || {
        let log = watcher.output();
        log.contains("invalid_client") && log.contains("invalid_grant")
    });
    // Each refusal: one line, with the provider's words and the fix.
    let log = watcher.output();
    let line = |label: &str| log.lines().find(|l| l.starts_with(label)).unwrap_or_default().to_string();
    let app = line("app/App: 4.7.0");
    assert!(app.contains("AADSTS7000215") && app.contains("not its Secret ID"), "{log}");
    let user = line("user/User: 4.7.0");
    assert!(user.contains("AADSTS50173") && user.contains("oauth2 authorize --mailbox user"), "{log}");
    // Then backoff: little CPU, few attempts.
    let cpu = watcher.cpu();
    std::thread::sleep(Duration::from_secs(8));
    let used = watcher.cpu() - cpu;
    assert!(used < Duration::from_millis(200), "{used:?} of CPU in 8 s of backoff");
    let log = watcher.output();
    for label in ["app/App: 4.7.0", "user/User: 4.7.0"] {
        let failures = log.lines().filter(|l| l.starts_with(label)).count();
        assert!((1..=5).contains(&failures), "backoff, not a busy loop: {failures} of {label} in {log}");
    }
    assert_eq!(rails.stored().len(), 0);
    // Fixed files are read again: no restart.
    secret_file(&secret, CLIENT_SECRET);
    let issued =
        service.admin("issue", &[("username", USER), ("client_id", "pub-app"), ("refresh_token", "1")]);
    let new_refresh = issued["refresh_token"].as_str().unwrap().to_string();
    secret_file(&refresh, &new_refresh);
    wait_for(Duration::from_secs(90), "both delivered after the fix", || {
        rails.count(&for_app) == 1 && rails.count(&for_user) == 1
    });
    assert_eq!(watcher.stop("TERM").0, 0, "{}", watcher.output());
    assert_no_secret(&[watcher.output()], &service, &dovecot, &["wrong-secret-Vb3", &new_refresh]);
}

/// Item 6.
#[test]
#[ignore = "needs Dovecot and Rails"]
fn oauth2_authorize_with_a_device_code_writes_a_refresh_token_that_watch_then_uses() {
    let World { service, dovecot, rails, dir } = world(3600);
    let file = dir.path().join("signed-in.refresh-token");
    let table = format!(
        "{}\ndevice_authorization_url = \"{}/devicecode\"\nscope = \"https://outlook.office.com/IMAP.AccessAsUser.All offline_access\"",
        refresh_token(&service, &file),
        service.url
    );
    let config =
        config(dir.path(), &rails.url(), &mailbox("signed-in", &dovecot, "xoauth2", &["INBOX"], &table));
    let m = message("after-sign-in");
    dovecot.append(USER, "INBOX", &m);
    // Before the sign-in: watch says what to run.
    let (code, before) = once(&config, &[]);
    assert_eq!(code, 75, "{before}");
    assert!(before.contains("oauth2 authorize --mailbox signed-in"), "{before}");
    let config_arg = config.to_str().unwrap();
    let mut authorize =
        Process::start(&["--config", config_arg, "oauth2", "authorize", "--mailbox", "signed-in"], &[]);
    let mut user_code = String::new();
    wait_for(Duration::from_secs(20), "the code shown", || {
        let shown = authorize.output();
        match shown.split("enter the code ").nth(1) {
            Some(rest) => {
                user_code = rest.split([',', ' ']).next().unwrap().to_string();
                true
            }
            None => false,
        }
    });
    assert!(authorize.output().contains(&format!("{}/device", service.url)), "{}", authorize.output());
    // The user signs in elsewhere.
    std::thread::sleep(Duration::from_millis(1500));
    service.admin("approve", &[("user_code", &user_code)]);
    let code = authorize.wait(Duration::from_secs(30));
    let shown = authorize.output();
    assert_eq!(code, 0, "{shown}");
    assert!(shown.contains("signed in") && shown.contains("mode 0600"), "{shown}");
    let written = fs::read_to_string(&file).unwrap();
    assert_eq!(Some(written.trim().to_string()), service.refresh_token(USER));
    assert_eq!(fs::metadata(&file).unwrap().permissions().mode() & 0o777, 0o600);
    // Usable: watch logs in with it and delivers.
    let (code, after) = once(&config, &[]);
    assert_eq!((code, rails.count(&m)), (0, 1), "{after}");
    assert_no_secret(&[before, shown, after], &service, &dovecot, &[]);
}

/// `check` on an OAuth2 mailbox: the token request is a step of its own,
/// with the provider's text when it fails, then the SASL login, then the
/// folders; no secret in the text or the JSON.
#[test]
#[ignore = "needs Dovecot"]
fn check_shows_the_token_request_then_the_sasl_login() {
    let service = token_service(3600);
    let dovecot = Dovecot::start(Some(&service.introspection_url()));
    let ingress = common::Server::start(vec![common::status(415)]);
    let dir = tempfile::tempdir().unwrap();
    let secret = secret_file(&dir.path().join("client.secret"), CLIENT_SECRET);
    let boxes = mailbox("app", &dovecot, "xoauth2", &["INBOX"], &client_credentials(&service, &secret));
    let config = config(dir.path(), &ingress.url(), &boxes);
    let check = |json: bool| {
        let mut args = vec!["check", "--config", config.to_str().unwrap()];
        args.extend(json.then_some("--json"));
        let mut process = Process::start(&args, &[]);
        let code = process.wait(Duration::from_secs(60));
        (code, process.output())
    };
    let (code, out) = check(false);
    assert_eq!(code, 0, "{out}");
    let token = out.lines().find(|l| l.starts_with("✓ imap app: token:")).unwrap_or_else(|| panic!("{out}"));
    assert!(token.contains("client credentials"), "{token}");
    assert!(
        out.contains("✓ imap app: login: logged in as catchall@example.org with an OAuth2 token"),
        "{out}"
    );
    assert!(out.lines().any(|l| l.starts_with("✓ imap app: folder:")), "{out}");
    // A wrong client secret: the provider's words and the fix, nothing after it.
    secret_file(&secret, "not-the-secret");
    let (code, wrong) = check(false);
    assert_eq!(code, 1, "{wrong}");
    let line =
        wrong.lines().find(|l| l.starts_with("✗ imap app: token:")).unwrap_or_else(|| panic!("{wrong}"));
    assert!(line.contains("AADSTS7000215") && line.contains("fix:"), "{line}");
    assert!(!wrong.contains("imap app: login"), "{wrong}");
    let (_, json) = check(true);
    assert!(json.contains("\"step\": \"token\""), "{json}");
    assert_no_secret(&[out, wrong, json], &service, &dovecot, &["not-the-secret"]);
}
