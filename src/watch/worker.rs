//! The engine: one worker per connection to a mailbox, serving one folder
//! (waiting in IDLE) or several in turn (polling). In each folder it first
//! settles what the ingress already answered, then takes the messages
//! waiting one by one: fetch one whole (pull), the one pipeline, remember
//! the answer durably, settle it on the source, move the cursor. Nothing
//! after the ingress's answer can make a message be posted again: a
//! failed settle is retried from the state file, without a POST.

use std::collections::HashMap;
use std::io;
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use super::cluster::Lease;
use super::source::{Body, Item, Source, SourceError, Woken};
use super::state::{Answered, FolderState, Places, Store, Unsettled};
use super::{Shared, Stop};
use crate::backoff::Backoff;
use crate::headers::RoutingView;
use crate::log;
use crate::message::{self, Input, Raw};
use crate::metrics::{self, Heartbeat, MessageOutcome, Metrics};
use crate::outcome::{Cause, Class, Outcome, Scope};
use crate::pipeline::{Pipeline, Prepared};
use crate::run;
use crate::sys::{io_reason, NamedLock};

/// IDLE is re-issued well before the 29 minutes after which RFC 2177 lets
/// a server end it, and before NAT gateways forget a quiet connection; a
/// renewal also makes the server tell what changed meanwhile (a folder
/// deleted under an IDLE, for one, is told only then).
const IDLE_RENEW: Duration = Duration::from_secs(5 * 60);
/// A message whose fetch failed this many times (the server says NO or
/// BYE for it, or sends no body) is set aside, and the ones after it go on.
const FETCH_TRIES: u32 = 3;
/// A message set aside is tried again after this, doubling up to a day.
const UNFETCHABLE_RETRY: Duration = Duration::from_secs(3600);
const UNFETCHABLE_RETRY_MAX: Duration = Duration::from_secs(24 * 3600);
/// A message no `[[route]]` is for is tried again with backoff for this
/// long (a route being added), then refused into refused_folder.
pub const NO_ROUTE_GRACE: Duration = Duration::from_secs(24 * 3600);
/// More time than a step promises before liveness gives up on it.
const SLACK: Duration = Duration::from_secs(30);
/// While messages flow, a folder's state is fsync'd at most this often; a
/// power loss undoes at most this much (posted again, dropped by the
/// ingress as copies).
const SYNC_EVERY: Duration = Duration::from_secs(1);

/// What a worker leaves behind when it ends.
pub enum Left {
    Nothing,
    /// Something waits for a later run, and why (for --once's exit code).
    Something(Outcome),
}

/// What the workers share.
pub struct Context {
    pub pipeline: Arc<Pipeline>,
    pub shared: Arc<Shared>,
    pub metrics: Arc<Metrics>,
    pub health: Arc<metrics::Health>,
    /// Where each folder's state is kept.
    pub places: Arc<dyn Places>,
    /// What stops these workers: the run's stop, or in cluster mode the
    /// mailbox's own (the run's stop asks it too).
    pub stop: Arc<Stop>,
    /// Cluster mode: the mailbox's lease. Nothing is fetched or settled
    /// without it.
    pub lease: Option<Lease>,
    pub once: bool,
    /// The header that names the envelope recipient: the mailbox's, else
    /// the configuration's.
    pub recipient_header: Option<String>,
    pub poll_interval: Duration,
}

/// A message whose delivery failed for now, and when to try it again.
struct Later {
    at: Instant,
    backoff: Backoff,
}

struct Folder<S: Source> {
    name: String,
    store: Store,
    /// Read at each select, so a session always starts from what is on disk.
    state: Option<FolderState<S::Cursor, S::Key>>,
    later: HashMap<S::Key, Later>,
    /// Settling fails here: nothing is done in the folder before this.
    blocked: Option<Instant>,
    settling: Backoff,
    /// The last write of the state failed: nothing more is fetched before
    /// one succeeds, or what is sent meanwhile could not be remembered.
    unsaved: bool,
    /// Changed since the state was last written.
    dirty: bool,
    /// Written since it was last made durable (fsync'd), and when that was.
    unsynced: bool,
    synced: Instant,
}

