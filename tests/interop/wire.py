"""Hand-encoded AMQP 0-9-1 frames over a plain socket, for the tests no real client can send.

Only what the raw tests need: the connection handshake, channel.open, arbitrary frames, and
reading the server's connection.close. Layout follows AMQP 0-9-1 section 4.2.3:
type (u8), channel (u16), size (u32), payload, frame-end (0xCE). Integers are big-endian.
"""

from __future__ import annotations

import socket
import struct
import time
from dataclasses import dataclass

PROTOCOL_HEADER = b"AMQP\x00\x00\x09\x01"

FRAME_METHOD = 1
FRAME_HEADER = 2
FRAME_BODY = 3
FRAME_HEARTBEAT = 8
FRAME_END = 0xCE
FRAME_HEADER_BYTES = 7

# (class-id, method-id) pairs, AMQP 0-9-1.
CONNECTION_START = (10, 10)
CONNECTION_START_OK = (10, 11)
CONNECTION_TUNE = (10, 30)
CONNECTION_TUNE_OK = (10, 31)
CONNECTION_OPEN = (10, 40)
CONNECTION_OPEN_OK = (10, 41)
CONNECTION_CLOSE = (10, 50)
CONNECTION_CLOSE_OK = (10, 51)
CHANNEL_OPEN = (20, 10)
CHANNEL_OPEN_OK = (20, 11)
CHANNEL_CLOSE = (20, 40)
QUEUE_DECLARE = (50, 10)
QUEUE_DECLARE_OK = (50, 11)
BASIC_PUBLISH = (60, 40)

DEFAULT_TIMEOUT_S = 5.0


# -- encoding ------------------------------------------------------------------------------


def shortstr(value: bytes) -> bytes:
    assert len(value) <= 255
    return struct.pack(">B", len(value)) + value


def longstr(value: bytes) -> bytes:
    return struct.pack(">I", len(value)) + value


def table(entries: dict) -> bytes:
    """A field table holding only booleans, strings and nested tables: enough for
    client-properties."""
    encoded = b""
    for key, value in entries.items():
        encoded += shortstr(key.encode())
        if isinstance(value, bool):
            encoded += b"t" + struct.pack(">B", value)
        elif isinstance(value, str):
            encoded += b"S" + longstr(value.encode())
        elif isinstance(value, dict):
            encoded += b"F" + table(value)
        else:
            raise TypeError(f"table() does not encode {type(value).__name__}")
    return longstr(encoded)


def frame(frame_type: int, channel: int, payload: bytes, end: int = FRAME_END) -> bytes:
    return struct.pack(">BHI", frame_type, channel, len(payload)) + payload + bytes([end])


def method_frame(channel: int, method: tuple[int, int], arguments: bytes = b"") -> bytes:
    return frame(FRAME_METHOD, channel, struct.pack(">HH", *method) + arguments)


def queue_declare_arguments(queue: bytes) -> bytes:
    """queue.declare: reserved-1 (u16), queue (shortstr), 5 bits, arguments (table)."""
    return struct.pack(">H", 0) + shortstr(queue) + b"\x00" + table({})


# -- decoding ------------------------------------------------------------------------------


@dataclass
class Frame:
    frame_type: int
    channel: int
    payload: bytes

    @property
    def method(self) -> tuple[int, int] | None:
        if self.frame_type != FRAME_METHOD or len(self.payload) < 4:
            return None
        return struct.unpack_from(">HH", self.payload)

    @property
    def arguments(self) -> bytes:
        return self.payload[4:]


@dataclass
class CloseReason:
    """connection.close or channel.close arguments."""

    reply_code: int
    reply_text: str
    class_id: int
    method_id: int

    @classmethod
    def decode(cls, arguments: bytes) -> "CloseReason":
        (reply_code,) = struct.unpack_from(">H", arguments, 0)
        text_length = arguments[2]
        reply_text = arguments[3:3 + text_length].decode("utf-8", errors="replace")
        class_id, method_id = struct.unpack_from(">HH", arguments, 3 + text_length)
        return cls(reply_code, reply_text, class_id, method_id)


@dataclass
class Tune:
    channel_max: int
    frame_max: int
    heartbeat: int


class ServerClosed(Exception):
    """The server closed the TCP connection."""


# -- connection ----------------------------------------------------------------------------


