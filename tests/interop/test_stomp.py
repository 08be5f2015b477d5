"""STOMP 1.0, 1.1 and 1.2 as stomp.py sees them, raw frames the broker must refuse, and STOMP <->
AMQP and MQTT through amq.topic.

Expectations come from the STOMP 1.2 specification (its section names below). Where it leaves
things open, they come from RabbitMQ's STOMP plugin, which Warren follows: `/queue/q` is queue
`q` (declared on first use), `/topic/k` is key `k` on amq.topic, `/exchange/x/k` is key `k` on
exchange `x`, `/amq/queue/q` an existing queue; `persistent:true` is delivery mode 2; other
headers travel as AMQP headers; a `/temp-queue/` reply-to is rewritten to a queue private to
the session. Tests marked `warren_only` check a Warren limit RabbitMQ 3.10 does not have, or a
spec rule it does not keep; their reasons say how RabbitMQ behaves.
"""

from __future__ import annotations

import pika
import pytest

import stomp_wire
from inbox import Inbox, pump_until, unique
from mqtt_client import Received, unique_topic
from stomp_client import SENTINEL, describe, unique_id

pytestmark = pytest.mark.stomp

# Not text: the broker must hand over the body byte for byte, NULs included.
BINARY_BODY = bytes(range(256)) * 4

# Warren's bounds on client frames (protocols/stomp/src/codec.rs, Limits::default).
LINE_BYTES_MAX = 8 * 1024
HEADERS_MAX = 100
BODY_BYTES_MAX = 16 * 1024 * 1024

# RabbitMQ 3.10 closes the socket about 10 s after refusing a CONNECT (bad login, no common
# version); Warren at once.
REFUSED_CONNECT_CLOSE_S = 15.0


def round_trip(stomp_connect) -> None:
    """A SEND and its MESSAGE on a fresh connection: the broker still serves STOMP."""
    client = stomp_connect()
    destination = f"/queue/{unique('alive')}"
    client.subscribe(destination)
    client.send(destination, b"still serving")
    assert [message.body for message in client.wait_for_messages(1)] == [b"still serving"]


# -- CONNECT -------------------------------------------------------------------------------


@pytest.mark.parametrize("version", ["1.0", "1.1", "1.2"])
def test_connect_negotiates_version(stomp_client, version):
    """Section "Protocol Negotiation": CONNECTED names the version chosen from accept-version.
    STOMP 1.0 defines no version header; RabbitMQ sends `version:1.0` anyway, which is
    allowed too."""
    client = stomp_client(version=version)
    connected = client.connect()
    if version == "1.0":
        assert connected.headers.get("version", "1.0") == "1.0"
    else:
        assert connected.headers["version"] == version
    assert "session" in connected.headers


def test_connect_picks_highest_common_version(stomp_raw):
    _connection, connected = stomp_raw.session(version="1.0,1.1")
    assert connected.headers["version"] == "1.1"


def test_connect_with_no_common_version_is_refused(stomp_raw):
    """Section "Protocol Negotiation": the server answers ERROR, then closes the connection."""
    connection = stomp_raw()
    connection.send(stomp_wire.connect_frame(version="2.0"))
    frames = connection.read_until_closed(timeout_s=REFUSED_CONNECT_CLOSE_S)
    assert [frame.command for frame in frames] == ["ERROR"]


@pytest.mark.parametrize(("login", "passcode"), [("guest", "wrong"), ("nobody", "guest")])
def test_bad_credentials_refused(stomp_client, login, passcode):
    """ERROR, then the socket closes (section "ERROR": the server MUST close the connection
    after an ERROR)."""
    client = stomp_client()
    answer = client.try_connect(login, passcode)
    assert answer.cmd == "ERROR", describe(answer)
    assert "message" in answer.headers
    client.wait_for_disconnect(timeout_s=REFUSED_CONNECT_CLOSE_S)


