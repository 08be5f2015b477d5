//! The STOMP 1.0/1.1/1.2 adapter, checked with hand-written frames over TCP against a real
//! `warren` process, with lapin for the AMQP side of cross-protocol tests. Expectations are
//! STOMP 1.2's, and RabbitMQ's STOMP plugin's where the spec leaves a choice (destinations,
//! headers as message properties, a login required).
//!
//! The broker's bounds, as `protocols/stomp/src/codec.rs` and `session.rs` set them: a command or
//! header line is at most 8 KiB, a frame has at most 100 headers, a body at most 16 MiB; CONNECT
//! must come within 10 s; the broker offers heart-beats of 10000,10000 ms unless its config says
//! otherwise; a CONNECT without login is refused.
//!
//! Every read has a deadline. Ordering instead of sleeping: the broker handles a connection's
//! frames in order and routes a SEND before it answers the SEND's receipt, so once the RECEIPT
//! arrives the message is in its queues; a queue is FIFO, so when a marker sent after a message
//! arrives, the message has either arrived before it or was never routed. The only timed waits
//! are heart-beat pacing and the deadlines themselves.

mod common;

use std::collections::VecDeque;
use std::io;
use std::time::Duration;

use common::{
    bind, confirm_channel, connect, consume, declare_queue, next_delivery, no_ack, open_channel, publish_confirmed,
    within, Broker, RPC_TIMEOUT,
};
use lapin::types::{AMQPValue, FieldTable};
use lapin::BasicProperties;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio::time::Instant;

/// The broker's longest command or header line, in bytes.
const LINE_BYTES_MAX: usize = 8 * 1024;
/// The most headers the broker takes in one frame.
const HEADERS_MAX: usize = 100;
/// The broker's largest body, in bytes.
const BODY_BYTES_MAX: usize = 16 * 1024 * 1024;
/// How long the broker waits for CONNECT.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(10);
/// The heart-beat header of CONNECTED for a client that asks for none: none either way.
const OFFERED_HEART_BEAT: &str = "0,0";
/// How long the broker may take to close a connection after its ERROR frame or its RECEIPT for
/// DISCONNECT. It closes at once; the margin is for busy CI machines.
const CLOSE_TIMEOUT: Duration = Duration::from_secs(5);
/// The heart-beat interval, in milliseconds, a broker offers in the heart-beat tests: short, so
/// that a missed heart-beat shows within seconds.
const FAST_HEART_BEAT_MS: u64 = 1000;
/// How long a silent client may stay connected to that broker. It waits twice the interval
/// (2 s) and checks every 0.5 s, so about 2.5 s; the rest is margin for busy CI machines.
const SILENT_CLIENT_CLOSE_TIMEOUT: Duration = Duration::from_secs(5);
/// How often the keep-alive test's client sends a heart-beat: twice per promised interval.
const CLIENT_HEART_BEAT_INTERVAL: Duration = Duration::from_millis(500);
/// How long the keep-alive test stays connected: more than twice the broker's 2 s grace.
const KEEP_ALIVE_PERIOD: Duration = Duration::from_secs(5);
/// Room made in the read buffer before each read.
const READ_CHUNK_BYTES: usize = 16 * 1024;
/// Bytes written at once when streaming a large body.
const BODY_CHUNK_BYTES: usize = 64 * 1024;
/// The exchange `/topic/` destinations ride, shared with MQTT and AMQP.
const TOPIC_EXCHANGE: &str = "amq.topic";
const DIRECT_EXCHANGE: &str = "amq.direct";

// -- frames -----------------------------------------------------------------------------------

/// Whether header values are escaped on the wire.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Escaping {
    /// STOMP 1.0, and CONNECT and CONNECTED in every version.
    None,
    /// STOMP 1.1 and 1.2: `\n`, `\r`, `\c` and `\\` (STOMP 1.2 "Value Encoding").
    Stomp12,
}

/// A frame the broker sent.
#[derive(Clone, Debug)]
struct Frame {
    command: String,
    /// Unescaped, in order; a repeated name counts at its first occurrence (STOMP 1.2 3.2.1).
    headers: Vec<(String, String)>,
    /// The command and header lines as they came off the wire, before unescaping.
    head: String,
    body: Vec<u8>,
}

impl Frame {
    fn header(&self, name: &str) -> Option<&str> {
        self.headers.iter().find(|(key, _)| key == name).map(|(_, value)| value.as_str())
    }

    /// Whether `line` is one of the raw (still escaped) command or header lines.
    fn has_head_line(&self, line: &str) -> bool {
        self.head.split('\n').map(|raw| raw.strip_suffix('\r').unwrap_or(raw)).any(|raw| raw == line)
    }

    fn body_text(&self) -> String {
        String::from_utf8_lossy(&self.body).into_owned()
    }
}

/// What a read produced.
#[derive(Debug)]
enum Event {
    Frame(Frame),
    /// A bare EOL between frames.
    HeartBeat,
    /// The broker closed the connection.
    Closed,
}

/// A frame as bytes: command, headers, blank line, body, NUL. Header text goes out exactly as
/// given, so callers escape it (or mis-escape it on purpose), and add `content-length` when they
/// want one.
fn encode(command: &str, headers: &[(&str, &str)], body: &[u8]) -> Vec<u8> {
    let mut out = Vec::with_capacity(command.len() + body.len() + 64);
    out.extend_from_slice(command.as_bytes());
    out.push(b'\n');
    for (name, value) in headers {
        out.extend_from_slice(name.as_bytes());
        out.push(b':');
        out.extend_from_slice(value.as_bytes());
        out.push(b'\n');
    }
    out.push(b'\n');
    out.extend_from_slice(body);
    out.push(0);
    out
}

