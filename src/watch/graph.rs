//! Microsoft Graph as a [`Source`]: a Microsoft 365 mailbox followed with
//! a delta query per folder, messages named by their immutable id (every
//! request sends `Prefer: IdType="ImmutableId"`, so an id survives a move),
//! fetched as their MIME bytes (`$value`), settled with `isRead`, a move
//! to `move_to` or to Deleted Items, refusals moved to `refused_folder`.
//! There is no connection: "open" takes a token and finds the folders
//! settled into, "wait" sleeps until the next delta query is due.
//!
//! # The place in a folder ([`GraphCursor`])
//!
//! A delta round names the messages that arrived in the folder *or
//! changed* since the last link, and those that left (`@removed`); Graph
//! does not say which is which. So the link alone cannot tell:
//!
//! * a message a person read before we got to it (an arrival, to deliver)
//!   from one we delivered and marked read ourselves (our own change
//!   coming back: never to deliver again), nor
//! * a new message from an old one a person flagged, categorised or
//!   replied to in Outlook (with `after = "seen"` delivered mail stays in
//!   the folder, and every such touch brings it back).
//!
//! The cursor therefore keeps, besides the folder's id and the delta link
//! where the next round starts:
//!
//! * `waiting`: what a round named for delivery and is not finished yet.
//!   A round's link is saved together with what it found (the engine saves
//!   the cursor after `list`, atomically), so nothing a round named is lost
//!   when the link moves on; what is deferred, set aside or refused for
//!   now stays here, listed again at each pass, until it is finished or a
//!   round says it left the folder (a full round by not naming it).
//! * `known`: ids finished (or passed over on purpose at the first start),
//!   with their `receivedDateTime`: a later mention of one (the echo of our
//!   own `isRead`, a replay Graph warns of) is not new.
//! * `newest`: the newest `receivedDateTime` any round has shown, on
//!   Graph's clock (never ours, which may be off).
//!
//! With `after = "move"` or `"delete"` every message still in the folder
//! is one not yet delivered (delivered ones leave it), so everything a
//! round names that is not `known` is taken. With `after = "seen"` a
//! message is taken when it is unread (unread in a watched folder is what
//! is to be delivered, as at the first start), or when it was received
//! within [`MARGIN`] of the newest the folder had shown before the round:
//! an arrival, even one a person already read. An older message that a
//! round names and that is read is a change of an old message: left
//! alone. `known` holds ids only while their `receivedDateTime` is within
//! the margin; older ones fall to the rule above by themselves. So the
//! state stays bounded by the backlog and by a margin's worth of mail,
//! whatever the size of the folder.
//!
//! What this gives up, with `after = "seen"`: a message older than the
//! margin that a person moves into the folder already read is not taken
//! (IMAP would: the move gives it a new UID); and one a person marks
//! unread again after the margin is delivered again, which the ingress
//! drops as a duplicate. A first start takes what is unread (`seen`) or
//! everything (`move`, `delete`), like IMAP. A delta link Graph no longer
//! knows (410) starts a full round with the same rules, so what arrived
//! meanwhile is taken, read or not; what comes again is dropped by the
//! ingress's dedupe. A folder whose id changed (deleted and made again)
//! has every message in it taken, as IMAP does when UIDVALIDITY changes.

use std::collections::{BTreeMap, HashMap};
use std::io::{self, Read};
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use serde::{Deserialize, Serialize};

use super::source::{Body, Item, Source, SourceError, Woken};
use super::state::{Answered, FolderState};
use super::Stop;
use crate::config::{After, Graph, Mailbox};
use crate::graph::{self, Client, DeltaLink, FolderPath, Options};
use crate::log;
use crate::mailbox::{graph_failure, Tokens};
use crate::oauth2::Token;
use crate::outcome::{Cause, Outcome};
use crate::secret::Password;

