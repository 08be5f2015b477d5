//! One Redis client: a reader thread (this one) that parses and runs commands, and a writer
//! thread that drains a bounded queue of replies and pushed messages to the socket. Pushed
//! messages come from broker threads and must never block them: when a subscriber is too slow
//! for its queue to take more, it is disconnected, as Redis does with its pub/sub output limit.

use std::collections::BTreeMap;
use std::io::{ErrorKind, Read, Write};
use std::net::{Shutdown, TcpStream};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::mpsc::{sync_channel, Receiver};
use std::sync::Arc;
use std::time::{Duration, Instant};

use warren_plugin_api::{Denial, Level, Message, Session, SessionLogin};

use crate::codec::{self, ProtocolError, Version};
use crate::outbox::{self, Outbox, SharedStage};
use crate::Shared;

/// Bytes read from the socket at a time.
const READ_CHUNK_BYTES: usize = 16 * 1024;

/// A write that makes no progress for this long ends the connection (the broker's own
/// `write_timeout_ms` default).
const WRITE_TIMEOUT: Duration = Duration::from_secs(30);

/// A blocking pop waits in slices this long, checking between them that its client is still
/// there: a message must not be taken for a client that has gone.
const BLOCKING_SLICE: Duration = Duration::from_millis(500);

/// The exchange Redis channels ride, as MQTT topics and STOMP `/topic` do.
const TOPIC_EXCHANGE: &str = "amq.topic";

/// What `HELLO` reports as the server version: clients check it for features, and Redis 7's
/// replies are what this front-end gives.
const REDIS_VERSION: &str = "7.0.0";

enum Flow {
    Continue,
    Close,
}

/// A subscription: its handle in the broker, and where its pushes stand.
struct Subscription {
    id: u64,
    stage: SharedStage,
}

type Subscriptions = BTreeMap<String, Subscription>;

/// A command's size limits before the client has logged in, as Redis's for unauthenticated
/// clients: a stranger cannot make the server buffer much.
const UNAUTHENTICATED_ARGUMENTS_MAX: usize = 10;
const UNAUTHENTICATED_BULK_BYTES_MAX: usize = 16 * 1024;

struct Client {
    shared: Arc<Shared>,
    id: u64,
    peer: String,
    stream: TcpStream,
    out: Outbox,
    session: Option<Session>,
    version: Version,
    channels: Subscriptions,
    patterns: Subscriptions,
}

pub fn serve(stream: TcpStream, id: u64, shared: Arc<Shared>) {
    let peer = stream.peer_addr().map_or_else(|_| "0.0.0.0:0".into(), |address| address.to_string());
    let open = shared.open.fetch_add(1, Ordering::SeqCst) + 1;
    let result = if open > shared.config.connections_max {
        let mut reply = Vec::new();
        codec::error(&mut reply, "ERR max number of clients reached");
        let mut stream = stream;
        let _ = stream.write_all(&reply);
        Ok(())
    } else {
        run(stream, id, peer.clone(), &shared)
    };
    shared.open.fetch_sub(1, Ordering::SeqCst);
    shared.streams.lock().unwrap_or_else(|poisoned| poisoned.into_inner()).retain(|(stream_id, _)| *stream_id != id);
    if let Err(reason) = result {
        shared.host.log(Level::Warn, &format!("connection from {peer} closed: {reason}"));
    }
}

fn run(stream: TcpStream, id: u64, peer: String, shared: &Arc<Shared>) -> Result<(), String> {
    let _ = stream.set_nodelay(true);
    let writer_stream = stream.try_clone().map_err(|error| error.to_string())?;
    let socket = Arc::new(stream.try_clone().map_err(|error| error.to_string())?);
    shared.streams.lock().unwrap_or_else(|poisoned| poisoned.into_inner()).push((id, socket.clone()));
    let (sender, pending) = sync_channel(shared.config.pending_replies_max);
    let queued_bytes = Arc::new(AtomicUsize::new(0));
    let out = Outbox::new(sender, queued_bytes.clone(), socket, shared.config.pending_bytes_max);
    let writer = std::thread::Builder::new()
        .name(format!("resp-{id}-writer"))
        .spawn(move || write_loop(writer_stream, pending, queued_bytes))
        .map_err(|error| error.to_string())?;
    let mut client = Client {
        shared: shared.clone(),
        id,
        peer,
        stream,
        out,
        session: None,
        version: Version::Resp2,
        channels: Subscriptions::new(),
        patterns: Subscriptions::new(),
    };
    let result = client.read_loop();
    client.end_subscriptions();
    client.session = None;
    let _ = client.stream.shutdown(Shutdown::Read);
    drop(client);
    let _ = writer.join();
    result
}

