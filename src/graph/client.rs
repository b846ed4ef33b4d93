//! The blocking calls the engine makes, each through the mailbox's limits,
//! with `Prefer: IdType="ImmutableId"` and the caller's bearer token.

use std::path::Path;
use std::time::Duration;

use reqwest::Url;
use serde_json::json;

use super::delta::{Changes, DeltaLink, Round};
use super::endpoint::Endpoint;
use super::error::classify;
use super::folders::{self, FolderPath, Lookup, Tree};
use super::limit::{Limits, MAX_IN_FLIGHT};
use super::model::{self, Folder, Message};
use super::wire::Wire;
use super::Error;
use crate::http::SetupError;
use crate::secret::Password;

/// The most of a JSON answer read (a delta page of 1,000 messages with
/// our `$select` is far less).
const JSON_MAX: u64 = 64 << 20;
/// Pages of folders followed under one parent at the most.
const FOLDER_PAGES: usize = 1000;

/// How a client behaves.
#[derive(Clone, Debug)]
pub struct Options {
    /// One request, from its start to the last byte of its answer.
    pub timeout: Duration,
    /// Requests in flight per mailbox at the most (Outlook allows 4).
    pub max_in_flight: usize,
    /// Messages per delta page asked for (`Prefer: odata.maxpagesize`).
    pub page_size: u32,
}

impl Default for Options {
    fn default() -> Options {
        Options { timeout: Duration::from_secs(60), max_in_flight: MAX_IN_FLIGHT, page_size: 100 }
    }
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Method {
    Get,
    Post,
    Patch,
}

/// One request as the transport sends it: with `Authorization: Bearer`,
/// `Prefer: {prefer}`, and `Content-Type: application/json` when there is
/// a body.
#[derive(Debug)]
pub(crate) struct Request {
    pub method: Method,
    pub url: Url,
    pub prefer: String,
    pub json: Option<Vec<u8>>,
}

/// An answer: its status, its `Retry-After`, its body.
#[derive(Debug)]
pub(crate) struct Answer {
    pub status: u16,
    pub retry_after: Option<String>,
    pub body: Vec<u8>,
}

/// How one HTTP exchange is made.
pub(crate) trait Transport: Send + Sync {
    /// Sends `request` and reads the answer: the body of a 2xx whole, or
    /// [`Error::TooLarge`] beyond `cap` bytes (not read further); of any
    /// other status, what fits in `cap`. No answer: [`Error::Transport`].
    fn exchange(
        &self,
        request: &Request,
        token: &Password,
        cap: u64,
        timeout: Duration,
    ) -> Result<Answer, Error>;
}

/// A Graph mail client: one per process is enough; every mailbox it talks
/// to has its own limits.
pub struct Client {
    endpoint: Endpoint,
    options: Options,
    limits: Limits,
    transport: Box<dyn Transport>,
}

impl Client {
    /// A client of `endpoint` on the process's HTTP client; `ca_file`
    /// trusted besides the system's roots (a TLS-inspecting proxy's CA).
    pub fn new(endpoint: Endpoint, options: Options, ca_file: Option<&Path>) -> Result<Client, SetupError> {
        Ok(Client::with_transport(endpoint, options, Box::new(Wire::new(ca_file)?)))
    }

    fn with_transport(endpoint: Endpoint, options: Options, transport: Box<dyn Transport>) -> Client {
        let limits = Limits::new(options.max_in_flight);
        Client { endpoint, options, limits, transport }
    }

    pub fn endpoint(&self) -> &Endpoint {
        &self.endpoint
    }

    /// The folders right under `parent` (None: the top of the mailbox),
    /// every page.
    pub fn children(&self, token: &Password, user: &str, parent: Option<&str>) -> Result<Vec<Folder>, Error> {
        let mut url = self.endpoint.folders(user, parent);
        let mut all = Vec::new();
        for _ in 0..FOLDER_PAGES {
            let body = self.call(token, user, Method::Get, url, None, None, JSON_MAX)?;
            let page = model::page::<Folder>(&body)?;
            all.extend(page.value);
            match page.next {
                Some(next) => url = self.endpoint.link(&next)?,
                None => return Ok(all),
            }
        }
        Err(Error::BadAnswer(format!("more than {FOLDER_PAGES} pages of folders")))
    }

