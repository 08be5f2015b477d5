//! Seeded fuzzing of the MQTT codec (mqttbytes plus our 3.1 shim), run with every test: valid
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
    let mut first = true;
    let mut offset = 0;
    while offset < input.len() {
        let end = (offset + 1 + rng.below(256)).min(input.len());
        buffer.extend_from_slice(&input[offset..end]);
        offset = end;
        loop {
            let result = if first {
                codec::decode_connect(&mut buffer, PACKET_MAX).map(|packet| packet.map(|(packet, _)| packet))
            } else {
                codec::decode(&mut buffer, PACKET_MAX)
            };
            match result {
                Ok(Some(_)) => first = false,
                Ok(None) => break,
                Err(_) => return,
            }
        }
    }
}

#[test]
fn mutated_packet_streams_never_panic() {
    let corpora = [corpus(), mqtt31_corpus()];
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
