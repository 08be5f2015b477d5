//! The AMQP 0-9-1 frame codec, sans-IO: bytes in, frames out; frames in, bytes out.
//!
//! Decoding returns `Ok(None)` until a whole frame is buffered. Frame payloads are split off the
//! read buffer as `Bytes`, so a message body is never copied between the socket and the queue.
//!
//! # Layout
//! - `methods`: the method structs and content properties, generated from the spec.
//! - `wire`: primitive types and field tables.

pub mod methods;
pub mod wire;

use bytes::{BufMut, Bytes, BytesMut};
use warren_core::properties::Properties;

pub use methods::Method;
use wire::Reader;

/// The protocol header a client opens with.
pub const PROTOCOL_HEADER: &[u8; 8] = b"AMQP\x00\x00\x09\x01";

const FRAME_METHOD: u8 = 1;
const FRAME_HEADER: u8 = 2;
const FRAME_BODY: u8 = 3;
const FRAME_HEARTBEAT: u8 = 8;
const FRAME_END: u8 = 0xCE;

/// Type, channel and size before the payload, plus the end octet after it.
pub const FRAME_OVERHEAD_BYTES: usize = 8;
const FRAME_HEADER_BYTES: usize = 7;

/// The smallest frame_max a peer may negotiate (the spec's FRAME-MIN-SIZE).
pub const FRAME_MIN_BYTES: u32 = 4096;

#[derive(Debug, thiserror::Error, Clone, PartialEq)]
pub enum CodecError {
    #[error("frame of {frame_bytes} bytes exceeds frame_max {frame_bytes_max}")]
    FrameTooLarge { frame_bytes: u64, frame_bytes_max: u32 },
    #[error("frame end octet was {found:#04x}, expected 0xce")]
    BadFrameEnd { found: u8 },
    #[error("unknown frame type {frame_type}")]
    UnknownFrameType { frame_type: u8 },
    #[error("heartbeat frame on channel {channel}, expected 0")]
    HeartbeatOnChannel { channel: u16 },
    #[error("payload ended early")]
    Truncated,
    #[error("{trailing} bytes left after the method's arguments")]
    TrailingBytes { trailing: usize },
    #[error("short string is not valid UTF-8")]
    InvalidUtf8,
    #[error("unknown field type {tag:#04x}")]
    UnknownFieldType { tag: u8 },
    #[error("field tables nested too deep")]
    TableTooDeep,
    #[error("content property flags continue past one word")]
    PropertyFlagsContinued,
    #[error("unknown method {class_id}.{method_id}")]
    UnknownMethod { class_id: u16, method_id: u16 },
}

/// A decoded frame.
#[derive(Clone, Debug, PartialEq)]
pub enum Frame {
    Method { channel: u16, method: Method },
    Header { channel: u16, class_id: u16, body_size: u64, properties: Box<Properties> },
    Body { channel: u16, payload: Bytes },
    Heartbeat,
}

/// Decodes one frame from the front of `buffer`, or returns `Ok(None)` if it is incomplete.
/// Frames larger than `frame_bytes_max` (overhead included) are refused before they are
/// buffered, so a peer cannot make us hold more than that.
pub fn decode(buffer: &mut BytesMut, frame_bytes_max: u32) -> Result<Option<Frame>, CodecError> {
    if buffer.len() < FRAME_HEADER_BYTES {
        return Ok(None);
    }
    let frame_type = buffer[0];
    let channel = u16::from_be_bytes([buffer[1], buffer[2]]);
    let size = u32::from_be_bytes([buffer[3], buffer[4], buffer[5], buffer[6]]) as usize;
    let frame_bytes = size as u64 + FRAME_OVERHEAD_BYTES as u64;
    if frame_bytes > u64::from(frame_bytes_max) {
        return Err(CodecError::FrameTooLarge { frame_bytes, frame_bytes_max });
    }
    let total = size + FRAME_OVERHEAD_BYTES;
    if buffer.len() < total {
        buffer.reserve(total - buffer.len());
        return Ok(None);
    }
    let frame = buffer.split_to(total).freeze();
    let end = frame[total - 1];
    if end != FRAME_END {
        return Err(CodecError::BadFrameEnd { found: end });
    }
    let payload = frame.slice(FRAME_HEADER_BYTES..FRAME_HEADER_BYTES + size);
    let frame = match frame_type {
        FRAME_METHOD => decode_method(channel, &payload)?,
        FRAME_HEADER => decode_header(channel, &payload)?,
        FRAME_BODY => Frame::Body { channel, payload },
        FRAME_HEARTBEAT if channel == 0 => Frame::Heartbeat,
        FRAME_HEARTBEAT => return Err(CodecError::HeartbeatOnChannel { channel }),
        frame_type => return Err(CodecError::UnknownFrameType { frame_type }),
    };
    Ok(Some(frame))
}

