"""Reading a database's schema into a ``rung.schema.Snapshot``: the lookup of each
backend's reader, the inspector-based reader for any other backend, and the text helpers
the readers share.

A reader is a plain function ``(sync Connection) -> Snapshot``, run through
``AsyncConnection.run_sync``. Its contract: a number of queries that does not grow with the
number of tables, and normalised text (types, defaults, check clauses, definitions) so
that two databases made by the same migrations give equal snapshots on the same backend.
SQLite, PostgreSQL and MySQL/MariaDB have their own module in ``READERS``, imported on first
use, which read the catalog with their own queries (docs/schema-coverage.md says what each
sees); ``read_with_inspector`` uses SQLAlchemy's multi-object reflection calls and serves a
backend without one.
"""

from __future__ import annotations

import importlib
import re
import warnings
from collections.abc import Callable, Sequence
from typing import Any, cast

import sqlalchemy as sa

from rung.schema import Check, Column, ForeignKey, Index, Snapshot, Table, Unique, View

Reader = Callable[[sa.Connection], Snapshot]

# SQLAlchemy dialect name -> module with ``read(conn) -> Snapshot``.
READERS: dict[str, str] = {
    "postgresql": "rung.dialects.postgresql_schema",
    "mysql": "rung.dialects.mysql_schema",
    "mariadb": "rung.dialects.mysql_schema",
    "sqlite": "rung.dialects.sqlite_schema",
}


def reader_for(dialect_name: str) -> Reader:
    module = READERS.get(dialect_name)
    if module is None:
        return read_with_inspector
    return cast(Reader, importlib.import_module(module).read)


def read_with_inspector(conn: sa.Connection) -> Snapshot:
    """Tables through the inspector's ``get_multi_*`` calls, views one by one."""
    inspector = sa.inspect(conn)
    views = tuple(
        View(name, squeeze(inspector.get_view_definition(name)))
        for name in inspector.get_view_names()
    )
    return Snapshot(conn.dialect.name, inspector_tables(conn, inspector), views)


def inspector_tables(
    conn: sa.Connection,
    inspector: sa.Inspector,
    default_text: Callable[[str], str] = lambda text: text,
) -> tuple[Table, ...]:
    """Every table of the default schema, read with six queries-per-kind calls;
    ``default_text`` normalises a reflected column default."""
    with warnings.catch_warnings():  # an unknown column type reads as UNKNOWN
        warnings.filterwarnings("ignore", "Did not recognize type", sa.exc.SAWarning)
        columns = inspector.get_multi_columns()
    pks = inspector.get_multi_pk_constraint()
    fks = inspector.get_multi_foreign_keys()
    indexes = inspector.get_multi_indexes()
    uniques = inspector.get_multi_unique_constraints()
    checks = inspector.get_multi_check_constraints()
    tables = []
    for key, cols in columns.items():
        pk = pks.get(key)
        tables.append(
            Table(
                name=key[1],
                columns=tuple(_column(c, conn.dialect, default_text) for c in cols),
                primary_key=tuple(pk["constrained_columns"] if pk else ()),
                indexes=tuple(_index(i) for i in indexes.get(key, []) if _own_index(i)),
                foreign_keys=tuple(_foreign_key(f) for f in fks.get(key, [])),
                uniques=tuple(
                    Unique(tuple(u["column_names"]), u["name"]) for u in uniques.get(key, [])
                ),
                checks=tuple(
                    Check(unwrap(squeeze(c["sqltext"])), c["name"]) for c in checks.get(key, [])
                ),
            )
        )
    return tuple(tables)


def _column(col: Any, dialect: sa.Dialect, default_text: Callable[[str], str]) -> Column:
    default = col.get("default")
    computed = col.get("computed")
    return Column(
        name=col["name"],
        type=type_text(col["type"], dialect),
        nullable=bool(col["nullable"]),
        default=None if default is None else default_text(unwrap(squeeze(default))),
        autoincrement=col.get("autoincrement") is True or bool(col.get("identity")),
        generated=unwrap(squeeze(computed["sqltext"])) if computed else None,
    )


