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
    from rung.drifting import drift
    from rung.migration import Migration
    from rung.plan import MigrationState, State
    from rung.runner import Executed, baseline, downgrade, repair, status, upgrade
    from rung.verifying import verify

__all__ = [
    "Executed",
    "Migration",
    "MigrationState",
    "State",
    "baseline",
    "downgrade",
    "drift",
    "errors",
    "repair",
    "status",
    "upgrade",
    "verify",
]
__version__ = "0.1.0"

# Where each public name lives; a module's own name means the module itself.
_HOMES = {
    "Executed": "rung.runner",
    "Migration": "rung.migration",
    "MigrationState": "rung.plan",
    "State": "rung.plan",
    "baseline": "rung.runner",
    "downgrade": "rung.runner",
    "drift": "rung.drifting",
    "errors": "rung.errors",
    "repair": "rung.runner",
    "status": "rung.runner",
    "upgrade": "rung.runner",
    "verify": "rung.verifying",
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
