//! The IMAP client against a real Dovecot (tests/interop/imap/dovecot.sh,
//! one instance per test): TLS both ways, awkward passwords, OAuth2 tokens,
//! the exact bytes of messages, flags, moves and deletes that touch only
//! the UIDs asked for, IDLE, kicks and restarts. What is expected comes
//! from Dovecot's side (doveadm through the harness), not from the client.

use std::io::{BufRead, BufReader};
use std::net::TcpListener;
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::thread;
use std::time::{Duration, Instant};

use chatwoot_ingress::config::Password;
use chatwoot_ingress::imap::{Endpoint, ImapError, Login, Security, Session, Woken};

const HARNESS: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/interop/imap/dovecot.sh");
const TOKEN_SERVICE: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/interop/imap/token-service.py");
const ALICE: &str = "alice";
const ALICE_PASSWORD: &str = "alice-pw";

/// Whether Dovecot can be run here; in CI its absence is a failure.
fn available() -> bool {
    let root = Command::new("id").arg("-u").output().is_ok_and(|o| o.stdout == b"0\n");
    let setup = Command::new(HARNESS).arg("setup").output();
    let problem = match setup {
        Ok(output) if output.status.success() && root => return true,
        Ok(output) if output.status.success() => "the Dovecot harness must run as root".to_string(),
        Ok(output) => String::from_utf8_lossy(&output.stderr).trim().to_string(),
        Err(e) => format!("cannot run {HARNESS}: {e}"),
    };
    assert!(
        std::env::var("CI").as_deref() != Ok("true"),
        "the Dovecot tests cannot run: {problem} (.ci/run must install dovecot-imapd and run them as root)"
    );
    eprintln!("SKIPPED: {problem}");
    false
}

fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port()
}

/// A Dovecot of our own, stopped (and its directory removed) on drop.
struct Dovecot {
    work: PathBuf,
    plain: u16,
    tls: u16,
    _dir: tempfile::TempDir,
}

impl Dovecot {
    /// A running instance with the user alice, or None when skipped.
    fn start() -> Option<Dovecot> {
        Dovecot::launch(None)
    }

    fn launch(introspection: Option<&str>) -> Option<Dovecot> {
        if !available() {
            return None;
        }
        let dir = tempfile::Builder::new().prefix("imap-client.").tempdir_in("/tmp").unwrap();
        let work = dir.path().join("dovecot");
        let (plain, tls) = loop {
            let (plain, tls) = (free_port(), free_port());
            if plain != tls {
                break (plain, tls);
            }
        };
        let dovecot = Dovecot { work, plain, tls, _dir: dir };
        let (plain, tls) = (plain.to_string(), tls.to_string());
        let mut args = vec!["start", dovecot.dir(), &plain, &tls];
        args.extend(introspection);
        dovecot.sh(&args, b"");
        dovecot.sh(&["user", dovecot.dir(), ALICE, ALICE_PASSWORD], b"");
        Some(dovecot)
    }

    fn dir(&self) -> &str {
        self.work.to_str().unwrap()
    }

    /// Run the harness; it must succeed. Its standard output.
    fn sh(&self, args: &[&str], stdin: &[u8]) -> Vec<u8> {
        let mut child = Command::new(HARNESS)
            .args(args)
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap();
        let mut input = child.stdin.take().unwrap();
        let stdin = stdin.to_vec();
        let feeder = thread::spawn(move || std::io::Write::write_all(&mut input, &stdin));
        let output = child.wait_with_output().unwrap();
        feeder.join().unwrap().unwrap();
        assert!(output.status.success(), "dovecot.sh {args:?}: {}", String::from_utf8_lossy(&output.stderr));
        output.stdout
    }

    fn text(&self, args: &[&str]) -> String {
        String::from_utf8(self.sh(args, b"")).unwrap()
    }

    fn append(&self, folder: &str, message: &[u8]) -> u32 {
        let uid = self.sh(&["append", self.dir(), ALICE, folder], message);
        String::from_utf8(uid).unwrap().trim().parse().unwrap()
    }

    fn uids(&self, folder: &str) -> String {
        self.text(&["uids", self.dir(), ALICE, folder])
    }

    fn body(&self, folder: &str, uid: u32) -> Vec<u8> {
        self.sh(&["body", self.dir(), ALICE, folder, &uid.to_string()], b"")
    }

