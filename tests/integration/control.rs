//! The control API against the real daemon (DESIGN.md section 15): poll
//! now, pause and resume (across webhooks, SIGHUP and restarts), cancel of
//! a build that ignores SIGTERM, retry of a failed version, every refusal,
//! the token file's checks, and `farmhand ctl` driving all of it.

use crate::util::*;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};
use std::time::{Duration, Instant};

const SECRET: &[u8] = b"test-secret";
const TOKEN: &str = "control-0123456789abcdef0123456789abcdef";
const T: Duration = Duration::from_secs(30);
const HOOKED: &str = "\n[watch]\ngithub_webhook = true\npoll_interval = \"1h\"\n";

/// A build script that installs one file.
const OK: &str = "#!/bin/sh\nmkdir -p \"$DESTDIR/usr/share/$FARMHAND_RECIPE\"\n\
                  echo \"$FARMHAND_VERSION\" > \"$DESTDIR/usr/share/$FARMHAND_RECIPE/version\"\n";

/// A farm with HTTP and the control API on (token file `control-token`,
/// mode 0600), `sections` appended to its config.
fn control_farm(sections: &str) -> Farm {
    let mut farm = Farm::new();
    farm.http = true;
    write_control_config(&farm, sections);
    farm
}

fn write_control_config(farm: &Farm, sections: &str) {
    farm.write_config(sections);
    let line = "webhook_secret_file = \"webhook-secret\"\n";
    let text = std::fs::read_to_string(farm.config_path()).unwrap();
    assert!(text.contains(line));
    std::fs::write(
        farm.config_path(),
        text.replacen(
            line,
            &format!("{line}control_token_file = \"control-token\"\n"),
            1,
        ),
    )
    .unwrap();
    write_token(farm, &format!("{TOKEN}\n"), 0o600);
}

fn token_path(farm: &Farm) -> PathBuf {
    farm.root.join("control-token")
}

fn write_token(farm: &Farm, text: &str, mode: u32) {
    let p = token_path(farm);
    std::fs::write(&p, text).unwrap();
    std::fs::set_permissions(&p, std::fs::Permissions::from_mode(mode)).unwrap();
}

/// `POST path` with the right token.
fn act(d: &Daemon, path: &str) -> HttpResponse {
    let auth = format!("Bearer {TOKEN}");
    d.http("POST", path, &[("Authorization", &auth)], b"")
}

/// The `message` of a control action's JSON answer.
fn message(r: &HttpResponse) -> String {
    let j: serde_json::Value =
        serde_json::from_slice(&r.body).unwrap_or_else(|e| panic!("not JSON ({e}): {}", r.text()));
    j["message"].as_str().unwrap_or_default().to_string()
}

/// The id of the build in flight.
fn running_build(d: &Daemon) -> u64 {
    let s = d.wait_status(T, "a build in flight", |s| !s["in_flight"].is_null());
    s["in_flight"]["build_id"].as_u64().unwrap()
}

fn build(d: &Daemon, id: u64) -> serde_json::Value {
    d.builds()
        .into_iter()
        .find(|b| b["id"] == id)
        .unwrap_or_else(|| panic!("no build {id} in /builds"))
}

