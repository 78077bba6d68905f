"""rung: async schema migrations for SQLAlchemy.

Each migration is a module with ``async def up(conn)`` and ``async def down(conn)``; an
explicit registry fixes their order; ``upgrade`` applies the pending ones in transactions.

The names below are imported on first use, so that ``rung --help`` and ``rung new`` (which
import this package first) do not pay for SQLAlchemy and a database driver. No module is
named after a public function (``verify`` lives in ``verifying``): importing a submodule
sets the package attribute of its name, which would hide the function.
"""

from __future__ import annotations

import importlib

TYPE_CHECKING = False  # typing.TYPE_CHECKING, without importing typing at start-up
if TYPE_CHECKING:
    from rung import errors
    from rung.api import (
        baseline,
        downgrade,
        drift,
        dry_run,
        fresh,
        lock_holder,
        repair,
        status,
        unlock,
        upgrade,
        verify,
    )
    from rung.connection import create_engine
    from rung.fleet import upgrade_fleet
    from rung.migration import Migration
    from rung.plan import MigrationState, State
    from rung.runner import Executed

__all__ = [
    "Executed",
    "Migration",
    "MigrationState",
    "State",
    "baseline",
    "create_engine",
    "downgrade",
    "drift",
    "dry_run",
    "errors",
    "fresh",
    "lock_holder",
    "repair",
    "status",
    "unlock",
    "upgrade",
    "upgrade_fleet",
    "verify",
]
__version__ = "0.2.0"

# Where each public name lives; a module's own name means the module itself.
_HOMES = {
    "Executed": "rung.runner",
    "Migration": "rung.migration",
    "MigrationState": "rung.plan",
    "State": "rung.plan",
    "create_engine": "rung.connection",
    "errors": "rung.errors",
    "upgrade_fleet": "rung.fleet",
    **{
        name: "rung.api"
        for name in (
            "baseline",
            "downgrade",
            "drift",
            "dry_run",
            "fresh",
            "lock_holder",
            "repair",
            "status",
            "unlock",
            "upgrade",
            "verify",
        )
    },
}


def __getattr__(name: str) -> object:
    home = _HOMES.get(name)
    if home is None:
        raise AttributeError(f"module 'rung' has no attribute {name!r}")
    module = importlib.import_module(home)
    value = module if home == f"rung.{name}" else getattr(module, name)
    globals()[name] = value
    return value


def __dir__() -> list[str]:
    return sorted({*globals(), *__all__})
