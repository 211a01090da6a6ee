//! The limit on open files: raised for the daemon, as it was for builds.
//!
//! The daemon's HTTP server raises its soft limit to the hard one, so that
//! thousands of connections fit. A build script is not the daemon's
//! business: it gets the soft limit the daemon was started with, as any
//! process started from the same shell or unit would, not the raised one.

use std::io;
use std::sync::OnceLock;

use nix::sys::resource::{getrlimit, setrlimit, Resource};

/// (soft, hard) as the daemon found them, before it raised the soft one.
static FOUND: OnceLock<(u64, u64)> = OnceLock::new();

/// Raises the soft limit on open files to the hard limit; returns the soft
/// limit in force afterwards. The limits found first are kept for
/// [`as_found`].
pub fn raise_nofile() -> io::Result<u64> {
    let (soft, hard) = getrlimit(Resource::RLIMIT_NOFILE)?;
    let _ = FOUND.set((soft, hard));
    if soft >= hard {
        return Ok(soft);
    }
    match setrlimit(Resource::RLIMIT_NOFILE, hard, hard) {
        Ok(()) => Ok(hard),
        // An unlimited hard limit may still exceed the kernel's nr_open.
        Err(_) => Ok(soft),
    }
}

/// The (soft, hard) limit on open files the daemon was started with, when
/// [`raise_nofile`] changed it; `None` when nothing was raised.
pub fn as_found() -> Option<(u64, u64)> {
    let (soft, hard) = *FOUND.get()?;
    let (now, _) = getrlimit(Resource::RLIMIT_NOFILE).ok()?;
    (now != soft).then_some((soft, hard))
}

/// Sets the limit on open files back to `found` (from [`as_found`]): for a
/// child between fork and exec, so it makes one system call and nothing
/// else.
pub fn restore_nofile(found: (u64, u64)) -> io::Result<()> {
    setrlimit(Resource::RLIMIT_NOFILE, found.0, found.1).map_err(io::Error::from)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_limit_found_is_kept_and_restorable() {
        let (soft, hard) = getrlimit(Resource::RLIMIT_NOFILE).unwrap();
        let now = raise_nofile().unwrap();
        assert!(now >= soft);
        if now != soft {
            assert_eq!(as_found(), Some((soft, hard)));
        } else {
            assert_eq!(as_found(), None);
        }
    }
}
