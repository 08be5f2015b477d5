"""Hand-encoded MQTT 3.1.1 packets over a plain socket, for what paho cannot be made to do.

These tests need two things from raw bytes. One is a connection that ends without DISCONNECT
at a moment the test chooses; paho reconnects or cleans up on its own. The other is a CONNECT
no client library sends. Layout follows MQTT 3.1.1 section 2 (fixed header: type and flags
byte, remaining length as a base-128 varint) and section 3.1 (CONNECT). Integers are big-endian.
"""

from __future__ import annotations

import socket
import struct
import time
from dataclasses import dataclass

import pytest

CONNECT = 0x10
CONNACK = 0x20
DISCONNECT = 0xE0

# CONNECT flags, MQTT 3.1.1 section 3.1.2.3.
FLAG_USERNAME = 0x80
FLAG_PASSWORD = 0x40
FLAG_WILL_RETAIN = 0x20
FLAG_WILL = 0x04
FLAG_CLEAN_SESSION = 0x02
WILL_QOS_SHIFT = 3

# CONNACK return codes, MQTT 3.1.1 section 3.2.2.3.
ACCEPTED = 0
UNACCEPTABLE_PROTOCOL_VERSION = 1
IDENTIFIER_REJECTED = 2

DEFAULT_TIMEOUT_S = 5.0


@dataclass(frozen=True)
class Will:
    topic: str
    message: bytes
    qos: int = 0
    retain: bool = False


# -- encoding ------------------------------------------------------------------------------


def utf8(text: str) -> bytes:
    return binary(text.encode("utf-8"))


def binary(data: bytes) -> bytes:
    return struct.pack(">H", len(data)) + data


def remaining_length(length: int) -> bytes:
    encoded = bytearray()
    while True:
        digit, length = length % 128, length // 128
        encoded.append(digit | (0x80 if length else 0))
        if not length:
            return bytes(encoded)


def packet(first_byte: int, body: bytes) -> bytes:
    return bytes([first_byte]) + remaining_length(len(body)) + body


def connect_packet(
    client_id: str,
    *,
    username: str | None = "guest",
    password: str | None = "guest",
    will: Will | None = None,
    clean_session: bool = True,
    keep_alive_s: int = 30,
    protocol_level: int = 4,
) -> bytes:
    flags = FLAG_CLEAN_SESSION if clean_session else 0
    payload = utf8(client_id)
    if will is not None:
        flags |= FLAG_WILL | (will.qos << WILL_QOS_SHIFT) | (FLAG_WILL_RETAIN if will.retain else 0)
        payload += utf8(will.topic) + binary(will.message)
    if username is not None:
        flags |= FLAG_USERNAME
        payload += utf8(username)
    if password is not None:
        flags |= FLAG_PASSWORD
        payload += binary(password.encode("utf-8"))
    variable_header = utf8("MQTT") + struct.pack(">BBH", protocol_level, flags, keep_alive_s)
    return packet(CONNECT, variable_header + payload)


# -- a connection --------------------------------------------------------------------------


def read_exactly(sock: socket.socket, count: int, what: str) -> bytes:
    data = b""
    while len(data) < count:
        chunk = sock.recv(count - len(data))
        if not chunk:
            pytest.fail(f"connection closed after {data!r} while reading {what}")
        data += chunk
    return data


def open_connection(host: str, port: int, connect: bytes, timeout_s: float = DEFAULT_TIMEOUT_S):
    """Sends `connect` and reads the CONNACK: (socket, session present, return code)."""
    sock = socket.create_connection((host, port), timeout=timeout_s)
    sock.sendall(connect)
    header = read_exactly(sock, 4, "CONNACK")
    assert header[:2] == bytes([CONNACK, 2]), f"expected a CONNACK, got {header!r}"
    return sock, bool(header[2] & 0x01), header[3]


def open_session(host: str, port: int, client_id: str, **connect_options) -> socket.socket:
    """A connection the broker accepted."""
    sock, _session_present, code = open_connection(
        host, port, connect_packet(client_id, **connect_options)
    )
    assert code == ACCEPTED, f"CONNECT refused with return code {code}"
    return sock


def wait_until_closed(sock: socket.socket, timeout_s: float = DEFAULT_TIMEOUT_S) -> bytes:
    """Reads until the broker closes the connection; whatever it sent meanwhile."""
    deadline = time.monotonic() + timeout_s
    received = b""
    while True:
        remaining = deadline - time.monotonic()
        if remaining <= 0:
            pytest.fail(f"the broker did not close the connection within {timeout_s} s")
        sock.settimeout(remaining)
        try:
            chunk = sock.recv(4096)
        except socket.timeout:
            continue
        except ConnectionResetError:
            return received
        if not chunk:
            return received
        received += chunk


def disconnect(sock: socket.socket, timeout_s: float = DEFAULT_TIMEOUT_S) -> None:
    """A clean DISCONNECT. Returns once the broker has closed the connection, which it does
    after ending the session (MQTT 3.1.1 section 3.14.4: it SHOULD close it)."""
    sock.sendall(packet(DISCONNECT, b""))
    wait_until_closed(sock, timeout_s)
    sock.close()
