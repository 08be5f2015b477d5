//! What a persistent session keeps between its connections, beyond its queue and bindings:
//! subscription options and identifiers, shared subscriptions, the packet ids of QoS 2
//! exchanges in progress both ways and of PUBLISHes not yet acknowledged, its expiry and a
//! delayed will.
//!
//! In memory it lives in the session registry while no connection holds the session. With a
//! message store it is also journaled, as one record of a pseudo-queue per session
//! ([`SESSION_PREFIX`]), rewritten when it changes (the new record first, then the old one's
//! removal, as retained messages are), so it comes back after a restart or a crash.
//!
//! The record is appended before what depends on it, and the session holds what it sends until
//! the store has synced the record (`Session::hold_output`, `send_after_sync`), so no client
//! sees a packet that a crash would contradict:
//! - an outbound QoS 2 PUBLISH waits for the record of its id, so a crash resends it under
//!   that id;
//! - PUBREL waits for its released id and its message's removal, so a crash resends PUBREL,
//!   never the PUBLISH;
//! - an inbound QoS 2 id is not in the session record at all: the message's own record names
//!   the session's pseudo-queue too, with the id in a header (`Vhost::enqueue_also`,
//!   `inbound::PACKET_ID_HEADER`), so the message and the id that recognises its resend are
//!   stored together or not at all; PUBREC waits for that record, and PUBCOMP for the mark's
//!   removal (after PUBCOMP the client may use the id for a new message, which a mark left
//!   behind would make the broker drop as a resend). At start the marks become the restored
//!   session's inbound ids.
//!
//! Other stale entries are harmless: a PUBREL for a completed id gets a PUBCOMP anyway (4.3.3),
//! and an id kept for a message no longer queued is only held back.

use std::time::{Duration, SystemTime, UNIX_EPOCH};

use bytes::{Buf, BufMut, Bytes, BytesMut};
use mqttbytes::v4::LastWill;
use mqttbytes::v5::PublishProperties;
use mqttbytes::QoS;

/// Session records are journaled as messages of a pseudo-queue per session, named with this
/// prefix and the client id, which no client can declare (`amq.` names are reserved).
pub const SESSION_PREFIX: &str = "amq.mqtt-session/";

/// The pseudo-queue of a client id's session records.
pub(crate) fn session_queue(client_id: &str) -> warren_core::name::QueueName {
    warren_core::name::QueueName::from(format!("{SESSION_PREFIX}{client_id}"))
}

/// The longest client id whose session is journaled: the pseudo-queue's name must fit the
/// journal's 16-bit name length with the prefix. (Longer ones keep their state in memory.)
pub(crate) const CLIENT_ID_BYTES_MAX: usize = 60_000;

/// Unacknowledged PUBLISH ids kept for resending: more (from messages that left their queue
/// some other way) are dropped, oldest first.
const UNACKED_MAX: usize = 4096;

/// The record's format. (Version 1 records were written only by development builds of
/// 2026-11-23, in a layout that changed that day; they are refused, so removed at start.)
const VERSION: u8 = 2;

/// The PUBLISHes a previous connection sent and did not see acknowledged: resent under the same
/// ids (4.4), which are held back from other deliveries until then.
#[derive(Debug, Default)]
pub(crate) struct Resend {
    by_message: std::collections::HashMap<MessageKey, u16>,
    ids: std::collections::HashSet<u16>,
}

impl Resend {
    /// `None` when there is nothing to resend, so a session without any carries no maps.
    pub(crate) fn new(unacked: Vec<(MessageKey, u16)>) -> Option<Box<Resend>> {
        if unacked.is_empty() {
            return None;
        }
        let mut resend = Resend::default();
        for (key, id) in unacked.into_iter().take(UNACKED_MAX) {
            if resend.ids.insert(id) {
                resend.by_message.insert(key, id);
            }
        }
        Some(Box::new(resend))
    }

