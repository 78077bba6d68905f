"""MariaDB's fingerprint for verify reads again only the tables that the statements since
the last one name (``rung.dialects.mysql_changes``): it must always give what a full read
gives, and read everything again where a statement's reach is not known.

After every statement of the coverage suite's cases (each kind of object, made, changed
by hand and changed back) and of renames that change other tables' rows, a fingerprint
kept since the start equals a new one; a ladder's steps read their own table only, and DDL
sent around SQLAlchemy reads everything again.
"""

from __future__ import annotations

from collections.abc import Iterator

import pytest
import sqlalchemy as sa
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncEngine
from test_coverage import every_statement as coverage_statements

from rung.dialects import mysql_changes as changes

pytestmark = pytest.mark.parametrize("backend", ["mariadb"], indirect=True)

RENAMES = (
    "CREATE TABLE rn_parent (id INTEGER PRIMARY KEY, code VARCHAR(8) UNIQUE)",
    "CREATE TABLE rn_child (id INTEGER PRIMARY KEY, parent_code VARCHAR(8), "
    "FOREIGN KEY (parent_code) REFERENCES rn_parent (code))",
    "CREATE TABLE rn_base (id INTEGER, v VARCHAR(8))",
    "CREATE VIEW rn_view AS SELECT id, v FROM rn_base",
    # the child's foreign key names the parent and its column
    "RENAME TABLE rn_parent TO rn_parent2",
    "ALTER TABLE rn_parent2 RENAME COLUMN code TO kode",
    "ALTER TABLE `rn_parent2` RENAME TO rn_parent3, ADD COLUMN n INTEGER",
    "ALTER TABLE rn_base MODIFY v VARCHAR(12)",  # the view's column takes its type
    "CREATE TABLE rn_like LIKE rn_child",
    "/* a comment first */ ALTER TABLE rn_like ADD COLUMN m INTEGER",
    "SET STATEMENT max_statement_time = 0 FOR ALTER TABLE rn_like ADD COLUMN k INTEGER",
    "/*!100000 ALTER TABLE rn_like ADD COLUMN j INTEGER */",
    "CREATE SEQUENCE rn_seq",
    "ALTER SEQUENCE rn_seq INCREMENT BY 5",
    "CREATE TRIGGER rn_trg BEFORE INSERT ON rn_like FOR EACH ROW SET NEW.m = 1",
    "DROP TRIGGER rn_trg",
    "CREATE PROCEDURE rn_proc(IN a INT) SELECT a",
    "DROP PROCEDURE rn_proc",
    "CREATE FUNCTION rn_f() RETURNS INTEGER RETURN 1",
    "CREATE VIEW rn_fview AS SELECT rn_f() AS x",
    "DROP FUNCTION rn_f",
    "CREATE FUNCTION rn_f() RETURNS VARCHAR(5) RETURN 'a'",  # the view's column type
    "DROP VIEW rn_fview",
    "DROP FUNCTION rn_f",
    "INSERT INTO rn_like (id) VALUES (1)",
    "DROP TABLE rn_like, rn_child",
    "DROP VIEW rn_view",
    "DROP SEQUENCE rn_seq",
    "DROP TABLE IF EXISTS rn_parent3, rn_base",
)


def every_statement() -> Iterator[str]:
    yield from coverage_statements("mariadb")
    yield from RENAMES


async def both(conn: AsyncConnection, kept: changes.Fingerprints) -> tuple[str, str]:
    try:
        return await conn.run_sync(kept), await conn.run_sync(changes.Fingerprints())
    finally:
        await conn.rollback()


async def test_a_kept_fingerprint_equals_a_new_one_after_every_statement(
    engine: AsyncEngine,
) -> None:
    kept = changes.Fingerprints()
    differed = 0
    async with engine.connect() as conn:
        last, _ = await both(conn, kept)
        for statement in every_statement():
            await conn.execute(sa.text(statement))
            await conn.commit()
            now, new = await both(conn, kept)
            assert now == new, f"after {statement!r}"
            differed += now != last
            last = now
    assert differed > 60  # the statements change the schema, and the fingerprint sees it
    # read in full: the first time, after the SET STATEMENT, the executable comment and
    # each DROP TRIGGER (which names no table: the trigger case has two)
    assert kept.full_reads == 6


