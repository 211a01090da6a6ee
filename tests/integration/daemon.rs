//! Daemon mode end to end: one build at a time, the fair queue, SIGHUP
//! reload under load, SIGTERM during a build, backoff retries without an
//! operator, the stable log messages, and `farmhand demo`.

use crate::util::*;
use std::collections::BTreeSet;
use std::path::Path;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

const SECRET: &[u8] = b"test-secret";
const T: Duration = Duration::from_secs(30);
const HOOKED: &str = "\n[watch]\ngithub_webhook = true\npoll_interval = \"1h\"\n";

/// A build script that installs one file and takes `secs` seconds.
fn script(secs: &str) -> String {
    format!(
        "#!/bin/sh\nsleep {secs}\nmkdir -p \"$DESTDIR/usr/share/$FARMHAND_RECIPE\"\n\
         echo \"$FARMHAND_VERSION\" > \"$DESTDIR/usr/share/$FARMHAND_RECIPE/version\"\n"
    )
}

fn archive_set(farm: &Farm) -> BTreeSet<String> {
    archive_ids(farm).into_iter().collect()
}

/// Every process (not a zombie) whose process group is `pgid`.
fn group_members(pgid: i32) -> Vec<i32> {
    let mut out = Vec::new();
    for e in std::fs::read_dir("/proc").unwrap().flatten() {
        let Ok(pid) = e.file_name().to_string_lossy().parse::<i32>() else {
            continue;
        };
        let Ok(stat) = std::fs::read_to_string(format!("/proc/{pid}/stat")) else {
            continue;
        };
        let Some((_, rest)) = stat.rsplit_once(')') else {
            continue;
        };
        let f: Vec<&str> = rest.split_whitespace().collect();
        // state ppid pgrp ...
        if f.len() > 2 && f[0] != "Z" && f[0] != "X" && f[2] == pgid.to_string() {
            out.push(pid);
        }
    }
    out
}

fn alive(pid: i32) -> bool {
    match std::fs::read_to_string(format!("/proc/{pid}/stat")) {
        Ok(stat) => !matches!(
            stat.rsplit_once(')')
                .and_then(|(_, r)| r.split_whitespace().next()),
            Some("Z") | Some("X")
        ),
        Err(_) => false,
    }
}

/// Checks the published repository: both indexes parse, agree, and every
/// entry's file exists with its hash.
fn assert_repo_intact(farm: &Farm) -> BTreeSet<String> {
    let repo = farm.repo();
    let archive = read_json(&repo.join("index/archive.json"));
    let active = read_json(&repo.join("index/active.json"));
    assert_eq!(archive["kind"], "archive");
    assert_eq!(active["kind"], "active");
    let mut referenced = BTreeSet::new();
    for doc in [&archive, &active] {
        for p in doc["packages"].as_array().unwrap() {
            let url = p["url"].as_str().unwrap();
            let f = repo.join(url);
            assert!(f.is_file(), "{url} listed but missing");
            assert_eq!(
                sha256_file(&f),
                p["hash"]["value"].as_str().unwrap(),
                "{url}"
            );
            referenced.insert(url.to_string());
        }
    }
    // Nothing else (no temp or partial file) under pool/.
    let mut stack = vec![repo.join("pool")];
    while let Some(d) = stack.pop() {
        for e in std::fs::read_dir(&d).unwrap().flatten() {
            let p = e.path();
            if p.is_dir() {
                stack.push(p);
            } else {
                let rel = p.strip_prefix(&repo).unwrap().display().to_string();
                assert!(referenced.contains(&rel), "unlisted file {rel} in the pool");
            }
        }
    }
    archive_set(farm)
}

