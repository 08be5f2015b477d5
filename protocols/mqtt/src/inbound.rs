//! Packets from the client: PUBLISH (QoS 0, 1 and 2), PUBREL, SUBSCRIBE and UNSUBSCRIBE, and the
//! last will, which is published like a PUBLISH.

use bytes::Bytes;
use mqttbytes::v4::{
    LastWill, Packet, PubAck, PubComp, PubRec, Publish, SubAck, Subscribe, SubscribeReasonCode, UnsubAck, Unsubscribe,
};
use mqttbytes::QoS;
use std::sync::Arc;
use tracing::warn;
use warren_core::name::{ConnectionId, ExchangeName, QueueName};
use warren_core::properties::Properties;
use warren_core::queue::{Durability, QueueOptions};
use warren_core::value::{Table, Value};
use warren_core::vhost::{Declare, Published};

use warren_core::{Message, Queue, Vhost};

use crate::session::{End, Session};
use crate::state::{MqttState, Retained};
use crate::translate;

/// The exchange every MQTT topic rides, as in RabbitMQ.
pub(crate) const TOPIC_EXCHANGE: &str = "amq.topic";
/// The header that carries an MQTT publish's QoS to other MQTT subscribers.
pub(crate) const QOS_HEADER: &str = "x-mqtt-publish-qos";
/// The connection an MQTT publish came from, for MQTT 5's No Local (set only while a session
/// has such a subscription).
pub(crate) const ORIGIN_HEADER: &str = "x-mqtt-origin";
/// Set on a message published with RETAIN, for MQTT 5's Retain As Published.
pub(crate) const RETAIN_HEADER: &str = "x-mqtt-retain";
/// On an inbound QoS 2 message of a persistent session, its packet id: the message's record
/// then also marks the id in the session's pseudo-queue (see `kept`).
pub(crate) const PACKET_ID_HEADER: &str = "x-mqtt-packet-id";
/// The binding argument that keeps a subscription's granted QoS.
pub(crate) const SUBSCRIPTION_QOS_ARGUMENT: &str = "x-mqtt-subscription-qos";
/// The highest QoS granted to subscriptions: QoS 2 both ways (RabbitMQ grants at most 1).
const GRANTED_QOS_MAX: QoS = QoS::ExactlyOnce;
/// The most subscriptions (ordinary and shared) one session holds: each is a binding and some
/// state, and SUBSCRIBE work grows with their number (each checks and replaces bindings), so a
/// client must not add them without end. A new filter past it is refused (SUBACK
/// failure; MQTT 5: 0x97, quota exceeded); a device needs a handful.
pub(crate) const SUBSCRIPTIONS_MAX: usize = 1_000;

