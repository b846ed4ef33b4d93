//! token_command: a program of the administrator's prints the access token
//! (for providers and setups we do not speak to ourselves). Run without a
//! shell, with no input, a deadline, and a minimal environment: ours may
//! hold the ingress password. What it prints on standard error is not
//! shown: a helper's diagnostics may quote a token or a secret.

use std::env;
use std::io::Read;
use std::os::unix::process::CommandExt;
use std::process::{self, Stdio};
use std::sync::mpsc;
use std::thread;
use std::time::{Duration, Instant};

use serde_json::{Map, Value};

use super::{is_token, lifetime, CommandFailure, Error, Printed};
use crate::secret::Password;
use crate::sys::{self, io_reason};

const TIMEOUT: Duration = Duration::from_secs(30);
/// A token is a few kilobytes at most.
const MAX_OUTPUT: u64 = 64 * 1024;
/// Passed on from our environment: what finding programs, files and the
/// account needs, nothing that could hold a secret of ours.
const PASSED: [&str; 7] = ["PATH", "HOME", "USER", "LOGNAME", "LANG", "LC_ALL", "TZ"];
const DEFAULT_PATH: &str = "/usr/local/bin:/usr/bin:/bin";

/// A program that prints an access token.
#[derive(Clone, Debug)]
pub struct Command {
    /// The program and its arguments (no shell).
    pub argv: Vec<String>,
    /// Set in its environment besides what is passed on from ours: which
    /// mailbox it is asked for, so that one helper can serve several.
    pub env: Vec<(String, String)>,
}

impl Command {
    /// Run it: the token on the first line of its output, or a JSON object
    /// with access_token (and expires_in, which lets the token be reused).
    pub(super) fn run(&self) -> Result<(Password, Option<Duration>), Error> {
        self.run_within(TIMEOUT)
    }

    fn run_within(&self, limit: Duration) -> Result<(Password, Option<Duration>), Error> {
        let program = &self.argv[0];
        let failed = |failure| Error::Command { program: program.clone(), failure };
        let mut command = process::Command::new(program);
        command.args(&self.argv[1..]).env_clear();
        for name in PASSED {
            if let Some(value) = env::var_os(name) {
                command.env(name, value);
            }
        }
        if env::var_os("PATH").is_none() {
            command.env("PATH", DEFAULT_PATH);
        }
        command
            .envs(self.env.iter().map(|(name, value)| (name, value)))
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            // Its own group, so that a hung helper goes with its children.
            .process_group(0);
        let mut child = command.spawn().map_err(|e| failed(CommandFailure::CannotRun(io_reason(&e))))?;
        let mut stdout = child.stdout.take().expect("stdout is piped");
        let (output_tx, output_rx) = mpsc::channel();
        thread::spawn(move || {
            let mut output = Vec::new();
            let read = (&mut stdout).take(MAX_OUTPUT).read_to_end(&mut output);
            let _ = output_tx.send(read.map(|_| output));
        });
        // Waited for without reaping it, so that its process group stays
        // ours to kill until we reap it.
        let (exit_tx, exit_rx) = mpsc::channel();
        let pid = child.id();
        thread::spawn(move || {
            let _ = exit_tx.send(sys::wait_for_exit(pid));
        });
        let deadline = Instant::now() + limit;
        let output = output_rx.recv_timeout(limit);
        let exited = exit_rx.recv_timeout(deadline.saturating_duration_since(Instant::now()));
        if !matches!(exited, Ok(Ok(()))) {
            sys::kill_process_group(pid);
            let _ = child.wait();
            return Err(failed(CommandFailure::TimedOut(limit)));
        }
        let status = child.wait().map_err(|e| failed(CommandFailure::Unreadable(io_reason(&e))))?;
        if !status.success() {
            return Err(failed(CommandFailure::Failed(status)));
        }
        let output = match output {
            Ok(Ok(output)) => output,
            Ok(Err(e)) => return Err(failed(CommandFailure::Unreadable(io_reason(&e)))),
            Err(_) => return Err(failed(CommandFailure::LeftRunning)),
        };
        parse(&output).map_err(|printed| failed(CommandFailure::Printed(printed)))
    }
}

