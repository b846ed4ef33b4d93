//! What has been delivered or refused, so a re-run neither sends a message
//! again nor saves a refusal again: one line per message, appended as each
//! one is settled. A delivery is the hex SHA-256 of the exact bytes sent; a
//! refusal is `R ` and the hex SHA-256 of the input that was refused.
//!
//! The delivery hash is what the ingress itself dedupes on (with the
//! Message-ID), so the journal can only skip what the ingress would have
//! dropped anyway. A refusal is only ever looked up after the message was
//! refused again, so it saves a second copy, never a delivery.

use std::collections::HashSet;
use std::fs::{self, File, OpenOptions};
use std::io::{self, Read, Write};
use std::path::Path;

use sha2::{Digest, Sha256};

pub type Hash = [u8; 32];

pub fn hash(bytes: &[u8]) -> Hash {
    Sha256::digest(bytes).into()
}

/// One line of the journal.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Entry {
    Delivered(Hash),
    Refused(Hash),
}

#[derive(Default)]
pub struct Journal {
    /// None when the journal is only read (a dry run).
    file: Option<File>,
    delivered: HashSet<Hash>,
    refused: HashSet<Hash>,
}

impl Journal {
    /// Open `path` for appending, creating it and its folder, and load it.
    pub fn open(path: &Path) -> io::Result<Journal> {
        if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
            fs::create_dir_all(dir)?;
        }
        let mut file = OpenOptions::new().read(true).append(true).create(true).open(path)?;
        let (mut journal, cut) = Journal::load(&mut file)?;
        if cut {
            // Finish the cut line so the next entry starts a line of its own.
            file.write_all(b"\n")?;
        }
        journal.file = Some(file);
        Ok(journal)
    }

    /// Load `path` without writing anything, for a dry run: a journal that
    /// does not exist yet is empty.
    pub fn read(path: &Path) -> io::Result<Journal> {
        match File::open(path) {
            Ok(mut file) => Ok(Journal::load(&mut file)?.0),
            Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(Journal::default()),
            Err(e) => Err(e),
        }
    }

    /// The entries in `file`, and whether its last line is cut. Lines that
    /// are not an entry (a line cut short by a crash, bytes that are not
    /// text) are ignored: the good lines around them still count.
    fn load(file: &mut File) -> io::Result<(Journal, bool)> {
        let mut bytes = Vec::new();
        file.read_to_end(&mut bytes)?;
        let mut journal = Journal::default();
        for entry in bytes.split(|&b| b == b'\n').filter_map(parse) {
            match entry {
                Entry::Delivered(hash) => journal.delivered.insert(hash),
                Entry::Refused(hash) => journal.refused.insert(hash),
            };
        }
        Ok((journal, bytes.last().is_some_and(|&b| b != b'\n')))
    }

    pub fn contains(&self, entry: &Entry) -> bool {
        match entry {
            Entry::Delivered(hash) => self.delivered.contains(hash),
            Entry::Refused(hash) => self.refused.contains(hash),
        }
    }

    /// Append one line in one write. Not fsync'd: a line lost in a crash
    /// only means the message is sent again, and the ingress drops the copy
    /// (or a refusal is saved again). A read-only journal only remembers.
    pub fn record(&mut self, entry: Entry) -> io::Result<()> {
        let (new, line) = match entry {
            Entry::Delivered(hash) => (self.delivered.insert(hash), format!("{}\n", hex::encode(hash))),
            Entry::Refused(hash) => (self.refused.insert(hash), format!("R {}\n", hex::encode(hash))),
        };
        match &mut self.file {
            Some(file) if new => file.write_all(line.as_bytes()),
            _ => Ok(()),
        }
    }

    pub fn sync(&self) -> io::Result<()> {
        self.file.as_ref().map_or(Ok(()), File::sync_all)
    }
}

fn parse(line: &[u8]) -> Option<Entry> {
    let line = line.trim_ascii();
    let (refused, digits) = match line.strip_prefix(b"R ") {
        Some(digits) => (true, digits),
        None => (false, line),
    };
    let mut hash = [0; 32];
    hex::decode_to_slice(digits, &mut hash).ok()?;
    Some(if refused { Entry::Refused(hash) } else { Entry::Delivered(hash) })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn survives_a_cut_line_and_reloads() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("state/j");
        let mut journal = Journal::open(&path).unwrap();
        journal.record(Entry::Delivered(hash(b"one"))).unwrap();
        drop(journal);
        let mut file = OpenOptions::new().append(true).open(&path).unwrap();
        file.write_all(b"0123abc").unwrap(); // a crash mid-line
        let mut journal = Journal::open(&path).unwrap();
        assert!(journal.contains(&Entry::Delivered(hash(b"one"))));
        assert!(!journal.contains(&Entry::Delivered(hash(b"two"))));
        journal.record(Entry::Delivered(hash(b"two"))).unwrap();
        let text = fs::read_to_string(&path).unwrap();
        assert_eq!(text.lines().filter_map(|l| parse(l.as_bytes())).count(), 2);
        assert_eq!(
            hex::encode(hash(b"")),
            "e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855"
        );
    }

    #[test]
    fn refusals_are_kept_apart_and_garbage_is_ignored() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("j");
        let (sent, refused) = (hash(b"sent"), hash(b"refused"));
        let mut garbage = b"\xff\xfe\0\n".to_vec();
        garbage.extend(
            format!("{}\n\0\0R {}\nR {}\n", hex::encode(sent), hex::encode(sent), hex::encode(refused))
                .bytes(),
        );
        garbage.extend(b"R 12\n\x80");
        fs::write(&path, &garbage).unwrap();
        let read = Journal::read(&path).unwrap();
        assert!(read.contains(&Entry::Delivered(sent)) && read.contains(&Entry::Refused(refused)));
        // "\0\0R <sent>" is not a line of the journal.
        assert!(!read.contains(&Entry::Refused(sent)) && !read.contains(&Entry::Delivered(refused)));
        assert!(Journal::read(&dir.path().join("none")).unwrap().delivered.is_empty());
        assert!(!dir.path().join("none").exists());
        let mut journal = Journal::open(&path).unwrap();
        journal.record(Entry::Refused(sent)).unwrap();
        let reloaded = Journal::read(&path).unwrap();
        assert!(reloaded.contains(&Entry::Refused(sent)) && reloaded.contains(&Entry::Delivered(sent)));
    }
}
