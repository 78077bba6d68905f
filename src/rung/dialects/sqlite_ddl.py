"""What SQLite keeps only in the text of its ``CREATE`` statements, parsed out of it.

SQLite's PRAGMAs tell columns, keys and foreign keys, but not CHECK constraints, constraint
names, a column's collation, ``AUTOINCREMENT``, a generated column's expression, whether a
foreign key is deferrable, ``WITHOUT ROWID`` or ``STRICT``, nor a partial index's WHERE.
``sqlite_master`` keeps each statement as it was written (``ALTER TABLE`` edits it in
place), so this module reads them from there. It looks for keywords in a masked copy of the
text, in which quoted strings and identifiers and everything inside parentheses are blanked
out, so that a keyword inside an expression or a name never counts.
"""

from __future__ import annotations

import functools
import re
from dataclasses import dataclass, field

from rung.dialects.reflection import closing, split_top, squeeze, unwrap
from rung.schema import Check

# An identifier, quoted in any of SQLite's four ways, or bare.
_NAME = r'"(?:[^"]|"")*"|\'(?:[^\']|\'\')*\'|`(?:[^`]|``)*`|\[[^\]]*\]|[\w$]+'
_TABLE_CONSTRAINT = re.compile(r"\s*(?:CONSTRAINT|PRIMARY|UNIQUE|CHECK|FOREIGN)(?![\w$])", re.I)
_CONSTRAINT = re.compile(
    rf"(?<![\w$])(?:CONSTRAINT\s+({_NAME})\s+)?(PRIMARY\s+KEY|UNIQUE|CHECK|FOREIGN\s+KEY|REFERENCES)"
    r"(?![\w$])",
    re.I,
)
_REFERENCES = re.compile(rf"REFERENCES\s+({_NAME})", re.I)
_DEFERRABLE = re.compile(r"(NOT\s+)?DEFERRABLE(?:\s+INITIALLY\s+(DEFERRED|IMMEDIATE))?", re.I)
_MATCH = re.compile(r"(?<![\w$])MATCH\s+(\w+)", re.I)
_COLLATE = re.compile(rf"(?<![\w$])COLLATE\s+({_NAME})", re.I)
_AUTOINCREMENT = re.compile(r"(?<![\w$])AUTOINCREMENT(?![\w$])", re.I)
_GENERATED = re.compile(r"(?<![\w$])(?:GENERATED\s+ALWAYS\s+)?AS\s*\(", re.I)
_INDEX_KEY = re.compile(rf"\sON\s+(?:{_NAME})\s*\(", re.I)
_WHERE = re.compile(r"\s*WHERE\s", re.I)
_TRIGGER_HEAD = re.compile(
    rf"^\s*CREATE\s+(?:TEMP\s+|TEMPORARY\s+)?TRIGGER\s+(?:IF\s+NOT\s+EXISTS\s+)?(?:{_NAME})\s+",
    re.I,
)
_QUOTED_OR_PAREN = re.compile(r'"(?:[^"]|"")*"|\'(?:[^\']|\'\')*\'|`(?:[^`]|``)*`|\[[^\]]*\]|[()]')
_QUOTED_PLAIN = re.compile(r"'(?:[^']|'')*'|[\"`\[]([A-Za-z_][\w$]*)[\"`\]]")


@dataclass(frozen=True)
class ColumnDdl:
    collation: str | None = None
    autoincrement: bool = False
    generated: str | None = None


@dataclass
class TableDdl:
    columns: dict[str, ColumnDdl] = field(default_factory=dict)
    checks: list[Check] = field(default_factory=list)
    uniques: dict[tuple[str, ...], str] = field(default_factory=dict)  # names by columns
    # (name, options) by (columns, referred table in lower case)
    foreign_keys: dict[tuple[tuple[str, ...], str], tuple[str | None, str | None]] = field(
        default_factory=dict
    )
    primary_key_name: str | None = None
    options: tuple[str, ...] = ()


@functools.lru_cache(maxsize=8192)  # a schema read again (verify) parses only what changed
def parse_table(sql: str) -> TableDdl:
    """The parts of a ``CREATE TABLE`` statement the PRAGMAs do not tell."""
    found = TableDdl()
    start = mask(sql).find("(")
    end = closing(sql, start) if start >= 0 else None
    if end is None:  # a virtual table: CREATE VIRTUAL TABLE t USING fts5(...)
        return found
    tail = sql[end + 1 :]
    found.options = tuple(o.upper() for o in split_top(tail) if o)
    body = sql[start + 1 : end]
    masked_body = mask(body)
    begin = 0
    for at in [m.start() for m in re.finditer(",", masked_body)] + [len(body)]:
        item, masked = body[begin:at], masked_body[begin:at]
        begin = at + 1
        if _TABLE_CONSTRAINT.match(masked):
            _constraints(found, item, masked, column=None)
        elif item.strip():
            column = _column(item, masked)
            found.columns[column[0]] = column[1]
            _constraints(found, item, masked, column=column[0])
    return found


