//! `check` on `[[mailbox]]` tables, against a real Dovecot (one per test)
//! and the recording server as the ingress: each step of each mailbox, ✓ !
//! or ✗ with its fix, in text and JSON, never a password, and nothing
//! changed on the server. What is expected of the server's side comes from
//! Dovecot (doveadm through the harness).

use crate::common;

use std::fs;
use std::net::TcpListener;
use std::path::Path;
use std::process::Command;
use std::time::{Duration, Instant};

use common::imap::{free_port, Dovecot};
use common::{check_config as config, ingress, private, status, Run, Server, PASSWORD};
use serde_json::Value;

const USER: &str = "catchall";
const IMAP_PASSWORD: &str = "imap \"pass\\word\" é";
const WRONG_PASSWORD: &str = "not-the-imap-password";

/// A Dovecot with the test user.
fn dovecot() -> Dovecot {
    let dovecot = Dovecot::start(None);
    dovecot.user(USER, IMAP_PASSWORD);
    dovecot
}

/// STARTTLS on the plain port, verified with the harness's CA.
fn starttls(dovecot: &Dovecot) -> String {
    format!("port = {}\ntls = \"starttls\"\nca_file = \"{}\"", dovecot.plain_port, dovecot.ca().display())
}

/// A [[mailbox]] table on 127.0.0.1 for USER, its password in a file.
fn mailbox(name: &str, dir: &Path, password: &str, connection: &str, extra: &str) -> String {
    let password_file = dir.join(format!("{name}.password"));
    private(&password_file, &format!("{password}\n"));
    format!(
        "\n[[mailbox]]\nname = \"{name}\"\nhost = \"127.0.0.1\"\n{connection}\nuser = \"{USER}\"\npassword_file = \"{}\"\n{extra}\n",
        password_file.display()
    )
}

fn check(config: &Path, args: &[&str]) -> Run {
    let run = ingress(&[&["check", "--config", config.to_str().unwrap()], args].concat()).run();
    assert_eq!(run.stderr, "", "{run:#?}");
    for secret in [PASSWORD, IMAP_PASSWORD, WRONG_PASSWORD] {
        assert!(!run.stdout.contains(secret), "{secret:?} shown: {run:#?}");
    }
    run
}

/// The line `MARK imap MAILBOX: STEP: ...` that contains `text`.
#[track_caller]
fn line<'a>(run: &'a Run, mark: &str, mailbox: &str, step: &str, text: &str) -> &'a str {
    let prefix = format!("{mark} imap {mailbox}: {step}: ");
    run.stdout
        .lines()
        .find(|l| l.starts_with(&prefix) && l.contains(text))
        .unwrap_or_else(|| panic!("no `{prefix}…{text}…` line: {}", run.stdout))
}

fn json(run: &Run) -> Value {
    serde_json::from_str(&run.stdout).unwrap_or_else(|e| panic!("{e}: {run:#?}"))
}

/// The steps of `mailbox` in a JSON report, as (step, status).
fn steps(report: &Value, mailbox: &str) -> Vec<(String, String)> {
    report["steps"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|s| s["mailbox"] == mailbox)
        .map(|s| (s["step"].as_str().unwrap().to_string(), s["status"].as_str().unwrap().to_string()))
        .collect()
}

fn message(n: u32) -> Vec<u8> {
    let head = format!("From: a@sender.test\r\nTo: b@example.com\r\nSubject: {n}\r\n");
    format!("{head}Message-ID: <{n}@sender.test>\r\n\r\nbody {n}\r\n").into_bytes()
}

