"""The ``rung`` command line: the parser, and the one place where errors become
``rung: error: ...`` and an exit code (0 done, 1 failed or problems found, 2 usage or
configuration). Its only ``asyncio.run`` is in ``main``.

Only ``argparse`` is imported up front: the commands (``rung.commands``), the configuration
and the output are imported once the command line has parsed, so ``rung --help`` costs
little more than Python's own start.
"""

from __future__ import annotations

import argparse
import os
import sys
from collections.abc import Sequence

TYPE_CHECKING = False  # typing.TYPE_CHECKING without importing typing
if TYPE_CHECKING:
    from collections.abc import Coroutine
    from typing import Any, NoReturn

    from rung.commands import Context
    from rung.errors import RungError

GLOBAL_OPTIONS = (
    "url",
    "migrator",
    "table",
    "lock_timeout",
    "lock_lease",
    "per_migration",
    "pooler",
    "wait",
)


# -- the parser and main ----------------------------------------------------------------------


class Formatter(argparse.HelpFormatter):
    """argparse's, sized as ``shutil.get_terminal_size`` would, without importing shutil
    (which loads the compression modules: a third of ``rung --help``'s own time)."""

    def __init__(self, prog: str) -> None:
        try:
            columns = int(os.environ.get("COLUMNS", "")) or os.get_terminal_size().columns
        except (ValueError, OSError):
            columns = 80
        super().__init__(prog, width=max(columns, 40) - 2)


class Parser(argparse.ArgumentParser):
    """argparse, with usage errors in rung's own two-line form, and a "did you mean" for a
    mistyped command or option."""

    def __init__(self, **kwargs: Any) -> None:
        super().__init__(**{"formatter_class": Formatter, **kwargs})
        self.command = ""  # the command whose options were built (on the top parser)
        self.known_options: set[str] = set()  # its options, for suggestions

    def error(self, message: str) -> NoReturn:
        from rung.passwords import mask  # a URL given where it does not belong keeps its secret

        prog = f"rung {self.command}" if self.command else self.prog
        message = self._suggest(message)
        sys.stderr.write(f"rung: error: {mask(message, '')}\nrung: hint: see '{prog} --help'\n")
        raise SystemExit(2)

    def _suggest(self, message: str) -> str:
        """``message`` with the closest command or option to what was typed, if one is."""
        import difflib
        import re

        choice = re.match(r"argument COMMAND: invalid choice: '([^']*)'", message)
        if choice:
            typed = choice[1]
            close = (
                [ALIASES[typed]]
                if typed in ALIASES
                else difflib.get_close_matches(typed, COMMANDS, n=1, cutoff=0.6)
            )
            mean = f"; did you mean '{close[0]}'?" if close else ""
            return f"invalid choice: {typed!r}{mean} (the commands: {', '.join(COMMANDS)})"
        unknown = re.match(r"unrecognized arguments: (.*)", message)
        if unknown:
            words = unknown[1].split()
            options = sorted(o for o in self.known_options if o.startswith("--"))
            where = f" for rung {self.command}" if self.command else ""
            for word in words:
                if word.startswith("-"):
                    close = difflib.get_close_matches(word.split("=")[0], options, n=1)
                    if close:
                        return f"unknown option {word}{where}; did you mean {close[0]}?"
            listed = " ".join(words)
            return f"unrecognized arguments{where}: {listed}"
        return message


def _positive(text: str) -> int:
    if not text.isdigit() or int(text) < 1:
        raise argparse.ArgumentTypeError(f"must be a whole number, 1 or more, not {text!r}")
    return int(text)


# Options allowed before and after the command: (flags, keyword arguments, help).
# fmt: off
GLOBALS: list[tuple[tuple[str, ...], dict[str, Any], str]] = [
    (("--url",), {}, "database URL (else DATABASE_URL, else [tool.rung] url)"),
    (("--migrator",), {"metavar": "MODULE:ATTR"},
     "the registry (else RUNG_MIGRATOR, else [tool.rung] migrator)"),
    (("--table",), {}, "tracking table (default rung_migrations)"),
    (("--lock-timeout",), {"type": float, "metavar": "SECONDS"},
     "how long to wait for another run's lock (default 60)"),
    (("--lock-lease",), {"type": float, "metavar": "SECONDS"},
     "how long a dead run's lock keeps others waiting (default 30)"),
    (("--per-migration",), {"action": "store_true"},
     "commit each migration on its own, not all in one transaction"),
    (("--pooler",), {"choices": ("none", "transaction")},
     "'transaction' behind PgBouncer-style transaction pooling"),
    (("--wait",), {"type": float, "metavar": "SECONDS"},
     "keep retrying until the database accepts connections"),
    (("-v", "--verbose"), {"action": "count"}, "more detail, and tracebacks"),
    (("-q", "--quiet"), {"action": "store_true"}, "only results and errors"),
]
# fmt: on


