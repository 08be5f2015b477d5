//! Feeds arbitrary bytes to the STOMP frame decoder with small limits, in both escaping modes:
//! it must never panic.
#![no_main]

use bytes::BytesMut;
use libfuzzer_sys::fuzz_target;
use warren_stomp::codec::{decode, decode_resuming, Escaping, Limits};

fuzz_target!(|data: &[u8]| {
    let limits = Limits { line_bytes_max: 256, headers_max: 8, body_bytes_max: 4096 };
    for escaping in [Escaping::None, Escaping::Stomp12] {
        let mut buffer = BytesMut::from(data);
        while let Ok(Some(_)) = decode(&mut buffer, &limits, escaping) {}
        // Fed in two parts, resuming the body search between them: must decode the same way.
        let split = data.first().map_or(0, |byte| usize::from(*byte)).min(data.len());
        let (mut buffer, mut searched) = (BytesMut::new(), 0);
        for part in [&data[..split], &data[split..]] {
            buffer.extend_from_slice(part);
            while let Ok(Some(_)) = decode_resuming(&mut buffer, &limits, escaping, &mut searched) {}
        }
    }
});
