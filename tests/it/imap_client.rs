//! The IMAP client against a real Dovecot (tests/interop/imap/dovecot.sh,
//! one instance per test): TLS both ways, awkward passwords, OAuth2 tokens,
//! the exact bytes of messages, flags, moves and deletes that touch only
//! the UIDs asked for, IDLE, kicks and restarts. What is expected comes
//! from Dovecot's side (doveadm through the harness), not from the client.

use std::io::Write;
use std::os::fd::AsFd;
use std::os::unix::net::UnixStream;
use std::process::Command;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::Arc;
use std::thread;
use std::time::{Duration, Instant};

use chatwoot_ingress::config::Password;
use chatwoot_ingress::imap::{Endpoint, ImapError, Login, Security, Session, Woken};
use common::imap::{Dovecot as Harness, TokenService};

use crate::common;

const ALICE: &str = "alice";
const ALICE_PASSWORD: &str = "alice-pw";

/// A Dovecot of our own with the user alice, stopped on drop.
struct Dovecot(Harness);

impl Dovecot {
    /// A running instance with the user alice.
    fn start() -> Dovecot {
        Dovecot::launch(None)
    }

    fn launch(introspection: Option<&str>) -> Dovecot {
        common::require("root (the Dovecot harness)", || {
            Command::new("id").arg("-u").output().is_ok_and(|o| o.stdout == b"0\n")
        });
        let harness = Harness::start(introspection);
        harness.user(ALICE, ALICE_PASSWORD);
        Dovecot(harness)
    }

    /// `SUBCOMMAND WORKDIR ARGS...` of the harness; its output.
    fn cmd(&self, command: &str, args: &[&str]) -> String {
        self.0.cmd(command, args)
    }

    fn append(&self, folder: &str, message: &[u8]) -> u32 {
        self.0.append(ALICE, folder, message)
    }

    fn uids(&self, folder: &str) -> String {
        self.cmd("uids", &[ALICE, folder])
    }

    fn body(&self, folder: &str, uid: u32) -> Vec<u8> {
        self.0.body(ALICE, folder, uid)
    }

    fn folders(&self) -> Vec<String> {
        self.0.folders(ALICE)
    }

    /// `logins`: "USER MECHANISM TLS|plain" per successful login.
    fn logins(&self) -> Vec<String> {
        self.0.logins()
    }

