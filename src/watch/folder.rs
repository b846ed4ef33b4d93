//! One folder of one mailbox: connect, log in, deliver what is waiting,
//! then wait for more (IDLE, or polling), until asked to stop; reconnect
//! with backoff after any failure.

use std::collections::HashMap;
use std::io::{self, Read};
use std::path::Path;
use std::sync::Arc;
use std::time::{Duration, Instant};

use super::state::{FolderState, StateFile};
use super::{log, Shared};
use crate::backoff::Backoff;
use crate::config::{After, Auth, Mailbox};
use crate::headers::RoutingView;
use crate::imap::{Endpoint, Fetched, ImapError, Login, Session, Woken};
use crate::mailbox::Tokens;
use crate::message::{self, Input, Raw};
use crate::oauth2::Token;
use crate::outcome::{Cause, Class, Outcome, Scope};
use crate::pipeline::{Pipeline, Prepared};
use crate::sys::io_reason;

/// IDLE is re-issued well before the 29 minutes after which RFC 2177 lets
/// a server end it, and before NAT gateways forget a quiet connection; a
/// renewal also makes the server tell what changed meanwhile (a folder
/// deleted under an IDLE, for one, is told only then).
const IDLE_RENEW: Duration = Duration::from_secs(5 * 60);
/// Messages fetched by one command, and at most this many bytes.
const BATCH: usize = 50;
const BATCH_BYTES: u64 = 32 << 20;
/// An IMAP command's round trip.
const COMMAND_TIMEOUT: Duration = Duration::from_secs(60);
/// A message too large to hold is copied to reject_dir in pieces this big.
const PIECE: u64 = 1 << 20;
/// The longest a thread may go without showing life: a delivery with all its
/// retries (the relay's timeout is at most an hour), or an IMAP command.
pub const LONGEST_STEP: Duration = Duration::from_secs(3600 + 120);

/// What a folder's thread leaves behind when it ends.
pub enum Left {
    Nothing,
    /// Something waits for a later run, and why (for --once's exit code).
    Something(Outcome),
}

pub struct Folder {
    mailbox: Mailbox,
    name: String,
    pipeline: Arc<Pipeline>,
    shared: Arc<Shared>,
    id: usize,
    state_file: StateFile,
    /// The header that names the envelope recipient: the mailbox's, else
    /// the configuration's.
    recipient_header: Option<String>,
    once: bool,
    /// The mailbox's access tokens (auth = "xoauth2" or "oauthbearer"),
    /// shared with its other folders.
    tokens: Option<Arc<Tokens>>,
}

/// A message whose delivery failed for now, and when to try it again.
struct Later {
    at: Instant,
    backoff: Backoff,
}

impl Folder {
    #[allow(clippy::too_many_arguments)]
    pub fn new(
        mailbox: Mailbox,
        name: String,
        pipeline: Arc<Pipeline>,
        shared: Arc<Shared>,
        id: usize,
        state_dir: &Path,
        recipient_header: Option<String>,
        once: bool,
        tokens: Option<Arc<Tokens>>,
    ) -> Folder {
        let state_file = StateFile::new(state_dir, &mailbox.name, &name);
        let recipient_header = mailbox.recipient_header.clone().or(recipient_header);
        Folder { mailbox, name, pipeline, shared, id, state_file, recipient_header, once, tokens }
    }

    fn label(&self) -> String {
        format!("{}/{}", self.mailbox.name, self.name)
    }

    fn doing(&self, what: impl Into<String>, failing: bool) {
        let what = what.into();
        self.shared.update(self.id, |h| {
            h.doing = what;
            h.failing = failing;
        });
    }

    /// Until stopped (or, with --once, until what was waiting is handled).
    pub fn run(self) -> Left {
        let mut reconnect = Backoff::new(Duration::from_secs(1), Duration::from_secs(300));
        loop {
            if self.shared.stop.requested() {
                return Left::Nothing;
            }
            self.doing("connecting", false);
            match self.connected(&mut reconnect) {
                Ok(left) => return left,
                Err(outcome) => {
                    log(&format!("{}: {outcome}", self.label()));
                    self.doing(outcome.to_string(), true);
                    if self.once {
                        return Left::Something(outcome);
                    }
                    let pause = reconnect.next_pause();
                    log(&format!("{}: connecting again in {}s", self.label(), pause.as_secs().max(1)));
                    if self.shared.stop.sleep(pause) {
                        return Left::Nothing;
                    }
                }
            }
        }
    }

