//! Virtual hosts: namespaces of exchanges and queues, and the operations that touch both.

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, RwLock};

use crate::definitions::{BindingDefinition, Definitions, DestinationKind, ExchangeDefinition, QueueDefinition};
use crate::error::{EntityKind, Error, Result};
use crate::exchange::{Binding, Destination, Exchange, ExchangeKind, ExchangeOptions};
use crate::journal::{JournalSlot, Lsn};
use crate::message::Message;
use crate::name::{ConnectionId, ExchangeName, QueueName, VhostName};
use crate::policy::{self, ApplyTo, Policy};
use crate::properties::DeliveryMode;
use crate::queue::{BindingRecord, Durability, Enqueued, Queue, QueueArguments, QueueOptions};
use crate::topic::BindingKey;
use crate::value::{Table, Value};

/// Whether a declare may create the entity or only checks that it exists.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Declare {
    Create,
    Passive,
}

/// A declared queue and its counts, as declare-ok reports them.
#[derive(Debug)]
pub struct DeclaredQueue {
    pub queue: Arc<Queue>,
    pub message_count: usize,
    pub consumer_count: usize,
}

/// The exchanges every vhost has from the start.
const PREDECLARED: [(&str, ExchangeKind); 6] = [
    ("", ExchangeKind::Direct),
    ("amq.direct", ExchangeKind::Direct),
    ("amq.fanout", ExchangeKind::Fanout),
    ("amq.topic", ExchangeKind::Topic),
    ("amq.headers", ExchangeKind::Headers),
    ("amq.match", ExchangeKind::Headers),
];

/// Direct reply-to: a consumer of this pseudo-queue gets a private reply queue, named with
/// this prefix and a random suffix, that publishers reach through the default exchange.
pub const REPLY_TO: &str = "amq.rabbitmq.reply-to";
const REPLY_QUEUE_PREFIX: &str = "amq.rabbitmq.reply-to.";

/// Names with this prefix are reserved for the broker.
const RESERVED_PREFIX: &str = "amq.";

#[derive(Debug)]
pub struct Vhost {
    name: VhostName,
    /// Itself, handed to queues for dead-lettering and self-deletion.
    this: std::sync::Weak<Vhost>,
    exchanges: RwLock<HashMap<ExchangeName, Arc<Exchange>>>,
    queues: RwLock<HashMap<QueueName, Arc<Queue>>>,
    /// Direct reply-to queues: reachable by name through the default exchange, but not declared
    /// and not listed.
    reply_queues: RwLock<HashMap<QueueName, Arc<Queue>>>,
    /// Operator policies, in the order they were set.
    policies: RwLock<Vec<Policy>>,
    /// Seeds server-generated queue names.
    generated_names: AtomicU64,
    /// Bound on each queue's ready bytes before publishers wait.
    queue_ready_bytes_max: usize,
    /// Resident bytes above which a journaled queue pages messages out.
    queue_memory_bytes_max: usize,
    /// Called after a durable entity changes, so the server can store the definitions.
    on_change: ChangeHook,
    /// Where persistent messages on durable queues are written.
    journal: JournalSlot,
}

/// What became of a routed message.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Published {
    /// A queue refused it (a length limit with `reject-publish`, or a journal that cannot
    /// write): the publisher gets a nack.
    pub rejected: bool,
    /// Where it was journaled: its confirm waits until the journal has synced this far.
    pub lsn: Option<Lsn>,
    /// The journal could not take it, so it reached no durable queue (`rejected` is set too).
    pub unstored: bool,
    /// Its record's id, when it was journaled.
    pub journal_id: Option<u64>,
}

/// The hook a broker and its vhosts share, set once by the server.
#[derive(Clone, Default)]
pub(crate) struct ChangeHook(Arc<std::sync::OnceLock<Box<dyn Fn() + Send + Sync>>>);

impl ChangeHook {
    pub(crate) fn set(&self, hook: Box<dyn Fn() + Send + Sync>) {
        let _ = self.0.set(hook);
    }

    pub(crate) fn call(&self) {
        if let Some(hook) = self.0.get() {
            hook();
        }
    }
}

