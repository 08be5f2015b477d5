//! The MQTT 3.1/3.1.1 adapter, checked with rumqttc against a real `warren` process, with lapin
//! for the AMQP side of cross-protocol tests and raw bytes where a client must misbehave or speak
//! MQTT 3.1. Expectations are MQTT 3.1.1's, and RabbitMQ's MQTT plugin's where the spec leaves a
//! choice (credentials required, topics on `amq.topic`, QoS 2 both ways, which RabbitMQ lacks).
//!
//! Each rumqttc client's event loop runs on its own task and hands incoming packets to the test
//! over a bounded channel. The task stops at the first connection error, so a connection the
//! broker closes stays closed: rumqttc would otherwise reconnect on the next poll, and a client
//! taken over would take its session straight back.
//!
//! Ordering instead of sleeping: a session queue is FIFO, so when a marker published after a
//! message arrives, the message has either arrived before it or was never routed. Fixed windows
//! are used only to show that something does not arrive.

mod common;

use std::collections::VecDeque;
use std::io::Write;
use std::time::Duration;

use common::{
    bind, confirm_channel, connect, consume, declare_queue, message_count, next_delivery, no_ack, open_channel,
    poll_until, publish_confirmed, within, Broker, QUIET_PERIOD, RPC_TIMEOUT,
};
use lapin::BasicProperties;
use rumqttc::{
    AsyncClient, ConnAck, ConnectReturnCode, ConnectionError, Event, EventLoop, LastWill, MqttOptions, Packet, Publish,
    QoS, SubscribeReasonCode,
};
use tokio::sync::mpsc;
use tokio::task::JoinHandle;

/// Requests a client may queue for its event loop before `publish` or `subscribe` waits.
const REQUEST_CAPACITY: usize = 16;
/// Incoming packets buffered between a client's event loop task and the test; far more than
/// any test leaves unread.
const EVENT_CAPACITY: usize = 256;
/// How long a raw connection may stay open after breaking the protocol. It connects with
/// keep-alive 0, so nothing but the offending packet can make the broker close it.
const VIOLATION_CLOSE_TIMEOUT: Duration = Duration::from_secs(5);
/// The exchange every MQTT topic rides.
const TOPIC_EXCHANGE: &str = "amq.topic";

// -- rumqttc clients -------------------------------------------------------------------------

/// guest/guest, which the broker accepts from loopback, with a clean session.
fn mqtt_options(broker: &Broker, client_id: &str) -> MqttOptions {
    let mut options = MqttOptions::new(client_id, "127.0.0.1", broker.mqtt_port());
    options.set_credentials("guest", "guest");
    options
}

/// `mqtt_options` with clean_session = false: the session outlives the connection.
fn persistent_mqtt_options(broker: &Broker, client_id: &str) -> MqttOptions {
    let mut options = mqtt_options(broker, client_id);
    options.set_clean_session(false);
    options
}

/// A connected rumqttc client whose event loop runs on its own task.
struct MqttClient {
    id: String,
    client: AsyncClient,
    /// The CONNACK that accepted the connection.
    connack: ConnAck,
    /// Incoming packets, then at most one error, after which the event loop has stopped.
    events: mpsc::Receiver<Result<Packet, ConnectionError>>,
    /// Packets that arrived while the test waited for something else, oldest first.
    stash: VecDeque<Packet>,
    driver: JoinHandle<()>,
}

/// Connects, failing the test if the broker refuses.
async fn connect_mqtt(options: MqttOptions) -> MqttClient {
    let id = options.client_id();
    match try_connect_mqtt(options).await {
        Ok(client) => client,
        Err(error) => panic!("MQTT client {id:?} could not connect: {error}"),
    }
}

/// Connects and waits for the CONNACK; a refusal comes back as
/// `ConnectionError::ConnectionRefused(return_code)`.
async fn try_connect_mqtt(options: MqttOptions) -> Result<MqttClient, ConnectionError> {
    let id = options.client_id();
    let (client, mut eventloop) = AsyncClient::new(options, REQUEST_CAPACITY);
    // The first poll opens the socket, sends CONNECT and returns the CONNACK (or the refusal).
    let connack = match within("CONNACK", eventloop.poll()).await? {
        Event::Incoming(Packet::ConnAck(connack)) => connack,
        other => panic!("expected CONNACK for {id:?}, got {other:?}"),
    };
    let (sender, events) = mpsc::channel(EVENT_CAPACITY);
    let driver = tokio::spawn(drive(eventloop, sender));
    Ok(MqttClient { id, client, connack, events, stash: VecDeque::new(), driver })
}

/// Polls the event loop, forwarding incoming packets, until the connection fails or closes.
async fn drive(mut eventloop: EventLoop, events: mpsc::Sender<Result<Packet, ConnectionError>>) {
    loop {
        let item = match eventloop.poll().await {
            Ok(Event::Incoming(packet)) => Ok(packet),
            Ok(Event::Outgoing(_)) => continue,
            Err(error) => Err(error),
        };
        let failed = item.is_err();
        if events.send(item).await.is_err() || failed {
            // Dropping the event loop closes the socket; we never poll again, so no reconnect.
            return;
        }
    }
}

impl MqttClient {
    /// The first packet, stashed or new, for which `pick` returns `Some`. Other packets are
    /// stashed for later waits, except PINGRESP.
    async fn wait_for<T>(&mut self, what: &str, mut pick: impl FnMut(&Packet) -> Option<T>) -> T {
        for index in 0..self.stash.len() {
            if let Some(found) = pick(&self.stash[index]) {
                self.stash.remove(index);
                return found;
            }
        }
        let deadline = tokio::time::Instant::now() + RPC_TIMEOUT;
        loop {
            let packet = match tokio::time::timeout_at(deadline, self.events.recv()).await {
                Ok(Some(Ok(packet))) => packet,
                Ok(Some(Err(error))) => panic!("client {:?} lost its connection waiting for {what}: {error}", self.id),
                Ok(None) => panic!("client {:?}'s event loop has stopped; was waiting for {what}", self.id),
                Err(_) => panic!(
                    "client {:?} timed out after {RPC_TIMEOUT:?} waiting for {what}; other packets: {:?}",
                    self.id, self.stash
                ),
            };
            if let Some(found) = pick(&packet) {
                return found;
            }
            if !matches!(packet, Packet::PingResp) {
                self.stash.push_back(packet);
            }
        }
    }

    async fn next_publish(&mut self) -> Publish {
        self.wait_for("a PUBLISH", |packet| match packet {
            Packet::Publish(publish) => Some(publish.clone()),
            _ => None,
        })
        .await
    }

    /// The topics of the next publishes, up to and including one on `last`.
    async fn topics_until(&mut self, last: &str) -> Vec<String> {
        let mut topics = Vec::new();
        loop {
            let topic = self.next_publish().await.topic;
            let done = topic == last;
            topics.push(topic);
            if done {
                return topics;
            }
        }
    }

    /// Subscribes to one filter and returns the SUBACK's return code for it.
    async fn subscribe(&mut self, filter: &str, qos: QoS) -> SubscribeReasonCode {
        within("SUBSCRIBE request", self.client.subscribe(filter, qos)).await.expect("queue SUBSCRIBE");
        let codes = self
            .wait_for("SUBACK", |packet| match packet {
                Packet::SubAck(suback) => Some(suback.return_codes.clone()),
                _ => None,
            })
            .await;
        assert_eq!(codes.len(), 1, "SUBACK for one filter: {codes:?}");
        codes[0]
    }

    /// Publishes and, for QoS 1 and 2, waits until the broker has taken the message: PUBACK,
    /// or PUBCOMP (rumqttc answers PUBREC with PUBREL itself). The broker routes a message
    /// before acknowledging it, and handles a connection's packets in order, so once this
    /// returns every earlier QoS 0 publish from this client has been routed as well.
    async fn publish(&mut self, topic: &str, qos: QoS, retain: bool, payload: &[u8]) {
        within("PUBLISH request", self.client.publish(topic, qos, retain, payload)).await.expect("queue PUBLISH");
        match qos {
            QoS::AtMostOnce => {}
            QoS::AtLeastOnce => {
                self.wait_for("PUBACK", |packet| matches!(packet, Packet::PubAck(_)).then_some(())).await
            }
            QoS::ExactlyOnce => {
                self.wait_for("PUBCOMP", |packet| matches!(packet, Packet::PubComp(_)).then_some(())).await
            }
        }
    }

    /// Asserts that no PUBLISH arrives during `quiet`.
    async fn assert_no_publish(&mut self, quiet: Duration) {
        if let Some(publish) = self.stash.iter().find(|packet| matches!(packet, Packet::Publish(_))) {
            panic!("client {:?} expected no PUBLISH, got {publish:?}", self.id);
        }
        let deadline = tokio::time::Instant::now() + quiet;
        loop {
            match tokio::time::timeout_at(deadline, self.events.recv()).await {
                Err(_) => return,
                Ok(Some(Ok(Packet::Publish(publish)))) => {
                    panic!("client {:?} expected no PUBLISH for {quiet:?}, got {publish:?}", self.id)
                }
                Ok(Some(Ok(Packet::PingResp))) => {}
                Ok(Some(Ok(packet))) => self.stash.push_back(packet),
                Ok(Some(Err(error))) => panic!("client {:?} lost its connection: {error}", self.id),
                Ok(None) => panic!("client {:?}'s event loop has stopped", self.id),
            }
        }
    }

    /// Waits until the broker closes the connection and returns the error rumqttc reported.
    /// Packets that arrive first are stashed.
    async fn wait_closed(&mut self, what: &str) -> ConnectionError {
        let deadline = tokio::time::Instant::now() + RPC_TIMEOUT;
        loop {
            match tokio::time::timeout_at(deadline, self.events.recv()).await {
                Err(_) => panic!("client {:?} still connected {RPC_TIMEOUT:?} after {what}", self.id),
                Ok(Some(Ok(Packet::PingResp))) => {}
                Ok(Some(Ok(packet))) => self.stash.push_back(packet),
                Ok(Some(Err(error))) => return error,
                Ok(None) => panic!("client {:?}'s event loop stopped without an error after {what}", self.id),
            }
        }
    }

