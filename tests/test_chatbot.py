"""The chatbot against a local server speaking Slack's Web API and Socket Mode (tests/fake_slack.py),
with slack_sdk doing the HTTP, the uploads, the retries and the websocket for real."""
from __future__ import annotations

import logging
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest

from cruncher.chat.alerts import AlertDesk
from cruncher.chat.commands import SHORT_HELP, Answers, parse
from cruncher.chat.outbox import Outbox
from cruncher.chat.transports import Post, SlackTransport, WebhookTransport
from cruncher.instructors.chatbot import Chatbot
from cruncher.messages import Failure
from tests.fake_slack import FakeSlack

TOKEN = "xoxb-0000-never-shown"


@pytest.fixture
def slack():
    server = FakeSlack().start()
    yield server
    server.stop()


def transport(slack: FakeSlack) -> SlackTransport:
    return SlackTransport(TOKEN, "#observing", base_url=slack.api_url)


def bot_on(slack: FakeSlack, **alerts) -> tuple[Chatbot, Outbox]:
    outbox = Outbox(transport(slack), first_backoff_s=0.05).start()
    bot = Chatbot(outbox, alerts=AlertDesk(**alerts), answers=Answers(),
                  digest_check_s=0.05).start()
    return bot, outbox


def failure(i: int, sequence: str = "/data/reduced/HD_95086/autoreduced/20160315_H_Spec",
            **kw) -> Failure:
    return Failure(job_id=f"klip_general:{i}", stage="psfsub", sequence=sequence,
                   reason=f"BadInputError: try {i}: no field rotation", **kw)


# --- alerts -------------------------------------------------------------------------------------


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def test_a_burst_of_failures_of_one_sequence_is_one_alert_then_one_digest():
    clock = Clock()
    desk = AlertDesk(max_per_hour=10, digest_every_s=600, clock=clock)
    posted = [text for i in range(50) if (text := desk.offer(failure(i)))]
    assert len(posted) == 1 and "HD_95086/autoreduced/20160315_H_Spec" in posted[0]
    assert desk.digest() is None, "not before the digest interval"
    clock.now += 600
    digest = desk.digest()
    assert "49 more failure(s)" in digest and "49x" in digest and "try 49" in digest
    clock.now += 600
    assert desk.digest() is None, "nothing new, no digest"


def test_alerts_are_capped_per_hour_and_retryable_failures_only_reach_the_digest():
    clock = Clock()
    desk = AlertDesk(max_per_hour=3, digest_every_s=60, clock=clock)
    assert desk.offer(failure(0, retryable=True)) is None
    alerts = [desk.offer(failure(i, sequence=f"/r/T{i}/autoreduced/d")) for i in range(6)]
    assert sum(a is not None for a in alerts) == 3
    clock.now += 3601                 # a new hour
    assert desk.offer(failure(7, sequence="/r/T7/autoreduced/d")) is not None
    clock.now += 60
    digest = desk.digest()
    assert "4 more failure(s)" in digest and "1 being retried" in digest


# --- posting ------------------------------------------------------------------------------------


def test_a_429_with_retry_after_is_honoured(slack):
    slack.script("chat.postMessage", (429, {"Retry-After": "1"}))
    transport(slack).send(Post(text="after a rate limit"))
    first, second = slack.of("chat.postMessage")
    assert first.status == 429 and second.status == 200
    assert second.time - first.time >= 1.0
    assert [m["text"] for m in slack.messages()] == ["after a rate limit"]


def test_an_image_is_one_message_carrying_the_file(slack, tmp_path):
    png = tmp_path / "reduction.png"
    png.write_bytes(b"\x89PNG\r\n\x1a\n not really")
    transport(slack).send(Post(text="HD 95086 2016-03-15 H-Spec", image=str(png), title="t"))
    assert slack.messages() == [{"text": "HD 95086 2016-03-15 H-Spec", "channel": "C0OBSERVE",
                                 "thread_ts": None, "image": png.read_bytes()}]
    assert not slack.of("chat.postMessage")


def test_posts_wait_while_the_chat_is_down_and_arrive_in_order(slack):
    slack.script("chat.postMessage", *[(503, {})] * 3)
    outbox = Outbox(transport(slack), first_backoff_s=0.05).start()
    began = time.perf_counter()
    for i in range(5):
        outbox.put(Post(text=f"post {i}"))
    assert time.perf_counter() - began < 0.05, "putting never waits for the chat"
    slack.wait_for("chat.postMessage", 8)
    outbox.stop()
    assert [m["text"] for m in slack.messages()] == [f"post {i}" for i in range(5)]
    assert outbox.retries == 3 and outbox.sent == 5


