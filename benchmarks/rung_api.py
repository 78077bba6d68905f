"""rung through its Python API, in a fresh process (what an app's start-up script pays).

    python benchmarks/rung_api.py up|down|status|baseline URL PROJECT_DIR

PROJECT_DIR holds the generated ``ladder`` package; its ``lib.Migrator`` is the registry.
``baseline`` prepares the 10,000-migration cells: it records every migration as applied
without running it and gives each row the journal a real run would have written, so that
reading the history costs what it costs after real upgrades. It is never timed.
"""

from __future__ import annotations

import asyncio
import sys


async def main(command: str, url: str, project: str) -> None:
    sys.path.insert(0, project)
    from ladder.lib import Migrator
    from sqlalchemy.ext.asyncio import create_async_engine

    import rung

    engine = create_async_engine(url)
    try:
        if command == "up":
            done = await rung.upgrade(engine, Migrator)
            print(f"applied {len(done)} migration(s)")
        elif command == "down":
            done = await rung.downgrade(engine, Migrator, all=True)
            print(f"reverted {len(done)} migration(s)")
        elif command == "status":
            print(
                "\n".join(
                    f"{s.name}  {s.state.value}  {s.applied_at or ''}"
                    for s in await rung.status(engine, Migrator)
                )
            )
        elif command == "baseline":
            names = await rung.baseline(engine, Migrator)
            await _fill_journals(engine, names)
        else:
            raise SystemExit(f"rung_api: unknown command {command!r}")
    finally:
        await engine.dispose()


async def _fill_journals(engine: object, names: list[str]) -> None:
    import sqlalchemy as sa
    from benchlib.workload import up_statements

    from rung.history import History, _journal
    from rung.plan import Statement

    table = History().table
    rows = [
        {"n": name, "j": _journal([Statement(s, None, 1.0) for s in up_statements(i)])}
        for i, name in enumerate(names, start=1)
    ]
    update = (
        table.update().where(table.c.name == sa.bindparam("n")).values(journal=sa.bindparam("j"))
    )
    async with engine.begin() as conn:  # type: ignore[attr-defined]
        await conn.execute(update, rows)


if __name__ == "__main__":
    if len(sys.argv) != 4:
        raise SystemExit(__doc__)
    asyncio.run(main(*sys.argv[1:]))
