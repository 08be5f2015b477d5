//! Durable definitions: vhosts, users and their permissions, runtime policies, and the durable
//! exchanges, queues and bindings of every vhost, as plain data
//! the server can store and restore. The core takes no part in the storage; it offers a snapshot
//! (`Broker::durable_definitions`), a way to recreate one (`Broker::restore`), and a hook called
//! after every change to a durable entity (`Broker::on_definitions_changed`).

use crate::auth::User;
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

/// A policy set at run time (through the management API), kept with the definitions. Policies
/// from the config file are not: the file is their source.
#[derive(Clone, Debug, PartialEq)]
pub struct PolicyDefinition {
    pub vhost: VhostName,
    pub name: String,
    pub pattern: String,
    /// `queues`, `exchanges` or `all`.
    pub apply_to: String,
    pub priority: i32,
    pub definition: Table,
}

/// Everything durable, across vhosts. Users (with their permissions) come from the internal
/// user database, which the server snapshots beside the broker's own definitions.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct Definitions {
    pub vhosts: Vec<VhostName>,
    pub exchanges: Vec<ExchangeDefinition>,
    pub queues: Vec<QueueDefinition>,
    pub bindings: Vec<BindingDefinition>,
    /// `None` when the stored file predates users (then the default `guest` stays).
    pub users: Option<Vec<User>>,
    pub policies: Vec<PolicyDefinition>,
}
