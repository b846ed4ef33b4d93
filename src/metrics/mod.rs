//! What a running `watch` tells a monitoring system: Prometheus metrics
//! (text exposition format 0.0.4), liveness and readiness, and the small
//! HTTP server that serves them ([`serve`]).
//!
//! Self-contained: it knows nothing of the engine that feeds it, only mailbox
//! and folder names (from the configuration) and numbers. No message content
//! and no secret ever reaches it.
//!
//! The registry is written by hand rather than with the `prometheus` crate:
//! that crate keys each series by a hash of its label values run together
//! without a separator, so mailbox `a` with folder `bc` and mailbox `ab` with
//! folder `c` would silently share one counter. Here a series is keyed by its
//! label values themselves, which also gives a deterministic order.
//!
//! Every update takes one mutex for a map lookup and an addition; a scrape
//! holds it only while it formats the text (microseconds), never while it
//! talks to the network, so a slow scraper never stalls delivery.

mod health;
pub(crate) mod probe;
mod server;

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

pub use health::{Health, Heartbeat};
pub use server::{check_listen, serve, Limits, ServerHandle, LIMITS};

/// What became of one message, as the `outcome` label says it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum MessageOutcome {
    /// The ingress answered 2xx.
    Delivered,
    /// Refused for good (bad message, or the ingress said never).
    Refused,
    /// Left on the source to be tried again later.
    Deferred,
}

impl MessageOutcome {
    const ALL: [MessageOutcome; 3] =
        [MessageOutcome::Delivered, MessageOutcome::Refused, MessageOutcome::Deferred];

    fn label(self) -> &'static str {
        match self {
            MessageOutcome::Delivered => "delivered",
            MessageOutcome::Refused => "refused",
            MessageOutcome::Deferred => "deferred",
        }
    }
}

/// Upper bounds (seconds) of the delivery-duration buckets: a POST to a
/// nearby Rails takes tens of milliseconds; the relay gives up after its
/// timeout (30 s by default), so 60 s bounds every normal attempt.
pub const DURATION_BUCKETS: [f64; 10] = [0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0];

const PREFIX: &str = "chatwoot_ingress_";

/// The metrics of one process, shared by every worker thread and the server.
pub struct Metrics {
    version: String,
    state: Mutex<State>,
}

#[derive(Default)]
struct State {
    /// mailbox → folder → count by outcome (in `MessageOutcome::ALL` order).
    messages: BTreeMap<String, BTreeMap<String, [u64; 3]>>,
    durations: BTreeMap<String, Histogram>,
    /// mailbox → folder → up.
    up: BTreeMap<String, BTreeMap<String, bool>>,
    last_delivery: BTreeMap<String, f64>,
    token_expiry: BTreeMap<String, f64>,
    lease_held: BTreeMap<String, bool>,
}

#[derive(Default)]
struct Histogram {
    /// Observations per bucket, not cumulative; the last is above every bound.
    counts: [u64; DURATION_BUCKETS.len() + 1],
    sum: f64,
}

impl Metrics {
    /// An empty registry; `version` goes into `chatwoot_ingress_build_info`.
    pub fn new(version: &str) -> Arc<Metrics> {
        Arc::new(Metrics { version: version.to_string(), state: Mutex::new(State::default()) })
    }

    fn state(&self) -> MutexGuard<'_, State> {
        // A panic elsewhere cannot leave a count half-written: go on with it.
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Count one message of `mailbox`/`folder`, and observe how long its POST
    /// took when there was one. A delivered message also sets the mailbox's
    /// last delivery time to now.
    pub fn message(&self, mailbox: &str, folder: &str, outcome: MessageOutcome, post: Option<Duration>) {
        let now = (outcome == MessageOutcome::Delivered).then(|| seconds(SystemTime::now()));
        let mut state = self.state();
        let counts = slot(slot(&mut state.messages, mailbox), folder);
        counts[outcome as usize] += 1;
        if let Some(post) = post {
            slot(&mut state.durations, mailbox).observe(post.as_secs_f64());
        }
        if let Some(now) = now {
            *slot(&mut state.last_delivery, mailbox) = now;
        }
    }

