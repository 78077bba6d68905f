"""The ``rung`` command: one small function per command over the library, and the one place
where errors become ``rung: error: ...`` and an exit code (0 done, 1 failed or problems
found, 2 usage or configuration). Its only ``asyncio.run`` is in ``main``.

Only the standard library and rung's light modules are imported up front; SQLAlchemy and
the runner are imported inside the commands that use a database, so ``rung --help`` and
``rung new`` start at once and work without a database driver.
"""

from __future__ import annotations

import argparse
import functools
import logging
import os
import sys
import traceback
import types
from collections.abc import AsyncIterator, Callable, Sequence
from contextlib import asynccontextmanager
from pathlib import Path
from typing import TYPE_CHECKING, Any, NoReturn

from rung import config as configuration
from rung import output
from rung.errors import (
    ConfigError,
    DatabaseUnreachable,
    MigrationFailed,
    RegistryError,
    RungError,
    SchemaError,
    UnknownTarget,
    UsageError,
)
from rung.output import LibraryHandler, Output, ProgressHandler

if TYPE_CHECKING:
    from sqlalchemy.ext.asyncio import AsyncEngine

    from rung.plan import MigrationState
    from rung.runner import Executed

GLOBAL_OPTIONS = ("url", "migrator", "table", "lock_timeout", "per_migration", "wait")


class Context:
    """What every command gets: its arguments, the configuration, the output."""

    def __init__(self, args: argparse.Namespace, cfg: configuration.Config, out: Output) -> None:
        self.args, self.cfg, self.out = args, cfg, out

    @functools.cached_property
    def registry(self) -> Any:
        """The migrator, imported with the project root on sys.path."""
        from rung.registry import load_migrator

        configuration.add_to_path(self.cfg.root)
        return load_migrator(self.cfg.migrator)

    @asynccontextmanager
    async def database(self, *, only_reads: bool = False) -> AsyncIterator[AsyncEngine]:
        """The configured database, once it accepts connections (--wait). ``only_reads``:
        the command must not create a SQLite file that is not there."""
        configuration.check_driver(self.cfg.url)  # configuration errors first, then the
        self.registry  # noqa: B018  registry, before any connection
        if only_reads:
            configuration.check_exists(self.cfg.url)
        engine = configuration.create_engine(self.cfg)
        try:
            await configuration.reach(engine, self.cfg.url, self.cfg.wait, self.out.note)
            yield engine
        finally:
            await engine.dispose()

    @property
    def writes(self) -> dict[str, Any]:
        """Keyword arguments of the runner's upgrade and downgrade."""
        return {**self.cfg.run_options, "per_migration": self.cfg.per_migration}

    def confirm(self, what: str) -> None:
        """Ask on a terminal; elsewhere demand --yes."""
        self.registry  # noqa: B018  (configuration errors first, before asking)
        command = self.args.command
        if self.args.yes:
            return
        if not sys.stdin.isatty():
            raise UsageError(
                f"rung {command} would {what}; it asks first on a terminal, so pass --yes "
                "to do it from a script"
            )
        sys.stderr.write(f"rung {command} will {what}.\nType 'yes' to go on: ")
        sys.stderr.flush()
        if sys.stdin.readline().strip().lower() not in ("y", "yes"):
            raise RungError(f"rung {command} cancelled: nothing was changed")

    def report(self, done: Sequence[Executed], engine: AsyncEngine, nothing: str) -> int:
        output.executed(self.out, done, self._how(done, engine), nothing)
        return 0

    def _how(self, done: Sequence[Executed], engine: AsyncEngine) -> str:
        """How the run committed, never claiming an atomicity the database cannot give."""
        from rung.dialects import dialect_named
        from rung.registry import migrations_of

        if len(done) < 2:
            return ""
        if not dialect_named(engine.dialect.name).transactional_ddl:
            return f", each committed on its own ({engine.dialect.name} commits DDL at once)"
        if self.cfg.per_migration:
            return ", each in its own transaction"
        transactional = {m.name: m.transactional for m in migrations_of(self.registry)}
        return ", in one transaction" if all(transactional.get(e.name) for e in done) else ""


# -- the commands -----------------------------------------------------------------------------


