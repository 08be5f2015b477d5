"""MQTT 3.1.1 and 3.1 as paho-mqtt 2.x sees them, and MQTT <-> AMQP through amq.topic.

Expectations come from the MQTT 3.1.1 specification (section numbers below). Where it leaves
things open, they come from RabbitMQ's MQTT plugin, which Warren follows: topic `a/b` is routing
key `a.b` on amq.topic; QoS 1 publishes are persistent AMQP messages; persistent AMQP messages
go to MQTT at QoS 1, transient ones at QoS 0; a username may be `vhost:user`.
"""

from __future__ import annotations

import paho.mqtt.client as mqtt
import pika
import pytest

import mqtt_wire
from inbox import Inbox
from mqtt_client import SENTINEL, Received, unique_client_id, unique_topic

pytestmark = pytest.mark.mqtt

# Not text: the broker must hand over the payload byte for byte.
BINARY_PAYLOAD = bytes(range(256)) * 4


# -- publish and subscribe -----------------------------------------------------------------


@pytest.mark.parametrize("qos", [0, 1])
def test_publish_subscribe(mqtt_connect, qos):
    topic = unique_topic("pubsub")
    subscriber = mqtt_connect()
    assert subscriber.subscribe(topic, qos) == [qos]
    publisher = mqtt_connect()
    publisher.publish(topic, BINARY_PAYLOAD, qos=qos)
    assert subscriber.wait_for_messages(1) == [Received(topic, BINARY_PAYLOAD, qos)]


def test_empty_payload_is_delivered(mqtt_connect):
    topic = unique_topic("empty")
    subscriber = mqtt_connect()
    subscriber.subscribe(topic, 1)
    mqtt_connect().publish(topic, b"", qos=1)
    assert subscriber.wait_for_messages(1) == [Received(topic, b"", 1)]


@pytest.mark.parametrize(("published", "subscribed"), [(1, 0), (0, 1)])
def test_delivery_qos_is_the_lower_of_publish_and_subscription(mqtt_connect, published, subscribed):
    """Section 3.8.4: messages go out at the lower of the published and granted QoS."""
    topic = unique_topic("downgrade")
    subscriber = mqtt_connect()
    subscriber.subscribe(topic, subscribed)
    mqtt_connect().publish(topic, b"payload", qos=published)
    assert subscriber.wait_for_messages(1) == [Received(topic, b"payload", min(published, subscribed))]


def test_qos2_publish_is_delivered_once(mqtt_connect):
    """Inbound QoS 2 completes (PUBREC, PUBREL, PUBCOMP), and the message is delivered at the
    granted QoS, which a server may lower (section 3.9.3)."""
    topic = unique_topic("qos2")
    subscriber = mqtt_connect()
    [granted] = subscriber.subscribe(topic, 2)
    assert granted in (1, 2), f"SUBACK return code {granted:#x}"
    publisher = mqtt_connect()
    publisher.publish(topic, b"exactly once", qos=2)
    publisher.publish(topic, SENTINEL, qos=1)
    assert subscriber.wait_for_sentinel() == [Received(topic, b"exactly once", granted)]


def test_single_level_wildcard(mqtt_connect):
    root = unique_topic("plus")
    subscriber = mqtt_connect()
    subscriber.subscribe(f"{root}/+/temp", 1)
    publisher = mqtt_connect()
    for level in ("kitchen/temp", "kitchen/humidity", "kitchen/oven/temp", "temp", "hall/temp"):
        publisher.publish(f"{root}/{level}", level.encode(), qos=1)
    publisher.publish(f"{root}/end/temp", SENTINEL, qos=1)
    assert [message.topic for message in subscriber.wait_for_sentinel()] == [
        f"{root}/kitchen/temp", f"{root}/hall/temp",
    ]


def test_single_level_wildcard_matches_empty_level(mqtt_connect):
    """Section 4.7.1.3: "sport/+" matches "sport/", as a level may be empty."""
    root = unique_topic("plus-empty")
    subscriber = mqtt_connect()
    subscriber.subscribe(f"{root}/+/temp", 1)
    publisher = mqtt_connect()
    publisher.publish(f"{root}//temp", b"empty level", qos=1)
    publisher.publish(f"{root}/end/temp", SENTINEL, qos=1)
    assert [message.topic for message in subscriber.wait_for_sentinel()] == [f"{root}//temp"]


