//! Proof under a real systemd (DESIGN.md section 17): the host's own OS,
//! booted in a `systemd-nspawn` container with systemd as PID 1, installs
//! the `.deb` this test run built (maintainer scripts, sysusers and
//! tmpfiles run for real) and drives the shipped unit with `systemctl`:
//! readiness, a real C build under the unit's sandbox and bubblewrap, a
//! build that tries to reach the farm, the watchdog, reload, stop during a
//! build, the journal, socket activation and package removal.
//!
//! The install, first-run and migration docs are run as written: the shell
//! blocks of docs/installation.md and docs/migrating.md marked with
//! `<!-- test: NAME -->` on the line before them run verbatim inside the
//! container, as root, in a clean environment (`sh -e -x`: a failing
//! command fails its step). Where the prose asks for an edit (the config),
//! the test makes that edit. Two things stand in for what cannot run
//! verbatim: the install block runs in a directory holding
//! `target/debian/<the .deb>` (the source root it expects), and a block
//! that ends following the journal (`journalctl -f`) is ended after a few
//! seconds (`timeout`). Editing a step of those pages so that it no longer
//! works fails the test. The migration ([`migrating`]) boots a container
//! of its own.
//!
//! The container boots from a bind mount of `/` with `--volatile=overlay`:
//! every change (the package, the config, the state) lands in a tmpfs that
//! is gone when the container powers off, and the host is left as it was.
//! Files go in through `/proc/<container PID 1>/root`, commands run through
//! `nsenter`.
//!
//! Needs root, systemd-nspawn (Debian: systemd-container), nsenter and
//! unshare (util-linux), dpkg, cargo-deb, and apt, curl, openssl, make,
//! cc, git and ps for use inside the container. Without them the test
//! prints why and passes, except with `CI=true`, where it fails.
//!
//! By hand: `cargo test --test integration real_systemd -- --nocapture`.

mod migrating;

use crate::util::{debian_package, read_tar_zst, sha256_file};
use ed25519_dalek::{Signature, SigningKey, Verifier, VerifyingKey};
use serde_json::Value;
use std::collections::{BTreeMap, BTreeSet};
use std::fs;
use std::io::Read;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::time::{Duration, Instant};

/// `[manager].id`: names the public key file.
const FARM_ID: &str = "nspawn-farm";
/// The signing key and the webhook secret, as the first-run steps make
/// them.
const KEY_FILE: &str = "/etc/farmhand/farm.ed25519";
const SECRET_FILE: &str = "/etc/farmhand/webhook-secret";
/// `[http].addr`, the shipped farmhand.socket's `ListenStream=` (check 7
/// reaches the daemon at the same address either way).
const ADDR: &str = "127.0.0.1:8080";
/// The local upstream, owned by the farmhand user (git refuses
/// repositories of other owners).
const UPSTREAM: &str = "/var/lib/farmhand-upstream/hello";
/// The published package of the hello recipe.
const HELLO_VERSION: &str = "1.0.0-1";
/// The command line of the sleeping build step (check 5).
const SLOW_STEP: &str = "sleep 297";
/// Environment of every command run in the container.
const PATH_ENV: &str = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin";

/// How long a block that ends with `journalctl -f` runs before the test
/// ends it.
const FOLLOW: Duration = Duration::from_secs(3);

const HELLO_BUILD: &str = "#!/bin/sh\nset -eu\nmake\nmake install DESTDIR=\"$DESTDIR\"\n";
const BROKEN_BUILD: &str = "#!/bin/sh\necho 'this build fails on purpose' >&2\nexit 1\n";
const SLOW_BUILD: &str = "#!/bin/sh\nexec make slow\n";

fn recipe_toml(description: &str, webhook: bool) -> String {
    format!(
        "[meta]\nlicense = \"MIT\"\ndescription = \"{description}\"\n\n\
         [upstream]\ngit = \"{UPSTREAM}\"\ntag_pattern = '^v(\\d+\\.\\d+\\.\\d+)$'\n\n\
         [watch]\ngithub_webhook = {webhook}\n"
    )
}

/// Why this machine cannot run the test, if it cannot.
fn missing_prerequisite() -> Option<String> {
    let status = fs::read_to_string("/proc/self/status").unwrap_or_default();
    let euid = status
        .lines()
        .find_map(|l| l.strip_prefix("Uid:"))
        .and_then(|l| l.split_whitespace().nth(1));
    if euid != Some("0") {
        return Some("not running as root (mount --bind and systemd-nspawn need it)".into());
    }
    let runs = |cmd: &mut Command| {
        cmd.stdout(Stdio::null())
            .stderr(Stdio::null())
            .status()
            .is_ok_and(|s| s.success())
    };
    for (tool, package) in [
        ("systemd-nspawn", "systemd-container"),
        ("nsenter", "util-linux"),
        ("unshare", "util-linux"),
        ("dpkg", "dpkg"),
        // Run inside the container, which boots the host's own programs.
        ("apt", "apt"),
        ("curl", "curl"),
        ("make", "make"),
        ("cc", "gcc"),
        ("git", "git"),
        ("ps", "procps"),
    ] {
        if !runs(Command::new(tool).arg("--version")) {
            return Some(format!("{tool} not found (Debian package {package})"));
        }
    }
    if !runs(Command::new("openssl").arg("version")) {
        return Some("openssl not found (Debian package openssl)".into());
    }
    if !["/lib/systemd/systemd", "/usr/lib/systemd/systemd"]
        .iter()
        .any(|p| Path::new(p).exists())
    {
        return Some("the host OS has no systemd to boot in a container".into());
    }
    if !runs(Command::new("unshare").args(["--mount", "--pid", "--fork", "true"])) {
        return Some(
            "cannot create namespaces (`unshare --mount --pid --fork true` failed)".into(),
        );
    }
    let cargo = std::env::var("CARGO").unwrap_or_else(|_| "cargo".into());
    if !runs(Command::new(cargo).args(["deb", "--version"])) {
        return Some("cargo-deb not installed (cargo install --locked cargo-deb)".into());
    }
    None
}

/// Units the host image would start at boot that the test does not need:
/// every unit the host's administrator enabled (`/etc/systemd/system/
/// *.wants`), every timer, and a few known services; never farmhand's own.
fn units_to_mask() -> Vec<String> {
    let mut units: BTreeSet<String> = [
        "prometheus.service",
        "prometheus-node-exporter.service",
        "postgresql.service",
        "runit.service",
        "git-daemon.service",
        "cron.service",
        "ssh.service",
        "getty@tty1.service",
        "console-getty.service",
        "systemd-timesyncd.service",
        "systemd-pstore.service",
        "e2scrub_reap.service",
    ]
    .iter()
    .map(ToString::to_string)
    .collect();
    for base in [
        "/etc/systemd/system",
        "/lib/systemd/system",
        "/usr/lib/systemd/system",
    ] {
        let Ok(dirs) = fs::read_dir(base) else {
            continue;
        };
        for d in dirs.flatten() {
            if !d.file_name().to_string_lossy().ends_with(".wants") {
                continue;
            }
            for u in fs::read_dir(d.path()).into_iter().flatten().flatten() {
                let name = u.file_name().to_string_lossy().into_owned();
                if base == "/etc/systemd/system" || name.ends_with(".timer") {
                    units.insert(name);
                }
            }
        }
    }
    units.retain(|u| !u.starts_with("farmhand"));
    units.into_iter().collect()
}

/// Passes, printing `ok`, or fails naming the check, what is wrong and the
/// evidence.
fn check(name: &str, problems: &[String], evidence: impl FnOnce() -> String) {
    if problems.is_empty() {
        eprintln!("real_systemd: ok   {name}");
        return;
    }
    panic!(
        "real_systemd: check \"{name}\" failed:\n  - {}\n\n{}",
        problems.join("\n  - "),
        evidence()
    );
}

/// Calls `f` every 100 ms until it returns `Some` or `timeout` passes.
fn poll<T>(timeout: Duration, mut f: impl FnMut() -> Option<T>) -> Option<T> {
    let start = Instant::now();
    loop {
        if let Some(v) = f() {
            return Some(v);
        }
        if start.elapsed() > timeout {
            return None;
        }
        std::thread::sleep(Duration::from_millis(100));
    }
}

fn text(b: &[u8]) -> String {
    String::from_utf8_lossy(b).into_owned()
}

/// Unit properties from `systemctl show`; a missing one reads as "".
#[derive(Debug)]
struct Props(BTreeMap<String, String>);

