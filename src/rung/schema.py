"""Schema snapshots: a live schema as a plain value, its JSON form, and the diff of two.

A ``Snapshot`` is a frozen, canonical (sorted) value: two databases with the same schema
give equal snapshots, it compares with ``==`` and it round-trips through JSON, so a run can
store the schema it left behind. Reading is done per backend by the readers in
``rung.dialects`` (a constant number of catalog queries, however many tables); this module
only filters and compares. Constraints are matched by what they do and their names compared
(readers leave out names a database generates from a counter, see docs/schema-coverage.md);
indexes, triggers and routines are matched by name. ``diff`` lists the differences, each
printing as one readable line. Text a catalog writes for equal schemas in different ways is
normalised by the readers, never here.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Iterable, Sequence
from dataclasses import MISSING, dataclass, fields, replace
from fnmatch import fnmatchcase
from typing import Any, TypeVar

FORMAT = 2  # of the JSON; a stored snapshot of another format is not read

T = TypeVar("T")


@dataclass(frozen=True)
class Column:
    name: str
    type: str  # as the catalog writes it; never a guess
    nullable: bool = True
    default: str | None = None
    autoincrement: bool = False
    generated: str | None = None  # the expression of a generated (computed) column
    generated_kind: str | None = None  # STORED or VIRTUAL
    identity: str | None = None  # ALWAYS or BY DEFAULT
    collation: str | None = None  # only where it differs from the table's or type's default
    comment: str | None = None
    invisible: bool = False

    def describe(self) -> str:
        parts = [self.type] if self.type else []
        if self.collation is not None:
            parts.append(f"COLLATE {self.collation}")
        parts.append(_null(self))
        if self.default is not None:
            parts.append(f"DEFAULT {self.default}")
        if self.generated is not None:
            parts.append(f"GENERATED AS ({self.generated}) {self.generated_kind or ''}".strip())
        if self.identity is not None:
            parts.append(f"GENERATED {self.identity} AS IDENTITY")
        if self.autoincrement:
            parts.append("AUTOINCREMENT")
        if self.invisible:
            parts.append("INVISIBLE")
        if self.comment is not None:
            parts.append(f"COMMENT {self.comment!r}")
        return " ".join(parts)


@dataclass(frozen=True)
class Index:
    name: str
    columns: tuple[str, ...]  # a key's text: a column, an expression, with DESC or COLLATE
    unique: bool = False
    method: str | None = None  # None: the database's default (btree)
    include: tuple[str, ...] = ()
    where: str | None = None  # a partial index's predicate
    options: str | None = None  # what else the definition says: NULLS NOT DISTINCT, WITH (...)


@dataclass(frozen=True)
class ForeignKey:
    columns: tuple[str, ...]
    referred_table: str
    referred_columns: tuple[str, ...]
    ondelete: str | None = None  # None: the database's default action
    onupdate: str | None = None
    name: str | None = None
    options: str | None = None  # DEFERRABLE [INITIALLY DEFERRED], MATCH FULL, NOT VALID


@dataclass(frozen=True)
class Unique:
    columns: tuple[str, ...]
    name: str | None = None
    options: str | None = None  # NULLS NOT DISTINCT, INCLUDE (...), DEFERRABLE


@dataclass(frozen=True)
class Check:
    sqltext: str
    name: str | None = None
    options: str | None = None  # NOT VALID, NO INHERIT


@dataclass(frozen=True)
class Exclusion:
    definition: str  # EXCLUDE USING gist (...) as the catalog writes it
    name: str | None = None


@dataclass(frozen=True)
class Policy:
    name: str
    definition: str  # AS PERMISSIVE FOR ALL TO public USING (...) WITH CHECK (...)


@dataclass(frozen=True)
class Table:
    name: str  # schema-qualified outside the connection's default schema
    columns: tuple[Column, ...]
    primary_key: tuple[str, ...] = ()
    indexes: tuple[Index, ...] = ()
    foreign_keys: tuple[ForeignKey, ...] = ()
    uniques: tuple[Unique, ...] = ()
    checks: tuple[Check, ...] = ()
    primary_key_name: str | None = None
    exclusions: tuple[Exclusion, ...] = ()
    policies: tuple[Policy, ...] = ()
    options: tuple[str, ...] = ()  # UNLOGGED, ENGINE=..., WITHOUT ROWID, ROW LEVEL SECURITY
    comment: str | None = None

    def __post_init__(self) -> None:  # canonical order, whatever order the catalog gave
        _sort(self, "columns", _name)
        _sort(self, "indexes", _name)
        _sort(self, "foreign_keys", _fk_key)
        _sort(self, "uniques", lambda u: u.columns)
        _sort(self, "checks", lambda c: c.sqltext)
        _sort(self, "exclusions", lambda x: x.definition)
        _sort(self, "policies", _name)
        _sort(self, "options", str)


@dataclass(frozen=True)
class View:
    name: str
    definition: str
    materialized: bool = False
    options: tuple[str, ...] = ()  # security_barrier, WITH CHECK OPTION, SQL SECURITY ...
    indexes: tuple[Index, ...] = ()  # a materialized view's

    def __post_init__(self) -> None:
        _sort(self, "options", str)
        _sort(self, "indexes", _name)


@dataclass(frozen=True)
class EnumType:
    name: str
    labels: tuple[str, ...]


@dataclass(frozen=True)
class UserType:
    """A type made by CREATE TYPE other than an enum: composite, range."""

    name: str
    kind: str  # "composite", "range"
    definition: str


@dataclass(frozen=True)
class Domain:
    name: str
    type: str
    nullable: bool = True
    default: str | None = None
    collation: str | None = None
    checks: tuple[Check, ...] = ()

    def __post_init__(self) -> None:
        _sort(self, "checks", lambda c: c.sqltext)


@dataclass(frozen=True)
class SequenceDef:
    """A sequence's definition; never its current value."""

    name: str
    type: str | None = None
    start: int = 1
    increment: int = 1
    minimum: int | None = None
    maximum: int | None = None
    cache: int = 1
    cycle: bool = False
    owned_by: str | None = None  # "table.column"


