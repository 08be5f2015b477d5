//! What waits to be written to one client: replies and pushed messages, bounded in entries and
//! in bytes. Replies wait for room (the client is not reading, so its own commands stall);
//! pushes come from broker threads and never wait: a subscriber too slow for its outbox is
//! disconnected, as Redis's `client-output-buffer-limit pubsub` does.

use std::net::{Shutdown, TcpStream};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::mpsc::{SyncSender, TrySendError};
use std::sync::{Arc, Mutex};

#[derive(Clone)]
pub struct Outbox {
    sender: SyncSender<Vec<u8>>,
    /// Bytes handed to the writer and not yet written.
    queued_bytes: Arc<AtomicUsize>,
    /// The client's socket, shared (one file descriptor) to close it from any thread.
    socket: Arc<TcpStream>,
    bytes_max: usize,
}

impl Outbox {
    pub fn new(
        sender: SyncSender<Vec<u8>>,
        queued_bytes: Arc<AtomicUsize>,
        socket: Arc<TcpStream>,
        bytes_max: usize,
    ) -> Outbox {
        Outbox { sender, queued_bytes, socket, bytes_max }
    }

    pub fn bytes_max(&self) -> usize {
        self.bytes_max
    }

    /// Queues a reply, waiting for room.
    pub fn send(&self, reply: Vec<u8>) {
        if reply.is_empty() {
            return;
        }
        let length = reply.len();
        self.queued_bytes.fetch_add(length, Ordering::SeqCst);
        if self.sender.send(reply).is_err() {
            self.queued_bytes.fetch_sub(length, Ordering::SeqCst);
        }
    }

    /// Queues without waiting; false (and the client disconnected) when it is over its bounds.
    pub fn push(&self, message: Vec<u8>) -> bool {
        let length = message.len();
        if self.queued_bytes.load(Ordering::SeqCst) + length > self.bytes_max {
            self.disconnect();
            return false;
        }
        self.queued_bytes.fetch_add(length, Ordering::SeqCst);
        match self.sender.try_send(message) {
            Ok(()) => true,
            Err(TrySendError::Full(_)) => {
                self.queued_bytes.fetch_sub(length, Ordering::SeqCst);
                self.disconnect();
                false
            }
            Err(TrySendError::Disconnected(_)) => {
                self.queued_bytes.fetch_sub(length, Ordering::SeqCst);
                false
            }
        }
    }

    pub fn disconnect(&self) {
        let _ = self.socket.shutdown(Shutdown::Both);
    }
}

/// Where a subscription's pushes go, as it moves from made to confirmed to ended.
pub enum Stage {
    /// Made in the broker, not yet confirmed to the client: pushes wait here (bytes counted),
    /// so none overtakes the confirmation.
    Holding {
        pushes: Vec<Vec<u8>>,
        bytes: usize,
    },
    Live,
    /// Unsubscribed: late deliveries (already on their way from the broker) are dropped, so none
    /// lands after the unsubscribe reply.
    Ended,
}

pub type SharedStage = Arc<Mutex<Stage>>;

pub fn new_stage() -> SharedStage {
    Arc::new(Mutex::new(Stage::Holding { pushes: Vec::new(), bytes: 0 }))
}

pub fn lock(stage: &SharedStage) -> std::sync::MutexGuard<'_, Stage> {
    stage.lock().unwrap_or_else(|poisoned| poisoned.into_inner())
}

/// Hands a push to its subscription's stage: held, queued, or dropped.
pub fn deliver(stage: &SharedStage, outbox: &Outbox, push: Vec<u8>) {
    let mut stage = lock(stage);
    match &mut *stage {
        Stage::Ended => {}
        Stage::Holding { pushes, bytes } => {
            if *bytes + push.len() > outbox.bytes_max() {
                outbox.disconnect();
            } else {
                *bytes += push.len();
                pushes.push(push);
            }
        }
        Stage::Live => {
            outbox.push(push);
        }
    }
}

/// Confirms a subscription: its confirmation, then what it held, then it goes live.
pub fn confirm(stage: &SharedStage, outbox: &Outbox, confirmation: Vec<u8>) -> bool {
    let mut stage = lock(stage);
    let held = match std::mem::replace(&mut *stage, Stage::Live) {
        Stage::Holding { pushes, .. } => pushes,
        Stage::Live | Stage::Ended => Vec::new(),
    };
    outbox.push(confirmation) && held.into_iter().all(|push| outbox.push(push))
}

/// Ends a subscription: no push is queued after this returns.
pub fn end(stage: &SharedStage) {
    *lock(stage) = Stage::Ended;
}
