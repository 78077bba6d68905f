"""The ``rung`` commands: one small function each over the library, given a ``Context``
(the parsed arguments, the configuration, the output). ``rung.cli`` parses the command
line, imports this module only for a command that runs (``--help`` never does) and turns
errors into messages and exit codes. SQLAlchemy and the runner are imported inside the
commands that use a database, so ``rung new`` works without a database driver.
"""

from __future__ import annotations

import argparse
import functools
import sys
from collections.abc import AsyncIterator, Sequence
from contextlib import asynccontextmanager
from pathlib import Path
from typing import TYPE_CHECKING, Any

from rung import config as configuration
from rung import output
from rung.errors import ConfigError, RungError, SchemaError, UnknownTarget, UsageError
from rung.output import Output

if TYPE_CHECKING:
    import sqlalchemy as sa
    from sqlalchemy.ext.asyncio import AsyncEngine

    from rung.migration import Migration
    from rung.plan import MigrationState
    from rung.runner import Executed


class Context:
    """What every command gets: its arguments, the configuration, the output."""

    def __init__(self, args: argparse.Namespace, cfg: configuration.Config, out: Output) -> None:
        self.args, self.cfg, self.out = args, cfg, out

    @functools.cached_property
    def registry(self) -> Any:
        """The migrator, imported with the project root on sys.path."""
        from rung.registry import load_migrator

        configuration.add_to_path(self.cfg.root)
        try:
            return load_migrator(self.cfg.migrator)
        except ConfigError as exc:
            if isinstance(exc.__cause__, ModuleNotFoundError) and not self._a_project():
                raise ConfigError(
                    f"no rung project in {self.cfg.root}: no pyproject.toml with a [tool.rung] "
                    f"section here or above, and the registry {self.cfg.migrator} does not "
                    "import; create the layout with 'rung init', or run from your project's "
                    "folder"
                ) from exc
            raise

    def _a_project(self) -> bool:
        """Whether the configuration names a registry: a [tool.rung] section, or the
        migrator given by flag or environment."""
        if "migrator" in self.cfg.sources:
            return True
        return bool(configuration.read_section(self.cfg.root / "pyproject.toml"))

    @functools.cached_property
    def migrations(self) -> tuple[Migration, ...]:
        """The registry's migrations, validated once for the whole command."""
        from rung.registry import migrations_of

        return migrations_of(self.registry)

    @functools.cached_property
    def folder(self) -> Path:
        """The registry's folder, where ``rung new`` puts migrations."""
        self.registry  # noqa: B018  (imports it)
        module = sys.modules[self.cfg.migrator.partition(":")[0]]
        return Path(module.__file__ or ".").parent

    def warn_unregistered(self) -> None:
        """One line naming migration files in the registry's folder that it does not list:
        a forgotten registration is otherwise invisible to ``up`` and ``status``."""
        from rung.registry import unregistered

        found = unregistered(self.migrations, self.folder)
        if found:
            where = _relative(self.folder, self.cfg.root)
            shown = ", ".join(f"{n}.py" for n in found[:3]) + (", ..." if len(found) > 3 else "")
            self.out.warn(
                f"{output.count(len(found), 'migration file')} in {where} "
                f"{'is' if len(found) == 1 else 'are'} not registered, so rung ignores "
                f"{'it' if len(found) == 1 else 'them'}: {shown}; add "
                f"{'it' if len(found) == 1 else 'them'} to migrations() in the registry, or "
                "delete the file ('rung check' lists every problem)"
            )

    @functools.cached_property
    def url(self) -> sa.URL:
        from rung.connection import check_driver, parse_url

        url = parse_url(self.cfg.url, root=self.cfg.url_root)
        check_driver(url)
        return url

    @property
    def shown_url(self) -> str:
        """The database as rung reaches it (driver named, a file's path absolute), its
        password masked."""
        return self.url.render_as_string(hide_password=True)

    @asynccontextmanager
    async def database(self, *, must_exist: bool = False) -> AsyncIterator[AsyncEngine]:
        """The configured database, once it accepts connections (--wait). Everything that
        can be refused without it is refused first (configuration, registry, ``--to``), so
        a refusal never creates a SQLite file. ``must_exist``: a command that reads or
        reverts has nothing to do on a SQLite file that is not there, and says so."""
        from rung.connection import create_engine, reach
        from rung.dialects import dialect_named
        from rung.plan import check_target

        url = self.url
        check_target(self.migrations, self.target(getattr(self.args, "to", None)))
        dialect_named(url.get_backend_name()).check_location(url, must_exist=must_exist)
        engine = create_engine(url, pooler=self.cfg.pooler)
        try:
            await reach(engine, self.cfg.wait, self.out.note)
            yield engine
        finally:
            await engine.dispose()

    def target(self, name: str | None, option: str = "--to") -> str | None:
        """The registered migration ``name`` means (a unique part of a name will do)."""
        if name is None:
            return None
        return _find_name([m.name for m in self.migrations], name, option)

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

        if len(done) < 2:
            return ""
        if not dialect_named(engine.dialect.name).transactional_ddl:
            return f", each committed on its own ({engine.dialect.name} commits DDL at once)"
        if self.cfg.per_migration:
            return ", each in its own transaction"
        transactional = {m.name: m.transactional for m in self.migrations}
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

    made = scaffold.new(ctx.cfg.root, ctx.cfg.migrator, ctx.args.name, numbering=ctx.cfg.numbering)
    ctx.out.result(str(made.path.relative_to(ctx.cfg.root)))
    if made.registered:
        ctx.out.note(f"registered at the end of {made.lib.relative_to(ctx.cfg.root)}")
        return 0
    ctx.out.warn(f"{made.lib} was not edited: {made.reason}; add these lines yourself:")
    ctx.out.result(f"    {made.lines_to_add[0]}    # with the imports")
    ctx.out.result(f"    {made.lines_to_add[1]}    # at the end of the registry")
    return 0