def test_a_refused_post_is_dropped_and_the_next_one_goes(slack, caplog):
    outbox = Outbox(SlackTransport(TOKEN, "#nowhere", base_url=slack.api_url)).start()
    outbox.put(Post(text="an image for an unknown channel", image=__file__))
    outbox.put(Post(text="text", channel="#observing"))
    slack.wait_for("chat.postMessage")
    outbox.stop()
    assert outbox.dropped == 1 and "channel #nowhere not found" in caplog.text


def test_webhook_mode_posts_text(slack, tmp_path):
    WebhookTransport(slack.webhook_url).send(Post(text="HR 2562 done", image="/r/x.png"))
    (call,) = slack.of("webhook")
    assert call.params["text"] == "HR 2562 done\n(image: /r/x.png)"


def test_the_bot_folds_a_burst_of_failures_into_one_alert_and_one_digest(slack):
    bot, outbox = bot_on(slack, digest_every_s=0.5)
    for i in range(50):
        bot.on_event(failure(i))
    slack.wait_for("chat.postMessage", 2, timeout=10)
    time.sleep(0.6)
    bot.stop()
    outbox.stop()
    texts = [m["text"] for m in slack.messages()]
    assert len(texts) == 2, texts
    assert texts[0].startswith(":warning: psfsub failed") and "49 more" in texts[1]


# --- questions ----------------------------------------------------------------------------------


@pytest.mark.parametrize("text, expected", [
    ("<@U0BOT> show me HD 95086", dict(name="show", target="HD 95086")),
    ("show me HR 2562, 20161011, J, Spec",
     dict(name="show", target="HR 2562", band="J", mode="spec")),
    ("Show me beta Pic, K1", dict(name="show", target="beta Pic", band="K1")),
    ("status", dict(name="status")),
    ("time LST", dict(name="time", arg="LST")),
    ("time", dict(name="time", arg=None)),
    ("sunrise?", dict(name="sun", arg="sunrise")),
    ("twilights", dict(name="sun", arg="twilight")),
    ("moon phase", dict(name="moon")),
    ("<@U0BOT>", dict(name="help")),
    ("what is the seeing", dict(name="unknown")),
])
def test_commands_are_parsed(text, expected):
    command = parse(text)
    assert {k: getattr(command, k) for k in expected} == expected
    assert command.error is None


def test_a_malformed_show_request_says_what_is_wrong():
    assert "YYYYMMDD" in parse("show me HD 95086, 2016031").error
    assert "not a date" in parse("show me HD 95086, 20161341").error
    assert parse("show me").error.startswith("show me what?")


def test_unknown_requests_get_a_short_help_not_silence():
    assert Answers().answer(parse("please focus the telescope")).text == SHORT_HELP


def test_questions_over_socket_mode_get_answers_in_the_channel(slack):
    from cruncher.chat.socket_mode import listen

    bot, outbox = bot_on(slack)
    listener = listen("xapp-test", outbox.transport.client, bot.on_message)
    try:
        deadline = time.monotonic() + 10
        while not slack.connected() and time.monotonic() < deadline:
            time.sleep(0.02)
        envelope = slack.mention("help")
        slack.mention("help", event_id=None)            # another request
        slack.wait_for("chat.postMessage", 2)
        first = slack.mention("unknown words", event_id="Ev1")
        slack.mention("unknown words", event_id="Ev1")  # Slack redelivering: answered once
        slack.wait_for("chat.postMessage", 3)
        time.sleep(0.3)
    finally:
        listener.close()
        bot.stop()
        outbox.stop()
    texts = [m["text"] for m in slack.messages()]
    assert len(texts) == 3 and texts[0].startswith("I am the cruncher bot") and \
        texts[2] == SHORT_HELP
    assert {m["channel"] for m in slack.messages()} == {"C0OBSERVE"}
    assert envelope in slack.acks and first in slack.acks


# --- secrets ------------------------------------------------------------------------------------


def test_tokens_are_never_shown_or_logged(slack, tmp_path, caplog):
    caplog.set_level(logging.DEBUG)
    slack.script("chat.postMessage", (503, {}))
    outbox = Outbox(transport(slack), first_backoff_s=0.05).start()
    outbox.put(Post(text="x"))
    slack.wait_for("chat.postMessage", 2)
    outbox.stop()
    assert TOKEN not in caplog.text
    shown = subprocess.run([sys.executable, "-m", "cruncher", "config"], capture_output=True,
                           text=True, cwd=tmp_path,
                           env={"PATH": "/usr/bin:/bin", "SLACK_BOT_TOKEN": TOKEN,
                                "CRUNCHER_CHAT_SLACK_APP_TOKEN": "xapp-1-secret"})
    assert shown.returncode == 0, shown.stderr
    assert TOKEN not in shown.stdout and "xapp-1-secret" not in shown.stdout
    assert "environment SLACK_BOT_TOKEN" in shown.stdout


