//! What keeps any one client, or all of them together, from exhausting the
//! daemon (DESIGN.md section 18, "No request can exhaust the daemon"):
//!
//! * [`Budget`]: the bytes of webhook bodies being buffered, shared by all
//!   connections; a request reserves before it buffers and gives back when
//!   it ends ([`Reservation`] is an RAII guard over one atomic counter);
//! * [`MAX_LOG_READERS`]: build logs streamed at once.

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;

/// The bytes of webhook bodies that may be buffered at once, over all
/// connections together.
pub const BODY_BUDGET: usize = 64 << 20;

/// Most build logs streamed at once. Each reader holds one descriptor and
/// a few chunks (about 200 KiB; a compressed log being decompressed also
/// its zstd window).
pub const MAX_LOG_READERS: usize = 128;

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
}
