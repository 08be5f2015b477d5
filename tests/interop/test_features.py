"""AMQP 0-9-1 features beyond the tutorials, as pika sees them against RabbitMQ."""

from __future__ import annotations

import decimal
import os
from datetime import datetime, timezone

import pika
import pytest
from pika.exceptions import ChannelClosedByBroker, UnroutableError

import reply
from inbox import (
    Inbox, get_until_sentinel, pump_for, pump_until, queue_depth, unique, wait_for_depth,
)

# Window for proving that a prefetch limit holds back further deliveries: there is no sentinel
# that could order a delivery which must not happen.
QUIET_WINDOW_S = 0.3


def wait_until_queue_gone(connection, queue: str) -> None:
    """Passive-declare `queue` on fresh channels until the broker answers 404. While the queue
    still exists the declare succeeds, or fails with 405 if it is another connection's exclusive
    queue; any other answer fails the test."""
    def gone() -> bool:
        probe = connection.channel()
        try:
            probe.queue_declare(queue, passive=True)
        except ChannelClosedByBroker as error:
            assert error.reply_code in (reply.NOT_FOUND, reply.RESOURCE_LOCKED), error
            return error.reply_code == reply.NOT_FOUND
        probe.close()
        return False

    pump_until(gone, [connection], f"queue {queue!r} to be deleted")


# -- capabilities --------------------------------------------------------------------------


def test_server_advertises_capabilities(connection):
    """RabbitMQ's capabilities for the features this suite covers. pika refuses
    confirm_delivery unless publisher_confirms and basic.nack are both advertised."""
    capabilities = connection._impl.server_capabilities
    for capability in (
        "publisher_confirms", "basic.nack", "consumer_cancel_notify",
        "authentication_failure_close", "per_consumer_qos",
    ):
        assert capabilities.get(capability) is True, f"{capability}: {capabilities}"


# -- publisher confirms --------------------------------------------------------------------


def test_confirms_ack_every_publish(channel):
    queue = unique("confirms")
    channel.queue_declare(queue)
    channel.confirm_delivery()
    for number in range(200):
        # pika waits for each basic.ack and raises NackError on a basic.nack.
        channel.basic_publish("", queue, f"message {number}".encode())
    assert queue_depth(channel, queue) == 200


def test_confirms_mandatory_unroutable_raises(channel):
    channel.confirm_delivery()
    nowhere = unique("nowhere")
    with pytest.raises(UnroutableError) as caught:
        channel.basic_publish("", nowhere, b"lost", mandatory=True)
    [returned] = caught.value.messages
    assert returned.method.reply_code == reply.NO_ROUTE
    assert returned.method.reply_text == "NO_ROUTE"
    assert returned.method.exchange == ""
    assert returned.method.routing_key == nowhere
    assert returned.body == b"lost"

    # Without `mandatory` an unroutable message is simply confirmed; the channel lives on.
    channel.basic_publish("", nowhere, b"dropped")
    queue = unique("confirms")
    channel.queue_declare(queue)
    channel.basic_publish("", queue, b"routed", mandatory=True)
    assert queue_depth(channel, queue) == 1


# -- basic.get, ack, nack, reject, recover -------------------------------------------------


def test_basic_get_empty_and_message_count(channel):
    queue = unique("get")
    channel.queue_declare(queue)
    assert channel.basic_get(queue) == (None, None, None)

    bodies = [b"one", b"two", b"three"]
    for body in bodies:
        channel.basic_publish("", queue, body)

    tags = []
    for index, expected in enumerate(bodies):
        method, properties, body = channel.basic_get(queue, auto_ack=False)
        assert body == expected
        assert method.message_count == len(bodies) - index - 1, "messages left after this one"
        assert method.redelivered is False
        assert method.exchange == ""
        assert method.routing_key == queue
        assert isinstance(properties, pika.BasicProperties)
        tags.append(method.delivery_tag)
        channel.basic_ack(method.delivery_tag)
    assert tags == [1, 2, 3], "delivery tags start at 1 on a new channel and count up"
    assert channel.basic_get(queue) == (None, None, None)


def test_nack_requeue_redelivers_and_reject_drops(channel):
    queue = unique("nack")
    channel.queue_declare(queue)
    channel.basic_publish("", queue, b"retry me")

    first, _, body = channel.basic_get(queue)
    assert body == b"retry me" and first.redelivered is False
    channel.basic_nack(first.delivery_tag, requeue=True)

    second, _, body = channel.basic_get(queue)
    assert body == b"retry me"
    assert second.redelivered is True
    assert second.delivery_tag != first.delivery_tag
    channel.basic_reject(second.delivery_tag, requeue=False)

    assert channel.basic_get(queue) == (None, None, None)
    assert queue_depth(channel, queue) == 0


