"""PostgreSQL's schema reader and ``rung fresh``'s drop, over pg_catalog alone.

``read`` runs the dozen queries of ``postgresql_catalog`` (one per kind of object, for the
whole database) and builds the snapshot from their rows; SQLAlchemy's inspector, which
reads some kinds table by table, is not used. Text comes from PostgreSQL's own deparsers
(``format_type``, ``pg_get_expr``, ``pg_get_constraintdef``, ``pg_get_indexdef``,
``pg_get_triggerdef``, ``pg_get_functiondef``), which write equal definitions equally.
Normalised: the types PostgreSQL defines are upper-cased as SQLAlchemy writes them
(``VARCHAR(20)``, ``INTEGER``), other types keep their own name; a default loses the cast
after a literal (``'pending'::character varying`` reads ``'pending'``); whitespace runs are
one space. Constraint names are compared: PostgreSQL derives the ones it generates from the
table and columns (``items_pkey``, ``items_owner_id_fkey``), so the same migrations give
the same names.
"""

from __future__ import annotations

import re
from collections import defaultdict
from typing import Any

import sqlalchemy as sa

from rung.dialects import postgresql_catalog as q
from rung.dialects.reflection import closing, drop_each, split_top, squeeze, unwrap
from rung.schema import (
    Check,
    Column,
    Domain,
    EnumType,
    Exclusion,
    ForeignKey,
    Index,
    Policy,
    Routine,
    SequenceDef,
    Snapshot,
    Table,
    Trigger,
    Unique,
    UserType,
    View,
)

# A cast after a string literal: 'pending'::character varying, 'x'::regclass, 'a'::text[]
_LITERAL_CAST = re.compile(r"('(?:[^']|'')*')::[a-z_][a-z0-9_ ]*?(?:\[\])?(?=[),]|\s*$)")
_TRIGGER_HEAD = re.compile(r'^CREATE (?:CONSTRAINT )?TRIGGER (?:"(?:[^"]|"")*"|\S+) ')
_ACTIONS = {"a": None, "r": "RESTRICT", "c": "CASCADE", "n": "SET NULL", "d": "SET DEFAULT"}
_MATCH = {"f": "MATCH FULL", "p": "MATCH PARTIAL", "s": ""}
_REPLICA = {"f": "REPLICA IDENTITY FULL", "n": "REPLICA IDENTITY NOTHING", "i": ""}
_POLICY_COMMANDS = {"r": "SELECT", "a": "INSERT", "w": "UPDATE", "d": "DELETE", "*": "ALL"}
_ENABLED = {"O": "", "D": " DISABLED", "R": " ENABLE REPLICA", "A": " ENABLE ALWAYS"}
_ROUTINES = {"f": "function", "p": "procedure", "a": "aggregate", "w": "function"}


def read(conn: sa.Connection) -> Snapshot:
    def rows(query: str) -> list[Any]:
        return list(conn.exec_driver_sql(query))

    names: dict[int, str] = {}
    tables: dict[int, dict[str, Any]] = {}
    views: dict[int, dict[str, Any]] = {}
    for oid, name, kind, *rest, viewdef in rows(q.RELATIONS):
        names[oid] = name
        if kind in ("v", "m"):
            options = tuple(rest[3] or ())
            views[oid] = {"name": name, "definition": squeeze(viewdef), "options": options}
            views[oid]["materialized"] = kind == "m"
        else:
            tables[oid] = {"name": name, "options": _table_options(kind, *rest[:-1])}
            tables[oid]["comment"] = rest[-1]
    parts: dict[int, dict[str, list[Any]]] = defaultdict(lambda: defaultdict(list))
    attributes: dict[tuple[int, int], str] = {}
    for relation, number, *column in rows(q.COLUMNS):
        attributes[relation, number] = column[0]
        parts[relation]["columns"].append(_column(*column))
    domain_checks: dict[int, list[Check]] = defaultdict(list)
    for relation, domain, name, kind, text, numbers, *rest in rows(q.CONSTRAINTS):
        columns = [attributes[relation, n] for n in numbers or ()]
        row = (relation, domain, name, kind, text, columns, *rest)
        _constraint(row, tables, parts, domain_checks)
    for relation, *index in rows(q.INDEXES):
        parts[relation]["indexes"].append(_index(*index))
    triggers = [
        Trigger(names[relation], name, _TRIGGER_HEAD.sub("", squeeze(text)) + _ENABLED[enabled])
        for relation, name, text, enabled in rows(q.TRIGGERS)
    ]
    for relation, *policy in rows(q.POLICIES):
        parts[relation]["policies"].append(_policy(*policy))
    enums, domains, types = _types(rows(q.TYPES), domain_checks)
    return Snapshot(
        dialect=conn.dialect.name,
        tables=tuple(Table(**t, **_lists(parts[oid])) for oid, t in tables.items()),
        views=tuple(View(**v, indexes=tuple(parts[oid]["indexes"])) for oid, v in views.items()),
        enums=enums,
        sequences=tuple(_sequence(*row[1:]) for row in rows(q.SEQUENCES)),
        extensions=tuple(name for (name,) in rows(q.EXTENSIONS)),
        schemas=tuple(name for (name,) in rows(q.SCHEMAS)),
        triggers=tuple(triggers),
        routines=tuple(
            Routine(_ROUTINES[kind], name, squeeze(text)) for kind, name, text in rows(q.ROUTINES)
        ),
        domains=domains,
        types=types,
    )