#[test]
fn builds_never_overlap_across_recipes_polls_and_webhooks() {
    let mut farm = Farm::new();
    farm.http = true;
    let log = farm.root.join("intervals");
    let sh = format!(
        "#!/bin/sh\ns=$(date +%s.%N)\nsleep 0.1\nmkdir -p \"$DESTDIR/x\"\ntouch \"$DESTDIR/x/$FARMHAND_RECIPE\"\n\
         e=$(date +%s.%N)\necho \"$FARMHAND_RECIPE $FARMHAND_VERSION $s $e\" >> '{}'\n",
        log.display()
    );
    let ups: Vec<(String, Upstream)> = ["alpha", "beta", "gamma"]
        .iter()
        .map(|id| {
            let up = Upstream::new(&farm.root.join(format!("{id}-up")));
            up.release("v1.0.0");
            up.release("v1.1.0");
            (id.to_string(), up)
        })
        .collect();
    farm.write_config("");
    for (id, up) in &ups {
        farm.simple_recipe(id, up, &sh, HOOKED);
    }
    let d = farm.start();
    d.wait_event("starting build", &[], T);
    // A burst while the first builds run: new tags and webhooks (some twice).
    for (i, (_, up)) in ups.iter().enumerate() {
        up.release("v1.2.0");
        up.release("v1.3.0");
        for n in 0..2 {
            let r = d.webhook(
                "push",
                &format!("burst-{i}-{n}"),
                &push_payload(&up.url(), "v1.3.0"),
                SECRET,
            );
            assert_eq!(r.status, 202, "{}", r.text());
        }
    }
    d.wait_events("build + publish complete", &[], 12, T);
    let text = std::fs::read_to_string(&log).unwrap();
    let mut iv: Vec<(f64, f64, String)> = text
        .lines()
        .map(|l| {
            let f: Vec<&str> = l.split_whitespace().collect();
            (
                f[2].parse().unwrap(),
                f[3].parse().unwrap(),
                format!("{}@{}", f[0], f[1]),
            )
        })
        .collect();
    assert_eq!(iv.len(), 12, "{text}");
    let built: BTreeSet<String> = iv.iter().map(|x| x.2.clone()).collect();
    let mut want = BTreeSet::new();
    for (id, _) in &ups {
        for v in ["1.0.0", "1.1.0", "1.2.0", "1.3.0"] {
            want.insert(format!("{id}@{v}-1"));
        }
    }
    assert_eq!(built, want, "each version built exactly once");
    iv.sort_by(|a, b| a.0.partial_cmp(&b.0).unwrap());
    for w in iv.windows(2) {
        assert!(
            w[1].0 >= w[0].1,
            "{} started at {} before {} ended at {}",
            w[1].2,
            w[1].0,
            w[0].2,
            w[0].1
        );
    }
    assert_eq!(archive_set(&farm), want);
    let s = d.status();
    assert_eq!(
        (s["builds_attempted"].as_u64(), s["queue_depth"].as_u64()),
        (Some(12), Some(0))
    );
}

#[test]
fn one_recipe_with_many_tags_does_not_starve_another() {
    let mut farm = Farm::new();
    farm.http = true;
    let big = Upstream::new(&farm.root.join("big-up"));
    for i in 0..10 {
        big.release(&format!("v1.{i}.0"));
    }
    let small = Upstream::new(&farm.root.join("small-up"));
    farm.write_config("");
    farm.simple_recipe("big", &big, &script("0.2"), HOOKED);
    farm.simple_recipe("small", &small, &script("0.2"), HOOKED);
    let d = farm.start();
    d.wait_events("starting build", &[("recipe", "big")], 2, T);
    small.release("v2.0.0");
    let r = d.webhook(
        "push",
        "small-1",
        &push_payload(&small.url(), "v2.0.0"),
        SECRET,
    );
    assert_eq!(r.status, 202);
    d.wait_event(
        "poll complete",
        &[("recipe", "small"), ("matches_emitted", "1")],
        T,
    );
    let big_started_before = d.events("starting build", &[("recipe", "big")]).len();
    d.wait_event("starting build", &[("recipe", "small")], T);
    let order: Vec<String> = d
        .events("starting build", &[])
        .iter()
        .map(|l| field(l, "recipe").unwrap())
        .collect();
    let small_at = order.iter().position(|r| r == "small").unwrap();
    // At most the one big build whose turn came first runs in between.
    assert!(
        small_at <= big_started_before + 1,
        "small started as build {} though it was queued when {big_started_before} big builds had started: {order:?}",
        small_at + 1
    );
    assert!(small_at < 9, "small waited for big's backlog: {order:?}");
    // And the big backlog still completes, newest first.
    d.wait_events("build + publish complete", &[("recipe", "big")], 10, T);
    let big_versions: Vec<String> = d
        .events("starting build", &[("recipe", "big")])
        .iter()
        .map(|l| field(l, "version").unwrap())
        .collect();
    let want: Vec<String> = (0..10).rev().map(|i| format!("1.{i}.0-1")).collect();
    assert_eq!(big_versions, want);
}