impl std::ops::Index<&str> for Props {
    type Output = String;
    fn index(&self, key: &str) -> &String {
        static NONE: String = String::new();
        self.0.get(key).unwrap_or(&NONE)
    }
}

/// A string field of a journal entry ("" when absent).
fn field<'a>(e: &'a Value, k: &str) -> &'a str {
    e.get(k).and_then(Value::as_str).unwrap_or("")
}

/// The shell block of `docs/<page>` marked `<!-- test: NAME -->` on a line
/// of its own before it: the indented or fenced code block that follows,
/// with its indentation removed. Panics, naming the page and the marker,
/// when there is not exactly one such marker with a code block after it.
fn doc_block(page: &str, name: &str) -> String {
    let path = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("docs")
        .join(page);
    let doc = fs::read_to_string(&path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
    let marker = format!("<!-- test: {name} -->");
    let lines: Vec<&str> = doc.lines().collect();
    let at: Vec<usize> = (0..lines.len())
        .filter(|&i| lines[i].trim() == marker)
        .collect();
    let [at] = at[..] else {
        panic!(
            "docs/{page} has {} lines `{marker}`; the real_systemd test runs the block after it",
            at.len()
        );
    };
    let indent = |l: &str| l.len() - l.trim_start().len();
    let mut rest = lines[at + 1..]
        .iter()
        .copied()
        .skip_while(|l| l.trim().is_empty())
        .peekable();
    let first = *rest
        .peek()
        .unwrap_or_else(|| panic!("docs/{page}: nothing after `{marker}`"));
    let mut block = Vec::new();
    if first.trim_start().starts_with("```") {
        let strip = indent(first);
        for l in rest.skip(1) {
            if l.trim_start().starts_with("```") {
                return block.join("\n") + "\n";
            }
            block.push(l.get(strip.min(indent(l))..).unwrap_or(""));
        }
        panic!("docs/{page}: the fenced block after `{marker}` does not end");
    }
    let strip = indent(first);
    assert!(
        strip >= indent(lines[at]) + 4,
        "docs/{page}: `{marker}` is not followed by a code block but by {first:?}"
    );
    for l in rest {
        if !l.trim().is_empty() && indent(l) < strip {
            break;
        }
        block.push(l.get(strip..).unwrap_or(""));
    }
    while block.last().is_some_and(|l| l.trim().is_empty()) {
        block.pop();
    }
    block.join("\n") + "\n"
}

/// What a doc block did when run.
struct BlockRun {
    /// `docs/PAGE` and the marker's name.
    name: String,
    script: String,
    /// Its exit status; 124 when it was ended after following the journal.
    status: Option<i32>,
    /// Standard output and error together, with `sh -x`'s trace of each
    /// command.
    output: String,
}

impl BlockRun {
    /// What its `journalctl -f` printed (after `sh -x`'s trace of it).
    fn followed(&self) -> &str {
        self.output.split("+ journalctl").nth(1).map_or("", |rest| {
            rest.split_once('\n').map_or("", |(_, printed)| printed)
        })
    }

    /// Whether what `journalctl -f` printed names the fields it shows
    /// (`NAME=value` lines) and has all of `names` among them.
    fn follows_fields(&self, names: &[&str]) -> bool {
        names.iter().all(|n| {
            self.followed()
                .lines()
                .any(|l| l.trim_start().starts_with(&format!("{n}=")))
        })
    }

    /// Why the block did not do what the docs promise: exit 0, or, for a
    /// block whose last command follows the journal, run until ended.
    fn problem(&self, follow: bool) -> Option<String> {
        let want = if follow { 124 } else { 0 };
        (self.status != Some(want)).then(|| {
            let how = if follow {
                "did not reach its last command (journalctl -f)"
            } else {
                "failed"
            };
            format!(
                "the block of {} {how}: exit {:?}\n--- the block\n{}--- its output\n{}",
                self.name, self.status, self.script, self.output
            )
        })
    }
}

/// A booted container; powered off and unmounted when dropped, whatever
/// the outcome of the test.
struct Container {
    /// The temporary directory holding `root` and `nspawn.log`.
    dir: PathBuf,
    /// The bind mount of `/` the container boots from.
    root: PathBuf,
    mounted: bool,
    nspawn: Option<Child>,
    /// Host PID of the container's PID 1 (systemd).
    leader: i32,
}

impl Container {
    fn boot(masks: &[String]) -> Container {
        let dir = tempfile::Builder::new()
            .prefix("farmhand-nspawn-")
            .tempdir()
            .unwrap()
            .keep();
        let root = dir.join("root");
        fs::create_dir(&root).unwrap();
        let mut c = Container {
            dir,
            root,
            mounted: false,
            nspawn: None,
            leader: 0,
        };
        // systemd-nspawn refuses --directory=/; a (non-recursive) bind
        // mount of / is the same tree under another name.
        let out = Command::new("mount")
            .arg("--bind")
            .arg("/")
            .arg(&c.root)
            .output()
            .unwrap();
        assert!(
            out.status.success(),
            "mount --bind / {}: {}",
            c.root.display(),
            text(&out.stderr)
        );
        c.mounted = true;
        let log = fs::File::create(c.dir.join("nspawn.log")).unwrap();
        // --register=no --keep-unit --link-journal=no --console=pipe: no
        // system bus, machined or terminal needed on the host. Arguments
        // after the options go to the container's systemd, which reads
        // them as its kernel command line (systemd.mask=).
        let child = Command::new("systemd-nspawn")
            .arg(format!("--directory={}", c.root.display()))
            .args([
                "--volatile=overlay",
                "--boot",
                "--private-network",
                "--register=no",
                "--keep-unit",
                "--link-journal=no",
                "--console=pipe",
            ])
            .args(masks.iter().map(|u| format!("systemd.mask={u}")))
            .stdin(Stdio::null())
            .stdout(log.try_clone().unwrap())
            .stderr(log)
            .spawn()
            .expect("systemd-nspawn starts");
        let nspawn_pid = child.id();
        c.nspawn = Some(child);

        let leader = poll(Duration::from_secs(30), || {
            let children =
                fs::read_to_string(format!("/proc/{nspawn_pid}/task/{nspawn_pid}/children"))
                    .unwrap_or_default();
            children.split_whitespace().find_map(|p| {
                let comm = fs::read_to_string(format!("/proc/{p}/comm")).unwrap_or_default();
                (comm.trim() == "systemd").then(|| p.parse::<i32>().unwrap())
            })
        });
        c.leader = leader.unwrap_or_else(|| {
            panic!(
                "the container's systemd did not start within 30 s\n{}",
                c.nspawn_log()
            )
        });
        let state = poll(Duration::from_secs(60), || {
            let s = text(&c.sh("systemctl is-system-running").stdout);
            let s = s.trim().to_string();
            matches!(s.as_str(), "running" | "degraded").then_some(s)
        });
        let Some(state) = state else {
            panic!(
                "the container did not finish booting within 60 s\n{}\n{}",
                c.sh_text("systemctl is-system-running; systemctl list-jobs --no-pager"),
                c.nspawn_log()
            )
        };
        if state == "degraded" {
            eprintln!(
                "real_systemd: the container booted degraded:\n{}",
                c.sh_text("systemctl --failed --no-pager")
            );
        }
        c
    }

    fn nspawn_log(&self) -> String {
        let log = fs::read_to_string(self.dir.join("nspawn.log")).unwrap_or_default();
        format!("--- systemd-nspawn output\n{log}")
    }

    /// Runs `script` with /bin/sh inside the container, in a clean
    /// environment.
    fn sh(&self, script: &str) -> Output {
        self.sh_command(script)
            .stdin(Stdio::null())
            .output()
            .expect("nsenter runs")
    }

    fn sh_command(&self, script: &str) -> Command {
        self.command(&["/bin/sh", "-c", script])
    }

    /// `argv` inside the container, as root, in a clean environment.
    fn command(&self, argv: &[&str]) -> Command {
        let mut cmd = Command::new("nsenter");
        cmd.arg("-t")
            .arg(self.leader.to_string())
            .args(["-a", "--", "/usr/bin/env", "-i"])
            .arg(format!("PATH={PATH_ENV}"))
            .args([
                "HOME=/root",
                "LC_ALL=C",
                "DEBIAN_FRONTEND=noninteractive",
                "SYSTEMD_PAGER=",
                "SYSTEMD_COLORS=0",
            ])
            .args(argv);
        cmd
    }

    /// Standard output and error of `script`, together.
    fn sh_text(&self, script: &str) -> String {
        let o = self.sh(&format!("{{ {script}\n}} 2>&1"));
        text(&o.stdout)
    }

    /// Runs `script`; panics with its output and the farm's state unless it
    /// succeeds.
    fn sh_ok(&self, script: &str) -> String {
        let o = self.sh(script);
        if !o.status.success() {
            panic!(
                "in the container, `{script}` failed ({}):\n{}{}\n\n{}",
                o.status,
                text(&o.stdout),
                text(&o.stderr),
                self.evidence()
            );
        }
        text(&o.stdout)
    }

    /// A path inside the container, as seen from the host.
    fn path(&self, p: &str) -> PathBuf {
        PathBuf::from(format!("/proc/{}/root{p}", self.leader))
    }

    fn write(&self, p: &str, contents: impl AsRef<[u8]>, mode: u32) {
        let path = self.path(p);
        fs::create_dir_all(path.parent().unwrap()).unwrap();
        fs::write(&path, contents).unwrap();
        fs::set_permissions(&path, fs::Permissions::from_mode(mode)).unwrap();
    }

    /// `systemctl show UNIT -p ...`.
    fn show(&self, unit: &str, props: &[&str]) -> Props {
        let out = self.sh(&format!("systemctl show {unit} -p {}", props.join(",")));
        Props(
            text(&out.stdout)
                .lines()
                .filter_map(|l| l.split_once('='))
                .map(|(k, v)| (k.to_string(), v.to_string()))
                .collect(),
        )
    }

    fn prop(&self, unit: &str, prop: &str) -> String {
        self.show(unit, &[prop])[prop].clone()
    }

    fn main_pid(&self) -> String {
        self.prop("farmhand", "MainPID")
    }

    /// `journalctl -u farmhand -o json` with extra arguments (field
    /// matches), one JSON object per entry.
    fn journal(&self, args: &str) -> Vec<Value> {
        let out = self.sh(&format!("journalctl -u farmhand -o json --no-pager {args}"));
        text(&out.stdout)
            .lines()
            .filter_map(|l| serde_json::from_str(l).ok())
            .collect()
    }

    /// farmhand's events with message `msg` from the process `pid` (any
    /// process when empty) whose fields include `fields`.
    fn events(&self, msg: &str, pid: &str, fields: &[(&str, &str)]) -> Vec<Value> {
        self.journal("")
            .into_iter()
            .filter(|e| field(e, "MESSAGE") == msg)
            .filter(|e| pid.is_empty() || field(e, "_PID") == pid)
            .filter(|e| fields.iter().all(|(k, v)| field(e, k) == *v))
            .collect()
    }

    /// The last `n` journal entries of the unit, one line each: PID,
    /// priority, message and the event's own fields.
    fn journal_excerpt(&self, n: usize) -> String {
        const PLUMBING: &[&str] = &[
            "MESSAGE",
            "PRIORITY",
            "SYSLOG_IDENTIFIER",
            "SYSLOG_FACILITY",
            "SYSLOG_PID",
            "SYSLOG_TIMESTAMP",
            "CODE_FILE",
            "CODE_LINE",
            "CODE_FUNC",
            "TARGET",
            "INVOCATION_ID",
            "UNIT",
            "MESSAGE_ID",
            "TID",
            "JOB_ID",
            "JOB_TYPE",
            "JOB_RESULT",
        ];
        let entries = self.journal(&format!("-n {n}"));
        let mut out = String::new();
        for e in &entries {
            let mut line = format!(
                "[{}] p{} {}",
                field(e, "_PID"),
                field(e, "PRIORITY"),
                field(e, "MESSAGE")
            );
            if let Some(obj) = e.as_object() {
                for (k, v) in obj {
                    if k.starts_with('_') || PLUMBING.contains(&k.as_str()) {
                        continue;
                    }
                    line.push_str(&format!(" {k}={}", v.as_str().unwrap_or("?")));
                }
            }
            out.push_str(&line);
            out.push('\n');
        }
        out
    }

    /// What an operator would look at: the units' status and the journal.
    fn evidence(&self) -> String {
        format!(
            "--- systemctl status farmhand farmhand.socket\n{}\n--- journalctl -u farmhand (last 40 entries)\n{}",
            self.sh_text("systemctl status farmhand farmhand.socket --no-pager -l -n 0"),
            self.journal_excerpt(40)
        )
    }

    /// The tail of a recipe's build logs (finished logs may be compressed).
    fn build_logs(&self, recipe: &str) -> String {
        self.sh_text(&format!(
            "for f in /var/lib/farmhand/logs/{recipe}/*; do echo \"== $f\"; \
             (zstdcat -f \"$f\" 2>/dev/null || cat \"$f\") | tail -n 20; done"
        ))
    }

    /// Runs the block of `docs/<page>` marked `name` verbatim in `dir`
    /// with `sh -e -x`; with `follow`, ends it after [`FOLLOW`] (its last
    /// command follows the journal).
    fn run_block(&self, page: &str, name: &str, dir: &str, follow: bool) -> BlockRun {
        let script = doc_block(page, name);
        let timeout = if follow {
            format!("timeout {} ", FOLLOW.as_secs())
        } else {
            String::new()
        };
        let o = self
            .command(&[
                "/bin/sh",
                "-c",
                &format!("cd \"$1\" && exec {timeout}sh -e -x -c \"$2\" 2>&1"),
                "sh",
                dir,
                &script,
            ])
            .stdin(Stdio::null())
            .output()
            .expect("nsenter runs");
        BlockRun {
            name: format!("docs/{page} `{name}`"),
            script,
            status: o.status.code(),
            output: text(&o.stdout) + &text(&o.stderr),
        }
    }

    /// The build logs of `recipe`, decompressed and joined.
    fn read_build_logs(&self, recipe: &str) -> String {
        let dir = self.path(&format!("/var/lib/farmhand/logs/{recipe}"));
        let mut files: Vec<PathBuf> = fs::read_dir(dir)
            .into_iter()
            .flatten()
            .flatten()
            .map(|e| e.path())
            .collect();
        files.sort();
        let mut out = String::new();
        for f in files {
            let bytes = fs::read(&f).unwrap_or_default();
            let bytes = if bytes.starts_with(&[0x28, 0xb5, 0x2f, 0xfd]) {
                zstd::decode_all(&bytes[..]).unwrap_or_default()
            } else {
                bytes
            };
            out.push_str(&text(&bytes));
        }
        out
    }

    /// Processes of the container: `pid args` lines.
    fn processes(&self) -> String {
        text(&self.sh("ps -eo pid=,user=,args=").stdout)
    }

    fn is_mounted(&self) -> bool {
        let want = self.root.to_string_lossy().into_owned();
        fs::read_to_string("/proc/self/mountinfo")
            .unwrap_or_default()
            .lines()
            .any(|l| l.split(' ').nth(4) == Some(want.as_str()))
    }
}

fn wait_child(child: &mut Child, timeout: Duration) -> bool {
    poll(timeout, || child.try_wait().ok().flatten()).is_some()
}

impl Drop for Container {
    fn drop(&mut self) {
        if let Some(mut nspawn) = self.nspawn.take() {
            if self.leader > 0 {
                // SIGRTMIN+4 asks systemd for a clean poweroff (what
                // `machinectl poweroff` sends). nix has no real-time
                // signals, and kill(1) takes the number.
                let _ = Command::new("kill")
                    .arg(format!("-{}", nix::libc::SIGRTMIN() + 4))
                    .arg(self.leader.to_string())
                    .status();
            }
            if !wait_child(&mut nspawn, Duration::from_secs(30)) {
                eprintln!("real_systemd: the container did not power off within 30 s; killing it");
                if self.leader > 0 {
                    // Killing the PID namespace's init ends every process in it.
                    let _ = nix::sys::signal::kill(
                        nix::unistd::Pid::from_raw(self.leader),
                        nix::sys::signal::Signal::SIGKILL,
                    );
                }
                if !wait_child(&mut nspawn, Duration::from_secs(10)) {
                    let _ = nspawn.kill();
                    let _ = nspawn.wait();
                }
            }
        }
        if self.mounted {
            for _ in 0..50 {
                let _ = Command::new("umount").arg(&self.root).status();
                if !self.is_mounted() {
                    break;
                }
                std::thread::sleep(Duration::from_millis(100));
            }
            if self.is_mounted() {
                let _ = Command::new("umount").arg("-l").arg(&self.root).status();
            }
            if self.is_mounted() {
                // Never remove anything below a mount of the host's /.
                eprintln!(
                    "real_systemd: {} is still mounted; left in place",
                    self.root.display()
                );
                return;
            }
        }
        let _ = fs::remove_file(self.dir.join("nspawn.log"));
        // remove_dir: only ever an empty directory.
        let _ = fs::remove_dir(&self.root);
        let _ = fs::remove_dir(&self.dir);
    }
}

/// `index_version` of the repository's archive.json, read from the host.
fn index_version(c: &Container) -> u64 {
    fs::read(c.path("/var/lib/farmhand/repo/index/archive.json"))
        .ok()
        .and_then(|b| serde_json::from_slice::<Value>(&b).ok())
        .and_then(|d| d["index_version"].as_u64())
        .unwrap_or(0)
}

/// Problems with the published hello package: its archive entry, the pool
/// file and its hash, and the index signature.
fn repository_problems(c: &Container) -> Vec<String> {
    let mut problems = Vec::new();
    let repo = c.path("/var/lib/farmhand/repo");
    let archive_path = repo.join("index/archive.json");
    let Ok(archive_bytes) = fs::read(&archive_path) else {
        return vec![format!("{} is missing", archive_path.display())];
    };
    let archive: Value = serde_json::from_slice(&archive_bytes).unwrap_or(Value::Null);
    let entry = archive["packages"].as_array().and_then(|ps| {
        ps.iter()
            .find(|p| p["name"] == "hello" && p["version"] == HELLO_VERSION)
    });
    match entry {
        None => problems.push(format!(
            "archive.json has no hello {HELLO_VERSION}: {archive}"
        )),
        Some(e) => {
            let url = e["url"].as_str().unwrap_or("");
            let file = repo.join(url);
            if !url.starts_with("pool/") || !file.is_file() {
                problems.push(format!("the artifact {url:?} is not in repo/pool"));
            } else if sha256_file(&file) != e["hash"]["value"].as_str().unwrap_or("") {
                problems.push(format!("{url}: sha256 differs from the index"));
            }
            if e["build"]["farm_id"] != FARM_ID {
                problems.push(format!("build.farm_id is {}", e["build"]["farm_id"]));
            }
        }
    }
    let Some(want_key) = farm_key(c).map(|k| k.verifying_key()) else {
        problems.push(format!("{KEY_FILE} is not a 32-byte Ed25519 seed"));
        return problems;
    };
    let pub_path = repo.join(format!("keys/{FARM_ID}.pub"));
    let published = fs::read_to_string(&pub_path).unwrap_or_default();
    let key = hex::decode(published.trim())
        .ok()
        .and_then(|b| <[u8; 32]>::try_from(b).ok())
        .and_then(|b| VerifyingKey::from_bytes(&b).ok());
    match key {
        None => problems.push(format!(
            "keys/{FARM_ID}.pub is missing or not a hex Ed25519 key: {published:?}"
        )),
        Some(k) => {
            if k != want_key {
                problems.push(format!(
                    "keys/{FARM_ID}.pub is not the configured key's public half"
                ));
            }
            let sig_text =
                fs::read_to_string(repo.join("index/archive.json.sig")).unwrap_or_default();
            let sig = hex::decode(sig_text.trim())
                .ok()
                .and_then(|b| Signature::from_slice(&b).ok());
            match sig {
                None => problems.push(format!(
                    "index/archive.json.sig is missing or malformed: {sig_text:?}"
                )),
                Some(s) => {
                    if let Err(e) = k.verify(&archive_bytes, &s) {
                        problems.push(format!(
                            "index/archive.json.sig does not verify against keys/{FARM_ID}.pub: {e}"
                        ));
                    }
                }
            }
        }
    }
    problems
}

/// The farm's signing key, as the first-run steps made it (32 random
/// bytes).
fn farm_key(c: &Container) -> Option<SigningKey> {
    let seed = fs::read(c.path(KEY_FILE)).ok()?;
    Some(SigningKey::from_bytes(&<[u8; 32]>::try_from(seed).ok()?))
}

/// The hello package's pool file, as seen from the host.
fn hello_artifact(c: &Container) -> Option<PathBuf> {
    let dir = c.path("/var/lib/farmhand/repo/pool/hello");
    fs::read_dir(dir)
        .ok()?
        .flatten()
        .map(|e| e.path())
        .find(|p| {
            p.file_name().is_some_and(|n| {
                n.to_string_lossy()
                    .starts_with(&format!("hello_{HELLO_VERSION}_"))
            })
        })
}

/// Lines of `ps` output that are left over from the slow build.
fn slow_build_processes(ps: &str) -> Vec<String> {
    ps.lines()
        .filter(|l| l.contains(SLOW_STEP) || l.contains("make slow"))
        .map(str::to_string)
        .collect()
}

/// One container at a time: the two tests boot their own, and the checks
/// keep time (the watchdog, stop during a build) on a machine that also
/// builds.
static BOOT: std::sync::Mutex<()> = std::sync::Mutex::new(());

/// Why the test does not run here, after printing it; panics instead with
/// `CI=true`.
fn skip() -> bool {
    let Some(why) = missing_prerequisite() else {
        return false;
    };
    if std::env::var("CI").as_deref() == Ok("true") {
        panic!("real_systemd cannot run here: {why}; with CI=true it must run, not be skipped");
    }
    eprintln!("real_systemd: SKIPPED: {why}");
    true
}

/// Prints the seconds since `started` and what was done.
fn lap(started: Instant, what: &str) {
    let secs = started.elapsed().as_secs_f64();
    eprintln!("real_systemd: {secs:6.1}s {what}");
}

#[test]
fn shipped_unit_under_systemd_as_pid_1() {
    if skip() {
        return;
    }
    let _one = BOOT
        .lock()
        .unwrap_or_else(std::sync::PoisonError::into_inner);
    let started = Instant::now();
    let lap = |what: &str| lap(started, what);
    let deb = debian_package();
    lap("package built");
    let c = Container::boot(&units_to_mask());
    lap("container booted");
    install(&c, &deb);
    unit_exposure(&c);
    first_run(&c);
    lap("installed and configured as docs/installation.md says");
    ready(&c);
    build_under_sandbox(&c);
    builds_cannot_touch_the_farm(&c);
    journal_fields(&c);
    lap("checks 1, 2, 9, 6");
    watchdog(&c);
    lap("check 3");
    let pid = reload(&c);
    lap("check 4");
    stop_during_build(&c, &pid);
    lap("check 5");
    socket_activation(&c);
    lap("check 7");
    remove_and_purge(&c);
    lap("check 8");
    drop(c);
    lap("container powered off");
}

/// The directory the install block runs in: it stands for the source root,
/// holding the package where `cargo deb` writes it.
const SOURCE_ROOT: &str = "/root/farmhand-source";

/// Installs the package with docs/installation.md's block (`apt install
/// ./target/debian/...`): dpkg's postinst runs systemd-sysusers and
/// systemd-tmpfiles and enables nothing.
fn install(c: &Container, deb: &Path) {
    // Container images often carry Docker's /usr/sbin/policy-rc.d (exit
    // 101), which makes maintainer scripts skip every service start and
    // stop; a booted build host has none, and check 8 needs the real prerm.
    c.sh_ok("rm -f /usr/sbin/policy-rc.d");
    let file = deb.file_name().unwrap().to_string_lossy().into_owned();
    let at = c.path(&format!("{SOURCE_ROOT}/target/debian/{file}"));
    fs::create_dir_all(at.parent().unwrap()).unwrap();
    fs::copy(deb, &at).unwrap();
    let block = c.run_block("installation.md", "install", SOURCE_ROOT, false);
    let passwd = c.sh_text("getent passwd farmhand");
    let recipes_dir = c.sh_text("stat -c '%U:%G %a' /etc/farmhand/recipes");
    let svc = c.show("farmhand", &["LoadState", "UnitFileState", "ActiveState"]);
    let sock = c.prop("farmhand.socket", "UnitFileState");
    let mut problems = Vec::new();
    if !block.script.contains(&format!("./target/debian/{file}")) {
        problems.push(format!(
            "docs/installation.md installs another file than the one cargo deb writes, target/debian/{file}"
        ));
    }
    problems.extend(block.problem(false));
    if !passwd.contains(":/var/lib/farmhand:") {
        problems.push(format!(
            "sysusers: no farmhand user with home /var/lib/farmhand: {passwd:?}"
        ));
    }
    if recipes_dir.trim() != "root:root 755" {
        problems.push(format!(
            "tmpfiles: /etc/farmhand/recipes is {recipes_dir:?}"
        ));
    }
    if (
        svc["LoadState"].as_str(),
        svc["UnitFileState"].as_str(),
        svc["ActiveState"].as_str(),
    ) != ("loaded", "disabled", "inactive")
    {
        problems.push(format!(
            "farmhand.service should be loaded, disabled, inactive: {svc:?}"
        ));
    }
    if sock != "disabled" {
        problems.push(format!("farmhand.socket is {sock}, not disabled"));
    }
    check(
        "0 the docs' apt install creates the user and the recipes dir, enables nothing",
        &problems,
        || format!("--- {}\n{}", block.name, block.output),
    );
}

/// Check 10: `systemd-analyze security` rates the installed unit at most
/// 2.0 (DESIGN.md section 18), while it lets bubblewrap work (check 2).
fn unit_exposure(c: &Container) {
    let out = c.sh_text("systemd-analyze security farmhand.service --no-pager");
    let threshold = c.sh("systemd-analyze security farmhand.service --no-pager --threshold=20");
    let rating = out
        .lines()
        .find(|l| l.contains("Overall exposure level for farmhand.service"))
        .and_then(|l| l.split(": ").nth(1))
        .and_then(|v| v.split_whitespace().next())
        .and_then(|v| v.parse::<f64>().ok());
    let mut problems = Vec::new();
    match rating {
        None => problems.push("no overall exposure level in the output".into()),
        Some(e) if e > 2.0 => problems.push(format!("the unit is rated {e}, above 2.0")),
        Some(_) => {}
    }
    if !threshold.status.success() {
        problems.push(format!(
            "systemd-analyze security --threshold=20 failed ({})",
            threshold.status
        ));
    }
    check(
        "10 systemd-analyze security rates the installed unit at most 2.0",
        &problems,
        || format!("--- systemd-analyze security farmhand.service\n{out}"),
    );
    if let Some(e) = rating {
        eprintln!("real_systemd:         overall exposure {e:.1}");
    }
}

/// The first run as docs/installation.md describes it: the config edited
/// as step 1 says (plus the test's own build timeouts), the signing key,
/// the webhook secret and the example recipe made by the docs' blocks, and
/// the test's recipes: a local upstream owned by farmhand, a recipe that
/// builds a C program with make and cc, and one whose build fails.
fn first_run(c: &Container) {
    let config = c.path("/etc/farmhand/config.toml");
    let mut t: toml::Table = fs::read_to_string(&config)
        .expect("the package installs /etc/farmhand/config.toml")
        .parse()
        .expect("the installed config is TOML");
    let mut set = |table: &str, key: &str, value: &str| {
        t.entry(table)
            .or_insert_with(|| toml::Value::Table(toml::Table::new()))
            .as_table_mut()
            .unwrap()
            .insert(key.into(), toml::Value::String(value.into()));
    };
    // Step 1: "at least [manager].id, [repo].name, and the [http].addr".
    set("manager", "id", FARM_ID);
    set("repo", "name", "nspawn-packages");
    set("http", "addr", ADDR);
    // Steps 2 and 3: "and key_file = ... under [signing]", "and
    // webhook_secret_file = ... under [http]".
    set("signing", "key_file", KEY_FILE);
    set("http", "webhook_secret_file", SECRET_FILE);
    // The test's own: check 5 stops the daemon during a build that sleeps;
    // the build is killed after this grace, well inside TimeoutStopSec=.
    set("build", "timeout", "10m");
    set("build", "shutdown_grace", "2s");
    fs::write(&config, toml::to_string(&t).unwrap()).unwrap();

    let mut problems = Vec::new();
    for step in ["signing-key", "webhook-secret", "recipes"] {
        let block = c.run_block("installation.md", step, "/root", false);
        problems.extend(block.problem(false));
    }
    let stat = c.sh_text(&format!("stat -c '%U %a %s' {KEY_FILE} {SECRET_FILE}"));
    let stat: Vec<Vec<&str>> = stat.lines().map(|l| l.split(' ').collect()).collect();
    let ok = |i: usize| stat.get(i).is_some_and(|f| f[..2] == ["farmhand", "600"]);
    if !ok(0) || !ok(1) || stat[0][2] != "32" || stat[1][2] == "0" {
        problems.push(format!(
            "the key (32 bytes) and the secret are not farmhand's alone, mode 600: {stat:?}"
        ));
    }
    check(
        "first run: docs/installation.md steps 2 to 4 as written",
        &problems,
        String::new,
    );

    c.write(
        &format!("{UPSTREAM}/Makefile"),
        include_str!("../real_systemd/hello/Makefile"),
        0o644,
    );
    c.write(
        &format!("{UPSTREAM}/hello.c"),
        include_str!("../real_systemd/hello/hello.c"),
        0o644,
    );
    let recipes = "/etc/farmhand/recipes";
    let hello = recipe_toml("hello, built with make and cc", true);
    c.write(&format!("{recipes}/hello/recipe.toml"), hello, 0o644);
    c.write(&format!("{recipes}/hello/build.sh"), HELLO_BUILD, 0o755);
    let broken = recipe_toml("a build that fails", false);
    c.write(&format!("{recipes}/broken/recipe.toml"), broken, 0o644);
    c.write(&format!("{recipes}/broken/build.sh"), BROKEN_BUILD, 0o755);
    c.sh_ok(&format!(
        "set -e
         cd {UPSTREAM}
         git init -q -b main
         git add -A
         git -c user.name=upstream -c user.email=upstream@example.org commit -q -m 'hello 1.0.0'
         git tag v1.0.0
         chown -R farmhand:farmhand /var/lib/farmhand-upstream"
    ));
}

/// Check 1: docs/installation.md's step 5 (`farmhand --check`, `systemctl
/// enable --now`, `systemctl status`, `curl .../status`, `journalctl -f`)
/// runs as written: `systemctl start` returns once READY=1 came, so the
/// request right after it is answered; StatusText is set.
fn ready(c: &Container) {
    let start = c.run_block("installation.md", "start", "/root", true);
    // The /status answer the block's curl printed.
    let status_answer = start
        .output
        .lines()
        .find_map(|l| serde_json::from_str::<Value>(l).ok());
    // The webhook secret the docs' block made (owned by farmhand, mode
    // 0600) was read: a ping signed with it is answered.
    let secret = fs::read_to_string(c.path(SECRET_FILE)).unwrap_or_default();
    let body = r#"{"zen":"Proof under a real systemd."}"#;
    let signature = crate::util::sign(secret.trim().as_bytes(), body.as_bytes());
    let ping = c.sh_text(&format!(
        "curl -sS --max-time 5 -w ' %{{http_code}}' -H 'X-GitHub-Event: ping' \
           -H 'X-GitHub-Delivery: nspawn-ping-1' -H 'X-Hub-Signature-256: {signature}' \
           -H 'Content-Type: application/json' --data-binary '{body}' \
           http://{ADDR}/webhooks/github"
    ));
    let s = c.show(
        "farmhand",
        &[
            "ActiveState",
            "SubState",
            "Type",
            "NotifyAccess",
            "StatusText",
            "MainPID",
            "UnitFileState",
        ],
    );
    let status = &s["StatusText"];
    let mut problems = Vec::new();
    problems.extend(start.problem(true));
    if s["ActiveState"] != "active" || s["Type"] != "notify" || s["UnitFileState"] != "enabled" {
        problems.push(format!(
            "ActiveState={} Type={} UnitFileState={} (want active through Type=notify, enabled)",
            s["ActiveState"], s["Type"], s["UnitFileState"]
        ));
    }
    let idle = status.starts_with("idle, ") && status.ends_with(" recipes");
    if !idle && !status.starts_with("building ") {
        problems.push(format!(
            "StatusText={status:?} (want `idle, N recipes` or `building RECIPE VERSION`)"
        ));
    }
    match &status_answer {
        Some(v) if v["farm_id"] == FARM_ID => {}
        other => problems.push(format!(
            "the block's `curl -s http://{ADDR}/status` right after `systemctl enable --now` \
             got no /status of {FARM_ID}: {other:?}"
        )),
    }
    if !start.follows_fields(&["MESSAGE", "RECIPE"]) {
        problems
            .push("the block's journalctl -f printed no MESSAGE=... and RECIPE=... lines".into());
    }
    if ping.split_whitespace().collect::<Vec<_>>() != ["pong", "200"] {
        problems.push(format!(
            "a ping signed with the webhook secret got {ping:?}"
        ));
    }
    check(
        "1 the docs' start step: active through READY=1, answered at once, StatusText set",
        &problems,
        || {
            format!(
                "--- {}\n{}\n--- systemctl show\n{s:?}\n\n{}",
                start.name,
                start.output,
                c.evidence()
            )
        },
    );
}

/// Check 2: hello is built with make and cc under the unit's sandbox and
/// published with a signed index.
fn build_under_sandbox(c: &Container) {
    // Both recipes end their first build: hello published (or failed),
    // broken failed.
    let outcome = poll(Duration::from_secs(60), || {
        let hello_failed = c.events("build failed", "", &[("RECIPE", "hello")]);
        let hello_done = c.events("build + publish complete", "", &[("RECIPE", "hello")]);
        let broken_failed = c.events("build failed", "", &[("RECIPE", "broken")]);
        let hello_ended = !hello_done.is_empty() || !hello_failed.is_empty();
        (hello_ended && !broken_failed.is_empty()).then_some(hello_failed)
    });
    let mut problems = Vec::new();
    match outcome {
        None => problems.push(
            "within 60 s the journal did not show hello's build ending and broken's failing".into(),
        ),
        Some(failed) => {
            if let Some(e) = failed.first() {
                let err = field(e, "ERR");
                problems.push(format!(
                    "hello's build failed under the unit's sandbox: {err}"
                ));
            }
        }
    }
    problems.extend(repository_problems(c));
    // The artifact holds a real program: run it.
    match hello_artifact(c) {
        None => problems.push("no hello artifact in /var/lib/farmhand/repo/pool/hello".into()),
        Some(p) => {
            let entries = read_tar_zst(&p);
            let paths: Vec<&str> = entries.iter().map(|e| e.path.as_str()).collect();
            match entries
                .iter()
                .find(|e| e.path.trim_start_matches("./") == "usr/bin/hello")
            {
                None => problems.push(format!("{} holds no usr/bin/hello: {paths:?}", p.display())),
                Some(e) => {
                    c.write("/root/hello-from-the-farm", &e.data, 0o755);
                    let ran = c.sh_text("/root/hello-from-the-farm");
                    if ran.trim() != "hello from farmhand" {
                        problems.push(format!("the built program printed {ran:?}"));
                    }
                }
            }
        }
    }
    // [build].sandbox = "auto" (the installed config's default) found a
    // working bubblewrap under the unit.
    let answer = c.sh_text(&format!("curl -sS --max-time 5 http://{ADDR}/status"));
    let sandbox = serde_json::from_str::<Value>(&answer).map(|v| v["sandbox"].clone());
    if sandbox.as_ref().ok() != Some(&Value::from("bwrap")) {
        problems.push(format!(
            "/status does not say \"sandbox\": \"bwrap\": {answer}"
        ));
    }
    let pid = c.main_pid();
    let status = fs::read_to_string(c.path(&format!("/proc/{pid}/status"))).unwrap_or_default();
    for want in ["NoNewPrivs:\t1", "Seccomp:\t2", "CapEff:\t0000000000000000"] {
        if !status.lines().any(|l| l == want) {
            let want = want.replace('\t', " ");
            problems.push(format!("/proc/{pid}/status (MainPID) lacks {want:?}"));
        }
    }
    check(
        "2 build under the unit's sandbox and bubblewrap, signed index",
        &problems,
        || {
            let security: Vec<&str> = status
                .lines()
                .filter(|l| {
                    ["NoNewPrivs", "Seccomp", "Cap"]
                        .iter()
                        .any(|k| l.starts_with(k))
                })
                .collect();
            format!(
            "--- /proc/{pid}/status\n{}\n--- hello build log\n{}\n--- ls -lR /var/lib/farmhand/repo\n{}\n{}",
            security.join("\n"),
            c.build_logs("hello"),
            c.sh_text("ls -lR /var/lib/farmhand/repo"),
            c.evidence()
        )
        },
    );
}

/// The build script of check 9 (after a line setting `DAEMON_PID`): what a
/// hostile upstream's Makefile would try, each outcome recorded in the
/// build log, then a package so that the build succeeds.
const PROBE_BUILD: &str = r#"
attempt() {
  what=$1; shift
  if "$@" >/dev/null 2>&1; then echo "ATTEMPT $what: ALLOWED"; else echo "ATTEMPT $what: denied"; fi
}
attempt "read the signing key" cat /etc/farmhand/farm.ed25519
attempt "read the webhook secret" cat /etc/farmhand/webhook-secret
attempt "read the config" cat /etc/farmhand/config.toml
attempt "read state.json" cat /var/lib/farmhand/state.json
attempt "list the repository" ls /var/lib/farmhand/repo
attempt "read the index" cat /var/lib/farmhand/repo/index/archive.json
attempt "write the repository" touch /var/lib/farmhand/repo/pwned
attempt "signal the daemon" kill -0 "$DAEMON_PID"
attempt "see the daemon" sh -c '[ -e "/proc/$1" ] || grep -qx farmhand /proc/[0-9]*/comm' sh "$DAEMON_PID"
attempt "write its own directories" touch "$DESTDIR/ok" "$HOME/ok" "$SOURCE_DIR/ok" /tmp/ok
mkdir -p "$DESTDIR/usr/share/probe"
echo probe > "$DESTDIR/usr/share/probe/ok"
"#;

/// Check 9: a build under the unit (and bubblewrap) cannot read the
/// signing key, the webhook secret, the config, state.json or the
/// repository, cannot write the repository and cannot see or signal the
/// daemon (DESIGN.md section 18; tests/integration/sandbox.rs makes the
/// same attempts outside systemd). The recipe comes with a reload, once
/// hello is published, so that everything it reaches for exists and the
/// daemon's PID is known.
fn builds_cannot_touch_the_farm(c: &Container) {
    let pid = c.main_pid();
    let recipes = "/etc/farmhand/recipes";
    let probe = recipe_toml("a build that reaches for the farm", false);
    c.write(&format!("{recipes}/probe/recipe.toml"), probe, 0o644);
    let script = format!("#!/bin/sh\nDAEMON_PID={pid}\n{PROBE_BUILD}");
    c.write(&format!("{recipes}/probe/build.sh"), script, 0o755);
    c.sh_ok("systemctl reload farmhand");
    let ended = poll(Duration::from_secs(30), || {
        let done = c.events("build + publish complete", "", &[("RECIPE", "probe")]);
        let failed = c.events("build failed", "", &[("RECIPE", "probe")]);
        (!done.is_empty() || !failed.is_empty()).then_some(failed)
    });
    let log = c.read_build_logs("probe");
    let mut problems = Vec::new();
    match ended {
        None => problems.push("the probe's build did not end within 30 s".into()),
        Some(failed) => {
            if let Some(e) = failed.first() {
                problems.push(format!("the probe's build failed: {}", field(e, "ERR")));
            }
        }
    }
    for (what, want) in [
        ("read the signing key", "denied"),
        ("read the webhook secret", "denied"),
        ("read the config", "denied"),
        ("read state.json", "denied"),
        ("list the repository", "denied"),
        ("read the index", "denied"),
        ("write the repository", "denied"),
        ("signal the daemon", "denied"),
        ("see the daemon", "denied"),
        ("write its own directories", "ALLOWED"),
    ] {
        let got = log
            .lines()
            .find_map(|l| l.strip_prefix(&format!("ATTEMPT {what}: ")));
        if got != Some(want) {
            problems.push(format!("{what}: {got:?}, want {want}"));
        }
    }
    // What the build reached for is there, for the daemon.
    for p in [
        KEY_FILE,
        SECRET_FILE,
        "/etc/farmhand/config.toml",
        "/var/lib/farmhand/state.json",
        "/var/lib/farmhand/repo/index/archive.json",
    ] {
        if !c.path(p).is_file() {
            problems.push(format!("{p} does not exist, so its attempt proves nothing"));
        }
    }
    if c.path("/var/lib/farmhand/repo/pwned").exists() {
        problems.push("the build wrote /var/lib/farmhand/repo/pwned".into());
    }
    check(
        "9 a build under the unit cannot read the key, the secret, state or repository, write the repository or see the daemon",
        &problems,
        || format!("--- the probe's build log\n{log}\n{}", c.evidence()),
    );
}

/// Check 6: `journalctl -u farmhand RECIPE=...` returns the builds' events
/// with their fields; `build failed` is logged at priority 3 (err), the
/// priority src/logging.rs maps tracing's error level to.
fn journal_fields(c: &Container) {
    let hello = c.journal("RECIPE=hello");
    let broken = c.journal("RECIPE=broken");
    let mut problems = Vec::new();
    if hello.is_empty()
        || hello
            .iter()
            .chain(&broken)
            .any(|e| field(e, "RECIPE").is_empty())
    {
        problems.push("RECIPE= matched no entries, or entries without RECIPE=".into());
    }
    for msg in ["starting build", "build + publish complete"] {
        let found = hello.iter().any(|e| {
            field(e, "MESSAGE") == msg
                && field(e, "RECIPE") == "hello"
                && field(e, "VERSION") == HELLO_VERSION
                && field(e, "PRIORITY") == "6"
        });
        if !found {
            problems.push(format!(
                "no `{msg}` entry with RECIPE=hello VERSION={HELLO_VERSION} PRIORITY=6 (info)"
            ));
        }
    }
    match broken
        .iter()
        .find(|e| field(e, "MESSAGE") == "build failed")
    {
        None => problems.push("no `build failed` entry for RECIPE=broken".into()),
        Some(e) => {
            if field(e, "PRIORITY") != "3" {
                let p = field(e, "PRIORITY");
                problems.push(format!("`build failed` has PRIORITY={p} (want 3, err)"));
            }
            if field(e, "VERSION") != HELLO_VERSION
                || field(e, "ERR").is_empty()
                || field(e, "NEXT_RETRY_AFTER").is_empty()
            {
                problems.push(format!(
                    "`build failed` lacks VERSION=, ERR= or NEXT_RETRY_AFTER=: {e}"
                ));
            }
        }
    }
    check(
        "6 journal: RECIPE= matches, VERSION= fields, build failed at PRIORITY=3",
        &problems,
        || {
            let lines = |v: &[Value]| {
                v.iter()
                    .map(Value::to_string)
                    .collect::<Vec<_>>()
                    .join("\n")
            };
            format!(
                "--- journalctl -u farmhand RECIPE=hello -o json\n{}\n--- RECIPE=broken\n{}",
                lines(&hello),
                lines(&broken)
            )
        },
    );
}

/// Check 3: with `WatchdogSec=3s`, a stopped daemon (`kill -STOP`) is
/// restarted by systemd, and the new one rebuilds nothing published.
fn watchdog(c: &Container) {
    c.write(
        "/etc/systemd/system/farmhand.service.d/50-watchdog.conf",
        "[Service]\nWatchdogSec=3s\n",
        0o644,
    );
    c.sh_ok("systemctl daemon-reload && systemctl restart farmhand");
    let before = c.show("farmhand", &["MainPID", "NRestarts", "WatchdogUSec"]);
    let pid1 = before["MainPID"].clone();
    let restarts: u64 = before["NRestarts"].parse().unwrap_or(0);
    let version_before = index_version(c);
    c.sh_ok(&format!("kill -STOP {pid1}"));
    let after = poll(Duration::from_secs(45), || {
        let s = c.show(
            "farmhand",
            &["MainPID", "NRestarts", "ActiveState", "SubState"],
        );
        let restarted = s["MainPID"] != pid1 && s["MainPID"] != "0";
        (s["ActiveState"] == "active" && restarted).then_some(s)
    });
    let mut problems = Vec::new();
    if before["WatchdogUSec"] != "3s" {
        problems.push(format!(
            "the drop-in did not apply: WatchdogUSec={}",
            before["WatchdogUSec"]
        ));
    }
    let mut pid2 = String::new();
    match &after {
        None => problems.push(format!(
            "within 45 s of `kill -STOP {pid1}` the service was not active again with a new MainPID"
        )),
        Some(s) => {
            pid2 = s["MainPID"].clone();
            if s["NRestarts"] != (restarts + 1).to_string() {
                let n = &s["NRestarts"];
                problems.push(format!("NRestarts={n} (was {restarts}; want one restart)"));
            }
        }
    }
    let timeout_logged = c
        .journal("")
        .iter()
        .any(|e| field(e, "MESSAGE").contains("Watchdog timeout"));
    if !timeout_logged {
        problems.push("systemd logged no `Watchdog timeout` for farmhand.service".into());
    }
    if !pid2.is_empty() {
        let polled = poll(Duration::from_secs(20), || {
            let done = c.events("poll complete", &pid2, &[("RECIPE", "hello")]);
            (!done.is_empty()).then_some(())
        });
        if polled.is_none() {
            problems.push(format!(
                "the restarted daemon (PID {pid2}) did not poll hello within 20 s"
            ));
        }
        // A build would start right after the poll; give it the chance.
        std::thread::sleep(Duration::from_secs(1));
        let fields = [("RECIPE", "hello"), ("VERSION", HELLO_VERSION)];
        if !c.events("starting build", &pid2, &fields).is_empty() {
            problems.push(format!(
                "the restarted daemon rebuilt hello {HELLO_VERSION}, which was published"
            ));
        }
    }
    let version_after = index_version(c);
    if version_after != version_before {
        problems.push(format!(
            "index_version changed: {version_before} -> {version_after}"
        ));
    }
    check(
        "3 watchdog restarts a stopped daemon, nothing rebuilt",
        &problems,
        || {
            format!(
                "--- before: {before:?}\n--- after: {after:?}\n\n{}",
                c.evidence()
            )
        },
    );
    // Back to the shipped WatchdogSec=30s for the rest.
    c.sh_ok(
        "rm -r /etc/systemd/system/farmhand.service.d \
         && systemctl daemon-reload && systemctl restart farmhand",
    );
}

/// Check 4: `systemctl reload` during a stream of /healthz requests; the
/// reload adds a recipe whose build sleeps (check 5 stops the daemon
/// during it). Returns the MainPID.
fn reload(c: &Container) -> String {
    let recipes = "/etc/farmhand/recipes";
    let slow = recipe_toml("a build that takes long", false);
    c.write(&format!("{recipes}/slow/recipe.toml"), slow, 0o644);
    c.write(&format!("{recipes}/slow/build.sh"), SLOW_BUILD, 0o755);
    let pid = c.main_pid();
    let reloads_before = c.events("recipes reloaded", &pid, &[]).len();
    let stop_file = "/run/farmhand-test-stop-requests";
    let mut requests = c
        .sh_command(&format!(
            "while [ ! -e {stop_file} ]; do \
               curl -sS -o /dev/null -w '%{{http_code}}\\n' --max-time 5 http://{ADDR}/healthz 2>&1 \
                 || echo \"curl exit $?\"; \
             done"
        ))
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    std::thread::sleep(Duration::from_millis(700));
    let reload = c.sh("systemctl reload farmhand");
    std::thread::sleep(Duration::from_millis(700));
    c.write(stop_file, "", 0o644);
    if !wait_child(&mut requests, Duration::from_secs(15)) {
        let _ = requests.kill();
    }
    let mut answers = String::new();
    let _ = requests.stdout.take().unwrap().read_to_string(&mut answers);
    let _ = requests.wait();
    let s = c.show("farmhand", &["MainPID", "ActiveState"]);
    let mut problems = Vec::new();
    if !reload.status.success() {
        problems.push(format!(
            "systemctl reload failed: {}",
            text(&reload.stderr).trim()
        ));
    }
    let lines: Vec<&str> = answers.lines().collect();
    let bad: Vec<&str> = lines.iter().copied().filter(|l| *l != "200").collect();
    if lines.len() < 10 || !bad.is_empty() {
        problems.push(format!(
            "{} requests, {} not answered 200: {:?}",
            lines.len(),
            bad.len(),
            &bad[..bad.len().min(10)]
        ));
    }
    if s["MainPID"] != pid || s["ActiveState"] != "active" {
        problems.push(format!(
            "MainPID {pid} -> {} (ActiveState={})",
            s["MainPID"], s["ActiveState"]
        ));
    }
    let reloaded = poll(Duration::from_secs(5), || {
        (c.events("recipes reloaded", &pid, &[]).len() > reloads_before).then_some(())
    });
    if reloaded.is_none() {
        problems.push("no `recipes reloaded` in the journal".into());
    }
    check(
        "4 reload keeps /healthz answering and the MainPID",
        &problems,
        || {
            format!(
                "--- {} /healthz answers\n{answers}\n{}",
                lines.len(),
                c.evidence()
            )
        },
    );
    eprintln!(
        "real_systemd:         {} /healthz requests across the reload, all 200",
        lines.len()
    );
    pid
}

/// Check 5: `systemctl stop` while the slow build runs ends with
/// Result=success inside TimeoutStopSec and leaves no process behind.
fn stop_during_build(c: &Container, pid: &str) {
    let building = poll(Duration::from_secs(30), || {
        let started = !c
            .events("starting build", pid, &[("RECIPE", "slow")])
            .is_empty();
        (started && !slow_build_processes(&c.processes()).is_empty()).then_some(())
    });
    let cgroup = c.prop("farmhand", "ControlGroup");
    let ps_before = c.processes();
    let t = Instant::now();
    let stop = c.sh("systemctl stop farmhand");
    let took = t.elapsed();
    let s = c.show(
        "farmhand",
        &[
            "ActiveState",
            "Result",
            "ExecMainCode",
            "ExecMainStatus",
            "TimeoutStopUSec",
        ],
    );
    // The unit's cgroup in either hierarchy (hybrid or unified); systemd
    // removes it once it is empty.
    let procs = c.sh_text(&format!(
        "for h in /sys/fs/cgroup/unified /sys/fs/cgroup/systemd /sys/fs/cgroup; do \
           f=$h{cgroup}/cgroup.procs; [ -e $f ] && sed \"s#^#$f: #\" $f; \
         done; true"
    ));
    let ps_after = c.processes();
    let mut problems = Vec::new();
    if building.is_none() {
        problems.push(format!(
            "the slow build (`make slow` running `{SLOW_STEP}`) did not start within 30 s"
        ));
    }
    if cgroup.is_empty() {
        problems.push("no ControlGroup while the service ran".into());
    }
    if !stop.status.success() || s["Result"] != "success" || s["ActiveState"] != "inactive" {
        problems.push(format!(
            "stop ended with Result={} ActiveState={} ExecMainStatus={} (systemctl stop: {})",
            s["Result"], s["ActiveState"], s["ExecMainStatus"], stop.status
        ));
    }
    if took >= Duration::from_secs(60) {
        problems.push(format!(
            "stop took {took:?}, not inside TimeoutStopSec ({})",
            s["TimeoutStopUSec"]
        ));
    }
    if !procs.trim().is_empty() {
        problems.push(format!("the unit's cgroup still holds processes:\n{procs}"));
    }
    let left = slow_build_processes(&ps_after);
    if !left.is_empty() {
        problems.push(format!("build processes outlived the stop: {left:?}"));
    }
    check(
        "5 stop during a build: Result=success, cgroup empty",
        &problems,
        || {
            format!(
            "--- processes before the stop\n{ps_before}\n--- after\n{ps_after}\n--- {s:?}\n\n{}",
            c.evidence()
        )
        },
    );
    eprintln!("real_systemd:         stop during the build took {took:.1?}");
}

/// The `LISTEN_*` variables of a process of the container.
fn listen_env(c: &Container, pid: &str) -> Vec<String> {
    let environ = fs::read(c.path(&format!("/proc/{pid}/environ"))).unwrap_or_default();
    environ
        .split(|b| *b == 0)
        .map(text)
        .filter(|v| v.starts_with("LISTEN_"))
        .collect()
}

/// Check 7: on a running farm, docs/installation.md's order for switching
/// to socket activation (stop, enable --now the socket, start) works and
/// hands the daemon the socket; then, with the service stopped, the first
/// request starts the service, which answers it.
fn socket_activation(c: &Container) {
    c.sh_ok("systemctl start farmhand");
    let block = c.run_block("installation.md", "socket-activation", "/root", false);
    let switched = c.show("farmhand", &["ActiveState", "MainPID"]);
    let switched_listen = listen_env(c, &switched["MainPID"]);
    c.sh_ok("systemctl stop farmhand");
    let before = c.prop("farmhand", "ActiveState");
    let sock = c.show("farmhand.socket", &["ActiveState", "SubState", "Listen"]);
    let answer = c.sh_text(&format!(
        "curl -sS --max-time 30 -w ' %{{http_code}}' http://{ADDR}/healthz"
    ));
    let s = c.show("farmhand", &["ActiveState", "MainPID", "TriggeredBy"]);
    let listen = listen_env(c, &s["MainPID"]);
    let mut problems = Vec::new();
    problems.extend(block.problem(false));
    if switched["ActiveState"] != "active" || !switched_listen.iter().any(|v| v == "LISTEN_FDS=1") {
        problems.push(format!(
            "after the docs' switch the service is {} with {switched_listen:?} (want active, LISTEN_FDS=1)",
            switched["ActiveState"]
        ));
    }
    if before != "inactive" {
        problems.push(format!("the service was {before} before the first request"));
    }
    if sock["ActiveState"] != "active" || !sock["Listen"].contains(ADDR) {
        problems.push(format!("farmhand.socket: {sock:?}"));
    }
    if answer.split_whitespace().collect::<Vec<_>>() != ["ok", "200"] {
        problems.push(format!(
            "the first request got {answer:?}, not `ok` with 200"
        ));
    }
    if s["ActiveState"] != "active" || !s["TriggeredBy"].contains("farmhand.socket") {
        problems.push(format!("farmhand.service after the request: {s:?}"));
    }
    if !listen.iter().any(|v| v == "LISTEN_FDS=1") {
        problems.push(format!("the daemon was not handed the socket: {listen:?}"));
    }
    check(
        "7 socket activation as the docs switch to it; the first request starts the service",
        &problems,
        || format!("--- {}\n{}\n{}", block.name, block.output, c.evidence()),
    );
}

/// Check 8: `dpkg -r` stops the service and the socket and keeps the
/// repository and the config; `dpkg --purge` removes the conffile, the
/// units' masks and enablement links, and keeps what farmhand and the
/// operator made (docs/installation.md, "Removing the package").
fn remove_and_purge(c: &Container) {
    let remove = c.sh_text("dpkg -r farmhand");
    let svc = c.show("farmhand", &["LoadState", "ActiveState"]);
    let sock = c.show("farmhand.socket", &["LoadState", "ActiveState"]);
    let left = c.sh_text("ps -u farmhand -o pid=,args=");
    let connect = c.sh(&format!(
        "curl -sS -o /dev/null --max-time 5 http://{ADDR}/healthz"
    ));
    let status = c.sh_text("dpkg-query -W -f='${Status}' farmhand");
    let mut problems = Vec::new();
    if svc["ActiveState"] != "inactive" || sock["ActiveState"] != "inactive" {
        problems.push(format!(
            "after dpkg -r: service {svc:?}, socket {sock:?} (want both inactive)"
        ));
    }
    if svc["LoadState"] != "masked" || sock["LoadState"] != "masked" {
        problems.push(format!(
            "after dpkg -r the units are {} / {} (the postrm masks them)",
            svc["LoadState"], sock["LoadState"]
        ));
    }
    if !left.trim().is_empty() {
        problems.push(format!("processes of the farmhand user remain: {left}"));
    }
    if connect.status.code() != Some(7) {
        problems.push(format!(
            "{ADDR} still accepts connections after dpkg -r (curl: {})",
            connect.status
        ));
    }
    if c.path("/usr/bin/farmhand").exists() {
        problems.push("/usr/bin/farmhand is still there".into());
    }
    if status.trim() != "deinstall ok config-files" {
        problems.push(format!("dpkg status after -r: {status:?}"));
    }
    if !c.path("/etc/farmhand/config.toml").exists() {
        problems.push("dpkg -r removed the conffile /etc/farmhand/config.toml".into());
    }
    let after_remove = repository_problems(c);
    problems.extend(
        after_remove
            .into_iter()
            .map(|p| format!("after dpkg -r: {p}")),
    );

    let purge = c.sh_text("dpkg --purge farmhand");
    let svc = c.show("farmhand", &["LoadState"]);
    let sock = c.show("farmhand.socket", &["LoadState"]);
    if c.path("/etc/farmhand/config.toml").exists() {
        problems.push("dpkg --purge left /etc/farmhand/config.toml".into());
    }
    for kept in [
        "/etc/farmhand/farm.ed25519",
        "/etc/farmhand/webhook-secret",
        "/etc/farmhand/recipes/hello/recipe.toml",
    ] {
        if !c.path(kept).exists() {
            problems.push(format!(
                "dpkg --purge removed {kept}, which the package does not own"
            ));
        }
    }
    if svc["LoadState"] != "not-found" || sock["LoadState"] != "not-found" {
        problems.push(format!(
            "after dpkg --purge the units are {} / {} (want not-found: masks removed)",
            svc["LoadState"], sock["LoadState"]
        ));
    }
    if c.path("/etc/systemd/system/sockets.target.wants/farmhand.socket")
        .exists()
    {
        problems.push("dpkg --purge left the socket's enablement link".into());
    }
    if !c.sh_text("getent passwd farmhand").starts_with("farmhand:") {
        problems.push("dpkg --purge removed the farmhand user".into());
    }
    let after_purge = repository_problems(c);
    problems.extend(
        after_purge
            .into_iter()
            .map(|p| format!("after dpkg --purge: {p}")),
    );
    check(
        "8 dpkg -r stops and keeps the repository, --purge as documented",
        &problems,
        || {
            format!(
                "--- dpkg -r\n{remove}\n--- dpkg --purge\n{purge}\n{}",
                c.journal_excerpt(20)
            )
        },
    );
}