#[test]
fn control_requests_are_refused_without_the_token_or_a_target() {
    let farm = control_farm("");
    let up = Upstream::new(&farm.root.join("up"));
    up.release("v1.0.0");
    farm.simple_recipe("libz", &up, OK, "");
    let d = farm.start();
    d.wait_event("build + publish complete", &[("recipe", "libz")], T);
    let finished = d.builds()[0]["id"].as_u64().unwrap();

    // No token, a wrong one, another scheme: 401, and nothing done.
    let r = d.http("POST", "/recipes/libz/pause", &[], b"");
    assert_eq!(r.status, 401, "{}", r.text());
    assert!(r.text().contains("Authorization: Bearer"), "{}", r.text());
    assert!(r.header("www-authenticate").unwrap().starts_with("Bearer"));
    for auth in [
        "Bearer wrong-token-wrong-token-wrong-token".to_string(),
        format!("Bearer {TOKEN}x"),
        format!("Basic {TOKEN}"),
        format!("Bearer {}", &TOKEN[..TOKEN.len() - 1]),
    ] {
        let r = d.http(
            "POST",
            "/recipes/libz/pause",
            &[("Authorization", &auth)],
            b"",
        );
        assert_eq!(r.status, 401, "{auth}: {}", r.text());
    }
    assert!(d.status()["paused"].as_array().unwrap().is_empty());
    d.wait_log("control request refused: wrong token", T);

    // Wrong method: 405 naming POST, token or not.
    for (method, path) in [
        ("GET", "/recipes/libz/poll"),
        ("HEAD", "/recipes/libz/pause"),
        ("PUT", "/recipes/libz/resume"),
        ("GET", "/builds/1/cancel"),
        ("DELETE", "/failures/libz@1.0.0-1/retry"),
    ] {
        let auth = format!("Bearer {TOKEN}");
        let r = d.http(method, path, &[("Authorization", &auth)], b"");
        assert_eq!(r.status, 405, "{method} {path}");
        assert_eq!(r.header("allow"), Some("POST"), "{method} {path}");
    }

    // Unknown targets: 404; a build that ended: 409.
    for path in [
        "/recipes/nope/poll",
        "/recipes/nope/pause",
        "/recipes/nope/resume",
        "/builds/999/cancel",
        "/builds/zero/cancel",
        "/failures/libz@9.9.9-1/retry",
        "/failures/not-a-key/retry",
        "/failures/nope@1.0.0-1/retry",
    ] {
        let r = act(&d, path);
        assert_eq!(r.status, 404, "{path}: {}", r.text());
        assert!(r.header("content-type").unwrap().starts_with("text/plain"));
    }
    let r = act(&d, &format!("/builds/{finished}/cancel"));
    assert_eq!(r.status, 409, "{}", r.text());
    assert!(r.text().contains("not running"), "{}", r.text());

    // Nothing was carried out, and the token never reached the log.
    assert!(d.events("control action", &[]).is_empty());
    for action in ["poll", "pause", "resume", "cancel", "retry"] {
        assert_eq!(
            d.metric(&format!(
                "farmhand_control_actions_total{{action=\"{action}\"}}"
            )),
            Some(0.0)
        );
    }
    assert!(!d.logs().contains(&TOKEN[8..]), "{}", d.logs());
}

#[test]
fn the_token_file_is_checked_and_the_api_is_off_without_one() {
    let mut farm = Farm::new();
    farm.http = true;
    farm.write_config("");
    let up = Upstream::new(&farm.root.join("up"));
    up.release("v1.0.0");
    farm.simple_recipe("libz", &up, OK, "");
    let config = farm.config_path().display().to_string();

    // Off: 403 naming the key and the config file.
    let d = farm.start();
    let r = act(&d, "/recipes/libz/pause");
    assert_eq!(r.status, 403, "{}", r.text());
    assert_eq!(
        r.text().trim(),
        format!("control API disabled: set [http].control_token_file in {config}")
    );
    let r = d.http("GET", "/recipes/libz/pause", &[], b"");
    assert_eq!(r.status, 405);
    drop(d);

    // A short token or a file others may read: a config error naming the
    // file, at start and in --check; a missing file: a runtime error.
    write_control_config(&farm, "");
    let file = token_path(&farm).display().to_string();
    for (text, mode, want) in [
        ("too-short-token\n", 0o600, "fewer than the 32 required"),
        (&format!("{TOKEN}\n") as &str, 0o644, "mode 0644"),
        (&format!("{TOKEN}\n"), 0o660, "mode 0660"),
    ] {
        write_token(&farm, text, mode);
        for args in [&["--check"][..], &[]] {
            let out = farm.run(args);
            let all = format!(
                "{}{}",
                String::from_utf8_lossy(&out.stdout),
                String::from_utf8_lossy(&out.stderr)
            );
            assert_eq!(out.status.code(), Some(2), "{args:?} {mode:o}: {all}");
            assert!(all.contains(&file) && all.contains(want), "{all}");
            assert!(!all.contains(TOKEN), "{all}");
        }
    }
    std::fs::remove_file(token_path(&farm)).unwrap();
    let out = farm.run(&[]);
    assert_eq!(out.status.code(), Some(1), "{out:?}");
    assert!(String::from_utf8_lossy(&out.stderr).contains(&file));
    let out = farm.run(&["--check"]);
    assert_eq!(out.status.code(), Some(2), "{out:?}");

    // Trailing whitespace is trimmed; 0640 is fine.
    write_token(&farm, &format!("{TOKEN} \n\n"), 0o640);
    let out = farm.run(&["--check"]);
    assert_eq!(out.status.code(), Some(0), "{out:?}");
    let d = farm.start();
    assert_eq!(act(&d, "/recipes/libz/pause").status, 200);

    // SIGHUP re-reads it: a new token replaces the old one; a bad one is
    // refused and the current one kept.
    write_token(&farm, "another-token-0123456789abcdef0123456789\n", 0o600);
    d.signal("HUP");
    d.wait_log("recipes reloaded", T);
    assert_eq!(act(&d, "/recipes/libz/resume").status, 401);
    let auth = "Bearer another-token-0123456789abcdef0123456789";
    let r = d.http(
        "POST",
        "/recipes/libz/resume",
        &[("Authorization", auth)],
        b"",
    );
    assert_eq!(r.status, 200, "{}", r.text());
    write_token(&farm, "short\n", 0o600);
    d.signal("HUP");
    d.wait_log("control token not reloaded", T);
    let r = d.http(
        "POST",
        "/recipes/libz/pause",
        &[("Authorization", auth)],
        b"",
    );
    assert_eq!(r.status, 200, "{}", r.text());
}