impl Session {
    /// A client's PUBLISH; `properties` are an MQTT 5 client's.
    pub(crate) fn publish(
        &mut self,
        publish: Publish,
        properties: Option<&mqttbytes::v5::PublishProperties>,
    ) -> Option<End> {
        if publish.topic.is_empty() || mqttbytes::has_wildcards(&publish.topic) {
            warn!(client_id = %self.client_id, peer = %self.peer, topic = %publish.topic, "PUBLISH to a wildcard or empty topic; disconnecting");
            // MQTT 5 says Topic Name invalid (0x90); 3.1.1 just closes.
            return Some(End::Abnormal("topic name invalid"));
        }
        if !self.permitted.publish {
            if self.level == crate::codec::Level::V5 && publish.qos != QoS::AtMostOnce {
                // MQTT 5 refuses one PUBLISH with a reason code: 0x87, not authorised.
                warn!(client_id = %self.client_id, "no write permission on amq.topic; publish refused");
                return self.acknowledge(publish.pkid, publish.qos, None, crate::v5::REASON_NOT_AUTHORIZED, None);
            }
            // MQTT 3.1.1 has no way to refuse one PUBLISH: RabbitMQ closes the connection.
            warn!(client_id = %self.client_id, "no write permission on amq.topic; disconnecting");
            return Some(End::Abnormal("publish not authorised"));
        }
        if publish.qos == QoS::ExactlyOnce && self.incoming_qos2.contains_key(&publish.pkid) {
            // A resend before PUBREL: already routed once, so only acknowledge again, once what
            // the first acknowledgement waited for is on disk (it may have waited on another
            // connection).
            let lsn = self.appended_lsn();
            return self.send_after_sync(lsn, Packet::PubRec(PubRec::new(publish.pkid)));
        }
        let mut retained_lsn = None;
        if publish.retain {
            let retained = Retained::new(publish.payload.clone(), publish.qos, properties);
            match self.state.retain(self.vhost.name(), &publish.topic, retained) {
                Ok(lsn) => retained_lsn = lsn,
                Err(_) if publish.qos != QoS::AtMostOnce => {
                    warn!(client_id = %self.client_id, "message store failure; disconnecting");
                    return Some(End::Abnormal("message store failure"));
                }
                Err(_) => {}
            }
        }
        // A persistent session's QoS 2 PUBLISH is marked in its own record (see `kept`), so
        // the message and the id that recognises its resend are stored together.
        let marker = (publish.qos == QoS::ExactlyOnce).then(|| self.inbound_marker()).flatten();
        let marker = marker.as_ref().map(|queue| (queue, publish.pkid));
        let origin = Origin { connection: self.connection, retained: publish.retain, marker };
        let (mut published, routed) = self.route(&publish.topic, publish.payload, publish.qos, properties, origin);
        // A retained message is stored before its publish is acknowledged, like a queued one.
        published.lsn = published.lsn.max(retained_lsn);
        if published.unstored && publish.qos != QoS::AtMostOnce {
            warn!(client_id = %self.client_id, "message store failure; disconnecting");
            return Some(End::Abnormal("message store failure"));
        }
        // MQTT 5 says more than "received": no subscriber, or a queue over its limit.
        let reason = if published.rejected {
            crate::v5::REASON_QUOTA_EXCEEDED
        } else if routed == 0 {
            crate::v5::REASON_NO_MATCHING_SUBSCRIBERS
        } else {
            crate::v5::REASON_SUCCESS
        };
        let marked = marker.and(published.journal_id);
        self.acknowledge(publish.pkid, publish.qos, published.lsn, reason, marked)
    }

    /// The pseudo-queue that marks this persistent session's inbound QoS 2 messages in their
    /// own records; `None` for a session that ends with its connection, or without a store.
    fn inbound_marker(&self) -> Option<QueueName> {
        let persistent = !self.ends_with_connection && self.client_id.len() <= crate::kept::CLIENT_ID_BYTES_MAX;
        (persistent && self.state.broker.journal().is_some()).then(|| crate::kept::session_queue(&self.client_id))
    }

    /// PUBACK (QoS 1) or PUBREC (QoS 2), with an MQTT 5 reason code for a v5 client. The
    /// acknowledgement means the message is safe: a persistent one waits for the disk.
    /// `marked`: the journal id of the message's record when it marks the id (`inbound_marker`).
    fn acknowledge(
        &mut self,
        packet_id: u16,
        qos: QoS,
        mut lsn: Option<warren_core::journal::Lsn>,
        reason: u8,
        marked: Option<u64>,
    ) -> Option<End> {
        if self.level == crate::codec::Level::V5 && reason != crate::v5::REASON_SUCCESS {
            self.ack_reasons.insert(packet_id, reason);
        }
        match qos {
            QoS::AtMostOnce => None,
            QoS::AtLeastOnce => self.send_after_sync(lsn, Packet::PubAck(PubAck::new(packet_id))),
            QoS::ExactlyOnce => {
                if reason < 0x80 {
                    // Until PUBREL, a resend of this id is recognised, not routed again: after
                    // a reconnect through the session, after a crash through the marker in the
                    // message's record (PUBREC waits for that record).
                    self.incoming_qos2.insert(packet_id, marked);
                } else if let Some(record) = marked {
                    // Refused: the exchange ends here and the id is free again, so the mark
                    // goes first (a mark left after a crash would drop the id's next message).
                    lsn = lsn.max(self.unmark(record));
                }
                self.send_after_sync(lsn, Packet::PubRec(PubRec::new(packet_id)))
            }
        }
    }

