//! The real receiving end: the Rails Action Mailbox app in
//! tests/interop/rails, which records every message it stores and where
//! Chatwoot would have routed it.

use std::fs;
use std::io::{Read, Write};
use std::net::TcpStream;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::OnceLock;
use std::time::{Duration, Instant};

/// Rails 6.1 with Action Mailbox, SQLite and WEBrick, or the test fails.
/// Asked once: loading Rails takes seconds.
fn require_rails() {
    static HERE: OnceLock<bool> = OnceLock::new();
    let here = *HERE.get_or_init(|| {
        Command::new("ruby")
            .args(["-e", "require 'rails'; require 'active_support/all'; require 'action_mailbox'; require 'sqlite3'; require 'webrick'"])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .status()
            .is_ok_and(|s| s.success())
    });
    super::require("Rails 6.1 (ruby-rails, ruby-sqlite3, ruby-webrick)", || here);
}

fn root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).to_path_buf()
}

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port()
}

/// A running Rails relay ingress, stopped on drop.
pub struct Rails {
    child: Child,
    pub port: u16,
    data: tempfile::TempDir,
}

impl Rails {
    pub fn start(password: Option<&str>, ingress: &str) -> Rails {
        Rails::start_env(password, ingress, &[])
    }

    /// With extra environment (e.g. CHATWOOT_FIXTURE), on a free port.
    pub fn start_env(password: Option<&str>, ingress: &str, env: &[(&str, &str)]) -> Rails {
        // A port free_port() found free can be taken before Rails binds it
        // (by a test running beside this one): Rails exits, try another.
        for _ in 1..3 {
            if let Ok(rails) = Rails::spawn(password, ingress, free_port(), env) {
                return rails;
            }
        }
        Rails::start_with(password, ingress, free_port(), env)
    }

    /// On `port` (to come back where a relayer expects it), with extra
    /// environment.
    pub fn start_with(password: Option<&str>, ingress: &str, port: u16, env: &[(&str, &str)]) -> Rails {
        Rails::spawn(password, ingress, port, env).unwrap_or_else(|e| panic!("{e}"))
    }

    /// Err when Rails exits before it answers.
    fn spawn(
        password: Option<&str>,
        ingress: &str,
        port: u16,
        env: &[(&str, &str)],
    ) -> Result<Rails, String> {
        require_rails();
        let data = tempfile::tempdir().unwrap();
        let mut command = Command::new(root().join("tests/interop/rails/server"));
        command
            .arg(port.to_string())
            .arg(data.path())
            .env_clear()
            .env("PATH", "/usr/bin:/bin")
            .env("INGRESS", ingress)
            .envs(env.iter().copied())
            .stdout(Stdio::null())
            .stderr(Stdio::null());
        if let Some(password) = password {
            command.env("RAILS_INBOUND_EMAIL_PASSWORD", password);
        }
        let mut rails = Rails { child: command.spawn().unwrap(), port, data };
        let deadline = Instant::now() + Duration::from_secs(90);
        while !rails.healthy() {
            if let Ok(Some(status)) = rails.child.try_wait() {
                return Err(format!("Rails exited with {status}: {}", rails.log()));
            }
            assert!(Instant::now() < deadline, "Rails did not start: {}", rails.log());
            std::thread::sleep(Duration::from_millis(100));
        }
        Ok(rails)
    }

    fn healthy(&self) -> bool {
        let Ok(mut stream) = TcpStream::connect(("127.0.0.1", self.port)) else { return false };
        let _ = stream.write_all(b"GET /healthz HTTP/1.0\r\nHost: 127.0.0.1\r\n\r\n");
        let mut answer = String::new();
        let _ = stream.read_to_string(&mut answer);
        answer.starts_with("HTTP/1.1 200") || answer.starts_with("HTTP/1.0 200")
    }

    pub fn url(&self) -> String {
        format!("http://127.0.0.1:{}", self.port)
    }

    pub fn log(&self) -> String {
        fs::read_to_string(self.data.path().join("rails.log")).unwrap_or_default()
    }

    /// What Rails logged as going wrong, for failure messages.
    pub fn errors(&self) -> String {
        self.log()
            .lines()
            .filter(|l| l.contains("Error") || l.contains("Exception"))
            .collect::<Vec<_>>()
            .join("\n")
    }

    /// How many POSTs reached the relay ingress (WEBrick's access log),
    /// duplicates that Rails dropped included.
    pub fn posts(&self) -> usize {
        let log = fs::read_to_string(self.data.path().join("webrick.log")).unwrap_or_default();
        log.lines().filter(|l| l.contains("\"POST /rails/action_mailbox/relay/inbound_emails ")).count()
    }

    /// The JSON line recorded for each message the app processed, in order.
    pub fn records(&self) -> Vec<serde_json::Value> {
        let journal = fs::read_to_string(self.data.path().join("received.jsonl")).unwrap_or_default();
        journal.lines().map(|line| serde_json::from_str(line).unwrap()).collect()
    }

    /// Every message the app processed, in order, as the bytes it stored.
    pub fn stored(&self) -> Vec<Vec<u8>> {
        self.records()
            .iter()
            .map(|record| {
                let sha = record["sha256"].as_str().unwrap();
                fs::read(self.data.path().join("messages").join(format!("{sha}.eml"))).unwrap()
            })
            .collect()
    }

    /// How many stored messages are `message` as an MTA delivers it: its
    /// Message-ID and its body intact. MTAs add trace headers (getmail even
    /// inside the header section), Postfix turns CRLF into LF and OpenSMTPD
    /// appends an empty line; the direct test proves our own relaying byte
    /// for byte.
    pub fn count(&self, message: &[u8]) -> usize {
        let lf = |bytes: &[u8]| String::from_utf8_lossy(bytes).replace("\r\n", "\n");
        let message = lf(message);
        let (head, body) = message.split_once("\n\n").unwrap();
        let id = head.lines().find(|l| l.starts_with("Message-ID:")).unwrap();
        let body = body.trim_end_matches('\n');
        self.stored()
            .iter()
            .map(|s| lf(s))
            .filter(|s| s.contains(id) && s.trim_end_matches('\n').ends_with(body))
            .count()
    }
}

impl Drop for Rails {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}
