"""stomp.py 8.x/9.x clients for the STOMP tests, waited on with deadlines, never with sleeps.

stomp.py reads frames on a thread of its own and hands them to its listeners. `StompClient` is
such a listener: it records CONNECTED, MESSAGE, RECEIPT and ERROR frames, heart-beats and the
end of the connection under one condition variable, and the test's thread waits on that until
what it expects has arrived or a deadline passes. Frames whose effect a test depends on (a
SUBSCRIBE before anything is published to it, a COMMIT, an ACK) carry a receipt, and the test
waits for it. Absence is proved with a sentinel, as in inbox.py: send what must not arrive, then
a sentinel to the same destination from the same connection; once the sentinel is in, anything
routed before it would be too.
"""

from __future__ import annotations

import threading
import time
import uuid
from typing import Callable

import pytest
import stomp
from stomp.utils import Frame

DEFAULT_TIMEOUT_S = 5.0
# The body `wait_for_sentinel` waits for unless told otherwise.
SENTINEL = b"sentinel"

CONNECTIONS = {"1.0": stomp.Connection10, "1.1": stomp.Connection11, "1.2": stomp.Connection12}


def unique_id(prefix: str) -> str:
    """A subscription, receipt or transaction id no other test uses."""
    return f"{prefix}-{uuid.uuid4().hex[:12]}"


