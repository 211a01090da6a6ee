//! Operations: the shipped systemd unit (verify, security rating, sysusers),
//! the Debian package built from the tested binary, the Prometheus alert
//! rules (promtool), a real Prometheus server scraping `/metrics` and
//! `/status`, and a real systemd-journald receiving `--log-format journald`.

use crate::util::*;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::Duration;

/// The source tree.
fn root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

/// Runs `cmd` to completion; panics with its output unless it succeeds.
fn run_ok(cmd: &mut Command) -> (String, String) {
    let out = cmd
        .output()
        .unwrap_or_else(|e| panic!("cannot run {cmd:?}: {e}"));
    let stdout = String::from_utf8_lossy(&out.stdout).into_owned();
    let stderr = String::from_utf8_lossy(&out.stderr).into_owned();
    assert!(
        out.status.success(),
        "{cmd:?} failed ({}):\n{stdout}\n{stderr}",
        out.status
    );
    (stdout, stderr)
}

/// A file tree in which `systemd-analyze --root` finds the unit, the
/// binary at ExecStart's path, /bin/kill and the system's own units.
fn unit_root(unit: &Path, binary: &Path) -> tempfile::TempDir {
    let r = tempfile::tempdir().unwrap();
    let sys = r.path().join("usr/lib/systemd/system");
    std::fs::create_dir_all(&sys).unwrap();
    for e in std::fs::read_dir("/lib/systemd/system").expect("systemd's units are installed") {
        let e = e.unwrap();
        if e.file_type().unwrap().is_file() {
            std::fs::copy(e.path(), sys.join(e.file_name())).unwrap();
        }
    }
    std::fs::copy(unit, sys.join("farmhand.service")).unwrap();
    let socket = unit.with_file_name("farmhand.socket");
    if socket.exists() {
        std::fs::copy(&socket, sys.join("farmhand.socket")).unwrap();
    }
    for (src, dst) in [
        (binary, "usr/bin/farmhand"),
        (Path::new("/bin/kill"), "bin/kill"),
    ] {
        let d = r.path().join(dst);
        std::fs::create_dir_all(d.parent().unwrap()).unwrap();
        std::fs::copy(src, &d).unwrap();
    }
    r
}

/// `systemd-analyze verify` on farmhand.service and farmhand.socket inside
/// `root`: no error, no warning.
fn verify_unit(root: &Path) {
    let (stdout, stderr) = run_ok(
        Command::new("systemd-analyze")
            .arg("verify")
            .arg(format!("--root={}", root.display()))
            .args([
                "--man=no",
                "--generators=no",
                "farmhand.service",
                "farmhand.socket",
            ]),
    );
    assert_eq!(
        format!("{stdout}{stderr}").trim(),
        "",
        "systemd-analyze verify reported problems"
    );
}

/// The overall exposure `systemd-analyze security --offline` gives `unit`.
fn exposure(unit: &Path) -> f64 {
    let (stdout, stderr) = run_ok(
        Command::new("systemd-analyze")
            .args(["security", "--offline=true", "--no-pager"])
            .arg(unit),
    );
    let text = format!("{stdout}{stderr}");
    let line = text
        .lines()
        .find(|l| l.contains("Overall exposure level"))
        .unwrap_or_else(|| panic!("no overall exposure in:\n{text}"));
    line.split(": ")
        .nth(1)
        .and_then(|v| v.split_whitespace().next())
        .and_then(|v| v.parse().ok())
        .unwrap_or_else(|| panic!("cannot parse {line:?}"))
}

fn unit_text() -> String {
    std::fs::read_to_string(root().join("systemd/farmhand.service")).unwrap()
}

/// `Key=value` lines of the unit (comments and sections skipped).
fn directives(text: &str) -> Vec<(String, String)> {
    text.lines()
        .map(str::trim)
        .filter(|l| !l.is_empty() && !l.starts_with('#') && !l.starts_with('['))
        .filter_map(|l| l.split_once('='))
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect()
}

fn directive(text: &str, key: &str) -> Option<String> {
    directives(text)
        .into_iter()
        .rev()
        .find(|(k, _)| k == key)
        .map(|(_, v)| v)
}

