"""RabbitMQ's six tutorials (https://www.rabbitmq.com/tutorials), each turned into assertions."""

from __future__ import annotations

import threading
import uuid

import pika

from inbox import Inbox, get_until_sentinel, pump_until, unique


# -- 1. Hello World ------------------------------------------------------------------------


def test_hello_world(connect):
    queue = unique("hello")
    sender = connect().channel()
    sender.queue_declare(queue)
    sender.basic_publish(exchange="", routing_key=queue, body=b"Hello World!")

    receiver = connect().channel()
    receiver.queue_declare(queue)  # idempotent, as in the tutorial's receive.py
    inbox = Inbox(receiver, queue, auto_ack=True)

    [message] = inbox.wait_for(1)
    assert message.body == b"Hello World!"
    assert message.method.routing_key == queue
    assert message.method.exchange == ""
    assert message.method.redelivered is False


# -- 2. Work queues ------------------------------------------------------------------------


def test_work_queue_round_robin(connect):
    """Two workers on one queue take turns: 1st, 3rd, 5th to one, 2nd, 4th, 6th to the other.
    (No prefetch limit here, as in the tutorial's round-robin section: with prefetch 1 the
    order would depend on which ack arrives first.)"""
    queue = unique("task_queue")
    producer = connect().channel()
    producer.queue_declare(queue, durable=True)
    workers = [Inbox(connect().channel(), queue, auto_ack=True) for _ in range(2)]

    tasks = [f"task {number}".encode() for number in range(6)]
    for task in tasks:
        producer.basic_publish(
            "", queue, task,
            pika.BasicProperties(delivery_mode=pika.DeliveryMode.Persistent),
        )

    pump_until(
        lambda: sum(len(worker.messages) for worker in workers) == len(tasks),
        [worker.channel.connection for worker in workers],
        "all tasks delivered",
    )
    first, second = (worker.bodies for worker in workers)
    assert sorted(first + second) == sorted(tasks)
    assert sorted([first, second]) == sorted([tasks[0::2], tasks[1::2]]), (
        f"not round-robin: {first} / {second}"
    )
    for worker in workers:
        assert all(m.properties.delivery_mode == 2 for m in worker.messages)


def test_work_queue_fair_dispatch_skips_busy_worker(connect):
    """With prefetch 1, a worker holding an unacked task gets nothing more; the free worker
    takes every remaining task."""
    queue = unique("task_queue")
    producer = connect().channel()
    producer.queue_declare(queue, durable=True)

    slow_channel = connect().channel()
    slow_channel.basic_qos(prefetch_count=1)
    slow = Inbox(slow_channel, queue, auto_ack=False)  # never acks during the test
    fast_channel = connect().channel()
    fast_channel.basic_qos(prefetch_count=1)
    fast = Inbox(fast_channel, queue, auto_ack=False, ack_each=True)

    tasks = [f"task {number}".encode() for number in range(8)]
    for task in tasks:
        producer.basic_publish("", queue, task)

    connections = [slow_channel.connection, fast_channel.connection]
    pump_until(
        lambda: len(slow.messages) + len(fast.messages) == len(tasks),
        connections,
        "all tasks delivered",
    )
    assert len(slow.messages) == 1, f"busy worker got {slow.bodies} despite prefetch 1"
    assert sorted(slow.bodies + fast.bodies) == sorted(tasks)


# -- 3. Publish/Subscribe ------------------------------------------------------------------


def test_publish_subscribe_fanout(connect):
    exchange = unique("logs")
    publisher = connect().channel()
    publisher.exchange_declare(exchange, exchange_type="fanout")

    subscribers = []
    for _ in range(2):
        channel = connect().channel()
        declared = channel.queue_declare(queue="", exclusive=True)
        queue = declared.method.queue
        assert queue.startswith("amq.gen-"), f"server-named queue {queue!r}"
        channel.queue_bind(exchange=exchange, queue=queue)
        subscribers.append(Inbox(channel, queue, auto_ack=True))
    assert subscribers[0].queue != subscribers[1].queue

    lines = [f"log line {number}".encode() for number in range(5)]
    for line in lines:
        publisher.basic_publish(exchange, routing_key="ignored-by-fanout", body=line)

    for subscriber in subscribers:
        subscriber.wait_for(len(lines))
        assert subscriber.bodies == lines
        assert {m.method.exchange for m in subscriber.messages} == {exchange}
        assert {m.method.routing_key for m in subscriber.messages} == {"ignored-by-fanout"}


