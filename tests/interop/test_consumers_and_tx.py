"""Message and consumer priorities, single active consumer, transactions, direct reply-to, the
consumer timeout and connection.blocked, as pika sees them against RabbitMQ.

The last two need broker settings the session broker does not have, so they start their own
broker with a config file (`start_broker`). The consumer timeout is mirrored by
reference-rabbitmq.sh; connection.blocked on a full queue is Warren's own (RabbitMQ blocks
publishers on memory and disk alarms, not per queue) and skips under the stand-in.
"""

from __future__ import annotations

import decimal
import threading
import time

import pika
import pytest
from pika.exceptions import ChannelClosedByBroker

import reply
from inbox import (
    Inbox, get_until_sentinel, pump_for, pump_until, queue_depth, unique, wait_for_depth,
    wait_for_get,
)

# Window for proving that a consumer gets nothing (more) where no sentinel can order the
# delivery that must not happen: one blocked by its prefetch limit, or an inactive one.
QUIET_WINDOW_S = 0.3

REPLY_TO = "amq.rabbitmq.reply-to"


def confirm_channel(connection):
    """A channel in confirm mode: basic_publish returns once the broker has the message, so a
    basic.get or queue depth afterwards sees it."""
    channel = connection.channel()
    channel.confirm_delivery()
    return channel


def publish_all(channel, queue: str, bodies: list[bytes]) -> None:
    for body in bodies:
        channel.basic_publish("", queue, body)


def numbered(prefix: str, count: int) -> list[bytes]:
    return [f"{prefix}-{number}".encode() for number in range(count)]


def assert_channel_error(connection, code: int, call) -> ChannelClosedByBroker:
    """`call()` makes the broker close the channel with `code`, and only the channel."""
    with pytest.raises(ChannelClosedByBroker) as caught:
        call()
    reply.assert_reply(caught.value, code)
    assert connection.is_open, "a soft error closes only the channel"
    return caught.value


# -- priority queues (x-max-priority) ------------------------------------------------------


@pytest.mark.parametrize("receive", ["basic.get", "basic.consume"])
def test_priority_queue_delivers_highest_priority_first(connection, receive):
    """Highest priority first, FIFO within a priority. A priority above x-max-priority counts as
    the maximum, and a message without one as priority 0."""
    channel = confirm_channel(connection)
    queue = unique("priority")
    channel.queue_declare(queue, arguments={"x-max-priority": 5})
    published = [
        (b"none-1", None), (b"p1-1", 1), (b"p5-1", 5), (b"p0-1", 0), (b"p9-as-max", 9),
        (b"p3-1", 3), (b"p1-2", 1), (b"none-2", None), (b"p5-2", 5), (b"p255-as-max", 255),
    ]
    for body, priority in published:
        channel.basic_publish("", queue, body, pika.BasicProperties(priority=priority))

    if receive == "basic.get":
        received = [channel.basic_get(queue, auto_ack=True)[2] for _ in published]
        assert channel.basic_get(queue) == (None, None, None)
    else:
        received = Inbox(channel, queue).wait_for(len(published))
        assert [message.properties.priority for message in received] == [
            5, 9, 5, 255, 3, 1, 1, None, 0, None,
        ], "the priority property is delivered as published"
        received = [message.body for message in received]
    assert received == [
        b"p5-1", b"p9-as-max", b"p5-2", b"p255-as-max", b"p3-1",
        b"p1-1", b"p1-2", b"none-1", b"p0-1", b"none-2",
    ]


def test_priority_is_ignored_without_max_priority(connection):
    channel = confirm_channel(connection)
    queue = unique("no-priority")
    channel.queue_declare(queue)
    bodies = [b"p1", b"p9", b"none", b"p5"]
    for body, priority in zip(bodies, [1, 9, None, 5]):
        channel.basic_publish("", queue, body, pika.BasicProperties(priority=priority))
    assert [channel.basic_get(queue, auto_ack=True)[2] for _ in bodies] == bodies