/// How far before the newest message a round has shown an arrival may be
/// received and still be taken as one when it is already read: longer
/// than Exchange takes to show a delivered message in a folder (inbox
/// rules included). `known` holds this much mail.
pub const MARGIN: Duration = Duration::from_secs(6 * 3600);
/// A `receivedDateTime` further ahead of this machine's clock than this is
/// not believed (an imported message with a wrong date).
const AHEAD: Duration = Duration::from_secs(24 * 3600);
/// One request, from its start to the last byte of its answer, at the least.
const REQUEST_TIMEOUT: Duration = Duration::from_secs(60);
/// A message is read at this speed at the slowest before its request times out.
const SLOWEST_BYTES_PER_SECOND: u64 = 256 << 10;
/// Messages per delta page asked for.
const PAGE_SIZE: u32 = 500;
/// A step without a message in it (a delta round of many pages, a token
/// and the folders) may take this long; each request has its own timeout.
const LONGEST_STEP: Duration = Duration::from_secs(5 * 60);
/// How much of a message over max_size is read for reject_dir at the most
/// (Exchange Online takes messages up to 150 MB, more once encoded).
const REST_MAX: u64 = 256 << 20;

/// Where `watch` is in a Graph folder. See the module's documentation.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct GraphCursor {
    /// The folder's id: under the same name, another id is another folder.
    pub folder_id: String,
    /// The `@odata.deltaLink` the next round starts from; None: a full round.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub delta: Option<String>,
    /// The newest `receivedDateTime` a round has shown (Unix seconds).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub newest: Option<i64>,
    /// Named by a round, not finished: id → `receivedDateTime`, if known.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub waiting: BTreeMap<String, Option<i64>>,
    /// Finished (or passed over on purpose) within the margin: id →
    /// `receivedDateTime`.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub known: BTreeMap<String, i64>,
    /// The next full round takes every message in the folder.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub take_all: bool,
}

pub type GraphState = FolderState<GraphCursor, String>;

impl GraphCursor {
    fn new(folder_id: &str, take_all: bool) -> GraphCursor {
        GraphCursor { folder_id: folder_id.to_string(), take_all, ..Default::default() }
    }

    /// Older than this, a read message a round names is an old one that changed.
    fn horizon(&self) -> Option<i64> {
        self.newest.map(|newest| newest - MARGIN.as_secs() as i64)
    }

    /// Takes a finished round: what it named for delivery into `waiting`,
    /// what left out of it, the link it ended with.
    pub fn apply(&mut self, changes: &graph::Changes, after: After, now: i64) {
        let before = self.horizon();
        for id in &changes.removed {
            self.waiting.remove(id);
            self.known.remove(id);
        }
        if changes.full {
            // A full round names everything there: what it does not name has left.
            let named: std::collections::HashSet<&str> =
                changes.messages.iter().map(|m| m.id.as_str()).collect();
            self.waiting.retain(|id, _| named.contains(id.as_str()));
            self.known.retain(|id, _| named.contains(id.as_str()));
        }
        let mut passed = Vec::new();
        for m in &changes.messages {
            let received = m.received.as_deref().and_then(unix);
            if let Some(waiting) = self.waiting.get_mut(&m.id) {
                *waiting = waiting.or(received);
                continue;
            }
            if self.known.contains_key(&m.id) {
                continue;
            }
            let arrival = matches!((before, received), (Some(horizon), Some(at)) if at >= horizon);
            if self.take_all || after != After::Seen || m.is_read == Some(false) || arrival {
                self.waiting.insert(m.id.clone(), received);
            } else if let Some(at) = received {
                passed.push((m.id.clone(), at));
            }
        }
        let limit = now + AHEAD.as_secs() as i64;
        let shown = changes.messages.iter().filter_map(|m| m.received.as_deref().and_then(unix));
        self.newest = shown.filter(|&at| at <= limit).chain(self.newest).max();
        if let Some(horizon) = self.horizon() {
            // Read at the first start: a change to it later is no arrival.
            self.known.extend(passed.into_iter().filter(|&(_, at)| at >= horizon));
            self.known.retain(|_, at| *at >= horizon);
        }
        self.take_all = false;
        self.delta = Some(changes.next.as_str().to_string());
    }

