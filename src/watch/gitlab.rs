//! GitLab webhooks. A hook with a signing token sends the Standard
//! Webhooks headers: `webhook-id`, `webhook-timestamp` (Unix seconds) and
//! `webhook-signature`, a space-separated list of `v1,<base64 HMAC-SHA256
//! of "{webhook-id}.{webhook-timestamp}.{body}">`. When that header is
//! present it alone decides: one valid signature passes, and the timestamp
//! must be within 5 minutes of the farm's clock (a captured request cannot
//! be replayed later). The key is the secret's bytes, or, for a secret
//! written `whsec_<base64>` (as GitLab generates signing tokens), the
//! decoded bytes. Without it, the older secret token must arrive in
//! `X-Gitlab-Token`, compared in constant time. Payloads carry
//! `project.{git_http_url,git_ssh_url,web_url}`.

use std::time::{Duration, SystemTime, UNIX_EPOCH};

use base64::engine::general_purpose::STANDARD;
use base64::Engine as _;
use hmac::{Hmac, Mac};
use sha2::Sha256;

use crate::watch::url::strings_at;

/// How far `webhook-timestamp` may be from the farm's clock.
pub const TIMESTAMP_TOLERANCE: Duration = Duration::from_secs(300);
/// At most this many entries of `webhook-signature` are tried.
const MAX_SIGNATURES: usize = 16;

/// The authenticity headers of a GitLab request.
#[derive(Debug, Default, Clone, Copy)]
pub struct Auth<'a> {
    /// `webhook-signature`.
    pub signature: Option<&'a str>,
    /// `webhook-id`.
    pub id: Option<&'a str>,
    /// `webhook-timestamp`.
    pub timestamp: Option<&'a str>,
    /// `X-Gitlab-Token`.
    pub token: Option<&'a str>,
}

/// Checks a request's authenticity (see the module documentation); the
/// error says what is wrong, without any secret.
pub fn verify(
    secret: &[u8],
    body: &[u8],
    auth: &Auth,
    now: SystemTime,
) -> Result<(), &'static str> {
    if let Some(signatures) = auth.signature {
        return verify_standard(secret, body, auth.id, auth.timestamp, signatures, now);
    }
    match auth.token {
        Some(token) if token_matches(secret, token) => Ok(()),
        _ => Err("invalid or missing X-Gitlab-Token (or webhook-signature)"),
    }
}

/// The Standard Webhooks check of `webhook-signature`.
pub fn verify_standard(
    secret: &[u8],
    body: &[u8],
    id: Option<&str>,
    timestamp: Option<&str>,
    signatures: &str,
    now: SystemTime,
) -> Result<(), &'static str> {
    let id = id
        .filter(|s| !s.is_empty())
        .ok_or("webhook-signature without webhook-id")?;
    let ts = timestamp.ok_or("webhook-signature without webhook-timestamp")?;
    if ts.is_empty() || !ts.bytes().all(|b| b.is_ascii_digit()) {
        return Err("webhook-timestamp is not a number of seconds");
    }
    let secs: u64 = ts
        .parse()
        .map_err(|_| "webhook-timestamp is not a number of seconds")?;
    let now = now.duration_since(UNIX_EPOCH).unwrap_or_default().as_secs();
    if now.abs_diff(secs) > TIMESTAMP_TOLERANCE.as_secs() {
        return Err("webhook-timestamp is more than 5 minutes off");
    }
    let Ok(mut mac) = Hmac::<Sha256>::new_from_slice(&signing_key(secret)) else {
        return Err("invalid webhook-signature");
    };
    mac.update(id.as_bytes());
    mac.update(b".");
    mac.update(ts.as_bytes());
    mac.update(b".");
    mac.update(body);
    for entry in signatures.split_ascii_whitespace().take(MAX_SIGNATURES) {
        let Some(sig) = entry
            .strip_prefix("v1,")
            .and_then(|b64| STANDARD.decode(b64).ok())
        else {
            continue;
        };
        if mac.clone().verify_slice(&sig).is_ok() {
            return Ok(());
        }
    }
    Err("invalid webhook-signature")
}