/// Decodes a heart-beat or a frame from the front of `buffer` and says how many bytes it used;
/// `None` until one is complete. The broker must send well-formed frames, so anything else fails
/// the test.
fn decode(buffer: &[u8], escaping: Escaping) -> Option<(Event, usize)> {
    match buffer {
        [] | [b'\r'] => return None,
        [b'\n', ..] => return Some((Event::HeartBeat, 1)),
        [b'\r', b'\n', ..] => return Some((Event::HeartBeat, 2)),
        _ => {}
    }
    let mut line_start = 0;
    let mut head_end = None;
    for (index, byte) in buffer.iter().enumerate() {
        if *byte != b'\n' {
            continue;
        }
        let line = &buffer[line_start..index];
        if line.strip_suffix(b"\r").unwrap_or(line).is_empty() {
            head_end = Some((line_start, index + 1));
            break;
        }
        line_start = index + 1;
    }
    let (text_end, body_start) = head_end?;
    let head = std::str::from_utf8(&buffer[..text_end])
        .unwrap_or_else(|error| panic!("the broker sent a frame head that is not UTF-8: {error}"))
        .to_owned();
    let mut lines = head.split('\n').map(|line| line.strip_suffix('\r').unwrap_or(line));
    let command = lines.next().unwrap_or_default().to_owned();
    let escaping = if command == "CONNECTED" { Escaping::None } else { escaping };
    let headers: Vec<(String, String)> = lines
        .filter(|line| !line.is_empty())
        .map(|line| {
            let (name, value) =
                line.split_once(':').unwrap_or_else(|| panic!("the broker sent a header without a colon: {line:?}"));
            (unescape(name, escaping), unescape(value, escaping))
        })
        .collect();
    let rest = &buffer[body_start..];
    let content_length = headers.iter().find(|(name, _)| name == "content-length").map(|(_, value)| {
        value.parse::<usize>().unwrap_or_else(|_| panic!("the broker sent content-length {value:?}"))
    });
    let body_length = match content_length {
        Some(length) => {
            if rest.len() <= length {
                return None;
            }
            assert_eq!(rest[length], 0, "the {command} frame's body does not end in NUL after content-length");
            length
        }
        None => rest.iter().position(|byte| *byte == 0)?,
    };
    let body = rest[..body_length].to_vec();
    Some((Event::Frame(Frame { command, headers, head, body }), body_start + body_length + 1))
}

fn unescape(text: &str, escaping: Escaping) -> String {
    if escaping == Escaping::None {
        return text.to_owned();
    }
    let mut out = String::with_capacity(text.len());
    let mut characters = text.chars();
    while let Some(character) = characters.next() {
        if character != '\\' {
            out.push(character);
            continue;
        }
        out.push(match characters.next() {
            Some('n') => '\n',
            Some('r') => '\r',
            Some('c') => ':',
            Some('\\') => '\\',
            other => panic!("the broker sent the invalid escape \\{other:?} in {text:?}"),
        });
    }
    out
}

// -- a raw STOMP client -----------------------------------------------------------------------

/// One TCP connection to the broker's STOMP port.
struct StompClient {
    /// Names the client in failure messages and prefixes its receipt ids.
    name: String,
    stream: TcpStream,
    /// Bytes read but not yet decoded.
    buffer: Vec<u8>,
    /// Set from CONNECTED's version: 1.1 and 1.2 escape header values.
    escaping: Escaping,
    /// Frames that arrived while the test waited for something else, oldest first.
    stash: VecDeque<Frame>,
    next_receipt: u64,
}

impl StompClient {
    /// Opens the socket; nothing is sent yet.
    async fn open(broker: &Broker, name: &str) -> StompClient {
        let stream = within("a TCP connection to the STOMP port", TcpStream::connect(broker.stomp_addr))
            .await
            .unwrap_or_else(|error| panic!("client {name:?} could not connect to {}: {error}", broker.stomp_addr));
        // Each write leaves at once, so a frame written in pieces reaches the broker in pieces.
        stream.set_nodelay(true).expect("set TCP_NODELAY");
        StompClient {
            name: name.to_owned(),
            stream,
            buffer: Vec::new(),
            escaping: Escaping::None,
            stash: VecDeque::new(),
            next_receipt: 1,
        }
    }

    async fn write(&mut self, bytes: &[u8]) {
        let written = within("a write to the STOMP socket", self.stream.write_all(bytes)).await;
        if let Err(error) = written {
            panic!("client {:?} could not write: {error}", self.name);
        }
    }

    /// Writes `bytes` one at a time, each in its own write.
    async fn write_bytewise(&mut self, bytes: &[u8]) {
        for byte in bytes {
            self.write(std::slice::from_ref(byte)).await;
            let flushed = within("a flush of the STOMP socket", self.stream.flush()).await;
            if let Err(error) = flushed {
                panic!("client {:?} could not flush: {error}", self.name);
            }
        }
    }

    async fn send_frame(&mut self, command: &str, headers: &[(&str, &str)], body: &[u8]) {
        self.write(&encode(command, headers, body)).await;
    }

    fn receipt_id(&mut self) -> String {
        let id = format!("{}-receipt-{}", self.name, self.next_receipt);
        self.next_receipt += 1;
        id
    }

    /// SEND with a content-length and a receipt, and waits for the RECEIPT: the message has
    /// then been routed.
    async fn send_confirmed(&mut self, destination: &str, extra_headers: &[(&str, &str)], body: &[u8]) {
        let receipt = self.receipt_id();
        let length = body.len().to_string();
        let mut headers =
            vec![("destination", destination), ("receipt", receipt.as_str()), ("content-length", length.as_str())];
        headers.extend_from_slice(extra_headers);
        self.send_frame("SEND", &headers, body).await;
        self.receipt(&receipt).await;
    }

    /// SUBSCRIBE with a receipt, and waits for the RECEIPT: the subscription is then in place.
    async fn subscribe(&mut self, destination: &str, id: &str, ack: &str) {
        let receipt = self.receipt_id();
        let headers = [("destination", destination), ("id", id), ("ack", ack), ("receipt", receipt.as_str())];
        self.send_frame("SUBSCRIBE", &headers, b"").await;
        self.receipt(&receipt).await;
    }

    /// The next heart-beat or frame off the socket (the stash is not looked at), `Closed` once
    /// the broker has closed the connection, or `None` when `deadline` passes first.
    async fn poll_event(&mut self, deadline: Instant) -> Option<Event> {
        loop {
            if let Some((event, used)) = decode(&self.buffer, self.escaping) {
                self.buffer.drain(..used);
                return Some(event);
            }
            self.buffer.reserve(READ_CHUNK_BYTES);
            match tokio::time::timeout_at(deadline, self.stream.read_buf(&mut self.buffer)).await {
                Err(_) => return None,
                Ok(Ok(0)) => return Some(Event::Closed),
                Ok(Ok(_)) => {}
                // Closing a socket with unread input sends RST rather than FIN.
                Ok(Err(error))
                    if matches!(error.kind(), io::ErrorKind::ConnectionReset | io::ErrorKind::ConnectionAborted) =>
                {
                    return Some(Event::Closed)
                }
                Ok(Err(error)) => panic!("client {:?} could not read: {error}", self.name),
            }
        }
    }

    /// `poll_event`, failing the test at `deadline`.
    async fn next_event(&mut self, what: &str, deadline: Instant) -> Event {
        match self.poll_event(deadline).await {
            Some(event) => event,
            None => panic!("client {:?} timed out waiting for {what}; other frames: {:?}", self.name, self.stash),
        }
    }

