"""Dry runs: the SQL an ``upgrade`` or ``downgrade`` would run, captured from a real run on
a scratch database, never on the live one.

The live database is only read (its history, without a lock). The request is first planned
against that history, so a dry run refuses exactly what the live run would refuse. Then a
scratch database is brought to the live database's recorded state (the migrations recorded
as applied, in registry order) and the request runs there with the real runner; what it
returns, statement by statement with parameters, is what the live run would execute.
"""

from __future__ import annotations

from collections.abc import Sequence

from sqlalchemy.ext.asyncio import AsyncEngine

from rung.connection import connect
from rung.dialects import dialect_named
from rung.history import History
from rung.migration import Migration
from rung.plan import Request, plan
from rung.runner import Executed, Settings, database_errors, run
from rung.scratch import replay_history, scratch_database


async def dry_run(
    engine: AsyncEngine,
    migrations: Sequence[Migration],
    request: Request,
    *,
    table: str,
    scratch_url: str | None = None,
) -> list[Executed]:
    """What ``request`` would execute on ``engine``'s database, migration by migration.
    Nothing to do: ``[]``, without creating a scratch database."""
    dialect = dialect_named(engine.dialect.name)
    history = History(table, dialect)
    async with connect(engine) as conn, database_errors(engine, history):
        records = await history.read(conn)
        await conn.rollback()
    planned = plan(
        migrations, records, request, transactional_ddl=dialect.transactional_ddl, locked=False
    )
    if not planned.batches:
        return []
    async with scratch_database(engine.url, scratch_url, purpose="dryrun") as scratch:
        await replay_history(scratch, migrations, records, table)
        return await run(scratch, migrations, request, Settings(table=table))
