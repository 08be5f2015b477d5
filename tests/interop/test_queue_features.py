"""Queue arguments as pika sees them against RabbitMQ: message TTLs, queue expiry, length limits
with their overflow modes, and dead-lettering with the x-death history.

TTLs are short (50-300 ms). State is polled with a deadline. The one exception is making a
message *older than its TTL* before checking that the broker no longer hands it out: there the
passing time is the precondition itself, so the test pumps I/O for a fixed window
(`let_messages_age`) instead of waiting on any state.
"""

from __future__ import annotations

from datetime import datetime

import pika
import pytest
from pika.exceptions import ChannelClosedByBroker, NackError, UnroutableError

import reply
from inbox import Inbox, pump_for, pump_until, queue_depth, unique, wait_for_depth, wait_for_get

# Long enough that a message with this TTL outlives any test; for the "larger TTL" side.
LONG_TTL_MS = 60_000
# Margin past a TTL before a message counts as expired: the clock starts when the broker
# enqueues the message, a little after the client's publish returned.
AGE_MARGIN_S = 0.2
# Window for proving that something does not arrive where no sentinel can order it: a message
# cycling through a queue with a 50 ms TTL would show up several times within it.
QUIET_WINDOW_S = 0.3


def let_messages_age(channel, ttl_ms: int) -> None:
    """Pump I/O until messages published so far are older than `ttl_ms`."""
    pump_for([channel.connection], ttl_ms / 1000 + AGE_MARGIN_S)


def confirm_channel(connection):
    """A channel in confirm mode: basic_publish returns once the broker has the message, so a
    queue depth read afterwards counts it (see `queue_depth`)."""
    channel = connection.channel()
    channel.confirm_delivery()
    return channel


def dead_letter_target(channel) -> tuple[str, str]:
    """A fanout exchange to dead-letter into and a queue bound to it. Fanout, so a dead-lettered
    message arrives whatever its routing key, which the tests then check."""
    exchange = unique("dlx")
    queue = unique("dlq")
    channel.exchange_declare(exchange, exchange_type="fanout")
    channel.queue_declare(queue)
    channel.queue_bind(queue, exchange)
    return exchange, queue


def assert_one_death(
    properties: pika.BasicProperties,
    *,
    reason: str,
    queue: str,
    exchange: str,
    routing_keys: list[str],
    count: int = 1,
) -> dict:
    """The headers RabbitMQ adds when it dead-letters a message for the first time from
    `queue`: one x-death entry, and the x-first-death-* summary. Returns the entry."""
    headers = properties.headers or {}
    deaths = headers.get("x-death")
    assert isinstance(deaths, list) and len(deaths) == 1, f"x-death: {headers}"
    [death] = deaths
    assert death.get("count") == count, death
    assert death.get("reason") == reason, death
    assert death.get("queue") == queue, death
    assert death.get("exchange") == exchange, death
    assert death.get("routing-keys") == routing_keys, death
    # An AMQP timestamp, which pika decodes as a datetime.
    assert isinstance(death.get("time"), (datetime, int)), death
    assert headers.get("x-first-death-reason") == reason, headers
    assert headers.get("x-first-death-queue") == queue, headers
    assert headers.get("x-first-death-exchange") == exchange, headers
    return death


def wait_until_unroutable(channel, queue: str) -> None:
    """Publish mandatory probes to `queue` through the default exchange on the confirm-mode
    `channel` until one comes back unroutable, i.e. the queue is gone. Not a passive
    queue.declare: RabbitMQ counts a declare, passive or not, as use of the queue and restarts
    its x-expires timer, so polling that way would keep the queue alive for ever."""
    def gone() -> bool:
        try:
            channel.basic_publish("", queue, b"probe", mandatory=True)
        except UnroutableError:
            return True
        return False

    pump_until(gone, [channel.connection], f"queue {queue!r} to expire")


# -- per-queue message TTL (x-message-ttl) -------------------------------------------------


def test_queue_ttl_expires_messages(connection):
    channel = confirm_channel(connection)
    queue = unique("queue-ttl")
    channel.queue_declare(queue, arguments={"x-message-ttl": 100})
    for number in range(3):
        channel.basic_publish("", queue, str(number).encode())
    wait_for_depth(channel, queue, 0)
    assert channel.basic_get(queue) == (None, None, None)


