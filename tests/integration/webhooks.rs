//! `POST /webhooks/github` against the real daemon: a signed push or
//! create makes the daemon poll and build at once; every bad request gets
//! its exact status and sets nothing off; oversized bodies are refused
//! without being buffered; large valid bodies are accepted; the answer is
//! fast even while a build runs.

use crate::util::*;
use std::time::{Duration, Instant};

const SECRET: &[u8] = b"test-secret";
const T: Duration = Duration::from_secs(20);
const HOOKED: &str = "\n[watch]\ngithub_webhook = true\npoll_interval = \"1h\"\n";
const OPTED_OUT: &str = "\n[watch]\ngithub_webhook = false\npoll_interval = \"1h\"\n";
const INSTALL: &str = "#!/bin/sh\nmkdir -p \"$DESTDIR/usr/share/x\"\necho \"$FARMHAND_VERSION\" > \"$DESTDIR/usr/share/x/$FARMHAND_RECIPE\"\n";

fn webhook_count(d: &Daemon, result: &str) -> f64 {
    let series = format!("farmhand_webhooks_total{{forge=\"github\",result=\"{result}\"}}");
    d.metric(&series).unwrap_or_else(|| panic!("no {series}"))
}

/// A farm with one webhook recipe `hooked` on an upstream with v1.0.0.
fn hooked_farm() -> (Farm, Upstream) {
    let mut farm = Farm::new();
    farm.http = true;
    let up = Upstream::new(&farm.root.join("up"));
    up.release("v1.0.0");
    farm.write_config("");
    farm.simple_recipe("hooked", &up, INSTALL, HOOKED);
    (farm, up)
}

#[test]
fn signed_push_and_create_build_the_new_tag_at_once() {
    let (farm, up) = hooked_farm();
    let d = farm.start();
    d.wait_event("build + publish complete", &[("version", "1.0.0-1")], T);
    d.wait_event("poll complete", &[("recipe", "hooked")], T);
    assert_eq!(d.events("polling upstream", &[]).len(), 1);

    // push: a new tag only the webhook can find (poll interval 1h).
    up.release("v1.1.0");
    let t = Instant::now();
    let r = d.webhook(
        "push",
        "delivery-push-1",
        &push_payload(&up.url(), "v1.1.0"),
        SECRET,
    );
    let answered = t.elapsed();
    assert_eq!(r.status, 202, "{}", r.text());
    assert!(r.text().contains("hooked"), "{}", r.text());
    assert!(
        answered < Duration::from_secs(2),
        "answered after {answered:?}"
    );
    d.wait_event(
        "webhook accepted, triggering immediate poll",
        &[("recipe", "hooked"), ("delivery", "delivery-push-1")],
        T,
    );
    d.wait_event(
        "polling upstream",
        &[("recipe", "hooked"), ("source", "webhook")],
        T,
    );
    let started = d.wait_event("starting build", &[("version", "1.1.0-1")], T);
    assert_eq!(
        field(&started, "source").as_deref(),
        Some("webhook"),
        "{started}"
    );
    assert_eq!(
        field(&started, "tag").as_deref(),
        Some("v1.1.0"),
        "{started}"
    );
    d.wait_event("build + publish complete", &[("version", "1.1.0-1")], T);
    assert!(archive_ids(&farm).contains(&"hooked@1.1.0-1".to_string()));

    // create: same effect.
    up.release("v1.2.0");
    let r = d.webhook(
        "create",
        "delivery-create-1",
        &create_payload(&up.url(), "v1.2.0"),
        SECRET,
    );
    assert_eq!(r.status, 202, "{}", r.text());
    d.wait_event("build + publish complete", &[("version", "1.2.0-1")], T);
    let versions = archive_ids(&farm);
    for v in ["hooked@1.0.0-1", "hooked@1.1.0-1", "hooked@1.2.0-1"] {
        assert!(versions.contains(&v.to_string()), "{v} not in {versions:?}");
    }
    let builds = d.get("/builds");
    let builds: serde_json::Value = serde_json::from_slice(&builds.body).unwrap();
    assert_eq!(builds[0]["version"], "1.2.0-1");
    assert_eq!(builds[0]["trigger"], "webhook");
    assert_eq!(builds[0]["state"], "succeeded");
    assert_eq!(webhook_count(&d, "accepted"), 2.0);
    // Exactly one poll per webhook, nothing else.
    assert_eq!(
        d.events("polling upstream", &[("source", "webhook")]).len(),
        2
    );
}

