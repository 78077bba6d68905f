"""The planner, property-tested against a model simple enough to be obviously right.

The model (``expected_plan``, ``expected_states``, ``expected_repair``) works on plain
names and rows and states each rule of DESIGN.md directly; hypothesis generates
registries, histories (gaps, unknown names interleaved and newer than all, changed
checksums, failed and running rows) and requests, and the real planner must agree with
the model on what runs, in which order, what is refused, with which error, naming what.

All migrations here share ``up``/``down`` from this module, so all have the same code
checksum ``CK``; a history row with another checksum stands for code changed since.
"""

from __future__ import annotations

import itertools
from dataclasses import dataclass, replace
from typing import TYPE_CHECKING

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from rung.errors import (
    ChecksumMismatch,
    Irreversible,
    NeedsRepair,
    OutOfOrder,
    PlanRefused,
    RungError,
    UnknownApplied,
    UnknownTarget,
    UsageError,
)
from rung.migration import Migration, Statement, checksum_of
from rung.plan import (
    Batch,
    Direction,
    MigrationState,
    Plan,
    Record,
    Repair,
    Request,
    Resolution,
    State,
    outstanding,
    plan,
    plan_baseline,
    plan_repair,
    states,
)

if TYPE_CHECKING:
    from sqlalchemy.ext.asyncio import AsyncConnection


async def _up(conn: AsyncConnection) -> None:
    return None


async def _down(conn: AsyncConnection) -> None:
    return None


CK = checksum_of(_up, _down)
OTHER = "0" * 64  # a checksum no code here has: the migration changed after it was applied
MAX_K = 20


def name_of(k: int, slug: str = "x") -> str:
    return f"m20260101_{k:06d}_{slug}"


# Built once: Migration.checksum is cached per instance, so examples stay fast.
POOL = {
    (k, transactional, reversible): Migration(
        name_of(k), _up, _down if reversible else None, transactional=transactional
    )
    for k in range(1, MAX_K + 1)
    for transactional in (True, False)
    for reversible in (True, False)
}


def mig(k: int, *, transactional: bool = True, reversible: bool = True) -> Migration:
    return POOL[(k, transactional, reversible)]


def applied(name: str, checksum: str = CK) -> Record:
    return Record(name, checksum, "applied")


# --------------------------------------------------------------------------- generation


@dataclass(frozen=True)
class Scenario:
    migrations: tuple[Migration, ...]
    history: tuple[Record, ...]
    shuffled: tuple[Record, ...]  # the same rows in another order: the table has none
    request: Request
    transactional_ddl: bool
    per_migration: bool
    locked: bool


def one_in(n: int) -> st.SearchStrategy[bool]:
    """True about once in ``n`` draws (and False when shrinking)."""
    return st.sampled_from([False] * (n - 1) + [True])


mostly = one_in(4).map(lambda rare: not rare)  # True three times in four


@st.composite
def registries(draw: st.DrawFn) -> tuple[Migration, ...]:
    ks = sorted(draw(st.sets(st.integers(1, MAX_K), max_size=7)))
    return tuple(mig(k, transactional=draw(mostly), reversible=draw(mostly)) for k in ks)


@st.composite
def histories(draw: st.DrawFn, migrations: tuple[Migration, ...]) -> tuple[Record, ...]:
    """Applied prefixes, applied sets with gaps, and a few rows that need attention."""
    kind = draw(st.sampled_from(["prefix", "prefix", "gaps", "gaps", "broken"]))
    prefix = draw(st.integers(0, len(migrations)))
    records: list[Record] = []
    for i, m in enumerate(migrations):
        if not (i < prefix if kind == "prefix" else draw(st.booleans())):
            continue
        state, checksum = "applied", CK
        if kind == "broken" and draw(one_in(3)):
            state, checksum = draw(
                st.sampled_from([("applied", OTHER), ("failed", CK), ("running", CK)])
            )
        direction = draw(st.sampled_from(["up", "down"]))
        records.append(Record(m.name, checksum, state, direction=direction))
    if draw(one_in(3)):  # names the registry does not know: interleaved, or newer than all
        registered = {m.name for m in migrations}
        for k, slug in draw(
            st.lists(
                st.tuples(
                    st.integers(0, MAX_K)
                    | st.integers(MAX_K + 1, MAX_K + 3)
                    | st.sampled_from([int(n[10:16]) for n in registered or [name_of(1)]]),
                    st.sampled_from("auxz"),
                ),
                max_size=3,
            )
        ):
            name = name_of(k, slug)
            if name in registered or any(r.name == name for r in records):
                continue
            state = "applied" if draw(mostly) else draw(st.sampled_from(["failed", "running"]))
            records.append(Record(name, draw(st.sampled_from([CK, OTHER])), state))
    return tuple(records)


