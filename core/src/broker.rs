//! The broker: vhosts, the authenticator and the settings every adapter shares.

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, RwLock};

use crate::auth::{Authenticator, Credentials, Principal};
use crate::definitions::{Definitions, DestinationKind};
use crate::error::{Error, Result};
use crate::exchange::ExchangeOptions;
use crate::journal::{Journal, JournalSlot};
use crate::limits;
use crate::name::{ConnectionId, VhostName};
use crate::name::{ExchangeName, QueueName};
use crate::queue::{Durability, QueueOptions};
use crate::shutdown::Shutdown;
use crate::topic::BindingKey;
use crate::vhost::{ChangeHook, Declare, Vhost};

/// Settings shared by every adapter.
#[derive(Clone, Debug)]
pub struct BrokerConfig {
    /// See [`limits::QUEUE_READY_BYTES_MAX`].
    pub queue_ready_bytes_max: usize,
    /// See [`limits::INBOX_CAPACITY`].
    pub inbox_capacity: u32,
    /// See [`limits::QUEUE_MEMORY_BYTES_MAX`].
    pub queue_memory_bytes_max: usize,
    /// The product name and version reported to clients.
    pub product: String,
    pub version: String,
}

impl Default for BrokerConfig {
    fn default() -> Self {
        BrokerConfig {
            queue_ready_bytes_max: limits::QUEUE_READY_BYTES_MAX,
            inbox_capacity: limits::INBOX_CAPACITY,
            queue_memory_bytes_max: limits::QUEUE_MEMORY_BYTES_MAX,
            product: "Warren".into(),
            version: env!("CARGO_PKG_VERSION").into(),
        }
    }
}

#[derive(Debug)]
pub struct Broker {
    vhosts: RwLock<HashMap<VhostName, Arc<Vhost>>>,
    authenticator: Arc<dyn Authenticator>,
    next_connection: AtomicU64,
    config: BrokerConfig,
    shutdown: Shutdown,
    /// Called after durable definitions change; shared with every vhost.
    on_change: ChangeHook,
    /// The message journal, shared with every vhost and queue.
    journal: JournalSlot,
}

impl Broker {
    /// A broker with the default vhost `/`.
    pub fn new(config: BrokerConfig, authenticator: Arc<dyn Authenticator>, shutdown: Shutdown) -> Arc<Broker> {
        let broker = Broker {
            vhosts: RwLock::new(HashMap::new()),
            authenticator,
            next_connection: AtomicU64::new(1),
            config,
            shutdown,
            on_change: ChangeHook::default(),
            journal: JournalSlot::default(),
        };
        broker.add_vhost(VhostName::new("/"));
        Arc::new(broker)
    }

    pub fn config(&self) -> &BrokerConfig {
        &self.config
    }

    pub fn shutdown(&self) -> &Shutdown {
        &self.shutdown
    }

    pub fn add_vhost(&self, name: VhostName) -> Arc<Vhost> {
        let mut vhosts = self.vhosts.write().expect("vhosts lock poisoned");
        let on_change = self.on_change.clone();
        let journal = self.journal.clone();
        vhosts
            .entry(name.clone())
            .or_insert_with(|| {
                let bounds = (self.config.queue_ready_bytes_max, self.config.queue_memory_bytes_max);
                Vhost::new(name, bounds, on_change, journal)
            })
            .clone()
    }

    /// Sets the journal persistent messages on durable queues are written to (once, before any
    /// definition is restored; later calls are ignored). Without one, messages live in memory.
    pub fn set_journal(&self, journal: Arc<dyn Journal>) {
        self.journal.set(journal);
    }

    pub fn journal(&self) -> Option<&Arc<dyn Journal>> {
        self.journal.get()
    }

    /// Sets the hook called after every change to a durable exchange, queue or binding (once;
    /// later calls are ignored). The hook runs on the changing task, with no broker lock held.
    pub fn on_definitions_changed(&self, hook: impl Fn() + Send + Sync + 'static) {
        self.on_change.set(Box::new(hook));
    }

    /// A snapshot of every durable definition.
    pub fn durable_definitions(&self) -> Definitions {
        let vhosts: Vec<Arc<Vhost>> = self.vhosts.read().expect("vhosts lock poisoned").values().cloned().collect();
        let mut definitions = Definitions::default();
        for vhost in vhosts {
            definitions.vhosts.push(vhost.name().clone());
            vhost.durable_definitions(&mut definitions);
        }
        definitions
    }

