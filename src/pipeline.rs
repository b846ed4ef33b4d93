//! The per-message steps every command shares: prepare (size limit, From_
//! line, validation, X-Original-To), send (one relay, one retry policy) and
//! settle (a permanent refusal is kept in reject_dir). Commands decide where
//! messages come from and what to do afterwards, never how a message is
//! checked, sent or classified.

use std::io::{self, Read};
use std::path::PathBuf;

use reqwest::Url;

use crate::config::{Config, Route, Sourced, Target};
use crate::message::{self, Input, Message, Raw};
use crate::outcome::{Cause, Class, Outcome};
use crate::reject;
use crate::relay::{Probe, Relay};
use crate::sys::io_reason;

/// What the relay ingress, and nothing else, answers to a text/plain body.
pub const INGRESS_REFUSES: u16 = 415;

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
    relay: Option<Relay>,
    /// The top-level url and password, where mail goes unless a route says otherwise.
    default: Option<Target>,
    /// The top-level url and where it came from, for what a dry run shows.
    default_url: Option<Sourced<Url>>,
    routes: Vec<Route>,
    max_size: Sourced<u64>,
    reject_dir: Option<PathBuf>,
    /// Where the envelope recipient is, when no caller gives it.
    recipient_header: Option<String>,
}

/// A message after the first step.
pub enum Prepared {
    /// Valid, routed, and exactly what the ingress is to receive.
    Ready(Ready),
    /// Not to be sent: refused for good, or (temporary) no route for its
    /// recipient. `head` is what was read of it.
    Stopped(Outcome, Raw),
}

pub struct Ready {
    pub message: Message,
    route: Option<usize>,
}

impl Pipeline {
    pub fn new(config: &Config, mode: Mode) -> Result<Pipeline, Outcome> {
        // Routes may stand in for a top-level url, which is then only needed
        // for recipients no route covers.
        let default = match (config.target(), config.url.is_some() || config.routes.is_empty()) {
            (Ok(target), _) => Some(target),
            (Err(e), true) if mode == Mode::Send => return Err(e.into()),
            _ => None,
        };
        let routes = config.routes.clone();
        let relay = match mode {
            Mode::DryRun => None,
            Mode::Send => {
                let https =
                    default.iter().chain(routes.iter().map(|r| &r.target)).any(|t| t.url.scheme() == "https");
                let ca_file = config.ca_file.as_ref().map(|c| c.value.as_path());
                Some(Relay::new(config.timeout.value, ca_file, https)?)
            }
        };
        let reject_dir = config.reject_dir.as_ref().map(|d| d.value.clone());
        Ok(Pipeline {
            mode,
            relay,
            default,
            default_url: config.url.clone(),
            routes,
            max_size: config.max_size.clone(),
            reject_dir,
            recipient_header: config.recipient_header.as_ref().map(|h| h.value.clone()),
        })
    }

    /// Where mail for `recipient` goes: the route whose domains match its
    /// domain best, else the top-level url. None: no route and no default.
    pub fn route(&self, recipient: Option<&str>) -> Result<(Option<usize>, &Target), Outcome> {
        let domain = recipient
            .and_then(|r| r.rsplit_once('@'))
            .map(|(_, d)| d.trim_end_matches(['>', '.']).to_ascii_lowercase());
        let best = domain.as_deref().and_then(|domain| {
            self.routes
                .iter()
                .enumerate()
                .filter_map(|(i, route)| {
                    route.domains.iter().filter_map(|d| d.matches(domain)).max().map(|score| (score, i))
                })
                .max_by_key(|(score, i)| (*score, std::cmp::Reverse(*i)))
                .map(|(_, i)| i)
        });
        match (best, &self.default) {
            (Some(i), _) => Ok((Some(i), &self.routes[i].target)),
            (None, Some(target)) => Ok((None, target)),
            (None, None) => Err(Outcome::new(
                Cause::NoRoute,
                match domain {
                    Some(domain) => format!(
                        "no [[route]] is for {domain} and there is no top-level url for other domains"
                    ),
                    None => "no recipient to choose a [[route]] by, and no top-level url".to_string(),
                },
            )),
        }
    }

    /// The name of a route, for what a dry run or `check` prints.
    pub fn route_name(&self, route: Option<usize>) -> String {
        match route {
            Some(i) => {
                let r = &self.routes[i];
                let domains: Vec<String> = r.domains.iter().map(ToString::to_string).collect();
                format!("{} ({} for {})", r.target.url, r.name, domains.join(", "))
            }
            None => match &self.default_url {
                Some(url) => format!("{} (top-level url, from {})", url.value, url.source),
                None => "nowhere: no url is configured".to_string(),
            },
        }
    }

