//! A durable copy of a permanently refused message, so nothing is lost even
//! when the caller discards it (getmail and fetchmail cannot bounce).

use std::fs::{self, File, OpenOptions};
use std::io::{self, Read, Write};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering::Relaxed};
use std::time::{SystemTime, UNIX_EPOCH};

/// import's workers may save two messages within the same nanosecond.
static SAVED: AtomicU64 = AtomicU64::new(0);

/// Write `head` followed by the rest of `rest` to `<dir>/<name>.eml`, and the
/// reason to `<name>.reason`; both fsync'd, then the directory, so the copy
/// survives a crash the moment we report the refusal.
pub fn save(dir: &Path, head: &[u8], rest: &mut dyn Read, reason: &str) -> io::Result<PathBuf> {
    fs::create_dir_all(dir)?;
    let stamp = SystemTime::now().duration_since(UNIX_EPOCH).unwrap_or_default();
    let pid = std::process::id();
    let names = std::iter::repeat_with(|| {
        format!("{}.{:09}.{pid}.{}", stamp.as_secs(), stamp.subsec_nanos(), SAVED.fetch_add(1, Relaxed))
    });
    save_as(dir, names, head, rest, reason)
}

/// [`save`] under the first of `names` that is free in `dir`. Both files are
/// written in full under temporary names first, and whatever fails, none
/// of them is left behind: no half copy, no copy without its reason.
fn save_as(
    dir: &Path,
    mut names: impl Iterator<Item = String>,
    head: &[u8],
    rest: &mut dyn Read,
    reason: &str,
) -> io::Result<PathBuf> {
    let no_name = || io::Error::new(io::ErrorKind::AlreadyExists, "no free name");
    let mut name = names.next().ok_or_else(no_name)?;
    let eml_tmp = dir.join(format!(".{name}.eml.tmp"));
    let reason_tmp = dir.join(format!(".{name}.reason.tmp"));
    let written = write_synced(&eml_tmp, |file| {
        file.write_all(head)?;
        io::copy(rest, file).map(drop)
    })
    .and_then(|()| write_synced(&reason_tmp, |file| writeln!(file, "{reason}")));
    let placed = written.and_then(|()| loop {
        match place(dir, &name, &eml_tmp, &reason_tmp) {
            Err(e) if e.kind() == io::ErrorKind::AlreadyExists => match names.next() {
                Some(next) => name = next,
                None => break Err(no_name()),
            },
            placed => break placed,
        }
    });
    // Placed or not, the temporary names go: the copy has its own by now.
    let _ = fs::remove_file(&eml_tmp);
    let _ = fs::remove_file(&reason_tmp);
    let eml = placed?;
    File::open(dir)?.sync_all()?;
    Ok(eml)
}

/// Give the written copy the final names `<name>.reason`, then `<name>.eml`.
/// link() fails on an existing name where rename() would replace it (an
/// earlier refusal's copy); the reason comes first, so an .eml always has one.
fn place(dir: &Path, name: &str, eml_tmp: &Path, reason_tmp: &Path) -> io::Result<PathBuf> {
    let (eml, reason) = (dir.join(format!("{name}.eml")), dir.join(format!("{name}.reason")));
    fs::hard_link(reason_tmp, &reason)?;
    if let Err(e) = fs::hard_link(eml_tmp, &eml) {
        let _ = fs::remove_file(&reason);
        return Err(e);
    }
    Ok(eml)
}

/// Create `path` (never an existing file) and fill and fsync it; on failure
/// it is removed again.
fn write_synced(path: &Path, fill: impl FnOnce(&mut File) -> io::Result<()>) -> io::Result<()> {
    let mut options = OpenOptions::new();
    options.write(true).create_new(true);
    #[cfg(unix)]
    std::os::unix::fs::OpenOptionsExt::mode(&mut options, 0o600); // customers' mail
    let mut file = options.open(path)?;
    let written = fill(&mut file).and_then(|()| file.sync_all());
    if written.is_err() {
        let _ = fs::remove_file(path);
    }
    written
}

#[cfg(test)]
mod tests {
    use super::*;

    fn names(dir: &Path) -> Vec<String> {
        let mut names: Vec<_> =
            fs::read_dir(dir).unwrap().map(|e| e.unwrap().file_name().into_string().unwrap()).collect();
        names.sort();
        names
    }

    #[test]
    fn saves_head_and_rest_with_reason() {
        let dir = tempfile::tempdir().unwrap();
        let mut rest: &[u8] = b" world";
        let path = save(&dir.path().join("new"), b"hello", &mut rest, "5.6.0 not an email").unwrap();
        assert_eq!(fs::read(&path).unwrap(), b"hello world");
        assert_eq!(fs::read_to_string(path.with_extension("reason")).unwrap(), "5.6.0 not an email\n");
        assert_eq!(names(&dir.path().join("new")).len(), 2, "no temporary file is left");
    }

    #[test]
    fn a_taken_name_is_never_replaced_another_is_chosen() {
        let dir = tempfile::tempdir().unwrap();
        // An earlier refusal's copy, and a stray reason without its copy.
        fs::write(dir.path().join("a.eml"), "earlier").unwrap();
        fs::write(dir.path().join("a.reason"), "earlier reason").unwrap();
        fs::write(dir.path().join("b.reason"), "stray").unwrap();
        let candidates = ["a", "b", "c"].map(String::from).into_iter();
        let path = save_as(dir.path(), candidates, b"new", &mut io::empty(), "5.6.0 new").unwrap();
        assert_eq!(path, dir.path().join("c.eml"));
        assert_eq!(fs::read(&path).unwrap(), b"new");
        assert_eq!(fs::read_to_string(dir.path().join("c.reason")).unwrap(), "5.6.0 new\n");
        assert_eq!(fs::read_to_string(dir.path().join("a.eml")).unwrap(), "earlier");
        assert_eq!(fs::read_to_string(dir.path().join("a.reason")).unwrap(), "earlier reason");
        assert_eq!(fs::read_to_string(dir.path().join("b.reason")).unwrap(), "stray");
        assert_eq!(names(dir.path()), ["a.eml", "a.reason", "b.reason", "c.eml", "c.reason"]);

        // No free name at all: an error, and nothing of the new copy left.
        let taken = ["a"].map(String::from).into_iter();
        let e = save_as(dir.path(), taken, b"new", &mut io::empty(), "5.6.0 new").unwrap_err();
        assert_eq!(e.kind(), io::ErrorKind::AlreadyExists);
        assert_eq!(names(dir.path()).len(), 5);
    }

    #[test]
    fn a_copy_that_cannot_be_read_whole_leaves_nothing() {
        struct Failing;
        impl Read for Failing {
            fn read(&mut self, _: &mut [u8]) -> io::Result<usize> {
                Err(io::Error::other("the pipe broke"))
            }
        }
        let dir = tempfile::tempdir().unwrap();
        let e = save(dir.path(), b"head", &mut Failing, "5.3.4 too large").unwrap_err();
        assert_eq!(e.to_string(), "the pipe broke");
        assert!(names(dir.path()).is_empty(), "{:?}", names(dir.path()));
    }
}
