//! A published message. It is built once by the publisher's adapter and shared, never copied,
//! by every queue it is routed to.

use bytes::Bytes;

use crate::name::ExchangeName;
use crate::properties::Properties;
use crate::topic::RoutingKey;

#[derive(Debug)]
pub struct Message {
    /// The exchange it was published to, reported back to consumers.
    pub exchange: ExchangeName,
    pub routing_key: RoutingKey,
    pub properties: Properties,
    pub body: Bytes,
}

impl Message {
    /// Body plus property sizes, as counted against byte limits.
    pub fn body_bytes(&self) -> usize {
        self.body.len()
    }
}
