//! The systemd notify protocol against a real NOTIFY_SOCKET: the exact
//! message sequence for start, reload, watchdog and stop, and watchdog
//! pings that stop when a loop is wedged.

use crate::util::*;
use std::os::unix::net::UnixDatagram;
use std::time::{Duration, Instant};

struct Notify {
    sock: UnixDatagram,
    path: std::path::PathBuf,
}

impl Notify {
    fn new(dir: &std::path::Path) -> Notify {
        let path = dir.join("notify.sock");
        let sock = UnixDatagram::bind(&path).unwrap();
        sock.set_read_timeout(Some(Duration::from_millis(200)))
            .unwrap();
        Notify { sock, path }
    }

    fn recv(&self) -> Option<String> {
        let mut buf = [0u8; 4096];
        match self.sock.recv(&mut buf) {
            Ok(n) => Some(String::from_utf8_lossy(&buf[..n]).trim_end().to_string()),
            Err(_) => None,
        }
    }

    /// Next message that is not a watchdog ping (those are counted).
    fn next_non_watchdog(&self, timeout: Duration, pings: &mut usize) -> String {
        let start = Instant::now();
        while start.elapsed() < timeout {
            match self.recv() {
                Some(m) if m == "WATCHDOG=1" => *pings += 1,
                Some(m) => return m,
                None => {}
            }
        }
        panic!("no notify message within {timeout:?}");
    }
}

fn farm_with_recipe() -> (Farm, Upstream) {
    farm_with_script("#!/bin/sh\ntrue\n")
}

fn farm_with_script(script: &str) -> (Farm, Upstream) {
    let mut farm = Farm::new();
    farm.http = true;
    let up = Upstream::new(&farm.root.join("up"));
    up.release("v1.0.0");
    farm.write_config("");
    farm.simple_recipe("hello", &up, script, "");
    (farm, up)
}

#[test]
fn notify_sequence_for_start_reload_watchdog_and_stop() {
    let (farm, _up) = farm_with_script("#!/bin/sh\nsleep 1\n");
    let n = Notify::new(&farm.root);
    let sock = n.path.display().to_string();
    let mut d = farm.start_with(
        &[],
        &[("NOTIFY_SOCKET", &sock), ("WATCHDOG_USEC", "400000")],
    );
    let mut pings = 0;
    let ready = n.next_non_watchdog(Duration::from_secs(20), &mut pings);
    assert!(ready.starts_with("READY=1\nSTATUS="), "{ready:?}");
    // The first poll builds v1.0.0: STATUS follows the build.
    let mut statuses = Vec::new();
    let start = Instant::now();
    let building = "STATUS=building hello 1.0.0-1".to_string();
    let idle = "STATUS=idle, 1 recipes".to_string();
    while !(ready.ends_with("building hello 1.0.0-1") || statuses.contains(&building))
        || statuses.last() != Some(&idle)
    {
        assert!(
            start.elapsed() < Duration::from_secs(20),
            "statuses so far: {ready:?} {statuses:?}"
        );
        statuses.push(n.next_non_watchdog(Duration::from_secs(20), &mut pings));
    }

    // Watchdog pings keep coming at half of WATCHDOG_USEC while healthy.
    let before = pings;
    let t = Instant::now();
    while t.elapsed() < Duration::from_millis(1500) {
        if n.recv().as_deref() == Some("WATCHDOG=1") {
            pings += 1;
        }
    }
    assert!(
        pings - before >= 3,
        "only {} pings in 1.5 s",
        pings - before
    );

    d.signal("HUP");
    let reloading = n.next_non_watchdog(Duration::from_secs(10), &mut pings);
    let lines: Vec<&str> = reloading.lines().collect();
    assert_eq!(lines[0], "RELOADING=1", "{reloading:?}");
    assert!(
        lines[1].starts_with("MONOTONIC_USEC=") && lines[1][15..].parse::<u64>().is_ok(),
        "{reloading:?}"
    );
    let ready = n.next_non_watchdog(Duration::from_secs(10), &mut pings);
    assert_eq!(ready, "READY=1\nSTATUS=idle, 1 recipes");

    d.signal("TERM");
    let stopping = n.next_non_watchdog(Duration::from_secs(10), &mut pings);
    assert!(stopping.starts_with("STOPPING=1"), "{stopping:?}");
    assert_eq!(d.wait_exit(Duration::from_secs(20)), 0);
}