def cmd_init(ctx: Context) -> int:
    from rung import scaffold

    root = Path(ctx.args.dir).resolve() if ctx.args.dir else Path.cwd()
    done = scaffold.init(root)
    for path in done.created:
        ctx.out.result(f"created {path.relative_to(root)}")
    if done.pyproject == "kept":
        ctx.out.result("kept pyproject.toml as it is: it has a [tool.rung] section already")
    else:
        ctx.out.result(f"{done.pyproject} pyproject.toml with a [tool.rung] section")
    there = f"cd {ctx.args.dir}, " if ctx.args.dir and root != Path.cwd() else ""
    ctx.out.note(f"next: {there}rung new create_first_table, write its up and down, then rung up")
    return 0


def cmd_new(ctx: Context) -> int:
    from rung import scaffold

    made = scaffold.new(ctx.cfg.root, ctx.cfg.migrator, ctx.args.name)
    ctx.out.result(str(made.path.relative_to(ctx.cfg.root)))
    if made.registered:
        ctx.out.note(f"registered at the end of {made.lib.relative_to(ctx.cfg.root)}")
        return 0
    ctx.out.warn(f"{made.lib} was not edited: {made.reason}; add these lines yourself:")
    ctx.out.result(f"    {made.lines_to_add[0]}    # with the imports")
    ctx.out.result(f"    {made.lines_to_add[1]}    # at the end of the registry")
    return 0


async def cmd_up(ctx: Context) -> int:
    from rung.runner import upgrade

    a = ctx.args
    if a.dry_run:
        return await _dry_run(ctx, "up")
    async with ctx.database() as engine:
        if a.check_drift or a.strict:
            await _drift_gate(ctx, engine, strict=a.strict)
        done = await upgrade(
            engine, ctx.registry, steps=a.n, to=a.to, out_of_order=a.out_of_order, **ctx.writes
        )
        return ctx.report(done, engine, "nothing to apply: the database is up to date")


async def cmd_down(ctx: Context) -> int:
    from rung.runner import downgrade

    a = ctx.args
    if a.dry_run:
        return await _dry_run(ctx, "down")
    async with ctx.database() as engine:
        done = await downgrade(engine, ctx.registry, steps=a.n, to=a.to, all=a.all, **ctx.writes)
        return ctx.report(done, engine, "nothing to revert")


async def cmd_status(ctx: Context) -> int:
    from rung.plan import outstanding, states
    from rung.registry import migrations_of
    from rung.runner import status

    missing = configuration.missing_file(ctx.cfg.url)
    if missing is None:
        async with ctx.database() as engine:
            found = await status(engine, ctx.registry, table=ctx.cfg.table)
    else:  # status never writes, not even an empty SQLite file
        configuration.create_engine(ctx.cfg)  # but a bad URL is still an error
        ctx.out.note(f"{missing} does not exist yet: every migration is pending (rung up makes it)")
        found = states(migrations_of(ctx.registry), [])
    output.status(ctx.out, found, f"database {ctx.cfg.shown_url}, history in {ctx.cfg.table}")
    return 1 if ctx.args.exit_code and outstanding(found) else 0


async def cmd_show(ctx: Context) -> int:
    from rung.runner import status

    async with ctx.database(only_reads=True) as engine:
        states = await status(engine, ctx.registry, table=ctx.cfg.table)
    output.show(ctx.out, _find(states, ctx.args.name))
    return 0


async def cmd_fresh(ctx: Context) -> int:
    from rung.runner import upgrade

    ctx.confirm(f"drop every table in {ctx.cfg.shown_url}, then apply every migration")
    async with ctx.database() as engine:
        dropped = await _drop_everything(engine)
        ctx.out.note(f"dropped {', '.join(dropped) or 'nothing: the database was empty'}")
        done = await upgrade(engine, ctx.registry, **ctx.writes)
        return ctx.report(done, engine, "nothing to apply: no migrations are registered")


async def cmd_refresh(ctx: Context) -> int:
    from rung.runner import downgrade, upgrade

    ctx.confirm(f"revert every migration in {ctx.cfg.shown_url}, then apply them all again")
    async with ctx.database() as engine:
        reverted = await downgrade(engine, ctx.registry, all=True, **ctx.writes)
        if not ctx.out.as_json:
            ctx.report(reverted, engine, "nothing to revert")
        done = await upgrade(engine, ctx.registry, **ctx.writes)
        both = [*reverted, *done] if ctx.out.as_json else done  # JSON: one list, with directions
        return ctx.report(both, engine, "nothing to apply")


