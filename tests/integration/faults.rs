//! Fault injection against the real daemon: a full disk while packaging and
//! while publishing, an upstream that vanishes between poll and fetch, an
//! upstream that accepts and never answers, a build script that leaves
//! daemons behind, a build that floods its log, the signing key deleted
//! after start, and recipes_dir gone at reload. In each, the daemon stays
//! up, reports the failure with its cause, applies backoff where a build
//! failed (a full disk is the host's fault, not the recipe's: the farm
//! holds its queue instead), and reaches the next good state on its own.

use crate::util::*;
use std::time::{Duration, Instant};

const T: Duration = Duration::from_secs(30);

/// A one-file build.
const SMALL_BUILD: &str = "#!/bin/sh\nmkdir -p \"$DESTDIR/usr/share/x\"\necho \"$FARMHAND_VERSION\" > \"$DESTDIR/usr/share/x/version\"\n";

/// Adds `key = value` lines to the `[poll]` table `Farm::write_config` writes.
fn poll_settings(farm: &Farm, lines: &str) {
    let p = farm.config_path();
    let text = std::fs::read_to_string(&p).unwrap();
    let text = text.replacen(
        "default_interval = \"1h\"\n",
        &format!("default_interval = \"1h\"\n{lines}"),
        1,
    );
    std::fs::write(&p, text).unwrap();
}

fn build_of<'a>(builds: &'a [serde_json::Value], recipe: &str, n: usize) -> &'a serde_json::Value {
    let mine: Vec<_> = builds.iter().filter(|b| b["recipe"] == recipe).collect();
    // /builds is newest first: the n-th attempt (0-based) from the end.
    mine[mine.len() - 1 - n]
}

/// While a host fault holds the farm: `/status` says `held` with the cause,
/// `/healthz` answers 503, and the recipe has no backoff entry.
fn assert_held(d: &Daemon, recipe: &str, version: &str, cause: &str) {
    let st = d.status();
    let held = st["held"].as_str().unwrap_or_default();
    assert!(
        held.starts_with("disk full: ") && held.contains(cause),
        "{st:#}"
    );
    assert!(
        st["failures"].get(format!("{recipe}@{version}")).is_none(),
        "{st:#}"
    );
    let r = d.get("/healthz");
    assert_eq!(r.status, 503, "{}", r.text());
    assert!(r.text().contains("builds held: disk full"), "{}", r.text());
}

/// After a failed first attempt and a successful second one: the failure
/// is in /builds with its phase and cause, and the retry waited for the
/// backoff (schedule of 2 s → at least 1 s at /builds' second precision).
fn assert_failed_then_retried(d: &Daemon, recipe: &str, phase: &str, cause: &str) {
    let builds = d.builds();
    let first = build_of(&builds, recipe, 0);
    let second = build_of(&builds, recipe, 1);
    assert_eq!(first["state"], "failed", "{first:#}");
    assert_eq!(first["phase"], phase, "{first:#}");
    let err = first["error"].as_str().unwrap_or_default();
    assert!(err.contains(cause), "error {err:?} lacks {cause:?}");
    assert_eq!(second["state"], "succeeded", "{second:#}");
    let failed_at = rfc3339_secs(first["finished_at"].as_str().unwrap());
    let retried_at = rfc3339_secs(second["started_at"].as_str().unwrap());
    assert!(
        retried_at > failed_at,
        "retried at {retried_at}, failed at {failed_at}: backoff not applied"
    );
}

