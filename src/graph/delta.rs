//! A delta round over one folder (api-reference/v1.0/api/message-delta.md,
//! concepts/delta-query-messages.md, concepts/delta-query-overview.md):
//! follow every `@odata.nextLink` to the `@odata.deltaLink`, collect what
//! is there and what left, and start over once when Graph no longer knows
//! the state.

use std::collections::{HashMap, HashSet};
use std::fmt;

use reqwest::Url;

use super::endpoint::Endpoint;
use super::model::{self, Entry, Message};
use super::Error;

/// Most entries one round may bring: a server that never ends a round is
/// told apart from a large folder (Exchange's folders hold far fewer).
const MAX_ENTRIES: usize = 2_000_000;

/// Where the next round of a folder begins: the whole `@odata.deltaLink`,
/// opaque, kept as Graph gave it (the engine saves it in its state file).
#[derive(Clone, PartialEq, Eq)]
pub struct DeltaLink(String);

impl DeltaLink {
    /// A link saved by an earlier round; checked when a round uses it.
    pub fn saved(link: impl Into<String>) -> DeltaLink {
        DeltaLink(link.into())
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl fmt::Debug for DeltaLink {
    // long and of no use in a log line
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("DeltaLink(…)")
    }
}

/// What a finished round found.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Changes {
    /// Messages now in the folder that arrived or changed (Graph does not
    /// tell which), once each, in the order Graph first named them.
    pub messages: Vec<Message>,
    /// Ids of messages that left the folder (deleted or moved out).
    pub removed: Vec<String>,
    /// Where the next round begins.
    pub next: DeltaLink,
    /// A full listing of the folder (a first round, or one after a reset),
    /// not changes since the last round.
    pub full: bool,
    /// Graph had lost the state of the link the round began with (410):
    /// it started over from scratch.
    pub reset: bool,
    /// Pages fetched.
    pub pages: u32,
}

/// A round in progress. On an error other than a lost state it keeps its
/// place: the same round goes on from the page that failed.
#[derive(Debug)]
pub struct Round {
    /// The first call of a full round over the folder.
    initial: Url,
    next: Url,
    full: bool,
    reset: bool,
    pages: u32,
    /// Every id named, in the order first named.
    order: Vec<String>,
    named: HashSet<String>,
    /// What each id's last entry said.
    present: HashMap<String, Message>,
    removed: HashSet<String>,
    entries: usize,
}

impl Round {
    /// A round over `folder` (an id or a well-known name) of `user`'s
    /// mailbox: from `from` when there is one, else a full round.
    pub fn new(
        endpoint: &Endpoint,
        user: &str,
        folder: &str,
        from: Option<&DeltaLink>,
    ) -> Result<Round, Error> {
        let initial = endpoint.delta(user, folder);
        let (next, full) = match from {
            Some(link) => (endpoint.link(link.as_str())?, false),
            None => (initial.clone(), true),
        };
        Ok(Round {
            initial,
            next,
            full,
            reset: false,
            pages: 0,
            order: Vec::new(),
            named: HashSet::new(),
            present: HashMap::new(),
            removed: HashSet::new(),
            entries: 0,
        })
    }

    /// The page to GET next.
    pub(crate) fn url(&self) -> &Url {
        &self.next
    }

