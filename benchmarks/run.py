"""Regenerate benchmarks/RESULTS.md: rung next to the floor and its peers, on three databases.

    python benchmarks/run.py                  # the full run (about 30 minutes on 2 cores)
    python benchmarks/run.py --quick          # smoke run: N=10, one cycle, one pair per cell
    python benchmarks/run.py --only rung      # rung (CLI and API) and the floor, no peers
    python benchmarks/run.py --db postgresql --scenario apply,noop --n 100 --merge

See benchmarks/README.md for the method. Nothing here is timed but the tools' processes:
generating projects, resetting databases and checking them happen between timed runs.
"""

from __future__ import annotations

import argparse
import os
import platform
import sys
import time
from collections.abc import Callable
from contextlib import suppress
from dataclasses import dataclass, replace
from datetime import datetime, timezone
from pathlib import Path

from benchlib import generate, report
from benchlib.databases import DATABASES, Database
from benchlib.measure import BenchError, Cell, Results, TooSlow, timed, untimed
from benchlib.tools import (
    FLOOR_HELP,
    PYTHON,
    Floor,
    Run,
    RungCli,
    Tool,
    all_tools,
    use_rung_source,
)
from benchlib.workload import SHAPE

BENCH_DIR = Path(__file__).resolve().parent
WORK = BENCH_DIR / ".work"
SCENARIOS = (
    "apply",
    "noop",
    "status",
    "rollback",
    "10k",
    "help",
    "inprocess",
    "verify",
    "drift",
)
LADDER = ("apply", "noop", "status", "rollback")
RUNG_FAMILY = ("rung", "rung-api")


@dataclass(frozen=True)
class Plan:
    """How much to measure. A ladder cell runs ``cycles`` rounds of fresh databases → apply →
    ``pairs`` no-op pairs → ``pairs`` status pairs → rollback. rung (the CLI, else the API
    process) is measured most; the peers and raw-sa enough to place them. With ``caps``,
    the slow cells are cut down to fit the time budget (see ``for_cell``)."""

    ns: tuple[int, ...] = (100, 1000)
    big_n: int = 10_000
    inprocess_n: int = 1000
    rung_cycles: tuple[int, int] = (3, 2)  # at N < 1000, at N >= 1000
    peer_cycles: tuple[int, int] = (2, 1)
    rung_pairs: int = 3
    peer_pairs: int = 2
    big_pairs: tuple[int, int] = (3, 1)  # rung, peers
    help_pairs: int = 10
    inprocess_reps: int = 20
    verify_timeout: float = 900.0  # seconds per verify run; larger N is skipped after a miss
    caps: bool = True

    def for_cell(self, db: str, n: int, tool: str, primary: str) -> tuple[int, int, str] | str:
        """(cycles, pairs, note) for a ladder cell, or why it is skipped. MariaDB commits
        every DDL statement to disk (15 to 70 ms a migration on this machine), so at
        N >= 1000 it runs one cycle of rung and the two peers only."""
        big = n >= 1000
        if tool == primary:
            cycles, pairs = self.rung_cycles[big], self.rung_pairs
        else:
            cycles, pairs = self.peer_cycles[big], self.peer_pairs
        if not self.caps or db != "mariadb" or not big:
            return cycles, pairs, ""
        if tool not in (primary, "alembic", "yoyo"):
            return f"capped: MariaDB at N >= 1000 runs {primary}, alembic and yoyo only"
        return 1, max(pairs, 5 if tool == primary else 2), "MariaDB N >= 1000: one cycle"

    def big_tools(self, primary: str) -> tuple[str, ...] | None:
        """The tools of the 10,000-migration cells (None: all of them)."""
        return None if not self.caps else (primary, "alembic", "yoyo")


QUICK = Plan(
    ns=(10,),
    big_n=200,
    inprocess_n=10,
    rung_cycles=(1, 1),
    peer_cycles=(1, 1),
    rung_pairs=1,
    peer_pairs=1,
    big_pairs=(1, 1),
    help_pairs=1,
    inprocess_reps=3,
    caps=False,
)


