"""The Warren broker process under test: find the binary, start it on a free port, stop it.

The broker is started with `--amqp-port 0 --mqtt-port 0 --stomp-port 0` and tells us the ports
it picked in log lines on stderr (`listening protocol=amqp addr=127.0.0.1:PORT`, and the same
with `protocol=mqtt` and `protocol=stomp`). A thread drains stderr into a file for the whole
session, so a chatty broker can never block on a full pipe.
"""

from __future__ import annotations

import os
import re
import signal
import subprocess
import threading
import time
from pathlib import Path

import pika

REPO_ROOT = Path(__file__).resolve().parents[2]

LISTENING_LINE = re.compile(r"listening protocol=(\w+) addr=(\S+):(\d+)")

# The stand-in that runs RabbitMQ instead of Warren (see reference-rabbitmq.sh). It serves AMQP
# and STOMP, and MQTT only when REFERENCE_MQTT_VARIABLE is set (and not 0): no MQTT listening
# line is awaited from it otherwise. Tests marked `warren_only`, and `mqtt` ones when it has no
# MQTT, skip under it.
REFERENCE_STAND_IN = "reference-rabbitmq.sh"
REFERENCE_MQTT_VARIABLE = "WARREN_REFERENCE_MQTT"

# The contract says the log has no colours; this only guards against a logger that switches
# them on anyway, which would split `key=value` pairs with escape codes.
ANSI_ESCAPE = re.compile(r"\x1b\[[0-9;]*m")

# A debug build on a busy 2-core machine can take a few seconds to start. Overridable for slow
# stand-ins such as reference-rabbitmq.sh.
STARTUP_TIMEOUT_S = float(os.environ.get("WARREN_STARTUP_TIMEOUT_S", "20"))
# SIGTERM gets this long for a polite shutdown before SIGKILL.
STOP_TIMEOUT_S = 10.0


class BrokerNotBuilt(RuntimeError):
    """No broker binary was found where the contract says it lives."""


def resolve_binary() -> Path:
    """`$WARREN_BIN`, else the release build, else the debug build."""
    from_env = os.environ.get("WARREN_BIN")
    if from_env:
        path = Path(from_env).resolve()  # the broker runs with its work dir as cwd
        if not path.exists():
            raise BrokerNotBuilt(f"WARREN_BIN={from_env} does not exist")
        return path
    for profile in ("release", "debug"):
        path = REPO_ROOT / "target" / profile / "warren"
        if path.exists():
            return path
    raise BrokerNotBuilt(
        f"no broker binary: set WARREN_BIN or build {REPO_ROOT}/target/{{release,debug}}/warren"
    )


