//! The HTTP interface against the real daemon: `/healthz`, the `/status`
//! document (every field of the contract, idle, building, failing), the
//! Prometheus exposition (content negotiation, `promtool`), `HEAD`,
//! plain-text errors, `/builds` and build logs (also followed live), and
//! resilience: stalled clients and 500 concurrent connections.

use crate::util::*;
use serde_json::Value;
use std::io::{Read, Write};
use std::net::TcpStream;
use std::time::{Duration, Instant, SystemTime};

const SECRET: &[u8] = b"test-secret";
const T: Duration = Duration::from_secs(20);
const HOOKED: &str = "\n[watch]\ngithub_webhook = true\npoll_interval = \"1h\"\n";

/// The metric names of DESIGN section 7.
const METRICS: [&str; 16] = [
    "farmhand_builds_attempted_total",
    "farmhand_builds_succeeded_total",
    "farmhand_builds_failed_total",
    "farmhand_build_duration_seconds",
    "farmhand_build_in_flight",
    "farmhand_build_in_flight_started_timestamp_seconds",
    "farmhand_backoff_entries",
    "farmhand_queue_depth",
    "farmhand_recipes",
    "farmhand_invalid_recipes",
    "farmhand_polls_total",
    "farmhand_last_poll_success_timestamp_seconds",
    "farmhand_webhooks_total",
    "farmhand_published_packages",
    "farmhand_start_time_seconds",
    "farmhand_build_info",
];

/// Parses an RFC 3339 UTC timestamp with `Z`.
fn ts(v: &Value, what: &str) -> SystemTime {
    let s = v
        .as_str()
        .unwrap_or_else(|| panic!("{what} is not a string: {v}"));
    assert!(s.ends_with('Z'), "{what} = {s} is not UTC with Z");
    humantime::parse_rfc3339(s).unwrap_or_else(|e| panic!("{what} = {s}: {e}"))
}

fn secs_between(a: SystemTime, b: SystemTime) -> f64 {
    match b.duration_since(a) {
        Ok(d) => d.as_secs_f64(),
        Err(e) => -e.duration().as_secs_f64(),
    }
}

fn json(r: &HttpResponse) -> Value {
    assert_eq!(r.status, 200, "{}", r.text());
    serde_json::from_slice(&r.body).unwrap_or_else(|e| panic!("{e}: {}", r.text()))
}

/// A farm with a slow gated recipe `slow` (tags v1.0.0, v1.1.0), a webhook
/// recipe `bad` whose build fails (no tags yet) and an invalid recipe.
fn status_farm() -> (Farm, Upstream, Upstream, std::path::PathBuf) {
    let mut farm = Farm::new();
    farm.http = true;
    let gate = farm.root.join("gate");
    let slow = Upstream::new(&farm.root.join("slow-up"));
    slow.release("v1.0.0");
    slow.release("v1.1.0");
    let bad = Upstream::new(&farm.root.join("bad-up"));
    farm.write_config("[backoff]\nschedule = [\"30s\", \"1h\"]\n");
    farm.simple_recipe(
        "slow",
        &slow,
        &format!("#!/bin/sh\necho building $FARMHAND_VERSION\n{}mkdir -p \"$DESTDIR/x\"\ntouch \"$DESTDIR/x/$FARMHAND_VERSION\"\n", wait_file_sh(&gate)),
        "",
    );
    farm.simple_recipe(
        "bad",
        &bad,
        "#!/bin/sh\necho about to fail\nexit 3\n",
        HOOKED,
    );
    farm.recipe(
        "broken",
        "[upstream]\ngit = \"/nowhere\"\ntag_patern = '^v(.*)$'\n",
        "#!/bin/sh\n",
    );
    (farm, slow, bad, gate)
}