#[test]
fn bad_webhooks_get_their_status_and_trigger_nothing() {
    let mut farm = Farm::new();
    farm.http = true;
    let hooked = Upstream::new(&farm.root.join("hooked-up"));
    hooked.release("v1.0.0");
    let optout = Upstream::new(&farm.root.join("optout-up"));
    optout.release("v1.0.0");
    let sentinel = Upstream::new(&farm.root.join("sentinel-up"));
    farm.write_config("");
    farm.simple_recipe("hooked", &hooked, INSTALL, HOOKED);
    farm.simple_recipe("optout", &optout, INSTALL, OPTED_OUT);
    farm.simple_recipe("sentinel", &sentinel, INSTALL, HOOKED);
    let d = farm.start();
    for id in ["hooked", "optout", "sentinel"] {
        d.wait_event("poll complete", &[("recipe", id)], T);
    }
    d.wait_status(T, "idle after the first builds", |s| {
        s["in_flight"].is_null() && s["builds_succeeded"] == 2
    });
    // New tags that any poll would find and build.
    hooked.release("v1.1.0");
    optout.release("v1.1.0");

    let url = hooked.url();
    let body = push_payload(&url, "v1.1.0");
    let post =
        |headers: &[(&str, &str)], body: &[u8]| d.http("POST", "/webhooks/github", headers, body);
    let good_sig = sign(SECRET, &body);
    // (what, extra headers, body, expected status)
    type Case = (&'static str, Vec<(&'static str, String)>, Vec<u8>, u16);
    let cases: Vec<Case> = vec![
        (
            "wrong secret",
            vec![("X-Hub-Signature-256", sign(b"not-the-secret", &body))],
            body.clone(),
            401,
        ),
        ("missing signature header", vec![], body.clone(), 401),
        (
            "sha1= prefix",
            vec![("X-Hub-Signature-256", good_sig.replace("sha256=", "sha1="))],
            body.clone(),
            401,
        ),
        (
            "odd-length hex",
            vec![(
                "X-Hub-Signature-256",
                good_sig[..good_sig.len() - 1].to_string(),
            )],
            body.clone(),
            401,
        ),
        (
            "valid signature over a non-JSON body",
            vec![("X-Hub-Signature-256", sign(SECRET, b"not json at all"))],
            b"not json at all".to_vec(),
            400,
        ),
    ];
    for (i, (what, extra, body, want)) in cases.iter().enumerate() {
        let delivery = format!("bad-{i}");
        let mut headers = vec![
            ("X-GitHub-Event", "push"),
            ("X-GitHub-Delivery", delivery.as_str()),
            ("Content-Type", "application/json"),
        ];
        headers.extend(extra.iter().map(|(k, v)| (*k, v.as_str())));
        let r = post(&headers, body);
        assert_eq!(r.status, *want, "{what}: {}", r.text());
        assert_eq!(
            r.header("content-type"),
            Some("text/plain; charset=utf-8"),
            "{what}"
        );
        assert!(!r.text().trim().is_empty(), "{what}: empty error body");
    }
    d.wait_events("webhook signature invalid", &[], 4, T);
    assert_eq!(d.events("webhook signature invalid", &[]).len(), 4);
    assert!(d
        .logs()
        .lines()
        .filter(|l| l.contains("webhook signature invalid"))
        .all(|l| l.contains("level=WARN")));

    let r = d.http("GET", "/webhooks/github", &[], b"");
    assert_eq!(r.status, 405, "{}", r.text());
    assert_eq!(r.header("allow"), Some("POST"));
    let r = d.http("PUT", "/webhooks/github", &[], b"");
    assert_eq!(r.status, 405, "{}", r.text());

    let r = d.webhook(
        "ping",
        "ping-1",
        br#"{"zen":"Keep it logically awesome.","hook_id":1}"#,
        SECRET,
    );
    assert_eq!((r.status, r.text().trim()), (200, "pong"));
    let r = d.webhook(
        "push",
        "unknown-1",
        &push_payload("https://github.com/nobody/unknown", "v1.0.0"),
        SECRET,
    );
    assert_eq!(r.status, 200, "{}", r.text());
    let r = d.webhook(
        "push",
        "optout-1",
        &push_payload(&optout.url(), "v1.1.0"),
        SECRET,
    );
    assert_eq!(r.status, 200, "{}", r.text());

    // Barrier: a good webhook for the sentinel; any poll a bad request had
    // asked for was queued before this one.
    let r = d.webhook(
        "push",
        "sentinel-1",
        &push_payload(&sentinel.url(), "v0"),
        SECRET,
    );
    assert_eq!(r.status, 202, "{}", r.text());
    d.wait_events("poll complete", &[("recipe", "sentinel")], 2, T);
    assert_eq!(
        d.events("polling upstream", &[("recipe", "hooked")]).len(),
        1
    );
    assert_eq!(
        d.events("polling upstream", &[("recipe", "optout")]).len(),
        1
    );
    assert_eq!(d.events("starting build", &[]).len(), 2, "{}", d.logs());

    // Redelivery: the same X-GitHub-Delivery twice → one poll.
    let r = d.webhook("push", "same-delivery", &body, SECRET);
    assert_eq!(r.status, 202, "{}", r.text());
    let r = d.webhook("push", "same-delivery", &body, SECRET);
    assert_eq!(r.status, 200, "{}", r.text());
    d.wait_event(
        "build + publish complete",
        &[("recipe", "hooked"), ("version", "1.1.0-1")],
        T,
    );
    let r = d.webhook(
        "push",
        "sentinel-2",
        &push_payload(&sentinel.url(), "v0"),
        SECRET,
    );
    assert_eq!(r.status, 202, "{}", r.text());
    d.wait_events("poll complete", &[("recipe", "sentinel")], 3, T);
    assert_eq!(
        d.events("polling upstream", &[("recipe", "hooked")]).len(),
        2
    );
    assert_eq!(
        d.events("polling upstream", &[("recipe", "optout")]).len(),
        1
    );
    assert!(d
        .events(
            "starting build",
            &[("recipe", "optout"), ("version", "1.1.0-1")]
        )
        .is_empty());

    for (result, n) in [
        ("accepted", 3.0),
        ("pong", 1.0),
        ("not_watched", 2.0),
        ("invalid_signature", 4.0),
        ("bad_request", 1.0),
        ("too_large", 0.0),
        ("duplicate", 1.0),
    ] {
        assert_eq!(
            webhook_count(&d, result),
            n,
            "farmhand_webhooks_total{{forge=\"github\",result=\"{result}\"}}"
        );
    }
}

