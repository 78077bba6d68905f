"""The planner: (registry, history, request) -> a plan, or a precise refusal. No I/O.

Every decision about what runs lives here: which migrations are pending, what a
downgrade reverses, which histories are refused and why, how migrations are grouped into
transactions, and what ``repair`` and ``baseline`` change. The runner only executes.
"""

from __future__ import annotations

import enum
from collections.abc import Sequence
from dataclasses import dataclass, replace
from datetime import datetime

from rung.errors import (
    ChecksumMismatch,
    Irreversible,
    NeedsRepair,
    OutOfOrder,
    UnknownApplied,
    UnknownTarget,
    UsageError,
    clip,
)
from rung.migration import Migration, Statement

SHOWN_SQL = 120  # characters of a kept statement in a message; 'rung show' has it all


class Value(str, enum.Enum):
    """An enum whose ``str()`` and f-string form is its plain value (``applied``, not
    ``State.APPLIED``), on every Python rung supports."""

    def __str__(self) -> str:
        return str(self.value)

    def __format__(self, spec: str) -> str:
        return format(str(self.value), spec)


class Direction(Value):
    UP = "up"
    DOWN = "down"


class State(Value):
    APPLIED = "applied"
    PENDING = "pending"
    MODIFIED = "modified"  # applied, but its code changed since
    FAILED = "failed"  # failed part-way where the database could not roll back
    RUNNING = "running"  # started where the database cannot roll back, never finished
    UNKNOWN = "unknown"  # in the history, not in the registry


@dataclass(frozen=True)
class Record:
    """One row of the tracking table."""

    name: str
    checksum: str
    state: str  # "applied", "failed" or "running"
    applied_at: datetime | None = None
    duration_ms: float | None = None
    direction: str = "up"  # of the run that failed or was interrupted
    error: str | None = None
    statements: tuple[Statement, ...] = ()  # those the database kept
    in_flight: Statement | None = None  # sent when the run stopped: kept or not, unknown
    untouched: bool = False  # running, and known to have sent nothing to the database


@dataclass(frozen=True)
class MigrationState:
    """What ``status`` reports for one migration."""

    name: str
    state: State
    applied_at: datetime | None = None
    duration_ms: float | None = None
    checksum: str | None = None  # of the code; None for unknown entries
    recorded_checksum: str | None = None
    error: str | None = None
    statements: tuple[Statement, ...] = ()
    in_flight: Statement | None = None


@dataclass(frozen=True)
class Request:
    direction: Direction
    steps: int | None = None  # None: as many as there are
    to: str | None = None  # up: up to and including it; down: down to it, keeping it applied
    out_of_order: bool = False


@dataclass(frozen=True)
class Batch:
    """Migrations run together. ``in_transaction``: inside BEGIN/COMMIT. ``atomic``: the
    database can roll the whole batch back (transactional DDL), so no failed state is needed."""

    direction: Direction
    migrations: tuple[Migration, ...]
    in_transaction: bool
    atomic: bool


@dataclass(frozen=True)
class Plan:
    batches: tuple[Batch, ...]
    warnings: tuple[str, ...] = ()

    @property
    def migrations(self) -> tuple[Migration, ...]:
        return tuple(m for b in self.batches for m in b.migrations)


def plan(
    migrations: Sequence[Migration],
    history: Sequence[Record],
    request: Request,
    *,
    transactional_ddl: bool,
    per_migration: bool = False,
    locked: bool = True,
) -> Plan:
    """What to run for ``request``, grouped into batches; raises a ``PlanRefused`` subclass.

    ``locked=False`` plans before the lock is taken: a migration marked running may be in
    progress in another process right now, so it counts as not applied (the run then takes
    the lock, and plans again: a mark still there under the lock is an interrupted run).
    A mark whose migration sent nothing is no mark: the migration is as it was before.
    """
    if not locked:
        history = [r for r in history if r.state != "running"]
    history = [_settled(r) for r in history if not (r.untouched and r.direction == "up")]
    if request.steps is not None and request.steps < 1:
        raise UsageError(f"steps must be a positive number, not {request.steps}; use -n 1 or more")
    index = {m.name: i for i, m in enumerate(migrations)}
    check_target(migrations, request.to)
    warnings = check_history(migrations, history)
    applied = {r.name for r in history}
    if request.direction is Direction.UP:
        chosen = _pending(migrations, applied, index, request)
    else:
        chosen = _to_reverse(migrations, history, applied, index, request)
    return Plan(_batches(request.direction, chosen, transactional_ddl, per_migration), warnings)


