//! Small filesystem helpers shared by the repository, the backoff book and
//! the build logs: atomic replacement and path-safe names.

use std::fs::{self, File};
use std::io::{self, Write};
use std::path::Path;

/// Replaces `path` with `bytes` atomically: the data goes to a temporary
/// file in the same directory, is fsynced, renamed over `path`, and the
/// directory is fsynced so the rename itself survives a crash. A reader sees
/// either the old content or the new, never a mix.
pub fn write_atomic(path: &Path, bytes: &[u8]) -> io::Result<()> {
    write_atomic_then(path, bytes, || {})
}

/// [`write_atomic`], calling `before_rename` once the temporary file is
/// written and fsynced, just before it takes its final name.
pub fn write_atomic_then(
    path: &Path,
    bytes: &[u8],
    before_rename: impl FnOnce(),
) -> io::Result<()> {
    let dir = path
        .parent()
        .filter(|d| !d.as_os_str().is_empty())
        .unwrap_or_else(|| Path::new("."));
    // Indexes, signatures, repo.json and the public key are published as
    // written here: readable like any file the daemon creates (0644 less
    // its umask), not tempfile's 0600.
    let mut tmp = tempfile::Builder::new()
        .prefix(".tmp-")
        .permissions(std::os::unix::fs::PermissionsExt::from_mode(0o644))
        .tempfile_in(dir)?;
    tmp.write_all(bytes)?;
    tmp.as_file().sync_all()?;
    before_rename();
    tmp.persist(path).map_err(|e| e.error)?;
    sync_dir(dir)
}

/// Fsyncs a directory so that renames and creations inside it are durable.
pub fn sync_dir(dir: &Path) -> io::Result<()> {
    File::open(dir)?.sync_all()
}

/// Moves `from` to `to` durably: `from` is fsynced, renamed, and the
/// destination directory fsynced. Both must be on the same filesystem.
pub fn rename_durable(from: &Path, to: &Path) -> io::Result<()> {
    File::open(from)?.sync_all()?;
    fs::rename(from, to)?;
    if let Some(dir) = to.parent() {
        sync_dir(dir)?;
    }
    Ok(())
}

/// Marks every descriptor this process inherited (3 and up) close-on-exec,
/// so that nothing the daemon was started with (a shell's redirections, a
/// supervisor's pipes) reaches build scripts or other children. Descriptors
/// the daemon opens itself are close-on-exec already. Returns how many were
/// changed.
pub fn close_inherited_on_exec() -> usize {
    use nix::fcntl::{fcntl, FcntlArg, FdFlag};
    let Ok(dir) = fs::read_dir("/proc/self/fd") else {
        return 0;
    };
    let fds: Vec<i32> = dir
        .filter_map(Result::ok)
        .filter_map(|e| e.file_name().to_str()?.parse().ok())
        .filter(|&fd| fd > 2)
        .collect();
    let mut changed = 0;
    for fd in fds {
        let Ok(flags) = fcntl(fd, FcntlArg::F_GETFD) else {
            continue; // the directory's own descriptor, closed by now
        };
        let flags = FdFlag::from_bits_truncate(flags);
        if !flags.contains(FdFlag::FD_CLOEXEC)
            && fcntl(fd, FcntlArg::F_SETFD(flags | FdFlag::FD_CLOEXEC)).is_ok()
        {
            changed += 1;
        }
    }
    changed
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn write_atomic_replaces_content() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("a.json");
        write_atomic(&p, b"one").unwrap();
        write_atomic(&p, b"two").unwrap();
        assert_eq!(fs::read(&p).unwrap(), b"two");
        let names: Vec<_> = fs::read_dir(dir.path()).unwrap().collect();
        assert_eq!(names.len(), 1, "no temporary file is left behind");
    }

    #[test]
    fn write_atomic_files_are_readable_like_ordinary_files() {
        use std::os::unix::fs::PermissionsExt;
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("index.json");
        write_atomic(&p, b"{}").unwrap();
        // What the process umask lets an ordinary new file have.
        let reference = dir.path().join("reference");
        fs::write(&reference, b"").unwrap();
        let want = fs::metadata(&reference).unwrap().permissions().mode() & 0o644;
        let got = fs::metadata(&p).unwrap().permissions().mode() & 0o777;
        assert_eq!(got, want, "mode {got:o}, want {want:o}");
    }
}
