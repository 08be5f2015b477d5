//! Shared harness for Warren's integration tests: a broker process per test, a lapin
//! connection helper, deadline-bounded waits and a tiny raw AMQP frame codec for tests that
//! must misbehave on the wire (the heartbeat test goes silent on purpose).
//!
//! # Layout
//! - `Broker`: spawns `warren` on `127.0.0.1:0`, learns the AMQP, MQTT and STOMP ports from its
//!   log, kills it on drop.
//! - lapin helpers: `connect`, `within`, `next_delivery`, `assert_no_delivery`, `poll_until`,
//!   publishing with confirms and reading reply codes out of `lapin::Error`.
//! - `raw`: hand-written AMQP 0-9-1 frames and the connection handshake.

// Each integration-test crate compiles this module and uses only part of it.
#![allow(dead_code)]

pub mod logins;

use std::collections::VecDeque;
use std::future::Future;
use std::io::{BufRead, BufReader};
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{mpsc, Arc, Mutex};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use futures_lite::stream::StreamExt;
use lapin::message::{BasicGetMessage, Delivery};
use lapin::options::{
    BasicAckOptions, BasicConsumeOptions, BasicGetOptions, BasicPublishOptions, ConfirmSelectOptions,
    ExchangeDeclareOptions, QueueBindOptions, QueueDeclareOptions,
};
use lapin::publisher_confirm::Confirmation;
use lapin::types::{AMQPValue, FieldTable};
use lapin::{BasicProperties, Channel, Connection, ConnectionProperties, Consumer, ExchangeKind};

/// How long the broker may take to log its listening address. Generous because tests run in
/// parallel on small CI machines, where process start-up competes with compilation.
pub const STARTUP_TIMEOUT: Duration = Duration::from_secs(20);
/// Upper bound for any single client round trip (an RPC, a confirm, a delivery).
pub const RPC_TIMEOUT: Duration = Duration::from_secs(10);
/// How long we watch for a delivery that must *not* happen. Long enough that a broker which
/// would deliver it has had many scheduling rounds to do so, short enough to keep tests fast.
pub const QUIET_PERIOD: Duration = Duration::from_millis(500);
/// Interval between polls in `poll_until`; polling is bounded by the caller's deadline.
pub const POLL_INTERVAL: Duration = Duration::from_millis(20);
/// Number of broker log lines kept for failure messages.
const LOG_TAIL_LINES: usize = 200;
/// The line the broker prints once its AMQP listener is bound.
const AMQP_LISTENING_MARKER: &str = "listening protocol=amqp addr=";
/// The line the broker prints once its MQTT listener is bound.
const MQTT_LISTENING_MARKER: &str = "listening protocol=mqtt addr=";
/// The line the broker prints once its STOMP listener is bound.
const STOMP_LISTENING_MARKER: &str = "listening protocol=stomp addr=";
/// The line the broker prints once its HTTP listener is bound.
const HTTP_LISTENING_MARKER: &str = "listening protocol=http addr=";

/// A `warren` process owned by one test.
pub struct Broker {
    pub child: Child,
    pub amqp_addr: SocketAddr,
    pub mqtt_addr: SocketAddr,
    pub stomp_addr: SocketAddr,
    pub http_addr: SocketAddr,
    pub data_dir: PathBuf,
    /// The last `LOG_TAIL_LINES` lines of the broker's stderr, shared with the reader thread.
    log_tail: Arc<Mutex<VecDeque<String>>>,
}

impl Broker {
    /// Starts a broker on ephemeral ports with a fresh data directory and waits until it logs
    /// its AMQP, MQTT and STOMP listening addresses.
    pub fn start() -> Broker {
        let data_dir = unique_data_dir();
        std::fs::create_dir_all(&data_dir).expect("create the broker data dir");
        Broker::spawn(data_dir, None)
    }