    /// Sends DISCONNECT and waits for the broker to close the socket. It closes only after it
    /// has released the session (requeued what was unacknowledged, stored a persistent session,
    /// decided about the will), so the caller may rely on all of that having happened.
    async fn disconnect(mut self) {
        within("DISCONNECT request", self.client.disconnect()).await.expect("queue DISCONNECT");
        self.wait_closed("DISCONNECT").await;
    }

    /// Closes the socket without DISCONNECT, as a crashed client would: the event loop task is
    /// cancelled, and dropping the event loop drops the socket.
    async fn drop_connection(self) {
        self.driver.abort();
        // Resolves once the task's future, and with it the socket, has been dropped.
        let _ = self.driver.await;
    }
}

// -- publish and subscribe -----------------------------------------------------------------

#[tokio::test]
async fn mqtt_publish_subscribe_qos0_and_qos1() {
    let broker = Broker::start();
    let mut subscriber = connect_mqtt(mqtt_options(&broker, "pubsub-subscriber")).await;
    let granted = subscriber.subscribe("pubsub/+", QoS::AtLeastOnce).await;
    assert_eq!(granted, SubscribeReasonCode::Success(QoS::AtLeastOnce));
    let mut qos0_subscriber = connect_mqtt(mqtt_options(&broker, "pubsub-qos0-subscriber")).await;
    let granted = qos0_subscriber.subscribe("pubsub/one", QoS::AtMostOnce).await;
    assert_eq!(granted, SubscribeReasonCode::Success(QoS::AtMostOnce));
    let mut publisher = connect_mqtt(mqtt_options(&broker, "pubsub-publisher")).await;

    // Every byte value, so nothing on the way may treat the payload as text.
    let binary: Vec<u8> = (0..=u8::MAX).collect();
    publisher.publish("pubsub/zero", QoS::AtMostOnce, false, &binary).await;
    let received = subscriber.next_publish().await;
    assert_eq!(received.topic, "pubsub/zero");
    assert_eq!(received.qos, QoS::AtMostOnce);
    assert_eq!(received.payload, binary);
    assert!(!received.retain && !received.dup, "flags of {received:?}");

    publisher.publish("pubsub/one", QoS::AtLeastOnce, false, b"at least once").await;
    let received = subscriber.next_publish().await;
    assert_eq!(received.topic, "pubsub/one");
    assert_eq!(received.qos, QoS::AtLeastOnce);
    assert_ne!(received.pkid, 0, "a QoS 1 PUBLISH carries a packet id");
    assert_eq!(received.payload, &b"at least once"[..]);
    assert!(!received.retain && !received.dup, "flags of {received:?}");

    // Delivery QoS is the lower of the publish's and the subscription's. The QoS 0 publish to
    // pubsub/zero does not match this filter, so the first thing here is the QoS 1 one.
    let received = qos0_subscriber.next_publish().await;
    assert_eq!(received.topic, "pubsub/one");
    assert_eq!(received.qos, QoS::AtMostOnce, "downgraded to the subscription's QoS");
    assert_eq!(received.payload, &b"at least once"[..]);
}

#[tokio::test]
async fn wildcard_subscriptions_match_as_mqtt_defines() {
    const MARKER: &str = "wild/marker/temp";
    let broker = Broker::start();
    let mut single_level = connect_mqtt(mqtt_options(&broker, "wild-single-level")).await;
    single_level.subscribe("wild/+/temp", QoS::AtLeastOnce).await;
    let mut multi_level = connect_mqtt(mqtt_options(&broker, "wild-multi-level")).await;
    multi_level.subscribe("wild/#", QoS::AtLeastOnce).await;
    let mut overlapping = connect_mqtt(mqtt_options(&broker, "wild-overlapping")).await;
    overlapping.subscribe("wild/+/temp", QoS::AtLeastOnce).await;
    overlapping.subscribe("wild/#", QoS::AtLeastOnce).await;
    let mut publisher = connect_mqtt(mqtt_options(&broker, "wild-publisher")).await;

    let topics = [
        "wild/kitchen/temp",
        "wild/kitchen/humidity",
        "wild/cellar/north/temp",
        "wild/temp",
        // MQTT-4.7.1-2: "sport/#" also matches "sport", the parent level itself.
        "wild",
        "elsewhere/kitchen/temp",
    ];
    for topic in topics {
        publisher.publish(topic, QoS::AtLeastOnce, false, topic.as_bytes()).await;
    }
    // Matched by every filter here, so it arrives last everywhere.
    publisher.publish(MARKER, QoS::AtLeastOnce, false, b"marker").await;

    // '+' is exactly one level.
    assert_eq!(single_level.topics_until(MARKER).await, ["wild/kitchen/temp", MARKER]);
    // '#' is any number of levels, zero included.
    let multi_expected =
        ["wild/kitchen/temp", "wild/kitchen/humidity", "wild/cellar/north/temp", "wild/temp", "wild", MARKER];
    assert_eq!(multi_level.topics_until(MARKER).await, multi_expected);
    // Two matching filters of one session still mean one copy: the session has one queue.
    assert_eq!(overlapping.topics_until(MARKER).await, multi_expected);
}

// -- AMQP interop --------------------------------------------------------------------------

#[tokio::test]
async fn mqtt_to_amqp_routing() {
    let broker = Broker::start();
    let connection = connect(&broker).await;
    let channel = open_channel(&connection).await;
    let queue = "mqtt-to-amqp-temperatures";
    declare_queue(&channel, queue).await;
    bind(&channel, queue, TOPIC_EXCHANGE, "sensors.*.temp").await;
    let mut consumer = consume(&channel, queue, "mqtt-to-amqp-consumer", no_ack()).await;
    let mut publisher = connect_mqtt(mqtt_options(&broker, "mqtt-to-amqp-publisher")).await;

    // Not matched by the binding: it must not show up ahead of the ones that are.
    publisher.publish("sensors/kitchen/humidity", QoS::AtLeastOnce, false, b"40%").await;
    publisher.publish("sensors/kitchen/temp", QoS::AtLeastOnce, false, b"21.5").await;
    publisher.publish("sensors/hall/temp", QoS::AtMostOnce, false, b"19.0").await;
    // '/' and '.' swap: a dot inside a level is a '/' inside one AMQP word.
    publisher.publish("sensors/v1.2/temp", QoS::AtLeastOnce, false, b"20.0").await;

    let delivery = next_delivery(&mut consumer).await;
    assert_eq!(delivery.exchange.as_str(), TOPIC_EXCHANGE);
    assert_eq!(delivery.routing_key.as_str(), "sensors.kitchen.temp");
    assert_eq!(delivery.data, b"21.5");
    assert_eq!(*delivery.properties.delivery_mode(), Some(2), "QoS 1 publishes are persistent");

    let delivery = next_delivery(&mut consumer).await;
    assert_eq!(delivery.routing_key.as_str(), "sensors.hall.temp");
    assert_eq!(delivery.data, b"19.0");
    assert_eq!(*delivery.properties.delivery_mode(), Some(1), "QoS 0 publishes are transient");

    let delivery = next_delivery(&mut consumer).await;
    assert_eq!(delivery.routing_key.as_str(), "sensors.v1/2.temp");
    assert_eq!(delivery.data, b"20.0");
}

#[tokio::test]
async fn amqp_to_mqtt_routing() {
    let broker = Broker::start();
    let mut subscriber = connect_mqtt(mqtt_options(&broker, "amqp-to-mqtt-subscriber")).await;
    subscriber.subscribe("home/+/light", QoS::AtLeastOnce).await;
    let connection = connect(&broker).await;
    let channel = confirm_channel(&connection).await;

    let persistent = BasicProperties::default().with_delivery_mode(2);
    publish_confirmed(&channel, TOPIC_EXCHANGE, "home.hall.light", b"on", persistent).await;
    publish_confirmed(&channel, TOPIC_EXCHANGE, "home.garden.gate", b"closed", BasicProperties::default()).await;
    publish_confirmed(&channel, TOPIC_EXCHANGE, "home.porch.light", b"off", BasicProperties::default()).await;

    let received = subscriber.next_publish().await;
    assert_eq!(received.topic, "home/hall/light");
    assert_eq!(received.qos, QoS::AtLeastOnce, "persistent AMQP messages count as QoS 1");
    assert_eq!(received.payload, &b"on"[..]);

    // home.garden.gate is not matched, so the porch light is next.
    let received = subscriber.next_publish().await;
    assert_eq!(received.topic, "home/porch/light");
    assert_eq!(received.qos, QoS::AtMostOnce, "transient AMQP messages count as QoS 0");
    assert_eq!(received.payload, &b"off"[..]);
}

// -- QoS 1 and 2 ---------------------------------------------------------------------------

