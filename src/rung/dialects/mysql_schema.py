"""MySQL's and MariaDB's schema reader and ``rung fresh``'s drop: a dozen
``information_schema`` queries for the whole database (``mysql_catalog``), because
SQLAlchemy's MySQL dialect reflects one ``SHOW CREATE TABLE`` per table.

Normalised: types as ``COLUMN_TYPE`` writes them, upper-cased outside quotes (``INT(11)``,
``ENUM('Sad','happy')``: an ENUM's labels keep their case); a ``NULL`` default is no
default; ``ON UPDATE`` joins the default; RESTRICT is the default referential action
(InnoDB treats NO ACTION the same); a unique key is a unique index (MySQL has no other
kind); a table's collation is named where it differs from the database's default, a
column's where it differs from its table's, so that a scratch database on a server with
another default compares equal; a constraint name MariaDB numbered (``CONSTRAINT_1``,
``t_ibfk_1``) is no name, because dropping and re-making the constraint moves the number;
definitions (views, triggers, routines) lose the database name MariaDB writes into them.
A routine's or view's definer is not read: it is who ran the migration, not the schema.

``information_schema`` does not wait for a table whose definition another session is
changing: it skips it with warning 1684, and a snapshot would silently miss the table. Each
query is followed by ``SHOW WARNINGS``; a skip reads the whole schema again, a few times.
"""

from __future__ import annotations

import re
import time
from collections import defaultdict
from collections.abc import Callable
from typing import Any, TypeVar

import sqlalchemy as sa

from rung.dialects import mysql_catalog as q
from rung.dialects.base import digest
from rung.dialects.reflection import action, drop_each, squeeze, unwrap
from rung.errors import SchemaError
from rung.schema import (
    Check,
    Column,
    ForeignKey,
    Index,
    Routine,
    SequenceDef,
    Snapshot,
    Table,
    Trigger,
    View,
)

_DEFAULT_ACTIONS = ("RESTRICT", "NO ACTION")
# Names MariaDB makes from a counter, which a drop and re-create moves on: left out.
_COUNTED_NAME = re.compile(r"CONSTRAINT_\d+|.+_ibfk_\d+")
_SKIPPED_TABLE = 1684  # ER_WARN_I_S_SKIPPED_TABLE
ATTEMPTS = 5
T = TypeVar("T")


class _Skipped(Exception):
    """information_schema left out a table that another session was altering."""


def read(conn: sa.Connection) -> Snapshot:
    return _build(conn, _fetched(conn))


def fingerprint(conn: sa.Connection) -> str:
    """The rows ``read`` builds its snapshot from, in the order it gets them, without
    building it: equal rows give equal snapshots."""
    return digest(_fetched(conn))


def _fetched(conn: sa.Connection) -> dict[str, list[Any]]:
    return read_retrying(conn, _fetch)


def read_retrying(conn: sa.Connection, fetch: Callable[[sa.Connection], T]) -> T:
    """``fetch(conn)``, again while ``information_schema`` skips a table that another
    session is altering (``rows`` says so)."""
    for attempt in range(1, ATTEMPTS + 1):
        try:
            return fetch(conn)
        except _Skipped as skipped:
            if attempt == ATTEMPTS:
                raise SchemaError(
                    f"could not read the schema: {skipped} in each of {ATTEMPTS} attempts; "
                    "run again when no other session is altering tables"
                ) from None
            time.sleep(0.05 * attempt)
    raise AssertionError("unreachable")


def checked_rows(conn: sa.Connection, query: sa.TextClause) -> list[Any]:
    """``query``'s rows; raises when ``information_schema`` skipped one of this schema's
    tables (another session was altering it)."""
    found = [tuple(row) for row in conn.execute(query)]
    here = f"Table '{conn.engine.url.database}'."  # a skip elsewhere is not this schema's
    for _, code, message in conn.exec_driver_sql("SHOW WARNINGS"):
        if int(code) == _SKIPPED_TABLE and str(message).startswith(here):
            raise _Skipped(message)
    return found


def _fetch(conn: sa.Connection) -> dict[str, list[Any]]:
    """Every row ``read`` uses, by query."""
    mariadb = bool(getattr(conn.dialect, "is_mariadb", False))
    rows = {
        "tables": checked_rows(conn, q.TABLES),
        "columns": checked_rows(conn, q.COLUMNS),
        "indexes": checked_rows(conn, q.INDEXES),
        "foreign_keys": checked_rows(conn, q.FOREIGN_KEYS),
        "actions": checked_rows(conn, q.ACTIONS),
        "checks": checked_rows(conn, q.CHECKS_MARIADB if mariadb else q.CHECKS_MYSQL),
        "database": [conn.exec_driver_sql("SELECT DATABASE()").scalar()],
        "views": checked_rows(conn, q.VIEWS),
        "triggers": checked_rows(conn, q.TRIGGERS),
        # Routines are rows of mysql.proc: no table is opened, none can be skipped.
        "parameters": [tuple(row) for row in conn.execute(q.PARAMETERS)],
        "routines": [tuple(row) for row in conn.execute(q.ROUTINES)],
    }
    sequences = [name for name, kind, *_ in rows["tables"] if kind == "SEQUENCE"]
    rows["sequences"] = checked_rows(conn, sequences_query(conn, sequences)) if sequences else []
    return rows


