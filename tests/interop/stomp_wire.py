"""STOMP frames over a plain socket, for what stomp.py cannot be made to do.

These tests need three things from raw bytes: frames no client library sends (unknown commands,
oversized lines, a body with no NUL), a client that goes silent after promising heart-beats, and
the moment the broker closes the socket, which stomp.py hides behind its own clean-up. Layout
follows STOMP 1.2 section "STOMP Frames": a command line, header lines, a blank line, the body,
then NUL; a `content-length` header lets the body hold NULs; a bare EOL between frames is a
heart-beat.
"""

from __future__ import annotations

import socket
import time
from dataclasses import dataclass, field

import pytest

DEFAULT_TIMEOUT_S = 5.0
# Per recv(); short, so deadlines are checked often.
RECV_SLICE_S = 0.2
RECV_BYTES = 64 * 1024


@dataclass
class RawFrame:
    command: str
    headers: dict[str, str] = field(default_factory=dict)
    body: bytes = b""


def encode(command: str, headers: dict[str, str] | None = None, body: bytes = b"") -> bytes:
    """A frame as bytes; header values are written as given (no escaping)."""
    lines = [command] + [f"{name}:{value}" for name, value in (headers or {}).items()]
    return ("\n".join(lines) + "\n\n").encode("utf-8") + body + b"\0"


def connect_frame(
    version: str = "1.2",
    login: str = "guest",
    passcode: str = "guest",
    heart_beat: str | None = None,
) -> bytes:
    headers = {"accept-version": version, "host": "/", "login": login, "passcode": passcode}
    if heart_beat is not None:
        headers["heart-beat"] = heart_beat
    return encode("CONNECT", headers)


class Connection:
    """A socket and the frames read from it so far."""

    def __init__(self, host: str, port: int):
        self.sock = socket.create_connection((host, port), timeout=DEFAULT_TIMEOUT_S)
        self.sock.settimeout(RECV_SLICE_S)
        self.buffer = b""
        self.closed = False
        # Bare EOLs read between frames.
        self.heartbeats = 0

    def send(self, data: bytes, timeout_s: float = DEFAULT_TIMEOUT_S) -> None:
        """Writes `data`, failing the test if the broker has not read it all after `timeout_s`;
        a broker that closes the socket part way is not an error here (the test then checks
        what it answered)."""
        self.sock.settimeout(timeout_s)
        try:
            self.sock.sendall(data)
        except (BrokenPipeError, ConnectionResetError):
            pass
        except socket.timeout:
            pytest.fail(f"the broker read less than {len(data)} bytes sent within {timeout_s} s")
        finally:
            self.sock.settimeout(RECV_SLICE_S)

    def _fill(self) -> None:
        """One recv() into the buffer; sets `closed` at end of stream."""
        try:
            chunk = self.sock.recv(RECV_BYTES)
        except socket.timeout:
            return
        except ConnectionResetError:
            chunk = b""
        if not chunk:
            self.closed = True
        self.buffer += chunk

    def _take_frame(self) -> RawFrame | None:
        """The first complete frame in the buffer, removed from it, or None."""
        while self.buffer[:1] in (b"\n", b"\r"):
            end = 2 if self.buffer.startswith(b"\r\n") else 1
            if self.buffer[:1] == b"\r" and len(self.buffer) < 2:
                return None
            self.buffer = self.buffer[end:]
            self.heartbeats += 1
        head_end = self.buffer.find(b"\n\n")
        crlf_end = self.buffer.find(b"\r\n\r\n")
        if head_end < 0 and crlf_end < 0:
            return None
        if head_end < 0 or 0 <= crlf_end < head_end:
            head, body_start = self.buffer[:crlf_end], crlf_end + 4
        else:
            head, body_start = self.buffer[:head_end], head_end + 2
        lines = head.decode("utf-8").replace("\r\n", "\n").split("\n")
        headers: dict[str, str] = {}
        for line in lines[1:]:
            name, _, value = line.partition(":")
            headers.setdefault(name, value)  # the first of repeated headers counts
        if "content-length" in headers:
            body_end = body_start + int(headers["content-length"])
            if len(self.buffer) <= body_end:
                return None
        else:
            body_end = self.buffer.find(b"\0", body_start)
            if body_end < 0:
                return None
        frame = RawFrame(lines[0], headers, self.buffer[body_start:body_end])
        self.buffer = self.buffer[body_end + 1:]
        return frame

    def read_frame(self, timeout_s: float = DEFAULT_TIMEOUT_S) -> RawFrame:
        """The next frame; fails the test if the socket closes first or after `timeout_s`."""
        deadline = time.monotonic() + timeout_s
        while (frame := self._take_frame()) is None:
            if self.closed:
                pytest.fail(
                    f"the broker closed the connection without a frame; left {self.buffer[:200]!r}"
                )
            if time.monotonic() > deadline:
                pytest.fail(
                    f"timed out after {timeout_s} s waiting for a frame; have {self.buffer[:200]!r}"
                )
            self._fill()
        return frame

    def read_until_closed(self, timeout_s: float = DEFAULT_TIMEOUT_S) -> list[RawFrame]:
        """Every frame the broker sends until it closes the connection; fails the test if it
        is still open after `timeout_s`."""
        deadline = time.monotonic() + timeout_s
        frames: list[RawFrame] = []
        while True:
            while (frame := self._take_frame()) is not None:
                frames.append(frame)
            if self.closed:
                return frames
            if time.monotonic() > deadline:
                pytest.fail(
                    f"the broker kept the connection open for {timeout_s} s; frames so far: "
                    f"{[(frame.command, frame.headers, frame.body) for frame in frames]}"
                )
            self._fill()

    def close(self) -> None:
        self.sock.close()


class Opener:
    """Opens plain connections to one broker's STOMP port, and closes them all at the end."""

    def __init__(self, host: str, port: int):
        self.host = host
        self.port = port
        self.opened: list[Connection] = []

    def __call__(self) -> Connection:
        connection = Connection(self.host, self.port)
        self.opened.append(connection)
        return connection

    def session(self, **connect_options) -> tuple[Connection, RawFrame]:
        """A connection past CONNECT (see `connect_frame` for the options) and its
        CONNECTED; fails the test if the broker answers anything else."""
        connection = self()
        connection.send(connect_frame(**connect_options))
        connected = connection.read_frame()
        assert connected.command == "CONNECTED", f"CONNECT refused: {connected}"
        return connection, connected

    def close_all(self) -> None:
        for connection in self.opened:
            connection.close()