def test_multi_level_wildcard(mqtt_connect):
    root = unique_topic("hash")
    other = unique_topic("hash-other")
    subscriber = mqtt_connect()
    subscriber.subscribe(f"{root}/#", 1)
    publisher = mqtt_connect()
    for topic in (f"{root}/a", f"{other}/a", f"{root}/a/b/c", f"{root}x/a"):
        publisher.publish(topic, b"x", qos=1)
    publisher.publish(f"{root}/end", SENTINEL, qos=1)
    assert [message.topic for message in subscriber.wait_for_sentinel()] == [
        f"{root}/a", f"{root}/a/b/c",
    ]


def test_multi_level_wildcard_matches_parent_level(mqtt_connect):
    """Section 4.7.1.2: "sport/#" also matches "sport" itself."""
    root = unique_topic("hash-parent")
    subscriber = mqtt_connect()
    subscriber.subscribe(f"{root}/#", 1)
    publisher = mqtt_connect()
    publisher.publish(root, b"parent", qos=1)
    publisher.publish(f"{root}/end", SENTINEL, qos=1)
    assert [message.topic for message in subscriber.wait_for_sentinel()] == [root]


# -- MQTT <-> AMQP -------------------------------------------------------------------------


@pytest.mark.parametrize(("qos", "delivery_mode"), [(0, 1), (1, 2)])
def test_mqtt_to_amqp_cross_protocol(mqtt_connect, channel, qos, delivery_mode):
    """The publish rides amq.topic with `/` turned into `.`. Like RabbitMQ, QoS 1 is a
    persistent message, QoS 0 a transient one, and the QoS is in `x-mqtt-publish-qos`."""
    queue = channel.queue_declare("", exclusive=True).method.queue
    channel.queue_bind(queue, "amq.topic", routing_key="sensors.*.temp")
    inbox = Inbox(channel, queue)
    mqtt_connect().publish("sensors/kitchen/temp", b"21.5", qos=qos)
    [delivery] = inbox.wait_for(1)
    assert delivery.method.exchange == "amq.topic"
    assert delivery.method.routing_key == "sensors.kitchen.temp"
    assert delivery.body == b"21.5"
    assert delivery.properties.delivery_mode == delivery_mode
    assert (delivery.properties.headers or {}).get("x-mqtt-publish-qos") == qos


def test_amqp_to_mqtt_persistent_is_qos1(mqtt_connect, channel):
    subscriber = mqtt_connect()
    subscriber.subscribe("home/+/light", 1)
    channel.basic_publish(
        "amq.topic", "home.hall.light", b"on", pika.BasicProperties(delivery_mode=2)
    )
    assert subscriber.wait_for_messages(1) == [Received("home/hall/light", b"on", 1)]


def test_amqp_to_mqtt_transient_is_qos0(mqtt_connect, channel):
    subscriber = mqtt_connect()
    subscriber.subscribe("home/+/fan", 1)
    channel.basic_publish("amq.topic", "home.hall.fan", b"off")
    assert subscriber.wait_for_messages(1) == [Received("home/hall/fan", b"off", 0)]


# -- retained messages ---------------------------------------------------------------------


def test_retained_message_on_subscribe_then_cleared(mqtt_connect):
    """Section 3.3.1.3: a retained message goes to new subscriptions with RETAIN set, to
    established ones with RETAIN clear; an empty retained publish is delivered as usual and
    removes the retained message."""
    topic = unique_topic("retained")
    established = mqtt_connect()
    established.subscribe(topic, 1)
    publisher = mqtt_connect()
    publisher.publish(topic, b"kept", qos=1, retain=True)
    assert established.wait_for_messages(1) == [Received(topic, b"kept", 1, retain=False)]

    newcomer = mqtt_connect()
    newcomer.subscribe(topic, 1)
    assert newcomer.wait_for_messages(1) == [Received(topic, b"kept", 1, retain=True)]

    publisher.publish(topic, b"", qos=1, retain=True)
    assert established.wait_for_messages(2)[1] == Received(topic, b"", 1, retain=False)
    latecomer = mqtt_connect()
    latecomer.subscribe(topic, 1)
    # Retained messages follow the SUBACK, so they come before anything published after it.
    publisher.publish(topic, SENTINEL, qos=1)
    assert latecomer.wait_for_sentinel() == []


def test_retained_message_matches_wildcard_subscription(mqtt_connect):
    root = unique_topic("retained-wild")
    mqtt_connect().publish(f"{root}/a/state", b"a", qos=1, retain=True)
    subscriber = mqtt_connect()
    subscriber.subscribe(f"{root}/+/state", 1)
    assert subscriber.wait_for_messages(1) == [Received(f"{root}/a/state", b"a", 1, retain=True)]


