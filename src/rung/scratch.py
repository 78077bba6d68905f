"""Scratch databases for verify, drift and dry runs: created, used, always dropped.

A scratch database is never the target. By default it is derived from the target's URL: a
new database ``rung_<purpose>_<random hex>`` on the target's server, or a SQLite file in a
temporary folder (the account needs the right to create databases). An explicit
``scratch_url`` must name a database that does not exist yet, so that rung only ever drops
what it created itself. The drop runs in ``finally``: after errors, and after cancellation
(Ctrl-C under ``asyncio.run``) too.
"""

from __future__ import annotations

import logging
import secrets
from collections.abc import AsyncIterator, Sequence
from contextlib import asynccontextmanager
from typing import Any

import sqlalchemy as sa
from sqlalchemy.ext.asyncio import AsyncEngine

from rung.connection import create_engine, parse_url
from rung.dialects import dialect_named
from rung.errors import ScratchUnavailable, UsageError
from rung.migration import Migration
from rung.plan import Direction, Record, Request, plan_replay
from rung.runner import Settings, run

logger = logging.getLogger("rung")


def _shown(url: sa.URL) -> str:
    return url.render_as_string(hide_password=True)


@asynccontextmanager
async def scratch_database(
    target: sa.URL, scratch_url: str | None = None, *, purpose: str = "verify"
) -> AsyncIterator[AsyncEngine]:
    """An engine on a new, empty database of the target's kind, dropped on the way out."""
    dialect = dialect_named(target.get_backend_name())
    url = _scratch_url(target, scratch_url, purpose)
    try:
        await dialect.create_database(url)
    except (sa.exc.DBAPIError, OSError, ValueError) as exc:
        detail = str(getattr(exc, "orig", None) or exc).strip().splitlines()
        raise ScratchUnavailable(
            f"cannot create the scratch database {_shown(url)} "
            f"({detail[0] if detail else exc}); give --scratch-url naming a database that "
            "does not exist yet on a server where this account may create databases"
        ) from exc
    logger.info("created scratch database %s", _shown(url))
    engine = scratch_engine(url)
    try:
        yield engine
    finally:
        await engine.dispose()
        try:
            await dialect.drop_database(url)
            logger.info("dropped scratch database %s", _shown(url))
        except Exception as exc:
            logger.error(
                "could not drop scratch database %s (%s); drop it by hand", _shown(url), exc
            )


def scratch_engine(url: sa.URL) -> AsyncEngine:
    """An engine on scratch database ``url`` whose sessions are set for it (commits that
    do not wait for the disk)."""
    engine = create_engine(url)
    statements = dialect_named(url.get_backend_name()).scratch_session()
    if statements:

        def set_up(dbapi_connection: Any, _: object) -> None:
            cursor = dbapi_connection.cursor()
            for statement in statements:
                cursor.execute(statement)
            cursor.close()

        sa.event.listen(engine.sync_engine, "connect", set_up)
    return engine


def _scratch_url(target: sa.URL, given: str | None, purpose: str) -> sa.URL:
    dialect = dialect_named(target.get_backend_name())
    if given is None:
        return dialect.scratch_url(target, f"rung_{purpose}_{secrets.token_hex(6)}")
    url = parse_url(given)
    if url.get_backend_name() != target.get_backend_name():
        raise UsageError(
            f"the scratch database {_shown(url)} is not on the same kind of server as "
            f"{_shown(target)}; give a {target.get_backend_name()} URL to --scratch-url"
        )
    same = (url.host, url.port, url.database) == (target.host, target.port, target.database)
    problem = "it already exists: it is the target itself" if same else None
    problem = problem or dialect.scratch_problem(url)
    if problem:
        raise UsageError(
            f"the scratch database {_shown(url)} cannot be used ({problem}); rung creates "
            "and drops its scratch database, so give --scratch-url a new name"
        )
    return url


async def replay_history(
    scratch: AsyncEngine, migrations: Sequence[Migration], records: Sequence[Record], table: str
) -> list[str]:
    """Apply on ``scratch`` exactly the migrations ``records`` show as applied, in registry
    order, with the real runner; return their names. Refuses histories it cannot replay."""
    chosen, warnings = plan_replay(migrations, records)
    for warning in warnings:
        logger.warning(warning)
    if chosen:
        await run(scratch, chosen, Request(Direction.UP), Settings(table=table))
    return [m.name for m in chosen]