def check_target(migrations: Sequence[Migration], to: str | None) -> None:
    """Refuse a ``to`` that names no registered migration."""
    if to is not None and all(m.name != to for m in migrations):
        raise UnknownTarget(
            f"--to {to} names no registered migration; run 'rung status' for the names",
            names=[to],
        )


def check_history(migrations: Sequence[Migration], history: Sequence[Record]) -> tuple[str, ...]:
    """Refuse histories a run must not touch; return warnings for the ones it may."""
    history = _by_name(history)  # the table has no order: name the oldest problem first
    broken = [r for r in history if r.state != "applied"]
    if broken:
        raise NeedsRepair(_needs_repair(broken[0]), names=[r.name for r in broken])
    registered = {m.name: m for m in migrations}
    interleaved, future = unknown_entries(migrations, history)
    if interleaved:
        raise UnknownApplied(
            f"migration {interleaved[0]} is recorded as applied but is not in the registry"
            f"{_more(interleaved)}; restore its module and register it, or run "
            f"'rung repair {interleaved[0]} --not-applied' once its changes are undone",
            names=interleaved,
        )
    modified = [
        r.name
        for r in history
        if r.name in registered and registered[r.name].checksum != r.checksum
    ]
    if modified:
        raise ChecksumMismatch(
            f"migration {modified[0]} was changed after it was applied{_more(modified)}; "
            f"restore its code, or accept the change with 'rung repair {modified[0]}'",
            names=modified,
        )
    if future:
        return (
            f"{len(future)} applied migration(s) newer than this registry ({future[-1]}): "
            "a newer release applied them; going on",
        )
    return ()


def unknown_entries(
    migrations: Sequence[Migration], history: Sequence[Record]
) -> tuple[list[str], list[str]]:
    """History entries the registry does not know, by name: those among the registered
    names (an error) and those newer than all of them (a newer release's: warn, go on)."""
    registered = {m.name for m in migrations}
    newest = max(registered, default="")
    unknown = sorted(r.name for r in history if r.name not in registered)
    return [n for n in unknown if n <= newest], [n for n in unknown if n > newest]


def _settled(record: Record) -> Record:
    """A down interrupted before it sent anything leaves its migration applied."""
    if not record.untouched:
        return record
    return replace(record, state="applied", direction="up", untouched=False)


def _needs_repair(record: Record) -> str:
    failed = record.state == "failed"
    how = "failed part-way" if failed else "was interrupted part-way"
    kept = ""
    if record.statements:
        shown = "; ".join(clip(s.sql, SHOWN_SQL) for s in record.statements[:3])
        more = f" and {len(record.statements) - 3} more" if len(record.statements) > 3 else ""
        kept = f"; the database kept: {shown}{more}"
    elif record.in_flight is not None:
        kept = "; the database kept none of its statements before the last"
    if record.in_flight is not None:
        kept += (
            f"; it had sent {clip(record.in_flight.sql, SHOWN_SQL)} when it stopped, which may "
            "or may not have gone through: look whether it did"
        )
    elif not record.statements and not failed:
        kept = "; the database may hold part of it"  # recorded by a rung before 0.3
    elif not failed:
        kept += ", and perhaps the statement after those"  # recorded by a rung before 0.3
    return (
        f"migration {record.name} {how} ({record.direction}){kept}; inspect the schema "
        f"('rung show {record.name}'), undo or finish it, then run "
        f"'rung repair {record.name} --applied' or '--not-applied'"
    )


def _by_name(history: Sequence[Record]) -> list[Record]:
    return sorted(history, key=lambda r: r.name)


def _count(n: int, noun: str) -> str:
    return f"{n} {noun}" if n == 1 else f"{n} {noun}s"


def _more(names: Sequence[str]) -> str:
    return f" (and {len(names) - 1} more)" if len(names) > 1 else ""