    /// One connection: log in, deliver, wait, deliver... Err when it breaks.
    fn connected(&self, reconnect: &mut Backoff) -> Result<Left, Outcome> {
        // The token first: no connection while the provider refuses one.
        let token = self.tokens.as_ref().map(|tokens| self.token(tokens)).transpose()?;
        let mut session =
            Session::connect(&Endpoint::of(&self.mailbox, COMMAND_TIMEOUT)).map_err(imap_failure)?;
        self.log_in(&mut session, token)?;
        let needed = std::iter::once(&self.mailbox.refused_folder)
            .chain(self.mailbox.move_to.iter().filter(|_| self.mailbox.after == After::Move));
        for folder in needed {
            if session.create(folder).map_err(imap_failure)? {
                log(&format!("{}: created folder {folder:?}", self.label()));
            }
        }
        let selected = session.select(&self.name).map_err(imap_failure)?;
        let mut state = self.state(&mut session, selected.uidvalidity)?;
        self.save(&state)?;
        let caps = session.capabilities();
        log(&format!(
            "{}: connected to {}:{} as {} (uidvalidity {}, {} messages; {})",
            self.label(),
            self.mailbox.host,
            self.mailbox.port,
            self.mailbox.user,
            selected.uidvalidity,
            selected.exists,
            if caps.idle { "IDLE" } else { "no IDLE: polling" }
        ));
        reconnect.reset();
        let idle = caps.idle;
        let mut later: HashMap<u32, Later> = HashMap::new();
        let mut ingress = Backoff::new(Duration::from_secs(5), Duration::from_secs(300));
        let mut ingress_until: Option<Instant> = None;
        loop {
            let left = self.drain(&mut session, &mut state, &mut later, &mut ingress, &mut ingress_until)?;
            if self.once || self.shared.stop.requested() {
                session.logout();
                return Ok(match left {
                    Some(outcome) => Left::Something(outcome),
                    None => Left::Nothing,
                });
            }
            let retry = later.values().map(|l| l.at).chain(ingress_until).min();
            let until = retry.map_or(Instant::now() + IDLE_RENEW, |at| at.min(Instant::now() + IDLE_RENEW));
            self.doing(if idle { "idle" } else { "waiting" }, left.is_some());
            let woken = if idle {
                let (shared, id) = (&self.shared, self.id);
                let stop = || {
                    shared.update(id, |_| {});
                    shared.stop.requested()
                };
                session.idle(until, &stop, shared.stop.wake())
            } else {
                let pause = self.mailbox.poll_interval.min(until.saturating_duration_since(Instant::now()));
                if self.shared.stop.sleep(pause) {
                    Ok(Woken::Stopped)
                } else {
                    session.noop().map(|_| Woken::NewMail)
                }
            };
            if let Woken::Stopped = woken.map_err(imap_failure)? {
                session.logout();
                return Ok(Left::Nothing);
            }
        }
    }

    /// A token for the next login: the mailbox's cached one while it has a
    /// while to live, else a new one (never one about to expire).
    fn token(&self, tokens: &Tokens) -> Result<Token, Outcome> {
        let token = tokens.token()?;
        if let Some(warning) = &token.warning {
            log(&format!("{}: warning: {warning}", self.label()));
        }
        Ok(token)
    }