#[test]
fn status_document_idle_building_and_failing() {
    let (farm, _slow, bad, gate) = status_farm();
    let d = farm.start();
    let t0 = SystemTime::now();

    let r = d.get("/healthz");
    assert_eq!((r.status, r.text().trim()), (200, "ok"));
    assert_eq!(r.header("content-type"), Some("text/plain; charset=utf-8"));

    // Building: slow 1.1.0-1 (newest first), 1.0.0-1 queued.
    let s = d.wait_status(T, "slow 1.1.0-1 building, both polled", |s| {
        s["in_flight"]["phase"] == "building"
            && s["polls"]["bad"]["last_at"].is_string()
            && s["polls"]["slow"]["next_at"].is_string()
            && s["queue"].as_array().is_some_and(|q| !q.is_empty())
    });
    let r = d.get("/status");
    assert_eq!(r.header("content-type"), Some("application/json"));
    for k in [
        "farm_id",
        "recipes",
        "builds_attempted",
        "builds_succeeded",
        "in_flight",
        "failures",
        "version",
        "started_at",
        "builds_failed",
        "queue",
        "invalid_recipes",
        "polls",
    ] {
        assert!(s.get(k).is_some(), "/status has no {k}: {s:#}");
    }
    assert_eq!(s["farm_id"], "test-farm");
    assert_eq!(s["recipes"], serde_json::json!(["bad", "slow"]));
    assert_eq!(s["version"], env!("CARGO_PKG_VERSION"));
    assert!(secs_between(ts(&s["started_at"], "started_at"), t0).abs() < 5.0);
    assert_eq!(s["builds_attempted"], 1);
    assert_eq!(s["builds_succeeded"], 0);
    assert_eq!(s["builds_failed"], 0);
    assert_eq!(s["failures"], serde_json::json!({}));
    let f = &s["in_flight"];
    assert_eq!(f["recipe"], "slow");
    assert_eq!(f["version"], "1.1.0-1");
    assert_eq!(f["tag"], "v1.1.0");
    assert_eq!(f["trigger"], "poll");
    assert_eq!(f["build_id"], 1);
    assert_eq!(f["phase"], "building");
    assert!(
        secs_between(
            ts(&f["started_at"], "in_flight.started_at"),
            SystemTime::now()
        ) < 20.0
    );
    assert_eq!(s["queue"][0]["recipe"], "slow");
    assert_eq!(s["queue"][0]["version"], "1.0.0-1");
    let broken = s["invalid_recipes"]["broken"].as_str().unwrap();
    assert!(
        broken.contains("recipe.toml") && broken.contains("tag_patern"),
        "{broken}"
    );
    for id in ["slow", "bad"] {
        let p = &s["polls"][id];
        assert_eq!(p["ok"], true, "{p}");
        let last = ts(&p["last_at"], "polls.last_at");
        let next = ts(&p["next_at"], "polls.next_at");
        // 1h interval plus up to 5 minutes of jitter.
        let gap = secs_between(last, next);
        assert!(
            (3590.0..=3900.0).contains(&gap),
            "{id}: next poll {gap}s after the last"
        );
    }
    assert_eq!(s["polls"]["slow"]["tags_seen"], 2);
    assert_eq!(s["polls"]["bad"]["tags_seen"], 0);

    // The build finishes: idle again.
    std::fs::write(&gate, "").unwrap();
    let s = d.wait_status(T, "both slow builds done", |s| s["builds_succeeded"] == 2);
    let s = if s["in_flight"].is_null() {
        s
    } else {
        d.wait_status(T, "idle", |s| s["in_flight"].is_null())
    };
    assert!(s["in_flight"].is_null());
    assert_eq!(s["queue"], serde_json::json!([]));
    assert_eq!(s["failures"], serde_json::json!({}));

    // A failure: failures["bad@1.0.0-1"] with next_retry one step (30s) ahead.
    bad.release("v1.0.0");
    let r = d.webhook(
        "push",
        "fail-1",
        &push_payload(&bad.url(), "v1.0.0"),
        SECRET,
    );
    assert_eq!(r.status, 202);
    let s = d.wait_status(T, "bad failed", |s| s["builds_failed"] == 1);
    let failed_at = SystemTime::now();
    let fail = &s["failures"]["bad@1.0.0-1"];
    assert_eq!(fail["failures"], 1, "{s:#}");
    let ahead = secs_between(failed_at, ts(&fail["next_retry"], "next_retry"));
    assert!(
        (25.0..=31.0).contains(&ahead),
        "next_retry {ahead}s ahead, want ~30s"
    );
    assert_eq!(s["failures"].as_object().unwrap().len(), 1);
    assert_eq!(s["builds_attempted"], 3);

    // /builds: newest first, with every field, in its final state.
    let b = json(&d.get("/builds"));
    let b = b.as_array().unwrap();
    assert_eq!(b.len(), 3);
    let ids: Vec<u64> = b.iter().map(|x| x["id"].as_u64().unwrap()).collect();
    assert_eq!(ids, [3, 2, 1]);
    for x in b {
        for k in [
            "id",
            "recipe",
            "version",
            "tag",
            "trigger",
            "state",
            "started_at",
            "finished_at",
            "duration",
            "error",
            "log",
        ] {
            assert!(x.get(k).is_some(), "/builds entry has no {k}: {x}");
        }
        let started = ts(&x["started_at"], "started_at");
        let finished = ts(&x["finished_at"], "finished_at");
        assert!(secs_between(started, finished) >= 0.0);
        assert!(x["duration"].as_f64().unwrap() >= 0.0);
        assert_eq!(x["log_url"], format!("/builds/{}/log", x["id"]));
        assert_eq!(x["log"], x["log_url"]);
    }
    assert_eq!(
        (
            &b[0]["recipe"],
            &b[0]["state"],
            &b[0]["trigger"],
            &b[0]["phase"]
        ),
        (
            &Value::from("bad"),
            &Value::from("failed"),
            &Value::from("webhook"),
            &Value::from("building")
        )
    );
    assert!(
        b[0]["error"]
            .as_str()
            .unwrap()
            .contains("exited with status 3"),
        "{}",
        b[0]
    );
    assert_eq!(
        (&b[1]["version"], &b[1]["state"], &b[1]["error"]),
        (
            &Value::from("1.0.0-1"),
            &Value::from("succeeded"),
            &Value::Null
        )
    );
    assert_eq!(
        (&b[2]["version"], &b[2]["tag"]),
        (&Value::from("1.1.0-1"), &Value::from("v1.1.0"))
    );

    // The logs.
    let log = d.get("/builds/3/log");
    assert_eq!(log.status, 200);
    assert_eq!(
        log.header("content-type"),
        Some("text/plain; charset=utf-8")
    );
    assert!(log.text().contains("about to fail"), "{}", log.text());
    assert!(
        log.text().contains("exited with status 3"),
        "{}",
        log.text()
    );
    let log = d.get("/builds/1/log").text();
    assert!(log.contains("building 1.1.0-1"), "{log}");
    // Without follow, a finished build's log is the same.
    assert_eq!(d.get("/builds/1/log?follow=1").text(), log);
}

