"""``rung up|down|status|drift|verify --fleet SPEC``: the commands over every tenant, with
their display. On a terminal, one line kept up to date (done, failed, running, pending,
rate, ETA) and a line per failed tenant above it; elsewhere, one line per finished tenant.
Then a summary; ``--json``: every tenant's result. Exit 1 when any tenant failed, 130
after Ctrl-C: the first starts no new tenant and lets the running ones finish, the second
cancels them, each as an interrupted single run, and says what its database kept.
"""

from __future__ import annotations

import asyncio
import signal
import time
from collections.abc import AsyncIterator, Callable, Iterator
from contextlib import contextmanager
from typing import TYPE_CHECKING, Any

from rung import config as configuration
from rung import fleet, output
from rung.errors import ConfigError, UsageError
from rung.tenants import Tenant, find

if TYPE_CHECKING:
    from sqlalchemy.ext.asyncio import AsyncEngine

    from rung.commands import Context
    from rung.runner import Executed

INTERRUPTED = 130


async def up(ctx: Context) -> int:
    a, c = ctx.args, ctx.cfg
    _refuse(ctx, "dry_run", "check_drift", "strict")
    ctx.warn_unregistered()
    tenants = await _tenants(ctx)
    results = fleet.upgrade_fleet(
        tenants,
        ctx.migrations,
        jobs=_jobs(ctx),
        fail_fast=a.fail_fast,
        stop=(stop := fleet.Stop()),
        steps=a.n,
        to=ctx.target(a.to),
        out_of_order=a.out_of_order,
        table=c.table,
        lock_timeout=c.lock_timeout,
        lock_lease=c.lock_lease,
        per_migration=c.per_migration,
        pooler=c.pooler,
    )
    return await _run(ctx, tenants, results, stop, "applied", _executed)


async def down(ctx: Context) -> int:
    a, c = ctx.args, ctx.cfg
    _refuse(ctx, "dry_run")
    tenants = await _tenants(ctx)
    results = fleet.downgrade_fleet(
        tenants,
        ctx.migrations,
        jobs=_jobs(ctx),
        fail_fast=a.fail_fast,
        stop=(stop := fleet.Stop()),
        steps=a.n,
        to=ctx.target(a.to),
        all=a.all,
        table=c.table,
        lock_timeout=c.lock_timeout,
        lock_lease=c.lock_lease,
        per_migration=c.per_migration,
        pooler=c.pooler,
    )
    return await _run(ctx, tenants, results, stop, "reverted", _executed)


async def status(ctx: Context) -> int:
    from rung.plan import outstanding

    ctx.warn_unregistered()
    tenants = await _tenants(ctx)
    names = [m.name for m in ctx.migrations]
    results = fleet.status_fleet(
        tenants, ctx.migrations, jobs=_jobs(ctx), table=ctx.cfg.table, pooler=ctx.cfg.pooler
    )
    report = Report(ctx.out, len(tenants), lines=False, jobs=_jobs(ctx))
    groups: dict[str | None, int] = {}
    attention: list[str] = []
    rows: list[dict[str, Any]] = []
    behind = 0  # tenants with something pending or broken
    async for r in results:
        report.add(r, "")
        if r.value is None:
            rows.append(_row(r))
            continue
        newest = fleet.newest_applied(r.value)
        groups[newest] = groups.get(newest, 0) + 1
        counts = output.counts(r.value)
        behind += bool(outstanding(r.value))
        rows.append({**_row(r), "newest": newest, "counts": counts})
        attention += [
            f"{r.tenant.name}: {s.name} {output.OUTSTANDING[s.state.value]}"
            for s in r.value
            if s.state.value in output.OUTSTANDING
        ]
    report.end_line()
    order = sorted(groups, key=lambda n: -1 if n is None else names.index(n), reverse=True)
    if ctx.out.as_json:
        ctx.out.data(
            {
                "tenants": rows,
                "groups": [{"newest": n, "tenants": groups[n]} for n in order],
                "failed": report.failed,
            }
        )
    else:
        ctx.out.note(f"fleet of {output.count(len(tenants), 'tenant')}, {len(names)} registered")
        ctx.out.result(f"{'TENANTS':>7}  NEWEST APPLIED", "bold")
        for n in order:
            pending = len(names) - (names.index(n) + 1 if n else 0)
            ahead = "up to date" if not pending else f"{pending} pending"
            ctx.out.result(f"{groups[n]:>7}  {n or 'nothing applied'} ({ahead})")
        for line in attention:
            ctx.out.result(f"needs attention: {line}", "red")
        for name, error in report.errors:
            ctx.out.result(f"failed: {name}: {error}", "red")
    if report.failed:
        return 1
    return 1 if ctx.args.exit_code and behind else 0


