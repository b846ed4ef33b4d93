//! Sessions against a scripted server on loopback (cleartext or TLS): what
//! the client sends, byte for byte, and what it makes of the answers,
//! misbehaviour and badly timed bytes included.

use std::io::{self, Read, Write};
use std::net::{TcpListener, TcpStream};
use std::os::fd::AsFd;
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::thread;
use std::time::{Duration, Instant};

use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer};
use rustls::{ServerConfig, ServerConnection, StreamOwned};

use super::*;

const GREETING: &str =
    "* OK [CAPABILITY IMAP4rev1 IDLE MOVE UIDPLUS SASL-IR AUTH=PLAIN AUTH=XOAUTH2 AUTH=OAUTHBEARER] ready\r\n";
const CERT: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/src/imap/testdata/cert.pem");
const KEY: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/src/imap/testdata/key.pem");

enum Step {
    /// Send these bytes.
    Send(Vec<u8>),
    /// Send these bytes in two pieces with a pause between; over TLS the
    /// record that carries them is cut in the middle instead.
    Split(Vec<u8>, usize, Duration),
    /// The client must send exactly these bytes next.
    Expect(Vec<u8>),
    Pause(Duration),
    /// Switch to TLS (after STARTTLS's OK).
    StartTls,
    Close,
    /// The client must close the connection without sending more.
    ExpectClosed,
}
use Step::*;

fn s(text: &str) -> Step {
    Send(text.as_bytes().to_vec())
}

fn c(text: &str) -> Step {
    Expect(text.as_bytes().to_vec())
}

fn ms(n: u64) -> Duration {
    Duration::from_millis(n)
}

enum Peer {
    Plain(TcpStream),
    Tls(Box<StreamOwned<ServerConnection, TcpStream>>),
}

fn server_config() -> Arc<ServerConfig> {
    let certs = CertificateDer::pem_file_iter(CERT).unwrap().collect::<Result<Vec<_>, _>>().unwrap();
    let key = PrivateKeyDer::from_pem_file(KEY).unwrap();
    let config = ServerConfig::builder_with_provider(Arc::new(rustls::crypto::ring::default_provider()))
        .with_safe_default_protocol_versions()
        .unwrap()
        .with_no_client_auth()
        .with_single_cert(certs, key)
        .unwrap();
    Arc::new(config)
}

impl Peer {
    fn tls(socket: TcpStream) -> io::Result<Peer> {
        let mut tls = StreamOwned::new(ServerConnection::new(server_config()).unwrap(), socket);
        while tls.conn.is_handshaking() {
            tls.conn.complete_io(&mut tls.sock)?;
        }
        Ok(Peer::Tls(Box::new(tls)))
    }

    fn stream(&mut self) -> &mut dyn ReadWrite {
        match self {
            Peer::Plain(socket) => socket,
            Peer::Tls(tls) => tls.as_mut(),
        }
    }

    fn split(&mut self, bytes: &[u8], at: usize, pause: Duration) -> io::Result<()> {
        match self {
            Peer::Plain(socket) => {
                socket.write_all(&bytes[..at])?;
                thread::sleep(pause);
                socket.write_all(&bytes[at..])
            }
            Peer::Tls(tls) => {
                tls.conn.writer().write_all(bytes)?;
                let mut records = Vec::new();
                while tls.conn.wants_write() {
                    tls.conn.write_tls(&mut records)?;
                }
                let half = records.len() / 2;
                tls.sock.write_all(&records[..half])?;
                thread::sleep(pause);
                tls.sock.write_all(&records[half..])
            }
        }
    }
}

trait ReadWrite: Read + Write {}
impl<T: Read + Write> ReadWrite for T {}

struct Fake {
    port: u16,
    done: Option<thread::JoinHandle<Result<(), String>>>,
}

impl Fake {
    /// A server that plays `script` to the first client, over TLS if `tls`.
    fn start(tls: bool, script: Vec<Step>) -> Fake {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let port = listener.local_addr().unwrap().port();
        let done = thread::spawn(move || {
            let (socket, _) = listener.accept().map_err(|e| e.to_string())?;
            socket.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
            let mut peer =
                if tls { Peer::tls(socket).map_err(|e| e.to_string())? } else { Peer::Plain(socket) };
            for (i, step) in script.into_iter().enumerate() {
                play(&mut peer, step).map_err(|e| format!("step {i}: {e}"))?;
            }
            Ok(())
        });
        Fake { port, done: Some(done) }
    }

    fn endpoint(&self, security: Security) -> Endpoint {
        Endpoint {
            host: "127.0.0.1".into(),
            port: self.port,
            security,
            ca_file: Some(PathBuf::from(CERT)),
            timeout: Duration::from_secs(2),
        }
    }

    /// The script ran to its end.
    fn played(mut self) {
        if let Some(done) = self.done.take() {
            done.join().unwrap().unwrap();
        }
    }
}

