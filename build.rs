//! Link-time layout of the release executable.
//!
//! The kernel maps an executable's code into a process 64 KiB at a time
//! around every page it touches, so a daemon that runs a few hundred
//! functions scattered over the whole text ends up with nearly all of it
//! resident. The release link therefore places the functions an idle and
//! a working daemon run (`link/hot-text.txt`, written by
//! `bench/hot_text.py`) first, together, and packs the executable's
//! relative relocations (`DT_RELR`, glibc 2.36 and later), which the
//! dynamic loader would otherwise read entry by entry at every start.
//!
//! Both are options of LLD, the linker Rust uses by default for
//! `x86_64-unknown-linux-gnu` since 1.90; with another linker, toolchain
//! or target, or with `FARMHAND_LINK_LAYOUT=0`, the link is left as it is.
//! Debug builds are never touched. A stale order file (after a toolchain
//! or dependency update) only loses the saving: unknown names are ignored.

use std::env;
use std::process::Command;

fn main() {
    println!("cargo:rerun-if-changed=build.rs");
    println!("cargo:rerun-if-changed=link/hot-text.txt");
    println!("cargo:rerun-if-env-changed=FARMHAND_LINK_LAYOUT");
    let order = format!("{}/link/hot-text.txt", env!("CARGO_MANIFEST_DIR"));
    if !wanted() || !std::path::Path::new(&order).is_file() {
        return;
    }
    for arg in [
        format!("-Wl,--symbol-ordering-file={order}"),
        "-Wl,--no-warn-symbol-ordering".to_string(),
        "-Wl,-z,pack-relative-relocs".to_string(),
    ] {
        println!("cargo:rustc-link-arg-bin=farmhand={arg}");
    }
}

/// Whether this build is a release build for x86_64 Linux (glibc) by a
/// rustc that links with LLD unless told otherwise, and nobody told it
/// otherwise.
fn wanted() -> bool {
    let var = |k: &str| env::var(k).unwrap_or_default();
    if var("FARMHAND_LINK_LAYOUT") == "0"
        || var("PROFILE") != "release"
        || var("TARGET") != "x86_64-unknown-linux-gnu"
    {
        return false;
    }
    let flags = var("CARGO_ENCODED_RUSTFLAGS");
    if flags.contains("linker") || flags.contains("link-self-contained") {
        return false;
    }
    let rustc = env::var_os("RUSTC").unwrap_or_else(|| "rustc".into());
    let Ok(out) = Command::new(rustc).arg("-vV").output() else {
        return false;
    };
    let text = String::from_utf8_lossy(&out.stdout);
    let release = text
        .lines()
        .find_map(|l| l.strip_prefix("release: "))
        .unwrap_or("");
    let mut parts = release
        .split(['.', '-'])
        .map(|p| p.parse::<u32>().unwrap_or(0));
    let (major, minor) = (parts.next().unwrap_or(0), parts.next().unwrap_or(0));
    (major, minor) >= (1, 90)
}
