//! Deliveries to the client: PUBLISH at the lower of the message's and the subscription's QoS,
//! packet ids for QoS 1 and 2, PUBACK settling QoS 1, PUBREC/PUBREL/PUBCOMP for QoS 2, and
//! retained messages on subscribe.
//!
//! Outbound QoS 2 (which RabbitMQ does not offer): the message leaves the queue at PUBREC, when
//! the client has it, and only the packet id waits for PUBCOMP. So a connection lost after PUBREC
//! never redelivers the PUBLISH (the client would see it twice); the next connection of a
//! persistent session resends PUBREL for those ids instead (section 4.4).

use std::sync::Arc;

use mqttbytes::v4::{Packet, PubRel, Publish};
use mqttbytes::QoS;
use warren_core::queue::{Consumer, InboxItem, Requeue};
use warren_core::value::Value;
use warren_core::{Delivery, Message, Queue};

use crate::inbound::QOS_HEADER;
use crate::kept::MessageKey;
use crate::session::{End, Session};
use crate::translate;

/// Deliveries taken from the inbox per pass, and the output size at which draining pauses
/// until the writer has taken what is there.
const DRAIN_BATCH: usize = 256;
pub(crate) const OUTPUT_BYTES_MAX: usize = 1024 * 1024;

/// An outbound QoS 1 or 2 publish awaiting its acknowledgement.
#[derive(Debug)]
pub(crate) enum Inflight {
    /// From the session queue: settled on PUBACK (QoS 1) or PUBREC (QoS 2), requeued if the
    /// connection goes first.
    /// `key` is its identity in the session's own queue, to resend it under the same id after
    /// a reconnect (`None` for a shared subscription's, which goes back to the group).
    Queued {
        queue: Arc<Queue>,
        consumer: Arc<Consumer>,
        sequence: u64,
        message: Arc<Message>,
        key: Option<MessageKey>,
        /// When it expires: kept when it is requeued.
        expires_at: Option<tokio::time::Instant>,
    },
    /// A retained message sent on subscribe: it holds a unit of the session's window.
    Retained,
    /// QoS 2 after PUBREC: the client has the message; PUBREL sent, PUBCOMP awaited. The
    /// delivery's window slot comes back only at PUBCOMP, as Receive Maximum counts it (4.9).
    Released { slot: Slot },
}

/// Retained messages matched by SUBSCRIBEs, waiting for window units, in order, each topic
/// once.
#[derive(Debug, Default)]
pub(crate) struct PendingRetained {
    queue: std::collections::VecDeque<RetainedSend>,
    topics: std::collections::HashSet<String>,
}

/// A retained message matched by a SUBSCRIBE, waiting to be sent.
#[derive(Debug)]
pub(crate) struct RetainedSend {
    topic: String,
    retained: crate::state::Retained,
    /// The lower of its QoS and the subscription's.
    qos: QoS,
    /// The matching subscription's MQTT 5 identifier.
    identifier: Option<usize>,
}

/// What an outbound QoS 1 or 2 publish holds of the session's window until it is acknowledged.
#[derive(Debug)]
pub(crate) enum Slot {
    /// A delivery's: its consumer's count and a unit of the window it shares.
    Consumer(Arc<Consumer>),
    /// A retained message's: a unit of the window.
    Window,
    /// Nothing: an id resumed from an earlier connection.
    None,
}

