"""What every network interface shares: the gateway into the backend and the message router.

A message is one JSON object. An object with a ``"type"`` is a control message (``status``,
``ping``; the websocket interface adds ``subscribe``); anything else is an instruction, handed to
the backend, which answers with a :class:`~cruncher.messages.Reply`. Whatever arrives, the sender
gets one JSON reply and the interface carries on: malformed messages are answered, not fatal.
"""
from __future__ import annotations

import json
import logging
from typing import Any, Protocol

from cruncher.backend.events import Subscription
from cruncher.errors import ValidationError
from cruncher.messages import Reply, parse_json_object

_log = logging.getLogger(__name__)


class Gateway(Protocol):
    """The backend as the interfaces see it. Thread-safe."""

    def handle(self, instruction: dict[str, Any]) -> Reply:
        """Validate, journal and queue one instruction (given as the decoded JSON object)."""

    def status(self) -> dict[str, Any]:
        """Queue depths, running jobs, recent failures, DRP workers, uptime."""

    def subscribe(self) -> Subscription:
        """A stream of the backend's events."""


def rejected(reason: str, instruction_id: str | None = None) -> str:
    return Reply(status="rejected", reason=reason, instruction_id=instruction_id).to_json()


def route(gateway: Gateway, message: str | bytes, *, max_bytes: int | None = None) -> str:
    """The JSON reply to one message; never raises for bad input.

    ``subscribe`` is not handled here (it needs a stream); the caller checks :func:`kind` first.
    """
    if max_bytes is not None and len(message) > max_bytes:
        _log.warning("refused a message of %d bytes (limit %d)", len(message), max_bytes)
        return rejected(f"<message>: too large ({len(message)} bytes, limit {max_bytes})")
    try:
        data = parse_json_object(message, ValidationError)
    except ValidationError as exc:
        _log.warning("malformed message: %s", exc.reason)
        return rejected(str(exc))
    if isinstance(data, dict) and "type" in data:
        return _control(gateway, data)
    if not isinstance(data, dict):
        return rejected("<message>: expected a JSON object")
    try:
        return gateway.handle(data).to_json()
    except Exception as exc:  # the interface must live on whatever the backend raised
        _log.exception("handling an instruction failed")
        return rejected(f"internal error: {type(exc).__name__}: {exc}",
                        data.get("id") if isinstance(data.get("id"), str) else None)


def kind(message: str | bytes) -> str | None:
    """The control type of a message (``"subscribe"``...), or None for instructions and junk."""
    try:
        data = json.loads(message)
    except (ValueError, TypeError, RecursionError):
        return None
    return data.get("type") if isinstance(data, dict) and isinstance(data.get("type"), str) \
        else None


def _control(gateway: Gateway, data: dict[str, Any]) -> str:
    what = data.get("type")
    if what == "ping":
        return json.dumps({"type": "pong"})
    if what == "status":
        return json.dumps({"type": "status", **gateway.status()}, default=str)
    return rejected(f"type: unknown control message {what!r} (known: status, ping, subscribe)")