# -- last will -----------------------------------------------------------------------------


def test_last_will_on_abnormal_disconnect(broker, mqtt_connect):
    """Section 3.1.2.5: the will is published when the network connection closes without a
    DISCONNECT."""
    topic = unique_topic("will")
    watcher = mqtt_connect()
    watcher.subscribe(topic, 1)
    will = mqtt_wire.Will(topic, b"gone", qos=1)
    sock = mqtt_wire.open_session(
        broker.mqtt_host, broker.mqtt_port, unique_client_id("will"), will=will
    )
    sock.close()
    assert watcher.wait_for_messages(1) == [Received(topic, b"gone", 1)]


def test_last_will_on_keep_alive_expiry(broker, mqtt_connect):
    """Section 3.1.2.10: a client silent for one and a half keep-alive periods is disconnected,
    which publishes its will."""
    topic = unique_topic("will-keepalive")
    watcher = mqtt_connect()
    watcher.subscribe(topic, 1)
    will = mqtt_wire.Will(topic, b"timed out", qos=1)
    sock = mqtt_wire.open_session(
        broker.mqtt_host, broker.mqtt_port, unique_client_id("will"), will=will, keep_alive_s=1
    )
    mqtt_wire.wait_until_closed(sock, timeout_s=5)
    sock.close()
    assert watcher.wait_for_messages(1) == [Received(topic, b"timed out", 1)]


def test_no_last_will_on_clean_disconnect(broker, mqtt_connect):
    """Section 3.14.4: DISCONNECT discards the will."""
    topic = unique_topic("will-clean")
    watcher = mqtt_connect()
    watcher.subscribe(topic, 1)
    will = mqtt_wire.Will(topic, b"must not arrive", qos=1)
    sock = mqtt_wire.open_session(
        broker.mqtt_host, broker.mqtt_port, unique_client_id("will"), will=will
    )
    # Returns once the broker has closed the connection, so its session has ended.
    mqtt_wire.disconnect(sock)
    mqtt_connect().publish(topic, SENTINEL, qos=1)
    assert watcher.wait_for_sentinel() == []


def test_retained_last_will(broker, mqtt_connect):
    """A will with Will Retain set is published as a retained message (section 3.1.2.7)."""
    topic = unique_topic("will-retained")
    watcher = mqtt_connect()
    watcher.subscribe(topic, 1)
    will = mqtt_wire.Will(topic, b"offline", qos=1, retain=True)
    sock = mqtt_wire.open_session(
        broker.mqtt_host, broker.mqtt_port, unique_client_id("will"), will=will
    )
    sock.close()
    # Once the will has been routed, it has been stored too.
    assert watcher.wait_for_messages(1) == [Received(topic, b"offline", 1, retain=False)]
    newcomer = mqtt_connect()
    newcomer.subscribe(topic, 1)
    assert newcomer.wait_for_messages(1) == [Received(topic, b"offline", 1, retain=True)]


# -- authentication ------------------------------------------------------------------------


def test_anonymous_connect_refused(mqtt_client):
    """Anonymous access is off by default; section 3.2.2.3 return code 5. The server then
    closes the connection (section 3.2.2.3)."""
    client = mqtt_client(username=None, password=None)
    connack = client.try_connect()
    assert str(connack.reason_code) == "Not authorized"
    assert not connack.session_present
    client.wait_for_disconnect()


@pytest.mark.parametrize(("username", "password"), [("guest", "wrong"), ("nobody", "guest")])
def test_bad_credentials_refused(mqtt_client, username, password):
    client = mqtt_client(username=username, password=password)
    connack = client.try_connect()
    assert str(connack.reason_code) == "Bad user name or password"
    client.wait_for_disconnect()


def test_username_names_vhost(mqtt_connect):
    """`vhost:user`, as RabbitMQ's plugin reads it: "/:guest" is guest on the default vhost,
    so it reaches subscribers who logged in as plain "guest"."""
    topic = unique_topic("vhost")
    subscriber = mqtt_connect()
    subscriber.subscribe(topic, 1)
    publisher = mqtt_connect(username="/:guest", password="guest")
    publisher.publish(topic, b"via vhost:user", qos=1)
    assert subscriber.wait_for_messages(1) == [Received(topic, b"via vhost:user", 1)]


# -- CONNECT checks ------------------------------------------------------------------------


