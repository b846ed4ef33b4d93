//! The real thing: a Rails Action Mailbox relay ingress (tests/interop/rails)
//! behind real Postfix, Exim, getmail + Dovecot and OpenSMTPD, configured
//! with the files in packaging/. Every assertion is on what Rails stored.
//!
//! Each test is `#[ignore = "needs …"]`: run with `--include-ignored` after
//! tests/interop/install-deps, a missing component fails it.

use crate::common;

use std::fs;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};
use std::sync::Mutex;
use std::time::{Duration, Instant};

use common::imap::Dovecot;
use common::rails::Rails;
use common::{corpus, corpus_dir, large_message, BIN};

const PASSWORD: &str = "interop+s3cret/=";
const DOMAIN: &str = "inbox.test";
const FROM: &str = "alice@sender.test";

/// The MTAs and Rails share system paths and ports: one scenario at a time.
static SERIAL: Mutex<()> = Mutex::new(());

fn serial() -> std::sync::MutexGuard<'static, ()> {
    SERIAL.lock().unwrap_or_else(|poisoned| poisoned.into_inner())
}

fn root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).to_path_buf()
}

fn succeeds(program: &str, args: &[&str]) -> bool {
    Command::new(program)
        .args(args)
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .is_ok_and(|s| s.success())
}

/// A harness script's `available`: it only looks, never installs
/// (tests/interop/install-deps does, as root, before the suite).
fn looks(script: &str) -> bool {
    let output = run_script(script, &["available"], b"");
    if !output.status.success() {
        eprintln!("{}", String::from_utf8_lossy(&output.stderr).trim_end());
    }
    output.status.success()
}

/// getmail6 and the getmail harness (Rails and Dovecot check themselves).
fn require_getmail() {
    common::require("getmail6", || succeeds("getmail", &["--version"]));
    common::require("getmail harness", || looks("getmail.sh"));
}

/// Run a harness script in tests/interop/mta; it must succeed.
fn script(name: &str, args: &[&str], stdin: &[u8]) -> String {
    let output = run_script(name, args, stdin);
    assert!(
        output.status.success(),
        "{name} {args:?} failed: {}{}",
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr)
    );
    String::from_utf8_lossy(&output.stdout).into_owned()
}

fn run_script(name: &str, args: &[&str], stdin: &[u8]) -> Output {
    common::run_script(&root().join("tests/interop/mta").join(name), args, stdin)
}

/// One instance of a harness script in tests/interop/mta with its own work
/// directory, stopped on drop.
struct Harness {
    script: &'static str,
    work: tempfile::TempDir,
}

impl Harness {
    fn start(script: &'static str, args: &[&str]) -> Harness {
        let harness = Harness { script, work: tempfile::tempdir().unwrap() };
        harness.run("start", args, b"");
        harness
    }

    /// `SCRIPT COMMAND WORKDIR ARGS...`, which must succeed.
    fn run(&self, command: &str, args: &[&str], stdin: &[u8]) -> String {
        let dir = self.work.path().to_str().unwrap();
        script(self.script, &[&[command, dir], args].concat(), stdin)
    }
}

impl Drop for Harness {
    fn drop(&mut self) {
        let _ = run_script(self.script, &["stop", self.work.path().to_str().unwrap()], b"");
    }
}

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port()
}

/// The relayer as a mail system runs it: the binary and its config in a
/// directory the MTA's unprivileged user can reach.
struct Relayer {
    dir: tempfile::TempDir,
}

impl Relayer {
    fn new() -> Relayer {
        let dir = tempfile::tempdir().unwrap();
        fs::set_permissions(dir.path(), fs::Permissions::from_mode(0o755)).unwrap();
        fs::copy(BIN, dir.path().join("chatwoot-ingress")).unwrap();
        Relayer { dir }
    }

    fn bin(&self) -> String {
        self.dir.path().join("chatwoot-ingress").display().to_string()
    }

    fn config(&self) -> String {
        self.dir.path().join("config.toml").display().to_string()
    }

    /// Rewrite the configuration, as an administrator fixing it would.
    fn configure(&self, url: &str, password: &str, extra: &str) {
        fs::write(
            self.config(),
            format!("url = \"{url}\"\npassword = \"{password}\"\ntimeout = 10\n{extra}"),
        )
        .unwrap();
        fs::set_permissions(self.config(), fs::Permissions::from_mode(0o644)).unwrap();
    }
}

fn message(id: &str, to: &str) -> Vec<u8> {
    format!(
        "From: Customer <customer@sender.test>\nTo: {to}\nSubject: interop {id}\nMessage-ID: <{id}@sender.test>\nDate: Mon, 23 Nov 2026 10:00:00 +0000\n\nbody of {id}\n"
    )
    .into_bytes()
}

