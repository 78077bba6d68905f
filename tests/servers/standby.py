"""A PostgreSQL primary of our own and a hot standby streaming from it, each on a free
loopback port, started once per test session by the ``standby`` fixture.

The shared server on 5432 allows no replication connections (and its configuration is not
ours to change), so ``initdb`` makes a small primary in a temporary folder (``wal_level =
replica``, replication from 127.0.0.1 trusted), ``pg_basebackup -R`` copies it into the
standby's folder, and the standby starts with ``hot_standby = on``: it accepts read-only
connections and ``pg_is_in_recovery()`` is true there.

    @pytest.mark.xdist_group("standby")
    def test_x(standby: Standby) -> None:
        with standby.database() as (primary, replica):  # visible on both
            ...  # write on primary, then standby.catch_up(), then read replica
"""

from __future__ import annotations

import asyncio
import signal
import subprocess
import time
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import pytest
import sqlalchemy as sa

from conftest import create_database
from servers.lifecycle import answers, owned_folder, query, run_as, start_or_skip, wait_until
from servers.process import Started, free_port

BIN = Path("/usr/lib/postgresql/15/bin")
# Small and fast: a test server whose data may be lost (no fsync), on loopback only.
SETTINGS = {
    "listen_addresses": "127.0.0.1",
    "shared_buffers": "16MB",
    "max_connections": "60",
    "fsync": "off",
    "synchronous_commit": "off",
    "full_page_writes": "off",
    "wal_level": "replica",
    "max_wal_senders": "4",
    "hot_standby": "on",
}


class Postmaster(Started):
    """A ``postgres`` server process; stopping it is a fast shutdown (SIGINT), which ends
    its sessions instead of waiting for them as SIGTERM's smart shutdown does."""

    def stop(self, timeout: float = 20.0) -> None:
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGINT)
        super().stop(timeout)


def url(port: int, database: str = "postgres") -> str:
    return f"postgresql+asyncpg://postgres@127.0.0.1:{port}/{database}"


@dataclass(frozen=True)
class Standby:
    """The primary and its hot standby (URLs of their ``postgres`` database)."""

    primary: str
    standby: str
    servers: tuple[Started, ...]
    seconds_to_start: float

    def catch_up(self, timeout: float = 30) -> None:
        """Wait until the standby has replayed everything the primary wrote until now."""
        (lsn,) = query(self.primary, "SELECT pg_current_wal_lsn()::text")[0]
        wait_until(
            f"the standby replaying the primary's WAL up to {lsn}",
            lambda: answers(self.standby, f"SELECT pg_last_wal_replay_lsn() >= '{lsn}'::pg_lsn"),
            timeout,
        )

    @contextmanager
    def database(self) -> Iterator[tuple[str, str]]:
        """A fresh database made on the primary: yields its URL on the primary and on the
        standby, once the standby shows it; dropped afterwards."""
        name = f"rung_sb_{uuid.uuid4().hex[:12]}"
        on_primary = sa.make_url(self.primary).set(database=name).render_as_string(False)
        on_standby = sa.make_url(self.standby).set(database=name).render_as_string(False)
        asyncio.run(create_database(on_primary))
        try:
            self.catch_up()
            yield on_primary, on_standby
        finally:
            query(self.primary, f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


def postgres(name: str, folder: Path, port: int, socket_dir: Path) -> Postmaster:
    """Start the ``postgres`` server of data directory ``folder`` on ``port``."""
    settings = SETTINGS | {"port": str(port), "unix_socket_directories": str(socket_dir)}
    argv = [str(BIN / "postgres"), "-D", str(folder)]
    for key, value in settings.items():
        argv += ["-c", f"{key}={value}"]
    server = Postmaster(name, argv, socket_dir / f"{name}.log", **run_as())
    try:
        server.wait_for_port(port, timeout=30)
    except BaseException:
        server.stop()
        raise
    return server


def tool(*argv: str) -> None:
    """Run one of PostgreSQL's programs as the service account; raise with its output."""
    done = subprocess.run(
        argv, capture_output=True, text=True, timeout=120, check=False, **run_as()
    )
    if done.returncode != 0:
        raise RuntimeError(f"{Path(argv[0]).name} failed: {done.stdout}{done.stderr}")


def start(folder: Path) -> Standby:
    """initdb a primary, start it, pg_basebackup -R a standby from it and start that."""
    began = time.monotonic()
    primary_dir, standby_dir = folder / "primary", folder / "standby"
    tool(str(BIN / "initdb"), "-D", str(primary_dir), "-U", "postgres", "--auth=trust",
         "-E", "UTF8", "--locale=C.UTF-8", "--no-sync")  # fmt: skip
    # initdb's pg_hba.conf already trusts replication from 127.0.0.1; say so, not rely on it.
    with (primary_dir / "pg_hba.conf").open("a") as hba:
        hba.write("host replication all 127.0.0.1/32 trust\n")
    servers: list[Started] = []
    try:
        primary_port = free_port()
        servers.append(postgres("primary", primary_dir, primary_port, folder))
        tool(str(BIN / "pg_basebackup"), "-h", "127.0.0.1", "-p", str(primary_port),
             "-U", "postgres", "-D", str(standby_dir), "-R", "-X", "stream",
             "--checkpoint=fast", "--no-sync")  # fmt: skip
        standby_port = free_port()
        servers.append(postgres("standby", standby_dir, standby_port, folder))
        standby = url(standby_port)
        wait_until(
            "the standby accepting connections in recovery",
            lambda: answers(standby, "SELECT pg_is_in_recovery()"),
            timeout=30,
        )
    except BaseException:
        for server in reversed(servers):
            server.stop()
        raise
    return Standby(url(primary_port), standby, tuple(servers), time.monotonic() - began)


@pytest.fixture(scope="session")
def standby() -> Iterator[Standby]:
    """A primary and its hot standby, for the whole session; stopped standby first."""
    with owned_folder("rung-standby-") as folder:
        pair = start_or_skip("a PostgreSQL primary and hot standby", lambda: start(folder))
        try:
            yield pair
        finally:
            for server in reversed(pair.servers):
                server.stop()