@pytest.mark.warren_only(
    "anonymous STOMP: RabbitMQ's plugin logs a CONNECT without login in as its default_user, guest"
)
def test_anonymous_connect_refused(stomp_client):
    """Warren's STOMP allow_anonymous is off by default."""
    client = stomp_client()
    answer = client.try_connect(login=None, passcode=None)
    assert answer.cmd == "ERROR", describe(answer)
    client.wait_for_disconnect()


# -- /queue/ ---------------------------------------------------------------------------------


def test_queue_round_trip_keeps_body_and_headers(stomp_connect):
    """Headers other than the frame's own travel with the message. In STOMP 1.2 values are
    escaped on the wire (section "Value Encoding"), so colons, newlines and backslashes come
    back as sent."""
    queue = unique("stomp-queue")
    subscriber = stomp_connect()
    subscription = subscriber.subscribe(f"/queue/{queue}")
    stomp_connect().send(
        f"/queue/{queue}", b"hello",
        **{
            "content-type": "text/plain",
            "persistent": "true",
            "x-custom": "yes",
            "x-odd": "colon: newline\n backslash\\",
        },
    )
    [message] = subscriber.wait_for_messages(1)
    assert message.body == b"hello"
    assert message.headers["destination"] == f"/queue/{queue}"
    assert message.headers["subscription"] == subscription
    assert "message-id" in message.headers
    assert message.headers["content-type"] == "text/plain"
    assert message.headers["persistent"] == "true"
    assert message.headers["x-custom"] == "yes"
    assert message.headers["x-odd"] == "colon: newline\n backslash\\"


def test_binary_body_with_nul_bytes(stomp_connect):
    """Section "Body": with content-length the body may hold NULs."""
    queue = unique("stomp-binary")
    subscriber = stomp_connect()
    subscriber.subscribe(f"/queue/{queue}")
    stomp_connect().send(
        f"/queue/{queue}", BINARY_BODY, **{"content-type": "application/octet-stream"}
    )
    [message] = subscriber.wait_for_messages(1)
    assert message.body == BINARY_BODY
    assert message.headers["content-length"] == str(len(BINARY_BODY))


def test_queue_keeps_messages_until_a_subscriber_comes(stomp_connect):
    """A SEND to `/queue/q` declares q, so the message waits there."""
    queue = unique("stomp-waiting")
    stomp_connect().send(f"/queue/{queue}", b"early", receipt=True)
    subscriber = stomp_connect()
    subscriber.subscribe(f"/queue/{queue}")
    assert [message.body for message in subscriber.wait_for_messages(1)] == [b"early"]


# -- /topic/ ---------------------------------------------------------------------------------


def test_topic_reaches_every_subscriber(stomp_connect):
    key = f"{unique('news')}.sport"
    first, second = stomp_connect(), stomp_connect()
    first.subscribe(f"/topic/{key}")
    second.subscribe(f"/topic/{key}")
    stomp_connect().send(f"/topic/{key}", b"goal")
    for subscriber in (first, second):
        [message] = subscriber.wait_for_messages(1)
        assert message.body == b"goal"
        assert message.headers["destination"] == f"/topic/{key}"


def test_topic_wildcards(stomp_connect):
    """Topic keys are amq.topic binding keys: `*` is one word, `#` any number."""
    root = unique("wild")
    other = unique("wild-other")
    one_word, any_words = stomp_connect(), stomp_connect()
    one_word.subscribe(f"/topic/{root}.*")
    any_words.subscribe(f"/topic/{root}.#")
    publisher = stomp_connect()
    for key in (f"{root}.a", f"{root}.a.b", f"{other}.a", root):
        publisher.send(f"/topic/{key}", key.encode())
    publisher.send(f"/topic/{root}.end", SENTINEL)
    assert [message.body for message in one_word.wait_for_sentinel()] == [f"{root}.a".encode()]
    assert [message.body for message in any_words.wait_for_sentinel()] == [
        f"{root}.a".encode(), f"{root}.a.b".encode(), root.encode(),
    ]


# -- /exchange/ and /amq/queue/ ----------------------------------------------------------------