#[test]
fn poll_now_pause_and_resume_across_webhooks_reloads_and_restarts() {
    let farm = control_farm("");
    let up = Upstream::new(&farm.root.join("up"));
    up.release("v1.0.0");
    farm.simple_recipe("libz", &up, OK, HOOKED);
    let other = Upstream::new(&farm.root.join("other-up"));
    other.release("v1.0.0");
    farm.simple_recipe("other", &other, OK, "");
    let mut d = farm.start();
    d.wait_event(
        "build + publish complete",
        &[("recipe", "libz"), ("version", "1.0.0-1")],
        T,
    );

    // Poll now.
    up.release("v1.1.0");
    let r = act(&d, "/recipes/libz/poll");
    assert_eq!(r.status, 202, "{}", r.text());
    assert_eq!(message(&r), "polling libz");
    d.wait_event(
        "build + publish complete",
        &[("recipe", "libz"), ("version", "1.1.0-1")],
        T,
    );
    d.wait_event(
        "control action",
        &[("action", "poll"), ("recipe", "libz")],
        T,
    );

    // Pause (twice: idempotent); a poll is refused.
    for _ in 0..2 {
        let r = act(&d, "/recipes/libz/pause");
        assert_eq!(r.status, 200, "{}", r.text());
    }
    assert_eq!(d.status()["paused"], serde_json::json!(["libz"]));
    let r = act(&d, "/recipes/libz/poll");
    assert_eq!(r.status, 409, "{}", r.text());
    assert!(r.text().contains("paused"), "{}", r.text());
    assert_eq!(
        d.metric("farmhand_control_actions_total{action=\"pause\"}"),
        Some(2.0)
    );
    assert_eq!(
        d.metric("farmhand_control_actions_total{action=\"poll\"}"),
        Some(1.0)
    );

    // A webhook for it answers 200 and triggers nothing, also after SIGHUP.
    up.release("v1.2.0");
    let polls = || d.events("polling upstream", &[("recipe", "libz")]).len();
    let before = polls();
    let r = d.webhook("push", "p1", &push_payload(&up.url(), "v1.2.0"), SECRET);
    assert_eq!(r.status, 200, "{}", r.text());
    d.signal("HUP");
    d.wait_log("recipes reloaded", T);
    assert_eq!(d.status()["paused"], serde_json::json!(["libz"]));
    let r = d.webhook("push", "p2", &push_payload(&up.url(), "v1.2.0"), SECRET);
    assert_eq!(r.status, 200, "{}", r.text());
    std::thread::sleep(Duration::from_secs(1));
    assert_eq!(polls(), before, "{}", d.logs());
    let state = read_json(&farm.state().join("state.json"));
    assert_eq!(state["paused"], serde_json::json!(["libz"]), "{state:#}");

    // A restart keeps it paused: the start-up polls leave it out.
    d.signal("TERM");
    assert_eq!(d.wait_exit(T), 0);
    let d = farm.start();
    d.wait_event("poll complete", &[("recipe", "other")], T);
    assert_eq!(d.status()["paused"], serde_json::json!(["libz"]));
    std::thread::sleep(Duration::from_millis(500));
    assert!(d
        .events("polling upstream", &[("recipe", "libz")])
        .is_empty());

    // Resume polls at once, and the new tag is built.
    let r = act(&d, "/recipes/libz/resume");
    assert_eq!(r.status, 200, "{}", r.text());
    assert_eq!(message(&r), "libz resumed; polling it now");
    d.wait_event(
        "build + publish complete",
        &[("recipe", "libz"), ("version", "1.2.0-1")],
        T,
    );
    assert_eq!(d.status()["paused"], serde_json::json!([]));
    let line = d.wait_event(
        "control action",
        &[("action", "resume"), ("recipe", "libz")],
        T,
    );
    assert!(line.contains("level=INFO"), "{line}");
    let state = read_json(&farm.state().join("state.json"));
    assert_eq!(state["paused"], serde_json::json!([]), "{state:#}");
}

