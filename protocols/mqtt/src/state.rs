//! What every MQTT connection shares: settings, the session registry (for takeover and
//! persistent sessions) and the retained messages.

use std::collections::{BTreeSet, HashMap};
use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use bytes::Bytes;
use mqttbytes::QoS;
use tokio::sync::Notify;
use warren_core::journal::{JournalRef, JournalUnavailable, Lsn};
use warren_core::name::{ExchangeName, QueueName, VhostName};
use warren_core::properties::Properties;
use warren_core::queue::Recovered;
use warren_core::value::{Table, Value};
use warren_core::{Broker, Message};

use crate::kept::{Kept, CLIENT_ID_BYTES_MAX, SESSION_PREFIX};

/// Limits and policies of the MQTT listener.
#[derive(Clone, Debug)]
pub struct MqttConfig {
    /// The largest packet accepted: 16 MiB, well above what devices send and far below memory.
    pub packet_bytes_max: usize,
    /// Unacknowledged QoS 1 deliveries per session: 20, Mosquitto's `max_inflight_messages`
    /// default (RabbitMQ's `mqtt.prefetch` is 10). The window bounds QoS 1 throughput to about
    /// window / round-trip time.
    pub prefetch: u32,
    /// How long a client has to send CONNECT after opening the socket.
    pub connect_timeout: Duration,
    /// Whether a CONNECT without credentials is let in (as `guest`); off unless configured.
    pub allow_anonymous: bool,
    /// The most retained messages per vhost: each is a topic's last message, kept in memory.
    pub retained_max: usize,
    /// How long a persistent session (clean_session=false) is kept without its client: one day,
    /// RabbitMQ's default maximum session expiry. (`x-expires` on the session queue; the
    /// longest `x-expires` accepts is about 49 days.)
    pub session_expiry: Duration,
    /// How long a write may stall (a client that stopped reading) before the connection is
    /// closed.
    pub write_timeout: Duration,
}

impl Default for MqttConfig {
    fn default() -> Self {
        MqttConfig {
            packet_bytes_max: 16 * 1024 * 1024,
            prefetch: 20,
            connect_timeout: Duration::from_secs(10),
            allow_anonymous: false,
            retained_max: 100_000,
            session_expiry: Duration::from_secs(24 * 60 * 60),
            write_timeout: warren_net::WRITE_TIMEOUT_DEFAULT,
        }
    }
}

/// A client's session, by vhost and client id.
pub(crate) type SessionKey = (VhostName, String);

/// A session in the registry.
#[derive(Debug)]
pub(crate) struct SessionEntry {
    /// The connection that holds it now, if any.
    pub connection: Option<u64>,
    /// The connection that held it last: a sweep scheduled when that one left acts only if no
    /// other connection has held the session since.
    pub generation: u64,
    /// Tells that connection to go (a newer one took the session over).
    pub kick: Arc<Notify>,
    /// The task that forgets this disconnected session once its queue expires; aborted when a
    /// connection takes the session back, so each entry has at most one.
    pub sweeper: Option<tokio::task::AbortHandle>,
    /// What a persistent session keeps for its next connection, written when its connection
    /// lets it go (a takeover waits for that handover); `None` for nothing (most entries: clean sessions keep nothing),
    /// so an entry stays small (see `kept` and `set_kept`).
    kept: Option<Box<Kept>>,
    /// The journal record of `kept`, when it has one.
    pub record: Option<u64>,
    /// The connection that holds the entry took the session over from this one, still
    /// connected, and waits for it to hand over what it keeps (`Session::release`); only that
    /// connection may.
    pub awaiting_handover: Option<u64>,
    /// A delayed will waiting to be published; aborted when a connection takes the session
    /// back (it would not be published then anyway).
    pub will: Option<tokio::task::AbortHandle>,
}