fn write_loop(mut stream: TcpStream, pending: Receiver<Vec<u8>>, queued_bytes: Arc<AtomicUsize>) {
    let _ = stream.set_write_timeout(Some(WRITE_TIMEOUT));
    for chunk in pending {
        let written = stream.write_all(&chunk);
        queued_bytes.fetch_sub(chunk.len(), Ordering::SeqCst);
        if written.is_err() {
            break;
        }
    }
    let _ = stream.shutdown(Shutdown::Both);
}

impl Client {
    fn read_loop(&mut self) -> Result<(), String> {
        let mut buffer: Vec<u8> = Vec::with_capacity(READ_CHUNK_BYTES);
        let mut chunk = vec![0u8; READ_CHUNK_BYTES];
        loop {
            let read = match self.stream.read(&mut chunk) {
                Ok(0) => return Ok(()),
                Ok(read) => read,
                Err(error) if error.kind() == ErrorKind::Interrupted => continue,
                Err(_) => return Ok(()),
            };
            buffer.extend_from_slice(&chunk[..read]);
            let mut replies = Vec::new();
            let mut used = 0;
            loop {
                let (arguments_max, bulk_bytes_max) = self.command_limits();
                match codec::parse(&buffer[used..], arguments_max, bulk_bytes_max) {
                    Ok(Some((arguments, length))) => {
                        used += length;
                        if arguments.is_empty() {
                            continue;
                        }
                        if let Flow::Close = self.command(&arguments, &mut replies) {
                            self.send(replies);
                            return Ok(());
                        }
                    }
                    Ok(None) => break,
                    Err(error) => {
                        codec::error(&mut replies, &format!("ERR {error}"));
                        self.send(replies);
                        return Err(error_reason(&error));
                    }
                }
            }
            buffer.drain(..used);
            self.send(replies);
            // An incomplete command larger than any this client may send: refused before it
            // grows further (Redis's client-query-buffer-limit).
            if buffer.len() > self.query_bytes_max() {
                let mut reply = Vec::new();
                codec::error(&mut reply, "ERR Protocol error: query buffer too large");
                self.send(reply);
                return Err("query buffer too large".into());
            }
        }
    }

    fn logged_in(&self) -> bool {
        self.session.is_some() || self.shared.config.anonymous.is_some()
    }

    /// The most arguments and the largest bulk string this client may send now.
    fn command_limits(&self) -> (usize, usize) {
        if self.logged_in() {
            (codec::ARGUMENTS_MAX, self.shared.config.bulk_bytes_max)
        } else {
            (UNAUTHENTICATED_ARGUMENTS_MAX, UNAUTHENTICATED_BULK_BYTES_MAX)
        }
    }

    fn query_bytes_max(&self) -> usize {
        if self.logged_in() {
            self.shared.config.query_bytes_max
        } else {
            UNAUTHENTICATED_ARGUMENTS_MAX * (UNAUTHENTICATED_BULK_BYTES_MAX + 32)
        }
    }

    /// Queues replies for the writer, waiting if it is behind (the client is not reading).
    fn send(&self, replies: Vec<u8>) {
        self.out.send(replies);
    }