fn contains(haystack: &[u8], needle: &str) -> bool {
    haystack.windows(needle.len()).any(|w| w == needle.as_bytes())
}

#[test]
#[ignore = "needs Rails"]
fn direct_invocation_stores_the_corpus_byte_for_byte_and_nothing_invalid() {
    let _serial = serial();
    let rails = Rails::start(Some(PASSWORD), "relay");
    let mut expected = Vec::new();
    let mut files: Vec<_> = fs::read_dir(corpus_dir()).unwrap().map(|e| e.unwrap().path()).collect();
    files.sort();
    for path in files.iter().filter(|p| p.is_file()) {
        let raw = fs::read(path).unwrap();
        common::ingress(&["--url", &rails.url()])
            .env("CHATWOOT_INGRESS_PASSWORD", PASSWORD)
            .stdin(raw.clone())
            .run()
            .delivered();
        let start =
            if raw.starts_with(b"From ") { raw.iter().position(|&b| b == b'\n').unwrap() + 1 } else { 0 };
        // from-line.eml without its From_ line is lf.eml: the ingress
        // deduplicates identical bytes, so it is stored once.
        if !expected.contains(&raw[start..].to_vec()) {
            expected.push(raw[start..].to_vec());
        }
    }
    // The same bytes again: the ingress deduplicates, so a retry is harmless.
    common::ingress(&["--url", &rails.url()])
        .env("CHATWOOT_INGRESS_PASSWORD", PASSWORD)
        .stdin(corpus("lf.eml"))
        .run()
        .delivered();
    for entry in fs::read_dir(corpus_dir().join("invalid")).unwrap() {
        let input = fs::read(entry.unwrap().path()).unwrap();
        common::ingress(&["--url", &rails.url()])
            .env("CHATWOOT_INGRESS_PASSWORD", PASSWORD)
            .stdin(input)
            .run()
            .failed(65, "5.6.0");
    }
    let stored = rails.stored();
    assert!(
        stored == expected,
        "stored {} messages, expected {}; first difference at {:?}",
        stored.len(),
        expected.len(),
        stored.iter().zip(&expected).position(|(a, b)| a != b)
    );

    // The same faults the recording server simulates, from the real app.
    let direct = |rails: &Rails, password: &str| {
        common::ingress(&["--url", &rails.url()])
            .env("CHATWOOT_INGRESS_PASSWORD", password)
            .stdin(corpus("lf.eml"))
            .run()
    };
    direct(&rails, "wrong").failed(75, "4.7.0");
    let no_password = Rails::start(None, "relay");
    direct(&no_password, PASSWORD).failed(75, "4.3.0");
    let other_ingress = Rails::start(Some(PASSWORD), "postmark");
    direct(&other_ingress, PASSWORD).failed(75, "4.3.5");
    assert!(no_password.stored().is_empty() && other_ingress.stored().is_empty());
}

/// The scenarios every MTA goes through, in its own words.
trait Mta {
    /// Inject one message for `to` and let the MTA finish with it.
    fn send(&self, to: &str, message: &[u8]);
    /// Retry what is queued (or still on the server) and let it finish.
    fn retry(&self);
    /// Messages the MTA still holds.
    fn held(&self) -> usize;
    /// The MTA's record of why it deferred or bounced.
    fn log(&self) -> String;
}

/// A running ingress and a relayer configured for it.
fn ingress_and_relayer() -> (Rails, Relayer) {
    let rails = Rails::start(Some(PASSWORD), "relay");
    let relayer = Relayer::new();
    relayer.configure(&rails.url(), PASSWORD, "");
    (rails, relayer)
}

/// A message over max_size: refused for good, so the MTA neither stores
/// nor keeps it (it bounces; each MTA's test checks how).
fn refused_permanently(mta: &dyn Mta, relayer: &Relayer, rails: &Rails) {
    relayer.configure(&rails.url(), PASSWORD, "max_size = \"1K\"\n");
    let big = [message("too-big", &format!("reply+4@{DOMAIN}")), vec![b'x'; 4096]].concat();
    mta.send(&format!("reply+4@{DOMAIN}"), &big);
    assert_eq!((rails.count(&big), mta.held()), (0, 0));
}