@dataclass(frozen=True)
class Trigger:
    table: str
    name: str
    definition: str


@dataclass(frozen=True)
class Routine:
    kind: str  # "function", "procedure", "aggregate"
    name: str  # with its argument types where the database overloads names
    definition: str


@dataclass(frozen=True)
class Snapshot:
    """A schema as a value; each kind where the database has it."""

    dialect: str
    tables: tuple[Table, ...] = ()
    views: tuple[View, ...] = ()
    enums: tuple[EnumType, ...] = ()
    sequences: tuple[SequenceDef, ...] = ()
    extensions: tuple[str, ...] = ()  # by name: a scratch database gets the server's version
    schemas: tuple[str, ...] = ()  # besides the connection's default one
    triggers: tuple[Trigger, ...] = ()
    routines: tuple[Routine, ...] = ()
    domains: tuple[Domain, ...] = ()
    types: tuple[UserType, ...] = ()

    def __post_init__(self) -> None:
        for name in ("tables", "views", "enums", "sequences", "domains", "types"):
            _sort(self, name, _name)
        _sort(self, "schemas", str)
        _sort(self, "extensions", str)
        _sort(self, "triggers", lambda t: (t.table, t.name))
        _sort(self, "routines", lambda r: (r.kind, r.name))

    def excluding(self, patterns: Iterable[str] = (), names: Iterable[str] = ()) -> Snapshot:
        """Without the objects whose names are in ``names`` or match a pattern: tables,
        views, sequences, and the triggers of those left out; a schema goes when its name
        or ``<schema>.anything`` matches (``audit.*`` leaves out schema audit too)."""
        patterns, names = tuple(patterns), frozenset(names)

        def kept(name: str) -> bool:
            return name not in names and not any(fnmatchcase(name, p) for p in patterns)

        def table_of(owned_by: str | None) -> str:
            return "" if owned_by is None else owned_by.rsplit(".", 1)[0]

        return replace(
            self,
            tables=tuple(t for t in self.tables if kept(t.name)),
            views=tuple(v for v in self.views if kept(v.name)),
            sequences=tuple(
                s
                for s in self.sequences
                if kept(s.name) and (s.owned_by is None or kept(table_of(s.owned_by)))
            ),
            triggers=tuple(t for t in self.triggers if kept(t.table)),
            schemas=tuple(s for s in self.schemas if kept(s) and kept(f"{s}.")),
        )

    def to_json(self) -> str:
        return json.dumps({"format": FORMAT, **_plain(self)}, sort_keys=True)

    @classmethod
    def from_json(cls, text: str) -> Snapshot:
        """The snapshot ``to_json`` wrote; ``ValueError`` for anything else."""
        try:
            data = json.loads(text)
            found = data.pop("format")
            if found != FORMAT:
                raise ValueError(
                    f"it is in snapshot format {found!r}, from another version of rung; "
                    f"this one reads format {FORMAT}"
                )
            return _load(cls, data)
        except (KeyError, TypeError, AttributeError, json.JSONDecodeError) as exc:
            raise ValueError(f"not a rung schema snapshot ({type(exc).__name__}: {exc})") from exc