async def drift(ctx: Context) -> int:
    from rung.api import drift as drift_of

    _refuse(ctx, "scratch_url")  # one scratch database cannot serve many tenants at once
    tenants = await _tenants(ctx)
    if any(t.schema for t in tenants):
        raise UsageError(
            "rung drift --fleet compares whole databases, and schemas of one database share "
            "one (each would see the others' tables); run it on a fleet of databases"
        )
    exclude = (*ctx.cfg.exclude, *(ctx.args.exclude or ()))

    async def work(tenant: Tenant, engine: AsyncEngine) -> list[str]:
        fleet.located(engine, must_exist=True)
        report = await drift_of(
            engine,
            ctx.migrations,
            replay=ctx.args.replay,
            scratch_url=None,
            exclude=exclude,
            table=ctx.cfg.table,
        )
        return [str(d) for d in report.differences]

    stop = fleet.Stop()
    results = fleet.each(tenants, work, jobs=_jobs(ctx), stop=stop, pooler=ctx.cfg.pooler)
    code = await _run(ctx, tenants, results, stop, "", _differences)
    return code


async def verify(ctx: Context) -> int:
    raise UsageError(
        "rung verify checks the migrations' code on a scratch database, the same for every "
        "tenant: run it once, with --url set to one tenant's database"
    )


# -- running and reporting ---------------------------------------------------------------------


def _executed(r: fleet.TenantResult[Any]) -> tuple[str, dict[str, Any]]:
    done: list[Executed] = r.value or []
    what = f"{output.count(len(done), 'migration')} " if done else "nothing "
    return what, {"migrations": [output.executed_json(e) for e in done]}


def _differences(r: fleet.TenantResult[Any]) -> tuple[str, dict[str, Any]]:
    found: list[str] = r.value or []
    text = f"{output.count(len(found), 'difference')}: {'; '.join(found)}" if found else "no drift"
    return text, {"drift": bool(found), "differences": found}


async def _run(
    ctx: Context,
    tenants: list[Tenant],
    results: AsyncIterator[fleet.TenantResult[Any]],
    stop: fleet.Stop,
    verb: str,
    describe: Callable[[fleet.TenantResult[Any]], tuple[str, dict[str, Any]]],
) -> int:
    ctx.out.events = False  # one line per tenant, not per migration
    report = Report(ctx.out, len(tenants), lines=not ctx.out.as_json, jobs=_jobs(ctx))
    rows: list[dict[str, Any]] = []
    drifted = 0
    with _interruptible(stop, report):
        async for r in results:
            text, data = describe(r) if r.ok else ("", {})
            drifted += bool(data.get("drift"))
            report.add(r, f"{text}{verb}".strip() if r.ok else "")
            if ctx.out.as_json:
                rows.append({**_row(r), **data})
    report.end_line()
    if ctx.out.as_json:
        ctx.out.data({"tenants": rows, "counts": report.counts, "interrupted": report.interrupted})
    report.summary()
    if report.interrupted:
        return INTERRUPTED
    stopped = report.counts[fleet.NOT_STARTED] + report.counts[fleet.CANCELLED]
    return 1 if report.failed or stopped or drifted else 0


def _row(r: fleet.TenantResult[Any]) -> dict[str, Any]:
    return {
        "tenant": r.tenant.name,
        "schema": r.tenant.schema,
        "outcome": r.outcome,
        "error": r.error,
        "error_type": r.error_type,
        "duration_ms": r.duration_ms,
    }