    /// Like `start`, with `toml` as the broker's config file (written into its data dir and
    /// passed with `--config`). The flags `start` passes still override the file.
    pub fn start_with_config(toml: &str) -> Broker {
        let data_dir = unique_data_dir();
        std::fs::create_dir_all(&data_dir).expect("create the broker data dir");
        let config_path = data_dir.join("warren.toml");
        std::fs::write(&config_path, toml).expect("write the broker config file");
        Broker::spawn(data_dir, Some(&config_path))
    }

    fn spawn(data_dir: PathBuf, config_path: Option<&Path>) -> Broker {
        let mut command = Command::new(env!("CARGO_BIN_EXE_warren"));
        command
            .args([
                "--amqp-port",
                "0",
                "--mqtt-port",
                "0",
                "--stomp-port",
                "0",
                "--http-port",
                "0",
                "--bind",
                "127.0.0.1",
                "--log-level",
                "info",
            ])
            .arg("--data-dir")
            .arg(&data_dir);
        if let Some(config_path) = config_path {
            command.arg("--config").arg(config_path);
        }
        let mut child = command
            // A developer's RUST_LOG must not hide the "listening" line we parse.
            .env_remove("RUST_LOG")
            .env("NO_COLOR", "1")
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .expect("spawn the warren binary");
        let stderr = child.stderr.take().expect("stderr is piped");
        let log_tail = Arc::new(Mutex::new(VecDeque::with_capacity(LOG_TAIL_LINES)));
        let (addr_sender, addr_receiver) = mpsc::sync_channel(1);
        let thread_tail = Arc::clone(&log_tail);
        std::thread::spawn(move || read_log(stderr, thread_tail, addr_sender));
        match addr_receiver.recv_timeout(STARTUP_TIMEOUT) {
            Ok(ListeningAddrs { amqp: amqp_addr, mqtt: mqtt_addr, stomp: stomp_addr, http: http_addr }) => {
                Broker { child, amqp_addr, mqtt_addr, stomp_addr, http_addr, data_dir, log_tail }
            }
            Err(_) => {
                let _ = child.kill();
                let _ = child.wait();
                let _ = std::fs::remove_dir_all(&data_dir);
                let tail = join_tail(&log_tail);
                panic!(
                    "broker did not log `{AMQP_LISTENING_MARKER}`, `{MQTT_LISTENING_MARKER}` and \
                     `{STOMP_LISTENING_MARKER}` within {STARTUP_TIMEOUT:?}; log:\n{tail}"
                );
            }
        }
    }

    pub fn amqp_uri(&self) -> String {
        format!("amqp://guest:guest@{}/%2f", self.amqp_addr)
    }

    pub fn mqtt_port(&self) -> u16 {
        self.mqtt_addr.port()
    }

    pub fn log_tail(&self) -> String {
        join_tail(&self.log_tail)
    }

    /// Sends SIGTERM through the `kill` utility, which keeps the tests free of `libc`.
    pub fn terminate(&self) {
        let status =
            Command::new("kill").arg("-TERM").arg(self.child.id().to_string()).status().expect("run kill -TERM");
        assert!(status.success(), "kill -TERM {} failed: {status}", self.child.id());
    }

    /// Stops the broker with SIGTERM and starts it again on the same data directory (new ports).
    pub fn restart(self) -> Broker {
        let mut old = self;
        old.terminate();
        assert!(old.wait_exit(Duration::from_secs(15)).is_some(), "the broker did not stop on SIGTERM");
        let data_dir = std::mem::take(&mut old.data_dir);
        // The old handle must not delete the data directory the new broker reuses.
        drop(old);
        let config_path = data_dir.join("warren.toml");
        let config = config_path.exists().then_some(config_path);
        Broker::spawn(data_dir, config.as_deref())
    }

    /// Kills the broker with SIGKILL, so nothing is flushed or closed, and starts it again on
    /// the same data directory (new ports).
    pub fn crash_and_restart(self) -> Broker {
        let data_dir = self.crash();
        Broker::start_in(data_dir)
    }

