"""The chatbot (``cruncher bot``): results and alerts in the team's chat, answers on request.

It follows a backend's events over the websocket interface (falling back to watching the
reduced-data tree while no backend answers) and posts:

- each finished general KLIP reduction, as an image in contrast units with its detections and the
  contrast at 0.25", 0.4" and 0.8";
- each dataset's calibrated contrast curves, as a plot;
- failures, one alert per failing sequence, repeats folded into a periodic digest, never more
  than ``chat.max_alerts_per_hour`` alerts an hour (:mod:`cruncher.chat.alerts`).

With a Slack app token it also answers messages that mention it (Socket Mode: no public endpoint
needed; :mod:`cruncher.chat.commands`). Posts go through an outbox (:mod:`cruncher.chat.outbox`):
a chat that is down delays them, it never blocks the bot or the backend.
"""
from __future__ import annotations

import dataclasses
import logging
import re
import threading
import time
from pathlib import Path

from cruncher.chat.alerts import AlertDesk
from cruncher.chat.commands import Answers, parse
from cruncher.chat.outbox import Outbox
from cruncher.chat.transports import Post
from cruncher.errors import ConfigError, CruncherError
from cruncher.messages import Event, Failure, ProductReady

_log = logging.getLogger(__name__)

GENERAL = "klip_general"
CONTRAST_KINDS = ("contrast_L", "contrast_T")
#: Products the fallback watcher recognises by name.
WATCHED = ((re.compile(r"^pyklip-.*-k\d+a\d+s\d+m[\d.]+-KLmodes-all\.fits$"), GENERAL),
           (re.compile(r"^contrast-.*-[LT]\.fits$"), "contrast"))


class Chatbot:
    """Turns backend events into posts, and questions into answers."""

    def __init__(self, outbox: Outbox, *, alerts: AlertDesk, answers: Answers,
                 digest_check_s: float = 10.0) -> None:
        self.outbox, self.alerts, self.answers = outbox, alerts, answers
        self.digest_check_s = digest_check_s
        self._posted: set[str] = set()
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self._digests = threading.Thread(target=self._digest_loop, name="chat-digest",
                                         daemon=True)

    def start(self) -> Chatbot:
        self._digests.start()
        return self

    def stop(self) -> None:
        self._stop.set()

    # --- events --------------------------------------------------------------------------------

    def on_event(self, event: Event) -> None:
        """Handle one backend event (any thread); never raises."""
        try:
            if isinstance(event, ProductReady):
                self._product(event)
            elif isinstance(event, Failure):
                with self._lock:            # the digest thread reads the same desk
                    text = self.alerts.offer(event)
                if text is not None:
                    self.outbox.put(Post(text=text))
        except Exception:               # a bad product must not stop the bot
            _log.exception("could not post about %s", getattr(event, "path", event))

    def _product(self, event: ProductReady) -> None:
        if event.grade != "science":
            return
        if event.kind == GENERAL:
            self._post_once(event.path, lambda: self._klip_post(event))
        elif event.kind in CONTRAST_KINDS:
            curves = sorted(Path(event.path).parent.glob(
                re.sub(r"-[LT]\.fits$", "-[LT].fits", Path(event.path).name)))
            dataset = str(curves[0])[:-len("-L.fits")] if curves else event.path
            # keyed by the curves there, so a T curve written after the L one is posted too
            kinds = "".join(c.name[-6] for c in curves)
            self._post_once(f"{dataset}:{kinds}", lambda: self._contrast_post(curves))

    def _post_once(self, key: str, make) -> None:
        """Post what ``make()`` builds, once per ``key``; a product that cannot be drawn yet
        (still being written when the watcher saw it) is not marked, so its next sighting
        posts it."""
        with self._lock:
            if key in self._posted:
                return
        post = make()
        with self._lock:
            if key in self._posted:
                return
            self._posted.add(key)
        self.outbox.put(post)

    def _klip_post(self, event: ProductReady) -> Post:
        """The image at the KL cutoff the job's detections were made on, with those detections
        (the fallback watcher knows neither: the renderer detects on its default cutoff)."""
        from cruncher.chat import render

        extras = event.extras or {}
        summary = render.klip_png(event.path, render.png_for(event.path),
                                  kl=extras.get("detection_kl"), detections=extras.get("detections"))
        return Post(text=summary.text(), image=str(summary.png), title=summary.title)

    def _contrast_post(self, curves: list[Path]) -> Post:
        from cruncher.chat import render

        # (not contrast-<tag>.png: the contrast job's own figure is called that)
        png = render.contrast_png(curves, render.png_for(
            re.sub(r"-[LT]\.fits$", "-chat.fits", str(curves[0]))))
        title = curves[0].name.removeprefix("contrast-").rsplit("-", 1)[0]
        lines = [render.contrast_line(render.contrast_at(c), c.name[-6], sigma="5-sigma")
                 for c in curves]
        return Post(text="\n".join([f"Calibrated contrast curves of {title} "
                                    f"({', '.join(c.name[-6] + '-type' for c in curves)})",
                                    *filter(None, lines)]),
                    image=str(png), title=f"contrast {title}")

    def _digest_loop(self) -> None:
        while not self._stop.wait(self.digest_check_s):
            with self._lock:
                text = self.alerts.digest()
            if text is not None:
                self.outbox.put(Post(text=text))

    # --- questions -----------------------------------------------------------------------------

    def on_message(self, text: str, *, channel: str | None = None,
                   thread_ts: str | None = None) -> Post:
        """Answer a message that mentions the bot; the answer is queued and returned."""
        post = dataclasses.replace(self.answers.answer(parse(text)), channel=channel,
                                   thread_ts=thread_ts)
        self.outbox.put(post)
        return post