def test_priority_queue_requeue_restores_original_place(connection):
    """Messages nacked with requeue, in the opposite order to their delivery, go back where
    they were: ahead of lower priorities and in their original order within their own."""
    channel = confirm_channel(connection)
    queue = unique("priority-requeue")
    channel.queue_declare(queue, arguments={"x-max-priority": 10})
    for body, priority in [(b"low", 1), (b"high-1", 9), (b"high-2", 9)]:
        channel.basic_publish("", queue, body, pika.BasicProperties(priority=priority))
    first, _, first_body = channel.basic_get(queue)
    second, _, second_body = channel.basic_get(queue)
    assert (first_body, second_body) == (b"high-1", b"high-2")
    channel.basic_publish("", queue, b"high-3", pika.BasicProperties(priority=9))

    channel.basic_nack(second.delivery_tag, requeue=True)
    channel.basic_nack(first.delivery_tag, requeue=True)
    received = []
    for _ in range(4):
        method, _, body = channel.basic_get(queue, auto_ack=True)
        received.append((body, method.redelivered))
    assert received == [
        (b"high-1", True), (b"high-2", True), (b"high-3", False), (b"low", False),
    ]


@pytest.mark.parametrize(
    "max_priority", [-1, 256, "5"], ids=["negative", "above-255", "string"]
)
def test_invalid_max_priority_is_406(connection, max_priority):
    queue = unique("bad-priority")
    assert_channel_error(
        connection, reply.PRECONDITION_FAILED,
        lambda: connection.channel().queue_declare(
            queue, arguments={"x-max-priority": max_priority}
        ),
    )


def test_max_priority_zero_is_accepted_and_ignores_priorities(connection):
    """RabbitMQ checks only for a non-negative integer: 0 gives a queue with one priority
    level, so every message counts as priority 0 and the queue is FIFO."""
    channel = confirm_channel(connection)
    queue = unique("priority-zero")
    channel.queue_declare(queue, arguments={"x-max-priority": 0})
    bodies = [b"p1", b"p9", b"none", b"p5"]
    for body, priority in zip(bodies, [1, 9, None, 5]):
        channel.basic_publish("", queue, body, pika.BasicProperties(priority=priority))
    assert [channel.basic_get(queue, auto_ack=True)[2] for _ in bodies] == bodies


def test_max_priority_255_is_accepted(channel):
    queue = unique("priority-255")
    channel.queue_declare(queue, arguments={"x-max-priority": 255})
    channel.basic_publish("", queue, b"low", pika.BasicProperties(priority=1))
    channel.basic_publish("", queue, b"top", pika.BasicProperties(priority=255))
    assert get_until_sentinel(channel, queue, b"low") == [b"top"]


# -- consumer priorities (x-priority) ------------------------------------------------------


def test_consumer_priority_prefers_higher_while_it_has_credit(connect):
    """With prefetch 2 each, the higher-priority consumer takes messages until its prefetch is
    full; only then does the lower one get any, and as soon as the higher one acks it is
    preferred again."""
    queue = unique("consumer-priority")
    producer = connect().channel()
    producer.queue_declare(queue)

    consumers = {}
    # The low-priority consumer subscribes first, so registration order cannot explain it.
    for name, priority in [("low", 1), ("high", 10)]:
        channel = connect().channel()
        channel.basic_qos(prefetch_count=2)
        consumers[name] = Inbox(
            channel, queue, auto_ack=False, arguments={"x-priority": priority}
        )
    high, low = consumers["high"], consumers["low"]
    connections = [high.channel.connection, low.channel.connection]

    bodies = numbered("message", 5)
    publish_all(producer, queue, bodies)
    pump_until(
        lambda: len(high.messages) + len(low.messages) >= 4, connections, "four deliveries"
    )
    pump_for(connections, QUIET_WINDOW_S)
    assert high.bodies == bodies[:2]
    assert low.bodies == bodies[2:4]

    high.channel.basic_ack(high.messages[-1].method.delivery_tag, multiple=True)
    high.wait_for(3)
    pump_for(connections, QUIET_WINDOW_S)
    assert high.bodies == bodies[:2] + bodies[4:]
    assert low.bodies == bodies[2:4]