    /// Kills the broker with SIGKILL and returns its data directory, which is kept.
    pub fn crash(self) -> PathBuf {
        let mut old = self;
        old.child.kill().expect("SIGKILL the broker");
        old.child.wait().expect("reap the broker");
        let data_dir = std::mem::take(&mut old.data_dir);
        drop(old);
        data_dir
    }

    /// Starts a broker on an existing data directory (with its config file, if it has one).
    pub fn start_in(data_dir: PathBuf) -> Broker {
        let config_path = data_dir.join("warren.toml");
        let config = config_path.exists().then_some(config_path);
        Broker::spawn(data_dir, config.as_deref())
    }

    /// Polls the process until it exits or `timeout` passes.
    pub fn wait_exit(&mut self, timeout: Duration) -> Option<ExitStatus> {
        let deadline = Instant::now() + timeout;
        loop {
            if let Some(status) = self.child.try_wait().expect("try_wait on the broker") {
                return Some(status);
            }
            if Instant::now() >= deadline {
                return None;
            }
            std::thread::sleep(POLL_INTERVAL);
        }
    }
}

impl Drop for Broker {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
        if !self.data_dir.as_os_str().is_empty() {
            let _ = std::fs::remove_dir_all(&self.data_dir);
        }
        if std::thread::panicking() {
            eprintln!("---- warren log tail ----\n{}", self.log_tail());
        }
    }
}

fn unique_data_dir() -> PathBuf {
    static NEXT: AtomicU64 = AtomicU64::new(0);
    let nanos = SystemTime::now().duration_since(UNIX_EPOCH).map(|elapsed| elapsed.as_nanos()).unwrap_or(0);
    let sequence = NEXT.fetch_add(1, Ordering::Relaxed);
    std::env::temp_dir().join(format!("warren-test-{}-{sequence}-{nanos}", std::process::id()))
}

/// The addresses the broker's listeners are bound to, as it logs them.
struct ListeningAddrs {
    amqp: SocketAddr,
    mqtt: SocketAddr,
    stomp: SocketAddr,
    http: SocketAddr,
}

/// Drains the broker's stderr until EOF so the pipe never fills and blocks the broker. Sends
/// the listening addresses once all four have been logged.
fn read_log(
    stderr: std::process::ChildStderr,
    tail: Arc<Mutex<VecDeque<String>>>,
    addr_sender: mpsc::SyncSender<ListeningAddrs>,
) {
    let mut reader = BufReader::new(stderr);
    let mut amqp = None;
    let mut mqtt = None;
    let mut stomp = None;
    let mut http = None;
    let mut found = false;
    let mut raw_line = Vec::new();
    loop {
        raw_line.clear();
        match reader.read_until(b'\n', &mut raw_line) {
            Ok(0) | Err(_) => return,
            Ok(_) => {}
        }
        let line = strip_ansi(&String::from_utf8_lossy(&raw_line));
        let line = line.trim_end().to_string();
        if !found {
            amqp = amqp.or_else(|| parse_listening_addr(&line, AMQP_LISTENING_MARKER));
            mqtt = mqtt.or_else(|| parse_listening_addr(&line, MQTT_LISTENING_MARKER));
            stomp = stomp.or_else(|| parse_listening_addr(&line, STOMP_LISTENING_MARKER));
            http = http.or_else(|| parse_listening_addr(&line, HTTP_LISTENING_MARKER));
            if let (Some(amqp), Some(mqtt), Some(stomp), Some(http)) = (amqp, mqtt, stomp, http) {
                found = true;
                let _ = addr_sender.try_send(ListeningAddrs { amqp, mqtt, stomp, http });
            }
        }
        let mut lines = tail.lock().expect("log tail lock");
        if lines.len() == LOG_TAIL_LINES {
            lines.pop_front();
        }
        lines.push_back(line);
    }
}

fn parse_listening_addr(line: &str, marker: &str) -> Option<SocketAddr> {
    let start = line.find(marker)? + marker.len();
    let rest = &line[start..];
    let token = rest.split_whitespace().next()?;
    token.trim_matches('"').parse().ok()
}