pub struct Worker<S: Source> {
    source: S,
    mailbox: String,
    folders: Vec<Folder<S>>,
    ctx: Arc<Context>,
    id: usize,
    /// Failing for everyone (the ingress down): nothing is fetched before this.
    ingress_until: Option<Instant>,
    ingress: Backoff,
    heartbeat: Heartbeat,
    _locks: Vec<NamedLock>,
}

/// Why one message's turn ended.
enum Turn {
    Next,
    /// Every other message would fail the same way now.
    Halt(Outcome),
    /// Settling failed: the folder waits.
    Blocked(Outcome),
}

impl<S: Source> Worker<S> {
    pub fn new(source: S, mailbox: &str, folders: &[String], ctx: Arc<Context>, id: usize) -> Worker<S> {
        let folders = folders
            .iter()
            .map(|name| Folder {
                name: name.clone(),
                store: Store::new(ctx.places.place(mailbox, name)),
                state: None,
                later: HashMap::new(),
                blocked: None,
                settling: Backoff::new(Duration::from_secs(30), Duration::from_secs(1800)),
                unsaved: false,
                dirty: false,
                unsynced: false,
                synced: Instant::now(),
            })
            .collect::<Vec<Folder<S>>>();
        let names: Vec<&str> = folders.iter().map(|f| f.name.as_str()).collect();
        let heartbeat =
            ctx.health.register(format!("{mailbox}/{}", names.join(",")), Duration::from_secs(600));
        Worker {
            heartbeat,
            source,
            mailbox: mailbox.to_string(),
            folders,
            ctx,
            id,
            ingress_until: None,
            ingress: Backoff::new(Duration::from_secs(5), Duration::from_secs(300)),
            _locks: Vec::new(),
        }
    }

    fn label(&self, folder: Option<usize>) -> String {
        match folder {
            Some(i) => format!("{}/{}", self.mailbox, self.folders[i].name),
            // The connection: the folders it serves.
            None => {
                let names: Vec<&str> = self.folders.iter().map(|f| f.name.as_str()).collect();
                format!("{}/{}", self.mailbox, names.join(","))
            }
        }
    }

    /// The folder a line is about: one, or those the connection serves.
    fn folder_field(&self, folder: Option<usize>) -> String {
        let label = self.label(folder);
        label[self.mailbox.len() + 1..].to_string()
    }

    fn note(&self, folder: Option<usize>, event: &'static str, text: &str) {
        let level = if text.starts_with("warning: ") { log::Level::Warning } else { log::Level::Info };
        log::event(level, event, format!("{}: {text}", self.label(folder)))
            .place(&self.mailbox, Some(&self.folder_field(folder)))
            .emit();
    }

    fn fail(&self, folder: Option<usize>, event: &'static str, outcome: &Outcome) {
        log::error(event, format!("{}: {outcome}", self.label(folder)))
            .place(&self.mailbox, Some(&self.folder_field(folder)))
            .status(outcome.cause.code())
            .error(outcome.reason(), outcome.fix())
            .emit();
    }

    fn doing(&self, what: impl Into<String>, failing: bool) {
        let what = what.into();
        self.ctx.shared.update(self.id, |h| {
            h.doing = what;
            h.failing = failing;
        });
    }

    /// Back in the loop, promising to be back again within `within`.
    fn beat(&self, within: Duration) {
        self.heartbeat.beat(within + SLACK);
    }

    /// Whether the folders of this connection are being watched.
    fn up(&self, up: bool) {
        for folder in &self.folders {
            self.ctx.metrics.mailbox_up(&self.mailbox, &folder.name, up);
        }
    }

    /// Cluster mode: whether this replica surely holds the mailbox now.
    fn holding(&self) -> bool {
        self.ctx.lease.as_ref().is_none_or(Lease::held)
    }

    /// Asked before each fetch and each settle: a worker without the lease
    /// does nothing on the source.
    fn hold(&self) -> Result<(), SourceError> {
        match self.holding() {
            true => Ok(()),
            false => Err(SourceError::broken(Outcome::new(
                Cause::Interrupted,
                "this replica no longer surely holds the mailbox's lease",
            ))),
        }
    }

    /// Until stopped (or, with --once, until what was waiting is handled;
    /// in cluster mode, until the lease ends or is to be let go).
    pub fn run(mut self) -> Left {
        let left = self.serve();
        if self.ctx.lease.is_some() {
            // Another replica may hold it now: the series is its to show.
            self.up(false);
        }
        left
    }