    /// What waits, oldest first.
    pub fn items(&self) -> Vec<Item<String>> {
        let mut waiting: Vec<(&String, &Option<i64>)> = self.waiting.iter().collect();
        waiting.sort_by_key(|(id, at)| (at.unwrap_or(i64::MAX), id.as_str()));
        waiting.into_iter().map(|(id, _)| Item { key: id.clone(), size: None }).collect()
    }

    /// `id` is finished: not taken again while it is within the margin.
    /// With `after = "seen"` an older one is left to the rule (read: an old
    /// one changed; unread again: taken again, and dropped by the ingress);
    /// with `move` or `delete` it is kept until the round that says it left.
    pub fn finish(&mut self, id: &str, after: After, now: i64) {
        let received = self.waiting.remove(id).flatten().or(self.newest).unwrap_or(now);
        if after != After::Seen || self.horizon().is_none_or(|horizon| received >= horizon) {
            self.known.insert(id.to_string(), received);
        }
    }
}

/// A `receivedDateTime` (ISO 8601, UTC) in Unix seconds.
fn unix(text: &str) -> Option<i64> {
    mail_parser::DateTime::parse_rfc3339(text).map(|at| at.to_timestamp())
}

fn unix_now() -> i64 {
    SystemTime::now().duration_since(UNIX_EPOCH).map_or(0, |d| d.as_secs() as i64)
}

/// The Graph client of a mailbox, shared by its workers: one limit of
/// requests in flight and one `Retry-After` for all of them.
pub fn client(mailbox: &Mailbox, graph: &Graph, max_size: u64) -> Result<Client, Outcome> {
    let options = Options {
        // A message of max_size must have time to arrive.
        timeout: REQUEST_TIMEOUT + Duration::from_secs(max_size / SLOWEST_BYTES_PER_SECOND),
        page_size: PAGE_SIZE,
        ..Options::default()
    };
    Client::new(graph.endpoint.clone(), options, mailbox.ca_file.as_deref()).map_err(|e| {
        let cause = match e {
            crate::http::SetupError::CaFile(_) => Cause::Config,
            _ => Cause::Bug,
        };
        Outcome::new(cause, format!("{}: {e}", mailbox.place))
    })
}

pub struct GraphSource {
    mailbox: Mailbox,
    client: Arc<Client>,
    tokens: Arc<Tokens>,
    /// Folder ids by the name the configuration gives, found this session.
    ids: HashMap<String, String>,
    /// refused_folder's id, and move_to's with `after = "move"`.
    refused_id: Option<String>,
    move_id: Option<String>,
    /// The current folder: its name and id.
    current: Option<(String, String)>,
    /// Messages a fetch found gone: no longer waiting.
    gone: Vec<String>,
    /// When the last delta round began.
    last_round: Option<Instant>,
    token_expiry: Option<SystemTime>,
}

/// A Graph call's answer, after a refused token was replaced once.
type Called<T> = Result<Result<T, graph::Error>, SourceError>;

impl GraphSource {
    pub fn new(mailbox: Mailbox, client: Arc<Client>, tokens: Arc<Tokens>) -> GraphSource {
        GraphSource {
            mailbox,
            client,
            tokens,
            ids: HashMap::new(),
            refused_id: None,
            move_id: None,
            current: None,
            gone: Vec::new(),
            last_round: None,
            token_expiry: None,
        }
    }

    /// The mailbox's token: the cached one while it has a while to live.
    fn token(&mut self, note: &mut dyn FnMut(String)) -> Result<Token, SourceError> {
        let token = self.tokens.token().map_err(SourceError::broken)?;
        self.token_expiry =
            token.expires.map(|at| SystemTime::now() + at.saturating_duration_since(Instant::now()));
        if let Some(warning) = &token.warning {
            note(format!("warning: {warning}"));
        }
        Ok(token)
    }

