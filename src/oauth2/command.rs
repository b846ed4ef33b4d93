//! token_command: a program of the administrator's prints the access token
//! (for providers and setups we do not speak to ourselves). Run without a
//! shell, with no input, a deadline, and a minimal environment: ours may
//! hold the ingress password. What it prints on standard error is not
//! shown: a helper's diagnostics may quote a token or a secret.

use std::env;
use std::io::Read;
use std::os::unix::process::{CommandExt, ExitStatusExt};
use std::process::{Command, Stdio};
use std::sync::mpsc;
use std::thread;
use std::time::{Duration, Instant};

use serde_json::{Map, Value};

use super::{is_token, lifetime, TokenError};
use crate::config::Password;
use crate::outcome::Cause;
use crate::sys::io_reason;

const TIMEOUT: Duration = Duration::from_secs(30);
/// A token is a few kilobytes at most.
const MAX_OUTPUT: u64 = 64 * 1024;
/// Passed on from our environment: what finding programs, files and the
/// account needs, nothing that could hold a secret of ours.
const PASSED: [&str; 7] = ["PATH", "HOME", "USER", "LOGNAME", "LANG", "LC_ALL", "TZ"];
const DEFAULT_PATH: &str = "/usr/local/bin:/usr/bin:/bin";
/// Tell the command which mailbox it is asked for, so one helper can serve several.
pub const ENV_MAILBOX: &str = "CHATWOOT_INGRESS_MAILBOX";
pub const ENV_USER: &str = "CHATWOOT_INGRESS_USER";

/// Run `argv`: the token on the first line of its output, or a JSON object
/// with access_token (and expires_in, which lets the token be reused).
pub(super) fn run(
    argv: &[String],
    mailbox: &str,
    user: &str,
) -> Result<(Password, Option<Duration>), TokenError> {
    let program = &argv[0];
    let see_why = "run it by hand, as the user watch runs as, to see why";
    let mut command = Command::new(program);
    command.args(&argv[1..]).env_clear();
    for name in PASSED {
        if let Some(value) = env::var_os(name) {
            command.env(name, value);
        }
    }
    if env::var_os("PATH").is_none() {
        command.env("PATH", DEFAULT_PATH);
    }
    command
        .env(ENV_MAILBOX, mailbox)
        .env(ENV_USER, user)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        // Its own group, so that a hung helper goes with its children.
        .process_group(0);
    let mut child = command.spawn().map_err(|e| {
        TokenError::new(
            Cause::Config,
            format!("cannot run token_command {program}: {}", io_reason(&e)),
            "token_command's first item must be a program that the user watch runs as may run",
        )
    })?;
    let mut stdout = child.stdout.take().expect("stdout is piped");
    let (tx, rx) = mpsc::channel();
    thread::spawn(move || {
        let mut output = Vec::new();
        let read = (&mut stdout).take(MAX_OUTPUT).read_to_end(&mut output);
        let _ = tx.send(read.map(|_| output));
    });
    let deadline = Instant::now() + TIMEOUT;
    let output = rx.recv_timeout(TIMEOUT);
    let status = loop {
        match child.try_wait() {
            Ok(Some(status)) => break Some(status),
            Ok(None) if Instant::now() < deadline => thread::sleep(Duration::from_millis(20)),
            _ => break None,
        }
    };
    let Some(status) = status else {
        // SAFETY: kill(2) on the process group we made for the child.
        unsafe { libc::kill(-(child.id() as libc::pid_t), libc::SIGKILL) };
        let _ = child.wait();
        return Err(TokenError::new(
            Cause::Timeout,
            format!(
                "token_command {program} printed no token within {}s, and was stopped",
                TIMEOUT.as_secs()
            ),
            see_why,
        ));
    };
    if !status.success() {
        let how = match (status.code(), status.signal()) {
            (Some(code), _) => format!("exited with status {code}"),
            (None, Some(signal)) => format!("was killed by signal {signal}"),
            _ => "failed".into(),
        };
        return Err(TokenError::new(
            Cause::TokenRefused,
            format!("token_command {program} {how} (what it wrote on standard error is not shown: it could hold a secret)"),
            see_why,
        ));
    }
    let output = match output {
        Ok(Ok(output)) => output,
        Ok(Err(e)) => {
            let reason = format!("cannot read what token_command {program} printed: {}", io_reason(&e));
            return Err(TokenError::new(Cause::TokenRefused, reason, see_why));
        }
        Err(_) => {
            let reason =
                format!("token_command {program} exited, but a process it started keeps its output open");
            return Err(TokenError::new(
                Cause::TokenRefused,
                reason,
                "the command must not leave a process behind",
            ));
        }
    };
    parse(&output).map_err(|what| {
        TokenError::new(
            Cause::TokenRefused,
            format!("token_command {program} {what}"),
            "it must print the access token on its first line, or a JSON object with access_token",
        )
    })
}

/// The token a command printed, and its lifetime if it said. Errors never quote the output.
fn parse(output: &[u8]) -> Result<(Password, Option<Duration>), String> {
    let text = String::from_utf8_lossy(output);
    let text = text.trim_start_matches('\u{feff}').trim();
    if text.starts_with('{') {
        let object = serde_json::from_str::<Map<String, Value>>(text).map_err(|_| {
            format!("printed something like JSON that is not ({} bytes, not shown)", output.len())
        })?;
        let token = object.get("access_token").and_then(Value::as_str).filter(|t| is_token(t));
        let token = token.ok_or("printed JSON without a usable access_token")?;
        return Ok((Password::new(token), lifetime(&object)));
    }
    match text.lines().next().map(str::trim) {
        None | Some("") => Err("printed no token".into()),
        Some(line) if is_token(line) => Ok((Password::new(line), None)),
        Some(line) => {
            Err(format!("printed a first line that is not a token ({} bytes, not shown)", line.len()))
        }
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
            let e = parse(bad).unwrap_err();
            assert!(!e.contains("secret") && !e.contains("words"), "{e}");
        }
    }

    #[test]
    fn the_command_gets_no_secret_from_our_environment_and_its_failure_is_named() {
        // A variable of ours that is not passed on: cargo sets several.
        let ours = env::vars().map(|(name, _)| name).find(|name| name.starts_with("CARGO_PKG_"));
        let argv = |script: &str| vec!["/bin/sh".to_string(), "-c".into(), script.into()];
        let (token, _) = run(&argv("env | tr -d '\\n' | tr -c 'A-Za-z0-9_' '.'"), "support", "a@b").unwrap();
        let env = token.expose();
        assert!(env.contains("CHATWOOT_INGRESS_MAILBOX.support") && env.contains("PATH."), "{env}");
        if let Some(name) = ours {
            assert!(!env.contains(&format!("{name}.")), "{name} passed on: {env}");
        }
        let e = run(&argv("echo secret-on-stderr >&2; exit 3"), "support", "a@b").unwrap_err();
        assert!(e.reason.contains("exited with status 3") && !e.reason.contains("secret-on-stderr"), "{e}");
        let e = run(&["/nonexistent/helper".to_string()], "support", "a@b").unwrap_err();
        assert_eq!(e.cause, Cause::Config);
    }
}
