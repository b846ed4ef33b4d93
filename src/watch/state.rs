//! Where `watch` is in each folder, kept across restarts: the source's own
//! cursor (for IMAP the folder's UIDVALIDITY, a UID up to which everything
//! is finished and the finished UIDs above it), and what the engine must
//! not forget: messages the ingress answered (2xx, or a refusal kept in
//! reject_dir) that are not yet settled on the source, messages that could
//! not be fetched, and since when a message has had no route.
//!
//! Written atomically before each step on the source, so a crash leaves
//! the old state or the new, never half of one: a message is posted again
//! only if the process died between the ingress's answer and this write.
//! Where it is written is a [`Place`]: a file in the state directory (a new
//! file renamed over the old one; fsync'd at least once a second and at the
//! end of each pass, so a power loss undoes at most a second of answers,
//! posted again and dropped by the ingress), or in cluster mode a field in
//! Redis that only the mailbox's lease holder may write (`super::cluster`),
//! so that another replica taking the mailbox over goes on from there.

use std::collections::{BTreeMap, BTreeSet};
use std::fs;
use std::io;
use std::path::{Path, PathBuf};

use serde::de::DeserializeOwned;
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

/// One folder's state; `C` is the source's cursor, `K` its message keys.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(bound(
    serialize = "C: Serialize, K: Serialize + Ord",
    deserialize = "C: Deserialize<'de> + Default, K: Deserialize<'de> + Ord"
))]
pub struct FolderState<C, K> {
    pub folder: String,
    #[serde(flatten)]
    pub cursor: C,
    /// Answered by the ingress, not yet settled on the source: settled
    /// before anything else, and never sent again.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub unsettled: Vec<Unsettled<K>>,
    /// Messages whose fetch failed, and when they may be tried again.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub unfetchable: BTreeMap<K, Unfetchable>,
    /// Messages no route is for, since when (seconds since the epoch).
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub unroutable: BTreeMap<K, u64>,
}

/// What the ingress made of a message that is still to be settled.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Answered {
    /// 2xx: flag, move or delete it as `after` says.
    Delivered,
    /// Refused for good (and kept in reject_dir if there is one): move it
    /// to refused_folder.
    Refused,
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Unsettled<K> {
    pub key: K,
    pub answered: Answered,
    /// A move without MOVE has copied it already: only the removal is left.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub copied: bool,
}

#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Unfetchable {
    pub tries: u32,
    /// Not fetched again before this (seconds since the epoch).
    pub retry_at: u64,
}

impl<C: Default + PartialEq, K: Ord> FolderState<C, K> {
    /// Whether the cursor is the one of a folder never selected.
    pub fn cursor_is_new(&self) -> bool {
        self.cursor == C::default()
    }
}

/// The IMAP cursor: the folder's UIDVALIDITY, every UID up to `cursor`
/// finished (or gone), and the finished UIDs above it. Its fields are
/// those of the state files of earlier versions, which therefore still load.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct ImapCursor {
    pub uidvalidity: u32,
    pub cursor: u32,
    pub done: BTreeSet<u32>,
}

impl ImapCursor {
    /// Whether `uid` still has to be delivered.
    pub fn pending(&self, uid: u32) -> bool {
        uid > self.cursor && !self.done.contains(&uid)
    }

    /// Mark `uids` finished, and move the cursor over everything finished
    /// below the first UID of `present` (the folder's UIDs above the
    /// cursor, as last searched, those \Deleted by others included) that
    /// is still pending. Without `present` (not searched yet) it cannot
    /// know what lies between, so it only records.
    pub fn finish(&mut self, uids: impl IntoIterator<Item = u32>, present: Option<&[u32]>) {
        self.done.extend(uids.into_iter().filter(|&uid| uid > self.cursor));
        let Some(present) = present else { return };
        let first_pending = present.iter().copied().filter(|&uid| self.pending(uid)).min();
        let highest = present.iter().copied().chain(self.done.iter().copied()).max().unwrap_or(self.cursor);
        let cursor = match first_pending {
            Some(uid) => uid - 1,
            None => highest,
        };
        if cursor > self.cursor {
            self.cursor = cursor;
            self.done = self.done.split_off(&(cursor + 1));
        }
    }
}

