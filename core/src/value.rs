//! Typed header and argument values.
//!
//! The core's value type covers every field type RabbitMQ accepts in tables: headers, queue
//! arguments and binding arguments. Adapters whose headers are plain text map them onto
//! `Value::LongString`.

use bytes::Bytes;

/// One typed value in a [`Table`] or an array.
#[derive(Clone, Debug, PartialEq)]
pub enum Value {
    Bool(bool),
    I8(i8),
    U8(u8),
    I16(i16),
    U16(u16),
    I32(i32),
    U32(u32),
    I64(i64),
    F32(f32),
    F64(f64),
    /// A decimal: `value` scaled down by 10^`scale`.
    Decimal {
        scale: u8,
        value: u32,
    },
    /// Bytes, usually UTF-8 text.
    LongString(Bytes),
    Array(Vec<Value>),
    /// Seconds since the Unix epoch.
    Timestamp(u64),
    Table(Table),
    ByteArray(Bytes),
    Void,
}

impl Value {
    /// The value as text, when it is a string that holds UTF-8.
    pub fn as_str(&self) -> Option<&str> {
        match self {
            Value::LongString(bytes) => std::str::from_utf8(bytes).ok(),
            _ => None,
        }
    }

    /// The value as a signed integer, whatever its integer width.
    pub fn as_i64(&self) -> Option<i64> {
        match *self {
            Value::I8(v) => Some(v.into()),
            Value::U8(v) => Some(v.into()),
            Value::I16(v) => Some(v.into()),
            Value::U16(v) => Some(v.into()),
            Value::I32(v) => Some(v.into()),
            Value::U32(v) => Some(v.into()),
            Value::I64(v) => Some(v),
            Value::Timestamp(v) => i64::try_from(v).ok(),
            _ => None,
        }
    }

    /// Whether two values are equal for the purpose of header matching, where RabbitMQ compares
    /// integers by value whatever their width.
    pub fn matches(&self, other: &Value) -> bool {
        match (self.as_i64(), other.as_i64()) {
            (Some(a), Some(b)) => a == b,
            _ => self == other,
        }
    }

    pub fn string(text: &str) -> Value {
        Value::LongString(Bytes::copy_from_slice(text.as_bytes()))
    }
}

/// An ordered table of named values: message headers, or declare and bind arguments.
///
/// A `Vec` rather than a map: tables are small, order is kept on the wire, and lookups by name
/// over a handful of entries beat hashing.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct Table(pub Vec<(String, Value)>);

impl Table {
    pub fn new() -> Table {
        Table(Vec::new())
    }

    pub fn get(&self, key: &str) -> Option<&Value> {
        self.0.iter().find(|(name, _)| name == key).map(|(_, value)| value)
    }

    /// Sets `key`, replacing an existing entry of that name.
    pub fn insert(&mut self, key: impl Into<String>, value: Value) {
        let key = key.into();
        match self.0.iter_mut().find(|(name, _)| *name == key) {
            Some(entry) => entry.1 = value,
            None => self.0.push((key, value)),
        }
    }

    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }

    pub fn len(&self) -> usize {
        self.0.len()
    }

    pub fn iter(&self) -> impl Iterator<Item = (&str, &Value)> {
        self.0.iter().map(|(name, value)| (name.as_str(), value))
    }

    /// Whether two tables hold the same entries, in any order: how RabbitMQ compares arguments
    /// for declare equivalence and binding identity.
    pub fn same_entries(&self, other: &Table) -> bool {
        self.len() == other.len() && self.iter().all(|(key, value)| other.get(key) == Some(value))
    }
}