async def cmd_up(ctx: Context) -> int:
    if ctx.args.fleet is not None:
        from rung import fleet_commands

        return await fleet_commands.up(ctx)
    from rung.api import upgrade

    a, c = ctx.args, ctx.cfg
    ctx.warn_unregistered()
    if a.check_drift or a.strict:  # before a dry run too: it shows what up would do
        async with ctx.database() as engine:
            await _drift_gate(ctx, engine, strict=a.strict)
    if a.dry_run:
        return await _dry_run(ctx, "up")
    async with ctx.database() as engine:
        done = await upgrade(
            engine,
            ctx.migrations,
            steps=a.n,
            to=ctx.target(a.to),
            out_of_order=a.out_of_order,
            table=c.table,
            lock_timeout=c.lock_timeout,
            lock_lease=c.lock_lease,
            per_migration=c.per_migration,
        )
        return ctx.report(done, engine, "nothing to apply: the database is up to date")


async def cmd_down(ctx: Context) -> int:
    if ctx.args.fleet is not None:
        from rung import fleet_commands

        return await fleet_commands.down(ctx)
    from rung.api import downgrade

    a, c = ctx.args, ctx.cfg
    if a.dry_run:
        return await _dry_run(ctx, "down")
    async with ctx.database(must_exist=True) as engine:
        done = await downgrade(
            engine,
            ctx.migrations,
            steps=a.n,
            to=ctx.target(a.to),
            all=a.all,
            table=c.table,
            lock_timeout=c.lock_timeout,
            lock_lease=c.lock_lease,
            per_migration=c.per_migration,
        )
        return ctx.report(done, engine, "nothing to revert")


async def cmd_status(ctx: Context) -> int:
    if ctx.args.fleet is not None:
        from rung import fleet_commands

        return await fleet_commands.status(ctx)
    from rung.api import lock_holder, status
    from rung.plan import outstanding, states

    url = ctx.url  # the configuration first, then the registry, then the database
    migrations = ctx.migrations
    ctx.warn_unregistered()
    holder = None
    if not _missing_file(url):
        async with ctx.database() as engine:
            found = await status(engine, migrations, table=ctx.cfg.table)
            holder = await lock_holder(engine, table=ctx.cfg.table)
    else:  # status never writes, not even an empty SQLite file
        ctx.out.note(
            f"{url.database} does not exist yet: every migration is pending (rung up makes it)"
        )
        found = states(migrations, [])
    output.status(ctx.out, found, f"database {ctx.shown_url}, history in {ctx.cfg.table}", holder)
    return 1 if ctx.args.exit_code and outstanding(found) else 0