def drop_everything(conn: sa.Connection) -> list[str]:
    """For ``rung fresh``: every schema but the default one, with all it holds; then the
    default schema's views, tables, sequences, routines, types and domains; then the
    extensions (not PostgreSQL's own plpgsql)."""
    found = [(kind, name) for kind, name in conn.exec_driver_sql(q.DROPS)]
    return drop_each(conn, found, " CASCADE")


def default_text(text: str) -> str:
    return _LITERAL_CAST.sub(r"\1", text)


def type_text(text: str, builtin: bool) -> str:
    """A type PostgreSQL defines as SQLAlchemy writes it; any other as format_type does."""
    if not builtin:
        return text
    text = text.upper()
    for long, short in (("CHARACTER VARYING", "VARCHAR"), ("CHARACTER", "CHAR")):
        if text.startswith(long):
            return short + text[len(long) :]
    return text


def _lists(part: dict[str, list[Any]]) -> dict[str, Any]:
    return {"columns": (), **{kind: tuple(items) for kind, items in part.items()}}


def _table_options(
    kind: str,
    persistence: str,
    row_security: bool,
    forced: bool,
    storage: list[str] | None,
    replica: str,
    partition_key: str | None,
    bound: str | None,
    parents: list[str],
) -> tuple[str, ...]:
    options = [
        "UNLOGGED" if persistence == "u" else "",
        "ROW LEVEL SECURITY" if row_security else "",
        "FORCE ROW LEVEL SECURITY" if forced else "",
        f"WITH ({', '.join(storage)})" if storage else "",
        _REPLICA.get(replica, ""),
        f"PARTITION BY {partition_key}" if kind == "p" else "",
        f"PARTITION OF {parents[0]} {bound}" if bound and parents else "",
        f"INHERITS ({', '.join(parents)})" if parents and not bound else "",
    ]
    return tuple(o for o in options if o)


def _column(
    name: str,
    type_: str,
    builtin: bool,
    notnull: bool,
    default: str | None,
    identity: str,
    generated: str,
    collation: str | None,
    comment: str | None,
) -> Column:
    value = None if default is None else default_text(unwrap(squeeze(default)))
    return Column(
        name=name,
        type=type_text(type_, builtin),
        nullable=not notnull,
        default=None if generated else value,
        autoincrement=bool(value and value.startswith("nextval(") and not generated),
        generated=value if generated else None,
        generated_kind="STORED" if generated == "s" else None,
        identity={"a": "ALWAYS", "d": "BY DEFAULT"}.get(identity),
        collation=collation,
        comment=comment,
    )


