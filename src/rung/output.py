"""How the ``rung`` command prints: results on stdout, progress on stdout (stderr with
``--json``, so stdout stays one JSON document), warnings and errors on stderr; colour only
on a terminal and never with NO_COLOR; every line passes through the password mask.

The runner reports through the ``rung`` logger; ``ProgressHandler`` turns its start/done
events into one line per migration: ``applying m20260408_000001_create_todos_table ...
ok (12 ms)``. Standard library only.
"""

from __future__ import annotations

import json
import logging
import os
import sys
from collections.abc import Sequence
from datetime import datetime
from typing import IO, TYPE_CHECKING, Any

from rung.passwords import mask

if TYPE_CHECKING:
    from rung.errors import MigrationFailed
    from rung.lock import Holder
    from rung.migration import Statement
    from rung.plan import MigrationState
    from rung.runner import Executed
    from rung.verifying import VerifyReport

COLOURS = {"green": "32", "red": "31", "yellow": "33", "magenta": "35", "bold": "1"}
STATE_COLOURS = {"applied": "green", "pending": "yellow", "unknown": "magenta"}
OUTSTANDING = {  # states that need a person
    "modified": "was changed after it was applied",
    "failed": "failed part-way",
    "running": "was interrupted part-way",
}


class Output:
    def __init__(self, *, verbose: int = 0, quiet: bool = False, as_json: bool = False) -> None:
        self.verbose, self.quiet, self.as_json = verbose, quiet, as_json
        self.progress: IO[str] = sys.stderr if as_json else sys.stdout
        self.events = True  # render the runner's start/done events
        self.url = ""  # its password is masked in everything printed
        self._open_line = False

    def paint(self, text: str, colour: str, stream: IO[str] | None = None) -> str:
        stream = stream or sys.stdout
        if os.environ.get("NO_COLOR") or os.environ.get("TERM") == "dumb" or not stream.isatty():
            return text
        return f"\033[{COLOURS[colour]}m{text}\033[0m"

    def _write(self, stream: IO[str], text: str) -> None:
        self.end_line()
        put(stream, mask(text, self.url) + "\n")

    def result(self, text: str, colour: str | None = None) -> None:
        """What the command exists to print (a table, a path): shown even with -q."""
        self._write(sys.stdout, self.paint(text, colour) if colour else text)

    def note(self, text: str) -> None:
        """Summaries and progress: not with -q."""
        if not self.quiet:
            self._write(self.progress, text)

    def detail(self, text: str) -> None:
        """Only with -v."""
        if self.verbose:
            self._write(sys.stderr, f"rung: {text}")

    def warn(self, text: str) -> None:
        self._write(sys.stderr, f"{self.paint('rung: warning:', 'yellow', sys.stderr)} {text}")

    def traceback(self, exc: BaseException) -> None:
        """With -v: the traceback, through the password mask like every other line."""
        import traceback

        self._write(sys.stderr, "".join(traceback.format_exception(exc)).rstrip("\n"))

    def error(self, text: str, hint: str = "") -> None:
        self._write(sys.stderr, f"{self.paint('rung: error:', 'red', sys.stderr)} {text}")
        if hint:
            self._write(sys.stderr, f"rung: hint: {hint}")

    def data(self, value: object) -> None:
        self._write(sys.stdout, json.dumps(value, indent=2, default=str))

    def started(self, verb: str, name: str) -> None:
        if self.events and not self.quiet:
            self.end_line()
            put(self.progress, f"{verb} {name} ... ")
            self._open_line = True

    def finished(self, ms: float) -> None:
        if self._open_line:
            self._open_line = False
            put(self.progress, f"{self.paint('ok', 'green', self.progress)} ({duration(ms)})\n")

    def rolled_back(self, exc: MigrationFailed) -> None:
        """After a failure that rolled back migrations whose line said "ok": say so, so
        that no "ok" above is taken for a migration the database kept."""
        if exc.rolled_back:
            what = "applied" if exc.direction == "up" else "reverted"
            self.note(
                f"rolled back with it: {', '.join(exc.rolled_back)} ({what} above in the same "
                "transaction, so not kept)"
            )

    def end_line(self, word: str = "") -> None:
        """Finish a migration's line left open (with ``word``, e.g. "failed")."""
        if self._open_line:
            self._open_line = False
            put(self.progress, (self.paint(word, "red", self.progress) if word else "") + "\n")


def put(stream: IO[str], text: str) -> None:
    """Write and flush. When the reader has gone (``rung up | head -1``), the run must go on
    regardless: a migration stopped half-way over a closed pipe is far worse than lost
    output. The stream is pointed at /dev/null so this and later writes succeed."""
    try:
        stream.write(text)
        stream.flush()
    except BrokenPipeError:
        os.dup2(os.open(os.devnull, os.O_WRONLY), stream.fileno())
        stream.flush()


