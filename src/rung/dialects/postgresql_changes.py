"""PostgreSQL's schema fingerprint for ``verify``, kept up to date by reading again only
what changed since the last one.

The first fingerprint reads every row of the reader's queries (``postgresql_catalog``)
and keeps them by relation: a relation's part is the rows of it, its columns, constraints,
indexes, triggers and policies (a sequence's, its own row); every other kind of object is
one more part. After that, one query (``SCAN``) asks each catalog the reader depends on
for the row versions written since the last fingerprint (an ``xmin`` no older than the
next transaction id then, or one of the transactions then still running: every row a
fingerprint has not seen has one of those) and for the number of its rows that can be
deleted on their own, which tells whether any was. A transaction left open elsewhere on
the server does not make it read more. Only the relations those rows belong to are read
again, by the same queries limited to their ids.

Everything is read again instead when what changed is not a relation's own (a type, a
routine, a schema, an extension, ...), when a relation that was there is named otherwise
or has a column named otherwise (the text of other relations' foreign keys, views and
defaults names them, and their rows did not change), when a relation left the schemas
read without being dropped, or when the ``search_path`` changed.

Equal fingerprints mean equal parts, as two full reads would give: the fingerprint sums
a hash of each part, and a part read again replaces the old one as a whole.

Not seen, as the reader needs none of it: rows of PostgreSQL's own objects (ids below
16384, which no migration makes) and of the cluster's shared catalogs (a role renamed
under a policy); updates made in place, which write no new row version (VACUUM's and
ANALYZE's statistics, an index's validity flags).
"""

from __future__ import annotations

import json
from collections import defaultdict
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import sqlalchemy as sa

from rung.dialects import postgresql_catalog as q
from rung.dialects.base import digest

# A row is new when its xmin is not older than $1 (the next transaction id at the last
# fingerprint; age() compares ids across wraparound), or is in $2 (those running then, when
# there were any: the test costs 1 ms at 1,000 tables).
_NEW = "age(x.xmin) <= (SELECT age(($1::bigint % 4294967296)::text::xid))"
_RUNNING = " OR x.xmin = ANY(ARRAY(SELECT unnest($2::text[]::xid[])))"

# What a catalog row belongs to: a relation's id (it is read again), 0 (nothing the
# reader reads, or a part of something another row changed too) or -1 (read everything).
_RELATION = (
    "CASE WHEN {r}.relnamespace = 'pg_toast'::regnamespace THEN 0 "  # toast tables, indexes
    "WHEN {r}.relkind IN ('r', 'p', 'v', 'm', 'S') THEN {r}.oid::bigint "
    "WHEN {r}.relkind IN ('i', 'I') THEN coalesce((SELECT ix.indrelid::bigint FROM pg_index ix "
    "WHERE ix.indexrelid = {r}.oid), -1) WHEN {r}.relkind = 't' THEN 0 ELSE -1 END"
)


def _relation_of(oid: str) -> str:
    return f"coalesce((SELECT {_RELATION.format(r='r')} FROM pg_class r WHERE r.oid = {oid}), -1)"


_IN_PG_CLASS = "'pg_class'::regclass"


@dataclass(frozen=True)
class _Catalog:
    """A catalog's rows of objects made after initdb (``rows``: PostgreSQL's own do not
    change). ``tracked``: those that can be deleted while nothing else changes, counted
    each time and listed by ``key`` when the count says one was."""

    tag: str
    table: str
    key: str
    owner: str
    rows: str = "x.oid >= 16384"  # FirstNormalObjectId
    tracked: str = "false"


