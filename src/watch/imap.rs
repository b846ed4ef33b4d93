//! IMAP as a [`Source`]: one session, logged in with the mailbox's
//! password or OAuth2 token, one folder selected at a time; messages named
//! by UID, the place in a folder kept as UIDVALIDITY and a UID cursor.

use std::io::{self, Read};
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime};

use super::source::{Body, Item, Source, SourceError, Woken};
use super::state::{Answered, ImapCursor};
use super::Stop;
use crate::config::{After, Mailbox};
use crate::imap::{ImapError, Session};
use crate::mailbox::{self, endpoint, imap_failure, LoginError, Tokens};
use crate::outcome::{Cause, Outcome};
use crate::sys;

/// An IMAP command's round trip.
const COMMAND_TIMEOUT: Duration = Duration::from_secs(60);

fn command_timeout() -> Duration {
    #[cfg(feature = "test-hooks")]
    if let Some(timeout) = crate::hooks::imap_timeout() {
        return timeout;
    }
    COMMAND_TIMEOUT
}
/// The head of a message too large to deliver, read to refuse it by; the
/// rest is copied to reject_dir in pieces this big.
const PIECE: u64 = 1 << 20;

pub struct ImapSource {
    mailbox: Mailbox,
    tokens: Option<Arc<Tokens>>,
    session: Option<Session>,
    /// The UIDs above the cursor in the selected folder as last listed
    /// (those others flagged \Deleted included: they hold the cursor); None
    /// until listed, and then the cursor only records, never jumps.
    present: Option<Vec<u32>>,
    /// When the token of the last login expires.
    token_expiry: Option<SystemTime>,
}

impl ImapSource {
    pub fn new(mailbox: Mailbox, tokens: Option<Arc<Tokens>>) -> ImapSource {
        ImapSource { mailbox, tokens, session: None, present: None, token_expiry: None }
    }

    fn session(&mut self) -> Result<&mut Session, SourceError> {
        self.session.as_mut().ok_or_else(|| SourceError::broken(Outcome::new(Cause::Bug, "no IMAP session")))
    }

    /// Log in with the password or a token: the mailbox's cached one while
    /// it has a while to live, else a new one (never one about to expire).
    fn log_in(&mut self, session: &mut Session, note: &mut dyn FnMut(String)) -> Result<(), SourceError> {
        let expiry = &mut self.token_expiry;
        let token = |tokens: &Tokens| {
            let token = tokens.token()?;
            *expiry =
                token.expires.map(|at| SystemTime::now() + at.saturating_duration_since(Instant::now()));
            if let Some(warning) = &token.warning {
                note(format!("warning: {warning}"));
            }
            Ok(token)
        };
        mailbox::log_in(session, &self.mailbox, self.tokens.as_deref(), token).map_err(|e| match e {
            LoginError::Failed { outcome, usable: true } => SourceError::refused(outcome),
            LoginError::Credentials(outcome)
            | LoginError::Refused(outcome)
            | LoginError::Failed { outcome, usable: false } => SourceError::broken(outcome),
        })
    }

    /// Move `uid` to `folder`: MOVE, or a copy (remembered by the engine
    /// through `copied`) and a delete.
    fn move_one(
        &mut self,
        uid: u32,
        folder: &str,
        copied_before: bool,
        copied: &mut dyn FnMut() -> Result<(), Outcome>,
    ) -> Result<(), ImapError> {
        let session = self.session.as_mut().ok_or_else(|| ImapError::Lost("no session".into()))?;
        if session.capabilities().move_ {
            return session.uid_move(&[uid], folder);
        }
        if !copied_before {
            session.copy(&[uid], folder)?;
            // The copy is made: a failure to remember it must not become a
            // second copy, so the removal goes on regardless.
            let _ = copied();
        }
        session.delete(&[uid])
    }

    fn flags_alerts(&mut self, note: &mut dyn FnMut(String)) {
        if let Some(session) = &mut self.session {
            for alert in session.take_alerts() {
                note(format!("the IMAP server says [ALERT] {alert}"));
            }
        }
    }
}

/// An IMAP failure as the engine sees it: a NO leaves the session usable.
fn failure(e: &ImapError) -> SourceError {
    let outcome = imap_failure(e);
    match e {
        ImapError::No { .. } | ImapError::Bad { .. } => SourceError::refused(outcome),
        _ => SourceError::broken(outcome),
    }
}

impl Source for ImapSource {
    type Key = u32;
    type Cursor = ImapCursor;

    fn identity(&self) -> String {
        let m = &self.mailbox;
        format!("imap://{}@{}:{}", m.user, m.host.to_ascii_lowercase(), m.port)
    }