class ProgressHandler(logging.Handler):
    """The runner's log records: start/done events as one line per migration, warnings as
    ``rung: warning: ...``, anything else only with -v."""

    def __init__(self, out: Output) -> None:
        super().__init__()
        self.out = out

    def emit(self, record: logging.LogRecord) -> None:
        event = getattr(record, "rung_event", None)
        if event == "start":
            verb = "reverting" if getattr(record, "rung_direction", "") == "down" else "applying"
            self.out.started(verb, str(getattr(record, "rung_name", "?")))
        elif event == "done":
            self.out.finished(float(getattr(record, "rung_ms", 0.0)))
        elif record.levelno >= logging.WARNING:
            self.out.warn(record.getMessage())
        else:
            self.out.detail(record.getMessage())


class LibraryHandler(logging.Handler):
    """Other libraries' log records, such as the server warnings a driver logs (a note that
    ``DROP TABLE IF EXISTS`` found no table): shown only with -v, never as bare lines."""

    def __init__(self, out: Output) -> None:
        super().__init__()
        self.out = out

    def emit(self, record: logging.LogRecord) -> None:
        if record.name != "rung" and not record.name.startswith("rung."):
            self.out.detail(f"{record.name}: {record.getMessage()}")


def count(n: int, noun: str) -> str:
    """``1 migration``, ``2 migrations``."""
    return f"{n} {noun}" if n == 1 else f"{n} {noun}s"


def duration(ms: float | None) -> str:
    if ms is None:
        return "-"
    return f"{ms / 1000:.1f} s" if ms >= 10_000 else f"{ms:.0f} ms"


def moment(when: datetime | None) -> str:
    return when.strftime("%Y-%m-%d %H:%M:%S") if when else "-"


def indent(text: str, width: int = 4) -> str:
    return "\n".join(" " * width + line for line in text.splitlines())


# -- as data ----------------------------------------------------------------------------------


def executed_json(e: Executed) -> dict[str, Any]:
    return {
        "name": e.name,
        "direction": e.direction.value,
        "duration_ms": e.duration_ms,
        "statements": [statement_json(s) for s in e.statements],
    }


def statement_json(s: Statement) -> dict[str, Any]:
    return {"sql": s.sql, "params": s.params, "duration_ms": s.duration_ms}


def state_json(s: MigrationState, *, statements: bool = False) -> dict[str, Any]:
    data: dict[str, Any] = {
        "name": s.name,
        "state": s.state.value,
        "applied_at": s.applied_at.isoformat() if s.applied_at else None,
        "duration_ms": s.duration_ms,
        "checksum": s.checksum,
        "recorded_checksum": s.recorded_checksum,
        "error": s.error,
    }
    if statements:
        data["statements"] = [statement_json(x) for x in s.statements]
        data["in_flight"] = s.in_flight.sql if s.in_flight else None
    return data


def verify_json(report: VerifyReport) -> dict[str, Any]:
    return {
        "ok": report.ok,
        "checked": list(report.checked),
        "failures": [
            {
                "name": f.name,
                "step": f.step,
                "message": f.message,
                "differences": [str(d) for d in f.differences],
                "rebuilt_after": f.rebuilt_after,
            }
            for f in report.failures
        ],
        "irreversible": list(report.irreversible),
        "not_checked": list(report.not_checked),
        "rebuilt": list(report.rebuilt),
    }


def counts(states: Sequence[MigrationState]) -> dict[str, int]:
    found: dict[str, int] = {}
    for s in states:
        found[s.state.value] = found.get(s.state.value, 0) + 1
    return found


# -- as text ----------------------------------------------------------------------------------


def executed(out: Output, done: Sequence[Executed], how: str, nothing: str) -> None:
    """After an upgrade or downgrade: the summary line, or what ran as JSON."""
    if out.as_json:
        out.data({"migrations": [executed_json(e) for e in done]})
    elif not done:
        out.note(nothing)
    else:
        verb = "applied" if done[0].direction.value == "up" else "reverted"
        total = duration(sum(e.duration_ms for e in done))
        out.note(f"{count(len(done), 'migration')} {verb} in {total}{how}")


NOTHING_TO = {
    "apply": "nothing to apply: the database is up to date",
    "revert": "nothing to revert",
}


