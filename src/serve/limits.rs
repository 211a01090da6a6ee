//! What keeps any one client, or all of them together, from exhausting the
//! daemon (DESIGN.md section 18, "No request can exhaust the daemon"):
//!
//! * [`Budget`]: the bytes of webhook bodies being buffered, shared by all
//!   connections; a request reserves before it buffers and gives back when
//!   it ends ([`Reservation`] is an RAII guard over one atomic counter);
//! * [`Caps`]: how many connections and log readers the server takes at
//!   once, derived from the process's file-descriptor limit so that polls,
//!   builds and reloads always find descriptors;
//! * [`raise_nofile_limit`]: the soft descriptor limit raised to the hard
//!   one at start;
//! * [`StallGuard`]: a connection whose client stops reading answers is
//!   closed instead of being held forever.

use std::future::Future;
use std::io;
use std::pin::Pin;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;

use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};

/// The bytes of webhook bodies that may be buffered at once, over all
/// connections together.
pub const BODY_BUDGET: usize = 64 << 20;

/// File descriptors kept free for everything but connections: polls (git
/// helpers and their pipes), builds (log, pipes, sandbox), reloads
/// (recipe files), publishing and the state files.
pub const FD_RESERVE: u64 = 256;

/// Most connections served at once, however high the descriptor limit.
pub const MAX_CONNECTIONS: usize = 4096;

/// Most build logs streamed at once, however high the descriptor limit.
/// Each reader holds one descriptor and a few chunks (about 200 KiB; a
/// compressed log being decompressed also its zstd window).
pub const MAX_LOG_READERS: usize = 128;

/// Fewest connections served at once, however low the descriptor limit.
const MIN_CONNECTIONS: usize = 16;

/// How long a connection may wait for its client to take more of an
/// answer before it is closed.
pub const WRITE_STALL: Duration = Duration::from_secs(60);

/// A byte budget shared by many requests.
#[derive(Debug)]
pub struct Budget {
    used: AtomicUsize,
    limit: usize,
}

impl Budget {
    /// A budget of `limit` bytes, none in use.
    pub fn new(limit: usize) -> Arc<Budget> {
        Arc::new(Budget {
            used: AtomicUsize::new(0),
            limit,
        })
    }

    /// The bytes reserved now.
    pub fn in_use(&self) -> usize {
        self.used.load(Ordering::Acquire)
    }

    /// The budget's size.
    pub fn limit(&self) -> usize {
        self.limit
    }

    /// Reserves `bytes`, or `None` when they do not fit.
    pub fn reserve(self: &Arc<Self>, bytes: usize) -> Option<Reservation> {
        self.take(bytes).then(|| Reservation {
            budget: self.clone(),
            bytes,
        })
    }

    fn take(&self, bytes: usize) -> bool {
        self.used
            .fetch_update(Ordering::AcqRel, Ordering::Acquire, |used| {
                used.checked_add(bytes).filter(|&n| n <= self.limit)
            })
            .is_ok()
    }
}

/// Bytes held from a [`Budget`] until dropped.
#[derive(Debug)]
pub struct Reservation {
    budget: Arc<Budget>,
    bytes: usize,
}

impl Reservation {
    /// The bytes held.
    pub fn bytes(&self) -> usize {
        self.bytes
    }

    /// Holds `bytes` in all (never fewer than now); false, holding what it
    /// held, when the budget cannot give the difference.
    pub fn grow_to(&mut self, bytes: usize) -> bool {
        if bytes <= self.bytes {
            return true;
        }
        if !self.budget.take(bytes - self.bytes) {
            return false;
        }
        self.bytes = bytes;
        true
    }
}

impl Drop for Reservation {
    fn drop(&mut self) {
        self.budget.used.fetch_sub(self.bytes, Ordering::AcqRel);
    }
}

/// How much the HTTP server takes on at once.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Caps {
    /// Connections open at once; more wait in the listen backlog.
    pub connections: usize,
    /// Build logs streamed at once; more are answered 503.
    pub log_readers: usize,
}