/// Removes CSI escape sequences, in case a logger colours its output despite `NO_COLOR`.
fn strip_ansi(line: &str) -> String {
    let mut out = String::with_capacity(line.len());
    let mut chars = line.chars();
    while let Some(c) = chars.next() {
        if c == '\u{1b}' {
            for terminator in chars.by_ref() {
                if terminator.is_ascii_alphabetic() {
                    break;
                }
            }
        } else {
            out.push(c);
        }
    }
    out
}

fn join_tail(tail: &Mutex<VecDeque<String>>) -> String {
    let tail = tail.lock().unwrap_or_else(|poisoned| poisoned.into_inner());
    tail.iter().cloned().collect::<Vec<_>>().join("\n")
}

/// Opens a lapin connection. lapin drives its own I/O thread and executor, so its futures can
/// be awaited from a `#[tokio::test]`.
pub async fn connect(broker: &Broker) -> Connection {
    within("AMQP connection", Connection::connect(&broker.amqp_uri(), ConnectionProperties::default()))
        .await
        .expect("connect to warren")
}

/// Awaits `future` for at most `RPC_TIMEOUT`, naming `what` if it times out.
pub async fn within<F: Future>(what: &str, future: F) -> F::Output {
    match tokio::time::timeout(RPC_TIMEOUT, future).await {
        Ok(output) => output,
        Err(_) => panic!("timed out after {RPC_TIMEOUT:?} waiting for {what}"),
    }
}

/// Polls `condition` until it is true, panicking after `timeout`.
pub async fn poll_until<F, Fut>(what: &str, timeout: Duration, mut condition: F)
where
    F: FnMut() -> Fut,
    Fut: Future<Output = bool>,
{
    let deadline = tokio::time::Instant::now() + timeout;
    loop {
        if condition().await {
            return;
        }
        if tokio::time::Instant::now() >= deadline {
            panic!("condition not met within {timeout:?}: {what}");
        }
        tokio::time::sleep(POLL_INTERVAL).await;
    }
}

/// The next delivery on `consumer`, which must arrive within `RPC_TIMEOUT`.
pub async fn next_delivery(consumer: &mut Consumer) -> Delivery {
    within("a delivery", consumer.next()).await.expect("consumer stream ended").expect("consumer reported an error")
}

/// Asserts that nothing is delivered to `consumer` during `quiet`.
pub async fn assert_no_delivery(consumer: &mut Consumer, quiet: Duration) {
    if let Ok(item) = tokio::time::timeout(quiet, consumer.next()).await {
        panic!("expected no delivery for {quiet:?}, got {item:?}");
    }
}

/// The AMQP reply code carried by a channel or connection error, if it is one.
pub fn reply_code(error: &lapin::Error) -> Option<u16> {
    match error {
        lapin::Error::ProtocolError(amqp_error) => Some(amqp_error.get_id()),
        _ => None,
    }
}

/// Asserts that `result` failed with an AMQP error carrying `expected` and returns its text.
pub fn assert_reply_code<T: std::fmt::Debug>(result: lapin::Result<T>, expected: u16) -> String {
    match result {
        Ok(value) => panic!("expected AMQP error {expected}, got Ok({value:?})"),
        Err(lapin::Error::ProtocolError(amqp_error)) => {
            assert_eq!(amqp_error.get_id(), expected, "unexpected error: {amqp_error}");
            amqp_error.get_message().to_string()
        }
        Err(other) => panic!("expected AMQP error {expected}, got {other:?}"),
    }
}

pub async fn open_channel(connection: &Connection) -> Channel {
    within("channel.open", connection.create_channel()).await.expect("open a channel")
}

/// A channel in publisher-confirm mode.
pub async fn confirm_channel(connection: &Connection) -> Channel {
    let channel = open_channel(connection).await;
    within("confirm.select", channel.confirm_select(ConfirmSelectOptions::default())).await.expect("confirm.select");
    channel
}

pub async fn declare_queue(channel: &Channel, name: &str) -> lapin::Queue {
    within("queue.declare", channel.queue_declare(name, QueueDeclareOptions::default(), FieldTable::default()))
        .await
        .unwrap_or_else(|error| panic!("declare queue {name:?}: {error}"))
}

