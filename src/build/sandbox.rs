//! Confining build scripts with bubblewrap (DESIGN.md section 18).
//!
//! A build runs code the farm did not write, so under the sandbox it sees
//! only what a compiler needs: the host's `/usr`, `/etc` (less the farm's
//! config directory and secrets) and `/bin`, `/lib*` read-only; a fresh
//! `/tmp`, `/proc` and minimal `/dev`; its own `SOURCE_DIR`, `DESTDIR` and
//! `HOME` writable, and its own recipe directory read-only. The state
//! directory (repository, `state.json`, logs, git caches, other builds),
//! the signing key and the webhook and control secrets are not there at
//! all. It gets its own user, mount, PID, IPC and UTS namespaces (and no
//! network with `[build].network = false`), a new session, and dies with
//! the daemon: when the build ends its PID namespace ends, and every
//! process it started with it.

use std::path::{Path, PathBuf};
use std::process::Stdio;

/// Host trees every build sees read-only (when they exist).
const READ_ONLY_TREES: [&str; 2] = ["/usr", "/etc"];
/// Top-level names that are directories or (merged /usr) symlinks into `/usr`.
const TOP_LEVEL: [&str; 6] = ["/bin", "/sbin", "/lib", "/lib32", "/lib64", "/libx32"];

/// The paths of one build that the sandbox makes visible.
#[derive(Debug, Clone, Copy)]
pub struct BuildPaths<'a> {
    /// `SOURCE_DIR`, writable; the build starts there.
    pub source: &'a Path,
    /// `DESTDIR`, writable.
    pub destdir: &'a Path,
    /// `HOME`, writable.
    pub home: &'a Path,
    /// The recipe's directory (the build script and the files beside it),
    /// read-only.
    pub recipe_dir: &'a Path,
}

/// A working bubblewrap and what it must hide.
#[derive(Debug, Clone)]
pub struct Sandbox {
    bwrap: PathBuf,
    network: bool,
    /// Directories under the read-only trees that builds must not see
    /// (the config directory), covered by an empty tmpfs.
    hidden_dirs: Vec<PathBuf>,
    /// Files under the read-only trees that builds must not see (keys and
    /// secrets outside the config directory), covered by `/dev/null`.
    hidden_files: Vec<PathBuf>,
}

impl Sandbox {
    /// Finds `bwrap` on `PATH` and proves it works here with a trial run of
    /// `/bin/true` under the exact options builds get. `secrets` are the
    /// config directory and every key or secret file: whatever of them lies
    /// under `/usr` or `/etc` is hidden. The error says why bubblewrap
    /// cannot be used.
    pub fn probe(network: bool, config_dir: &Path, secrets: &[PathBuf]) -> Result<Sandbox, String> {
        let bwrap =
            which("bwrap").ok_or("bwrap not found on PATH (Debian: apt install bubblewrap)")?;
        let visible = |p: &Path| READ_ONLY_TREES.iter().any(|t| p.starts_with(t));
        let mut hidden_dirs = Vec::new();
        if visible(config_dir) && !READ_ONLY_TREES.iter().any(|t| config_dir == Path::new(t)) {
            hidden_dirs.push(config_dir.to_path_buf());
        }
        let hidden_files = secrets
            .iter()
            .filter(|p| visible(p) && !hidden_dirs.iter().any(|d| p.starts_with(d)))
            .cloned()
            .collect();
        let sandbox = Sandbox {
            bwrap,
            network,
            hidden_dirs,
            hidden_files,
        };
        sandbox.trial()?;
        Ok(sandbox)
    }

    fn trial(&self) -> Result<(), String> {
        let dir = tempfile::tempdir()
            .map_err(|e| format!("trial run: cannot create a temporary directory: {e}"))?;
        let sub = |n: &str| {
            let p = dir.path().join(n);
            std::fs::create_dir(&p).map(|()| p)
        };
        let (source, destdir, home, recipe_dir) =
            (|| Ok::<_, std::io::Error>((sub("s")?, sub("d")?, sub("h")?, sub("r")?)))()
                .map_err(|e| format!("trial run: {e}"))?;
        let paths = BuildPaths {
            source: &source,
            destdir: &destdir,
            home: &home,
            recipe_dir: &recipe_dir,
        };
        let argv = self.wrap(
            &paths,
            &[
                "/bin/sh".into(),
                "-c".into(),
                "touch \"$0\"/ok".into(),
                destdir.display().to_string(),
            ],
        );
        let out = std::process::Command::new(&argv[0])
            .args(&argv[1..])
            .env_clear()
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .output()
            .map_err(|e| format!("cannot run {}: {e}", self.bwrap.display()))?;
        if !out.status.success() || !destdir.join("ok").exists() {
            let stderr = String::from_utf8_lossy(&out.stderr);
            return Err(format!(
                "trial run of {} failed ({}): {}",
                self.bwrap.display(),
                out.status,
                stderr.trim()
            ));
        }
        Ok(())
    }