async def cmd_show(ctx: Context) -> int:
    from rung.api import status

    async with ctx.database(must_exist=True) as engine:
        states = await status(engine, ctx.migrations, table=ctx.cfg.table)
    output.show(ctx.out, _find(states, ctx.args.name))
    return 0


async def cmd_unlock(ctx: Context) -> int:
    from rung.api import unlock

    async with ctx.database(must_exist=True) as engine:
        cleared = await unlock(engine, table=ctx.cfg.table)
    if ctx.out.as_json:
        ctx.out.data({"cleared": output.holder_json(cleared)})
    elif cleared is None:
        ctx.out.note("the lock is free: nothing to clear")
    else:
        ctx.out.result(f"cleared the lock, which was {cleared.describe()}")
    return 0


async def cmd_fresh(ctx: Context) -> int:
    from rung.api import fresh

    c = ctx.cfg
    ctx.confirm(f"drop every table in {ctx.shown_url}, then apply every migration")
    async with ctx.database() as engine:
        dropped, done = await fresh(
            engine,
            ctx.migrations,
            table=c.table,
            lock_timeout=c.lock_timeout,
            lock_lease=c.lock_lease,
            per_migration=c.per_migration,
        )
        ctx.out.note(f"dropped {', '.join(dropped) or 'nothing: the database was empty'}")
        return ctx.report(done, engine, "nothing to apply: no migrations are registered")


async def cmd_refresh(ctx: Context) -> int:
    from rung.api import downgrade, upgrade

    c = ctx.cfg
    ctx.confirm(f"revert every migration in {ctx.shown_url}, then apply them all again")
    async with ctx.database(must_exist=True) as engine:
        reverted = await downgrade(
            engine,
            ctx.migrations,
            all=True,
            table=c.table,
            lock_timeout=c.lock_timeout,
            lock_lease=c.lock_lease,
            per_migration=c.per_migration,
        )
        if not ctx.out.as_json:
            ctx.report(reverted, engine, "nothing to revert")
        done = await upgrade(
            engine,
            ctx.migrations,
            table=c.table,
            lock_timeout=c.lock_timeout,
            lock_lease=c.lock_lease,
            per_migration=c.per_migration,
        )
        both = [*reverted, *done] if ctx.out.as_json else done  # JSON: one list, with directions
        return ctx.report(both, engine, "nothing to apply")


async def cmd_reset(ctx: Context) -> int:
    from rung.api import downgrade

    c = ctx.cfg
    ctx.confirm(f"revert every migration in {ctx.shown_url}")
    async with ctx.database(must_exist=True) as engine:
        done = await downgrade(
            engine,
            ctx.migrations,
            all=True,
            table=c.table,
            lock_timeout=c.lock_timeout,
            lock_lease=c.lock_lease,
            per_migration=c.per_migration,
        )
        return ctx.report(done, engine, "nothing to revert")


async def cmd_baseline(ctx: Context) -> int:
    from rung.api import baseline

    c = ctx.cfg
    async with ctx.database() as engine:
        names = await baseline(
            engine,
            ctx.migrations,
            to=ctx.target(ctx.args.to),
            table=c.table,
            lock_timeout=c.lock_timeout,
            lock_lease=c.lock_lease,
        )
    if ctx.out.as_json:
        ctx.out.data({"recorded": names})
    for name in [] if ctx.out.as_json else names:
        ctx.out.result(f"recorded as applied, without running it: {name}")
    ctx.out.note(
        f"{output.count(len(names), 'migration')} recorded" if names else "nothing to record"
    )
    return 0