@pytest.mark.parametrize("receive", ["basic.get", "basic.consume"])
def test_queue_ttl_expired_message_is_never_delivered(connection, receive):
    """Even if the broker has not yet got round to removing an expired message, it must not
    hand it out."""
    channel = confirm_channel(connection)
    queue = unique("queue-ttl")
    channel.queue_declare(queue, arguments={"x-message-ttl": 100})
    channel.basic_publish("", queue, b"stale")
    let_messages_age(channel, 100)

    if receive == "basic.get":
        assert channel.basic_get(queue, auto_ack=True) == (None, None, None)
    else:
        inbox = Inbox(channel, queue)
        channel.basic_publish("", queue, b"fresh")  # delivered at once to the waiting consumer
        inbox.wait_for(1)
        assert inbox.bodies == [b"fresh"]


def test_queue_ttl_consumer_receives_messages_before_they_expire(channel):
    queue = unique("queue-ttl")
    channel.queue_declare(queue, arguments={"x-message-ttl": 50})
    inbox = Inbox(channel, queue)
    bodies = [str(number).encode() for number in range(20)]
    for body in bodies:
        channel.basic_publish("", queue, body)
    inbox.wait_for(len(bodies))
    assert inbox.bodies == bodies


# -- per-message TTL (the expiration property) ---------------------------------------------


def test_message_ttl_expires_only_that_message(connection):
    channel = confirm_channel(connection)
    queue = unique("message-ttl")
    channel.queue_declare(queue)
    channel.basic_publish("", queue, b"short-lived", pika.BasicProperties(expiration="100"))
    channel.basic_publish("", queue, b"no ttl")
    wait_for_depth(channel, queue, 1)
    _, properties, body = channel.basic_get(queue, auto_ack=True)
    assert body == b"no ttl"
    assert properties.expiration is None


def test_message_ttl_expired_behind_the_head_is_never_delivered(connection):
    """RabbitMQ only removes expired messages from the head of the queue, so a short-lived
    message behind a long-lived one may still be counted; it is dropped when it reaches the
    head instead of being delivered."""
    channel = confirm_channel(connection)
    queue = unique("message-ttl")
    channel.queue_declare(queue)
    channel.basic_publish("", queue, b"long", pika.BasicProperties(expiration=str(LONG_TTL_MS)))
    channel.basic_publish("", queue, b"short", pika.BasicProperties(expiration="50"))
    let_messages_age(channel, 50)
    _, properties, body = channel.basic_get(queue, auto_ack=True)
    assert body == b"long"
    assert properties.expiration == str(LONG_TTL_MS), "the property is delivered as published"
    assert channel.basic_get(queue, auto_ack=True) == (None, None, None)


@pytest.mark.parametrize(
    "queue_ttl_ms, expiration",
    [(100, str(LONG_TTL_MS)), (LONG_TTL_MS, "100")],
    ids=["queue-ttl-smaller", "message-ttl-smaller"],
)
def test_smaller_of_queue_and_message_ttl_wins(connection, queue_ttl_ms, expiration):
    channel = confirm_channel(connection)
    queue = unique("ttl-min")
    channel.queue_declare(queue, arguments={"x-message-ttl": queue_ttl_ms})
    channel.basic_publish("", queue, b"expires", pika.BasicProperties(expiration=expiration))
    wait_for_depth(channel, queue, 0)
    assert channel.basic_get(queue) == (None, None, None)


@pytest.mark.parametrize("ttl", ["message", "queue"])
def test_ttl_zero_is_delivered_only_to_a_waiting_consumer(connection, ttl):
    """expiration "0" (or x-message-ttl 0): the message expires at once unless a consumer can
    take it on arrival."""
    channel = confirm_channel(connection)
    queue = unique("ttl-zero")
    if ttl == "queue":
        channel.queue_declare(queue, arguments={"x-message-ttl": 0})
        properties = None
    else:
        channel.queue_declare(queue)
        properties = pika.BasicProperties(expiration="0")
    channel.basic_publish("", queue, b"nobody waiting", properties)
    assert queue_depth(channel, queue) == 0
    assert channel.basic_get(queue) == (None, None, None)

    inbox = Inbox(channel, queue)
    channel.basic_publish("", queue, b"consumer waiting", properties)
    [message] = inbox.wait_for(1, timeout_s=2)  # delivered on arrival, or never
    assert message.body == b"consumer waiting"