    /// Whether a folder's worker is connected and idling or polling. Also
    /// makes the folder's message counters exist (at 0), so that rates work
    /// from the first scrape.
    pub fn mailbox_up(&self, mailbox: &str, folder: &str, up: bool) {
        let mut state = self.state();
        slot(slot(&mut state.messages, mailbox), folder);
        *slot(slot(&mut state.up, mailbox), folder) = up;
    }

    /// When the mailbox's current OAuth2 access token expires.
    pub fn token_expiry(&self, mailbox: &str, at: SystemTime) {
        let at = seconds(at);
        *slot(&mut self.state().token_expiry, mailbox) = at;
    }

    /// Whether this replica holds the mailbox's lease (cluster mode); the
    /// metric is absent until this is first called.
    pub fn lease_held(&self, mailbox: &str, held: bool) {
        *slot(&mut self.state().lease_held, mailbox) = held;
    }

    /// Drop every series of `mailbox`, which a reload removed from the
    /// configuration (else its `mailbox_up` would stay 0 and alert forever).
    pub fn forget(&self, mailbox: &str) {
        let mut state = self.state();
        state.messages.remove(mailbox);
        state.durations.remove(mailbox);
        state.up.remove(mailbox);
        state.last_delivery.remove(mailbox);
        state.token_expiry.remove(mailbox);
        state.lease_held.remove(mailbox);
    }

    /// The text exposition (format 0.0.4): families in a fixed order, series
    /// sorted by their label values; a family with no series is left out.
    pub fn render(&self) -> String {
        let mut out = String::with_capacity(4096);
        family(&mut out, &BUILD_INFO);
        sample(&mut out, &BUILD_INFO, "", &[("version", &self.version)], 1.0);
        let state = self.state();
        if !state.messages.is_empty() {
            family(&mut out, &MESSAGES);
        }
        for (mailbox, folders) in &state.messages {
            for (folder, counts) in folders {
                for outcome in MessageOutcome::ALL {
                    let labels =
                        [("mailbox", mailbox.as_str()), ("folder", folder), ("outcome", outcome.label())];
                    sample(&mut out, &MESSAGES, "", &labels, counts[outcome as usize] as f64);
                }
            }
        }
        if !state.durations.is_empty() {
            family(&mut out, &DURATION);
        }
        for (mailbox, histogram) in &state.durations {
            let mut cumulative = 0;
            for (i, count) in histogram.counts.iter().enumerate() {
                cumulative += count;
                let bound = DURATION_BUCKETS.get(i).map_or("+Inf".to_string(), |b| b.to_string());
                sample(
                    &mut out,
                    &DURATION,
                    "_bucket",
                    &[("mailbox", mailbox), ("le", &bound)],
                    cumulative as f64,
                );
            }
            sample(&mut out, &DURATION, "_sum", &[("mailbox", mailbox)], histogram.sum);
            sample(&mut out, &DURATION, "_count", &[("mailbox", mailbox)], cumulative as f64);
        }
        if !state.up.is_empty() {
            family(&mut out, &MAILBOX_UP);
        }
        for (mailbox, folders) in &state.up {
            for (folder, up) in folders {
                sample(&mut out, &MAILBOX_UP, "", &[("mailbox", mailbox), ("folder", folder)], flag(*up));
            }
        }
        per_mailbox(&mut out, &LAST_DELIVERY, &state.last_delivery, |at| *at);
        per_mailbox(&mut out, &TOKEN_EXPIRY, &state.token_expiry, |at| *at);
        per_mailbox(&mut out, &LEASE_HELD, &state.lease_held, |held| flag(*held));
        out
    }
}