impl Session {
    /// Encodes deliveries until the inbox is empty or the output is large enough; the rest wait
    /// for the writer (the inbox keeps itself marked ready). Returns `Some` when the session must
    /// end because its queue was deleted.
    pub(crate) fn drain_inbox(&mut self) -> Option<End> {
        let mut items = Vec::with_capacity(DRAIN_BATCH);
        // With every packet id in use, deliveries wait in the inbox until one frees (draining
        // them only to put them back would spin).
        while !self.ids_exhausted
            && self.out.len() < OUTPUT_BYTES_MAX
            && self.inbox.drain_into(&mut items, DRAIN_BATCH) > 0
        {
            for item in items.drain(..) {
                match item {
                    InboxItem::Delivery(delivery) => self.deliver(delivery),
                    // As RabbitMQ does, a session whose queue was deleted is disconnected.
                    InboxItem::Cancelled(_) => return Some(End::Abnormal("session queue deleted")),
                }
            }
        }
        if self.kept_dirty {
            // The QoS 2 PUBLISHes of this batch go out once their ids are on disk, so a crash
            // cannot make them go out again under other ids.
            match self.keep() {
                Ok(Some(lsn)) => self.hold_output(lsn),
                Ok(None) => {}
                Err(end) => return Some(end),
            }
        }
        // A delivery handed back to its queue freed a window unit without `slot_freed`.
        if self.pending_retained.is_some() {
            self.flush_retained(false);
        }
        None
    }

    fn deliver(&mut self, delivery: Delivery) {
        // Through the session's own queue, or through a shared subscription (looked up once).
        let shared = self.shared_through(&delivery.queue);
        let own_queue = self.queue.as_ref().is_some_and(|own| std::ptr::eq(Arc::as_ptr(own), &*delivery.queue));
        if shared.is_none() && !own_queue {
            // From a shared subscription left while this was in the inbox: back to the group.
            delivery.return_to_queue();
            return;
        }
        let topic = translate::topic(&delivery.message.routing_key);
        // MQTT 5's No Local: this connection's own messages skip those subscriptions.
        let own = !self.no_local.is_empty()
            && message_header(&delivery.message, crate::inbound::ORIGIN_HEADER)
                .and_then(Value::as_i64)
                .is_some_and(|origin| u64::try_from(origin) == Ok(self.connection));
        let wanted =
            |filter: &String| translate::topic_matches(&topic, filter) && !(own && self.no_local.contains(filter));
        // A delivery through a shared subscription's queue has that subscription's QoS; one
        // through the session queue, the highest of the subscriptions it matches. No vector
        // is built on this path: the MQTT 5 extras are looked at only when some are in use.
        let shared_qos = shared.map(|(_, qos)| qos);
        let subscription_qos = shared_qos.or_else(|| {
            self.subscriptions.iter().filter(|(filter, _)| wanted(filter)).map(|(_, qos)| *qos).reduce(higher)
        });
        let ordinary = shared_qos.is_none();
        let retain_as_published = ordinary
            && !self.retain_as_published.is_empty()
            && message_header(&delivery.message, crate::inbound::RETAIN_HEADER).is_some()
            && self.subscriptions.iter().any(|(filter, _)| wanted(filter) && self.retain_as_published.contains(filter));
        // A shared subscription's delivery carries that subscription's identifier only.
        let identifiers: Vec<usize> = match shared {
            _ if self.subscription_ids.is_empty() => Vec::new(),
            Some((path, _)) => self.subscription_ids.get(path).copied().into_iter().collect(),
            None => self
                .subscriptions
                .iter()
                .filter(|(filter, _)| wanted(filter))
                .filter_map(|(filter, _)| self.subscription_ids.get(filter).copied())
                .collect(),
        };
        let Some(subscription_qos) = subscription_qos else {
            // Unsubscribed while in flight: nobody here wants it any more.
            delivery.queue.acked([&delivery.message]);
            self.slot_freed(Slot::Consumer(delivery.consumer));
            return;
        };
        let qos = lower(message_qos(&delivery.message), subscription_qos);
        let mut publish = Publish::from_bytes(topic, qos, delivery.message.body.clone());
        publish.retain = retain_as_published;
        // Cheap: an Arc'd message's properties, kept for an MQTT 5 client's PUBLISH.
        let message = delivery.message.clone();
        let delivery_properties = &message.properties;
        let expires_in = delivery.expires_at.map(|at| at.saturating_duration_since(tokio::time::Instant::now()));
        // A delivery the last connection sent unacknowledged goes out under the same id (4.4).
        // Requeued deliveries come first, so the first one that was not redelivered means any
        // ids still waiting are for messages that left the queue some other way.
        let key = ordinary.then(|| match delivery.message.journal {
            Some(reference) => MessageKey::Journal(reference.id),
            None => MessageKey::Sequence(delivery.sequence),
        });
        let resent_id = match (key, self.resend.as_deref_mut()) {
            (Some(key), Some(resend)) if delivery.redelivered => {
                let id = resend.take(&key);
                if resend.is_empty() {
                    self.resend = None;
                }
                id
            }
            (Some(_), Some(_)) => {
                self.resend = None;
                None
            }
            _ => None,
        };
        if qos == QoS::AtMostOnce {
            delivery.queue.acked([&delivery.message]);
            self.slot_freed(Slot::Consumer(delivery.consumer));
        } else {
            let free = resent_id.filter(|id| !self.inflight.contains_key(id));
            let Some(packet_id) = free.or_else(|| self.next_packet_id()) else {
                // Every id is in flight: back in the queue, and no more draining until an
                // acknowledgement frees one.
                self.ids_exhausted = true;
                delivery.return_to_queue();
                return;
            };
            publish.pkid = packet_id;
            publish.dup = delivery.redelivered;
            // A persistent session's record holds a stored QoS 2 delivery's id before the
            // PUBLISH goes out (the record is rewritten at the end of the batch).
            if qos == QoS::ExactlyOnce && matches!(key, Some(MessageKey::Journal(_))) && !self.ends_with_connection {
                self.kept_dirty = true;
            }
            let inflight = Inflight::Queued {
                queue: delivery.queue,
                consumer: delivery.consumer,
                sequence: delivery.sequence,
                message: delivery.message,
                key,
                expires_at: delivery.expires_at,
            };
            self.inflight.insert(publish.pkid, inflight);
        }
        let packet_id = publish.pkid;
        let qos_above_zero = publish.qos != QoS::AtMostOnce;
        if !self.send_publish(publish, delivery_properties, expires_in, identifiers) && qos_above_zero {
            // Dropped for this client: settled as if acknowledged.
            if let Some(Inflight::Queued { queue, consumer, message, .. }) = self.inflight.remove(&packet_id) {
                queue.acked([&message]);
                self.slot_freed(Slot::Consumer(consumer));
            }
        }
    }

