"""The MPI network interface: a backend on rank r > 0 takes instructions from rank 0.

Messages are the same JSON text as over the websocket. Rank 0 sends with tag ``INSTRUCTION``;
each message gets a reply (tag ``REPLY``); when an instruction's work has all ended, its
``InstructionFinished`` event goes back to rank 0 with tag ``RESULT``, so the controller knows the
rank is free for the next sequence. A ``{"type": "shutdown"}`` message from rank 0 stops the
backend. mpi4py is imported only when this interface is used.
"""
from __future__ import annotations

import json
import logging
import threading
import time
from collections.abc import Callable

from cruncher.backend.interfaces.base import Gateway, kind, route
from cruncher.messages import InstructionFinished

_log = logging.getLogger(__name__)
INSTRUCTION, REPLY, RESULT = 11, 12, 13
POLL_S = 0.002


class MpiInterface:
    def __init__(self, gateway: Gateway, *, on_shutdown: Callable[[], None],
                 max_message_bytes: int | None = None, comm=None) -> None:
        from mpi4py import MPI  # noqa: PLC0415  (only when this interface runs)

        self.comm = comm or MPI.COMM_WORLD
        self.gateway = gateway
        self.on_shutdown = on_shutdown
        self.max_message_bytes = max_message_bytes
        self._stop = threading.Event()
        self._threads: list[threading.Thread] = []
        self._mine: set[str] = set()
        self._early: dict[str, object] = {}   # finished before their reply was sent
        self._lock = threading.Lock()

    def start(self) -> None:
        if self.comm.Get_rank() == 0:
            raise RuntimeError("the MPI interface runs on ranks > 0; rank 0 is the controller")
        for target, name in ((self._receive, "interface-mpi"), (self._report, "interface-mpi-results")):
            thread = threading.Thread(target=target, name=name, daemon=True)
            thread.start()
            self._threads.append(thread)

    def stop(self, timeout: float = 5.0) -> None:
        self._stop.set()
        for thread in self._threads:
            if thread is not threading.current_thread():
                thread.join(timeout=timeout)

    def _receive(self) -> None:
        request = self.comm.irecv(source=0, tag=INSTRUCTION)
        while not self._stop.is_set():
            done, message = request.test()
            if not done:
                time.sleep(POLL_S)
                continue
            if kind(message) == "shutdown":
                self.comm.send(json.dumps({"type": "shutting down"}), dest=0, tag=REPLY)
                _log.info("rank %d: shutdown requested by rank 0", self.comm.Get_rank())
                threading.Thread(target=self.on_shutdown, daemon=True).start()
                return
            reply = route(self.gateway, message, max_bytes=self.max_message_bytes)
            decoded = json.loads(reply)
            self.comm.send(reply, dest=0, tag=REPLY)
            ins_id = decoded.get("instruction_id")
            if decoded.get("status") == "accepted" and ins_id:
                if decoded.get("duplicate") and decoded.get("state") in ("done", "failed"):
                    # nothing will run: report the journal's outcome straight away
                    self.comm.send(InstructionFinished(job_id=ins_id, state=decoded["state"],
                                                       summary={"duplicate": True}).to_json(),
                                   dest=0, tag=RESULT)
                else:
                    with self._lock:
                        early = self._early.pop(ins_id, None)
                        if early is None:
                            self._mine.add(ins_id)
                    if early is not None:   # it finished before this thread got here
                        self.comm.send(early.to_json(), dest=0, tag=RESULT)
            request = self.comm.irecv(source=0, tag=INSTRUCTION)

    def _report(self) -> None:
        subscription = self.gateway.subscribe()
        try:
            while not self._stop.is_set():
                event = subscription.get(timeout=0.2)
                if event is None or event.type != "finished":
                    continue
                with self._lock:
                    ours = event.job_id in self._mine
                    self._mine.discard(event.job_id)
                    if not ours:
                        if len(self._early) > 10_000:
                            self._early.pop(next(iter(self._early)))
                        self._early[event.job_id] = event
                if ours:
                    self.comm.send(event.to_json(), dest=0, tag=RESULT)
        finally:
            subscription.close()
