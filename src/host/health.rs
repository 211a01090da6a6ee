//! Liveness of the daemon's loops, read by `/healthz` and the systemd
//! watchdog.

use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

/// Liveness of the daemon's loops: each loop beats at least every
/// [`Health::BEAT`]; one that has not beaten for [`Health::STALE`] is wedged.
pub struct Health {
    origin: Instant,
    beats: [AtomicU64; 2],
}

/// The loops whose liveness `/healthz` and the watchdog report.
#[derive(Debug, Clone, Copy)]
pub enum Loop {
    /// The poll scheduler.
    Scheduler = 0,
    /// The build worker.
    Worker = 1,
}

impl Loop {
    fn name(self) -> &'static str {
        match self {
            Loop::Scheduler => "scheduler",
            Loop::Worker => "build worker",
        }
    }
}

impl Default for Health {
    fn default() -> Self {
        Health {
            origin: Instant::now(),
            beats: [AtomicU64::new(0), AtomicU64::new(0)],
        }
    }
}

impl Health {
    /// How often loops beat.
    pub const BEAT: Duration = Duration::from_secs(1);
    /// When a loop counts as wedged.
    pub const STALE: Duration = Duration::from_secs(10);

    /// Records that `l` is alive.
    pub fn beat(&self, l: Loop) {
        self.beats[l as usize].store(self.origin.elapsed().as_millis() as u64, Ordering::Relaxed);
    }

    /// `Ok` when every loop beat recently, else the reason.
    pub fn check(&self) -> Result<(), String> {
        let now = self.origin.elapsed().as_millis() as u64;
        for l in [Loop::Scheduler, Loop::Worker] {
            let last = self.beats[l as usize].load(Ordering::Relaxed);
            let age = now.saturating_sub(last);
            if age > Self::STALE.as_millis() as u64 {
                return Err(format!("{} loop has not run for {}s", l.name(), age / 1000));
            }
        }
        Ok(())
    }
}
