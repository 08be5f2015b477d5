//! Seeded fuzzing of the MQTT codec (mqttbytes plus our 3.1 shim and MQTT 5 edge), run with every test: valid
//! packet streams with random mutations, plus noise. Decoding must never panic.
//! `WARREN_SEED` replays a failure; `WARREN_FUZZ_ROUNDS` runs longer.

use bytes::{Bytes, BytesMut};
use mqttbytes::v4::{Connect, Publish, Subscribe, Unsubscribe};
use mqttbytes::QoS;
use warren_mqtt::codec;
use warren_testkit::{fuzz_rounds, Rng};

const PACKET_MAX: usize = 64 * 1024;

fn corpus() -> Vec<u8> {
    let mut out = BytesMut::new();
    let mut connect = Connect::new("device");
    connect.set_login("guest", "guest");
    connect.write(&mut out).expect("encodes");
    let mut publish = Publish::from_bytes("a/b/c", QoS::AtLeastOnce, Bytes::from_static(b"payload"));
    publish.pkid = 7;
    publish.write(&mut out).expect("encodes");
    Subscribe::new("a/+/#", QoS::AtLeastOnce).write(&mut out).expect("encodes");
    Unsubscribe::new("a/+/#").write(&mut out).expect("encodes");
    out.to_vec()
}

/// An MQTT 3.1 CONNECT (`MQIsdp`, level 3, client id "id"), which goes through the shim.
fn mqtt31_corpus() -> Vec<u8> {
    let mut bytes = vec![0x10, 16, 0x00, 0x06];
    bytes.extend_from_slice(b"MQIsdp");
    bytes.extend_from_slice(&[0x03, 0x02, 0x00, 0x3c, 0x00, 0x02]);
    bytes.extend_from_slice(b"id");
    bytes.extend_from_slice(&corpus()[14..]);
    bytes
}

/// An MQTT 5 stream: CONNECT with a session expiry, PUBLISH with properties, SUBSCRIBE,
/// UNSUBSCRIBE and a DISCONNECT without a reason code.
fn mqtt5_corpus() -> Vec<u8> {
    use mqttbytes::v5;
    let mut out = BytesMut::new();
    let mut connect = v5::Connect::new("device5");
    connect.login = Some(v5::Login::new("guest", "guest"));
    connect.properties = Some(v5::ConnectProperties {
        session_expiry_interval: Some(60),
        receive_maximum: Some(10),
        max_packet_size: None,
        topic_alias_max: None,
        request_response_info: None,
        request_problem_info: None,
        user_properties: Vec::new(),
        authentication_method: None,
        authentication_data: None,
    });
    connect.write(&mut out).expect("encodes");
    let mut publish = v5::Publish::new("a/b/c", QoS::ExactlyOnce, b"payload".to_vec());
    publish.pkid = 9;
    publish.properties = Some(v5::PublishProperties {
        payload_format_indicator: None,
        message_expiry_interval: Some(30),
        topic_alias: None,
        response_topic: None,
        correlation_data: None,
        user_properties: vec![("k".into(), "v".into())],
        subscription_identifiers: Vec::new(),
        content_type: None,
    });
    publish.write(&mut out).expect("encodes");
    // The same topic again through a topic alias (set, then used with an empty topic).
    for topic in ["a/b/c", ""] {
        let mut aliased = v5::Publish::new(topic, QoS::AtMostOnce, b"aliased".to_vec());
        aliased.properties = Some(v5::PublishProperties {
            payload_format_indicator: None,
            message_expiry_interval: None,
            topic_alias: Some(3),
            response_topic: None,
            correlation_data: None,
            user_properties: Vec::new(),
            subscription_identifiers: Vec::new(),
            content_type: None,
        });
        aliased.write(&mut out).expect("encodes");
    }
    v5::Subscribe::new("a/+/#", QoS::AtLeastOnce).write(&mut out).expect("encodes");
    v5::Unsubscribe::new("a/+/#").write(&mut out).expect("encodes");
    out.extend_from_slice(&[0xE0, 0x00]);
    out.to_vec()
}

fn mutate(rng: &mut Rng, input: &[u8]) -> Vec<u8> {
    let mut bytes = input.to_vec();
    for _ in 0..=rng.below(8) {
        if bytes.is_empty() {
            break;
        }
        let at = rng.below(bytes.len());
        match rng.below(4) {
            0 => bytes[at] = rng.next_u64() as u8,
            1 => bytes[at] ^= 1 << rng.below(8),
            2 => bytes.insert(at, rng.next_u64() as u8),
            _ => bytes.truncate(at),
        }
    }
    bytes
}

fn decode_all(input: &[u8], rng: &mut Rng) {
    let mut buffer = BytesMut::new();
    let mut level = None;
    let mut aliases = warren_mqtt::v5::TopicAliases::default();
    let mut offset = 0;
    while offset < input.len() {
        let end = (offset + 1 + rng.below(256)).min(input.len());
        buffer.extend_from_slice(&input[offset..end]);
        offset = end;
        loop {
            let result = match level {
                None => codec::decode_connect(&mut buffer, PACKET_MAX).map(|connected| {
                    connected.map(|(packet, connected_level, _)| {
                        level = Some(connected_level);
                        packet
                    })
                }),
                Some(codec::Level::V5) => warren_mqtt::v5::decode(&mut buffer, PACKET_MAX, &mut aliases)
                    .map(|decoded| decoded.map(|(packet, _)| packet)),
                Some(_) => codec::decode(&mut buffer, PACKET_MAX),
            };
            match result {
                Ok(Some(_)) => {}
                Ok(None) => break,
                Err(_) => return,
            }
        }
    }
}

#[test]
fn mutated_packet_streams_never_panic() {
    let corpora = [corpus(), mqtt31_corpus(), mqtt5_corpus()];
    fuzz_rounds(|rng, splits| {
        let corpus = &corpora[rng.below(corpora.len())];
        decode_all(&mutate(rng, corpus), splits);
    });
}

#[test]
fn random_noise_never_panics() {
    fuzz_rounds(|rng, splits| {
        let length = rng.below(1024);
        let input: Vec<u8> = (0..length).map(|_| rng.next_u64() as u8).collect();
        decode_all(&input, splits);
    });
}
