//! The MQTT side of warren-bench: one publisher and `--subscribers` subscribers (fan-out), each
//! on its own connection and thread, with blocking sockets and batched writes, using the
//! mqttbytes codec. QoS 1 subscribers acknowledge every message; the publisher tracks PUBACKs
//! so that no more than 60,000 packet ids are ever in use.

use std::io::{Read, Write};
use std::net::TcpStream;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::{Bytes, BytesMut};
use mqttbytes::v4::{self, Connect, Packet, PubAck, Publish, Subscribe};
use mqttbytes::QoS;

use crate::{Options, Running, Shared};

const PACKET_MAX: usize = 1 << 20;
/// Publishes per write.
const PUBLISH_BATCH: u64 = 256;
/// Unacknowledged QoS 1 publishes allowed, below the 65,535 packet ids.
const UNACKED_MAX: u64 = 60_000;

struct Connection {
    socket: TcpStream,
    buffer: BytesMut,
}

impl Connection {
    fn open(addr: &str, client_id: &str) -> Connection {
        let socket = TcpStream::connect(addr).unwrap_or_else(|error| panic!("connect {addr}: {error}"));
        socket.set_nodelay(true).expect("set nodelay");
        let mut connection = Connection { socket, buffer: BytesMut::with_capacity(1 << 20) };
        let mut connect = Connect::new(client_id);
        connect.keep_alive = 0;
        connect.set_login("guest", "guest");
        connection.write(|out| connect.write(out).map(|_| ()));
        match connection.next_packet() {
            Some(Packet::ConnAck(ack)) if ack.code == v4::ConnectReturnCode::Success => connection,
            other => panic!("CONNECT refused: {other:?}"),
        }
    }

    fn write(&mut self, encode: impl FnOnce(&mut BytesMut) -> Result<(), mqttbytes::Error>) {
        let mut out = BytesMut::new();
        encode(&mut out).expect("bench packets encode");
        self.socket.write_all(&out).expect("write");
    }

    /// The next packet, or `None` on a read timeout.
    fn next_packet(&mut self) -> Option<Packet> {
        loop {
            match v4::read(&mut self.buffer, PACKET_MAX) {
                Ok(packet) => return Some(packet),
                Err(mqttbytes::Error::InsufficientBytes(_)) => {}
                Err(error) => panic!("malformed packet from the broker: {error:?}"),
            }
            let mut chunk = [0u8; 65_536];
            match self.socket.read(&mut chunk) {
                Ok(0) => panic!("broker closed the connection"),
                Ok(read) => self.buffer.extend_from_slice(&chunk[..read]),
                Err(error) if matches!(error.kind(), std::io::ErrorKind::WouldBlock | std::io::ErrorKind::TimedOut) => {
                    return None;
                }
                Err(error) => panic!("read: {error}"),
            }
        }
    }
}

fn qos(options: &Options) -> QoS {
    if options.qos == 0 {
        QoS::AtMostOnce
    } else {
        QoS::AtLeastOnce
    }
}

pub fn start(options: &Options, shared: &Arc<Shared>) -> Running {
    let topic = format!("bench/{}", std::process::id());
    let mut consumers = Vec::new();
    for index in 0..shared.subscribers {
        let mut connection = Connection::open(&options.addr, &format!("bench-sub-{}-{index}", std::process::id()));
        let mut subscribe = Subscribe::new(topic.clone(), qos(options));
        subscribe.pkid = 1;
        connection.write(|out| subscribe.write(out).map(|_| ()));
        while !matches!(connection.next_packet(), Some(Packet::SubAck(_))) {}
        let shared = shared.clone();
        consumers.push(std::thread::spawn(move || subscribe_loop(connection, &shared)));
    }
    let producer = {
        let (options, shared) = (options.clone(), shared.clone());
        std::thread::spawn(move || publish_loop(&options, &shared, &topic))
    };
    Running { producer, consumers, cleanup: Box::new(|| {}) }
}

fn publish_loop(options: &Options, shared: &Shared, topic: &str) {
    let mut connection = Connection::open(&options.addr, &format!("bench-pub-{}", std::process::id()));
    let acked = Arc::new(AtomicU64::new(0));
    let reader = connection.socket.try_clone().expect("clone socket");
    let acks = {
        let acked = acked.clone();
        std::thread::spawn(move || count_pubacks(reader, &acked))
    };
    let qos = qos(options);
    let mut body = vec![0u8; options.size];
    let mut out = BytesMut::with_capacity(1 << 20);
    let started = Instant::now();
    let mut sent: u64 = 0;
    let mut packet_id: u16 = 0;
    while !shared.stop_publishing.load(Ordering::Acquire) {
        let mut allowed = crate::allowance(options, shared, sent, started, PUBLISH_BATCH);
        if qos == QoS::AtLeastOnce {
            allowed = allowed.min(UNACKED_MAX.saturating_sub(sent - acked.load(Ordering::Acquire)));
        }
        if allowed == 0 {
            continue;
        }
        out.clear();
        for _ in 0..allowed {
            crate::stamp(shared, &mut body);
            let mut publish = Publish::from_bytes(topic, qos, Bytes::copy_from_slice(&body));
            if qos == QoS::AtLeastOnce {
                packet_id = packet_id.checked_add(1).unwrap_or(1);
                publish.pkid = packet_id;
            }
            publish.write(&mut out).expect("publish encodes");
        }
        connection.socket.write_all(&out).expect("write");
        sent += allowed;
        shared.sent.store(sent, Ordering::Release);
    }
    // Wait (bounded) for the last PUBACKs, then hang up.
    let deadline = Instant::now() + Duration::from_secs(10);
    while qos == QoS::AtLeastOnce && acked.load(Ordering::Acquire) < sent && Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(5));
    }
    let _ = connection.socket.shutdown(std::net::Shutdown::Both);
    let _ = acks.join();
}

fn count_pubacks(socket: TcpStream, acked: &AtomicU64) {
    let mut connection = Connection { socket, buffer: BytesMut::with_capacity(1 << 16) };
    let mut chunk = [0u8; 65_536];
    loop {
        while let Ok(packet) = v4::read(&mut connection.buffer, PACKET_MAX) {
            if let Packet::PubAck(_) = packet {
                acked.fetch_add(1, Ordering::AcqRel);
            }
        }
        match connection.socket.read(&mut chunk) {
            Ok(0) | Err(_) => return,
            Ok(read) => connection.buffer.extend_from_slice(&chunk[..read]),
        }
    }
}

fn subscribe_loop(mut connection: Connection, shared: &Shared) -> Vec<u64> {
    connection.socket.set_read_timeout(Some(Duration::from_millis(50))).expect("read timeout");
    let mut latencies = Vec::with_capacity(1 << 18);
    let mut acks = BytesMut::with_capacity(1 << 16);
    while !shared.stop_consuming.load(Ordering::Acquire) {
        let mut received = 0;
        while let Some(packet) = connection.next_packet() {
            if let Packet::Publish(publish) = packet {
                if latencies.len() < latencies.capacity() {
                    latencies.extend(crate::latency(shared, &publish.payload));
                }
                received += 1;
                if publish.qos == QoS::AtLeastOnce {
                    PubAck::new(publish.pkid).write(&mut acks).expect("puback encodes");
                }
            }
            if connection.buffer.is_empty() {
                break;
            }
        }
        shared.received.fetch_add(received, Ordering::AcqRel);
        if !acks.is_empty() {
            connection.socket.write_all(&acks).expect("write acks");
            acks.clear();
        }
    }
    let _ = connection.socket.shutdown(std::net::Shutdown::Both);
    latencies
}