#[test]
fn a_paused_recipe_keeps_its_queue_and_builds_it_once_resumed() {
    let farm = control_farm("");
    let up = Upstream::new(&farm.root.join("up"));
    up.release("v1.0.0");
    up.release("v1.1.0");
    let go = farm.root.join("go");
    farm.simple_recipe(
        "slow",
        &up,
        &format!("#!/bin/sh\n{}{OK}", wait_file_sh(&go)),
        "",
    );
    let d = farm.start();
    let id = running_build(&d);
    assert_eq!(build(&d, id)["version"], "1.1.0-1");
    assert_eq!(act(&d, "/recipes/slow/pause").status, 200);
    // The build in flight goes on; the queued version waits.
    std::fs::write(&go, "").unwrap();
    d.wait_event(
        "build + publish complete",
        &[("recipe", "slow"), ("version", "1.1.0-1")],
        T,
    );
    std::thread::sleep(Duration::from_millis(700));
    let s = d.status();
    assert!(s["in_flight"].is_null(), "{s:#}");
    assert_eq!(s["queue_depth"], 1, "{s:#}");
    assert_eq!(s["queue"][0]["version"], "1.0.0-1", "{s:#}");
    assert!(d
        .events("starting build", &[("version", "1.0.0-1")])
        .is_empty());
    assert_eq!(act(&d, "/recipes/slow/resume").status, 200);
    d.wait_event(
        "build + publish complete",
        &[("recipe", "slow"), ("version", "1.0.0-1")],
        T,
    );
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
        if f.len() > 2 && f[0] != "Z" && f[0] != "X" && f[2] == pgid.to_string() {
            out.push(pid);
        }
    }
    out
}

/// A build script that ignores SIGTERM, as does a child it leaves in the
/// background; it writes both pids and runs until killed.
fn stubborn_script(dir: &Path) -> String {
    let (bg, me) = (dir.join("bg.pid"), dir.join("script.pid"));
    format!(
        "#!/bin/sh\ntrap '' TERM\n(trap '' TERM; exec sleep 300) &\n\
         echo $! > '{bg}.tmp' && mv '{bg}.tmp' '{bg}'\n\
         echo $$ > '{me}.tmp' && mv '{me}.tmp' '{me}'\n\
         echo stubborn build running\nwhile :; do sleep 0.1; done\n",
        bg = bg.display(),
        me = me.display()
    )
}

fn read_pid(p: &Path) -> i32 {
    wait_for(T, &format!("{}", p.display()), || {
        std::fs::read_to_string(p).ok()?.trim().parse().ok()
    })
}