async def test_a_step_reads_its_own_table_and_those_that_name_it(engine: AsyncEngine) -> None:
    kept = changes.Fingerprints()
    async with engine.connect() as conn:
        for n in range(3):
            await conn.execute(sa.text(f"CREATE TABLE other_{n} (id INTEGER PRIMARY KEY)"))
        await conn.commit()
        await both(conn, kept)

        async def step(statement: str) -> list[str] | None:
            await conn.execute(sa.text(statement))
            await conn.commit()
            await both(conn, kept)
            return kept.last_read

        assert await step("CREATE TABLE one (id INTEGER PRIMARY KEY, name TEXT)") == ["one"]
        assert await step("ALTER TABLE one ADD COLUMN n INTEGER NOT NULL DEFAULT 0") == ["one"]
        assert await step("CREATE INDEX ix_one ON one (n)") == ["one"]
        assert await step("INSERT INTO one (id, name) VALUES (1, 'a')") == []
        assert await step("DROP TABLE one") == ["one"]
        await step("CREATE TABLE two (id INTEGER, FOREIGN KEY (id) REFERENCES other_0 (id))")
        assert await step("ALTER TABLE other_0 ADD COLUMN v INTEGER") == ["other_0", "two"]
        await step("CREATE VIEW v_one AS SELECT id FROM other_1")
        assert await step("ALTER TABLE other_2 ADD COLUMN v INTEGER") == ["other_2", "v_one"]
        assert kept.full_reads == 1

        # DDL sent on the driver's own connection, around SQLAlchemy: the session's count
        # of DDL statements says so, and everything is read again
        driver = (await conn.get_raw_connection()).driver_connection
        assert driver is not None
        async with driver.cursor() as cursor:
            await cursor.execute("ALTER TABLE other_1 ADD COLUMN w INTEGER")
        now, new = await both(conn, kept)
        assert now == new and kept.last_read is None and kept.full_reads == 2


@pytest.mark.parametrize(
    ("statement", "expected"),
    [
        ("SELECT 1", (set(), False)),
        ("  -- a note\n UPDATE t SET a = 1", (set(), False)),
        ("CREATE TABLE IF NOT EXISTS `a``b` (id INT)", ({"a`b"}, False)),
        ("CREATE OR REPLACE TEMPORARY TABLE db.t (id INT)", ({"t"}, False)),
        ("ALTER ONLINE TABLE t RENAME COLUMN a TO b", ({"t"}, False)),
        ("ALTER TABLE t RENAME AS u", ({"t", "u"}, False)),
        ("DROP TABLE IF EXISTS a, `b`, db.c CASCADE", ({"a", "b", "c"}, False)),
        ("RENAME TABLE a TO b, db.c TO d", ({"a", "b", "c", "d"}, False)),
        ("CREATE UNIQUE INDEX i USING BTREE ON t (a)", ({"t"}, False)),
        ("DROP INDEX IF EXISTS i ON t", ({"t"}, False)),
        (
            "CREATE ALGORITHM=MERGE DEFINER=`u`@`h` SQL SECURITY INVOKER VIEW v AS SELECT 1",
            ({"v"}, False),
        ),
        (
            "CREATE DEFINER=CURRENT_USER TRIGGER g AFTER DELETE ON t FOR EACH ROW SET @a = 1",
            ({"t"}, False),
        ),
        ("CREATE DEFINER=CURRENT_USER PROCEDURE p() SELECT 1", (set(), True)),
        ("DROP FUNCTION IF EXISTS f", (set(), True)),
        ("DROP TRIGGER g", None),
        ("CALL p()", None),
        ("EXECUTE s", None),
        ("USE other", None),
        ("CREATE DATABASE d", None),
        ("ALTER DATABASE d COLLATE utf8mb4_bin", None),
        ("INSERT INTO mysql.proc VALUES ()", None),
        ("SET STATEMENT max_statement_time = 1 FOR DROP TABLE t", None),
        ("ALTER TABLE t ADD COLUMN a INT; DROP TABLE u", None),
        ("/*!50000 DROP TABLE t */", None),
        ("ALTER TABLE t COMMENT 'x -- #y', RENAME TO u", ({"t", "u"}, False)),
        ('DROP TABLE "a""b" /* c */ -- d', ({'a"b'}, False)),
        ("UPDATE t SET a = '; DROP TABLE u'", (set(), False)),
    ],
)
def test_what_a_statement_changes(
    statement: str, expected: tuple[set[str], bool] | None, backend: str
) -> None:
    assert changes.changed_by([statement]) == expected