#[test]
fn disk_full_while_packaging_holds_the_farm_until_space_returns() {
    let mut farm = Farm::new();
    farm.http = true;
    let _fs = Tmpfs::mount(&farm.state(), "3m");
    // 1.6 MB of the 3 MiB taken: the 1.1 MB build fits, its package does not.
    let filler = farm.state().join("filler");
    std::fs::write(&filler, noise(1_600_000, 1)).unwrap();
    std::fs::write(farm.root.join("blob"), noise(1_100_000, 2)).unwrap();
    let up = Upstream::new(&farm.root.join("up"));
    up.release("v1.0.0");
    farm.write_config("[backoff]\nschedule = [\"2s\"]\n");
    farm.simple_recipe(
        "fill",
        &up,
        &format!(
            "#!/bin/sh\nset -e\nmkdir -p \"$DESTDIR/usr/share/fill\"\ncp '{}' \"$DESTDIR/usr/share/fill/blob\"\n",
            farm.root.join("blob").display()
        ),
        "",
    );
    let d = farm.start();
    let line = d.wait_event("builds held: host fault", &[("recipe", "fill")], T);
    assert!(
        line.contains("phase=packaging") && line.contains("No space left on device"),
        "{line}"
    );
    assert!(!d.logs().contains("msg=\"build failed\""), "{}", d.logs());
    assert_held(&d, "fill", "1.0.0-1", "No space left on device");
    // The failed build's stage was removed: the space is back.
    assert!(
        std::fs::read_dir(farm.state().join("stage"))
            .unwrap()
            .count()
            == 0,
        "stage not cleaned"
    );

    std::fs::remove_file(&filler).unwrap();
    d.wait_event("build + publish complete", &[("recipe", "fill")], T);
    d.wait_event("host fault cleared; builds resume", &[], T);
    assert_failed_then_retried(&d, "fill", "packaging", "No space left on device");
    let st = d.status();
    assert_eq!(st["failures"], serde_json::json!({}), "{st:#}");
    assert_eq!(st["held"], serde_json::Value::Null, "{st:#}");
    let archive = read_json(&farm.repo().join("index/archive.json"));
    let e = &archive["packages"][0];
    assert_eq!(
        sha256_file(&farm.repo().join(e["url"].as_str().unwrap())),
        e["hash"]["value"].as_str().unwrap()
    );
    d.assert_healthy();
}

#[test]
fn disk_full_while_publishing_holds_the_farm_until_space_returns() {
    let mut farm = Farm::new();
    farm.http = true;
    let _fs = Tmpfs::mount(&farm.state(), "4m");
    std::fs::write(farm.root.join("farm.key"), [3u8; 32]).unwrap();
    let up = Upstream::new(&farm.root.join("up"));
    up.release("v1.0.0");
    farm.write_config("[signing]\nkey_file = \"farm.key\"\n\n[backoff]\nschedule = [\"2s\"]\n");
    farm.simple_recipe("pub", &up, SMALL_BUILD, "");
    // The publish fault hook pauses 300 ms at each publish step: the disk
    // is filled while the first step (the pool rename) waits.
    let d = farm.start_with(&[], &[("FARMHAND_FAULT_PUBLISH_DELAY_MS", "300")]);
    // (The hook also fires while the key's first signatures are written at
    // start-up; the pool rename is the publish.)
    d.wait_event("publish fault hook", &[("step", "move")], T);
    let filler = farm.state().join("filler");
    let filled = Tmpfs::fill(&filler);
    assert!(filled > 1_000_000, "filled only {filled} bytes");
    let line = d.wait_event("builds held: host fault", &[("recipe", "pub")], T);
    assert!(line.contains("No space left on device"), "{line}");
    assert!(line.contains("phase=publishing"), "{line}");
    assert_held(&d, "pub", "1.0.0-1", "No space left on device");
    // Nothing half-written under a final name: the archive still parses
    // and lists nothing.
    let archive = read_json(&farm.repo().join("index/archive.json"));
    assert_eq!(archive["packages"], serde_json::json!([]));

    std::fs::remove_file(&filler).unwrap();
    d.wait_event("build + publish complete", &[("recipe", "pub")], T);
    assert_failed_then_retried(&d, "pub", "publishing", "No space left on device");
    let archive = read_json(&farm.repo().join("index/archive.json"));
    assert_eq!(archive["index_version"], 1);
    let e = &archive["packages"][0];
    assert_eq!(
        sha256_file(&farm.repo().join(e["url"].as_str().unwrap())),
        e["hash"]["value"].as_str().unwrap()
    );
    let active = read_json(&farm.repo().join("index/active.json"));
    assert_eq!(active["index_version"], 1);
    assert!(farm.repo().join("index/active.json.sig").exists());
    d.assert_healthy();
}

