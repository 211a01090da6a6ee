//! GitHub webhooks: `X-Hub-Signature-256: sha256=<hex>` over the raw body,
//! and the repository URLs of a `push`, `create` or `ping` payload. The
//! hex HMAC check here is shared with the forges that copied GitHub's
//! scheme (Gitea, Bitbucket).

use hmac::{Hmac, Mac};
use sha2::Sha256;

use crate::watch::url::strings_at;

/// Largest accepted body, for every forge: GitHub's own maximum, 25 MiB.
pub const MAX_BODY: usize = 25 * 1024 * 1024;

/// Verifies `X-Hub-Signature-256: sha256=<hex>` over the raw body in
/// constant time. Any malformed header is simply invalid.
pub fn verify_signature(secret: &[u8], body: &[u8], header: Option<&str>) -> bool {
    header
        .and_then(|h| h.trim().strip_prefix("sha256="))
        .is_some_and(|hex_sig| verify_hex(secret, body, hex_sig))
}

/// True when `hex_sig` is the hex HMAC-SHA256 of `body` keyed by `secret`
/// (either letter case), compared in constant time.
pub fn verify_hex(secret: &[u8], body: &[u8], hex_sig: &str) -> bool {
    let Ok(sig) = hex::decode(hex_sig) else {
        return false;
    };
    if sig.len() != 32 {
        return false;
    }
    let Ok(mut mac) = Hmac::<Sha256>::new_from_slice(secret) else {
        return false;
    };
    mac.update(body);
    mac.verify_slice(&sig).is_ok()
}

/// Computes the header value GitHub would send (used by tests and tools).
pub fn sign(secret: &[u8], body: &[u8]) -> String {
    format!("sha256={}", hmac_hex(secret, body))
}

/// The hex HMAC-SHA256 of `body` keyed by `secret`.
pub fn hmac_hex(secret: &[u8], body: &[u8]) -> String {
    let mut mac = Hmac::<Sha256>::new_from_slice(secret).expect("HMAC takes any key length");
    mac.update(body);
    hex::encode(mac.finalize().into_bytes())
}

/// `repository.{html_url,clone_url,git_url,ssh_url,url}`.
pub fn urls(payload: &serde_json::Map<String, serde_json::Value>) -> Vec<String> {
    strings_at(
        payload,
        &["repository"],
        &["html_url", "clone_url", "git_url", "ssh_url", "url"],
    )
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::watch::url::json_object;

    #[test]
    fn signatures() {
        let body = br#"{"zen":"hi"}"#;
        let good = sign(b"s3cret", body);
        assert!(verify_signature(b"s3cret", body, Some(&good)));
        assert!(verify_signature(
            b"s3cret",
            body,
            Some(&good.to_ascii_uppercase().replace("SHA256=", "sha256="))
        ));
        assert!(!verify_signature(b"other", body, Some(&good)));
        assert!(!verify_signature(b"s3cret", b"tampered", Some(&good)));
        assert!(!verify_signature(b"s3cret", body, None));
        assert!(!verify_signature(
            b"s3cret",
            body,
            Some(&good.replace("sha256=", "sha1="))
        ));
        assert!(!verify_signature(
            b"s3cret",
            body,
            Some(&good[..good.len() - 1])
        ));
        assert!(!verify_signature(b"s3cret", body, Some("sha256=zz")));
        assert!(!verify_signature(b"s3cret", body, Some("sha256=")));
    }

    #[test]
    fn payloads() {
        let p = json_object(br#"{"ref":"refs/tags/v1","repository":{"html_url":"https://github.com/a/b","clone_url":"https://github.com/a/b.git","ssh_url":"","git_url":5}}"#).unwrap();
        assert_eq!(
            urls(&p),
            ["https://github.com/a/b", "https://github.com/a/b.git"]
        );
        assert!(json_object(b"not json").is_err());
        assert!(json_object(b"[1,2]").is_err());
        assert!(urls(&json_object(b"{}").unwrap()).is_empty());
        assert!(urls(&json_object(br#"{"repository":"x"}"#).unwrap()).is_empty());
    }
}
