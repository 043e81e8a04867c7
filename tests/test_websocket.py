"""The websocket interface and its client, over real websockets on loopback (ephemeral ports)."""
from __future__ import annotations

import contextlib
import json
import logging
import secrets
import shutil
import socket
import ssl
import subprocess
import threading
import time
from collections.abc import Iterator
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from websockets.sync.client import connect as ws_connect

from cruncher.backend import client
from cruncher.backend.client import BackendUnreachableError
from cruncher.backend.events import EventBus, Subscription
from cruncher.backend.interfaces.base import kind
from cruncher.backend.interfaces.websocket import WebSocketInterface
from cruncher.errors import ConfigError
from cruncher.messages import Failure, Instruction, InstructionError, ProductReady, Reply

pytestmark = pytest.mark.timeout(60)


class RecordingGateway:
    """The test's backend: validates like the real one, records what it accepted."""

    def __init__(self) -> None:
        self.bus = EventBus()
        self.accepted: list[Instruction] = []
        self.subscriptions: list[Subscription] = []
        self._lock = threading.Lock()

    def handle(self, instruction: dict[str, Any]) -> Reply:
        try:
            accepted = Instruction.from_dict(instruction)
        except InstructionError as exc:
            given_id = instruction.get("id")
            return Reply(status="rejected", reason=str(exc),
                         instruction_id=given_id if isinstance(given_id, str) else None)
        with self._lock:
            self.accepted.append(accepted)
        return Reply(status="accepted", instruction_id=accepted.id, job_id=accepted.id)

    def status(self) -> dict[str, Any]:
        with self._lock:
            return {"accepted": len(self.accepted), "uptime_s": 1.5}

    def subscribe(self) -> Subscription:
        subscription = self.bus.subscribe()
        self.subscriptions.append(subscription)
        return subscription


class ExplodingGateway(RecordingGateway):
    """A backend with a bug: instructions whose id starts with ``boom`` make it raise."""

    def handle(self, instruction: dict[str, Any]) -> Reply:
        if str(instruction.get("id", "")).startswith("boom"):
            raise RuntimeError("the journal is on fire")
        return super().handle(instruction)


def instruction(n: int) -> dict[str, Any]:
    return {"id": f"obs-{n}", "files": [f"/data/raw/S{n:04d}.fits"], "outdir": "/data/reduced"}


@contextlib.contextmanager
def serving(gateway: RecordingGateway, **options: Any) -> Iterator[WebSocketInterface]:
    interface = WebSocketInterface(gateway, port=0, **options)
    interface.start()
    try:
        yield interface
    finally:
        interface.stop()


@pytest.fixture
def gateway() -> RecordingGateway:
    return RecordingGateway()


@pytest.fixture
def backend(gateway) -> Iterator[WebSocketInterface]:
    with serving(gateway) as interface:
        yield interface


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


# --- instructions ------------------------------------------------------------------------------


def test_one_instruction_is_accepted(backend, gateway):
    replies = client.send_instructions(backend.url, [Instruction.from_dict(instruction(1))])
    assert replies == [Reply(status="accepted", instruction_id="obs-1", job_id="obs-1")]
    assert [i.id for i in gateway.accepted] == ["obs-1"]
    assert backend.url == f"ws://127.0.0.1:{backend.port}" and backend.port > 0


def test_several_instructions_are_answered_in_order(backend):
    replies = client.send(backend.url, [instruction(n) for n in range(5)])
    assert [r["instruction_id"] for r in replies] == [f"obs-{n}" for n in range(5)]
    assert {r["status"] for r in replies} == {"accepted"}


def test_a_thousand_pipelined_instructions_on_one_connection(backend, gateway):
    replies = client.send(backend.url, [instruction(n) for n in range(1000)])
    assert [r["job_id"] for r in replies] == [f"obs-{n}" for n in range(1000)]
    assert len(gateway.accepted) == 1000


