"""A MariaDB server started with ``read_only = ON``, as a read replica is, on a free
loopback port with its own data directory and socket, started once per test session by
the ``readonly_mariadb`` fixture.

``read_only`` binds every account without SUPER or READ ONLY ADMIN: root (which has
them) still writes, and plays the primary's part, making what the replica would have
received; each test gets a database and an account of its own with every right on that
database and no other, which the server refuses any write.

    @pytest.mark.xdist_group("readonly_mariadb")
    def test_x(readonly_mariadb: ReadOnlyMariaDB) -> None:
        with readonly_mariadb.database() as (writer, reader):  # root, and the bound account
            ...
"""

from __future__ import annotations

import os
import shutil
import subprocess
import tempfile
import time
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import pytest

from servers.lifecycle import answers, query, start_or_skip, wait_until
from servers.process import Started, free_port

# Small and quick: a throw-away server (no binary log, no performance schema, no DNS).
OPTIONS = [
    "--bind-address=127.0.0.1",
    "--skip-name-resolve",
    "--skip-log-bin",
    "--performance-schema=OFF",
    "--innodb-buffer-pool-size=16M",
    "--innodb-log-file-size=8M",
    "--innodb-flush-log-at-trx-commit=0",
    "--read-only=ON",
]


def url(port: int, database: str = "", user: str = "root") -> str:
    return f"mysql+asyncmy://{user}@127.0.0.1:{port}/{database}"


@dataclass(frozen=True)
class ReadOnlyMariaDB:
    """The running server; ``database`` makes a database and a bound account for a test."""

    port: int
    started: Started
    seconds_to_start: float

    @property
    def admin(self) -> str:
        """root, whom read_only does not bind."""
        return url(self.port)

    @contextmanager
    def writable(self) -> Iterator[None]:
        """The server writable for a moment, as a primary would be: rung refuses a server
        with read_only = ON whoever connects (root may write there, but a replica's data is
        its primary's), so a test prepares its state with read_only off."""
        query(self.admin, "SET GLOBAL read_only = 0")
        try:
            yield
        finally:
            query(self.admin, "SET GLOBAL read_only = 1")

    @contextmanager
    def database(self) -> Iterator[tuple[str, str]]:
        """A fresh database and an account with every right on it but not SUPER nor READ
        ONLY ADMIN: yields the database's URL as root (writes) and as the account (read
        only); both dropped afterwards."""
        name = f"rung_ro_{uuid.uuid4().hex[:12]}"
        for statement in (
            f"CREATE DATABASE `{name}`",
            f"CREATE USER '{name}'@'%'",
            f"GRANT ALL PRIVILEGES ON `{name}`.* TO '{name}'@'%'",
        ):
            query(self.admin, statement)
        try:
            yield url(self.port, name), url(self.port, name, user=name)
        finally:
            query(self.admin, f"DROP USER IF EXISTS '{name}'@'%'")
            query(self.admin, f"DROP DATABASE IF EXISTS `{name}`")


def start(folder: Path) -> ReadOnlyMariaDB:
    """mariadb-install-db a data directory in ``folder``, start mariadbd on it, read only."""
    began = time.monotonic()
    user = ["--user=root"] if os.geteuid() == 0 else []  # mariadbd refuses root unless told
    install = shutil.which("mariadb-install-db") or "mariadb-install-db"
    data = folder / "data"
    done = subprocess.run(
        [install, "--no-defaults", f"--datadir={data}", *user, "--skip-test-db",
         "--auth-root-authentication-method=normal", "--skip-name-resolve"],
        capture_output=True, text=True, timeout=120, check=False,
    )  # fmt: skip
    if done.returncode != 0:
        raise RuntimeError(f"mariadb-install-db failed: {done.stdout}{done.stderr}")
    port = free_port()
    argv = [
        shutil.which("mariadbd") or "/usr/sbin/mariadbd",
        "--no-defaults",
        f"--datadir={data}",
        *user,
        f"--port={port}",
        f"--socket={folder / 'mariadb.sock'}",
        f"--pid-file={folder / 'mariadb.pid'}",
        *OPTIONS,
    ]
    started = Started("read-only mariadbd", argv, folder / "mariadbd.log")
    try:
        started.wait_for_port(port, timeout=60)
        wait_until(
            "the read-only MariaDB answering with read_only on",
            lambda: answers(url(port), "SELECT @@read_only"),
            timeout=30,
        )
    except BaseException:
        started.stop()
        raise
    return ReadOnlyMariaDB(port, started, time.monotonic() - began)


@pytest.fixture(scope="session")
def readonly_mariadb() -> Iterator[ReadOnlyMariaDB]:
    """A MariaDB started with read_only = ON, for the whole session."""
    with tempfile.TemporaryDirectory(prefix="rung-ro-mariadb-", ignore_cleanup_errors=True) as tmp:
        server = start_or_skip("a read-only MariaDB", lambda: start(Path(tmp)))
        try:
            yield server
        finally:
            server.started.stop()
