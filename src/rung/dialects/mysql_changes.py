"""MariaDB's fingerprint for verify: after the first, read again only the tables that the
statements sent since the last one name.

MariaDB keeps nothing that says which tables changed (no row versions in its catalog;
``CREATE_TIME`` counts whole seconds), so the statements themselves say it: every
statement sent on the connection is seen (SQLAlchemy's cursor events, as the journal sees
a migration's), and each is sorted into one of three kinds. Reads and data changes
(``SELECT``, ``INSERT``, ``UPDATE``, ``TRUNCATE``, ``ANALYZE`` ...) change no definition:
MariaDB refuses DDL inside functions and triggers. DDL whose form is known (``CREATE`` /
``ALTER`` / ``DROP`` of a table, index, view, sequence or trigger on a table, ``RENAME
TABLE``, routines) names what it changes. Anything else (``CALL``, ``EXECUTE``, ``USE``,
an executable comment, a statement that is not one) reads everything again.

A changed table is read again together with the tables whose foreign keys name it (a
renamed column or table renames their references) and every view (a view's columns take
their types from its tables and the functions it calls). Each table's rows are one part of
the fingerprint, whose digest is added to a running sum, so a step costs what it changed,
not the schema's size. A statement sent on the driver's own connection is not seen; the
session's count of DDL statements, read with the tables, tells it was sent, and
everything is read again.
"""

from __future__ import annotations

import json
import re
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from typing import Any

import sqlalchemy as sa

from rung.dialects import mysql_catalog as q
from rung.dialects import mysql_schema
from rung.dialects.base import digest

_MODULUS = 2**256
# A statement's tokens: quoted names and strings first, so that a comment's mark inside
# one is not taken for a comment; comments and spaces are dropped, "/*!" (an executable
# comment, whose text MariaDB runs) is kept as a token of its own.
_TOKEN = re.compile(
    r"""(?P<skip>\s+|/\*(?!!).*?\*/|(?:--\s|\#)[^\n]*)"""
    r"""|`(?:[^`]|``)*`|'(?:[^'\\]|\\.|'')*'|"(?:[^"\\]|\\.|"")*"|/\*!|[\w$]+|\S""",
    re.DOTALL,
)
# Statements that change no definition (data, reads, transactions, statistics).
_NO_DDL = {
    "SELECT", "INSERT", "UPDATE", "DELETE", "REPLACE", "WITH", "VALUES", "TABLE", "SET",
    "SHOW", "DESCRIBE", "DESC", "EXPLAIN", "BEGIN", "START", "COMMIT", "ROLLBACK",
    "SAVEPOINT", "RELEASE", "DO", "TRUNCATE", "ANALYZE", "OPTIMIZE", "CHECK", "CHECKSUM",
    "LOCK", "UNLOCK", "XA", "LOAD", "FLUSH",
}  # fmt: skip
_ROUTINE = {"PROCEDURE", "FUNCTION"}
_RELATION = {"TABLE", "VIEW", "SEQUENCE"}
_MODIFIERS = {"OR", "REPLACE", "ONLINE", "IGNORE", "TEMPORARY", "UNIQUE", "FULLTEXT", "SPATIAL"}
_VIEW_OPTIONS = {"ALGORITHM", "DEFINER", "SQL", "SECURITY", "AGGREGATE"}
_KINDS_AFTER_OPTIONS = {"VIEW", "TRIGGER", "PROCEDURE", "FUNCTION", "EVENT"}