impl Caps {
    /// The caps for a process allowed `nofile` descriptors: [`FD_RESERVE`]
    /// stay free for the rest of the daemon; of the others, each
    /// connection takes one and each log reader one more.
    pub fn for_nofile(nofile: u64) -> Caps {
        let room = usize::try_from(nofile.saturating_sub(FD_RESERVE)).unwrap_or(usize::MAX);
        let log_readers = (room / 8).clamp(1, MAX_LOG_READERS);
        let connections = room
            .saturating_sub(log_readers)
            .clamp(MIN_CONNECTIONS, MAX_CONNECTIONS);
        Caps {
            connections,
            log_readers,
        }
    }
}

/// Raises the soft limit on open files to the hard limit; returns the soft
/// limit in force afterwards. Called by [`crate::serve::http::serve`]
/// before it sizes its [`Caps`]; builds still get the limit as found
/// ([`crate::host::rlimit`]).
pub fn raise_nofile_limit() -> io::Result<u64> {
    crate::host::rlimit::raise_nofile()
}

/// True for `accept` errors that say the process or system is out of
/// descriptors or memory: waiting helps, retrying at once does not.
pub fn is_resource_exhaustion(e: &io::Error) -> bool {
    use nix::libc::{EMFILE, ENFILE, ENOBUFS, ENOMEM};
    matches!(e.raw_os_error(), Some(EMFILE | ENFILE | ENOBUFS | ENOMEM))
}

/// The pause after the `n`-th accept failure in a row (from 1): 50 ms,
/// doubling up to 1 s.
pub fn accept_backoff(n: u32) -> Duration {
    Duration::from_millis(50u64 << n.saturating_sub(1).min(5)).min(Duration::from_secs(1))
}

/// A connection's I/O that fails a write (or flush) once the client has
/// taken nothing for `stall`: a client that stops reading an answer
/// cannot hold its connection, nor a log reader, forever.
pub struct StallGuard<T> {
    io: T,
    stall: Duration,
    timer: Option<Pin<Box<tokio::time::Sleep>>>,
    armed: bool,
}

impl<T> StallGuard<T> {
    /// Wraps `io`.
    pub fn new(io: T, stall: Duration) -> StallGuard<T> {
        StallGuard {
            io,
            stall,
            timer: None,
            armed: false,
        }
    }

    /// Called when a write is pending: arms the timer, or fails once it
    /// has run out.
    fn pending<R>(&mut self, cx: &mut Context<'_>) -> Poll<io::Result<R>> {
        let deadline = tokio::time::Instant::now() + self.stall;
        let timer = self
            .timer
            .get_or_insert_with(|| Box::pin(tokio::time::sleep_until(deadline)));
        if !self.armed {
            timer.as_mut().reset(deadline);
            self.armed = true;
        }
        match timer.as_mut().poll(cx) {
            Poll::Ready(()) => Poll::Ready(Err(io::Error::new(
                io::ErrorKind::TimedOut,
                "client took no data",
            ))),
            Poll::Pending => Poll::Pending,
        }
    }

    fn done<R>(&mut self, r: Poll<io::Result<R>>, cx: &mut Context<'_>) -> Poll<io::Result<R>> {
        match r {
            Poll::Pending => self.pending(cx),
            ready => {
                self.armed = false;
                ready
            }
        }
    }
}

impl<T: AsyncRead + Unpin> AsyncRead for StallGuard<T> {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        Pin::new(&mut self.io).poll_read(cx, buf)
    }
}

