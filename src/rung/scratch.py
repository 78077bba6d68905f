"""Scratch databases for verify, drift and dry runs: created, used, always dropped.

A scratch database is never the target. By default it is derived from the target's URL: a
temporary SQLite file, or a new database ``rung_<purpose>_<random hex>`` on the target's
PostgreSQL or MariaDB server (the account needs the right to create databases). An
explicit ``scratch_url`` must name a database that does not exist yet, so that rung only
ever drops what it created itself. The drop runs in ``finally``: after errors, and after
cancellation (Ctrl-C under ``asyncio.run``) too.
"""

from __future__ import annotations

import logging
import os
import secrets
import shutil
import tempfile
from collections.abc import AsyncIterator, Sequence
from contextlib import asynccontextmanager

import sqlalchemy as sa
from sqlalchemy.ext.asyncio import AsyncEngine, create_async_engine

from rung.dialects import dialect_named
from rung.errors import NeedsRepair, ScratchUnavailable, UnknownApplied, UsageError
from rung.migration import Migration
from rung.plan import Direction, Record, Request, unknown_entries
from rung.runner import Options, masked, run

logger = logging.getLogger("rung")


@asynccontextmanager
async def scratch_database(
    target: sa.URL, scratch_url: str | None = None, *, purpose: str = "verify"
) -> AsyncIterator[AsyncEngine]:
    """An engine on a new, empty database of the target's kind, dropped on the way out."""
    url, folder = _scratch_url(target, scratch_url, purpose)
    dialect = dialect_named(url.get_backend_name())
    try:
        await dialect.create_database(url)
    except (sa.exc.DBAPIError, OSError, ValueError) as exc:
        if folder:
            shutil.rmtree(folder, ignore_errors=True)
        detail = str(getattr(exc, "orig", None) or exc).strip().splitlines()
        raise ScratchUnavailable(
            f"cannot create the scratch database {masked(url)} ({detail[0] if detail else exc}); "
            "give --scratch-url naming a database that does not exist yet on a server where "
            "this account may create databases"
        ) from exc
    logger.info("created scratch database %s", masked(url))
    engine = create_async_engine(url)
    try:
        yield engine
    finally:
        await engine.dispose()
        try:
            await dialect.drop_database(url)
            if folder:
                shutil.rmtree(folder, ignore_errors=True)
            logger.info("dropped scratch database %s", masked(url))
        except Exception as exc:
            logger.error(
                "could not drop scratch database %s (%s); drop it by hand", masked(url), exc
            )


def _scratch_url(target: sa.URL, given: str | None, purpose: str) -> tuple[sa.URL, str | None]:
    """The URL to use, and the temporary folder holding it (SQLite only)."""
    sqlite = target.get_backend_name() == "sqlite"
    if given is None:
        if sqlite:
            folder = tempfile.mkdtemp(prefix=f"rung_{purpose}_")
            return target.set(database=os.path.join(folder, "scratch.db")), folder
        return target.set(database=f"rung_{purpose}_{secrets.token_hex(6)}"), None
    url = sa.make_url(given)
    if url.get_backend_name() != target.get_backend_name():
        raise UsageError(
            f"the scratch database {masked(url)} is not on the same kind of server as "
            f"{masked(target)}; give a {target.get_backend_name()} URL to --scratch-url"
        )
    same = (url.host, url.port, url.database) == (target.host, target.port, target.database)
    if same or (sqlite and os.path.exists(url.database or "")):
        raise UsageError(
            f"the scratch database {masked(url)} already exists; rung creates and drops its "
            "scratch database, so give --scratch-url a name that does not exist yet"
        )
    if sqlite and (url.database or ":memory:") == ":memory:":
        raise UsageError("a scratch SQLite database must be a file; give --scratch-url a path")
    return url, None


async def replay_history(
    scratch: AsyncEngine, migrations: Sequence[Migration], records: Sequence[Record], table: str
) -> list[str]:
    """Apply on ``scratch`` exactly the migrations ``records`` show as applied, in registry
    order, with the real runner; return their names. Refuses histories it cannot replay."""
    failed = sorted(r.name for r in records if r.state == "failed")
    if failed:
        raise NeedsRepair(
            f"migration {failed[0]} failed part-way on this database, so its schema cannot be "
            f"replayed; inspect it and run 'rung repair {failed[0]} --applied' or '--not-applied'",
            names=failed,
        )
    registered = {m.name: m for m in migrations}
    interleaved, future = unknown_entries(migrations, records)
    if interleaved:
        raise UnknownApplied(
            f"migration {interleaved[0]} is recorded as applied but is not in the registry, "
            "so it cannot be replayed; run with the release that has it",
            names=interleaved,
        )
    if future:  # a newer release's: upgrade warns and goes on, and so does a replay
        logger.warning(
            "%d applied migration(s) newer than this registry (%s) cannot be replayed; "
            "the scratch database lacks what they made",
            len(future),
            future[-1],
        )
    applied = {r.name for r in records if r.state == "applied" and r.name in registered}
    for r in records:
        if r.name in applied and registered[r.name].checksum != r.checksum:
            logger.warning("migration %s changed since it was applied; replaying its code", r.name)
    chosen = [m for m in migrations if m.name in applied]
    if chosen:
        options = Options(table=table, store_snapshot=False)
        await run(scratch, chosen, Request(Direction.UP), options)
    return [m.name for m in chosen]
