//! Records: what one entry of a segment says, and its byte layout.
//!
//! ```text
//! record   = length:u32le  crc:u32le  body           (crc32 of body; length = body's length)
//! body     = kind:u8 fields
//! Publish  (1) = id:u64 published_ms:u64 vhost:s16 queue_count:u16 queue:s16* message
//! Delivered(2) = id:u64 vhost:s16 queue:s16
//! Removed  (3) = id:u64 vhost:s16 queue:s16
//! message  = exchange:s16 routing_key:s32 properties body:b32
//! s16, s32 = length (u16le or u32le) then UTF-8 bytes; b32 = u32le length then bytes
//! ```
//! Every integer is little-endian. Properties and tables are laid out in [`encode_properties`].

use bytes::{Buf, BufMut, Bytes};
use warren_core::name::{ExchangeName, QueueName, VhostName};
use warren_core::properties::Properties;
use warren_core::topic::RoutingKey;
use warren_core::value::{Table, Value};
use warren_core::Message;

/// Bytes before a record's body: its length and checksum.
pub const RECORD_HEADER_BYTES: usize = 8;
/// The largest body a record may have: above any message the adapters accept (their frame
/// limits are far lower), so a larger length read back can only be damage.
pub const RECORD_BODY_MAX: usize = 1 << 30;

const KIND_PUBLISH: u8 = 1;
const KIND_DELIVERED: u8 = 2;
const KIND_REMOVED: u8 = 3;

/// Deepest nesting of arrays and tables decoded; encoded values come from adapters whose own
/// decoders bound nesting, so a deeper one read back is damage.
const NESTING_MAX: usize = 64;

/// A decoded record.
#[derive(Debug, PartialEq)]
pub enum Record {
    Publish { id: u64, published_ms: u64, vhost: VhostName, queues: Vec<QueueName>, message: Box<Message> },
    Delivered { id: u64, vhost: VhostName, queue: QueueName },
    Removed { id: u64, vhost: VhostName, queue: QueueName },
}

/// Appends a whole record (header and body) to `out`.
fn framed(out: &mut Vec<u8>, body: impl FnOnce(&mut Vec<u8>)) {
    let start = out.len();
    out.extend_from_slice(&[0; RECORD_HEADER_BYTES]);
    body(out);
    let body_bytes = &out[start + RECORD_HEADER_BYTES..];
    let length = body_bytes.len() as u32;
    let crc = crc32fast::hash(body_bytes);
    out[start..start + 4].copy_from_slice(&length.to_le_bytes());
    out[start + 4..start + 8].copy_from_slice(&crc.to_le_bytes());
}

pub fn encode_publish(
    out: &mut Vec<u8>,
    id: u64,
    published_ms: u64,
    vhost: &VhostName,
    queues: &[&QueueName],
    message: &Message,
) {
    framed(out, |out| {
        out.put_u8(KIND_PUBLISH);
        out.put_u64_le(id);
        out.put_u64_le(published_ms);
        put_s16(out, vhost.as_str());
        out.put_u16_le(queues.len() as u16);
        for queue in queues {
            put_s16(out, queue.as_str());
        }
        put_s16(out, message.exchange.as_str());
        put_s32(out, message.routing_key.as_str().as_bytes());
        encode_properties(out, &message.properties);
        put_s32(out, &message.body);
    });
}

pub fn encode_delivered(out: &mut Vec<u8>, id: u64, vhost: &VhostName, queue: &QueueName) {
    encode_queue_event(out, KIND_DELIVERED, id, vhost, queue);
}

/// The size of a removal record, header included.
pub fn removed_bytes(vhost: &VhostName, queue: &QueueName) -> u64 {
    (RECORD_HEADER_BYTES + 1 + 8 + 2 + vhost.as_str().len() + 2 + queue.as_str().len()) as u64
}

pub fn encode_removed(out: &mut Vec<u8>, id: u64, vhost: &VhostName, queue: &QueueName) {
    encode_queue_event(out, KIND_REMOVED, id, vhost, queue);
}

fn encode_queue_event(out: &mut Vec<u8>, kind: u8, id: u64, vhost: &VhostName, queue: &QueueName) {
    framed(out, |out| {
        out.put_u8(kind);
        out.put_u64_le(id);
        put_s16(out, vhost.as_str());
        put_s16(out, queue.as_str());
    });
}

