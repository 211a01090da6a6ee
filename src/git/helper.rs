//! Runs the network side of [`crate::git`] (ls-remote and fetch) in child
//! processes: the daemon re-executes itself as `farmhand git-helper` and
//! talks to it over a pipe, one JSON request per line on the child's stdin
//! and one JSON answer per line on its stdout. A helper serves requests
//! one after another until its stdin closes, so the daemon keeps a few of
//! them alive ([`Pool`]): one per concurrent poll (up to `[poll].concurrency`)
//! and one for fetches, each closed after a minute without work.
//!
//! Why processes and not threads:
//!
//! * a time limit or shutdown can end the operation outright (the helper is
//!   killed, and the next request starts a fresh one), where a libgit2
//!   call in a thread can only be asked to stop at its next progress
//!   callback and may sit in a blocking read until the server times out;
//! * libgit2 and OpenSSL never initialise inside the daemon. Their state
//!   (OpenSSL alone touches several MiB at start-up) lives in the helpers,
//!   which keeps an idle daemon with thousands of recipes small, and a
//!   crash inside either library costs one poll or one fetch (the helper
//!   is replaced), not the daemon.
//!
//! Why long-lived: starting a helper costs a few milliseconds of exec and
//! dynamic linking, and OpenSSL's set-up (parsing a CA bundle named by
//! `SSL_CERT_FILE` costs about 20 ms of CPU). Paid per poll, that made the
//! first poll round of 1,000 recipes take 15 s; paid once per helper, it
//! is noise. A helper is replaced after [`MAX_REQUESTS`] requests, so
//! whatever libgit2 keeps between requests stays bounded.
//!
//! The child is the same executable as the daemon (`/proc/self/exe`), so
//! an upgrade of the file on disk never pairs a daemon with a helper of
//! another version. (`FARMHAND_GIT_HELPER_EXE` names another executable
//! instead, for running the daemon under a tool such as valgrind, where
//! `/proc/self/exe` is the tool.) It inherits the daemon's environment
//! (proxy settings, `SSL_CERT_FILE`, credentials helpers), never the build
//! environment.
//!
//! One adjustment keeps each child cheap: unless the operator chose
//! `SSL_CERT_FILE` or `SSL_CERT_DIR`, a system with a hashed CA directory
//! (`/etc/ssl/certs` on Debian, Ubuntu and Arch) is given to OpenSSL as a
//! directory only. OpenSSL then looks CA certificates up by hash when a TLS
//! handshake needs them, instead of parsing the whole CA bundle (about
//! 20 ms of CPU) at every start, whether the upstream uses TLS or not.

use std::collections::VecDeque;
use std::io::{BufRead, Write};
use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering as AtomicOrdering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use serde::{Deserialize, Serialize};
use tokio::io::{AsyncBufReadExt, AsyncReadExt, AsyncWriteExt, BufReader};
use tokio::process::{Child, ChildStdin, ChildStdout, Command};
use tokio_util::sync::CancellationToken;
use tracing::warn;

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

/// `farmhand git-helper`: reads requests from stdin, one per line, and
/// writes each answer to stdout on one line, until stdin closes (a request
/// without a final newline is served too). Returns the process exit code
/// (0 when stdin closed and every answer, even an error answer, was
/// written). A `background` helper (polls) first lowers its CPU priority
/// by [`BACKGROUND_NICE`], so that a round of thousands of polls leaves
/// the daemon's own threads (HTTP, the build worker) the CPU they need.
pub fn helper_main(background: bool) -> i32 {
    if background {
        lower_priority();
    }
    let stdin = std::io::stdin();
    let mut input = stdin.lock();
    let mut stdout = std::io::stdout().lock();
    let mut line = String::new();
    loop {
        line.clear();
        match input.read_line(&mut line) {
            Ok(0) => return 0,
            Ok(_) => {}
            Err(e) => {
                eprintln!("farmhand git-helper: cannot read the request: {e}");
                return 1;
            }
        }
        if line.trim().is_empty() {
            continue;
        }
        let answer = match serde_json::from_str::<Request>(&line) {
            Ok(r) => serve(r),
            Err(e) => Answer::Error(format!("malformed git-helper request: {e}")),
        };
        let mut out = serde_json::to_vec(&answer).unwrap_or_default();
        out.push(b'\n');
        if stdout
            .write_all(&out)
            .and_then(|()| stdout.flush())
            .is_err()
        {
            return 1;
        }
    }
}