    /// The first frame, stashed or new, for which `pick` returns `Some`, within `RPC_TIMEOUT`.
    /// Other frames are stashed for later waits, except an ERROR, which fails the test.
    async fn wait_for<T>(&mut self, what: &str, mut pick: impl FnMut(&Frame) -> Option<T>) -> T {
        for index in 0..self.stash.len() {
            if let Some(found) = pick(&self.stash[index]) {
                self.stash.remove(index);
                return found;
            }
        }
        let deadline = Instant::now() + RPC_TIMEOUT;
        loop {
            match self.next_event(what, deadline).await {
                Event::HeartBeat => {}
                Event::Closed => {
                    panic!(
                        "client {:?}: connection closed while waiting for {what}; other frames: {:?}",
                        self.name, self.stash
                    )
                }
                Event::Frame(frame) => {
                    if let Some(found) = pick(&frame) {
                        return found;
                    }
                    if frame.command == "ERROR" {
                        panic!("client {:?} got an ERROR while waiting for {what}: {frame:?}", self.name);
                    }
                    self.stash.push_back(frame);
                }
            }
        }
    }

    /// The next frame of any kind.
    async fn next_frame(&mut self, what: &str) -> Frame {
        self.wait_for(what, |frame| Some(frame.clone())).await
    }

    async fn next_message(&mut self) -> Frame {
        self.wait_for("a MESSAGE", |frame| (frame.command == "MESSAGE").then(|| frame.clone())).await
    }

    async fn receipt(&mut self, id: &str) {
        let what = format!("RECEIPT {id}");
        self.wait_for(&what, |frame| {
            (frame.command == "RECEIPT" && frame.header("receipt-id") == Some(id)).then_some(())
        })
        .await
    }

    /// Expects CONNECTED next and takes the negotiated version's escaping.
    async fn expect_connected(&mut self) -> Frame {
        let frame = self.next_frame("CONNECTED").await;
        assert_eq!(frame.command, "CONNECTED", "client {:?}: answer to CONNECT: {frame:?}", self.name);
        self.escaping = match frame.header("version") {
            Some("1.1" | "1.2") => Escaping::Stomp12,
            _ => Escaping::None,
        };
        frame
    }

    /// Expects an ERROR next and the connection closed right after it; returns the ERROR.
    async fn expect_error_then_close(&mut self, what: &str) -> Frame {
        let frame = self.next_frame(&format!("an ERROR for {what}")).await;
        assert_eq!(frame.command, "ERROR", "client {:?}: expected an ERROR for {what}, got {frame:?}", self.name);
        self.expect_closed(&format!("the ERROR for {what}"), CLOSE_TIMEOUT).await;
        frame
    }

    /// Reads until the broker closes the connection, which must happen within `timeout` and
    /// with nothing but heart-beats before it; returns how long it took.
    async fn expect_closed(&mut self, what: &str, timeout: Duration) -> Duration {
        assert!(self.stash.is_empty(), "client {:?}: unread frames before {what}: {:?}", self.name, self.stash);
        let start = Instant::now();
        let waiting_for = format!("the broker to close the connection after {what}");
        loop {
            match self.next_event(&waiting_for, start + timeout).await {
                Event::Closed => return start.elapsed(),
                Event::HeartBeat => {}
                Event::Frame(frame) => {
                    panic!("client {:?}: expected only the close after {what}, got {frame:?}", self.name)
                }
            }
        }
    }

    /// DISCONNECT with a receipt: the RECEIPT, then the close. The broker sends the RECEIPT only
    /// after it has released the session (requeued what was unacknowledged).
    async fn disconnect(mut self) {
        let receipt = self.receipt_id();
        self.send_frame("DISCONNECT", &[("receipt", receipt.as_str())], b"").await;
        self.receipt(&receipt).await;
        self.expect_closed("DISCONNECT", CLOSE_TIMEOUT).await;
    }
}

/// Connects as guest/guest to vhost `/`, offering `accept_version` (`None`: a STOMP 1.0 client)
/// and `heart_beat`; returns the client and the CONNECTED frame.
async fn connect_stomp(
    broker: &Broker,
    name: &str,
    accept_version: Option<&str>,
    heart_beat: Option<&str>,
) -> (StompClient, Frame) {
    let mut client = StompClient::open(broker, name).await;
    let mut headers = vec![("host", "/"), ("login", "guest"), ("passcode", "guest")];
    if let Some(version) = accept_version {
        headers.push(("accept-version", version));
    }
    if let Some(heart_beat) = heart_beat {
        headers.push(("heart-beat", heart_beat));
    }
    client.send_frame("CONNECT", &headers, b"").await;
    let connected = client.expect_connected().await;
    (client, connected)
}

/// A STOMP 1.2 session without heart-beats.
async fn stomp12(broker: &Broker, name: &str) -> StompClient {
    let (client, connected) = connect_stomp(broker, name, Some("1.2"), None).await;
    assert_eq!(connected.header("version"), Some("1.2"), "CONNECTED for {name:?}: {connected:?}");
    client
}

/// A broker config that offers `FAST_HEART_BEAT_MS` heart-beats.
fn fast_heart_beat_config() -> String {
    format!("[stomp]\nheartbeat_ms = {FAST_HEART_BEAT_MS}\n")
}

/// A string-valued AMQP header, whichever of the two string types carries it.
fn amqp_text_header(properties: &BasicProperties, name: &str) -> Option<String> {
    match properties.headers().as_ref()?.inner().get(name)? {
        AMQPValue::LongString(text) => Some(text.to_string()),
        AMQPValue::ShortString(text) => Some(text.as_str().to_owned()),
        _ => None,
    }
}

// -- CONNECT ----------------------------------------------------------------------------------

/// A bad frame: its command, headers and the ERROR message expected.
type BadCase<'a> = (&'a str, &'a [(&'a str, &'a str)], &'a str);

#[tokio::test]
async fn connect_negotiates_the_highest_common_version() {
    let broker = Broker::start();
    for (offered, expected) in [("1.2", "1.2"), ("1.0,1.1,1.2", "1.2"), ("1.1", "1.1"), ("1.0,1.1", "1.1")] {
        let name = format!("version-{}", offered.replace(',', "-"));
        let (mut client, connected) = connect_stomp(&broker, &name, Some(offered), None).await;
        assert_eq!(connected.header("version"), Some(expected), "accept-version:{offered}: {connected:?}");
        assert_eq!(connected.header("heart-beat"), Some(OFFERED_HEART_BEAT), "accept-version:{offered}: {connected:?}");
        assert!(
            connected.header("server").is_some_and(|server| server.starts_with("Warren/")),
            "server header of {connected:?}"
        );
        assert!(connected.header("session").is_some(), "session header of {connected:?}");
        client.send_confirmed("/queue/versions", &[], offered.as_bytes()).await;
        client.disconnect().await;
    }
}

