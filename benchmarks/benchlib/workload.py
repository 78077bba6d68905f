"""The ladder-N workload: the one definition of every statement, shared by all generators.

Migration ``i`` (1-based) creates ``t_i`` with an index on ``name``; its down drops the
table. Everything here is plain strings, so the floor can import it for free.

``RUNG_BENCH_SHAPE=mixed`` gives the same N tables made the way real histories make them
(where a journal costs most): each migration creates its table, inserts rows, adds a
column, backfills it and indexes it (5 statements, DDL and DML mixed); every tenth one
goes on with more of the same (14 statements); a down deletes the rows, then drops.
"""

from __future__ import annotations

import os
import re

DATE = "20260101"
TABLE_PATTERN = re.compile(r"t_\d+")
SHAPE = os.environ.get("RUNG_BENCH_SHAPE", "ladder")
if SHAPE not in ("ladder", "mixed"):
    raise SystemExit(f"RUNG_BENCH_SHAPE={SHAPE!r}: use 'ladder' or 'mixed'")


def rung_name(i: int) -> str:
    """The migration's name in rung's format, m{YYYYMMDD}_{NNNNNN}_{slug}."""
    return f"m{DATE}_{i:06d}_create_t_{i}"


def short_id(i: int) -> str:
    """Id used by the peers' file names and revisions (sorts in order)."""
    return f"{i:06d}"


def up_statements(i: int) -> tuple[str, ...]:
    create = (
        f"CREATE TABLE t_{i} (id INTEGER PRIMARY KEY, name VARCHAR(64) NOT NULL, "
        "created_at TIMESTAMP NOT NULL DEFAULT CURRENT_TIMESTAMP)"
    )
    if SHAPE == "ladder":
        return (create, f"CREATE INDEX ix_t_{i}_name ON t_{i} (name)")
    statements = [create, *_grown(i, "a", first_row=1)]
    if i % 10 == 0:
        statements += [*_grown(i, "b", first_row=4), *_grown(i, "c", first_row=7)]
        statements += [f"CREATE INDEX ix_t_{i}_name ON t_{i} (name)"]
    return tuple(statements)


def _grown(i: int, column: str, first_row: int) -> tuple[str, ...]:
    rows = ", ".join(f"({n}, 'row {n}')" for n in range(first_row, first_row + 3))
    return (
        f"INSERT INTO t_{i} (id, name) VALUES {rows}",
        f"ALTER TABLE t_{i} ADD COLUMN extra_{column} VARCHAR(64)",
        f"UPDATE t_{i} SET extra_{column} = name",
        f"CREATE INDEX ix_t_{i}_{column} ON t_{i} (extra_{column})",
    )


def down_statements(i: int) -> tuple[str, ...]:
    if SHAPE == "ladder":
        return (f"DROP TABLE t_{i}",)
    return (f"DELETE FROM t_{i}", f"DROP TABLE t_{i}")
