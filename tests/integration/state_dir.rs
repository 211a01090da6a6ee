//! Ownership of state_dir: one farmhand per state_dir, a backoff book that
//! forgets what can no longer be retried, and `--check` writing into a
//! closed pipe.

use std::io::Read;
use std::process::{Command, Stdio};
use std::time::Duration;

use crate::util::*;

#[test]
fn a_second_farmhand_on_the_same_state_dir_stops_before_touching_it() {
    let mut farm = Farm::new();
    farm.http = true;
    let up = Upstream::new(&farm.root.join("up"));
    up.release("v1.0.0");
    farm.write_config("");
    let release = farm.root.join("release");
    farm.simple_recipe(
        "slow",
        &up,
        &format!(
            "#!/bin/sh\necho started\n{}mkdir -p \"$DESTDIR/x\"\necho ok > \"$DESTDIR/x/ok\"\n",
            wait_file_sh(&release)
        ),
        "",
    );
    let mut d = farm.start();
    d.wait_log("starting build", Duration::from_secs(20));
    let stage = farm.state().join("stage");
    let staged = wait_for(Duration::from_secs(20), "the build's stage dir", || {
        let n = std::fs::read_dir(&stage).ok()?.count();
        (n > 0).then_some(n)
    });

    // `--once` from cron while the daemon builds.
    let out = farm.run(&["--once"]);
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{err}");
    assert!(err.contains("in use by another farmhand"), "{err}");
    assert!(
        err.contains(&farm.state().display().to_string()),
        "the error names the state_dir: {err}"
    );
    assert!(!err.contains("starting build"), "{err}");
    assert_eq!(
        std::fs::read_dir(&stage).unwrap().count(),
        staged,
        "the running build's stage is untouched"
    );

    std::fs::write(&release, "").unwrap();
    d.wait_log("build + publish complete", Duration::from_secs(30));
    d.signal("TERM");
    assert_eq!(d.wait_exit(Duration::from_secs(20)), 0);

    // Once the daemon is gone the lock goes with it.
    let out = farm.run(&["--once"]);
    assert_eq!(
        out.status.code(),
        Some(0),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
}

#[test]
fn reload_forgets_failures_of_removed_recipes_and_superseded_revisions() {
    let mut farm = Farm::new();
    farm.http = true;
    let up = Upstream::new(&farm.root.join("up"));
    up.release("v1.0.0");
    farm.write_config("[backoff]\nschedule = [\"1h\"]\n");
    farm.simple_recipe("gone", &up, "#!/bin/sh\nexit 3\n", "");
    let bumped = farm.simple_recipe("bumped", &up, "#!/bin/sh\nexit 3\n", "");
    farm.simple_recipe("typo", &up, "#!/bin/sh\nexit 3\n", "");
    let d = farm.start();
    let s = d.wait_status(Duration::from_secs(30), "three failures", |s| {
        s["failures"].as_object().is_some_and(|f| f.len() == 3)
    });
    for k in ["gone@1.0.0-1", "bumped@1.0.0-1", "typo@1.0.0-1"] {
        assert!(s["failures"].get(k).is_some(), "{k} in {s:#}");
    }

    // Remove one recipe, bump another's revision (it now builds 1.0.0-2,
    // which fails again), and break the third with a typo.
    std::fs::remove_dir_all(farm.root.join("recipes/gone")).unwrap();
    let toml = std::fs::read_to_string(bumped.join("recipe.toml")).unwrap();
    std::fs::write(bumped.join("recipe.toml"), format!("{toml}revision = 2\n")).unwrap();
    let typo = farm.root.join("recipes/typo/recipe.toml");
    let toml = std::fs::read_to_string(&typo).unwrap();
    std::fs::write(&typo, toml.replace("tag_pattern", "tag_patern")).unwrap();
    d.signal("HUP");
    let s = d.wait_status(Duration::from_secs(30), "failures after the reload", |s| {
        s["failures"].get("bumped@1.0.0-2").is_some()
    });
    let keys: Vec<&String> = s["failures"].as_object().unwrap().keys().collect();
    assert_eq!(
        keys,
        ["bumped@1.0.0-2", "typo@1.0.0-1"],
        "the removed recipe and the superseded revision are forgotten; an invalid recipe keeps its entry"
    );
    let book = read_json(&farm.state().join("state.json"));
    let saved: Vec<&String> = book["failures"].as_object().unwrap().keys().collect();
    assert_eq!(saved, keys, "state.json follows");
    assert_eq!(d.metric("farmhand_backoff_entries"), Some(2.0));
}

#[test]
fn check_into_a_closed_pipe_is_not_a_crash() {
    let farm = Farm::new();
    farm.write_config("");
    // More than a pipe holds (64 KiB), so the writer meets the closed end.
    let url = format!("/nonexistent/{}", "u".repeat(200));
    for i in 0..500 {
        farm.recipe(
            &format!("r{i:03}"),
            &format!("[upstream]\ngit = \"{url}\"\ntag_pattern = '^v(.*)$'\n"),
            "#!/bin/sh\n",
        );
    }
    let mut child = Command::new(bin())
        .args(["--check", "--config"])
        .arg(farm.config_path())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    // Read one byte, then close the pipe, as `| head -c1` does.
    let mut stdout = child.stdout.take().unwrap();
    let mut one = [0u8; 1];
    stdout.read_exact(&mut one).unwrap();
    drop(stdout);
    let mut err = String::new();
    child
        .stderr
        .take()
        .unwrap()
        .read_to_string(&mut err)
        .unwrap();
    let status = child.wait().unwrap();
    assert_eq!(status.code(), Some(0), "{err}");
    assert!(!err.contains("panicked"), "{err}");
}

#[test]
fn a_broken_repository_holds_builds_until_repaired_and_reloaded() {
    let mut farm = Farm::new();
    let up = Upstream::new(&farm.root.join("up"));
    up.release("v1.0.0");
    farm.write_config("");
    farm.simple_recipe(
        "hello",
        &up,
        "#!/bin/sh\nmkdir -p \"$DESTDIR/x\"\necho \"$FARMHAND_VERSION\" > \"$DESTDIR/x/v\"\n",
        "",
    );
    farm.once_ok();
    let archive = farm.repo().join("index/archive.json");
    let good = std::fs::read(&archive).unwrap();
    std::fs::write(&archive, "{ \"schema_version\": 1, nope").unwrap();
    up.release("v1.1.0");

    // A one-shot run has nothing to serve: it stops, naming the file.
    let out = farm.run(&["--once"]);
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{err}");
    assert!(err.contains(&archive.display().to_string()), "{err}");
    assert!(!err.contains("starting build"), "{err}");

    // The daemon stays up, says why, and builds nothing.
    farm.http = true;
    farm.write_config("");
    let d = farm.start();
    d.wait_log("poll complete", Duration::from_secs(20));
    let s = d.status();
    let why = s["repository_error"].as_str().unwrap_or_default();
    assert!(
        why.contains("archive.json") && why.contains("malformed"),
        "{s:#}"
    );
    assert_eq!(d.get("/healthz").status, 200);
    assert_eq!(d.count("starting build"), 0, "{}", d.logs());
    assert_eq!(
        std::fs::read(&archive).unwrap(),
        b"{ \"schema_version\": 1, nope",
        "the broken index is left for the operator"
    );

    // Repaired and reloaded: builds resume, and only what is new is built.
    std::fs::write(&archive, good).unwrap();
    d.signal("HUP");
    d.wait_log("repository reopened", Duration::from_secs(20));
    d.wait_log("build + publish complete", Duration::from_secs(30));
    let s = d.wait_status(Duration::from_secs(10), "no repository error", |s| {
        s["repository_error"].is_null()
    });
    assert_eq!(s["builds_attempted"], 1, "{s:#}");
    assert_eq!(
        archive_ids(&farm),
        ["hello@1.0.0-1", "hello@1.1.0-1"],
        "1.0.0 is not rebuilt"
    );
}

#[test]
fn a_missing_archive_over_a_published_repository_stops_daemon_and_once() {
    let farm = Farm::new();
    farm.write_config("");
    let up = Upstream::new(&farm.root.join("up"));
    up.release("v1.0.0");
    farm.simple_recipe("hello", &up, "#!/bin/sh\necho hi > \"$DESTDIR/hi\"\n", "");
    farm.once_ok();
    let archive = farm.repo().join("index/archive.json");
    std::fs::remove_file(&archive).unwrap();

    let out = farm.run(&["--once"]);
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{err}");
    assert!(
        err.contains("archive.json") && err.contains("missing"),
        "{err}"
    );
    assert!(!archive.exists(), "no new archive was started");

    let mut d = farm.start();
    assert_eq!(d.wait_exit(Duration::from_secs(20)), 1, "{}", d.logs());
    // The log is read by another thread: it may trail the exit a little.
    d.wait_log("archive.json", Duration::from_secs(10));
    assert!(!archive.exists(), "no new archive was started");

    // Only the active index left (the pool emptied by hand): still refused.
    std::fs::remove_dir_all(farm.repo().join("pool")).unwrap();
    std::fs::create_dir(farm.repo().join("pool")).unwrap();
    let out = farm.run(&["--once"]);
    assert_eq!(out.status.code(), Some(1));
    // An empty repo/ starts a new repository.
    std::fs::remove_dir_all(farm.repo()).unwrap();
    farm.once_ok();
    assert!(archive.exists());
}
