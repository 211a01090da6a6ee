//! The build history and the live view against the real daemon: history
//! that survives SIGKILL and a torn record with ids that continue,
//! `/builds` filters, `/builds/{id}` (phases, previous_duration),
//! `/recipes/{id}`, logs stored zstd-compressed and served either way,
//! and `GET /events` (a build's events, resuming with `Last-Event-ID`,
//! the subscriber cap, the memory of idle and stalled subscribers).

use crate::util::*;
use serde_json::Value;
use std::io::{Read, Write};
use std::net::TcpStream;
use std::time::{Duration, Instant};

const SECRET: &[u8] = b"test-secret";
const T: Duration = Duration::from_secs(60);
const HOOKED: &str = "\n[watch]\ngithub_webhook = true\npoll_interval = \"1h\"\n";
const SMALL_BUILD: &str = "#!/bin/sh\necho \"hello from $FARMHAND_VERSION\"\n\
     mkdir -p \"$DESTDIR/usr/share/x\"\necho \"$FARMHAND_VERSION\" > \"$DESTDIR/usr/share/x/version\"\n";

fn json(r: &HttpResponse) -> Value {
    assert_eq!(r.status, 200, "{}", r.text());
    serde_json::from_slice(&r.body).unwrap_or_else(|e| panic!("{e}: {}", r.text()))
}

fn ids(builds: &Value) -> Vec<u64> {
    builds
        .as_array()
        .unwrap_or_else(|| panic!("not an array: {builds}"))
        .iter()
        .map(|b| b["id"].as_u64().unwrap())
        .collect()
}

fn phase_names(doc: &Value) -> Vec<String> {
    doc["phases"]
        .as_array()
        .unwrap_or_else(|| panic!("no phases: {doc:#}"))
        .iter()
        .map(|p| p["phase"].as_str().unwrap().to_string())
        .collect()
}