impl SessionEntry {
    /// A registry entry for a connection that now holds the session.
    pub(crate) fn new(connection: u64, kick: Arc<Notify>) -> SessionEntry {
        SessionEntry {
            connection: Some(connection),
            generation: connection,
            kick,
            sweeper: None,
            kept: None,
            record: None,
            awaiting_handover: None,
            will: None,
        }
    }

    /// What the session keeps.
    pub(crate) fn kept(&self) -> &Kept {
        static NOTHING: Kept = Kept::NOTHING;
        self.kept.as_deref().unwrap_or(&NOTHING)
    }

    /// What the session keeps, to change in place.
    pub(crate) fn kept_mut(&mut self) -> &mut Kept {
        self.kept.get_or_insert_with(|| Box::new(Kept::NOTHING))
    }

    pub(crate) fn set_kept(&mut self, kept: Kept) {
        self.kept = (kept != Kept::NOTHING).then(|| Box::new(kept));
    }

    /// Takes the delayed will out of what the session keeps.
    pub(crate) fn take_will(&mut self) -> Option<crate::kept::KeptWill> {
        self.kept.as_deref_mut().and_then(|kept| kept.will.take())
    }
}

/// A topic's retained message.
#[derive(Clone, Debug)]
pub(crate) struct Retained {
    pub payload: Bytes,
    pub qos: QoS,
    /// Its record in the journal, when the broker has one.
    pub journal_id: Option<u64>,
    /// An MQTT 5 publisher's properties, in their AMQP form (as `v5::apply_publish_properties`
    /// makes them), sent with the message to MQTT 5 subscribers.
    pub properties: Option<Arc<Properties>>,
    /// When it expires (its Message Expiry Interval): it is not sent after, and is dropped
    /// (3.3.2.3.3). Wall-clock time, as it survives restarts.
    pub expires_at: Option<SystemTime>,
}

impl Retained {
    /// A retained message from a PUBLISH (or will) and an MQTT 5 publisher's properties.
    pub(crate) fn new(payload: Bytes, qos: QoS, properties: Option<&mqttbytes::v5::PublishProperties>) -> Retained {
        let expires_at = properties
            .and_then(|properties| properties.message_expiry_interval)
            .map(|seconds| SystemTime::now() + Duration::from_secs(u64::from(seconds)));
        let properties = properties.map(|from| {
            let mut into = Properties::default();
            crate::v5::apply_publish_properties(from, &mut into);
            Arc::new(into)
        });
        Retained { payload, qos, journal_id: None, properties, expires_at }
    }

    fn expired(&self, now: SystemTime) -> bool {
        self.expires_at.is_some_and(|at| at <= now)
    }
}

/// The header of a journaled retained message that holds when it expires (milliseconds since
/// the Unix epoch).
pub(crate) const RETAINED_EXPIRES_HEADER: &str = "x-mqtt-retained-expires";

/// Retained messages are journaled as messages of a pseudo-queue per topic, named with this
/// prefix, which no client can declare (`amq.` names are reserved). At start the server hands
/// these back to [`MqttState::restore_retained`] instead of to a queue.
pub const RETAINED_PREFIX: &str = "amq.mqtt-retained/";

/// The pseudo-queue of a topic's retained message.
fn retained_queue(topic: &str) -> QueueName {
    QueueName::from(format!("{RETAINED_PREFIX}{topic}"))
}

/// The longest topic whose retained message is stored: the pseudo-queue's name must fit the
/// journal's 16-bit name length with the prefix.
const RETAINED_TOPIC_BYTES_MAX: usize = 60_000;