/// Names are at most 255 bytes (AMQP short strings), so a u16 length always suffices.
fn put_s16(out: &mut Vec<u8>, text: &str) {
    let bytes = &text.as_bytes()[..text.len().min(u16::MAX as usize)];
    out.put_u16_le(bytes.len() as u16);
    out.put_slice(bytes);
}

fn put_s32(out: &mut Vec<u8>, bytes: &[u8]) {
    out.put_u32_le(bytes.len() as u32);
    out.put_slice(bytes);
}

/// Properties: a u16 of presence flags (bit 0 content_type ... bit 13 cluster_id, in field
/// order), then each present field: strings as s32, headers as a table, delivery_mode and
/// priority as u8, timestamp as u64.
fn encode_properties(out: &mut Vec<u8>, properties: &Properties) {
    let p = properties;
    let present = [
        p.content_type.is_some(),
        p.content_encoding.is_some(),
        p.headers.is_some(),
        p.delivery_mode.is_some(),
        p.priority.is_some(),
        p.correlation_id.is_some(),
        p.reply_to.is_some(),
        p.expiration.is_some(),
        p.message_id.is_some(),
        p.timestamp.is_some(),
        p.kind.is_some(),
        p.user_id.is_some(),
        p.app_id.is_some(),
        p.cluster_id.is_some(),
    ];
    let flags = present.iter().enumerate().fold(0u16, |flags, (bit, set)| flags | (u16::from(*set) << bit));
    out.put_u16_le(flags);
    let text = |out: &mut Vec<u8>, value: &Option<String>| {
        if let Some(value) = value {
            put_s32(out, value.as_bytes());
        }
    };
    text(out, &p.content_type);
    text(out, &p.content_encoding);
    if let Some(headers) = &p.headers {
        encode_table(out, headers);
    }
    if let Some(mode) = p.delivery_mode {
        out.put_u8(mode);
    }
    if let Some(priority) = p.priority {
        out.put_u8(priority);
    }
    text(out, &p.correlation_id);
    text(out, &p.reply_to);
    text(out, &p.expiration);
    text(out, &p.message_id);
    if let Some(timestamp) = p.timestamp {
        out.put_u64_le(timestamp);
    }
    text(out, &p.kind);
    text(out, &p.user_id);
    text(out, &p.app_id);
    text(out, &p.cluster_id);
}

/// A table: u32 entry count, then per entry a key (s32) and a value.
fn encode_table(out: &mut Vec<u8>, table: &Table) {
    out.put_u32_le(table.len() as u32);
    for (key, value) in table.iter() {
        put_s32(out, key.as_bytes());
        encode_value(out, value);
    }
}

/// A value: a tag byte, then its payload (fixed-width integers and floats; s32 strings and
/// byte arrays; arrays as a u32 count and values; tables as above).
fn encode_value(out: &mut Vec<u8>, value: &Value) {
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
            out.put_i16_le(*v);
        }
        Value::U16(v) => {
            out.put_u8(b'u');
            out.put_u16_le(*v);
        }
        Value::I32(v) => {
            out.put_u8(b'I');
            out.put_i32_le(*v);
        }
        Value::U32(v) => {
            out.put_u8(b'i');
            out.put_u32_le(*v);
        }
        Value::I64(v) => {
            out.put_u8(b'l');
            out.put_i64_le(*v);
        }
        Value::F32(v) => {
            out.put_u8(b'f');
            out.put_f32_le(*v);
        }
        Value::F64(v) => {
            out.put_u8(b'd');
            out.put_f64_le(*v);
        }
        Value::Decimal { scale, value } => {
            out.put_u8(b'D');
            out.put_u8(*scale);
            out.put_u32_le(*value);
        }
        Value::LongString(bytes) => {
            out.put_u8(b'S');
            put_s32(out, bytes);
        }
        Value::Array(values) => {
            out.put_u8(b'A');
            out.put_u32_le(values.len() as u32);
            for value in values {
                encode_value(out, value);
            }
        }
        Value::Timestamp(v) => {
            out.put_u8(b'T');
            out.put_u64_le(*v);
        }
        Value::Table(table) => {
            out.put_u8(b'F');
            encode_table(out, table);
        }
        Value::ByteArray(bytes) => {
            out.put_u8(b'x');
            put_s32(out, bytes);
        }
        Value::Void => out.put_u8(b'V'),
    }
}

