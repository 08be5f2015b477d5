//! One STOMP connection: CONNECT (version, vhost, login, heart-beats), the read loop, and the
//! frames that manage the session (DISCONNECT, transactions, receipts, errors). Messaging frames
//! are handled in `messaging.rs`.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use bytes::{Bytes, BytesMut};
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tokio::sync::{mpsc, watch};
use tokio::time::Instant;
use tracing::{info, warn};
use warren_core::auth::{Access, Credentials};
use warren_core::journal::{self, ConfirmQueue, Lsn, SyncState};
use warren_core::name::{UserName, VhostName};
use warren_core::queue::Inbox;
use warren_core::{Broker, Queue, Vhost};

use crate::codec::{self, Escaping, Frame, Limits};
use crate::messaging::{Subscription, Unacked};

/// Settings of the STOMP listener.
#[derive(Clone, Debug)]
pub struct StompConfig {
    pub limits: Limits,
    /// How long a client has to send CONNECT.
    pub connect_timeout: Duration,
    /// The shortest heart-beat interval granted, in milliseconds: a client asking for beats
    /// more often gets them this often (and is expected no more often than this).
    pub heartbeat_ms: u64,
    /// Whether a CONNECT without login is let in, as `guest`. Off by default.
    pub allow_anonymous: bool,
    /// Frames one transaction may hold before COMMIT.
    pub transaction_frames_max: usize,
    /// How long a write may stall (a client that stopped reading) before the connection is
    /// closed.
    pub write_timeout: Duration,
}

impl Default for StompConfig {
    fn default() -> Self {
        StompConfig {
            limits: Limits::default(),
            connect_timeout: Duration::from_secs(10),
            heartbeat_ms: 100,
            allow_anonymous: false,
            transaction_frames_max: 10_000,
            write_timeout: warren_net::WRITE_TIMEOUT_DEFAULT,
        }
    }
}

#[derive(Debug)]
pub struct StompState {
    pub(crate) broker: Arc<Broker>,
    pub(crate) config: StompConfig,
}

impl StompState {
    pub fn new(broker: Arc<Broker>, config: StompConfig) -> Arc<StompState> {
        Arc::new(StompState { broker, config })
    }
}

/// The STOMP versions, oldest first.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub enum Version {
    V10,
    V11,
    V12,
}

impl Version {
    fn name(self) -> &'static str {
        match self {
            Version::V10 => "1.0",
            Version::V11 => "1.1",
            Version::V12 => "1.2",
        }
    }
}

const WRITE_QUEUE_CHUNKS: usize = 8;
/// Transactions one session may hold open at once; each is bounded by `transaction_frames_max`
/// frames and `TRANSACTION_BYTES_MAX` body bytes (as AMQP transactions are).
const TRANSACTIONS_OPEN_MAX: usize = 16;
const TRANSACTION_BYTES_MAX: usize = 128 * 1024 * 1024;
/// Each session's id, unique per broker run, reported in CONNECTED.
static NEXT_SESSION: AtomicU64 = AtomicU64::new(1);

/// Why a session ends.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum End {
    /// DISCONNECT, or an ERROR we sent: flush and close.
    Close(&'static str),
}

pub(crate) struct Session {
    pub(crate) state: Arc<StompState>,
    pub(crate) peer: SocketAddr,
    pub(crate) connection: u64,
    pub(crate) version: Version,
    pub(crate) escaping: Escaping,
    pub(crate) vhost: Arc<Vhost>,
    /// The user's resource permissions in the vhost, checked before each SEND and SUBSCRIBE.
    access: Arc<Access>,
    /// The destination this session last sent to with permission: the next SEND there skips
    /// the checks, so the send path stays free of locks and allocation.
    send_authorized: Option<String>,
    pub(crate) inbox: Arc<Inbox>,
    /// By subscription id.
    pub(crate) subscriptions: HashMap<String, Subscription>,
    /// Deliveries awaiting ACK/NACK, in delivery order.
    pub(crate) unacked: Vec<Unacked>,
    pub(crate) next_ack_id: u64,
    pub(crate) next_consumer: u64,
    /// Open transactions and their frames, applied at COMMIT.
    pub(crate) transactions: HashMap<String, Vec<Frame>>,
    /// `/temp-queue/` names and their private queues.
    pub(crate) temp_queues: HashMap<String, Arc<Queue>>,
    pub(crate) out: BytesMut,
    /// How much of a pending frame's body the decoder has searched for its NUL already.
    searched: usize,
    /// A queue left over its memory bound by our last SEND: we read nothing more until it has
    /// room, so TCP pushes back on the publisher.
    pub(crate) paused_on: Option<Arc<Queue>>,
    /// The message store's sync progress, when the broker has a store.
    sync: Option<watch::Receiver<SyncState>>,
    /// Where the frame being handled journaled its messages: its receipt waits for that.
    pub(crate) frame_lsn: Option<Lsn>,
    /// Receipts (and a DISCONNECT) waiting, in order, for the store to sync.
    waiting: ConfirmQueue<Outgoing>,
}

