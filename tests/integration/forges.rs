//! `POST /webhooks/{gitea,gitlab,bitbucket}` against the real daemon and a
//! real local upstream, each request built as that forge sends it (its
//! header names, its signature, its payload shape): a correctly signed tag
//! event polls and builds the new tag at once; a wrong or missing signature
//! is 401 (and for GitLab a `webhook-timestamp` 6 minutes old too); a
//! redelivery with the same delivery id is acted on once; a repository no
//! recipe builds is 200 and builds nothing. The payload's URLs are
//! written differently from the recipe's (`file://`, `.git`, trailing
//! slash, upper case), as forges and people write them.

use std::time::{Duration, SystemTime, UNIX_EPOCH};

use base64::Engine as _;
use hmac::{Hmac, Mac};

use crate::util::*;

const SECRET: &[u8] = b"test-secret";
const T: Duration = Duration::from_secs(30);
const HOOKED: &str = "\n[watch]\nwebhook = true\npoll_interval = \"1h\"\n";
const INSTALL: &str = "#!/bin/sh\nmkdir -p \"$DESTDIR/usr/share/x\"\necho \"$FARMHAND_VERSION\" > \"$DESTDIR/usr/share/x/$FARMHAND_RECIPE\"\n";

/// How a request is signed.
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
enum Sig {
    Good,
    Wrong,
    Missing,
}

/// One request: path, headers, body.
struct Req {
    path: &'static str,
    headers: Vec<(String, String)>,
    body: Vec<u8>,
}

fn hmac_sha256(key: &[u8], parts: &[&[u8]]) -> Vec<u8> {
    let mut mac = Hmac::<sha2::Sha256>::new_from_slice(key).unwrap();
    for p in parts {
        mac.update(p);
    }
    mac.finalize().into_bytes().to_vec()
}

fn now_secs() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .as_secs()
}

/// The URL a forge would put in its payload for the local upstream at
/// `path`: the same repository, written another way.
fn as_forge_writes(path: &str) -> String {
    format!("file://{}.git/", path.to_ascii_uppercase())
}

/// A Forgejo `create` event for tag `tag` (Forgejo sends its own header
/// names and Gitea's).
fn gitea(url: &str, tag: &str, delivery: &str, sig: Sig) -> Req {
    let repo = serde_json::json!({
        "id": 7, "name": "hello", "full_name": "upstream/hello", "private": false, "fork": false,
        "html_url": url, "ssh_url": "ssh://git@forge.invalid:2222/upstream/hello.git",
        "clone_url": url, "default_branch": "main",
    });
    let body = serde_json::to_vec(&serde_json::json!({
        "sha": "9a2b6f4a1d1c1e8f3b0c5d6e7f8091a2b3c4d5e6",
        "ref": tag,
        "ref_type": "tag",
        "repository": repo,
        "sender": {"id": 1, "login": "upstream"},
    }))
    .unwrap();
    let mut headers = vec![
        ("Content-Type", "application/json".to_string()),
        ("X-Forgejo-Event", "create".into()),
        ("X-Gitea-Event", "create".into()),
        ("X-Forgejo-Delivery", delivery.into()),
        ("X-Gitea-Delivery", delivery.into()),
    ];
    let hex = match sig {
        Sig::Good => Some(hex::encode(hmac_sha256(SECRET, &[&body]))),
        Sig::Wrong => Some(hex::encode(hmac_sha256(b"not-the-secret", &[&body]))),
        Sig::Missing => None,
    };
    if let Some(h) = hex {
        headers.push(("X-Forgejo-Signature", h.clone()));
        headers.push(("X-Gitea-Signature", h));
    }
    Req {
        path: "/webhooks/gitea",
        headers: headers.into_iter().map(|(k, v)| (k.into(), v)).collect(),
        body,
    }
}

/// A GitLab `Tag Push Hook` signed with a signing token (Standard
/// Webhooks) `age` seconds ago.
fn gitlab_signed(url: &str, tag: &str, delivery: &str, sig: Sig, age: u64) -> Req {
    let body = gitlab_body(url, tag);
    let ts = (now_secs() - age).to_string();
    let key = match sig {
        Sig::Wrong => b"not-the-secret".as_slice(),
        _ => SECRET,
    };
    let mac = hmac_sha256(
        key,
        &[delivery.as_bytes(), b".", ts.as_bytes(), b".", &body],
    );
    let mut headers = gitlab_headers(delivery);
    headers.push(("webhook-id".into(), delivery.into()));
    headers.push(("webhook-timestamp".into(), ts));
    if sig != Sig::Missing {
        headers.push((
            "webhook-signature".into(),
            format!(
                "v1,{}",
                base64::engine::general_purpose::STANDARD.encode(mac)
            ),
        ));
    }
    Req {
        path: "/webhooks/gitlab",
        headers,
        body,
    }
}