#[test]
fn followed_log_streams_while_the_build_prints() {
    let mut farm = Farm::new();
    farm.http = true;
    let up = Upstream::new(&farm.root.join("up"));
    up.release("v1.0.0");
    farm.write_config("");
    let gate = farm.root.join("gate");
    farm.simple_recipe(
        "talker",
        &up,
        &format!(
            "#!/bin/sh\necho first line from the build\n{}echo second line from the build\n",
            wait_file_sh(&gate)
        ),
        "",
    );
    let d = farm.start();
    d.wait_status(T, "building", |s| s["in_flight"]["phase"] == "building");
    let addr = d.addr.clone().unwrap();
    let mut s = TcpStream::connect(&addr).unwrap();
    s.set_read_timeout(Some(Duration::from_millis(200)))
        .unwrap();
    write!(
        s,
        "GET /builds/1/log?follow=1 HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\n\r\n"
    )
    .unwrap();
    let mut raw = Vec::new();
    let mut buf = [0u8; 4096];
    let mut read_until = |raw: &mut Vec<u8>, what: &str, stop: &dyn Fn(&[u8]) -> bool| {
        let start = Instant::now();
        loop {
            if stop(raw) {
                return;
            }
            assert!(
                start.elapsed() < T,
                "{what}; got so far: {}",
                String::from_utf8_lossy(raw)
            );
            match s.read(&mut buf) {
                Ok(0) => {
                    assert!(
                        stop(raw),
                        "stream ended before {what}: {}",
                        String::from_utf8_lossy(raw)
                    );
                    return;
                }
                Ok(n) => raw.extend_from_slice(&buf[..n]),
                Err(_) => {}
            }
        }
    };
    let has = |raw: &[u8], needle: &str| String::from_utf8_lossy(raw).contains(needle);
    read_until(&mut raw, "the first line", &|r| {
        has(r, "first line from the build")
    });
    assert!(!gate.exists());
    assert!(!has(&raw, "second line"));
    assert!(has(&raw, "HTTP/1.1 200"));
    let t = Instant::now();
    std::fs::write(&gate, "").unwrap();
    let eof = std::cell::Cell::new(false);
    read_until(&mut raw, "the end of the stream", &|r| {
        eof.get() || r.windows(5).any(|w| w == b"0\r\n\r\n")
    });
    let text = String::from_utf8_lossy(&dechunk(
        &raw[raw.windows(4).position(|w| w == b"\r\n\r\n").unwrap() + 4..],
    ))
    .into_owned();
    assert!(text.contains("second line from the build"), "{text}");
    assert!(text.find("first line").unwrap() < text.find("second line").unwrap());
    assert!(t.elapsed() < Duration::from_secs(10));
    d.wait_event("build + publish complete", &[("recipe", "talker")], T);
    // Once finished, the plain log holds everything the stream showed.
    let full = d.get("/builds/1/log").text();
    assert!(
        full.contains("first line from the build") && full.contains("second line from the build")
    );
}