_NESTED: dict[type, dict[str, type]] = {
    Snapshot: {
        "tables": Table,
        "views": View,
        "enums": EnumType,
        "sequences": SequenceDef,
        "triggers": Trigger,
        "routines": Routine,
        "domains": Domain,
        "types": UserType,
    },
    Table: {
        "columns": Column,
        "indexes": Index,
        "foreign_keys": ForeignKey,
        "uniques": Unique,
        "checks": Check,
        "exclusions": Exclusion,
        "policies": Policy,
    },
    View: {"indexes": Index},
    Domain: {"checks": Check},
}
_DEFAULTS: dict[type, dict[str, Any]] = {}


def _plain(value: Any) -> Any:
    """``dataclasses.asdict`` without its deep copies (ten times faster on a big schema),
    and without fields at their default (a thousand-table snapshot stays small)."""
    if isinstance(value, tuple):
        return [_plain(v) for v in value]
    if hasattr(value, "__dataclass_fields__"):
        defaults = _defaults(type(value))
        out = {}
        for name in value.__dataclass_fields__:
            item = getattr(value, name)
            if name not in defaults or item != defaults[name]:
                out[name] = _plain(item)
        return out
    return value


def _defaults(cls: type) -> dict[str, Any]:
    found = _DEFAULTS.get(cls)
    if found is None:
        found = _DEFAULTS[cls] = {
            f.name: f.default for f in fields(cls) if f.default is not MISSING
        }
    return found


def _load(cls: type[T], data: dict[str, Any]) -> T:
    nested = _NESTED.get(cls, {})
    kwargs: dict[str, Any] = {}
    for key, value in data.items():
        if key in nested:
            value = tuple(_load(nested[key], item) for item in value)
        elif isinstance(value, list):
            value = tuple(value)
        kwargs[key] = value
    return cls(**kwargs)


def _sort(obj: object, name: str, key: Callable[[Any], Any]) -> None:
    object.__setattr__(obj, name, tuple(sorted(getattr(obj, name), key=key)))


def _fk_key(fk: ForeignKey) -> tuple[tuple[str, ...], str, tuple[str, ...]]:
    return fk.columns, fk.referred_table, fk.referred_columns


@dataclass(frozen=True)
class Difference:
    """One difference between an expected and an actual schema.

    ``change``: ``+`` only in the actual schema, ``-`` only in the expected one, ``~`` in
    both but different (``detail`` reads "expected -> actual")."""

    change: str
    kind: str  # "table", "column", "index", "foreign key", ...
    name: str
    detail: str = ""
    note: str = ""  # where the object is and is not, for + and -

    @property
    def subject(self) -> str:
        return f"{self.kind} {self.name}"

    def __str__(self) -> str:
        text = f"{self.change} {self.subject}"
        if self.detail:
            text += (": " if self.change == "~" else " ") + self.detail
        return f"{text} {self.note}" if self.note else text