def test_nack_multiple_requeues_in_original_order(channel):
    queue = unique("nack-multiple")
    channel.queue_declare(queue)
    bodies = [b"a", b"b", b"c"]
    for body in bodies:
        channel.basic_publish("", queue, body)
    tags = [channel.basic_get(queue)[0].delivery_tag for _ in bodies]

    channel.basic_nack(tags[-1], multiple=True, requeue=True)

    again = [channel.basic_get(queue, auto_ack=True) for _ in bodies]
    assert [body for _, _, body in again] == bodies
    assert all(method.redelivered for method, _, _ in again)


def test_basic_recover_requeue(channel):
    queue = unique("recover")
    channel.queue_declare(queue)
    for body in (b"first", b"second"):
        channel.basic_publish("", queue, body)
    for _ in range(2):
        assert channel.basic_get(queue)[0] is not None  # left unacked
    assert queue_depth(channel, queue) == 0

    channel.basic_recover(requeue=True)

    again = [channel.basic_get(queue, auto_ack=True) for _ in range(2)]
    assert [body for _, _, body in again] == [b"first", b"second"]
    assert all(method.redelivered for method, _, _ in again)


# -- mandatory and basic.return ------------------------------------------------------------


def test_mandatory_unroutable_is_returned(connection, channel):
    returned = []
    channel.add_on_return_callback(
        lambda _channel, method, properties, body: returned.append((method, properties, body))
    )
    queue = unique("routable")
    channel.queue_declare(queue)
    unbound_exchange = unique("unbound")
    channel.exchange_declare(unbound_exchange, exchange_type="direct")

    # Returns come back in publish order, so the routable message cannot be returned later
    # than the two unroutable ones that follow it.
    channel.basic_publish("", queue, b"routed", mandatory=True)
    channel.basic_publish(
        "", unique("missing"), b"bounce", pika.BasicProperties(message_id="m-1"), mandatory=True
    )
    channel.basic_publish(unbound_exchange, "key", b"bounce again", mandatory=True)
    pump_until(lambda: len(returned) >= 2, [connection], "two basic.return")

    assert [body for _, _, body in returned] == [b"bounce", b"bounce again"]
    first, properties, _ = returned[0]
    assert first.reply_code == reply.NO_ROUTE
    assert first.reply_text == "NO_ROUTE"
    assert first.exchange == ""
    assert properties.message_id == "m-1"
    second = returned[1][0]
    assert (second.exchange, second.routing_key) == (unbound_exchange, "key")
    assert channel.basic_get(queue, auto_ack=True)[2] == b"routed"


# -- exclusive and auto-delete queues ------------------------------------------------------


def test_exclusive_queue_is_locked_to_its_connection(connect):
    owner = connect().channel()
    queue = unique("exclusive")
    owner.queue_declare(queue, exclusive=True)
    intruder = connect()

    attempts = {
        "declare": lambda channel: channel.queue_declare(queue, exclusive=True),
        "passive declare": lambda channel: channel.queue_declare(queue, passive=True),
        "consume": lambda channel: channel.basic_consume(queue, lambda *_: None),
        "get": lambda channel: channel.basic_get(queue),
    }
    for name, attempt in attempts.items():
        with pytest.raises(ChannelClosedByBroker) as caught:
            attempt(intruder.channel())
        assert caught.value.reply_code == reply.RESOURCE_LOCKED, f"{name}: {caught.value!r}"

    owner.basic_publish("", queue, b"still mine")
    assert owner.basic_get(queue, auto_ack=True)[2] == b"still mine"


def test_exclusive_queue_deleted_with_its_connection(connect):
    owner_connection = connect()
    queue = unique("exclusive")
    owner_connection.channel().queue_declare(queue, exclusive=True)
    owner_connection.close()
    wait_until_queue_gone(connect(), queue)


def test_auto_delete_queue_goes_after_last_consumer_cancels(connect):
    channel = connect().channel()
    probe = connect()
    queue = unique("auto-delete")
    channel.queue_declare(queue, auto_delete=True)
    assert probe.channel().queue_declare(queue, passive=True).method.queue == queue, (
        "an auto-delete queue that never had a consumer stays"
    )

    first = channel.basic_consume(queue, lambda *_: None)
    second = channel.basic_consume(queue, lambda *_: None)
    assert probe.channel().queue_declare(queue, passive=True).method.consumer_count == 2
    channel.basic_cancel(first)
    assert probe.channel().queue_declare(queue, passive=True).method.consumer_count == 1
    channel.basic_cancel(second)
    wait_until_queue_gone(probe, queue)


