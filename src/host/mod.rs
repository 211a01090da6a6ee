//! The host: systemd (notify, watchdog, socket activation), logging, the
//! loops' health, and durable file operations.

/// Atomic file replacement and durable renames.
pub mod fs;
/// Heartbeats of the daemon's loops, read by `/healthz` and the watchdog.
pub mod health;
/// The signing key and control token files.
pub mod keys;
/// tracing setup: logfmt, json, journald.
pub mod logging;
/// The allocator's settings (one arena, a fixed mmap threshold).
pub mod memory;
/// The limit on open files: raised for the daemon, as found for builds.
pub mod rlimit;
/// sd-notify, the watchdog and socket activation.
pub mod systemd;
