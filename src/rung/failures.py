"""What a failed migration did, in words: the message of ``MigrationFailed`` says what the
database kept, what was rolled back with it, whether the connection was lost rather than
the code wrong, and what to do next. Never an atomicity the database cannot give."""

from __future__ import annotations

from collections.abc import Iterator, Sequence

import sqlalchemy as sa

from rung.dialects.base import Dialect
from rung.errors import MigrationFailed, RungError, clip
from rung.migration import Migration, Statement
from rung.plan import SHOWN_SQL, Direction

# Driver errors that only say the connection is gone, or that its state is now broken.
_LOST_NAMES = {"ConnectionDoesNotExistError", "InternalClientError", "ConnectionResetError"}


class Failed(Exception):
    """A migration's code raised; carries what it had done, for the record and the message."""

    def __init__(
        self,
        migration: Migration,
        direction: Direction,
        cause: BaseException,
        statements: list[Statement],
        duration_ms: float,
        failing: str | None = None,
    ) -> None:
        super().__init__(migration.name)
        self.migration = migration
        self.direction = direction
        self.cause = cause
        self.statements = statements  # those that completed
        self.duration_ms = duration_ms
        self.failing = failing  # the statement the database refused or lost, if one did


def failure(
    failed: Failed,
    dialect: Dialect,
    *,
    done: Sequence[object],
    rolled_back: Sequence[str] | None = None,
    kept: Sequence[Statement] = (),
    in_flight: Statement | None = None,
    half_made: Sequence[str] = (),
) -> MigrationFailed:
    """The error for ``failed``: rolled back with its batch (``rolled_back`` not None: the
    names of the batch's earlier migrations), or alone with ``kept`` statements."""
    name, direction = failed.migration.name, failed.direction.value
    lost = is_lost(failed.cause)
    cause = "the connection to the database was lost" if lost else ""
    shown_cause = _cause_text(failed.cause)
    cause = f"{cause} ({shown_cause})" if lost and shown_cause else cause or shown_cause
    earlier = [getattr(e, "name", str(e)) for e in done]
    fix = "check the server, then run again" if lost else "fix the migration and run again"
    if rolled_back is not None:
        outcome = "rolled back: the database holds nothing of it"
        if rolled_back:
            outcome += (
                f", nor of {', '.join(rolled_back)}, which ran before it in the same "
                "transaction and were rolled back with it"
            )
        if earlier:
            outcome += f"; committed before it in this run: {', '.join(earlier)}"
        hint = fix
    elif half_made:
        objects = ", ".join(half_made)
        outcome = (
            f"it left {objects} half-made (INVALID), which rung did not drop because it "
            "cannot be sure that is this migration's own"
        )
        hint = (
            f"drop it by hand (DROP INDEX CONCURRENTLY {half_made[0]}), then "
            f"'rung repair {name} --not-applied' and run again"
        )
    elif not kept and not in_flight:
        before = "pending" if direction == "up" else "applied"
        outcome = f"the database kept none of its statements, so it stays {before}"
        hint = fix
    else:
        statements = "; ".join(clip(s.sql, SHOWN_SQL) for s in kept)
        outcome = (
            f"the database kept {len(kept)} statement(s) it had run before the failure: "
            f"{statements}"
            if kept
            else "the database kept none of the statements it had completed"
        )
        if in_flight is not None:
            outcome += (
                f"; it was sending {clip(in_flight.sql, SHOWN_SQL)} when the connection was "
                "lost, and that one may or may not have gone through: look whether it did"
            )
        hint = (
            f"undo or finish those by hand, then 'rung repair {name} --applied' or '--not-applied'"
        )
    return MigrationFailed(
        f"migration {name} failed ({direction}): {cause}; {outcome}; {hint}",
        name=name,
        direction=direction,
        cause=failed.cause,
        committed=[s.sql for s in kept],
        rolled_back=rolled_back or (),
        done=earlier,
        lost_connection=lost,
    )


def in_flight_kept(dialect: Dialect, failed: Failed, in_transaction: bool) -> bool:
    """Whether the statement in flight when the connection was lost may have gone through:
    outside a transaction, or one that commits by itself (MySQL's DDL)."""
    if failed.failing is None or not is_lost(failed.cause):
        return False
    probe = Statement(failed.failing, None, 0.0)
    return bool(dialect.kept_after_failure([probe], in_transaction, failed.failing))


def is_lost(exc: BaseException) -> bool:
    """Whether ``exc`` (or what caused it) says the connection is gone."""
    for e in _chain(exc):
        if isinstance(e, sa.exc.DBAPIError) and e.connection_invalidated:
            return True
        if isinstance(e, (ConnectionError, EOFError)) or type(e).__name__ in _LOST_NAMES:
            return True
    return False


def one_line(exc: BaseException) -> str:
    orig = getattr(exc, "orig", None)
    shown = orig if orig is not None else exc
    if isinstance(exc, RungError):
        return exc.message
    text = str(shown).strip()
    first = text.splitlines()[0] if text else ""
    return clip(f"{type(shown).__name__}: {first}", 500)


def _cause_text(exc: BaseException) -> str:
    """The cause worth showing: a driver's internal state error after a lost connection
    (asyncpg's 'cannot switch to state') gives way to the error before it, if any."""
    if isinstance(exc, RungError):
        return exc.message
    for e in _chain(exc):
        inner = getattr(e, "orig", None) or e
        if type(inner).__name__ != "InternalClientError":
            return one_line(e)
    return ""


def _chain(exc: BaseException) -> Iterator[BaseException]:
    seen: set[int] = set()
    current: BaseException | None = exc
    while current is not None and id(current) not in seen:
        seen.add(id(current))
        yield current
        orig = getattr(current, "orig", None)
        if isinstance(orig, BaseException) and id(orig) not in seen:
            yield orig
            seen.add(id(orig))
        current = current.__cause__ or current.__context__
