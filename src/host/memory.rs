//! The allocator's settings for a long-running daemon (glibc malloc).
//!
//! glibc gives every thread that allocates its own arena (up to eight per
//! core), and each arena keeps the memory it once held: a daemon whose
//! runtime threads and blocking-pool threads (repository, roster loading,
//! tar, hashing) each touched a few MiB once holds all of it for good. One
//! arena shared by every thread keeps an idle farm of 1,000 recipes about
//! 1 MiB smaller (measured, docs/performance.md); the threads still
//! allocate small blocks from their own caches without taking the lock.
//!
//! Large blocks (reading a 20 MiB `archive.json`, rendering `/status` for
//! 10,000 recipes) are mapped and unmapped on their own above a fixed
//! threshold. By default glibc raises that threshold to the size of the
//! largest block freed, so after reading a large archive every later
//! buffer up to that size would come from, and stay in, the arena.

/// Blocks at least this large are mapped on their own and returned to
/// the kernel when freed.
pub const MMAP_THRESHOLD: usize = 256 * 1024;

/// Sets the allocator up for the daemon: one arena, a fixed mmap
/// threshold. Call before any other thread starts.
#[cfg(all(target_os = "linux", target_env = "gnu"))]
#[allow(unsafe_code)]
pub fn tune() {
    use nix::libc::{mallopt, M_ARENA_MAX, M_MMAP_THRESHOLD};
    // SAFETY: mallopt(3) only changes allocator parameters and is called
    // before the runtime starts any thread; invalid values are refused by
    // glibc (the return value says so), never undefined behaviour.
    unsafe {
        mallopt(M_ARENA_MAX, 1);
        mallopt(M_MMAP_THRESHOLD, MMAP_THRESHOLD as nix::libc::c_int);
    }
}

/// Elsewhere the system allocator's defaults stay.
#[cfg(not(all(target_os = "linux", target_env = "gnu")))]
pub fn tune() {}

/// Returns the allocator's free memory to the kernel (after start-up and
/// reloads, which free a lot at once).
#[cfg(all(target_os = "linux", target_env = "gnu"))]
#[allow(unsafe_code)]
pub fn release() {
    // SAFETY: malloc_trim(3) only releases free memory of the allocator;
    // it takes the arena locks itself and touches no live allocation.
    unsafe {
        nix::libc::malloc_trim(0);
    }
}

/// Elsewhere nothing to do.
#[cfg(not(all(target_os = "linux", target_env = "gnu")))]
pub fn release() {}
