//! The broker: vhosts, the authenticator and the settings every adapter shares.

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, RwLock};

use crate::auth::{Authenticator, Credentials, Principal};
use crate::error::{Error, Result};
use crate::limits;
use crate::name::{ConnectionId, VhostName};
use crate::shutdown::Shutdown;
use crate::vhost::Vhost;

/// Settings shared by every adapter.
#[derive(Clone, Debug)]
pub struct BrokerConfig {
    /// See [`limits::QUEUE_READY_BYTES_MAX`].
    pub queue_ready_bytes_max: usize,
    /// See [`limits::INBOX_CAPACITY`].
    pub inbox_capacity: u32,
    /// The product name and version reported to clients.
    pub product: String,
    pub version: String,
}

impl Default for BrokerConfig {
    fn default() -> Self {
        BrokerConfig {
            queue_ready_bytes_max: limits::QUEUE_READY_BYTES_MAX,
            inbox_capacity: limits::INBOX_CAPACITY,
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
        vhosts.entry(name.clone()).or_insert_with(|| Vhost::new(name, self.config.queue_ready_bytes_max)).clone()
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

    /// Opens a vhost for an authenticated principal.
    pub async fn open_vhost(&self, principal: &Principal, name: &VhostName) -> Result<Arc<Vhost>> {
        let vhost = self.vhost(name).ok_or_else(|| Error::VhostNotFound { vhost: name.clone() })?;
        self.authenticator.authorize_vhost(principal, name).await?;
        Ok(vhost)
    }
}