def diff(
    expected: Snapshot,
    actual: Snapshot,
    *,
    expected_as: str = "in the migrations",
    actual_as: str = "in the database",
) -> list[Difference]:
    """Every difference: schemas, then table by table (the table, its columns, constraints,
    indexes, policies), then views, triggers, routines, enums, domains, other types,
    sequences and extensions. ``expected_as`` and ``actual_as`` name the two sides in the
    notes of ``+`` and ``-`` lines."""
    out = _Differences(f"({actual_as}, not {expected_as})", f"({expected_as}, not {actual_as})")
    out.compare("schema", _by(expected.schemas, str), _by(actual.schemas, str), str, _nothing)
    old, new = _by(expected.tables, _name), _by(actual.tables, _name)
    for name in sorted(old.keys() | new.keys()):
        if name in old and name in new:
            _diff_table(out, old[name], new[name])
        else:
            out.present("table", name, "", in_actual=name in new)
    out.compare(
        "view",
        _by(expected.views, _name),
        _by(actual.views, _name),
        str,
        lambda v: "(materialized)" if v.materialized else "",
        _view_change,
    )
    out.compare(
        "trigger",
        _by(expected.triggers, lambda t: (t.table, t.name)),
        _by(actual.triggers, lambda t: (t.table, t.name)),
        lambda k: f"{k[0]}.{k[1]}",
        lambda t: "",
        lambda a, b: _text_change(a.definition, b.definition),
    )
    for kind in sorted({r.kind for r in (*expected.routines, *actual.routines)}):
        out.compare(
            kind,
            {r.name: r for r in expected.routines if r.kind == kind},
            {r.name: r for r in actual.routines if r.kind == kind},
            str,
            lambda r: "",
            lambda a, b: _text_change(a.definition, b.definition),
        )
    out.compare(
        "enum",
        _by(expected.enums, _name),
        _by(actual.enums, _name),
        str,
        _labels,
        lambda a, b: f"{_labels(a)} -> {_labels(b)}",
    )
    out.compare("domain", _by(expected.domains, _name), _by(actual.domains, _name), str, _domain)
    out.compare(
        "type",
        _by(expected.types, _name),
        _by(actual.types, _name),
        str,
        lambda t: f"{t.kind} {t.definition}",
        lambda a, b: _text_change(f"{a.kind} {a.definition}", f"{b.kind} {b.definition}"),
    )
    out.compare(
        "sequence",
        _by(expected.sequences, _name),
        _by(actual.sequences, _name),
        str,
        lambda s: "",
        _fields_change,
    )
    out.compare(
        "extension", _by(expected.extensions, str), _by(actual.extensions, str), str, _nothing
    )
    return out.items


class _Differences:
    def __init__(self, added: str, removed: str) -> None:
        self.items: list[Difference] = []
        self._notes = added, removed

    def present(self, kind: str, name: str, detail: str, *, in_actual: bool) -> None:
        sign, note = ("+", self._notes[0]) if in_actual else ("-", self._notes[1])
        self.items.append(Difference(sign, kind, name, detail, note))

    def compare(
        self,
        kind: str,
        old: dict[Any, T],
        new: dict[Any, T],
        name: Callable[[Any], str],
        shown: Callable[[T], str],
        change: Callable[[T, T], str] | None = None,
    ) -> None:
        """Objects matched by key: ``shown`` details one on its own, ``change`` two that
        differ (by default: both shown, "a -> b")."""
        for key in sorted(old.keys() | new.keys()):
            a, b = old.get(key), new.get(key)
            if a is not None and b is not None:
                if a != b:
                    text = change(a, b) if change else f"{shown(a)} -> {shown(b)}"
                    self.items.append(Difference("~", kind, name(key), text))
            else:
                item = b if b is not None else old[key]
                self.present(kind, name(key), shown(item), in_actual=b is not None)


def _by(items: Iterable[T], key: Callable[[T], Any]) -> dict[Any, T]:
    return {key(i): i for i in items}


def _name(item: Any) -> str:
    return str(item.name)


def _nothing(item: object) -> str:
    return ""