/// The number of ready messages in `queue`, read with a passive declare.
pub async fn message_count(channel: &Channel, queue: &str) -> u32 {
    try_declare(channel, queue, passive())
        .await
        .unwrap_or_else(|error| panic!("passive declare of {queue:?}: {error}"))
        .message_count()
}

/// Publishes on a confirm-mode channel and asserts the broker acked without returning it.
/// Once the ack arrives the message is in every queue it was routed to.
pub async fn publish_confirmed(
    channel: &Channel,
    exchange: &str,
    routing_key: &str,
    body: &[u8],
    properties: BasicProperties,
) {
    let confirm = within(
        "basic.publish",
        channel.basic_publish(exchange, routing_key, BasicPublishOptions::default(), body, properties),
    )
    .await
    .expect("basic.publish");
    let confirmation = within("publisher confirm", confirm).await.expect("publisher confirm");
    assert_eq!(confirmation, Confirmation::Ack(None), "publish to exchange {exchange:?} with key {routing_key:?}");
}

/// One `basic.get` with automatic acknowledgement.
pub async fn get_no_ack(channel: &Channel, queue: &str) -> Option<BasicGetMessage> {
    within("basic.get", channel.basic_get(queue, BasicGetOptions { no_ack: true }))
        .await
        .unwrap_or_else(|error| panic!("basic.get on {queue:?}: {error}"))
}

/// Empties `queue` with `basic.get` and returns the bodies as strings, sorted.
pub async fn drain_bodies(channel: &Channel, queue: &str) -> Vec<String> {
    let mut bodies = Vec::new();
    while let Some(message) = get_no_ack(channel, queue).await {
        bodies.push(String::from_utf8_lossy(&message.delivery.data).into_owned());
    }
    bodies.sort();
    bodies
}

/// `publish_confirmed` with default properties.
pub async fn publish_plain(channel: &Channel, exchange: &str, routing_key: &str, body: &str) {
    let properties = BasicProperties::default();
    publish_confirmed(channel, exchange, routing_key, body.as_bytes(), properties).await;
}

pub fn no_ack() -> BasicConsumeOptions {
    BasicConsumeOptions { no_ack: true, ..BasicConsumeOptions::default() }
}

pub fn passive() -> QueueDeclareOptions {
    QueueDeclareOptions { passive: true, ..QueueDeclareOptions::default() }
}

pub fn exclusive() -> QueueDeclareOptions {
    QueueDeclareOptions { exclusive: true, ..QueueDeclareOptions::default() }
}

/// A `queue.declare` whose failure the test inspects.
pub async fn try_declare(channel: &Channel, name: &str, options: QueueDeclareOptions) -> lapin::Result<lapin::Queue> {
    within("queue.declare", channel.queue_declare(name, options, FieldTable::default())).await
}

pub async fn consume(channel: &Channel, queue: &str, tag: &str, options: BasicConsumeOptions) -> Consumer {
    within("basic.consume", channel.basic_consume(queue, tag, options, FieldTable::default()))
        .await
        .unwrap_or_else(|error| panic!("consume from {queue:?}: {error}"))
}

pub async fn ack(delivery: &Delivery) {
    within("basic.ack", delivery.ack(BasicAckOptions::default())).await.expect("basic.ack");
}

pub async fn declare_exchange(channel: &Channel, name: &str, kind: ExchangeKind) {
    let options = ExchangeDeclareOptions::default();
    within("exchange.declare", channel.exchange_declare(name, kind, options, FieldTable::default()))
        .await
        .unwrap_or_else(|error| panic!("declare exchange {name:?}: {error}"));
}

pub async fn bind(channel: &Channel, queue: &str, exchange: &str, key: &str) {
    bind_with(channel, queue, exchange, key, FieldTable::default()).await;
}