    /// The folder at `path`, if there is one.
    pub fn folder(&self, token: &Password, user: &str, path: &FolderPath) -> Result<Option<Folder>, Error> {
        match folders::resolve(&mut Remote { client: self, token, user }, path)? {
            Lookup::Found(folder) => Ok(Some(folder)),
            Lookup::Missing(..) => Ok(None),
        }
    }

    /// The folder at `path`, created (with what is missing above it) when
    /// it is not there (user-post-mailfolders.md, mailfolder-post-childfolders.md).
    pub fn ensure_folder(&self, token: &Password, user: &str, path: &FolderPath) -> Result<Folder, Error> {
        folders::ensure(&mut Remote { client: self, token, user }, path)
    }

    /// A delta round over `folder` (an id or a well-known name), from the
    /// link the last round ended with, or a full one.
    pub fn round(&self, user: &str, folder: &str, from: Option<&DeltaLink>) -> Result<Round, Error> {
        Round::new(&self.endpoint, user, folder, from)
    }

    /// Runs `round` to its delta link. On an error the round keeps its
    /// place: called again, it goes on from the page that failed. A lost
    /// delta state (410) starts the folder over once, as a full round.
    pub fn delta(&self, token: &Password, user: &str, round: &mut Round) -> Result<Changes, Error> {
        loop {
            let url = round.url().clone();
            let page = self.call(token, user, Method::Get, url, None, Some(self.options.page_size), JSON_MAX);
            match page {
                Ok(body) => {
                    if let Some(changes) = round.page(&self.endpoint, &body)? {
                        return Ok(changes);
                    }
                }
                Err(e) => round.failed(e)?,
            }
        }
    }

    /// A message's MIME content, byte for byte (`GET …/messages/{id}/$value`,
    /// concepts/outlook-get-mime-message.md); [`Error::TooLarge`] past
    /// `max` bytes, which are never read whole.
    pub fn fetch(&self, token: &Password, user: &str, id: &str, max: u64) -> Result<Vec<u8>, Error> {
        self.call(token, user, Method::Get, self.endpoint.value(user, id), None, None, max)
    }

    /// `PATCH {"isRead": true}` (message-update.md).
    pub fn mark_read(&self, token: &Password, user: &str, id: &str) -> Result<(), Error> {
        let body = json!({"isRead": true});
        self.call(token, user, Method::Patch, self.endpoint.message(user, id), Some(body), None, JSON_MAX)?;
        Ok(())
    }

    /// Moves a message to `destination`, a folder id or a well-known name
    /// (`deleteditems` for a delete one can undo); the message as it is
    /// there (message-move.md). Its id stays (immutable ids).
    pub fn move_message(
        &self,
        token: &Password,
        user: &str,
        id: &str,
        destination: &str,
    ) -> Result<Message, Error> {
        let body = json!({"destinationId": destination});
        let answer = self.call(
            token,
            user,
            Method::Post,
            self.endpoint.move_to(user, id),
            Some(body),
            None,
            JSON_MAX,
        )?;
        model::one(&answer, "a moved message")
    }

    /// One exchange through the mailbox's limits; a non-2xx answer
    /// classified, and its `Retry-After` holding the mailbox.
    #[allow(clippy::too_many_arguments)]
    fn call(
        &self,
        token: &Password,
        user: &str,
        method: Method,
        url: Url,
        json: Option<serde_json::Value>,
        page_size: Option<u32>,
        cap: u64,
    ) -> Result<Vec<u8>, Error> {
        let _permit = self.limits.enter(user, self.options.timeout)?;
        // concepts/outlook-immutable-id.md: the header counts for its own request only
        let mut prefer = String::from("IdType=\"ImmutableId\"");
        if let Some(size) = page_size {
            prefer.push_str(&format!(", odata.maxpagesize={size}"));
        }
        let json = json.map(|v| v.to_string().into_bytes());
        let request = Request { method, url, prefer, json };
        let answer = self.transport.exchange(&request, token, cap, self.options.timeout)?;
        if (200..300).contains(&answer.status) {
            return Ok(answer.body);
        }
        let error = classify(answer.status, answer.retry_after.as_deref(), &answer.body, token.expose());
        self.limits.hold(user, &error);
        Err(error)
    }
}

/// The folder tree of one mailbox, as Graph shows it.
struct Remote<'a> {
    client: &'a Client,
    token: &'a Password,
    user: &'a str,
}