fn simple_http_farm() -> (Farm, Daemon) {
    let mut farm = Farm::new();
    farm.http = true;
    let up = Upstream::new(&farm.root.join("up"));
    up.release("v1.0.0");
    let bad_up = Upstream::new(&farm.root.join("bad-up"));
    bad_up.release("v2.0.0");
    farm.write_config("");
    farm.simple_recipe(
        "hello",
        &up,
        "#!/bin/sh\nmkdir -p \"$DESTDIR/usr/share/hello\"\necho hi > \"$DESTDIR/usr/share/hello/hi\"\n",
        "",
    );
    farm.simple_recipe("fails", &bad_up, "#!/bin/sh\nexit 1\n", "");
    farm.recipe("broken", "[upstream]\ntag_pattern = 'v'\n", "#!/bin/sh\n");
    let d = farm.start();
    d.wait_status(T, "one success, one failure", |s| {
        s["builds_succeeded"] == 1 && s["builds_failed"] == 1 && s["in_flight"].is_null()
    });
    (farm, d)
}

#[test]
fn metrics_pass_promtool_and_status_negotiates_the_exposition() {
    let (_farm, d) = simple_http_farm();
    let r = d.get("/metrics");
    assert_eq!(r.status, 200);
    assert!(
        r.header("content-type").unwrap().starts_with("text/plain"),
        "{:?}",
        r.header("content-type")
    );
    let text = r.text();
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
    for name in METRICS {
        assert!(
            text.lines()
                .any(|l| l.starts_with(&format!("# TYPE {name} "))),
            "no metric {name} in\n{text}"
        );
    }
    assert!(text.contains("farmhand_build_duration_seconds_bucket{le=\"+Inf\"} 2\n"));
    for (series, want) in [
        ("farmhand_builds_attempted_total", 2.0),
        ("farmhand_builds_succeeded_total", 1.0),
        ("farmhand_builds_failed_total{recipe=\"fails\"}", 1.0),
        ("farmhand_build_duration_seconds_count", 2.0),
        ("farmhand_build_in_flight", 0.0),
        ("farmhand_backoff_entries", 1.0),
        ("farmhand_queue_depth", 0.0),
        ("farmhand_recipes", 2.0),
        ("farmhand_invalid_recipes", 1.0),
        ("farmhand_polls_total{recipe=\"hello\",result=\"ok\"}", 1.0),
        ("farmhand_published_packages", 1.0),
        (
            "farmhand_webhooks_total{forge=\"github\",result=\"accepted\"}",
            0.0,
        ),
        ("farmhand_notifications_total{result=\"delivered\"}", 0.0),
        (
            &format!(
                "farmhand_build_info{{version=\"{}\"}}",
                env!("CARGO_PKG_VERSION")
            ),
            1.0,
        ),
    ] {
        assert_eq!(d.metric(series), Some(want), "{series}");
    }
    let now = SystemTime::now()
        .duration_since(SystemTime::UNIX_EPOCH)
        .unwrap()
        .as_secs_f64();
    let started = d.metric("farmhand_start_time_seconds").unwrap();
    assert!((now - started).abs() < 60.0, "{started}");
    let polled = d
        .metric("farmhand_last_poll_success_timestamp_seconds{recipe=\"hello\"}")
        .unwrap();
    assert!((now - polled).abs() < 60.0, "{polled}");

    // /status for a scraper.
    for accept in [
        "text/plain",
        "application/openmetrics-text;version=1.0.0,application/openmetrics-text;version=0.0.1;q=0.75,text/plain;version=0.0.4;q=0.5,*/*;q=0.1",
        "application/openmetrics-text;version=1.0.0;escaping=allow-utf-8;q=0.5,application/openmetrics-text;version=0.0.1;q=0.4,text/plain;version=1.0.0;escaping=allow-utf-8;q=0.3,text/plain;version=0.0.4;q=0.2,*/*;q=0.1",
    ] {
        let r = d.http("GET", "/status", &[("Accept", accept)], b"");
        assert_eq!(r.status, 200);
        assert!(r.header("content-type").unwrap().starts_with("text/plain"), "{accept}");
        assert!(
            r.text().contains("# TYPE farmhand_builds_attempted_total counter"),
            "{accept}: {}",
            r.text()
        );
    }
    // Browsers and JSON clients get JSON.
    for accept in [
        "application/json",
        "*/*",
        "text/html,application/xhtml+xml,*/*;q=0.8",
    ] {
        let r = d.http("GET", "/status", &[("Accept", accept)], b"");
        assert_eq!(
            r.header("content-type"),
            Some("application/json"),
            "{accept}"
        );
        json(&r);
    }
}

