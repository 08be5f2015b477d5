//! SEND, SUBSCRIBE, UNSUBSCRIBE, ACK and NACK, deliveries as MESSAGE frames, and the release of
//! a session's subscriptions when it ends.

use std::sync::Arc;

use tracing::warn;
use warren_core::name::{ConnectionId, ConsumerId, ConsumerTag, ExchangeName, QueueName};
use warren_core::queue::{AckMode, Consumer, Credit, Durability, Exclusivity, InboxItem, QueueOptions, Requeue};
use warren_core::topic::{BindingKey, RoutingKey};
use warren_core::value::Table;
use warren_core::vhost::Declare;
use warren_core::{Delivery, Message, Queue};

use crate::codec::Frame;
use crate::destination::Destination;
use crate::session::Session;
use crate::translate;

type Handled = Result<(), (String, String)>;

/// How a subscription acknowledges.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Ack {
    Auto,
    /// ACK covers every earlier message of the subscription too.
    Client,
    ClientIndividual,
}

#[derive(Debug)]
pub(crate) struct Subscription {
    pub queue: Arc<Queue>,
    pub consumer: Arc<Consumer>,
    pub ack: Ack,
    /// A queue made for this subscription, deleted with it (topic and exchange subscriptions
    /// that are not durable).
    pub private: bool,
}

/// A delivery awaiting ACK or NACK.
#[derive(Debug)]
pub(crate) struct Unacked {
    pub ack_id: u64,
    pub subscription: String,
    pub queue: Arc<Queue>,
    pub sequence: u64,
    pub message: Arc<Message>,
    pub consumer: Arc<Consumer>,
    /// When it expires, kept if it is requeued.
    pub expires_at: Option<tokio::time::Instant>,
}

impl Unacked {
    /// Puts the message back in its queue, redelivered and with its expiry, and frees the
    /// consumer's window slot.
    fn requeue(self) {
        let Unacked { queue, sequence, message, consumer, expires_at, .. } = self;
        queue.requeue([Requeue { sequence, message, redelivered: true, expires_at }]);
        consumer.settle(1);
    }
}

/// Deliveries drained from the inbox per pass, and the output size at which draining pauses
/// until the writer has taken what is there.
const DRAIN_BATCH: usize = 256;
const OUTPUT_BYTES_MAX: usize = 1024 * 1024;

fn failure(message: &str, detail: impl ToString) -> (String, String) {
    (message.to_owned(), detail.to_string())
}

/// A STOMP topic or exchange key as a binding key: AMQP syntax, `.` words with `*` and `#`.
fn binding_key(key: &str) -> BindingKey {
    BindingKey::parse(key)
}

impl Session {
    pub(crate) fn send_frame(&mut self, frame: Frame) -> Handled {
        if self.in_transaction(&frame)? {
            return Ok(());
        }
        self.route(&frame)
    }

    /// Routes a SEND: resolves its destination, rewrites a `/temp-queue/` reply-to, and enqueues.
    pub(crate) fn route(&mut self, frame: &Frame) -> Handled {
        let destination = Destination::of(frame).map_err(|error| failure("invalid destination", error))?;
        let (exchange, key) = self.publish_target(&destination)?;
        let mut properties = translate::properties(frame);
        if let Some(reply_to) = properties.reply_to.take() {
            properties.reply_to = Some(self.rewrite_reply_to(&reply_to)?);
        }
        let message = Message {
            exchange: exchange.clone(),
            routing_key: key,
            properties,
            body: frame.body.clone(),
            journal: None,
        };
        message.check_expiration().map_err(|error| failure("invalid expiration", error))?;
        let exchange = self.vhost.exchange(&exchange).map_err(|error| failure("not_found", error))?;
        let mut queues = Vec::new();
        self.vhost.route(&exchange, &message, &mut queues).map_err(|error| failure("access refused", error))?;
        let published = self.vhost.enqueue(message, &queues);
        if published.unstored {
            return Err(failure("message store failure", "the message could not be stored"));
        }
        self.frame_lsn = self.frame_lsn.max(published.lsn);
        for queue in queues {
            // A queue over its memory bound pauses this publisher, as for AMQP.
            if queue.is_full() && self.paused_on.is_none() {
                self.paused_on = Some(queue);
            }
        }
        Ok(())
    }

