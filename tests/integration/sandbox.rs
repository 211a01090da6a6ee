//! Builds cannot touch the farm (DESIGN.md section 18): build scripts that
//! try to read the farm's secrets and state, write outside their own
//! directories, signal or outlive the daemon, or reach the network, run
//! under the bubblewrap sandbox and record what happened in their log.

use crate::util::*;
use std::time::Duration;

/// True when bubblewrap works here; when it does not, the test says so and
/// (under CI, where .ci/run installs it) fails.
fn bwrap_works() -> bool {
    let ok = std::process::Command::new("bwrap")
        .args([
            "--ro-bind",
            "/",
            "/",
            "--unshare-pid",
            "--unshare-user",
            "true",
        ])
        .output()
        .is_ok_and(|o| o.status.success());
    if !ok {
        assert!(
            std::env::var("CI").is_err(),
            "bubblewrap does not work on this CI machine (.ci/run installs it)"
        );
        eprintln!("skipped: bubblewrap (bwrap) does not work here");
    }
    ok
}

fn outcome<'a>(build_log: &'a str, name: &str) -> &'a str {
    build_log
        .lines()
        .find_map(|l| l.strip_prefix(&format!("ATTEMPT {name}: ")))
        .unwrap_or_else(|| panic!("no outcome for {name} in:\n{build_log}"))
}

#[test]
fn a_sandboxed_build_finds_none_of_the_farms_secrets_or_state() {
    if !bwrap_works() {
        return;
    }
    // The paths are known to an attacker (they are in the docs); here the
    // farm root is a temporary directory standing for /etc/farmhand and
    // /var/lib/farmhand on a real host.
    let attempts = r#"
for f in "$ROOT/farm.ed25519" "$ROOT/webhook-secret" "$ROOT/notify-secret" "$ROOT/control-token" "$ROOT/config.toml" \
         "$ROOT/state/state.json" "$ROOT/state/repo/index/archive.json" "$ROOT/state/repo/repo.json"; do
  if cat "$f" >/dev/null 2>&1; then echo "ATTEMPT read $(basename $f): READ"; else echo "ATTEMPT read $(basename $f): denied"; fi
done
if ls "$ROOT/state/git" >/dev/null 2>&1; then echo "ATTEMPT list git caches: LISTED"; else echo "ATTEMPT list git caches: denied"; fi
if ls "$ROOT/state/logs/other" >/dev/null 2>&1; then echo "ATTEMPT list other logs: LISTED"; else echo "ATTEMPT list other logs: denied"; fi
if ls "$ROOT/recipes/other" >/dev/null 2>&1; then echo "ATTEMPT list other recipe: LISTED"; else echo "ATTEMPT list other recipe: denied"; fi
if ls "$ROOT/state/sources" 2>/dev/null | grep -v "^probe" | grep -q .; then echo "ATTEMPT other sources: SEEN"; else echo "ATTEMPT other sources: denied"; fi
if touch "$ROOT/state/repo/pwned" 2>/dev/null; then echo "ATTEMPT write repo: WROTE"; else echo "ATTEMPT write repo: denied"; fi
if touch /usr/pwned 2>/dev/null; then echo "ATTEMPT write usr: WROTE"; else echo "ATTEMPT write usr: denied"; fi
if touch /etc/pwned 2>/dev/null; then echo "ATTEMPT write etc: WROTE"; else echo "ATTEMPT write etc: denied"; fi
if touch "$DESTDIR/ok" "$HOME/ok" "$SOURCE_DIR/ok" /tmp/ok; then echo "ATTEMPT write own dirs: ok"; else echo "ATTEMPT write own dirs: FAILED"; fi
if [ -r ./build.sh ] || [ -r "$(dirname "$0")/build.sh" ]; then echo "ATTEMPT read own recipe: ok"; else echo "ATTEMPT read own recipe: FAILED"; fi
if touch "$(dirname "$0")/pwned" 2>/dev/null; then echo "ATTEMPT write own recipe: WROTE"; else echo "ATTEMPT write own recipe: denied"; fi
if [ "$(ls /proc | grep -c '^[0-9]')" -lt 10 ]; then echo "ATTEMPT see host processes: denied"; else echo "ATTEMPT see host processes: SEEN"; fi
"#;
    let (farm, log, build_log) = probe(attempts);
    assert!(log.contains("build sandbox: bubblewrap"), "{log}");
    for (name, want) in [
        ("read farm.ed25519", "denied"),
        ("read webhook-secret", "denied"),
        ("read notify-secret", "denied"),
        ("read control-token", "denied"),
        ("read config.toml", "denied"),
        ("read state.json", "denied"),
        ("read archive.json", "denied"),
        ("read repo.json", "denied"),
        ("list git caches", "denied"),
        ("list other logs", "denied"),
        ("list other recipe", "denied"),
        ("other sources", "denied"),
        ("write repo", "denied"),
        ("write usr", "denied"),
        ("write etc", "denied"),
        ("write own dirs", "ok"),
        ("read own recipe", "ok"),
        ("write own recipe", "denied"),
        ("see host processes", "denied"),
    ] {
        assert_eq!(outcome(&build_log, name), want, "{name}:\n{build_log}");
    }
    assert!(!farm.repo().join("pwned").exists());
    assert_eq!(
        archive_ids(&farm).len(),
        2,
        "both recipes published:\n{log}"
    );
}