def _pending(
    migrations: Sequence[Migration], applied: set[str], index: dict[str, int], request: Request
) -> list[Migration]:
    pending = [m for m in migrations if m.name not in applied]
    if request.to is not None:
        pending = [m for m in pending if index[m.name] <= index[request.to]]
    last_applied = max((index[n] for n in applied if n in index), default=-1)
    late = [m.name for m in pending if index[m.name] < last_applied]
    if late and not request.out_of_order:
        raise OutOfOrder(
            f"migration {late[0]} is pending but older than applied migration "
            f"{migrations[last_applied].name}{_more(late)}; apply it anyway with --out-of-order "
            "(out_of_order=True), or give it a newer name",
            names=late,
        )
    return pending[: request.steps]


def _to_reverse(
    migrations: Sequence[Migration],
    history: Sequence[Record],
    applied: set[str],
    index: dict[str, int],
    request: Request,
) -> list[Migration]:
    future = sorted(r.name for r in history if r.name not in index)
    if future:
        raise UnknownApplied(
            f"migration {future[-1]} was applied by a newer release and this registry cannot "
            "reverse it; downgrade with the release that has it",
            names=future,
        )
    chosen = [m for m in reversed(migrations) if m.name in applied]
    if request.to is not None:
        chosen = [m for m in chosen if index[m.name] > index[request.to]]
    chosen = chosen[: request.steps]
    irreversible = [m.name for m in chosen if m.down is None]
    if irreversible:
        first = irreversible[0]
        after = [m.name for m in chosen[: [m.name for m in chosen].index(first)]]
        partial = (
            f"; 'rung down --to {first}' reverts only the {_count(len(after), 'migration')} "
            "after it"
            if after
            else ""
        )
        raise Irreversible(
            f"migration {first} has no down, so this downgrade would cross an irreversible "
            f"step{_more(irreversible)}; write its down, or, for a database you can throw "
            f"away, start over with 'rung fresh'{partial}",
            names=irreversible,
        )
    return chosen


def _batches(
    direction: Direction,
    chosen: Sequence[Migration],
    transactional_ddl: bool,
    per_migration: bool,
) -> tuple[Batch, ...]:
    """Group consecutive migrations the database can roll back together into one batch;
    everything else (non-transactional, MySQL, per-migration mode) runs alone."""
    batches: list[Batch] = []
    group: list[Migration] = []
    for m in chosen:
        atomic = transactional_ddl and m.transactional
        if atomic and not per_migration:
            group.append(m)
            continue
        if group:
            batches.append(Batch(direction, tuple(group), in_transaction=True, atomic=True))
            group = []
        batches.append(Batch(direction, (m,), in_transaction=m.transactional, atomic=atomic))
    if group:
        batches.append(Batch(direction, tuple(group), in_transaction=True, atomic=True))
    return tuple(batches)


def states(migrations: Sequence[Migration], history: Sequence[Record]) -> list[MigrationState]:
    """Every registered migration's state in registry order, then the history entries the
    registry does not know: unknown, or failed or running where that is what they are. A
    mark whose migration sent nothing is no mark (the next run clears it)."""
    history = [_settled(r) for r in history if not (r.untouched and r.direction == "up")]
    records = {r.name: r for r in history}
    result = []
    for m in migrations:
        r = records.pop(m.name, None)
        if r is None:
            result.append(MigrationState(m.name, State.PENDING, checksum=m.checksum))
            continue
        if r.state != "applied":
            state = _unfinished(r)
        else:
            state = State.MODIFIED if r.checksum != m.checksum else State.APPLIED
        result.append(_from_record(r, state, m.checksum))
    result.extend(
        _from_record(r, State.UNKNOWN if r.state == "applied" else _unfinished(r), None)
        for r in _by_name(history)
        if r.name in records
    )
    return result


def _unfinished(r: Record) -> State:
    return State.FAILED if r.state == "failed" else State.RUNNING


def outstanding(found: Sequence[MigrationState]) -> list[MigrationState]:
    """What a deploy gate stops on: anything an ``upgrade`` would run or refuse. Unknown
    entries newer than every registered migration (a newer release's) pass; unknown ones
    among the registered names do not."""
    newest = max((s.name for s in found if s.state is not State.UNKNOWN), default="")
    return [
        s
        for s in found
        if s.state is not State.APPLIED and (s.state is not State.UNKNOWN or s.name <= newest)
    ]