    fn command(&mut self, arguments: &[Vec<u8>], out: &mut Vec<u8>) -> Flow {
        let name = String::from_utf8_lossy(&arguments[0]).to_ascii_lowercase();
        let arguments = &arguments[1..];
        // RESP2 reserves a subscribed connection for pub/sub; RESP3 tells pushes apart.
        if self.version == Version::Resp2 && (!self.channels.is_empty() || !self.patterns.is_empty()) {
            let allowed = ["subscribe", "psubscribe", "unsubscribe", "punsubscribe", "ping", "quit", "reset"];
            if !allowed.contains(&name.as_str()) {
                codec::error(
                    out,
                    &format!(
                        "ERR Can't execute '{name}': only (P|S)SUBSCRIBE / (P|S)UNSUBSCRIBE / PING / QUIT / RESET are allowed in this context"
                    ),
                );
                return Flow::Continue;
            }
        }
        match name.as_str() {
            "ping" => self.ping(arguments, out),
            "echo" => echo(arguments, out),
            "quit" => {
                codec::simple(out, "OK");
                return Flow::Close;
            }
            "auth" => self.auth(arguments, out),
            "hello" => self.hello(arguments, out),
            "select" => select(arguments, out),
            "client" => self.client(arguments, out),
            "command" => codec::array(out, 0),
            "reset" => self.reset(out),
            _ => self.logged_in_command(&name, arguments, out),
        }
        Flow::Continue
    }

    /// Commands that need a session: opened by AUTH or HELLO, or anonymously if configured.
    fn logged_in_command(&mut self, name: &str, arguments: &[Vec<u8>], out: &mut Vec<u8>) {
        let known = [
            "publish",
            "subscribe",
            "psubscribe",
            "unsubscribe",
            "punsubscribe",
            "lpush",
            "rpush",
            "blpop",
            "brpop",
            "lpop",
            "rpop",
            "llen",
        ];
        if !known.contains(&name) {
            return unknown_command(name, arguments, out);
        }
        if self.session.is_none() && !self.log_in_anonymously(out) {
            return;
        }
        match name {
            "publish" => self.publish(arguments, out),
            "subscribe" => self.subscribe(arguments, out, false),
            "psubscribe" => self.subscribe(arguments, out, true),
            "unsubscribe" => self.unsubscribe(arguments, out, false),
            "punsubscribe" => self.unsubscribe(arguments, out, true),
            "lpush" | "rpush" => self.push(name, arguments, out),
            "blpop" | "brpop" => self.blocking_pop(name, arguments, out),
            "lpop" | "rpop" => self.pop(name, arguments, out),
            "llen" => self.length(arguments, out),
            _ => unknown_command(name, arguments, out),
        }
    }

    fn session(&self) -> &Session {
        self.session.as_ref().expect("commands that need a session run after log-in")
    }

    fn log_in_anonymously(&mut self, out: &mut Vec<u8>) -> bool {
        let Some(login) = self.shared.config.anonymous.clone() else {
            codec::error(out, "NOAUTH Authentication required.");
            return false;
        };
        self.log_in(&login.user, &login.password, out)
    }

    /// Opens a session; on failure writes Redis's WRONGPASS error.
    fn log_in(&mut self, user: &str, password: &str, out: &mut Vec<u8>) -> bool {
        if !self.channels.is_empty() || !self.patterns.is_empty() {
            // The subscriptions belong to the session being replaced; rather than drop them
            // silently, refuse.
            codec::error(out, "ERR AUTH while subscribed is not supported: UNSUBSCRIBE first");
            return false;
        }
        let login =
            SessionLogin { username: user, password, vhost: &self.shared.config.vhost, peer_address: &self.peer };
        match self.shared.host.open_session(&login) {
            Ok(session) => {
                self.end_subscriptions();
                self.session = Some(session);
                true
            }
            Err(Denial::Refused(reason)) => {
                self.shared.host.log(Level::Warn, &format!("login of {user} from {} refused: {reason}", self.peer));
                codec::error(out, "WRONGPASS invalid username-password pair or user is disabled.");
                false
            }
            Err(Denial::Failed(reason)) => {
                self.shared.host.log(Level::Warn, &format!("login of {user} from {} failed: {reason}", self.peer));
                codec::error(out, &format!("ERR {reason}"));
                false
            }
        }
    }

