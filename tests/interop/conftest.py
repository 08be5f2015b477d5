"""Fixtures for the interop suite (pika, paho-mqtt, stomp.py): one broker per session, fresh
connections per test.

Run with `tests/interop/run.sh` from anywhere, or `python -m pytest -q tests/interop` from the
repository root once pika and pytest are installed. The broker binary is `$WARREN_BIN`, else
target/release/warren, else target/debug/warren.
"""

from __future__ import annotations

import signal
import warnings

import pika
import pytest

import stomp_wire
from broker import REFERENCE_STAND_IN, Broker, BrokerNotBuilt, resolve_binary
from mqtt_client import MqttClient, unique_client_id
from stomp_client import StompClient

# A hung test (a broker that never answers a synchronous method) would block pika forever,
# since its blocking calls have no timeout of their own. The whole suite should take well under
# a minute, so any single test taking this long is stuck.
TEST_TIMEOUT_S = 20.0

_session_broker: Broker | None = None
# Brokers started by `start_broker` for the running test, for the failure report.
_test_brokers: list[Broker] = []


class TestHung(BaseException):
    """Raised in the main thread by SIGALRM when a test exceeds TEST_TIMEOUT_S. A BaseException
    so that no `except Exception` inside pika can swallow it."""

    __test__ = False  # not a test class, despite the name


@pytest.fixture(scope="session")
def broker(tmp_path_factory) -> Broker:
    global _session_broker
    try:
        binary = resolve_binary()
    except BrokerNotBuilt as error:
        pytest.fail(str(error), pytrace=False)
    running = Broker(binary, tmp_path_factory.mktemp("warren"))
    running.start()
    _session_broker = running
    yield running
    _session_broker = None
    if running.stop() is None:
        warnings.warn(
            f"broker did not exit within the SIGTERM grace period and was killed; "
            f"log: {running.stderr_path}"
        )


@pytest.fixture(autouse=True)
def _test_deadline():
    def on_alarm(_signal_number, _frame):
        raise TestHung(f"test still running after {TEST_TIMEOUT_S} s")

    previous = signal.signal(signal.SIGALRM, on_alarm)
    signal.setitimer(signal.ITIMER_REAL, TEST_TIMEOUT_S)
    yield
    signal.setitimer(signal.ITIMER_REAL, 0)
    signal.signal(signal.SIGALRM, previous)


def pytest_runtest_setup(item):
    marker = item.get_closest_marker("warren_only")
    if marker is None:
        return
    try:
        binary = resolve_binary()
    except BrokerNotBuilt:
        return  # the broker fixture reports it
    if binary.name == REFERENCE_STAND_IN:
        reason = marker.args[0] if marker.args else "no RabbitMQ equivalent"
        pytest.skip(f"Warren-only: {reason}")


@pytest.fixture(autouse=True)
def _mqtt_marker(request):
    """Tests marked `mqtt` skip when the broker serves no MQTT (the RabbitMQ stand-in)."""
    if request.node.get_closest_marker("mqtt") is None:
        return
    if request.getfixturevalue("broker").mqtt_port is None:
        pytest.skip("MQTT: the broker under test has no MQTT listener")


@pytest.fixture(autouse=True)
def _stomp_marker(request):
    """Tests marked `stomp` skip when the broker serves no STOMP."""
    if request.node.get_closest_marker("stomp") is None:
        return
    if request.getfixturevalue("broker").stomp_port is None:
        pytest.skip("STOMP: the broker under test has no STOMP listener")


@pytest.fixture
def start_broker(broker, tmp_path_factory):
    """Factory: `start_broker(config_text)` starts a separate broker with `--config` pointing at
    a file holding `config_text` (TOML), for settings the session broker does not have. It is
    stopped after the test. Depends on `broker` only so that a missing binary fails once, the
    same way."""
    def start(config_text: str) -> Broker:
        running = Broker(broker.binary, tmp_path_factory.mktemp("warren-config"), config_text)
        # The startup has its own timeout (WARREN_STARTUP_TIMEOUT_S, long for the RabbitMQ
        # stand-in), so the test's deadline is paused meanwhile.
        remaining_s, _interval = signal.setitimer(signal.ITIMER_REAL, 0)
        try:
            running.start()
        finally:
            if remaining_s > 0:
                signal.setitimer(signal.ITIMER_REAL, remaining_s)
        _test_brokers.append(running)
        return running

    yield start
    while _test_brokers:
        running = _test_brokers.pop()
        if running.stop() is None:
            warnings.warn(f"broker with config was killed; log: {running.stderr_path}")


