//! Where `watch` is in each folder, kept across restarts: the folder's
//! UIDVALIDITY, a cursor (every UID at or below it is finished) and the
//! finished UIDs above it. Written atomically (a new file, fsync'd, renamed
//! over the old one), so a crash leaves the old state or the new, never
//! half of one; and a state that is a little old only means a message is
//! posted again, with the same bytes, which the ingress drops.

use std::collections::BTreeSet;
use std::fs::{self, File, OpenOptions};
use std::io;
use std::os::unix::fs::OpenOptionsExt;
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct FolderState {
    pub folder: String,
    pub uidvalidity: u32,
    /// Every message with a UID up to this one is finished (or gone).
    pub cursor: u32,
    /// Finished messages above the cursor: those after one still waiting.
    pub done: BTreeSet<u32>,
}

impl FolderState {
    /// Whether `uid` still has to be delivered.
    pub fn pending(&self, uid: u32) -> bool {
        uid > self.cursor && !self.done.contains(&uid)
    }

    /// Mark `uid` finished, and move the cursor over everything finished
    /// below the first UID of `present` (the folder's UIDs above the
    /// cursor, as last searched) that is still pending.
    pub fn finish(&mut self, uids: impl IntoIterator<Item = u32>, present: &[u32]) {
        self.done.extend(uids.into_iter().filter(|&uid| uid > self.cursor));
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
            let hash: String =
                Sha256::digest(folder.as_bytes()).iter().take(6).map(|b| format!("{b:02x}")).collect();
            format!("{}-{hash}.json", safe.trim_start_matches('.'))
        };
        StateFile { path: dir.join(mailbox).join(name) }
    }

    pub fn path(&self) -> &Path {
        &self.path
    }

    /// The saved state; None on the first start. A file that cannot be
    /// parsed is an error: guessing could skip mail.
    pub fn load(&self) -> io::Result<Option<FolderState>> {
        match fs::read(&self.path) {
            Ok(bytes) => serde_json::from_slice(&bytes).map(Some).map_err(|e| {
                io::Error::new(io::ErrorKind::InvalidData, format!("{}: {e}", self.path.display()))
            }),
            Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(None),
            Err(e) => Err(e),
        }
    }

    /// Replace the saved state, atomically and durably.
    pub fn save(&self, state: &FolderState) -> io::Result<()> {
        let dir = self.path.parent().expect("a state file is in a folder");
        fs::create_dir_all(dir)?;
        let bytes = serde_json::to_vec(state).map_err(io::Error::other)?;
        crate::sys::replace_file(&self.path, &bytes, |_| Ok(()))
    }
}

/// An exclusive lock on the state directory, held while `watch` runs: a
/// second watcher on the same state would race the first for every message.
pub struct Lock {
    _file: File,
}

impl Lock {
    pub fn take(dir: &Path) -> io::Result<Lock> {
        fs::create_dir_all(dir)?;
        let path = dir.join("watch.lock");
        let file =
            OpenOptions::new().read(true).write(true).create(true).truncate(false).mode(0o600).open(&path)?;
        use std::os::fd::AsRawFd;
        // SAFETY: flock on a file descriptor we own.
        if unsafe { libc::flock(file.as_raw_fd(), libc::LOCK_EX | libc::LOCK_NB) } != 0 {
            let e = io::Error::last_os_error();
            return Err(match e.kind() {
                io::ErrorKind::WouldBlock => io::Error::new(
                    io::ErrorKind::WouldBlock,
                    format!("another watch already runs with the state directory {}", dir.display()),
                ),
                _ => e,
            });
        }
        Ok(Lock { _file: file })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_cursor_moves_over_finished_messages_only() {
        let mut state = FolderState { cursor: 2, ..Default::default() };
        let present = [3, 4, 5, 7];
        state.finish([4, 5], &present);
        assert_eq!((state.cursor, state.done.iter().copied().collect::<Vec<_>>()), (2, vec![4, 5]));
        assert!(state.pending(3) && !state.pending(4) && state.pending(7));
        state.finish([3], &present);
        assert_eq!((state.cursor, state.done.len()), (6, 0), "up to the first pending one, 7");
        state.finish([7], &[7]);
        assert_eq!(state.cursor, 7);
        // A message that vanished (moved away by someone) does not hold the cursor.
        state.finish([], &[9]);
        assert_eq!(state.cursor, 8);
    }

    #[test]
    fn saved_atomically_and_read_back_and_garbage_is_an_error() {
        let dir = tempfile::tempdir().unwrap();
        let file = StateFile::new(dir.path(), "support", "Archive/Été");
        assert!(file.path().starts_with(dir.path().join("support")));
        assert!(file.load().unwrap().is_none());
        let state =
            FolderState { folder: "Archive/Été".into(), uidvalidity: 7, cursor: 3, done: [5].into() };
        file.save(&state).unwrap();
        assert_eq!(file.load().unwrap(), Some(state));
        assert!(!file.path().with_extension("json.tmp").exists());
        let beside: Vec<_> =
            fs::read_dir(file.path().parent().unwrap()).unwrap().map(|e| e.unwrap().path()).collect();
        assert_eq!(beside, [file.path().to_path_buf()], "no temporary file is left");
        fs::write(file.path(), b"{not json").unwrap();
        assert!(file.load().is_err());
        assert_ne!(
            StateFile::new(dir.path(), "s", "a/b").path(),
            StateFile::new(dir.path(), "s", "a_b").path()
        );
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