    fn auth(&mut self, arguments: &[Vec<u8>], out: &mut Vec<u8>) {
        let (user, password) = match arguments {
            [password] => (self.shared.config.default_user.clone(), text(password)),
            [user, password] => (text(user), text(password)),
            _ => return wrong_arguments("auth", out),
        };
        if self.log_in(&user, &password, out) {
            codec::simple(out, "OK");
        }
    }

    /// `HELLO [protover [AUTH username password] [SETNAME clientname]]`: RESP2 or RESP3.
    fn hello(&mut self, arguments: &[Vec<u8>], out: &mut Vec<u8>) {
        let version = match arguments.first().map(|version| text(version)).as_deref() {
            None => self.version,
            Some("2") => Version::Resp2,
            Some("3") => Version::Resp3,
            Some(_) => return codec::error(out, "NOPROTO sorry, this protocol version is not supported."),
        };
        let mut rest = arguments.iter().skip(1);
        while let Some(option) = rest.next() {
            match text(option).to_ascii_lowercase().as_str() {
                "auth" => {
                    let (Some(user), Some(password)) = (rest.next(), rest.next()) else {
                        return codec::error(out, "ERR Syntax error in HELLO option 'auth'");
                    };
                    if !self.log_in(&text(user), &text(password), out) {
                        return;
                    }
                }
                "setname" => {
                    rest.next();
                }
                other => return codec::error(out, &format!("ERR Syntax error in HELLO option '{other}'")),
            }
        }
        // The switch applies once HELLO has succeeded, starting with its own reply.
        self.version = version;
        codec::map(out, 7, version);
        for (key, value) in [("server", "redis"), ("version", REDIS_VERSION)] {
            codec::bulk(out, key.as_bytes());
            codec::bulk(out, value.as_bytes());
        }
        codec::bulk(out, b"proto");
        codec::integer(out, if version == Version::Resp3 { 3 } else { 2 });
        codec::bulk(out, b"id");
        codec::integer(out, i64::try_from(self.id).unwrap_or(i64::MAX));
        for (key, value) in [("mode", "standalone"), ("role", "master")] {
            codec::bulk(out, key.as_bytes());
            codec::bulk(out, value.as_bytes());
        }
        codec::bulk(out, b"modules");
        codec::array(out, 0);
    }

    fn ping(&self, arguments: &[Vec<u8>], out: &mut Vec<u8>) {
        let subscribed = self.version == Version::Resp2 && (!self.channels.is_empty() || !self.patterns.is_empty());
        match (arguments, subscribed) {
            ([], false) => codec::simple(out, "PONG"),
            ([message], false) => codec::bulk(out, message),
            ([], true) | ([_], true) => {
                codec::array(out, 2);
                codec::bulk(out, b"pong");
                codec::bulk(out, arguments.first().map_or(&[][..], Vec::as_slice));
            }
            _ => wrong_arguments("ping", out),
        }
    }

    fn client(&self, arguments: &[Vec<u8>], out: &mut Vec<u8>) {
        match arguments.first().map(|sub| text(sub).to_ascii_lowercase()).as_deref() {
            Some("setname") | Some("setinfo") => codec::simple(out, "OK"),
            Some("id") => codec::integer(out, i64::try_from(self.id).unwrap_or(i64::MAX)),
            Some(other) => codec::error(out, &format!("ERR unknown subcommand '{other}'. Try CLIENT HELP.")),
            None => wrong_arguments("client", out),
        }
    }

    /// As Redis's RESET: subscriptions end, the client is logged out, and RESP2 is back.
    fn reset(&mut self, out: &mut Vec<u8>) {
        self.end_subscriptions();
        self.session = None;
        self.version = Version::Resp2;
        codec::simple(out, "RESET");
    }