    /// The id a message went out under, given back to it.
    pub(crate) fn take(&mut self, key: &MessageKey) -> Option<u16> {
        let id = self.by_message.remove(key)?;
        self.ids.remove(&id);
        Some(id)
    }

    pub(crate) fn holds(&self, id: u16) -> bool {
        self.ids.contains(&id)
    }

    pub(crate) fn pairs(&self) -> impl Iterator<Item = (MessageKey, u16)> + '_ {
        self.by_message.iter().map(|(key, id)| (*key, *id))
    }

    pub(crate) fn is_empty(&self) -> bool {
        self.by_message.is_empty()
    }
}

/// A delivery's identity in the session queue, to resend it under its packet id: the journal
/// record of a stored message (which survives a restart), else its place in the queue.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub(crate) enum MessageKey {
    Journal(u64),
    Sequence(u64),
}

/// One subscription's state beyond its binding.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) struct KeptSubscription {
    pub filter: String,
    pub qos: QoS,
    /// A shared subscription (`$share/...`): the session rejoins its group.
    pub shared: bool,
    pub no_local: bool,
    pub retain_as_published: bool,
    pub identifier: Option<usize>,
}

/// A will waiting for its delay (MQTT 5) to run out.
#[derive(Clone, Debug, PartialEq)]
pub(crate) struct KeptWill {
    pub will: LastWill,
    /// An MQTT 5 will's properties.
    pub properties: Option<Box<PublishProperties>>,
    /// When it is due, as wall-clock time (it must survive a restart).
    pub due: SystemTime,
}

#[derive(Clone, Debug, Default, PartialEq)]
pub(crate) struct Kept {
    pub subscriptions: Vec<(String, QoS)>,
    /// Shared subscriptions, and ordinary ones with MQTT 5 options or an identifier.
    pub extras: Vec<KeptSubscription>,
    /// Outbound QoS 2 ids between PUBREC and PUBCOMP: PUBREL is resent for them.
    pub released: Vec<u16>,
    /// Inbound QoS 2 ids between PUBREC and PUBREL: a PUBLISH resent with one is not routed
    /// again. Each with the record of its message, which marks it in the session's
    /// pseudo-queue (`inbound::PACKET_ID_HEADER`): the marks, not the session record, carry
    /// these across a restart, since a mark is stored with its message or not at all.
    pub incoming: Vec<(u16, Option<u64>)>,
    /// Outbound PUBLISHes not acknowledged, by message: resent under the same ids (4.4).
    pub unacked: Vec<(MessageKey, u16)>,
    /// How long the session outlives its connection.
    pub expiry: Duration,
    /// When its last connection ended (`None` while one holds it): its expiry runs from then.
    pub left: Option<SystemTime>,
    pub will: Option<KeptWill>,
}

impl Kept {
    /// Nothing kept.
    pub(crate) const NOTHING: Kept = Kept {
        subscriptions: Vec::new(),
        extras: Vec::new(),
        released: Vec::new(),
        incoming: Vec::new(),
        unacked: Vec::new(),
        expiry: Duration::ZERO,
        left: None,
        will: None,
    };

    /// Whether there is anything beyond a queue to keep.
    pub(crate) fn is_empty(&self) -> bool {
        self.subscriptions.is_empty()
            && self.extras.is_empty()
            && self.released.is_empty()
            && self.incoming.is_empty()
            && self.unacked.is_empty()
            && self.will.is_none()
    }

    /// Drops unacked ids over the bound (arbitrary ones: they are only held back, and losing
    /// one means a resend under a new id).
    pub(crate) fn bound(&mut self) {
        if self.unacked.len() > UNACKED_MAX {
            let excess = self.unacked.len() - UNACKED_MAX;
            self.unacked.drain(..excess);
        }
    }

