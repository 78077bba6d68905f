"""Fleets (issue 14): ``rung up --fleet`` over many tenants, each with 20 migrations.

For each database: the fleet run at each ``--jobs`` against the sum of single-tenant runs
(``rung up --url`` once per tenant, as a shell loop does it: measured on a sample of
tenants and multiplied out, since 1,000 processes would take most of an hour); the peak RSS
of the fleet process at a small and a large fleet; and a no-op fleet run over up-to-date
tenants. Every run is a fresh process, timed from start to exit.

    python benchmarks/fleet.py                        # all three databases, --jobs 1,8
    python benchmarks/fleet.py --db sqlite --jobs 4   # one database, one --jobs

Tenants: SQLite files under a temporary folder; schemas of one PostgreSQL database; MariaDB
databases. Server databases are named ``rung_fleetbench_<random>...`` and dropped after.
"""

from __future__ import annotations

import argparse
import asyncio
import logging
import os
import shutil
import subprocess
import sys
import tempfile
import time
import uuid
from collections.abc import Callable
from pathlib import Path

import sqlalchemy as sa

import rung

MIGRATIONS = 20
POSTGRES = os.environ.get(
    "RUNG_BENCH_POSTGRES_URL", "postgresql+asyncpg://postgres@127.0.0.1:5432/postgres"
)
MARIADB = os.environ.get("RUNG_BENCH_MYSQL_URL", "mysql+asyncmy://root@127.0.0.1:3306/test")
SIZES = {"sqlite": (10, 1000), "postgresql": (10, 500), "mariadb": (10, 50)}
SAMPLE = 10  # single-tenant processes timed per database


def project(root: Path) -> None:
    """A project with a registry of 20 migrations, each creating a table and an index."""
    package = root / "migs"
    package.mkdir(parents=True)
    (package / "__init__.py").write_text("")
    names = [f"m20260101_{i:06d}_t{i}" for i in range(1, MIGRATIONS + 1)]
    for i, name in enumerate(names, start=1):
        (package / f"{name}.py").write_text(
            "from sqlalchemy import text\n\n\n"
            "async def up(conn):\n"
            f"    await conn.execute(text('CREATE TABLE t{i} (id INTEGER PRIMARY KEY, "
            "name VARCHAR(64) NOT NULL)'))\n"
            f"    await conn.execute(text('CREATE INDEX ix_t{i} ON t{i} (name)'))\n\n\n"
            "async def down(conn):\n"
            f"    await conn.execute(text('DROP TABLE t{i}'))\n"
        )
    (package / "lib.py").write_text(
        "from rung import Migration\n"
        + "".join(f"from migs import {n}\n" for n in names)
        + "\n\nclass Migrator:\n    @staticmethod\n    def migrations():\n        return (\n"
        + "".join(f"            Migration.from_module({n}),\n" for n in names)
        + "        )\n"
    )
    (root / "pyproject.toml").write_text('[tool.rung]\nmigrator = "migs.lib:Migrator"\n')


def timed(args: list[str], cwd: Path, env: dict[str, str]) -> tuple[float, int, int]:
    """Seconds from start to exit, peak RSS in MiB, exit code."""
    started = time.perf_counter()
    proc = subprocess.Popen(
        args, cwd=cwd, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE
    )
    _, status, usage = os.wait4(proc.pid, 0)
    elapsed = time.perf_counter() - started
    code = os.waitstatus_to_exitcode(status)
    if code != 0:
        assert proc.stderr is not None
        sys.stderr.write(proc.stderr.read().decode()[-2000:])
    return elapsed, usage.ru_maxrss // 1024, code