# -- 4. Routing ----------------------------------------------------------------------------


def test_routing_direct_by_severity(channel):
    exchange = unique("direct_logs")
    channel.exchange_declare(exchange, exchange_type="direct")
    errors_only = channel.queue_declare("", exclusive=True).method.queue
    everything = channel.queue_declare("", exclusive=True).method.queue
    channel.queue_bind(errors_only, exchange, routing_key="error")
    for severity in ("info", "warning", "error"):
        channel.queue_bind(everything, exchange, routing_key=severity)

    for severity in ("info", "warning", "error", "debug"):
        channel.basic_publish(exchange, severity, f"{severity} message".encode())
    sentinel = b"sentinel"
    for queue in (errors_only, everything):
        channel.basic_publish("", queue, sentinel)

    assert get_until_sentinel(channel, errors_only, sentinel) == [b"error message"]
    # "error" matches one of three bindings of the same queue: delivered once, not three times.
    assert get_until_sentinel(channel, everything, sentinel) == [
        b"info message", b"warning message", b"error message"
    ]


# -- 5. Topics -----------------------------------------------------------------------------

TOPIC_KEYS = [
    "quick.orange.rabbit", "lazy.orange.elephant", "quick.orange.fox", "lazy.brown.fox",
    "lazy.pink.rabbit", "quick.brown.fox", "orange", "quick.orange.new.rabbit",
    "lazy.orange.new.rabbit", "lazy", "a.b", "a.x.b", "a.x.y.b", "a.b.c", "a", "b",
]

# For each binding key, the routing keys above that it matches (by hand, from the AMQP rules:
# `*` is exactly one word, `#` is zero or more words).
TOPIC_MATCHES = {
    "*.orange.*": {"quick.orange.rabbit", "lazy.orange.elephant", "quick.orange.fox"},
    "*.*.rabbit": {"quick.orange.rabbit", "lazy.pink.rabbit"},
    "lazy.#": {
        "lazy.orange.elephant", "lazy.brown.fox", "lazy.pink.rabbit",
        "lazy.orange.new.rabbit", "lazy",  # `#` matches zero words
    },
    "a.#.b": {"a.b", "a.x.b", "a.x.y.b"},
    "a.*": {"a.b"},
    "#.b": {"a.b", "a.x.b", "a.x.y.b", "b"},
    "a.#": {"a.b", "a.x.b", "a.x.y.b", "a.b.c", "a"},
    "*": {"orange", "lazy", "a", "b"},
    "#": set(TOPIC_KEYS),
    "quick.orange.rabbit": {"quick.orange.rabbit"},
}


def test_topics_tutorial(channel):
    """The tutorial's two queues: Q1 `*.orange.*`, Q2 `*.*.rabbit` + `lazy.#`."""
    exchange = unique("topic_logs")
    channel.exchange_declare(exchange, exchange_type="topic")
    q1 = channel.queue_declare("", exclusive=True).method.queue
    q2 = channel.queue_declare("", exclusive=True).method.queue
    channel.queue_bind(q1, exchange, "*.orange.*")
    channel.queue_bind(q2, exchange, "*.*.rabbit")
    channel.queue_bind(q2, exchange, "lazy.#")

    for key in TOPIC_KEYS[:10]:
        channel.basic_publish(exchange, key, key.encode())
    sentinel = b"sentinel"
    for queue in (q1, q2):
        channel.basic_publish("", queue, sentinel)

    assert get_until_sentinel(channel, q1, sentinel) == [
        b"quick.orange.rabbit", b"lazy.orange.elephant", b"quick.orange.fox"
    ]
    # lazy.pink.rabbit matches both of Q2's bindings and still arrives once.
    assert get_until_sentinel(channel, q2, sentinel) == [
        b"quick.orange.rabbit", b"lazy.orange.elephant", b"lazy.brown.fox",
        b"lazy.pink.rabbit", b"lazy.orange.new.rabbit", b"lazy",
    ]


