//! Names that become path components.

/// True when `s` is safe to use as a single path component: non-empty,
/// starts with an ASCII letter or digit, and holds only ASCII letters,
/// digits and `._+-~`. Tags, versions, recipe ids and package names are
/// checked with this before they reach a path, so none can escape the
/// directory they are joined to.
pub fn is_safe_component(s: &str) -> bool {
    let mut chars = s.chars();
    match chars.next() {
        Some(c) if c.is_ascii_alphanumeric() => {}
        _ => return false,
    }
    chars.all(|c| c.is_ascii_alphanumeric() || matches!(c, '.' | '_' | '+' | '-' | '~'))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn safe_components() {
        for ok in ["libz", "1.3.2-1", "a+b~c_d.e", "0"] {
            assert!(is_safe_component(ok), "{ok}");
        }
        for bad in [
            "", ".", "..", "../x", "a/b", ".hidden", "-x", "v1;rm", "a b", "é",
        ] {
            assert!(!is_safe_component(bad), "{bad}");
        }
    }
}
