//! One AMQP connection: the handshake, the read loop, frame routing to channels, heartbeats and
//! the close handshakes.
//!
//! Two tasks serve a connection. This one owns the read half and all state: it decodes every
//! complete frame in a read, acts on them, drains the session inbox, and hands the bytes it
//! produced to the writer task as one chunk. The writer owns the write half. The channel between
//! them is bounded, so a peer that stops reading makes this task stop reading too.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicU16, Ordering};
use std::sync::Arc;
use std::time::Duration;

use bytes::{Bytes, BytesMut};
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tokio::sync::{mpsc, watch};
use tokio::time::Instant;
use tracing::{debug, info, warn};
use warren_core::auth::{Access, Credentials, Permission, Principal, ResourceKind};
use warren_core::journal::{self, Lsn, SyncState};
use warren_core::name::{ConnectionId, ConsumerId, ConsumerTag, UserName, VhostName};
use warren_core::value::{Table, Value};
use warren_core::{Broker, Inbox, Vhost};

use crate::channel::{Channel, ChannelState, Pending};
use crate::codec::methods::{basic, channel, connection, tx};
use crate::codec::{self, CodecError, Frame, Method, FRAME_MIN_BYTES, PROTOCOL_HEADER};
use crate::error::{code, Close, Scope};

/// Limits and timeouts of the AMQP listener.
#[derive(Clone, Debug)]
pub struct AmqpConfig {
    /// The largest frame we accept and propose in tune, overhead included: RabbitMQ's 128 KiB.
    pub frame_bytes_max: u32,
    /// The most channels per connection: RabbitMQ's default 2047.
    pub channel_max: u16,
    /// The heartbeat interval we propose, in seconds: RabbitMQ's default 60.
    pub heartbeat_seconds: u16,
    /// How long a client has to finish the handshake: RabbitMQ's 10 s.
    pub handshake_timeout: Duration,
    /// How long a delivery may stay unacknowledged before its channel is closed (406), as
    /// RabbitMQ's `consumer_timeout`: 30 minutes by default; `None` disables it.
    pub consumer_timeout: Option<Duration>,
    /// How long a write may stall (a client that stopped reading) before the connection is
    /// closed.
    pub write_timeout: Duration,
}

impl Default for AmqpConfig {
    fn default() -> Self {
        AmqpConfig {
            frame_bytes_max: 131_072,
            channel_max: 2047,
            heartbeat_seconds: 60,
            handshake_timeout: Duration::from_secs(10),
            consumer_timeout: Some(Duration::from_secs(30 * 60)),
            write_timeout: warren_net::WRITE_TIMEOUT_DEFAULT,
        }
    }
}

/// Encoded bytes the reader may queue for the writer before it stops reading: a few batches.
const WRITE_QUEUE_CHUNKS: usize = 8;
/// Bytes read per socket read.
const READ_CHUNK_BYTES: usize = 64 * 1024;
/// Output produced by one batch of input before the batch pauses for the writer.
const OUTPUT_BATCH_BYTES_MAX: usize = 1024 * 1024;
/// How long to wait for the peer's connection.close-ok before hanging up. Some clients (lapin)
/// never send it, so this must stay short.
const CLOSE_OK_TIMEOUT: Duration = Duration::from_secs(1);

/// Where the connection is in its life.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Phase {
    AwaitStartOk,
    AwaitTuneOk,
    AwaitOpen,
    Open,
    /// We sent connection.close and wait for close-ok (or the deadline).
    Closing,
    /// Done: flush and hang up.
    Finished,
}

/// The state of one connection, owned by its reader task.
pub struct Connection {
    pub(crate) id: ConnectionId,
    pub(crate) broker: Arc<Broker>,
    config: Arc<AmqpConfig>,
    peer: SocketAddr,
    phase: Phase,
    pub(crate) principal: Option<Principal>,
    pub(crate) vhost: Option<Arc<Vhost>>,
    /// The user's resource permissions in the vhost, with the answers seen so far.
    access: Option<Arc<Access>>,
    pub(crate) channels: HashMap<u16, Channel>,
    /// Which channel and tag each of our consumers belongs to.
    pub(crate) consumers: HashMap<ConsumerId, (u16, ConsumerTag)>,
    next_consumer: u64,
    pub(crate) inbox: Arc<Inbox>,
    /// Exclusive queues this connection declared, deleted when it closes.
    pub(crate) exclusive_queues: Vec<Arc<warren_core::Queue>>,
    /// Bytes to send, handed to the writer after each batch of work.
    pub(crate) out: BytesMut,
    pub(crate) frame_bytes_max: u32,
    channel_max: u16,
    /// Negotiated heartbeat in seconds, shared with the writer; 0 disables heartbeats.
    heartbeat_seconds: Arc<AtomicU16>,
    /// Whether the client handles basic.cancel from the broker.
    pub(crate) cancel_notify: bool,
    close_deadline: Option<Instant>,
    /// A queue that was full after our last publish to it: until it has room again we read
    /// nothing more from the socket, so TCP pushes back on the publisher.
    pub(crate) paused_on: Option<Arc<warren_core::Queue>>,
    /// Whether the client handles connection.blocked, sent while we are paused.
    blocked_notify: bool,
    /// Whether complete frames may be waiting in the read buffer.
    input_backlog: bool,
    /// Set once we answered the peer's connection.close: the peer hangs up first, and we wait
    /// for that before closing our side.
    peer_closes_first: bool,
    /// The message store's sync progress, when the broker has a store.
    sync: Option<watch::Receiver<SyncState>>,
    /// Some channel has outcomes waiting for the store to sync.
    pub(crate) awaiting_sync: bool,
}