# Each kind of row the reader uses, per table: its name, a tag, the row as JSON text (in
# one UNION ALL, so one round trip reads every kind of every table asked for).
_KINDS = (
    ("TABLES", "TABLE_SCHEMA", "TABLE_NAME", "TABLE_TYPE, ENGINE, TABLE_COLLATION, "
     "CREATE_OPTIONS, TABLE_COMMENT", ""),
    ("COLUMNS", "TABLE_SCHEMA", "TABLE_NAME", "ORDINAL_POSITION, COLUMN_NAME, COLUMN_TYPE, "
     "IS_NULLABLE, COLUMN_DEFAULT, EXTRA, GENERATION_EXPRESSION, COLLATION_NAME, "
     "COLUMN_COMMENT", ""),
    ("STATISTICS", "TABLE_SCHEMA", "TABLE_NAME", "INDEX_NAME, SEQ_IN_INDEX, NON_UNIQUE, "
     "COLUMN_NAME, SUB_PART, COLLATION, INDEX_TYPE, INDEX_COMMENT", ""),
    ("KEY_COLUMN_USAGE", "TABLE_SCHEMA", "TABLE_NAME", "REFERENCED_TABLE_NAME, "
     "CONSTRAINT_NAME, ORDINAL_POSITION, COLUMN_NAME, REFERENCED_COLUMN_NAME",
     " AND REFERENCED_TABLE_NAME IS NOT NULL"),
    ("REFERENTIAL_CONSTRAINTS", "CONSTRAINT_SCHEMA", "TABLE_NAME", "CONSTRAINT_NAME, "
     "DELETE_RULE, UPDATE_RULE", ""),
    ("CHECK_CONSTRAINTS", "CONSTRAINT_SCHEMA", "TABLE_NAME", "CONSTRAINT_NAME, CHECK_CLAUSE",
     ""),
    ("VIEWS", "TABLE_SCHEMA", "TABLE_NAME", "VIEW_DEFINITION, CHECK_OPTION, SECURITY_TYPE",
     ""),
    ("TRIGGERS", "EVENT_OBJECT_SCHEMA", "EVENT_OBJECT_TABLE", "TRIGGER_NAME, ACTION_TIMING, "
     "EVENT_MANIPULATION, ACTION_ORIENTATION, ACTION_ORDER, ACTION_STATEMENT", ""),
)  # fmt: skip
_TABLES, _FOREIGN_KEYS = "TABLES", "KEY_COLUMN_USAGE"
_DDL = "DDL"
# The session's count of statements that change definitions, or may run others that do:
# one it counts that the statements seen do not account for was sent around SQLAlchemy.
_DDL_COUNT = (
    f"SELECT NULL, '{_DDL}', CAST(SUM(VARIABLE_VALUE) AS CHAR) "
    "FROM information_schema.SESSION_STATUS "
    "WHERE VARIABLE_NAME RLIKE '^COM_(CREATE|ALTER|DROP|RENAME)_' OR VARIABLE_NAME IN "
    "('COM_CALL_PROCEDURE', 'COM_EXECUTE_SQL', 'COM_EXECUTE_IMMEDIATE', 'COM_STMT_EXECUTE')"
)
_DATABASE = sa.text(
    "SELECT SCHEMA_NAME, DEFAULT_COLLATION_NAME FROM information_schema.SCHEMATA "
    "WHERE SCHEMA_NAME = DATABASE()"
)


def _parts_query(names: Sequence[str] | None) -> sa.TextClause:
    """Every row of the tables ``names`` (None: of every table) as (table, kind, JSON).
    Each table is asked by an equality on its name, which MariaDB looks up without opening
    any other table (it does not for ``IN``)."""
    selects = [_DDL_COUNT]
    for view, schema, table, columns, more in _KINDS:
        head = (
            f"SELECT {table}, '{view}', JSON_ARRAY({columns}) FROM information_schema.{view} "
            f"WHERE {schema} = DATABASE(){more}"
        )
        if names is None:
            selects.append(head)
        else:
            selects += [f"{head} AND {table} = {_string(n)}" for n in names]
    return sa.text(" UNION ALL ".join(selects).replace(":", "\\:"))


def _string(value: str) -> str:
    return "'" + value.replace("\\", "\\\\").replace("'", "''") + "'"


