//! MQTT 5 at the edge: a v5 client's packets are read and written with mqttbytes' v5 codec and
//! translated to and from the 3.1.1 packets the session works with, so every feature of the
//! session (persistent sessions, retained messages, QoS 2, permissions, the store) serves MQTT 5
//! clients too. What MQTT 5 adds beyond 3.1.1 is handled here or refused honestly:
//!
//! - CONNACK, SUBACK and UNSUBACK carry MQTT 5 reason codes; PUBACK/PUBREC/PUBREL/PUBCOMP
//!   carry Success.
//! - Session expiry: a session persists only when the client asks for it with a non-zero
//!   Session Expiry Interval (clean start off), for at most the broker's `session_expiry`.
//! - Topic aliases from the client (up to `TOPIC_ALIASES_MAX`, stated in CONNACK), and towards
//!   a client that accepts them (`OutboundAliases`); Receive
//!   Maximum narrows the delivery window; deliveries over the client's Maximum Packet Size are
//!   dropped for it; the broker's DISCONNECT says why it closes (taken over, keep-alive,
//!   protocol error, shutdown...); will delay (the session schedules the will); subscription
//!   options (No Local, Retain As Published, Retain Handling), applied by the session.
//! - Shared subscriptions (see `shared`); subscription identifiers, sent back on the
//!   deliveries each subscription matches; CONNACK states the broker's maximum packet size.
//! - PUBLISH properties map onto AMQP's, as RabbitMQ's MQTT 5 support maps them: content type,
//!   correlation data (`correlation_id`), response topic (`reply_to`, in AMQP's dotted form),
//!   message expiry (`expiration`, so it is the queue's TTL) and user properties (headers).

use bytes::{BufMut, BytesMut};
use mqttbytes::v4::{self, Packet};
use mqttbytes::v5;
use mqttbytes::QoS;

use warren_core::properties::Properties;
use warren_core::value::{Table, Value};

use crate::codec::CodecError;
use crate::translate;

/// Headers the adapter uses itself, which are not user properties.
const INTERNAL_HEADERS: [&str; 6] = [
    crate::inbound::QOS_HEADER,
    crate::inbound::ORIGIN_HEADER,
    crate::inbound::RETAIN_HEADER,
    PAYLOAD_FORMAT_HEADER,
    crate::state::RETAINED_EXPIRES_HEADER,
    crate::inbound::PACKET_ID_HEADER,
];

/// The header that carries an MQTT 5 Payload Format Indicator, which the server forwards
/// unaltered (3.3.2.3.2): 1 says the payload is UTF-8 text. AMQP consumers see it too.
pub const PAYLOAD_FORMAT_HEADER: &str = "x-mqtt-payload-format";

/// What an MQTT 5 CONNECT asked for beyond what its 3.1.1 form holds.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct ConnectExtras {
    /// Seconds the session outlives the connection; 0 (the default) ends it with the connection.
    pub session_expiry_seconds: u32,
    /// The most unacknowledged QoS 1 and 2 publishes the client takes at once.
    pub receive_maximum: Option<u16>,
    /// The largest packet the client accepts; larger deliveries are dropped for it (3.1.2.11.4).
    pub maximum_packet_size: Option<u32>,
    /// Seconds the will waits after an abnormal disconnection (3.1.3.2.2).
    pub will_delay_seconds: u32,
    /// Topic aliases the client accepts from the broker.
    pub topic_alias_maximum: u16,
    /// The will's properties, published with it (3.1.3.2).
    pub will_properties: Option<Box<v5::PublishProperties>>,
    /// The client asked for enhanced authentication (an Authentication Method, 4.12), which
    /// this server does not offer: CONNACK 0x8C.
    pub authentication_method: bool,
}

/// Topic aliases a client may use towards the broker (CONNACK's Topic Alias Maximum).
pub const TOPIC_ALIASES_MAX: u16 = 64;

