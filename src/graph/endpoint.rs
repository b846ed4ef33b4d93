//! Where Graph answers, and the URLs of the calls we make there.

use reqwest::Url;

use super::Error;
use crate::sys::is_loopback;

/// Microsoft Graph's global service; national clouds have their own hosts
/// (e.g. https://graph.microsoft.us, https://microsoftgraph.chinacloudapi.cn).
pub const GLOBAL: &str = "https://graph.microsoft.com";

/// What every message and folder property we ask for in a delta round is
/// (the id always comes, api-reference/v1.0/api/message-delta.md).
const DELTA_SELECT: &str = "isRead,receivedDateTime,internetMessageId,parentFolderId";

/// Folders asked for per page (Graph's default is 10).
const FOLDER_PAGE: u32 = 100;

/// The well-known folder names (api-reference/v1.0/resources/mailfolder.md),
/// usable wherever a folder id is, with the English display names of those
/// a mailbox shows.
const WELL_KNOWN: &[(&str, &str)] = &[
    ("archive", "Archive"),
    ("clutter", "Clutter"),
    ("conflicts", "Conflicts"),
    ("conversationhistory", "Conversation History"),
    ("deleteditems", "Deleted Items"),
    ("drafts", "Drafts"),
    ("inbox", "Inbox"),
    ("junkemail", "Junk Email"),
    ("localfailures", "Local Failures"),
    ("msgfolderroot", "Top of Information Store"),
    ("outbox", "Outbox"),
    ("recoverableitemsdeletions", "Deletions"),
    ("scheduled", "Scheduled"),
    ("searchfolders", "Search Folders"),
    ("sentitems", "Sent Items"),
    ("serverfailures", "Server Failures"),
    ("syncissues", "Sync Issues"),
];

/// The well-known name `name` stands for, in any case, as the name itself
/// or its English display name ("deleteditems", "Deleted Items").
pub fn well_known(name: &str) -> Option<&'static str> {
    WELL_KNOWN
        .iter()
        .find(|(id, display)| name.eq_ignore_ascii_case(id) || name.eq_ignore_ascii_case(display))
        .map(|(id, _)| *id)
}

/// A `graph_url` that cannot be used.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum EndpointError {
    #[error("graph_url {0:?} is not a URL")]
    NotUrl(String),
    #[error("graph_url {0:?} must start with https:// (http:// only on this machine)")]
    Cleartext(String),
    #[error(
        "graph_url {0:?} must be a scheme, a host and at most a path: no user, password, query or fragment"
    )]
    Extra(String),
}

/// The base URL of a Graph service, checked.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Endpoint {
    base: Url,
}

impl Default for Endpoint {
    fn default() -> Endpoint {
        Endpoint::parse(GLOBAL).expect("the global endpoint is valid")
    }
}

impl Endpoint {
    /// https:// anywhere, http:// only to this machine (a test service): a
    /// bearer token never crosses a network in clear.
    pub fn parse(text: &str) -> Result<Endpoint, EndpointError> {
        let base = Url::parse(text.trim()).map_err(|_| EndpointError::NotUrl(text.into()))?;
        let host = base.host_str().unwrap_or_default();
        match base.scheme() {
            "https" if !host.is_empty() => {}
            "http" if is_loopback(host) => {}
            "http" | "https" => return Err(EndpointError::Cleartext(text.into())),
            _ => return Err(EndpointError::NotUrl(text.into())),
        }
        if !base.username().is_empty()
            || base.password().is_some()
            || base.query().is_some()
            || base.fragment().is_some()
        {
            return Err(EndpointError::Extra(text.into()));
        }
        Ok(Endpoint { base })
    }

    pub fn as_str(&self) -> &str {
        self.base.as_str()
    }

    /// base/v1.0/path?query; `path` is built with [`enc`] for its data.
    fn url(&self, path: &str, query: Option<&str>) -> Url {
        let mut url = self.base.clone();
        url.set_path(&format!("{}/v1.0/{path}", self.base.path().trim_end_matches('/')));
        url.set_query(query);
        url
    }

    /// The link where the pages of `user`'s folders under `parent` (None:
    /// the top of the mailbox) begin.
    pub(crate) fn folders(&self, user: &str, parent: Option<&str>) -> Url {
        let query = format!("$top={FOLDER_PAGE}");
        match parent {
            None => self.url(&format!("users/{}/mailFolders", enc(user)), Some(&query)),
            Some(id) => {
                self.url(&format!("users/{}/mailFolders/{}/childFolders", enc(user), enc(id)), Some(&query))
            }
        }
    }