    /// The journal record. Ordinary subscriptions are not in it (the durable bindings are
    /// their record), nor unacked ids of messages that are not stored (they do not survive a
    /// restart either).
    pub(crate) fn encode(&self) -> Bytes {
        let mut out = BytesMut::new();
        out.put_u8(VERSION);
        out.put_u32(u32::try_from(self.expiry.as_secs()).unwrap_or(u32::MAX));
        let left_ms = self.left.map_or(0, |left| left.duration_since(UNIX_EPOCH).unwrap_or_default().as_millis());
        out.put_u64(u64::try_from(left_ms).unwrap_or(u64::MAX));
        let extras: Vec<&KeptSubscription> =
            self.extras.iter().filter(|extra| extra.filter.len() <= usize::from(u16::MAX)).take(0xFFFF).collect();
        out.put_u16(extras.len() as u16);
        for extra in extras {
            put_str(&mut out, &extra.filter);
            out.put_u8(extra.qos as u8);
            let flags = u8::from(extra.shared)
                | u8::from(extra.no_local) << 1
                | u8::from(extra.retain_as_published) << 2
                | u8::from(extra.identifier.is_some()) << 3;
            out.put_u8(flags);
            out.put_u32(extra.identifier.map_or(0, |identifier| u32::try_from(identifier).unwrap_or(u32::MAX)));
        }
        let released = &self.released[..self.released.len().min(0xFFFF)];
        out.put_u16(released.len() as u16);
        for id in released {
            out.put_u16(*id);
        }
        let unacked: Vec<(u64, u16)> = self
            .unacked
            .iter()
            .filter_map(|(key, id)| match key {
                MessageKey::Journal(record) => Some((*record, *id)),
                MessageKey::Sequence(_) => None,
            })
            .take(0xFFFF)
            .collect();
        out.put_u16(unacked.len() as u16);
        for (record, id) in unacked {
            out.put_u64(record);
            out.put_u16(id);
        }
        match &self.will {
            Some(kept) if kept.will.topic.len() <= usize::from(u16::MAX) => {
                out.put_u8(1);
                put_str(&mut out, &kept.will.topic);
                out.put_u32(u32::try_from(kept.will.message.len()).unwrap_or(u32::MAX));
                out.put_slice(&kept.will.message);
                out.put_u8(kept.will.qos as u8);
                out.put_u8(u8::from(kept.will.retain));
                let due_ms = kept.due.duration_since(UNIX_EPOCH).unwrap_or_default().as_millis();
                out.put_u64(u64::try_from(due_ms).unwrap_or(u64::MAX));
                match &kept.properties {
                    Some(properties) => {
                        out.put_u8(1);
                        put_properties(&mut out, properties);
                    }
                    None => out.put_u8(0),
                }
            }
            _ => out.put_u8(0),
        }
        out.freeze()
    }

    /// Reads a journal record back; `None` if it is damaged or of an unknown version.
    pub(crate) fn decode(mut input: Bytes) -> Option<Kept> {
        let input = &mut input;
        if get_u8(input)? != VERSION {
            return None;
        }
        let expiry = Duration::from_secs(u64::from(get_u32(input)?));
        let left_ms = get_u64(input)?;
        let left = (left_ms != 0).then(|| UNIX_EPOCH + Duration::from_millis(left_ms));
        let mut kept = Kept { expiry, left, ..Kept::default() };
        for _ in 0..get_u16(input)? {
            let filter = get_str(input)?;
            let qos = qos(get_u8(input)?)?;
            let flags = get_u8(input)?;
            let identifier = get_u32(input)?;
            kept.extras.push(KeptSubscription {
                filter,
                qos,
                shared: flags & 1 != 0,
                no_local: flags & 2 != 0,
                retain_as_published: flags & 4 != 0,
                identifier: (flags & 8 != 0).then_some(identifier as usize),
            });
        }
        for _ in 0..get_u16(input)? {
            kept.released.push(get_u16(input)?);
        }
        for _ in 0..get_u16(input)? {
            let record = get_u64(input)?;
            kept.unacked.push((MessageKey::Journal(record), get_u16(input)?));
        }
        if get_u8(input)? == 1 {
            let topic = get_str(input)?;
            let length = get_u32(input)? as usize;
            if input.remaining() < length {
                return None;
            }
            let message = input.split_to(length);
            let qos = qos(get_u8(input)?)?;
            let retain = get_u8(input)? != 0;
            let due = UNIX_EPOCH + Duration::from_millis(get_u64(input)?);
            let properties = match get_u8(input)? {
                0 => None,
                _ => Some(Box::new(get_properties(input)?)),
            };
            kept.will = Some(KeptWill { will: LastWill { topic, message, qos, retain }, properties, due });
        }
        input.is_empty().then_some(kept)
    }
}

