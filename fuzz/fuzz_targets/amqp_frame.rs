//! Feeds arbitrary bytes to the AMQP frame decoder, split at a fuzzer-chosen point, as a
//! connection would: it must never panic.
#![no_main]

use bytes::BytesMut;
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let split = data.first().map_or(0, |byte| usize::from(*byte)).min(data.len());
    let mut buffer = BytesMut::new();
    for part in [&data[..split], &data[split..]] {
        buffer.extend_from_slice(part);
        while let Ok(Some(_)) = warren_amqp::codec::decode(&mut buffer, 131_072) {}
    }
});