#[tokio::test]
async fn qos1_unacked_is_redelivered() {
    const CLIENT: &str = "redelivery-subscriber";
    const TOPIC: &str = "redelivery/topic";
    let broker = Broker::start();
    // The session queue, named as RabbitMQ names it; watched from AMQP below.
    let queue = format!("mqtt-subscription-{CLIENT}qos1");
    let manual_acks = || {
        let mut options = persistent_mqtt_options(&broker, CLIENT);
        options.set_manual_acks(true);
        options
    };
    let mut first = connect_mqtt(manual_acks()).await;
    first.subscribe(TOPIC, QoS::AtLeastOnce).await;
    let mut publisher = connect_mqtt(mqtt_options(&broker, "redelivery-publisher")).await;
    publisher.publish(TOPIC, QoS::AtLeastOnce, false, b"ack me").await;

    let received = first.next_publish().await;
    assert_eq!(received.payload, &b"ack me"[..]);
    assert_eq!(received.qos, QoS::AtLeastOnce);
    assert!(!received.dup, "a first delivery is not a duplicate");
    // Gone without PUBACK and without DISCONNECT.
    first.drop_connection().await;

    // The broker puts the message back once it sees the socket close.
    let connection = connect(&broker).await;
    let channel = open_channel(&connection).await;
    let (channel_ref, queue_ref) = (&channel, queue.as_str());
    poll_until("the unacknowledged message back in the session queue", RPC_TIMEOUT, move || async move {
        message_count(channel_ref, queue_ref).await == 1
    })
    .await;

    let mut second = connect_mqtt(manual_acks()).await;
    assert!(second.connack.session_present, "the persistent session survived the dropped connection");
    let redelivered = second.next_publish().await;
    assert_eq!(redelivered.topic, TOPIC);
    assert_eq!(redelivered.payload, &b"ack me"[..]);
    assert_eq!(redelivered.qos, QoS::AtLeastOnce);
    assert!(redelivered.dup, "a redelivery carries DUP: {redelivered:?}");

    // Acknowledged this time, so nothing goes back when the session is released.
    within("PUBACK request", second.client.ack(&redelivered)).await.expect("queue PUBACK");
    second.disconnect().await;
    assert_eq!(message_count(&channel, &queue).await, 0, "the PUBACK settled the message");
}

#[tokio::test]
async fn qos2_publish_is_routed_once() {
    let broker = Broker::start();
    let connection = connect(&broker).await;
    let channel = open_channel(&connection).await;
    let queue = "qos2-observer";
    declare_queue(&channel, queue).await;
    bind(&channel, queue, TOPIC_EXCHANGE, "qos2.#").await;
    let mut consumer = consume(&channel, queue, "qos2-consumer", no_ack()).await;
    let mut subscriber = connect_mqtt(mqtt_options(&broker, "qos2-subscriber")).await;
    let granted = subscriber.subscribe("qos2/#", QoS::ExactlyOnce).await;
    assert_eq!(granted, SubscribeReasonCode::Success(QoS::ExactlyOnce), "QoS 2 subscriptions are granted QoS 2");
    let mut publisher = connect_mqtt(mqtt_options(&broker, "qos2-publisher")).await;

    // PUBLISH, PUBREC, PUBREL, PUBCOMP.
    publisher.publish("qos2/exactly", QoS::ExactlyOnce, false, b"exactly once").await;
    publisher.publish("qos2/marker", QoS::AtLeastOnce, false, b"marker").await;

    let delivery = next_delivery(&mut consumer).await;
    assert_eq!(delivery.routing_key.as_str(), "qos2.exactly");
    assert_eq!(delivery.data, b"exactly once");
    assert_eq!(*delivery.properties.delivery_mode(), Some(2), "QoS 2 publishes are persistent");
    let delivery = next_delivery(&mut consumer).await;
    assert_eq!(delivery.routing_key.as_str(), "qos2.marker", "no second copy ahead of the marker");

    let received = subscriber.next_publish().await;
    assert_eq!(received.topic, "qos2/exactly");
    assert_eq!(received.payload, &b"exactly once"[..]);
    assert_eq!(received.qos, QoS::ExactlyOnce, "published and granted at QoS 2");
    assert_eq!(subscriber.next_publish().await.topic, "qos2/marker", "no second copy ahead of the marker");
}

#[test]
fn qos2_resend_before_pubrel_is_routed_once() {
    const TOPIC: &str = "qos2raw/topic";
    const PACKET_ID: u16 = 7;
    let broker = Broker::start();
    let mut subscriber = wire::open(broker.mqtt_addr, &wire::connect("MQTT", 4, 0, "qos2raw-subscriber", None));
    subscriber.write_all(&wire::subscribe(1, "qos2raw/#", 1)).expect("send SUBSCRIBE");
    assert_eq!(wire::expect_packet(&mut subscriber, wire::SUBACK), [0x00, 0x01, 0x01], "SUBACK: id 1, QoS 1");
    let mut publisher = wire::open(broker.mqtt_addr, &wire::connect("MQTT", 4, 0, "qos2raw-publisher", None));
    let id_bytes = PACKET_ID.to_be_bytes();

    publisher.write_all(&wire::publish(wire::PUBLISH_QOS2, TOPIC, Some(PACKET_ID), b"first")).expect("send PUBLISH");
    assert_eq!(wire::expect_packet(&mut publisher, wire::PUBREC), id_bytes);
    // A client that missed the PUBREC sends the PUBLISH again with DUP set (MQTT-4.3.3):
    // acknowledged again, not routed again.
    let resend = wire::publish(wire::PUBLISH_QOS2 | wire::DUP, TOPIC, Some(PACKET_ID), b"first");
    publisher.write_all(&resend).expect("resend PUBLISH");
    assert_eq!(wire::expect_packet(&mut publisher, wire::PUBREC), id_bytes);
    publisher.write_all(&wire::ack(wire::PUBREL, PACKET_ID)).expect("send PUBREL");
    assert_eq!(wire::expect_packet(&mut publisher, wire::PUBCOMP), id_bytes);
    // After PUBCOMP the packet id is free: the same id now names a new message.
    publisher.write_all(&wire::publish(wire::PUBLISH_QOS2, TOPIC, Some(PACKET_ID), b"second")).expect("send PUBLISH");
    assert_eq!(wire::expect_packet(&mut publisher, wire::PUBREC), id_bytes);
    publisher.write_all(&wire::ack(wire::PUBREL, PACKET_ID)).expect("send PUBREL");
    assert_eq!(wire::expect_packet(&mut publisher, wire::PUBCOMP), id_bytes);

    for expected in [&b"first"[..], &b"second"[..]] {
        let body = wire::expect_packet(&mut subscriber, wire::PUBLISH_QOS1);
        let (topic, packet_id, payload) = wire::parse_publish(wire::PUBLISH_QOS1, &body);
        assert_eq!(topic, TOPIC);
        assert_eq!(payload, expected, "each message once, in order");
        let packet_id = packet_id.expect("a QoS 1 PUBLISH has a packet id");
        subscriber.write_all(&wire::ack(wire::PUBACK, packet_id)).expect("send PUBACK");
    }
}

/// Outbound QoS 2 (RabbitMQ has none): the message leaves the queue at PUBREC, so a connection
/// lost between PUBREC and PUBCOMP gets PUBREL again on reconnect, never the PUBLISH: the
/// application sees the message once (MQTT 4.3.3, 4.4).
#[test]
fn outbound_qos2_reaches_the_client_once_across_a_reconnect() {
    const CLIENT: &str = "qos2-outbound-subscriber";
    let broker = Broker::start();
    let persistent = wire::persistent_connect(CLIENT);
    let mut subscriber = wire::open(broker.mqtt_addr, &persistent);
    subscriber.write_all(&wire::subscribe(1, "qos2out/#", 2)).expect("send SUBSCRIBE");
    assert_eq!(wire::expect_packet(&mut subscriber, wire::SUBACK), [0x00, 0x01, 0x02], "SUBACK: QoS 2 granted");

    let mut publisher = wire::open(broker.mqtt_addr, &wire::connect("MQTT", 4, 0, "qos2-outbound-publisher", None));
    publisher.write_all(&wire::publish(wire::PUBLISH_QOS2, "qos2out/a", Some(5), b"once")).expect("PUBLISH");
    assert_eq!(wire::expect_packet(&mut publisher, wire::PUBREC), 5u16.to_be_bytes());
    publisher.write_all(&wire::ack(wire::PUBREL, 5)).expect("PUBREL");
    assert_eq!(wire::expect_packet(&mut publisher, wire::PUBCOMP), 5u16.to_be_bytes());

    let body = wire::expect_packet(&mut subscriber, wire::PUBLISH_QOS2);
    let (topic, packet_id, payload) = wire::parse_publish(wire::PUBLISH_QOS2, &body);
    assert_eq!((topic.as_str(), payload.as_slice()), ("qos2out/a", &b"once"[..]));
    let packet_id = packet_id.expect("a QoS 2 PUBLISH has a packet id");
    subscriber.write_all(&wire::ack(wire::PUBREC, packet_id)).expect("PUBREC");
    assert_eq!(wire::expect_packet(&mut subscriber, wire::PUBREL), packet_id.to_be_bytes());
    // The connection drops before PUBCOMP.
    drop(subscriber);

    let mut subscriber = wire::open_session(broker.mqtt_addr, &persistent, true);
    assert_eq!(
        wire::expect_packet(&mut subscriber, wire::PUBREL),
        packet_id.to_be_bytes(),
        "PUBREL again, not PUBLISH"
    );
    subscriber.write_all(&wire::ack(wire::PUBCOMP, packet_id)).expect("PUBCOMP");

    // The next message is the marker: no second copy of "once" came before it.
    publisher.write_all(&wire::publish(wire::PUBLISH_QOS1, "qos2out/marker", Some(6), b"marker")).expect("PUBLISH");
    assert_eq!(wire::expect_packet(&mut publisher, wire::PUBACK), 6u16.to_be_bytes());
    let body = wire::expect_packet(&mut subscriber, wire::PUBLISH_QOS1);
    let (topic, _, _) = wire::parse_publish(wire::PUBLISH_QOS1, &body);
    assert_eq!(topic, "qos2out/marker");
}

