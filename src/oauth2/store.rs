//! The refresh token's file, replaced atomically and durably.

use std::fs;
use std::io;
use std::os::unix::fs::{fchown, MetadataExt};
use std::path::Path;

use crate::sys;

/// Replace `path` with `secret` and a newline: a new file in the same
/// directory, mode 0600 and owned like the one it replaces, fsync'd, then
/// renamed over it and the directory fsync'd. A crash leaves the old token
/// or the new, never half of one or a file others can read. Only root
/// gives the file away (our systemd unit's system call filter kills a
/// service that calls chown): it keeps the owner of the file it replaces,
/// and a new one (`oauth2 authorize` run with sudo) goes to the owner of
/// its directory, the service account's, where watch can replace it.
pub fn write_secret(path: &Path, secret: &str) -> io::Result<()> {
    // Through a symbolic link, the file it points to is replaced.
    let path = match fs::symlink_metadata(path) {
        Ok(meta) if meta.file_type().is_symlink() => fs::canonicalize(path)?,
        _ => path.to_path_buf(),
    };
    let dir = path.parent().filter(|dir| !dir.as_os_str().is_empty()).unwrap_or(Path::new("."));
    let root = sys::is_root();
    let owner = match fs::metadata(&path) {
        Ok(meta) => Some((meta.uid(), meta.gid())),
        Err(e) if e.kind() == io::ErrorKind::NotFound => fs::metadata(dir).ok().map(|m| (m.uid(), m.gid())),
        Err(e) => return Err(e),
    }
    .filter(|_| root);
    crate::sys::replace_file(&path, format!("{secret}\n").as_bytes(), true, |file| {
        let made = file.metadata()?;
        match owner.filter(|&owner| owner != (made.uid(), made.gid())) {
            Some((uid, gid)) => fchown(file, Some(uid), Some(gid)),
            None => Ok(()),
        }
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::fs::PermissionsExt;

    #[test]
    fn replaced_whole_private_and_through_a_link() {
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("rt");
        fs::write(&file, "old\n").unwrap();
        fs::set_permissions(&file, fs::Permissions::from_mode(0o644)).unwrap();
        write_secret(&file, "new").unwrap();
        assert_eq!(fs::read_to_string(&file).unwrap(), "new\n");
        assert_eq!(fs::metadata(&file).unwrap().permissions().mode() & 0o777, 0o600);
        let link = dir.path().join("link");
        std::os::unix::fs::symlink(&file, &link).unwrap();
        write_secret(&link, "newer").unwrap();
        assert!(fs::symlink_metadata(&link).unwrap().file_type().is_symlink());
        assert_eq!(fs::read_to_string(&file).unwrap(), "newer\n");
        // Nothing left behind.
        assert_eq!(fs::read_dir(dir.path()).unwrap().count(), 2);
        assert!(write_secret(&dir.path().join("missing/rt"), "x").is_err());
    }

    #[test]
    fn root_keeps_the_owner_of_the_file_replaced_and_gives_a_new_one_to_the_directorys() {
        if !crate::sys::is_root() {
            return;
        }
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("rt");
        fs::write(&file, "old\n").unwrap();
        std::os::unix::fs::chown(&file, Some(65534), Some(65534)).unwrap();
        write_secret(&file, "new").unwrap();
        let meta = fs::metadata(&file).unwrap();
        assert_eq!((meta.uid(), meta.gid()), (65534, 65534));
        std::os::unix::fs::chown(dir.path(), Some(1), Some(1)).unwrap();
        write_secret(&dir.path().join("fresh"), "new").unwrap();
        let meta = fs::metadata(dir.path().join("fresh")).unwrap();
        assert_eq!((meta.uid(), meta.gid()), (1, 1));
    }
}
