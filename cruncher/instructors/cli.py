"""``cruncher scan``: the realtime scanner as a command."""
from __future__ import annotations

import logging
import signal
import threading
from pathlib import Path

from cruncher.config import Settings
from cruncher.errors import ValidationError

_log = logging.getLogger(__name__)

SCAN_EPILOG = """\
examples:
  cruncher scan                          watch paths.raw, send to the local backend
  cruncher scan /data/raw --backend ws://reducer:8765
  cruncher scan /data/raw/160315 --once  handle what is there, finish its sequences, exit

Files count as arrived when closed after writing or moved in (rsync, Dropbox, scp), or once their
size has been stable for realtime.settle_s; a rescan every realtime.rescan_interval_s catches what
the events missed. A sequence ends on a change of target, band or mode, on a gap of
realtime.sequence_gap_min between two frames' headers, or after realtime.idle_close_min (default:
the gap) without a new file. Files written more than realtime.max_age_days ago are left for
`reprocess`. Restarting resumes from the database: nothing is instructed twice.
"""


def register(sub, common) -> None:
    from cruncher.cli import add_command

    p = add_command(sub, common, "scan", _scan, logs_to_file=True, epilog=SCAN_EPILOG,
                    help="the realtime scanner: watch the raw data and instruct a backend",
                    setting_flags={"gap": "realtime.sequence_gap_min",
                                  "idle": "realtime.idle_close_min"})
    p.add_argument("rawdir", nargs="?", type=Path, help="directory to watch (default: paths.raw)")
    p.add_argument("--backend", metavar="URL", help="default: ws://backend.host:backend.port")
    p.add_argument("--once", action="store_true",
                   help="handle the files there now, finish open sequences and exit")
    p.add_argument("--gap", type=float, metavar="MIN",
                   help="minutes without a frame that end a sequence (realtime.sequence_gap_min)")
    p.add_argument("--idle", type=float, metavar="MIN",
                   help="minutes without a new file that finish the open sequence "
                        "(realtime.idle_close_min; default: the gap)")
    p.add_argument("--params", type=_json_object, default={}, metavar="JSON",
                   help=PARAMS_HELP)
    p = add_command(sub, common, "bot", _bot, logs_to_file=True, epilog=BOT_EPILOG,
                    help="the chatbot: post results and alerts to the team's chat, answer questions")
    p.add_argument("--backend", metavar="URL", help="default: ws://backend.host:backend.port")
    p.add_argument("--webhook", metavar="URL",
                   help="post-only mode through this incoming webhook (chat.webhook_url)")
    p.add_argument("--watch", type=Path, metavar="DIR",
                   help="reduced tree watched while no backend answers (default: paths.reduced)")


BOT_EPILOG = """Slack: create an app with a bot token (scopes chat:write, files:write, channels:read,
app_mentions:read) and, to answer questions, Socket Mode with an app token; then
  SLACK_BOT_TOKEN=xoxb-... SLACK_APP_TOKEN=xapp-... cruncher bot --set chat.channel=#observing
Post-only (Slack or Mattermost incoming webhook):
  cruncher bot --webhook https://hooks.slack.com/services/...
Ask it, mentioning it: show me HD 95086[, 20160315[, H[, Spec]]] | status | time LST |
sunrise | sunset | twilight | moon phase | help"""


def _bot(args, settings: Settings) -> int:
    from cruncher.backend.cli import backend_url
    from cruncher.instructors.chatbot import serve

    stop = threading.Event()
    for sig in (signal.SIGTERM, signal.SIGINT):
        signal.signal(sig, lambda *_: stop.set())
    url = backend_url(settings, args.backend)
    print(f"cruncher bot: following {url}, posting to {settings.chat.channel}; Ctrl-C to stop",
          flush=True)
    return serve(settings, url, webhook=args.webhook, watch=args.watch, stop=stop)


