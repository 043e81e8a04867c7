"""The settings cruncher has: one frozen dataclass per section of ``cruncher.toml``.

Each field is declared with :func:`setting`, whose metadata (``doc``, ``choices``, ``secret``,
``minimum``) drives validation, masking in ``cruncher config`` and the generated configuration
reference. :mod:`cruncher.config` layers values onto these defaults.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any


def setting(default: Any, doc: str, *, secret: bool = False, choices: tuple | None = None,
            minimum: float | None = None) -> Any:
    """Declare one setting: its default and what a reader of ``cruncher config`` needs to know."""
    meta = {"doc": doc, "secret": secret, "choices": choices, "minimum": minimum}
    return field(default=default, metadata=meta, repr=not secret)   # no token in a traceback


@dataclass(frozen=True, kw_only=True)
class PathSettings:
    """Where data lives. Empty sub-roots are derived from ``root``."""

    root: str = setting("~/cruncher-data", "Top of the data tree; the other roots default under it.")
    raw: str = setting("", "Raw frames, one directory per night (default <root>/raw).")
    reduced: str = setting("", "Products: cubes, PSF subtractions, contrast (default <root>/reduced).")
    queue: str = setting("", "DRP recipe queue directory (default <root>/queue).")
    logs: str = setting("", "Log files, DRP logs and job logs (default <root>/logs).")
    calibrations: str = setting("", "Calibration files and their index (default <root>/calibrations).")
    extra_roots: tuple[str, ...] = setting((), "Further directories instructions may read from.")


@dataclass(frozen=True, kw_only=True)
class DatabaseSettings:
    """The index of raw files, products, contrast curves, notes and jobs."""

    url: str = setting("", "SQLAlchemy URL; default sqlite:///<root>/cruncher.db. "
                           "MariaDB/MySQL: mysql+mysqlconnector://user:password@host/db.")


@dataclass(frozen=True, kw_only=True)
class BackendSettings:
    """The processing backend and how instructors reach it."""

    host: str = setting("127.0.0.1", "Address the websocket interface binds to.")
    port: int = setting(8765, "Port of the websocket interface (0: any free port).", minimum=0)
    interface: str = setting("websocket", "Network interface of the backend.",
                             choices=("websocket", "mpi", "queue"))
    token: str = setting("", "Shared token; required when binding beyond loopback.", secret=True)
    tls_cert: str = setting("", "TLS certificate (PEM) for the websocket interface.")
    tls_key: str = setting("", "TLS private key (PEM) for the websocket interface.")
    max_message_bytes: int = setting(1_048_576, "Largest message accepted.", minimum=1024)


@dataclass(frozen=True, kw_only=True)
class DrpSettings:
    """The data reduction pipeline that turns raw frames into cubes."""

    mode: str = setting("builtin", "builtin: cruncher's DRP workers; external: the IDL GPI DRP.",
                        choices=("builtin", "external"))
    workers: int = setting(1, "Built-in DRP worker processes.", minimum=1)
    recipe_timeout_s: float = setting(600.0, "A recipe .working longer than this is re-queued.",
                                      minimum=1)
    max_requeues: int = setting(2, "Re-queues of a stuck recipe before it is failed.", minimum=0)
    poll_interval_s: float = setting(1.0, "How often a DRP worker looks for waiting recipes.",
                                     minimum=0.01)


@dataclass(frozen=True, kw_only=True)
class PsfSubSettings:
    """Stellar PSF subtraction and contrast jobs."""

    cadi_workers: int = setting(1, "Worker threads running cADI jobs.", minimum=1)
    klip_workers: int = setting(1, "Worker threads running KLIP, injection and contrast jobs.",
                                minimum=1)
    engine: str = setting("fast", "KLIP engine: cruncher's fast one, or pyKLIP's own "
                                  "(same mathematics and files; see docs/figures.md).",
                          choices=("fast", "pyklip"))
    job_timeout_s: float = setting(7200.0, "Wall-clock limit of one job.", minimum=1)
    max_tries: int = setting(3, "Attempts of a job that fails in a retryable way.", minimum=1)
    retry_backoff_s: float = setting(10.0, "Wait before the first retry; doubles each time.",
                                     minimum=0)
    queue_size: int = setting(10_000, "Most jobs waiting at once (producers block beyond).",
                              minimum=1)


@dataclass(frozen=True, kw_only=True)
class RealtimeSettings:
    """The realtime scanner."""

    sequence_gap_min: float = setting(30.0, "A gap this long ends an observing sequence.", minimum=0)
    idle_close_min: float = setting(0.0, "Minutes without a new file that finish the open "
                                         "sequence (0: sequence_gap_min).", minimum=0)
    max_age_days: float = setting(2.0, "Older files are left for reprocess.", minimum=0)
    rescan_interval_s: float = setting(60.0, "Periodic rescan catching missed events.", minimum=1)
    settle_s: float = setting(2.0, "A file whose size is stable this long counts as complete.",
                              minimum=0)


@dataclass(frozen=True, kw_only=True)
class ChatSettings:
    """The chatbot."""

    slack_bot_token: str = setting("", "Slack bot token (xoxb-...).", secret=True)
    slack_app_token: str = setting("", "Slack app token for Socket Mode (xapp-...).", secret=True)
    channel: str = setting("#observing", "Channel the bot posts to.")
    webhook_url: str = setting("", "Incoming webhook (Slack or Mattermost) for post-only mode.",
                               secret=True)
    max_alerts_per_hour: int = setting(10, "Most failure alerts posted per hour.", minimum=1)
    digest_min: float = setting(15.0, "Least minutes between two digests of held-back failures.",
                                minimum=0)
    api_url: str = setting("https://slack.com/api/", "Slack Web API base URL (a proxy or a "
                           "test server).")


@dataclass(frozen=True, kw_only=True)
class ComputeSettings:
    """Numerical backends."""

    array: str = setting("auto", "Array module: auto uses cupy when a GPU is usable, else numpy.",
                         choices=("auto", "numpy", "cupy"))


@dataclass(frozen=True, kw_only=True)
class LoggingSettings:
    """Logs."""

    level: str = setting("INFO", "Least severe level logged.",
                         choices=("DEBUG", "INFO", "WARNING", "ERROR"))
    json: bool = setting(False, "Write log files as JSON lines instead of key=value.")


SECTIONS: dict[str, type] = {
    "paths": PathSettings,
    "database": DatabaseSettings,
    "backend": BackendSettings,
    "drp": DrpSettings,
    "psfsub": PsfSubSettings,
    "realtime": RealtimeSettings,
    "chat": ChatSettings,
    "compute": ComputeSettings,
    "logging": LoggingSettings,
}
