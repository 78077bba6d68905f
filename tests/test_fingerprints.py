"""PostgreSQL's fingerprint for verify reads only what changed since the last one
(``rung.dialects.postgresql_changes``): it must always give what a full read gives.

After every statement of the coverage suite's cases (each kind of object, made, changed
by hand and changed back) and of renames that change other relations' text, a fingerprint
kept since the start equals a new one; and a change to one relation reads that relation
only, while a rename that other relations' text names reads everything again.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import pytest
import sqlalchemy as sa
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncEngine
from test_coverage import every_statement as coverage_statements

from rung.dialects import dialect_named
from rung.dialects import postgresql_catalog as q
from rung.dialects import postgresql_changes as changes
from rung.dialects.base import Fingerprint

pytestmark = pytest.mark.parametrize("backend", ["postgresql"], indirect=True)

RENAMES = (
    "CREATE TABLE rn_parent (id INTEGER PRIMARY KEY, code TEXT UNIQUE)",
    "CREATE TABLE rn_child (id INTEGER PRIMARY KEY, "
    "parent_code TEXT REFERENCES rn_parent (code), n INTEGER DEFAULT 0)",
    "CREATE VIEW rn_view AS SELECT id, code FROM rn_parent",
    "CREATE VIEW rn_view2 AS SELECT code FROM rn_view",
    "CREATE SEQUENCE rn_seq",
    "ALTER TABLE rn_child ALTER COLUMN n SET DEFAULT nextval('rn_seq')",
    "ALTER TABLE rn_parent RENAME TO rn_parent2",  # the child's foreign key names it
    "ALTER TABLE rn_parent2 RENAME COLUMN code TO kode",  # so does the view
    "ALTER VIEW rn_view RENAME COLUMN code TO code2",  # rn_view2 names it
    "ALTER SEQUENCE rn_seq RENAME TO rn_seq2",  # the default names it
    "CREATE SCHEMA rn_schema",
    "CREATE TABLE rn_schema.inner_t (id INTEGER PRIMARY KEY)",
    "CREATE TABLE rn_outer (id INTEGER REFERENCES rn_schema.inner_t (id))",
    "ALTER SCHEMA rn_schema RENAME TO rn_schema2",  # rn_outer's foreign key names it
    "ALTER TABLE rn_schema2.inner_t SET SCHEMA public",
    "DROP VIEW rn_view2",
    "DROP TABLE rn_child",
    "DROP TABLE rn_outer",
    "DROP SCHEMA rn_schema2",
)


def every_statement() -> Iterator[str]:
    yield from coverage_statements("postgresql")
    yield from RENAMES


async def fingerprints(conn: AsyncConnection, kept: Fingerprint) -> tuple[str, str]:
    try:
        return await conn.run_sync(kept), await conn.run_sync(new_fingerprints())
    finally:
        await conn.rollback()


def new_fingerprints() -> Fingerprint:  # as verify makes for a rebuilt database
    return dialect_named("postgresql").fingerprints()


async def test_a_kept_fingerprint_equals_a_new_one_after_every_statement(
    engine: AsyncEngine,
) -> None:
    kept = new_fingerprints()
    differed = 0
    async with engine.connect() as conn:
        last, _ = await fingerprints(conn, kept)
        for statement in every_statement():
            await conn.execute(sa.text(statement))
            await conn.commit()
            now, new = await fingerprints(conn, kept)
            assert now == new, f"after {statement!r}"
            differed += now != last
            last = now
        await conn.execute(sa.text("SET search_path = rn_nowhere, public"))
        now, new = await fingerprints(conn, kept)
        assert now == new
    assert differed > 100  # the statements change the schema, and the fingerprint sees it


async def test_a_change_to_one_relation_reads_that_relation_only(engine: AsyncEngine) -> None:
    """A ladder's steps (make a table, add a column, an index, drop it) read again the
    table they change, no relation whose rows are older than the horizon, and nothing in
    full; a rename that another relation's foreign key names reads everything again."""
    kept = changes.Fingerprints()
    seen: list[tuple[str, Any]] = []

    def listen_on(conn: sa.Connection) -> None:
        sa.event.listen(
            conn, "before_cursor_execute", lambda *a: seen.append((a[2], a[3])), named=False
        )

    async def step(conn: AsyncConnection, statement: str) -> tuple[list[str], set[int], set[int]]:
        """Run ``statement``, then a fingerprint: the queries it ran, the relations it read
        again, and the others older than its horizon."""
        await conn.execute(sa.text(statement))
        await conn.commit()
        horizon, seen[:] = kept.horizon, []
        await conn.run_sync(kept)
        read = {oid for text, args in seen if text == changes.PARTS_OF for oid in args[0]}
        queries = [text for text, _ in seen]
        older = await conn.execute(
            sa.text(
                "SELECT oid FROM pg_class WHERE relname LIKE 'other%' "
                "AND age(xmin) > age((CAST(:h AS bigint) % 4294967296)::text::xid)"
            ),
            {"h": horizon},
        )
        await conn.rollback()
        return queries, read, {oid for (oid,) in older}

    async with engine.connect() as conn:
        for n in range(3):
            await conn.execute(sa.text(f"CREATE TABLE other_{n} (id INTEGER PRIMARY KEY)"))
        await conn.commit()
        await conn.run_sync(kept)
        await conn.rollback()
        await conn.run_sync(listen_on)
        for statement in (
            "CREATE TABLE one (id INTEGER PRIMARY KEY, name TEXT)",
            "ALTER TABLE one ADD COLUMN n INTEGER NOT NULL DEFAULT 0",
            "CREATE INDEX ix_one ON one (name)",
            "DROP TABLE one",
        ):
            queries, read, older = await step(conn, statement)
            assert q.RELATIONS not in queries and q.TYPES not in queries, statement
            assert not read & older, statement
            if not statement.startswith("DROP"):
                one = (await conn.execute(sa.text("SELECT 'one'::regclass::oid"))).scalar()
                await conn.rollback()
                assert one in read, statement
        await step(conn, "CREATE TABLE two (id INTEGER REFERENCES other_0 (id))")
        queries, _, _ = await step(conn, "ALTER TABLE other_0 RENAME TO other_zero")
        assert q.TYPES in queries  # everything read again