/// The HMAC key of a secret: the bytes `whsec_<base64>` encodes, else the
/// secret's own bytes.
pub fn signing_key(secret: &[u8]) -> Vec<u8> {
    secret
        .strip_prefix(b"whsec_")
        .and_then(|b64| STANDARD.decode(b64).ok())
        .filter(|k| !k.is_empty())
        .unwrap_or_else(|| secret.to_vec())
}

/// `token == secret` in constant time: the HMACs of both under the secret
/// are compared with `verify_slice`, so neither the position of the first
/// difference nor the secret's length shows in the time taken.
fn token_matches(secret: &[u8], token: &str) -> bool {
    let Ok(mut of_token) = Hmac::<Sha256>::new_from_slice(secret) else {
        return false;
    };
    of_token.update(token.as_bytes());
    let tag = of_token.finalize().into_bytes();
    let Ok(mut of_secret) = Hmac::<Sha256>::new_from_slice(secret) else {
        return false;
    };
    of_secret.update(secret);
    of_secret.verify_slice(&tag).is_ok()
}

/// The `webhook-signature` value GitLab would send (used by tests and
/// tools): `v1,<base64>`.
pub fn sign(secret: &[u8], id: &str, timestamp: &str, body: &[u8]) -> String {
    let mut mac =
        Hmac::<Sha256>::new_from_slice(&signing_key(secret)).expect("HMAC takes any key length");
    mac.update(format!("{id}.{timestamp}.").as_bytes());
    mac.update(body);
    format!("v1,{}", STANDARD.encode(mac.finalize().into_bytes()))
}