    /// Sends a delivery: with its message's properties to an MQTT 5 client, unless it is larger
    /// than that client's Maximum Packet Size, when it is dropped for the client (3.1.2.11.4):
    /// `false` then.
    fn send_publish(
        &mut self,
        mut publish: Publish,
        properties: &warren_core::properties::Properties,
        expires_in: Option<std::time::Duration>,
        identifiers: Vec<usize>,
    ) -> bool {
        match self.level {
            crate::codec::Level::V5 => {
                let mut v5_properties = crate::v5::publish_properties(properties, expires_in);
                if !identifiers.is_empty() {
                    v5_properties.get_or_insert_with(crate::v5::empty_publish_properties).subscription_identifiers =
                        identifiers;
                }
                // A topic sent before goes as its alias alone; a new one gets an alias while the
                // client's maximum allows (3.3.2.3.4).
                let mut new_alias = None;
                if let Some(aliases) = self.outbound_aliases.as_deref_mut() {
                    let alias = match aliases.known(&publish.topic) {
                        Some(alias) => {
                            publish.topic.clear();
                            Some(alias)
                        }
                        None => {
                            new_alias = aliases.assign(&publish.topic);
                            new_alias
                        }
                    };
                    if alias.is_some() {
                        v5_properties.get_or_insert_with(crate::v5::empty_publish_properties).topic_alias = alias;
                    }
                }
                // Encoded in place; taken back off the output if it is too large for the client.
                let start = self.out.len();
                crate::v5::encode_publish(publish, v5_properties, &mut self.out);
                let length = self.out.len() - start;
                if self.client_packet_bytes_max.is_some_and(|max| length > max) {
                    self.out.truncate(start);
                    // The client never saw that alias set.
                    if let (Some(aliases), Some(alias)) = (self.outbound_aliases.as_deref_mut(), new_alias) {
                        aliases.forget(alias);
                    }
                    tracing::debug!(client_id = %self.client_id, bytes = length, "delivery over the client's maximum packet size; dropped");
                    return false;
                }
            }
            _ => {
                self.send(Packet::Publish(publish));
            }
        }
        true
    }

