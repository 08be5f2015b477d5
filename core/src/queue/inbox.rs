//! A session's inbox: where queues put deliveries for one connection's consumers.
//!
//! Pushing never blocks (queues push under their lock); the inbox's bound is enforced by its
//! `space` credit, which a queue must take before pushing a delivery. The session drains the
//! inbox in batches, which releases the space and restarts queues that were waiting for it.

use std::collections::VecDeque;
use std::sync::{Arc, Mutex};

use tokio::sync::Notify;

use super::consumer::Consumer;
use super::credit::Credit;
use super::{Queue, Requeue};
use crate::message::Message;
use crate::name::ConsumerId;

/// One message handed to a consumer.
#[derive(Debug)]
pub struct Delivery {
    /// The consumer it was dispatched to, whose credit it holds.
    pub consumer: Arc<Consumer>,
    /// The queue it came from: acks, rejects and requeues go back to it.
    pub queue: Arc<Queue>,
    /// The message's position in its queue, used to requeue it in place.
    pub sequence: u64,
    pub message: Arc<Message>,
    /// Whether it was delivered before and not acked.
    pub redelivered: bool,
    /// When it expires (its own or its queue's TTL), if it does: an adapter may tell its client
    /// the time left.
    pub expires_at: Option<tokio::time::Instant>,
}

impl Delivery {
    /// Puts a delivery that never reached its client back in its queue, in place and with its
    /// own redelivered flag, then frees the credit it held (in that order, so no other consumer
    /// is served ahead of it).
    pub fn return_to_queue(self) {
        let requeue = Requeue {
            sequence: self.sequence,
            message: self.message,
            redelivered: self.redelivered,
            expires_at: self.expires_at,
        };
        self.queue.requeue([requeue]);
        self.consumer.settle(1);
    }
}

/// Deliveries returned per pass when an inbox is emptied back into its queues.
const RETURN_BATCH: usize = 256;

/// What a queue can tell a session.
#[derive(Debug)]
pub enum InboxItem {
    Delivery(Delivery),
    /// The consumer was cancelled by the broker, because its queue was deleted.
    Cancelled(ConsumerId),
}

#[derive(Debug)]
pub struct Inbox {
    items: Mutex<VecDeque<InboxItem>>,
    notify: Notify,
    /// Room for deliveries not yet taken by the session.
    pub(crate) space: Arc<Credit>,
}

impl Inbox {
    /// An inbox holding at most `capacity` undrained deliveries.
    pub fn new(capacity: u32) -> Arc<Inbox> {
        assert!(capacity > 0, "an inbox must hold at least one delivery");
        Arc::new(Inbox { items: Mutex::new(VecDeque::new()), notify: Notify::new(), space: Credit::new(capacity) })
    }

    pub(crate) fn push(&self, item: InboxItem) {
        self.items.lock().expect("inbox lock poisoned").push_back(item);
        self.notify.notify_one();
    }

    /// Waits until something may be in the inbox.
    pub async fn ready(&self) {
        self.notify.notified().await;
    }

    /// Returns every delivery still in the inbox to its queue, in place and with its own
    /// redelivered flag (the client never saw it), and frees the credit it held: for a session
    /// that is going away.
    pub fn return_undelivered(&self) {
        let mut items = Vec::new();
        while self.drain_into(&mut items, RETURN_BATCH) > 0 {
            for item in items.drain(..) {
                if let InboxItem::Delivery(delivery) = item {
                    delivery.return_to_queue();
                }
            }
        }
    }

    /// Moves up to `max` items into `out` and releases their space. Returns how many moved.
    pub fn drain_into(&self, out: &mut Vec<InboxItem>, max: usize) -> usize {
        let moved = {
            let mut items = self.items.lock().expect("inbox lock poisoned");
            let count = items.len().min(max);
            out.extend(items.drain(..count));
            if !items.is_empty() {
                // More is left: make sure the session comes back for it.
                self.notify.notify_one();
            }
            count
        };
        let deliveries = out[out.len() - moved..].iter().filter(|item| matches!(item, InboxItem::Delivery(_))).count();
        self.space.release(u32::try_from(deliveries).expect("bounded by the inbox capacity"));
        moved
    }
}
