//! GitHub webhooks: signature check, payload parsing and routing to a
//! recipe. A webhook never carries a version; it only says "poll this
//! upstream now".

use hmac::{Hmac, Mac};
use sha2::Sha256;

use crate::model::recipe::Roster;

/// Largest accepted body: GitHub's own maximum, 25 MiB.
pub const MAX_BODY: usize = 25 * 1024 * 1024;

/// Verifies `X-Hub-Signature-256: sha256=<hex>` over the raw body in
/// constant time. Any malformed header is simply invalid.
pub fn verify_signature(secret: &[u8], body: &[u8], header: Option<&str>) -> bool {
    let Some(hex_sig) = header.and_then(|h| h.trim().strip_prefix("sha256=")) else {
        return false;
    };
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
    let mut mac = Hmac::<Sha256>::new_from_slice(secret).expect("HMAC takes any key length");
    mac.update(body);
    format!("sha256={}", hex::encode(mac.finalize().into_bytes()))
}

/// The repository URLs a payload names.
#[derive(Debug, Default, PartialEq)]
pub struct PayloadRepo {
    /// `repository.html_url`, `clone_url`, `git_url`, `ssh_url`.
    pub urls: Vec<String>,
}

/// Parses the fields of a push/create/ping payload that routing needs.
/// The body must be a JSON object.
pub fn parse_payload(body: &[u8]) -> Result<PayloadRepo, String> {
    let v: serde_json::Value =
        serde_json::from_slice(body).map_err(|e| format!("body is not JSON: {e}"))?;
    let obj = v.as_object().ok_or("body is not a JSON object")?;
    let mut out = PayloadRepo::default();
    if let Some(repo) = obj.get("repository").and_then(|r| r.as_object()) {
        for k in ["html_url", "clone_url", "git_url", "ssh_url", "url"] {
            if let Some(s) = repo.get(k).and_then(|u| u.as_str()) {
                if !s.is_empty() {
                    out.urls.push(s.to_string());
                }
            }
        }
    }
    Ok(out)
}

/// Maps a git URL to a comparable form: lowercase, no trailing slash or
/// `.git`, and the https, ssh and git forms of the same host/path equal
/// (`git@github.com:o/r.git`, `ssh://git@github.com/o/r`,
/// `https://github.com/o/r` → `github.com/o/r`).
pub fn normalize_url(url: &str) -> String {
    let mut s = url.trim().to_ascii_lowercase();
    while s.ends_with('/') {
        s.pop();
    }
    if let Some(x) = s.strip_suffix(".git") {
        s = x.to_string();
    }
    while s.ends_with('/') {
        s.pop();
    }
    let rest = if let Some(i) = s.find("://") {
        let after = &s[i + 3..];
        // The authority loses its user@ and its :port.
        let (authority, path) = after.split_once('/').unwrap_or((after, ""));
        let host = authority.rsplit('@').next().unwrap_or(authority);
        let host = host.split(':').next().unwrap_or(host);
        if after.contains('/') {
            format!("{host}/{path}")
        } else {
            host.to_string()
        }
    } else if let Some((userhost, path)) = s.split_once(':').filter(|(h, _)| !h.contains('/')) {
        // scp-like: git@github.com:owner/repo
        let host = userhost.rsplit('@').next().unwrap_or(userhost);
        format!("{host}/{}", path.trim_start_matches('/'))
    } else {
        s.clone()
    };
    rest
}

/// All recipes a payload is about that accept webhooks (several recipes
/// may package one upstream).
pub fn route_all(roster: &Roster, payload: &PayloadRepo) -> (Vec<String>, bool) {
    let wanted: Vec<String> = payload.urls.iter().map(|u| normalize_url(u)).collect();
    let mut on = Vec::new();
    let mut any = false;
    for r in roster.recipes.values() {
        let Some(up) = r.upstream.as_ref() else {
            continue;
        };
        if wanted.contains(&normalize_url(&up.git)) {
            any = true;
            if r.watch.github_webhook {
                on.push(r.id.clone());
            }
        }
    }
    (on, any)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn signatures() {
        let body = br#"{"zen":"hi"}"#;
        let good = sign(b"s3cret", body);
        assert!(verify_signature(b"s3cret", body, Some(&good)));
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
    fn url_forms_match() {
        let forms = [
            "https://github.com/madler/zlib",
            "https://github.com/madler/zlib/",
            "https://github.com/Madler/Zlib.git",
            "git@github.com:madler/zlib.git",
            "ssh://git@github.com/madler/zlib",
            "git://github.com/madler/zlib.git",
            "http://github.com/madler/zlib",
        ];
        for f in forms {
            assert_eq!(normalize_url(f), "github.com/madler/zlib", "{f}");
        }
        assert_ne!(
            normalize_url("https://github.com/madler/zlib2"),
            "github.com/madler/zlib"
        );
        assert_eq!(normalize_url("/srv/git/demo.git"), "/srv/git/demo");
        assert_eq!(normalize_url("file:///srv/git/demo"), "/srv/git/demo");
    }

    #[test]
    fn payloads() {
        let p = parse_payload(br#"{"ref":"refs/tags/v1","repository":{"html_url":"https://github.com/a/b","clone_url":"https://github.com/a/b.git"}}"#).unwrap();
        assert_eq!(p.urls.len(), 2);
        assert!(parse_payload(b"not json").is_err());
        assert!(parse_payload(b"[1,2]").is_err());
        assert_eq!(parse_payload(b"{}").unwrap(), PayloadRepo::default());
    }
}
