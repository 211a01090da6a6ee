//! The systemd notify protocol: readiness, status line, reload, stop and
//! the watchdog. Every helper does nothing when `NOTIFY_SOCKET` is unset and
//! logs (never returns) a failure to send, so systemd integration can never
//! take the daemon down. Also socket activation: the HTTP listener systemd
//! passes (`farmhand.socket`), per sd_listen_fds(3).

use std::sync::Arc;
use std::time::Duration;

use sd_notify::NotifyState;
use tokio_util::sync::CancellationToken;
use tracing::{debug, warn};

use crate::host::health::Health;

/// Sends one notification datagram without ever blocking: when the
/// socket's queue is full the message is dropped (and logged at debug),
/// so a slow or absent reader can never stall the runtime. (The sd-notify
/// crate's sender blocks in that case.)
fn send(states: &[NotifyState]) {
    let Some(path) = std::env::var_os("NOTIFY_SOCKET") else {
        return;
    };
    let mut msg = String::new();
    for s in states {
        msg.push_str(&s.to_string());
        msg.push('\n');
    }
    if let Err(e) = send_to(&path, msg.as_bytes()) {
        if e.kind() == std::io::ErrorKind::WouldBlock {
            debug!(err = %e, "sd_notify message dropped: socket queue full");
        } else {
            warn!(err = %e, "sd_notify failed");
        }
    }
}

fn send_to(path: &std::ffi::OsStr, msg: &[u8]) -> std::io::Result<()> {
    use std::os::linux::net::SocketAddrExt;
    use std::os::unix::ffi::OsStrExt;
    use std::os::unix::net::{SocketAddr, UnixDatagram};
    let sock = UnixDatagram::unbound()?;
    sock.set_nonblocking(true)?;
    let bytes = path.as_bytes();
    let addr = match bytes.first() {
        Some(b'@') => SocketAddr::from_abstract_name(&bytes[1..])?,
        _ => SocketAddr::from_pathname(std::path::Path::new(path))?,
    };
    let n = sock.send_to_addr(msg, &addr)?;
    if n != msg.len() {
        return Err(std::io::Error::new(
            std::io::ErrorKind::WriteZero,
            "short write",
        ));
    }
    Ok(())
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

/// The watchdog interval systemd asked for (`WATCHDOG_USEC`), if any. As
/// sd_watchdog_enabled(3) specifies, a `WATCHDOG_PID` naming another
/// process disables it; an unset one means this process.
pub fn watchdog_interval() -> Option<Duration> {
    let usec: u64 = std::env::var("WATCHDOG_USEC").ok()?.trim().parse().ok()?;
    if let Ok(pid) = std::env::var("WATCHDOG_PID") {
        if pid.trim().parse::<u32>().ok() != Some(std::process::id()) {
            return None;
        }
    }
    (usec > 0).then(|| Duration::from_micros(usec))
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

/// The first descriptor systemd passes (`SD_LISTEN_FDS_START`).
const LISTEN_FDS_START: std::os::fd::RawFd = 3;

/// The HTTP listener passed by socket activation (sd_listen_fds(3)):
/// `Ok(None)` unless `LISTEN_PID` names this process and `LISTEN_FDS` is at
/// least 1. The first passed descriptor must be a listening TCP stream
/// socket (`ListenStream=` in the socket unit); it replaces `[http].addr`.
/// It is made close-on-exec so build scripts never inherit it; further
/// descriptors are ignored. Call once, from within the runtime.
#[allow(unsafe_code)]
pub fn inherited_listener() -> Result<Option<tokio::net::TcpListener>, String> {
    use nix::fcntl::{fcntl, FcntlArg, FdFlag};
    use nix::sys::socket::{getsockopt, sockopt, SockType};
    use std::os::fd::{BorrowedFd, FromRawFd, OwnedFd};

    let Ok(pid) = std::env::var("LISTEN_PID") else {
        return Ok(None);
    };
    if pid.trim().parse::<u32>().ok() != Some(std::process::id()) {
        return Ok(None);
    }
    let n: u32 = match std::env::var("LISTEN_FDS")
        .ok()
        .and_then(|v| v.trim().parse().ok())
    {
        Some(n) if n >= 1 => n,
        _ => return Ok(None),
    };
    // SAFETY: sd_listen_fds(3): with LISTEN_PID naming this process,
    // descriptors 3.. were passed to it by its manager; this borrow only
    // inspects descriptor 3 and ends before ownership is taken below.
    let fd = unsafe { BorrowedFd::borrow_raw(LISTEN_FDS_START) };
    let bad = |why: String| format!("LISTEN_FDS: descriptor 3 {why}");
    let ty =
        getsockopt(&fd, sockopt::SockType).map_err(|e| bad(format!("is not a socket: {e}")))?;
    let listening = getsockopt(&fd, sockopt::AcceptConn).unwrap_or(false);
    if ty != SockType::Stream || !listening {
        return Err(bad(
            "is not a listening stream socket (the socket unit needs ListenStream=)".into(),
        ));
    }
    fcntl(LISTEN_FDS_START, FcntlArg::F_SETFD(FdFlag::FD_CLOEXEC))
        .map_err(|e| bad(format!("cannot be made close-on-exec: {e}")))?;
    // SAFETY: as above; descriptor 3 is a valid socket passed to this
    // process, and this is its only owner (called once).
    let owned = unsafe { OwnedFd::from_raw_fd(LISTEN_FDS_START) };
    let std_listener = std::net::TcpListener::from(owned);
    std_listener
        .local_addr()
        .map_err(|e| bad(format!("is not a TCP socket: {e}")))?;
    std_listener
        .set_nonblocking(true)
        .map_err(|e| bad(format!("cannot be made non-blocking: {e}")))?;
    if n > 1 {
        warn!(
            count = n,
            "systemd passed more than one socket; serving HTTP on the first"
        );
    }
    tokio::net::TcpListener::from_std(std_listener)
        .map_err(|e| bad(e.to_string()))
        .map(Some)
}