fn play(peer: &mut Peer, step: Step) -> Result<(), String> {
    let io = |e: io::Error| e.to_string();
    match step {
        Send(bytes) => {
            let stream = peer.stream();
            stream.write_all(&bytes).and_then(|()| stream.flush()).map_err(io)
        }
        Split(bytes, at, pause) => peer.split(&bytes, at, pause).map_err(io),
        Expect(want) => {
            let mut got = vec![0; want.len()];
            match peer.stream().read_exact(&mut got) {
                Ok(()) if got == want => Ok(()),
                Ok(()) => Err(format!(
                    "expected {:?}, got {:?}",
                    String::from_utf8_lossy(&want),
                    String::from_utf8_lossy(&got)
                )),
                Err(e) => Err(format!("expected {:?}: {e}", String::from_utf8_lossy(&want))),
            }
        }
        Pause(pause) => {
            thread::sleep(pause);
            Ok(())
        }
        StartTls => {
            let Peer::Plain(socket) = peer else { return Err("already TLS".into()) };
            *peer = Peer::tls(socket.try_clone().map_err(io)?).map_err(io)?;
            Ok(())
        }
        Close => {
            let socket = match peer {
                Peer::Plain(socket) => socket,
                Peer::Tls(tls) => &mut tls.sock,
            };
            socket.shutdown(std::net::Shutdown::Both).map_err(io)
        }
        ExpectClosed => {
            let mut rest = Vec::new();
            match peer.stream().read_to_end(&mut rest) {
                Ok(_) if rest.is_empty() => Ok(()),
                Ok(_) => Err(format!("the client sent more: {:?}", String::from_utf8_lossy(&rest))),
                Err(e) if e.kind() == io::ErrorKind::ConnectionReset => Ok(()),
                Err(e) if e.kind() == io::ErrorKind::UnexpectedEof && rest.is_empty() => Ok(()),
                Err(e) => Err(e.to_string()),
            }
        }
    }
}

/// A session with `script` after the usual greeting.
fn greeted(tls: bool, mut script: Vec<Step>) -> (Session, Fake) {
    script.insert(0, s(GREETING));
    let fake = Fake::start(tls, script);
    let security = if tls { Security::Implicit } else { Security::None };
    let session = Session::connect(&fake.endpoint(security)).unwrap();
    (session, fake)
}

fn password(user: &str, password: &str) -> Login {
    Login::Password { user: user.into(), password: Password::new(password) }
}

#[test]
fn the_greeting_s_capabilities_are_used_or_else_asked_for() {
    let (session, fake) = greeted(false, vec![]);
    assert_eq!(
        session.capabilities(),
        &Capabilities {
            idle: true,
            move_: true,
            uidplus: true,
            auth: vec!["PLAIN".into(), "XOAUTH2".into(), "OAUTHBEARER".into()],
            login_disabled: false,
            starttls: false,
            sasl_ir: true,
        }
    );
    fake.played();

    let fake = Fake::start(
        false,
        vec![
            s("* OK ready\r\n"),
            c("A0001 CAPABILITY\r\n"),
            s("* CAPABILITY IMAP4rev1 LITERAL+ AUTH=plain LOGINDISABLED STARTTLS\r\nA0001 OK done\r\n"),
        ],
    );
    let session = Session::connect(&fake.endpoint(Security::None)).unwrap();
    let capabilities = session.capabilities();
    assert!(capabilities.login_disabled && capabilities.starttls && !capabilities.idle);
    assert_eq!(capabilities.auth, ["PLAIN"]);
    fake.played();
}

#[test]
fn a_bye_greeting_is_refused_and_a_non_imap_server_is_a_protocol_error() {
    let fake = Fake::start(false, vec![s("* BYE Too many connections\r\n"), ExpectClosed]);
    let e = Session::connect(&fake.endpoint(Security::None)).unwrap_err();
    assert!(matches!(&e, ImapError::Refused(text) if text.ends_with("Too many connections")), "{e:?}");
    fake.played();

    let fake = Fake::start(false, vec![s("HTTP/1.1 400 Bad Request\r\n"), ExpectClosed]);
    let e = Session::connect(&fake.endpoint(Security::None)).unwrap_err();
    assert!(matches!(e, ImapError::Protocol(_)), "{e:?}");
    fake.played();
}

#[test]
fn login_quotes_the_password_or_sends_a_literal() {
    let (mut session, fake) = greeted(
        false,
        vec![
            c("A0001 LOGIN \"u\\\\ser\" \"p\\\"a\\\\ss word\"\r\n"),
            s("A0001 OK [CAPABILITY IMAP4rev1 IDLE] Logged in\r\n"),
        ],
    );
    session.login(&password("u\\ser", "p\"a\\ss word")).unwrap();
    assert_eq!(session.capabilities(), &Capabilities { idle: true, ..Capabilities::default() });
    fake.played();

    // 8-bit: a synchronizing literal, sent after the server's go-ahead.
    let (mut session, fake) = greeted(
        false,
        vec![
            c("A0001 LOGIN \"user\" {9}\r\n"),
            s("+ go ahead\r\n"),
            c("pässword\r\n"),
            s("A0001 OK Logged in\r\n"),
            c("A0002 CAPABILITY\r\n"),
            s("* CAPABILITY IMAP4rev1 MOVE\r\nA0002 OK\r\n"),
        ],
    );
    session.login(&password("user", "pässword")).unwrap();
    assert!(session.capabilities().move_);
    fake.played();

    // LITERAL+: no waiting.
    let fake = Fake::start(
        false,
        vec![
            s("* OK [CAPABILITY IMAP4rev1 LITERAL+] hi\r\n"),
            c("A0001 LOGIN \"user\" {9+}\r\npässword\r\n"),
            s("A0001 OK [CAPABILITY IMAP4rev1] Logged in\r\n"),
        ],
    );
    let mut session = Session::connect(&fake.endpoint(Security::None)).unwrap();
    session.login(&password("user", "pässword")).unwrap();
    fake.played();
}