    /// Log in with the password, read now, or with `token`. A token from
    /// the cache that the server refuses (revoked, or expired before its
    /// time) is forgotten and a new one tried, once.
    fn log_in(&self, session: &mut Session, token: Option<Token>) -> Result<(), Outcome> {
        let (tokens, token) = match (&self.mailbox.auth, &self.tokens, token) {
            (Auth::Password(secret), ..) => {
                let password = secret.read().map_err(|e| Outcome::new(Cause::Config, e.to_string()))?;
                let login = Login::Password { user: self.mailbox.user.clone(), password };
                return session.login(&login).map_err(imap_failure);
            }
            (Auth::OAuth2(..), Some(tokens), Some(token)) => (tokens, token),
            (Auth::OAuth2(..), ..) => {
                return Err(Outcome::new(Cause::Bug, "an OAuth2 mailbox without its tokens"))
            }
        };
        let refused = |e: ImapError| match e {
            ImapError::LoginRefused(_) => imap_failure(e).with_fix(tokens.refused_fix()),
            e => imap_failure(e),
        };
        match session.login(&tokens.login(&token)) {
            Err(ImapError::LoginRefused(_)) if !token.fresh => {
                tokens.forget(&token);
                let token = self.token(tokens)?;
                session.login(&tokens.login(&token)).map_err(refused)
            }
            result => result.map_err(refused),
        }
    }

    /// The saved state, if it is for this folder as it is now. On the first
    /// start, the messages not yet \Seen (after = "seen") or every message
    /// (move, delete) are taken; after a UIDVALIDITY change (the folder was
    /// recreated), every message is: those delivered before are posted
    /// again with the same bytes, which the ingress drops, so nothing is lost.
    fn state(&self, session: &mut Session, uidvalidity: u32) -> Result<FolderState, Outcome> {
        let saved = self.state_file.load().map_err(|e| {
            Outcome::new(
                Cause::StateFailed,
                format!("cannot read {}: {}", self.state_file.path().display(), io_reason(&e)),
            )
        })?;
        let fresh = FolderState { folder: self.name.clone(), uidvalidity, ..Default::default() };
        Ok(match saved {
            Some(state) if state.uidvalidity == uidvalidity => state,
            Some(state) => {
                log(&format!(
                    "{}: UIDVALIDITY changed from {} to {} (the folder was recreated): every message in it is taken again",
                    self.label(),
                    state.uidvalidity,
                    uidvalidity
                ));
                fresh
            }
            None if self.mailbox.after == After::Seen => {
                let all = session.uid_search("ALL NOT DELETED").map_err(imap_failure)?;
                let unseen = session.uid_search("UNSEEN NOT DELETED").map_err(imap_failure)?;
                let mut state = fresh;
                state.finish(all.iter().copied().filter(|uid| !unseen.contains(uid)), &all);
                log(&format!(
                    "{}: first start: taking the {} message(s) not yet seen, and every new one",
                    self.label(),
                    unseen.len()
                ));
                state
            }
            None => fresh,
        })
    }

    fn save(&self, state: &FolderState) -> Result<(), Outcome> {
        self.state_file.save(state).map_err(|e| {
            Outcome::new(
                Cause::StateFailed,
                format!("cannot write {}: {}", self.state_file.path().display(), io_reason(&e)),
            )
        })
    }