# -- queue management ----------------------------------------------------------------------


def test_queue_purge_returns_count(channel):
    queue = unique("purge")
    channel.queue_declare(queue)
    for number in range(5):
        channel.basic_publish("", queue, str(number).encode())
    assert channel.queue_purge(queue).method.message_count == 5
    assert channel.basic_get(queue) == (None, None, None)
    assert channel.queue_purge(queue).method.message_count == 0


def test_queue_delete_returns_count(connection, channel):
    queue = unique("delete")
    channel.queue_declare(queue)
    for number in range(3):
        channel.basic_publish("", queue, str(number).encode())
    assert channel.queue_delete(queue).method.message_count == 3
    with pytest.raises(ChannelClosedByBroker) as caught:
        connection.channel().queue_declare(queue, passive=True)
    reply.assert_reply(caught.value, reply.NOT_FOUND)


def test_redeclare_identical_queue_is_a_no_op(channel):
    queue = unique("redeclare")
    channel.queue_declare(queue, durable=True, arguments={"x-max-length": 10})
    channel.confirm_delivery()  # so the message is in the queue before the redeclare counts
    channel.basic_publish("", queue, b"kept")
    again = channel.queue_declare(queue, durable=True, arguments={"x-max-length": 10})
    assert again.method.queue == queue
    assert again.method.message_count == 1


@pytest.mark.parametrize(
    "first, second",
    [
        (dict(durable=True), dict(durable=False)),
        (dict(durable=False), dict(durable=True)),
        (dict(auto_delete=True), dict(auto_delete=False)),
    ],
    ids=["durable-then-transient", "transient-then-durable", "auto-delete-then-not"],
)
def test_redeclare_with_different_flags_fails(connection, first, second):
    queue = unique("equivalence")
    connection.channel().queue_declare(queue, **first)
    with pytest.raises(ChannelClosedByBroker) as caught:
        connection.channel().queue_declare(queue, **second)
    reply.assert_reply(caught.value, reply.PRECONDITION_FAILED)


def test_passive_declare_of_missing_queue_is_404(channel):
    with pytest.raises(ChannelClosedByBroker) as caught:
        channel.queue_declare(unique("missing"), passive=True)
    reply.assert_reply(caught.value, reply.NOT_FOUND)
    assert channel.is_closed


# -- message content -----------------------------------------------------------------------

HEADERS = {
    "string": "héllo wörld",
    "int": 42,
    "negative": -7,
    "int64": 2**40,
    "true": True,
    "false": False,
    "bytes": b"\x00\x01\xfe\xff",
    "decimal": decimal.Decimal("3.14"),
    "timestamp": datetime(2024, 1, 2, 3, 4, 5, tzinfo=timezone.utc),
    "void": None,
    "nested": {"a": 1, "b": "two", "deeper": {"flag": True, "list": [1, 2]}},
    "array": [1, "two", True, {"x": 1}, [b"raw", None]],
    "empty table": {},
    "empty array": [],
}

PROPERTIES = dict(
    content_type="application/json",
    content_encoding="utf-8",
    headers=HEADERS,
    delivery_mode=2,
    priority=5,
    correlation_id="correlation-1",
    reply_to="reply.queue",
    message_id="message-1",
    timestamp=1_700_000_000,
    type="order.created",
    user_id="guest",  # RabbitMQ accepts user_id only when it names the authenticated user
    app_id="interop-tests",
)


def assert_properties_round_trip(received: pika.BasicProperties) -> None:
    for name, sent in PROPERTIES.items():
        assert getattr(received, name) == sent, f"property {name}"
    assert received.expiration is None
    assert received.cluster_id is None


def test_message_properties_round_trip_via_get(channel):
    queue = unique("properties")
    channel.queue_declare(queue)
    channel.basic_publish("", queue, b"{}", pika.BasicProperties(**PROPERTIES))
    method, properties, body = channel.basic_get(queue, auto_ack=True)
    assert body == b"{}"
    assert_properties_round_trip(properties)


