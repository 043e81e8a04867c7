"""The backend's event bus: product-ready, progress and failure events to whoever listens.

Listeners (websocket subscribers such as the chatbot, the status display, logs) each get a bounded
queue. A slow listener loses its oldest events, never slows the backend: publishing never blocks.
"""
from __future__ import annotations

import collections
import logging
import threading

from cruncher.messages import Event

_log = logging.getLogger(__name__)


class Subscription:
    """One listener's events, oldest first; :meth:`get` waits for the next."""

    def __init__(self, bus: EventBus, capacity: int) -> None:
        self._bus = bus
        self._events: collections.deque[Event] = collections.deque(maxlen=capacity)
        self._ready = threading.Condition()
        self.dropped = 0
        self.closed = False

    def _offer(self, event: Event) -> None:
        with self._ready:
            if len(self._events) == self._events.maxlen:
                self.dropped += 1
            self._events.append(event)
            self._ready.notify()

    def get(self, timeout: float | None = None) -> Event | None:
        """The next event, or None after ``timeout`` seconds or once closed."""
        with self._ready:
            if not self._events and not self.closed:
                self._ready.wait(timeout)
            return self._events.popleft() if self._events else None

    def close(self) -> None:
        with self._ready:
            self.closed = True
            self._ready.notify_all()
        self._bus._forget(self)


class EventBus:
    """Fan-out of events to subscriptions; keeps the most recent failures for status."""

    def __init__(self, capacity: int = 1000, remember_failures: int = 50) -> None:
        self._lock = threading.Lock()
        self._subscriptions: list[Subscription] = []
        self._capacity = capacity
        self.recent_failures: collections.deque[Event] = collections.deque(maxlen=remember_failures)

    def subscribe(self) -> Subscription:
        subscription = Subscription(self, self._capacity)
        with self._lock:
            self._subscriptions.append(subscription)
        return subscription

    def publish(self, event: Event) -> None:
        if event.type == "failure":
            self.recent_failures.append(event)
        with self._lock:
            targets = list(self._subscriptions)
        for subscription in targets:
            subscription._offer(event)

    def close(self) -> None:
        with self._lock:
            targets = list(self._subscriptions)
        for subscription in targets:
            subscription.close()

    def _forget(self, subscription: Subscription) -> None:
        with self._lock:
            if subscription in self._subscriptions:
                self._subscriptions.remove(subscription)