    /// A panic is logged with its text and the worker starts again.
    fn serve(&mut self) -> Left {
        if let Some(left) = self.lock() {
            return left;
        }
        let mut reconnect = Backoff::new(Duration::from_secs(1), Duration::from_secs(300));
        loop {
            if self.ctx.stop.requested() || !self.holding() {
                self.source.close();
                return self.stopped();
            }
            self.doing("connecting", false);
            let mut progress = false;
            let ran = run::catch(|| self.session(&mut progress));
            let mut not_before = None;
            let outcome = match ran {
                Ok(Ok(left)) => return left,
                Ok(Err(e)) => {
                    not_before = e.not_before;
                    e.outcome
                }
                Err(bug) => {
                    self.source.close();
                    self.up(false);
                    bug
                }
            };
            self.source.close();
            self.up(false);
            if !self.holding() {
                return self.stopped();
            }
            self.fail(None, "session-failed", &outcome);
            self.doing(outcome.to_string(), true);
            if progress {
                reconnect.reset();
            } else if self.ctx.once {
                return Left::Something(outcome);
            }
            // Never sooner than the server asked (a Retry-After).
            let asked = not_before.map(|at| at.saturating_duration_since(Instant::now()));
            let pause = reconnect.next_pause().max(asked.unwrap_or_default());
            self.note(None, "reconnecting", &format!("connecting again in {}s", pause.as_secs().max(1)));
            self.beat(pause);
            if self.ctx.stop.sleep(pause) {
                return self.stopped();
            }
        }
    }

    /// What a stop leaves: nothing for a service; for --once, the mail it
    /// did not get to, for a later run (exit 75, not 0).
    fn stopped(&self) -> Left {
        match self.ctx.once {
            true => Left::Something(interrupted()),
            false => Left::Nothing,
        }
    }

    /// One watcher per folder of an account, on this host, whatever the
    /// state directory or the user: the lock is named by what is watched.
    /// Waits for a lock another watcher holds (--once: gives up).
    fn lock(&mut self) -> Option<Left> {
        let identity = self.source.identity();
        let mut waiting = Backoff::new(Duration::from_secs(10), Duration::from_secs(120));
        let mut said = false;
        loop {
            let mut locks = Vec::new();
            let mut held = None;
            for folder in &self.folders {
                let name = inbox_insensitive(&folder.name);
                let key = hex::encode(&sha2::Sha256::digest(format!("{identity}\n{name}"))[..16]);
                match NamedLock::take(&format!("chatwoot-ingress/watch/{key}")) {
                    Ok(Some(lock)) => locks.push(lock),
                    Ok(None) => held = Some(folder.name.clone()),
                    // No lock to be had (no sockets left): go on without.
                    Err(_) => {}
                }
            }
            let Some(folder) = held else {
                self._locks = locks;
                return None;
            };
            drop(locks);
            let outcome = Outcome::new(
                Cause::Busy,
                format!("another watch already works on {folder:?} of {identity} on this host"),
            )
            .with_fix("stop the other one (systemctl stop chatwoot-ingress-watch), or let it finish");
            if self.ctx.once {
                self.fail(None, "locked", &outcome);
                return Some(Left::Something(outcome));
            }
            if !said {
                self.note(None, "locked", &format!("{outcome}; waiting for it"));
                said = true;
            }
            let pause = waiting.next_pause();
            self.beat(pause);
            if self.ctx.stop.sleep(pause) {
                return Some(Left::Nothing);
            }
        }
    }

