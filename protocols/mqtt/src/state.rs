//! What every MQTT connection shares: settings, the session registry (for takeover and
//! persistent sessions) and the retained messages.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use bytes::Bytes;
use mqttbytes::QoS;
use tokio::sync::Notify;
use warren_core::name::VhostName;
use warren_core::Broker;

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
    /// Subscriptions of a persistent session, kept while it is disconnected.
    pub subscriptions: Vec<(String, QoS)>,
}

/// A topic's retained message.
#[derive(Clone, Debug)]
pub(crate) struct Retained {
    pub payload: Bytes,
    pub qos: QoS,
}

#[derive(Debug)]
pub struct MqttState {
    pub(crate) broker: Arc<Broker>,
    pub(crate) config: MqttConfig,
    pub(crate) sessions: Mutex<HashMap<SessionKey, SessionEntry>>,
    pub(crate) retained: Mutex<HashMap<VhostName, HashMap<String, Retained>>>,
}

impl MqttState {
    pub fn new(broker: Arc<Broker>, config: MqttConfig) -> Arc<MqttState> {
        Arc::new(MqttState {
            broker,
            config,
            sessions: Mutex::new(HashMap::new()),
            retained: Mutex::new(HashMap::new()),
        })
    }

    /// Stores (or, for an empty payload, clears) a topic's retained message.
    pub(crate) fn retain(&self, vhost: &VhostName, topic: &str, retained: Retained) {
        let mut all = self.retained.lock().expect("retained lock poisoned");
        let topics = all.entry(vhost.clone()).or_default();
        if retained.payload.is_empty() {
            topics.remove(topic);
        } else if topics.len() < self.config.retained_max || topics.contains_key(topic) {
            topics.insert(topic.to_owned(), retained);
        } else {
            tracing::warn!(%vhost, topic, limit = self.config.retained_max, "retained message limit reached; not stored");
        }
    }

    /// The retained messages whose topic matches `filter`.
    pub(crate) fn retained_matching(&self, vhost: &VhostName, filter: &str) -> Vec<(String, Retained)> {
        let all = self.retained.lock().expect("retained lock poisoned");
        let Some(topics) = all.get(vhost) else { return Vec::new() };
        topics
            .iter()
            .filter(|(topic, _)| crate::translate::topic_matches(topic, filter))
            .map(|(topic, retained)| (topic.clone(), retained.clone()))
            .collect()
    }
}