class StompClient(stomp.ConnectionListener):
    """One stomp.py connection of the given STOMP version (which it alone offers in
    accept-version), not yet connected. Bodies stay bytes (`auto_decode=False`); header names
    and values are str."""

    def __init__(
        self,
        host: str,
        port: int,
        *,
        version: str = "1.2",
        heartbeats: tuple[int, int] = (0, 0),
        vhost: str = "/",
    ):
        self.version = version
        # One attempt: a test that is refused must see it, not race stomp.py's retries.
        options = dict(
            host_and_ports=[(host, port)],
            auto_decode=False,
            reconnect_attempts_max=1,
            timeout=DEFAULT_TIMEOUT_S,
        )
        if version != "1.0":
            # `host` in CONNECT is the vhost for RabbitMQ's plugin and Warren's; without it
            # stomp.py 1.2 sends the server's host name there.
            options.update(heartbeats=heartbeats, vhost=vhost)
        self.connection = CONNECTIONS[version](**options)
        self.connection.set_listener("recorder", self)
        self.connected: list[Frame] = []
        self.messages: list[Frame] = []
        self.receipts: list[str] = []
        self.errors: list[Frame] = []
        self.heartbeats = 0
        self.disconnected = False
        self._changed = threading.Condition()

    # -- stomp.py listener callbacks (its receiver thread) ---------------------------------

    def _record(self, update: Callable[[], None]) -> None:
        with self._changed:
            update()
            self._changed.notify_all()

    def on_connected(self, frame: Frame) -> None:
        self._record(lambda: self.connected.append(frame))

    def on_message(self, frame: Frame) -> None:
        self._record(lambda: self.messages.append(frame))

    def on_receipt(self, frame: Frame) -> None:
        self._record(lambda: self.receipts.append(frame.headers["receipt-id"]))

    def on_error(self, frame: Frame) -> None:
        self._record(lambda: self.errors.append(frame))

    def on_heartbeat(self) -> None:
        def count() -> None:
            self.heartbeats += 1
        self._record(count)

    def on_disconnected(self) -> None:
        self._record(lambda: setattr(self, "disconnected", True))

    # -- waiting ---------------------------------------------------------------------------

    def wait_until(self, condition: Callable[[], bool], what: str, timeout_s: float) -> None:
        """Until `condition()` (read under the lock) holds; fail the test after `timeout_s`."""
        deadline = time.monotonic() + timeout_s
        with self._changed:
            while not condition():
                remaining = deadline - time.monotonic()
                if remaining <= 0:
                    pytest.fail(
                        f"STOMP {self.version}: timed out after {timeout_s} s waiting for {what}; "
                        f"errors {[describe(error) for error in self.errors]}"
                    )
                self._changed.wait(timeout=remaining)

    def wait_for_receipt(self, receipt: str, timeout_s: float = DEFAULT_TIMEOUT_S) -> None:
        self.wait_until(lambda: receipt in self.receipts, f"RECEIPT {receipt!r}", timeout_s)

    def wait_for_messages(self, count: int, timeout_s: float = DEFAULT_TIMEOUT_S) -> list[Frame]:
        """Every MESSAGE received so far, once there are at least `count`."""
        self.wait_until(
            lambda: len(self.messages) >= count,
            f"{count} messages (have {[message.body for message in self.messages]})",
            timeout_s,
        )
        with self._changed:
            return list(self.messages)

    def wait_for_sentinel(
        self, sentinel: bytes = SENTINEL, timeout_s: float = DEFAULT_TIMEOUT_S
    ) -> list[Frame]:
        """The messages received before the first one whose body is `sentinel`."""
        def sentinel_in() -> bool:
            return any(message.body == sentinel for message in self.messages)

        self.wait_until(
            sentinel_in,
            f"the sentinel {sentinel!r} (have {[message.body for message in self.messages]})",
            timeout_s,
        )
        with self._changed:
            bodies = [message.body for message in self.messages]
            return self.messages[:bodies.index(sentinel)]

    def wait_for_error(self, timeout_s: float = DEFAULT_TIMEOUT_S) -> Frame:
        self.wait_until(lambda: self.errors, "an ERROR frame", timeout_s)
        return self.errors[0]

    def wait_for_disconnect(self, timeout_s: float = DEFAULT_TIMEOUT_S) -> None:
        """Until the socket is closed, by either side."""
        self.wait_until(lambda: self.disconnected, "the connection to close", timeout_s)

    def messages_within(self, window_s: float) -> list[Frame]:
        """The messages received by the end of a fixed window. Only for proving that something
        does *not* arrive where no sentinel can order it (a prefetch limit); never for waiting
        on state."""
        deadline = time.monotonic() + window_s
        with self._changed:
            while (remaining := deadline - time.monotonic()) > 0:
                self._changed.wait(timeout=remaining)
            return list(self.messages)

    # -- actions ---------------------------------------------------------------------------

    def try_connect(
        self,
        login: str | None = "guest",
        passcode: str | None = "guest",
        timeout_s: float = DEFAULT_TIMEOUT_S,
        **headers: str,
    ) -> Frame:
        """Sends CONNECT (stomp.py sends the STOMP command for 1.1 and 1.2, CONNECT for 1.0)
        and returns the answer, CONNECTED or ERROR. `login=None` sends no credentials."""
        self.connection.connect(login, passcode, wait=False, headers=headers)
        self.wait_until(lambda: self.connected or self.errors, "CONNECTED or ERROR", timeout_s)
        return self.connected[0] if self.connected else self.errors[0]

    def connect(self, login: str = "guest", passcode: str = "guest", **headers: str) -> Frame:
        """Sends CONNECT; fails the test unless the broker answers CONNECTED."""
        answer = self.try_connect(login, passcode, **headers)
        assert answer.cmd == "CONNECTED", f"CONNECT refused: {describe(answer)}"
        return answer

    def subscribe(
        self,
        destination: str,
        id: str | None = None,
        ack: str = "auto",
        receipt: bool = True,
        **headers: str,
    ) -> str:
        """SUBSCRIBE, waiting for its RECEIPT unless `receipt=False`; returns the id."""
        id = id or unique_id("sub")
        if receipt:
            headers["receipt"] = unique_id("subscribe")
        if self.version == "1.0":
            self.connection.subscribe(destination, id=id, ack=ack, headers=headers)
        else:
            self.connection.subscribe(destination, id, ack=ack, headers=headers)
        if receipt:
            self.wait_for_receipt(headers["receipt"])
        return id

    def unsubscribe(self, id: str, **headers: str) -> None:
        headers["receipt"] = unique_id("unsubscribe")
        if self.version == "1.0":
            self.connection.unsubscribe(id=id, headers=headers)
        else:
            self.connection.unsubscribe(id, headers=headers)
        self.wait_for_receipt(headers["receipt"])

    def send(self, destination: str, body: bytes, receipt: bool = False, **headers: str) -> None:
        """SEND, with a content-length (stomp.py adds one); waits for a RECEIPT if asked."""
        if receipt:
            headers["receipt"] = unique_id("send")
        self.connection.send(destination, body, headers=headers)
        if receipt:
            self.wait_for_receipt(headers["receipt"])

    def _settle(self, command: str, message: Frame, receipt: bool, transaction: str | None) -> None:
        """ACK or NACK `message`, naming it as its version does: STOMP 1.2 by the MESSAGE's
        `ack` header, 1.1 by message-id and subscription, 1.0 by message-id."""
        receipt_id = unique_id(command) if receipt else None
        settle = getattr(self.connection, command)
        if self.version == "1.2":
            settle(message.headers["ack"], transaction=transaction, receipt=receipt_id)
        elif self.version == "1.1":
            settle(
                message.headers["message-id"], message.headers["subscription"],
                transaction=transaction, receipt=receipt_id,
            )
        else:
            settle(message.headers["message-id"], transaction=transaction, receipt=receipt_id)
        if receipt_id:
            self.wait_for_receipt(receipt_id)

    def ack(self, message: Frame, receipt: bool = True, transaction: str | None = None) -> None:
        self._settle("ack", message, receipt, transaction)

    def nack(self, message: Frame, receipt: bool = True, transaction: str | None = None) -> None:
        self._settle("nack", message, receipt, transaction)

    def begin(self) -> str:
        transaction = unique_id("tx")
        receipt = unique_id("begin")
        self.connection.begin(transaction, headers={"receipt": receipt})
        self.wait_for_receipt(receipt)
        return transaction

    def commit(self, transaction: str) -> None:
        receipt = unique_id("commit")
        self.connection.commit(transaction, headers={"receipt": receipt})
        self.wait_for_receipt(receipt)

    def abort(self, transaction: str) -> None:
        receipt = unique_id("abort")
        self.connection.abort(transaction, headers={"receipt": receipt})
        self.wait_for_receipt(receipt)

    def disconnect(self, receipt: str | None = None, timeout_s: float = DEFAULT_TIMEOUT_S) -> None:
        """A clean DISCONNECT: waits for its RECEIPT and for the socket to close."""
        receipt = receipt or unique_id("disconnect")
        self.connection.disconnect(receipt=receipt)
        self.wait_for_receipt(receipt, timeout_s)
        self.wait_for_disconnect(timeout_s)

    def drop(self, timeout_s: float = DEFAULT_TIMEOUT_S) -> None:
        """Closes the socket without DISCONNECT, as a crashed client would."""
        self.connection.transport.disconnect_socket()
        self.wait_for_disconnect(timeout_s)

    def close(self) -> None:
        """Cleanup: close the socket if still open and stop stomp.py's receiver thread."""
        if self.connection.is_connected():
            self.connection.disconnect()
        self.connection.transport.disconnect_socket()
        self.connection.transport.stop()


def describe(frame: Frame) -> str:
    """A frame for failure messages: command, headers, body."""
    return f"{frame.cmd} {frame.headers} {frame.body!r}"
