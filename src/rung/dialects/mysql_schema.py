"""MySQL's and MariaDB's schema reader: eight ``information_schema`` queries for the whole
database, because SQLAlchemy's MySQL dialect reflects one ``SHOW CREATE TABLE`` per table.

Normalised: types as ``COLUMN_TYPE`` writes them, upper-cased (``INT(11)``); a ``NULL``
default is no default; ``ON UPDATE`` joins the default; RESTRICT is the default referential
action (InnoDB treats NO ACTION the same); a unique key is a unique index (MySQL has no
other kind); view definitions lose the database name MySQL writes into them, so a scratch
copy compares equal. MariaDB sequences are listed with the sequences.

``information_schema`` does not wait for a table whose definition another session is
changing: it skips it with warning 1684, and a snapshot would silently miss the table. Each
query is followed by ``SHOW WARNINGS``; a skip reads the whole schema again, a few times.
"""

from __future__ import annotations

import time
from collections import defaultdict
from typing import Any

import sqlalchemy as sa

from rung.dialects.reflection import action, drop_in_order, squeeze, unwrap
from rung.errors import SchemaError
from rung.schema import Check, Column, ForeignKey, Index, Snapshot, Table, View

_HERE = "TABLE_SCHEMA = DATABASE()"
_TABLES = sa.text(f"SELECT TABLE_NAME, TABLE_TYPE FROM information_schema.TABLES WHERE {_HERE}")
_COLUMNS = sa.text(
    "SELECT TABLE_NAME, COLUMN_NAME, COLUMN_TYPE, IS_NULLABLE, COLUMN_DEFAULT, EXTRA, "
    f"GENERATION_EXPRESSION FROM information_schema.COLUMNS WHERE {_HERE}"
)
_INDEXES = sa.text(
    "SELECT TABLE_NAME, INDEX_NAME, NON_UNIQUE, COLUMN_NAME, SUB_PART "
    f"FROM information_schema.STATISTICS WHERE {_HERE} "
    "ORDER BY TABLE_NAME, INDEX_NAME, SEQ_IN_INDEX"
)
# Two queries, joined here: in a join, MariaDB filters the second information_schema table
# only after opening the tables of every database on the server.
_FOREIGN_KEYS = sa.text(
    "SELECT TABLE_NAME, CONSTRAINT_NAME, COLUMN_NAME, REFERENCED_TABLE_NAME, "
    "REFERENCED_COLUMN_NAME FROM information_schema.KEY_COLUMN_USAGE "
    f"WHERE {_HERE} AND REFERENCED_TABLE_NAME IS NOT NULL ORDER BY ORDINAL_POSITION"
)
_ACTIONS = sa.text(
    "SELECT TABLE_NAME, CONSTRAINT_NAME, DELETE_RULE, UPDATE_RULE "
    "FROM information_schema.REFERENTIAL_CONSTRAINTS WHERE CONSTRAINT_SCHEMA = DATABASE()"
)
# MariaDB names checks per table and says which; MySQL 8 names them per schema.
_CHECKS_MARIADB = sa.text(
    "SELECT TABLE_NAME, CONSTRAINT_NAME, CHECK_CLAUSE FROM information_schema.CHECK_CONSTRAINTS "
    "WHERE CONSTRAINT_SCHEMA = DATABASE()"
)
_CHECKS_MYSQL = sa.text(
    "SELECT t.TABLE_NAME, c.CONSTRAINT_NAME, c.CHECK_CLAUSE "
    "FROM information_schema.CHECK_CONSTRAINTS c JOIN information_schema.TABLE_CONSTRAINTS t "
    "ON t.CONSTRAINT_SCHEMA = c.CONSTRAINT_SCHEMA AND t.CONSTRAINT_NAME = c.CONSTRAINT_NAME "
    "AND t.CONSTRAINT_TYPE = 'CHECK' "
    "WHERE c.CONSTRAINT_SCHEMA = DATABASE() AND t.TABLE_SCHEMA = DATABASE()"
)
_VIEWS = sa.text(
    f"SELECT TABLE_NAME, VIEW_DEFINITION, DATABASE() FROM information_schema.VIEWS WHERE {_HERE}"
)
_DEFAULT_ACTIONS = ("RESTRICT", "NO ACTION")
_SKIPPED_TABLE = 1684  # ER_WARN_I_S_SKIPPED_TABLE
ATTEMPTS = 5


class _Skipped(Exception):
    """information_schema left out a table that another session was altering."""


def read(conn: sa.Connection) -> Snapshot:
    for attempt in range(1, ATTEMPTS + 1):
        try:
            return _read(conn)
        except _Skipped as skipped:
            if attempt == ATTEMPTS:
                raise SchemaError(
                    f"could not read the schema: {skipped} in each of {ATTEMPTS} attempts; "
                    "run again when no other session is altering tables"
                ) from None
            time.sleep(0.05 * attempt)
    raise AssertionError("unreachable")