def test_one_connections_instructions_are_handled_in_the_order_sent(backend, gateway):
    """The backend acts on them in that order (a dark combination before the arc that needs it),
    even when handling one takes longer than the next arrives."""
    handle = gateway.handle

    def slow_first(message: dict[str, Any]) -> Reply:
        if message.get("id") == "obs-0":
            time.sleep(0.3)
        return handle(message)

    gateway.handle = slow_first
    client.send(backend.url, [instruction(n) for n in range(20)])
    assert [i.id for i in gateway.accepted] == [f"obs-{n}" for n in range(20)]


def test_binary_frames_are_accepted(backend):
    [reply] = client.send(backend.url, [json.dumps(instruction(7)).encode()])
    assert reply["status"] == "accepted"


def test_many_clients_at_once(backend, gateway):
    def instruct(worker: int) -> list[Reply]:
        return client.send_instructions(backend.url, [instruction(worker * 100 + n) for n in range(25)])

    results: list[list[Reply]] = []
    threads = [threading.Thread(target=lambda w=w: results.append(instruct(w))) for w in range(8)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert len(results) == 8 and all(r.status == "accepted" for batch in results for r in batch)
    assert len(gateway.accepted) == 200


# --- malformed messages -----------------------------------------------------------------------

MALFORMED = {
    "invalid JSON": ('{"files": [', "not valid JSON"),
    "wrong type": (json.dumps({"files": "/a.fits", "outdir": "/o"}), "files: expected an array"),
    "unknown field": (json.dumps({**instruction(1), "colour": "blue"}), "colour: unknown field"),
    "relative path": (json.dumps({"files": ["raw/a.fits"], "outdir": "/o"}), "must be absolute"),
    "array": ("[1, 2, 3]", "expected a JSON object"),
    "number": ("42", "expected a JSON object"),
    "null": ("null", "expected a JSON object"),
    "NaN": ('{"files": ["/a"], "outdir": "/o", "priority": NaN}', "not valid JSON"),
    "bad UTF-8": (b"\xff\xfe{", "not valid JSON"),
}


@pytest.mark.parametrize("name", MALFORMED)
def test_malformed_message_is_rejected_and_the_connection_lives(backend, name, caplog):
    message, problem = MALFORMED[name]
    caplog.set_level(logging.WARNING)
    bad, good = client.send(backend.url, [message, instruction(2)])
    assert bad["status"] == "rejected" and problem in bad["reason"]
    assert good["status"] == "accepted"
    warnings = [r.getMessage() for r in caplog.records if r.levelno == logging.WARNING]
    assert any(problem in w for w in warnings), warnings


def test_the_whole_message_is_never_logged(backend, caplog):
    marker = "M" * 5000
    caplog.set_level(logging.WARNING)
    [reply] = client.send(backend.url, [json.dumps({**instruction(1), "note": marker})])
    assert reply["status"] == "rejected" and "note: unknown field" in reply["reason"]
    assert marker not in caplog.text and "note: unknown field" in caplog.text


def test_oversized_message_is_rejected_and_the_server_lives(gateway):
    with serving(gateway, max_message_bytes=2048) as backend:
        big = json.dumps({**instruction(1), "target": "x" * 3000})
        too_big, fine = client.send(backend.url, [big, instruction(2)])
        assert too_big["status"] == "rejected" and "too large" in too_big["reason"]
        assert fine["status"] == "accepted"
        # Beyond the hard cap the library closes the connection; other connections go on.
        with pytest.raises(BackendUnreachableError, match="1009"):
            client.send(backend.url, ["y" * 20_000])
        assert client.send(backend.url, [instruction(3)])[0]["status"] == "accepted"


json_values = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats() | st.text(max_size=20),
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=8), inner, max_size=4),
    max_leaves=12)
field_names = st.sampled_from(["files", "outdir", "level", "mode", "quicklook", "psfsub", "priority",
                               "target", "band", "params", "force", "id", "schema", "type", "bogus"])