def test_exchange_destination(stomp_connect):
    key = unique("direct")
    subscriber = stomp_connect()
    subscriber.subscribe(f"/exchange/amq.direct/{key}")
    stomp_connect().send(f"/exchange/amq.direct/{key}", b"direct")
    [message] = subscriber.wait_for_messages(1)
    assert message.body == b"direct"
    assert message.headers["destination"] == f"/exchange/amq.direct/{key}"


def test_amq_queue_reads_an_existing_queue(stomp_connect, channel):
    queue = unique("amq-queue")
    channel.queue_declare(queue, auto_delete=True)
    subscriber = stomp_connect()
    subscriber.subscribe(f"/amq/queue/{queue}")
    stomp_connect().send(f"/amq/queue/{queue}", b"from stomp")
    assert subscriber.wait_for_messages(1)[0].body == b"from stomp"
    channel.basic_publish("", queue, b"from amqp")
    assert subscriber.wait_for_messages(2)[1].body == b"from amqp"


def test_amq_queue_that_does_not_exist_is_an_error(stomp_connect):
    """No queue is declared for `/amq/queue/`: subscribing to a missing one is an ERROR, after
    which the connection closes."""
    client = stomp_connect()
    client.subscribe(f"/amq/queue/{unique('missing')}", receipt=False)
    client.wait_for_error()
    client.wait_for_disconnect()


# -- acknowledgement -----------------------------------------------------------------------


def send_numbered(client, destination: str, count: int) -> list[bytes]:
    bodies = [f"message {number}".encode() for number in range(1, count + 1)]
    for body in bodies:
        client.send(destination, body)
    return bodies


def messages_left(stomp_connect, channel, queue: str) -> list:
    """The messages a new subscriber to `queue` gets before a sentinel sent after it
    subscribed: what earlier sessions left unacknowledged. It waits until the queue has no
    consumer (seen through AMQP), as the broker requeues a closed session's unacknowledged
    messages when it removes its subscription, some time after the DISCONNECT's RECEIPT."""
    consumers: list[int] = []

    def no_consumers() -> bool:
        consumers.append(channel.queue_declare(queue, passive=True).method.consumer_count)
        return consumers[-1] == 0

    pump_until(
        no_consumers, [channel.connection],
        f"no consumers on {queue!r} (last saw {consumers[-1:] or 'nothing'})",
    )
    client = stomp_connect()
    client.subscribe(f"/queue/{queue}")
    client.send(f"/queue/{queue}", SENTINEL)
    return client.wait_for_sentinel()


def test_auto_ack_removes_messages(stomp_connect, channel):
    queue = unique("ack-auto")
    consumer = stomp_connect()
    consumer.subscribe(f"/queue/{queue}", ack="auto")
    bodies = send_numbered(stomp_connect(), f"/queue/{queue}", 2)
    assert [message.body for message in consumer.wait_for_messages(2)] == bodies
    consumer.disconnect()
    assert messages_left(stomp_connect, channel, queue) == []


def test_client_ack_is_cumulative(stomp_connect, channel):
    """Section "SUBSCRIBE ack Header": with `ack:client` an ACK covers every earlier message
    of the subscription too."""
    queue = unique("ack-client")
    consumer = stomp_connect()
    consumer.subscribe(f"/queue/{queue}", ack="client")
    send_numbered(stomp_connect(), f"/queue/{queue}", 3)
    consumer.ack(consumer.wait_for_messages(3)[2])
    consumer.disconnect()
    assert messages_left(stomp_connect, channel, queue) == []


def test_client_individual_ack_acks_only_that_message(stomp_connect, channel):
    queue = unique("ack-individual")
    consumer = stomp_connect()
    consumer.subscribe(f"/queue/{queue}", ack="client-individual")
    bodies = send_numbered(stomp_connect(), f"/queue/{queue}", 3)
    consumer.ack(consumer.wait_for_messages(3)[2])
    consumer.disconnect()
    left = messages_left(stomp_connect, channel, queue)
    assert [message.body for message in left] == bodies[:2]
    assert [message.headers.get("redelivered") for message in left] == ["true", "true"]