@st.composite
def requests(draw: st.DrawFn, migrations: tuple[Migration, ...]) -> Request:
    direction = draw(st.sampled_from(Direction))
    steps = draw(st.none() | st.integers(1, len(migrations) + 1))
    if draw(one_in(20)):
        steps = draw(st.integers(-2, 0))
    names = [m.name for m in migrations]
    to = draw(st.none() | st.sampled_from(names)) if names else None
    if draw(one_in(20)):
        to = draw(st.sampled_from([name_of(MAX_K + 5, "nope"), name_of(0, "nope")]))
    return Request(direction, steps=steps, to=to, out_of_order=draw(st.booleans()))


@st.composite
def scenarios(draw: st.DrawFn) -> Scenario:
    migrations = draw(registries())
    history = draw(histories(migrations))
    return Scenario(
        migrations,
        history,
        tuple(draw(st.permutations(history))),
        draw(requests(migrations)),
        transactional_ddl=draw(st.booleans()),
        per_migration=draw(st.booleans()),
        locked=draw(mostly),
    )


# --------------------------------------------------------------------------- the model


@dataclass(frozen=True)
class Expected:
    """A refusal (``error``, the ``names`` it carries, the one its message names first),
    or the names chosen in order and the newest future name warned about."""

    error: type[RungError] | None = None
    names: tuple[str, ...] = ()
    named: str | None = None
    chosen: tuple[str, ...] = ()
    warned: str | None = None


def refused(error: type[RungError], names: list[str], named: str | None = None) -> Expected:
    return Expected(error, tuple(names), names[0] if named is None and names else named)


def expected_plan(
    migrations: tuple[Migration, ...],
    history: tuple[Record, ...],
    request: Request,
    *,
    locked: bool = True,
) -> Expected:
    if not locked:  # before the lock, a running mark may be a run in progress elsewhere
        history = tuple(r for r in history if r.state != "running")
    names = [m.name for m in migrations]
    pos = {n: i for i, n in enumerate(names)}
    rows = {r.name: r for r in history}
    if request.steps is not None and request.steps < 1:
        return Expected(UsageError)
    if request.to is not None and request.to not in pos:
        return refused(UnknownTarget, [request.to])
    broken = sorted(n for n, r in rows.items() if r.state != "applied")
    if broken:
        return refused(NeedsRepair, broken)
    unknown = sorted(n for n in rows if n not in pos)
    interleaved = [n for n in unknown if names and n < max(names)]
    future = [n for n in unknown if n not in interleaved]
    if interleaved:
        return refused(UnknownApplied, interleaved)
    changed = [n for n in names if n in rows and rows[n].checksum != CK]
    if changed:
        return refused(ChecksumMismatch, changed)
    done = [n for n in names if n in rows]
    if request.direction is Direction.UP:
        last = len(names) - 1 if request.to is None else pos[request.to]
        pending = [n for n in names if n not in rows and pos[n] <= last]
        late = [p for p in pending if any(pos[a] > pos[p] for a in done)]
        if late and not request.out_of_order:
            return refused(OutOfOrder, late)
        chosen = pending
    else:
        if future:
            return refused(UnknownApplied, future, named=future[-1])
        floor = -1 if request.to is None else pos[request.to]
        chosen = [n for n in reversed(done) if pos[n] > floor]
    if request.steps is not None:
        chosen = chosen[: request.steps]
    if request.direction is Direction.DOWN:
        irreversible = [n for n in chosen if migrations[pos[n]].down is None]
        if irreversible:
            return refused(Irreversible, irreversible)
    return Expected(chosen=tuple(chosen), warned=future[-1] if future else None)