#[test]
fn wedged_scheduler_stops_watchdog_pings_and_fails_healthz() {
    let (farm, _up) = farm_with_recipe();
    let n = Notify::new(&farm.root);
    let sock = n.path.display().to_string();
    let d = farm.start_with(
        &[],
        &[
            ("NOTIFY_SOCKET", &sock),
            ("WATCHDOG_USEC", "400000"),
            ("FARMHAND_FAULT_WEDGE_SCHEDULER_AFTER", "2"),
        ],
    );
    // Healthy at first: pings flow.
    let mut before = 0;
    let t = Instant::now();
    while before < 2 {
        assert!(
            t.elapsed() < Duration::from_secs(10),
            "no watchdog pings while healthy"
        );
        if n.recv().as_deref() == Some("WATCHDOG=1") {
            before += 1;
        }
    }
    d.wait_log("scheduler wedged", Duration::from_secs(20));
    assert_eq!(
        d.get("/healthz").status,
        200,
        "healthy right after the wedge"
    );
    // Once the loop is stale, /healthz answers 503 and pings stop.
    let body = wait_for(Duration::from_secs(30), "/healthz 503", || {
        let r = d.get("/healthz");
        (r.status == 503).then(|| r.text())
    });
    assert!(body.contains("scheduler"), "{body}");
    while n.recv().is_some() {} // drain what was sent before
    let t = Instant::now();
    let mut pings = 0;
    while t.elapsed() < Duration::from_millis(1200) {
        if n.recv().as_deref() == Some("WATCHDOG=1") {
            pings += 1;
        }
    }
    assert_eq!(pings, 0, "watchdog must stay silent while a loop is wedged");
}

/// Notification is best effort: a `NOTIFY_SOCKET` naming no socket costs a
/// warning per message, never the daemon.
#[test]
fn missing_notify_socket_is_a_warning_only() {
    let (farm, _up) = farm_with_recipe();
    let missing = farm.root.join("no-such-dir/notify.sock");
    let mut d = farm.start_with(&[], &[("NOTIFY_SOCKET", missing.to_str().unwrap())]);
    d.wait_log("build + publish complete", Duration::from_secs(20));
    d.assert_healthy();
    d.signal("TERM");
    assert_eq!(d.wait_exit(Duration::from_secs(20)), 0, "{}", d.logs());
    let logs = d.logs();
    let failed: Vec<&str> = logs
        .lines()
        .filter(|l| l.contains("sd_notify failed"))
        .collect();
    assert!(!failed.is_empty(), "the failure is not logged:\n{logs}");
    for line in &failed {
        assert!(line.contains("level=WARN"), "{line}");
    }
    assert!(
        !logs
            .lines()
            .any(|l| l.contains("level=ERROR") && l.contains("notify")),
        "{logs}"
    );
}

/// A `NOTIFY_SOCKET` nobody reads: watchdog pings fill its queue, and from
/// then on every message is dropped (logged at debug) instead of blocking
/// (pings every 2 ms fill even a 512-message queue within seconds),
/// so the daemon builds, serves and stops as usual.
#[test]
fn notify_socket_nobody_reads_never_stalls_the_daemon() {
    let (farm, _up) = farm_with_recipe();
    let path = farm.root.join("deaf.sock");
    let _deaf = UnixDatagram::bind(&path).unwrap(); // never read
    let mut d = farm.start_with(
        &["--log-level", "debug"],
        &[
            ("NOTIFY_SOCKET", path.to_str().unwrap()),
            ("WATCHDOG_USEC", "4000"),
        ],
    );
    let dropped = "sd_notify message dropped: socket queue full";
    d.wait_log(dropped, Duration::from_secs(20));
    d.wait_log("build + publish complete", Duration::from_secs(20));
    // Still pinging (the watchdog loop is not stuck on the socket), and
    // /healthz, which fails when a loop stalls, stays green.
    let so_far = d.count(dropped);
    d.wait_count(dropped, so_far + 20, Duration::from_secs(20));
    d.assert_healthy();
    d.signal("TERM");
    assert_eq!(d.wait_exit(Duration::from_secs(20)), 0, "{}", d.logs());
    let logs = d.logs();
    assert!(!logs.contains("sd_notify failed"), "{logs}");
    assert!(!logs.contains("level=ERROR"), "{logs}");
}
