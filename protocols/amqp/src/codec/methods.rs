#![allow(
    unused_parens,
    unused_variables,
    clippy::identity_op,
    clippy::needless_borrow,
    clippy::redundant_field_names,
    clippy::let_unit_value,
    clippy::unit_arg
)]

//! The AMQP 0-9-1 methods and content properties, generated at build time from the spec JSON by
//! `build.rs`.

use bytes::{BufMut, Bytes, BytesMut};
use warren_core::properties::Properties;
use warren_core::value::Table;

use super::wire::*;
use super::CodecError;

include!(concat!(env!("OUT_DIR"), "/methods.rs"));