#[test]
fn unit_verifies_and_is_rated_at_most_2_0() {
    let unit = root().join("systemd/farmhand.service");
    let r = unit_root(&unit, &bin());
    verify_unit(r.path());

    // The same check must catch a broken unit: a typo and a missing binary.
    let bad = tempfile::tempdir().unwrap();
    let typo = bad.path().join("farmhand.service");
    std::fs::write(
        &typo,
        unit_text().replace("ProtectSystem=", "ProtectSystm="),
    )
    .unwrap();
    let r2 = unit_root(&typo, &bin());
    let out = Command::new("systemd-analyze")
        .arg("verify")
        .arg(format!("--root={}", r2.path().display()))
        .args(["--man=no", "--generators=no", "farmhand.service"])
        .output()
        .unwrap();
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("Unknown key 'ProtectSystm'"),
        "{out:?}"
    );
    std::fs::remove_file(r.path().join("usr/bin/farmhand")).unwrap();
    let out = Command::new("systemd-analyze")
        .arg("verify")
        .arg(format!("--root={}", r.path().display()))
        .args(["--man=no", "--generators=no", "farmhand.service"])
        .output()
        .unwrap();
    assert!(!out.status.success(), "verify passed without the binary");

    let e = exposure(&unit);
    assert!(e <= 2.0, "exposure {e} is above 2.0");
    assert!(e > 0.0);
    // --threshold makes systemd-analyze itself fail above 2.0 (scale 0-100).
    run_ok(
        Command::new("systemd-analyze")
            .args(["security", "--offline=true", "--threshold=20", "--no-pager"])
            .arg(&unit),
    );
    // A bare unit is rated far worse: the rating is measuring something.
    let bare = bad.path().join("bare.service");
    std::fs::write(
        &bare,
        "[Service]\nType=notify\nExecStart=/usr/bin/farmhand\n",
    )
    .unwrap();
    assert!(exposure(&bare) > 8.0);
}

#[test]
fn unit_has_the_operational_settings() {
    let text = unit_text();
    let want = [
        ("Type", "notify"),
        ("NotifyAccess", "main"),
        (
            "ExecStart",
            "/usr/bin/farmhand --config /etc/farmhand/config.toml",
        ),
        ("ExecReload", "/bin/kill -HUP $MAINPID"),
        ("Restart", "on-failure"),
        ("User", "farmhand"),
        ("StateDirectory", "farmhand"),
        ("ConfigurationDirectory", "farmhand"),
        ("KillMode", "mixed"),
        ("ProtectSystem", "strict"),
        ("NoNewPrivileges", "yes"),
        ("PrivateUsers", "yes"),
        ("CapabilityBoundingSet", ""),
        ("RestrictAddressFamilies", "AF_UNIX AF_INET AF_INET6"),
        ("SystemCallArchitectures", "native"),
        // What bubblewrap needs for the build sandbox, and no more: the
        // namespaces it creates (no cgroup, network or time), the mount
        // calls, /proc/sys/kernel/overflowuid; no sethostname.
        ("RestrictNamespaces", "user mnt pid ipc uts"),
        ("ProcSubset", "all"),
        ("ProtectHostname", "yes"),
        ("LimitNOFILE", "65536"),
    ];
    for (k, v) in want {
        assert_eq!(directive(&text, k).as_deref(), Some(v), "{k}=");
    }
    let filters: Vec<String> = directives(&text)
        .into_iter()
        .filter(|(k, _)| k == "SystemCallFilter")
        .map(|(_, v)| v)
        .collect();
    assert_eq!(filters, ["@system-service", "@mount"]);
    // Stopping waits longer than the default shutdown_grace (30s) plus the
    // build's TERM-to-KILL grace.
    let stop = humantime::parse_duration(&directive(&text, "TimeoutStopSec").unwrap()).unwrap();
    assert!(stop > Duration::from_secs(35), "{stop:?}");
    let wd = humantime::parse_duration(&directive(&text, "WatchdogSec").unwrap()).unwrap();
    // The daemon declares a loop wedged after 10 s without a heartbeat.
    assert!(wd >= Duration::from_secs(20), "{wd:?}");
    // Every sandbox relaxation is explained in a comment.
    assert!(text.contains("MemoryDenyWriteExecute= is left off on purpose"));
    assert!(directive(&text, "MemoryDenyWriteExecute").is_none());
}

#[test]
fn sysusers_and_tmpfiles_create_the_user_and_recipes_dir() {
    let r = tempfile::tempdir().unwrap();
    std::fs::create_dir_all(r.path().join("etc")).unwrap();
    run_ok(
        Command::new("systemd-sysusers")
            .arg(format!("--root={}", r.path().display()))
            .arg(root().join("systemd/farmhand.sysusers")),
    );
    let passwd = std::fs::read_to_string(r.path().join("etc/passwd")).unwrap();
    let line = passwd
        .lines()
        .find(|l| l.starts_with("farmhand:"))
        .unwrap_or_else(|| panic!("no farmhand user in {passwd}"));
    let f: Vec<&str> = line.split(':').collect();
    assert!(
        f[2].parse::<u32>().unwrap() < 1000,
        "not a system user: {line}"
    );
    assert_eq!(f[5], "/var/lib/farmhand");
    assert!(f[6].ends_with("nologin"), "{line}");
    let group = std::fs::read_to_string(r.path().join("etc/group")).unwrap();
    assert!(group.lines().any(|l| l.starts_with("farmhand:")), "{group}");

    run_ok(
        Command::new("systemd-tmpfiles")
            .arg("--create")
            .arg(format!("--root={}", r.path().display()))
            .arg(root().join("systemd/farmhand.tmpfile")),
    );
    assert!(r.path().join("etc/farmhand/recipes").is_dir());
}

