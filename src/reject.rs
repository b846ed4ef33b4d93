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
    let (pid, n) = (std::process::id(), SAVED.fetch_add(1, Relaxed));
    let name = format!("{}.{:09}.{pid}.{n}", stamp.as_secs(), stamp.subsec_nanos());
    let eml = dir.join(format!("{name}.eml"));
    write_durably(&eml, |file| {
        file.write_all(head)?;
        io::copy(rest, file).map(drop)
    })?;
    write_durably(&dir.join(format!("{name}.reason")), |file| writeln!(file, "{reason}"))?;
    File::open(dir)?.sync_all()?;
    Ok(eml)
}

/// Write to a temporary name and rename, so a reader never sees half a file.
fn write_durably(path: &Path, fill: impl FnOnce(&mut File) -> io::Result<()>) -> io::Result<()> {
    let tmp = path.with_extension("tmp");
    let mut options = OpenOptions::new();
    options.write(true).create_new(true);
    #[cfg(unix)]
    std::os::unix::fs::OpenOptionsExt::mode(&mut options, 0o600); // customers' mail
    let mut file = options.open(&tmp)?;
    let written = fill(&mut file).and_then(|()| file.sync_all());
    if let Err(e) = written {
        let _ = fs::remove_file(&tmp);
        return Err(e);
    }
    fs::rename(&tmp, path)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn saves_head_and_rest_with_reason() {
        let dir = tempfile::tempdir().unwrap();
        let mut rest: &[u8] = b" world";
        let path = save(&dir.path().join("new"), b"hello", &mut rest, "5.6.0 not an email").unwrap();
        assert_eq!(fs::read(&path).unwrap(), b"hello world");
        assert_eq!(fs::read_to_string(path.with_extension("reason")).unwrap(), "5.6.0 not an email\n");
    }
}