impl Tree for Remote<'_> {
    fn well_known(&mut self, name: &str) -> Result<Folder, Error> {
        let c = self.client;
        let body = c.call(
            self.token,
            self.user,
            Method::Get,
            c.endpoint.folder(self.user, name),
            None,
            None,
            JSON_MAX,
        )?;
        model::one(&body, "a folder")
    }

    fn children(&mut self, parent: Option<&str>) -> Result<Vec<Folder>, Error> {
        self.client.children(self.token, self.user, parent)
    }

    fn create(&mut self, parent: Option<&str>, name: &str) -> Result<Folder, Error> {
        let c = self.client;
        let url = c.endpoint.new_folder(self.user, parent);
        let body = json!({"displayName": name, "isHidden": false});
        let answer = c.call(self.token, self.user, Method::Post, url, Some(body), None, JSON_MAX)?;
        model::one(&answer, "a new folder")
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::VecDeque;
    use std::sync::{Arc, Mutex};

    use crate::http::Kind;

    /// A request as the transport got it.
    #[derive(Clone, Debug)]
    struct Asked {
        method: Method,
        url: String,
        prefer: String,
        json: Option<String>,
        cap: u64,
    }

    /// Answers from a script; remembers what was asked.
    #[derive(Clone, Default)]
    struct Script {
        answers: Arc<Mutex<VecDeque<Result<Answer, Error>>>>,
        asked: Arc<Mutex<Vec<Asked>>>,
    }

    impl Script {
        fn answer(&self, status: u16, retry_after: Option<&str>, body: &str) -> &Self {
            let answer =
                Answer { status, retry_after: retry_after.map(Into::into), body: body.as_bytes().to_vec() };
            self.answers.lock().unwrap().push_back(Ok(answer));
            self
        }
        fn fail(&self, e: Error) -> &Self {
            self.answers.lock().unwrap().push_back(Err(e));
            self
        }
        fn asked(&self) -> Vec<Asked> {
            self.asked.lock().unwrap().clone()
        }
    }

    impl Transport for Script {
        fn exchange(&self, r: &Request, token: &Password, cap: u64, _: Duration) -> Result<Answer, Error> {
            assert_eq!(token.expose(), "tok");
            let json = r.json.as_ref().map(|j| String::from_utf8(j.clone()).unwrap());
            let asked =
                Asked { method: r.method, url: r.url.to_string(), prefer: r.prefer.clone(), json, cap };
            self.asked.lock().unwrap().push(asked);
            self.answers.lock().unwrap().pop_front().expect("an answer scripted")
        }
    }

    fn client(script: &Script) -> Client {
        let options = Options { page_size: 2, ..Options::default() };
        Client::with_transport(Endpoint::default(), options, Box::new(script.clone()))
    }

    fn token() -> Password {
        Password::new("tok")
    }

    const G: &str = "https://graph.microsoft.com/v1.0";

    #[test]
    fn every_request_asks_for_immutable_ids() {
        let s = Script::default();
        s.answer(200, None, "From: a\r\n\r\nbody\r\n").answer(200, None, "{}").answer(
            201,
            None,
            r#"{"id": "IMM", "parentFolderId": "DEL", "isRead": true}"#,
        );
        let c = client(&s);
        assert_eq!(c.fetch(&token(), "a@b.c", "IMM", 1000).unwrap(), b"From: a\r\n\r\nbody\r\n");
        c.mark_read(&token(), "a@b.c", "IMM").unwrap();
        let moved = c.move_message(&token(), "a@b.c", "IMM", "deleteditems").unwrap();
        assert_eq!((moved.id.as_str(), moved.folder_id.as_deref()), ("IMM", Some("DEL")));
        let asked = s.asked();
        assert_eq!(asked[0].method, Method::Get);
        assert_eq!(asked[0].url, format!("{G}/users/a%40b.c/messages/IMM/$value"));
        assert_eq!(asked[0].cap, 1000, "the caller's cap");
        assert_eq!(asked[1].method, Method::Patch);
        assert_eq!(asked[1].url, format!("{G}/users/a%40b.c/messages/IMM"));
        assert_eq!(asked[1].json.as_deref(), Some(r#"{"isRead":true}"#));
        assert_eq!(asked[2].method, Method::Post);
        assert_eq!(asked[2].url, format!("{G}/users/a%40b.c/messages/IMM/move"));
        assert_eq!(asked[2].json.as_deref(), Some(r#"{"destinationId":"deleteditems"}"#));
        assert!(asked.iter().all(|a| a.prefer == r#"IdType="ImmutableId""#), "{asked:?}");
    }

    #[test]
    fn a_delta_round_over_pages_with_the_page_size() {
        let s = Script::default();
        let base = format!("{G}/users('a%40b.c')/mailFolders('F')/messages/delta");
        s.answer(
            200,
            None,
            &format!(r#"{{"value": [{{"id": "1"}}], "@odata.nextLink": "{base}?$skiptoken=s"}}"#),
        )
        .answer(429, Some("0"), r#"{"error": {"code": "ApplicationThrottled", "message": "over"}}"#)
        .answer(
            200,
            None,
            &format!(
                r#"{{"value": [{{"id": "2", "isRead": true}}], "@odata.deltaLink": "{base}?$deltatoken=d"}}"#
            ),
        );
        let c = client(&s);
        let mut round = c.round("a@b.c", "inbox", None).unwrap();
        let e = c.delta(&token(), "a@b.c", &mut round).unwrap_err();
        assert!(matches!(e, Error::Throttled { retry_after: Some(Duration::ZERO), .. }), "{e:?}");
        // again: on from the page that failed
        let changes = c.delta(&token(), "a@b.c", &mut round).unwrap();
        assert_eq!(changes.messages.iter().map(|m| m.id.as_str()).collect::<Vec<_>>(), ["1", "2"]);
        assert_eq!(changes.next.as_str(), format!("{base}?$deltatoken=d"));
        let asked = s.asked();
        assert_eq!(
            asked[0].url,
            format!("{G}/users/a%40b.c/mailFolders/inbox/messages/delta?$select=isRead,receivedDateTime,internetMessageId,parentFolderId")
        );
        assert_eq!(asked[1].url, format!("{base}?$skiptoken=s"));
        assert_eq!(asked[2].url, asked[1].url);
        assert!(asked.iter().all(|a| a.prefer == r#"IdType="ImmutableId", odata.maxpagesize=2"#));
    }

    #[test]
    fn a_lost_delta_state_starts_over_within_the_call() {
        let s = Script::default();
        let base = format!("{G}/users('u')/mailFolders('F')/messages/delta");
        s.answer(410, None, r#"{"error": {"code": "SyncStateNotFound", "message": "The sync state generation is not found"}}"#)
            .answer(200, None, &format!(r#"{{"value": [{{"id": "1"}}], "@odata.deltaLink": "{base}?$deltatoken=new"}}"#));
        let c = client(&s);
        let saved = DeltaLink::saved(format!("{base}?$deltatoken=old"));
        let mut round = c.round("u", "F", Some(&saved)).unwrap();
        let changes = c.delta(&token(), "u", &mut round).unwrap();
        assert!(changes.full && changes.reset);
        assert_eq!(s.asked()[1].url, format!("{G}/users/u/mailFolders/F/messages/delta?$select=isRead,receivedDateTime,internetMessageId,parentFolderId"));
    }

    #[test]
    fn a_retry_after_holds_the_mailbox_without_sending() {
        let s = Script::default();
        s.answer(429, Some("30"), r#"{"error": {"code": "ApplicationThrottled", "message": "over tok"}}"#);
        let c = client(&s);
        let e = c.mark_read(&token(), "a@b.c", "M").unwrap_err();
        assert_eq!(e.retry_after(), Some(Duration::from_secs(30)));
        assert_eq!(e.detail().unwrap().message.as_deref(), Some("over ****"));
        let again = c.fetch(&token(), "A@B.C", "M", 10).unwrap_err();
        assert!(
            matches!(again, Error::Throttled { retry_after: Some(d), .. } if d > Duration::from_secs(29))
        );
        assert_eq!(s.asked().len(), 1, "nothing sent while the Retry-After holds");
        // another mailbox goes on
        s.answer(200, None, "x");
        assert!(c.fetch(&token(), "other@b.c", "M", 10).is_ok());
    }

    #[test]
    fn transport_failures_and_limits_come_through() {
        let s = Script::default();
        s.fail(Error::TooLarge { limit: 10 })
            .fail(Error::Transport { kind: Kind::Lost, detail: "reset".into() });
        let c = client(&s);
        assert_eq!(c.fetch(&token(), "u", "M", 10), Err(Error::TooLarge { limit: 10 }));
        assert!(matches!(c.fetch(&token(), "u", "M", 10), Err(Error::Transport { kind: Kind::Lost, .. })));
        s.answer(401, None, r#"{"error": {"code": "InvalidAuthenticationToken", "message": "Lifetime validation failed, the token is expired."}}"#);
        assert!(matches!(c.fetch(&token(), "u", "M", 10), Err(Error::Unauthorized { .. })));
        s.answer(200, None, "not json");
        assert!(matches!(c.move_message(&token(), "u", "M", "inbox"), Err(Error::BadAnswer(_))));
    }

    #[test]
    fn folders_over_pages_and_created_when_missing() {
        let s = Script::default();
        let f = |id: &str, name: &str| {
            format!(r#"{{"id": "{id}", "displayName": "{name}", "parentFolderId": "ROOT"}}"#)
        };
        s.answer(
            200,
            None,
            &format!(
                r#"{{"value": [{}], "@odata.nextLink": "{G}/users('u')/mailFolders?%24skip=1"}}"#,
                f("A", "Archive")
            ),
        )
        .answer(200, None, &format!(r#"{{"value": [{}]}}"#, f("CW", "Chatwoot")))
        .answer(200, None, r#"{"value": []}"#)
        .answer(201, None, &f("NEW", "Refused"));
        let c = client(&s);
        let folder = c.ensure_folder(&token(), "u", &FolderPath::parse("Chatwoot/Refused").unwrap()).unwrap();
        assert_eq!(folder.id, "NEW");
        let asked = s.asked();
        assert_eq!(asked[0].url, format!("{G}/users/u/mailFolders?$top=100"));
        assert_eq!(asked[1].url, format!("{G}/users('u')/mailFolders?%24skip=1"));
        assert_eq!(asked[2].url, format!("{G}/users/u/mailFolders/CW/childFolders?$top=100"));
        assert_eq!(
            (asked[3].method, asked[3].url.as_str()),
            (Method::Post, format!("{G}/users/u/mailFolders/CW/childFolders").as_str())
        );
        assert_eq!(asked[3].json.as_deref(), Some(r#"{"displayName":"Refused","isHidden":false}"#));
        // a folder list that leads elsewhere is refused
        s.answer(
            200,
            None,
            r#"{"value": [], "@odata.nextLink": "https://evil.example/v1.0/users/u/mailFolders"}"#,
        );
        assert!(matches!(c.children(&token(), "u", None), Err(Error::BadAnswer(_))));
        // a well-known name is one call
        s.answer(200, None, &f("IN", "Posteingang"));
        let inbox = c.folder(&token(), "u", &FolderPath::parse("Inbox").unwrap()).unwrap().unwrap();
        assert_eq!(inbox.id, "IN");
        assert_eq!(s.asked().last().unwrap().url, format!("{G}/users/u/mailFolders/inbox"));
    }
}
