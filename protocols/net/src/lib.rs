//! Transport helpers shared by the protocol adapters.
//!
//! # Layout
//! - `read_buffer`: sizes a connection's read buffer to its traffic.
//! - `write`: writes that give up on a peer that stopped reading.

mod read_buffer;
mod write;

pub use read_buffer::ReadSizer;
pub use write::{write_all_bounded, WRITE_TIMEOUT_DEFAULT};
