//! git through libgit2, run in long-lived helper processes: list remote
//! tags, fetch one tag, export its tree. Used by `watch` (polls) and
//! `build` (fetches).

/// Runs the network operations in child processes (`farmhand git-helper`).
pub mod helper;
/// ls-remote, fetch one tag, export its tree, commit time (libgit2, blocking).
pub mod libgit;