#[derive(Debug)]
pub struct MqttState {
    pub(crate) broker: Arc<Broker>,
    pub(crate) config: MqttConfig,
    pub(crate) sessions: Mutex<HashMap<SessionKey, SessionEntry>>,
    pub(crate) retained: Mutex<HashMap<VhostName, HashMap<String, Retained>>>,
    /// The members of each shared subscription (`$share/...`, by vhost): the client ids of the
    /// sessions that hold it, connected or kept for a client that will come back. A group's
    /// queue lives as long as it has a member (`shared`); changed only under this lock.
    pub(crate) groups: Mutex<HashMap<(VhostName, String), BTreeSet<String>>>,
    /// Some session's state could not be read back at start: group queues without a known
    /// member are kept then (their members may be in what was not read).
    pub(crate) sessions_unread: std::sync::atomic::AtomicBool,
    /// Sessions with an MQTT 5 No Local subscription. While there are none, publishes carry no
    /// origin header, so the common case pays nothing for the feature.
    pub(crate) no_local_sessions: std::sync::atomic::AtomicUsize,
}

impl MqttState {
    pub fn new(broker: Arc<Broker>, config: MqttConfig) -> Arc<MqttState> {
        Arc::new(MqttState {
            broker,
            config,
            sessions: Mutex::new(HashMap::new()),
            retained: Mutex::new(HashMap::new()),
            groups: Mutex::new(HashMap::new()),
            sessions_unread: std::sync::atomic::AtomicBool::new(false),
            no_local_sessions: std::sync::atomic::AtomicUsize::new(0),
        })
    }

    /// Stores (or, for an empty payload, clears) a topic's retained message, journaling the
    /// change when the broker has a journal. Returns the journal position to wait for before
    /// acknowledging the publish that set it (`None`: nothing to wait for). A journal that
    /// cannot write refuses the change (the previous retained message stays).
    pub(crate) fn retain(
        &self,
        vhost: &VhostName,
        topic: &str,
        mut retained: Retained,
    ) -> Result<Option<Lsn>, JournalUnavailable> {
        let mut all = self.retained.lock().expect("retained lock poisoned");
        let topics = all.entry(vhost.clone()).or_default();
        let journal = self.broker.journal().filter(|_| topic.len() <= RETAINED_TOPIC_BYTES_MAX);
        let pseudo_queue = retained_queue(topic);
        let mut lsn = None;
        if !retained.payload.is_empty() {
            if topics.len() >= self.config.retained_max && !topics.contains_key(topic) {
                tracing::warn!(%vhost, topic, limit = self.config.retained_max, "retained message limit reached; not stored");
                return Ok(None);
            }
            if let Some(journal) = journal {
                let message = retained_message(topic, &retained);
                match journal.publish(vhost, &[&pseudo_queue], &message) {
                    Ok(reference) => {
                        retained.journal_id = Some(reference.id);
                        lsn = journal.confirms_wait().then_some(reference.lsn);
                    }
                    Err(unavailable) => {
                        tracing::warn!(%vhost, topic, "message store cannot write; retained message not stored");
                        return Err(unavailable);
                    }
                }
            }
        }
        let previous =
            if retained.payload.is_empty() { topics.remove(topic) } else { topics.insert(topic.to_owned(), retained) };
        // The new record first, then the old one's removal: a crash between leaves both, and
        // the newer wins at restore.
        if let (Some(journal), Some(id)) = (journal, previous.and_then(|previous| previous.journal_id)) {
            journal.removed(vhost, &pseudo_queue, id);
            lsn = lsn.or_else(|| journal.confirms_wait().then(|| journal.appended()));
        }
        Ok(lsn)
    }

    /// Whether a journaled queue name is one of the adapter's pseudo-queues (retained messages
    /// and session state), which [`MqttState::restore`] takes instead of a queue.
    pub fn is_pseudo_queue(name: &QueueName) -> bool {
        name.as_str().starts_with(RETAINED_PREFIX) || name.as_str().starts_with(SESSION_PREFIX)
    }

    /// Puts back what the journal held for a pseudo-queue at start.
    pub fn restore(self: &Arc<Self>, vhost: &VhostName, pseudo_queue: &QueueName, found: Vec<Recovered>) {
        if pseudo_queue.as_str().starts_with(SESSION_PREFIX) {
            self.restore_session(vhost, pseudo_queue, found);
        } else {
            self.restore_retained(vhost, pseudo_queue, found);
        }
    }

