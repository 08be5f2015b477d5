//! One MQTT connection: CONNECT and authentication, the read loop, session takeover, keep-alive
//! and the last will. Packet handlers live in `inbound.rs` and `outbound.rs`.
//!
//! As with AMQP, two tasks serve a connection: this one owns the session state and the read
//! half, and hands encoded bytes to a writer task over a bounded channel, so a client that stops
//! reading stops being read.

// The per-session sets and maps that are usually empty are B-trees: 24 bytes each and no
// allocation while empty, against 48 for a hash map, in every idle connection.
use std::collections::{BTreeMap, BTreeSet, HashMap, HashSet};
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use bytes::{Bytes, BytesMut};
use mqttbytes::v4::{ConnAck, Connect, ConnectReturnCode, LastWill, Packet};
use mqttbytes::QoS;
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tokio::sync::{mpsc, watch, Notify};
use tokio::time::Instant;
use tracing::{debug, info, warn};
use warren_core::auth::{Access, Credentials, Principal};
use warren_core::journal::{self, ConfirmQueue, Lsn, SyncState};
use warren_core::name::{ConnectionId, ConsumerId, UserName, VhostName};
use warren_core::queue::{Consumer, Durability, Inbox};
use warren_core::{Queue, Vhost};

use crate::codec::{self, Level};
use crate::kept::{Kept, KeptSubscription, KeptWill, MessageKey};
use crate::outbound::Inflight;
use crate::state::{MqttState, SessionEntry, SessionKey};
use crate::translate;

/// Output held for the store (see `Session::hold_output`) beyond which the reader waits.
const HELD_OUTPUT_BYTES_MAX: usize = 2 * 1024 * 1024;
/// How long a connection that takes a session over waits for the one it replaces to let go,
/// and how often it looks.
const HANDOVER_WAIT: Duration = Duration::from_secs(5);
const HANDOVER_POLL: Duration = Duration::from_millis(5);
/// What `SessionEntry::awaiting_handover` names while a session's expiry removes what it
/// held: a connection that comes meanwhile waits for that as for a handover. (Connection ids
/// count up from 1 and never get here.)
const EXPIRING: u64 = u64::MAX;
/// Encoded chunks queued for the writer before the reader stops.
const WRITE_QUEUE_CHUNKS: usize = 8;
/// How long a closing connection may take to write its last bytes.
const WRITER_CLOSE_GRACE: Duration = Duration::from_secs(5);

/// Why a connection ends; only a client's DISCONNECT suppresses the last will.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum End {
    /// The client sent DISCONNECT.
    Graceful,
    /// Anything else: the socket closed, keep-alive expired, a protocol error, a takeover.
    Abnormal(&'static str),
}

/// What a session may do, from its user's resource permissions.
#[derive(Clone, Copy, Debug, Default)]
pub(crate) struct Permitted {
    pub(crate) publish: bool,
    pub(crate) subscribe: bool,
}

/// The queue of a client id's session, as RabbitMQ names it.
fn session_queue_name(client_id: &str) -> warren_core::name::QueueName {
    warren_core::name::QueueName::from(format!("mqtt-subscription-{client_id}qos1"))
}

impl Permitted {
    async fn check(access: &Access, queue: &warren_core::name::QueueName) -> Permitted {
        use warren_core::auth::{Permission, ResourceKind};
        let topic = crate::inbound::TOPIC_EXCHANGE;
        let publish = access.check(ResourceKind::Exchange, topic, Permission::Write).await.is_ok();
        let subscribe = access
            .check_all(&[
                (ResourceKind::Queue, queue.as_str(), Permission::Configure),
                (ResourceKind::Queue, queue.as_str(), Permission::Write),
                (ResourceKind::Queue, queue.as_str(), Permission::Read),
                (ResourceKind::Exchange, topic, Permission::Read),
            ])
            .await
            .is_ok();
        Permitted { publish, subscribe }
    }
}

/// A SUBSCRIBE, with its MQTT 5 options and identifier, waiting for authorisation checks.
type AwaitingSubscribe = (mqttbytes::v4::Subscribe, Vec<crate::v5::SubscriptionOptions>, Option<usize>);

pub(crate) struct Session {
    pub(crate) state: Arc<MqttState>,
    pub(crate) peer: SocketAddr,
    pub(crate) connection: u64,
    pub(crate) client_id: String,
    /// Clean session (3.1.1) or Clean Start (MQTT 5): an existing session is discarded at
    /// connect.
    pub(crate) clean_session: bool,
    /// The session ends with this connection: a 3.1.1 clean session, or an MQTT 5 Session
    /// Expiry Interval of 0 (3.1.2.11.2). Otherwise its queue is durable and outlives it.
    pub(crate) ends_with_connection: bool,
    /// A session that ends with this connection but took over a stored one (MQTT 5, Clean
    /// Start 0 and Session Expiry 0): its record is still rewritten, saying it has expired, so
    /// that a crash leaves neither it nor what it cancelled (a delayed will) behind.
    stored_until_end: bool,
    keep_alive: Duration,
    pub(crate) vhost: Arc<Vhost>,
    pub(crate) will: Option<Box<LastWill>>,
    /// An MQTT 5 will's properties.
    pub(crate) will_properties: Option<Box<mqttbytes::v5::PublishProperties>>,
    /// What the user's permissions allow, checked once at connect (every MQTT publish goes to
    /// `amq.topic`, every subscription binds the session's queue to it): as RabbitMQ's plugin
    /// checks write on `amq.topic` to publish, and configure, write and read on the session queue
    /// and read on `amq.topic` to subscribe.
    pub(crate) permitted: Permitted,
    /// The protocol level the client speaks: MQTT 5 packets are translated at the edge.
    pub(crate) level: Level,
    /// How long a persistent session outlives its connection (MQTT 5 clients choose, up to
    /// the broker's `session_expiry`).
    pub(crate) session_expiry: Duration,
    /// Unacknowledged QoS 1 and 2 deliveries at once: the broker's `prefetch`, or less if an
    /// MQTT 5 client's Receive Maximum says so.
    pub(crate) prefetch: u32,
    /// The largest packet an MQTT 5 client accepts; larger deliveries are dropped for it.
    pub(crate) client_packet_bytes_max: Option<usize>,
    /// An MQTT 5 client's topic aliases.
    pub(crate) aliases: crate::v5::TopicAliases,
    /// The broker's topic aliases towards an MQTT 5 client that accepts them.
    pub(crate) outbound_aliases: Option<Box<crate::v5::OutboundAliases>>,
    /// How long an MQTT 5 will waits after an abnormal end, unless the session resumes first.
    pub(crate) will_delay: Duration,
    /// MQTT 5 filters subscribed with No Local: this connection's own messages skip them.
    pub(crate) no_local: BTreeSet<String>,
    /// MQTT 5 filters subscribed with Retain As Published.
    pub(crate) retain_as_published: BTreeSet<String>,
    /// The output waits until the store has synced up to here (see `hold_output`).
    pub(crate) hold_until: Option<Lsn>,
    /// `release` has run.
    released: bool,
    /// Every packet id is in use: the inbox is not drained until one frees.
    pub(crate) ids_exhausted: bool,
    /// The session's delivery window (prefetch, or MQTT 5's Receive Maximum), shared by its
    /// queue's consumer and its shared subscriptions' consumers.
    pub(crate) window: Option<Arc<warren_core::queue::Credit>>,
    /// MQTT 5 reason codes for PUBACKs and PUBRECs not yet sent, by packet id (Success is not
    /// recorded).
    pub(crate) ack_reasons: BTreeMap<u16, u8>,
    /// MQTT 5 subscription identifiers, by filter: sent back on the deliveries each matches.
    pub(crate) subscription_ids: BTreeMap<String, usize>,
    /// The identifier of the SUBSCRIBE being handled.
    pub(crate) pending_identifier: Option<usize>,
    /// Shared subscriptions, by their `$share/...` filter.
    pub(crate) shared: BTreeMap<String, crate::shared::SharedSubscription>,
    /// The session's queue, bound to `amq.topic` once per subscription.
    pub(crate) queue: Option<Arc<Queue>>,
    pub(crate) consumer: Option<Arc<Consumer>>,
    pub(crate) subscriptions: Vec<(String, QoS)>,
    pub(crate) inbox: Arc<Inbox>,
    /// Outbound QoS 1 publishes awaiting PUBACK, by packet id.
    pub(crate) inflight: HashMap<u16, Inflight>,
    /// Deliveries a previous connection sent and did not see acknowledged, by message: resent
    /// under the same packet ids (4.4), which stay reserved until then.
    pub(crate) resend: Option<Box<crate::kept::Resend>>,
    /// What the session keeps changed in a way its journal record must hold before the
    /// output goes out (a QoS 2 PUBLISH's id): rewritten once per drained batch.
    pub(crate) kept_dirty: bool,
    /// A SUBSCRIBE to shared subscriptions, waiting for their authorisation.
    awaiting_subscribe: Option<Box<AwaitingSubscribe>>,
    /// Who the session is: shared subscriptions are authorised when they are made.
    principal: Box<Principal>,
    /// A will waiting for its delay, from `finish` to `release`.
    delayed_will: Option<Box<KeptWill>>,
    /// Retained messages matched by a SUBSCRIBE, waiting for room in the window.
    pub(crate) pending_retained: Option<Box<crate::outbound::PendingRetained>>,
    pub(crate) next_packet_id: u16,
    /// Inbound QoS 2 packet ids between PUBREC and PUBREL: a duplicate is not routed again.
    /// With each, the record of its message when that marks the id (`Session::inbound_marker`).
    pub(crate) incoming_qos2: BTreeMap<u16, Option<u64>>,
    pub(crate) out: BytesMut,
    kick: Arc<Notify>,
    /// A queue left over its memory bound by our last publish: we read nothing more until it has
    /// room, so TCP pushes back on the publisher.
    pub(crate) paused_on: Option<Arc<Queue>>,
    /// The message store's sync progress, when the broker has a store.
    sync: Option<watch::Receiver<SyncState>>,
    /// PUBACKs and PUBRECs waiting, in order, for their messages to be on disk.
    waiting: ConfirmQueue<Packet>,
}

