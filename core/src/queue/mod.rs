//! Queues: FIFO message stores that dispatch to consumers round-robin, within their credit.
//!
//! A queue is a mutex-guarded state machine rather than an actor task: publishers enqueue and
//! consumers' sessions settle on their own tasks, and each operation is a short critical
//! section with no await inside. This keeps the publish path free of channel hops and lets
//! request/reply operations (declare, purge, get) answer synchronously. Different queues never
//! share a lock, so cross-queue work runs in parallel.
//!
//! Work that reaches beyond the queue (waking other queues, republishing dead letters into
//! other queues, deleting the queue) is collected as [`Effects`] under the lock and carried out
//! after it is released, so no queue lock is ever held while another is taken.
//!
//! # Layout
//! - `args`: the declare arguments a queue acts on.
//! - `consumer`: a consumer's delivery target and credit.
//! - `credit`: counters with waiters, used for prefetch and inbox room.
//! - `dead_letter`: republished dead messages and the cycle rule.
//! - `inbox`: a session's bounded inbox of deliveries.
//! - `ready`: the ready list, one FIFO per priority level.
//! - `timer`: the task that expires messages and idle queues.

mod args;
mod consumer;
mod credit;
mod dead_letter;
mod inbox;
mod ready;
mod timer;

use std::collections::VecDeque;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, Weak};
use std::time::Duration;

use tokio::sync::Notify;
use tokio::time::Instant;
use tracing::warn;

pub use args::{Overflow, QueueArguments};
pub use consumer::{AckMode, Consumer, Exclusivity};
pub use credit::Credit;
pub use dead_letter::DeathReason;
pub use inbox::{Delivery, Inbox, InboxItem};

use crate::error::{Error, Result};
use crate::journal::{JournalRef, JournalSlot};
use crate::message::Message;
use crate::name::{ConnectionId, ConsumerId, ExchangeName, QueueName, VhostName};
use crate::policy::{self, Policy};
use crate::topic::BindingKey;
use crate::value::Table;
use crate::vhost::Vhost;
use dead_letter::DeadLetterTarget;
use ready::{Ready, ReadyList, Slot};

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

/// Whether a queue took a published message.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Enqueued {
    Accepted,
    /// Refused by a length limit with `reject-publish` overflow: the publisher gets a nack.
    Rejected,
}

/// A message going back into its queue.
#[derive(Debug)]
pub struct Requeue {
    /// Its original position.
    pub sequence: u64,
    pub message: Arc<Message>,
    /// Whether a consumer has seen it.
    pub redelivered: bool,
    /// When it expires, as it was handed out: a requeued message keeps its original expiry,
    /// as in RabbitMQ. `None` if it had none then (a TTL set since applies from now).
    pub expires_at: Option<Instant>,
}

/// A message found in the journal at start, for its queue: a reference (the body stays on
/// disk until a consumer reaches it) and what the queue needs to place it.
#[derive(Clone, Debug)]
pub struct Recovered {
    pub reference: JournalRef,
    pub body_bytes: u32,
    /// Its `priority` property.
    pub priority: Option<u8>,
    /// Its own TTL (the `expiration` property).
    pub ttl: Option<Duration>,
    /// A consumer had it, unacked, when the broker stopped.
    pub redelivered: bool,
    /// How long ago it was published, so its TTL keeps counting from then.
    pub age: Duration,
}

/// A binding that points at this queue, remembered so deleting the queue can remove it.
#[derive(Clone, Debug)]
pub struct BindingRecord {
    pub exchange: ExchangeName,
    pub key: BindingKey,
    pub arguments: Table,
}

#[derive(Debug)]
struct State {
    ready: ReadyList,
    /// The arguments in force: the declared ones combined with the matching policy's.
    arguments: Arc<QueueArguments>,
    /// In round-robin order: the front gets the next message.
    /// Highest priority first; in arrival order within a priority. With a single active
    /// consumer, the first is the active one.
    consumers: Vec<Arc<Consumer>>,
    /// Round-robin position within a priority group.
    cursor: usize,
    /// With a single active consumer: the active one that left with deliveries unacked. As in
    /// RabbitMQ, nobody else is served until those are settled (acked or requeued), so a
    /// takeover cannot overtake the messages it was holding.
    departing_active: Option<Arc<Consumer>>,
    next_sequence: u64,
    /// Body bytes of every ready message, in memory or paged: what byte limits count.
    bytes: usize,
    /// Resident bytes above which paging is tried again, after an attempt that could not page
    /// enough (its newest messages were not synced yet); 0 when the last attempt succeeded.
    page_again_at: usize,
    had_consumer: bool,
    bindings: Vec<BindingRecord>,
    /// The last time the queue was used (declared, read from, or left by a consumer), for
    /// `x-expires`.
    last_used: Instant,
}

/// Work to do once the queue's lock is released.
#[derive(Default)]
struct Effects {
    to_wake: Vec<Arc<Credit>>,
    dead: Vec<(Arc<Message>, DeathReason)>,
    delete: bool,
}

