"""The websocket network interface: instructors connect, send JSON messages, read one reply each.

The server is an asyncio event loop (``websockets``) in its own daemon thread, so the backend's
other threads never see asyncio. Each connection has a reader, which hands every message to
:func:`~cruncher.backend.interfaces.base.route` in a small thread pool (the backend may block on a
database commit), and a writer, which sends the replies in the order the messages came. A client
may therefore pipeline: send a thousand instructions, then read a thousand replies.

A ``subscribe`` message turns the connection into a stream of the backend's events
(``{"type": "subscribed"}`` first, then one event per message) until the client closes.

When a token is configured the handshake must carry ``Authorization: Bearer <token>``; binding
beyond loopback without one is refused at :meth:`WebSocketInterface.start`.
"""
from __future__ import annotations

import asyncio
import concurrent.futures
import hmac
import http
import ipaddress
import json
import logging
import ssl
import threading
from types import TracebackType
from typing import Any, Self

from websockets.asyncio.server import Server, ServerConnection, serve
from websockets.exceptions import ConnectionClosed, ConnectionClosedOK
from websockets.frames import CloseCode
from websockets.http11 import Request, Response

from cruncher.backend.interfaces import base
from cruncher.backend.interfaces.base import Gateway
from cruncher.errors import ConfigError

_log = logging.getLogger(__name__)

#: Messages of one connection being answered at once; beyond this the reader waits, which
#: pushes back on the client through TCP instead of growing memory without bound.
_MAX_IN_FLIGHT = 256
#: How often an event stream wakes up to notice that its client has gone (seconds).
_POLL_S = 0.25
#: How long closing a connection waits for the client's half of the closing handshake; below
#: the default ``stop`` timeout so that one silent client cannot hold a shutdown.
_CLOSE_TIMEOUT_S = 2.0
_START_TIMEOUT_S = 10.0
#: Messages up to this multiple of the limit are read and answered "too large"; beyond it the
#: library closes the connection (1009) before buffering them, which bounds memory.
_HARD_CAP_FACTOR = 4
_SUBSCRIBED = json.dumps({"type": "subscribed"})
_SECRET_HEADERS = frozenset({"authorization", "proxy-authorization"})
_CHATTY = frozenset({"connection open", "connection closed"})


class RedactingLogger(logging.LoggerAdapter):
    """A logger for ``websockets`` that never writes a credential.

    At DEBUG level websockets logs every handshake header as ``("%s: %s", name, value)``; this
    adapter replaces the value of ``Authorization`` headers, so debugging a connection cannot
    leak the token into a log file. It also moves websockets' per-connection "connection
    open/closed" lines to DEBUG: instructors connect once per send, all night long.
    """

    def __init__(self, logger: logging.Logger) -> None:
        super().__init__(logger, {})

    def log(self, level: int, msg: object, *args: Any, **kwargs: Any) -> None:
        if len(args) == 2 and isinstance(args[0], str) and args[0].lower() in _SECRET_HEADERS:
            args = (args[0], "[redacted]")
        if level == logging.INFO and msg in _CHATTY:
            level = logging.DEBUG
        super().log(level, msg, *args, **kwargs)