#[tokio::test]
async fn stomp_command_connects_like_connect() {
    let broker = Broker::start();
    let mut client = StompClient::open(&broker, "stomp-command").await;
    let headers = [("accept-version", "1.2"), ("host", "/"), ("login", "guest"), ("passcode", "guest")];
    client.send_frame("STOMP", &headers, b"").await;
    let connected = client.expect_connected().await;
    assert_eq!(connected.header("version"), Some("1.2"), "{connected:?}");
    assert_eq!(connected.header("heart-beat"), Some(OFFERED_HEART_BEAT), "{connected:?}");
    client.subscribe("/queue/stomp-command", "stomp-command", "auto").await;
    client.send_confirmed("/queue/stomp-command", &[], b"over STOMP").await;
    assert_eq!(client.next_message().await.body, b"over STOMP");
    client.disconnect().await;
}

#[tokio::test]
async fn connect_without_accept_version_is_stomp_1_0() {
    let broker = Broker::start();
    let (mut client, connected) = connect_stomp(&broker, "stomp-1-0", None, Some("1000,1000")).await;
    // STOMP 1.0 has neither header; it has no heart-beats, whatever the client asks for.
    assert_eq!(connected.header("version"), None, "{connected:?}");
    assert_eq!(connected.header("heart-beat"), None, "{connected:?}");
    assert!(connected.header("session").is_some(), "{connected:?}");
    // In 1.0 a SUBSCRIBE needs no id.
    let subscribe = [("destination", "/queue/stomp-1-0"), ("receipt", "subscribed")];
    client.send_frame("SUBSCRIBE", &subscribe, b"").await;
    client.receipt("subscribed").await;
    client.send_confirmed("/queue/stomp-1-0", &[], b"old school").await;
    let message = client.next_message().await;
    assert_eq!(message.body, b"old school");
    assert_eq!(message.header("subscription"), Some("/queue/stomp-1-0"), "named by its destination: {message:?}");
    client.disconnect().await;
}

#[tokio::test]
async fn connect_with_unsupported_version_gets_error_then_close() {
    let broker = Broker::start();
    let mut client = StompClient::open(&broker, "stomp-2-0").await;
    let headers = [("accept-version", "2.0"), ("host", "/"), ("login", "guest"), ("passcode", "guest")];
    client.send_frame("CONNECT", &headers, b"").await;
    let error = client.expect_error_then_close("accept-version:2.0").await;
    let message = error.header("message").unwrap_or_default();
    assert!(message.contains("1.2"), "the ERROR names the supported versions: {error:?}");
    // The refusal ended only that connection.
    stomp12(&broker, "after-stomp-2-0").await.disconnect().await;
}

#[tokio::test]
async fn failed_login_gets_error_then_close() {
    let broker = Broker::start();
    let cases: [BadCase; 3] = [
        ("wrong-passcode", &[("login", "guest"), ("passcode", "not-the-password")], "login refused"),
        ("unknown-user", &[("login", "nobody"), ("passcode", "guest")], "login refused"),
        ("anonymous", &[], "anonymous login is not allowed"),
    ];
    for (name, credentials, detail) in cases {
        let mut client = StompClient::open(&broker, name).await;
        let mut headers = vec![("accept-version", "1.2"), ("host", "/")];
        headers.extend_from_slice(credentials);
        client.send_frame("CONNECT", &headers, b"").await;
        let error = client.expect_error_then_close(name).await;
        assert_eq!(error.header("message"), Some("Access refused"), "{name}: {error:?}");
        assert!(error.body_text().contains(detail), "{name}: ERROR body {:?} lacks {detail:?}", error.body_text());
    }
    stomp12(&broker, "after-refusals").await.disconnect().await;
}

#[tokio::test]
async fn garbage_before_connect_gets_error_then_close() {
    let broker = Broker::start();
    let cases: [(&str, Vec<u8>, &str); 4] = [
        ("unknown-first-command", encode("HELLO", &[], b""), "expected CONNECT"),
        ("send-before-connect", encode("SEND", &[("destination", "/queue/early")], b"too early"), "expected CONNECT"),
        ("not-utf8", b"\xff\xfe\xfd\n\n\0".to_vec(), "malformed frame"),
        // A first line that never ends; the bound applies before CONNECT as well.
        ("endless-first-line", vec![b'G'; LINE_BYTES_MAX + 100], "malformed frame"),
    ];
    for (name, bytes, message) in cases {
        let mut client = StompClient::open(&broker, name).await;
        client.write(&bytes).await;
        let error = client.expect_error_then_close(name).await;
        assert_eq!(error.header("message"), Some(message), "{name}: {error:?}");
    }
    stomp12(&broker, "after-garbage").await.disconnect().await;
}

#[tokio::test]
#[ignore = "waits out the broker's 10 s CONNECT timeout, which the config cannot shorten"]
async fn connection_without_connect_is_closed_after_the_timeout() {
    let broker = Broker::start();
    let mut client = StompClient::open(&broker, "no-connect").await;
    // Part of a frame: bytes that arrive do not extend the deadline.
    client.write(b"CONN").await;
    let elapsed = client.expect_closed("no CONNECT", CONNECT_TIMEOUT + CLOSE_TIMEOUT).await;
    // Our clock started after the broker's, hence the margin.
    assert!(elapsed >= CONNECT_TIMEOUT - Duration::from_secs(1), "closed after {elapsed:?}");
}

// -- framing ----------------------------------------------------------------------------------

#[tokio::test]
async fn frames_fed_one_byte_at_a_time_are_reassembled() {
    let broker = Broker::start();
    let mut client = StompClient::open(&broker, "bytewise").await;
    // CRLF line endings, as STOMP 1.2 allows.
    client.write_bytewise(b"CONNECT\r\naccept-version:1.2\r\nhost:/\r\nlogin:guest\r\npasscode:guest\r\n\r\n\0").await;
    let connected = client.expect_connected().await;
    assert_eq!(connected.header("version"), Some("1.2"), "{connected:?}");

    // A heart-beat EOL, a SUBSCRIBE, a binary SEND with content-length and a text SEND without.
    let mut bytes = b"\r\n".to_vec();
    bytes.extend(encode(
        "SUBSCRIBE",
        &[("destination", "/queue/bytewise"), ("id", "0"), ("receipt", "subscribed")],
        b"",
    ));
    bytes.extend(encode(
        "SEND",
        &[("destination", "/queue/bytewise"), ("content-length", "5"), ("receipt", "sent-binary")],
        b"a\0b\0c",
    ));
    bytes.extend(encode("SEND", &[("destination", "/queue/bytewise"), ("receipt", "sent-text")], b"no length"));
    client.write_bytewise(&bytes).await;
    client.receipt("subscribed").await;
    client.receipt("sent-binary").await;
    client.receipt("sent-text").await;
    assert_eq!(client.next_message().await.body, b"a\0b\0c");
    assert_eq!(client.next_message().await.body, b"no length");
    client.disconnect().await;
}