#[test]
fn upstream_gone_between_poll_and_fetch_is_retried_after_it_returns() {
    let mut farm = Farm::new();
    farm.http = true;
    let go = farm.root.join("go");
    let blocker = Upstream::new(&farm.root.join("blocker"));
    blocker.release("v1.0.0");
    let up = Upstream::new(&farm.root.join("up"));
    up.release("v2.0.0");
    farm.write_config("[backoff]\nschedule = [\"2s\"]\n");
    // The blocker holds the worker until `go` exists.
    farm.simple_recipe(
        "blocker",
        &blocker,
        &format!("#!/bin/sh\n{}", wait_file_sh(&go)),
        "",
    );
    let d = farm.start();
    d.wait_event("starting build", &[("recipe", "blocker")], T);
    // Now a second recipe: polled (and queued) while the blocker builds.
    farm.simple_recipe("flaky", &up, SMALL_BUILD, "");
    d.signal("HUP");
    let polled = d.wait_event("poll complete", &[("recipe", "flaky")], T);
    assert_eq!(
        field(&polled, "matches_emitted").as_deref(),
        Some("1"),
        "{polled}"
    );
    // The upstream vanishes before its fetch.
    let away = farm.root.join("up.away");
    std::fs::rename(&up.path, &away).unwrap();
    std::fs::write(&go, "").unwrap();
    let line = d.wait_event("build failed", &[("recipe", "flaky")], T);
    assert!(
        line.contains("phase=fetching") && line.contains(&up.url()),
        "{line}"
    );
    d.assert_healthy();
    let st = d.status();
    assert_eq!(st["failures"]["flaky@2.0.0-1"]["failures"], 1, "{st:#}");
    // It comes back; the backoff expiry polls and builds it again.
    std::fs::rename(&away, &up.path).unwrap();
    d.wait_event("build + publish complete", &[("recipe", "flaky")], T);
    assert_failed_then_retried(&d, "flaky", "fetching", &up.url());
    assert_eq!(d.status()["failures"], serde_json::json!({}));
    d.assert_healthy();
}

#[test]
fn hung_upstream_poll_times_out_while_others_build() {
    let hang = HangServer::start();
    let mut farm = Farm::new();
    farm.http = true;
    let up = Upstream::new(&farm.root.join("up"));
    up.release("v1.0.0");
    farm.write_config("");
    poll_settings(&farm, "timeout = \"4s\"\n");
    farm.recipe(
        "hung",
        &format!(
            "[upstream]\ngit = \"{}\"\ntag_pattern = '^v(\\d+\\.\\d+\\.\\d+)$'\n",
            hang.url("x")
        ),
        SMALL_BUILD,
    );
    farm.simple_recipe("fine", &up, SMALL_BUILD, "");
    let mut d = farm.start();
    d.wait_event("polling upstream", &[("recipe", "hung")], T);
    let polled_at = Instant::now();
    // The other recipe is polled, built and published meanwhile.
    d.wait_event("build + publish complete", &[("recipe", "fine")], T);
    assert!(
        d.events("ls-remote failed", &[("recipe", "hung")])
            .is_empty(),
        "the hung poll ended before the other recipe was built"
    );
    assert!(
        hang.accepted() >= 1,
        "the hung upstream was never contacted"
    );
    // /healthz stays 200 while the poll hangs.
    while d
        .events("ls-remote failed", &[("recipe", "hung")])
        .is_empty()
    {
        d.assert_healthy();
        assert!(
            polled_at.elapsed() < T,
            "no poll timeout; log:\n{}",
            d.logs()
        );
        std::thread::sleep(Duration::from_millis(100));
    }
    let took = polled_at.elapsed();
    let line = d
        .events("ls-remote failed", &[("recipe", "hung")])
        .remove(0);
    assert!(line.contains("timed out after 4s"), "{line}");
    assert!(
        took >= Duration::from_millis(3500) && took <= Duration::from_millis(5500),
        "the poll timed out after {took:?}, [poll].timeout is 4s"
    );
    let st = d.status();
    assert_eq!(st["polls"]["hung"]["ok"], false, "{st:#}");
    assert!(
        st["polls"]["hung"]["error"]
            .as_str()
            .is_some_and(|e| e.contains("timed out")),
        "{st:#}"
    );
    assert_eq!(st["polls"]["fine"]["ok"], true, "{st:#}");
    d.assert_healthy();
    // Shutdown is not held up by the abandoned connection.
    let t = Instant::now();
    d.signal("TERM");
    assert_eq!(d.wait_exit(T), 0);
    assert!(t.elapsed() < Duration::from_secs(5), "{:?}", t.elapsed());
}