def _build(conn: sa.Connection, rows: dict[str, list[Any]]) -> Snapshot:
    tables: dict[str, dict[str, Any]] = {}
    sequences: list[str] = []
    collations: dict[str, str] = {}
    for name, kind, engine, collation, options, comment, default in rows["tables"]:
        if kind in ("BASE TABLE", "SYSTEM VERSIONED"):
            collations[name] = collation
            tables[name] = {
                "name": name,
                "options": _table_options(kind, engine, collation, options, default),
                "comment": comment or None,
            }
        elif kind == "SEQUENCE":
            sequences.append(name)
    parts: dict[str, dict[str, list[Any]]] = defaultdict(lambda: defaultdict(list))
    for table, *column in rows["columns"]:
        if table in tables:
            parts[table]["columns"].append(_column(*column, table_collation=collations[table]))
    _indexes(rows["indexes"], tables, parts)
    foreign: dict[tuple[str, str], list[Any]] = defaultdict(list)
    for table, name, *rest in rows["foreign_keys"]:
        foreign[table, name].append(rest)
    actions = {(table, name): rules for table, name, *rules in rows["actions"]}
    for (table, name), found in foreign.items():
        parts[table]["foreign_keys"].append(
            _foreign_key(name, found, actions.get((table, name), ["RESTRICT"] * 2))
        )
    for table, name, clause in rows["checks"]:
        parts[table]["checks"].append(Check(unwrap(squeeze(clause)), _given(name)))
    database = str(rows["database"][0])
    return Snapshot(
        dialect=conn.dialect.name,
        tables=tuple(Table(**t, **_lists(parts[name])) for name, t in tables.items()),
        views=tuple(_view(*row, database=database) for row in rows["views"]),
        sequences=_sequences(sequences, rows["sequences"]),
        triggers=tuple(_trigger(*row, database=database) for row in rows["triggers"]),
        routines=_routines(rows["parameters"], rows["routines"], database),
    )


def drop_everything(conn: sa.Connection) -> list[str]:
    """For ``rung fresh``: the database's views, tables (with their triggers), sequences,
    functions, procedures and events; foreign key checks are off meanwhile, in this session."""
    quote = conn.dialect.identifier_preparer.quote
    rank = {"VIEW": 0, "TABLE": 1, "SEQUENCE": 2, "FUNCTION": 3, "PROCEDURE": 4, "EVENT": 5}
    found = sorted(conn.execute(q.DROPS), key=lambda row: (rank[row[0]], row[1]))
    conn.exec_driver_sql("SET FOREIGN_KEY_CHECKS = 0")
    try:
        return drop_each(conn, [(kind, quote(name)) for kind, name in found])
    finally:
        conn.exec_driver_sql("SET FOREIGN_KEY_CHECKS = 1")


def _lists(part: dict[str, list[Any]]) -> dict[str, Any]:
    return {"columns": (), **{kind: tuple(items) for kind, items in part.items()}}


def _table_options(
    kind: str, engine: str, collation: str, options: str | None, database_collation: str
) -> tuple[str, ...]:
    found = [f"ENGINE={engine}"]
    if collation != database_collation:
        found.append(f"COLLATE={collation}")
    if options:
        found.append(squeeze(options))
    if kind == "SYSTEM VERSIONED":
        found.append("WITH SYSTEM VERSIONING")
    return tuple(found)


def _column(
    name: str,
    type_: str,
    nullable: str,
    default: str | None,
    extra: str,
    generated: str | None,
    collation: str | None,
    comment: str | None,
    *,
    table_collation: str,
) -> Column:
    extra = squeeze(extra or "")
    flags = extra.upper()
    if default is not None and default.upper() == "NULL":
        default = None
    on_update = flags.find("ON UPDATE ")
    if on_update >= 0:
        default = f"{default or 'NULL'} {extra[on_update:].upper()}"
    return Column(
        name=name,
        type=_upper_outside_quotes(squeeze(type_)),
        nullable=nullable == "YES",
        default=default,
        autoincrement="AUTO_INCREMENT" in flags,
        generated=unwrap(squeeze(generated)) if generated else None,
        generated_kind=("VIRTUAL" if "VIRTUAL" in flags else "STORED") if generated else None,
        collation=collation if collation and collation != table_collation else None,
        comment=comment or None,
        invisible="INVISIBLE" in flags,
    )