/// How much a background (poll) helper lowers its CPU priority.
pub const BACKGROUND_NICE: i32 = 10;

#[allow(unsafe_code)]
fn lower_priority() {
    // SAFETY: nice(2) changes only this process's scheduling priority; it
    // reads and writes no memory of ours. Failing (never for a raise of
    // the nice value) leaves the priority as it was, which is harmless.
    unsafe {
        nix::libc::nice(BACKGROUND_NICE);
    }
}

/// The environment variable that names the executable to start as the git
/// helper instead of `/proc/self/exe`.
const HELPER_EXE_VAR: &str = "FARMHAND_GIT_HELPER_EXE";

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

/// Most requests one helper serves before it is replaced.
pub const MAX_REQUESTS: u32 = 1000;

/// A helper without work for this long is closed.
pub const IDLE: Duration = Duration::from_secs(60);

/// Bytes of a helper's stderr kept for the message when it dies.
const STDERR_TAIL: usize = 4096;

/// One running `farmhand git-helper`.
struct Helper {
    child: Child,
    stdin: ChildStdin,
    stdout: BufReader<ChildStdout>,
    /// The last [`STDERR_TAIL`] bytes it wrote to stderr.
    stderr: Arc<Mutex<VecDeque<u8>>>,
    /// Drains stderr into `stderr` until the helper closes it.
    drain: tokio::task::JoinHandle<()>,
    served: u32,
    idle_since: Instant,
}

/// Why an exchange with a helper failed.
enum Failure {
    /// The helper closed its pipes or was gone before it answered at all:
    /// a helper that died while idle looks like this.
    Gone,
    /// It closed its stdout in the middle of an answer.
    Cut,
    /// The answer is longer than [`MAX_ANSWER`].
    TooLong,
}

impl Helper {
    fn spawn(background: bool) -> std::io::Result<Helper> {
        let exe = std::env::var_os(HELPER_EXE_VAR).unwrap_or_else(|| "/proc/self/exe".into());
        let mut child = Command::new(exe)
            .arg0("farmhand")
            .arg(SUBCOMMAND)
            .args(background.then_some("--background"))
            .envs(tls_env().iter().map(|(k, v)| (*k, v)))
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .kill_on_drop(true)
            .spawn()?;
        let stdin = child.stdin.take().expect("piped");
        let stdout = BufReader::new(child.stdout.take().expect("piped"));
        let mut err_pipe = child.stderr.take().expect("piped");
        let stderr = Arc::new(Mutex::new(VecDeque::new()));
        let tail = stderr.clone();
        let drain = tokio::spawn(async move {
            let mut buf = [0u8; 1024];
            while let Ok(n @ 1..) = err_pipe.read(&mut buf).await {
                let mut t = tail
                    .lock()
                    .unwrap_or_else(std::sync::PoisonError::into_inner);
                t.extend(&buf[..n]);
                let over = t.len().saturating_sub(STDERR_TAIL);
                t.drain(..over);
            }
        });
        Ok(Helper {
            child,
            stdin,
            stdout,
            stderr,
            drain,
            served: 0,
            idle_since: Instant::now(),
        })
    }