/// Serves one client connection until it closes.
pub async fn serve<S>(stream: S, peer: SocketAddr, broker: Arc<Broker>, config: Arc<AmqpConfig>)
where
    S: AsyncRead + AsyncWrite + Send + 'static,
{
    let (mut reader, writer) = tokio::io::split(stream);
    let (chunks, chunk_receiver) = mpsc::channel(WRITE_QUEUE_CHUNKS);
    let heartbeat_seconds = Arc::new(AtomicU16::new(0));
    let writer_task = tokio::spawn(write_loop(writer, chunk_receiver, heartbeat_seconds.clone(), config.write_timeout));
    let mut connection = Connection::new(peer, broker, config, heartbeat_seconds);
    let reason = connection.run(&mut reader, &chunks).await;
    connection.release();
    drop(chunks);
    let writer = writer_task.await.ok().flatten();
    if connection.peer_closes_first {
        linger(&mut reader).await;
    }
    if let Some(mut writer) = writer {
        let _ = writer.shutdown().await;
    }
    info!(connection = connection.id.0, %peer, reason, "connection closed");
}

impl Connection {
    fn new(
        peer: SocketAddr,
        broker: Arc<Broker>,
        config: Arc<AmqpConfig>,
        heartbeat_seconds: Arc<AtomicU16>,
    ) -> Connection {
        let inbox = Inbox::new(broker.config().inbox_capacity);
        let sync = broker.journal().map(|journal| journal.sync_state());
        Connection {
            sync,
            awaiting_sync: false,
            id: broker.next_connection_id(),
            broker,
            peer,
            phase: Phase::AwaitStartOk,
            principal: None,
            vhost: None,
            access: None,
            channels: HashMap::new(),
            consumers: HashMap::new(),
            next_consumer: 1,
            inbox,
            exclusive_queues: Vec::new(),
            out: BytesMut::with_capacity(READ_CHUNK_BYTES),
            frame_bytes_max: config.frame_bytes_max,
            channel_max: config.channel_max,
            heartbeat_seconds,
            cancel_notify: false,
            close_deadline: None,
            peer_closes_first: false,
            paused_on: None,
            blocked_notify: false,
            input_backlog: false,
            config,
        }
    }