/// A farm with a signing key, a webhook secret, a notification secret and
/// a control token, one
/// published version of `other` (so the repository, logs and a git cache
/// exist), then the recipe `probe` running `attempts` with `$ROOT` set to
/// the farm's directory. Returns the farm, the daemon's log of the second
/// `--once` sweep, and probe's build log.
fn probe(attempts: &str) -> (Farm, String, String) {
    let farm = Farm::new();
    std::fs::write(farm.root.join("farm.ed25519"), [7u8; 32]).unwrap();
    std::fs::write(farm.root.join("control-token"), "t".repeat(40)).unwrap();
    std::fs::write(farm.root.join("notify-secret"), "n".repeat(40)).unwrap();
    farm.write_config(
        "[signing]\nkey_file = \"farm.ed25519\"\n\n[http]\nwebhook_secret_file = \"webhook-secret\"\n\n[build]\nsandbox = \"auto\"\n\n\
         [[notify]]\non = [\"cancelled\"]\nurl = \"http://127.0.0.1:9/hook\"\nsecret_file = \"notify-secret\"\n",
    );
    let other = Upstream::new(&farm.root.join("other-up"));
    other.release("v1.0.0");
    farm.simple_recipe("other", &other, "#!/bin/sh\necho other\n", "");
    farm.once_ok();
    let up = Upstream::new(&farm.root.join("probe-up"));
    up.release("v1.0.0");
    let text = format!("#!/bin/sh\nROOT='{}'\n{attempts}", farm.root.display());
    farm.simple_recipe("probe", &up, &text, "");
    let log = farm.once_ok();
    let build_log = read_logs(&farm, "probe", &log);
    (farm, log, build_log)
}

fn read_logs(farm: &Farm, recipe: &str, log: &str) -> String {
    let dir = farm.state().join("logs").join(recipe);
    std::fs::read_dir(&dir)
        .unwrap_or_else(|e| panic!("{}: {e}\n{log}", dir.display()))
        .map(|e| read_build_log(&e.unwrap().path()))
        .collect::<Vec<_>>()
        .join("\n")
}