#[test]
fn sighup_adds_removes_and_changes_recipes_while_a_build_runs() {
    let mut farm = Farm::new();
    farm.http = true;
    let gate = farm.root.join("gate");
    let changed_up = Upstream::new(&farm.root.join("changed-up"));
    changed_up.release("v1.0.0");
    let slow_up = Upstream::new(&farm.root.join("slow-up"));
    let gone_up = Upstream::new(&farm.root.join("gone-up"));
    let added_up = Upstream::new(&farm.root.join("added-up"));
    added_up.release("v1.0.0");
    farm.write_config("");
    farm.simple_recipe("changed", &changed_up, &script("0"), HOOKED);
    let slow_sh = format!(
        "#!/bin/sh\n{}mkdir -p \"$DESTDIR/x\"\ntouch \"$DESTDIR/x/slow\"\n",
        wait_file_sh(&gate)
    );
    farm.simple_recipe("slow", &slow_up, &slow_sh, HOOKED);
    farm.simple_recipe("gone", &gone_up, &script("0"), HOOKED);
    let floor_up = Upstream::new(&farm.root.join("floor-up"));
    farm.simple_recipe("floor", &floor_up, &script("0"), HOOKED);
    let d = farm.start();
    d.wait_event("build + publish complete", &[("recipe", "changed")], T);
    for id in ["slow", "gone", "floor"] {
        d.wait_event("poll complete", &[("recipe", id)], T);
    }

    // A slow build in flight, two builds of `gone` queued behind it.
    slow_up.release("v1.0.0");
    assert_eq!(
        d.webhook(
            "push",
            "s1",
            &push_payload(&slow_up.url(), "v1.0.0"),
            SECRET
        )
        .status,
        202
    );
    d.wait_status(T, "slow building", |s| {
        s["in_flight"]["recipe"] == "slow" && s["in_flight"]["phase"] == "building"
    });
    gone_up.release("v1.0.0");
    gone_up.release("v1.1.0");
    assert_eq!(
        d.webhook(
            "push",
            "g1",
            &push_payload(&gone_up.url(), "v1.1.0"),
            SECRET
        )
        .status,
        202
    );
    floor_up.release("v1.0.0");
    floor_up.release("v2.0.0");
    let r = d.webhook(
        "push",
        "f1",
        &push_payload(&floor_up.url(), "v2.0.0"),
        SECRET,
    );
    assert_eq!(r.status, 202);
    d.wait_status(T, "gone and floor queued", |s| s["queue_depth"] == 4);

    // Edit the roster: remove `gone`, add `added`, change `changed`
    // (revision bump, longer interval), raise `floor`'s min_version.
    farm.simple_recipe(
        "floor",
        &floor_up,
        &script("0"),
        "min_version = \"2.0.0\"\n",
    );
    std::fs::remove_dir_all(farm.root.join("recipes/gone")).unwrap();
    farm.simple_recipe("added", &added_up, &script("0"), HOOKED);
    farm.simple_recipe(
        "changed",
        &changed_up,
        &script("0"),
        "revision = 2\n[watch]\ngithub_webhook = true\npoll_interval = \"2h\"\n",
    );

    // Hammer the HTTP server through the reload.
    let stop = Arc::new(AtomicBool::new(false));
    let (ok, failed) = (Arc::new(AtomicUsize::new(0)), Arc::new(AtomicUsize::new(0)));
    let hammer = {
        let (addr, stop, ok, failed) = (
            d.addr.clone().unwrap(),
            stop.clone(),
            ok.clone(),
            failed.clone(),
        );
        std::thread::spawn(move || {
            let start = Instant::now();
            while !stop.load(Ordering::Relaxed) && start.elapsed() < T {
                let good = std::panic::catch_unwind(|| {
                    request(&addr, "GET", "/status", &[], b"").status == 200
                })
                .unwrap_or(false);
                if good { &ok } else { &failed }.fetch_add(1, Ordering::Relaxed);
            }
        })
    };
    wait_for(T, "requests before the reload", || {
        (ok.load(Ordering::Relaxed) >= 20).then_some(())
    });
    let before_hup = ok.load(Ordering::Relaxed);
    d.signal("HUP");
    let reloaded = d.wait_event("recipes reloaded", &[], T);
    assert_eq!(
        field(&reloaded, "count").as_deref(),
        Some("4"),
        "{reloaded}"
    );
    let dropped = d.wait_event("queued builds dropped by reload", &[], T);
    assert_eq!(
        field(&dropped, "dropped").as_deref(),
        Some("3"),
        "{dropped}"
    );
    // New and changed recipes are polled at once.
    d.wait_event(
        "poll complete",
        &[("recipe", "added"), ("matches_emitted", "1")],
        T,
    );
    d.wait_events("poll complete", &[("recipe", "changed")], 2, T);
    let last = d
        .events("poll complete", &[("recipe", "changed")])
        .pop()
        .unwrap();
    assert_eq!(
        field(&last, "matches_emitted").as_deref(),
        Some("1"),
        "revision bump: {last}"
    );
    wait_for(T, "requests after the reload", || {
        (ok.load(Ordering::Relaxed) >= before_hup + 20).then_some(())
    });
    stop.store(true, Ordering::Relaxed);
    hammer.join().unwrap();
    assert_eq!(
        failed.load(Ordering::Relaxed),
        0,
        "requests failed around the reload"
    );
    assert_eq!(
        d.events("webhook server listening", &[]).len(),
        1,
        "the server never bounced"
    );

    let s = d.status();
    assert_eq!(s["in_flight"]["recipe"], "slow", "the build continues");
    assert_eq!(
        s["recipes"],
        serde_json::json!(["added", "changed", "floor", "slow"])
    );
    assert!(s["polls"].get("gone").is_none(), "{s:#}");
    let queued: BTreeSet<String> = s["queue"]
        .as_array()
        .unwrap()
        .iter()
        .map(|q| {
            format!(
                "{}@{}",
                q["recipe"].as_str().unwrap(),
                q["version"].as_str().unwrap()
            )
        })
        .collect();
    assert_eq!(
        queued,
        ["added@1.0.0-1", "changed@1.0.0-2", "floor@2.0.0-1"]
            .iter()
            .map(std::string::ToString::to_string)
            .collect()
    );
    let p = &s["polls"]["changed"];
    let gap = humantime::parse_rfc3339(p["next_at"].as_str().unwrap())
        .unwrap()
        .duration_since(humantime::parse_rfc3339(p["last_at"].as_str().unwrap()).unwrap())
        .unwrap()
        .as_secs();
    assert!(
        (7190..=7600).contains(&gap),
        "changed now polls every 2h: next in {gap}s"
    );
    // The removed recipe no longer reacts to anything.
    let r = d.webhook(
        "push",
        "g2",
        &push_payload(&gone_up.url(), "v1.1.0"),
        SECRET,
    );
    assert_eq!(r.status, 200, "{}", r.text());

    std::fs::write(&gate, "").unwrap();
    d.wait_event("build + publish complete", &[("recipe", "slow")], T);
    d.wait_event("build + publish complete", &[("recipe", "added")], T);
    d.wait_event(
        "build + publish complete",
        &[("recipe", "changed"), ("version", "1.0.0-2")],
        T,
    );
    d.wait_event("build + publish complete", &[("recipe", "floor")], T);
    d.wait_status(T, "idle", |s| {
        s["in_flight"].is_null() && s["queue_depth"] == 0
    });
    let want: BTreeSet<String> = [
        "changed@1.0.0-1",
        "changed@1.0.0-2",
        "slow@1.0.0-1",
        "added@1.0.0-1",
        "floor@2.0.0-1",
    ]
    .iter()
    .map(std::string::ToString::to_string)
    .collect();
    assert_eq!(assert_repo_intact(&farm), want);
    assert!(d.events("starting build", &[("recipe", "gone")]).is_empty());
    assert_eq!(d.events("polling upstream", &[("recipe", "gone")]).len(), 2);
}

