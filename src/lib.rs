//! chatwoot-ingress: relay email from a mail server to Chatwoot's Action
//! Mailbox relay ingress, and tell the mail server what happened in its own
//! language.
//!
//! The pipeline, one module each: [`cli`] and [`config`] say what to do,
//! [`message`] reads and validates the input, [`relay`] POSTs it, and
//! [`outcome`] turns the result into a status line and an exit code.

pub mod check;
pub mod cli;
pub mod config;
pub mod deliver;
pub mod docs;
pub mod headers;
pub mod import;
pub mod message;
pub mod outcome;
pub mod reject;
pub mod relay;

use std::panic::{self, AssertUnwindSafe};
use std::process::ExitCode;
use std::sync::Mutex;

use cli::{Cli, Command};
use config::Config;
use outcome::{Cause, Mta, Outcome};

/// Run a parsed command line to its exit code. A panic in any command is
/// caught and reported in that command's own terms, never as exit 101.
pub fn run(cli: Cli) -> ExitCode {
    let panic_message = quiet_panics();
    let mta = cli.deliver.mta;
    let result = panic::catch_unwind(AssertUnwindSafe(|| match &cli.command {
        None => deliver_one(&cli),
        Some(Command::Check(args)) => check::run(args, &cli.config, mta),
        Some(Command::Import(args)) => import::run(args, &cli.config),
    }));
    result.unwrap_or_else(|_| {
        let message = panic_message.lock().map(|m| m.clone()).unwrap_or_default();
        match &cli.command {
            Some(Command::Check(_)) => check::internal_error(&message),
            _ => Outcome::new(Cause::Bug, format!("internal error, please report it: {message}")).report(
                mta,
                false,
                &[],
            ),
        }
    })
}

/// Deliver mode: a signal ends it as a temporary outcome, so a shutdown
/// never loses or bounces mail. (Import handles signals itself: it finishes
/// what is in flight.)
fn deliver_one(cli: &Cli) -> ExitCode {
    exit_on_signal(cli.deliver.mta);
    // The fault-injection tests need a real panic in the real binary.
    if std::env::var_os("CHATWOOT_INGRESS_TEST_PANIC").is_some() {
        panic!("CHATWOOT_INGRESS_TEST_PANIC is set");
    }
    let config = Config::load(&cli.config).map_err(|e| Outcome::new(Cause::Config, e.to_string()));
    let warnings = config.as_ref().map(|c| c.warnings.clone()).unwrap_or_default();
    let outcome = deliver::run(&cli.deliver, config, &mut std::io::stdin().lock());
    outcome.report(cli.deliver.mta, cli.deliver.verbose, &warnings)
}

/// Replace the default panic output (which would come before our status
/// line) by remembering the message for the status line.
fn quiet_panics() -> &'static Mutex<String> {
    static MESSAGE: Mutex<String> = Mutex::new(String::new());
    panic::set_hook(Box::new(|info| {
        let text = match (info.payload().downcast_ref::<&str>(), info.payload().downcast_ref::<String>()) {
            (Some(s), _) => s.to_string(),
            (_, Some(s)) => s.clone(),
            _ => "panic".to_string(),
        };
        let place = info.location().map(|l| format!(" at {}:{}", l.file(), l.line())).unwrap_or_default();
        if let Ok(mut message) = MESSAGE.lock() {
            *message = format!("{text}{place}");
        }
    }));
    &MESSAGE
}

/// A signal mid-delivery must not be a signal death, which callers may
/// treat as permanent: report a temporary outcome and exit. A retry later
/// sends the same bytes, so a POST that did complete is deduplicated.
fn exit_on_signal(mta: Mta) {
    use signal_hook::consts::{SIGHUP, SIGINT, SIGTERM};
    let Ok(mut signals) = signal_hook::iterator::Signals::new([SIGTERM, SIGINT, SIGHUP]) else {
        return;
    };
    std::thread::spawn(move || {
        if let Some(signal) = signals.forever().next() {
            let name = match signal {
                SIGTERM => "SIGTERM",
                SIGINT => "SIGINT",
                _ => "SIGHUP",
            };
            let outcome = Outcome::new(
                Cause::Interrupted,
                format!("interrupted by {name}; the message was not delivered"),
            );
            let code = outcome.exit_code(mta);
            let _ = outcome.report(mta, false, &[]);
            std::process::exit(code.into());
        }
    });
}