/// A connection's inbound topic aliases (3.3.2.3.4): alias → topic, set by a PUBLISH that has
/// both, used by one with the alias and an empty topic.
#[derive(Debug, Default)]
pub struct TopicAliases {
    topics: Vec<Option<String>>,
}

impl TopicAliases {
    /// Resolves a PUBLISH's topic through its alias, recording a new mapping. `Err` for an alias
    /// out of range or unknown: a protocol error.
    fn resolve(&mut self, alias: u16, topic: String) -> Result<String, CodecError> {
        let invalid = CodecError::TopicAliasInvalid { alias };
        if alias == 0 || alias > TOPIC_ALIASES_MAX {
            return Err(invalid);
        }
        if self.topics.is_empty() {
            self.topics = vec![None; usize::from(TOPIC_ALIASES_MAX) + 1];
        }
        let slot = &mut self.topics[usize::from(alias)];
        if topic.is_empty() {
            return slot.clone().ok_or(invalid);
        }
        *slot = Some(topic.clone());
        Ok(topic)
    }
}

/// Topic aliases the broker sets towards a client that accepts them (its CONNECT's Topic Alias
/// Maximum, up to `OUTBOUND_ALIASES_MAX`): the first topics delivered get one each, and later
/// deliveries on them carry the alias and an empty topic.
#[derive(Debug)]
pub struct OutboundAliases {
    maximum: u16,
    by_topic: std::collections::HashMap<String, u16>,
}

/// The most topic aliases the broker keeps towards one client.
pub const OUTBOUND_ALIASES_MAX: u16 = 256;

impl OutboundAliases {
    /// Aliases for a client whose CONNECT allowed `client_maximum`; `None` for 0 (none).
    pub fn new(client_maximum: u16) -> Option<Box<OutboundAliases>> {
        let maximum = client_maximum.min(OUTBOUND_ALIASES_MAX);
        (maximum > 0).then(|| Box::new(OutboundAliases { maximum, by_topic: std::collections::HashMap::new() }))
    }

    /// The alias already set for a topic.
    pub fn known(&self, topic: &str) -> Option<u16> {
        self.by_topic.get(topic).copied()
    }

    /// Sets the next alias for a topic, if any are left.
    pub fn assign(&mut self, topic: &str) -> Option<u16> {
        let next = u16::try_from(self.by_topic.len() + 1).ok().filter(|next| *next <= self.maximum)?;
        self.by_topic.insert(topic.to_owned(), next);
        Some(next)
    }

    /// Takes back the alias just assigned (its PUBLISH was not sent).
    pub fn forget(&mut self, alias: u16) {
        self.by_topic.retain(|_, assigned| *assigned != alias);
    }
}

fn decode_error(error: mqttbytes::Error, packet_bytes_max: usize) -> CodecError {
    match error {
        mqttbytes::Error::PayloadSizeLimitExceeded(_) => CodecError::TooLarge { packet_bytes_max },
        mqttbytes::Error::InvalidProtocolLevel(level) => CodecError::UnsupportedLevel { level },
        reason => CodecError::Malformed { reason },
    }
}