    /// Recreates stored definitions (at start, before any client connects): vhosts, then
    /// exchanges, queues and bindings. Returns the entries that could not be recreated.
    pub fn restore(&self, definitions: &Definitions) -> Vec<Error> {
        let connection = ConnectionId(0);
        let mut failures = Vec::new();
        for name in &definitions.vhosts {
            self.add_vhost(name.clone());
        }
        let vhost_of = |name: &VhostName| self.add_vhost(name.clone());
        for exchange in &definitions.exchanges {
            let options = ExchangeOptions {
                kind: exchange.kind,
                durability: Durability::Durable,
                auto_delete: exchange.auto_delete,
                internal: exchange.internal,
                arguments: exchange.arguments.clone(),
            };
            let name = ExchangeName::new(&exchange.name);
            if let Err(error) = vhost_of(&exchange.vhost).declare_exchange(&name, options, Declare::Create) {
                failures.push(error);
            }
        }
        for queue in &definitions.queues {
            let options = QueueOptions {
                durability: Durability::Durable,
                exclusive_owner: None,
                auto_delete: queue.auto_delete,
                arguments: queue.arguments.clone(),
            };
            let name = QueueName::new(&queue.name);
            if let Err(error) = vhost_of(&queue.vhost).declare_queue(&name, options, Declare::Create, connection) {
                failures.push(error);
            }
        }
        for binding in &definitions.bindings {
            let vhost = vhost_of(&binding.vhost);
            let key = BindingKey::parse(&binding.key);
            let source = ExchangeName::new(&binding.source);
            let result = match binding.destination_kind {
                DestinationKind::Queue => vhost.bind_queue(
                    &QueueName::new(&binding.destination),
                    &source,
                    key,
                    binding.arguments.clone(),
                    connection,
                ),
                DestinationKind::Exchange => vhost.bind_exchange(
                    &ExchangeName::new(&binding.destination),
                    &source,
                    key,
                    binding.arguments.clone(),
                ),
            };
            if let Err(error) = result {
                failures.push(error);
            }
        }
        failures
    }

    /// Creates a vhost at run time; false if it exists. Stored with the definitions.
    pub fn create_vhost(&self, name: VhostName) -> bool {
        if self.vhost(&name).is_some() {
            return false;
        }
        self.add_vhost(name);
        self.on_change.call();
        true
    }

    /// Deletes a vhost with everything in it (its queues' messages included); false if there
    /// was none. Connections already open on it keep their handle until they close.
    pub fn delete_vhost(&self, name: &VhostName) -> bool {
        let removed = self.vhosts.write().expect("vhosts lock poisoned").remove(name);
        let Some(vhost) = removed else { return false };
        vhost.remove_all_queues();
        self.on_change.call();
        true
    }

    /// Every vhost's name, sorted.
    pub fn vhost_names(&self) -> Vec<VhostName> {
        let mut names: Vec<VhostName> = self.vhosts.read().expect("vhosts lock poisoned").keys().cloned().collect();
        names.sort_by(|a, b| a.as_str().cmp(b.as_str()));
        names
    }

    /// Tells the server that something it stores beside the broker's definitions (users,
    /// permissions, runtime policies) changed.
    pub fn definitions_changed(&self) {
        self.on_change.call();
    }

    pub fn vhost(&self, name: &VhostName) -> Option<Arc<Vhost>> {
        self.vhosts.read().expect("vhosts lock poisoned").get(name).cloned()
    }

    pub fn next_connection_id(&self) -> ConnectionId {
        ConnectionId(self.next_connection.fetch_add(1, Ordering::Relaxed))
    }

    pub async fn authenticate(&self, credentials: &Credentials) -> Result<Principal> {
        self.authenticator.authenticate(credentials).await
    }

    /// A session's resource permissions in a vhost it has opened.
    pub fn access(&self, principal: &Principal, vhost: &VhostName) -> Arc<crate::auth::Access> {
        Arc::new(crate::auth::Access::new(self.authenticator.clone(), principal.clone(), vhost.clone()))
    }

    /// Opens a vhost for an authenticated principal.
    pub async fn open_vhost(&self, principal: &Principal, name: &VhostName) -> Result<Arc<Vhost>> {
        let vhost = self.vhost(name).ok_or_else(|| Error::VhostNotFound { vhost: name.clone() })?;
        self.authenticator.authorize_vhost(principal, name).await?;
        Ok(vhost)
    }
}
