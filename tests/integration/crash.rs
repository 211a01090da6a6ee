//! Crash consistency: the daemon (or `--once`) is killed with SIGKILL at
//! many different instants of building and publishing, restarted, and the
//! repository is checked after every kill and after every restart.
//!
//! Each run adds one upstream tag, starts farmhand (alternately `--once`
//! and the daemon) with the debug-only `FARMHAND_FAULT_PUBLISH_DELAY_MS`
//! hook, which logs and pauses around every publish step (each pool rename,
//! each index and signature rename), and kills it either at a random
//! instant of the whole build or inside a randomly chosen publish step.
//! The build script waits for a "go" file, so the repository is quiescent
//! while the restart's healing is checked.
//!
//! `FARMHAND_CRASH_RUNS` sets the number of runs (default 20; `bench/crash_loop.sh`
//! runs 100+), `FARMHAND_CRASH_SEED` the random seed. The phase each kill
//! landed in is printed at the end.

use crate::util::*;
use std::collections::{BTreeMap, BTreeSet};
use std::io::{BufRead, BufReader, Read};
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use farmhand::publish::repo::{IndexEntry, Repo};

/// Pause of the publish fault hook, per step.
const STEP_DELAY_MS: u64 = 30;
/// Packages per build (one pool file each).
const PACKAGES: [&str; 3] = ["crash-a", "crash-b", "crash-c"];
/// Small files per package.
const FILES_PER_PACKAGE: usize = 120;
/// Hook pauses per publish: move/moved per package, write/written for
/// archive.json, its signature, active.json and its signature.
const PAUSES_PER_PUBLISH: usize = PACKAGES.len() * 2 + 8;

/// A tiny deterministic PRNG (xorshift64*), seeded per test run.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        let mut x = self.0;
        x ^= x >> 12;
        x ^= x << 25;
        x ^= x >> 27;
        self.0 = x;
        x.wrapping_mul(0x2545_F491_4F6C_DD1D)
    }
    fn below(&mut self, n: u64) -> u64 {
        self.next() % n.max(1)
    }
}

/// farmhand with its stderr captured line by line, with arrival times.
struct Proc {
    child: Child,
    lines: Arc<Mutex<Vec<(Instant, String)>>>,
    reader: Option<std::thread::JoinHandle<()>>,
}

impl Proc {
    fn start(farm: &Farm, once: bool, hook: bool) -> Proc {
        let mut cmd = Command::new(bin());
        cmd.arg("--config")
            .arg(farm.config_path())
            .arg("--log-format")
            .arg("logfmt")
            .env_remove("NOTIFY_SOCKET")
            .env_remove("JOURNAL_STREAM")
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::piped());
        if once {
            cmd.arg("--once");
        }
        if hook {
            cmd.env("FARMHAND_FAULT_PUBLISH_DELAY_MS", STEP_DELAY_MS.to_string());
        }
        let mut child = cmd.spawn().expect("farmhand starts");
        let lines = Arc::new(Mutex::new(Vec::new()));
        let l = lines.clone();
        let stderr = child.stderr.take().unwrap();
        let reader = std::thread::spawn(move || {
            let mut r = BufReader::new(stderr);
            let mut line = String::new();
            while r.read_line(&mut line).unwrap_or(0) > 0 {
                l.lock()
                    .unwrap()
                    .push((Instant::now(), line.trim_end().to_string()));
                line.clear();
            }
        });
        Proc {
            child,
            lines,
            reader: Some(reader),
        }
    }

    fn count(&self, needle: &str) -> usize {
        self.lines
            .lock()
            .unwrap()
            .iter()
            .filter(|(_, l)| l.contains(needle))
            .count()
    }

    fn text(&self) -> String {
        let lines = self.lines.lock().unwrap();
        lines
            .iter()
            .map(|(_, l)| l.as_str())
            .collect::<Vec<_>>()
            .join("\n")
    }

    fn exited(&mut self) -> bool {
        self.child.try_wait().unwrap().is_some()
    }

    /// Waits (polling every 2 ms, for precise kill timing) until `n` lines
    /// contain `needle` or the process exits; false on exit or timeout.
    fn wait_count(&mut self, needle: &str, n: usize, timeout: Duration) -> bool {
        let start = Instant::now();
        while start.elapsed() < timeout {
            if self.count(needle) >= n {
                return true;
            }
            if self.exited() {
                // Let the reader catch up with the last lines.
                std::thread::sleep(Duration::from_millis(20));
                return self.count(needle) >= n;
            }
            std::thread::sleep(Duration::from_millis(2));
        }
        false
    }

    /// SIGKILL; returns true if the process was still running.
    fn kill9(&mut self) -> bool {
        let alive = !self.exited();
        if alive {
            let _ = nix::sys::signal::kill(
                nix::unistd::Pid::from_raw(self.child.id() as i32),
                nix::sys::signal::Signal::SIGKILL,
            );
        }
        self.finish();
        alive
    }

    /// Waits for exit and for the reader to reach EOF; returns the exit code.
    fn finish(&mut self) -> Option<i32> {
        let st = self.child.wait().unwrap();
        if let Some(r) = self.reader.take() {
            let _ = r.join();
        }
        st.code()
    }
}

