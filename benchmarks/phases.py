"""Where a no-op ``rung up`` process spends its time, phase by phase (a diagnostic).

    python benchmarks/phases.py URL PROJECT_DIR [RUNS]

Does in order what ``python -m rung up`` does for a database with everything applied, timing
each step with ``time.perf_counter``, in a fresh process per run; prints the median of each
phase over RUNS runs (default 5). PROJECT_DIR holds a generated ``ladder`` package (e.g.
``benchmarks/.work/projects/rung/n1000``). Interpreter start-up is not included: compare
with ``python -c pass``.
"""

from __future__ import annotations

import json
import statistics
import subprocess
import sys
import time

PROBE = r"""
import json, sys, time
marks = []
def mark(label):
    marks.append((label, time.perf_counter()))
started = time.perf_counter()
url, project = sys.argv[1], sys.argv[2]
import rung.cli; mark("import rung.cli")
import asyncio; mark("import asyncio")
import sqlalchemy; mark("import sqlalchemy")
import sqlalchemy.ext.asyncio; mark("import sqlalchemy.ext.asyncio (and sqlalchemy.orm)")
import rung.runner; mark("import rung.runner (the rest)")
driver = {"sqlite": "aiosqlite", "postgresql": "asyncpg", "mysql": "asyncmy"}[url.split("+")[0]]
__import__(driver); mark(f"import {driver}")
sys.path.insert(0, project)
from ladder.lib import Migrator; mark("import ladder.lib (every migration module)")
from rung.registry import migrations_of
migrations = migrations_of(Migrator); mark("migrations_of: collect, validate, checksums")
from sqlalchemy.ext.asyncio import create_async_engine
import rung
async def main():
    engine = create_async_engine(url)
    async with engine.connect():
        pass
    mark("create engine, first connection")
    done = await rung.upgrade(engine, Migrator)
    assert done == [], "not a no-op"
    mark("rung.upgrade (no-op, pooled connection)")
    await engine.dispose()
asyncio.run(main()); mark("dispose, loop teardown")
previous, out = started, []
for label, at in marks:
    out.append((label, (at - previous) * 1000))
    previous = at
print(json.dumps(out))
"""


def main() -> None:
    if len(sys.argv) not in (3, 4):
        raise SystemExit(__doc__)
    url, project = sys.argv[1], sys.argv[2]
    runs = int(sys.argv[3]) if len(sys.argv) == 4 else 5
    phases: dict[str, list[float]] = {}
    for _ in range(runs):
        done = subprocess.run(
            [sys.executable, "-c", PROBE, url, project], capture_output=True, text=True, check=True
        )
        for label, ms in json.loads(done.stdout):
            phases.setdefault(label, []).append(ms)
    total = 0.0
    for label, values in phases.items():
        median = statistics.median(values)
        total += median
        print(f"{median:8.1f} ms  {label}")
    print(f"{total:8.1f} ms  total after interpreter start (sum of medians)")
    started = time.perf_counter()
    subprocess.run([sys.executable, "-c", "pass"], check=True)
    print(f"{(time.perf_counter() - started) * 1000:8.1f} ms  python -c pass, for scale")


if __name__ == "__main__":
    main()