/// A metric family: its name (after the prefix), type and help text.
struct Family(&'static str, &'static str, &'static str);

const BUILD_INFO: Family =
    Family("build_info", "gauge", "The version of chatwoot-ingress that is running; always 1.");
const MESSAGES: Family = Family(
    "messages_total",
    "counter",
    "Messages handed to the ingress, by what became of them: delivered (2xx), refused for good, \
     or deferred to be tried again.",
);
const DURATION: Family = Family(
    "delivery_duration_seconds",
    "histogram",
    "How long the ingress took to answer one message, the relay's retries included.",
);
const MAILBOX_UP: Family = Family(
    "mailbox_up",
    "gauge",
    "1 while the folder's worker is connected and idling or polling, 0 otherwise.",
);
const LAST_DELIVERY: Family = Family(
    "last_delivery_timestamp_seconds",
    "gauge",
    "When the ingress last answered 2xx for a message of the mailbox (Unix time).",
);
const TOKEN_EXPIRY: Family = Family(
    "oauth2_token_expiry_timestamp_seconds",
    "gauge",
    "When the mailbox's current OAuth2 access token expires (Unix time).",
);
const LEASE_HELD: Family = Family(
    "lease_held",
    "gauge",
    "1 while this replica holds the mailbox's lease and may fetch from it, 0 otherwise.",
);

impl Histogram {
    fn observe(&mut self, seconds: f64) {
        let bucket =
            DURATION_BUCKETS.iter().position(|bound| seconds <= *bound).unwrap_or(DURATION_BUCKETS.len());
        self.counts[bucket] += 1;
        self.sum += seconds;
    }
}

/// The value under `key`, made (default) if missing; no allocation when it
/// exists, which is every time but the first.
fn slot<'m, V: Default>(map: &'m mut BTreeMap<String, V>, key: &str) -> &'m mut V {
    if !map.contains_key(key) {
        map.insert(key.to_string(), V::default());
    }
    map.get_mut(key).expect("inserted above")
}

fn seconds(at: SystemTime) -> f64 {
    match at.duration_since(UNIX_EPOCH) {
        Ok(after) => after.as_secs_f64(),
        Err(before) => -before.duration().as_secs_f64(),
    }
}

fn flag(set: bool) -> f64 {
    if set {
        1.0
    } else {
        0.0
    }
}

fn per_mailbox<V>(out: &mut String, metric: &Family, map: &BTreeMap<String, V>, value: impl Fn(&V) -> f64) {
    if !map.is_empty() {
        family(out, metric);
    }
    for (mailbox, v) in map {
        sample(out, metric, "", &[("mailbox", mailbox)], value(v));
    }
}

fn family(out: &mut String, &Family(name, kind, help): &Family) {
    let _ = write!(out, "# HELP {PREFIX}{name} ");
    for c in help.chars() {
        match c {
            '\\' => out.push_str("\\\\"),
            '\n' => out.push_str("\\n"),
            c => out.push(c),
        }
    }
    let _ = writeln!(out, "\n# TYPE {PREFIX}{name} {kind}");
}

fn sample(out: &mut String, family: &Family, suffix: &str, labels: &[(&str, &str)], value: f64) {
    let _ = write!(out, "{PREFIX}{}{suffix}", family.0);
    for (i, (label, value)) in labels.iter().enumerate() {
        out.push_str(if i == 0 { "{" } else { "," });
        let _ = write!(out, "{label}=\"");
        for c in value.chars() {
            match c {
                '\\' => out.push_str("\\\\"),
                '"' => out.push_str("\\\""),
                '\n' => out.push_str("\\n"),
                c => out.push(c),
            }
        }
        out.push('"');
    }
    if !labels.is_empty() {
        out.push('}');
    }
    // Rust prints a finite f64 in full, never with an exponent; Prometheus
    // reads that as Go's ParseFloat does.
    let _ = writeln!(out, " {value}");
}

#[cfg(test)]
mod tests;