/// A record body that does not parse: damage the checksum did not catch, or a bug.
#[derive(Debug, PartialEq, Eq)]
pub struct Malformed;

/// Reads fields off a body, refusing to run past its end. Byte fields are copied out, so
/// nothing decoded keeps the segment's read buffer alive.
struct Reader<'a> {
    bytes: &'a [u8],
}

impl Reader<'_> {
    fn need(&self, count: usize) -> Result<(), Malformed> {
        if self.bytes.remaining() < count {
            Err(Malformed)
        } else {
            Ok(())
        }
    }

    fn u8(&mut self) -> Result<u8, Malformed> {
        self.need(1)?;
        Ok(self.bytes.get_u8())
    }

    fn u16(&mut self) -> Result<u16, Malformed> {
        self.need(2)?;
        Ok(self.bytes.get_u16_le())
    }

    fn u32(&mut self) -> Result<u32, Malformed> {
        self.need(4)?;
        Ok(self.bytes.get_u32_le())
    }

    fn u64(&mut self) -> Result<u64, Malformed> {
        self.need(8)?;
        Ok(self.bytes.get_u64_le())
    }

    fn slice(&mut self, count: usize) -> Result<&[u8], Malformed> {
        self.need(count)?;
        let (taken, rest) = self.bytes.split_at(count);
        self.bytes = rest;
        Ok(taken)
    }

    fn take(&mut self, count: usize) -> Result<Bytes, Malformed> {
        self.slice(count).map(Bytes::copy_from_slice)
    }

    fn text(&mut self, count: usize) -> Result<String, Malformed> {
        let bytes = self.slice(count)?;
        std::str::from_utf8(bytes).map(str::to_owned).map_err(|_| Malformed)
    }

    fn s16(&mut self) -> Result<String, Malformed> {
        let count = self.u16()?;
        self.text(count.into())
    }

    fn s32(&mut self) -> Result<String, Malformed> {
        let count = self.u32()?;
        self.text(count as usize)
    }

    fn b32(&mut self) -> Result<Bytes, Malformed> {
        let count = self.u32()?;
        self.take(count as usize)
    }
}

/// Decodes a record body (checksum already verified).
pub fn decode(body: &[u8]) -> Result<Record, Malformed> {
    let mut reader = Reader { bytes: body };
    let kind = reader.u8()?;
    let id = reader.u64()?;
    let record = match kind {
        KIND_PUBLISH => {
            let published_ms = reader.u64()?;
            let vhost = VhostName::from(reader.s16()?);
            let count = reader.u16()?;
            let queues = (0..count).map(|_| reader.s16().map(QueueName::from)).collect::<Result<_, _>>()?;
            let exchange = ExchangeName::from(reader.s16()?);
            let routing_key = RoutingKey::new(&reader.s32()?);
            let properties = decode_properties(&mut reader)?;
            let body = reader.b32()?;
            let message = Box::new(Message { exchange, routing_key, properties, body, journal: None });
            Record::Publish { id, published_ms, vhost, queues, message }
        }
        KIND_DELIVERED | KIND_REMOVED => {
            let vhost = VhostName::from(reader.s16()?);
            let queue = QueueName::from(reader.s16()?);
            if kind == KIND_DELIVERED {
                Record::Delivered { id, vhost, queue }
            } else {
                Record::Removed { id, vhost, queue }
            }
        }
        _ => return Err(Malformed),
    };
    if reader.bytes.has_remaining() {
        return Err(Malformed);
    }
    Ok(record)
}

/// What recovery keeps of a record: a publish without its exchange, routing key, body or most
/// properties, which stay on disk until a consumer needs them.
#[derive(Debug, PartialEq)]
pub enum Summary {
    Publish {
        id: u64,
        published_ms: u64,
        vhost: VhostName,
        queues: Vec<QueueName>,
        priority: Option<u8>,
        /// The `expiration` property, in milliseconds, if it parses.
        ttl_ms: Option<u64>,
        body_bytes: u32,
    },
    Delivered {
        id: u64,
        vhost: VhostName,
        queue: QueueName,
    },
    Removed {
        id: u64,
        vhost: VhostName,
        queue: QueueName,
    },
}