class RawConnection:
    """A TCP connection to the broker that speaks AMQP one hand-made frame at a time."""

    def __init__(self, host: str, port: int):
        self.sock = socket.create_connection((host, port), timeout=DEFAULT_TIMEOUT_S)
        self.buffer = b""
        self.tune: Tune | None = None

    def close(self) -> None:
        self.sock.close()

    def __enter__(self) -> "RawConnection":
        return self

    def __exit__(self, *_exc) -> None:
        self.close()

    def send(self, data: bytes) -> None:
        self.sock.sendall(data)

    def _fill(self, byte_count: int, deadline: float) -> None:
        """Read until the buffer holds `byte_count` bytes; ServerClosed on EOF, TimeoutError at
        the deadline."""
        while len(self.buffer) < byte_count:
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                raise TimeoutError(f"no reply within the deadline; buffered {self.buffer!r}")
            self.sock.settimeout(remaining)
            try:
                chunk = self.sock.recv(65536)
            except socket.timeout as error:
                raise TimeoutError(f"no reply within the deadline; buffered {self.buffer!r}") from error
            except ConnectionResetError as error:
                raise ServerClosed(f"connection reset; buffered {self.buffer!r}") from error
            if not chunk:
                raise ServerClosed(f"server closed the connection; buffered {self.buffer!r}")
            self.buffer += chunk

    def read_frame(self, timeout_s: float = DEFAULT_TIMEOUT_S) -> Frame:
        deadline = time.monotonic() + timeout_s
        self._fill(FRAME_HEADER_BYTES, deadline)
        frame_type, channel, size = struct.unpack_from(">BHI", self.buffer)
        self._fill(FRAME_HEADER_BYTES + size + 1, deadline)
        payload = self.buffer[FRAME_HEADER_BYTES:FRAME_HEADER_BYTES + size]
        end = self.buffer[FRAME_HEADER_BYTES + size]
        self.buffer = self.buffer[FRAME_HEADER_BYTES + size + 1:]
        assert end == FRAME_END, f"server sent frame-end {end:#x}"
        return Frame(frame_type, channel, payload)

    def read_method(self, expected: tuple[int, int], timeout_s: float = DEFAULT_TIMEOUT_S) -> Frame:
        """The next method frame, which must be `expected`; heartbeats are skipped."""
        while True:
            received = self.read_frame(timeout_s)
            if received.frame_type == FRAME_HEARTBEAT:
                continue
            assert received.method == expected, (
                f"expected method {expected}, got frame {received}"
                + (f" = {CloseReason.decode(received.arguments)}"
                   if received.method in (CONNECTION_CLOSE, CHANNEL_CLOSE) else "")
            )
            return received

    def read_until_eof(self, timeout_s: float = DEFAULT_TIMEOUT_S) -> bytes:
        """Everything the server sends until it closes the connection."""
        deadline = time.monotonic() + timeout_s
        try:
            # Asks for more bytes than any server sends, so only EOF (or the deadline) ends it.
            self._fill(1 << 40, deadline)
        except ServerClosed:
            pass
        received, self.buffer = self.buffer, b""
        return received

    # -- protocol steps --------------------------------------------------------------------

    def handshake(
        self,
        vhost: bytes = b"/",
        username: bytes = b"guest",
        password: bytes = b"guest",
    ) -> Tune:
        """Protocol header through connection.open-ok. Returns the server's tune values."""
        tune = self.negotiate(username, password)
        self.send_open(vhost)
        self.read_method(CONNECTION_OPEN_OK)
        return tune

    def negotiate(
        self,
        username: bytes = b"guest",
        password: bytes = b"guest",
        client_properties: dict | None = None,
    ) -> Tune:
        """Protocol header, start/start-ok, tune/tune-ok (accepting the server's limits, no
        heartbeats). Returns the server's tune values."""
        self.send(PROTOCOL_HEADER)
        start = self.read_method(CONNECTION_START)
        assert b"PLAIN" in start.payload, f"server offers no PLAIN mechanism: {start.payload!r}"
        self.start_ok(username, password, client_properties or {})
        tune_frame = self.read_method(CONNECTION_TUNE)
        self.tune = Tune(*struct.unpack_from(">HIH", tune_frame.arguments))
        self.send(method_frame(
            0, CONNECTION_TUNE_OK,
            struct.pack(">HIH", self.tune.channel_max, self.tune.frame_max, 0),
        ))
        return self.tune

    def send_open(self, vhost: bytes) -> None:
        """connection.open: virtual-host, reserved-1 (shortstr), reserved-2 (bit)."""
        self.send(method_frame(0, CONNECTION_OPEN, shortstr(vhost) + shortstr(b"") + b"\x00"))

    def start_ok(self, username: bytes, password: bytes, client_properties: dict) -> None:
        response = b"\x00" + username + b"\x00" + password
        self.send(method_frame(
            0, CONNECTION_START_OK,
            table(client_properties) + shortstr(b"PLAIN") + longstr(response) + shortstr(b"en_US"),
        ))

    def open_channel(self, channel: int) -> None:
        self.send(method_frame(channel, CHANNEL_OPEN, shortstr(b"")))
        self.read_method(CHANNEL_OPEN_OK)

    def expect_connection_close(self, timeout_s: float = DEFAULT_TIMEOUT_S) -> CloseReason:
        """Read until the server's connection.close on channel 0, answer close-ok, and return
        the reason. Frames before it (e.g. a pending reply) are skipped."""
        while True:
            received = self.read_frame(timeout_s)
            if received.channel == 0 and received.method == CONNECTION_CLOSE:
                break
        reason = CloseReason.decode(received.arguments)
        try:
            self.send(method_frame(0, CONNECTION_CLOSE_OK))
        except OSError:
            pass  # the server may already have dropped the socket after a fatal frame error
        return reason