_CATALOGS = (
    _Catalog(
        "class", "pg_class", "x.oid::text", _RELATION.format(r="x"), tracked="x.relkind <> 't'"
    ),
    _Catalog(
        "attribute", "pg_attribute", "NULL::text", _relation_of("x.attrelid"), "x.attrelid >= 16384"
    ),
    _Catalog("attrdef", "pg_attrdef", "x.oid::text", "x.adrelid::bigint", tracked="true"),
    _Catalog(
        "constraint",
        "pg_constraint",
        "x.oid::text",
        "CASE WHEN x.conrelid <> 0 THEN x.conrelid::bigint ELSE -1 END",
        tracked="true",
    ),
    _Catalog(
        "index", "pg_index", "NULL::text", _relation_of("x.indrelid"), "x.indexrelid >= 16384"
    ),
    _Catalog("trigger", "pg_trigger", "x.oid::text", "x.tgrelid::bigint", tracked="true"),
    _Catalog("policy", "pg_policy", "x.oid::text", "x.polrelid::bigint", tracked="true"),
    _Catalog("rewrite", "pg_rewrite", "x.oid::text", "x.ev_class::bigint", tracked="true"),
    _Catalog(
        "description",
        "pg_description",
        "concat_ws(',', x.objoid, x.objsubid)",
        f"CASE WHEN x.classoid = {_IN_PG_CLASS} THEN x.objoid::bigint ELSE 0 END",
        "x.objoid >= 16384",
        f"x.classoid = {_IN_PG_CLASS}",
    ),
    _Catalog(
        "inherits",
        "pg_inherits",
        "concat_ws(',', x.inhrelid, x.inhparent)",
        "x.inhrelid::bigint",
        "true",
        "true",
    ),
    _Catalog("sequence", "pg_sequence", "NULL::text", "x.seqrelid::bigint", "true"),
    _Catalog(
        "partitioned table", "pg_partitioned_table", "NULL::text", "x.partrelid::bigint", "true"
    ),
    # what the reader takes from dependencies: extension members ('e', left out), and a
    # sequence's owning column ('a', 'i')
    _Catalog(
        "depend",
        "pg_depend",
        "concat_ws(',', x.classid, x.objid, x.objsubid, x.refclassid, x.refobjid, "
        "x.refobjsubid, x.deptype)",
        f"CASE WHEN x.deptype = 'e' THEN -1 WHEN x.classid = {_IN_PG_CLASS} "
        f"AND x.deptype IN ('a', 'i') THEN {_relation_of('x.objid')} ELSE 0 END",
        "x.objid >= 16384",
        f"x.deptype = 'e' OR (x.classid = {_IN_PG_CLASS} AND x.deptype IN ('a', 'i'))",
    ),
    # a relation's row type and an array type change with what they are made for
    _Catalog(
        "type",
        "pg_type",
        "x.oid::text",
        "CASE WHEN x.typtype = 'c' AND coalesce((SELECT relkind FROM pg_class "
        "WHERE oid = x.typrelid), 'c') <> 'c' THEN 0 "
        "WHEN x.typtype = 'b' AND x.typelem <> 0 THEN 0 ELSE -1 END",
        tracked="x.typtype NOT IN ('b', 'c')",
    ),
    *(
        _Catalog(name, f"pg_{name}", "x.oid::text", "-1::bigint", rows, "true")
        for name, rows in (
            ("namespace", "true"),  # 'public' is older
            ("extension", "true"),
            ("proc", "x.oid >= 16384"),
            ("collation", "x.oid >= 16384"),
            ("opclass", "x.oid >= 16384"),
            ("operator", "x.oid >= 16384"),
            ("language", "x.oid >= 16384"),
            ("am", "x.oid >= 16384"),
        )
    ),
    # deleted only with the type or routine they belong to
    _Catalog("aggregate", "pg_aggregate", "NULL::text", "-1::bigint", "x.aggfnoid >= 16384"),
    _Catalog("enum", "pg_enum", "NULL::text", "-1::bigint"),
    _Catalog("range", "pg_range", "NULL::text", "-1::bigint", "x.rngtypid >= 16384"),
)
_TRACKED = tuple(c.tag for c in _CATALOGS if c.tracked != "false")

HEAD = (
    "SELECT 'horizon', txid_snapshot_xmax(s), ARRAY[current_setting('search_path')] || "
    "ARRAY(SELECT (x % 4294967296)::text FROM txid_snapshot_xip(s) x), "
    "NULL::bigint[], NULL::boolean[] FROM txid_current_snapshot() s"
)


def _scan(new: str) -> str:
    return " UNION ALL ".join(
        [
            HEAD,
            *(
                f"SELECT '{c.tag}', count(*) FILTER (WHERE {c.tracked}), "
                f"array_agg({c.key}) FILTER (WHERE {new}), "
                f"array_agg({c.owner}) FILTER (WHERE {new}), "
                f"array_agg({c.tracked}) FILTER (WHERE {new}) "
                f"FROM {c.table} x WHERE {c.rows}"
                for c in _CATALOGS
            ),
        ]
    )