#[tokio::test]
async fn stomp_1_2_header_escapes_round_trip() {
    // A colon, a newline, a backslash and a carriage return, escaped (STOMP 1.2 "Value Encoding").
    const ESCAPED: &str = r"a\cb\nc\\d\re";
    const VALUE: &str = "a:b\nc\\d\re";
    let broker = Broker::start();
    let mut client = stomp12(&broker, "escapes").await;
    client.subscribe("/queue/escapes", "escapes", "auto").await;
    client.send_confirmed("/queue/escapes", &[("x-escaped", ESCAPED)], b"escaped").await;
    let message = client.next_message().await;
    assert_eq!(message.header("x-escaped"), Some(VALUE), "{message:?}");
    let line = format!("x-escaped:{ESCAPED}");
    assert!(message.has_head_line(&line), "MESSAGE head {:?} lacks the line {line:?}", message.head);
    client.disconnect().await;
}

#[tokio::test]
async fn connect_and_stomp_1_0_headers_are_not_unescaped() {
    let broker = Broker::start();
    // `\x` is no escape: a broker that unescaped CONNECT's headers would refuse this one.
    let mut client = StompClient::open(&broker, "connect-escapes").await;
    let headers = [
        ("accept-version", "1.2"),
        ("host", "/"),
        ("login", "guest"),
        ("passcode", "guest"),
        ("x-note", r"not\xan escape"),
    ];
    client.send_frame("CONNECT", &headers, b"").await;
    let connected = client.expect_connected().await;
    assert_eq!(connected.header("version"), Some("1.2"), "{connected:?}");
    client.disconnect().await;

    // STOMP 1.0 has no escaping: backslashes and colons travel as they are, both ways.
    let (mut client, _) = connect_stomp(&broker, "stomp-1-0-escapes", None, None).await;
    client.send_frame("SUBSCRIBE", &[("destination", "/queue/escapes-1-0"), ("receipt", "subscribed")], b"").await;
    client.receipt("subscribed").await;
    client.send_confirmed("/queue/escapes-1-0", &[("x-raw", r"a\cb\x"), ("x-colon", "c:d")], b"raw").await;
    let message = client.next_message().await;
    assert_eq!(message.header("x-raw"), Some(r"a\cb\x"), "{message:?}");
    assert!(message.has_head_line(r"x-raw:a\cb\x"), "MESSAGE head {:?}", message.head);
    assert_eq!(message.header("x-colon"), Some("c:d"), "{message:?}");
    client.disconnect().await;
}

#[tokio::test]
async fn binary_body_with_nuls_round_trips_byte_exact() {
    let broker = Broker::start();
    let mut client = stomp12(&broker, "binary").await;
    // Every byte value, with NULs at both ends.
    let mut body = vec![0u8];
    body.extend(0..=u8::MAX);
    body.extend((0..=u8::MAX).rev());
    body.push(0);
    client.send_confirmed("/queue/binary", &[("content-type", "application/octet-stream")], &body).await;
    // Without content-length the body ends at the first NUL.
    client.send_frame("SEND", &[("destination", "/queue/binary"), ("receipt", "sent-text")], b"plain text").await;
    client.receipt("sent-text").await;

    client.subscribe("/queue/binary", "binary", "auto").await;
    let message = client.next_message().await;
    assert_eq!(message.body, body, "the binary body");
    let length = body.len().to_string();
    assert_eq!(message.header("content-length"), Some(length.as_str()), "{message:?}");
    assert_eq!(message.header("content-type"), Some("application/octet-stream"), "{message:?}");
    let message = client.next_message().await;
    assert_eq!(message.body, b"plain text");
    assert_eq!(message.header("content-length"), Some("10"), "the broker always sends content-length: {message:?}");
    client.disconnect().await;
}

// -- receipts, acknowledgements, transactions -------------------------------------------------

#[tokio::test]
async fn receipts_answer_send_subscribe_unsubscribe_and_disconnect() {
    let broker = Broker::start();
    let mut client = stomp12(&broker, "receipts").await;
    let subscribe = [("destination", "/queue/receipts"), ("id", "receipts"), ("receipt", "receipt-subscribe")];
    client.send_frame("SUBSCRIBE", &subscribe, b"").await;
    client.receipt("receipt-subscribe").await;
    client.send_frame("SEND", &[("destination", "/queue/receipts"), ("receipt", "receipt-send")], b"first").await;
    client.receipt("receipt-send").await;
    assert_eq!(client.next_message().await.body, b"first");

    client.send_frame("UNSUBSCRIBE", &[("id", "receipts"), ("receipt", "receipt-unsubscribe")], b"").await;
    client.receipt("receipt-unsubscribe").await;
    client.send_frame("SEND", &[("destination", "/queue/receipts"), ("receipt", "receipt-send-2")], b"second").await;
    client.receipt("receipt-send-2").await;
    client.send_frame("DISCONNECT", &[("receipt", "receipt-disconnect")], b"").await;
    client.receipt("receipt-disconnect").await;
    // Nothing after the RECEIPT, and no MESSAGE for "second" (it would have been stashed).
    client.expect_closed("DISCONNECT", CLOSE_TIMEOUT).await;

    // "second" was routed while nobody subscribed, so it waits in the queue.
    let mut reader = stomp12(&broker, "receipts-reader").await;
    reader.subscribe("/queue/receipts", "reader", "auto").await;
    assert_eq!(reader.next_message().await.body, b"second");
    reader.disconnect().await;
}

#[tokio::test]
async fn client_individual_ack_redelivers_only_the_unacked() {
    const QUEUE: &str = "/queue/individual";
    let broker = Broker::start();
    let mut first = stomp12(&broker, "individual-first").await;
    first.subscribe(QUEUE, "individual", "client-individual").await;
    first.send_confirmed(QUEUE, &[], b"one").await;
    first.send_confirmed(QUEUE, &[], b"two").await;
    let one = first.next_message().await;
    let two = first.next_message().await;
    assert_eq!((one.body_text().as_str(), one.header("redelivered")), ("one", Some("false")), "{one:?}");
    assert_eq!((two.body_text().as_str(), two.header("redelivered")), ("two", Some("false")), "{two:?}");
    // STOMP 1.2: an ACK names the MESSAGE's `ack` header in its `id`.
    let ack_one = one.header("ack").unwrap_or_else(|| panic!("a client-individual MESSAGE has an ack header: {one:?}"));
    let ack_two = two.header("ack").unwrap_or_else(|| panic!("a client-individual MESSAGE has an ack header: {two:?}"));
    assert_ne!(ack_one, ack_two);
    first.send_frame("ACK", &[("id", ack_two), ("receipt", "acked-two")], b"").await;
    first.receipt("acked-two").await;
    first.disconnect().await;

    let mut second = stomp12(&broker, "individual-second").await;
    second.subscribe(QUEUE, "individual", "client-individual").await;
    second.send_confirmed(QUEUE, &[], b"marker").await;
    let redelivered = second.next_message().await;
    assert_eq!(redelivered.body, b"one", "only the unacknowledged message comes back: {redelivered:?}");
    assert_eq!(redelivered.header("redelivered"), Some("true"), "{redelivered:?}");
    // "two" was acknowledged: had it been requeued, it would come before the marker.
    let marker = second.next_message().await;
    assert_eq!(marker.body, b"marker", "{marker:?}");
    assert_eq!(marker.header("redelivered"), Some("false"), "{marker:?}");
    second.disconnect().await;
}

