"""A MariaDB server for tests: the machine's own, or a throwaway one started from ``mariadbd``.

:func:`server_url` finds a server in this order: ``$CRUNCHER_TEST_MARIADB_URL``, the machine's
server on 127.0.0.1:3306, a throwaway server in a temporary directory. :func:`scratch_database`
creates a uniquely named database on it and drops it afterwards.
"""
from __future__ import annotations

import contextlib
import os
import shutil
import socket
import subprocess
import tempfile
import time
import uuid
from collections.abc import Iterator
from pathlib import Path

MACHINE_URL = "mysql+mysqlconnector://root@127.0.0.1:3306/"


def _answers(url: str, timeout: float = 3.0) -> bool:
    from sqlalchemy import create_engine, text

    engine = create_engine(url, connect_args={"connection_timeout": int(timeout)})
    try:
        with engine.connect() as conn:
            conn.execute(text("SELECT 1"))
        return True
    except Exception:
        return False
    finally:
        engine.dispose()


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


class ThrowawayServer:
    """A private ``mariadbd`` on a free loopback port, its data in a temporary directory."""

    def __init__(self) -> None:
        self.dir = Path(tempfile.mkdtemp(prefix="cruncher-mariadb-"))
        self.port = _free_port()
        self.process: subprocess.Popen | None = None

    @property
    def url(self) -> str:
        return f"mysql+mysqlconnector://root@127.0.0.1:{self.port}/"

    def start(self, timeout: float = 60.0) -> str:
        install = shutil.which("mariadb-install-db") or shutil.which("mysql_install_db")
        daemon = shutil.which("mariadbd") or "/usr/sbin/mariadbd"
        if not install or not os.path.exists(daemon):
            raise RuntimeError("mariadbd / mariadb-install-db not found")
        user = ["--user=root"] if os.geteuid() == 0 else []
        data = self.dir / "data"
        subprocess.run([install, "--no-defaults", f"--datadir={data}", "--skip-test-db",
                        "--auth-root-authentication-method=normal", *user],
                       check=True, capture_output=True, timeout=timeout)
        self.process = subprocess.Popen(
            [daemon, "--no-defaults", f"--datadir={data}", f"--socket={self.dir / 'sock'}",
             f"--port={self.port}", "--bind-address=127.0.0.1", "--skip-log-bin",
             "--innodb-buffer-pool-size=64M", f"--log-error={self.dir / 'error.log'}", *user],
            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                raise RuntimeError(f"mariadbd exited: see {self.dir / 'error.log'}")
            if _answers(self.url, timeout=1):
                return self.url
            time.sleep(0.3)
        raise RuntimeError("mariadbd did not answer in time")

    def stop(self) -> None:
        if self.process and self.process.poll() is None:
            self.process.terminate()
            try:
                self.process.wait(timeout=30)
            except subprocess.TimeoutExpired:
                self.process.kill()
        shutil.rmtree(self.dir, ignore_errors=True)


@contextlib.contextmanager
def server_url() -> Iterator[str]:
    """A server URL without a database name; raises RuntimeError when none can be had."""
    explicit = os.environ.get("CRUNCHER_TEST_MARIADB_URL")
    if explicit:
        if not _answers(explicit):
            raise RuntimeError(f"CRUNCHER_TEST_MARIADB_URL={explicit} does not answer")
        yield explicit
        return
    if _answers(MACHINE_URL):
        yield MACHINE_URL
        return
    server = ThrowawayServer()
    try:
        yield server.start()
    finally:
        server.stop()


@contextlib.contextmanager
def scratch_database(server: str) -> Iterator[str]:
    """A new, uniquely named database on ``server``; dropped afterwards."""
    from sqlalchemy import create_engine

    name = f"cruncher_test_{uuid.uuid4().hex[:12]}"
    admin = create_engine(server)
    with admin.begin() as conn:
        conn.exec_driver_sql(f"CREATE DATABASE `{name}` CHARACTER SET utf8mb4")
    try:
        yield server.rstrip("/") + f"/{name}"
    finally:
        with admin.begin() as conn:
            conn.exec_driver_sql(f"DROP DATABASE IF EXISTS `{name}`")
        admin.dispose()
