"""MQTT and STOMP over WebSocket on the HTTP port, as browsers and web clients use them:
paho-mqtt (transport "websockets", path /mqtt), stomp.py's WSStompConnection and a raw
websocket-client session (path /ws), each meeting a client of another protocol.

STOMP output must arrive one frame per WebSocket message, heart-beats as messages of their own,
as RabbitMQ's Web-STOMP sends them: some clients parse each message as exactly one frame.
RabbitMQ's Web-STOMP and Web-MQTT listen on ports of their own (15674, 15675), which the
reference stand-in does not start, so these tests are Warren-only.
"""

from __future__ import annotations

from queue import Queue

import pytest
import stomp
import websocket

from inbox import unique
from mqtt_client import MqttClient, unique_client_id, unique_topic

pytestmark = pytest.mark.warren_only(
    "RabbitMQ serves Web-STOMP and Web-MQTT on ports of their own, which the stand-in does not start"
)

TIMEOUT_S = 5.0


def open_stomp_websocket(broker) -> websocket.WebSocket:
    return websocket.create_connection(
        f"ws://{broker.http_host}:{broker.http_port}/ws",
        subprotocols=["v12.stomp"],
        timeout=TIMEOUT_S,
    )


def frame(command: str, headers: dict[str, str], body: bytes = b"") -> bytes:
    lines = [command, *(f"{name}:{value}" for name, value in headers.items()), "", ""]
    return "\n".join(lines).encode() + body + b"\0"


def receive_frame(socket: websocket.WebSocket) -> tuple[int, bytes]:
    """The next WebSocket message that is not a heart-beat, with its opcode; asserts it holds
    exactly one whole frame."""
    while True:
        opcode, data = socket.recv_data()
        if data != b"\n":
            break
    header_end = data.index(b"\n\n")
    length = next(
        (int(line.split(b":", 1)[1]) for line in data[:header_end].split(b"\n")[1:]
         if line.startswith(b"content-length:")),
        None,
    )
    body_end = header_end + 2 + length if length is not None else data.index(b"\0", header_end)
    assert data[body_end:] == b"\0", f"not exactly one frame in one message: {data!r}"
    return opcode, data


def test_mqtt_over_websocket_meets_amqp(broker, connect):
    topic = unique_topic("ws")
    channel = connect().channel()
    queue = channel.queue_declare("", exclusive=True).method.queue
    channel.queue_bind(queue, "amq.topic", routing_key=f"{topic}.up")
    client = MqttClient(broker.http_host, broker.http_port, unique_client_id("ws"), websocket_path="/mqtt")
    client.connect()
    try:
        assert client.subscribe(f"{topic}/down", 1) == [1]
        client.publish(f"{topic}/up", b"from the browser", qos=1)
        channel.basic_publish("amq.topic", f"{topic}.down", b"to the browser")
        [received] = client.wait_for_messages(1)
        assert (received.topic, received.payload, received.qos) == (f"{topic}/down", b"to the browser", 0)
        method, _properties, body = next(channel.consume(queue, auto_ack=True, inactivity_timeout=TIMEOUT_S))
        assert method is not None and body == b"from the browser"
    finally:
        client.client.disconnect()
        client.client.loop_stop()


def test_stomp_py_over_websocket_meets_amqp(broker, connect):
    queue = unique("ws-stomp")
    channel = connect().channel()
    channel.queue_declare(queue, durable=True)
    listener = stomp.listener.WaitingListener("sub-receipt")
    bodies: Queue[str] = Queue()
    listener.on_message = lambda message: bodies.put(message.body)
    connection = stomp.WSStompConnection([(broker.http_host, broker.http_port)], ws_path="/ws", timeout=TIMEOUT_S)
    connection.set_listener("", listener)
    connection.connect("guest", "guest", wait=True)
    try:
        connection.subscribe(f"/queue/{queue}", id="1", ack="auto", headers={"receipt": "sub-receipt"})
        listener.wait_on_receipt()
        channel.basic_publish("", queue, b"hello over websocket")
        connection.send(f"/queue/{queue}", "and back")
        received = [bodies.get(timeout=TIMEOUT_S) for _ in range(2)]
        # Two publishers on two connections: no order between them.
        assert sorted(received) == ["and back", "hello over websocket"]
    finally:
        connection.disconnect()
    channel.queue_delete(queue)


def test_stomp_websocket_sends_one_frame_per_message(broker, connect):
    queue = unique("ws-frames")
    socket = open_stomp_websocket(broker)
    try:
        assert socket.getsubprotocol() == "v12.stomp"
        socket.send(frame("CONNECT", {"accept-version": "1.2", "host": "/", "login": "guest", "passcode": "guest"}))
        opcode, data = receive_frame(socket)
        assert opcode == websocket.ABNF.OPCODE_TEXT and data.startswith(b"CONNECTED\n")
        socket.send(frame("SUBSCRIBE", {"destination": f"/queue/{queue}", "id": "0", "receipt": "r1"}))
        opcode, data = receive_frame(socket)
        assert data.startswith(b"RECEIPT\n") and b"receipt-id:r1\n" in data
        # Many frames at once, text and binary, so the broker writes them back to back.
        channel = connect().channel()
        binary = bytes(range(256))
        for index in range(50):
            channel.basic_publish("", queue, binary if index % 2 else f"text {index}".encode())
        for index in range(50):
            opcode, data = receive_frame(socket)
            assert data.startswith(b"MESSAGE\n")
            if index % 2:
                assert opcode == websocket.ABNF.OPCODE_BINARY
                assert data.endswith(b"\n\n" + binary + b"\0")
            else:
                assert opcode == websocket.ABNF.OPCODE_TEXT
                assert data.endswith(f"\n\ntext {index}\0".encode())
    finally:
        socket.close()
