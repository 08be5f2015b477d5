//! The MQTT codec: mqttbytes' v4 (3.1.1) packets, sans-IO, plus the two things it lacks.
//!
//! - MQTT 3.1 (protocol name `MQIsdp`, level 3): mqttbytes accepts only `MQTT` level 4. A 3.1
//!   CONNECT differs from a 3.1.1 one only in that header, so it is rewritten to the 3.1.1 form
//!   before decoding and the session remembers the level. Everything after CONNECT is the same
//!   on the wire.
//! - A size bound that is checked before a packet is buffered whole: mqttbytes' own check does
//!   that too (`max_size`), and its error is mapped here.

use bytes::{BufMut, BytesMut};
use mqttbytes::v4::{self, Packet};

/// The protocol level a client connected with.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Level {
    /// MQTT 3.1 (`MQIsdp`, level 3).
    V31,
    /// MQTT 3.1.1 (`MQTT`, level 4).
    V311,
    /// MQTT 5 (`MQTT`, level 5): read and written by `v5`, translated at the edge.
    V5,
}

#[derive(Debug, thiserror::Error, Clone, PartialEq)]
pub enum CodecError {
    #[error("packet exceeds the {packet_bytes_max}-byte limit")]
    TooLarge { packet_bytes_max: usize },
    #[error("unsupported protocol level {level}")]
    UnsupportedLevel { level: u8 },
    #[error("malformed packet: {reason:?}")]
    Malformed { reason: mqttbytes::Error },
    /// An MQTT 5 topic alias out of range, or used before it was set (3.3.2.3.4).
    #[error("topic alias {alias} invalid")]
    TopicAliasInvalid { alias: u16 },
    /// An MQTT 5 AUTH packet: this server offers no enhanced authentication, so no CONNECT it
    /// accepted named an Authentication Method, and the client must not send one (4.12).
    #[error("AUTH without an authentication method")]
    AuthUnasked,
}

/// Whether a fixed header's first byte has the flags its packet type requires (MQTT 3.1.1
/// 2.2.2, MQTT 5 2.1.3): 0010 for PUBREL, SUBSCRIBE and UNSUBSCRIBE, 0000 for the other types
/// but PUBLISH, whose flags carry DUP, QoS and RETAIN (its QoS 3 is refused by the reader).
/// Invalid flags make the packet malformed; mqttbytes does not check them.
pub(crate) fn flags_valid(first: u8) -> bool {
    match first >> 4 {
        3 => true,
        6 | 8 | 10 => first & 0x0F == 0b0010,
        _ => first & 0x0F == 0,
    }
}

/// The malformed-packet error for a fixed header whose flags are wrong (`flags_valid`).
/// MQTT 3.1 sessions are not checked, as Mosquitto does not check them: 3.1 predates the rule.
pub(crate) fn check_flags(buffer: &[u8]) -> Result<(), CodecError> {
    match buffer.first() {
        Some(first) if !flags_valid(*first) => {
            Err(CodecError::Malformed { reason: mqttbytes::Error::IncorrectPacketFormat })
        }
        _ => Ok(()),
    }
}

/// Decodes one packet from the front of `buffer`, or `Ok(None)` if it is incomplete. (The
/// fixed header's flags are the caller's to check, `check_flags`: 3.1 predates the rule.)
pub fn decode(buffer: &mut BytesMut, packet_bytes_max: usize) -> Result<Option<Packet>, CodecError> {
    match v4::read(buffer, packet_bytes_max) {
        Ok(packet) => Ok(Some(packet)),
        Err(mqttbytes::Error::InsufficientBytes(_)) => Ok(None),
        Err(mqttbytes::Error::PayloadSizeLimitExceeded(_)) => Err(CodecError::TooLarge { packet_bytes_max }),
        Err(mqttbytes::Error::InvalidProtocolLevel(level)) => Err(CodecError::UnsupportedLevel { level }),
        Err(reason) => Err(CodecError::Malformed { reason }),
    }
}

/// The first packet, a CONNECT, with the level it came in and what an MQTT 5 one adds.
pub type Connected = (Packet, Level, crate::v5::ConnectExtras);

