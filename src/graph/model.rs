//! The JSON Graph answers with, as far as we read it.

use serde::de::DeserializeOwned;
use serde::{Deserialize, Deserializer};
use serde_json::Value;

use super::Error;

/// A mail folder (api-reference/v1.0/resources/mailfolder.md).
#[derive(Clone, Debug, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Folder {
    pub id: String,
    #[serde(rename = "displayName")]
    pub name: String,
    #[serde(rename = "parentFolderId", default)]
    pub parent_id: Option<String>,
    #[serde(rename = "childFolderCount", default)]
    pub children: u32,
    #[serde(rename = "totalItemCount", default)]
    pub total: u32,
    #[serde(rename = "unreadItemCount", default)]
    pub unread: u32,
}

/// A message as a delta round or a move shows it: enough to decide what
/// to fetch, never its content.
#[derive(Clone, Debug, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Message {
    /// With `Prefer: IdType="ImmutableId"` (every request we send), it
    /// stays the same when the message moves (concepts/outlook-immutable-id.md).
    pub id: String,
    /// None when the entry did not say (an update of another property).
    #[serde(default, deserialize_with = "lenient_bool")]
    pub is_read: Option<bool>,
    /// As Graph writes it (ISO 8601, UTC): it sorts as text.
    #[serde(rename = "receivedDateTime", default)]
    pub received: Option<String>,
    #[serde(default)]
    pub internet_message_id: Option<String>,
    #[serde(rename = "parentFolderId", default)]
    pub folder_id: Option<String>,
}

/// `true`, `false`, or the strings "true"/"false" (the delta doc's own
/// example has `"isRead": "true"`).
fn lenient_bool<'de, D: Deserializer<'de>>(d: D) -> Result<Option<bool>, D::Error> {
    Ok(match Value::deserialize(d)? {
        Value::Bool(b) => Some(b),
        Value::String(s) if s.eq_ignore_ascii_case("true") => Some(true),
        Value::String(s) if s.eq_ignore_ascii_case("false") => Some(false),
        _ => None,
    })
}

/// One page of a collection: its values and where the next page or the
/// next round is.
#[derive(Debug)]
pub(crate) struct Page<T> {
    pub value: Vec<T>,
    pub next: Option<String>,
    pub delta: Option<String>,
}

#[derive(Deserialize)]
struct RawPage {
    value: Vec<Value>,
    #[serde(rename = "@odata.nextLink")]
    next: Option<String>,
    #[serde(rename = "@odata.deltaLink")]
    delta: Option<String>,
}

pub(crate) fn page<T: DeserializeOwned>(body: &[u8]) -> Result<Page<T>, Error> {
    let raw: RawPage = serde_json::from_slice(body).map_err(|e| bad("a collection", &e))?;
    let value = raw.value.into_iter().map(|v| serde_json::from_value(v).map_err(|e| bad("an entry", &e)));
    Ok(Page { value: value.collect::<Result<_, _>>()?, next: raw.next, delta: raw.delta })
}

pub(crate) fn one<T: DeserializeOwned>(body: &[u8], what: &str) -> Result<T, Error> {
    serde_json::from_slice(body).map_err(|e| bad(what, &e))
}

/// An entry of a delta page: a message there (added or changed: they look
/// alike), or one that left (`@removed`, whatever its reason).
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) enum Entry {
    Present(Message),
    Removed(String),
}

impl<'de> Deserialize<'de> for Entry {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Entry, D::Error> {
        use serde::de::Error as _;
        let value = Value::deserialize(d)?;
        if value.get("@removed").is_some() {
            let id = value.get("id").and_then(Value::as_str).filter(|id| !id.is_empty());
            return id
                .map(|id| Entry::Removed(id.to_string()))
                .ok_or_else(|| D::Error::custom("@removed without an id"));
        }
        let message: Message = serde_json::from_value(value).map_err(D::Error::custom)?;
        if message.id.is_empty() {
            return Err(D::Error::custom("an empty id"));
        }
        Ok(Entry::Present(message))
    }
}

