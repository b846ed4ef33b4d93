//! From a folder as an administrator writes it ("Inbox", "Chatwoot",
//! "Support/Refused") to the folder Graph knows.

use std::fmt;

use super::endpoint::well_known;
use super::model::Folder;
use super::Error;

/// A folder path: names separated by `/`, none of them empty. The first
/// may be a well-known name ("Inbox", "deleteditems", "Deleted Items"),
/// which works in a mailbox of any language.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct FolderPath(Vec<String>);

impl FolderPath {
    pub fn parse(text: &str) -> Option<FolderPath> {
        let names: Vec<String> = text.split('/').map(str::to_string).collect();
        if names.iter().any(|n| n.trim().is_empty()) {
            return None;
        }
        Some(FolderPath(names))
    }
}

impl fmt::Display for FolderPath {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0.join("/"))
    }
}

/// What resolving a path asks of Graph.
pub(crate) trait Tree {
    /// A well-known folder (NotFound when the mailbox has none).
    fn well_known(&mut self, name: &str) -> Result<Folder, Error>;
    /// The folders under `parent` (None: the top of the mailbox).
    fn children(&mut self, parent: Option<&str>) -> Result<Vec<Folder>, Error>;
    /// Creates `name` under `parent`.
    fn create(&mut self, parent: Option<&str>, name: &str) -> Result<Folder, Error>;
}

/// How far a path got.
#[derive(Debug, PartialEq, Eq)]
pub(crate) enum Lookup {
    Found(Folder),
    /// The deepest folder found (None: the top) and the names below it
    /// that are not there.
    Missing(Option<Folder>, Vec<String>),
}

/// Finds `path`. Names are matched exactly, else in any case (Exchange
/// keeps sibling names unique in any case). A name may itself hold a `/`:
/// at each level the longest run of names that is one folder wins.
pub(crate) fn resolve(tree: &mut impl Tree, path: &FolderPath) -> Result<Lookup, Error> {
    let names = &path.0;
    let mut parent: Option<Folder> = None;
    let mut at = 0;
    if let Some(name) = well_known(&names[0]) {
        match tree.well_known(name) {
            Ok(folder) => {
                parent = Some(folder);
                at = 1;
            }
            // a well-known folder this mailbox lacks (e.g. archive): by name
            Err(Error::NotFound { .. }) => {}
            Err(e) => return Err(e),
        }
    }
    while at < names.len() {
        let children = tree.children(parent.as_ref().map(|f| f.id.as_str()))?;
        let found = (at + 1..=names.len()).rev().find_map(|end| {
            let name = names[at..end].join("/");
            let exact = children.iter().find(|c| c.name == name);
            let any_case = || children.iter().find(|c| c.name.to_lowercase() == name.to_lowercase());
            exact.or_else(any_case).map(|c| (c.clone(), end))
        });
        match found {
            Some((folder, end)) => {
                parent = Some(folder);
                at = end;
            }
            None => return Ok(Lookup::Missing(parent, names[at..].to_vec())),
        }
    }
    Ok(Lookup::Found(parent.expect("a path has a name")))
}