def test_consumers_of_equal_priority_take_turns(connection):
    """Two consumers at priority 5 share the messages round-robin; a consumer at the default
    priority 0 gets none while they have credit (auto-ack: always)."""
    producer = connection.channel()
    queue = unique("consumer-priority")
    producer.queue_declare(queue)
    low = Inbox(connection.channel(), queue)
    first = Inbox(connection.channel(), queue, arguments={"x-priority": 5})
    second = Inbox(connection.channel(), queue, arguments={"x-priority": 5})

    bodies = numbered("message", 6)
    publish_all(producer, queue, bodies)
    # The six messages are all accounted for between the two, so the third has none.
    pump_until(
        lambda: len(first.messages) + len(second.messages) == len(bodies),
        [connection], "all messages at the priority-5 consumers",
    )
    assert low.bodies == []
    assert {tuple(first.bodies), tuple(second.bodies)} == {
        tuple(bodies[0::2]), tuple(bodies[1::2]),
    }, f"not round-robin: {first.bodies} / {second.bodies}"


@pytest.mark.parametrize(
    "priority", ["high", decimal.Decimal("1.5"), True], ids=["string", "decimal", "bool"]
)
def test_non_integer_consumer_priority_is_406(connection, priority):
    queue = unique("consumer-priority")
    connection.channel().queue_declare(queue)
    channel = connection.channel()
    assert_channel_error(
        connection, reply.PRECONDITION_FAILED,
        lambda: Inbox(channel, queue, arguments={"x-priority": priority}),
    )
    assert connection.channel().queue_declare(queue, passive=True).method.consumer_count == 0


# -- single active consumer ----------------------------------------------------------------


def test_single_active_consumer_hands_over_on_cancel(connect):
    queue = unique("single-active")
    producer = connect().channel()
    producer.queue_declare(queue, arguments={"x-single-active-consumer": True})
    first = Inbox(connect().channel(), queue, auto_ack=False, ack_each=True)
    second = Inbox(connect().channel(), queue, auto_ack=False, ack_each=True)
    connections = [first.channel.connection, second.channel.connection]

    before = numbered("before", 4)
    publish_all(producer, queue, before)
    # Every message reached the first consumer, so none can have gone to the second.
    pump_until(lambda: len(first.messages) == len(before), connections, "the first consumer")
    assert first.bodies == before
    assert second.bodies == []

    first.cancel()
    after = numbered("after", 4)
    publish_all(producer, queue, after)
    pump_until(lambda: len(second.messages) == len(after), connections, "the second consumer")
    assert second.bodies == after
    assert first.bodies == before


def test_single_active_consumer_unacked_messages_go_to_the_next(connect):
    """The active consumer holds one unacked message (prefetch 1); the waiting consumer (no
    prefetch limit) gets nothing, even though the active one cannot take more. When the active
    consumer's connection closes, the held message is requeued at the head before the next
    consumer is served: it gets everything in the original order, the held one redelivered."""
    queue = unique("single-active")
    producer = connect().channel()
    producer.queue_declare(queue, arguments={"x-single-active-consumer": True})
    active_channel = connect().channel()
    active_channel.basic_qos(prefetch_count=1)
    active = Inbox(active_channel, queue, auto_ack=False)
    waiting = Inbox(connect().channel(), queue, auto_ack=False)  # no prefetch limit

    bodies = numbered("message", 3)
    publish_all(producer, queue, bodies)
    active.wait_for(1)
    pump_for([active.channel.connection, waiting.channel.connection], QUIET_WINDOW_S)
    assert active.bodies == bodies[:1]
    assert waiting.bodies == []

    active.channel.connection.close()
    received = waiting.wait_for(len(bodies))
    assert [(message.body, message.method.redelivered) for message in received] == [
        (bodies[0], True), (bodies[1], False), (bodies[2], False),
    ]


@pytest.mark.parametrize("value", ["true", 1], ids=["string", "integer"])
def test_non_boolean_single_active_consumer_is_406(connection, value):
    queue = unique("single-active")
    assert_channel_error(
        connection, reply.PRECONDITION_FAILED,
        lambda: connection.channel().queue_declare(
            queue, arguments={"x-single-active-consumer": value}
        ),
    )


# -- transactions --------------------------------------------------------------------------


def test_tx_publishes_are_invisible_until_commit(connection):
    observer = connection.channel()
    queue = unique("tx")
    observer.queue_declare(queue)
    channel = connection.channel()
    channel.tx_select()
    bodies = numbered("message", 3)
    publish_all(channel, queue, bodies)
    # A declare on the same channel is answered after the publishes before it are handled.
    assert channel.queue_declare(queue, passive=True).method.message_count == 0
    assert queue_depth(observer, queue) == 0

    channel.tx_commit()
    wait_for_depth(observer, queue, len(bodies))
    assert [observer.basic_get(queue, auto_ack=True)[2] for _ in bodies] == bodies


