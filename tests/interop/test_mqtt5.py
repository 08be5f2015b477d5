"""MQTT 5 with paho-mqtt 2.x (protocol MQTTv5), unmodified: CONNACK properties, SUBACK and
PUBACK reason codes, PUBLISH properties both ways with pika, and MQTT 5 over WebSocket."""

from __future__ import annotations

import threading
import time

import paho.mqtt.client as mqtt
import pika
import pytest
from paho.mqtt.packettypes import PacketTypes
from paho.mqtt.properties import Properties

from mqtt_client import unique_client_id, unique_topic

pytestmark = [pytest.mark.mqtt, pytest.mark.warren_only("MQTT 5 beyond RabbitMQ 3.10's MQTT plugin")]

TIMEOUT_S = 5.0


class Client:
    """A paho MQTT 5 client whose callbacks fill lists under one condition."""

    def __init__(self, broker, *, websocket: bool = False, client_id: str | None = None, session_expiry: int = 0):
        self.client = mqtt.Client(
            mqtt.CallbackAPIVersion.VERSION2,
            client_id=client_id or unique_client_id("paho5"),
            protocol=mqtt.MQTTv5,
            transport="websockets" if websocket else "tcp",
        )
        if websocket:
            self.client.ws_set_options(path="/mqtt")
        self.client.username_pw_set("guest", "guest")
        self.changed = threading.Condition()
        self.connacks, self.subacks, self.pubacks, self.messages = [], [], [], []
        self.client.on_connect = self._record(self.connacks, lambda *a: (a[3], a[4], a[2]))
        self.client.on_subscribe = self._record(self.subacks, lambda *a: a[3])
        self.client.on_publish = self._record(self.pubacks, lambda *a: (a[2], a[3]))
        self.client.on_message = self._record(self.messages, lambda *a: a[2])
        host, port = (broker.http_host, broker.http_port) if websocket else (broker.mqtt_host, broker.mqtt_port)
        connect_properties = None
        if session_expiry:
            connect_properties = Properties(PacketTypes.CONNECT)
            connect_properties.SessionExpiryInterval = session_expiry
        clean_start = not session_expiry
        self.client.connect(host, port, keepalive=30, clean_start=clean_start, properties=connect_properties)
        self.client.loop_start()
        self.wait(lambda: self.connacks, "CONNACK")

    def _record(self, into: list, pick):
        def callback(*arguments):
            with self.changed:
                into.append(pick(*arguments))
                self.changed.notify_all()
        return callback

    def wait(self, condition, what: str):
        deadline = time.monotonic() + TIMEOUT_S
        with self.changed:
            while not condition():
                remaining = deadline - time.monotonic()
                assert remaining > 0, f"no {what} within {TIMEOUT_S} s"
                self.changed.wait(remaining)

    def close(self):
        self.client.disconnect()
        self.client.loop_stop()


@pytest.fixture
def mqtt5(broker):
    made: list[Client] = []

    def make(**options) -> Client:
        client = Client(broker, **options)
        made.append(client)
        return client

    yield make
    for client in made:
        client.close()


def test_connack_suback_and_puback_reason_codes(mqtt5):
    client = mqtt5()
    reason, properties, _flags = client.connacks[0]
    assert reason.value == 0
    assert properties.TopicAliasMaximum == 64
    topic = unique_topic("paho5")
    client.client.subscribe(topic, qos=2)
    client.wait(lambda: client.subacks, "SUBACK")
    assert [code.value for code in client.subacks[0]] == [2]
    # A publish nobody receives: PUBACK reason 0x10, no matching subscribers.
    client.client.publish(unique_topic("nobody"), b"x", qos=1)
    client.wait(lambda: client.pubacks, "PUBACK")
    assert client.pubacks[0][1].value == 0x10


