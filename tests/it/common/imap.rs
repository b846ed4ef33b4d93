//! A real Dovecot for the tests, through tests/interop/imap/dovecot.sh: its
//! own work directory, loopback ports, a private CA, stopped on drop.

use std::net::TcpListener;
use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};
use std::time::Duration;

fn script() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/interop/imap/dovecot.sh")
}

fn run(args: &[&str], stdin: &[u8]) -> Output {
    super::run_script(&script(), args, stdin)
}

/// Dovecot and doveadm, or the test fails (the script's `setup` only looks).
fn require_dovecot() {
    super::require("Dovecot (dovecot-imapd, doveadm, openssl)", || run(&["setup"], b"").status.success())
}

pub fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port()
}

pub struct Dovecot {
    pub work: tempfile::TempDir,
    pub plain_port: u16,
    pub tls_port: u16,
}

impl Dovecot {
    /// Plain IMAP with STARTTLS on `plain_port`, implicit TLS on `tls_port`;
    /// with `introspection`, also XOAUTH2 and OAUTHBEARER checked there.
    pub fn start(introspection: Option<&str>) -> Dovecot {
        require_dovecot();
        let mut dovecot = Dovecot { work: tempfile::tempdir().unwrap(), plain_port: 0, tls_port: 0 };
        // A port free_port() found free can be taken before Dovecot binds it
        // (by a test running beside this one): try others.
        for attempt in 1.. {
            (dovecot.plain_port, dovecot.tls_port) = (free_port(), free_port());
            let (plain, tls) = (dovecot.plain_port.to_string(), dovecot.tls_port.to_string());
            let mut args = vec!["start", dovecot.dir(), &plain, &tls];
            args.extend(introspection);
            let output = run(&args, b"");
            let said = String::from_utf8_lossy(&output.stderr);
            if output.status.success() || attempt == 5 || !(said.contains("in use") || plain == tls) {
                dovecot.check(&args, &output);
                break;
            }
        }
        dovecot
    }

    fn dir(&self) -> &str {
        self.work.path().to_str().unwrap()
    }

    fn must(&self, args: &[&str], stdin: &[u8]) -> String {
        let output = run(args, stdin);
        self.check(args, &output);
        String::from_utf8_lossy(&output.stdout).into_owned()
    }

    fn check(&self, args: &[&str], output: &Output) {
        assert!(
            output.status.success(),
            "dovecot.sh {args:?}: {}{}",
            String::from_utf8_lossy(&output.stdout),
            String::from_utf8_lossy(&output.stderr)
        );
    }

    /// `SUBCOMMAND WORKDIR ARGS...`
    pub fn cmd(&self, command: &str, args: &[&str]) -> String {
        self.must(&[&[command, self.dir()], args].concat(), b"")
    }

    /// The private CA that signed the server's certificate.
    pub fn ca(&self) -> PathBuf {
        self.work.path().join("ca.pem")
    }

    pub fn user(&self, name: &str, password: &str) {
        self.cmd("user", &[name, password]);
    }

    /// APPEND `message` to `folder` (created if missing); its UID.
    pub fn append(&self, user: &str, folder: &str, message: &[u8]) -> u32 {
        let out = self.must(&["append", self.dir(), user, folder], message);
        out.trim().parse().unwrap_or_else(|_| panic!("append printed {out:?}"))
    }

    pub fn count(&self, user: &str, folder: &str, search: &[&str]) -> usize {
        let out = self.cmd("count", &[&[user, folder], search].concat());
        out.trim().parse().unwrap()
    }

    /// (UID, flags) of every message in `folder`.
    pub fn uids(&self, user: &str, folder: &str) -> Vec<(u32, String)> {
        self.cmd("uids", &[user, folder])
            .lines()
            .filter_map(|line| {
                let (uid, flags) = line.split_once(' ').unwrap_or((line, ""));
                Some((uid.trim().parse().ok()?, flags.trim().to_string()))
            })
            .collect()
    }

    /// A message as IMAP serves it (FETCH BODY.PEEK[]).
    pub fn body(&self, user: &str, folder: &str, uid: u32) -> Vec<u8> {
        let output = run(&["body", self.dir(), user, folder, &uid.to_string()], b"");
        assert!(output.status.success(), "{}", String::from_utf8_lossy(&output.stderr));
        output.stdout
    }

    pub fn folders(&self, user: &str) -> Vec<String> {
        self.cmd("folders", &[user]).lines().map(str::to_string).collect()
    }

    pub fn kick(&self, user: &str) {
        self.cmd("kick", &[user]);
    }

    pub fn restart(&self) {
        self.cmd("restart", &[]);
    }

    /// Successful logins so far, one line each ("USER MECH TLS|plain").
    pub fn logins(&self) -> Vec<String> {
        self.cmd("logins", &[]).lines().map(str::to_string).collect()
    }
}

