//! Transport helpers shared by the protocol adapters.
//!
//! # Layout
//! - `read_buffer`: sizes a connection's read buffer to its traffic.

mod read_buffer;

pub use read_buffer::ReadSizer;