    /// The exchange and routing key a SEND to `destination` goes to.
    fn publish_target(&mut self, destination: &Destination) -> Result<(ExchangeName, RoutingKey), (String, String)> {
        Ok(match destination {
            Destination::Queue(name) => {
                self.declare_named(name)?;
                (ExchangeName::new(""), RoutingKey::new(name))
            }
            Destination::AmqQueue(name) | Destination::ReplyQueue(name) => {
                (ExchangeName::new(""), RoutingKey::new(name))
            }
            Destination::Topic(key) => (ExchangeName::new("amq.topic"), RoutingKey::new(key)),
            Destination::Exchange { exchange, key } => (ExchangeName::new(exchange), RoutingKey::new(key)),
            Destination::TempQueue(name) => {
                let queue = self.temp_queue(name)?;
                (ExchangeName::new(""), RoutingKey::new(queue.name().as_str()))
            }
        })
    }

    /// `/temp-queue/x` in a reply-to becomes `/reply-queue/<name>` of the session's private
    /// queue for `x`, as RabbitMQ writes it; a SEND there reaches it through the default exchange.
    fn rewrite_reply_to(&mut self, reply_to: &str) -> Result<String, (String, String)> {
        match reply_to.strip_prefix("/temp-queue/") {
            Some(name) if !name.is_empty() => {
                let queue = self.temp_queue(name)?;
                Ok(format!("/reply-queue/{}", queue.name()))
            }
            _ => Ok(reply_to.to_owned()),
        }
    }

    /// The session's private queue for a `/temp-queue/` name, created and subscribed on first
    /// use; its messages arrive with `subscription: /temp-queue/<name>`.
    fn temp_queue(&mut self, name: &str) -> Result<Arc<Queue>, (String, String)> {
        if let Some(queue) = self.temp_queues.get(name) {
            return Ok(queue.clone());
        }
        let options = QueueOptions {
            durability: Durability::Transient,
            exclusive_owner: Some(ConnectionId(self.connection)),
            auto_delete: true,
            arguments: Table::new(),
        };
        let declared = self
            .vhost
            .declare_queue(&QueueName::new(""), options, Declare::Create, ConnectionId(self.connection))
            .map_err(|error| failure("temp queue", error))?;
        let queue = declared.queue;
        let subscription = format!("/temp-queue/{name}");
        self.attach(subscription, queue.clone(), Ack::Auto, 0, true)?;
        self.temp_queues.insert(name.to_owned(), queue.clone());
        Ok(queue)
    }

    /// Declares a `/queue/` destination's queue: durable, as RabbitMQ declares them.
    fn declare_named(&self, name: &str) -> Result<Arc<Queue>, (String, String)> {
        let options = QueueOptions {
            durability: Durability::Durable,
            exclusive_owner: None,
            auto_delete: false,
            arguments: Table::new(),
        };
        self.vhost
            .declare_queue(&QueueName::new(name), options, Declare::Create, ConnectionId(self.connection))
            .map(|declared| declared.queue)
            .map_err(|error| failure("queue declare failed", error))
    }

    pub(crate) fn subscribe(&mut self, frame: &Frame) -> Handled {
        let text = frame.header("destination").unwrap_or_default().to_owned();
        let destination = Destination::parse(&text).map_err(|error| failure("invalid destination", error))?;
        let id = match frame.header("id") {
            Some(id) => id.to_owned(),
            None if self.version == crate::session::Version::V10 => text.clone(),
            None => return Err(failure("missing id header", "SUBSCRIBE needs an id")),
        };
        if self.subscriptions.contains_key(&id) {
            return Err(failure("duplicate subscription id", id));
        }
        let ack = match frame.header("ack").unwrap_or("auto") {
            "auto" => Ack::Auto,
            "client" => Ack::Client,
            "client-individual" => Ack::ClientIndividual,
            other => return Err(failure("invalid ack mode", other)),
        };
        let prefetch = frame.header("prefetch-count").and_then(|count| count.parse().ok()).unwrap_or(0);
        let durable = frame.header("durable").or(frame.header("persistent")) == Some("true");
        let (queue, private) = self.subscription_queue(&destination, &id, durable, frame.header("x-queue-name"))?;
        self.attach(id, queue, ack, prefetch, private)
    }