class Fingerprints:
    """Fingerprints of one database, taken again and again on one connection (another
    connection: everything is read again, and its statements are the ones seen)."""

    def __init__(self) -> None:
        self.conn: sa.Connection | None = None
        self.sent: list[str] = []  # statements sent on ``conn`` since the last fingerprint
        self.parts: dict[str, _Part] = {}
        self.total = 0  # the sum of the parts' digests
        self.rest: object = None
        self.ddl = 0  # the session's count of DDL statements at the last fingerprint
        self.full_reads = 0
        self.last_read: list[str] | None = None  # the tables the last one read (None: all)

    def __call__(self, conn: sa.Connection) -> str:
        if not getattr(conn.dialect, "is_mariadb", False):  # MySQL: not measured here
            return mysql_schema.fingerprint(conn)
        if conn is not self.conn:
            sa.event.listen(conn, "before_cursor_execute", self._seen, named=True)
            self.conn, self.sent = conn, []
            return self._read_all(conn)
        sent, self.sent = self.sent, []
        touched = changed_by(sent)
        if touched is None:
            return self._read_all(conn)
        tables, routines = touched
        names = self._around(tables) if tables or routines else []
        ddl = self._read(conn, names)
        if ddl - self.ddl > _ddl_statements(sent):  # DDL sent around SQLAlchemy
            return self._read_all(conn)
        self.ddl, self.last_read = ddl, names
        if routines:
            self.rest = _rest(conn)
        return self._digest()

    def _seen(self, conn: sa.Connection, statement: str, **_: Any) -> None:
        if conn is self.conn:
            self.sent.append(statement)

    def _digest(self) -> str:
        return digest((self.total, self.rest))

    def _around(self, tables: set[str]) -> list[str]:
        """``tables``, the tables whose foreign keys name one of them, and every view (its
        columns take their types from its tables and the functions it calls)."""
        names = tables | {n.lower() for n in tables}
        for name, part in self.parts.items():
            if part.view or part.references & names:
                names.add(name)
        return sorted(names)

    def _read_all(self, conn: sa.Connection) -> str:
        self.full_reads += 1
        self.last_read = None
        self.parts, self.total = {}, 0
        self.ddl = self._read(conn, None)
        self.rest = _rest(conn)
        return self._digest()

    def _read(self, conn: sa.Connection, names: Sequence[str] | None) -> int:
        """Read the tables ``names`` (None: all) again; return the session's DDL count."""
        by_table, ddl = mysql_schema.read_retrying(conn, lambda c: _rows_by_table(c, names))
        for table, found in by_table.items():
            old = self.parts.pop(table, None)
            if old is not None:
                self.total -= old.value
            if found:
                part = _Part.of(table, found)
                self.parts[table] = part
                self.total += part.value
        self.total %= _MODULUS
        return ddl


@dataclass(frozen=True)
class _Part:
    """A table's rows, as a number; the tables its foreign keys name; whether a view."""

    value: int
    references: frozenset[str]
    view: bool

    @classmethod
    def of(cls, table: str, rows: list[tuple[str, str]]) -> _Part:
        rows.sort()
        return cls(
            int(digest((table, rows)), 16),
            frozenset(str(json.loads(r)[0]) for k, r in rows if k == _FOREIGN_KEYS),
            any(k == _TABLES and json.loads(r)[0] == "VIEW" for k, r in rows),
        )


def _rows_by_table(
    conn: sa.Connection, names: Sequence[str] | None
) -> tuple[dict[str, list[tuple[str, str]]], int]:
    """Each table's rows (each of ``names``, present or not, or every table), a sequence's
    definition among them; and the session's count of DDL statements run."""
    by_table: dict[str, list[tuple[str, str]]] = {n: [] for n in names or ()}
    sequences, ddl = [], 0
    for table, kind, row in mysql_schema.checked_rows(conn, _parts_query(names)):
        if kind == _DDL:
            ddl = int(row)
            continue
        by_table.setdefault(table, []).append((kind, row))
        if kind == _TABLES and json.loads(row)[0] == "SEQUENCE":
            sequences.append(table)
    if sequences:
        query = mysql_schema.sequences_query(conn, sequences)
        for i, *definition in mysql_schema.checked_rows(conn, query):
            by_table[sequences[int(i)]].append(("SEQUENCE", repr(definition)))
    return by_table, ddl


def _rest(conn: sa.Connection) -> object:
    """What is not a table's: the database's default collation (``ALTER DATABASE`` reads
    everything again), the routines and their parameters."""
    return (
        [tuple(row) for row in conn.execute(_DATABASE)],
        [tuple(row) for row in conn.execute(q.ROUTINES)],
        [tuple(row) for row in conn.execute(q.PARAMETERS)],
    )


def changed_by(statements: Iterable[str]) -> tuple[set[str], bool] | None:
    """The tables ``statements`` may have changed, and whether they changed routines; None
    when one of them could have changed anything."""
    tables: set[str] = set()
    routines = False
    for statement in statements:
        found = _changed_by(statement)
        if found is None:
            return None
        tables |= found[0]
        routines |= found[1]
    return tables, routines