/// A GitLab `Tag Push Hook` with the older secret token.
fn gitlab_token(url: &str, tag: &str, delivery: &str, sig: Sig) -> Req {
    let mut headers = gitlab_headers(delivery);
    match sig {
        Sig::Good => headers.push(("X-Gitlab-Token".into(), "test-secret".into())),
        Sig::Wrong => headers.push(("X-Gitlab-Token".into(), "test-secreT".into())),
        Sig::Missing => {}
    }
    Req {
        path: "/webhooks/gitlab",
        headers,
        body: gitlab_body(url, tag),
    }
}

fn gitlab_headers(delivery: &str) -> Vec<(String, String)> {
    [
        ("Content-Type", "application/json"),
        ("User-Agent", "GitLab/18.1.0"),
        ("X-Gitlab-Event", "Tag Push Hook"),
        ("X-Gitlab-Instance", "https://gitlab.invalid"),
        (
            "X-Gitlab-Webhook-UUID",
            "0c1e51c5-3cc5-4a2a-9c6f-6cbd2bd8c0b1",
        ),
        (
            "X-Gitlab-Event-UUID",
            "13792a34-cac6-4fda-95a8-c58e00a3954e",
        ),
        ("Idempotency-Key", delivery),
    ]
    .into_iter()
    .map(|(k, v)| (k.to_string(), v.to_string()))
    .collect()
}

fn gitlab_body(url: &str, tag: &str) -> Vec<u8> {
    serde_json::to_vec(&serde_json::json!({
        "object_kind": "tag_push",
        "event_name": "tag_push",
        "before": "0000000000000000000000000000000000000000",
        "after": "82b3d5ae55f7080f1e6022629cdb57bfae7cccc7",
        "ref": format!("refs/tags/{tag}"),
        "ref_protected": true,
        "checkout_sha": "82b3d5ae55f7080f1e6022629cdb57bfae7cccc7",
        "user_id": 1, "user_name": "Upstream", "user_username": "upstream",
        "project_id": 1,
        "project": {
            "id": 1, "name": "hello", "description": "",
            "web_url": url,
            "git_ssh_url": "git@gitlab.invalid:upstream/hello.git",
            "git_http_url": url,
            "namespace": "upstream", "visibility_level": 20,
            "path_with_namespace": "upstream/hello", "default_branch": "main",
        },
        "commits": [],
        "total_commits_count": 0,
        "repository": {
            "name": "hello", "url": "git@gitlab.invalid:upstream/hello.git",
            "homepage": url, "git_http_url": url,
            "git_ssh_url": "git@gitlab.invalid:upstream/hello.git", "visibility_level": 20,
        },
    }))
    .unwrap()
}

/// A Bitbucket Cloud `repo:push` creating tag `tag`.
fn bitbucket(url: &str, tag: &str, delivery: &str, sig: Sig) -> Req {
    let body = serde_json::to_vec(&serde_json::json!({
        "push": {"changes": [{
            "new": {
                "type": "tag", "name": tag,
                "target": {"type": "commit", "hash": "82b3d5ae55f7080f1e6022629cdb57bfae7cccc7"},
                "links": {"html": {"href": format!("{url}/commits/tag/{tag}")}},
            },
            "old": null, "created": true, "forced": false, "closed": false, "truncated": false,
        }]},
        "repository": {
            "type": "repository", "full_name": "upstream/hello", "name": "hello",
            "uuid": "{b2c3d4e5-0000-4000-8000-000000000001}", "scm": "git", "is_private": false,
            "links": {
                "self": {"href": "https://api.bitbucket.invalid/2.0/repositories/upstream/hello"},
                "html": {"href": url},
            },
        },
        "actor": {"type": "user", "display_name": "Upstream"},
    }))
    .unwrap();
    let mut headers = vec![
        ("Content-Type".to_string(), "application/json".to_string()),
        ("User-Agent".into(), "Bitbucket-Webhooks/2.0".into()),
        ("X-Event-Key".into(), "repo:push".into()),
        ("X-Request-UUID".into(), delivery.into()),
        (
            "X-Hook-UUID".into(),
            "{c6e3d5a1-0000-4000-8000-000000000002}".into(),
        ),
        ("X-Attempt-Number".into(), "1".into()),
    ];
    let key = match sig {
        Sig::Good => Some(SECRET),
        Sig::Wrong => Some(b"not-the-secret".as_slice()),
        Sig::Missing => None,
    };
    if let Some(k) = key {
        headers.push((
            "X-Hub-Signature".into(),
            format!("sha256={}", hex::encode(hmac_sha256(k, &[&body]))),
        ));
    }
    Req {
        path: "/webhooks/bitbucket",
        headers,
        body,
    }
}