/// What waits for the store to sync.
#[derive(Debug)]
enum Outgoing {
    Receipt(String),
    /// The client's DISCONNECT: the connection ends once the receipts before it are out.
    Disconnect(Option<String>),
}

/// Serves one client connection until it closes.
pub async fn serve<S>(stream: S, peer: SocketAddr, state: Arc<StompState>)
where
    S: AsyncRead + AsyncWrite + Send + 'static,
{
    let (mut reader, writer) = tokio::io::split(stream);
    let (chunks, chunk_receiver) = mpsc::channel::<Bytes>(WRITE_QUEUE_CHUNKS);
    let heartbeat = Arc::new(AtomicU64::new(0));
    let writer_task = tokio::spawn(write_loop(writer, chunk_receiver, heartbeat.clone(), state.config.write_timeout));
    let mut buffer = warren_net::ReadSizer::buffer();
    let connection = state.broker.next_connection_id().0;
    let accepted = accept(&mut reader, &mut buffer, &chunks, peer, &state, connection, &heartbeat).await;
    if let Some((mut session, receive_timeout)) = accepted {
        let end = session.run(&mut reader, &mut buffer, &chunks, receive_timeout).await;
        session.release();
        let _ = chunks.send(session.out.split().freeze()).await;
        info!(connection, %peer, ?end, "stomp connection closed");
    }
    drop(chunks);
    let _ = writer_task.await;
}

/// Reads CONNECT (or STOMP), negotiates, authenticates and answers CONNECTED. Returns the
/// session and the negotiated receive timeout (ms, 0 = none); the send interval goes to the
/// writer before CONNECTED does, so the writer never starts without it.
async fn accept<R: AsyncRead + Unpin>(
    reader: &mut R,
    buffer: &mut BytesMut,
    chunks: &mpsc::Sender<Bytes>,
    peer: SocketAddr,
    state: &Arc<StompState>,
    connection: u64,
    writer_heartbeat_ms: &AtomicU64,
) -> Option<(Session, u64)> {
    let deadline = Instant::now() + state.config.connect_timeout;
    let frame = loop {
        match codec::decode(buffer, &state.config.limits, Escaping::None) {
            Ok(Some(frame)) => break frame,
            Ok(None) => {}
            Err(error) => {
                send_error(chunks, "malformed frame", &error.to_string()).await;
                return None;
            }
        }
        match tokio::time::timeout_at(deadline, reader.read_buf(buffer)).await {
            Ok(Ok(read)) if read > 0 => {}
            _ => return None,
        }
    };
    if frame.command != "CONNECT" && frame.command != "STOMP" {
        send_error(chunks, "expected CONNECT", &format!("the first frame was {}", frame.command)).await;
        return None;
    }
    let Some(version) = negotiate_version(frame.header("accept-version")) else {
        send_error(chunks, "Supported protocol versions are 1.0,1.1,1.2", "").await;
        return None;
    };
    let (vhost, access) = match login(&frame, peer, state).await {
        Ok(opened) => opened,
        Err(reason) => {
            warn!(%peer, reason, "stomp login refused");
            send_error(chunks, "Access refused", reason).await;
            return None;
        }
    };
    let (receive_timeout, send_interval, offered) =
        heartbeats(frame.header("heart-beat"), version, state.config.heartbeat_ms);
    let session_id = NEXT_SESSION.fetch_add(1, Ordering::Relaxed);
    let mut connected = Frame::new("CONNECTED")
        .with("server", format!("Warren/{}", env!("CARGO_PKG_VERSION")))
        .with("session", format!("session-{session_id}"));
    if version > Version::V10 {
        connected = connected.with("version", version.name()).with("heart-beat", offered);
    }
    let mut out = BytesMut::new();
    codec::encode(&connected, Escaping::None, &mut out);
    writer_heartbeat_ms.store(send_interval, Ordering::Relaxed);
    chunks.send(out.freeze()).await.ok()?;
    info!(connection, %peer, version = version.name(), vhost = %vhost.name(), "stomp connection open");
    let session = Session {
        state: state.clone(),
        peer,
        connection,
        version,
        escaping: match version {
            Version::V10 => Escaping::None,
            Version::V11 => Escaping::Stomp11,
            Version::V12 => Escaping::Stomp12,
        },
        vhost,
        access,
        send_authorized: None,
        inbox: Inbox::new(warren_core::limits::INBOX_CAPACITY),
        subscriptions: HashMap::new(),
        unacked: Vec::new(),
        next_ack_id: 1,
        next_consumer: 1,
        transactions: HashMap::new(),
        temp_queues: HashMap::new(),
        out: BytesMut::new(),
        searched: 0,
        paused_on: None,
        sync: state.broker.journal().map(|journal| journal.sync_state()),
        frame_lsn: None,
        waiting: ConfirmQueue::default(),
    };
    Some((session, receive_timeout))
}