def test_the_outbox_never_blocks_whoever_posts(slack):
    class Stuck:
        def __init__(self) -> None:
            self.release = threading.Event()

        def send(self, post: Post) -> None:
            self.release.wait(10)

    stuck = Stuck()
    outbox = Outbox(stuck, max_queued=3).start()
    began = time.perf_counter()
    for i in range(10):
        outbox.put(Post(text=str(i)))
    assert time.perf_counter() - began < 0.05
    assert outbox.dropped >= 6 and len(outbox) <= 3
    stuck.release.set()
    outbox.stop()


def test_bot_help_explains(tmp_path):
    shown = subprocess.run([str(Path(sys.executable).parent / "cruncher"), "bot", "--help"],
                           capture_output=True, text=True)
    assert shown.returncode == 0 and "SLACK_BOT_TOKEN" in shown.stdout and "--webhook" in shown.stdout


# --- where events come from ---------------------------------------------------------------------


def test_the_bot_follows_a_real_backend_and_watches_the_tree_while_it_is_down(slack, tmp_path):
    from cruncher.backend.backend import Backend
    from cruncher.instructors.chatbot import BackendFollower, ProductWatcher
    from tests.test_backend import settings_for, wait_for

    seen = []
    watcher = ProductWatcher(tmp_path / "reduced", seen.append, rescan_s=0.5)
    # nothing listens there yet: the reduced tree is watched instead
    down = BackendFollower("ws://127.0.0.1:9", "", seen.append, watcher, retry_s=0.1)
    down.start()
    wait_for(lambda: watcher.running, 10, "the fallback watcher")
    dataset = tmp_path / "reduced" / "HD_95086" / "autoreduced" / "20160315_H_Spec"
    dataset.mkdir(parents=True)
    (dataset / "pyklip-S20160315-H-k300a9s4m1-KLmodes-all.fits").write_bytes(b"x")
    (dataset / "pyklip-S20160315-H-k300a9s4m1-fakes-L-0-KLmodes-all.fits").write_bytes(b"x")
    (dataset / "contrast-S20160315-H-T.fits").write_bytes(b"x")
    wait_for(lambda: len(seen) >= 2, 10, "the watched products")
    down.stop()
    assert {(e.kind, Path(e.path).name) for e in seen} == {   # (the bot posts each once)
        ("contrast_T", "contrast-S20160315-H-T.fits"),
        ("klip_general", "pyklip-S20160315-H-k300a9s4m1-KLmodes-all.fits")}
    assert not watcher.running

    backend = Backend(settings_for(tmp_path / "root")).start()
    bot, outbox = bot_on(slack)
    follower = BackendFollower(backend.interface.url, "", bot.on_event)
    try:
        follower.start()
        assert follower.connected.wait(10)
        backend.events.publish(failure(1))
        slack.wait_for("chat.postMessage")
    finally:
        follower.stop()
        backend.stop()
        bot.stop()
        outbox.stop()
    assert "no field rotation" in slack.messages()[0]["text"]


def test_answers_about_time_sun_moon_and_status(tmp_path):
    import datetime as dt

    from cruncher.backend import client
    from cruncher.backend.backend import Backend
    from tests.test_backend import settings_for

    now = dt.datetime(2016, 3, 16, 3, 0, tzinfo=dt.timezone.utc)
    backend = Backend(settings_for(tmp_path)).start()
    try:
        answers = Answers(now=lambda: now,
                          status=lambda: client.status(backend.interface.url, timeout=10))
        assert answers.answer(parse("status")).text.startswith("```backend on ")
    finally:
        backend.stop()
    times = answers.answer(parse("time")).text.splitlines()
    assert times[0].startswith("UTC: 2016-03-16 03:00:00") and len(times) == 3
    assert times[2].startswith("LST at Gemini South: ")
    assert "America/Santiago: 2016-03-16 00:00:00" in answers.answer(parse("time Chile")).text
    assert "unknown time zone" in answers.answer(parse("time Mars")).text
    assert "sunset" in answers.answer(parse("sunset")).text
    assert "civil dusk" in answers.answer(parse("twilight")).text
    assert "illuminated" in answers.answer(parse("moon phase")).text
    assert "I have no database" in answers.answer(parse("show me HD 95086")).text
    assert "No backend" in Answers().answer(parse("status")).text


# --- products -----------------------------------------------------------------------------------


