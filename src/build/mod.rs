//! One build: fetch the tag, run the script (process group, timeout, log),
//! package DESTDIR, or the same through the peipkg tools. Publishing is not
//! done here: the farm owns the repository.

/// DESTDIR → deterministic `.tar.zst` per package stanza.
pub mod package;
/// The peipkg backend (peipkg-build / peipkg-repo argv).
pub mod peipkg;
/// Runs one build: fetch, script, process group, timeout, log.
pub mod runner;
/// The bubblewrap sandbox of build scripts.
pub mod sandbox;
