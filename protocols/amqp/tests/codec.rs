//! Codec round-trip and chunking tests: every frame type, encoded, then decoded whole, one byte
//! at a time, and in seeded random splits. Set `WARREN_SEED` to replay a failing seed.

use bytes::{Bytes, BytesMut};
use warren_amqp::codec::methods::sample_table;
use warren_amqp::codec::{self, CodecError, Frame, Method};
use warren_core::properties::Properties;

const FRAME_MAX: u32 = 131_072;

fn full_properties() -> Properties {
    Properties {
        content_type: Some("application/json".into()),
        content_encoding: Some("gzip".into()),
        headers: Some(sample_table()),
        delivery_mode: Some(2),
        priority: Some(7),
        correlation_id: Some("correlation".into()),
        reply_to: Some("amq.gen-reply".into()),
        expiration: Some("60000".into()),
        message_id: Some("message-1".into()),
        timestamp: Some(1_700_000_000),
        kind: Some("kind".into()),
        user_id: Some("guest".into()),
        app_id: Some("app".into()),
        cluster_id: Some("cluster".into()),
    }
}

/// Every frame type: each method (twice), headers with no and with every property, bodies and a
/// heartbeat.
fn every_frame() -> Vec<Frame> {
    let mut frames: Vec<Frame> = Method::samples()
        .into_iter()
        .enumerate()
        .map(|(index, method)| Frame::Method { channel: index as u16, method })
        .collect();
    for properties in [Properties::default(), full_properties()] {
        frames.push(Frame::Header { channel: 9, class_id: 60, body_size: 12, properties: Box::new(properties) });
    }
    frames.push(Frame::Body { channel: 9, payload: Bytes::from_static(b"hello, world") });
    frames.push(Frame::Body { channel: 65535, payload: Bytes::from(vec![0xAB; 4000]) });
    frames.push(Frame::Heartbeat);
    frames
}

fn encode_all(frames: &[Frame]) -> BytesMut {
    let mut out = BytesMut::new();
    for frame in frames {
        codec::encode_frame(&mut out, frame, FRAME_MAX);
    }
    out
}

/// Feeds `stream` to the decoder in pieces of the given sizes, decoding after each.
fn decode_in_pieces(stream: &[u8], mut piece: impl FnMut() -> usize) -> Vec<Frame> {
    let mut buffer = BytesMut::new();
    let mut frames = Vec::new();
    let mut offset = 0;
    while offset < stream.len() {
        let end = (offset + piece().max(1)).min(stream.len());
        buffer.extend_from_slice(&stream[offset..end]);
        offset = end;
        while let Some(frame) = codec::decode(&mut buffer, FRAME_MAX).expect("valid stream decodes") {
            frames.push(frame);
        }
    }
    assert!(buffer.is_empty(), "no bytes left over");
    frames
}

#[test]
fn every_method_has_a_sample() {
    // 2 samples per method; the spec has 66 methods across its 8 classes (14 connection, 6 channel, 2 access,
    // 8 exchange, 10 queue, 18 basic, 6 tx, 2 confirm).
    assert_eq!(Method::samples().len(), 2 * 66);
}

#[test]
fn every_frame_round_trips_whole() {
    let frames = every_frame();
    let stream = encode_all(&frames);
    let decoded = decode_in_pieces(&stream, || usize::MAX / 2);
    assert_eq!(decoded, frames);
}

#[test]
fn every_frame_round_trips_one_byte_at_a_time() {
    let frames = every_frame();
    let stream = encode_all(&frames);
    assert_eq!(decode_in_pieces(&stream, || 1), frames);
}

#[test]
fn every_frame_round_trips_in_random_splits() {
    let seed: u64 = std::env::var("WARREN_SEED").ok().and_then(|text| text.parse().ok()).unwrap_or_else(|| {
        std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map_or(1, |d| d.as_nanos() as u64)
    }) | 1;
    let frames = every_frame();
    let stream = encode_all(&frames);
    let mut state = seed;
    for round in 0..20 {
        let decoded = decode_in_pieces(&stream, || {
            state ^= state << 13;
            state ^= state >> 7;
            state ^= state << 17;
            (state % 300) as usize + 1
        });
        assert_eq!(decoded, frames, "seed {seed} round {round}");
    }
}

