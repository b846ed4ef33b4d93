//! What has been delivered, so a re-run skips it: one hex SHA-256 of the
//! exact bytes sent per line, appended as each delivery succeeds.
//!
//! The hash is what the ingress itself dedupes on (with the Message-ID), so
//! the journal can only skip what the ingress would have dropped anyway.

use std::collections::HashSet;
use std::fmt::Write as _;
use std::fs::{self, File, OpenOptions};
use std::io::{self, Read, Write};
use std::path::Path;

use sha2::{Digest, Sha256};

pub type Hash = [u8; 32];

pub fn hash(bytes: &[u8]) -> Hash {
    Sha256::digest(bytes).into()
}

pub fn hex(hash: &[u8]) -> String {
    hash.iter().fold(String::with_capacity(2 * hash.len()), |mut out, b| {
        let _ = write!(out, "{b:02x}");
        out
    })
}

pub struct Journal {
    file: File,
    done: HashSet<Hash>,
}

impl Journal {
    /// Open `path` for appending, creating it and its folder, and load it.
    /// Lines that are not a hash (a line cut short by a crash) are ignored.
    pub fn open(path: &Path) -> io::Result<Journal> {
        if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
            fs::create_dir_all(dir)?;
        }
        let mut file = OpenOptions::new().read(true).append(true).create(true).open(path)?;
        let mut text = String::new();
        file.read_to_string(&mut text)?;
        let done = text.lines().filter_map(parse).collect();
        if !text.is_empty() && !text.ends_with('\n') {
            // Finish the cut line so the next hash starts a line of its own.
            file.write_all(b"\n")?;
        }
        Ok(Journal { file, done })
    }

    pub fn contains(&self, hash: &Hash) -> bool {
        self.done.contains(hash)
    }

    /// Append one line in one write. Not fsync'd: a line lost in a crash
    /// only means the message is sent again, and the ingress drops the copy.
    pub fn record(&mut self, hash: Hash) -> io::Result<()> {
        if self.done.insert(hash) {
            self.file.write_all(format!("{}\n", hex(&hash)).as_bytes())?;
        }
        Ok(())
    }

    pub fn sync(&self) -> io::Result<()> {
        self.file.sync_all()
    }
}

fn parse(line: &str) -> Option<Hash> {
    let line = line.trim();
    if line.len() != 64 {
        return None;
    }
    let mut hash = [0; 32];
    for (i, byte) in hash.iter_mut().enumerate() {
        *byte = u8::from_str_radix(line.get(2 * i..2 * i + 2)?, 16).ok()?;
    }
    Some(hash)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn survives_a_cut_line_and_reloads() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("state/j");
        let mut journal = Journal::open(&path).unwrap();
        journal.record(hash(b"one")).unwrap();
        drop(journal);
        let mut file = OpenOptions::new().append(true).open(&path).unwrap();
        file.write_all(b"0123abc").unwrap(); // a crash mid-line
        let mut journal = Journal::open(&path).unwrap();
        assert!(journal.contains(&hash(b"one")) && !journal.contains(&hash(b"two")));
        journal.record(hash(b"two")).unwrap();
        let text = fs::read_to_string(&path).unwrap();
        assert_eq!(text.lines().filter_map(parse).count(), 2);
        assert_eq!(hex(&hash(b"")), "e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855");
    }
}