def test_tx_rollback_discards_publishes(connection):
    observer = connection.channel()
    queue = unique("tx")
    observer.queue_declare(queue)
    channel = connection.channel()
    channel.tx_select()
    publish_all(channel, queue, [b"discarded-1", b"discarded-2"])
    channel.tx_rollback()
    # The channel stays transactional: these wait for the next commit.
    publish_all(channel, queue, [b"kept", b"sentinel"])
    assert queue_depth(observer, queue) == 0
    channel.tx_commit()
    assert get_until_sentinel(observer, queue, b"sentinel") == [b"kept"]


@pytest.mark.parametrize("outcome", ["commit", "rollback"])
def test_tx_ack_takes_effect_on_commit(connect, outcome):
    """An ack inside a transaction settles the message only when committed. Rolled back, the
    message is still unacked: closing the channel returns it to the queue, redelivered."""
    observer = confirm_channel(connect())
    queue = unique("tx-ack")
    observer.queue_declare(queue)
    observer.basic_publish("", queue, b"job")

    channel = connect().channel()
    channel.tx_select()
    method, _, body = channel.basic_get(queue)
    assert body == b"job"
    channel.basic_ack(method.delivery_tag)
    if outcome == "commit":
        channel.tx_commit()
    else:
        channel.tx_rollback()
    channel.close()

    if outcome == "commit":
        observer.basic_publish("", queue, b"sentinel")
        assert get_until_sentinel(observer, queue, b"sentinel") == []
    else:
        method, _, body = wait_for_get(observer, queue)
        assert body == b"job"
        assert method.redelivered is True


@pytest.mark.parametrize("method", ["tx_commit", "tx_rollback"])
def test_tx_commit_or_rollback_without_select_is_406(connection, method):
    channel = connection.channel()
    assert_channel_error(connection, reply.PRECONDITION_FAILED, getattr(channel, method))


def test_confirm_select_on_tx_channel_is_406(connection):
    channel = connection.channel()
    channel.tx_select()
    assert_channel_error(connection, reply.PRECONDITION_FAILED, channel.confirm_delivery)


def test_tx_select_on_confirm_channel_is_406(connection):
    channel = confirm_channel(connection)
    assert_channel_error(connection, reply.PRECONDITION_FAILED, channel.tx_select)


# -- direct reply-to -----------------------------------------------------------------------


def test_direct_reply_to_round_trip(connect):
    service_queue = unique("rpc")
    server = connect().channel()
    server.queue_declare(service_queue)

    client = connect().channel()
    replies = Inbox(client, REPLY_TO, auto_ack=True)
    client.basic_publish(
        "", service_queue, b"ping",
        pika.BasicProperties(reply_to=REPLY_TO, correlation_id="request-1"),
    )

    _, request, body = wait_for_get(server, service_queue)
    assert body == b"ping"
    assert request.correlation_id == "request-1"
    reply_key = request.reply_to
    assert reply_key.startswith(REPLY_TO + "."), reply_key
    server.basic_publish(
        "", reply_key, b"pong", pika.BasicProperties(correlation_id=request.correlation_id)
    )

    [message] = replies.wait_for(1)
    assert message.body == b"pong"
    assert message.properties.correlation_id == "request-1"
    assert (message.method.exchange, message.method.routing_key) == ("", reply_key)
    assert message.method.consumer_tag == replies.consumer_tag


def test_direct_reply_to_with_manual_ack_is_406(connection):
    channel = connection.channel()
    assert_channel_error(
        connection, reply.PRECONDITION_FAILED, lambda: Inbox(channel, REPLY_TO, auto_ack=False)
    )


@pytest.mark.parametrize("elsewhere", [False, True], ids=["no-consumer", "sibling-consumer"])
def test_publish_with_direct_reply_to_without_consumer_is_406(connection, elsewhere):
    """The reply consumer must be on the publishing channel itself: one on another channel of
    the same connection does not count."""
    queue = unique("rpc")
    connection.channel().queue_declare(queue)
    if elsewhere:
        Inbox(connection.channel(), REPLY_TO)
    channel = connection.channel()

    def publish():
        channel.basic_publish("", queue, b"request", pika.BasicProperties(reply_to=REPLY_TO))
        channel.queue_declare("", exclusive=True)  # the close shows up on a synchronous call

    assert_channel_error(connection, reply.PRECONDITION_FAILED, publish)
    assert queue_depth(connection.channel(), queue) == 0, "the refused request was not queued"