    /// Runs the connection; returns why it ended.
    async fn run<R>(&mut self, reader: &mut R, chunks: &mpsc::Sender<Bytes>) -> &'static str
    where
        R: AsyncRead + Unpin,
    {
        let mut buffer = BytesMut::with_capacity(READ_CHUNK_BYTES);
        if let Err(reason) = self.read_protocol_header(reader, &mut buffer, chunks).await {
            return reason;
        }
        self.send_start();
        let handshake_deadline = Instant::now() + self.config.handshake_timeout;
        let mut last_read = Instant::now();
        let mut heartbeat_check = tokio::time::interval(Duration::from_secs(1));
        let shutdown = self.broker.shutdown().clone();
        let inbox = self.inbox.clone();
        loop {
            if !self.flush(chunks).await {
                return "writer closed";
            }
            if self.phase == Phase::Finished {
                return "closed";
            }
            let open = self.phase == Phase::Open;
            let closing_deadline = self.close_deadline.unwrap_or(handshake_deadline);
            let draining = self.vhost.is_some() && self.phase != Phase::Closing;
            let paused = self.paused_on.clone();
            // Frames left in the buffer because the last batch filled the output.
            let backlog = self.input_backlog && paused.is_none() && self.phase != Phase::Finished;
            if buffer.capacity() - buffer.len() < READ_CHUNK_BYTES / 4 {
                buffer.reserve(READ_CHUNK_BYTES);
            }
            tokio::select! {
                biased;
                // The writer gave up (the client stopped reading): end, even with nothing to send.
                _ = chunks.closed() => return "writer closed",
                _ = shutdown.cancelled(), if self.phase == Phase::Open => {
                    self.begin_close(Close::connection(
                        code::CONNECTION_FORCED,
                        "broker forced connection closure with reason 'shutdown'",
                    ));
                }
                _ = wait_for_room(paused.as_deref()), if paused.is_some() => {
                    self.unpause();
                    last_read = Instant::now();
                    self.process(&mut buffer).await;
                }
                // Before reading: a client that never pauses must still get its confirms.
                changed = journal::changed(self.sync.as_mut()), if self.awaiting_sync => match changed {
                    Ok(()) => self.release_synced(),
                    Err(_) => return "message store stopped",
                },
                _ = std::future::ready(()), if backlog => self.process(&mut buffer).await,
                read = reader.read_buf(&mut buffer), if paused.is_none() && !backlog => match read {
                    Ok(0) => return "peer closed the socket",
                    Ok(_) => {
                        last_read = Instant::now();
                        self.process(&mut buffer).await;
                        // A connection that publishes without pause must still serve its own
                        // consumers.
                        if draining {
                            self.drain_inbox();
                        }
                    }
                    Err(_) => return "read error",
                },
                _ = inbox.ready(), if draining => self.drain_inbox(),
                _ = tokio::time::sleep_until(closing_deadline), if !open => {
                    if self.phase == Phase::Closing {
                        return "close handshake timed out";
                    }
                    warn!(connection = self.id.0, peer = %self.peer, "handshake timed out");
                    return "handshake timeout";
                }
                _ = heartbeat_check.tick() => {
                    self.enforce_consumer_timeout();
                    // A paused connection is silent because we stopped reading it.
                    if self.paused_on.is_none() && self.missed_heartbeats(last_read) {
                        warn!(connection = self.id.0, peer = %self.peer, "missed heartbeats from client");
                        return "missed heartbeats";
                    }
                }
            }
        }
    }

    /// Closes (406) every channel holding a delivery unacknowledged for longer than the consumer
    /// timeout. The oldest delivery is at the front of each unacked list.
    fn enforce_consumer_timeout(&mut self) {
        let Some(timeout) = self.config.consumer_timeout else { return };
        let now = Instant::now();
        let late: Vec<u16> = self
            .channels
            .values()
            .filter(|channel| channel.state == ChannelState::Open)
            .filter(|channel| channel.unacked.front().is_some_and(|oldest| now - oldest.delivered_at > timeout))
            .map(|channel| channel.id)
            .collect();
        for channel_id in late {
            let detail = format!(
                "delivery acknowledgement on channel {channel_id} timed out. Timeout value used: {} ms. This \
                 timeout value can be configured, see consumers doc guide to learn more",
                timeout.as_millis()
            );
            warn!(connection = self.id.0, channel = channel_id, "consumer timeout");
            self.fail(channel_id, Close::channel(code::PRECONDITION_FAILED, detail));
        }
    }

    fn missed_heartbeats(&self, last_read: Instant) -> bool {
        let seconds = self.heartbeat_seconds.load(Ordering::Relaxed);
        // As RabbitMQ does: two silent intervals mean the peer is gone.
        seconds != 0 && last_read.elapsed() > Duration::from_secs(u64::from(seconds) * 2)
    }

    /// Reads and checks the 8-byte protocol header. On a mismatch, answers with ours and fails,
    /// as the spec asks.
    async fn read_protocol_header<R>(
        &mut self,
        reader: &mut R,
        buffer: &mut BytesMut,
        chunks: &mpsc::Sender<Bytes>,
    ) -> Result<(), &'static str>
    where
        R: AsyncRead + Unpin,
    {
        let deadline = Instant::now() + self.config.handshake_timeout;
        while buffer.len() < PROTOCOL_HEADER.len() {
            match tokio::time::timeout_at(deadline, reader.read_buf(buffer)).await {
                Err(_) => return Err("handshake timeout"),
                Ok(Ok(0)) | Ok(Err(_)) => return Err("closed before the protocol header"),
                Ok(Ok(_)) => {}
            }
        }
        let header = buffer.split_to(PROTOCOL_HEADER.len());
        if &header[..] != PROTOCOL_HEADER {
            warn!(connection = self.id.0, peer = %self.peer, header = ?&header[..], "bad protocol header");
            let _ = chunks.send(Bytes::from_static(PROTOCOL_HEADER)).await;
            return Err("bad protocol header");
        }
        Ok(())
    }

    /// Hands pending output to the writer; false if the writer is gone.
    async fn flush(&mut self, chunks: &mpsc::Sender<Bytes>) -> bool {
        if self.out.is_empty() {
            return true;
        }
        let chunk = self.out.split().freeze();
        chunks.send(chunk).await.is_ok()
    }

