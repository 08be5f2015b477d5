//! Durable definitions: the durable exchanges, queues and bindings of every vhost, as plain data
//! the server can store and restore. The core takes no part in the storage; it offers a snapshot
//! (`Broker::durable_definitions`), a way to recreate one (`Broker::restore`), and a hook called
//! after every change to a durable entity (`Broker::on_definitions_changed`).

use crate::exchange::ExchangeKind;
use crate::name::VhostName;
use crate::value::Table;

#[derive(Clone, Debug, PartialEq)]
pub struct ExchangeDefinition {
    pub vhost: VhostName,
    pub name: String,
    pub kind: ExchangeKind,
    pub auto_delete: bool,
    pub internal: bool,
    pub arguments: Table,
}

#[derive(Clone, Debug, PartialEq)]
pub struct QueueDefinition {
    pub vhost: VhostName,
    pub name: String,
    pub auto_delete: bool,
    pub arguments: Table,
}

/// What a binding leads to.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum DestinationKind {
    Queue,
    Exchange,
}

#[derive(Clone, Debug, PartialEq)]
pub struct BindingDefinition {
    pub vhost: VhostName,
    pub source: String,
    pub destination: String,
    pub destination_kind: DestinationKind,
    /// The binding key in its canonical text form.
    pub key: String,
    pub arguments: Table,
}

/// Everything durable, across vhosts.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct Definitions {
    pub vhosts: Vec<VhostName>,
    pub exchanges: Vec<ExchangeDefinition>,
    pub queues: Vec<QueueDefinition>,
    pub bindings: Vec<BindingDefinition>,
}