    /// One connection: settle, deliver, wait, and again. Err when it
    /// breaks; `progress` says whether anything was finished meanwhile.
    fn session(&mut self, progress: &mut bool) -> Result<Left, SourceError> {
        self.open()?;
        let alone = self.folders.len() == 1;
        let mut first = true;
        loop {
            let mut left = None;
            for i in 0..self.folders.len() {
                if self.ctx.stop.requested() {
                    left.get_or_insert_with(interrupted);
                    break;
                }
                if first || !alone {
                    self.select(i)?;
                }
                let passed = self.pass(i, progress);
                self.flush(i);
                if let Some(outcome) = passed? {
                    left.get_or_insert(outcome);
                }
            }
            if first {
                self.up(true);
            }
            first = false;
            let failing = left.is_some();
            if self.ctx.once || self.ctx.stop.requested() {
                self.source.close();
                return Ok(left.map_or(Left::Nothing, Left::Something));
            }
            let pause = if alone { IDLE_RENEW } else { self.ctx.poll_interval };
            let until = self.next_due().map_or(Instant::now() + pause, |due| due.min(Instant::now() + pause));
            self.doing(if alone { "idle" } else { "waiting" }, failing);
            self.beat(until.saturating_duration_since(Instant::now()) + self.source.longest_step(0));
            // IDLE beats at least every minute while it waits.
            let within = self.source.longest_step(0) + Duration::from_secs(60) + SLACK;
            let heartbeat = &self.heartbeat;
            let beat = || heartbeat.beat(within);
            match self.source.wait(until, alone, &self.ctx.stop, &beat)? {
                Woken::Stopped => {
                    self.source.close();
                    return Ok(Left::Nothing);
                }
                // A wait that ends as it should shows the connection works.
                Woken::News | Woken::Timeout => *progress = true,
            }
        }
    }

    /// When the next message or folder that waits may be tried again.
    fn next_due(&self) -> Option<Instant> {
        let (now, unix) = (Instant::now(), unix_now());
        // A message whose fetch failed: its next try, on this clock.
        let unfetchable = |f: &Folder<S>| -> Vec<Instant> {
            let state = f.state.iter().flat_map(|s| s.unfetchable.values());
            state.map(|u| now + Duration::from_secs(u.retry_at.saturating_sub(unix))).collect()
        };
        self.folders
            .iter()
            .flat_map(|f| f.later.values().map(|l| l.at).chain(f.blocked).chain(unfetchable(f)))
            .chain(self.ingress_until)
            .min()
    }

    /// Make folder `i` current, with its state as saved.
    fn select(&mut self, i: usize) -> Result<(), SourceError> {
        self.folders[i].state = None;
        let store = &self.folders[i].store;
        let saved: Option<FolderState<S::Cursor, S::Key>> =
            store.load().map_err(|e| state_failure("read", store, &e))?;
        let mut cursor = saved.as_ref().map(|state| state.cursor.clone());
        let mut state = saved.unwrap_or_else(|| FolderState {
            folder: self.folders[i].name.clone(),
            cursor: S::Cursor::default(),
            unsettled: Vec::new(),
            unfetchable: Default::default(),
            unroutable: Default::default(),
        });
        self.beat(self.source.longest_step(0) * 3);
        let mut notes = Vec::new();
        let selected = self.source.select(&self.folders[i].name, &mut cursor, &mut |line| notes.push(line));
        for line in notes {
            self.note(Some(i), "selected", &line);
        }
        selected?;
        let cursor = cursor.unwrap_or_default();
        if state.cursor != cursor && !state.cursor_is_new() {
            // The folder is not the one the keys were of (recreated, or its
            // UIDs reused): what is remembered by key would touch other
            // messages. Everything in it is taken again instead.
            state.unsettled.clear();
            state.unfetchable.clear();
            state.unroutable.clear();
            self.folders[i].later.clear();
        }
        state.cursor = cursor;
        let store = &self.folders[i].store;
        store.save(&state, true).map_err(|e| state_failure("write", store, &e))?;
        self.folders[i].state = Some(state);
        Ok(())
    }

    /// Write folder `i`'s state: at once (what a killed process leaves),
    /// and made durable at most every [`SYNC_EVERY`] while messages flow
    /// (an fsync per message would bound a drain by the disk's flushes).
    fn save(&mut self, i: usize) -> Result<(), Outcome> {
        let durable = self.folders[i].synced.elapsed() >= SYNC_EVERY;
        self.write(i, durable)
    }

    fn write(&mut self, i: usize, durable: bool) -> Result<(), Outcome> {
        let folder = &mut self.folders[i];
        folder.dirty = false;
        let Some(state) = &folder.state else { return Ok(()) };
        let saved =
            folder.store.save(state, durable).map_err(|e| state_failure("write", &folder.store, &e).outcome);
        folder.unsaved = saved.is_err();
        if saved.is_ok() {
            folder.unsynced = !durable;
            if durable {
                folder.synced = Instant::now();
            }
        }
        saved
    }

