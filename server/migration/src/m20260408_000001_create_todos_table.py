"""Create the todos table.

The SQL differs per database in one place only, the type of a timezone-aware timestamp:
PostgreSQL has TIMESTAMP WITH TIME ZONE; MariaDB/MySQL's TIMESTAMP stores UTC and converts
to the session's time zone, the closest match; SQLite accepts any type name. Keep such
differences in a small table keyed by ``conn.dialect.name`` and the statement itself shared.
"""

from sqlalchemy import text
from sqlalchemy.ext.asyncio import AsyncConnection

TIMESTAMPTZ = {
    "postgresql": "TIMESTAMP WITH TIME ZONE",
    "mysql": "TIMESTAMP",
    "mariadb": "TIMESTAMP",
    "sqlite": "TIMESTAMP",
}


async def up(conn: AsyncConnection) -> None:
    ts = TIMESTAMPTZ[conn.dialect.name]
    await conn.execute(
        text(
            f"""
            CREATE TABLE IF NOT EXISTS todos (
                id VARCHAR(36) PRIMARY KEY,
                title VARCHAR(255) NOT NULL,
                description TEXT,
                status VARCHAR(32) NOT NULL DEFAULT 'pending',
                created_at {ts} NOT NULL DEFAULT CURRENT_TIMESTAMP,
                updated_at {ts} NOT NULL DEFAULT CURRENT_TIMESTAMP
            )
            """
        )
    )


async def down(conn: AsyncConnection) -> None:
    await conn.execute(text("DROP TABLE IF EXISTS todos"))