def outcome(
    migrations: tuple[Migration, ...],
    history: tuple[Record, ...],
    request: Request,
    *,
    transactional_ddl: bool,
    per_migration: bool,
    locked: bool,
) -> Plan | tuple[type[RungError], tuple[str, ...], str]:
    try:
        return plan(
            migrations,
            history,
            request,
            transactional_ddl=transactional_ddl,
            per_migration=per_migration,
            locked=locked,
        )
    except RungError as exc:
        names = exc.names if isinstance(exc, PlanRefused) else ()
        return type(exc), names, str(exc)


def check_batches(
    batches: tuple[Batch, ...], direction: Direction, transactional_ddl: bool, per_migration: bool
) -> None:
    for batch in batches:
        assert batch.direction is direction
        assert batch.migrations
        can_roll_back = [transactional_ddl and m.transactional for m in batch.migrations]
        assert batch.atomic == all(can_roll_back)
        if len(batch.migrations) > 1:
            assert all(can_roll_back)  # only migrations the database rolls back share a batch
            assert not per_migration
        if batch.atomic:
            assert batch.in_transaction
        else:
            (m,) = batch.migrations  # non-atomic: always alone
            assert batch.in_transaction == m.transactional
    if per_migration:
        assert all(len(b.migrations) == 1 for b in batches)
    else:
        for a, b in itertools.pairwise(batches):  # consecutive atomic ones are grouped
            assert not (a.atomic and b.atomic)


# --------------------------------------------------------------------------- properties


@settings(max_examples=300, deadline=None)
@given(scenarios())
def test_plan_agrees_with_the_model(s: Scenario) -> None:
    expected = expected_plan(s.migrations, s.history, s.request, locked=s.locked)
    flags = {
        "transactional_ddl": s.transactional_ddl,
        "per_migration": s.per_migration,
        "locked": s.locked,
    }
    got = outcome(s.migrations, s.history, s.request, **flags)

    # Deterministic, and independent of the order the history rows come in.
    assert outcome(s.migrations, s.history, s.request, **flags) == got
    assert outcome(s.migrations, s.shuffled, s.request, **flags) == got

    if expected.error is not None:
        assert not isinstance(got, Plan), f"expected {expected.error.__name__}, got {got}"
        error, names, message = got
        assert error is expected.error, message
        if error is UsageError:
            assert "-n 1" in message
            return
        assert names == expected.names
        assert expected.named is not None and expected.named in message
        return
    assert isinstance(got, Plan), got
    assert tuple(m.name for m in got.migrations) == expected.chosen
    check_batches(got.batches, s.request.direction, s.transactional_ddl, s.per_migration)
    if expected.warned is None:
        assert got.warnings == ()
    else:
        (warning,) = got.warnings
        assert expected.warned in warning

    # Recording what the plan ran leaves nothing for the same request to do, and running
    # it n steps at a time runs the same migrations in the same order as all at once.
    whole = outcome(s.migrations, s.history, replace(s.request, steps=None), **flags)
    history, ran = s.history, list(got.migrations)
    for _ in range(len(s.migrations) + 1):
        history = recorded(history, s.request.direction, got)
        step = outcome(s.migrations, history, s.request, **flags)
        if not isinstance(step, Plan) or not step.batches:
            break
        got = step
        ran += got.migrations
    if isinstance(whole, Plan):
        assert step == Plan((), got.warnings)
        assert tuple(ran) == whole.migrations
    else:  # all at once would cross an irreversible migration; step by step stops there
        assert whole[0] is Irreversible
        assert not isinstance(step, Plan) and step[0] is Irreversible


def recorded(history: tuple[Record, ...], direction: Direction, ran: Plan) -> tuple[Record, ...]:
    """The history after ``ran`` ran."""
    if direction is Direction.UP:
        return history + tuple(applied(m.name) for m in ran.migrations)
    gone = {m.name for m in ran.migrations}
    return tuple(r for r in history if r.name not in gone)