#[test]
fn large_bodies_are_split_at_frame_max() {
    let body = vec![7u8; 10_000];
    let mut out = BytesMut::new();
    codec::encode_body(&mut out, 1, &body, 4096);
    let mut reassembled = Vec::new();
    let mut count = 0;
    while let Some(frame) = codec::decode(&mut out, 4096).expect("decodes") {
        let Frame::Body { payload, .. } = frame else { panic!("expected a body frame") };
        assert!(payload.len() <= 4096 - 8);
        reassembled.extend_from_slice(&payload);
        count += 1;
    }
    assert_eq!(count, 3);
    assert_eq!(reassembled, body);
}

#[test]
fn malformed_frames_are_errors_not_panics() {
    let mut frame = BytesMut::new();
    codec::encode_heartbeat(&mut frame);
    let mut bad_end = frame.clone();
    let last = bad_end.len() - 1;
    bad_end[last] = 0;
    assert_eq!(codec::decode(&mut bad_end, FRAME_MAX), Err(CodecError::BadFrameEnd { found: 0 }));

    let mut unknown = BytesMut::from(&[9u8, 0, 0, 0, 0, 0, 0, 0xCE][..]);
    assert_eq!(codec::decode(&mut unknown, FRAME_MAX), Err(CodecError::UnknownFrameType { frame_type: 9 }));

    let mut huge = BytesMut::from(&[3u8, 0, 1, 0xFF, 0xFF, 0xFF, 0xFF][..]);
    assert!(matches!(codec::decode(&mut huge, FRAME_MAX), Err(CodecError::FrameTooLarge { .. })));

    // queue.declare whose queue-name length runs past the payload.
    let mut truncated = BytesMut::from(&[1u8, 0, 1, 0, 0, 0, 7, 0, 50, 0, 10, 0, 0, 200, 0xCE][..]);
    assert_eq!(codec::decode(&mut truncated, FRAME_MAX), Err(CodecError::Truncated));

    let mut unknown_method = BytesMut::from(&[1u8, 0, 1, 0, 0, 0, 4, 0, 99, 0, 1, 0xCE][..]);
    assert_eq!(
        codec::decode(&mut unknown_method, FRAME_MAX),
        Err(CodecError::UnknownMethod { class_id: 99, method_id: 1 })
    );
}

#[test]
fn every_truncation_of_every_method_is_an_error_not_a_panic() {
    for method in Method::samples() {
        let mut out = BytesMut::new();
        codec::encode_method(&mut out, 1, &method);
        let payload_len = out.len() - 8;
        for cut in 0..payload_len {
            // Rewrite the frame as if its payload ended after `cut` bytes.
            let mut frame = BytesMut::new();
            frame.extend_from_slice(&[1, 0, 1]);
            frame.extend_from_slice(&(cut as u32).to_be_bytes());
            frame.extend_from_slice(&out[7..7 + cut]);
            frame.extend_from_slice(&[0xCE]);
            let _ = codec::decode(&mut frame, FRAME_MAX);
        }
    }
}

#[test]
fn vendored_spec_matches_the_shared_copy() {
    // The build reads a vendored copy so the crate builds on its own; when the project's shared
    // directory sits beside the repository (as in development and CI), the copy must match it.
    let manifest = std::path::Path::new(env!("CARGO_MANIFEST_DIR"));
    let shared = manifest.join("../../../shared/specs/amqp-rabbitmq-0.9.1.json");
    let Ok(shared) = std::fs::read(shared) else {
        return;
    };
    let vendored = std::fs::read(manifest.join("spec/amqp-rabbitmq-0.9.1.json")).expect("vendored spec");
    assert!(shared == vendored, "protocols/amqp/spec/ is stale: copy ../shared/specs/amqp-rabbitmq-0.9.1.json");
}