#[test]
fn head_matches_get_and_errors_are_plain_text() {
    let (_farm, d) = simple_http_farm();
    // Keep-alive: HEAD, GET and an error on one connection, pipelined.
    let addr = d.addr.clone().unwrap();
    let mut s = TcpStream::connect(&addr).unwrap();
    s.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
    write!(
        s,
        "HEAD /metrics HTTP/1.1\r\nHost: x\r\n\r\nGET /healthz HTTP/1.1\r\nHost: x\r\n\r\n\
         GET /nope HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n"
    )
    .unwrap();
    let head = read_response(&mut s, true).unwrap();
    assert_eq!(head.status, 200);
    assert!(head.body.is_empty());
    let ok = read_response(&mut s, false).unwrap();
    assert_eq!((ok.status, ok.text().trim()), (200, "ok"));
    let missing = read_response(&mut s, false).unwrap();
    assert_eq!(missing.status, 404, "{}", missing.text());
    for path in [
        "/healthz",
        "/status",
        "/metrics",
        "/builds",
        "/builds/1/log",
    ] {
        let get = d.get(path);
        let head = d.http("HEAD", path, &[], b"");
        assert_eq!(get.status, 200, "GET {path}");
        assert_eq!(head.status, 200, "HEAD {path}");
        assert!(
            head.body.is_empty(),
            "HEAD {path} sent a body: {:?}",
            head.text()
        );
        assert_eq!(
            head.header("content-type"),
            get.header("content-type"),
            "{path}"
        );
        assert_eq!(
            head.header("content-length"),
            Some(get.body.len().to_string().as_str()),
            "HEAD {path}: {:?}",
            head.headers
        );
    }
    let plain = |r: &HttpResponse, what: &str| {
        assert_eq!(
            r.header("content-type"),
            Some("text/plain; charset=utf-8"),
            "{what}"
        );
        let t = r.text();
        assert!(!t.trim().is_empty() && t.len() < 200, "{what}: {t:?}");
    };
    for path in [
        "/nope",
        "/builds/999/log",
        "/builds/abc/log",
        "/status/extra",
    ] {
        let r = d.get(path);
        assert_eq!(r.status, 404, "GET {path}: {}", r.text());
        plain(&r, path);
    }
    // `/` is the console (tests/integration/console.rs), HEAD included.
    let head = d.http("HEAD", "/", &[], b"");
    assert_eq!(head.status, 200);
    assert!(head.body.is_empty());
    assert_eq!(
        head.header("content-type"),
        Some("text/html; charset=utf-8")
    );
    for (method, path) in [
        ("POST", "/status"),
        ("DELETE", "/healthz"),
        ("PUT", "/metrics"),
        ("POST", "/builds"),
        ("POST", "/builds/1/log"),
    ] {
        let r = d.http(method, path, &[], b"x");
        assert_eq!(r.status, 405, "{method} {path}: {}", r.text());
        assert_eq!(r.header("allow"), Some("GET, HEAD"), "{method} {path}");
        plain(&r, path);
    }
}

