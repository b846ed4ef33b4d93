//! Folders of messages: Maildirs (messages in new/ and cur/; tmp/ is never
//! read), their Maildir++ subfolders, and folders of .eml files.
//!
//! Listing a folder says what will be read and names everything else that
//! could be mail, with why, so nothing is skipped in silence. Symbolic
//! links inside a folder are named, never followed: one could lead out of
//! the folder, to a message imported twice, or round in a loop.

use std::ffi::OsStr;
use std::fs;
use std::io;
use std::path::{Path, PathBuf};

/// Why a path is not imported.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Skip {
    /// A name that begins with a dot: not a message by Maildir's rules.
    Hidden,
    Symlink,
    /// A FIFO, socket or device.
    Special,
    /// A file in a folder of .eml files whose name does not end in .eml.
    NotEml,
    /// A folder inside a folder of messages.
    Folder,
    Maildir,
    Mh,
    /// In tmp/: a delivery still writing it.
    HalfWritten,
    /// A Maildir++ subfolder, without --subfolders.
    Subfolder,
}

impl Skip {
    pub fn why(self) -> &'static str {
        match self {
            Skip::Hidden => "hidden file: not imported",
            Skip::Symlink => "symbolic link: not followed",
            Skip::Special => "not a regular file: not imported",
            Skip::NotEml => "not a .eml file: not imported",
            Skip::Folder => "folder inside a folder: not imported (give it on the command line)",
            Skip::Maildir => "Maildir inside a folder: not imported (give it on the command line)",
            Skip::Mh => "MH folder: not supported",
            Skip::HalfWritten => "in tmp/, still being written: never imported",
            Skip::Subfolder => "Maildir++ subfolder: not imported without --subfolders",
        }
    }
}

/// What a folder holds.
#[derive(Debug, Default)]
pub struct Listing {
    /// The messages to read, sorted by name (delivery order for the usual
    /// time-based Maildir names).
    pub messages: Vec<PathBuf>,
    /// Whatever else could be mail, sorted.
    pub skipped: Vec<(PathBuf, Skip)>,
}

/// A Maildir has new/ and cur/ (tmp/ holds half-written files and is never read).
pub fn is_maildir(path: &Path) -> bool {
    path.join("new").is_dir() && path.join("cur").is_dir()
}

pub fn is_eml(name: &OsStr) -> bool {
    Path::new(name).extension().is_some_and(|e| e.eq_ignore_ascii_case("eml"))
}

/// The messages in a Maildir's new/ or cur/: every regular file whose name
/// does not begin with a dot.
pub fn messages(dir: &Path) -> io::Result<Listing> {
    list(dir, |_| true)
}

/// The .eml files in `dir`. A folder with no .eml file that has MH's
/// .mh_sequences or numbered files is an MH folder, named as one.
pub fn emls(dir: &Path) -> io::Result<Listing> {
    let mut listing = list(dir, is_eml)?;
    let mh = |(path, skip): &(PathBuf, Skip)| {
        let name = path.file_name().unwrap_or_default().to_string_lossy();
        name == ".mh_sequences" || (*skip == Skip::NotEml && name.bytes().all(|b| b.is_ascii_digit()))
    };
    if listing.messages.is_empty() && listing.skipped.iter().any(mh) {
        return Ok(Listing { messages: Vec::new(), skipped: vec![(dir.to_path_buf(), Skip::Mh)] });
    }
    // Our own reject folder keeps each message's reason beside it.
    listing.skipped.retain(|(path, _)| {
        path.extension() != Some(OsStr::new("reason"))
            || listing.messages.binary_search(&path.with_extension("eml")).is_err()
    });
    Ok(listing)
}