@pytest.mark.parametrize("expiration", ["abc", "-5"])
def test_invalid_expiration_closes_channel_406(connection, expiration):
    channel = connection.channel()
    queue = unique("bad-expiration")
    channel.queue_declare(queue)
    with pytest.raises(ChannelClosedByBroker) as caught:
        # basic.publish has no reply; the channel.close shows up on the next synchronous call.
        channel.basic_publish("", queue, b"x", pika.BasicProperties(expiration=expiration))
        channel.queue_declare("", exclusive=True)
    reply.assert_reply(caught.value, reply.PRECONDITION_FAILED)
    assert connection.is_open, "a soft error closes only the channel"
    assert queue_depth(connection.channel(), queue) == 0, "the refused message was not queued"


# -- queue expiry (x-expires) --------------------------------------------------------------


def test_unused_queue_expires(connection):
    probe = confirm_channel(connection)
    queue = unique("expires")
    probe.queue_declare(queue, arguments={"x-expires": 200})
    wait_until_unroutable(probe, queue)
    with pytest.raises(ChannelClosedByBroker) as caught:
        connection.channel().queue_declare(queue, passive=True)
    reply.assert_reply(caught.value, reply.NOT_FOUND)


def test_queue_with_consumer_does_not_expire(connect):
    consumer_channel = connect().channel()
    queue = unique("expires")
    consumer_channel.queue_declare(queue, arguments={"x-expires": 100})
    inbox = Inbox(consumer_channel, queue)
    pump_for([consumer_channel.connection], 4 * 0.1)  # four times the expiry

    probe = confirm_channel(connect())
    assert probe.queue_declare(queue, passive=True).method.consumer_count == 1
    inbox.cancel()
    wait_until_unroutable(probe, queue)  # unused from now on, so it expires


def test_redeclare_restarts_expiry(connection):
    channel = confirm_channel(connection)
    queue = unique("expires")
    arguments = {"x-expires": 300}
    channel.queue_declare(queue, arguments=arguments)
    # A marker shows the queue was never deleted and silently recreated by a redeclare.
    channel.basic_publish("", queue, b"marker")
    for _ in range(12):  # 12 x 75 ms: three times the expiry, in steps of a quarter
        pump_for([connection], 0.075)
        assert channel.queue_declare(queue, arguments=arguments).method.message_count == 1
    wait_until_unroutable(channel, queue)


# -- argument validation -------------------------------------------------------------------


@pytest.mark.parametrize(
    "arguments",
    [
        {"x-message-ttl": -1},
        {"x-message-ttl": "100"},
        {"x-expires": 0},
        {"x-expires": -5},
        {"x-max-length": -1},
        {"x-max-length-bytes": "x"},
        {"x-overflow": "bogus"},
        {"x-queue-mode": "bogus"},
        {"x-dead-letter-routing-key": "key"},
    ],
    ids=[
        "message-ttl-negative", "message-ttl-string", "expires-zero", "expires-negative",
        "max-length-negative", "max-length-bytes-string", "overflow-bogus", "queue-mode-bogus",
        "dead-letter-routing-key-without-exchange",
    ],
)
def test_invalid_queue_argument_is_406(connection, arguments):
    queue = unique("bad-argument")
    with pytest.raises(ChannelClosedByBroker) as caught:
        connection.channel().queue_declare(queue, arguments=arguments)
    reply.assert_reply(caught.value, reply.PRECONDITION_FAILED)
    with pytest.raises(ChannelClosedByBroker) as caught:
        connection.channel().queue_declare(queue, passive=True)
    reply.assert_reply(caught.value, reply.NOT_FOUND)


def test_lazy_queue_mode_is_accepted(channel):
    queue = unique("lazy")
    arguments = {"x-queue-mode": "lazy"}
    channel.queue_declare(queue, arguments=arguments)
    channel.queue_declare(queue, arguments=arguments)  # an equivalent redeclare
    channel.basic_publish("", queue, b"lazy")
    assert channel.basic_get(queue, auto_ack=True)[2] == b"lazy"


# -- length limits -------------------------------------------------------------------------


@pytest.mark.parametrize(
    "arguments",
    [{"x-max-length": 2}, {"x-max-length-bytes": 25}],  # each body is 10 bytes
    ids=["max-length", "max-length-bytes"],
)
def test_length_limit_drops_oldest_by_default(connection, arguments):
    channel = confirm_channel(connection)
    queue = unique("max-length")
    channel.queue_declare(queue, arguments=arguments)
    for number in range(5):
        channel.basic_publish("", queue, f"message-{number}".encode())  # all confirmed
    assert queue_depth(channel, queue) == 2
    kept = [channel.basic_get(queue, auto_ack=True)[2] for _ in range(2)]
    assert kept == [b"message-3", b"message-4"]
    assert channel.basic_get(queue) == (None, None, None)