/// The token a command printed, and its lifetime if it said. Errors never quote the output.
fn parse(output: &[u8]) -> Result<(Password, Option<Duration>), Printed> {
    let text = String::from_utf8_lossy(output);
    let text = text.trim_start_matches('\u{feff}').trim();
    if text.starts_with('{') {
        let object =
            serde_json::from_str::<Map<String, Value>>(text).map_err(|_| Printed::NotJson(output.len()))?;
        let token = object.get("access_token").and_then(Value::as_str).filter(|t| is_token(t));
        let token = token.ok_or(Printed::NoAccessToken)?;
        return Ok((Password::new(token), lifetime(&object)));
    }
    match text.lines().next().map(str::trim) {
        None | Some("") => Err(Printed::Nothing),
        Some(line) if is_token(line) => Ok((Password::new(line), None)),
        Some(line) => Err(Printed::NotAToken(line.len())),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_token_on_the_first_line_or_in_json() {
        let (token, life) = parse(b"tok.en-1\nignored\n").unwrap();
        assert_eq!((token.expose(), life), ("tok.en-1", None));
        let (token, life) = parse(br#" {"access_token": "t2", "expires_in": 60} "#).unwrap();
        assert_eq!((token.expose(), life), ("t2", Some(Duration::from_secs(60))));
        for bad in [&b""[..], b"\n\n", b"two words", b"{\"token\": \"secret-x\"}", b"{secret-y"] {
            let e = parse(bad).unwrap_err().to_string();
            assert!(!e.contains("secret") && !e.contains("words"), "{e}");
        }
    }

    #[test]
    fn the_command_gets_no_secret_from_our_environment_and_its_failure_is_named() {
        // A variable of ours that is not passed on: cargo sets several.
        let ours = env::vars().map(|(name, _)| name).find(|name| name.starts_with("CARGO_PKG_"));
        let command = |argv: Vec<String>| Command {
            argv,
            env: vec![
                ("CHATWOOT_INGRESS_MAILBOX".into(), "support".into()),
                ("CHATWOOT_INGRESS_USER".into(), "a@b".into()),
            ],
        };
        let argv = |script: &str| command(vec!["/bin/sh".to_string(), "-c".into(), script.into()]);
        let (token, _) = argv("env | tr -d '\\n' | tr -c 'A-Za-z0-9_' '.'").run().unwrap();
        let env = token.expose();
        assert!(env.contains("CHATWOOT_INGRESS_MAILBOX.support") && env.contains("PATH."), "{env}");
        if let Some(name) = ours {
            assert!(!env.contains(&format!("{name}.")), "{name} passed on: {env}");
        }
        let e = argv("echo secret-on-stderr >&2; exit 3").run().unwrap_err().to_string();
        assert!(e.contains("exited with status 3") && !e.contains("secret-on-stderr"), "{e}");
        let e = command(vec!["/nonexistent/helper".to_string()]).run().unwrap_err();
        assert!(matches!(e, Error::Command { failure: CommandFailure::CannotRun(_), .. }), "{e:?}");
    }

    #[test]
    fn a_command_that_hangs_is_stopped_with_its_children_and_one_that_leaves_a_child_is_named() {
        let sh =
            |script: &str| Command { argv: vec!["/bin/sh".into(), "-c".into(), script.into()], env: vec![] };
        let dir = tempfile::tempdir().unwrap();
        let pids = dir.path().join("pids");
        let hung = sh(&format!("sleep 60 & echo $! > {}; sleep 60", pids.display()));
        let e = hung.run_within(Duration::from_secs(1)).unwrap_err();
        assert!(matches!(e, Error::Command { failure: CommandFailure::TimedOut(_), .. }), "{e:?}");
        // Its child went with it (SIGKILL takes effect in its own time):
        // gone, or a zombie until init reaps it.
        let child = std::fs::read_to_string(&pids).unwrap();
        let dead = || {
            let stat = std::fs::read_to_string(format!("/proc/{}/stat", child.trim())).unwrap_or_default();
            stat.is_empty() || stat.contains(") Z ")
        };
        let given = Instant::now() + Duration::from_secs(10);
        while !dead() && Instant::now() < given {
            thread::sleep(Duration::from_millis(10));
        }
        assert!(dead(), "the command's child is still running");
        let e = sh("sleep 5 & echo tok-1").run_within(Duration::from_secs(1)).unwrap_err();
        assert!(matches!(e, Error::Command { failure: CommandFailure::LeftRunning, .. }), "{e:?}");
    }
}