def _constraint(
    row: Any,
    tables: dict[int, dict[str, Any]],
    parts: dict[int, dict[str, list[Any]]],
    domain_checks: dict[int, list[Check]],
) -> None:
    relation, domain, name, kind, text, columns, referred, referred_columns, *flags = row
    text = squeeze(text or "")
    if kind == "c":
        check = _check(text, name)
        if domain:
            domain_checks[domain].append(check)
        else:
            parts[relation]["checks"].append(check)
    elif kind == "p":
        tables[relation]["primary_key"] = tuple(columns)
        tables[relation]["primary_key_name"] = name
    elif kind == "u":
        head, _, rest = _group(text.removeprefix("UNIQUE"))
        parts[relation]["uniques"].append(
            Unique(tuple(columns), name, squeeze(head + rest) or None)
        )
    elif kind == "x":
        parts[relation]["exclusions"].append(Exclusion(text, name))
    else:
        on_delete, on_update, match, deferrable, deferred, validated = flags
        options = [
            _MATCH[match],
            "DEFERRABLE" if deferrable else "",
            "INITIALLY DEFERRED" if deferred else "",
            "" if validated else "NOT VALID",
        ]
        parts[relation]["foreign_keys"].append(
            ForeignKey(
                tuple(columns),
                referred,
                tuple(referred_columns),
                _ACTIONS[on_delete],
                _ACTIONS[on_update],
                name,
                " ".join(o for o in options if o) or None,
            )
        )


def _check(text: str, name: str) -> Check:
    """``CHECK (expr) [NOT VALID] [NO INHERIT]`` as pg_get_constraintdef writes it."""
    _, expression, rest = _group(text.removeprefix("CHECK"))
    return Check(unwrap(squeeze(expression)), name, squeeze(rest) or None)


def _group(text: str) -> tuple[str, str, str]:
    """``text`` around its first parenthesised group: before, inside, after."""
    start = text.find("(")
    end = closing(text, start) if start >= 0 else None
    if end is None:
        return text, "", ""
    return text[:start], text[start + 1 : end], text[end + 1 :]


def _index(name: str, unique: bool, method: str, text: str, where: str | None) -> Index:
    """From pg_get_indexdef: ``... USING method (keys) [INCLUDE (...)] [options] [WHERE p]``."""
    after = text[text.find(f" USING {method} ") + len(method) + 8 :]
    _, keys, rest = _group(after)
    include: list[str] = []
    if rest.lstrip().startswith("INCLUDE"):
        _, included, rest = _group(rest)
        include = [squeeze(k) for k in split_top(included)]
    options = squeeze(rest.split(" WHERE ", 1)[0])
    return Index(
        name=name,
        columns=tuple(squeeze(k) for k in split_top(keys)),
        unique=unique,
        method=None if method == "btree" else method,
        include=tuple(include),
        where=None if where is None else squeeze(where),
        options=options or None,
    )


def _policy(
    name: str,
    permissive: bool,
    command: str,
    roles: list[str],
    using: str | None,
    check: str | None,
) -> Policy:
    parts = [
        f"AS {'PERMISSIVE' if permissive else 'RESTRICTIVE'}",
        f"FOR {_POLICY_COMMANDS[command]} TO {', '.join(roles)}",
        f"USING ({squeeze(using)})" if using else "",
        f"WITH CHECK ({squeeze(check)})" if check else "",
    ]
    return Policy(name, " ".join(p for p in parts if p))


def _types(
    rows: list[Any], domain_checks: dict[int, list[Check]]
) -> tuple[tuple[EnumType, ...], tuple[Domain, ...], tuple[UserType, ...]]:
    enums, domains, types = [], [], []
    for oid, kind, name, base, builtin, notnull, default, collation, labels, attrs, rng in rows:
        if kind == "e":
            enums.append(EnumType(name, tuple(labels)))
        elif kind == "d":
            domains.append(
                Domain(
                    name=name,
                    type=type_text(base, builtin),
                    nullable=not notnull,
                    default=None if default is None else default_text(squeeze(default)),
                    collation=collation,
                    checks=tuple(domain_checks[oid]),
                )
            )
        elif kind == "c":
            types.append(UserType(name, "composite", attrs or ""))
        else:
            types.append(UserType(name, "range", rng or ""))
    return tuple(enums), tuple(domains), tuple(types)


def _sequence(
    name: str,
    type_: str,
    start: int,
    increment: int,
    minimum: int,
    maximum: int,
    cache: int,
    cycle: bool,
    owned_by: str | None,
) -> SequenceDef:
    return SequenceDef(
        name, type_.upper(), start, increment, minimum, maximum, cache, cycle, owned_by
    )