class Broker:
    """One running broker process and where to reach it."""

    def __init__(self, binary: Path, work_dir: Path, config_text: str | None = None):
        self.binary = binary
        self.work_dir = work_dir
        # Written to work_dir/warren.toml and passed with `--config` when given.
        self.config_text = config_text
        self.data_dir = work_dir / "data"
        self.data_dir.mkdir(parents=True, exist_ok=True)
        self.stderr_path = work_dir / "warren.stderr.log"
        self.stdout_path = work_dir / "warren.stdout.log"
        self.host: str = ""
        self.port: int = 0
        # None when the broker serves no MQTT (the RabbitMQ stand-in).
        self.mqtt_host: str | None = None
        self.mqtt_port: int | None = None
        # None when the broker serves no STOMP.
        self.stomp_host: str | None = None
        self.stomp_port: int | None = None
        # None when the broker serves no WebSockets (the RabbitMQ stand-in).
        self.http_host: str | None = None
        self.http_port: int | None = None
        self._lines: list[str] = []
        self._lines_changed = threading.Condition()
        self._stderr_closed = False
        self._process: subprocess.Popen | None = None
        self._drain_thread: threading.Thread | None = None

    # -- lifecycle -------------------------------------------------------------------------

    def start(self) -> None:
        environment = dict(os.environ, NO_COLOR="1")
        command = [
            str(self.binary),
            "--amqp-port", "0",
            "--mqtt-port", "0",
            "--stomp-port", "0",
            "--http-port", "0",
            "--bind", "127.0.0.1",
            "--data-dir", str(self.data_dir),
            "--log-level", "info",
        ]
        if self.config_text is not None:
            config_path = self.work_dir / "warren.toml"
            config_path.write_text(self.config_text, encoding="utf-8")
            command += ["--config", str(config_path)]
        with open(self.stdout_path, "wb") as stdout:
            self._process = subprocess.Popen(
                command,
                stdin=subprocess.DEVNULL,
                stdout=stdout,
                stderr=subprocess.PIPE,
                env=environment,
                cwd=self.work_dir,
            )
        self._drain_thread = threading.Thread(
            target=self._drain_stderr, name="warren-stderr", daemon=True
        )
        self._drain_thread.start()
        listeners = self._wait_for_listening_lines(self.protocols)
        self.host, self.port = listeners["amqp"]
        if "mqtt" in listeners:
            self.mqtt_host, self.mqtt_port = listeners["mqtt"]
        if "stomp" in listeners:
            self.stomp_host, self.stomp_port = listeners["stomp"]
        if "http" in listeners:
            self.http_host, self.http_port = listeners["http"]

    def listening_address(self, protocol: str) -> tuple[str, int]:
        """(host, port) of a listener that logs its line after startup, such as a protocol
        plugin's (`protocol=resp`)."""
        return self._wait_for_listening_lines((protocol,))[protocol]

    def stop(self) -> int | None:
        """SIGTERM, then SIGKILL after STOP_TIMEOUT_S. Returns the exit code, or None if killed."""
        process = self._process
        if process is None or process.poll() is not None:
            return process.returncode if process else None
        process.send_signal(signal.SIGTERM)
        try:
            return process.wait(timeout=STOP_TIMEOUT_S)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()
            return None
        finally:
            if self._drain_thread is not None:
                self._drain_thread.join(timeout=STOP_TIMEOUT_S)

    @property
    def is_reference(self) -> bool:
        """Whether this is the RabbitMQ stand-in rather than Warren."""
        return self.binary.name == REFERENCE_STAND_IN

    @property
    def protocols(self) -> tuple[str, ...]:
        """The listeners whose lines `start` waits for."""
        if not self.is_reference:
            return ("amqp", "mqtt", "stomp", "http")
        if os.environ.get(REFERENCE_MQTT_VARIABLE, "") not in ("", "0"):
            return ("amqp", "stomp", "mqtt")
        return ("amqp", "stomp")

    def is_running(self) -> bool:
        return self._process is not None and self._process.poll() is None

    # -- clients ---------------------------------------------------------------------------

    def params(self, **overrides) -> pika.ConnectionParameters:
        """Connection parameters for this broker; guest/guest on "/" unless overridden."""
        settings = dict(
            host=self.host,
            port=self.port,
            virtual_host="/",
            credentials=pika.PlainCredentials("guest", "guest"),
            connection_attempts=1,
            socket_timeout=5,
            stack_timeout=10,
            blocked_connection_timeout=10,
        )
        settings.update(overrides)
        return pika.ConnectionParameters(**settings)

    # -- log -------------------------------------------------------------------------------

    def log_tail(self, line_count: int = 40) -> str:
        with self._lines_changed:
            return "".join(self._lines[-line_count:])

    def _drain_stderr(self) -> None:
        assert self._process is not None and self._process.stderr is not None
        with open(self.stderr_path, "w", encoding="utf-8") as log:
            for raw in iter(self._process.stderr.readline, b""):
                line = ANSI_ESCAPE.sub("", raw.decode("utf-8", errors="replace"))
                log.write(line)
                log.flush()
                with self._lines_changed:
                    self._lines.append(line)
                    self._lines_changed.notify_all()
        with self._lines_changed:
            self._stderr_closed = True
            self._lines_changed.notify_all()

    def _wait_for_listening_lines(self, protocols: tuple[str, ...]) -> dict[str, tuple[str, int]]:
        """(host, port) by protocol, once every one of `protocols` has logged its line."""
        deadline = time.monotonic() + STARTUP_TIMEOUT_S
        scanned = 0
        listeners: dict[str, tuple[str, int]] = {}
        with self._lines_changed:
            while True:
                for line in self._lines[scanned:]:
                    match = LISTENING_LINE.search(line)
                    if match:
                        listeners[match.group(1)] = (match.group(2), int(match.group(3)))
                scanned = len(self._lines)
                if all(protocol in listeners for protocol in protocols):
                    return listeners
                remaining = deadline - time.monotonic()
                if self._stderr_closed or remaining <= 0:
                    break
                self._lines_changed.wait(timeout=min(remaining, 0.5))
        exit_code = self._process.poll() if self._process else None
        self.stop()
        missing = ", ".join(protocol for protocol in protocols if protocol not in listeners)
        reason = (
            f"exited with code {exit_code}" if exit_code is not None
            else f"logged no listening line for {missing} within {STARTUP_TIMEOUT_S:.0f} s"
        )
        raise RuntimeError(
            f"broker {self.binary} {reason}; stderr ({self.stderr_path}):\n{self.log_tail(80)}"
        )