pub async fn bind_with(channel: &Channel, queue: &str, exchange: &str, key: &str, arguments: FieldTable) {
    within("queue.bind", channel.queue_bind(queue, exchange, key, QueueBindOptions::default(), arguments))
        .await
        .unwrap_or_else(|error| panic!("bind {queue:?} to {exchange:?} with {key:?}: {error}"));
}

/// Empties `queue` and asserts it held exactly `expected` (in any order).
pub async fn assert_bodies(channel: &Channel, queue: &str, expected: &[&str]) {
    let bodies = drain_bodies(channel, queue).await;
    assert_eq!(bodies, sorted(expected), "bodies in queue {queue:?}");
}

/// A table of long-string values, as used for headers-exchange bindings and messages.
pub fn string_table(entries: &[(&str, &str)]) -> FieldTable {
    let mut table = FieldTable::default();
    for (key, value) in entries {
        table.insert((*key).into(), AMQPValue::LongString((*value).into()));
    }
    table
}

pub fn sorted(values: &[&str]) -> Vec<String> {
    let mut values: Vec<String> = values.iter().map(|value| value.to_string()).collect();
    values.sort();
    values
}

/// Hand-written AMQP 0-9-1 frames (spec section 4.2.3), for tests that need to control
/// exactly what goes on the wire.
pub mod raw {
    use std::io::{self, Read, Write};
    use std::net::{SocketAddr, TcpStream};
    use std::time::Duration;

    pub const PROTOCOL_HEADER: &[u8; 8] = b"AMQP\x00\x00\x09\x01";
    pub const FRAME_METHOD: u8 = 1;
    pub const FRAME_HEADER: u8 = 2;
    pub const FRAME_BODY: u8 = 3;
    pub const FRAME_HEARTBEAT: u8 = 8;
    pub const FRAME_END: u8 = 0xCE;
    /// The handshake itself must never stall a test for long.
    const HANDSHAKE_READ_TIMEOUT: Duration = Duration::from_secs(10);

    /// AMQP 0-9-1 connection class (10) method ids.
    pub const CONNECTION_CLASS: u16 = 10;
    pub const CONNECTION_START: u16 = 10;
    pub const CONNECTION_START_OK: u16 = 11;
    pub const CONNECTION_TUNE: u16 = 30;
    pub const CONNECTION_TUNE_OK: u16 = 31;
    pub const CONNECTION_OPEN: u16 = 40;
    pub const CONNECTION_OPEN_OK: u16 = 41;
    pub const CONNECTION_CLOSE: u16 = 50;
    pub const CONNECTION_BLOCKED: u16 = 60;
    pub const CONNECTION_UNBLOCKED: u16 = 61;
    /// Channel class (20) and basic class (60) method ids.
    pub const CHANNEL_CLASS: u16 = 20;
    pub const CHANNEL_OPEN: u16 = 10;
    pub const CHANNEL_OPEN_OK: u16 = 11;
    pub const CHANNEL_CLOSE: u16 = 40;
    pub const BASIC_CLASS: u16 = 60;
    pub const BASIC_PUBLISH: u16 = 40;
    /// The smallest frame-max a peer may negotiate; body frames this size always fit.
    const FRAME_MIN_BYTES: usize = 4096;
    /// Frame header (7 bytes) plus the frame-end octet.
    const FRAME_OVERHEAD_BYTES: usize = 8;

    #[derive(Debug)]
    pub struct Frame {
        pub frame_type: u8,
        pub channel: u16,
        pub payload: Vec<u8>,
    }

    impl Frame {
        /// `(class_id, method_id)` of a method frame.
        pub fn method(&self) -> Option<(u16, u16)> {
            if self.frame_type != FRAME_METHOD || self.payload.len() < 4 {
                return None;
            }
            let class_id = u16::from_be_bytes([self.payload[0], self.payload[1]]);
            let method_id = u16::from_be_bytes([self.payload[2], self.payload[3]]);
            Some((class_id, method_id))
        }
    }