#[test]
#[ignore = "needs Dovecot"]
fn a_good_mailbox_is_all_ticks_both_tls_ways_and_nothing_changes_on_the_server() {
    let dovecot = dovecot();
    for n in 1..=2 {
        dovecot.append(USER, "INBOX", &message(n));
    }
    for folder in ["Done", "Refused"] {
        dovecot.cmd("create-folder", &[USER, folder]);
    }
    let (folders, flags) = (dovecot.folders(USER), dovecot.uids(USER, "INBOX"));
    let server = Server::start(vec![status(415)]);
    let dir = tempfile::tempdir().unwrap();
    let implicit =
        format!("port = {}\ntls = \"implicit\"\nca_file = \"{}\"", dovecot.tls_port, dovecot.ca().display());
    let boxes = [
        mailbox(
            "support",
            dir.path(),
            IMAP_PASSWORD,
            &starttls(&dovecot),
            "after = \"move\"\nmove_to = \"Done\"",
        ),
        mailbox("sales", dir.path(), IMAP_PASSWORD, &implicit, ""),
    ]
    .concat();
    let config = config(dir.path(), &server, "", &boxes);
    let run = check(&config, &[]);
    assert_eq!(run.code, 0, "{run:#?}");
    assert!(!run.stdout.contains('✗') && !run.stdout.contains("\n! "), "{}", run.stdout);
    assert!(run.stdout.ends_with("all checks passed\n"), "{}", run.stdout);
    // The ingress was checked as before: one empty probe.
    assert_eq!(server.received().len(), 1);
    for (name, tls) in [("support", "STARTTLS: "), ("sales", "implicit TLS: ")] {
        line(&run, "✓", name, "dns", "127.0.0.1 is an address, nothing to resolve");
        line(&run, "✓", name, "tcp", "connected to 127.0.0.1:");
        let tls = line(&run, "✓", name, "tls", tls);
        assert!(tls.contains(&format!(
            "valid for 127.0.0.1 and issued by a CA in ca_file {}",
            dovecot.ca().display()
        )));
        line(&run, "✓", name, "login", &format!("logged in as {USER} (password from "));
        line(&run, "✓", name, "capabilities", "IDLE, MOVE, UIDPLUS");
        line(&run, "✓", name, "folder", "\"INBOX\" (watched) is there");
        line(&run, "✓", name, "folder", "\"Refused\" (refused_folder) is there");
    }
    line(&run, "✓", "support", "folder", "\"Done\" (move_to) is there");
    // after = move: every message is taken on the first start; seen: the unseen.
    line(
        &run,
        "✓",
        "support",
        "messages",
        "\"INBOX\": 2 message(s), 2 unseen; watch will take 2, all of them",
    );
    line(
        &run,
        "✓",
        "sales",
        "messages",
        "\"INBOX\": 2 message(s), 2 unseen; watch will take 2, the unseen ones",
    );
    // Both logins went over TLS, and the check left no trace in the mailbox.
    assert_eq!(dovecot.logins(), [format!("{USER} PLAIN TLS"), format!("{USER} PLAIN TLS")]);
    assert_eq!((dovecot.folders(USER), dovecot.uids(USER, "INBOX")), (folders, flags));
}

#[test]
#[ignore = "needs Dovecot"]
fn a_wrong_password_fails_the_login_with_the_servers_text_and_never_shows_a_password() {
    let dovecot = dovecot();
    let server = Server::start(vec![status(415)]);
    let dir = tempfile::tempdir().unwrap();
    let boxes = mailbox("support", dir.path(), WRONG_PASSWORD, &starttls(&dovecot), "");
    let config = config(dir.path(), &server, "", &boxes);

    let run = check(&config, &[]);
    assert_eq!(run.code, 1, "{run:#?}");
    let login = line(&run, "✗", "support", "login", "the IMAP server refused the login: ");
    assert!(login.contains("Authentication failed") && login.contains(&format!("(as {USER})")), "{login}");
    assert!(
        login.contains("— fix: check user and the password (password_file) of the [[mailbox]]"),
        "{login}"
    );
    // Nothing after a refused login: it would only fail the same way.
    assert!(!run.stdout.contains("imap support: capabilities"), "{}", run.stdout);

    let report = json(&check(&config, &["--json"]));
    assert_eq!(report["ok"], false);
    let expected: Vec<(String, String)> = [("dns", "ok"), ("tcp", "ok"), ("tls", "ok"), ("login", "fail")]
        .iter()
        .map(|(step, status)| (step.to_string(), status.to_string()))
        .collect();
    assert_eq!(steps(&report, "support"), expected);
    let login = report["steps"].as_array().unwrap().iter().find(|s| s["step"] == "login").unwrap();
    assert!(login["detail"].as_str().unwrap().contains("Authentication failed"), "{login}");
    assert!(login["fix"].as_str().unwrap().contains("password_file"), "{login}");
    assert_eq!(report["mailboxes"], serde_json::json!([{ "name": "support", "folders": [] }]));
}