#[test]
fn cancel_stops_a_build_that_ignores_sigterm_and_backs_it_off() {
    let farm = control_farm("");
    let up = Upstream::new(&farm.root.join("up"));
    up.release("v1.0.0");
    farm.simple_recipe("stubborn", &up, &stubborn_script(&farm.root), "");
    let d = farm.start();
    let id = running_build(&d);
    let (bg, pgid) = (
        read_pid(&farm.root.join("bg.pid")),
        read_pid(&farm.root.join("script.pid")),
    );
    assert!(pid_alive(bg) && group_members(pgid).contains(&bg));

    let t = Instant::now();
    let r = act(&d, &format!("/builds/{id}/cancel"));
    assert_eq!(r.status, 202, "{}", r.text());
    assert_eq!(
        message(&r),
        format!("cancelling build {id} (stubborn 1.0.0-1)")
    );
    let s = d.wait_status(Duration::from_secs(10), "the build to end", |s| {
        s["in_flight"].is_null()
    });
    let took = t.elapsed();
    assert!(took < Duration::from_secs(6), "cancel took {took:?}");
    assert!(group_members(pgid).is_empty(), "{:?}", group_members(pgid));
    assert!(!pid_alive(bg), "background child {bg} survived");

    // Cancelled, not failed; in backoff with the operator's error; counted.
    let b = build(&d, id);
    assert_eq!(b["state"], "cancelled", "{b:#}");
    assert_eq!(b["error"], "cancelled by operator", "{b:#}");
    assert_eq!(s["builds_cancelled"], 1, "{s:#}");
    assert_eq!(s["builds_failed"], 0, "{s:#}");
    let f = &s["failures"]["stubborn@1.0.0-1"];
    assert_eq!(f["error"], "cancelled by operator", "{s:#}");
    assert_eq!(f["failures"], 1, "{s:#}");
    assert_eq!(d.metric("farmhand_builds_cancelled_total"), Some(1.0));
    assert_eq!(
        d.metric("farmhand_control_actions_total{action=\"cancel\"}"),
        Some(1.0)
    );
    let line = d.wait_event(
        "control action",
        &[
            ("action", "cancel"),
            ("recipe", "stubborn"),
            ("build_id", &id.to_string()),
        ],
        T,
    );
    assert!(line.contains("version=1.0.0-1"), "{line}");
    let line = d.wait_event("build cancelled", &[("recipe", "stubborn")], T);
    assert_eq!(
        field(&line, "err").as_deref(),
        Some("cancelled by operator")
    );
    assert!(d.events("build failed", &[]).is_empty());
    let log = d.get(&format!("/builds/{id}/log")).text();
    assert!(log.contains("cancelled by operator"), "{log}");
    let state = read_json(&farm.state().join("state.json"));
    assert_eq!(
        state["failures"]["stubborn@1.0.0-1"]["error"],
        "cancelled by operator"
    );

    // Not rebuilt at once: a poll finds it backing off.
    let r = act(&d, &format!("/builds/{id}/cancel"));
    assert_eq!(r.status, 409, "{}", r.text());
    assert_eq!(act(&d, "/recipes/stubborn/poll").status, 202);
    d.wait_events("poll complete", &[("recipe", "stubborn")], 2, T);
    std::thread::sleep(Duration::from_millis(300));
    assert_eq!(d.events("starting build", &[]).len(), 1, "{}", d.logs());
    for dir in ["stage", "sources"] {
        let left: Vec<_> = std::fs::read_dir(farm.state().join(dir))
            .map(|r| r.flatten().collect())
            .unwrap_or_default();
        assert!(left.is_empty(), "{dir} not empty: {left:?}");
    }
}

#[test]
fn cancel_reaches_a_build_run_through_a_runner() {
    let mut farm = Farm::new();
    farm.http = true;
    let runner = farm.root.join("runner.sh");
    std::fs::write(
        &runner,
        "#!/bin/sh\ntrap '' TERM\n\"$@\"\necho runner still here\nsleep 300\n",
    )
    .unwrap();
    std::fs::set_permissions(&runner, std::fs::Permissions::from_mode(0o755)).unwrap();
    write_control_config(
        &farm,
        &format!("[build]\nrunner = [\"{}\"]\n", runner.display()),
    );
    let up = Upstream::new(&farm.root.join("up"));
    up.release("v1.0.0");
    farm.simple_recipe("stubborn", &up, &stubborn_script(&farm.root), "");
    let d = farm.start();
    let id = running_build(&d);
    let (bg, script) = (
        read_pid(&farm.root.join("bg.pid")),
        read_pid(&farm.root.join("script.pid")),
    );
    // The runner leads the build's process group; the script is its child.
    let pgid = std::fs::read_to_string(format!("/proc/{script}/stat"))
        .unwrap()
        .rsplit_once(')')
        .unwrap()
        .1
        .split_whitespace()
        .nth(2)
        .unwrap()
        .parse::<i32>()
        .unwrap();
    assert_ne!(pgid, script);
    let t = Instant::now();
    assert_eq!(act(&d, &format!("/builds/{id}/cancel")).status, 202);
    d.wait_status(Duration::from_secs(10), "the build to end", |s| {
        s["in_flight"].is_null()
    });
    assert!(t.elapsed() < Duration::from_secs(6), "{:?}", t.elapsed());
    assert!(group_members(pgid).is_empty(), "{:?}", group_members(pgid));
    assert!(!pid_alive(bg) && !pid_alive(script));
    assert_eq!(build(&d, id)["error"], "cancelled by operator");
}

