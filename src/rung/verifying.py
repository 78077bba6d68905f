"""``verify``: prove on a scratch database that every ``down`` exactly reverses its ``up``.

For each migration in registry order: up, down, up again. After ``down`` the schema must
equal the one before ``up``; ``up`` run again must not fail and must give the schema of its
first run. When every check passed, a full downgrade must leave only what was there before
the first migration checked.

The steps go through the real runner (``rung.runner.runs``: its transactions, SQLite's
``BEGIN IMMEDIATE``, MariaDB's per-migration commits, ``transactional=False``) under one
lock for the whole verify, so verify proves the path production runs, not a lookalike.

Cost: after each step the schema is *fingerprinted* (``Dialect.fingerprints``: the
schema's text on SQLite; on PostgreSQL the catalog rows changed since the last one and the
relations they belong to; on MariaDB the tables the statements since the last one name; on
MySQL the reader's rows without the snapshot built from them), not read; equal
fingerprints mean equal snapshots. Only when two differ are both sides read in full, the
expected one from a *reference* scratch database that only ever runs ``up``, in registry
order (the real sequence), made and advanced as it is needed.
Each round trip runs over a history holding only its migration's row (``forget``): a run
reads the whole history before each batch.

Every verdict in one run: after a failure that leaves the scratch database in a state the
real sequence never reaches (a ``down`` that raised, an ``up`` again that raised or made
something else), the state "after up N" is rebuilt, by the cheapest means the database has
(a copy of the reference: a file copy on SQLite, ``CREATE DATABASE ... TEMPLATE`` on
PostgreSQL; a replay on MariaDB and MySQL), and the checks go on; the report says which
verdicts rest on a rebuilt state. An ``up`` that fails stops the checks: every later
migration builds on it. ``fail_fast`` stops at the first failure of any kind.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from contextlib import AsyncExitStack
from dataclasses import dataclass

import sqlalchemy as sa
from sqlalchemy.ext.asyncio import AsyncEngine

from rung.dialects import dialect_named
from rung.errors import MigrationFailed, RungError, UnknownTarget
from rung.history import History
from rung.migration import Migration
from rung.plan import Direction, Request
from rung.runner import Runs, Settings, run, runs
from rung.schema import Difference, Snapshot, diff
from rung.scratch import scratch_database, scratch_engine


@dataclass(frozen=True)
class Failure:
    """One migration that does not round-trip; ``step`` is 'up', 'down', 'up again' or
    'final downgrade'. ``rebuilt_after`` names the migration after whose failure the state
    this verdict rests on was rebuilt, if it was."""

    name: str
    step: str
    message: str
    differences: tuple[Difference, ...] = ()
    rebuilt_after: str | None = None

    def __str__(self) -> str:
        return self.message


@dataclass(frozen=True)
class VerifyReport:
    checked: tuple[str, ...]  # migrations whose round trip was judged, passed or failed
    failures: tuple[Failure, ...] = ()
    irreversible: tuple[str, ...] = ()  # applied only: they have no down to check
    not_checked: tuple[str, ...] = ()  # after an up that failed, or the first failure
    rebuilt: tuple[str, ...] = ()  # the state "after up NAME" was rebuilt to go on

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
    async with AsyncExitStack() as stack:
        scratch = await stack.enter_async_context(
            scratch_database(engine.url, scratch_url, purpose="verify")
        )
        trips = _RoundTrips(scratch, migrations, Settings(table=table), stack)
        try:
            return await trips.run(names[first:], start_after, fail_fast)
        finally:
            await trips.close()


class _RoundTrips:
    def __init__(
        self,
        scratch: AsyncEngine,
        migrations: Sequence[Migration],
        settings: Settings,
        stack: AsyncExitStack,
    ) -> None:
        self.work = scratch
        self.url = scratch.url
        self.migrations = migrations
        self.names = [m.name for m in migrations]
        self.settings = settings
        self.dialect = dialect_named(scratch.dialect.name)
        self.fingerprints = self.dialect.fingerprints()  # of the work database
        self.history = History(settings.table, self.dialect)
        self.stack = stack  # where the reference database is dropped, on the way out
        self.reference: AsyncEngine | None = None
        self.reference_at: str | None = None  # the last migration applied there
        self.session: AsyncExitStack | None = None
        self.runs: Runs | None = None
        self.failures: list[Failure] = []
        self.rebuilt: list[str] = []

    # -- the work database and its lock ---------------------------------------------------

    async def open(self) -> Runs:
        if self.runs is None:
            self.session = AsyncExitStack()
            self.runs = await self.session.enter_async_context(runs(self.work, self.settings))
        return self.runs

    async def close(self) -> None:
        if self.session is not None:
            session, self.session, self.runs = self.session, None, None
            await session.aclose()
        await self.work.dispose()

    async def up(self, only: Migration | None = None, *, to: str | None = None) -> None:
        await self.step(Direction.UP, only, to, None if to else 1)

    async def down(self, only: Migration | None = None, *, to: str | None = None) -> None:
        await self.step(Direction.DOWN, only, to, None if to else 1)

    async def step(
        self, direction: Direction, only: Migration | None, to: str | None, steps: int | None
    ) -> None:
        """One run of the real runner: of migration ``only``, over a history holding no
        other row (see ``forget``), or of the whole registry."""
        session = await self.open()
        await session.run([only] if only else self.migrations, Request(direction, steps, to))

    async def forget(self) -> None:
        """Empty the scratch history, so that the next steps plan over one row (a run
        reads the whole history before each batch: with every row kept, verify's cost
        would grow with the square of the number of migrations)."""
        conn = (await self.open()).conn
        async with conn.begin():
            await conn.execute(sa.delete(self.history.table))

    async def remember(self, through: str) -> None:
        """Record every migration through ``through`` as applied, as ``forget`` did not."""
        conn = (await self.open()).conn
        async with conn.begin():
            await conn.execute(sa.delete(self.history.table))
            for m in self.migrations[: self.names.index(through) + 1]:
                await self.history.insert(conn, m.name, m.checksum, state="applied")

    async def fingerprint(self) -> str:
        # on the runs' own connection: on SQLite, another one would parse the whole
        # schema again after each change, a cost that grows with the schema
        conn = (await self.open()).conn
        try:
            return await conn.run_sync(self.fingerprints)
        finally:
            await conn.rollback()

    async def snapshot(self, engine: AsyncEngine) -> Snapshot:
        async with engine.connect() as conn:
            return await self.history.read_schema(conn)

    # -- the reference: the real sequence, made as it is needed ---------------------------

    async def expected(self, after: str | None) -> Snapshot:
        """The schema the real sequence has after ``after``'s up (None: before any)."""
        return await self.snapshot(await self.reference_after(after))

    async def reference_after(self, name: str | None) -> AsyncEngine:
        if self.reference is None:
            self.reference = await self.stack.enter_async_context(
                scratch_database(self.url, purpose="verify")
            )
            self.stack.push_async_callback(self._dispose_reference)
        at = self.names.index(self.reference_at) if self.reference_at else -1
        wanted = self.names.index(name) if name else -1
        if wanted < at:
            raise AssertionError("the reference database only ever goes up")
        if wanted > at:
            request = Request(Direction.UP, to=name)
            await run(self.reference, self.migrations, request, self.settings)
            self.reference_at = name
        return self.reference

    async def _dispose_reference(self) -> None:
        if self.reference is not None:
            await self.reference.dispose()

    async def rebuild(self, name: str) -> str:
        """Bring the work database to "after up ``name``" again; return its fingerprint."""
        await self.close()
        if self.dialect.copies_databases:
            reference = await self.reference_after(name)
            await reference.dispose()  # PostgreSQL copies only a database nobody is using
            await self.dialect.copy_database(reference.url, self.url)
            self.work = scratch_engine(self.url)
        else:
            await self.dialect.drop_database(self.url)
            await self.dialect.create_database(self.url)
            self.work = scratch_engine(self.url)
            await self.up(to=name)
        self.rebuilt.append(name)
        self.fingerprints = self.dialect.fingerprints()  # another database
        return await self.fingerprint()

    # -- the checks ------------------------------------------------------------------------

    async def run(self, names: Sequence[str], floor: str | None, fail_fast: bool) -> VerifyReport:
        by_name = {m.name: m for m in self.migrations}
        checked: list[str] = []
        irreversible: list[str] = []
        previous = floor  # the last migration applied before the one checked
        if floor is not None:
            await self.up(to=floor)
        else:
            await self.open()  # rung's own tables, before the first fingerprint
        before = await self.fingerprint()
        base = before, await self.snapshot(self.work)  # what the final downgrade returns to
        for position, name in enumerate(names):
            rest = names[position + 1 :]
            await self.forget()
            try:
                await self.up(by_name[name])
            except RungError as exc:
                checked.append(name)
                self.fail(name, "up", exc)
                return self.report(checked, irreversible, rest)
            after_up = await self.fingerprint()
            if by_name[name].down is None:
                irreversible.append(name)
                before = after_up
                base = after_up, await self.snapshot(self.work)
                previous = floor = name
                continue
            checked.append(name)
            found = len(self.failures)
            migration = by_name[name]
            before = await self.round_trip(migration, previous, before, after_up, fail_fast)
            if fail_fast and len(self.failures) > found:
                return self.report(checked, irreversible, rest)
            previous = name
        if not self.failures:
            await self.final_downgrade(names, floor, base)
        return self.report(checked, irreversible, ())

    async def round_trip(
        self, m: Migration, previous: str | None, before: str, after_up: str, fail_fast: bool
    ) -> str:
        """Down, then up again; return the fingerprint of the state "after up ``m``" the
        checks go on from (rebuilt if the round trip left another one, unless the checks
        stop at this failure)."""
        name = m.name

        async def going_on() -> str:
            return after_up if fail_fast else await self.rebuild(name)

        try:
            await self.down(m)
        except RungError as exc:
            self.fail(name, "down", exc)
            return await going_on()
        after_down = await self.fingerprint()
        if after_down != before:
            await self.compare(name, "down", await self.expected(previous))
        try:
            await self.up(m)
        except RungError as exc:
            self.fail(name, "up again", exc)
            return await going_on()
        after_again = await self.fingerprint()
        if after_again != after_up and await self.compare(
            name, "up again", await self.expected(name)
        ):
            return await going_on()
        return after_up

    async def final_downgrade(
        self, names: Sequence[str], floor: str | None, base: tuple[str, Snapshot]
    ) -> None:
        if not names or names[-1] == floor:
            return
        oldest = names[names.index(floor) + 1] if floor in names else names[0]
        await self.remember(names[-1])
        try:
            await self.step(Direction.DOWN, None, floor, None)  # to None: every one
        except RungError as exc:
            self.fail(getattr(exc, "name", oldest), "final downgrade", exc)
            return
        if await self.fingerprint() != base[0]:
            await self.compare(oldest, "final downgrade", base[1])

    async def compare(self, name: str, step: str, expected: Snapshot) -> bool:
        """Read the work database in full and name how it differs from ``expected``;
        True when it does (two fingerprints can differ for equal snapshots)."""
        sides = {
            "down": ("before its up", "after its down"),
            "up again": ("after its first up", "after up again"),
            "final downgrade": ("before the first migration", "after the full downgrade"),
        }[step]
        actual = await self.snapshot(self.work)
        found = diff(expected, actual, expected_as=sides[0], actual_as=sides[1])
        if found:
            message = _message(name, step, found)
            self.failures.append(Failure(name, step, message, tuple(found), self._rebuilt()))
        return bool(found)

    def fail(self, name: str, step: str, exc: RungError) -> None:
        self.failures.append(Failure(name, step, _raised(name, step, exc), (), self._rebuilt()))

    def _rebuilt(self) -> str | None:
        return self.rebuilt[-1] if self.rebuilt else None

    def report(
        self, checked: list[str], irreversible: list[str], not_checked: Sequence[str]
    ) -> VerifyReport:
        return VerifyReport(
            tuple(checked),
            tuple(self.failures),
            tuple(irreversible),
            tuple(not_checked),
            tuple(self.rebuilt),
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


def _raised(name: str, step: str, exc: RungError) -> str:
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
    return f"{where}: {cause}"
