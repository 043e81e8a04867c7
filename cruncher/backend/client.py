"""The instructor side of the websocket interface: send instructions, ask for status, follow events.

Plain synchronous functions, as the backend's protocol wants: open a connection, send, read one
reply per message, close. :func:`send` pipelines (all messages go out before the first reply is
read), so a thousand instructions cost one round trip, not a thousand.

Every failure to reach or use the backend raises :class:`BackendUnreachableError`, a retryable
error whose message says what happened and what to do about it.
"""
from __future__ import annotations

import contextlib
import json
import logging
import socket
import ssl
from collections.abc import Iterable, Iterator
from types import TracebackType
from typing import Any, Self

from websockets.exceptions import (
    ConnectionClosed,
    ConnectionClosedOK,
    InvalidHandshake,
    InvalidStatus,
    InvalidURI,
)
from websockets.sync.client import ClientConnection, connect

from cruncher.backend.interfaces.websocket import RedactingLogger
from cruncher.errors import ConfigError, RetryableError, ValidationError
from cruncher.messages import Event, Instruction, Reply, event_from_json

_log = logging.getLogger(__name__)

START_HINT = "start one with `cruncher backend`"
#: Status replies can carry recent failures; leave room, but keep a bound.
_MAX_REPLY_BYTES = 64 * 2**20
_CLOSE_TIMEOUT_S = 5.0
_WS_LOGGER = RedactingLogger(logging.getLogger("websockets.client"))

Message = dict[str, Any] | str | bytes | Instruction


class BackendUnreachableError(RetryableError):
    """No backend could be reached or used at ``url``; ``reason`` says why.

    Parameters
    ----------
    url
        The backend's address.
    reason
        What went wrong, for a person (``"connection refused"``).
    headline, hint
        The start of the message and what to do about it.
    """

    def __init__(self, url: str, reason: str, *, headline: str = "no backend listening at",
                 hint: str = START_HINT) -> None:
        text = f"{headline} {url}: {reason}"
        super().__init__(f"{text}; {hint}" if hint else text)
        self.url = url
        self.reason = reason


def send(url: str, messages: Iterable[Message], *, token: str = "", timeout: float = 30.0,
         ssl_context: ssl.SSLContext | None = None) -> list[dict[str, Any]]:
    """Send messages over one connection and return the decoded replies, one per message.

    Parameters
    ----------
    url
        ``ws://host:port`` or ``wss://host:port``.
    messages
        Instructions, JSON objects, or already encoded JSON (``bytes`` go as binary frames).
    token
        The backend's token, when it requires one.
    timeout
        Seconds allowed for connecting and for each reply.
    ssl_context
        Trust for a ``wss://`` backend (the system's CAs by default).
    """
    texts = _exchange(url, messages, token=token, timeout=timeout, ssl_context=ssl_context)
    return [_decode_object(text) for text in texts]


def send_instructions(url: str, instructions: Iterable[Instruction | dict[str, Any]],
                      **kw: Any) -> list[Reply]:
    """Send instructions (pipelined, one connection) and return the backend's replies."""
    return [Reply.from_json(text) for text in _exchange(url, instructions, **kw)]


def status(url: str, **kw: Any) -> dict[str, Any]:
    """The backend's status: queue depths, running jobs, recent failures, uptime."""
    return send(url, [{"type": "status"}], **kw)[0]


def ping(url: str, **kw: Any) -> bool:
    """Whether a backend answers at ``url`` (False when it cannot be reached or refuses us)."""
    try:
        reply = send(url, [{"type": "ping"}], **kw)[0]
    except BackendUnreachableError as exc:
        _log.debug("ping: %s", exc)
        return False
    return reply.get("type") == "pong"


def subscribe(url: str, *, token: str = "", timeout: float = 30.0,
              ssl_context: ssl.SSLContext | None = None) -> EventStream:
    """Follow the backend's events; return once the backend has confirmed the subscription.

    Events published after this returns are delivered. Iterate the result; it ends when the
    backend closes the connection. Close it (or use it in a ``with``) to stop listening.
    """
    stack = contextlib.ExitStack()
    try:
        connection = stack.enter_context(_session(url, token=token, timeout=timeout,
                                                  ssl_context=ssl_context))
        connection.send(json.dumps({"type": "subscribe"}))
        reply = _decode_object(connection.recv(timeout))
    except BaseException as exc:
        stack.close()
        error = _unreachable(url, exc, timeout)
        if error is None:
            raise
        raise error from exc
    if reply.get("type") != "subscribed":
        stack.close()
        raise ValidationError("type", f"the backend at {url} refused to stream events: "
                                      f"{reply.get('reason', reply)}")
    return EventStream(url, connection, stack)


