//! A real Redis for the cluster tests: Debian's redis-server (a master, or
//! a replica of one) and redis-sentinel, password-protected, on loopback
//! ports of their own, in a temporary directory, with an append-only file
//! as Chatwoot's Redis has one (so a restart keeps what was written).
//! Stopped on drop.

use std::fs;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use super::imap::free_port;
use super::process::wait_for;

/// With a space and signs that need escaping in a URL: the tests read it
/// from a password file.
pub const REDIS_PASSWORD: &str = "r3dis p@ss+word/=";

fn require_redis() {
    super::require("Redis (redis-server, redis-sentinel, redis-cli)", || {
        ["redis-server", "redis-sentinel", "redis-cli"]
            .iter()
            .all(|tool| Command::new(tool).arg("--version").output().is_ok_and(|o| o.status.success()))
    });
}

/// `redis-server` or `redis-sentinel` with its own configuration file.
pub struct Server {
    pub port: u16,
    dir: tempfile::TempDir,
    program: &'static str,
    child: Option<Child>,
    /// TLS only (rediss://), with a certificate for 127.0.0.1 from this private authority.
    pub ca: Option<PathBuf>,
}

impl Server {
    /// A master.
    pub fn start() -> Server {
        Server::redis_server("", false)
    }

    /// A replica of `master`.
    pub fn replica_of(master: &Server) -> Server {
        Server::redis_server(&format!("replicaof 127.0.0.1 {}\n", master.port), false)
    }

    /// A master that speaks TLS only, its certificate (for 127.0.0.1)
    /// issued by a private authority of its own, `ca`.
    pub fn start_tls() -> Server {
        Server::redis_server("", true)
    }

    fn redis_server(extra: &str, tls: bool) -> Server {
        let text = format!(
            "appendonly yes\nappendfsync everysec\nsave \"\"\nmasterauth \"{REDIS_PASSWORD}\"\n{extra}"
        );
        Server::spawn("redis-server", "redis.conf", &text, tls)
    }

    /// A sentinel watching `master` as `name`, deciding alone (quorum 1)
    /// that it is down after a second; it wants the password too, as
    /// Chatwoot's sentinels do.
    pub fn sentinel(master: &Server, name: &str) -> Server {
        let text = format!(
            "sentinel monitor {name} 127.0.0.1 {port} 1\n\
             sentinel auth-pass {name} \"{REDIS_PASSWORD}\"\n\
             sentinel down-after-milliseconds {name} 1000\n\
             sentinel failover-timeout {name} 10000\n",
            port = master.port
        );
        Server::spawn("redis-sentinel", "sentinel.conf", &text, false)
    }

    fn spawn(program: &'static str, file: &str, text: &str, tls: bool) -> Server {
        require_redis();
        let dir = tempfile::tempdir().unwrap();
        let ca = tls.then(|| certificates(dir.path()));
        let mut server = Server { port: 0, dir, program, child: None, ca };
        // A port found free can be taken before the server binds it: try others.
        for attempt in 1..=5 {
            server.port = free_port();
            let d = server.dir.path().display();
            let port = match tls {
                true => format!(
                    "port 0\ntls-port {}\ntls-cert-file {d}/server.pem\ntls-key-file {d}/server.key\ntls-ca-cert-file {d}/ca.pem\ntls-auth-clients no",
                    server.port
                ),
                false => format!("port {}", server.port),
            };
            let config = format!(
                "{port}\nbind 127.0.0.1\nrequirepass \"{REDIS_PASSWORD}\"\ndir {d}\nlogfile {}\n{text}",
                server.log_path().display()
            );
            // A sentinel rewrites its configuration file: it must be writable.
            fs::write(server.dir.path().join(file), config).unwrap();
            server.run(file);
            if server.ready(Duration::from_secs(10)) {
                return server;
            }
            server.kill();
            assert!(attempt < 5, "{program} did not start: {}", server.log());
        }
        unreachable!()
    }

    fn run(&mut self, file: &str) {
        let child = Command::new(self.program)
            .arg(self.dir.path().join(file))
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap();
        self.child = Some(child);
    }

