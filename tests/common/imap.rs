//! A real Dovecot for the tests, through tests/interop/imap/dovecot.sh: its
//! own work directory, loopback ports, a private CA, stopped on drop.

use std::net::TcpListener;
use std::path::{Path, PathBuf};
use std::process::Output;
use std::time::{Duration, Instant};

fn script() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/interop/imap/dovecot.sh")
}

fn run(args: &[&str], stdin: &[u8]) -> Output {
    super::run_script(&script(), args, stdin)
}

/// Whether Dovecot and doveadm are here (the script's `setup` only looks).
pub fn dovecot_available() -> bool {
    run(&["setup"], b"").status.success()
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
        let dovecot =
            Dovecot { work: tempfile::tempdir().unwrap(), plain_port: free_port(), tls_port: free_port() };
        let (plain, tls) = (dovecot.plain_port.to_string(), dovecot.tls_port.to_string());
        let mut args = vec!["start", dovecot.dir(), &plain, &tls];
        args.extend(introspection);
        dovecot.must(&args, b"");
        dovecot
    }

    fn dir(&self) -> &str {
        self.work.path().to_str().unwrap()
    }

    fn must(&self, args: &[&str], stdin: &[u8]) -> String {
        let output = run(args, stdin);
        assert!(
            output.status.success(),
            "dovecot.sh {args:?}: {}{}",
            String::from_utf8_lossy(&output.stdout),
            String::from_utf8_lossy(&output.stderr)
        );
        String::from_utf8_lossy(&output.stdout).into_owned()
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

    /// Wait until `check` holds, or panic with `what` after `within`.
    pub fn wait_for(within: Duration, what: &str, mut check: impl FnMut() -> bool) {
        let deadline = Instant::now() + within;
        while !check() {
            assert!(Instant::now() < deadline, "not within {within:?}: {what}");
            std::thread::sleep(Duration::from_millis(100));
        }
    }
}

impl Drop for Dovecot {
    fn drop(&mut self) {
        let _ = run(&["stop", self.dir()], b"");
    }
}