def test_overflow_reject_publish_nacks_when_full(connection):
    channel = confirm_channel(connection)
    queue = unique("reject-publish")
    channel.queue_declare(queue, arguments={"x-max-length": 2, "x-overflow": "reject-publish"})
    channel.basic_publish("", queue, b"first")
    channel.basic_publish("", queue, b"second")
    with pytest.raises(NackError):
        channel.basic_publish("", queue, b"refused")
    assert channel.is_open, "a nack does not close the channel"
    assert queue_depth(channel, queue) == 2

    assert channel.basic_get(queue, auto_ack=True)[2] == b"first"
    channel.basic_publish("", queue, b"third")  # there is room again: acked
    kept = [channel.basic_get(queue, auto_ack=True)[2] for _ in range(2)]
    assert kept == [b"second", b"third"]


def test_overflow_reject_publish_dlx_nacks_and_dead_letters(connection):
    channel = confirm_channel(connection)
    dead_letter_exchange, dead_letter_queue = dead_letter_target(channel)
    queue = unique("reject-publish-dlx")
    channel.queue_declare(queue, arguments={
        "x-max-length": 1,
        "x-overflow": "reject-publish-dlx",
        "x-dead-letter-exchange": dead_letter_exchange,
    })
    channel.basic_publish("", queue, b"kept")
    with pytest.raises(NackError):
        channel.basic_publish("", queue, b"refused")

    method, properties, body = wait_for_get(channel, dead_letter_queue)
    assert body == b"refused"
    assert (method.exchange, method.routing_key) == (dead_letter_exchange, queue)
    assert_one_death(properties, reason="maxlen", queue=queue, exchange="", routing_keys=[queue])
    assert channel.basic_get(queue, auto_ack=True)[2] == b"kept"
    assert channel.basic_get(queue) == (None, None, None)


# -- dead-lettering ------------------------------------------------------------------------


@pytest.mark.parametrize("settle", ["reject", "nack"])
@pytest.mark.parametrize(
    "dead_letter_routing_key", [None, "dead"], ids=["original-key", "dead-letter-key"]
)
@pytest.mark.parametrize("via", ["default-exchange", "named-exchange"])
def test_rejected_message_is_dead_lettered(channel, settle, dead_letter_routing_key, via):
    dead_letter_exchange, dead_letter_queue = dead_letter_target(channel)
    queue = unique("source")
    arguments = {"x-dead-letter-exchange": dead_letter_exchange}
    if dead_letter_routing_key is not None:
        arguments["x-dead-letter-routing-key"] = dead_letter_routing_key
    channel.queue_declare(queue, arguments=arguments)
    if via == "default-exchange":
        exchange, routing_key = "", queue
    else:
        exchange, routing_key = unique("origin"), "origin-key"
        channel.exchange_declare(exchange, exchange_type="direct")
        channel.queue_bind(queue, exchange, routing_key)
    sent = pika.BasicProperties(message_id="m-1", headers={"app": "kept"})
    channel.basic_publish(exchange, routing_key, b"unwanted", sent)

    # Requeued, it stays in the queue and is not dead-lettered.
    method = channel.basic_get(queue)[0]
    channel.basic_reject(method.delivery_tag, requeue=True)
    method = channel.basic_get(queue)[0]
    assert method.redelivered is True
    if settle == "reject":
        channel.basic_reject(method.delivery_tag, requeue=False)
    else:
        channel.basic_nack(method.delivery_tag, requeue=False)

    method, properties, body = wait_for_get(channel, dead_letter_queue)
    assert body == b"unwanted"
    assert method.exchange == dead_letter_exchange
    assert method.routing_key == (dead_letter_routing_key or routing_key)
    assert method.redelivered is False, "a dead-lettered message is a new message"
    assert properties.message_id == "m-1"
    assert properties.headers.get("app") == "kept"
    assert_one_death(
        properties, reason="rejected", queue=queue, exchange=exchange, routing_keys=[routing_key]
    )
    assert channel.basic_get(queue) == (None, None, None)


