//! The AMQP 0-9-1 methods and content properties, generated at build time from the spec JSON by
//! `build.rs`.

use bytes::{BufMut, Bytes, BytesMut};
use warren_core::properties::Properties;
use warren_core::value::Table;

use super::wire::*;
use super::CodecError;

include!(concat!(env!("OUT_DIR"), "/methods.rs"));

/// A table holding one value of every field type; for tests.
#[doc(hidden)]
pub fn sample_table() -> Table {
    use warren_core::value::Value;
    let mut nested = Table::new();
    nested.insert("inner", Value::string("deep"));
    Table(vec![
        ("bool".into(), Value::Bool(true)),
        ("i8".into(), Value::I8(-8)),
        ("u8".into(), Value::U8(8)),
        ("i16".into(), Value::I16(-16)),
        ("u16".into(), Value::U16(16)),
        ("i32".into(), Value::I32(-32)),
        ("u32".into(), Value::U32(32)),
        ("i64".into(), Value::I64(-64)),
        ("f32".into(), Value::F32(1.5)),
        ("f64".into(), Value::F64(-2.25)),
        ("decimal".into(), Value::Decimal { scale: 2, value: 12345 }),
        ("string".into(), Value::string("text")),
        ("array".into(), Value::Array(vec![Value::I32(1), Value::string("two"), Value::Void])),
        ("timestamp".into(), Value::Timestamp(1_700_000_000)),
        ("table".into(), Value::Table(nested)),
        ("void".into(), Value::Void),
        ("bytes".into(), Value::ByteArray(Bytes::from_static(b"\x00\x01\xff"))),
    ])
}
