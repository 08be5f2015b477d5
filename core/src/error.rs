//! The core's errors. They are protocol-neutral: each adapter's `error.rs` maps them to its own
//! wire codes (reply codes, reason codes, error frames). Their `Display` text is
//! RabbitMQ's wording, which clients and operators already recognise.

use crate::name::{ExchangeName, QueueName, UserName, VhostName};

/// What kind of entity an error is about.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum EntityKind {
    Exchange,
    Queue,
}

impl std::fmt::Display for EntityKind {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            EntityKind::Exchange => "exchange",
            EntityKind::Queue => "queue",
        })
    }
}

#[derive(Debug, thiserror::Error, Clone, PartialEq)]
pub enum Error {
    #[error("no exchange '{exchange}' in vhost '{vhost}'")]
    ExchangeNotFound { vhost: VhostName, exchange: ExchangeName },

    #[error("no queue '{queue}' in vhost '{vhost}'")]
    QueueNotFound { vhost: VhostName, queue: QueueName },

    #[error("vhost '{vhost}' not found")]
    VhostNotFound { vhost: VhostName },

    #[error(
        "cannot obtain exclusive access to locked queue '{queue}' in vhost '{vhost}'. It could be \
         originally declared on another connection or the exclusive property value does not \
         match that of the original declaration."
    )]
    QueueLocked { vhost: VhostName, queue: QueueName },

    #[error("queue '{queue}' in vhost '{vhost}' in exclusive use")]
    QueueInExclusiveUse { vhost: VhostName, queue: QueueName },

    #[error(
        "inequivalent arg '{argument}' for {kind} '{name}' in vhost '{vhost}': received \
         '{received}' but current is '{current}'"
    )]
    Inequivalent {
        kind: EntityKind,
        name: String,
        vhost: VhostName,
        argument: &'static str,
        received: String,
        current: String,
    },

    #[error("queue '{queue}' in vhost '{vhost}' in use")]
    QueueInUse { vhost: VhostName, queue: QueueName },

    #[error("queue '{queue}' in vhost '{vhost}' not empty")]
    QueueNotEmpty { vhost: VhostName, queue: QueueName },

    #[error("exchange '{exchange}' in vhost '{vhost}' in use")]
    ExchangeInUse { vhost: VhostName, exchange: ExchangeName },

    #[error("{kind} name '{name}' contains reserved prefix 'amq.*'")]
    ReservedName { kind: EntityKind, name: String },

    #[error("operation not permitted on the default exchange")]
    DefaultExchange,

    #[error("cannot publish to internal exchange '{exchange}'")]
    InternalExchange { exchange: ExchangeName },

    #[error("unknown exchange type '{type_name}'")]
    UnknownExchangeType { type_name: String },

    #[error("invalid arg '{argument}' for {kind} '{name}': {reason}")]
    InvalidArgument { kind: EntityKind, name: String, argument: String, reason: &'static str },

    #[error("invalid policy '{policy}': {reason}")]
    InvalidPolicy { policy: String, reason: String },

    #[error("invalid expiration '{expiration}' for message")]
    InvalidExpiration { expiration: String },

    #[error("access to vhost '{vhost}' refused for user '{user}'")]
    VhostAccessRefused { vhost: VhostName, user: UserName },

    /// RabbitMQ's words for a missing configure, write or read permission.
    #[error("access to {kind} '{name}' in vhost '{vhost}' refused for user '{user}'")]
    AccessRefused {
        kind: crate::auth::ResourceKind,
        name: String,
        vhost: VhostName,
        user: UserName,
        permission: crate::auth::Permission,
    },

    /// An auth backend could not answer (its server is down, it timed out, it failed): the
    /// request is refused, but the refusal is not remembered.
    #[error("the auth backend '{backend}' could not decide: {reason}")]
    AuthBackendFailed { backend: String, reason: String },

    #[error("login refused for user '{user}'")]
    LoginRefused { user: UserName },

    #[error("user '{user}' can only connect via localhost")]
    LoopbackOnly { user: UserName },

    #[error("{what} limit of {limit} reached")]
    ResourceLimit { what: &'static str, limit: usize },
}

pub type Result<T, E = Error> = std::result::Result<T, E>;