/// The highest version both sides speak; no header means 1.0.
fn negotiate_version(accepted: Option<&str>) -> Option<Version> {
    let Some(accepted) = accepted else { return Some(Version::V10) };
    let offered: Vec<&str> = accepted.split(',').map(str::trim).collect();
    [Version::V12, Version::V11, Version::V10].into_iter().find(|version| offered.contains(&version.name()))
}

/// Negotiates heart-beats (STOMP 1.1 section "Heart-beating"). As RabbitMQ does, we send at
/// the rate the client asks for and expect beats at the rate it offers, no faster than
/// `floor_ms`. Returns how long we wait for the client before giving up (twice its promised
/// interval), how often we send, and the header we answer with.
fn heartbeats(client: Option<&str>, version: Version, floor_ms: u64) -> (u64, u64, String) {
    if version == Version::V10 {
        return (0, 0, "0,0".into());
    }
    let (client_sends, client_wants) = client
        .and_then(|text| text.split_once(','))
        .and_then(|(send, want)| Some((send.trim().parse::<u64>().ok()?, want.trim().parse::<u64>().ok()?)))
        .unwrap_or((0, 0));
    let negotiate = |theirs: u64| if theirs == 0 { 0 } else { theirs.max(floor_ms) };
    let send_interval = negotiate(client_wants);
    let receive_interval = negotiate(client_sends);
    (receive_interval.saturating_mul(2), send_interval, format!("{send_interval},{receive_interval}"))
}

/// Authenticates `login`/`passcode` and opens the vhost named by `host`. As clients such as
/// stomp.py put the server's host name there, a `host` that names no vhost means the default
/// vhost `/`.
/// Logs in and opens the vhost; returns it with the user's resource permissions there.
async fn login(frame: &Frame, peer: SocketAddr, state: &StompState) -> Result<(Arc<Vhost>, Arc<Access>), &'static str> {
    let (user, password) = match (frame.header("login"), frame.header("passcode")) {
        (Some(user), password) => (user.to_owned(), password.unwrap_or_default().to_owned()),
        (None, _) if state.config.allow_anonymous => ("guest".to_owned(), "guest".to_owned()),
        (None, _) => return Err("anonymous login is not allowed"),
    };
    let credentials = Credentials { username: UserName::new(&user), password, peer };
    let principal = state.broker.authenticate(&credentials).await.map_err(|_| "login refused")?;
    let host = frame.header("host").map(VhostName::new).filter(|name| state.broker.vhost(name).is_some());
    let vhost_name = host.unwrap_or_else(|| VhostName::new("/"));
    let vhost = state.broker.open_vhost(&principal, &vhost_name).await.map_err(|_| "access to the vhost refused")?;
    Ok((vhost, state.broker.access(&principal, &vhost_name)))
}

async fn send_error(chunks: &mpsc::Sender<Bytes>, message: &str, detail: &str) {
    let mut out = BytesMut::new();
    codec::encode(&error_frame(message, detail), Escaping::None, &mut out);
    let _ = chunks.send(out.freeze()).await;
}

