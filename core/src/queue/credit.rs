//! Credit: how many more deliveries a consumer, a shared window or a session inbox can take.
//!
//! A queue that finds a credit exhausted registers itself as a waiter; whoever releases credit
//! later wakes the waiters, which dispatch again. This is how acks, prefetch changes and drained
//! inboxes restart delivery without any polling.

use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::{Arc, Mutex, Weak};

use super::Queue;

/// A counter of units in use against a limit, with the queues waiting for a unit to free up.
#[derive(Debug)]
pub struct Credit {
    /// The most units in use at once; 0 means unlimited.
    limit: AtomicU32,
    used: AtomicU32,
    waiters: Mutex<Vec<Weak<Queue>>>,
}

impl Credit {
    pub fn new(limit: u32) -> Arc<Credit> {
        Arc::new(Credit { limit: AtomicU32::new(limit), used: AtomicU32::new(0), waiters: Mutex::new(Vec::new()) })
    }

    pub fn used(&self) -> u32 {
        self.used.load(Ordering::Acquire)
    }

    pub fn limit(&self) -> u32 {
        self.limit.load(Ordering::Acquire)
    }

    fn has_room(&self) -> bool {
        let limit = self.limit();
        limit == 0 || self.used() < limit
    }

    /// Takes one unit if there is room.
    pub fn try_acquire(&self) -> bool {
        let mut used = self.used.load(Ordering::Acquire);
        loop {
            let limit = self.limit();
            if limit != 0 && used >= limit {
                return false;
            }
            match self.used.compare_exchange_weak(used, used + 1, Ordering::AcqRel, Ordering::Acquire) {
                Ok(_) => return true,
                Err(actual) => used = actual,
            }
        }
    }

    /// Gives back a unit taken by `try_acquire` without waking anyone: for use under a queue's
    /// lock, where waking could re-enter that queue. The caller wakes later (see `wake`).
    pub(crate) fn undo_acquire(&self) {
        self.sub(1);
    }

    /// Gives back `units` and wakes the queues waiting for room.
    pub fn release(&self, units: u32) {
        if units == 0 {
            return;
        }
        self.sub(units);
        self.wake();
    }

    /// Changes the limit, waking waiters if it grew.
    pub fn set_limit(&self, limit: u32) {
        self.limit.store(limit, Ordering::Release);
        self.wake();
    }

    fn sub(&self, units: u32) {
        let previous = self
            .used
            .fetch_update(Ordering::AcqRel, Ordering::Acquire, |used| Some(used.saturating_sub(units)))
            .expect("the update closure always returns Some");
        debug_assert!(previous >= units, "credit released more than it acquired");
    }

    /// Registers `queue` to be woken when room frees up. Returns true if room appeared
    /// meanwhile, in which case the caller should try again instead of waiting.
    pub(crate) fn wait(&self, queue: &Weak<Queue>) -> bool {
        {
            let mut waiters = self.waiters.lock().expect("credit waiters lock poisoned");
            if !waiters.iter().any(|waiter| waiter.ptr_eq(queue)) {
                waiters.push(queue.clone());
            }
        }
        // Checked after registering: a release between our failed acquire and the registration
        // would otherwise be lost.
        self.has_room()
    }

    /// Wakes every waiting queue. Must not be called with a queue's lock held.
    pub(crate) fn wake(&self) {
        let waiters = {
            let mut waiters = self.waiters.lock().expect("credit waiters lock poisoned");
            if waiters.is_empty() {
                return;
            }
            std::mem::take(&mut *waiters)
        };
        for queue in waiters.iter().filter_map(Weak::upgrade) {
            queue.dispatch();
        }
    }
}