    /// `argv` wrapped in bubblewrap for the build whose paths are `paths`.
    pub fn wrap(&self, paths: &BuildPaths, argv: &[String]) -> Vec<String> {
        let mut a: Vec<String> = vec![self.bwrap.display().to_string()];
        let mut push = |args: &[&str]| a.extend(args.iter().map(std::string::ToString::to_string));
        // No cgroup namespace (the build sees no /sys at all) and no
        // --hostname (sethostname): the shipped unit allows only the
        // namespaces and system calls these options need
        // (systemd/farmhand.service).
        push(&[
            "--unshare-user",
            "--unshare-ipc",
            "--unshare-pid",
            "--unshare-uts",
        ]);
        if !self.network {
            push(&["--unshare-net"]);
        }
        push(&["--die-with-parent", "--new-session"]);
        for t in READ_ONLY_TREES {
            push(&["--ro-bind-try", t, t]);
        }
        for t in TOP_LEVEL {
            let p = Path::new(t);
            match std::fs::read_link(p) {
                Ok(target) => push(&["--symlink", &target.display().to_string(), t]),
                Err(_) if p.is_dir() => push(&["--ro-bind", t, t]),
                Err(_) => {}
            }
        }
        if self.network {
            // /etc/resolv.conf may point into systemd-resolved's directory.
            push(&[
                "--ro-bind-try",
                "/run/systemd/resolve",
                "/run/systemd/resolve",
            ]);
        }
        push(&["--proc", "/proc", "--dev", "/dev", "--tmpfs", "/tmp"]);
        for d in &self.hidden_dirs {
            push(&["--tmpfs", &d.display().to_string()]);
        }
        for f in &self.hidden_files {
            push(&["--ro-bind", "/dev/null", &f.display().to_string()]);
        }
        for p in [paths.source, paths.destdir, paths.home] {
            let p = p.display().to_string();
            push(&["--bind", &p, &p]);
        }
        let r = paths.recipe_dir.display().to_string();
        push(&["--ro-bind", &r, &r]);
        push(&["--chdir", &paths.source.display().to_string(), "--"]);
        a.extend(argv.iter().cloned());
        a
    }
}

fn which(name: &str) -> Option<PathBuf> {
    let path = std::env::var_os("PATH")?;
    std::env::split_paths(&path)
        .map(|d| d.join(name))
        .find(|p| {
            use std::os::unix::fs::PermissionsExt;
            p.metadata()
                .is_ok_and(|m| m.is_file() && m.permissions().mode() & 0o111 != 0)
        })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sandbox(network: bool) -> Sandbox {
        Sandbox {
            bwrap: "/usr/bin/bwrap".into(),
            network,
            hidden_dirs: vec!["/etc/farmhand".into()],
            hidden_files: vec!["/etc/ssl/private/farm.key".into()],
        }
    }

    #[test]
    fn wrap_binds_only_the_build_and_hides_the_farm() {
        let p = BuildPaths {
            source: Path::new("/var/lib/farmhand/sources/x"),
            destdir: Path::new("/var/lib/farmhand/stage/x/destdir"),
            home: Path::new("/var/lib/farmhand/stage/x/home"),
            recipe_dir: Path::new("/etc/farmhand/recipes/x"),
        };
        let a = sandbox(true).wrap(&p, &["./build.sh".into()]).join(" ");
        for want in [
            "--unshare-pid",
            "--unshare-user",
            "--unshare-ipc",
            "--unshare-uts",
            "--die-with-parent",
            "--new-session",
            "--ro-bind-try /usr /usr",
            "--tmpfs /etc/farmhand",
            "--ro-bind /dev/null /etc/ssl/private/farm.key",
            "--bind /var/lib/farmhand/sources/x /var/lib/farmhand/sources/x",
            "--ro-bind /etc/farmhand/recipes/x /etc/farmhand/recipes/x",
            "--chdir /var/lib/farmhand/sources/x -- ./build.sh",
        ] {
            assert!(a.contains(want), "{want} not in {a}");
        }
        assert!(!a.contains("--unshare-net"), "{a}");
        // The shipped unit refuses cgroup namespaces and sethostname.
        assert!(!a.contains("--unshare-cgroup"), "{a}");
        assert!(!a.contains("--hostname"), "{a}");
        assert!(
            !a.contains("/var/lib/farmhand "),
            "state_dir itself is never bound: {a}"
        );
        // The recipe directory comes after the tmpfs that hides its parent.
        assert!(
            a.find("--tmpfs /etc/farmhand").unwrap()
                < a.find("--ro-bind /etc/farmhand/recipes/x").unwrap()
        );
        let offline = sandbox(false).wrap(&p, &["./build.sh".into()]).join(" ");
        assert!(offline.contains("--unshare-net"), "{offline}");
    }
}