/// Scenarios 2-6 of issue 3 for one MTA.
fn deliver_defer_recover_bounce(mta: &dyn Mta, relayer: &Relayer, rails: &Rails, temporary_log: &str) {
    // Delivered, X-Original-To from the envelope.
    let first = message("first", &format!("reply+1@{DOMAIN}"));
    mta.send(&format!("reply+1@{DOMAIN}"), &first);
    assert_eq!(rails.count(&first), 1, "delivered once");
    let stored = rails.stored().pop().unwrap();
    assert!(!stored.starts_with(b"From "), "an mbox From_ line reached the ingress");
    assert!(contains(&stored, &format!("X-Original-To: reply+1@{DOMAIN}")));

    // BCC: the inbox address is only in the envelope.
    let bcc = message("bcc", "someone@elsewhere.test");
    mta.send(&format!("reply+bcc@{DOMAIN}"), &bcc);
    assert_eq!(rails.count(&bcc), 1);
    assert!(contains(rails.stored().last().unwrap(), &format!("X-Original-To: reply+bcc@{DOMAIN}")));

    // Wrong password: kept, then delivered exactly once after the fix.
    relayer.configure(&rails.url(), "wrong-password", "");
    let kept = message("wrong-password", &format!("reply+2@{DOMAIN}"));
    mta.send(&format!("reply+2@{DOMAIN}"), &kept);
    assert_eq!((rails.count(&kept), mta.held()), (0, 1), "kept while the password is wrong");
    assert!(mta.log().contains(temporary_log), "{}", mta.log());
    relayer.configure(&rails.url(), PASSWORD, "");
    mta.retry();
    assert_eq!((rails.count(&kept), mta.held()), (1, 0), "delivered once after the fix");
    mta.retry();
    assert_eq!(rails.count(&kept), 1, "never twice");

    // Ingress down: the same.
    relayer.configure(&format!("http://127.0.0.1:{}", free_port()), PASSWORD, "");
    let down = message("ingress-down", &format!("reply+3@{DOMAIN}"));
    mta.send(&format!("reply+3@{DOMAIN}"), &down);
    assert_eq!((rails.count(&down), mta.held()), (0, 1), "kept while the ingress is down");
    relayer.configure(&rails.url(), PASSWORD, "");
    mta.retry();
    assert_eq!((rails.count(&down), mta.held()), (1, 0));
}

#[test]
#[ignore = "needs Postfix and Rails"]
fn postfix_delivers_defers_recovers_and_bounces() {
    let _serial = serial();
    require_postfix();
    struct Postfix(Harness);
    impl Mta for Postfix {
        fn send(&self, to: &str, message: &[u8]) {
            self.0.run("send", &[FROM, to], message);
            self.0.run("wait", &["120"], b"");
        }
        fn retry(&self) {
            self.0.run("flush", &["120"], b"");
        }
        fn held(&self) -> usize {
            self.0.run("queue", &[], b"").lines().count()
        }
        fn log(&self) -> String {
            self.0.run("log", &[], b"")
        }
    }

    let (rails, relayer) = ingress_and_relayer();
    let postfix = Postfix(Harness::start("postfix.sh", &[&relayer.bin(), &relayer.config(), DOMAIN]));

    deliver_defer_recover_bounce(&postfix, &relayer, &rails, "dsn=4.7.0, status=deferred");
    assert!(postfix.log().contains("dsn=4.4.1, status=deferred"), "{}", postfix.log());

    // A 30 MiB message arrives intact.
    let large = large_message();
    postfix.send(&format!("reply+large@{DOMAIN}"), &large);
    assert_eq!(rails.count(&large), 1);

    // A permanent refusal bounces (to the sender) instead of being retried.
    refused_permanently(&postfix, &relayer, &rails);
    assert!(postfix.log().contains("dsn=5.3.4, status=bounced"), "{}", postfix.log());
    let sink = postfix.0.run("sink", &[], b"");
    assert!(!sink.trim().is_empty(), "the sender got no bounce");
}

#[test]
#[ignore = "needs Exim and Rails"]
fn exim_delivers_without_its_from_line_defers_recovers_and_bounces() {
    let _serial = serial();
    common::require("Exim 4 (unpacked by tests/interop/install-deps)", || looks("exim.sh"));
    struct Exim(Harness);
    impl Mta for Exim {
        fn send(&self, to: &str, message: &[u8]) {
            self.0.run("deliver", &[FROM, to], message);
        }
        fn retry(&self) {
            self.0.run("flush", &[], b"");
            self.0.run("wait", &[], b"");
        }
        fn held(&self) -> usize {
            self.0.run("queue", &[], b"").lines().filter(|l| l.contains('<')).count()
        }
        fn log(&self) -> String {
            self.0.run("log", &[], b"")
        }
    }

    let (rails, relayer) = ingress_and_relayer();
    let exim = Exim(Harness::start("exim.sh", &[&relayer.bin(), &relayer.config(), DOMAIN]));

    deliver_defer_recover_bounce(&exim, &relayer, &rails, "4.7.0 the ingress rejected the password");

    refused_permanently(&exim, &relayer, &rails);
    assert!(exim.log().contains("5.3.4 message too large"), "{}", exim.log());
    let sink = exim.0.run("sink", &[], b"");
    assert!(sink.contains("5.3.4"), "the sender's bounce names the reason: {sink}");
}