    /// The position of everything journaled so far, to wait for when the store confirms after
    /// its sync.
    fn appended_lsn(&self) -> Option<warren_core::journal::Lsn> {
        let journal = self.state.broker.journal().filter(|journal| journal.confirms_wait())?;
        Some(journal.appended())
    }

    /// Removes an inbound QoS 2 message's mark; returns the position to wait for.
    fn unmark(&self, record: u64) -> Option<warren_core::journal::Lsn> {
        let journal = self.state.broker.journal()?;
        journal.removed(self.vhost.name(), &crate::kept::session_queue(&self.client_id), record);
        journal.confirms_wait().then(|| journal.appended())
    }

    pub(crate) fn released(&mut self, packet_id: u16) -> Option<End> {
        // PUBCOMP waits for the mark's removal: after it the client may use the id for a new
        // message, which a mark left after a crash would make the broker drop as a resend.
        let lsn = match self.incoming_qos2.remove(&packet_id) {
            Some(Some(record)) => self.unmark(record),
            Some(None) => None,
            // A PUBREL again (its PUBCOMP lost with a connection): that PUBCOMP may have waited
            // for a mark's removal, so this one does too.
            None => self.appended_lsn(),
        };
        self.send_after_sync(lsn, Packet::PubComp(PubComp::new(packet_id)))
    }

    /// Routes a message through `amq.topic` (see `route_message`).
    pub(crate) fn route(
        &mut self,
        topic: &str,
        payload: Bytes,
        qos: QoS,
        extra: Option<&mqttbytes::v5::PublishProperties>,
        origin: Origin<'_>,
    ) -> (Published, usize) {
        let state = &self.state;
        let (published, queues) = route_message(state, &self.vhost, topic, payload, qos, extra, Some(origin));
        let routed = queues.len();
        for queue in queues {
            // A queue over its memory bound pauses this publisher, as for AMQP.
            if queue.is_full() && self.paused_on.is_none() {
                self.paused_on = Some(queue);
            }
        }
        (published, routed)
    }

    pub(crate) fn publish_will(&mut self, will: LastWill) {
        if !self.permitted.publish {
            return;
        }
        let properties = self.will_properties.take();
        publish_will(&self.state, &self.vhost, will, properties.as_deref());
    }

