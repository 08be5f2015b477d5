"""Every reply code RabbitMQ uses, through pika where a client can provoke it and through
hand-made frames where only a broken client could.

Soft errors (403-406) close the channel; hard errors (5xx, 530) close the connection.
"""

from __future__ import annotations

import struct

import pika
import pytest
from pika.exceptions import (
    AuthenticationError,
    ChannelClosedByBroker,
    ConnectionClosedByBroker,
    ProbableAccessDeniedError,
    ProbableAuthenticationError,
)

import reply
import wire
from inbox import Inbox, unique


def assert_usable(connection: pika.BlockingConnection) -> None:
    """A full round trip on a new channel of `connection`."""
    channel = connection.channel()
    queue = channel.queue_declare("", exclusive=True).method.queue
    channel.basic_publish("", queue, b"still working")
    assert channel.basic_get(queue, auto_ack=True)[2] == b"still working"


# -- 404 NOT_FOUND -------------------------------------------------------------------------


def test_consume_from_missing_queue_is_404(connection, channel):
    with pytest.raises(ChannelClosedByBroker) as caught:
        channel.basic_consume(unique("missing"), lambda *_: None)
    reply.assert_reply(caught.value, reply.NOT_FOUND)
    assert connection.is_open, "a soft error closes only the channel"


def test_get_from_missing_queue_is_404(channel):
    with pytest.raises(ChannelClosedByBroker) as caught:
        channel.basic_get(unique("missing"))
    reply.assert_reply(caught.value, reply.NOT_FOUND)


def test_publish_to_missing_exchange_closes_channel_404(connection, channel):
    with pytest.raises(ChannelClosedByBroker) as caught:
        # basic.publish has no reply; the channel.close shows up on the next synchronous call.
        channel.basic_publish(unique("missing"), "key", b"lost")
        channel.queue_declare("", exclusive=True)
    reply.assert_reply(caught.value, reply.NOT_FOUND)
    assert channel.is_closed
    assert_usable(connection)


def test_passive_declare_of_missing_exchange_is_404(channel):
    with pytest.raises(ChannelClosedByBroker) as caught:
        channel.exchange_declare(unique("missing"), passive=True)
    reply.assert_reply(caught.value, reply.NOT_FOUND)


def test_bind_to_missing_exchange_is_404(channel):
    queue = channel.queue_declare("", exclusive=True).method.queue
    with pytest.raises(ChannelClosedByBroker) as caught:
        channel.queue_bind(queue, unique("missing"), "key")
    reply.assert_reply(caught.value, reply.NOT_FOUND)


def test_bind_missing_queue_is_404(channel):
    with pytest.raises(ChannelClosedByBroker) as caught:
        channel.queue_bind(unique("missing"), "amq.direct", "key")
    reply.assert_reply(caught.value, reply.NOT_FOUND)


# -- 405 RESOURCE_LOCKED -------------------------------------------------------------------


def test_exclusive_queue_from_another_connection_is_405(connect):
    queue = unique("exclusive")
    connect().channel().queue_declare(queue, exclusive=True)
    other = connect()
    with pytest.raises(ChannelClosedByBroker) as caught:
        other.channel().basic_consume(queue, lambda *_: None)
    reply.assert_reply(caught.value, reply.RESOURCE_LOCKED)
    assert other.is_open


# -- 406 PRECONDITION_FAILED ---------------------------------------------------------------


@pytest.mark.parametrize(
    "first, second",
    [
        (dict(durable=True), dict(durable=False)),
        (dict(arguments={"x-max-length": 10}), dict(arguments={"x-max-length": 20})),
        (dict(arguments={"x-max-length": 10}), dict()),
        (dict(arguments={"x-message-ttl": 1000}), dict(arguments={"x-message-ttl": 2000})),
    ],
    ids=["durable", "max-length-changed", "max-length-dropped", "message-ttl-changed"],
)
def test_queue_redeclare_inequivalent_is_406(connection, first, second):
    queue = unique("inequivalent")
    connection.channel().queue_declare(queue, **first)
    with pytest.raises(ChannelClosedByBroker) as caught:
        connection.channel().queue_declare(queue, **second)
    reply.assert_reply(caught.value, reply.PRECONDITION_FAILED)
    assert "inequivalent arg" in caught.value.reply_text