def _diff_table(out: _Differences, old: Table, new: Table) -> None:
    t = old.name
    if (old.options, old.comment) != (new.options, new.comment):
        out.items.append(Difference("~", "table", t, _table_change(old, new)))
    out.compare(
        "column",
        _by(old.columns, _name),
        _by(new.columns, _name),
        lambda c: f"{t}.{c}",
        Column.describe,
        _column_change,
    )
    out.compare(
        "primary key",
        {t: (old.primary_key, old.primary_key_name)} if old.primary_key else {},
        {t: (new.primary_key, new.primary_key_name)} if new.primary_key else {},
        str,
        lambda key: _named(_cols(key[0]), key[1]),
    )
    out.compare(
        "foreign key",
        _by(old.foreign_keys, _fk_key),
        _by(new.foreign_keys, _fk_key),
        lambda k: f"{t} {_cols(k[0])} -> {k[1]} {_cols(k[2])}",
        lambda fk: _named(_foreign_key(fk), fk.name),
        _foreign_key_change,
    )
    out.compare(
        "unique constraint",
        _by(old.uniques, lambda u: u.columns),
        _by(new.uniques, lambda u: u.columns),
        lambda k: f"{t} {_cols(k)}",
        lambda u: _named(u.options or "", u.name),
        _fields_change,
    )
    out.compare(
        "check constraint",
        _by(old.checks, lambda c: c.sqltext),
        _by(new.checks, lambda c: c.sqltext),
        lambda k: f"{t} ({k})",
        lambda c: _named(c.options or "", c.name),
        _fields_change,
    )
    out.compare(
        "exclusion constraint",
        _by(old.exclusions, lambda x: x.definition),
        _by(new.exclusions, lambda x: x.definition),
        lambda k: f"{t} {k}",
        lambda x: _named("", x.name),
        _fields_change,
    )
    out.compare(
        "index",
        _by(old.indexes, _name),
        _by(new.indexes, _name),
        str,
        lambda i: _index(t, i),
    )
    out.compare(
        "policy",
        _by(old.policies, _name),
        _by(new.policies, _name),
        lambda p: f"{t}.{p}",
        lambda p: p.definition,
        lambda a, b: _text_change(a.definition, b.definition),
    )


def _table_change(a: Table, b: Table) -> str:
    changes = []
    if a.options != b.options:
        changes.append(f"options {_value(a.options)} -> {_value(b.options)}")
    if a.comment != b.comment:
        changes.append(f"comment {_quoted(a.comment)} -> {_quoted(b.comment)}")
    return ", ".join(changes)


def _column_change(a: Column, b: Column) -> str:
    changes = []
    if a.type != b.type:
        changes.append(f"type {a.type} -> {b.type}")
    if a.collation != b.collation:
        changes.append(f"collation {a.collation or '(default)'} -> {b.collation or '(default)'}")
    if a.nullable != b.nullable:
        changes.append(f"{_null(a)} -> {_null(b)}")
    if a.default != b.default:
        changes.append(f"default {a.default or '(none)'} -> {b.default or '(none)'}")
    if a.generated != b.generated:
        changes.append(f"generated as {a.generated or '(none)'} -> {b.generated or '(none)'}")
    if a.generated_kind != b.generated_kind and a.generated and b.generated:
        changes.append(f"generated {a.generated_kind} -> {b.generated_kind}")
    if a.identity != b.identity:
        changes.append(f"identity {a.identity or '(none)'} -> {b.identity or '(none)'}")
    if a.autoincrement != b.autoincrement:
        changes.append(f"autoincrement {a.autoincrement} -> {b.autoincrement}".lower())
    if a.invisible != b.invisible:
        changes.append("visible -> invisible" if b.invisible else "invisible -> visible")
    if a.comment != b.comment:
        changes.append(f"comment {_quoted(a.comment)} -> {_quoted(b.comment)}")
    return ", ".join(changes)


def _fields_change(a: Any, b: Any) -> str:
    """``field a -> b`` for each field that differs, in the order the class declares them."""
    changes = []
    for f in fields(a):
        x, y = getattr(a, f.name), getattr(b, f.name)
        if x != y:
            changes.append(f"{f.name.replace('_', ' ')} {_value(x)} -> {_value(y)}")
    return ", ".join(changes)