#[test]
fn a_refused_login_never_shows_the_password() {
    let (mut session, fake) = greeted(
        false,
        vec![
            c("A0001 LOGIN \"user\" \"s3cret!\"\r\n"),
            s("A0001 NO [AUTHENTICATIONFAILED] Authentication failed for s3cret!\r\n"),
        ],
    );
    let e = session.login(&password("user", "s3cret!")).unwrap_err();
    let shown = format!("{e} {e:?} {session:?}");
    assert!(matches!(e, ImapError::LoginRefused { .. }), "{e:?}");
    assert!(shown.contains("[AUTHENTICATIONFAILED] Authentication failed for ****"), "{shown}");
    assert!(!shown.contains("s3cret"), "{shown}");
    assert!(!format!("{:?}", password("user", "s3cret!")).contains("s3cret"));
    fake.played();
}

#[test]
fn logindisabled_means_authenticate_plain_or_no_password_at_all() {
    let fake = Fake::start(
        false,
        vec![
            s("* OK [CAPABILITY IMAP4rev1 SASL-IR LOGINDISABLED AUTH=PLAIN] hi\r\n"),
            c("A0001 AUTHENTICATE PLAIN AHVzZXIAcHc=\r\n"),
            s("A0001 OK [CAPABILITY IMAP4rev1] Logged in\r\n"),
        ],
    );
    Session::connect(&fake.endpoint(Security::None)).unwrap().login(&password("user", "pw")).unwrap();
    fake.played();

    let fake = Fake::start(false, vec![s("* OK [CAPABILITY IMAP4rev1 LOGINDISABLED] hi\r\n"), ExpectClosed]);
    let mut session = Session::connect(&fake.endpoint(Security::None)).unwrap();
    let e = session.login(&password("user", "pw")).unwrap_err();
    assert!(matches!(&e, ImapError::LoginRefused { text, .. } if text.contains("LOGINDISABLED")), "{e:?}");
    drop(session);
    fake.played();
}

#[test]
fn an_oauth_failure_challenge_is_answered_and_its_status_reported() {
    let token = "tok-123";
    let fake = Fake::start(
        false,
        vec![
            s("* OK [CAPABILITY IMAP4rev1 AUTH=XOAUTH2] hi\r\n"),
            c("A0001 AUTHENTICATE XOAUTH2\r\n"),
            s("+ \r\n"),
            c("dXNlcj1hbGljZUBleGFtcGxlLm9yZwFhdXRoPUJlYXJlciB0b2stMTIzAQE=\r\n"),
            s("+ eyJzdGF0dXMiOiI0MDEiLCJzY2hlbWVzIjoiYmVhcmVyIiwic2NvcGUiOiJtYWlsIn0=\r\n"),
            c("\r\n"),
            s("A0001 NO [AUTHENTICATIONFAILED] Authentication failed.\r\n"),
        ],
    );
    let mut session = Session::connect(&fake.endpoint(Security::None)).unwrap();
    let login = Login::XOAuth2 { user: "alice@example.org".into(), token: Password::new(token) };
    let e = session.login(&login).unwrap_err();
    let shown = format!("{e} {e:?} {login:?}");
    assert!(
        matches!(&e, ImapError::LoginRefused { code: Some(code), text }
            if code == "AUTHENTICATIONFAILED" && text == "Authentication failed. (status 401)"),
        "{e:?}"
    );
    assert!(!shown.contains(token), "{shown}");
    fake.played();
}

#[test]
fn oauthbearer_is_rfc_7628_in_the_command_with_sasl_ir() {
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let port = listener.local_addr().unwrap().port();
    drop(listener);
    // The GS2 header escapes ',' and '=' in the user name (RFC 5801).
    let message =
        format!("n,a=a=3Db=2Cc@example.org,\x01host=127.0.0.1\x01port={port}\x01auth=Bearer tok\x01\x01");
    let encoded = base64::Engine::encode(&base64::engine::general_purpose::STANDARD, message.as_bytes());
    let fake = Fake::start_on(
        port,
        vec![
            s(GREETING),
            c(&format!("A0001 AUTHENTICATE OAUTHBEARER {encoded}\r\n")),
            s("A0001 OK [CAPABILITY IMAP4rev1] Logged in\r\n"),
        ],
    );
    let mut session = Session::connect(&fake.endpoint(Security::None)).unwrap();
    let login = Login::OAuthBearer { user: "a=b,c@example.org".into(), token: Password::new("tok") };
    session.login(&login).unwrap();
    fake.played();
}

impl Fake {
    /// A cleartext server on a given port.
    fn start_on(port: u16, script: Vec<Step>) -> Fake {
        let listener = TcpListener::bind(("127.0.0.1", port)).unwrap();
        let done = thread::spawn(move || {
            let (socket, _) = listener.accept().map_err(|e| e.to_string())?;
            socket.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
            let mut peer = Peer::Plain(socket);
            for (i, step) in script.into_iter().enumerate() {
                play(&mut peer, step).map_err(|e| format!("step {i}: {e}"))?;
            }
            Ok(())
        });
        Fake { port, done: Some(done) }
    }
}

