//! The AMQP 0-9-1 adapter, with RabbitMQ's extensions (publisher confirms, basic.nack, consumer
//! cancel notifications). It turns frames into calls on the core and deliveries back into
//! frames; it holds no broker state of its own beyond each connection's channels.
//!
//! # Layout
//! - `authorize`: the permissions (configure, write, read) each channel method needs.
//! - `channel`: one channel's state: publish assembly, confirms, consumers, unacked deliveries.
//! - `codec`: sans-IO frame codec; methods generated from the spec JSON.
//! - `connection`: the I/O loop, handshake, frame routing, heartbeats, close handshakes.
//! - `delivery`: inbox items to basic.deliver frames.
//! - `dispatch`: channel method handlers.
//! - `error`: core and codec errors to reply codes.
//! - `translate`: pure functions between AMQP forms and the core's.
//! - `tx`: transactions.

mod authorize;
mod channel;
pub mod codec;
pub mod connection;
mod delivery;
mod dispatch;
pub mod error;
pub mod translate;
mod tx;

pub use connection::{serve, AmqpConfig};