    /// Decodes and handles every complete frame in the buffer.
    async fn process(&mut self, buffer: &mut BytesMut) {
        self.input_backlog = false;
        while !matches!(self.phase, Phase::Finished) && self.paused_on.is_none() {
            if self.out.len() >= OUTPUT_BATCH_BYTES_MAX {
                // Hand this output to the writer before producing more (pipelined basic.get
                // could otherwise grow it without bound); the rest is handled next turn.
                self.input_backlog = true;
                break;
            }
            let frame_max = self.frame_bytes_max;
            match codec::decode(buffer, frame_max) {
                Ok(Some(frame)) => self.handle_frame(frame).await,
                Ok(None) => break,
                Err(error) => {
                    self.codec_error(error, buffer);
                    break;
                }
            }
        }
        self.send_pending_confirms();
    }

    fn codec_error(&mut self, error: CodecError, buffer: &mut BytesMut) {
        warn!(connection = self.id.0, peer = %self.peer, %error, "malformed frame");
        // The stream can no longer be framed reliably: drop what is buffered.
        buffer.clear();
        if self.phase == Phase::Closing {
            self.phase = Phase::Finished;
            return;
        }
        self.begin_close(Close::from(error));
    }

    async fn handle_frame(&mut self, frame: Frame) {
        match frame {
            Frame::Heartbeat => {}
            Frame::Method { channel: 0, method } => self.connection_method(method).await,
            Frame::Method { channel, method } => {
                if let Err(close) = self.authorize(channel, &method).await {
                    return self.fail(channel, close.during(method.id()));
                }
                self.channel_frame(channel, ChannelFrame::Method(method))
            }
            Frame::Header { channel, body_size, properties, .. } => {
                self.channel_frame(channel, ChannelFrame::Header(body_size, properties))
            }
            Frame::Body { channel, payload } => self.channel_frame(channel, ChannelFrame::Body(payload)),
        }
    }

    /// Checks the permissions a method on an open channel needs, before it runs.
    async fn authorize(&mut self, channel_id: u16, method: &Method) -> Result<(), Close> {
        let Some(access) = self.access.clone() else { return Ok(()) };
        let Some(channel) = self.channels.get(&channel_id).filter(|channel| channel.state == ChannelState::Open) else {
            return Ok(());
        };
        if let Method::BasicPublish(publish) = method {
            if channel.publish_authorized.as_deref() == Some(publish.exchange.as_str()) {
                return Ok(());
            }
            let write = (ResourceKind::Exchange, publish.exchange.as_str(), Permission::Write);
            access.check(write.0, write.1, write.2).await.map_err(Close::from)?;
            if let Some(channel) = self.channels.get_mut(&channel_id) {
                channel.publish_authorized = Some(publish.exchange.clone());
            }
            return Ok(());
        }
        for (kind, name, permission) in crate::authorize::required(method, channel.last_queue.as_ref()) {
            access.check(kind, &name, permission).await.map_err(Close::from)?;
        }
        Ok(())
    }

    async fn connection_method(&mut self, method: Method) {
        let result = match (self.phase, method) {
            (Phase::AwaitStartOk, Method::ConnectionStartOk(start_ok)) => self.start_ok(start_ok).await,
            (Phase::AwaitTuneOk, Method::ConnectionTuneOk(tune_ok)) => self.tune_ok(tune_ok),
            (Phase::AwaitOpen, Method::ConnectionOpen(open)) => self.open(open).await,
            (Phase::Closing, Method::ConnectionCloseOk(_)) => {
                self.phase = Phase::Finished;
                Ok(())
            }
            (Phase::Closing, Method::ConnectionClose(_)) => {
                self.send(0, Method::ConnectionCloseOk(connection::CloseOk {}));
                self.phase = Phase::Finished;
                Ok(())
            }
            (Phase::Closing, _) => Ok(()),
            (_, Method::ConnectionClose(close)) => self.peer_close(close),
            (Phase::Open, Method::ConnectionBlocked(_) | Method::ConnectionUnblocked(_)) => Ok(()),
            (_, method) => Err(Close::connection(
                code::COMMAND_INVALID,
                format!("unexpected method {} on channel 0", method.name()),
            )
            .during(method.id())),
        };
        if let Err(close) = result {
            self.fail(0, close);
        }
    }

    fn send_start(&mut self) {
        let start = connection::Start {
            version_major: 0,
            version_minor: 9,
            server_properties: self.server_properties(),
            mechanisms: Bytes::from_static(b"PLAIN AMQPLAIN"),
            locales: Bytes::from_static(b"en_US"),
        };
        self.send(0, Method::ConnectionStart(start));
    }