fn rss_farm() -> (Farm, Upstream, Daemon) {
    let (farm, up) = hooked_farm();
    let d = farm.start();
    d.wait_event("build + publish complete", &[("version", "1.0.0-1")], T);
    (farm, up, d)
}

const BIG: usize = 30 * 1024 * 1024;

fn oversized_head(addr: &str, framing: &str, sig: &str) -> String {
    format!(
        "POST /webhooks/github HTTP/1.1\r\nHost: {addr}\r\nX-GitHub-Event: push\r\n\
         X-GitHub-Delivery: big\r\nX-Hub-Signature-256: {sig}\r\n\
         Content-Type: application/json\r\n{framing}\r\n"
    )
}

#[test]
fn thirty_mib_bodies_are_refused_413_without_buffering() {
    let (_farm, _up, d) = rss_farm();
    let addr = d.addr.clone().unwrap();
    // Warm up the server's paths before measuring.
    for _ in 0..5 {
        assert_eq!(d.get("/status").status, 200);
    }
    let before = vm_rss_kib(d.pid());
    let sig = sign(SECRET, b"whatever");

    let head = oversized_head(&addr, &format!("Content-Length: {BIG}\r\n"), &sig);
    let t = Instant::now();
    let r = exchange(&addr, &head, |s| write_plain(s, BIG, b'a'));
    assert_eq!(r.status, 413, "{}", r.text());
    assert!(r.text().contains("too large"), "{}", r.text());
    assert!(t.elapsed() < Duration::from_secs(10));
    let after_cl = vm_rss_kib(d.pid());

    let head = oversized_head(&addr, "Transfer-Encoding: chunked\r\n", &sig);
    let r = exchange(&addr, &head, |s| write_chunked(s, BIG, b'a'));
    assert_eq!(r.status, 413, "{}", r.text());
    let after_chunked = vm_rss_kib(d.pid());

    eprintln!("VmRSS KiB: before {before}, after Content-Length {after_cl}, after chunked {after_chunked}");
    assert!(
        after_cl < before + 4 * 1024,
        "RSS grew by {} KiB for a body refused from its Content-Length",
        after_cl - before
    );
    assert!(
        after_chunked < before + 8 * 1024,
        "RSS grew by {} KiB after a refused 30 MiB chunked body",
        after_chunked - before
    );
    assert_eq!(webhook_count(&d, "too_large"), 2.0);
    assert_eq!(
        webhook_count(&d, "invalid_signature"),
        0.0,
        "refused before the HMAC"
    );
    assert_eq!(d.events("polling upstream", &[]).len(), 1);
    assert_eq!(d.get("/healthz").status, 200);
}