class Fleet:
    """One database's tenants: made afresh (``reset``), and the ``--fleet`` spec naming them."""

    def __init__(self, kind: str, root: Path, count: int, tag: str) -> None:
        self.kind, self.root, self.count, self.tag = kind, root, count, tag
        self.dropped = False
        self.env = {**os.environ, "PYTHONDONTWRITEBYTECODE": "1"}
        self.env.pop("DATABASE_URL", None)
        if kind == "postgresql":
            self.database = sa.make_url(POSTGRES).set(database=f"rung_fleetbench_{tag}")
            self.env["DATABASE_URL"] = self.database.render_as_string(hide_password=False)

    @property
    def spec(self) -> str:
        return {"sqlite": "tenants/*.db", "postgresql": "schemas:tenant_*"}.get(
            self.kind, "tenants.txt"
        )

    def urls(self) -> list[str]:
        if self.kind == "sqlite":
            return [
                f"sqlite:///{self.root / 'tenants' / f't{i:05d}.db'}" for i in range(self.count)
            ]
        if self.kind == "postgresql":
            return [f"{self.env['DATABASE_URL']}" for _ in range(self.count)]
        base = sa.make_url(MARIADB)
        return [
            base.set(database=f"rung_fleetbench_{self.tag}_{i}").render_as_string(
                hide_password=False
            )
            for i in range(self.count)
        ]

    def reset(self) -> None:
        asyncio.run(self._reset())

    async def _reset(self) -> None:
        self.dropped = False
        if self.kind == "sqlite":
            folder = self.root / "tenants"
            shutil.rmtree(folder, ignore_errors=True)
            folder.mkdir()
            for url in self.urls():
                Path(url.removeprefix("sqlite:///")).touch()
        elif self.kind == "postgresql":
            await _admin(
                POSTGRES, f'DROP DATABASE IF EXISTS "{self.database.database}" WITH (FORCE)'
            )
            await _admin(POSTGRES, f'CREATE DATABASE "{self.database.database}"')
            await _admin(
                self.env["DATABASE_URL"],
                *(f"CREATE SCHEMA tenant_{i:05d}" for i in range(self.count)),
            )
        else:
            statements = []
            for url in self.urls():
                name = sa.make_url(url).database
                statements += [f"DROP DATABASE IF EXISTS {name}", f"CREATE DATABASE {name}"]
            await _admin(MARIADB, *statements)
            (self.root / "tenants.txt").write_text("\n".join(self.urls()) + "\n")

    def drop(self) -> None:
        if self.dropped:
            return
        self.dropped = True
        if self.kind == "postgresql":
            asyncio.run(
                _admin(POSTGRES, f'DROP DATABASE IF EXISTS "{self.database.database}" WITH (FORCE)')
            )
        elif self.kind == "mariadb":
            drops = [f"DROP DATABASE IF EXISTS {sa.make_url(u).database}" for u in self.urls()]
            asyncio.run(_admin(MARIADB, *drops))

    def single_runs(self, sample: int) -> float:
        """Seconds for ``sample`` single-tenant ``rung up`` processes, one after another."""
        total = 0.0
        for i, url in enumerate(self.urls()[:sample]):
            env = dict(self.env)
            if self.kind == "postgresql":  # one schema alone is a fleet of one
                args = [*RUNG, "up", "--fleet", f"schemas:tenant_{i:05d}"]
            else:
                args = [*RUNG, "up", "--url", url]
            seconds, _, code = timed(args, self.root, env)
            assert code == 0
            total += seconds
        return total


RUNG = [sys.executable, "-m", "rung"]


async def _admin(url: str, *statements: str) -> None:
    logging.getLogger("asyncmy").setLevel(logging.ERROR)  # DROP ... IF EXISTS notes
    engine = rung.create_engine(url, isolation_level="AUTOCOMMIT")
    try:
        async with engine.connect() as conn:
            for statement in statements:
                await conn.execute(sa.text(statement))
    finally:
        await engine.dispose()


def measure(kind: str, jobs: list[int], say: Callable[[str], None]) -> list[str]:
    small, large = SIZES[kind]
    rows: list[str] = []
    with tempfile.TemporaryDirectory(prefix="rung-fleetbench-") as folder:
        root = Path(folder)
        project(root)
        tag = uuid.uuid4().hex[:8]
        fleet = Fleet(kind, root, large, tag)
        try:
            fleet.reset()
            single = fleet.single_runs(SAMPLE) / SAMPLE
            fleet.reset()
            say(f"{kind}: single-tenant rung up, mean of {SAMPLE}: {single:.2f} s")
            for j in jobs:
                fleet.reset()
                seconds, rss, code = timed(
                    [*RUNG, "up", "--fleet", fleet.spec, "--jobs", str(j)], root, fleet.env
                )
                assert code == 0, f"{kind} fleet run failed"
                ratio = single * large / seconds
                rows.append(
                    f"| {kind} | {large} x {MIGRATIONS} | {j} | {seconds:.1f} s | "
                    f"{single * large:.0f} s | {ratio:.1f}x | {rss} MiB |"
                )
                say(rows[-1])
            noop, noop_rss, _ = timed(
                [*RUNG, "up", "--fleet", fleet.spec, "--jobs", str(jobs[-1])], root, fleet.env
            )
            rows.append(
                f"| {kind} | {large} up to date (no-op) | {jobs[-1]} | {noop:.1f} s | | | "
                f"{noop_rss} MiB |"
            )
            say(rows[-1])
            fleet.drop()
            few = Fleet(kind, root, small, tag + "s")
            few.reset()
            seconds, rss, _ = timed(
                [*RUNG, "up", "--fleet", few.spec, "--jobs", str(jobs[-1])], root, few.env
            )
            few.drop()
            rows.append(
                f"| {kind} | {small} x {MIGRATIONS} | {jobs[-1]} | {seconds:.1f} s | | | "
                f"{rss} MiB |"
            )
            say(rows[-1])
        finally:
            fleet.drop()
    return rows


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--db", default="sqlite,postgresql,mariadb")
    parser.add_argument("--jobs", default="1,8", help="comma-separated --jobs values")
    parser.add_argument("--tenants", type=int, help="the large fleet's size (a smoke run)")
    args = parser.parse_args()
    if args.tenants:
        for kind, (small, _) in SIZES.items():
            SIZES[kind] = (small, args.tenants)
    jobs = [int(j) for j in args.jobs.split(",")]
    rows = [
        "| database | tenants | --jobs | fleet | single runs, summed | speed-up | peak RSS |",
        "|---|---|---|---|---|---|---|",
    ]
    for kind in args.db.split(","):
        rows += measure(kind, jobs, lambda line: print(line, file=sys.stderr, flush=True))
    print("\n".join(rows))


if __name__ == "__main__":
    main()
