"""Thin wrappers the application calls, e.g. from a FastAPI lifespan: ``await upgrade(engine)``."""

from sqlalchemy.ext.asyncio import AsyncEngine

import rung
from server.migration.src.lib import Migrator


async def upgrade(engine: AsyncEngine) -> list[rung.Executed]:
    """Apply every pending migration (one transaction where the database allows it)."""
    return await rung.upgrade(engine, Migrator)


async def downgrade(engine: AsyncEngine, steps: int = 1) -> list[rung.Executed]:
    """Revert the newest ``steps`` applied migrations."""
    return await rung.downgrade(engine, Migrator, steps=steps)