fn put_str(out: &mut BytesMut, text: &str) {
    // MQTT strings are at most 64 KiB, so nothing is cut short here.
    let text = &text.as_bytes()[..text.len().min(usize::from(u16::MAX))];
    out.put_u16(text.len() as u16);
    out.put_slice(text);
}

fn put_optional_str(out: &mut BytesMut, text: Option<&str>) {
    match text {
        Some(text) => {
            out.put_u8(1);
            put_str(out, text);
        }
        None => out.put_u8(0),
    }
}

fn get_optional_str(input: &mut Bytes) -> Option<Option<String>> {
    match get_u8(input)? {
        0 => Some(None),
        _ => get_str(input).map(Some),
    }
}

/// A will's properties: those a PUBLISH carries (no alias, no identifiers).
fn put_properties(out: &mut BytesMut, properties: &PublishProperties) {
    out.put_u8(properties.payload_format_indicator.map_or(0, |indicator| indicator.saturating_add(1)));
    out.put_u8(u8::from(properties.message_expiry_interval.is_some()));
    out.put_u32(properties.message_expiry_interval.unwrap_or(0));
    put_optional_str(out, properties.content_type.as_deref());
    put_optional_str(out, properties.response_topic.as_deref());
    match &properties.correlation_data {
        Some(data) => {
            out.put_u8(1);
            let data = &data[..data.len().min(usize::from(u16::MAX))];
            out.put_u16(data.len() as u16);
            out.put_slice(data);
        }
        None => out.put_u8(0),
    }
    let pairs = &properties.user_properties[..properties.user_properties.len().min(usize::from(u16::MAX))];
    out.put_u16(pairs.len() as u16);
    for (key, value) in pairs {
        put_str(out, key);
        put_str(out, value);
    }
}

fn get_properties(input: &mut Bytes) -> Option<PublishProperties> {
    let payload_format_indicator = get_u8(input)?.checked_sub(1);
    let has_expiry = get_u8(input)? != 0;
    let expiry = get_u32(input)?;
    let content_type = get_optional_str(input)?;
    let response_topic = get_optional_str(input)?;
    let correlation_data = match get_u8(input)? {
        0 => None,
        _ => {
            let length = usize::from(get_u16(input)?);
            if input.remaining() < length {
                return None;
            }
            Some(input.split_to(length))
        }
    };
    let mut user_properties = Vec::new();
    for _ in 0..get_u16(input)? {
        user_properties.push((get_str(input)?, get_str(input)?));
    }
    Some(PublishProperties {
        payload_format_indicator,
        message_expiry_interval: has_expiry.then_some(expiry),
        topic_alias: None,
        response_topic,
        correlation_data,
        user_properties,
        subscription_identifiers: Vec::new(),
        content_type,
    })
}

fn get_u8(input: &mut Bytes) -> Option<u8> {
    (input.remaining() >= 1).then(|| input.get_u8())
}

fn get_u16(input: &mut Bytes) -> Option<u16> {
    (input.remaining() >= 2).then(|| input.get_u16())
}

fn get_u32(input: &mut Bytes) -> Option<u32> {
    (input.remaining() >= 4).then(|| input.get_u32())
}