def _from_record(r: Record, state: State, checksum: str | None) -> MigrationState:
    return MigrationState(
        r.name,
        state,
        r.applied_at,
        r.duration_ms,
        checksum,
        r.checksum,
        r.error,
        r.statements,
        r.in_flight,
    )


class Resolution(Value):
    ACCEPT_CHECKSUM = "accept the changed checksum"
    MARK_APPLIED = "mark as applied"
    MARK_NOT_APPLIED = "mark as not applied"


@dataclass(frozen=True)
class Repair:
    name: str
    resolution: Resolution
    checksum: str | None  # the checksum to record, for ACCEPT_CHECKSUM and MARK_APPLIED


def plan_repair(
    migrations: Sequence[Migration],
    history: Sequence[Record],
    name: str | None = None,
    applied: bool | None = None,
) -> list[Repair]:
    """What ``repair`` changes. Without a name: accept every changed checksum, and refuse
    failed or interrupted ones (a person must say whether their changes stayed)."""
    registered = {m.name: m for m in migrations}
    records = {r.name: r for r in history}
    if name is not None and name not in registered and name not in records:
        raise UnknownTarget(
            f"{name} is neither registered nor in the history; run 'rung status' for the names",
            names=[name],
        )
    if applied is not None and name is None:
        raise UsageError("--applied and --not-applied need a migration name: rung repair NAME ...")
    if applied is False:
        return [Repair(name, Resolution.MARK_NOT_APPLIED, None)] if name in records else []
    if applied is True:
        assert name is not None
        if name not in registered:
            raise UnknownTarget(
                f"{name} is not registered, so rung has no checksum to record for it; register "
                "it, or remove it from the history with --not-applied",
                names=[name],
            )
        record = records.get(name)
        checksum = registered[name].checksum
        if record is not None and record.state == "applied" and record.checksum == checksum:
            return []
        return [Repair(name, Resolution.MARK_APPLIED, checksum)]
    repairs = []
    for r in _by_name(history):
        if name is not None and r.name != name:
            continue
        if r.state != "applied":
            raise NeedsRepair(_needs_repair(r), names=[r.name])
        m = registered.get(r.name)
        if m is not None and m.checksum != r.checksum:
            repairs.append(Repair(r.name, Resolution.ACCEPT_CHECKSUM, m.checksum))
    return repairs


def plan_replay(
    migrations: Sequence[Migration], history: Sequence[Record]
) -> tuple[list[Migration], tuple[str, ...]]:
    """What a replay of ``history`` on an empty database applies (the migrations recorded
    as applied, in registry order), with warnings; refuses a history that cannot be
    replayed: a failed migration, or unknown ones among the registered."""
    failed = sorted(r.name for r in history if r.state != "applied")
    if failed:
        raise NeedsRepair(
            f"migration {failed[0]} failed part-way on this database, so its schema cannot be "
            f"replayed; inspect it and run 'rung repair {failed[0]} --applied' or '--not-applied'",
            names=failed,
        )
    interleaved, future = unknown_entries(migrations, history)
    if interleaved:
        raise UnknownApplied(
            f"migration {interleaved[0]} is recorded as applied but is not in the registry, "
            "so it cannot be replayed; run with the release that has it",
            names=interleaved,
        )
    warnings = []
    if future:  # a newer release's: upgrade warns and goes on, and so does a replay
        warnings.append(
            f"{len(future)} applied migration(s) newer than this registry ({future[-1]}) "
            "cannot be replayed; the scratch database lacks what they made"
        )
    recorded = {r.name: r.checksum for r in history}
    chosen = [m for m in migrations if m.name in recorded]
    warnings.extend(
        f"migration {m.name} changed since it was applied; replaying its code"
        for m in chosen
        if m.checksum != recorded[m.name]
    )
    return chosen, tuple(warnings)


def plan_baseline(
    migrations: Sequence[Migration], history: Sequence[Record], to: str | None = None
) -> list[Migration]:
    """The migrations ``baseline`` records as applied without running: pending ones up to ``to``."""
    chosen = plan(migrations, history, Request(Direction.UP, to=to), transactional_ddl=True)
    return list(chosen.migrations)
