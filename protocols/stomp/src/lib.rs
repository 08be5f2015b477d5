//! The STOMP 1.0/1.1/1.2 adapter, with RabbitMQ's destinations: `/queue/`, `/topic/` (through
//! `amq.topic`, shared with MQTT and AMQP), `/exchange/`, `/amq/queue/` and `/temp-queue/`.
//!
//! # Layout
//! - `authorize`: the permissions (configure, write, read) each frame needs.
//! - `codec`: frames, header escaping, content-length bodies, bounds.
//! - `destination`: destination strings.
//! - `messaging`: SEND, SUBSCRIBE, ACK/NACK, MESSAGE delivery, release.
//! - `session`: CONNECT, versions, heart-beats, transactions, receipts, errors, the read loop.
//! - `translate`: headers to message properties and back.

mod authorize;
pub mod codec;
pub mod destination;
mod messaging;
mod session;
pub mod translate;

pub use session::{serve, StompConfig, StompState};