@pytest.mark.parametrize(
    "first, second",
    [
        (dict(exchange_type="direct"), dict(exchange_type="fanout")),
        (dict(exchange_type="topic", durable=True), dict(exchange_type="topic", durable=False)),
    ],
    ids=["type", "durable"],
)
def test_exchange_redeclare_inequivalent_is_406(connection, first, second):
    exchange = unique("inequivalent")
    connection.channel().exchange_declare(exchange, **first)
    with pytest.raises(ChannelClosedByBroker) as caught:
        connection.channel().exchange_declare(exchange, **second)
    reply.assert_reply(caught.value, reply.PRECONDITION_FAILED)


@pytest.mark.parametrize("settle", ["ack", "nack", "reject"])
def test_settling_unknown_delivery_tag_is_406(channel, settle):
    with pytest.raises(ChannelClosedByBroker) as caught:
        getattr(channel, f"basic_{settle}")(42)
        channel.queue_declare("", exclusive=True)  # basic.ack has no reply
    reply.assert_reply(caught.value, reply.PRECONDITION_FAILED)
    assert "unknown delivery tag" in caught.value.reply_text


def test_double_ack_is_406(channel):
    queue = channel.queue_declare("", exclusive=True).method.queue
    channel.basic_publish("", queue, b"once")
    method, _, _ = channel.basic_get(queue)
    channel.basic_ack(method.delivery_tag)
    with pytest.raises(ChannelClosedByBroker) as caught:
        channel.basic_ack(method.delivery_tag)
        channel.queue_declare("", exclusive=True)
    reply.assert_reply(caught.value, reply.PRECONDITION_FAILED)
    assert "unknown delivery tag" in caught.value.reply_text


def test_ack_of_auto_acked_delivery_is_406(channel):
    queue = channel.queue_declare("", exclusive=True).method.queue
    channel.basic_publish("", queue, b"auto")
    method, _, _ = channel.basic_get(queue, auto_ack=True)
    with pytest.raises(ChannelClosedByBroker) as caught:
        channel.basic_ack(method.delivery_tag)
        channel.queue_declare("", exclusive=True)
    reply.assert_reply(caught.value, reply.PRECONDITION_FAILED)


def test_delete_queue_if_unused_while_consumed_is_406(connection, channel):
    queue = channel.queue_declare("", exclusive=True).method.queue
    Inbox(channel, queue)
    with pytest.raises(ChannelClosedByBroker) as caught:
        connection.channel().queue_delete(queue, if_unused=True)
    reply.assert_reply(caught.value, reply.PRECONDITION_FAILED)
    assert channel.queue_declare(queue, passive=True).method.consumer_count == 1


def test_delete_queue_if_empty_with_messages_is_406(connection, channel):
    queue = channel.queue_declare("", exclusive=True).method.queue
    channel.basic_publish("", queue, b"not empty")
    with pytest.raises(ChannelClosedByBroker) as caught:
        connection.channel().queue_delete(queue, if_empty=True)
    reply.assert_reply(caught.value, reply.PRECONDITION_FAILED)
    assert channel.queue_declare(queue, passive=True).method.message_count == 1


def test_delete_exchange_if_unused_while_bound_is_406(connection, channel):
    exchange = unique("bound")
    channel.exchange_declare(exchange, exchange_type="fanout")
    queue = channel.queue_declare("", exclusive=True).method.queue
    channel.queue_bind(queue, exchange)
    with pytest.raises(ChannelClosedByBroker) as caught:
        connection.channel().exchange_delete(exchange, if_unused=True)
    reply.assert_reply(caught.value, reply.PRECONDITION_FAILED)
    assert channel.exchange_declare(exchange, passive=True)