    /// Server properties as RabbitMQ advertises them, with only the capabilities we implement.
    fn server_properties(&self) -> Table {
        let mut capabilities = Table::new();
        for capability in [
            "publisher_confirms",
            "basic.nack",
            "consumer_cancel_notify",
            "authentication_failure_close",
            "per_consumer_qos",
            "exchange_exchange_bindings",
            "connection.blocked",
        ] {
            capabilities.insert(capability, Value::Bool(true));
        }
        let config = self.broker.config();
        let mut properties = Table::new();
        properties.insert("capabilities", Value::Table(capabilities));
        properties.insert("cluster_name", Value::string("warren"));
        properties.insert("product", Value::string(&config.product));
        properties.insert("version", Value::string(&config.version));
        properties.insert("platform", Value::string("Rust"));
        properties.insert("copyright", Value::string("Warren contributors"));
        properties.insert("information", Value::string("Licensed under the Apache License 2.0"));
        properties
    }

    async fn start_ok(&mut self, start_ok: connection::StartOk) -> Result<(), Close> {
        self.cancel_notify = client_capability(&start_ok.client_properties, "consumer_cancel_notify");
        self.blocked_notify = client_capability(&start_ok.client_properties, "connection.blocked");
        let (username, password) = credentials(&start_ok.mechanism, &start_ok.response).ok_or_else(|| {
            Close::connection(code::ACCESS_REFUSED, format!("{} login was refused", start_ok.mechanism))
        })?;
        let credentials = Credentials { username: UserName::new(&username), password, peer: self.peer };
        match self.broker.authenticate(&credentials).await {
            Ok(principal) => self.principal = Some(principal),
            Err(error) => {
                warn!(connection = self.id.0, peer = %self.peer, user = %username, %error, "login refused");
                return Err(Close::connection(
                    code::ACCESS_REFUSED,
                    format!(
                        "Login was refused using authentication mechanism {}. For details see the broker logfile.",
                        start_ok.mechanism
                    ),
                ));
            }
        }
        self.phase = Phase::AwaitTuneOk;
        let tune = connection::Tune {
            channel_max: self.config.channel_max,
            frame_max: self.config.frame_bytes_max,
            heartbeat: self.config.heartbeat_seconds,
        };
        self.send(0, Method::ConnectionTune(tune));
        Ok(())
    }

    fn tune_ok(&mut self, tune_ok: connection::TuneOk) -> Result<(), Close> {
        self.channel_max = negotiate(self.config.channel_max, tune_ok.channel_max);
        let frame_max = negotiate(self.config.frame_bytes_max, tune_ok.frame_max);
        if frame_max < FRAME_MIN_BYTES {
            return Err(Close::connection(
                code::NOT_ALLOWED,
                format!("frame_max={frame_max} < {FRAME_MIN_BYTES} min size"),
            ));
        }
        self.frame_bytes_max = frame_max;
        self.heartbeat_seconds.store(tune_ok.heartbeat, Ordering::Relaxed);
        self.phase = Phase::AwaitOpen;
        Ok(())
    }

    async fn open(&mut self, open: connection::Open) -> Result<(), Close> {
        let principal = self.principal.clone().expect("authenticated before open");
        let name = VhostName::new(&open.virtual_host);
        let vhost = self.broker.open_vhost(&principal, &name).await.map_err(Close::from)?;
        self.vhost = Some(vhost);
        self.access = Some(self.broker.access(&principal, &name));
        self.phase = Phase::Open;
        info!(connection = self.id.0, peer = %self.peer, user = %principal.user, vhost = %name, "connection open");
        self.send(0, Method::ConnectionOpenOk(connection::OpenOk { known_hosts: String::new() }));
        Ok(())
    }

    fn peer_close(&mut self, close: connection::Close) -> Result<(), Close> {
        debug!(connection = self.id.0, code = close.reply_code, text = %close.reply_text, "client closed connection");
        self.send(0, Method::ConnectionCloseOk(connection::CloseOk {}));
        self.phase = Phase::Finished;
        self.peer_closes_first = true;
        Ok(())
    }

    /// Routes a channel's frame, enforcing the channel life cycle.
    fn channel_frame(&mut self, channel_id: u16, frame: ChannelFrame) {
        if self.phase == Phase::Closing {
            return;
        }
        if self.phase != Phase::Open {
            let close = Close::connection(code::CHANNEL_ERROR, "channel frame before the connection is open");
            return self.fail(channel_id, close);
        }
        let state = self.channels.get(&channel_id).map(|channel| channel.state);
        let result = match (state, frame) {
            (None, ChannelFrame::Method(Method::ChannelOpen(_))) => self.open_channel(channel_id),
            (None, _) => Err(Close::connection(code::CHANNEL_ERROR, format!("channel {channel_id} is not open"))),
            (Some(ChannelState::Closing), ChannelFrame::Method(Method::ChannelCloseOk(_))) => {
                self.channels.remove(&channel_id);
                Ok(())
            }
            (Some(ChannelState::Closing), ChannelFrame::Method(Method::ChannelClose(_))) => {
                self.close_channel(channel_id);
                Ok(())
            }
            (Some(ChannelState::Closing), _) => Ok(()),
            (Some(ChannelState::Open), ChannelFrame::Method(method)) => self.channel_method(channel_id, method),
            (Some(ChannelState::Open), ChannelFrame::Header(body_size, properties)) => {
                self.content_header(channel_id, body_size, properties)
            }
            (Some(ChannelState::Open), ChannelFrame::Body(payload)) => self.content_body(channel_id, payload),
        };
        if let Err(close) = result {
            self.fail(channel_id, close);
        }
    }

