//! HTTP: routing, `/status` and `/metrics` rendering, build history and
//! logs, the event stream, webhooks and the console pages. Talks to the
//! farm only through its handles (the status store with its event bus, the
//! roster snapshot, the poll channel).

/// The documents of `/builds/{id}` and `/recipes/{id}`; JSON or page.
pub mod api;
/// The builds the status store holds, their queries and documents.
pub mod builds;
/// The control API: bearer token, requests to the farm, answers.
pub mod control;
/// The event bus and `GET /events` (Server-Sent Events).
pub mod events;
/// The hyper server and routes.
pub mod http;
/// What keeps clients from exhausting the daemon: the shared webhook body
/// budget, connection and log-reader caps from the descriptor limit.
pub mod limits;
/// Finished build logs: zstd as stored, or decompressed.
pub mod logs;
/// The console: the overview, build and recipe pages, their assets.
pub mod pages;
/// The status store: counters and snapshots the farm updates, rendered as
/// `/status` JSON, `/metrics` and `/builds`.
pub mod status;
