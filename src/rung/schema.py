"""Schema snapshots: read a live schema into a plain value, and diff two of them.

A ``Snapshot`` is a frozen, canonical (sorted) value: two databases with the same schema
give equal snapshots, it compares with ``==`` and it round-trips through JSON, so a run can
store the schema it left behind. Reading is done per backend by ``rung.dialects.reflection``
(a handful of catalog queries, however many tables); this module only filters and compares.
Constraints are matched by what they do, not by name (names are often generated), indexes
by name. ``diff`` lists the differences, each printing as one readable line.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field, replace
from fnmatch import fnmatchcase
from typing import Any, TypeVar

FORMAT = 1  # of the JSON; a stored snapshot of another format is not read

T = TypeVar("T")


@dataclass(frozen=True)
class Column:
    name: str
    type: str
    nullable: bool = True
    default: str | None = None
    autoincrement: bool = False
    generated: str | None = None  # the expression of a generated (computed) column

    def describe(self) -> str:
        parts = [self.type, _null(self)]
        if self.default is not None:
            parts.append(f"DEFAULT {self.default}")
        if self.generated is not None:
            parts.append(f"GENERATED AS ({self.generated})")
        if self.autoincrement:
            parts.append("AUTOINCREMENT")
        return " ".join(parts)


@dataclass(frozen=True)
class Index:
    name: str
    columns: tuple[str, ...]
    unique: bool = False


@dataclass(frozen=True)
class ForeignKey:
    columns: tuple[str, ...]
    referred_table: str
    referred_columns: tuple[str, ...]
    ondelete: str | None = None  # None: the database's default action
    onupdate: str | None = None
    name: str | None = field(default=None, compare=False)


@dataclass(frozen=True)
class Unique:
    columns: tuple[str, ...]
    name: str | None = field(default=None, compare=False)


@dataclass(frozen=True)
class Check:
    sqltext: str
    name: str | None = field(default=None, compare=False)


@dataclass(frozen=True)
class Table:
    name: str
    columns: tuple[Column, ...]
    primary_key: tuple[str, ...] = ()
    indexes: tuple[Index, ...] = ()
    foreign_keys: tuple[ForeignKey, ...] = ()
    uniques: tuple[Unique, ...] = ()
    checks: tuple[Check, ...] = ()

    def __post_init__(self) -> None:  # canonical order, whatever order the catalog gave
        _sort(self, "columns", lambda c: c.name)
        _sort(self, "indexes", lambda i: i.name)
        _sort(self, "foreign_keys", _fk_key)
        _sort(self, "uniques", lambda u: u.columns)
        _sort(self, "checks", lambda c: c.sqltext)


@dataclass(frozen=True)
class View:
    name: str
    definition: str


@dataclass(frozen=True)
class EnumType:
    name: str
    labels: tuple[str, ...]


@dataclass(frozen=True)
class Snapshot:
    """A schema as a value; ``enums``, ``sequences``, ``extensions`` where the database has them."""

    dialect: str
    tables: tuple[Table, ...] = ()
    views: tuple[View, ...] = ()
    enums: tuple[EnumType, ...] = ()
    sequences: tuple[str, ...] = ()
    extensions: tuple[str, ...] = ()

    def __post_init__(self) -> None:
        _sort(self, "tables", lambda t: t.name)
        _sort(self, "views", lambda v: v.name)
        _sort(self, "enums", lambda e: e.name)
        _sort(self, "sequences", lambda s: s)
        _sort(self, "extensions", lambda s: s)

    def excluding(self, patterns: Iterable[str] = (), names: Iterable[str] = ()) -> Snapshot:
        """Without the tables and views whose names are in ``names`` or match a pattern."""
        patterns, names = tuple(patterns), frozenset(names)

        def kept(name: str) -> bool:
            return name not in names and not any(fnmatchcase(name, p) for p in patterns)

        return replace(
            self,
            tables=tuple(t for t in self.tables if kept(t.name)),
            views=tuple(v for v in self.views if kept(v.name)),
        )

    def to_json(self) -> str:
        return json.dumps({"format": FORMAT, **_plain(self)}, sort_keys=True)

    @classmethod
    def from_json(cls, text: str) -> Snapshot:
        """The snapshot ``to_json`` wrote; ``ValueError`` for anything else."""
        try:
            data = json.loads(text)
            if data.pop("format") != FORMAT:
                raise ValueError("a snapshot format this rung does not know")
            return cls(
                dialect=data["dialect"],
                tables=tuple(_table(t) for t in data["tables"]),
                views=tuple(View(**v) for v in data["views"]),
                enums=tuple(EnumType(e["name"], tuple(e["labels"])) for e in data["enums"]),
                sequences=tuple(data["sequences"]),
                extensions=tuple(data["extensions"]),
            )
        except (KeyError, TypeError, AttributeError, json.JSONDecodeError) as exc:
            raise ValueError(f"not a rung schema snapshot ({type(exc).__name__}: {exc})") from exc


def _plain(value: Any) -> Any:
    """``dataclasses.asdict`` without its deep copies (ten times faster on a big schema)."""
    if isinstance(value, tuple):
        return [_plain(v) for v in value]
    if hasattr(value, "__dataclass_fields__"):
        return {name: _plain(getattr(value, name)) for name in value.__dataclass_fields__}
    return value


def _table(data: dict[str, Any]) -> Table:
    def tuples(item: dict[str, Any]) -> dict[str, Any]:
        return {k: tuple(v) if isinstance(v, list) else v for k, v in item.items()}

    return Table(
        name=data["name"],
        columns=tuple(Column(**c) for c in data["columns"]),
        primary_key=tuple(data["primary_key"]),
        indexes=tuple(Index(**tuples(i)) for i in data["indexes"]),
        foreign_keys=tuple(ForeignKey(**tuples(f)) for f in data["foreign_keys"]),
        uniques=tuple(Unique(**tuples(u)) for u in data["uniques"]),
        checks=tuple(Check(**c) for c in data["checks"]),
    )


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
    """Every difference, table by table (the table, its columns, constraints, then indexes),
    then views, enums, sequences and extensions. ``expected_as`` and ``actual_as`` name the
    two sides in the notes of ``+`` and ``-`` lines."""
    out = _Differences(f"({actual_as}, not {expected_as})", f"({expected_as}, not {actual_as})")
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
        lambda v: "",
        lambda a, b: f"{a.definition} -> {b.definition}",
    )
    out.compare(
        "enum",
        _by(expected.enums, _name),
        _by(actual.enums, _name),
        str,
        _labels,
        lambda a, b: f"{_labels(a)} -> {_labels(b)}",
    )
    for kind, before, after in [
        ("sequence", expected.sequences, actual.sequences),
        ("extension", expected.extensions, actual.extensions),
    ]:
        out.compare(
            kind, {n: n for n in before}, {n: n for n in after}, str, lambda n: "", lambda a, b: ""
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
        change: Callable[[T, T], str],
    ) -> None:
        """Objects matched by key: ``shown`` details one on its own, ``change`` two that differ."""
        for key in sorted(old.keys() | new.keys()):
            a, b = old.get(key), new.get(key)
            if a is not None and b is not None:
                if a != b:
                    self.items.append(Difference("~", kind, name(key), change(a, b)))
            else:
                item = b if b is not None else old[key]
                self.present(kind, name(key), shown(item), in_actual=b is not None)


def _by(items: Iterable[T], key: Callable[[T], Any]) -> dict[Any, T]:
    return {key(i): i for i in items}


def _name(item: Any) -> str:
    return str(item.name)


def _diff_table(out: _Differences, old: Table, new: Table) -> None:
    t = old.name
    out.compare(
        "column",
        _by(old.columns, _name),
        _by(new.columns, _name),
        lambda c: f"{t}.{c}",
        Column.describe,
        _column_change,
    )
    pk_old, pk_new = old.primary_key, new.primary_key
    out.compare(
        "primary key",
        {t: pk_old} if pk_old else {},
        {t: pk_new} if pk_new else {},
        str,
        _cols,
        lambda a, b: f"{_cols(a)} -> {_cols(b)}",
    )
    out.compare(
        "foreign key",
        _by(old.foreign_keys, _fk_key),
        _by(new.foreign_keys, _fk_key),
        lambda k: f"{t} {_cols(k[0])} -> {k[1]} {_cols(k[2])}",
        _actions,
        lambda a, b: f"{_actions(a) or 'no actions'} -> {_actions(b) or 'no actions'}",
    )
    out.compare(
        "unique constraint",
        _by(old.uniques, lambda u: u.columns),
        _by(new.uniques, lambda u: u.columns),
        lambda k: f"{t} {_cols(k)}",
        lambda u: "",
        lambda a, b: "",
    )
    out.compare(
        "check constraint",
        _by(old.checks, lambda c: c.sqltext),
        _by(new.checks, lambda c: c.sqltext),
        lambda k: f"{t} ({k})",
        lambda c: "",
        lambda a, b: "",
    )
    out.compare(
        "index",
        _by(old.indexes, _name),
        _by(new.indexes, _name),
        str,
        lambda i: _index(t, i),
        lambda a, b: f"{_index(t, a)} -> {_index(t, b)}",
    )


def _column_change(a: Column, b: Column) -> str:
    changes = []
    if a.type != b.type:
        changes.append(f"type {a.type} -> {b.type}")
    if a.nullable != b.nullable:
        changes.append(f"{_null(a)} -> {_null(b)}")
    if a.default != b.default:
        changes.append(f"default {a.default or '(none)'} -> {b.default or '(none)'}")
    if a.generated != b.generated:
        changes.append(f"generated as {a.generated or '(none)'} -> {b.generated or '(none)'}")
    if a.autoincrement != b.autoincrement:
        changes.append(f"autoincrement {a.autoincrement} -> {b.autoincrement}".lower())
    return ", ".join(changes)


def _null(column: Column) -> str:
    return "NULL" if column.nullable else "NOT NULL"


def _cols(columns: Sequence[str]) -> str:
    return f"({', '.join(columns)})"


def _labels(enum: EnumType) -> str:
    return _cols([repr(label) for label in enum.labels])


def _actions(fk: ForeignKey) -> str:
    actions = [
        f"ON DELETE {fk.ondelete}" if fk.ondelete else "",
        f"ON UPDATE {fk.onupdate}" if fk.onupdate else "",
    ]
    return " ".join(a for a in actions if a)


def _index(table: str, index: Index) -> str:
    return f"{'UNIQUE ' if index.unique else ''}on {table} {_cols(index.columns)}"