impl Drop for Proc {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// What the repository held after a run.
#[derive(Default, Clone)]
struct Snapshot {
    index_version: u64,
    /// url → sha256 of every archive entry.
    entries: BTreeMap<String, String>,
    archive_bytes: Vec<u8>,
}

fn is_hex_sig(text: &str) -> bool {
    text.len() == 129 && text.ends_with('\n') && text[..128].bytes().all(|b| b.is_ascii_hexdigit())
}

fn entries_of(doc: &serde_json::Value) -> Vec<IndexEntry> {
    serde_json::from_value(doc["packages"].clone()).expect("index entries parse")
}

/// A pool file not (yet) in the archive must still be complete: a whole
/// zstd stream holding a whole tar with every file of its package.
fn assert_complete_package(path: &Path) {
    let f = std::fs::File::open(path).unwrap();
    let dec = zstd::stream::read::Decoder::new(f)
        .unwrap_or_else(|e| panic!("{}: not zstd: {e}", path.display()));
    let mut ar = tar::Archive::new(dec);
    let mut files = 0;
    for e in ar
        .entries()
        .unwrap_or_else(|e| panic!("{}: not a tar: {e}", path.display()))
    {
        let mut e = e.unwrap_or_else(|e| panic!("{}: truncated tar: {e}", path.display()));
        if e.header().entry_type().is_file() {
            files += 1;
            let mut sink = Vec::new();
            e.read_to_end(&mut sink)
                .unwrap_or_else(|e| panic!("{}: truncated entry: {e}", path.display()));
        }
    }
    assert_eq!(
        files,
        FILES_PER_PACKAGE,
        "{}: partial package under a final name",
        path.display()
    );
}

/// Checks the repository as a SIGKILL left it: every index entry's file is
/// there with its recorded size and sha256, nothing partial has a final
/// name, nothing published was lost, `index_version` did not go back.
fn check_after_kill(repo: &Path, prev: &Snapshot, ctx: &str) -> Snapshot {
    let index = repo.join("index");
    let archive_bytes = std::fs::read(index.join("archive.json")).unwrap();
    let archive: serde_json::Value = serde_json::from_slice(&archive_bytes)
        .unwrap_or_else(|e| panic!("{ctx}: archive.json is not whole JSON: {e}"));
    let active = read_json(&index.join("active.json"));
    let iv = archive["index_version"].as_u64().unwrap();
    assert!(
        iv >= prev.index_version,
        "{ctx}: index_version went back from {} to {iv}",
        prev.index_version
    );
    let active_iv = active["index_version"].as_u64().unwrap();
    assert!(
        active_iv == iv || active_iv + 1 == iv,
        "{ctx}: active.json at index_version {active_iv}, archive.json at {iv}"
    );
    let mut entries = BTreeMap::new();
    for doc in [&archive, &active] {
        for e in entries_of(doc) {
            let file = repo.join(&e.url);
            let meta = std::fs::metadata(&file)
                .unwrap_or_else(|err| panic!("{ctx}: {} listed but missing: {err}", e.url));
            assert_eq!(meta.len(), e.size_compressed, "{ctx}: size of {}", e.url);
            assert_eq!(
                sha256_file(&file),
                e.hash.value,
                "{ctx}: sha256 of {}",
                e.url
            );
            if std::ptr::eq(doc, &archive) {
                entries.insert(e.url.clone(), e.hash.value.clone());
            } else {
                assert_eq!(
                    entries.get(&e.url),
                    Some(&e.hash.value),
                    "{ctx}: active entry {} is not in archive.json",
                    e.url
                );
            }
        }
    }
    for (url, sha) in &prev.entries {
        assert_eq!(
            entries.get(url),
            Some(sha),
            "{ctx}: published {url} lost or changed"
        );
    }
    // index/: the two documents, their signatures, and temporaries only.
    for ent in std::fs::read_dir(&index).unwrap() {
        let name = ent.unwrap().file_name().to_string_lossy().into_owned();
        if name.starts_with(".tmp-") {
            continue;
        }
        match name.as_str() {
            "archive.json" | "active.json" => {}
            "archive.json.sig" | "active.json.sig" => {
                let text = std::fs::read_to_string(index.join(&name)).unwrap();
                assert!(
                    is_hex_sig(&text),
                    "{ctx}: partial signature {name}: {text:?}"
                );
            }
            other => panic!("{ctx}: unexpected file index/{other}"),
        }
    }
    // pool/: final names hold complete packages only.
    for dir in std::fs::read_dir(repo.join("pool")).unwrap() {
        let dir = dir.unwrap();
        if dir.file_name().to_string_lossy().starts_with(".tmp-") {
            continue;
        }
        assert!(dir.file_type().unwrap().is_dir(), "{ctx}: {:?}", dir.path());
        for f in std::fs::read_dir(dir.path()).unwrap() {
            let f = f.unwrap();
            let name = f.file_name().to_string_lossy().into_owned();
            if name.starts_with(".tmp-") {
                continue;
            }
            assert!(name.ends_with(".tar.zst"), "{ctx}: pool file {name}");
            let url = format!("pool/{}/{name}", dir.file_name().to_string_lossy());
            if !entries.contains_key(&url) {
                // Renamed into the pool, not yet committed to the archive.
                assert_complete_package(&f.path());
            }
        }
    }
    Snapshot {
        index_version: iv,
        entries,
        archive_bytes,
    }
}

/// Checks the repository once a restarted farmhand has opened (healed) it:
/// no temporary file left, archive.json untouched, active.json and both
/// signatures re-derived from archive.json.
fn check_healed(repo: &Path, after_kill: &Snapshot, ctx: &str) {
    let index = repo.join("index");
    let mut dirs = vec![index.clone()];
    for d in std::fs::read_dir(repo.join("pool")).unwrap() {
        dirs.push(d.unwrap().path());
    }
    for d in dirs {
        for f in std::fs::read_dir(&d).unwrap() {
            let name = f.unwrap().file_name().to_string_lossy().into_owned();
            assert!(
                !name.starts_with(".tmp-"),
                "{ctx}: {}/{name} not cleaned at start",
                d.display()
            );
        }
    }
    let archive_bytes = std::fs::read(index.join("archive.json")).unwrap();
    assert!(
        archive_bytes == after_kill.archive_bytes,
        "{ctx}: archive.json changed by the restart"
    );
    let archive: serde_json::Value = serde_json::from_slice(&archive_bytes).unwrap();
    let active = read_json(&index.join("active.json"));
    assert_eq!(
        active["index_version"], archive["index_version"],
        "{ctx}: active.json not healed"
    );
    assert_eq!(
        entries_of(&active),
        Repo::derive_active(&entries_of(&archive)),
        "{ctx}: active.json does not derive from archive.json"
    );
    let key_hex = std::fs::read_to_string(repo.join("keys/test-farm.pub")).unwrap();
    let raw: [u8; 32] = hex::decode(key_hex.trim()).unwrap().try_into().unwrap();
    let key = ed25519_dalek::VerifyingKey::from_bytes(&raw).unwrap();
    for doc in ["archive.json", "active.json"] {
        let bytes = std::fs::read(index.join(doc)).unwrap();
        let sig_text = std::fs::read_to_string(index.join(format!("{doc}.sig")))
            .unwrap_or_else(|e| panic!("{ctx}: {doc}.sig: {e}"));
        let sig =
            ed25519_dalek::Signature::from_slice(&hex::decode(sig_text.trim()).unwrap()).unwrap();
        key.verify_strict(&bytes, &sig)
            .unwrap_or_else(|e| panic!("{ctx}: {doc}.sig does not verify: {e}"));
    }
}

/// Build scripts run in their own process groups; when farmhand is
/// SIGKILLed the group outlives it (under systemd, the unit's cgroup is
/// killed with it). The scripts record their pid (= pgid); the test plays
/// systemd's part and kills what is left.
fn kill_orphan_builds(pids_file: &Path) {
    let Ok(text) = std::fs::read_to_string(pids_file) else {
        return;
    };
    for pid in text.lines().filter_map(|l| l.trim().parse::<i32>().ok()) {
        let cmdline = std::fs::read(format!("/proc/{pid}/cmdline")).unwrap_or_default();
        if String::from_utf8_lossy(&cmdline).contains("build.sh") {
            let _ = nix::sys::signal::killpg(
                nix::unistd::Pid::from_raw(pid),
                nix::sys::signal::Signal::SIGKILL,
            );
        }
    }
    std::fs::write(pids_file, "").unwrap();
}

/// Where a kill landed, from the last publish hook line before it.
fn phase_of(lines: &[(Instant, String)], killed: bool) -> String {
    if !killed {
        return "completed before the kill".into();
    }
    let last = lines.iter().rev().map(|(_, l)| l).find(|l| {
        l.contains("publish fault hook")
            || l.contains("build + publish complete")
            || l.contains("starting build")
    });
    let Some(l) = last else {
        return "start-up (before any build)".into();
    };
    if l.contains("starting build") {
        return "fetch / build script / packaging".into();
    }
    if l.contains("build + publish complete") {
        return "after a publish, before the next build".into();
    }
    let step = field(l, "step").unwrap_or_default();
    let file = field(l, "file").unwrap_or_default();
    let what = if file.ends_with(".tar.zst") {
        "pool file"
    } else if file.ends_with("archive.json") {
        "archive.json"
    } else if file.ends_with("active.json") {
        "active.json"
    } else if file.ends_with("archive.json.sig") {
        "archive.json.sig"
    } else if file.ends_with("active.json.sig") {
        "active.json.sig"
    } else {
        "other"
    };
    match step.as_str() {
        "move" => format!("{what}: before/during rename into the pool"),
        "moved" => format!("{what}: after rename into the pool"),
        "write" => format!("{what}: temp written, before/during rename"),
        "written" => format!("{what}: after rename"),
        _ => format!("{what}: {step}"),
    }
}

fn versions_in(entries: &BTreeMap<String, String>, pkg: &str) -> BTreeSet<String> {
    let prefix = format!("pool/{pkg}/{pkg}_");
    entries
        .keys()
        .filter_map(|u| u.strip_prefix(&prefix))
        .filter_map(|rest| rest.split('_').next())
        .map(str::to_string)
        .collect()
}

#[test]
fn sigkill_at_any_instant_of_publishing_loses_nothing() {
    let runs: usize = std::env::var("FARMHAND_CRASH_RUNS")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(20)
        .max(2);
    // The seed decides every random choice: which runs are killed at
    // start-up, during the build or inside a publish step, which step, and
    // at what fraction of the calibrated durations. It is printed first
    // and named in every failure; to replay a failing run, set it:
    //   FARMHAND_CRASH_SEED=<seed> cargo test --test integration sigkill_at_any_instant
    // (the kill instants are the same; what the process reached by then
    // still depends on the machine's timing). Unset: a fresh seed per run.
    let seed: u64 = match std::env::var("FARMHAND_CRASH_SEED") {
        Ok(s) => match s.trim().parse() {
            Ok(n) if n != 0 => n,
            _ => panic!("FARMHAND_CRASH_SEED={s:?}: want a non-zero decimal number"),
        },
        Err(_) => {
            std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .unwrap()
                .as_nanos() as u64
                | 1
        }
    };
    eprintln!("crash test: {runs} runs, FARMHAND_CRASH_SEED={seed}");
    let mut rng = Rng(seed);

    let farm = Farm::new();
    let up = Upstream::new(&farm.root.join("up"));
    std::fs::write(farm.root.join("farm.key"), [9u8; 32]).unwrap();
    farm.write_config("[signing]\nkey_file = \"farm.key\"\n\n[backoff]\nschedule = [\"1s\"]\n");
    let go = farm.root.join("go");
    let pids = farm.root.join("build-pids");
    let mut toml = format!(
        "[upstream]\ngit = \"{}\"\ntag_pattern = '^v(\\d+\\.\\d+\\.\\d+)$'\n",
        up.url()
    );
    let mut script = format!(
        "#!/bin/sh\necho $$ >> '{}'\nwhile [ ! -e '{}' ]; do sleep 0.01; done\n",
        pids.display(),
        go.display()
    );
    for (i, p) in PACKAGES.iter().enumerate() {
        let sub = (b'a' + i as u8) as char;
        toml.push_str(&format!(
            "\n[[package]]\nname = \"{p}\"\nfiles = [\"usr/share/{sub}/**\"]\n"
        ));
        script.push_str(&format!(
            "mkdir -p \"$DESTDIR/usr/share/{sub}\"\ni=0\nwhile [ $i -lt {FILES_PER_PACKAGE} ]; do\n  \
             echo \"{sub} $i $FARMHAND_VERSION\" > \"$DESTDIR/usr/share/{sub}/f$i\"\n  i=$((i+1))\ndone\n"
        ));
    }
    farm.recipe("crash", &toml, &script);
    let repo = farm.repo();

    let mut snap = Snapshot::default();
    let mut tally: BTreeMap<String, usize> = BTreeMap::new();
    // Calibrated by the first (unkilled) run: go → publish complete.
    let mut full_build = Duration::from_secs(2);
    // Calibrated by the first run: process start → first build started.
    let mut start_up = Duration::from_millis(300);
    let mut kills_in_publish = 0;
    let started = Instant::now();

    for run in 0..runs {
        up.release(&format!("v1.0.{run}"));
        let _ = std::fs::remove_file(&go);
        let once = run % 2 == 0;
        let started_at = Instant::now();
        let mut p = Proc::start(&farm, once, true);
        let ctx = format!(
            "FARMHAND_CRASH_SEED={seed} run {run} ({})",
            if once { "--once" } else { "daemon" }
        );
        let plan = if run == 0 { 100 } else { rng.below(100) };
        if plan < 10 {
            // Start-up: opening and healing the repository, the poll, the
            // fetch into the git cache.
            std::fs::write(&go, "").unwrap();
            let at = Duration::from_millis(rng.below(start_up.as_millis() as u64 + 1));
            while started_at.elapsed() < at && !p.exited() {
                std::thread::sleep(Duration::from_millis(1));
            }
            let killed = p.kill9();
            kill_orphan_builds(&pids);
            let lines = p.lines.lock().unwrap().clone();
            let phase = if killed && !lines.iter().any(|(_, l)| l.contains("starting build")) {
                "start-up, poll or fetch".to_string()
            } else {
                phase_of(&lines, killed)
            };
            *tally.entry(phase).or_default() += 1;
            snap = check_after_kill(&repo, &snap, &ctx);
            continue;
        }
        assert!(
            p.wait_count("starting build", 1, Duration::from_secs(30)),
            "{ctx}: no build started; log:\n{}",
            p.text()
        );
        if run == 0 {
            start_up = started_at.elapsed();
        } else {
            check_healed(&repo, &snap, &ctx);
        }
        std::fs::write(&go, "").unwrap();
        let go_at = Instant::now();
        let killed = if run == 0 {
            // Calibration run: not killed.
            assert!(
                p.wait_count("build + publish complete", 1, Duration::from_secs(60)),
                "{ctx}: first build did not complete; log:\n{}",
                p.text()
            );
            full_build = go_at.elapsed();
            eprintln!("crash test: one build + publish takes {full_build:?}");
            if !once {
                p.kill9();
            }
            false
        } else if plan < 35 {
            // Anywhere in the build: fetch, script, packaging or publishing.
            let at = Duration::from_millis(rng.below(full_build.as_millis() as u64 + 1));
            while go_at.elapsed() < at && !p.exited() {
                std::thread::sleep(Duration::from_millis(1));
            }
            p.kill9()
        } else {
            // Inside a chosen publish step.
            let k = 1 + rng.below(PAUSES_PER_PUBLISH as u64) as usize;
            p.wait_count("publish fault hook", k, Duration::from_secs(60));
            std::thread::sleep(Duration::from_millis(rng.below(STEP_DELAY_MS + 5)));
            p.kill9()
        };
        if run > 0 {
            p.finish();
        } else if once {
            assert_eq!(p.finish(), Some(0), "{ctx}: log:\n{}", p.text());
        }
        kill_orphan_builds(&pids);
        let lines = p.lines.lock().unwrap().clone();
        let phase = phase_of(&lines, killed);
        if phase.contains(".json") || phase.contains("pool file") {
            kills_in_publish += 1;
        }
        *tally.entry(phase).or_default() += 1;
        snap = check_after_kill(&repo, &snap, &ctx);
    }

    // Let the farm finish: every version ends up published, exactly once.
    let _ = std::fs::remove_file(&go);
    let mut p = Proc::start(&farm, false, false);
    // Opened (and healed) once the first poll is complete; a build, if
    // any, waits for the go file.
    assert!(
        p.wait_count("poll complete", 1, Duration::from_secs(30)),
        "final daemon: log:\n{}",
        p.text()
    );
    check_healed(&repo, &snap, "final start");
    std::fs::write(&go, "").unwrap();
    let want: BTreeSet<String> = (0..runs).map(|r| format!("1.0.{r}-1")).collect();
    let deadline = Instant::now() + full_build * (runs as u32 + 2) + Duration::from_secs(30);
    loop {
        let archive = read_json(&repo.join("index/archive.json"));
        let urls: BTreeMap<String, String> = entries_of(&archive)
            .into_iter()
            .map(|e| (e.url, e.hash.value))
            .collect();
        let missing: Vec<String> = PACKAGES
            .iter()
            .flat_map(|pkg| {
                let have = versions_in(&urls, pkg);
                want.iter()
                    .filter(|v| !have.contains(*v))
                    .map(|v| format!("{pkg} {v}"))
                    .collect::<Vec<_>>()
            })
            .collect();
        if missing.is_empty() {
            break;
        }
        assert!(
            Instant::now() < deadline && !p.exited(),
            "FARMHAND_CRASH_SEED={seed}: never published: {missing:?}; final daemon log:\n{}",
            p.text()
        );
        std::thread::sleep(Duration::from_millis(50));
    }
    // Wait until the last publish is fully written (active.json follows).
    wait_for(Duration::from_secs(30), "active.json caught up", || {
        let a = read_json(&repo.join("index/archive.json"));
        let b = read_json(&repo.join("index/active.json"));
        (a["index_version"] == b["index_version"]).then_some(())
    });
    let _ = nix::sys::signal::kill(
        nix::unistd::Pid::from_raw(p.child.id() as i32),
        nix::sys::signal::Signal::SIGTERM,
    );
    let ctx = format!("FARMHAND_CRASH_SEED={seed} final");
    assert_eq!(p.finish(), Some(0), "{ctx}: daemon log:\n{}", p.text());
    let fin = check_after_kill(&repo, &snap, &ctx);
    check_healed(&repo, &fin, &ctx);
    // No orphan is left in the pool: every final name is in the archive.
    let archive = read_json(&repo.join("index/archive.json"));
    let entries = entries_of(&archive);
    assert_eq!(
        entries.len(),
        runs * PACKAGES.len(),
        "{ctx}: each version once"
    );
    let mut files = 0;
    for dir in std::fs::read_dir(repo.join("pool")).unwrap() {
        for f in std::fs::read_dir(dir.unwrap().path()).unwrap() {
            let name = f.unwrap().file_name().to_string_lossy().into_owned();
            assert!(!name.starts_with(".tmp-"), "{ctx}: {name}");
            files += 1;
        }
    }
    assert_eq!(
        files,
        entries.len(),
        "{ctx}: pool holds exactly the archive"
    );

    eprintln!(
        "crash test: {runs} runs in {:?}; where the SIGKILL landed:",
        started.elapsed()
    );
    for (phase, n) in &tally {
        eprintln!("  {n:5}  {phase}");
    }
    if runs >= 10 {
        assert!(
            kills_in_publish >= runs / 4,
            "too few kills landed inside publishing ({kills_in_publish} of {runs})"
        );
    }
}

/// A kill in the middle of a fetch's ref update leaves lock files in the
/// upstream's object cache (the fetch window is too short for the kill loop
/// above to hit reliably, so the test lays down what such a kill leaves);
/// the next start clears them and the fetch succeeds.
#[test]
fn stale_git_locks_from_a_killed_fetch_are_cleared_at_start() {
    let farm = Farm::new();
    let up = Upstream::new(&farm.root.join("up"));
    up.release("v1.0.0");
    farm.write_config("");
    farm.simple_recipe(
        "locked",
        &up,
        "#!/bin/sh\nmkdir -p \"$DESTDIR/usr/share/x\"\necho \"$FARMHAND_VERSION\" > \"$DESTDIR/usr/share/x/v\"\n",
        "",
    );
    farm.once_ok();
    up.release("v1.1.0");
    let caches: Vec<_> = std::fs::read_dir(farm.state().join("git"))
        .unwrap()
        .map(|e| e.unwrap().path())
        .collect();
    assert_eq!(caches.len(), 1, "{caches:?}");
    let cache = &caches[0];
    let locks = [
        cache.join("refs/tags/v1.1.0.lock"),
        cache.join("packed-refs.lock"),
        cache.join("FETCH_HEAD.lock"),
        cache.join("shallow.lock"),
        cache.join("config.lock"),
    ];
    for l in &locks {
        std::fs::create_dir_all(l.parent().unwrap()).unwrap();
        std::fs::write(l, "").unwrap();
    }
    let log = farm.once_ok();
    assert_eq!(
        log_lines(&log, "removed stale git lock file").len(),
        locks.len(),
        "{log}"
    );
    assert_eq!(
        log_lines(&log, "build + publish complete").len(),
        1,
        "{log}"
    );
    assert!(log_lines(&log, "build failed").is_empty(), "{log}");
    for l in &locks {
        assert!(!l.exists(), "{}", l.display());
    }
    let archive = read_json(&farm.repo().join("index/archive.json"));
    assert_eq!(archive["packages"].as_array().unwrap().len(), 2);
}
