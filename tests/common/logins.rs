//! Logging in over each protocol with raw frames or lapin, for the auth-backend tests, and
//! building the plugin libraries those tests load.
//!
//! The plugin libraries are workspace crates built as cdylibs next to the `warren` binary, which
//! is where the broker looks by default. `cargo test` does not build cdylibs, so the tests build
//! them first (a no-op when they are fresh).

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::process::Command;
use std::sync::Once;
use std::time::Duration;

use lapin::{Connection, ConnectionProperties};

use super::Broker;

/// The plugin crates the tests load.
const PLUGIN_CRATES: [&str; 6] = [
    "warren-plugin-skeleton",
    "warren-ldap-auth",
    "warren-resp",
    "warren-test-panicky",
    "warren-test-wrong-abi",
    "warren-test-not-a-plugin",
];

pub fn build_plugins() {
    static BUILT: Once = Once::new();
    BUILT.call_once(|| {
        let cargo = std::env::var("CARGO").unwrap_or_else(|_| "cargo".into());
        let mut command = Command::new(cargo);
        command.arg("build").arg("--quiet");
        for name in PLUGIN_CRATES {
            command.args(["-p", name]);
        }
        let status = command.status().expect("run cargo build for the plugin crates");
        assert!(status.success(), "building the plugin crates failed: {status}");
    });
}

pub async fn amqp_login(broker: &Broker, vhost: &str, user: &str, password: &str) -> lapin::Result<Connection> {
    let vhost = vhost.replace('/', "%2f");
    let uri = format!("amqp://{user}:{password}@{}/{vhost}", broker.amqp_addr);
    Connection::connect(&uri, ConnectionProperties::default()).await
}

/// An MQTT 3.1.1 CONNECT with a username (`vhost:user` picks a vhost) and password; returns
/// CONNACK's return code.
pub fn mqtt_login(addr: SocketAddr, user: &str, password: &str) -> u8 {
    let mut variable = vec![0, 4, b'M', b'Q', b'T', b'T', 4, 0b1100_0010, 0, 60];
    for field in ["plugin-test", user, password] {
        variable.extend_from_slice(&(field.len() as u16).to_be_bytes());
        variable.extend_from_slice(field.as_bytes());
    }
    let mut packet = vec![0x10, variable.len() as u8];
    packet.extend_from_slice(&variable);
    let mut stream = TcpStream::connect(addr).expect("connect to MQTT");
    stream.set_read_timeout(Some(Duration::from_secs(20))).expect("timeout");
    stream.write_all(&packet).expect("send CONNECT");
    let mut connack = [0u8; 4];
    stream.read_exact(&mut connack).expect("read CONNACK");
    assert_eq!(connack[0], 0x20, "a CONNACK");
    connack[3]
}

/// A STOMP 1.2 CONNECT to a vhost (the `host` header); returns the reply frame's command.
pub fn stomp_login(addr: SocketAddr, vhost: &str, user: &str, password: &str) -> String {
    let mut stream = TcpStream::connect(addr).expect("connect to STOMP");
    stream.set_read_timeout(Some(Duration::from_secs(20))).expect("timeout");
    let frame = format!("CONNECT\naccept-version:1.2\nhost:{vhost}\nlogin:{user}\npasscode:{password}\n\n\0");
    stream.write_all(frame.as_bytes()).expect("send CONNECT");
    let mut reply = Vec::new();
    let mut byte = [0u8; 1];
    while stream.read(&mut byte).map(|read| read == 1).unwrap_or(false) && byte[0] != b'\n' {
        reply.push(byte[0]);
    }
    String::from_utf8_lossy(&reply).into_owned()
}

/// Basic-auth GET of /api/overview; returns the HTTP status.
pub fn management_status(addr: SocketAddr, user: &str, password: &str) -> u16 {
    use base64::Engine;
    let credentials = base64::engine::general_purpose::STANDARD.encode(format!("{user}:{password}"));
    let mut stream = TcpStream::connect(addr).expect("connect to HTTP");
    stream.set_read_timeout(Some(Duration::from_secs(20))).expect("timeout");
    let request = format!(
        "GET /api/overview HTTP/1.1\r\nHost: localhost\r\nAuthorization: Basic {credentials}\r\nConnection: close\r\n\r\n"
    );
    stream.write_all(request.as_bytes()).expect("send the request");
    let mut response = String::new();
    stream.read_to_string(&mut response).expect("read the response");
    response.split(' ').nth(1).and_then(|code| code.parse().ok()).expect("a status line")
}

/// The port the resp plugin logged (`listening protocol=resp addr=...`), waited for.
pub fn resp_port(broker: &Broker) -> u16 {
    let deadline = std::time::Instant::now() + Duration::from_secs(10);
    loop {
        let log = broker.log_tail();
        if let Some(rest) = log.split("listening protocol=resp addr=").nth(1) {
            let address: String = rest.chars().take_while(|c| !c.is_whitespace()).collect();
            let address: SocketAddr = address.parse().expect("the RESP listening address");
            return address.port();
        }
        assert!(std::time::Instant::now() < deadline, "the resp plugin did not log its address:\n{log}");
        std::thread::sleep(Duration::from_millis(20));
    }
}
