//! The default command: one message from standard input to the ingress, as
//! a mail system's pipe runs it. Whatever happens (a signal, a panic, a bad
//! configuration), the caller hears one status line and its own exit code.

use std::io::{self, IsTerminal, Read, Write};
use std::process::ExitCode;

use crate::cli::DeliverArgs;
use crate::config::{Config, Overrides};
use crate::headers::RoutingView;
use crate::log;
use crate::message::{Message, OriginalTo};
use crate::outcome::{Cause, Outcome};
use crate::pipeline::{Mode, Pipeline};
use crate::run::{self, Ended, Signals};
use crate::sys;

const HOW_TO_USE: &str =
    "reads one email on standard input, e.g. `chatwoot-ingress --dry-run < message.eml`; see --help";

pub fn main(args: &DeliverArgs, overrides: &Overrides) -> ExitCode {
    let signals = Signals::Exit { left: "the message was not delivered" };
    run::command(args.mta, args.verbose, signals, |_| {
        #[cfg(feature = "test-hooks")]
        crate::hooks::point("deliver");
        let config = Config::load(overrides).map_err(Outcome::from);
        let warnings = config.as_ref().map(|c| c.warnings.clone()).unwrap_or_default();
        let verbose = config.as_ref().map(sources).unwrap_or_default();
        Ended { outcome: from_stdin(args, config, &mut io::stdin().lock()), warnings, verbose }
    })
}

fn from_stdin(
    args: &DeliverArgs,
    config: Result<Config, Outcome>,
    stdin: &mut (impl Read + IsTerminal),
) -> Outcome {
    if stdin.is_terminal() {
        return Outcome::new(Cause::Usage, HOW_TO_USE);
    }
    let outcome = deliver(args, config, stdin);
    // Whatever happened, read to the end: OpenSMTPD fails a delivery agent
    // that exits before reading all of its input, and logs that instead of
    // our reason.
    let _ = io::copy(stdin, &mut io::sink());
    outcome
}

fn deliver(args: &DeliverArgs, config: Result<Config, Outcome>, stdin: &mut impl Read) -> Outcome {
    let recipient = match Pipeline::recipient(args.recipient.as_deref()) {
        Ok(recipient) => recipient,
        Err(outcome) => return outcome,
    };
    let recipient = recipient.as_deref();
    let config = match config {
        Ok(config) => config,
        Err(outcome) => return outcome,
    };
    let mode = if args.dry_run { Mode::DryRun } else { Mode::Send };
    let pipeline = match Pipeline::new(&config, mode) {
        Ok(pipeline) => pipeline,
        Err(outcome) => return outcome,
    };
    let input = match pipeline.read(stdin, recipient) {
        Ok(input) => input,
        Err(e) => {
            return Outcome::new(
                Cause::Unreadable,
                format!("cannot read standard input: {}", sys::io_reason(&e)),
            )
        }
    };
    let (outcome, ready) = pipeline.deliver(input, recipient, stdin);
    if let (Mode::DryRun, Some(ready)) = (mode, &ready) {
        preview(&ready.message, &pipeline.route_of(ready), recipient);
    }
    outcome
}

/// Where the URL and the password came from, for `-v`.
fn sources(config: &Config) -> Vec<String> {
    let mut lines = Vec::new();
    if let Some(url) = &config.url {
        lines.push(format!("url {} (from {})", url.value, url.source));
    }
    if let Some(password) = &config.password {
        lines.push(format!("password **** (from {})", password.source));
    }
    lines
}

/// What a dry run shows: what would be sent and where, and what Chatwoot
/// will route on, read from the bytes that would be sent.
fn preview(message: &Message, destination: &str, recipient: Option<&str>) {
    let view = RoutingView::of(&message.bytes);
    let list = |items: &[String]| if items.is_empty() { "(none)".to_string() } else { items.join(", ") };
    let one = |item: &Option<String>| item.clone().unwrap_or_else(|| "(none)".into());
    let original_to = match (&message.original_to, recipient) {
        (OriginalTo::Added, Some(addr)) => format!("{addr} (added)"),
        (OriginalTo::Replaced { previous }, Some(addr)) => {
            format!("{addr} (added; the {previous} earlier one(s) kept as X-Previous-Original-To)")
        }
        (OriginalTo::AlreadyThere, Some(addr)) => format!("{addr} (already there, left as is)"),
        _ => match view.x_original_to.as_slice() {
            [] => "(none: no --recipient)".into(),
            [one] => format!("{one} (the message's own; no --recipient)"),
            many => format!("{} values, which Chatwoot ignores (no --recipient to replace them)", many.len()),
        },
    };
    let conversation = match &view.reply_to_conversation {
        Some(uuid) => format!("reply to conversation {uuid}"),
        None => "(no reply+uuid address: an inbox is chosen by To, Cc, X-Original-To, then Bcc)".into(),
    };
    let lines = [
        ("size", format!("{} bytes", message.size())),
        ("Message-ID", one(&view.message_id)),
        ("From", list(&view.from)),
        ("To", list(&view.to)),
        ("Cc", list(&view.cc)),
        ("Subject", one(&view.subject)),
        ("From_ line", if message.from_line_stripped { "stripped" } else { "none" }.into()),
        ("X-Original-To", original_to),
        ("conversation", conversation),
        ("would POST to", destination.to_string()),
    ];
    let mut out = io::stdout().lock();
    for (name, value) in lines {
        // The message's own text drives no terminal (a decoded Subject may hold anything).
        let _ = writeln!(out, "{name:>14}: {}", log::escape(&value));
    }
}