/// Decodes an MQTT 5 CONNECT into its 3.1.1 form and the extras.
pub fn decode_connect(
    buffer: &mut BytesMut,
    packet_bytes_max: usize,
) -> Result<Option<(Packet, ConnectExtras)>, CodecError> {
    let packet = match v5::read(buffer, packet_bytes_max) {
        Ok(packet) => packet,
        Err(mqttbytes::Error::InsufficientBytes(_)) => return Ok(None),
        Err(error) => return Err(decode_error(error, packet_bytes_max)),
    };
    let v5::Packet::Connect(connect) = packet else {
        return Ok(Some((v4::Packet::PingReq, ConnectExtras::default())));
    };
    let properties = connect.properties.as_ref();
    let will_properties = connect.last_will.as_ref().and_then(|will| will.properties.as_ref()).map(|from| {
        Box::new(v5::PublishProperties {
            payload_format_indicator: from.payload_format_indicator,
            message_expiry_interval: from.message_expiry_interval,
            topic_alias: None,
            response_topic: from.response_topic.clone(),
            correlation_data: from.correlation_data.clone(),
            user_properties: from.user_properties.clone(),
            subscription_identifiers: Vec::new(),
            content_type: from.content_type.clone(),
        })
    });
    let extras = ConnectExtras {
        will_properties,
        topic_alias_maximum: properties.and_then(|p| p.topic_alias_max).unwrap_or(0),
        session_expiry_seconds: properties.and_then(|p| p.session_expiry_interval).unwrap_or(0),
        receive_maximum: properties.and_then(|p| p.receive_maximum),
        maximum_packet_size: properties.and_then(|p| p.max_packet_size),
        authentication_method: properties.is_some_and(|p| p.authentication_method.is_some()),
        will_delay_seconds: connect
            .last_will
            .as_ref()
            .and_then(|will| will.properties.as_ref())
            .and_then(|properties| properties.delay_interval)
            .unwrap_or(0),
    };
    let last_will = connect.last_will.map(|will| v4::LastWill {
        topic: will.topic,
        message: will.message,
        qos: will.qos,
        retain: will.retain,
    });
    let login = connect.login.map(|login| v4::Login { username: login.username, password: login.password });
    let translated = v4::Connect {
        protocol: mqttbytes::Protocol::V4,
        keep_alive: connect.keep_alive,
        client_id: connect.client_id,
        clean_session: connect.clean_session,
        last_will,
        login,
    };
    Ok(Some((Packet::Connect(translated), extras)))
}

/// What an MQTT 5 packet carries beyond its 3.1.1 form.
#[derive(Clone, Debug, PartialEq)]
pub enum Extra {
    /// A PUBLISH's properties.
    Publish(v5::PublishProperties),
    /// A SUBSCRIBE's options, one per filter, in order, and its subscription identifier.
    Subscribe(Vec<SubscriptionOptions>, Option<usize>),
    /// A DISCONNECT's reason code (anything but 0x00 keeps the will, 3.14.4) and the Session
    /// Expiry Interval it sets, if any (3.14.2.2.2).
    Disconnect(u8, Option<u32>),
}

/// MQTT 5 subscription options (3.8.3.1).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct SubscriptionOptions {
    /// Messages this connection published are not delivered back to it.
    pub no_local: bool,
    /// Deliveries keep the RETAIN flag they were published with.
    pub retain_as_published: bool,
    /// 0: send retained messages on subscribe; 1: only for a new subscription; 2: never.
    pub retain_handling: u8,
}

/// A decoded packet in its 3.1.1 form, with what MQTT 5 added.
pub type Decoded = (Packet, Option<Extra>);