def need(run: Run | None) -> Run:
    assert run is not None, "the tool has no such action"
    return run


def log(message: str) -> None:
    print(f"[{datetime.now():%H:%M:%S}] {message}", file=sys.stderr, flush=True)


def log_cell(c: Cell) -> None:
    log(f"  {c.key}: {c.tool_ms:.0f} ms vs {c.reference_ms:.0f} ms, x{c.ratio:.2f}")


class Bench:
    def __init__(self, results: Results, plan: Plan, scenarios: set[str]) -> None:
        self.results = results
        self.plan = plan
        self.scenarios = scenarios
        self.floor = Floor(WORK)
        self.primary = "rung" if RungCli(WORK).available() is None else "rung-api"

    # --- pieces ------------------------------------------------------------------------------

    def pair(self, cell: Cell, tool_run: Run | None, reference_run: Run | None) -> None:
        cell.tool_s.append(timed(need(tool_run)))
        cell.reference_s.append(timed(need(reference_run)))

    def expect_tables(self, db: Database, slot: str, count: int, after: str) -> None:
        found = db.ladder_tables(slot)
        if found != count:
            raise BenchError(
                f"after {after}, {db.name}/{slot} holds {found} ladder tables, not {count}"
            )

    def run_ladder(self, db: Database, n: int, tool: Tool, hook: Callable[[], None] | None) -> None:
        """Cycles of: fresh databases → apply → no-op ups → statuses → rollback, the tool
        and the floor taking turns at each step."""
        shape = self.plan.for_cell(db.name, n, tool.name, self.primary)
        wanted = [s for s in LADDER if s in self.scenarios]
        if isinstance(shape, str):
            for s in wanted:
                self.results.skipped[f"{db.name}/{s}/{n}/{tool.name}"] = shape
            return
        cycles, pairs, note = shape
        cells = {s: self.results.cell(db.name, s, n, tool.name) for s in wanted}
        for c in cells.values():
            c.note = note
        f, t = self.floor, tool
        for slot in ("tool", "floor"):
            db.reset(slot)
        for who in (t, f):  # warm-up: imports, files and the server's caches
            untimed(replace(need(who.run("status", db, n)), expect=None))
        applied = False
        for cycle in range(cycles):
            log(f"{db.name} n={n} {tool.name}: cycle {cycle + 1}/{cycles}")
            if not applied:
                for slot in ("tool", "floor"):
                    db.reset(slot)
                if "apply" in cells:
                    self.pair(cells["apply"], t.run("apply", db, n), f.run("apply", db, n))
                else:
                    untimed(need(t.run("apply", db, n)))
                    untimed(need(f.run("apply", db, n)))
                self.expect_tables(db, "tool", n, f"{tool.name} apply")
                self.expect_tables(db, "floor", n, "raw apply")
            for scenario in ("noop", "status"):
                if scenario in cells:
                    for _ in range(pairs):
                        self.pair(cells[scenario], t.run(scenario, db, n), f.run(scenario, db, n))
                    self.expect_tables(db, "tool", n, f"{tool.name} {scenario}")
                    self.expect_tables(db, "floor", n, f"raw {scenario}")
            if hook is not None and cycle == 0:
                hook()
            if "rollback" in cells:
                self.pair(cells["rollback"], t.run("rollback", db, n), f.run("rollback", db, n))
                self.expect_tables(db, "tool", 0, f"{tool.name} rollback")
                self.expect_tables(db, "floor", 0, "raw rollback")
            applied = "rollback" not in cells and "apply" not in cells
        for c in cells.values():
            log_cell(c)

    def run_big(self, db: Database, tool: Tool) -> None:
        """No-op up and status over a 10,000-migration registry, every one recorded as
        applied by the tool's own "mark" (no tables: they play no part in either)."""
        n = self.plan.big_n
        cells = {s: self.results.cell(db.name, s, n, tool.name) for s in ("noop", "status")}
        db.reset("tool")
        log(f"{db.name} n={n} {tool.name}: marking all applied (untimed)")
        untimed(need(tool.run("mark", db, n)))
        for who in (tool, self.floor):
            untimed(need(who.run("noop", db, n)))
        pairs = self.plan.big_pairs[tool.name != self.primary]
        for _ in range(pairs):
            for scenario, c in cells.items():
                self.pair(c, tool.run(scenario, db, n), self.floor.run(scenario, db, n))
        self.expect_tables(db, "tool", 0, f"{tool.name} noop/status")
        for c in cells.values():
            log_cell(c)

    def run_help(self, tools: list[Tool]) -> None:
        floor = Run(FLOOR_HELP)
        for tool in tools:
            run = tool.run("help", Database("sqlite", WORK), 0)
            if run is None:
                continue
            cell = self.results.cell("any", "help", 0, tool.name)
            untimed(run)
            untimed(floor)
            for _ in range(self.plan.help_pairs):
                self.pair(cell, run, floor)
            log_cell(cell)

    def run_inprocess(self, db: Database, n: int) -> None:
        """Expects the tool slot to hold ladder-n applied by rung."""
        project = generate.ensure("rung", n, WORK)
        argv = [
            PYTHON,
            str(BENCH_DIR / "inprocess.py"),
            db.async_url("tool"),
            str(project),
            str(self.plan.inprocess_reps),
        ]
        import json

        found = json.loads(untimed(Run(argv)))
        found["n"] = n
        self.results.inprocess[db.name] = found
        log(
            f"  {db.name} in-process no-op upgrade: {found['upgrade_ms']:.1f} ms, "
            f"SELECT {found['select_with_checkout_ms']:.1f} ms, {found['counts']}"
        )

    def run_inprocess_alone(self, db: Database, n: int) -> None:
        api = all_tools(WORK)["rung-api"]
        db.reset("tool")
        untimed(need(api.run("apply", db, n)))
        self.run_inprocess(db, n)
        db.reset("tool")

    def run_verify(self, db: Database, n: int, cli: RungCli, scenario: str = "verify") -> bool:
        """rung verify's time (or, for ``drift``, ``rung drift --replay``'s on a database
        where all N are applied) as a ratio to a plain ``rung up`` on an empty database,
        one pair. Returns False when it did not finish within ``verify_timeout``."""
        cell = self.results.cell(db.name, scenario, n, "rung", reference="rung up")
        db.reset("tool")
        if scenario == "drift":
            untimed(need(cli.run("apply", db, n)))
        command = replace(need(cli.run(scenario, db, n)), timeout=self.plan.verify_timeout)
        try:
            cell.tool_s.append(timed(command))
        except TooSlow as slow:
            del self.results.cells[cell.key]
            late = f"rung {scenario} did not finish within {slow.limit:g} s"
            self.results.skipped[cell.key] = late
            log(f"  {cell.key}: did not finish within {slow.limit:g} s")
            return False
        self.expect_tables(db, "tool", n if scenario == "drift" else 0, f"rung {scenario}")
        db.reset("tool")
        cell.reference_s.append(timed(need(cli.run("apply", db, n))))
        self.expect_tables(db, "tool", n, "rung up")
        log(f"  {cell.key}: {cell.tool_ms:.0f} ms vs rung up {cell.reference_ms:.0f} ms")
        return True


