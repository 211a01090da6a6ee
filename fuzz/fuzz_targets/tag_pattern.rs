//! `tag_pattern` compilation and version composition (DESIGN.md section 3).
//!
//! Either an arbitrary pattern, or a named-style pattern assembled from
//! arbitrary pieces, is compiled and applied to arbitrary tags. Nothing may
//! panic, and every version a tag yields must pass the safe-version rule,
//! checked here independently of the crate: non-empty, at most 128 bytes,
//! first byte an ASCII letter or digit, the rest letters, digits and
//! `.+-~`. A yielded version is a valid package version at revision 1, and
//! in the named style it is exactly `major.minor[.patch][-prerelease]`.
#![no_main]

use arbitrary::Arbitrary;
use farmhand::model::name::is_safe_component;
use farmhand::model::tags::{TagPattern, MAX_UPSTREAM_LEN};
use farmhand::model::version::Version;
use libfuzzer_sys::fuzz_target;

#[derive(Arbitrary, Debug)]
struct Named<'a> {
    prefix: &'a str,
    major: &'a str,
    sep1: &'a str,
    minor: &'a str,
    patch: Option<(&'a str, &'a str)>,
    prerelease: Option<(&'a str, &'a str)>,
    swap: bool,
}

#[derive(Arbitrary, Debug)]
enum Pattern<'a> {
    Raw(&'a str),
    Named(Named<'a>),
}

#[derive(Arbitrary, Debug)]
struct Input<'a> {
    pattern: Pattern<'a>,
    tags: Vec<&'a str>,
}

fn safe_version(v: &str) -> bool {
    let b = v.as_bytes();
    !b.is_empty()
        && b.len() <= 128
        && b[0].is_ascii_alphanumeric()
        && b.iter()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, b'.' | b'+' | b'-' | b'~'))
}

fn assemble(n: &Named) -> String {
    let (a, b) = if n.swap {
        (
            format!("(?P<minor>{})", n.minor),
            format!("(?P<major>{})", n.major),
        )
    } else {
        (
            format!("(?P<major>{})", n.major),
            format!("(?P<minor>{})", n.minor),
        )
    };
    let mut p = format!(
        "^{}{a}{}{b}",
        regex::escape(n.prefix),
        regex::escape(n.sep1)
    );
    if let Some((sep, pat)) = n.patch {
        p.push_str(&format!("(?:{}(?P<patch>{pat}))?", regex::escape(sep)));
    }
    if let Some((sep, pat)) = n.prerelease {
        p.push_str(&format!("(?:{}(?P<prerelease>{pat}))?", regex::escape(sep)));
    }
    p.push('$');
    p
}

fuzz_target!(|input: Input| {
    let pattern = match &input.pattern {
        Pattern::Raw(p) => p.to_string(),
        Pattern::Named(n) => assemble(n),
    };
    // Recipes are written by operators: keep compile time bounded.
    if pattern.len() > 300 {
        return;
    }
    let Ok(tp) = TagPattern::new(&pattern) else {
        return;
    };
    assert_eq!(tp.as_str(), pattern);
    let re = regex::Regex::new(&pattern).expect("TagPattern accepted it, so it compiles");
    for tag in input.tags.iter().take(16) {
        let got = tp.upstream_version(tag);
        assert_eq!(
            got.is_some(),
            re.is_match(tag),
            "match disagrees for {tag:?}"
        );
        let Some(Ok(v)) = got else {
            continue;
        };
        assert!(
            safe_version(&v),
            "{pattern:?} on {tag:?} yielded unsafe {v:?}"
        );
        assert!(v.len() <= MAX_UPSTREAM_LEN);
        let pv = Version::new(&v, 1).expect("a yielded version is a package version");
        assert!(is_safe_component(&pv.to_string()));
        if matches!(input.pattern, Pattern::Named(_)) {
            let caps = re.captures(tag).expect("matched");
            let part = |name: &str| {
                caps.name(name)
                    .map(|m| m.as_str())
                    .filter(|s| !s.is_empty())
            };
            let mut want = format!("{}.{}", &caps["major"], &caps["minor"]);
            if let Some(p) = part("patch") {
                want = format!("{want}.{p}");
            }
            if let Some(p) = part("prerelease") {
                want = format!("{want}-{p}");
            }
            assert_eq!(v, want, "composition of {tag:?} by {pattern:?}");
        }
    }
});