/// Serves one client connection until it closes.
pub async fn serve<S>(stream: S, peer: SocketAddr, state: Arc<MqttState>)
where
    S: AsyncRead + AsyncWrite + Send + 'static,
{
    let (mut reader, writer) = tokio::io::split(stream);
    let (chunks, chunk_receiver) = mpsc::channel::<Bytes>(WRITE_QUEUE_CHUNKS);
    let writer_task = tokio::spawn(write_loop(writer, chunk_receiver, state.config.write_timeout));
    let mut buffer = warren_net::ReadSizer::buffer();
    let connection = state.broker.next_connection_id().0;
    // Boxed: CONNECT handling (login, permission checks) needs a large future only briefly, and
    // inline it would size every connection's task for its whole life.
    let accepted = Box::pin(accept(&mut reader, &mut buffer, &chunks, peer, &state, connection)).await;
    let Some(mut session) = accepted else {
        drop(chunks);
        let _ = writer_task.await;
        return;
    };
    let end = session.run(&mut reader, &mut buffer, &chunks).await;
    session.finish(end);
    // The last bytes get a bounded grace: a client that stopped reading must not hold the
    // connection (and its socket) open for ever.
    let mut writer_task = writer_task;
    let flushed = tokio::time::timeout(WRITER_CLOSE_GRACE, async {
        // Held output goes only once what it depends on is on disk (`hold_output`).
        session.flush_hold().await;
        let _ = chunks.send(session.out.split().freeze()).await;
        drop(chunks);
        let _ = (&mut writer_task).await;
    })
    .await;
    if flushed.is_err() {
        writer_task.abort();
    }
    info!(connection, %peer, client_id = %session.client_id, ?end, "mqtt connection closed");
}

/// Reads CONNECT, authenticates, opens the session and sends CONNACK; `None` if refused.
async fn accept<R: AsyncRead + Unpin>(
    reader: &mut R,
    buffer: &mut BytesMut,
    chunks: &mpsc::Sender<Bytes>,
    peer: SocketAddr,
    state: &Arc<MqttState>,
    connection: u64,
) -> Option<Session> {
    let deadline = Instant::now() + state.config.connect_timeout;
    let (connect, level, extras) = loop {
        match codec::decode_connect(buffer, state.config.packet_bytes_max) {
            Ok(Some((Packet::Connect(connect), level, extras))) => break (connect, level, extras),
            Ok(Some((other, _, _))) => {
                warn!(%peer, packet = ?other, "first packet was not CONNECT");
                return None;
            }
            Ok(None) => {}
            Err(codec::CodecError::UnsupportedLevel { level }) => {
                warn!(%peer, level, "unsupported protocol level");
                refuse(chunks, ConnectReturnCode::RefusedProtocolVersion, Level::V311).await;
                return None;
            }
            Err(error) => {
                warn!(%peer, %error, "malformed CONNECT");
                return None;
            }
        }
        match tokio::time::timeout_at(deadline, reader.read_buf(buffer)).await {
            Ok(Ok(read)) if read > 0 => {}
            Ok(_) => return None,
            Err(_) => {
                warn!(%peer, "no CONNECT before the timeout");
                return None;
            }
        }
    };
    if extras.authentication_method {
        warn!(%peer, "mqtt 5 enhanced authentication asked for; not offered");
        let mut out = BytesMut::new();
        crate::v5::encode_connack_bad_authentication_method(&mut out);
        let _ = chunks.send(out.freeze()).await;
        return None;
    }
    // MQTT 5: a session outlives its connection only with a non-zero Session Expiry Interval,
    // and for at most the broker's own `session_expiry`.
    let mut session_expiry = state.config.session_expiry;
    let mut granted_expiry = None;
    let mut ends_with_connection = connect.clean_session;
    if level == Level::V5 {
        let asked = Duration::from_secs(u64::from(extras.session_expiry_seconds));
        // Clean Start decides what happens to an existing session now; the expiry decides
        // whether this one outlives the connection. MQTT 5 keeps them apart (3.1.2.4, 3.1.2.11).
        ends_with_connection = asked.is_zero();
        if asked > session_expiry {
            granted_expiry = Some(u32::try_from(session_expiry.as_secs()).unwrap_or(u32::MAX));
        }
        session_expiry = session_expiry.min(asked).max(Duration::from_secs(1));
    }
    let empty_client_id = connect.client_id.is_empty();
    let lifetime = Lifetime { expiry: session_expiry, ends_with_connection };
    match open(connect, level, &extras, lifetime, peer, state, connection).await {
        Ok((mut session, session_present)) => {
            session.will_properties = extras.will_properties;
            session.outbound_aliases = crate::v5::OutboundAliases::new(extras.topic_alias_maximum);
            session.client_packet_bytes_max = extras.maximum_packet_size.map(|bytes| bytes as usize);
            session.will_delay = Duration::from_secs(u64::from(extras.will_delay_seconds));
            let ack = ConnAck::new(ConnectReturnCode::Success, session_present);
            let mut out = BytesMut::new();
            match level {
                Level::V5 => {
                    let assigned = empty_client_id.then_some(session.client_id.as_str());
                    crate::v5::encode_connack(&ack, granted_expiry, packet_bytes_max(state), assigned, &mut out)
                }
                Level::V31 | Level::V311 => codec::encode(&Packet::ConnAck(ack), &mut out),
            }
            chunks.send(out.freeze()).await.ok()?;
            Some(session)
        }
        Err(code) => {
            refuse(chunks, code, level).await;
            None
        }
    }
}