/// What `Queue::get` found.
#[derive(Debug)]
pub struct Got {
    pub sequence: u64,
    pub message: Arc<Message>,
    pub redelivered: bool,
    /// When it expires, if it does (kept if it is requeued).
    pub expires_at: Option<Instant>,
    /// Messages still ready after this one.
    pub remaining: usize,
}

#[derive(Debug)]
pub struct Queue {
    name: QueueName,
    vhost_name: VhostName,
    /// The vhost, for dead-lettering and self-deletion.
    vhost: Weak<Vhost>,
    options: QueueOptions,
    /// The arguments it was declared with, kept to recombine with a changed policy.
    declared: QueueArguments,
    state: Mutex<State>,
    /// Itself, for registering as a credit waiter.
    this: Weak<Queue>,
    deleted: AtomicBool,
    /// Bytes of ready message bodies held in memory (paged ones do not count), read without
    /// the lock by publishers checking for room.
    ready_bytes: AtomicUsize,
    /// Above this many resident bytes, a journaled queue pages its newest synced messages out
    /// to the journal; 0 never pages.
    memory_bytes_max: usize,
    /// Above this many ready bytes, publishers wait (backpressure); 0 means no bound.
    ready_bytes_max: usize,
    /// Signalled when ready bytes fall back under half the bound.
    room: Notify,
    /// Wakes the timer task to reschedule.
    timer_wakeup: Notify,
    timer_started: AtomicBool,
    /// A dispatch retry after a failed read-back is scheduled.
    retry_pending: AtomicBool,
    /// The journal, written to when `journaled`.
    journal: JournalSlot,
    /// Durable and not exclusive: persistent messages in it are journaled.
    journaled: bool,
}

impl Queue {
    pub(crate) fn new(
        name: QueueName,
        vhost: &Arc<Vhost>,
        options: QueueOptions,
        declared: QueueArguments,
        policy: Option<&Policy>,
        ready_bytes_max: usize,
    ) -> Arc<Queue> {
        let arguments = Arc::new(policy::effective_queue_arguments(&declared, policy));
        let ready = ReadyList::new(declared.max_priority.unwrap_or(0));
        let needs_timer = arguments.needs_timer();
        let journaled = options.durability == Durability::Durable && options.exclusive_owner.is_none();
        let queue = Arc::new_cyclic(|this| Queue {
            name,
            vhost_name: vhost.name().clone(),
            vhost: Arc::downgrade(vhost),
            options,
            declared,
            state: Mutex::new(State {
                ready,
                arguments,
                consumers: Vec::new(),
                cursor: 0,
                departing_active: None,
                next_sequence: 0,
                bytes: 0,
                page_again_at: 0,
                had_consumer: false,
                bindings: Vec::new(),
                last_used: Instant::now(),
            }),
            this: this.clone(),
            deleted: AtomicBool::new(false),
            ready_bytes: AtomicUsize::new(0),
            ready_bytes_max,
            memory_bytes_max: vhost.queue_memory_bytes_max(),
            room: Notify::new(),
            timer_wakeup: Notify::new(),
            timer_started: AtomicBool::new(false),
            retry_pending: AtomicBool::new(false),
            journal: vhost.journal().clone(),
            journaled,
        });
        if needs_timer {
            queue.ensure_timer();
        }
        queue
    }

    pub fn name(&self) -> &QueueName {
        &self.name
    }

    pub fn options(&self) -> &QueueOptions {
        &self.options
    }

    /// The arguments in force.
    pub fn arguments(&self) -> Arc<QueueArguments> {
        self.lock().arguments.clone()
    }

    /// Recombines the declared arguments with a (changed) policy, applying the result at once:
    /// a lower length limit drops the excess, a TTL starts counting for new messages.
    pub fn apply_policy(&self, policy: Option<&Policy>) {
        let arguments = Arc::new(policy::effective_queue_arguments(&self.declared, policy));
        let needs_timer = arguments.needs_timer();
        let mut effects = Effects::default();
        {
            let mut state = self.lock();
            if *state.arguments == *arguments {
                return;
            }
            state.arguments = arguments;
            self.drop_over_limit(&mut state, &mut effects);
        }
        if needs_timer {
            self.ensure_timer();
            self.timer_wakeup.notify_one();
        }
        self.finish(effects);
    }

    /// Whether persistent messages entering this queue are journaled.
    pub fn is_journaled(&self) -> bool {
        self.journaled && self.journal.get().is_some()
    }

    /// Records that a journaled message left this queue for good. Every path that drops a
    /// message calls this exactly once per message.
    fn forget(&self, message: &Message) {
        self.forget_reference(message.journal);
    }

    fn forget_reference(&self, reference: Option<JournalRef>) {
        if let (true, Some(reference), Some(journal)) = (self.journaled, reference, self.journal.get()) {
            journal.removed(&self.vhost_name, &self.name, reference.id);
        }
    }

    /// Records that a journaled message reached a consumer, unless it already had.
    fn mark_delivered(&self, message: &Message, redelivered: bool) {
        if redelivered {
            return;
        }
        if let (true, Some(reference), Some(journal)) = (self.journaled, message.journal, self.journal.get()) {
            journal.delivered(&self.vhost_name, &self.name, reference.id);
        }
    }

