//! A consumer as a queue sees it: where to deliver and how much credit it has.

use std::sync::{Arc, Weak};

use super::credit::Credit;
use super::inbox::Inbox;
use super::Queue;
use crate::name::{ConsumerId, ConsumerTag};

/// Whether deliveries must be acknowledged.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum AckMode {
    /// The delivery counts as acknowledged when sent.
    Auto,
    /// The consumer acknowledges each delivery; unacked ones hold credit.
    Manual,
}

/// Whether a consumer wants a queue to itself.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Exclusivity {
    Shared,
    Exclusive,
}

#[derive(Debug)]
pub struct Consumer {
    pub id: ConsumerId,
    pub tag: ConsumerTag,
    pub ack_mode: AckMode,
    pub exclusivity: Exclusivity,
    /// `x-priority`: higher-priority consumers are served first.
    pub priority: i32,
    pub inbox: Arc<Inbox>,
    /// Per-consumer prefetch window (manual ack only).
    pub prefetch: Arc<Credit>,
    /// A window shared with the other consumers of the same channel (a channel-wide prefetch).
    pub shared: Option<Arc<Credit>>,
}

impl Consumer {
    /// Reserves room for one delivery. On failure returns the credit that was exhausted, after
    /// undoing any partial reservation; undone credits go to `to_wake` for the caller to wake
    /// once it has dropped its lock.
    pub(crate) fn try_reserve(&self, to_wake: &mut Vec<Arc<Credit>>) -> Result<(), Arc<Credit>> {
        let mut taken: Vec<&Arc<Credit>> = Vec::with_capacity(3);
        let credits = [Some(&self.inbox.space), self.manual(&self.prefetch), self.shared_manual()];
        for credit in credits.into_iter().flatten() {
            if credit.try_acquire() {
                taken.push(credit);
                continue;
            }
            for undone in taken {
                undone.undo_acquire();
                to_wake.push(undone.clone());
            }
            return Err(credit.clone());
        }
        Ok(())
    }

    fn manual<'a>(&self, credit: &'a Arc<Credit>) -> Option<&'a Arc<Credit>> {
        (self.ack_mode == AckMode::Manual).then_some(credit)
    }

    fn shared_manual(&self) -> Option<&Arc<Credit>> {
        self.shared.as_ref().filter(|_| self.ack_mode == AckMode::Manual)
    }

    /// Releases the credit of `count` settled (acked, rejected or requeued) deliveries.
    pub fn settle(&self, count: u32) {
        if self.ack_mode == AckMode::Auto {
            return;
        }
        self.prefetch.release(count);
        if let Some(shared) = &self.shared {
            shared.release(count);
        }
    }

    pub(crate) fn wait_for(&self, credit: &Credit, queue: &Weak<Queue>) -> bool {
        credit.wait(queue)
    }
}
