//! A scriptable IMAP4rev1 server on loopback, for the faults a real Dovecot
//! cannot be made to show: an answer chosen per command or UID, a body that
//! never comes, a literal far beyond the size announced, endless untagged
//! lines, the login quoted back, a connection limit, alerts, an idle
//! timeout, a pause between two steps of a move. It serves one account,
//! keeps its folders in memory, and records every command and how many
//! sessions were open at once. Plain TCP: `watch` allows cleartext to
//! loopback (tls = "none"). A test double, not a product: only what the
//! watcher sends is understood.

use std::collections::BTreeMap;
use std::io::{self, ErrorKind, Read, Write};
use std::net::{TcpListener, TcpStream};
use std::sync::{Arc, Mutex, MutexGuard};
use std::thread;
use std::time::{Duration, Instant};

use base64::Engine as _;

/// How often a session looks at the world while it waits for the client.
const TICK: Duration = Duration::from_millis(100);

#[derive(Clone, Debug, Default)]
pub struct Message {
    pub uid: u32,
    pub flags: Vec<String>,
    pub bytes: Vec<u8>,
}

impl Message {
    fn has(&self, flag: &str) -> bool {
        self.flags.iter().any(|f| f.eq_ignore_ascii_case(flag))
    }
}

#[derive(Clone, Debug)]
pub struct Folder {
    pub uidvalidity: u32,
    pub uidnext: u32,
    pub messages: Vec<Message>,
}

/// How a command is answered instead of being carried out.
#[derive(Clone, Debug)]
pub enum Reply {
    /// `tag NO text` (text may begin with a `[CODE]`).
    No(String),
    /// `tag BAD text`.
    Bad(String),
    /// `* BYE text`, and the connection closed.
    Bye(String),
}