    /// At the end of a pass: write what settling changed and is not yet
    /// written, and make the state durable. Not writing loses nothing (see
    /// [`Worker::settle`]): a failure is only logged.
    fn flush(&mut self, i: usize) {
        if self.folders[i].dirty || self.folders[i].unsynced {
            if let Err(outcome) = self.write(i, true) {
                self.fail(Some(i), "state-failed", &outcome);
            }
        }
    }

    fn state(&mut self, i: usize) -> &mut FolderState<S::Cursor, S::Key> {
        self.folders[i].state.as_mut().expect("a folder is selected before it is used")
    }

    /// One pass over folder `i`: settle what waits to be, then deliver
    /// what is new. Returns why something is left for later, if it is.
    fn pass(&mut self, i: usize, progress: &mut bool) -> Result<Option<Outcome>, SourceError> {
        let now = Instant::now();
        if self.folders[i].blocked.is_some_and(|until| until > now) {
            return Ok(Some(Outcome::new(Cause::MailboxFailed, "settling fails in this folder; waiting")));
        }
        self.folders[i].blocked = None;
        while let Some(unsettled) = self.state(i).unsettled.first().cloned() {
            if let Err(e) = self.settle(i, &unsettled) {
                return self.blocked(i, e);
            }
            *progress = true;
        }
        if self.ingress_until.is_some_and(|until| until > now) {
            return Ok(Some(Outcome::new(
                Cause::Busy,
                "the ingress is failing; waiting before trying again",
            )));
        }
        if self.folders[i].unsaved {
            if let Err(outcome) = self.save(i) {
                let pause = self.ingress.next_pause();
                self.ingress_until = Some(Instant::now() + pause);
                return Ok(Some(outcome));
            }
        }
        self.beat(self.source.longest_step(0));
        let mut cursor = self.state(i).cursor.clone();
        let items = self.source.list(&mut cursor)?;
        let mut left = None;
        let folder = &mut self.folders[i];
        folder.later.retain(|key, _| items.iter().any(|item| &item.key == key));
        let state = folder.state.as_mut().expect("selected");
        let listed = |key: &S::Key| items.iter().any(|item| &item.key == key);
        let before = (state.unfetchable.len(), state.unroutable.len());
        state.unfetchable.retain(|key, _| listed(key));
        state.unroutable.retain(|key, _| listed(key));
        let moved = state.cursor != cursor;
        state.cursor = cursor;
        if moved || before != (state.unfetchable.len(), state.unroutable.len()) {
            self.save(i).map_err(SourceError::refused)?;
        }
        let waiting = items.len();
        if waiting > 0 {
            self.doing(format!("delivering {waiting} message(s)"), false);
        }
        for item in items {
            if self.ctx.stop.requested() {
                left.get_or_insert_with(interrupted);
                break;
            }
            let now_unix = unix_now();
            let folder = &self.folders[i];
            let state = folder.state.as_ref().expect("selected");
            if state.unfetchable.get(&item.key).is_some_and(|u| u.retry_at > now_unix) {
                left.get_or_insert_with(|| {
                    Outcome::new(
                        Cause::MailboxFailed,
                        "a message could not be fetched; it is tried again later",
                    )
                });
                continue;
            }
            if folder.later.get(&item.key).is_some_and(|l| l.at > Instant::now()) {
                left.get_or_insert_with(|| Outcome::new(Cause::Busy, "messages wait to be tried again"));
                continue;
            }
            match self.one(i, &item, progress)? {
                Turn::Next => {}
                Turn::Halt(outcome) => {
                    // Every message would fail the same way now: wait, then retry.
                    let pause = self.ingress.next_pause();
                    self.ingress_until = Some(Instant::now() + pause);
                    self.note(
                        Some(i),
                        "halted",
                        &format!("trying again in {}s: {outcome}", pause.as_secs().max(1)),
                    );
                    return Ok(Some(outcome));
                }
                Turn::Blocked(outcome) => return Ok(Some(outcome)),
            }
        }
        let state = self.folders[i].state.as_ref().expect("selected");
        if left.is_none() && self.folders[i].later.values().next().is_some() {
            left = Some(Outcome::new(Cause::Busy, "messages wait to be tried again"));
        }
        if left.is_none() && !state.unfetchable.is_empty() {
            left = Some(Outcome::new(
                Cause::MailboxFailed,
                "a message could not be fetched; it is tried again later",
            ));
        }
        self.ingress_until = None;
        Ok(left)
    }