    /// The queue a subscription reads: the named one, or a queue made for it and bound to its
    /// topic or exchange (durable and named after the subscription id when `durable:true`).
    fn subscription_queue(
        &mut self,
        destination: &Destination,
        id: &str,
        durable: bool,
        queue_name: Option<&str>,
    ) -> Result<(Arc<Queue>, bool), (String, String)> {
        let (exchange, key) = match destination {
            Destination::Queue(name) => return Ok((self.declare_named(name)?, false)),
            Destination::AmqQueue(name) => {
                let queue = self
                    .vhost
                    .queue(&QueueName::new(name), ConnectionId(self.connection))
                    .map_err(|error| failure("not_found", error))?;
                return Ok((queue, false));
            }
            Destination::TempQueue(_) | Destination::ReplyQueue(_) => {
                return Err(failure("invalid destination", "cannot subscribe to a temp or reply queue"))
            }
            Destination::Topic(key) => ("amq.topic".to_owned(), key.clone()),
            Destination::Exchange { exchange, key } => (exchange.clone(), key.clone()),
        };
        let (name, options) = if durable {
            let options = QueueOptions {
                durability: Durability::Durable,
                exclusive_owner: None,
                auto_delete: false,
                arguments: Table::new(),
            };
            (durable_queue_name(queue_name, destination, id), options)
        } else {
            let options = QueueOptions {
                durability: Durability::Transient,
                exclusive_owner: Some(ConnectionId(self.connection)),
                auto_delete: true,
                arguments: Table::new(),
            };
            (QueueName::new(""), options)
        };
        let connection = ConnectionId(self.connection);
        let queue = self
            .vhost
            .declare_queue(&name, options, Declare::Create, connection)
            .map_err(|error| failure("queue declare failed", error))?
            .queue;
        let bound = self.vhost.bind_queue(
            queue.name(),
            &ExchangeName::new(&exchange),
            binding_key(&key),
            Table::new(),
            connection,
        );
        if let Err(error) = bound {
            // A private queue nobody will consume would never auto-delete: remove it now.
            if !durable {
                self.vhost.remove_queue(&queue);
            }
            return Err(failure("not_found", error));
        }
        Ok((queue, !durable))
    }

    fn attach(&mut self, id: String, queue: Arc<Queue>, ack: Ack, prefetch: u32, private: bool) -> Handled {
        let consumer = Arc::new(Consumer {
            id: ConsumerId(self.next_consumer),
            tag: ConsumerTag::from(id.clone()),
            ack_mode: if ack == Ack::Auto { AckMode::Auto } else { AckMode::Manual },
            exclusivity: Exclusivity::Shared,
            priority: 0,
            inbox: self.inbox.clone(),
            prefetch: Credit::new(prefetch),
            shared: None,
        });
        self.next_consumer += 1;
        queue.add_consumer(consumer.clone()).map_err(|error| failure("subscribe failed", error))?;
        self.subscriptions.insert(id, Subscription { queue, consumer, ack, private });
        Ok(())
    }

    pub(crate) fn unsubscribe(&mut self, frame: &Frame) -> Handled {
        let id = frame.header("id").or(frame.header("destination")).unwrap_or_default().to_owned();
        let subscription = self.subscriptions.remove(&id).ok_or_else(|| failure("unknown subscription", &id))?;
        // As in RabbitMQ, UNSUBSCRIBE with `durable:true` ends a durable subscription: its queue
        // goes; without it the queue stays for the next SUBSCRIBE with the same id.
        let ends_durable = frame.header("durable").or(frame.header("persistent")) == Some("true");
        let auto_delete = subscription.queue.remove_consumer(subscription.consumer.id, &self.inbox);
        if auto_delete || subscription.private || ends_durable {
            self.vhost.remove_queue(&subscription.queue);
        }
        Ok(())
    }

