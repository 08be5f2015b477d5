"""The `resp` protocol plugin with redis-py, the Python Redis client, unmodified: logins, pub/sub
across protocols (Redis channels ride amq.topic, so pika and paho-mqtt reach them and back), and
lists as durable FIFO queues. A broker with the plugin loaded is started per test."""

from __future__ import annotations

import threading
import time

import pika
import pytest
import redis

from mqtt_client import MqttClient

pytestmark = pytest.mark.warren_only("the resp plugin is Warren's")

RESP_CONFIG = """
[plugins]
load = ["resp"]
[plugins.resp]
port = 0
bind = "127.0.0.1"
"""


@pytest.fixture
def resp_broker(start_broker):
    return start_broker(RESP_CONFIG)


@pytest.fixture(params=[2, 3], ids=["resp2", "resp3"])
def client(request, resp_broker):
    """redis-py speaking RESP2 (`AUTH`) or RESP3 (`HELLO 3 AUTH`, its default since 8.0)."""
    host, port = resp_broker.listening_address("resp")
    made = redis.Redis(
        host=host, port=port, username="guest", password="guest", socket_timeout=10, protocol=request.param
    )
    yield made
    made.close()


def next_message(pubsub, timeout_s: float = 10.0) -> dict:
    """The next `message` or `pmessage` (skipping subscription confirmations)."""
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        message = pubsub.get_message(timeout=0.2)
        if message and message["type"] in ("message", "pmessage"):
            return message
    raise AssertionError(f"no message within {timeout_s} s")


def test_wrong_password_is_refused_and_no_password_gets_noauth(resp_broker):
    host, port = resp_broker.listening_address("resp")
    with pytest.raises(redis.AuthenticationError):
        redis.Redis(host=host, port=port, username="guest", password="wrong").ping()
    anonymous = redis.Redis(host=host, port=port)
    assert anonymous.ping() is True
    with pytest.raises(redis.AuthenticationError, match="Authentication required"):
        anonymous.publish("a", "b")


def test_unknown_commands_get_redis_errors(client):
    with pytest.raises(redis.ResponseError, match="unknown command 'get'"):
        client.get("key")
    assert client.echo("hi") == b"hi"


def test_pubsub_sees_amqp_and_mqtt_publishes(resp_broker, client):
    pubsub = client.pubsub()
    pubsub.subscribe("sensors.kitchen.temp")
    pubsub.psubscribe("sensors.#")
    assert pubsub.get_message(timeout=5)["type"] == "subscribe"
    assert pubsub.get_message(timeout=5)["type"] == "psubscribe"

    amqp = pika.BlockingConnection(resp_broker.params())
    amqp.channel().basic_publish("amq.topic", "sensors.kitchen.temp", b"from-pika")
    amqp.close()
    received = [next_message(pubsub), next_message(pubsub)]
    by_type = {message["type"]: message for message in received}
    assert by_type["message"]["channel"] == b"sensors.kitchen.temp"
    assert by_type["message"]["data"] == b"from-pika"
    assert by_type["pmessage"]["pattern"] == b"sensors.#"
    assert by_type["pmessage"]["data"] == b"from-pika"

    mqtt = MqttClient(resp_broker.mqtt_host, resp_broker.mqtt_port, "paho-to-resp")
    mqtt.connect()
    mqtt.publish("sensors/hall/humidity", b"40", qos=1)
    mqtt.close()
    message = next_message(pubsub)
    assert (message["type"], message["channel"], message["data"]) == (
        "pmessage", b"sensors.hall.humidity", b"40",
    )
    pubsub.close()


def test_redis_publish_reaches_pika_and_paho(resp_broker, client):
    mqtt = MqttClient(resp_broker.mqtt_host, resp_broker.mqtt_port, "resp-to-paho")
    mqtt.connect()
    mqtt.subscribe("orders/+", 1)
    amqp = pika.BlockingConnection(resp_broker.params())
    channel = amqp.channel()
    queue = channel.queue_declare("", exclusive=True).method.queue
    channel.queue_bind(queue, "amq.topic", "orders.*")

    assert client.publish("orders.new", b"order-1") == 2, "two queues: paho's session and pika's"
    assert mqtt.wait_for_messages(1)[0].topic == "orders/new"
    method, _properties, body = None, None, None
    deadline = time.monotonic() + 10
    while method is None and time.monotonic() < deadline:
        method, _properties, body = channel.basic_get(queue, auto_ack=True)
    assert body == b"order-1" and method.routing_key == "orders.new"
    amqp.close()
    mqtt.close()


def test_lists_are_durable_fifo_queues(client):
    assert client.rpush("work", "a", "b") == 2
    assert client.lpush("work", "c") == 3
    assert client.llen("work") == 3
    # redis-py gives a tuple over RESP2 and a list over RESP3, as with Redis itself.
    assert tuple(client.blpop(["empty", "work"], timeout=1)) == (b"work", b"a")
    assert client.lpop("work") == b"b"
    assert client.rpop("work") == b"c"
    assert client.lpop("work") is None
    assert client.blpop("work", timeout=1) is None


def test_a_blocked_pop_is_served_by_another_clients_push(resp_broker, client):
    host, port = resp_broker.listening_address("resp")
    pusher = redis.Redis(host=host, port=port, username="guest", password="guest")
    def push_once_blocked():
        # The blocked pop waits as a consumer of the queue: push only once it is there.
        amqp = pika.BlockingConnection(resp_broker.params())
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline:
            try:
                channel = amqp.channel()
                if channel.queue_declare("handoff", passive=True).method.consumer_count >= 1:
                    break
            except pika.exceptions.ChannelClosedByBroker:
                pass  # the pop has not declared the queue yet
            time.sleep(0.02)
        amqp.close()
        pusher.rpush("handoff", "payload")

    pushing = threading.Thread(target=push_once_blocked)
    pushing.start()
    started = time.monotonic()
    assert tuple(client.brpop("handoff", timeout=10)) == (b"handoff", b"payload")
    assert time.monotonic() - started < 9
    pushing.join()
    pusher.close()