fn error_frame(message: &str, detail: &str) -> Frame {
    let frame = Frame::new("ERROR").with("message", message).with("content-type", "text/plain");
    Frame { body: Bytes::copy_from_slice(detail.as_bytes()), ..frame }
}

impl Session {
    async fn run<R: AsyncRead + Unpin>(
        &mut self,
        reader: &mut R,
        buffer: &mut BytesMut,
        chunks: &mpsc::Sender<Bytes>,
        receive_timeout_ms: u64,
    ) -> End {
        let shutdown = self.state.broker.shutdown().clone();
        let inbox = self.inbox.clone();
        let mut last_read = Instant::now();
        let mut sizer = warren_net::ReadSizer::new();
        let mut heartbeat_check = tokio::time::interval(Duration::from_millis(500));
        if let Some(end) = self.process(buffer).await {
            return end;
        }
        loop {
            if !self.out.is_empty() && chunks.send(self.out.split().freeze()).await.is_err() {
                return End::Close("writer closed");
            }
            sizer.prepare(buffer);
            let paused = self.paused_on.clone();
            tokio::select! {
                // The writer gave up (the client stopped reading): end, even with nothing to send.
                _ = chunks.closed() => return End::Close("writer closed"),
                _ = shutdown.cancelled() => {
                    self.error("broker shutting down", "the broker is shutting down");
                    return End::Close("broker shutting down");
                }
                _ = wait_for_room(paused.as_deref()), if paused.is_some() => {
                    self.paused_on = None;
                    last_read = Instant::now();
                    if let Some(end) = self.process(buffer).await {
                        return end;
                    }
                    self.drain_inbox();
                }
                read = reader.read_buf(buffer), if paused.is_none() => match read {
                    Ok(0) | Err(_) => return End::Close("socket closed"),
                    Ok(read) => {
                        sizer.observe(read);
                        last_read = Instant::now();
                        if let Some(end) = self.process(buffer).await {
                            return end;
                        }
                        self.drain_inbox();
                    }
                },
                _ = inbox.ready() => self.drain_inbox(),
                changed = journal::changed(self.sync.as_mut()), if !self.waiting.is_empty() => {
                    if changed.is_err() {
                        return End::Close("message store stopped");
                    }
                    if let Some(end) = self.release_synced() {
                        return end;
                    }
                }
                _ = heartbeat_check.tick() => {
                    // A paused session is silent because we stopped reading it.
                    let silent = self.paused_on.is_none() && last_read.elapsed() > Duration::from_millis(receive_timeout_ms);
                    if receive_timeout_ms != 0 && silent {
                        warn!(peer = %self.peer, "no heart-beat from client");
                        return End::Close("missed heart-beats");
                    }
                }
            }
        }
    }

    /// Handles every complete frame in the buffer; `Some` when the connection must end.
    async fn process(&mut self, buffer: &mut BytesMut) -> Option<End> {
        while self.paused_on.is_none() {
            match codec::decode_resuming(buffer, &self.state.config.limits, self.escaping, &mut self.searched) {
                Ok(Some(frame)) => {
                    if let Some(end) = self.authorize(&frame).await {
                        return Some(end);
                    }
                    if let Some(end) = self.handle(frame) {
                        return Some(end);
                    }
                }
                Ok(None) => return None,
                Err(error) => {
                    warn!(peer = %self.peer, %error, "malformed stomp frame");
                    return Some(self.error("malformed frame", &error.to_string()));
                }
            }
        }
        None
    }

    /// Checks the permissions a frame needs before it runs; `Some` when refused.
    async fn authorize(&mut self, frame: &Frame) -> Option<End> {
        let sending = frame.command == "SEND";
        let destination = frame.header("destination");
        if sending && destination.is_some() && destination == self.send_authorized.as_deref() {
            return None;
        }
        for (kind, name, permission) in crate::authorize::required(frame) {
            if let Err(error) = self.access.check(kind, &name, permission).await {
                return Some(self.error("access_refused", &error.to_string()));
            }
        }
        if sending {
            self.send_authorized = destination.map(str::to_owned);
        }
        None
    }

