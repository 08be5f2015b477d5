//! Seeded fuzzing of the frame decoder, run with every test: valid frame streams with random
//! byte flips, insertions, truncations and length changes, plus pure noise. The decoder must
//! return a frame, `Ok(None)` or an error, never panic, and never buffer more than the frame
//! size bound allows. `WARREN_SEED` replays a failure; `WARREN_FUZZ_ROUNDS` runs longer.

use bytes::BytesMut;
use warren_amqp::codec::{self, Frame, Method};
use warren_testkit::{fuzz_rounds, Rng};

const FRAME_MAX: u32 = 131_072;

/// A valid stream: every method sample, a content header and a body.
fn corpus() -> Vec<u8> {
    let mut out = BytesMut::new();
    for (index, method) in Method::samples().into_iter().enumerate() {
        codec::encode_method(&mut out, index as u16, &method);
    }
    codec::encode_frame(
        &mut out,
        &Frame::Header { channel: 1, class_id: 60, body_size: 3, properties: Box::default() },
        FRAME_MAX,
    );
    codec::encode_body(&mut out, 1, b"abc", FRAME_MAX);
    out.to_vec()
}

fn mutate(rng: &mut Rng, input: &[u8]) -> Vec<u8> {
    let mut bytes = input.to_vec();
    for _ in 0..=rng.below(8) {
        if bytes.is_empty() {
            break;
        }
        let at = rng.below(bytes.len());
        match rng.below(5) {
            0 => bytes[at] = rng.next_u64() as u8,
            1 => bytes[at] ^= 1 << rng.below(8),
            2 => bytes.insert(at, rng.next_u64() as u8),
            3 => bytes.truncate(at),
            _ => {
                // Overwrite what may be a length field with an extreme value.
                let value = [0x00, 0xFF, 0x7F, 0x80][rng.below(4)];
                for byte in bytes.iter_mut().skip(at).take(4) {
                    *byte = value;
                }
            }
        }
    }
    bytes
}

/// Decodes everything it can, as a connection would, and checks the bound.
fn decode_all(input: &[u8], rng: &mut Rng) {
    let mut buffer = BytesMut::new();
    let mut offset = 0;
    while offset < input.len() {
        let end = (offset + 1 + rng.below(512)).min(input.len());
        buffer.extend_from_slice(&input[offset..end]);
        offset = end;
        loop {
            match codec::decode(&mut buffer, FRAME_MAX) {
                Ok(Some(_)) => continue,
                Ok(None) => break,
                Err(_) => return,
            }
        }
        assert!(buffer.len() <= FRAME_MAX as usize + 512, "buffered {} bytes without a frame", buffer.len());
    }
}

#[test]
fn mutated_frame_streams_never_panic() {
    let corpus = corpus();
    fuzz_rounds(|rng, splits| decode_all(&mutate(rng, &corpus), splits));
}

#[test]
fn random_noise_never_panics() {
    fuzz_rounds(|rng, splits| {
        let length = rng.below(2048);
        let mut input: Vec<u8> = (0..length).map(|_| rng.next_u64() as u8).collect();
        // Often start with a plausible frame type so the decoder gets past the first byte.
        if let Some(first) = input.first_mut() {
            *first = [1, 2, 3, 8, *first][rng.below(5)];
        }
        decode_all(&input, splits);
    });
}