/// The broker's maximum packet size, as CONNACK states it.
fn packet_bytes_max(state: &MqttState) -> u32 {
    u32::try_from(state.config.packet_bytes_max).unwrap_or(u32::MAX)
}

async fn refuse(chunks: &mpsc::Sender<Bytes>, code: ConnectReturnCode, level: Level) {
    let mut out = BytesMut::new();
    let ack = ConnAck::new(code, false);
    match level {
        Level::V5 => crate::v5::encode_connack(&ack, None, u32::MAX, None, &mut out),
        Level::V31 | Level::V311 => codec::encode(&Packet::ConnAck(ack), &mut out),
    }
    let _ = chunks.send(out.freeze()).await;
}

/// How long a session outlives its connection, as its CONNECT set it.
#[derive(Clone, Copy, Debug)]
struct Lifetime {
    expiry: Duration,
    ends_with_connection: bool,
}

/// Authenticates a CONNECT and takes over (or creates) its session.
async fn open(
    connect: Connect,
    level: Level,
    extras: &crate::v5::ConnectExtras,
    lifetime: Lifetime,
    peer: SocketAddr,
    state: &Arc<MqttState>,
    connection: u64,
) -> Result<(Session, bool), ConnectReturnCode> {
    if connect.protocol != mqttbytes::Protocol::V4 {
        // An MQTT 5 CONNECT is translated to the 3.1.1 form before it gets here (`v5`); one that
        // reached the 3.1.1 reader would have its properties misread.
        return Err(ConnectReturnCode::RefusedProtocolVersion);
    }
    if connect.client_id.is_empty() && !connect.clean_session {
        return Err(ConnectReturnCode::BadClientId);
    }
    let (vhost_name, principal) = authenticate(&connect, peer, state).await?;
    let vhost = state.broker.open_vhost(&principal, &vhost_name).await.map_err(|error| {
        warn!(%peer, %error, "vhost refused");
        ConnectReturnCode::NotAuthorized
    })?;
    let client_id =
        if connect.client_id.is_empty() { format!("warren-{connection}") } else { connect.client_id.clone() };
    let access = state.broker.access(&principal, &vhost_name);
    let permitted = Permitted::check(&access, &session_queue_name(&client_id)).await;
    // Resuming (or, with a clean session, deleting) an existing session's queue needs the
    // subscribe permissions on it, as RabbitMQ checks configure and read before it touches the
    // queue: otherwise anyone could take over another user's session by its client id. Checked
    // before the takeover, so a refused client disconnects nobody.
    if !permitted.subscribe && vhost.queue(&session_queue_name(&client_id), ConnectionId(connection)).is_ok() {
        warn!(%peer, %client_id, user = %principal.user, "no permission on the session's queue");
        return Err(ConnectReturnCode::NotAuthorized);
    }
    let key: SessionKey = (vhost_name.clone(), client_id.clone());
    let kick = Arc::new(Notify::new());
    let mut opening = Opening { state, key: &key, connection, done: false };
    let previous = {
        let mut sessions = state.sessions.lock().expect("sessions lock poisoned");
        let mut entry = SessionEntry::new(connection, kick.clone());
        let previous = sessions.remove(&key);
        if let Some(previous) = &previous {
            // What the session keeps moves to the new entry at once, so a connection that
            // takes the session over from this one while it opens inherits it too.
            entry.set_kept(previous.kept().clone());
            entry.record = previous.record;
            // The connection that still owes the handover: the one taken over, or the one that
            // one was itself waiting for.
            entry.awaiting_handover = previous.awaiting_handover.or(previous.connection);
        }
        sessions.insert(key.clone(), entry);
        previous
    };
    let mut handover = false;
    if let Some(previous) = &previous {
        if let Some(sweeper) = &previous.sweeper {
            sweeper.abort();
        }
        if let Some(will) = &previous.will {
            will.abort();
        }
        if previous.connection.is_some() {
            info!(%client_id, "session taken over by a new connection");
            previous.kick.notify_one();
            handover = true;
        }
        // A handover still owed (by a connection whose taker was refused, or by an expiry
        // under way) is waited for too.
        handover |= previous.awaiting_handover.is_some();
    }
    // A connection taken over first puts its unacknowledged deliveries back in the queue and
    // hands over what the session keeps (`Session::release`, which clears the entry's
    // `awaiting_handover`), so this one starts from all of it and the requeued messages come
    // first. Takeovers are rare, so this polls rather than keep a signal in every entry; it is
    // bounded, in case the old connection is stuck.
    if handover {
        let deadline = Instant::now() + HANDOVER_WAIT;
        let waiting = || {
            let sessions = state.sessions.lock().expect("sessions lock poisoned");
            sessions
                .get(&key)
                .is_some_and(|entry| entry.connection == Some(connection) && entry.awaiting_handover.is_some())
        };
        while waiting() {
            if Instant::now() >= deadline {
                // Carrying on from the state copied at the start could repeat what the old
                // connection did since (a QoS 2 step): refuse, and leave the session for the
                // handover to complete; a later connection waits for it again.
                warn!(%client_id, "the connection taken over did not let the session go in time; refused");
                let mut sessions = state.sessions.lock().expect("sessions lock poisoned");
                if let Some(entry) = sessions.get_mut(&key).filter(|entry| entry.connection == Some(connection)) {
                    entry.connection = None;
                }
                return Err(ConnectReturnCode::ServiceUnavailable);
            }
            tokio::time::sleep(HANDOVER_POLL).await;
        }
    }
    let kept = {
        let mut sessions = state.sessions.lock().expect("sessions lock poisoned");
        match sessions.get_mut(&key) {
            Some(entry) if entry.connection == Some(connection) => {
                entry.awaiting_handover = None;
                previous.is_some().then(|| entry.kept().clone())
            }
            // Taken over while it opened: the newer connection copied the state already; it
            // must not wait for this one, which has nothing newer to give.
            Some(entry) => {
                if entry.awaiting_handover == Some(connection) {
                    entry.awaiting_handover = None;
                }
                None
            }
            None => None,
        }
    };
    let inbox = Inbox::new(state.config.prefetch.max(1) * 4);
    let mut session = Session {
        state: state.clone(),
        peer,
        connection,
        client_id,
        clean_session: connect.clean_session,
        ends_with_connection: lifetime.ends_with_connection,
        stored_until_end: false,
        keep_alive: Duration::from_secs(u64::from(connect.keep_alive)),
        vhost,
        will: connect.last_will.map(Box::new),
        will_properties: None,
        permitted,
        level,
        session_expiry: lifetime.expiry,
        prefetch: state.config.prefetch,
        client_packet_bytes_max: None,
        aliases: crate::v5::TopicAliases::default(),
        outbound_aliases: None,
        will_delay: Duration::ZERO,
        no_local: BTreeSet::new(),
        retain_as_published: BTreeSet::new(),
        shared: BTreeMap::new(),
        ack_reasons: BTreeMap::new(),
        ids_exhausted: false,
        released: false,
        hold_until: None,
        window: None,
        subscription_ids: BTreeMap::new(),
        pending_identifier: None,
        queue: None,
        consumer: None,
        subscriptions: Vec::new(),
        inbox,
        inflight: HashMap::new(),
        resend: None,
        kept_dirty: false,
        delayed_will: None,
        awaiting_subscribe: None,
        principal: Box::new(principal.clone()),
        pending_retained: None,
        next_packet_id: 1,
        incoming_qos2: BTreeMap::new(),
        out: BytesMut::new(),
        kick,
        paused_on: None,
        sync: state.broker.journal().map(|journal| journal.sync_state()),
        waiting: ConfirmQueue::default(),
    };
    // From here the session lets the entry go (`release`, on drop too).
    opening.done = true;
    // An MQTT 5 client's Receive Maximum narrows the delivery window, before the session's
    // consumer is made.
    if let Some(receive_maximum) = extras.receive_maximum.filter(|maximum| *maximum > 0) {
        session.prefetch = session.prefetch.min(u32::from(receive_maximum));
    }
    // A delayed will still waiting: a resumed session cancels it; one that starts clean ends the
    // old session, which publishes it (3.1.2.5).
    let mut kept = kept;
    let pending_will = kept.as_mut().and_then(|kept| kept.will.take());
    let had_will = pending_will.is_some();
    if let Some(will) = pending_will.filter(|_| connect.clean_session) {
        debug!(client_id = %session.client_id, topic = %will.will.topic, "the old session ended: publishing its will");
        crate::inbound::publish_will(state, &session.vhost, will.will, will.properties.as_deref());
    }
    // The shared subscriptions it would rejoin are checked as a SUBSCRIBE checks them.
    let mut shares_allowed = HashSet::new();
    for extra in kept.iter().flat_map(|kept| &kept.extras).filter(|extra| extra.shared) {
        if crate::shared::permitted(&access, &extra.filter).await {
            shares_allowed.insert(extra.filter.clone());
        }
    }
    let session_present = session.resume(kept, &shares_allowed);
    if !session_present {
        session.forget_record();
    }
    // The record is rewritten from what this connection took over: without the will just
    // cancelled or published, and with what the connection taken over handed over last.
    if had_will || previous.is_some() {
        session.stored_until_end = session.ends_with_connection && session_present;
        let _ = session.keep();
    }
    info!(connection, %peer, client_id = %session.client_id, user = %principal.user, ?level, "mqtt connection open");
    Ok((session, session_present))
}

