"""What drift and verify see, kind by kind, on SQLite, PostgreSQL and MariaDB (issue 11).

``CASES`` is the table behind docs/schema-coverage.md: for each kind of object that exists
on a database, a base migration makes it, ``change`` alters it as a person would by hand
(or as a migration's up would), and ``undo`` is the exact inverse. Every case names the
differences it must cause, as ``<sign> <kind> <name>``. To stay within the suite's time,
one database serves all the cases of a backend: the changes touch separate objects, and
the assertions compare per case, so each check keeps its meaning:

- drift, against the stored snapshot and against a replay, names each change made by hand;
- verify names each change a migration's down forgets, and passes the exact undo;
- after a clean ``up`` and after data changes, ANALYZE, moved counters and a table rebuilt
  to the same definition, both drift modes stay silent;
- ``rung fresh``'s drop leaves an empty schema, and every migration applies again.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from dataclasses import dataclass

from sqlalchemy.ext.asyncio import AsyncEngine

import rung
from conftest import MigrationPackage
from rung.dialects import dialect_named
from rung.registry import Migrations
from rung.schema import Difference, Snapshot
from safety_nets import execute, live_snapshot, statements


@dataclass(frozen=True)
class Case:
    kind: str  # the row of docs/schema-coverage.md
    base: tuple[str, ...]  # made by the base migration
    change: tuple[str, ...]  # by hand, or by a later migration's up
    undo: tuple[str, ...]  # the exact inverse of change: a correct down
    expect: tuple[str, ...]  # "<sign> <kind> <name>" of each difference change makes


def case(
    kind: str, base: Sequence[str], change: Sequence[str], undo: Sequence[str], *expect: str
) -> Case:
    return Case(kind, tuple(base), tuple(change), tuple(undo), expect)


def rebuild(table: str, old: str, new: str) -> tuple[list[str], list[str]]:
    """SQLite changes most things by making the table again: change and undo."""
    return [f"DROP TABLE {table}", f"CREATE TABLE {table} {new}"], [
        f"DROP TABLE {table}",
        f"CREATE TABLE {table} {old}",
    ]


def _sqlite() -> list[Case]:
    cases = [
        case(
            "trigger",
            [
                "CREATE TABLE trg_t (id INTEGER PRIMARY KEY, n INTEGER)",
                "CREATE TRIGGER trg_t_touch AFTER INSERT ON trg_t "
                "BEGIN UPDATE trg_t SET n = 1 WHERE id = NEW.id; END",
            ],
            [
                "DROP TRIGGER trg_t_touch",
                "CREATE TRIGGER trg_t_touch AFTER INSERT ON trg_t "
                "BEGIN UPDATE trg_t SET n = 2 WHERE id = NEW.id; END",
            ],
            [
                "DROP TRIGGER trg_t_touch",
                "CREATE TRIGGER trg_t_touch AFTER INSERT ON trg_t "
                "BEGIN UPDATE trg_t SET n = 1 WHERE id = NEW.id; END",
            ],
            "~ trigger trg_t.trg_t_touch",
        ),
        *_partial_indexes("CREATE INDEX"),
        case(
            "DESC index column",
            [
                "CREATE TABLE desc_t (id INTEGER PRIMARY KEY, qty INTEGER)",
                _ix("desc_ix", "desc_t", "qty"),
            ],
            ["DROP INDEX desc_ix", _ix("desc_ix", "desc_t", "qty DESC")],
            ["DROP INDEX desc_ix", _ix("desc_ix", "desc_t", "qty")],
            "~ index desc_ix",
        ),
        case(
            "types SQLAlchemy does not know",
            ["CREATE TABLE ut_t (id INTEGER PRIMARY KEY, v GEOPOINT)"],
            *rebuild(
                "ut_t", "(id INTEGER PRIMARY KEY, v GEOPOINT)", "(id INTEGER PRIMARY KEY, v GEOBOX)"
            ),
            "~ column ut_t.v",
        ),
    ]
    rebuilt = [  # kind, table, its definition before and after, what differs
        (
            "deferrable foreign key",
            "dfk_child",
            "(id INTEGER PRIMARY KEY, p INTEGER REFERENCES dfk_parent (id))",
            "(id INTEGER PRIMARY KEY, p INTEGER REFERENCES dfk_parent (id) "
            "DEFERRABLE INITIALLY DEFERRED)",
            "~ foreign key dfk_child (p) -> dfk_parent (id)",
        ),
        (
            "column collation",
            "coll_t",
            "(id INTEGER PRIMARY KEY, login TEXT UNIQUE)",
            "(id INTEGER PRIMARY KEY, login TEXT COLLATE NOCASE UNIQUE)",
            "~ column coll_t.login",
        ),
        (
            "SQLite AUTOINCREMENT",
            "ai_t",
            "(id INTEGER PRIMARY KEY, v TEXT)",
            "(id INTEGER PRIMARY KEY AUTOINCREMENT, v TEXT)",
            "~ column ai_t.id",
        ),
        (
            "SQLite WITHOUT ROWID",
            "wr_t",
            "(id INTEGER NOT NULL PRIMARY KEY, v TEXT)",
            "(id INTEGER NOT NULL PRIMARY KEY, v TEXT) WITHOUT ROWID",
            "~ table wr_t",
        ),
        (
            "SQLite STRICT",
            "st_t",
            "(id INTEGER PRIMARY KEY, v TEXT)",
            "(id INTEGER PRIMARY KEY, v TEXT) STRICT",
            "~ table st_t",
        ),
        (
            "virtual vs stored generated column",
            "gen_t",
            "(a INTEGER, b INTEGER AS (a * 2) VIRTUAL)",
            "(a INTEGER, b INTEGER AS (a * 2) STORED)",
            "~ column gen_t.b",
        ),
        (
            "renamed constraint",
            "rn_t",
            "(id INTEGER PRIMARY KEY, qty INTEGER, CONSTRAINT ck_rn CHECK (qty > 0))",
            "(id INTEGER PRIMARY KEY, qty INTEGER, CONSTRAINT ck_rn2 CHECK (qty > 0))",
            "~ check constraint rn_t (qty > 0)",
        ),
    ]
    for kind, table, old, new, expect in rebuilt:
        base = [f"CREATE TABLE {table} {old}"]
        if table == "dfk_child":
            base.insert(0, "CREATE TABLE dfk_parent (id INTEGER PRIMARY KEY)")
        cases.append(case(kind, base, *rebuild(table, old, new), expect))
    return cases


def _ix(name: str, table: str, keys: str, rest: str = "", using: str = "") -> str:
    return f"CREATE INDEX {name} ON {table} {using}({keys}){rest}"


def _partial_indexes(create: str) -> list[Case]:
    """A WHERE added, changed and dropped (SQLite and PostgreSQL write them alike)."""
    table = "CREATE TABLE pix_t (id INTEGER PRIMARY KEY, qty INTEGER)"
    made = {"pix_add": "", "pix_chg": " WHERE qty > 0", "pix_drop": " WHERE qty > 0"}
    after = {"pix_add": " WHERE qty > 0", "pix_chg": " WHERE qty > 1", "pix_drop": ""}
    cases = []
    for name, kind in (
        ("pix_add", "partial index: WHERE added"),
        ("pix_chg", "partial index: WHERE changed"),
        ("pix_drop", "partial index: WHERE dropped"),
    ):
        base = [_ix(name, "pix_t", "qty", made[name])]
        cases.append(
            case(
                kind,
                [table, *base] if name == "pix_add" else base,
                [f"DROP INDEX {name}", _ix(name, "pix_t", "qty", after[name])],
                [f"DROP INDEX {name}", *base],
                f"~ index {name}",
            )
        )
    return cases


def _postgresql() -> list[Case]:
    return [
        case(
            "trigger",
            [
                "CREATE TABLE trg_t (id INTEGER PRIMARY KEY, n INTEGER)",
                "CREATE FUNCTION trg_fn() RETURNS trigger LANGUAGE plpgsql "
                "AS $$ BEGIN NEW.n := 1; RETURN NEW; END $$",
                "CREATE TRIGGER trg_t_touch BEFORE UPDATE ON trg_t "
                "FOR EACH ROW EXECUTE FUNCTION trg_fn()",
            ],
            [
                "CREATE OR REPLACE TRIGGER trg_t_touch BEFORE INSERT OR UPDATE ON trg_t "
                "FOR EACH ROW EXECUTE FUNCTION trg_fn()"
            ],
            [
                "CREATE OR REPLACE TRIGGER trg_t_touch BEFORE UPDATE ON trg_t "
                "FOR EACH ROW EXECUTE FUNCTION trg_fn()"
            ],
            "~ trigger trg_t.trg_t_touch",
        ),
        case(
            "function",
            ["CREATE FUNCTION cov_f(a integer) RETURNS integer LANGUAGE sql AS 'SELECT a + 1'"],
            [
                "CREATE OR REPLACE FUNCTION cov_f(a integer) RETURNS integer LANGUAGE sql "
                "AS 'SELECT a + 2'"
            ],
            [
                "CREATE OR REPLACE FUNCTION cov_f(a integer) RETURNS integer LANGUAGE sql "
                "AS 'SELECT a + 1'"
            ],
            "~ function cov_f(a integer)",
        ),
        case(
            "procedure",
            ["CREATE PROCEDURE cov_p() LANGUAGE sql AS 'SELECT 1'"],
            ["CREATE OR REPLACE PROCEDURE cov_p() LANGUAGE sql AS 'SELECT 2'"],
            ["CREATE OR REPLACE PROCEDURE cov_p() LANGUAGE sql AS 'SELECT 1'"],
            "~ procedure cov_p()",
        ),
        case(
            "table comment",
            ["CREATE TABLE cmt_t (id INTEGER)", "COMMENT ON TABLE cmt_t IS 'things'"],
            ["COMMENT ON TABLE cmt_t IS 'other things'"],
            ["COMMENT ON TABLE cmt_t IS 'things'"],
            "~ table cmt_t",
        ),
        case(
            "column comment",
            ["CREATE TABLE ccm_t (id INTEGER, v TEXT)"],
            ["COMMENT ON COLUMN ccm_t.v IS 'the value'"],
            ["COMMENT ON COLUMN ccm_t.v IS NULL"],
            "~ column ccm_t.v",
        ),
        *_partial_indexes("CREATE INDEX"),
        *[
            case(
                f"index method {method}",
                [
                    f"CREATE TABLE {method}_t (id INTEGER, v {type_})",
                    _ix(f"{method}_ix", f"{method}_t", "v"),
                ],
                [
                    f"DROP INDEX {method}_ix",
                    _ix(f"{method}_ix", f"{method}_t", "v", using=f"USING {method} "),
                ],
                [f"DROP INDEX {method}_ix", _ix(f"{method}_ix", f"{method}_t", "v")],
                f"~ index {method}_ix",
            )
            for method, type_ in (("hash", "TEXT"), ("gin", "JSONB"), ("brin", "TIMESTAMP"))
        ],
        case(
            "DESC index column",
            ["CREATE TABLE desc_t (id INTEGER, qty INTEGER)", _ix("desc_ix", "desc_t", "qty")],
            ["DROP INDEX desc_ix", _ix("desc_ix", "desc_t", "qty DESC")],
            ["DROP INDEX desc_ix", _ix("desc_ix", "desc_t", "qty")],
            "~ index desc_ix",
        ),
        case(
            "INCLUDE index columns",
            ["CREATE TABLE inc_t (a INTEGER, b INTEGER)", _ix("inc_ix", "inc_t", "a")],
            ["DROP INDEX inc_ix", _ix("inc_ix", "inc_t", "a", " INCLUDE (b)")],
            ["DROP INDEX inc_ix", _ix("inc_ix", "inc_t", "a")],
            "~ index inc_ix",
        ),
        case(
            "domain and its checks",
            ["CREATE DOMAIN cov_pos AS integer CONSTRAINT cov_pos_check CHECK (VALUE > 0)"],
            [
                "ALTER DOMAIN cov_pos DROP CONSTRAINT cov_pos_check",
                "ALTER DOMAIN cov_pos ADD CONSTRAINT cov_pos_check CHECK (VALUE >= 0)",
            ],
            [
                "ALTER DOMAIN cov_pos DROP CONSTRAINT cov_pos_check",
                "ALTER DOMAIN cov_pos ADD CONSTRAINT cov_pos_check CHECK (VALUE > 0)",
            ],
            "~ domain cov_pos",
        ),
        case(
            "second schema",
            [],
            ["CREATE SCHEMA cov_extra"],
            ["DROP SCHEMA cov_extra"],
            "+ schema cov_extra",
        ),
        case(
            "table in a second schema",
            ["CREATE SCHEMA cov_audit", "CREATE TABLE cov_audit.log (id INTEGER PRIMARY KEY)"],
            ["ALTER TABLE cov_audit.log ADD COLUMN msg TEXT"],
            ["ALTER TABLE cov_audit.log DROP COLUMN msg"],
            "+ column cov_audit.log.msg",
        ),
        case(
            "sequence options",
            ["CREATE SEQUENCE cov_seq"],
            ["ALTER SEQUENCE cov_seq INCREMENT BY 5 MAXVALUE 1000 CYCLE"],
            ["ALTER SEQUENCE cov_seq INCREMENT BY 1 NO MAXVALUE NO CYCLE"],
            "~ sequence cov_seq",
        ),
        case(
            "sequence owned by",
            ["CREATE TABLE own_t (id INTEGER)", "CREATE SEQUENCE own_seq"],
            ["ALTER SEQUENCE own_seq OWNED BY own_t.id"],
            ["ALTER SEQUENCE own_seq OWNED BY NONE"],
            "~ sequence own_seq",
        ),
        case(
            "identity ALWAYS vs BY DEFAULT",
            ["CREATE TABLE id_t (id INTEGER GENERATED BY DEFAULT AS IDENTITY PRIMARY KEY)"],
            ["ALTER TABLE id_t ALTER COLUMN id SET GENERATED ALWAYS"],
            ["ALTER TABLE id_t ALTER COLUMN id SET GENERATED BY DEFAULT"],
            "~ column id_t.id",
        ),
        case(
            "deferrable foreign key",
            [
                "CREATE TABLE dfk_parent (id INTEGER PRIMARY KEY)",
                "CREATE TABLE dfk_child (id INTEGER PRIMARY KEY, "
                "p INTEGER REFERENCES dfk_parent (id))",
            ],
            [
                "ALTER TABLE dfk_child ALTER CONSTRAINT dfk_child_p_fkey "
                "DEFERRABLE INITIALLY DEFERRED"
            ],
            ["ALTER TABLE dfk_child ALTER CONSTRAINT dfk_child_p_fkey NOT DEFERRABLE"],
            "~ foreign key dfk_child (p) -> dfk_parent (id)",
        ),
        case(
            "exclusion constraint",
            ["CREATE TABLE ex_t (during TSRANGE)"],
            ["ALTER TABLE ex_t ADD CONSTRAINT ex_t_excl EXCLUDE USING gist (during WITH &&)"],
            ["ALTER TABLE ex_t DROP CONSTRAINT ex_t_excl"],
            "+ exclusion constraint ex_t EXCLUDE USING gist (during WITH &&)",
        ),
        case(
            "UNIQUE NULLS NOT DISTINCT",
            ["CREATE TABLE nnd_t (email TEXT, CONSTRAINT nnd_t_email_key UNIQUE (email))"],
            [
                "ALTER TABLE nnd_t DROP CONSTRAINT nnd_t_email_key",
                "ALTER TABLE nnd_t ADD CONSTRAINT nnd_t_email_key "
                "UNIQUE NULLS NOT DISTINCT (email)",
            ],
            [
                "ALTER TABLE nnd_t DROP CONSTRAINT nnd_t_email_key",
                "ALTER TABLE nnd_t ADD CONSTRAINT nnd_t_email_key UNIQUE (email)",
            ],
            "~ unique constraint nnd_t (email)",
        ),
        case(
            "row-level security enabled",
            ["CREATE TABLE rls_t (id INTEGER)"],
            ["ALTER TABLE rls_t ENABLE ROW LEVEL SECURITY"],
            ["ALTER TABLE rls_t DISABLE ROW LEVEL SECURITY"],
            "~ table rls_t",
        ),
        case(
            "row-level security forced",
            ["CREATE TABLE frls_t (id INTEGER)", "ALTER TABLE frls_t ENABLE ROW LEVEL SECURITY"],
            ["ALTER TABLE frls_t FORCE ROW LEVEL SECURITY"],
            ["ALTER TABLE frls_t NO FORCE ROW LEVEL SECURITY"],
            "~ table frls_t",
        ),
        case(
            "policy",
            ["CREATE TABLE pol_t (id INTEGER)", "CREATE POLICY pol_own ON pol_t USING (id > 0)"],
            ["ALTER POLICY pol_own ON pol_t USING (id > 1)"],
            ["ALTER POLICY pol_own ON pol_t USING (id > 0)"],
            "~ policy pol_t.pol_own",
        ),
        case(
            "unlogged table",
            ["CREATE TABLE ul_t (id INTEGER)"],
            ["ALTER TABLE ul_t SET UNLOGGED"],
            ["ALTER TABLE ul_t SET LOGGED"],
            "~ table ul_t",
        ),
        case(
            "materialized view vs view",
            ["CREATE TABLE mv_t (id INTEGER)", "CREATE VIEW mv_v AS SELECT id FROM mv_t"],
            ["DROP VIEW mv_v", "CREATE MATERIALIZED VIEW mv_v AS SELECT id FROM mv_t"],
            ["DROP MATERIALIZED VIEW mv_v", "CREATE VIEW mv_v AS SELECT id FROM mv_t"],
            "~ view mv_v",
        ),
        case(
            "types SQLAlchemy does not know",
            ["CREATE TABLE ut_t (id INTEGER, v POINT)"],
            ["ALTER TABLE ut_t ALTER COLUMN v TYPE POLYGON USING NULL"],
            ["ALTER TABLE ut_t ALTER COLUMN v TYPE POINT USING NULL"],
            "~ column ut_t.v",
        ),
        case(
            "column collation",
            ["CREATE TABLE coll_t (login TEXT)"],
            ['ALTER TABLE coll_t ALTER COLUMN login TYPE TEXT COLLATE "C"'],
            ['ALTER TABLE coll_t ALTER COLUMN login TYPE TEXT COLLATE "default"'],
            "~ column coll_t.login",
        ),
        case(
            "renamed constraint",
            [
                "CREATE TABLE rn_t (id INTEGER PRIMARY KEY, "
                "qty INTEGER CONSTRAINT ck_rn CHECK (qty > 0))"
            ],
            ["ALTER TABLE rn_t RENAME CONSTRAINT ck_rn TO ck_rn2"],
            ["ALTER TABLE rn_t RENAME CONSTRAINT ck_rn2 TO ck_rn"],
            "~ check constraint rn_t (qty > 0)",
        ),
        case(
            "renamed primary key",
            ["CREATE TABLE rpk_t (id INTEGER PRIMARY KEY)"],
            ["ALTER TABLE rpk_t RENAME CONSTRAINT rpk_t_pkey TO rpk_t_pk"],
            ["ALTER TABLE rpk_t RENAME CONSTRAINT rpk_t_pk TO rpk_t_pkey"],
            "~ primary key rpk_t",
        ),
    ]


def _mariadb() -> list[Case]:
    return [
        case(
            "trigger",
            [
                "CREATE TABLE trg_t (id INTEGER PRIMARY KEY, n INTEGER)",
                "CREATE TRIGGER trg_t_touch BEFORE INSERT ON trg_t FOR EACH ROW SET NEW.n = 1",
            ],
            [
                "DROP TRIGGER trg_t_touch",
                "CREATE TRIGGER trg_t_touch BEFORE INSERT ON trg_t FOR EACH ROW SET NEW.n = 2",
            ],
            [
                "DROP TRIGGER trg_t_touch",
                "CREATE TRIGGER trg_t_touch BEFORE INSERT ON trg_t FOR EACH ROW SET NEW.n = 1",
            ],
            "~ trigger trg_t.trg_t_touch",
        ),
        case(
            "function",
            ["CREATE FUNCTION cov_f(a INT) RETURNS INT DETERMINISTIC RETURN a + 1"],
            [
                "DROP FUNCTION cov_f",
                "CREATE FUNCTION cov_f(a INT) RETURNS INT DETERMINISTIC RETURN a + 2",
            ],
            [
                "DROP FUNCTION cov_f",
                "CREATE FUNCTION cov_f(a INT) RETURNS INT DETERMINISTIC RETURN a + 1",
            ],
            "~ function cov_f",
        ),
        case(
            "procedure",
            ["CREATE PROCEDURE cov_p() SELECT 1"],
            ["DROP PROCEDURE cov_p", "CREATE PROCEDURE cov_p() SELECT 2"],
            ["DROP PROCEDURE cov_p", "CREATE PROCEDURE cov_p() SELECT 1"],
            "~ procedure cov_p",
        ),
        case(
            "table comment",
            ["CREATE TABLE cmt_t (id INTEGER) COMMENT 'things'"],
            ["ALTER TABLE cmt_t COMMENT 'other things'"],
            ["ALTER TABLE cmt_t COMMENT 'things'"],
            "~ table cmt_t",
        ),
        case(
            "column comment",
            ["CREATE TABLE ccm_t (id INTEGER, v TEXT)"],
            ["ALTER TABLE ccm_t MODIFY v TEXT COMMENT 'the value'"],
            ["ALTER TABLE ccm_t MODIFY v TEXT"],
            "~ column ccm_t.v",
        ),
        case(
            "index method FULLTEXT",
            ["CREATE TABLE ft_t (id INTEGER, body TEXT, INDEX ft_ix (body(100)))"],
            ["DROP INDEX ft_ix ON ft_t", "CREATE FULLTEXT INDEX ft_ix ON ft_t (body)"],
            ["DROP INDEX ft_ix ON ft_t", "CREATE INDEX ft_ix ON ft_t (body(100))"],
            "~ index ft_ix",
        ),
        case(
            "index method SPATIAL",
            ["CREATE TABLE sp_t (id INTEGER, p POINT NOT NULL, INDEX sp_ix (p(32)))"],
            ["DROP INDEX sp_ix ON sp_t", "CREATE SPATIAL INDEX sp_ix ON sp_t (p)"],
            ["DROP INDEX sp_ix ON sp_t", "CREATE INDEX sp_ix ON sp_t (p(32))"],
            "~ index sp_ix",
        ),
        case(
            "DESC index column",
            ["CREATE TABLE desc_t (id INTEGER, qty INTEGER, INDEX desc_ix (qty))"],
            ["DROP INDEX desc_ix ON desc_t", "CREATE INDEX desc_ix ON desc_t (qty DESC)"],
            ["DROP INDEX desc_ix ON desc_t", "CREATE INDEX desc_ix ON desc_t (qty)"],
            "~ index desc_ix",
        ),
        case(
            "sequence options",
            ["CREATE SEQUENCE cov_seq"],
            ["ALTER SEQUENCE cov_seq INCREMENT BY 5 MAXVALUE 1000 CYCLE"],
            ["ALTER SEQUENCE cov_seq INCREMENT BY 1 NO MAXVALUE NOCYCLE"],
            "~ sequence cov_seq",
        ),
        case(
            "column collation",
            [
                "CREATE TABLE coll_t (login VARCHAR(50) COLLATE utf8mb4_bin, "
                "UNIQUE KEY uq_login (login))"
            ],
            ["ALTER TABLE coll_t MODIFY login VARCHAR(50)"],
            ["ALTER TABLE coll_t MODIFY login VARCHAR(50) COLLATE utf8mb4_bin"],
            "~ column coll_t.login",
        ),
        case(
            "MariaDB table engine",
            ["CREATE TABLE eng_t (id INTEGER) ENGINE=InnoDB"],
            ["ALTER TABLE eng_t ENGINE=MyISAM"],
            ["ALTER TABLE eng_t ENGINE=InnoDB"],
            "~ table eng_t",
        ),
        case(
            "MariaDB table charset and collation",
            [
                "CREATE TABLE cs_t (id INTEGER, v VARCHAR(10)) "
                "DEFAULT CHARSET=utf8mb4 COLLATE=utf8mb4_general_ci"
            ],
            ["ALTER TABLE cs_t CONVERT TO CHARACTER SET latin1 COLLATE latin1_swedish_ci"],
            ["ALTER TABLE cs_t CONVERT TO CHARACTER SET utf8mb4 COLLATE utf8mb4_general_ci"],
            "~ table cs_t",
        ),
        case(
            "MariaDB invisible column",
            ["CREATE TABLE inv_t (id INTEGER, secret INTEGER)"],
            ["ALTER TABLE inv_t MODIFY secret INTEGER INVISIBLE"],
            ["ALTER TABLE inv_t MODIFY secret INTEGER"],
            "~ column inv_t.secret",
        ),
        case(
            "MariaDB ENUM label case",
            ["CREATE TABLE en_t (mood ENUM('sad', 'happy'))"],
            ["ALTER TABLE en_t MODIFY mood ENUM('Sad', 'happy')"],
            ["ALTER TABLE en_t MODIFY mood ENUM('sad', 'happy')"],
            "~ column en_t.mood",
        ),
        case(
            "virtual vs stored generated column",
            ["CREATE TABLE gen_t (a INTEGER, b INTEGER AS (a * 2) VIRTUAL)"],
            ["ALTER TABLE gen_t DROP COLUMN b, ADD COLUMN b INTEGER AS (a * 2) PERSISTENT"],
            ["ALTER TABLE gen_t DROP COLUMN b, ADD COLUMN b INTEGER AS (a * 2) VIRTUAL"],
            "~ column gen_t.b",
        ),
        case(
            "types SQLAlchemy does not know",
            ["CREATE TABLE ut_t (id INTEGER, v INET6)"],
            ["ALTER TABLE ut_t DROP COLUMN v, ADD COLUMN v UUID"],
            ["ALTER TABLE ut_t DROP COLUMN v, ADD COLUMN v INET6"],
            "~ column ut_t.v",
        ),
        case(
            "renamed constraint",
            [
                "CREATE TABLE rfk_parent (id INTEGER PRIMARY KEY)",
                "CREATE TABLE rfk_child (id INTEGER PRIMARY KEY, p INTEGER, INDEX ix_rfk (p), "
                "CONSTRAINT fk_rfk FOREIGN KEY (p) REFERENCES rfk_parent (id))",
            ],
            [
                "ALTER TABLE rfk_child DROP FOREIGN KEY fk_rfk, "
                "ADD CONSTRAINT fk_rfk2 FOREIGN KEY (p) REFERENCES rfk_parent (id)"
            ],
            [
                "ALTER TABLE rfk_child DROP FOREIGN KEY fk_rfk2, "
                "ADD CONSTRAINT fk_rfk FOREIGN KEY (p) REFERENCES rfk_parent (id)"
            ],
            "~ foreign key rfk_child (p) -> rfk_parent (id)",
        ),
    ]


CASES = {"sqlite": _sqlite(), "postgresql": _postgresql(), "mariadb": _mariadb()}


def every_statement(backend: str) -> Iterator[str]:
    """Every case's statements in an order that runs: each base, each change, then each
    undo from the last case to the first (every kind made, changed and changed back)."""
    cases = CASES[backend]
    for c in cases:
        yield from c.base
    for c in cases:
        yield from c.change
    for c in reversed(cases):
        yield from c.undo


# Changes that are not schema changes, per backend: they must leave both drift modes silent.
NOT_SCHEMA = {
    "sqlite": [
        "INSERT INTO ai_t (v) VALUES ('a'), ('b')",  # moves AUTOINCREMENT's counter
        "DELETE FROM ai_t",
        "INSERT INTO desc_t (qty) VALUES (1), (2)",
        "ANALYZE",
        # The 12-step rebuild: a new table, the rows, the old one dropped, the new renamed,
        # its indexes and triggers made again.
        "CREATE TABLE trg_t_new (id INTEGER PRIMARY KEY, n INTEGER)",
        "INSERT INTO trg_t_new SELECT * FROM trg_t",
        "DROP TABLE trg_t",
        "ALTER TABLE trg_t_new RENAME TO trg_t",
        "CREATE TRIGGER trg_t_touch AFTER INSERT ON trg_t "
        "BEGIN UPDATE trg_t SET n = 1 WHERE id = NEW.id; END",
        "CREATE TABLE pix_t_new (id INTEGER PRIMARY KEY, qty INTEGER)",
        "DROP TABLE pix_t",
        "ALTER TABLE pix_t_new RENAME TO pix_t",
        _ix("pix_add", "pix_t", "qty"),
        _ix("pix_chg", "pix_t", "qty", " WHERE qty > 0"),
        _ix("pix_drop", "pix_t", "qty", " WHERE qty > 0"),
    ],
    "postgresql": [
        "INSERT INTO id_t DEFAULT VALUES",  # moves the identity's sequence
        "SELECT setval('cov_seq', 500)",
        "INSERT INTO desc_t (qty) VALUES (1), (2)",
        "ANALYZE",
        "ALTER TABLE desc_t ALTER COLUMN qty TYPE INTEGER",  # rewrites the table and its index
        "REINDEX TABLE pix_t",
    ],
    "mariadb": [
        "INSERT INTO desc_t (qty) VALUES (1), (2)",
        "ALTER TABLE desc_t AUTO_INCREMENT = 1000",
        "SELECT NEXTVAL(cov_seq)",
        "SELECT SETVAL(cov_seq, 500)",
        "ANALYZE TABLE desc_t",
        "ALTER TABLE coll_t FORCE",  # rebuilds the table
        "OPTIMIZE TABLE trg_t",
    ],
}


def base_of(backend: str) -> list[str]:
    return [s for c in CASES[backend] for s in c.base]


def changes_of(backend: str) -> list[str]:
    return [s for c in CASES[backend] for s in c.change]


def undos_of(backend: str) -> list[str]:
    return [s for c in reversed(CASES[backend]) for s in c.undo]


def subjects(differences: Sequence[Difference]) -> set[str]:
    return {f"{d.change} {d.subject}" for d in differences}


def unexplained(backend: str, found: set[str]) -> dict[str, list[str]]:
    """Per kind, the differences it should cause that were not found; and under "(other)"
    those found that no case explains."""
    missing = {c.kind: [e for e in c.expect if e not in found] for c in CASES[backend]}
    expected = {e for c in CASES[backend] for e in c.expect}
    missing["(other)"] = sorted(found - expected)
    return {kind: lines for kind, lines in missing.items() if lines}


async def both_drifts(engine: AsyncEngine, registry: Migrations) -> list[set[str]]:
    stored = await rung.drift(engine, registry)
    replayed = await rung.drift(engine, registry, replay=True)
    return [subjects(stored.differences), subjects(replayed.differences)]


async def test_drift_names_every_kind_changed_by_hand(
    backend: str, engine: AsyncEngine, migrations: MigrationPackage
) -> None:
    migrations.add("base", statements(*base_of(backend)), None)
    await rung.upgrade(engine, migrations.registry())

    await execute(engine, *changes_of(backend))

    stored, replayed = await both_drifts(engine, migrations.registry())
    assert unexplained(backend, stored) == {}
    assert unexplained(backend, replayed) == {}


async def test_verify_names_every_change_a_down_forgets(
    backend: str, engine: AsyncEngine, migrations: MigrationPackage
) -> None:
    migrations.add("base", statements(*base_of(backend)), None)
    forgetful = migrations.add("change", statements(*changes_of(backend)), "pass")

    report = await rung.verify(engine, migrations.registry())

    first = report.failures[0]
    assert (first.name, first.step) == (forgetful, "down"), first.message
    assert unexplained(backend, subjects(first.differences)) == {}


async def test_verify_passes_every_exact_undo(
    backend: str, engine: AsyncEngine, migrations: MigrationPackage
) -> None:
    migrations.add("base", statements(*base_of(backend)), None)
    exact = migrations.add(
        "change", statements(*changes_of(backend)), statements(*undos_of(backend))
    )

    report = await rung.verify(engine, migrations.registry())

    assert [f"{f.message}: {[str(d) for d in f.differences]}" for f in report.failures] == []
    assert report.checked == (exact,)


async def test_no_false_positive_after_up_data_counters_analyze_and_rebuilds(
    backend: str, engine: AsyncEngine, migrations: MigrationPackage
) -> None:
    migrations.add("base", statements(*base_of(backend)), None)
    await rung.upgrade(engine, migrations.registry())
    replayed = await rung.drift(engine, migrations.registry(), replay=True)
    assert [str(d) for d in replayed.differences] == []  # the live database and a scratch one

    await execute(engine, *NOT_SCHEMA[backend])

    assert await both_drifts(engine, migrations.registry()) == [set(), set()]


async def test_fresh_drops_one_of_each_kind_and_every_migration_applies_again(
    backend: str, engine: AsyncEngine, migrations: MigrationPackage
) -> None:
    extra = ["CREATE EXTENSION IF NOT EXISTS pg_trgm"] if backend == "postgresql" else []
    migrations.add("base", statements(*base_of(backend), *changes_of(backend), *extra), None)
    await rung.upgrade(engine, migrations.registry())
    made = await live_snapshot(engine)
    assert Snapshot.from_json(made.to_json()) == made  # what drift stores carries every kind

    async with engine.begin() as conn:
        dropped = await conn.run_sync(dialect_named(backend).drop_everything)

    assert "table trg_t" in dropped
    empty = await live_snapshot(engine, own=True)
    builtin = ("plpgsql",) if backend == "postgresql" else ()
    assert empty == Snapshot(empty.dialect, extensions=builtin)
    assert await rung.upgrade(engine, migrations.registry())
    assert await live_snapshot(engine) == made