/// Decodes one packet of an MQTT 5 session into its 3.1.1 form.
pub fn decode(
    buffer: &mut BytesMut,
    packet_bytes_max: usize,
    aliases: &mut TopicAliases,
) -> Result<Option<Decoded>, CodecError> {
    // Two packets mqttbytes 0.6 reads wrongly are taken here: a DISCONNECT with no properties
    // (remaining length 0 or 1, both valid in MQTT 5), and UNSUBSCRIBE (its reader prints to
    // stderr, which a client must not be able to make the broker do).
    if buffer.first() == Some(&0xE0) && buffer.len() >= 2 && buffer[1] <= 1 {
        let reason = if buffer[1] == 1 {
            if buffer.len() < 3 {
                return Ok(None);
            }
            buffer[2]
        } else {
            0
        };
        let _ = buffer.split_to(2 + usize::from(buffer[1]));
        return Ok(Some((Packet::Disconnect, Some(Extra::Disconnect(reason, None)))));
    }
    // Wrong fixed-header flags make a packet malformed (2.1.3). Checked before mqttbytes'
    // readers, which do not: its UNSUBSCRIBE reader would take one with other flags and print
    // it to stderr (`cargo fuzz run mqtt_packet` found that).
    crate::codec::check_flags(buffer)?;
    if buffer.first() == Some(&0xA2) {
        return decode_unsubscribe(buffer, packet_bytes_max).map(|packet| packet.map(|packet| (packet, None)));
    }
    if buffer.first().is_some_and(|byte| byte >> 4 == 15) {
        return Err(CodecError::AuthUnasked);
    }
    let length_before = buffer.len();
    let packet = match v5::read(buffer, packet_bytes_max) {
        Ok(packet) => packet,
        // Incomplete only if the frame is still there: once mqttbytes has taken a whole frame,
        // running out of bytes inside it is a malformed packet, not a wait for more.
        Err(mqttbytes::Error::InsufficientBytes(_)) if buffer.len() == length_before => return Ok(None),
        Err(error) => return Err(decode_error(error, packet_bytes_max)),
    };
    let mut extra = None;
    let translated = match packet {
        v5::Packet::Publish(publish) => {
            let topic = match publish.properties.as_ref().and_then(|properties| properties.topic_alias) {
                Some(alias) => aliases.resolve(alias, publish.topic)?,
                None => publish.topic,
            };
            let mut translated = v4::Publish::from_bytes(topic, publish.qos, publish.payload);
            translated.dup = publish.dup;
            translated.retain = publish.retain;
            translated.pkid = publish.pkid;
            extra = publish.properties.map(Extra::Publish);
            Packet::Publish(translated)
        }
        v5::Packet::PubAck(ack) => Packet::PubAck(v4::PubAck::new(ack.pkid)),
        v5::Packet::PubRec(received) => Packet::PubRec(v4::PubRec::new(received.pkid)),
        v5::Packet::PubRel(released) => Packet::PubRel(v4::PubRel::new(released.pkid)),
        v5::Packet::PubComp(completed) => Packet::PubComp(v4::PubComp::new(completed.pkid)),
        v5::Packet::Subscribe(subscribe) => {
            let options = subscribe
                .filters
                .iter()
                .map(|filter| SubscriptionOptions {
                    no_local: filter.nolocal,
                    retain_as_published: filter.preserve_retain,
                    retain_handling: match filter.retain_forward_rule {
                        v5::RetainForwardRule::OnEverySubscribe => 0,
                        v5::RetainForwardRule::OnNewSubscribe => 1,
                        v5::RetainForwardRule::Never => 2,
                    },
                })
                .collect();
            let identifier = subscribe.properties.as_ref().and_then(|properties| properties.id);
            extra = Some(Extra::Subscribe(options, identifier));
            let filters =
                subscribe.filters.into_iter().map(|filter| v4::SubscribeFilter::new(filter.path, filter.qos)).collect();
            Packet::Subscribe(v4::Subscribe { pkid: subscribe.pkid, filters })
        }
        v5::Packet::Unsubscribe(unsubscribe) => {
            Packet::Unsubscribe(v4::Unsubscribe { pkid: unsubscribe.pkid, topics: unsubscribe.filters })
        }
        v5::Packet::PingReq => Packet::PingReq,
        v5::Packet::Disconnect(disconnect) => {
            let expiry = disconnect.properties.as_ref().and_then(|properties| properties.session_expiry_interval);
            extra = Some(Extra::Disconnect(disconnect.reason_code as u8, expiry));
            Packet::Disconnect
        }
        // A second CONNECT, or packets only a server sends: the session treats them as the
        // protocol violations they are.
        v5::Packet::Connect(_) => Packet::Connect(v4::Connect::new("")),
        v5::Packet::ConnAck(_) | v5::Packet::SubAck(_) | v5::Packet::UnsubAck(_) | v5::Packet::PingResp => {
            Packet::PingResp
        }
    };
    Ok(Some((translated, extra)))
}