def _ddl_statements(statements: Iterable[str]) -> int:
    """How many of ``statements`` are ``CREATE``, ``ALTER``, ``DROP`` or ``RENAME``."""
    return sum(_tokens(s)[:1] in (["CREATE"], ["ALTER"], ["DROP"], ["RENAME"]) for s in statements)


def _tokens(statement: str) -> list[str]:
    found = (m for m in _TOKEN.finditer(statement) if m.lastgroup != "skip")
    return [m.group() for m in found]


def _changed_by(statement: str) -> tuple[set[str], bool] | None:
    tokens = _tokens(statement)
    while tokens and tokens[-1] == ";":
        tokens.pop()
    if not tokens:
        return set(), False
    if "/*!" in tokens or ";" in tokens:  # executable comments, several statements
        return None
    words = [t.upper() for t in tokens]
    if words[:2] == ["SET", "STATEMENT"]:  # SET STATEMENT ... FOR another statement
        return None
    if words[0] in _NO_DDL:  # "mysql": maybe a write to the system tables of routines
        return None if "MYSQL" in words else (set(), False)
    if words[0] == "RENAME" and words[1:2] in (["TABLE"], ["TABLES"]):
        names, j = set(), 2
        while j < len(tokens):
            if words[j] in ("TO", ","):
                j += 1
                continue
            name, j = _qualified(tokens, j)
            names.add(name)
        return names, False
    if words[0] not in ("CREATE", "ALTER", "DROP"):
        return None
    return _definition(words[0], tokens[1:], words[1:])


def _definition(verb: str, tokens: list[str], words: list[str]) -> tuple[set[str], bool] | None:
    """What ``CREATE``, ``ALTER`` or ``DROP`` (``verb``, then ``tokens``) changes."""
    i = 0
    while i < len(words) and words[i] in _MODIFIERS:
        i += 1
    if i < len(words) and words[i] in _VIEW_OPTIONS:  # up to the kind they qualify
        while i < len(words) and words[i] not in _KINDS_AFTER_OPTIONS:
            i += 1
    kind = words[i] if i < len(words) else ""
    if kind in _ROUTINE:
        return set(), True
    if kind in _RELATION:
        names, j = [], _skip_if_exists(words, i + 1)
        while j < len(tokens):
            name, j = _qualified(tokens, j)
            names.append(name)
            if verb != "DROP" or j >= len(words) or words[j] != ",":
                break
            j += 1
        if verb == "ALTER" and kind == "TABLE":
            names += _renamed_to(tokens, words, j)
        return set(names), False
    if kind in ("INDEX", "TRIGGER") and "ON" in words[i:] and (verb, kind) != ("DROP", "TRIGGER"):
        name, _ = _qualified(tokens, words.index("ON", i) + 1)
        return {name}, False
    return None  # a DROP TRIGGER names no table; databases, events, users: anything


def _skip_if_exists(words: list[str], i: int) -> int:
    while i < len(words) and words[i] in ("IF", "NOT", "EXISTS"):
        i += 1
    return i


def _qualified(tokens: list[str], i: int) -> tuple[str, int]:
    """The name at ``tokens[i]`` (``db.name`` gives ``name``) and where it ends."""
    name = _name(tokens[i]) if i < len(tokens) else ""
    i += 1
    while i + 1 < len(tokens) and tokens[i] == ".":
        name, i = _name(tokens[i + 1]), i + 2
    return name, i


def _renamed_to(tokens: list[str], words: list[str], i: int) -> list[str]:
    """The new names in an ``ALTER TABLE``'s ``RENAME [TO|AS] name`` clauses."""
    found = []
    for j in range(i, len(words) - 1):
        if words[j] != "RENAME" or words[j + 1] in ("COLUMN", "INDEX", "KEY", "CONSTRAINT"):
            continue
        k = j + 2 if words[j + 1] in ("TO", "AS") else j + 1
        found.append(_qualified(tokens, k)[0])
    return found


def _name(token: str) -> str:
    quote = token[:1]
    if quote in ("`", '"'):  # "name" is a name in ANSI_QUOTES mode, else refused
        return token[1:-1].replace(quote * 2, quote)
    return token