def dry_run(out: Output, done: Sequence[Executed], verb: str) -> None:
    if out.as_json:
        out.data({"dry_run": True, "migrations": [executed_json(e) for e in done]})
        return
    if not done:  # as 'rung up' and 'rung down' say it
        out.note(f"dry run: {NOTHING_TO[verb]}")
        return
    for e in done:
        out.result(f"would {verb} {e.name}", "bold")
        for s in e.statements:
            out.result(indent(f"{s.sql};" + (f"\n-- params: {s.params}" if s.params else "")))
    out.note(f"dry run: {count(len(done), 'migration')} to {verb}; the database was not changed")


def holder_json(holder: Holder | None) -> dict[str, Any] | None:
    if holder is None:
        return None
    return {
        "holder": holder.holder,
        "host": holder.host,
        "pid": holder.pid,
        "acquired_at": holder.acquired_at.isoformat(),
        "expires_at": holder.expires_at.isoformat(),
        "expired": holder.expired,
    }


def status(
    out: Output, states: Sequence[MigrationState], where: str, holder: Holder | None = None
) -> None:
    if out.as_json:
        out.data(
            {
                "migrations": [state_json(s) for s in states],
                "counts": counts(states),
                "lock": holder_json(holder),
            }
        )
        return
    out.note(where)
    if holder is not None:
        out.result(f"lock: {holder.describe()}", "yellow")
    if not states:
        out.note("no migrations registered yet: create one with 'rung new NAME'")
        return
    width = max(len(s.name) for s in states)
    out.result(f"{'STATE':<9} {'NAME':<{width}}  {'APPLIED AT (UTC)':<19}  DURATION", "bold")
    for s in states:
        state = out.paint(f"{s.state.value:<9}", STATE_COLOURS.get(s.state.value, "red"))
        out.result(
            f"{state} {s.name:<{width}}  {moment(s.applied_at):<19}  {duration(s.duration_ms)}"
        )
    out.note(", ".join(f"{n} {state}" for state, n in counts(states).items()))
    for s in states:
        if s.state.value in OUTSTANDING:
            out.note(f"{s.name} {OUTSTANDING[s.state.value]}: see 'rung show {s.name}'")


def show(out: Output, s: MigrationState) -> None:
    if out.as_json:
        out.data(state_json(s, statements=True))
        return
    out.result(s.name, "bold")
    out.result(f"  state       {s.state.value}")
    if s.checksum and s.recorded_checksum and s.checksum != s.recorded_checksum:
        out.result(f"  checksum    {s.checksum} (the code)")
        out.result(f"              {s.recorded_checksum} (recorded when applied)")
    else:
        out.result(f"  checksum    {s.checksum or s.recorded_checksum}")
    when = "applied at" if s.state.value in ("applied", "modified", "unknown") else "ran at    "
    out.result(f"  {when}  {moment(s.applied_at)}{' UTC' if s.applied_at else ''}")
    out.result(f"  duration    {duration(s.duration_ms)}")
    if s.error:
        out.result(f"  error       {s.error}")
    out.result(f"  statements  {len(s.statements)}" + (":" if s.statements else ""))
    for number, statement in enumerate(s.statements, start=1):
        out.result(indent(f"{number}. {statement.sql}"))
        params = f"params: {statement.params}, " if statement.params else ""
        out.result(indent(f"   ({params}{duration(statement.duration_ms)})"))
    if s.in_flight is not None:
        out.result("  in flight   (sent when the run stopped: it may or may not have gone through)")
        out.result(indent(f"   {s.in_flight.sql}"))


def verify(out: Output, report: VerifyReport) -> None:
    """Every problem, in registry order, each saying when it was judged on a rebuilt state;
    then what was not round-tripped and why; then the count."""
    for f in report.failures:
        on = f" (judged on the state rebuilt after {f.rebuilt_after})" if f.rebuilt_after else ""
        lines = "".join(f"\n    {d}" for d in f.differences)
        out.result(f"problem: {f.message}{on}{lines}", "red")
    for name in report.irreversible:
        out.note(f"not reversible, so applied without a round trip: {name}")
    if report.rebuilt:
        out.note(
            f"rebuilt the state after up of {count(len(report.rebuilt), 'migration')} that "
            "left the scratch database elsewhere, and went on"
        )
    if report.not_checked:
        names = report.not_checked
        skipped = count(len(names), "migration")
        out.note(f"not checked, after the failure above: {skipped} ({names[0]} to {names[-1]})")
    checked = count(len(report.checked), "migration")
    found = len(report.failures)
    out.note(
        f"checked {checked}: {count(found, 'problem') if found else 'every down reverses its up'}"
    )


def problems(out: Output, found: Sequence[str], summary: str) -> None:
    """``rung check``'s and the safety nets' findings, one per line."""
    for problem in found:
        out.result(f"problem: {problem}", "red")
    out.note(summary)
