//! Seeded fuzzing of the STOMP decoder, run with every test: valid frame streams with random
//! mutations, plus noise, in both escaping modes. Decoding must never panic, and a frame that
//! does not decode must not make the decoder hold more than its bounds allow.
//! `WARREN_SEED` replays a failure; `WARREN_FUZZ_ROUNDS` runs longer.

use bytes::{Bytes, BytesMut};
use warren_stomp::codec::{decode_resuming, encode, Escaping, Frame, Limits};
use warren_testkit::{fuzz_rounds, Rng};

const LIMITS: Limits = Limits { line_bytes_max: 256, headers_max: 8, body_bytes_max: 4096 };

fn corpus() -> Vec<u8> {
    let mut out = BytesMut::new();
    let connect = Frame::new("CONNECT").with("accept-version", "1.2").with("login", "guest").with("passcode", "guest");
    encode(&connect, Escaping::None, &mut out);
    let send = Frame::new("SEND").with("destination", "/queue/a").with("x-escaped", "a:b\nc\\d");
    encode(&Frame { body: Bytes::from_static(b"bin\0ary"), ..send }, Escaping::Stomp12, &mut out);
    encode(&Frame::new("SUBSCRIBE").with("id", "1").with("destination", "/topic/x.*"), Escaping::Stomp12, &mut out);
    out.extend_from_slice(b"\n\r\n");
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
            1 => bytes[at] = [b'\n', b'\r', b':', b'\\', 0][rng.below(5)],
            2 => bytes.insert(at, rng.next_u64() as u8),
            3 => bytes.truncate(at),
            _ => {
                bytes.remove(at);
            }
        }
    }
    bytes
}

fn decode_all(input: &[u8], rng: &mut Rng, escaping: Escaping) {
    let mut buffer = BytesMut::new();
    let mut searched = 0;
    let mut offset = 0;
    while offset < input.len() {
        let end = (offset + 1 + rng.below(64)).min(input.len());
        buffer.extend_from_slice(&input[offset..end]);
        offset = end;
        loop {
            match decode_resuming(&mut buffer, &LIMITS, escaping, &mut searched) {
                Ok(Some(_)) => continue,
                Ok(None) => break,
                Err(_) => return,
            }
        }
        let bound = LIMITS.line_bytes_max * (LIMITS.headers_max + 2) + LIMITS.body_bytes_max + 64;
        assert!(buffer.len() <= bound, "held {} bytes without a frame or an error", buffer.len());
    }
}

#[test]
fn mutated_frame_streams_never_panic() {
    let corpus = corpus();
    fuzz_rounds(|rng, splits| {
        let input = mutate(rng, &corpus);
        for escaping in [Escaping::None, Escaping::Stomp12] {
            decode_all(&input, &mut splits.clone(), escaping);
        }
    });
}

#[test]
fn random_noise_never_panics() {
    fuzz_rounds(|rng, splits| {
        let length = rng.below(2048);
        let input: Vec<u8> = (0..length).map(|_| [b'\n', b':', b'a', 0, rng.next_u64() as u8][rng.below(5)]).collect();
        decode_all(&input, splits, Escaping::Stomp12);
    });
}