@pytest.fixture
def connect(broker, start_broker):
    """Factory: `connect(**parameter_overrides)` opens a BlockingConnection to the session
    broker, or to `on=` another one (from `start_broker`). Each is closed after the test if the
    broker has not closed it already. (It depends on `start_broker` so that these connections
    are closed before such brokers stop.)"""
    opened: list[pika.BlockingConnection] = []

    def open_connection(*, on: Broker | None = None, **overrides) -> pika.BlockingConnection:
        target = broker if on is None else on
        connection = pika.BlockingConnection(target.params(**overrides))
        opened.append(connection)
        return connection

    yield open_connection
    for connection in opened:
        if connection.is_open:
            connection.close()


@pytest.fixture
def connection(connect) -> pika.BlockingConnection:
    return connect()


@pytest.fixture
def channel(connection):
    return connection.channel()


@pytest.fixture
def mqtt_client(broker):
    """Factory: `mqtt_client(client_id=None, **options)` makes a paho client for the session
    broker's MQTT port, not yet connected (see MqttClient for the options); a unique client id
    unless one is given. Every client is disconnected and its network thread stopped after the
    test."""
    made: list[MqttClient] = []

    def make(client_id: str | None = None, **options) -> MqttClient:
        if broker.mqtt_port is None:
            pytest.fail("the broker has no MQTT listener: mark the test `mqtt`", pytrace=False)
        client = MqttClient(
            broker.mqtt_host, broker.mqtt_port, client_id or unique_client_id("paho"), **options
        )
        made.append(client)
        return client

    yield make
    for client in made:
        client.close()


@pytest.fixture
def mqtt_connect(mqtt_client):
    """Factory: `mqtt_connect(client_id=None, **options)` is `mqtt_client` connected, failing
    the test unless the broker accepts the CONNECT."""
    def connect(client_id: str | None = None, **options) -> MqttClient:
        client = mqtt_client(client_id, **options)
        client.connect()
        return client

    return connect


@pytest.fixture
def stomp_client(broker):
    """Factory: `stomp_client(version="1.2", heartbeats=(0, 0))` makes a stomp.py client for the
    session broker's STOMP port, not yet connected (see StompClient). Every client is closed and
    its receiver thread stopped after the test."""
    made: list[StompClient] = []

    def make(**options) -> StompClient:
        if broker.stomp_port is None:
            pytest.fail("the broker has no STOMP listener: mark the test `stomp`", pytrace=False)
        client = StompClient(broker.stomp_host, broker.stomp_port, **options)
        made.append(client)
        return client

    yield make
    for client in made:
        client.close()


@pytest.fixture
def stomp_connect(stomp_client):
    """Factory: `stomp_connect(**options)` is `stomp_client` connected as guest, failing the
    test unless the broker answers CONNECTED."""
    def connect(**options) -> StompClient:
        client = stomp_client(**options)
        client.connect()
        return client

    return connect


@pytest.fixture
def stomp_raw(broker):
    """A stomp_wire.Opener for the session broker: `stomp_raw()` opens a plain socket to the
    STOMP port, `stomp_raw.session(**connect_options)` one past CONNECTED, with the CONNECTED
    frame. All are closed after the test."""
    opener = stomp_wire.Opener(broker.stomp_host, broker.stomp_port)
    yield opener
    opener.close_all()


@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_makereport(item, call):
    """Attach the end of the broker's log to every failing test's report."""
    outcome = yield
    report = outcome.get_result()
    if report.failed and _session_broker is not None:
        report.sections.append(
            ("warren stderr (last 40 lines)", _session_broker.log_tail(40))
        )
        if not _session_broker.is_running():
            report.sections.append(("warren", "the broker process has exited"))
    if report.failed:
        for running in _test_brokers:
            report.sections.append(
                (f"warren --config stderr (last 40 lines) {running.work_dir}", running.log_tail(40))
            )