/// What a persistent session's next connection owes the client (MQTT 4.4): PUBREL for a QoS 2
/// message it had PUBREC'd, and the PUBLISHes it had not acknowledged, under their original
/// packet ids with DUP set; a new message then takes an id none of them holds. `crash`: the
/// broker is killed and restarted in between, so the ids come from the session's journal
/// record.
fn resend_under_original_ids(crash: bool) {
    let client = if crash { "ids-after-crash" } else { "ids-after-reconnect" };
    let broker = Broker::start();
    let persistent = wire::persistent_connect(client);
    let mut subscriber = wire::open(broker.mqtt_addr, &persistent);
    subscriber.write_all(&wire::subscribe(1, "ids/#", 2)).expect("send SUBSCRIBE");
    assert_eq!(wire::expect_packet(&mut subscriber, wire::SUBACK), [0x00, 0x01, 0x02]);
    let mut publisher = wire::open(broker.mqtt_addr, &wire::connect("MQTT", 4, 0, &format!("{client}-pub"), None));
    let bodies = [&b"completed-1"[..], b"completed-2", b"released", b"unacked-1", b"unacked-2"];
    for (index, body) in bodies.iter().enumerate() {
        let id = index as u16 + 1;
        publisher.write_all(&wire::publish(wire::PUBLISH_QOS2, "ids/a", Some(id), body)).expect("PUBLISH");
        assert_eq!(wire::expect_packet(&mut publisher, wire::PUBREC), id.to_be_bytes());
        publisher.write_all(&wire::ack(wire::PUBREL, id)).expect("PUBREL");
        assert_eq!(wire::expect_packet(&mut publisher, wire::PUBCOMP), id.to_be_bytes());
    }
    let mut sent = Vec::new();
    for _ in 0..bodies.len() {
        let body = wire::expect_packet(&mut subscriber, wire::PUBLISH_QOS2);
        let (_, id, payload) = wire::parse_publish(wire::PUBLISH_QOS2, &body);
        sent.push((id.expect("a packet id"), payload));
    }
    // The first two complete, so the ids owed are not the lowest: a new connection that
    // numbered afresh would not reuse them by chance.
    for (id, _) in &sent[..2] {
        subscriber.write_all(&wire::ack(wire::PUBREC, *id)).expect("PUBREC");
        assert_eq!(wire::expect_packet(&mut subscriber, wire::PUBREL), id.to_be_bytes());
        subscriber.write_all(&wire::ack(wire::PUBCOMP, *id)).expect("PUBCOMP");
    }
    let sent = sent.split_off(2);
    let released = sent[0].0;
    subscriber.write_all(&wire::ack(wire::PUBREC, released)).expect("PUBREC");
    assert_eq!(wire::expect_packet(&mut subscriber, wire::PUBREL), released.to_be_bytes());
    drop(subscriber);
    drop(publisher);
    let broker = if crash {
        // At once: a QoS 2 PUBLISH goes out only once its id is on disk, and PUBREL only once
        // the message's removal is.
        broker.crash_and_restart()
    } else {
        broker
    };
    let mut publisher = wire::open(broker.mqtt_addr, &wire::connect("MQTT", 4, 0, &format!("{client}-pub"), None));
    publisher.write_all(&wire::publish(wire::PUBLISH_QOS2, "ids/a", Some(9), b"new")).expect("PUBLISH");
    assert_eq!(wire::expect_packet(&mut publisher, wire::PUBREC), 9u16.to_be_bytes());

    let mut subscriber = wire::open_session(broker.mqtt_addr, &persistent, true);
    assert_eq!(wire::expect_packet(&mut subscriber, wire::PUBREL), released.to_be_bytes(), "PUBREL owed");
    for (id, payload) in &sent[1..] {
        let body = wire::expect_packet(&mut subscriber, wire::PUBLISH_QOS2 | wire::DUP);
        let (_, resent_id, resent_payload) = wire::parse_publish(wire::PUBLISH_QOS2, &body);
        assert_eq!((resent_id, &resent_payload), (Some(*id), payload), "resent under its original id, with DUP");
    }
    let body = wire::expect_packet(&mut subscriber, wire::PUBLISH_QOS2);
    let (_, new_id, payload) = wire::parse_publish(wire::PUBLISH_QOS2, &body);
    assert_eq!(payload, b"new");
    let held: Vec<u16> = sent.iter().map(|(id, _)| *id).collect();
    assert!(!held.contains(&new_id.expect("an id")), "{new_id:?} is one of the ids still owed {held:?}");
}

/// A takeover while the old connection is still open: the new one gets the PUBLISHes the old
/// one had not seen acknowledged first, under their original ids, before anything newer.
#[test]
fn a_takeover_resends_under_the_original_ids_before_newer_messages() {
    let client = "ids-takeover";
    let broker = Broker::start();
    let persistent = wire::persistent_connect(client);
    let mut old = wire::open(broker.mqtt_addr, &persistent);
    old.write_all(&wire::subscribe(1, "takeover/#", 1)).expect("send SUBSCRIBE");
    assert_eq!(wire::expect_packet(&mut old, wire::SUBACK), [0x00, 0x01, 0x01]);
    let mut publisher = wire::open(broker.mqtt_addr, &wire::connect("MQTT", 4, 0, "ids-takeover-pub", None));
    let publish = |publisher: &mut std::net::TcpStream, id: u16, body: &[u8]| {
        publisher.write_all(&wire::publish(wire::PUBLISH_QOS1, "takeover/a", Some(id), body)).expect("PUBLISH");
        assert_eq!(wire::expect_packet(publisher, wire::PUBACK), id.to_be_bytes());
    };
    for (id, body) in [(1, &b"acked"[..]), (2, b"one"), (3, b"two")] {
        publish(&mut publisher, id, body);
    }
    let mut sent = Vec::new();
    for _ in 0..3 {
        let body = wire::expect_packet(&mut old, wire::PUBLISH_QOS1);
        let (_, id, payload) = wire::parse_publish(wire::PUBLISH_QOS1, &body);
        sent.push((id.expect("an id"), payload));
    }
    old.write_all(&wire::ack(wire::PUBACK, sent[0].0)).expect("PUBACK");
    // PINGRESP: the PUBACK before it has been read.
    old.write_all(&[wire::PINGREQ, 0]).expect("PINGREQ");
    wire::expect_packet(&mut old, wire::PINGRESP);
    let owed = sent.split_off(1);

    // The same client id again, while the old connection is open.
    let mut new = wire::open_session(broker.mqtt_addr, &persistent, true);
    for (id, payload) in &owed {
        let body = wire::expect_packet(&mut new, wire::PUBLISH_QOS1 | wire::DUP);
        let (_, resent_id, resent_payload) = wire::parse_publish(wire::PUBLISH_QOS1, &body);
        assert_eq!((resent_id, &resent_payload), (Some(*id), payload), "resent first, under its original id");
    }
    // A message published now goes out after them, under an id none of them holds.
    publish(&mut publisher, 4, b"newer");
    let body = wire::expect_packet(&mut new, wire::PUBLISH_QOS1);
    let (_, id, payload) = wire::parse_publish(wire::PUBLISH_QOS1, &body);
    assert_eq!(payload, b"newer");
    assert!(!owed.iter().any(|(owed_id, _)| Some(*owed_id) == id), "{id:?} is an id still owed");
}

/// Inbound QoS 2 across a dropped connection (and a crash): a PUBLISH the broker had answered
/// with PUBREC, resent by the client on its next connection, is not routed a second time, and
/// once PUBCOMP has gone the id is free for a new message.
fn inbound_qos2_once_across(crash: bool) {
    let suffix = if crash { "crash" } else { "reconnect" };
    let broker = Broker::start();
    let subscriber_connect = wire::persistent_connect(&format!("inq2-sub-{suffix}"));
    let mut subscriber = wire::open(broker.mqtt_addr, &subscriber_connect);
    subscriber.write_all(&wire::subscribe(1, "inq2/#", 1)).expect("send SUBSCRIBE");
    assert_eq!(wire::expect_packet(&mut subscriber, wire::SUBACK), [0x00, 0x01, 0x01]);
    drop(subscriber);
    let publisher_connect = wire::persistent_connect(&format!("inq2-pub-{suffix}"));
    let mut publisher = wire::open(broker.mqtt_addr, &publisher_connect);
    publisher.write_all(&wire::publish(wire::PUBLISH_QOS2, "inq2/a", Some(7), b"once")).expect("PUBLISH");
    assert_eq!(wire::expect_packet(&mut publisher, wire::PUBREC), 7u16.to_be_bytes());
    // The connection drops before PUBREL (the client may not have seen the PUBREC).
    drop(publisher);
    let broker = if crash { broker.crash_and_restart() } else { broker };

    let mut publisher = wire::open_session(broker.mqtt_addr, &publisher_connect, true);
    let exchange = |publisher: &mut std::net::TcpStream, first_byte: u8, body: &[u8]| {
        publisher.write_all(&wire::publish(first_byte, "inq2/a", Some(7), body)).expect("PUBLISH");
        assert_eq!(wire::expect_packet(publisher, wire::PUBREC), 7u16.to_be_bytes());
        publisher.write_all(&wire::ack(wire::PUBREL, 7)).expect("PUBREL");
        assert_eq!(wire::expect_packet(publisher, wire::PUBCOMP), 7u16.to_be_bytes());
    };
    exchange(&mut publisher, wire::PUBLISH_QOS2 | wire::DUP, b"once");
    exchange(&mut publisher, wire::PUBLISH_QOS2, b"again");
    let mut expected = vec![b"once".to_vec(), b"again".to_vec()];
    let broker = if crash {
        // After PUBCOMP the id is free, also across a crash: a new message with it is routed.
        drop(publisher);
        let broker = broker.crash_and_restart();
        let mut publisher = wire::open_session(broker.mqtt_addr, &publisher_connect, false);
        exchange(&mut publisher, wire::PUBLISH_QOS2, b"third");
        expected.push(b"third".to_vec());
        broker
    } else {
        broker
    };

    let mut subscriber = wire::open_session(broker.mqtt_addr, &subscriber_connect, true);
    let mut bodies = Vec::new();
    for _ in 0..expected.len() {
        let (first, body) = wire::read_packet(&mut subscriber).expect("read").expect("a packet");
        let (_, id, payload) = wire::parse_publish(first, &body);
        subscriber.write_all(&wire::ack(wire::PUBACK, id.expect("QoS 1"))).expect("PUBACK");
        bodies.push(payload);
    }
    assert_eq!(bodies, expected);
    // Nothing else: the resent PUBLISH was not routed again.
    subscriber.write_all(&[wire::PINGREQ, 0]).expect("PINGREQ");
    wire::expect_packet(&mut subscriber, wire::PINGRESP);
}