/// Lets the registry entry go if `open` ends before a `Session` exists to do it (a panic, or
/// its task dropped at an await): the entry no longer names this connection, and a handover
/// owed by it (it has nothing to hand over) is not waited for, so the client id is not locked
/// out.
struct Opening<'a> {
    state: &'a MqttState,
    key: &'a SessionKey,
    connection: u64,
    done: bool,
}

impl Drop for Opening<'_> {
    fn drop(&mut self) {
        if self.done {
            return;
        }
        let Ok(mut sessions) = self.state.sessions.lock() else { return };
        if let Some(entry) = sessions.get_mut(self.key) {
            if entry.connection == Some(self.connection) {
                entry.connection = None;
            }
            if entry.awaiting_handover == Some(self.connection) {
                entry.awaiting_handover = None;
            }
        }
    }
}

/// Checks the CONNECT's credentials. A username may name its vhost as `vhost:user`, as with
/// RabbitMQ's MQTT plugin.
async fn authenticate(
    connect: &Connect,
    peer: SocketAddr,
    state: &MqttState,
) -> Result<(VhostName, Principal), ConnectReturnCode> {
    let (username, password) = match &connect.login {
        Some(login) => (login.username.clone(), login.password.clone()),
        None if state.config.allow_anonymous => ("guest".to_owned(), "guest".to_owned()),
        None => {
            warn!(%peer, "anonymous CONNECT refused");
            return Err(ConnectReturnCode::NotAuthorized);
        }
    };
    let (vhost, user) = match username.split_once(':') {
        Some((vhost, user)) => (vhost.to_owned(), user.to_owned()),
        None => ("/".to_owned(), username),
    };
    let credentials = Credentials { username: UserName::new(&user), password, peer };
    let principal = state.broker.authenticate(&credentials).await.map_err(|error| {
        warn!(%peer, %user, %error, "mqtt login refused");
        ConnectReturnCode::BadUserNamePassword
    })?;
    Ok((VhostName::new(&vhost), principal))
}

impl Session {
    /// Picks up a persistent session (its queue, subscriptions and what it kept: see `kept`),
    /// or clears an old one for a clean session. Returns whether a session was present. After a
    /// broker restart a persistent session's queue is durable and so are its bindings: the
    /// subscriptions are read back from them, at the QoS kept in their arguments; the rest
    /// comes from the session's journal record (`MqttState::restore_session`).
    fn resume(&mut self, previous: Option<Kept>, shares_allowed: &HashSet<String>) -> bool {
        let existing = self.vhost.queue(&self.queue_name(), ConnectionId(self.connection)).ok();
        // A transient queue is that of a session that ends with its connection (one this
        // connection took over): there is no session to resume from it.
        let ended = existing.as_ref().is_some_and(|queue| queue.options().durability == Durability::Transient);
        if self.clean_session || ended {
            if let Some(queue) = existing {
                self.vhost.remove_queue(&queue);
            }
            // The session it replaces leaves its groups.
            let shared = previous.iter().flat_map(|kept| &kept.extras).filter(|extra| extra.shared);
            self.state.leave_groups(&self.vhost, &self.client_id, shared.map(|extra| extra.filter.as_str()));
            return false;
        }
        let kept = previous.unwrap_or_default();
        // Without its queue, subscriptions are not a session (they are restored from the
        // queue's bindings); shared subscriptions and packet ids still are.
        let stateful =
            kept.extras.iter().any(|extra| extra.shared) || !kept.released.is_empty() || !kept.incoming.is_empty();
        if existing.is_none() && !stateful {
            return false;
        }
        if let Some(queue) = existing {
            self.resume_queue(queue, kept.subscriptions);
        }
        for extra in kept.extras {
            if extra.shared {
                let joined = match crate::shared::parse(&extra.filter) {
                    Some((group, inner)) if !inner.is_empty() && shares_allowed.contains(&extra.filter) => {
                        self.subscribe_shared(&extra.filter, group, inner, extra.qos).is_ok()
                    }
                    _ => false,
                };
                if !joined {
                    warn!(client_id = %self.client_id, filter = %extra.filter, "shared subscription not rejoined");
                    self.state.leave_groups(&self.vhost, &self.client_id, [extra.filter.as_str()]);
                    continue;
                }
            } else if !self.subscriptions.iter().any(|(filter, _)| *filter == extra.filter) {
                continue;
            }
            let options = crate::v5::SubscriptionOptions {
                no_local: extra.no_local,
                retain_as_published: extra.retain_as_published,
                retain_handling: 0,
            };
            self.set_subscription_options(&extra.filter, options);
            if let Some(identifier) = extra.identifier {
                self.subscription_ids.insert(extra.filter, identifier);
            }
        }
        self.resend = crate::kept::Resend::new(kept.unacked);
        self.incoming_qos2 = kept.incoming.into_iter().collect();
        self.resume_released(kept.released);
        true
    }