def test_nack_multiple_dead_letters_every_message(channel):
    dead_letter_exchange, dead_letter_queue = dead_letter_target(channel)
    queue = unique("source")
    channel.queue_declare(queue, arguments={"x-dead-letter-exchange": dead_letter_exchange})
    bodies = [b"a", b"b", b"c"]
    for body in bodies:
        channel.basic_publish("", queue, body)
    tags = [channel.basic_get(queue)[0].delivery_tag for _ in bodies]
    channel.basic_nack(tags[-1], multiple=True, requeue=False)
    received = [wait_for_get(channel, dead_letter_queue)[2] for _ in bodies]
    assert received == bodies


@pytest.mark.parametrize("ttl", ["queue", "message"])
def test_expired_message_is_dead_lettered(channel, ttl):
    dead_letter_exchange, dead_letter_queue = dead_letter_target(channel)
    queue = unique("source")
    arguments = {"x-dead-letter-exchange": dead_letter_exchange}
    if ttl == "queue":
        arguments["x-message-ttl"] = 50
        properties = pika.BasicProperties(message_id="m-1")
    else:
        properties = pika.BasicProperties(message_id="m-1", expiration="50")
    channel.queue_declare(queue, arguments=arguments)
    channel.basic_publish("", queue, b"too late", properties)

    method, properties, body = wait_for_get(channel, dead_letter_queue)
    assert body == b"too late"
    assert (method.exchange, method.routing_key) == (dead_letter_exchange, queue)
    assert properties.message_id == "m-1"
    assert properties.expiration is None, "the dead-lettered copy does not expire again"
    death = assert_one_death(
        properties, reason="expired", queue=queue, exchange="", routing_keys=[queue]
    )
    if ttl == "message":
        assert death.get("original-expiration") == "50", death
    else:
        assert "original-expiration" not in death, death


def test_max_length_drop_head_is_dead_lettered(channel):
    dead_letter_exchange, dead_letter_queue = dead_letter_target(channel)
    queue = unique("source")
    channel.queue_declare(queue, arguments={
        "x-max-length": 1, "x-dead-letter-exchange": dead_letter_exchange,
    })
    channel.basic_publish("", queue, b"oldest")
    channel.basic_publish("", queue, b"newest")

    method, properties, body = wait_for_get(channel, dead_letter_queue)
    assert body == b"oldest"
    assert (method.exchange, method.routing_key) == (dead_letter_exchange, queue)
    assert_one_death(properties, reason="maxlen", queue=queue, exchange="", routing_keys=[queue])
    assert channel.basic_get(queue, auto_ack=True)[2] == b"newest"


def test_rejected_twice_through_the_same_queue_counts_two(channel):
    """Dead letters of `queue` go back to `queue` itself. A rejection is a client's decision,
    so RabbitMQ does not treat the loop as a cycle; the x-death entry for (queue, rejected) is
    updated in place."""
    queue = unique("self-dead-letter")
    channel.queue_declare(queue, arguments={
        "x-dead-letter-exchange": "", "x-dead-letter-routing-key": queue,
    })
    channel.basic_publish("", queue, b"boomerang")
    method, properties, _ = channel.basic_get(queue)
    assert properties.headers is None

    for count in (1, 2):
        channel.basic_reject(method.delivery_tag, requeue=False)
        method, properties, body = wait_for_get(channel, queue, auto_ack=False)
        assert body == b"boomerang"
        assert (method.exchange, method.routing_key) == ("", queue)
        assert_one_death(
            properties, reason="rejected", queue=queue, exchange="", routing_keys=[queue],
            count=count,
        )
    channel.basic_ack(method.delivery_tag)


def test_deaths_are_listed_newest_first(channel):
    """Rejected from `first`, then expired in `second`: two x-death entries, newest first,
    while x-first-death-* keep naming the first."""
    dead_letter_exchange, dead_letter_queue = dead_letter_target(channel)
    first, second = unique("first"), unique("second")
    channel.queue_declare(second, arguments={
        "x-message-ttl": 50, "x-dead-letter-exchange": dead_letter_exchange,
    })
    channel.queue_declare(first, arguments={
        "x-dead-letter-exchange": "", "x-dead-letter-routing-key": second,
    })
    channel.basic_publish("", first, b"twice dead")
    channel.basic_reject(channel.basic_get(first)[0].delivery_tag, requeue=False)

    method, properties, _ = wait_for_get(channel, dead_letter_queue)
    assert (method.exchange, method.routing_key) == (dead_letter_exchange, second)
    deaths = properties.headers["x-death"]
    summary = [
        (death["queue"], death["reason"], death["exchange"], death["routing-keys"], death["count"])
        for death in deaths
    ]
    assert summary == [
        (second, "expired", "", [second], 1),
        (first, "rejected", "", [first], 1),
    ]
    assert properties.headers["x-first-death-queue"] == first
    assert properties.headers["x-first-death-reason"] == "rejected"
    assert properties.headers["x-first-death-exchange"] == ""