#[test]
#[ignore = "needs getmail, Dovecot and Rails"]
fn getmail_leaves_undelivered_mail_on_the_server_and_delivers_it_once_later() {
    let _serial = serial();
    require_getmail();
    struct Getmail {
        imap: Dovecot,
        work: tempfile::TempDir,
        port: String,
        relayer: Relayer,
    }
    impl Getmail {
        fn run(&self) -> Output {
            let work = self.work.path().to_str().unwrap();
            let (bin, config) = (self.relayer.bin(), self.relayer.config());
            run_script("getmail.sh", &["run", work, &bin, &config, &self.port, "support", "imap-pass"], b"")
        }
    }
    impl Mta for Getmail {
        fn send(&self, _to: &str, message: &[u8]) {
            self.imap.append("support", "INBOX", message);
            self.run();
        }
        fn retry(&self) {
            self.run();
        }
        fn held(&self) -> usize {
            self.imap.count("support", "INBOX", &[])
        }
        fn log(&self) -> String {
            let output = self.run();
            String::from_utf8_lossy(&[output.stdout, output.stderr].concat()).into_owned()
        }
    }

    let rails = Rails::start(Some(PASSWORD), "relay");
    let imap = Dovecot::start(None);
    imap.user("support", "imap-pass");
    let port = imap.plain_port.to_string();
    let getmail = Getmail { imap, work: tempfile::tempdir().unwrap(), port, relayer: Relayer::new() };
    getmail.relayer.configure(&rails.url(), PASSWORD, "");

    let first = message("getmail-first", "support@example.com");
    getmail.send("", &first);
    assert_eq!((rails.count(&first), getmail.held()), (1, 0));

    getmail.relayer.configure(&rails.url(), "wrong-password", "");
    let kept = message("getmail-kept", "support@example.com");
    getmail.send("", &kept);
    assert_eq!((rails.count(&kept), getmail.held()), (0, 1), "left on the server");
    assert!(getmail.log().contains("4.7.0"));
    getmail.relayer.configure(&format!("http://127.0.0.1:{}", free_port()), PASSWORD, "");
    getmail.retry();
    assert_eq!((rails.count(&kept), getmail.held()), (0, 1), "left on the server while the ingress is down");
    getmail.relayer.configure(&rails.url(), PASSWORD, "");
    getmail.retry();
    getmail.retry();
    assert_eq!((rails.count(&kept), getmail.held()), (1, 0), "delivered once after the fix");

    // getmail cannot bounce: a refusal saved to the reject dir lets it move on.
    let rejects = getmail.work.path().join("rejected");
    fs::create_dir(&rejects).unwrap();
    fs::set_permissions(&rejects, fs::Permissions::from_mode(0o777)).unwrap();
    getmail.relayer.configure(
        &rails.url(),
        PASSWORD,
        &format!("max_size = \"1K\"\nreject_dir = \"{}\"\n", rejects.display()),
    );
    let big = [message("getmail-too-big", "support@example.com"), vec![b'x'; 4096]].concat();
    getmail.send("", &big);
    assert_eq!((rails.count(&big), getmail.held()), (0, 0));
    let saved: Vec<_> = fs::read_dir(&rejects).unwrap().map(|e| e.unwrap().path()).collect();
    let saved_big = |p: &PathBuf| {
        fs::read(p).is_ok_and(|b| b.ends_with(&[b'x'; 4096]) && contains(&b, "getmail-too-big"))
    };
    assert!(saved.iter().any(saved_big), "{saved:?}");
}

#[test]
#[ignore = "needs OpenSMTPD and Rails"]
fn opensmtpd_delivers_defers_recovers_and_bounces() {
    let _serial = serial();
    common::require("OpenSMTPD (unpacked by tests/interop/install-deps)", || looks("opensmtpd.sh"));
    struct Smtpd {
        harness: Harness,
        tries: std::cell::Cell<u32>,
    }
    impl Mta for Smtpd {
        fn send(&self, to: &str, message: &[u8]) {
            self.harness.run("send", &["alice@bounce.test", to], message);
            self.tries.set(1);
            self.harness.run("wait", &["1"], b"");
        }
        fn retry(&self) {
            self.tries.set(self.tries.get() + 1);
            self.harness.run("flush", &[], b"");
            self.harness.run("wait", &[&self.tries.get().to_string()], b"");
        }
        fn held(&self) -> usize {
            self.harness.run("queue", &[], b"").lines().filter(|l| !l.trim().is_empty()).count()
        }
        fn log(&self) -> String {
            self.harness.run("queue", &[], b"")
        }
    }

    let (rails, relayer) = ingress_and_relayer();
    let port = free_port().to_string();
    let harness = Harness::start("opensmtpd.sh", &[&relayer.bin(), &relayer.config(), &port, DOMAIN]);
    let smtpd = Smtpd { harness, tries: 0.into() };

    deliver_defer_recover_bounce(&smtpd, &relayer, &rails, "4.7.0");

    refused_permanently(&smtpd, &relayer, &rails);
    let deadline = Instant::now() + Duration::from_secs(30);
    while !smtpd.harness.run("bounces", &[], b"").contains("5.3.4") {
        assert!(Instant::now() < deadline, "no bounce naming 5.3.4");
        std::thread::sleep(Duration::from_millis(250));
    }
}