# -- 403 ACCESS_REFUSED --------------------------------------------------------------------


def test_declare_exchange_with_reserved_prefix_is_403(connection, channel):
    with pytest.raises(ChannelClosedByBroker) as caught:
        channel.exchange_declare("amq.custom", exchange_type="direct")
    reply.assert_reply(caught.value, reply.ACCESS_REFUSED)
    assert connection.is_open


def test_declare_queue_with_reserved_prefix_is_403(channel):
    with pytest.raises(ChannelClosedByBroker) as caught:
        channel.queue_declare("amq.custom")
    reply.assert_reply(caught.value, reply.ACCESS_REFUSED)


def test_redeclare_predeclared_exchange_is_allowed(channel):
    """The amq.* check applies only to new exchanges; an equivalent redeclare is fine."""
    channel.exchange_declare("amq.direct", exchange_type="direct", durable=True)
    channel.exchange_declare("amq.topic", passive=True)


def test_bind_to_default_exchange_is_403(channel):
    queue = channel.queue_declare("", exclusive=True).method.queue
    with pytest.raises(ChannelClosedByBroker) as caught:
        channel.queue_bind(queue, "", "key")
    reply.assert_reply(caught.value, reply.ACCESS_REFUSED)


def test_wrong_password_is_refused(broker):
    params = broker.params(credentials=pika.PlainCredentials("guest", "wrong"))
    with pytest.raises((ProbableAuthenticationError, AuthenticationError)) as caught:
        pika.BlockingConnection(params)
    # pika advertises authentication_failure_close, so RabbitMQ explains with a 403 close.
    assert reply.reply_code_of(caught.value) == reply.ACCESS_REFUSED, repr(caught.value)


# -- connection-level errors ---------------------------------------------------------------


def test_unknown_vhost_is_530(broker):
    with pytest.raises((ProbableAccessDeniedError, ConnectionClosedByBroker)) as caught:
        pika.BlockingConnection(broker.params(virtual_host="/nope"))
    assert reply.reply_code_of(caught.value) == reply.NOT_ALLOWED, repr(caught.value)


def test_unknown_exchange_type_is_503(connection, channel):
    with pytest.raises(ConnectionClosedByBroker) as caught:
        channel.exchange_declare(unique("weird"), exchange_type="nonsense")
    reply.assert_reply(caught.value, reply.COMMAND_INVALID)
    assert connection.is_closed


def test_prefetch_size_is_540(connection, channel):
    with pytest.raises(ConnectionClosedByBroker) as caught:
        channel.basic_qos(prefetch_size=1, prefetch_count=0)
    reply.assert_reply(caught.value, reply.NOT_IMPLEMENTED)
    assert connection.is_closed


def test_connection_error_leaves_other_connections_working(connect):
    bystander = connect()
    bystander_channel = bystander.channel()
    queue = bystander_channel.queue_declare("", exclusive=True).method.queue
    bystander_channel.basic_publish("", queue, b"before")

    victim = connect().channel()
    with pytest.raises(ConnectionClosedByBroker):
        victim.exchange_declare(unique("weird"), exchange_type="nonsense")

    bystander_channel.basic_publish("", queue, b"after")
    assert bystander_channel.basic_get(queue, auto_ack=True)[2] == b"before"
    assert bystander_channel.basic_get(queue, auto_ack=True)[2] == b"after"
    assert_usable(connect())


def test_channel_error_leaves_sibling_channels_working(connection):
    sibling = connection.channel()
    queue = sibling.queue_declare("", exclusive=True).method.queue
    failing = connection.channel()
    with pytest.raises(ChannelClosedByBroker):
        failing.queue_declare(unique("missing"), passive=True)
    sibling.basic_publish("", queue, b"unaffected")
    assert sibling.basic_get(queue, auto_ack=True)[2] == b"unaffected"
    assert_usable(connection)


# -- raw frames ----------------------------------------------------------------------------