#[test]
fn build_script_that_leaves_daemons_behind_does_not_hang_the_farm() {
    let mut farm = Farm::new();
    farm.http = true;
    let up = Upstream::new(&farm.root.join("up"));
    up.release("v1.0.0");
    farm.write_config("");
    let pid = |name: &str| farm.root.join(format!("{name}.pid"));
    farm.simple_recipe(
        "forker",
        &up,
        &format!(
            "#!/bin/sh\n\
             sleep 300 &\necho $! > '{grouped}'\n\
             nohup sleep 301 > /dev/null 2>&1 &\necho $! > '{nohup}'\n\
             (setsid sh -c 'echo $$ > {escaped}; exec sleep 302' < /dev/null > /dev/null 2>&1 &)\n\
             (setsid sh -c 'echo $$ > {holder}; exec sleep 303' &)\n\
             i=0; while [ ! -s '{escaped}' ] || [ ! -s '{holder}' ]; do [ $i -lt 200 ] || break; sleep 0.01; i=$((i+1)); done\n\
             mkdir -p \"$DESTDIR/usr/share/x\"\necho hi > \"$DESTDIR/usr/share/x/f\"\n\
             exit 0\n",
            grouped = pid("grouped").display(),
            nohup = pid("nohup").display(),
            escaped = pid("escaped").display(),
            holder = pid("holder").display(),
        ),
        "",
    );
    let started = Instant::now();
    let d = farm.start();
    d.wait_event("build + publish complete", &[("recipe", "forker")], T);
    assert!(started.elapsed() < Duration::from_secs(20));
    d.assert_healthy();
    let read_pid = |name: &str| -> i32 {
        std::fs::read_to_string(pid(name))
            .unwrap()
            .trim()
            .parse()
            .unwrap()
    };
    // Whatever stayed in the build's process group is killed with it.
    for name in ["grouped", "nohup"] {
        let p = read_pid(name);
        wait_for(
            Duration::from_secs(10),
            &format!("{name} ({p}) killed"),
            || (!pid_alive(p)).then_some(()),
        );
    }
    // Those that left the group (setsid, one of them holding the build's
    // output pipe) were re-parented to farmhand, the child subreaper, and
    // killed when the build ended; the log says so.
    for name in ["escaped", "holder"] {
        let p = read_pid(name);
        wait_for(
            Duration::from_secs(10),
            &format!("{name} ({p}) killed"),
            || (!pid_alive(p)).then_some(()),
        );
    }
    let log = walk_tree(&farm.state().join("logs/forker"))
        .into_iter()
        .find(|p| p.to_string_lossy().ends_with(".log.zst"))
        .expect("build log");
    let text = read_build_log(&log);
    let killed: usize = text
        .lines()
        .find_map(|l| {
            l.strip_prefix("farmhand: killed ")?
                .strip_suffix(" process(es) the build left running outside its process group")?
                .parse()
                .ok()
        })
        .unwrap_or_else(|| panic!("no stray kill in the build log:\n{text}"));
    assert!(killed >= 2, "{text}");
    assert!(!text.contains("output pipe still held open"), "{text}");
    let mut d = d;
    d.signal("TERM");
    assert_eq!(d.wait_exit(T), 0);
}

#[test]
fn build_flooding_its_log_is_capped_and_the_daemon_stays_responsive() {
    let mut farm = Farm::new();
    farm.http = true;
    let up = Upstream::new(&farm.root.join("up"));
    up.release("v1.0.0");
    farm.write_config("");
    farm.simple_recipe(
        "flood",
        &up,
        "#!/bin/sh\necho flood-start\ntimeout 3 yes farmhand-log-flood\necho flood-end >&2\n\
         mkdir -p \"$DESTDIR/usr/share/x\"\necho hi > \"$DESTDIR/usr/share/x/f\"\n",
        "",
    );
    let d = farm.start();
    d.wait_event("starting build", &[("recipe", "flood")], T);
    let mut worst = Duration::ZERO;
    let mut probes = 0;
    while d
        .events("build + publish complete", &[("recipe", "flood")])
        .is_empty()
    {
        for path in ["/healthz", "/status"] {
            let t = Instant::now();
            let r = d.get(path);
            assert_eq!(r.status, 200, "{path}: {}", r.text());
            worst = worst.max(t.elapsed());
            probes += 1;
        }
        assert!(probes < 2000, "build never ended; log:\n{}", d.logs());
        std::thread::sleep(Duration::from_millis(50));
    }
    eprintln!("log flood: {probes} probes, slowest answer {worst:?}");
    assert!(probes >= 10, "{probes}");
    assert!(worst < Duration::from_secs(2), "slowest answer {worst:?}");
    let log = walk_tree(&farm.state().join("logs/flood"))
        .into_iter()
        .find(|p| p.to_string_lossy().ends_with(".log.zst"))
        .expect("build log");
    let text = read_build_log(&log).into_bytes();
    let size = text.len() as u64;
    assert!(
        size <= farmhand::build::runner::MAX_LOG_BYTES + 64 * 1024,
        "log is {size} bytes"
    );
    let tail = String::from_utf8_lossy(&text[text.len().saturating_sub(64 * 1024)..]).into_owned();
    assert!(tail.contains("log truncated"), "{tail}");
    assert!(tail.contains("build script succeeded"), "{tail}");
    assert!(String::from_utf8_lossy(&text[..4096]).contains("flood-start"));
    d.assert_healthy();
}

