"""PostgreSQL's schema reader: the inspector's multi-table calls, plus what only PostgreSQL
has (enum types, sequences, extensions), and views in one query.

Defaults lose the casts the catalog adds (``'pending'::character varying`` reads
``'pending'``). A constant number of queries, however many tables and views.
"""

from __future__ import annotations

import re
from typing import Any

import sqlalchemy as sa

from rung.dialects.reflection import drop_in_order, inspector_tables, squeeze
from rung.schema import EnumType, Snapshot, View

_VIEWS = sa.text(
    "SELECT c.relname, pg_get_viewdef(c.oid, true) FROM pg_class c "
    "JOIN pg_namespace n ON n.oid = c.relnamespace "
    "WHERE n.nspname = current_schema() AND c.relkind IN ('v', 'm')"
)
_EXTENSIONS = sa.text("SELECT extname FROM pg_extension")

# A cast after a string literal: 'pending'::character varying, 'x'::regclass, 'a'::text[]
_LITERAL_CAST = re.compile(r"('(?:[^']|'')*')::[a-z_][a-z0-9_ ]*?(?:\[\])?(?=[),]|\s*$)")


def read(conn: sa.Connection) -> Snapshot:
    inspector: Any = sa.inspect(conn)
    return Snapshot(
        dialect=conn.dialect.name,
        tables=inspector_tables(conn, inspector, default_text),
        views=tuple(View(name, squeeze(text)) for name, text in conn.execute(_VIEWS)),
        enums=tuple(EnumType(e["name"], tuple(e["labels"])) for e in inspector.get_enums()),
        sequences=tuple(inspector.get_sequence_names()),
        extensions=tuple(row[0] for row in conn.execute(_EXTENSIONS)),
    )


def default_text(text: str) -> str:
    return _LITERAL_CAST.sub(r"\1", text)


# What ``rung fresh`` drops, in this order, from the current schema; objects that belong to
# an extension go with it.
_OBJECTS = sa.text(
    "SELECT kind, name FROM ("
    "SELECT CASE c.relkind WHEN 'v' THEN 1 WHEN 'm' THEN 2 WHEN 'S' THEN 4 ELSE 3 END AS rank, "
    "CASE c.relkind WHEN 'v' THEN 'VIEW' WHEN 'm' THEN 'MATERIALIZED VIEW' "
    "WHEN 'S' THEN 'SEQUENCE' ELSE 'TABLE' END AS kind, c.relname AS name, c.oid AS oid "
    "FROM pg_class c WHERE c.relnamespace = current_schema()::regnamespace "
    "AND c.relkind IN ('r', 'p', 'v', 'm', 'S', 'f') AND NOT c.relispartition "
    "UNION ALL SELECT 5, CASE t.typtype WHEN 'd' THEN 'DOMAIN' ELSE 'TYPE' END, t.typname, t.oid "
    "FROM pg_type t WHERE t.typnamespace = current_schema()::regnamespace "
    "AND t.typtype IN ('e', 'd', 'r') "
    "UNION ALL SELECT 6, 'EXTENSION', e.extname, e.oid FROM pg_extension e "
    "WHERE e.extnamespace = current_schema()::regnamespace"
    ") o WHERE NOT EXISTS (SELECT 1 FROM pg_depend d WHERE d.objid = o.oid AND d.deptype = 'e') "
    "ORDER BY rank, name"
)


def drop_everything(conn: sa.Connection) -> list[str]:
    found = [(kind, name) for kind, name in conn.execute(_OBJECTS)]
    return drop_in_order(conn, found, " CASCADE")
