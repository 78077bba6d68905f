"""Bootstrap the configured database: apply every pending migration and say what ran.

The database comes from DATABASE_URL (default: embedded SQLite in ./app.db).
"""

import asyncio
import os
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))  # run from anywhere

from sqlalchemy.ext.asyncio import create_async_engine

from rung.errors import RungError
from server.migration.src.runner import upgrade

DEFAULT_URL = "sqlite+aiosqlite:///./app.db"


async def main() -> int:
    engine = create_async_engine(os.environ.get("DATABASE_URL") or DEFAULT_URL)
    try:
        applied = await upgrade(engine)
    except RungError as exc:
        print(f"init_db: error: {exc}", file=sys.stderr)
        return exc.exit_code
    finally:
        await engine.dispose()
    for migration in applied:
        print(f"applied {migration.name} ({migration.duration_ms:.0f} ms)")
    print(f"{len(applied)} migration(s) applied" if applied else "database is up to date")
    return 0


if __name__ == "__main__":
    sys.exit(asyncio.run(main()))