SCAN, SCAN_RUNNING = _scan(_NEW), _scan(_NEW + _RUNNING)


def _keys(owners: bool) -> str:
    """The keys of tracked rows of the catalogs named in $1 (and what each belongs to)."""
    return " UNION ALL ".join(
        f"SELECT '{c.tag}', array_agg({c.key}), "
        f"{f'array_agg({c.owner})' if owners else 'NULL::bigint[]'} FROM {c.table} x "
        f"WHERE '{c.tag}' = ANY($1::text[]) AND {c.rows} AND ({c.tracked})"
        for c in _CATALOGS
        if c.tag in _TRACKED
    )


OWNED_KEYS = _keys(owners=True)
KEYS = _keys(owners=False)  # a deleted row's owner is known: it was a tracked row


def _parts_query(only: bool) -> str:
    """One query for the rows of every part (of the relations in $1, with ``only``): kind,
    owner, the row as JSON (its first value is the owner's id, which the part leaves
    out); and each relation's qualified name and column names (views' too), which other
    relations' text may name."""
    branches = [
        ("relation", "oid", q.RELATIONS_OF if only else q.RELATIONS),
        ("sequence", "oid", q.SEQUENCES_OF if only else q.SEQUENCES),
        ("column", "attrelid", q.COLUMNS_OF if only else q.COLUMNS),
        ("constraint", "conrelid", q.CONSTRAINTS_OF if only else q.CONSTRAINTS),
        ("index", "indrelid", q.INDEXES_OF if only else q.INDEXES),
        ("trigger", "tgrelid", q.TRIGGERS_OF if only else q.TRIGGERS),
        ("policy", "polrelid", q.POLICIES_OF if only else q.POLICIES),
    ]
    which = "c.oid = ANY($1::oid[])" if only else "c.oid >= 16384"
    names = (
        "SELECT 'names', c.oid::bigint, json_build_array(n.nspname || '.' || c.relname, "
        "ARRAY(SELECT a.attnum || ' ' || a.attname FROM pg_attribute a "
        "WHERE a.attrelid = c.oid AND a.attnum > 0 AND NOT a.attisdropped))::text "
        "FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace "
        f"WHERE {which} AND c.relkind IN ('r', 'p', 'v', 'm', 'S')"
    )
    return " UNION ALL ".join(
        [
            *(
                f"SELECT '{kind}', x.{owner}::bigint, row_to_json(x)::text FROM ({query}) x"
                + (" WHERE x.conrelid <> 0" if kind == "constraint" else "")  # not a domain's
                for kind, owner, query in branches
            ),
            names,
        ]
    )


PARTS, PARTS_OF = _parts_query(only=False), _parts_query(only=True)


@dataclass(frozen=True)
class _Part:
    value: int
    name: str
    columns: dict[int, str] = field(default_factory=dict)


def _value(rows: Sequence[str]) -> int:
    """A part's hash, as a number: the fingerprint is their sum."""
    return int(digest(sorted(rows)), 16)


