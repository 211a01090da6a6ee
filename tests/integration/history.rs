//! The build history and the live view against the real daemon: history
//! that survives SIGKILL and a torn record with ids that continue,
//! `/builds` filters, `/builds/{id}` (phases, previous_duration),
//! `/recipes/{id}`, and logs stored zstd-compressed and served either way.

use crate::util::*;
use serde_json::Value;
use std::io::Write;
use std::time::Duration;

const T: Duration = Duration::from_secs(60);
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
    // A browser gets the same document until the console pages exist.
    let html = d.http("GET", "/recipes/good", &[("Accept", "text/html")], b"");
    assert_eq!(html.status, 200);
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
