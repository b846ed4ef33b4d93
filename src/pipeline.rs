//! The per-message steps every command shares: prepare (size limit, From_
//! line, validation, X-Original-To), send (one relay, one retry policy) and
//! settle (a permanent refusal is kept in reject_dir). Commands decide where
//! messages come from and what to do afterwards, never how a message is
//! checked, sent or classified.

use std::io::{self, Read};
use std::path::PathBuf;

use crate::config::{Config, Sourced, Target};
use crate::message::{self, Input, Message, Raw};
use crate::outcome::{Cause, Class, Outcome};
use crate::reject;
use crate::relay::{Probe, Relay};
use crate::sys::io_reason;

/// Whether messages are sent, or only checked.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Mode {
    Send,
    /// Nothing is sent and nothing is written: no URL or password is needed.
    DryRun,
}

pub struct Pipeline {
    mode: Mode,
    /// Present when sending.
    relay: Option<(Relay, Target)>,
    max_size: Sourced<u64>,
    reject_dir: Option<PathBuf>,
}

/// A message after the first step.
pub enum Prepared {
    /// Valid, and exactly what the ingress is to receive.
    Ready(Message),
    /// Refused for good; `head` is what was read of it.
    Refused(Outcome, Raw),
}

impl Pipeline {
    pub fn new(config: &Config, mode: Mode) -> Result<Pipeline, Outcome> {
        let relay = match mode {
            Mode::DryRun => None,
            Mode::Send => {
                let target = config.target().map_err(|e| Outcome::new(Cause::Config, e.to_string()))?;
                let https = target.url.scheme() == "https";
                let ca_file = config.ca_file.as_ref().map(|c| c.value.as_path());
                Some((Relay::new(config.timeout.value, ca_file, https)?, target))
            }
        };
        let reject_dir = config.reject_dir.as_ref().map(|d| d.value.clone());
        Ok(Pipeline { mode, relay, max_size: config.max_size.clone(), reject_dir })
    }

    pub fn mode(&self) -> Mode {
        self.mode
    }

    /// The ingress URL, when sending.
    pub fn target(&self) -> Option<&Target> {
        self.relay.as_ref().map(|(_, target)| target)
    }

    /// One POST of `body` as text/plain with the credentials, for `check`.
    pub fn probe(&self, body: bytes::Bytes) -> Option<Probe> {
        self.relay.as_ref().map(|(relay, target)| relay.probe(target, body))
    }

    /// An envelope recipient from the command line, checked once for all:
    /// one address, nothing that could start another header.
    pub fn recipient(given: Option<&str>) -> Result<Option<String>, Outcome> {
        let Some(addr) = given.map(str::trim).filter(|a| !a.is_empty()) else { return Ok(None) };
        message::check_recipient(addr).map_err(|e| Outcome::new(Cause::Usage, e))?;
        Ok(Some(addr.to_string()))
    }

    /// Read one message from `reader`, up to one byte past max_size.
    pub fn read(&self, reader: &mut impl Read, recipient: Option<&str>) -> io::Result<Input> {
        message::read_limited(reader, self.max_size.value, recipient)
    }

    pub fn max_size(&self) -> u64 {
        self.max_size.value
    }

    /// Step 1: the message as the ingress is to receive it, or why never.
    pub fn prepare(&self, input: Input, recipient: Option<&str>) -> Prepared {
        let raw = match input {
            Input::Complete(raw) => raw,
            Input::TooLarge(head) => {
                let Sourced { value, source } = &self.max_size;
                let reason = format!("message too large: over max_size of {value} bytes ({source})");
                return Prepared::Refused(Outcome::new(Cause::TooLarge, reason), head);
            }
        };
        match Message::prepare(raw, recipient) {
            Ok(message) => Prepared::Ready(message),
            Err((invalid, raw)) => Prepared::Refused(Outcome::new(Cause::Invalid, invalid.to_string()), raw),
        }
    }

    /// Step 2: one delivery, retried inside the deadline as the relay's one
    /// policy says. A dry run sends nothing.
    pub fn send(&self, message: &Message) -> Outcome {
        match &self.relay {
            Some((relay, target)) => relay.deliver(target, &message.bytes),
            None => Outcome::new(Cause::DryRun, "dry run: the message is valid; nothing was sent"),
        }
    }

    /// Step 3: a permanent refusal is saved to reject_dir first, if there
    /// is one (`head`, then the rest of the message from `rest`). If it
    /// cannot be saved, the caller must keep the message: temporary.
    pub fn settle(&self, outcome: Outcome, head: &[u8], rest: &mut dyn Read) -> Outcome {
        let (Class::Permanent, Some(dir), Mode::Send) = (outcome.class(), &self.reject_dir, self.mode) else {
            return outcome;
        };
        match reject::save(dir, head, rest, &outcome.to_string()) {
            Ok(path) => outcome.saved_as(path),
            Err(e) => Outcome::new(
                Cause::RejectFailed,
                format!(
                    "could not save the refused message in {}: {} (it was refused: {outcome})",
                    dir.display(),
                    io_reason(&e)
                ),
            ),
        }
    }

    /// All three steps for a message that is read once, front to back
    /// (standard input, an IMAP fetch): `rest` is what follows `input`.
    pub fn deliver(
        &self,
        input: Input,
        recipient: Option<&str>,
        rest: &mut dyn Read,
    ) -> (Outcome, Option<Message>) {
        match self.prepare(input, recipient) {
            Prepared::Ready(message) => {
                let outcome = self.send(&message);
                (self.settle(outcome, &message.bytes, &mut io::empty()), Some(message))
            }
            Prepared::Refused(outcome, head) => (self.settle(outcome, head.input(), rest), None),
        }
    }
}