    /// SUBSCRIBE; `options` are an MQTT 5 client's, one per filter (empty otherwise);
    /// `shares_allowed`, the shared subscriptions the user may join (`shared::permitted`).
    pub(crate) fn subscribe(
        &mut self,
        subscribe: Subscribe,
        options: &[crate::v5::SubscriptionOptions],
        shares_allowed: &std::collections::HashSet<String>,
    ) -> Option<End> {
        let mut codes = Vec::with_capacity(subscribe.filters.len());
        // MQTT 5 says why a filter failed (3.9.3); 3.1.1 only that it did.
        let mut reasons: Vec<u8> = Vec::with_capacity(subscribe.filters.len());
        let mut granted_filters = Vec::new();
        for (index, filter) in subscribe.filters.into_iter().enumerate() {
            let options = options.get(index).copied().unwrap_or_default();
            let new = !self.subscriptions.iter().any(|(existing, _)| *existing == filter.path)
                && !self.shared.contains_key(&filter.path);
            if new && self.subscriptions.len() + self.shared.len() >= SUBSCRIPTIONS_MAX {
                warn!(client_id = %self.client_id, limit = SUBSCRIPTIONS_MAX, "subscription limit reached; filter refused");
                codes.push(SubscribeReasonCode::Failure);
                reasons.push(crate::v5::REASON_QUOTA_EXCEEDED);
                continue;
            }
            if let Some((group, inner)) = crate::shared::parse(&filter.path) {
                let granted = if filter.qos > GRANTED_QOS_MAX { GRANTED_QOS_MAX } else { filter.qos };
                let result = if inner.is_empty() {
                    Err(crate::v5::REASON_TOPIC_FILTER_INVALID)
                } else if !shares_allowed.contains(&filter.path) {
                    Err(crate::v5::REASON_NOT_AUTHORIZED)
                } else {
                    self.subscribe_shared(&filter.path, group, inner, granted).map_err(|error| {
                        warn!(client_id = %self.client_id, %error, "shared subscription failed");
                        crate::v5::REASON_UNSPECIFIED
                    })
                };
                match result {
                    Ok(()) => {
                        self.record_identifier(&filter.path);
                        codes.push(SubscribeReasonCode::Success(granted));
                        reasons.push(granted as u8);
                    }
                    Err(reason) => {
                        warn!(client_id = %self.client_id, filter = %filter.path, reason, "shared subscription refused");
                        codes.push(SubscribeReasonCode::Failure);
                        reasons.push(reason);
                    }
                }
                continue;
            }
            if !mqttbytes::valid_filter(&filter.path) {
                warn!(client_id = %self.client_id, filter = %filter.path, "invalid topic filter");
                codes.push(SubscribeReasonCode::Failure);
                reasons.push(crate::v5::REASON_TOPIC_FILTER_INVALID);
                continue;
            }
            // A level that is literally `*` has no form in a stored AMQP binding key (it would
            // come back as a wildcard after a restart), so a persistent session cannot use it.
            if !self.ends_with_connection && filter.path.split('/').any(|level| level == "*") {
                warn!(client_id = %self.client_id, filter = %filter.path, "a `*` level cannot be stored; refused");
                codes.push(SubscribeReasonCode::Failure);
                reasons.push(crate::v5::REASON_IMPLEMENTATION_SPECIFIC);
                continue;
            }
            if !self.permitted.subscribe {
                warn!(client_id = %self.client_id, filter = %filter.path, "no permission to subscribe");
                codes.push(SubscribeReasonCode::Failure);
                reasons.push(crate::v5::REASON_NOT_AUTHORIZED);
                continue;
            }
            let granted = if filter.qos > GRANTED_QOS_MAX { GRANTED_QOS_MAX } else { filter.qos };
            match self.bind(&filter.path, granted) {
                Ok(()) => {
                    let existed = !new;
                    self.subscriptions.retain(|(existing, _)| *existing != filter.path);
                    self.subscriptions.push((filter.path.clone(), granted));
                    self.set_subscription_options(&filter.path, options);
                    self.record_identifier(&filter.path);
                    // Retain handling: 0 always sends retained messages, 1 only for a new
                    // subscription, 2 never (3.8.3.1).
                    let send_retained = match options.retain_handling {
                        0 => true,
                        1 => !existed,
                        _ => false,
                    };
                    if send_retained {
                        granted_filters.push((filter.path, granted));
                    }
                    codes.push(SubscribeReasonCode::Success(granted));
                    reasons.push(granted as u8);
                }
                Err(error) => {
                    warn!(client_id = %self.client_id, %error, "subscribe failed");
                    codes.push(SubscribeReasonCode::Failure);
                    reasons.push(crate::v5::REASON_UNSPECIFIED);
                }
            }
        }
        // The SUBACK does not wait for the record: a subscription is in the bindings already.
        let _ = self.keep();
        if self.level == crate::codec::Level::V5 {
            crate::v5::encode_suback(subscribe.pkid, &reasons, &mut self.out);
        } else {
            self.send(Packet::SubAck(SubAck::new(subscribe.pkid, codes)));
        }
        for (filter, granted) in granted_filters {
            self.send_retained(&filter, granted);
        }
        None
    }

