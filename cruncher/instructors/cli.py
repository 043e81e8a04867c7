"""``cruncher scan``: the realtime scanner as a command."""
from __future__ import annotations

import logging
import signal
import threading
from pathlib import Path

from cruncher.config import Settings

_log = logging.getLogger(__name__)

SCAN_EPILOG = """\
examples:
  cruncher scan                          watch paths.raw, send to the local backend
  cruncher scan /data/raw --backend ws://reducer:8765
  cruncher scan /data/raw/160315 --once  handle what is there, finish its sequences, exit

Files count as arrived when closed after writing or moved in (rsync, Dropbox, scp), or once their
size has been stable for realtime.settle_s; a rescan every realtime.rescan_interval_s catches what
the events missed. A sequence ends on a change of target, band or mode, or after
realtime.sequence_gap_min without a frame. Files written more than realtime.max_age_days ago are
left for `reprocess`. Restarting resumes from the database: nothing is instructed twice.
"""


def register(sub, common) -> None:
    from cruncher.cli import add_command

    p = add_command(sub, common, "scan", _scan, logs_to_file=True, epilog=SCAN_EPILOG,
                    help="the realtime scanner: watch the raw data and instruct a backend",
                    setting_flags={"gap": "realtime.sequence_gap_min"})
    p.add_argument("rawdir", nargs="?", type=Path, help="directory to watch (default: paths.raw)")
    p.add_argument("--backend", metavar="URL", help="default: ws://backend.host:backend.port")
    p.add_argument("--once", action="store_true",
                   help="handle the files there now, finish open sequences and exit")
    p.add_argument("--gap", type=float, metavar="MIN",
                   help="minutes without a frame that end a sequence (realtime.sequence_gap_min)")


def _scan(args, settings: Settings) -> int:
    from cruncher.backend.cli import backend_url
    from cruncher.db.cli import open_database
    from cruncher.instructors.arrivals import Arrivals
    from cruncher.instructors.realtime import Scanner, layout_from, run

    rt = settings.realtime
    rawdir = args.rawdir or Path(settings.paths.raw)
    url = backend_url(settings, args.backend)
    scanner = Scanner(engine=open_database(settings, create=True), layout=layout_from(settings),
                      send=_sender(url, settings.backend.token), gap_min=rt.sequence_gap_min,
                      max_age_s=rt.max_age_days * 86400)
    scanner.resume()
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


def _sender(url: str, token: str):
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
