"""Every error rung raises, each carrying its data and a message that says what to do next.

    RungError                       exit 1 unless stated
    ├── UsageError                  exit 2: arguments that cannot work (-n 0, --to and --all)
    ├── ConfigError                 exit 2: bad URL, missing driver, migrator that does not import
    │   ├── DatabaseUnreachable     exit 2: no connection (now, or within --wait)
    │   ├── NotWritable             exit 2: a hot standby, a read-only server, Galera in RSU
    │   └── ScratchUnavailable      exit 2: no scratch database could be created for verify/drift
    ├── RegistryError               the registry itself is wrong (bad or duplicate names, ...)
    ├── HistoryError                the tracking table is not one rung can read or write
    ├── LockTimeout                 another run held the lock for longer than the timeout
    ├── LockHeld                    'rung unlock' refused: the lock's holder is alive
    ├── LockLost                    the run's lease ran out and another run took the lock
    ├── PlanRefused                 the history and the registry disagree; nothing ran
    │   ├── UnknownTarget           exit 2: --to names no registered migration
    │   ├── ChecksumMismatch        an applied migration's code changed
    │   ├── NeedsRepair             a migration failed or was interrupted part-way earlier
    │   ├── UnknownApplied          applied migrations that the registry does not know
    │   ├── OutOfOrder              pending migrations older than applied ones
    │   └── Irreversible            a downgrade would cross a migration without down
    ├── MigrationFailed             a migration's own code raised; says what was kept
    ├── ConnectionLost              the connection died while rung kept its books
    ├── SchemaError                 verify found a down that does not undo its up, or drift
    ├── NoSnapshot                  exit 2: drift has no stored snapshot to compare with
    └── ScaffoldError               init or new would overwrite a file, or lib.py is missing

The CLI is the one place where these become ``rung: error: ...`` and an exit code.
"""

from __future__ import annotations

from collections.abc import Sequence


def clip(text: str, width: int) -> str:
    """``text`` on one line and cut to ``width`` characters, the cut marked with " ...", so
    that a cut statement or message is never taken for the whole of it."""
    one_line = " ".join(text.split())
    if len(one_line) <= width:
        return one_line
    return one_line[: max(width - 4, 1)].rstrip() + " ..."


class RungError(Exception):
    """Base of every rung error: ``str(err)`` is one line that names the problem and the fix."""

    exit_code = 1

    def __init__(self, message: str) -> None:
        super().__init__(message)
        self.message = message


class UsageError(RungError):
    exit_code = 2


class ConfigError(RungError):
    exit_code = 2


class DatabaseUnreachable(ConfigError):
    pass


class NotWritable(ConfigError):
    pass


class ScratchUnavailable(ConfigError):
    pass


class RegistryError(RungError):
    def __init__(self, message: str, *, problems: Sequence[str] = ()) -> None:
        super().__init__(message)
        self.problems = tuple(problems) or (message,)


class HistoryError(RungError):
    pass


class LockTimeout(RungError):
    def __init__(self, message: str, *, holder: str | None = None) -> None:
        super().__init__(message)
        self.holder = holder


class LockHeld(LockTimeout):
    pass


class LockLost(RungError):
    pass


class PlanRefused(RungError):
    def __init__(self, message: str, *, names: Sequence[str] = ()) -> None:
        super().__init__(message)
        self.names = tuple(names)


class UnknownTarget(PlanRefused):
    exit_code = 2


class ChecksumMismatch(PlanRefused):
    pass


class NeedsRepair(PlanRefused):
    pass


class UnknownApplied(PlanRefused):
    pass


class OutOfOrder(PlanRefused):
    pass


class Irreversible(PlanRefused):
    pass


class MigrationFailed(RungError):
    """A migration raised, or its connection was lost (``lost_connection``). ``committed``:
    its statements the database kept despite the failure; ``rolled_back``: migrations that
    ran before it in the same transaction and were undone with it; ``done``: migrations
    this run committed before it."""

    def __init__(
        self,
        message: str,
        *,
        name: str,
        direction: str,
        cause: BaseException,
        committed: Sequence[str] = (),
        rolled_back: Sequence[str] = (),
        done: Sequence[str] = (),
        lost_connection: bool = False,
    ) -> None:
        super().__init__(message)
        self.name = name
        self.direction = direction
        self.cause = cause
        self.committed = tuple(committed)
        self.rolled_back = tuple(rolled_back)
        self.done = tuple(done)
        self.lost_connection = lost_connection

    @property
    def changed_schema(self) -> bool:
        return bool(self.committed or self.done)


class ConnectionLost(RungError):
    pass


class NoSnapshot(RungError):
    exit_code = 2


class SchemaError(RungError):
    def __init__(self, message: str, *, differences: Sequence[str] = ()) -> None:
        super().__init__(message)
        self.differences = tuple(differences)


class ScaffoldError(RungError):
    """``rung init`` or ``rung new`` cannot write what it must without overwriting a file."""