#[test]
fn a_sandboxed_build_cannot_outlive_or_signal_the_daemon() {
    if !bwrap_works() {
        return;
    }
    let farm = Farm::new();
    farm.write_config("[build]\nsandbox = \"auto\"\n");
    let up = Upstream::new(&farm.root.join("up"));
    up.release("v1.0.0");
    // A detached grandchild in a new session, and a kill of every pid the
    // build can name (1 is its own PID namespace's init).
    let marker = format!("farmhand-sandbox-marker-{}", std::process::id());
    let s = format!(
        "#!/bin/sh\n(setsid sh -c 'exec -a {marker} sleep 300' >/dev/null 2>&1 &)\n\
         sleep 0.2\n\
         if kill -0 {daemon} 2>/dev/null; then echo 'ATTEMPT signal daemon: REACHED'; else echo 'ATTEMPT signal daemon: denied'; fi\n\
         echo \"ATTEMPT pid namespace: $(ls /proc | grep -c '^[0-9]') processes\"\n",
        daemon = std::process::id(),
    );
    farm.simple_recipe("escape", &up, &s, "");
    let log = farm.once_ok();
    let build_log = read_logs(&farm, "escape", &log);
    assert_eq!(
        outcome(&build_log, "signal daemon"),
        "denied",
        "{build_log}"
    );
    // Whatever the build started is gone once it ended.
    let left: Vec<String> = std::fs::read_dir("/proc")
        .unwrap()
        .filter_map(|e| std::fs::read(e.ok()?.path().join("cmdline")).ok())
        .map(|c| String::from_utf8_lossy(&c).into_owned())
        .filter(|c| c.contains(&marker))
        .collect();
    assert!(
        left.is_empty(),
        "build processes outlived the build: {left:?}"
    );
}

#[test]
fn without_network_a_build_has_only_loopback() {
    if !bwrap_works() {
        return;
    }
    let farm = Farm::new();
    farm.write_config("[build]\nsandbox = \"auto\"\nnetwork = false\n");
    let up = Upstream::new(&farm.root.join("up"));
    up.release("v1.0.0");
    let s = "#!/bin/sh\necho \"ATTEMPT interfaces: $(tail -n +3 /proc/net/dev | cut -d: -f1 | tr -d ' ' | sort | tr '\\n' ' ')\"\n";
    farm.simple_recipe("offline", &up, s, "");
    let log = farm.once_ok();
    let build_log = read_logs(&farm, "offline", &log);
    assert_eq!(
        outcome(&build_log, "interfaces").trim(),
        "lo",
        "{build_log}"
    );
}

#[test]
fn sandbox_modes_none_and_an_unusable_bwrap() {
    let mut farm = Farm::new();
    farm.http = true;
    farm.write_config("[build]\nsandbox = \"none\"\n");
    let mut d = farm.start();
    d.wait_log("build sandbox off", Duration::from_secs(20));
    assert_eq!(d.status()["sandbox"], "none");
    d.signal("TERM");
    assert_eq!(d.wait_exit(Duration::from_secs(20)), 0);

    // "bwrap" where bubblewrap cannot be found: start fails, exit 1,
    // naming the cause.
    farm.write_config("[build]\nsandbox = \"bwrap\"\n");
    let out = farm.run_env(&["--once"], &[("PATH", "/nonexistent")]);
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{err}");
    assert!(
        err.contains("build.sandbox") && err.contains("bwrap"),
        "{err}"
    );

    // "auto" without bubblewrap: a warning, builds run unsandboxed.
    farm.write_config("[build]\nsandbox = \"auto\"\n");
    let up = Upstream::new(&farm.root.join("up"));
    up.release("v1.0.0");
    farm.simple_recipe("x", &up, "#!/bin/sh\ntrue\n", "");
    let out = farm.run_env(&["--once"], &[("PATH", "/nonexistent")]);
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("build sandbox unavailable"), "{err}");
}

#[test]
fn the_status_says_which_sandbox_is_in_force() {
    if !bwrap_works() {
        return;
    }
    let mut farm = Farm::new();
    farm.http = true;
    farm.write_config("[build]\nsandbox = \"auto\"\n");
    let mut d = farm.start();
    d.wait_log("build sandbox: bubblewrap", Duration::from_secs(20));
    assert_eq!(d.status()["sandbox"], "bwrap");
    d.signal("TERM");
    assert_eq!(d.wait_exit(Duration::from_secs(20)), 0);
}