    /// Puts back the retained messages found in the journal at start: per topic, the newest
    /// record wins and older ones (left by a crash) are removed.
    pub fn restore_retained(&self, vhost: &VhostName, pseudo_queue: &QueueName, found: Vec<Recovered>) {
        let (Some(journal), Some(topic)) = (self.broker.journal(), pseudo_queue.as_str().strip_prefix(RETAINED_PREFIX))
        else {
            return;
        };
        let Some(records) = read_records(journal.as_ref(), vhost, pseudo_queue, found) else { return };
        let Some((id, message)) = newest_record(journal.as_ref(), vhost, pseudo_queue, records, Some) else { return };
        let qos = crate::outbound::message_qos(&message);
        let headers = message.properties.headers.as_ref();
        let expires_at = headers
            .and_then(|headers| headers.get(RETAINED_EXPIRES_HEADER))
            .and_then(Value::as_i64)
            .map(|ms| UNIX_EPOCH + Duration::from_millis(u64::try_from(ms).unwrap_or(0)));
        // Its MQTT 5 properties are the journaled message's (the adapter's own headers are
        // left out when they are sent).
        let properties = Some(Arc::new(message.properties));
        let retained = Retained { payload: message.body, qos, journal_id: Some(id), properties, expires_at };
        self.retained
            .lock()
            .expect("retained lock poisoned")
            .entry(vhost.clone())
            .or_default()
            .insert(topic.to_owned(), retained);
    }

    /// Journals a session's kept state, replacing its previous record (the new record first,
    /// then the old one's removal). Without a store, or for a client id too long to name a
    /// record, the state stays in memory only. Returns the position to wait for before what
    /// depends on the record goes out (`None`: nothing to wait for).
    pub(crate) fn store_kept(
        &self,
        vhost: &VhostName,
        client_id: &str,
        record: &mut Option<u64>,
        kept: &Kept,
    ) -> Result<Option<Lsn>, JournalUnavailable> {
        let Some(journal) = self.broker.journal().filter(|_| client_id.len() <= CLIENT_ID_BYTES_MAX) else {
            return Ok(None);
        };
        let pseudo_queue = crate::kept::session_queue(client_id);
        let message = Message {
            exchange: ExchangeName::new(""),
            routing_key: warren_core::topic::RoutingKey::new(client_id),
            properties: Properties { delivery_mode: Some(2), ..Properties::default() },
            body: kept.encode(),
            journal: None,
        };
        match journal.publish(vhost, &[&pseudo_queue], &message) {
            Ok(reference) => {
                if let Some(previous) = record.replace(reference.id) {
                    journal.removed(vhost, &pseudo_queue, previous);
                }
                Ok(journal.confirms_wait().then_some(reference.lsn))
            }
            Err(unavailable) => {
                tracing::warn!(%vhost, client_id, "message store cannot write the session's state");
                Err(unavailable)
            }
        }
    }

    /// Removes a session's journal record and its inbound QoS 2 marks (the session ended).
    pub(crate) fn forget_kept(
        &self,
        vhost: &VhostName,
        client_id: &str,
        record: Option<u64>,
        marks: &[(u16, Option<u64>)],
    ) {
        let Some(journal) = self.broker.journal() else { return };
        let pseudo_queue = crate::kept::session_queue(client_id);
        for id in record.into_iter().chain(marks.iter().filter_map(|(_, mark)| *mark)) {
            journal.removed(vhost, &pseudo_queue, id);
        }
    }