    /// One call with a token; a token Graph refuses (expired before its
    /// time, revoked) is replaced and the call made again, once.
    fn call<T>(&mut self, mut f: impl FnMut(&Client, &Password) -> Result<T, graph::Error>) -> Called<T> {
        let mut quiet = |_| {};
        let token = self.token(&mut quiet)?;
        match f(&self.client, &token.access) {
            Err(graph::Error::Unauthorized { .. }) => {
                self.tokens.forget(&token);
                let token = self.token(&mut quiet)?;
                Ok(f(&self.client, &token.access))
            }
            answer => Ok(answer),
        }
    }

    /// A Graph error as the engine takes it: the mailbox cannot be used now
    /// (throttled, failing, unreachable, access refused) or only this
    /// request failed; with the wait Graph asked for.
    fn failure(&self, e: &graph::Error) -> SourceError {
        let outcome = graph_failure(&self.mailbox, e);
        let error = match e {
            graph::Error::NotFound { .. }
            | graph::Error::Conflict { .. }
            | graph::Error::Refused { .. }
            | graph::Error::TooLarge { .. } => SourceError::refused(outcome),
            _ => SourceError::broken(outcome),
        };
        match e.retry_after() {
            Some(wait) => error.not_before(Instant::now() + wait),
            None => error,
        }
    }

    fn user(&self) -> String {
        self.mailbox.user.clone()
    }

    /// The id of the folder at `path`, created when `create` and missing.
    fn folder(
        &mut self,
        path: &str,
        create: bool,
        note: &mut dyn FnMut(String),
    ) -> Result<String, SourceError> {
        if let Some(id) = self.ids.get(path) {
            return Ok(id.clone());
        }
        let parsed = FolderPath::parse(path).ok_or_else(|| {
            SourceError::refused(Outcome::new(Cause::Config, format!("{path:?} is not a folder path")))
        })?;
        let user = self.user();
        let found = self.call(|c, t| c.folder(t, &user, &parsed))?.map_err(|e| self.failure(&e))?;
        let id = match found {
            Some(folder) => folder.id,
            None if create => {
                let made = self.call(|c, t| c.ensure_folder(t, &user, &parsed))?;
                let id = made.map_err(|e| self.failure(&e))?.id;
                note(format!("created folder {path:?}"));
                id
            }
            None => {
                return Err(SourceError::refused(
                    Outcome::new(Cause::MailboxFailed, format!("the folder {path:?} is not in the mailbox {}", self.mailbox.user))
                        .with_fix("create it, or correct folders in the [[mailbox]]: well-known names (Inbox) or display names, \"Parent/Child\" for a folder in another; chatwoot-ingress check lists them"),
                ))
            }
        };
        self.ids.insert(path.to_string(), id.clone());
        Ok(id)
    }

    /// Moves `id` to the folder at `path`. Not found may be the folder
    /// (deleted and made again meanwhile): it is found again, once.
    fn move_to(&mut self, id: &str, path: &str) -> Called<()> {
        match self.move_once(id, path)? {
            Err(graph::Error::NotFound { .. }) if path != DELETED_ITEMS => {
                self.ids.remove(path);
                self.move_once(id, path)
            }
            moved => Ok(moved),
        }
    }

    fn move_once(&mut self, id: &str, path: &str) -> Called<()> {
        let destination = match path {
            DELETED_ITEMS => DELETED_ITEMS.to_string(),
            _ => self.folder(path, true, &mut |_| {})?,
        };
        let user = self.user();
        Ok(self.call(|c, t| c.move_message(t, &user, id, &destination))?.map(drop))
    }

