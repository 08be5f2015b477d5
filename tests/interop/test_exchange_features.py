"""RabbitMQ's exchange extensions as pika sees them: exchange-to-exchange bindings, alternate
exchanges, internal exchanges, the headers exchange's x-match any-with-x / all-with-x, and
auto-delete exchanges."""

from __future__ import annotations

import pika
import pytest
from pika.exceptions import ChannelClosedByBroker, UnroutableError

import reply
from inbox import get_until_sentinel, pump_until, unique, wait_for_get

SENTINEL = b"sentinel"


def exchange_exists(connection, exchange: str) -> bool:
    """Passive exchange.declare on a fresh channel: True if it succeeds, False on 404."""
    probe = connection.channel()
    try:
        probe.exchange_declare(exchange, passive=True)
    except ChannelClosedByBroker as error:
        reply.assert_reply(error, reply.NOT_FOUND)
        return False
    probe.close()
    return True


def wait_until_exchange_gone(connection, exchange: str) -> None:
    pump_until(
        lambda: not exchange_exists(connection, exchange), [connection],
        f"exchange {exchange!r} to be deleted",
    )


def bound_queue(channel, exchange: str, routing_key: str = "", **bind_arguments) -> str:
    queue = channel.queue_declare("", exclusive=True).method.queue
    channel.queue_bind(queue, exchange, routing_key, **bind_arguments)
    return queue


def received(channel, queue: str) -> list[bytes]:
    """What reached `queue` before a sentinel published now through the default exchange; on
    the same channel as the publishes under test, so anything they routed is already there."""
    channel.basic_publish("", queue, SENTINEL)
    return get_until_sentinel(channel, queue, SENTINEL)


def confirm_channel(connection):
    channel = connection.channel()
    channel.confirm_delivery()
    return channel


def test_server_advertises_exchange_exchange_bindings(connection):
    capabilities = connection._impl.server_capabilities
    assert capabilities.get("exchange_exchange_bindings") is True, capabilities


# -- exchange-to-exchange bindings ---------------------------------------------------------


def test_exchange_binding_routes_to_the_destination_queues(channel):
    source, destination = unique("source"), unique("destination")
    channel.exchange_declare(source, exchange_type="direct")
    channel.exchange_declare(destination, exchange_type="direct")
    channel.exchange_bind(destination, source, routing_key="key")
    queue = bound_queue(channel, destination, "key")

    channel.basic_publish(source, "key", b"via binding")
    channel.basic_publish(source, "other", b"no binding for this key")
    channel.basic_publish(destination, "key", b"direct to destination")
    assert received(channel, queue) == [b"via binding", b"direct to destination"]

    channel.basic_publish(source, "key", b"once more")
    method, _, body = wait_for_get(channel, queue)
    assert body == b"once more"
    assert (method.exchange, method.routing_key) == (source, "key"), (
        "the delivery names the exchange it was published to, not the one that bound the queue"
    )


def test_exchange_unbind_stops_routing(channel):
    source, destination = unique("source"), unique("destination")
    channel.exchange_declare(source, exchange_type="fanout")
    channel.exchange_declare(destination, exchange_type="fanout")
    channel.exchange_bind(destination, source)
    queue = bound_queue(channel, destination)
    channel.basic_publish(source, "", b"bound")
    channel.exchange_unbind(destination, source)
    channel.basic_publish(source, "", b"unbound")
    assert received(channel, queue) == [b"bound"]


@pytest.mark.parametrize("missing", ["source", "destination"])
def test_exchange_bind_with_missing_exchange_is_404(channel, missing):
    exists = unique("exists")
    channel.exchange_declare(exists, exchange_type="fanout")
    absent = unique("missing")
    destination, source = (exists, absent) if missing == "source" else (absent, exists)
    with pytest.raises(ChannelClosedByBroker) as caught:
        channel.exchange_bind(destination, source)
    reply.assert_reply(caught.value, reply.NOT_FOUND)


def test_exchange_binding_loop_delivers_once(channel):
    """A -> B -> A: routing visits each exchange once, so no duplicate and no endless loop."""
    first, second = unique("loop-a"), unique("loop-b")
    channel.exchange_declare(first, exchange_type="fanout")
    channel.exchange_declare(second, exchange_type="fanout")
    channel.exchange_bind(second, first)
    channel.exchange_bind(first, second)
    queue = bound_queue(channel, second)
    channel.basic_publish(first, "", b"to a")
    channel.basic_publish(second, "", b"to b")
    assert received(channel, queue) == [b"to a", b"to b"]