impl<T: AsyncWrite + Unpin> AsyncWrite for StallGuard<T> {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        let r = Pin::new(&mut self.io).poll_write(cx, buf);
        self.done(r, cx)
    }

    fn poll_write_vectored(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        let r = Pin::new(&mut self.io).poll_write_vectored(cx, bufs);
        self.done(r, cx)
    }

    fn is_write_vectored(&self) -> bool {
        self.io.is_write_vectored()
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        let r = Pin::new(&mut self.io).poll_flush(cx);
        self.done(r, cx)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        let r = Pin::new(&mut self.io).poll_shutdown(cx);
        self.done(r, cx)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn budget_is_shared_and_given_back() {
        let b = Budget::new(100);
        let r1 = b.reserve(60).unwrap();
        assert!(b.reserve(41).is_none(), "over the budget");
        let mut r2 = b.reserve(40).unwrap();
        assert_eq!(b.in_use(), 100);
        assert!(!r2.grow_to(41));
        assert_eq!((r2.bytes(), b.in_use()), (40, 100));
        drop(r1);
        assert_eq!(b.in_use(), 40);
        assert!(r2.grow_to(90));
        assert!(r2.grow_to(10), "never shrinks");
        assert_eq!((r2.bytes(), b.in_use()), (90, 90));
        let r0 = b.reserve(0).unwrap();
        drop(r2);
        drop(r0);
        assert_eq!(b.in_use(), 0);
        assert!(b.reserve(usize::MAX).is_none());
        assert_eq!(b.in_use(), 0);
    }

    #[test]
    fn budget_holds_under_contention() {
        let b = Budget::new(1000);
        let threads: Vec<_> = (0..8)
            .map(|_| {
                let b = b.clone();
                std::thread::spawn(move || {
                    for i in 0..10_000 {
                        if let Some(mut r) = b.reserve(i % 300) {
                            assert!(b.in_use() <= b.limit());
                            let _ = r.grow_to(i % 500);
                            assert!(b.in_use() <= b.limit());
                        }
                    }
                })
            })
            .collect();
        for t in threads {
            t.join().unwrap();
        }
        assert_eq!(b.in_use(), 0);
    }

    #[test]
    fn caps_leave_the_reserve_free() {
        for nofile in [
            0,
            100,
            256,
            300,
            512,
            1024,
            1140,
            4096,
            20_000,
            1 << 20,
            u64::MAX,
        ] {
            let c = Caps::for_nofile(nofile);
            assert!(c.log_readers >= 1 && c.log_readers <= MAX_LOG_READERS);
            assert!(c.connections >= MIN_CONNECTIONS && c.connections <= MAX_CONNECTIONS);
            if nofile >= FD_RESERVE + 2 * MIN_CONNECTIONS as u64 {
                assert!(
                    (c.connections + c.log_readers) as u64 + FD_RESERVE <= nofile,
                    "{nofile}: {c:?}"
                );
            }
        }
        assert_eq!(
            Caps::for_nofile(1024),
            Caps {
                connections: 672,
                log_readers: 96
            }
        );
        assert_eq!(
            Caps::for_nofile(1 << 20),
            Caps {
                connections: MAX_CONNECTIONS,
                log_readers: MAX_LOG_READERS
            }
        );
    }

    #[test]
    fn accept_backoff_grows_and_stays_brief() {
        assert_eq!(accept_backoff(1), Duration::from_millis(50));
        assert_eq!(accept_backoff(2), Duration::from_millis(100));
        assert_eq!(accept_backoff(5), Duration::from_millis(800));
        assert_eq!(accept_backoff(6), Duration::from_secs(1));
        assert_eq!(accept_backoff(u32::MAX), Duration::from_secs(1));
        let emfile = io::Error::from_raw_os_error(nix::libc::EMFILE);
        assert!(is_resource_exhaustion(&emfile));
        assert!(!is_resource_exhaustion(&io::Error::from_raw_os_error(
            nix::libc::ECONNABORTED
        )));
    }

    #[tokio::test]
    async fn a_stalled_write_fails_after_the_stall() {
        use tokio::io::{AsyncReadExt, AsyncWriteExt};
        let stall = Duration::from_millis(300);
        let (a, mut b) = tokio::io::duplex(16);
        let mut g = StallGuard::new(a, stall);
        // Progress, however slow, keeps the connection.
        let mut buf = [0u8; 16];
        for _ in 0..4 {
            g.write_all(&[1u8; 16]).await.unwrap();
            let reader = async {
                tokio::time::sleep(stall * 2 / 3).await;
                b.read_exact(&mut buf).await.unwrap();
            };
            let (w, ()) = tokio::join!(g.write_all(&[1u8; 16]), reader);
            w.unwrap();
            b.read_exact(&mut buf).await.unwrap();
        }
        // Nothing taken for the stall: the write fails.
        g.write_all(&[1u8; 16]).await.unwrap();
        let started = std::time::Instant::now();
        let e = g.write_all(&[1u8; 16]).await.unwrap_err();
        assert_eq!(e.kind(), io::ErrorKind::TimedOut);
        assert!(started.elapsed() >= stall && started.elapsed() < stall * 5);
    }
}