    fn log_reset(&self, text: &str) {
        let folder = self.current.as_ref().map_or("", |(name, _)| name.as_str());
        log::warning("delta-reset", format!("{}/{folder}: warning: {text}", self.mailbox.name))
            .place(&self.mailbox.name, Some(folder))
            .emit();
    }
}

/// Where `after = "delete"` moves a message: a move one can undo, as a
/// person's delete in Outlook is.
const DELETED_ITEMS: &str = "deleteditems";

impl Source for GraphSource {
    type Key = String;
    type Cursor = GraphCursor;

    fn identity(&self) -> String {
        let host = self.client.endpoint().as_str().trim_end_matches('/').to_ascii_lowercase();
        format!("{host}/users/{}", self.mailbox.user.to_lowercase())
    }

    fn longest_step(&self, bytes: u64) -> Duration {
        LONGEST_STEP + Duration::from_secs(bytes / SLOWEST_BYTES_PER_SECOND)
    }

    fn open(&mut self, note: &mut dyn FnMut(String)) -> Result<(), SourceError> {
        self.close();
        self.token(note)?;
        let m = self.mailbox.clone();
        self.refused_id = Some(self.folder(&m.refused_folder, true, note)?);
        if let (After::Move, Some(move_to)) = (m.after, &m.move_to) {
            self.move_id = Some(self.folder(move_to, true, note)?);
        }
        note(format!(
            "Microsoft Graph at {} for {}: a delta query every {}s",
            self.client.endpoint().as_str().trim_end_matches('/'),
            m.user,
            m.poll_interval.as_secs()
        ));
        Ok(())
    }

    fn select(
        &mut self,
        folder: &str,
        cursor: &mut Option<GraphCursor>,
        note: &mut dyn FnMut(String),
    ) -> Result<(), SourceError> {
        let id = self.folder(folder, false, note)?;
        self.current = Some((folder.to_string(), id.clone()));
        match cursor.take() {
            Some(saved) if saved.folder_id == id => *cursor = Some(saved),
            Some(saved) if !saved.folder_id.is_empty() => {
                note(format!(
                    "warning: {folder:?} is another folder now (its id changed: it was deleted and made again): every message in it is taken (those delivered before are dropped by the ingress)"
                ));
                *cursor = Some(GraphCursor::new(&id, true));
            }
            _ => {
                let what = match self.mailbox.after {
                    After::Seen => "what is unread",
                    After::Move | After::Delete => "every message in it",
                };
                note(format!("first start: taking {what}, and every new message"));
                *cursor = Some(GraphCursor::new(&id, false));
            }
        }
        Ok(())
    }

    fn list(&mut self, cursor: &mut GraphCursor) -> Result<Vec<Item<String>>, SourceError> {
        for id in std::mem::take(&mut self.gone) {
            cursor.waiting.remove(&id);
        }
        let user = self.user();
        let link = cursor.delta.clone().map(DeltaLink::saved);
        let mut round = match self.client.round(&user, &cursor.folder_id, link.as_ref()) {
            Ok(round) => round,
            Err(e) => {
                // A saved link that no longer leads to graph_url (changed since).
                self.log_reset(&format!("the saved delta link is not used ({e}): a full round over the folder; what comes again is dropped by the ingress"));
                self.client.round(&user, &cursor.folder_id, None).map_err(|e| self.failure(&e))?
            }
        };
        self.last_round = Some(Instant::now());
        let changes = self.call(|c, t| c.delta(t, &user, &mut round))?.map_err(|e| self.failure(&e))?;
        if changes.reset {
            self.log_reset(
                "Graph no longer knows the delta link (410): a full round over the folder; messages delivered before that come again are dropped by the ingress's dedupe",
            );
        }
        cursor.apply(&changes, self.mailbox.after, unix_now());
        Ok(cursor.items())
    }