fn get_u64(input: &mut Bytes) -> Option<u64> {
    (input.remaining() >= 8).then(|| input.get_u64())
}

fn get_str(input: &mut Bytes) -> Option<String> {
    let length = usize::from(get_u16(input)?);
    if input.remaining() < length {
        return None;
    }
    String::from_utf8(input.split_to(length).to_vec()).ok()
}

fn qos(level: u8) -> Option<QoS> {
    match level {
        0 => Some(QoS::AtMostOnce),
        1 => Some(QoS::AtLeastOnce),
        2 => Some(QoS::ExactlyOnce),
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sample() -> Kept {
        Kept {
            subscriptions: Vec::new(),
            extras: vec![
                KeptSubscription {
                    filter: "$share/g/a/+".into(),
                    qos: QoS::ExactlyOnce,
                    shared: true,
                    no_local: false,
                    retain_as_published: false,
                    identifier: Some(7),
                },
                KeptSubscription {
                    filter: "b/#".into(),
                    qos: QoS::AtLeastOnce,
                    shared: false,
                    no_local: true,
                    retain_as_published: true,
                    identifier: None,
                },
            ],
            released: vec![3, 65535],
            // Carried by the messages' marks, not by the record.
            incoming: Vec::new(),
            unacked: vec![(MessageKey::Journal(42), 9)],
            expiry: Duration::from_secs(600),
            left: Some(UNIX_EPOCH + Duration::from_millis(1_700_000_000_000)),
            will: Some(KeptWill {
                will: LastWill {
                    topic: "w".into(),
                    message: Bytes::from_static(b"gone"),
                    qos: QoS::AtLeastOnce,
                    retain: true,
                },
                properties: Some(Box::new(PublishProperties {
                    payload_format_indicator: Some(1),
                    message_expiry_interval: Some(30),
                    topic_alias: None,
                    response_topic: Some("r/t".into()),
                    correlation_data: Some(Bytes::from_static(b"\x00\x01")),
                    user_properties: vec![("k".into(), "v".into())],
                    subscription_identifiers: Vec::new(),
                    content_type: Some("text/plain".into()),
                })),
                due: UNIX_EPOCH + Duration::from_millis(1_700_000_000_123),
            }),
        }
    }

    #[test]
    fn a_record_reads_back_as_written() {
        let kept = sample();
        assert_eq!(Kept::decode(kept.encode()), Some(kept));
        assert_eq!(Kept::decode(Kept::default().encode()), Some(Kept::default()));
    }

    #[test]
    fn unstored_messages_are_not_in_the_record() {
        let mut kept = sample();
        kept.unacked.push((MessageKey::Sequence(5), 10));
        let back = Kept::decode(kept.encode()).expect("reads back");
        assert_eq!(back.unacked, [(MessageKey::Journal(42), 9)]);
    }

    #[test]
    fn damaged_records_are_refused_without_panicking() {
        let encoded = sample().encode();
        for cut in 0..encoded.len() {
            assert_eq!(Kept::decode(encoded.slice(..cut)), None, "cut at {cut}");
        }
        let mut longer = encoded.to_vec();
        longer.push(0);
        assert_eq!(Kept::decode(Bytes::from(longer)), None, "trailing bytes");
        let mut version = encoded.to_vec();
        version[0] = VERSION + 1;
        assert_eq!(Kept::decode(Bytes::from(version)), None, "unknown version");
        // Arbitrary bytes never panic.
        let mut seed = 0x9E37_79B9_7F4A_7C15u64;
        for _ in 0..2000 {
            let mut bytes = encoded.to_vec();
            seed ^= seed << 13;
            seed ^= seed >> 7;
            seed ^= seed << 17;
            let at = (seed as usize) % bytes.len();
            bytes[at] = (seed >> 32) as u8;
            let _ = Kept::decode(Bytes::from(bytes));
        }
    }
}