    pub fn write_frame(stream: &mut impl Write, frame_type: u8, channel: u16, payload: &[u8]) -> io::Result<()> {
        let size = u32::try_from(payload.len()).expect("test frames are small");
        let mut frame = Vec::with_capacity(payload.len() + 8);
        frame.push(frame_type);
        frame.extend_from_slice(&channel.to_be_bytes());
        frame.extend_from_slice(&size.to_be_bytes());
        frame.extend_from_slice(payload);
        frame.push(FRAME_END);
        stream.write_all(&frame)
    }

    pub fn write_method(
        stream: &mut impl Write,
        channel: u16,
        class_id: u16,
        method_id: u16,
        arguments: &[u8],
    ) -> io::Result<()> {
        let mut payload = Vec::with_capacity(arguments.len() + 4);
        payload.extend_from_slice(&class_id.to_be_bytes());
        payload.extend_from_slice(&method_id.to_be_bytes());
        payload.extend_from_slice(arguments);
        write_frame(stream, FRAME_METHOD, channel, &payload)
    }

    /// Reads one frame; `Ok(None)` when the peer closed the socket between frames.
    pub fn read_frame(stream: &mut impl Read) -> io::Result<Option<Frame>> {
        let mut header = [0u8; 7];
        let mut filled = 0;
        while filled < header.len() {
            match stream.read(&mut header[filled..])? {
                0 if filled == 0 => return Ok(None),
                0 => return Err(io::ErrorKind::UnexpectedEof.into()),
                read => filled += read,
            }
        }
        let frame_type = header[0];
        let channel = u16::from_be_bytes([header[1], header[2]]);
        let size = u32::from_be_bytes([header[3], header[4], header[5], header[6]]) as usize;
        let mut payload = vec![0u8; size + 1];
        stream.read_exact(&mut payload)?;
        let end = payload.pop().expect("payload has the frame-end octet");
        if end != FRAME_END {
            return Err(io::Error::new(io::ErrorKind::InvalidData, format!("frame end octet was {end:#04x}")));
        }
        Ok(Some(Frame { frame_type, channel, payload }))
    }

    pub fn short_string(out: &mut Vec<u8>, value: &str) {
        let length = u8::try_from(value.len()).expect("short strings are under 256 bytes");
        out.push(length);
        out.extend_from_slice(value.as_bytes());
    }

    pub fn long_string(out: &mut Vec<u8>, value: &[u8]) {
        let length = u32::try_from(value.len()).expect("test strings are small");
        out.extend_from_slice(&length.to_be_bytes());
        out.extend_from_slice(value);
    }

    /// Reads frames until a method frame arrives, skipping heartbeats, and asserts its id.
    pub fn expect_method(stream: &mut TcpStream, class_id: u16, method_id: u16) -> Frame {
        loop {
            let frame = read_frame(stream)
                .expect("read a frame during the handshake")
                .unwrap_or_else(|| panic!("socket closed while waiting for {class_id}.{method_id}"));
            if frame.frame_type == FRAME_HEARTBEAT {
                continue;
            }
            assert_eq!(frame.method(), Some((class_id, method_id)), "unexpected frame {frame:?}");
            return frame;
        }
    }

    /// A client-properties field table `{"capabilities": {name: true, ...}}`, encoded with its
    /// length prefix, for `open_connection_with`.
    pub fn client_capabilities(names: &[&str]) -> Vec<u8> {
        let mut capabilities = Vec::new();
        for name in names {
            short_string(&mut capabilities, name);
            capabilities.push(b't');
            capabilities.push(1);
        }
        let mut entries = Vec::new();
        short_string(&mut entries, "capabilities");
        entries.push(b'F');
        long_string(&mut entries, &capabilities);
        let mut table = Vec::new();
        long_string(&mut table, &entries);
        table
    }

    /// Performs the AMQP handshake as guest/guest on vhost "/" and answers connection.tune
    /// with `heartbeat_seconds`. Returns the socket right after connection.open-ok.
    pub fn open_connection(addr: SocketAddr, heartbeat_seconds: u16) -> TcpStream {
        // client-properties: an empty table.
        open_connection_with(addr, heartbeat_seconds, &0u32.to_be_bytes())
    }