#[test]
fn select_reads_the_folder_s_state_and_names_go_out_in_modified_utf7() {
    let (mut session, fake) = greeted(
        false,
        vec![
            c("A0001 SELECT \"&AMk-l&AOk-ments envoy&AOk-s\"\r\n"),
            s("* FLAGS (\\Answered \\Flagged \\Deleted \\Seen \\Draft)\r\n"),
            s("* OK [PERMANENTFLAGS (\\Answered \\Flagged \\Deleted \\Seen \\Draft \\*)] Flags permitted.\r\n"),
            s("* 3 EXISTS\r\n* 1 RECENT\r\n* OK [UNSEEN 2] First unseen.\r\n"),
            s("* OK [UIDVALIDITY 1700000000] UIDs valid\r\n* OK [UIDNEXT 42] Predicted next UID\r\n"),
            s("A0001 OK [READ-WRITE] Select completed.\r\n"),
            c("A0002 SELECT \"Nope\"\r\n"),
            s("A0002 NO [NONEXISTENT] Mailbox doesn't exist: Nope\r\n"),
            c("A0003 SELECT \"a \\\"b\\\"\"\r\n"),
            s("A0003 NO Mailbox doesn't exist\r\n"),
        ],
    );
    let selected = session.select("Éléments envoyés").unwrap();
    assert_eq!(selected, Selected { uidvalidity: 1_700_000_000, uidnext: Some(42), exists: 3 });
    let e = session.select("Nope").unwrap_err();
    assert!(
        matches!(&e, ImapError::No { command, code: Some(code), text }
            if command == "SELECT" && code == "NONEXISTENT" && text == "Mailbox doesn't exist: Nope"),
        "{e:?}"
    );
    assert_eq!(e.to_string(), "the IMAP server refused SELECT: [NONEXISTENT] Mailbox doesn't exist: Nope");
    let e = session.select("a \"b\"").unwrap_err();
    assert!(matches!(&e, ImapError::No { code: None, .. }), "{e:?}");
    fake.played();
}

#[test]
fn fetch_one_takes_the_exact_bytes_however_they_arrive() {
    let first: &[u8] = b"Subject: a\r\n\r\n) {5}\r\n* 2 EXISTS\r\nA0001 OK trap\r\n\x00\xff\xe9";
    let head =
        format!("* 1 FETCH (UID 7 FLAGS (\\Seen) RFC822.SIZE {} BODY[] {{{}}}\r\n", first.len(), first.len());
    let one = [head.as_bytes(), first, b")\r\n"].concat();
    let (mut session, fake) = greeted(
        false,
        vec![
            c("A0001 UID FETCH 7 (UID FLAGS RFC822.SIZE BODY.PEEK[])\r\n"),
            // Another client's flag change comes first; then the message,
            // cut inside the literal and just before its end.
            s("* 3 FETCH (FLAGS (\\Seen))\r\n"),
            Split(one[..head.len() + 10].to_vec(), head.len() - 3, ms(50)),
            Split(one[head.len() + 10..].to_vec(), one.len() - head.len() - 13, ms(50)),
            s("A0001 OK Fetch completed.\r\n"),
            // A server that answers OK and sends nothing for it.
            c("A0002 UID FETCH 9 (UID FLAGS RFC822.SIZE BODY.PEEK[])\r\n"),
            s("A0002 OK Fetch completed.\r\n"),
        ],
    );
    let got = session.fetch_one(7, first.len() as u64).unwrap();
    assert_eq!(
        got,
        Some(Fetched {
            uid: 7,
            size: first.len() as u64,
            flags: vec!["\\Seen".into()],
            body: Some(first.to_vec())
        })
    );
    assert_eq!(session.fetch_one(9, 100).unwrap(), None);
    fake.played();
}

#[test]
fn a_literal_far_beyond_the_announced_size_is_refused_before_it_is_read() {
    let (mut session, fake) = greeted(
        false,
        vec![
            c("A0001 UID FETCH 1 (UID FLAGS RFC822.SIZE BODY.PEEK[])\r\n"),
            s("* 1 FETCH (UID 1 BODY[] {1073741824}\r\n"),
            Send(vec![b'x'; 1000]),
            Pause(ms(200)),
        ],
    );
    let started = Instant::now();
    let e = session.fetch_one(1, 1000).unwrap_err();
    assert!(matches!(&e, ImapError::Protocol(text) if text.contains("66536 bytes")), "{e:?}");
    assert!(started.elapsed() < ms(150), "refused when announced, not after reading");
    fake.played();
}

#[test]
fn a_server_that_talks_without_ever_answering_times_out() {
    let mut steps = vec![c("A0001 NOOP\r\n")];
    for _ in 0..40 {
        steps.push(s("* OK still here\r\n"));
        steps.push(Pause(ms(100)));
    }
    let (mut session, fake) = greeted(false, steps);
    session.limit = Duration::from_secs(1);
    let started = Instant::now();
    let e = session.noop().unwrap_err();
    assert!(matches!(&e, ImapError::Timeout(text) if text.contains("did not finish")), "{e:?}");
    assert!(started.elapsed() < Duration::from_secs(3), "{:?}", started.elapsed());
    drop(session);
    drop(fake);
}