    /// Where a folder is created under `parent` (None: the top).
    pub(crate) fn new_folder(&self, user: &str, parent: Option<&str>) -> Url {
        match parent {
            None => self.url(&format!("users/{}/mailFolders", enc(user)), None),
            Some(id) => self.url(&format!("users/{}/mailFolders/{}/childFolders", enc(user), enc(id)), None),
        }
    }

    /// One folder, by id or well-known name.
    pub(crate) fn folder(&self, user: &str, folder: &str) -> Url {
        self.url(&format!("users/{}/mailFolders/{}", enc(user), enc(folder)), None)
    }

    /// The first call of a full delta round over a folder.
    pub(crate) fn delta(&self, user: &str, folder: &str) -> Url {
        let path = format!("users/{}/mailFolders/{}/messages/delta", enc(user), enc(folder));
        self.url(&path, Some(&format!("$select={DELTA_SELECT}")))
    }

    /// A message; its MIME bytes; its move. The folder-scoped form of
    /// `$value` fails (GitLab's mail_room), so messages are addressed by
    /// mailbox only.
    pub(crate) fn message(&self, user: &str, id: &str) -> Url {
        self.url(&format!("users/{}/messages/{}", enc(user), enc(id)), None)
    }

    pub(crate) fn value(&self, user: &str, id: &str) -> Url {
        self.url(&format!("users/{}/messages/{}/$value", enc(user), enc(id)), None)
    }

    pub(crate) fn move_to(&self, user: &str, id: &str) -> Url {
        self.url(&format!("users/{}/messages/{}/move", enc(user), enc(id)), None)
    }

    /// A link the server handed us (`@odata.nextLink`, `@odata.deltaLink`,
    /// or one saved from an earlier round), taken only if it leads back to
    /// this service: the same scheme, host and port, under our path. A
    /// lying server, or a tampered state file, cannot send the bearer
    /// token elsewhere.
    pub(crate) fn link(&self, text: &str) -> Result<Url, Error> {
        let bad = |why: &str| Error::BadAnswer(format!("a link {why}"));
        let url = Url::parse(text).map_err(|_| bad("that is not a URL"))?;
        if url.scheme() != self.base.scheme()
            || url.host_str() != self.base.host_str()
            || url.port_or_known_default() != self.base.port_or_known_default()
        {
            return Err(bad(&format!("to another server ({})", origin(&url))));
        }
        if !url.username().is_empty() || url.password().is_some() || url.fragment().is_some() {
            return Err(bad("with a user, a password or a fragment"));
        }
        let prefix = format!("{}/v1.0/", self.base.path().trim_end_matches('/'));
        if !url.path().starts_with(&prefix) {
            return Err(bad("outside the service's path"));
        }
        Ok(url)
    }
}

/// A user or an id as one path segment, percent-encoded whole: only
/// letters, digits and `-._*` stay as they are, so a `/`, `'`, `?`, `#`,
/// `%` or `$` in it is never read as syntax.
fn enc(data: &str) -> String {
    // form encoding writes a space as '+'; in a path that is a plus sign
    form_urlencoded::byte_serialize(data.as_bytes()).collect::<String>().replace('+', "%20")
}