#[test]
fn stalled_clients_are_dropped_and_others_still_served() {
    let mut farm = Farm::new();
    farm.http = true;
    farm.write_config("");
    let d = farm.start();
    let addr = d.addr.clone().unwrap();
    let started = Instant::now();
    let mut slow: Vec<TcpStream> = (0..60)
        .map(|i| {
            let mut s = TcpStream::connect(&addr).unwrap();
            match i % 3 {
                // Half a header, then silence.
                0 => s
                    .write_all(b"GET /status HTTP/1.1\r\nHost: x\r\nX-Slow: ")
                    .unwrap(),
                // A webhook whose body stops after 10 of 100 bytes.
                1 => s
                    .write_all(
                        b"POST /webhooks/github HTTP/1.1\r\nHost: x\r\nX-GitHub-Event: push\r\n\
                          Content-Length: 100\r\n\r\n{\"zen\": \"x",
                    )
                    .unwrap(),
                // Nothing at all.
                _ => {}
            }
            s.set_read_timeout(Some(Duration::from_millis(100)))
                .unwrap();
            s
        })
        .collect();
    // Meanwhile the server answers others at once.
    for _ in 0..20 {
        let t = Instant::now();
        let r = d.get("/healthz");
        assert_eq!(r.status, 200);
        assert!(t.elapsed() < Duration::from_secs(1));
    }
    // Every stalled connection is closed after the header (or body)
    // timeout of 10 s; stalled webhook bodies are answered 408 first.
    let mut closed_at = vec![None; slow.len()];
    let mut answered_408 = vec![false; slow.len()];
    let mut buf = [0u8; 1024];
    while closed_at.iter().any(Option::is_none) {
        assert!(
            started.elapsed() < Duration::from_secs(20),
            "{} stalled connections still open after 20 s",
            closed_at.iter().filter(|c| c.is_none()).count()
        );
        for (i, s) in slow.iter_mut().enumerate() {
            if closed_at[i].is_some() {
                continue;
            }
            match s.read(&mut buf) {
                Ok(0) => closed_at[i] = Some(started.elapsed()),
                Ok(n) => {
                    // A 408 is also a clean answer; the close follows.
                    let t = String::from_utf8_lossy(&buf[..n]).into_owned();
                    assert!(t.starts_with("HTTP/1.1 408"), "unexpected answer {t:?}");
                    answered_408[i] = true;
                }
                Err(e) if e.kind() == std::io::ErrorKind::ConnectionReset => {
                    closed_at[i] = Some(started.elapsed());
                }
                Err(_) => {}
            }
        }
        assert_eq!(d.get("/healthz").status, 200);
    }
    let first = closed_at.iter().flatten().min().unwrap();
    let last = closed_at.iter().flatten().max().unwrap();
    eprintln!("stalled connections closed after {first:?} .. {last:?}");
    assert!(
        *first >= Duration::from_secs(8),
        "dropped too early: {first:?}"
    );
    for (i, got) in answered_408.iter().enumerate() {
        assert_eq!(*got, i % 3 == 1, "connection {i}: 408 answer {got}");
    }
    assert_eq!(d.get("/healthz").status, 200);
    assert_eq!(
        d.metric("farmhand_webhooks_total{forge=\"github\",result=\"bad_request\"}"),
        Some(20.0)
    );
}

