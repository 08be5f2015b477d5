"""How long things last: a persistent MQTT session without its client expires (its queue goes
after `[mqtt] session_expiry_seconds`), and a STOMP transaction applies all of its frames or
none of them."""

from __future__ import annotations

import threading
import time

import paho.mqtt.client as mqtt
import pytest
import stomp
from pika.exceptions import UnroutableError

from inbox import queue_depth, unique

DEADLINE_S = 10.0


def wait_until(condition, what: str, timeout_s: float = DEADLINE_S) -> None:
    deadline = time.monotonic() + timeout_s
    while not condition():
        if time.monotonic() > deadline:
            pytest.fail(f"timed out after {timeout_s} s waiting for {what}")
        time.sleep(0.05)  # polling a condition with a deadline


def mqtt_session(broker, client_id: str):
    flags = []
    connected = threading.Event()
    client = mqtt.Client(mqtt.CallbackAPIVersion.VERSION2, client_id=client_id, clean_session=False)
    client.username_pw_set("guest", "guest")

    def on_connect(_client, _userdata, connect_flags, _reason, _properties):
        flags.append(connect_flags.session_present)
        connected.set()

    client.on_connect = on_connect
    client.connect(broker.mqtt_host, broker.mqtt_port)
    client.loop_start()
    assert connected.wait(DEADLINE_S), "no CONNACK"
    return client, flags[0]


@pytest.mark.warren_only("session_expiry_seconds is Warren's setting")
def test_persistent_mqtt_session_expires_without_its_client(start_broker, connect):
    broker = start_broker("[mqtt]\nsession_expiry_seconds = 1\n")
    client_id = unique("expiring")
    client, present = mqtt_session(broker, client_id)
    assert not present
    client.subscribe("lifetimes/x", qos=1)
    channel = connect(on=broker).channel()
    channel.confirm_delivery()
    queue = f"mqtt-subscription-{client_id}qos1"
    client.loop_stop()
    client.disconnect()
    # A passive declare would count as use and restart the expiry (as in RabbitMQ), so the
    # queue is probed with mandatory publishes instead: one comes back once the queue is gone.
    wait_until(lambda: not routable(channel, queue), "the session queue to expire")
    again, present = mqtt_session(broker, client_id)
    assert not present, "an expired session came back"
    again.loop_stop()
    again.disconnect()


def routable(channel, queue: str) -> bool:
    try:
        channel.basic_publish("", queue, b"probe", mandatory=True)
        return True
    except UnroutableError:
        return False


def test_stomp_transaction_with_a_bad_frame_applies_nothing(broker, connect):
    if broker.stomp_port is None:
        pytest.skip("no STOMP listener")
    channel = connect().channel()
    queue = unique("atomic")
    channel.queue_declare(queue)
    errors = []
    closed = threading.Event()

    class Listener(stomp.ConnectionListener):
        def on_error(self, frame):
            errors.append(frame.headers.get("message"))

        def on_disconnected(self):
            closed.set()

    connection = stomp.Connection12([(broker.stomp_host, broker.stomp_port)])
    connection.set_listener("", Listener())
    connection.connect("guest", "guest", wait=True)
    connection.begin("t1")
    connection.send(f"/amq/queue/{queue}", "first", transaction="t1")
    connection.send(f"/exchange/{unique('missing')}/key", "second", transaction="t1")
    connection.commit("t1")
    assert closed.wait(DEADLINE_S), "the broker did not close after the failed COMMIT"
    assert errors, "no ERROR for the failed COMMIT"
    assert queue_depth(channel, queue) == 0, "part of a failed transaction was applied"