def test_unsupported_protocol_level_refused(broker):
    """Section 3.1.2.2: return code 1, then the connection is closed."""
    connect = mqtt_wire.connect_packet(unique_client_id("level"), protocol_level=6)
    sock, _present, code = mqtt_wire.open_connection(broker.mqtt_host, broker.mqtt_port, connect)
    assert code == mqtt_wire.UNACCEPTABLE_PROTOCOL_VERSION
    mqtt_wire.wait_until_closed(sock)
    sock.close()


def test_empty_client_id_with_persistent_session_refused(broker):
    """Section 3.1.3.1: return code 2, then the connection is closed."""
    connect = mqtt_wire.connect_packet("", clean_session=False)
    sock, _present, code = mqtt_wire.open_connection(broker.mqtt_host, broker.mqtt_port, connect)
    assert code == mqtt_wire.IDENTIFIER_REJECTED
    mqtt_wire.wait_until_closed(sock)
    sock.close()


# -- sessions ------------------------------------------------------------------------------


def test_persistent_session_queues_while_offline(mqtt_client, mqtt_connect):
    """Section 3.1.2.4: with CleanSession 0 the subscription outlives the connection, QoS 1
    messages published meanwhile are kept, and the next CONNACK says a session is present.
    A clean session afterwards discards it."""
    client_id = unique_client_id("persist")
    topic = unique_topic("persist")
    first = mqtt_client(client_id, clean_session=False)
    assert not first.connect().session_present
    first.subscribe(topic, 1)
    first.disconnect()

    mqtt_connect().publish(topic, b"while offline", qos=1)

    second = mqtt_client(client_id, clean_session=False)
    assert second.connect().session_present
    assert second.wait_for_messages(1) == [Received(topic, b"while offline", 1)]
    second.disconnect()

    clean = mqtt_client(client_id, clean_session=True)
    assert not clean.connect().session_present
    clean.disconnect()
    again = mqtt_client(client_id, clean_session=False)
    assert not again.connect().session_present


def test_takeover_disconnects_the_first_client(mqtt_client, mqtt_connect):
    """Section 3.1.4: a second CONNECT with a connected client's id disconnects the first."""
    client_id = unique_client_id("takeover")
    first = mqtt_connect(client_id)
    second = mqtt_connect(client_id)
    first.wait_for_disconnect()
    topic = unique_topic("takeover")
    second.subscribe(topic, 1)
    mqtt_connect().publish(topic, b"to the second", qos=1)
    assert second.wait_for_messages(1) == [Received(topic, b"to the second", 1)]
    assert second.is_connected()
    assert first.messages == []


def test_takeover_of_persistent_session_keeps_subscriptions(mqtt_client, mqtt_connect):
    """Section 3.1.2.4: the session state, subscriptions included, survives a takeover by a
    CleanSession 0 connection, so what the first subscribed to reaches the second."""
    client_id = unique_client_id("takeover-p")
    topic = unique_topic("takeover-persistent")
    first = mqtt_client(client_id, clean_session=False)
    first.connect()
    first.subscribe(topic, 1)
    second = mqtt_client(client_id, clean_session=False)
    assert second.connect().session_present
    first.wait_for_disconnect()
    mqtt_connect().publish(topic, b"after takeover", qos=1)
    assert second.wait_for_messages(1) == [Received(topic, b"after takeover", 1)]
    second.disconnect()
    mqtt_connect(client_id).disconnect()  # a clean session removes the persistent one


# -- MQTT 3.1 ------------------------------------------------------------------------------


def test_mqtt31_publish_subscribe(mqtt_connect):
    """Protocol level 3 ("MQIsdp"), as paho's MQTTv31 sends it."""
    topic = unique_topic("v31")
    subscriber = mqtt_connect(protocol=mqtt.MQTTv31)
    assert subscriber.subscribe(topic, 1) == [1]
    publisher = mqtt_connect(protocol=mqtt.MQTTv31)
    publisher.publish(topic, BINARY_PAYLOAD, qos=1)
    publisher.publish(topic, b"qos 0", qos=0)
    assert subscriber.wait_for_messages(2) == [
        Received(topic, BINARY_PAYLOAD, 1), Received(topic, b"qos 0", 0),
    ]


def test_mqtt31_and_mqtt311_interoperate(mqtt_connect):
    topic = unique_topic("v31-v311")
    subscriber = mqtt_connect(protocol=mqtt.MQTTv311)
    subscriber.subscribe(topic, 1)
    mqtt_connect(protocol=mqtt.MQTTv31).publish(topic, b"from 3.1", qos=1)
    assert subscriber.wait_for_messages(1) == [Received(topic, b"from 3.1", 1)]