    /// Puts back a persistent session's kept state found in the journal at start: the newest
    /// record that reads back wins, older ones (left by a crash) are removed. The session
    /// expires, and a delayed will goes out, as if its connection had just ended.
    pub fn restore_session(self: &Arc<Self>, vhost_name: &VhostName, pseudo_queue: &QueueName, found: Vec<Recovered>) {
        let (Some(journal), Some(client_id)) =
            (self.broker.journal(), pseudo_queue.as_str().strip_prefix(SESSION_PREFIX))
        else {
            return;
        };
        let Some(records) = read_records(journal.as_ref(), vhost_name, pseudo_queue, found) else {
            self.sessions_unread.store(true, std::sync::atomic::Ordering::Relaxed);
            return;
        };
        // Inbound QoS 2 messages' marks (see `kept`), apart from the session's own records.
        let mut marks = Vec::new();
        let mut states = Vec::new();
        for (id, message) in records {
            let marked = message
                .as_ref()
                .and_then(|message| message.properties.headers.as_ref())
                .and_then(|headers| headers.get(crate::inbound::PACKET_ID_HEADER))
                .and_then(Value::as_i64)
                .and_then(|packet_id| u16::try_from(packet_id).ok());
            match marked {
                Some(packet_id) => marks.push((packet_id, Some(id))),
                None => states.push((id, message)),
            }
        }
        let decode = |message: Message| Kept::decode(message.body);
        let newest = newest_record(journal.as_ref(), vhost_name, pseudo_queue, states, decode);
        if self.broker.vhost(vhost_name).is_none() {
            self.forget_kept(vhost_name, client_id, newest.as_ref().map(|(id, _)| *id), &marks);
            return;
        }
        let (record, mut kept) = match newest {
            Some((id, kept)) => (Some(id), kept),
            None if marks.is_empty() => return,
            None => (None, Kept { expiry: self.config.session_expiry, ..Kept::NOTHING }),
        };
        // One mark per packet id: the newest (two can only be left by a fault), the others go.
        marks.sort_unstable();
        let mut incoming: Vec<(u16, Option<u64>)> = Vec::with_capacity(marks.len());
        for (packet_id, mark) in marks {
            match incoming.last_mut() {
                Some(last) if last.0 == packet_id => {
                    if let Some(older) = std::mem::replace(&mut last.1, mark) {
                        journal.removed(vhost_name, pseudo_queue, older);
                    }
                }
                _ => incoming.push((packet_id, mark)),
            }
        }
        kept.incoming = incoming;
        // Its shared subscriptions keep their groups' queues (restored with the definitions)
        // for it to rejoin.
        let mut groups = self.groups.lock().expect("groups lock poisoned");
        for extra in kept.extras.iter().filter(|extra| extra.shared) {
            groups.entry((vhost_name.clone(), extra.filter.clone())).or_default().insert(client_id.to_owned());
        }
        drop(groups);
        let key: SessionKey = (vhost_name.clone(), client_id.to_owned());
        let mut entry = SessionEntry::new(0, Arc::new(Notify::new()));
        entry.connection = None;
        entry.set_kept(kept);
        entry.record = record;
        self.sessions.lock().expect("sessions lock poisoned").insert(key, entry);
    }

    /// Starts the clocks of the sessions restored at start: their expiry, counted from when
    /// their client left (or from now, if it was connected at the crash), and their delayed
    /// wills. Called once every pseudo-queue is restored, so a will that is already due cannot
    /// race the restore of the retained messages it may replace.
    pub fn start_restored(self: &Arc<Self>) {
        self.settle_groups();
        let now = SystemTime::now();
        let mut sessions = self.sessions.lock().expect("sessions lock poisoned");
        for (key, entry) in sessions.iter_mut() {
            if entry.generation != 0 || entry.connection.is_some() || entry.sweeper.is_some() {
                continue;
            }
            let Some(vhost) = self.broker.vhost(&key.0) else { continue };
            let gone_for = entry.kept().left.and_then(|left| now.duration_since(left).ok()).unwrap_or_default();
            let expiry = entry.kept().expiry.saturating_sub(gone_for);
            entry.sweeper = crate::session::expire_later(self, &vhost, key.clone(), 0, expiry);
            if let Some(will) = entry.kept().will.clone() {
                let delay = will.due.duration_since(now).unwrap_or_default();
                entry.will = crate::session::will_later(self, &vhost, key.clone(), 0, will, delay);
            }
        }
    }