#[test]
#[ignore = "needs Rails"]
fn check_names_each_fault_against_the_real_ingress_and_stores_nothing() {
    let _serial = serial();
    let check = |url: &str, password: &str, extra: &[&str]| {
        let mut args = vec!["check", "--url", url];
        args.extend_from_slice(extra);
        common::ingress(&args).env("CHATWOOT_INGRESS_PASSWORD", password).run()
    };
    let http_line =
        |run: &common::Run| run.stdout.lines().find(|l| l.contains(" http: ")).unwrap_or("").to_string();

    let rails = Rails::start(Some(PASSWORD), "relay");
    let good = check(&rails.url(), PASSWORD, &[]);
    assert_eq!(good.code, 0, "{good:#?}");
    assert!(http_line(&good).starts_with("✓ http: HTTP 415"), "{good:#?}");

    let wrong_password = check(&rails.url(), "wrong", &[]);
    assert_eq!(wrong_password.code, 1);
    assert!(http_line(&wrong_password).contains("rejected the password (HTTP 401)"), "{wrong_password:#?}");

    let wrong_path = check(&format!("{}/wrong/path", rails.url()), PASSWORD, &[]);
    assert_eq!(wrong_path.code, 1);
    assert!(http_line(&wrong_path).contains("HTTP 404"), "{wrong_path:#?}");

    let other_mode = Rails::start(Some(PASSWORD), "postmark");
    let wrong_mode = check(&other_mode.url(), PASSWORD, &[]);
    assert_eq!(wrong_mode.code, 1);
    assert!(http_line(&wrong_mode).contains("RAILS_INBOUND_EMAIL_SERVICE=relay"), "{wrong_mode:#?}");

    let no_password = Rails::start(None, "relay");
    let unset = check(&no_password.url(), PASSWORD, &[]);
    assert_eq!(unset.code, 1);
    assert!(http_line(&unset).contains("HTTP 500"), "{unset:#?}");

    // The probes created no inbound email anywhere.
    assert!(rails.stored().is_empty() && other_mode.stored().is_empty() && no_password.stored().is_empty());

    // --send-test proves routing end to end: exactly one marked message.
    let sent = check(&rails.url(), PASSWORD, &["--send-test", "reply+check@inbox.test"]);
    assert_eq!(sent.code, 0, "{sent:#?}");
    let stored = rails.stored();
    assert_eq!(stored.len(), 1);
    assert!(contains(&stored[0], "chatwoot-ingress test message"));
    assert!(contains(&stored[0], "X-Original-To: reply+check@inbox.test"));
}

#[test]
#[ignore = "needs Rails"]
fn import_stores_an_mbox_and_a_maildir_exactly_once() {
    let _serial = serial();
    let rails = Rails::start(Some(PASSWORD), "relay");
    let dir = tempfile::tempdir().unwrap();
    let mut mbox = Vec::new();
    let mut messages = Vec::new();
    for i in 0..30 {
        let mut m = message(&format!("mbox-{i}"), &format!("reply+{i}@{DOMAIN}"));
        // A body line that mboxrd must quote and unquote.
        m.extend_from_slice(b">From the archive\n");
        mbox.extend_from_slice(
            format!("From customer@sender.test Mon Nov 23 10:00:{:02} 2026\n", i % 60).as_bytes(),
        );
        mbox.extend_from_slice(&m);
        mbox.extend_from_slice(b"\n");
        messages.push(m);
    }
    // mboxrd: the body's ">From " was written as ">>From ".
    let mbox = String::from_utf8(mbox).unwrap().replace("\n>From the archive", "\n>>From the archive");
    fs::write(dir.path().join("history.mbox"), mbox).unwrap();
    let maildir = dir.path().join("Maildir");
    for sub in ["new", "cur", "tmp"] {
        fs::create_dir_all(maildir.join(sub)).unwrap();
    }
    for i in 0..5 {
        let m = message(&format!("maildir-{i}"), &format!("reply+m{i}@{DOMAIN}"));
        let sub = if i % 2 == 0 { "new" } else { "cur" };
        fs::write(maildir.join(sub).join(format!("{i}.host:2,")), &m).unwrap();
        messages.push(m);
    }
    let journal = dir.path().join("journal");
    let import = |journal: &Path| {
        common::ingress(&[
            "import",
            "--url",
            &rails.url(),
            "--jobs",
            "4",
            "--journal",
            journal.to_str().unwrap(),
            dir.path().join("history.mbox").to_str().unwrap(),
            maildir.to_str().unwrap(),
        ])
        .env("CHATWOOT_INGRESS_PASSWORD", PASSWORD)
        .run()
    };
    let first = import(&journal);
    assert_eq!(first.code, 0, "{first:#?}");
    assert!(first.stdout.contains("35 delivered"), "{first:#?}");
    // Again with the journal: skipped. With a new journal: the ingress
    // deduplicates the identical bytes. Either way, stored once.
    let again = import(&journal);
    assert!(again.code == 0 && again.stdout.contains("35 already delivered"), "{again:#?}");
    let fresh = import(&dir.path().join("new-journal"));
    assert_eq!(fresh.code, 0, "{fresh:#?}");
    assert_eq!(rails.stored().len(), 35, "Rails logged: {}", rails.errors());
    for m in &messages {
        assert_eq!(rails.count(m), 1, "{}", String::from_utf8_lossy(m));
    }
    assert!(rails.stored().iter().all(|s| !s.starts_with(b"From ")));
    assert!(rails.stored().iter().filter(|s| contains(s, "\n>From the archive\n")).count() == 30);
}

