//! The running farm and the owners of its state: the daemon's wiring
//! (check, once, daemon, reload, shutdown), the worker that runs one build
//! at a time, the queue with its dedup set, the backoff book and the build
//! history; they publish into the status store (and its event bus) that
//! the HTTP server reads.

/// The backoff book: failed (recipe, version) pairs and their next retry, saved in `state.json`.
pub mod backoff;
/// Wires it together: check, once, daemon, reload, shutdown.
pub mod daemon;
/// The build history in `state_dir/history`: start and finish records.
pub mod history;
/// After a build: publish, upload.
pub mod publisher;
/// The deduplicating, fair build queue.
pub mod queue;
/// The build worker: owns queue, backoff book and repository.
pub mod worker;