/// Decodes a record body into its summary, copying no body.
pub fn summarize(body: &[u8]) -> Result<Summary, Malformed> {
    let mut reader = Reader { bytes: body };
    let kind = reader.u8()?;
    let id = reader.u64()?;
    let summary = match kind {
        KIND_PUBLISH => {
            let published_ms = reader.u64()?;
            let vhost = VhostName::from(reader.s16()?);
            let count = reader.u16()?;
            let queues = (0..count).map(|_| reader.s16().map(QueueName::from)).collect::<Result<_, _>>()?;
            // Checked as the full decode checks them, so what recovery accepts reads back.
            reader.s16()?;
            reader.s32()?;
            let properties = decode_properties(&mut reader)?;
            let body_bytes = reader.u32()?;
            reader.slice(body_bytes as usize)?;
            let ttl_ms = properties.expiration.as_deref().and_then(|text| text.parse().ok());
            Summary::Publish { id, published_ms, vhost, queues, priority: properties.priority, ttl_ms, body_bytes }
        }
        KIND_DELIVERED | KIND_REMOVED => {
            let vhost = VhostName::from(reader.s16()?);
            let queue = QueueName::from(reader.s16()?);
            if kind == KIND_DELIVERED {
                Summary::Delivered { id, vhost, queue }
            } else {
                Summary::Removed { id, vhost, queue }
            }
        }
        _ => return Err(Malformed),
    };
    if reader.bytes.has_remaining() {
        return Err(Malformed);
    }
    Ok(summary)
}

fn decode_properties(reader: &mut Reader<'_>) -> Result<Properties, Malformed> {
    let flags = reader.u16()?;
    let has = |bit: u16| flags & (1 << bit) != 0;
    let text = |reader: &mut Reader<'_>, bit: u16| if has(bit) { reader.s32().map(Some) } else { Ok(None) };
    Ok(Properties {
        content_type: text(reader, 0)?,
        content_encoding: text(reader, 1)?,
        headers: if has(2) { Some(decode_table(reader, 0)?) } else { None },
        delivery_mode: if has(3) { Some(reader.u8()?) } else { None },
        priority: if has(4) { Some(reader.u8()?) } else { None },
        correlation_id: text(reader, 5)?,
        reply_to: text(reader, 6)?,
        expiration: text(reader, 7)?,
        message_id: text(reader, 8)?,
        timestamp: if has(9) { Some(reader.u64()?) } else { None },
        kind: text(reader, 10)?,
        user_id: text(reader, 11)?,
        app_id: text(reader, 12)?,
        cluster_id: text(reader, 13)?,
    })
}

fn decode_table(reader: &mut Reader<'_>, depth: usize) -> Result<Table, Malformed> {
    let count = reader.u32()?;
    // Each entry takes at least 5 bytes: a bound on the count before anything is allocated.
    if count as usize > reader.bytes.remaining() / 5 {
        return Err(Malformed);
    }
    let mut table = Table::new();
    for _ in 0..count {
        let key = reader.s32()?;
        let value = decode_value(reader, depth + 1)?;
        table.0.push((key, value));
    }
    Ok(table)
}

