//! `watch` against a real Dovecot and the real Rails ingress, on loopback:
//! what it takes, what it does to the mailbox afterwards, and what it does
//! when parts fail. Fault injection on the ingress side uses the recording
//! server.

use crate::common;

use std::fs;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

use common::imap::{free_port, Dovecot};
use common::process::{once, wait_for, Process};
use common::rails::Rails;
use common::{corpus, status, Behaviour, Server, BIN, PASSWORD};

pub(crate) const USER: &str = "catchall";
pub(crate) const IMAP_PASSWORD: &str = "imap \"pass\\word\" é";

/// A [[mailbox]] table for `dovecot`, plain IMAP on loopback unless `extra` says otherwise.
pub(crate) fn mailbox(name: &str, dovecot: &Dovecot, dir: &Path, extra: &str) -> String {
    let password_file = dir.join(format!("{name}.password"));
    if !password_file.exists() {
        fs::write(&password_file, format!("{IMAP_PASSWORD}\n")).unwrap();
    }
    format!(
        "\n[[mailbox]]\nname = \"{name}\"\nhost = \"127.0.0.1\"\nport = {}\ntls = \"none\"\nuser = \"{USER}\"\npassword_file = \"{}\"\n{extra}\n",
        dovecot.plain_port,
        password_file.display()
    )
}

/// The configuration: the ingress at `url`, state and refusals under `dir`.
pub(crate) fn config(dir: &Path, url: &str, mailboxes: &str) -> PathBuf {
    let path = dir.join("config.toml");
    let text = format!(
        "url = \"{url}\"\npassword = \"{PASSWORD}\"\ntimeout = 10\nstate_dir = \"{}\"\nreject_dir = \"{}\"\n{mailboxes}",
        dir.join("state").display(),
        dir.join("rejected").display()
    );
    fs::write(&path, text).unwrap();
    path
}

pub(crate) fn message(id: &str, to: &str) -> Vec<u8> {
    format!(
        "From: Customer <customer@sender.test>\r\nTo: {to}\r\nSubject: watch {id}\r\nMessage-ID: <{id}@sender.test>\r\nDate: Mon, 23 Nov 2026 10:00:00 +0000\r\n\r\nbody of {id}\r\n"
    )
    .into_bytes()
}

/// What most tests need: the Rails ingress, a Dovecot with the test user,
/// and a directory for the configuration and the state.
struct World {
    rails: Rails,
    dovecot: Dovecot,
    dir: tempfile::TempDir,
}

impl World {
    fn start() -> World {
        World {
            rails: Rails::start(Some(PASSWORD), "relay"),
            dovecot: dovecot(),
            dir: tempfile::tempdir().unwrap(),
        }
    }
}

/// A Dovecot with the test user.
pub(crate) fn dovecot() -> Dovecot {
    let dovecot = Dovecot::start(None);
    dovecot.user(USER, IMAP_PASSWORD);
    dovecot
}