    /// A settle that failed: a NO blocks the folder for a while (never a
    /// POST again); a broken connection ends the session.
    fn blocked(&mut self, i: usize, e: SourceError) -> Result<Option<Outcome>, SourceError> {
        if e.broken {
            return Err(e);
        }
        let pause = self.folders[i].settling.next_pause();
        self.folders[i].blocked = Some(Instant::now() + pause);
        let outcome = e
            .outcome
            .context(format!("(settling again in {}s, without sending it again)", pause.as_secs().max(1)));
        self.fail(Some(i), "settle-failed", &outcome);
        self.doing(outcome.to_string(), true);
        Ok(Some(outcome))
    }

    /// Settle one answered message, and forget it.
    fn settle(&mut self, i: usize, unsettled: &Unsettled<S::Key>) -> Result<(), SourceError> {
        self.beat(self.source.longest_step(0) * 3);
        self.hold()?;
        let key = unsettled.key.clone();
        let Folder { store, state, .. } = &mut self.folders[i];
        let mut copied = || {
            let state = state.as_mut().expect("selected");
            if let Some(u) = state.unsettled.iter_mut().find(|u| u.key == key) {
                u.copied = true;
            }
            store.save(state, true).map_err(|e| state_failure("write", store, &e).outcome)
        };
        self.source.settle(&unsettled.key, unsettled.answered, unsettled.copied, &mut copied)?;
        let state = self.folders[i].state.as_mut().expect("selected");
        state.unsettled.retain(|u| u.key != unsettled.key);
        self.source.finished(&mut state.cursor, &unsettled.key);
        self.folders[i].settling.reset();
        self.folders[i].later.remove(&unsettled.key);
        // Saved with the next message's answer, or at the end of the pass:
        // until then a crash leaves it unsettled in the file, and settling
        // it again (a flag set twice, a move of what is gone) posts nothing.
        self.folders[i].dirty = true;
        Ok(())
    }

    /// One message: fetch, the pipeline, remember, settle.
    fn one(&mut self, i: usize, item: &Item<S::Key>, progress: &mut bool) -> Result<Turn, SourceError> {
        #[cfg(feature = "test-hooks")]
        crate::hooks::point("watch-message");
        let max_size = self.ctx.pipeline.max_size();
        self.beat(self.source.longest_step(item.size.unwrap_or(max_size).min(max_size)));
        self.hold()?;
        let body = match self.source.fetch(item, max_size) {
            Ok(Some(body)) => body,
            Ok(None) => {
                self.unfetchable(i, &item.key, "the server sent nothing for it", progress)?;
                return Ok(Turn::Next);
            }
            Err(e) => {
                // A server that asks to wait says nothing about the message.
                if e.not_before.is_none() {
                    self.unfetchable(i, &item.key, e.outcome.reason(), progress)?;
                }
                return if e.broken { Err(e) } else { Ok(Turn::Next) };
            }
        };
        self.beat(self.ctx.pipeline.timeout() * 2);
        #[cfg(feature = "test-hooks")]
        crate::hooks::point("watch-post");
        let started = Instant::now();
        let (outcome, head, size) = match body {
            Body::Whole(bytes) => {
                let outcome = self.deliver(i, &item.key, &bytes);
                let size = bytes.len() as u64;
                (outcome, bytes, size)
            }
            Body::TooLarge { head, size } => {
                let prepared = self.ctx.pipeline.prepare(Input::TooLarge(Raw::from_slice(&head, None)), None);
                let from = head.len() as u64;
                let outcome = match prepared {
                    Prepared::Stopped(outcome, head) => {
                        let mut rest = self.source.rest(&item.key, from);
                        self.ctx.pipeline.settle(outcome, head.input(), &mut rest)
                    }
                    Prepared::Ready(_) => {
                        Outcome::new(Cause::Bug, "a message over max_size was taken as complete")
                    }
                };
                (outcome, head, size.unwrap_or(from))
            }
        };
        self.report(i, &item.key, &head, size, &outcome, started);
        let answered = match outcome.class() {
            Class::Success => {
                self.ingress.reset();
                Answered::Delivered
            }
            Class::Permanent => Answered::Refused,
            Class::Temporary if outcome.cause.scope() == Scope::Run => return Ok(Turn::Halt(outcome)),
            Class::Temporary => {
                let folder = &mut self.folders[i];
                let entry = folder.later.entry(item.key.clone()).or_insert_with(|| Later {
                    at: Instant::now(),
                    backoff: Backoff::new(Duration::from_secs(30), Duration::from_secs(3600)),
                });
                entry.at = Instant::now() + entry.backoff.next_pause();
                return Ok(Turn::Next);
            }
        };
        // Remembered before the source is touched: whatever happens next,
        // this message is settled from here, never sent again.
        let state = self.state(i);
        state.unfetchable.remove(&item.key);
        state.unroutable.remove(&item.key);
        state.unsettled.push(Unsettled { key: item.key.clone(), answered, copied: false });
        let saved = self.save(i);
        if let Err(outcome) = &saved {
            self.fail(Some(i), "state-failed", outcome);
        }
        let unsettled = self.state(i).unsettled.last().cloned().expect("just pushed");
        let mut settled = self.settle(i, &unsettled);
        if settled.as_ref().is_err_and(|e| e.broken) && self.holding() {
            // A server closes a connection left quiet while the ingress
            // took its time: that is no failure of either, open it again.
            settled = self.reopen(i, started.elapsed()).and_then(|()| self.settle(i, &unsettled));
        }
        if let Err(e) = settled {
            return match self.blocked(i, e)? {
                Some(outcome) => Ok(Turn::Blocked(outcome)),
                None => Ok(Turn::Next),
            };
        }
        *progress = true;
        // Without a state file that can be written, nothing more is sent:
        // what was sent could not be remembered.
        Ok(match saved {
            Ok(()) => Turn::Next,
            Err(outcome) => Turn::Halt(outcome),
        })
    }