/// An MQTT 5 UNSUBSCRIBE: packet id, properties (skipped), then the topic filters (3.10).
fn decode_unsubscribe(buffer: &mut BytesMut, packet_bytes_max: usize) -> Result<Option<Packet>, CodecError> {
    let malformed = || CodecError::Malformed { reason: mqttbytes::Error::InvalidProtocol };
    let Some((remaining, length_bytes)) = crate::codec::remaining_length(&buffer[1..]) else {
        return if buffer.len() > 5 { Err(malformed()) } else { Ok(None) };
    };
    if remaining > packet_bytes_max {
        return Err(CodecError::TooLarge { packet_bytes_max });
    }
    let total = 1 + length_bytes + remaining;
    if buffer.len() < total {
        return Ok(None);
    }
    let frame = buffer.split_to(total);
    let body = &frame[1 + length_bytes..];
    let (Some(id_bytes), rest) = (body.get(..2), body.get(2..).unwrap_or_default()) else { return Err(malformed()) };
    let packet_id = u16::from_be_bytes([id_bytes[0], id_bytes[1]]);
    let (properties_length, used) = crate::codec::remaining_length(rest).ok_or_else(malformed)?;
    let mut rest = rest.get(used + properties_length..).ok_or_else(malformed)?;
    let mut topics = Vec::new();
    while !rest.is_empty() {
        let length = usize::from(u16::from_be_bytes([
            *rest.first().ok_or_else(malformed)?,
            *rest.get(1).ok_or_else(malformed)?,
        ]));
        let topic = rest.get(2..2 + length).ok_or_else(malformed)?;
        topics.push(String::from_utf8(topic.to_vec()).map_err(|_| malformed())?);
        rest = &rest[2 + length..];
    }
    if packet_id == 0 || topics.is_empty() {
        return Err(malformed());
    }
    Ok(Some(Packet::Unsubscribe(v4::Unsubscribe { pkid: packet_id, topics })))
}

/// Carries a PUBLISH's MQTT 5 properties into a message's AMQP properties.
pub fn apply_publish_properties(from: &v5::PublishProperties, into: &mut Properties) {
    if let Some(content_type) = &from.content_type {
        into.content_type = Some(content_type.clone());
    }
    if let Some(response_topic) = &from.response_topic {
        into.reply_to = Some(translate::routing_key(response_topic).to_string());
    }
    if let Some(correlation) = &from.correlation_data {
        // AMQP's correlation-id is a short string: binary or longer data rides a header.
        match std::str::from_utf8(correlation) {
            Ok(text) if text.len() <= 255 => into.correlation_id = Some(text.to_owned()),
            _ => into
                .headers
                .get_or_insert_with(Table::new)
                .insert("x-correlation-data", Value::LongString(correlation.clone())),
        }
    }
    if let Some(seconds) = from.message_expiry_interval {
        into.expiration = Some((u64::from(seconds) * 1000).to_string());
    }
    if let Some(indicator) = from.payload_format_indicator {
        into.headers.get_or_insert_with(Table::new).insert(PAYLOAD_FORMAT_HEADER, Value::U8(indicator));
    }
    for (key, value) in &from.user_properties {
        into.headers.get_or_insert_with(Table::new).insert(key.as_str(), Value::string(value));
    }
}

