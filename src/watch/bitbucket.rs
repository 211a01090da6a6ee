//! Bitbucket Cloud webhooks: `X-Hub-Signature: sha256=<hex>` over the raw
//! body (GitHub's scheme under another header name), the `repo:push`
//! event, and the repository's web address at
//! `repository.links.html.href`.

use crate::watch::github;
use crate::watch::url::strings_at;

/// Verifies `X-Hub-Signature: sha256=<hex>` in constant time.
pub fn verify_signature(secret: &[u8], body: &[u8], header: Option<&str>) -> bool {
    github::verify_signature(secret, body, header)
}

/// `repository.links.html.href`.
pub fn urls(payload: &serde_json::Map<String, serde_json::Value>) -> Vec<String> {
    strings_at(payload, &["repository", "links", "html"], &["href"])
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::watch::url::json_object;

    #[test]
    fn signatures() {
        let body = br#"{"push":{"changes":[]}}"#;
        let good = github::sign(b"s3cret", body);
        assert!(verify_signature(b"s3cret", body, Some(&good)));
        assert!(!verify_signature(
            b"s3cret",
            body,
            Some(&good["sha256=".len()..])
        ));
        assert!(!verify_signature(b"other", body, Some(&good)));
        assert!(!verify_signature(b"s3cret", body, None));
    }

    #[test]
    fn payloads() {
        let p = json_object(br#"{"repository":{"full_name":"o/r","links":{"self":{"href":"https://api.bitbucket.org/2.0/repositories/o/r"},"html":{"href":"https://bitbucket.org/o/r"}}}}"#).unwrap();
        assert_eq!(urls(&p), ["https://bitbucket.org/o/r"]);
        let p = json_object(br#"{"repository":{"links":{"html":"https://bitbucket.org/o/r"}}}"#)
            .unwrap();
        assert!(urls(&p).is_empty());
    }
}
