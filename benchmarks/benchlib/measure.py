"""Timing whole processes in pairs, and the results they add up to.

A cell is one database x scenario x N x tool. It holds pairs: the tool's wall time and the
time of its reference (the floor, unless said otherwise) run right after it. The ratio is
computed pair by pair, then the median is taken, so a slow minute on this shared machine
hits both members of a pair instead of skewing one side.
"""

from __future__ import annotations

import json
import statistics
import subprocess
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from benchlib.tools import Run, child_env

TIMEOUT = 1800.0  # seconds, per process


class BenchError(RuntimeError):
    """A run failed or left the database in the wrong state: the cell is not valid."""


class TooSlow(BenchError):
    """A run did not finish within its time limit (``Run.timeout``) and was killed."""

    def __init__(self, run: Run, limit: float) -> None:
        super().__init__(f"{' '.join(run.argv[:6])} ... did not finish within {limit:g} s")
        self.limit = limit


@dataclass
class Cell:
    db: str
    scenario: str
    n: int
    tool: str
    reference: str = "raw"
    tool_s: list[float] = field(default_factory=list)
    reference_s: list[float] = field(default_factory=list)
    note: str = ""

    @property
    def key(self) -> str:
        return f"{self.db}/{self.scenario}/{self.n}/{self.tool}"

    @property
    def ratios(self) -> list[float]:
        return [t / r for t, r in zip(self.tool_s, self.reference_s, strict=True) if r > 0]

    @property
    def ratio(self) -> float:
        return statistics.median(self.ratios)

    @property
    def tool_ms(self) -> float:
        return statistics.median(self.tool_s) * 1000

    @property
    def reference_ms(self) -> float:
        return statistics.median(self.reference_s) * 1000


@dataclass
class Results:
    cells: dict[str, Cell] = field(default_factory=dict)
    inprocess: dict[str, dict[str, Any]] = field(default_factory=dict)
    meta: dict[str, Any] = field(default_factory=dict)
    skipped: dict[str, str] = field(default_factory=dict)  # what -> why

    def cell(self, db: str, scenario: str, n: int, tool: str, reference: str = "raw") -> Cell:
        fresh = Cell(db, scenario, n, tool, reference)
        self.cells[fresh.key] = fresh  # a re-measured cell replaces the old one
        self.skipped.pop(fresh.key, None)
        return fresh

    def save(self, path: Path) -> None:
        data = {
            "cells": [asdict(c) for c in self.cells.values()],
            "inprocess": self.inprocess,
            "meta": self.meta,
            "skipped": self.skipped,
        }
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(json.dumps(data, indent=1, default=str))

    @classmethod
    def load(cls, path: Path) -> Results:
        data = json.loads(path.read_text())
        cells = [Cell(**c) for c in data["cells"]]
        return cls({c.key: c for c in cells}, data["inprocess"], data["meta"], data["skipped"])


def _process(run: Run, timeout: float) -> subprocess.CompletedProcess[str]:
    """Run ``run`` to its end; raises if it fails."""
    done = subprocess.run(
        run.argv,
        cwd=run.cwd,
        env=child_env(run.env),
        stdin=subprocess.DEVNULL,
        capture_output=True,
        text=True,
        timeout=timeout,
    )
    if done.returncode != 0:
        tail = (done.stderr or done.stdout).strip().splitlines()[-8:]
        raise BenchError(
            f"{' '.join(run.argv[:6])} ... exited {done.returncode}:\n  " + "\n  ".join(tail)
        )
    return done


def timed(run: Run) -> float:
    """Wall time of the whole process, in seconds; raises if it fails or says the wrong thing."""
    limit = run.timeout or TIMEOUT
    started = time.perf_counter()
    try:
        done = _process(run, limit)
    except subprocess.TimeoutExpired:
        raise TooSlow(run, limit) from None
    elapsed = time.perf_counter() - started
    if run.expect is not None and run.expect not in done.stdout + done.stderr:
        raise BenchError(f"{' '.join(run.argv[:6])} ... did not print {run.expect!r}")
    return elapsed


def untimed(run: Run) -> str:
    return _process(run, TIMEOUT).stdout