    /// A free packet id: 1..=65535, skipping those in flight; `None` when all are.
    fn next_packet_id(&mut self) -> Option<u16> {
        for _ in 0..u16::MAX {
            let id = self.next_packet_id;
            self.next_packet_id = self.next_packet_id.checked_add(1).unwrap_or(1);
            let reserved = self.resend.as_deref().is_some_and(|resend| resend.holds(id));
            if !self.inflight.contains_key(&id) && !reserved {
                return Some(id);
            }
        }
        None
    }

    /// PUBACK: the delivery leaves its queue and its window slot comes free.
    pub(crate) fn acknowledged(&mut self, packet_id: u16) -> Option<End> {
        match self.inflight.remove(&packet_id) {
            Some(Inflight::Queued { queue, consumer, message, .. }) => {
                queue.acked([&message]);
                self.slot_freed(Slot::Consumer(consumer));
            }
            Some(Inflight::Retained) => self.slot_freed(Slot::Window),
            // A PUBACK for a QoS 2 id is a client's error; the id stays until its PUBCOMP.
            Some(released @ Inflight::Released { .. }) => {
                self.inflight.insert(packet_id, released);
            }
            None => {}
        }
        self.id_freed()
    }

    /// A delivery's window slot came free. Retained messages waiting for one (see
    /// `send_retained`) get it first: released to the window, it would go to the queue, which
    /// takes it at once while it has messages.
    fn slot_freed(&mut self, slot: Slot) {
        match slot {
            Slot::None => return,
            Slot::Consumer(consumer) => consumer.prefetch.release(1),
            Slot::Window => {}
        }
        self.flush_retained(true);
    }

    /// A packet id came free: deliveries held for want of one may go.
    fn id_freed(&mut self) -> Option<End> {
        if std::mem::take(&mut self.ids_exhausted) {
            return self.drain_inbox();
        }
        None
    }

    /// PUBREC for an outbound QoS 2 publish: the client has it, so it leaves the queue; PUBREL.
    pub(crate) fn received(&mut self, packet_id: u16) -> Option<End> {
        let (released, settled) = match self.inflight.remove(&packet_id) {
            Some(Inflight::Queued { queue, consumer, message, .. }) => {
                (Inflight::Released { slot: Slot::Consumer(consumer) }, Some((queue, message)))
            }
            Some(Inflight::Retained) => (Inflight::Released { slot: Slot::Window }, None),
            Some(released @ Inflight::Released { .. }) => (released, None),
            None => {
                // Not ours (or already completed): answered, but nothing is recorded, so a
                // client cannot fill the id space this way.
                tracing::debug!(client_id = %self.client_id, packet_id, "PUBREC for an unknown packet id");
                return self.send(Packet::PubRel(PubRel::new(packet_id)));
            }
        };
        self.inflight.insert(packet_id, released);
        // The released id is recorded before the message's removal, so a crash cannot lose
        // both the message and the PUBREL owed for it; PUBREL goes out once both are on disk
        // (a crash could otherwise send the PUBLISH again after the client released its id, or
        // forget the PUBREL a client delivering at PUBREL waits for).
        let recorded = match self.keep() {
            Ok(recorded) => recorded,
            Err(end) => return Some(end),
        };
        if let Some(lsn) = recorded {
            self.hold_output(lsn);
        }
        if let Some((queue, message)) = settled {
            // The client has it: it leaves the queue now; the window slot waits for PUBCOMP.
            queue.acked([&message]);
            let journal = self.state.broker.journal().filter(|journal| journal.confirms_wait());
            if let (Some(journal), Some(_), Some(_)) = (journal, message.journal, recorded) {
                self.hold_output(journal.appended());
            }
        }
        self.send(Packet::PubRel(PubRel::new(packet_id)))
    }

