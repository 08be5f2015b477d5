//! AMQP 0-9-1 primitive types: integers, strings and field tables, read from a `Bytes` buffer
//! (so long strings slice it without copying) and written into a `BytesMut`.

use bytes::{BufMut, Bytes, BytesMut};
use warren_core::value::{Table, Value};

use super::CodecError;

/// Tables nested deeper than this are refused: each level costs stack while decoding, and no
/// real client nests more than a few.
const TABLE_DEPTH_MAX: usize = 16;

/// A cursor over a frame payload.
pub struct Reader<'a> {
    bytes: &'a Bytes,
    position: usize,
    /// Nesting depth of the table being decoded.
    depth: usize,
}

impl<'a> Reader<'a> {
    pub fn new(bytes: &'a Bytes) -> Reader<'a> {
        Reader { bytes, position: 0, depth: 0 }
    }

    pub fn remaining(&self) -> usize {
        self.bytes.len() - self.position
    }

    fn take(&mut self, count: usize) -> Result<&'a [u8], CodecError> {
        if self.remaining() < count {
            return Err(CodecError::Truncated);
        }
        let slice = &self.bytes[self.position..self.position + count];
        self.position += count;
        Ok(slice)
    }

    /// Copies out `count` bytes. Not a slice of the frame: header values live as long as their
    /// message, and a slice would keep the whole read buffer alive with them.
    fn take_bytes(&mut self, count: usize) -> Result<Bytes, CodecError> {
        Ok(Bytes::copy_from_slice(self.take(count)?))
    }

    fn array<const N: usize>(&mut self) -> Result<[u8; N], CodecError> {
        Ok(self.take(N)?.try_into().expect("take returned N bytes"))
    }

    pub fn octet(&mut self) -> Result<u8, CodecError> {
        Ok(self.take(1)?[0])
    }

    pub fn short(&mut self) -> Result<u16, CodecError> {
        Ok(u16::from_be_bytes(self.array()?))
    }

    pub fn long(&mut self) -> Result<u32, CodecError> {
        Ok(u32::from_be_bytes(self.array()?))
    }

    pub fn longlong(&mut self) -> Result<u64, CodecError> {
        Ok(u64::from_be_bytes(self.array()?))
    }

    pub fn timestamp(&mut self) -> Result<u64, CodecError> {
        self.longlong()
    }

    pub fn shortstr(&mut self) -> Result<String, CodecError> {
        let length = usize::from(self.octet()?);
        let bytes = self.take(length)?;
        std::str::from_utf8(bytes).map(str::to_owned).map_err(|_| CodecError::InvalidUtf8)
    }

    pub fn longstr(&mut self) -> Result<Bytes, CodecError> {
        let length = self.long()? as usize;
        self.take_bytes(length)
    }

    pub fn table(&mut self) -> Result<Table, CodecError> {
        let length = self.long()? as usize;
        if self.remaining() < length {
            return Err(CodecError::Truncated);
        }
        self.enter()?;
        let end = self.position + length;
        let mut table = Table::new();
        while self.position < end {
            let name = self.shortstr()?;
            let value = self.value()?;
            table.0.push((name, value));
        }
        self.depth -= 1;
        if self.position != end {
            return Err(CodecError::Truncated);
        }
        Ok(table)
    }

    fn enter(&mut self) -> Result<(), CodecError> {
        self.depth += 1;
        if self.depth > TABLE_DEPTH_MAX {
            return Err(CodecError::TableTooDeep);
        }
        Ok(())
    }

    fn field_array(&mut self) -> Result<Vec<Value>, CodecError> {
        let length = self.long()? as usize;
        if self.remaining() < length {
            return Err(CodecError::Truncated);
        }
        self.enter()?;
        let end = self.position + length;
        let mut values = Vec::new();
        while self.position < end {
            values.push(self.value()?);
        }
        self.depth -= 1;
        if self.position != end {
            return Err(CodecError::Truncated);
        }
        Ok(values)
    }