    /// Deliver what waits in the folder, in batches. Returns why something
    /// is left for later, if it is.
    fn drain(
        &self,
        session: &mut Session,
        state: &mut FolderState,
        later: &mut HashMap<u32, Later>,
        ingress: &mut Backoff,
        ingress_until: &mut Option<Instant>,
    ) -> Result<Option<Outcome>, Outcome> {
        let mut left: Option<Outcome> = None;
        if let Some(until) = *ingress_until {
            if until > Instant::now() {
                return Ok(Some(Outcome::new(
                    Cause::Busy,
                    "the ingress is failing; waiting before trying again",
                )));
            }
        }
        let search = format!("UID {}:* NOT DELETED", state.cursor + 1);
        // `n:*` includes the highest UID even when it is below n.
        let present: Vec<u32> = session
            .uid_search(&search)
            .map_err(imap_failure)?
            .into_iter()
            .filter(|&uid| uid > state.cursor)
            .collect();
        later.retain(|uid, _| present.contains(uid));
        let now = Instant::now();
        let todo: Vec<u32> = present
            .iter()
            .copied()
            .filter(|&uid| state.pending(uid) && later.get(&uid).is_none_or(|l| l.at <= now))
            .collect();
        if todo.len() < present.iter().filter(|&&uid| state.pending(uid)).count() {
            left = Some(Outcome::new(Cause::Busy, "messages wait to be tried again"));
        }
        if !todo.is_empty() {
            self.doing(format!("delivering {} message(s)", todo.len()), false);
        }
        let meta = session.fetch_meta(&todo).map_err(imap_failure)?;
        let mut start = 0;
        while start < meta.len() {
            if self.shared.stop.requested() {
                return Ok(left);
            }
            // A batch: up to BATCH messages and BATCH_BYTES.
            let mut end = start;
            let mut bytes = 0;
            while end < meta.len()
                && end - start < BATCH
                && (end == start || bytes + meta[end].size <= BATCH_BYTES)
            {
                bytes += meta[end].size;
                end += 1;
            }
            let batch = &meta[start..end];
            start = end;
            let results = self.deliver_batch(session, batch)?;
            let mut finished = Vec::new();
            let (mut delivered, mut refused) = (Vec::new(), Vec::new());
            let mut halted = None;
            for (uid, outcome) in results {
                match outcome.class() {
                    Class::Success => delivered.push(uid),
                    Class::Permanent => refused.push(uid),
                    Class::Temporary if outcome.cause.scope() == Scope::Run => {
                        halted.get_or_insert(outcome);
                    }
                    Class::Temporary => {
                        let entry = later.entry(uid).or_insert_with(|| Later {
                            at: Instant::now(),
                            backoff: Backoff::new(Duration::from_secs(30), Duration::from_secs(3600)),
                        });
                        entry.at = Instant::now() + entry.backoff.next_pause();
                        left = Some(outcome);
                    }
                }
            }
            if !delivered.is_empty() {
                match self.mailbox.after {
                    After::Seen => session.add_flags(&delivered, &["\\Seen"]),
                    After::Move => {
                        session.move_to(&delivered, self.mailbox.move_to.as_deref().unwrap_or_default())
                    }
                    After::Delete => session.delete(&delivered),
                }
                .map_err(imap_failure)?;
                finished.extend(&delivered);
                ingress.reset();
            }
            if !refused.is_empty() {
                session.move_to(&refused, &self.mailbox.refused_folder).map_err(imap_failure)?;
                finished.extend(&refused);
            }
            if !finished.is_empty() {
                state.finish(finished.iter().copied(), &present);
                self.save(state)?;
                for uid in &finished {
                    later.remove(uid);
                }
            }
            if let Some(outcome) = halted {
                // Every message would fail the same way now: wait, then retry.
                let pause = ingress.next_pause();
                *ingress_until = Some(Instant::now() + pause);
                log(&format!("{}: trying again in {}s: {outcome}", self.label(), pause.as_secs().max(1)));
                return Ok(Some(outcome));
            }
        }
        *ingress_until = None;
        Ok(left)
    }

    /// Fetch and deliver one batch, each message as it arrives. Messages
    /// larger than max_size are not fetched whole: refused, with a copy
    /// read in pieces for reject_dir. Returns each UID's outcome.
    fn deliver_batch(
        &self,
        session: &mut Session,
        batch: &[Fetched],
    ) -> Result<Vec<(u32, Outcome)>, Outcome> {
        let max_size = self.pipeline.max_size();
        let (small, large): (Vec<&Fetched>, Vec<&Fetched>) = batch.iter().partition(|m| m.size <= max_size);
        let mut results = Vec::new();
        let mut halted = false;
        let uids: Vec<u32> = small.iter().map(|m| m.uid).collect();
        session
            .fetch_bodies(&uids, &mut |fetched| {
                // Once the ingress fails for everyone, the rest of the batch
                // waits (untouched) for the next try.
                if halted || self.shared.stop.requested() {
                    return;
                }
                let body = fetched.body.unwrap_or_default();
                let outcome = self.deliver(fetched.uid, &body);
                halted = outcome.class() == Class::Temporary && outcome.cause.scope() == Scope::Run;
                results.push((fetched.uid, outcome));
            })
            .map_err(imap_failure)?;
        for message in large {
            if halted || self.shared.stop.requested() {
                break;
            }
            let outcome = self.refuse_large(session, message)?;
            results.push((message.uid, outcome));
        }
        Ok(results)
    }