    fn handle(&mut self, frame: Frame) -> Option<End> {
        let receipt = frame.header("receipt").map(str::to_owned);
        self.frame_lsn = None;
        let result = match frame.command.as_str() {
            "SEND" => self.send_frame(frame),
            "SUBSCRIBE" => self.subscribe(&frame),
            "UNSUBSCRIBE" => self.unsubscribe(&frame),
            "ACK" => self.ack(&frame),
            "NACK" => self.nack(&frame),
            "BEGIN" => self.begin(&frame),
            "COMMIT" => self.commit(&frame),
            "ABORT" => self.abort(&frame),
            "DISCONNECT" => {
                if self.waiting.is_empty() {
                    self.send_receipt(receipt);
                    return Some(End::Close("client disconnected"));
                }
                self.waiting.push(None, Outgoing::Disconnect(receipt));
                return None;
            }
            "CONNECT" | "STOMP" => Err(("already connected".to_owned(), String::new())),
            other => Err(("unknown command".to_owned(), format!("Could not interpret command {other}"))),
        };
        match result {
            Ok(()) => {
                self.receipt_after_sync(receipt);
                None
            }
            Err((message, detail)) => {
                // The ERROR names the frame that caused it, when that frame asked for a receipt.
                if let Some(receipt) = receipt {
                    let frame = error_frame(&message, &detail).with("receipt-id", receipt);
                    warn!(peer = %self.peer, message, detail, "stomp error");
                    self.write(&frame);
                    return Some(End::Close("error sent"));
                }
                Some(self.error(&message, &detail))
            }
        }
    }

    /// Sends a receipt now, or once the frame's persistent messages are on disk and the
    /// receipts before it have gone.
    fn receipt_after_sync(&mut self, receipt: Option<String>) {
        let Some(receipt) = receipt else { return };
        let lsn = self.frame_lsn.take();
        let synced = lsn.is_none_or(|lsn| journal::is_synced(self.sync.as_ref(), lsn));
        if synced && self.waiting.is_empty() {
            self.send_receipt(Some(receipt));
        } else {
            self.waiting.push(lsn, Outgoing::Receipt(receipt));
        }
    }

    /// The store synced further (or failed): sends the receipts it covers. A receipt for a
    /// message the store could not write becomes an ERROR, and the connection closes.
    fn release_synced(&mut self) -> Option<End> {
        let state = *self.sync.as_mut()?.borrow_and_update();
        let mut released = Vec::new();
        self.waiting.release(state, |outgoing, synced| released.push((outgoing, synced)));
        for (outgoing, synced) in released {
            match (outgoing, synced) {
                (Outgoing::Receipt(receipt), true) => self.send_receipt(Some(receipt)),
                (Outgoing::Receipt(receipt), false) => {
                    let frame = error_frame("message store failure", "the message could not be stored")
                        .with("receipt-id", receipt);
                    warn!(peer = %self.peer, "message store failure; closing");
                    self.write(&frame);
                    return Some(End::Close("error sent"));
                }
                (Outgoing::Disconnect(receipt), _) => {
                    self.send_receipt(receipt);
                    return Some(End::Close("client disconnected"));
                }
            }
        }
        None
    }

    fn send_receipt(&mut self, receipt: Option<String>) {
        if let Some(receipt) = receipt {
            self.write(&Frame::new("RECEIPT").with("receipt-id", receipt));
        }
    }

    /// Sends an ERROR frame; the connection closes after it, as the spec requires.
    pub(crate) fn error(&mut self, message: &str, detail: &str) -> End {
        warn!(peer = %self.peer, message, detail, "stomp error");
        self.write(&error_frame(message, detail));
        End::Close("error sent")
    }

    pub(crate) fn write(&mut self, frame: &Frame) {
        codec::encode(frame, self.escaping, &mut self.out);
    }

    fn begin(&mut self, frame: &Frame) -> Result<(), (String, String)> {
        let id = transaction_id(frame)?;
        if self.transactions.contains_key(&id) {
            return Err(("transaction already active".into(), id));
        }
        if self.transactions.len() >= TRANSACTIONS_OPEN_MAX {
            return Err(("too many open transactions".into(), format!("at most {TRANSACTIONS_OPEN_MAX}")));
        }
        self.transactions.insert(id, Vec::new());
        Ok(())
    }