@functools.lru_cache(maxsize=8192)
def parse_index(sql: str) -> tuple[tuple[str, ...], str | None]:
    """A ``CREATE INDEX``'s keys as written, and its WHERE (a partial index's predicate)."""
    masked = mask(sql)
    match = _INDEX_KEY.search(masked)
    end = closing(sql, match.end() - 1) if match else None
    if match is None or end is None:
        return (squeeze(sql),), None
    keys = tuple(bare(k) for k in split_top(sql[match.end() : end]))
    where = _WHERE.match(sql, end + 1)
    return keys, bare(unwrap(squeeze(sql[where.end() :]))) if where else None


def trigger_text(sql: str) -> str:
    """A trigger's definition after its name: ``AFTER INSERT ON t BEGIN ... END``."""
    return bare(squeeze(_TRIGGER_HEAD.sub("", sql)))


def bare(text: str) -> str:
    """Double-quoted (or backticked, bracketed) plain identifiers without their quotes."""
    return _QUOTED_PLAIN.sub(lambda m: m[1] if m[1] else m[0], text)


def mask(text: str) -> str:
    """``text`` with what is inside quotes or parentheses blanked (same length)."""
    out, depth, at = [], 0, 0
    for token in _QUOTED_OR_PAREN.finditer(text):
        between = text[at : token.start()]
        out.append(" " * len(between) if depth else between)
        found = token[0]
        if found in "()":
            depth += 1 if found == "(" else -1
            out.append(found)
        else:  # a quoted string or name: its quotes stay
            out.append(found[0] + " " * (len(found) - 2) + found[-1])
        at = token.end()
    rest = text[at:]
    out.append(" " * len(rest) if depth else rest)
    return "".join(out)


def _column(item: str, masked: str) -> tuple[str, ColumnDdl]:
    name = re.match(rf"\s*({_NAME})", item)
    column = _unquote(name[1]) if name else squeeze(item)
    collation = _COLLATE.search(masked)
    generated = _GENERATED.search(masked)
    end = closing(item, generated.end() - 1) if generated else None
    return column, ColumnDdl(
        collation=_unquote(item[collation.start(1) : collation.end(1)]).upper()
        if collation
        else None,
        autoincrement=bool(_AUTOINCREMENT.search(masked)),
        generated=bare(unwrap(squeeze(item[generated.end() : end]))) if generated and end else None,
    )


def _constraints(found: TableDdl, item: str, masked: str, column: str | None) -> None:
    """The constraints of one column definition (``column``) or table constraint (None)."""
    for match in _CONSTRAINT.finditer(masked):
        name = _unquote(item[match.start(1) : match.end(1)]) if match[1] else None
        kind = re.sub(r"\s+", " ", match[2].upper())
        paren = masked.find("(", match.end())
        group = item[paren + 1 : closing(item, paren)] if paren >= 0 else ""
        if kind == "PRIMARY KEY":
            found.primary_key_name = name
        elif kind == "CHECK":
            found.checks.append(Check(bare(unwrap(squeeze(group))), name))
        elif kind == "UNIQUE" and name:
            found.uniques[_columns(group) if column is None else (column,)] = name
        elif kind == "FOREIGN KEY" or (kind == "REFERENCES" and column is not None):
            referred = _REFERENCES.search(masked, match.start())
            if referred is None:
                continue
            table = _unquote(item[referred.start(1) : referred.end(1)]).lower()
            columns = _columns(group) if kind == "FOREIGN KEY" else (str(column),)
            rest = masked[referred.end() :]
            found.foreign_keys[columns, table] = (name, _fk_options(rest))


def _fk_options(rest: str) -> str | None:
    options = []
    match = _MATCH.search(rest)
    if match and match[1].upper() != "SIMPLE":
        options.append(f"MATCH {match[1].upper()}")
    deferrable = _DEFERRABLE.search(rest)
    if deferrable and not deferrable[1]:
        options.append("DEFERRABLE")
        if (deferrable[2] or "").upper() == "DEFERRED":
            options.append("INITIALLY DEFERRED")
    return " ".join(options) or None


def _columns(text: str) -> tuple[str, ...]:
    """The columns of a constraint's column list (each item's first word, unquoted)."""
    return tuple(_unquote(m[1]) for m in re.finditer(rf"(?:^|,)\s*({_NAME})", text))


def _unquote(name: str) -> str:
    if name[0] == "[":
        return name[1:-1]
    if name[0] in "\"'`":
        return name[1:-1].replace(name[0] * 2, name[0])
    return name