fn decode_value(reader: &mut Reader<'_>, depth: usize) -> Result<Value, Malformed> {
    if depth > NESTING_MAX {
        return Err(Malformed);
    }
    Ok(match reader.u8()? {
        b't' => Value::Bool(reader.u8()? != 0),
        b'b' => Value::I8(reader.u8()? as i8),
        b'B' => Value::U8(reader.u8()?),
        b's' => Value::I16(reader.u16()? as i16),
        b'u' => Value::U16(reader.u16()?),
        b'I' => Value::I32(reader.u32()? as i32),
        b'i' => Value::U32(reader.u32()?),
        b'l' => Value::I64(reader.u64()? as i64),
        b'f' => Value::F32(f32::from_bits(reader.u32()?)),
        b'd' => Value::F64(f64::from_bits(reader.u64()?)),
        b'D' => Value::Decimal { scale: reader.u8()?, value: reader.u32()? },
        b'S' => Value::LongString(reader.b32()?),
        b'A' => {
            let count = reader.u32()?;
            if count as usize > reader.bytes.remaining() {
                return Err(Malformed);
            }
            let values = (0..count).map(|_| decode_value(reader, depth + 1)).collect::<Result<_, _>>()?;
            Value::Array(values)
        }
        b'T' => Value::Timestamp(reader.u64()?),
        b'F' => Value::Table(decode_table(reader, depth)?),
        b'x' => Value::ByteArray(reader.b32()?),
        b'V' => Value::Void,
        _ => return Err(Malformed),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn full_message() -> Message {
        let mut inner = Table::new();
        inner.insert("n", Value::I64(-5));
        let mut headers = Table::new();
        for (name, value) in [
            ("bool", Value::Bool(true)),
            ("i8", Value::I8(-8)),
            ("u8", Value::U8(8)),
            ("i16", Value::I16(-16)),
            ("u16", Value::U16(16)),
            ("i32", Value::I32(-32)),
            ("u32", Value::U32(32)),
            ("i64", Value::I64(i64::MIN)),
            ("f32", Value::F32(1.5)),
            ("f64", Value::F64(-2.25)),
            ("decimal", Value::Decimal { scale: 2, value: 12345 }),
            ("text", Value::string("héllo")),
            ("array", Value::Array(vec![Value::U8(1), Value::string("x"), Value::Void])),
            ("timestamp", Value::Timestamp(1_700_000_000)),
            ("table", Value::Table(inner)),
            ("bytes", Value::ByteArray(Bytes::from_static(&[0, 255, 7]))),
            ("void", Value::Void),
        ] {
            headers.insert(name, value);
        }
        Message {
            exchange: ExchangeName::new("amq.topic"),
            routing_key: RoutingKey::new("sensors.kitchen.temp"),
            properties: Properties {
                content_type: Some("text/plain".into()),
                content_encoding: Some("utf-8".into()),
                headers: Some(headers),
                delivery_mode: Some(2),
                priority: Some(7),
                correlation_id: Some("c".into()),
                reply_to: Some("r".into()),
                expiration: Some("60000".into()),
                message_id: Some("m".into()),
                timestamp: Some(42),
                kind: Some("t".into()),
                user_id: Some("guest".into()),
                app_id: Some("a".into()),
                cluster_id: Some("cl".into()),
            },
            body: Bytes::from_static(b"\x00body\xff"),
            journal: None,
        }
    }

    fn body_of(record: &[u8]) -> &[u8] {
        let length = u32::from_le_bytes(record[..4].try_into().expect("4 bytes")) as usize;
        let crc = u32::from_le_bytes(record[4..8].try_into().expect("4 bytes"));
        let body = &record[RECORD_HEADER_BYTES..];
        assert_eq!(body.len(), length);
        assert_eq!(crc32fast::hash(body), crc);
        body
    }

    #[test]
    fn every_record_kind_round_trips() {
        let message = full_message();
        let (vhost, q1, q2) = (VhostName::new("/"), QueueName::new("a"), QueueName::new("b"));
        let mut out = Vec::new();
        encode_publish(&mut out, 9, 1234, &vhost, &[&q1, &q2], &message);
        let expected = Record::Publish {
            id: 9,
            published_ms: 1234,
            vhost: vhost.clone(),
            queues: vec![q1.clone(), q2.clone()],
            message: Box::new(message),
        };
        assert_eq!(decode(body_of(&out)), Ok(expected));

        for delivered in [true, false] {
            let mut out = Vec::new();
            if delivered {
                encode_delivered(&mut out, 3, &vhost, &q1);
            } else {
                encode_removed(&mut out, 3, &vhost, &q1);
            }
            let record = decode(body_of(&out)).expect("decodes");
            let expected = if delivered {
                Record::Delivered { id: 3, vhost: vhost.clone(), queue: q1.clone() }
            } else {
                Record::Removed { id: 3, vhost: vhost.clone(), queue: q1.clone() }
            };
            assert_eq!(record, expected);
        }
    }

    #[test]
    fn every_truncation_of_a_body_is_refused_without_panicking() {
        let mut out = Vec::new();
        encode_publish(&mut out, 1, 1, &VhostName::new("/"), &[&QueueName::new("q")], &full_message());
        let body = body_of(&out);
        for cut in 0..body.len() {
            assert_eq!(decode(&body[..cut]), Err(Malformed), "cut at {cut}");
        }
        let mut longer = body.to_vec();
        longer.push(0);
        assert_eq!(decode(&longer), Err(Malformed));
    }
}