#[test]
fn sigterm_during_a_build_kills_its_process_group_and_exits_cleanly() {
    let mut farm = Farm::new();
    farm.http = true;
    let up = Upstream::new(&farm.root.join("up"));
    up.release("v1.0.0");
    farm.write_config("[build]\nshutdown_grace = \"1s\"\n");
    let (bg, me) = (farm.root.join("bg.pid"), farm.root.join("script.pid"));
    farm.simple_recipe(
        "victim",
        &up,
        &format!(
            "#!/bin/sh\nmkdir -p \"$DESTDIR/x\"\ntouch \"$DESTDIR/x/$FARMHAND_VERSION\"\n\
             if [ \"$FARMHAND_VERSION\" = 1.1.0-1 ]; then\n\
             (trap '' TERM; exec sleep 300) &\necho $! > '{bg}.tmp' && mv '{bg}.tmp' '{bg}'\n\
             echo $$ > '{me}.tmp' && mv '{me}.tmp' '{me}'\n{}fi\n",
            wait_file_sh(&farm.root.join("never")),
            bg = bg.display(),
            me = me.display()
        ),
        HOOKED,
    );
    let mut d = farm.start();
    d.wait_event("build + publish complete", &[("version", "1.0.0-1")], T);
    up.release("v1.1.0");
    assert_eq!(
        d.webhook("push", "t1", &push_payload(&up.url(), "v1.1.0"), SECRET)
            .status,
        202
    );
    wait_for(T, "the build script and its background child", || {
        (bg.exists() && me.exists()).then_some(())
    });
    let bg_pid: i32 = std::fs::read_to_string(&bg)
        .unwrap()
        .trim()
        .parse()
        .unwrap();
    let pgid: i32 = std::fs::read_to_string(&me)
        .unwrap()
        .trim()
        .parse()
        .unwrap();
    assert!(alive(bg_pid));
    assert!(group_members(pgid).contains(&bg_pid));
    let t = Instant::now();
    d.signal("TERM");
    let code = d.wait_exit(Duration::from_secs(15));
    let took = t.elapsed();
    eprintln!("SIGTERM to exit: {took:?} (shutdown_grace 1s)");
    assert_eq!(code, 0, "{}", d.logs());
    assert!(
        took < Duration::from_secs(5),
        "exit took {took:?} with shutdown_grace = 1s"
    );
    wait_for(
        Duration::from_secs(5),
        "the build's process group to be gone",
        || group_members(pgid).is_empty().then_some(()),
    );
    assert!(!alive(bg_pid), "background child {bg_pid} survived");

    // The last line; once it is read, the whole log is.
    d.wait_event("stopped", &[], T);
    let logs = d.logs();
    let cancelled = d.wait_event(
        "build cancelled",
        &[("recipe", "victim"), ("version", "1.1.0-1")],
        T,
    );
    assert!(cancelled.contains("level=WARN"), "{cancelled}");
    assert!(d.events("build failed", &[]).is_empty(), "{logs}");
    let state = read_json(&farm.state().join("state.json"));
    assert_eq!(
        state["failures"],
        serde_json::json!({}),
        "a cancelled build is not a failure"
    );
    let want: BTreeSet<String> = ["victim@1.0.0-1".to_string()].into();
    assert_eq!(assert_repo_intact(&farm), want);
    // Nothing of the cancelled build remains staged.
    for dir in ["stage", "sources"] {
        let p = farm.state().join(dir);
        let left: Vec<_> = std::fs::read_dir(&p)
            .map(|r| r.flatten().collect())
            .unwrap_or_default();
        assert!(left.is_empty(), "{} not empty: {left:?}", p.display());
    }
}