def test_message_properties_round_trip_via_consume(channel):
    queue = unique("properties")
    channel.queue_declare(queue)
    inbox = Inbox(channel, queue)
    channel.basic_publish("", queue, b"{}", pika.BasicProperties(**PROPERTIES))
    [message] = inbox.wait_for(1)
    assert_properties_round_trip(message.properties)


def test_message_without_properties_has_none(channel):
    queue = unique("bare")
    channel.queue_declare(queue)
    channel.basic_publish("", queue, b"bare")
    _, properties, _ = channel.basic_get(queue, auto_ack=True)
    assert properties.headers is None
    assert properties.content_type is None
    assert properties.delivery_mode is None


# Body sizes around the frame boundary: (multiples of the largest body frame, extra bytes).
@pytest.mark.parametrize(
    "frames, extra",
    [(0, 0), (0, 1), (1, -1), (1, 0), (1, 1), (3, 7)],
    ids=["empty", "one-byte", "frame-minus-one", "one-full-frame", "frame-plus-one", "three-frames"],
)
def test_body_sizes_around_frame_max(connection, channel, frames, extra):
    body_frame_bytes = connection._impl.params.frame_max - 8  # 7-byte header + frame-end
    size = frames * body_frame_bytes + extra
    body = bytes(index % 251 for index in range(size))
    queue = unique("frames")
    channel.queue_declare(queue)
    inbox = Inbox(channel, queue)
    channel.basic_publish("", queue, body)
    [message] = inbox.wait_for(1)
    assert len(message.body) == size
    assert message.body == body


def test_one_mebibyte_body_round_trips(channel):
    body = os.urandom(1 << 20)
    queue = unique("large")
    channel.queue_declare(queue)
    channel.basic_publish("", queue, body)
    _, _, received = channel.basic_get(queue, auto_ack=True)
    assert len(received) == len(body)
    assert received == body


# -- exchanges and bindings ----------------------------------------------------------------


def test_headers_exchange_all_and_any(channel):
    exchange = unique("headers")
    channel.exchange_declare(exchange, exchange_type="headers")
    match = {"format": "pdf", "type": "report"}
    queues = {}
    for mode in ("all", "any", "default"):
        queue = channel.queue_declare("", exclusive=True).method.queue
        arguments = dict(match) if mode == "default" else {"x-match": mode, **match}
        channel.queue_bind(queue, exchange, arguments=arguments)
        queues[mode] = queue

    messages = {
        b"both": {"format": "pdf", "type": "report"},
        b"both plus extra": {"format": "pdf", "type": "report", "size": 3},
        b"format only": {"format": "pdf", "type": "log"},
        b"type only": {"type": "report"},
        b"neither": {"format": "zip"},
        b"no headers": None,
    }
    for body, headers in messages.items():
        channel.basic_publish(exchange, "ignored", body, pika.BasicProperties(headers=headers))
    sentinel = b"sentinel"
    for queue in queues.values():
        channel.basic_publish("", queue, sentinel)

    assert get_until_sentinel(channel, queues["all"], sentinel) == [b"both", b"both plus extra"]
    assert get_until_sentinel(channel, queues["default"], sentinel) == [
        b"both", b"both plus extra"
    ], "x-match defaults to all"
    assert get_until_sentinel(channel, queues["any"], sentinel) == [
        b"both", b"both plus extra", b"format only", b"type only"
    ]


def test_default_exchange_routes_by_queue_name(channel):
    queue = unique("default")
    channel.queue_declare(queue)
    channel.basic_publish("", queue, b"by name")
    # No queue by that name: silently dropped, and the channel stays open.
    channel.basic_publish("", unique("nobody"), b"dropped")
    assert channel.basic_get(queue, auto_ack=True)[2] == b"by name"
    assert channel.is_open


def test_exchange_declare_and_delete(connection, channel):
    exchange = unique("exchange")
    queue = unique("bound")
    channel.exchange_declare(exchange, exchange_type="direct")
    assert channel.exchange_declare(exchange, exchange_type="direct", passive=True)
    channel.queue_declare(queue)
    channel.queue_bind(queue, exchange, "key")
    channel.basic_publish(exchange, "key", b"while bound")

    channel.exchange_delete(exchange)
    with pytest.raises(ChannelClosedByBroker) as caught:
        connection.channel().exchange_declare(exchange, passive=True)
    reply.assert_reply(caught.value, reply.NOT_FOUND)

    # Deleting the exchange removed its bindings: a new one by the same name routes nowhere.
    channel.exchange_declare(exchange, exchange_type="direct")
    channel.basic_publish(exchange, "key", b"after delete")
    channel.basic_publish("", queue, b"sentinel")
    assert get_until_sentinel(channel, queue, b"sentinel") == [b"while bound"]


