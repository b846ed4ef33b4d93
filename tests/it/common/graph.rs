//! The Microsoft Graph mail service of tests/interop/graph
//! (graph-service.py), one instance per test on a free loopback port: its
//! admin API puts mail in, queues faults and tells what it holds and what
//! it was asked (its request log).

use std::io::{Read, Write};
use std::net::TcpStream;
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::thread;
use std::time::{Duration, Instant};

use chatwoot_ingress::secret::Password;
use serde_json::{json, Value};

pub const TENANT: &str = "contoso-tenant";
pub const APP_SECRET: &str = "s3cret-of-the-app";

/// graph-service.py; stopped on drop.
pub struct Service {
    child: Child,
    pub url: String,
    _dir: tempfile::TempDir,
}

impl Service {
    /// With one tenant: `apps` (client id, roles) with the secret
    /// [`APP_SECRET`], and `mailboxes` (UPN, the apps in its scope or
    /// None for all); `config`'s keys besides.
    pub fn start_with(
        apps: &[(&str, &[&str])],
        mailboxes: &[(&str, Option<&[&str]>)],
        config: Value,
    ) -> Service {
        let dir = tempfile::tempdir().unwrap();
        let apps: Vec<Value> = apps
            .iter()
            .map(|(id, roles)| json!({"client_id": id, "client_secret": APP_SECRET, "roles": roles}))
            .collect();
        let mailboxes: Vec<Value> =
            mailboxes.iter().map(|(upn, apps)| json!({"upn": upn, "apps": apps})).collect();
        let mut config = config;
        config["tenants"] = json!([{"id": TENANT, "apps": apps, "mailboxes": mailboxes}]);
        let path = dir.path().join("config.json");
        std::fs::write(&path, config.to_string()).unwrap();
        let out = dir.path().join("out");
        let child = Command::new("python3")
            .arg(Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/interop/graph/graph-service.py"))
            .args(["--port", "0", "--config"])
            .arg(&path)
            .stdin(Stdio::null())
            .stdout(std::fs::File::create(&out).unwrap())
            .stderr(std::fs::File::create(dir.path().join("err")).unwrap())
            .spawn()
            .unwrap();
        // made before the wait, so that a failed start still ends the child
        let mut service = Service { child, url: String::new(), _dir: dir };
        let deadline = Instant::now() + Duration::from_secs(15);
        loop {
            let text = std::fs::read_to_string(&out).unwrap_or_default();
            if let Some(url) = text.strip_prefix("graph-service ready ").filter(|url| url.ends_with('\n')) {
                service.url = url.trim().to_string();
                return service;
            }
            assert!(Instant::now() < deadline, "graph-service did not start: {text}");
            thread::sleep(Duration::from_millis(20));
        }
    }

    /// The token endpoint of the tenant (client credentials).
    pub fn token_url(&self) -> String {
        format!("{}/{TENANT}/oauth2/v2.0/token", self.url)
    }

    /// One admin request: (status, body).
    pub fn admin(&self, method: &str, path: &str, content_type: &str, body: &[u8]) -> (u16, Vec<u8>) {
        let address = self.url.trim_start_matches("http://");
        let mut stream = TcpStream::connect(address).unwrap();
        write!(
            stream,
            "{method} /admin/{path} HTTP/1.1\r\nHost: {address}\r\nContent-Type: {content_type}\r\nContent-Length: {}\r\nConnection: close\r\n\r\n",
            body.len()
        )
        .unwrap();
        stream.write_all(body).unwrap();
        let mut answer = Vec::new();
        stream.read_to_end(&mut answer).unwrap();
        let at = answer.windows(4).position(|w| w == b"\r\n\r\n").unwrap();
        let status = String::from_utf8_lossy(&answer[9..12]).parse().unwrap();
        (status, answer[at + 4..].to_vec())
    }

    pub fn post(&self, path: &str, body: Value) -> Value {
        let (status, answer) = self.admin("POST", path, "application/json", body.to_string().as_bytes());
        assert!(status < 300, "{path}: {status} {}", String::from_utf8_lossy(&answer));
        serde_json::from_slice(&answer).unwrap()
    }

    pub fn get(&self, path: &str) -> Value {
        let (status, answer) = self.admin("GET", path, "application/json", b"");
        assert_eq!(status, 200, "{path}: {}", String::from_utf8_lossy(&answer));
        serde_json::from_slice(&answer).unwrap()
    }

    /// Puts `mime` in a folder of the mailbox (a path, made if missing);
    /// the message as the service lists it.
    pub fn add(&self, mailbox: &str, folder: &str, mime: &[u8], is_read: bool) -> Value {
        self.add_received(mailbox, folder, mime, is_read, None)
    }

    /// The same, received at `received` (Unix seconds) rather than now.
    pub fn add_received(
        &self,
        mailbox: &str,
        folder: &str,
        mime: &[u8],
        is_read: bool,
        received: Option<u64>,
    ) -> Value {
        let folder = folder.replace(' ', "%20").replace('/', "%2F");
        let mut path = format!("message?mailbox={mailbox}&folder={folder}&is_read={is_read}");
        if let Some(received) = received {
            path.push_str(&format!("&received={received}"));
        }
        let (status, answer) = self.admin("POST", &path, "message/rfc822", mime);
        assert_eq!(status, 201, "{}", String::from_utf8_lossy(&answer));
        serde_json::from_slice(&answer).unwrap()
    }

    /// The messages of a folder (a path or a well-known name), oldest first.
    pub fn messages(&self, mailbox: &str, folder: &str) -> Vec<Value> {
        let folder = folder.replace(' ', "%20").replace('/', "%2F");
        self.get(&format!("messages?mailbox={mailbox}&folder={folder}")).as_array().unwrap().clone()
    }

    /// The request log of a mailbox (Graph requests only).
    pub fn log(&self, mailbox: &str) -> Vec<Value> {
        self.get(&format!("log?mailbox={mailbox}")).as_array().unwrap().clone()
    }

    /// The whole request log, token requests included.
    pub fn all_requests(&self) -> Vec<Value> {
        self.get("log").as_array().unwrap().clone()
    }

    pub fn fault(&self, fault: Value) {
        self.post("fault", fault);
    }

    pub fn token(&self, client_id: &str) -> Password {
        Password::new(self.post("issue", json!({"client_id": client_id}))["access_token"].as_str().unwrap())
    }
}

impl Drop for Service {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}
