//! Queues: FIFO message stores that dispatch to consumers round-robin, within their credit.
//!
//! A queue is a mutex-guarded state machine rather than an actor task: publishers enqueue and
//! consumers' sessions settle on their own tasks, and each operation is a short critical
//! section with no await inside. This keeps the publish path free of channel hops and lets
//! request/reply operations (declare, purge, get) answer synchronously. Different queues never
//! share a lock, so cross-queue work runs in parallel.
//!
//! # Layout
//! - `consumer`: a consumer's delivery target and credit.
//! - `credit`: counters with waiters, used for prefetch and inbox room.
//! - `inbox`: a session's bounded inbox of deliveries.

mod consumer;
mod credit;
mod inbox;

use std::collections::VecDeque;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, Weak};

use tokio::sync::Notify;

pub use consumer::{AckMode, Consumer, Exclusivity};
pub use credit::Credit;
pub use inbox::{Delivery, Inbox, InboxItem};

use crate::error::{Error, Result};
use crate::message::Message;
use crate::name::{ConnectionId, ConsumerId, ExchangeName, QueueName, VhostName};
use crate::topic::BindingKey;
use crate::value::Table;

/// Whether a queue survives a broker restart.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Durability {
    Durable,
    Transient,
}

/// How a queue was declared; compared on redeclare.
#[derive(Clone, Debug)]
pub struct QueueOptions {
    pub durability: Durability,
    /// The connection that owns an exclusive queue.
    pub exclusive_owner: Option<ConnectionId>,
    /// Deleted when its last consumer goes, once it has had one.
    pub auto_delete: bool,
    pub arguments: Table,
}

/// A message waiting in a queue.
#[derive(Debug)]
struct Ready {
    sequence: u64,
    message: Arc<Message>,
    redelivered: bool,
}

/// A binding that points at this queue, remembered so deleting the queue can remove it.
#[derive(Clone, Debug)]
pub struct BindingRecord {
    pub exchange: ExchangeName,
    pub key: BindingKey,
    pub arguments: Table,
}

#[derive(Debug, Default)]
struct State {
    ready: VecDeque<Ready>,
    /// In round-robin order: the front gets the next message.
    consumers: VecDeque<Arc<Consumer>>,
    next_sequence: u64,
    had_consumer: bool,
    bindings: Vec<BindingRecord>,
}

/// What `Queue::get` found.
#[derive(Debug)]
pub struct Got {
    pub sequence: u64,
    pub message: Arc<Message>,
    pub redelivered: bool,
    /// Messages still ready after this one.
    pub remaining: usize,
}

#[derive(Debug)]
pub struct Queue {
    name: QueueName,
    vhost: VhostName,
    options: QueueOptions,
    state: Mutex<State>,
    /// Itself, for registering as a credit waiter.
    this: Weak<Queue>,
    deleted: AtomicBool,
    /// Bytes of ready message bodies, read without the lock by publishers checking for room.
    ready_bytes: AtomicUsize,
    /// Above this many ready bytes, publishers wait (backpressure); 0 means no bound.
    ready_bytes_max: usize,
    /// Signalled when ready bytes fall back under half the bound.
    room: Notify,
}

impl Queue {
    pub(crate) fn new(
        name: QueueName,
        vhost: VhostName,
        options: QueueOptions,
        ready_bytes_max: usize,
    ) -> Arc<Queue> {
        Arc::new_cyclic(|this| Queue {
            name,
            vhost,
            options,
            state: Mutex::new(State::default()),
            this: this.clone(),
            deleted: AtomicBool::new(false),
            ready_bytes: AtomicUsize::new(0),
            ready_bytes_max,
            room: Notify::new(),
        })
    }

    pub fn name(&self) -> &QueueName {
        &self.name
    }

    pub fn options(&self) -> &QueueOptions {
        &self.options
    }

    pub fn is_deleted(&self) -> bool {
        self.deleted.load(Ordering::Acquire)
    }