    /// Connect again and make folder `i` current, after the connection
    /// ended while the ingress answered (for `waited`).
    fn reopen(&mut self, i: usize, waited: Duration) -> Result<(), SourceError> {
        let secs = waited.as_secs();
        self.note(
            Some(i),
            "reconnecting",
            &format!(
                "the connection to the mailbox ended while the ingress answered ({secs} s): connecting again"
            ),
        );
        self.source.close();
        self.open()?;
        self.select(i)
    }

    /// Connect (and log in), logging what the source tells of it.
    fn open(&mut self) -> Result<(), SourceError> {
        self.beat(self.source.longest_step(0) * 3);
        let mut notes = Vec::new();
        let opened = self.source.open(&mut |line| notes.push(line));
        for line in notes {
            self.note(None, "connected", &line);
        }
        opened?;
        if let Some(at) = self.source.token_expiry() {
            self.ctx.metrics.token_expiry(&self.mailbox, at);
        }
        Ok(())
    }

    /// The pipeline for a whole message; a message no route is for is
    /// tried again for a day, then refused.
    fn deliver(&mut self, i: usize, key: &S::Key, bytes: &[u8]) -> Outcome {
        let header = self.ctx.recipient_header.as_deref();
        let recipient = header.and_then(|h| message::recipient_from_header(bytes, h));
        let mut reader = bytes;
        let outcome = match self.ctx.pipeline.read(&mut reader, recipient.as_deref()) {
            Ok(input) => self.ctx.pipeline.deliver(input, recipient.as_deref(), &mut reader).0,
            Err(e) => Outcome::new(Cause::Bug, format!("cannot read a fetched message: {}", io_reason(&e))),
        };
        if outcome.cause != Cause::NoRoute {
            return outcome;
        }
        let now = unix_now();
        let state = self.state(i);
        let since = *state.unroutable.entry(key.clone()).or_insert(now);
        if now.saturating_sub(since) < NO_ROUTE_GRACE.as_secs() {
            if since == now {
                let _ = self.save(i);
            }
            return outcome;
        }
        let refusal = Outcome::new(
            Cause::Unroutable,
            format!("{} for {} hours: refused", outcome.reason(), NO_ROUTE_GRACE.as_secs() / 3600),
        );
        self.ctx.pipeline.settle(refusal, bytes, &mut io::empty())
    }