    fn open_channel(&mut self, channel_id: u16) -> Result<(), Close> {
        if channel_id > self.channel_max {
            return Err(Close::connection(
                code::CHANNEL_ERROR,
                format!("channel {channel_id} exceeds channel_max {}", self.channel_max),
            ));
        }
        self.channels.insert(channel_id, Channel::new(channel_id));
        self.send(channel_id, Method::ChannelOpenOk(channel::OpenOk { channel_id: Bytes::new() }));
        Ok(())
    }

    /// The peer closed a channel: release it and confirm.
    pub(crate) fn close_channel(&mut self, channel_id: u16) {
        self.release_channel(channel_id);
        self.channels.remove(&channel_id);
        self.send(channel_id, Method::ChannelCloseOk(channel::CloseOk {}));
    }

    /// Detaches a channel's consumers and requeues its unacked deliveries.
    fn release_channel(&mut self, channel_id: u16) {
        let Some(channel) = self.channels.get_mut(&channel_id) else {
            return;
        };
        let vhost = self.vhost.as_ref().expect("channels exist only on open connections");
        for consumer in channel.release(vhost) {
            self.consumers.remove(&consumer);
        }
        channel.publish = None;
    }

    /// Reports an error: closes the channel or the whole connection.
    pub(crate) fn fail(&mut self, channel_id: u16, close: Close) {
        match close.scope {
            Scope::Channel if channel_id != 0 => self.fail_channel(channel_id, close),
            _ => self.begin_close(close),
        }
    }

    fn fail_channel(&mut self, channel_id: u16, close: Close) {
        debug!(connection = self.id.0, channel = channel_id, code = close.code, text = %close.text, "closing channel");
        // Publishes routed before the error are confirmed before the close, unless they wait
        // for the store: those are dropped with the channel, unconfirmed, as the client expects
        // of a closed channel.
        self.send_pending_confirm(channel_id);
        self.release_channel(channel_id);
        if let Some(channel) = self.channels.get_mut(&channel_id) {
            channel.state = ChannelState::Closing;
        }
        let method = Method::ChannelClose(channel::Close {
            reply_code: close.code,
            reply_text: close.reply_text(),
            class_id: close.method.0,
            method_id: close.method.1,
        });
        self.send(channel_id, method);
    }

    /// Where a record appended at `lsn` stands in the store.
    pub(crate) fn sync_outcome(&self, lsn: Lsn) -> Option<bool> {
        self.sync.as_ref().map_or(Some(true), |sync| sync.borrow().outcome(lsn))
    }

    /// Sends `outcome` now, or once `lsn` is synced and the outcomes before it have gone.
    pub(crate) fn send_after_sync(&mut self, channel_id: u16, lsn: Option<Lsn>, outcome: Pending) {
        let synced = lsn.is_none_or(|lsn| self.sync_outcome(lsn) == Some(true));
        let channel = self.channel_mut(channel_id);
        if synced && channel.pending.is_empty() {
            self.send_outcome(channel_id, outcome, true);
        } else {
            channel.pending.push(lsn, outcome);
            self.awaiting_sync = true;
        }
    }

    /// The store synced further (or failed): sends, in order, every waiting outcome it covers.
    /// Consecutive confirms go out as one multiple-ack.
    fn release_synced(&mut self) {
        let Some(sync) = self.sync.as_mut() else { return };
        let state = *sync.borrow_and_update();
        let waiting: Vec<u16> = self
            .channels
            .values()
            .filter(|channel| channel.state == ChannelState::Open && !channel.pending.is_empty())
            .map(|channel| channel.id)
            .collect();
        for channel_id in waiting {
            self.send_pending_confirm(channel_id);
            let mut released = Vec::new();
            self.channel_mut(channel_id).pending.release(state, |outcome, synced| released.push((outcome, synced)));
            let mut ack_upto = None;
            for (outcome, synced) in released {
                match (outcome, synced) {
                    (Pending::Ack(sequence), true) => ack_upto = Some(sequence),
                    _ => {
                        if let Some(upto) = ack_upto.take() {
                            self.send_outcome(channel_id, Pending::Ack(upto), true);
                        }
                        self.send_outcome(channel_id, outcome, synced);
                    }
                }
            }
            if let Some(upto) = ack_upto {
                self.send_outcome(channel_id, Pending::Ack(upto), true);
            }
        }
        self.awaiting_sync =
            self.channels.values().any(|channel| channel.state == ChannelState::Open && !channel.pending.is_empty());
    }