    /// Binds the session queue (created on first use) to `amq.topic` for a filter.
    /// The granted QoS is kept in the binding's arguments, so a persistent session's
    /// subscriptions come back at their QoS after a restart (`Session::resume`).
    fn bind(&mut self, filter: &str, granted: QoS) -> Result<(), warren_core::Error> {
        let queue = match &self.queue {
            Some(queue) => queue.clone(),
            None => {
                // A persistent session's queue expires after the broker's longest session expiry
                // without its client, so sessions that never come back do not hold messages for
                // ever. A session's own, shorter expiry (MQTT 5), which a later connection may
                // change, is kept by the session's sweeper (`session::expire_later`).
                let mut arguments = Table::new();
                if !self.ends_with_connection {
                    let expiry_ms = i64::try_from(self.state.config.session_expiry.as_millis()).unwrap_or(i64::MAX);
                    arguments.insert("x-expires", warren_core::value::Value::I64(expiry_ms));
                }
                // A persistent session's queue is durable, as in RabbitMQ: with its bindings it
                // survives a restart, and its QoS 1 messages (persistent) are journaled. The
                // subscriptions are read back from the bindings (`Session::resume`).
                let durability = if self.ends_with_connection { Durability::Transient } else { Durability::Durable };
                let options = QueueOptions { durability, exclusive_owner: None, auto_delete: false, arguments };
                let declared = self.vhost.declare_queue(
                    &self.queue_name(),
                    options,
                    Declare::Create,
                    ConnectionId(self.connection),
                )?;
                self.attach(declared.queue.clone());
                declared.queue
            }
        };
        let key = translate::binding_key(filter);
        let mut arguments = Table::new();
        arguments.insert(SUBSCRIPTION_QOS_ARGUMENT, Value::U8(granted as u8));
        // A subscription again, at another QoS, replaces its binding: the new one first, so
        // nothing routed meanwhile misses the queue (3.8.4), then the old one goes.
        self.vhost.bind_queue(
            queue.name(),
            &ExchangeName::new(TOPIC_EXCHANGE),
            key,
            arguments.clone(),
            ConnectionId(self.connection),
        )?;
        self.unbind(&queue, filter, Some(&arguments));
        Ok(())
    }

    /// Removes a filter's bindings from the session queue, whatever arguments they were made
    /// with, except the one with `keep`.
    fn unbind(&self, queue: &Queue, filter: &str, keep: Option<&Table>) {
        let key = translate::binding_key(filter);
        let exchange = ExchangeName::new(TOPIC_EXCHANGE);
        for binding in queue.bindings() {
            if binding.exchange == exchange && binding.key == key && keep != Some(&binding.arguments) {
                let connection = ConnectionId(self.connection);
                let _ = self.vhost.unbind_queue(queue.name(), &exchange, key.clone(), binding.arguments, connection);
            }
        }
    }

    /// Records a filter's MQTT 5 options (plain 3.1.1 subscriptions have none).
    pub(crate) fn set_subscription_options(&mut self, filter: &str, options: crate::v5::SubscriptionOptions) {
        let had_no_local = !self.no_local.is_empty();
        if options.no_local {
            self.no_local.insert(filter.to_owned());
        } else {
            self.no_local.remove(filter);
        }
        if options.retain_as_published {
            self.retain_as_published.insert(filter.to_owned());
        } else {
            self.retain_as_published.remove(filter);
        }
        self.count_no_local(had_no_local);
    }

    /// Records (or clears) the identifier of the SUBSCRIBE that granted a filter.
    fn record_identifier(&mut self, filter: &str) {
        match self.pending_identifier {
            Some(identifier) => {
                self.subscription_ids.insert(filter.to_owned(), identifier);
            }
            None => {
                self.subscription_ids.remove(filter);
            }
        }
    }

    /// Keeps `MqttState::no_local_sessions` in step with this session.
    pub(crate) fn count_no_local(&self, had_no_local: bool) {
        use std::sync::atomic::Ordering;
        match (had_no_local, self.no_local.is_empty()) {
            (false, false) => {
                self.state.no_local_sessions.fetch_add(1, Ordering::Relaxed);
            }
            (true, true) => {
                self.state.no_local_sessions.fetch_sub(1, Ordering::Relaxed);
            }
            _ => {}
        }
    }