def test_publish_properties_reach_pika_and_back(mqtt5, broker):
    topic = unique_topic("props5")
    amqp = pika.BlockingConnection(broker.params())
    channel = amqp.channel()
    queue = channel.queue_declare("", exclusive=True).method.queue
    channel.queue_bind(queue, "amq.topic", f"{topic}.#")

    client = mqtt5()
    client.client.subscribe(f"{topic}/#", qos=1)
    client.wait(lambda: client.subacks, "SUBACK")
    properties = Properties(PacketTypes.PUBLISH)
    properties.ContentType = "application/json"
    properties.CorrelationData = b"req-7"
    properties.ResponseTopic = f"{topic}/replies"
    properties.UserProperty = [("tenant", "kitchen")]
    client.client.publish(f"{topic}/in", b"{}", qos=1, properties=properties)
    client.wait(lambda: client.messages, "the MQTT delivery")

    method, header, body = None, None, None
    deadline = time.monotonic() + TIMEOUT_S
    while method is None and time.monotonic() < deadline:
        method, header, body = channel.basic_get(queue, auto_ack=True)
    assert body == b"{}"
    assert header.content_type == "application/json"
    assert header.correlation_id == "req-7"
    assert header.reply_to == f"{topic}.replies"
    assert header.headers["tenant"] == "kitchen"

    # And back: AMQP properties as MQTT 5 properties.
    channel.basic_publish(
        "amq.topic",
        f"{topic}.out",
        b"hello",
        pika.BasicProperties(content_type="text/plain", correlation_id="c-1", headers={"source": "pika"}),
    )
    client.wait(lambda: len(client.messages) >= 2, "the AMQP message")
    message = client.messages[1]
    assert message.topic == f"{topic}/out"
    assert message.properties.ContentType == "text/plain"
    assert message.properties.CorrelationData == b"c-1"
    assert ("source", "pika") in message.properties.UserProperty
    amqp.close()


def test_mqtt5_over_websocket(mqtt5):
    client = mqtt5(websocket=True)
    topic = unique_topic("ws5")
    client.client.subscribe(topic, qos=1)
    client.wait(lambda: client.subacks, "SUBACK")
    client.client.publish(topic, b"through a websocket", qos=1)
    client.wait(lambda: client.messages, "the delivery")
    assert client.messages[0].payload == b"through a websocket"


def test_persistent_session_keeps_its_subscription_identifier(mqtt5):
    """A persistent MQTT 5 session keeps its subscription and the subscription's identifier
    while its client is away; what arrived meanwhile comes with both."""
    client_id = unique_client_id("paho5-kept")
    topic = unique_topic("kept5")
    away = mqtt5(client_id=client_id, session_expiry=600)
    subscribe_properties = Properties(PacketTypes.SUBSCRIBE)
    subscribe_properties.SubscriptionIdentifier = 3
    away.client.subscribe(f"{topic}/#", qos=1, properties=subscribe_properties)
    away.wait(lambda: away.subacks, "SUBACK")
    away.close()

    publisher = mqtt5()
    properties = Properties(PacketTypes.PUBLISH)
    properties.UserProperty = [("while", "away")]
    publisher.client.publish(f"{topic}/news", b"meanwhile", qos=1, properties=properties)
    publisher.wait(lambda: publisher.pubacks, "PUBACK")

    back = mqtt5(client_id=client_id, session_expiry=600)
    assert back.connacks[0][2].session_present
    back.wait(lambda: back.messages, "the message kept for the session")
    message = back.messages[0]
    assert message.payload == b"meanwhile"
    assert message.properties.SubscriptionIdentifier == [3]
    assert ("while", "away") in message.properties.UserProperty


def test_retained_message_keeps_its_properties(mqtt5):
    topic = unique_topic("retained5")
    publisher = mqtt5()
    properties = Properties(PacketTypes.PUBLISH)
    properties.ContentType = "text/plain"
    properties.MessageExpiryInterval = 60
    publisher.client.publish(topic, b"last known", qos=1, retain=True, properties=properties)
    publisher.wait(lambda: publisher.pubacks, "PUBACK")

    subscriber = mqtt5()
    subscriber.client.subscribe(topic, qos=1)
    subscriber.wait(lambda: subscriber.messages, "the retained message")
    message = subscriber.messages[0]
    assert message.retain
    assert message.payload == b"last known"
    assert message.properties.ContentType == "text/plain"
    assert 0 < message.properties.MessageExpiryInterval <= 60
