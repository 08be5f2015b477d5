//! Feeds arbitrary bytes to the MQTT decoder, first as a CONNECT (with the 3.1 shim and the
//! MQTT 5 edge), then as later packets of that level: it must never panic.
#![no_main]

use bytes::BytesMut;
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let mut buffer = BytesMut::from(data);
    if let Ok(Some((_, level, _))) = warren_mqtt::codec::decode_connect(&mut buffer, 65_536) {
        if level == warren_mqtt::codec::Level::V5 {
            let mut aliases = warren_mqtt::v5::TopicAliases::default();
            while let Ok(Some(_)) = warren_mqtt::v5::decode(&mut buffer, 65_536, &mut aliases) {}
        } else {
            while let Ok(Some(_)) = warren_mqtt::codec::decode(&mut buffer, 65_536) {}
        }
    }
});
