"""The journal: every statement a migration executes through the connection rung hands it,
with its parameters and duration, as SQLAlchemy's cursor events report them."""

from __future__ import annotations

import json
import textwrap
import time
import weakref
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import Any, ClassVar

import sqlalchemy as sa
from sqlalchemy import event
from sqlalchemy.ext.asyncio import AsyncConnection

from rung.history import MAX_SQL_CHARS
from rung.migration import Statement

MAX_PARAMS_CHARS = 2_000

# Told the statements completed so far and the one about to be sent.
Before = Callable[[list[Statement], Statement], None]


class Journal:
    """Records the statements executed on one connection: attached once per connection
    (adding and removing SQLAlchemy listeners for every migration cost more than a small
    migration's SQL), recording only inside ``recording()``."""

    _attached: ClassVar[weakref.WeakKeyDictionary[sa.Connection, Journal]] = (
        weakref.WeakKeyDictionary()
    )

    @classmethod
    def of(cls, conn: AsyncConnection) -> Journal:
        sync = conn.sync_connection
        assert sync is not None
        journal = cls._attached.get(sync)
        if journal is None:
            journal = cls._attached[sync] = cls()
            event.listen(sync, "before_cursor_execute", journal._before)
            event.listen(sync, "after_cursor_execute", journal._after)
        return journal

    def __init__(self) -> None:
        self.statements: list[Statement] = []
        self.pending: str | None = None  # the statement being executed, until it completes
        self._started = 0.0
        self._before_each: Before | None = None
        self._active = False

    @contextmanager
    def recording(self, before_each: Before | None = None) -> Iterator[Journal]:
        """Record from now on, afresh. ``before_each(completed, upcoming)`` is called before
        each statement is sent, with the statements completed so far and the one about to
        run (its SQL and parameters as the journal keeps them); what it executes on the
        connection is not recorded."""
        self.statements, self.pending, self._before_each = [], None, before_each
        self._active = True
        try:
            yield self
        finally:
            self._active = False

    def _before(self, conn: Any, cursor: Any, sql: str, params: Any, *rest: Any) -> None:
        if not self._active:
            return
        if self._before_each is not None:
            upcoming = Statement(as_kept(sql), as_json(params) if params else None, 0.0)
            self._active = False
            try:
                self._before_each(self.statements, upcoming)
            finally:
                self._active = True
        self.pending = sql
        self._started = time.perf_counter()

    def _after(self, conn: Any, cursor: Any, sql: str, params: Any, *rest: Any) -> None:
        if not self._active:
            return
        self.pending = None
        elapsed = (time.perf_counter() - self._started) * 1000
        shown = as_json(params) if params else None
        self.statements.append(Statement(as_kept(sql), shown, round(elapsed, 3)))


def as_kept(sql: str) -> str:
    """A statement as the journal keeps it: dedented, and past ``MAX_SQL_CHARS`` (what the
    history stores) cut with the cut marked, so that no one takes it for the whole."""
    text = textwrap.dedent(sql).strip()
    if len(text) <= MAX_SQL_CHARS:
        return text
    mark = f" ... (cut: {len(text):,} characters in all)"
    return text[: MAX_SQL_CHARS - len(mark)] + mark


def as_json(params: object) -> object:
    """Parameters as a JSON value (a driver's tuples become lists, other values strings);
    past ``MAX_PARAMS_CHARS`` of JSON, the start of that text, marked as cut."""
    text = json.dumps(params, default=str)
    if len(text) > MAX_PARAMS_CHARS:
        return text[:MAX_PARAMS_CHARS] + " ... (cut)"
    return json.loads(text)