def guarded(results: Results, db: str, n: int, tool: str, action: Callable[[], None]) -> None:
    """Run one tool's cells; a failure drops them, is reported, and the run goes on."""
    try:
        action()
    except (BenchError, OSError, ValueError) as exc:
        log(f"FAILED {db}/{n}/{tool}: {exc}")
        for key, c in list(results.cells.items()):
            if (c.db, c.n, c.tool) == (db, n, tool):
                del results.cells[key]
        results.skipped[f"{db}/{n}/{tool}"] = f"failed: {' '.join(str(exc).split())[:300]}"


def machine() -> dict[str, str]:
    model = "unknown CPU"
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                model = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    return {
        "cores": str(os.cpu_count()),
        "cpu": model,
        "system": f"{platform.system()} {platform.release()}",
        "python": platform.python_version(),
    }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="smoke run: small N, one repetition")
    parser.add_argument("--only", choices=["rung"], help="rung and the floor only, no peers")
    parser.add_argument("--tools", help=f"comma-separated, from {', '.join(all_tools(WORK))}")
    parser.add_argument("--db", help=f"comma-separated, from {', '.join(DATABASES)}")
    parser.add_argument("--scenario", help=f"comma-separated, from {', '.join(SCENARIOS)}")
    parser.add_argument("--n", help="comma-separated ladder sizes (default 100,1000)")
    parser.add_argument("--cycles", type=int, help="apply/rollback cycles per ladder cell")
    parser.add_argument("--pairs", type=int, help="no-op and status pairs per cycle")
    parser.add_argument("--no-caps", action="store_true", help="measure slow cells in full")
    parser.add_argument(
        "--merge", action="store_true", help="add to the last results instead of starting afresh"
    )
    parser.add_argument(
        "--rung-at",
        default="working",
        metavar="REV",
        help="measure rung as in this git revision, or 'working' (default): a copy of "
        "src/rung taken at start, so edits during the run do not leak into it",
    )
    parser.add_argument("--output", type=Path, help="where to write the Markdown report")
    parser.add_argument(
        "--report-only",
        action="store_true",
        help="re-render the report from the last results, measure nothing",
    )
    args = parser.parse_args(argv)

    plan = QUICK if args.quick else Plan()
    if args.n:
        plan = replace(plan, ns=tuple(int(x) for x in args.n.split(",")))
    if args.cycles:
        both = (args.cycles, args.cycles)
        plan = replace(plan, rung_cycles=both, peer_cycles=both)
    if args.pairs:
        plan = replace(
            plan, rung_pairs=args.pairs, peer_pairs=args.pairs, big_pairs=(args.pairs, args.pairs)
        )
    if args.no_caps:
        plan = replace(plan, caps=False)
    data = WORK / ("results-quick.json" if args.quick else "results.json")
    output = args.output or (WORK / "RESULTS-quick.md" if args.quick else BENCH_DIR / "RESULTS.md")
    if args.report_only:
        output.write_text(report.render(Results.load(data)))
        log(f"wrote {output}")
        return 0

    results = Results.load(data) if args.merge and data.exists() else Results()
    measured_rung = use_rung_source(WORK, args.rung_at)
    log(f"measuring rung as in: {measured_rung}")
    tools = all_tools(WORK)
    names = list(tools)
    if args.only == "rung":
        names = list(RUNG_FAMILY)
    if args.tools:
        names = [x.strip() for x in args.tools.split(",")]
        unknown = set(names) - set(tools)
        if unknown:
            parser.error(f"unknown tools: {', '.join(sorted(unknown))}")
    chosen: list[Tool] = []
    for name in names:
        why = tools[name].available()
        if why:
            log(f"skipping {name}: {why}")
            results.skipped[f"tool {name}"] = why
        else:
            chosen.append(tools[name])
    scenarios = set(args.scenario.split(",") if args.scenario else SCENARIOS)
    if scenarios - set(SCENARIOS):
        parser.error(f"unknown scenarios: {', '.join(sorted(scenarios - set(SCENARIOS)))}")
    dbs = [Database(name, WORK) for name in (args.db.split(",") if args.db else DATABASES)]

    bench = Bench(results, plan, scenarios)
    started = time.perf_counter()
    meta = results.meta
    shape = [f"RUNG_BENCH_SHAPE={SHAPE}"] if SHAPE != "ladder" else []
    meta.setdefault("runs", []).append(
        {
            "date": datetime.now(timezone.utc).strftime("%Y-%m-%d %H:%M UTC"),
            "command": " ".join([*shape, "python", "benchmarks/run.py", *(argv or sys.argv[1:])]),
        }
    )
    meta["machine"] = machine()
    meta["rung_revision"] = measured_rung
    meta["plan"] = {**plan.__dict__, "ns": list(plan.ns)}
    meta.setdefault("versions", {})
    for tool in [*chosen, bench.floor]:
        meta["versions"].update(tool.versions())
    from importlib import metadata

    for package in ("sqlalchemy", "asyncpg", "asyncmy", "aiosqlite", "psycopg", "pymysql"):
        with suppress(metadata.PackageNotFoundError):
            meta["versions"][package] = metadata.version(package)
    meta.setdefault("servers", {})

    if "help" in scenarios:
        log("--help cold start")
        bench.run_help(chosen)
    for db in dbs:
        why = db.reachable()
        if why:
            log(f"skipping {db.name}: {why}")
            results.skipped[f"database {db.name}"] = why
            continue
        meta["servers"][db.name] = db.server_version()
        for n in plan.ns:
            hook_n = n == plan.inprocess_n and "inprocess" in scenarios
            hooked = False
            for tool in chosen:
                if not scenarios & set(LADDER):
                    break
                hook = None
                if hook_n and tool.family == "rung" and not hooked:
                    hook, hooked = (lambda db=db, n=n: bench.run_inprocess(db, n)), True
                guarded(
                    results,
                    db.name,
                    n,
                    tool.name,
                    lambda db=db, n=n, tool=tool, hook=hook: bench.run_ladder(db, n, tool, hook),
                )
            if hook_n and not hooked and any(t.family == "rung" for t in chosen):
                guarded(
                    results,
                    db.name,
                    n,
                    "inprocess",
                    lambda db=db, n=n: bench.run_inprocess_alone(db, n),
                )
        if "10k" in scenarios:
            db.reset("floor")
            untimed(need(bench.floor.run("mark", db, plan.big_n)))
            wanted = plan.big_tools(bench.primary)
            for tool in chosen:
                if wanted is not None and tool.name not in wanted:
                    results.skipped[f"{db.name}/{plan.big_n}/{tool.name}"] = (
                        f"capped: the 10,000-migration cells run {', '.join(wanted)} only"
                    )
                    continue
                guarded(
                    results,
                    db.name,
                    plan.big_n,
                    tool.name,
                    lambda db=db, tool=tool: bench.run_big(db, tool),
                )
        for slot in ("tool", "floor"):
            db.drop(slot)
        results.save(data)

    # Last, being slow: rung verify (issue 4), one pair per database and N, smallest N first.
    cli = tools["rung"]
    for net in [s for s in ("drift", "verify") if s in scenarios and cli in chosen]:
        assert isinstance(cli, RungCli)
        if not cli.supports_verify():
            results.skipped[net] = "rung verify does not exist yet"
        for db in dbs if cli.supports_verify() else []:
            if f"database {db.name}" in results.skipped:
                continue
            for n in sorted(plan.ns):
                finished = [False]

                def measure(
                    db: Database = db, n: int = n, done: list[bool] = finished, net: str = net
                ) -> None:
                    done[0] = bench.run_verify(db, n, cli, net)

                guarded(results, db.name, n, net, measure)
                if not finished[0]:
                    for larger in [m for m in plan.ns if m > n]:
                        results.skipped[f"{db.name}/{net}/{larger}/rung"] = (
                            f"not run: {net} did not finish at N={n}"
                        )
                    break
            db.drop("tool")
        results.save(data)

    meta["elapsed_s"] = round(time.perf_counter() - started)
    results.save(data)
    output.write_text(report.render(results))
    log(f"done in {meta['elapsed_s']} s; wrote {output} (data: {data})")
    return 0


if __name__ == "__main__":
    sys.exit(main())
