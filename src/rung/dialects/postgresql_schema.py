"""PostgreSQL's schema reader: the inspector's multi-table calls, plus what only PostgreSQL
has (enum types, sequences, extensions), and views in one query.

Defaults lose the casts the catalog adds (``'pending'::character varying`` reads
``'pending'``). A constant number of queries, however many tables and views.
"""

from __future__ import annotations

import re
from typing import Any

import sqlalchemy as sa

from rung.dialects.reflection import inspector_tables, squeeze
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