class Fingerprints:
    """``Dialect.fingerprints`` on PostgreSQL: call it with a connection to the same
    database each time."""

    def __init__(self) -> None:
        self.horizon: int | None = None
        self.running: list[str] = []  # the transactions running at the horizon
        self.search_path = ""
        self.keys: dict[str, dict[str, int]] = {}
        self.parts: dict[int, _Part] = {}
        self.rest = ""  # the digest of everything that is not a relation's

    def __call__(self, conn: sa.Connection) -> str:
        if self.horizon is None or not self._update(conn):
            self._read_all(conn)
        total = sum(part.value for part in self.parts.values()) % (1 << 256)
        return digest((total, self.rest))

    def _read_all(self, conn: sa.Connection) -> None:
        ((_, horizon, (search_path, *running), _, _),) = conn.exec_driver_sql(HEAD).all()
        self.keys = {tag: {} for tag in _TRACKED}
        for tag, keys, owners in conn.exec_driver_sql(OWNED_KEYS, (list(_TRACKED),)):
            self.keys[tag] = dict(zip(keys or (), owners or (), strict=True))
        self.parts = _parts(conn, None)
        self.rest = _rest(conn)
        self.horizon, self.running, self.search_path = horizon, running, search_path

    def _update(self, conn: sa.Connection) -> bool:
        """Bring the parts up to date with what changed; False when everything must be
        read again."""
        if self.running:
            scan = conn.exec_driver_sql(SCAN_RUNNING, (self.horizon, self.running))
        else:
            scan = conn.exec_driver_sql(SCAN, (self.horizon,))
        head, *catalogs = scan.all()
        _, horizon, (search_path, *running), _, _ = head
        if search_path != self.search_path:
            return False
        touched: set[int] = set()
        short: list[str] = []  # tracked catalogs with fewer rows than known: deletions
        for tag, count, keys, owners, tracked in catalogs:
            known = self.keys.get(tag)
            for key, owner, is_tracked in zip(keys or (), owners or (), tracked or (), strict=True):
                if owner < 0:
                    return False
                touched.add(owner)
                if is_tracked and known is not None:
                    known[key] = owner
            if known is not None and len(known) != count:
                short.append(tag)
        dropped: set[int] = set()
        if short:
            for tag, keys, _ in conn.exec_driver_sql(KEYS, (short,)):
                if tag not in short:
                    continue
                known, now = self.keys[tag], set(keys or ())
                for key in known.keys() - now:
                    owner = known.pop(key)
                    if owner < 0:
                        return False
                    touched.add(owner)
                    if tag == "class":
                        dropped.add(int(key))
        touched.discard(0)
        for oid in touched & dropped:
            self.parts.pop(oid, None)
        touched -= dropped
        if touched:
            fresh = _parts(conn, sorted(touched))
            for oid in touched:
                old, new = self.parts.get(oid), fresh.get(oid)
                if old is not None and (new is None or _renamed(old, new)):
                    return False  # renamed, or gone from the schemas read but not dropped
                if new is None:
                    self.parts.pop(oid, None)
                else:
                    self.parts[oid] = new
        self.horizon, self.running = horizon, running
        return True


def _renamed(old: _Part, new: _Part) -> bool:
    """Other relations' text names this one and its columns: a new name makes it stale."""
    if old.name != new.name:
        return True
    return any(
        new.columns.get(number, name) != name
        for number, name in old.columns.items()
        if number in new.columns
    )


def _parts(conn: sa.Connection, oids: list[int] | None) -> dict[int, _Part]:
    """The parts of relations and sequences (all, or those of ``oids``), by id."""
    rows = conn.exec_driver_sql(PARTS) if oids is None else conn.exec_driver_sql(PARTS_OF, (oids,))
    found: dict[int, list[str]] = defaultdict(list)
    names: dict[int, tuple[str, dict[int, str]]] = {}
    for kind, oid, text in rows:
        if kind == "names":
            name, columns = json.loads(text)
            names[oid] = name, dict(_numbered(column) for column in columns)
        else:
            found[oid].append(kind + text.split(",", 1)[1])  # without the owner's id
    return {oid: _Part(_value(rows), *names[oid]) for oid, rows in found.items() if oid in names}


def _numbered(column: str) -> tuple[int, str]:
    number, name = column.split(" ", 1)
    return int(number), name


def _rest(conn: sa.Connection) -> str:
    """Everything that is not a relation's: types (with a domain's constraints), routines,
    schemas, extensions."""

    def rows(query: str) -> list[tuple[Any, ...]]:
        return [tuple(row) for row in conn.exec_driver_sql(query)]

    types = rows(q.TYPES)
    type_name = {row[0]: row[2] for row in types}
    domain_checks = [
        (type_name.get(row[1], row[1]), *row[2:]) for row in rows(q.CONSTRAINTS) if not row[0]
    ]
    found = [
        sorted(repr(row[1:]) for row in types),
        sorted(repr(row) for row in domain_checks),
        *(
            sorted(repr(row) for row in rows(query))
            for query in (q.ROUTINES, q.SCHEMAS, q.EXTENSIONS)
        ),
    ]
    return digest(found)