def test_unbind_stops_routing(channel):
    exchange = unique("unbind")
    queue = unique("unbind")
    channel.exchange_declare(exchange, exchange_type="direct")
    channel.queue_declare(queue)
    channel.queue_bind(queue, exchange, "key")
    channel.basic_publish(exchange, "key", b"bound")
    channel.queue_unbind(queue, exchange, "key")
    channel.basic_publish(exchange, "key", b"unbound")
    channel.basic_publish("", queue, b"sentinel")
    assert get_until_sentinel(channel, queue, b"sentinel") == [b"bound"]


# -- consumers -----------------------------------------------------------------------------


def test_consumer_cancel_stops_deliveries(channel):
    queue = unique("cancel")
    channel.queue_declare(queue)
    inbox = Inbox(channel, queue)
    channel.basic_publish("", queue, b"before")
    inbox.wait_for(1)
    assert channel.queue_declare(queue, passive=True).method.consumer_count == 1

    inbox.cancel()
    channel.basic_publish("", queue, b"after")
    wait_for_depth(channel, queue, 1)  # "after" waits in the queue instead of being delivered
    assert channel.queue_declare(queue, passive=True).method.consumer_count == 0
    assert inbox.bodies == [b"before"]


def test_queue_delete_cancels_consumer(connection, channel):
    """RabbitMQ's consumer_cancel_notify: deleting a queue sends basic.cancel to its consumers."""
    queue = unique("cancel-notify")
    channel.queue_declare(queue)
    cancelled = []
    channel.add_on_cancel_callback(lambda frame: cancelled.append(frame.method.consumer_tag))
    inbox = Inbox(channel, queue)
    connection.channel().queue_delete(queue)
    pump_until(lambda: cancelled, [connection], "basic.cancel from the broker")
    assert cancelled == [inbox.consumer_tag]


@pytest.mark.parametrize("closing", ["channel", "connection"])
def test_unacked_messages_requeued_on_close(connect, closing):
    queue = unique("requeue")
    producer = connect().channel()
    producer.queue_declare(queue)
    holder = Inbox(connect().channel(), queue, auto_ack=False)
    producer.basic_publish("", queue, b"held")
    holder.wait_for(1)

    taker = Inbox(connect().channel(), queue, auto_ack=False)
    if closing == "channel":
        holder.channel.close()
    else:
        holder.channel.connection.close()
    [message] = taker.wait_for(1)
    assert message.body == b"held"
    assert message.method.redelivered is True


def test_qos_per_consumer(connect):
    """global_qos=False: the prefetch count applies to each consumer on the channel."""
    producer = connect().channel()
    channel = connect().channel()
    channel.basic_qos(prefetch_count=2, global_qos=False)
    inboxes = []
    for _ in range(2):
        queue = unique("qos")
        producer.queue_declare(queue)
        for number in range(5):
            producer.basic_publish("", queue, str(number).encode())
        inboxes.append(Inbox(channel, queue, auto_ack=False))

    pump_until(
        lambda: all(len(inbox.messages) >= 2 for inbox in inboxes),
        [channel.connection], "two deliveries per consumer",
    )
    pump_for([channel.connection], QUIET_WINDOW_S)
    assert [len(inbox.messages) for inbox in inboxes] == [2, 2]


def test_qos_global_is_shared_by_the_channel(connect):
    """global_qos=True: one prefetch count shared by all consumers on the channel."""
    producer = connect().channel()
    channel = connect().channel()
    channel.basic_qos(prefetch_count=3, global_qos=True)
    inboxes = []
    for _ in range(2):
        queue = unique("qos-global")
        producer.queue_declare(queue)
        for number in range(5):
            producer.basic_publish("", queue, str(number).encode())
        inboxes.append(Inbox(channel, queue, auto_ack=False))

    def delivered() -> int:
        return sum(len(inbox.messages) for inbox in inboxes)

    pump_until(lambda: delivered() >= 3, [channel.connection], "three deliveries")
    pump_for([channel.connection], QUIET_WINDOW_S)
    assert delivered() == 3

    some = next(inbox for inbox in inboxes if inbox.messages)
    channel.basic_ack(some.messages[0].method.delivery_tag)
    pump_until(lambda: delivered() >= 4, [channel.connection], "a fourth delivery after an ack")
    pump_for([channel.connection], QUIET_WINDOW_S)
    assert delivered() == 4
