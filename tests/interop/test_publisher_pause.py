"""A queue over `queue_ready_bytes_max` pauses its publishers whatever their protocol: the broker
stops reading their sockets (TCP pushes back) until the queue has room, then resumes. For AMQP
that is connection.blocked (test_consumers_and_tx.py); here MQTT and STOMP publishers, whose
protocols have no such signal: their acknowledgements (PUBACK, RECEIPT) stop, and resume after
the queue is drained. Nothing is lost."""

from __future__ import annotations

import threading
import time

import paho.mqtt.client as mqtt
import pytest
import stomp

from inbox import queue_depth, unique

pytestmark = pytest.mark.warren_only("queue_ready_bytes_max is Warren's bound; RabbitMQ uses a global memory alarm")

LIMIT_BYTES = 64 * 1024
MESSAGE_BYTES = 10 * 1024
MESSAGES = 40
DEADLINE_S = 10.0


def wait_until(condition, what: str, timeout_s: float = DEADLINE_S) -> None:
    deadline = time.monotonic() + timeout_s
    while not condition():
        if time.monotonic() > deadline:
            pytest.fail(f"timed out after {timeout_s} s waiting for {what}")
        time.sleep(0.02)  # polling a condition with a deadline


def stalls(progress, quiet_s: float = 0.5) -> bool:
    """Whether `progress()` stops changing for `quiet_s`: evidence the publisher is paused."""
    before = progress()
    time.sleep(quiet_s)  # an observation window: proving that something does not happen
    return progress() == before


@pytest.fixture
def paused_broker(start_broker, connect):
    broker = start_broker(f"queue_ready_bytes_max = {LIMIT_BYTES}\n")
    channel = connect(on=broker).channel()
    return broker, channel


def test_mqtt_publisher_is_paused_by_a_full_queue_and_resumes(paused_broker):
    broker, channel = paused_broker
    queue = unique("mqtt-paused")
    channel.queue_declare(queue, exclusive=True)
    channel.queue_bind(queue, "amq.topic", "paused.mqtt")
    acked = []
    client = mqtt.Client(mqtt.CallbackAPIVersion.VERSION2, client_id=unique("pub"))
    client.username_pw_set("guest", "guest")
    client.max_inflight_messages_set(MESSAGES)
    client.max_queued_messages_set(0)
    client.on_publish = lambda *args: acked.append(args[1])
    client.connect(broker.mqtt_host, broker.mqtt_port)
    client.loop_start()
    try:
        for _ in range(MESSAGES):
            client.publish("paused/mqtt", b"x" * MESSAGE_BYTES, qos=1)
        wait_until(lambda: len(acked) >= LIMIT_BYTES // MESSAGE_BYTES, "the first PUBACKs")
        assert stalls(lambda: len(acked)), "PUBACKs kept coming past the queue's bound"
        assert len(acked) < MESSAGES
        depth_while_paused = queue_depth(channel, queue)
        assert depth_while_paused * MESSAGE_BYTES <= 2 * LIMIT_BYTES, f"{depth_while_paused} messages queued"
        # Draining the queue lets the publisher go on, and every message arrives.
        received = channel.queue_purge(queue).method.message_count

        def drained_all() -> bool:
            nonlocal received
            received += channel.queue_purge(queue).method.message_count
            return len(acked) == MESSAGES and received == MESSAGES

        wait_until(drained_all, "all PUBACKs and messages after draining")
    finally:
        client.loop_stop()
        client.disconnect()


def test_stomp_publisher_is_paused_by_a_full_queue_and_resumes(paused_broker):
    broker, channel = paused_broker
    queue = unique("stomp-paused")
    channel.queue_declare(queue, exclusive=True)
    receipts = []
    lock = threading.Lock()

    class Listener(stomp.ConnectionListener):
        def on_receipt(self, frame):
            with lock:
                receipts.append(frame.headers["receipt-id"])

    connection = stomp.Connection12([(broker.stomp_host, broker.stomp_port)])
    connection.set_listener("", Listener())
    connection.connect("guest", "guest", wait=True)
    sender = threading.Thread(
        target=lambda: [
            connection.send(f"/amq/queue/{queue}", "x" * MESSAGE_BYTES, receipt=f"r{number}") for number in range(MESSAGES)
        ],
        daemon=True,
    )
    sender.start()
    try:
        wait_until(lambda: len(receipts) >= LIMIT_BYTES // MESSAGE_BYTES, "the first RECEIPTs")
        assert stalls(lambda: len(receipts)), "RECEIPTs kept coming past the queue's bound"
        assert len(receipts) < MESSAGES
        received = queue_depth(channel, queue)
        assert received * MESSAGE_BYTES <= 2 * LIMIT_BYTES, f"{received} messages queued"
        received = channel.queue_purge(queue).method.message_count

        def drained_all() -> bool:
            nonlocal received
            received += channel.queue_purge(queue).method.message_count
            return len(receipts) == MESSAGES and received == MESSAGES

        wait_until(drained_all, "all RECEIPTs and messages after draining")
    finally:
        connection.disconnect()