#[test]
fn signing_key_deleted_after_start_still_signs() {
    let mut farm = Farm::new();
    farm.http = true;
    let key = farm.root.join("farm.key");
    std::fs::write(&key, [5u8; 32]).unwrap();
    let go = farm.root.join("go");
    let up = Upstream::new(&farm.root.join("up"));
    up.release("v1.0.0");
    farm.write_config("[signing]\nkey_file = \"farm.key\"\n");
    let script =
        format!("{}{}", "#!/bin/sh\n", wait_file_sh(&go)) + &SMALL_BUILD["#!/bin/sh\n".len()..];
    farm.simple_recipe("signed", &up, &script, "");
    let mut d = farm.start();
    d.wait_event("starting build", &[("recipe", "signed")], T);
    std::fs::remove_file(&key).unwrap();
    std::fs::write(&go, "").unwrap();
    d.wait_event("build + publish complete", &[("recipe", "signed")], T);
    verify_index_signatures(&farm, 1);
    // And again after a reload: a revision bump rebuilds and signs.
    farm.simple_recipe("signed", &up, &script, "revision = 2\n");
    d.signal("HUP");
    d.wait_event(
        "build + publish complete",
        &[("recipe", "signed"), ("version", "1.0.0-2")],
        T,
    );
    verify_index_signatures(&farm, 2);
    d.assert_healthy();
    d.signal("TERM");
    assert_eq!(d.wait_exit(T), 0);
}

fn verify_index_signatures(farm: &Farm, index_version: u64) {
    use ed25519_dalek::Verifier;
    let repo = farm.repo();
    let expected = ed25519_dalek::SigningKey::from_bytes(&[5u8; 32]).verifying_key();
    let pub_hex = std::fs::read_to_string(repo.join("keys/test-farm.pub")).unwrap();
    assert_eq!(pub_hex.trim(), hex::encode(expected.to_bytes()));
    for doc in ["archive.json", "active.json"] {
        let bytes = std::fs::read(repo.join("index").join(doc)).unwrap();
        let v: serde_json::Value = serde_json::from_slice(&bytes).unwrap();
        assert_eq!(v["index_version"], index_version, "{doc}");
        let sig_hex = std::fs::read_to_string(repo.join("index").join(format!("{doc}.sig")))
            .unwrap_or_else(|e| panic!("{doc}.sig: {e}"));
        let sig =
            ed25519_dalek::Signature::from_slice(&hex::decode(sig_hex.trim()).unwrap()).unwrap();
        expected
            .verify(&bytes, &sig)
            .unwrap_or_else(|e| panic!("{doc}.sig: {e}"));
    }
}

#[test]
fn recipes_dir_gone_at_reload_keeps_the_roster_until_it_is_back() {
    let mut farm = Farm::new();
    farm.http = true;
    let up = Upstream::new(&farm.root.join("up"));
    up.release("v1.0.0");
    farm.write_config("");
    farm.simple_recipe("one", &up, SMALL_BUILD, "");
    let mut d = farm.start();
    d.wait_event("build + publish complete", &[("recipe", "one")], T);
    let recipes = farm.root.join("recipes");
    let away = farm.root.join("recipes.away");
    std::fs::rename(&recipes, &away).unwrap();
    d.signal("HUP");
    let line = d.wait_log("recipes reload failed; keeping the current roster", T);
    assert!(line.contains(&recipes.display().to_string()), "{line}");
    assert!(
        line.contains("level=error") || line.contains("ERROR"),
        "{line}"
    );
    d.assert_healthy();
    let st = d.status();
    assert_eq!(st["recipes"], serde_json::json!(["one"]), "{st:#}");
    assert_eq!(d.count("recipes reloaded"), 0);

    // Fixed: the next SIGHUP loads the directory, with a new recipe in it.
    std::fs::rename(&away, &recipes).unwrap();
    let up2 = Upstream::new(&farm.root.join("up2"));
    up2.release("v3.0.0");
    farm.simple_recipe("two", &up2, SMALL_BUILD, "");
    d.signal("HUP");
    let line = d.wait_log("recipes reloaded", T);
    assert_eq!(field(&line, "count").as_deref(), Some("2"), "{line}");
    d.wait_event("build + publish complete", &[("recipe", "two")], T);
    assert_eq!(d.status()["recipes"], serde_json::json!(["one", "two"]));
    d.assert_healthy();
    d.signal("TERM");
    assert_eq!(d.wait_exit(T), 0);
}