    /// Takes the session's queue back, with its subscriptions: those the registry kept, else
    /// its bindings'.
    fn resume_queue(&mut self, queue: Arc<Queue>, previous_subscriptions: Vec<(String, QoS)>) {
        // An empty list may be a connection racing this one right after a restart: the bindings
        // are the truth then too.
        self.subscriptions =
            Some(previous_subscriptions).filter(|previous| !previous.is_empty()).unwrap_or_else(|| {
                queue
                    .bindings()
                    .iter()
                    .filter(|binding| binding.exchange.as_str() == crate::inbound::TOPIC_EXCHANGE)
                    .map(|binding| {
                        let granted = binding
                            .arguments
                            .get(crate::inbound::SUBSCRIPTION_QOS_ARGUMENT)
                            .and_then(warren_core::value::Value::as_i64);
                        let qos = match granted {
                            Some(0) => QoS::AtMostOnce,
                            Some(2) => QoS::ExactlyOnce,
                            _ => QoS::AtLeastOnce,
                        };
                        (translate::filter_of(&binding.key), qos)
                    })
                    .collect()
            });
        self.attach(queue);
    }

    /// Removes the journal record of the session this one replaced (it started afresh), if
    /// this connection still holds the entry (one that took it over since has the record).
    fn forget_record(&self) {
        let key: SessionKey = (self.vhost.name().clone(), self.client_id.clone());
        let (record, marks) = {
            let mut sessions = self.state.sessions.lock().expect("sessions lock poisoned");
            match sessions.get_mut(&key).filter(|entry| entry.connection == Some(self.connection)) {
                Some(entry) => {
                    let marks = std::mem::take(&mut entry.kept_mut().incoming);
                    entry.set_kept(Kept::NOTHING);
                    (entry.record.take(), marks)
                }
                None => (None, Vec::new()),
            }
        };
        self.state.forget_kept(self.vhost.name(), &self.client_id, record, &marks);
    }

    /// What the session keeps for its next connection (see `kept`). The subscriptions only
    /// `with_subscriptions`: the record leaves them to the durable bindings.
    pub(crate) fn kept(&self, with_subscriptions: bool) -> Kept {
        let mut extras = Vec::new();
        for (filter, qos) in &self.subscriptions {
            let no_local = self.no_local.contains(filter);
            let retain_as_published = self.retain_as_published.contains(filter);
            let identifier = self.subscription_ids.get(filter).copied();
            if no_local || retain_as_published || identifier.is_some() {
                let filter = filter.clone();
                extras.push(KeptSubscription {
                    filter,
                    qos: *qos,
                    shared: false,
                    no_local,
                    retain_as_published,
                    identifier,
                });
            }
        }
        for (path, shared) in &self.shared {
            extras.push(KeptSubscription {
                filter: path.clone(),
                qos: shared.qos,
                shared: true,
                no_local: false,
                retain_as_published: false,
                identifier: self.subscription_ids.get(path).copied(),
            });
        }
        let mut unacked: Vec<(MessageKey, u16)> = self.resend.iter().flat_map(|resend| resend.pairs()).collect();
        unacked.extend(self.inflight.iter().filter_map(|(id, inflight)| match inflight {
            Inflight::Queued { key: Some(key), .. } => Some((*key, *id)),
            _ => None,
        }));
        let mut kept = Kept {
            subscriptions: if with_subscriptions { self.subscriptions.clone() } else { Vec::new() },
            extras,
            released: self.released_ids(),
            incoming: self.incoming_qos2.iter().map(|(id, mark)| (*id, *mark)).collect(),
            unacked,
            // One that ends with its connection has expired by the time anyone reads this.
            expiry: if self.ends_with_connection { Duration::ZERO } else { self.session_expiry },
            left: None,
            will: self.delayed_will.as_deref().cloned(),
        };
        kept.bound();
        kept
    }

    /// Rewrites a persistent session's record, returning the position to wait for before what
    /// depends on it goes out. (The registry entry gets the session's state only when the
    /// connection lets it go, `release`: a connection that takes the session over waits for
    /// that handover.) `Err` when the connection must end instead of acknowledging what
    /// depends on the record: another connection has taken the session over (it carries on
    /// from the state handed over), or the store cannot write.
    pub(crate) fn keep(&mut self) -> Result<Option<Lsn>, End> {
        // A session that ends with its connection has nothing to keep for another.
        if self.ends_with_connection && !self.stored_until_end {
            return Ok(None);
        }
        let kept = self.kept(false);
        let key: SessionKey = (self.vhost.name().clone(), self.client_id.clone());
        let mut sessions = self.state.sessions.lock().expect("sessions lock poisoned");
        let Some(entry) = sessions.get_mut(&key).filter(|entry| entry.connection == Some(self.connection)) else {
            return Err(End::Abnormal("taken over by a new connection"));
        };
        self.kept_dirty = false;
        self.state
            .store_kept(self.vhost.name(), &self.client_id, &mut entry.record, &kept)
            .map_err(|_| End::Abnormal("message store failure"))
    }

    /// Waits (the caller bounds it) until held output may go; output still held by a store
    /// that failed or stopped is dropped, since what it depends on is not on disk.
    pub(crate) async fn flush_hold(&mut self) {
        loop {
            match self.output_held() {
                Ok(false) => return,
                Ok(true) => {}
                Err(_) => break,
            }
            if journal::changed(self.sync.as_mut()).await.is_err() {
                break;
            }
        }
        self.out.clear();
    }

    /// Holds everything written from now on until the store has synced up to `lsn`: the
    /// output stays in order, and waits for what it depends on (see `kept`).
    pub(crate) fn hold_output(&mut self, lsn: Lsn) {
        self.hold_until = Some(self.hold_until.map_or(lsn, |held| held.max(lsn)));
    }

    /// Whether the output is held (see `hold_output`); `Err` if the store failed to write
    /// what it waits for.
    fn output_held(&mut self) -> Result<bool, End> {
        let Some(lsn) = self.hold_until else { return Ok(false) };
        match self.sync.as_ref().map(|sync| sync.borrow().outcome(lsn)) {
            None | Some(Some(true)) => {
                self.hold_until = None;
                Ok(false)
            }
            Some(None) => Ok(true),
            Some(Some(false)) => Err(End::Abnormal("message store failure")),
        }
    }

    /// The session's queue name, as RabbitMQ names it.
    pub(crate) fn queue_name(&self) -> warren_core::name::QueueName {
        session_queue_name(&self.client_id)
    }

    /// The session's delivery window, made on first use (after Receive Maximum is known).
    pub(crate) fn window(&mut self) -> Arc<warren_core::queue::Credit> {
        let prefetch = self.prefetch;
        self.window.get_or_insert_with(|| warren_core::queue::Credit::new(prefetch)).clone()
    }

    /// Starts consuming from the session queue.
    pub(crate) fn attach(&mut self, queue: Arc<Queue>) {
        let consumer = Arc::new(Consumer {
            id: ConsumerId(self.connection),
            tag: warren_core::name::ConsumerTag::from(format!("mqtt-{}", self.client_id)),
            ack_mode: warren_core::queue::AckMode::Manual,
            exclusivity: warren_core::queue::Exclusivity::Shared,
            priority: 0,
            inbox: self.inbox.clone(),
            // The limit is the session's window, shared with its shared subscriptions.
            prefetch: warren_core::queue::Credit::new(0),
            shared: Some(self.window()),
        });
        if queue.add_consumer(consumer.clone()).is_ok() {
            self.consumer = Some(consumer);
            self.queue = Some(queue);
        }
    }