#[test]
fn meta_parts_flags_and_searches() {
    let (mut session, fake) = greeted(
        false,
        vec![
            c("A0001 UID SEARCH UID 5:* NOT DELETED\r\n"),
            s("* SEARCH 9 5\r\n* SEARCH 7\r\nA0001 OK Search completed\r\n"),
            c("A0002 UID FETCH 1:3,5,7:8 (UID FLAGS RFC822.SIZE)\r\n"),
            s("* 1 FETCH (UID 5 RFC822.SIZE 100 FLAGS ())\r\n* 2 FETCH (UID 7 FLAGS (\\Seen))\r\n"),
            s("* 2 FETCH (UID 7 RFC822.SIZE 2000)\r\nA0002 OK\r\n"),
            c("A0003 UID FETCH 7 (UID BODY.PEEK[]<1000.500>)\r\n"),
            s("* 2 FETCH (UID 7 BODY[]<1000> {3}\r\nabc)\r\nA0003 OK\r\n"),
            c("A0004 UID FETCH 7 (UID BODY.PEEK[]<2000.500>)\r\n"),
            s("* 2 FETCH (UID 7 BODY[]<2000> \"\")\r\nA0004 OK\r\n"),
            c("A0005 UID FETCH 8 (UID BODY.PEEK[]<0.10>)\r\n"),
            s("A0005 OK\r\n"),
            c("A0006 UID STORE 5,7 +FLAGS.SILENT (\\Seen $Forwarded)\r\n"),
            s("A0006 OK\r\n"),
            c("A0007 STATUS \"INBOX\" (MESSAGES UNSEEN)\r\n"),
            s("* STATUS INBOX (MESSAGES 3 UNSEEN 1)\r\nA0007 OK\r\n"),
        ],
    );
    assert_eq!(session.uid_search("UID 5:* NOT DELETED").unwrap(), [5, 7, 9]);
    let meta = session.fetch_meta(&[8, 7, 5, 3, 2, 1]).unwrap();
    assert_eq!(
        meta,
        [
            Fetched { uid: 5, size: 100, flags: vec![], body: None },
            Fetched { uid: 7, size: 2000, flags: vec!["\\Seen".into()], body: None },
        ]
    );
    assert_eq!(session.fetch_part(7, 1000, 500).unwrap(), b"abc");
    assert_eq!(session.fetch_part(7, 2000, 500).unwrap(), b"");
    assert!(matches!(session.fetch_part(8, 0, 10), Err(ImapError::No { .. })));
    session.add_flags(&[7, 5], &["\\Seen", "$Forwarded"]).unwrap();
    assert!(matches!(session.add_flags(&[7], &["bad flag"]), Err(ImapError::Protocol(_))));
    assert!(matches!(session.uid_search("ALL\r\nA9 LOGOUT"), Err(ImapError::Protocol(_))));
    assert_eq!(session.status("INBOX").unwrap(), (3, 1));
    fake.played();
}

#[test]
fn new_mail_is_noticed_whatever_command_it_comes_with() {
    let (mut session, fake) = greeted(
        false,
        vec![
            c("A0001 SELECT \"INBOX\"\r\n"),
            s("* 2 EXISTS\r\n* OK [UIDVALIDITY 5] x\r\nA0001 OK\r\n"),
            c("A0002 NOOP\r\n"),
            s("* OK [ALERT] Maintenance at noon\r\nA0002 OK\r\n"),
            c("A0003 UID SEARCH ALL\r\n"),
            s("* SEARCH 1 2\r\n* 3 EXISTS\r\nA0003 OK\r\n"),
            c("A0004 NOOP\r\n"),
            s("A0004 OK\r\n"),
            c("A0005 NOOP\r\n"),
            s("* 1 EXPUNGE\r\n* 3 EXISTS\r\nA0005 OK\r\n"),
            c("A0006 NOOP\r\n"),
            s("* 1 EXPUNGE\r\n* 2 EXISTS\r\nA0006 OK\r\n"),
        ],
    );
    assert_eq!(session.select("INBOX").unwrap().exists, 2);
    assert!(!session.noop().unwrap(), "SELECT's EXISTS is not news");
    assert_eq!(session.take_alerts(), ["Maintenance at noon"]);
    session.uid_search("ALL").unwrap();
    assert!(session.noop().unwrap(), "the EXISTS after the search");
    assert!(session.noop().unwrap(), "expunged one, a new one came");
    assert!(!session.noop().unwrap(), "expunged one, no new one");
    fake.played();
}

#[test]
fn moving_without_move_expunges_exactly_those_uids_or_none() {
    let fake = Fake::start(
        false,
        vec![
            s("* OK [CAPABILITY IMAP4rev1 UIDPLUS] hi\r\n"),
            c("A0001 UID COPY 3:4 \"Done\"\r\n"),
            s("A0001 OK [COPYUID 9 3:4 1:2] Copied\r\n"),
            c("A0002 UID STORE 3:4 +FLAGS.SILENT (\\Deleted)\r\n"),
            s("A0002 OK\r\n"),
            c("A0003 UID EXPUNGE 3:4\r\n"),
            s("* 3 EXPUNGE\r\n* 3 EXPUNGE\r\nA0003 OK\r\n"),
        ],
    );
    let mut session = Session::connect(&fake.endpoint(Security::None)).unwrap();
    session.copy(&[4, 3], "Done").unwrap();
    session.delete(&[4, 3]).unwrap();
    fake.played();

    let fake = Fake::start(
        false,
        vec![
            s("* OK [CAPABILITY IMAP4rev1] hi\r\n"),
            c("A0001 UID COPY 3 \"Done\"\r\n"),
            s("A0001 OK\r\n"),
            c("A0002 UID STORE 3 +FLAGS.SILENT (\\Deleted)\r\n"),
            s("A0002 OK\r\n"),
            c("A0003 UID STORE 5 +FLAGS.SILENT (\\Deleted)\r\n"),
            s("A0003 OK\r\n"),
            ExpectClosed,
        ],
    );
    let mut session = Session::connect(&fake.endpoint(Security::None)).unwrap();
    session.copy(&[3], "Done").unwrap();
    session.delete(&[3]).unwrap();
    session.delete(&[5]).unwrap();
    drop(session);
    fake.played();

    let (mut session, fake) = greeted(
        false,
        vec![
            c("A0001 UID MOVE 3 \"Archive/2024\"\r\n"),
            s("A0001 NO [TRYCREATE] Mailbox doesn't exist: Archive/2024\r\n"),
            c("A0002 UID STORE 1 +FLAGS.SILENT (\\Deleted)\r\n"),
            s("A0002 OK\r\n"),
            c("A0003 UID EXPUNGE 1\r\n"),
            s("A0003 OK\r\n"),
        ],
    );
    let e = session.uid_move(&[3], "Archive/2024").unwrap_err();
    assert!(matches!(&e, ImapError::No { code: Some(code), .. } if code == "TRYCREATE"), "{e:?}");
    session.delete(&[1]).unwrap();
    fake.played();
}

