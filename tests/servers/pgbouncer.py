"""PgBouncer in transaction pooling mode in front of the test PostgreSQL server, on a free
loopback port, started once per test session by the ``pgbouncer`` fixture.

Every database of the server is reachable through it under its own name (a wildcard
entry), as the server's user, without a password (``auth_type = trust``). A pool holds at
most four server connections per database and user, so sixteen clients really do share
them, one transaction at a time, as behind a platform's pooler.

    @pytest.mark.xdist_group("pgbouncer")
    def test_x(pgbouncer: PgBouncer, tmp_path: Path) -> None:
        with pgbouncer.database() as (direct, pooled):  # pooled ends in ?pgbouncer=true
            ...
"""

from __future__ import annotations

import asyncio
import os
import shutil
import time
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import pytest
import sqlalchemy as sa

from conftest import POSTGRES_URL, create_database, require
from servers.lifecycle import owned_folder, query, run_as, start_or_skip
from servers.process import Started, free_port

POOL_SIZE = 4  # server connections per database and user: fewer than the racing clients
SETTING = {"pgbouncer": "true"}  # the URL query that tells rung it talks to a pooler


def config(server: sa.URL, port: int, folder: Path) -> str:
    """pgbouncer.ini: what each setting is for is said next to it."""
    return f"""\
[databases]
; every database of the real server, by its own name
* = host={server.host or "127.0.0.1"} port={server.port or 5432}

[pgbouncer]
listen_addr = 127.0.0.1
listen_port = {port}
; no Unix socket: nothing of ours outside this folder
unix_socket_dir =
; no passwords, as on the server; the user must still be listed in auth_file
auth_type = trust
auth_file = {folder / "userlist.txt"}
pool_mode = transaction
; few server connections per database and user, so that the racing clients share them
default_pool_size = {POOL_SIZE}
max_client_conn = 200
; a client starved of a server connection (every one held by an open transaction) fails
; with PgBouncer's own "query_wait_timeout" before a race's 120 s are up (default 120 s)
query_wait_timeout = 60
"""


@dataclass(frozen=True)
class PgBouncer:
    """A running PgBouncer: ``url`` turns a URL of the real server into the same database
    through PgBouncer; ``database`` makes a database of its own for one test."""

    port: int
    started: Started
    seconds_to_start: float

    def url(self, real: str, *, setting: bool = True) -> str:
        """``real`` (a URL on the PostgreSQL server) through PgBouncer: the same database,
        user and password; with rung's pooler setting (``?pgbouncer=true``) unless told not."""
        url = sa.make_url(real).set(host="127.0.0.1", port=self.port)
        if setting:
            url = url.update_query_dict(SETTING)
        return url.render_as_string(hide_password=False)

    @contextmanager
    def database(self) -> Iterator[tuple[str, str]]:
        """A fresh database on the real server: yields its URL there and through PgBouncer
        (with the setting); dropped afterwards, with PgBouncer's server connections to it."""
        name = f"rung_pgb_{uuid.uuid4().hex[:12]}"
        direct = sa.make_url(POSTGRES_URL).set(database=name).render_as_string(False)
        asyncio.run(create_database(direct))
        try:
            yield direct, self.url(direct)
        finally:
            # PgBouncer keeps its server connections to the database open: FORCE ends them.
            admin = sa.make_url(direct).set(database="postgres").render_as_string(False)
            query(admin, f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


def start(folder: Path) -> PgBouncer:
    """Start PgBouncer on a free port with its config, account list and log in ``folder``."""
    program = shutil.which("pgbouncer") or "/usr/sbin/pgbouncer"
    if not Path(program).exists():
        raise FileNotFoundError("pgbouncer is not installed (apt-get install -y pgbouncer)")
    began = time.monotonic()
    server = sa.make_url(POSTGRES_URL)
    port = free_port()
    (folder / "userlist.txt").write_text(f'"{server.username or "postgres"}" ""\n')
    ini = folder / "pgbouncer.ini"
    ini.write_text(config(server, port, folder))
    account = run_as()
    if account:
        for path in (ini, folder / "userlist.txt"):
            os.chown(path, account["user"], account["group"])
    started = Started("pgbouncer", [program, str(ini)], folder / "pgbouncer.log", **account)
    try:
        started.wait_for_port(port, timeout=15)
    except BaseException:
        started.stop()
        raise
    return PgBouncer(port, started, time.monotonic() - began)


@pytest.fixture(scope="session")
def pgbouncer() -> Iterator[PgBouncer]:
    """PgBouncer in transaction mode before the test PostgreSQL, for the whole session."""
    require("postgresql")
    with owned_folder("rung-pgbouncer-") as folder:
        bouncer = start_or_skip("PgBouncer", lambda: start(folder))
        try:
            yield bouncer
        finally:
            bouncer.started.stop()