/// Finds `path`, creating what is missing (each missing name one folder).
/// A folder another client created meanwhile (409) is taken.
pub(crate) fn ensure(tree: &mut impl Tree, path: &FolderPath) -> Result<Folder, Error> {
    let (mut parent, missing) = match resolve(tree, path)? {
        Lookup::Found(folder) => return Ok(folder),
        Lookup::Missing(parent, missing) => (parent, missing),
    };
    for name in missing {
        let under = parent.as_ref().map(|f| f.id.clone());
        let folder = match tree.create(under.as_deref(), &name) {
            Ok(folder) => folder,
            Err(e @ Error::Conflict { .. }) => tree
                .children(under.as_deref())?
                .into_iter()
                .find(|c| c.name.to_lowercase() == name.to_lowercase())
                .ok_or(e)?,
            Err(e) => return Err(e),
        };
        parent = Some(folder);
    }
    Ok(parent.expect("something was missing"))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::graph::error::Detail;

    /// A mailbox's folder tree in memory, counting the calls.
    #[derive(Default)]
    struct Fake {
        folders: Vec<Folder>,
        well_known: Vec<(&'static str, String)>,
        calls: Vec<String>,
        /// create answers 409 after someone else created the folder
        race: bool,
    }

    fn folder(id: &str, name: &str, parent: Option<&str>) -> Folder {
        Folder {
            id: id.into(),
            name: name.into(),
            parent_id: parent.map(Into::into),
            children: 0,
            total: 0,
            unread: 0,
        }
    }

    fn detail(status: u16) -> Detail {
        Detail { status, code: None, message: None }
    }

    impl Tree for Fake {
        fn well_known(&mut self, name: &str) -> Result<Folder, Error> {
            self.calls.push(format!("wk {name}"));
            let id = self.well_known.iter().find(|(n, _)| *n == name).map(|(_, id)| id.clone());
            let id = id.ok_or(Error::NotFound { detail: detail(404) })?;
            Ok(self.folders.iter().find(|f| f.id == id).unwrap().clone())
        }
        fn children(&mut self, parent: Option<&str>) -> Result<Vec<Folder>, Error> {
            self.calls.push(format!("children {}", parent.unwrap_or("-")));
            Ok(self
                .folders
                .iter()
                .filter(|f| f.parent_id.as_deref() == Some(parent.unwrap_or("root")))
                .cloned()
                .collect())
        }
        fn create(&mut self, parent: Option<&str>, name: &str) -> Result<Folder, Error> {
            self.calls.push(format!("create {} {name}", parent.unwrap_or("-")));
            let f = folder(&format!("new-{name}"), name, Some(parent.unwrap_or("root")));
            self.folders.push(f.clone());
            if self.race {
                return Err(Error::Conflict { detail: detail(409) });
            }
            Ok(f)
        }
    }

    fn mailbox() -> Fake {
        Fake {
            folders: vec![
                folder("IN", "Posteingang", Some("root")),
                folder("DEL", "Gelöschte Elemente", Some("root")),
                folder("CW", "Chatwoot", Some("root")),
                folder("CWR", "Refused", Some("CW")),
                folder("SLASH", "Refused/Spam", Some("CW")),
                folder("SUB", "Sub", Some("IN")),
            ],
            well_known: vec![("inbox", "IN".into()), ("deleteditems", "DEL".into())],
            ..Fake::default()
        }
    }

    fn path(p: &str) -> FolderPath {
        FolderPath::parse(p).unwrap()
    }

    fn found(tree: &mut Fake, p: &str) -> Option<String> {
        match resolve(tree, &path(p)).unwrap() {
            Lookup::Found(f) => Some(f.id),
            Lookup::Missing(..) => None,
        }
    }

    #[test]
    fn paths_must_have_names() {
        assert!(FolderPath::parse("").is_none());
        assert!(FolderPath::parse("A//B").is_none());
        assert!(FolderPath::parse("/A").is_none());
        assert!(FolderPath::parse("A/ ").is_none());
        assert_eq!(path("A/B").to_string(), "A/B");
    }

    #[test]
    fn well_known_names_work_in_any_language() {
        let mut tree = mailbox();
        assert_eq!(found(&mut tree, "Inbox").as_deref(), Some("IN"));
        assert_eq!(tree.calls, ["wk inbox"], "one call, no listing");
        assert_eq!(found(&mut tree, "Deleted Items").as_deref(), Some("DEL"));
        assert_eq!(found(&mut tree, "INBOX/sub").as_deref(), Some("SUB"));
        // a well-known folder the mailbox lacks is looked for by name
        assert_eq!(found(&mut tree, "Archive"), None);
        assert_eq!(tree.calls.last().unwrap(), "children -");
    }

    #[test]
    fn display_names_in_any_case_and_with_slashes() {
        let mut tree = mailbox();
        assert_eq!(found(&mut tree, "Chatwoot").as_deref(), Some("CW"));
        assert_eq!(found(&mut tree, "chatwoot/REFUSED").as_deref(), Some("CWR"));
        assert_eq!(
            found(&mut tree, "Chatwoot/Refused/Spam").as_deref(),
            Some("SLASH"),
            "the longest name wins"
        );
        assert_eq!(found(&mut tree, "Posteingang/Sub").as_deref(), Some("SUB"));
        let missing = resolve(&mut tree, &path("Chatwoot/Done/2026")).unwrap();
        let Lookup::Missing(Some(parent), rest) = missing else { panic!("{missing:?}") };
        assert_eq!(parent.id, "CW");
        assert_eq!(rest, ["Done", "2026"]);
    }

    #[test]
    fn ensure_creates_what_is_missing() {
        let mut tree = mailbox();
        assert_eq!(ensure(&mut tree, &path("Chatwoot")).unwrap().id, "CW");
        assert!(!tree.calls.iter().any(|c| c.starts_with("create")));
        let f = ensure(&mut tree, &path("Chatwoot/Done/2026")).unwrap();
        assert_eq!(f.id, "new-2026");
        assert_eq!(f.parent_id.as_deref(), Some("new-Done"));
        let creates: Vec<_> = tree.calls.iter().filter(|c| c.starts_with("create")).collect();
        assert_eq!(creates, ["create CW Done", "create new-Done 2026"]);
        assert_eq!(ensure(&mut tree, &path("Top")).unwrap().parent_id.as_deref(), Some("root"));
    }

    #[test]
    fn a_folder_created_meanwhile_is_taken() {
        let mut tree = Fake { race: true, ..mailbox() };
        let f = ensure(&mut tree, &path("Chatwoot/Done")).unwrap();
        assert_eq!(f.id, "new-Done");
        assert_eq!(tree.calls.last().unwrap(), "children CW");
    }
}
