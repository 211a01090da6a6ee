//! Webhook verification, payload parsing and URL normalisation of every
//! forge (DESIGN.md sections 7, 10 and 16).
//!
//! * `github::verify_signature` accepts exactly the header
//!   `sha256=<hex of the HMAC>` (hex in either case, surrounding
//!   whitespace ignored), and refuses the right MAC over a changed body;
//! * for every forge, a request signed the way that forge signs verifies,
//!   and the same signature over a changed body does not; GitLab's
//!   Standard Webhooks signature also fails outside its 5 minutes;
//! * `Webhook::new`, `verify`, `event` and `delivery` never panic on any
//!   headers, and `forge::parse_payload` never panics and accepts only JSON
//!   objects, yielding non-empty URLs;
//! * `normalize_url` never panics, and the https, ssh, scp-like and git
//!   forms of one host/path normalise to the same string.
#![no_main]

use std::time::{SystemTime, UNIX_EPOCH};

use arbitrary::Arbitrary;
use farmhand::watch::forge::{self, Webhook};
use farmhand::watch::github::{hmac_hex, sign, verify_signature};
use farmhand::watch::gitlab;
use farmhand::watch::url::normalize_url;
use farmhand::watch::Forge;
use libfuzzer_sys::fuzz_target;

#[derive(Arbitrary, Debug)]
struct Input<'a> {
    secret: &'a [u8],
    body: &'a [u8],
    header: Option<&'a str>,
    headers: Vec<(u8, &'a str)>,
    flip: u16,
    skew: i16,
    host: &'a str,
    path: Vec<&'a str>,
    port: Option<u16>,
}

/// Every header name any forge reads.
const NAMES: &[&str] = &[
    "x-hub-signature-256",
    "x-hub-signature",
    "x-github-event",
    "x-github-delivery",
    "x-forgejo-signature",
    "x-gitea-signature",
    "x-gogs-signature",
    "x-forgejo-event",
    "x-gitea-event",
    "x-gogs-event",
    "x-forgejo-delivery",
    "x-gitea-delivery",
    "x-gogs-delivery",
    "webhook-signature",
    "webhook-id",
    "webhook-timestamp",
    "x-gitlab-token",
    "x-gitlab-event",
    "idempotency-key",
    "x-gitlab-event-uuid",
    "x-event-key",
    "x-request-uuid",
];

fn expected_verdict(secret: &[u8], body: &[u8], header: Option<&str>) -> bool {
    let good = sign(secret, body);
    let good_hex = &good["sha256=".len()..];
    header
        .map(str::trim)
        .and_then(|h| h.strip_prefix("sha256="))
        .is_some_and(|h| h.eq_ignore_ascii_case(good_hex))
}

fn hook(forge: Forge, headers: &[(&str, String)]) -> Webhook {
    Webhook::new(forge, |name| {
        headers
            .iter()
            .find(|(k, _)| *k == name)
            .map(|(_, v)| v.clone())
    })
}