    /// One message through the pipeline, and its log line.
    fn deliver(&self, uid: u32, body: &[u8]) -> Outcome {
        self.shared.update(self.id, |_| {});
        let started = Instant::now();
        let recipient =
            self.recipient_header.as_deref().and_then(|h| message::recipient_from_header(body, h));
        let mut reader = body;
        let outcome = match self.pipeline.read(&mut reader, recipient.as_deref()) {
            Ok(input) => self.pipeline.deliver(input, recipient.as_deref(), &mut reader).0,
            Err(e) => Outcome::new(Cause::Bug, format!("cannot read a fetched message: {}", io_reason(&e))),
        };
        self.report(uid, body, body.len() as u64, &outcome, started);
        outcome
    }

    /// A message over max_size: refused without holding it, its head read
    /// for the reason and the whole copied to reject_dir piece by piece.
    fn refuse_large(&self, session: &mut Session, message: &Fetched) -> Result<Outcome, Outcome> {
        let started = Instant::now();
        let head = session.fetch_part(message.uid, 0, PIECE.min(message.size)).map_err(imap_failure)?;
        let offset = head.len() as u64;
        let mut rest = Pieces {
            session,
            uid: message.uid,
            offset,
            size: message.size,
            piece: Vec::new(),
            used: 0,
            failed: None,
        };
        let outcome = match self.pipeline.prepare(Input::TooLarge(Raw::from_slice(&head, None)), None) {
            Prepared::Stopped(outcome, head) => self.pipeline.settle(outcome, head.input(), &mut rest),
            Prepared::Ready(_) => Outcome::new(Cause::Bug, "a message over max_size was taken as complete"),
        };
        if let Some(e) = rest.failed {
            return Err(imap_failure(e));
        }
        self.report(message.uid, &head, message.size, &outcome, started);
        Ok(outcome)
    }

    /// One line per message: where, which, how big, what became of it, how long it took.
    fn report(&self, uid: u32, head: &[u8], size: u64, outcome: &Outcome, started: Instant) {
        let id = RoutingView::of(head).message_id.unwrap_or_else(|| "(no Message-ID)".into());
        log(&format!(
            "{} uid {uid} {id} {size} bytes: {outcome} ({} ms)",
            self.label(),
            started.elapsed().as_millis()
        ));
        let class = outcome.class();
        self.shared.update(self.id, |h| match class {
            Class::Success => h.delivered += 1,
            Class::Permanent => h.refused += 1,
            Class::Temporary => {}
        });
    }
}

/// The rest of a message, fetched in pieces.
struct Pieces<'s> {
    session: &'s mut Session,
    uid: u32,
    /// Where the next piece starts, and where the message ends.
    offset: u64,
    size: u64,
    piece: Vec<u8>,
    used: usize,
    failed: Option<ImapError>,
}

impl Read for Pieces<'_> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        if self.used == self.piece.len() {
            if self.offset >= self.size {
                return Ok(0);
            }
            match self.session.fetch_part(self.uid, self.offset, PIECE.min(self.size - self.offset)) {
                Ok(piece) if piece.is_empty() => return Ok(0),
                Ok(piece) => {
                    self.offset += piece.len() as u64;
                    self.piece = piece;
                    self.used = 0;
                }
                Err(e) => {
                    let error = io::Error::other(e.to_string());
                    self.failed = Some(e);
                    return Err(error);
                }
            }
        }
        let n = buf.len().min(self.piece.len() - self.used);
        buf[..n].copy_from_slice(&self.piece[self.used..self.used + n]);
        self.used += n;
        Ok(n)
    }
}

/// An IMAP failure as the outcome it is for this folder.
fn imap_failure(e: ImapError) -> Outcome {
    Outcome::new(e.cause(), e.to_string()).with_fix(e.fix())
}
