//! git through libgit2, run in a short-lived helper process: list remote
//! tags, fetch one tag, export its tree. Used by `watch` (polls) and
//! `build` (fetches).

/// Runs the network operations in a child process (`farmhand git-helper`).
pub mod helper;
/// ls-remote, fetch one tag, export its tree, commit time (libgit2, blocking).
pub mod libgit;
