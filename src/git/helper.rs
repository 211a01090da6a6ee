//! Runs the network side of [`crate::git`] (ls-remote and fetch) in a child
//! process: the daemon re-executes itself as `farmhand git-helper`, sends
//! one request as JSON on the child's stdin and reads one JSON answer from
//! its stdout.
//!
//! Why a process and not a thread:
//!
//! * a time limit or shutdown can end the operation outright (the child is
//!   killed), where a libgit2 call in a thread can only be asked to stop at
//!   its next progress callback and may sit in a blocking read until the
//!   server times out;
//! * libgit2 and OpenSSL never initialise inside the daemon. Their state
//!   (OpenSSL alone touches several MiB at start-up) lives and dies with
//!   each short-lived child, which keeps an idle daemon with a thousand
//!   recipes small, and a crash inside either library costs one poll or
//!   one fetch, not the daemon.
//!
//! The child is the same executable as the daemon (`/proc/self/exe`), so
//! an upgrade of the file on disk never pairs a daemon with a helper of
//! another version. It inherits the daemon's environment (proxy settings,
//! `SSL_CERT_FILE`, credentials helpers), never the build environment.
//!
//! One adjustment keeps each child cheap: unless the operator chose
//! `SSL_CERT_FILE` or `SSL_CERT_DIR`, a system with a hashed CA directory
//! (`/etc/ssl/certs` on Debian, Ubuntu and Arch) is given to OpenSSL as a
//! directory only. OpenSSL then looks CA certificates up by hash when a TLS
//! handshake needs them, instead of parsing the whole CA bundle (about
//! 20 ms of CPU) at every start, whether the upstream uses TLS or not.

use std::io::{Read, Write};
use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::time::Duration;

use serde::{Deserialize, Serialize};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::process::Command;
use tokio_util::sync::CancellationToken;

use crate::git::libgit::{self as git, Abort, FetchedSource};

/// The hidden subcommand that serves one request.
pub const SUBCOMMAND: &str = "git-helper";

/// Largest answer read from a child (20,000 tags are about 400 KiB).
const MAX_ANSWER: u64 = 64 * 1024 * 1024;

/// One git operation.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(tag = "op", rename_all = "snake_case")]
pub enum Request {
    /// List the remote's tags.
    LsRemote {
        /// The upstream URL.
        url: String,
        /// Time limit in milliseconds.
        timeout_ms: u64,
    },
    /// Fetch one tag into the object cache and export its tree.
    Fetch {
        /// The object cache of this upstream.
        cache: PathBuf,
        /// The upstream URL.
        url: String,
        /// The tag.
        tag: String,
        /// Where the tree is exported (must not exist).
        dest: PathBuf,
        /// Fetch and export submodules.
        submodules: bool,
        /// Time limit in milliseconds.
        timeout_ms: u64,
    },
}

/// The child's answer.
#[derive(Debug, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
enum Answer {
    Tags(Vec<String>),
    Fetched(FetchedSource),
    Error(String),
}

/// Runs `request` in this process (the child's side) and returns the
/// answer to print.
fn serve(request: Request) -> Answer {
    let abort = Abort::new();
    match request {
        Request::LsRemote { url, timeout_ms } => {
            match git::list_tags(&url, Duration::from_millis(timeout_ms), &abort) {
                Ok(tags) => Answer::Tags(tags),
                Err(e) => Answer::Error(e.to_string()),
            }
        }
        Request::Fetch {
            cache,
            url,
            tag,
            dest,
            submodules,
            timeout_ms,
        } => match git::fetch_tag(
            &cache,
            &url,
            &tag,
            &dest,
            submodules,
            Duration::from_millis(timeout_ms),
            &abort,
        ) {
            Ok(f) => Answer::Fetched(f),
            Err(e) => Answer::Error(e.to_string()),
        },
    }
}