    /// Takes a page; Some when it was the last of the round.
    pub(crate) fn page(&mut self, endpoint: &Endpoint, body: &[u8]) -> Result<Option<Changes>, Error> {
        let page = model::page::<Entry>(body)?;
        let next = match (&page.next, &page.delta) {
            (Some(next), _) => Some(endpoint.link(next)?),
            (None, Some(delta)) => {
                endpoint.link(delta)?;
                None
            }
            (None, None) => {
                return Err(Error::BadAnswer("a delta page without a nextLink or a deltaLink".into()))
            }
        };
        self.entries += page.value.len();
        if self.entries > MAX_ENTRIES {
            return Err(Error::BadAnswer(format!("a delta round of more than {MAX_ENTRIES} entries")));
        }
        // The same message may come more than once, even in one round
        // (delta-query-overview.md); what it says last counts.
        for entry in page.value {
            let id = match &entry {
                Entry::Present(message) => message.id.clone(),
                Entry::Removed(id) => id.clone(),
            };
            if self.named.insert(id.clone()) {
                self.order.push(id.clone());
            }
            match entry {
                Entry::Present(message) => {
                    self.removed.remove(&id);
                    self.present.insert(id, message);
                }
                Entry::Removed(_) => {
                    self.present.remove(&id);
                    self.removed.insert(id);
                }
            }
        }
        self.pages += 1;
        if let Some(next) = next {
            self.next = next;
            return Ok(None);
        }
        let (mut messages, mut removed) = (Vec::new(), Vec::new());
        for id in self.order.drain(..) {
            match self.present.remove(&id) {
                Some(message) => messages.push(message),
                None if self.removed.contains(&id) => removed.push(id),
                None => {}
            }
        }
        Ok(Some(Changes {
            messages,
            removed,
            next: DeltaLink(page.delta.unwrap_or_default()),
            full: self.full,
            reset: self.reset,
            pages: self.pages,
        }))
    }