    /// Sends one request line and reads one answer line.
    async fn exchange(&mut self, body: &[u8]) -> Result<Vec<u8>, Failure> {
        self.served += 1;
        if self.stdin.write_all(body).await.is_err() || self.stdin.flush().await.is_err() {
            return Err(Failure::Gone);
        }
        let mut out = Vec::new();
        let read = (&mut self.stdout)
            .take(MAX_ANSWER)
            .read_until(b'\n', &mut out)
            .await;
        match read {
            Ok(_) if out.last() == Some(&b'\n') => Ok(out),
            Ok(n) if n as u64 >= MAX_ANSWER => Err(Failure::TooLong),
            Ok(0) | Err(_) if out.is_empty() => Err(Failure::Gone),
            _ => Err(Failure::Cut),
        }
    }

    /// Kills the helper and waits (briefly) until it is gone, so that it
    /// writes nothing more (a fetch's lock files are cleared next).
    async fn kill(mut self) {
        let _ = self.child.start_kill();
        let _ = tokio::time::timeout(Duration::from_secs(2), self.child.wait()).await;
    }

    /// How the helper ended (it closed its pipes): exit status and the
    /// tail of its stderr, waited for briefly.
    async fn obituary(mut self) -> String {
        let status = tokio::time::timeout(Duration::from_secs(2), self.child.wait()).await;
        let _ = tokio::time::timeout(Duration::from_millis(500), &mut self.drain).await;
        let how = match status {
            Ok(Ok(s)) => describe(s),
            Ok(Err(e)) => format!("could not be waited for ({e})"),
            Err(_) => "stopped answering".into(),
        };
        let tail = {
            let t = self
                .stderr
                .lock()
                .unwrap_or_else(std::sync::PoisonError::into_inner);
            String::from_utf8_lossy(&t.iter().copied().collect::<Vec<u8>>())
                .trim()
                .to_string()
        };
        if tail.is_empty() {
            format!("the git helper {how} without an answer")
        } else {
            format!("the git helper {how} without an answer: {tail}")
        }
    }
}

/// Idle helpers kept for the next request. Requests take the helper that
/// finished last (so surplus ones age out), a helper goes back after a
/// complete answer (never after a time limit or a cancellation, which kill
/// it), and one idle for [`IDLE`] is closed.
pub struct Pool {
    idle: Mutex<Vec<Helper>>,
    keep: AtomicUsize,
    reaper: AtomicBool,
    /// Its helpers run at a lower CPU priority.
    background: bool,
}

/// The helpers of polls (`ls-remote`), up to `[poll].concurrency` kept,
/// at a lower CPU priority.
static POLLS: Pool = Pool::new(4, true);
/// The helper of fetches (builds run one at a time; a build waits for
/// its fetch, so at the daemon's priority).
static FETCHES: Pool = Pool::new(1, false);

/// Keeps up to `n` idle poll helpers (the daemon sets `[poll].concurrency`).
pub fn set_poll_helpers(n: usize) {
    POLLS.keep.store(n.max(1), AtomicOrdering::Relaxed);
}

/// Ends every idle helper (at shutdown).
pub fn close_helpers() {
    POLLS.clear();
    FETCHES.clear();
}