    /// Checks that a frame held in a transaction would apply: its destination parses (and names
    /// an existing exchange), or its ack id is unacknowledged.
    pub(crate) fn check_transactional(&self, frame: &Frame) -> Handled {
        if frame.command == "SEND" {
            let destination = Destination::of(frame).map_err(|error| failure("invalid destination", error))?;
            if let Destination::Exchange { exchange, .. } = &destination {
                self.vhost.exchange(&ExchangeName::new(exchange)).map_err(|error| failure("not_found", error))?;
            }
            return Ok(());
        }
        let id_header = if self.version == crate::session::Version::V12 { "id" } else { "message-id" };
        let id = frame.header(id_header).and_then(|id| id.parse::<u64>().ok());
        match id {
            Some(id) if self.unacked.iter().any(|entry| entry.ack_id == id) => Ok(()),
            _ => Err(failure("invalid ack id", frame.header(id_header).unwrap_or("(none)"))),
        }
    }

    pub(crate) fn ack(&mut self, frame: &Frame) -> Handled {
        if self.in_transaction(frame)? {
            return Ok(());
        }
        self.settle(frame, true)
    }

    pub(crate) fn nack(&mut self, frame: &Frame) -> Handled {
        if self.in_transaction(frame)? {
            return Ok(());
        }
        self.settle(frame, false)
    }

    /// Acknowledges (or rejects) the deliveries an ACK/NACK names: the one message, or in
    /// `client` mode every earlier message of its subscription too. A NACK requeues unless
    /// `requeue:false`, as in RabbitMQ.
    pub(crate) fn settle(&mut self, frame: &Frame, acked: bool) -> Handled {
        let id_header = if self.version == crate::session::Version::V12 { "id" } else { "message-id" };
        let id = frame.header(id_header).and_then(|id| id.parse::<u64>().ok());
        let Some(index) = id.and_then(|id| self.unacked.iter().position(|entry| entry.ack_id == id)) else {
            return Err(failure("invalid ack id", frame.header(id_header).unwrap_or("(none)")));
        };
        let subscription = self.unacked[index].subscription.clone();
        let cumulative = self.subscriptions.get(&subscription).is_some_and(|entry| entry.ack == Ack::Client);
        let mut settled = Vec::new();
        let mut kept = Vec::with_capacity(self.unacked.len());
        for (position, entry) in std::mem::take(&mut self.unacked).into_iter().enumerate() {
            let covered = position == index || (cumulative && position < index && entry.subscription == subscription);
            if covered {
                settled.push(entry)
            } else {
                kept.push(entry)
            }
        }
        self.unacked = kept;
        let requeue = !acked && frame.header("requeue") != Some("false");
        for entry in settled {
            if requeue {
                entry.requeue();
                continue;
            }
            if acked {
                entry.queue.acked([&entry.message]);
            } else {
                entry.queue.reject([entry.message]);
            }
            entry.consumer.settle(1);
        }
        Ok(())
    }

    /// Encodes deliveries until the inbox is empty or the output is large enough; the rest wait
    /// for the writer (the inbox keeps itself marked ready), so a slow client is not buffered
    /// without bound.
    pub(crate) fn drain_inbox(&mut self) {
        let mut items = Vec::with_capacity(DRAIN_BATCH);
        while self.out.len() < OUTPUT_BYTES_MAX && self.inbox.drain_into(&mut items, DRAIN_BATCH) > 0 {
            for item in items.drain(..) {
                match item {
                    InboxItem::Delivery(delivery) => self.deliver(delivery),
                    InboxItem::Cancelled(consumer) => self.cancelled(consumer),
                }
            }
        }
    }