async def cmd_reset(ctx: Context) -> int:
    from rung.runner import downgrade

    ctx.confirm(f"revert every migration in {ctx.cfg.shown_url}")
    async with ctx.database() as engine:
        done = await downgrade(engine, ctx.registry, all=True, **ctx.writes)
        return ctx.report(done, engine, "nothing to revert")


async def cmd_baseline(ctx: Context) -> int:
    from rung.runner import baseline

    async with ctx.database() as engine:
        names = await baseline(engine, ctx.registry, to=ctx.args.to, **ctx.cfg.run_options)
    if ctx.out.as_json:
        ctx.out.data({"recorded": names})
    for name in [] if ctx.out.as_json else names:
        ctx.out.result(f"recorded as applied, without running it: {name}")
    ctx.out.note(
        f"{output.count(len(names), 'migration')} recorded" if names else "nothing to record"
    )
    return 0


async def cmd_repair(ctx: Context) -> int:
    from rung.runner import repair

    a = ctx.args
    applied = True if a.applied else False if a.not_applied else None
    async with ctx.database() as engine:
        done = await repair(engine, ctx.registry, a.name, applied=applied, **ctx.cfg.run_options)
    if ctx.out.as_json:
        ctx.out.data(
            {"repairs": [{"name": r.name, "resolution": r.resolution.value} for r in done]}
        )
    for r in [] if ctx.out.as_json else done:
        ctx.out.result(f"{r.name}: {r.resolution.value}")
    ctx.out.note(
        f"{output.count(len(done), 'change')} to the history" if done else "nothing to repair"
    )
    return 0


def cmd_check(ctx: Context) -> int:
    from rung.migration import Migration
    from rung.registry import _collect, lint_folder, validate

    entries = _collect(ctx.registry)
    module = sys.modules[ctx.cfg.migrator.partition(":")[0]]
    folder = Path(module.__file__ or ".").parent
    found = validate(entries) + lint_folder(
        [m for m in entries if isinstance(m, Migration)], folder
    )
    if ctx.out.as_json:
        ctx.out.data({"ok": not found, "migrations": len(entries), "problems": found})
        return 1 if found else 0
    what = f"{ctx.cfg.migrator}: {output.count(len(entries), 'migration')} in {folder}"
    output.problems(
        ctx.out,
        found,
        f"{output.count(len(found), 'problem')} in {what}" if found else f"ok, {what}",
    )
    return 1 if found else 0


async def cmd_verify(ctx: Context) -> int:
    from rung.verifying import verify

    ctx.out.events = bool(ctx.out.verbose)
    async with ctx.database() as engine:
        report = await verify(
            engine,
            ctx.registry,
            scratch_url=_scratch(ctx),
            start_after=ctx.args.start_after,
            table=ctx.cfg.table,
        )
    checked = report.checked if isinstance(report.checked, int) else len(report.checked)
    found = [f"{f.message}" + "".join(f"\n    {d}" for d in f.differences) for f in report.failures]
    if ctx.out.as_json:
        ctx.out.data({"ok": report.ok, "checked": checked, "failures": found})
        return 0 if report.ok else 1
    summary = output.count(len(found), "problem") if found else "every down reverses its up"
    output.problems(ctx.out, found, f"verified {output.count(checked, 'migration')}: {summary}")
    return 0 if report.ok else 1


async def cmd_drift(ctx: Context) -> int:
    from rung.drifting import drift

    ctx.out.events = bool(ctx.out.verbose)
    async with ctx.database(only_reads=True) as engine:
        report = await drift(
            engine,
            ctx.registry,
            replay=ctx.args.replay,
            scratch_url=_scratch(ctx),
            exclude=_excluded(ctx),
            table=ctx.cfg.table,
        )
    found = [str(d) for d in report.differences]
    if ctx.out.as_json:
        ctx.out.data({"drift": report.has_drift, "differences": found})
        return 1 if report.has_drift else 0
    against = "the history replayed on a scratch database" if ctx.args.replay else "rung's last run"
    for difference in found:
        ctx.out.result(difference)
    summary = (
        f"{output.count(len(found), 'difference')} from" if report.has_drift else "no drift from"
    )
    ctx.out.note(f"{summary} {against}")
    return 1 if report.has_drift else 0