/// A misbehaviour, scripted by the test.
#[derive(Clone, Debug)]
pub enum Fault {
    /// `command` ("UID MOVE", "LOGIN", "UID FETCH"…), for a UID set holding
    /// `uid` if given (a FETCH only when it asks for a body), answered with
    /// `reply`, `times` times.
    Answer { command: &'static str, uid: Option<u32>, reply: Reply, times: usize },
    /// A FETCH of `uid` that asks for its body answers OK without it; with
    /// `meta`, every FETCH of it does (SEARCH still lists it).
    Silent { uid: u32, meta: bool },
    /// A body FETCH of `uid` announces a literal of `size` bytes, and sends
    /// as many as the client reads.
    Huge { uid: u32, size: u64 },
    /// `command` is answered with untagged lines, for ever.
    Endless { command: &'static str },
    /// LOGIN and AUTHENTICATE are refused with the command quoted back,
    /// in an untagged [ALERT] and in the NO.
    QuoteLogin,
    /// `command` is received, then nothing happens until the client goes
    /// away (then it is never carried out) or `pause` is over.
    Pause { command: &'static str, pause: Duration },
}

/// Everything the server holds and has seen.
pub struct World {
    pub user: String,
    pub password: String,
    pub capabilities: Vec<String>,
    pub folders: BTreeMap<String, Folder>,
    pub faults: Vec<Fault>,
    /// At most this many logged-in sessions; a LOGIN beyond is `NO [LIMIT]`.
    pub limit: Option<usize>,
    /// Sent as `* OK [ALERT] …` with each successful login.
    pub alert: Option<String>,
    /// A session that sends nothing (outside IDLE) this long is closed.
    pub idle_timeout: Option<Duration>,
    /// Every command line received (tag left out), in order.
    pub commands: Vec<String>,
    pub sessions: usize,
    pub most_sessions: usize,
    pub logged_in: usize,
    pub most_logged_in: usize,
    next_uidvalidity: u32,
}

impl World {
    /// `name`, created if missing.
    fn folder(&mut self, name: &str) -> &mut Folder {
        let name = canonical(name);
        if !self.folders.contains_key(&name) {
            self.next_uidvalidity += 1;
            let folder = Folder { uidvalidity: self.next_uidvalidity, uidnext: 1, messages: Vec::new() };
            self.folders.insert(name.clone(), folder);
        }
        self.folders.get_mut(&name).expect("just made")
    }

    fn take_fault(&mut self, command: &str, uids: &[u32], body: bool) -> Option<Fault> {
        let i = self.faults.iter().position(|fault| match fault {
            Fault::Answer { command: c, uid, times, .. } => {
                *c == command
                    && *times > 0
                    && uid.is_none_or(|u| uids.contains(&u) && (command != "UID FETCH" || body))
            }
            Fault::Endless { command: c } | Fault::Pause { command: c, .. } => *c == command,
            Fault::QuoteLogin => command == "LOGIN" || command == "AUTHENTICATE",
            Fault::Huge { uid, .. } => command == "UID FETCH" && body && uids.contains(uid),
            Fault::Silent { .. } => false,
        })?;
        if let Fault::Answer { times, .. } = &mut self.faults[i] {
            *times -= 1;
        }
        Some(self.faults[i].clone())
    }

    fn silent(&self, uid: u32, body: bool) -> bool {
        self.faults
            .iter()
            .any(|f| matches!(f, Fault::Silent { uid: u, meta } if *u == uid && (body || *meta)))
    }
}

/// INBOX is one folder however it is spelled.
fn canonical(name: &str) -> String {
    if name.eq_ignore_ascii_case("INBOX") {
        "INBOX".into()
    } else {
        name.to_string()
    }
}

pub struct FakeImap {
    pub port: u16,
    world: Arc<Mutex<World>>,
}

impl FakeImap {
    /// An account `user` with `password`, an empty INBOX, and IDLE, MOVE,
    /// UIDPLUS, LITERAL+, SASL-IR and AUTH=PLAIN.
    pub fn start(user: &str, password: &str) -> FakeImap {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let port = listener.local_addr().unwrap().port();
        let mut world = World {
            user: user.into(),
            password: password.into(),
            capabilities: ["IMAP4rev1", "IDLE", "MOVE", "UIDPLUS", "LITERAL+", "SASL-IR", "AUTH=PLAIN"]
                .map(String::from)
                .to_vec(),
            folders: BTreeMap::new(),
            faults: Vec::new(),
            limit: None,
            alert: None,
            idle_timeout: None,
            commands: Vec::new(),
            sessions: 0,
            most_sessions: 0,
            logged_in: 0,
            most_logged_in: 0,
            next_uidvalidity: 1000,
        };
        world.folder("INBOX");
        let world = Arc::new(Mutex::new(world));
        let shared = world.clone();
        thread::spawn(move || {
            for stream in listener.incoming().flatten() {
                let world = shared.clone();
                thread::spawn(move || Session::new(stream, world).serve());
            }
        });
        FakeImap { port, world }
    }

    /// The world, to script or to look at.
    pub fn world(&self) -> MutexGuard<'_, World> {
        self.world.lock().unwrap_or_else(|e| e.into_inner())
    }

    pub fn fault(&self, fault: Fault) {
        self.world().faults.push(fault);
    }

    pub fn clear_faults(&self) {
        self.world().faults.clear();
    }

    /// Add `bytes` to `folder` (created if missing); its UID.
    pub fn append(&self, folder: &str, bytes: &[u8]) -> u32 {
        let mut world = self.world();
        let folder = world.folder(folder);
        let uid = folder.uidnext;
        folder.uidnext += 1;
        folder.messages.push(Message { uid, flags: Vec::new(), bytes: bytes.to_vec() });
        uid
    }

    /// The messages of `folder` (none if it does not exist).
    pub fn messages(&self, folder: &str) -> Vec<Message> {
        self.world().folders.get(&canonical(folder)).map(|f| f.messages.clone()).unwrap_or_default()
    }

    /// Commands received whose line starts with `prefix` (case-insensitive).
    pub fn count(&self, prefix: &str) -> usize {
        let prefix = prefix.to_ascii_uppercase();
        self.world().commands.iter().filter(|c| c.to_ascii_uppercase().starts_with(&prefix)).count()
    }

    pub fn commands(&self) -> Vec<String> {
        self.world().commands.clone()
    }
}

/// One client connection.
struct Session {
    stream: TcpStream,
    world: Arc<Mutex<World>>,
    /// Received, not yet taken as a command.
    buf: Vec<u8>,
    user: bool,
    selected: Option<String>,
    /// EXISTS as this session last told it.
    exists: usize,
    heard: Instant,
}

/// A command's arguments: atoms, strings (quoted or literal), and
/// parenthesized lists (kept whole, without the parentheses).
#[derive(Debug)]
enum Arg {
    Atom(String),
    Str(Vec<u8>),
    List(String),
}

impl Arg {
    fn text(&self) -> String {
        match self {
            Arg::Atom(s) | Arg::List(s) => s.clone(),
            Arg::Str(b) => String::from_utf8_lossy(b).into_owned(),
        }
    }
}

type Done = io::Result<bool>;

impl Session {
    fn new(stream: TcpStream, world: Arc<Mutex<World>>) -> Session {
        Session {
            stream,
            world,
            buf: Vec::new(),
            user: false,
            selected: None,
            exists: 0,
            heard: Instant::now(),
        }
    }

    fn world(&self) -> MutexGuard<'_, World> {
        self.world.lock().unwrap_or_else(|e| e.into_inner())
    }

    fn serve(mut self) {
        {
            let mut world = self.world();
            world.sessions += 1;
            world.most_sessions = world.most_sessions.max(world.sessions);
        }
        let _ = self.stream.set_read_timeout(Some(TICK));
        let _ = self.stream.set_nodelay(true);
        let _ = self.run();
        let mut world = self.world();
        world.sessions -= 1;
        if self.user {
            world.logged_in -= 1;
        }
        drop(world);
        let _ = self.stream.shutdown(std::net::Shutdown::Both);
    }

    fn send(&mut self, bytes: &[u8]) -> io::Result<()> {
        self.stream.write_all(bytes)
    }

    fn line(&mut self, text: &str) -> io::Result<()> {
        self.send(format!("{text}\r\n").as_bytes())
    }

    fn run(&mut self) -> io::Result<()> {
        let caps = self.world().capabilities.join(" ");
        self.line(&format!("* OK [CAPABILITY {caps}] fake IMAP ready"))?;
        loop {
            let Some(line) = self.read_line(true)? else { return Ok(()) };
            let (tag, command, args) = match self.parse(line) {
                Ok(parsed) => parsed,
                Err(e) => {
                    self.line(&format!("* BAD {e}"))?;
                    continue;
                }
            };
            if !self.command(&tag, &command, &args)? {
                return Ok(());
            }
        }
    }

    /// The next line (CRLF cut off), waiting as long as it takes; None when
    /// the client is gone, or quiet for longer than the idle timeout (then
    /// after a BYE) if `timed`.
    fn read_line(&mut self, timed: bool) -> io::Result<Option<Vec<u8>>> {
        loop {
            if let Some(end) = self.buf.windows(2).position(|w| w == b"\r\n") {
                let line = self.buf[..end].to_vec();
                self.buf.drain(..end + 2);
                return Ok(Some(line));
            }
            let idle = self.world().idle_timeout;
            if let Some(limit) = idle.filter(|_| timed) {
                if self.heard.elapsed() > limit {
                    self.line("* BYE Autologout; idle for too long")?;
                    return Ok(None);
                }
            }
            if !self.fill()? {
                return Ok(None);
            }
        }
    }

    /// Read what comes within a tick; false when the client is gone.
    fn fill(&mut self) -> io::Result<bool> {
        let mut chunk = [0; 64 * 1024];
        match self.stream.read(&mut chunk) {
            Ok(0) => Ok(false),
            Ok(n) => {
                self.buf.extend_from_slice(&chunk[..n]);
                self.heard = Instant::now();
                Ok(true)
            }
            Err(e)
                if matches!(
                    e.kind(),
                    ErrorKind::WouldBlock | ErrorKind::TimedOut | ErrorKind::Interrupted
                ) =>
            {
                Ok(true)
            }
            Err(e) => Err(e),
        }
    }

    fn read_exact(&mut self, n: usize) -> io::Result<Option<Vec<u8>>> {
        while self.buf.len() < n {
            if !self.fill()? {
                return Ok(None);
            }
        }
        Ok(Some(self.buf.drain(..n).collect()))
    }

    /// Tag, command name (upper case; `UID X` as one) and arguments, with
    /// literals read (and `+` sent for a synchronizing one).
    fn parse(&mut self, mut line: Vec<u8>) -> Result<(String, String, Vec<Arg>), String> {
        let mut args = Vec::new();
        let mut words: Vec<String> = Vec::new();
        loop {
            let mut i = 0;
            while i < line.len() {
                match line[i] {
                    b' ' => i += 1,
                    b'"' => {
                        let mut s = Vec::new();
                        i += 1;
                        while i < line.len() && line[i] != b'"' {
                            if line[i] == b'\\' {
                                i += 1;
                            }
                            s.extend(line.get(i).copied());
                            i += 1;
                        }
                        i += 1;
                        args.push(Arg::Str(s));
                    }
                    b'(' => {
                        let end = line[i..].iter().position(|&b| b == b')').map_or(line.len(), |p| i + p);
                        args.push(Arg::List(String::from_utf8_lossy(&line[i + 1..end]).into_owned()));
                        i = end + 1;
                    }
                    b'{' => {
                        let close = line[i..].iter().position(|&b| b == b'}').ok_or("a bad literal")? + i;
                        let spec = String::from_utf8_lossy(&line[i + 1..close]).into_owned();
                        let (n, plus) = match spec.strip_suffix('+') {
                            Some(n) => (n, true),
                            None => (spec.as_str(), false),
                        };
                        let n: usize = n.parse().map_err(|_| "a bad literal")?;
                        if !plus {
                            self.line("+ go ahead").map_err(|e| e.to_string())?;
                        }
                        let bytes = self.read_exact(n).map_err(|e| e.to_string())?.ok_or("gone")?;
                        args.push(Arg::Str(bytes));
                        line = self.read_line(false).map_err(|e| e.to_string())?.ok_or("gone")?;
                        i = usize::MAX;
                        break;
                    }
                    _ => {
                        let end = line[i..].iter().position(|&b| b == b' ').map_or(line.len(), |p| i + p);
                        let word = String::from_utf8_lossy(&line[i..end]).into_owned();
                        if words.len() < 2 && args.is_empty() {
                            words.push(word);
                        } else {
                            args.push(Arg::Atom(word));
                        }
                        i = end;
                    }
                }
            }
            if i != usize::MAX {
                break;
            }
        }
        if words.len() < 2 {
            return Err("no command".into());
        }
        let tag = words.remove(0);
        let mut command = words.remove(0).to_ascii_uppercase();
        if command == "UID" {
            match args.first() {
                Some(Arg::Atom(sub)) => {
                    command = format!("UID {}", sub.to_ascii_uppercase());
                    args.remove(0);
                }
                _ => return Err("UID what?".into()),
            }
        }
        Ok((tag, command, args))
    }

    /// Carry out one command; false when the session is over.
    fn command(&mut self, tag: &str, command: &str, args: &[Arg]) -> Done {
        let shown: Vec<String> = args.iter().map(Arg::text).collect();
        self.world().commands.push(format!("{command} {}", shown.join(" ")).trim_end().to_string());
        let uids = match command {
            "UID FETCH" | "UID STORE" | "UID COPY" | "UID MOVE" | "UID EXPUNGE" => {
                args.first().map(|a| self.uid_set(&a.text())).unwrap_or_default()
            }
            _ => Vec::new(),
        };
        let body = command == "UID FETCH" && args.get(1).is_some_and(|a| a.text().contains("BODY"));
        let fault = self.world().take_fault(command, &uids, body);
        match fault {
            Some(Fault::Answer { reply: Reply::No(text), .. }) => {
                return self.tagged(tag, &format!("NO {text}"))
            }
            Some(Fault::Answer { reply: Reply::Bad(text), .. }) => {
                return self.tagged(tag, &format!("BAD {text}"))
            }
            Some(Fault::Answer { reply: Reply::Bye(text), .. }) => {
                self.line(&format!("* BYE {text}"))?;
                return Ok(false);
            }
            Some(Fault::Endless { .. }) => loop {
                self.line("* OK still working on it")?;
                thread::sleep(Duration::from_millis(20));
            },
            Some(Fault::QuoteLogin) => {
                let quoted: Vec<String> = args
                    .iter()
                    .map(|a| match a {
                        Arg::Str(s) => {
                            let s = String::from_utf8_lossy(s);
                            format!("\"{}\"", s.replace('\\', "\\\\").replace('"', "\\\""))
                        }
                        other => other.text(),
                    })
                    .collect();
                let sent = format!("{tag} {command} {}", quoted.join(" "));
                self.line(&format!("* OK [ALERT] Received: {sent}"))?;
                return self
                    .tagged(tag, &format!("NO [AUTHENTICATIONFAILED] Authentication failed for: {sent}"));
            }
            Some(Fault::Pause { pause, .. }) => {
                let until = Instant::now() + pause;
                while Instant::now() < until {
                    let mut byte = [0];
                    match self.stream.peek(&mut byte) {
                        Ok(0) => return Ok(false),
                        Err(e) if !matches!(e.kind(), ErrorKind::WouldBlock | ErrorKind::TimedOut) => {
                            return Ok(false)
                        }
                        _ => thread::sleep(TICK),
                    }
                }
            }
            Some(Fault::Huge { uid, size }) => return self.huge(tag, uid, size),
            _ => {}
        }
        match command {
            "CAPABILITY" => {
                let caps = self.world().capabilities.join(" ");
                self.line(&format!("* CAPABILITY {caps}"))?;
                self.tagged(tag, "OK CAPABILITY done")
            }
            "NOOP" => {
                self.report_exists()?;
                self.tagged(tag, "OK NOOP done")
            }
            "LOGOUT" => {
                self.line("* BYE logging out")?;
                self.tagged(tag, "OK LOGOUT done")?;
                Ok(false)
            }
            "LOGIN" => {
                let user = args.first().map(Arg::text).unwrap_or_default();
                let password = args.get(1).map(Arg::text).unwrap_or_default();
                self.log_in(tag, &user, &password)
            }
            "AUTHENTICATE" => {
                let initial = match args.get(1) {
                    Some(a) => a.text(),
                    None => {
                        self.line("+ ")?;
                        let Some(line) = self.read_line(false)? else { return Ok(false) };
                        String::from_utf8_lossy(&line).into_owned()
                    }
                };
                let decoded =
                    base64::engine::general_purpose::STANDARD.decode(initial.trim()).unwrap_or_default();
                let parts: Vec<String> =
                    decoded.split(|&b| b == 0).map(|p| String::from_utf8_lossy(p).into_owned()).collect();
                match parts.as_slice() {
                    [_, user, password] => {
                        let (user, password) = (user.clone(), password.clone());
                        self.log_in(tag, &user, &password)
                    }
                    _ => self.tagged(tag, "NO [AUTHENTICATIONFAILED] bad PLAIN message"),
                }
            }
            _ if !self.user => self.tagged(tag, "BAD log in first"),
            "SELECT" | "EXAMINE" => self.select(tag, &args.first().map(Arg::text).unwrap_or_default()),
            "CREATE" => {
                let name = canonical(&args.first().map(Arg::text).unwrap_or_default());
                let mut world = self.world();
                if world.folders.contains_key(&name) {
                    drop(world);
                    return self.tagged(tag, "NO [ALREADYEXISTS] Mailbox already exists");
                }
                world.folder(&name);
                drop(world);
                self.tagged(tag, "OK CREATE done")
            }
            "LIST" => {
                let pattern = canonical(&args.get(1).map(Arg::text).unwrap_or_default());
                let names: Vec<String> =
                    self.world().folders.keys().filter(|n| **n == pattern).cloned().collect();
                for name in names {
                    self.line(&format!("* LIST () \"/\" \"{name}\""))?;
                }
                self.tagged(tag, "OK LIST done")
            }
            "STATUS" => {
                let name = canonical(&args.first().map(Arg::text).unwrap_or_default());
                let counts = self
                    .world()
                    .folders
                    .get(&name)
                    .map(|f| (f.messages.len(), f.messages.iter().filter(|m| !m.has("\\Seen")).count()));
                match counts {
                    Some((all, unseen)) => {
                        self.line(&format!("* STATUS \"{name}\" (MESSAGES {all} UNSEEN {unseen})"))?;
                        self.tagged(tag, "OK STATUS done")
                    }
                    None => self.tagged(tag, "NO [NONEXISTENT] no such folder"),
                }
            }
            _ if self.selected.is_none() => self.tagged(tag, "BAD select a folder first"),
            "UID SEARCH" => self.search(tag, args),
            "UID FETCH" => self.fetch(tag, &uids, &args.get(1).map(Arg::text).unwrap_or_default()),
            "UID STORE" => {
                let how = args.get(1).map(Arg::text).unwrap_or_default().to_ascii_uppercase();
                let flags: Vec<String> = args
                    .get(2)
                    .map(Arg::text)
                    .unwrap_or_default()
                    .split_whitespace()
                    .map(String::from)
                    .collect();
                self.with_folder(|folder| {
                    for m in folder.messages.iter_mut().filter(|m| uids.contains(&m.uid)) {
                        for flag in &flags {
                            if how.starts_with('+') && !m.has(flag) {
                                m.flags.push(flag.clone());
                            } else if how.starts_with('-') {
                                m.flags.retain(|f| !f.eq_ignore_ascii_case(flag));
                            }
                        }
                    }
                });
                self.tagged(tag, "OK STORE done")
            }
            "UID COPY" | "UID MOVE" => {
                let target = canonical(&args.get(1).map(Arg::text).unwrap_or_default());
                if !self.world().folders.contains_key(&target) {
                    return self.tagged(tag, "NO [TRYCREATE] no such folder");
                }
                let moving = command == "UID MOVE";
                let copies: Vec<Message> = self.with_folder(|folder| {
                    folder.messages.iter().filter(|m| uids.contains(&m.uid)).cloned().collect()
                });
                let mut world = self.world();
                let to = world.folder(&target);
                for mut m in copies {
                    m.uid = to.uidnext;
                    to.uidnext += 1;
                    m.flags.retain(|f| !f.eq_ignore_ascii_case("\\Deleted"));
                    to.messages.push(m);
                }
                drop(world);
                if moving {
                    self.expunge(|m| uids.contains(&m.uid))?;
                }
                self.tagged(tag, &format!("OK {command} done"))
            }
            "UID EXPUNGE" => {
                self.expunge(|m| uids.contains(&m.uid) && m.has("\\Deleted"))?;
                self.tagged(tag, "OK EXPUNGE done")
            }
            "EXPUNGE" => {
                self.expunge(|m| m.has("\\Deleted"))?;
                self.tagged(tag, "OK EXPUNGE done")
            }
            "IDLE" => self.idle(tag),
            "CLOSE" => {
                self.selected = None;
                self.tagged(tag, "OK CLOSE done")
            }
            _ => self.tagged(tag, &format!("BAD unknown command {command}")),
        }
    }

    fn tagged(&mut self, tag: &str, text: &str) -> Done {
        self.line(&format!("{tag} {text}"))?;
        Ok(true)
    }

    fn log_in(&mut self, tag: &str, user: &str, password: &str) -> Done {
        let mut world = self.world();
        if user != world.user || password != world.password {
            drop(world);
            return self.tagged(tag, "NO [AUTHENTICATIONFAILED] Authentication failed.");
        }
        if world.limit.is_some_and(|limit| world.logged_in >= limit) {
            drop(world);
            return self.tagged(tag, "NO [LIMIT] Too many simultaneous connections for this account");
        }
        world.logged_in += 1;
        world.most_logged_in = world.most_logged_in.max(world.logged_in);
        let (alert, caps) = (world.alert.clone(), world.capabilities.join(" "));
        drop(world);
        self.user = true;
        if let Some(alert) = alert {
            self.line(&format!("* OK [ALERT] {alert}"))?;
        }
        self.tagged(tag, &format!("OK [CAPABILITY {caps}] Logged in"))
    }

    fn with_folder<T>(&self, f: impl FnOnce(&mut Folder) -> T) -> T {
        let name = self.selected.clone().unwrap_or_default();
        let mut world = self.world();
        f(world.folder(&name))
    }

    fn select(&mut self, tag: &str, name: &str) -> Done {
        let name = canonical(name);
        let found = self.world().folders.get(&name).map(|f| (f.uidvalidity, f.uidnext, f.messages.len()));
        let Some((uidvalidity, uidnext, exists)) = found else {
            self.selected = None;
            return self.tagged(tag, "NO [NONEXISTENT] Mailbox doesn't exist");
        };
        self.selected = Some(name);
        self.exists = exists;
        self.line("* FLAGS (\\Answered \\Flagged \\Deleted \\Seen \\Draft)")?;
        self.line(&format!("* {exists} EXISTS"))?;
        self.line("* 0 RECENT")?;
        self.line(&format!("* OK [UIDVALIDITY {uidvalidity}] UIDs valid"))?;
        self.line(&format!("* OK [UIDNEXT {uidnext}] Predicted next UID"))?;
        self.tagged(tag, "OK [READ-WRITE] Select completed")
    }

    /// `1:3,7,9:*` against the selected folder's UIDs.
    fn uid_set(&self, set: &str) -> Vec<u32> {
        let all: Vec<u32> = self.with_folder(|f| f.messages.iter().map(|m| m.uid).collect());
        let highest = all.iter().copied().max().unwrap_or(0);
        let mut uids = Vec::new();
        for range in set.split(',') {
            let number = |s: &str| if s == "*" { highest } else { s.parse().unwrap_or(0) };
            let (a, b) = match range.split_once(':') {
                Some((a, b)) => (number(a), number(b)),
                None => (number(range), number(range)),
            };
            let (low, high) = (a.min(b), a.max(b));
            uids.extend(all.iter().copied().filter(|u| (low..=high).contains(u)));
        }
        uids.sort_unstable();
        uids.dedup();
        uids
    }

    fn search(&mut self, tag: &str, args: &[Arg]) -> Done {
        let words: Vec<String> = args.iter().map(Arg::text).collect();
        let messages: Vec<Message> = self.with_folder(|f| f.messages.clone());
        let mut found: Vec<u32> = messages.iter().map(|m| m.uid).collect();
        let mut i = 0;
        let mut not = false;
        while i < words.len() {
            let word = words[i].to_ascii_uppercase();
            let keep: Vec<u32> = match word.as_str() {
                "NOT" => {
                    not = !not;
                    i += 1;
                    continue;
                }
                "ALL" => messages.iter().map(|m| m.uid).collect(),
                "UNSEEN" => messages.iter().filter(|m| !m.has("\\Seen")).map(|m| m.uid).collect(),
                "SEEN" => messages.iter().filter(|m| m.has("\\Seen")).map(|m| m.uid).collect(),
                "DELETED" => messages.iter().filter(|m| m.has("\\Deleted")).map(|m| m.uid).collect(),
                "UNDELETED" => messages.iter().filter(|m| !m.has("\\Deleted")).map(|m| m.uid).collect(),
                "UID" => {
                    i += 1;
                    self.uid_set(words.get(i).map_or("", String::as_str))
                }
                _ => return self.tagged(tag, &format!("BAD unknown search key {word}")),
            };
            found.retain(|u| keep.contains(u) != not);
            not = false;
            i += 1;
        }
        let list: Vec<String> = found.iter().map(u32::to_string).collect();
        self.line(format!("* SEARCH {}", list.join(" ")).trim_end())?;
        self.tagged(tag, "OK SEARCH done")
    }

    fn fetch(&mut self, tag: &str, uids: &[u32], items: &str) -> Done {
        let items = items.to_ascii_uppercase();
        let body = items.contains("BODY");
        let messages: Vec<(usize, Message)> = self.with_folder(|f| {
            f.messages.iter().cloned().enumerate().filter(|(_, m)| uids.contains(&m.uid)).collect()
        });
        for (i, m) in messages {
            if self.world().silent(m.uid, body) {
                continue;
            }
            let mut out = format!("* {} FETCH (UID {}", i + 1, m.uid).into_bytes();
            if items.contains("FLAGS") {
                out.extend_from_slice(format!(" FLAGS ({})", m.flags.join(" ")).as_bytes());
            }
            if items.contains("RFC822.SIZE") {
                out.extend_from_slice(format!(" RFC822.SIZE {}", m.bytes.len()).as_bytes());
            }
            if let Some(at) = items.find("BODY.PEEK[]<") {
                let spec = &items[at + "BODY.PEEK[]<".len()..];
                let spec = &spec[..spec.find('>').unwrap_or(spec.len())];
                let (offset, len) = spec.split_once('.').unwrap_or(("0", "0"));
                let offset = offset.parse::<usize>().unwrap_or(0).min(m.bytes.len());
                let end = (offset + len.parse::<usize>().unwrap_or(0)).min(m.bytes.len());
                out.extend_from_slice(format!(" BODY[]<{offset}> {{{}}}\r\n", end - offset).as_bytes());
                out.extend_from_slice(&m.bytes[offset..end]);
            } else if body {
                out.extend_from_slice(format!(" BODY[] {{{}}}\r\n", m.bytes.len()).as_bytes());
                out.extend_from_slice(&m.bytes);
            }
            out.extend_from_slice(b")\r\n");
            self.send(&out)?;
        }
        self.tagged(tag, "OK FETCH done")
    }

    /// A body of `size` bytes for a message whose RFC822.SIZE is small.
    fn huge(&mut self, tag: &str, uid: u32, size: u64) -> Done {
        let real =
            self.with_folder(|f| f.messages.iter().find(|m| m.uid == uid).map_or(0, |m| m.bytes.len()));
        self.send(format!("* 1 FETCH (UID {uid} RFC822.SIZE {real} BODY[] {{{size}}}\r\n").as_bytes())?;
        let chunk = vec![b'x'; 1 << 20];
        let mut left = size;
        while left > 0 {
            let n = left.min(chunk.len() as u64) as usize;
            self.send(&chunk[..n])?;
            left -= n as u64;
        }
        self.send(b")\r\n")?;
        self.tagged(tag, "OK FETCH done")
    }

    fn expunge(&mut self, gone: impl Fn(&Message) -> bool) -> io::Result<()> {
        let removed: Vec<usize> = self.with_folder(|f| {
            let mut removed = Vec::new();
            let mut i = 0;
            while i < f.messages.len() {
                if gone(&f.messages[i]) {
                    f.messages.remove(i);
                    removed.push(i + 1);
                } else {
                    i += 1;
                }
            }
            removed
        });
        for seq in removed {
            self.line(&format!("* {seq} EXPUNGE"))?;
            self.exists = self.exists.saturating_sub(1);
        }
        Ok(())
    }

    fn report_exists(&mut self) -> io::Result<()> {
        let exists = self.with_folder(|f| f.messages.len());
        if exists != self.exists {
            self.exists = exists;
            self.line(&format!("* {exists} EXISTS"))?;
        }
        Ok(())
    }

    fn idle(&mut self, tag: &str) -> Done {
        self.line("+ idling")?;
        loop {
            self.report_exists()?;
            if let Some(end) = self.buf.windows(2).position(|w| w == b"\r\n") {
                let line: Vec<u8> = self.buf.drain(..end + 2).collect();
                if line[..end].eq_ignore_ascii_case(b"DONE") {
                    return self.tagged(tag, "OK IDLE done");
                }
                return self.tagged(tag, "BAD expected DONE");
            }
            if !self.fill()? {
                return Ok(false);
            }
        }
    }
}