    fn publish(&self, arguments: &[Vec<u8>], out: &mut Vec<u8>) {
        let [channel, message] = arguments else { return wrong_arguments("publish", out) };
        let Some(channel) = utf8(channel, out) else { return };
        match self.session().publish(TOPIC_EXCHANGE, channel, message, false) {
            Ok(routed) => codec::integer(out, i64::from(routed)),
            Err(denial) => denied(&denial, out),
        }
    }

    fn subscribe(&mut self, arguments: &[Vec<u8>], out: &mut Vec<u8>, pattern: bool) {
        let command = if pattern { "psubscribe" } else { "subscribe" };
        if arguments.is_empty() {
            return wrong_arguments(command, out);
        }
        // Replies before this command go first; the confirmations below are queued in order
        // with the messages they let through.
        self.send(std::mem::take(out));
        for name in arguments {
            let Some(name) = utf8(name, out) else { continue };
            if let Err(reason) = check_key(name, pattern) {
                codec::error(out, &reason);
                continue;
            }
            let subscriptions = if pattern { &self.patterns } else { &self.channels };
            let mut confirmation = std::mem::take(out);
            codec::push(&mut confirmation, 3, self.version);
            codec::bulk(&mut confirmation, command.as_bytes());
            codec::bulk(&mut confirmation, name.as_bytes());
            if subscriptions.contains_key(name) {
                codec::integer(&mut confirmation, self.subscription_count());
                if !self.out.push(confirmation) {
                    return;
                }
                continue;
            }
            if self.channels.len() + self.patterns.len() >= self.shared.config.subscriptions_max {
                codec::error(out, "ERR too many subscriptions on this connection");
                continue;
            }
            // The subscribe call may ask an auth backend, so no lock the broker's delivery
            // threads need is held across it: early pushes wait in the stage instead.
            let stage = outbox::new_stage();
            let callback = self.callback(name, pattern, stage.clone());
            let id = match self.session().subscribe(TOPIC_EXCHANGE, name, callback) {
                Ok(id) => id,
                Err(denial) => {
                    denied(&denial, out);
                    continue;
                }
            };
            let subscriptions = if pattern { &mut self.patterns } else { &mut self.channels };
            subscriptions.insert(name.to_owned(), Subscription { id, stage: stage.clone() });
            codec::integer(&mut confirmation, self.subscription_count());
            if !outbox::confirm(&stage, &self.out, confirmation) {
                return;
            }
        }
    }

    /// The delivery callback of one subscription: encodes the push and hands it to the
    /// subscription's stage, never blocking the broker thread it runs on.
    fn callback(&self, name: &str, pattern: bool, stage: SharedStage) -> impl Fn(Message<'_>) + Send + Sync + 'static {
        let out = self.out.clone();
        let name = name.to_owned();
        let version = self.version;
        move |message: Message<'_>| {
            let mut push = Vec::with_capacity(message.body.len() + name.len() + 64);
            if pattern {
                codec::push(&mut push, 4, version);
                codec::bulk(&mut push, b"pmessage");
                codec::bulk(&mut push, name.as_bytes());
                codec::bulk(&mut push, message.routing_key.as_bytes());
            } else {
                codec::push(&mut push, 3, version);
                codec::bulk(&mut push, b"message");
                codec::bulk(&mut push, name.as_bytes());
            }
            codec::bulk(&mut push, message.body);
            outbox::deliver(&stage, &out, push);
        }
    }

    fn subscription_count(&self) -> i64 {
        i64::try_from(self.channels.len() + self.patterns.len()).unwrap_or(i64::MAX)
    }

    fn unsubscribe(&mut self, arguments: &[Vec<u8>], out: &mut Vec<u8>, pattern: bool) {
        let command = if pattern { "punsubscribe" } else { "unsubscribe" };
        let names: Vec<String> = if arguments.is_empty() {
            let subscriptions = if pattern { &self.patterns } else { &self.channels };
            subscriptions.keys().cloned().collect()
        } else {
            arguments.iter().map(|name| text(name)).collect()
        };
        if names.is_empty() {
            codec::push(out, 3, self.version);
            codec::bulk(out, command.as_bytes());
            codec::null_bulk(out, self.version);
            codec::integer(out, self.subscription_count());
            return;
        }
        for name in names {
            let subscriptions = if pattern { &mut self.patterns } else { &mut self.channels };
            if let Some(subscription) = subscriptions.remove(&name) {
                // Ended before the reply is queued: no late delivery can follow the reply.
                outbox::end(&subscription.stage);
                self.session().unsubscribe(subscription.id);
            }
            codec::push(out, 3, self.version);
            codec::bulk(out, command.as_bytes());
            codec::bulk(out, name.as_bytes());
            codec::integer(out, self.subscription_count());
        }
    }