fn list(dir: &Path, keep: impl Fn(&OsStr) -> bool) -> io::Result<Listing> {
    let mut listing = Listing::default();
    for entry in fs::read_dir(dir)? {
        let entry = entry?;
        let (name, path, kind) = (entry.file_name(), entry.path(), entry.file_type()?);
        let skip = if name.as_encoded_bytes().starts_with(b".") {
            Skip::Hidden
        } else if kind.is_symlink() {
            Skip::Symlink
        } else if kind.is_dir() {
            folder(&path)
        } else if !kind.is_file() {
            Skip::Special
        } else if !keep(&name) {
            Skip::NotEml
        } else {
            listing.messages.push(path);
            continue;
        };
        listing.skipped.push((path, skip));
    }
    listing.messages.sort();
    listing.skipped.sort_by(|a, b| a.0.cmp(&b.0));
    Ok(listing)
}

fn folder(path: &Path) -> Skip {
    if is_maildir(path) {
        Skip::Maildir
    } else if path.join(".mh_sequences").is_file() {
        Skip::Mh
    } else {
        Skip::Folder
    }
}

/// What [`beside`] finds.
#[derive(Debug)]
pub struct Beside {
    /// To read, sorted.
    pub subfolders: Vec<PathBuf>,
    /// Not read, sorted.
    pub skipped: Vec<(PathBuf, Skip)>,
}

/// What holds mail beside a Maildir's new/ and cur/: the Maildir++
/// subfolders (.Sent/, .Archive.2023/…), to read when `subfolders`, and the
/// paths not read: files in tmp/, the subfolders otherwise, Maildirs inside
/// it and symbolic links to them. Other names are the Maildir's own state
/// (dovecot-uidlist, indexes, maildirfolder…), not mail.
pub fn beside(maildir: &Path, subfolders: bool) -> io::Result<Beside> {
    let (mut folders, mut skipped) = (Vec::new(), Vec::new());
    // A missing or unreadable tmp/ holds nothing we would read anyway.
    for entry in fs::read_dir(maildir.join("tmp")).into_iter().flatten().flatten() {
        skipped.push((entry.path(), Skip::HalfWritten));
    }
    for entry in fs::read_dir(maildir)? {
        let entry = entry?;
        let (name, path) = (entry.file_name(), entry.path());
        if ["new", "cur", "tmp"].map(OsStr::new).contains(&name.as_os_str()) || !is_maildir(&path) {
            continue;
        }
        if entry.file_type()?.is_symlink() {
            skipped.push((path, Skip::Symlink));
        } else if !name.as_encoded_bytes().starts_with(b".") {
            skipped.push((path, Skip::Maildir));
        } else if subfolders {
            folders.push(path);
        } else {
            skipped.push((path, Skip::Subfolder));
        }
    }
    folders.sort();
    skipped.sort_by(|a, b| a.0.cmp(&b.0));
    Ok(Beside { subfolders: folders, skipped })
}