def _value(value: object) -> str:
    if value is None:
        return "(none)"
    if isinstance(value, tuple):
        return _cols([str(v) for v in value])
    return str(value).lower() if isinstance(value, bool) else str(value)


def _text_change(a: str, b: str, width: int = 100, context: int = 24) -> str:
    """``a -> b``; two long texts shown only around where they differ."""
    if len(a) <= width and len(b) <= width:
        return f"{a} -> {b}"
    start = 0
    while start < min(len(a), len(b)) and a[start] == b[start]:
        start += 1
    end = 0
    while end < min(len(a), len(b)) - start and a[-1 - end] == b[-1 - end]:
        end += 1
    begin = max(0, start - context)
    while begin > 0 and a[begin - 1] != " ":  # whole words
        begin -= 1

    def window(text: str) -> str:
        stop = min(len(text), len(text) - end + context)
        while stop < len(text) and text[stop] != " ":
            stop += 1
        part = text[begin:stop]
        return f"{'...' if begin else ''}{part}{'...' if stop < len(text) else ''}"

    return f"{window(a)} -> {window(b)}"


def _null(column: Column) -> str:
    return "NULL" if column.nullable else "NOT NULL"


def _quoted(text: str | None) -> str:
    return "(none)" if text is None else repr(text)


def _named(text: str, name: str | None) -> str:
    return f"{text} (named {name})".strip() if name else text


def _cols(columns: Sequence[str]) -> str:
    return f"({', '.join(columns)})"


def _labels(enum: EnumType) -> str:
    return _cols([repr(label) for label in enum.labels])


def _foreign_key(fk: ForeignKey) -> str:
    parts = [
        f"ON DELETE {fk.ondelete}" if fk.ondelete else "",
        f"ON UPDATE {fk.onupdate}" if fk.onupdate else "",
        fk.options or "",
    ]
    return " ".join(p for p in parts if p)


def _foreign_key_change(a: ForeignKey, b: ForeignKey) -> str:
    changes = []
    if _foreign_key(a) != _foreign_key(b):
        changes.append(f"{_foreign_key(a) or 'no actions'} -> {_foreign_key(b) or 'no actions'}")
    if a.name != b.name:
        changes.append(f"name {a.name or '(none)'} -> {b.name or '(none)'}")
    return ", ".join(changes)


def _index(table: str, index: Index) -> str:
    parts = [
        "UNIQUE on" if index.unique else "on",
        table,
        f"USING {index.method}" if index.method else "",
        _cols(index.columns),
        f"INCLUDE {_cols(index.include)}" if index.include else "",
        index.options or "",
        f"WHERE {index.where}" if index.where else "",
    ]
    return " ".join(p for p in parts if p)


def _view_change(a: View, b: View) -> str:
    changes = []
    if a.materialized != b.materialized:
        kinds = ("view", "materialized view")
        changes.append(f"{kinds[a.materialized]} -> {kinds[b.materialized]}")
    if a.options != b.options:
        changes.append(f"options {_value(a.options)} -> {_value(b.options)}")
    if a.definition != b.definition:
        changes.append(_text_change(a.definition, b.definition))
    old, new = _by(a.indexes, _name), _by(b.indexes, _name)
    for name in sorted(old.keys() | new.keys()):
        if old.get(name) != new.get(name):
            shown = [_index(a.name, i) if i else "(none)" for i in (old.get(name), new.get(name))]
            changes.append(f"index {name} {shown[0]} -> {shown[1]}")
    return ", ".join(changes)


def _domain(domain: Domain) -> str:
    parts = [domain.type]
    if domain.collation:
        parts.append(f"COLLATE {domain.collation}")
    parts.append("NULL" if domain.nullable else "NOT NULL")
    if domain.default is not None:
        parts.append(f"DEFAULT {domain.default}")
    parts += [f"CHECK ({c.sqltext})" for c in domain.checks]
    return " ".join(parts)
