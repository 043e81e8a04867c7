"""The in-process network interface: a ``queue.Queue`` for an instructor in the same process.

Used where the instructor and the backend share a process (the MPI controller's own backend on
rank 0, the demo, tests): no sockets, no serialisation beyond the message itself, and the same
routing, validation and replies as over the wire.
"""
from __future__ import annotations

import concurrent.futures as cf
import json
import logging
import queue
import threading
from typing import Any

from cruncher.backend.interfaces.base import Gateway, route
from cruncher.messages import Instruction

_log = logging.getLogger(__name__)


class QueueInterface:
    def __init__(self, gateway: Gateway, *, max_message_bytes: int | None = None) -> None:
        self.gateway = gateway
        self.max_message_bytes = max_message_bytes
        self.requests: queue.Queue = queue.Queue()
        self._thread: threading.Thread | None = None

    def start(self) -> None:
        self._thread = threading.Thread(target=self._serve, name="interface-queue", daemon=True)
        self._thread.start()

    def stop(self, timeout: float = 5.0) -> None:
        self.requests.put(None)
        if self._thread is not None:
            self._thread.join(timeout=timeout)

    def submit(self, message: dict[str, Any] | str | bytes | Instruction) -> cf.Future:
        """Queue a message; the future's result is the decoded reply."""
        future: cf.Future = cf.Future()
        if isinstance(message, Instruction):
            message = message.to_json()
        elif isinstance(message, dict):
            message = json.dumps(message)
        self.requests.put((message, future))
        return future

    def send(self, message: dict[str, Any] | str | bytes | Instruction,
             timeout: float | None = 60.0) -> dict[str, Any]:
        return self.submit(message).result(timeout=timeout)

    def _serve(self) -> None:
        while True:
            item = self.requests.get()
            if item is None:
                return
            message, future = item
            if future.set_running_or_notify_cancel():
                future.set_result(json.loads(route(self.gateway, message,
                                                   max_bytes=self.max_message_bytes)))