# --- event sources ------------------------------------------------------------------------------


class BackendFollower(threading.Thread):
    """Feeds a backend's events to ``handle``; while the backend does not answer, the reduced
    tree is watched instead (``fallback``), and the backend is tried again with backoff."""

    def __init__(self, url: str, token: str, handle, fallback=None, *,
                 retry_s: float = 5.0, max_retry_s: float = 60.0) -> None:
        super().__init__(name="chat-events", daemon=True)
        self.url, self.token, self.handle, self.fallback = url, token, handle, fallback
        self.retry_s, self.max_retry_s = retry_s, max_retry_s
        self.stopped = threading.Event()
        self.connected = threading.Event()
        self._stream = None

    def run(self) -> None:
        from cruncher.backend import client

        wait = self.retry_s
        while not self.stopped.is_set():
            try:
                self._stream = client.subscribe(self.url, token=self.token)
            except CruncherError as exc:
                self._fallback(True, exc)
                self.stopped.wait(wait)
                wait = min(wait * 2, self.max_retry_s)
                continue
            wait = self.retry_s
            self._fallback(False)
            self.connected.set()
            _log.info("following the backend's events at %s", self.url)
            try:
                for event in self._stream:
                    self.handle(event)
            except CruncherError as exc:
                _log.warning("lost the backend at %s: %s", self.url, exc)
            finally:
                self.connected.clear()
                self._stream.close()

    def _fallback(self, on: bool, reason: Exception | None = None) -> None:
        if self.fallback is None or self.fallback.running == on:
            return
        if on:
            _log.warning("no backend at %s (%s): watching %s for products instead", self.url,
                         reason, self.fallback.root)
            self.fallback.start()
        else:
            self.fallback.stop()

    def stop(self) -> None:
        self.stopped.set()
        if self._stream is not None:
            self._stream.close()
        if self.fallback is not None and self.fallback.running:
            self.fallback.stop()