    /// Sends one released outcome. A confirm whose message the store failed to write becomes a
    /// nack; a commit whose messages it failed to write closes the channel.
    fn send_outcome(&mut self, channel_id: u16, outcome: Pending, synced: bool) {
        let method = match (outcome, synced) {
            (Pending::Ack(upto), true) => Method::BasicAck(basic::Ack { delivery_tag: upto, multiple: true }),
            (Pending::Ack(sequence) | Pending::Nack(sequence), _) => {
                Method::BasicNack(basic::Nack { delivery_tag: sequence, multiple: false, requeue: false })
            }
            (Pending::CommitOk, true) => Method::TxCommitOk(tx::CommitOk {}),
            (Pending::CommitOk, false) => {
                if self.channels.get(&channel_id).is_some_and(|channel| channel.state == ChannelState::Open) {
                    let close =
                        Close::channel(code::INTERNAL_ERROR, "the message store could not write the transaction");
                    self.fail(channel_id, close);
                }
                return;
            }
        };
        self.send(channel_id, method);
    }

    /// Pauses reading because `queue` is full, telling the client if it listens.
    pub(crate) fn pause(&mut self, queue: Arc<warren_core::Queue>) {
        if self.paused_on.is_some() {
            return;
        }
        debug!(connection = self.id.0, queue = %queue.name(), "queue full; pausing reads");
        if self.blocked_notify {
            let blocked = connection::Blocked { reason: "queue full".into() };
            self.send(0, Method::ConnectionBlocked(blocked));
        }
        self.paused_on = Some(queue);
    }

    fn unpause(&mut self) {
        self.paused_on = None;
        if self.blocked_notify {
            self.send(0, Method::ConnectionUnblocked(connection::Unblocked {}));
        }
    }

    /// Sends connection.close and waits (briefly) for close-ok.
    fn begin_close(&mut self, close: Close) {
        if matches!(self.phase, Phase::Closing | Phase::Finished) {
            return;
        }
        self.send_pending_confirms();
        if close.code != code::CONNECTION_FORCED {
            warn!(connection = self.id.0, peer = %self.peer, code = close.code, text = %close.text, "closing connection");
        }
        let method = Method::ConnectionClose(connection::Close {
            reply_code: close.code,
            reply_text: close.reply_text(),
            class_id: close.method.0,
            method_id: close.method.1,
        });
        self.send(0, method);
        self.phase = Phase::Closing;
        self.close_deadline = Some(Instant::now() + CLOSE_OK_TIMEOUT);
    }

    pub(crate) fn send(&mut self, channel_id: u16, method: Method) {
        codec::encode_method(&mut self.out, channel_id, &method);
    }

    pub(crate) fn next_consumer_id(&mut self) -> ConsumerId {
        let id = ConsumerId(self.next_consumer);
        self.next_consumer += 1;
        id
    }

    /// Releases everything the connection holds: consumers, unacked deliveries, deliveries still
    /// in the inbox, and exclusive queues.
    fn release(&mut self) {
        let Some(vhost) = self.vhost.clone() else {
            return;
        };
        let channel_ids: Vec<u16> = self.channels.keys().copied().collect();
        for channel_id in channel_ids {
            self.release_channel(channel_id);
        }
        self.channels.clear();
        self.requeue_inbox();
        for queue in std::mem::take(&mut self.exclusive_queues) {
            // By identity: a queue of the same name declared since by someone else survives.
            vhost.remove_queue(&queue);
        }
    }
}

impl Drop for Connection {
    /// Releases what the connection holds even if its task panicked: without this, its unacked
    /// messages would never be requeued and its consumers would stay in their queues.
    fn drop(&mut self) {
        self.release();
    }
}

/// A frame addressed to a channel.
enum ChannelFrame {
    Method(Method),
    Header(u64, Box<warren_core::properties::Properties>),
    Body(Bytes),
}

/// Negotiates a limit where 0 means "no limit": the lower of the two set values.
fn negotiate<T: Ord + Default + Copy>(ours: T, theirs: T) -> T {
    if theirs == T::default() {
        ours
    } else if ours == T::default() {
        theirs
    } else {
        ours.min(theirs)
    }
}

fn client_capability(client_properties: &Table, name: &str) -> bool {
    match client_properties.get("capabilities") {
        Some(Value::Table(capabilities)) => capabilities.get(name) == Some(&Value::Bool(true)),
        _ => false,
    }
}

