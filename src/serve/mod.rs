//! HTTP: routing, `/status` and `/metrics` rendering, build logs and
//! webhooks. Talks to the farm only through its handles (the status store,
//! the roster snapshot, the poll channel).

/// The hyper server and routes.
pub mod http;