def expected_states(
    migrations: tuple[Migration, ...], history: tuple[Record, ...]
) -> list[tuple[str, State, str | None, str | None]]:
    rows = {r.name: r for r in history}
    result: list[tuple[str, State, str | None, str | None]] = []
    for m in migrations:
        r = rows.get(m.name)
        if r is None:
            result.append((m.name, State.PENDING, CK, None))
        elif r.state == "failed":
            result.append((m.name, State.FAILED, CK, r.checksum))
        elif r.state == "running":
            result.append((m.name, State.RUNNING, CK, r.checksum))
        else:
            state = State.APPLIED if r.checksum == CK else State.MODIFIED
            result.append((m.name, state, CK, r.checksum))
    registered = {m.name for m in migrations}
    for name in sorted(n for n in rows if n not in registered):
        unknown = {"failed": State.FAILED, "running": State.RUNNING}.get(rows[name].state)
        result.append((name, unknown or State.UNKNOWN, None, rows[name].checksum))
    return result


@settings(max_examples=100, deadline=None)
@given(scenarios())
def test_states_agree_with_the_model(s: Scenario) -> None:
    got = states(s.migrations, s.history)
    assert [(x.name, x.state, x.checksum, x.recorded_checksum) for x in got] == expected_states(
        s.migrations, s.history
    )
    assert states(s.migrations, s.shuffled) == got


@settings(max_examples=200, deadline=None)
@given(scenarios())
def test_the_status_gate_stops_exactly_where_an_upgrade_would_act(s: Scenario) -> None:
    """``rung status --exit-code`` passes when, and only when, ``rung up`` would neither run
    anything nor refuse (warnings about a newer release's migrations are fine)."""
    try:
        would_act = bool(
            plan(s.migrations, s.history, Request(Direction.UP), transactional_ddl=True).batches
        )
    except PlanRefused:
        would_act = True
    assert bool(outstanding(states(s.migrations, s.history))) == would_act


@st.composite
def repair_cases(draw: st.DrawFn) -> tuple[Scenario, str | None, bool | None]:
    s = draw(scenarios())
    candidates = [m.name for m in s.migrations] + [r.name for r in s.history]
    name = draw(st.none() | st.sampled_from([*candidates, name_of(MAX_K + 7, "nowhere")]))
    return s, name, draw(st.sampled_from([None, True, False]))


def expected_repair(
    migrations: tuple[Migration, ...],
    history: tuple[Record, ...],
    name: str | None,
    applied_: bool | None,
) -> list[Repair] | tuple[type[RungError], tuple[str, ...]]:
    registered = {m.name for m in migrations}
    rows = {r.name: r for r in history}
    if name is not None and name not in registered and name not in rows:
        return UnknownTarget, (name,)
    if name is None and applied_ is not None:
        return UsageError, ()
    if applied_ is False:
        assert name is not None
        return [Repair(name, Resolution.MARK_NOT_APPLIED, None)] if name in rows else []
    if applied_ is True:
        assert name is not None
        if name not in registered:
            return UnknownTarget, (name,)
        r = rows.get(name)
        if r is not None and r.state == "applied" and r.checksum == CK:
            return []
        return [Repair(name, Resolution.MARK_APPLIED, CK)]
    considered = sorted(n for n in rows if name is None or n == name)
    broken = [n for n in considered if rows[n].state != "applied"]
    if broken:
        return NeedsRepair, (broken[0],)
    return [
        Repair(n, Resolution.ACCEPT_CHECKSUM, CK)
        for n in considered
        if n in registered and rows[n].checksum != CK
    ]


@settings(max_examples=100, deadline=None)
@given(repair_cases())
def test_plan_repair_agrees_with_the_model(case: tuple[Scenario, str | None, bool | None]) -> None:
    s, name, applied_ = case
    expected = expected_repair(s.migrations, s.history, name, applied_)
    for history in (s.history, s.shuffled):
        try:
            got: object = plan_repair(s.migrations, history, name, applied_)
        except RungError as exc:
            names = exc.names if isinstance(exc, PlanRefused) else ()
            got = (type(exc), names)
            if names:
                assert names[0] in str(exc)
        assert got == expected