/// Decodes the first packet, which must be a CONNECT, accepting 3.1, 3.1.1 and 5.
pub fn decode_connect(buffer: &mut BytesMut, packet_bytes_max: usize) -> Result<Option<Connected>, CodecError> {
    check_flags(buffer)?;
    if is_mqtt5_connect(buffer) {
        return Ok(
            crate::v5::decode_connect(buffer, packet_bytes_max)?.map(|(packet, extras)| (packet, Level::V5, extras))
        );
    }
    let level = match rewrite_mqtt31_connect(buffer, packet_bytes_max) {
        Rewrite::Incomplete => return Ok(None),
        Rewrite::Rewritten => Level::V31,
        Rewrite::NotMqtt31 => Level::V311,
    };
    Ok(decode(buffer, packet_bytes_max)?.map(|packet| (packet, level, crate::v5::ConnectExtras::default())))
}

/// Whether the buffer starts with a CONNECT whose header says `MQTT` level 5.
fn is_mqtt5_connect(buffer: &[u8]) -> bool {
    if buffer.first().is_none_or(|byte| byte >> 4 != 1) {
        return false;
    }
    let Some((_, length_bytes)) = remaining_length(&buffer[1..]) else { return false };
    let header = &buffer[1 + length_bytes..];
    header.len() > MQTT311_HEADER.len()
        && header[..MQTT311_HEADER.len() - 1] == MQTT311_HEADER[..MQTT311_HEADER.len() - 1]
        && header[MQTT311_HEADER.len() - 1] == 5
}

enum Rewrite {
    Incomplete,
    Rewritten,
    NotMqtt31,
}

/// The variable header of a 3.1 CONNECT: protocol name `MQIsdp` and level 3.
const MQTT31_HEADER: &[u8] = b"\x00\x06MQIsdp\x03";
const MQTT311_HEADER: &[u8] = b"\x00\x04MQTT\x04";

/// If the buffer starts with a 3.1 CONNECT, rewrites its header to the 3.1.1 form.
fn rewrite_mqtt31_connect(buffer: &mut BytesMut, packet_bytes_max: usize) -> Rewrite {
    if buffer.first().is_some_and(|byte| byte >> 4 != 1) {
        return Rewrite::NotMqtt31;
    }
    let Some((remaining, length_bytes)) = remaining_length(&buffer[1.min(buffer.len())..]) else {
        return if buffer.len() < 5 { Rewrite::Incomplete } else { Rewrite::NotMqtt31 };
    };
    let header_start = 1 + length_bytes;
    if buffer.len() < header_start + MQTT31_HEADER.len() {
        return Rewrite::Incomplete;
    }
    if &buffer[header_start..header_start + MQTT31_HEADER.len()] != MQTT31_HEADER {
        return Rewrite::NotMqtt31;
    }
    if remaining > packet_bytes_max || remaining < MQTT31_HEADER.len() {
        // Too large to buffer, or claiming to end inside its own protocol header: leave it to
        // the decoder, which refuses both. (cargo fuzz found the second: the subtraction below
        // underflowed.)
        return Rewrite::NotMqtt31;
    }
    if buffer.len() < header_start + remaining {
        // Rewrite only a whole packet: a partial one would be rewritten again on the next read,
        // by then looking like 3.1.1.
        return Rewrite::Incomplete;
    }
    let rest = buffer.split_off(header_start + MQTT31_HEADER.len());
    let first = buffer[0];
    let new_remaining = remaining - (MQTT31_HEADER.len() - MQTT311_HEADER.len());
    let mut rewritten = BytesMut::with_capacity(buffer.len() + rest.len());
    rewritten.put_u8(first);
    put_remaining_length(&mut rewritten, new_remaining);
    rewritten.put_slice(MQTT311_HEADER);
    rewritten.unsplit(rest);
    *buffer = rewritten;
    Rewrite::Rewritten
}

/// Decodes a variable byte integer (1.5.5), such as the "remaining length" field: (value,
/// bytes used); `None` if incomplete or longer than four bytes.
pub(crate) fn remaining_length(bytes: &[u8]) -> Option<(usize, usize)> {
    let mut value = 0usize;
    for (index, byte) in bytes.iter().take(4).enumerate() {
        value |= usize::from(byte & 0x7F) << (7 * index);
        if byte & 0x80 == 0 {
            return Some((value, index + 1));
        }
    }
    None
}

