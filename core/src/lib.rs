//! Warren's core: the broker model every protocol adapter drives.
//!
//! It knows virtual hosts, exchanges, queues, bindings, consumers and credit, and nothing about
//! any wire protocol. Adapters translate their frames into calls on [`Broker`] and [`Vhost`],
//! and turn the [`Delivery`] values that arrive in a session's [`Inbox`] back into frames.
//!
//! # Layout
//! - `auth`: the `Authenticator` trait and the internal user database.
//! - `broker`: the broker handle: vhosts, authenticator, settings.
//! - `definitions`: durable exchanges, queues and bindings as plain data.
//! - `error`: protocol-neutral errors.
//! - `exchange`: exchange types and their routers.
//! - `journal`: the durable log persistent messages are written to, as the core sees it.
//! - `limits`: default bounds.
//! - `message`: a published message, shared by every queue it reaches.
//! - `name`: identifier newtypes.
//! - `policy`: operator policies matched to queues and exchanges by name.
//! - `properties`: message metadata.
//! - `queue`: queues, consumers, credit and session inboxes.
//! - `shutdown`: the task tracker and cancellation token.
//! - `topic`: routing keys, binding keys and the word trie.
//! - `value`: typed values and tables.
//! - `vhost`: a namespace of exchanges and queues.

pub mod auth;
pub mod broker;
pub mod definitions;
pub mod error;
pub mod exchange;
pub mod journal;
pub mod limits;
pub mod message;
pub mod name;
pub mod policy;
pub mod properties;
pub mod queue;
pub mod shutdown;
pub mod topic;
pub mod value;
pub mod vhost;

pub use broker::{Broker, BrokerConfig};
pub use error::{Error, Result};
pub use message::Message;
pub use queue::{Delivery, Inbox, InboxItem, Queue};
pub use vhost::Vhost;