#[test]
fn a_build_stopped_by_shutdown_says_shutdown_and_does_not_back_off() {
    let farm = control_farm("[build]\nshutdown_grace = \"1s\"\n");
    let up = Upstream::new(&farm.root.join("up"));
    up.release("v1.0.0");
    farm.simple_recipe("stubborn", &up, &stubborn_script(&farm.root), "");
    let mut d = farm.start();
    running_build(&d);
    read_pid(&farm.root.join("script.pid"));
    d.signal("TERM");
    assert_eq!(d.wait_exit(T), 0, "{}", d.logs());
    d.wait_event("stopped", &[], T);
    let line = d.wait_event("build cancelled", &[("recipe", "stubborn")], T);
    assert_eq!(field(&line, "err").as_deref(), Some("shutdown"), "{line}");
    assert_eq!(field(&line, "next_retry_after"), None, "{line}");
    let state = read_json(&farm.state().join("state.json"));
    assert_eq!(state["failures"], serde_json::json!({}), "{state:#}");
}

#[test]
fn retry_rebuilds_a_failed_version_at_once_and_success_clears_it() {
    let farm = control_farm("[backoff]\nschedule = [\"1h\"]\n");
    let up = Upstream::new(&farm.root.join("up"));
    up.release("v1.0.0");
    let fixed = farm.root.join("fixed");
    farm.simple_recipe(
        "flaky",
        &up,
        &format!(
            "#!/bin/sh\n[ -e '{}' ] || {{ echo not yet; exit 1; }}\n{}",
            fixed.display(),
            OK.trim_start_matches("#!/bin/sh\n")
        ),
        "",
    );
    let d = farm.start();
    d.wait_event("build failed", &[("recipe", "flaky")], T);
    d.wait_status(T, "the failure listed", |s| {
        s["failures"]["flaky@1.0.0-1"]["failures"] == 1
    });
    assert_eq!(act(&d, "/failures/flaky@1.1.0-1/retry").status, 404);

    std::fs::write(&fixed, "").unwrap();
    let t = Instant::now();
    let r = act(&d, "/failures/flaky@1.0.0-1/retry");
    assert_eq!(r.status, 202, "{}", r.text());
    assert_eq!(message(&r), "retrying flaky@1.0.0-1: it is the next build");
    d.wait_event(
        "build + publish complete",
        &[("recipe", "flaky"), ("version", "1.0.0-1")],
        T,
    );
    assert!(t.elapsed() < Duration::from_secs(20), "{:?}", t.elapsed());
    let s = d.status();
    assert_eq!(s["failures"], serde_json::json!({}), "{s:#}");
    let state = read_json(&farm.state().join("state.json"));
    assert_eq!(state["failures"], serde_json::json!({}), "{state:#}");
    d.wait_event(
        "control action",
        &[
            ("action", "retry"),
            ("recipe", "flaky"),
            ("version", "1.0.0-1"),
        ],
        T,
    );
    // A %-encoded key is the same key; there is nothing to retry now.
    assert_eq!(act(&d, "/failures/flaky%401.0.0-1/retry").status, 404);
}

// ---- farmhand ctl ----

fn ctl(farm: &Farm, args: &[&str]) -> Output {
    Command::new(bin())
        .arg("ctl")
        .arg("--config")
        .arg(farm.config_path())
        .args(args)
        .output()
        .expect("farmhand ctl runs")
}

fn stdout(o: &Output) -> String {
    String::from_utf8_lossy(&o.stdout).into_owned()
}

fn stderr(o: &Output) -> String {
    String::from_utf8_lossy(&o.stderr).into_owned()
}

#[track_caller]
fn ok(o: &Output) -> String {
    assert_eq!(o.status.code(), Some(0), "{}{}", stdout(o), stderr(o));
    stdout(o)
}

#[track_caller]
fn refused(o: &Output, code: i32, want: &str) {
    assert_eq!(o.status.code(), Some(code), "{}{}", stdout(o), stderr(o));
    assert!(stderr(o).contains(want), "{}", stderr(o));
}