@settings(max_examples=60, deadline=None)
@given(scenarios())
def test_plan_baseline_is_the_pending_upgrade_up_to_target(s: Scenario) -> None:
    request = Request(Direction.UP, to=s.request.to)
    expected = expected_plan(s.migrations, s.history, request)
    try:
        got = plan_baseline(s.migrations, s.history, s.request.to)
    except RungError as exc:
        assert type(exc) is expected.error
        return
    assert expected.error is None
    assert tuple(m.name for m in got) == expected.chosen


# --------------------------------------------------------------------------- examples

A, B, C, D = (name_of(k) for k in (1, 2, 3, 4))
UP = Request(Direction.UP)
DOWN = Request(Direction.DOWN)


def run(
    migrations: list[Migration],
    history: list[Record],
    request: Request = UP,
    *,
    transactional_ddl: bool = True,
    per_migration: bool = False,
) -> Plan:
    return plan(
        migrations,
        history,
        request,
        transactional_ddl=transactional_ddl,
        per_migration=per_migration,
    )


def test_upgrade_runs_pending_in_registry_order_in_one_transaction() -> None:
    result = run([mig(1), mig(2), mig(3)], [applied(A)])
    assert result.batches == (
        Batch(Direction.UP, (mig(2), mig(3)), in_transaction=True, atomic=True),
    )
    assert result.warnings == ()


def test_nothing_to_do_is_an_empty_plan() -> None:
    assert run([mig(1)], [applied(A)]) == Plan(())
    assert run([], []) == Plan(())
    assert run([mig(1)], [], DOWN) == Plan(())


def test_non_transactional_migration_runs_alone_between_groups() -> None:
    regs = [mig(1), mig(2), mig(3, transactional=False), mig(4)]
    assert run(regs, []).batches == (
        Batch(Direction.UP, (mig(1), mig(2)), in_transaction=True, atomic=True),
        Batch(Direction.UP, (mig(3, transactional=False),), in_transaction=False, atomic=False),
        Batch(Direction.UP, (mig(4),), in_transaction=True, atomic=True),
    )


def test_without_transactional_ddl_each_migration_commits_on_its_own() -> None:
    regs = [mig(1), mig(2, transactional=False)]
    assert run(regs, [], transactional_ddl=False).batches == (
        Batch(Direction.UP, (mig(1),), in_transaction=True, atomic=False),
        Batch(Direction.UP, (mig(2, transactional=False),), in_transaction=False, atomic=False),
    )


def test_per_migration_mode_gives_each_its_own_transaction() -> None:
    assert run([mig(1), mig(2)], [], per_migration=True).batches == (
        Batch(Direction.UP, (mig(1),), in_transaction=True, atomic=True),
        Batch(Direction.UP, (mig(2),), in_transaction=True, atomic=True),
    )


def test_downgrade_reverses_newest_first_down_to_target_kept() -> None:
    regs = [mig(1), mig(2), mig(3), mig(4)]
    history = [applied(n) for n in (A, B, C, D)]
    assert run(regs, history, DOWN).migrations == (mig(4), mig(3), mig(2), mig(1))
    assert run(regs, history, Request(Direction.DOWN, to=B)).migrations == (mig(4), mig(3))
    assert run(regs, history, Request(Direction.DOWN, steps=1)).migrations == (mig(4),)


def test_upgrade_to_includes_the_target_and_steps_limit() -> None:
    regs = [mig(1), mig(2), mig(3)]
    assert run(regs, [], Request(Direction.UP, to=B)).migrations == (mig(1), mig(2))
    assert run(regs, [], Request(Direction.UP, steps=2)).migrations == (mig(1), mig(2))
    assert run(regs, [], Request(Direction.UP, steps=9)).migrations == (mig(1), mig(2), mig(3))


@pytest.mark.parametrize("steps", [0, -1])
def test_steps_below_one_is_a_usage_error(steps: int) -> None:
    with pytest.raises(UsageError) as err:
        run([mig(1)], [], Request(Direction.UP, steps=steps))
    assert str(err.value) == f"steps must be a positive number, not {steps}; use -n 1 or more"
    assert err.value.exit_code == 2


def test_unknown_target_is_named() -> None:
    with pytest.raises(UnknownTarget) as err:
        run([mig(1)], [], Request(Direction.DOWN, to=B))
    assert err.value.names == (B,)
    assert str(err.value) == (
        f"--to {B} names no registered migration; run 'rung status' for the names"
    )
    assert err.value.exit_code == 2


