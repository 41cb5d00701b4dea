"""A throwaway PostgreSQL server for the tests and benchmarks, so that they need no database
service on the machine: a cluster made with `initdb` in a temporary folder, started with
`pg_ctl` on a free loopback port the first time a test asks for a database, and removed when
the process ends. Trust authentication, no fsync: it holds nothing worth keeping.

`PROMPTREEL_TEST_DATABASE_URL` (an admin URL such as
`postgresql+psycopg://postgres@127.0.0.1:5432/postgres`) uses a running server instead.
"""

from __future__ import annotations

import atexit
import os
import pwd
import secrets
import shutil
import socket
import subprocess
import tempfile
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from sqlalchemy import create_engine, text

ADMIN_URL_VARIABLE = "PROMPTREEL_TEST_DATABASE_URL"
SERVER_USER = "postgres"  # initdb refuses to run as root: as root, the server runs as this user


def server_binaries() -> Path:
    """The folder of `initdb` and `pg_ctl`: Debian keeps them out of PATH, per major version."""
    debian = sorted(Path("/usr/lib/postgresql").glob("*/bin/initdb"), key=lambda path: int(path.parent.parent.name))
    if debian:
        return debian[-1].parent
    found = shutil.which("initdb")
    if found is None:
        raise RuntimeError("PostgreSQL's server binaries are missing: scripts/test installs Debian's `postgresql` package")
    return Path(found).parent


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


class ThrowawayPostgres:
    """One PostgreSQL cluster in a temporary folder, reachable on 127.0.0.1:`port` as `postgres`."""

    def __init__(self) -> None:
        self.root = Path(tempfile.mkdtemp(prefix="promptreel-pg-"))
        self.data = self.root / "data"
        self.log = self.root / "server.log"
        self.port = free_port()
        self.binaries = server_binaries()
        self._as_server_user: list[str] = []
        if os.geteuid() == 0:
            account = pwd.getpwnam(SERVER_USER)  # Debian's postgresql package creates it
            os.chown(self.root, account.pw_uid, account.pw_gid)
            self._as_server_user = ["runuser", "-u", SERVER_USER, "--"]

    @property
    def admin_url(self) -> str:
        return f"postgresql+psycopg://postgres@127.0.0.1:{self.port}/postgres"

    def _run(self, *command: str) -> None:
        result = subprocess.run([*self._as_server_user, *command], capture_output=True, text=True)
        if result.returncode != 0:
            log = self.log.read_text() if self.log.exists() else ""
            raise RuntimeError(f"{' '.join(command)} failed ({result.returncode}):\n{result.stdout}{result.stderr}{log}")

    def start(self) -> ThrowawayPostgres:
        self._run(
            str(self.binaries / "initdb"), "-D", str(self.data), "-U", "postgres", "--auth=trust", "--encoding=UTF8", "--no-sync"
        )
        options = (
            f"-h 127.0.0.1 -p {self.port} -k {self.root} -c max_connections=300 "
            "-c fsync=off -c synchronous_commit=off -c full_page_writes=off"
        )
        # -w: pg_ctl returns once the server accepts connections (it waits for that event, not a time).
        self._run(
            str(self.binaries / "pg_ctl"), "-D", str(self.data), "-l", str(self.log), "-o", options, "-w", "-t", "60", "start"
        )
        return self

    def stop(self) -> None:
        if (self.data / "postmaster.pid").exists():
            subprocess.run(
                [*self._as_server_user, str(self.binaries / "pg_ctl"), "-D", str(self.data), "-m", "immediate", "-w", "stop"],
                capture_output=True,
            )
        shutil.rmtree(self.root, ignore_errors=True)


_server: ThrowawayPostgres | None = None
_lock = threading.Lock()


def admin_url() -> str:
    """The admin URL of the tests' PostgreSQL: the given one, or a throwaway cluster started now."""
    global _server
    if given := os.environ.get(ADMIN_URL_VARIABLE):
        return given
    with _lock:
        if _server is None:
            server = ThrowawayPostgres()
            try:
                server.start()
            except BaseException:
                server.stop()
                raise
            _server = server
            atexit.register(stop)
        return _server.admin_url


def stop() -> None:
    """Stop and remove the throwaway cluster, if one was started (at exit, or at the session's end)."""
    global _server
    with _lock:
        if _server is not None:
            _server.stop()
            _server = None


@contextmanager
def new_database() -> Iterator[str]:
    """A database of its own on the tests' PostgreSQL (a throwaway server is started the first
    time), dropped afterwards."""
    admin = create_engine(admin_url(), isolation_level="AUTOCOMMIT")
    name = f"promptreel_test_{secrets.token_hex(4)}"
    with admin.connect() as connection:
        connection.execute(text(f'CREATE DATABASE "{name}"'))  # name made here, not from input
    try:
        yield admin.url.set(database=name).render_as_string(hide_password=False)
    finally:
        with admin.connect() as connection:
            connection.execute(text(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))
        admin.dispose()