    /// One typed field value, with RabbitMQ's type letters.
    fn value(&mut self) -> Result<Value, CodecError> {
        let tag = self.octet()?;
        Ok(match tag {
            b't' => Value::Bool(self.octet()? != 0),
            b'b' => Value::I8(self.octet()? as i8),
            b'B' => Value::U8(self.octet()?),
            b's' => Value::I16(self.short()? as i16),
            b'u' => Value::U16(self.short()?),
            b'I' => Value::I32(self.long()? as i32),
            b'i' => Value::U32(self.long()?),
            b'l' => Value::I64(self.longlong()? as i64),
            b'f' => Value::F32(f32::from_bits(self.long()?)),
            b'd' => Value::F64(f64::from_bits(self.longlong()?)),
            b'D' => Value::Decimal { scale: self.octet()?, value: self.long()? },
            b'S' => Value::LongString(self.longstr()?),
            b'A' => Value::Array(self.field_array()?),
            b'T' => Value::Timestamp(self.longlong()?),
            b'F' => Value::Table(self.table()?),
            b'V' => Value::Void,
            b'x' => Value::ByteArray(self.longstr()?),
            other => return Err(CodecError::UnknownFieldType { tag: other }),
        })
    }
}

pub fn put_octet(out: &mut BytesMut, value: &u8) {
    out.put_u8(*value);
}

pub fn put_short(out: &mut BytesMut, value: &u16) {
    out.put_u16(*value);
}

pub fn put_long(out: &mut BytesMut, value: &u32) {
    out.put_u32(*value);
}

pub fn put_longlong(out: &mut BytesMut, value: &u64) {
    out.put_u64(*value);
}

pub fn put_timestamp(out: &mut BytesMut, value: &u64) {
    out.put_u64(*value);
}

/// Writes a short string. Longer than 255 bytes cannot be represented; such text (which only
/// other protocols can produce, e.g. a long MQTT topic) is cut at the last character boundary
/// that fits.
pub fn put_shortstr(out: &mut BytesMut, value: &str) {
    let mut end = value.len().min(255);
    while !value.is_char_boundary(end) {
        end -= 1;
    }
    out.put_u8(end as u8);
    out.put_slice(&value.as_bytes()[..end]);
}

pub fn put_longstr(out: &mut BytesMut, value: &Bytes) {
    out.put_u32(u32::try_from(value.len()).expect("long strings are shorter than 4 GiB"));
    out.put_slice(value);
}

pub fn put_table(out: &mut BytesMut, table: &Table) {
    let start = out.len();
    out.put_u32(0);
    for (name, value) in table.iter() {
        put_shortstr(out, name);
        put_value(out, value);
    }
    patch_length(out, start);
}

fn patch_length(out: &mut BytesMut, start: usize) {
    let length = u32::try_from(out.len() - start - 4).expect("tables are shorter than 4 GiB");
    out[start..start + 4].copy_from_slice(&length.to_be_bytes());
}

fn put_value(out: &mut BytesMut, value: &Value) {
    match value {
        Value::Bool(v) => {
            out.put_u8(b't');
            out.put_u8(u8::from(*v));
        }
        Value::I8(v) => {
            out.put_u8(b'b');
            out.put_i8(*v);
        }
        Value::U8(v) => {
            out.put_u8(b'B');
            out.put_u8(*v);
        }
        Value::I16(v) => {
            out.put_u8(b's');
            out.put_i16(*v);
        }
        Value::U16(v) => {
            out.put_u8(b'u');
            out.put_u16(*v);
        }
        Value::I32(v) => {
            out.put_u8(b'I');
            out.put_i32(*v);
        }
        Value::U32(v) => {
            out.put_u8(b'i');
            out.put_u32(*v);
        }
        Value::I64(v) => {
            out.put_u8(b'l');
            out.put_i64(*v);
        }
        Value::F32(v) => {
            out.put_u8(b'f');
            out.put_f32(*v);
        }
        Value::F64(v) => {
            out.put_u8(b'd');
            out.put_f64(*v);
        }
        Value::Decimal { scale, value } => {
            out.put_u8(b'D');
            out.put_u8(*scale);
            out.put_u32(*value);
        }
        Value::LongString(v) => {
            out.put_u8(b'S');
            put_longstr(out, v);
        }
        Value::Array(values) => {
            out.put_u8(b'A');
            let start = out.len();
            out.put_u32(0);
            for value in values {
                put_value(out, value);
            }
            patch_length(out, start);
        }
        Value::Timestamp(v) => {
            out.put_u8(b'T');
            out.put_u64(*v);
        }
        Value::Table(table) => {
            out.put_u8(b'F');
            put_table(out, table);
        }
        Value::Void => out.put_u8(b'V'),
        Value::ByteArray(v) => {
            out.put_u8(b'x');
            put_longstr(out, v);
        }
    }
}