@pytest.mark.parametrize("version", ["1.0", "1.1", "1.2"])
def test_ack_names_the_message_as_each_version_does(stomp_connect, channel, version):
    """ACK takes `message-id` in 1.0, `message-id` and `subscription` in 1.1, and the
    MESSAGE's `ack` header as `id` in 1.2. Checked by what is left for the next subscriber."""
    queue = unique(f"ack-v{version}")
    consumer = stomp_connect(version=version)
    consumer.subscribe(f"/queue/{queue}", ack="client")
    stomp_connect().send(f"/queue/{queue}", b"acked")
    consumer.ack(consumer.wait_for_messages(1)[0])
    consumer.disconnect()
    assert messages_left(stomp_connect, channel, queue) == []


def test_unacked_messages_are_redelivered_after_connection_loss(stomp_connect):
    queue = unique("ack-lost")
    consumer = stomp_connect()
    consumer.subscribe(f"/queue/{queue}", ack="client")
    stomp_connect().send(f"/queue/{queue}", b"unacked")
    consumer.wait_for_messages(1)
    consumer.drop()
    next_consumer = stomp_connect()
    next_consumer.subscribe(f"/queue/{queue}", ack="client")
    [message] = next_consumer.wait_for_messages(1)
    assert message.body == b"unacked"
    assert message.headers.get("redelivered") == "true"


def test_nack_requeues(stomp_connect):
    """Like RabbitMQ, NACK requeues (unless `requeue:false`); the message comes back marked
    redelivered."""
    queue = unique("nack")
    consumer = stomp_connect()
    consumer.subscribe(f"/queue/{queue}", ack="client-individual")
    stomp_connect().send(f"/queue/{queue}", b"try again")
    consumer.nack(consumer.wait_for_messages(1)[0])
    first, again = consumer.wait_for_messages(2)
    assert again.body == b"try again"
    assert first.headers.get("redelivered") == "false"
    assert again.headers.get("redelivered") == "true"


def test_prefetch_count_limits_unacked_messages(stomp_connect):
    """RabbitMQ's `prefetch-count` SUBSCRIBE header caps the unacknowledged deliveries."""
    queue = unique("prefetch")
    consumer = stomp_connect()
    consumer.subscribe(f"/queue/{queue}", ack="client-individual", **{"prefetch-count": "2"})
    bodies = send_numbered(stomp_connect(), f"/queue/{queue}", 4)
    first = consumer.wait_for_messages(2)[0]
    assert [message.body for message in consumer.messages_within(0.5)] == bodies[:2]
    consumer.ack(first)
    consumer.wait_for_messages(3)
    assert [message.body for message in consumer.messages_within(0.5)] == bodies[:3]


# -- receipts ------------------------------------------------------------------------------


def test_send_receipt(stomp_raw):
    """Section "Header receipt": the RECEIPT's receipt-id is the frame's receipt header."""
    connection, _connected = stomp_raw.session()
    receipt = unique_id("receipt")
    connection.send(stomp_wire.encode(
        "SEND", {"destination": f"/queue/{unique('receipts')}", "receipt": receipt}, b"x"
    ))
    frame = connection.read_frame()
    assert (frame.command, frame.headers["receipt-id"]) == ("RECEIPT", receipt)


def test_disconnect_receipt_then_close(stomp_raw):
    """Section "DISCONNECT": a DISCONNECT with a receipt is answered with it, then the server
    closes the connection."""
    connection, _connected = stomp_raw.session()
    receipt = unique_id("bye")
    connection.send(stomp_wire.encode("DISCONNECT", {"receipt": receipt}))
    frames = connection.read_until_closed()
    assert [(frame.command, frame.headers.get("receipt-id")) for frame in frames] == [
        ("RECEIPT", receipt),
    ]


# -- transactions --------------------------------------------------------------------------