    async fn run<R: AsyncRead + Unpin>(
        &mut self,
        reader: &mut R,
        buffer: &mut BytesMut,
        chunks: &mpsc::Sender<Bytes>,
    ) -> End {
        let shutdown = self.state.broker.shutdown().clone();
        let inbox = self.inbox.clone();
        let kick = self.kick.clone();
        let mut last_packet = Instant::now();
        let mut sizer = warren_net::ReadSizer::new();
        let mut keep_alive_check = tokio::time::interval(Duration::from_millis(500));
        // Packets that arrived with CONNECT.
        if let Some(end) = self.process_all(buffer).await {
            return end;
        }
        loop {
            let held = match self.output_held() {
                Ok(held) => held,
                Err(end) => return end,
            };
            if !self.out.is_empty() && !held {
                // With room in the channel this is a plain send. When it is full (a client that
                // stopped reading), a takeover or shutdown must still end the session.
                match chunks.try_send(self.out.split().freeze()) {
                    Ok(()) => {}
                    Err(mpsc::error::TrySendError::Closed(_)) => return End::Abnormal("writer closed"),
                    Err(mpsc::error::TrySendError::Full(chunk)) => tokio::select! {
                        sent = chunks.send(chunk) => if sent.is_err() { return End::Abnormal("writer closed") },
                        _ = shutdown.cancelled() => return End::Abnormal("broker shutting down"),
                        _ = kick.notified() => return End::Abnormal("taken over by a new connection"),
                    },
                }
            }
            sizer.prepare(buffer);
            let paused = self.paused_on.clone();
            // Held output past its bound stops the reader, and a full held output stops the
            // draining (which would find no room and spin on the inbox's readiness).
            let reading_held = held && self.out.len() > HELD_OUTPUT_BYTES_MAX;
            let draining_held = held && self.out.len() >= crate::outbound::OUTPUT_BYTES_MAX;
            tokio::select! {
                // The writer gave up (the client stopped reading): end, even with nothing to send.
                _ = chunks.closed() => return End::Abnormal("writer closed"),
                _ = shutdown.cancelled() => return End::Abnormal("broker shutting down"),
                _ = kick.notified() => return End::Abnormal("taken over by a new connection"),
                _ = wait_for_room(paused.as_deref()), if paused.is_some() => {
                    self.paused_on = None;
                    last_packet = Instant::now();
                    if let Some(end) = self.process_all(buffer).await.or_else(|| self.drain_inbox()) {
                        return end;
                    }
                }
                // Held output is bounded too: a client cannot pile up replies while it waits.
                read = reader.read_buf(buffer), if paused.is_none() && !reading_held => match read {
                    Ok(0) | Err(_) => return End::Abnormal("socket closed"),
                    Ok(read) => {
                        sizer.observe(read);
                        last_packet = Instant::now();
                        if let Some(end) = self.process_all(buffer).await.or_else(|| self.drain_inbox()) {
                            return end;
                        }
                    }
                },
                _ = inbox.ready(), if !draining_held => {
                    if let Some(end) = self.drain_inbox() {
                        return end;
                    }
                }
                changed = journal::changed(self.sync.as_mut()), if !self.waiting.is_empty() || held => {
                    if changed.is_err() {
                        return End::Abnormal("message store stopped");
                    }
                    if reading_held {
                        // Not read meanwhile: its silence was ours.
                        last_packet = Instant::now();
                    }
                    if let Some(end) = self.release_synced() {
                        return end;
                    }
                }
                _ = keep_alive_check.tick() => {
                    // The spec's grace: one and a half keep-alive periods.
                    // A paused session is silent because we stopped reading it.
                    let silent = self.paused_on.is_none()
                        && !reading_held
                        && last_packet.elapsed() > self.keep_alive * 3 / 2;
                    if !self.keep_alive.is_zero() && silent {
                        warn!(client_id = %self.client_id, "keep-alive expired");
                        return End::Abnormal("keep-alive expired");
                    }
                }
            }
        }
    }

    /// Handles every complete packet in the buffer, with the authorisation checks a SUBSCRIBE
    /// to shared subscriptions waits for; `Some` when the connection must end.
    async fn process_all(&mut self, buffer: &mut BytesMut) -> Option<End> {
        loop {
            if let Some(end) = self.process(buffer) {
                return Some(end);
            }
            let waiting = self.awaiting_subscribe.take()?;
            let (subscribe, options, identifier) = *waiting;
            let access = self.state.broker.access(&self.principal, self.vhost.name());
            let mut shares_allowed = HashSet::new();
            for filter in &subscribe.filters {
                if crate::shared::permitted(&access, &filter.path).await {
                    shares_allowed.insert(filter.path.clone());
                }
            }
            if let Some(end) = self.subscribe_with(subscribe, &options, identifier, &shares_allowed) {
                return Some(end);
            }
        }
    }

    /// SUBSCRIBE with its MQTT 5 identifier, recorded for each filter it grants
    /// (`record_identifier`).
    fn subscribe_with(
        &mut self,
        subscribe: mqttbytes::v4::Subscribe,
        options: &[crate::v5::SubscriptionOptions],
        identifier: Option<usize>,
        shares_allowed: &HashSet<String>,
    ) -> Option<End> {
        self.pending_identifier = identifier;
        let end = self.subscribe(subscribe, options, shares_allowed);
        self.pending_identifier = None;
        end
    }

    /// Handles every complete packet in the buffer until one needs an asynchronous check.
    fn process(&mut self, buffer: &mut BytesMut) -> Option<End> {
        while self.paused_on.is_none() && self.awaiting_subscribe.is_none() {
            let decoded = match self.level {
                Level::V5 => crate::v5::decode(buffer, self.state.config.packet_bytes_max, &mut self.aliases),
                Level::V311 => codec::check_flags(buffer)
                    .and_then(|()| codec::decode(buffer, self.state.config.packet_bytes_max))
                    .map(|packet| packet.map(|p| (p, None))),
                Level::V31 => {
                    codec::decode(buffer, self.state.config.packet_bytes_max).map(|packet| packet.map(|p| (p, None)))
                }
            };
            match decoded {
                Ok(Some((Packet::Publish(publish), Some(crate::v5::Extra::Publish(properties))))) => {
                    if let Some(end) = self.publish(publish, Some(&properties)) {
                        return Some(end);
                    }
                }
                Ok(Some((Packet::Disconnect, Some(crate::v5::Extra::Disconnect(reason, expiry))))) => {
                    // A DISCONNECT may change the session's expiry (3.14.2.2.2): 0 ends the
                    // session with the connection; a session that was to end with it cannot be
                    // given one.
                    match expiry {
                        Some(0) => self.ends_with_connection = true,
                        Some(_) if self.ends_with_connection => {
                            return Some(
                                self.protocol_violation("DISCONNECT set a session expiry the CONNECT had not"),
                            );
                        }
                        Some(seconds) => {
                            self.session_expiry = Duration::from_secs(u64::from(seconds))
                                .min(self.state.config.session_expiry)
                                .max(Duration::from_secs(1));
                        }
                        None => {}
                    }
                    if reason == 0 {
                        return Some(End::Graceful);
                    }
                    // Any reason but "normal disconnection" keeps the will (3.14.4).
                    debug!(client_id = %self.client_id, reason, "client disconnected with a reason; the will stands");
                    return Some(End::Abnormal("client disconnected with a reason"));
                }
                Ok(Some((Packet::Subscribe(subscribe), extra))) => {
                    let (options, identifier) = match extra {
                        Some(crate::v5::Extra::Subscribe(options, identifier)) => (options, identifier),
                        _ => (Vec::new(), None),
                    };
                    if subscribe.filters.iter().any(|filter| crate::shared::parse(&filter.path).is_some()) {
                        // Shared subscriptions are authorised per group, which may ask an
                        // authentication backend: `process_all` does that, then resumes here.
                        self.awaiting_subscribe = Some(Box::new((subscribe, options, identifier)));
                        return None;
                    }
                    if let Some(end) = self.subscribe_with(subscribe, &options, identifier, &HashSet::new()) {
                        return Some(end);
                    }
                }
                Ok(Some((packet, _))) => {
                    if let Some(end) = self.handle(packet) {
                        return Some(end);
                    }
                }
                Ok(None) => return None,
                Err(error) => {
                    warn!(client_id = %self.client_id, peer = %self.peer, %error, "bad packet; disconnecting");
                    // MQTT 5's DISCONNECT names the fault (3.14.2.1).
                    return Some(End::Abnormal(match error {
                        codec::CodecError::TooLarge { .. } => "packet too large",
                        codec::CodecError::TopicAliasInvalid { .. } => "topic alias invalid",
                        codec::CodecError::AuthUnasked => "protocol violation",
                        _ => "malformed packet",
                    }));
                }
            }
        }
        None
    }