/// Extracts a username and password from a SASL response: PLAIN (`\0user\0password`) or
/// AMQPLAIN (a field table without its length prefix, holding LOGIN and PASSWORD).
fn credentials(mechanism: &str, response: &Bytes) -> Option<(String, String)> {
    match mechanism {
        "PLAIN" => {
            let mut parts = response.split(|byte| *byte == 0);
            let _authorization_identity = parts.next()?;
            let user = std::str::from_utf8(parts.next()?).ok()?.to_owned();
            let password = std::str::from_utf8(parts.next()?).ok()?.to_owned();
            parts.next().is_none().then_some((user, password))
        }
        "AMQPLAIN" => {
            let mut framed = BytesMut::with_capacity(response.len() + 4);
            framed.extend_from_slice(&(response.len() as u32).to_be_bytes());
            framed.extend_from_slice(response);
            let framed = framed.freeze();
            let table = codec::wire::Reader::new(&framed).table().ok()?;
            let text = |key| table.get(key).and_then(Value::as_str).map(str::to_owned);
            Some((text("LOGIN")?, text("PASSWORD")?))
        }
        _ => None,
    }
}

/// Waits until a full queue has room again.
async fn wait_for_room(queue: Option<&warren_core::Queue>) {
    if let Some(queue) = queue {
        queue.wait_for_room().await;
    }
}

/// After we answered the peer's close, reads (and discards) until the peer hangs up, for a
/// bounded time. Hanging up first makes some clients (lapin) see the end of the stream before
/// they process close-ok, and report a clean close as an abort.
async fn linger<R: AsyncRead + Unpin>(reader: &mut R) {
    let mut discard = [0u8; 4096];
    let _ = tokio::time::timeout(CLOSE_OK_TIMEOUT, async {
        while matches!(reader.read(&mut discard).await, Ok(read) if read > 0) {}
    })
    .await;
}

/// Writes chunks to the socket; sends a heartbeat whenever it has been idle for half the
/// negotiated interval.
///
/// Returns the writer once the reader side is done with it, or `None` after a write error.
async fn write_loop<W>(
    mut writer: W,
    mut chunks: mpsc::Receiver<Bytes>,
    heartbeat_seconds: Arc<AtomicU16>,
    write_timeout: Duration,
) -> Option<W>
where
    W: AsyncWrite + Unpin,
{
    let mut heartbeat = BytesMut::new();
    codec::encode_heartbeat(&mut heartbeat);
    loop {
        let seconds = heartbeat_seconds.load(Ordering::Relaxed);
        let next = if seconds == 0 {
            chunks.recv().await
        } else {
            let idle = Duration::from_millis(u64::from(seconds) * 500);
            match tokio::time::timeout(idle, chunks.recv()).await {
                Ok(next) => next,
                Err(_) => {
                    written(warren_net::write_all_bounded(&mut writer, &heartbeat, write_timeout).await)?;
                    continue;
                }
            }
        };
        let Some(chunk) = next else {
            return Some(writer);
        };
        written(warren_net::write_all_bounded(&mut writer, &chunk, write_timeout).await)?;
    }
}

/// A write's outcome, logging a client that stopped reading.
fn written(result: std::io::Result<()>) -> Option<()> {
    match result {
        Ok(()) => Some(()),
        Err(error) if error.kind() == std::io::ErrorKind::TimedOut => {
            warn!("client stopped reading; closing the connection");
            None
        }
        Err(_) => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn plain_credentials() {
        let response = Bytes::from_static(b"\0guest\0secret");
        assert_eq!(credentials("PLAIN", &response), Some(("guest".into(), "secret".into())));
        assert_eq!(credentials("PLAIN", &Bytes::from_static(b"guest")), None);
    }

    #[test]
    fn amqplain_credentials() {
        // AMQPLAIN's response is a field table without its length prefix.
        let mut table = Table::new();
        table.insert("LOGIN", Value::string("guest"));
        table.insert("PASSWORD", Value::string("secret"));
        let mut encoded = BytesMut::new();
        codec::wire::put_table(&mut encoded, &table);
        let response = encoded.freeze().slice(4..);
        assert_eq!(credentials("AMQPLAIN", &response), Some(("guest".into(), "secret".into())));
        assert_eq!(credentials("AMQPLAIN", &Bytes::from_static(b"\x05LOGIN")), None);
        assert_eq!(credentials("EXTERNAL", &response), None);
    }

    #[test]
    fn negotiation_treats_zero_as_unlimited() {
        assert_eq!(negotiate(2047u16, 0), 2047);
        assert_eq!(negotiate(2047u16, 10), 10);
        assert_eq!(negotiate(0u16, 10), 10);
    }
}