    fn commit(&mut self, frame: &Frame) -> Result<(), (String, String)> {
        let id = transaction_id(frame)?;
        let frames = self.transactions.remove(&id).ok_or_else(|| ("unknown transaction".to_owned(), id))?;
        // A transaction is all or nothing: every frame is checked before any takes effect.
        for frame in &frames {
            self.check_transactional(frame)?;
        }
        for frame in frames {
            match frame.command.as_str() {
                "SEND" => self.route(&frame)?,
                "ACK" => self.settle(&frame, true)?,
                _ => self.settle(&frame, false)?,
            }
        }
        Ok(())
    }

    fn abort(&mut self, frame: &Frame) -> Result<(), (String, String)> {
        let id = transaction_id(frame)?;
        self.transactions.remove(&id).map(|_| ()).ok_or_else(|| ("unknown transaction".to_owned(), id))
    }

    /// Holds a frame in its transaction; false if it names none.
    pub(crate) fn in_transaction(&mut self, frame: &Frame) -> Result<bool, (String, String)> {
        let Some(id) = frame.header("transaction") else { return Ok(false) };
        let limit = self.state.config.transaction_frames_max;
        let frames = self.transactions.get_mut(id).ok_or_else(|| ("unknown transaction".to_owned(), id.to_owned()))?;
        let held_bytes: usize = frames.iter().map(|held| held.body.len()).sum();
        if frames.len() >= limit || held_bytes + frame.body.len() > TRANSACTION_BYTES_MAX {
            return Err((
                "transaction too large".into(),
                format!("more than {limit} frames or {TRANSACTION_BYTES_MAX} bytes"),
            ));
        }
        frames.push(frame.clone());
        Ok(true)
    }
}

fn transaction_id(frame: &Frame) -> Result<String, (String, String)> {
    frame.header("transaction").map(str::to_owned).ok_or_else(|| ("missing transaction header".into(), String::new()))
}

/// Waits until a full queue has room again.
async fn wait_for_room(queue: Option<&Queue>) {
    if let Some(queue) = queue {
        queue.wait_for_room().await;
    }
}

/// Writes chunks to the socket, and a heart-beat EOL whenever it has been idle for the
/// negotiated interval.
async fn write_loop<W: AsyncWrite + Unpin>(
    mut writer: W,
    mut chunks: mpsc::Receiver<Bytes>,
    heartbeat_ms: Arc<AtomicU64>,
    write_timeout: Duration,
) {
    loop {
        let interval = heartbeat_ms.load(Ordering::Relaxed);
        let next = if interval == 0 {
            chunks.recv().await
        } else {
            match tokio::time::timeout(Duration::from_millis(interval), chunks.recv()).await {
                Ok(next) => next,
                Err(_) => {
                    if let Err(error) = warren_net::write_all_bounded(&mut writer, b"\n", write_timeout).await {
                        return stalled(error);
                    }
                    continue;
                }
            }
        };
        let Some(chunk) = next else { break };
        if let Err(error) = warren_net::write_all_bounded(&mut writer, &chunk, write_timeout).await {
            return stalled(error);
        }
    }
    let _ = writer.shutdown().await;
}

/// Logs a client that stopped reading (the write gave up); other write errors are the peer
/// going away.
fn stalled(error: std::io::Error) {
    if error.kind() == std::io::ErrorKind::TimedOut {
        warn!("client stopped reading; closing the connection");
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn picks_the_highest_common_version() {
        assert_eq!(negotiate_version(None), Some(Version::V10));
        assert_eq!(negotiate_version(Some("1.0,1.1,1.2")), Some(Version::V12));
        assert_eq!(negotiate_version(Some("1.1")), Some(Version::V11));
        assert_eq!(negotiate_version(Some("2.0")), None);
    }

    #[test]
    fn heartbeats_mirror_the_client_above_a_floor() {
        // The client sends every 5 s and wants a beat every 20 s.
        assert_eq!(heartbeats(Some("5000,20000"), Version::V12, 100), (10_000, 20_000, "20000,5000".into()));
        assert_eq!(heartbeats(Some("0,0"), Version::V12, 100), (0, 0, "0,0".into()));
        assert_eq!(heartbeats(Some("10,10"), Version::V12, 100), (200, 100, "100,100".into()));
        assert_eq!(heartbeats(Some("1000,1000"), Version::V10, 100), (0, 0, "0,0".into()));
    }
}