def test_queue_reached_by_two_paths_gets_one_copy(channel):
    source, destination = unique("source"), unique("destination")
    channel.exchange_declare(source, exchange_type="fanout")
    channel.exchange_declare(destination, exchange_type="fanout")
    channel.exchange_bind(destination, source)
    queue = bound_queue(channel, source)
    channel.queue_bind(queue, destination)
    channel.basic_publish(source, "", b"one copy")
    assert received(channel, queue) == [b"one copy"]


# -- alternate exchanges -------------------------------------------------------------------


def declare_with_alternate(channel, alternate: str, exchange_type: str = "direct") -> str:
    exchange = unique("primary")
    channel.exchange_declare(
        exchange, exchange_type=exchange_type, arguments={"alternate-exchange": alternate}
    )
    return exchange


def test_alternate_exchange_receives_unroutable_messages(channel):
    alternate = unique("alternate")
    channel.exchange_declare(alternate, exchange_type="fanout")
    exchange = declare_with_alternate(channel, alternate)
    routed = bound_queue(channel, exchange, "key")
    leftovers = bound_queue(channel, alternate)

    channel.basic_publish(exchange, "key", b"routed")
    channel.basic_publish(exchange, "other", b"unroutable")
    assert received(channel, routed) == [b"routed"]

    method, _, body = wait_for_get(channel, leftovers)
    assert body == b"unroutable", "routed messages do not also go to the alternate"
    assert (method.exchange, method.routing_key) == (exchange, "other")
    assert received(channel, leftovers) == []


def test_alternate_exchange_chain(channel):
    """The alternate's own alternate takes what neither routes."""
    last = unique("last-resort")
    channel.exchange_declare(last, exchange_type="fanout")
    middle = declare_with_alternate(channel, last)
    exchange = declare_with_alternate(channel, middle)
    queue = bound_queue(channel, last)
    channel.basic_publish(exchange, "key", b"fell through twice")
    assert received(channel, queue) == [b"fell through twice"]


def test_mandatory_message_routed_by_alternate_is_not_returned(connection):
    channel = confirm_channel(connection)
    alternate = unique("alternate")
    channel.exchange_declare(alternate, exchange_type="fanout")
    exchange = declare_with_alternate(channel, alternate)
    queue = bound_queue(channel, alternate)
    # pika raises UnroutableError if the broker returns the message before acking it.
    channel.basic_publish(exchange, "nobody", b"caught", mandatory=True)
    assert channel.basic_get(queue, auto_ack=True)[2] == b"caught"


@pytest.mark.parametrize("alternate", ["unbound", "missing"])
def test_mandatory_message_unroutable_by_alternate_too_is_returned(connection, alternate):
    channel = confirm_channel(connection)
    alternate_name = unique("alternate")
    if alternate == "unbound":
        channel.exchange_declare(alternate_name, exchange_type="fanout")
    exchange = declare_with_alternate(channel, alternate_name)
    with pytest.raises(UnroutableError) as caught:
        channel.basic_publish(exchange, "nobody", b"bounced", mandatory=True)
    [returned] = caught.value.messages
    assert returned.method.reply_code == reply.NO_ROUTE
    assert (returned.method.exchange, returned.method.routing_key) == (exchange, "nobody")
    assert returned.body == b"bounced"


def test_alternate_exchange_loop_returns_mandatory(connection):
    """Two exchanges each naming the other as alternate: routing tries each once."""
    channel = confirm_channel(connection)
    first, second = unique("alternate-a"), unique("alternate-b")
    for exchange, alternate in ((first, second), (second, first)):
        channel.exchange_declare(
            exchange, exchange_type="direct", arguments={"alternate-exchange": alternate}
        )
    with pytest.raises(UnroutableError):
        channel.basic_publish(first, "nobody", b"round trip", mandatory=True)
    queue = bound_queue(channel, second, "key")
    channel.basic_publish(first, "key", b"second routes it", mandatory=True)
    assert channel.basic_get(queue, auto_ack=True)[2] == b"second routes it"


# -- internal exchanges --------------------------------------------------------------------


def test_publish_to_internal_exchange_is_403(connection, channel):
    internal = unique("internal")
    channel.exchange_declare(internal, exchange_type="fanout", internal=True)
    with pytest.raises(ChannelClosedByBroker) as caught:
        # basic.publish has no reply; the channel.close shows up on the next synchronous call.
        channel.basic_publish(internal, "", b"refused")
        channel.queue_declare("", exclusive=True)
    reply.assert_reply(caught.value, reply.ACCESS_REFUSED)
    assert connection.is_open, "a soft error closes only the channel"


