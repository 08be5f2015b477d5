//! The MQTT 3.1, 3.1.1 and 5 adapter (MQTT 5 translated at the edge, see `v5`). Publishes ride `amq.topic` (topic `a/b` is routing key
//! `a.b`), and each session has a queue bound there once per subscription, as in RabbitMQ's MQTT
//! plugin, so AMQP and MQTT peers exchange messages both ways.
//!
//! # Layout
//! - `codec`: mqttbytes' packets, plus the MQTT 3.1 CONNECT and size bounds.
//! - `kept`: what a persistent session keeps between connections, and its journal record.
//! - `inbound`: PUBLISH (QoS 0-2), PUBREL, SUBSCRIBE, UNSUBSCRIBE and the last will.
//! - `outbound`: deliveries, packet ids, PUBACK, retained messages on subscribe.
//! - `session`: CONNECT, authentication, takeover, keep-alive, the read loop.
//! - `shared`: shared subscriptions (`$share/{group}/{filter}`).
//! - `state`: what connections share: settings, the session registry, retained messages.
//! - `translate`: topics and filters to routing and binding keys.
//! - `v5`: MQTT 5 packets to and from the 3.1.1 forms the session works with.

pub mod codec;
mod inbound;
pub mod kept;
mod outbound;
mod session;
mod shared;
pub mod state;
pub mod translate;
pub mod v5;

pub use session::serve;
pub use state::{MqttConfig, MqttState};