def _global_options(uses: frozenset[str] | None = None) -> Parser:
    """The global options; SUPPRESS: only given ones are set. ``uses``: those a command's
    --help lists (the others are accepted there too, not shown); None: all of them."""
    parent = Parser(add_help=False, argument_default=argparse.SUPPRESS)
    g = parent.add_argument_group("global options (before or after the command)")
    for flags, keywords, text in GLOBALS:
        dest = flags[-1].lstrip("-").replace("-", "_")
        shown = uses is None or dest in uses or dest in ("verbose", "quiet")
        g.add_argument(*flags, **keywords, help=text if shown else argparse.SUPPRESS)
    return parent


# Each command: what it does. Its function is ``rung.commands.cmd_<name>``.
COMMANDS: dict[str, str] = {
    "init": "create the migration layout in a project",
    "new": "create a migration and register it in lib.py",
    "up": "apply pending migrations",
    "down": "revert applied migrations (one by default)",
    "status": "every migration's state",
    "show": "one migration in full, with the SQL it ran",
    "fresh": "drop every table, then apply every migration",
    "refresh": "revert every migration, then apply them all",
    "reset": "revert every migration",
    "baseline": "record migrations as applied without running them",
    "repair": "accept changed code; resolve failed migrations",
    "unlock": "free the lock of a run that is provably gone",
    "check": "check the registry against its folder (no database)",
    "verify": "prove on a scratch database that every down reverses its up",
    "drift": "name schema changes made outside the migrations",
}

# Other tools' words for rung's commands, for "did you mean".
ALIASES = {
    "upgrade": "up",
    "migrate": "up",
    "downgrade": "down",
    "rollback": "down",
    "history": "status",
    "current": "status",
    "revision": "new",
    "stamp": "baseline",
}

# Each command's own options: (flags, keyword arguments of add_argument).
# fmt: off
FLAG: dict[str, Any] = {"action": "store_true"}
JSON = (("--json",), {**FLAG, "help": "print the result as JSON"})
YES = (("-y", "--yes"), {**FLAG, "help": "do not ask for confirmation"})
NEXT = (("-n", "--steps"), {"dest": "n", "type": _positive, "metavar": "N",
                            "help": "only the next N pending migrations"})
NEWEST = (("-n", "--steps"), {"dest": "n", "type": _positive, "metavar": "N",
                              "help": "the newest N applied migrations"})
DRY = (("--dry-run",), {**FLAG, "help": "print the SQL it would run; change nothing"})
SCRATCH = (("--scratch-url",), {"metavar": "URL", "help": "scratch database (default: temporary)"})
FLEET = (("--fleet",), {"nargs": "?", "const": "", "metavar": "SPEC",
                        "help": "every tenant: a file of URLs, a glob of SQLite files, or "
                                "schemas:PATTERN (no SPEC: [tool.rung.fleet])"})
JOBS = (("--jobs",), {"type": _positive, "metavar": "N",
                      "help": "with --fleet: tenants at a time (default 8)"})
