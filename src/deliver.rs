//! The default command: one message from standard input to the ingress.

use std::io::{self, IsTerminal, Read, Write};

use crate::cli::DeliverArgs;
use crate::config::{io_reason, Config};
use crate::message::{self, Input, Message, OriginalTo};
use crate::outcome::{Cause, Class, Outcome};
use crate::reject;
use crate::relay::Relay;

const HOW_TO_USE: &str =
    "reads one email on standard input, e.g. `chatwoot-ingress --dry-run < message.eml`; see --help";

pub fn run(
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
    let recipient = args.recipient.as_deref();
    if let Some(Err(e)) = recipient.map(message::check_recipient) {
        return Outcome::new(Cause::Usage, e);
    }
    let config = match config {
        Ok(config) => config,
        Err(outcome) => return outcome,
    };
    let limit = config.max_size.value;
    let raw = match message::read_limited(stdin, limit, recipient) {
        Ok(Input::Complete(raw)) => raw,
        Ok(Input::TooLarge(head)) => {
            let reason =
                format!("message too large: over max_size of {limit} bytes ({})", config.max_size.source);
            return refuse(&config, Outcome::new(Cause::TooLarge, reason), head.input(), stdin);
        }
        Err(e) => {
            return Outcome::new(Cause::InputError, format!("cannot read standard input: {}", io_reason(&e)))
        }
    };
    let message = match Message::prepare(raw, recipient) {
        Ok(message) => message,
        Err((invalid, raw)) => {
            let outcome = Outcome::new(Cause::Invalid, invalid.to_string());
            return refuse(&config, outcome, raw.input(), &mut io::empty());
        }
    };

    if args.dry_run {
        return dry_run(&message, &config, recipient);
    }
    let relay =
        match config.target().map_err(|e| Outcome::new(Cause::Config, e.to_string())).and_then(Relay::new) {
            Ok(relay) => relay,
            Err(outcome) => return outcome,
        };
    let outcome = relay.deliver(&message);
    if outcome.class() == Class::Permanent {
        return refuse(&config, outcome, &message.bytes, &mut io::empty());
    }
    outcome
}

/// A permanent refusal, first saved to the reject directory if there is one.
/// If it cannot be saved, the caller must keep the message: temporary.
pub fn refuse(config: &Config, outcome: Outcome, head: &[u8], rest: &mut dyn Read) -> Outcome {
    let Some(dir) = &config.reject_dir else {
        return outcome;
    };
    match reject::save(&dir.value, head, rest, &outcome.to_string()) {
        Ok(path) => outcome.saved_as(path),
        Err(e) => Outcome::new(
            Cause::InputError,
            format!(
                "could not save the refused message in {}: {} (it was refused: {outcome})",
                dir.value.display(),
                io_reason(&e)
            ),
        ),
    }
}

fn dry_run(message: &Message, config: &Config, recipient: Option<&str>) -> Outcome {
    let parsed = mail_parser::MessageParser::default().parse_headers(&message.bytes[..]);
    let header = |name: &str| {
        parsed
            .as_ref()
            .and_then(|m| m.header_raw(name))
            .map(|v| v.trim().to_string())
            .unwrap_or_else(|| "(none)".into())
    };
    let original_to = match (message.original_to, recipient) {
        (OriginalTo::Added, Some(addr)) => format!("added ({addr})"),
        (OriginalTo::Replaced { previous }, Some(addr)) => {
            format!("added ({addr}); {previous} earlier renamed X-Previous-Original-To")
        }
        (OriginalTo::AlreadyThere, _) => "already present, left as is".into(),
        _ => "not added (no --recipient)".into(),
    };
    let destination = match &config.url {
        Some(url) => format!("{} (from {})", url.value, url.source),
        None => "(no url configured)".into(),
    };
    let mut out = io::stdout().lock();
    let lines = [
        ("size", format!("{} bytes", message.len())),
        ("Message-ID", header("Message-ID")),
        ("From", header("From")),
        ("To", header("To")),
        ("Subject", header("Subject")),
        ("From_ line", if message.from_line_stripped { "stripped" } else { "none" }.into()),
        ("X-Original-To", original_to),
        ("would POST to", destination),
    ];
    for (name, value) in lines {
        let _ = writeln!(out, "{name:>14}: {value}");
    }
    Outcome::new(Cause::DryRun, "dry run: the message is valid; nothing was sent")
}