    fn folders(&self) -> Vec<String> {
        self.text(&["folders", self.dir(), ALICE]).lines().map(str::to_string).collect()
    }

    /// `logins`: "USER MECHANISM TLS|plain" per successful login.
    fn logins(&self) -> Vec<String> {
        self.text(&["logins", self.dir()]).lines().map(str::to_string).collect()
    }

    fn endpoint(&self, security: Security) -> Endpoint {
        Endpoint {
            host: "localhost".into(),
            port: if security == Security::Implicit { self.tls } else { self.plain },
            security,
            ca_file: Some(self.work.join("ca.pem")),
            timeout: Duration::from_secs(10),
        }
    }

    /// alice, logged in.
    fn session(&self, security: Security) -> Session {
        self.session_at(&self.endpoint(security))
    }

    fn session_at(&self, endpoint: &Endpoint) -> Session {
        let mut session = Session::connect(endpoint).unwrap();
        session.login(&password(ALICE, ALICE_PASSWORD)).unwrap();
        session
    }
}

impl Drop for Dovecot {
    fn drop(&mut self) {
        let _ = Command::new(HARNESS).args(["stop", self.dir()]).output();
    }
}

fn password(user: &str, password: &str) -> Login {
    Login::Password { user: user.into(), password: Password::new(password) }
}

/// A CRLF message with 8-bit bytes, and `extra` bytes of body.
fn message(subject: &str, extra: usize) -> Vec<u8> {
    let mut message = format!(
        "From: a@example.org\r\nTo: alice@example.org\r\nSubject: {subject}\r\nContent-Type: text/plain; charset=latin1\r\n\r\n"
    )
    .into_bytes();
    message.extend_from_slice(b"caf\xe9 \xff\xfe) {5}\r\n* 1 EXISTS\r\nA0001 OK not a response\r\n");
    message.extend((0..extra).map(|i| if i % 77 == 76 { b'\n' } else { b'a' + (i % 26) as u8 }));
    message.extend_from_slice(b"\r\n");
    message
}

#[test]
fn tls_implicit_and_starttls_are_verified_against_the_ca_file() {
    let Some(dovecot) = Dovecot::start() else { return };
    dovecot.session(Security::Implicit).logout();
    let mut by_ip = dovecot.endpoint(Security::StartTls);
    by_ip.host = "127.0.0.1".into();
    let mut session = Session::connect(&by_ip).unwrap();
    assert!(session.capabilities().idle && !session.capabilities().starttls);
    session.login(&password(ALICE, ALICE_PASSWORD)).unwrap();
    assert!(session.capabilities().move_ && session.capabilities().uidplus);
    session.logout();
    // Cleartext is allowed on loopback (Dovecot offers STARTTLS; not taken).
    let mut cleartext = dovecot.endpoint(Security::None);
    cleartext.ca_file = None;
    dovecot.session_at(&cleartext).logout();
    assert_eq!(dovecot.logins(), ["alice PLAIN TLS", "alice PLAIN TLS", "alice PLAIN plain"]);

    for security in [Security::Implicit, Security::StartTls] {
        let mut untrusted = dovecot.endpoint(security);
        untrusted.ca_file = None;
        let e = Session::connect(&untrusted).unwrap_err();
        assert!(matches!(&e, ImapError::Tls(text) if text.contains("certificate")), "{security:?}: {e:?}");
    }
    assert_eq!(dovecot.logins().len(), 3);
}

#[test]
fn awkward_passwords_log_in_and_wrong_ones_are_refused_without_showing_them() {
    let Some(dovecot) = Dovecot::start() else { return };
    let awkward = "p\"a\\ss wörd {3}";
    dovecot.sh(&["user", dovecot.dir(), "bob", awkward], b"");
    for security in [Security::StartTls, Security::Implicit] {
        let mut session = Session::connect(&dovecot.endpoint(security)).unwrap();
        session.login(&password("bob", awkward)).unwrap();
        session.select("INBOX").unwrap();
        session.logout();
    }
    let wrong = "wr\"ong\\pässword";
    let mut session = Session::connect(&dovecot.endpoint(Security::StartTls)).unwrap();
    let e = session.login(&password("bob", wrong)).unwrap_err();
    let shown = format!("{e} {e:?}");
    assert!(matches!(&e, ImapError::LoginRefused(text) if text.contains("[AUTHENTICATIONFAILED]")), "{e:?}");
    assert!(!shown.contains("pässword") && !shown.contains("wr\"ong"), "{shown}");
    // The session is still there for another try.
    session.login(&password("bob", awkward)).unwrap();
    assert_eq!(dovecot.logins(), ["bob PLAIN TLS", "bob PLAIN TLS", "bob PLAIN TLS"]);
}

