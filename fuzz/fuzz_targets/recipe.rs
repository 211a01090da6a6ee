//! Recipe parsing (`recipe::parse_recipe`, DESIGN.md section 3).
//!
//! Input (after a mode byte) is raw recipe text (with an arbitrary id in
//! one mode), or a fuzzed value put in one slot of a valid recipe. Nothing may panic; an error names the
//! file (or the directory, for a bad id) on one line; an accepted recipe has a valid
//! id, a build script inside its directory, path-safe package names,
//! revision 1 or more, a poll interval of at least a minute and a valid
//! min_version.
#![no_main]

mod common;

use std::path::{Component, Path};
use std::time::Duration;

use farmhand::model::name::is_safe_component;
use farmhand::model::recipe::{parse_recipe, RecipeFile};
use farmhand::model::version::is_valid_upstream;
use libfuzzer_sys::fuzz_target;

const TEMPLATE: &[&str] = &[
    "[meta]",
    "build_script = @",
    "license = @",
    "[[package]]",
    "name = @",
    "architecture = @",
    "files = @",
    "[upstream]",
    "git = @",
    "tag_pattern = @",
    "peios_revision = @",
    "submodules = @",
    "min_version = @",
    "[watch]",
    "github_webhook = @",
    "poll_interval = @",
    "backlog = @",
];

const DEFAULTS: &[&str] = &[
    "\"build.sh\"",
    "\"MIT\"",
    "\"libz\"",
    "\"x86_64\"",
    "[\"usr/**\"]",
    "\"https://github.com/madler/zlib\"",
    "'^v(\\d+\\.\\d+\\.\\d+)$'",
    "1",
    "false",
    "\"1.2.0\"",
    "true",
    "\"2h\"",
    "\"latest\"",
];

fn render(slot: usize, value: &str, quote: bool) -> String {
    common::render(TEMPLATE, DEFAULTS, slot, value, quote)
}

fn valid_id(id: &str) -> bool {
    let b = id.as_bytes();
    !b.is_empty()
        && b.len() <= 128
        && (b[0].is_ascii_lowercase() || b[0].is_ascii_digit())
        && b.iter().all(|c| {
            c.is_ascii_lowercase() || c.is_ascii_digit() || matches!(c, b'.' | b'_' | b'+' | b'-')
        })
}

fn check(id: &str, text: &str, file: RecipeFile) {
    // An id with a path separator or NUL cannot be a directory name.
    if id.contains('/') || id.contains('\0') {
        return;
    }
    let dir = Path::new("/fuzz/recipes").join(id);
    let name = match file {
        RecipeFile::Farmhand => "recipe.toml",
        RecipeFile::Peipkg => "peipkg.toml",
    };
    let path = dir.join(name);
    match parse_recipe(id, &dir, &path, file, text, Duration::from_secs(3600)) {
        Err(e) => {
            assert!(
                e.starts_with(&format!("{}: ", path.display()))
                    || e.starts_with(&format!("{}: ", dir.display())),
                "error does not name the file: {e}"
            );
            assert!(!e.contains('\n'), "error is not one line: {e:?}");
        }
        Ok(r) => {
            assert!(valid_id(id), "accepted id {id:?}");
            assert_eq!(r.id, id);
            let script = Path::new(&r.build_script);
            assert!(!script.is_absolute(), "{:?}", r.build_script);
            assert!(
                script
                    .components()
                    .any(|c| matches!(c, Component::Normal(_))),
                "build_script {:?} names no file",
                r.build_script
            );
            assert!(
                !script
                    .components()
                    .any(|c| matches!(c, Component::ParentDir)),
                "{:?}",
                r.build_script
            );
            assert!(r.script_path().starts_with(&dir));
            for p in &r.packages {
                assert!(is_safe_component(&p.name), "{:?}", p.name);
                assert!(is_safe_component(&p.architecture), "{:?}", p.architecture);
                assert!(!p.files.is_empty());
            }
            assert!(r.watch.poll_interval >= Duration::from_secs(60));
            if let Some(u) = &r.upstream {
                assert!(u.revision >= 1);
                assert!(!u.git.trim().is_empty());
                if let Some(m) = &u.min_version {
                    assert!(is_valid_upstream(m), "{m:?}");
                }
            }
        }
    }
}

fuzz_target!(|data: &[u8]| {
    // First byte: what the rest is. Seeds are `\0` + a recipe file.
    let Some((&mode, rest)) = data.split_first() else {
        return;
    };
    let Ok(rest) = std::str::from_utf8(rest) else {
        return;
    };
    match mode % 4 {
        0 => check("fuzz", rest, RecipeFile::Farmhand),
        1 => check("fuzz", rest, RecipeFile::Peipkg),
        2 => {
            // `id` newline `text`
            let (id, text) = rest.split_once('\n').unwrap_or((rest, ""));
            check(id, text, RecipeFile::Farmhand);
        }
        _ => {
            // slot char, then the value (quoted as a TOML string when the
            // slot is odd, raw otherwise).
            let mut chars = rest.chars();
            let Some(slot) = chars.next() else {
                return;
            };
            let slot = slot as usize;
            check(
                "fuzz",
                &render(slot % DEFAULTS.len(), chars.as_str(), slot % 2 == 1),
                RecipeFile::Farmhand,
            );
        }
    }
});