    /// The retained messages whose topic matches `filter`. Expired ones are dropped.
    pub(crate) fn retained_matching(&self, vhost: &VhostName, filter: &str) -> Vec<(String, Retained)> {
        let now = SystemTime::now();
        let mut all = self.retained.lock().expect("retained lock poisoned");
        let Some(topics) = all.get_mut(vhost) else { return Vec::new() };
        let mut matching = Vec::new();
        let mut expired = Vec::new();
        for (topic, retained) in topics.iter() {
            if crate::translate::topic_matches(topic, filter) {
                if retained.expired(now) {
                    expired.push(topic.clone());
                } else {
                    matching.push((topic.clone(), retained.clone()));
                }
            }
        }
        for topic in expired {
            let Some(retained) = topics.remove(&topic) else { continue };
            if let (Some(journal), Some(id)) = (self.broker.journal(), retained.journal_id) {
                journal.removed(vhost, &retained_queue(&topic), id);
            }
        }
        matching
    }
}

/// Of a pseudo-queue's records found at start, the newest that reads back and decodes, with its
/// id; the others (older ones left by a crash between a rewrite's two steps, or damaged ones)
/// are removed. `None` if none does, or if the journal cannot read now (then nothing is
/// removed, and the next start tries again).
fn newest_record<T>(
    journal: &dyn warren_core::journal::Journal,
    vhost: &VhostName,
    pseudo_queue: &QueueName,
    records: Vec<(u64, Option<Message>)>,
    decode: impl Fn(Message) -> Option<T>,
) -> Option<(u64, T)> {
    let decoded: Vec<(u64, Option<T>)> =
        records.into_iter().map(|(id, message)| (id, message.and_then(&decode))).collect();
    let newest = decoded.iter().rposition(|(_, value)| value.is_some());
    let mut kept = None;
    for (index, (id, value)) in decoded.into_iter().enumerate() {
        if Some(index) == newest {
            kept = value.map(|value| (id, value));
        } else {
            journal.removed(vhost, pseudo_queue, id);
        }
    }
    kept
}

/// A pseudo-queue's records found at start, read back (`None` for a damaged one), by id;
/// `None` if the journal cannot read now: nothing is lost, the next start tries again.
fn read_records(
    journal: &dyn warren_core::journal::Journal,
    vhost: &VhostName,
    pseudo_queue: &QueueName,
    found: Vec<Recovered>,
) -> Option<Vec<(u64, Option<Message>)>> {
    let references: Vec<JournalRef> = found.iter().map(|recovered| recovered.reference).collect();
    let Ok(messages) = journal.read(&references) else {
        tracing::warn!(%vhost, queue = %pseudo_queue, "cannot read stored mqtt state back; not restored");
        return None;
    };
    Some(references.iter().map(|reference| reference.id).zip(messages).collect())
}

/// A retained message as journaled: the payload, persistent, with its MQTT 5 properties, its
/// QoS in the header MQTT deliveries carry it in, and when it expires.
fn retained_message(topic: &str, retained: &Retained) -> Message {
    let mut properties = retained.properties.as_deref().cloned().unwrap_or_default();
    properties.delivery_mode = Some(2);
    let headers = properties.headers.get_or_insert_with(Table::new);
    headers.insert(crate::inbound::QOS_HEADER, Value::U8(retained.qos as u8));
    if let Some(at) = retained.expires_at {
        let ms = at.duration_since(UNIX_EPOCH).unwrap_or_default().as_millis();
        headers.insert(RETAINED_EXPIRES_HEADER, Value::I64(i64::try_from(ms).unwrap_or(i64::MAX)));
    }
    Message {
        exchange: ExchangeName::new(crate::inbound::TOPIC_EXCHANGE),
        routing_key: crate::translate::routing_key(topic),
        properties,
        body: retained.payload.clone(),
        journal: None,
    }
}
