"""Bootstrap the configured database: apply every pending migration and say what ran.

The database is DATABASE_URL, else ``[tool.rung] url`` in pyproject.toml, else embedded
SQLite in app.db next to pyproject.toml; driverless URLs (postgres://...) work as in rung.
"""

import asyncio
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))  # run from anywhere

import rung  # noqa: E402
from rung.errors import RungError  # noqa: E402
from server.migration.src.runner import upgrade  # noqa: E402


async def main() -> int:
    try:
        engine = rung.create_engine(root=ROOT)  # the database rung's command line would use
    except RungError as exc:
        print(f"init_db: error: {exc}", file=sys.stderr)
        return exc.exit_code
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