#[test]
fn fetched_bodies_are_the_exact_bytes_dovecot_serves() {
    let Some(dovecot) = Dovecot::start() else { return };
    let messages = [
        message("one", 0),
        b"Subject: LF only\n\nline\nline\n".to_vec(),
        // Several TLS records, several of our reads.
        message("large", 300_000),
    ];
    for message in &messages {
        dovecot.append("INBOX", message);
    }
    let status = dovecot.text(&["status", dovecot.dir(), ALICE, "INBOX"]);
    let mut session = dovecot.session(Security::Implicit);
    let selected = session.select("INBOX").unwrap();
    assert_eq!(
        format!(
            "uidvalidity {} uidnext {} messages {}\n",
            selected.uidvalidity,
            selected.uidnext.unwrap(),
            3
        ),
        status
    );
    assert_eq!(selected.exists, 3);
    assert_eq!(session.uid_search("UID 1:* NOT DELETED").unwrap(), [1, 2, 3]);
    assert_eq!(session.uid_search("UID 2:*").unwrap(), [2, 3]);
    assert_eq!(session.uid_search("UID 4:*").unwrap(), [3], "n:* includes the highest UID (RFC 3501)");

    let expected: Vec<Vec<u8>> = (1..=3).map(|uid| dovecot.body("INBOX", uid)).collect();
    assert_eq!(expected[0], messages[0], "CRLF messages come back as they were");
    let mut fetched = Vec::new();
    session.fetch_bodies(&[3, 1, 2], &mut |message| fetched.push(message)).unwrap();
    assert_eq!(fetched.len(), 3);
    for (message, body) in fetched.iter().zip(&expected) {
        assert_eq!(message.body.as_ref(), Some(body), "UID {}", message.uid);
        assert_eq!(message.size, body.len() as u64);
        assert!(message.flags.iter().all(|flag| flag != "\\Seen"), "{:?}", message.flags);
    }
    assert_eq!(fetched.iter().map(|m| m.uid).collect::<Vec<_>>(), [1, 2, 3]);
    let sizes: Vec<u64> = session.fetch_meta(&[1, 2, 3, 4]).unwrap().iter().map(|m| m.size).collect();
    assert_eq!(sizes, expected.iter().map(|body| body.len() as u64).collect::<Vec<_>>());

    let whole = &expected[2];
    let mut pieces = Vec::new();
    let piece = 64 * 1024 + 7;
    for offset in (0..whole.len() as u64 + 1).step_by(piece) {
        pieces.extend(session.fetch_part(3, offset, piece as u64).unwrap());
    }
    assert_eq!(&pieces, whole);
    assert_eq!(session.fetch_part(3, whole.len() as u64 + 10, 100).unwrap(), b"");
    // BODY.PEEK: nothing was marked read.
    assert_eq!(dovecot.uids("INBOX"), "1\n2\n3\n");
}

#[test]
fn flags_moves_and_deletes_touch_only_the_uids_asked_for() {
    let Some(dovecot) = Dovecot::start() else { return };
    for n in 1..=4 {
        dovecot.append("INBOX", &message(&format!("m{n}"), 10));
    }
    let mut session = dovecot.session(Security::StartTls);
    session.select("INBOX").unwrap();
    session.add_flags(&[1], &["\\Seen"]).unwrap();
    assert_eq!(dovecot.uids("INBOX"), "1 \\Seen\n2\n3\n4\n");
    assert_eq!(session.status("INBOX").unwrap(), (4, 3));
    assert_eq!(session.uid_search("UNSEEN NOT DELETED").unwrap(), [2, 3, 4]);

    assert!(session.create("Archive").unwrap());
    assert!(!session.create("Archive").unwrap());
    assert!(!session.create("INBOX").unwrap());
    session.move_to(&[2], "Archive").unwrap();
    assert_eq!(dovecot.uids("INBOX"), "1 \\Seen\n3\n4\n");
    assert_eq!(dovecot.uids("Archive"), "1\n");
    let e = session.move_to(&[3], "Missing").unwrap_err();
    assert!(matches!(&e, ImapError::No { code: Some(code), .. } if code == "TRYCREATE"), "{e:?}");
    assert!(!dovecot.folders().contains(&"Missing".to_string()), "the caller creates folders");
    assert_eq!(dovecot.uids("INBOX"), "1 \\Seen\n3\n4\n");

    // Another client flags 4 \Deleted and leaves it: our delete of 1 must
    // not expunge it (UID EXPUNGE, never EXPUNGE).
    let mut other = dovecot.session(Security::Implicit);
    other.select("INBOX").unwrap();
    other.add_flags(&[4], &["\\Deleted"]).unwrap();
    session.delete(&[1]).unwrap();
    assert_eq!(dovecot.uids("INBOX"), "3\n4 \\Deleted\n");
    other.logout();
    session.logout();
}

