"""``verify``: prove on a scratch database that every ``down`` exactly reverses its ``up``.

For each migration in registry order: snapshot, up, snapshot, down, snapshot, up again,
snapshot. After ``down`` the schema must equal the one before ``up``; ``up`` run again must
not fail and must give the schema of its first run. At the end a full downgrade must leave
only what was there before the first migration checked.

The steps go through the runner (``rung.upgrade``'s path) on the scratch engine rather than
calling ``up``/``down`` directly: the real runner path is what production runs (its
transactions, SQLite's ``BEGIN IMMEDIATE``, MariaDB's per-migration commits, migrations
with ``transactional=False``), so verify proves that path, not a lookalike. The price, a
history read and a lock per step, is small next to the DDL. A step that raises stops the
checks (the scratch database is then in a state no later step can be judged from); schema
differences are reported and the checks go on.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from dataclasses import dataclass

from sqlalchemy.ext.asyncio import AsyncEngine

from rung.dialects import dialect_named
from rung.errors import MigrationFailed, RungError, UnknownTarget
from rung.history import History
from rung.migration import Migration
from rung.plan import Direction, Request
from rung.runner import Settings, run
from rung.schema import Difference, Snapshot, diff
from rung.scratch import scratch_database


@dataclass(frozen=True)
class Failure:
    """One migration that does not round-trip; ``step`` is 'up', 'down', 'up again' or
    'final downgrade'."""

    name: str
    step: str
    message: str
    differences: tuple[Difference, ...] = ()

    def __str__(self) -> str:
        return self.message


@dataclass(frozen=True)
class VerifyReport:
    checked: tuple[str, ...]  # migrations whose round trip ran to the end
    failures: tuple[Failure, ...] = ()
    irreversible: tuple[str, ...] = ()  # applied only: they have no down to check
    not_checked: tuple[str, ...] = ()  # after a step that raised

    @property
    def ok(self) -> bool:
        return not self.failures


async def verify(
    engine: AsyncEngine,
    migrations: Sequence[Migration],
    *,
    scratch_url: str | None = None,
    start_after: str | None = None,
    fail_fast: bool = False,
    table: str,
) -> VerifyReport:
    """Round-trip every migration (after ``start_after``, if given) on a scratch database
    derived from ``engine.url`` (or ``scratch_url``, which must not exist yet)."""
    names = [m.name for m in migrations]
    if start_after is not None and start_after not in names:
        raise UnknownTarget(
            f"--from {start_after} names no registered migration; run 'rung status' for the names",
            names=[start_after],
        )
    first = names.index(start_after) + 1 if start_after is not None else 0
    async with scratch_database(engine.url, scratch_url, purpose="verify") as scratch:
        trip = _RoundTrips(scratch, migrations, table)
        if start_after is not None:
            await trip.step(Direction.UP, to=start_after)
        return await trip.run(names[first:], floor=start_after)


class _RoundTrips:
    def __init__(self, scratch: AsyncEngine, migrations: Sequence[Migration], table: str) -> None:
        self.scratch = scratch
        self.migrations = migrations
        self.table = table
        self.history = History(table, dialect_named(scratch.dialect.name))
        self.failures: list[Failure] = []

    async def step(
        self, direction: Direction, steps: int | None = None, to: str | None = None
    ) -> None:
        """One run of the real runner; no snapshot stored for drift (this is scratch)."""
        request = Request(direction, steps, to)
        await run(self.scratch, self.migrations, request, Settings(table=self.table))

    async def snapshot(self) -> Snapshot:
        async with self.scratch.connect() as conn:
            return await self.history.read_schema(conn)

    async def run(self, names: Sequence[str], floor: str | None) -> VerifyReport:
        by_name = {m.name: m for m in self.migrations}
        checked: list[str] = []
        irreversible: list[str] = []
        base = before = await self.snapshot()  # what the final downgrade must come back to
        for position, name in enumerate(names):
            step = "up"
            try:
                await self.step(Direction.UP, steps=1)
                after_up = await self.snapshot()
                if by_name[name].down is None:
                    irreversible.append(name)
                    base = before = after_up
                    floor = name
                    continue
                step = "down"
                await self.step(Direction.DOWN, steps=1)
                self.compare(name, step, before, await self.snapshot())
                step = "up again"
                await self.step(Direction.UP, steps=1)
                before = await self.snapshot()
                self.compare(name, step, after_up, before)
            except RungError as exc:
                self.failures.append(_raised(name, step, exc))
                return self.report(checked, irreversible, names[position + 1 :])
            checked.append(name)
        await self.final_downgrade(names, floor, base)
        return self.report(checked, irreversible, ())

    async def final_downgrade(
        self, names: Sequence[str], floor: str | None, base: Snapshot
    ) -> None:
        if not names or names[-1] == floor:
            return
        oldest = names[names.index(floor) + 1] if floor in names else names[0]
        try:
            await self.step(Direction.DOWN, to=floor)  # to None: every one
        except RungError as exc:
            self.failures.append(_raised(getattr(exc, "name", oldest), "final downgrade", exc))
            return
        self.compare(oldest, "final downgrade", base, await self.snapshot())

    def compare(self, name: str, step: str, expected: Snapshot, actual: Snapshot) -> None:
        sides = {
            "down": ("before its up", "after its down"),
            "up again": ("after its first up", "after up again"),
            "final downgrade": ("before the first migration", "after the full downgrade"),
        }[step]
        found = diff(expected, actual, expected_as=sides[0], actual_as=sides[1])
        if found:
            self.failures.append(Failure(name, step, _message(name, step, found), tuple(found)))

    def report(
        self, checked: list[str], irreversible: list[str], not_checked: Sequence[str]
    ) -> VerifyReport:
        return VerifyReport(
            tuple(checked), tuple(self.failures), tuple(irreversible), tuple(not_checked)
        )


_PHRASES = {
    # step: (+ only after the step, - only before it, ~ changed)
    "down": ("leaves {} behind", "removes {}, which was there before its up", "leaves {} changed"),
    "up again": (
        "creates {} that its first run did not",
        "does not recreate {}",
        "creates {} differently",
    ),
    "final downgrade": (
        "leaves {} behind",
        "removes {}, which was there before",
        "leaves {} changed",
    ),
}
_WHO = {
    "down": "down of {}",
    "up again": "up of {}, run again after its down,",
    "final downgrade": "the full downgrade (down to before {})",
}


def _message(name: str, step: str, found: Sequence[Difference]) -> str:
    first = found[0]
    phrase = _PHRASES[step]["+-~".index(first.change)].format(first.subject)
    if first.change == "~":
        phrase += f" ({first.detail})"
    more = f" (and {len(found) - 1} more difference{'s' if len(found) > 2 else ''})"
    return f"{_WHO[step].format(name)} {phrase}{more if len(found) > 1 else ''}"


_DRIVER_PREFIX = re.compile(r"^\([\w.]+\) ")  # SQLAlchemy's "(sqlite3.IntegrityError) "


def _raised(name: str, step: str, exc: RungError) -> Failure:
    cause = exc.message
    if isinstance(exc, MigrationFailed):  # on scratch, only the cause matters
        first = (str(exc.cause).strip().splitlines() or [""])[0]
        cause = f"{type(exc.cause).__name__}: {_DRIVER_PREFIX.sub('', first)[:300]}"
    where = {
        "up": f"up of {name} fails",
        "down": f"down of {name} fails",
        "up again": f"up of {name} fails when run again after its down",
        "final downgrade": f"the full downgrade fails at {name}",
    }[step]
    return Failure(name, step, f"{where}: {cause}")