    fn fetch(&mut self, item: &Item<String>, max: u64) -> Result<Option<Body>, SourceError> {
        let (user, id) = (self.user(), item.key.clone());
        match self.call(|c, t| c.fetch(t, &user, &id, max))? {
            Ok(bytes) => Ok(Some(Body::Whole(bytes))),
            // Only its size is known to be too much: reject_dir gets it from `rest`.
            Err(graph::Error::TooLarge { .. }) => Ok(Some(Body::TooLarge { head: Vec::new(), size: None })),
            // An immutable id survives moves: not found is deleted for good.
            Err(graph::Error::NotFound { .. }) => {
                self.gone.push(id);
                Ok(None)
            }
            Err(e) => Err(self.failure(&e)),
        }
    }

    fn rest<'s>(&'s mut self, key: &String, from: u64) -> Box<dyn Read + 's> {
        let user = self.user();
        let fetched = self.call(|c, t| c.fetch(t, &user, key, REST_MAX));
        match fetched {
            Ok(Ok(bytes)) => {
                let mut rest = io::Cursor::new(bytes);
                rest.set_position(from);
                Box::new(rest)
            }
            Ok(Err(e)) => Box::new(Failing(e.to_string())),
            Err(e) => Box::new(Failing(e.outcome.to_string())),
        }
    }

    fn settle(
        &mut self,
        key: &String,
        answered: Answered,
        _copied_before: bool,
        _copied: &mut dyn FnMut() -> Result<(), Outcome>,
    ) -> Result<(), SourceError> {
        let m = &self.mailbox;
        let destination = match (answered, m.after) {
            (Answered::Refused, _) => Some(m.refused_folder.clone()),
            (Answered::Delivered, After::Move) => m.move_to.clone(),
            (Answered::Delivered, After::Delete) => Some(DELETED_ITEMS.to_string()),
            (Answered::Delivered, After::Seen) => None,
        };
        let user = self.user();
        let done = match destination {
            Some(path) => self.move_to(key, &path)?,
            None => self.call(|c, t| c.mark_read(t, &user, key))?,
        };
        match done {
            // Gone (deleted by someone): nothing is left to do.
            Ok(()) | Err(graph::Error::NotFound { .. }) => Ok(()),
            // The folder waits and tries again; nothing is sent again.
            Err(e) => Err(SourceError { broken: false, ..self.failure(&e) }),
        }
    }

    fn finished(&self, cursor: &mut GraphCursor, key: &String) {
        cursor.finish(key, self.mailbox.after, unix_now());
    }

    fn wait(
        &mut self,
        until: Instant,
        alone: bool,
        stop: &Stop,
        beat: &dyn Fn(),
    ) -> Result<Woken, SourceError> {
        // Polling: news is only had from the next round, one per poll_interval.
        let due = self.last_round.map_or_else(Instant::now, |at| at + self.mailbox.poll_interval);
        let (deadline, woken) = match alone && due <= until {
            true => (due, Woken::News),
            false => (until, Woken::Timeout),
        };
        loop {
            let left = deadline.saturating_duration_since(Instant::now());
            if left.is_zero() {
                return Ok(woken);
            }
            beat();
            if stop.sleep(left.min(Duration::from_secs(30))) {
                return Ok(Woken::Stopped);
            }
        }
    }

    fn token_expiry(&self) -> Option<SystemTime> {
        self.token_expiry
    }

    fn close(&mut self) {
        // Found again at the next session: a folder may be made anew meanwhile.
        self.ids.clear();
        self.current = None;
    }
}

/// A read that fails: the copy for reject_dir could not be had, so the
/// refusal is not made (and tried again later).
struct Failing(String);