class ProductWatcher:
    """Watches a reduced-data tree (watchdog) for finished KLIP reductions and contrast curves,
    and hands them on as :class:`ProductReady` events. Every ``rescan_s`` it also looks for
    products written since it started, which an event can miss (a file made in a new directory
    before its watch existed); the bot posts each product once however often it is seen."""

    GLOBS = ("pyklip-*-k*a*s*m*-KLmodes-all.fits", "contrast-*-[LT].fits")

    def __init__(self, root: str | Path, handle, *, rescan_s: float = 30.0) -> None:
        self.root, self.handle, self.rescan_s = Path(root), handle, rescan_s
        self._observer = None
        self._stopped = threading.Event()
        self._since = 0.0

    @property
    def running(self) -> bool:
        return self._observer is not None

    def start(self) -> None:
        from watchdog.events import FileSystemEventHandler
        from watchdog.observers import Observer

        watcher = self

        class Handler(FileSystemEventHandler):
            def on_closed(self, event):
                watcher.seen(event.src_path)

            def on_moved(self, event):
                watcher.seen(event.dest_path)

        self.root.mkdir(parents=True, exist_ok=True)
        self._since = time.time() - 5.0
        observer = Observer()
        observer.schedule(Handler(), str(self.root), recursive=True)
        observer.start()
        self._stopped.clear()
        threading.Thread(target=self._rescans, name="chat-rescan", daemon=True).start()
        self._observer = observer

    def stop(self) -> None:
        self._stopped.set()
        if self._observer is not None:
            self._observer.stop()
            self._observer.join(timeout=5)
            self._observer = None

    def _rescans(self) -> None:
        while not self._stopped.wait(self.rescan_s):
            for pattern in self.GLOBS:
                for path in self.root.rglob(pattern):
                    try:
                        if path.stat().st_mtime >= self._since:
                            self.seen(str(path))
                    except OSError:
                        continue

    def seen(self, path: str) -> None:
        name = Path(path).name
        for pattern, kind in WATCHED:
            if pattern.match(name):
                if kind == "contrast":
                    kind = f"contrast_{name[-6]}"
                self.handle(ProductReady(job_id="watched", kind=kind, path=path))
                return


# --- the service --------------------------------------------------------------------------------


def make_transport(settings, webhook: str | None = None):
    """Slack's Web API when a bot token is set, else the incoming webhook; None if neither."""
    try:
        import slack_sdk  # noqa: F401
    except ImportError:
        raise ConfigError("cruncher bot needs slack_sdk: pip install 'cruncher[chat]'") from None
    from cruncher.chat.transports import SlackTransport, WebhookTransport

    chat = settings.chat
    if chat.slack_bot_token and not webhook:
        return SlackTransport(chat.slack_bot_token, chat.channel, base_url=chat.api_url)
    if webhook or chat.webhook_url:
        return WebhookTransport(webhook or chat.webhook_url)
    return None


def serve(settings, url: str, *, webhook: str | None = None, watch: Path | None = None,
          stop: threading.Event) -> int:
    """Run the bot until ``stop`` is set: follow ``url``'s events (watching ``watch`` while it
    does not answer), post, and answer questions when a Slack app token is set."""
    from cruncher.db.cli import open_database

    transport = make_transport(settings, webhook)
    if transport is None:
        raise ConfigError("no chat to post to: set SLACK_BOT_TOKEN (and SLACK_APP_TOKEN to "
                            "answer questions) or chat.webhook_url / --webhook")
    if hasattr(transport, "check"):
        who = transport.check()
        _log.info("posting to %s as %s (team %s)", settings.chat.channel, who.get("user"),
                  who.get("team"))
    outbox = Outbox(transport).start()
    chat = settings.chat
    bot = Chatbot(outbox, alerts=AlertDesk(max_per_hour=chat.max_alerts_per_hour,
                                           digest_every_s=chat.digest_min * 60),
                  answers=Answers(engine=_engine_or_none(open_database, settings),
                                  status=_status_of(url, settings.backend.token))).start()
    fallback = ProductWatcher(watch or settings.paths.reduced, bot.on_event)
    follower = BackendFollower(url, settings.backend.token, bot.on_event, fallback)
    follower.start()
    listener = None
    if chat.slack_app_token and hasattr(transport, "client"):
        from cruncher.chat.socket_mode import listen

        listener = listen(chat.slack_app_token, transport.client, bot.on_message)
        _log.info("answering mentions through Socket Mode")
    try:
        while not stop.wait(0.5):
            pass
    finally:
        follower.stop()
        if listener is not None:
            listener.close()
        bot.stop()
        outbox.stop()
    return 0


def _engine_or_none(open_database, settings):
    try:
        return open_database(settings, create=False)
    except CruncherError as exc:
        _log.warning("no database for `show me` answers: %s", exc)
        return None


def _status_of(url: str, token: str):
    from cruncher.backend import client

    return lambda: client.status(url, token=token, timeout=10)