#[test]
fn non_ascii_folder_names_round_trip() {
    let Some(dovecot) = Dovecot::start() else { return };
    let mut session = dovecot.session(Security::Implicit);
    for folder in ["Éléments envoyés", "Archive/2024", "Tom & Jerry", "日本語"] {
        assert!(!session.folder_exists(folder).unwrap(), "{folder}");
        assert!(session.create(folder).unwrap(), "{folder}");
        assert!(dovecot.folders().contains(&folder.to_string()), "{folder}: {:?}", dovecot.folders());
        assert!(session.folder_exists(folder).unwrap(), "{folder}");
        assert!(!session.create(folder).unwrap(), "{folder}");
        dovecot.append(folder, &message(folder, 0));
        assert_eq!(session.select(folder).unwrap().exists, 1, "{folder}");
        assert_eq!(session.status(folder).unwrap(), (1, 1), "{folder}");
    }
    assert!(!session.folder_exists("Nope").unwrap());
    assert!(!session.folder_exists("Élé*").unwrap(), "wildcards match nothing but themselves");
    // Dovecot 2.3 gives no [NONEXISTENT] code here, only its words.
    let e = session.select("Nope").unwrap_err();
    assert!(
        matches!(&e, ImapError::No { command, text, .. }
        if command == "SELECT" && text.starts_with("Mailbox doesn't exist")),
        "{e:?}"
    );
}

#[test]
fn idle_wakes_on_new_mail_stops_on_request_and_times_out() {
    let Some(dovecot) = Dovecot::start() else { return };
    let dovecot = Arc::new(dovecot);
    let mut session = dovecot.session(Security::Implicit);
    session.select("INBOX").unwrap();

    let appender = dovecot.clone();
    let appended = thread::spawn(move || {
        thread::sleep(Duration::from_millis(300));
        appender.append("INBOX", &message("idle", 0));
        Instant::now()
    });
    let woken = session.idle(Instant::now() + Duration::from_secs(20), &|| false).unwrap();
    let late = appended.join().unwrap().elapsed();
    assert_eq!(woken, Woken::NewMail);
    assert!(late < Duration::from_secs(2), "EXISTS {late:?} after the append");
    assert_eq!(session.uid_search("UID 1:*").unwrap(), [1]);

    let stop = Arc::new(AtomicBool::new(false));
    let flag = stop.clone();
    let stopper = thread::spawn(move || {
        thread::sleep(Duration::from_millis(500));
        flag.store(true, Ordering::SeqCst);
        Instant::now()
    });
    let woken =
        session.idle(Instant::now() + Duration::from_secs(20), &|| stop.load(Ordering::SeqCst)).unwrap();
    let late = stopper.join().unwrap().elapsed();
    assert_eq!(woken, Woken::Stopped);
    assert!(late < Duration::from_secs(1), "stopped {late:?} after the request");
    assert_eq!(session.select("INBOX").unwrap().exists, 1, "the session is still usable");

    let started = Instant::now();
    assert_eq!(session.idle(started + Duration::from_secs(1), &|| false).unwrap(), Woken::Timeout);
    assert!(started.elapsed() < Duration::from_secs(2));

    // Polling instead of IDLE.
    assert!(!session.noop().unwrap());
    dovecot.append("INBOX", &message("poll", 0));
    assert!(session.noop().unwrap());
    session.logout();
}

