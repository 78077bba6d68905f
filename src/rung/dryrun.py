"""Dry runs: the SQL an ``upgrade`` or ``downgrade`` would run, captured from a real run on
a scratch database, never on the live one.

The live database is only read (its history, without a lock). The request is first planned
against that history, so a dry run refuses exactly what the live run would refuse. Then a
scratch database is brought to the live database's recorded state (the migrations recorded
as applied, in registry order) and the request runs there with the real runner; what it
returns, statement by statement with parameters, is what the live run would execute.
"""

from __future__ import annotations

from sqlalchemy.ext.asyncio import AsyncEngine

from rung.dialects import dialect_named
from rung.history import DEFAULT_TABLE, History
from rung.plan import Request, plan
from rung.registry import Registry, migrations_of
from rung.runner import Executed, Options, connect, run
from rung.scratch import replay_history, scratch_database


async def dry_run(
    engine: AsyncEngine,
    migrator: Registry,
    request: Request,
    *,
    table: str = DEFAULT_TABLE,
    scratch_url: str | None = None,
) -> list[Executed]:
    """What ``request`` would execute on ``engine``'s database, migration by migration.
    Nothing to do: ``[]``, without creating a scratch database."""
    migrations = migrations_of(migrator)
    async with connect(engine) as conn:
        records = await History(table).read(conn)
        await conn.rollback()
    dialect = dialect_named(engine.dialect.name)
    planned = plan(
        migrations, records, request, transactional_ddl=dialect.transactional_ddl, locked=False
    )
    if not planned.batches:
        return []
    async with scratch_database(engine.url, scratch_url, purpose="dryrun") as scratch:
        await replay_history(scratch, migrations, records, table)
        options = Options(table=table, out_of_order=request.out_of_order, store_snapshot=False)
        return await run(scratch, migrations, request, options)