def test_failed_migration_needs_repair() -> None:
    kept = (Statement("ALTER TABLE t ADD a INT", None, 1.0), Statement("DROP TABLE u", None, 2.0))
    with pytest.raises(NeedsRepair) as err:
        run([mig(1), mig(2)], [applied(A), Record(B, CK, "failed", statements=kept)])
    assert err.value.names == (B,)
    assert err.value.exit_code == 1
    message = str(err.value)
    assert message.startswith(f"migration {B} failed part-way (up)")
    assert "ALTER TABLE t ADD a INT" in message and "DROP TABLE u" in message
    assert f"'rung show {B}'" in message
    assert message.endswith(f"then run 'rung repair {B} --applied' or '--not-applied'")


def test_interrupted_migration_needs_repair_even_downgrading() -> None:
    with pytest.raises(NeedsRepair) as err:
        run([mig(1), mig(2)], [applied(A), Record(B, CK, "running", direction="down")], DOWN)
    message = str(err.value)
    assert f"migration {B} was interrupted part-way (down)" in message
    assert f"'rung repair {B} --applied' or '--not-applied'" in message


def test_before_the_lock_a_running_mark_counts_as_not_applied() -> None:
    history = [applied(A), Record(B, CK, "running")]
    unlocked = plan([mig(1), mig(2)], history, UP, transactional_ddl=True, locked=False)
    assert unlocked.migrations == (mig(2),)
    with pytest.raises(NeedsRepair):  # under the lock, the mark is an interrupted run
        plan([mig(1), mig(2)], history, UP, transactional_ddl=True, locked=True)


def test_unknown_interleaved_migration_is_refused() -> None:
    ghost = name_of(2, "ghost")
    with pytest.raises(UnknownApplied) as err:
        run([mig(1), mig(3)], [applied(A), applied(ghost), applied(C)])
    assert err.value.names == (ghost,)
    assert str(err.value) == (
        f"migration {ghost} is recorded as applied but is not in the registry; restore its "
        f"module and register it, or run 'rung repair {ghost} --not-applied' once its "
        "changes are undone"
    )


def test_unknown_name_sorting_just_before_the_newest_is_interleaved() -> None:
    ghost = name_of(2, "a")  # same date and number as the newest, m20260101_000002_x
    with pytest.raises(UnknownApplied) as err:
        run([mig(1), mig(2)], [applied(A), applied(ghost)])
    assert err.value.names == (ghost,)
    late = name_of(2, "z")  # sorts after it: newer than every registered migration
    assert run([mig(1), mig(2)], [applied(A), applied(late)]).migrations == (mig(2),)


def test_several_problems_are_counted() -> None:
    g1, g2 = name_of(1, "ghost"), name_of(2, "ghost")
    with pytest.raises(UnknownApplied) as err:
        run([mig(3)], [applied(g2), applied(g1)])
    assert err.value.names == (g1, g2)
    assert str(err.value).startswith(f"migration {g1} is recorded as applied")
    assert "(and 1 more)" in str(err.value)


def test_future_migrations_warn_naming_the_newest_whatever_the_row_order() -> None:
    f1, f2 = name_of(8, "future"), name_of(9, "future")
    for history in ([applied(A), applied(f2), applied(f1)], [applied(f1), applied(A), applied(f2)]):
        result = run([mig(1), mig(2)], history)
        assert result.migrations == (mig(2),)
        assert result.warnings == (
            f"2 applied migration(s) newer than this registry ({f2}): "
            "a newer release applied them; going on",
        )


def test_downgrade_under_future_migrations_is_refused() -> None:
    f1, f2 = name_of(8, "future"), name_of(9, "future")
    with pytest.raises(UnknownApplied) as err:
        run([mig(1)], [applied(f2), applied(A), applied(f1)], Request(Direction.DOWN, to=A))
    assert err.value.names == (f1, f2)
    assert str(err.value) == (
        f"migration {f2} was applied by a newer release and this registry cannot reverse it; "
        "downgrade with the release that has it"
    )