class Report:
    """Counts, the live line on a terminal, a line per tenant elsewhere, the summary."""

    def __init__(self, out: output.Output, total: int, *, lines: bool, jobs: int = 1) -> None:
        self.out, self.total, self.lines, self.jobs = out, total, lines, jobs
        self.counts = {fleet.DONE: 0, fleet.FAILED: 0, fleet.CANCELLED: 0, fleet.NOT_STARTED: 0}
        self.errors: list[tuple[str, str]] = []
        self.interrupted = False  # by Ctrl-C
        self.started = time.monotonic()
        self.stream = out.progress
        self.live = self.stream.isatty() and not out.quiet
        self._drawn = False
        self._last = 0.0

    @property
    def failed(self) -> int:
        return self.counts[fleet.FAILED]

    def add(self, r: fleet.TenantResult[Any], text: str) -> None:
        self.counts[r.outcome] += 1
        if r.outcome == fleet.FAILED:
            self.errors.append((r.tenant.name, r.error or ""))
        bad = r.outcome in (fleet.FAILED, fleet.CANCELLED)
        if self.lines and (bad or not self.live):
            word = "ok" if r.ok else r.outcome
            detail = r.error if bad else text
            line = f"{word:<11} {r.tenant.name}" + (f": {detail}" if detail else "")
            if r.outcome == fleet.DONE:
                line += f" ({output.duration(r.duration_ms)})"
            self._clear()
            if bad:
                self.out.result(self.out.paint(line, "red"))
            else:
                self.out.note(line)
        self._draw()

    def stopping(self, second: bool) -> None:
        self.interrupted = True
        self._clear()
        if second:
            self.out.note("cancelling the running tenants; each says what its database kept")
        else:
            self.out.note(
                "stopping: no new tenant starts, the running ones finish (Ctrl-C again "
                "cancels them)"
            )
        self._draw()

    def _draw(self) -> None:
        if not self.live:
            return
        now = time.monotonic()
        finished = sum(self.counts.values())
        if finished < self.total and now - self._last < 0.1:
            return
        self._last = now
        elapsed = max(now - self.started, 1e-6)
        rate = finished / elapsed
        running = 0 if self.interrupted else min(self.jobs, self.total - finished)
        left = self.total - finished
        eta = f"ETA {output.duration(left / rate * 1000)}" if rate and left else ""
        line = (
            f"done {self.counts[fleet.DONE]}  failed {self.failed}  running {running}  "
            f"pending {left - running}  {rate:.1f}/s  {eta}"
        )
        output.put(self.stream, f"\r\033[K{line}")
        self._drawn = True

    def _clear(self) -> None:
        if self._drawn:
            output.put(self.stream, "\r\033[K")
            self._drawn = False

    def end_line(self) -> None:
        self._clear()

    def summary(self) -> None:
        took = output.duration((time.monotonic() - self.started) * 1000)
        parts = [f"{n} {outcome}" for outcome, n in self.counts.items() if n]
        self.out.note(
            f"fleet of {output.count(self.total, 'tenant')}: {', '.join(parts)} in {took}"
        )
        if self.interrupted:
            self.out.warn(
                "interrupted: the tenants not started are as they were, and each cancelled one "
                "as an interrupted single run leaves it; run the same command again to go on"
            )
        elif self.failed or self.counts[fleet.NOT_STARTED]:
            self.out.note("run the same command again to resume: only pending work runs")


@contextmanager
def _interruptible(stop: fleet.Stop, report: Report) -> Iterator[None]:
    """Ctrl-C: the first stops the fleet, the second cancels its running tenants."""
    loop = asyncio.get_running_loop()

    def interrupted() -> None:
        report.stopping(second=stop.stopped)
        if stop.stopped:
            stop.cancel()
        else:
            stop.stop()

    try:
        loop.add_signal_handler(signal.SIGINT, interrupted)
    except (NotImplementedError, RuntimeError):  # not the main thread, or not Unix
        yield
        return
    try:
        yield
    finally:
        loop.remove_signal_handler(signal.SIGINT)


async def _tenants(ctx: Context) -> list[Tenant]:
    from pathlib import Path

    _jobs(ctx)  # a bad setting is refused before any tenant is looked for
    section, cfg = _section(ctx), ctx.cfg
    return await find(ctx.args.fleet, cwd=Path.cwd(), url=cfg.url, section=section, root=cfg.root)


def _section(ctx: Context) -> dict[str, Any]:
    section = configuration.read_section(ctx.cfg.root / "pyproject.toml").get("fleet", {})
    if not isinstance(section, dict):
        raise ConfigError("[tool.rung.fleet] in pyproject.toml must be a table; fix the file")
    return section


def _jobs(ctx: Context) -> int:
    """--jobs, else jobs in [tool.rung.fleet], else the default."""
    if getattr(ctx.args, "jobs", None) is not None:
        return int(ctx.args.jobs)
    jobs = _section(ctx).get("jobs", fleet.DEFAULT_JOBS)
    if not isinstance(jobs, int) or isinstance(jobs, bool) or jobs < 1:
        raise ConfigError(
            f"jobs in [tool.rung.fleet] must be a whole number, 1 or more, not {jobs!r}"
        )
    return jobs


def _refuse(ctx: Context, *options: str) -> None:
    for option in options:
        if getattr(ctx.args, option, False):
            flag = "--" + option.replace("_", "-")
            raise UsageError(f"{flag} does not work with --fleet; run it on one tenant (--url)")