impl Read for Failing {
    fn read(&mut self, _: &mut [u8]) -> io::Result<usize> {
        Err(io::Error::other(self.0.clone()))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use graph::{Changes, Message};

    const HOUR: i64 = 3600;
    /// 2026-12-07T10:00:00Z
    const T0: i64 = 1_796_637_600;

    fn at(unix: i64) -> String {
        mail_parser::DateTime::from_timestamp(unix).to_rfc3339()
    }

    fn message(id: &str, read: bool, received: i64) -> Message {
        Message {
            id: id.into(),
            is_read: Some(read),
            received: Some(at(received)),
            internet_message_id: None,
            folder_id: None,
        }
    }

    fn round(messages: Vec<Message>, removed: &[&str], full: bool, link: &str) -> Changes {
        Changes {
            messages,
            removed: removed.iter().map(|id| id.to_string()).collect(),
            next: DeltaLink::saved(link),
            full,
            reset: false,
            pages: 1,
        }
    }

    fn waiting(cursor: &GraphCursor) -> Vec<String> {
        cursor.items().into_iter().map(|item| item.key).collect()
    }

    #[test]
    fn a_first_start_takes_what_is_unread_and_remembers_recent_read_mail() {
        let mut c = GraphCursor::new("F", false);
        let first = vec![
            message("old-read", true, T0 - 48 * HOUR),
            message("old-unread", false, T0 - 47 * HOUR),
            message("new-read", true, T0 - HOUR),
            message("new-unread", false, T0),
        ];
        c.apply(&round(first, &[], true, "L1"), After::Seen, T0);
        assert_eq!(waiting(&c), ["old-unread", "new-unread"], "unread only, oldest first");
        assert_eq!(c.delta.as_deref(), Some("L1"));
        assert_eq!(c.newest, Some(T0));
        assert_eq!(c.known.keys().collect::<Vec<_>>(), ["new-read"], "read within the margin only");
        // A person flags both read ones later: neither is an arrival.
        let touched = vec![message("old-read", true, T0 - 48 * HOUR), message("new-read", true, T0 - HOUR)];
        c.apply(&round(touched, &[], false, "L2"), After::Seen, T0);
        assert_eq!(waiting(&c), ["old-unread", "new-unread"]);
    }

    #[test]
    fn an_arrival_read_by_a_person_is_taken_and_our_own_mark_is_not() {
        let mut c = GraphCursor::new("F", false);
        c.apply(&round(vec![message("a", false, T0)], &[], true, "L1"), After::Seen, T0);
        c.finish("a", After::Seen, T0);
        assert!(c.waiting.is_empty());
        // The next round: our own isRead on a; b arrived and was read by someone at once.
        let next = vec![message("a", true, T0), message("b", true, T0 + 5)];
        c.apply(&round(next, &[], false, "L2"), After::Seen, T0 + 10);
        assert_eq!(waiting(&c), ["b"]);
        // The same change again (a replay): nothing new.
        c.apply(&round(vec![message("a", true, T0)], &[], false, "L3"), After::Seen, T0 + 20);
        assert_eq!(waiting(&c), ["b"]);
        // An old message a person marks unread: unread in the folder is to be delivered.
        c.apply(&round(vec![message("c", false, T0 - 30 * HOUR)], &[], false, "L4"), After::Seen, T0 + 30);
        assert_eq!(waiting(&c), ["c", "b"]);
        // One that left before it was taken is not waited for.
        c.apply(&round(Vec::new(), &["c"], false, "L5"), After::Seen, T0 + 40);
        assert_eq!(waiting(&c), ["b"]);
        // An old one delivered is not remembered: its echo is read and old;
        // unread again, it is taken again (and the ingress drops it).
        c.apply(&round(vec![message("o", false, T0 - 30 * HOUR)], &[], false, "L6"), After::Seen, T0 + 50);
        c.finish("o", After::Seen, T0 + 50);
        assert!(!c.known.contains_key("o"));
        c.apply(&round(vec![message("o", true, T0 - 30 * HOUR)], &[], false, "L7"), After::Seen, T0 + 60);
        assert_eq!(waiting(&c), ["b"]);
        c.apply(&round(vec![message("o", false, T0 - 30 * HOUR)], &[], false, "L8"), After::Seen, T0 + 70);
        assert_eq!(waiting(&c), ["o", "b"]);
    }

    #[test]
    fn with_move_or_delete_everything_in_the_folder_is_taken_but_what_is_finished() {
        for after in [After::Move, After::Delete] {
            let mut c = GraphCursor::new("F", false);
            let first = vec![message("a", true, T0 - 100 * HOUR), message("b", false, T0)];
            c.apply(&round(first, &[], true, "L1"), after, T0);
            assert_eq!(waiting(&c), ["a", "b"]);
            c.finish("a", after, T0);
            // A replay of a's arrival before its move shows as removed.
            let next = vec![message("a", true, T0 - 100 * HOUR), message("c", true, T0 - 200 * HOUR)];
            c.apply(&round(next, &[], false, "L2"), after, T0);
            assert_eq!(waiting(&c), ["c", "b"], "a moved-in old message is taken");
            c.apply(&round(Vec::new(), &["a"], false, "L3"), after, T0);
            assert!(!c.known.contains_key("a"), "gone from the folder: forgotten");
        }
    }

    #[test]
    fn a_full_round_after_a_reset_drops_what_left_and_takes_what_arrived_meanwhile() {
        let mut c = GraphCursor::new("F", false);
        c.apply(
            &round(vec![message("a", false, T0), message("b", false, T0)], &[], true, "L1"),
            After::Seen,
            T0,
        );
        c.finish("a", After::Seen, T0);
        // Graph lost the link: a full round. b was deleted meanwhile, d read by someone.
        let full = vec![
            message("a", true, T0),
            message("old", true, T0 - 72 * HOUR),
            message("d", true, T0 + 2 * HOUR),
            message("e", false, T0 + 3 * HOUR),
        ];
        c.apply(&Changes { reset: true, ..round(full, &[], true, "L9") }, After::Seen, T0 + 3 * HOUR);
        assert_eq!(waiting(&c), ["d", "e"]);
        assert_eq!(c.delta.as_deref(), Some("L9"));
    }

    #[test]
    fn a_folder_made_anew_is_taken_whole_once() {
        let mut c = GraphCursor::new("G", true);
        c.apply(&round(vec![message("a", true, T0 - 99 * HOUR)], &[], true, "L1"), After::Seen, T0);
        assert_eq!(waiting(&c), ["a"]);
        assert!(!c.take_all);
    }

    #[test]
    fn what_is_known_stays_within_the_margin_and_dates_ahead_are_not_believed() {
        let mut c = GraphCursor::new("F", false);
        for n in 0..100 {
            let received = T0 + n * HOUR;
            c.apply(
                &round(vec![message(&format!("m{n}"), false, received)], &[], false, "L"),
                After::Seen,
                received,
            );
            c.finish(&format!("m{n}"), After::Seen, received);
        }
        let margin = MARGIN.as_secs() as i64 / HOUR;
        assert_eq!(c.known.len() as i64, margin + 1, "{:?}", c.known);
        let far = message("future", false, T0 + 1000 * 24 * HOUR);
        c.apply(&round(vec![far], &[], false, "L"), After::Seen, T0 + 99 * HOUR);
        assert_eq!(c.newest, Some(T0 + 99 * HOUR));
        assert_eq!(waiting(&c), ["future"], "taken all the same: it is unread");
    }

    #[test]
    fn the_cursor_as_the_state_file_keeps_it() {
        let mut c = GraphCursor::new("F", false);
        c.apply(&round(vec![message("a", false, T0)], &[], true, "https://g/L1"), After::Seen, T0);
        let json = serde_json::to_value(&c).unwrap();
        assert_eq!(
            json,
            serde_json::json!({"folder_id": "F", "delta": "https://g/L1", "newest": T0, "waiting": {"a": T0}})
        );
        assert_eq!(serde_json::from_value::<GraphCursor>(json).unwrap(), c);
    }
}