/// `project.{git_http_url,git_ssh_url,web_url}`.
pub fn urls(payload: &serde_json::Map<String, serde_json::Value>) -> Vec<String> {
    strings_at(
        payload,
        &["project"],
        &["git_http_url", "git_ssh_url", "web_url"],
    )
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::watch::url::json_object;

    const NOW: u64 = 1_800_000_000;

    fn at(secs: u64) -> SystemTime {
        UNIX_EPOCH + Duration::from_secs(secs)
    }

    fn signed<'a>(sig: &'a str, ts: &'a str) -> Auth<'a> {
        Auth {
            signature: Some(sig),
            id: Some("msg_1"),
            timestamp: Some(ts),
            token: None,
        }
    }

    #[test]
    fn standard_signatures() {
        let body = br#"{"object_kind":"tag_push"}"#;
        let ts = NOW.to_string();
        let good = sign(b"s3cret", "msg_1", &ts, body);
        let now = at(NOW);
        assert_eq!(verify(b"s3cret", body, &signed(&good, &ts), now), Ok(()));
        // Any one valid signature among several passes.
        let several = format!("v1,AAAA v1a,xyz {good} v1,bm9wZQ==");
        assert_eq!(verify(b"s3cret", body, &signed(&several, &ts), now), Ok(()));
        // Wrong secret, changed body, changed id, unknown version.
        assert!(verify(b"other", body, &signed(&good, &ts), now).is_err());
        assert!(verify(b"s3cret", b"{}", &signed(&good, &ts), now).is_err());
        let mut other_id = signed(&good, &ts);
        other_id.id = Some("msg_2");
        assert!(verify(b"s3cret", body, &other_id, now).is_err());
        let v2 = good.replacen("v1,", "v2,", 1);
        assert!(verify(b"s3cret", body, &signed(&v2, &ts), now).is_err());
        assert!(verify(b"s3cret", body, &signed("", &ts), now).is_err());
        // The signature alone decides: a right token does not rescue a wrong signature.
        let mut with_token = signed("v1,AAAA", &ts);
        with_token.token = Some("s3cret");
        assert!(verify(b"s3cret", body, &with_token, now).is_err());
        // Missing id or timestamp.
        let mut no_id = signed(&good, &ts);
        no_id.id = None;
        assert_eq!(
            verify(b"s3cret", body, &no_id, now),
            Err("webhook-signature without webhook-id")
        );
        let mut no_ts = signed(&good, &ts);
        no_ts.timestamp = None;
        assert!(verify(b"s3cret", body, &no_ts, now).is_err());
    }

    #[test]
    fn timestamps_within_five_minutes() {
        let body = b"{}";
        for (ts, ok) in [
            (NOW - 300, true),
            (NOW + 300, true),
            (NOW - 301, false),
            (NOW + 301, false),
            (NOW - 360, false),
            (0, false),
        ] {
            let t = ts.to_string();
            let sig = sign(b"s3cret", "msg_1", &t, body);
            assert_eq!(
                verify(b"s3cret", body, &signed(&sig, &t), at(NOW)).is_ok(),
                ok,
                "{ts}"
            );
        }
        for bad in [
            "",
            "-1",
            "+1800000000",
            "1800000000.5",
            "1e9",
            "99999999999999999999999",
        ] {
            let sig = sign(b"s3cret", "msg_1", bad, body);
            assert!(
                verify(b"s3cret", body, &signed(&sig, bad), at(NOW)).is_err(),
                "{bad:?}"
            );
        }
    }

    #[test]
    fn whsec_secrets_key_with_their_decoded_bytes() {
        let key = [7u8; 32];
        let secret = format!("whsec_{}", STANDARD.encode(key));
        let body = b"{}";
        let ts = NOW.to_string();
        // What a Standard Webhooks sender computes with the decoded key.
        let mut mac = Hmac::<Sha256>::new_from_slice(&key).unwrap();
        mac.update(format!("msg_1.{ts}.{{}}").as_bytes());
        let want = format!("v1,{}", STANDARD.encode(mac.finalize().into_bytes()));
        assert_eq!(sign(secret.as_bytes(), "msg_1", &ts, body), want);
        assert!(verify(secret.as_bytes(), body, &signed(&want, &ts), at(NOW)).is_ok());
        // Keyed by the text itself, it would not verify.
        let mut by_text = Hmac::<Sha256>::new_from_slice(secret.as_bytes()).unwrap();
        by_text.update(format!("msg_1.{ts}.{{}}").as_bytes());
        let wrong = format!("v1,{}", STANDARD.encode(by_text.finalize().into_bytes()));
        assert!(verify(secret.as_bytes(), body, &signed(&wrong, &ts), at(NOW)).is_err());
        // Not base64 after the prefix: the secret's own bytes.
        assert_eq!(signing_key(b"whsec_!!"), b"whsec_!!");
        assert_eq!(signing_key(b"plain"), b"plain");
    }

    #[test]
    fn secret_token() {
        let auth = |t| Auth {
            token: t,
            ..Auth::default()
        };
        let now = at(NOW);
        assert!(verify(b"s3cret", b"{}", &auth(Some("s3cret")), now).is_ok());
        for bad in [
            None,
            Some(""),
            Some("s3cre"),
            Some("s3cret "),
            Some("S3CRET"),
            Some("s3cretx"),
        ] {
            assert!(
                verify(b"s3cret", b"{}", &auth(bad), now).is_err(),
                "{bad:?}"
            );
        }
    }

    #[test]
    fn payloads() {
        let p = json_object(br#"{"object_kind":"tag_push","ref":"refs/tags/v1.0.0","project":{"web_url":"https://gitlab.com/g/p","git_ssh_url":"git@gitlab.com:g/p.git","git_http_url":"https://gitlab.com/g/p.git"},"repository":{"url":"x"}}"#).unwrap();
        assert_eq!(
            urls(&p),
            [
                "https://gitlab.com/g/p.git",
                "git@gitlab.com:g/p.git",
                "https://gitlab.com/g/p"
            ]
        );
    }
}