#[test]
fn an_unreachable_or_mute_server_fails_tcp_or_tls_within_the_timeout() {
    // No Dovecot needed: nothing listens, or something listens and says nothing.
    let server = Server::start(vec![status(415)]);
    let dir = tempfile::tempdir().unwrap();
    let closed = free_port();
    let mute = TcpListener::bind("127.0.0.1:0").unwrap();
    let mute_port = mute.local_addr().unwrap().port();
    let boxes = [
        mailbox("closed", dir.path(), IMAP_PASSWORD, &format!("port = {closed}\ntls = \"none\""), ""),
        mailbox("mute", dir.path(), IMAP_PASSWORD, &format!("port = {mute_port}\ntls = \"implicit\""), ""),
    ]
    .concat();
    let config = config(dir.path(), &server, "timeout = 2", &boxes);
    let started = Instant::now();
    let run = check(&config, &[]);
    let took = started.elapsed();
    assert_eq!(run.code, 1, "{run:#?}");
    let tcp =
        line(&run, "✗", "closed", "tcp", &format!("cannot connect to port {closed}: 127.0.0.1:{closed}: "));
    assert!(tcp.contains("— fix: check host, port and tls of the [[mailbox]]"), "{tcp}");
    assert!(!run.stdout.contains("imap closed: tls"), "{}", run.stdout);
    // Connected, but no TLS handshake comes back: the timeout, not minutes.
    let tls = line(
        &run,
        "✗",
        "mute",
        "tls",
        &format!("127.0.0.1:{mute_port} did not answer the TLS handshake within 2s"),
    );
    assert!(tls.contains("— fix: check port and tls of the [[mailbox]]"), "{tls}");
    assert!(took < Duration::from_secs(8), "took {took:?}");
    // The ingress was still checked.
    assert!(run.stdout.contains("✓ http: HTTP 415"), "{}", run.stdout);
}