instruction_like = st.dictionaries(field_names, json_values, max_size=6)
fuzz_messages = st.one_of(
    st.text(max_size=300), st.binary(max_size=300), json_values.map(json.dumps),
    instruction_like.map(json.dumps), instruction_like.map(lambda d: json.dumps(d).encode()),
).filter(lambda message: kind(message) != "subscribe")


def test_fuzzed_messages_each_get_one_reply(backend, gateway):
    with ws_connect(backend.url) as connection:
        @settings(max_examples=200, deadline=None, database=None)
        @given(fuzz_messages)
        def one_reply_each(message):
            connection.send(message)
            reply = json.loads(connection.recv(timeout=10))
            assert isinstance(reply, dict)
            assert reply.get("status") in ("accepted", "rejected") or reply.get("type") in (
                "pong", "status")

        one_reply_each()
        with pytest.raises(TimeoutError):
            connection.recv(timeout=0.2)  # no reply too many
        connection.send(json.dumps(instruction(99)))
        assert json.loads(connection.recv(timeout=10))["status"] == "accepted"


def test_a_gateway_that_raises_still_gets_a_reply(caplog):
    caplog.set_level(logging.ERROR)
    with serving(ExplodingGateway()) as backend:
        boom, fine = client.send(backend.url, [{**instruction(1), "id": "boom-1"}, instruction(2)])
        assert boom["status"] == "rejected" and "internal error" in boom["reason"]
        assert fine["status"] == "accepted"
        assert client.ping(backend.url)


def test_a_broken_connection_does_not_affect_others(backend, gateway):
    with ws_connect(backend.url) as steady:
        with contextlib.suppress(Exception), ws_connect(backend.url) as victim:
            for n in range(200):
                victim.send(json.dumps(instruction(n)))
            victim.socket.shutdown(socket.SHUT_RDWR)  # gone mid-pipeline, no closing handshake
        with socket.create_connection(("127.0.0.1", backend.port)) as junk:
            junk.sendall(b"NOT HTTP AT ALL\r\n\r\n")
        steady.send(json.dumps(instruction(1000)))
        assert json.loads(steady.recv(timeout=10))["status"] == "accepted"
    assert client.send(backend.url, [instruction(1001)])[0]["status"] == "accepted"


# --- control messages and events ----------------------------------------------------------------


def test_status_and_ping(backend):
    client.send(backend.url, [instruction(1)])
    assert client.status(backend.url) == {"type": "status", "accepted": 1, "uptime_s": 1.5}
    assert client.ping(backend.url) is True


def test_unknown_control_message_is_rejected(backend):
    [reply] = client.send(backend.url, [{"type": "reboot"}])
    assert reply["status"] == "rejected" and "unknown control message 'reboot'" in reply["reason"]


def test_subscribe_streams_events_in_order(backend, gateway):
    product = ProductReady(job_id="j1", kind="klip", path="/data/reduced/HD 95086/klip.fits",
                           target="HD 95086", band="H", inputs=("/data/raw/S0001.fits",))
    failure = Failure(job_id="j2", stage="drp", reason="truncated FITS", retryable=True)
    with client.subscribe(backend.url) as events:
        gateway.bus.publish(product)
        gateway.bus.publish(failure)
        assert [next(events), next(events)] == [product, failure]
    deadline = time.monotonic() + 5
    while not gateway.subscriptions[0].closed and time.monotonic() < deadline:
        time.sleep(0.02)
    assert gateway.subscriptions[0].closed  # the server let go of the subscription


def test_replies_before_a_subscribe_come_first(backend, gateway):
    with ws_connect(backend.url) as connection:
        for n in range(20):
            connection.send(json.dumps(instruction(n)))
        connection.send(json.dumps({"type": "subscribe"}))
        replies = [json.loads(connection.recv(timeout=10)) for _ in range(21)]
        assert [r.get("job_id") for r in replies[:20]] == [f"obs-{n}" for n in range(20)]
        assert replies[20] == {"type": "subscribed"}