def test_transaction_delivers_on_commit(stomp_connect):
    queue = unique("tx-commit")
    subscriber = stomp_connect()
    subscriber.subscribe(f"/queue/{queue}")
    publisher = stomp_connect()
    transaction = publisher.begin()
    publisher.send(f"/queue/{queue}", b"one", transaction=transaction)
    publisher.send(f"/queue/{queue}", b"two", transaction=transaction)
    publisher.send(f"/queue/{queue}", SENTINEL)
    assert subscriber.wait_for_sentinel() == []
    publisher.commit(transaction)
    assert [message.body for message in subscriber.wait_for_messages(3)[1:]] == [b"one", b"two"]


def test_transaction_abort_discards(stomp_connect):
    queue = unique("tx-abort")
    subscriber = stomp_connect()
    subscriber.subscribe(f"/queue/{queue}")
    publisher = stomp_connect()
    transaction = publisher.begin()
    publisher.send(f"/queue/{queue}", b"discarded", transaction=transaction)
    publisher.abort(transaction)
    publisher.send(f"/queue/{queue}", SENTINEL)
    assert subscriber.wait_for_sentinel() == []


# -- /temp-queue/ ------------------------------------------------------------------------------


def test_temp_queue_request_reply(stomp_connect):
    """A `/temp-queue/` reply-to is rewritten to a destination the server can SEND to, and
    the reply reaches the requester without a SUBSCRIBE of its own."""
    requests = unique("requests")
    server = stomp_connect()
    server.subscribe(f"/queue/{requests}")
    requester = stomp_connect()
    requester.send(f"/queue/{requests}", b"ping", **{"reply-to": "/temp-queue/replies"})
    [request] = server.wait_for_messages(1)
    reply_to = request.headers["reply-to"]
    assert reply_to != "/temp-queue/replies"
    server.send(reply_to, b"pong", receipt=True)
    [reply] = requester.wait_for_messages(1)
    assert reply.body == b"pong"
    assert reply.headers["subscription"] == "/temp-queue/replies"


# -- durable topic subscriptions -----------------------------------------------------------


def test_durable_topic_subscription_keeps_messages_while_away(stomp_connect):
    """RabbitMQ's durable subscription: `durable:true` and `auto-delete:false` with an id keep
    the subscription's queue after the connection ends, and the same id finds it again."""
    key = unique("durable")
    subscription = unique_id("durable-sub")
    durable = {"durable": "true", "auto-delete": "false"}
    first = stomp_connect()
    first.subscribe(f"/topic/{key}", id=subscription, ack="client-individual", **durable)
    first.disconnect()
    stomp_connect().send(f"/topic/{key}", b"while away", receipt=True)
    second = stomp_connect()
    second.subscribe(f"/topic/{key}", id=subscription, ack="client-individual", **durable)
    [message] = second.wait_for_messages(1)
    assert message.body == b"while away"
    second.ack(message)
    second.unsubscribe(subscription, **durable)  # removes the subscription's queue


def test_unsubscribe_ends_a_durable_subscription(stomp_connect):
    """RabbitMQ deletes a durable subscription's queue on an UNSUBSCRIBE with `durable:true`:
    what is published afterwards is not kept for the id."""
    key = unique("durable-end")
    subscription = unique_id("durable-sub")
    durable = {"durable": "true", "auto-delete": "false"}
    first = stomp_connect()
    first.subscribe(f"/topic/{key}", id=subscription, **durable)
    first.unsubscribe(subscription, **durable)
    first.disconnect()
    publisher = stomp_connect()
    publisher.send(f"/topic/{key}", b"after unsubscribe", receipt=True)
    second = stomp_connect()
    second.subscribe(f"/topic/{key}", id=subscription, **durable)
    publisher.send(f"/topic/{key}", SENTINEL)
    kept = [message.body for message in second.wait_for_sentinel()]
    assert kept == [], "the subscription's queue outlived UNSUBSCRIBE with durable:true"
    second.unsubscribe(subscription, **durable)


# -- heart-beats -----------------------------------------------------------------------------