    /// PUBCOMP: the QoS 2 exchange for this packet id is over; its window slot comes back.
    pub(crate) fn completed(&mut self, packet_id: u16) -> Option<End> {
        if let Some(Inflight::Released { .. }) = self.inflight.get(&packet_id) {
            // The registry and record still list the id until their next rewrite: a PUBREL
            // resent for a completed id only gets another PUBCOMP (4.3.3).
            if let Some(Inflight::Released { slot }) = self.inflight.remove(&packet_id) {
                self.slot_freed(slot);
            }
            return self.id_freed();
        }
        None
    }

    /// Resends PUBREL for the QoS 2 ids a persistent session's last connection left between
    /// PUBREC and PUBCOMP (section 4.4).
    pub(crate) fn resume_released(&mut self, released: Vec<u16>) {
        for packet_id in released {
            self.inflight.insert(packet_id, Inflight::Released { slot: Slot::None });
            self.send(Packet::PubRel(PubRel::new(packet_id)));
        }
    }

    /// The ids awaiting PUBCOMP, kept for the next connection.
    pub(crate) fn released_ids(&self) -> Vec<u16> {
        let mut ids: Vec<u16> = self
            .inflight
            .iter()
            .filter(|(_, inflight)| matches!(inflight, Inflight::Released { .. }))
            .map(|(id, _)| *id)
            .collect();
        ids.sort_unstable();
        ids
    }

    /// Sends the retained messages matching a new subscription, flagged retained. At QoS 1 or
    /// 2 each takes a unit of the session's window, as Receive Maximum counts them (4.9): those
    /// that find none wait, in order, for acknowledgements to free some.
    pub(crate) fn send_retained(&mut self, filter: &str, granted: QoS) {
        // Sent with the identifier of the subscription that matched them (3.3.4).
        let identifier = self.subscription_ids.get(filter).copied();
        let matching = self.state.retained_matching(self.vhost.name(), filter);
        if matching.is_empty() {
            return;
        }
        let pending = self.pending_retained.get_or_insert_with(Default::default);
        for (topic, retained) in matching {
            // A topic already waiting is not queued twice: repeated SUBSCRIBEs cannot grow this
            // past the retained messages there are.
            if pending.topics.insert(topic.clone()) {
                let qos = lower(retained.qos, granted);
                pending.queue.push_back(RetainedSend { topic, retained, qos, identifier });
            }
        }
        self.flush_retained(false);
    }

    /// The next waiting retained message, if any; an expired one is dropped (3.3.2.3.3).
    fn next_retained(&mut self) -> Option<&RetainedSend> {
        let now = std::time::SystemTime::now();
        let pending = self.pending_retained.as_deref_mut()?;
        while pending.queue.front().is_some_and(|next| next.retained.expires_at.is_some_and(|at| at <= now)) {
            let expired = pending.queue.pop_front().expect("looked at");
            pending.topics.remove(&expired.topic);
        }
        if pending.queue.is_empty() {
            self.pending_retained = None;
            return None;
        }
        self.pending_retained.as_deref().and_then(|pending| pending.queue.front())
    }

    fn pop_retained(&mut self) -> Option<RetainedSend> {
        let pending = self.pending_retained.as_deref_mut()?;
        let next = pending.queue.pop_front()?;
        pending.topics.remove(&next.topic);
        Some(next)
    }