    fn handle(&mut self, packet: Packet) -> Option<End> {
        match packet {
            Packet::Publish(publish) => self.publish(publish, None),
            Packet::PubAck(ack) => self.acknowledged(ack.pkid),
            Packet::PubRel(release) => self.released(release.pkid),
            Packet::PubRec(received) => self.received(received.pkid),
            Packet::PubComp(completed) => self.completed(completed.pkid),
            Packet::Unsubscribe(unsubscribe) => self.unsubscribe(unsubscribe),
            Packet::PingReq => self.send(Packet::PingResp),
            Packet::Disconnect => Some(End::Graceful),
            Packet::Connect(_) => Some(self.protocol_violation("second CONNECT")),
            other => Some(self.protocol_violation(packet_name(&other))),
        }
    }

    pub(crate) fn protocol_violation(&self, what: &str) -> End {
        warn!(client_id = %self.client_id, peer = %self.peer, what, "protocol violation; disconnecting");
        End::Abnormal("protocol violation")
    }

    /// Sends an acknowledgement now, or once `lsn` is on disk and those before it have gone.
    pub(crate) fn send_after_sync(&mut self, lsn: Option<Lsn>, packet: Packet) -> Option<End> {
        let synced = lsn.is_none_or(|lsn| journal::is_synced(self.sync.as_ref(), lsn));
        if synced && self.waiting.is_empty() {
            return self.send(packet);
        }
        self.waiting.push(lsn, packet);
        None
    }

    /// The store synced further (or failed): sends the acknowledgements it covers. MQTT 3.1.1
    /// cannot refuse a publish, so one the store failed to write ends the connection unacked,
    /// and the client publishes it again after reconnecting.
    fn release_synced(&mut self) -> Option<End> {
        let state = *self.sync.as_mut()?.borrow_and_update();
        let mut released = Vec::new();
        self.waiting.release(state, |packet, synced| released.push((packet, synced)));
        for (packet, synced) in released {
            if !synced {
                warn!(client_id = %self.client_id, "message store failure; disconnecting");
                return Some(End::Abnormal("message store failure"));
            }
            self.send(packet);
        }
        None
    }

    pub(crate) fn send(&mut self, packet: Packet) -> Option<End> {
        match self.level {
            Level::V5 => {
                let reason = match &packet {
                    Packet::PubAck(ack) => self.ack_reasons.remove(&ack.pkid),
                    Packet::PubRec(received) => self.ack_reasons.remove(&received.pkid),
                    _ => None,
                };
                match reason {
                    Some(reason) => crate::v5::encode_ack_with_reason(&packet, reason, &mut self.out),
                    None => crate::v5::encode(&packet, &mut self.out),
                }
            }
            Level::V31 | Level::V311 => codec::encode(&packet, &mut self.out),
        }
        None
    }

    /// Publishes the will unless the client disconnected cleanly, then releases the session:
    /// unacknowledged deliveries go back to the queue; a clean session's queue is deleted, a
    /// persistent one's is kept with its subscriptions.
    fn finish(&mut self, end: End) {
        // MQTT 5 lets the server say why it closes (3.14); a closed socket has no one to tell.
        if let (Level::V5, End::Abnormal(reason)) = (self.level, end) {
            if let Some(code) = crate::v5::disconnect_reason(reason) {
                crate::v5::encode_disconnect(code, &mut self.out);
            }
        }
        if end != End::Graceful {
            if let Some(will) = self.will.take().map(|will| *will) {
                if !self.will_delay.is_zero() && !self.ends_with_connection && self.permitted.publish {
                    // MQTT 5's will delay (3.1.3.2.2): the will goes out after the delay, or
                    // when the session ends if that is sooner, unless a connection resumes the
                    // session first. Kept with the session, so a restart does not lose it.
                    let delay = self.will_delay.min(self.session_expiry);
                    debug!(client_id = %self.client_id, delay_ms = delay.as_millis() as u64, "last will delayed");
                    let properties = self.will_properties.take();
                    let due = std::time::SystemTime::now() + delay;
                    self.delayed_will = Some(Box::new(KeptWill { will, properties, due }));
                } else {
                    debug!(client_id = %self.client_id, topic = %will.topic, "publishing last will");
                    self.publish_will(will);
                }
            }
        }
        self.release();
    }

    /// If the connection that took the session over was refused (this one's handover came too
    /// late) and none holds it since, the session is this one's to let go, expiry and all, as
    /// if never taken over.
    fn reclaim_if_taker_refused(&self, sessions: &mut HashMap<SessionKey, SessionEntry>, key: &SessionKey) {
        if let Some(entry) = sessions
            .get_mut(key)
            .filter(|entry| entry.connection.is_none() && entry.awaiting_handover == Some(self.connection))
        {
            entry.connection = Some(self.connection);
            entry.generation = self.connection;
            entry.awaiting_handover = None;
        }
    }

    fn release(&mut self) {
        // Once: this runs from `finish`, and again on drop in case `finish` never ran.
        if std::mem::replace(&mut self.released, true) {
            return;
        }
        // What a persistent session keeps, taken before the deliveries in flight go back.
        let kept = self.kept(true);
        let had_no_local = !self.no_local.is_empty();
        self.no_local.clear();
        self.count_no_local(had_no_local);
        // Detach, requeue, then serve others, so the requeued messages keep their places.
        if let (Some(queue), Some(consumer)) = (&self.queue, &self.consumer) {
            queue.detach_consumer(consumer.id, &self.inbox);
        }
        self.detach_shared();
        self.requeue_inflight();
        self.requeue_inbox();
        self.release_shared();
        if let Some(queue) = &self.queue {
            queue.dispatch();
        }
        let key: SessionKey = (self.vhost.name().clone(), self.client_id.clone());
        let mut sessions = self.state.sessions.lock().expect("sessions lock poisoned");
        self.reclaim_if_taker_refused(&mut sessions, &key);
        let owes_handover = sessions.get(&key).is_some_and(|entry| entry.awaiting_handover == Some(self.connection));
        if owes_handover && self.ends_with_connection {
            // The session ends with this connection (an MQTT 5 Session Expiry of 0 can resume
            // a durable queue): its queue goes before the handover, outside the lock, so the
            // connection that took over, waiting for the handover, finds no session.
            drop(sessions);
            if let Some(queue) = self.queue.take() {
                self.vhost.remove_queue(&queue);
            }
            sessions = self.state.sessions.lock().expect("sessions lock poisoned");
            // The taker may have been refused meanwhile.
            self.reclaim_if_taker_refused(&mut sessions, &key);
        }
        let ours = sessions.get(&key).is_some_and(|entry| entry.connection == Some(self.connection));
        if !ours {
            // A newer connection took the session over; it owns the queue now, and waits for
            // what the session keeps (once: this runs again on drop).
            let mut ended_marks = Vec::new();
            if let Some(entry) = sessions.get_mut(&key) {
                if entry.awaiting_handover == Some(self.connection) {
                    entry.awaiting_handover = None;
                    if self.ends_with_connection {
                        // A session that ended with this connection leaves nothing to take
                        // over, and its inbound QoS 2 marks go with it.
                        ended_marks = kept.incoming;
                        entry.set_kept(Kept::NOTHING);
                    } else {
                        entry.set_kept(kept);
                    }
                }
            }
            drop(sessions);
            self.state.forget_kept(self.vhost.name(), &self.client_id, None, &ended_marks);
            return;
        }
        self.subscriptions.clear();
        if self.ends_with_connection {
            let record = sessions.remove(&key).and_then(|entry| entry.record);
            drop(sessions);
            self.state.forget_kept(self.vhost.name(), &self.client_id, record, &kept.incoming);
            if let Some(queue) = self.queue.take() {
                self.vhost.remove_queue(&queue);
            }
        } else if let Some(entry) = sessions.get_mut(&key) {
            entry.connection = None;
            let mut kept = kept;
            kept.left = Some(std::time::SystemTime::now());
            if self.queue.is_none() && kept.is_empty() {
                // Nothing to keep: no queue, no subscriptions, no ids, no will.
                let record = sessions.remove(&key).and_then(|entry| entry.record);
                drop(sessions);
                self.state.forget_kept(self.vhost.name(), &self.client_id, record, &[]);
                return;
            }
            // A store that cannot write has logged it; the state stays in memory.
            let _ = self.state.store_kept(self.vhost.name(), &self.client_id, &mut entry.record, &kept);
            entry.set_kept(kept);
            entry.sweeper = expire_later(&self.state, &self.vhost, key.clone(), self.connection, self.session_expiry);
            if let Some(will) = entry.kept().will.clone() {
                let delay = will.due.duration_since(std::time::SystemTime::now()).unwrap_or_default();
                entry.will = will_later(&self.state, &self.vhost, key, self.connection, will, delay);
            }
        }
    }
}