/// scheme://host:port of a URL, for messages (never its path or query).
fn origin(url: &Url) -> String {
    format!(
        "{}://{}:{}",
        url.scheme(),
        url.host_str().unwrap_or_default(),
        url.port_or_known_default().unwrap_or(0)
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn https_anywhere_http_only_on_loopback() {
        assert!(Endpoint::parse("https://graph.microsoft.com").is_ok());
        assert!(Endpoint::parse("https://graph.microsoft.us/").is_ok());
        assert!(Endpoint::parse("http://127.0.0.1:8080").is_ok());
        assert!(Endpoint::parse("http://[::1]:8080").is_ok());
        assert!(Endpoint::parse("http://localhost:8080").is_ok());
        assert!(matches!(Endpoint::parse("http://graph.microsoft.com"), Err(EndpointError::Cleartext(_))));
        assert!(matches!(Endpoint::parse("http://10.0.0.1"), Err(EndpointError::Cleartext(_))));
        assert!(matches!(Endpoint::parse("ftp://graph.microsoft.com"), Err(EndpointError::NotUrl(_))));
        assert!(matches!(Endpoint::parse("graph.microsoft.com"), Err(EndpointError::NotUrl(_))));
        assert!(matches!(Endpoint::parse("https://u:p@graph.microsoft.com"), Err(EndpointError::Extra(_))));
        assert!(matches!(Endpoint::parse("https://graph.microsoft.com/?x=1"), Err(EndpointError::Extra(_))));
        assert_eq!(Endpoint::default().as_str(), "https://graph.microsoft.com/");
    }

    #[test]
    fn users_and_ids_are_encoded_whole() {
        let e = Endpoint::default();
        assert_eq!(
            e.value("support@contoso.com", "AAMkAG-x_y=").as_str(),
            "https://graph.microsoft.com/v1.0/users/support%40contoso.com/messages/AAMkAG-x_y%3D/$value"
        );
        // syntax in a user or an id stays data
        let url = e.message("o'brien+x y/z?#%@contoso.com", "a/b");
        assert_eq!(url.path(), "/v1.0/users/o%27brien%2Bx%20y%2Fz%3F%23%25%40contoso.com/messages/a%2Fb");
        assert_eq!(url.query(), None);
        assert_eq!(e.move_to("u", "m").as_str(), "https://graph.microsoft.com/v1.0/users/u/messages/m/move");
        assert_eq!(
            e.folders("u", None).as_str(),
            "https://graph.microsoft.com/v1.0/users/u/mailFolders?$top=100"
        );
        assert_eq!(e.folders("u", Some("AQ==")).path(), "/v1.0/users/u/mailFolders/AQ%3D%3D/childFolders");
        let delta = e.delta("u", "inbox");
        assert_eq!(delta.path(), "/v1.0/users/u/mailFolders/inbox/messages/delta");
        assert_eq!(delta.query(), Some("$select=isRead,receivedDateTime,internetMessageId,parentFolderId"));
        assert_eq!(e.message("u", "$value").path(), "/v1.0/users/u/messages/%24value");
    }

    #[test]
    fn a_base_with_a_path_keeps_it() {
        let e = Endpoint::parse("http://127.0.0.1:9/graph/").unwrap();
        assert_eq!(
            e.folder("u", "inbox").as_str(),
            "http://127.0.0.1:9/graph/v1.0/users/u/mailFolders/inbox"
        );
        assert!(e.link("http://127.0.0.1:9/graph/v1.0/users('u')/x?$skiptoken=1").is_ok());
        assert!(e.link("http://127.0.0.1:9/v1.0/users/u").is_err());
    }

    #[test]
    fn links_must_lead_back_here() {
        let e = Endpoint::default();
        let ok = "https://graph.microsoft.com/v1.0/users('a%40b')/mailFolders('AQ%3D')/messages/delta?$deltatoken=x-y_z";
        let url = e.link(ok).unwrap();
        // taken as it is: the opaque token and the key syntax untouched
        assert_eq!(url.as_str(), ok);
        assert!(e.link("https://graph.microsoft.com:443/v1.0/x").is_ok());
        for bad in [
            "https://evil.example/v1.0/users/u/messages/delta?$deltatoken=1",
            "http://graph.microsoft.com/v1.0/x",
            "https://graph.microsoft.com:8443/v1.0/x",
            "https://graph.microsoft.com.evil.example/v1.0/x",
            "https://u:p@graph.microsoft.com/v1.0/x",
            "https://graph.microsoft.com/beta/x",
            "https://graph.microsoft.com/v1.0x",
            "/v1.0/users/u",
            "not a url",
        ] {
            assert!(matches!(e.link(bad), Err(Error::BadAnswer(_))), "{bad}");
        }
        // the refusal names the other server, not the whole link
        let Err(Error::BadAnswer(why)) = e.link("https://evil.example/v1.0/x?$deltatoken=secretish") else {
            panic!()
        };
        assert_eq!(why, "a link to another server (https://evil.example:443)");
    }

    #[test]
    fn well_known_names_in_any_spelling() {
        assert_eq!(well_known("Inbox"), Some("inbox"));
        assert_eq!(well_known("INBOX"), Some("inbox"));
        assert_eq!(well_known("Deleted Items"), Some("deleteditems"));
        assert_eq!(well_known("deleteditems"), Some("deleteditems"));
        assert_eq!(well_known("Sent Items"), Some("sentitems"));
        assert_eq!(well_known("Junk Email"), Some("junkemail"));
        assert_eq!(well_known("Chatwoot"), None);
        assert_eq!(well_known("In box"), None);
    }
}
