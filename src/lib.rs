//! farmhand: a single-host build-farm daemon.
//!
//! It loads a roster of recipes, learns about new upstream versions by
//! polling git tags or from HMAC-verified webhooks, builds each new
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
//! # Layout
//!
//! Each folder is one part; imports run one way, from the top of this list
//! to the bottom, never back and never in a loop:
//!
//! ```text
//! demo ─> farm ─> watch, serve ─> build, publish ─> git ─> host ─> model
//! ```
//!
//! [`ctl`] stands beside them: a client of the HTTP API that reads the
//! config through [`model`] and the token file through [`host`].
//!
//! * [`model`] imports nothing of the crate; [`host`] only `model`;
//!   [`git`] only `model` and `host`.
//! * [`build`] and [`publish`] never import [`serve`], [`watch`] or [`farm`].
//! * [`serve`] never imports [`build`] or [`publish`]; it reads the farm
//!   through the handles [`farm`] gives it.
//!
//! Start reading at [`farm::daemon`], which wires the pieces together.
#![warn(missing_docs)]

/// One build: script runner, packaging, the peipkg backend.
pub mod build;
/// `farmhand ctl`: a client of the HTTP API.
pub mod ctl;
/// `farmhand demo`: a self-contained farm.
pub mod demo;
/// The running farm: daemon wiring, worker, queue, backoff book, build history.
pub mod farm;
/// git through libgit2 in helper processes: ls-remote, fetch, export.
pub mod git;
/// The host: systemd, logging, loop health, durable files.
pub mod host;
/// Pure data and rules: config, recipes, versions, tags, the build vocabulary.
pub mod model;
/// The repository: index, atomic publish, signing, upload; notifications out.
pub mod publish;
/// HTTP: routes, `/status` and `/metrics` rendering, builds and recipes,
/// logs, the event bus and `/events`, webhooks, the console pages.
pub mod serve;
/// Learning about versions: the poll schedule and every forge's webhooks.
pub mod watch;