# -- what the commands share ------------------------------------------------------------------


async def _dry_run(ctx: Context, direction: str) -> int:
    from rung.dryrun import dry_run
    from rung.plan import Direction, Request

    a = ctx.args
    steps = 1 if direction == "down" and not (a.n or a.to or a.all) else a.n
    request = Request(Direction(direction), steps, a.to, getattr(a, "out_of_order", False))
    ctx.out.events = bool(ctx.out.verbose)
    async with ctx.database() as engine:
        done = await dry_run(
            engine, ctx.registry, request, table=ctx.cfg.table, scratch_url=_scratch(ctx)
        )
    output.dry_run(ctx.out, done, "apply" if direction == "up" else "revert")
    return 0


async def _drift_gate(ctx: Context, engine: AsyncEngine, *, strict: bool) -> None:
    """Before an upgrade: warn about drift since rung's last run, or refuse with --strict."""
    from rung.drifting import check_drift
    from rung.errors import NoSnapshot
    from rung.history import History
    from rung.runner import connect

    try:
        async with connect(engine) as conn:
            found = [
                str(d) for d in await check_drift(conn, History(ctx.cfg.table), _excluded(ctx))
            ]
    except NoSnapshot as exc:
        if strict:
            raise
        ctx.out.warn(f"cannot check for drift: {exc.message}")
        return
    for difference in found:
        ctx.out.warn(f"drift: {difference}")
    if strict and found:
        raise SchemaError(
            f"the schema changed outside rung since its last run (the "
            f"{output.count(len(found), 'difference')} above) and --strict refuses to migrate "
            "it; undo them, or run without --strict",
            differences=found,
        )


def _scratch(ctx: Context) -> str | None:
    given = getattr(ctx.args, "scratch_url", None)
    return configuration.normalize_url(given) if given else ctx.cfg.scratch_url


def _excluded(ctx: Context) -> tuple[str, ...]:
    return (*ctx.cfg.exclude, *(getattr(ctx.args, "exclude", None) or ()))


async def _drop_everything(engine: AsyncEngine) -> list[str]:
    """Drop everything in the default schema, rung's own tables included."""
    from rung.dialects import dialect_named

    async with engine.begin() as conn:
        return await dialect_named(engine.dialect.name).drop_everything(conn)


def _find(states: Sequence[MigrationState], name: str) -> MigrationState:
    """The state of migration ``name``; a unique part of a name will do."""
    found = [s for s in states if s.name == name] or [s for s in states if name in s.name]
    if len(found) == 1:
        return found[0]
    if not found:
        raise UnknownTarget(f"no migration is named {name!r}; run 'rung status' for the names")
    names = ", ".join(s.name for s in found[:3]) + (", ..." if len(found) > 3 else "")
    raise UsageError(f"{name!r} is part of {len(found)} names ({names}); give more of it")


def _hint(exc: RungError, ctx: Context | None) -> str:
    """A second line where it helps: where a setting came from, or where a migration failed."""
    if ctx is None:
        return ""
    if isinstance(exc, DatabaseUnreachable):
        return f"the URL came from {ctx.cfg.sources.get('url', 'the default')}"
    if isinstance(exc, ConfigError) and "migrator" in exc.message:
        source = ctx.cfg.sources.get("migrator", "the default")
        return f"the migrator came from {source}; {ctx.cfg.root} is on sys.path"
    if isinstance(exc, MigrationFailed):
        frames = traceback.extract_tb(exc.cause.__traceback__)
        own = [f for f in frames if Path(f.filename).stem == exc.name] or frames[-1:]
        where = f"raised at {own[-1].filename}:{own[-1].lineno}; " if own else ""
        return f"{where}run with -v for the traceback"
    if isinstance(exc, RegistryError) and len(exc.problems) > 1:
        return "'rung check' lists every problem"
    return ""


# -- the parser and main ----------------------------------------------------------------------


class Parser(argparse.ArgumentParser):
    """argparse, with usage errors in rung's own two-line form."""

    def error(self, message: str) -> NoReturn:
        sys.stderr.write(f"rung: error: {message}\nrung: hint: see '{self.prog} --help'\n")
        raise SystemExit(2)