    fn longest_step(&self, bytes: u64) -> Duration {
        crate::imap::command_limit(command_timeout(), bytes)
    }

    fn open(&mut self, note: &mut dyn FnMut(String)) -> Result<(), SourceError> {
        self.close();
        let mut session =
            Session::connect(&endpoint(&self.mailbox, command_timeout())).map_err(|e| failure(&e))?;
        let logged_in = self.log_in(&mut session, note);
        self.session = Some(session);
        self.flags_alerts(note);
        logged_in?;
        let m = &self.mailbox;
        let needed: Vec<String> = std::iter::once(m.refused_folder.clone())
            .chain(m.move_to.clone().filter(|_| m.after == After::Move))
            .collect();
        let session = self.session()?;
        for folder in needed {
            if session.create(&folder).map_err(|e| failure(&e))? {
                note(format!("created folder {folder:?}"));
            }
        }
        let caps = session.capabilities().clone();
        note(format!(
            "connected to {} as {} ({})",
            sys::host_port(&self.mailbox.host, self.mailbox.port),
            self.mailbox.user,
            if caps.idle { "IDLE" } else { "no IDLE: polling" }
        ));
        Ok(())
    }

    fn select(
        &mut self,
        folder: &str,
        cursor: &mut Option<ImapCursor>,
        note: &mut dyn FnMut(String),
    ) -> Result<(), SourceError> {
        self.present = None;
        let after = self.mailbox.after;
        let session = self.session()?;
        let selected = session.select(folder).map_err(|e| failure(&e))?;
        let fresh = ImapCursor { uidvalidity: selected.uidvalidity, ..Default::default() };
        match cursor.take() {
            Some(saved) if saved.uidvalidity != selected.uidvalidity => {
                note(format!(
                    "UIDVALIDITY changed from {} to {} (the folder was recreated): every message in it is taken again",
                    saved.uidvalidity, selected.uidvalidity
                ));
                *cursor = Some(fresh);
            }
            // UIDs are never reused under one UIDVALIDITY: a folder whose
            // next UID is not above the place saved was restored or rebuilt
            // by a server that kept the UIDVALIDITY wrongly.
            Some(saved) if selected.uidnext.is_some_and(|next| next <= saved.cursor) => {
                note(format!(
                    "warning: the folder's next UID ({}) is not above the place saved ({}): it was restored or rebuilt, so every message in it is taken again (those delivered before are dropped by the ingress)",
                    selected.uidnext.unwrap_or_default(),
                    saved.cursor
                ));
                *cursor = Some(fresh);
            }
            Some(saved) => *cursor = Some(saved),
            None if after == After::Seen => {
                let all = session.uid_search("ALL").map_err(|e| failure(&e))?;
                let unseen = session.uid_search("UNSEEN").map_err(|e| failure(&e))?;
                let mut start = fresh;
                start
                    .finish(all.iter().copied().filter(|uid| unseen.binary_search(uid).is_err()), Some(&all));
                note(format!(
                    "first start: taking the {} message(s) not yet seen, and every new one",
                    unseen.len()
                ));
                *cursor = Some(start);
            }
            None => *cursor = Some(fresh),
        }
        self.flags_alerts(note);
        Ok(())
    }

    fn list(&mut self, cursor: &ImapCursor) -> Result<Vec<Item<u32>>, SourceError> {
        let session = self.session()?;
        let from = cursor.cursor.saturating_add(1);
        // `n:*` includes the highest UID even when it is below n.
        let present: Vec<u32> = session
            .uid_search(&format!("UID {from}:*"))
            .map_err(|e| failure(&e))?
            .into_iter()
            .filter(|&uid| uid > cursor.cursor)
            .collect();
        let pending: Vec<u32> = present.iter().copied().filter(|&uid| cursor.pending(uid)).collect();
        let meta = session.fetch_meta(&pending).map_err(|e| failure(&e))?;
        self.present = Some(present);
        // A UID the search lists but the FETCH says nothing of (a damaged
        // index, a lying server) is taken like the others, size unknown,
        // so that its failing fetch is logged and counted, never skipped
        // in silence.
        let mut items: Vec<Item<u32>> = pending
            .iter()
            // fetch_meta answers in UID order.
            .filter(|&&uid| meta.binary_search_by_key(&uid, |m| m.uid).is_err())
            .map(|&uid| Item { key: uid, size: None })
            .collect();
        // What another client is deleting is not ours to take; it holds
        // the cursor until it is gone (or un-deleted, then it is taken).
        items.extend(
            meta.into_iter()
                .filter(|m| !m.flags.iter().any(|f| f.eq_ignore_ascii_case("\\Deleted")))
                .map(|m| Item { key: m.uid, size: Some(m.size) }),
        );
        items.sort_by_key(|item| item.key);
        Ok(items)
    }

