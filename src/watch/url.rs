//! Repository URLs as people write them, reduced to one comparable form so
//! that a webhook's URLs can be matched with a recipe's `[upstream].git`.
//!
//! `https://github.com/Owner/Repo.git`, `git@github.com:owner/repo`,
//! `ssh://git@github.com:22/owner/repo/` and `git://github.com/owner/repo`
//! all become `github.com/owner/repo`: the scheme, any user and port, a
//! query or fragment, a `.git` suffix, repeated and trailing slashes and
//! letter case are dropped. Local paths (`/srv/git/demo.git`,
//! `file:///srv/git/demo`) keep their leading slash and no host.

/// Maps a git URL to its comparable form (see the module documentation).
/// Never panics; any string maps to something.
pub fn normalize_url(url: &str) -> String {
    let s = url.trim().to_ascii_lowercase();
    let (host, path, absolute) = if let Some(i) = s.find("://") {
        let after = &s[i + 3..];
        let after = after.split(['?', '#']).next().unwrap_or("");
        let (authority, path) = match after.find('/') {
            Some(j) => after.split_at(j),
            None => (after, ""),
        };
        (host_of(authority), path, true)
    } else if let Some((userhost, path)) = scp_like(&s) {
        (host_of(userhost), path, true)
    } else {
        ("", s.as_str(), s.starts_with('/'))
    };
    let mut segments: Vec<&str> = path.split('/').filter(|p| !p.is_empty()).collect();
    if let Some(last) = segments.last_mut() {
        if let Some(stem) = last.strip_suffix(".git").filter(|s| !s.is_empty()) {
            *last = stem;
        }
    }
    let joined = segments.join("/");
    match (host.is_empty(), joined.is_empty()) {
        (false, true) => host.to_string(),
        (false, false) => format!("{host}/{joined}"),
        (true, _) if absolute => format!("/{joined}"),
        (true, _) => joined,
    }
}

/// The host of an authority (`user:pass@host:port`, `[::1]:22`), without
/// user and port.
fn host_of(authority: &str) -> &str {
    let hostport = authority.rsplit('@').next().unwrap_or(authority);
    if hostport.starts_with('[') {
        return match hostport.find(']') {
            Some(end) => &hostport[..=end],
            None => hostport,
        };
    }
    hostport.split(':').next().unwrap_or(hostport)
}

/// git's scp-like syntax, `[user@]host:path`: recognised only when no
/// slash comes before the first colon (git's own rule), so `/srv/a:b` stays
/// a path.
fn scp_like(s: &str) -> Option<(&str, &str)> {
    let (userhost, path) = s.split_once(':')?;
    if userhost.is_empty() || userhost.contains('/') {
        return None;
    }
    Some((userhost, path))
}

/// The repository URLs a payload names.
#[derive(Debug, Default, PartialEq)]
pub struct PayloadRepo {
    /// Every URL field the forge fills in, non-empty strings only.
    pub urls: Vec<String>,
}

/// The body as a JSON object; any other body is refused with a message
/// starting `body is not`.
pub fn json_object(body: &[u8]) -> Result<serde_json::Map<String, serde_json::Value>, String> {
    let v: serde_json::Value =
        serde_json::from_slice(body).map_err(|e| format!("body is not JSON: {e}"))?;
    match v {
        serde_json::Value::Object(o) => Ok(o),
        _ => Err("body is not a JSON object".into()),
    }
}