#[test]
fn failing_build_is_retried_after_its_backoff_and_then_cleared() {
    let mut farm = Farm::new();
    farm.http = true;
    let up = Upstream::new(&farm.root.join("up"));
    up.release("v1.0.0");
    farm.write_config("[backoff]\nschedule = [\"2s\", \"1h\"]\n");
    let recipe = farm.simple_recipe("flaky", &up, "#!/bin/sh\necho not yet\nexit 1\n", "");
    let d = farm.start();
    let failed = d.wait_event(
        "build failed",
        &[("recipe", "flaky"), ("version", "1.0.0-1")],
        T,
    );
    let failed_seen = Instant::now();
    assert_eq!(
        field(&failed, "next_retry_after").as_deref(),
        Some("2s"),
        "{failed}"
    );
    let s = d.status();
    assert_eq!(s["failures"]["flaky@1.0.0-1"]["failures"], 1, "{s:#}");
    let state = read_json(&farm.state().join("state.json"));
    assert_eq!(
        state["failures"]["flaky@1.0.0-1"]["failures"], 1,
        "{state:#}"
    );

    // The operator fixes the script and does nothing else.
    std::fs::write(recipe.join("build.sh"), script("0")).unwrap();
    d.wait_events("starting build", &[("recipe", "flaky")], 2, T);
    let waited = failed_seen.elapsed();
    assert!(
        waited >= Duration::from_millis(1500) && waited < Duration::from_secs(10),
        "retried after {waited:?}, backoff step 2s"
    );
    d.wait_event("build + publish complete", &[("recipe", "flaky")], T);
    let s = d.wait_status(T, "failures cleared", |s| {
        s["failures"] == serde_json::json!({})
    });
    assert_eq!(
        (s["builds_failed"].as_u64(), s["builds_succeeded"].as_u64()),
        (Some(1), Some(1))
    );
    let state = read_json(&farm.state().join("state.json"));
    assert_eq!(state["failures"], serde_json::json!({}), "{state:#}");
    assert_eq!(d.metric("farmhand_backoff_entries"), Some(0.0));
    let b: serde_json::Value = serde_json::from_slice(&d.get("/builds").body).unwrap();
    assert_eq!(
        (&b[0]["state"], &b[1]["state"]),
        (&"succeeded".into(), &"failed".into())
    );
}

