//! Version parsing and ordering (DESIGN.md section 4).
//!
//! Input: up to three strings separated by newlines. Checks that parsing
//! never panics, that a parsed version prints back exactly as written and
//! re-parses to an equal version, and that both `compare_upstream` (on any
//! strings) and `Version`'s ordering are reflexive, antisymmetric and
//! transitive on every ordering of the triple.
#![no_main]

use std::cmp::Ordering;

use farmhand::model::version::{compare_upstream, is_valid_upstream, Version};
use libfuzzer_sys::fuzz_target;

fn check_order<T: std::fmt::Debug>(items: &[T], cmp: impl Fn(&T, &T) -> Ordering) {
    for x in items {
        assert_eq!(cmp(x, x), Ordering::Equal, "not reflexive: {x:?}");
        for y in items {
            assert_eq!(
                cmp(x, y),
                cmp(y, x).reverse(),
                "not antisymmetric: {x:?} {y:?}"
            );
            for z in items {
                if cmp(x, y).is_le() && cmp(y, z).is_le() {
                    assert!(cmp(x, z).is_le(), "not transitive: {x:?} <= {y:?} <= {z:?}");
                }
                if cmp(x, y).is_eq() && cmp(y, z).is_eq() {
                    assert!(
                        cmp(x, z).is_eq(),
                        "equality not transitive: {x:?} {y:?} {z:?}"
                    );
                }
            }
        }
    }
}

fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    let parts: Vec<&str> = text.splitn(3, '\n').collect();

    check_order(&parts, |a, b| compare_upstream(a, b));

    let mut parsed = Vec::new();
    for p in &parts {
        let Ok(v) = Version::parse(p) else {
            continue;
        };
        let shown = v.to_string();
        assert_eq!(&shown, p, "Display must reproduce the parsed text");
        let again = Version::parse(&shown).expect("a printed version parses");
        assert_eq!(again.cmp(&v), Ordering::Equal);
        assert!(is_valid_upstream(v.upstream()), "{p:?}");
        assert!(v.revision() >= 1, "{p:?}");
        // Version::new agrees with parse for epoch-less versions.
        if v.epoch() == 0 && !p.contains(':') {
            let built = Version::new(v.upstream(), v.revision()).expect("parts rebuild");
            assert_eq!(built.to_string(), shown);
        }
        parsed.push(v);
    }
    check_order(&parsed, |a, b| a.cmp(b));
    for a in &parsed {
        for b in &parsed {
            assert_eq!(a == b, a.cmp(b).is_eq());
            assert_eq!(a.partial_cmp(b), Some(a.cmp(b)));
            // Same epoch and revision: the order is the upstream order.
            if a.epoch() == b.epoch() && a.revision() == b.revision() {
                assert_eq!(a.cmp(b), compare_upstream(a.upstream(), b.upstream()));
            }
        }
    }
});