#[test]
fn descriptors_the_daemon_inherited_do_not_reach_builds() {
    for sandbox in ["none", "auto"] {
        let farm = Farm::new();
        farm.write_config(&format!("[build]\nsandbox = \"{sandbox}\"\n"));
        let up = Upstream::new(&farm.root.join("up"));
        up.release("v1.0.0");
        let s = "#!/bin/sh\nif [ -e /proc/self/fd/9 ]; then echo 'ATTEMPT fd 9: LEAKED'; else echo 'ATTEMPT fd 9: closed'; fi\n";
        farm.simple_recipe("fds", &up, s, "");
        // A shell opens descriptor 9 without close-on-exec, then becomes
        // farmhand, as a careless supervisor would start it.
        let out = std::process::Command::new("/bin/sh")
            .arg("-c")
            .arg("exec 9</dev/null; exec \"$0\" --config \"$1\" --log-format logfmt --once")
            .arg(bin())
            .arg(farm.config_path())
            .env_remove("NOTIFY_SOCKET")
            .output()
            .unwrap();
        let log = String::from_utf8_lossy(&out.stderr).into_owned();
        assert_eq!(out.status.code(), Some(0), "{log}");
        let build_log = read_logs(&farm, "fds", &log);
        assert_eq!(
            outcome(&build_log, "fd 9"),
            "closed",
            "sandbox {sandbox}:\n{build_log}"
        );
    }
}

#[test]
fn no_network_without_a_working_sandbox_is_refused_not_ignored() {
    let farm = Farm::new();
    farm.write_config("[build]\nsandbox = \"auto\"\nnetwork = false\n");
    // bubblewrap cannot be found: "auto" would run builds unsandboxed,
    // which would give them the network they were denied.
    let out = farm.run_env(&["--once"], &[("PATH", "/nonexistent")]);
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{err}");
    assert!(
        err.contains("build.network = false needs the build sandbox"),
        "{err}"
    );
}

/// The soft and hard "Max open files" of process `pid` (`self` for this
/// one), from /proc.
fn nofile_limits(pid: &str) -> (String, String) {
    let limits = std::fs::read_to_string(format!("/proc/{pid}/limits")).unwrap();
    let line = limits
        .lines()
        .find(|l| l.starts_with("Max open files"))
        .expect("a Max open files line");
    let mut f = line["Max open files".len()..].split_whitespace();
    (f.next().unwrap().to_string(), f.next().unwrap().to_string())
}

#[test]
fn builds_get_the_open_file_limit_the_daemon_was_started_with() {
    let (_, hard) = nofile_limits("self");
    assert!(
        hard == "unlimited" || hard.parse::<u64>().unwrap() > 512,
        "the hard limit ({hard}) leaves room to raise a soft limit of 512"
    );
    for sandbox in ["none", "auto"] {
        let mut farm = Farm::new();
        farm.http = true;
        farm.write_config(&format!("[build]\nsandbox = \"{sandbox}\"\n"));
        let up = Upstream::new(&farm.root.join("up"));
        up.release("v1.0.0");
        let s = "#!/bin/sh\necho \"ATTEMPT nofile: $(ulimit -Sn)\"\n";
        farm.simple_recipe("limits", &up, s, "");
        // Started with a soft limit of 512, as a shell or unit may start it.
        let mut cmd = std::process::Command::new("/bin/sh");
        cmd.arg("-c")
            .arg("ulimit -Sn 512; exec \"$0\" --config \"$1\" --log-format logfmt")
            .arg(bin())
            .arg(farm.config_path());
        let d = Daemon::spawn(&mut cmd);
        d.wait_log_field("webhook server listening", "addr", Duration::from_secs(20));
        d.wait_event(
            "build + publish complete",
            &[("recipe", "limits")],
            Duration::from_secs(60),
        );
        // The daemon raised its own soft limit for its HTTP server...
        let (soft, hard) = nofile_limits(&d.child.id().to_string());
        assert_eq!(
            soft, hard,
            "sandbox {sandbox}: the daemon's soft limit is raised"
        );
        // ...and the build got the one it was started with.
        let build_log = read_logs(&farm, "limits", &d.logs());
        assert_eq!(
            outcome(&build_log, "nofile"),
            "512",
            "sandbox {sandbox}:\n{build_log}"
        );
    }
}
