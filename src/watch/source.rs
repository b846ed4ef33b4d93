//! What the engine needs of a mail source (IMAP today, Microsoft Graph
//! next): connect and log in, make a folder current, list what waits in
//! it, fetch one message whole, settle one message, and wait for news.
//! The engine decides everything else — the order, what is delivered,
//! what is remembered, backoff, and what an error means for the run — so
//! a source never sees the pipeline, and every source keeps the same
//! contract: nothing is settled before the ingress answered, nothing
//! delivered is posted again because a later step failed.

use std::fmt;
use std::hash::Hash;
use std::io::Read;
use std::time::{Duration, Instant, SystemTime};

use serde::de::DeserializeOwned;
use serde::Serialize;

use super::state::Answered;
use super::Stop;
use crate::outcome::Outcome;

/// A failure of a source, already an outcome (the source maps its
/// protocol client's errors through `crate::mailbox`), and whether the
/// connection can be used any more.
#[derive(Debug)]
pub struct SourceError {
    pub outcome: Outcome,
    /// The connection is gone or unusable (lost, timed out, a protocol
    /// error mid-response): the engine connects again.
    pub broken: bool,
    /// The server asked for no request before then (a `Retry-After`): the
    /// engine waits at least so long, and does not count it against the
    /// message at hand.
    pub not_before: Option<Instant>,
}

impl SourceError {
    /// A command failed, the connection is fine (a NO).
    pub fn refused(outcome: Outcome) -> SourceError {
        SourceError { outcome, broken: false, not_before: None }
    }

    pub fn broken(outcome: Outcome) -> SourceError {
        SourceError { outcome, broken: true, not_before: None }
    }

    /// The same, with nothing to be asked of the server before `at`.
    pub fn not_before(self, at: Instant) -> SourceError {
        SourceError { not_before: Some(at), ..self }
    }
}

impl fmt::Display for SourceError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        self.outcome.fmt(f)
    }
}

/// A message waiting in the current folder.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Item<K> {
    pub key: K,
    /// Its size, when the source knows it before fetching it.
    pub size: Option<u64>,
}

/// A fetched message.
pub enum Body {
    Whole(Vec<u8>),
    /// Larger than max_size: only its beginning, to refuse it by; the rest
    /// is read with [`Source::rest`] for reject_dir, never held whole.
    TooLarge {
        head: Vec<u8>,
        size: Option<u64>,
    },
}

/// What ended a wait for news.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Woken {
    /// Something may have arrived (or the source cannot tell: polling).
    News,
    /// The time asked for is up.
    Timeout,
    Stopped,
}

pub trait Source: Send {
    /// A message's name in its folder, stable while it stays there.
    type Key: Clone + Ord + Hash + fmt::Display + Serialize + DeserializeOwned + Send;
    /// Where the engine is in a folder, as the source keeps it.
    type Cursor: Clone + Default + fmt::Debug + PartialEq + Serialize + DeserializeOwned + Send;

    /// What is watched, for the one-watcher lock and the logs: the same
    /// server and account give the same identity, however they are spelled.
    fn identity(&self) -> String;

    /// The longest one step may take (a command and its answer, with
    /// `bytes` of message in it), so that liveness can tell a slow step
    /// from a hung one.
    fn longest_step(&self, bytes: u64) -> Duration;

    /// Connect, log in, and make sure the folders messages are settled into
    /// exist. Lines worth logging (a created folder, an alert) go to `note`.
    fn open(&mut self, note: &mut dyn FnMut(String)) -> Result<(), SourceError>;

    /// Make `folder` current and check `cursor` against it. A folder that
    /// is no longer the one the cursor is for (recreated, restored from a
    /// backup) resets the cursor, said through `note`; so does a first
    /// start (`cursor` None), which takes what `after` says is new.
    fn select(
        &mut self,
        folder: &str,
        cursor: &mut Option<Self::Cursor>,
        note: &mut dyn FnMut(String),
    ) -> Result<(), SourceError>;

    /// What waits in the current folder, oldest first: what the cursor does
    /// not count as finished, without what others are removing. A source
    /// whose listing moves its place (a delta round that hands out a new
    /// link) records that in `cursor`, with what it found: the engine saves
    /// it before it takes anything.
    fn list(&mut self, cursor: &mut Self::Cursor) -> Result<Vec<Item<Self::Key>>, SourceError>;

    /// One message whole if it is at most `max` bytes; None if it is gone
    /// or the source sends nothing for it.
    fn fetch(&mut self, item: &Item<Self::Key>, max: u64) -> Result<Option<Body>, SourceError>;

    /// The bytes of a too-large message after the first `from`, for
    /// reject_dir. A read error stops the copy (and the refusal).
    fn rest<'s>(&'s mut self, key: &Self::Key, from: u64) -> Box<dyn Read + 's>;

    /// Settle one message the ingress answered: as `after` says for a
    /// delivered one, into refused_folder for a refused one. A message that
    /// is no longer there counts as settled. A move done in two steps calls
    /// `copied` between them (the engine remembers it), and is told by
    /// `copied_before` that the first step was done by an earlier run.
    fn settle(
        &mut self,
        key: &Self::Key,
        answered: Answered,
        copied_before: bool,
        copied: &mut dyn FnMut() -> Result<(), Outcome>,
    ) -> Result<(), SourceError>;

    /// `key` is finished (settled, or skipped for good): the cursor moves.
    fn finished(&self, cursor: &mut Self::Cursor, key: &Self::Key);

    /// Wait for news in the current folder until `until`, or a stop. With
    /// `alone` false the worker serves several folders and must come back
    /// by `until` to visit the others. A long wait calls `beat` now and
    /// then, to show it is alive.
    fn wait(
        &mut self,
        until: Instant,
        alone: bool,
        stop: &Stop,
        beat: &dyn Fn(),
    ) -> Result<Woken, SourceError>;

    /// When the access token of the last login expires, if it has one.
    fn token_expiry(&self) -> Option<SystemTime>;

    /// Log out and close, best effort.
    fn close(&mut self);
}