    fn fetch(&mut self, item: &Item<u32>, max: u64) -> Result<Option<Body>, SourceError> {
        let session = self.session()?;
        let size = item.size.unwrap_or(max);
        if size > max {
            let head = session.fetch_part(item.key, 0, PIECE.min(size)).map_err(|e| failure(&e))?;
            return Ok(Some(Body::TooLarge { head, size: Some(size) }));
        }
        match session.fetch_one(item.key, size).map_err(|e| failure(&e))? {
            Some(fetched) => Ok(fetched.body.map(Body::Whole)),
            None => Ok(None),
        }
    }

    fn rest<'s>(&'s mut self, key: &u32, from: u64) -> Box<dyn Read + 's> {
        match self.session.as_mut() {
            Some(session) => {
                Box::new(Pieces { session, uid: *key, offset: from, piece: Vec::new(), used: 0, end: false })
            }
            None => Box::new(io::empty()),
        }
    }

    fn settle(
        &mut self,
        key: &u32,
        answered: Answered,
        copied_before: bool,
        copied: &mut dyn FnMut() -> Result<(), Outcome>,
    ) -> Result<(), SourceError> {
        let uid = *key;
        let m = &self.mailbox;
        let (after, move_to, refused) =
            (m.after, m.move_to.clone().unwrap_or_default(), m.refused_folder.clone());
        let result = match (answered, after) {
            (Answered::Refused, _) => self.move_one(uid, &refused, copied_before, copied),
            (Answered::Delivered, After::Move) => self.move_one(uid, &move_to, copied_before, copied),
            (Answered::Delivered, After::Seen) => self.session()?.add_flags(&[uid], &["\\Seen"]),
            (Answered::Delivered, After::Delete) => self.session()?.delete(&[uid]),
        };
        match result {
            Ok(()) => Ok(()),
            // Gone (another client moved or expunged it): nothing is left to do.
            Err(ImapError::No { .. })
                if self.session()?.uid_search(&format!("UID {uid}")).is_ok_and(|f| !f.contains(&uid)) =>
            {
                Ok(())
            }
            Err(e) => Err(failure(&e)),
        }
    }

    fn finished(&self, cursor: &mut ImapCursor, key: &u32) {
        cursor.finish([*key], self.present.as_deref());
    }

    fn wait(
        &mut self,
        until: Instant,
        alone: bool,
        stop: &Stop,
        beat: &dyn Fn(),
    ) -> Result<Woken, SourceError> {
        let session = self.session()?;
        if alone && session.capabilities().idle {
            let requested = || {
                beat();
                stop.requested()
            };
            return match session.idle(until, &requested, stop.wake()).map_err(|e| failure(&e))? {
                crate::imap::Woken::NewMail => Ok(Woken::News),
                crate::imap::Woken::Timeout => Ok(Woken::Timeout),
                crate::imap::Woken::Stopped => Ok(Woken::Stopped),
            };
        }
        if stop.sleep(until.saturating_duration_since(Instant::now())) {
            return Ok(Woken::Stopped);
        }
        if !alone {
            return Ok(Woken::Timeout);
        }
        // Keeps the session alive, and tells of new mail.
        match session.noop().map_err(|e| failure(&e))? {
            true => Ok(Woken::News),
            false => Ok(Woken::Timeout),
        }
    }

    fn token_expiry(&self) -> Option<SystemTime> {
        self.token_expiry
    }

    fn close(&mut self) {
        self.present = None;
        if let Some(session) = self.session.take() {
            session.logout();
        }
    }
}

/// The rest of a message, fetched in pieces.
struct Pieces<'s> {
    session: &'s mut Session,
    uid: u32,
    /// Where the next piece starts.
    offset: u64,
    piece: Vec<u8>,
    used: usize,
    end: bool,
}

impl Read for Pieces<'_> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        if self.used == self.piece.len() {
            if self.end {
                return Ok(0);
            }
            let piece = self
                .session
                .fetch_part(self.uid, self.offset, PIECE)
                .map_err(|e| io::Error::other(e.to_string()))?;
            self.end = (piece.len() as u64) < PIECE;
            self.offset += piece.len() as u64;
            self.piece = piece;
            self.used = 0;
            if self.piece.is_empty() {
                return Ok(0);
            }
        }
        let n = buf.len().min(self.piece.len() - self.used);
        buf[..n].copy_from_slice(&self.piece[self.used..self.used + n]);
        self.used += n;
        Ok(n)
    }
}