    fn ready(&mut self, within: Duration) -> bool {
        let deadline = std::time::Instant::now() + within;
        while std::time::Instant::now() < deadline {
            if self.child.as_mut().is_some_and(|c| c.try_wait().unwrap().is_some()) {
                return false;
            }
            if self.cli(&["PING"]).trim() == "PONG" {
                return true;
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        false
    }

    fn log_path(&self) -> PathBuf {
        self.dir.path().join("server.log")
    }

    pub fn log(&self) -> String {
        fs::read_to_string(self.log_path()).unwrap_or_default()
    }

    /// redis://127.0.0.1:PORT/0, without the password.
    pub fn url(&self) -> String {
        format!("redis://127.0.0.1:{}/0", self.port)
    }

    /// `redis-cli ARGS` against this server, its answer.
    pub fn cli(&self, args: &[&str]) -> String {
        let mut command = Command::new("redis-cli");
        let port = self.port.to_string();
        command.args(["-h", "127.0.0.1", "-p", &port, "--no-auth-warning", "-a", REDIS_PASSWORD]);
        if let Some(ca) = &self.ca {
            command.arg("--tls").arg("--cacert").arg(ca);
        }
        let output = command.args(args).stdin(Stdio::null()).output().unwrap();
        String::from_utf8_lossy(&output.stdout).into_owned()
    }

    /// SIGTERM, as a service manager stops it (the append-only file is
    /// written out), and wait for the exit.
    pub fn stop(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = Command::new("kill").args(["-TERM", &child.id().to_string()]).status();
            let _ = child.wait();
        }
    }

    /// SIGKILL: a crash.
    pub fn kill(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }

    /// Start again on the same port with the same files.
    pub fn restart(&mut self) {
        let file = if self.program == "redis-sentinel" { "sentinel.conf" } else { "redis.conf" };
        self.run(file);
        let ready = self.ready(Duration::from_secs(20));
        assert!(ready, "{} did not start again: {}", self.program, self.log());
    }

    /// Redis's own answer to ROLE, first word: master, slave or sentinel.
    pub fn role(&self) -> String {
        self.cli(&["ROLE"]).lines().next().unwrap_or_default().to_string()
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        self.kill();
    }
}

/// Wait until `server` answers as a master, e.g. after a failover.
pub fn wait_for_master(server: &Server, within: Duration) {
    wait_for(within, "a master", || server.role() == "master");
}

/// A private authority (`DIR/ca.pem`) and a certificate for 127.0.0.1 it
/// issued (`DIR/server.pem`, `DIR/server.key`), made by openssl.
fn certificates(dir: &Path) -> PathBuf {
    fs::write(
        dir.join("ca.cnf"),
        "[req]\ndistinguished_name = dn\nprompt = no\nx509_extensions = v3_ca\n[dn]\nCN = chatwoot-ingress test Redis CA\n\
         [v3_ca]\nbasicConstraints = critical, CA:true, pathlen:0\nkeyUsage = critical, keyCertSign, cRLSign\n\
         [v3_server]\nbasicConstraints = critical, CA:false\nkeyUsage = critical, digitalSignature, keyEncipherment\n\
         extendedKeyUsage = serverAuth\nsubjectAltName = IP:127.0.0.1\n",
    )
    .unwrap();
    let openssl = |args: &str| {
        let args: Vec<&str> = args.split(' ').collect();
        let status =
            Command::new("openssl").args(&args).current_dir(dir).stderr(Stdio::null()).status().unwrap();
        assert!(status.success(), "openssl {args:?}");
    };
    openssl("req -x509 -new -newkey rsa:2048 -nodes -days 2 -config ca.cnf -keyout ca.key -out ca.pem");
    openssl("req -new -newkey rsa:2048 -nodes -subj /CN=127.0.0.1 -keyout server.key -out server.csr");
    openssl("x509 -req -in server.csr -CA ca.pem -CAkey ca.key -CAcreateserial -days 2 -extfile ca.cnf -extensions v3_server -out server.pem");
    dir.join("ca.pem")
}
