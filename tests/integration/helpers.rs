//! The git helper processes: a few long-lived `farmhand git-helper`
//! children serve every poll and fetch, one that dies is replaced, and
//! none outlives the daemon.

use crate::util::*;
use std::collections::BTreeSet;
use std::time::Duration;

const SECRET: &[u8] = b"test-secret";
const T: Duration = Duration::from_secs(60);

/// The daemon's `git-helper` children that are alive.
fn helpers_of(pid: i32) -> BTreeSet<i32> {
    let mut out = BTreeSet::new();
    for e in std::fs::read_dir("/proc").unwrap().flatten() {
        let Ok(k) = e.file_name().to_string_lossy().parse::<i32>() else {
            continue;
        };
        let stat = std::fs::read_to_string(format!("/proc/{k}/stat")).unwrap_or_default();
        // After the parenthesised command name: state, ppid.
        let f: Vec<&str> = stat
            .rsplit_once(')')
            .map(|(_, r)| r.split_whitespace().collect())
            .unwrap_or_default();
        let cmd = std::fs::read(format!("/proc/{k}/cmdline")).unwrap_or_default();
        if f.len() > 1
            && f[0] != "Z"
            && f[1] == pid.to_string()
            && cmd.split(|b| *b == 0).any(|a| a == b"git-helper")
        {
            out.insert(k);
        }
    }
    out
}

/// The nice value of `pid` (field 19 of /proc/<pid>/stat).
fn nice(pid: i32) -> i64 {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap();
    let (_, rest) = stat.rsplit_once(')').unwrap();
    // After the command name, field 3 (state) is the first: nice is 19.
    rest.split_whitespace().nth(16).unwrap().parse().unwrap()
}

fn hook(d: &Daemon, up: &Upstream, delivery: &str) {
    let body = format!(
        "{{\"ref\":\"refs/heads/main\",\"repository\":{{\"clone_url\":\"{}\"}}}}",
        up.url()
    );
    let r = d.webhook("push", delivery, body.as_bytes(), SECRET);
    assert_eq!(r.status, 202, "{}", r.text());
}

#[test]
fn few_long_lived_helpers_serve_every_poll_and_a_dead_one_is_replaced() {
    let mut farm = Farm::new();
    farm.http = true;
    farm.write_config("");
    let up = Upstream::new(&farm.root.join("up"));
    up.release("v1.0.0");
    for i in 0..10 {
        farm.simple_recipe(
            &format!("r{i}"),
            &up,
            "#!/bin/sh\nmkdir -p \"$DESTDIR/usr/share\"\necho x > \"$DESTDIR/usr/share/$FARMHAND_RECIPE\"\n",
            "[watch]\ngithub_webhook = true\n",
        );
    }
    let mut d = farm.start();
    d.wait_count("build + publish complete", 10, T);
    let first = helpers_of(d.pid());
    // [poll].concurrency (4) poll helpers at most, and the fetch helper.
    assert!(
        (1..=5).contains(&first.len()),
        "helpers after the first round: {first:?}"
    );

    // Poll helpers run at a lower priority than the daemon.
    assert!(
        first.iter().any(|p| nice(*p) == nice(d.pid()) + 10),
        "{:?}",
        first.iter().map(|p| nice(*p)).collect::<Vec<_>>()
    );

    // The next round of polls reuses them.
    hook(&d, &up, "round-2");
    d.wait_count("poll complete", 20, T);
    let second = helpers_of(d.pid());
    assert!(
        second.len() <= 5 && !second.is_disjoint(&first),
        "first {first:?}, then {second:?}"
    );

    // Helpers that die are replaced: every poll of the next round succeeds.
    for pid in &second {
        let _ = nix::sys::signal::kill(
            nix::unistd::Pid::from_raw(*pid),
            nix::sys::signal::Signal::SIGKILL,
        );
    }
    hook(&d, &up, "round-3");
    d.wait_count("poll complete", 30, T);
    assert_eq!(d.count("ls-remote failed"), 0, "{}", d.logs());
    assert!(d.logs().contains("git helper gone; starting a new one"));
    let third = helpers_of(d.pid());
    assert!(third.is_disjoint(&second), "{second:?} {third:?}");

    // None outlives the daemon.
    d.signal("TERM");
    assert_eq!(d.wait_exit(T), 0);
    wait_for(Duration::from_secs(10), "helpers gone", || {
        third
            .iter()
            .all(|p| {
                std::fs::read_to_string(format!("/proc/{p}/stat"))
                    .map(|s| s.contains(") Z "))
                    .unwrap_or(true)
            })
            .then_some(())
    });
}

#[test]
fn farmhand_git_helper_exe_names_the_executable_started_as_helper() {
    let farm = Farm::new();
    farm.write_config("");
    let up = Upstream::new(&farm.root.join("up"));
    up.release("v1.0.0");
    farm.simple_recipe("hello", &up, "#!/bin/sh\ntrue\n", "");
    // A wrapper, as a tool such as valgrind would be: it notes each start
    // and its arguments, then runs the real executable.
    let marks = farm.root.join("helper-starts");
    let wrapper = farm.root.join("helper-wrapper");
    std::fs::write(
        &wrapper,
        format!(
            "#!/bin/sh\necho \"$@\" >> '{}'\nexec '{}' \"$@\"\n",
            marks.display(),
            bin().display()
        ),
    )
    .unwrap();
    std::fs::set_permissions(
        &wrapper,
        std::os::unix::fs::PermissionsExt::from_mode(0o755),
    )
    .unwrap();
    let wrapper = wrapper.to_str().unwrap();
    let mut d = farm.start_with(&[], &[("FARMHAND_GIT_HELPER_EXE", wrapper)]);
    d.wait_log("build + publish complete", T);
    let starts = std::fs::read_to_string(&marks).unwrap_or_default();
    assert!(
        starts.lines().any(|l| l.starts_with("git-helper")),
        "the poll and the fetch went through the wrapper: {starts:?}"
    );
    // Without the variable the daemon's own executable serves them.
    d.signal("TERM");
    assert_eq!(d.wait_exit(T), 0);
    std::fs::remove_file(&marks).unwrap();
    let up2 = Upstream::new(&farm.root.join("up2"));
    up2.release("v2.0.0");
    farm.simple_recipe("other", &up2, "#!/bin/sh\ntrue\n", "");
    let d = farm.start();
    d.wait_log("version=2.0.0", T);
    d.wait_log("build + publish complete", T);
    assert!(!marks.exists(), "the wrapper ran without the variable");
}