#[test]
fn debian_package_holds_binary_unit_config_and_docs() {
    let deb = debian_package();
    let name = deb.file_name().unwrap().to_string_lossy().into_owned();
    assert!(
        name.starts_with(&format!("farmhand_{}-1_", env!("CARGO_PKG_VERSION"))),
        "{name}"
    );

    // File list: owner root, modes, paths.
    let (list, _) = run_ok(Command::new("dpkg-deb").arg("-c").arg(&deb));
    let entries: Vec<(String, String)> = list
        .lines()
        .map(|l| {
            let cols: Vec<&str> = l.split_whitespace().collect();
            (
                cols[0].to_string(),
                cols.last().unwrap().trim_start_matches('.').to_string(),
            )
        })
        .collect();
    let mode = |path: &str| {
        entries
            .iter()
            .find(|(_, p)| p == path)
            .map(|(m, _)| m.clone())
            .unwrap_or_else(|| panic!("{path} not in the package:\n{list}"))
    };
    assert_eq!(mode("/usr/bin/farmhand"), "-rwxr-xr-x");
    for f in [
        "/etc/farmhand/config.toml",
        "/usr/lib/systemd/system/farmhand.service",
        "/usr/lib/systemd/system/farmhand.socket",
        "/usr/lib/sysusers.d/farmhand.conf",
        "/usr/lib/tmpfiles.d/farmhand.conf",
        "/usr/share/doc/farmhand/README.md",
        "/usr/share/doc/farmhand/copyright",
        "/usr/share/doc/farmhand/examples/config.toml",
        "/usr/share/doc/farmhand/examples/prometheus/farmhand-alerts.yml",
        "/usr/share/bash-completion/completions/farmhand",
        "/usr/share/zsh/vendor-completions/_farmhand",
        "/usr/share/fish/vendor_completions.d/farmhand.fish",
    ] {
        assert_eq!(mode(f), "-rw-r--r--", "{f}");
    }
    let mut docs = 0;
    for e in std::fs::read_dir(root().join("docs")).unwrap() {
        let name = e.unwrap().file_name().to_string_lossy().into_owned();
        if name.ends_with(".md") {
            assert_eq!(
                mode(&format!("/usr/share/doc/farmhand/{name}")),
                "-rw-r--r--"
            );
            docs += 1;
        }
    }
    assert!(docs > 0, "no docs/*.md");
    assert!(list.lines().all(|l| l.contains(" 0/0 ")), "{list}");

    // Control fields.
    let field = |f: &str| {
        run_ok(Command::new("dpkg-deb").arg("-f").arg(&deb).arg(f))
            .0
            .trim()
            .to_string()
    };
    assert_eq!(field("Package"), "farmhand");
    assert_eq!(field("Version"), format!("{}-1", env!("CARGO_PKG_VERSION")));
    assert!(field("Depends").contains("libc6"), "{}", field("Depends"));
    assert!(field("Depends").contains("systemd"), "{}", field("Depends"));
    assert!(!field("Description").is_empty());

    // The config under /etc is a conffile; postinst creates the user.
    let ctl = tempfile::tempdir().unwrap();
    run_ok(Command::new("dpkg-deb").arg("-e").arg(&deb).arg(ctl.path()));
    let conffiles = std::fs::read_to_string(ctl.path().join("conffiles")).unwrap();
    assert_eq!(conffiles.trim(), "/etc/farmhand/config.toml");
    let postinst = std::fs::read_to_string(ctl.path().join("postinst")).unwrap();
    assert!(postinst.contains("systemd-sysusers"), "{postinst}");
    assert!(postinst.contains("systemd-tmpfiles --create"), "{postinst}");

    // Unpacked: the files are the source tree's, the packaged binary runs,
    // and the packaged unit verifies against the packaged binary.
    let tree = tempfile::tempdir().unwrap();
    run_ok(
        Command::new("dpkg-deb")
            .arg("-x")
            .arg(&deb)
            .arg(tree.path()),
    );
    let t = tree.path();
    for (packaged, source) in [
        (
            "usr/lib/systemd/system/farmhand.service",
            "systemd/farmhand.service",
        ),
        (
            "usr/lib/systemd/system/farmhand.socket",
            "systemd/farmhand.socket",
        ),
        (
            "usr/lib/sysusers.d/farmhand.conf",
            "systemd/farmhand.sysusers",
        ),
        (
            "usr/lib/tmpfiles.d/farmhand.conf",
            "systemd/farmhand.tmpfile",
        ),
        ("etc/farmhand/config.toml", "packaging/config.example.toml"),
        (
            "usr/share/bash-completion/completions/farmhand",
            "packaging/completions/farmhand.bash",
        ),
    ] {
        assert_eq!(
            std::fs::read(t.join(packaged)).unwrap(),
            std::fs::read(root().join(source)).unwrap(),
            "{packaged}"
        );
    }
    let (version, _) = run_ok(Command::new(t.join("usr/bin/farmhand")).arg("--version"));
    assert_eq!(
        version.trim(),
        format!("farmhand {}", env!("CARGO_PKG_VERSION"))
    );
    let r = unit_root(
        &t.join("usr/lib/systemd/system/farmhand.service"),
        &t.join("usr/bin/farmhand"),
    );
    verify_unit(r.path());
}

