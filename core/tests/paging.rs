//! Paging through the core API, against an in-memory journal: a durable queue over its memory
//! share keeps references to its newest messages and reads them back in order, priorities and
//! requeues included.

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};

use bytes::Bytes;
use tokio::sync::watch;
use warren_core::auth::InternalUsers;
use warren_core::journal::{Journal, JournalRef, JournalUnavailable, Lsn, SyncState};
use warren_core::name::{ConnectionId, ExchangeName, QueueName, VhostName};
use warren_core::properties::Properties;
use warren_core::queue::{Durability, QueueOptions, Requeue};
use warren_core::shutdown::Shutdown;
use warren_core::topic::RoutingKey;
use warren_core::value::{Table, Value};
use warren_core::vhost::Declare;
use warren_core::{Broker, BrokerConfig, Message};

/// Keeps every published message; everything is synced at once.
#[derive(Debug)]
struct MemoryJournal {
    messages: Mutex<HashMap<u64, Message>>,
    next: AtomicU64,
    reads: AtomicU64,
    removed: AtomicU64,
    sync: watch::Sender<SyncState>,
    /// While set, every read fails as an I/O error would.
    failing: std::sync::atomic::AtomicBool,
    /// Ids whose records read back as damaged.
    damaged: Mutex<Vec<u64>>,
}

impl MemoryJournal {
    fn new() -> Arc<MemoryJournal> {
        Arc::new(MemoryJournal {
            messages: Mutex::new(HashMap::new()),
            next: AtomicU64::new(1),
            reads: AtomicU64::new(0),
            removed: AtomicU64::new(0),
            sync: watch::channel(SyncState { synced: Lsn::MAX, failed: false }).0,
            failing: std::sync::atomic::AtomicBool::new(false),
            damaged: Mutex::new(Vec::new()),
        })
    }
}

impl Journal for MemoryJournal {
    fn publish(
        &self,
        _vhost: &VhostName,
        _queues: &[&QueueName],
        message: &Message,
    ) -> Result<JournalRef, JournalUnavailable> {
        let id = self.next.fetch_add(1, Ordering::Relaxed);
        let copy = Message {
            exchange: message.exchange.clone(),
            routing_key: message.routing_key.clone(),
            properties: message.properties.clone(),
            body: message.body.clone(),
            journal: None,
        };
        self.messages.lock().expect("lock").insert(id, copy);
        Ok(JournalRef { id, lsn: id, segment: 1, offset: id * 100, length: 100 })
    }

    fn delivered(&self, _vhost: &VhostName, _queue: &QueueName, _id: u64) {}

    fn removed(&self, _vhost: &VhostName, _queue: &QueueName, id: u64) {
        self.removed.fetch_add(1, Ordering::Relaxed);
        self.messages.lock().expect("lock").remove(&id);
    }

    fn sync_state(&self) -> watch::Receiver<SyncState> {
        self.sync.subscribe()
    }

    fn appended(&self) -> Lsn {
        self.next.load(Ordering::Relaxed)
    }

    fn read(&self, references: &[JournalRef]) -> Result<Vec<Option<Message>>, JournalUnavailable> {
        if self.failing.load(Ordering::Relaxed) {
            return Err(JournalUnavailable);
        }
        self.reads.fetch_add(references.len() as u64, Ordering::Relaxed);
        let damaged = self.damaged.lock().expect("lock").clone();
        let messages = self.messages.lock().expect("lock");
        Ok(references
            .iter()
            .map(|reference| {
                if damaged.contains(&reference.id) {
                    return None;
                }
                messages.get(&reference.id).map(|message| Message {
                    exchange: message.exchange.clone(),
                    routing_key: message.routing_key.clone(),
                    properties: message.properties.clone(),
                    body: message.body.clone(),
                    journal: Some(*reference),
                })
            })
            .collect())
    }

    fn synced(&self) -> Lsn {
        Lsn::MAX
    }

    fn confirms_wait(&self) -> bool {
        true
    }
}

fn setup(max_priority: Option<i64>) -> (Arc<MemoryJournal>, Arc<warren_core::Vhost>, Arc<warren_core::Queue>) {
    let config = BrokerConfig { queue_memory_bytes_max: 4096, ..BrokerConfig::default() };
    let broker = Broker::new(config, Arc::new(InternalUsers::with_default_guest()), Shutdown::new());
    let journal = MemoryJournal::new();
    broker.set_journal(journal.clone());
    let vhost = broker.vhost(&VhostName::new("/")).expect("default vhost");
    let mut arguments = Table::new();
    if let Some(max) = max_priority {
        arguments.insert("x-max-priority", Value::I64(max));
    }
    let options =
        QueueOptions { durability: Durability::Durable, exclusive_owner: None, auto_delete: false, arguments };
    let queue =
        vhost.declare_queue(&QueueName::new("q"), options, Declare::Create, ConnectionId(1)).expect("declared").queue;
    (journal, vhost, queue)
}

