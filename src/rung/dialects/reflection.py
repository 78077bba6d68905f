"""What the backends' schema readers share: normalising catalog text, finding brackets in
SQL, and dropping objects one by one.

A reader is a plain function ``(sync Connection) -> Snapshot`` in ``<backend>_schema.py``,
which the backend's ``Dialect.read_schema`` calls through ``AsyncConnection.run_sync``. Its
contract: a number of queries that does not grow with the number of tables, and normalised
text (types, defaults, check clauses, definitions) so that two databases made by the same
migrations give equal snapshots on the same backend (docs/schema-coverage.md says what each
reader sees).
"""

from __future__ import annotations

import re
from collections.abc import Sequence

import sqlalchemy as sa


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
