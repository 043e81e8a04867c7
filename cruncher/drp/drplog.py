"""The DRP log: what the GPI DRP writes and the backend reads.

Like the IDL DRP, cruncher's DRP appends to ``<log dir>/gpi_drp_YYMMDD.log`` (UT date) and writes
one line ``File output to: PATH`` per product, so the backend finds products the same way for
both DRPs. Several workers share the file: every line is written whole with one ``O_APPEND``
write and carries the recipe's name in brackets.
"""
from __future__ import annotations

import datetime as dt
import os
from pathlib import Path

PRODUCT_MARK = "File output to: "


class DrpLog:
    def __init__(self, directory: str | Path) -> None:
        self.directory = Path(directory)

    def path(self, when: dt.datetime | None = None) -> Path:
        when = when or dt.datetime.now(dt.UTC)
        return self.directory / f"gpi_drp_{when:%y%m%d}.log"

    def write(self, recipe: str, message: str) -> None:
        now = dt.datetime.now(dt.UTC)
        line = f"{now:%Y-%m-%d %H:%M:%S} [{recipe}] {message}".replace("\n", " | ") + "\n"
        self.directory.mkdir(parents=True, exist_ok=True)
        fd = os.open(self.path(now), os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)
        try:
            os.write(fd, line.encode("utf-8", "replace"))
        finally:
            os.close(fd)

    def product(self, recipe: str, path: str | Path) -> None:
        self.write(recipe, f"{PRODUCT_MARK}{path}")


class LogFollower:
    """Reads DRP logs as they grow and remembers, per recipe, its products, claim and outcome.

    Only new bytes are read on each :meth:`poll`, so following a night's log stays cheap.
    Lines without a ``[recipe]`` tag (the IDL DRP's) are kept under the name ``""``.
    """

    def __init__(self, directory: str | Path) -> None:
        self.directory = Path(directory)
        self._offsets: dict[Path, int] = {}
        self._partial: dict[Path, str] = {}
        self.products: dict[str, list[str]] = {}
        self.claims: dict[str, int] = {}
        self.failures: dict[str, str] = {}
        self.seconds: dict[str, float] = {}

    def poll(self) -> None:
        for path in sorted(self.directory.glob("gpi_drp_*.log")):
            try:
                with open(path, "rb") as stream:
                    stream.seek(self._offsets.get(path, 0))
                    data = stream.read()
            except OSError:
                continue
            self._offsets[path] = self._offsets.get(path, 0) + len(data)
            text = self._partial.pop(path, "") + data.decode("utf-8", "replace")
            lines = text.split("\n")
            if lines and lines[-1]:
                self._partial[path] = lines.pop()
            for line in lines:
                self._read(line)

    def _read(self, line: str) -> None:
        name = ""
        if "] " in line and "[" in line:
            name = line[line.index("[") + 1:line.index("] ")]
        message = line.split("] ", 1)[1] if name else line
        if message.startswith(PRODUCT_MARK):
            self.products.setdefault(name, []).append(message[len(PRODUCT_MARK):].strip())
        elif message.startswith("claimed by ") and "(pid " in message:
            try:
                self.claims[name] = int(message.rsplit("(pid ", 1)[1].rstrip(")"))
            except ValueError:
                pass
        elif message.startswith("Recipe FAILED: "):
            self.failures[name] = message[len("Recipe FAILED: "):]
        elif message.startswith("Recipe done in "):
            try:
                self.seconds[name] = float(message.split()[3])
            except (IndexError, ValueError):
                pass


def products_in(text: str, recipe: str | None = None) -> list[str]:
    """Product paths in DRP log ``text``, optionally only those of ``recipe``."""
    found = []
    for line in text.splitlines():
        if PRODUCT_MARK not in line:
            continue
        if recipe is not None and f"[{recipe}]" not in line:
            continue
        found.append(line.split(PRODUCT_MARK, 1)[1].strip())
    return found