def test_expiry_dead_lettered_back_to_the_same_queue_is_dropped(connection, channel):
    """RabbitMQ's cycle detection: a message that expires from `queue` and is dead-lettered
    back to `queue` with no rejection in between is dropped at once, on its first expiry,
    rather than circling for ever. Another queue bound to the same dead-letter exchange still
    gets its one copy."""
    dead_letter_exchange = unique("dlx")
    channel.exchange_declare(dead_letter_exchange, exchange_type="fanout")
    queue = unique("cycle")
    witness = unique("witness")
    channel.queue_declare(queue, arguments={
        "x-message-ttl": 50, "x-dead-letter-exchange": dead_letter_exchange,
    })
    channel.queue_declare(witness)
    channel.queue_bind(queue, dead_letter_exchange)
    channel.queue_bind(witness, dead_letter_exchange)
    channel.basic_publish("", queue, b"round and round")

    _, properties, body = wait_for_get(channel, witness)
    assert body == b"round and round"
    assert_one_death(properties, reason="expired", queue=queue, exchange="", routing_keys=[queue])

    # A copy still circling through `queue` would reach this consumer, and expire into the
    # witness again, well within the window.
    inbox = Inbox(channel, queue)
    pump_for([connection], QUIET_WINDOW_S)
    assert inbox.bodies == []
    assert channel.basic_get(witness) == (None, None, None)


def test_expiry_dead_lettered_to_itself_by_default_exchange_is_dropped(connection):
    """The same cycle through the default exchange: the queue empties and stays empty."""
    channel = confirm_channel(connection)  # so the depth counts the message once published
    queue = unique("cycle")
    channel.queue_declare(queue, arguments={
        "x-message-ttl": 50, "x-dead-letter-exchange": "", "x-dead-letter-routing-key": queue,
    })
    channel.basic_publish("", queue, b"round and round")
    wait_for_depth(channel, queue, 0)
    inbox = Inbox(channel, queue)
    pump_for([connection], QUIET_WINDOW_S)
    assert inbox.bodies == []


# -- exclusive consumers ----------------------------------------------------------------------


def test_exclusive_consumer_refuses_other_consumers(connect):
    connection = connect()
    setup = connection.channel()
    queue = unique("exclusive-consumer")
    setup.queue_declare(queue)
    owner = connection.channel()
    owner.basic_consume(queue, lambda *_: None, exclusive=True)

    intruder = connect().channel()
    with pytest.raises(ChannelClosedByBroker) as caught:
        intruder.basic_consume(queue, lambda *_: None)
    reply.assert_reply(caught.value, reply.ACCESS_REFUSED)


def test_exclusive_consume_refused_while_others_consume(connect):
    connection = connect()
    setup = connection.channel()
    queue = unique("already-consumed")
    setup.queue_declare(queue)
    setup.basic_consume(queue, lambda *_: None)

    late = connect().channel()
    with pytest.raises(ChannelClosedByBroker) as caught:
        late.basic_consume(queue, lambda *_: None, exclusive=True)
    reply.assert_reply(caught.value, reply.ACCESS_REFUSED)


# -- policies (config file) ------------------------------------------------------------------


@pytest.mark.warren_only("policies come from Warren's config file; RabbitMQ sets them with rabbitmqctl")
def test_config_file_policy_applies_to_matching_queues(connect, start_broker):
    broker = start_broker(
        '[[policies]]\nname = "short"\npattern = "^policy\\\\."\napply_to = "queues"\n'
        "[policies.definition]\nmax-length = 2\nmessage-ttl = 300\n"
    )
    channel = connect(on=broker).channel()
    channel.confirm_delivery()
    governed, free = unique("policy.limited"), unique("unmatched")
    for queue in (governed, free):
        channel.queue_declare(queue)
    for number in range(5):
        for queue in (governed, free):
            channel.basic_publish("", queue, f"message-{number}".encode())
    # max-length from the policy keeps the newest two; the unmatched queue keeps all five.
    assert queue_depth(channel, governed) == 2
    assert queue_depth(channel, free) == 5
    # message-ttl from the policy then empties the governed queue.
    wait_for_depth(channel, governed, 0)
    assert queue_depth(channel, free) == 5
