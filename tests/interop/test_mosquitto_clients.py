"""Smoke tests with Mosquitto's command-line clients, mosquitto_sub and mosquitto_pub (Debian's
mosquitto-clients, which scripts/test installs; skipped without them).

mosquitto_sub runs in the background with `-d`, whose "Subscribed (mid: N): QOS" line says that
the SUBACK is in, and so that a publish from then on reaches it. On a pipe the C library buffers
stdout until exit, so stdbuf makes it line-buffered.
"""

from __future__ import annotations

import queue
import shutil
import subprocess
import threading
import time

import pytest

from mqtt_client import unique_topic

CLIENTS = ("mosquitto_sub", "mosquitto_pub", "stdbuf")
missing = [name for name in CLIENTS if shutil.which(name) is None]

pytestmark = [
    pytest.mark.mqtt,
    pytest.mark.skipif(
        bool(missing),
        reason=f"not installed: {', '.join(missing)} (Debian: apt-get install mosquitto-clients)",
    ),
]

TIMEOUT_S = 5.0
PROTOCOLS = ["mqttv5", "mqttv311", "mqttv31"]


def connection_arguments(broker, username="guest", password="guest") -> list[str]:
    arguments = ["-h", broker.mqtt_host, "-p", str(broker.mqtt_port)]
    if username is not None:
        arguments += ["-u", username, "-P", password]
    return arguments


class Subscriber:
    """A background `mosquitto_sub -d`, its stdout read line by line on a thread."""

    def __init__(self, arguments: list[str]):
        self.process = subprocess.Popen(
            ["stdbuf", "-oL", "mosquitto_sub", "-d", *arguments],
            stdin=subprocess.DEVNULL,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
        )
        self.lines: queue.Queue[str | None] = queue.Queue()
        self.seen: list[str] = []
        threading.Thread(target=self._read, name="mosquitto_sub", daemon=True).start()

    def _read(self) -> None:
        assert self.process.stdout is not None
        for raw in self.process.stdout:
            self.lines.put(raw.decode("utf-8", errors="replace").rstrip("\n"))
        self.lines.put(None)

    def wait_for_line(self, prefix: str, timeout_s: float = TIMEOUT_S) -> str:
        deadline = time.monotonic() + timeout_s
        while True:
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                pytest.fail(f"no line starting {prefix!r} within {timeout_s} s: {self.seen}")
            try:
                line = self.lines.get(timeout=remaining)
            except queue.Empty:
                continue
            if line is None:
                pytest.fail(f"mosquitto_sub ended before printing {prefix!r}: {self.seen} {self.stderr()}")
            self.seen.append(line)
            if line.startswith(prefix):
                return line

    def finish(self, timeout_s: float = TIMEOUT_S) -> int:
        """Waits for the exit (it exits by itself after `-C` messages); the exit code."""
        try:
            code = self.process.wait(timeout=timeout_s)
        except subprocess.TimeoutExpired:
            pytest.fail(f"mosquitto_sub still running after {timeout_s} s: {self.seen}")
        while (line := self.lines.get(timeout=timeout_s)) is not None:
            self.seen.append(line)
        return code

    def stderr(self) -> str:
        if self.process.poll() is None or self.process.stderr is None:
            return ""
        return self.process.stderr.read().decode("utf-8", errors="replace")

    def stop(self) -> None:
        if self.process.poll() is None:
            self.process.kill()
        self.process.wait()
        for stream in (self.process.stdout, self.process.stderr):
            if stream is not None:
                stream.close()


@pytest.fixture
def mosquitto_sub():
    """Factory: `mosquitto_sub(arguments)` starts a Subscriber, killed after the test."""
    started: list[Subscriber] = []

    def start(arguments: list[str]) -> Subscriber:
        subscriber = Subscriber(arguments)
        started.append(subscriber)
        return subscriber

    yield start
    for subscriber in started:
        subscriber.stop()


def mosquitto_pub(arguments: list[str]) -> subprocess.CompletedProcess:
    return subprocess.run(
        ["mosquitto_pub", *arguments],
        stdin=subprocess.DEVNULL,
        capture_output=True,
        text=True,
        timeout=TIMEOUT_S,
    )


@pytest.mark.parametrize("version", PROTOCOLS)
def test_mosquitto_pub_to_mosquitto_sub(broker, mosquitto_sub, version):
    topic = f"test/{unique_topic('topic')}"
    subscriber = mosquitto_sub(
        ["-V", version, "-C", "1", "-W", "5", "-q", "1", "-t", topic, *connection_arguments(broker)]
    )
    assert subscriber.wait_for_line("Subscribed (mid:") == "Subscribed (mid: 1): 1"

    published = mosquitto_pub(
        ["-V", version, "-q", "1", "-t", topic, "-m", "hello", *connection_arguments(broker)]
    )
    assert published.returncode == 0, published.stderr

    assert subscriber.finish() == 0, f"{subscriber.seen} {subscriber.stderr()}"
    # With -d the debug lines start "Client "; the message is printed as is.
    assert [line for line in subscriber.seen if not line.startswith(("Client ", "Subscribed"))] == [
        "hello"
    ]
    assert any(f"received PUBLISH (d0, q1, r0, m1, '{topic}'" in line for line in subscriber.seen)


@pytest.mark.parametrize("version", PROTOCOLS)
def test_mosquitto_retained_message(broker, mosquitto_sub, version):
    """`mosquitto_pub -r` stores the message; a later `mosquitto_sub` gets it, flagged
    retained (r1 in the debug line)."""
    topic = f"test/{unique_topic('retained')}"
    published = mosquitto_pub(
        ["-V", version, "-q", "1", "-r", "-t", topic, "-m", "kept", *connection_arguments(broker)]
    )
    assert published.returncode == 0, published.stderr
    subscriber = mosquitto_sub(
        ["-V", version, "-C", "1", "-W", "5", "-q", "1", "-t", topic, *connection_arguments(broker)]
    )
    assert subscriber.finish() == 0, f"{subscriber.seen} {subscriber.stderr()}"
    assert "kept" in subscriber.seen
    assert any(f"q1, r1, m1, '{topic}'" in line for line in subscriber.seen), subscriber.seen
    # Clear it again: an empty retained message.
    cleared = mosquitto_pub(
        ["-V", version, "-q", "1", "-r", "-n", "-t", topic, *connection_arguments(broker)]
    )
    assert cleared.returncode == 0, cleared.stderr


@pytest.mark.parametrize(
    ("username", "password", "message"),
    [
        ("guest", "wrong", "Connection Refused: bad user name or password."),
        (None, None, "Connection Refused: not authorised."),
    ],
)
def test_mosquitto_pub_refused(broker, username, password, message):
    """CONNACK return codes 4 and 5, as mosquitto_pub words them; it then exits non-zero."""
    published = mosquitto_pub(
        ["-q", "1", "-t", "test/refused", "-m", "x", *connection_arguments(broker, username, password)]
    )
    assert f"Connection error: {message}" in published.stderr
    assert published.returncode != 0
