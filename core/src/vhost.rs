//! Virtual hosts: namespaces of exchanges and queues, and the operations that touch both.

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, RwLock};

use crate::error::{EntityKind, Error, Result};
use crate::exchange::{Binding, Exchange, ExchangeKind, ExchangeOptions, QueueRef};
use crate::message::Message;
use crate::name::{ConnectionId, ExchangeName, QueueName, VhostName};
use crate::queue::{BindingRecord, Durability, Queue, QueueArguments, QueueOptions};
use crate::topic::BindingKey;
use crate::value::Table;

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

/// Names with this prefix are reserved for the broker.
const RESERVED_PREFIX: &str = "amq.";

#[derive(Debug)]
pub struct Vhost {
    name: VhostName,
    /// Itself, handed to queues for dead-lettering and self-deletion.
    this: std::sync::Weak<Vhost>,
    exchanges: RwLock<HashMap<ExchangeName, Arc<Exchange>>>,
    queues: RwLock<HashMap<QueueName, Arc<Queue>>>,
    /// Seeds server-generated queue names.
    generated_names: AtomicU64,
    /// Bound on each queue's ready bytes before publishers wait.
    queue_ready_bytes_max: usize,
}

impl Vhost {
    pub(crate) fn new(name: VhostName, queue_ready_bytes_max: usize) -> Arc<Vhost> {
        let mut exchanges = HashMap::new();
        for (exchange, kind) in PREDECLARED {
            let options = ExchangeOptions {
                kind,
                durability: Durability::Durable,
                auto_delete: false,
                internal: false,
                arguments: Table::new(),
            };
            exchanges.insert(
                ExchangeName::new(exchange),
                Exchange::new(ExchangeName::new(exchange), options),
            );
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
            generated_names: AtomicU64::new(seed),
            queue_ready_bytes_max,
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
            .ok_or_else(|| Error::ExchangeNotFound {
                vhost: self.name.clone(),
                exchange: name.clone(),
            })
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
            return Err(Error::ReservedName {
                kind: EntityKind::Exchange,
                name: name.to_string(),
            });
        }
        let exchange = Exchange::new(name.clone(), options);
        exchanges.insert(name.clone(), exchange.clone());
        Ok(exchange)
    }

