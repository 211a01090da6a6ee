//! `[[notify]]` against the real daemon and real local receivers: an HTTPS
//! receiver (Python's `http.server` in `ssl`, with a certificate from a
//! test CA the daemon is told to trust through `SSL_CERT_FILE`), one that
//! hangs, one that is down, and the command form.
//!
//! * A recipe's first failure sends `failed` once, not again when its
//!   retry fails too; the success after sends `recovered`; every publish
//!   sends `published`; each delivery's `X-Farmhand-Signature-256` is the
//!   HMAC of its body with the notify secret, which is never logged.
//! * A receiver that hangs delays no build (the build timestamps show it).
//! * A receiver that is down costs the first attempt and 3 retries, then
//!   counts `failed`.
//! * The command form gets the event JSON on stdin (`--once` waits for it).

use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use hmac::{Hmac, Mac};

use crate::util::*;

const T: Duration = Duration::from_secs(30);
const NOTIFY_SECRET: &str = "notify-s3cret-never-logged";
const SECRET: &[u8] = b"test-secret";

/// The receiver: appends one JSON line per request (time, path, headers,
/// body) to the log file, then answers 200 (`ok`), 500 (`fail`) or,
/// after 60 s, 200 (`hang`). TLS when given a certificate and key. Prints
/// its port.
const RECEIVER: &str = r#"
import http.server, json, ssl, sys, time
mode, log = sys.argv[1], sys.argv[2]
class H(http.server.BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    def do_POST(self):
        n = int(self.headers.get("Content-Length", "0"))
        body = self.rfile.read(n)
        with open(log, "a") as f:
            f.write(json.dumps({"t": time.time(), "path": self.path,
                                "headers": {k.lower(): v for k, v in self.headers.items()},
                                "body": body.decode()}) + "\n")
        if mode == "hang":
            time.sleep(60)
        self.send_response(500 if mode == "fail" else 200)
        self.send_header("Content-Length", "0")
        self.end_headers()
    def log_message(self, *a):
        pass
srv = http.server.ThreadingHTTPServer(("127.0.0.1", 0), H)
srv.daemon_threads = True
if len(sys.argv) > 4:
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    ctx.load_cert_chain(sys.argv[3], sys.argv[4])
    srv.socket = ctx.wrap_socket(srv.socket, server_side=True)
print(srv.server_address[1], flush=True)
srv.serve_forever()
"#;

struct Receiver {
    child: Child,
    port: u16,
    log: PathBuf,
}

impl Drop for Receiver {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Receiver {
    /// Starts the receiver in `dir`; `tls` = (certificate, key).
    fn start(dir: &Path, mode: &str, tls: Option<(&Path, &Path)>) -> Receiver {
        let script = dir.join("receiver.py");
        std::fs::write(&script, RECEIVER).unwrap();
        let log = dir.join(format!("received-{mode}.jsonl"));
        let mut cmd = Command::new("python3");
        cmd.arg(&script).arg(mode).arg(&log);
        if let Some((cert, key)) = tls {
            cmd.arg(cert).arg(key);
        }
        let mut child = cmd
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .spawn()
            .expect("python3 runs");
        let mut line = String::new();
        BufReader::new(child.stdout.take().unwrap())
            .read_line(&mut line)
            .unwrap();
        let port = line
            .trim()
            .parse()
            .unwrap_or_else(|_| panic!("receiver printed {line:?}"));
        Receiver { child, port, log }
    }

    /// Every request received so far.
    fn received(&self) -> Vec<serde_json::Value> {
        std::fs::read_to_string(&self.log)
            .unwrap_or_default()
            .lines()
            .map(|l| serde_json::from_str(l).unwrap())
            .collect()
    }

    /// The event documents received so far, parsed.
    fn events(&self) -> Vec<serde_json::Value> {
        self.received()
            .iter()
            .map(|r| serde_json::from_str(r["body"].as_str().unwrap()).unwrap())
            .collect()
    }
}

fn openssl(dir: &Path, args: &[&str]) {
    let out = Command::new("openssl")
        .args(args)
        .current_dir(dir)
        .output()
        .expect("openssl runs");
    assert!(
        out.status.success(),
        "openssl {args:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
}

/// A test CA and a certificate for 127.0.0.1 it signed: (ca.pem,
/// server.pem, server.key).
fn test_pki(dir: &Path) -> (PathBuf, PathBuf, PathBuf) {
    std::fs::create_dir_all(dir).unwrap();
    let ec = [
        "-newkey",
        "ec",
        "-pkeyopt",
        "ec_paramgen_curve:P-256",
        "-nodes",
    ];
    let mut ca = vec!["req", "-x509"];
    ca.extend(ec);
    ca.extend([
        "-keyout",
        "ca.key",
        "-out",
        "ca.pem",
        "-subj",
        "/CN=farmhand notify test CA",
        "-days",
        "2",
    ]);
    openssl(dir, &ca);
    let mut csr = vec!["req"];
    csr.extend(ec);
    csr.extend([
        "-keyout",
        "server.key",
        "-out",
        "server.csr",
        "-subj",
        "/CN=127.0.0.1",
    ]);
    openssl(dir, &csr);
    std::fs::write(
        dir.join("server.ext"),
        "subjectAltName=IP:127.0.0.1\nbasicConstraints=CA:FALSE\n",
    )
    .unwrap();
    openssl(
        dir,
        &[
            "x509",
            "-req",
            "-in",
            "server.csr",
            "-CA",
            "ca.pem",
            "-CAkey",
            "ca.key",
            "-CAcreateserial",
            "-out",
            "server.pem",
            "-days",
            "2",
            "-extfile",
            "server.ext",
        ],
    );
    (
        dir.join("ca.pem"),
        dir.join("server.pem"),
        dir.join("server.key"),
    )
}

fn notify_table(on: &str, url: &str) -> String {
    format!("[[notify]]\non = {on}\nurl = \"{url}\"\nsecret_file = \"notify-secret\"\n")
}

fn hmac_hex(key: &[u8], body: &[u8]) -> String {
    let mut mac = Hmac::<sha2::Sha256>::new_from_slice(key).unwrap();
    mac.update(body);
    hex::encode(mac.finalize().into_bytes())
}

#[test]
fn failed_once_then_recovered_and_published_over_https() {
    let mut farm = Farm::new();
    farm.http = true;
    let (ca, cert, key) = test_pki(&farm.root.join("pki"));
    let rx = Receiver::start(&farm.root, "ok", Some((&cert, &key)));
    std::fs::write(
        farm.root.join("notify-secret"),
        format!("{NOTIFY_SECRET}\n"),
    )
    .unwrap();
    let url = format!("https://127.0.0.1:{}/farm-hook", rx.port);
    farm.write_config(&format!(
        "[backoff]\nschedule = [\"1s\"]\n\n{}",
        notify_table("[\"failed\", \"recovered\", \"published\"]", &url)
    ));
    // Into the [http] table `write_config` writes.
    let text = std::fs::read_to_string(farm.config_path())
        .unwrap()
        .replacen(
            "[http]\n",
            "[http]\npublic_url = \"https://farm.example.org/\"\n",
            1,
        );
    std::fs::write(farm.config_path(), text).unwrap();
    let marker = farm.root.join("fail");
    std::fs::write(&marker, "").unwrap();
    let up = Upstream::new(&farm.root.join("up"));
    up.release("v1.0.0");
    let build = format!(
        "#!/bin/sh\nif [ -e '{}' ]; then echo broken >&2; exit 1; fi\n\
         mkdir -p \"$DESTDIR/usr/share/x\"\necho \"$FARMHAND_VERSION\" > \"$DESTDIR/usr/share/x/v\"\n",
        marker.display()
    );
    farm.simple_recipe(
        "flaky",
        &up,
        &build,
        "\n[watch]\nwebhook = true\npoll_interval = \"1h\"\n",
    );
    let d = farm.start_with(&[], &[("SSL_CERT_FILE", ca.to_str().unwrap())]);

    // Fails, then fails again on the retry after the 1 s backoff.
    d.wait_events("build failed", &[("recipe", "flaky")], 2, T);
    wait_for(T, "the failed notification", || {
        (d.metric("farmhand_notifications_total{result=\"delivered\"}") == Some(1.0)).then_some(())
    });
    // Recovers.
    std::fs::remove_file(&marker).unwrap();
    d.wait_event("build + publish complete", &[("version", "1.0.0-1")], T);
    // Another publish.
    up.release("v1.1.0");
    let r = d.webhook("push", "n-1", &push_payload(&up.url(), "v1.1.0"), SECRET);
    assert_eq!(r.status, 202, "{}", r.text());
    d.wait_event("build + publish complete", &[("version", "1.1.0-1")], T);
    wait_for(T, "four deliveries", || {
        (d.metric("farmhand_notifications_total{result=\"delivered\"}") == Some(4.0)).then_some(())
    });
    let failures = d.events("build failed", &[("recipe", "flaky")]).len();
    assert!(failures >= 2, "{failures}");

    let events = rx.events();
    let kinds: Vec<(&str, &str)> = events
        .iter()
        .map(|e| (e["event"].as_str().unwrap(), e["version"].as_str().unwrap()))
        .collect();
    assert_eq!(
        kinds,
        [
            ("failed", "1.0.0-1"),
            ("recovered", "1.0.0-1"),
            ("published", "1.0.0-1"),
            ("published", "1.1.0-1"),
        ],
        "one `failed` for {failures} failed builds"
    );
    let builds = d.builds();
    for e in &events {
        assert_eq!(e["farm_id"], "test-farm");
        assert_eq!(e["recipe"], "flaky");
        let id = e["build_id"].as_u64().unwrap();
        assert_eq!(
            e["build_url"],
            format!("https://farm.example.org/builds/{id}")
        );
        let b = builds
            .iter()
            .find(|b| b["id"] == id)
            .unwrap_or_else(|| panic!("no build {id}"));
        assert_eq!(b["version"], e["version"]);
        rfc3339_secs(e["at"].as_str().unwrap());
    }
    assert_eq!(
        events[0]["error"]
            .as_str()
            .map(|s| s.starts_with("building")),
        Some(true),
        "{}",
        events[0]
    );
    assert!(events[1]["error"].is_null());
    // The first failed build is the one reported.
    let first_failed = builds
        .iter()
        .filter(|b| b["state"] == "failed")
        .map(|b| b["id"].as_u64().unwrap())
        .min()
        .unwrap();
    assert_eq!(events[0]["build_id"], first_failed);
    // Signed with the notify secret; the event named in a header.
    for r in rx.received() {
        let body = r["body"].as_str().unwrap();
        let h = &r["headers"];
        assert_eq!(r["path"], "/farm-hook");
        assert_eq!(
            h["x-farmhand-signature-256"],
            format!(
                "sha256={}",
                hmac_hex(NOTIFY_SECRET.as_bytes(), body.as_bytes())
            )
        );
        let doc: serde_json::Value = serde_json::from_str(body).unwrap();
        assert_eq!(h["x-farmhand-event"], doc["event"]);
        assert_eq!(h["content-type"], "application/json");
    }
    assert_eq!(
        d.metric("farmhand_notifications_total{result=\"failed\"}"),
        Some(0.0)
    );
    assert!(
        !d.logs().contains(NOTIFY_SECRET),
        "the notify secret was logged"
    );
    assert!(
        !d.logs().contains("farm-hook"),
        "the receiver's URL path was logged"
    );
}

#[test]
fn a_hanging_receiver_delays_no_build() {
    let mut farm = Farm::new();
    farm.http = true;
    let rx = Receiver::start(&farm.root, "hang", None);
    std::fs::write(farm.root.join("notify-secret"), "s\n").unwrap();
    farm.write_config(&notify_table(
        "[\"published\"]",
        &format!("http://127.0.0.1:{}/hook", rx.port),
    ));
    let up = Upstream::new(&farm.root.join("up"));
    for t in ["v1.0.0", "v1.1.0", "v1.2.0", "v1.3.0"] {
        up.release(t);
    }
    farm.simple_recipe(
        "quick",
        &up,
        "#!/bin/sh\nmkdir -p \"$DESTDIR/x\"\necho hi > \"$DESTDIR/x/y\"\n",
        "",
    );
    let started = Instant::now();
    let d = farm.start();
    d.wait_events("build + publish complete", &[("recipe", "quick")], 4, T);
    let all_built = started.elapsed();
    // The first delivery is still hanging: nothing has been answered.
    wait_for(T, "the first delivery to arrive", || {
        (!rx.received().is_empty()).then_some(())
    });
    assert_eq!(
        d.metric("farmhand_notifications_total{result=\"delivered\"}"),
        Some(0.0)
    );
    // The log's millisecond times: each build starts right after the one
    // before it, while the first delivery hangs.
    let at = |line: &str| {
        let t = line.strip_prefix("time=").and_then(|r| r.split(' ').next());
        humantime::parse_rfc3339(t.unwrap_or_else(|| panic!("no time in {line}")))
            .unwrap()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap()
            .as_secs_f64()
    };
    let starts = d.events("starting build", &[("recipe", "quick")]);
    let ends = d.events("build + publish complete", &[("recipe", "quick")]);
    let first_delivery = rx.received()[0]["t"].as_f64().unwrap();
    eprintln!(
        "first notification reached the hanging receiver at {:.3} (it answers after 60 s)",
        first_delivery
    );
    let mut previous_end: Option<f64> = None;
    for (s, e) in starts.iter().zip(&ends) {
        let (s, e) = (at(s), at(e));
        let gap = previous_end.map_or(0.0, |p| s - p);
        eprintln!(
            "build started {s:.3}, finished {e:.3} ({gap:.3} s after the previous one finished)"
        );
        assert!(gap < 3.0, "a build waited {gap:.3} s");
        previous_end = Some(e);
    }
    assert!(
        previous_end.unwrap() < first_delivery + 10.0,
        "the last build finished only after the first delivery timed out"
    );
    assert!(
        all_built < Duration::from_secs(30),
        "4 builds took {all_built:?} with a hanging receiver"
    );
    let t = Instant::now();
    d.assert_healthy();
    assert!(t.elapsed() < Duration::from_secs(1));
}

#[test]
fn a_receiver_that_is_down_costs_three_retries_then_counts_failed() {
    let mut farm = Farm::new();
    farm.http = true;
    // A port nothing listens on.
    let port = {
        let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        l.local_addr().unwrap().port()
    };
    std::fs::write(farm.root.join("notify-secret"), "s\n").unwrap();
    farm.write_config(&notify_table(
        "[\"published\"]",
        &format!("http://127.0.0.1:{port}/hook"),
    ));
    let up = Upstream::new(&farm.root.join("up"));
    up.release("v1.0.0");
    farm.simple_recipe(
        "quick",
        &up,
        "#!/bin/sh\nmkdir -p \"$DESTDIR/x\"\necho hi > \"$DESTDIR/x/y\"\n",
        "",
    );
    let d = farm.start_with(&["--log-level", "debug"], &[]);
    d.wait_event("build + publish complete", &[("version", "1.0.0-1")], T);
    let published = Instant::now();
    let line = d.wait_event("notification failed", &[("event", "published")], T);
    let took = published.elapsed();
    assert_eq!(field(&line, "attempts").as_deref(), Some("4"), "{line}");
    assert!(line.contains("level=WARN"), "{line}");
    assert_eq!(
        d.events("notification attempt failed", &[("event", "published")])
            .len(),
        4
    );
    // 1 + 2 + 4 s of backoff between the attempts.
    assert!(took >= Duration::from_secs(6), "{took:?}");
    assert_eq!(
        d.metric("farmhand_notifications_total{result=\"failed\"}"),
        Some(1.0)
    );
    assert_eq!(
        d.metric("farmhand_notifications_total{result=\"delivered\"}"),
        Some(0.0)
    );
}

#[test]
fn the_command_form_gets_the_json_on_stdin() {
    let farm = Farm::new();
    let out = farm.root.join("notified.jsonl");
    farm.write_config(&format!(
        "[[notify]]\non = [\"published\", \"failed\"]\ncommand = [\"sh\", \"-c\", \"cat >> '{}'\"]\n",
        out.display()
    ));
    let up = Upstream::new(&farm.root.join("up"));
    up.release("v1.0.0");
    farm.simple_recipe(
        "quick",
        &up,
        "#!/bin/sh\nmkdir -p \"$DESTDIR/x\"\necho hi > \"$DESTDIR/x/y\"\n",
        "",
    );
    up.release("v2.0.0");
    let broken = Upstream::new(&farm.root.join("broken-up"));
    broken.release("v1.0.0");
    farm.simple_recipe("broken", &broken, "#!/bin/sh\nexit 7\n", "");
    let log = farm.once_ok();
    let text = std::fs::read_to_string(&out).unwrap_or_else(|e| panic!("{e}\n{log}"));
    let mut docs: Vec<serde_json::Value> = text
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    docs.sort_by_key(|d| d["build_id"].as_u64());
    let kinds: Vec<(&str, &str, &str)> = docs
        .iter()
        .map(|d| {
            (
                d["event"].as_str().unwrap(),
                d["recipe"].as_str().unwrap(),
                d["version"].as_str().unwrap(),
            )
        })
        .collect();
    let mut sorted = kinds.clone();
    sorted.sort();
    assert_eq!(
        sorted,
        [
            ("failed", "broken", "1.0.0-1"),
            ("published", "quick", "1.0.0-1"),
            ("published", "quick", "2.0.0-1"),
        ],
        "{log}"
    );
    for d in &docs {
        let id = d["build_id"].as_u64().unwrap();
        assert_eq!(d["build_url"], format!("/builds/{id}"));
        assert_eq!(d["farm_id"], "test-farm");
    }
    let failed = docs.iter().find(|d| d["event"] == "failed").unwrap();
    assert!(
        failed["error"].as_str().unwrap().contains("exit"),
        "{failed}"
    );
}

#[test]
fn a_restart_neither_repeats_failed_nor_misses_recovered() {
    let farm = Farm::new();
    let out = farm.root.join("notified.jsonl");
    farm.write_config(&format!(
        "[[notify]]\non = [\"failed\", \"recovered\"]\ncommand = [\"sh\", \"-c\", \"cat >> '{}'; echo >> '{}'\"]\n",
        out.display(),
        out.display()
    ));
    let up = Upstream::new(&farm.root.join("up"));
    up.release("v1.0.0");
    let broken = "#!/bin/sh\nexit 7\n";
    let fixed = "#!/bin/sh\nmkdir -p \"$DESTDIR/x\"\necho hi > \"$DESTDIR/x/y\"\n";
    farm.simple_recipe("app", &up, broken, "");
    let events = || -> Vec<(String, String)> {
        std::fs::read_to_string(&out)
            .unwrap_or_default()
            .lines()
            .filter(|l| !l.trim().is_empty())
            .map(|l| {
                let d: serde_json::Value = serde_json::from_str(l).unwrap();
                (
                    d["event"].as_str().unwrap().to_string(),
                    d["version"].as_str().unwrap().to_string(),
                )
            })
            .collect()
    };
    // Each run is a separate process: what it knows of the last build
    // comes from the history.
    let log = farm.once_ok();
    assert_eq!(events(), [("failed".into(), "1.0.0-1".into())], "{log}");
    up.release("v1.0.1");
    let log = farm.once_ok();
    assert_eq!(
        events(),
        [("failed".into(), "1.0.0-1".into())],
        "the second failure in a row says nothing, restart or not:\n{log}"
    );
    farm.simple_recipe("app", &up, fixed, "");
    up.release("v1.0.2");
    let log = farm.once_ok();
    assert_eq!(
        events(),
        [
            ("failed".into(), "1.0.0-1".into()),
            ("recovered".into(), "1.0.2-1".into())
        ],
        "{log}"
    );
}
