//! HTTP: routing, `/status` and `/metrics` rendering, the console pages,
//! build logs and webhooks. Talks to the farm only through its handles (the status store,
//! the roster snapshot, the poll channel).

/// The control API: bearer token, requests to the farm, answers.
pub mod control;
/// The hyper server and routes.
pub mod http;
/// The console: the overview, build and recipe pages, their assets.
pub mod pages;
/// The status store: counters and snapshots the farm updates, rendered as
/// `/status` JSON, `/metrics` and `/builds`.
pub mod status;