    fn check_exchange_equivalent(
        &self,
        existing: &Exchange,
        wanted: &ExchangeOptions,
    ) -> Result<()> {
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
            return Err(mismatch(
                "type",
                wanted.kind.name().into(),
                current.kind.name().into(),
            ));
        }
        if current.durability != wanted.durability {
            let durable = |durability| (durability == Durability::Durable).to_string();
            return Err(mismatch(
                "durable",
                durable(wanted.durability),
                durable(current.durability),
            ));
        }
        if current.auto_delete != wanted.auto_delete {
            return Err(mismatch(
                "auto_delete",
                wanted.auto_delete.to_string(),
                current.auto_delete.to_string(),
            ));
        }
        if current.internal != wanted.internal {
            return Err(mismatch(
                "internal",
                wanted.internal.to_string(),
                current.internal.to_string(),
            ));
        }
        check_arguments_equivalent(&current.arguments, &wanted.arguments)
            .map_err(|argument| mismatch(argument, "<changed>".into(), "<current>".into()))
    }

    /// Deletes an exchange. Deleting one that does not exist succeeds, as in RabbitMQ.
    pub fn delete_exchange(&self, name: &ExchangeName, if_unused: bool) -> Result<()> {
        if name.is_empty() || name.as_str().starts_with(RESERVED_PREFIX) {
            return Err(Error::ReservedName {
                kind: EntityKind::Exchange,
                name: name.to_string(),
            });
        }
        let mut exchanges = self.exchanges.write().expect("exchanges lock poisoned");
        let Some(exchange) = exchanges.get(name) else {
            return Ok(());
        };
        if if_unused && exchange.binding_count() > 0 {
            return Err(Error::ExchangeInUse {
                vhost: self.name.clone(),
                exchange: name.clone(),
            });
        }
        exchanges.remove(name);
        Ok(())
    }

    /// Looks up a queue that `connection` may use.
    pub fn queue(&self, name: &QueueName, connection: ConnectionId) -> Result<Arc<Queue>> {
        let queue = self
            .queues
            .read()
            .expect("queues lock poisoned")
            .get(name)
            .cloned()
            .ok_or_else(|| Error::QueueNotFound {
                vhost: self.name.clone(),
                queue: name.clone(),
            })?;
        queue.check_access(connection)?;
        Ok(queue)
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
            return self.queue(name, connection).map(counted);
        }
        let name = if name.is_empty() {
            self.generate_queue_name()
        } else {
            name.clone()
        };
        let mut queues = self.queues.write().expect("queues lock poisoned");
        if let Some(existing) = queues.get(&name).cloned() {
            drop(queues);
            existing.check_access(connection)?;
            self.check_queue_equivalent(&existing, &options)?;
            existing.touch();
            return Ok(counted(existing));
        }
        if name.as_str().starts_with(RESERVED_PREFIX) && !name.as_str().starts_with("amq.gen-") {
            return Err(Error::ReservedName {
                kind: EntityKind::Queue,
                name: name.to_string(),
            });
        }
        let arguments = QueueArguments::parse(&name, &options.arguments)?;
        let this = self.this.upgrade().expect("a vhost in use is alive");
        let queue = Queue::new(
            name.clone(),
            &this,
            options,
            arguments,
            self.queue_ready_bytes_max,
        );
        queues.insert(name, queue.clone());
        drop(queues);
        Ok(counted(queue))
    }

    fn check_queue_equivalent(&self, existing: &Queue, wanted: &QueueOptions) -> Result<()> {
        let current = existing.options();
        if current.exclusive_owner.is_some() != wanted.exclusive_owner.is_some() {
            return Err(Error::QueueLocked {
                vhost: self.name.clone(),
                queue: existing.name().clone(),
            });
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
            return Err(mismatch(
                "durable",
                durable(wanted.durability),
                durable(current.durability),
            ));
        }
        if current.auto_delete != wanted.auto_delete {
            return Err(mismatch(
                "auto_delete",
                wanted.auto_delete.to_string(),
                current.auto_delete.to_string(),
            ));
        }
        check_arguments_equivalent(&current.arguments, &wanted.arguments)
            .map_err(|argument| mismatch(argument, "<changed>".into(), "<current>".into()))
    }

    /// `amq.gen-` followed by 22 URL-safe base64 characters, as RabbitMQ names them.
    fn generate_queue_name(&self) -> QueueName {
        const ALPHABET: &[u8; 64] =
            b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_";
        let mut state = self
            .generated_names
            .fetch_add(0x9E37_79B9_7F4A_7C15, Ordering::Relaxed);
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
            return Err(Error::QueueInUse {
                vhost: self.name.clone(),
                queue: name.clone(),
            });
        }
        let message_count = queue.message_count();
        if if_empty && message_count > 0 {
            return Err(Error::QueueNotEmpty {
                vhost: self.name.clone(),
                queue: name.clone(),
            });
        }
        self.remove_queue(&queue);
        Ok(message_count)
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
            if let Ok(exchange) = self.exchange(&record.exchange) {
                exchange.unbind(&Binding {
                    queue: QueueRef(queue.clone()),
                    key: record.key,
                    arguments: record.arguments,
                });
            }
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
        if exchange.is_empty() {
            return Err(Error::DefaultExchange);
        }
        let queue = self.queue(queue, connection)?;
        let target = self.exchange(exchange)?;
        let binding = Binding {
            queue: QueueRef(queue.clone()),
            key: key.clone(),
            arguments: arguments.clone(),
        };
        if target.bind(binding) {
            queue.add_binding(BindingRecord {
                exchange: exchange.clone(),
                key,
                arguments,
            });
        }
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
        if exchange.is_empty() {
            return Err(Error::DefaultExchange);
        }
        let queue = self.queue(queue, connection)?;
        let target = self.exchange(exchange)?;
        let binding = Binding {
            queue: QueueRef(queue.clone()),
            key: key.clone(),
            arguments: arguments.clone(),
        };
        if target.unbind(&binding) {
            queue.remove_binding(exchange, &key, &arguments);
        }
        Ok(())
    }

    /// Routes a message published to `exchange`, appending the target queues to `out` without
    /// duplicates. The default exchange routes to the queue named by the routing key.
    pub fn route(
        &self,
        exchange: &Exchange,
        message: &Message,
        out: &mut Vec<Arc<Queue>>,
    ) -> Result<()> {
        if exchange.options().internal {
            return Err(Error::InternalExchange {
                exchange: exchange.name().clone(),
            });
        }
        self.route_unchecked(exchange, message, out);
        Ok(())
    }

    /// Routes without the publish checks: for the broker's own republishing (dead letters).
    pub(crate) fn route_unchecked(
        &self,
        exchange: &Exchange,
        message: &Message,
        out: &mut Vec<Arc<Queue>>,
    ) {
        if exchange.name().is_empty() {
            let queues = self.queues.read().expect("queues lock poisoned");
            if let Some(queue) = queues.get(message.routing_key.as_str()) {
                out.push(queue.clone());
            }
            return;
        }
        exchange.route(message, out);
        if out.len() > 1 {
            out.sort_unstable_by_key(|queue| Arc::as_ptr(queue) as usize);
            out.dedup_by(|a, b| Arc::ptr_eq(a, b));
        }
    }
}

fn counted(queue: Arc<Queue>) -> DeclaredQueue {
    DeclaredQueue {
        message_count: queue.message_count(),
        consumer_count: queue.consumer_count(),
        queue,
    }
}

/// Compares declare arguments; on a difference returns the first argument name that differs.
fn check_arguments_equivalent(current: &Table, wanted: &Table) -> Result<(), &'static str> {
    if current.same_entries(wanted) {
        Ok(())
    } else {
        Err("arguments")
    }
}