    /// Settles deliveries their consumer acknowledged: they leave the queue for good.
    pub fn acked<'a>(&self, messages: impl IntoIterator<Item = &'a Arc<Message>>) {
        for message in messages {
            self.forget(message);
        }
    }

    /// Puts messages read back from the journal at the tail, in the order given (publish
    /// order), before any consumer attaches. A TTL counts from the original publish, so a
    /// message that expired while the broker was down dies (and is dead-lettered) now.
    pub fn restore(&self, messages: Vec<Recovered>) {
        let mut effects = Effects::default();
        let mut mortal = false;
        {
            let mut state = self.lock();
            let now = Instant::now();
            for recovered in messages {
                let ttl = match (state.arguments.message_ttl, recovered.ttl) {
                    (Some(queue), Some(own)) => Some(queue.min(own)),
                    (queue, own) => queue.or(own),
                };
                let expires_at = ttl.map(|ttl| now + ttl.saturating_sub(recovered.age));
                mortal |= expires_at.is_some();
                let sequence = state.next_sequence;
                state.next_sequence += 1;
                state.bytes += recovered.body_bytes as usize;
                let ready = Ready {
                    sequence,
                    slot: Slot::Paged { reference: recovered.reference, body_bytes: recovered.body_bytes },
                    level: state.ready.level_of(recovered.priority),
                    redelivered: recovered.redelivered,
                    expires_at,
                };
                state.ready.push_back(ready);
            }
            self.drop_over_limit(&mut state, &mut effects);
        }
        if mortal {
            self.ensure_timer();
            self.timer_wakeup.notify_one();
        }
        self.finish(effects);
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
            Some(owner) if owner != connection => {
                Err(Error::QueueLocked { vhost: self.vhost_name.clone(), queue: self.name.clone() })
            }
            _ => Ok(()),
        }
    }

    /// Ready messages, not counting ones that have expired but not yet been reaped.
    pub fn message_count(&self) -> usize {
        let mut effects = Effects::default();
        let count = {
            let mut state = self.lock();
            self.reap_expired(&mut state, Instant::now(), &mut effects);
            state.ready.len()
        };
        self.finish(effects);
        count
    }

    pub fn consumer_count(&self) -> usize {
        self.lock().consumers.len()
    }

    /// Marks the queue as used now (a redeclare), restarting its `x-expires` clock.
    pub fn touch(&self) {
        self.lock().last_used = Instant::now();
        self.timer_wakeup.notify_one();
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

    /// The expiry of a message entering now: the sooner of the queue's TTL and its own.
    fn expiry_of(state: &State, message: &Message, now: Instant) -> Option<Instant> {
        let own = message.ttl();
        let ttl = match (state.arguments.message_ttl, own) {
            (Some(queue), Some(own)) => Some(queue.min(own)),
            (queue, own) => queue.or(own),
        };
        ttl.map(|ttl| now + ttl)
    }

    /// Whether adding `body_bytes` more would pass a length limit.
    fn would_overflow(&self, state: &State, body_bytes: usize) -> bool {
        let over_length = state.arguments.max_length.is_some_and(|max| state.ready.len() as u64 >= max);
        let over_bytes = state.arguments.max_length_bytes.is_some_and(|max| (state.bytes + body_bytes) as u64 > max);
        over_length || over_bytes
    }

    /// Adds a message at the tail and dispatches, applying the length limit and overflow mode.
    pub fn enqueue(&self, message: Arc<Message>) -> Enqueued {
        let mut effects = Effects::default();
        let outcome = {
            let mut state = self.lock();
            self.enqueue_locked(&mut state, message, &mut effects)
        };
        self.finish(effects);
        outcome
    }

    fn enqueue_locked(&self, state: &mut State, message: Arc<Message>, effects: &mut Effects) -> Enqueued {
        if self.is_deleted() {
            // Deleted between routing and now: the message is dropped, as if routed a moment later.
            self.forget(&message);
            return Enqueued::Accepted;
        }
        if self.would_overflow(state, message.body_bytes()) {
            match state.arguments.overflow {
                Overflow::RejectPublish => {
                    self.forget(&message);
                    return Enqueued::Rejected;
                }
                Overflow::RejectPublishDeadLetter => {
                    effects.dead.push((message, DeathReason::MaxLength));
                    return Enqueued::Rejected;
                }
                Overflow::DropHead => {}
            }
        }
        // The clock is read only for messages that can expire: this is the publish hot path.
        let mortal = state.arguments.message_ttl.is_some() || message.properties.expiration.is_some();
        let now = mortal.then(Instant::now);
        let expires_at = now.and_then(|now| Self::expiry_of(state, &message, now));
        if expires_at.is_some() {
            self.ensure_timer();
            if state.ready.is_empty() {
                self.timer_wakeup.notify_one();
            }
        }
        let sequence = state.next_sequence;
        state.next_sequence += 1;
        self.ready_bytes.fetch_add(message.body_bytes(), Ordering::AcqRel);
        state.bytes += message.body_bytes();
        let level = state.ready.level_of(message.properties.priority);
        state.ready.push_back(Ready { sequence, slot: Slot::Memory(message), level, redelivered: false, expires_at });
        self.dispatch_at(state, effects, now);
        self.drop_over_limit(state, effects);
        self.page_out_if_needed(state);
        Enqueued::Accepted
    }

    /// Keeps a journaled queue's resident bodies under `memory_bytes_max`: the newest messages
    /// whose publish records are synced are replaced by references (their bodies are read back
    /// when consumers reach them), down to half the bound. Newest first, because they are
    /// needed last; each level stops at its first paged entry, since everything older is
    /// paged already (but for a head just read back).
    fn page_out_if_needed(&self, state: &mut State) {
        let resident = self.ready_bytes.load(Ordering::Acquire);
        if resident <= self.memory_bytes_max {
            state.page_again_at = 0;
        }
        if self.memory_bytes_max == 0 || resident <= self.memory_bytes_max.max(state.page_again_at) {
            return;
        }
        let Some(journal) = self.journal.get().filter(|_| self.journaled) else { return };
        let synced = journal.synced();
        let target = self.memory_bytes_max / 2;
        let mut paged = 0;
        state.ready.page_out(|ready| {
            if resident - paged <= target {
                return false;
            }
            if let Slot::Memory(message) = &ready.slot {
                if let Some(reference) = message.journal.filter(|reference| reference.lsn <= synced) {
                    let body_bytes = message.body_bytes();
                    paged += body_bytes;
                    ready.slot = Slot::Paged { reference, body_bytes: body_bytes as u32 };
                }
            }
            true
        });
        self.taken(paged);
        let resident = resident - paged;
        // Could not reach the target (too much not yet synced): try again after some growth,
        // not on every publish.
        state.page_again_at = if resident > target { resident + self.memory_bytes_max / 8 } else { 0 };
    }

    /// Reads the head's run of paged messages back from the journal (at most `PAGE_IN_RUN`
    /// messages and a quarter of the memory share), so the head is in memory. A message whose
    /// record is damaged is dropped (and forgotten); when the journal cannot read at all (an I/O
    /// error), nothing is dropped and a retry is scheduled.
    fn page_in_head(&self, state: &mut State) -> Head {
        loop {
            let Some(head) = state.ready.front() else { return Head::Empty };
            if !head.slot.is_paged() {
                return Head::InMemory;
            }
            let mut budget = (self.memory_bytes_max / 4).max(PAGE_IN_BYTES_MIN);
            let references: Vec<JournalRef> = state
                .ready
                .head_run_mut(PAGE_IN_RUN)
                .take_while(|ready| {
                    let fits = ready.slot.is_paged() && budget > 0;
                    budget = budget.saturating_sub(ready.slot.body_bytes());
                    fits
                })
                .filter_map(|ready| ready.slot.journal())
                .collect();
            let Some(journal) = self.journal.get() else { return Head::Unavailable };
            let Ok(messages) = journal.read(&references) else {
                warn!(queue = %self.name, "cannot read stored messages back; retrying in a second");
                self.retry_dispatch_later();
                return Head::Unavailable;
            };
            let mut resident = 0;
            for (ready, message) in state.ready.head_run_mut(references.len()).zip(messages) {
                if let Some(message) = message {
                    resident += message.body_bytes();
                    ready.slot = Slot::Memory(Arc::new(message));
                }
            }
            self.ready_bytes.fetch_add(resident, Ordering::AcqRel);
            // A head still paged could not be read (the journal logged why): drop it, and look
            // at the next.
            if state.ready.front().is_some_and(|head| head.slot.is_paged()) {
                warn!(queue = %self.name, "a stored message could not be read back; dropped");
                if let Some(lost) = self.pop_head_raw(state) {
                    self.forget_reference(lost.slot.journal());
                }
            }
        }
    }

    /// Dispatches again after `PAGE_IN_RETRY`, for a queue whose head could not be read. At
    /// most one retry is pending per queue, however many events run into the failure.
    fn retry_dispatch_later(&self) {
        if self.retry_pending.swap(true, Ordering::AcqRel) {
            return;
        }
        match (tokio::runtime::Handle::try_current(), self.this.upgrade()) {
            (Ok(runtime), Some(queue)) => {
                runtime.spawn(async move {
                    tokio::time::sleep(PAGE_IN_RETRY).await;
                    queue.retry_pending.store(false, Ordering::Release);
                    queue.dispatch();
                });
            }
            _ => self.retry_pending.store(false, Ordering::Release),
        }
    }

    /// Takes the head, in memory: for delivery, a get, or a dead letter.
    fn pop_head(&self, state: &mut State) -> Option<Taken> {
        if self.page_in_head(state) != Head::InMemory {
            return None;
        }
        let Ready { sequence, slot, redelivered, expires_at, .. } = state.ready.pop_front()?;
        let Slot::Memory(message) = slot else { return None };
        self.taken(message.body_bytes());
        state.bytes -= message.body_bytes();
        Some(Taken { sequence, message, redelivered, expires_at })
    }

    /// Takes the head as it is, paged or not: for dropping it.
    fn pop_head_raw(&self, state: &mut State) -> Option<Ready> {
        let ready = state.ready.pop_front()?;
        state.bytes -= ready.slot.body_bytes();
        if !ready.slot.is_paged() {
            self.taken(ready.slot.body_bytes());
        }
        Some(ready)
    }

    /// Drops (dead-letters) the oldest ready messages while the queue is over a limit.
    fn drop_over_limit(&self, state: &mut State, effects: &mut Effects) {
        let over = |state: &State| {
            !state.ready.is_empty()
                && (state.arguments.max_length.is_some_and(|max| state.ready.len() as u64 > max)
                    || state.arguments.max_length_bytes.is_some_and(|max| state.bytes as u64 > max))
        };
        while self.drop_head_while(state, DeathReason::MaxLength, effects, over) {}
    }

    /// Puts messages back in their original places: unacknowledged ones (marked redelivered) or
    /// ones that never reached their consumer (keeping their flag). One merge pass, so a large
    /// requeue costs O(ready + requeued) under the lock.
    pub fn requeue(&self, messages: impl IntoIterator<Item = Requeue>) {
        if self.is_deleted() {
            for requeue in messages {
                self.forget(&requeue.message);
            }
            return;
        }
        let mut effects = Effects::default();
        {
            let mut state = self.lock();
            if self.is_deleted() {
                // Deleted since the check above: `mark_deleted` has already forgotten the
                // ready messages, so these must be forgotten here.
                drop(state);
                for requeue in messages {
                    self.forget(&requeue.message);
                }
                return;
            }
            let now = Instant::now();
            let returning: Vec<Ready> = messages
                .into_iter()
                .map(|requeue| {
                    self.ready_bytes.fetch_add(requeue.message.body_bytes(), Ordering::AcqRel);
                    state.bytes += requeue.message.body_bytes();
                    Ready {
                        sequence: requeue.sequence,
                        expires_at: requeue.expires_at.or_else(|| Self::expiry_of(&state, &requeue.message, now)),
                        level: state.ready.level_of(requeue.message.properties.priority),
                        slot: Slot::Memory(requeue.message),
                        redelivered: requeue.redelivered,
                    }
                })
                .collect();
            state.ready.requeue(returning);
            self.dispatch_locked(&mut state, &mut effects);
            self.page_out_if_needed(&mut state);
        }
        self.timer_wakeup.notify_one();
        self.finish(effects);
    }

    /// Dead-letters messages that consumers rejected without requeue.
    pub fn reject(&self, messages: impl IntoIterator<Item = Arc<Message>>) {
        if self.lock().arguments.dead_letter_exchange.is_none() {
            for message in messages {
                self.forget(&message);
            }
            return;
        }
        let effects = Effects {
            dead: messages.into_iter().map(|message| (message, DeathReason::Rejected)).collect(),
            ..Effects::default()
        };
        self.finish(effects);
    }

    /// Takes the message at the head, for a synchronous get.
    pub fn get(&self) -> Option<Got> {
        let mut effects = Effects::default();
        let got = {
            let mut state = self.lock();
            state.last_used = Instant::now();
            self.reap_expired(&mut state, Instant::now(), &mut effects);
            self.pop_head(&mut state).map(|taken| {
                self.mark_delivered(&taken.message, taken.redelivered);
                Got {
                    sequence: taken.sequence,
                    message: taken.message,
                    redelivered: taken.redelivered,
                    expires_at: taken.expires_at,
                    remaining: state.ready.len(),
                }
            })
        };
        self.timer_wakeup.notify_one();
        self.finish(effects);
        got
    }

    /// Drops every ready message; returns how many.
    pub fn purge(&self) -> usize {
        let mut state = self.lock();
        let count = state.ready.len();
        while let Some(ready) = self.pop_head_raw(&mut state) {
            self.forget_reference(ready.slot.journal());
        }
        self.room.notify_waiters();
        count
    }

    /// Adds a consumer and starts delivering to it.
    pub fn add_consumer(&self, consumer: Arc<Consumer>) -> Result<()> {
        let mut effects = Effects::default();
        {
            let mut state = self.lock();
            if self.is_deleted() {
                return Err(Error::QueueNotFound { vhost: self.vhost_name.clone(), queue: self.name.clone() });
            }
            let exclusive_held = state.consumers.iter().any(|existing| existing.exclusivity == Exclusivity::Exclusive);
            let wants_exclusive = consumer.exclusivity == Exclusivity::Exclusive;
            if exclusive_held || (wants_exclusive && !state.consumers.is_empty()) {
                return Err(Error::QueueInExclusiveUse { vhost: self.vhost_name.clone(), queue: self.name.clone() });
            }
            let at = state.consumers.partition_point(|existing| existing.priority >= consumer.priority);
            state.consumers.insert(at, consumer);
            state.had_consumer = true;
            self.dispatch_locked(&mut state, &mut effects);
        }
        self.finish(effects);
        Ok(())
    }

    /// Removes a consumer and serves the remaining ones (with a single active consumer, the
    /// next takes over here). Returns true when the queue should now be auto-deleted.
    pub fn remove_consumer(&self, id: ConsumerId, inbox: &Arc<Inbox>) -> bool {
        let auto_delete = self.detach_consumer(id, inbox);
        self.dispatch();
        auto_delete
    }

    /// Removes a consumer without dispatching: for a channel or connection that is going, whose
    /// unacked messages must be requeued before anyone else is served (`dispatch` after that).
    /// Returns true when the queue should now be auto-deleted.
    pub fn detach_consumer(&self, id: ConsumerId, inbox: &Arc<Inbox>) -> bool {
        let mut state = self.lock();
        let was_active =
            state.consumers.first().is_some_and(|first| first.id == id && Arc::ptr_eq(&first.inbox, inbox));
        if was_active && state.arguments.single_active_consumer {
            let departing = state.consumers[0].clone();
            if departing.ack_mode == AckMode::Manual && departing.prefetch.used() > 0 {
                state.departing_active = Some(departing);
            }
        }
        state.consumers.retain(|consumer| !(consumer.id == id && Arc::ptr_eq(&consumer.inbox, inbox)));
        if state.consumers.is_empty() {
            state.last_used = Instant::now();
            self.timer_wakeup.notify_one();
        }
        self.options.auto_delete && state.had_consumer && state.consumers.is_empty()
    }

    /// The bindings that lead to this queue.
    pub fn bindings(&self) -> Vec<BindingRecord> {
        self.lock().bindings.clone()
    }

    pub(crate) fn add_binding(&self, record: BindingRecord) {
        self.lock().bindings.push(record);
    }

    pub(crate) fn remove_binding(&self, exchange: &ExchangeName, key: &BindingKey, arguments: &Table) {
        let mut state = self.lock();
        if let Some(index) = state.bindings.iter().position(|record| {
            record.exchange == *exchange && record.key == *key && record.arguments.same_entries(arguments)
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
        while let Some(ready) = self.pop_head_raw(&mut state) {
            self.forget_reference(ready.slot.journal());
        }
        self.room.notify_waiters();
        self.timer_wakeup.notify_one();
        std::mem::take(&mut state.bindings)
    }

    /// Delivers ready messages to consumers with credit. Called when credit frees up, or after
    /// `detach_consumer`.
    pub fn dispatch(&self) {
        let mut effects = Effects::default();
        {
            let mut state = self.lock();
            self.dispatch_locked(&mut state, &mut effects);
        }
        self.finish(effects);
    }

    fn dispatch_locked(&self, state: &mut State, effects: &mut Effects) {
        self.dispatch_at(state, effects, None);
    }

    /// Dispatches as of `now`. A message whose TTL is 0 expires at the instant it was enqueued,
    /// so dispatching it as of that same instant delivers it if a consumer can take it at once,
    /// as RabbitMQ does, and otherwise it dies.
    /// The clock is read only if a message with a TTL reaches the head.
    fn dispatch_at(&self, state: &mut State, effects: &mut Effects, mut now: Option<Instant>) {
        while !state.ready.is_empty() && !state.consumers.is_empty() {
            if state.ready.front().is_some_and(|head| head.expires_at.is_some()) {
                let now = *now.get_or_insert_with(Instant::now);
                self.reap_expired(state, now, effects);
                if state.ready.is_empty() {
                    return;
                }
            }
            if self.page_in_head(state) != Head::InMemory {
                return;
            }
            // Reading back may have dropped damaged records: the new head may have expired.
            let expired = |head: &Ready| head.expires_at.zip(now).is_some_and(|(at, now)| at < now);
            if state.ready.front().is_some_and(expired) {
                continue;
            }
            match self.next_consumer(state, &mut effects.to_wake) {
                Some(consumer) => self.deliver_head(state, &consumer),
                None => return,
            }
        }
    }

    /// Finds the next consumer in round-robin order that can take a delivery, reserving its
    /// credit and moving it to the back. Consumers without credit get this queue registered as
    /// a waiter.
    ///
    /// Consumers of a higher priority (`x-priority`) are served first; lower ones get messages
    /// only while every higher one lacks credit. With `x-single-active-consumer` only the first
    /// consumer is ever served; the next takes over when it leaves.
    fn next_consumer(&self, state: &mut State, to_wake: &mut Vec<Arc<Credit>>) -> Option<Arc<Consumer>> {
        if !self.departing_settled(state) {
            return None;
        }
        loop {
            let mut room_appeared = false;
            let candidates = if state.arguments.single_active_consumer { 1 } else { state.consumers.len() };
            let mut start = 0;
            while start < candidates {
                let priority = state.consumers[start].priority;
                let group = state.consumers[start..candidates].iter().take_while(|c| c.priority == priority).count();
                for offset in 0..group {
                    let consumer = &state.consumers[start + (state.cursor.wrapping_add(offset)) % group];
                    match consumer.try_reserve(to_wake) {
                        Ok(()) => {
                            let consumer = consumer.clone();
                            state.cursor = state.cursor.wrapping_add(offset + 1);
                            return Some(consumer);
                        }
                        Err(blocker) => room_appeared |= consumer.wait_for(&blocker, &self.this),
                    }
                }
                start += group;
            }
            if !room_appeared {
                return None;
            }
        }
    }

    /// Whether a departing single active consumer has settled everything it held; until then
    /// the queue waits on its credit, whose release wakes the queue again.
    fn departing_settled(&self, state: &mut State) -> bool {
        let Some(departing) = &state.departing_active else { return true };
        if departing.prefetch.used() > 0 {
            departing.prefetch.wait(&self.this);
            // Checked again after registering, so a release in between is not lost.
            if departing.prefetch.used() > 0 {
                return false;
            }
        }
        state.departing_active = None;
        true
    }

    fn deliver_head(&self, state: &mut State, consumer: &Arc<Consumer>) {
        let Taken { sequence, message, redelivered, expires_at } =
            self.pop_head(state).expect("dispatch read the head in");
        if expires_at.is_some() {
            // The next head may expire sooner than the one the timer waits for.
            self.timer_wakeup.notify_one();
        }
        // An auto-ack delivery is forgotten by the adapter once it is on its way: until then it
        // can still come back (a consumer cancelled with deliveries in its inbox).
        if consumer.ack_mode == AckMode::Manual {
            self.mark_delivered(&message, redelivered);
        }
        let queue = self.this.upgrade().expect("a queue dispatching is alive");
        consumer.inbox.push(InboxItem::Delivery(Delivery {
            consumer: consumer.clone(),
            queue,
            sequence,
            message,
            redelivered,
            expires_at,
        }));
    }

    /// Removes expired messages (those whose expiry is strictly before `now`) from the head, to
    /// be dead-lettered. As in RabbitMQ, only the
    /// head is examined: a message behind a longer-lived one waits for it, but is never
    /// delivered once expired, because delivery checks the head first.
    fn reap_expired(&self, state: &mut State, now: Instant, effects: &mut Effects) {
        let expired =
            |state: &State| state.ready.front().is_some_and(|head| head.expires_at.is_some_and(|at| at < now));
        while self.drop_head_while(state, DeathReason::Expired, effects, expired) {}
    }

    /// Removes the head for good while `condition` holds: dead-lettered if the queue has a
    /// dead-letter exchange (read back first if paged), otherwise just forgotten. Reading back
    /// can drop damaged records and so change the head, which is why the condition is checked
    /// again after it. Returns false when nothing more can be done now (the condition does not
    /// hold, or the head cannot be read yet).
    fn drop_head_while(
        &self,
        state: &mut State,
        reason: DeathReason,
        effects: &mut Effects,
        condition: impl Fn(&State) -> bool,
    ) -> bool {
        if !condition(state) {
            return false;
        }
        if state.arguments.dead_letter_exchange.is_none() {
            if let Some(ready) = self.pop_head_raw(state) {
                self.forget_reference(ready.slot.journal());
                return true;
            }
            return false;
        }
        if self.page_in_head(state) != Head::InMemory {
            return false;
        }
        if !condition(state) {
            return true;
        }
        match self.pop_head(state) {
            Some(taken) => {
                effects.dead.push((taken.message, reason));
                true
            }
            None => false,
        }
    }

    /// Accounts for a ready message leaving, waking publishers when room opens up again.
    fn taken(&self, body_bytes: usize) {
        let before = self.ready_bytes.fetch_sub(body_bytes, Ordering::AcqRel);
        let after = before - body_bytes;
        let half = self.ready_bytes_max / 2;
        if self.ready_bytes_max != 0 && before > half && after <= half {
            self.room.notify_waiters();
        }
    }

    /// Carries out the work collected under the lock.
    fn finish(&self, effects: Effects) {
        for credit in effects.to_wake {
            credit.wake();
        }
        if !effects.dead.is_empty() {
            self.publish_dead(effects.dead);
        }
        if effects.delete {
            if let (Some(vhost), Some(this)) = (self.vhost.upgrade(), self.this.upgrade()) {
                vhost.remove_queue(&this);
            }
        }
    }

    /// Republishes dead messages to the dead-letter exchange, if the queue has one; otherwise
    /// they are dropped. This runs after this queue's lock is released, so a queue may
    /// dead-letter into itself.
    ///
    /// Dead letters can chain: the target queue may overflow or reject in turn. Chains are
    /// walked iteratively, not recursively: a nested call on the same thread only queues its
    /// work for the outermost call, which also bounds the total hops, so no arrangement of
    /// queues can overflow the stack or multiply work without limit.
    fn publish_dead(&self, dead: Vec<(Arc<Message>, DeathReason)>) {
        let Some(this) = self.this.upgrade() else {
            dead.iter().for_each(|(message, _)| self.forget(message));
            return;
        };
        let mut first = Some((this, dead));
        let nested = DEAD_LETTER_WORK.with(|work| {
            let mut work = work.borrow_mut();
            match work.as_mut() {
                Some(pending) => {
                    pending.push_back(first.take().expect("set above"));
                    true
                }
                None => {
                    *work = Some(VecDeque::new());
                    false
                }
            }
        });
        if nested {
            return;
        }
        let mut hops = 0;
        let mut next = first;
        while let Some((queue, dead)) = next {
            hops += dead.len();
            if hops > DEAD_LETTER_HOPS_MAX {
                warn!(queue = %queue.name, hops, "dead-letter chain too long; dropping the rest");
                dead.iter().for_each(|(message, _)| queue.forget(message));
                while let Some((queue, dead)) =
                    DEAD_LETTER_WORK.with(|work| work.borrow_mut().as_mut().and_then(VecDeque::pop_front))
                {
                    dead.iter().for_each(|(message, _)| queue.forget(message));
                }
                break;
            }
            queue.republish_dead(dead);
            next = DEAD_LETTER_WORK.with(|work| work.borrow_mut().as_mut().and_then(VecDeque::pop_front));
        }
        DEAD_LETTER_WORK.with(|work| *work.borrow_mut() = None);
    }

    /// Republishes dead messages, then forgets them here: the copy is journaled (if it goes to
    /// a durable queue) before the original's removal, so a crash between the two can
    /// duplicate a dead letter but never lose it.
    fn republish_dead(&self, dead: Vec<(Arc<Message>, DeathReason)>) {
        let arguments = self.lock().arguments.clone();
        let (Some(exchange_name), Some(vhost)) = (&arguments.dead_letter_exchange, self.vhost.upgrade()) else {
            dead.iter().for_each(|(message, _)| self.forget(message));
            return;
        };
        let exchange = match vhost.exchange(exchange_name) {
            Ok(exchange) => exchange,
            Err(error) => {
                warn!(queue = %self.name, %error, "dead-letter exchange missing; dropping dead messages");
                dead.iter().for_each(|(message, _)| self.forget(message));
                return;
            }
        };
        let target = DeadLetterTarget {
            queue: &self.name,
            exchange: exchange_name,
            routing_key: arguments.dead_letter_routing_key.as_ref(),
        };
        let mut queues = Vec::new();
        for (message, reason) in dead {
            let republished = dead_letter::republish(&message, reason, &target);
            queues.clear();
            vhost.route_unchecked(&exchange, &republished, &mut queues);
            queues.retain(|queue| !dead_letter::is_cycle(&republished, queue.name()));
            if !vhost.enqueue(republished, &queues).unstored {
                self.forget(&message);
            }
            // Else the journal could not take the dead letter: the original stays recorded
            // here, so a restart brings it back rather than losing it.
        }
    }

    /// Starts the timer task, once, if a runtime is running.
    fn ensure_timer(&self) {
        if self.timer_started.swap(true, Ordering::AcqRel) {
            return;
        }
        match (tokio::runtime::Handle::try_current(), self.this.upgrade()) {
            (Ok(runtime), Some(queue)) => {
                runtime.spawn(timer::run(queue));
            }
            _ => self.timer_started.store(false, Ordering::Release),
        }
    }

    /// When the timer should next look at the queue: the head's expiry, or the moment the queue
    /// has been unused for `x-expires`.
    fn next_deadline(&self) -> Option<Instant> {
        let state = self.lock();
        let head = state.ready.front().and_then(|head| head.expires_at);
        let idle = match (state.arguments.expires, state.consumers.is_empty()) {
            (Some(expires), true) => Some(state.last_used + expires),
            _ => None,
        };
        match (head, idle) {
            (Some(a), Some(b)) => Some(a.min(b)),
            (a, b) => a.or(b),
        }
    }

    /// The timer fired: reap expired messages and delete the queue if it has gone unused.
    fn on_timer(&self) {
        let mut effects = Effects::default();
        {
            let mut state = self.lock();
            let now = Instant::now();
            self.reap_expired(&mut state, now, &mut effects);
            if let Some(expires) = state.arguments.expires {
                effects.delete = state.consumers.is_empty() && now >= state.last_used + expires;
            }
        }
        self.finish(effects);
    }
}

/// The most dead-letter republishes one operation may cause, across chained queues: far above
/// any sane topology, low enough that a hostile one cannot stall a worker thread.
const DEAD_LETTER_HOPS_MAX: usize = 10_000;

/// How many paged messages at the head are read back at once: consecutive records, so the
/// journal reads them in a few large reads instead of one each.
const PAGE_IN_RUN: usize = 256;

/// The byte budget of one read-back is a quarter of the memory share, but at least this.
const PAGE_IN_BYTES_MIN: usize = 1 << 20;

/// How long a queue whose head cannot be read waits before trying again.
const PAGE_IN_RETRY: Duration = Duration::from_secs(1);

/// A head taken from the ready list, in memory.
struct Taken {
    sequence: u64,
    message: Arc<Message>,
    redelivered: bool,
    expires_at: Option<Instant>,
}

/// Where the head of the ready list stands, for taking it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Head {
    InMemory,
    Empty,
    /// Paged, and the journal cannot read it now.
    Unavailable,
}

/// Dead letters queued by nested `publish_dead` calls for the outermost one on this thread.
type DeadLetterWork = VecDeque<(Arc<Queue>, Vec<(Arc<Message>, DeathReason)>)>;

thread_local! {
    static DEAD_LETTER_WORK: std::cell::RefCell<Option<DeadLetterWork>> = const { std::cell::RefCell::new(None) };
}

/// How long the timer sleeps when nothing is scheduled, before looking again. Wake-ups reschedule
/// it sooner; this only bounds the cost of a missed one.
const TIMER_IDLE: Duration = Duration::from_secs(60);
