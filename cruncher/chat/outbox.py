"""Posts waiting for the chat: queued at once, delivered by one thread, retried with backoff.

Whoever posts (the event listener, a command's answer) only appends to a bounded queue and
returns: a slow or unreachable chat never blocks or slows the backend. The delivery thread sends
the oldest post; when the chat is unreachable it keeps the post and waits (1 s, doubling, at most
``max_backoff_s``) before trying again, so posts arrive late but in order. A post the chat
refuses for good is logged and dropped; when the queue is full the oldest post is dropped, and
the log says so.
"""
from __future__ import annotations

import logging
import threading
import time
from collections import deque
from collections.abc import Callable

from cruncher.chat.transports import ChatRejectedError, ChatUnreachableError, Post, Transport

_log = logging.getLogger(__name__)


class Outbox:
    """A queue of :class:`Post` and the thread that delivers them through ``transport``."""

    def __init__(self, transport: Transport, *, max_queued: int = 500,
                 first_backoff_s: float = 1.0, max_backoff_s: float = 300.0,
                 on_sent: Callable[[Post], None] | None = None) -> None:
        self.transport = transport
        self.first_backoff_s, self.max_backoff_s = first_backoff_s, max_backoff_s
        self.on_sent = on_sent
        self._queue: deque[Post] = deque(maxlen=max_queued)
        self._wake = threading.Condition()
        self._stop = False
        self._thread: threading.Thread | None = None
        self.sent = self.dropped = self.retries = 0

    def put(self, post: Post) -> None:
        """Queue ``post``; returns at once."""
        with self._wake:
            if len(self._queue) == self._queue.maxlen:
                self.dropped += 1
                _log.warning("chat outbox full: oldest post dropped (%.60s)", self._queue[0].text)
            self._queue.append(post)
            self._wake.notify()

    def __len__(self) -> int:
        return len(self._queue)

    def start(self) -> Outbox:
        self._thread = threading.Thread(target=self._run, name="chat-outbox", daemon=True)
        self._thread.start()
        return self

    def stop(self, drain_s: float = 10.0) -> None:
        """Stop after trying, for at most ``drain_s``, to deliver what is queued."""
        deadline = time.monotonic() + drain_s
        while self._queue and time.monotonic() < deadline and self._thread is not None \
                and self._thread.is_alive():
            time.sleep(0.05)
        with self._wake:
            self._stop = True
            self._wake.notify_all()
        if self._thread is not None:
            self._thread.join(timeout=5)
        if self._queue:
            _log.warning("chat outbox stopped with %d post(s) undelivered", len(self._queue))

    def _run(self) -> None:
        backoff = self.first_backoff_s
        while True:
            with self._wake:
                while not self._queue and not self._stop:
                    self._wake.wait()
                if self._stop:
                    return
                post = self._queue[0]
            try:
                self.transport.send(post)
            except ChatUnreachableError as exc:
                self.retries += 1
                _log.warning("chat unreachable (%s): %d post(s) waiting, next try in %.0f s",
                             exc, len(self._queue), backoff)
                with self._wake:
                    self._wake.wait_for(lambda: self._stop, timeout=backoff)
                backoff = min(backoff * 2, self.max_backoff_s)
                continue
            except ChatRejectedError as exc:
                _log.error("chat refused a post, dropped (%s): %.80s", exc, post.text)
                self.dropped += 1
            except Exception:           # a bug in a transport must not kill the delivery thread
                _log.exception("chat post failed, dropped: %.80s", post.text)
                self.dropped += 1
            else:
                self.sent += 1
                if self.on_sent is not None:
                    self.on_sent(post)
            backoff = self.first_backoff_s
            with self._wake:
                if self._queue and self._queue[0] is post:
                    self._queue.popleft()