class WebSocketInterface:
    """The backend's websocket server.

    Parameters
    ----------
    gateway
        The backend, as the interfaces see it.
    host, port
        Where to listen; ``port=0`` picks a free port (see :attr:`port`).
    token
        Shared secret clients must present; required unless ``host`` is loopback.
    tls_cert, tls_key
        PEM certificate and key: given both, the server speaks ``wss://``.
    max_message_bytes
        Larger messages are answered with a rejection.
    workers
        Threads answering messages (all connections together).
    """

    def __init__(self, gateway: Gateway, *, host: str = "127.0.0.1", port: int = 8765,
                 token: str = "", tls_cert: str = "", tls_key: str = "",
                 max_message_bytes: int = 1_048_576, workers: int = 4) -> None:
        self._gateway = gateway
        self._host = host
        self._port = port
        self._token = token
        self._tls_cert = tls_cert
        self._tls_key = tls_key
        self._max_bytes = max_message_bytes
        self._workers = workers
        self._thread: threading.Thread | None = None
        self._loop: asyncio.AbstractEventLoop | None = None
        self._server: Server | None = None
        self._executor: concurrent.futures.ThreadPoolExecutor | None = None
        self._startup_error: OSError | None = None
        self._bound_port: int | None = None

    # --- lifecycle -------------------------------------------------------------------------

    @property
    def port(self) -> int:
        """The port listened on (the one the system chose when configured as 0)."""
        return self._bound_port if self._bound_port is not None else self._port

    @property
    def url(self) -> str:
        scheme = "wss" if self._tls_cert else "ws"
        host = f"[{self._host}]" if ":" in self._host else self._host
        return f"{scheme}://{host}:{self.port}"

    def start(self) -> None:
        """Listen; return once connections are accepted. Raise :class:`ConfigError` if it cannot."""
        if self._thread is not None:
            raise RuntimeError("the websocket interface is already running")
        if not self._token and not is_loopback(self._host):
            raise ConfigError(f"backend.host: binding to {self._host!r} exposes the backend beyond "
                              "this machine; set backend.token (CRUNCHER_BACKEND_TOKEN) or bind "
                              "to 127.0.0.1")
        context = server_ssl_context(self._tls_cert, self._tls_key)
        self._startup_error = None
        self._executor = concurrent.futures.ThreadPoolExecutor(
            self._workers, thread_name_prefix="websocket-route")
        ready = threading.Event()
        self._thread = threading.Thread(target=self._run, args=(context, ready),
                                        name="websocket-interface", daemon=True)
        self._thread.start()
        started = ready.wait(_START_TIMEOUT_S)
        if not started or self._startup_error is not None:
            self.stop()
            raise ConfigError(self._start_failure(started))
        _log.info("websocket interface listening at %s%s", self.url,
                  " (token required)" if self._token else "")

    def stop(self, timeout: float = 5.0) -> None:
        """Close the server and every connection; wait up to ``timeout`` s for the thread."""
        thread, self._thread = self._thread, None
        if thread is None:
            return
        loop, server = self._loop, self._server
        if loop is not None and server is not None:
            try:
                loop.call_soon_threadsafe(server.close)
            except RuntimeError:  # the loop has already ended
                pass
        thread.join(timeout)
        if thread.is_alive():
            _log.warning("the websocket interface did not stop within %s s", timeout)
        if self._executor is not None:
            self._executor.shutdown(wait=False, cancel_futures=True)
        if server is not None:
            _log.info("websocket interface at %s stopped", self.url)
        self._loop = self._server = None

    def __enter__(self) -> Self:
        self.start()
        return self

    def __exit__(self, exc_type: type[BaseException] | None, exc: BaseException | None,
                 tb: TracebackType | None) -> None:
        self.stop()

    def _start_failure(self, started: bool) -> str:
        where = f"{self._host}:{self._port}"
        if not started:
            return f"backend: the websocket interface did not start listening on {where}"
        error = self._startup_error
        reason = getattr(error, "strerror", None) or str(error)
        return (f"backend.port: cannot listen on {where}: {reason}; is another backend running? "
                "(choose another backend.port)")

    def _run(self, context: ssl.SSLContext | None, ready: threading.Event) -> None:
        try:
            asyncio.run(self._main(context, ready))
        except Exception:  # nothing may escape a daemon thread silently
            _log.exception("the websocket interface failed")
        finally:
            ready.set()

    async def _main(self, context: ssl.SSLContext | None, ready: threading.Event) -> None:
        try:
            server = await serve(
                self._serve_connection, self._host, self._port, ssl=context,
                process_request=self._authorize, max_size=_HARD_CAP_FACTOR * self._max_bytes,
                close_timeout=_CLOSE_TIMEOUT_S,
                logger=RedactingLogger(logging.getLogger("websockets.server")))
        except OSError as exc:
            self._startup_error = exc
            return
        self._loop, self._server = asyncio.get_running_loop(), server
        self._bound_port = server.sockets[0].getsockname()[1]
        ready.set()
        await server.wait_closed()

    # --- one connection --------------------------------------------------------------------

    def _authorize(self, connection: ServerConnection, request: Request) -> Response | None:
        """Refuse the handshake (HTTP 401) unless the configured token is presented."""
        if not self._token:
            return None
        presented = request.headers.get_all("Authorization")
        if len(presented) == 1:
            scheme, _, credential = presented[0].partition(" ")
            if scheme.lower() == "bearer" and hmac.compare_digest(
                    credential.strip().encode("utf-8", "surrogateescape"),
                    self._token.encode("utf-8", "surrogateescape")):
                return None
        _log.warning("refused a connection from %s: missing or wrong token", _peer(connection))
        response = connection.respond(http.HTTPStatus.UNAUTHORIZED,
                                      "a valid token is required: Authorization: Bearer <token>\n")
        response.headers["WWW-Authenticate"] = 'Bearer realm="cruncher"'
        return response

    async def _serve_connection(self, connection: ServerConnection) -> None:
        peer = _peer(connection)
        _log.debug("instructor connected from %s", peer)
        try:
            if await self._answer_messages(connection, peer):
                await self._stream_events(connection, peer)
        except ConnectionClosed as exc:
            _log.debug("connection from %s ended: %s", peer, exc)
        except Exception:  # one connection's failure must not reach the others
            _log.exception("connection from %s failed", peer)
            await connection.close(CloseCode.INTERNAL_ERROR, "internal error")
        else:
            _log.debug("instructor from %s disconnected", peer)

    async def _answer_messages(self, connection: ServerConnection, peer: str) -> bool:
        """Answer messages, in order, until the client closes (False) or subscribes (True)."""
        loop = asyncio.get_running_loop()
        pending: asyncio.Queue[asyncio.Future[str] | None] = asyncio.Queue(_MAX_IN_FLIGHT)
        writer = asyncio.create_task(self._send_replies(connection, pending))
        subscribed = False
        previous: asyncio.Future[str] | None = None
        try:
            while True:
                try:
                    message = await connection.recv()
                except ConnectionClosedOK:
                    break
                if self._is_subscribe(message):
                    subscribed = True
                    break
                previous = loop.create_task(self._answer_after(previous, message, peer))
                await pending.put(previous)
        except BaseException:
            writer.cancel()
            raise
        await pending.put(None)
        await writer  # earlier replies go out before the stream starts
        return subscribed

    async def _answer_after(self, previous: asyncio.Future[str] | None, message, peer: str) -> str:
        """Answer ``message`` once the connection's previous message is answered: an instructor's
        instructions are handled in the order it sent them (a dark before the arc that needs
        it), while the next messages are already being read."""
        if previous is not None:
            await asyncio.wait([previous])        # its outcome is the reply writer's business
        loop = asyncio.get_running_loop()
        return await loop.run_in_executor(self._executor, self._answer, message, peer)

    async def _send_replies(self, connection: ServerConnection,
                            pending: asyncio.Queue[asyncio.Future[str] | None]) -> None:
        closed = False
        while (future := await pending.get()) is not None:
            reply = await future
            if closed:
                continue  # keep draining so that the reader never waits on a full queue
            try:
                await connection.send(reply)
            except ConnectionClosed:
                closed = True

    def _answer(self, message: str | bytes, peer: str) -> str:
        """The reply to one message (in a worker thread); never raises."""
        try:
            reply = base.route(self._gateway, message, max_bytes=self._max_bytes)
            reason = _rejection(reply)
        except Exception as exc:  # route() should not raise; the connection must live if it does
            _log.exception("answering a message from %s failed", peer)
            return base.rejected(f"internal error: {type(exc).__name__}")
        if reason is not None:
            _log.warning("rejected a message from %s: %s", peer, _shorten(reason))
        return reply

    def _is_subscribe(self, message: str | bytes) -> bool:
        if len(message) > self._max_bytes:
            return False
        # Skip the JSON parse on the event loop for the common case (an instruction); a key
        # spelled with \u escapes still parses to "subscribe", so those are parsed too.
        needles = (b"subscribe", b"\\u") if isinstance(message, bytes) else ("subscribe", "\\u")
        return any(n in message for n in needles) and base.kind(message) == "subscribe"

    async def _stream_events(self, connection: ServerConnection, peer: str) -> None:
        loop = asyncio.get_running_loop()
        try:
            subscription = await loop.run_in_executor(self._executor, self._gateway.subscribe)
        except Exception as exc:
            _log.exception("subscribing %s to events failed", peer)
            await connection.send(base.rejected(f"internal error: {type(exc).__name__}"))
            return
        _log.info("instructor at %s subscribed to events", peer)
        listener = asyncio.create_task(_ignore_messages(connection, peer))
        try:
            await connection.send(_SUBSCRIBED)
            while not listener.done():
                # The default executor, not the message pool: a subscriber must not take a
                # worker from instructions for as long as it listens.
                event = await loop.run_in_executor(None, subscription.get, _POLL_S)
                if event is not None:
                    await _send_event(connection, event, peer)
        finally:
            subscription.close()
            listener.cancel()