def _scan(args, settings: Settings) -> int:
    from cruncher.backend.cli import backend_url
    from cruncher.instructors.arrivals import Arrivals
    from cruncher.instructors.realtime import run

    rt = settings.realtime
    rawdir = args.rawdir or Path(settings.paths.raw)
    url = backend_url(settings, args.backend)
    scanner = make_scanner(settings, url, params=args.params)
    if args.once:
        from cruncher.instruments.gpi.keywords import is_fits_name

        scanner.arrived(sorted(str(p) for p in rawdir.rglob("*") if is_fits_name(p)))
        scanner.close()
        _summary(scanner)
        return 1 if scanner.unsent else 0
    arrivals = Arrivals(rawdir, settle_s=rt.settle_s, rescan_s=rt.rescan_interval_s)
    stop = threading.Event()
    for sig in (signal.SIGTERM, signal.SIGINT):
        signal.signal(sig, lambda *_: stop.set())
    arrivals.start()
    print(f"cruncher scan: watching {rawdir}, instructing {url}; Ctrl-C to stop", flush=True)
    try:
        run(scanner, arrivals, stop)
    finally:
        arrivals.stop()
        _summary(scanner)
    return 0


PARAMS_HELP = ("parameters for the PSF-subtraction algorithms, sent with every sequence, e.g. "
               "'{\"klip\": {\"numbasis\": [1, 10, 20]}}' (a key per algorithm, or shared keys)")


def make_scanner(settings: Settings, url: str, params: dict | None = None):
    """The realtime scanner the settings describe, instructing the backend at ``url``, resumed
    from its database (sequences left open by a restart are picked up)."""
    from cruncher.db.cli import open_database
    from cruncher.instructors.realtime import Scanner, layout_from

    rt = settings.realtime
    scanner = Scanner(engine=open_database(settings, create=True), layout=layout_from(settings),
                      send=backend_sender(url, settings.backend.token), gap_min=rt.sequence_gap_min,
                      idle_min=rt.idle_close_min or None, max_age_s=rt.max_age_days * 86400,
                      params=params)
    scanner.resume()
    return scanner


def _json_object(text: str) -> dict:
    import argparse
    import json

    try:
        value = json.loads(text)
    except ValueError as exc:
        raise argparse.ArgumentTypeError(f"not JSON: {exc}") from None
    if not isinstance(value, dict):
        raise argparse.ArgumentTypeError("expected a JSON object, e.g. '{\"numthreads\": 1}'")
    return value


def backend_sender(url: str, token: str):
    """Send instructions to the backend at ``url``; rejections are logged."""
    from cruncher.backend import client

    def send(instructions) -> None:
        for reply in client.send_instructions(url, instructions, token=token):
            if reply.status != "accepted":
                _log.warning("instruction %s rejected: %s", reply.instruction_id, reply.reason)
    return send


def _summary(scanner) -> None:
    counts = ", ".join(f"{k} {v}" for k, v in sorted(scanner.counts.items())) or "nothing"
    print(f"cruncher scan: {counts}", flush=True)
    if scanner.candidates:
        print(f"{len(scanner.candidates)} file(s) too old for realtime; use `reprocess` "
              f"(first: {scanner.candidates[0]})", flush=True)


REPROCESS_DESCRIPTION = """\
reprocess: redo chosen datasets (or the whole campaign) from the database.

Finds the raw frames matching every criterion given (frames marked bad never count), cuts them
into sequences the way the night did (same target, band and mode; split on gaps longer than
realtime.sequence_gap_min) and sends one instruction per sequence to a backend, with a progress
bar and a summary, or writes them as JSON Lines (--export) for `super_cruncher` on a cluster
without database access."""
REPROCESS_EPILOG = """\
examples:
  reprocess --target "HD 95086" --band H --dry-run
  reprocess --target "HD 95086" --date 20160315
  reprocess --target "beta Pic" --from cubes --psfsub klip,contrast
  reprocess --all --since 20140101 --until 20161231 --export campaign.jsonl
"""