fn publish(vhost: &warren_core::Vhost, queue: &Arc<warren_core::Queue>, index: usize, priority: Option<u8>) {
    let message = Message {
        exchange: ExchangeName::new(""),
        routing_key: RoutingKey::new("q"),
        properties: Properties { delivery_mode: Some(2), priority, ..Properties::default() },
        body: Bytes::from(format!("{index:04}{}", "x".repeat(96))),
        journal: None,
    };
    vhost.enqueue(message, std::slice::from_ref(queue));
}

fn index_of(message: &Message) -> usize {
    std::str::from_utf8(&message.body[..4]).expect("utf-8").parse().expect("index")
}

#[tokio::test]
async fn a_paged_queue_reads_its_backlog_back_in_order() {
    let (journal, vhost, queue) = setup(None);
    for index in 0..500 {
        publish(&vhost, &queue, index, None);
    }
    assert_eq!(queue.message_count(), 500);
    let mut order = Vec::new();
    while let Some(got) = queue.get() {
        assert_eq!(got.message.body.len(), 100);
        order.push(index_of(&got.message));
        queue.acked([&got.message]);
    }
    assert_eq!(order, (0..500).collect::<Vec<_>>());
    let reads = journal.reads.load(Ordering::Relaxed);
    assert!(reads >= 400, "500 messages of 100 bytes with a 4 KiB share: only {reads} read back");
    assert_eq!(journal.removed.load(Ordering::Relaxed), 500);
}

#[tokio::test]
async fn paging_keeps_priorities_and_requeued_positions() {
    let (_journal, vhost, queue) = setup(Some(3));
    // Priorities cycle 0, 1, 2, 3: delivery is by priority, then publish order.
    for index in 0..200 {
        publish(&vhost, &queue, index, Some((index % 4) as u8));
    }
    let first = queue.get().expect("a message");
    let second = queue.get().expect("a message");
    assert_eq!((index_of(&first.message), index_of(&second.message)), (3, 7));
    // Put them back: they return to their places, ahead of the rest of priority 3.
    queue.requeue([
        Requeue { sequence: second.sequence, message: second.message, redelivered: true, expires_at: None },
        Requeue { sequence: first.sequence, message: first.message, redelivered: true, expires_at: None },
    ]);
    let mut order = Vec::new();
    while let Some(got) = queue.get() {
        order.push((index_of(&got.message), got.redelivered));
    }
    let mut expected = Vec::new();
    for priority in (0..4).rev() {
        for index in (priority..200).step_by(4) {
            expected.push((index, priority == 3 && (index == 3 || index == 7)));
        }
    }
    assert_eq!(order, expected);
}

#[tokio::test]
async fn purging_a_paged_queue_removes_every_message_from_the_journal() {
    let (journal, vhost, queue) = setup(None);
    for index in 0..300 {
        publish(&vhost, &queue, index, None);
    }
    assert_eq!(queue.purge(), 300);
    assert_eq!(journal.removed.load(Ordering::Relaxed), 300);
    assert!(journal.messages.lock().expect("lock").is_empty());
    assert!(queue.get().is_none());
}

#[tokio::test]
async fn a_read_error_loses_nothing_and_a_damaged_record_loses_only_itself() {
    let (journal, vhost, queue) = setup(None);
    for index in 0..300 {
        publish(&vhost, &queue, index, None);
    }
    // The first messages stayed resident; take them, so the head is paged.
    let mut order = Vec::new();
    while let Some(got) = queue.get() {
        order.push(index_of(&got.message));
        queue.acked([&got.message]);
        if got.remaining > 0 && order.len() == 20 {
            break;
        }
    }
    journal.failing.store(true, Ordering::Relaxed);
    let resident_run = std::iter::from_fn(|| queue.get()).count();
    assert!(queue.message_count() > 200, "an I/O error drops nothing ({} left)", queue.message_count());
    journal.failing.store(false, Ordering::Relaxed);
    assert_eq!(resident_run, 0, "the head was paged: nothing to take while reads fail");
    // One damaged record: only that message is lost.
    let next_id = 1 + 20;
    journal.damaged.lock().expect("lock").push(next_id as u64 + 5);
    while let Some(got) = queue.get() {
        order.push(index_of(&got.message));
        queue.acked([&got.message]);
    }
    let expected: Vec<usize> = (0..300).filter(|index| *index != 25).collect();
    assert_eq!(order, expected);
    assert_eq!(journal.removed.load(Ordering::Relaxed), 300, "the damaged one is forgotten too");
}
