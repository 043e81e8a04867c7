"""A local server that speaks the parts of Slack's Web API and Socket Mode the chatbot uses.

Slack's servers cannot exist here; ``slack_sdk`` is pointed at this one (``WebClient(base_url=
server.api_url)``) and does everything else for real: HTTP, JSON, the three-step file upload, the
rate-limit retry handler, the Socket Mode websocket. Every request is recorded; responses can be
scripted per method (``server.script("chat.postMessage", (429, {"Retry-After": "1"}))``).
"""
from __future__ import annotations

import asyncio
import json
import threading
import time
from collections import defaultdict, deque
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from urllib.parse import parse_qsl, urlparse

CHANNELS = {"observing": "C0OBSERVE", "general": "C0GENERAL"}


@dataclass
class Call:
    method: str
    params: dict
    time: float
    headers: dict = field(default_factory=dict)
    body: bytes = b""
    status: int = 200


class FakeSlack:
    def __init__(self) -> None:
        self.calls: list[Call] = []
        self.uploads: dict[str, bytes] = {}
        self.acks: list[str] = []
        self._scripts: dict[str, deque] = defaultdict(deque)
        self._lock = threading.Lock()
        self._files = 0
        self._http = ThreadingHTTPServer(("127.0.0.1", 0), self._handler())
        self._http.daemon_threads = True
        self.port = self._http.server_address[1]
        self.api_url = f"http://127.0.0.1:{self.port}/api/"
        self.webhook_url = f"http://127.0.0.1:{self.port}/hooks/T0/B0/secret"
        self._loop = asyncio.new_event_loop()
        self._sockets: set = set()
        self.ws_port = 0

    # --- control ------------------------------------------------------------------------------

    def start(self) -> FakeSlack:
        threading.Thread(target=self._http.serve_forever, daemon=True).start()
        ready = threading.Event()
        threading.Thread(target=self._run_ws, args=(ready,), daemon=True).start()
        ready.wait(10)
        return self

    def stop(self) -> None:
        self._http.shutdown()
        self._http.server_close()
        self._loop.call_soon_threadsafe(self._loop.stop)

    def script(self, method: str, *responses: tuple[int, dict]) -> None:
        """The next calls of ``method`` get these (status, headers) error answers, in order."""
        self._scripts[method].extend(responses)

    def of(self, method: str) -> list[Call]:
        with self._lock:
            return [c for c in self.calls if c.method == method]

    def wait_for(self, method: str, n: int = 1, timeout: float = 30.0) -> list[Call]:
        deadline = time.monotonic() + timeout
        while len(self.of(method)) < n:
            if time.monotonic() > deadline:
                raise AssertionError(f"{method}: {len(self.of(method))} call(s), wanted {n}; "
                                     f"calls: {[c.method for c in self.calls]}")
            time.sleep(0.02)
        return self.of(method)

    def messages(self) -> list[dict]:
        """What the channel shows: posted texts and uploads with their comment, in order."""
        out = []
        for c in list(self.calls):
            if c.status != 200:
                continue
            if c.method == "chat.postMessage":
                out.append({"text": c.params.get("text"), "channel": c.params.get("channel"),
                            "thread_ts": c.params.get("thread_ts"), "image": None})
            elif c.method == "files.completeUploadExternal":
                files = c.params.get("files")
                files = json.loads(files) if isinstance(files, str) else files
                out.append({"text": c.params.get("initial_comment"),
                            "channel": c.params.get("channel_id"),
                            "thread_ts": c.params.get("thread_ts"),
                            "image": self.uploads.get(files[0]["id"])})
        return out

    # --- Socket Mode --------------------------------------------------------------------------

    def mention(self, text: str, *, channel: str = "C0OBSERVE", event_id: str | None = None,
                user: str = "U0OBSERVER") -> str:
        """Deliver an app_mention through every open Socket Mode connection; its envelope id."""
        envelope = f"env-{time.monotonic_ns()}"
        payload = {"type": "events_api", "envelope_id": envelope, "accepts_response_payload": False,
                   "payload": {"type": "event_callback", "event_id": event_id or envelope,
                               "event": {"type": "app_mention", "text": f"<@U0BOT> {text}",
                                         "user": user, "channel": channel,
                                         "ts": f"{time.time():.6f}"}}}
        asyncio.run_coroutine_threadsafe(self._broadcast(json.dumps(payload)), self._loop).result(5)
        return envelope

    def connected(self) -> int:
        return len(self._sockets)

    def _run_ws(self, ready: threading.Event) -> None:
        import websockets

        asyncio.set_event_loop(self._loop)

        async def session(ws) -> None:
            self._sockets.add(ws)
            await ws.send(json.dumps({"type": "hello", "num_connections": 1,
                                      "debug_info": {"host": "fake"}}))
            try:
                async for message in ws:
                    data = json.loads(message)
                    if "envelope_id" in data:
                        self.acks.append(data["envelope_id"])
            except websockets.ConnectionClosed:
                pass
            finally:
                self._sockets.discard(ws)

        async def main() -> None:
            server = await websockets.serve(session, "127.0.0.1", 0)
            self.ws_port = server.sockets[0].getsockname()[1]
            ready.set()

        self._loop.run_until_complete(main())
        self._loop.run_forever()

    async def _broadcast(self, text: str) -> None:
        for ws in list(self._sockets):
            await ws.send(text)

    # --- HTTP ---------------------------------------------------------------------------------

    def _answer(self, method: str, params: dict) -> tuple[int, dict, dict]:
        """(status, headers, body) for one Web API call."""
        with self._lock:
            scripted = self._scripts[method].popleft() if self._scripts[method] else None
        if scripted is not None:
            status, headers = scripted
            error = "ratelimited" if status == 429 else "service_unavailable"
            return status, headers, {"ok": False, "error": error}
        if method == "auth.test":
            return 200, {}, {"ok": True, "url": "https://fake.slack.com/", "team": "GPIES",
                             "user": "cruncher", "team_id": "T0", "user_id": "U0BOT",
                             "bot_id": "B0BOT"}
        if method == "chat.postMessage":
            return 200, {}, {"ok": True, "channel": CHANNELS.get(
                str(params.get("channel", "")).lstrip("#"), params.get("channel")),
                "ts": f"{time.time():.6f}", "message": {"text": params.get("text")}}
        if method == "conversations.list":
            return 200, {}, {"ok": True, "channels": [{"id": i, "name": n}
                                                      for n, i in CHANNELS.items()],
                             "response_metadata": {"next_cursor": ""}}
        if method == "files.getUploadURLExternal":
            with self._lock:
                self._files += 1
                file_id = f"F{self._files:04d}"
            return 200, {}, {"ok": True, "file_id": file_id,
                             "upload_url": f"http://127.0.0.1:{self.port}/upload/{file_id}"}
        if method == "files.completeUploadExternal":
            files = params.get("files")
            files = json.loads(files) if isinstance(files, str) else files
            if params.get("channel_id") not in CHANNELS.values():
                return 200, {}, {"ok": False, "error": "channel_not_found"}
            return 200, {}, {"ok": True, "files": [{"id": f["id"], "title": f.get("title")}
                                                   for f in files]}
        if method == "files.info":
            return 200, {}, {"ok": True, "file": {"id": params.get("file")}}
        if method == "apps.connections.open":
            return 200, {}, {"ok": True, "url": f"ws://127.0.0.1:{self.ws_port}/link"}
        return 404, {}, {"ok": False, "error": "unknown_method"}

    def _handler(self):
        fake = self

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, *args) -> None:
                pass

            def do_GET(self) -> None:
                self.do_POST()

            def do_POST(self) -> None:
                url = urlparse(self.path)
                body = self.rfile.read(int(self.headers.get("Content-Length") or 0))
                if url.path.startswith("/upload/"):
                    file_id = url.path.rsplit("/", 1)[1]
                    fake.uploads[file_id] = body
                    with fake._lock:
                        fake.calls.append(Call("upload", {"file": file_id}, time.monotonic(),
                                               dict(self.headers), body))
                    self._send(200, {}, f"OK - {len(body)}".encode(), "text/plain")
                    return
                if url.path.startswith("/hooks/"):          # an incoming webhook
                    with fake._lock:
                        fake.calls.append(Call("webhook", json.loads(body or b"{}"),
                                               time.monotonic(), dict(self.headers), body))
                    self._send(200, {}, b"ok", "text/plain")
                    return
                params = dict(parse_qsl(url.query))
                kind = self.headers.get("Content-Type", "")
                if "json" in kind and body:
                    params.update(json.loads(body))
                elif body and "multipart" not in kind:
                    params.update(parse_qsl(body.decode()))
                method = url.path.removeprefix("/api/")
                call = Call(method, params, time.monotonic(), dict(self.headers), body)
                with fake._lock:
                    fake.calls.append(call)
                status, headers, answer = fake._answer(method, params)
                call.status = status if answer.get("ok") else max(status, 400)
                self._send(status, headers, json.dumps(answer).encode(), "application/json")

            def _send(self, status: int, headers: dict, body: bytes, kind: str) -> None:
                self.send_response(status)
                self.send_header("Content-Type", kind)
                self.send_header("Content-Length", str(len(body)))
                for k, v in headers.items():
                    self.send_header(k, v)
                self.end_headers()
                self.wfile.write(body)

        return Handler