    fn end_subscriptions(&mut self) {
        let ended: Vec<Subscription> = std::mem::take(&mut self.channels)
            .into_values()
            .chain(std::mem::take(&mut self.patterns).into_values())
            .collect();
        for subscription in &ended {
            outbox::end(&subscription.stage);
        }
        if let Some(session) = &self.session {
            for subscription in ended {
                session.unsubscribe(subscription.id);
            }
        }
    }

    /// `LPUSH`/`RPUSH key value...`: persistent messages on the durable queue `key`; the reply
    /// (the queue's length) comes once they are on disk.
    fn push(&self, name: &str, arguments: &[Vec<u8>], out: &mut Vec<u8>) {
        let [key, values @ ..] = arguments else { return wrong_arguments(name, out) };
        if values.is_empty() {
            return wrong_arguments(name, out);
        }
        let Some(key) = utf8(key, out) else { return };
        let session = self.session();
        let before = match session.declare_queue(key, true) {
            Ok(length) => i64::from(length),
            Err(denial) => return denied(&denial, out),
        };
        for value in values {
            if let Err(denial) = session.publish("", key, value, true) {
                return denied(&denial, out);
            }
        }
        // The length just after the push, as Redis answers even when a blocked client takes
        // the value at once.
        codec::integer(out, before + i64::try_from(values.len()).unwrap_or(i64::MAX));
    }

    /// `LPOP`/`RPOP key`: the head of the queue, or nil.
    fn pop(&self, name: &str, arguments: &[Vec<u8>], out: &mut Vec<u8>) {
        let [key] = arguments else { return wrong_arguments(name, out) };
        let Some(key) = utf8(key, out) else { return };
        let session = self.session();
        if let Err(denial) = session.declare_queue(key, true) {
            return denied(&denial, out);
        }
        match session.get(&[key], Duration::ZERO) {
            Ok(Some(message)) => codec::bulk(out, &message.body),
            Ok(None) => codec::null_bulk(out, self.version),
            Err(denial) => denied(&denial, out),
        }
    }

    /// `BLPOP`/`BRPOP key [key ...] timeout`: the first message of the first queue to have one,
    /// as `[key, value]`, or a nil array when the timeout (seconds; 0 for ever) passes.
    fn blocking_pop(&mut self, name: &str, arguments: &[Vec<u8>], out: &mut Vec<u8>) {
        let [keys @ .., timeout] = arguments else { return wrong_arguments(name, out) };
        if keys.is_empty() {
            return wrong_arguments(name, out);
        }
        let Some(timeout) = std::str::from_utf8(timeout).ok().and_then(|text| text.parse::<f64>().ok()) else {
            return codec::error(out, "ERR timeout is not a float or out of range");
        };
        if !(0.0..=1e9).contains(&timeout) {
            return codec::error(out, "ERR timeout is negative");
        }
        let mut names = Vec::with_capacity(keys.len());
        for key in keys {
            let Some(key) = utf8(key, out) else { return };
            if let Err(denial) = self.session().declare_queue(key, true) {
                return denied(&denial, out);
            }
            names.push(key);
        }
        // Earlier replies go out before this one blocks.
        self.send(std::mem::take(out));
        let deadline = (timeout > 0.0).then(|| Instant::now() + Duration::from_secs_f64(timeout));
        loop {
            let slice = deadline.map_or(BLOCKING_SLICE, |deadline| {
                deadline.saturating_duration_since(Instant::now()).min(BLOCKING_SLICE)
            });
            match self.session().get(&names, slice) {
                Ok(Some(message)) => {
                    codec::array(out, 2);
                    codec::bulk(out, message.queue.as_bytes());
                    codec::bulk(out, &message.body);
                    return;
                }
                Ok(None) => {}
                Err(denial) => return denied(&denial, out),
            }
            if deadline.is_some_and(|deadline| Instant::now() >= deadline) {
                return codec::null_array(out, self.version);
            }
            if !self.client_still_there() {
                return;
            }
        }
    }