    fn lock(&self) -> MutexGuard<'_, State> {
        self.state.lock().expect("queue lock poisoned")
    }

    /// Checks that `connection` may use this queue.
    pub fn check_access(&self, connection: ConnectionId) -> Result<()> {
        match self.options.exclusive_owner {
            Some(owner) if owner != connection => Err(Error::QueueLocked {
                vhost: self.vhost.clone(),
                queue: self.name.clone(),
            }),
            _ => Ok(()),
        }
    }

    pub fn message_count(&self) -> usize {
        self.lock().ready.len()
    }

    pub fn consumer_count(&self) -> usize {
        self.lock().consumers.len()
    }

    /// Whether publishers should wait before sending more.
    pub fn is_full(&self) -> bool {
        self.ready_bytes_max != 0 && self.ready_bytes.load(Ordering::Acquire) > self.ready_bytes_max
    }

    /// Waits until the queue has room (or is deleted).
    pub async fn wait_for_room(&self) {
        loop {
            let notified = self.room.notified();
            tokio::pin!(notified);
            notified.as_mut().enable();
            if !self.is_full() || self.is_deleted() {
                return;
            }
            notified.await;
        }
    }

    /// Adds a message at the tail and dispatches.
    pub fn enqueue(&self, message: Arc<Message>) {
        let mut to_wake = Vec::new();
        {
            let mut state = self.lock();
            let sequence = state.next_sequence;
            state.next_sequence += 1;
            self.ready_bytes
                .fetch_add(message.body_bytes(), Ordering::AcqRel);
            state.ready.push_back(Ready {
                sequence,
                message,
                redelivered: false,
            });
            self.dispatch_locked(&mut state, &mut to_wake);
        }
        wake_all(to_wake);
    }

    /// Puts unacknowledged messages back in their original places, marked redelivered.
    pub fn requeue(&self, messages: impl IntoIterator<Item = (u64, Arc<Message>)>) {
        if self.is_deleted() {
            return;
        }
        let mut to_wake = Vec::new();
        {
            let mut state = self.lock();
            for (sequence, message) in messages {
                self.ready_bytes
                    .fetch_add(message.body_bytes(), Ordering::AcqRel);
                let at = state
                    .ready
                    .partition_point(|ready| ready.sequence < sequence);
                state.ready.insert(
                    at,
                    Ready {
                        sequence,
                        message,
                        redelivered: true,
                    },
                );
            }
            self.dispatch_locked(&mut state, &mut to_wake);
        }
        wake_all(to_wake);
    }

    /// Takes the message at the head, for a synchronous get.
    pub fn get(&self) -> Option<Got> {
        let mut state = self.lock();
        let ready = state.ready.pop_front()?;
        self.taken(ready.message.body_bytes());
        Some(Got {
            sequence: ready.sequence,
            message: ready.message,
            redelivered: ready.redelivered,
            remaining: state.ready.len(),
        })
    }

    /// Drops every ready message; returns how many.
    pub fn purge(&self) -> usize {
        let mut state = self.lock();
        let count = state.ready.len();
        state.ready.clear();
        self.ready_bytes.store(0, Ordering::Release);
        self.room.notify_waiters();
        count
    }

    /// Adds a consumer and starts delivering to it.
    pub fn add_consumer(&self, consumer: Arc<Consumer>) -> Result<()> {
        let mut to_wake = Vec::new();
        {
            let mut state = self.lock();
            let exclusive_held = state
                .consumers
                .iter()
                .any(|existing| existing.exclusivity == Exclusivity::Exclusive);
            let wants_exclusive = consumer.exclusivity == Exclusivity::Exclusive;
            if exclusive_held || (wants_exclusive && !state.consumers.is_empty()) {
                return Err(Error::QueueInExclusiveUse {
                    vhost: self.vhost.clone(),
                    queue: self.name.clone(),
                });
            }
            state.consumers.push_back(consumer);
            state.had_consumer = true;
            self.dispatch_locked(&mut state, &mut to_wake);
        }
        wake_all(to_wake);
        Ok(())
    }

    /// Removes a consumer. Returns true when the queue should now be auto-deleted.
    pub fn remove_consumer(&self, id: ConsumerId, inbox: &Arc<Inbox>) -> bool {
        let mut state = self.lock();
        state
            .consumers
            .retain(|consumer| !(consumer.id == id && Arc::ptr_eq(&consumer.inbox, inbox)));
        self.options.auto_delete && state.had_consumer && state.consumers.is_empty()
    }

    pub(crate) fn add_binding(&self, record: BindingRecord) {
        self.lock().bindings.push(record);
    }

    pub(crate) fn remove_binding(
        &self,
        exchange: &ExchangeName,
        key: &BindingKey,
        arguments: &Table,
    ) {
        let mut state = self.lock();
        if let Some(index) = state.bindings.iter().position(|record| {
            record.exchange == *exchange
                && record.key == *key
                && record.arguments.same_entries(arguments)
        }) {
            state.bindings.swap_remove(index);
        }
    }

    /// Marks the queue deleted; returns its bindings (to remove from their exchanges) and tells
    /// its consumers they are cancelled.
    pub(crate) fn mark_deleted(&self) -> Vec<BindingRecord> {
        self.deleted.store(true, Ordering::Release);
        let mut state = self.lock();
        for consumer in state.consumers.drain(..) {
            consumer.inbox.push(InboxItem::Cancelled(consumer.id));
        }
        state.ready.clear();
        self.ready_bytes.store(0, Ordering::Release);
        self.room.notify_waiters();
        std::mem::take(&mut state.bindings)
    }

    /// Delivers ready messages to consumers with credit. Called when credit frees up.
    pub(crate) fn dispatch(&self) {
        let mut to_wake = Vec::new();
        {
            let mut state = self.lock();
            self.dispatch_locked(&mut state, &mut to_wake);
        }
        wake_all(to_wake);
    }

    fn dispatch_locked(&self, state: &mut State, to_wake: &mut Vec<Arc<Credit>>) {
        while !state.ready.is_empty() && !state.consumers.is_empty() {
            match self.next_consumer(state, to_wake) {
                Some(consumer) => self.deliver_head(state, &consumer),
                None => return,
            }
        }
    }

    /// Finds the next consumer in round-robin order that can take a delivery, reserving its
    /// credit and moving it to the back. Consumers without credit get this queue registered as
    /// a waiter.
    fn next_consumer(
        &self,
        state: &mut State,
        to_wake: &mut Vec<Arc<Credit>>,
    ) -> Option<Arc<Consumer>> {
        loop {
            let mut room_appeared = false;
            for _ in 0..state.consumers.len() {
                let consumer = state.consumers.pop_front().expect("checked non-empty");
                state.consumers.push_back(consumer.clone());
                match consumer.try_reserve(to_wake) {
                    Ok(()) => return Some(consumer),
                    Err(blocker) => room_appeared |= consumer.wait_for(&blocker, &self.this),
                }
            }
            if !room_appeared {
                return None;
            }
        }
    }

    fn deliver_head(&self, state: &mut State, consumer: &Consumer) {
        let ready = state.ready.pop_front().expect("dispatch checked non-empty");
        self.taken(ready.message.body_bytes());
        let queue = self.this.upgrade().expect("a queue dispatching is alive");
        consumer.inbox.push(InboxItem::Delivery(Delivery {
            consumer: consumer.id,
            queue,
            sequence: ready.sequence,
            message: ready.message,
            redelivered: ready.redelivered,
        }));
    }

    /// Accounts for a ready message leaving, waking publishers when room opens up again.
    fn taken(&self, body_bytes: usize) {
        let before = self.ready_bytes.fetch_sub(body_bytes, Ordering::AcqRel);
        let after = before - body_bytes;
        if self.ready_bytes_max != 0
            && before > self.ready_bytes_max / 2
            && after <= self.ready_bytes_max / 2
        {
            self.room.notify_waiters();
        }
    }
}

fn wake_all(credits: Vec<Arc<Credit>>) {
    for credit in credits {
        credit.wake();
    }
}