    pub(crate) fn unsubscribe(&mut self, unsubscribe: Unsubscribe) -> Option<End> {
        // MQTT 5 says whether each filter was subscribed (3.11.3).
        let existed: Vec<bool> = unsubscribe
            .topics
            .iter()
            .map(|filter| {
                self.shared.contains_key(filter) || self.subscriptions.iter().any(|(existing, _)| existing == filter)
            })
            .collect();
        for filter in &unsubscribe.topics {
            if crate::shared::parse(filter).is_some() {
                self.unsubscribe_shared(filter);
                self.subscription_ids.remove(filter);
                continue;
            }
            self.set_subscription_options(filter, crate::v5::SubscriptionOptions::default());
            self.subscription_ids.remove(filter);
            self.subscriptions.retain(|(existing, _)| existing != filter);
            if let Some(queue) = self.queue.clone() {
                self.unbind(&queue, filter, None);
            }
        }
        let _ = self.keep();
        if self.level == crate::codec::Level::V5 {
            // MQTT 5's UNSUBACK has a reason code per filter.
            crate::v5::encode_unsuback(unsubscribe.pkid, &existed, &mut self.out);
            return None;
        }
        self.send(Packet::UnsubAck(UnsubAck::new(unsubscribe.pkid)))
    }
}

/// Routes a message through `amq.topic`: QoS 1 and 2 messages are persistent, as RabbitMQ marks
/// them. Returns the outcome and the queues it reached. (A free function: a delayed will is
/// published after its session is gone.)
pub(crate) fn route_message(
    state: &MqttState,
    vhost: &Vhost,
    topic: &str,
    payload: Bytes,
    qos: QoS,
    extra: Option<&mqttbytes::v5::PublishProperties>,
    origin: Option<Origin<'_>>,
) -> (Published, Vec<Arc<Queue>>) {
    let marker = origin.and_then(|origin| origin.marker);
    let Ok(exchange) = vhost.exchange(&ExchangeName::new(TOPIC_EXCHANGE)) else {
        return (Published::default(), Vec::new());
    };
    let mut headers = Table::new();
    headers.insert(QOS_HEADER, Value::U8(qos as u8));
    if let Some(origin) = origin {
        if state.no_local_sessions.load(std::sync::atomic::Ordering::Relaxed) > 0 {
            headers.insert(ORIGIN_HEADER, Value::I64(i64::try_from(origin.connection).unwrap_or(i64::MAX)));
        }
        if origin.retained {
            headers.insert(RETAIN_HEADER, Value::Bool(true));
        }
    }
    if let Some((_, packet_id)) = marker {
        headers.insert(PACKET_ID_HEADER, Value::U16(packet_id));
    }
    let mut properties = Properties {
        delivery_mode: Some(if qos == QoS::AtMostOnce { 1 } else { 2 }),
        headers: Some(headers),
        ..Properties::default()
    };
    if let Some(extra) = extra {
        crate::v5::apply_publish_properties(extra, &mut properties);
    }
    let message = Message {
        exchange: exchange.name().clone(),
        routing_key: translate::routing_key(topic),
        properties,
        body: payload,
        journal: None,
    };
    let mut queues = Vec::new();
    if vhost.route(&exchange, &message, &mut queues).is_err() {
        return (Published::default(), Vec::new());
    }
    (vhost.enqueue_also(message, &queues, marker.map(|(queue, _)| queue)), queues)
}

/// Publishes a will (retained too, if it says so). Nobody waits for a will's acknowledgement;
/// a store failure is logged by `retain`.
pub(crate) fn publish_will(
    state: &MqttState,
    vhost: &Vhost,
    will: LastWill,
    properties: Option<&mqttbytes::v5::PublishProperties>,
) {
    if will.retain {
        let retained = Retained::new(will.message.clone(), will.qos, properties);
        let _ = state.retain(vhost.name(), &will.topic, retained);
    }
    route_message(state, vhost, &will.topic, will.message, will.qos, properties, None);
}

/// Where an MQTT publish came from, for MQTT 5's No Local and Retain As Published, and the
/// mark its record carries for an inbound QoS 2 exchange (`Session::inbound_marker`, with the
/// packet id).
#[derive(Clone, Copy, Debug)]
pub(crate) struct Origin<'a> {
    pub(crate) connection: u64,
    pub(crate) retained: bool,
    pub(crate) marker: Option<(&'a QueueName, u16)>,
}