fn decode_method(channel: u16, payload: &Bytes) -> Result<Frame, CodecError> {
    let mut reader = Reader::new(payload);
    let class_id = reader.short()?;
    let method_id = reader.short()?;
    let method = Method::decode(class_id, method_id, &mut reader)?;
    finish(&reader)?;
    Ok(Frame::Method { channel, method })
}

fn decode_header(channel: u16, payload: &Bytes) -> Result<Frame, CodecError> {
    let mut reader = Reader::new(payload);
    let class_id = reader.short()?;
    let _weight = reader.short()?;
    let body_size = reader.longlong()?;
    let properties = Box::new(methods::decode_properties(&mut reader)?);
    finish(&reader)?;
    Ok(Frame::Header { channel, class_id, body_size, properties })
}

fn finish(reader: &Reader<'_>) -> Result<(), CodecError> {
    match reader.remaining() {
        0 => Ok(()),
        trailing => Err(CodecError::TrailingBytes { trailing }),
    }
}

/// Starts a frame; returns where its size field is, for `end_frame`.
fn begin_frame(out: &mut BytesMut, frame_type: u8, channel: u16) -> usize {
    out.put_u8(frame_type);
    out.put_u16(channel);
    let size_at = out.len();
    out.put_u32(0);
    size_at
}

fn end_frame(out: &mut BytesMut, size_at: usize) {
    let size = u32::try_from(out.len() - size_at - 4).expect("frames are shorter than 4 GiB");
    out[size_at..size_at + 4].copy_from_slice(&size.to_be_bytes());
    out.put_u8(FRAME_END);
}

pub fn encode_method(out: &mut BytesMut, channel: u16, method: &Method) {
    let size_at = begin_frame(out, FRAME_METHOD, channel);
    method.encode(out);
    end_frame(out, size_at);
}

pub fn encode_header(out: &mut BytesMut, channel: u16, body_size: u64, properties: &Properties) {
    let size_at = begin_frame(out, FRAME_HEADER, channel);
    out.put_u16(60);
    out.put_u16(0);
    out.put_u64(body_size);
    methods::encode_properties(properties, out);
    end_frame(out, size_at);
}

/// Writes a body as frames of at most `frame_bytes_max` bytes each, overhead included.
pub fn encode_body(out: &mut BytesMut, channel: u16, body: &[u8], frame_bytes_max: u32) {
    let chunk_max = frame_bytes_max as usize - FRAME_OVERHEAD_BYTES;
    for chunk in body.chunks(chunk_max) {
        out.reserve(chunk.len() + FRAME_OVERHEAD_BYTES);
        let size_at = begin_frame(out, FRAME_BODY, channel);
        out.put_slice(chunk);
        end_frame(out, size_at);
    }
}

/// A method with content: the method frame, the header frame and the body frames.
pub fn encode_content(
    out: &mut BytesMut,
    channel: u16,
    method: &Method,
    properties: &Properties,
    body: &[u8],
    frame_bytes_max: u32,
) {
    encode_method(out, channel, method);
    encode_header(out, channel, body.len() as u64, properties);
    encode_body(out, channel, body, frame_bytes_max);
}

pub fn encode_heartbeat(out: &mut BytesMut) {
    out.put_slice(&[FRAME_HEARTBEAT, 0, 0, 0, 0, 0, 0, FRAME_END]);
}

/// Encodes any frame; used by tests and tools.
pub fn encode_frame(out: &mut BytesMut, frame: &Frame, frame_bytes_max: u32) {
    match frame {
        Frame::Method { channel, method } => encode_method(out, *channel, method),
        Frame::Header { channel, body_size, properties, .. } => encode_header(out, *channel, *body_size, properties),
        Frame::Body { channel, payload } => encode_body(out, *channel, payload, frame_bytes_max),
        Frame::Heartbeat => encode_heartbeat(out),
    }
}