def _positive(text: str) -> int:
    if not text.isdigit() or int(text) < 1:
        raise argparse.ArgumentTypeError(f"must be a whole number, 1 or more, not {text!r}")
    return int(text)


# fmt: off
def _global_options() -> Parser:
    """Options allowed before and after the command; SUPPRESS: only given ones are set."""
    parent = Parser(add_help=False, argument_default=argparse.SUPPRESS)
    g = parent.add_argument_group("global options (before or after the command)")
    g.add_argument("--url", help="database URL (else DATABASE_URL, else [tool.rung] url)")
    g.add_argument("--migrator", metavar="MODULE:ATTR",
                   help="the registry (else RUNG_MIGRATOR, else [tool.rung] migrator)")
    g.add_argument("--table", help="tracking table (default rung_migrations)")
    g.add_argument("--lock-timeout", type=float, metavar="SECONDS",
                   help="how long to wait for another run's lock (default 60)")
    g.add_argument("--per-migration", action="store_true",
                   help="commit each migration on its own, not all in one transaction")
    g.add_argument("--wait", type=float, metavar="SECONDS",
                   help="keep retrying until the database accepts connections")
    g.add_argument("-v", "--verbose", action="count", help="more detail, and tracebacks")
    g.add_argument("-q", "--quiet", action="store_true", help="only results and errors")
    return parent
# fmt: on


COMMANDS: dict[str, tuple[Callable[[Context], Any], str]] = {
    "init": (cmd_init, "create the migration layout in a project"),
    "new": (cmd_new, "create a migration and register it in lib.py"),
    "up": (cmd_up, "apply pending migrations"),
    "down": (cmd_down, "revert applied migrations (one by default)"),
    "status": (cmd_status, "every migration's state"),
    "show": (cmd_show, "one migration in full, with the SQL it ran"),
    "fresh": (cmd_fresh, "drop every table, then apply every migration"),
    "refresh": (cmd_refresh, "revert every migration, then apply them all"),
    "reset": (cmd_reset, "revert every migration"),
    "baseline": (cmd_baseline, "record migrations as applied without running them"),
    "repair": (cmd_repair, "accept changed code; resolve failed migrations"),
    "check": (cmd_check, "check the registry against its folder (no database)"),
    "verify": (cmd_verify, "prove on a scratch database that every down reverses its up"),
    "drift": (cmd_drift, "name schema changes made outside the migrations"),
}

# Each command's own options: (flags, keyword arguments of add_argument).
# fmt: off
FLAG: dict[str, Any] = {"action": "store_true"}
JSON = (("--json",), {**FLAG, "help": "print the result as JSON"})
YES = (("-y", "--yes"), {**FLAG, "help": "do not ask for confirmation"})
STEPS = (("-n", "--steps"),
         {"dest": "n", "type": _positive, "metavar": "N", "help": "only the next N migrations"})
DRY = (("--dry-run",), {**FLAG, "help": "print the SQL it would run; change nothing"})
SCRATCH = (("--scratch-url",), {"metavar": "URL", "help": "scratch database (default: temporary)"})
OPTIONS: dict[str, list[tuple[tuple[str, ...], dict[str, Any]]]] = {
    "init": [(("dir",), {"nargs": "?", "help": "the project folder (default: here)"})],
    "new": [(("name",), {"help": "what it does, e.g. add_priority_to_todos"})],
    "up": [
        STEPS,
        (("--to",), {"metavar": "NAME", "help": "up to and including NAME"}),
        (("--out-of-order",), {**FLAG, "help": "apply pending ones older than applied ones"}),
        DRY,
        SCRATCH,
        (("--check-drift",), {**FLAG, "help": "first warn of changes made outside rung"}),
        (("--strict",), {**FLAG, "help": "refuse to migrate when --check-drift finds any"}),
        JSON,
    ],
    "down": [
        STEPS,
        (("--to",), {"metavar": "NAME", "help": "down to NAME, which stays applied"}),
        (("--all",), {**FLAG, "help": "revert every migration"}),
        DRY,
        SCRATCH,
        JSON,
    ],
    "status": [JSON, (("--exit-code",), {**FLAG, "help": "exit 1 if any is pending or broken"})],
    "show": [(("name",), {"help": "the migration (a unique part of its name will do)"}), JSON],
    "fresh": [YES, JSON],
    "refresh": [YES, JSON],
    "reset": [YES, JSON],
    "baseline": [(("--to",), {"metavar": "NAME", "help": "up to and including NAME"}), JSON],
    "repair": [
        (("name",), {"nargs": "?", "help": "the migration to repair"}),
        (("--applied",), {**FLAG, "help": "mark NAME as applied"}),
        (("--not-applied",), {**FLAG, "help": "mark NAME as not applied"}),
        JSON,
    ],
    "check": [JSON],
    "verify": [
        SCRATCH,
        (("--from",), {"dest": "start_after", "metavar": "NAME", "help": "start after NAME"}),
        JSON,
    ],
    "drift": [
        (("--replay",), {**FLAG, "help": "compare with the history replayed on scratch"}),
        SCRATCH,
        (("--exclude",), {"action": "append", "metavar": "PATTERN", "help": "ignore tables"}),
        JSON,
    ],
}
# fmt: on
# Options that exclude each other, by their argparse dest: the flag users type.
EXCLUSIVE = {
    "down": {"n": "-n", "to": "--to", "all": "--all"},
    "repair": {"applied": "--applied", "not_applied": "--not-applied"},
}