STOP = (("--fail-fast",), {**FLAG, "help": "with --fleet: start no tenant after a failure"})
OPTIONS: dict[str, list[tuple[tuple[str, ...], dict[str, Any]]]] = {
    "init": [(("dir",), {"nargs": "?", "help": "the project folder (default: here)"})],
    "new": [(("name",), {"help": "what it does, e.g. add_priority_to_todos"})],
    "up": [
        NEXT,
        (("--to",), {"metavar": "NAME", "help": "up to and including NAME"}),
        (("--out-of-order",), {**FLAG, "help": "apply pending ones older than applied ones"}),
        DRY,
        SCRATCH,
        (("--check-drift",), {**FLAG, "help": "first warn of changes made outside rung"}),
        (("--strict",), {**FLAG, "help": "refuse to migrate when --check-drift finds any"}),
        JSON,
        FLEET,
        JOBS,
        STOP,
    ],
    "down": [
        NEWEST,
        (("--to",), {"metavar": "NAME", "help": "down to NAME, which stays applied"}),
        (("--all",), {**FLAG, "help": "revert every migration"}),
        DRY,
        SCRATCH,
        JSON,
        FLEET,
        JOBS,
        STOP,
    ],
    "status": [
        JSON,
        (("--exit-code",), {**FLAG, "help": "exit 1 if any is pending or broken"}),
        FLEET,
        JOBS,
    ],
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
    "unlock": [JSON],
    "verify": [
        SCRATCH,
        (("--from",), {"dest": "start_after", "metavar": "NAME", "help": "start after NAME"}),
        (("--fail-fast",), {**FLAG, "help": "stop at the first failure"}),
        JSON,
        FLEET,
    ],
    "drift": [
        (("--replay",), {**FLAG, "help": "compare with the history replayed on scratch"}),
        SCRATCH,
        (("--exclude",), {"action": "append", "metavar": "PATTERN",
                          "help": "ignore tables whose names match PATTERN, fnmatch-style "
                                  "(*, ?, [abc]; 'tmp_*'); may be repeated"}),
        JSON,
        FLEET,
        JOBS,
    ],
}
# fmt: on
# The global options each command uses, listed in its --help (the others are accepted
# anywhere, as global options are, and shown by 'rung --help').
_DATABASE = frozenset({"url", "migrator", "table", "pooler", "wait"})
_LOCKING = _DATABASE | {"lock_timeout", "lock_lease"}
USES: dict[str, frozenset[str]] = {
    "init": frozenset(),
    "new": frozenset({"migrator"}),
    "up": _LOCKING | {"per_migration"},
    "down": _LOCKING | {"per_migration"},
    "status": _DATABASE,
    "show": _DATABASE,
    "fresh": _LOCKING | {"per_migration"},
    "refresh": _LOCKING | {"per_migration"},
    "reset": _LOCKING | {"per_migration"},
    "baseline": _LOCKING,
    "repair": _LOCKING,
    "unlock": _DATABASE - {"migrator"},
    "check": frozenset({"migrator"}),
    "verify": _DATABASE,
    "drift": _DATABASE,
}
# Options that exclude each other, by their argparse dest: the flag users type.
EXCLUSIVE = {
    "up": {"n": "-n", "to": "--to"},
    "down": {"n": "-n", "to": "--to", "all": "--all"},
    "repair": {"applied": "--applied", "not_applied": "--not-applied"},
}


def build_parser(argv: Sequence[str] = ()) -> argparse.ArgumentParser:
    """The parser; only the command ``argv`` names gets its options (``rung --help`` lists
    every command by name, and building all fourteen in full is most of its own time)."""
    common = _global_options()
    parser = Parser(
        prog="rung",
        parents=[common],
        description="Async schema migrations for SQLAlchemy.",
        epilog="Exit codes: 0 done, 1 failed or problems found, 2 usage or configuration.",
    )
    parser.add_argument("--version", action="version", version=f"rung {_version()}")
    commands = parser.add_subparsers(dest="command", metavar="COMMAND", parser_class=Parser)
    chosen = _command_in(argv)
    parser.known_options = set(parser._option_string_actions)
    for name, text in COMMANDS.items():
        if name != chosen:
            commands.add_parser(name, help=text, add_help=False)
            continue
        sub = commands.add_parser(
            name, parents=[_global_options(USES[name])], help=text, description=text
        )
        for flags, keywords in OPTIONS[name]:
            sub.add_argument(*flags, **keywords)
        parser.command = name
        parser.known_options = set(sub._option_string_actions)
    return parser


VALUED = {
    "--url",
    "--migrator",
    "--table",
    "--lock-timeout",
    "--lock-lease",
    "--pooler",
    "--wait",
}  # take the next word


def _command_in(argv: Sequence[str]) -> str | None:
    """The command word of ``argv``: the first known command not an option's value."""
    previous = ""
    for word in argv:
        if word in COMMANDS and previous not in VALUED:
            return word
        previous = word
    return None


def _version() -> str:
    from rung import __version__

    return __version__


