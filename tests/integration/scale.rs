//! Settings for very large farms: `[http] per_recipe_metrics = false`
//! drops the series labelled by recipe and keeps the scrape valid.

use crate::util::*;
use std::io::Write as _;
use std::time::Duration;

const T: Duration = Duration::from_secs(60);

fn promtool_check(text: &str) {
    let mut promtool = std::process::Command::new("promtool")
        .args(["check", "metrics"])
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .expect("promtool (Debian package `prometheus`) is installed");
    promtool
        .stdin
        .take()
        .unwrap()
        .write_all(text.as_bytes())
        .unwrap();
    let out = promtool.wait_with_output().unwrap();
    assert!(
        out.status.success(),
        "promtool check metrics: {}{}\n{text}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
}

#[test]
fn per_recipe_metrics_off_counts_for_the_whole_farm() {
    let mut farm = Farm::new();
    farm.http = true;
    let up = Upstream::new(&farm.root.join("up"));
    up.release("v1.0.0");
    farm.write_config("per_recipe_metrics = false\n");
    farm.simple_recipe(
        "hello",
        &up,
        "#!/bin/sh\nmkdir -p \"$DESTDIR/usr/share/hello\"\necho hi > \"$DESTDIR/usr/share/hello/hi\"\n",
        "",
    );
    farm.simple_recipe("fails", &up, "#!/bin/sh\nexit 1\n", "");
    let d = farm.start();
    d.wait_status(T, "one success, one failure", |s| {
        s["builds_succeeded"] == 1 && s["builds_failed"] == 1 && s["in_flight"].is_null()
    });
    let text = d.get("/metrics").text();
    promtool_check(&text);
    assert!(!text.contains("recipe="), "{text}");
    for line in [
        "farmhand_builds_failed_total 1",
        "farmhand_polls_total{result=\"ok\"} 2",
        "farmhand_polls_total{result=\"error\"} 0",
        "farmhand_recipes 2",
    ] {
        assert!(text.lines().any(|l| l == line), "no {line} in\n{text}");
    }
    assert!(!text.contains("farmhand_last_poll_success_timestamp_seconds"));
    // /status keeps every recipe's poll.
    assert_eq!(d.status()["polls"].as_object().unwrap().len(), 2);
}