impl Pool {
    const fn new(keep: usize, background: bool) -> Pool {
        Pool {
            idle: Mutex::new(Vec::new()),
            keep: AtomicUsize::new(keep),
            reaper: AtomicBool::new(false),
            background,
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Vec<Helper>> {
        self.idle
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    fn take(&self) -> Option<Helper> {
        self.lock().pop()
    }

    fn put(&'static self, mut h: Helper) {
        if h.served >= MAX_REQUESTS {
            return;
        }
        h.idle_since = Instant::now();
        let mut idle = self.lock();
        if idle.len() < self.keep.load(AtomicOrdering::Relaxed) {
            idle.push(h);
        }
        drop(idle);
        if !self.reaper.swap(true, AtomicOrdering::Relaxed) {
            tokio::spawn(async move {
                loop {
                    tokio::time::sleep(IDLE / 4).await;
                    self.expire(Instant::now());
                }
            });
        }
    }

    /// Closes the helpers idle for [`IDLE`] or longer.
    fn expire(&self, now: Instant) {
        let gone: Vec<Helper> = {
            let mut idle = self.lock();
            let (old, keep) = std::mem::take(&mut *idle)
                .into_iter()
                .partition(|h| now.duration_since(h.idle_since) >= IDLE);
            *idle = keep;
            old
        };
        // Dropping a helper kills it (its stdin closes too); tokio reaps it.
        drop(gone);
    }

    fn clear(&self) {
        let gone = std::mem::take(&mut *self.lock());
        drop(gone);
    }
}

/// Runs `request` in a helper of `pool`. The operation ends within its
/// time limit (the helper checks it between network reads, and is killed
/// when it overruns, for instance on a server that never answers) or as
/// soon as `cancel` fires (the helper is killed). A pooled helper found
/// dead before it answered is replaced once. Errors are messages naming
/// the URL.
async fn run(
    pool: &'static Pool,
    request: &Request,
    url: &str,
    what: &str,
    timeout: Duration,
    cancel: &CancellationToken,
) -> Result<Answer, String> {
    let mut body = serde_json::to_vec(request).map_err(|e| format!("{what} {url}: {e}"))?;
    body.push(b'\n');
    let deadline = tokio::time::Instant::now() + timeout;
    let mut fresh_only = false;
    loop {
        let pooled = if fresh_only { None } else { pool.take() };
        let (mut helper, reused) = match pooled {
            Some(h) => (h, true),
            None => match Helper::spawn(pool.background) {
                Ok(h) => (h, false),
                Err(e) => return Err(format!("{what} {url}: cannot start the git helper: {e}")),
            },
        };
        let result = tokio::select! {
            r = tokio::time::timeout_at(deadline, helper.exchange(&body)) => match r {
                Ok(r) => r,
                Err(_) => {
                    // It may be stuck inside libgit2.
                    helper.kill().await;
                    return Err(format!(
                        "{what} {url}: timed out after {}",
                        crate::model::config::format_duration(timeout)
                    ));
                }
            },
            _ = cancel.cancelled() => {
                helper.kill().await;
                return Err(format!("{what} {url}: cancelled"));
            }
        };
        return match result {
            Ok(line) => {
                let answer = serde_json::from_slice::<Answer>(&line);
                pool.put(helper);
                match answer {
                    Ok(Answer::Error(e)) => Err(e),
                    Ok(a) => Ok(a),
                    Err(e) => Err(format!(
                        "{what} {url}: the git helper answered nonsense: {e}"
                    )),
                }
            }
            Err(Failure::Gone) if reused => {
                // It died while idle (or at this request: then the fresh
                // one below reports it).
                let why = helper.obituary().await;
                warn!(err = %why, "git helper gone; starting a new one");
                fresh_only = true;
                continue;
            }
            Err(Failure::TooLong) => Err(format!(
                "{what} {url}: the git helper's answer is larger than {} MiB",
                MAX_ANSWER >> 20
            )),
            Err(Failure::Gone | Failure::Cut) => {
                Err(format!("{what} {url}: {}", helper.obituary().await))
            }
        };
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

/// Lists the tags of `url` (like `git ls-remote --tags`), in a poll
/// helper.
pub async fn list_tags(
    url: &str,
    timeout: Duration,
    cancel: &CancellationToken,
) -> Result<Vec<String>, String> {
    let req = Request::LsRemote {
        url: url.to_string(),
        timeout_ms: timeout.as_millis() as u64,
    };
    match run(&POLLS, &req, url, "ls-remote", timeout, cancel).await? {
        Answer::Tags(t) => Ok(t),
        _ => Err(format!(
            "ls-remote {url}: the git helper gave the wrong answer"
        )),
    }
}

/// Fetches `tag` of `url` into the object cache `cache` and exports its
/// tree to `dest`, in the fetch helper (see [`git::fetch_tag`]).
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
    match run(&FETCHES, &req, url, "fetch", timeout, cancel).await {
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