    /// Sends the waiting retained messages the window has room for. With `unit`, the caller
    /// holds a window unit that came free: the first QoS 1 or 2 message takes it, or it goes
    /// back to the window.
    fn flush_retained(&mut self, mut unit: bool) {
        while let Some(RetainedSend { qos, .. }) = self.next_retained() {
            let room =
                |window: &Option<Arc<warren_core::queue::Credit>>| window.as_ref().is_some_and(|w| w.try_acquire());
            if *qos != QoS::AtMostOnce && !std::mem::take(&mut unit) && !room(&self.window) {
                break;
            }
            let RetainedSend { topic, retained, mut qos, identifier } = self.pop_retained().expect("looked at");
            let packet_id = if qos == QoS::AtMostOnce { None } else { self.next_packet_id() };
            if qos != QoS::AtMostOnce && packet_id.is_none() {
                // No id free: it still goes out, at QoS 0, and its unit goes back.
                qos = QoS::AtMostOnce;
                unit = true;
            }
            let mut publish = Publish::from_bytes(topic, qos, retained.payload);
            publish.retain = true;
            if let Some(packet_id) = packet_id {
                publish.pkid = packet_id;
                self.inflight.insert(packet_id, Inflight::Retained);
            }
            let expires_in =
                retained.expires_at.map(|at| at.duration_since(std::time::SystemTime::now()).unwrap_or_default());
            let properties = retained.properties.as_deref().cloned().unwrap_or_default();
            if !self.send_publish(publish, &properties, expires_in, identifier.into_iter().collect()) {
                // Over the client's maximum packet size: dropped, and its unit goes back.
                if packet_id.is_some_and(|id| self.inflight.remove(&id).is_some()) {
                    unit = true;
                }
            }
        }
        if let (true, Some(window)) = (unit, &self.window) {
            window.release(1);
        }
    }

    /// Puts unacknowledged deliveries back in the queue, as redelivered. (Released QoS 2 ids are
    /// not messages any more; the registry keeps them for a persistent session.)
    pub(crate) fn requeue_inflight(&mut self) {
        for (_, inflight) in self.inflight.drain() {
            if let Inflight::Queued { queue, sequence, message, expires_at, .. } = inflight {
                queue.requeue([Requeue { sequence, message, redelivered: true, expires_at }]);
            }
        }
    }

    /// Returns deliveries that never left the inbox.
    pub(crate) fn requeue_inbox(&mut self) {
        self.inbox.return_undelivered();
    }
}

fn message_header<'a>(message: &'a Message, name: &str) -> Option<&'a Value> {
    message.properties.headers.as_ref().and_then(|headers| headers.get(name))
}

/// The QoS a message was published with: MQTT's own header, else QoS 1 for persistent
/// messages from other protocols and QoS 0 for the rest.
pub(crate) fn message_qos(message: &Message) -> QoS {
    let header =
        message.properties.headers.as_ref().and_then(|headers| headers.get(QOS_HEADER)).and_then(Value::as_i64);
    match header {
        Some(0) => QoS::AtMostOnce,
        Some(1) => QoS::AtLeastOnce,
        Some(_) => QoS::ExactlyOnce,
        None if message.properties.delivery_mode() == warren_core::properties::DeliveryMode::Persistent => {
            QoS::AtLeastOnce
        }
        None => QoS::AtMostOnce,
    }
}

/// The lower of two QoS levels (mqttbytes' `QoS` is only partially ordered).
fn lower(a: QoS, b: QoS) -> QoS {
    if (a as u8) <= (b as u8) {
        a
    } else {
        b
    }
}

/// The higher of two QoS levels.
fn higher(a: QoS, b: QoS) -> QoS {
    if (a as u8) >= (b as u8) {
        a
    } else {
        b
    }
}
