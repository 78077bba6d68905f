"""The ladder-N workload: the one definition of every statement, shared by all generators.

Migration ``i`` (1-based) creates ``t_i`` with an index on ``name``; its down drops the
table. Everything here is plain strings, so the floor can import it for free.
"""

from __future__ import annotations

import re

DATE = "20260101"
TABLE_PATTERN = re.compile(r"t_\d+")


def rung_name(i: int) -> str:
    """The migration's name in rung's format, m{YYYYMMDD}_{NNNNNN}_{slug}."""
    return f"m{DATE}_{i:06d}_create_t_{i}"


def short_id(i: int) -> str:
    """Id used by the peers' file names and revisions (sorts in order)."""
    return f"{i:06d}"


def up_statements(i: int) -> tuple[str, ...]:
    return (
        f"CREATE TABLE t_{i} (id INTEGER PRIMARY KEY, name VARCHAR(64) NOT NULL, "
        "created_at TIMESTAMP NOT NULL DEFAULT CURRENT_TIMESTAMP)",
        f"CREATE INDEX ix_t_{i}_name ON t_{i} (name)",
    )


def down_statements(i: int) -> tuple[str, ...]:
    return (f"DROP TABLE t_{i}",)
