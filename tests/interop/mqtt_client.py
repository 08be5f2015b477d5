"""paho-mqtt 2.x clients for the MQTT tests, waited on with deadlines, never with sleeps.

Each client runs paho's network loop in its own thread (`loop_start`). Its callbacks record
CONNACKs, SUBACKs, messages and disconnects under one condition variable, and the test's thread
waits on that until what it expects has arrived or a deadline passes. Absence is proved with a
sentinel, as in inbox.py: publish what must not arrive, then a sentinel on the same topic from
the same connection at QoS 1. Once the sentinel is in, anything routed before it would be too.
"""

from __future__ import annotations

import threading
import time
import uuid
from dataclasses import dataclass
from typing import Callable

import paho.mqtt.client as mqtt
import pytest
from paho.mqtt.reasoncodes import ReasonCode

DEFAULT_TIMEOUT_S = 5.0
# Long enough that no keep-alive traffic happens during a test.
KEEPALIVE_S = 30
# MQTT 3.1 servers may refuse client ids longer than this (3.1.1 servers must accept them).
CLIENT_ID_MAX_CHARS = 23
# The payload `wait_for_sentinel` waits for unless told otherwise.
SENTINEL = b"sentinel"


def unique_client_id(prefix: str) -> str:
    """A client id no other test uses, short enough for MQTT 3.1."""
    return f"{prefix[:CLIENT_ID_MAX_CHARS - 13]}-{uuid.uuid4().hex[:12]}"


def unique_topic(prefix: str) -> str:
    """A topic level no other test publishes under (no `/`, `.`, `+` or `#` in it)."""
    return f"{prefix}-{uuid.uuid4().hex[:12]}"


@dataclass(frozen=True)
class Received:
    """One PUBLISH the broker delivered, as the test compares it."""

    topic: str
    payload: bytes
    qos: int
    retain: bool = False


@dataclass(frozen=True)
class Connack:
    """The broker's CONNACK. paho maps MQTT 3 return codes onto MQTT 5 reason codes, whose
    `str` is the name: "Success", "Not authorized", "Bad user name or password", ..."""

    reason_code: ReasonCode
    session_present: bool