fuzz_target!(|input: Input| {
    let Input {
        secret,
        body,
        header,
        headers,
        flip,
        skew,
        host,
        path,
        port,
    } = input;
    let now = SystemTime::now();
    let now_secs = now.duration_since(UNIX_EPOCH).unwrap().as_secs();

    // GitHub's signature header, exactly.
    assert_eq!(
        verify_signature(secret, body, header),
        expected_verdict(secret, body, header),
        "header {header:?}"
    );
    let good = sign(secret, body);
    assert!(verify_signature(secret, body, Some(&good)));
    assert!(verify_signature(
        secret,
        body,
        Some(&format!(" {good}\r\n"))
    ));
    assert!(!verify_signature(secret, body, None));
    assert!(!verify_signature(
        secret,
        body,
        Some(&good.replacen("sha256=", "SHA256=", 1))
    ));

    // Arbitrary headers: nothing panics.
    let arbitrary: Vec<(&str, String)> = headers
        .iter()
        .map(|(i, v)| (NAMES[usize::from(*i) % NAMES.len()], v.to_string()))
        .collect();
    for f in Forge::ALL {
        let h = hook(f, &arbitrary);
        let _ = h.verify(secret, body, now);
        let _ = (h.event(), h.delivery(), h.has_signature());
    }

    // Each forge's own signing verifies, and fails over a changed body.
    let ts = now_secs.to_string();
    let signed: [(Forge, Vec<(&str, String)>); 5] = [
        (Forge::Github, vec![("x-hub-signature-256", good.clone())]),
        (Forge::Bitbucket, vec![("x-hub-signature", good.clone())]),
        (Forge::Gitea, vec![("x-gitea-signature", hmac_hex(secret, body))]),
        (
            Forge::Gitlab,
            vec![
                ("webhook-id", "msg_1".into()),
                ("webhook-timestamp", ts.clone()),
                (
                    "webhook-signature",
                    format!("v1,AAAA {}", gitlab::sign(secret, "msg_1", &ts, body)),
                ),
            ],
        ),
        (
            Forge::Gitlab,
            vec![("x-gitlab-token", String::from_utf8_lossy(secret).into_owned())],
        ),
    ];
    for (f, h) in &signed {
        let token = h[0].0 == "x-gitlab-token";
        if token && std::str::from_utf8(secret).is_err() {
            continue;
        }
        assert!(hook(*f, h).verify(secret, body, now).is_ok(), "{f} {h:?}");
        if !body.is_empty() && !token {
            let mut changed = body.to_vec();
            let i = usize::from(flip) % changed.len();
            changed[i] ^= 1 << (flip % 8);
            assert!(hook(*f, h).verify(secret, &changed, now).is_err(), "{f}");
        }
    }
    // GitLab's timestamp: within 5 minutes either way.
    let off = i64::from(skew);
    let then = now_secs.saturating_add_signed(off).to_string();
    let h = vec![
        ("webhook-id", "msg_1".to_string()),
        ("webhook-timestamp", then.clone()),
        ("webhook-signature", gitlab::sign(secret, "msg_1", &then, body)),
    ];
    let verdict = hook(Forge::Gitlab, &h).verify(secret, body, now);
    assert_eq!(verdict.is_ok(), off.abs() <= 300, "skew {off}: {verdict:?}");

    // Payloads.
    for f in Forge::ALL {
        match forge::parse_payload(f, body) {
            Ok(p) => {
                let v: serde_json::Value =
                    serde_json::from_slice(body).expect("accepted body is JSON");
                assert!(v.is_object());
                for u in &p.urls {
                    assert!(!u.is_empty());
                    let _ = normalize_url(u);
                }
            }
            Err(e) => assert!(e.starts_with("body is not"), "{e}"),
        }
    }
    if let Ok(s) = std::str::from_utf8(body) {
        let _ = normalize_url(s);
    }
    if let Some(h) = header {
        let _ = normalize_url(h);
    }

    // URL forms of one repository.
    let host_ok = !host.is_empty()
        && host.len() < 64
        && host
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'.' || b == b'-');
    let segs_ok = !path.is_empty()
        && path.len() < 6
        && path.iter().all(|s| {
            !s.is_empty()
                && s.len() < 32
                && s.bytes()
                    .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'.' | b'_' | b'-'))
        });
    if !host_ok || !segs_ok {
        return;
    }
    let p = path.join("/");
    // A repository name ending in `.git` is indistinguishable from the
    // `.git` suffix; the forges refuse such names.
    if p.to_ascii_lowercase().ends_with(".git") {
        return;
    }
    let want = normalize_url(&format!("https://{host}/{p}"));
    let port = port.map(|n| format!(":{n}")).unwrap_or_default();
    for form in [
        format!("https://{host}/{p}.git"),
        format!("https://{host}/{p}/"),
        format!("http://{host}{port}/{p}"),
        format!("HTTPS://{}/{p}", host.to_ascii_uppercase()),
        format!("git@{host}:{p}.git"),
        format!("ssh://git@{host}{port}/{p}"),
        format!("ssh://git@{host}/{p}.git"),
        format!("git://{host}/{p}.git"),
        format!("https://user@{host}{port}/{p}.git"),
        format!("  https://{host}/{p}.git/  "),
    ] {
        assert_eq!(normalize_url(&form), want, "{form:?}");
    }
    // Another repository on the same host does not match.
    assert_ne!(normalize_url(&format!("https://{host}/{p}-extra")), want);
});