#[test]
fn inbound_qos2_is_routed_once_across_a_reconnect() {
    inbound_qos2_once_across(false);
}

#[test]
fn inbound_qos2_is_routed_once_across_a_broker_crash() {
    inbound_qos2_once_across(true);
}

#[test]
fn outbound_publishes_are_resent_under_their_original_ids() {
    resend_under_original_ids(false);
}

#[test]
fn outbound_qos2_ids_survive_a_broker_crash() {
    resend_under_original_ids(true);
}

// -- retained messages and wills -----------------------------------------------------------

#[tokio::test]
async fn retained_message_delivered_on_subscribe_and_cleared_by_empty_payload() {
    let broker = Broker::start();
    let mut publisher = connect_mqtt(mqtt_options(&broker, "retained-publisher")).await;
    publisher.publish("retained/kitchen/temp", QoS::AtLeastOnce, true, b"22.0").await;
    publisher.publish("retained/hall/temp", QoS::AtLeastOnce, true, b"19.5").await;
    publisher.publish("retained/hall/humidity", QoS::AtLeastOnce, true, b"40%").await;

    let mut early = connect_mqtt(mqtt_options(&broker, "retained-early-subscriber")).await;
    early.subscribe("retained/+/temp", QoS::AtLeastOnce).await;
    // The broker keeps them per topic, in no particular order.
    let mut retained = vec![early.next_publish().await, early.next_publish().await];
    retained.sort_by(|a, b| a.topic.cmp(&b.topic));
    assert_eq!(retained[0].topic, "retained/hall/temp");
    assert_eq!(retained[0].payload, &b"19.5"[..]);
    assert_eq!(retained[1].topic, "retained/kitchen/temp");
    assert_eq!(retained[1].payload, &b"22.0"[..]);
    for publish in &retained {
        assert!(publish.retain, "a retained message sent on subscribe has RETAIN set: {publish:?}");
        assert_eq!(publish.qos, QoS::AtLeastOnce);
    }

    // An empty retained payload clears the topic, and reaches current subscribers as a normal
    // message (MQTT-3.3.1-10), with RETAIN clear like every live delivery (MQTT-3.3.1-9). The
    // humidity message, not matched by the filter, must not come first.
    publisher.publish("retained/kitchen/temp", QoS::AtLeastOnce, true, b"").await;
    let cleared = early.next_publish().await;
    assert_eq!(cleared.topic, "retained/kitchen/temp");
    assert!(cleared.payload.is_empty(), "payload {:?}", cleared.payload);
    assert!(!cleared.retain, "a live delivery has RETAIN clear: {cleared:?}");

    let mut late = connect_mqtt(mqtt_options(&broker, "retained-late-subscriber")).await;
    late.subscribe("retained/#", QoS::AtLeastOnce).await;
    let mut retained = vec![late.next_publish().await, late.next_publish().await];
    retained.sort_by(|a, b| a.topic.cmp(&b.topic));
    assert_eq!(retained[0].topic, "retained/hall/humidity");
    assert_eq!(retained[0].payload, &b"40%"[..]);
    assert_eq!(retained[1].topic, "retained/hall/temp");
    assert_eq!(retained[1].payload, &b"19.5"[..]);
    assert!(retained.iter().all(|publish| publish.retain), "RETAIN set on {retained:?}");
    // Retained messages go out with the SUBACK, before anything published after it; so if the
    // kitchen's had survived, it would arrive before this marker.
    publisher.publish("retained/marker", QoS::AtLeastOnce, false, b"marker").await;
    let next = late.next_publish().await;
    assert_eq!(next.topic, "retained/marker", "the cleared retained message was still sent: {next:?}");
    assert!(!next.retain);
}

#[tokio::test]
async fn last_will_published_on_abnormal_disconnect() {
    let broker = Broker::start();
    let mut observer = connect_mqtt(mqtt_options(&broker, "will-observer")).await;
    observer.subscribe("will/+", QoS::AtLeastOnce).await;
    let mut options = mqtt_options(&broker, "will-crashing-client");
    options.set_last_will(LastWill::new("will/crashed", "crashing client is gone", QoS::AtLeastOnce, false));
    let crashing = connect_mqtt(options).await;

    crashing.drop_connection().await;

    let will = observer.next_publish().await;
    assert_eq!(will.topic, "will/crashed");
    assert_eq!(will.payload, &b"crashing client is gone"[..]);
    assert_eq!(will.qos, QoS::AtLeastOnce);
    assert!(!will.retain);
}

#[tokio::test]
async fn takeover_ends_a_session_stuck_writing_to_a_client_that_does_not_read() {
    // A client that stops reading fills its socket, and the broker's writes to it block. A new
    // connection with its client id must still end that session at once (MQTT-3.1.4-2), which
    // shows as the old connection's will being published.
    const CLIENT: &str = "stuck-reader";
    const TOPIC: &str = "stuck/flood";
    let broker = Broker::start();
    let mut observer = connect_mqtt(mqtt_options(&broker, "stuck-observer")).await;
    observer.subscribe("stuck/will", QoS::AtLeastOnce).await;
    let addr = broker.mqtt_addr;
    let stuck = tokio::task::spawn_blocking(move || {
        let mut stream = wire::open(addr, &wire::connect("MQTT", 4, 0, CLIENT, Some(("stuck/will", b"gone"))));
        stream.write_all(&wire::subscribe(1, TOPIC, 1)).expect("send SUBSCRIBE");
        wire::expect_packet(&mut stream, wire::SUBACK);
        stream // kept open, never read again
    })
    .await
    .expect("stuck client");
    // QoS 1 deliveries up to the prefetch window (20), 1 MiB each, one at a time so each is a
    // write of its own: far more than the loopback socket buffers hold.
    let connection = connect(&broker).await;
    let channel = confirm_channel(&connection).await;
    let persistent = BasicProperties::default().with_delivery_mode(2);
    let body = vec![b'x'; 1024 * 1024];
    for _ in 0..20 {
        publish_confirmed(&channel, TOPIC_EXCHANGE, "stuck.flood", &body, persistent.clone()).await;
        tokio::time::sleep(Duration::from_millis(20)).await;
    }

    let newcomer = connect_mqtt(mqtt_options(&broker, CLIENT)).await;
    let will = observer.next_publish().await;
    assert_eq!((will.topic.as_str(), &will.payload[..]), ("stuck/will", &b"gone"[..]));
    newcomer.disconnect().await;
    drop(stuck);
}

#[tokio::test]
async fn last_will_not_published_after_clean_disconnect() {
    let broker = Broker::start();
    let mut observer = connect_mqtt(mqtt_options(&broker, "will-observer")).await;
    observer.subscribe("will/+", QoS::AtLeastOnce).await;
    let mut options = mqtt_options(&broker, "will-leaving-client");
    options.set_last_will(LastWill::new("will/left", "leaving client is gone", QoS::AtLeastOnce, false));
    let leaving = connect_mqtt(options).await;

    // Returns once the broker has closed the socket, by which time a will would have been routed.
    leaving.disconnect().await;

    observer.publish("will/marker", QoS::AtLeastOnce, false, b"marker").await;
    let next = observer.next_publish().await;
    assert_eq!(next.topic, "will/marker", "the will of a client that sent DISCONNECT was published: {next:?}");
}

// -- authentication ------------------------------------------------------------------------

/// Asserts that the broker refuses `options` with CONNACK return code `expected`.
async fn assert_refused(options: MqttOptions, expected: ConnectReturnCode) {
    match try_connect_mqtt(options).await {
        Ok(client) => panic!("expected CONNACK {expected:?}, but {:?} was accepted", client.id),
        Err(ConnectionError::ConnectionRefused(code)) => assert_eq!(code, expected),
        Err(other) => panic!("expected CONNACK {expected:?}, got {other:?}"),
    }
}

#[tokio::test]
async fn anonymous_connect_refused() {
    let broker = Broker::start();
    let anonymous = MqttOptions::new("anonymous-client", "127.0.0.1", broker.mqtt_port());
    assert_refused(anonymous, ConnectReturnCode::NotAuthorized).await;
}

#[tokio::test]
async fn bad_password_refused() {
    let broker = Broker::start();
    let mut wrong_password = mqtt_options(&broker, "bad-password-client");
    wrong_password.set_credentials("guest", "not-the-password");
    assert_refused(wrong_password, ConnectReturnCode::BadUserNamePassword).await;
    let mut unknown_user = mqtt_options(&broker, "unknown-user-client");
    unknown_user.set_credentials("nobody", "guest");
    assert_refused(unknown_user, ConnectReturnCode::BadUserNamePassword).await;
}

#[tokio::test]
async fn vhost_qualified_username_is_accepted() {
    let broker = Broker::start();
    let mut options = mqtt_options(&broker, "vhost-qualified-client");
    // RabbitMQ's "vhost:user" form.
    options.set_credentials("/:guest", "guest");
    let mut client = connect_mqtt(options).await;
    client.subscribe("vhost/check", QoS::AtLeastOnce).await;
    client.publish("vhost/check", QoS::AtLeastOnce, false, b"in /").await;
    assert_eq!(client.next_publish().await.payload, &b"in /"[..]);
}

// -- sessions ------------------------------------------------------------------------------

#[tokio::test]
async fn second_connection_with_same_client_id_takes_over() {
    const CLIENT: &str = "takeover-client";
    let broker = Broker::start();
    let mut first = connect_mqtt(mqtt_options(&broker, CLIENT)).await;
    let mut second = connect_mqtt(mqtt_options(&broker, CLIENT)).await;
    assert!(!second.connack.session_present, "a clean session never reports a session present");

    // MQTT-3.1.4-2: the server disconnects the existing client.
    first.wait_closed("a second connection with the same client id").await;

    second.subscribe("takeover/check", QoS::AtLeastOnce).await;
    second.publish("takeover/check", QoS::AtLeastOnce, false, b"still connected").await;
    assert_eq!(second.next_publish().await.payload, &b"still connected"[..]);
}

