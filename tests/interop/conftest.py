"""Fixtures for the pika interop suite: one broker per session, fresh connections per test.

Run with `tests/interop/run.sh` from anywhere, or `python -m pytest -q tests/interop` from the
repository root once pika and pytest are installed. The broker binary is `$WARREN_BIN`, else
target/release/warren, else target/debug/warren.
"""

from __future__ import annotations

import signal
import warnings

import pika
import pytest

from broker import Broker, BrokerNotBuilt, resolve_binary

# A hung test (a broker that never answers a synchronous method) would block pika forever,
# since its blocking calls have no timeout of their own. The whole suite should take well under
# a minute, so any single test taking this long is stuck.
TEST_TIMEOUT_S = 20.0

_session_broker: Broker | None = None


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


@pytest.fixture
def connect(broker):
    """Factory: `connect(**parameter_overrides)` opens a BlockingConnection, closed after the
    test if the broker has not closed it already."""
    opened: list[pika.BlockingConnection] = []

    def open_connection(**overrides) -> pika.BlockingConnection:
        connection = pika.BlockingConnection(broker.params(**overrides))
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
