//! A recording HTTP server that misbehaves on demand, and a runner that
//! starts the built binary the way a mail system does.

pub mod fake_imap;
pub mod graph;
pub mod imap;
pub mod process;
pub mod rails;
pub mod redis;

use std::collections::{HashMap, VecDeque};
use std::fs;
use std::io::{BufRead, BufReader, Read, Write};
use std::net::{TcpListener, TcpStream};
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::{Arc, Mutex};
use std::thread;
use std::time::Duration;

/// For tests marked `#[ignore = "needs …"]`, which run only when asked
/// (`--include-ignored`): a missing `component` fails the test.
pub fn require(component: &str, here: impl FnOnce() -> bool) {
    assert!(here(), "{component} is missing: run tests/interop/install-deps as root first");
}

pub const BIN: &str = env!("CARGO_BIN_EXE_chatwoot-ingress");
pub const PASSWORD: &str = "s3cret+p@ss/word";
pub const MTAS: [&str; 7] = ["sysexits", "postfix", "exim", "qmail", "opensmtpd", "getmail", "fetchmail"];

/// What the server does with one request.
#[derive(Clone, Debug)]
pub enum Behaviour {
    /// Read the whole request, answer with this status and extra headers.
    Status(u16, Vec<(&'static str, String)>),
    /// Read the request, never answer.
    Hang,
    /// Read the headers only, then close: the unread body makes it a reset.
    Reset,
    /// Read the body a little at a time, then answer 204.
    SlowReader,
    /// Read the whole request; answer the first status to a body larger
    /// than the limit (as a proxy's size limit does), the second otherwise.
    StatusIfLarger(usize, u16, u16),
    /// Read only this many bytes of the body, answer with this status, and
    /// close a second later with the rest unread: a proxy that answers early.
    Early(u16, usize),
    /// Read the head, then abort the connection (RST): a proxy or firewall
    /// that kills a connection it will not serve.
    Abort,
    /// Read the whole request, wait this long, then answer with this status.
    Delay(Duration, u16),
    /// Read the whole request; answer the status of the first word its body
    /// holds, else the last status (an ingress that fails some messages).
    ByContent(Vec<(&'static str, u16)>, u16),
}

pub use Behaviour::*;

pub fn status(code: u16) -> Behaviour {
    Status(code, Vec::new())
}

#[derive(Clone, Debug)]
pub struct Request {
    pub method: String,
    pub path: String,
    pub headers: HashMap<String, String>,
    pub body: Vec<u8>,
}

pub struct Server {
    pub port: u16,
    received: Arc<Mutex<Vec<Request>>>,
    answered: Arc<Mutex<Vec<u16>>>,
}

impl Server {
    /// Serve `script` in order, one behaviour per request; the last one repeats.
    pub fn start(script: Vec<Behaviour>) -> Server {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let port = listener.local_addr().unwrap().port();
        let received = Arc::new(Mutex::new(Vec::new()));
        let answered = Arc::new(Mutex::new(Vec::new()));
        let script = Arc::new(Mutex::new(VecDeque::from(script)));
        let (log, answers) = (received.clone(), answered.clone());
        thread::spawn(move || {
            for stream in listener.incoming().flatten() {
                let (log, answers, script) = (log.clone(), answers.clone(), script.clone());
                thread::spawn(move || serve(stream, &log, &answers, &script));
            }
        });
        Server { port, received, answered }
    }

    pub fn url(&self) -> String {
        format!("http://127.0.0.1:{}", self.port)
    }

    /// Requests whose body arrived in full.
    pub fn received(&self) -> Vec<Request> {
        self.received.lock().unwrap().clone()
    }

    /// The status codes of the answers sent (or being sent), in order.
    pub fn answered(&self) -> Vec<u16> {
        self.answered.lock().unwrap().clone()
    }

    pub fn bodies(&self) -> Vec<Vec<u8>> {
        self.received().into_iter().map(|r| r.body).collect()
    }
}

fn next(script: &Mutex<VecDeque<Behaviour>>) -> Behaviour {
    let mut script = script.lock().unwrap();
    if script.len() > 1 {
        script.pop_front().unwrap()
    } else {
        script.front().cloned().unwrap_or(status(204))
    }
}

fn serve(
    stream: TcpStream,
    log: &Mutex<Vec<Request>>,
    answers: &Mutex<Vec<u16>>,
    script: &Mutex<VecDeque<Behaviour>>,
) {
    let mut reader = BufReader::new(stream.try_clone().unwrap());
    let mut writer = stream;
    loop {
        let Some((method, path, headers)) = read_head(&mut reader) else { return };
        let length: usize = headers.get("content-length").and_then(|v| v.parse().ok()).unwrap_or(0);
        let behaviour = next(script);
        if let Reset = behaviour {
            return; // dropping both halves with the body unread sends RST
        }
        if let Abort = behaviour {
            // SO_LINGER with a zero timeout: close() sends RST, not FIN.
            let linger = libc::linger { l_onoff: 1, l_linger: 0 };
            // SAFETY: a valid socket and a linger struct of the size given.
            unsafe {
                use std::os::fd::AsRawFd;
                let size = std::mem::size_of::<libc::linger>() as libc::socklen_t;
                libc::setsockopt(
                    writer.as_raw_fd(),
                    libc::SOL_SOCKET,
                    libc::SO_LINGER,
                    (&linger as *const libc::linger).cast(),
                    size,
                );
            }
            return;
        }
        if let Early(code, read) = behaviour {
            let mut part = vec![0; read.min(length)];
            if reader.read_exact(&mut part).is_err() {
                return;
            }
            answers.lock().unwrap().push(code);
            let _ =
                writer.write_all(format!("HTTP/1.1 {code} Early\r\nContent-Length: 0\r\n\r\n").as_bytes());
            // Time for the client to read the answer before the close,
            // with the body unread, becomes a reset.
            thread::sleep(Duration::from_secs(1));
            return;
        }
        let mut body = vec![0; length];
        if let SlowReader = behaviour {
            for chunk in body.chunks_mut(1024) {
                if reader.read_exact(chunk).is_err() {
                    return;
                }
                thread::sleep(Duration::from_millis(20));
            }
        } else if reader.read_exact(&mut body).is_err() {
            return;
        }
        let holds = |word: &str| body.windows(word.len()).any(|w| w == word.as_bytes());
        let by_content = match &behaviour {
            ByContent(words, otherwise) => {
                words.iter().find(|(word, _)| holds(word)).map_or(*otherwise, |w| w.1)
            }
            _ => 0,
        };
        log.lock().unwrap().push(Request { method, path, headers, body });
        let (code, extra) = match behaviour {
            Status(code, extra) => (code, extra),
            StatusIfLarger(limit, over, within) => (if length > limit { over } else { within }, Vec::new()),
            ByContent(..) => (by_content, Vec::new()),
            Delay(pause, code) => {
                thread::sleep(pause);
                (code, Vec::new())
            }
            Hang => {
                thread::sleep(Duration::from_secs(600));
                return;
            }
            _ => (204, Vec::new()),
        };
        let mut response = format!("HTTP/1.1 {code} Test\r\nContent-Length: 0\r\n");
        for (name, value) in extra {
            response.push_str(&format!("{name}: {value}\r\n"));
        }
        response.push_str("\r\n");
        // Logged before it is sent: a client that has read it may look at once.
        answers.lock().unwrap().push(code);
        if writer.write_all(response.as_bytes()).is_err() {
            return;
        }
    }
}

fn read_head(reader: &mut impl BufRead) -> Option<(String, String, HashMap<String, String>)> {
    let mut line = String::new();
    reader.read_line(&mut line).ok().filter(|&n| n > 0)?;
    let mut parts = line.split_whitespace();
    let (method, path) = (parts.next()?.to_string(), parts.next()?.to_string());
    let mut headers = HashMap::new();
    loop {
        let mut line = String::new();
        reader.read_line(&mut line).ok().filter(|&n| n > 0)?;
        let line = line.trim_end();
        if line.is_empty() {
            return Some((method, path, headers));
        }
        let (name, value) = line.split_once(':')?;
        headers.insert(name.trim().to_ascii_lowercase(), value.trim().to_string());
    }
}

/// A finished run of the binary.
#[derive(Debug)]
pub struct Run {
    pub code: i32,
    pub stdout: String,
    pub stderr: String,
}

/// A hermetic invocation: an empty environment (as Postfix gives), a config
/// file of our own, and stdin from bytes.
pub struct Invocation {
    command: Command,
    stdin: Vec<u8>,
}

pub fn ingress(args: &[&str]) -> Invocation {
    let mut command = Command::new(BIN);
    command
        .env_clear()
        .env("PATH", "/usr/bin:/bin")
        .env("CHATWOOT_INGRESS_CONFIG", empty_config())
        .args(args);
    Invocation { command, stdin: Vec::new() }
}

/// An invocation aimed at `server` with the right password.
pub fn to(server: &Server, args: &[&str]) -> Invocation {
    let mut invocation = ingress(args);
    invocation.command.arg("--url").arg(server.url()).env("CHATWOOT_INGRESS_PASSWORD", PASSWORD);
    invocation
}

impl Invocation {
    pub fn stdin(mut self, bytes: impl Into<Vec<u8>>) -> Self {
        self.stdin = bytes.into();
        self
    }

    pub fn env(mut self, name: &str, value: impl AsRef<std::ffi::OsStr>) -> Self {
        self.command.env(name, value);
        self
    }

    pub fn args(mut self, args: impl IntoIterator<Item = impl AsRef<std::ffi::OsStr>>) -> Self {
        self.command.args(args);
        self
    }

    pub fn arg(mut self, arg: impl AsRef<std::ffi::OsStr>) -> Self {
        self.command.arg(arg);
        self
    }

    /// Run with RLIMIT_FSIZE at `bytes`, as `ulimit -f` does: a write past
    /// it fails, or kills with SIGXFSZ a process that does not ignore it.
    pub fn file_size_limit(mut self, bytes: u64) -> Self {
        use std::os::unix::process::CommandExt;
        let limit = libc::rlimit { rlim_cur: bytes, rlim_max: bytes };
        // SAFETY: setrlimit is async-signal-safe, as pre_exec requires.
        unsafe {
            self.command.pre_exec(move || match libc::setrlimit(libc::RLIMIT_FSIZE, &limit) {
                0 => Ok(()),
                _ => Err(std::io::Error::last_os_error()),
            });
        }
        self
    }

    pub fn spawn(mut self) -> (std::process::Child, thread::JoinHandle<()>) {
        let mut child =
            self.command.stdin(Stdio::piped()).stdout(Stdio::piped()).stderr(Stdio::piped()).spawn().unwrap();
        let mut stdin = child.stdin.take().unwrap();
        let bytes = std::mem::take(&mut self.stdin);
        // A writer thread: the binary may answer before it has read everything.
        let writer = thread::spawn(move || {
            let _ = stdin.write_all(&bytes);
        });
        (child, writer)
    }

    pub fn run(self) -> Run {
        let (child, writer) = self.spawn();
        Run::wait(child, writer)
    }
}

impl Run {
    /// Wait for what `Invocation::spawn` started to end.
    pub fn wait(child: std::process::Child, writer: thread::JoinHandle<()>) -> Run {
        let output = child.wait_with_output().unwrap();
        writer.join().unwrap();
        Run {
            code: output.status.code().unwrap_or(-1),
            stdout: String::from_utf8_lossy(&output.stdout).into_owned(),
            stderr: String::from_utf8_lossy(&output.stderr).into_owned(),
        }
    }

    /// The one line a failure writes: on stderr, beginning with `code`.
    #[track_caller]
    pub fn failed(&self, exit: i32, code: &str) -> &Self {
        assert_eq!(self.code, exit, "{self:#?}");
        assert!(self.stderr.starts_with(&format!("{code} ")), "expected {code}: {self:#?}");
        assert_eq!(self.stderr.lines().count(), 1, "{self:#?}");
        self.no_secrets()
    }

    #[track_caller]
    pub fn delivered(&self) -> &Self {
        assert_eq!((self.code, self.stderr.as_str()), (0, ""), "{self:#?}");
        self.no_secrets()
    }

    #[track_caller]
    pub fn no_secrets(&self) -> &Self {
        assert!(!self.stdout.contains(PASSWORD) && !self.stderr.contains(PASSWORD), "{self:#?}");
        self
    }
}

/// The Authorization header for PASSWORD.
pub fn basic_auth() -> String {
    // base64("actionmailbox:" + PASSWORD), computed by hand to stay dependency-free
    let raw = format!("actionmailbox:{PASSWORD}");
    let alphabet = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
    let mut out = String::new();
    for chunk in raw.as_bytes().chunks(3) {
        let n = chunk.iter().enumerate().fold(0u32, |n, (i, &b)| n | (b as u32) << (16 - 8 * i));
        for i in 0..4 {
            if i <= chunk.len() {
                out.push(alphabet[(n >> (18 - 6 * i) & 63) as usize] as char);
            } else {
                out.push('=');
            }
        }
    }
    format!("Basic {out}")
}

/// Exit codes by class, as each caller expects them.
pub fn temporary(mta: &str) -> i32 {
    if mta == "qmail" {
        111
    } else {
        75
    }
}

fn empty_config() -> PathBuf {
    let path = std::env::temp_dir().join(format!("chatwoot-ingress-test-{}.toml", std::process::id()));
    if !path.exists() {
        std::fs::write(&path, "# empty: tests configure by flags and environment\n").unwrap();
    }
    path
}

pub fn corpus(name: &str) -> Vec<u8> {
    std::fs::read(Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/corpus").join(name)).unwrap()
}

pub fn corpus_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/corpus")
}

/// A 30 MiB message with base64 attachments, built at run time.
pub fn large_message() -> Vec<u8> {
    let mut message = b"From: big@example.com\r\nTo: inbox@example.com\r\nSubject: attachments\r\nMessage-ID: <large@example.com>\r\nMIME-Version: 1.0\r\nContent-Type: multipart/mixed; boundary=\"b\"\r\n\r\n".to_vec();
    let line = b"QUJDREVGR0hJSktMTU5PUFFSU1RVVldYWVphYmNkZWZnaGlqa2xtbm9wcXJzdHV2d3h5ejAxMjM0\r\n";
    for part in 0..3 {
        message.extend_from_slice(
            format!("--b\r\nContent-Type: application/octet-stream\r\nContent-Disposition: attachment; filename=\"part{part}.bin\"\r\nContent-Transfer-Encoding: base64\r\n\r\n").as_bytes(),
        );
        while message.len() < (part + 1) * 10 * 1024 * 1024 {
            message.extend_from_slice(line);
        }
    }
    message.extend_from_slice(b"--b--\r\n");
    message
}

/// A 20 MiB message in 76-byte lines: more than a connection's buffers hold
/// when the server stops reading (Linux's send buffer grows to tcp_wmem's
/// 4 MiB at most), so the client cannot have handed it all over. Below
/// that, an answer to a part is indistinguishable from one to the whole.
pub fn twenty_mib() -> Vec<u8> {
    let mut message = b"From: a@example.com\nSubject: big\n\n".to_vec();
    while message.len() < 20 << 20 {
        message.extend_from_slice(&[b'y'; 75]);
        message.push(b'\n');
    }
    message
}

/// Run a harness script with `stdin`, its output through files, not pipes:
/// a daemon the script starts inherits them and would keep a pipe open for ever.
pub fn run_script(script: &Path, args: &[&str], stdin: &[u8]) -> std::process::Output {
    use std::io::{Seek, SeekFrom};
    let (out, err) = (tempfile::tempfile().unwrap(), tempfile::tempfile().unwrap());
    let mut child = Command::new("bash")
        .arg(script)
        .args(args)
        .stdin(Stdio::piped())
        .stdout(out.try_clone().unwrap())
        .stderr(err.try_clone().unwrap())
        .spawn()
        .unwrap();
    let mut input = child.stdin.take().unwrap();
    let _ = input.write_all(stdin);
    drop(input);
    let status = child.wait().unwrap();
    let read = |mut file: std::fs::File| {
        let mut bytes = Vec::new();
        file.seek(SeekFrom::Start(0)).unwrap();
        file.read_to_end(&mut bytes).unwrap();
        bytes
    };
    std::process::Output { status, stdout: read(out), stderr: read(err) }
}

/// Write `text` to `path`, readable by its owner only (as a secret's file
/// must be).
pub fn private(path: &Path, text: &str) {
    fs::write(path, text).unwrap();
    fs::set_permissions(path, fs::Permissions::from_mode(0o600)).unwrap();
}

/// A configuration for `check`: the ingress at `server`, the state under
/// `dir`, then `extra` and `mailboxes`.
pub fn check_config(dir: &Path, server: &Server, extra: &str, mailboxes: &str) -> PathBuf {
    let path = dir.join("config.toml");
    let text = format!(
        "url = \"{}\"\npassword = \"{PASSWORD}\"\nstate_dir = \"{}\"\n{extra}\n{mailboxes}",
        server.url(),
        dir.join("state").display()
    );
    private(&path, &text);
    path
}

/// The line of `step` whose mark is `mark`, or a failure showing the run.
#[track_caller]
pub fn line<'a>(run: &'a Run, mark: &str, step: &str) -> &'a str {
    let prefix = format!("{mark} {step}: ");
    run.stdout
        .lines()
        .find(|l| l.starts_with(&prefix))
        .unwrap_or_else(|| panic!("no `{prefix}` line: {run:#?}"))
}