    /// A page failed. A lost state (410) starts a full round over, once
    /// per round (what came before it is dropped); anything else is the
    /// caller's, and the round keeps its place.
    pub(crate) fn failed(&mut self, e: Error) -> Result<(), Error> {
        if !matches!(e, Error::SyncStateInvalid { .. }) || self.reset {
            return Err(e);
        }
        self.reset = true;
        self.full = true;
        self.next = self.initial.clone();
        self.order.clear();
        self.named.clear();
        self.present.clear();
        self.removed.clear();
        self.entries = 0;
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::graph::error::Detail;

    const BASE: &str = "https://graph.microsoft.com/v1.0/users('u')/mailFolders('F')/messages/delta";

    fn body(entries: &[(&str, bool)], next: Option<&str>, delta: Option<&str>) -> Vec<u8> {
        let value: Vec<_> = entries
            .iter()
            .map(|(id, removed)| {
                if *removed {
                    serde_json::json!({"id": id, "@removed": {"reason": "deleted"}})
                } else {
                    serde_json::json!({"id": id, "isRead": false, "receivedDateTime": "2026-12-07T10:00:00Z"})
                }
            })
            .collect();
        let mut page = serde_json::json!({"value": value});
        if let Some(n) = next {
            page["@odata.nextLink"] = format!("{BASE}?$skiptoken={n}").into();
        }
        if let Some(d) = delta {
            page["@odata.deltaLink"] = format!("{BASE}?$deltatoken={d}").into();
        }
        page.to_string().into_bytes()
    }

    fn ids(changes: &Changes) -> Vec<&str> {
        changes.messages.iter().map(|m| m.id.as_str()).collect()
    }

    fn gone() -> Error {
        Error::SyncStateInvalid {
            detail: Detail { status: 410, code: Some("SyncStateNotFound".into()), message: None },
        }
    }

    #[test]
    fn pages_to_the_delta_link() {
        let e = Endpoint::default();
        let mut round = Round::new(&e, "support@contoso.com", "inbox", None).unwrap();
        assert_eq!(round.url(), &e.delta("support@contoso.com", "inbox"));
        assert_eq!(round.page(&e, &body(&[("a", false), ("b", false)], Some("s1"), None)).unwrap(), None);
        assert_eq!(round.url().as_str(), format!("{BASE}?$skiptoken=s1"));
        // an empty page with a nextLink goes on (delta-query-overview.md)
        assert_eq!(round.page(&e, &body(&[], Some("s2"), None)).unwrap(), None);
        let changes = round.page(&e, &body(&[("c", false)], None, Some("d1"))).unwrap().unwrap();
        assert_eq!(ids(&changes), ["a", "b", "c"]);
        assert!(changes.removed.is_empty());
        assert!(changes.full && !changes.reset);
        assert_eq!(changes.pages, 3);
        assert_eq!(changes.next.as_str(), format!("{BASE}?$deltatoken=d1"));
        assert_eq!(changes.messages[0].is_read, Some(false));

        // the next round from the saved link: changes only
        let mut round =
            Round::new(&e, "support@contoso.com", "inbox", Some(&DeltaLink::saved(changes.next.as_str())))
                .unwrap();
        assert_eq!(round.url().as_str(), format!("{BASE}?$deltatoken=d1"));
        let changes = round.page(&e, &body(&[("a", true), ("d", false)], None, Some("d2"))).unwrap().unwrap();
        assert_eq!(ids(&changes), ["d"]);
        assert_eq!(changes.removed, ["a"]);
        assert!(!changes.full);
    }

    #[test]
    fn the_same_change_twice_counts_once_and_the_last_word_wins() {
        let e = Endpoint::default();
        let mut round = Round::new(&e, "u", "F", None).unwrap();
        round.page(&e, &body(&[("a", false), ("b", false), ("a", false)], Some("s"), None)).unwrap();
        round.page(&e, &body(&[("b", true), ("c", true), ("c", true)], Some("t"), None)).unwrap();
        let changes = round
            .page(&e, &body(&[("a", false), ("c", false), ("b", false), ("b", true)], None, Some("d")))
            .unwrap()
            .unwrap();
        assert_eq!(ids(&changes), ["a", "c"]);
        assert_eq!(changes.removed, ["b"]);
    }

    #[test]
    fn a_lost_state_starts_one_full_round() {
        let e = Endpoint::default();
        let saved = DeltaLink::saved(format!("{BASE}?$deltatoken=old"));
        let mut round = Round::new(&e, "u", "F", Some(&saved)).unwrap();
        round.page(&e, &body(&[("x", true)], Some("s"), None)).unwrap();
        round.failed(gone()).unwrap();
        assert_eq!(round.url(), &e.delta("u", "F"));
        let changes = round.page(&e, &body(&[("a", false)], None, Some("d"))).unwrap().unwrap();
        assert_eq!(ids(&changes), ["a"]);
        assert!(changes.removed.is_empty(), "what came before the reset is dropped");
        assert!(changes.full && changes.reset);
        // a second loss in one round is the caller's
        let mut round = Round::new(&e, "u", "F", Some(&saved)).unwrap();
        round.failed(gone()).unwrap();
        assert!(matches!(round.failed(gone()), Err(Error::SyncStateInvalid { .. })));
    }

    #[test]
    fn other_failures_keep_the_place() {
        let e = Endpoint::default();
        let mut round = Round::new(&e, "u", "F", None).unwrap();
        round.page(&e, &body(&[("a", false)], Some("s1"), None)).unwrap();
        let throttled =
            Error::Throttled { retry_after: None, detail: Detail { status: 429, code: None, message: None } };
        assert_eq!(round.failed(throttled.clone()), Err(throttled));
        assert_eq!(round.url().as_str(), format!("{BASE}?$skiptoken=s1"));
        let changes = round.page(&e, &body(&[("b", false)], None, Some("d"))).unwrap().unwrap();
        assert_eq!(ids(&changes), ["a", "b"]);
    }

    #[test]
    fn links_elsewhere_and_pages_without_links_are_refused() {
        let e = Endpoint::default();
        let mut round = Round::new(&e, "u", "F", None).unwrap();
        let evil = br#"{"value": [], "@odata.nextLink": "https://evil.example/v1.0/x?$skiptoken=1"}"#;
        assert!(matches!(round.page(&e, evil), Err(Error::BadAnswer(_))));
        let evil = br#"{"value": [], "@odata.deltaLink": "http://graph.microsoft.com/v1.0/x?$deltatoken=1"}"#;
        assert!(matches!(round.page(&e, evil), Err(Error::BadAnswer(_))));
        assert!(matches!(round.page(&e, br#"{"value": []}"#), Err(Error::BadAnswer(_))));
        // a saved link that leads elsewhere (a tampered state file)
        let saved =
            DeltaLink::saved("https://evil.example/v1.0/users/u/mailFolders/F/messages/delta?$deltatoken=1");
        assert!(matches!(Round::new(&e, "u", "F", Some(&saved)), Err(Error::BadAnswer(_))));
        assert_eq!(format!("{saved:?}"), "DeltaLink(…)");
    }
}