pub type ImapState = FolderState<ImapCursor, u32>;

/// Where the state of one folder is kept, as bytes.
pub trait Place: Send {
    /// For messages: a file's path, or where in Redis.
    fn describe(&self) -> String;
    /// The saved bytes; None on the first start.
    fn read(&self) -> io::Result<Option<Vec<u8>>>;
    /// Replace them, atomically; `durable`: so that a power loss cannot
    /// undo it either.
    fn write(&self, bytes: &[u8], durable: bool) -> io::Result<()>;
    /// What to do when reading or writing fails, if more is known than
    /// that a file must be writable.
    fn fix(&self) -> Option<String> {
        None
    }
}

/// Where the states of every folder are kept.
pub trait Places: Send + Sync {
    fn place(&self, mailbox: &str, folder: &str) -> Box<dyn Place>;
}

/// The state directory: a file per folder.
pub struct Dir(pub PathBuf);

impl Places for Dir {
    fn place(&self, mailbox: &str, folder: &str) -> Box<dyn Place> {
        Box::new(StateFile::new(&self.0, mailbox, folder))
    }
}

/// One folder's state where it is kept, read and written as JSON.
pub struct Store {
    place: Box<dyn Place>,
}

impl Store {
    pub fn new(place: Box<dyn Place>) -> Store {
        Store { place }
    }

    pub fn describe(&self) -> String {
        self.place.describe()
    }

    pub fn fix(&self) -> Option<String> {
        self.place.fix()
    }

    /// The saved state; None on the first start. A state that cannot be
    /// parsed is an error: guessing could skip mail.
    pub fn load<S: DeserializeOwned>(&self) -> io::Result<Option<S>> {
        match self.place.read()? {
            Some(bytes) => serde_json::from_slice(&bytes).map(Some).map_err(|e| {
                io::Error::new(io::ErrorKind::InvalidData, format!("{}: {e}", self.place.describe()))
            }),
            None => Ok(None),
        }
    }

    pub fn save<S: Serialize>(&self, state: &S, durable: bool) -> io::Result<()> {
        let bytes = serde_json::to_vec(state).map_err(io::Error::other)?;
        self.place.write(&bytes, durable)
    }
}

/// The state file of one folder of one mailbox.
pub struct StateFile {
    path: PathBuf,
}

impl StateFile {
    /// `DIR/MAILBOX/FOLDER.json`, the folder name made safe for a file name
    /// (and told apart by a hash when that changed it).
    pub fn new(dir: &Path, mailbox: &str, folder: &str) -> StateFile {
        let safe: String = folder
            .chars()
            .map(|c| if c.is_ascii_alphanumeric() || "-_.".contains(c) { c } else { '_' })
            .collect();
        let name = if safe == folder && !folder.starts_with('.') {
            format!("{safe}.json")
        } else {
            let hash = hex::encode(&Sha256::digest(folder.as_bytes())[..6]);
            format!("{}-{hash}.json", safe.trim_start_matches('.'))
        };
        StateFile { path: dir.join(mailbox).join(name) }
    }

    pub fn path(&self) -> &Path {
        &self.path
    }
}

impl Place for StateFile {
    fn describe(&self) -> String {
        self.path.display().to_string()
    }

    fn read(&self) -> io::Result<Option<Vec<u8>>> {
        match fs::read(&self.path) {
            Ok(bytes) => Ok(Some(bytes)),
            Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(None),
            Err(e) => Err(e),
        }
    }

    fn write(&self, bytes: &[u8], durable: bool) -> io::Result<()> {
        let dir = self.path.parent().expect("a state file is in a folder");
        fs::create_dir_all(dir)?;
        crate::sys::replace_file(&self.path, bytes, durable, |_| Ok(()))
    }
}

/// An exclusive lock on the state directory, held while `watch` runs: a
/// second watcher on the same state would race the first for every file.
pub struct Lock {
    _file: fs::File,
}

