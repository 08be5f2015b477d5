//! A published message. It is built once by the publisher's adapter and shared, never copied,
//! by every queue it is routed to.

use std::time::Duration;

use bytes::Bytes;

use crate::error::{Error, Result};
use crate::journal::JournalRef;
use crate::name::ExchangeName;
use crate::properties::Properties;
use crate::topic::RoutingKey;

#[derive(Debug, PartialEq)]
pub struct Message {
    /// The exchange it was published to, reported back to consumers.
    pub exchange: ExchangeName,
    pub routing_key: RoutingKey,
    pub properties: Properties,
    pub body: Bytes,
    /// Its place in the journal, set by the core when a persistent message enters a durable
    /// queue; adapters build messages with `None`.
    pub journal: Option<JournalRef>,
}

impl Message {
    /// Body size, as counted against byte limits.
    pub fn body_bytes(&self) -> usize {
        self.body.len()
    }
}

impl Message {
    /// The message's own TTL, from its `expiration` property (milliseconds as decimal text).
    pub fn ttl(&self) -> Option<Duration> {
        let text = self.properties.expiration.as_deref()?;
        text.parse::<u64>().ok().map(Duration::from_millis)
    }

    /// Checks the `expiration` property: absent, or a non-negative integer of milliseconds.
    pub fn check_expiration(&self) -> Result<()> {
        match self.properties.expiration.as_deref() {
            Some(text) if text.parse::<u64>().is_err() => Err(Error::InvalidExpiration { expiration: text.to_owned() }),
            _ => Ok(()),
        }
    }
}