#[test]
fn twenty_mib_signed_body_is_accepted() {
    let (_farm, up, d) = rss_farm();
    up.release("v1.1.0");
    let mut payload: serde_json::Value =
        serde_json::from_slice(&push_payload(&up.url(), "v1.1.0")).unwrap();
    payload["padding"] = serde_json::Value::String("p".repeat(20 * 1024 * 1024));
    let body = serde_json::to_vec(&payload).unwrap();
    assert!(body.len() > 20 * 1024 * 1024 && body.len() < 25 * 1024 * 1024);
    let r = d.webhook("push", "big-valid", &body, SECRET);
    assert_eq!(r.status, 202, "{}", r.text());
    d.wait_event("build + publish complete", &[("version", "1.1.0-1")], T);
    assert_eq!(webhook_count(&d, "accepted"), 1.0);
}

#[test]
fn signed_webhook_is_answered_fast_while_a_build_runs() {
    let mut farm = Farm::new();
    farm.http = true;
    let slow = Upstream::new(&farm.root.join("slow-up"));
    slow.release("v1.0.0");
    let hooked = Upstream::new(&farm.root.join("hooked-up"));
    farm.write_config("");
    let gate = farm.root.join("gate");
    let started = farm.root.join("started");
    farm.simple_recipe(
        "slow",
        &slow,
        &format!(
            "#!/bin/sh\ntouch '{}'\n{}",
            started.display(),
            wait_file_sh(&gate)
        ),
        HOOKED,
    );
    farm.simple_recipe("hooked", &hooked, INSTALL, HOOKED);
    let d = farm.start();
    wait_for(T, "slow build running", || started.exists().then_some(()));
    d.wait_event("poll complete", &[("recipe", "hooked")], T);
    hooked.release("v1.0.0");
    let mut worst = Duration::ZERO;
    for i in 0..5 {
        let t = Instant::now();
        let r = d.webhook(
            "push",
            &format!("during-build-{i}"),
            &push_payload(&hooked.url(), "v1.0.0"),
            SECRET,
        );
        worst = worst.max(t.elapsed());
        assert_eq!(r.status, 202, "{}", r.text());
    }
    assert!(worst < Duration::from_secs(1), "slowest answer {worst:?}");
    // The poll ran while the build was still blocked; its build is queued.
    d.wait_event(
        "poll complete",
        &[("recipe", "hooked"), ("matches_emitted", "1")],
        T,
    );
    let s = d.status();
    assert_eq!(s["in_flight"]["recipe"], "slow");
    assert_eq!(s["queue"][0]["recipe"], "hooked");
    std::fs::write(&gate, "").unwrap();
    d.wait_event("build + publish complete", &[("recipe", "hooked")], T);
}

#[test]
fn sighup_rereads_the_webhook_secret() {
    let (farm, up) = hooked_farm();
    let d = farm.start();
    d.wait_event("build + publish complete", &[("version", "1.0.0-1")], T);
    let body = push_payload(&up.url(), "v1.0.0");
    assert_eq!(d.webhook("push", "s-1", &body, SECRET).status, 202);
    // Trailing whitespace (an editor's newline) is not part of the secret.
    std::fs::write(farm.root.join("webhook-secret"), "rotated-secret\n\t \n").unwrap();
    d.signal("HUP");
    d.wait_event("recipes reloaded", &[], T);
    assert_eq!(d.webhook("push", "s-2", &body, SECRET).status, 401);
    assert_eq!(
        d.webhook("push", "s-3", &body, b"rotated-secret\n").status,
        401
    );
    assert_eq!(
        d.webhook("push", "s-4", &body, b"rotated-secret").status,
        202
    );
    // An emptied secret file is refused; the current secret stays.
    std::fs::write(farm.root.join("webhook-secret"), "\n").unwrap();
    d.signal("HUP");
    d.wait_events("recipes reloaded", &[], 2, T);
    assert_eq!(d.webhook("push", "s-5", &body, b"").status, 401);
    assert_eq!(
        d.webhook("push", "s-6", &body, b"rotated-secret").status,
        202
    );
    assert!(
        !d.logs().contains("rotated-secret"),
        "the secret is never logged"
    );
}
