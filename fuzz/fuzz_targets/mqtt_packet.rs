//! Feeds arbitrary bytes to the MQTT decoder, first as a CONNECT (with the 3.1 shim), then as
//! later packets: it must never panic.
#![no_main]

use bytes::BytesMut;
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let mut buffer = BytesMut::from(data);
    if let Ok(Some(_)) = warren_mqtt::codec::decode_connect(&mut buffer, 65_536) {
        while let Ok(Some(_)) = warren_mqtt::codec::decode(&mut buffer, 65_536) {}
    }
});