class MqttClient:
    """One paho client. `username=None` sends a CONNECT without credentials."""

    def __init__(
        self,
        host: str,
        port: int,
        client_id: str,
        *,
        username: str | None = "guest",
        password: str | None = "guest",
        clean_session: bool = True,
        protocol: int = mqtt.MQTTv311,
        websocket_path: str | None = None,
    ):
        """`websocket_path` set: MQTT over a WebSocket at that path of `host:port`."""
        self.host = host
        self.port = port
        self.client_id = client_id
        # No reconnecting: a test that is disconnected (refused, taken over) must see it, not
        # race paho's retries.
        self.client = mqtt.Client(
            mqtt.CallbackAPIVersion.VERSION2,
            client_id=client_id,
            clean_session=clean_session,
            protocol=protocol,
            reconnect_on_failure=False,
            transport="tcp" if websocket_path is None else "websockets",
        )
        if websocket_path is not None:
            self.client.ws_set_options(path=websocket_path)
        if username is not None:
            self.client.username_pw_set(username, password)
        self.connacks: list[Connack] = []
        self.subacks: dict[int, list[ReasonCode]] = {}
        self.messages: list[Received] = []
        self.disconnects: list[ReasonCode] = []
        self._changed = threading.Condition()
        self.client.on_connect = self._on_connect
        self.client.on_subscribe = self._on_subscribe
        self.client.on_message = self._on_message
        self.client.on_disconnect = self._on_disconnect

    # -- paho callbacks (network thread) ---------------------------------------------------

    def _record(self, update: Callable[[], None]) -> None:
        with self._changed:
            update()
            self._changed.notify_all()

    def _on_connect(self, _client, _userdata, flags, reason_code, _properties) -> None:
        connack = Connack(reason_code, bool(flags.session_present))
        self._record(lambda: self.connacks.append(connack))

    def _on_subscribe(self, _client, _userdata, mid, reason_codes, _properties) -> None:
        self._record(lambda: self.subacks.__setitem__(mid, list(reason_codes)))

    def _on_message(self, _client, _userdata, message) -> None:
        received = Received(message.topic, message.payload, message.qos, bool(message.retain))
        self._record(lambda: self.messages.append(received))

    def _on_disconnect(self, _client, _userdata, _flags, reason_code, _properties) -> None:
        self._record(lambda: self.disconnects.append(reason_code))

    # -- waiting ---------------------------------------------------------------------------

    def wait_until(self, condition: Callable[[], bool], what: str, timeout_s: float) -> None:
        """Until `condition()` (read under the lock) holds; fail the test after `timeout_s`."""
        deadline = time.monotonic() + timeout_s
        with self._changed:
            while not condition():
                remaining = deadline - time.monotonic()
                if remaining <= 0:
                    pytest.fail(f"{self.client_id}: timed out after {timeout_s} s waiting for {what}")
                self._changed.wait(timeout=remaining)

    # -- actions ---------------------------------------------------------------------------

    def try_connect(self, timeout_s: float = DEFAULT_TIMEOUT_S) -> Connack:
        """Sends CONNECT and returns the CONNACK, whatever its return code."""
        self.client.connect(self.host, self.port, keepalive=KEEPALIVE_S)
        self.client.loop_start()
        self.wait_until(lambda: self.connacks, "CONNACK", timeout_s)
        return self.connacks[-1]

    def connect(self, timeout_s: float = DEFAULT_TIMEOUT_S) -> Connack:
        """Sends CONNECT; fails the test unless the broker accepts it."""
        connack = self.try_connect(timeout_s)
        assert not connack.reason_code.is_failure, (
            f"{self.client_id}: CONNECT refused: {connack.reason_code}"
        )
        return connack

    def subscribe(self, topic_filter: str, qos: int, timeout_s: float = DEFAULT_TIMEOUT_S) -> list[int]:
        """SUBSCRIBE one filter; the SUBACK's return codes (granted QoS, or 0x80 for failure)."""
        result, mid = self.client.subscribe(topic_filter, qos)
        assert result == mqtt.MQTT_ERR_SUCCESS, f"subscribe {topic_filter!r}: {result}"
        self.wait_until(lambda: mid in self.subacks, f"SUBACK for {topic_filter!r}", timeout_s)
        return [code.value for code in self.subacks[mid]]

    def publish(
        self,
        topic: str,
        payload: bytes,
        qos: int = 0,
        retain: bool = False,
        timeout_s: float = DEFAULT_TIMEOUT_S,
    ) -> None:
        """PUBLISH and wait until paho counts it published: written for QoS 0, PUBACK for QoS 1,
        PUBCOMP for QoS 2."""
        info = self.client.publish(topic, payload, qos=qos, retain=retain)
        info.wait_for_publish(timeout_s)
        assert info.is_published(), (
            f"{self.client_id}: publish to {topic!r} at QoS {qos} not completed after {timeout_s} s"
        )

    def wait_for_messages(self, count: int, timeout_s: float = DEFAULT_TIMEOUT_S) -> list[Received]:
        """Every message received so far, once there are at least `count`."""
        self.wait_until(
            lambda: len(self.messages) >= count,
            f"{count} messages (have {self.messages})",
            timeout_s,
        )
        with self._changed:
            return list(self.messages)

    def wait_for_sentinel(
        self, sentinel: bytes = SENTINEL, timeout_s: float = DEFAULT_TIMEOUT_S
    ) -> list[Received]:
        """The messages received before the first one whose payload is `sentinel`."""
        def sentinel_in() -> bool:
            return any(message.payload == sentinel for message in self.messages)

        self.wait_until(sentinel_in, f"the sentinel {sentinel!r} (have {self.messages})", timeout_s)
        with self._changed:
            payloads = [message.payload for message in self.messages]
            return self.messages[:payloads.index(sentinel)]

    def wait_for_disconnect(self, timeout_s: float = DEFAULT_TIMEOUT_S) -> ReasonCode:
        """The reason paho gives once the connection is gone."""
        self.wait_until(lambda: self.disconnects, "the connection to close", timeout_s)
        return self.disconnects[0]

    def is_connected(self) -> bool:
        return self.client.is_connected()

    def disconnect(self, timeout_s: float = DEFAULT_TIMEOUT_S) -> None:
        """A clean DISCONNECT; returns once paho has sent it and closed the socket."""
        self.client.disconnect()
        self.wait_for_disconnect(timeout_s)
        self.client.loop_stop()

    def close(self) -> None:
        """Cleanup: disconnect if still connected, and stop the network thread."""
        if self.client.is_connected():
            self.client.disconnect()
        self.client.loop_stop()