fn send(d: &Daemon, r: &Req) -> HttpResponse {
    let headers: Vec<(&str, &str)> = r
        .headers
        .iter()
        .map(|(k, v)| (k.as_str(), v.as_str()))
        .collect();
    d.http("POST", r.path, &headers, &r.body)
}

fn count(d: &Daemon, forge: &str, result: &str) -> f64 {
    d.metric(&format!(
        "farmhand_webhooks_total{{forge=\"{forge}\",result=\"{result}\"}}"
    ))
    .unwrap_or_else(|| panic!("no {forge}/{result} series"))
}

/// The common story for one forge; `make(url, tag, delivery, sig)` builds
/// its request. Returns the running daemon and the upstream for more.
fn story(forge: &str, make: &dyn Fn(&str, &str, &str, Sig) -> Req) -> (Farm, Upstream, Daemon) {
    let mut farm = Farm::new();
    farm.http = true;
    let up = Upstream::new(&farm.root.join("up"));
    up.release("v1.0.0");
    farm.write_config("");
    farm.simple_recipe("hooked", &up, INSTALL, HOOKED);
    let d = farm.start();
    d.wait_event("build + publish complete", &[("version", "1.0.0-1")], T);
    d.wait_status(T, "idle", |s| s["in_flight"].is_null());
    let url = as_forge_writes(&up.url());

    // A signed tag event: polled and built at once.
    up.release("v1.1.0");
    let r = send(&d, &make(&url, "v1.1.0", "delivery-1", Sig::Good));
    assert_eq!(r.status, 202, "{}", r.text());
    assert!(r.text().contains("hooked"), "{}", r.text());
    d.wait_event(
        "webhook accepted, triggering immediate poll",
        &[
            ("recipe", "hooked"),
            ("forge", forge),
            ("delivery", "delivery-1"),
        ],
        T,
    );
    let started = d.wait_event("starting build", &[("version", "1.1.0-1")], T);
    assert_eq!(field(&started, "source").as_deref(), Some("webhook"));
    d.wait_event("build + publish complete", &[("version", "1.1.0-1")], T);

    // From here on a poll would find v1.2.0: nothing below may poll.
    up.release("v1.2.0");
    let r = send(&d, &make(&url, "v1.1.0", "delivery-1", Sig::Good));
    assert_eq!(r.status, 200, "redelivery: {}", r.text());
    assert!(r.text().contains("duplicate"), "{}", r.text());
    for (sig, delivery) in [(Sig::Wrong, "delivery-2"), (Sig::Missing, "delivery-3")] {
        let r = send(&d, &make(&url, "v1.2.0", delivery, sig));
        assert_eq!(r.status, 401, "{sig:?}: {}", r.text());
    }
    let other = "https://forge.invalid/someone/else.git";
    let r = send(&d, &make(other, "v1.2.0", "delivery-4", Sig::Good));
    assert_eq!(r.status, 200, "unknown repository: {}", r.text());
    assert!(r.text().contains("not watched"), "{}", r.text());

    std::thread::sleep(Duration::from_millis(500));
    assert_eq!(
        d.events("polling upstream", &[("source", "webhook")]).len(),
        1,
        "{}",
        d.logs()
    );
    assert!(d
        .events("starting build", &[("version", "1.2.0-1")])
        .is_empty());
    assert_eq!(count(&d, forge, "accepted"), 1.0);
    assert_eq!(count(&d, forge, "duplicate"), 1.0);
    assert_eq!(count(&d, forge, "not_watched"), 1.0);
    assert_eq!(count(&d, forge, "invalid_signature"), 2.0);
    assert_eq!(count(&d, "github", "accepted"), 0.0);
    assert_eq!(
        d.events("webhook signature invalid", &[("forge", forge)])
            .len(),
        2
    );
    (farm, up, d)
}