#[test]
fn a_kick_during_idle_is_lost() {
    let Some(dovecot) = Dovecot::start() else { return };
    let dovecot = Arc::new(dovecot);
    let mut session = dovecot.session(Security::StartTls);
    session.select("INBOX").unwrap();
    let kicker = dovecot.clone();
    let kicked = thread::spawn(move || {
        thread::sleep(Duration::from_millis(500));
        kicker.sh(&["kick", kicker.dir(), ALICE], b"");
    });
    let started = Instant::now();
    let e = session.idle(Instant::now() + Duration::from_secs(20), &|| false).unwrap_err();
    kicked.join().unwrap();
    assert!(matches!(e, ImapError::Lost(_)), "{e:?}");
    assert!(started.elapsed() < Duration::from_secs(5));
}

#[test]
fn a_restart_during_idle_is_lost_and_a_fresh_connect_works() {
    let Some(dovecot) = Dovecot::start() else { return };
    let dovecot = Arc::new(dovecot);
    dovecot.append("INBOX", &message("before", 0));
    let mut session = dovecot.session(Security::Implicit);
    session.select("INBOX").unwrap();
    let restarter = dovecot.clone();
    let restarted = thread::spawn(move || {
        thread::sleep(Duration::from_millis(300));
        restarter.sh(&["restart", restarter.dir()], b"");
    });
    let e = session.idle(Instant::now() + Duration::from_secs(20), &|| false).unwrap_err();
    assert!(matches!(e, ImapError::Lost(_)), "{e:?}");
    restarted.join().unwrap();
    let mut session = dovecot.session(Security::Implicit);
    assert_eq!(session.select("INBOX").unwrap().exists, 1);
    session.logout();
}

/// The OAuth2 token service, stopped on drop.
struct TokenService(Child, u16);

impl TokenService {
    fn start(state: &std::path::Path) -> TokenService {
        let mut child = Command::new("python3")
            .args([TOKEN_SERVICE, "--port", "0", "--state"])
            .arg(state)
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .spawn()
            .unwrap();
        let mut ready = String::new();
        BufReader::new(child.stdout.as_mut().unwrap()).read_line(&mut ready).unwrap();
        let port = ready.trim().rsplit(':').next().and_then(|port| port.parse().ok());
        let Some(port) = port else { panic!("token service: {ready:?}") };
        TokenService(child, port)
    }

    fn admin(&self, what: &str, form: &str) -> serde_json::Value {
        let url = format!("http://127.0.0.1:{}/admin/{what}", self.1);
        let output = Command::new("curl").args(["-sf", "-d", form, &url]).output().unwrap();
        assert!(output.status.success(), "curl {url}");
        serde_json::from_slice(&output.stdout).unwrap()
    }
}

impl Drop for TokenService {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

#[test]
fn xoauth2_and_oauthbearer_log_in_with_a_live_token_only() {
    if !available() {
        return;
    }
    let state = tempfile::tempdir().unwrap();
    let tokens = TokenService::start(state.path());
    let url = format!("http://127.0.0.1:{}/introspect", tokens.1);
    let dovecot = Dovecot::launch(Some(&url)).unwrap();
    let user = "alice@example.org";
    let issued = tokens.admin("issue", &format!("username={user}"));
    let token = issued["access_token"].as_str().unwrap().to_string();
    let logins = |token: &str| {
        [
            (Security::Implicit, Login::XOAuth2 { user: user.into(), token: Password::new(token) }),
            (Security::StartTls, Login::OAuthBearer { user: user.into(), token: Password::new(token) }),
        ]
    };
    for (security, login) in logins(&token) {
        let mut session = Session::connect(&dovecot.endpoint(security)).unwrap();
        session.login(&login).unwrap();
        session.select("INBOX").unwrap();
        session.logout();
    }
    assert_eq!(dovecot.logins(), [format!("{user} XOAUTH2 TLS"), format!("{user} OAUTHBEARER TLS")]);

    let revoked = tokens.admin("revoke", &format!("username={user}"));
    assert_eq!(revoked["revoked_access_tokens"], 1);
    for ((security, login), status) in
        logins(&token).into_iter().zip(["(status 401)", "(status invalid_token)"])
    {
        let mut session = Session::connect(&dovecot.endpoint(security)).unwrap();
        let e = session.login(&login).unwrap_err();
        let shown = format!("{e} {e:?} {login:?}");
        assert!(
            matches!(&e, ImapError::LoginRefused(text) if text.contains("[AUTHENTICATIONFAILED]") && text.ends_with(status)),
            "{e:?}"
        );
        assert!(!shown.contains(&token), "{shown}");
    }
    assert_eq!(dovecot.logins().len(), 2);
}