def reprocess_parser():
    import argparse

    from cruncher.cli import common_options

    common = common_options()
    p = argparse.ArgumentParser(prog="reprocess", description=REPROCESS_DESCRIPTION,
                                epilog=REPROCESS_EPILOG, parents=[common],
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.set_defaults(handler=_reprocess, logs_to_file=False, setting_flags={})
    which = p.add_argument_group("which data")
    which.add_argument("--target", help="OBJECT (case, spaces, dashes, underscores ignored)")
    which.add_argument("--all", action="store_true", help="every target")
    which.add_argument("--band", choices=("Y", "J", "H", "K1", "K2"))
    which.add_argument("--date", type=_date, metavar="YYYYMMDD", help="UT date of the frames")
    which.add_argument("--since", type=_date, metavar="YYYYMMDD", help="from this UT date on")
    which.add_argument("--until", type=_date, metavar="YYYYMMDD", help="up to this UT date")
    which.add_argument("--mode", choices=("spec", "pol"))
    which.add_argument("--program", metavar="ID", help="e.g. GS-2015B-Q-501")
    what = p.add_argument_group("what to do")
    what.add_argument("--from", dest="source", choices=("raw", "cubes"), default="raw",
                      help="raw: cubes, then PSF subtraction (default); cubes: reuse the cubes on "
                           "record and rerun PSF subtraction only")
    what.add_argument("--psfsub", type=_algorithms, default=("cadi", "klip", "contrast"),
                      metavar="LIST", help="PSF subtraction to run (default: cadi,klip,contrast)")
    what.add_argument("--params", type=_json_object, default={}, metavar="JSON", help=PARAMS_HELP)
    what.add_argument("--dry-run", action="store_true", help="print the sequences and the plan")
    what.add_argument("--export", metavar="FILE.jsonl", help="write the instructions, send none")
    what.add_argument("--backend", metavar="URL", help="default: ws://backend.host:backend.port")
    return p


def _date(text: str):
    import argparse
    import datetime as dt

    try:
        return dt.datetime.strptime(text, "%Y%m%d").date()
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r}: expected YYYYMMDD") from None


def _algorithms(text: str) -> tuple[str, ...]:
    import argparse

    from cruncher.messages import PSFSUB_ALGORITHMS

    names = tuple(n.strip() for n in text.split(",") if n.strip())
    unknown = [n for n in names if n not in PSFSUB_ALGORITHMS]
    if unknown:
        raise argparse.ArgumentTypeError(f"unknown {', '.join(unknown)}; choose from "
                                          f"{', '.join(PSFSUB_ALGORITHMS)}")
    return names


def _reprocess(args, settings: Settings) -> int:
    from cruncher.db.cli import open_database
    from cruncher.instructors import reprocessor
    from cruncher.instructors.realtime import layout_from

    if not args.all and not args.target:
        raise ValidationError("--target", "give a target (or --all for every target)")
    if args.date and (args.since or args.until):
        raise ValidationError("--date", "give either --date or --since/--until")
    query = reprocessor.Query(target=args.target, band=args.band, date=args.date,
                              since=args.since, until=args.until, mode=args.mode,
                              program=args.program, everything=args.all)
    engine = open_database(settings)
    planned = reprocessor.plan(engine, query, layout=layout_from(settings),
                               gap_min=settings.realtime.sequence_gap_min, source=args.source,
                               psfsub=args.psfsub, params=args.params)
    for line in planned.skipped:
        print(f"skipped: {line}")
    if not planned.items:
        print(f"nothing to reprocess for {query.describe()}")
        return 1
    if args.dry_run:
        for item in planned.items:
            print(f"{item.label}\n    {len(item.instruction.files)} file(s) -> "
                  f"{item.instruction.outdir}")
        print(f"{len(planned.items)} instruction(s) would be sent (dry run)")
        return 0
    if args.export:
        with open(args.export, "w") as out:
            for item in planned.items:
                out.write(item.instruction.to_json() + "\n")
        print(f"{len(planned.items)} instruction(s) written to {args.export}")
        return 0
    return _send_with_progress(planned.items, settings, args.backend)


def _send_with_progress(items, settings: Settings, given_url: str | None) -> int:
    from collections import Counter

    from tqdm import tqdm

    from cruncher.backend import client
    from cruncher.backend.cli import backend_url

    url = backend_url(settings, given_url)
    outcome: Counter[str] = Counter()
    rejected: list[str] = []
    chunk = 20
    with tqdm(total=len(items), unit="instruction", desc="sending", disable=None) as bar:
        for i in range(0, len(items), chunk):
            part = items[i:i + chunk]
            replies = client.send_instructions(url, [p.instruction for p in part],
                                               token=settings.backend.token)
            for item, reply in zip(part, replies):
                outcome[reply.status] += 1
                if reply.status != "accepted":
                    rejected.append(f"{item.label}: {reply.reason}")
            bar.update(len(part))
    print(f"sent {len(items)} instruction(s) to {url}: {outcome['accepted']} accepted, "
          f"{outcome['rejected']} rejected")
    for line in rejected:
        print(f"  rejected: {line}")
    return 1 if rejected else 0
