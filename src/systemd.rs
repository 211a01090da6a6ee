//! The systemd notify protocol: readiness, status line, reload, stop and
//! the watchdog. Every helper does nothing when `NOTIFY_SOCKET` is unset and
//! logs (never returns) a failure to send, so systemd integration can never
//! take the daemon down.

use std::sync::Arc;
use std::time::Duration;

use sd_notify::NotifyState;
use tokio_util::sync::CancellationToken;
use tracing::{debug, warn};

use crate::status::Health;

fn send(states: &[NotifyState]) {
    if std::env::var_os("NOTIFY_SOCKET").is_none() {
        return;
    }
    if let Err(e) = sd_notify::notify(false, states) {
        warn!(err = %e, "sd_notify failed");
    }
}

/// `READY=1` with the current status line.
pub fn ready(status: &str) {
    send(&[NotifyState::Ready, NotifyState::Status(status)]);
}

/// `STATUS=...`.
pub fn status(status: &str) {
    send(&[NotifyState::Status(status)]);
}

/// `RELOADING=1` with `MONOTONIC_USEC`, as systemd 253+ requires.
pub fn reloading() {
    match NotifyState::monotonic_usec_now() {
        Ok(now) => send(&[
            NotifyState::Reloading,
            now,
            NotifyState::Status("reloading"),
        ]),
        Err(_) => send(&[NotifyState::Reloading, NotifyState::Status("reloading")]),
    }
}

/// `STOPPING=1`.
pub fn stopping() {
    send(&[NotifyState::Stopping, NotifyState::Status("stopping")]);
}

/// The watchdog interval systemd asked for (`WATCHDOG_USEC`), if any.
pub fn watchdog_interval() -> Option<Duration> {
    let mut usec = 0u64;
    if sd_notify::watchdog_enabled(false, &mut usec) && usec > 0 {
        Some(Duration::from_micros(usec))
    } else {
        None
    }
}

/// Sends `WATCHDOG=1` at half the watchdog interval, only while every loop
/// of the daemon is alive; a wedged loop stops the pings so systemd
/// restarts the service.
pub async fn watchdog(interval: Duration, health: Arc<Health>, cancel: CancellationToken) {
    let mut tick = tokio::time::interval(interval / 2);
    loop {
        tokio::select! {
            _ = cancel.cancelled() => return,
            _ = tick.tick() => match health.check() {
                Ok(()) => send(&[NotifyState::Watchdog]),
                Err(reason) => debug!(reason = %reason, "watchdog ping withheld"),
            },
        }
    }
}