/// Where a message listed in new/ or cur/ went if a mail reader moved it
/// meanwhile (to cur/, or to a new name for new flags): the file in cur/
/// with the same unique name, the part before the ':'.
pub fn moved(message: &Path) -> Option<PathBuf> {
    let unique = |path: &Path| {
        let name = path.file_name()?.as_encoded_bytes();
        Some(name.split(|&b| b == b':').next()?.to_vec())
    };
    let wanted = unique(message)?;
    let cur = message.parent()?.parent()?.join("cur");
    fs::read_dir(cur)
        .ok()?
        .flatten()
        .map(|entry| entry.path())
        .find(|path| path != message && unique(path).as_ref() == Some(&wanted))
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

    fn maildir(dir: &Path) {
        for sub in ["new", "cur", "tmp"] {
            fs::create_dir_all(dir.join(sub)).unwrap();
        }
    }

    fn names(dir: &Path, paths: &[PathBuf]) -> Vec<String> {
        paths.iter().map(|p| p.strip_prefix(dir).unwrap().to_str().unwrap().to_string()).collect()
    }

    #[test]
    fn seen_moves_to_cur_and_keeps_other_flags() {
        let dir = tempfile::tempdir().unwrap();
        maildir(dir.path());
        for name in ["new/1.a", "cur/2.b:2,RF", "cur/3.c:2,S", "cur/4.d", "new/.hidden"] {
            fs::write(dir.path().join(name), "x").unwrap();
        }
        let found = [messages(&dir.path().join("new")).unwrap(), messages(&dir.path().join("cur")).unwrap()];
        let found: Vec<_> = found.into_iter().flat_map(|l| l.messages).collect();
        assert_eq!(found.len(), 4);
        let marked: Vec<_> = found.iter().map(|m| mark_seen(m).unwrap()).collect();
        assert_eq!(
            names(dir.path(), &marked),
            ["cur/1.a:2,S", "cur/2.b:2,FRS", "cur/3.c:2,S", "cur/4.d:2,S"]
        );
        assert!(marked.iter().all(|p| p.exists()));
        assert!(fs::read_dir(dir.path().join("new")).unwrap().count() == 1); // .hidden
        assert_eq!(moved(&dir.path().join("new/1.a")), Some(dir.path().join("cur/1.a:2,S")));
        assert_eq!(moved(&dir.path().join("new/5.e")), None);
    }

    #[test]
    fn an_mh_folder_is_named_whole_and_a_reject_folder_keeps_its_reasons() {
        let dir = tempfile::tempdir().unwrap();
        for name in ["1", "2", "3"] {
            fs::write(dir.path().join(name), "x").unwrap();
        }
        let listing = emls(dir.path()).unwrap();
        assert!(listing.messages.is_empty());
        assert_eq!(listing.skipped, [(dir.path().to_path_buf(), Skip::Mh)]);
        for name in ["a.eml", "a.reason", "b.reason", "c.eml.tmp"] {
            fs::write(dir.path().join(name), "x").unwrap();
        }
        let listing = emls(dir.path()).unwrap();
        assert_eq!(names(dir.path(), &listing.messages), ["a.eml"]);
        let skipped: Vec<_> = listing.skipped.iter().map(|(p, _)| p.clone()).collect();
        assert_eq!(names(dir.path(), &skipped), ["1", "2", "3", "b.reason", "c.eml.tmp"]);
    }

    #[test]
    fn beside_a_maildir_only_what_holds_mail_is_named() {
        let dir = tempfile::tempdir().unwrap();
        maildir(dir.path());
        for sub in [".Sent", ".Archive.2023", "Nested"] {
            maildir(&dir.path().join(sub));
        }
        fs::create_dir(dir.path().join(".NotAMaildir")).unwrap();
        fs::create_dir(dir.path().join("courierimapkeywords")).unwrap();
        fs::write(dir.path().join("dovecot-uidlist"), "x").unwrap();
        fs::write(dir.path().join("tmp/1.host"), "x").unwrap();
        std::os::unix::fs::symlink(dir.path().join(".Sent"), dir.path().join(".Link")).unwrap();
        let Beside { subfolders, skipped } = beside(dir.path(), false).unwrap();
        assert!(subfolders.is_empty());
        let paths: Vec<_> = skipped.iter().map(|(p, _)| p.clone()).collect();
        let kinds: Vec<_> = names(dir.path(), &paths).into_iter().zip(skipped.iter().map(|s| s.1)).collect();
        let expected = [
            (".Archive.2023", Skip::Subfolder),
            (".Link", Skip::Symlink),
            (".Sent", Skip::Subfolder),
            ("Nested", Skip::Maildir),
            ("tmp/1.host", Skip::HalfWritten),
        ];
        assert_eq!(kinds, expected.map(|(p, s)| (p.to_string(), s)));
        let Beside { subfolders, skipped } = beside(dir.path(), true).unwrap();
        assert_eq!(names(dir.path(), &subfolders), [".Archive.2023", ".Sent"]);
        assert_eq!(skipped.len(), 3);
    }
}