#[test]
fn creating_an_existing_folder_is_no_error() {
    let (mut session, fake) = greeted(
        false,
        vec![
            c("A0001 CREATE \"Done\"\r\n"),
            s("A0001 OK Create completed\r\n"),
            c("A0002 CREATE \"INBOX\"\r\n"),
            s("A0002 NO [ALREADYEXISTS] Mailbox already exists\r\n"),
            c("A0003 CREATE \"Old\"\r\n"),
            s("A0003 NO Cannot create\r\n"),
            c("A0004 LIST \"\" \"Old\"\r\n"),
            s("* LIST (\\HasNoChildren) \"/\" Old\r\nA0004 OK\r\n"),
            c("A0005 CREATE \"x*\"\r\n"),
            s("A0005 NO Permission denied\r\n"),
            c("A0006 LIST \"\" \"x*\"\r\n"),
            s("* LIST () \"/\" xy\r\n* LIST (\\Noselect) \"/\" {2}\r\nx*\r\nA0006 OK\r\n"),
        ],
    );
    assert!(session.create("Done").unwrap());
    assert!(!session.create("INBOX").unwrap());
    assert!(!session.create("Old").unwrap());
    let e = session.create("x*").unwrap_err();
    assert!(matches!(&e, ImapError::No { text, .. } if text == "Permission denied"), "{e:?}");
    fake.played();
}

/// An IDLE that sees EXISTS arrive in two pieces across a pause longer
/// than its read timeout, ends with DONE, and leaves a usable session.
fn idle_wakes_on_a_split_exists(tls: bool) {
    let (mut session, fake) = greeted(
        tls,
        vec![
            c("A0001 IDLE\r\n"),
            s("+ idling\r\n"),
            Pause(ms(300)),
            s("* OK Still here\r\n* 1 EXPUNGE\r\n* 4 FETCH (FLAGS (\\Seen))\r\n"),
            Split(b"* 4 EXISTS\r\n".to_vec(), 5, ms(700)),
            c("DONE\r\n"),
            s("A0001 OK Idle completed.\r\n"),
            c("A0002 NOOP\r\n"),
            s("A0002 OK\r\n"),
        ],
    );
    let started = Instant::now();
    let woken = session.idle(started + Duration::from_secs(10), &|| false, None).unwrap();
    assert_eq!(woken, Woken::NewMail);
    assert!(started.elapsed() < Duration::from_secs(3), "{:?}", started.elapsed());
    assert!(!session.noop().unwrap(), "the EXISTS was reported by IDLE");
    fake.played();
}

#[test]
fn idle_wakes_on_exists_split_across_read_timeouts() {
    idle_wakes_on_a_split_exists(false);
}

#[test]
fn tls_records_split_across_read_timeouts_lose_nothing() {
    idle_wakes_on_a_split_exists(true);
}

#[test]
fn idle_stops_within_a_second_and_the_session_stays_usable() {
    let (mut session, fake) = greeted(
        false,
        vec![
            c("A0001 IDLE\r\n"),
            s("+ idling\r\n* 2 EXPUNGE\r\n"),
            c("DONE\r\n"),
            s("* 3 EXISTS\r\nA0001 OK Idle completed.\r\n"),
            c("A0002 NOOP\r\n"),
            s("A0002 OK\r\n"),
        ],
    );
    let stop = Arc::new(AtomicBool::new(false));
    let flag = stop.clone();
    let stopper = thread::spawn(move || {
        thread::sleep(ms(400));
        flag.store(true, Ordering::SeqCst);
        Instant::now()
    });
    let woken = session
        .idle(Instant::now() + Duration::from_secs(10), &|| stop.load(Ordering::SeqCst), None)
        .unwrap();
    let took = stopper.join().unwrap().elapsed();
    assert_eq!(woken, Woken::Stopped);
    assert!(took < Duration::from_secs(1), "{took:?}");
    // The EXISTS that came with DONE's answer is still news.
    assert!(session.noop().unwrap());
    fake.played();
}

