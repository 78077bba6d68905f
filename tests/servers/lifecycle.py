"""How the suite's own servers come and go, beyond one process: the account a server that
refuses root runs as, a temporary folder it owns, waiting for a condition, SQL sent to a
server, and a server that cannot start becoming a skip (locally) or a failure (under CI).
"""

from __future__ import annotations

import asyncio
import os
import pwd
import shutil
import tempfile
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any, TypeVar

import pytest
import sqlalchemy as sa
from sqlalchemy.ext.asyncio import create_async_engine

from conftest import IN_CI

T = TypeVar("T")

# PostgreSQL and PgBouncer refuse to run as root: as root, they run as this account.
SERVICE_ACCOUNT = "postgres"


def run_as() -> dict[str, Any]:
    """Popen/run keyword arguments that start a process as the service account when we are
    root (with that account's group and no other), and as ourselves otherwise."""
    if os.geteuid() != 0:
        return {}
    account = pwd.getpwnam(SERVICE_ACCOUNT)
    return {"user": account.pw_uid, "group": account.pw_gid, "extra_groups": []}


@contextmanager
def owned_folder(prefix: str) -> Iterator[Path]:
    """A fresh folder in the system's temporary directory (whose parents every account can
    traverse, unlike pytest's), owned by the account of ``run_as``; removed afterwards."""
    folder = Path(tempfile.mkdtemp(prefix=prefix))
    try:
        if os.geteuid() == 0:
            account = pwd.getpwnam(SERVICE_ACCOUNT)
            os.chown(folder, account.pw_uid, account.pw_gid)
        yield folder
    finally:
        shutil.rmtree(folder, ignore_errors=True)


def start_or_skip(what: str, start: Callable[[], T]) -> T:
    """``start()``; if it raises, skip the test that asked for ``what`` (and, through the
    session fixture's cached error, every later one) or, under CI, fail it."""
    try:
        return start()
    except Exception as exc:
        problem = f"{what} could not start: {type(exc).__name__}: {exc}"
        if IN_CI:
            pytest.fail(f"{problem} (under CI the servers the suite starts never skip)")
        pytest.skip(problem)


def wait_until(what: str, condition: Callable[[], bool], timeout: float) -> None:
    """Poll ``condition`` until it holds; after ``timeout`` seconds, raise naming ``what``."""
    deadline = time.monotonic() + timeout
    while not condition():
        if time.monotonic() > deadline:
            raise RuntimeError(f"{what}: not within {timeout:g} s")
        time.sleep(0.05)


def query(url: str, statement: str) -> list[tuple[Any, ...]]:
    """The rows of one statement, run in autocommit on a connection of its own."""
    return asyncio.run(_query(url, statement))


def answers(url: str, statement: str = "SELECT 1") -> bool:
    """Whether ``url`` accepts a connection and answers ``statement`` with a true value."""
    try:
        found = query(url, statement)
    except (OSError, sa.exc.DBAPIError):
        return False
    return bool(found and found[0][0])


async def _query(url: str, statement: str) -> list[tuple[Any, ...]]:
    engine = create_async_engine(url, isolation_level="AUTOCOMMIT")
    try:
        async with engine.connect() as conn:
            result = await conn.execute(sa.text(statement))
            return [tuple(row) for row in result] if result.returns_rows else []
    finally:
        await engine.dispose()
