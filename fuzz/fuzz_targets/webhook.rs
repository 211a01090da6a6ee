//! Webhook signature checking, payload parsing and URL normalisation
//! (DESIGN.md sections 7 and 10).
//!
//! * `verify_signature` never panics, accepts exactly the header
//!   `sha256=<hex of the HMAC>` (hex in either case, surrounding
//!   whitespace ignored), and refuses the right MAC over a changed body;
//! * `parse_payload` never panics and accepts only JSON objects;
//! * `normalize_url` never panics, and the https, ssh, scp-like and git
//!   forms of one host/path normalise to the same string.
#![no_main]

use arbitrary::Arbitrary;
use farmhand::watch::github::{normalize_url, parse_payload, sign, verify_signature};
use libfuzzer_sys::fuzz_target;

#[derive(Arbitrary, Debug)]
struct Input<'a> {
    secret: &'a [u8],
    body: &'a [u8],
    header: Option<&'a str>,
    flip: u16,
    host: &'a str,
    path: Vec<&'a str>,
    port: Option<u16>,
}

fn expected_verdict(secret: &[u8], body: &[u8], header: Option<&str>) -> bool {
    let good = sign(secret, body);
    let good_hex = &good["sha256=".len()..];
    header
        .map(str::trim)
        .and_then(|h| h.strip_prefix("sha256="))
        .is_some_and(|h| h.eq_ignore_ascii_case(good_hex))
}

fuzz_target!(|input: Input| {
    let Input {
        secret,
        body,
        header,
        flip,
        host,
        path,
        port,
    } = input;

    // Signatures.
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
    if !body.is_empty() {
        let mut changed = body.to_vec();
        let i = usize::from(flip) % changed.len();
        changed[i] ^= 1 << (flip % 8);
        assert!(!verify_signature(secret, &changed, Some(&good)));
    }

    // Payloads.
    match parse_payload(body) {
        Ok(p) => {
            let v: serde_json::Value = serde_json::from_slice(body).expect("accepted body is JSON");
            assert!(v.is_object());
            for u in &p.urls {
                assert!(!u.is_empty());
                let _ = normalize_url(u);
            }
        }
        Err(e) => assert!(e.starts_with("body is not"), "{e}"),
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
    // `.git` suffix; GitHub refuses such names.
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
        format!("  https://{host}/{p}.git/  "),
    ] {
        assert_eq!(normalize_url(&form), want, "{form:?}");
    }
});