    pub fn mode(&self) -> Mode {
        self.mode
    }

    /// Every ingress mail may go to: the top-level one, then each route's.
    pub fn targets(&self) -> Vec<(String, &Target)> {
        let routes = self.routes.iter().enumerate().map(|(i, r)| (self.route_name(Some(i)), &r.target));
        self.default.iter().map(|t| (self.route_name(None), t)).chain(routes).collect()
    }

    /// One POST of `body` as text/plain with `target`'s credentials, for `check`.
    pub fn probe(&self, target: &Target, body: bytes::Bytes) -> Option<Probe> {
        self.relay.as_ref().map(|relay| relay.probe(target, body))
    }

    /// Whether every ingress mail may go to is there and takes our
    /// password: an empty text/plain POST, which only the relay ingress
    /// refuses with 415, and stores nothing (`watch`'s readiness).
    pub fn probe_ingress(&self) -> Result<(), Outcome> {
        for (name, target) in self.targets() {
            let Some(probe) = self.probe(target, bytes::Bytes::new()) else { continue };
            match probe.answer {
                crate::relay::Answer::Status(INGRESS_REFUSES, _) => {}
                crate::relay::Answer::Status(status, location) => {
                    let outcome = crate::relay::explain(target, status, location.as_deref());
                    return Err(match outcome.class() {
                        Class::Success => Outcome::new(
                            Cause::UnexpectedStatus,
                            format!("HTTP {status} to an empty probe of {name}: not an Action Mailbox relay ingress"),
                        ),
                        _ => outcome,
                    });
                }
                crate::relay::Answer::Failed { outcome, .. } => return Err(outcome),
            }
        }
        Ok(())
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

    /// The relay's deadline for one delivery, retries included.
    pub fn timeout(&self) -> std::time::Duration {
        self.relay.as_ref().map_or(std::time::Duration::ZERO, Relay::timeout)
    }

    pub fn max_size(&self) -> u64 {
        self.max_size.value
    }

    /// Step 1: the message as the ingress is to receive it, and where it
    /// goes; or why never, or why not now. Without a `recipient`, it is
    /// taken from the configured recipient_header, if any.
    pub fn prepare(&self, input: Input, recipient: Option<&str>) -> Prepared {
        let raw = match input {
            Input::Complete(raw) => raw,
            Input::TooLarge(head) => {
                let Sourced { value, source } = &self.max_size;
                let reason = format!("message too large: over max_size of {value} bytes ({source})");
                return Prepared::Stopped(Outcome::new(Cause::TooLarge, reason), head);
            }
        };
        let from_header = match (recipient, &self.recipient_header) {
            (None, Some(header)) => message::recipient_from_header(raw.input(), header),
            _ => None,
        };
        let recipient = recipient.or(from_header.as_deref());
        let route = match self.route(recipient) {
            Ok((route, _)) => route,
            Err(outcome) if self.mode == Mode::Send => return Prepared::Stopped(outcome, raw),
            // A dry run needs no url: it says where the message would go.
            Err(_) => None,
        };
        match Message::prepare(raw, recipient) {
            Ok(message) => Prepared::Ready(Ready { message, route }),
            Err((invalid, raw)) => Prepared::Stopped(Outcome::new(Cause::Invalid, invalid.to_string()), raw),
        }
    }

    /// Step 2: one delivery, retried inside the deadline as the relay's one
    /// policy says. A dry run sends nothing.
    pub fn send(&self, ready: &Ready) -> Outcome {
        let target = match ready.route {
            Some(i) => Some(&self.routes[i].target),
            None => self.default.as_ref(),
        };
        match (&self.relay, target) {
            (Some(relay), Some(target)) => relay.deliver(target, &ready.message.bytes),
            _ => Outcome::new(Cause::DryRun, "dry run: the message is valid; nothing was sent"),
        }
    }

    /// Which route a prepared message takes, for what a dry run prints.
    pub fn route_of(&self, ready: &Ready) -> String {
        self.route_name(ready.route)
    }

    /// Whether step 3 keeps a copy of refusals (a reject_dir, and sending).
    pub fn keeps_refusals(&self) -> bool {
        self.reject_dir.is_some() && self.mode == Mode::Send
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
    ) -> (Outcome, Option<Ready>) {
        match self.prepare(input, recipient) {
            Prepared::Ready(ready) => {
                let outcome = self.send(&ready);
                (self.settle(outcome, &ready.message.bytes, &mut io::empty()), Some(ready))
            }
            Prepared::Stopped(outcome, head) => (self.settle(outcome, head.input(), rest), None),
        }
    }
}