#[test]
fn log_messages_are_verbatim_with_their_fields() {
    let mut farm = Farm::new();
    farm.http = true;
    let good = Upstream::new(&farm.root.join("good-up"));
    good.release("v1.0.0");
    let bad = Upstream::new(&farm.root.join("bad-up"));
    bad.release("v0.9.0");
    farm.write_config("");
    farm.simple_recipe("good", &good, &script("0"), HOOKED);
    farm.simple_recipe("bad", &bad, "#!/bin/sh\nexit 7\n", "");
    farm.recipe(
        "broken",
        "[upstream]\ngit = \"/nowhere\"\ntag_patern = '^v(.*)$'\n",
        "#!/bin/sh\n",
    );
    let mut d = farm.start();
    let ev = |msg: &str, fields: &[(&str, &str)]| d.wait_event(msg, fields, T);
    ev(
        "farmhand starting",
        &[("farm_id", "test-farm"), ("mode", "daemon")],
    );
    ev("recipe roster loaded", &[("count", "2")]);
    let invalid = ev("recipe invalid", &[("recipe", "broken")]);
    assert!(invalid.contains("level=ERROR"), "{invalid}");
    let err = field(&invalid, "err").unwrap();
    assert!(
        err.contains("recipe.toml") && err.contains("tag_patern"),
        "{invalid}"
    );
    ev(
        "webhook server listening",
        &[("addr", d.addr.clone().unwrap().as_str())],
    );
    ev(
        "polling upstream",
        &[("recipe", "good"), ("git", &good.url()), ("source", "poll")],
    );
    ev(
        "poll complete",
        &[
            ("recipe", "good"),
            ("tags_seen", "1"),
            ("matches_emitted", "1"),
        ],
    );
    ev(
        "starting build",
        &[
            ("recipe", "good"),
            ("version", "1.0.0-1"),
            ("tag", "v1.0.0"),
        ],
    );
    ev(
        "build + publish complete",
        &[("recipe", "good"), ("version", "1.0.0-1")],
    );
    let failed = ev(
        "build failed",
        &[
            ("recipe", "bad"),
            ("version", "0.9.0-1"),
            ("next_retry_after", "1m"),
        ],
    );
    assert!(failed.contains("level=ERROR"), "{failed}");
    assert!(
        field(&failed, "err")
            .unwrap()
            .contains("exited with status 7"),
        "{failed}"
    );

    assert_eq!(
        d.webhook("push", "l1", &push_payload(&good.url(), "v1.0.0"), SECRET)
            .status,
        202
    );
    ev(
        "webhook accepted, triggering immediate poll",
        &[("recipe", "good"), ("delivery", "l1")],
    );
    ev(
        "polling upstream",
        &[("recipe", "good"), ("source", "webhook")],
    );
    assert_eq!(
        d.webhook("push", "l2", &push_payload(&good.url(), "v1.0.0"), b"wrong")
            .status,
        401
    );
    let invalid_sig = ev("webhook signature invalid", &[("delivery", "l2")]);
    assert!(invalid_sig.contains("level=WARN"), "{invalid_sig}");
    assert!(
        !d.logs().contains("test-secret"),
        "the secret is never logged"
    );

    d.signal("HUP");
    ev("recipes reloaded", &[("count", "2"), ("invalid", "1")]);
    d.wait_events("recipe invalid", &[("recipe", "broken")], 2, T);
    d.signal("TERM");
    assert_eq!(d.wait_exit(T), 0);
}