#[tokio::test]
async fn persistent_session_taken_over_keeps_its_subscriptions() {
    const CLIENT: &str = "handover-client";
    const TOPIC: &str = "handover/topic";
    let broker = Broker::start();
    let mut first = connect_mqtt(persistent_mqtt_options(&broker, CLIENT)).await;
    first.subscribe(TOPIC, QoS::AtLeastOnce).await;
    let mut second = connect_mqtt(persistent_mqtt_options(&broker, CLIENT)).await;
    assert!(second.connack.session_present, "the session (and its subscription) existed");
    // Wait for the old connection to be gone, so it cannot be the one that gets the message.
    first.wait_closed("a second connection with the same client id").await;

    // The session state, subscriptions included, moves to the new connection (MQTT-3.1.2-4).
    let mut publisher = connect_mqtt(mqtt_options(&broker, "handover-publisher")).await;
    publisher.publish(TOPIC, QoS::AtLeastOnce, false, b"for the new connection").await;
    let received = second.next_publish().await;
    assert_eq!(received.topic, TOPIC);
    assert_eq!(received.payload, &b"for the new connection"[..]);
}

#[tokio::test]
async fn a_clean_session_taken_over_leaves_no_session_behind() {
    // A clean session ends with its connection (MQTT-3.1.2-6), so a persistent connection that
    // takes its client id over starts a new session: not present, no subscriptions.
    const CLIENT: &str = "clean-then-persistent";
    let broker = Broker::start();
    let mut first = connect_mqtt(mqtt_options(&broker, CLIENT)).await;
    first.subscribe("clean-over/#", QoS::AtLeastOnce).await;
    let mut second = connect_mqtt(persistent_mqtt_options(&broker, CLIENT)).await;
    assert!(!second.connack.session_present, "the clean session ended with its connection");
    first.wait_closed("a second connection with the same client id").await;
    let mut publisher = connect_mqtt(mqtt_options(&broker, "clean-over-publisher")).await;
    publisher.publish("clean-over/x", QoS::AtLeastOnce, false, b"not for it").await;
    second.assert_no_publish(Duration::from_millis(300)).await;
}

#[test]
fn subscriptions_per_session_are_bounded() {
    // 1,001 filters in one SUBSCRIBE: the first 1,000 are granted, the last is refused.
    const LIMIT: u16 = 1_000;
    let broker = Broker::start();
    let mut client = wire::open(broker.mqtt_addr, &wire::connect("MQTT", 4, 0, "many-filters", None));
    let mut body = vec![0x00, 0x01];
    for index in 0..=LIMIT {
        let filter = format!("cap/{index}");
        body.extend_from_slice(&(filter.len() as u16).to_be_bytes());
        body.extend_from_slice(filter.as_bytes());
        body.push(0);
    }
    client.write_all(&wire::packet(wire::SUBSCRIBE, &body)).expect("SUBSCRIBE");
    client.set_read_timeout(Some(Duration::from_secs(60))).expect("timeout");
    let suback = wire::expect_packet(&mut client, wire::SUBACK);
    let codes = &suback[2..];
    assert_eq!(codes.len(), usize::from(LIMIT) + 1);
    assert!(codes[..usize::from(LIMIT)].iter().all(|code| *code == 0), "the first 1,000 granted");
    assert_eq!(codes[usize::from(LIMIT)], 0x80, "the one past the limit refused");
    // A filter already held is not new: granted again.
    client.write_all(&wire::subscribe(2, "cap/7", 1)).expect("SUBSCRIBE");
    assert_eq!(wire::expect_packet(&mut client, wire::SUBACK), [0x00, 0x02, 0x01]);
}

#[tokio::test]
async fn persistent_session_keeps_messages_while_offline() {
    const CLIENT: &str = "persistent-client";
    const TOPIC: &str = "persistent/topic";
    let broker = Broker::start();
    let mut client = connect_mqtt(persistent_mqtt_options(&broker, CLIENT)).await;
    assert!(!client.connack.session_present, "a new client id has no session");
    client.subscribe(TOPIC, QoS::AtLeastOnce).await;
    client.disconnect().await;

    let mut publisher = connect_mqtt(mqtt_options(&broker, "persistent-publisher")).await;
    publisher.publish(TOPIC, QoS::AtLeastOnce, false, b"while away 1").await;
    publisher.publish(TOPIC, QoS::AtLeastOnce, false, b"while away 2").await;

    let mut client = connect_mqtt(persistent_mqtt_options(&broker, CLIENT)).await;
    assert!(client.connack.session_present, "CONNACK reports the stored session");
    for expected in [&b"while away 1"[..], &b"while away 2"[..]] {
        let received = client.next_publish().await;
        assert_eq!(received.topic, TOPIC);
        assert_eq!(received.payload, expected);
        assert_eq!(received.qos, QoS::AtLeastOnce);
    }
    // The subscription came back with the session: no SUBSCRIBE needed.
    publisher.publish(TOPIC, QoS::AtLeastOnce, false, b"back online").await;
    assert_eq!(client.next_publish().await.payload, &b"back online"[..]);
    client.disconnect().await;

    // A clean session discards the stored one (MQTT-3.1.2-6), and is itself discarded at the end.
    let clean = connect_mqtt(mqtt_options(&broker, CLIENT)).await;
    assert!(!clean.connack.session_present);
    clean.disconnect().await;
    publisher.publish(TOPIC, QoS::AtLeastOnce, false, b"for nobody").await;
    let mut client = connect_mqtt(persistent_mqtt_options(&broker, CLIENT)).await;
    assert!(!client.connack.session_present, "the clean session discarded the stored one");
    client.assert_no_publish(QUIET_PERIOD).await;
}

#[tokio::test]
async fn expired_persistent_session_is_gone_and_forgotten() {
    // With a 1 s session expiry, a persistent session left alone expires: its queue goes (so a
    // reconnect finds no session) and the broker drops what it kept of it.
    const CLIENT: &str = "expiring-client";
    let broker = Broker::start_with_config("[mqtt]\nsession_expiry_seconds = 1\n");
    let mut client = connect_mqtt(persistent_mqtt_options(&broker, CLIENT)).await;
    client.subscribe("expiring/topic", QoS::AtLeastOnce).await;
    client.disconnect().await;
    poll_until("the session to be forgotten", Duration::from_secs(10), || async {
        broker.log_tail().contains("mqtt session expired client_id=expiring-client")
    })
    .await;
    let client = connect_mqtt(persistent_mqtt_options(&broker, CLIENT)).await;
    assert!(!client.connack.session_present, "the expired session was still present");
    client.disconnect().await;
}

// -- raw clients: keep-alive, MQTT 3.1, protocol errors ------------------------------------

#[tokio::test]
async fn keep_alive_expiry_disconnects_silent_client() {
    // MQTT-3.1.2-24: after one and a half keep-alive periods without a packet the server closes
    // the connection. With 1 s and the broker checking twice a second, that is 1.5-2 s after
    // CONNECT; 3 s leaves scheduling slack.
    const KEEP_ALIVE_SECONDS: u16 = 1;
    const CLOSE_EARLIEST: Duration = Duration::from_secs(1);
    const CLOSE_DEADLINE: Duration = Duration::from_secs(3);
    const WILL_TOPIC: &str = "keepalive/will";
    const WILL_MESSAGE: &[u8] = b"timed out";
    let broker = Broker::start();
    let mut observer = connect_mqtt(mqtt_options(&broker, "keepalive-observer")).await;
    observer.subscribe(WILL_TOPIC, QoS::AtLeastOnce).await;

    let addr = broker.mqtt_addr;
    let closed_after = tokio::task::spawn_blocking(move || {
        let will = Some((WILL_TOPIC, WILL_MESSAGE));
        let mut stream = wire::open(addr, &wire::connect("MQTT", 4, KEEP_ALIVE_SECONDS, "keepalive-silent", will));
        // From here on the client sends nothing, not even PINGREQ.
        wire::wait_for_close(&mut stream, CLOSE_DEADLINE)
    })
    .await
    .expect("raw client task");
    assert!(closed_after >= CLOSE_EARLIEST, "closed {closed_after:?} after CONNACK, before the keep-alive ran out");

    // The connection ended without DISCONNECT, so the will goes out.
    let will = observer.next_publish().await;
    assert_eq!(will.topic, WILL_TOPIC);
    assert_eq!(will.payload, WILL_MESSAGE);
}

#[test]
fn mqtt31_client_connects() {
    let broker = Broker::start();
    // MQTT 3.1: protocol name "MQIsdp", level 3; `open` asserts CONNACK 0 (accepted).
    let connect = wire::connect("MQIsdp", 3, 60, "mqtt31-client", None);
    let mut stream = wire::open(broker.mqtt_addr, &connect);

    // The session then works as a 3.1.1 one: subscribe, get our own publish back, ping.
    stream.write_all(&wire::subscribe(1, "legacy/topic", 0)).expect("send SUBSCRIBE");
    assert_eq!(wire::expect_packet(&mut stream, wire::SUBACK), [0x00, 0x01, 0x00], "SUBACK: id 1, QoS 0");
    stream.write_all(&wire::publish(wire::PUBLISH_QOS0, "legacy/topic", None, b"from 3.1")).expect("send PUBLISH");
    let body = wire::expect_packet(&mut stream, wire::PUBLISH_QOS0);
    let (topic, packet_id, payload) = wire::parse_publish(wire::PUBLISH_QOS0, &body);
    assert_eq!((topic.as_str(), packet_id, payload.as_slice()), ("legacy/topic", None, &b"from 3.1"[..]));
    stream.write_all(&wire::packet(wire::PINGREQ, &[])).expect("send PINGREQ");
    assert!(wire::expect_packet(&mut stream, wire::PINGRESP).is_empty());
    // 3.1 predates the fixed-header flags rule, and Mosquitto does not check it for 3.1
    // clients: a SUBSCRIBE with flags 0000 is taken, where 3.1.1 closes the connection.
    let mut flagless = wire::subscribe(2, "legacy/other", 0);
    flagless[0] &= 0xF0;
    stream.write_all(&flagless).expect("send SUBSCRIBE");
    assert_eq!(wire::expect_packet(&mut stream, wire::SUBACK), [0x00, 0x02, 0x00], "SUBACK: id 2, QoS 0");
}