def assert_takes_one_second_heartbeats(heart_beat: str) -> None:
    """CONNECTED's `heart-beat` for a client offering `1000,1000`. Section "Heart-beating":
    each side's interval is the larger of what one offers and the other wants, so a server may
    slow heart-beats down; RabbitMQ does not, it answers `1000,1000`, and that is the target."""
    server_sends, server_wants = (int(value) for value in heart_beat.split(","))
    assert 0 < server_sends <= 1000 and 0 < server_wants <= 1000, (
        f"CONNECTED heart-beat:{heart_beat} for a client offering 1000,1000"
    )


def test_server_sends_heartbeats(stomp_client):
    """Asked for heart-beats every second, the server sends them (RabbitMQ every half
    second)."""
    client = stomp_client(heartbeats=(1000, 1000))
    connected = client.connect()
    assert_takes_one_second_heartbeats(connected.headers["heart-beat"])
    client.wait_until(lambda: client.heartbeats >= 2, "two heart-beats from the server", 3.0)


def test_heartbeating_client_stays_connected(stomp_client):
    """stomp.py sends a heart-beat every second, so the server keeps the connection for longer
    than it would keep a silent one (see below)."""
    client = stomp_client(heartbeats=(1000, 1000))
    client.connect()
    client.messages_within(4.0)
    assert not client.disconnected
    queue = f"/queue/{unique('heartbeating')}"
    client.subscribe(queue)
    client.send(queue, b"still here")
    assert [message.body for message in client.wait_for_messages(1)] == [b"still here"]


def test_silent_client_is_disconnected(stomp_raw):
    """Section "Heart-beating": a client that promised a heart-beat every second and then goes
    silent is taken for dead. RabbitMQ closes the connection after about 3 s."""
    connection, connected = stomp_raw.session(heart_beat="1000,1000")
    assert_takes_one_second_heartbeats(connected.headers["heart-beat"])
    connection.read_until_closed(timeout_s=5.0)


# -- STOMP <-> AMQP and MQTT ------------------------------------------------------------------


def test_amqp_to_stomp_topic(stomp_connect, channel):
    """An AMQP publish to amq.topic reaches `/topic/` subscribers; the AMQP properties become
    headers."""
    key = f"{unique('sensors')}.x"
    subscriber = stomp_connect()
    subscriber.subscribe(f"/topic/{key}")
    properties = pika.BasicProperties(
        content_type="text/plain", delivery_mode=2, headers={"x-origin": "amqp"}
    )
    channel.basic_publish("amq.topic", key, b"21.5", properties)
    [message] = subscriber.wait_for_messages(1)
    assert message.body == b"21.5"
    assert message.headers["destination"] == f"/topic/{key}"
    assert message.headers["content-type"] == "text/plain"
    assert message.headers["persistent"] == "true"
    assert message.headers["x-origin"] == "amqp"


def test_stomp_to_amqp_topic(stomp_connect, channel):
    """A SEND to `/topic/k` is a publish to amq.topic with key k; headers become properties."""
    root = unique("alerts")
    queue = channel.queue_declare("", exclusive=True).method.queue
    channel.queue_bind(queue, "amq.topic", routing_key=f"{root}.#")
    inbox = Inbox(channel, queue)
    stomp_connect().send(
        f"/topic/{root}.fire", b"evacuate",
        **{"content-type": "text/plain", "persistent": "true", "x-level": "high"},
    )
    [delivery] = inbox.wait_for(1)
    assert delivery.method.exchange == "amq.topic"
    assert delivery.method.routing_key == f"{root}.fire"
    assert delivery.body == b"evacuate"
    assert delivery.properties.content_type == "text/plain"
    assert delivery.properties.delivery_mode == 2
    assert (delivery.properties.headers or {}).get("x-level") == "high"


@pytest.mark.mqtt
def test_stomp_to_mqtt_persistent_is_qos1(stomp_connect, mqtt_connect):
    """`/topic/a.b` is MQTT topic `a/b`; a persistent message goes out at QoS 1."""
    root = unique_topic("sensors")
    subscriber = mqtt_connect()
    subscriber.subscribe(f"{root}/x", 1)
    stomp_connect().send(f"/topic/{root}.x", b"from stomp", persistent="true")
    assert subscriber.wait_for_messages(1) == [Received(f"{root}/x", b"from stomp", 1)]