def test_stop_is_prompt_with_a_subscriber_connected(gateway):
    backend = WebSocketInterface(gateway, port=0)
    backend.start()
    events = client.subscribe(backend.url)
    started = time.monotonic()
    backend.stop()
    assert time.monotonic() - started < 5
    assert list(events) == []  # the stream simply ends
    assert not client.ping(backend.url)


# --- security, configuration, failures to connect -------------------------------------------------


def test_token_is_required_and_never_logged(gateway, caplog):
    caplog.set_level(logging.DEBUG)
    # cruncher's logging setup quiets the websockets library; this test wants all of it
    caplog.set_level(logging.DEBUG, logger="websockets")
    token = f"tok-{secrets.token_hex(16)}"
    with serving(gateway, token=token) as backend:
        with pytest.raises(BackendUnreachableError, match="401"):
            client.send(backend.url, [instruction(1)])
        with pytest.raises(BackendUnreachableError, match="rejected"):
            client.send(backend.url, [instruction(1)], token="not-the-token")
        assert not client.ping(backend.url)
        assert client.send(backend.url, [instruction(1)], token=token)[0]["status"] == "accepted"
    assert [i.id for i in gateway.accepted] == ["obs-1"]
    assert token not in caplog.text
    assert "[redacted]" in caplog.text  # handshake headers were logged at DEBUG, minus the token


@pytest.mark.parametrize("host", ["0.0.0.0", "::", "192.0.2.1", "example.org"])
def test_binding_beyond_loopback_needs_a_token(gateway, host):
    with pytest.raises(ConfigError, match="backend.token"):
        WebSocketInterface(gateway, host=host, port=0).start()


def test_a_taken_port_is_a_config_error(backend, gateway):
    with pytest.raises(ConfigError, match=f"cannot listen on 127.0.0.1:{backend.port}"):
        WebSocketInterface(gateway, port=backend.port).start()


def test_closed_port_gives_a_friendly_error():
    url = f"ws://127.0.0.1:{free_port()}"
    with pytest.raises(BackendUnreachableError) as caught:
        client.send(url, [instruction(1)])
    assert str(caught.value) == (f"no backend listening at {url}: connection refused; "
                                 "start one with `cruncher backend`")
    assert caught.value.retryable
    assert client.ping(url) is False


@pytest.fixture
def certificate(tmp_path) -> tuple[str, str]:
    openssl = shutil.which("openssl")
    if openssl is None:
        pytest.skip("the openssl command line tool is not installed: no test certificate")
    cert, key = tmp_path / "cert.pem", tmp_path / "key.pem"
    subprocess.run([openssl, "req", "-x509", "-newkey", "ec", "-pkeyopt",
                    "ec_paramgen_curve:prime256v1", "-nodes", "-keyout", str(key), "-out", str(cert),
                    "-days", "1", "-subj", "/CN=localhost",
                    "-addext", "subjectAltName=DNS:localhost,IP:127.0.0.1"],
                   check=True, capture_output=True)
    return str(cert), str(key)


def test_tls(gateway, certificate):
    cert, key = certificate
    with serving(gateway, tls_cert=cert, tls_key=key) as backend:
        assert backend.url.startswith("wss://127.0.0.1:")
        trusting = ssl.create_default_context(cafile=cert)
        [reply] = client.send(backend.url, [instruction(1)], ssl_context=trusting)
        assert reply["status"] == "accepted"
        with pytest.raises(BackendUnreachableError, match="certificate"):
            client.send(backend.url, [instruction(2)])
        with pytest.raises(BackendUnreachableError):
            client.send(backend.url.replace("wss://", "ws://"), [instruction(3)], timeout=5)


def test_missing_tls_files_are_config_errors(gateway, certificate, tmp_path):
    cert, _ = certificate
    missing = str(tmp_path / "nowhere" / "key.pem")
    with pytest.raises(ConfigError, match="nowhere/key.pem"):
        WebSocketInterface(gateway, port=0, tls_cert=cert, tls_key=missing).start()
    with pytest.raises(ConfigError, match="both"):
        WebSocketInterface(gateway, port=0, tls_cert=cert).start()