    fn deliver(&mut self, delivery: Delivery) {
        let Some((id, ack)) = self
            .subscriptions
            .iter()
            .find(|(_, subscription)| Arc::ptr_eq(&subscription.consumer, &delivery.consumer))
            .map(|(id, subscription)| (id.clone(), subscription.ack))
        else {
            return delivery.return_to_queue();
        };
        let ack_id = self.next_ack_id;
        self.next_ack_id += 1;
        let message = &delivery.message;
        let mut frame = Frame::new("MESSAGE")
            .with("subscription", id.clone())
            .with("destination", message_destination(message))
            .with("message-id", ack_id.to_string())
            .with("redelivered", delivery.redelivered.to_string());
        if self.version == crate::session::Version::V12 && ack != Ack::Auto {
            frame = frame.with("ack", ack_id.to_string());
        }
        let mut frame = translate::headers(&message.properties, frame);
        frame.body = message.body.clone();
        self.write(&frame);
        if ack == Ack::Auto {
            delivery.queue.acked([&delivery.message]);
        } else {
            self.unacked.push(Unacked {
                ack_id,
                subscription: id,
                queue: delivery.queue,
                sequence: delivery.sequence,
                message: delivery.message,
                consumer: delivery.consumer,
                expires_at: delivery.expires_at,
            });
        }
    }

    /// The broker cancelled a subscription (its queue was deleted): tell the client.
    fn cancelled(&mut self, consumer: ConsumerId) {
        let id = self.subscriptions.iter().find(|(_, entry)| entry.consumer.id == consumer).map(|(id, _)| id.clone());
        if let Some(id) = id {
            self.subscriptions.remove(&id);
            warn!(subscription = %id, "subscription's queue deleted");
            let frame = Frame::new("ERROR").with("message", "subscription cancelled").with("subscription", id);
            self.write(&frame);
        }
    }

    /// Ends the session's consumption: detaches subscriptions, requeues unacknowledged and
    /// undelivered messages, then lets the queues serve others; private queues go.
    pub(crate) fn release(&mut self) {
        let subscriptions: Vec<Subscription> = self.subscriptions.drain().map(|(_, entry)| entry).collect();
        for subscription in &subscriptions {
            subscription.queue.detach_consumer(subscription.consumer.id, &self.inbox);
        }
        for entry in std::mem::take(&mut self.unacked) {
            entry.requeue();
        }
        self.inbox.return_undelivered();
        for subscription in subscriptions {
            if subscription.private {
                self.vhost.remove_queue(&subscription.queue);
            } else {
                subscription.queue.dispatch();
            }
        }
        for (_, queue) in self.temp_queues.drain() {
            self.vhost.remove_queue(&queue);
        }
    }
}

/// A durable subscription's queue: `x-queue-name` if the client names one, else a name derived
/// from the destination and the subscription id, as RabbitMQ derives it, so two clients that
/// both number their subscriptions `sub-0` (as @stomp/stompjs does) do not share a queue.
pub(crate) fn durable_queue_name(requested: Option<&str>, destination: &Destination, id: &str) -> QueueName {
    if let Some(name) = requested.filter(|name| !name.is_empty()) {
        return QueueName::new(name);
    }
    // FNV-1a: stable across runs and builds, unlike the standard hasher.
    let text = format!("{destination:?}\u{0}{id}");
    let hash = text
        .bytes()
        .fold(0xcbf2_9ce4_8422_2325u64, |hash, byte| (hash ^ u64::from(byte)).wrapping_mul(0x100_0000_01b3));
    QueueName::from(format!("stomp-subscription-{hash:016x}"))
}

/// The destination a MESSAGE reports: where the message was sent, in STOMP's terms.
fn message_destination(message: &Message) -> String {
    match message.exchange.as_str() {
        "" => format!("/queue/{}", message.routing_key),
        "amq.topic" => format!("/topic/{}", message.routing_key),
        exchange => format!("/exchange/{exchange}/{}", message.routing_key),
    }
}
