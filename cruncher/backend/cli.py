"""``cruncher backend``, ``cruncher status`` and ``cruncher send``."""
from __future__ import annotations

import json
import signal
import sys
import time
from pathlib import Path

from cruncher.config import Settings

BACKEND_EPILOG = """\
examples:
  cruncher backend                              websocket on 127.0.0.1:8765, built-in DRP
  cruncher backend --drp external               an operator runs the IDL GPI DRP on the queue
  mpiexec -n 3 cruncher backend --interface mpi backends on ranks 1-2 (rank 0: super_cruncher)
  CRUNCHER_BACKEND_TOKEN=... cruncher backend --host 0.0.0.0   reachable from other machines

Stop with Ctrl-C or SIGTERM: running jobs are interrupted and resume at the next start.
"""
SEND_EPILOG = """\
examples:
  cruncher send night.jsonl                     one instruction per line
  cruncher send --json '{"files": ["/data/raw/160315/S20160315S0010.fits"],
                         "outdir": "/data/reduced/HD_95086/autoreduced/20160315_H_Spec"}'
"""


def register(sub, common) -> None:
    from cruncher.cli import add_command

    flags = {"interface": "backend.interface", "host": "backend.host", "port": "backend.port",
             "drp": "drp.mode", "drp_workers": "drp.workers"}
    p = add_command(sub, common, "backend", _backend, logs_to_file=True, epilog=BACKEND_EPILOG,
                    help="run the processing backend (threads, DRP workers, PSF jobs)",
                    setting_flags=flags)
    p.add_argument("--interface", choices=("websocket", "mpi", "queue"),
                   help="network interface (default: backend.interface)")
    p.add_argument("--host", help="address to bind (default: backend.host)")
    p.add_argument("--port", type=int, help="port (default: backend.port)")
    p.add_argument("--drp", choices=("builtin", "external"), help="DRP mode (default: drp.mode)")
    p.add_argument("--drp-workers", type=int, help="built-in DRP workers (default: drp.workers)")

    p = add_command(sub, common, "status", _status,
                    help="ask a running backend for its queues, jobs and failures")
    p.add_argument("--backend", metavar="URL", help="default: ws://backend.host:backend.port")
    p.add_argument("--json", action="store_true", help="machine-readable output")

    p = add_command(sub, common, "send", _send, epilog=SEND_EPILOG,
                    help="send instructions to a backend and print the replies")
    p.add_argument("file", nargs="?", type=Path, help="JSON Lines file of instructions ('-': stdin)")
    p.add_argument("--json", dest="inline", help="one instruction as JSON")
    p.add_argument("--backend", metavar="URL", help="default: ws://backend.host:backend.port")


def backend_url(settings: Settings, given: str | None = None) -> str:
    if given:
        return given
    scheme = "wss" if settings.backend.tls_cert else "ws"
    host = "127.0.0.1" if settings.backend.host in ("0.0.0.0", "::", "") else settings.backend.host
    return f"{scheme}://{host}:{settings.backend.port}"


def _backend(args, settings: Settings) -> int:
    from cruncher.backend.backend import Backend

    backend = Backend(settings)
    for sig in (signal.SIGTERM, signal.SIGINT):
        signal.signal(sig, lambda *_: backend._stopping.is_set() or _stop_async(backend))
    backend.start()
    where = getattr(backend.interface, "url", backend.interface_name)
    print(f"cruncher backend running ({where}); Ctrl-C to stop", flush=True)
    while not backend.wait(0.5):
        pass
    return 0


def _stop_async(backend) -> None:
    import threading

    threading.Thread(target=backend.stop, name="stopper", daemon=True).start()


def _status(args, settings: Settings) -> int:
    from cruncher.backend import client

    info = client.status(backend_url(settings, args.backend), token=settings.backend.token)
    if args.json:
        print(json.dumps(info, indent=1, default=str))
        return 0
    print(format_status(info))
    return 0


def format_status(info: dict) -> str:
    up = int(info.get("uptime_s", 0))
    lines = [f"backend on {info.get('host')}, up {up // 3600}h {up % 3600 // 60}m {up % 60}s, "
             f"interface {info.get('interface')}"]
    ins = info.get("instructions", {})
    lines.append("instructions: " + (", ".join(f"{k} {v}" for k, v in sorted(ins.items()))
                                     or "none yet"))
    drp = info.get("drp_workers")
    if isinstance(drp, list):
        lines.append("DRP workers: " + ", ".join(
            f"{w['name']} (pid {w['pid']}, {'alive' if w['alive'] else 'DEAD'})" for w in drp))
    else:
        lines.append(f"DRP: {drp}")
    red = info.get("reduction", {})
    lines.append(f"recipes: {red.get('held_for_calibrations', 0)} held for calibrations; in the "
                 f"DRP queue: {red.get('in_drp_queue') or 'none'}")
    psf = info.get("psf_queue", {})
    lines.append(f"PSF queue: {psf.get('waiting', 0)} waiting {psf.get('by_priority', {})}")
    running = info.get("running", [])
    lines.append(f"running jobs: {len(running)}")
    lines += [f"  {j['id']} ({j['dataset']}) try {j['try']}, {j['age_s']:.0f} s" for j in running]
    failures = info.get("recent_failures", [])
    if failures:
        lines.append("recent failures:")
        lines += [f"  {time.strftime('%H:%M:%S', time.localtime(f['time']))} {f['stage']} "
                  f"{f['id']}: {f['reason']}" for f in failures]
    return "\n".join(lines)


def _send(args, settings: Settings) -> int:
    from cruncher.backend import client

    if args.inline:
        messages = [args.inline]
    elif args.file:
        text = sys.stdin.read() if str(args.file) == "-" else args.file.read_text()
        messages = [line for line in text.splitlines() if line.strip()]
    else:
        print("cruncher send: give a JSON Lines file or --json", file=sys.stderr)
        return 2
    replies = client.send(backend_url(settings, args.backend), messages,
                          token=settings.backend.token)
    rejected = 0
    for reply in replies:
        print(json.dumps(reply))
        rejected += reply.get("status") == "rejected"
    print(f"{len(replies) - rejected} accepted, {rejected} rejected", file=sys.stderr)
    return 1 if rejected else 0
