//! Shared helpers for the integration tests: a temporary farm (config,
//! recipes, state), real upstream git repositories made with the git CLI,
//! the real `farmhand` binary, and a tiny HTTP/1.1 client.

use std::io::{BufRead, BufReader, Read, Write};
use std::net::TcpStream;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

/// The binary under test.
pub fn bin() -> PathBuf {
    PathBuf::from(env!("CARGO_BIN_EXE_farmhand"))
}

/// Polls `f` every 20 ms until it returns `Some`, or panics after `timeout`
/// with `what`.
pub fn wait_for<T>(timeout: Duration, what: &str, mut f: impl FnMut() -> Option<T>) -> T {
    let start = Instant::now();
    loop {
        if let Some(v) = f() {
            return v;
        }
        if start.elapsed() > timeout {
            panic!("timed out after {timeout:?} waiting for {what}");
        }
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// Runs git in `dir` with fixed identities and dates (reproducible commits).
pub fn git(dir: &Path, args: &[&str]) -> String {
    git_at(dir, args, 1_700_000_000)
}

/// A local upstream repository.
pub struct Upstream {
    pub path: PathBuf,
}

impl Upstream {
    /// Creates an empty repository at `path` with one commit.
    pub fn new(path: &Path) -> Upstream {
        std::fs::create_dir_all(path).unwrap();
        git(path, &["init", "-q", "-b", "main"]);
        let u = Upstream {
            path: path.to_path_buf(),
        };
        u.commit("README", "upstream\n", "initial");
        u
    }

    /// Writes `file` and commits it.
    pub fn commit(&self, file: &str, content: &str, msg: &str) {
        let p = self.path.join(file);
        if let Some(d) = p.parent() {
            std::fs::create_dir_all(d).unwrap();
        }
        std::fs::write(&p, content).unwrap();
        git(&self.path, &["add", "-A"]);
        git(&self.path, &["commit", "-q", "--allow-empty", "-m", msg]);
    }

    /// Commits a `VERSION` file and tags it.
    pub fn release(&self, tag: &str) {
        self.commit("VERSION", &format!("{tag}\n"), &format!("release {tag}"));
        git(&self.path, &["tag", tag]);
    }

    /// The URL recipes use (a local path).
    pub fn url(&self) -> String {
        self.path.display().to_string()
    }
}

/// A temporary farm: `config.toml`, `recipes/`, `state/`.
pub struct Farm {
    pub dir: tempfile::TempDir,
    pub root: PathBuf,
    pub extra_config: String,
    pub http: bool,
}

impl Farm {
    /// An empty farm; `http` puts the server on 127.0.0.1 with a free port.
    pub fn new() -> Farm {
        let dir = tempfile::tempdir().unwrap();
        let root = dir.path().to_path_buf();
        std::fs::create_dir_all(root.join("recipes")).unwrap();
        Farm {
            dir,
            root,
            extra_config: String::new(),
            http: false,
        }
    }

    pub fn config_path(&self) -> PathBuf {
        self.root.join("config.toml")
    }

    pub fn state(&self) -> PathBuf {
        self.root.join("state")
    }

    pub fn repo(&self) -> PathBuf {
        self.state().join("repo")
    }

    /// Writes config.toml. `sections` is appended verbatim (e.g. "[build]\ntimeout = \"5s\"\n").
    pub fn write_config(&self, sections: &str) {
        let http = if self.http {
            "[http]\naddr = \"127.0.0.1:0\"\nwebhook_secret_file = \"webhook-secret\"\n"
        } else {
            ""
        };
        std::fs::write(self.root.join("webhook-secret"), "test-secret\n").unwrap();
        // Build scripts in these tests coordinate with the test through
        // files in the farm's directory, which the build sandbox hides, so
        // builds run unsandboxed unless a test asks for the sandbox
        // (`sandbox = "auto"` or `"bwrap"`; see sandbox.rs).
        let sections = if sections.contains("sandbox =") {
            sections.to_string()
        } else if sections.contains("[build]\n") {
            sections.replacen("[build]\n", "[build]\nsandbox = \"none\"\n", 1)
        } else {
            format!("{sections}\n[build]\nsandbox = \"none\"\n")
        };
        let text = format!(
            "[manager]\nid = \"test-farm\"\nrecipes_dir = \"recipes\"\nstate_dir = \"state\"\n\n\
             [repo]\nname = \"test-packages\"\n\n[poll]\ndefault_interval = \"1h\"\n\n{http}{sections}"
        );
        std::fs::write(self.config_path(), text).unwrap();
    }

    /// Adds a recipe: `recipes/<id>/recipe.toml` and an executable `build.sh`.
    pub fn recipe(&self, id: &str, toml: &str, build_sh: &str) -> PathBuf {
        let d = self.root.join("recipes").join(id);
        std::fs::create_dir_all(&d).unwrap();
        std::fs::write(d.join("recipe.toml"), toml).unwrap();
        let s = d.join("build.sh");
        std::fs::write(&s, build_sh).unwrap();
        std::fs::set_permissions(&s, std::fs::Permissions::from_mode(0o755)).unwrap();
        d
    }

    /// A standard watched recipe for `upstream` with a `^v(...)$` pattern.
    pub fn simple_recipe(
        &self,
        id: &str,
        upstream: &Upstream,
        build_sh: &str,
        extra: &str,
    ) -> PathBuf {
        self.recipe(
            id,
            &format!(
                "[upstream]\ngit = \"{}\"\ntag_pattern = '^v(\\d+\\.\\d+\\.\\d+)$'\n{extra}",
                upstream.url()
            ),
            build_sh,
        )
    }

    /// Runs `farmhand --config config.toml <args>` to completion.
    pub fn run(&self, args: &[&str]) -> Output {
        Command::new(bin())
            .arg("--config")
            .arg(self.config_path())
            .arg("--log-format")
            .arg("logfmt")
            .args(args)
            .env_remove("NOTIFY_SOCKET")
            .env_remove("JOURNAL_STREAM")
            .output()
            .expect("farmhand runs")
    }

    /// Starts the daemon and waits for its HTTP server (when configured).
    pub fn start(&self) -> Daemon {
        self.start_with(&[], &[])
    }

    /// Starts the daemon with extra args and environment.
    pub fn start_with(&self, args: &[&str], env: &[(&str, &str)]) -> Daemon {
        let mut cmd = Command::new(bin());
        cmd.arg("--config")
            .arg(self.config_path())
            .arg("--log-format")
            .arg("logfmt")
            .args(args);
        for (k, v) in env {
            cmd.env(k, v);
        }
        let mut d = Daemon::spawn(&mut cmd);
        if self.http {
            d.addr =
                Some(d.wait_log_field("webhook server listening", "addr", Duration::from_secs(20)));
        }
        d
    }
}

/// A running daemon.
pub struct Daemon {
    pub child: Child,
    pub log: Arc<Mutex<String>>,
    pub addr: Option<String>,
}

impl Drop for Daemon {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Daemon {
    /// Starts `cmd` (the farmhand binary, with its arguments), collecting
    /// its stderr as the log. The test runner's own `NOTIFY_SOCKET` and
    /// `JOURNAL_STREAM` are not passed on (those `cmd` sets are).
    pub fn spawn(cmd: &mut Command) -> Daemon {
        for var in ["NOTIFY_SOCKET", "JOURNAL_STREAM"] {
            if !cmd.get_envs().any(|(k, _)| k == var) {
                cmd.env_remove(var);
            }
        }
        let mut child = cmd
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap_or_else(|e| panic!("cannot start {cmd:?}: {e}"));
        let log = Arc::new(Mutex::new(String::new()));
        let stderr = child.stderr.take().unwrap();
        let l = log.clone();
        std::thread::spawn(move || {
            let mut r = BufReader::new(stderr);
            let mut line = String::new();
            while r.read_line(&mut line).unwrap_or(0) > 0 {
                l.lock().unwrap().push_str(&line);
                line.clear();
            }
        });
        Daemon {
            child,
            log,
            addr: None,
        }
    }

    pub fn pid(&self) -> i32 {
        self.child.id() as i32
    }

    /// Everything logged so far.
    pub fn logs(&self) -> String {
        self.log.lock().unwrap().clone()
    }

    /// Number of log lines containing `needle`.
    pub fn count(&self, needle: &str) -> usize {
        self.logs().lines().filter(|l| l.contains(needle)).count()
    }

    /// Waits until a log line contains `needle`; returns the line.
    pub fn wait_log(&self, needle: &str, timeout: Duration) -> String {
        wait_for(
            timeout,
            &format!(
                "log line containing {needle:?}; log so far:\n{}",
                self.logs()
            ),
            || {
                self.logs()
                    .lines()
                    .find(|l| l.contains(needle))
                    .map(str::to_string)
            },
        )
    }

    /// Waits until `n` log lines contain `needle`.
    pub fn wait_count(&self, needle: &str, n: usize, timeout: Duration) {
        wait_for(
            timeout,
            &format!("{n} log lines containing {needle:?}"),
            || (self.count(needle) >= n).then_some(()),
        );
    }

    /// Waits for a line containing `needle` and returns its `key=value`.
    pub fn wait_log_field(&self, needle: &str, key: &str, timeout: Duration) -> String {
        let line = self.wait_log(needle, timeout);
        field(&line, key).unwrap_or_else(|| panic!("no {key}= in {line}"))
    }

    /// Sends a signal.
    pub fn signal(&self, sig: &str) {
        let st = Command::new("kill")
            .arg(format!("-{sig}"))
            .arg(self.pid().to_string())
            .status()
            .unwrap();
        assert!(st.success());
    }

    /// Waits for exit; returns the exit code.
    pub fn wait_exit(&mut self, timeout: Duration) -> i32 {
        let start = Instant::now();
        loop {
            if let Some(st) = self.child.try_wait().unwrap() {
                return st.code().unwrap_or(-1);
            }
            if start.elapsed() > timeout {
                panic!(
                    "daemon did not exit within {timeout:?}; log:\n{}",
                    self.logs()
                );
            }
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    /// An HTTP request to the daemon.
    pub fn http(
        &self,
        method: &str,
        path: &str,
        headers: &[(&str, &str)],
        body: &[u8],
    ) -> HttpResponse {
        request(
            self.addr.as_deref().expect("daemon has HTTP"),
            method,
            path,
            headers,
            body,
        )
    }

    /// GET returning (status, body).
    pub fn get(&self, path: &str) -> HttpResponse {
        self.http("GET", path, &[], b"")
    }

    /// GET /status parsed.
    pub fn status(&self) -> serde_json::Value {
        let r = self.get("/status");
        assert_eq!(r.status, 200, "{}", r.text());
        serde_json::from_slice(&r.body).expect("status is JSON")
    }

    /// A correctly signed webhook.
    pub fn webhook(&self, event: &str, delivery: &str, body: &[u8], secret: &[u8]) -> HttpResponse {
        let sig = sign(secret, body);
        self.http(
            "POST",
            "/webhooks/github",
            &[
                ("X-GitHub-Event", event),
                ("X-GitHub-Delivery", delivery),
                ("X-Hub-Signature-256", &sig),
                ("Content-Type", "application/json"),
            ],
            body,
        )
    }
}

/// `name@version` of every package in `archive.json`, in index order.
pub fn archive_ids(farm: &Farm) -> Vec<String> {
    index_ids(&read_json(&farm.repo().join("index/archive.json")))
}

/// `name@version` of every package of an index document, in its order.
pub fn index_ids(doc: &serde_json::Value) -> Vec<String> {
    index_versions(doc)
        .into_iter()
        .map(|(name, version)| format!("{name}@{version}"))
        .collect()
}

/// `key=value` (or `key="quoted value"`) from a logfmt line.
pub fn field(line: &str, key: &str) -> Option<String> {
    let pat = format!(" {key}=");
    let i = line.find(&pat)? + pat.len();
    let rest = &line[i..];
    if let Some(q) = rest.strip_prefix('"') {
        let end = q.find('"')?;
        Some(q[..end].to_string())
    } else {
        Some(rest.split_whitespace().next().unwrap_or("").to_string())
    }
}

/// GitHub's `X-Hub-Signature-256` value.
pub fn sign(secret: &[u8], body: &[u8]) -> String {
    use hmac::{Hmac, Mac};
    let mut mac = Hmac::<sha2::Sha256>::new_from_slice(secret).unwrap();
    mac.update(body);
    format!("sha256={}", hex::encode(mac.finalize().into_bytes()))
}

/// A parsed HTTP response.
#[derive(Debug)]
pub struct HttpResponse {
    pub status: u16,
    pub headers: Vec<(String, String)>,
    pub body: Vec<u8>,
}

impl HttpResponse {
    pub fn text(&self) -> String {
        String::from_utf8_lossy(&self.body).into_owned()
    }
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(k, _)| k.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.as_str())
    }
}

/// One HTTP/1.1 request with `Connection: close`.
pub fn request(
    addr: &str,
    method: &str,
    path: &str,
    headers: &[(&str, &str)],
    body: &[u8],
) -> HttpResponse {
    let mut s = TcpStream::connect(addr).unwrap_or_else(|e| panic!("connect {addr}: {e}"));
    s.set_read_timeout(Some(Duration::from_secs(30))).unwrap();
    let mut req = format!(
        "{method} {path} HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\nContent-Length: {}\r\n",
        body.len()
    );
    for (k, v) in headers {
        req.push_str(&format!("{k}: {v}\r\n"));
    }
    req.push_str("\r\n");
    s.write_all(req.as_bytes()).unwrap();
    let _ = s.write_all(body);
    let mut raw = Vec::new();
    let _ = s.read_to_end(&mut raw);
    parse_response(&raw, method == "HEAD")
}

fn parse_response(raw: &[u8], head: bool) -> HttpResponse {
    let split = raw
        .windows(4)
        .position(|w| w == b"\r\n\r\n")
        .unwrap_or_else(|| panic!("no header end in {:?}", String::from_utf8_lossy(raw)));
    let head_text = String::from_utf8_lossy(&raw[..split]).into_owned();
    let mut lines = head_text.split("\r\n");
    let status: u16 = lines
        .next()
        .and_then(|l| l.split_whitespace().nth(1))
        .and_then(|c| c.parse().ok())
        .expect("status line");
    let headers: Vec<(String, String)> = lines
        .filter_map(|l| l.split_once(':'))
        .map(|(k, v)| (k.trim().to_string(), v.trim().to_string()))
        .collect();
    let mut body = raw[split + 4..].to_vec();
    let chunked = headers
        .iter()
        .any(|(k, v)| k.eq_ignore_ascii_case("transfer-encoding") && v.contains("chunked"));
    if chunked && !head {
        body = dechunk(&body);
    }
    HttpResponse {
        status,
        headers,
        body,
    }
}

/// Decodes a chunked body.
pub fn dechunk(mut b: &[u8]) -> Vec<u8> {
    let mut out = Vec::new();
    while let Some(eol) = b.windows(2).position(|w| w == b"\r\n") {
        let size =
            usize::from_str_radix(String::from_utf8_lossy(&b[..eol]).trim(), 16).unwrap_or(0);
        if size == 0 {
            break;
        }
        let start = eol + 2;
        if b.len() < start + size {
            out.extend_from_slice(&b[start..]);
            break;
        }
        out.extend_from_slice(&b[start..start + size]);
        b = &b[(start + size + 2).min(b.len())..];
    }
    out
}

/// sha256 of a file, hex.
pub fn sha256_file(p: &Path) -> String {
    use sha2::{Digest, Sha256};
    hex::encode(Sha256::digest(std::fs::read(p).unwrap()))
}

/// Reads a JSON file.
pub fn read_json(p: &Path) -> serde_json::Value {
    serde_json::from_slice(&std::fs::read(p).unwrap_or_else(|e| panic!("{}: {e}", p.display())))
        .unwrap()
}

/// Runs git in `dir` like [`git`], with author and committer dates at `epoch`.
pub fn git_at(dir: &Path, args: &[&str], epoch: i64) -> String {
    let date = format!("{epoch} +0000");
    let out = Command::new("git")
        .args(args)
        .current_dir(dir)
        .env("GIT_AUTHOR_NAME", "upstream")
        .env("GIT_AUTHOR_EMAIL", "upstream@example.org")
        .env("GIT_COMMITTER_NAME", "upstream")
        .env("GIT_COMMITTER_EMAIL", "upstream@example.org")
        .env("GIT_AUTHOR_DATE", &date)
        .env("GIT_COMMITTER_DATE", &date)
        .output()
        .expect("git runs");
    assert!(
        out.status.success(),
        "git {args:?} failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

impl Upstream {
    /// Commits a `VERSION` file at commit time `epoch` and tags it, so each
    /// tag has its own commit time.
    pub fn release_at(&self, tag: &str, epoch: i64) {
        std::fs::write(self.path.join("VERSION"), format!("{tag}\n")).unwrap();
        git_at(&self.path, &["add", "-A"], epoch);
        git_at(
            &self.path,
            &["commit", "-q", "-m", &format!("release {tag}")],
            epoch,
        );
        git_at(&self.path, &["tag", tag], epoch);
    }
}

impl Farm {
    /// Runs `farmhand --config config.toml <args>` with extra environment.
    pub fn run_env(&self, args: &[&str], env: &[(&str, &str)]) -> Output {
        let mut cmd = Command::new(bin());
        cmd.arg("--config")
            .arg(self.config_path())
            .arg("--log-format")
            .arg("logfmt")
            .args(args)
            .env_remove("NOTIFY_SOCKET")
            .env_remove("JOURNAL_STREAM");
        for (k, v) in env {
            cmd.env(k, v);
        }
        cmd.output().expect("farmhand runs")
    }

    /// Runs `farmhand --once`, asserts exit 0, returns the log (stderr).
    pub fn once_ok(&self) -> String {
        let out = self.run(&["--once"]);
        let log = String::from_utf8_lossy(&out.stderr).into_owned();
        assert_eq!(out.status.code(), Some(0), "--once failed:\n{log}");
        log
    }

    /// `state/repo/index/archive.json`, parsed.
    pub fn archive(&self) -> serde_json::Value {
        read_json(&self.repo().join("index/archive.json"))
    }

    /// `state/repo/index/active.json`, parsed.
    pub fn active(&self) -> serde_json::Value {
        read_json(&self.repo().join("index/active.json"))
    }
}

/// Log lines whose `msg` is exactly `msg`.
pub fn log_lines<'a>(log: &'a str, msg: &str) -> Vec<&'a str> {
    let pat = format!("msg=\"{msg}\"");
    log.lines().filter(|l| l.contains(&pat)).collect()
}

/// `(name, version)` of every package in an index document, in order.
pub fn index_versions(doc: &serde_json::Value) -> Vec<(String, String)> {
    doc["packages"]
        .as_array()
        .expect("packages is an array")
        .iter()
        .map(|p| {
            (
                p["name"].as_str().unwrap().to_string(),
                p["version"].as_str().unwrap().to_string(),
            )
        })
        .collect()
}

/// One entry of a package archive.
#[derive(Debug, Clone)]
pub struct TarEntry {
    pub path: String,
    pub kind: tar::EntryType,
    pub mode: u32,
    pub mtime: u64,
    pub uid: u64,
    pub gid: u64,
    pub uname: Vec<u8>,
    pub gname: Vec<u8>,
    pub link: Option<String>,
    pub data: Vec<u8>,
}

/// Decompresses and lists a `.tar.zst`, in archive order.
pub fn read_tar_zst(p: &Path) -> Vec<TarEntry> {
    let file = std::fs::File::open(p).unwrap_or_else(|e| panic!("{}: {e}", p.display()));
    let dec = zstd::stream::read::Decoder::new(file).unwrap();
    let mut ar = tar::Archive::new(dec);
    let mut out = Vec::new();
    for e in ar.entries().unwrap() {
        let mut e = e.unwrap();
        let h = e.header().clone();
        let mut data = Vec::new();
        e.read_to_end(&mut data).unwrap();
        out.push(TarEntry {
            path: String::from_utf8_lossy(&e.path_bytes()).into_owned(),
            kind: h.entry_type(),
            mode: h.mode().unwrap(),
            mtime: h.mtime().unwrap(),
            uid: h.uid().unwrap(),
            gid: h.gid().unwrap(),
            uname: h.username_bytes().unwrap_or_default().to_vec(),
            gname: h.groupname_bytes().unwrap_or_default().to_vec(),
            link: e
                .link_name_bytes()
                .map(|l| String::from_utf8_lossy(&l).into_owned()),
            data,
        });
    }
    out
}

/// The port of the TCP socket `child` listens on at 127.0.0.1, waiting
/// until it does. For servers told to listen on port 0: the kernel picks a
/// free port as the server binds it, so no other process can take it in
/// between (choosing a port in the test and handing it over could race with
/// every test running in parallel). The port is read from the kernel's
/// socket table (`/proc/<pid>/net/tcp`), matched with the child's own
/// descriptors. Panics if `child` exits first.
pub fn listening_port(child: &mut Child, what: &str) -> u16 {
    wait_for(
        Duration::from_secs(20),
        &format!("{what} to listen"),
        || {
            if let Ok(Some(st)) = child.try_wait() {
                panic!("{what} exited: {st}");
            }
            tcp_listen_port(child.id())
        },
    )
}

/// The local port of a listening IPv4 TCP socket held by process `pid`.
fn tcp_listen_port(pid: u32) -> Option<u16> {
    let sockets: Vec<String> = std::fs::read_dir(format!("/proc/{pid}/fd"))
        .ok()?
        .filter_map(|fd| std::fs::read_link(fd.ok()?.path()).ok())
        .filter_map(|link| {
            let link = link.to_str()?;
            Some(
                link.strip_prefix("socket:[")?
                    .strip_suffix(']')?
                    .to_string(),
            )
        })
        .collect();
    // `sl local_address rem_address st ... inode`, addresses as HEX:HEX,
    // state 0A = LISTEN.
    let table = std::fs::read_to_string(format!("/proc/{pid}/net/tcp")).ok()?;
    table.lines().skip(1).find_map(|line| {
        let f: Vec<&str> = line.split_whitespace().collect();
        let (local, state, inode) = (f.get(1)?, f.get(3)?, f.get(9)?);
        if *state != "0A" || !sockets.iter().any(|s| s == inode) {
            return None;
        }
        u16::from_str_radix(local.rsplit_once(':')?.1, 16).ok()
    })
}

/// `git daemon` serving every repository under `base` on 127.0.0.1, run
/// the way inetd runs it: the test holds the listening socket (bound to
/// port 0, so no other process can take the port) and hands each
/// connection to a `git daemon --inetd` of its own. When dropped, it stops
/// accepting and kills and reaps the servers still running.
pub struct GitDaemon {
    pub port: u16,
    stop: Arc<std::sync::atomic::AtomicBool>,
    thread: Option<std::thread::JoinHandle<()>>,
}

impl GitDaemon {
    /// Starts listening; connections wait in the socket's queue until the
    /// accepting thread takes them.
    pub fn start(base: &Path) -> GitDaemon {
        use std::os::fd::OwnedFd;
        use std::sync::atomic::{AtomicBool, Ordering};
        let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        listener.set_nonblocking(true).unwrap();
        let port = listener.local_addr().unwrap().port();
        // The server itself, not the `git` wrapper, which would leave it
        // running when killed.
        let server = PathBuf::from(git(base, &["--exec-path"]).trim()).join("git-daemon");
        let base = base.to_path_buf();
        let stop = Arc::new(AtomicBool::new(false));
        let stopped = stop.clone();
        let thread = std::thread::spawn(move || {
            let mut serving: Vec<Child> = Vec::new();
            while !stopped.load(Ordering::SeqCst) {
                match listener.accept() {
                    Ok((conn, _)) => {
                        conn.set_nonblocking(false).unwrap();
                        let out = conn.try_clone().unwrap();
                        let child = Command::new(&server)
                            .arg("--inetd")
                            .arg("--log-destination=none")
                            .arg(format!("--base-path={}", base.display()))
                            .arg("--export-all")
                            .arg(&base)
                            .stdin(Stdio::from(OwnedFd::from(conn)))
                            .stdout(Stdio::from(OwnedFd::from(out)))
                            .stderr(Stdio::null())
                            .spawn()
                            .expect("git daemon --inetd starts");
                        serving.push(child);
                    }
                    Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => {
                        std::thread::sleep(Duration::from_millis(10));
                    }
                    Err(e) => panic!("git daemon listener: {e}"),
                }
                serving.retain_mut(|c| !matches!(c.try_wait(), Ok(Some(_))));
            }
            for mut c in serving {
                let _ = c.kill();
                let _ = c.wait();
            }
        });
        GitDaemon {
            port,
            stop,
            thread: Some(thread),
        }
    }

    /// `git://127.0.0.1:<port>/<name>`.
    pub fn url(&self, name: &str) -> String {
        format!("git://127.0.0.1:{}/{name}", self.port)
    }
}

impl Drop for GitDaemon {
    fn drop(&mut self) {
        self.stop.store(true, std::sync::atomic::Ordering::SeqCst);
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

/// True while a process with this PID exists and is not a zombie.
pub fn pid_alive(pid: i32) -> bool {
    match std::fs::read_to_string(format!("/proc/{pid}/stat")) {
        Ok(stat) => {
            // The state follows the parenthesised command name.
            let state = stat
                .rsplit_once(')')
                .and_then(|(_, rest)| rest.split_whitespace().next())
                .unwrap_or("");
            state != "Z" && state != "X"
        }
        Err(_) => false,
    }
}

/// Every path under `root` (recursive, symlinks not followed).
pub fn walk_tree(root: &Path) -> Vec<PathBuf> {
    let mut out = Vec::new();
    let mut stack = vec![root.to_path_buf()];
    while let Some(d) = stack.pop() {
        let Ok(rd) = std::fs::read_dir(&d) else {
            continue;
        };
        for e in rd.flatten() {
            let p = e.path();
            if e.file_type().is_ok_and(|t| t.is_dir()) {
                stack.push(p.clone());
            }
            out.push(p);
        }
    }
    out
}

// ---- Helpers for the daemon-mode tests (webhooks, http, daemon) ----

/// A build-script fragment that blocks until `path` exists (at most 60 s).
pub fn wait_file_sh(path: &Path) -> String {
    format!(
        "i=0; while [ ! -e '{}' ] && [ $i -lt 1200 ]; do sleep 0.05; i=$((i+1)); done\n",
        path.display()
    )
}

/// A GitHub `push` payload for the tag `tag` of the repository at `url`.
pub fn push_payload(url: &str, tag: &str) -> Vec<u8> {
    serde_json::to_vec(&serde_json::json!({
        "ref": format!("refs/tags/{tag}"),
        "repository": {"full_name": "upstream/repo", "clone_url": url, "html_url": url},
    }))
    .unwrap()
}

/// A GitHub `create` payload for the tag `tag` of the repository at `url`.
pub fn create_payload(url: &str, tag: &str) -> Vec<u8> {
    serde_json::to_vec(&serde_json::json!({
        "ref": tag,
        "ref_type": "tag",
        "repository": {"full_name": "upstream/repo", "clone_url": url, "html_url": url},
    }))
    .unwrap()
}

/// Resident memory of a process in KiB (`VmRSS` of /proc/<pid>/status).
pub fn vm_rss_kib(pid: i32) -> u64 {
    proc_status_kib(pid, "VmRSS:")
}

/// A `... kB` line of /proc/<pid>/status, in KiB.
pub fn proc_status_kib(pid: i32, key: &str) -> u64 {
    let s = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap();
    s.lines()
        .find_map(|l| l.strip_prefix(key))
        .and_then(|v| v.split_whitespace().next())
        .and_then(|v| v.parse().ok())
        .unwrap_or_else(|| panic!("no {key} in /proc/{pid}/status"))
}

/// Starts the real binary with `args` (stderr captured like
/// [`Farm::start`]); waits for its HTTP server when `http`.
pub fn spawn_daemon(args: &[&str], cwd: &Path, http: bool) -> Daemon {
    let mut d = Daemon::spawn(Command::new(bin()).args(args).current_dir(cwd));
    if http {
        d.addr =
            Some(d.wait_log_field("webhook server listening", "addr", Duration::from_secs(20)));
    }
    d
}

/// True when the logfmt `line` is the event `msg` with every `key=value` of `fields`.
pub fn is_event(line: &str, msg: &str, fields: &[(&str, &str)]) -> bool {
    field(line, "msg").as_deref() == Some(msg)
        && fields
            .iter()
            .all(|(k, v)| field(line, k).as_deref() == Some(*v))
}

impl Daemon {
    /// Log lines of the event `msg` carrying every `key=value` of `fields`.
    pub fn events(&self, msg: &str, fields: &[(&str, &str)]) -> Vec<String> {
        self.logs()
            .lines()
            .filter(|l| is_event(l, msg, fields))
            .map(str::to_string)
            .collect()
    }

    /// Waits for `n` events `msg` with `fields`; returns the last one.
    pub fn wait_events(
        &self,
        msg: &str,
        fields: &[(&str, &str)],
        n: usize,
        timeout: Duration,
    ) -> String {
        wait_for(
            timeout,
            &format!("{n} x {msg:?} {fields:?}; log so far:\n{}", self.logs()),
            || {
                let ev = self.events(msg, fields);
                (ev.len() >= n).then(|| ev[n - 1].clone())
            },
        )
    }

    /// Waits for the event `msg` with `fields`; returns its line.
    pub fn wait_event(&self, msg: &str, fields: &[(&str, &str)], timeout: Duration) -> String {
        self.wait_events(msg, fields, 1, timeout)
    }

    /// The value of one series of `/metrics`, e.g.
    /// `farmhand_webhooks_total{forge="github",result="pong"}`.
    pub fn metric(&self, series: &str) -> Option<f64> {
        let r = self.get("/metrics");
        assert_eq!(r.status, 200);
        r.text().lines().find_map(|l| {
            let (k, v) = l.rsplit_once(' ')?;
            (k == series).then(|| v.parse().ok())?
        })
    }

    /// Waits until `/status` satisfies `pred`; returns that document.
    pub fn wait_status(
        &self,
        timeout: Duration,
        what: &str,
        mut pred: impl FnMut(&serde_json::Value) -> bool,
    ) -> serde_json::Value {
        let start = Instant::now();
        loop {
            let s = self.status();
            if pred(&s) {
                return s;
            }
            if start.elapsed() > timeout {
                panic!(
                    "timed out after {timeout:?} waiting for /status: {what}\nlast: {s:#}\nlog:\n{}",
                    self.logs()
                );
            }
            std::thread::sleep(Duration::from_millis(20));
        }
    }
}

/// Reads one HTTP response from `s`: headers, then a `Content-Length` or
/// chunked body, or up to EOF. Reads nothing past a response whose length
/// is known, so pipelined responses can be read one after the other.
pub fn read_response(s: &mut TcpStream, head: bool) -> std::io::Result<HttpResponse> {
    let mut raw = Vec::new();
    let mut byte = [0u8; 1];
    while !raw.ends_with(b"\r\n\r\n") {
        if s.read(&mut byte)? == 0 {
            if raw.is_empty() {
                return Err(std::io::Error::new(
                    std::io::ErrorKind::UnexpectedEof,
                    "closed without a response",
                ));
            }
            return Ok(parse_response(&raw, head));
        }
        raw.push(byte[0]);
    }
    if head {
        return Ok(parse_response(&raw, true));
    }
    let head_text = String::from_utf8_lossy(&raw).to_ascii_lowercase();
    let len = head_text
        .lines()
        .find_map(|l| l.strip_prefix("content-length:"))
        .and_then(|v| v.trim().parse::<usize>().ok());
    let chunked = head_text.contains("transfer-encoding: chunked");
    let header_end = raw.len();
    let mut buf = [0u8; 65536];
    loop {
        let body = &raw[header_end..];
        if len.is_some_and(|n| body.len() >= n) || (chunked && body.ends_with(b"0\r\n\r\n")) {
            break;
        }
        let want = match len {
            Some(n) => (n - body.len()).min(buf.len()),
            None if chunked => 1,
            None => buf.len(),
        };
        let n = s.read(&mut buf[..want])?;
        if n == 0 {
            break;
        }
        raw.extend_from_slice(&buf[..n]);
    }
    Ok(parse_response(&raw, false))
}

/// Sends `head` (request line and headers, ending in a blank line), lets
/// `body` write the rest from another thread (its write errors are the
/// server hanging up, and are ignored), and reads the response.
pub fn exchange(
    addr: &str,
    head: &str,
    body: impl FnOnce(&mut TcpStream) + Send + 'static,
) -> HttpResponse {
    let mut s = TcpStream::connect(addr).unwrap_or_else(|e| panic!("connect {addr}: {e}"));
    s.set_read_timeout(Some(Duration::from_secs(30))).unwrap();
    s.set_write_timeout(Some(Duration::from_secs(30))).unwrap();
    s.write_all(head.as_bytes()).unwrap();
    let mut w = s.try_clone().unwrap();
    let writer = std::thread::spawn(move || body(&mut w));
    let r = read_response(&mut s, false).expect("a response");
    let _ = s.shutdown(std::net::Shutdown::Both);
    let _ = writer.join();
    r
}

/// Writes `total` bytes of `fill` in chunked transfer encoding, then the
/// last chunk; stops at the first write error.
pub fn write_chunked(s: &mut TcpStream, total: usize, fill: u8) {
    let chunk = vec![fill; 64 * 1024];
    let mut sent = 0;
    while sent < total {
        let n = chunk.len().min(total - sent);
        let mut frame = format!("{n:x}\r\n").into_bytes();
        frame.extend_from_slice(&chunk[..n]);
        frame.extend_from_slice(b"\r\n");
        if s.write_all(&frame).is_err() {
            return;
        }
        sent += n;
    }
    let _ = s.write_all(b"0\r\n\r\n");
}

/// Writes `total` bytes of `fill`; stops at the first write error.
pub fn write_plain(s: &mut TcpStream, total: usize, fill: u8) {
    let chunk = vec![fill; 64 * 1024];
    let mut sent = 0;
    while sent < total {
        let n = chunk.len().min(total - sent);
        if s.write_all(&chunk[..n]).is_err() {
            return;
        }
        sent += n;
    }
}

// ---- Helpers for the fault-injection and load tests ----

/// A size-limited tmpfs mounted over `path` (created if missing) for the
/// life of the value; lazily unmounted when dropped. Needs root (the tests
/// run as root here and in CI).
pub struct Tmpfs {
    pub path: PathBuf,
}

impl Tmpfs {
    /// `mount -t tmpfs -o size=<size> tmpfs <path>`; panics naming the
    /// reason when mounting is not permitted.
    pub fn mount(path: &Path, size: &str) -> Tmpfs {
        std::fs::create_dir_all(path).unwrap();
        let out = Command::new("mount")
            .args([
                "-t",
                "tmpfs",
                "-o",
                &format!("size={size},mode=0755"),
                "tmpfs",
            ])
            .arg(path)
            .output()
            .expect("mount runs");
        assert!(
            out.status.success(),
            "mount -t tmpfs on {} failed (these tests need root): {}",
            path.display(),
            String::from_utf8_lossy(&out.stderr)
        );
        Tmpfs {
            path: path.to_path_buf(),
        }
    }

    /// Writes `path` until the filesystem is full; returns the bytes written.
    pub fn fill(path: &Path) -> u64 {
        let mut f = std::fs::File::create(path).unwrap();
        let chunk = vec![0x5au8; 64 * 1024];
        let mut n = 0u64;
        loop {
            match f.write(&chunk) {
                Ok(0) | Err(_) => break,
                Ok(k) => n += k as u64,
            }
        }
        n
    }
}

impl Drop for Tmpfs {
    fn drop(&mut self) {
        let _ = Command::new("umount").arg("-l").arg(&self.path).status();
    }
}

/// Incompressible bytes (xorshift), so a package of them is as large as they are.
pub fn noise(len: usize, seed: u64) -> Vec<u8> {
    let mut x = seed | 1;
    let mut out = Vec::with_capacity(len + 8);
    while out.len() < len {
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        out.extend_from_slice(&x.to_le_bytes());
    }
    out.truncate(len);
    out
}

/// A TCP server on 127.0.0.1 that accepts connections and never answers
/// (a hung upstream); holds them until dropped.
pub struct HangServer {
    pub port: u16,
    pub accepted: Arc<std::sync::atomic::AtomicUsize>,
    stop: Arc<std::sync::atomic::AtomicBool>,
    thread: Option<std::thread::JoinHandle<()>>,
}

impl HangServer {
    pub fn start() -> HangServer {
        use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
        let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        l.set_nonblocking(true).unwrap();
        let port = l.local_addr().unwrap().port();
        let accepted = Arc::new(AtomicUsize::new(0));
        let stop = Arc::new(AtomicBool::new(false));
        let (a, s) = (accepted.clone(), stop.clone());
        let thread = std::thread::spawn(move || {
            let mut held = Vec::new();
            while !s.load(Ordering::SeqCst) {
                match l.accept() {
                    Ok((c, _)) => {
                        a.fetch_add(1, Ordering::SeqCst);
                        held.push(c);
                    }
                    Err(_) => std::thread::sleep(Duration::from_millis(10)),
                }
            }
        });
        HangServer {
            port,
            accepted,
            stop,
            thread: Some(thread),
        }
    }

    /// `git://127.0.0.1:<port>/<name>`.
    pub fn url(&self, name: &str) -> String {
        format!("git://127.0.0.1:{}/{name}", self.port)
    }

    pub fn accepted(&self) -> usize {
        self.accepted.load(std::sync::atomic::Ordering::SeqCst)
    }
}

impl Drop for HangServer {
    fn drop(&mut self) {
        self.stop.store(true, std::sync::atomic::Ordering::SeqCst);
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

impl Daemon {
    /// `GET /builds` parsed (newest first).
    pub fn builds(&self) -> Vec<serde_json::Value> {
        let r = self.get("/builds");
        assert_eq!(r.status, 200, "{}", r.text());
        serde_json::from_slice::<serde_json::Value>(&r.body)
            .expect("/builds is JSON")
            .as_array()
            .cloned()
            .expect("/builds is an array")
    }

    /// Asserts `/healthz` answers `200 ok`.
    pub fn assert_healthy(&self) {
        let r = self.get("/healthz");
        assert_eq!(
            r.status,
            200,
            "healthz: {}; log:\n{}",
            r.text(),
            self.logs()
        );
    }
}

/// Seconds since the epoch of an RFC 3339 UTC timestamp (`...Z`).
pub fn rfc3339_secs(s: &str) -> u64 {
    humantime::parse_rfc3339(s)
        .unwrap_or_else(|e| panic!("{s:?}: {e}"))
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs()
}

/// The `.deb` cargo-deb makes of the binary this test run built
/// (target/debug, stripped, as the release build would be; no second
/// compilation). Built once per test run and shared: two cargo-deb runs at
/// once would strip into the same temporary file under target/debian.
pub fn debian_package() -> PathBuf {
    static DEB: std::sync::Mutex<Option<PathBuf>> = std::sync::Mutex::new(None);
    let mut deb = DEB
        .lock()
        .unwrap_or_else(std::sync::PoisonError::into_inner);
    if let Some(p) = deb.as_ref() {
        return p.clone();
    }
    let out = PathBuf::from(env!("CARGO_TARGET_TMPDIR")).join("debian-package");
    let _ = std::fs::remove_dir_all(&out);
    std::fs::create_dir_all(&out).unwrap();
    let cargo = std::env::var("CARGO").unwrap_or_else(|_| "cargo".into());
    let run = Command::new(&cargo)
        .args([
            "deb",
            "--no-build",
            "--profile",
            "dev",
            "--strip",
            "--fast",
            "--locked",
            "--offline",
            "--quiet",
            "--output",
        ])
        .arg(&out)
        .current_dir(env!("CARGO_MANIFEST_DIR"))
        .output()
        .unwrap_or_else(|e| panic!("cannot run {cargo} deb: {e}"));
    assert!(
        run.status.success(),
        "cargo deb failed ({}):\n{}\n{}",
        run.status,
        String::from_utf8_lossy(&run.stdout),
        String::from_utf8_lossy(&run.stderr)
    );
    let p = std::fs::read_dir(&out)
        .unwrap()
        .map(|e| e.unwrap().path())
        .find(|p| p.extension().is_some_and(|e| e == "deb"))
        .expect("a .deb was written");
    *deb = Some(p.clone());
    p
}

/// A build log's text: `<version>.<n>.log.zst` (finished builds) is
/// decompressed, a plain `.log` (a running build) read as it is.
pub fn read_build_log(p: &Path) -> String {
    let bytes = std::fs::read(p).unwrap_or_else(|e| panic!("{}: {e}", p.display()));
    let text = if p.to_string_lossy().ends_with(".zst") {
        zstd::decode_all(&bytes[..]).unwrap_or_else(|e| panic!("{}: {e}", p.display()))
    } else {
        bytes
    };
    String::from_utf8_lossy(&text).into_owned()
}