/// `farmhand git-helper`: reads one request from stdin, runs it, writes
/// the answer to stdout. Returns the process exit code (0 when an answer,
/// even an error answer, was written).
pub fn helper_main() -> i32 {
    let mut input = String::new();
    if let Err(e) = std::io::stdin().read_to_string(&mut input) {
        eprintln!("farmhand git-helper: cannot read the request: {e}");
        return 1;
    }
    let answer = match serde_json::from_str::<Request>(&input) {
        Ok(r) => serve(r),
        Err(e) => Answer::Error(format!("malformed git-helper request: {e}")),
    };
    let out = serde_json::to_vec(&answer).unwrap_or_default();
    let mut stdout = std::io::stdout().lock();
    if stdout
        .write_all(&out)
        .and_then(|()| stdout.flush())
        .is_err()
    {
        return 1;
    }
    0
}

/// The environment that points OpenSSL at the hashed CA directory (see the
/// module documentation), or nothing when the operator set either variable
/// or the system has no such directory.
fn tls_env() -> &'static [(&'static str, PathBuf)] {
    static ENV: std::sync::OnceLock<Vec<(&'static str, PathBuf)>> = std::sync::OnceLock::new();
    ENV.get_or_init(|| {
        if std::env::var_os("SSL_CERT_FILE").is_some() || std::env::var_os("SSL_CERT_DIR").is_some()
        {
            return Vec::new();
        }
        match openssl_probe::probe().cert_dir {
            // `/dev/null` exists (so git2's probe keeps it) and holds no
            // certificate: every CA comes from the directory.
            Some(dir) if has_hash_links(&dir) => vec![
                ("SSL_CERT_DIR", dir),
                ("SSL_CERT_FILE", PathBuf::from("/dev/null")),
            ],
            _ => Vec::new(),
        }
    })
}

/// True when `dir` holds OpenSSL subject-hash links (`1a2b3c4d.0`).
fn has_hash_links(dir: &Path) -> bool {
    let Ok(entries) = std::fs::read_dir(dir) else {
        return false;
    };
    entries.filter_map(Result::ok).any(|e| {
        let name = e.file_name();
        let name = name.to_string_lossy();
        name.len() == 10 && name.ends_with(".0") && name[..8].bytes().all(|b| b.is_ascii_hexdigit())
    })
}

/// Runs `request` in a child process. The operation ends within its time
/// limit (the child checks it between network reads and the parent kills
/// the child when it overruns, for instance on a server that never
/// answers) or as soon as `cancel` fires. Errors are messages naming the
/// URL.
async fn run(
    request: &Request,
    url: &str,
    what: &str,
    timeout: Duration,
    cancel: &CancellationToken,
) -> Result<Answer, String> {
    let body = serde_json::to_vec(request).map_err(|e| format!("{what} {url}: {e}"))?;
    let mut child = Command::new("/proc/self/exe")
        .arg0("farmhand")
        .arg(SUBCOMMAND)
        .envs(tls_env().iter().map(|(k, v)| (*k, v)))
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .kill_on_drop(true)
        .spawn()
        .map_err(|e| format!("{what} {url}: cannot start the git helper: {e}"))?;
    let mut stdin = child.stdin.take().expect("piped");
    let mut stdout = child.stdout.take().expect("piped").take(MAX_ANSWER);
    let mut stderr = child.stderr.take().expect("piped").take(64 * 1024);
    let exchange = async {
        // A failed write shows up as a missing answer below.
        let _ = stdin.write_all(&body).await;
        drop(stdin);
        let (mut out, mut err) = (Vec::new(), Vec::new());
        let _ = tokio::join!(stdout.read_to_end(&mut out), stderr.read_to_end(&mut err));
        let status = child.wait().await;
        (out, err, status)
    };
    let (out, err, status) = tokio::select! {
        r = tokio::time::timeout(timeout, exchange) => match r {
            Ok(r) => r,
            Err(_) => return Err(format!(
                "{what} {url}: timed out after {}",
                crate::model::config::format_duration(timeout)
            )),
        },
        _ = cancel.cancelled() => return Err(format!("{what} {url}: cancelled")),
    };
    match serde_json::from_slice::<Answer>(&out) {
        Ok(Answer::Error(e)) => Err(e),
        Ok(a) => Ok(a),
        Err(_) => {
            let how = match status {
                Ok(s) => describe(s),
                Err(e) => format!("could not be waited for ({e})"),
            };
            let tail = String::from_utf8_lossy(&err);
            let tail = tail.trim();
            Err(if tail.is_empty() {
                format!("{what} {url}: the git helper {how} without an answer")
            } else {
                format!("{what} {url}: the git helper {how} without an answer: {tail}")
            })
        }
    }
}

fn describe(status: std::process::ExitStatus) -> String {
    use std::os::unix::process::ExitStatusExt;
    match (status.code(), status.signal()) {
        (Some(c), _) => format!("exited with status {c}"),
        (None, Some(s)) => format!("was killed by signal {s}"),
        _ => "failed".into(),
    }
}

/// Lists the tags of `url` (like `git ls-remote --tags`), in a child
/// process.
pub async fn list_tags(
    url: &str,
    timeout: Duration,
    cancel: &CancellationToken,
) -> Result<Vec<String>, String> {
    let req = Request::LsRemote {
        url: url.to_string(),
        timeout_ms: timeout.as_millis() as u64,
    };
    match run(&req, url, "ls-remote", timeout, cancel).await? {
        Answer::Tags(t) => Ok(t),
        _ => Err(format!(
            "ls-remote {url}: the git helper gave the wrong answer"
        )),
    }
}

/// Fetches `tag` of `url` into the object cache `cache` and exports its
/// tree to `dest`, in a child process (see [`git::fetch_tag`]).
pub async fn fetch_tag(
    cache: &Path,
    url: &str,
    tag: &str,
    dest: &Path,
    submodules: bool,
    timeout: Duration,
    cancel: &CancellationToken,
) -> Result<FetchedSource, String> {
    let req = Request::Fetch {
        cache: cache.to_path_buf(),
        url: url.to_string(),
        tag: tag.to_string(),
        dest: dest.to_path_buf(),
        submodules,
        timeout_ms: timeout.as_millis() as u64,
    };
    match run(&req, url, "fetch", timeout, cancel).await {
        Ok(Answer::Fetched(f)) => Ok(f),
        Ok(_) => Err(format!("fetch {url}: the git helper gave the wrong answer")),
        Err(e) => {
            // A child killed mid-fetch leaves ref locks behind, which would
            // fail every later fetch of the tag. The child is gone and
            // builds run one at a time, so nothing else holds them.
            let caches = [cache.to_path_buf(), cache.with_file_name("submodules")];
            let _ = tokio::task::spawn_blocking(move || {
                for c in caches {
                    git::clear_stale_locks(&c);
                }
            })
            .await;
            Err(e)
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn requests_and_answers_round_trip() {
        let r = Request::Fetch {
            cache: "/s/git/x.git".into(),
            url: "https://example.org/x".into(),
            tag: "v1.0".into(),
            dest: "/s/sources/x".into(),
            submodules: true,
            timeout_ms: 1500,
        };
        let text = serde_json::to_string(&r).unwrap();
        assert!(text.contains("\"op\":\"fetch\""), "{text}");
        match serde_json::from_str::<Request>(&text).unwrap() {
            Request::Fetch {
                tag, timeout_ms, ..
            } => {
                assert_eq!((tag.as_str(), timeout_ms), ("v1.0", 1500));
            }
            other => panic!("{other:?}"),
        }
        let a = serde_json::to_string(&Answer::Tags(vec!["v1".into()])).unwrap();
        assert!(matches!(
            serde_json::from_str::<Answer>(&a).unwrap(),
            Answer::Tags(t) if t == ["v1"]
        ));
    }

    #[test]
    fn hash_links_are_recognised() {
        let d = tempfile::tempdir().unwrap();
        assert!(!has_hash_links(d.path()));
        std::fs::write(d.path().join("ca-bundle.crt"), "").unwrap();
        std::fs::write(d.path().join("notahash.0"), "").unwrap();
        assert!(!has_hash_links(d.path()));
        std::fs::write(d.path().join("002c0b4f.0"), "").unwrap();
        assert!(has_hash_links(d.path()));
        assert!(!has_hash_links(&d.path().join("missing")));
    }

    #[test]
    fn serve_answers_errors_as_messages() {
        let a = serve(Request::LsRemote {
            url: "/nonexistent/upstream".into(),
            timeout_ms: 5000,
        });
        match a {
            Answer::Error(e) => assert!(e.contains("/nonexistent/upstream"), "{e}"),
            other => panic!("{other:?}"),
        }
    }
}