def _own_index(index: Any) -> bool:
    """False for the index behind a unique constraint: the constraint is reported instead."""
    return "duplicates_constraint" not in index


def _index(index: Any) -> Index:
    expressions = index.get("expressions") or index["column_names"]
    return Index(index["name"], tuple(squeeze(str(e)) for e in expressions), bool(index["unique"]))


def _foreign_key(fk: Any) -> ForeignKey:
    options = fk.get("options") or {}
    return ForeignKey(
        columns=tuple(fk["constrained_columns"]),
        referred_table=fk["referred_table"],
        referred_columns=tuple(fk["referred_columns"]),
        ondelete=action(options.get("ondelete")),
        onupdate=action(options.get("onupdate")),
        name=fk["name"],
    )


def type_text(type_: sa.types.TypeEngine[Any], dialect: sa.Dialect) -> str:
    """The type as the backend writes it in DDL, e.g. ``VARCHAR(36)``."""
    if isinstance(type_, sa.types.NullType):
        return "UNKNOWN"
    try:
        return squeeze(type_.compile(dialect=dialect))
    except sa.exc.CompileError:
        return squeeze(str(type_)).upper()


def action(rule: str | None, *, default: tuple[str, ...] = ("NO ACTION",)) -> str | None:
    """A referential action, None when it is the database's default behaviour."""
    if rule is None:
        return None
    rule = squeeze(rule).upper()
    return None if rule in default else rule


_WHITESPACE = re.compile(r"\s+")
_LAID_OUT = re.compile(r"\s\s|[^\S ]")  # two whitespace characters, or one not a space


def squeeze(text: str) -> str:
    """Whitespace runs as one space, outside of quoted strings too (a catalog's own layout)."""
    if _LAID_OUT.search(text) is None:  # most names and types: nothing to do
        return text.strip()
    return _WHITESPACE.sub(" ", text).strip()


def unwrap(text: str) -> str:
    """Without parentheses around the whole expression: ``((a > 0))`` -> ``a > 0``."""
    while text.startswith("(") and text.endswith(")") and _closes_at_end(text):
        text = text[1:-1].strip()
    return text


_PAREN_OR_QUOTED = re.compile(r'"(?:[^"]|"")*"|\'(?:[^\']|\'\')*\'|`(?:[^`]|``)*`|\[[^\]]*\]|[()]')


def closing(sql: str, start: int) -> int | None:
    """Where the parenthesis opened at ``start`` closes, quotes skipped; None if it never does."""
    depth = 0
    for token in _PAREN_OR_QUOTED.finditer(sql, start):
        depth += {"(": 1, ")": -1}.get(token[0], 0)
        if depth == 0:
            return token.start()
    return None


def split_top(text: str, separator: str = ",") -> list[str]:
    """``text`` split at each ``separator`` outside parentheses and quotes, parts squeezed."""
    parts, depth, begin = [], 0, 0
    for token in re.finditer(
        rf'"(?:[^"]|"")*"|\'(?:[^\']|\'\')*\'|`(?:[^`]|``)*`|[(){re.escape(separator)}]', text
    ):
        char = token[0]
        if char == "(":
            depth += 1
        elif char == ")":
            depth -= 1
        elif char == separator and depth == 0:
            parts.append(text[begin : token.start()])
            begin = token.end()
    parts.append(text[begin:])
    return [squeeze(p) for p in parts if p.strip()]


def drop_each(
    conn: sa.Connection, found: Sequence[tuple[str, str]], cascade: str = ""
) -> list[str]:
    """For ``rung fresh``: drop each ``(kind, quoted name)`` if it still exists (an earlier
    CASCADE may have taken it); ``"<kind> <name>"`` for each, as ``drop_everything`` returns."""
    for kind, name in found:
        conn.exec_driver_sql(f"DROP {kind} IF EXISTS {name}{cascade}")
    return [f"{kind.lower()} {name}" for kind, name in found]


def _closes_at_end(text: str) -> bool:
    depth, quoted = 0, False
    for i, char in enumerate(text):
        if char == "'":
            quoted = not quoted
        elif not quoted and char in "()":
            depth += 1 if char == "(" else -1
            if depth == 0 and i < len(text) - 1:
                return False
    return depth == 0