/// Connects a raw client (keep-alive 0: it never times out), sends `offending` and waits for
/// the broker to close that socket.
async fn assert_closes_connection(broker: &Broker, client_id: &str, offending: Vec<u8>) {
    let addr = broker.mqtt_addr;
    let connect = wire::connect("MQTT", 4, 0, client_id, None);
    let what = format!("raw client {client_id:?}");
    tokio::task::spawn_blocking(move || {
        let mut stream = wire::open(addr, &connect);
        stream.write_all(&offending).expect("send the offending packet");
        wire::wait_for_close(&mut stream, VIOLATION_CLOSE_TIMEOUT);
    })
    .await
    .unwrap_or_else(|error| panic!("{what}: {error}"));
}

/// A bystander connected before the offences still works after them, and new clients connect.
async fn assert_bystander_unaffected(broker: &Broker, bystander: &mut MqttClient, topic: &str) {
    bystander.publish(topic, QoS::AtLeastOnce, false, b"still here").await;
    assert_eq!(bystander.next_publish().await.payload, &b"still here"[..]);
    let newcomer = connect_mqtt(mqtt_options(broker, "offences-newcomer")).await;
    newcomer.disconnect().await;
}

#[tokio::test]
async fn malformed_packet_closes_only_that_connection() {
    const TOPIC: &str = "malformed/bystander";
    let broker = Broker::start();
    let mut bystander = connect_mqtt(mqtt_options(&broker, "malformed-bystander")).await;
    bystander.subscribe(TOPIC, QoS::AtLeastOnce).await;

    let cases: [(&str, Vec<u8>); 7] = [
        // Reserved fixed-header flags that are wrong (MQTT-2.2.2-2): SUBSCRIBE and PUBREL need
        // 0010, PINGREQ 0000.
        ("subscribe-flags", vec![0x80, 0x06, 0x00, 0x01, 0x00, 0x01, b'a', 0x01]),
        ("pubrel-flags", vec![0x60, 0x02, 0x00, 0x01]),
        ("pingreq-flags", vec![0xC1, 0x00]),
        // Remaining length 4, but the topic claims 16 bytes.
        ("topic-past-the-end", vec![wire::PUBLISH_QOS0, 0x04, 0x00, 0x10, b'a', b'b']),
        // Packet type 15 is reserved (MQTT 2.2.1).
        ("reserved-type", vec![0xF0, 0x00]),
        // A remaining length may use at most four bytes (MQTT 2.2.3).
        ("five-byte-length", vec![wire::PUBLISH_QOS0, 0xFF, 0xFF, 0xFF, 0xFF, 0x01]),
        // QoS 3 does not exist (MQTT-3.3.1-4).
        ("qos-3", wire::publish(wire::PUBLISH_QOS0 | 0x06, "a/b", Some(1), b"x")),
    ];
    for (client_id, offending) in cases {
        assert_closes_connection(&broker, client_id, offending).await;
    }
    assert_bystander_unaffected(&broker, &mut bystander, TOPIC).await;
}

#[tokio::test]
async fn protocol_violations_close_only_that_connection() {
    const TOPIC: &str = "violations/bystander";
    let broker = Broker::start();
    let mut bystander = connect_mqtt(mqtt_options(&broker, "violations-bystander")).await;
    bystander.subscribe(TOPIC, QoS::AtLeastOnce).await;

    let cases: [(&str, Vec<u8>); 5] = [
        // MQTT-3.1.0-2: a second CONNECT is a protocol violation.
        ("second-connect", wire::connect("MQTT", 4, 0, "second-connect", None)),
        // MQTT-3.3.2-2: a topic name has no wildcards.
        ("publish-plus", wire::publish(wire::PUBLISH_QOS0, "a/+/c", None, b"x")),
        ("publish-hash", wire::publish(wire::PUBLISH_QOS0, "a/#", None, b"x")),
        // MQTT-4.7.3-1: a topic name is at least one character long.
        ("publish-empty-topic", wire::publish(wire::PUBLISH_QOS0, "", None, b"x")),
        // Only servers send CONNACK.
        ("client-connack", wire::packet(wire::CONNACK, &[0x00, 0x00])),
    ];
    for (client_id, offending) in cases {
        assert_closes_connection(&broker, client_id, offending).await;
    }
    assert_bystander_unaffected(&broker, &mut bystander, TOPIC).await;
}

/// Hand-encoded MQTT 3.1.1 packets (spec section 3), for clients that must misbehave, go
/// silent or speak MQTT 3.1, none of which rumqttc does.
mod wire {
    use std::io::{self, Read, Write};
    use std::net::{SocketAddr, TcpStream};
    use std::time::{Duration, Instant};

    /// First bytes of the fixed header: packet type in the high nibble, flags in the low one.
    pub const CONNECT: u8 = 0x10;
    pub const CONNACK: u8 = 0x20;
    pub const PUBLISH_QOS0: u8 = 0x30;
    pub const PUBLISH_QOS1: u8 = 0x32;
    pub const PUBLISH_QOS2: u8 = 0x34;
    /// The DUP flag of a PUBLISH.
    pub const DUP: u8 = 0x08;
    pub const PUBACK: u8 = 0x40;
    pub const PUBREC: u8 = 0x50;
    /// PUBREL and SUBSCRIBE have the reserved flags 0b0010 (MQTT-3.6.1-1, MQTT-3.8.1-1).
    pub const PUBREL: u8 = 0x62;
    pub const PUBCOMP: u8 = 0x70;
    pub const SUBSCRIBE: u8 = 0x82;
    pub const SUBACK: u8 = 0x90;
    pub const PINGREQ: u8 = 0xC0;
    pub const PINGRESP: u8 = 0xD0;
    /// CONNECT flags (MQTT 3.1.2.3).
    const FLAG_USERNAME: u8 = 0x80;
    const FLAG_PASSWORD: u8 = 0x40;
    const FLAG_WILL_QOS1: u8 = 0x08;
    const FLAG_WILL: u8 = 0x04;
    const FLAG_CLEAN_SESSION: u8 = 0x02;
    /// CONNACK with session-present 0 and return code 0 (accepted).
    pub const CONNACK_ACCEPTED: [u8; 4] = [CONNACK, 0x02, 0x00, 0x00];
    /// How long a read may block while the test expects a packet.
    const READ_TIMEOUT: Duration = Duration::from_secs(10);

    /// A packet: the first byte, the remaining length (MQTT 2.2.3) and the body.
    pub fn packet(first_byte: u8, body: &[u8]) -> Vec<u8> {
        let mut out = vec![first_byte];
        let mut length = body.len();
        loop {
            let mut byte = (length % 128) as u8;
            length /= 128;
            if length > 0 {
                byte |= 0x80;
            }
            out.push(byte);
            if length == 0 {
                break;
            }
        }
        out.extend_from_slice(body);
        out
    }

    /// A length-prefixed string or binary field (MQTT 1.5.3).
    fn put_string(out: &mut Vec<u8>, value: &[u8]) {
        let length = u16::try_from(value.len()).expect("test strings are short");
        out.extend_from_slice(&length.to_be_bytes());
        out.extend_from_slice(value);
    }

    /// CONNECT as guest/guest with a clean session and, if given, a QoS 1 will
    /// `(topic, message)`. `protocol_name` and `level` are "MQTT" 4 for 3.1.1, "MQIsdp" 3 for 3.1.
    pub fn connect(
        protocol_name: &str,
        level: u8,
        keep_alive_seconds: u16,
        client_id: &str,
        will: Option<(&str, &[u8])>,
    ) -> Vec<u8> {
        let mut body = Vec::new();
        put_string(&mut body, protocol_name.as_bytes());
        body.push(level);
        let mut flags = FLAG_USERNAME | FLAG_PASSWORD | FLAG_CLEAN_SESSION;
        if will.is_some() {
            flags |= FLAG_WILL | FLAG_WILL_QOS1;
        }
        body.push(flags);
        body.extend_from_slice(&keep_alive_seconds.to_be_bytes());
        // Payload order (MQTT 3.1.3): client id, will topic, will message, user name, password.
        put_string(&mut body, client_id.as_bytes());
        if let Some((topic, message)) = will {
            put_string(&mut body, topic.as_bytes());
            put_string(&mut body, message);
        }
        put_string(&mut body, b"guest");
        put_string(&mut body, b"guest");
        packet(CONNECT, &body)
    }

    /// PUBLISH; `packet_id` must be given exactly when the QoS in `first_byte` is above 0.
    pub fn publish(first_byte: u8, topic: &str, packet_id: Option<u16>, payload: &[u8]) -> Vec<u8> {
        let mut body = Vec::new();
        put_string(&mut body, topic.as_bytes());
        if let Some(packet_id) = packet_id {
            body.extend_from_slice(&packet_id.to_be_bytes());
        }
        body.extend_from_slice(payload);
        packet(first_byte, &body)
    }

    /// SUBSCRIBE to one filter.
    pub fn subscribe(packet_id: u16, filter: &str, qos: u8) -> Vec<u8> {
        let mut body = packet_id.to_be_bytes().to_vec();
        put_string(&mut body, filter.as_bytes());
        body.push(qos);
        packet(SUBSCRIBE, &body)
    }

    /// PUBACK, PUBREC, PUBREL or PUBCOMP: a packet id and nothing else.
    pub fn ack(first_byte: u8, packet_id: u16) -> Vec<u8> {
        packet(first_byte, &packet_id.to_be_bytes())
    }