#[tokio::test]
async fn transactions_commit_and_abort() {
    const QUEUE: &str = "/queue/transactions";
    let broker = Broker::start();
    let mut client = stomp12(&broker, "transactions").await;
    client.subscribe(QUEUE, "transactions", "auto").await;

    client.send_frame("BEGIN", &[("transaction", "t1"), ("receipt", "begin-t1")], b"").await;
    client.receipt("begin-t1").await;
    client
        .send_frame("SEND", &[("destination", QUEUE), ("transaction", "t1"), ("receipt", "send-t1")], b"committed")
        .await;
    client.receipt("send-t1").await;
    // Sent later but outside the transaction, so routed first.
    client.send_confirmed(QUEUE, &[], b"outside").await;
    assert_eq!(client.next_message().await.body, b"outside");
    client.send_frame("COMMIT", &[("transaction", "t1"), ("receipt", "commit-t1")], b"").await;
    client.receipt("commit-t1").await;
    assert_eq!(client.next_message().await.body, b"committed");

    client.send_frame("BEGIN", &[("transaction", "t2"), ("receipt", "begin-t2")], b"").await;
    client.receipt("begin-t2").await;
    client
        .send_frame("SEND", &[("destination", QUEUE), ("transaction", "t2"), ("receipt", "send-t2")], b"aborted")
        .await;
    client.receipt("send-t2").await;
    client.send_frame("ABORT", &[("transaction", "t2"), ("receipt", "abort-t2")], b"").await;
    client.receipt("abort-t2").await;
    client.send_confirmed(QUEUE, &[], b"after abort").await;
    // The aborted SEND was never routed, so the marker is next.
    assert_eq!(client.next_message().await.body, b"after abort");
    client.disconnect().await;
}

#[tokio::test]
async fn commit_of_unknown_transaction_gets_error_then_close() {
    let broker = Broker::start();
    let mut client = stomp12(&broker, "commit-unknown").await;
    client.send_frame("COMMIT", &[("transaction", "never-begun")], b"").await;
    let error = client.expect_error_then_close("COMMIT of a transaction never begun").await;
    assert_eq!(error.header("message"), Some("unknown transaction"), "{error:?}");

    // An aborted transaction is over: committing it is the same error.
    let mut client = stomp12(&broker, "commit-aborted").await;
    client.send_frame("BEGIN", &[("transaction", "t"), ("receipt", "begin")], b"").await;
    client.receipt("begin").await;
    client.send_frame("ABORT", &[("transaction", "t"), ("receipt", "abort")], b"").await;
    client.receipt("abort").await;
    client.send_frame("COMMIT", &[("transaction", "t")], b"").await;
    let error = client.expect_error_then_close("COMMIT of an aborted transaction").await;
    assert_eq!(error.header("message"), Some("unknown transaction"), "{error:?}");
}

// -- bounds and bad input ---------------------------------------------------------------------

/// A frame the broker must refuse with an ERROR and a close.
struct BadFrame {
    name: &'static str,
    bytes: Vec<u8>,
    /// The ERROR's `message` header.
    message: &'static str,
    /// Text the ERROR's body must contain, where it names a bound.
    detail: Option<&'static str>,
}

fn bad_frames() -> Vec<BadFrame> {
    let long_value = "a".repeat(LINE_BYTES_MAX + 100);
    let header_names: Vec<String> = (0..HEADERS_MAX).map(|index| format!("x-header-{index}")).collect();
    let mut too_many_headers = vec![("destination", "/queue/bad-input")];
    too_many_headers.extend(header_names.iter().map(|name| (name.as_str(), "v")));
    let body_too_large = (BODY_BYTES_MAX + 1).to_string();
    let second_connect = [("accept-version", "1.2"), ("host", "/"), ("login", "guest"), ("passcode", "guest")];
    vec![
        BadFrame {
            name: "line-over-8KiB",
            bytes: encode("SEND", &[("destination", "/queue/bad-input"), ("x-long", long_value.as_str())], b""),
            message: "malformed frame",
            detail: Some("8192"),
        },
        BadFrame {
            name: "over-100-headers",
            bytes: encode("SEND", &too_many_headers, b""),
            message: "malformed frame",
            detail: Some("100 headers"),
        },
        BadFrame {
            name: "content-length-not-a-number",
            bytes: encode("SEND", &[("destination", "/queue/bad-input"), ("content-length", "five")], b"hello"),
            message: "malformed frame",
            detail: Some("content-length"),
        },
        BadFrame {
            name: "content-length-over-16MiB",
            bytes: encode(
                "SEND",
                &[("destination", "/queue/bad-input"), ("content-length", body_too_large.as_str())],
                b"",
            ),
            message: "malformed frame",
            detail: Some("16777216"),
        },
        BadFrame { name: "unknown-command", bytes: encode("FROB", &[], b""), message: "unknown command", detail: None },
        BadFrame {
            name: "subscribe-nowhere",
            bytes: encode("SUBSCRIBE", &[("destination", "/nowhere/x"), ("id", "0")], b""),
            message: "invalid destination",
            detail: Some("/nowhere/x"),
        },
        BadFrame {
            name: "subscribe-without-id",
            bytes: encode("SUBSCRIBE", &[("destination", "/queue/bad-input")], b""),
            message: "missing id header",
            detail: None,
        },
        BadFrame {
            name: "invalid-escape",
            bytes: encode("SEND", &[("destination", "/queue/bad-input"), ("x-bad", r"\x")], b""),
            message: "malformed frame",
            detail: Some("escape"),
        },
        BadFrame {
            name: "second-connect",
            bytes: encode("CONNECT", &second_connect, b""),
            message: "already connected",
            detail: None,
        },
    ]
}