#[test]
#[ignore = "needs Dovecot and Rails"]
fn once_delivers_a_backlog_byte_for_byte_and_settles_each_message_per_after() {
    let World { rails, dovecot, dir } = World::start();
    // Mail of several shapes, one non-email, in three folders: one per `after`.
    let shapes: Vec<Vec<u8>> =
        ["crlf.eml", "8bit-headers.eml", "broken-mime.eml", "headers-only.eml", "no-message-id-no-date.eml"]
            .iter()
            .map(|name| corpus(name))
            .collect();
    let mut expected = Vec::new();
    for folder in ["Seen", "Move", "Delete"] {
        for (i, shape) in shapes.iter().enumerate() {
            // Each folder's copy differs, or the ingress would store it once.
            let copy = [format!("X-Copy: {folder}-{i}\r\n").as_bytes(), shape].concat();
            let uid = dovecot.append(USER, folder, &copy);
            expected.push(dovecot.body(USER, folder, uid));
        }
        dovecot.append(USER, folder, b"this is not an email at all\r\n");
    }
    let boxes = [
        mailbox("seen", &dovecot, dir.path(), "folders = [\"Seen\"]\nafter = \"seen\"\nrefused_folder = \"Refused-seen\""),
        mailbox("move", &dovecot, dir.path(), "folders = [\"Move\"]\nafter = \"move\"\nmove_to = \"Delivered\"\nrefused_folder = \"Refused-move\""),
        mailbox("delete", &dovecot, dir.path(), "folders = [\"Delete\"]\nafter = \"delete\"\nrefused_folder = \"Refused-delete\""),
    ]
    .concat();
    let config = config(dir.path(), &rails.url(), &boxes);
    let (code, log) = once(&config, &[]);
    assert_eq!(code, 0, "{log}");
    // Stored exactly once each, byte for byte as IMAP served it; the non-email not at all.
    let mut stored = rails.stored();
    stored.sort();
    expected.sort();
    assert!(stored == expected, "stored {} of {}; {log}\n{}", stored.len(), expected.len(), rails.errors());
    // after = seen: all still there, the delivered ones \Seen.
    let seen = dovecot.uids(USER, "Seen");
    assert_eq!(seen.len(), 5, "{seen:?}");
    assert!(seen.iter().all(|(_, flags)| flags.contains("\\Seen")), "{seen:?}");
    // after = move: moved, the folder is empty; after = delete: gone.
    assert_eq!((dovecot.count(USER, "Move", &[]), dovecot.count(USER, "Delivered", &[])), (0, 5));
    assert_eq!(dovecot.count(USER, "Delete", &[]), 0);
    // The non-email of each folder is in its refused folder, and in reject_dir.
    for refused in ["Refused-seen", "Refused-move", "Refused-delete"] {
        assert_eq!(dovecot.count(USER, refused, &[]), 1, "{refused}: {log}");
    }
    let saved = fs::read_dir(dir.path().join("rejected")).unwrap().count();
    assert_eq!(saved, 6, "three .eml and three .reason files");
    // One line per message, with its status code.
    assert_eq!(log.lines().filter(|l| l.contains(" uid ") && l.contains(": 2.0.0 ")).count(), 15, "{log}");
    assert_eq!(log.lines().filter(|l| l.contains(" uid ") && l.contains(": 5.6.0 ")).count(), 3, "{log}");
    // Again: nothing new, nothing twice.
    let (code, log) = once(&config, &[]);
    assert_eq!(code, 0, "{log}");
    assert_eq!(rails.stored().len(), 15);
}

#[test]
#[ignore = "needs Dovecot and Rails"]
fn a_message_appended_while_idling_is_stored_within_two_seconds() {
    let World { rails, dovecot, dir } = World::start();
    let config = config(dir.path(), &rails.url(), &mailbox("support", &dovecot, dir.path(), ""));
    let mut watcher = Process::watch(&config, &[], &[]);
    wait_for(Duration::from_secs(20), "IDLE", || watcher.output().contains("IDLE"));
    std::thread::sleep(Duration::from_millis(300));
    for n in 0..3 {
        let appended = Instant::now();
        dovecot.append(USER, "INBOX", &message(&format!("idle-{n}"), "support@inbox.test"));
        wait_for(Duration::from_secs(10), "stored", || rails.stored().len() == n + 1);
        let took = appended.elapsed();
        assert!(took < Duration::from_secs(2), "stored after {took:?}: {}", watcher.output());
    }
    // Flagged after the 2xx; a clean stop.
    wait_for(Duration::from_secs(5), "flagged", || dovecot.count(USER, "INBOX", &["seen"]) == 3);
    let (code, took) = watcher.stop("TERM");
    assert_eq!(code, 0, "{}", watcher.output());
    assert!(took < Duration::from_secs(10), "{took:?}");
}

#[test]
#[ignore = "needs Dovecot and Rails"]
fn while_the_ingress_is_down_mail_stays_untouched_and_is_delivered_once_when_it_is_back() {
    let port = free_port();
    let dovecot = dovecot();
    let dir = tempfile::tempdir().unwrap();
    let config = config(
        dir.path(),
        &format!("http://127.0.0.1:{port}"),
        &mailbox("support", &dovecot, dir.path(), ""),
    );
    let mut watcher = Process::watch(&config, &[], &[]);
    let kept = message("down", "support@inbox.test");
    dovecot.append(USER, "INBOX", &kept);
    wait_for(Duration::from_secs(30), "a failure logged", || watcher.output().contains("4.4.1"));
    std::thread::sleep(Duration::from_secs(2));
    assert_eq!(dovecot.count(USER, "INBOX", &["seen"]), 0, "untouched while the ingress is down");
    // Back, on the same port: delivered without a restart, once.
    let rails = Rails::start_with(Some(PASSWORD), "relay", port, &[]);
    wait_for(Duration::from_secs(60), "delivered", || rails.count(&kept) == 1);
    wait_for(Duration::from_secs(10), "flagged", || dovecot.count(USER, "INBOX", &["seen"]) == 1);
    std::thread::sleep(Duration::from_secs(2));
    assert_eq!(rails.count(&kept), 1);
    assert_eq!(watcher.stop("TERM").0, 0, "{}", watcher.output());
}

