//! The model: pure data and the rules over it. No I/O, no tokio, and no
//! imports from the rest of the crate; every other part speaks this
//! vocabulary.

/// The build vocabulary: `BuildKey` (recipe@version), `Trigger`, `Phase`, `BuildState`, `Job`.
pub mod build;
/// The config file: types, defaults, validation.
pub mod config;
/// The control vocabulary: requests, outcomes, actions taken.
pub mod control;
/// A build's record, as `/builds` lists it and the build history keeps it.
pub mod history;
/// Path-safe names.
pub mod name;
/// Notifications out: events, their JSON, the state-change rule.
pub mod notify;
/// Package stanzas of a recipe (`[[package]]`).
pub mod package;
/// Recipe files: parsing and validation, the roster type.
pub mod recipe;
/// `tag_pattern` matching and version composition.
pub mod tags;
/// RFC 3339 timestamps.
pub mod time;
/// Version parsing and ordering.
pub mod version;
