//! The console's stylesheet and script, embedded in the binary and served
//! under `/assets/` with their content hash in the name, so a browser may
//! cache them for a year and still never runs a stale script after an
//! upgrade. The hash is computed once, on first use.

use std::sync::LazyLock;

use sha2::{Digest, Sha256};

/// One embedded file.
pub struct Asset {
    /// Its URL path, `/assets/<stem>.<hash>.<ext>`.
    pub path: String,
    /// Its bytes.
    pub body: &'static [u8],
    /// Its `Content-Type`.
    pub content_type: &'static str,
}

impl Asset {
    fn new(stem: &str, ext: &str, body: &'static [u8], content_type: &'static str) -> Asset {
        let hash = hex::encode(Sha256::digest(body));
        Asset {
            path: format!("/assets/{stem}.{}.{ext}", &hash[..16]),
            body,
            content_type,
        }
    }
}

static CSS: LazyLock<Asset> = LazyLock::new(|| {
    Asset::new(
        "console",
        "css",
        include_bytes!("../../../assets/console.css"),
        "text/css; charset=utf-8",
    )
});

static JS: LazyLock<Asset> = LazyLock::new(|| {
    Asset::new(
        "console",
        "js",
        include_bytes!("../../../assets/console.js"),
        "text/javascript; charset=utf-8",
    )
});

/// The stylesheet's URL path.
pub fn css_url() -> &'static str {
    &CSS.path
}

/// The script's URL path.
pub fn js_url() -> &'static str {
    &JS.path
}

/// The asset served at `path`, if any (only the current hashed names).
pub fn get(path: &str) -> Option<&'static Asset> {
    [&*CSS, &*JS].into_iter().find(|a| a.path == path)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn assets_have_hashed_names() {
        assert!(css_url().starts_with("/assets/console."));
        assert!(css_url().ends_with(".css"));
        assert_eq!(
            css_url().len(),
            "/assets/console.".len() + 16 + ".css".len()
        );
        assert!(get(css_url()).is_some());
        assert!(get(js_url()).is_some());
        assert!(get("/assets/console.css").is_none());
        assert!(get("/assets/../Cargo.toml").is_none());
    }
}
