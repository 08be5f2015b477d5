//! The per-queue timer task: expires messages whose TTL passed (so they leave the queue, and
//! reach the dead-letter exchange, even with no consumer) and deletes queues left unused past
//! `x-expires`. Only queues with a TTL or an expiry (or a message carrying one) have a timer.

use std::sync::Arc;

use tokio::time::Instant;

use super::{Queue, TIMER_IDLE};

pub(super) async fn run(queue: Arc<Queue>) {
    while !queue.is_deleted() {
        let wakeup = queue.timer_wakeup.notified();
        tokio::pin!(wakeup);
        wakeup.as_mut().enable();
        let deadline = queue.next_deadline().unwrap_or_else(|| Instant::now() + TIMER_IDLE);
        tokio::select! {
            _ = &mut wakeup => {}
            _ = tokio::time::sleep_until(deadline) => queue.on_timer(),
        }
    }
}