impl std::fmt::Debug for ChangeHook {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(if self.0.get().is_some() { "ChangeHook(set)" } else { "ChangeHook(unset)" })
    }
}

impl Vhost {
    pub(crate) fn new(
        name: VhostName,
        (queue_ready_bytes_max, queue_memory_bytes_max): (usize, usize),
        on_change: ChangeHook,
        journal: JournalSlot,
    ) -> Arc<Vhost> {
        let mut exchanges = HashMap::new();
        for (exchange, kind) in PREDECLARED {
            let options = ExchangeOptions {
                kind,
                durability: Durability::Durable,
                auto_delete: false,
                internal: false,
                arguments: Table::new(),
            };
            exchanges.insert(ExchangeName::new(exchange), Exchange::new(ExchangeName::new(exchange), options));
        }
        let seed = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|elapsed| elapsed.as_nanos() as u64)
            .unwrap_or(0);
        Arc::new_cyclic(|this| Vhost {
            name,
            this: this.clone(),
            exchanges: RwLock::new(exchanges),
            queues: RwLock::new(HashMap::new()),
            reply_queues: RwLock::new(HashMap::new()),
            policies: RwLock::new(Vec::new()),
            on_change,
            journal,
            generated_names: AtomicU64::new(seed),
            queue_ready_bytes_max,
            queue_memory_bytes_max,
        })
    }

    pub fn name(&self) -> &VhostName {
        &self.name
    }

    /// Looks up an exchange.
    pub fn exchange(&self, name: &ExchangeName) -> Result<Arc<Exchange>> {
        self.exchanges
            .read()
            .expect("exchanges lock poisoned")
            .get(name)
            .cloned()
            .ok_or_else(|| Error::ExchangeNotFound { vhost: self.name.clone(), exchange: name.clone() })
    }

    pub fn declare_exchange(
        &self,
        name: &ExchangeName,
        options: ExchangeOptions,
        declare: Declare,
    ) -> Result<Arc<Exchange>> {
        if declare == Declare::Passive {
            return self.exchange(name);
        }
        if name.is_empty() {
            return Err(Error::DefaultExchange);
        }
        let mut exchanges = self.exchanges.write().expect("exchanges lock poisoned");
        if let Some(existing) = exchanges.get(name) {
            self.check_exchange_equivalent(existing, &options)?;
            return Ok(existing.clone());
        }
        if name.as_str().starts_with(RESERVED_PREFIX) {
            return Err(Error::ReservedName { kind: EntityKind::Exchange, name: name.to_string() });
        }
        let exchange = Exchange::new(name.clone(), options);
        let policies = self.policies.read().expect("policies lock poisoned");
        let policy = policy::select(&policies, name.as_str(), ApplyTo::Exchanges);
        exchange.set_policy_alternate(policy.and_then(Policy::alternate_exchange).map(ExchangeName::new));
        drop(policies);
        exchanges.insert(name.clone(), exchange.clone());
        drop(exchanges);
        if exchange.options().durability == Durability::Durable {
            self.changed();
        }
        Ok(exchange)
    }

    /// Tells the server that durable definitions changed. Never called with a lock held: the
    /// hook takes a snapshot.
    fn changed(&self) {
        self.on_change.call();
    }

    /// The vhost's durable exchanges (less the predeclared ones), queues and bindings.
    pub(crate) fn durable_definitions(&self, out: &mut Definitions) {
        let exchanges: Vec<Arc<Exchange>> =
            self.exchanges.read().expect("exchanges lock poisoned").values().cloned().collect();
        for exchange in &exchanges {
            let options = exchange.options();
            if options.durability != Durability::Durable {
                continue;
            }
            let predeclared = PREDECLARED.iter().any(|(name, _)| *name == exchange.name().as_str());
            if !predeclared {
                out.exchanges.push(ExchangeDefinition {
                    vhost: self.name.clone(),
                    name: exchange.name().to_string(),
                    kind: options.kind,
                    auto_delete: options.auto_delete,
                    internal: options.internal,
                    arguments: options.arguments.clone(),
                });
            }
            for binding in exchange.bindings() {
                let (destination, destination_kind, durable) = match &binding.destination {
                    Destination::Queue(queue) => {
                        (queue.name().to_string(), DestinationKind::Queue, is_durable_queue(queue))
                    }
                    Destination::Exchange(target) => (
                        target.name().to_string(),
                        DestinationKind::Exchange,
                        target.options().durability == Durability::Durable,
                    ),
                };
                if durable {
                    out.bindings.push(BindingDefinition {
                        vhost: self.name.clone(),
                        source: exchange.name().to_string(),
                        destination,
                        destination_kind,
                        key: binding.key.as_str().to_owned(),
                        arguments: binding.arguments.clone(),
                    });
                }
            }
        }
        for queue in self.queues.read().expect("queues lock poisoned").values() {
            if is_durable_queue(queue) {
                let options = queue.options();
                out.queues.push(QueueDefinition {
                    vhost: self.name.clone(),
                    name: queue.name().to_string(),
                    auto_delete: options.auto_delete,
                    arguments: options.arguments.clone(),
                });
            }
        }
    }

    fn check_exchange_equivalent(&self, existing: &Exchange, wanted: &ExchangeOptions) -> Result<()> {
        let current = existing.options();
        let mismatch = |argument, received: String, current: String| Error::Inequivalent {
            kind: EntityKind::Exchange,
            name: existing.name().to_string(),
            vhost: self.name.clone(),
            argument,
            received,
            current,
        };
        if current.kind != wanted.kind {
            return Err(mismatch("type", wanted.kind.name().into(), current.kind.name().into()));
        }
        if current.durability != wanted.durability {
            let durable = |durability| (durability == Durability::Durable).to_string();
            return Err(mismatch("durable", durable(wanted.durability), durable(current.durability)));
        }
        if current.auto_delete != wanted.auto_delete {
            return Err(mismatch("auto_delete", wanted.auto_delete.to_string(), current.auto_delete.to_string()));
        }
        if current.internal != wanted.internal {
            return Err(mismatch("internal", wanted.internal.to_string(), current.internal.to_string()));
        }
        check_arguments_equivalent(&current.arguments, &wanted.arguments, &EXCHANGE_EQUIVALENCE_ARGUMENTS)
            .map_err(|(argument, received, current)| mismatch(argument, received, current))
    }

    /// Deletes an exchange. Deleting one that does not exist succeeds, as in RabbitMQ.
    pub fn delete_exchange(&self, name: &ExchangeName, if_unused: bool) -> Result<()> {
        if name.is_empty() || name.as_str().starts_with(RESERVED_PREFIX) {
            return Err(Error::ReservedName { kind: EntityKind::Exchange, name: name.to_string() });
        }
        let exchange = {
            let mut exchanges = self.exchanges.write().expect("exchanges lock poisoned");
            let Some(exchange) = exchanges.get(name) else { return Ok(()) };
            if if_unused && exchange.binding_count() > 0 {
                return Err(Error::ExchangeInUse { vhost: self.name.clone(), exchange: name.clone() });
            }
            exchanges.remove(name).expect("checked present")
        };
        self.dismantle_exchange(&exchange);
        Ok(())
    }

    /// Removes the bindings from and to a deleted exchange.
    fn dismantle_exchange(&self, exchange: &Arc<Exchange>) {
        for record in exchange.mark_deleted() {
            self.unbind_record(&record, Destination::Exchange(exchange.clone()));
        }
        for binding in exchange.take_bindings() {
            match &binding.destination {
                Destination::Queue(queue) => queue.remove_binding(exchange.name(), &binding.key, &binding.arguments),
                Destination::Exchange(target) => {
                    target.remove_source(exchange.name(), &binding.key, &binding.arguments)
                }
            }
        }
        if exchange.options().durability == Durability::Durable {
            self.changed();
        }
    }

    /// Removes one binding (recorded at its destination) from its source exchange, which may
    /// then auto-delete.
    fn unbind_record(&self, record: &BindingRecord, destination: Destination) {
        let Ok(source) = self.exchange(&record.exchange) else { return };
        source.unbind(&Binding { destination, key: record.key.clone(), arguments: record.arguments.clone() });
        self.auto_delete_exchange(&source);
    }

    /// Deletes an auto-delete exchange that has lost its last binding.
    fn auto_delete_exchange(&self, exchange: &Arc<Exchange>) {
        if !exchange.should_auto_delete() {
            return;
        }
        {
            let mut exchanges = self.exchanges.write().expect("exchanges lock poisoned");
            match exchanges.get(exchange.name()) {
                Some(current) if Arc::ptr_eq(current, exchange) => exchanges.remove(exchange.name()),
                _ => return,
            };
        }
        self.dismantle_exchange(exchange);
    }

    /// Looks up a queue that `connection` may use.
    pub fn queue(&self, name: &QueueName, connection: ConnectionId) -> Result<Arc<Queue>> {
        let queue = self
            .queues
            .read()
            .expect("queues lock poisoned")
            .get(name)
            .cloned()
            .ok_or_else(|| Error::QueueNotFound { vhost: self.name.clone(), queue: name.clone() })?;
        queue.check_access(connection)?;
        Ok(queue)
    }

    /// The queues whose names start with `prefix` (an adapter's own queues).
    pub fn queues_named_with(&self, prefix: &str) -> Vec<Arc<Queue>> {
        let queues = self.queues.read().expect("queues lock poisoned");
        queues.values().filter(|queue| queue.name().as_str().starts_with(prefix)).cloned().collect()
    }

    /// Declares a queue; an empty name asks for a server-generated one.
    pub fn declare_queue(
        &self,
        name: &QueueName,
        options: QueueOptions,
        declare: Declare,
        connection: ConnectionId,
    ) -> Result<DeclaredQueue> {
        if declare == Declare::Passive {
            // A passive declare counts as use, restarting `x-expires`, as in RabbitMQ.
            let queue = self.queue(name, connection)?;
            queue.touch();
            return Ok(counted(queue));
        }
        let client_named = !name.is_empty();
        let name = if client_named { name.clone() } else { self.generate_queue_name() };
        let mut queues = self.queues.write().expect("queues lock poisoned");
        if let Some(existing) = queues.get(&name).cloned() {
            drop(queues);
            existing.check_access(connection)?;
            self.check_queue_equivalent(&existing, &options)?;
            existing.touch();
            return Ok(counted(existing));
        }
        if client_named && name.as_str().starts_with(RESERVED_PREFIX) {
            return Err(Error::ReservedName { kind: EntityKind::Queue, name: name.to_string() });
        }
        let arguments = QueueArguments::parse(&name, &options.arguments)?;
        let this = self.this.upgrade().expect("a vhost in use is alive");
        let policies = self.policies.read().expect("policies lock poisoned");
        let policy = policy::select(&policies, name.as_str(), ApplyTo::Queues);
        let queue = Queue::new(name.clone(), &this, options, arguments, policy, self.queue_ready_bytes_max);
        drop(policies);
        queues.insert(name, queue.clone());
        drop(queues);
        if is_durable_queue(&queue) {
            self.changed();
        }
        Ok(counted(queue))
    }

    fn check_queue_equivalent(&self, existing: &Queue, wanted: &QueueOptions) -> Result<()> {
        let current = existing.options();
        if current.exclusive_owner.is_some() != wanted.exclusive_owner.is_some() {
            return Err(Error::QueueLocked { vhost: self.name.clone(), queue: existing.name().clone() });
        }
        let mismatch = |argument, received: String, current: String| Error::Inequivalent {
            kind: EntityKind::Queue,
            name: existing.name().to_string(),
            vhost: self.name.clone(),
            argument,
            received,
            current,
        };
        if current.durability != wanted.durability {
            let durable = |durability| (durability == Durability::Durable).to_string();
            return Err(mismatch("durable", durable(wanted.durability), durable(current.durability)));
        }
        if current.auto_delete != wanted.auto_delete {
            return Err(mismatch("auto_delete", wanted.auto_delete.to_string(), current.auto_delete.to_string()));
        }
        check_arguments_equivalent(&current.arguments, &wanted.arguments, &QUEUE_EQUIVALENCE_ARGUMENTS)
            .map_err(|(argument, received, current)| mismatch(argument, received, current))
    }

    /// Sets (or replaces, by name) a policy and applies policies afresh to every queue and
    /// exchange, so existing ones change without being redeclared.
    pub fn set_policy(&self, policy: Policy) {
        {
            let mut policies = self.policies.write().expect("policies lock poisoned");
            match policies.iter_mut().find(|existing| existing.name == policy.name) {
                Some(existing) => *existing = policy,
                None => policies.push(policy),
            }
        }
        self.apply_policies();
    }

    /// Clears a policy; returns whether it existed.
    pub fn clear_policy(&self, name: &str) -> bool {
        let removed = {
            let mut policies = self.policies.write().expect("policies lock poisoned");
            let before = policies.len();
            policies.retain(|policy| policy.name != name);
            policies.len() != before
        };
        if removed {
            self.apply_policies();
        }
        removed
    }

    pub fn policies(&self) -> Vec<Policy> {
        self.policies.read().expect("policies lock poisoned").clone()
    }

    /// Re-applies the current policies to every queue and exchange.
    fn apply_policies(&self) {
        let policies = self.policies();
        let queues: Vec<Arc<Queue>> = self.queues.read().expect("queues lock poisoned").values().cloned().collect();
        for queue in queues {
            queue.apply_policy(policy::select(&policies, queue.name().as_str(), ApplyTo::Queues));
        }
        let exchanges: Vec<Arc<Exchange>> =
            self.exchanges.read().expect("exchanges lock poisoned").values().cloned().collect();
        for exchange in exchanges {
            let policy = policy::select(&policies, exchange.name().as_str(), ApplyTo::Exchanges);
            exchange.set_policy_alternate(policy.and_then(Policy::alternate_exchange).map(ExchangeName::new));
        }
    }

    /// Creates a private reply queue for a direct reply-to consumer of `connection`.
    pub fn create_reply_queue(&self, connection: ConnectionId) -> Arc<Queue> {
        let suffix = self.generate_queue_name();
        let name = QueueName::from(format!("{REPLY_QUEUE_PREFIX}{}", &suffix.as_str()["amq.gen-".len()..]));
        let options = QueueOptions {
            durability: Durability::Transient,
            exclusive_owner: Some(connection),
            auto_delete: false,
            arguments: Table::new(),
        };
        let this = self.this.upgrade().expect("a vhost in use is alive");
        let queue =
            Queue::new(name.clone(), &this, options, QueueArguments::default(), None, self.queue_ready_bytes_max);
        self.reply_queues.write().expect("queues lock poisoned").insert(name, queue.clone());
        queue
    }

    /// Removes a reply queue when its consumer goes.
    pub fn remove_reply_queue(&self, queue: &Arc<Queue>) {
        let removed = self.reply_queues.write().expect("queues lock poisoned").remove(queue.name());
        if removed.is_some() {
            queue.mark_deleted();
        }
    }

    /// Whether `queue` is a direct reply-to queue.
    pub fn is_reply_queue(queue: &Queue) -> bool {
        queue.name().as_str().starts_with(REPLY_QUEUE_PREFIX)
    }

    /// `amq.gen-` followed by 22 URL-safe base64 characters, as RabbitMQ names them.
    fn generate_queue_name(&self) -> QueueName {
        const ALPHABET: &[u8; 64] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_";
        let mut state = self.generated_names.fetch_add(0x9E37_79B9_7F4A_7C15, Ordering::Relaxed);
        let mut name = String::from("amq.gen-");
        for _ in 0..22 {
            // splitmix64: well spread from a counter, enough to make names unguessable in
            // practice; uniqueness comes from the map check in the caller.
            state = state.wrapping_add(0x9E37_79B9_7F4A_7C15);
            let mut mixed = state;
            mixed = (mixed ^ (mixed >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
            mixed = (mixed ^ (mixed >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
            mixed ^= mixed >> 31;
            name.push(ALPHABET[(mixed % 64) as usize] as char);
        }
        QueueName::from(name)
    }

    /// Deletes a queue, returning how many ready messages it held. Deleting a queue that does
    /// not exist succeeds with 0, as in RabbitMQ.
    pub fn delete_queue(
        &self,
        name: &QueueName,
        if_unused: bool,
        if_empty: bool,
        connection: ConnectionId,
    ) -> Result<usize> {
        let queue = match self.queue(name, connection) {
            Ok(queue) => queue,
            Err(Error::QueueNotFound { .. }) => return Ok(0),
            Err(error) => return Err(error),
        };
        if if_unused && queue.consumer_count() > 0 {
            return Err(Error::QueueInUse { vhost: self.name.clone(), queue: name.clone() });
        }
        let message_count = queue.message_count();
        if if_empty && message_count > 0 {
            return Err(Error::QueueNotEmpty { vhost: self.name.clone(), queue: name.clone() });
        }
        self.remove_queue(&queue);
        Ok(message_count)
    }

    /// Removes every queue (the vhost is being deleted): their messages are dropped and their
    /// consumers cancelled.
    pub(crate) fn remove_all_queues(&self) {
        let queues: Vec<Arc<Queue>> = self.queues.read().expect("queues lock poisoned").values().cloned().collect();
        for queue in queues {
            self.remove_queue(&queue);
        }
    }

    /// Removes a queue and its bindings, cancelling its consumers.
    pub fn remove_queue(&self, queue: &Arc<Queue>) {
        {
            let mut queues = self.queues.write().expect("queues lock poisoned");
            match queues.get(queue.name()) {
                Some(current) if Arc::ptr_eq(current, queue) => {
                    queues.remove(queue.name());
                }
                _ => return,
            }
        }
        for record in queue.mark_deleted() {
            self.unbind_record(&record, Destination::Queue(queue.clone()));
        }
        if is_durable_queue(queue) {
            self.changed();
        }
    }

    /// Binds a queue to an exchange.
    pub fn bind_queue(
        &self,
        queue: &QueueName,
        exchange: &ExchangeName,
        key: BindingKey,
        arguments: Table,
        connection: ConnectionId,
    ) -> Result<()> {
        let source = self.source_exchange(exchange)?;
        let queue = self.queue(queue, connection)?;
        source.check_binding(&arguments)?;
        let binding =
            Binding { destination: Destination::Queue(queue.clone()), key: key.clone(), arguments: arguments.clone() };
        if source.bind(binding) {
            queue.add_binding(BindingRecord { exchange: exchange.clone(), key, arguments });
        }
        self.binding_changed(&source, is_durable_queue(&queue));
        Ok(())
    }

    /// Removes a binding. Removing one that does not exist succeeds.
    pub fn unbind_queue(
        &self,
        queue: &QueueName,
        exchange: &ExchangeName,
        key: BindingKey,
        arguments: Table,
        connection: ConnectionId,
    ) -> Result<()> {
        let source = self.source_exchange(exchange)?;
        let queue = self.queue(queue, connection)?;
        let binding =
            Binding { destination: Destination::Queue(queue.clone()), key: key.clone(), arguments: arguments.clone() };
        if source.unbind(&binding) {
            queue.remove_binding(exchange, &key, &arguments);
            self.auto_delete_exchange(&source);
        }
        self.binding_changed(&source, is_durable_queue(&queue));
        Ok(())
    }

    /// Binds exchange `destination` to exchange `source`: what routes through `source` with a
    /// matching key continues through `destination`.
    pub fn bind_exchange(
        &self,
        destination: &ExchangeName,
        source: &ExchangeName,
        key: BindingKey,
        arguments: Table,
    ) -> Result<()> {
        let source_exchange = self.source_exchange(source)?;
        let target = self.source_exchange(destination)?;
        let binding = Binding {
            destination: Destination::Exchange(target.clone()),
            key: key.clone(),
            arguments: arguments.clone(),
        };
        source_exchange.check_binding(&binding.arguments)?;
        if source_exchange.bind(binding) {
            target.add_source(BindingRecord { exchange: source.clone(), key, arguments });
        }
        self.binding_changed(&source_exchange, target.options().durability == Durability::Durable);
        Ok(())
    }

    /// Removes an exchange-to-exchange binding. Removing one that does not exist succeeds.
    pub fn unbind_exchange(
        &self,
        destination: &ExchangeName,
        source: &ExchangeName,
        key: BindingKey,
        arguments: Table,
    ) -> Result<()> {
        let source_exchange = self.source_exchange(source)?;
        let target = self.source_exchange(destination)?;
        let binding = Binding {
            destination: Destination::Exchange(target.clone()),
            key: key.clone(),
            arguments: arguments.clone(),
        };
        if source_exchange.unbind(&binding) {
            target.remove_source(source, &key, &arguments);
            self.auto_delete_exchange(&source_exchange);
        }
        self.binding_changed(&source_exchange, target.options().durability == Durability::Durable);
        Ok(())
    }

    /// A binding changed: durable if both its ends are.
    fn binding_changed(&self, source: &Exchange, destination_durable: bool) {
        if destination_durable && source.options().durability == Durability::Durable {
            self.changed();
        }
    }

    /// An exchange that may take part in explicit bindings: any but the default one.
    fn source_exchange(&self, name: &ExchangeName) -> Result<Arc<Exchange>> {
        if name.is_empty() {
            return Err(Error::DefaultExchange);
        }
        self.exchange(name)
    }

    pub(crate) fn journal(&self) -> &JournalSlot {
        &self.journal
    }

    pub(crate) fn queue_memory_bytes_max(&self) -> usize {
        self.queue_memory_bytes_max
    }

    /// Puts a routed message into its queues. A persistent message bound for durable queues is
    /// journaled first, before any queue holds it, so that its publish record precedes every
    /// record of its delivery or removal.
    pub fn enqueue(&self, message: Message, queues: &[Arc<Queue>]) -> Published {
        self.enqueue_also(message, queues, None)
    }

    /// `enqueue`, with a persistent message's record also naming `also`, a name no queue has:
    /// an adapter's own marker, in the same record as the message (so both survive a crash or
    /// neither does), which recovery hands back under that name and which the adapter removes
    /// itself (`Journal::removed`).
    pub fn enqueue_also(&self, mut message: Message, queues: &[Arc<Queue>], also: Option<&QueueName>) -> Published {
        let mut published = Published::default();
        if let Some(journal) = self.journal.get() {
            if message.properties.delivery_mode() == DeliveryMode::Persistent {
                let mut durable: Vec<&QueueName> =
                    queues.iter().filter(|queue| queue.is_journaled()).map(|queue| queue.name()).collect();
                durable.extend(also);
                if !durable.is_empty() {
                    match journal.publish(&self.name, &durable, &message) {
                        Ok(journaled) => {
                            message.journal = Some(journaled);
                            published.lsn = journal.confirms_wait().then_some(journaled.lsn);
                            published.journal_id = Some(journaled.id);
                        }
                        Err(_) => published.unstored = true,
                    }
                }
            }
        }
        let message = Arc::new(message);
        for queue in queues {
            if published.unstored && queue.is_journaled() {
                published.rejected = true;
                continue;
            }
            published.rejected |= queue.enqueue(message.clone()) == Enqueued::Rejected;
        }
        published
    }

    /// Routes a message published to `exchange`, appending the target queues to `out` without
    /// duplicates. Internal exchanges refuse direct publishes.
    pub fn route(&self, exchange: &Arc<Exchange>, message: &Message, out: &mut Vec<Arc<Queue>>) -> Result<()> {
        if exchange.options().internal {
            return Err(Error::InternalExchange { exchange: exchange.name().clone() });
        }
        self.route_unchecked(exchange, message, out);
        Ok(())
    }

    /// Routes without the publish checks (also used to republish dead letters). Walks
    /// exchange-to-exchange bindings breadth-first, visiting each exchange once so binding loops
    /// terminate; an exchange that routes the message nowhere hands it to its alternate
    /// exchange, if it has one. The default exchange routes to the queue named by the key.
    pub(crate) fn route_unchecked(&self, exchange: &Arc<Exchange>, message: &Message, out: &mut Vec<Arc<Queue>>) {
        // The destinations list doubles as the work list; `visited` only allocates when an
        // exchange-to-exchange binding is followed.
        let mut destinations = Vec::new();
        self.route_one(exchange, message, &mut destinations, out);
        let mut visited: Vec<Arc<Exchange>> = Vec::new();
        let mut index = 0;
        while index < destinations.len() {
            let target = destinations[index].clone();
            index += 1;
            let seen = Arc::ptr_eq(&target, exchange) || visited.iter().any(|done| Arc::ptr_eq(done, &target));
            if !seen {
                visited.push(target.clone());
                self.route_one(&target, message, &mut destinations, out);
            }
        }
        if out.len() > 1 {
            out.sort_unstable_by_key(|queue| Arc::as_ptr(queue) as usize);
            out.dedup_by(|a, b| Arc::ptr_eq(a, b));
        }
    }

    /// Routes through one exchange: queues go to `out`, exchanges to `exchanges`. An exchange
    /// that routes nowhere hands the message to its alternate exchange.
    fn route_one(
        &self,
        exchange: &Exchange,
        message: &Message,
        exchanges: &mut Vec<Arc<Exchange>>,
        out: &mut Vec<Arc<Queue>>,
    ) {
        if exchange.name().is_empty() {
            let key = message.routing_key.as_str();
            let queues = if key.starts_with(REPLY_QUEUE_PREFIX) { &self.reply_queues } else { &self.queues };
            out.extend(queues.read().expect("queues lock poisoned").get(key).cloned());
            return;
        }
        let (queues_before, exchanges_before) = (out.len(), exchanges.len());
        exchange.route(message, &mut |destination| match destination {
            Destination::Queue(queue) => out.push(queue.clone()),
            Destination::Exchange(target) => exchanges.push(target.clone()),
        });
        if out.len() == queues_before && exchanges.len() == exchanges_before {
            if let Some(alternate) = exchange.alternate_exchange() {
                exchanges.extend(self.exchange(&alternate).ok());
            }
        }
    }
}

/// Whether a queue's definition outlives a restart: durable and not exclusive.
fn is_durable_queue(queue: &Queue) -> bool {
    let options = queue.options();
    options.durability == Durability::Durable && options.exclusive_owner.is_none()
}

fn counted(queue: Arc<Queue>) -> DeclaredQueue {
    DeclaredQueue { message_count: queue.message_count(), consumer_count: queue.consumer_count(), queue }
}

/// The queue arguments a redeclare must repeat exactly, as RabbitMQ checks them; others (and
/// unknown ones) may differ.
const QUEUE_EQUIVALENCE_ARGUMENTS: [&str; 11] = [
    "x-expires",
    "x-message-ttl",
    "x-max-length",
    "x-max-length-bytes",
    "x-dead-letter-exchange",
    "x-dead-letter-routing-key",
    "x-max-priority",
    "x-overflow",
    "x-queue-mode",
    "x-queue-type",
    "x-single-active-consumer",
];

/// The exchange arguments a redeclare must repeat exactly.
const EXCHANGE_EQUIVALENCE_ARGUMENTS: [&str; 1] = ["alternate-exchange"];

/// Compares the named declare arguments; on a difference returns the argument's name and the
/// received and current values, as RabbitMQ's error text shows them.
fn check_arguments_equivalent(
    current: &Table,
    wanted: &Table,
    names: &[&'static str],
) -> Result<(), (&'static str, String, String)> {
    let describe = |value: Option<&Value>| match value {
        None => "none".to_owned(),
        Some(value) => match value.as_str() {
            Some(text) => text.to_owned(),
            None => value.as_i64().map_or_else(|| format!("{value:?}"), |number| number.to_string()),
        },
    };
    for name in names {
        let (had, got) = (current.get(name), wanted.get(name));
        if had != got {
            return Err((name, describe(got), describe(had)));
        }
    }
    Ok(())
}