/// serde's words name the field and the position, never a value.
fn bad(what: &str, e: &serde_json::Error) -> Error {
    let why = match e.classify() {
        serde_json::error::Category::Data => {
            // "invalid type: string \"…\", expected …" would quote the value
            let text = e.to_string();
            match text.split_once(": ") {
                Some((kind, _)) if text.starts_with("invalid") => kind.to_string(),
                _ => text,
            }
        }
        _ => format!("not JSON (line {}, column {})", e.line(), e.column()),
    };
    Error::BadAnswer(format!("{what} that is not what Graph sends: {why}"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_delta_page_as_the_doc_shows_it() {
        // concepts/delta-query-messages.md, the next round's response
        let body = br##"{
          "@odata.context": "https://graph.microsoft.com/v1.0/$metadata#Collection(message)",
          "@odata.deltaLink": "https://graph.microsoft.com/v1.0/me/mailfolders('AQMkADNkNAAAgEMAAAA')/messages/delta?$deltatoken=GwcBoTmPuoGNlgXgF1nyUNMXY",
          "value": [
            {"@odata.type": "#microsoft.graph.message",
             "id": "AAMkADk0MGFkODE3LWE4MmYtNDRhOS0Dh_6qB-pB2Sa2pUum19a6YAAKnLuxoAAA=",
             "@removed": {"reason": "deleted"}},
            {"@odata.type": "#microsoft.graph.message", "@odata.etag": "W/\"CQAAABYAAAARn2vdzPFjSbaPPxzjlzOTAAASsKZz\"",
             "subject": "Holiday hours update", "isRead": "true",
             "sender": {"emailAddress": {"name": "Dana Swope", "address": "danas@contoso.com"}},
             "id": "AAMkADNkNAAASq35xAAA="}
          ]}"##;
        let page: Page<Entry> = page(body).unwrap();
        assert_eq!(page.next, None);
        assert!(page.delta.unwrap().ends_with("$deltatoken=GwcBoTmPuoGNlgXgF1nyUNMXY"));
        assert_eq!(
            page.value,
            vec![
                Entry::Removed("AAMkADk0MGFkODE3LWE4MmYtNDRhOS0Dh_6qB-pB2Sa2pUum19a6YAAKnLuxoAAA=".into()),
                Entry::Present(Message {
                    id: "AAMkADNkNAAASq35xAAA=".into(),
                    is_read: Some(true),
                    received: None,
                    internet_message_id: None,
                    folder_id: None
                }),
            ]
        );
    }

    #[test]
    fn entries_graph_would_not_send_are_refused() {
        for body in [
            &br#"{"value": [{"subject": "no id"}]}"#[..],
            br#"{"value": [{"id": ""}]}"#,
            br#"{"value": [{"@removed": {"reason": "deleted"}}]}"#,
            br#"{"value": [{"id": 7}]}"#,
            br#"{"value": {"id": "x"}}"#,
            br#"{"no": "value"}"#,
            b"<html>",
            b"",
        ] {
            assert!(
                matches!(page::<Entry>(body), Err(Error::BadAnswer(_))),
                "{}",
                String::from_utf8_lossy(body)
            );
        }
        // what went wrong is told without the value
        let Err(Error::BadAnswer(why)) = page::<Entry>(br#"{"value": [{"id": ["secret-ish"]}]}"#) else {
            panic!()
        };
        assert!(!why.contains("secret-ish"), "{why}");
    }

    #[test]
    fn is_read_leniently() {
        let m = |v: &str| {
            one::<Message>(format!(r#"{{"id": "x", "isRead": {v}}}"#).as_bytes(), "m").unwrap().is_read
        };
        assert_eq!(m("true"), Some(true));
        assert_eq!(m("false"), Some(false));
        assert_eq!(m(r#""False""#), Some(false));
        assert_eq!(m("null"), None);
        assert_eq!(m("1"), None);
        assert_eq!(one::<Message>(br#"{"id": "x"}"#, "m").unwrap().is_read, None);
    }

    #[test]
    fn folders_as_the_list_shows_them() {
        // api-reference/v1.0/api/user-list-mailfolders.md
        let body = br##"{"@odata.context": "https://graph.microsoft.com/v1.0/$metadata#users('68ca8ec0')/mailFolders",
          "value": [{"id": "AQMkADYAAAIBXQAAAA==", "displayName": "Archive", "parentFolderId": "AQMkADYAAAIBCAAAAA==",
                     "childFolderCount": 0, "unreadItemCount": 0, "totalItemCount": 0, "isHidden": false},
                    {"@odata.type": "#microsoft.graph.mailSearchFolder", "id": "AAMkADYRAAAZg1yTAAA=",
                     "displayName": "Weekly digests", "parentFolderId": "AQMkADYAAAIBDAAAAA==", "childFolderCount": 0,
                     "unreadItemCount": 4, "totalItemCount": 5, "isHidden": false, "isSupported": true,
                     "filterQuery": "contains(subject, 'weekly digest')"}],
          "@odata.nextLink": "https://graph.microsoft.com/v1.0/me/mailFolders?%24skip=10"}"##;
        let page: Page<Folder> = page(body).unwrap();
        assert_eq!(page.value[1].name, "Weekly digests");
        assert_eq!(page.value[1].unread, 4);
        assert_eq!(page.value[0].parent_id.as_deref(), Some("AQMkADYAAAIBCAAAAA=="));
        assert!(page.next.is_some());
    }
}
