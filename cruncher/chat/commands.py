"""What the chatbot understands, and its answers.

    show me HD 95086[, 20160315[, H[, Spec]]]   the latest general KLIP reduction, as an image
    status                                      the backend's status
    time [UTC | LST | Chile | America/Santiago] the time (all three without an argument)
    sunrise | sunset | twilight                 at Gemini South
    moon phase                                  illuminated fraction, with the emoji
    help

:func:`parse` turns a message into a :class:`Command` (no I/O: unit-testable);
:class:`Answers` turns a command into a :class:`~cruncher.chat.transports.Post`. Anything not
understood gets the short help, never silence.
"""
from __future__ import annotations

import dataclasses
import datetime as dt
import logging
import re
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from cruncher.chat.transports import Post
from cruncher.errors import CruncherError

_log = logging.getLogger(__name__)

HELP = """I am the cruncher bot. Ask me:
• `show me OBJECT[, YYYYMMDD[, band[, Spec|Pol]]]` – the latest general KLIP reduction
• `status` – what the processing backend is doing
• `time [UTC|LST|Chile|<zone>]` – the time (LST at Gemini South)
• `sunrise`, `sunset`, `twilight` – at Gemini South tonight
• `moon phase` – how much of the Moon is lit
• `help` – this message"""
SHORT_HELP = ("I did not understand that. Try `show me HD 95086`, `status`, `time LST`, "
              "`sunset`, `moon phase` or `help`.")
BANDS = ("Y", "J", "H", "K1", "K2")
MODES = {"spec": "spec", "pol": "pol", "spect": "spec", "polarimetry": "pol"}
_MENTION = re.compile(r"<[@#!][^>]*>")


@dataclass(frozen=True)
class Command:
    name: str                    # show, status, time, sun, moon, help, unknown
    target: str | None = None
    date: dt.date | None = None
    band: str | None = None
    mode: str | None = None
    arg: str | None = None       # time zone; sunrise/sunset/twilight
    error: str | None = None     # what was wrong with a recognised request
    text: str = ""


def parse(text: str) -> Command:
    """Understand one message (mentions of the bot removed)."""
    clean = " ".join(_MENTION.sub(" ", text).split()).strip(" :,.!?")
    low = clean.lower()
    word = low.split(" ", 1)[0] if low else ""
    if word in ("help", "hi", "hello", "") or low == "?":
        return Command("help", text=clean)
    if word == "show":
        return _parse_show(re.sub(r"^show( me)?\s*", "", clean, flags=re.I), clean)
    if word == "status":
        return Command("status", text=clean)
    if word == "time":
        return Command("time", arg=clean[4:].strip() or None, text=clean)
    if word in ("sunrise", "sunset") or word.startswith("twilight"):
        return Command("sun", arg="twilight" if word.startswith("twilight") else word, text=clean)
    if word == "moon":
        return Command("moon", text=clean)
    return Command("unknown", text=clean)


def _parse_show(rest: str, clean: str) -> Command:
    parts = [p.strip() for p in rest.split(",")]
    if not parts or not parts[0]:
        return Command("show", error="show me what? e.g. `show me HD 95086, 20160315, H, Spec`",
                       text=clean)
    fields: dict = {"target": parts[0]}
    for part in parts[1:]:
        if re.fullmatch(r"\d{8}", part):
            try:
                fields["date"] = dt.datetime.strptime(part, "%Y%m%d").date()
            except ValueError:
                return Command("show", error=f"{part}: not a date (YYYYMMDD)", text=clean)
        elif part.upper() in BANDS:
            fields["band"] = part.upper()
        elif part.lower() in MODES:
            fields["mode"] = MODES[part.lower()]
        elif part:
            return Command("show", error=f"`{part}`: expected a date YYYYMMDD, a band "
                                         f"({'/'.join(BANDS)}) or Spec/Pol", text=clean)
    return Command("show", text=clean, **fields)


@dataclass
class Answers:
    """Answers commands; each source may be missing (then the answer says so).

    ``engine``: the database (``show me``); ``status``: a callable returning the backend's status
    dict; ``now``: the clock (tests fix it).
    """

    engine: object | None = None
    status: Callable[[], dict] | None = None
    now: Callable[[], dt.datetime] = lambda: dt.datetime.now(dt.timezone.utc)

    def answer(self, command: Command) -> Post:
        if command.error:
            return Post(text=command.error)
        handler = getattr(self, f"_{command.name}", None)
        if handler is None:
            return Post(text=SHORT_HELP)
        try:
            return handler(command)
        except CruncherError as exc:
            return Post(text=f"Sorry, I could not answer `{command.text}`: {exc}")
        except Exception:               # an answer must never take the bot down
            _log.exception("answering %r failed", command.text)
            return Post(text=f"Sorry, something went wrong answering `{command.text}` "
                             "(it is in the bot's log).")

    def _help(self, command: Command) -> Post:
        return Post(text=HELP)

    def _time(self, command: Command) -> Post:
        from cruncher.chat import almanac

        now = self.now()
        zones = [command.arg] if command.arg else ["UTC", "America/Santiago", "LST"]
        try:
            return Post(text="\n".join(almanac.clock(z, now) for z in zones))
        except ValueError as exc:
            return Post(text=str(exc))

    def _sun(self, command: Command) -> Post:
        from cruncher.chat import almanac

        return Post(text=almanac.sun_lines(which=command.arg, now=self.now()))

    def _moon(self, command: Command) -> Post:
        from cruncher.chat import almanac

        return Post(text=almanac.moon_line(self.now()))

    def _status(self, command: Command) -> Post:
        from cruncher.backend.cli import format_status

        if self.status is None:
            return Post(text="No backend is configured for me to ask.")
        return Post(text=f"```{format_status(self.status())}```")

    def _show(self, command: Command) -> Post:
        from cruncher.db import queries

        if self.engine is None:
            return Post(text="I have no database to look in.")
        row = queries.latest_product(self.engine, "klip_general", target=command.target,
                                     date=command.date, band=command.band, mode=command.mode)
        if row is None:
            return Post(text=self._not_found(command))
        if not Path(row["path"]).exists():
            return Post(text=f"The latest reduction of {row['object']} is recorded at "
                             f"{row['path']}, but that file is not there any more.")
        from cruncher.chat import render

        summary = render.klip_png(row["path"], render.png_for(row["path"]))
        return Post(text=summary.text(), image=str(summary.png), title=summary.title)

    def _not_found(self, command: Command) -> str:
        from cruncher.db import queries

        asked = ", ".join(str(v) for v in (command.target, command.date and
                                           command.date.strftime("%Y%m%d"), command.band,
                                           command.mode) if v)
        text = f"No general KLIP reduction of {asked} in the database."
        close = queries.close_matches(self.engine, "object", command.target or "", n=3,
                                      kind="klip_general")
        if close and command.target not in close:
            text += " Did you mean " + " or ".join(close) + "?"
        elif any(v is not None for v in (command.date, command.band, command.mode)):
            broader = dataclasses.replace(command, date=None, band=None, mode=None)
            row = queries.latest_product(self.engine, "klip_general", target=broader.target)
            if row is not None:
                text += (f" The latest one of {row['object']} is from {row['date_obs']} "
                         f"({row['band']}, {row['mode']}).")
        return text