def test_changed_migration_is_refused() -> None:
    with pytest.raises(ChecksumMismatch) as err:
        run([mig(1), mig(2)], [applied(A), applied(B, OTHER)])
    assert err.value.names == (B,)
    assert str(err.value) == (
        f"migration {B} was changed after it was applied; restore its code, or accept the "
        f"change with 'rung repair {B}'"
    )


def test_pending_older_than_applied_is_out_of_order() -> None:
    regs = [mig(1), mig(2), mig(3)]
    with pytest.raises(OutOfOrder) as err:
        run(regs, [applied(A), applied(C)])
    assert err.value.names == (B,)
    assert str(err.value) == (
        f"migration {B} is pending but older than applied migration {C}; apply it anyway "
        "with --out-of-order (out_of_order=True), or give it a newer name"
    )
    allowed = run(regs, [applied(A), applied(C)], Request(Direction.UP, out_of_order=True))
    assert allowed.migrations == (mig(2),)


def test_downgrade_across_irreversible_is_refused() -> None:
    regs = [mig(1), mig(2, reversible=False), mig(3)]
    history = [applied(n) for n in (A, B, C)]
    with pytest.raises(Irreversible) as err:
        run(regs, history, DOWN)
    assert err.value.names == (B,)
    assert str(err.value) == (
        f"migration {B} has no down, so this downgrade would cross an irreversible step; "
        "write its down, or, for a database you can throw away, start over with 'rung fresh'"
    )
    assert run(regs, history, Request(Direction.DOWN, to=B)).migrations == (mig(3),)


def test_states_report_every_kind() -> None:
    ghost = name_of(9, "ghost")
    regs = [mig(1), mig(2), mig(3), mig(4)]
    history = [
        applied(ghost),
        applied(A),
        applied(B, OTHER),
        Record(C, CK, "failed", error="boom"),
        Record(D, CK, "running"),
    ]
    got = states([*regs, mig(5)], history)
    assert [(x.name, x.state) for x in got] == [
        (A, State.APPLIED),
        (B, State.MODIFIED),
        (C, State.FAILED),
        (D, State.RUNNING),
        (name_of(5), State.PENDING),
        (ghost, State.UNKNOWN),
    ]
    assert got[2] == MigrationState(C, State.FAILED, None, None, CK, CK, "boom")
    assert got[5].checksum is None


def test_repair_without_name_accepts_changed_checksums() -> None:
    regs = [mig(1), mig(2)]
    history = [applied(A, OTHER), applied(B, OTHER)]
    assert plan_repair(regs, history) == [
        Repair(A, Resolution.ACCEPT_CHECKSUM, CK),
        Repair(B, Resolution.ACCEPT_CHECKSUM, CK),
    ]
    assert plan_repair(regs, history, B) == [Repair(B, Resolution.ACCEPT_CHECKSUM, CK)]


def test_repair_refuses_to_guess_about_failed_migrations() -> None:
    with pytest.raises(NeedsRepair) as err:
        plan_repair([mig(1)], [Record(A, CK, "failed")])
    assert f"'rung repair {A} --applied' or '--not-applied'" in str(err.value)
    assert plan_repair([mig(1)], [Record(A, CK, "failed")], A, applied=True) == [
        Repair(A, Resolution.MARK_APPLIED, CK)
    ]
    assert plan_repair([mig(1)], [Record(A, CK, "failed")], A, applied=False) == [
        Repair(A, Resolution.MARK_NOT_APPLIED, None)
    ]


def test_repair_usage_errors() -> None:
    with pytest.raises(UsageError, match="need a migration name: rung repair NAME"):
        plan_repair([mig(1)], [], None, applied=True)
    with pytest.raises(UnknownTarget, match="neither registered nor in the history"):
        plan_repair([mig(1)], [], B)
    ghost = name_of(5, "ghost")
    with pytest.raises(UnknownTarget, match=f"{ghost} is not registered.*--not-applied"):
        plan_repair([mig(1)], [applied(ghost)], ghost, applied=True)


def test_baseline_records_pending_up_to_target() -> None:
    regs = [mig(1), mig(2), mig(3)]
    assert plan_baseline(regs, [], B) == [mig(1), mig(2)]
    assert plan_baseline(regs, [applied(A)]) == [mig(2), mig(3)]