def test_a_finished_reduction_is_one_message_with_its_image(slack, tmp_path):
    from cruncher.messages import ProductReady
    from tests.test_chat_render import write_curve, write_product

    product = write_product(tmp_path)
    curves = [write_curve(tmp_path, t) for t in "LT"]
    bot, outbox = bot_on(slack)
    general = ProductReady(job_id="klip_general:1", kind="klip_general", path=str(product))
    bot.on_event(general)
    bot.on_event(general)                 # announced again (a replay, the fallback watcher)
    bot.on_event(ProductReady(job_id="x", kind="klip_general_speccube", path=str(product)))
    for curve in curves:                  # one contrast job announces both curves
        bot.on_event(ProductReady(job_id="contrast:1", kind=f"contrast_{curve.name[-6]}",
                                  path=str(curve)))
    slack.wait_for("files.completeUploadExternal", 2)
    time.sleep(0.3)
    bot.stop()
    outbox.stop()
    first, second = slack.messages()
    assert len(slack.messages()) == 2
    assert first["text"].startswith("HD 95086 2016-03-15 H-Spec")
    assert "SNR" in first["text"] and '0.25"' in first["text"]
    assert first["image"].startswith(b"\x89PNG") and len(first["image"]) > 10_000
    assert "L-type, T-type" in second["text"] and second["image"].startswith(b"\x89PNG")
    assert "5-sigma contrast (T-type): " in second["text"] and '0.8"' in second["text"]


def test_show_me_finds_the_latest_reduction_in_the_database(tmp_path):
    import datetime as dt

    from cruncher.db.engine import init_db, make_engine
    from cruncher.db.products import record_product
    from tests.test_chat_render import write_product

    engine = make_engine(f"sqlite:///{tmp_path / 'c.db'}")
    init_db(engine)
    old, new = tmp_path / "old", tmp_path / "new"
    for directory, date in ((old, dt.date(2016, 3, 15)), (new, dt.date(2016, 12, 1))):
        directory.mkdir()
        record_product(engine, path=write_product(directory), kind="klip_general",
                       target="HD 95086", band="H", mode="spec", date_obs=date)
    answers = Answers(engine=engine)
    latest = answers.answer(parse("show me hd95086"))
    assert latest.image and Path(latest.image).parent == new and \
        latest.text.startswith("HD 95086 2016-03-15 H-Spec")     # (the header's date)
    dated = answers.answer(parse("show me HD 95086, 20160315, H, Spec"))
    assert Path(dated.image).parent == old
    assert "Did you mean HD 95086?" in answers.answer(parse("show me HD 95068")).text
    none = answers.answer(parse("show me HD 95086, J")).text
    assert none.startswith("No general KLIP reduction of HD 95086, J") and "2016-12-01" in none


def test_cruncher_bot_end_to_end(slack, tmp_path):
    """`cruncher bot` as its own process: a real backend's product event becomes one image
    message, a mention gets its answer in the channel, SIGTERM stops it cleanly."""
    import os
    import signal

    from cruncher.backend.backend import Backend
    from cruncher.messages import ProductReady
    from tests.test_backend import settings_for, wait_for
    from tests.test_chat_render import write_product

    backend = Backend(settings_for(tmp_path / "root")).start()
    env = {**os.environ, "SLACK_BOT_TOKEN": TOKEN, "SLACK_APP_TOKEN": "xapp-1-test",
           "CRUNCHER_CHAT_API_URL": slack.api_url, "CRUNCHER_PATHS_ROOT": str(tmp_path / "root")}
    before = len(backend.events._subscriptions)
    bot = subprocess.Popen([str(Path(sys.executable).parent / "cruncher"), "bot", "--backend",
                            backend.interface.url], env=env, cwd=tmp_path,
                           stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    try:
        wait_for(lambda: slack.connected() and len(backend.events._subscriptions) > before, 30,
                 "the bot to connect")
        backend.events.publish(ProductReady(job_id="klip_general:1", kind="klip_general",
                                            path=str(write_product(tmp_path))))
        slack.wait_for("files.completeUploadExternal", timeout=30)
        slack.mention("time UTC")
        slack.wait_for("chat.postMessage", timeout=30)
    finally:
        bot.send_signal(signal.SIGTERM)
        output = bot.communicate(timeout=30)[0]
        backend.stop()
    assert bot.returncode == 0, output
    image, answer = slack.messages()
    assert image["text"].startswith("HD 95086") and image["image"].startswith(b"\x89PNG")
    assert answer["text"].startswith("UTC: ") and answer["channel"] == "C0OBSERVE"
    assert TOKEN not in output