# --- helpers ---------------------------------------------------------------------------------


def is_loopback(host: str) -> bool:
    """Whether ``host`` names this machine only (127.0.0.0/8, ::1, localhost)."""
    if host.lower() == "localhost":
        return True
    try:
        address = ipaddress.ip_address(host.strip("[]"))
    except ValueError:
        return False
    mapped = getattr(address, "ipv4_mapped", None)
    return address.is_loopback or bool(mapped and mapped.is_loopback)


def server_ssl_context(cert: str, key: str) -> ssl.SSLContext | None:
    """The TLS context for ``wss://``, or None when neither file is configured."""
    if not cert and not key:
        return None
    if not (cert and key):
        raise ConfigError("backend.tls_cert, backend.tls_key: give both the certificate and "
                          "the key, or neither")
    for setting, path in (("backend.tls_cert", cert), ("backend.tls_key", key)):
        try:
            with open(path, "rb"):
                pass
        except OSError as exc:
            raise ConfigError(f"{setting}: cannot read {path}: {exc.strerror or exc}") from None
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    try:
        # An explicit (empty) password: OpenSSL would otherwise prompt on the terminal for an
        # encrypted key, hanging a service that has none.
        context.load_cert_chain(cert, key, password=lambda: b"")
    except (ssl.SSLError, OSError) as exc:
        raise ConfigError(f"backend.tls_cert, backend.tls_key: {cert} and {key} are not a "
                          f"matching unencrypted PEM certificate and key ({exc})") from None
    return context


async def _ignore_messages(connection: ServerConnection, peer: str) -> None:
    """Read (and drop) what a subscriber sends, so that its close frame is always seen."""
    try:
        async for _ in connection:
            _log.warning("ignored a message from %s: the connection is an event stream", peer)
    except ConnectionClosed:
        pass


async def _send_event(connection: ServerConnection, event: Any, peer: str) -> None:
    try:
        text = event.to_json()
    except (TypeError, ValueError) as exc:
        _log.warning("could not send a %s event to %s: %s", getattr(event, "type", "?"), peer, exc)
        return
    await connection.send(text)


def _rejection(reply: str) -> str | None:
    """The reason of a rejected reply, or None when the reply is not a rejection."""
    data = json.loads(reply)
    if isinstance(data, dict) and data.get("status") == "rejected":
        return str(data.get("reason"))
    return None


def _shorten(text: str, limit: int = 300) -> str:
    return text if len(text) <= limit else text[:limit] + "..."


def _peer(connection: ServerConnection) -> str:
    address = connection.remote_address
    if isinstance(address, tuple) and len(address) >= 2:
        return f"{address[0]}:{address[1]}"
    return str(address)