    /// A fetch of `key` failed: tried again at once up to [`FETCH_TRIES`]
    /// times (across reconnections and restarts), then set aside.
    fn unfetchable(
        &mut self,
        i: usize,
        key: &S::Key,
        why: &str,
        progress: &mut bool,
    ) -> Result<(), SourceError> {
        let now = unix_now();
        let state = self.state(i);
        let entry = state.unfetchable.entry(key.clone()).or_default();
        entry.tries += 1;
        let tries = entry.tries;
        let text = if tries >= FETCH_TRIES {
            let doubling = 1u32 << (tries - FETCH_TRIES).min(10);
            let pause = (UNFETCHABLE_RETRY * doubling).min(UNFETCHABLE_RETRY_MAX);
            entry.retry_at = now + pause.as_secs();
            format!(
                "uid {key} cannot be fetched ({why}; {tries} tries): set aside, the messages after it go on; tried again in {} h",
                pause.as_secs() / 3600
            )
        } else {
            entry.retry_at = now;
            format!("uid {key}: the fetch failed ({why}); tried again")
        };
        // A try counted is progress too: it ends in the message set aside.
        *progress = true;
        let outcome = Outcome::new(Cause::MailboxFailed, text).with_fix(
            "see the IMAP server's log for this message (an unreadable file, a damaged index); chatwoot-ingress check shows the folder",
        );
        self.fail(Some(i), "unfetchable", &outcome);
        self.save(i).map_err(SourceError::refused)
    }

    /// One line per message: where, which, how big, what became of it, how long it took.
    fn report(&self, i: usize, key: &S::Key, head: &[u8], size: u64, outcome: &Outcome, started: Instant) {
        let id = RoutingView::of(head).message_id;
        let ms = started.elapsed().as_millis();
        let shown = id.clone().unwrap_or_else(|| "(no Message-ID)".into());
        let (level, event) = match outcome.class() {
            Class::Success => (log::Level::Info, "delivered"),
            Class::Permanent => (log::Level::Warning, "refused"),
            Class::Temporary => (log::Level::Warning, "deferred"),
        };
        let event = log::event(
            level,
            event,
            format!("{} uid {key} {shown} {size} bytes: {outcome} ({ms} ms)", self.label(Some(i))),
        )
        .place(&self.mailbox, Some(&self.folders[i].name))
        .message(key, id, size)
        .status(outcome.cause.code())
        .ms(ms);
        let event = match outcome.class() {
            Class::Success => event,
            _ => event.error(outcome.reason(), outcome.fix()),
        };
        event.emit();
        let folder = &self.folders[i].name;
        // Only an answer from the ingress (or its absence) times a POST:
        // a refusal is ours, and so is a missing route.
        let took = Some(started.elapsed()).filter(|_| outcome.cause != Cause::NoRoute);
        match outcome.class() {
            Class::Success => {
                self.ctx.metrics.message(&self.mailbox, folder, MessageOutcome::Delivered, took);
                self.ctx.health.set_ready(Ok(()));
            }
            Class::Permanent => {
                self.ctx.metrics.message(&self.mailbox, folder, MessageOutcome::Refused, None)
            }
            Class::Temporary => {
                self.ctx.metrics.message(&self.mailbox, folder, MessageOutcome::Deferred, took);
                if outcome.cause.scope() == Scope::Run {
                    self.ctx
                        .health
                        .set_ready(Err(format!("the ingress failed the last delivery: {outcome}")));
                }
            }
        }
        let class = outcome.class();
        self.ctx.shared.update(self.id, |h| match class {
            Class::Success => h.delivered += 1,
            Class::Permanent => h.refused += 1,
            Class::Temporary => {}
        });
    }
}

/// INBOX is one folder however it is spelled (RFC 3501 5.1); other names
/// are as they are.
pub fn inbox_insensitive(folder: &str) -> String {
    if folder.eq_ignore_ascii_case("INBOX") {
        "INBOX".into()
    } else {
        folder.to_string()
    }
}

fn interrupted() -> Outcome {
    Outcome::new(Cause::Interrupted, "stopped before the end: what is left waits for the next run")
}

fn unix_now() -> u64 {
    SystemTime::now().duration_since(UNIX_EPOCH).unwrap_or_default().as_secs()
}

fn state_failure(what: &str, store: &Store, e: &io::Error) -> SourceError {
    let outcome =
        Outcome::new(Cause::StateFailed, format!("cannot {what} {}: {}", store.describe(), io_reason(e)));
    SourceError::refused(match store.fix() {
        Some(fix) => outcome.with_fix(fix),
        None => outcome,
    })
}

use sha2::Digest as _;