async def cmd_repair(ctx: Context) -> int:
    from rung.api import repair
    from rung.migration import NAME_PATTERN

    a, c = ctx.args, ctx.cfg
    applied = True if a.applied else False if a.not_applied else None
    # A unique part of a registered name will do; a full name (an unknown entry's too) is
    # taken as it is.
    name = a.name
    if name is not None and not NAME_PATTERN.fullmatch(name):
        name = _find_name([m.name for m in ctx.migrations], name, "")
    async with ctx.database(must_exist=True) as engine:
        done = await repair(
            engine,
            ctx.migrations,
            name,
            applied=applied,
            table=c.table,
            lock_timeout=c.lock_timeout,
            lock_lease=c.lock_lease,
        )
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
    from rung.registry import collect, lint_folder, validate

    entries = collect(ctx.registry)
    folder = ctx.folder
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
    if ctx.args.fleet is not None:
        from rung import fleet_commands

        return await fleet_commands.verify(ctx)
    from rung.api import verify

    ctx.out.events = bool(ctx.out.verbose)
    async with ctx.database() as engine:
        report = await verify(
            engine,
            ctx.migrations,
            scratch_url=_scratch(ctx),
            start_after=ctx.target(ctx.args.start_after, "--from"),
            fail_fast=ctx.args.fail_fast,
            table=ctx.cfg.table,
        )
    if ctx.out.as_json:
        ctx.out.data(output.verify_json(report))
        return 0 if report.ok else 1
    output.verify(ctx.out, report)
    return 0 if report.ok else 1


async def cmd_drift(ctx: Context) -> int:
    if ctx.args.fleet is not None:
        from rung import fleet_commands

        return await fleet_commands.drift(ctx)
    from rung.api import drift

    ctx.out.events = bool(ctx.out.verbose)
    async with ctx.database(must_exist=True) as engine:
        report = await drift(
            engine,
            ctx.migrations,
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
    from rung.api import dry_run

    a = ctx.args
    steps = 1 if direction == "down" and not (a.n or a.to or a.all) else a.n
    ctx.out.events = bool(ctx.out.verbose)
    async with ctx.database(must_exist=True) as engine:
        done = await dry_run(
            engine,
            ctx.migrations,
            direction,
            steps=steps,
            to=ctx.target(a.to),
            out_of_order=getattr(a, "out_of_order", False),
            table=ctx.cfg.table,
            scratch_url=_scratch(ctx),
        )
    output.dry_run(ctx.out, done, "apply" if direction == "up" else "revert")
    return 0


async def _drift_gate(ctx: Context, engine: AsyncEngine, *, strict: bool) -> None:
    """Before an upgrade: warn about drift since rung's last run, or refuse with --strict."""
    from rung.connection import connect
    from rung.dialects import dialect_named
    from rung.drifting import check_drift
    from rung.errors import NoSnapshot
    from rung.history import History

    history = History(ctx.cfg.table, dialect_named(engine.dialect.name))
    try:
        async with connect(engine) as conn:
            found = [str(d) for d in await check_drift(conn, history, _excluded(ctx))]
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
    return getattr(ctx.args, "scratch_url", None) or ctx.cfg.scratch_url


def _excluded(ctx: Context) -> tuple[str, ...]:
    return (*ctx.cfg.exclude, *(getattr(ctx.args, "exclude", None) or ()))


def _missing_file(url: sa.URL) -> bool:
    """A file database that is not there yet (connecting would create it)."""
    from rung.dialects import backend_named

    backend = backend_named(url.get_backend_name())
    path = Path(url.database or "")
    return (
        bool(backend and backend.file_based and url.database)
        and not path.exists()
        and (path.parent.is_dir())
    )


def _relative(path: Path, root: Path) -> str:
    try:
        return str(path.relative_to(root))
    except ValueError:
        return str(path)


def _find(states: Sequence[MigrationState], name: str) -> MigrationState:
    """The state of migration ``name``; a unique part of a name will do."""
    full = _find_name([s.name for s in states], name, "")
    return next(s for s in states if s.name == full)


def _find_name(names: Sequence[str], name: str, option: str) -> str:
    """The one name in ``names`` that is ``name`` or has it as a part."""
    found = [n for n in names if n == name] or [n for n in names if name in n]
    if len(found) == 1:
        return found[0]
    given = f"{option} {name}" if option else repr(name)
    if not found:
        raise UnknownTarget(
            f"{given} names no registered migration; run 'rung status' for the names",
            names=[name],
        )
    shown = ", ".join(found[:3]) + (", ..." if len(found) > 3 else "")
    raise UsageError(f"{given} is part of {len(found)} names ({shown}); give more of it")