@pytest.fixture
def raw(broker):
    with wire.RawConnection(broker.host, broker.port) as connection:
        yield connection


def assert_close(reason: wire.CloseReason, *codes: int) -> None:
    assert reason.reply_code in codes, f"expected {codes}, got {reason}"
    name = reply.REPLY_NAMES[reason.reply_code]
    assert reason.reply_text.startswith(name), f"{reason} should start with {name!r}"


def assert_closed_after_close_ok(raw: wire.RawConnection) -> None:
    """After our close-ok the server sends nothing more and closes the socket."""
    assert raw.read_until_eof() == b""


def test_raw_handshake_works(raw):
    """The helper itself: if this fails, the other raw tests say nothing about the broker."""
    tune = raw.handshake()
    assert tune.frame_max == 0 or tune.frame_max >= 4096, "FRAME-MIN-SIZE is 4096"
    raw.open_channel(1)
    raw.send(wire.method_frame(1, wire.QUEUE_DECLARE, wire.queue_declare_arguments(b"")))
    declare_ok = raw.read_method(wire.QUEUE_DECLARE_OK)
    name_length = declare_ok.arguments[0]
    assert declare_ok.arguments[1:1 + name_length].startswith(b"amq.gen-")


def test_raw_bad_frame_end_is_501(raw):
    raw.handshake()
    payload = struct.pack(">HH", *wire.CHANNEL_OPEN) + wire.shortstr(b"")
    raw.send(wire.frame(wire.FRAME_METHOD, 1, payload, end=0x00))
    assert_close(raw.expect_connection_close(), reply.FRAME_ERROR)
    assert_closed_after_close_ok(raw)


def test_raw_unknown_frame_type_is_501(raw):
    raw.handshake()
    raw.send(wire.frame(9, 0, b"what is this"))
    assert_close(raw.expect_connection_close(), reply.FRAME_ERROR)


def test_raw_method_on_unopened_channel_is_504(raw):
    raw.handshake()
    raw.send(wire.method_frame(3, wire.QUEUE_DECLARE, wire.queue_declare_arguments(b"")))
    assert_close(raw.expect_connection_close(), reply.CHANNEL_ERROR)
    assert_closed_after_close_ok(raw)


def test_raw_second_channel_open_is_504(raw):
    raw.handshake()
    raw.open_channel(1)
    raw.send(wire.method_frame(1, wire.CHANNEL_OPEN, wire.shortstr(b"")))
    assert_close(raw.expect_connection_close(), reply.CHANNEL_ERROR)


@pytest.mark.parametrize(
    "frame_type, payload",
    [
        (wire.FRAME_BODY, b"orphan body"),
        # content header: class basic, weight 0, body size 5, no properties
        (wire.FRAME_HEADER, struct.pack(">HHQH", 60, 0, 5, 0)),
    ],
    ids=["body", "header"],
)
def test_raw_content_without_publish_is_505(raw, frame_type, payload):
    raw.handshake()
    raw.open_channel(1)
    raw.send(wire.frame(frame_type, 1, payload))
    assert_close(raw.expect_connection_close(), reply.UNEXPECTED_FRAME)
    assert_closed_after_close_ok(raw)


def test_raw_heartbeat_on_a_channel_is_rejected(raw):
    """Heartbeats belong on channel 0. AMQP 0-9-1 section 4.2.7 says 501 FRAME_ERROR;
    RabbitMQ 3.10 answers 505 UNEXPECTED_FRAME. Either is accepted."""
    raw.handshake()
    raw.open_channel(1)
    raw.send(wire.frame(wire.FRAME_HEARTBEAT, 1, b""))
    assert_close(raw.expect_connection_close(), reply.FRAME_ERROR, reply.UNEXPECTED_FRAME)


