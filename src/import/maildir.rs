//! Maildir folders: messages in new/ and cur/, and the seen flag.

use std::fs;
use std::io;
use std::path::{Path, PathBuf};

/// A Maildir has new/ and cur/ (tmp/ holds half-written files and is never read).
pub fn is_maildir(path: &Path) -> bool {
    path.join("new").is_dir() && path.join("cur").is_dir()
}

/// Every message in new/ and then cur/, each sorted by name (delivery
/// order for the usual time-based names); dot files are not messages.
pub fn messages(maildir: &Path) -> io::Result<Vec<PathBuf>> {
    let mut all = Vec::new();
    for sub in ["new", "cur"] {
        all.extend(files(&maildir.join(sub), |_| true)?);
    }
    Ok(all)
}

/// The regular, non-hidden files in `dir` whose names pass `keep`, sorted.
pub fn files(dir: &Path, keep: impl Fn(&str) -> bool) -> io::Result<Vec<PathBuf>> {
    let mut found = Vec::new();
    for entry in fs::read_dir(dir)? {
        let entry = entry?;
        let name = entry.file_name();
        let name = name.to_string_lossy();
        if !name.starts_with('.') && keep(&name) && entry.file_type()?.is_file() {
            found.push(entry.path());
        }
    }
    found.sort();
    Ok(found)
}

/// Move a message to cur/ with the S (seen) flag added to its info, the way
/// a mail reader does, so the next run of a mail fetcher's cron job finds
/// only new mail in new/. Returns the new path.
pub fn mark_seen(message: &Path) -> io::Result<PathBuf> {
    let (Some(folder), Some(name)) = (message.parent().and_then(Path::parent), message.file_name()) else {
        return Err(io::Error::new(io::ErrorKind::InvalidInput, "not a file in a Maildir"));
    };
    let name = name.to_string_lossy();
    let (base, flags) = name.split_once(":2,").unwrap_or((&name, ""));
    let mut flags: Vec<char> = flags.chars().chain(['S']).collect();
    // Flags are kept in ASCII order, each once.
    flags.sort_unstable();
    flags.dedup();
    let target = folder.join("cur").join(format!("{base}:2,{}", flags.into_iter().collect::<String>()));
    if target != message {
        fs::rename(message, &target)?;
    }
    Ok(target)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn seen_moves_to_cur_and_keeps_other_flags() {
        let dir = tempfile::tempdir().unwrap();
        for sub in ["new", "cur", "tmp"] {
            fs::create_dir(dir.path().join(sub)).unwrap();
        }
        for name in ["new/1.a", "cur/2.b:2,RF", "cur/3.c:2,S", "cur/4.d", "new/.hidden"] {
            fs::write(dir.path().join(name), "x").unwrap();
        }
        let found = messages(dir.path()).unwrap();
        assert_eq!(found.len(), 4);
        let marked: Vec<_> = found.iter().map(|m| mark_seen(m).unwrap()).collect();
        let names: Vec<_> =
            marked.iter().map(|p| p.strip_prefix(dir.path()).unwrap().to_str().unwrap()).collect();
        assert_eq!(names, ["cur/1.a:2,S", "cur/2.b:2,FRS", "cur/3.c:2,S", "cur/4.d:2,S"]);
        assert!(marked.iter().all(|p| p.exists()));
        assert!(fs::read_dir(dir.path().join("new")).unwrap().count() == 1); // .hidden
    }
}
