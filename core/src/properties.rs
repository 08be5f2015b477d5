//! Message properties, the metadata that travels beside a body.

use crate::value::Table;

/// Whether a message should survive a broker restart when it sits in a durable queue.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum DeliveryMode {
    Transient,
    Persistent,
}

/// A message's properties. Every field is optional, as on the wire: an absent field is never
/// rendered by an adapter.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct Properties {
    pub content_type: Option<String>,
    pub content_encoding: Option<String>,
    pub headers: Option<Table>,
    /// The raw delivery mode octet (1 transient, 2 persistent), kept as sent.
    pub delivery_mode: Option<u8>,
    pub priority: Option<u8>,
    pub correlation_id: Option<String>,
    pub reply_to: Option<String>,
    /// Per-message TTL in milliseconds, as decimal text (RabbitMQ's form).
    pub expiration: Option<String>,
    pub message_id: Option<String>,
    /// Seconds since the Unix epoch.
    pub timestamp: Option<u64>,
    /// The application's message type name (the `type` property).
    pub kind: Option<String>,
    pub user_id: Option<String>,
    pub app_id: Option<String>,
    pub cluster_id: Option<String>,
}

impl Properties {
    pub fn delivery_mode(&self) -> DeliveryMode {
        match self.delivery_mode {
            Some(2) => DeliveryMode::Persistent,
            _ => DeliveryMode::Transient,
        }
    }
}
