"""AMQP reply codes, and how to read them out of pika's exceptions."""

from __future__ import annotations

import re

# AMQP 0-9-1 reply codes (../../shared/specs/amqp-rabbitmq-0.9.1.json, "constants").
NO_ROUTE = 312
ACCESS_REFUSED = 403
NOT_FOUND = 404
RESOURCE_LOCKED = 405
PRECONDITION_FAILED = 406
FRAME_ERROR = 501
SYNTAX_ERROR = 502
COMMAND_INVALID = 503
CHANNEL_ERROR = 504
UNEXPECTED_FRAME = 505
NOT_ALLOWED = 530
NOT_IMPLEMENTED = 540

# RabbitMQ starts every reply-text with the constant's name: "NOT_FOUND - no queue 'q' ...".
REPLY_NAMES = {
    NO_ROUTE: "NO_ROUTE",
    ACCESS_REFUSED: "ACCESS_REFUSED",
    NOT_FOUND: "NOT_FOUND",
    RESOURCE_LOCKED: "RESOURCE_LOCKED",
    PRECONDITION_FAILED: "PRECONDITION_FAILED",
    FRAME_ERROR: "FRAME_ERROR",
    SYNTAX_ERROR: "SYNTAX_ERROR",
    COMMAND_INVALID: "COMMAND_INVALID",
    CHANNEL_ERROR: "CHANNEL_ERROR",
    UNEXPECTED_FRAME: "UNEXPECTED_FRAME",
    NOT_ALLOWED: "NOT_ALLOWED",
    NOT_IMPLEMENTED: "NOT_IMPLEMENTED",
}

# pika wraps a close received during the handshake in ProbableAuthenticationError /
# ProbableAccessDeniedError whose only argument is the repr of the ConnectionClosedByBroker,
# e.g. "ConnectionClosedByBroker: (530) 'NOT_ALLOWED - vhost /nope not found'".
_CODE_IN_REPR = re.compile(r"\((\d{3})\)")


def reply_code_of(error: BaseException) -> int | None:
    """The reply code a pika exception carries, directly or inside its message."""
    code = getattr(error, "reply_code", None)
    if isinstance(code, int):
        return code
    match = _CODE_IN_REPR.search(" ".join(str(argument) for argument in error.args))
    return int(match.group(1)) if match else None


def assert_reply(error: BaseException, code: int) -> None:
    """The exception carries `code`, and, where pika exposes it, RabbitMQ-style reply text."""
    actual = reply_code_of(error)
    assert actual == code, f"expected reply code {code}, got {actual}: {error!r}"
    text = getattr(error, "reply_text", None)
    if isinstance(text, str):
        assert text.startswith(REPLY_NAMES[code]), (
            f"reply text {text!r} should start with {REPLY_NAMES[code]!r} as RabbitMQ's does"
        )