#[test]
#[ignore = "needs fetchmail, Dovecot and Rails"]
fn fetchmail_keeps_failed_mail_on_the_server_and_delivers_it_once_later() {
    let _serial = serial();
    common::require("fetchmail", || succeeds("fetchmail", &["--version"]));
    common::require("the chatwoot-ingress account", || succeeds("getent", &["passwd", "chatwoot-ingress"]));
    let rails = Rails::start(Some(PASSWORD), "relay");
    let imap = Dovecot::start(None);
    imap.user("support", "imap-pass");
    let port = imap.plain_port.to_string();
    let relayer = Relayer::new();
    relayer.configure(&rails.url(), "wrong-password", "");

    // The shipped rc, with only server, credentials, TLS and paths replaced.
    let home = tempfile::tempdir().unwrap();
    let mut rc = fs::read_to_string(root().join("packaging/fetchmail/fetchmailrc")).unwrap();
    for (shipped, test) in [
        (
            "poll imap.example.com with proto IMAP port 993",
            format!("poll 127.0.0.1 with proto IMAP port {port}"),
        ),
        (
            "user \"support@example.com\" there with password \"CHANGE-ME\"",
            "user \"support\" there with password \"imap-pass\"".into(),
        ),
        ("    ssl sslcertck\n", "    sslproto \"\"\n".into()),
        ("/usr/bin/chatwoot-ingress", relayer.bin()),
        ("/etc/chatwoot-ingress/config.toml", relayer.config()),
    ] {
        assert!(rc.contains(shipped), "packaging/fetchmail/fetchmailrc no longer has {shipped:?}");
        rc = rc.replace(shipped, &test);
    }
    let rc_path = home.path().join("fetchmailrc");
    fs::write(&rc_path, rc).unwrap();
    let home_dir = home.path().to_str().unwrap();
    assert!(succeeds("chown", &["-R", "chatwoot-ingress", home_dir]));
    fs::set_permissions(home.path(), fs::Permissions::from_mode(0o700)).unwrap();
    fs::set_permissions(&rc_path, fs::Permissions::from_mode(0o600)).unwrap();
    // As the rc says: run by the unprivileged user, which needs a home.
    let fetch = || {
        let output = Command::new("runuser")
            .args([
                "-u",
                "chatwoot-ingress",
                "--",
                "env",
                &format!("HOME={home_dir}"),
                &format!("FETCHMAILHOME={home_dir}"),
            ])
            .args(["fetchmail", "-f", rc_path.to_str().unwrap(), "-N"])
            .current_dir(home.path())
            .output()
            .unwrap();
        String::from_utf8_lossy(&[output.stdout, output.stderr].concat()).into_owned()
    };
    let held = || imap.count("support", "INBOX", &[]);

    let kept = message("fetchmail-kept", "someone@elsewhere.test");
    imap.append("support", "INBOX", &kept);
    let output = fetch();
    assert!(output.contains("4.7.0 the ingress rejected the password"), "{output}");
    assert_eq!((rails.count(&kept), held()), (0, 1), "left on the server: {output}");

    relayer.configure(&rails.url(), PASSWORD, "");
    let output = fetch();
    assert_eq!((rails.count(&kept), held()), (1, 0), "delivered once after the fix: {output}");
    fetch();
    assert_eq!(rails.count(&kept), 1, "never twice");
    // %T is the mailbox's address from the rc ("is ... here").
    assert!(contains(rails.stored().last().unwrap(), "X-Original-To: support@example.com"));
}

// Issue 12: Chatwoot stores a message only where its routing puts it (the
// interop app records that decision as `route`), and drops the rest while the
// ingress still answers 204. So these scenarios assert on the route.