#[test]
fn demo_publishes_signed_greet_and_stops_on_sigint() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().join("demo");
    let mut d = spawn_daemon(
        &[
            "demo",
            "--dir",
            dir.to_str().unwrap(),
            "--addr",
            "127.0.0.1:0",
            "--log-format",
            "logfmt",
        ],
        tmp.path(),
        true,
    );
    let addr = d.addr.clone().unwrap();
    assert!(!addr.ends_with(":0"), "{addr}");
    d.wait_events("build + publish complete", &[("recipe", "greet")], 3, T);
    let s = d.wait_status(T, "demo idle", |s| s["in_flight"].is_null());
    assert_eq!(s["farm_id"], "demo-farm");
    assert_eq!(s["recipes"], serde_json::json!(["greet"]));
    assert_eq!(
        (s["builds_succeeded"].as_u64(), s["builds_failed"].as_u64()),
        (Some(3), Some(0))
    );
    assert_eq!(s["polls"]["greet"]["ok"], true);
    assert_eq!(s["polls"]["greet"]["tags_seen"], 3);
    assert_eq!(s["failures"], serde_json::json!({}));

    // The banner's control line works as printed: pause, then resume.
    let line = d
        .logs()
        .lines()
        .find_map(|l| l.trim().strip_prefix("control:").map(str::to_string))
        .expect("the banner's control line");
    let words: Vec<&str> = line.split_whitespace().collect();
    assert_eq!(words.last(), Some(&"greet"), "{line}");
    let ctl = |action: &str| {
        let mut args = words[1..].to_vec();
        *args.last_mut().unwrap() = "greet";
        let n = args.len();
        args[n - 2] = action;
        let out = std::process::Command::new(words[0])
            .args(&args)
            .output()
            .unwrap();
        assert!(
            out.status.success(),
            "{line}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
    };
    ctl("pause");
    assert_eq!(d.status()["paused"], serde_json::json!(["greet"]));
    ctl("resume");
    assert_eq!(d.status()["paused"], serde_json::json!([]));
    let page = d.http("GET", "/", &[("Accept", "text/html")], b"").text();
    assert!(
        page.contains("data-control=\"on\""),
        "the console offers control"
    );

    let repo = dir.join("state/repo");
    let archive = read_json(&repo.join("index/archive.json"));
    let mut entries = index_ids(&archive);
    entries.sort();
    assert_eq!(
        entries,
        [
            "greet-doc@1.0.0-1",
            "greet-doc@1.1.0-1",
            "greet-doc@1.2.0-1",
            "greet@1.0.0-1",
            "greet@1.1.0-1",
            "greet@1.2.0-1"
        ]
    );
    let active = read_json(&repo.join("index/active.json"));
    assert!(active["packages"]
        .as_array()
        .unwrap()
        .iter()
        .all(|p| p["version"] == "1.2.0-1"));
    verify_signed(&repo, "archive.json");
    verify_signed(&repo, "active.json");

    // The printed hints name the address actually bound and a webhook that works.
    let logs = d.logs();
    assert!(
        logs.contains(&format!("curl http://{addr}/status")),
        "{logs}"
    );
    assert!(!logs.contains("127.0.0.1:0/"), "{logs}");
    let upstream = dir.canonicalize().unwrap().join("upstream");
    let hint = format!("\"clone_url\":\"{}\"", upstream.display());
    assert!(logs.contains(&hint), "{logs}");
    let secret = std::fs::read_to_string(dir.join("webhook-secret")).unwrap();
    let body = format!(
        "{{\"repository\":{{\"clone_url\":\"{}\"}}}}",
        upstream.display()
    );
    let r = d.webhook("push", "demo-1", body.as_bytes(), secret.trim().as_bytes());
    assert_eq!(r.status, 202, "{}", r.text());

    d.signal("INT");
    assert_eq!(d.wait_exit(T), 0, "{}", d.logs());
}

fn verify_signed(repo: &Path, file: &str) {
    use ed25519_dalek::{Signature, Verifier, VerifyingKey};
    let key_hex = std::fs::read_to_string(repo.join("keys/demo-farm.pub")).unwrap();
    let key: [u8; 32] = hex::decode(key_hex.trim()).unwrap().try_into().unwrap();
    let key = VerifyingKey::from_bytes(&key).unwrap();
    let bytes = std::fs::read(repo.join("index").join(file)).unwrap();
    let sig_hex = std::fs::read_to_string(repo.join("index").join(format!("{file}.sig"))).unwrap();
    let sig = Signature::from_slice(&hex::decode(sig_hex.trim()).unwrap()).unwrap();
    key.verify(&bytes, &sig)
        .unwrap_or_else(|e| panic!("{file}: signature does not verify: {e}"));
}