def main(argv: Sequence[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    parser = build_parser(argv)
    args = parser.parse_args(argv)
    if args.command is None:
        parser.print_help(sys.stderr)
        return 2
    if getattr(args, "fleet", None) is None and getattr(args, "jobs", None) is not None:
        sys.stderr.write(
            "rung: error: --jobs sets how many tenants run at a time, so it needs --fleet\n"
            f"rung: hint: see 'rung {args.command} --help'\n"
        )
        return 2
    exclusive = EXCLUSIVE.get(args.command, {})
    given = [flag for k, flag in exclusive.items() if getattr(args, k) not in (None, False)]
    if len(given) > 1:
        sys.stderr.write(
            f"rung: error: rung {args.command}: give one of {', '.join(given)}, not several\n"
            f"rung: hint: see 'rung {args.command} --help'\n"
        )
        return 2
    return _run(args)


def _run(args: argparse.Namespace) -> int:
    """Run the parsed command: configuration, logging to the output, the command, and every
    error turned into its message and exit code."""
    import logging
    import types
    from pathlib import Path

    from rung import commands
    from rung import config as configuration
    from rung.errors import MigrationFailed, RungError, clip
    from rung.output import LibraryHandler, Output, ProgressHandler

    verbose = getattr(args, "verbose", 0)
    out = Output(verbose=verbose, quiet="quiet" in args, as_json=getattr(args, "json", False))
    handler = ProgressHandler(out)
    logger = logging.getLogger("rung")
    logger.addHandler(handler)
    logger.setLevel(logging.DEBUG if verbose else logging.INFO)
    libraries = LibraryHandler(out)
    logging.getLogger().addHandler(libraries)
    ctx: commands.Context | None = None
    try:
        flags = {k: getattr(args, k) for k in GLOBAL_OPTIONS if hasattr(args, k)}
        cfg = configuration.load(flags, os.environ, Path.cwd())
        out.url = cfg.url
        ctx = commands.Context(args, cfg, out)
        for warning in cfg.warnings:
            out.warn(warning)
        for key, source in cfg.sources.items():
            out.detail(f"{key} from {source}")
        result = getattr(commands, f"cmd_{args.command}")(ctx)
        if isinstance(result, types.CoroutineType):
            import asyncio

            result = asyncio.run(_terminable(result))
        return int(result)
    except RungError as exc:
        out.end_line("failed")
        if isinstance(exc, MigrationFailed):
            out.rolled_back(exc)
        if verbose:
            out.traceback(exc)
        out.error(exc.message, _hint(exc, ctx))
        return exc.exit_code
    except KeyboardInterrupt:
        out.end_line("interrupted")
        writes = args.command in ("up", "down", "fresh", "refresh", "reset") and not getattr(
            args, "dry_run", False
        )
        out.error("interrupted", "'rung status' shows what was applied" if writes else "")
        return 130
    except Exception as exc:
        out.end_line("failed")
        if verbose:
            out.traceback(exc)
        lines = str(exc).strip().splitlines()
        text = clip(f"unexpected {type(exc).__name__}: {lines[0] if lines else ''}", 500)
        out.error(text, "" if verbose else "run again with -v for the traceback")
        return 1
    finally:
        logger.removeHandler(handler)
        logging.getLogger().removeHandler(libraries)


async def _terminable(command: Coroutine[Any, Any, int]) -> int:
    """Run ``command``, cancelled by SIGTERM (``kill``, ``timeout``, a container stopping) as
    Ctrl-C cancels it: its clean-up runs (scratch databases dropped, locks released)."""
    import asyncio
    import signal

    task = asyncio.ensure_future(command)
    loop = asyncio.get_running_loop()
    try:
        loop.add_signal_handler(signal.SIGTERM, task.cancel)
    except (NotImplementedError, RuntimeError):  # not the main thread, or not Unix
        return await task
    try:
        return await task
    except asyncio.CancelledError:
        raise KeyboardInterrupt from None
    finally:
        loop.remove_signal_handler(signal.SIGTERM)


def _hint(exc: RungError, ctx: Context | None) -> str:
    """A second line where it helps: where a setting came from, or where a migration failed."""
    import traceback
    from pathlib import Path

    from rung.errors import ConfigError, DatabaseUnreachable, MigrationFailed, RegistryError

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