const SUPPORT: &str = "support@inbox.test";

/// Found as Chatwoot finds an inbox through the single X-Original-To, i.e.
/// through the envelope recipient `address`.
fn by_envelope(inbox: &str, address: &str) -> serde_json::Value {
    serde_json::json!({"kind": "inbox", "inbox": inbox, "via": "x_original_to", "address": address})
}

/// The one record Rails made of message `id` (see `message`), with the
/// bytes it stored.
fn recorded(rails: &Rails, id: &str) -> (serde_json::Value, Vec<u8>) {
    let message_id = format!("{id}@sender.test");
    let mut found: Vec<_> = rails
        .records()
        .into_iter()
        .zip(rails.stored())
        .filter(|(r, _)| r["message_id"] == message_id)
        .collect();
    assert_eq!(found.len(), 1, "{id} is not stored exactly once: {:#?}", rails.records());
    found.pop().unwrap()
}

/// The unfolded, trimmed values of every `name` field of the header section.
fn header_values(message: &[u8], name: &str) -> Vec<String> {
    let text = String::from_utf8_lossy(message).replace("\r\n", "\n");
    let head = text.split("\n\n").next().unwrap();
    let mut fields: Vec<(String, String)> = Vec::new();
    for line in head.lines() {
        match (line.starts_with([' ', '\t']), fields.last_mut(), line.split_once(':')) {
            (true, Some((_, value)), _) => value.push_str(line),
            (false, _, Some((field, value))) => fields.push((field.trim().to_string(), value.to_string())),
            _ => {}
        }
    }
    fields
        .into_iter()
        .filter(|(field, _)| field.eq_ignore_ascii_case(name))
        .map(|(_, v)| v.trim().into())
        .collect()
}

fn require_postfix() {
    common::require("Postfix", || Path::new("/usr/sbin/postfix").exists());
    common::require("Postfix harness", || looks("postfix.sh"));
}

/// Inject `message` for the envelope `recipients` and let Postfix finish.
fn through_postfix(postfix: &Harness, recipients: &[&str], message: &[u8]) {
    postfix.run("send", &[&[FROM], recipients].concat(), message);
    postfix.run("wait", &["120"], b"");
}

#[test]
#[ignore = "needs Postfix and Rails"]
fn postfix_mail_reaches_the_inbox_or_conversation_its_envelope_recipient_means() {
    let _serial = serial();
    require_postfix();
    let (rails, relayer) = ingress_and_relayer();
    let postfix = Harness::start("postfix.sh", &[&relayer.bin(), &relayer.config(), DOMAIN]);
    let routed = |id: &str| recorded(&rails, id).0["route"].clone();

    // BCC: the inbox address is only in the envelope.
    through_postfix(&postfix, &[SUPPORT], &message("route-bcc", "someone@elsewhere.test"));
    assert_eq!(routed("route-bcc"), by_envelope(SUPPORT, SUPPORT));

    // List mail an upstream server already gave an X-Original-To, and a
    // message with two (Chatwoot ignores both; one of them names another
    // inbox): one X-Original-To, ours; the old ones renamed, in order.
    let stale = [
        ("route-stale", vec!["lists+old@elsewhere.test"]),
        ("route-two-stale", vec!["sales@inbox.test", "lists+old@elsewhere.test"]),
    ];
    for (id, old) in &stale {
        let headers: String = old.iter().map(|o| format!("X-Original-To: {o}\n")).collect();
        let m = [headers.into_bytes(), message(id, "Customers <customers@lists.elsewhere.test>")].concat();
        through_postfix(&postfix, &[SUPPORT], &m);
        let (record, stored) = recorded(&rails, id);
        assert_eq!(record["route"], by_envelope(SUPPORT, SUPPORT), "{id}");
        assert_eq!(header_values(&stored, "X-Original-To"), [SUPPORT], "{id}");
        assert_eq!(&header_values(&stored, "X-Previous-Original-To"), old, "{id}");
    }

    // Forwarded by the customer's own mail server: To is its address, which
    // Chatwoot does not know; to the inbox address and to the inbox's
    // forwarding address (what Chatwoot tells administrators to forward to).
    let forwarding = "3f1e9c2ab4d84f0e9a7b6c5d4e3f2a1b@inbox.test";
    for (id, recipient) in [("route-forwarded", SUPPORT), ("route-forwarded-to-forward-address", forwarding)]
    {
        let m = [b"Delivered-To: help@shop.test\n".to_vec(), message(id, "Shop <help@shop.test>")].concat();
        through_postfix(&postfix, &[recipient], &m);
        assert_eq!(routed(id), by_envelope(SUPPORT, recipient), "{id}");
    }

    // A reply to an agent: Chatwoot's reply+<uuid> address in To.
    let uuid = "7b1c6e2a-3f5d-4c8e-9a1b-2d3e4f5a6b7c";
    let reply_to = format!("reply+{uuid}@{DOMAIN}");
    through_postfix(&postfix, &[&reply_to], &message("route-reply", &reply_to));
    assert_eq!(
        routed("route-reply"),
        serde_json::json!({"kind": "conversation", "uuid": uuid, "inbox": SUPPORT, "via": "to"})
    );
    assert_eq!(rails.records().len(), 6, "{:#?}", rails.records());
}