#[tokio::test]
async fn bad_frames_get_error_then_close_and_spare_other_connections() {
    const BYSTANDER_QUEUE: &str = "/queue/bad-input-bystander";
    let broker = Broker::start();
    let mut bystander = stomp12(&broker, "bad-input-bystander").await;
    bystander.subscribe(BYSTANDER_QUEUE, "bystander", "auto").await;

    for case in bad_frames() {
        let mut client = stomp12(&broker, case.name).await;
        client.write(&case.bytes).await;
        let error = client.expect_error_then_close(case.name).await;
        assert_eq!(error.header("message"), Some(case.message), "{}: {error:?}", case.name);
        if let Some(detail) = case.detail {
            assert!(
                error.body_text().contains(detail),
                "{}: ERROR body {:?} lacks {detail:?}",
                case.name,
                error.body_text()
            );
        }
    }

    bystander.send_confirmed(BYSTANDER_QUEUE, &[], b"still here").await;
    assert_eq!(bystander.next_message().await.body, b"still here");
    bystander.disconnect().await;
    let mut newcomer = stomp12(&broker, "bad-input-newcomer").await;
    newcomer.send_confirmed("/queue/bad-input-newcomer", &[], b"welcome").await;
    newcomer.disconnect().await;
}

#[tokio::test]
async fn frames_at_the_limits_are_accepted() {
    const QUEUE: &str = "/queue/at-the-limits";
    let broker = Broker::start();
    let mut client = stomp12(&broker, "at-the-limits").await;
    client.subscribe(QUEUE, "limits", "auto").await;

    // A header line of exactly LINE_BYTES_MAX bytes.
    let long_value = "a".repeat(LINE_BYTES_MAX - "x-long:".len());
    client.send_confirmed(QUEUE, &[("x-long", long_value.as_str())], b"long line").await;
    let message = client.next_message().await;
    assert_eq!(message.body, b"long line");
    assert!(message.header("x-long") == Some(long_value.as_str()), "the long header comes back whole");

    // Exactly HEADERS_MAX headers: destination, receipt and ours.
    let names: Vec<String> = (0..HEADERS_MAX - 2).map(|index| format!("x-header-{index}")).collect();
    let mut headers = vec![("destination", QUEUE), ("receipt", "hundred-headers")];
    headers.extend(names.iter().map(|name| (name.as_str(), "v")));
    assert_eq!(headers.len(), HEADERS_MAX);
    client.send_frame("SEND", &headers, b"many headers").await;
    client.receipt("hundred-headers").await;
    let message = client.next_message().await;
    assert_eq!(message.body, b"many headers");
    let missing: Vec<&String> = names.iter().filter(|name| message.header(name) != Some("v")).collect();
    assert!(missing.is_empty(), "headers missing from the MESSAGE: {missing:?}");
    client.disconnect().await;
}

#[tokio::test]
async fn body_without_nul_over_16_mib_gets_error_then_close() {
    let broker = Broker::start();
    let mut client = stomp12(&broker, "endless-body").await;
    client.write(b"SEND\ndestination:/queue/endless-body\n\n").await;
    let chunk = vec![b'x'; BODY_CHUNK_BYTES];
    let mut remaining = BODY_BYTES_MAX + 1;
    while remaining > 0 {
        let size = remaining.min(chunk.len());
        match tokio::time::timeout(RPC_TIMEOUT, client.stream.write_all(&chunk[..size])).await {
            Ok(Ok(())) => remaining -= size,
            // The broker may refuse the frame before its last byte and close, ending the write;
            // its ERROR is still there to read.
            Ok(Err(_)) => break,
            Err(_) => panic!("the broker stopped reading with {remaining} bytes of the body unsent"),
        }
    }
    let error = client.expect_error_then_close("a body over 16 MiB without NUL").await;
    assert_eq!(error.header("message"), Some("malformed frame"), "{error:?}");
    assert!(error.body_text().contains("16777216"), "ERROR body {:?}", error.body_text());

    let mut other = stomp12(&broker, "after-endless-body").await;
    other.send_confirmed("/queue/after-endless-body", &[], b"fine").await;
    other.disconnect().await;
}

// -- heart-beats ------------------------------------------------------------------------------

#[tokio::test]
async fn heart_beats_flow_and_a_silent_client_is_dropped() {
    let broker = Broker::start_with_config(&fast_heart_beat_config());
    let started = Instant::now();
    let (mut client, connected) = connect_stomp(&broker, "silent", Some("1.2"), Some("1000,1000")).await;
    assert_eq!(connected.header("heart-beat"), Some("1000,1000"), "the broker offers its configured interval");

    // The client promised a heart-beat a second and now sends nothing.
    let deadline = started + SILENT_CLIENT_CLOSE_TIMEOUT;
    let mut heart_beats = 0;
    loop {
        match client.next_event("heart-beats, then the close of a silent connection", deadline).await {
            Event::HeartBeat => heart_beats += 1,
            Event::Closed => break,
            Event::Frame(frame) => panic!("expected only heart-beats from the broker, got {frame:?}"),
        }
    }
    let elapsed = started.elapsed();
    assert!(heart_beats >= 1, "no heart-beat EOL from the broker in {elapsed:?}, at 1000 ms negotiated");
    // The broker allows twice the promised interval of silence; our clock started first.
    assert!(elapsed >= Duration::from_millis(2 * FAST_HEART_BEAT_MS), "dropped too early, after {elapsed:?}");
}

#[tokio::test]
async fn client_heart_beats_keep_a_quiet_connection_open() {
    let broker = Broker::start_with_config(&fast_heart_beat_config());
    // A heart-beat a second promised, none wanted: the broker waits at most 2 s for each.
    let (mut client, connected) = connect_stomp(&broker, "beating", Some("1.2"), Some("1000,0")).await;
    // As RabbitMQ answers: no beats sent (none wanted), one expected every second.
    assert_eq!(connected.header("heart-beat"), Some("0,1000"), "{connected:?}");
    let end = Instant::now() + KEEP_ALIVE_PERIOD;
    let mut sent = 0u32;
    loop {
        let now = Instant::now();
        if now >= end {
            break;
        }
        match client.poll_event((now + CLIENT_HEART_BEAT_INTERVAL).min(end)).await {
            // Alternate LF and CRLF: both are heart-beats.
            None => {
                client.write(if sent.is_multiple_of(2) { b"\n" as &[u8] } else { b"\r\n" }).await;
                sent += 1;
            }
            Some(Event::HeartBeat) => panic!("the client asked for no heart-beats (heart-beat:1000,0), got one"),
            Some(Event::Closed) => {
                panic!("the broker closed a connection that sent a heart-beat every {CLIENT_HEART_BEAT_INTERVAL:?}")
            }
            Some(Event::Frame(frame)) => panic!("expected nothing from the broker, got {frame:?}"),
        }
    }
    client.send_confirmed("/queue/heart-beats", &[], b"still connected").await;
    client.disconnect().await;
}