#[test]
fn five_hundred_concurrent_connections_are_all_answered() {
    let mut farm = Farm::new();
    farm.http = true;
    let up = Upstream::new(&farm.root.join("up"));
    up.release("v1.0.0");
    farm.write_config("");
    farm.simple_recipe("hello", &up, "#!/bin/sh\ntrue\n", "");
    let d = farm.start();
    d.wait_status(T, "idle", |s| {
        s["builds_attempted"] == 1 && s["in_flight"].is_null()
    });
    let addr = d.addr.clone().unwrap();
    // 10 threads x 50 connections, all open at the same time.
    let barrier = std::sync::Arc::new(std::sync::Barrier::new(10));
    let threads: Vec<_> = (0..10)
        .map(|t| {
            let (addr, barrier) = (addr.clone(), barrier.clone());
            std::thread::spawn(move || {
                let mut conns: Vec<TcpStream> = (0..50)
                    .map(|_| {
                        let s = TcpStream::connect(&addr).unwrap();
                        s.set_read_timeout(Some(Duration::from_secs(30))).unwrap();
                        s
                    })
                    .collect();
                barrier.wait();
                let paths = ["/healthz", "/status", "/metrics", "/builds"];
                for (i, s) in conns.iter_mut().enumerate() {
                    let p = paths[(t + i) % paths.len()];
                    let _ = write!(
                        s,
                        "GET {p} HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n"
                    );
                }
                let (mut ok, mut closed) = (0, 0);
                for s in &mut conns {
                    match read_response(s, false) {
                        Ok(r) => {
                            assert_eq!(r.status, 200);
                            ok += 1;
                        }
                        Err(e) => {
                            assert!(
                                matches!(
                                    e.kind(),
                                    std::io::ErrorKind::UnexpectedEof
                                        | std::io::ErrorKind::ConnectionReset
                                ),
                                "{e}"
                            );
                            closed += 1;
                        }
                    }
                }
                (ok, closed)
            })
        })
        .collect();
    let (mut ok, mut closed) = (0, 0);
    for t in threads {
        let (o, c) = t.join().unwrap();
        ok += o;
        closed += c;
    }
    eprintln!("500 connections: {ok} answered, {closed} closed");
    assert_eq!(ok + closed, 500);
    assert!(ok >= 450, "only {ok} of 500 answered ({closed} closed)");
    let r = d.get("/healthz");
    assert_eq!((r.status, r.text().trim()), (200, "ok"));
    assert_eq!(d.status()["builds_attempted"], 1);
}