#[test]
#[ignore = "needs Postfix and Rails"]
fn one_postfix_feeds_two_chatwoot_instances_by_recipient_domain() {
    let _serial = serial();
    require_postfix();
    let first = Rails::start(Some(PASSWORD), "relay");
    let fixture = root().join("tests/interop/rails/config/chatwoot_fixture_second.json");
    let second_password = "second+instance/=";
    let second =
        Rails::start_env(Some(second_password), "relay", &[("CHATWOOT_FIXTURE", fixture.to_str().unwrap())]);
    let relayer = Relayer::new();
    let route = format!(
        "[[route]]\ndomains = [\"second.test\"]\nurl = \"{}\"\npassword = \"{second_password}\"\n",
        second.url()
    );
    relayer.configure(&first.url(), PASSWORD, &route);
    let postfix =
        Harness::start("postfix.sh", &[&relayer.bin(), &relayer.config(), &format!("{DOMAIN},second.test")]);

    // The first instance's fixture knows help@second.test too: only the
    // route keeps its mail out of there.
    let help = "help@second.test";
    through_postfix(&postfix, &[SUPPORT], &message("instance-first", "someone@elsewhere.test"));
    through_postfix(&postfix, &[help], &message("instance-second", "someone@elsewhere.test"));
    // One message for both: Postfix pipes one copy per recipient.
    through_postfix(&postfix, &[SUPPORT, help], &message("instance-both", "someone@elsewhere.test"));

    let ids = |rails: &Rails| rails.records().iter().map(|r| r["message_id"].clone()).collect::<Vec<_>>();
    assert_eq!(ids(&first), ["instance-first@sender.test", "instance-both@sender.test"]);
    assert_eq!(ids(&second), ["instance-second@sender.test", "instance-both@sender.test"]);
    for (rails, inbox, ids) in [
        (&first, SUPPORT, ["instance-first", "instance-both"]),
        (&second, help, ["instance-second", "instance-both"]),
    ] {
        for id in ids {
            let (record, stored) = recorded(rails, id);
            assert_eq!(record["route"], by_envelope(inbox, inbox), "{id}");
            assert_eq!(header_values(&stored, "X-Original-To"), [inbox], "{id}");
        }
    }
}

#[test]
#[ignore = "needs getmail, Dovecot and Rails"]
fn getmail_from_a_catch_all_mailbox_reaches_the_inbox_its_topmost_delivered_to_names() {
    let _serial = serial();
    require_getmail();
    let rails = Rails::start(Some(PASSWORD), "relay");
    let imap = Dovecot::start(None);
    imap.user("catchall", "imap-pass");
    let port = imap.plain_port.to_string();
    let relayer = Relayer::new();
    relayer.configure(&rails.url(), PASSWORD, "recipient_header = \"Delivered-To\"\n");

    // As a catch-all mailbox holds them: the recipient in the topmost
    // Delivered-To, the catch-all's own further down, To someone else.
    let recipients = [("catch-all-sales", "sales@inbox.test"), ("catch-all-support", SUPPORT)];
    for (id, recipient) in recipients {
        let trace = format!(
            "Delivered-To: {recipient}\nReceived: from mx.inbox.test by imap.inbox.test; Mon, 23 Nov 2026 10:00:01 +0000\nDelivered-To: catchall@inbox.test\n"
        );
        imap.append(
            "catchall",
            "INBOX",
            &[trace.into_bytes(), message(id, "someone@elsewhere.test")].concat(),
        );
    }
    let work = tempfile::tempdir().unwrap();
    let (bin, config) = (relayer.bin(), relayer.config());
    let args = ["run", work.path().to_str().unwrap(), &bin, &config, &port, "catchall", "imap-pass"];
    let output = run_script("getmail.sh", &args, b"");
    let said = String::from_utf8_lossy(&[output.stdout, output.stderr].concat()).into_owned();
    assert!(output.status.success(), "{said}");
    assert_eq!(imap.count("catchall", "INBOX", &[]), 0, "{said}");

    for (id, recipient) in recipients {
        let (record, stored) = recorded(&rails, id);
        assert_eq!(record["route"], by_envelope(recipient, recipient), "{id}");
        assert_eq!(header_values(&stored, "X-Original-To"), [recipient], "{id}");
    }
}