    fn endpoint(&self, security: Security) -> Endpoint {
        Endpoint {
            host: "localhost".into(),
            port: if security == Security::Implicit { self.0.tls_port } else { self.0.plain_port },
            security,
            ca_file: Some(self.0.ca()),
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
#[ignore = "needs Dovecot"]
fn tls_implicit_and_starttls_are_verified_against_the_ca_file() {
    let dovecot = Dovecot::start();
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
#[ignore = "needs Dovecot"]
fn awkward_passwords_log_in_and_wrong_ones_are_refused_without_showing_them() {
    let dovecot = Dovecot::start();
    let awkward = "p\"a\\ss wörd {3}";
    dovecot.0.user("bob", awkward);
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
    assert!(
        matches!(&e, ImapError::LoginRefused { code: Some(code), .. } if code == "AUTHENTICATIONFAILED"),
        "{e:?}"
    );
    assert!(!shown.contains("pässword") && !shown.contains("wr\"ong"), "{shown}");
    // The session is still there for another try.
    session.login(&password("bob", awkward)).unwrap();
    assert_eq!(dovecot.logins(), ["bob PLAIN TLS", "bob PLAIN TLS", "bob PLAIN TLS"]);
}

#[test]
#[ignore = "needs Dovecot"]
fn fetched_bodies_are_the_exact_bytes_dovecot_serves() {
    let dovecot = Dovecot::start();
    let messages = [
        message("one", 0),
        b"Subject: LF only\n\nline\nline\n".to_vec(),
        // Several TLS records, several of our reads.
        message("large", 300_000),
    ];
    for message in &messages {
        dovecot.append("INBOX", message);
    }
    let status = dovecot.cmd("status", &[ALICE, "INBOX"]);
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
    let fetched: Vec<_> = [1, 2, 3]
        .into_iter()
        .zip(&expected)
        .map(|(uid, body)| session.fetch_one(uid, body.len() as u64).unwrap().expect("there"))
        .collect();
    assert_eq!(session.fetch_one(4, 100).unwrap(), None, "no such message");
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
#[ignore = "needs Dovecot"]
fn flags_moves_and_deletes_touch_only_the_uids_asked_for() {
    let dovecot = Dovecot::start();
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
    session.uid_move(&[2], "Archive").unwrap();
    assert_eq!(dovecot.uids("INBOX"), "1 \\Seen\n3\n4\n");
    assert_eq!(dovecot.uids("Archive"), "1\n");
    let e = session.uid_move(&[3], "Missing").unwrap_err();
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
#[ignore = "needs Dovecot"]
fn non_ascii_folder_names_round_trip() {
    let dovecot = Dovecot::start();
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
#[ignore = "needs Dovecot"]
fn idle_wakes_on_new_mail_stops_on_request_and_times_out() {
    let dovecot = Dovecot::start();
    let dovecot = Arc::new(dovecot);
    let mut session = dovecot.session(Security::Implicit);
    session.select("INBOX").unwrap();

    let appender = dovecot.clone();
    let appended = thread::spawn(move || {
        thread::sleep(Duration::from_millis(300));
        appender.append("INBOX", &message("idle", 0));
        Instant::now()
    });
    let woken = session.idle(Instant::now() + Duration::from_secs(20), &|| false, None).unwrap();
    let late = appended.join().unwrap().elapsed();
    assert_eq!(woken, Woken::NewMail);
    assert!(late < Duration::from_secs(2), "EXISTS {late:?} after the append");
    assert_eq!(session.uid_search("UID 1:*").unwrap(), [1]);

    // Stopped through a wake descriptor, as watch does: asked only when
    // woken, not every 250 ms (an idle watcher costs no CPU).
    let stop = Arc::new(AtomicBool::new(false));
    let flag = stop.clone();
    let (wake, waker) = UnixStream::pair().unwrap();
    let stopper = thread::spawn(move || {
        thread::sleep(Duration::from_millis(1500));
        flag.store(true, Ordering::SeqCst);
        (&waker).write_all(b"!").unwrap();
        Instant::now()
    });
    let asked = AtomicUsize::new(0);
    let asking = || {
        asked.fetch_add(1, Ordering::SeqCst);
        stop.load(Ordering::SeqCst)
    };
    let woken = session.idle(Instant::now() + Duration::from_secs(20), &asking, Some(wake.as_fd())).unwrap();
    let late = stopper.join().unwrap().elapsed();
    assert_eq!(woken, Woken::Stopped);
    assert!(late < Duration::from_millis(500), "stopped {late:?} after the request");
    let asked = asked.load(Ordering::SeqCst);
    assert!(asked <= 3, "asked {asked} times in 1.5 s");
    assert_eq!(session.select("INBOX").unwrap().exists, 1, "the session is still usable");

    let started = Instant::now();
    assert_eq!(session.idle(started + Duration::from_secs(1), &|| false, None).unwrap(), Woken::Timeout);
    assert!(started.elapsed() < Duration::from_secs(2));

    // Polling instead of IDLE.
    assert!(!session.noop().unwrap());
    dovecot.append("INBOX", &message("poll", 0));
    assert!(session.noop().unwrap());
    session.logout();
}

#[test]
#[ignore = "needs Dovecot"]
fn a_kick_during_idle_is_lost() {
    let dovecot = Dovecot::start();
    let dovecot = Arc::new(dovecot);
    let mut session = dovecot.session(Security::StartTls);
    session.select("INBOX").unwrap();
    let kicker = dovecot.clone();
    let kicked = thread::spawn(move || {
        thread::sleep(Duration::from_millis(500));
        kicker.0.kick(ALICE);
    });
    let started = Instant::now();
    let e = session.idle(Instant::now() + Duration::from_secs(20), &|| false, None).unwrap_err();
    kicked.join().unwrap();
    assert!(matches!(e, ImapError::Lost(_)), "{e:?}");
    assert!(started.elapsed() < Duration::from_secs(5));
}

#[test]
#[ignore = "needs Dovecot"]
fn a_restart_during_idle_is_lost_and_a_fresh_connect_works() {
    let dovecot = Dovecot::start();
    let dovecot = Arc::new(dovecot);
    dovecot.append("INBOX", &message("before", 0));
    let mut session = dovecot.session(Security::Implicit);
    session.select("INBOX").unwrap();
    let restarter = dovecot.clone();
    let restarted = thread::spawn(move || {
        thread::sleep(Duration::from_millis(300));
        restarter.0.restart();
    });
    let e = session.idle(Instant::now() + Duration::from_secs(20), &|| false, None).unwrap_err();
    assert!(matches!(e, ImapError::Lost(_)), "{e:?}");
    restarted.join().unwrap();
    let mut session = dovecot.session(Security::Implicit);
    assert_eq!(session.select("INBOX").unwrap().exists, 1);
    session.logout();
}

#[test]
#[ignore = "needs Dovecot"]
fn xoauth2_and_oauthbearer_log_in_with_a_live_token_only() {
    let tokens = TokenService::start(&serde_json::json!({}));
    let dovecot = Dovecot::launch(Some(&tokens.introspection_url()));
    let user = "alice@example.org";
    let issued = tokens.admin("issue", &[("username", user)]);
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

    let revoked = tokens.admin("revoke", &[("username", user)]);
    assert_eq!(revoked["revoked_access_tokens"], 1);
    for ((security, login), status) in
        logins(&token).into_iter().zip(["(status 401)", "(status invalid_token)"])
    {
        let mut session = Session::connect(&dovecot.endpoint(security)).unwrap();
        let e = session.login(&login).unwrap_err();
        let shown = format!("{e} {e:?} {login:?}");
        assert!(
            matches!(&e, ImapError::LoginRefused { code: Some(code), text } if code == "AUTHENTICATIONFAILED" && text.ends_with(status)),
            "{e:?}"
        );
        assert!(!shown.contains(&token), "{shown}");
    }
    assert_eq!(dovecot.logins().len(), 2);
}