def _rows(conn: sa.Connection, query: sa.TextClause) -> list[Any]:
    rows = list(conn.execute(query))
    here = f"Table '{conn.engine.url.database}'."  # a skip elsewhere is not this schema's
    for _, code, message in conn.exec_driver_sql("SHOW WARNINGS"):
        if int(code) == _SKIPPED_TABLE and str(message).startswith(here):
            raise _Skipped(message)
    return rows


def _read(conn: sa.Connection) -> Snapshot:
    kinds: dict[str, str] = {name: kind for name, kind in _rows(conn, _TABLES)}
    names = {name for name, kind in kinds.items() if kind in ("BASE TABLE", "SYSTEM VERSIONED")}
    parts: dict[str, dict[str, list[Any]]] = defaultdict(lambda: defaultdict(list))
    for row in _rows(conn, _COLUMNS):
        parts[row[0]]["columns"].append(_column(*row[1:]))
    indexes: dict[tuple[str, str], list[Any]] = defaultdict(list)
    for table, index, non_unique, column, sub_part in _rows(conn, _INDEXES):
        shown = column if column is not None else "(expression)"
        indexes[table, index].append((f"{shown}({sub_part})" if sub_part else shown, non_unique))
    for (table, index), cols in indexes.items():
        if index == "PRIMARY":
            parts[table]["primary_key"] = [c for c, _ in cols]
        else:
            unique = not int(cols[0][1])
            parts[table]["indexes"].append(Index(index, tuple(c for c, _ in cols), unique))
    foreign: dict[tuple[str, str], list[Any]] = defaultdict(list)
    for table, name, *rest in _rows(conn, _FOREIGN_KEYS):
        foreign[table, name].append(rest)
    actions = {(table, name): rules for table, name, *rules in _rows(conn, _ACTIONS)}
    for (table, name), rows in foreign.items():
        parts[table]["foreign_keys"].append(
            _foreign_key(name, rows, actions.get((table, name), ["RESTRICT"] * 2))
        )
    mariadb = bool(getattr(conn.dialect, "is_mariadb", False))
    for table, name, clause in _rows(conn, _CHECKS_MARIADB if mariadb else _CHECKS_MYSQL):
        parts[table]["checks"].append(Check(unwrap(squeeze(clause)), name))
    views = tuple(View(name, _view_text(text, db)) for name, text, db in _rows(conn, _VIEWS))
    return Snapshot(
        dialect=conn.dialect.name,
        tables=tuple(_table(name, parts[name]) for name in names),
        views=views,
        sequences=tuple(name for name, kind in kinds.items() if kind == "SEQUENCE"),
    )


def _table(name: str, part: dict[str, list[Any]]) -> Table:
    return Table(
        name=name,
        columns=tuple(part["columns"]),
        primary_key=tuple(part["primary_key"]),
        indexes=tuple(part["indexes"]),
        foreign_keys=tuple(part["foreign_keys"]),
        checks=tuple(part["checks"]),
    )


def _column(
    name: str, type_: str, nullable: str, default: str | None, extra: str, generated: str | None
) -> Column:
    extra = squeeze(extra or "")
    if default is not None and default.upper() == "NULL":
        default = None
    on_update = extra.lower().find("on update ")
    if on_update >= 0:
        default = f"{default or 'NULL'} {extra[on_update:].upper()}"
    return Column(
        name=name,
        type=squeeze(type_).upper(),
        nullable=nullable == "YES",
        default=default,
        autoincrement="auto_increment" in extra.lower(),
        generated=unwrap(squeeze(generated)) if generated else None,
    )


def _foreign_key(name: str, rows: list[Any], actions: list[str]) -> ForeignKey:
    on_delete, on_update = actions
    return ForeignKey(
        columns=tuple(r[0] for r in rows),
        referred_table=rows[0][1],
        referred_columns=tuple(r[2] for r in rows),
        ondelete=action(on_delete, default=_DEFAULT_ACTIONS),
        onupdate=action(on_update, default=_DEFAULT_ACTIONS),
        name=name,
    )


def _view_text(text: str, database: str) -> str:
    return squeeze(text.replace(f"`{database}`.", ""))


_OBJECTS = sa.text(
    "SELECT IF(TABLE_TYPE = 'VIEW', 'VIEW', IF(TABLE_TYPE = 'SEQUENCE', 'SEQUENCE', 'TABLE')), "
    "TABLE_NAME FROM information_schema.TABLES WHERE TABLE_SCHEMA = DATABASE() "
    "ORDER BY TABLE_TYPE = 'VIEW' DESC, TABLE_NAME"
)


def drop_everything(conn: sa.Connection) -> list[str]:
    found = [(kind, name) for kind, name in conn.execute(_OBJECTS)]
    conn.execute(sa.text("SET FOREIGN_KEY_CHECKS = 0"))  # this session only
    try:
        return drop_in_order(conn, found)
    finally:
        conn.execute(sa.text("SET FOREIGN_KEY_CHECKS = 1"))