impl Drop for Dovecot {
    fn drop(&mut self) {
        let _ = run(&["stop", self.dir()], b"");
    }
}

/// The local OAuth2 token service (tests/interop/imap/token-service.py):
/// client credentials, refresh tokens with rotation, device codes, and the
/// introspection endpoint Dovecot's oauth2 passdb asks. Stopped on drop.
pub struct TokenService {
    child: std::process::Child,
    /// http://127.0.0.1:PORT
    pub url: String,
    pub state: tempfile::TempDir,
}

impl TokenService {
    /// With `config` (see tests/interop/imap/README.md), logging each request.
    pub fn start(config: &serde_json::Value) -> TokenService {
        super::require("python3", || {
            Command::new("python3").arg("--version").output().is_ok_and(|o| o.status.success())
        });
        let state = tempfile::tempdir().unwrap();
        let config_path = state.path().join("config.json");
        std::fs::write(&config_path, config.to_string()).unwrap();
        let (out, err) = (state.path().join("stdout"), state.path().join("stderr"));
        let child = Command::new("python3")
            .arg(Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/interop/imap/token-service.py"))
            .args(["--port", "0", "--verbose", "--state"])
            .arg(state.path().join("service"))
            .arg("--config")
            .arg(&config_path)
            .stdin(Stdio::null())
            .stdout(std::fs::File::create(&out).unwrap())
            .stderr(std::fs::File::create(&err).unwrap())
            .spawn()
            .unwrap();
        let mut service = TokenService { child, url: String::new(), state };
        super::process::wait_for(Duration::from_secs(15), "the token service ready", || {
            let text = std::fs::read_to_string(&out).unwrap_or_default();
            match text.split("token-service ready ").nth(1) {
                Some(url) => {
                    service.url = url.trim().to_string();
                    true
                }
                None => false,
            }
        });
        service
    }

    pub fn introspection_url(&self) -> String {
        format!("{}/introspect", self.url)
    }

    /// One request to the service: (status, JSON answer).
    fn request(&self, method: &str, path: &str, form: &[(&str, &str)]) -> (u16, serde_json::Value) {
        use std::io::{Read, Write};
        let body: Vec<String> = form.iter().map(|(k, v)| format!("{}={}", encode(k), encode(v))).collect();
        let body = body.join("&");
        let address = self.url.trim_start_matches("http://");
        let mut stream = std::net::TcpStream::connect(address).unwrap();
        write!(
            stream,
            "{method} {path} HTTP/1.1\r\nHost: {address}\r\nContent-Type: application/x-www-form-urlencoded\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
            body.len()
        )
        .unwrap();
        let mut answer = String::new();
        stream.read_to_string(&mut answer).unwrap();
        let (head, json) = answer.split_once("\r\n\r\n").unwrap();
        let status = head.split_whitespace().nth(1).unwrap().parse().unwrap();
        (status, serde_json::from_str(json).unwrap_or(serde_json::Value::Null))
    }

    /// POST to the admin API (revoke, approve, secret, expire, issue, config).
    pub fn admin(&self, what: &str, form: &[(&str, &str)]) -> serde_json::Value {
        let (status, answer) = self.request("POST", &format!("/admin/{what}"), form);
        assert_eq!(status, 200, "admin/{what}: {answer}");
        answer
    }

    /// The requests served: endpoint, grant_type, result (`ok`, an error code, `active`…).
    pub fn log(&self) -> Vec<serde_json::Value> {
        match self.request("GET", "/admin/log", &[]).1 {
            serde_json::Value::Array(entries) => entries,
            other => panic!("admin/log: {other}"),
        }
    }

    /// The newest valid refresh token of `user`.
    pub fn refresh_token(&self, user: &str) -> Option<String> {
        let state = self.request("GET", "/admin/state", &[]).1;
        state["users"][user]["refresh_token"].as_str().map(str::to_string)
    }

    /// Every token and device code it ever issued, from its state file.
    pub fn every_token(&self) -> Vec<String> {
        let path = self.state.path().join("service/state.json");
        let state: serde_json::Value = serde_json::from_slice(&std::fs::read(path).unwrap()).unwrap();
        ["access", "refresh", "devices"]
            .iter()
            .filter_map(|kind| state[kind].as_object())
            .flat_map(|tokens| tokens.keys().cloned())
            .collect()
    }

    /// What it printed, and its request log file.
    pub fn output(&self) -> String {
        ["stdout", "stderr", "service/requests.jsonl"]
            .iter()
            .map(|name| std::fs::read_to_string(self.state.path().join(name)).unwrap_or_default())
            .collect()
    }
}

impl Drop for TokenService {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Form-urlencoding of one key or value.
fn encode(text: &str) -> String {
    text.bytes()
        .map(|b| match b {
            b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'-' | b'.' | b'_' | b'~' => char::from(b).to_string(),
            _ => format!("%{b:02X}"),
        })
        .collect()
}