/// A message's AMQP properties as MQTT 5 PUBLISH properties; `None` when there are none.
/// `expires_in` is the time the message has left (its TTL less its wait in the queue): the
/// Message Expiry Interval sent is that, not the one it was published with (3.3.2.3.3).
pub fn publish_properties(from: &Properties, expires_in: Option<std::time::Duration>) -> Option<v5::PublishProperties> {
    let mut user_properties = Vec::new();
    let mut payload_format_indicator = None;
    let mut correlation_data = from.correlation_id.as_ref().map(|id| bytes::Bytes::copy_from_slice(id.as_bytes()));
    if let Some(headers) = &from.headers {
        for (key, value) in headers.iter() {
            if key == "x-correlation-data" {
                if let Value::LongString(bytes) = value {
                    correlation_data = Some(bytes.clone());
                }
                continue;
            }
            if key == PAYLOAD_FORMAT_HEADER {
                payload_format_indicator = value.as_i64().and_then(|indicator| u8::try_from(indicator).ok());
                continue;
            }
            if INTERNAL_HEADERS.contains(&key) {
                continue;
            }
            if let Some(text) = value.as_str().filter(|text| fits(text.len()) && fits(key.len())) {
                user_properties.push((key.to_owned(), text.to_owned()));
            }
        }
    }
    let published_expiry = from.expiration.as_ref().and_then(|ms| ms.parse::<u64>().ok());
    // Only a message published with an expiry carries one (a queue's own TTL is not the
    // publisher's to tell). Rounded up and at least 1, as 0 would not mean expired.
    let remaining_ms = published_expiry.map(|ms| match expires_in {
        Some(left) => u64::try_from(left.as_millis()).unwrap_or(u64::MAX).min(ms),
        None => ms,
    });
    let properties = v5::PublishProperties {
        payload_format_indicator,
        message_expiry_interval: remaining_ms.map(|ms| u32::try_from(ms.div_ceil(1000).max(1)).unwrap_or(u32::MAX)),
        topic_alias: None,
        response_topic: from
            .reply_to
            .as_ref()
            .map(|reply_to| translate::topic(&warren_core::topic::RoutingKey::new(reply_to)))
            .filter(|topic| fits(topic.len())),
        correlation_data: correlation_data.filter(|data| fits(data.len())),
        user_properties,
        subscription_identifiers: Vec::new(),
        content_type: from.content_type.clone().filter(|text| fits(text.len())),
    };
    let empty = properties.payload_format_indicator.is_none()
        && properties.message_expiry_interval.is_none()
        && properties.response_topic.is_none()
        && properties.correlation_data.is_none()
        && properties.user_properties.is_empty()
        && properties.content_type.is_none();
    (!empty).then_some(properties)
}

/// PUBACK/PUBREC reason codes (3.4.2.1).
pub const REASON_SUCCESS: u8 = 0x00;
pub const REASON_NO_MATCHING_SUBSCRIBERS: u8 = 0x10;
pub const REASON_NOT_AUTHORIZED: u8 = 0x87;
pub const REASON_QUOTA_EXCEEDED: u8 = 0x97;
/// SUBACK reason codes for failures (3.9.3).
pub const REASON_UNSPECIFIED: u8 = 0x80;
pub const REASON_IMPLEMENTATION_SPECIFIC: u8 = 0x83;
pub const REASON_TOPIC_FILTER_INVALID: u8 = 0x8F;

/// A PUBACK or PUBREC with a reason code and no properties (remaining length 3).
pub fn encode_ack_with_reason(packet: &Packet, reason: u8, out: &mut BytesMut) {
    let (first_byte, packet_id) = match packet {
        Packet::PubAck(ack) => (0x40, ack.pkid),
        Packet::PubRec(received) => (0x50, received.pkid),
        other => return encode(other, out),
    };
    out.put_u8(first_byte);
    out.put_u8(3);
    out.put_u16(packet_id);
    out.put_u8(reason);
}

/// The DISCONNECT reason code for why the broker ends a session, when it can still say so.
pub fn disconnect_reason(end: &str) -> Option<u8> {
    Some(match end {
        "keep-alive expired" => 0x8D,
        "taken over by a new connection" => 0x8E,
        "broker shutting down" => 0x8B,
        "protocol violation" => 0x82,
        "malformed packet" => 0x81,
        "packet too large" => 0x95,
        "topic alias invalid" => 0x94,
        "topic name invalid" => 0x90,
        "publish not authorised" => 0x87,
        "message store failure" | "message store stopped" | "session queue deleted" => 0x83,
        _ => return None,
    })
}