fn put_remaining_length(out: &mut BytesMut, mut value: usize) {
    loop {
        let mut byte = (value % 128) as u8;
        value /= 128;
        if value > 0 {
            byte |= 0x80;
        }
        out.put_u8(byte);
        if value == 0 {
            return;
        }
    }
}

/// Encodes a packet.
pub fn encode(packet: &Packet, out: &mut BytesMut) {
    let result = match packet {
        Packet::ConnAck(packet) => packet.write(out),
        Packet::Publish(packet) => packet.write(out),
        Packet::PubAck(packet) => packet.write(out),
        Packet::PubRec(packet) => packet.write(out),
        Packet::PubRel(packet) => packet.write(out),
        Packet::PubComp(packet) => packet.write(out),
        Packet::SubAck(packet) => packet.write(out),
        Packet::UnsubAck(packet) => packet.write(out),
        Packet::PingResp => v4::PingResp.write(out),
        other => unreachable!("the broker never sends {other:?}"),
    };
    // mqttbytes fails to encode only packets we never build (oversized topics are refused on
    // the way in).
    result.expect("broker packets encode");
}

#[cfg(test)]
mod tests {
    use super::*;

    fn connect_bytes(client_id: &str) -> BytesMut {
        let mut out = BytesMut::new();
        v4::Connect::new(client_id).write(&mut out).expect("encodes");
        out
    }

    #[test]
    fn mqtt311_connect_decodes() {
        let mut buffer = connect_bytes("device-1");
        let (packet, level, _) = decode_connect(&mut buffer, 1024).expect("valid").expect("complete");
        assert_eq!(level, Level::V311);
        assert!(matches!(packet, Packet::Connect(connect) if connect.client_id == "device-1"));
    }

    #[test]
    fn mqtt31_connect_is_accepted() {
        let mqtt311 = connect_bytes("old-device");
        // Turn it into a 3.1 CONNECT: MQIsdp, level 3, remaining length + 2.
        let (remaining, used) = remaining_length(&mqtt311[1..]).expect("length");
        let mut mqtt31 = BytesMut::new();
        mqtt31.put_u8(mqtt311[0]);
        put_remaining_length(&mut mqtt31, remaining + 2);
        mqtt31.put_slice(MQTT31_HEADER);
        mqtt31.put_slice(&mqtt311[1 + used + MQTT311_HEADER.len()..]);
        // Fed one byte at a time, it decodes once complete.
        let mut buffer = BytesMut::new();
        let mut decoded = None;
        for byte in mqtt31.iter() {
            buffer.put_u8(*byte);
            if let Some(result) = decode_connect(&mut buffer, 1024).expect("valid") {
                decoded = Some(result);
            }
        }
        let (packet, level, _) = decoded.expect("decoded");
        assert_eq!(level, Level::V31);
        assert!(matches!(packet, Packet::Connect(connect) if connect.client_id == "old-device"));
    }

    #[test]
    fn mqtt31_connect_shorter_than_its_header_is_malformed_not_a_panic() {
        // The input cargo fuzz found: remaining length 1, then a 3.1 header.
        let input = b"\x11\x01\x00\x06MQIsdp\x03\x00\x00\xf5\x00\x01\xf5\x00\x00\xf5";
        let mut buffer = BytesMut::from(&input[..]);
        assert!(decode_connect(&mut buffer, 1024).is_err());
    }

    #[test]
    fn oversized_packets_are_refused_before_buffering() {
        let mut buffer = BytesMut::from(&[0x30u8, 0xFF, 0xFF, 0xFF, 0x7F][..]);
        assert_eq!(decode(&mut buffer, 1024), Err(CodecError::TooLarge { packet_bytes_max: 1024 }));
    }

    #[test]
    fn bad_level_is_reported() {
        let mut buffer = connect_bytes("x");
        let name = buffer.windows(4).position(|window| window == b"MQTT").expect("protocol name");
        buffer[name + 4] = 9;
        assert_eq!(decode_connect(&mut buffer, 1024), Err(CodecError::UnsupportedLevel { level: 9 }));
    }
}
