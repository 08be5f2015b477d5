//! Feeds arbitrary bytes to the STOMP frame decoder with small limits, in both escaping modes:
//! it must never panic.
#![no_main]

use bytes::BytesMut;
use libfuzzer_sys::fuzz_target;
use warren_stomp::codec::{decode, Escaping, Limits};

fuzz_target!(|data: &[u8]| {
    let limits = Limits { line_bytes_max: 256, headers_max: 8, body_bytes_max: 4096 };
    for escaping in [Escaping::None, Escaping::Stomp12] {
        let mut buffer = BytesMut::from(data);
        while let Ok(Some(_)) = decode(&mut buffer, &limits, escaping) {}
    }
});