#[test]
fn idle_with_a_wake_descriptor_sleeps_until_woken() {
    for tls in [false, true] {
        let (mut session, fake) = greeted(
            tls,
            vec![c("A0001 IDLE\r\n"), s("+ idling\r\n"), c("DONE\r\n"), s("A0001 OK Idle completed.\r\n")],
        );
        let (wake, waker) = std::os::unix::net::UnixStream::pair().unwrap();
        let stop = Arc::new(AtomicBool::new(false));
        let flag = stop.clone();
        let stopper = thread::spawn(move || {
            thread::sleep(ms(1500));
            flag.store(true, Ordering::SeqCst);
            (&waker).write_all(b"!").unwrap();
            Instant::now()
        });
        let asked = std::sync::atomic::AtomicUsize::new(0);
        let asking = || {
            asked.fetch_add(1, Ordering::SeqCst);
            stop.load(Ordering::SeqCst)
        };
        let woken =
            session.idle(Instant::now() + Duration::from_secs(10), &asking, Some(wake.as_fd())).unwrap();
        let late = stopper.join().unwrap().elapsed();
        assert_eq!(woken, Woken::Stopped);
        assert!(late < ms(300), "tls {tls}: stopped {late:?} after the request");
        // Before IDLE, while idling, once woken: not every 250 ms.
        let asked = asked.load(Ordering::SeqCst);
        assert!(asked <= 3, "tls {tls}: asked {asked} times in 1.5 s");
        fake.played();
    }
}

#[test]
fn idle_times_out_at_until_and_a_server_ended_idle_is_fine() {
    let (mut session, fake) = greeted(
        false,
        vec![
            c("A0001 IDLE\r\n"),
            s("+ idling\r\n"),
            c("DONE\r\n"),
            s("A0001 OK Idle completed.\r\n"),
            c("A0002 IDLE\r\n"),
            s("+ idling\r\n"),
            Pause(ms(200)),
            s("A0002 OK Idle timed out\r\n"),
            c("A0003 NOOP\r\n"),
            s("A0003 OK\r\n"),
        ],
    );
    let started = Instant::now();
    assert_eq!(session.idle(started + ms(600), &|| false, None).unwrap(), Woken::Timeout);
    let took = started.elapsed();
    assert!(took >= ms(600) && took < ms(1500), "{took:?}");
    assert_eq!(
        session.idle(Instant::now() + Duration::from_secs(10), &|| false, None).unwrap(),
        Woken::Timeout
    );
    session.noop().unwrap();
    fake.played();
}

#[test]
fn bye_or_silence_during_idle_is_lost() {
    let (mut session, fake) = greeted(
        false,
        vec![c("A0001 IDLE\r\n"), s("+ idling\r\n"), Pause(ms(200)), s("* BYE Server shutting down.\r\n")],
    );
    let e = session.idle(Instant::now() + Duration::from_secs(10), &|| false, None).unwrap_err();
    assert!(matches!(&e, ImapError::Lost(text) if text.ends_with("Server shutting down.")), "{e:?}");
    fake.played();

    let (mut session, fake) = greeted(false, vec![c("A0001 IDLE\r\n"), s("+ idling\r\n"), Pause(ms(2000))]);
    session.set_idle_silence(ms(600));
    let started = Instant::now();
    let e = session.idle(started + Duration::from_secs(10), &|| false, None).unwrap_err();
    assert!(matches!(e, ImapError::Lost(_)), "{e:?}");
    assert!(started.elapsed() < ms(1500), "{:?}", started.elapsed());
    fake.played();

    let (mut session, fake) = greeted(false, vec![c("A0001 IDLE\r\n"), s("+ idling\r\n"), Close]);
    let e = session.idle(Instant::now() + Duration::from_secs(10), &|| false, None).unwrap_err();
    assert!(matches!(e, ImapError::Lost(_)), "{e:?}");
    fake.played();
}

#[test]
fn a_server_that_stops_answering_mid_command_times_out() {
    let (mut session, fake) = greeted(
        false,
        vec![c("A0001 UID SEARCH ALL\r\n"), s("* SEARCH 1 2"), Pause(ms(3500)), s("\r\nA0001 OK\r\n")],
    );
    let started = Instant::now();
    let e = session.uid_search("ALL").unwrap_err();
    let took = started.elapsed();
    assert!(matches!(e, ImapError::Timeout(_)), "{e:?}");
    assert!(took >= Duration::from_secs(2) && took < ms(3000), "{took:?}");
    fake.played();
}

#[test]
fn overlong_lines_and_literals_are_refused_before_they_are_read() {
    let (mut session, fake) = greeted(
        false,
        vec![
            c("A0001 UID FETCH 1 (UID FLAGS RFC822.SIZE BODY.PEEK[])\r\n"),
            s("* 1 FETCH (BODY[] {2000000000}\r\n"),
        ],
    );
    let e = session.fetch_one(1, u64::MAX).unwrap_err();
    assert!(matches!(e, ImapError::Protocol(_)), "{e:?}");
    fake.played();

    let (mut session, fake) =
        greeted(false, vec![c("A0001 NOOP\r\n"), Send(vec![b'x'; parse::MAX_LINE + CHUNK]), Pause(ms(100))]);
    let e = session.noop().unwrap_err();
    assert!(matches!(e, ImapError::Protocol(_)), "{e:?}");
    fake.played();
}

const CHUNK: usize = 64 * 1024;

#[test]
fn starttls_is_required_when_asked_for_and_nothing_else_is_sent() {
    let fake = Fake::start(false, vec![s("* OK [CAPABILITY IMAP4rev1 AUTH=PLAIN] hi\r\n"), ExpectClosed]);
    let e = Session::connect(&fake.endpoint(Security::StartTls)).unwrap_err();
    assert!(matches!(&e, ImapError::Cleartext(text) if text.contains("does not offer STARTTLS")), "{e:?}");
    fake.played();

    let fake = Fake::start(false, vec![s("* PREAUTH [CAPABILITY IMAP4rev1 STARTTLS] hi\r\n"), ExpectClosed]);
    let e = Session::connect(&fake.endpoint(Security::StartTls)).unwrap_err();
    assert!(matches!(e, ImapError::Cleartext(_)), "{e:?}");
    fake.played();
}

