"""rung: async schema migrations for SQLAlchemy.

Each migration is a module with ``async def up(conn)`` and ``async def down(conn)``; an
explicit registry fixes their order; ``upgrade`` applies the pending ones in transactions.
"""

from rung import errors
from rung.migration import Migration
from rung.plan import MigrationState, State
from rung.runner import Executed, baseline, downgrade, repair, status, upgrade

__all__ = [
    "Executed",
    "Migration",
    "MigrationState",
    "State",
    "baseline",
    "downgrade",
    "errors",
    "repair",
    "status",
    "upgrade",
]
__version__ = "0.1.0"