    /// A PUBLISH body's topic, packet id (QoS 1 and 2 only) and payload.
    pub fn parse_publish(first_byte: u8, body: &[u8]) -> (String, Option<u16>, Vec<u8>) {
        let qos = (first_byte >> 1) & 0x03;
        let topic_length = usize::from(u16::from_be_bytes([body[0], body[1]]));
        let topic = String::from_utf8(body[2..2 + topic_length].to_vec()).expect("a UTF-8 topic");
        let rest = &body[2 + topic_length..];
        if qos == 0 {
            (topic, None, rest.to_vec())
        } else {
            (topic, Some(u16::from_be_bytes([rest[0], rest[1]])), rest[2..].to_vec())
        }
    }

    /// Reads one packet as its first byte and body; `Ok(None)` when the peer closed the socket
    /// between packets.
    pub fn read_packet(stream: &mut impl Read) -> io::Result<Option<(u8, Vec<u8>)>> {
        let mut first = [0u8; 1];
        if stream.read(&mut first)? == 0 {
            return Ok(None);
        }
        let mut length = 0usize;
        for index in 0..4 {
            let mut byte = [0u8; 1];
            stream.read_exact(&mut byte)?;
            length |= usize::from(byte[0] & 0x7F) << (7 * index);
            if byte[0] & 0x80 == 0 {
                let mut body = vec![0u8; length];
                stream.read_exact(&mut body)?;
                return Ok(Some((first[0], body)));
            }
        }
        Err(io::Error::new(io::ErrorKind::InvalidData, "remaining length longer than four bytes"))
    }

    /// Reads the next packet, asserts its first byte and returns its body.
    pub fn expect_packet(stream: &mut TcpStream, first_byte: u8) -> Vec<u8> {
        let (first, body) = read_packet(stream)
            .unwrap_or_else(|error| panic!("reading packet {first_byte:#04x}: {error}"))
            .unwrap_or_else(|| panic!("socket closed while waiting for packet {first_byte:#04x}"));
        assert_eq!(first, first_byte, "unexpected packet {first:#04x} with body {body:?}");
        body
    }

    /// An MQTT 3.1.1 CONNECT as guest without the clean-session bit (the flags byte comes after
    /// the length, the protocol name and the level), keep-alive 0, no will.
    pub fn persistent_connect(client_id: &str) -> Vec<u8> {
        let mut packet = connect("MQTT", 4, 0, client_id, None);
        packet[9] &= !0x02;
        packet
    }

    /// Connects with a persistent session's CONNECT and asserts CONNACK's session-present flag.
    pub fn open_session(addr: SocketAddr, connect: &[u8], present: bool) -> TcpStream {
        let mut stream = TcpStream::connect(addr).expect("connect to warren's MQTT port");
        stream.set_read_timeout(Some(READ_TIMEOUT)).expect("set read timeout");
        stream.write_all(connect).expect("send CONNECT");
        let mut connack = [0u8; 4];
        stream.read_exact(&mut connack).expect("read CONNACK");
        assert_eq!(connack, [CONNACK, 0x02, u8::from(present), 0x00], "CONNACK");
        stream
    }

    /// Connects, sends `connect` and asserts that CONNACK accepts it.
    pub fn open(addr: SocketAddr, connect: &[u8]) -> TcpStream {
        let mut stream = TcpStream::connect(addr).expect("connect to warren's MQTT port");
        stream.set_read_timeout(Some(READ_TIMEOUT)).expect("set read timeout");
        stream.write_all(connect).expect("send CONNECT");
        let mut connack = [0u8; 4];
        stream.read_exact(&mut connack).expect("read CONNACK");
        assert_eq!(connack, CONNACK_ACCEPTED, "CONNACK");
        stream
    }

    /// Reads until the broker closes the socket, discarding whatever it sends first, and
    /// returns how long that took; panics if the socket is still open after `timeout`.
    pub fn wait_for_close(stream: &mut TcpStream, timeout: Duration) -> Duration {
        let start = Instant::now();
        let mut buffer = [0u8; 256];
        loop {
            let remaining = timeout
                .checked_sub(start.elapsed())
                .filter(|remaining| !remaining.is_zero())
                .unwrap_or_else(|| panic!("socket still open {timeout:?} later"));
            stream.set_read_timeout(Some(remaining)).expect("set read timeout");
            match stream.read(&mut buffer) {
                Ok(0) => return start.elapsed(),
                Ok(_) => {}
                // Closing a socket with unread input sends RST rather than FIN.
                Err(error)
                    if matches!(error.kind(), io::ErrorKind::ConnectionReset | io::ErrorKind::ConnectionAborted) =>
                {
                    return start.elapsed()
                }
                Err(error) if matches!(error.kind(), io::ErrorKind::WouldBlock | io::ErrorKind::TimedOut) => {
                    panic!("socket still open {timeout:?} later")
                }
                Err(error) => panic!("unexpected read error: {error}"),
            }
        }
    }
}

/// PUBACK (QoS 1) and PUBCOMP (QoS 2) for a message routed to a durable queue mean it is on
/// disk: it survives `kill -9` straight after the acknowledgement.
#[tokio::test]
async fn puback_and_pubcomp_mean_the_message_survives_kill_9() {
    let broker = Broker::start();
    let connection = common::connect(&broker).await;
    let channel = common::open_channel(&connection).await;
    let durable = lapin::options::QueueDeclareOptions { durable: true, ..Default::default() };
    channel.queue_declare("sensor-log", durable, lapin::types::FieldTable::default()).await.expect("declare");
    common::bind(&channel, "sensor-log", TOPIC_EXCHANGE, "sensors.#").await;
    let mut publisher = connect_mqtt(mqtt_options(&broker, "durable-publisher")).await;
    for index in 0..20 {
        let qos = if index % 2 == 0 { QoS::AtLeastOnce } else { QoS::ExactlyOnce };
        publisher.publish("sensors/kitchen/temp", qos, false, format!("reading-{index:02}").as_bytes()).await;
    }
    // No pause: the last PUBCOMP has just arrived.
    let broker = broker.crash_and_restart();
    let connection = common::connect(&broker).await;
    let channel = common::open_channel(&connection).await;
    let bodies = common::drain_bodies(&channel, "sensor-log").await;
    let expected: Vec<String> = (0..20).map(|index| format!("reading-{index:02}")).collect();
    assert_eq!(bodies, expected);
}

/// A persistent session (clean_session = false) survives a broker crash: its queue and
/// subscriptions are durable, messages queued while it was away come back, and its
/// subscriptions keep routing new messages.
#[tokio::test]
async fn a_persistent_session_survives_a_broker_crash() {
    let broker = Broker::start();
    let mut device = connect_mqtt(persistent_mqtt_options(&broker, "durable-device")).await;
    device.subscribe("fleet/+/alerts", QoS::AtLeastOnce).await;
    device.subscribe("fleet/+/urgent", QoS::ExactlyOnce).await;
    device.disconnect().await;
    let mut publisher = connect_mqtt(mqtt_options(&broker, "fleet-publisher")).await;
    for index in 0..5 {
        publisher.publish(&format!("fleet/truck{index}/alerts"), QoS::AtLeastOnce, false, b"while away").await;
    }
    let broker = broker.crash_and_restart();
    let mut device = connect_mqtt(persistent_mqtt_options(&broker, "durable-device")).await;
    assert!(device.connack.session_present, "the session outlived the broker");
    let mut topics = Vec::new();
    for _ in 0..5 {
        let received = device.next_publish().await;
        assert_eq!(received.payload, &b"while away"[..]);
        topics.push(received.topic);
    }
    topics.sort();
    assert_eq!(topics, (0..5).map(|index| format!("fleet/truck{index}/alerts")).collect::<Vec<_>>());
    // The subscription routes again after the restart.
    let mut publisher = connect_mqtt(mqtt_options(&broker, "fleet-publisher")).await;
    publisher.publish("fleet/truck9/alerts", QoS::AtLeastOnce, false, b"after").await;
    let received = device.next_publish().await;
    assert_eq!((received.topic.as_str(), &received.payload[..]), ("fleet/truck9/alerts", &b"after"[..]));
    // Each subscription keeps its granted QoS across the restart (stored with its binding).
    publisher.publish("fleet/truck9/urgent", QoS::ExactlyOnce, false, b"urgent").await;
    let received = device.next_publish().await;
    assert_eq!((received.topic.as_str(), received.qos), ("fleet/truck9/urgent", QoS::ExactlyOnce));
}

/// Retained messages are stored: after a crash a new subscriber gets the last retained message
/// of each topic (replaced ones and cleared ones do not come back).
#[tokio::test]
async fn retained_messages_survive_a_broker_crash() {
    let broker = Broker::start();
    let mut publisher = connect_mqtt(mqtt_options(&broker, "status-publisher")).await;
    publisher.publish("status/door", QoS::AtLeastOnce, true, b"open").await;
    publisher.publish("status/door", QoS::AtLeastOnce, true, b"closed").await;
    publisher.publish("status/window", QoS::AtLeastOnce, true, b"open").await;
    publisher.publish("status/window", QoS::AtLeastOnce, true, b"").await;
    publisher.publish("status/light", QoS::AtMostOnce, true, b"on").await;
    // QoS 0 has no acknowledgement: a QoS 1 publish after it shows it was handled.
    publisher.publish("status/marker", QoS::AtLeastOnce, true, b"m").await;
    let broker = broker.crash_and_restart();
    let mut subscriber = connect_mqtt(mqtt_options(&broker, "status-reader")).await;
    subscriber.subscribe("status/#", QoS::AtLeastOnce).await;
    let mut retained = Vec::new();
    for _ in 0..3 {
        let received = subscriber.next_publish().await;
        assert!(received.retain, "{received:?}");
        retained.push((received.topic.clone(), received.payload.to_vec(), received.qos));
    }
    retained.sort_by(|a, b| a.0.cmp(&b.0));
    assert_eq!(
        retained,
        vec![
            ("status/door".to_owned(), b"closed".to_vec(), QoS::AtLeastOnce),
            ("status/light".to_owned(), b"on".to_vec(), QoS::AtMostOnce),
            ("status/marker".to_owned(), b"m".to_vec(), QoS::AtLeastOnce),
        ]
    );
    subscriber.assert_no_publish(QUIET_PERIOD).await;
}