/// The non-empty strings at `keys` of the object at `path` (each step an
/// object key) under `root`. Missing objects and non-string values are
/// skipped.
pub fn strings_at(
    root: &serde_json::Map<String, serde_json::Value>,
    path: &[&str],
    keys: &[&str],
) -> Vec<String> {
    let mut obj = Some(root);
    for step in path {
        obj = obj.and_then(|o| o.get(*step)).and_then(|v| v.as_object());
    }
    let Some(obj) = obj else {
        return Vec::new();
    };
    keys.iter()
        .filter_map(|k| obj.get(*k).and_then(|v| v.as_str()))
        .filter(|s| !s.is_empty())
        .map(str::to_string)
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    /// (a, b, whether they name the same repository).
    const PAIRS: &[(&str, &str, bool)] = &[
        // Schemes.
        (
            "https://github.com/madler/zlib",
            "http://github.com/madler/zlib",
            true,
        ),
        (
            "https://github.com/madler/zlib",
            "git://github.com/madler/zlib",
            true,
        ),
        (
            "https://github.com/madler/zlib",
            "ssh://git@github.com/madler/zlib",
            true,
        ),
        (
            "https://github.com/madler/zlib",
            "git+ssh://git@github.com/madler/zlib",
            true,
        ),
        // scp-like.
        (
            "https://github.com/madler/zlib",
            "git@github.com:madler/zlib.git",
            true,
        ),
        (
            "https://github.com/madler/zlib",
            "github.com:madler/zlib",
            true,
        ),
        (
            "https://github.com/madler/zlib",
            "git@github.com:/madler/zlib",
            true,
        ),
        // Ports and users.
        (
            "https://gitlab.example.org/g/p",
            "ssh://git@gitlab.example.org:22/g/p",
            true,
        ),
        (
            "https://gitea.example.org/o/r",
            "ssh://gitea@gitea.example.org:2222/o/r.git",
            true,
        ),
        (
            "https://gitea.example.org/o/r",
            "http://gitea.example.org:3000/o/r.git",
            true,
        ),
        (
            "https://bitbucket.org/owner/repo",
            "https://alice@bitbucket.org/owner/repo.git",
            true,
        ),
        (
            "https://github.com/o/r",
            "https://user:token@github.com/o/r",
            true,
        ),
        // Suffixes and slashes.
        (
            "https://github.com/madler/zlib",
            "https://github.com/madler/zlib.git",
            true,
        ),
        (
            "https://github.com/madler/zlib",
            "https://github.com/madler/zlib/",
            true,
        ),
        (
            "https://github.com/madler/zlib",
            "https://github.com/madler/zlib.git/",
            true,
        ),
        (
            "https://github.com/madler/zlib",
            "https://github.com//madler//zlib",
            true,
        ),
        (
            "https://github.com/madler/zlib",
            "  https://github.com/madler/zlib  ",
            true,
        ),
        (
            "https://github.com/madler/zlib",
            "https://github.com/madler/zlib?tab=readme#top",
            true,
        ),
        // Letter case.
        (
            "https://github.com/madler/zlib",
            "HTTPS://GitHub.com/Madler/ZLib.git",
            true,
        ),
        (
            "git@GITHUB.COM:Madler/Zlib.git",
            "https://github.com/madler/zlib",
            true,
        ),
        // Subgroups.
        (
            "https://gitlab.com/group/sub/project",
            "git@gitlab.com:group/sub/project.git",
            true,
        ),
        // IPv6 and local hosts.
        ("ssh://git@[::1]:2222/o/r.git", "http://[::1]/o/r", true),
        ("git://127.0.0.1:9418/up.git", "https://127.0.0.1/up", true),
        // Local paths.
        ("/srv/git/demo.git", "/srv/git/demo", true),
        ("/srv/git/demo", "file:///srv/git/demo", true),
        ("/srv/git/demo/", "file:///srv/git/demo.git", true),
        // Deliberately different.
        (
            "https://github.com/owner/repo",
            "https://github.com/owner/repo-extra",
            false,
        ),
        (
            "https://github.com/owner/repo",
            "https://github.com/owner/rep",
            false,
        ),
        (
            "https://github.com/owner/repo",
            "https://gitlab.com/owner/repo",
            false,
        ),
        (
            "https://github.com/owner/repo",
            "git@gitlab.com:owner/repo.git",
            false,
        ),
        (
            "https://github.com/owner/repo",
            "https://github.com/other/repo",
            false,
        ),
        (
            "https://github.com/owner/repo",
            "https://github.com/owner",
            false,
        ),
        (
            "https://github.com/owner/repo",
            "https://github.com/owner/repo/sub",
            false,
        ),
        (
            "https://gitlab.com/group/project",
            "https://gitlab.com/group/sub/project",
            false,
        ),
        (
            "https://github.com/owner/repo",
            "https://github.com.evil.org/owner/repo",
            false,
        ),
        (
            "https://github.com/owner/repo",
            "https://evil.org/github.com/owner/repo",
            false,
        ),
        ("/srv/git/demo", "/srv/git/demo2", false),
        ("/srv/git/demo", "/srv/other/demo", false),
        ("/srv/a:b", "srv/a:b", false),
        (
            "https://github.com/owner/repo.git.git",
            "https://github.com/owner/repo",
            false,
        ),
    ];

    #[test]
    fn url_pairs() {
        assert!(PAIRS.len() >= 30);
        let mut wrong = Vec::new();
        for (a, b, same) in PAIRS {
            let (na, nb) = (normalize_url(a), normalize_url(b));
            if (na == nb) != *same {
                wrong.push(format!(
                    "{a:?} -> {na:?} vs {b:?} -> {nb:?}: want same = {same}"
                ));
            }
        }
        assert!(wrong.is_empty(), "{}", wrong.join("\n"));
    }

    #[test]
    fn forms() {
        for (url, want) in [
            (
                "https://github.com/madler/zlib.git",
                "github.com/madler/zlib",
            ),
            ("git@github.com:madler/zlib.git", "github.com/madler/zlib"),
            ("ssh://git@[::1]:22/o/r", "[::1]/o/r"),
            ("/srv/git/demo.git", "/srv/git/demo"),
            ("file:///srv/git/demo", "/srv/git/demo"),
            ("https://github.com", "github.com"),
            ("", ""),
            ("/", "/"),
            (":", ":"),
            ("https://", "/"),
            ("a/.git", "a/.git"),
        ] {
            assert_eq!(normalize_url(url), want, "{url:?}");
        }
    }
}
