"""Loading the registry ("pkg.module:Migrator"), validating it, and linting files against it.

A registry is any object with a ``migrations()`` method, or a plain sequence of
``Migration``. Validation runs before anything touches a database and reports every
problem at once, each naming the migration and the fix.
"""

from __future__ import annotations

import importlib
import inspect
import itertools
from collections.abc import Sequence
from datetime import date
from pathlib import Path
from typing import Protocol

from rung.errors import ConfigError, RegistryError
from rung.migration import NAME_FORMAT, NAME_PATTERN, Migration, prime_checksums


class Registry(Protocol):
    """What ``rung.upgrade`` and the others take: an object (or class) whose
    ``migrations()`` returns every migration in order of application."""

    def migrations(self) -> Sequence[Migration]: ...


Migrations = Registry | Sequence[Migration]  # a registry, or its migrations as they are


def load_migrator(spec: str) -> Migrations:
    """Import ``"package.module:Attribute"`` and return the attribute."""
    module_name, _, attr = spec.partition(":")
    if not module_name or not attr:
        raise ConfigError(
            f"migrator {spec!r} is not of the form 'package.module:Attribute'; "
            "set --migrator, RUNG_MIGRATOR or [tool.rung] migrator"
        )
    try:
        module = importlib.import_module(module_name)
    except ModuleNotFoundError as exc:
        if exc.name is None or not f"{module_name}.".startswith(f"{exc.name}."):
            raise _broken(module_name, exc) from exc
        raise ConfigError(
            f"migrator module {module_name!r} does not import ({type(exc).__name__}: {exc}); "
            "run from the project root or fix the import"
        ) from exc
    except Exception as exc:
        raise _broken(module_name, exc) from exc
    try:
        found: Migrations = getattr(module, attr)  # checked when its migrations are collected
        return found
    except AttributeError:
        raise ConfigError(
            f"module {module_name!r} has no attribute {attr!r}; "
            "point --migrator at the class holding migrations()"
        ) from None


def _broken(module_name: str, exc: Exception) -> RegistryError:
    """The registry was found, but its code (or a migration's) raised while importing."""
    return RegistryError(
        f"migrator module {module_name!r} was found but raised while importing "
        f"({type(exc).__name__}: {exc}); fix that code (run with -v for the traceback)",
        problems=[f"{type(exc).__name__}: {exc}"],
    )


class Validated(tuple[Migration, ...]):
    """Migrations ``migrations_of`` has validated: given to it again, taken as they are (a
    command validates once, then hands them to the runner; at 10,000 migrations a second
    validation costs a tenth of a second)."""


def migrations_of(registry: Migrations) -> tuple[Migration, ...]:
    """The registry's migrations in order, validated; ``RegistryError`` lists all problems."""
    if isinstance(registry, Validated):
        return registry
    migrations = collect(registry)
    problems = validate(migrations)
    if problems:
        more = f" (and {len(problems) - 1} more)" if len(problems) > 1 else ""
        raise RegistryError(problems[0] + more, problems=problems)
    prime_checksums(migrations)
    return Validated(migrations)


def collect(registry: object) -> tuple[Migration, ...]:
    """The registry's entries in order, not yet validated (``rung check`` reports on them)."""
    method = getattr(registry, "migrations", None)
    if callable(method):
        items = method()
    elif isinstance(registry, Sequence) and not isinstance(registry, str):
        items = registry
    else:
        raise RegistryError(
            f"registry {registry!r} has no migrations() method and is not a sequence; "
            "give a class with a static migrations() returning a tuple of Migration"
        )
    if not isinstance(items, Sequence) or isinstance(items, (str, bytes)):
        # a set or a dict has no order of application; a string is no list of migrations
        raise RegistryError(
            f"migrations() of {registry!r} returned {type(items).__name__}, not a sequence; "
            "return a tuple of Migration"
        )
    return tuple(items)


def validate(migrations: Sequence[object]) -> list[str]:
    """Every problem with the registry, one line each; empty when it is sound."""
    problems: list[str] = []
    seen: set[str] = set()
    for position, item in enumerate(migrations, start=1):
        if not isinstance(item, Migration):
            problems.append(
                f"registry entry {position} is {type(item).__name__}, not a Migration; "
                "wrap it: Migration.from_module(module)"
            )
            continue
        problems.extend(_name_problems(item.name, position))
        if item.name in seen:
            problems.append(
                f"migration {item.name} is registered twice; remove the duplicate from the registry"
            )
        seen.add(item.name)
        for attr in ("up", "down"):
            fn = getattr(item, attr)
            if fn is None and attr == "down":
                continue  # irreversible: allowed, and refused when a downgrade would cross it
            if fn is None:
                problems.append(f"migration {item.name} has no up; define async def up(conn)")
            elif not inspect.iscoroutinefunction(fn):
                what = "a plain function" if callable(fn) else f"not callable ({type(fn).__name__})"
                problems.append(
                    f"{attr} of migration {item.name} is {what}; "
                    f"define it as async def {attr}(conn)"
                )
    return problems


def _name_problems(name: object, position: int) -> list[str]:
    if not isinstance(name, str) or not name:
        return [f"registry entry {position} has an empty name; name it {NAME_FORMAT}"]
    match = NAME_PATTERN.fullmatch(name)
    if match is None:
        return [f"migration name {name!r} is not {NAME_FORMAT}; rename the module"]
    try:
        date(int(match[1][:4]), int(match[1][4:6]), int(match[1][6:]))
    except ValueError:
        return [f"migration name {name!r} has no real date in it; use today's date, YYYYMMDD"]
    return []


def unregistered(migrations: Sequence[Migration], folder: Path) -> list[str]:
    """Names of the migration files in ``folder`` that ``migrations`` does not list."""
    names = {m.name for m in migrations}
    stems = (p.name[:-3] for p in folder.glob("m*.py"))
    return sorted(s for s in stems if s not in names and NAME_PATTERN.fullmatch(s))


def lint_folder(migrations: Sequence[Migration], folder: Path) -> list[str]:
    """Files-vs-registry problems: unregistered files, registered names without a file, order."""
    problems: list[str] = []
    files = {p.stem for p in folder.glob("m*.py") if NAME_PATTERN.fullmatch(p.stem)}
    names = [m.name for m in migrations]
    for stem in unregistered(migrations, folder):
        problems.append(
            f"file {stem}.py is not registered; add it to migrations() in lib.py or delete it"
        )
    for name in names:
        if name not in files:
            problems.append(
                f"migration {name} is registered but {folder / name}.py does not exist; "
                "restore the file or remove the migration from migrations() in lib.py"
            )
    for earlier, later in itertools.pairwise(names):
        if later < earlier:
            problems.append(
                f"migration {later} is registered after {earlier} but its name sorts before it; "
                "keep the registry in the order of the names' dates"
            )
    by_number: dict[str, list[str]] = {}
    for name in sorted(set(names) | files):
        match = NAME_PATTERN.fullmatch(name)
        if match:
            by_number.setdefault(f"{match[1]}_{match[2]}", []).append(name)
    for number, same in sorted(by_number.items()):
        if len(same) > 1:
            problems.append(
                f"migrations {' and '.join(same)} share the number {number} (made on two "
                "branches?); rename the one that is applied nowhere yet to a free number, "
                "and register it in that order"
            )
    return problems