#[test]
fn history_survives_sigkill_and_a_torn_record_and_ids_continue() {
    let mut farm = Farm::new();
    farm.http = true;
    let up = Upstream::new(&farm.root.join("up"));
    for i in 0..30 {
        up.release(&format!("v1.0.{i}"));
    }
    farm.write_config("");
    farm.simple_recipe("many", &up, SMALL_BUILD, "");
    let mut d = farm.start();
    d.wait_count("build + publish complete", 30, Duration::from_secs(300));
    let before = json(&d.get("/builds?limit=500"));
    assert_eq!(ids(&before), (1..=30).rev().collect::<Vec<u64>>());
    d.signal("KILL");
    d.wait_exit(T);
    drop(d);

    // A crash in the middle of writing the next record: half a line.
    let segments: Vec<_> = {
        let mut v: Vec<_> = std::fs::read_dir(farm.state().join("history"))
            .unwrap()
            .map(|e| e.unwrap().path())
            .collect();
        v.sort();
        v
    };
    let newest = segments.last().expect("a history segment");
    let mut f = std::fs::OpenOptions::new()
        .append(true)
        .open(newest)
        .unwrap();
    f.write_all(br#"{"id":31,"recipe":"many","version":"9.9"#)
        .unwrap();
    drop(f);

    up.release("v2.0.0");
    let d = farm.start();
    let torn = d.wait_log("history: torn last record dropped", T);
    assert!(torn.contains("level=WARN"), "{torn}");
    d.wait_event("build + publish complete", &[("version", "2.0.0-1")], T);
    let started = d.wait_event("starting build", &[("version", "2.0.0-1")], T);
    assert_eq!(
        field(&started, "build_id").as_deref(),
        Some("31"),
        "{started}"
    );

    let after = json(&d.get("/builds?limit=500"));
    assert_eq!(ids(&after), (1..=31).rev().collect::<Vec<u64>>());
    // The 30 from before the kill, as they were, but that build 31 made
    // build 21's log the eleventh of the recipe (keep_logs = 10).
    let mut was = before.clone();
    for k in ["log", "log_url"] {
        was[9][k] = Value::Null;
    }
    assert_eq!(was[9]["id"], 21);
    assert_eq!(after.as_array().unwrap()[1..], was.as_array().unwrap()[..]);
    for b in after.as_array().unwrap() {
        assert_eq!(b["state"], "succeeded", "{b}");
        let id = b["id"].as_u64().unwrap();
        let url = (id > 21).then(|| format!("/builds/{id}/log"));
        assert_eq!(b["log_url"], serde_json::json!(url), "{b}");
    }
    // The default page is the newest 50.
    assert_eq!(ids(&json(&d.get("/builds"))).len(), 31);

    // The new build: its phases, and the previous successful build's
    // duration (build 30, finished before the kill).
    let doc = json(&d.get("/builds/31"));
    assert_eq!(
        phase_names(&doc),
        ["fetching", "building", "packaging", "publishing"]
    );
    for p in doc["phases"].as_array().unwrap() {
        assert!(p["duration"].as_f64().unwrap() >= 0.0, "{p}");
        rfc3339_secs(p["started_at"].as_str().unwrap());
    }
    let sum: f64 = doc["phases"]
        .as_array()
        .unwrap()
        .iter()
        .map(|p| p["duration"].as_f64().unwrap())
        .sum();
    assert!(sum <= doc["duration"].as_f64().unwrap() + 0.01, "{doc:#}");
    assert_eq!(doc["previous_duration"], after[1]["duration"], "{doc:#}");
    assert!(doc.get("elapsed").is_none(), "{doc:#}");
    // The daemon restarted cleanly: the build that was cut off (none) and
    // the torn line left nothing behind.
    let text = std::fs::read_to_string(newest).unwrap();
    assert!(text.ends_with('\n') && !text.contains("9.9\""));
}

#[test]
fn a_build_cut_off_by_sigkill_is_recorded_as_interrupted_and_its_id_not_reused() {
    let mut farm = Farm::new();
    farm.http = true;
    let up = Upstream::new(&farm.root.join("up"));
    up.release("v1.0.0");
    let gate = farm.root.join("gate");
    farm.write_config("");
    farm.simple_recipe(
        "cut",
        &up,
        &format!(
            "#!/bin/sh\necho before the gate\n{}{SMALL_BUILD}",
            wait_file_sh(&gate)
        ),
        "",
    );
    let mut d = farm.start();
    d.wait_status(T, "building", |s| s["in_flight"]["phase"] == "building");
    let running = json(&d.get("/builds/1"));
    assert_eq!(running["state"], "running");
    assert_eq!(running["phase"], "building");
    assert!(running["elapsed"].as_f64().unwrap() >= 0.0, "{running:#}");
    assert_eq!(running["finished_at"], Value::Null);
    d.signal("KILL");
    d.wait_exit(T);
    drop(d);
    std::fs::write(&gate, "").unwrap();
    let d = farm.start();
    d.wait_event("build + publish complete", &[("recipe", "cut")], T);
    let started = d.wait_event("starting build", &[("recipe", "cut")], T);
    assert_eq!(field(&started, "build_id").as_deref(), Some("2"));
    let b = json(&d.get("/builds"));
    assert_eq!(ids(&b), [2, 1]);
    assert_eq!(b[0]["state"], "succeeded");
    let cut = json(&d.get("/builds/1"));
    assert_eq!(cut["state"], "cancelled", "{cut:#}");
    assert!(
        cut["error"].as_str().unwrap().contains("interrupted"),
        "{cut:#}"
    );
    assert_eq!(cut["phase"], Value::Null, "not known: {cut:#}");
    assert_eq!(cut["finished_at"], Value::Null, "not known: {cut:#}");
    // Its plain log was compressed at start and is still served.
    let log = d.get("/builds/1/log");
    assert_eq!(log.status, 200);
    assert!(log.text().contains("before the gate"), "{}", log.text());
    assert!(d.logs().contains("recorded as cancelled"), "{}", d.logs());
}

#[test]
fn builds_filters_documents_recipes_and_compressed_logs() {
    let mut farm = Farm::new();
    farm.http = true;
    let up = Upstream::new(&farm.root.join("up"));
    for t in ["v1.0.0", "v1.1.0", "v1.2.0"] {
        up.release(t);
    }
    let bad_up = Upstream::new(&farm.root.join("bad-up"));
    bad_up.release("v1.0.0");
    farm.write_config("[build]\nkeep_logs = 2\n");
    farm.simple_recipe("good", &up, SMALL_BUILD, "");
    farm.simple_recipe(
        "bad",
        &bad_up,
        "#!/bin/sh\necho about to fail\nexit 3\n",
        "",
    );
    let d = farm.start();
    d.wait_count("build + publish complete", 3, T);
    d.wait_event("build failed", &[("recipe", "bad")], T);
    d.wait_status(T, "idle", |s| s["in_flight"].is_null());

    let all = json(&d.get("/builds"));
    assert_eq!(ids(&all), [4, 3, 2, 1]);
    let good = json(&d.get("/builds?recipe=good"));
    assert_eq!(good.as_array().unwrap().len(), 3);
    assert!(good
        .as_array()
        .unwrap()
        .iter()
        .all(|b| b["recipe"] == "good"));
    let good_ids = ids(&good);
    let failed = json(&d.get("/builds?state=failed"));
    assert_eq!(failed.as_array().unwrap().len(), 1);
    let bad = &failed[0];
    assert_eq!(
        (&bad["recipe"], &bad["phase"]),
        (&"bad".into(), &"building".into())
    );
    assert!(bad["error"]
        .as_str()
        .unwrap()
        .contains("exited with status 3"));
    let page = json(&d.get("/builds?recipe=good&limit=1"));
    assert_eq!(ids(&page), [good_ids[0]]);
    let next = json(&d.get(&format!("/builds?recipe=good&before={}", good_ids[0])));
    assert_eq!(ids(&next), good_ids[1..]);
    assert_eq!(
        ids(&json(&d.get("/builds?state=succeeded&limit=500"))),
        good_ids
    );
    assert_eq!(
        json(&d.get("/builds?state=cancelled")),
        serde_json::json!([])
    );
    for bad_query in [
        "limit=0",
        "limit=x",
        "state=done",
        "before=-1",
        "recipe=../x",
    ] {
        let r = d.get(&format!("/builds?{bad_query}"));
        assert_eq!(r.status, 400, "{bad_query}: {}", r.text());
    }

    // One build: the failed one.
    let doc = json(&d.get(&format!("/builds/{}", bad["id"])));
    assert_eq!(doc["state"], "failed");
    assert_eq!(doc["phase"], "building");
    assert_eq!(phase_names(&doc), ["fetching", "building"]);
    assert_eq!(doc["previous_duration"], Value::Null);
    assert_eq!(doc["log_url"], format!("/builds/{}/log", bad["id"]));
    // The newest good build: the one before it is its previous duration.
    let newest = json(&d.get(&format!("/builds/{}", good_ids[0])));
    assert_eq!(
        newest["previous_duration"], good[1]["duration"],
        "{newest:#}"
    );
    assert_eq!(newest["error"], Value::Null);
    for (path, code) in [
        ("/builds/999", 404),
        ("/builds/abc", 404),
        ("/builds/0", 404),
    ] {
        assert_eq!(d.get(path).status, code, "{path}");
    }
    assert_eq!(d.http("POST", "/builds/1", &[], b"").status, 405);

    // Logs: three good builds and keep_logs = 2, so the oldest good
    // build's log is gone and its record says so.
    let oldest = json(&d.get(&format!("/builds/{}", good_ids[2])));
    assert_eq!(oldest["log_url"], Value::Null, "{oldest:#}");
    assert_eq!(oldest["log"], Value::Null);
    let r = d.get(&format!("/builds/{}/log", good_ids[2]));
    assert_eq!(r.status, 404, "{}", r.text());
    assert!(r.text().contains("pruned"), "{}", r.text());
    let logs = farm.state().join("logs/good");
    let mut names: Vec<String> = std::fs::read_dir(&logs)
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .collect();
    names.sort();
    assert_eq!(names, ["1.0.0-1.1.log.zst", "1.1.0-1.1.log.zst"]);

    // The stored zstd bytes when the client takes zstd, else text.
    let path = format!("/builds/{}/log", good_ids[0]);
    let plain = d.get(&path);
    assert_eq!(plain.status, 200);
    assert_eq!(
        plain.header("content-type"),
        Some("text/plain; charset=utf-8")
    );
    assert_eq!(plain.header("content-encoding"), None);
    assert!(
        plain.text().contains("hello from 1.0.0-1"),
        "{}",
        plain.text()
    );
    assert_eq!(
        plain.header("content-length"),
        Some(plain.body.len().to_string().as_str())
    );
    let zst = d.http("GET", &path, &[("Accept-Encoding", "gzip, zstd")], b"");
    assert_eq!(zst.status, 200);
    assert_eq!(zst.header("content-encoding"), Some("zstd"));
    assert_eq!(zst.header("vary"), Some("accept-encoding"));
    let stored = std::fs::read(logs.join("1.0.0-1.1.log.zst")).unwrap();
    assert_eq!(zst.body, stored);
    assert_eq!(zstd::decode_all(&zst.body[..]).unwrap(), plain.body);
    let head = d.http("HEAD", &path, &[("Accept-Encoding", "zstd")], b"");
    assert_eq!(
        head.header("content-length"),
        Some(stored.len().to_string().as_str())
    );
    assert!(head.body.is_empty());
    let refused = d.http("GET", &path, &[("Accept-Encoding", "zstd;q=0, gzip")], b"");
    assert_eq!(refused.body, plain.body);

    // Recipes.
    let r = json(&d.get("/recipes/good"));
    assert_eq!(r["id"], "good");
    assert_eq!(r["git"], up.url());
    assert_eq!(r["tag_pattern"], "^v(\\d+\\.\\d+\\.\\d+)$");
    assert_eq!(r["interval"], 3600);
    assert_eq!(r["webhook"], false);
    assert_eq!(r["min_version"], Value::Null);
    assert_eq!(r["revision"], 1);
    assert_eq!(r["paused"], false);
    assert_eq!(
        r["published"],
        serde_json::json!(["1.2.0-1", "1.1.0-1", "1.0.0-1"])
    );
    assert_eq!(r["failures"], serde_json::json!({}));
    assert_eq!(ids(&r["builds"]), good_ids);
    assert_eq!(r["builds"], good);
    let polls = r["polls"].as_array().unwrap();
    assert_eq!(polls.len(), 1, "{r:#}");
    assert_eq!(polls[0]["ok"], true);
    assert_eq!(polls[0]["tags_seen"], 3);
    assert_eq!(polls[0]["matches"], 3);
    assert_eq!(polls[0]["error"], Value::Null);
    rfc3339_secs(polls[0]["at"].as_str().unwrap());
    let r = json(&d.get("/recipes/bad"));
    assert_eq!(r["failures"]["bad@1.0.0-1"]["failures"], 1, "{r:#}");
    assert_eq!(r["published"], serde_json::json!([]));
    // Escaped ids are decoded before they are checked.
    assert_eq!(json(&d.get("/recipes/go%6Fd"))["id"], "good");
    assert_eq!(json(&d.get("/builds?recipe=go%6fd")), good);
    // A browser gets the console's page of it.
    let html = d.http("GET", "/recipes/good", &[("Accept", "text/html")], b"");
    assert_eq!(html.status, 200);
    assert_eq!(
        html.header("content-type"),
        Some("text/html; charset=utf-8")
    );
    assert!(html.text().contains("<h1 id=\"recipe-title\">good "));
    for (path, code) in [
        ("/recipes/nope", 404),
        ("/recipes/..", 404),
        ("/recipes/%2e%2e", 404),
        ("/recipes/", 404),
    ] {
        let r = d.get(path);
        assert_eq!(r.status, code, "{path}: {}", r.text());
    }
    assert_eq!(d.http("DELETE", "/recipes/good", &[], b"").status, 405);
}

/// A Server-Sent Events client over a raw socket (the body is chunked).
struct Sse {
    s: TcpStream,
    raw: Vec<u8>,
    text: String,
}

#[derive(Debug, Clone)]
struct Ev {
    id: u64,
    kind: String,
    data: Value,
}

impl Sse {
    /// Subscribes; returns the status and, on 200, the stream.
    fn connect(addr: &str, last_id: Option<&str>) -> (u16, Option<Sse>) {
        let mut s = TcpStream::connect(addr).unwrap();
        s.set_read_timeout(Some(Duration::from_millis(100)))
            .unwrap();
        let mut req =
            format!("GET /events HTTP/1.1\r\nHost: {addr}\r\nAccept: text/event-stream\r\n");
        if let Some(id) = last_id {
            req.push_str(&format!("Last-Event-ID: {id}\r\n"));
        }
        req.push_str("\r\n");
        s.write_all(req.as_bytes()).unwrap();
        let mut raw = Vec::new();
        let start = Instant::now();
        let mut buf = [0u8; 4096];
        let end = loop {
            if let Some(i) = raw.windows(4).position(|w| w == b"\r\n\r\n") {
                break i;
            }
            assert!(start.elapsed() < T, "no response head");
            match s.read(&mut buf) {
                Ok(0) => panic!("closed: {}", String::from_utf8_lossy(&raw)),
                Ok(n) => raw.extend_from_slice(&buf[..n]),
                Err(_) => {}
            }
        };
        let head = String::from_utf8_lossy(&raw[..end]).into_owned();
        let status: u16 = head.split_whitespace().nth(1).unwrap().parse().unwrap();
        if status != 200 {
            return (status, None);
        }
        assert!(
            head.to_ascii_lowercase()
                .contains("content-type: text/event-stream"),
            "{head}"
        );
        let rest = raw[end + 4..].to_vec();
        (
            status,
            Some(Sse {
                s,
                raw: rest,
                text: String::new(),
            }),
        )
    }

    /// Moves whole chunks from `raw` to `text`.
    fn dechunk(&mut self) {
        loop {
            let Some(eol) = self.raw.windows(2).position(|w| w == b"\r\n") else {
                return;
            };
            let size = usize::from_str_radix(String::from_utf8_lossy(&self.raw[..eol]).trim(), 16)
                .expect("chunk size");
            if self.raw.len() < eol + 2 + size + 2 {
                return;
            }
            let chunk = self.raw[eol + 2..eol + 2 + size].to_vec();
            self.raw.drain(..eol + 2 + size + 2);
            self.text.push_str(&String::from_utf8(chunk).unwrap());
        }
    }

    /// The next event (comments and `retry:` skipped), or `None` after
    /// `timeout`.
    fn next(&mut self, timeout: Duration) -> Option<Ev> {
        let start = Instant::now();
        let mut buf = [0u8; 8192];
        loop {
            self.dechunk();
            while let Some(end) = self.text.find("\n\n") {
                let frame: String = self.text.drain(..end + 2).collect();
                let (mut id, mut kind, mut data) = (None, None, None);
                for line in frame.lines() {
                    if let Some(v) = line.strip_prefix("id: ") {
                        id = Some(v.parse::<u64>().expect("integer id"));
                    } else if let Some(v) = line.strip_prefix("event: ") {
                        kind = Some(v.to_string());
                    } else if let Some(v) = line.strip_prefix("data: ") {
                        assert!(data.is_none(), "one data line: {frame:?}");
                        data = Some(serde_json::from_str::<Value>(v).expect("JSON data"));
                    }
                }
                if let (Some(id), Some(kind), Some(data)) = (id, kind, data) {
                    return Some(Ev { id, kind, data });
                }
            }
            if start.elapsed() > timeout {
                return None;
            }
            match self.s.read(&mut buf) {
                Ok(0) => return None,
                Ok(n) => self.raw.extend_from_slice(&buf[..n]),
                Err(_) => {}
            }
        }
    }

    /// Events until one satisfies `stop` (included).
    fn until(&mut self, what: &str, stop: impl Fn(&Ev) -> bool) -> Vec<Ev> {
        let start = Instant::now();
        let mut out = Vec::new();
        loop {
            let left = T.saturating_sub(start.elapsed());
            let ev = self
                .next(left)
                .unwrap_or_else(|| panic!("no {what}; events so far: {out:#?}"));
            let done = stop(&ev);
            out.push(ev);
            if done {
                return out;
            }
        }
    }
}

fn is_build(ev: &Ev, kind: &str) -> bool {
    ev.kind == "build" && ev.data["kind"] == kind
}

#[test]
fn events_follow_a_build_and_resume_after_a_reconnect() {
    let mut farm = Farm::new();
    farm.http = true;
    let up = Upstream::new(&farm.root.join("up"));
    let gate = farm.root.join("gate");
    farm.write_config("");
    farm.simple_recipe(
        "live",
        &up,
        &format!(
            "#!/bin/sh\necho started\n{}{SMALL_BUILD}",
            wait_file_sh(&gate)
        ),
        HOOKED,
    );
    let d = farm.start();
    d.wait_event("poll complete", &[("recipe", "live")], T);
    let addr = d.addr.clone().unwrap();
    let (status, s1) = Sse::connect(&addr, None);
    assert_eq!(status, 200);
    let mut s1 = s1.unwrap();

    up.release("v1.0.0");
    let r = d.webhook("push", "d-1", &push_payload(&up.url(), "v1.0.0"), SECRET);
    assert_eq!(r.status, 202, "{}", r.text());
    let mut seen = s1.until("the build reaching its script", |e| {
        is_build(e, "phase") && e.data["phase"] == "building"
    });
    std::fs::write(&gate, "").unwrap();
    seen.extend(s1.until("the build's end", |e| is_build(e, "finished")));

    // Ids increase strictly; one JSON data line each (checked by the client).
    for w in seen.windows(2) {
        assert!(w[0].id < w[1].id, "{seen:#?}");
    }
    let pos = |pred: &dyn Fn(&Ev) -> bool| {
        seen.iter()
            .position(pred)
            .unwrap_or_else(|| panic!("missing event in {seen:#?}"))
    };
    let queued = pos(&|e| is_build(e, "queued"));
    let started = pos(&|e| is_build(e, "started"));
    let fetching = pos(&|e| is_build(e, "phase") && e.data["phase"] == "fetching");
    let building = pos(&|e| is_build(e, "phase") && e.data["phase"] == "building");
    let publishing = pos(&|e| is_build(e, "phase") && e.data["phase"] == "publishing");
    let finished = pos(&|e| is_build(e, "finished"));
    assert!(queued < started && started < fetching && fetching < building);
    assert!(building < publishing && publishing < finished);
    let q = &seen[queued].data;
    assert_eq!(
        (&q["recipe"], &q["version"]),
        (&"live".into(), &"1.0.0-1".into())
    );
    assert!(q.get("build_id").is_none(), "{q}");
    let f = &seen[finished].data;
    assert_eq!(f["build_id"], 1);
    assert_eq!(f["state"], "succeeded");
    assert_eq!(f["recipe"], "live");
    assert_eq!(f["version"], "1.0.0-1");
    assert_eq!(seen[building].data["build_id"], 1);
    let poll = pos(&|e| e.kind == "poll");
    assert_eq!(seen[poll].data["recipe"], "live");
    assert_eq!(seen[poll].data["ok"], true);
    assert_eq!(seen[poll].data["matches"], 1);
    assert!(seen.iter().any(|e| e.kind == "queue"), "{seen:#?}");

    // Reconnecting with the id of the start event gets exactly what came
    // after it.
    let (_, s2) = Sse::connect(&addr, Some(&seen[started].id.to_string()));
    let mut s2 = s2.unwrap();
    let again = s2.until("the replayed end", |e| is_build(e, "finished"));
    let want: Vec<(u64, String)> = seen[started + 1..]
        .iter()
        .map(|e| (e.id, e.kind.clone()))
        .collect();
    let got: Vec<(u64, String)> = again.iter().map(|e| (e.id, e.kind.clone())).collect();
    assert_eq!(got, want);
    // A client that fell too far behind is told to start over.
    let (_, s3) = Sse::connect(&addr, Some("1"));
    let ev = s3.unwrap().next(T).expect("an event");
    assert_eq!(ev.kind, "resync");
    assert!(ev.id >= seen.last().unwrap().id);
    // Live events keep coming to the first client: a reload.
    d.signal("HUP");
    let reload = s1.until("a reload event", |e| e.kind == "reload");
    assert_eq!(reload.last().unwrap().data["recipes"], 1);
    // HEAD answers without subscribing.
    let head = d.http("HEAD", "/events", &[], b"");
    assert_eq!(head.status, 200);
    assert_eq!(head.header("content-type"), Some("text/event-stream"));
    // Open streams do not hold up a shutdown: they end with it.
    let mut d = d;
    let t = Instant::now();
    d.signal("TERM");
    assert_eq!(d.wait_exit(T), 0);
    assert!(t.elapsed() < Duration::from_secs(5), "{:?}", t.elapsed());
    assert!(s1.next(Duration::from_secs(5)).is_none(), "stream ended");
}

#[test]
fn event_subscribers_are_capped_and_a_closed_one_frees_its_slot() {
    let mut farm = Farm::new();
    farm.http = true;
    farm.write_config("");
    let d = farm.start();
    let addr = d.addr.clone().unwrap();
    let mut open: Vec<Sse> = (0..64)
        .map(|i| {
            let (status, s) = Sse::connect(&addr, None);
            assert_eq!(status, 200, "subscriber {i}");
            s.unwrap()
        })
        .collect();
    let over = d.get("/events");
    assert_eq!(over.status, 503, "{}", over.text());
    assert_eq!(over.header("retry-after"), Some("5"));
    assert!(over.text().contains("64"), "{}", over.text());
    d.assert_healthy();
    // One goes away; its slot is free again well before the next
    // keep-alive comment would have found the connection gone.
    let t = Instant::now();
    drop(open.pop());
    let s = wait_for(
        Duration::from_secs(20),
        "a free slot",
        || match Sse::connect(&addr, None) {
            (200, s) => s,
            _ => {
                std::thread::sleep(Duration::from_millis(50));
                None
            }
        },
    );
    eprintln!("slot freed after {:?}", t.elapsed());
    assert!(t.elapsed() < Duration::from_secs(5), "{:?}", t.elapsed());
    open.push(s);
    assert_eq!(d.get("/events").status, 503);
}

#[test]
fn idle_and_stalled_subscribers_do_not_grow_memory() {
    // The bound stated: 200 idle subscribers and one that never reads,
    // with 20 builds' events flowing, add less than 24 MiB of resident
    // memory (each subscriber holds a parked task, a small frame queue and
    // its connection's buffers; the stalled one at most its queue and the
    // connection's write buffer).
    const BOUND_KIB: u64 = 24 * 1024;
    let mut farm = Farm::new();
    farm.http = true;
    let up = Upstream::new(&farm.root.join("up"));
    farm.write_config("max_event_clients = 256\n");
    farm.simple_recipe("busy", &up, SMALL_BUILD, HOOKED);
    let d = farm.start();
    d.wait_event("poll complete", &[("recipe", "busy")], T);
    let addr = d.addr.clone().unwrap();
    std::thread::sleep(Duration::from_millis(500));
    let base = vm_rss_kib(d.pid());

    // One that never reads, with a small receive buffer.
    let stalled = TcpStream::connect(&addr).unwrap();
    {
        use nix::sys::socket::{setsockopt, sockopt::RcvBuf};
        setsockopt(&stalled, RcvBuf, &4096).unwrap();
    }
    (&stalled)
        .write_all(format!("GET /events HTTP/1.1\r\nHost: {addr}\r\n\r\n").as_bytes())
        .unwrap();
    // 200 idle ones, drained by one thread.
    let idle: Vec<Sse> = (0..200)
        .map(|_| Sse::connect(&addr, None).1.expect("a slot"))
        .collect();
    let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
    let drainer = {
        let stop = stop.clone();
        let socks: Vec<TcpStream> = idle.iter().map(|s| s.s.try_clone().unwrap()).collect();
        std::thread::spawn(move || {
            let mut buf = [0u8; 65536];
            let mut total = 0usize;
            for s in &socks {
                s.set_nonblocking(true).unwrap();
            }
            while !stop.load(std::sync::atomic::Ordering::SeqCst) {
                for mut s in &socks {
                    while let Ok(n) = s.read(&mut buf) {
                        if n == 0 {
                            break;
                        }
                        total += n;
                    }
                }
                std::thread::sleep(Duration::from_millis(20));
            }
            total
        })
    };
    let (_, watcher) = Sse::connect(&addr, None);
    let mut watcher = watcher.expect("a slot for the watcher");
    let connected = vm_rss_kib(d.pid());

    for i in 0..20 {
        up.release(&format!("v1.{i}.0"));
    }
    let r = d.webhook("push", "rss-1", &push_payload(&up.url(), "v1.19.0"), SECRET);
    assert_eq!(r.status, 202);
    let mut finished = 0;
    let mut peak = connected;
    while finished < 20 {
        let ev = watcher.next(T).expect("events keep coming");
        if is_build(&ev, "finished") {
            finished += 1;
            peak = peak.max(vm_rss_kib(d.pid()));
        }
    }
    d.wait_count("build + publish complete", 20, T);
    std::thread::sleep(Duration::from_millis(500));
    let end = vm_rss_kib(d.pid());
    stop.store(true, std::sync::atomic::Ordering::SeqCst);
    let drained = drainer.join().unwrap();
    eprintln!(
        "VmRSS: {base} KiB idle, {connected} KiB with 202 subscribers, peak {peak} KiB, \
         {end} KiB after 20 builds; idle subscribers read {drained} bytes"
    );
    assert!(
        drained > 20 * 200 * 100,
        "the idle subscribers got the events"
    );
    assert!(
        peak.max(end) < base + BOUND_KIB,
        "VmRSS grew from {base} to {} KiB",
        peak.max(end)
    );
    d.assert_healthy();
    drop(stalled);
}
