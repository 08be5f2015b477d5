//! The STOMP side of warren-bench: a producer SENDs to `/queue/<name>` and a consumer
//! SUBSCRIBEs to it (`ack:auto`, or `client-individual` with `prefetch-count` for manual acks),
//! each on its own connection and thread, with blocking sockets and batched writes, using
//! Warren's sans-IO STOMP codec. Works against any STOMP 1.2 broker.

use std::io::{Read, Write};
use std::net::TcpStream;
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::{Bytes, BytesMut};
use warren_stomp::codec::{self, Escaping, Frame, Limits};

use crate::{Options, Running, Shared};

/// Frames per write.
const SEND_BATCH: u64 = 256;

struct Connection {
    socket: TcpStream,
    buffer: BytesMut,
    searched: usize,
    limits: Limits,
}

impl Connection {
    fn open(addr: &str) -> Connection {
        let socket = TcpStream::connect(addr).unwrap_or_else(|error| panic!("connect {addr}: {error}"));
        socket.set_nodelay(true).expect("set nodelay");
        let limits = Limits { body_bytes_max: 1 << 24, ..Limits::default() };
        let mut connection = Connection { socket, buffer: BytesMut::with_capacity(1 << 20), searched: 0, limits };
        let connect = Frame::new("CONNECT")
            .with("accept-version", "1.2")
            .with("host", "/")
            .with("login", "guest")
            .with("passcode", "guest")
            .with("heart-beat", "0,0");
        connection.send(&connect);
        match connection.next_frame() {
            Some(frame) if frame.command == "CONNECTED" => connection,
            other => panic!("CONNECT refused: {other:?}"),
        }
    }

    fn send(&mut self, frame: &Frame) {
        let mut out = BytesMut::new();
        codec::encode(frame, Escaping::None, &mut out);
        self.socket.write_all(&out).expect("write");
    }

    /// The next frame, or `None` on a read timeout.
    fn next_frame(&mut self) -> Option<Frame> {
        loop {
            match codec::decode_resuming(&mut self.buffer, &self.limits, Escaping::Stomp12, &mut self.searched) {
                Ok(Some(frame)) => return Some(frame),
                Ok(None) => {}
                Err(error) => panic!("malformed frame from the broker: {error}"),
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

pub fn start(options: &Options, shared: &Arc<Shared>) -> Running {
    let destination = format!("/queue/warren-bench-stomp-{}", std::process::id());
    let mut consumer = Connection::open(&options.addr);
    let manual = options.ack == "manual";
    let mut subscribe = Frame::new("SUBSCRIBE")
        .with("id", "0")
        .with("destination", destination.clone())
        .with("ack", if manual { "client-individual" } else { "auto" })
        .with("receipt", "subscribed");
    if manual {
        subscribe = subscribe.with("prefetch-count", options.prefetch.to_string());
    }
    consumer.send(&subscribe);
    while !matches!(consumer.next_frame(), Some(frame) if frame.command == "RECEIPT") {}
    let consumer_thread = {
        let shared = shared.clone();
        std::thread::spawn(move || consume_loop(consumer, &shared, manual))
    };
    let producer = {
        let (options, shared) = (options.clone(), shared.clone());
        std::thread::spawn(move || send_loop(&options, &shared, &destination))
    };
    Running { producer, consumers: vec![consumer_thread], cleanup: Box::new(|| {}) }
}

fn send_loop(options: &Options, shared: &Shared, destination: &str) {
    let mut connection = Connection::open(&options.addr);
    let mut body = vec![0u8; options.size];
    let mut out = BytesMut::with_capacity(1 << 20);
    let started = Instant::now();
    let mut sent: u64 = 0;
    while !shared.stop_publishing.load(Ordering::Acquire) {
        let allowed = crate::allowance(options, shared, sent, started, SEND_BATCH);
        if allowed == 0 {
            continue;
        }
        out.clear();
        for _ in 0..allowed {
            crate::stamp(shared, &mut body);
            let frame = Frame {
                command: "SEND".into(),
                headers: vec![("destination".into(), destination.into())],
                body: Bytes::copy_from_slice(&body),
            };
            codec::encode(&frame, Escaping::Stomp12, &mut out);
        }
        connection.socket.write_all(&out).expect("write");
        sent += allowed;
        shared.sent.store(sent, Ordering::Release);
    }
    connection.send(&Frame::new("DISCONNECT"));
}

fn consume_loop(mut connection: Connection, shared: &Shared, manual: bool) -> Vec<u64> {
    connection.socket.set_read_timeout(Some(Duration::from_millis(50))).expect("read timeout");
    let mut latencies = Vec::with_capacity(1 << 20);
    let mut acks = BytesMut::with_capacity(1 << 16);
    while !shared.stop_consuming.load(Ordering::Acquire) {
        let mut received = 0;
        while let Some(frame) = connection.next_frame() {
            if frame.command == "MESSAGE" {
                if latencies.len() < latencies.capacity() {
                    latencies.extend(crate::latency(shared, &frame.body));
                }
                received += 1;
                if manual {
                    let id = frame.header("ack").or(frame.header("message-id")).unwrap_or_default().to_owned();
                    codec::encode(&Frame::new("ACK").with("id", id), Escaping::Stomp12, &mut acks);
                }
            }
            // Only heart-beat EOLs left (RabbitMQ ends every frame with NUL and an EOL): send
            // the acks now rather than wait for more input that waits for them.
            if connection.buffer.iter().all(|byte| matches!(byte, b'\n' | b'\r')) {
                break;
            }
        }
        shared.received.fetch_add(received, Ordering::AcqRel);
        if !acks.is_empty() {
            connection.socket.write_all(&acks).expect("write acks");
            acks.clear();
        }
    }
    latencies
}