#[test]
fn gitea_and_forgejo_tag_events_build_at_once() {
    let (farm, up, d) = story("gitea", &gitea);
    // Gitea alone (no Forgejo headers), a push of the tag: acted on.
    let body = serde_json::to_vec(&serde_json::json!({
        "ref": "refs/tags/v1.2.0",
        "before": "0000000000000000000000000000000000000000",
        "after": "82b3d5ae55f7080f1e6022629cdb57bfae7cccc7",
        "repository": {"full_name": "upstream/hello", "clone_url": format!("{}.git", up.url()), "html_url": up.url()},
    }))
    .unwrap();
    let sig = hex::encode(hmac_sha256(SECRET, &[&body]));
    let r = d.http(
        "POST",
        "/webhooks/gitea",
        &[
            ("X-Gitea-Event", "push"),
            ("X-Gitea-Delivery", "gitea-push-1"),
            ("X-Gitea-Signature", &sig),
        ],
        &body,
    );
    assert_eq!(r.status, 202, "{}", r.text());
    d.wait_event("build + publish complete", &[("version", "1.2.0-1")], T);
    assert!(archive_ids(&farm).contains(&"hooked@1.2.0-1".to_string()));
}

#[test]
fn gitlab_signing_token_and_secret_token() {
    let (farm, up, d) = story("gitlab", &|url, tag, delivery, sig| {
        gitlab_signed(url, tag, delivery, sig, 0)
    });
    let url = as_forge_writes(&up.url());
    // Six minutes old: refused, however well signed.
    let r = send(
        &d,
        &gitlab_signed(&url, "v1.2.0", "stale-1", Sig::Good, 360),
    );
    assert_eq!(r.status, 401, "{}", r.text());
    assert!(r.text().contains("webhook-timestamp"), "{}", r.text());
    // With webhook-signature present it alone decides: a right token does
    // not rescue a wrong signature.
    let mut both = gitlab_signed(&url, "v1.2.0", "both-1", Sig::Wrong, 0);
    both.headers
        .push(("X-Gitlab-Token".into(), "test-secret".into()));
    assert_eq!(send(&d, &both).status, 401);
    // The secret token alone: wrong and missing refused, right accepted.
    for (sig, delivery, want) in [
        (Sig::Wrong, "token-1", 401),
        (Sig::Missing, "token-2", 401),
        (Sig::Good, "token-3", 202),
    ] {
        let r = send(&d, &gitlab_token(&url, "v1.2.0", delivery, sig));
        assert_eq!(r.status, want, "{sig:?}: {}", r.text());
    }
    d.wait_event("build + publish complete", &[("version", "1.2.0-1")], T);
    assert_eq!(count(&d, "gitlab", "invalid_signature"), 6.0);
    assert_eq!(count(&d, "gitlab", "accepted"), 2.0);
    // Without Idempotency-Key, X-Gitlab-Event-UUID names the delivery.
    let mut r = gitlab_token(&url, "v1.2.0", "x", Sig::Good);
    r.headers.retain(|(k, _)| k != "Idempotency-Key");
    assert_eq!(send(&d, &r).status, 202);
    assert_eq!(send(&d, &r).status, 200);
    assert_eq!(count(&d, "gitlab", "duplicate"), 2.0);
    // A merge request hook is answered 200 and acted on nowhere.
    let mut mr = gitlab_token(&url, "v1.2.0", "mr-1", Sig::Good);
    for (k, v) in &mut mr.headers {
        if k == "X-Gitlab-Event" {
            *v = "Merge Request Hook".into();
        }
    }
    let r = send(&d, &mr);
    assert_eq!(r.status, 200, "{}", r.text());
    assert!(r.text().contains("ignored"), "{}", r.text());
    assert!(archive_ids(&farm).contains(&"hooked@1.2.0-1".to_string()));
}

#[test]
fn bitbucket_tag_push_builds_at_once() {
    let (farm, _up, d) = story("bitbucket", &bitbucket);
    // A ping is 200 and polls nothing.
    let body = b"{\"test\":true}";
    let sig = format!("sha256={}", hex::encode(hmac_sha256(SECRET, &[body])));
    let r = d.http(
        "POST",
        "/webhooks/bitbucket",
        &[
            ("X-Event-Key", "diagnostics:ping"),
            ("X-Request-UUID", "ping-1"),
            ("X-Hub-Signature", &sig),
        ],
        body,
    );
    assert_eq!(r.status, 200, "{}", r.text());
    assert_eq!(count(&d, "bitbucket", "pong"), 1.0);
    // Non-POST.
    let r = d.http("GET", "/webhooks/bitbucket", &[], b"");
    assert_eq!(r.status, 405);
    assert_eq!(r.header("allow"), Some("POST"));
    // Signed, not JSON.
    let sig = format!("sha256={}", hex::encode(hmac_sha256(SECRET, &[b"nope"])));
    let r = d.http(
        "POST",
        "/webhooks/bitbucket",
        &[("X-Event-Key", "repo:push"), ("X-Hub-Signature", &sig)],
        b"nope",
    );
    assert_eq!(r.status, 400, "{}", r.text());
    assert_eq!(archive_ids(&farm).len(), 2);
}