    /// Whether the client has not closed its side: a peek that finds end-of-stream says it has.
    fn client_still_there(&self) -> bool {
        if self.stream.set_read_timeout(Some(Duration::from_millis(1))).is_err() {
            return false;
        }
        let mut byte = [0u8; 1];
        let there = match self.stream.peek(&mut byte) {
            Ok(0) => false,
            Ok(_) => true,
            Err(error) => matches!(error.kind(), ErrorKind::WouldBlock | ErrorKind::TimedOut | ErrorKind::Interrupted),
        };
        let _ = self.stream.set_read_timeout(None);
        there
    }

    fn length(&self, arguments: &[Vec<u8>], out: &mut Vec<u8>) {
        let [key] = arguments else { return wrong_arguments("llen", out) };
        let Some(key) = utf8(key, out) else { return };
        match self.session().declare_queue(key, true) {
            Ok(length) => codec::integer(out, i64::from(length)),
            Err(denial) => denied(&denial, out),
        }
    }
}

fn echo(arguments: &[Vec<u8>], out: &mut Vec<u8>) {
    match arguments {
        [message] => codec::bulk(out, message),
        _ => wrong_arguments("echo", out),
    }
}

fn select(arguments: &[Vec<u8>], out: &mut Vec<u8>) {
    match arguments {
        [index] if text(index) == "0" => codec::simple(out, "OK"),
        [_] => codec::error(out, "ERR DB index is out of range"),
        _ => wrong_arguments("select", out),
    }
}

/// A channel must be a plain routing key (no `*` or `#` word, which would make it a pattern);
/// a pattern must be an AMQP topic pattern, not a Redis glob.
fn check_key(name: &str, pattern: bool) -> Result<(), String> {
    for word in name.split('.') {
        let wildcard = word == "*" || word == "#";
        if !pattern && wildcard {
            return Err(format!("ERR channel '{name}' has a '{word}' word, which only patterns may: use PSUBSCRIBE"));
        }
        if pattern && !wildcard && word.contains(['*', '?', '[', ']', '#']) {
            return Err(format!(
                "ERR pattern '{name}' is not an AMQP topic pattern: '*' stands for one word and '#' for any number"
            ));
        }
    }
    Ok(())
}

fn text(bytes: &[u8]) -> String {
    String::from_utf8_lossy(bytes).into_owned()
}

fn utf8<'a>(bytes: &'a [u8], out: &mut Vec<u8>) -> Option<&'a str> {
    let text = std::str::from_utf8(bytes).ok();
    if text.is_none() {
        codec::error(out, "ERR keys and channels must be UTF-8");
    }
    text
}

fn wrong_arguments(command: &str, out: &mut Vec<u8>) {
    codec::error(out, &format!("ERR wrong number of arguments for '{command}' command"));
}

fn denied(denial: &Denial, out: &mut Vec<u8>) {
    let (Denial::Refused(reason) | Denial::Failed(reason)) = denial;
    codec::error(out, &format!("ERR {reason}"));
}

/// Redis's wording, with the first arguments quoted.
fn unknown_command(name: &str, arguments: &[Vec<u8>], out: &mut Vec<u8>) {
    let mut quoted = String::new();
    for argument in arguments.iter().take(8) {
        quoted.push_str(&format!("'{}' ", String::from_utf8_lossy(argument)));
    }
    codec::error(out, &format!("ERR unknown command '{name}', with args beginning with: {quoted}"));
}

fn error_reason(error: &ProtocolError) -> String {
    error.to_string()
}