// -- destinations and other protocols ---------------------------------------------------------

#[tokio::test]
async fn stomp_to_amqp_topic_with_properties() {
    let broker = Broker::start();
    let connection = connect(&broker).await;
    let channel = open_channel(&connection).await;
    let queue = "stomp-to-amqp-orders";
    declare_queue(&channel, queue).await;
    bind(&channel, queue, TOPIC_EXCHANGE, "orders.*.created").await;
    let mut consumer = consume(&channel, queue, "stomp-to-amqp-consumer", no_ack()).await;
    let mut publisher = stomp12(&broker, "stomp-to-amqp-publisher").await;

    // Not matched by the binding: it must not show up ahead of the one that is.
    publisher.send_confirmed("/topic/orders.eu.deleted", &[], b"not matched").await;
    let headers = [
        ("content-type", "application/json"),
        ("correlation-id", "order-42"),
        ("persistent", "true"),
        ("x-tenant", "acme"),
    ];
    publisher.send_confirmed("/topic/orders.eu.created", &headers, br#"{"id":42}"#).await;

    let delivery = next_delivery(&mut consumer).await;
    assert_eq!(delivery.exchange.as_str(), TOPIC_EXCHANGE);
    assert_eq!(delivery.routing_key.as_str(), "orders.eu.created");
    assert_eq!(delivery.data, br#"{"id":42}"#);
    let properties = &delivery.properties;
    assert_eq!(properties.content_type().as_ref().map(|value| value.as_str()), Some("application/json"));
    assert_eq!(properties.correlation_id().as_ref().map(|value| value.as_str()), Some("order-42"));
    assert_eq!(*properties.delivery_mode(), Some(2), "persistent:true is delivery mode 2");
    assert_eq!(amqp_text_header(properties, "x-tenant").as_deref(), Some("acme"));
    for frame_header in ["destination", "receipt", "content-length"] {
        assert_eq!(amqp_text_header(properties, frame_header), None, "{frame_header} describes the frame only");
    }
    publisher.disconnect().await;
}

#[tokio::test]
async fn amqp_to_stomp_topic_with_properties() {
    let broker = Broker::start();
    let mut subscriber = stomp12(&broker, "amqp-to-stomp-subscriber").await;
    subscriber.subscribe("/topic/alerts.*", "alerts", "auto").await;
    let connection = connect(&broker).await;
    let channel = confirm_channel(&connection).await;

    // Two words after "alerts": not matched by `alerts.*`.
    publish_confirmed(&channel, TOPIC_EXCHANGE, "alerts.disk.full", b"not matched", BasicProperties::default()).await;
    let mut headers = FieldTable::default();
    headers.insert("x-origin".into(), AMQPValue::LongString("amqp".into()));
    let properties = BasicProperties::default()
        .with_content_type("text/plain".into())
        .with_correlation_id("alert-7".into())
        .with_delivery_mode(2)
        .with_headers(headers);
    publish_confirmed(&channel, TOPIC_EXCHANGE, "alerts.disk", b"disk almost full", properties).await;

    let message = subscriber.next_message().await;
    assert_eq!(message.body, b"disk almost full", "{message:?}");
    assert_eq!(message.header("destination"), Some("/topic/alerts.disk"), "{message:?}");
    assert_eq!(message.header("subscription"), Some("alerts"), "{message:?}");
    assert_eq!(message.header("content-type"), Some("text/plain"), "{message:?}");
    assert_eq!(message.header("correlation-id"), Some("alert-7"), "{message:?}");
    assert_eq!(message.header("persistent"), Some("true"), "{message:?}");
    assert_eq!(message.header("x-origin"), Some("amqp"), "{message:?}");
    assert_eq!(message.header("content-length"), Some("16"), "{message:?}");
    subscriber.disconnect().await;
}

#[tokio::test]
async fn exchange_destination_routes_through_amq_direct() {
    let broker = Broker::start();
    let mut subscriber = stomp12(&broker, "direct-subscriber").await;
    subscriber.subscribe("/exchange/amq.direct/invoices", "invoices", "auto").await;
    let connection = connect(&broker).await;
    let channel = confirm_channel(&connection).await;
    let queue = "from-stomp-direct";
    declare_queue(&channel, queue).await;
    bind(&channel, queue, DIRECT_EXCHANGE, "receipts").await;
    let mut consumer = consume(&channel, queue, "from-stomp-direct-consumer", no_ack()).await;
    let mut publisher = stomp12(&broker, "direct-publisher").await;

    // Another key: nobody is bound with it.
    publisher.send_confirmed("/exchange/amq.direct/orders", &[], b"wrong key").await;
    publisher.send_confirmed("/exchange/amq.direct/invoices", &[], b"from stomp").await;
    publish_confirmed(&channel, DIRECT_EXCHANGE, "invoices", b"from amqp", BasicProperties::default()).await;
    publisher.send_confirmed("/exchange/amq.direct/receipts", &[], b"stomp to amqp").await;

    for expected in ["from stomp", "from amqp"] {
        let message = subscriber.next_message().await;
        assert_eq!(message.body_text(), expected, "{message:?}");
        assert_eq!(message.header("destination"), Some("/exchange/amq.direct/invoices"), "{message:?}");
        assert_eq!(message.header("subscription"), Some("invoices"), "{message:?}");
    }
    let delivery = next_delivery(&mut consumer).await;
    assert_eq!(delivery.exchange.as_str(), DIRECT_EXCHANGE);
    assert_eq!(delivery.routing_key.as_str(), "receipts");
    assert_eq!(delivery.data, b"stomp to amqp");
    publisher.disconnect().await;
    subscriber.disconnect().await;
}

/// A receipt for a persistent SEND to a durable queue means the message is on disk: it
/// survives `kill -9` straight after the receipt.
#[tokio::test]
async fn a_persistent_send_receipt_means_the_message_survives_kill_9() {
    let broker = Broker::start();
    let mut client = stomp12(&broker, "durable-sender").await;
    for index in 0..50 {
        let body = format!("stored-{index:02}");
        client.send_confirmed("/queue/receipts", &[("persistent", "true")], body.as_bytes()).await;
    }
    // No pause: the last receipt has just arrived.
    let broker = broker.crash_and_restart();
    let connection = connect(&broker).await;
    let channel = open_channel(&connection).await;
    let bodies = common::drain_bodies(&channel, "receipts").await;
    let expected: Vec<String> = (0..50).map(|index| format!("stored-{index:02}")).collect();
    assert_eq!(bodies, expected);
}