def test_topic_wildcards_table(channel):
    exchange = unique("topic")
    channel.exchange_declare(exchange, exchange_type="topic")
    queues = {}
    for binding_key in TOPIC_MATCHES:
        queue = channel.queue_declare("", exclusive=True).method.queue
        channel.queue_bind(queue, exchange, binding_key)
        queues[binding_key] = queue

    for key in TOPIC_KEYS:
        channel.basic_publish(exchange, key, key.encode())
    sentinel = b"sentinel"
    for queue in queues.values():
        channel.basic_publish("", queue, sentinel)

    mismatches = {}
    for binding_key, queue in queues.items():
        received = [body.decode() for body in get_until_sentinel(channel, queue, sentinel)]
        expected = [key for key in TOPIC_KEYS if key in TOPIC_MATCHES[binding_key]]
        if received != expected:
            mismatches[binding_key] = {
                "missing": sorted(set(expected) - set(received)),
                "unexpected": sorted(set(received) - set(expected)),
                "received": received,
            }
    assert not mismatches, mismatches


# -- 6. RPC --------------------------------------------------------------------------------


def fib(n: int) -> int:
    return n if n < 2 else fib(n - 1) + fib(n - 2)


class RpcServer(threading.Thread):
    """The tutorial's rpc_server.py on its own connection, in its own thread (pika connections
    are not thread-safe)."""

    def __init__(self, params: pika.ConnectionParameters, queue: str):
        super().__init__(name="rpc-server", daemon=True)
        self.params = params
        self.queue = queue
        self.ready = threading.Event()
        self.error: BaseException | None = None
        self.connection: pika.BlockingConnection | None = None
        self.channel = None

    def run(self) -> None:
        try:
            self.connection = pika.BlockingConnection(self.params)
            self.channel = self.connection.channel()
            self.channel.queue_declare(self.queue)
            self.channel.basic_qos(prefetch_count=1)
            self.channel.basic_consume(self.queue, self.on_request)
            self.ready.set()
            self.channel.start_consuming()
            self.connection.close()
        except BaseException as error:  # reported to the test thread by stop()
            self.error = error
            self.ready.set()

    def on_request(self, channel, method, properties, body) -> None:
        response = str(fib(int(body))).encode()
        channel.basic_publish(
            exchange="",
            routing_key=properties.reply_to,
            properties=pika.BasicProperties(correlation_id=properties.correlation_id),
            body=response,
        )
        channel.basic_ack(method.delivery_tag)

    def stop(self) -> None:
        if self.connection is not None and self.connection.is_open:
            self.connection.add_callback_threadsafe(self.channel.stop_consuming)
        self.join(timeout=10)
        assert not self.is_alive(), "RPC server thread did not stop"
        if self.error is not None:
            raise self.error


def test_rpc_fibonacci(broker, connect):
    rpc_queue = unique("rpc_queue")
    client = connect().channel()
    client.queue_declare(rpc_queue)
    server = RpcServer(broker.params(), rpc_queue)
    server.start()
    assert server.ready.wait(timeout=10), "RPC server did not start"
    if server.error is not None:
        raise server.error
    try:
        callback_queue = client.queue_declare("", exclusive=True).method.queue
        responses: dict[str, bytes] = {}

        def on_response(_channel, _method, properties, body):
            responses[properties.correlation_id] = body

        client.basic_consume(callback_queue, on_response, auto_ack=True)
        requests = {}
        for n in (0, 1, 2, 10, 20, 25):
            correlation_id = str(uuid.uuid4())
            requests[correlation_id] = n
            client.basic_publish(
                exchange="",
                routing_key=rpc_queue,
                properties=pika.BasicProperties(
                    reply_to=callback_queue, correlation_id=correlation_id
                ),
                body=str(n).encode(),
            )
        pump_until(
            lambda: len(responses) == len(requests), [client.connection], "all RPC responses"
        )
        assert {
            correlation_id: int(body) for correlation_id, body in responses.items()
        } == {correlation_id: fib(n) for correlation_id, n in requests.items()}
    finally:
        server.stop()