def test_internal_exchange_routes_via_exchange_binding(channel):
    public, internal = unique("public"), unique("internal")
    channel.exchange_declare(public, exchange_type="direct")
    channel.exchange_declare(internal, exchange_type="fanout", internal=True)
    channel.exchange_bind(internal, public, routing_key="key")
    queue = bound_queue(channel, internal)
    channel.basic_publish(public, "key", b"through the front door")
    assert received(channel, queue) == [b"through the front door"]


# -- headers exchange with x- headers ------------------------------------------------------


def test_headers_exchange_x_headers_match_only_with_x(channel):
    """all and any ignore binding arguments starting with x-; all-with-x and any-with-x
    match them like any other header."""
    exchange = unique("headers")
    channel.exchange_declare(exchange, exchange_type="headers")
    queues = {
        mode: bound_queue(
            channel, exchange, arguments={"x-match": mode, "x-tenant": "a", "kind": "k"}
        )
        for mode in ("all", "any", "all-with-x", "any-with-x")
    }
    messages = {
        b"both": {"x-tenant": "a", "kind": "k"},
        b"kind only": {"kind": "k"},
        b"tenant only": {"x-tenant": "a"},
        b"wrong tenant": {"x-tenant": "b", "kind": "k"},
        b"neither": {"other": 1},
        b"no headers": None,
    }
    for body, headers in messages.items():
        channel.basic_publish(exchange, "", body, pika.BasicProperties(headers=headers))

    assert received(channel, queues["all"]) == [b"both", b"kind only", b"wrong tenant"]
    assert received(channel, queues["any"]) == [b"both", b"kind only", b"wrong tenant"]
    assert received(channel, queues["all-with-x"]) == [b"both"]
    assert received(channel, queues["any-with-x"]) == [
        b"both", b"kind only", b"tenant only", b"wrong tenant"
    ]


def test_headers_exchange_unknown_x_match_is_406(channel):
    exchange = unique("headers")
    channel.exchange_declare(exchange, exchange_type="headers")
    queue = channel.queue_declare("", exclusive=True).method.queue
    with pytest.raises(ChannelClosedByBroker) as caught:
        channel.queue_bind(queue, exchange, arguments={"x-match": "bogus", "kind": "k"})
    reply.assert_reply(caught.value, reply.PRECONDITION_FAILED)


# -- auto-delete exchanges -----------------------------------------------------------------


def declare_auto_delete(channel) -> str:
    exchange = unique("auto-delete")
    channel.exchange_declare(exchange, exchange_type="fanout", auto_delete=True)
    return exchange


def test_auto_delete_exchange_goes_with_its_last_queue_binding(connection, channel):
    exchange = declare_auto_delete(channel)
    assert exchange_exists(connection, exchange), "an exchange that was never bound stays"
    queue = channel.queue_declare("", exclusive=True).method.queue
    channel.queue_bind(queue, exchange, "one")
    channel.queue_bind(queue, exchange, "two")

    channel.queue_unbind(queue, exchange, "one")
    assert exchange_exists(connection, exchange), "one binding is left"
    channel.queue_unbind(queue, exchange, "two")
    wait_until_exchange_gone(connection, exchange)


def test_auto_delete_exchange_goes_when_its_bound_queue_is_deleted(connection, channel):
    exchange = declare_auto_delete(channel)
    queue = unique("bound")
    channel.queue_declare(queue)
    channel.queue_bind(queue, exchange)
    channel.queue_delete(queue)
    wait_until_exchange_gone(connection, exchange)


def test_auto_delete_exchange_goes_with_its_last_exchange_binding(connection, channel):
    """Only bindings with the auto-delete exchange as their source count: unbinding it as a
    destination leaves it in place."""
    exchange = declare_auto_delete(channel)
    other = unique("other")
    channel.exchange_declare(other, exchange_type="fanout")

    channel.exchange_bind(exchange, other)  # the auto-delete exchange as destination
    channel.exchange_unbind(exchange, other)
    assert exchange_exists(connection, exchange)

    channel.exchange_bind(other, exchange)  # the auto-delete exchange as source
    channel.exchange_unbind(other, exchange)
    wait_until_exchange_gone(connection, exchange)


def test_auto_delete_exchange_goes_when_its_destination_exchange_is_deleted(connection, channel):
    exchange = declare_auto_delete(channel)
    destination = unique("destination")
    channel.exchange_declare(destination, exchange_type="fanout")
    channel.exchange_bind(destination, exchange)
    channel.exchange_delete(destination)
    wait_until_exchange_gone(connection, exchange)