#[test]
#[ignore = "needs Dovecot"]
fn a_certificate_from_another_ca_fails_tls_before_any_password_is_sent() {
    let dovecot = dovecot();
    let server = Server::start(vec![status(415)]);
    let dir = tempfile::tempdir().unwrap();
    let other_ca = dir.path().join("other-ca.pem");
    let made = Command::new("openssl")
        .args(["req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "2", "-subj", "/CN=another CA"])
        .arg("-keyout")
        .arg(dir.path().join("other-ca.key"))
        .arg("-out")
        .arg(&other_ca)
        .output()
        .unwrap();
    assert!(made.status.success(), "{made:?}");
    let boxes = [
        // Another CA's certificate in ca_file.
        mailbox(
            "other",
            dir.path(),
            IMAP_PASSWORD,
            &format!(
                "port = {}\ntls = \"starttls\"\nca_file = \"{}\"",
                dovecot.plain_port,
                other_ca.display()
            ),
            "",
        ),
        // No ca_file: the harness's CA is trusted nowhere.
        mailbox(
            "system",
            dir.path(),
            IMAP_PASSWORD,
            &format!("port = {}\ntls = \"implicit\"", dovecot.tls_port),
            "",
        ),
    ]
    .concat();
    let config = config(dir.path(), &server, "", &boxes);
    let run = check(&config, &[]);
    assert_eq!(run.code, 1, "{run:#?}");
    for name in ["other", "system"] {
        line(&run, "✓", name, "tcp", "connected to 127.0.0.1:");
        let tls = line(&run, "✗", name, "tls", "TLS with 127.0.0.1:");
        assert!(
            tls.contains("— fix: the IMAP server's certificate must be valid for host and issued by a CA"),
            "{tls}"
        );
        assert!(tls.contains("set ca_file in the [[mailbox]]"), "{tls}");
        assert!(!run.stdout.contains(&format!("imap {name}: login")), "{}", run.stdout);
    }
    assert_eq!(dovecot.logins(), Vec::<String>::new());
}

#[test]
#[ignore = "needs Dovecot"]
fn a_missing_folder_fails_and_folders_watch_creates_are_warnings_and_not_created() {
    let dovecot = dovecot();
    dovecot.append(USER, "INBOX", &message(1));
    let server = Server::start(vec![status(415)]);
    let dir = tempfile::tempdir().unwrap();
    let extra = "folders = [\"INBOX\", \"Support\"]\nafter = \"move\"\nmove_to = \"Done\"";
    let boxes = mailbox("support", dir.path(), IMAP_PASSWORD, &starttls(&dovecot), extra);
    let run = check(&config(dir.path(), &server, "", &boxes), &[]);
    assert_eq!(run.code, 1, "{run:#?}");
    let missing = line(&run, "✗", "support", "folder", "\"Support\" (watched) does not exist");
    assert!(missing.contains("— fix: create it, or correct folders in the [[mailbox]]"), "{missing}");
    let refused =
        line(&run, "!", "support", "folder", "\"Refused\" (refused_folder) is not there: watch creates it");
    assert!(refused.contains("unless the server refuses to create it"), "{refused}");
    line(&run, "!", "support", "folder", "\"Done\" (move_to) is not there");
    // The folder that is there is still counted.
    line(&run, "✓", "support", "messages", "\"INBOX\": 1 message(s), 1 unseen");
    assert!(!run.stdout.contains("\"Support\": "), "{}", run.stdout);

    // Only what watch creates is missing: warnings, which do not fail the check.
    let boxes = mailbox("support", dir.path(), IMAP_PASSWORD, &starttls(&dovecot), "");
    let run = check(&config(dir.path(), &server, "", &boxes), &[]);
    assert_eq!(run.code, 0, "{run:#?}");
    assert!(run.stdout.ends_with("all checks passed, with 1 warning(s)\n"), "{}", run.stdout);
    line(&run, "!", "support", "folder", "\"Refused\" (refused_folder) is not there");
    // The check created nothing.
    assert_eq!(dovecot.folders(USER), ["INBOX"]);
}

#[test]
#[ignore = "needs Dovecot"]
fn messages_waiting_are_counted_as_watch_would_take_them() {
    let dovecot = dovecot();
    let uids: Vec<u32> = (1..=3).map(|n| dovecot.append(USER, "INBOX", &message(n))).collect();
    let seen = uids[0].to_string();
    dovecot.cmd("doveadm", &["flags", "add", "-u", USER, "\\Seen", "mailbox", "INBOX", "uid", &seen]);
    let flags = dovecot.uids(USER, "INBOX");
    let server = Server::start(vec![status(415)]);
    let dir = tempfile::tempdir().unwrap();
    let boxes = mailbox("support", dir.path(), IMAP_PASSWORD, &starttls(&dovecot), "");
    let config = config(dir.path(), &server, "", &boxes);
    let figures = |run: &Run| json(run)["mailboxes"][0]["folders"][0].clone();

    // No state yet: watch starts with the unseen messages (after = "seen").
    let run = check(&config, &["--json"]);
    assert_eq!(run.code, 0, "{run:#?}");
    let expected = serde_json::json!({ "folder": "INBOX", "messages": 3, "unseen": 2, "waiting": 2 });
    assert_eq!(figures(&run), expected);

    // With its state (the format watch saves): those above its cursor and not done.
    let status = dovecot.cmd("status", &[USER, "INBOX"]);
    let uidvalidity: u32 = status.split_whitespace().nth(1).unwrap().parse().unwrap();
    let state = dir.path().join("state/watch/support/INBOX.json");
    fs::create_dir_all(state.parent().unwrap()).unwrap();
    let saved = |uidvalidity: u32| {
        let text = serde_json::json!({
            "folder": "INBOX",
            "uidvalidity": uidvalidity,
            "cursor": uids[0],
            "done": [uids[2]],
        });
        fs::write(&state, text.to_string()).unwrap();
    };
    saved(uidvalidity);
    let run = check(&config, &[]);
    line(
        &run,
        "✓",
        "support",
        "messages",
        "\"INBOX\": 3 message(s), 2 unseen; watch will take 1, those after its place, saved in ",
    );
    assert_eq!(figures(&check(&config, &["--json"]))["waiting"], 1);

    // The folder was made anew since: every message is taken again.
    saved(uidvalidity + 1);
    let run = check(&config, &[]);
    line(&run, "✓", "support", "messages", "watch will take 3, all of them: the folder was made anew");

    // A damaged state file stops watch: a failure here too.
    fs::write(&state, b"{not json").unwrap();
    let run = check(&config, &[]);
    assert_eq!(run.code, 1, "{run:#?}");
    let damaged = line(
        &run,
        "✗",
        "support",
        "messages",
        "\"INBOX\": 3 message(s), 2 unseen; the state file is damaged: ",
    );
    assert!(
        damaged.contains("remove it to start afresh (watch then takes the unseen messages)"),
        "{damaged}"
    );
    assert_eq!(figures(&check(&config, &["--json"]))["waiting"], Value::Null);

    // No flag was set by any of these checks.
    assert_eq!(dovecot.uids(USER, "INBOX"), flags);
}

#[test]
#[ignore = "needs Dovecot"]
fn a_broken_mailbox_or_ingress_hides_nothing_of_the_other_mailbox() {
    let dovecot = dovecot();
    dovecot.append(USER, "INBOX", &message(1));
    dovecot.cmd("create-folder", &[USER, "Refused"]);
    // The ingress is not there either: 404.
    let server = Server::start(vec![status(404)]);
    let dir = tempfile::tempdir().unwrap();
    let boxes = [
        // Another folder: two mailboxes of one account may not watch the same one.
        mailbox("broken", dir.path(), WRONG_PASSWORD, &starttls(&dovecot), "folders = [\"Broken\"]"),
        mailbox("good", dir.path(), IMAP_PASSWORD, &starttls(&dovecot), ""),
    ]
    .concat();
    let config = config(dir.path(), &server, "", &boxes);

    let run = check(&config, &[]);
    assert_eq!(run.code, 1, "{run:#?}");
    assert!(run.stdout.contains("✗ http: "), "{}", run.stdout);
    line(&run, "✗", "broken", "login", "Authentication failed");
    line(&run, "✓", "good", "messages", "\"INBOX\": 1 message(s), 1 unseen; watch will take 1");

    let report = json(&check(&config, &["--json"]));
    assert_eq!(report["ok"], false);
    let http = report["steps"].as_array().unwrap().iter().find(|s| s["step"] == "http").unwrap();
    assert_eq!((http["status"].as_str(), http.get("mailbox")), (Some("fail"), None));
    let good: Vec<String> = steps(&report, "good")
        .into_iter()
        .map(|(step, status)| {
            assert_eq!(status, "ok", "{report:#}");
            step
        })
        .collect();
    assert_eq!(good, ["dns", "tcp", "tls", "login", "capabilities", "folder", "folder", "messages"]);
    assert_eq!(steps(&report, "broken").last().unwrap(), &("login".to_string(), "fail".to_string()));
    assert_eq!(
        report["mailboxes"],
        serde_json::json!([
            { "name": "broken", "folders": [] },
            { "name": "good", "folders": [{ "folder": "INBOX", "messages": 1, "unseen": 1, "waiting": 1 }] },
        ])
    );
}