impl Lock {
    pub fn take(dir: &Path) -> io::Result<Lock> {
        use std::os::unix::fs::OpenOptionsExt;
        fs::create_dir_all(dir)?;
        let path = dir.join("watch.lock");
        let file = fs::OpenOptions::new()
            .read(true)
            .write(true)
            .create(true)
            .truncate(false)
            .mode(0o600)
            .open(&path)?;
        match file.try_lock() {
            Ok(()) => Ok(Lock { _file: file }),
            Err(fs::TryLockError::WouldBlock) => Err(io::Error::new(
                io::ErrorKind::WouldBlock,
                format!("another watch already runs with the state directory {}", dir.display()),
            )),
            Err(fs::TryLockError::Error(e)) => Err(e),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_cursor_moves_over_finished_messages_only() {
        let mut state = ImapCursor { cursor: 2, ..Default::default() };
        let present = [3, 4, 5, 7];
        state.finish([4, 5], Some(&present));
        assert_eq!((state.cursor, state.done.iter().copied().collect::<Vec<_>>()), (2, vec![4, 5]));
        assert!(state.pending(3) && !state.pending(4) && state.pending(7));
        state.finish([3], Some(&present));
        assert_eq!((state.cursor, state.done.len()), (6, 0), "up to the first pending one, 7");
        state.finish([7], Some(&[7]));
        assert_eq!(state.cursor, 7);
        // A message that vanished (moved away by someone) does not hold the cursor.
        state.finish([], Some(&[9]));
        assert_eq!(state.cursor, 8);
        // Before a search, what lies between is unknown: only recorded.
        state.finish([12], None);
        assert_eq!((state.cursor, state.pending(12), state.pending(10)), (8, false, true));
    }

    #[test]
    fn saved_atomically_and_read_back_and_garbage_is_an_error() {
        let dir = tempfile::tempdir().unwrap();
        let path = StateFile::new(dir.path(), "support", "Archive/Été").path().to_path_buf();
        let file = Store::new(Dir(dir.path().into()).place("support", "Archive/Été"));
        assert!(path.starts_with(dir.path().join("support")));
        assert_eq!(file.describe(), path.display().to_string());
        assert!(file.load::<ImapState>().unwrap().is_none());
        let state = ImapState {
            folder: "Archive/Été".into(),
            cursor: ImapCursor { uidvalidity: 7, cursor: 3, done: [5].into() },
            unsettled: vec![Unsettled { key: 4, answered: Answered::Delivered, copied: true }],
            unfetchable: [(9, Unfetchable { tries: 3, retry_at: 100 })].into(),
            unroutable: [(6, 1000)].into(),
        };
        for durable in [true, false] {
            file.save(&state, durable).unwrap();
            assert_eq!(file.load::<ImapState>().unwrap(), Some(state.clone()));
        }
        let beside: Vec<_> =
            fs::read_dir(path.parent().unwrap()).unwrap().map(|e| e.unwrap().path()).collect();
        assert_eq!(beside, std::slice::from_ref(&path), "no temporary file is left");
        fs::write(&path, b"{not json").unwrap();
        assert!(file.load::<ImapState>().is_err());
        assert_ne!(
            StateFile::new(dir.path(), "s", "a/b").path(),
            StateFile::new(dir.path(), "s", "a_b").path()
        );
    }

    #[test]
    fn a_state_file_of_an_earlier_version_still_loads() {
        let dir = tempfile::tempdir().unwrap();
        let file = StateFile::new(dir.path(), "support", "INBOX");
        fs::create_dir_all(file.path().parent().unwrap()).unwrap();
        fs::write(file.path(), br#"{"folder":"INBOX","uidvalidity":7,"cursor":3,"done":[5,6]}"#).unwrap();
        let state = Store::new(Box::new(file)).load::<ImapState>().unwrap().unwrap();
        assert_eq!(state.cursor, ImapCursor { uidvalidity: 7, cursor: 3, done: [5, 6].into() });
        assert!(state.unsettled.is_empty() && state.unfetchable.is_empty());
    }

    #[test]
    fn a_second_watcher_cannot_take_the_lock() {
        let dir = tempfile::tempdir().unwrap();
        let first = Lock::take(dir.path()).unwrap();
        let e = Lock::take(dir.path()).err().unwrap();
        assert!(e.to_string().contains("another watch already runs"), "{e}");
        drop(first);
        Lock::take(dir.path()).unwrap();
    }
}