class EventStream(Iterator[Event]):
    """The events of one subscription, as an iterator that ends when the backend closes."""

    def __init__(self, url: str, connection: ClientConnection, stack: contextlib.ExitStack) -> None:
        self.url = url
        self._connection = connection
        self._stack = stack

    def __iter__(self) -> EventStream:
        return self

    def __next__(self) -> Event:
        while True:
            try:
                text = self._connection.recv()
            except ConnectionClosedOK:
                self.close()
                raise StopIteration from None
            except ConnectionClosed as exc:
                self.close()
                raise BackendUnreachableError(self.url, f"the event stream broke off ({exc})",
                                              headline="lost the backend at", hint="") from exc
            try:
                return event_from_json(text)
            except ValidationError as exc:  # a newer backend's event: skip, keep listening
                _log.warning("ignored an event from %s: %s", self.url, exc)

    def close(self) -> None:
        self._stack.close()

    def __enter__(self) -> Self:
        return self

    def __exit__(self, exc_type: type[BaseException] | None, exc: BaseException | None,
                 tb: TracebackType | None) -> None:
        self.close()


# --- the connection --------------------------------------------------------------------------


def _exchange(url: str, messages: Iterable[Message], *, token: str = "", timeout: float = 30.0,
              ssl_context: ssl.SSLContext | None = None) -> list[str]:
    payloads = [_encode(message) for message in messages]
    with _session(url, token=token, timeout=timeout, ssl_context=ssl_context) as connection:
        for payload in payloads:
            connection.send(payload)
        return [connection.recv(timeout) for _ in payloads]


@contextlib.contextmanager
def _session(url: str, *, token: str, timeout: float,
             ssl_context: ssl.SSLContext | None) -> Iterator[ClientConnection]:
    """A connection to the backend; every connection failure becomes BackendUnreachableError."""
    headers = {"Authorization": f"Bearer {token}"} if token else None
    try:
        opened = connect(
            url, additional_headers=headers, open_timeout=timeout,
            ssl=ssl_context if url.lower().startswith("wss:") else None,
            # The backend is on this machine or the cluster network: a site-wide HTTP proxy
            # from the environment must not intercept it.
            proxy=None,
            # Flow control off on our side: while send() pipelines, the replies must keep being
            # read, or client and server would each wait for the other to read.
            max_queue=None, max_size=_MAX_REPLY_BYTES, close_timeout=_CLOSE_TIMEOUT_S,
            logger=_WS_LOGGER)
    except InvalidURI as exc:
        raise ConfigError(f"backend URL: {url!r} is not a ws:// or wss:// address ({exc})") from None
    except Exception as exc:
        error = _unreachable(url, exc, timeout)
        if error is None:
            raise
        raise error from exc
    try:
        with opened as connection:
            yield connection
    except (ConnectionClosed, OSError) as exc:  # TimeoutError is an OSError
        raise _unreachable(url, exc, timeout) or exc from exc


def _unreachable(url: str, exc: BaseException, timeout: float) -> BackendUnreachableError | None:
    """The error a person should see for ``exc``; None when ``exc`` is not about the connection."""
    if isinstance(exc, InvalidStatus):
        code = exc.response.status_code
        if code in (401, 403):
            return BackendUnreachableError(
                url, f"HTTP {code}: the backend rejected the connection (missing or wrong token)",
                headline="refused by the backend at",
                hint="give the backend's token (backend.token, CRUNCHER_BACKEND_TOKEN)")
        return BackendUnreachableError(url, f"HTTP {code}: the server rejected the websocket",
                                       headline="no usable backend at")
    if isinstance(exc, ssl.SSLCertVerificationError):
        return BackendUnreachableError(url, f"TLS certificate not trusted ({exc.verify_message})",
                                       headline="cannot trust the backend at",
                                       hint="pass an ssl_context that trusts its certificate")
    if isinstance(exc, ssl.SSLError):
        return BackendUnreachableError(url, f"TLS handshake failed ({exc.reason or exc})",
                                       headline="no TLS backend at",
                                       hint="use ws:// unless the backend has backend.tls_cert")
    if isinstance(exc, ConnectionRefusedError):
        return BackendUnreachableError(url, "connection refused")
    if isinstance(exc, socket.gaierror):
        return BackendUnreachableError(url, f"cannot resolve the host ({exc.strerror})")
    if isinstance(exc, TimeoutError):
        return BackendUnreachableError(url, f"no answer within {timeout:g} s",
                                       headline="no backend answered at", hint="is it overloaded?")
    if isinstance(exc, ConnectionClosed):
        return BackendUnreachableError(url, f"the connection closed early ({exc})",
                                       headline="lost the backend at", hint="")
    if isinstance(exc, InvalidHandshake):
        return BackendUnreachableError(url, f"the websocket handshake failed ({exc})",
                                       headline="no usable backend at")
    if isinstance(exc, OSError):
        return BackendUnreachableError(url, exc.strerror or str(exc))
    return None


def _encode(message: Message) -> str | bytes:
    if isinstance(message, Instruction):
        return message.to_json()
    if isinstance(message, str | bytes):
        return message
    if isinstance(message, dict):
        return json.dumps(message, allow_nan=False)
    raise TypeError(f"cannot send a {type(message).__name__}: give an Instruction, a dict or JSON")


def _decode_object(text: str | bytes) -> dict[str, Any]:
    try:
        data = json.loads(text)
    except ValueError as exc:
        raise ValidationError("<reply>", f"the backend sent invalid JSON: {exc}") from None
    if not isinstance(data, dict):
        raise ValidationError("<reply>", "the backend sent a reply that is not a JSON object")
    return data