#[test]
#[ignore = "needs Dovecot and Rails"]
fn a_restarted_dovecot_is_reconnected_and_later_mail_delivered() {
    let World { rails, dovecot, dir } = World::start();
    let config = config(dir.path(), &rails.url(), &mailbox("support", &dovecot, dir.path(), ""));
    let mut watcher = Process::watch(&config, &[], &[]);
    wait_for(Duration::from_secs(20), "IDLE", || watcher.output().contains("IDLE"));
    dovecot.restart();
    let after = message("after-restart", "support@inbox.test");
    dovecot.append(USER, "INBOX", &after);
    wait_for(Duration::from_secs(60), "delivered after the restart", || rails.count(&after) == 1);
    assert!(watcher.output().matches("connected to").count() >= 2, "{}", watcher.output());
    assert_eq!(watcher.stop("TERM").0, 0);
}

#[test]
#[ignore = "needs Dovecot and Rails"]
fn a_wrong_password_is_one_clear_line_then_quiet_backoff_then_recovery_when_the_file_is_fixed() {
    let World { rails, dovecot, dir } = World::start();
    let boxes = mailbox("support", &dovecot, dir.path(), "");
    let password_file = dir.path().join("support.password");
    fs::write(&password_file, "wrong-password\n").unwrap();
    let config = config(dir.path(), &rails.url(), &boxes);
    let waiting = message("after-fix", "support@inbox.test");
    dovecot.append(USER, "INBOX", &waiting);
    let mut watcher = Process::watch(&config, &[], &[]);
    wait_for(Duration::from_secs(20), "a login failure", || watcher.output().contains("4.7.0"));
    let cpu = watcher.cpu();
    std::thread::sleep(Duration::from_secs(8));
    let used = watcher.cpu() - cpu;
    assert!(used < Duration::from_millis(200), "{used:?} of CPU in 8 s of backoff");
    let log = watcher.output();
    let failures = log.lines().filter(|l| l.contains("4.7.0")).count();
    assert!((1..=5).contains(&failures), "backoff, not a busy loop: {failures} failures in {log}");
    assert!(!log.contains("wrong-password") && !log.contains(IMAP_PASSWORD), "{log}");
    fs::write(&password_file, format!("{IMAP_PASSWORD}\n")).unwrap();
    wait_for(Duration::from_secs(60), "delivered after the fix", || rails.count(&waiting) == 1);
    assert_eq!(watcher.stop("TERM").0, 0);
}

#[test]
#[ignore = "needs Dovecot and Rails"]
fn a_folder_deleted_and_recreated_loses_nothing() {
    let World { rails, dovecot, dir } = World::start();
    let config = config(
        dir.path(),
        &rails.url(),
        &mailbox("support", &dovecot, dir.path(), "folders = [\"Support\"]"),
    );
    let first = message("before", "support@inbox.test");
    dovecot.append(USER, "Support", &first);
    let mut watcher = Process::watch(&config, &[], &[]);
    wait_for(Duration::from_secs(30), "first delivered", || rails.count(&first) == 1);
    let before = dovecot.cmd("status", &[USER, "Support"]);
    dovecot.cmd("delete-folder", &[USER, "Support"]);
    dovecot.cmd("create-folder", &[USER, "Support"]);
    assert_ne!(before, dovecot.cmd("status", &[USER, "Support"]), "a new UIDVALIDITY");
    // Read by a person already: still taken, the folder being new.
    let second = message("after", "support@inbox.test");
    let uid = dovecot.append(USER, "Support", &second);
    dovecot.cmd(
        "doveadm",
        &["flags", "add", "-u", USER, "\\Seen", "mailbox", "Support", "uid", &uid.to_string()],
    );
    // An IDLE on a deleted folder may hear nothing until it is renewed (every
    // few minutes): a kick makes the watcher look again now.
    dovecot.kick(USER);
    wait_for(
        Duration::from_secs(60),
        &format!("delivered from the new folder: {}", watcher.output()),
        || rails.count(&second) == 1,
    );
    assert!(watcher.output().contains("UIDVALIDITY changed"), "{}", watcher.output());
    assert_eq!(rails.count(&first), 1);
    assert_eq!(watcher.stop("TERM").0, 0);
}

