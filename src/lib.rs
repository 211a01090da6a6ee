//! farmhand: a single-host build-farm daemon.
//!
//! It loads a roster of recipes, learns about new upstream versions by
//! polling git tags or from HMAC-verified GitHub webhooks, builds each new
//! version one at a time with exponential backoff on failure, and publishes
//! the results as a package repository with a hash-pinned, optionally
//! signed index.
//!
//! ```text
//!  roster ──> poller (per-recipe timers, bounded concurrency) ─┐
//!  webhook ──> "poll this recipe now" ─────────────────────────┤
//!                                                              v
//!          triggers (recipe, tag, version) ──> dedup + backoff filter ──> queue
//!                                                                           │ one at a time
//!    index <── publish <── package DESTDIR <── run build script <── fetch tag ┘
//!      └──> upload (rclone two-pass | command)
//! ```
//!
//! Start reading at [`daemon`], which wires the pieces together.
#![warn(missing_docs)]

/// Runs one build: fetch, script, process group, timeout, log.
pub mod builder;
/// The config file: types, defaults, validation.
pub mod config;
/// Wires it together: check, once, daemon, reload, shutdown.
pub mod daemon;
/// `farmhand demo`: a self-contained farm.
pub mod demo;
/// Atomic file replacement and path-safe names.
pub mod fsutil;
/// ls-remote, fetch one tag, export its tree, commit time (libgit2).
pub mod git;
/// Runs git's network operations in a child process (`farmhand git-helper`).
pub mod git_process;
/// The hyper server and routes.
pub mod http;
/// tracing setup: logfmt, json, journald.
pub mod logging;
/// DESTDIR → deterministic .tar.zst per package stanza.
pub mod package;
/// The peipkg backend (peipkg-build / peipkg-repo argv).
pub mod peipkg;
/// Per-recipe poll schedule with bounded concurrency.
pub mod poller;
/// The deduplicating, fair build queue and the backoff book.
pub mod queue;
/// Recipe files and the roster.
pub mod recipe;
/// Repository state: index in memory, atomic publish, signing.
pub mod repo;
/// Counters, snapshots, JSON and Prometheus rendering.
pub mod status;
/// sd-notify and the watchdog.
pub mod systemd;
/// tag_pattern matching and version composition.
pub mod tags;
/// rclone / command upload.
pub mod upload;
/// Version parsing and ordering.
pub mod version;
/// GitHub webhook signature check, payload parsing, routing.
pub mod webhook;
/// The build worker: owns queue, backoff book and repository.
pub mod worker;
