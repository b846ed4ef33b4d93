//! The lifecycle every command shares: the signals that would end it caught
//! as its [`Signals`] policy says, a panic turned into the internal-error
//! outcome (never Rust's default output and exit 101), and the end reported
//! through the one [`Outcome`] in the caller's terms. A configuration that
//! does not load is an outcome through `From<ConfigError>` (src/config).
//!
//! Whatever happens on our side, the caller hears one status line and its
//! own temporary exit code: nothing that goes wrong here bounces mail.

use std::io::{self, IsTerminal, Write};
use std::process::ExitCode;
use std::sync::atomic::{AtomicBool, Ordering::SeqCst};
use std::sync::mpsc::{self, Receiver};
use std::sync::{Arc, Mutex};
use std::thread;

use crate::outcome::{Cause, Mta, Outcome};
use crate::sys;

/// What a command does about the signals that would end it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Signals {
    /// The system's defaults: nothing is in flight that a signal death
    /// could lose or that a caller could misread (check, oauth2 authorize).
    Default,
    /// The first ends the process at once, with a status line and the
    /// caller's temporary exit code, never as a signal death, which callers
    /// may take as permanent (Exim bounces a pipe killed by a signal).
    /// `left` says what that leaves (deliver: the message was not
    /// delivered; a retry sends the same bytes, so a POST that did complete
    /// is deduplicated).
    Exit { left: &'static str },
    /// The first asks the command to stop after the work in flight (see
    /// [`Stopping`]); a second ends the process at once, as `Exit` does
    /// (import, watch). With `reload`, SIGHUP asks for a reload instead and
    /// counts as no stop (watch as a service).
    Finish { left: &'static str, reload: bool },
}

/// A signal as a command under [`Signals::Finish`] acts on it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Heard {
    /// Finish what is in flight, then stop; the signal, to name it.
    Stop(libc::c_int),
    Reload,
}

/// What a command hears of the signals it finishes on.
pub struct Stopping {
    requested: Arc<AtomicBool>,
    heard: Mutex<Option<Receiver<Heard>>>,
}

impl Stopping {
    /// Whether a signal asked to stop.
    pub fn requested(&self) -> bool {
        self.requested.load(SeqCst)
    }

    /// The signals heard, in order, from the start: for the first caller
    /// (a command's main loop), None after.
    pub fn heard(&self) -> Option<Receiver<Heard>> {
        self.heard.lock().unwrap_or_else(|e| e.into_inner()).take()
    }
}

/// How a command ended: its outcome, the configuration's warnings (shown
/// after a success), and what `-v` adds after the status line, on stdout.
pub struct Ended {
    pub outcome: Outcome,
    pub warnings: Vec<String>,
    pub verbose: Vec<String>,
}

impl From<Outcome> for Ended {
    fn from(outcome: Outcome) -> Ended {
        Ended { outcome, warnings: Vec::new(), verbose: Vec::new() }
    }
}

/// Run a command: signals as `signals` says, `work`, a panic as an
/// internal error, and the end reported in `mta`'s terms.
pub fn command(mta: Mta, verbose: bool, signals: Signals, work: impl FnOnce(&Stopping) -> Ended) -> ExitCode {
    let ended = match catch_signals(signals, mta) {
        Ok(stopping) => catch(|| work(&stopping)).unwrap_or_else(Ended::from),
        Err(e) => bug(&format!("cannot catch signals: {}", sys::io_reason(&e))).into(),
    };
    let code = ended.outcome.report(mta, verbose, &ended.warnings);
    if verbose {
        // After the status line: callers such as getmail count anything
        // on stderr as a failure.
        let mut out = io::stdout().lock();
        for line in ended.verbose {
            let _ = writeln!(out, "{line}");
        }
    }
    code
}

/// `f`, or the internal error its panic is, with the panic's text and place.
pub fn catch<T>(f: impl FnOnce() -> T) -> Result<T, Outcome> {
    sys::catch_panic(f).map_err(|panic| bug(&panic))
}

/// An internal error: a bug, which the status line asks to report.
pub fn bug(what: &str) -> Outcome {
    Outcome::new(Cause::Bug, format!("internal error, please report it: {what}"))
}

/// Catch the signals that would end the process, on a thread of their own,
/// as `signals` says.
fn catch_signals(signals: Signals, mta: Mta) -> io::Result<Stopping> {
    let (tx, rx) = mpsc::channel();
    let stopping = Stopping { requested: Arc::new(AtomicBool::new(false)), heard: Mutex::new(Some(rx)) };
    if signals == Signals::Default {
        return Ok(stopping);
    }
    let mut caught = sys::catch_terminating_signals()?;
    let requested = stopping.requested.clone();
    thread::Builder::new().name("signals".into()).spawn(move || {
        for signal in caught.forever() {
            let heard = match signals {
                Signals::Finish { reload: true, .. } if signal == libc::SIGHUP => Heard::Reload,
                Signals::Finish { left, .. } if requested.swap(true, SeqCst) => {
                    // Nothing is lost: what was answered is recorded (the
                    // journal, the state files), the rest is still where it was.
                    exit_now(mta, format!("interrupted again: stopped at once; {left}"))
                }
                Signals::Finish { .. } => Heard::Stop(signal),
                Signals::Exit { left } => {
                    exit_now(mta, format!("interrupted by {}; {left}", sys::signal_name(signal)))
                }
                Signals::Default => continue,
            };
            // The command may have stopped listening: nothing to tell then.
            let _ = tx.send(heard);
        }
    })?;
    Ok(stopping)
}

/// End the process now with an interrupted outcome's status line.
fn exit_now(mta: Mta, reason: String) -> ! {
    let outcome = Outcome::new(Cause::Interrupted, reason);
    // Over a progress line on a terminal (import draws one).
    let clear = if io::stderr().is_terminal() { "\r\x1b[K" } else { "" };
    let _ = writeln!(io::stderr(), "{clear}{outcome}");
    std::process::exit(outcome.exit_code(mta).into())
}