#[test]
#[ignore = "needs Dovecot"]
fn sigterm_during_a_delivery_exits_0_promptly_and_the_message_is_delivered_and_flagged_or_untouched() {
    // An ingress that takes 3 s to answer.
    let server = Server::start(vec![Behaviour::Delay(Duration::from_secs(3), 204)]);
    let dovecot = dovecot();
    let dir = tempfile::tempdir().unwrap();
    let config = config(dir.path(), &server.url(), &mailbox("support", &dovecot, dir.path(), ""));
    dovecot.append(USER, "INBOX", &message("in-flight", "support@inbox.test"));
    let mut watcher = Process::watch(&config, &[], &[]);
    wait_for(Duration::from_secs(30), "the request in flight", || !server.received().is_empty());
    let (code, took) = watcher.stop("TERM");
    assert_eq!(code, 0, "{}", watcher.output());
    assert!(took < Duration::from_secs(15), "{took:?}: within the delivery timeout");
    let seen = dovecot.count(USER, "INBOX", &["seen"]);
    let answered = server.answered().contains(&204);
    assert!(
        (answered && seen == 1) || (!answered && seen == 0),
        "answered {answered}, seen {seen}: {}",
        watcher.output()
    );
}

#[test]
#[ignore = "needs Dovecot and Rails"]
fn an_unreachable_mailbox_does_not_stop_another() {
    let World { rails, dovecot, dir } = World::start();
    let unreachable = format!(
        "\n[[mailbox]]\nname = \"gone\"\nhost = \"127.0.0.1\"\nport = {}\ntls = \"none\"\nuser = \"x\"\npassword = \"y\"\n",
        free_port()
    );
    let boxes = [mailbox("support", &dovecot, dir.path(), ""), unreachable].concat();
    let config = config(dir.path(), &rails.url(), &boxes);
    let mut watcher = Process::watch(&config, &[], &[]);
    for n in 0..2 {
        let m = message(&format!("other-{n}"), "support@inbox.test");
        dovecot.append(USER, "INBOX", &m);
        wait_for(Duration::from_secs(30), "delivered beside the broken mailbox", || rails.count(&m) == 1);
    }
    assert!(watcher.output().contains("gone/INBOX: 4.4.1"), "{}", watcher.output());
    assert_eq!(watcher.stop("TERM").0, 0);
}

#[test]
#[ignore = "needs Dovecot and Rails"]
fn implicit_tls_and_starttls_with_a_private_ca() {
    let World { rails, dovecot, dir } = World::start();
    let ca = dovecot.ca();
    let tls = |name: &str, kind: &str, port: u16, ca_line: &str| {
        let text = mailbox(name, &dovecot, dir.path(), &format!("folders = [\"{name}\"]\n{ca_line}"));
        text.replace("host = \"127.0.0.1\"", "host = \"localhost\"")
            .replace(&format!("port = {}", dovecot.plain_port), &format!("port = {port}"))
            .replace("tls = \"none\"", &format!("tls = \"{kind}\""))
    };
    let ca_line = format!("ca_file = \"{}\"", ca.display());
    let boxes = [
        tls("implicit", "implicit", dovecot.tls_port, &ca_line),
        tls("starttls", "starttls", dovecot.plain_port, &ca_line),
    ]
    .concat();
    let config_path = config(dir.path(), &rails.url(), &boxes);
    let (a, b) =
        (message("over-implicit", "support@inbox.test"), message("over-starttls", "support@inbox.test"));
    dovecot.append(USER, "implicit", &a);
    dovecot.append(USER, "starttls", &b);
    let (code, log) = once(&config_path, &[]);
    assert_eq!(code, 0, "{log}");
    assert_eq!((rails.count(&a), rails.count(&b)), (1, 1), "{log}");
    assert_eq!(dovecot.logins().iter().filter(|l| l.contains("TLS")).count(), 2, "{:?}", dovecot.logins());
    // Without the CA: refused by TLS verification, nothing delivered, exit 75.
    let without = boxes.replace(&ca_line, "");
    let c = message("untrusted", "support@inbox.test");
    dovecot.append(USER, "implicit", &c);
    let config_path = config(dir.path(), &rails.url(), &without);
    let (code, log) = once(&config_path, &["--mailbox", "implicit"]);
    assert_eq!(code, 75, "{log}");
    assert!(log.contains("4.7.5"), "{log}");
    assert_eq!(rails.count(&c), 0);
}