async def test_a_transaction_running_at_a_scan_is_seen_when_it_commits_and_costs_nothing(
    engine: AsyncEngine,
) -> None:
    """DDL a transaction had not committed at a fingerprint is seen by the next one after
    it commits (its id is below the horizon, so it is looked for among those that were
    running); and while a transaction stays open, each fingerprint still reads again only
    what changed since the one before."""
    kept = changes.Fingerprints()
    seen: list[tuple[str, Any]] = []

    def listen_on(conn: sa.Connection) -> None:
        sa.event.listen(
            conn, "before_cursor_execute", lambda *a: seen.append((a[2], a[3])), named=False
        )

    async def both(conn: AsyncConnection) -> tuple[str, str]:
        try:
            return await conn.run_sync(kept), await conn.run_sync(new_fingerprints())
        finally:
            await conn.rollback()

    async with engine.connect() as conn, engine.connect() as other:
        await both(conn)
        await other.execute(sa.text("CREATE TABLE late_t (id INTEGER PRIMARY KEY)"))
        await conn.execute(sa.text("CREATE TABLE mid_t (id INTEGER PRIMARY KEY)"))
        await conn.commit()  # a later transaction id completes before late_t's
        now, new = await both(conn)  # late_t is not committed yet
        assert now == new
        await other.commit()
        now, new = await both(conn)
        assert now == new

        await other.execute(sa.text("SELECT txid_current()"))  # left open, with an id
        await conn.run_sync(listen_on)
        for n in range(3):
            await conn.execute(sa.text(f"CREATE TABLE open_{n} (id INTEGER PRIMARY KEY)"))
            await conn.commit()
            seen.clear()
            now, new = await both(conn)
            assert now == new
            read = [args[0] for text, args in seen if text == changes.PARTS_OF]
            assert [len(ids) for ids in read] == [1], n  # the new table only
        await other.rollback()
