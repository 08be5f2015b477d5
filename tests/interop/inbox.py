"""Collecting deliveries with pika's BlockingConnection without ever sleeping.

pika's blocking adapter only dispatches consumer callbacks inside `process_data_events`, so every
wait here is a loop that pumps the connections involved until a condition holds or a deadline
passes. Absence is proved with a sentinel where possible: publish the message that must not
arrive, then a sentinel on the same channel; once the sentinel is read, anything routed before
it would already be in the queue.
"""

from __future__ import annotations

import time
import uuid
from dataclasses import dataclass
from typing import Callable, Iterable

import pika
import pytest
from pika.adapters.blocking_connection import BlockingChannel, BlockingConnection

DEFAULT_TIMEOUT_S = 5.0
# How long each connection gets in one round of pumping; short, so several connections can be
# served from one thread without starving each other.
PUMP_SLICE_S = 0.01


def unique(prefix: str) -> str:
    """A queue or exchange name no other test uses."""
    return f"{prefix}-{uuid.uuid4().hex[:12]}"


@dataclass
class Delivery:
    method: pika.spec.Basic.Deliver
    properties: pika.spec.BasicProperties
    body: bytes


def pump_until(
    condition: Callable[[], bool],
    connections: Iterable[BlockingConnection],
    what: str,
    timeout_s: float = DEFAULT_TIMEOUT_S,
) -> None:
    """Process I/O on `connections` until `condition()` holds; fail the test after `timeout_s`."""
    connections = list(connections)
    deadline = time.monotonic() + timeout_s
    while not condition():
        if time.monotonic() > deadline:
            pytest.fail(f"timed out after {timeout_s} s waiting for {what}")
        for connection in connections:
            connection.process_data_events(time_limit=PUMP_SLICE_S)


def pump_for(connections: Iterable[BlockingConnection], window_s: float) -> None:
    """Process I/O for a fixed window. Only for proving that something does *not* arrive where
    no sentinel can order it (e.g. a prefetch limit); never for waiting on state."""
    connections = list(connections)
    deadline = time.monotonic() + window_s
    while time.monotonic() < deadline:
        for connection in connections:
            connection.process_data_events(time_limit=PUMP_SLICE_S)


class Inbox:
    """One `basic_consume` consumer whose deliveries are appended to `messages`."""

    def __init__(
        self,
        channel: BlockingChannel,
        queue: str,
        auto_ack: bool = True,
        ack_each: bool = False,
        **consume_arguments,
    ):
        self.channel = channel
        self.queue = queue
        self.ack_each = ack_each
        self.messages: list[Delivery] = []
        self.consumer_tag = channel.basic_consume(
            queue, self._on_message, auto_ack=auto_ack, **consume_arguments
        )

    def _on_message(self, channel, method, properties, body) -> None:
        self.messages.append(Delivery(method, properties, body))
        if self.ack_each:
            channel.basic_ack(method.delivery_tag)

    @property
    def bodies(self) -> list[bytes]:
        return [message.body for message in self.messages]

    def wait_for(self, count: int, timeout_s: float = DEFAULT_TIMEOUT_S) -> list[Delivery]:
        pump_until(
            lambda: len(self.messages) >= count,
            [self.channel.connection],
            f"{count} deliveries on {self.queue!r} (have {len(self.messages)})",
            timeout_s,
        )
        return self.messages

    def cancel(self) -> None:
        self.channel.basic_cancel(self.consumer_tag)


def get_until_sentinel(
    channel: BlockingChannel,
    queue: str,
    sentinel: bytes,
    timeout_s: float = DEFAULT_TIMEOUT_S,
) -> list[bytes]:
    """basic.get (auto-ack) from `queue` until `sentinel` comes out; the bodies before it."""
    bodies: list[bytes] = []
    deadline = time.monotonic() + timeout_s
    while True:
        method, _properties, body = channel.basic_get(queue, auto_ack=True)
        if method is None:
            if time.monotonic() > deadline:
                pytest.fail(f"timed out after {timeout_s} s: no sentinel on {queue!r}, got {bodies}")
            channel.connection.process_data_events(time_limit=PUMP_SLICE_S)
            continue
        if body == sentinel:
            return bodies
        bodies.append(body)


def queue_depth(channel: BlockingChannel, queue: str) -> int:
    """Ready messages in `queue`, from a passive queue.declare.

    RabbitMQ answers queue.declare ahead of publishes still on their way to the queue (its
    queue process prioritises `stat` over pending deliveries), so the count is exact only for
    publishes already confirmed; otherwise use `wait_for_depth`."""
    return channel.queue_declare(queue, passive=True).method.message_count


def wait_for_depth(
    channel: BlockingChannel, queue: str, expected: int, timeout_s: float = DEFAULT_TIMEOUT_S
) -> None:
    """Poll passive queue.declare until `queue` holds `expected` ready messages."""
    seen: list[int] = []

    def reached() -> bool:
        seen.append(queue_depth(channel, queue))
        return seen[-1] == expected

    pump_until(
        reached, [channel.connection],
        f"{expected} messages in {queue!r} (last saw {seen[-1:] or 'nothing'})", timeout_s,
    )


def wait_for_get(
    channel: BlockingChannel,
    queue: str,
    timeout_s: float = DEFAULT_TIMEOUT_S,
    auto_ack: bool = True,
) -> tuple[pika.spec.Basic.GetOk, pika.spec.BasicProperties, bytes]:
    """basic.get from `queue` until a message comes out; for messages the broker moves there on
    its own (dead-lettering), which no publish on our channel can order."""
    deadline = time.monotonic() + timeout_s
    while True:
        method, properties, body = channel.basic_get(queue, auto_ack=auto_ack)
        if method is not None:
            return method, properties, body
        if time.monotonic() > deadline:
            pytest.fail(f"timed out after {timeout_s} s waiting for a message on {queue!r}")
        channel.connection.process_data_events(time_limit=PUMP_SLICE_S)