def test_raw_method_instead_of_body_is_505(raw):
    raw.handshake()
    raw.open_channel(1)
    publish = struct.pack(">H", 0) + wire.shortstr(b"") + wire.shortstr(b"key") + b"\x00"
    raw.send(wire.method_frame(1, wire.BASIC_PUBLISH, publish))
    raw.send(wire.frame(wire.FRAME_HEADER, 1, struct.pack(">HHQH", 60, 0, 5, 0)))
    raw.send(wire.method_frame(1, wire.QUEUE_DECLARE, wire.queue_declare_arguments(b"")))
    assert_close(raw.expect_connection_close(), reply.UNEXPECTED_FRAME)


def test_raw_truncated_method_is_rejected(raw):
    """queue.declare whose queue-name shortstr claims 200 bytes but the frame ends after 3.

    The brief for Warren asks for 502 SYNTAX_ERROR; RabbitMQ itself answers 501 FRAME_ERROR
    ("cannot decode"), from rabbit_misc:frame_error/2. Both are accepted; anything else, or
    no connection.close at all, fails."""
    raw.handshake()
    raw.open_channel(1)
    truncated = struct.pack(">H", 0) + bytes([200]) + b"abc"
    raw.send(wire.method_frame(1, wire.QUEUE_DECLARE, truncated))
    assert_close(raw.expect_connection_close(), reply.SYNTAX_ERROR, reply.FRAME_ERROR)


def test_raw_frame_larger_than_frame_max_is_501(raw):
    tune = raw.handshake()
    raw.open_channel(1)
    assert tune.frame_max > 0, "the server should propose a frame_max"
    # Well past frame_max, beyond RabbitMQ's one-byte tolerance for old clients.
    payload_bytes = tune.frame_max + 1024
    raw.send(struct.pack(">BHI", wire.FRAME_BODY, 1, payload_bytes))
    try:
        # RabbitMQ rejects on the header alone.
        reason = raw.expect_connection_close(timeout_s=1.0)
    except TimeoutError:
        # A broker that reads the whole frame first still has to reject it once it has.
        try:
            raw.send(bytes(payload_bytes) + bytes([wire.FRAME_END]))
        except OSError:
            pass
        reason = raw.expect_connection_close()
    assert_close(reason, reply.FRAME_ERROR)


@pytest.mark.parametrize(
    "header",
    [b"AMQP\x00\x00\x08\x00", b"AMQP\x00\x00\x0a\x00", b"GET / HT"],
    ids=["amqp-0-8-0", "amqp-0-10-0", "http"],
)
def test_raw_bad_protocol_header_gets_supported_version(raw, header):
    raw.send(header)
    assert raw.read_until_eof() == wire.PROTOCOL_HEADER


def test_raw_wrong_password_is_403_when_client_asks(raw):
    raw.send(wire.PROTOCOL_HEADER)
    raw.read_method(wire.CONNECTION_START)
    raw.start_ok(
        b"guest", b"wrong",
        {"capabilities": {"authentication_failure_close": True}},
    )
    assert_close(raw.expect_connection_close(), reply.ACCESS_REFUSED)


def test_raw_unknown_vhost_is_530(raw):
    raw.negotiate()
    raw.send_open(b"/nope")
    assert_close(raw.expect_connection_close(), reply.NOT_ALLOWED)


def test_malformed_frame_does_not_affect_other_connections(broker, connect):
    bystander = connect()
    channel = bystander.channel()
    queue = channel.queue_declare("", exclusive=True).method.queue
    channel.basic_publish("", queue, b"before")

    with wire.RawConnection(broker.host, broker.port) as raw:
        raw.handshake()
        payload = struct.pack(">HH", *wire.CHANNEL_OPEN) + wire.shortstr(b"")
        raw.send(wire.frame(wire.FRAME_METHOD, 1, payload, end=0x42))
        assert_close(raw.expect_connection_close(), reply.FRAME_ERROR)

    channel.basic_publish("", queue, b"after")
    assert channel.basic_get(queue, auto_ack=True)[2] == b"before"
    assert channel.basic_get(queue, auto_ack=True)[2] == b"after"
    assert_usable(connect())