def _indexes(
    rows: list[Any], tables: dict[str, dict[str, Any]], parts: dict[str, dict[str, list[Any]]]
) -> None:
    keys: dict[tuple[str, str], list[str]] = defaultdict(list)
    kinds: dict[tuple[str, str], tuple[bool, str, str]] = {}
    for table, index, non_unique, column, sub_part, order, method, comment in rows:
        key = column if column is not None else "(expression)"
        key = f"{key}({sub_part})" if sub_part else key
        keys[table, index].append(f"{key} DESC" if order == "D" else key)
        kinds[table, index] = (not int(non_unique), method, comment)
    for (table, index), columns in keys.items():
        if table not in tables:
            continue
        if index == "PRIMARY":
            tables[table]["primary_key"] = tuple(c.removesuffix(" DESC") for c in columns)
            continue
        unique, method, comment = kinds[table, index]
        parts[table]["indexes"].append(
            Index(
                index,
                tuple(columns),
                unique,
                method=None if method == "BTREE" else method,
                options=f"COMMENT {comment!r}" if comment else None,
            )
        )


def _foreign_key(name: str, rows: list[Any], actions: list[str]) -> ForeignKey:
    on_delete, on_update = actions
    return ForeignKey(
        columns=tuple(r[0] for r in rows),
        referred_table=rows[0][1],
        referred_columns=tuple(r[2] for r in rows),
        ondelete=action(on_delete, default=_DEFAULT_ACTIONS),
        onupdate=action(on_update, default=_DEFAULT_ACTIONS),
        name=_given(name),
    )


def _given(name: str) -> str | None:
    """A constraint's name, None when MariaDB numbered it (``CONSTRAINT_1``, ``t_ibfk_1``):
    such a name changes when a constraint is dropped and made again, the constraint not."""
    return None if _COUNTED_NAME.fullmatch(name) else name


def _view(name: str, text: str, check: str, security: str, *, database: str) -> View:
    options = (
        f"WITH {check} CHECK OPTION" if check and check != "NONE" else "",
        f"SQL SECURITY {security}" if security and security != "DEFINER" else "",
    )
    return View(name, _local(text, database), options=tuple(o for o in options if o))


def _trigger(
    table: str,
    name: str,
    timing: str,
    event: str,
    orientation: str,
    order: int,
    statement: str,
    *,
    database: str,
) -> Trigger:
    place = f" ORDER {order}" if order and int(order) > 1 else ""
    text = f"{timing} {event} FOR EACH {orientation}{place} {_local(statement, database)}"
    return Trigger(table, name, text)


def _routines(
    parameter_rows: list[Any], routine_rows: list[Any], database: str
) -> tuple[Routine, ...]:
    parameters: dict[tuple[str, str], list[str]] = defaultdict(list)
    for kind, name, mode, parameter, type_ in parameter_rows:
        shown = f"{parameter} {_upper_outside_quotes(type_)}"
        parameters[kind, name].append(f"{mode} {shown}" if kind == "PROCEDURE" else shown)
    found = []
    for kind, name, returns, deterministic, access, security, comment, body in routine_rows:
        parts = [
            f"({', '.join(parameters[kind, name])})",
            f"RETURNS {_upper_outside_quotes(returns)}" if returns else "",
            "DETERMINISTIC" if deterministic == "YES" else "NOT DETERMINISTIC",
            access,
            f"SQL SECURITY {security}",
            f"COMMENT {comment!r}" if comment else "",
            _local(body or "", database),
        ]
        found.append(Routine(kind.lower(), name, " ".join(p for p in parts if p)))
    return tuple(found)


def sequences_query(conn: sa.Connection, names: list[str]) -> sa.TextClause:
    """Every sequence's definition, in one statement."""
    quote = conn.dialect.identifier_preparer.quote
    return sa.text(
        " UNION ALL ".join(
            q.SEQUENCE.format(name=i, table=quote(n).replace(":", "\\:"))
            for i, n in enumerate(names)
        )
    )


def _sequences(names: list[str], rows: list[Any]) -> tuple[SequenceDef, ...]:
    found = []
    for i, start, increment, minimum, maximum, cache, cycle in rows:
        found.append(
            SequenceDef(
                names[int(i)],
                None,
                int(start),
                int(increment),
                int(minimum),
                int(maximum),
                int(cache),
                bool(cycle),
            )
        )
    return tuple(found)


def _local(text: str, database: str) -> str:
    """Without the database's name, which MariaDB writes into a view's definition: a
    scratch copy of the schema compares equal."""
    return squeeze(text.replace(f"`{database}`.", ""))


def _upper_outside_quotes(text: str) -> str:
    """Upper case, but an ENUM's or SET's labels as they are: ``enum('Sad','happy')``."""
    return "".join(
        part if part.startswith("'") else part.upper()
        for part in re.split(r"('(?:[^'\\]|''|\\.)*')", text)
    )
