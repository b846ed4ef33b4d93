//! The built program as a service manager or a cron job starts it: its
//! output in files, stopped by signals, its CPU time read from /proc.

use std::fs;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use super::BIN;

pub struct Process {
    child: Child,
    out: PathBuf,
    err: PathBuf,
    _dir: tempfile::TempDir,
}

impl Process {
    /// `chatwoot-ingress ARGS` with an empty environment but PATH and `env`.
    pub fn start(args: &[&str], env: &[(&str, &str)]) -> Process {
        let dir = tempfile::tempdir().unwrap();
        let (out, err) = (dir.path().join("out"), dir.path().join("err"));
        let child = Command::new(BIN)
            .args(args)
            .env_clear()
            .env("PATH", "/usr/bin:/bin")
            .envs(env.iter().copied())
            .stdin(Stdio::null())
            .stdout(fs::File::create(&out).unwrap())
            .stderr(fs::File::create(&err).unwrap())
            .spawn()
            .unwrap();
        Process { child, out, err, _dir: dir }
    }

    /// `chatwoot-ingress watch --config CONFIG ARGS`.
    pub fn watch(config: &Path, args: &[&str], env: &[(&str, &str)]) -> Process {
        Process::start(&[&["watch", "--config", config.to_str().unwrap()], args].concat(), env)
    }

    /// Standard output, then standard error.
    pub fn output(&self) -> String {
        let mut text = fs::read_to_string(&self.out).unwrap_or_default();
        text.push_str(&fs::read_to_string(&self.err).unwrap_or_default());
        text
    }

    pub fn stdout(&self) -> String {
        fs::read_to_string(&self.out).unwrap_or_default()
    }

    pub fn pid(&self) -> String {
        self.child.id().to_string()
    }

    pub fn signal(&self, signal: &str) {
        assert!(Command::new("kill").args([&format!("-{signal}"), &self.pid()]).status().unwrap().success());
    }

    /// Send `signal` and wait for the exit: (code, how long it took).
    pub fn stop(&mut self, signal: &str) -> (i32, Duration) {
        let started = Instant::now();
        self.signal(signal);
        let code = self.wait(Duration::from_secs(60));
        (code, started.elapsed())
    }

    pub fn wait(&mut self, within: Duration) -> i32 {
        let deadline = Instant::now() + within;
        loop {
            if let Some(status) = self.child.try_wait().unwrap() {
                return status.code().unwrap_or(-1);
            }
            assert!(Instant::now() < deadline, "did not exit: {}", self.output());
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    /// CPU time (user + system) used so far, from /proc.
    pub fn cpu(&self) -> Duration {
        let stat = fs::read_to_string(format!("/proc/{}/stat", self.child.id())).unwrap();
        let fields: Vec<&str> = stat.rsplit_once(')').unwrap().1.split_whitespace().collect();
        let ticks: u64 = fields[11].parse::<u64>().unwrap() + fields[12].parse::<u64>().unwrap();
        // SAFETY: sysconf has no preconditions.
        let per_second = unsafe { libc::sysconf(libc::_SC_CLK_TCK) } as u64;
        Duration::from_millis(ticks * 1000 / per_second)
    }
}

impl Drop for Process {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// `watch --once ARGS`, to its end: (exit code, output).
pub fn once(config: &Path, args: &[&str]) -> (i32, String) {
    let mut process = Process::watch(config, &[&["--once"], args].concat(), &[]);
    let code = process.wait(Duration::from_secs(120));
    (code, process.output())
}

/// Wait until `check` holds, or panic with `what` after `within`.
pub fn wait_for(within: Duration, what: &str, mut check: impl FnMut() -> bool) {
    let deadline = Instant::now() + within;
    while !check() {
        assert!(Instant::now() < deadline, "not within {within:?}: {what}");
        std::thread::sleep(Duration::from_millis(100));
    }
}