def build_parser() -> argparse.ArgumentParser:
    common = _global_options()
    parser = Parser(
        prog="rung",
        parents=[common],
        description="Async schema migrations for SQLAlchemy.",
        epilog="Exit codes: 0 done, 1 failed or problems found, 2 usage or configuration.",
    )
    parser.add_argument("--version", action="version", version=f"rung {_version()}")
    commands = parser.add_subparsers(dest="command", metavar="COMMAND", parser_class=Parser)
    for name, (_, text) in COMMANDS.items():
        sub = commands.add_parser(name, parents=[common], help=text, description=text)
        for flags, keywords in OPTIONS[name]:
            sub.add_argument(*flags, **keywords)
    return parser


def _version() -> str:
    from rung import __version__

    return __version__


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    if args.command is None:
        parser.print_help(sys.stderr)
        return 2
    exclusive = EXCLUSIVE.get(args.command, {})
    given = [flag for k, flag in exclusive.items() if getattr(args, k) not in (None, False)]
    if len(given) > 1:
        sys.stderr.write(
            f"rung: error: rung {args.command}: give one of {', '.join(given)}, not several\n"
            f"rung: hint: see 'rung {args.command} --help'\n"
        )
        return 2
    verbose = getattr(args, "verbose", 0)
    out = Output(verbose=verbose, quiet="quiet" in args, as_json=getattr(args, "json", False))
    handler = ProgressHandler(out)
    logger = logging.getLogger("rung")
    logger.addHandler(handler)
    logger.setLevel(logging.DEBUG if verbose else logging.INFO)
    libraries = LibraryHandler(out)
    logging.getLogger().addHandler(libraries)
    ctx: Context | None = None
    try:
        flags = {k: getattr(args, k) for k in GLOBAL_OPTIONS if hasattr(args, k)}
        cfg = configuration.load(flags, os.environ, Path.cwd())
        out.url = cfg.url
        ctx = Context(args, cfg, out)
        for warning in cfg.warnings:
            out.warn(warning)
        for key, source in cfg.sources.items():
            out.detail(f"{key} from {source}")
        result = COMMANDS[args.command][0](ctx)
        if isinstance(result, types.CoroutineType):
            import asyncio

            result = asyncio.run(result)
        return int(result)
    except RungError as exc:
        out.end_line("failed")
        if verbose:
            traceback.print_exception(exc)
        out.error(exc.message, _hint(exc, ctx))
        return exc.exit_code
    except KeyboardInterrupt:
        out.end_line("interrupted")
        out.error("interrupted; see 'rung status' for what was applied")
        return 130
    except Exception as exc:
        out.end_line("failed")
        if verbose:
            traceback.print_exception(exc)
        lines = str(exc).strip().splitlines()
        text = f"unexpected {type(exc).__name__}: {lines[0] if lines else ''}"[:500]
        out.error(text, "" if verbose else "run again with -v for the traceback")
        return 1
    finally:
        logger.removeHandler(handler)
        logging.getLogger().removeHandler(libraries)