#[test]
fn alert_rules_check_and_unit_tests_pass() {
    let dir = root().join("packaging/prometheus");
    let (stdout, _) = run_ok(
        Command::new("promtool")
            .args(["check", "rules", "farmhand-alerts.yml"])
            .current_dir(&dir),
    );
    assert!(stdout.contains("SUCCESS: 6 rules found"), "{stdout}");
    let (stdout, stderr) = run_ok(
        Command::new("promtool")
            .args(["test", "rules", "farmhand-alerts.test.yml"])
            .current_dir(&dir),
    );
    assert!(stdout.contains("SUCCESS"), "{stdout}{stderr}");

    // The tests must catch a stuck-build rule that ignores whether a build
    // is running, and a failure rule without its hour.
    let tmp = tempfile::tempdir().unwrap();
    let rules = std::fs::read_to_string(dir.join("farmhand-alerts.yml")).unwrap();
    std::fs::copy(
        dir.join("farmhand-alerts.test.yml"),
        tmp.path().join("farmhand-alerts.test.yml"),
    )
    .unwrap();
    for (from, to, alert) in [
        (
            "farmhand_build_in_flight == 1",
            "farmhand_build_in_flight >= 0",
            "FarmhandBuildStuck",
        ),
        ("for: 1h", "for: 10m", "FarmhandBuildFailuresPersist"),
    ] {
        assert!(rules.contains(from));
        std::fs::write(
            tmp.path().join("farmhand-alerts.yml"),
            rules.replace(from, to),
        )
        .unwrap();
        let out = Command::new("promtool")
            .args(["test", "rules", "farmhand-alerts.test.yml"])
            .current_dir(tmp.path())
            .output()
            .unwrap();
        let text = String::from_utf8_lossy(&out.stdout).into_owned()
            + &String::from_utf8_lossy(&out.stderr);
        assert!(!out.status.success(), "mutant {to:?} passed:\n{text}");
        assert!(text.contains(&format!("alertname: {alert}")), "{text}");
    }
}

/// A child process killed (by its PID) and reaped when dropped.
struct Reaped(Child);

