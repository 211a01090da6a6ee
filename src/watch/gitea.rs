//! Gitea, Forgejo and Gogs webhooks. All three sign the raw body with
//! HMAC-SHA256 and send the bare hex digest, each under its own header
//! name (`X-Forgejo-Signature`, `X-Gitea-Signature`, `X-Gogs-Signature`;
//! Forgejo sends the Gitea names too). Their `push` and `create` payloads
//! carry `repository.{clone_url,html_url,ssh_url}`.

use crate::watch::github::verify_hex;
use crate::watch::url::strings_at;

/// Verifies a hex HMAC-SHA256 signature header in constant time.
pub fn verify_signature(secret: &[u8], body: &[u8], header: Option<&str>) -> bool {
    header.is_some_and(|h| verify_hex(secret, body, h.trim()))
}

/// `repository.{clone_url,html_url,ssh_url}`.
pub fn urls(payload: &serde_json::Map<String, serde_json::Value>) -> Vec<String> {
    strings_at(
        payload,
        &["repository"],
        &["clone_url", "html_url", "ssh_url"],
    )
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::watch::github::hmac_hex;
    use crate::watch::url::json_object;

    #[test]
    fn signatures() {
        let body = br#"{"ref":"v1.0.0","ref_type":"tag"}"#;
        let hex = hmac_hex(b"s3cret", body);
        assert!(verify_signature(b"s3cret", body, Some(&hex)));
        assert!(verify_signature(
            b"s3cret",
            body,
            Some(&hex.to_ascii_uppercase())
        ));
        assert!(!verify_signature(
            b"s3cret",
            body,
            Some(&format!("sha256={hex}"))
        ));
        assert!(!verify_signature(b"other", body, Some(&hex)));
        assert!(!verify_signature(b"s3cret", b"{}", Some(&hex)));
        assert!(!verify_signature(b"s3cret", body, Some(&hex[..62])));
        assert!(!verify_signature(b"s3cret", body, Some("")));
        assert!(!verify_signature(b"s3cret", body, None));
    }

    #[test]
    fn payloads() {
        let p = json_object(
            br#"{"ref":"v1.0.0","ref_type":"tag","repository":{"full_name":"o/r","html_url":"https://gitea.example.org/o/r","clone_url":"https://gitea.example.org/o/r.git","ssh_url":"ssh://git@gitea.example.org:2222/o/r.git"}}"#,
        )
        .unwrap();
        assert_eq!(urls(&p).len(), 3);
    }
}