/// A server DISCONNECT with a reason code and no properties (3.14.2.2).
pub fn encode_disconnect(reason: u8, out: &mut BytesMut) {
    // With an empty property length: also valid, and readable by clients on mqttbytes 0.6,
    // which (like our own reader once did) cannot take the one-byte form.
    out.put_slice(&[0xE0, 0x02, reason, 0x00]);
}

/// PUBLISH properties with nothing set.
pub fn empty_publish_properties() -> v5::PublishProperties {
    v5::PublishProperties {
        payload_format_indicator: None,
        message_expiry_interval: None,
        topic_alias: None,
        response_topic: None,
        correlation_data: None,
        user_properties: Vec::new(),
        subscription_identifiers: Vec::new(),
        content_type: None,
    }
}

/// Whether a string or binary value fits an MQTT field (a 16-bit length, 1.5.4/1.5.6). Longer
/// values from other protocols are left out rather than corrupting the packet.
fn fits(length: usize) -> bool {
    length <= usize::from(u16::MAX)
}

/// Encodes a PUBLISH for an MQTT 5 client, with the message's properties.
pub fn encode_publish(publish: v4::Publish, properties: Option<v5::PublishProperties>, out: &mut BytesMut) {
    let translated = v5::Publish {
        dup: publish.dup,
        qos: publish.qos,
        retain: publish.retain,
        topic: publish.topic,
        pkid: publish.pkid,
        properties,
        payload: publish.payload,
    };
    translated.write(out).expect("a PUBLISH encodes");
}

/// The MQTT 5 reason code for a 3.1.1 CONNACK return code.
fn connect_reason(code: v4::ConnectReturnCode) -> v5::ConnectReturnCode {
    match code {
        v4::ConnectReturnCode::Success => v5::ConnectReturnCode::Success,
        v4::ConnectReturnCode::RefusedProtocolVersion => v5::ConnectReturnCode::UnsupportedProtocolVersion,
        v4::ConnectReturnCode::BadClientId => v5::ConnectReturnCode::ClientIdentifierNotValid,
        v4::ConnectReturnCode::ServiceUnavailable => v5::ConnectReturnCode::ServerUnavailable,
        v4::ConnectReturnCode::BadUserNamePassword => v5::ConnectReturnCode::BadUserNamePassword,
        v4::ConnectReturnCode::NotAuthorized => v5::ConnectReturnCode::NotAuthorized,
    }
}

/// What CONNACK tells an MQTT 5 client about this server.
fn connack_properties(session_expiry_seconds: Option<u32>, packet_bytes_max: u32) -> v5::ConnAckProperties {
    let mut properties = v5::ConnAckProperties::new();
    properties.session_expiry_interval = session_expiry_seconds;
    properties.topic_alias_max = Some(TOPIC_ALIASES_MAX);
    properties.max_packet_size = Some(packet_bytes_max);
    properties.shared_subscription_available = Some(1);

    properties
}

/// Encodes a CONNACK for an MQTT 5 client; `session_expiry_seconds` when the server grants
/// less than the client asked.
pub fn encode_connack(
    ack: &v4::ConnAck,
    session_expiry_seconds: Option<u32>,
    packet_bytes_max: u32,
    assigned_client_id: Option<&str>,
    out: &mut BytesMut,
) {
    let mut connack = v5::ConnAck::new(connect_reason(ack.code), ack.session_present);
    // A v5 CONNACK always has a properties length; mqttbytes writes one only for `Some`.
    connack.properties = Some(if ack.code == v4::ConnectReturnCode::Success {
        let mut properties = connack_properties(session_expiry_seconds, packet_bytes_max);
        // A client that sent an empty client id is told the one it got (3.2.2.3.7).
        properties.assigned_client_identifier = assigned_client_id.map(str::to_owned);
        properties
    } else {
        v5::ConnAckProperties::new()
    });
    connack.write(out).expect("a CONNACK encodes");
}