#[test]
fn starttls_upgrades_and_forgets_the_cleartext_capabilities() {
    let fake = Fake::start(
        false,
        vec![
            s("* OK [CAPABILITY IMAP4rev1 STARTTLS LOGINDISABLED] hi\r\n"),
            c("A0001 STARTTLS\r\n"),
            s("A0001 OK Begin TLS negotiation now.\r\n"),
            StartTls,
            c("A0002 CAPABILITY\r\n"),
            s("* CAPABILITY IMAP4rev1 AUTH=PLAIN IDLE\r\nA0002 OK\r\n"),
            c("A0003 LOGIN \"user\" \"pw\"\r\n"),
            s("A0003 OK [CAPABILITY IMAP4rev1 IDLE MOVE] in\r\n"),
        ],
    );
    let mut session = Session::connect(&fake.endpoint(Security::StartTls)).unwrap();
    assert!(!session.capabilities().login_disabled && !session.capabilities().starttls);
    session.login(&password("user", "pw")).unwrap();
    assert!(session.capabilities().move_);
    fake.played();

    // Anything after the OK came in cleartext: someone injected it.
    let fake = Fake::start(
        false,
        vec![
            s("* OK [CAPABILITY IMAP4rev1 STARTTLS] hi\r\n"),
            c("A0001 STARTTLS\r\n"),
            s("A0001 OK Begin TLS negotiation now.\r\n* OK [CAPABILITY IMAP4rev1] injected\r\n"),
            ExpectClosed,
        ],
    );
    let e = Session::connect(&fake.endpoint(Security::StartTls)).unwrap_err();
    assert!(matches!(e, ImapError::Protocol(_)), "{e:?}");
    fake.played();
}

#[test]
fn tls_is_verified() {
    let fake = Fake::start(true, vec![]);
    let mut endpoint = fake.endpoint(Security::Implicit);
    endpoint.ca_file = None;
    let e = Session::connect(&endpoint).unwrap_err();
    assert!(matches!(&e, ImapError::Tls(text) if text.contains("certificate")), "{e:?}");

    // Implicit TLS to a cleartext server.
    let fake = Fake::start(false, vec![s(GREETING)]);
    let e = Session::connect(&fake.endpoint(Security::Implicit)).unwrap_err();
    assert!(matches!(e, ImapError::Tls(_)), "{e:?}");
}

#[test]
fn cleartext_is_for_loopback_only_and_failures_are_told_apart() {
    let started = Instant::now();
    let endpoint = Endpoint {
        host: "192.0.2.1".into(),
        port: 143,
        security: Security::None,
        ca_file: None,
        timeout: Duration::from_secs(5),
    };
    let e = Session::connect(&endpoint).unwrap_err();
    assert!(matches!(e, ImapError::Cleartext(_)), "{e:?}");
    assert!(started.elapsed() < Duration::from_secs(1), "nothing was tried");

    let e =
        Session::connect(&Endpoint { host: "imap.example.invalid".into(), ..endpoint.clone() }).unwrap_err();
    assert!(matches!(e, ImapError::Dns(_)), "{e:?}");

    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let port = listener.local_addr().unwrap().port();
    drop(listener);
    let e = Session::connect(&Endpoint { host: "127.0.0.1".into(), port, ..endpoint }).unwrap_err();
    assert!(matches!(e, ImapError::Refused(_)), "{e:?}");
}

#[test]
fn logout_says_goodbye() {
    let (session, fake) =
        greeted(true, vec![c("A0001 LOGOUT\r\n"), s("* BYE Logging out\r\nA0001 OK Logout completed.\r\n")]);
    session.logout();
    fake.played();
}

#[test]
fn uid_sets_are_ranges_within_a_line_limit() {
    assert_eq!(uid_sets(&[1, 2, 3, 5, 7, 8, u32::MAX]), ["1:3,5,7:8,4294967295"]);
    assert_eq!(uid_sets(&[]), Vec::<String>::new());
    let spread: Vec<u32> = (1..5000).map(|n| n * 2).collect();
    let sets = uid_sets(&spread);
    assert!(sets.len() > 1 && sets.iter().all(|set| set.len() <= MAX_SET));
    let back: Vec<u32> = sets.iter().flat_map(|set| set.split(',')).map(|n| n.parse().unwrap()).collect();
    assert_eq!(back, spread);
}

#[test]
fn sessions_can_move_to_their_threads() {
    fn send<T: std::marker::Send>() {}
    send::<Session>();
}

#[test]
#[cfg(target_os = "linux")]
fn connections_probe_a_silent_peer() {
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let socket = conn::tcp(&listener.local_addr().unwrap(), Duration::from_secs(1)).unwrap();
    let socket = socket2::SockRef::from(&socket);
    assert!(socket.keepalive().unwrap());
    assert_eq!(socket.tcp_keepalive_time().unwrap(), Duration::from_secs(60));
    assert_eq!(socket.tcp_keepalive_interval().unwrap(), Duration::from_secs(10));
    assert_eq!(socket.tcp_keepalive_retries().unwrap(), 6);
}