impl Drop for Reaped {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// Percent-encodes a PromQL query for a URL.
fn urlencode(s: &str) -> String {
    s.bytes()
        .map(|b| match b {
            b'a'..=b'z' | b'A'..=b'Z' | b'0'..=b'9' | b'-' | b'_' | b'.' | b'~' => {
                (b as char).to_string()
            }
            _ => format!("%{b:02X}"),
        })
        .collect()
}

/// `/api/v1/query` result as sorted (job, value) pairs; `None` while
/// Prometheus is not ready or the connection fails.
fn try_query(prom: &str, q: &str) -> Option<Vec<(String, String)>> {
    std::net::TcpStream::connect(prom).ok()?;
    let r = request(
        prom,
        "GET",
        &format!("/api/v1/query?query={}", urlencode(q)),
        &[],
        b"",
    );
    if r.status != 200 {
        return None;
    }
    let v: serde_json::Value = serde_json::from_slice(&r.body).ok()?;
    assert_eq!(v["status"], "success", "{v}");
    let mut out: Vec<(String, String)> = v["data"]["result"]
        .as_array()?
        .iter()
        .map(|s| {
            (
                s["metric"]["job"].as_str().unwrap_or("").to_string(),
                s["value"][1].as_str().unwrap_or("").to_string(),
            )
        })
        .collect();
    out.sort();
    Some(out)
}

fn query(prom: &str, q: &str) -> Vec<(String, String)> {
    try_query(prom, q).unwrap_or_else(|| panic!("query {q:?} failed"))
}

#[test]
fn prometheus_scrapes_metrics_and_status() {
    let mut farm = Farm::new();
    farm.http = true;
    let up = Upstream::new(&farm.root.join("up"));
    up.release("v1.0.0");
    up.release("v1.1.0");
    farm.write_config("");
    farm.simple_recipe("hello", &up, "#!/bin/sh\ntrue\n", "");
    farm.simple_recipe(
        "other",
        &up,
        "#!/bin/sh\ntrue\n",
        "min_version = \"9.0.0\"\n",
    );
    let d = farm.start();
    d.wait_count("build + publish complete", 2, Duration::from_secs(30));
    let addr = d.addr.clone().unwrap();

    let data = tempfile::tempdir().unwrap();
    let cfg = data.path().join("prometheus.yml");
    std::fs::write(
        &cfg,
        format!(
            "global:\n  scrape_interval: 1s\n  evaluation_interval: 1s\n\
             rule_files:\n  - {rules}\n\
             scrape_configs:\n\
             \x20 - job_name: farmhand\n    metrics_path: /metrics\n    static_configs:\n      - targets: ['{addr}']\n\
             \x20 - job_name: farmhand-status\n    metrics_path: /status\n    static_configs:\n      - targets: ['{addr}']\n",
            rules = root()
                .join("packaging/prometheus/farmhand-alerts.yml")
                .display()
        ),
    )
    .unwrap();
    let log = std::fs::File::create(data.path().join("prometheus.log")).unwrap();
    // Port 0: Prometheus binds a port the kernel picks, read back from the
    // kernel once it listens (see `listening_port`).
    let mut prom = Reaped(
        Command::new("prometheus")
            .arg(format!("--config.file={}", cfg.display()))
            .arg(format!(
                "--storage.tsdb.path={}",
                data.path().join("tsdb").display()
            ))
            .arg("--web.listen-address=127.0.0.1:0")
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(log)
            .spawn()
            .expect("prometheus starts"),
    );
    let prom_addr = format!("127.0.0.1:{}", listening_port(&mut prom.0, "prometheus"));
    let plog = || std::fs::read_to_string(data.path().join("prometheus.log")).unwrap_or_default();

    let want_both = |v: &str| {
        vec![
            ("farmhand".to_string(), v.to_string()),
            ("farmhand-status".to_string(), v.to_string()),
        ]
    };
    // Both targets up, i.e. /status answered Prometheus's Accept header with
    // the text exposition (JSON would fail the scrape).
    wait_for(
        Duration::from_secs(30),
        &format!("both targets up in Prometheus; its log:\n{}", plog()),
        || (try_query(&prom_addr, "up")? == want_both("1")).then_some(()),
    );
    assert_eq!(query(&prom_addr, "farmhand_recipes"), want_both("2"));
    assert_eq!(
        query(&prom_addr, "farmhand_builds_succeeded_total"),
        want_both("2")
    );
    assert_eq!(
        query(&prom_addr, "farmhand_builds_attempted_total"),
        want_both("2")
    );
    assert_eq!(
        query(&prom_addr, "farmhand_build_in_flight"),
        want_both("0")
    );
    assert_eq!(
        query(
            &prom_addr,
            &format!(
                "farmhand_build_info{{version=\"{}\"}}",
                env!("CARGO_PKG_VERSION")
            )
        ),
        want_both("1")
    );
    // The active index: the newest version of the one package.
    assert_eq!(
        query(&prom_addr, "farmhand_published_packages"),
        want_both("1")
    );

    // The alert rules loaded in the real server, evaluated without error,
    // and nothing fires on this healthy farm.
    let r = request(&prom_addr, "GET", "/api/v1/rules", &[], b"");
    let rules: serde_json::Value = serde_json::from_slice(&r.body).unwrap();
    let group = &rules["data"]["groups"][0];
    assert_eq!(group["name"], "farmhand", "{rules}");
    wait_for(Duration::from_secs(10), "rules evaluated", || {
        let r = request(&prom_addr, "GET", "/api/v1/rules", &[], b"");
        let v: serde_json::Value = serde_json::from_slice(&r.body).ok()?;
        let rs = v["data"]["groups"][0]["rules"].as_array()?.clone();
        (rs.len() == 6 && rs.iter().all(|r| r["health"] == "ok")).then_some(())
    });
    // (FarmhandAbsent may be pending from an evaluation that ran before
    // the first scrape; the next one clears it.)
    wait_for(Duration::from_secs(10), "no active alert", || {
        let r = request(&prom_addr, "GET", "/api/v1/alerts", &[], b"");
        let v: serde_json::Value = serde_json::from_slice(&r.body).ok()?;
        (v["data"]["alerts"] == serde_json::json!([])).then_some(())
    });
}

/// Runs `script` (sh, with `args` as $1...) in a private mount namespace
/// whose /run holds a real systemd-journald (volatile storage), and
/// returns its stdout.
fn with_private_journald(script: &str, args: &[&str]) -> String {
    let conf = tempfile::NamedTempFile::new().unwrap();
    std::fs::write(
        conf.path(),
        "[Journal]\nStorage=volatile\nReadKMsg=no\nForwardToSyslog=no\nForwardToKMsg=no\n\
         ForwardToConsole=no\nForwardToWall=no\n",
    )
    .unwrap();
    let prelude = r#"set -eu
conf=$1; shift
mount -t tmpfs -o mode=0755 tmpfs /run
mkdir -p /run/systemd/journal /run/log/journal
mount --bind "$conf" /etc/systemd/journald.conf
SYSTEMD_LOG_TARGET=console /lib/systemd/systemd-journald </dev/null >/dev/null 2>&1 &
JPID=$!
trap 'kill $JPID; wait $JPID || true' EXIT
i=0
while [ ! -S /run/systemd/journal/socket ]; do
  i=$((i+1)); [ $i -lt 200 ] || { echo "journald did not start" >&2; exit 1; }
  sleep 0.05
done
"#;
    let out = Command::new("timeout")
        .arg("60")
        .args(["unshare", "--mount", "--propagation", "private", "sh", "-c"])
        .arg(format!("{prelude}{script}"))
        .arg("sh")
        .arg(conf.path())
        .args(args)
        .stdin(Stdio::null())
        .output()
        .expect("unshare runs");
    let stdout = String::from_utf8_lossy(&out.stdout).into_owned();
    assert!(
        out.status.success(),
        "private journald script failed ({}), needs root:\n{stdout}\n{}",
        out.status,
        String::from_utf8_lossy(&out.stderr)
    );
    stdout
}

/// Journal entries (JSON export) of the given script output.
fn entries(out: &str) -> Vec<serde_json::Value> {
    out.lines()
        .filter(|l| l.starts_with('{'))
        .map(|l| serde_json::from_str(l).unwrap())
        .collect()
}

#[test]
fn journald_receives_events_with_fields() {
    let farm = Farm::new();
    let up = Upstream::new(&farm.root.join("up"));
    up.release("v1.0.0");
    farm.write_config("");
    farm.simple_recipe("hello", &up, "#!/bin/sh\ntrue\n", "");
    farm.simple_recipe("broken", &up, "#!/bin/sh\nexit 3\n", "");
    let bin = bin().display().to_string();
    let cfg = farm.config_path().display().to_string();
    let script = r#"
"$1" --config "$2" --log-format journald --once
journalctl --sync
journalctl -D /run/log/journal -o json --no-pager SYSLOG_IDENTIFIER=farmhand
echo '--- RECIPE=broken'
journalctl -D /run/log/journal -o json --no-pager RECIPE=broken
"#;
    let out = with_private_journald(script, &[&bin, &cfg]);
    let (all, broken) = out.split_once("--- RECIPE=broken").unwrap();
    let all = entries(all);
    let find = |msg: &str, recipe: Option<&str>| {
        all.iter()
            .find(|e| e["MESSAGE"] == msg && recipe.is_none_or(|r| e["RECIPE"] == r))
            .unwrap_or_else(|| panic!("no {msg:?} ({recipe:?}) in the journal:\n{out}"))
            .clone()
    };
    let starting = find("farmhand starting", None);
    assert_eq!(starting["FARM_ID"], "test-farm");
    assert_eq!(starting["MODE"], "once");
    assert_eq!(starting["PRIORITY"], "6");

    let built = find("build + publish complete", Some("hello"));
    assert_eq!(built["VERSION"], "1.0.0-1");
    assert_eq!(built["PRIORITY"], "6");
    let start = find("starting build", Some("hello"));
    assert_eq!(start["TAG"], "v1.0.0");

    let failed = find("build failed", Some("broken"));
    assert_eq!(failed["VERSION"], "1.0.0-1");
    assert_eq!(failed["PRIORITY"], "3", "error level maps to priority 3");
    assert!(
        failed["ERR"].as_str().is_some_and(|e| !e.is_empty()),
        "{failed}"
    );
    // The entry came through the native protocol from farmhand itself.
    assert_eq!(failed["_TRANSPORT"], "journal");

    // `journalctl RECIPE=broken` selects exactly that recipe's events.
    let broken = entries(broken);
    assert!(!broken.is_empty());
    assert!(broken.iter().all(|e| e["RECIPE"] == "broken"));
    assert!(broken.iter().any(|e| e["MESSAGE"] == "build failed"));
}

#[test]
fn auto_log_format_picks_the_journal_stream() {
    let farm = Farm::new();
    let up = Upstream::new(&farm.root.join("up"));
    up.release("v1.0.0");
    farm.write_config("");
    farm.simple_recipe("hello", &up, "#!/bin/sh\ntrue\n", "");
    let bin = bin().display().to_string();
    let cfg = farm.config_path().display().to_string();
    // systemd-cat connects stdout/stderr to journald's stream socket, as
    // systemd does for a service; JOURNAL_STREAM names that stream the way
    // systemd sets it (device:inode of stderr).
    let script = r#"
systemd-cat -t farmhand-stream sh -c 'JOURNAL_STREAM=$(stat -L -c %d:%i /proc/self/fd/2) exec "$0" --config "$1" --once' "$1" "$2"
journalctl --sync
journalctl -D /run/log/journal -o json --no-pager RECIPE=hello
"#;
    let out = with_private_journald(script, &[&bin, &cfg]);
    let e = entries(&out);
    assert!(
        e.iter()
            .any(|e| e["MESSAGE"] == "build + publish complete" && e["VERSION"] == "1.0.0-1"),
        "auto did not log natively to the journal:\n{out}"
    );
    assert!(e.iter().all(|e| e["_TRANSPORT"] == "journal"), "{out}");
}

/// Starts `cmd` (the daemon, possibly behind a wrapper that execs it) with
/// its stderr collected like `Farm::start`.
/// `systemd-socket-activate [--datagram] --listen=127.0.0.1:<port>
/// farmhand --config <farm> --log-format logfmt`, once it listens, and the
/// port. It takes no port 0, so the port is one the kernel handed out a
/// moment ago: should another process take it in between, the bind fails
/// ("Address already in use") and another port is tried.
fn socket_activate(farm: &Farm, datagram: bool) -> (Daemon, u16) {
    for _ in 0..10 {
        let port = if datagram {
            let s = std::net::UdpSocket::bind("127.0.0.1:0").unwrap();
            s.local_addr().unwrap().port()
        } else {
            let s = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
            s.local_addr().unwrap().port()
        };
        let mut cmd = Command::new("systemd-socket-activate");
        if datagram {
            cmd.arg("--datagram");
        }
        cmd.arg(format!("--listen=127.0.0.1:{port}"))
            .arg(bin())
            .arg("--config")
            .arg(farm.config_path())
            .args(["--log-format", "logfmt"]);
        let mut d = Daemon::spawn(&mut cmd);
        let listening = wait_for(
            Duration::from_secs(20),
            "systemd-socket-activate to listen or exit",
            || match d.child.try_wait() {
                _ if d.logs().contains("Listening on") => Some(true),
                Ok(Some(_)) => Some(false),
                _ => None,
            },
        );
        if listening {
            d.addr = (!datagram).then(|| format!("127.0.0.1:{port}"));
            return (d, port);
        }
        // It exited; its last words may still be on their way to the log.
        let t = std::time::Instant::now();
        while !d.logs().contains("Address already in use") {
            assert!(
                t.elapsed() < Duration::from_secs(5),
                "systemd-socket-activate failed:\n{}",
                d.logs()
            );
            std::thread::sleep(Duration::from_millis(20));
        }
    }
    panic!("no port to be had for systemd-socket-activate in 10 tries");
}

fn activation_farm() -> Farm {
    let mut farm = Farm::new();
    farm.http = true; // [http].addr = 127.0.0.1:0: a passed socket must win
    let up = Upstream::new(&farm.root.join("up"));
    up.release("v1.0.0");
    farm.write_config("");
    // The build lists its open descriptors and environment into its log.
    farm.simple_recipe("hello", &up, "#!/bin/sh\nls -l /proc/$$/fd/\nenv\n", "");
    farm
}

#[test]
fn socket_activation_serves_on_the_inherited_socket() {
    let farm = activation_farm();
    // systemd-socket-activate binds the socket and, on the first
    // connection, execs farmhand with it as descriptor 3 and LISTEN_FDS=1,
    // LISTEN_PID=<its pid>, as systemd does.
    let (mut d, _) = socket_activate(&farm, false);
    let addr = d.addr.clone().unwrap();
    // The first request starts the daemon and is answered by it: it waited
    // in the socket's queue meanwhile.
    let first = request(&addr, "GET", "/healthz", &[], b"");
    assert_eq!(first.status, 200, "{}", d.logs());
    let listening = d.wait_log_field("webhook server listening", "addr", Duration::from_secs(20));
    assert_eq!(listening, addr, "the inherited socket replaces [http].addr");
    d.wait_log("build + publish complete", Duration::from_secs(30));
    assert_eq!(d.get("/healthz").status, 200);
    assert_eq!(d.status()["builds_succeeded"], 1);

    // The build script inherited neither the listening socket nor the
    // activation variables.
    let log = std::fs::read_dir(farm.state().join("logs/hello"))
        .unwrap()
        .map(|e| read_build_log(&e.unwrap().path()))
        .next()
        .expect("a build log");
    assert!(log.contains(" 1 -> "), "no descriptor listing in:\n{log}");
    assert!(
        !log.contains("socket:"),
        "the build inherited a socket:\n{log}"
    );
    assert!(!log.contains("LISTEN_"), "{log}");

    d.signal("TERM");
    assert_eq!(d.wait_exit(Duration::from_secs(20)), 0, "{}", d.logs());
}

#[test]
fn socket_activation_rejects_a_datagram_socket_and_ignores_foreign_variables() {
    let farm = activation_farm();
    let (mut d, port) = socket_activate(&farm, true);
    let udp = std::net::UdpSocket::bind("127.0.0.1:0").unwrap();
    udp.send_to(b"x", ("127.0.0.1", port)).unwrap();
    assert_eq!(d.wait_exit(Duration::from_secs(20)), 1, "{}", d.logs());
    assert!(
        d.logs()
            .contains("LISTEN_FDS: descriptor 3 is not a listening stream socket"),
        "{}",
        d.logs()
    );

    // LISTEN_PID naming another process: the variables are not for us, and
    // farmhand binds [http].addr itself.
    let mut d = farm.start_with(&[], &[("LISTEN_FDS", "1"), ("LISTEN_PID", "1")]);
    let addr = d.addr.clone().unwrap();
    assert_ne!(addr, format!("127.0.0.1:{port}"));
    assert_eq!(d.get("/healthz").status, 200);
    d.signal("TERM");
    assert_eq!(d.wait_exit(Duration::from_secs(20)), 0);
}

#[test]
fn arch_pkgbuild_packages_the_same_files() {
    let tmp = tempfile::tempdir().unwrap();
    let src = tmp.path().join("src");
    let pkg = tmp.path().join("pkg");
    std::fs::create_dir_all(src.join("target/release")).unwrap();
    std::fs::copy(bin(), src.join("target/release/farmhand")).unwrap();
    // makepkg's variables, then the PKGBUILD's own package().
    let (stdout, _) = run_ok(
        Command::new("bash")
            .args([
                "-euc",
                "source \"$startdir/PKGBUILD\"; package; echo \"$pkgname $pkgver ${backup[*]}\"",
            ])
            .env("startdir", root().join("packaging/arch"))
            .env("srcdir", &src)
            .env("pkgdir", &pkg),
    );
    assert_eq!(
        stdout.trim(),
        format!(
            "farmhand {} etc/farmhand/config.toml",
            env!("CARGO_PKG_VERSION")
        )
    );
    let mut want = vec![
        "etc/farmhand/config.toml",
        "etc/farmhand/recipes/",
        "usr/bin/farmhand",
        "usr/lib/systemd/system/farmhand.service",
        "usr/lib/systemd/system/farmhand.socket",
        "usr/lib/sysusers.d/farmhand.conf",
        "usr/lib/tmpfiles.d/farmhand.conf",
        "usr/share/doc/farmhand/README.md",
        "usr/share/doc/farmhand/examples/config.toml",
        "usr/share/doc/farmhand/examples/prometheus/farmhand-alerts.yml",
    ]
    .into_iter()
    .map(String::from)
    .collect::<Vec<_>>();
    for e in std::fs::read_dir(root().join("docs")).unwrap() {
        let name = e.unwrap().file_name().to_string_lossy().into_owned();
        if name.ends_with(".md") {
            want.push(format!("usr/share/doc/farmhand/{name}"));
        }
    }
    want.sort();
    let (found, _) = run_ok(
        Command::new("find")
            .arg(".")
            .args(["(", "-type", "f", "-o", "-type", "d", "-empty", ")"])
            .current_dir(&pkg),
    );
    let mut got: Vec<String> = found
        .lines()
        .map(|l| {
            let p = l.trim_start_matches("./").to_string();
            if pkg.join(&p).is_dir() {
                format!("{p}/")
            } else {
                p
            }
        })
        .collect();
    got.sort();
    assert_eq!(got, want);
    assert_eq!(
        std::fs::read(pkg.join("usr/lib/systemd/system/farmhand.service")).unwrap(),
        std::fs::read(root().join("systemd/farmhand.service")).unwrap()
    );
}