/// Encodes the CONNACK that refuses a client's Authentication Method (4.12): this server
/// offers no enhanced authentication, as Mosquitto without an auth plugin does not.
pub fn encode_connack_bad_authentication_method(out: &mut BytesMut) {
    let mut connack = v5::ConnAck::new(v5::ConnectReturnCode::BadAuthenticationMethod, false);
    connack.properties = Some(v5::ConnAckProperties::new());
    connack.write(out).expect("a CONNACK encodes");
}

/// Encodes an UNSUBACK: per filter, Success, or No Subscription Existed (0x11).
pub fn encode_unsuback(packet_id: u16, existed: &[bool], out: &mut BytesMut) {
    let reasons = existed
        .iter()
        .map(|existed| if *existed { v5::UnsubAckReason::Success } else { v5::UnsubAckReason::NoSubscriptionExisted })
        .collect();
    let unsuback = v5::UnsubAck { pkid: packet_id, reasons, properties: None };
    unsuback.write(out).expect("an UNSUBACK encodes");
}

/// Encodes a SUBACK from reason codes: the granted QoS, or why the filter failed.
pub fn encode_suback(packet_id: u16, reasons: &[u8], out: &mut BytesMut) {
    let codes = reasons
        .iter()
        .map(|reason| v5::SubscribeReasonCode::try_from(*reason).unwrap_or(v5::SubscribeReasonCode::Unspecified))
        .collect();
    v5::SubAck::new(packet_id, codes).write(out).expect("a SUBACK encodes");
}

/// Encodes a packet the session built in its 3.1.1 form for an MQTT 5 client.
pub fn encode(packet: &Packet, out: &mut BytesMut) {
    let result = match packet {
        Packet::ConnAck(ack) => {
            encode_connack(ack, None, u32::MAX, None, out);
            Ok(0)
        }
        Packet::Publish(publish) => {
            let mut translated = v5::Publish::new(publish.topic.clone(), publish.qos, Vec::new());
            translated.payload = publish.payload.clone();
            translated.dup = publish.dup;
            translated.retain = publish.retain;
            translated.pkid = publish.pkid;
            translated.write(out)
        }
        Packet::PubAck(ack) => v5::PubAck::new(ack.pkid).write(out),
        Packet::PubRec(received) => v5::PubRec::new(received.pkid).write(out),
        Packet::PubRel(released) => v5::PubRel::new(released.pkid).write(out),
        Packet::PubComp(completed) => v5::PubComp::new(completed.pkid).write(out),
        Packet::SubAck(ack) => {
            let codes = ack.return_codes.iter().map(|code| subscribe_reason(*code)).collect();
            v5::SubAck::new(ack.pkid, codes).write(out)
        }
        Packet::UnsubAck(ack) => {
            // Only reached when the filter count is unknown: one reason still makes a valid
            // packet for a single-filter UNSUBSCRIBE, the common case.
            encode_unsuback(ack.pkid, &[true], out);
            Ok(0)
        }
        Packet::PingResp => {
            out.put_slice(&[0xD0, 0x00]);
            Ok(2)
        }
        other => unreachable!("the broker never sends {other:?}"),
    };
    result.expect("broker packets encode");
}

fn subscribe_reason(code: v4::SubscribeReasonCode) -> v5::SubscribeReasonCode {
    match code {
        v4::SubscribeReasonCode::Success(QoS::AtMostOnce) => v5::SubscribeReasonCode::QoS0,
        v4::SubscribeReasonCode::Success(QoS::AtLeastOnce) => v5::SubscribeReasonCode::QoS1,
        v4::SubscribeReasonCode::Success(QoS::ExactlyOnce) => v5::SubscribeReasonCode::QoS2,
        v4::SubscribeReasonCode::Failure => v5::SubscribeReasonCode::Unspecified,
    }
}