/// Ends a disconnected persistent session once its expiry has passed: its queue goes (if its
/// `x-expires`, the broker's longest expiry, has not already taken it), and so do its registry
/// entry and its journal record, so client ids that never come back do not accumulate. Acts
/// only if no connection has held the session since `generation` left it.
pub(crate) fn expire_later(
    state: &Arc<MqttState>,
    vhost: &Arc<Vhost>,
    key: SessionKey,
    generation: u64,
    expiry: Duration,
) -> Option<tokio::task::AbortHandle> {
    let runtime = tokio::runtime::Handle::try_current().ok()?;
    let (state, vhost) = (state.clone(), vhost.clone());
    let sweeper = runtime.spawn(async move {
        tokio::time::sleep(expiry).await;
        // Claimed under the registry's lock, which a connection that took the session before
        // is seen under; the removals (a queue, its messages, the definitions file) happen
        // outside it, so they stall no other client's CONNECT. A connection that comes
        // meanwhile waits for them as for a handover, then starts afresh.
        let (record, kept) = {
            let mut sessions = state.sessions.lock().expect("sessions lock poisoned");
            let Some(entry) =
                sessions.get_mut(&key).filter(|entry| entry.connection.is_none() && entry.generation == generation)
            else {
                return;
            };
            entry.awaiting_handover = Some(EXPIRING);
            let kept = entry.kept().clone();
            entry.set_kept(Kept::NOTHING);
            (entry.record.take(), kept)
        };
        if let Ok(queue) = vhost.queue(&session_queue_name(&key.1), ConnectionId(generation)) {
            vhost.remove_queue(&queue);
        }
        let shared = kept.extras.iter().filter(|extra| extra.shared);
        state.leave_groups(&vhost, &key.1, shared.map(|extra| extra.filter.as_str()));
        state.forget_kept(vhost.name(), &key.1, record, &kept.incoming);
        let mut sessions = state.sessions.lock().expect("sessions lock poisoned");
        match sessions.get_mut(&key) {
            Some(entry) if entry.connection.is_none() && entry.awaiting_handover == Some(EXPIRING) => {
                sessions.remove(&key);
            }
            // A connection took the session meanwhile and waits: it finds nothing to resume.
            Some(entry) if entry.awaiting_handover == Some(EXPIRING) => entry.awaiting_handover = None,
            _ => {}
        }
        drop(sessions);
        info!(client_id = %key.1, "mqtt session expired");
    });
    Some(sweeper.abort_handle())
}

/// Publishes a delayed will after `delay`, unless a connection has taken the session back by
/// then (which aborts the task). A will still waiting at shutdown stays in the session's record
/// and is rescheduled at the next start.
pub(crate) fn will_later(
    state: &Arc<MqttState>,
    vhost: &Arc<Vhost>,
    key: SessionKey,
    generation: u64,
    will: KeptWill,
    delay: Duration,
) -> Option<tokio::task::AbortHandle> {
    let runtime = tokio::runtime::Handle::try_current().ok()?;
    let (state, vhost) = (state.clone(), vhost.clone());
    let shutdown = state.broker.shutdown().clone();
    let task = runtime.spawn(async move {
        tokio::select! {
            _ = tokio::time::sleep(delay) => {}
            _ = shutdown.cancelled() => return,
        }
        // Claimed under the registry's lock: a connection that resumes the session from here on
        // finds no will to cancel, and one that resumed it before is seen here.
        let in_record = {
            let mut sessions = state.sessions.lock().expect("sessions lock poisoned");
            match sessions.get_mut(&key) {
                Some(entry) if entry.connection.is_some() || entry.generation != generation => return,
                Some(entry) => {
                    entry.will = None;
                    entry.take_will().is_some()
                }
                None => false,
            }
        };
        debug!(client_id = %key.1, topic = %will.will.topic, "publishing delayed last will");
        crate::inbound::publish_will(&state, &vhost, will.will, will.properties.as_deref());
        // Published first, then taken out of the record: a crash in between publishes it again
        // rather than never.
        let mut sessions = state.sessions.lock().expect("sessions lock poisoned");
        if let Some(entry) = sessions.get_mut(&key).filter(|entry| entry.generation == generation && in_record) {
            let kept = entry.kept().clone();
            let _ = state.store_kept(vhost.name(), &key.1, &mut entry.record, &kept);
        }
    });
    Some(task.abort_handle())
}

impl Drop for Session {
    fn drop(&mut self) {
        // Runs after `finish` (then a no-op) or instead of it if the task panicked, so the
        // consumer is detached and its messages returned either way.
        self.release();
    }
}

fn packet_name(packet: &Packet) -> &'static str {
    match packet {
        Packet::ConnAck(_) => "CONNACK from a client",
        Packet::PubRec(_) => "PUBREC (the broker sends no QoS 2)",
        Packet::PubComp(_) => "PUBCOMP (the broker sends no QoS 2)",
        Packet::SubAck(_) => "SUBACK from a client",
        Packet::UnsubAck(_) => "UNSUBACK from a client",
        Packet::PingResp => "PINGRESP from a client",
        _ => "unexpected packet",
    }
}

/// Waits until a full queue has room again.
async fn wait_for_room(queue: Option<&Queue>) {
    if let Some(queue) = queue {
        queue.wait_for_room().await;
    }
}

/// Writes chunks to the socket until the reader side is done.
async fn write_loop<W: AsyncWrite + Unpin>(mut writer: W, mut chunks: mpsc::Receiver<Bytes>, write_timeout: Duration) {
    while let Some(chunk) = chunks.recv().await {
        if let Err(error) = warren_net::write_all_bounded(&mut writer, &chunk, write_timeout).await {
            if error.kind() == std::io::ErrorKind::TimedOut {
                warn!("client stopped reading; closing the connection");
            }
            return;
        }
    }
    let _ = writer.shutdown().await;
}