def test_passive_declare_of_direct_reply_to_succeeds(channel):
    """RabbitMQ answers for the pseudo-queue with no messages and one consumer, whether or not
    this channel consumes from it."""
    declared = channel.queue_declare(REPLY_TO, passive=True).method
    assert declared.queue == REPLY_TO
    assert (declared.message_count, declared.consumer_count) == (0, 1)


def test_reply_to_a_departed_client_is_dropped(connect):
    """The server's publish to the reply key of a closed connection goes nowhere, and its
    channel stays open."""
    service_queue = unique("rpc")
    server = confirm_channel(connect())
    server.queue_declare(service_queue)
    client_connection = connect()
    client = client_connection.channel()
    Inbox(client, REPLY_TO)
    client.basic_publish("", service_queue, b"ping", pika.BasicProperties(reply_to=REPLY_TO))
    _, request, _ = wait_for_get(server, service_queue)
    client_connection.close()

    server.basic_publish("", request.reply_to, b"pong")
    assert server.is_open
    server.queue_declare(service_queue, passive=True)


# -- consumer timeout ----------------------------------------------------------------------


CONSUMER_TIMEOUT_MS = 500
# The broker checks about once a second (RabbitMQ on each channel tick, which the reference
# stand-in sets to a second); past that, something is wrong.
CONSUMER_TIMEOUT_DEADLINE_S = 3.0


def test_consumer_timeout_closes_channel_holding_unacked_delivery(connect, start_broker):
    broker = start_broker(f"[amqp]\nconsumer_timeout_ms = {CONSUMER_TIMEOUT_MS}\n")
    connection = connect(on=broker)
    producer = connection.channel()
    late_queue, prompt_queue = unique("late"), unique("prompt")
    for queue in (late_queue, prompt_queue):
        producer.queue_declare(queue)
    # On the same connection, so that pumping one serves both channels.
    prompt = Inbox(connection.channel(), prompt_queue, auto_ack=False, ack_each=True)
    late = connection.channel()

    producer.basic_publish("", late_queue, b"held")
    producer.basic_publish("", prompt_queue, b"acked at once")
    held_since = None
    deadline = time.monotonic() + CONSUMER_TIMEOUT_DEADLINE_S
    with pytest.raises(ChannelClosedByBroker) as caught:
        # pika's consumer generator raises the broker's channel.close from its own channel.
        for method, _, body in late.consume(late_queue, inactivity_timeout=0.05):
            if method is not None:
                assert body == b"held"
                held_since = time.monotonic()  # and never acked
            if time.monotonic() > deadline:
                pytest.fail(f"channel not closed within {CONSUMER_TIMEOUT_DEADLINE_S} s")
    assert held_since is not None, "the held message was never delivered"
    closed_after = time.monotonic() - held_since
    reply.assert_reply(caught.value, reply.PRECONDITION_FAILED)
    assert "delivery acknowledgement on channel" in caught.value.reply_text
    assert closed_after >= CONSUMER_TIMEOUT_MS / 1000 - 0.05, (
        f"closed {closed_after:.2f} s after the delivery, before the timeout"
    )

    assert connection.is_open
    assert prompt.channel.is_open, "a channel that acked in time is not closed"
    assert prompt.bodies == [b"acked at once"]
    method, _, body = wait_for_get(producer, late_queue)
    assert (body, method.redelivered) == (b"held", True)


def test_consumer_timeout_spares_channel_that_acks_in_time(connect, start_broker):
    """Each message is held for less than the timeout, over a span several times longer."""
    broker = start_broker(f"[amqp]\nconsumer_timeout_ms = {CONSUMER_TIMEOUT_MS}\n")
    connection = connect(on=broker)
    producer = connection.channel()
    queue = unique("prompt")
    producer.queue_declare(queue)
    consumer = Inbox(connection.channel(), queue, auto_ack=False)

    hold_s = CONSUMER_TIMEOUT_MS / 1000 / 2
    rounds = 6  # 1.5 s of holding: the check ran at least once with a delivery outstanding
    for number in range(rounds):
        producer.basic_publish("", queue, str(number).encode())
        consumer.wait_for(number + 1)
        pump_for([connection], hold_s)
        consumer.channel.basic_ack(consumer.messages[-1].method.delivery_tag)
    assert consumer.channel.is_open
    assert consumer.bodies == [str(number).encode() for number in range(rounds)]
    assert producer.queue_declare(queue, passive=True).method.consumer_count == 1