@pytest.mark.mqtt
def test_mqtt_to_stomp_qos1_is_persistent(stomp_connect, mqtt_connect):
    root = unique_topic("sensors")
    subscriber = stomp_connect()
    subscriber.subscribe(f"/topic/{root}.y")
    mqtt_connect().publish(f"{root}/y", b"from mqtt", qos=1)
    [message] = subscriber.wait_for_messages(1)
    assert message.body == b"from mqtt"
    assert message.headers["destination"] == f"/topic/{root}.y"
    assert message.headers["persistent"] == "true"


# -- frames the broker must refuse -----------------------------------------------------------


def unterminated_body_over_limit() -> bytes:
    """A SEND without content-length whose body passes the limit with no NUL: one byte over,
    so the broker has read everything sent when it refuses (unread bytes would make its close
    a reset, which can discard the ERROR)."""
    return b"SEND\ndestination:/queue/unterminated\n\n" + b"x" * (BODY_BYTES_MAX + 1)


def header_line_over_limit() -> bytes:
    """A header line one byte over the limit, `x-long:aaa...`."""
    value = "a" * (LINE_BYTES_MAX + 1 - len("x-long:"))
    return stomp_wire.encode("SEND", {"destination": "/queue/long-header", "x-long": value})


def too_many_headers() -> bytes:
    """One header over the limit, destination included."""
    headers = {"destination": "/queue/many-headers"}
    headers.update((f"x-{number}", "v") for number in range(HEADERS_MAX))
    return stomp_wire.encode("SEND", headers, b"body")


RABBITMQ_KEEPS_OPEN = (
    "RabbitMQ 3.10 sends the ERROR but keeps the connection open; "
    "STOMP 1.2 says the server MUST close it"
)

# Each makes its frame when the test runs, so the 16 MiB one is not built at collection.
BAD_FRAMES = [
    pytest.param(
        unterminated_body_over_limit, id="unterminated-body-over-16MiB",
        marks=pytest.mark.warren_only("RabbitMQ 3.10's STOMP plugin has no frame size limit"),
    ),
    pytest.param(
        header_line_over_limit, id="header-line-over-8KiB",
        marks=pytest.mark.warren_only("RabbitMQ 3.10's STOMP plugin has no header line limit"),
    ),
    pytest.param(
        too_many_headers, id="over-100-headers",
        marks=pytest.mark.warren_only("RabbitMQ 3.10's STOMP plugin has no header count limit"),
    ),
    pytest.param(
        lambda: stomp_wire.encode("LAUNCH", {"destination": "/queue/x"}), id="unknown-command",
        marks=pytest.mark.warren_only(RABBITMQ_KEEPS_OPEN),
    ),
    pytest.param(
        lambda: stomp_wire.encode("SUBSCRIBE", {"id": "1", "destination": "/nowhere/x"}),
        id="bad-destination",
        marks=pytest.mark.warren_only(RABBITMQ_KEEPS_OPEN),
    ),
    pytest.param(
        lambda: stomp_wire.encode("SEND", {}, b"where to?"), id="send-without-destination",
        marks=pytest.mark.warren_only(RABBITMQ_KEEPS_OPEN),
    ),
    pytest.param(
        lambda: stomp_wire.encode(
            "SUBSCRIBE", {"id": "1", "destination": f"/amq/queue/{unique('missing')}"}
        ),
        id="missing-amq-queue",
    ),
]


@pytest.mark.parametrize("make_frame", BAD_FRAMES)
def test_bad_frame_gets_error_then_close(stomp_raw, stomp_connect, make_frame):
    """Section "ERROR": the server sends ERROR and then closes the connection; other
    connections are unaffected."""
    connection, _connected = stomp_raw.session()
    connection.send(make_frame())
    answers = connection.read_until_closed()
    assert [answer.command for answer in answers] == ["ERROR"], answers
    assert "message" in answers[0].headers
    round_trip(stomp_connect)
