"""The racers of ``test_races``: ``racer.py FOLDER RACERS_JSON``, run from the project root.

It imports SQLAlchemy, the drivers and rung once, then forks one OS process per racer
(nothing is connected before the fork). Each child waits at the gate, a pipe it reads one
byte from; when every child is forked the parent writes them all at once, so they leave
the gate together. A racer is one of

    ["cli", ARG, ...]          the real command: python -m rung ARG ... (rung's __main__)
    ["api", URL, MIGRATOR]     await rung.upgrade(engine, Migrator), printing what it
                               applied as ``rung up --json`` does
    ["api", URL, MIGRATOR, OPTIONS]  the same with rung.upgrade's keyword arguments from
                               the JSON object OPTIONS (lock_timeout is TIMEOUT unless given)

Child i writes its stdout and stderr to FOLDER/out{i} and FOLDER/err{i}; the parent prints
the exit codes as a JSON list once every child has ended (killing any still running after
TIMEOUT seconds: code -9). Forking after the imports keeps the CPU cost of sixteen racers
near that of their work: each still loads the project's registry and migrations itself.
"""

from __future__ import annotations

import asyncio
import importlib
import json
import os
import runpy
import signal
import sys
import time
import traceback
from typing import Any

import sqlalchemy.ext.asyncio

import rung
import rung.cli
import rung.runner

TIMEOUT = 120.0
DRIVERS = ("aiosqlite", "asyncmy", "asyncpg")  # imported once, before the fork


def child(racer: list[str]) -> int:
    mode, *args = racer
    if mode == "cli":
        sys.argv = ["rung", *args]
        try:
            runpy.run_module("rung", run_name="__main__", alter_sys=True)
        except SystemExit as end:
            return end.code if isinstance(end.code, int) else 1
        return 0
    url, spec, *more = args
    options: dict[str, Any] = json.loads(more[0]) if more else {}
    sys.path.insert(0, os.getcwd())
    module, _, attr = spec.partition(":")
    migrator = getattr(importlib.import_module(module), attr)
    done = asyncio.run(upgrade(url, migrator, options))
    print(json.dumps({"migrations": [{"name": d.name, "direction": "up"} for d in done]}))
    return 0


async def upgrade(url: str, migrator: object, options: dict[str, Any]) -> list[rung.Executed]:
    engine = sqlalchemy.ext.asyncio.create_async_engine(url)
    try:
        return await rung.upgrade(engine, migrator, **{"lock_timeout": TIMEOUT, **options})
    finally:
        await engine.dispose()


def start(folder: str, i: int, racer: list[str], gate: int) -> int:
    sys.stdout.flush()
    sys.stderr.flush()
    pid = os.fork()
    if pid:
        return pid
    code = 1
    try:
        for fd, name in ((1, f"out{i}"), (2, f"err{i}")):
            os.dup2(os.open(os.path.join(folder, name), os.O_WRONLY | os.O_CREAT), fd)
        os.read(gate, 1)
        code = child(racer)
    except BaseException:
        traceback.print_exc()
    finally:
        sys.stdout.flush()
        sys.stderr.flush()
        os._exit(code)


def main(folder: str, racers: list[list[str]]) -> None:
    for driver in DRIVERS:
        importlib.import_module(driver)
    gate, opener = os.pipe()
    pids = [start(folder, i, racer, gate) for i, racer in enumerate(racers)]
    os.write(opener, b"x" * len(pids))
    codes = dict.fromkeys(pids, -9)
    deadline = time.monotonic() + TIMEOUT
    running = set(pids)
    while running and time.monotonic() < deadline:
        pid, status = os.waitpid(-1, os.WNOHANG)
        if pid:
            codes[pid] = os.waitstatus_to_exitcode(status)
            running.discard(pid)
        else:
            time.sleep(0.01)
    for pid in running:
        os.kill(pid, signal.SIGKILL)
        os.waitpid(pid, 0)
    print(json.dumps([codes[pid] for pid in pids]))


if __name__ == "__main__":
    main(sys.argv[1], json.loads(sys.argv[2]))