# -- connection.blocked --------------------------------------------------------------------


QUEUE_READY_BYTES_MAX = 64 * 1024
BLOCKED_BODY_BYTES = 10 * 1024
BLOCKED_MESSAGE_COUNT = 100


class BlockablePublisher(threading.Thread):
    """Publishes `bodies` without confirms on its own connection, in its own thread (pika
    connections are not thread-safe), then keeps that connection's I/O going until stopped.
    A publish may wait for the broker to read again once it stops reading; the test thread stays
    free to drain the queue meanwhile. `events` records "blocked" and "unblocked" in order."""

    def __init__(self, params: pika.ConnectionParameters, queue: str, bodies: list[bytes]):
        super().__init__(name="blockable-publisher", daemon=True)
        self.params = params
        self.queue = queue
        self.bodies = bodies
        self.events: list[str] = []
        self.changed = threading.Condition()
        self.stopping = threading.Event()
        self.error: BaseException | None = None

    def _note(self, event: str) -> None:
        with self.changed:
            self.events.append(event)
            self.changed.notify_all()

    def run(self) -> None:
        try:
            connection = pika.BlockingConnection(self.params)
            try:
                connection.add_on_connection_blocked_callback(lambda *_: self._note("blocked"))
                connection.add_on_connection_unblocked_callback(
                    lambda *_: self._note("unblocked")
                )
                channel = connection.channel()
                publish_all(channel, self.queue, self.bodies)
                self._note("published")
                while not self.stopping.is_set():
                    connection.process_data_events(time_limit=0.05)
            finally:
                if connection.is_open:
                    connection.close()
        except BaseException as error:  # reported to the test thread by stop()
            self.error = error
            self._note("error")

    def wait_until(self, condition, what: str, timeout_s: float = 5.0) -> None:
        with self.changed:
            if not self.changed.wait_for(
                lambda: condition(self.events) or "error" in self.events, timeout=timeout_s
            ):
                pytest.fail(f"timed out after {timeout_s} s waiting for {what}: {self.events}")
        if self.error is not None:
            raise self.error

    def stop(self) -> None:
        self.stopping.set()
        self.join(timeout=10)
        assert not self.is_alive(), "publisher thread did not stop"
        if self.error is not None:
            raise self.error


@pytest.mark.warren_only("queue_ready_bytes_max: RabbitMQ blocks on memory and disk alarms")
def test_full_queue_blocks_publisher_until_drained(connect, start_broker):
    broker = start_broker(f"queue_ready_bytes_max = {QUEUE_READY_BYTES_MAX}\n")
    observer = connect(on=broker).channel()
    queue = unique("blocked")
    observer.queue_declare(queue)
    bodies = [
        f"{number:03}".encode().ljust(BLOCKED_BODY_BYTES, b".")
        for number in range(BLOCKED_MESSAGE_COUNT)
    ]
    publisher = BlockablePublisher(broker.params(), queue, bodies)
    publisher.start()
    try:
        publisher.wait_until(lambda events: "blocked" in events, "connection.blocked")
        # The broker stopped reading: however long we look, the queue holds little more than
        # its limit, not the megabyte sent.
        pump_for([observer.connection], QUIET_WINDOW_S)
        depth = queue_depth(observer, queue)
        assert depth * BLOCKED_BODY_BYTES <= 2 * QUEUE_READY_BYTES_MAX, (
            f"{depth} messages queued while blocked"
        )

        inbox = Inbox(observer, queue)
        inbox.wait_for(len(bodies))
        assert inbox.bodies == bodies
        publisher.wait_until(
            lambda events: "published" in events and events[-1] == "unblocked",
            "the last connection.unblocked",
        )
    finally:
        publisher.stop()
    events = [event for event in publisher.events if event != "published"]
    assert events[0] == "blocked", publisher.events
    assert all(event != following for event, following in zip(events, events[1:])), (
        f"blocked and unblocked should alternate: {publisher.events}"
    )