#[test]
fn ctl_drives_every_command_against_a_real_daemon() {
    let farm = control_farm("[backoff]\nschedule = [\"1h\"]\n");
    let up = Upstream::new(&farm.root.join("up"));
    up.release("v1.0.0");
    let go = farm.root.join("go");
    // Every version but the first waits for `go`.
    farm.simple_recipe(
        "libz",
        &up,
        &format!(
            "#!/bin/sh\nif [ \"$FARMHAND_VERSION\" != 1.0.0-1 ]; then\necho before go\n{}echo after go\nfi\n{}",
            wait_file_sh(&go),
            OK.trim_start_matches("#!/bin/sh\n")
        ),
        "",
    );
    let bad = Upstream::new(&farm.root.join("bad-up"));
    bad.release("v2.0.0");
    farm.simple_recipe("flaky", &bad, "#!/bin/sh\necho broken\nexit 1\n", "");
    let d = farm.start();
    // `ctl --config` connects to [http].addr: the port the daemon took
    // (the daemon reads its config only at start).
    let text = std::fs::read_to_string(farm.config_path()).unwrap();
    let text = text.replacen("127.0.0.1:0", d.addr.as_deref().unwrap(), 1);
    std::fs::write(farm.config_path(), text).unwrap();
    d.wait_event("build failed", &[("recipe", "flaky")], T);
    d.wait_event("build + publish complete", &[("recipe", "libz")], T);

    // Poll now; the new version's build waits in flight.
    up.release("v1.1.0");
    assert_eq!(ok(&ctl(&farm, &["poll", "libz"])).trim(), "polling libz");
    let id = running_build(&d);

    // Read-only commands.
    let out = ok(&ctl(&farm, &["status"]));
    assert!(out.starts_with("farm test-farm (farmhand "), "{out}");
    assert!(
        out.contains(&format!("in flight  build {id} libz 1.1.0-1")),
        "{out}"
    );
    assert!(out.contains("flaky@2.0.0-1"), "{out}");
    let j: serde_json::Value =
        serde_json::from_str(&ok(&ctl(&farm, &["--json", "status"]))).unwrap();
    assert_eq!(j["farm_id"], "test-farm");
    let out = ok(&ctl(&farm, &["builds"]));
    assert!(out.starts_with("ID  RECIPE"), "{out}");
    assert_eq!(out.lines().count(), 4, "{out}");
    let out = ok(&ctl(&farm, &["builds", "--state", "failed"]));
    assert_eq!(out.lines().count(), 2, "{out}");
    assert!(
        out.contains("flaky") && out.contains("building: build script exited with status 1"),
        "{out}"
    );
    let j: serde_json::Value = serde_json::from_str(&ok(&ctl(
        &farm,
        &["builds", "--recipe", "libz", "--state", "running", "--json"],
    )))
    .unwrap();
    assert_eq!(j.as_array().unwrap().len(), 1, "{j:#}");
    assert_eq!(j[0]["id"], id);
    let out = ok(&ctl(&farm, &["recipe", "flaky"]));
    assert!(
        out.starts_with("recipe     flaky\nstate      active\n"),
        "{out}"
    );
    assert!(out.contains("\nFAILED   FAILURES"), "{out}");
    assert!(out.contains("2.0.0-1"), "{out}");
    let j: serde_json::Value =
        serde_json::from_str(&ok(&ctl(&farm, &["recipe", "libz", "--json"]))).unwrap();
    // `--json` is GET /recipes/{id}: its builds, newest first.
    assert_eq!(j["builds"][0]["id"], id, "{j:#}");
    assert_eq!(j["builds"][0]["state"], "running", "{j:#}");
    refused(&ctl(&farm, &["recipe", "nope"]), 1, "no recipe nope");
    let failed = d
        .builds()
        .into_iter()
        .find(|b| b["recipe"] == "flaky")
        .unwrap()["id"]
        .to_string();
    assert!(ok(&ctl(&farm, &["log", &failed])).contains("broken"));
    refused(&ctl(&farm, &["log", "999"]), 1, "404");
    // watch prints the event stream, one line per event.
    let mut watcher = Command::new(bin())
        .arg("ctl")
        .arg("--config")
        .arg(farm.config_path())
        .arg("watch")
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let (tx, rx) = std::sync::mpsc::channel();
    let stdout = watcher.stdout.take().unwrap();
    std::thread::spawn(move || {
        use std::io::BufRead;
        for line in std::io::BufReader::new(stdout)
            .lines()
            .map_while(Result::ok)
        {
            if tx.send(line).is_err() {
                break;
            }
        }
    });
    let deadline = Instant::now() + T;
    let mut seen = Vec::new();
    while !seen
        .iter()
        .any(|l: &String| l.contains("control") && l.contains("pause") && l.contains("flaky"))
    {
        assert!(Instant::now() < deadline, "watch printed {seen:#?}");
        // Each pause is idempotent and sent on /events again.
        ok(&ctl(&farm, &["pause", "flaky"]));
        while let Ok(l) = rx.recv_timeout(Duration::from_millis(300)) {
            seen.push(l);
        }
    }
    ok(&ctl(&farm, &["resume", "flaky"]));
    let _ = nix::sys::signal::kill(
        nix::unistd::Pid::from_raw(watcher.id() as i32),
        nix::sys::signal::Signal::SIGTERM,
    );
    let _ = watcher.wait();

    // log -f follows the running build to its end.
    let follower = Command::new(bin())
        .arg("ctl")
        .arg("--config")
        .arg(farm.config_path())
        .args(["log", &id.to_string(), "-f"])
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    std::thread::sleep(Duration::from_millis(500));
    std::fs::write(&go, "").unwrap();
    let out = follower.wait_with_output().unwrap();
    let text = ok(&out);
    assert!(
        text.contains("before go") && text.contains("after go"),
        "{text}"
    );
    assert!(text.contains("build script succeeded"), "{text}");
    d.wait_event(
        "build + publish complete",
        &[("recipe", "libz"), ("version", "1.1.0-1")],
        T,
    );

    // Cancel, pause, resume, retry.
    up.release("v1.2.0");
    std::fs::remove_file(&go).unwrap();
    ok(&ctl(&farm, &["poll", "libz"]));
    let id = running_build(&d);
    let out = ok(&ctl(&farm, &["cancel", &id.to_string()]));
    assert_eq!(out.trim(), format!("cancelling build {id} (libz 1.2.0-1)"));
    d.wait_status(T, "the cancelled build to end", |s| {
        s["in_flight"].is_null()
    });
    refused(&ctl(&farm, &["cancel", &id.to_string()]), 1, "409");
    let out = ok(&ctl(&farm, &["pause", "libz"]));
    assert!(out.starts_with("paused libz"), "{out}");
    assert!(ok(&ctl(&farm, &["status"])).contains("paused     libz"));
    refused(
        &ctl(&farm, &["poll", "libz"]),
        1,
        "409 recipe libz is paused",
    );
    let j: serde_json::Value =
        serde_json::from_str(&ok(&ctl(&farm, &["--json", "resume", "libz"]))).unwrap();
    assert_eq!(
        (j["action"].as_str(), j["status"].as_u64()),
        (Some("resume"), Some(200))
    );
    std::fs::write(&go, "").unwrap();
    ok(&ctl(&farm, &["retry", "libz@1.2.0-1"]));
    d.wait_event(
        "build + publish complete",
        &[("recipe", "libz"), ("version", "1.2.0-1")],
        T,
    );
    refused(
        &ctl(&farm, &["retry", "libz@1.2.0-1"]),
        1,
        "404 no failure libz@1.2.0-1",
    );
    refused(&ctl(&farm, &["pause", "nope"]), 1, "404 no recipe nope");

    // --url and --token-file instead of --config.
    let url = format!("http://{}", d.addr.as_deref().unwrap());
    let with_url = |args: &[&str]| {
        Command::new(bin())
            .args(["ctl", "--url", &url])
            .args(args)
            .output()
            .unwrap()
    };
    let token = token_path(&farm).display().to_string();
    assert!(ok(&with_url(&["status"])).contains("farm test-farm"));
    assert!(ok(&with_url(&["--token-file", &token, "pause", "flaky"])).starts_with("paused flaky"));
    refused(&with_url(&["resume", "flaky"]), 2, "pass --token-file");
    let wrong = farm.root.join("wrong-token");
    std::fs::write(&wrong, "wrong-wrong-wrong-wrong-wrong-wrong-wrong\n").unwrap();
    std::fs::set_permissions(&wrong, std::fs::Permissions::from_mode(0o600)).unwrap();
    refused(
        &with_url(&[
            "--token-file",
            &wrong.display().to_string(),
            "resume",
            "flaky",
        ]),
        1,
        "401 wrong control token",
    );
    assert_eq!(d.status()["paused"], serde_json::json!(["flaky"]));

    // Bad usage: 2; a daemon that is not there: 1; help for every command.
    refused(
        &ctl(&farm, &["retry", "not-a-key"]),
        2,
        "expected recipe@version",
    );
    refused(&ctl(&farm, &["frobnicate"]), 2, "unrecognized subcommand");
    let gone = Command::new(bin())
        .args(["ctl", "--url", "http://127.0.0.1:1", "status"])
        .output()
        .unwrap();
    refused(&gone, 1, "cannot reach farmhand at 127.0.0.1:1");
    for cmd in [
        "status", "builds", "recipe", "log", "watch", "poll", "pause", "resume", "cancel", "retry",
    ] {
        let out = ok(&ctl(&farm, &[cmd, "--help"]));
        assert!(out.contains("Usage: farmhand ctl"), "{cmd}: {out}");
    }
    let out = Command::new(bin())
        .args(["completions", "bash"])
        .output()
        .unwrap();
    assert!(ok(&out).contains("farmhand__subcmd__ctl"));
}