#[test]
#[ignore = "needs Dovecot"]
fn systemd_hears_ready_status_watchdog_and_stopping_and_a_second_watcher_is_refused() {
    use std::os::unix::net::UnixDatagram;
    let server = Server::start(vec![status(204)]);
    let dovecot = dovecot();
    let dir = tempfile::tempdir().unwrap();
    let config = config(dir.path(), &server.url(), &mailbox("support", &dovecot, dir.path(), ""));
    let socket_path = dir.path().join("notify");
    let socket = UnixDatagram::bind(&socket_path).unwrap();
    socket.set_read_timeout(Some(Duration::from_secs(30))).unwrap();
    let notify = socket_path.to_str().unwrap();
    let mut watcher =
        Process::watch(&config, &[], &[("NOTIFY_SOCKET", notify), ("WATCHDOG_USEC", "2000000")]);
    let mut heard = String::new();
    let mut buf = [0; 4096];
    let deadline = Instant::now() + Duration::from_secs(30);
    while !(heard.contains("READY=1") && heard.contains("WATCHDOG=1") && heard.contains("STATUS=")) {
        assert!(Instant::now() < deadline, "heard only {heard:?}: {}", watcher.output());
        let n = socket.recv(&mut buf).unwrap();
        heard.push_str(&String::from_utf8_lossy(&buf[..n]));
    }
    assert!(heard.contains("STATUS=1 folder(s)"), "{heard}");
    // A second watcher on the same state: refused, not racing the first.
    let mut second = Process::watch(&config, &[], &[]);
    assert_eq!(second.wait(Duration::from_secs(10)), 75);
    assert!(second.output().contains("another watch already runs"), "{}", second.output());
    let (code, _) = watcher.stop("TERM");
    assert_eq!(code, 0);
    let mut rest = Vec::new();
    socket.set_nonblocking(true).unwrap();
    while let Ok(n) = socket.recv(&mut buf) {
        rest.extend_from_slice(&buf[..n]);
    }
    assert!(String::from_utf8_lossy(&rest).contains("STOPPING=1"), "{}", String::from_utf8_lossy(&rest));
    let stdout = watcher.stdout();
    assert!(!stdout.contains(PASSWORD) && !stdout.contains(IMAP_PASSWORD));
}

#[test]
#[ignore = "needs Dovecot"]
fn sighup_reloads_the_configuration_and_a_bad_one_is_not_used() {
    let (first, second) = (Server::start(vec![status(204)]), Server::start(vec![status(204)]));
    let dovecot = dovecot();
    let dir = tempfile::tempdir().unwrap();
    let boxes = mailbox("support", &dovecot, dir.path(), "");
    let config_path = config(dir.path(), &first.url(), &boxes);
    let mut watcher = Process::watch(&config_path, &[], &[]);
    // Messages, not the empty probes readiness sends at each (re)start.
    let messages = |server: &Server| server.bodies().iter().filter(|b| !b.is_empty()).count();
    dovecot.append(USER, "INBOX", &message("to-first", "support@inbox.test"));
    wait_for(Duration::from_secs(30), "first ingress", || messages(&first) == 1);
    // A broken file is reported and the running configuration kept.
    fs::write(&config_path, "url = \n").unwrap();
    assert!(Command::new("kill").args(["-HUP", &watcher.pid()]).status().unwrap().success());
    wait_for(Duration::from_secs(30), "the bad file reported", || watcher.output().contains("is not used"));
    config(dir.path(), &second.url(), &boxes);
    assert!(Command::new("kill").args(["-HUP", &watcher.pid()]).status().unwrap().success());
    wait_for(Duration::from_secs(30), "reloaded", || {
        watcher.output().matches("watching 1 folder").count() >= 3
    });
    dovecot.append(USER, "INBOX", &message("to-second", "support@inbox.test"));
    wait_for(Duration::from_secs(30), "second ingress", || messages(&second) == 1);
    assert_eq!(messages(&first), 1);
    assert_eq!(watcher.stop("TERM").0, 0);
}

#[test]
#[ignore = "needs systemd-analyze"]
fn the_service_unit_passes_systemd_analyze_verify() {
    common::require("systemd-analyze", || Command::new("systemd-analyze").arg("--version").output().is_ok());
    let unit = fs::read_to_string(
        Path::new(env!("CARGO_MANIFEST_DIR")).join("packaging/systemd/chatwoot-ingress-watch.service"),
    )
    .unwrap();
    for line in [
        "Type=notify",
        "User=chatwoot-ingress",
        "StateDirectory=chatwoot-ingress",
        "ProtectSystem=strict",
        "NoNewPrivileges=yes",
        "WatchdogSec=",
    ] {
        assert!(unit.lines().any(|l| l.starts_with(line)), "the unit lacks {line}");
    }
    // As installed, but with this build's binary and no man page to look up.
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("chatwoot-ingress-watch.service");
    let unit = unit
        .replace("/usr/bin/chatwoot-ingress", BIN)
        .replace("Documentation=man:chatwoot-ingress-watch(1)\n", "");
    fs::write(&path, unit).unwrap();
    let output = Command::new("systemd-analyze").arg("verify").arg(&path).output().unwrap();
    assert!(output.status.success(), "{}", String::from_utf8_lossy(&output.stderr));
}