    /// `open_connection` sending `client_properties` (an encoded field table, length prefix
    /// included) in connection.start-ok.
    pub fn open_connection_with(addr: SocketAddr, heartbeat_seconds: u16, client_properties: &[u8]) -> TcpStream {
        let mut stream = TcpStream::connect(addr).expect("connect to warren");
        stream.set_read_timeout(Some(HANDSHAKE_READ_TIMEOUT)).expect("set read timeout");
        stream.write_all(PROTOCOL_HEADER).expect("send protocol header");

        let start = expect_method(&mut stream, CONNECTION_CLASS, CONNECTION_START);
        assert_eq!(&start.payload[4..6], &[0, 9], "connection.start version-major/minor");

        let mut start_ok = Vec::new();
        start_ok.extend_from_slice(client_properties);
        short_string(&mut start_ok, "PLAIN");
        long_string(&mut start_ok, b"\0guest\0guest");
        short_string(&mut start_ok, "en_US");
        write_method(&mut stream, 0, CONNECTION_CLASS, CONNECTION_START_OK, &start_ok)
            .expect("send connection.start-ok");

        let tune = expect_method(&mut stream, CONNECTION_CLASS, CONNECTION_TUNE);
        // connection.tune arguments: channel-max (u16), frame-max (u32), heartbeat (u16).
        let channel_max = &tune.payload[4..6];
        let frame_max = &tune.payload[6..10];
        let mut tune_ok = Vec::new();
        tune_ok.extend_from_slice(channel_max);
        tune_ok.extend_from_slice(frame_max);
        tune_ok.extend_from_slice(&heartbeat_seconds.to_be_bytes());
        write_method(&mut stream, 0, CONNECTION_CLASS, CONNECTION_TUNE_OK, &tune_ok).expect("send connection.tune-ok");

        let mut open = Vec::new();
        short_string(&mut open, "/"); // virtual-host
        short_string(&mut open, ""); // reserved-1 (capabilities)
        open.push(0); // reserved-2 (insist)
        write_method(&mut stream, 0, CONNECTION_CLASS, CONNECTION_OPEN, &open).expect("send connection.open");
        expect_method(&mut stream, CONNECTION_CLASS, CONNECTION_OPEN_OK);
        stream
    }

    /// Opens `channel` and waits for channel.open-ok.
    pub fn open_channel(stream: &mut TcpStream, channel: u16) {
        let mut open = Vec::new();
        short_string(&mut open, ""); // reserved-1 (out-of-band)
        write_method(stream, channel, CHANNEL_CLASS, CHANNEL_OPEN, &open).expect("send channel.open");
        expect_method(stream, CHANNEL_CLASS, CHANNEL_OPEN_OK);
    }

    /// basic.publish with no properties: the method frame, a content header and the body in
    /// frames small enough for any negotiated frame-max.
    pub fn publish(
        stream: &mut impl Write,
        channel: u16,
        exchange: &str,
        routing_key: &str,
        body: &[u8],
    ) -> io::Result<()> {
        let mut publish = Vec::new();
        publish.extend_from_slice(&0u16.to_be_bytes()); // reserved-1
        short_string(&mut publish, exchange);
        short_string(&mut publish, routing_key);
        publish.push(0); // mandatory, immediate
        write_method(stream, channel, BASIC_CLASS, BASIC_PUBLISH, &publish)?;

        let mut header = Vec::with_capacity(14);
        header.extend_from_slice(&BASIC_CLASS.to_be_bytes());
        header.extend_from_slice(&0u16.to_be_bytes()); // weight
        header.extend_from_slice(&(body.len() as u64).to_be_bytes());
        header.extend_from_slice(&0u16.to_be_bytes()); // property flags: none
        write_frame(stream, FRAME_HEADER, channel, &header)?;

        for chunk in body.chunks(FRAME_MIN_BYTES - FRAME_OVERHEAD_BYTES) {
            write_frame(stream, FRAME_BODY, channel, chunk)?;
        }
        Ok(())
    }
}
